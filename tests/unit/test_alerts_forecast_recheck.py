"""The forecast alert's re-check at the forecast's base (D366; kilo_alerts.logic and kilo_alerts.rechecks on
in-memory ports): a budget event below 100 % handled before the base has elapsed plans one re-check per account and
month; the operator checks' run queues the rows due, a bounded number, spread; the alerts function forecasts from
the month read then - the forecast when none was sent, one corrected forecast when the day moved earlier, else
nothing. Team: $29 fee, 50,000 video minutes included, then $0.00072 a minute. November 2026 starts on a Sunday,
December on a Tuesday. Figures worked by hand in each test (the same as tests/scenarios/test_budget_forecast.py's)."""

from __future__ import annotations

from dataclasses import replace
from datetime import UTC, datetime
from decimal import Decimal

import pytest

from kilo_alerts.logic import AlertPorts, AlertsPolicy, EventIncompleteError, EventOutcome, handle_event
from kilo_alerts.rechecks import FORECAST_DUE, ForecastRecheck, RecheckRun, queue_due
from kilo_billing.accounts import AccountProfile, TierChange
from kilo_billing.aws import StorageUnavailableError
from kilo_billing.contracts import UsageThresholdCrossedV1, limit_scope
from tests.account_api_fakes import InMemoryMonthToDate
from tests.fakes import InMemoryAccountDirectory
from tests.unit.alerts_fakes import InMemoryForecastRechecks, RecordingRecheckQueue
from tests.unit.test_alerts_forecast import POLICY, month, ms, ports_with

TEAM_36 = AccountProfile(
    "acct_t", (TierChange(datetime(2026, 1, 1, tzinfo=UTC), "team"),), budget_usd=Decimal(36), email="t@example.com"
)
# December, flat weights (D148's (fd) case): budget $50 (the $29 fee is 58 %: its 50 % event), hard limit $100
TEAM_DEC = AccountProfile(
    "acct_d", (TierChange(datetime(2026, 1, 1, tzinfo=UTC), "team"),), budget_usd=Decimal(50),
    hard_limit_usd=Decimal(100), email="d@example.com",
)  # fmt: skip
FLAT_POLICY = replace(POLICY, weekday_weights=(Decimal(1),) * 7)
MON_2_NOV_1424 = datetime(2026, 11, 2, 14, 24, tzinfo=UTC)  # the base's moment: Sun 0.4 + 0.6 of Monday
WED_2_DEC = datetime(2026, 12, 2, tzinfo=UTC)  # flat weights: one whole day from Tue 1 Dec 00:00


def with_rechecks(profile: AccountProfile, month_source: InMemoryMonthToDate) -> AlertPorts:
    return replace(ports_with(profile, month_source), rechecks=InMemoryForecastRechecks())


def rechecks(ports: AlertPorts) -> InMemoryForecastRechecks:
    assert isinstance(ports.rechecks, InMemoryForecastRechecks)
    return ports.rechecks


def event(profile: AccountProfile, period: str, used: str, percent: int, at: datetime) -> tuple[str, dict[str, object]]:
    budget = profile.budget_usd or Decimal(0)
    found = UsageThresholdCrossedV1(
        event_id=f"e-{used}-{percent}", account_id=profile.account_id, period=period, meter="budget",
        threshold_percent=percent, used=used, limit=str(budget), occurred_at=at.isoformat(), scope=limit_scope(budget),
    )  # fmt: skip
    return found.DETAIL_TYPE, found.model_dump()


def december(profile: AccountProfile, video_minutes: int) -> InMemoryMonthToDate:
    dec_1 = int(datetime(2026, 12, 1, tzinfo=UTC).timestamp())
    return InMemoryMonthToDate(
        InMemoryAccountDirectory(profile), {(profile.account_id, "2026-12"): {(dec_1, "video"): video_minutes}}
    )


def forecasts(outcome: EventOutcome) -> list[tuple[str, str, str]]:
    """(key, date, bill so far) of each forecast alert sent (its email)."""
    return sorted(
        {
            (a.alert.key, a.alert.values["date_label"], a.alert.values["used"])
            for a in outcome.alerts
            if a.alert.kind == "budget_forecast" and any(d.outcome.value == "sent" for d in a.deliveries)
        }
    )


