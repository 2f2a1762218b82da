"""The forecast alert of a budget crossing (kilo_alerts.logic.handle_event on in-memory ports): the month's
quantities per meter (rating's counters) are extrapolated at their weekday-weighted run rate and rated as the bill is -
the fee fixed, the allowance first, the overage at the price book's prices - as the account API's forecast does (both
use kilo_billing.budgets.bill_reached_on, D148). Team: $29 fee, 50,000 video minutes included, then $0.00072 a minute
(0.0006 x 1.20). Figures worked by hand in each test."""

from __future__ import annotations

from dataclasses import replace
from datetime import UTC, date, datetime
from decimal import Decimal

import pytest

from kilo_alerts.logic import AlertPorts, AlertsPolicy, DeliveryPolicy, EventIncompleteError, handle_event
from kilo_alerts.model import Outcome
from kilo_alerts.ports import SendFailedError
from kilo_billing.accounts import AccountProfile, TierChange
from kilo_billing.aws import StorageUnavailableError
from kilo_billing.budgets import DEFAULT_WEEKDAY_WEIGHTS, bill_reached_on, month_fee
from kilo_billing.catalog import default_catalog
from kilo_billing.contracts import UsageThresholdCrossedV1, limit_scope
from kilo_billing.month_to_date import month_to_date
from kilo_billing.periods import Period
from kilo_billing.usage_signals import Counters
from tests.account_api_fakes import InMemoryMonthToDate
from tests.fakes import InMemoryAccountDirectory, InMemoryEntitlements
from tests.unit.alerts_fakes import (
    FakeRooms,
    InMemoryEnforcementLedger,
    InMemoryLedger,
    RecordingScheduler,
    ScriptedMailer,
    ScriptedTexter,
    StaticSessions,
)

# Tuesday 3 November 2026, noon. November starts on a Sunday: weight so far Sun 0.4 + Mon 1 + half of Tue 0.5 = 1.9
NOON = datetime(2026, 11, 3, 12, 0, tzinfo=UTC)
NOV_1 = int(datetime(2026, 11, 1, tzinfo=UTC).timestamp())  # the team segment's start: rating's counters' key
BOOK = default_catalog().for_period(Period.parse("2026-11"))
TEAM = AccountProfile(
    "acct_t", (TierChange(datetime(2026, 1, 1, tzinfo=UTC), "team"),), budget_usd=Decimal(60), email="t@example.com"
)


def month(profile: AccountProfile, video_minutes: int) -> InMemoryMonthToDate:
    """Rating's counters of November: ``video_minutes`` on the team segment."""
    return InMemoryMonthToDate(
        InMemoryAccountDirectory(profile), {(profile.account_id, "2026-11"): {(NOV_1, "video"): video_minutes}}
    )


def reached_on(profile: AccountProfile, video_minutes: int, limit: Decimal, at: datetime) -> date | None:
    rated = month_to_date(month(profile, video_minutes), profile.account_id, "2026-11", 0, BOOK).rated
    return bill_reached_on(rated, BOOK, limit, at, DEFAULT_WEEKDAY_WEIGHTS)


class UnreadableMonth(InMemoryMonthToDate):
    """Rating's counters cannot be read (DynamoDB unreachable) ``failures`` times (-1: never), then they can."""

    failures: int = -1

    def counters(self, account_id: str, period: str) -> Counters:
        if self.failures:
            self.failures -= 1
            raise StorageUnavailableError("BatchGetItem: unreachable")
        return super().counters(account_id, period)


def budget_event(
    used: str, percent: int, at: datetime = NOON, profile: AccountProfile = TEAM
) -> tuple[str, dict[str, object]]:
    budget = profile.budget_usd or Decimal(0)
    event = UsageThresholdCrossedV1(
        event_id=f"e-{used}", account_id=profile.account_id, period="2026-11", meter="budget",
        threshold_percent=percent, used=used, limit=str(budget), occurred_at=at.isoformat(),
        scope=limit_scope(budget),
    )  # fmt: skip
    return event.DETAIL_TYPE, event.model_dump()


def ports_with(profile: AccountProfile, month_source: InMemoryMonthToDate) -> AlertPorts:
    directory = InMemoryAccountDirectory(profile)
    return AlertPorts(
        directory, InMemoryLedger(), ScriptedMailer(), ScriptedTexter(), InMemoryEntitlements(directory),
        InMemoryEntitlements(directory), StaticSessions(), FakeRooms({}), InMemoryEnforcementLedger(),
        RecordingScheduler(), month_source,
    )  # fmt: skip


