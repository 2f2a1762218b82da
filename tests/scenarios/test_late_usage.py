"""Late usage for an invoiced period becomes adjustment lines: invoiced total + adjustments == rating of everything."""

from __future__ import annotations

from datetime import UTC, datetime
from decimal import Decimal

from kilo_billing.meters import Meter
from kilo_billing.periods import Period
from kilo_billing.rating import (
    LineKind,
    TierChange,
    TierSegment,
    UsageRecord,
    adjustment_lines,
    rate_period,
    segments_for,
)

MARCH = Period(2026, 3)


def _utc(*args: int) -> datetime:
    return datetime(*args, tzinfo=UTC)


def _whole_march(tier: str) -> list[TierSegment]:
    return [TierSegment(tier, MARCH.start, MARCH.end)]


def _video(minutes: int, day: int = 10) -> UsageRecord:
    return UsageRecord(Meter.VIDEO, minutes, _utc(2026, 3, day, 12))


def test_given_team_march_invoiced_when_late_video_stays_under_allowance_then_zero_adjustment_line(book):
    invoiced, late = [_video(40_000)], [_video(5_000, day=31)]
    before = rate_period(MARCH, _whole_march("team"), invoiced, book)
    (line,) = adjustment_lines(MARCH, _whole_march("team"), invoiced, late, book)

    assert line.kind is LineKind.ADJUSTMENT
    assert (line.period, line.meter, line.tier) == (MARCH, Meter.VIDEO, "team")
    assert line.used == Decimal("5000")  # late usage is shown, never dropped
    assert line.billable == Decimal("0")  # 45000 <= 50000
    assert line.amount == Decimal("0.00")
    assert before.total + line.amount == Decimal("29.00")


def test_given_team_march_invoiced_when_late_video_crosses_allowance_then_adjustment_bills_only_the_excess(book):
    invoiced, late = [_video(49_000)], [_video(3_000, day=20)]
    before = rate_period(MARCH, _whole_march("team"), invoiced, book)
    after = rate_period(MARCH, _whole_march("team"), invoiced + late, book)
    (line,) = adjustment_lines(MARCH, _whole_march("team"), invoiced, late, book)

    assert before.total == Decimal("29.00")  # 49000 <= 50000
    assert line.used == Decimal("3000")
    assert line.billable == Decimal("2000")  # 52000 - 50000, not 3000
    assert line.amount == Decimal("1.44")  # 2000 x 0.00072
    assert after.total == Decimal("30.44")
    assert before.total + line.amount == after.total  # 29.00 + 1.44


def test_given_personal_march_already_over_when_late_video_arrives_then_all_of_it_is_overage(book):
    invoiced, late = [_video(6_000)], [_video(1_000)]
    (line,) = adjustment_lines(MARCH, _whole_march("personal"), invoiced, late, book)
    assert line.billable == Decimal("1000")
    assert line.amount == Decimal("0.72")  # (2000 - 1000) x 0.00072; invoiced 0.72 + 0.72 = 1.44 = 2000 x 0.00072


def test_given_invoiced_line_rounded_up_when_late_minutes_fit_in_that_cent_then_adjustment_is_zero(book):
    invoiced, late = [_video(5_007)], [_video(7)]
    before = rate_period(MARCH, _whole_march("personal"), invoiced, book)
    (line,) = adjustment_lines(MARCH, _whole_march("personal"), invoiced, late, book)
    assert before.total == Decimal("0.01")  # 7 x 0.00072 = 0.00504 -> 0.01
    assert line.billable == Decimal("7")
    # all 14 over: 0.01008 -> 0.01, so the adjustment is 0.01 - 0.01 = 0.00 (rating 7 alone would add 0.01)
    assert line.amount == Decimal("0.00")


def test_given_invoiced_line_rounded_down_when_one_late_minute_tips_it_then_adjustment_is_one_cent(book):
    invoiced, late = [_video(5_006)], [_video(1)]
    (line,) = adjustment_lines(MARCH, _whole_march("personal"), invoiced, late, book)
    # before 6 x 0.00072 = 0.00432 -> 0.00; after 7 x 0.00072 = 0.00504 -> 0.01; 1 x 0.00072 alone -> 0.00
    assert line.amount == Decimal("0.01")


def test_given_upgrade_on_march_11_when_late_usage_dated_before_and_after_then_each_tier_segment_adjusted(
    book,
):
    changes = [TierChange(_utc(2026, 1, 1), "personal"), TierChange(_utc(2026, 3, 11), "team")]
    segments = segments_for(MARCH, changes)
    invoiced = [_video(1_000, day=5), _video(33_000, day=20)]
    late = [_video(1_000, day=8), _video(1_000, day=25)]
    before = rate_period(MARCH, segments, invoiced, book)
    after = rate_period(MARCH, segments, invoiced + late, book)
    lines = adjustment_lines(MARCH, segments, invoiced, late, book)

    assert [(line.tier, line.meter) for line in lines] == [("personal", Meter.VIDEO), ("team", Meter.VIDEO)]
    personal, team = lines
    assert personal.billable == Decimal("387")  # 2000 - 1613 (5000 x 10/31 rounded up)
    assert personal.amount == Decimal("0.28")  # 387 x 0.00072 = 0.27864
    assert team.billable == Decimal("129")  # 34000 - 33871 (50000 x 21/31 rounded up)
    assert team.amount == Decimal("0.09")  # 129 x 0.00072 = 0.09288
    assert before.total == Decimal("19.65")  # fees 0.00 + 19.65, all usage within the prorated allowances
    assert after.total == Decimal("20.02")  # 19.65 + 0.28 + 0.09
    assert before.total + personal.amount + team.amount == after.total


def test_given_enterprise_march_invoiced_when_huge_late_usage_then_adjustment_shown_at_zero(book):
    late = [UsageRecord(Meter.MESSAGES, 50_000_000, _utc(2026, 3, 30))]
    (line,) = adjustment_lines(MARCH, _whole_march("enterprise"), [], late, book)
    assert line.used == Decimal("50000000")
    assert line.included is None  # unlimited
    assert line.amount == Decimal("0.00")


def test_given_no_late_usage_when_adjusting_then_no_lines(book):
    assert adjustment_lines(MARCH, _whole_march("team"), [_video(52_000)], [], book) == []


def test_given_late_bytes_within_the_same_hundredth_of_a_gb_when_adjusting_then_no_line_as_billed_gb_unchanged(
    book,
):
    invoiced = [UsageRecord(Meter.DATA_TRANSFER, 5_000_000, _utc(2026, 3, 2))]
    late = [UsageRecord(Meter.DATA_TRANSFER, 5_000_000, _utc(2026, 3, 3))]
    # 5*10^6 -> 0.01 GB; 10^7 -> still 0.01 GB: the period's billable quantity does not move
    assert adjustment_lines(MARCH, _whole_march("personal"), invoiced, late, book) == []
    late_more = [UsageRecord(Meter.DATA_TRANSFER, 5_000_001, _utc(2026, 3, 3))]
    (line,) = adjustment_lines(MARCH, _whole_march("personal"), invoiced, late_more, book)
    assert line.used == Decimal("0.01")  # 10^7 + 1 bytes -> 0.02 GB; 0.02 - 0.01