def recheck(ports: AlertPorts, at: datetime, policy: AlertsPolicy = POLICY) -> EventOutcome:
    """The operator checks' run at ``at`` (no spread) and each message it queued handled by the alerts function."""
    queue = RecordingRecheckQueue()
    queue_due(rechecks(ports), queue, ms(at), 100, 0)
    outcomes = [handle_event(FORECAST_DUE, found.detail(), ports, policy, ms(at)) for found, _ in queue.sent]
    return EventOutcome(alerts=tuple(a for outcome in outcomes for a in outcome.alerts))


def test_given_a_few_minutes_at_the_fee_crossing_then_one_recheck_due_at_the_base_sends_the_forecast() -> None:
    # Mon 2 Nov 09:30, 50 video minutes: $29.00 = 80.6 % of $36 - the 50 % and 80 % events at once, each received
    # twice. Weight 0.7958 < 1: 50 minutes over the base, about 1,230 by the 30th: no day, no forecast. One
    # re-check, due Mon 2 Nov 14:24, of the budget $36, no day said. At 14:24, 3,000 minutes (all included: $29.00):
    # 3,000 a weekday -> 59,716 minutes ($7.00 of usage: 9,716 x $0.00072 = $6.99552) on Wed 25 (Tue 24 59,400,
    # Wed 25 62,400; tests/scenarios/test_budget_forecast.py): "around Wednesday 25 November", on the month's key.
    at = datetime(2026, 11, 2, 9, 30, tzinfo=UTC)
    ports = with_rechecks(TEAM_36, month(TEAM_36, 50))
    for percent in (50, 80, 50, 80):
        assert forecasts(handle_event(*event(TEAM_36, "2026-11", "29.00", percent, at), ports, POLICY, ms(at))) == []
    assert list(rechecks(ports).rows.values()) == [
        ForecastRecheck("acct_t", "2026-11", ms(MON_2_NOV_1424), "budget", "36", "")
    ]
    assert rechecks(ports).writes == 1
    assert recheck(ports, datetime(2026, 11, 2, 14, 23, tzinfo=UTC)).alerts == ()  # not due yet
    ports = replace(ports, month=month(TEAM_36, 3_000))
    assert forecasts(recheck(ports, MON_2_NOV_1424)) == [("forecast", "Wednesday 25 November", "$29.00")]
    assert recheck(ports, datetime(2026, 11, 2, 14, 39, tzinfo=UTC)).alerts == ()  # queued once: nothing left


def test_given_the_floors_day_later_than_the_rate_at_the_base_then_one_corrected_forecast() -> None:
    # Mon 2 Nov 10:00, 2,450 minutes (a steady 3,000 a weekday x 0.8167): the floor spreads them over the base:
    # "Monday 30 November" (tests/scenarios). The re-check at 14:24 with 3,000: "Wednesday 25 November", five days
    # earlier: sent once on its own key; the message delivered again sends nothing.
    at = datetime(2026, 11, 2, 10, tzinfo=UTC)
    ports = with_rechecks(TEAM_36, month(TEAM_36, 2_450))
    sent = forecasts(handle_event(*event(TEAM_36, "2026-11", "29.00", 50, at), ports, POLICY, ms(at)))
    assert sent == [("forecast", "Monday 30 November", "$29.00")]
    handle_event(*event(TEAM_36, "2026-11", "29.00", 80, at), ports, POLICY, ms(at))
    assert list(rechecks(ports).rows.values()) == [
        ForecastRecheck("acct_t", "2026-11", ms(MON_2_NOV_1424), "budget", "36", "2026-11-30")
    ]
    ports = replace(ports, month=month(TEAM_36, 3_000))
    due = ForecastRecheck("acct_t", "2026-11", ms(MON_2_NOV_1424), "budget", "36", "2026-11-30")
    assert forecasts(recheck(ports, MON_2_NOV_1424)) == [("forecast-update", "Wednesday 25 November", "$29.00")]
    assert forecasts(handle_event(FORECAST_DUE, due.detail(), ports, POLICY, ms(MON_2_NOV_1424))) == []


