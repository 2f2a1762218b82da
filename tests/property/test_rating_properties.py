"""Property tests of rating against an independent reference model written here.

The model (``reference_*`` below) has its own arithmetic, with exact Fractions: the published prices, fees and
allowances typed by hand from billing-policy.md (it never reads the price book), each line rounded half-up to the cent
(D2), fees and allowances prorated by exact elapsed time with allowances rounded up to the meter's step and data summed
per segment in 0.01 GB steps (D3), late usage as the per-line difference of rating with and without it (D5), checked
against what the close runs (``invoicing.adjustment_lines`` over rating's counters). A few hand-worked figures check
the model itself. Rating, invoices and adjustments must equal it on generated inputs;
metamorphic properties (more usage never costs less, splitting or reordering records changes nothing) and the
rounding rules are checked beside it.
"""

from __future__ import annotations

import dataclasses
import math
import os
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from decimal import ROUND_HALF_UP, Decimal
from fractions import Fraction
from typing import Any

from hypothesis import given, settings
from hypothesis import strategies as st

from kilo_billing.accounts import AccountProfile
from kilo_billing.catalog import default_catalog
from kilo_billing.invoicing import adjustment_lines, rate_counters
from kilo_billing.meters import Meter, connection_minutes
from kilo_billing.money import CENT, round_money
from kilo_billing.periods import Period
from kilo_billing.rating import (
    LineKind,
    RatedPeriod,
    TierChange,
    TierSegment,
    UsageRecord,
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

# --- The reference model ---------------------------------------------------------------------------------------------
# billing-policy.md, typed by hand: LiveKit's base price per unit and our price (base x 1.20) per minute, message, GB.
BASE_PRICE = {
    Meter.VIDEO: Fraction("0.0006"),
    Meter.AUDIO: Fraction("0.0003"),
    Meter.MESSAGES: Fraction("0.0001"),
    Meter.DATA_TRANSFER: Fraction("0.0001"),
}
OUR_PRICE = {
    Meter.VIDEO: Fraction("0.00072"),
    Meter.AUDIO: Fraction("0.00036"),
    Meter.MESSAGES: Fraction("0.00012"),
    Meter.DATA_TRANSFER: Fraction("0.00012"),
}
MONTHLY_FEE = {"personal": Fraction(0), "team": Fraction(29), "enterprise": Fraction(99)}
ALLOWANCE: dict[str, dict[Meter, Fraction] | None] = {  # None: unlimited, no overage
    "personal": {
        Meter.VIDEO: Fraction(5_000),
        Meter.AUDIO: Fraction(10_000),
        Meter.MESSAGES: Fraction(100_000),
        Meter.DATA_TRANSFER: Fraction(10),
    },
    "team": {
        Meter.VIDEO: Fraction(50_000),
        Meter.AUDIO: Fraction(100_000),
        Meter.MESSAGES: Fraction(1_000_000),
        Meter.DATA_TRANSFER: Fraction(100),
    },
    "enterprise": None,
}
STEP = {
    Meter.VIDEO: Fraction(1),
    Meter.AUDIO: Fraction(1),
    Meter.MESSAGES: Fraction(1),
    Meter.DATA_TRANSFER: Fraction(1, 100),
}
BYTES_PER_GB_STEP = 10**7  # 0.01 GB of 10^9 bytes
EPOCH = datetime(1970, 1, 1, tzinfo=UTC)


def steps_up(value: Fraction, step: Fraction) -> int:
    """The smallest whole number of steps covering ``value`` (value >= 0)."""
    quotient = value / step
    whole = quotient.numerator // quotient.denominator
    return whole if whole * step >= value else whole + 1


def cents_half_up(amount: Fraction) -> Fraction:
    """To the cent, a half cent away from zero."""
    cents = math.floor(abs(amount) * 100 + Fraction(1, 2))
    return Fraction(cents if amount >= 0 else -cents, 100)


def microseconds(delta: timedelta) -> int:
    return delta // timedelta(microseconds=1)


def month_bounds(period: Period) -> tuple[datetime, datetime]:
    start = datetime(period.year, period.month, 1, tzinfo=UTC)
    end = datetime(period.year + period.month // 12, period.month % 12 + 1, 1, tzinfo=UTC)
    return start, end


@dataclass(frozen=True)
class RefLine:
    used: Fraction
    included: Fraction | None
    billable: Fraction
    amount: Fraction


@dataclass(frozen=True)
class RefRating:
    fees: dict[str, Fraction]  # tier -> prorated fee, rounded
    lines: dict[tuple[str, Meter], RefLine]  # (tier, meter) -> usage line
    cost_basis: Fraction

    @property
    def fee(self) -> Fraction:
        return sum(self.fees.values(), Fraction(0))

    @property
    def usage_total(self) -> Fraction:
        return sum((line.amount for line in self.lines.values()), Fraction(0))

    @property
    def total(self) -> Fraction:
        return self.fee + self.usage_total


Segment = tuple[str, datetime, datetime]  # (tier, start, end): [start, end)


def reference_rating(period: Period, segments: Sequence[Segment], usage: Sequence[UsageRecord]) -> RefRating:
    start, end = month_bounds(period)
    period_us = microseconds(end - start)
    fees: dict[str, Fraction] = {}
    lines: dict[tuple[str, Meter], RefLine] = {}
    cost_basis = Fraction(0)
    for tier, segment_start, segment_end in segments:
        fraction = Fraction(microseconds(segment_end - segment_start), period_us)
        fees[tier] = cents_half_up(MONTHLY_FEE[tier] * fraction)
        for meter in Meter:
            base = sum(r.quantity for r in usage if r.meter is meter and segment_start <= r.at < segment_end)
            if meter is Meter.DATA_TRANSFER:
                used = Fraction(steps_up(Fraction(base), Fraction(BYTES_PER_GB_STEP)), 100)
            else:
                used = Fraction(base)
            allowances = ALLOWANCE[tier]
            if allowances is None:
                included, billable = None, Fraction(0)
            else:
                included = steps_up(allowances[meter] * fraction, STEP[meter]) * STEP[meter]
                billable = max(Fraction(0), used - included)
            lines[tier, meter] = RefLine(used, included, billable, cents_half_up(billable * OUR_PRICE[meter]))
            cost_basis += used * BASE_PRICE[meter]
    return RefRating(fees, lines, cost_basis)


def reference_adjustments(
    period: Period, segments: Sequence[Segment], invoiced: Sequence[UsageRecord], late: Sequence[UsageRecord]
) -> dict[tuple[str, Meter], tuple[Fraction, Fraction]]:
    """(tier, meter) -> (late quantity, amount) for every line whose quantity the late usage changes."""
    before = reference_rating(period, segments, invoiced)
    after = reference_rating(period, segments, [*invoiced, *late])
    return {
        key: (after.lines[key].used - line.used, after.lines[key].amount - line.amount)
        for key, line in before.lines.items()
        if after.lines[key].used != line.used
    }


def test_given_hand_worked_march_upgrade_then_the_reference_model_agrees() -> None:
    # test_proration's story: Personal -> Team on March 11 (10 and 21 of 31 days), 2,000 and 40,000 video minutes
    march = Period(2026, 3)
    upgrade = datetime(2026, 3, 11, tzinfo=UTC)
    segments = [
        ("personal", datetime(2026, 3, 1, tzinfo=UTC), upgrade),
        ("team", upgrade, datetime(2026, 4, 1, tzinfo=UTC)),
    ]
    usage = [
        UsageRecord(Meter.VIDEO, 2_000, datetime(2026, 3, 5, tzinfo=UTC)),
        UsageRecord(Meter.VIDEO, 40_000, upgrade),
    ]
    model = reference_rating(march, segments, usage)
    assert model.fees == {"personal": 0, "team": Fraction("19.65")}  # 29 x 21/31 = 19.6451...
    assert model.lines["personal", Meter.VIDEO] == RefLine(2_000, 1_613, 387, Fraction("0.28"))  # 5000 x 10/31 up
    assert model.lines["team", Meter.VIDEO] == RefLine(40_000, 33_871, 6_129, Fraction("4.41"))  # 4.41288
    assert model.lines["team", Meter.DATA_TRANSFER].included == Fraction("67.75")  # 100 x 21/31 = 67.74.. up
    assert model.total == Fraction("24.34")
    # late usage: 3,000 more Team minutes -> 9,129 x 0.00072 = 6.57288 -> 6.57, so + 2.16
    late = [UsageRecord(Meter.VIDEO, 3_000, datetime(2026, 3, 31, tzinfo=UTC))]
    assert reference_adjustments(march, segments, usage, late) == {("team", Meter.VIDEO): (3_000, Fraction("2.16"))}
    # data: 3 x 4,000,000 bytes in one segment -> ceil(1.2) = 2 steps = 0.02 GB
    data = [UsageRecord(Meter.DATA_TRANSFER, 4_000_000, datetime(2026, 3, day, tzinfo=UTC)) for day in (1, 2, 3)]
    assert reference_rating(march, segments, data).lines["personal", Meter.DATA_TRANSFER].used == Fraction("0.02")


def test_given_half_cent_ties_then_the_reference_rounding_goes_away_from_zero() -> None:
    assert cents_half_up(Fraction("0.045")) == Fraction("0.05")
    assert cents_half_up(Fraction("0.04464")) == Fraction("0.04")
    assert cents_half_up(Fraction("-0.005")) == Fraction("-0.01")
    assert cents_half_up(Fraction(29, 200)) == Fraction("0.15")  # 0.145 exactly
    assert steps_up(Fraction("67.742"), Fraction(1, 100)) == 6_775
    assert steps_up(Fraction(50_000), Fraction(1)) == 50_000


# --- Generated inputs ------------------------------------------------------------------------------------------------
@dataclass(frozen=True)
class Scenario:
    period: Period
    changes: list[TierChange]  # the account's tier history: a tier at the period start, then upgrades
    segments: list[Segment]  # the same history as spans, built here (not by segments_for)
    usage: list[UsageRecord]

    def product_segments(self) -> list[TierSegment]:
        return [TierSegment(tier, start, end) for tier, start, end in self.segments]


def usage_in(start: datetime, end: datetime, changes_at: Sequence[datetime], max_records: int) -> Any:
    """Usage records anywhere in ``[start, end)``, often exactly at or just before a tier change (segment edges)."""
    edges = [
        *changes_at,
        *(at - timedelta(microseconds=1) for at in changes_at),
        start,
        end - timedelta(microseconds=1),
    ]
    moments = st.one_of(
        st.integers(0, microseconds(end - start) - 1).map(lambda us: start + timedelta(microseconds=us)),
        st.sampled_from(edges),
    )
    records = st.sampled_from(list(Meter)).flatmap(
        lambda meter: st.builds(UsageRecord, st.just(meter), st.integers(0, MAX_QUANTITY[meter]), moments)
    )
    return st.lists(records, max_size=max_records)


@st.composite
def scenarios(draw: st.DrawFn, max_records: int = 12) -> Scenario:
    period = draw(st.sampled_from(PERIODS))
    start, end = month_bounds(period)
    seconds = microseconds(end - start) // 1_000_000
    first = draw(st.integers(0, len(TIERS) - 1))
    upgrades = draw(st.integers(0, len(TIERS) - 1 - first))
    offsets = draw(st.lists(st.integers(1, seconds - 1), min_size=upgrades, max_size=upgrades, unique=True).map(sorted))
    instants = [start + timedelta(seconds=offset) for offset in offsets]
    tiers = TIERS[first : first + upgrades + 1]
    bounds = [start, *instants, end]
    segments = [(tier, bounds[i], bounds[i + 1]) for i, tier in enumerate(tiers)]
    changes = [TierChange(at, tier) for at, tier in zip(bounds, tiers, strict=False)]
    usage = draw(usage_in(start, end, instants, max_records))
    return Scenario(period, changes, segments, usage)


def _rate(scenario: Scenario, usage: Sequence[UsageRecord] | None = None) -> RatedPeriod:
    return rate_period(scenario.period, scenario.product_segments(), scenario.usage if usage is None else usage, BOOK)


def _as_decimal(value: Fraction) -> Decimal:
    return Decimal(value.numerator) / Decimal(value.denominator)


@settings(max_examples=60, deadline=None)
@given(scenarios())
def test_given_any_usage_and_upgrades_then_rating_equals_the_reference_model(scenario: Scenario) -> None:
    assert segments_for(scenario.period, scenario.changes) == scenario.product_segments()
    rated = _rate(scenario)
    model = reference_rating(scenario.period, scenario.segments, scenario.usage)

    assert {line.tier: Fraction(line.amount) for line in rated.fee_lines} == model.fees
    lines = {
        (line.tier, line.meter): RefLine(
            Fraction(line.used),
            None if line.included is None else Fraction(line.included),
            Fraction(line.billable),
            Fraction(line.amount),
        )
        for line in rated.usage_lines
    }
    assert lines == model.lines
    for line in rated.usage_lines:
        assert line.kind is LineKind.USAGE
        assert Fraction(line.unit_price) == OUR_PRICE[line.meter]
    for line in rated.lines:
        assert line.amount == line.amount.quantize(CENT)  # whole cents on every line
    assert Fraction(rated.fee) == model.fee
    assert Fraction(rated.usage_total) == model.usage_total
    assert Fraction(rated.total) == model.total
    assert Fraction(rated.cost_basis) == model.cost_basis


@settings(max_examples=60, deadline=None)
@given(scenarios(), st.sampled_from(TIERS), st.integers(0, 20_000).map(lambda cents: Fraction(cents, 100)))
def test_given_a_rated_period_when_invoiced_then_the_invoice_equals_the_reference_model(
    scenario: Scenario, next_tier: str, billed_in_advance: Fraction
) -> None:
    model = reference_rating(scenario.period, scenario.segments, scenario.usage)
    invoice = compose_invoice("acct", _rate(scenario), next_tier, BOOK, _as_decimal(billed_in_advance))

    true_up = model.fee - billed_in_advance  # fees due for the period minus the fee billed in advance for it
    next_fee = cents_half_up(MONTHLY_FEE[next_tier])  # the next period's fee, in advance, in full
    usage_lines = len(model.lines)
    kinds = [LineKind.USAGE] * usage_lines + ([LineKind.FEE_PRORATION] if true_up else []) + [LineKind.FEE]
    assert [line.kind for line in invoice.lines] == kinds
    if true_up:
        assert Fraction(invoice.lines[usage_lines].amount) == true_up
    advance = invoice.lines[-1]
    _, next_start = month_bounds(scenario.period)
    assert (advance.tier, advance.period.start, Fraction(advance.amount)) == (next_tier, next_start, next_fee)
    assert Fraction(invoice.total) == model.usage_total + true_up + next_fee


def counters_of(scenario: Scenario, usage: Sequence[UsageRecord]) -> dict[tuple[int, str], int]:
    """Rating's counters of ``usage`` as the close reads them: base units per (start of the tier segment the record
    happened in, epoch seconds; meter), the segment found here among the model's own spans."""
    counters: dict[tuple[int, str], int] = {}
    for record in usage:
        (start,) = [start for _, start, end in scenario.segments if start <= record.at < end]
        key = (int(start.timestamp()), record.meter.value)
        counters[key] = counters.get(key, 0) + record.quantity
    return counters


@settings(max_examples=80, deadline=None)
@given(st.data())
def test_given_late_usage_of_an_invoiced_period_then_adjustments_equal_the_reference_model(data: st.DataObject) -> None:
    scenario = data.draw(scenarios(max_records=16))
    late_flags = data.draw(st.lists(st.booleans(), min_size=len(scenario.usage), max_size=len(scenario.usage)))
    invoiced = [record for record, late in zip(scenario.usage, late_flags, strict=True) if not late]
    late = [record for record, late in zip(scenario.usage, late_flags, strict=True) if late]
    # what the close runs: the period's counters as billed (the watermark) and as they are now, the account's profile
    profile = AccountProfile("acct", tuple(scenario.changes))
    billed, now = counters_of(scenario, invoiced), counters_of(scenario, scenario.usage)
    for record in scenario.usage:  # rating keys a record by its segment as the model does
        ((start, _),) = counters_of(scenario, [record])
        assert profile.segment_start((record.at - EPOCH) // timedelta(milliseconds=1)) == start

    lines = adjustment_lines(scenario.period, profile, billed, now, BOOK)
    expected = reference_adjustments(scenario.period, scenario.segments, invoiced, late)
    assert {(line.tier, Meter(line.meter)): (Fraction(line.used), Fraction(line.amount)) for line in lines} == expected
    spans = {tier: (start, end) for tier, start, end in scenario.segments}
    for line in lines:
        assert line.kind == LineKind.ADJUSTMENT.value
        assert line.period == scenario.period.key
        assert (line.start, line.end) == spans[str(line.tier)]
    # nothing lost, nothing charged twice: the invoiced total plus the adjustments is the total of everything
    everything = reference_rating(scenario.period, scenario.segments, scenario.usage).total
    invoiced_total = reference_rating(scenario.period, scenario.segments, invoiced).total
    assert invoiced_total + sum((amount for _, amount in expected.values()), Fraction(0)) == everything
    billed_total = Fraction(rate_counters(scenario.period, profile, billed, BOOK).total)
    assert billed_total + sum((Fraction(line.amount) for line in lines), Fraction(0)) == everything
    # the same usage taken back (a call shortened by its real end): the same lines, negated
    back = adjustment_lines(scenario.period, profile, now, billed, BOOK)
    negated = {key: (-used, -amount) for key, (used, amount) in expected.items()}
    assert {(line.tier, Meter(line.meter)): (Fraction(line.used), Fraction(line.amount)) for line in back} == negated


@settings(max_examples=60, deadline=None)
@given(st.data())
def test_adding_usage_never_lowers_the_total(data: st.DataObject) -> None:
    scenario = data.draw(scenarios())
    start, end = month_bounds(scenario.period)
    extra = data.draw(usage_in(start, end, [segment[1] for segment in scenario.segments[1:]], 5).filter(bool))
    before, after = _rate(scenario), _rate(scenario, scenario.usage + extra)
    assert after.total >= before.total
    for old, new in zip(before.usage_lines, after.usage_lines, strict=True):
        assert new.amount >= old.amount


@settings(max_examples=60, deadline=None)
@given(st.data())
def test_reordering_or_splitting_records_rated_together_gives_the_same_result(data: st.DataObject) -> None:
    scenario = data.draw(scenarios())
    shuffled = data.draw(st.permutations(scenario.usage))
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
    reference = _rate(scenario)
    for variant in (shuffled, split):
        rated = _rate(scenario, variant)
        assert rated.lines == reference.lines
        assert rated.total == reference.total
        assert rated.cost_basis == reference.cost_basis


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
def test_no_float_anywhere_in_a_rated_result_or_its_json_view(scenario: Scenario, next_tier: str) -> None:
    rated = _rate(scenario)
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
def test_round_money_agrees_with_decimal_quantize_half_up(value: Decimal) -> None:
    assert round_money(value) == value.quantize(CENT, rounding=ROUND_HALF_UP)


@settings(max_examples=300, deadline=None)
@given(st.integers(-(10**12), 10**12), st.integers(0, 9))
def test_round_money_agrees_with_quantize_on_decimals_with_few_places(units: int, places: int) -> None:
    value = Decimal(units).scaleb(-places)
    assert round_money(value) == value.quantize(CENT, rounding=ROUND_HALF_UP)


@settings(max_examples=300, deadline=None)
@given(st.fractions(min_value=-(10**9), max_value=10**9, max_denominator=10**7))
def test_round_money_is_exact_on_fractions(value: Fraction) -> None:
    # independent oracle: cents = floor(|x| x 100 + 1/2), sign restored (half away from zero)
    cents = math.floor(abs(value) * 100 + Fraction(1, 2))
    expected = Decimal(cents if value >= 0 else -cents).scaleb(-2)
    result = round_money(value)
    assert result == expected
    assert result == result.quantize(CENT)
    assert abs(Fraction(result) - value) <= Fraction(1, 200)  # never more than half a cent away


@settings(max_examples=300, deadline=None)
@given(st.data())
def test_connection_minutes_are_whole_started_minutes_and_video_never_exceeds_them(data: st.DataObject) -> None:
    connected = data.draw(st.fractions(min_value=0, max_value=10**6, max_denominator=10**6))
    video = data.draw(st.fractions(min_value=0, max_value=connected, max_denominator=10**6))
    minutes = connection_minutes(connected, video)
    # the policy's count, by a route of its own: every started minute of the connection is billed
    started = steps_up(connected, Fraction(60))
    started_with_video = steps_up(video, Fraction(60))
    assert (minutes.video, minutes.audio) == (
        min(started, started_with_video),
        started - min(started, started_with_video),
    )
    assert minutes.total == started


def test_given_no_profile_chosen_then_hypothesis_runs_derandomised() -> None:
    """`./dev test` gives everyone the same examples; `HYPOTHESIS_PROFILE=explore` opts into new ones."""
    chosen = os.environ.get("HYPOTHESIS_PROFILE", "repeatable")
    assert settings.get_current_profile_name() == chosen
    if chosen == "repeatable":
        assert settings.default.derandomize is True
        assert settings.default.database is None
