"""Forecast: "at this rate you will pass your limit around <date>", from the month so far, weekday-weighted
(kilo_billing.budgets, D148): its clock, and when it has enough to extrapolate from.

November 2026 starts on a Sunday. Default weights: Monday-Friday 1, Saturday and Sunday 0.4. Team: $29/month, 50,000
video minutes included, then $0.00072 a minute. Every figure below is worked by hand in the comments.
"""

from __future__ import annotations

from datetime import UTC, date, datetime
from decimal import Decimal
from fractions import Fraction

import pytest

from kilo_billing.accounts import AccountProfile, TierChange
from kilo_billing.budgets import DEFAULT_WEEKDAY_WEIGHTS, bill_reached_on, projected_total, signed_up_at
from kilo_billing.catalog import default_catalog
from kilo_billing.month_to_date import month_to_date
from kilo_billing.periods import Period
from kilo_billing.rating import RatedPeriod
from tests.account_api_fakes import InMemoryMonthToDate
from tests.fakes import InMemoryAccountDirectory

MONDAY_9TH = datetime(2026, 11, 9, tzinfo=UTC)  # 8 whole days elapsed: Sun 1st, Mon-Fri 2nd-6th, Sat 7th, Sun 8th
BOOK = default_catalog().for_period(Period.parse("2026-11"))
FLAT = (Decimal(1),) * 7
NOV_1 = datetime(2026, 11, 1, tzinfo=UTC)
NOV_16 = datetime(2026, 11, 16, tzinfo=UTC)


def rated(profile: AccountProfile, segment_start: datetime, video_minutes: int) -> RatedPeriod:
    """November so far: ``video_minutes`` in rating's counters of the segment starting at ``segment_start``."""
    counters = {(int(segment_start.timestamp()), "video"): video_minutes}
    source = InMemoryMonthToDate(InMemoryAccountDirectory(profile), {(profile.account_id, "2026-11"): counters})
    return month_to_date(source, profile.account_id, "2026-11", 0, BOOK).rated


def test_given_a_few_minutes_of_the_month_then_no_forecast_until_a_full_weekdays_weight_elapsed() -> None:
    # Review v3 (1): Team, budget $50, Sun 1 Nov 00:30, a call across midnight: 300 video minutes. Elapsed weight
    # 0.4 x 30/1,440 = 1/120: 36,000 minutes a weekday, a $630 month passing $50 on Tuesday 3 - from half an hour.
    # The forecast waits for one full weekday's weight: Sun 0.4 + 0.6 of Monday = 1 at Mon 2 Nov 14:24 (0.6 x 24 h).
    team = AccountProfile("acct_t", (TierChange(datetime(2026, 1, 1, tzinfo=UTC), "team"),), budget_usd=Decimal(50))
    month = rated(team, NOV_1, 300)
    early = datetime(2026, 11, 1, 0, 30, tzinfo=UTC)
    assert projected_total(month, BOOK, early, DEFAULT_WEEKDAY_WEIGHTS) is None  # "not enough data yet"
    assert bill_reached_on(month, BOOK, Decimal(50), early, DEFAULT_WEEKDAY_WEIGHTS) is None
    # Mon 14:23: 0.4 + 863/1,440 = 0.99931 < 1: still nothing
    assert projected_total(month, BOOK, datetime(2026, 11, 2, 14, 23, tzinfo=UTC), DEFAULT_WEEKDAY_WEIGHTS) is None
    # Mon 14:24: weight 1 -> 300 minutes a weekday; the month weighs 21 weekdays + 9 weekend days x 0.4 = 24.6 ->
    # 300 x 24.6 = 7,380 minutes, inside the 50,000 included: the $29.00 fee
    at_base = datetime(2026, 11, 2, 14, 24, tzinfo=UTC)
    assert projected_total(month, BOOK, at_base, DEFAULT_WEEKDAY_WEIGHTS) == Decimal("29.00")
    assert bill_reached_on(month, BOOK, Decimal(50), at_base, DEFAULT_WEEKDAY_WEIGHTS) is None


