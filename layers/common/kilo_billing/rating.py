"""Rating: usage per meter per tier segment -> invoice lines.

Rules (billing-policy.md, "Rating"; decisions in docs/decisions.md):
- included allowance per meter per period; overage = max(0, used - included); charge = overage x our unit price;
- a period is rated in *tier segments* (the tier in effect when the usage happened); the monthly fee and the included
  allowances of a segment are prorated by the exact fraction of the period the segment covers. A prorated allowance is
  rounded **up** to the meter step (whole minute / message, 0.01 GB), in the customer's favour; a prorated fee is
  rounded once, from its exact value, by :func:`kilo_billing.money.round_money`;
- data transfer is summed in bytes per segment and turned into GB with :func:`kilo_billing.meters.bytes_to_gb`;
- every meter gets a line, even when the allowance covers it ($0.00).
Late usage of an invoiced period is the close's: ``kilo_billing.invoicing.adjustment_lines`` (D5).
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field, replace
from datetime import datetime
from decimal import Decimal
from enum import StrEnum
from fractions import Fraction

from kilo_billing.catalog import OveragePolicy, PriceBook, Tier
from kilo_billing.meters import METER_UNITS, Meter, bytes_to_gb
from kilo_billing.money import ZERO, decimal_str, line_amount, money_str, round_money, total
from kilo_billing.periods import Period, ensure_utc


class RatingError(ValueError):
    """Usage or a tier schedule that cannot be rated as given."""


class LineKind(StrEnum):
    FEE = "fee"  # a monthly fee (in advance, or prorated for the period it covers)
    FEE_PRORATION = "fee_proration"  # true-up of a fee billed in advance against the fee actually due
    FEE_FIRST_MONTH = "fee_first_month"  # the fee of the account's first period (prorated from its sign-up)
    USAGE = "usage"  # usage of the period, in arrears
    ADJUSTMENT = "adjustment"  # late usage of an already invoiced period


@dataclass(frozen=True, slots=True)
class UsageRecord:
    """Usage in billing-ready base units: minutes of one connection (video/audio), messages, or bytes."""

    meter: Meter
    quantity: int
    at: datetime

    def __post_init__(self) -> None:
        if isinstance(self.quantity, bool) or not isinstance(self.quantity, int):
            raise RatingError(f"usage quantity must be an integer, got {self.quantity!r}")
        if self.quantity < 0:
            raise RatingError(f"usage quantity must be >= 0, got {self.quantity}")
        ensure_utc(self.at)


@dataclass(frozen=True, slots=True)
class TierSegment:
    """A span of a period during which one tier was in effect: ``[start, end)``."""

    tier: str
    start: datetime
    end: datetime


@dataclass(frozen=True, slots=True)
class TierChange:
    """From ``at`` on, ``tier`` is in effect."""

    at: datetime
    tier: str


def effective_change(book: PriceBook, current: str, new: str, requested_at: datetime) -> TierChange:
    """When a requested tier change takes effect: upgrades immediately, downgrades at the next period start."""
    old_tier, new_tier = book.tier(current), book.tier(new)
    if old_tier.id == new_tier.id:
        raise RatingError(f"already on tier {current!r}")
    at = ensure_utc(requested_at)
    if new_tier.rank > old_tier.rank:
        return TierChange(at=at, tier=new_tier.id)
    return TierChange(at=Period.containing(at).end, tier=new_tier.id)


def segments_for(period: Period, changes: Sequence[TierChange]) -> list[TierSegment]:
    """The tier segments of ``period`` given an account's tier history (each change holds until the next)."""
    ordered = sorted(changes, key=lambda change: ensure_utc(change.at))
    before = [change for change in ordered if change.at <= period.start]
    if not before:
        raise RatingError(f"no tier in effect at the start of {period}")
    current = before[-1].tier
    cursor = period.start
    segments: list[TierSegment] = []
    for change in ordered:
        if not period.start < change.at < period.end:
            continue
        if change.at > cursor and change.tier != current:
            segments.append(TierSegment(current, cursor, change.at))
            cursor = change.at
        current = change.tier  # several changes at one instant: the last one recorded wins
    segments.append(TierSegment(current, cursor, period.end))
    merged: list[TierSegment] = []
    for segment in segments:  # a change back to the same tier at one instant leaves nothing to split
        if merged and merged[-1].tier == segment.tier:
            merged[-1] = TierSegment(segment.tier, merged[-1].start, segment.end)
        else:
            merged.append(segment)
    return merged


