"""Property tests of rating: totals are sums of lines, monotone in usage, independent of how usage is split across
rating calls (including late-usage adjustments and mid-period upgrades), exact (no floats), and the rounding rules."""

from __future__ import annotations

import dataclasses
import math
from collections.abc import Mapping
from datetime import timedelta
from decimal import ROUND_HALF_UP, Decimal
from fractions import Fraction
from typing import Any

from hypothesis import given, settings
from hypothesis import strategies as st

from kilo_billing.catalog import default_catalog
from kilo_billing.meters import Meter, connection_minutes
from kilo_billing.money import CENT, round_money
from kilo_billing.periods import Period
from kilo_billing.rating import (
    RatedPeriod,
    TierChange,
    UsageRecord,
    adjustment_lines,
    compose_invoice,
    rate_period,
    segments_for,
)

BOOK = default_catalog().for_period(Period(2026, 1))
PERIODS = [Period(2026, 2), Period(2026, 3), Period(2026, 4), Period(2028, 2)]  # 28, 31, 30, 29 days
TIERS = ["personal", "team", "enterprise"]
# Per-record upper bounds: a few records cross even Team's allowance.
MAX_QUANTITY = {
    Meter.VIDEO: 30_000,
    Meter.AUDIO: 60_000,
    Meter.MESSAGES: 600_000,
    Meter.DATA_TRANSFER: 60 * 10**9,
}


@st.composite
def instants(draw: st.DrawFn, period: Period):
    offset = draw(st.integers(0, period.seconds * 1_000_000 - 1))
    return period.start + timedelta(microseconds=offset)


@st.composite
def records(draw: st.DrawFn, period: Period):
    meter = draw(st.sampled_from(list(Meter)))
    quantity = draw(st.integers(0, MAX_QUANTITY[meter]))
    return UsageRecord(meter, quantity, draw(instants(period)))


@st.composite
def schedules(draw: st.DrawFn, period: Period) -> list[TierChange]:
    """A tier history: a tier at the period start, then up to two upgrades at distinct instants inside it."""
    start_rank = draw(st.integers(0, len(TIERS) - 1))
    changes = [TierChange(period.start, TIERS[start_rank])]
    upgrades = draw(st.integers(0, len(TIERS) - 1 - start_rank))
    offsets = draw(
        st.lists(st.integers(1, period.seconds - 1), min_size=upgrades, max_size=upgrades, unique=True).map(sorted)
    )
    for step, offset in enumerate(offsets, start=1):
        changes.append(TierChange(period.start + timedelta(seconds=offset), TIERS[start_rank + step]))
    return changes


@st.composite
def scenarios(draw: st.DrawFn, max_records: int = 12):
    period = draw(st.sampled_from(PERIODS))
    segments = segments_for(period, draw(schedules(period)))
    usage = draw(st.lists(records(period), max_size=max_records))
    return period, segments, usage


def _rate(period, segments, usage) -> RatedPeriod:
    return rate_period(period, segments, usage, BOOK)


@settings(max_examples=60, deadline=None)
@given(scenarios(), st.sampled_from(TIERS), st.integers(0, 20_000).map(lambda c: Decimal(c) / 100))
def test_rated_and_invoice_totals_are_the_sum_of_their_lines(scenario, next_tier, billed_in_advance):
    period, segments, usage = scenario
    rated = _rate(period, segments, usage)
    assert rated.total == sum((line.amount for line in rated.lines), Decimal(0))
    assert rated.total == rated.fee + rated.usage_total
    for line in rated.lines:
        assert line.amount == line.amount.quantize(CENT)  # every line is whole cents
    invoice = compose_invoice("acct", rated, next_tier, BOOK, billed_in_advance)
    assert invoice.total == sum((line.amount for line in invoice.lines), Decimal(0))
    # usage in arrears + (fees due - fees billed in advance) + next period's fee in advance
    next_fee = invoice.lines[-1].amount
    assert invoice.total == rated.usage_total + (rated.fee - billed_in_advance) + next_fee


@settings(max_examples=60, deadline=None)
@given(st.data())
def test_adding_usage_never_lowers_the_total(data):
    period, segments, usage = data.draw(scenarios())
    extra = data.draw(st.lists(records(period), min_size=1, max_size=5))
    before, after = _rate(period, segments, usage), _rate(period, segments, usage + extra)
    assert after.total >= before.total
    for old, new in zip(before.usage_lines, after.usage_lines, strict=True):
        assert new.amount >= old.amount