def test_given_a_sign_up_mid_month_then_the_run_rate_counts_from_the_sign_up() -> None:
    # Review v3 (2): signed up on Team on Mon 16 Nov 00:00, budget $40; by Wed 18 Nov 00:00 10,000 video minutes (2
    # days, 5,000 a day), flat weights. Divided by the 17 days since 1 Nov (588 a day) the month ended at 17,647
    # minutes, the $14.50 fee ($29 x 15/30), "never $40". From the sign-up: 5,000 a day x 13 days left = 65,000 more
    # -> 75,000 minutes; the prorated allowance 50,000 x 15/30 = 25,000 -> 50,000 over x $0.00072 = $36.00, + $14.50
    # = $50.50. $40 needs usage of $25.50 as rounded: exact >= $25.495 -> 25.495 / 0.00072 = 35,409.7 -> 35,410
    # over -> 60,410 minutes. By the end of Fri 27 (10 days from Wed 18): 10,000 + 10 x 5,000 = 60,000 < 60,410; by
    # the end of Sat 28: 65,000: Saturday 28 November.
    new = AccountProfile("acct_n", (TierChange(NOV_16, "team"),), budget_usd=Decimal(40))
    month = rated(new, NOV_16, 10_000)
    now = datetime(2026, 11, 18, tzinfo=UTC)
    assert projected_total(month, BOOK, now, FLAT, signed_up_at(new)) == Decimal("50.50")
    assert bill_reached_on(month, BOOK, Decimal(40), now, FLAT, signed_up_at(new)) == date(2026, 11, 28)


def test_the_forecasts_clock_is_exact_to_the_microsecond() -> None:
    """``weighted_elapsed``, shared by the forecast and the projected bill. Monday 9th 00:00:00.001001: 8 whole days
    weigh 6.2 (above); today's share is 1001 microseconds of 86_400_000_000, at weight 1. A float of the seconds
    (0.001001 x 1e6 = 1000.9999...) would truncate it to 1000."""
    from kilo_billing.budgets import weighted_elapsed  # noqa: PLC0415

    period, share, elapsed = weighted_elapsed(datetime(2026, 11, 9, 0, 0, 0, 1001, tzinfo=UTC), DEFAULT_WEEKDAY_WEIGHTS)
    assert period.key == "2026-11"
    assert share == Fraction(1001, 86_400_000_000)
    assert elapsed == Fraction(62, 10) + Fraction(1001, 86_400_000_000)


@pytest.mark.parametrize("weights", [(Decimal(1),) * 6, (Decimal(-1),) + (Decimal(1),) * 6, (Decimal(0),) * 7])
def test_given_bad_weights_then_refused(weights: tuple[Decimal, ...]) -> None:
    from kilo_billing.budgets import weighted_elapsed  # noqa: PLC0415

    with pytest.raises(ValueError, match="seven non-negative numbers"):
        weighted_elapsed(MONDAY_9TH, weights)


def test_given_weights_of_another_scale_then_the_base_is_one_day_of_the_heaviest_weekday() -> None:
    # Review v3b (4): FORECAST_WEEKDAY_WEIGHTS "10,10,10,10,10,4,4" is the default's shape x 10 (the run rate is
    # scale-free), so the base is too: one day of the heaviest weekday, 10. Team, 300 video minutes (as above).
    # Sun 1 Nov 06:00: 4 x 6/24 = 1 - one unit, but a quarter of a weekend day: still "not enough data yet" (with an
    # absolute base of 1 it extrapolated 6 hours). Mon 2 Nov 14:23: 4 + 10 x 863/1,440 = 9.993 < 10: nothing yet.
    # Mon 14:24: 4 + 10 x 0.6 = 10: 300 a weekday-day; the month weighs 210 + 36 = 246 = 24.6 weekdays x 10 -> 7,380
    # minutes, inside the 50,000 included: the $29.00 fee, as with the default weights.
    big = tuple(Decimal(w) for w in (10, 10, 10, 10, 10, 4, 4))
    team = AccountProfile("acct_t", (TierChange(datetime(2026, 1, 1, tzinfo=UTC), "team"),), budget_usd=Decimal(50))
    month = rated(team, NOV_1, 300)
    assert projected_total(month, BOOK, datetime(2026, 11, 1, 6, tzinfo=UTC), big) is None
    assert projected_total(month, BOOK, datetime(2026, 11, 2, 14, 23, tzinfo=UTC), big) is None
    assert projected_total(month, BOOK, datetime(2026, 11, 2, 14, 24, tzinfo=UTC), big) == Decimal("29.00")