def _check_segments(period: Period, segments: Sequence[TierSegment]) -> None:
    if not segments:
        raise RatingError("at least one tier segment is required")
    cursor = period.start
    for segment in segments:
        if ensure_utc(segment.start) != cursor:
            raise RatingError(f"tier segments must be contiguous from {period.start.isoformat()}")
        if segment.end <= segment.start:
            raise RatingError("a tier segment must end after it starts")
        cursor = ensure_utc(segment.end)
    if cursor != period.end:
        raise RatingError(f"tier segments must cover the period {period} exactly")


@dataclass(frozen=True, slots=True)
class InvoiceLine:
    kind: LineKind
    description: str
    period: Period
    amount: Decimal
    meter: Meter | None = None
    tier: str | None = None
    used: Decimal = Decimal(0)
    included: Decimal | None = None  # None on a usage line = unlimited
    billable: Decimal = Decimal(0)
    unit_price: Decimal | None = None
    proration: Fraction | None = None  # exact fraction of the period a prorated fee or allowance covers

    def as_json(self) -> dict[str, object]:
        """JSON-safe view: money and quantities as strings, never floats."""
        view: dict[str, object] = {
            "kind": self.kind.value,
            "description": self.description,
            "period": self.period.key,
            "amount": money_str(self.amount),
        }
        if self.meter is not None:
            view["meter"] = self.meter.value
        if self.tier is not None:
            view["tier"] = self.tier
        if self.kind is LineKind.USAGE:
            view["used"] = decimal_str(self.used)
            view["included"] = decimal_str(self.included) if self.included is not None else None
            view["billable"] = decimal_str(self.billable)
            view["unit_price"] = decimal_str(self.unit_price) if self.unit_price is not None else None
        if self.proration is not None and self.proration != 1:
            view["proration"] = f"{self.proration.numerator}/{self.proration.denominator}"
        return view


@dataclass(frozen=True, slots=True)
class SegmentUsage:
    """Usage totals of one tier segment, in base units (minutes, messages, bytes)."""

    segment: TierSegment
    totals: Mapping[Meter, int]


@dataclass(frozen=True, slots=True)
class RatedPeriod:
    """A period's usage rated against the price book: fee lines (prorated), usage lines, cost basis."""

    period: Period
    price_book_version: str
    segments: tuple[SegmentUsage, ...]
    fee_lines: tuple[InvoiceLine, ...]
    usage_lines: tuple[InvoiceLine, ...]
    cost_basis: Decimal  # LiveKit's cost of all units used (units x base price), exact
    used: Mapping[Meter, Decimal] = field(default_factory=dict)

    @property
    def lines(self) -> tuple[InvoiceLine, ...]:
        return self.fee_lines + self.usage_lines

    @property
    def fee(self) -> Decimal:
        return total([line.amount for line in self.fee_lines])

    @property
    def usage_total(self) -> Decimal:
        return total([line.amount for line in self.usage_lines])

    @property
    def total(self) -> Decimal:
        return total([line.amount for line in self.lines])

    @property
    def cost_basis_rounded(self) -> Decimal:
        return round_money(self.cost_basis)

    @property
    def margin(self) -> Decimal:
        return self.total - self.cost_basis_rounded


def bucket_usage(period: Period, segments: Sequence[TierSegment], usage: Iterable[UsageRecord]) -> list[SegmentUsage]:
    """Sum usage per meter per tier segment. Usage outside the period is an error (split it first)."""
    _check_segments(period, segments)
    sums: list[dict[Meter, int]] = [dict.fromkeys(Meter, 0) for _ in segments]
    for record in usage:
        at = ensure_utc(record.at)
        if not period.contains(at):
            raise RatingError(f"usage at {at.isoformat()} is outside period {period}")
        for index, segment in enumerate(segments):
            if segment.start <= at < segment.end:
                sums[index][record.meter] += record.quantity
                break
    return [SegmentUsage(segment, totals) for segment, totals in zip(segments, sums, strict=True)]