def test_given_a_burst_forecast_earlier_than_the_rate_at_the_base_then_the_recheck_sends_nothing() -> None:
    # 3,000 minutes by Mon 2 Nov 10:00 and nothing more by 14:24: the floor said "Tuesday 24 November", the rate at
    # the base Wednesday 25 - later: the day sent errs early, nothing is sent (the 100 % alert comes at $36).
    at = datetime(2026, 11, 2, 10, tzinfo=UTC)
    ports = with_rechecks(TEAM_36, month(TEAM_36, 3_000))
    sent = forecasts(handle_event(*event(TEAM_36, "2026-11", "29.00", 50, at), ports, POLICY, ms(at)))
    assert sent == [("forecast", "Tuesday 24 November", "$29.00")]
    assert recheck(ports, MON_2_NOV_1424).alerts == ()


def test_given_40000_minutes_by_tuesday_1_december_then_the_recheck_reads_the_rate_of_wednesday_0000() -> None:
    # D148 (fd), flat weights, hard limit $100 (reached at 148,605 minutes: 98,605 x $0.00072 = $70.9956 -> $71.00).
    # Tue 1 Dec 06:00, 40,000 minutes ($29.00, 58 % of the $50 budget): over the base, 40,000 a day: 70,000 by the
    # end of Tue, 110,000 Wed, 150,000 Thu: "Thursday 3 December" for the hard limit. Re-check due Wed 2 Dec 00:00:
    # - 120,000 minutes: $29.00 + 70,000 x $0.00072 = $79.40; 240,000 by the end of Wed: "Wednesday 2 December";
    # - 40,000 (nothing since): Fri 4 December, later: nothing;
    # - 160,000: $108.20, the limit reached (its alert went on Tue 1): nothing.
    at = datetime(2026, 12, 1, 6, tzinfo=UTC)
    ports = with_rechecks(TEAM_DEC, december(TEAM_DEC, 40_000))
    sent = forecasts(handle_event(*event(TEAM_DEC, "2026-12", "29.00", 50, at), ports, FLAT_POLICY, ms(at)))
    assert sent == [("forecast", "Thursday 3 December", "$29.00")]
    due = ForecastRecheck("acct_d", "2026-12", ms(WED_2_DEC), "hard limit", "100", "2026-12-03")
    assert list(rechecks(ports).rows.values()) == [due]
    for minutes, expected in (
        (40_000, []),
        (160_000, []),
        (120_000, [("forecast-update", "Wednesday 2 December", "$79.40")]),
    ):
        again = replace(ports, month=december(TEAM_DEC, minutes))
        found = handle_event(FORECAST_DUE, due.detail(), again, FLAT_POLICY, ms(WED_2_DEC))
        assert forecasts(found) == expected


def test_given_an_event_after_the_base_then_no_recheck_is_planned() -> None:
    # Mon 2 Nov 14:24 is the base: an event then forecasts from the rate itself (Wednesday 25 November, 3,000
    # minutes) and plans nothing.
    ports = with_rechecks(TEAM_36, month(TEAM_36, 3_000))
    outcome = handle_event(*event(TEAM_36, "2026-11", "29.00", 50, MON_2_NOV_1424), ports, POLICY, ms(MON_2_NOV_1424))
    assert forecasts(outcome) == [("forecast", "Wednesday 25 November", "$29.00")]
    assert rechecks(ports).rows == {}


def test_given_the_limit_changed_since_the_recheck_was_planned_then_it_sends_nothing() -> None:
    # The re-check of the $36 budget; the budget is $45 by the base: its own thresholds re-arm (D124), this
    # re-check is moot.
    raised = replace(TEAM_36, budget_usd=Decimal(45))
    ports = with_rechecks(raised, month(raised, 3_000))
    due = ForecastRecheck("acct_t", "2026-11", ms(MON_2_NOV_1424), "budget", "36", "")
    assert handle_event(FORECAST_DUE, due.detail(), ports, POLICY, ms(MON_2_NOV_1424)).alerts == ()