def ms(at: datetime) -> int:
    """``at`` as the handler's clock (epoch milliseconds)."""
    return int(at.timestamp() * 1000)


POLICY = AlertsPolicy(DeliveryPolicy("https://x/prefs", dashboard_url="https://dash.example/"))


def forecasts(
    used: str, percent: int, video_minutes: int, at: datetime = NOON, profile: AccountProfile = TEAM
) -> list[str]:
    ports = ports_with(profile, month(profile, video_minutes))
    outcome = handle_event(*budget_event(used, percent, at, profile), ports, POLICY, ms(at))
    return [a.alert.values["date_label"] for a in outcome.alerts if a.alert.kind == "budget_forecast"]


def test_given_the_team_fee_then_the_month_fee_is_29_and_a_mid_month_upgrade_pays_its_share() -> None:
    book = default_catalog().for_period(Period.parse("2026-11"))
    assert month_fee(TEAM, "2026-11", book) == Decimal("29.00")
    upgraded = AccountProfile(
        "acct_u",
        (
            TierChange(datetime(2026, 1, 1, tzinfo=UTC), "personal"),
            TierChange(datetime(2026, 11, 16, tzinfo=UTC), "team"),
        ),
    )
    assert month_fee(upgraded, "2026-11", book) == Decimal("14.50")  # $29 x 15 of 30 days (Personal is free)


def test_given_a_bill_that_is_mostly_the_fee_then_no_forecast_is_sent() -> None:
    # Budget $50: its 50 % ($25.00) is passed at once by the $29.00 fee. By Tuesday noon 1,000 video minutes, all
    # included: the bill is $29.00. The minutes: 1,000 / 1.9 a weekday; the month weighs 24.6 (21 weekdays + 9
    # weekend days x 0.4) -> 1,000 x 24.6 / 1.9 = 12,947.4 minutes by the 30th, inside the 50,000 included: the bill
    # stays $29.00, $50 is never reached. (The whole $29 bill as a run rate, $15.26 a weekday, said Wednesday 4.)
    budget_50 = AccountProfile(
        "acct_t", (TierChange(datetime(2026, 1, 1, tzinfo=UTC), "team"),), budget_usd=Decimal(50),
        email="t@example.com",
    )  # fmt: skip
    assert forecasts("29.00", 50, 1_000, NOON, budget_50) == []
    assert reached_on(budget_50, 1_000, Decimal(50), NOON) is None


def test_given_usage_growing_then_the_forecast_extrapolates_the_minutes_and_rates_them() -> None:
    # $48.00 at 80 % of $60 by Tuesday noon: $29.00 fee + 26,389 video minutes over 50,000 (76,389 in all: 26,389 x
    # $0.00072 = $19.00008 -> $19.00). $60 needs usage of $31.00 as rounded: exact >= $30.995 -> 30.995 / 0.00072 =
    # 43,048.6 -> 43,049 over -> 93,049 minutes, 16,660 more. The minutes: 76,389 / 1.9 = 40,204.7 a weekday; the
    # rest of Tuesday (0.5) adds 20,102.4 -> 20,102 (96,491 minutes, 46,491 over -> $33.47352 -> $33.47, a $62.47
    # bill): Tuesday 3 November. (The $19.00 of usage as a dollar run rate, $10.00 a weekday, said Wednesday 4.)
    assert forecasts("48.00", 80, 76_389) == ["Tuesday 3 November"]
    assert reached_on(TEAM, 76_389, Decimal(60), NOON) == date(2026, 11, 3)