def billing_quantity(meter: Meter, base_quantity: int) -> Decimal:
    """Base units -> billing units: minutes and messages as they are, bytes -> GB in 0.01 GB steps."""
    if meter is Meter.DATA_TRANSFER:
        return bytes_to_gb(base_quantity)
    return Decimal(base_quantity)


def prorated_allowance(allowance: Decimal | None, meter: Meter, fraction: Fraction) -> Decimal | None:
    """An allowance for a fraction of the period, rounded up to the meter's step (customer's favour)."""
    if allowance is None:
        return None
    if fraction == 1:
        return allowance
    step = Fraction(METER_UNITS[meter].step)
    steps = math.ceil(Fraction(allowance) * fraction / step)
    return Decimal(steps) * METER_UNITS[meter].step


def _fee_line(period: Period, tier: Tier, fraction: Fraction, start: datetime, end: datetime) -> InvoiceLine:
    prorated = fraction != 1
    description = f"{tier.name} monthly fee {period}"
    if prorated:
        description += f" (prorated {start:%Y-%m-%d %H:%M} to {end:%Y-%m-%d %H:%M} UTC)"
    return InvoiceLine(
        kind=LineKind.FEE,
        description=description,
        period=period,
        amount=round_money(Fraction(tier.monthly_fee) * fraction),
        tier=tier.id,
        unit_price=tier.monthly_fee,
        proration=fraction,
    )


def _usage_line(
    period: Period, book: PriceBook, tier: Tier, meter: Meter, base_quantity: int, fraction: Fraction
) -> InvoiceLine:
    used = billing_quantity(meter, base_quantity)
    included = prorated_allowance(tier.allowance(meter), meter, fraction)
    if tier.overage is OveragePolicy.NONE or included is None:
        billable = Decimal(0)
    else:
        billable = max(Decimal(0), used - included)
    unit_price = book.unit_price(meter)
    unit = METER_UNITS[meter].billing_unit
    return InvoiceLine(
        kind=LineKind.USAGE,
        description=f"{meter.value.replace('_', ' ').capitalize()} ({unit}) on {tier.name}, {period}",
        period=period,
        amount=line_amount(billable, unit_price),
        meter=meter,
        tier=tier.id,
        used=used,
        included=included,
        billable=billable,
        unit_price=unit_price,
        proration=fraction,
    )


def rate_segments(period: Period, segments: Sequence[SegmentUsage], book: PriceBook) -> RatedPeriod:
    """Rate pre-summed segment usage (what the month-to-date aggregates hold)."""
    _check_segments(period, [usage.segment for usage in segments])
    fee_lines: list[InvoiceLine] = []
    usage_lines: list[InvoiceLine] = []
    cost_basis = Decimal(0)
    used: dict[Meter, Decimal] = dict.fromkeys(Meter, Decimal(0))
    for usage in segments:
        tier = book.tier(usage.segment.tier)
        fraction = period.fraction(usage.segment.start, usage.segment.end)
        fee_lines.append(_fee_line(period, tier, fraction, usage.segment.start, usage.segment.end))
        for meter in Meter:
            quantity = usage.totals.get(meter, 0)
            line = _usage_line(period, book, tier, meter, quantity, fraction)
            usage_lines.append(line)
            used[meter] += line.used
            cost_basis += line.used * book.base_price(meter)
    return RatedPeriod(
        period=period,
        price_book_version=book.version,
        segments=tuple(segments),
        fee_lines=tuple(fee_lines),
        usage_lines=tuple(usage_lines),
        cost_basis=cost_basis,
        used=used,
    )


def rate_period(
    period: Period, segments: Sequence[TierSegment], usage: Iterable[UsageRecord], book: PriceBook
) -> RatedPeriod:
    """Rate a period's usage records under its tier segments."""
    return rate_segments(period, bucket_usage(period, segments, usage), book)