def test_the_run_queues_a_bounded_number_of_the_months_due_rechecks_spread_over_its_interval() -> None:
    # Run at Mon 2 Nov 15:00, at most 2 a run, spread over 900 s: due are a (14:24), b (14:24), c (15:00); d is due
    # Tue 17 Nov; e is October's. Sent: a and b (earliest first; same instant by account), delays 0 x 900 / 2 = 0
    # and 1 x 900 / 2 = 450. The run at 15:15: c, delay 0. At 15:30: nothing (d not due, e another month's).
    store, queue = InMemoryForecastRechecks(), RecordingRecheckQueue()
    rows = {
        name: ForecastRecheck(f"acct_{name}", period, ms(due), "budget", "36")
        for name, period, due in (
            ("b", "2026-11", MON_2_NOV_1424),
            ("a", "2026-11", MON_2_NOV_1424),
            ("c", "2026-11", datetime(2026, 11, 2, 15, tzinfo=UTC)),
            ("d", "2026-11", datetime(2026, 11, 17, tzinfo=UTC)),
            ("e", "2026-10", datetime(2026, 10, 5, tzinfo=UTC)),
        )
    }
    for row in rows.values():
        store.plan(row, 0)
    queue_due(store, queue, ms(datetime(2026, 11, 2, 15, tzinfo=UTC)), 2, 900)
    assert queue.sent == [(rows["a"], 0), (rows["b"], 450)]
    queue_due(store, queue, ms(datetime(2026, 11, 2, 15, 15, tzinfo=UTC)), 2, 900)
    assert queue.sent[2:] == [(rows["c"], 0)]
    queue_due(store, queue, ms(datetime(2026, 11, 2, 15, 30, tzinfo=UTC)), 2, 900)
    assert len(queue.sent) == 3


def test_given_the_budget_changed_before_the_base_then_the_recheck_is_of_the_new_one() -> None:
    # Mon 2 Nov 09:30, 50 minutes, budget $36: its 80 % event plans the row (budget 36, no day). 10:00, the budget
    # is $40 (a new scope): its 50 % event ($29.00 = 72.5 %), 50 minutes, no day: the row of $36 is replaced by the
    # $40's (a pending row of another limit is replaced even with no day). At 14:24, 3,000 minutes: $40 needs $11.00
    # of usage: 15,271 minutes over (15,271 x $0.00072 = $10.99512 -> $11.00; 15,270 x $0.00072 = $10.9944 ->
    # $10.99), 65,271 in all; 3,000 a weekday: end of Wed 25 62,400, end of Thu 26 65,400 >= 65,271:
    # "around Thursday 26 November" on the month's key.
    at = datetime(2026, 11, 2, 9, 30, tzinfo=UTC)
    ports = with_rechecks(TEAM_36, month(TEAM_36, 50))
    handle_event(*event(TEAM_36, "2026-11", "29.00", 80, at), ports, POLICY, ms(at))
    forty = replace(TEAM_36, budget_usd=Decimal(40))
    ten = datetime(2026, 11, 2, 10, tzinfo=UTC)
    ports = replace(with_rechecks(forty, month(forty, 50)), rechecks=ports.rechecks, ledger=ports.ledger)
    assert forecasts(handle_event(*event(forty, "2026-11", "29.00", 50, ten), ports, POLICY, ms(ten))) == []
    assert list(rechecks(ports).rows.values()) == [
        ForecastRecheck("acct_t", "2026-11", ms(MON_2_NOV_1424), "budget", "40", "")
    ]
    ports = replace(ports, month=month(forty, 3_000))
    assert forecasts(recheck(ports, MON_2_NOV_1424)) == [("forecast", "Thursday 26 November", "$29.00")]


def test_given_the_recheck_message_twice_after_an_undecided_early_forecast_then_one_forecast() -> None:
    # The row says Monday 30 (2,450 minutes at 10:00) but that forecast was never decided (its event went to the
    # dead-letter queue); the re-check's message is delivered twice (a run crashed between the send and the mark).
    # 3,000 minutes at 14:24: the first sends "around Wednesday 25 November" on the month's key (no forecast was
    # decided); the second finds that forecast decided BY THE RE-CHECK itself: nothing (not a forecast-update of
    # Monday 30, a day the customer never got).
    ports = with_rechecks(TEAM_36, month(TEAM_36, 3_000))
    due = ForecastRecheck("acct_t", "2026-11", ms(MON_2_NOV_1424), "budget", "36", "2026-11-30")
    first = forecasts(handle_event(FORECAST_DUE, due.detail(), ports, POLICY, ms(MON_2_NOV_1424)))
    second = handle_event(FORECAST_DUE, due.detail(), ports, POLICY, ms(MON_2_NOV_1424))
    assert first == [("forecast", "Wednesday 25 November", "$29.00")]
    assert forecasts(second) == []


