"""Mid-period tier changes: upgrades immediately, downgrades at the next period start; the fee and the allowances of
each tier segment are prorated by the exact fraction of the period (allowances rounded UP to the meter's step, the
fee rounded once half-up from its exact value)."""

from __future__ import annotations

from datetime import UTC, datetime
from decimal import Decimal
from fractions import Fraction

from kilo_billing.meters import Meter
from kilo_billing.periods import Period
from kilo_billing.rating import TierChange, TierSegment, UsageRecord, effective_change, rate_period, segments_for

GB = 10**9


def _utc(*args: int) -> datetime:
    return datetime(*args, tzinfo=UTC)


def _fee(rated, tier):
    (line,) = [line for line in rated.fee_lines if line.tier == tier]
    return line


def test_given_personal_account_when_upgraded_to_team_on_march_11_then_fee_and_allowances_prorated_over_31_days(
    book, line_for
):
    march = Period(2026, 3)
    upgrade = effective_change(book, "personal", "team", _utc(2026, 3, 11))
    assert upgrade == TierChange(at=_utc(2026, 3, 11), tier="team")  # an upgrade applies immediately
    segments = segments_for(march, [TierChange(_utc(2026, 1, 1), "personal"), upgrade])
    assert segments == [
        TierSegment("personal", _utc(2026, 3, 1), _utc(2026, 3, 11)),  # 10 of 31 days
        TierSegment("team", _utc(2026, 3, 11), _utc(2026, 4, 1)),  # 21 of 31 days
    ]
    usage = [
        UsageRecord(Meter.VIDEO, 2_000, _utc(2026, 3, 5)),  # on Personal
        UsageRecord(Meter.VIDEO, 40_000, _utc(2026, 3, 20)),  # on Team
    ]
    rated = rate_period(march, segments, usage, book)

    assert _fee(rated, "personal").amount == Decimal("0.00")
    assert _fee(rated, "personal").proration == Fraction(10, 31)
    assert _fee(rated, "team").amount == Decimal("19.65")  # 29 x 21/31 = 19.6451... -> 19.65
    assert _fee(rated, "team").proration == Fraction(21, 31)
    # Personal allowances x 10/31, rounded up to the step
    assert line_for(rated, Meter.VIDEO, "personal").included == Decimal("1613")  # 1612.90 -> 1613
    assert line_for(rated, Meter.AUDIO, "personal").included == Decimal("3226")  # 3225.81 -> 3226
    assert line_for(rated, Meter.MESSAGES, "personal").included == Decimal("32259")  # 32258.06 -> 32259
    assert line_for(rated, Meter.DATA_TRANSFER, "personal").included == Decimal("3.23")  # 3.2258 -> 3.23
    # Team allowances x 21/31, rounded up to the step
    assert line_for(rated, Meter.VIDEO, "team").included == Decimal("33871")  # 33870.97 -> 33871
    assert line_for(rated, Meter.AUDIO, "team").included == Decimal("67742")  # 67741.94 -> 67742
    assert line_for(rated, Meter.MESSAGES, "team").included == Decimal("677420")  # 677419.35 -> 677420
    assert line_for(rated, Meter.DATA_TRANSFER, "team").included == Decimal("67.75")  # 67.742 -> 67.75
    # usage rated under the tier in effect when it happened
    assert line_for(rated, Meter.VIDEO, "personal").amount == Decimal("0.28")  # 387 x 0.00072 = 0.27864
    assert line_for(rated, Meter.VIDEO, "team").amount == Decimal("4.41")  # 6129 x 0.00072 = 4.41288
    assert rated.total == Decimal("24.34")  # 0.00 + 19.65 + 0.28 + 4.41


