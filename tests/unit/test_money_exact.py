"""Exact amounts and the one rounding of their sum (``kilo_billing.money``; D178): crypto credits are kept
exact (token amount x rate) and a bill rounds their sum once. Hand-worked figures."""

from __future__ import annotations

import re
import subprocess
import sys
from decimal import Decimal, localcontext
from fractions import Fraction

import pytest

from kilo_billing.money import (
    FloatNotAllowedError,
    before_tax,
    exact_amount,
    exact_decimal,
    in_cents,
    is_whole_cents,
    round_money,
    round_money_down,
    rounded_sum,
    share_percent,
    two_places,
    with_tax,
)


def test_given_an_exact_product_then_no_digit_is_lost_and_no_context_rounds_it() -> None:
    # 5_000 USDC units (6 decimals) x $1 = $0.005
    assert exact_amount(Fraction(5_000, 10**6), Decimal(1)) == Decimal("0.005")
    # 666_666_667 lamports (9 decimals) x $150.00 = $100.00000005
    assert exact_amount(Fraction(666_666_667, 10**9), Decimal("150.00")) == Decimal("100.00000005")
    # 123_456_789_012_345_678_901 wei x $3,456.78901234 = 123456789012345678901 x 345678901234 / 10^26: 32
    # significant digits, more than the default Decimal context's 28
    product = exact_amount(Fraction(123_456_789_012_345_678_901, 10**18), Decimal("3456.78901234"))
    assert str(product) == "426764.07175665418343485456663834"
    with localcontext() as context:
        context.prec = 6  # construction ignores the context
        assert exact_decimal(Fraction(1, 200)) == Decimal("0.005")


def test_given_an_exact_value_then_it_is_in_its_shortest_form() -> None:
    assert exact_decimal(Fraction(1, 1)).as_tuple().digits == (1,)
    assert str(exact_decimal(Decimal("2.500000"))) == "2.5"
    assert str(exact_decimal(Fraction(-3, 8))) == "-0.375"
    assert str(exact_decimal(120)) == "120"


def test_given_a_value_with_no_finite_decimal_form_or_a_float_then_refused() -> None:
    with pytest.raises(ValueError, match="no finite decimal form"):
        exact_decimal(Fraction(1, 3))
    with pytest.raises(FloatNotAllowedError):
        exact_amount(0.5, Decimal(1))  # type: ignore[arg-type]


def test_given_many_sub_cent_amounts_then_their_sum_is_rounded_once() -> None:
    # 1,000 credits of $0.005 are $5.00 (one by one, half-up, they were $10.00)
    assert rounded_sum([Decimal("0.005")] * 1_000) == Decimal("5.00")
    # three of $0.004: $0.012 -> $0.01 (one by one they were $0.00)
    assert rounded_sum([Decimal("0.004")] * 3) == Decimal("0.01")
    # $0.0049 + $0.0001 = $0.005 -> $0.01 (half-up, once)
    assert rounded_sum([Decimal("0.0049"), Decimal("0.0001")]) == Decimal("0.01")
    assert rounded_sum([]) == Decimal("0.00")
    # 30 digits each: no Decimal context (28 digits) rounds the sum on the way
    tiny = Decimal("0.004999999999999999999999999999")
    assert rounded_sum([tiny, tiny]) == Decimal("0.01")  # $0.009999... -> $0.01
    assert rounded_sum([tiny]) == Decimal("0.00")


@pytest.mark.parametrize(
    ("value", "whole"),
    [
        ("0.01", True),
        ("5", True),
        ("1.50", True),
        ("1E+30", True),  # beyond Decimal's 28 digits: quantize would raise, the exact check does not
        ("-2.10", True),
        ("0.005", False),
        ("1.0000000000000000000000000000001", False),
        ("NaN", False),  # no amount: False, not an error from inside the check
        ("sNaN", False),
        ("Infinity", False),
        ("-Infinity", False),
        ("12.3400000", True),  # trailing zeros past the cent are still whole cents
        ("12.3400001", False),
        ("0E-50", True),  # zero, however written
        ("-0.000", True),
        ("5E-2", True),
        ("5E-3", False),
    ],
)
def test_given_an_amount_then_whether_it_is_whole_cents_is_exact(value: str, whole: bool) -> None:
    assert is_whole_cents(Decimal(value)) is whole