def test_given_an_upgrade_mid_month_then_the_run_rate_counts_from_the_sign_up_not_the_upgrade() -> None:
    # Review v3b (3b): Personal since 1 Oct, Team from Mon 16 Nov 00:00; Wed 18 Nov 00:00, flat weights. 3,000
    # video minutes on the Personal segment (1-16 Nov: its 5,000 included x 15/30 = 2,500 -> 500 over x $0.00072 =
    # $0.36), 10,000 on Team's. The rate counts from 1 Nov (signed up before it): 13,000 / 17 days x 13 days left =
    # 9,941.18 -> 9,941 more, on the Team segment: 19,941 < its 50,000 x 15/30 = 25,000 included. Bill: the fee
    # $29 x 15/30 = $14.50 + $0.36 = $14.86. (From the upgrade - the sign-up taken as the last tier change - 13,000 /
    # 2 x 13 = 84,500 more -> 94,500, 69,500 over = $50.04: a $64.90 bill.)
    upgraded = AccountProfile(
        "acct_u",
        (TierChange(datetime(2026, 10, 1, tzinfo=UTC), "personal"), TierChange(NOV_16, "team")),
    )
    counters = {(int(NOV_1.timestamp()), "video"): 3_000, (int(NOV_16.timestamp()), "video"): 10_000}
    source = InMemoryMonthToDate(InMemoryAccountDirectory(upgraded), {("acct_u", "2026-11"): counters})
    month = month_to_date(source, "acct_u", "2026-11", 0, BOOK).rated
    now = datetime(2026, 11, 18, tzinfo=UTC)
    assert signed_up_at(upgraded) == datetime(2026, 10, 1, tzinfo=UTC)
    assert month.total == Decimal("14.86")  # nothing more is projected than the Team segment's allowance holds
    assert projected_total(month, BOOK, now, FLAT, signed_up_at(upgraded)) == Decimal("14.86")


def test_given_the_fee_crossing_before_the_base_then_the_use_so_far_is_spread_over_the_base() -> None:
    # Review v3b (1): Team, budget $36 (hard limit $40). Mon 2 Nov 10:00, weight 0.4 + 10/24 = 0.8167 < 1: the base
    # not yet elapsed. $36 needs usage of $7.00 as rounded: 9,716 over x $0.00072 = $6.99552 -> $7.00 (9,715:
    # $6.9948 -> $6.99) -> 59,716 minutes; $40 needs $11.00: 15,271 x 0.00072 = $10.99512 (15,270: $10.9944) ->
    # 65,271 minutes. The use so far over the base (1), not over 0.8167:
    # - 3,000 minutes: 3,000 a weekday; the rest of Monday (14/24) 1,750, each weekday 3,000, weekend day 1,200. To
    #   the end of Mon 23 (Tue 3-Mon 23: 15 weekdays + 6 weekend days = 17.4): 3,000 + 1,750 + 52,200 = 56,950; Tue
    #   24: 59,950 >= 59,716: Tuesday 24 November. $40: Wed 25 62,950, Thu 26 65,950 >= 65,271: Thursday 26.
    # - 2,450 minutes (a steady 3,000 a weekday: 0.8167 x 3,000): 2,450 a weekday, under-estimated - the month's
    #   24.6: by the end of Sun 29 (23.6) 2,450 x (1 + 23.6 - 0.8167) = 58,269.2 < 59,716, Mon 30 (24.6): 60,719:
    #   Monday 30 November (at a true 3,000 a weekday: Wed 25) - later, but inside the month, and said now.
    team = AccountProfile("acct_t", (TierChange(datetime(2026, 1, 1, tzinfo=UTC), "team"),), budget_usd=Decimal(36))
    at = datetime(2026, 11, 2, 10, tzinfo=UTC)
    assert projected_total(rated(team, NOV_1, 3_000), BOOK, at, DEFAULT_WEEKDAY_WEIGHTS) is None  # the dashboard's
    assert bill_reached_on(rated(team, NOV_1, 3_000), BOOK, Decimal(36), at, DEFAULT_WEEKDAY_WEIGHTS) == date(
        2026, 11, 24
    )
    assert bill_reached_on(rated(team, NOV_1, 3_000), BOOK, Decimal(40), at, DEFAULT_WEEKDAY_WEIGHTS) == date(
        2026, 11, 26
    )
    assert bill_reached_on(rated(team, NOV_1, 2_450), BOOK, Decimal(36), at, DEFAULT_WEEKDAY_WEIGHTS) == date(
        2026, 11, 30
    )