def test_given_personal_account_when_upgraded_to_team_on_april_16_then_half_of_a_30_day_month_each(book, line_for):
    april = Period(2026, 4)
    changes = [
        TierChange(_utc(2026, 1, 1), "personal"),
        effective_change(book, "personal", "team", _utc(2026, 4, 16)),
    ]
    usage = [
        UsageRecord(Meter.AUDIO, 6_000, _utc(2026, 4, 2)),
        UsageRecord(Meter.AUDIO, 60_000, _utc(2026, 4, 30, 23, 59, 59)),
    ]
    rated = rate_period(april, segments_for(april, changes), usage, book)

    assert _fee(rated, "team").proration == Fraction(1, 2)  # 15 of 30 days
    assert _fee(rated, "team").amount == Decimal("14.50")  # 29 x 1/2
    assert line_for(rated, Meter.AUDIO, "personal").included == Decimal("5000")  # 10000 / 2
    assert line_for(rated, Meter.AUDIO, "team").included == Decimal("50000")  # 100000 / 2
    assert line_for(rated, Meter.DATA_TRANSFER, "personal").included == Decimal("5.00")  # 10 / 2
    assert line_for(rated, Meter.AUDIO, "personal").amount == Decimal("0.36")  # 1000 x 0.00036
    assert line_for(rated, Meter.AUDIO, "team").amount == Decimal("3.60")  # 10000 x 0.00036
    assert rated.total == Decimal("18.46")  # 14.50 + 0.36 + 3.60


def test_given_personal_account_when_upgraded_to_team_on_february_15_2026_then_half_of_a_28_day_month(book, line_for):
    february = Period(2026, 2)
    changes = [
        TierChange(_utc(2025, 12, 1), "personal"),
        effective_change(book, "personal", "team", _utc(2026, 2, 15)),
    ]
    usage = [
        UsageRecord(Meter.MESSAGES, 60_000, _utc(2026, 2, 14, 23, 59, 59)),  # Personal, last second
        UsageRecord(Meter.MESSAGES, 400_000, _utc(2026, 2, 15)),  # Team, first instant
    ]
    rated = rate_period(february, segments_for(february, changes), usage, book)

    assert _fee(rated, "team").proration == Fraction(1, 2)  # 14 of 28 days
    assert _fee(rated, "team").amount == Decimal("14.50")  # 29 x 14/28
    assert line_for(rated, Meter.MESSAGES, "personal").included == Decimal("50000")  # 100000 x 1/2
    assert line_for(rated, Meter.MESSAGES, "team").included == Decimal("500000")  # 1000000 x 1/2
    assert line_for(rated, Meter.MESSAGES, "personal").amount == Decimal("1.20")  # 10000 x 0.00012
    assert line_for(rated, Meter.MESSAGES, "team").amount == Decimal("0.00")  # 400000 <= 500000
    assert rated.total == Decimal("15.70")  # 14.50 + 1.20


def test_given_personal_account_when_upgraded_to_team_on_february_8_2026_then_quarter_and_three_quarters(
    book, line_for
):
    february = Period(2026, 2)
    changes = [TierChange(_utc(2026, 1, 1), "personal"), TierChange(_utc(2026, 2, 8), "team")]
    rated = rate_period(february, segments_for(february, changes), [], book)

    assert _fee(rated, "team").amount == Decimal("21.75")  # 29 x 21/28 = 29 x 3/4
    assert line_for(rated, Meter.VIDEO, "personal").included == Decimal("1250")  # 5000 x 7/28
    assert line_for(rated, Meter.VIDEO, "team").included == Decimal("37500")  # 50000 x 21/28
    assert line_for(rated, Meter.DATA_TRANSFER, "personal").included == Decimal("2.50")  # 10 x 1/4
    assert line_for(rated, Meter.DATA_TRANSFER, "team").included == Decimal("75.00")  # 100 x 3/4
    assert len(rated.usage_lines) == 8  # 4 meters x 2 segments, all shown at $0.00
    assert rated.total == Decimal("21.75")