def test_given_the_allowance_ran_out_mid_month_then_the_overage_to_come_is_forecast() -> None:
    # Review re2 (F5): team, budget $40, 3,000 video minutes a day from the 1st. By Thursday 19 November 01:20: 18
    # days x 3,000 + 80/1,440 x 3,000 (166.67) -> 54,167 minutes, 4,167 over x $0.00072 = $3.00024 -> $3.00, a $32.00
    # bill: 80 % of $40. Before, the $3.00 was extrapolated as dollars over the whole 18.06 days (usage cost $0 until
    # the allowance ran out on day 16.67): $4.98 by the 30th, a $33.98 bill, "never" - and the 50 % event came at
    # $0 of usage: no forecast alert all month, while the month ends at 90,000 minutes = $57.80.
    # $40 needs usage of $11.00 as rounded: exact >= $10.995 -> 15,270.8 -> 15,271 over -> 65,271 minutes.
    # Default weights: elapsed Sun 1 0.4 + 2 x (5 weekdays + 0.8) + Mon 16 to Wed 18 3 = 15.0, + 1/18 of Thursday =
    # 271/18: 54,167 x 18 / 271 = 3,597.8 minutes a weekday. To the end of Sunday 22 (17/18 + Fri 1 + Sat 0.4 + Sun
    # 0.4 = 247/90 of weight): 54,167 x 18 x 247 / (271 x 90) = 9,873.98 -> 9,873 -> 64,040 minutes, 14,040 over ->
    # $10.1088 -> $10.11, a $39.11 bill; to the end of Monday 23 (337/90): 13,471.8 -> 13,471 -> 67,638, 17,638 over
    # -> $12.69936 -> $12.70, $41.70 >= $40: Monday 23 November.
    budget_40 = AccountProfile(
        "acct_f", (TierChange(datetime(2026, 1, 1, tzinfo=UTC), "team"),), budget_usd=Decimal(40),
        email="f@example.com",
    )  # fmt: skip
    at = datetime(2026, 11, 19, 1, 20, tzinfo=UTC)
    assert forecasts("32.00", 80, 54_167, at, budget_40) == ["Monday 23 November"]
    assert reached_on(budget_40, 54_167, Decimal(40), at) == date(2026, 11, 23)


def test_given_the_months_usage_cannot_be_read_then_the_alert_goes_once_and_the_redelivery_forecasts() -> None:
    # the forecast needs rating's counters; while they cannot be read the 80 % alert is delivered all the same and the
    # event comes back for the forecast; redelivered once they can be read, the forecast goes (Tuesday 3 November, as
    # worked in test_given_usage_growing_...) and the 80 % alert, on its own ledger key, is not sent again
    source = UnreadableMonth(InMemoryAccountDirectory(TEAM), {("acct_t", "2026-11"): {(NOV_1, "video"): 76_389}})
    source.failures = 1
    ports = ports_with(TEAM, source)
    with pytest.raises(EventIncompleteError) as incomplete:
        handle_event(*budget_event("48.00", 80), ports, POLICY, ms(NOON))
    assert [(a.alert.kind, a.count(Outcome.SENT)) for a in incomplete.value.outcome.alerts] == [("budget_threshold", 1)]
    assert "BatchGetItem: unreachable" in str(incomplete.value)
    again = handle_event(*budget_event("48.00", 80), ports, POLICY, ms(NOON))
    assert [(a.alert.kind, a.count(Outcome.SENT)) for a in again.alerts] == [
        ("budget_threshold", 0),
        ("budget_forecast", 1),
    ]
    assert sorted(subject for _, subject, _, _ in ports.mailer.sent) == [
        "At this rate your November 2026 bill passes your budget around Tuesday 3 November",
        "Your November 2026 bill so far reached 80% of your budget",
    ]


def test_given_this_months_forecast_already_sent_then_a_later_event_does_not_read_the_month_nor_come_back() -> None:
    # Review v3 (4): the 80 % event sent the month's one forecast; the 90 % event ($54.00) comes while rating's
    # counters cannot be read: the forecast is decided already, so the month is not read and nothing is retried
    source = UnreadableMonth(InMemoryAccountDirectory(TEAM), {("acct_t", "2026-11"): {(NOV_1, "video"): 76_389}})
    source.failures = 0
    ports = ports_with(TEAM, source)
    handle_event(*budget_event("48.00", 80), ports, POLICY, ms(NOON))
    source.failures = -1  # unreadable from now on
    later = handle_event(*budget_event("54.00", 90), ports, POLICY, ms(NOON) + 3_600_000)
    assert [(a.alert.kind, a.count(Outcome.SENT)) for a in later.alerts] == [("budget_threshold", 1)]