# --- the forecast's re-check at the base's moment (D366: built, kilo_alerts.rechecks and logic._forecast_due) ----
# These pin, with the layer alone (`bill_reached_on`, `projected_total`), what the re-check reads and says at ITS
# time - the base's moment - for D148's two gaps; tests/unit/test_alerts_forecast_recheck.py sends them.

DEC_1 = datetime(2026, 12, 1, tzinfo=UTC)  # December 2026 starts on a Tuesday
DEC_BOOK = default_catalog().for_period(Period.parse("2026-12"))


def rated_december(profile: AccountProfile, video_minutes: int) -> RatedPeriod:
    """December so far: ``video_minutes`` in rating's counters of the segment starting on 1 December."""
    counters = {(int(DEC_1.timestamp()), "video"): video_minutes}
    source = InMemoryMonthToDate(InMemoryAccountDirectory(profile), {(profile.account_id, "2026-12"): counters})
    return month_to_date(source, profile.account_id, "2026-12", 0, DEC_BOOK).rated


def test_given_a_few_minutes_at_the_fee_crossing_then_no_day_until_the_recheck_at_the_base() -> None:
    # D148 gap (1). Team, budget $36 (50/80/100). Mon 2 Nov 09:30, 50 video minutes: the bill is the $29.00 fee,
    # 80.6 % - the 50 % and 80 % events at once. Weight elapsed 0.4 + 9.5/24 = 0.7958 < the base 1: 50 a weekday
    # over the base; the whole month weighs 24.6 -> at most ~1,230 minutes, inside the 50,000 included: no day, and
    # no event below 100 % comes again. The re-check is due at the base's moment, Mon 2 Nov 14:24 (0.4 + 0.6 x 24 h:
    # the dashboard's projected total is None at 14:23, a figure at 14:24). By then 3,000 minutes (3,000 a weekday).
    # $36 needs $7.00 of usage as rounded half-up: 9,716 over x $0.00072 = $6.99552 -> $7.00 (9,715: $6.9948 ->
    # $6.99) -> 59,716 minutes. The rest of Monday (0.4 of its 24 h) 1,200 -> 4,200; Tue 3-Fri 6 +12,000 = 16,200;
    # Sat/Sun +2,400 = 18,600; Mon 9-Fri 13 33,600; 36,000; Mon 16-Fri 20 51,000; 53,400; Mon 23 56,400; Tue 24
    # 59,400 < 59,716; Wed 25 62,400 >= 59,716: "around Wednesday 25 November" - the re-check's first forecast.
    team = AccountProfile("acct_t", (TierChange(datetime(2026, 1, 1, tzinfo=UTC), "team"),), budget_usd=Decimal(36))
    crossing = datetime(2026, 11, 2, 9, 30, tzinfo=UTC)
    assert bill_reached_on(rated(team, NOV_1, 50), BOOK, Decimal(36), crossing, DEFAULT_WEEKDAY_WEIGHTS) is None
    just_before = datetime(2026, 11, 2, 14, 23, tzinfo=UTC)
    assert projected_total(rated(team, NOV_1, 3_000), BOOK, just_before, DEFAULT_WEEKDAY_WEIGHTS) is None
    base = datetime(2026, 11, 2, 14, 24, tzinfo=UTC)
    assert projected_total(rated(team, NOV_1, 3_000), BOOK, base, DEFAULT_WEEKDAY_WEIGHTS) is not None
    assert bill_reached_on(rated(team, NOV_1, 3_000), BOOK, Decimal(36), base, DEFAULT_WEEKDAY_WEIGHTS) == date(
        2026, 11, 25
    )