def advance_fee_line(period: Period, tier_id: str, book: PriceBook) -> InvoiceLine:
    """The fee for ``period`` billed in advance (full period, the tier in effect at its start)."""
    tier = book.tier(tier_id)
    line = _fee_line(period, tier, Fraction(1), period.start, period.end)
    return replace(line, description=f"{line.description} (in advance)")


def fee_true_up(rated: RatedPeriod, billed_in_advance: Decimal) -> InvoiceLine | None:
    """The difference between the fee due for a period (prorated by segment) and what was billed in advance."""
    difference = rated.fee - billed_in_advance
    if difference == 0:
        return None
    return InvoiceLine(
        kind=LineKind.FEE_PRORATION,
        description=(
            f"Tier change proration {rated.period}: fees due {money_str(rated.fee)}, "
            f"billed in advance {money_str(billed_in_advance)}"
        ),
        period=rated.period,
        amount=difference,
    )


def first_month_fee(rated: RatedPeriod, signed_up_at: datetime, book: PriceBook) -> InvoiceLine | None:
    """The fee of the account's first period, billed by that period's close: nothing was billed for it in advance
    (the account did not exist at the previous close), so this is the whole fee due - each paying tier segment's fee,
    prorated from the sign-up when the account signed up inside the period. Not a tier change: it says what it is."""
    if rated.fee == 0:
        return None
    parts = []
    for line, usage in zip(rated.fee_lines, rated.segments, strict=True):
        if line.amount == 0:
            continue
        segment = usage.segment
        name = book.tier(usage.segment.tier).name
        if line.proration is not None and line.proration != 1:
            parts.append(
                f"{name} {segment.start:%Y-%m-%d %H:%M} to {segment.end:%Y-%m-%d %H:%M} UTC "
                f"{money_str(line.amount)} of {money_str(book.tier(segment.tier).monthly_fee)} a month"
            )
        else:
            parts.append(f"{name} {money_str(line.amount)}")
    since = ensure_utc(signed_up_at)
    joined = f" from sign-up on {since:%Y-%m-%d %H:%M} UTC" if rated.period.contains(since) else ""
    return InvoiceLine(
        kind=LineKind.FEE_FIRST_MONTH,
        description=f"First-month fee {rated.period}{joined}: {'; '.join(parts)}",
        period=rated.period,
        amount=rated.fee,
    )


@dataclass(frozen=True, slots=True)
class Invoice:
    """One invoice per account per period: usage of the period in arrears, next period's fee in advance."""

    account_id: str
    period: Period
    currency: str
    lines: tuple[InvoiceLine, ...]

    @property
    def total(self) -> Decimal:
        return total([line.amount for line in self.lines])

    def as_json(self) -> dict[str, object]:
        return {
            "account_id": self.account_id,
            "period": self.period.key,
            "currency": self.currency,
            "lines": [line.as_json() for line in self.lines],
            "total": money_str(self.total),
        }


def compose_invoice(
    account_id: str,
    rated: RatedPeriod,
    next_period_tier: str,
    book_for_next_period: PriceBook,
    fees_billed_in_advance: Decimal = ZERO,
    first_month: tuple[datetime, PriceBook] | None = None,
) -> Invoice:
    """Assemble the invoice closing ``rated.period``.

    Lines: usage of the period (arrears) + fee true-up for the period if the tier changed (what the segments owed minus
    what was billed in advance) + the next period's fee (advance). The close (``invoicing.compose_close``) adds the
    late-usage adjustments of earlier periods and the account credit.
    ``first_month``: (sign-up, the period's price book) when ``rated.period`` is the account's first period: its fee,
    of which nothing was billed in advance, is a first-month fee line instead of a true-up.
    """
    lines: list[InvoiceLine] = list(rated.usage_lines)
    if first_month is not None and fees_billed_in_advance == 0:
        true_up = first_month_fee(rated, *first_month)
    else:
        true_up = fee_true_up(rated, fees_billed_in_advance)
    if true_up is not None:
        lines.append(true_up)
    lines.append(advance_fee_line(rated.period.next(), next_period_tier, book_for_next_period))
    return Invoice(
        account_id=account_id, period=rated.period, currency=book_for_next_period.currency, lines=tuple(lines)
    )