class RacedByAnotherRun(InMemoryForecastRechecks):
    """Another run marks the first row found queued between this run's read and its mark."""

    def due(self, period: str, now_ms: int, limit: int) -> list[ForecastRecheck]:
        found = super().due(period, now_ms, limit)
        for row in found[:1]:
            super().queued(row, now_ms)
        return found


def test_the_run_counts_only_the_rechecks_it_marked_queued() -> None:
    # a and b due at 14:24; another run marks a between this run's read and its mark: this run counts b alone
    # (a is sent again - the alerts side's claims make it send nothing - but it is the other run's).
    store, queue = RacedByAnotherRun(), RecordingRecheckQueue()
    a = ForecastRecheck("acct_a", "2026-11", ms(MON_2_NOV_1424), "budget", "36")
    b = ForecastRecheck("acct_b", "2026-11", ms(MON_2_NOV_1424), "budget", "36")
    store.plan(a, 0)
    store.plan(b, 0)
    run = queue_due(store, queue, ms(datetime(2026, 11, 2, 14, 30, tzinfo=UTC)), 100, 0)
    assert run == RecheckRun(queued=(b,), dropped=0)


def _abc_due_nov_30_1000(store: InMemoryForecastRechecks) -> list[ForecastRecheck]:
    """acct_a, acct_b and acct_c's November budget re-checks (36 %), each due Mon 30 Nov 10:00, planned in ``store``."""
    rows = [
        ForecastRecheck(f"acct_{n}", "2026-11", ms(datetime(2026, 11, 30, 10, tzinfo=UTC)), "budget", "36")
        for n in "abc"
    ]
    for row in rows:
        store.plan(row, 0)
    return rows


def test_the_months_last_run_counts_the_rechecks_it_leaves_pending() -> None:
    # a, b and c due Mon 30 Nov 10:00, at most 1 a run. The run at 23:40: the next (23:55) is in November: a
    # queued, nothing dropped. The run at 23:50: the next (00:05 Tue 1 Dec) is December's, November's re-checks
    # are moot then: b queued, c left pending - 1 dropped (counted: FORECAST_RECHECKS_DROPPED).
    store, queue = InMemoryForecastRechecks(), RecordingRecheckQueue()
    rows = _abc_due_nov_30_1000(store)
    assert queue_due(store, queue, ms(datetime(2026, 11, 30, 23, 40, tzinfo=UTC)), 1, 0) == RecheckRun((rows[0],), 0)
    assert queue_due(store, queue, ms(datetime(2026, 11, 30, 23, 50, tzinfo=UTC)), 1, 0) == RecheckRun((rows[1],), 1)


class ReplacedBetweenReadAndMark(InMemoryForecastRechecks):
    """The alerts function's plan of ``between`` lands between the run's read (or a stale index read) and its mark."""

    def __init__(self) -> None:
        super().__init__()
        self.between: list[ForecastRecheck] = []

    def due(self, period: str, now_ms: int, limit: int) -> list[ForecastRecheck]:
        found = super().due(period, now_ms, limit)
        for row in self.between:
            self.plan(row, now_ms)
        self.between = []
        return found


def test_given_the_row_replaced_between_the_runs_read_and_its_mark_then_the_next_run_queues_the_new_one() -> None:
    # $36 row (no day) planned at 09:30; the run at 14:24 reads it; the $40 row replaces it before the mark (its
    # event's clock read before 14:24). The $36 message sends nothing (the limit changed); the mark of the $36 row
    # fails (the row is the $40's), so the $40 row stays pending and the run at 14:39 queues it. $40 needs 65,271
    # minutes (the budget change test); at 14:39 the 3,000 minutes are over Sat/Sun 0.4 + 14 h 39 min of Monday
    # (14.65 / 24 = 0.610417): 1.010417 weekdays, 3,000 / 1.010417 = 2,969.07 a weekday; to the end of Thu 26
    # (21.8 weekdays: 18 weekdays + 4 Sundays and 3 Saturdays x 0.4 to Wed 25, + 1) 64,725.8 < 65,271, to the end
    # of Fri 27 (22.8) 67,694.8 >= 65,271: "around Friday 27 November" on `forecast`, sent once over the runs at
    # 14:24, 14:39 and 14:54 (before the fix: nothing, the $40 row marked queued by the $36 row's message).
    store = ReplacedBetweenReadAndMark()
    ports = replace(with_rechecks(TEAM_36, month(TEAM_36, 50)), rechecks=store)
    at = datetime(2026, 11, 2, 9, 30, tzinfo=UTC)
    handle_event(*event(TEAM_36, "2026-11", "29.00", 80, at), ports, POLICY, ms(at))
    store.between = [ForecastRecheck("acct_t", "2026-11", ms(MON_2_NOV_1424), "budget", "40", "")]
    forty = replace(TEAM_36, budget_usd=Decimal(40))
    ports = replace(with_rechecks(forty, month(forty, 3_000)), rechecks=store, ledger=ports.ledger)
    sent = []
    for minute in (0, 15, 30):
        queue = RecordingRecheckQueue()
        now = ms(MON_2_NOV_1424) + minute * 60_000
        queue_due(store, queue, now, 100, 0)
        for found, _ in queue.sent:
            sent += forecasts(handle_event(FORECAST_DUE, found.detail(), ports, POLICY, now))
    assert sent == [("forecast", "Friday 27 November", "$29.00")]