def test_given_an_amount_with_a_huge_exponent_then_whether_it_is_whole_cents_is_answered_promptly() -> None:
    # before: Fraction(Decimal) built 10**99999999 and did not finish; in a subprocess so a hang fails, not stalls
    code = (
        "from decimal import Decimal; from kilo_billing.money import is_whole_cents; "
        "print([is_whole_cents(Decimal(t)) for t in ('1e-99999999', '1e99999999', '-1E+999999999', '0E-999999999')])"
    )
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=10, check=True)
    assert done.stdout.strip() == "[False, True, True, True]"


def test_given_whole_cents_then_two_places_writes_them_without_rounding() -> None:
    assert [str(two_places(Decimal(text))) for text in ("1E+2", "2.5", "-0.10", "12345678901234567890123456.78")] == [
        "100.00",
        "2.50",
        "-0.10",
        "12345678901234567890123456.78",  # 28 digits in cents: the most Decimal's context holds
    ]


@pytest.mark.parametrize(
    ("value", "message"),
    [
        ("0.005", "0.005 is not whole cents"),
        ("NaN", "NaN is not whole cents"),
        ("123456789012345678901234567.89", "is too large for an amount (more than 28 digits in cents)"),
        ("1E+30", "1E+30 is too large for an amount"),
    ],
)
def test_given_an_amount_two_places_cannot_write_exactly_then_refused_naming_it(value: str, message: str) -> None:
    with pytest.raises(ValueError, match=re.escape(message)):
        two_places(Decimal(value))


def test_given_a_thread_whose_decimal_precision_was_raised_then_two_places_still_refuses_more_than_28_digits() -> None:
    """The full suite once let ``1E+30`` through: something earlier in the worker raised the thread's precision, and
    the limit followed it. 1E+30 in cents is 1 followed by 32 digits, over 28 whatever the ambient context."""
    with localcontext() as context:
        context.prec = 60
        with pytest.raises(ValueError, match=re.escape("1E+30 is too large for an amount")):
            two_places(Decimal("1E+30"))
        assert str(two_places(Decimal("12345678901234567890123456.78"))) == "12345678901234567890123456.78"


def test_given_whole_cents_then_in_cents_is_their_integer_number_of_cents() -> None:
    values = ("1E+2", "1.50", "-1.20", "0E-50", "12345678901234567890123456.78")
    assert [in_cents(Decimal(text)) for text in values] == [10000, 150, -120, 0, 1234567890123456789012345678]


@pytest.mark.parametrize(
    ("value", "message"),
    [
        ("12.345", "12.345 is not whole cents"),
        ("1E-99999999", "1E-99999999 is not whole cents"),
        ("-0.005", "-0.005 is not whole cents"),
        ("Infinity", "Infinity is not whole cents"),
        ("123456789012345678901234567.89", "is too large for an amount (more than 28 digits in cents)"),
    ],
)
def test_given_an_amount_in_cents_cannot_count_exactly_then_refused_as_two_places_refuses_it(
    value: str, message: str
) -> None:
    with pytest.raises(ValueError, match=re.escape(message)):
        in_cents(Decimal(value))


@pytest.mark.parametrize(
    ("exact", "half_up", "down"),
    [
        (Fraction(745, 1000), "0.75", "0.74"),  # 0.745: a tie, half-up goes up a cent, down never
        (Fraction(74125, 99250), "0.75", "0.74"),  # 74.125 / 99.25 = 0.74685...
        (Decimal("0.1234"), "0.12", "0.12"),  # $12.34 x 1 %
        (Decimal("0.1299"), "0.13", "0.12"),  # $12.99 x 1 %
        (Decimal("0.06495"), "0.06", "0.06"),  # $12.99 x 0.5 %
        (Decimal("1.00"), "1.00", "1.00"),  # whole cents: nothing to round
        (Fraction(1, 300), "0.00", "0.00"),  # a third of a cent
        (Decimal("-0.745"), "-0.75", "-0.74"),  # negative: toward zero (a smaller allowance), never away from it
    ],
)
def test_given_an_allowance_then_it_is_rounded_down_to_the_cent_never_up(
    exact: Decimal | Fraction, half_up: str, down: str
) -> None:
    assert (str(round_money(exact)), str(round_money_down(exact))) == (half_up, down)