def test_given_the_floors_day_later_than_the_steady_rate_then_the_recheck_gives_the_earlier_day() -> None:
    # D148 (e3c): a steady 3,000 minutes a weekday is 2,450 by Mon 2 Nov 10:00 (0.8167 x 3,000): the floor (over
    # the base 1) says "Monday 30 November" (worked above). At the base's moment, 14:24, 3,000 minutes: "Wednesday
    # 25 November" (previous test) - five days earlier: the re-check's one corrected forecast. A burst of 3,000 by
    # 10:00 with nothing more by 14:24: the floor said Tuesday 24, the re-check Wednesday 25 - later: no correction
    # (the forecast sent errs early; the 100 % alert comes at the crossing).
    team = AccountProfile("acct_t", (TierChange(datetime(2026, 1, 1, tzinfo=UTC), "team"),), budget_usd=Decimal(36))
    early, base = datetime(2026, 11, 2, 10, tzinfo=UTC), datetime(2026, 11, 2, 14, 24, tzinfo=UTC)
    floor_day = bill_reached_on(rated(team, NOV_1, 2_450), BOOK, Decimal(36), early, DEFAULT_WEEKDAY_WEIGHTS)
    recheck_day = bill_reached_on(rated(team, NOV_1, 3_000), BOOK, Decimal(36), base, DEFAULT_WEEKDAY_WEIGHTS)
    assert (floor_day, recheck_day) == (date(2026, 11, 30), date(2026, 11, 25))
    burst_day = bill_reached_on(rated(team, NOV_1, 3_000), BOOK, Decimal(36), early, DEFAULT_WEEKDAY_WEIGHTS)
    assert (burst_day, recheck_day) == (date(2026, 11, 24), date(2026, 11, 25))


