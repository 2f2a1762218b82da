"""The underpayment a crypto bill writes off (``settlement.tolerance``): USDC's band min(0.5 %, $1) of the total, ETH/SOL's
1 %, weighted by what each class paid when both did - every band rounded DOWN to the cent (D176 amended): a
write-off is money given away, so it never exceeds its rule by the half cent a half-up rounding would add.
Hand-worked figures."""

from __future__ import annotations

from decimal import Decimal
from fractions import Fraction

import pytest

from kilo_crypto_watch.model import Asset, BillFlag, BillStatus, PaymentStatus
from kilo_crypto_watch.settlement import SettlementPolicy, exact_tolerance, recompute, tolerance
from tests.crypto_core_fakes import T0, bill_with

POLICY = SettlementPolicy()
FINAL = PaymentStatus.FINALIZED


@pytest.mark.parametrize(
    ("total", "paid", "band"),
    [
        # both classes on $100.00: USDC's band 0.5 % = $0.50, ETH's 1 % = $1.00; 51.00 USDC and $49.00 of ETH:
        # (0.50 x 51.00 + 1.00 x 49.00) / 100.00 = (25.50 + 49.00) / 100.00 = 0.745 exactly -> down $0.74
        # (half-up gave $0.75)
        ("100.00", [("USDC", "51.00"), ("ETH", "49.00")], "0.74"),
        # 50.25 USDC and $49.00 of ETH: (25.125 + 49.00) / 99.25 = 74.125 / 99.25 = 0.74685... -> $0.74 (half-up $0.75)
        ("100.00", [("USDC", "50.25"), ("ETH", "49.00")], "0.74"),
        # ETH only on $12.34: 1 % = 0.1234 -> $0.12 (before: 0.1234, unrounded)
        ("12.34", [("ETH", "12.22")], "0.12"),
        # SOL only, the same band as ETH: $12.99 x 1 % = 0.1299 -> $0.12 (down, not 0.13)
        ("12.99", [("SOL", "12.90")], "0.12"),
        # USDC only on $12.34: 0.5 % = 0.0617 -> $0.06 (before: 0.0617)
        ("12.34", [("USDC", "12.30")], "0.06"),
        # nothing paid yet: USDC's band; $12.99 x 0.5 % = 0.06495 -> $0.06 (before: 0.06495)
        ("12.99", [], "0.06"),
        # USDC on $250.00: 0.5 % = 1.25, capped at $1.00 (whole cents already)
        ("250.00", [("USDC", "249.00")], "1.00"),
    ],
)
def test_given_a_band_not_in_whole_cents_then_it_is_rounded_down_to_the_cent(
    total: str, paid: list[tuple[Asset, str]], band: str
) -> None:
    allowed = tolerance(Decimal(total), [(asset, Decimal(usd)) for asset, usd in paid], POLICY)
    assert str(allowed) == band


def test_given_usdc_and_eth_short_by_the_half_cent_half_up_added_then_the_bill_stays_open() -> None:
    # $100.00 bill; 50.25 USDC and $49.00 of ETH final: paid 99.25, short 0.75.
    # Band: (0.50 x 50.25 + 1.00 x 49.00) / 99.25 = 74.125 / 99.25 = 0.74685... -> down $0.74.
    # 0.75 > 0.74: not paid, nothing written off. (Half-up made the band $0.75 and wrote off $0.75: PAID.)
    moved = recompute(
        bill_with("100.00", [("USDC", "50.25", FINAL, False), ("ETH", "49.00", FINAL, False)]), POLICY, T0
    )
    assert (moved.status, moved.written_off_usd) == (BillStatus.OPEN, Decimal("0.00"))
    assert BillFlag.PARTIAL in moved.flags

    # one cent more of USDC (50.26): paid 99.26, short 0.74; band (25.13 + 49.00) / 99.26 = 74.13 / 99.26
    # = 0.74682... -> $0.74: 0.74 <= 0.74, PAID with $0.74 written off
    paid = recompute(bill_with("100.00", [("USDC", "50.26", FINAL, False), ("ETH", "49.00", FINAL, False)]), POLICY, T0)
    assert (paid.status, paid.written_off_usd, paid.settled_usd) == (
        BillStatus.PAID,
        Decimal("0.74"),
        Decimal("99.26"),
    )


@pytest.mark.parametrize(
    ("asset", "total", "usd", "status", "written_off"),
    [
        # ETH only, $12.34: band 1 % = 0.1234 -> $0.12. Paid 12.22: short 0.12 <= 0.12, PAID, $0.12 written off
        ("ETH", "12.34", "12.22", BillStatus.PAID, "0.12"),
        # paid 12.21: short 0.13 > 0.12 (and > 0.1234 before): open
        ("ETH", "12.34", "12.21", BillStatus.OPEN, "0.00"),
        # USDC only, $12.34: band 0.5 % = 0.0617 -> $0.06. Paid 12.28: short 0.06, PAID; 12.27: short 0.07, open
        ("USDC", "12.34", "12.28", BillStatus.PAID, "0.06"),
        ("USDC", "12.34", "12.27", BillStatus.OPEN, "0.00"),
    ],
)
def test_given_one_class_whose_band_is_not_whole_cents_then_the_same_bills_are_paid_as_with_the_exact_band(
    asset: Asset, total: str, usd: str, status: BillStatus, written_off: str
) -> None:
    # a shortfall is whole cents (a whole-cents total less a sum rounded to the cent), so it fits under the exact
    # band exactly when it fits under the band rounded down: one class's decisions do not move
    moved = recompute(bill_with(total, [(asset, usd, FINAL, False)]), POLICY, T0)
    assert (moved.status, moved.written_off_usd) == (status, Decimal(written_off))


@pytest.mark.parametrize(
    ("total", "paid", "exact", "band"),
    [
        # USDC on $1.99: 0.5 % = 0.00995 exactly; what a bill writes off rounds down to $0.00
        ("1.99", [("USDC", "1.99")], Fraction(995, 100_000), "0.00"),
        # ETH on $12.34: 1 % = 0.1234 exactly -> $0.12
        ("12.34", [("ETH", "12.34")], Fraction(1234, 10_000), "0.12"),
        # 50.25 USDC + $49.00 ETH on $100.00: (0.50 x 50.25 + 1.00 x 49.00) / 99.25 = 74.125 / 99.25 = 2965 / 3970
        # = 593 / 794 (0.74685...) -> $0.74
        ("100.00", [("USDC", "50.25"), ("ETH", "49.00")], Fraction(593, 794), "0.74"),
    ],
)
def test_given_a_band_then_the_exact_band_is_kept_for_claims_and_the_write_off_is_it_rounded_down(
    total: str, paid: list[tuple[Asset, str]], exact: Fraction, band: str
) -> None:
    counted = [(asset, Decimal(usd)) for asset, usd in paid]
    assert exact_tolerance(Decimal(total), counted, POLICY) == exact
    assert str(tolerance(Decimal(total), counted, POLICY)) == band