def test_given_a_few_minutes_of_the_month_then_no_forecast_and_a_later_event_sends_it() -> None:
    # Review v3 (1): Sun 1 Nov 00:30, 300 video minutes, the $29.00 fee: 48 % of the $60 budget (a 40 % alert).
    # Elapsed weight 0.4 x 30/1,440 = 1/120 < 1 (one weekday's, the base): the 300 minutes are spread over the base
    # (D148 amended (e3c)): 300 a weekday, + 300 x (24.6 - 1/120) = 7,677.5 -> 7,677 by the 30th, inside the 50,000
    # included: the bill stays $29.00, $60 never reached: no forecast, nothing claimed.
    # By Tuesday noon 76,389 minutes ($48.00, the 80 % event): Tuesday 3 November (test_given_usage_growing_...).
    counters = {(NOV_1, "video"): 300}
    ports = ports_with(TEAM, InMemoryMonthToDate(InMemoryAccountDirectory(TEAM), {("acct_t", "2026-11"): counters}))
    early = datetime(2026, 11, 1, 0, 30, tzinfo=UTC)
    first = handle_event(*budget_event("29.00", 40, early), ports, POLICY, ms(early))
    assert [a.alert.kind for a in first.alerts] == ["budget_threshold"]
    counters[(NOV_1, "video")] = 76_389
    later = handle_event(*budget_event("48.00", 80), ports, POLICY, ms(NOON))
    forecast = [a.alert.values["date_label"] for a in later.alerts if a.alert.kind == "budget_forecast"]
    assert forecast == ["Tuesday 3 November"]


def test_given_an_event_handled_days_late_then_the_forecast_is_from_the_handlers_clock() -> None:
    # Review v3 (3): the $50 budget's 50 % event of Tue 10 Nov 00:00 handled on Wed 25 Nov 00:00 (redriven from the
    # DLQ), the counters as read then: 37,500 minutes. From the event's clock (weight 7.2 by 10 Nov: 5,208 a weekday)
    # it said a day already past. From now: weight by 25 Nov 00:00 = Sun 1 0.4 + 3 x (5 + 0.8) + Mon 23, Tue 24 2 =
    # 19.8; the rest (Wed-Fri 3, Sat-Sun 0.8, Mon 30 1) = 4.8: 37,500 x 4.8 / 19.8 = 9,090.9 more -> 46,590 minutes,
    # inside the 50,000 included: the bill stays $29.00, $50 is never passed: no forecast.
    budget_50 = AccountProfile(
        "acct_t", (TierChange(datetime(2026, 1, 1, tzinfo=UTC), "team"),), budget_usd=Decimal(50),
        email="t@example.com",
    )  # fmt: skip
    tenth, handled = datetime(2026, 11, 10, tzinfo=UTC), datetime(2026, 11, 25, tzinfo=UTC)
    ports = ports_with(budget_50, month(budget_50, 37_500))
    outcome = handle_event(*budget_event("29.00", 50, tenth, budget_50), ports, POLICY, ms(handled))
    assert [a.alert.kind for a in outcome.alerts] == ["budget_threshold"]


def test_given_an_event_handled_after_its_month_then_no_forecast_and_the_month_is_not_read() -> None:
    # Review v3 (3): the 80 % event of Sat 28 Nov handled on Wed 2 Dec: November's forecast is moot (no read: the
    # counters cannot be read here, and the event still completes)
    ports = ports_with(TEAM, UnreadableMonth(InMemoryAccountDirectory(TEAM)))
    at, handled = datetime(2026, 11, 28, tzinfo=UTC), datetime(2026, 12, 2, tzinfo=UTC)
    outcome = handle_event(*budget_event("48.00", 80, at), ports, POLICY, ms(handled))
    assert [(a.alert.kind, a.count(Outcome.SENT)) for a in outcome.alerts] == [("budget_threshold", 1)]


def test_given_the_fee_crossing_thresholds_before_the_base_then_the_forecast_goes_with_the_first_event() -> None:
    # Review v3b (1): Team, budget $36, thresholds 50/80/100. The month's first calls, 3,000 video minutes by Mon 2
    # Nov 10:00: the bill is the $29.00 fee = 80.6 %: the 50 % and 80 % events come together, at weight 0.4 + 10/24
    # = 0.8167 < 1 (the base), and no other event below 100 % is left. The 3,000 minutes spread over the base:
    # 3,000 a weekday; $36 needs 59,716 minutes (9,716 over x $0.00072 = $6.99552 -> $7.00); the rest of Monday
    # 14/24 x 3,000 = 1,750, by the end of Mon 23 (15 weekdays + 6 weekend days x 0.4 = 17.4): 3,000 + 1,750 +
    # 52,200 = 56,950; Tue 24: 59,950 >= 59,716: Tuesday 24 November, with the first event; the second finds it sent.
    team_36 = replace(TEAM, budget_usd=Decimal(36))
    at = datetime(2026, 11, 2, 10, tzinfo=UTC)
    ports = ports_with(team_36, month(team_36, 3_000))
    sent = []
    for percent in (50, 80):
        outcome = handle_event(*budget_event("29.00", percent, at, team_36), ports, POLICY, ms(at))
        sent += [(a.alert.values["date_label"], a.count(Outcome.SENT)) for a in outcome.alerts
                 if a.alert.kind == "budget_forecast"]  # fmt: skip
    assert sent == [("Tuesday 24 November", 1)]
    # the hard limit's forecast, $40: 65,271 minutes (15,271 over x $0.00072 = $10.99512 -> $11.00); Wed 25 62,950,
    # Thu 26 65,950 >= 65,271: Thursday 26 November
    hard_40 = replace(team_36, hard_limit_usd=Decimal(40))
    assert forecasts("29.00", 50, 3_000, at, hard_40) == ["Thursday 26 November"]


