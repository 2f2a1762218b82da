"""A total is the sum of amounts already rounded to the cent (billing policy, "Rating"; D2): ``kilo_billing.money.total``
adds whole cents and has nothing left to round. An amount that is not whole cents is a bug upstream; it is refused,
naming the amount, instead of being rounded silently - before, the sum was quantized with Decimal's default context
(half-even), so a stray half cent went the other way from every other rounding of the product (half-up) (D245).

Every figure is worked by hand."""

from __future__ import annotations

from decimal import Decimal

import pytest

from kilo_billing.money import total


def cents(*values: str) -> list[Decimal]:
    return [Decimal(value) for value in values]


@pytest.mark.parametrize(
    ("amounts", "expected"),
    [
        # Team, March: 60,000 video minutes = 10,000 over x 0.00072 = 7.20; March's fee 29.00; April's in advance 29.00
        (cents("7.20", "29.00", "29.00"), "65.20"),
        # April: fee true-up 0.00, May's fee 29.00, account credit applied -4.35
        (cents("0.00", "29.00", "-4.35"), "24.65"),
        # Personal: 125 audio minutes over -> 0.045 -> 0.05, 125 messages over -> 0.015 -> 0.02 (each half-up first)
        (cents("0.05", "0.02"), "0.07"),
        # what an invoice keeps after a refund: 65.20 - 63.00
        (cents("65.20", "-63.00"), "2.20"),
        # stored numbers come back without trailing zeros; the total is still two places
        (cents("1.5", "2"), "3.50"),
        # no lines
        ([], "0.00"),
    ],
)
def test_given_whole_cent_amounts_then_the_total_is_their_exact_sum_in_cents(
    amounts: list[Decimal], expected: str
) -> None:
    result = total(amounts)
    assert result == Decimal(expected)
    assert str(result) == expected


@pytest.mark.parametrize(
    ("amounts", "named"),
    [
        # 0.005 alone: half-even made it 0.00, half-up 0.01 - neither is a sum of rounded amounts
        (cents("0.005"), "0.005"),
        # 0.01 + 0.015 = 0.025: half-even 0.02, half-up 0.03
        (cents("0.01", "0.015"), "0.015"),
        # a negative half cent among whole cents: -4.355 + 29.00 = 24.645
        (cents("29.00", "-4.355"), "-4.355"),
        # a crypto credit's exact USD (D178) must be summed by rounded_sum, not here
        (cents("0.333333", "0.333333", "0.333334"), "0.333333, 0.333333, 0.333334"),
    ],
)
def test_given_an_amount_that_is_not_whole_cents_then_the_total_refuses_it_naming_it(
    amounts: list[Decimal], named: str
) -> None:
    with pytest.raises(ValueError, match=f"not whole cents: {named}$"):
        total(amounts)
