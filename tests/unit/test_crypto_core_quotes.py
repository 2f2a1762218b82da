"""Quotes: the atomic amount rounded up, the remaining USD, expiry and monitoring, EIP-681 and Solana Pay URIs.
Every figure worked by hand."""

from __future__ import annotations

from dataclasses import replace
from datetime import timedelta
from decimal import Decimal

import pytest

from kilo_crypto_watch.model import BillPayment, BillStatus, LockedRate, PaymentStatus, RateReading
from kilo_crypto_watch.quotes import QuoteRefusedError, atomic_amount, make_quote
from tests.crypto_core_fakes import CHAINS, MERCHANT_EVM, MERCHANT_SOL, T0, bill

NOW = T0 + timedelta(minutes=1)


def rate(asset: str, price: str) -> LockedRate:
    return LockedRate(asset, Decimal(price), (RateReading("test", asset, Decimal(price), NOW),), NOW)  # type: ignore[arg-type]


@pytest.mark.parametrize(
    ("usd", "price", "asset", "expected"),
    [
        ("100.00", "2500.00", "ETH", 40_000_000_000_000_000),  # 0.04 ETH exactly
        ("10.00", "3000.00", "ETH", 3_333_333_333_333_334),  # 0.0033333... ETH: ...333.33 wei rounded up
        ("100.00", "150.00", "SOL", 666_666_667),  # 0.666666666.67 lamports rounded up
        ("36.20", "1", "USDC", 36_200_000),
        ("0.01", "1", "USDC", 10_000),
    ],
)
def test_the_atomic_amount_is_rounded_up(usd: str, price: str, asset: str, expected: int) -> None:
    assert atomic_amount(Decimal(usd), Decimal(price), asset) == expected  # type: ignore[arg-type]


def test_given_an_eth_quote_then_an_eip681_native_transfer_with_the_chain_id_expiring_in_30_minutes() -> None:
    quote = make_quote(bill(), CHAINS["ethereum"], "ETH", rate("ETH", "2500.00"), NOW, "q1", None)
    assert quote.payment_uri == f"ethereum:{MERCHANT_EVM}@1?value=40000000000000000"
    assert (quote.amount_usd, quote.atomic_amount, quote.pay_to) == (Decimal("100.00"), 4 * 10**16, MERCHANT_EVM)
    assert quote.expires_at == NOW + timedelta(minutes=30)
    assert quote.monitor_until == NOW + timedelta(minutes=30) + timedelta(hours=72)
    assert quote.reference is None


def test_given_a_usdc_quote_on_an_evm_chain_then_an_erc20_transfer_uri() -> None:
    quote = make_quote(bill(total="36.20"), CHAINS["ethereum"], "USDC", rate("USDC", "1"), NOW, "q2", None)
    usdc = CHAINS["ethereum"].usdc
    assert quote.payment_uri == f"ethereum:{usdc}@1/transfer?address={MERCHANT_EVM}&uint256=36200000"


def test_given_solana_quotes_then_solana_pay_urls_with_the_reference_and_memo() -> None:
    sol = make_quote(bill(), CHAINS["solana"], "SOL", rate("SOL", "150.00"), NOW, "q3", "RefKey111")
    assert sol.payment_uri == (
        f"solana:{MERCHANT_SOL}?amount=0.666666667&reference=RefKey111&label=Kilo%20Billing"
        "&message=Kilo%20invoice%20KB-inv-1&memo=Kilo%20invoice%20KB-inv-1"
    )
    assert (sol.reference, sol.memo) == ("RefKey111", "Kilo invoice KB-inv-1")
    usdc = make_quote(bill(total="36.20"), CHAINS["solana"], "USDC", rate("USDC", "1"), NOW, "q4", "RefKey222")
    assert usdc.payment_uri.startswith(
        f"solana:{MERCHANT_SOL}?amount=36.2&spl-token=EPjFWdd5AufqSSqeM2qN1xzybapC8G4wEGGkZwyTDt1v&reference=RefKey222"
    )


def test_given_a_partly_paid_bill_then_the_quote_is_for_the_remaining_usd() -> None:
    seen = BillPayment("ethereum:0x1:0", "0x1", "USDC", Decimal("60.00"), PaymentStatus.SEEN)
    orphaned = BillPayment("ethereum:0x2:0", "0x2", "USDC", Decimal("30.00"), PaymentStatus.ORPHANED)
    quote = make_quote(
        replace(bill(), payments=(seen, orphaned)), CHAINS["ethereum"], "USDC", rate("USDC", "1"), NOW, "q5", None
    )
    assert (quote.amount_usd, quote.atomic_amount) == (Decimal("40.00"), 40_000_000)


@pytest.mark.parametrize(
    ("the_bill", "chain", "asset", "message"),
    [
        (replace(bill(), status=BillStatus.PAID), "ethereum", "USDC", "is paid"),
        (bill(), "ethereum", "SOL", "SOL is not accepted on ethereum"),
        (
            replace(bill(), payments=(BillPayment("p", "t", "USDC", Decimal("100.00"), PaymentStatus.SEEN),)),
            "ethereum",
            "USDC",
            "covered by payments awaiting finality",
        ),
    ],
)
def test_quotes_are_refused_naming_why(the_bill: object, chain: str, asset: str, message: str) -> None:
    with pytest.raises(QuoteRefusedError, match=message):
        make_quote(the_bill, CHAINS[chain], asset, rate(asset, "1"), NOW, "q", "ref")  # type: ignore[arg-type]