def test_given_a_late_event_with_a_forecast_then_its_date_is_from_the_handlers_clock() -> None:
    # Review v3b (3): the 80 % event of Tue 3 Nov noon ($48.00 of $60), handled at Wed 4 Nov 00:00 with the counters
    # read then: 76,389 minutes. From the event's clock (weight 1.9): Tuesday 3 November (test_given_usage_growing_).
    # From now, weight 0.4 + 1 + 1 = 2.4: 76,389 / 2.4 = 31,828.75 a weekday; $60 needs 93,049 minutes; Wed 4 adds
    # 31,828 -> 108,217 >= 93,049: Wednesday 4 November.
    handled = datetime(2026, 11, 4, tzinfo=UTC)
    ports = ports_with(TEAM, month(TEAM, 76_389))
    outcome = handle_event(*budget_event("48.00", 80, NOON), ports, POLICY, ms(handled))
    assert [a.alert.values["date_label"] for a in outcome.alerts if a.alert.kind == "budget_forecast"] == [
        "Wednesday 4 November"
    ]


def test_given_a_late_event_with_more_use_since_then_the_forecast_says_the_bill_it_was_made_from() -> None:
    # Review fd: the 80 % event of Tue 3 Nov noon ($48.00 of $60), handled at Wed 4 Nov 00:00 with the counters read
    # then: 90,000 video minutes, 40,000 over the 50,000 included x $0.00072 = $28.80, + the $29.00 fee = $57.80 (the
    # event's $48.00 is the bill at the crossing, a day old). The date: weight 0.4 + 1 + 1 = 2.4, 90,000 / 2.4 =
    # 37,500 a weekday; $60 needs 93,049 minutes (test_given_usage_growing_...); Wed 4 adds 37,500 -> 127,500 >=
    # 93,049: Wednesday 4 November - beside "$57.80 so far", the bill it was forecast from, not "$48.00".
    handled = datetime(2026, 11, 4, tzinfo=UTC)
    ports = ports_with(TEAM, month(TEAM, 90_000))
    outcome = handle_event(*budget_event("48.00", 80, NOON), ports, POLICY, ms(handled))
    forecast = [a.alert.values for a in outcome.alerts if a.alert.kind == "budget_forecast"]
    assert [(values["used"], values["date_label"]) for values in forecast] == [("$57.80", "Wednesday 4 November")]
    text = next(text for _, subject, _, text in ports.mailer.sent if subject.startswith("At this rate"))
    assert "is $57.80 so far" in text


def test_given_the_forecasts_sms_failed_for_now_then_the_redelivery_sends_it() -> None:
    # Review v3b (3a): the 80 % event (Tuesday 3 November, test_given_usage_growing_...): the forecast's email goes,
    # its SMS fails for now -> the event comes back; on the redelivery the email row is decided but the SMS row is
    # 'retry': the forecast is not decided on every channel, so it is computed again and the SMS goes.
    texting = replace(
        TEAM, phone="+14155550100", phone_verified=True,
        alert_preferences=(("budget_threshold", ("email",)), ("budget_forecast", ("email", "sms"))),
    )  # fmt: skip
    texter, mailer = ScriptedTexter(SendFailedError("SNS throttled")), ScriptedMailer()
    ports = replace(ports_with(texting, month(texting, 76_389)), texter=texter, mailer=mailer)
    with pytest.raises(EventIncompleteError):
        handle_event(*budget_event("48.00", 80, NOON, texting), ports, POLICY, ms(NOON))
    assert texter.sent == []
    handle_event(*budget_event("48.00", 80, NOON, texting), ports, POLICY, ms(NOON) + 360_000)
    assert ["Tuesday 3 November" in text for _, text in texter.sent] == [True]
    assert len(mailer.sent) == 2  # the 80 % alert and the forecast, once each
