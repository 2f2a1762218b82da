"""The demo's ground truth of the budget forecast and its re-check (kilo_dev.ground_truth: ``recheck_due_s``,
``forecast_day``, ``expected_forecasts``) on the figures worked out by hand in docs/decisions.md D366 (Team, $29 a
month, 50,000 video minutes included, $0.0006 x 1.20 = $0.00072 a minute over; default weights: weekdays 1, Saturday
and Sunday 0.4), and the demo's reading of a delivered forecast back into (period, kind, day)."""

from __future__ import annotations

from collections import Counter
from datetime import UTC, date, datetime
from fractions import Fraction

from kilo_dev.demo import classify
from kilo_dev.ground_truth import expected_forecasts, forecast_day, price_sheet, recheck_due_s, weight_elapsed

SHEET = price_sheet(datetime(2026, 11, 1, tzinfo=UTC))
FLAT = (Fraction(1),) * 7


def at(*parts: int) -> int:
    return int(datetime(*parts, tzinfo=UTC).timestamp())  # type: ignore[misc]


def video(minutes: int) -> dict[str, int]:
    return {"video": minutes, "audio": 0, "messages": 0}


def test_the_weight_elapsed_counts_weekdays_whole_and_the_weekend_at_0_4() -> None:
    # November 2026 starts on a Sunday: Sunday 0.4, then Monday 2 Nov 10:00 = 10/24 of 1
    assert weight_elapsed("2026-11", at(2026, 11, 2, 10)) == Fraction(2, 5) + Fraction(10, 24)
    assert weight_elapsed("2026-11", at(2026, 11, 9)) == Fraction(2, 5) + 5 + Fraction(4, 5)  # a whole week: 5.8 + 0.4


def test_the_recheck_is_due_when_one_weekday_has_elapsed() -> None:
    # Sunday 0.4 + Monday 0.6 of a day = 1: Mon 2 Nov 14:24 (0.6 x 24 h); December starts on a Tuesday: Wed 2 00:00
    assert recheck_due_s("2026-11") == at(2026, 11, 2, 14, 24)
    assert recheck_due_s("2026-12") == at(2026, 12, 2)
    assert recheck_due_s("2026-12", FLAT) == at(2026, 12, 2)


def test_given_3000_minutes_at_the_base_then_wednesday_25_november() -> None:
    # $36 = $29 + $7.00: 9,716 minutes over (x $0.00072 = $6.99552 -> $7.00); 59,716 in all. 3,000 a weekday, 1,200 a
    # weekend day: Mon 2 ends at 4,200, Sun 8 at 18,600, Sun 15 at 36,000, Sun 22 at 53,400, Tue 24 59,400 (short),
    # Wed 25 62,400
    assert forecast_day(video(3000), "team", SHEET, Fraction(36), "2026-11", at(2026, 11, 2, 14, 24)) == date(
        2026, 11, 25
    )


def test_given_use_before_the_base_then_it_is_spread_over_the_base() -> None:
    # 50 minutes by 09:30: 50 a weekday, never 59,716 this month; 2,450 by 10:00 (weight 0.8167 < 1: a rate of 2,450,
    # Mon 2 adds 14/24 of it): 3,879 by Mon 2's end ... 58,269 by Sun 29, 60,719 by Mon 30; 3,000 by 10:00: Tue 24
    assert forecast_day(video(50), "team", SHEET, Fraction(36), "2026-11", at(2026, 11, 2, 9, 30)) is None
    assert forecast_day(video(2450), "team", SHEET, Fraction(36), "2026-11", at(2026, 11, 2, 10)) == date(2026, 11, 30)
    assert forecast_day(video(3000), "team", SHEET, Fraction(36), "2026-11", at(2026, 11, 2, 10)) == date(2026, 11, 24)


def test_given_a_hard_limit_of_100_and_flat_weights_then_december_figures() -> None:
    # $100 = $29 + $71.00: 98,605 over (x $0.00072 = $70.9956 -> $71.00), 148,605 in all. 40,000 by Tue 1 Dec 06:00
    # (0.25 of a day, spread over the base of 1: 40,000 a day): 70,000 by Tue 1's end, 110,000 Wed 2, 150,000 Thu 3;
    # the same 40,000 at Wed 2 00:00 (1 day elapsed): 80,000, 120,000, 160,000 - Fri 4; 120,000 then: 240,000 - Wed 2
    december = price_sheet(datetime(2026, 12, 1, tzinfo=UTC))
    assert forecast_day(video(40_000), "team", december, Fraction(100), "2026-12", at(2026, 12, 1, 6), FLAT) == date(
        2026, 12, 3
    )
    assert forecast_day(video(40_000), "team", december, Fraction(100), "2026-12", at(2026, 12, 2), FLAT) == date(
        2026, 12, 4
    )
    assert forecast_day(video(120_000), "team", december, Fraction(100), "2026-12", at(2026, 12, 2), FLAT) == date(
        2026, 12, 2
    )


def test_given_the_bill_already_at_the_limit_then_today() -> None:
    # 59,716 minutes: $29 + $7.00 = $36.00 already
    assert forecast_day(video(59_716), "team", SHEET, Fraction(36), "2026-11", at(2026, 11, 3, 8)) == date(2026, 11, 3)
    # 59,715: $6.9948 -> $6.99, $35.99: not yet, and at that rate it is there the same day
    assert forecast_day(video(59_715), "team", SHEET, Fraction(36), "2026-11", at(2026, 11, 3, 8)) == date(2026, 11, 3)


def test_the_forecast_alerts_expected_from_the_early_day_and_the_rechecks() -> None:
    wed_25, mon_30, tue_24 = date(2026, 11, 25), date(2026, 11, 30), date(2026, 11, 24)

    def both(*labels: str) -> Counter[tuple[str, str, str, str]]:
        return Counter(
            ("2026-11", "budget_forecast", label, channel) for label in labels for channel in ("email", "sms")
        )

    assert expected_forecasts("2026-11", None, wed_25) == both("Wednesday 25 November")  # no day early: the re-check's
    assert expected_forecasts("2026-11", mon_30, wed_25) == both("Monday 30 November", "Wednesday 25 November")
    assert expected_forecasts("2026-11", tue_24, wed_25) == both("Tuesday 24 November")  # a later day: nothing more
    assert expected_forecasts("2026-11", None, None) == Counter()


def test_given_a_delivered_forecast_then_it_reads_back_as_its_period_and_day() -> None:
    assert classify("At this rate your November 2026 bill passes your budget around Wednesday 25 November") == (
        "2026-11", "budget_forecast", "Wednesday 25 November")  # fmt: skip
    assert classify("Kilo: at this rate your November 2026 bill ($29.00 so far) passes your $36.00 budget around "
                    "Wednesday 25 November. Reply STOP to opt out") == (
        "2026-11", "budget_forecast", "Wednesday 25 November")  # fmt: skip