def test_the_months_last_run_spreads_its_delays_over_the_seconds_left_in_the_month() -> None:
    # 3 rows due, the month's last run at Mon 30 Nov 23:50 with the template's 900 s spread: 600 s are left in
    # November (23:50 -> 00:00), so the spread is 600: delays 0 x 600 / 3 = 0, 1 x 600 / 3 = 200, 2 x 600 / 3 = 400
    # (the last at 23:56:40, in November; uncapped it would be 600, at 00:00 Tue 1 Dec, where the re-check of
    # November sends nothing). All 3 queued, none left pending: dropped 0.
    store, queue = InMemoryForecastRechecks(), RecordingRecheckQueue()
    for n in "abc":
        store.plan(
            ForecastRecheck(f"acct_{n}", "2026-11", ms(datetime(2026, 11, 30, 10, tzinfo=UTC)), "budget", "36"), 0
        )
    run = queue_due(store, queue, ms(datetime(2026, 11, 30, 23, 50, tzinfo=UTC)), 3, 900)
    assert [d for _, d in queue.sent] == [0, 200, 400]
    assert (len(run.queued), run.dropped) == (3, 0)


class StaleIndex(InMemoryForecastRechecks):
    """The index's second read (eventually consistent) still lists the rows the run has just marked."""

    def __init__(self) -> None:
        super().__init__()
        self.reads: list[list[ForecastRecheck]] = []

    def due(self, period: str, now_ms: int, limit: int) -> list[ForecastRecheck]:
        pending = set(self.pending)
        self.pending = {(r.account_id, r.period) for r in self.rows.values()} if self.reads else pending
        found = super().due(period, now_ms, limit)
        self.pending = pending
        self.reads.append(found)
        return found


def test_the_months_last_run_does_not_count_as_dropped_the_rows_it_marked_though_the_index_lists_them() -> None:
    # a, b and c due Mon 30 Nov 10:00, at most 2 a run, the month's last run at 23:50: a and b queued; the stale
    # second read lists a, b and c (the index has not yet dropped the marks' keys): dropped 3 - 2 marked = 1 (c).
    store, queue = StaleIndex(), RecordingRecheckQueue()
    rows = _abc_due_nov_30_1000(store)
    run = queue_due(store, queue, ms(datetime(2026, 11, 30, 23, 50, tzinfo=UTC)), 2, 0)
    assert run == RecheckRun((rows[0], rows[1]), 1)
    assert store.reads[1] == rows  # the stale read lists the 2 marked too: read up to 2 + 2 rows, the marked left out


class PlanThrottled(InMemoryForecastRechecks):
    """The re-check row's write fails (throttled, a missing grant) the first ``failures`` times, then is written."""

    def __init__(self, failures: int) -> None:
        super().__init__()
        self.failures = failures

    def plan(self, recheck: ForecastRecheck, at_ms: int) -> None:
        if self.failures:
            self.failures -= 1
            raise StorageUnavailableError("ThrottlingException: rate exceeded")
        super().plan(recheck, at_ms)


