"""The demo's ground truth of a crypto bill (``kilo_dev.ground_truth.expected_crypto``) for a total under $2, checked
against the tolerance rule worked by hand (D176, D365): a USDC band is min(0.5 %, $1) of the total, a shortfall is
whole cents and is written off only when it is within the band. Under $2 the band is under a cent, so the "underpay"
scenario's one cent short leaves the bill open; at $2.00 the band is exactly one cent and the cent is written off."""

from __future__ import annotations

from decimal import Decimal

import pytest

from kilo_dev.ground_truth import expected_crypto


@pytest.mark.parametrize(
    ("total", "paid_atomic", "status", "settled", "written_off"),
    [
        # $1.50: band 0.5 % x 1.50 = 0.0075 (under a cent): one cent short (the least), 1.49 USDC = 1_490_000 units;
        # short 0.01 > 0.0075: OPEN (PARTIAL), nothing settled or written off
        ("1.50", 1_490_000, "OPEN", "0.00", "0.00"),
        # $1.99: band 0.00995: 1.98 USDC = 1_980_000 units, short 0.01 > 0.00995: OPEN
        ("1.99", 1_980_000, "OPEN", "0.00", "0.00"),
        # $2.00: band 0.5 % x 2.00 = 0.01 exactly: 1.99 USDC = 1_990_000 units, short 0.01 <= 0.01: PAID, $0.01 off
        ("2.00", 1_990_000, "PAID", "1.99", "0.01"),
    ],
)
def test_given_an_underpaid_usdc_bill_under_two_dollars_then_the_cent_short_is_written_off_only_inside_the_band(
    total: str, paid_atomic: int, status: str, settled: str, written_off: str
) -> None:
    under = expected_crypto("underpay", Decimal(total), {})
    assert (under.asset, under.paid_atomic, under.status) == ("USDC", paid_atomic, status)
    assert (under.settled_usd, under.written_off_usd) == (Decimal(settled), Decimal(written_off))
    assert under.flags == {"PARTIAL"}
