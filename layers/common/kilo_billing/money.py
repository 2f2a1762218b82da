"""Money: Decimal helpers and the rounding rules of the product (half-up for amounts; down for allowances).

Rule (billing-policy.md, "Rating"): every invoice line is ``quantity x unit price`` rounded **half-up to the cent**;
an invoice total is the sum of its (already rounded) lines. :func:`round_money` rounds every amount billed or counted.
Exact intermediate values (prorated fees, fractions of a period) are carried as :class:`fractions.Fraction` so nothing
is rounded twice.

Amounts received rather than billed (crypto credits: token amount x its rate) are kept **exact**
(:func:`exact_amount`) and rounded once, where they are summed for a bill (:func:`rounded_sum`): rounding each
credit first would count 1,000 credits of $0.005 as $10.00 (D178).

An allowance - what we may give away, such as the underpayment a crypto bill writes off inside its tolerance - is
rounded **down** to the cent (:func:`round_money_down`), never half-up: rounded half-up it could give away up to half
a cent more than its rule allows (D176).

A share of an allowance used (not money, but shown beside it) is **cut** to two decimals (:func:`share_percent`),
never rounded up: 99.996 % is ``99.99``, so 100 % is read only once the allowance is used up; and a share begun is
never ``0.00`` (0.004 % is ``0.01``) (D371 amended (av2)).

A card payment with Stripe Tax is charged more than our invoice asks (its tax): what Stripe charged, refunded or
disputed of it (charge money) is counted on our invoice before tax (invoice money) in the proportion of the Stripe
invoice's ``total_excluding_tax`` to its ``total`` (:func:`before_tax`), and an amount of ours is asked of Stripe
tax included by the inverse (:func:`with_tax`) - each rounded once, half-up; the whole charge is exactly the whole
invoice, never a cent off (D344, D384).

An amount in cents shown or paid out in parts (a bill's counted sum beside each of its credits) is split by
:func:`allocate_cents`, never by rounding each part: the parts add up to the amount exactly (D217).
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from decimal import ROUND_HALF_UP, Context, Decimal, InvalidOperation
from fractions import Fraction
from typing import Final

CENT: Final = Decimal("0.01")
# The 28 digits every amount of ours fits in, whatever context the running thread has (a library or a caller's
# ``localcontext`` may raise its precision): beyond them an amount is refused, never written.
_AMOUNTS: Final = Context(prec=28, rounding=ROUND_HALF_UP, traps=[InvalidOperation])
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

    The rounding of every amount billed or counted (an allowance given away is rounded down instead:
    :func:`round_money_down`). Works on Fractions exactly, so a prorated fee such as ``29 x 10/31`` is rounded once,
    from its exact value.
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


def round_money_down(value: Exact) -> Decimal:
    """Round an exact allowance down to the cent, toward zero: what may be given away (a tolerance's write-off band)
    never exceeds its rule. ``0.745`` -> ``0.74`` (half-up: ``0.75``), ``0.1299`` -> ``0.12``, ``-0.745`` ->
    ``-0.74``. Works on Fractions exactly, like :func:`round_money`."""
    exact = _as_fraction(value)
    magnitude = abs(exact * 100)
    whole = magnitude.numerator // magnitude.denominator
    if whole == 0:
        return ZERO
    return (Decimal(whole if exact > 0 else -whole) / 100).quantize(CENT)


def share_percent(used: Exact, included: Exact | None) -> Decimal | None:
    """The share of an allowance used, in percent, CUT to two decimals (toward zero, never half-up): ``49,998`` of
    ``50,000`` (99.996 %) is ``99.99``, not ``100.00`` beside no overage; a positive share below 0.01 % is ``0.01``
    (``40`` of ``1,000,000`` = 0.004 %), never ``0.00`` for usage begun. ``None`` without a positive allowance
    (unlimited or none). Exact on Fractions, like :func:`round_money`."""
    if included is None or _as_fraction(included) <= 0:
        return None
    share = _as_fraction(used) * 100 / _as_fraction(included)
    cut = round_money_down(share)  # two decimals toward zero: the cent rule serves a hundredth of a percent
    return CENT if share > 0 and cut == 0 else cut


def line_amount(quantity: Exact, unit_price: Exact) -> Decimal:
    """Amount of an invoice line: quantity x unit price, rounded by :func:`round_money`."""
    return round_money(_as_fraction(quantity) * _as_fraction(unit_price))


def _tax_ratio(taxed: tuple[int, int]) -> tuple[int, int]:
    whole, net = taxed
    if isinstance(whole, bool) or isinstance(net, bool) or whole <= 0 or net <= 0:
        raise ValueError(f"a taxed total needs positive cents (total, total excluding tax), not {taxed}")
    return whole, net


def before_tax(charged: Exact, taxed: tuple[int, int]) -> Decimal:
    """Charge money as invoice money: ``charged`` (what a card payment charged, refunded or disputed, tax included)
    x ``total_excluding_tax / total`` of its Stripe invoice (``taxed``: those two, in cents), rounded once by
    :func:`round_money`. The whole charge is exactly the total before tax: ``71.72`` of (7172, 6520) is ``65.20``,
    half of it (``35.86``) ``32.60``. ValueError for a ``taxed`` that is not two positive cents."""
    whole, net = _tax_ratio(taxed)
    return round_money(_as_fraction(charged) * net / whole)


def with_tax(amount: Exact, taxed: tuple[int, int]) -> Decimal:
    """Invoice money as charge money, the inverse of :func:`before_tax`: ``amount`` x ``total / total_excluding_tax``
    rounded once - what to ask the processor to refund of a taxed payment so the customer gets its tax back too:
    ``65.20`` of (7172, 6520) is ``71.72``, ``10.00`` is ``11.00``."""
    whole, net = _tax_ratio(taxed)
    return round_money(_as_fraction(amount) * whole / net)


def exact_decimal(value: Exact) -> Decimal:
    """An exact value as a Decimal with no digit lost (built from its digits, so no Decimal context rounds it), in
    its shortest form: ``Fraction(1, 200)`` -> ``0.005``. Raises ValueError for a value with no finite decimal form
    (a third); a product of decimals always has one."""
    exact = _as_fraction(value)
    denominator = exact.denominator
    twos = fives = 0
    while denominator % 2 == 0:
        denominator //= 2
        twos += 1
    while denominator % 5 == 0:
        denominator //= 5
        fives += 1
    if denominator != 1:
        raise ValueError(f"{exact} has no finite decimal form")
    places = max(twos, fives)
    digits = exact.numerator * (10**places // exact.denominator)
    while places > 0 and digits % 10 == 0:
        digits //= 10
        places -= 1
    return Decimal(f"{digits}E-{places}")


def exact_amount(quantity: Exact, unit_price: Exact) -> Decimal:
    """quantity x unit price, exact and **not** rounded (a crypto credit's USD: token amount x its rate): to be summed
    with the others it is counted with, then rounded once by :func:`rounded_sum`."""
    return exact_decimal(_as_fraction(quantity) * _as_fraction(unit_price))


def rounded_sum(amounts: Iterable[Exact]) -> Decimal:
    """The exact sum of exact amounts (no Decimal context on the way), rounded once by :func:`round_money`: what
    several credits count for together. Never more than half a cent away from what they are worth, however many."""
    return round_money(sum((_as_fraction(amount) for amount in amounts), Fraction(0)))


def allocate_cents(total: Decimal | int | str, weights: Sequence[Exact]) -> list[Decimal]:
    """``total`` (whole cents) split across ``weights`` in proportion, in whole cents that add up to ``total`` exactly
    - the largest-remainder method: each part gets its exact share rounded down to the cent, and the cents still left
    go one each to the parts whose shares lost the most, a tie to the earlier part. ``1.00`` over three equal weights
    is ``0.34, 0.33, 0.33``. A negative total is split as its magnitude, each part negated.

    ValueError: ``total`` not in whole cents, no weights, a negative weight, or every weight zero while ``total`` is
    not (nothing to split it by; a zero total over zero weights is all zeros)."""
    amount = _as_fraction(to_decimal(total))
    cents = amount * 100
    if cents.denominator != 1:
        raise ValueError(f"total must be whole cents, not {total}")
    shares = [_as_fraction(weight) for weight in weights]
    if not shares:
        raise ValueError("at least one weight is needed")
    if any(share < 0 for share in shares):
        raise ValueError(f"weights must not be negative: {[str(weight) for weight in weights]}")
    whole = sum(shares, Fraction(0))
    sign, magnitude = (-1 if cents < 0 else 1), abs(cents.numerator)
    if whole == 0:
        if magnitude:
            raise ValueError(f"cannot split {total} over weights that are all zero")
        return [ZERO for _ in shares]
    exact = [magnitude * share / whole for share in shares]
    parts = [share.numerator // share.denominator for share in exact]
    left = magnitude - sum(parts)
    # the largest remainders first; on a tie the earlier part (sorted is stable, so index order breaks ties)
    for index in sorted(range(len(exact)), key=lambda i: exact[i] - parts[i], reverse=True)[:left]:
        parts[index] += 1
    return [(Decimal(sign * part) / 100).quantize(CENT) if part else ZERO for part in parts]


def is_whole_cents(value: Decimal | int | str) -> bool:
    """Whether an amount is a whole number of cents (``0.01``, ``5``, ``1.50``, ``1E+30``; not ``0.005``, nor NaN or
    an infinity, which are no amount). Read from the digits, so exact and prompt at any size: no Decimal context to
    overflow and no big-integer arithmetic (``1E-99999999`` as a Fraction is a 10**99999999 denominator). Floats are
    refused."""
    amount = to_decimal(value)
    if not amount.is_finite():
        return False
    _, digits, exponent = amount.as_tuple()
    below_cent = -2 - int(exponent)  # how many of the last digits are fractions of a cent (finite: an int exponent)
    return below_cent <= 0 or not any(digits[-below_cent:])


def two_places(value: Decimal) -> Decimal:
    """A whole-cents amount in its two-place form (``1E+2`` -> ``100.00``); nothing is rounded. ValueError naming it
    when it is not whole cents (:func:`round_money` rounds, not this) or has more digits in cents than Decimal's
    context holds (28): no amount of ours is that large, and every sum with it would be rounded silently."""
    if not is_whole_cents(value):
        raise ValueError(f"{value} is not whole cents")
    try:
        return value.quantize(CENT, context=_AMOUNTS)
    except InvalidOperation:
        raise ValueError(f"{value} is too large for an amount (more than 28 digits in cents)") from None


def in_cents(value: Decimal) -> int:
    """A whole-cents amount as an integer number of cents, what a processor takes (``1.50`` -> 150, ``-1.20`` ->
    -120, ``1E+2`` -> 10000); nothing is rounded. ValueError as :func:`two_places` - the one rule: not whole cents
    (``12.345``, ``1E-99999999``, NaN) or more than 28 digits in cents (``value * 100`` would round it silently)."""
    return int(two_places(value).scaleb(2, context=_AMOUNTS))


def total(amounts: list[Decimal]) -> Decimal:
    """Sum already-rounded amounts (a total is the sum of its lines, never rounded again), as ``0.00``-style cents.

    ValueError naming the amounts that are not whole cents: a sum of rounded amounts has nothing to round, so a
    sub-cent amount here is a bug upstream, refused rather than rounded silently (D245). Amounts to be
    rounded when summed (crypto credits' exact USD) go through :func:`rounded_sum`."""
    odd = [amount for amount in amounts if not is_whole_cents(amount)]
    if odd:
        raise ValueError(f"a total sums whole cents; not whole cents: {', '.join(str(amount) for amount in odd)}")
    return sum(amounts, ZERO).quantize(CENT)


def decimal_str(value: Decimal) -> str:
    """Plain (never scientific) string of a Decimal without trailing zeros, e.g. ``0.00072`` or ``10000``."""
    if value == value.to_integral_value():
        return format(value.quantize(Decimal(1)), "f")
    return format(value.normalize(), "f")


def money_str(value: Decimal) -> str:
    """Two-decimal string of a money amount, e.g. ``36.20``."""
    return format(value.quantize(CENT, rounding=ROUND_HALF_UP), "f")


def optional_money_str(value: Decimal | None) -> str | None:
    """:func:`money_str` of an amount that may be absent (no budget, no hard limit): ``None`` stays ``None``."""
    return None if value is None else money_str(value)
