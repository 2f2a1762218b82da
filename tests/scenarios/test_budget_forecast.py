"""Forecast: "at this rate you will pass your limit around <date>", from the month-to-date bill, weekday-weighted.

November 2026 starts on a Sunday. Default weights: Monday-Friday 1, Saturday and Sunday 0.4. Every date below is
worked by hand in the comments; the linear answer is given beside it to show the weekday weighting matters.
"""

from __future__ import annotations

from datetime import UTC, date, datetime
from decimal import Decimal

import pytest

from kilo_billing.budgets import forecast_crossing

MONDAY_9TH = datetime(2026, 11, 9, tzinfo=UTC)  # 8 whole days elapsed: Sun 1st, Mon-Fri 2nd-6th, Sat 7th, Sun 8th
# elapsed weight = 0.4 + 5 x 1 + 2 x 0.4 = 6.2; $62.00 spent -> $10.00 per weekday, $4.00 per weekend day


def test_given_62_spent_by_monday_9th_when_the_limit_is_100_then_thursday_12th() -> None:
    # $38 to go: Mon 9th +10 (28 left), Tue +10 (18), Wed +10 (8), Thu 12th +10 >= 8.
    # (Linear: $7.75/day, 38 / 7.75 = 4.9 days -> Friday 13th.)
    assert forecast_crossing(Decimal("62.00"), Decimal("100"), MONDAY_9TH) == date(2026, 11, 12)


def test_given_a_limit_reached_over_a_weekend_then_the_weekend_day_is_named() -> None:
    # $58 to go: Mon-Fri 9th-13th +50 (8 left), Sat 14th +4 (4 left), Sun 15th +4 -> reached exactly on the 15th.
    # (Linear: 58 / 7.75 = 7.5 days -> Monday 16th.)
    assert forecast_crossing(Decimal("62.00"), Decimal("120"), MONDAY_9TH) == date(2026, 11, 15)


def test_given_the_rest_of_the_month_adds_184_then_246_is_reached_on_the_30th_and_247_never() -> None:
    # 9th-30th: weekdays 9-13, 16-20, 23-27, 30 = 16 x $10 = $160; weekend days 14, 15, 21, 22, 28, 29 = 6 x $4 = $24.
    # $62 + $184 = $246 by the end of Monday 30th.
    assert forecast_crossing(Decimal("62.00"), Decimal("246"), MONDAY_9TH) == date(2026, 11, 30)
    assert forecast_crossing(Decimal("62.00"), Decimal("246.01"), MONDAY_9TH) is None


def test_given_midday_then_only_the_rest_of_today_counts() -> None:
    # Wed 4th 12:00: Sun 1st 0.4 + Mon, Tue 2 + half of Wed 0.5 = 2.9 elapsed; $29 spent -> $10 per weekday.
    # $20 to go: rest of Wed +5 (15 left), Thu 5th +10 (5 left), Fri 6th +10 -> Friday 6th.
    at = datetime(2026, 11, 4, 12, tzinfo=UTC)
    assert forecast_crossing(Decimal("29"), Decimal("49"), at) == date(2026, 11, 6)
    # $5 to go is reached in the rest of today.
    assert forecast_crossing(Decimal("29"), Decimal("34"), at) == date(2026, 11, 4)


def test_given_equal_weights_then_it_is_the_linear_run_rate() -> None:
    flat = (Decimal(1),) * 7
    # 8 days, $80 -> $10/day; $100 limit -> 2 more days: Mon 9th (90), Tue 10th (100).
    assert forecast_crossing(Decimal("80"), Decimal("100"), MONDAY_9TH, flat) == date(2026, 11, 10)


def test_given_the_limit_already_reached_then_today() -> None:
    assert forecast_crossing(Decimal("100"), Decimal("100"), MONDAY_9TH) == date(2026, 11, 9)


def test_given_nothing_spent_or_no_time_elapsed_then_no_forecast() -> None:
    assert forecast_crossing(Decimal("0"), Decimal("100"), MONDAY_9TH) is None
    assert forecast_crossing(Decimal("5"), Decimal("100"), datetime(2026, 11, 1, tzinfo=UTC)) is None


def test_given_a_weekend_start_with_zero_weekend_weight_then_the_rate_comes_from_weekdays_only() -> None:
    weekdays_only = (Decimal(1),) * 5 + (Decimal(0),) * 2
    # Sat 7th 00:00: weekdays elapsed Mon-Fri 2nd-6th = 5; $50 -> $10/weekday. $25 to go: Sat, Sun add 0,
    # Mon 9th +10 (15), Tue +10 (5), Wed 11th -> reached.
    assert forecast_crossing(Decimal("50"), Decimal("75"), datetime(2026, 11, 7, tzinfo=UTC), weekdays_only) == date(
        2026, 11, 11
    )


@pytest.mark.parametrize("weights", [(Decimal(1),) * 6, (Decimal(-1),) + (Decimal(1),) * 6, (Decimal(0),) * 7])
def test_given_bad_weights_then_refused(weights: tuple[Decimal, ...]) -> None:
    with pytest.raises(ValueError, match="seven non-negative"):
        forecast_crossing(Decimal(1), Decimal(2), MONDAY_9TH, weights)


def test_the_forecasts_clock_is_exact_to_the_microsecond() -> None:
    """``weighted_elapsed``, shared by the forecast and the projected bill. Monday 9th 00:00:00.001001: 8 whole days
    weigh 6.2 (above); today's share is 1001 microseconds of 86_400_000_000, at weight 1. A float of the seconds
    (0.001001 x 1e6 = 1000.9999...) would truncate it to 1000."""
    from fractions import Fraction  # noqa: PLC0415

    from kilo_billing.budgets import DEFAULT_WEEKDAY_WEIGHTS, weighted_elapsed  # noqa: PLC0415

    period, share, elapsed = weighted_elapsed(datetime(2026, 11, 9, 0, 0, 0, 1001, tzinfo=UTC), DEFAULT_WEEKDAY_WEIGHTS)
    assert period.key == "2026-11"
    assert share == Fraction(1001, 86_400_000_000)
    assert elapsed == Fraction(62, 10) + Fraction(1001, 86_400_000_000)
    with pytest.raises(ValueError, match="seven non-negative numbers"):
        weighted_elapsed(MONDAY_9TH, (Decimal(1),) * 6)