def test_given_the_recheck_row_not_written_then_the_forecast_is_delivered_and_the_event_comes_back() -> None:
    # D366 amended (fb4), review fa3's case. Mon 2 Nov 10:00, 2,450 minutes ($29.00: 80.6 % of $36): the floor's
    # day is "Monday 30 November" (test_given_the_floors_day_later_than_the_rate_at_the_base_...). The row's write
    # throttled, on the queue's LAST attempt: the forecast goes with the 50 % alert all the same; the row's failure
    # is a cause of its own (the event comes back, here its dead-letter queue).
    at = datetime(2026, 11, 2, 10, tzinfo=UTC)
    ports = replace(ports_with(TEAM_36, month(TEAM_36, 2_450)), rechecks=PlanThrottled(failures=1))
    with pytest.raises(EventIncompleteError) as incomplete:
        handle_event(*event(TEAM_36, "2026-11", "29.00", 50, at), ports, POLICY, ms(at), last_attempt=True)
    assert forecasts(incomplete.value.outcome) == [("forecast", "Monday 30 November", "$29.00")]
    assert "ThrottlingException" in str(incomplete.value)
    assert rechecks(ports).rows == {}


def test_given_the_recheck_row_not_written_then_the_redelivery_plans_it_and_sends_no_second_forecast() -> None:
    # As above, not the last attempt: the first delivery sends "Monday 30 November" and its row's write fails; the
    # event delivered again at 10:05 (2,450 minutes still) finds the forecast decided BY ITSELF: no second forecast
    # (the ledger's claims), and the row is written - one, due Mon 2 Nov 14:24, budget $36, "2026-11-30". At 14:24
    # with 3,000 minutes the re-check corrects it once: "Wednesday 25 November" on forecast-update (D366 4).
    at, again = datetime(2026, 11, 2, 10, tzinfo=UTC), datetime(2026, 11, 2, 10, 5, tzinfo=UTC)
    ports = replace(ports_with(TEAM_36, month(TEAM_36, 2_450)), rechecks=PlanThrottled(failures=1))
    with pytest.raises(EventIncompleteError) as incomplete:
        handle_event(*event(TEAM_36, "2026-11", "29.00", 50, at), ports, POLICY, ms(at))
    assert forecasts(incomplete.value.outcome) == [("forecast", "Monday 30 November", "$29.00")]
    assert forecasts(handle_event(*event(TEAM_36, "2026-11", "29.00", 50, again), ports, POLICY, ms(again))) == []
    assert list(rechecks(ports).rows.values()) == [
        ForecastRecheck("acct_t", "2026-11", ms(MON_2_NOV_1424), "budget", "36", "2026-11-30")
    ]
    # another event (the 80 %) after the forecast was decided by the 50 % one plans nothing more: one write
    handle_event(*event(TEAM_36, "2026-11", "29.00", 80, again), ports, POLICY, ms(again))
    assert rechecks(ports).writes == 1
    ports = replace(ports, month=month(TEAM_36, 3_000))
    assert forecasts(recheck(ports, MON_2_NOV_1424)) == [("forecast-update", "Wednesday 25 November", "$29.00")]


@pytest.mark.parametrize("value", [None, "", "   "])
def test_given_no_rechecks_queue_named_then_the_alerts_settings_still_start_naming_none(
    monkeypatch: pytest.MonkeyPatch, value: str | None
) -> None:
    """A queue setting never stops the real alerts (D366 amended (fq2)): FORECAST_RECHECKS_QUEUE_URL missing, empty or
    spaces is read as "" - no queue named, which the alerts handler says aloud (amended (sm)) - never refused; as the
    template's ``!Ref`` resolves it (a queue URL), surrounding spaces dropped."""
    from kilo_alerts.settings import AlertSettings  # noqa: PLC0415

    for name, setting in {"ALERTS_TABLE_NAME": "alerts", "USAGE_TABLE_NAME": "usage",
                          "ALERT_SENDER_EMAIL": "alerts@kilo.example",
                          "ALERT_PREFERENCES_URL": "https://kilo.example/prefs"}.items():  # fmt: skip
        monkeypatch.setenv(name, setting)
    if value is None:
        monkeypatch.delenv("FORECAST_RECHECKS_QUEUE_URL", raising=False)
    else:
        monkeypatch.setenv("FORECAST_RECHECKS_QUEUE_URL", value)
    assert AlertSettings().forecast_rechecks_queue_url == ""
    url = "https://sqs.us-east-1.amazonaws.com/123456789012/kilo-billing-forecast-rechecks-prod"
    monkeypatch.setenv("FORECAST_RECHECKS_QUEUE_URL", f" {url} ")
    assert AlertSettings().forecast_rechecks_queue_url == url