def test_given_personal_account_when_upgraded_on_february_15_2028_then_29_day_leap_month_proration(book, line_for):
    february = Period(2028, 2)
    changes = [
        TierChange(_utc(2026, 1, 1), "personal"),
        effective_change(book, "personal", "team", _utc(2028, 2, 15)),
    ]
    rated = rate_period(february, segments_for(february, changes), [], book)

    assert _fee(rated, "personal").proration == Fraction(14, 29)
    assert _fee(rated, "team").proration == Fraction(15, 29)
    assert _fee(rated, "team").amount == Decimal("15.00")  # 29 x 15/29 = 15 exactly
    assert line_for(rated, Meter.VIDEO, "personal").included == Decimal("2414")  # 5000 x 14/29 = 2413.79
    assert line_for(rated, Meter.VIDEO, "team").included == Decimal("25863")  # 50000 x 15/29 = 25862.07
    assert line_for(rated, Meter.AUDIO, "personal").included == Decimal("4828")  # 10000 x 14/29 = 4827.59
    assert line_for(rated, Meter.AUDIO, "team").included == Decimal("51725")  # 100000 x 15/29 = 51724.14
    assert line_for(rated, Meter.MESSAGES, "personal").included == Decimal("48276")  # 48275.86
    assert line_for(rated, Meter.MESSAGES, "team").included == Decimal("517242")  # 517241.38
    assert line_for(rated, Meter.DATA_TRANSFER, "personal").included == Decimal("4.83")  # 4.8276
    assert line_for(rated, Meter.DATA_TRANSFER, "team").included == Decimal("51.73")  # 51.724
    assert rated.total == Decimal("15.00")


def test_given_upgrade_in_last_hours_of_march_when_fee_is_exactly_half_a_cent_then_rounded_once_half_up(book, line_for):
    march = Period(2026, 3)
    # 13,392 s of a 2,678,400 s month = 1/200: fee 29/200 = 0.145 exactly -> 0.15
    changes = [TierChange(_utc(2026, 1, 1), "personal"), TierChange(_utc(2026, 3, 31, 20, 16, 48), "team")]
    rated = rate_period(march, segments_for(march, changes), [], book)

    assert _fee(rated, "team").proration == Fraction(1, 200)
    assert _fee(rated, "team").amount == Decimal("0.15")
    assert line_for(rated, Meter.VIDEO, "team").included == Decimal("250")  # 50000 / 200
    assert line_for(rated, Meter.DATA_TRANSFER, "team").included == Decimal("0.50")  # 100 / 200
    # Personal had 199/200: 5000 x 199/200 = 4975
    assert line_for(rated, Meter.VIDEO, "personal").included == Decimal("4975")
    assert rated.total == Decimal("0.15")


def test_given_team_account_when_upgraded_to_enterprise_on_march_11_then_enterprise_segment_is_unlimited(
    book, line_for
):
    march = Period(2026, 3)
    changes = [TierChange(_utc(2026, 1, 1), "team"), effective_change(book, "team", "enterprise", _utc(2026, 3, 11))]
    usage = [
        UsageRecord(Meter.VIDEO, 20_000, _utc(2026, 3, 10, 12)),  # on Team
        UsageRecord(Meter.VIDEO, 5_000_000, _utc(2026, 3, 25)),  # on Enterprise
    ]
    rated = rate_period(march, segments_for(march, changes), usage, book)

    assert _fee(rated, "team").amount == Decimal("9.35")  # 29 x 10/31 = 9.3548...
    assert _fee(rated, "enterprise").amount == Decimal("67.06")  # 99 x 21/31 = 67.0645...
    assert line_for(rated, Meter.VIDEO, "team").included == Decimal("16130")  # 50000 x 10/31 = 16129.03
    assert line_for(rated, Meter.VIDEO, "team").amount == Decimal("2.79")  # 3870 x 0.00072 = 2.7864
    assert line_for(rated, Meter.VIDEO, "enterprise").included is None
    assert line_for(rated, Meter.VIDEO, "enterprise").amount == Decimal("0.00")
    assert rated.total == Decimal("79.20")  # 9.35 + 67.06 + 2.79


