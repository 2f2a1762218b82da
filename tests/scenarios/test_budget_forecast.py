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
