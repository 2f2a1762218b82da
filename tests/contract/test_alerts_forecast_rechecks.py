"""One contract, two implementations of the forecast's re-check rows (D366): the in-memory fake and DynamoDB (moto,
the template's alerts table and its sparse ``forecast_rechecks_due`` index); and the re-check's message on the
template's alerts queue as the alerts handler reads it."""

from __future__ import annotations

import json

import pytest

from kilo_alerts.rechecks import FORECAST_DUE, ForecastRecheck, ForecastRechecks
from tests.conftest import Stack
from tests.unit.alerts_fakes import InMemoryForecastRechecks

NOV_2_1424 = 1_793_629_440_000  # Mon 2 Nov 2026 14:24 UTC: 1,793,577,600 s (00:00) + 51,840 s (14 h 24 min), in ms
MINUTE = 60_000


@pytest.fixture(params=["fake", "dynamodb"])
def rechecks(request: pytest.FixtureRequest) -> ForecastRechecks:
    if request.param == "fake":
        return InMemoryForecastRechecks()
    from kilo_alerts.adapters import DynamoForecastRechecks  # noqa: PLC0415

    stack: Stack = request.getfixturevalue("stack")
    return DynamoForecastRechecks(stack.clients["dynamodb"], stack.template.physical_name("AlertsTable"))


def row(account: str, due_ms: int = NOV_2_1424, day: str = "", period: str = "2026-11") -> ForecastRecheck:
    return ForecastRecheck(account, period, due_ms, "budget", "36", day)


def test_given_two_early_events_then_one_row_and_a_day_said_later_replaces_none(rechecks: ForecastRechecks) -> None:
    rechecks.plan(row("acct_t"), 0)
    rechecks.plan(row("acct_t", due_ms=NOV_2_1424 + MINUTE), 1)  # no day: never overwrites
    assert rechecks.due("2026-11", NOV_2_1424, 10) == [row("acct_t")]
    rechecks.plan(row("acct_t", day="2026-11-30"), 2)  # the forecast a later early event sent: kept
    assert rechecks.due("2026-11", NOV_2_1424, 10) == [row("acct_t", day="2026-11-30")]


def test_given_a_pending_row_of_another_limit_then_an_early_event_with_no_day_replaces_it(
    rechecks: ForecastRechecks,
) -> None:
    rechecks.plan(row("acct_t"), 0)  # budget $36, no day
    forty = ForecastRecheck("acct_t", "2026-11", NOV_2_1424, "budget", "40")
    rechecks.plan(forty, 1)  # the budget changed: the re-check is of the new one
    assert rechecks.due("2026-11", NOV_2_1424, 10) == [forty]
    hard = ForecastRecheck("acct_t", "2026-11", NOV_2_1424, "hard limit", "40")
    rechecks.plan(hard, 2)  # a hard limit of the same amount set: another limit too
    assert rechecks.due("2026-11", NOV_2_1424, 10) == [hard]
    rechecks.plan(ForecastRecheck("acct_t", "2026-11", NOV_2_1424 + MINUTE, "hard limit", "40"), 3)  # same: kept
    assert rechecks.due("2026-11", NOV_2_1424, 10) == [hard]
    assert rechecks.queued(hard, 4) is True
    rechecks.plan(row("acct_t"), 5)  # queued: never pending again
    assert rechecks.due("2026-11", NOV_2_1424, 10) == []


def test_given_the_row_replaced_between_the_runs_read_and_its_mark_then_the_mark_fails_and_the_new_row_stays(
    rechecks: ForecastRechecks,
) -> None:
    rechecks.plan(row("acct_t"), 0)  # $36, no day
    read = rechecks.due("2026-11", NOV_2_1424, 10)  # the run's read: the $36 row (its message is sent now)
    forty = ForecastRecheck("acct_t", "2026-11", NOV_2_1424, "budget", "40")
    rechecks.plan(forty, 1)  # the $40 event's plan lands before the mark
    assert rechecks.queued(read[0], 2) is False  # the $36 row's mark does not take the $40 row
    assert rechecks.due("2026-11", NOV_2_1424, 10) == [forty]  # still pending: the next run queues it
    assert rechecks.queued(forty, 3) is True


def test_given_rows_due_then_the_earliest_of_the_month_first_bounded_and_queued_once(
    rechecks: ForecastRechecks,
) -> None:
    for account, due in (("acct_c", NOV_2_1424 + MINUTE), ("acct_a", NOV_2_1424), ("acct_d", NOV_2_1424 + 99 * MINUTE)):
        rechecks.plan(row(account, due), 0)
    rechecks.plan(row("acct_e", NOV_2_1424, period="2026-10"), 0)
    assert [r.account_id for r in rechecks.due("2026-11", NOV_2_1424 + MINUTE, 1)] == ["acct_a"]
    assert [r.account_id for r in rechecks.due("2026-11", NOV_2_1424 + MINUTE, 10)] == ["acct_a", "acct_c"]
    assert rechecks.queued(row("acct_a"), 5) is True
    assert rechecks.queued(row("acct_a"), 6) is False  # another run queued it
    assert [r.account_id for r in rechecks.due("2026-11", NOV_2_1424 + MINUTE, 10)] == ["acct_c"]
    rechecks.plan(row("acct_a", day="2026-11-30"), 7)  # queued: neither pending again nor changed
    assert [r.account_id for r in rechecks.due("2026-11", NOV_2_1424 + 99 * MINUTE, 10)] == ["acct_c", "acct_d"]


def test_the_recheck_goes_on_its_own_queue_as_the_handler_reads_it(stack: Stack) -> None:
    from kilo_alerts.adapters import SqsRecheckQueue  # noqa: PLC0415

    sqs = stack.clients["sqs"]
    url = sqs.get_queue_url(QueueName=stack.template.physical_name("ForecastRechecksQueue"))["QueueUrl"]
    SqsRecheckQueue(sqs, url).send(row("acct_t", day="2026-11-30"), 0)
    [message] = sqs.receive_message(QueueUrl=url, MaxNumberOfMessages=10)["Messages"]
    body = json.loads(message["Body"])
    assert body["detail-type"] == FORECAST_DUE
    assert ForecastRecheck.from_detail(body["detail"]) == row("acct_t", day="2026-11-30")