def test_given_a_float_allowance_then_refused() -> None:
    with pytest.raises(FloatNotAllowedError):
        round_money_down(0.745)  # type: ignore[arg-type]


def test_given_shares_of_an_allowance_then_they_are_cut_never_100_before_used_up_nor_0_once_begun() -> None:
    """D371 amended (av2): a share is cut to two decimals (half-up gave 99.996 -> 100.00 beside no overage)."""
    assert share_percent(Decimal(49_998), Decimal(50_000)) == Decimal("99.99")  # 4,999,800 / 50,000 = 99.996
    assert share_percent(Decimal(50_000), Decimal(50_000)) == Decimal("100.00")
    assert share_percent(Decimal(10_000), Decimal(2_500)) == Decimal("400.00")
    assert share_percent(Decimal(1), Decimal(3)) == Decimal("33.33")  # 33.333...
    assert share_percent(Decimal(2), Decimal(3)) == Decimal("66.66")  # 66.666... (half-up: 66.67)
    assert share_percent(Decimal(40), Decimal(1_000_000)) == Decimal("0.01")  # 4,000 / 1,000,000 = 0.004: begun
    assert share_percent(Decimal(0), Decimal(50_000)) == Decimal("0.00")
    assert share_percent(Decimal(5), None) is None  # unlimited
    assert share_percent(Decimal(5), Decimal(0)) is None  # no allowance


# Stripe Tax (D384): 65.20 of ours + 10 % = 71.72 charged; 65.20 + 8.25 % (5.379) = 70.58; 10.01 + 8.25 % = 10.84
@pytest.mark.parametrize(
    ("charged", "taxed", "ours"),
    [
        ("71.72", (7172, 6520), "65.20"),  # the whole charge: exactly the whole invoice
        ("35.86", (7172, 6520), "32.60"),  # 3586 x 6520 / 7172 = 3260
        ("70.58", (7058, 6520), "65.20"),
        ("20.00", (7058, 6520), "18.48"),  # 2000 x 6520 / 7058 = 1847.55...: up
        ("30.58", (7058, 6520), "28.25"),  # 3058 x 6520 / 7058 = 2824.87...: up
        ("5.42", (1084, 1001), "5.01"),  # 542 x 1001 / 1084 = 500.5: the tie half-up
        ("10.84", (1084, 1001), "10.01"),
        ("0.00", (7172, 6520), "0.00"),
        ("-71.72", (7172, 6520), "-65.20"),
    ],
)
def test_given_charge_money_then_before_tax_is_its_share_of_the_invoice_rounded_once(
    charged: str, taxed: tuple[int, int], ours: str
) -> None:
    assert before_tax(Decimal(charged), taxed) == Decimal(ours)


@pytest.mark.parametrize(
    ("ours", "taxed", "charged"),
    [
        ("65.20", (7172, 6520), "71.72"),
        ("10.00", (7172, 6520), "11.00"),  # 1000 x 7172 / 6520 = 1100
        ("32.60", (7172, 6520), "35.86"),
        ("65.20", (7058, 6520), "70.58"),
        ("1.00", (7058, 6520), "1.08"),  # 100 x 7058 / 6520 = 108.25...: down
        ("10.01", (1084, 1001), "10.84"),
    ],
)
def test_given_invoice_money_then_with_tax_is_what_to_ask_the_processor(
    ours: str, taxed: tuple[int, int], charged: str
) -> None:
    assert with_tax(Decimal(ours), taxed) == Decimal(charged)


@pytest.mark.parametrize("taxed", [(0, 6520), (7172, 0), (-7172, 6520), (True, 1)])
def test_given_no_positive_taxed_figures_then_refused(taxed: tuple[int, int]) -> None:
    with pytest.raises(ValueError, match="positive cents"):
        before_tax(Decimal("1.00"), taxed)
    with pytest.raises(ValueError, match="positive cents"):
        with_tax(Decimal("1.00"), taxed)


def test_given_a_float_then_the_tax_rules_refuse_it() -> None:
    with pytest.raises(FloatNotAllowedError):
        before_tax(1.5, (7172, 6520))  # type: ignore[arg-type]