@settings(max_examples=60, deadline=None)
@given(st.data())
def test_reordering_or_splitting_records_rated_together_gives_the_same_result(data):
    period, segments, usage = data.draw(scenarios())
    shuffled = data.draw(st.permutations(usage))
    # split every record's quantity into two records at the same instant
    cuts = [data.draw(st.integers(0, record.quantity)) for record in shuffled]
    split = [
        part
        for record, cut in zip(shuffled, cuts, strict=True)
        for part in (
            UsageRecord(record.meter, cut, record.at),
            UsageRecord(record.meter, record.quantity - cut, record.at),
        )
    ]
    reference = _rate(period, segments, usage)
    for variant in (shuffled, split):
        rated = _rate(period, segments, variant)
        assert rated.lines == reference.lines
        assert rated.total == reference.total
        assert rated.cost_basis == reference.cost_basis


@settings(max_examples=80, deadline=None)
@given(st.data())
def test_invoiced_total_plus_late_adjustments_equals_rating_everything(data):
    period, segments, usage = data.draw(scenarios(max_records=16))
    late_flags = data.draw(st.lists(st.booleans(), min_size=len(usage), max_size=len(usage)))
    invoiced = [record for record, late in zip(usage, late_flags, strict=True) if not late]
    late = [record for record, late in zip(usage, late_flags, strict=True) if late]

    adjustments = adjustment_lines(period, segments, invoiced, late, BOOK)
    invoiced_total = _rate(period, segments, invoiced).total
    everything = _rate(period, segments, usage).total
    assert invoiced_total + sum((line.amount for line in adjustments), Decimal(0)) == everything
    for line in adjustments:
        assert line.amount >= 0  # late usage only adds
        assert line.used is not None
        assert line.used > 0


def _assert_no_float(value: Any, path: str = "result") -> None:
    assert not isinstance(value, float), f"float at {path}: {value!r}"
    if dataclasses.is_dataclass(value) and not isinstance(value, type):
        for field in dataclasses.fields(value):
            _assert_no_float(getattr(value, field.name), f"{path}.{field.name}")
    elif isinstance(value, Mapping):
        for key, item in value.items():
            _assert_no_float(key, f"{path}[{key!r}] (key)")
            _assert_no_float(item, f"{path}[{key!r}]")
    elif isinstance(value, list | tuple | set | frozenset):
        for index, item in enumerate(value):
            _assert_no_float(item, f"{path}[{index}]")


@settings(max_examples=50, deadline=None)
@given(scenarios(), st.sampled_from(TIERS))
def test_no_float_anywhere_in_a_rated_result_or_its_json_view(scenario, next_tier):
    period, segments, usage = scenario
    rated = _rate(period, segments, usage)
    _assert_no_float(rated)
    for value in (rated.total, rated.fee, rated.usage_total, rated.cost_basis_rounded, rated.margin):
        assert isinstance(value, Decimal)
    invoice = compose_invoice("acct", rated, next_tier, BOOK)
    _assert_no_float(invoice)
    _assert_no_float(invoice.as_json())
    _assert_no_float([line.as_json() for line in rated.lines])


@settings(max_examples=300, deadline=None)
@given(
    st.decimals(
        min_value=Decimal("-1000000000000"),
        max_value=Decimal("1000000000000"),
        allow_nan=False,
        allow_infinity=False,
    )
)
def test_round_money_agrees_with_decimal_quantize_half_up(value):
    assert round_money(value) == value.quantize(CENT, rounding=ROUND_HALF_UP)


@settings(max_examples=300, deadline=None)
@given(st.integers(-(10**12), 10**12), st.integers(0, 9))
def test_round_money_agrees_with_quantize_on_decimals_with_few_places(units, places):
    value = Decimal(units).scaleb(-places)
    assert round_money(value) == value.quantize(CENT, rounding=ROUND_HALF_UP)


@settings(max_examples=300, deadline=None)
@given(st.fractions(min_value=-(10**9), max_value=10**9, max_denominator=10**7))
def test_round_money_is_exact_on_fractions(value):
    # independent oracle: cents = floor(|x| x 100 + 1/2), sign restored (half away from zero)
    cents = math.floor(abs(value) * 100 + Fraction(1, 2))
    expected = Decimal(cents if value >= 0 else -cents).scaleb(-2)
    result = round_money(value)
    assert result == expected
    assert result == result.quantize(CENT)
    assert abs(Fraction(result) - value) <= Fraction(1, 200)  # never more than half a cent away


@settings(max_examples=300, deadline=None)
@given(st.data())
def test_connection_minutes_video_plus_audio_is_ceil_of_connected_minutes(data):
    connected = data.draw(st.fractions(min_value=0, max_value=10**6, max_denominator=10**6))
    video = data.draw(st.fractions(min_value=0, max_value=connected, max_denominator=10**6))
    minutes = connection_minutes(connected, video)
    assert minutes.video + minutes.audio == math.ceil(connected / 60)
    assert minutes.total == math.ceil(connected / 60)
    assert 0 <= minutes.video <= minutes.total
    assert minutes.audio >= 0
    assert minutes.video == min(minutes.total, math.ceil(video / 60))
