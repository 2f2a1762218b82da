"""The underpayment a crypto bill writes off (``settlement.tolerance``): USDC's band min(0.5 %, $1) of the total, ETH/SOL's
1 %, weighted by what each class paid when both did - every band rounded DOWN to the cent (D176 amended): a
write-off is money given away, so it never exceeds its rule by the half cent a half-up rounding would add.
Hand-worked figures."""

from __future__ import annotations

from dataclasses import replace
from decimal import Decimal

import pytest

from kilo_crypto_watch.model import Asset, BillFlag, BillPayment, BillStatus, PaymentStatus
from kilo_crypto_watch.settlement import SettlementPolicy, recompute, tolerance
from tests.crypto_core_fakes import T0, bill

POLICY = SettlementPolicy()


def final(*paid: tuple[Asset, str]) -> tuple[BillPayment, ...]:
    return tuple(
        BillPayment(f"p{i}", f"0xt{i}", asset, Decimal(usd), PaymentStatus.FINALIZED)
        for i, (asset, usd) in enumerate(paid)
    )


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
    moved = recompute(replace(bill(), payments=final(("USDC", "50.25"), ("ETH", "49.00"))), POLICY, T0)
    assert (moved.status, moved.written_off_usd) == (BillStatus.OPEN, Decimal("0.00"))
    assert BillFlag.PARTIAL in moved.flags

    # one cent more of USDC (50.26): paid 99.26, short 0.74; band (25.13 + 49.00) / 99.26 = 74.13 / 99.26
    # = 0.74682... -> $0.74: 0.74 <= 0.74, PAID with $0.74 written off
    paid = recompute(replace(bill(), payments=final(("USDC", "50.26"), ("ETH", "49.00"))), POLICY, T0)
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
    moved = recompute(replace(bill(total=total), payments=final((asset, usd))), POLICY, T0)
    assert (moved.status, moved.written_off_usd) == (status, Decimal(written_off))