def test_given_team_account_when_downgrade_to_personal_requested_mid_march_then_it_takes_effect_april_1(book, line_for):
    march, april = Period(2026, 3), Period(2026, 4)
    downgrade = effective_change(book, "team", "personal", _utc(2026, 3, 20, 9, 30))
    assert downgrade == TierChange(at=_utc(2026, 4, 1), tier="personal")
    changes = [TierChange(_utc(2026, 1, 1), "team"), downgrade]

    assert segments_for(march, changes) == [TierSegment("team", _utc(2026, 3, 1), _utc(2026, 4, 1))]
    assert segments_for(april, changes) == [TierSegment("personal", _utc(2026, 4, 1), _utc(2026, 5, 1))]
    usage = [UsageRecord(Meter.VIDEO, 52_000, _utc(2026, 3, 25))]  # after the request, still Team
    rated = rate_period(march, segments_for(march, changes), usage, book)
    assert rated.fee == Decimal("29.00")  # full month, not prorated
    assert line_for(rated, Meter.VIDEO).included == Decimal("50000")
    assert line_for(rated, Meter.VIDEO).amount == Decimal("1.44")  # 2000 x 0.00072
    assert rated.total == Decimal("30.44")


def test_given_enterprise_account_when_downgrade_requested_on_last_second_then_next_month_is_team(book):
    downgrade = effective_change(book, "enterprise", "team", _utc(2026, 12, 31, 23, 59, 59))
    assert downgrade == TierChange(at=_utc(2027, 1, 1), tier="team")  # crosses the year boundary
    changes = [TierChange(_utc(2026, 1, 1), "enterprise"), downgrade]
    assert [s.tier for s in segments_for(Period(2026, 12), changes)] == ["enterprise"]
    assert [s.tier for s in segments_for(Period(2027, 1), changes)] == ["team"]


def test_given_upgrade_at_an_instant_when_usage_recorded_at_that_instant_then_new_tier_rates_it(book, line_for):
    march = Period(2026, 3)
    upgrade_at = _utc(2026, 3, 11)
    changes = [TierChange(_utc(2026, 1, 1), "personal"), TierChange(upgrade_at, "team")]
    usage = [
        UsageRecord(Meter.MESSAGES, 7, _utc(2026, 3, 10, 23, 59, 59, 999_999)),  # one microsecond before
        UsageRecord(Meter.MESSAGES, 11, upgrade_at),  # segments are [start, end): belongs to Team
    ]
    rated = rate_period(march, segments_for(march, changes), usage, book)
    assert line_for(rated, Meter.MESSAGES, "personal").used == Decimal("7")
    assert line_for(rated, Meter.MESSAGES, "team").used == Decimal("11")


def test_given_upgrade_requested_at_first_instant_of_month_then_whole_month_on_new_tier_without_proration(book):
    may = Period(2026, 5)
    changes = [
        TierChange(_utc(2026, 1, 1), "personal"),
        effective_change(book, "personal", "team", _utc(2026, 5, 1)),
    ]
    segments = segments_for(may, changes)
    assert segments == [TierSegment("team", _utc(2026, 5, 1), _utc(2026, 6, 1))]
    rated = rate_period(may, segments, [], book)
    assert rated.fee == Decimal("29.00")
    assert rated.fee_lines[0].as_json().get("proration") is None  # full period: no proration shown


def test_given_two_upgrades_recorded_at_the_same_instant_when_rating_then_last_tier_applies_from_that_instant(
    book,
):
    # Personal -> Team -> Enterprise within the same (epoch-second) instant: Team is in effect for zero time, so
    # the period is Personal [Mar 1, Mar 11) then Enterprise [Mar 11, Apr 1); rating must not fail.
    march = Period(2026, 3)
    at = _utc(2026, 3, 11)
    changes = [
        TierChange(_utc(2026, 1, 1), "personal"),
        effective_change(book, "personal", "team", at),
        effective_change(book, "team", "enterprise", at),
    ]
    segments = segments_for(march, changes)
    assert [(s.tier, s.start, s.end) for s in segments] == [
        ("personal", _utc(2026, 3, 1), at),
        ("enterprise", at, _utc(2026, 4, 1)),
    ]
    rated = rate_period(march, segments, [], book)
    assert rated.fee == Decimal("67.06")  # 0.00 + 99 x 21/31 = 67.0645... -> 67.06