def test_given_40000_minutes_by_tuesday_1_december_0600_then_the_recheck_at_wednesday_0000_reads_its_own_rate() -> None:
    # D148 limit (fd). Team, flat weights (base 1 day, elapsed from Tue 1 Dec 00:00), hard limit $100: usage must
    # reach $71.00 as rounded half-up: 98,605 over x $0.00072 = $70.9956 -> $71.00 (98,604: $70.99488 -> $70.99) ->
    # 148,605 minutes (D148's 148,612 is the exact $71 / $0.00072 = 98,611.1 rounded up; the days are the same).
    # Tue 1 Dec 06:00, 40,000 minutes, weight 0.25 < 1: spread over the base, 40,000 a day: the rest of Tuesday
    # (0.75) 30,000 -> 70,000; Wed 2 110,000; Thu 3 150,000 >= 148,605: "Thursday 3 December" (the rate so far,
    # 160,000 a day, reaches it on Tue 1: 40,000 + 0.75 x 160,000 = 160,000). The re-check is due at the base's
    # moment, Wed 2 Dec 00:00 (weight 1; the projected total is None at Tue 23:59, a figure at Wed 00:00), and
    # forecasts from the month read then:
    # - 120,000 minutes (120,000 a day): $29.00 + 70,000 x $0.00072 = $79.40; by the end of Wed 2 240,000 >=
    #   148,605: "Wednesday 2 December", earlier than the Thursday sent - the one corrected forecast. Projected
    #   total 120,000 x 31 = 3,720,000 minutes: $29.00 + 3,670,000 x $0.00072 = $2,671.40.
    # - 40,000 minutes (nothing since): 40,000 a day: Wed 80,000, Thu 120,000, Fri 4 160,000: "Friday 4 December",
    #   later than the Thursday sent - nothing.
    # - 160,000 minutes (the rate kept): $29.00 + 110,000 x $0.00072 = $108.20 >= $100: reached (today, Wed 2) - the
    #   100 % alert went on Tue 1; the re-check sends nothing.
    team = AccountProfile(
        "acct_d", (TierChange(datetime(2026, 1, 1, tzinfo=UTC), "team"),), hard_limit_usd=Decimal(100)
    )
    assert (rated_december(team, 148_604).total, rated_december(team, 148_605).total) == (
        Decimal("99.99"),
        Decimal(100),
    )
    first = datetime(2026, 12, 1, 6, tzinfo=UTC)
    assert bill_reached_on(rated_december(team, 40_000), DEC_BOOK, Decimal(100), first, FLAT) == date(2026, 12, 3)
    assert (
        projected_total(rated_december(team, 120_000), DEC_BOOK, datetime(2026, 12, 1, 23, 59, tzinfo=UTC), FLAT)
        is None
    )
    base = datetime(2026, 12, 2, tzinfo=UTC)
    steady = rated_december(team, 120_000)
    assert steady.total == Decimal("79.40")
    assert projected_total(steady, DEC_BOOK, base, FLAT) == Decimal("2671.40")
    assert bill_reached_on(steady, DEC_BOOK, Decimal(100), base, FLAT) == date(2026, 12, 2)
    assert bill_reached_on(rated_december(team, 40_000), DEC_BOOK, Decimal(100), base, FLAT) == date(2026, 12, 4)
    kept = rated_december(team, 160_000)
    assert kept.total == Decimal("108.20")
    assert bill_reached_on(kept, DEC_BOOK, Decimal(100), base, FLAT) == date(2026, 12, 2)


def test_the_rechecks_moment_is_when_the_base_has_elapsed_since_the_start_or_the_sign_up() -> None:
    # D366: the re-check is due at the first instant the weight elapsed reaches the base (one day of the heaviest
    # weekday). November (starts Sunday), default weights: Sun 0.4 + 0.6 of Monday's 24 h (14 h 24 min): Mon 2 Nov
    # 14:24. December (starts Tuesday), flat: one whole day: Wed 2 Dec 00:00. Signed up Mon 16 Nov 00:00 (default
    # weights): Monday weighs 1: Tue 17 Nov 00:00. Signed up Sat 28 Nov 12:00: Sat's half 0.2 + Sun 0.4 + Mon 30's
    # 0.4 (9 h 36 min): Mon 30 Nov 09:36. Signed up Mon 30 Nov 12:00: half of Monday, then the month ends: None.
    from kilo_billing.budgets import base_reached_at  # noqa: PLC0415

    assert base_reached_at(datetime(2026, 11, 1, 0, 30, tzinfo=UTC), DEFAULT_WEEKDAY_WEIGHTS) == datetime(
        2026, 11, 2, 14, 24, tzinfo=UTC
    )
    assert base_reached_at(datetime(2026, 12, 1, 6, tzinfo=UTC), FLAT) == datetime(2026, 12, 2, tzinfo=UTC)
    assert base_reached_at(datetime(2026, 11, 16, 8, tzinfo=UTC), DEFAULT_WEEKDAY_WEIGHTS, NOV_16) == datetime(
        2026, 11, 17, tzinfo=UTC
    )
    sat = datetime(2026, 11, 28, 12, tzinfo=UTC)
    assert base_reached_at(sat, DEFAULT_WEEKDAY_WEIGHTS, sat) == datetime(2026, 11, 30, 9, 36, tzinfo=UTC)
    mon = datetime(2026, 11, 30, 12, tzinfo=UTC)
    assert base_reached_at(mon, DEFAULT_WEEKDAY_WEIGHTS, mon) is None
