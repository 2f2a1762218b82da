"""Money: Decimal helpers and the one rounding rule of the product.

Rule (billing-policy.md, "Rating"): every invoice line is ``quantity x unit price`` rounded **half-up to the cent**;
an invoice total is the sum of its (already rounded) lines. :func:`round_money` is the only place that rounds money.
Exact intermediate values (prorated fees, fractions of a period) are carried as :class:`fractions.Fraction` so nothing
is rounded twice.
"""

from __future__ import annotations

from decimal import ROUND_HALF_UP, Decimal
from fractions import Fraction
from typing import Final

CENT: Final = Decimal("0.01")
ZERO: Final = Decimal("0.00")

Exact = Decimal | Fraction | int


class FloatNotAllowedError(TypeError):
    """Raised when a float reaches money code; floats cannot represent cents exactly."""


def to_decimal(value: Decimal | int | str) -> Decimal:
    """Convert an exact value to Decimal; floats are refused (use strings for literals)."""
    if isinstance(value, (bool, float)):
        raise FloatNotAllowedError(f"money must not be a float or bool: {value!r}")
    if isinstance(value, Decimal):
        return value
    return Decimal(value)


def _as_fraction(value: Exact) -> Fraction:
    if isinstance(value, (bool, float)):
        raise FloatNotAllowedError(f"money must not be a float or bool: {value!r}")
    return Fraction(value)


def round_money(value: Exact) -> Decimal:
    """Round an exact amount half-up (away from zero on a tie) to the cent.

    The single rounding function of the product. Works on Fractions exactly, so a prorated fee such as
    ``29 x 10/31`` is rounded once, from its exact value.
    """
    exact = _as_fraction(value)
    cents = exact * 100
    sign = -1 if cents < 0 else 1
    magnitude = abs(cents)
    whole, remainder = divmod(magnitude.numerator, magnitude.denominator)
    if remainder * 2 >= magnitude.denominator:
        whole += 1
    result = (Decimal(sign * whole) / 100).quantize(CENT, rounding=ROUND_HALF_UP)
    return result if result != 0 else ZERO


def line_amount(quantity: Exact, unit_price: Exact) -> Decimal:
    """Amount of an invoice line: quantity x unit price, rounded by :func:`round_money`."""
    return round_money(_as_fraction(quantity) * _as_fraction(unit_price))


def total(amounts: list[Decimal]) -> Decimal:
    """Sum already-rounded line amounts (no further rounding: a total is the sum of its lines)."""
    result = sum(amounts, ZERO)
    return result.quantize(CENT)


def decimal_str(value: Decimal) -> str:
    """Plain (never scientific) string of a Decimal without trailing zeros, e.g. ``0.00072`` or ``10000``."""
    if value == value.to_integral_value():
        return format(value.quantize(Decimal(1)), "f")
    return format(value.normalize(), "f")


def money_str(value: Decimal) -> str:
    """Two-decimal string of a money amount, e.g. ``36.20``."""
    return format(value.quantize(CENT, rounding=ROUND_HALF_UP), "f")
