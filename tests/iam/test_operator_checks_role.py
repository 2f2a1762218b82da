"""The operator checks under their generated role (OperatorChecksFunctionRole): the abuse scan (the open sessions' and
the accounts' indexes scanned, an account's sessions queried, the alerts' claims, the free account held) and the
daily margin check (profiles and aggregates read, the snapshot saved, the alert announced on the operator topic) -
moto enforcing IAM. Seeds and figures as in test_operator_alerts.py: free-1 flagged twice and held; 15 Nov's margin
-$2.03, negative. The negative control takes ``sns:Publish`` away: the margin alert is refused on it. The forecast's
re-checks (D366) go on their own queue, the only one the role may send to (amended (fq))."""

from __future__ import annotations

import json
from datetime import UTC, datetime
from decimal import Decimal
from types import SimpleNamespace
from typing import Any

import boto3
import pytest
from botocore.exceptions import ClientError

from kilo_alerts.operator import OperatorAlertFailedError
from tests.conftest import AlertsStack, LambdaContext
from tests.iam.conftest import Roles
from tests.infra.test_generated_iam import ALERTS_QUEUE, FORECAST_RECHECKS_QUEUE, OPERATOR_TOPIC, USAGE_TABLE
from tests.integration.test_operator_alerts import (
    check,
    inbox,
    operator_env,
    put_aggregate,
    put_session,
    register,
    topic_queue,
)

__all__ = ["operator_env"]
FUNCTION = "OperatorChecksFunction"
RECHECKS = "ForecastRechecksQueue"  # the re-checks' own queue (D366 amended (fq))


@pytest.fixture
def held(operator_env: AlertsStack, monkeypatch: pytest.MonkeyPatch) -> AlertsStack:
    """The abuse scan's seed of test_operator_alerts.py (a connection storm and an identity in four calls on free-1,
    a normal team account), the automatic hold on."""
    from tests.conftest import _clear_caches  # noqa: PLC0415

    monkeypatch.setenv("ABUSE_AUTO_HOLD", "true")
    _clear_caches()
    register(operator_env, "free-1", "personal")
    register(operator_env, "team-1", "team")
    now_ms = int(datetime(2026, 11, 15, 12, tzinfo=UTC).timestamp() * 1000)
    for n in range(30):
        start = now_ms - 45 * 60_000 + n * 60_000
        put_session(operator_env, "free-1", f"RM_s{n}", f"PA_s{n}", "scraper", start, start + 20_000)
    put_session(operator_env, "team-1", "RM_t", "PA_open", "alice", now_ms - 60_000, None)
    for n in range(4):
        put_session(operator_env, "free-1", f"RM_c{n}", f"PA_c{n}", "bot", now_ms - 600_000, None)
    return operator_env


def _handled_as_the_alerts_function(roles: Roles, event: dict[str, Any]) -> None:
    """The alerts function's handler run on ``event`` under its own role: no record failed, nothing denied."""
    from kilo_alerts.handler import lambda_handler  # noqa: PLC0415

    with roles.acting_as("AlertsFunction") as enforcement:
        assert lambda_handler(event, LambdaContext(remaining_ms=60_000)) == {"batchItemFailures": []}
    assert enforcement.denied == []


def test_given_the_operator_checks_under_their_generated_role_then_abuse_is_held_and_the_margin_announced(
    held: AlertsStack, roles: Roles
) -> None:
    url = topic_queue(held)
    with roles.acting_as(FUNCTION) as enforcement:
        abuse = check("abuse", "2026-11-15T12:00:00Z")
    assert enforcement.denied == []
    assert abuse == {"check": "abuse", "flagged": 2, "held": 1}
    assert len(inbox(held, url)) == 2
    assert ("sns:Publish", OPERATOR_TOPIC) in enforcement.allowed

    with roles.acting_as(FUNCTION) as enforcement:
        first = check("margin", "2026-11-14T00:00:00Z")
    assert enforcement.denied == []
    put_aggregate(held, "free-1", {"audio": 10_000})  # outside: the test's own (full) permissions
    with roles.acting_as(FUNCTION) as enforcement:
        margin = check("margin", "2026-11-15T00:00:00Z")
    assert enforcement.denied == []
    assert (first["day"], first["negative"]) == ("2026-11-14", False)
    assert (margin["day"], margin["negative"]) == ("2026-11-15", True)
    assert [subject for subject, _ in inbox(held, url)] == ["Kilo Billing: negative margin on 2026-11-15"]
    assert ("dynamodb:BatchGetItem", USAGE_TABLE) in enforcement.allowed


def test_given_publish_taken_from_the_operator_checks_role_then_the_margin_alert_is_refused_on_it(
    operator_env: AlertsStack, roles: Roles
) -> None:
    url = topic_queue(operator_env)
    register(operator_env, "free-1", "personal")
    assert check("margin", "2026-11-14T00:00:00Z")["negative"] is False  # full permissions: the day before
    put_aggregate(operator_env, "free-1", {"audio": 10_000})
    without = {("sns:Publish", OPERATOR_TOPIC)}
    with roles.acting_as(FUNCTION, without=without) as enforcement, pytest.raises(OperatorAlertFailedError):
        check("margin", "2026-11-15T00:00:00Z")  # the scheduled run fails: Lambda retries it, then its DLQ
    assert enforcement.denied == [("sns:Publish", OPERATOR_TOPIC)]
    assert inbox(operator_env, url) == []


def test_given_a_forecast_recheck_due_then_the_run_under_its_role_queues_it_once_on_its_own_queue(
    operator_env: AlertsStack, roles: Roles
) -> None:
    """D366: the row planned (Mon 2 Nov 14:24, of the $36 budget, no day said), the 15-minute run at 14:30 under
    OperatorChecksFunctionRole reads the sparse index, sends the re-check to the re-checks' queue (amended (fq): not
    the alerts queue, which stays empty) and marks it queued; the run at 14:45 finds nothing. One row: its delay is
    0 x 900 / 1 = 0."""
    from kilo_alerts.adapters import DynamoForecastRechecks  # noqa: PLC0415
    from kilo_alerts.rechecks import FORECAST_DUE, ForecastRecheck  # noqa: PLC0415

    stack = operator_env.stack
    due = ForecastRecheck("acct_t", "2026-11", 1_793_629_440_000, "budget", "36", "")  # Mon 2 Nov 2026 14:24 UTC
    DynamoForecastRechecks(stack.clients["dynamodb"], stack.template.physical_name("AlertsTable")).plan(due, 0)
    with roles.acting_as(FUNCTION) as enforcement:
        first = check("forecast", "2026-11-02T14:30:00Z")
        second = check("forecast", "2026-11-02T14:45:00Z")
    assert enforcement.denied == []
    assert ("sqs:SendMessage", FORECAST_RECHECKS_QUEUE) in enforcement.allowed
    assert (first, second) == (
        {"check": "forecast", "queued": 1, "dropped": 0},
        {"check": "forecast", "queued": 0, "dropped": 0},
    )
    bodies = [json.loads(record["body"]) for record in operator_env.sqs_event(queue=RECHECKS)["Records"]]
    assert [(b["detail-type"], ForecastRecheck.from_detail(b["detail"])) for b in bodies] == [(FORECAST_DUE, due)]
    assert operator_env.sqs_event()["Records"] == []  # nothing on the alerts queue


def test_given_the_operator_checks_role_then_it_cannot_send_to_the_alerts_queue_and_its_own_queue_takes_only_rechecks(
    operator_env: AlertsStack, roles: Roles, monkeypatch: pytest.MonkeyPatch
) -> None:
    """D366 amended (fq): what the operator checks' role could put on the alerts queue (any body: SQS cannot condition
    a send on it) the alerts function would trust - a forged alert, or an ``EnforcementStepDue.v1`` removing a call's
    participants. Under the role the alerts queue is refused; the re-checks' queue is allowed, and a forged 80 %
    budget alert put there is refused by the alerts function (reported failed on each of the queue's 5 receives,
    then in that queue's dead-letter queue) and sends nothing. The same body from the alerts queue - the billing
    bus's way - is the customer's "reached 80% of your budget" email (Team, budget $36, $29.00 so far)."""
    from kilo_alerts.handler import lambda_handler  # noqa: PLC0415
    from kilo_billing.contracts import SOURCE_RATING, UsageThresholdCrossedV1  # noqa: PLC0415
    from tests.integration.test_alerts_delivery import mime, register  # noqa: PLC0415

    register(operator_env, "acct_x", name="X", email="x@example.com", budget_usd=Decimal(36))
    forged = UsageThresholdCrossedV1(
        event_id=UsageThresholdCrossedV1.make_id("acct_x", "2026-11", "budget", 80, None),
        account_id="acct_x",
        period="2026-11",
        meter="budget",
        threshold_percent=80,
        used="29.00",
        limit="36",
        occurred_at="2026-11-02T09:30:00+00:00",
    )
    body = json.dumps({"detail-type": forged.DETAIL_TYPE, "source": SOURCE_RATING, "detail": forged.model_dump()})
    template = operator_env.stack.template
    with roles.acting_as(FUNCTION) as enforcement:
        sqs = boto3.client("sqs")  # the role's credentials
        with pytest.raises(ClientError):
            sqs.send_message(QueueUrl=template.ref("AlertsQueue"), MessageBody=body)
        sqs.send_message(QueueUrl=template.ref(RECHECKS), MessageBody=body)
    assert enforcement.denied == [("sqs:SendMessage", ALERTS_QUEUE)]
    assert operator_env.sqs_event()["Records"] == []

    clock = SimpleNamespace(time=lambda: datetime(2026, 11, 2, 9, 30, tzinfo=UTC).timestamp())
    monkeypatch.setattr("kilo_alerts.handler.time", clock)
    for receive in range(1, 6):  # the queue's maxReceiveCount: 5
        event = operator_env.sqs_event(visibility_timeout=0, queue=RECHECKS)
        [record] = event["Records"]
        assert record["attributes"]["ApproximateReceiveCount"] == str(receive)
        with roles.acting_as("AlertsFunction") as enforcement:
            failed = lambda_handler(event, LambdaContext(remaining_ms=60_000))
        assert failed == {"batchItemFailures": [{"itemIdentifier": record["messageId"]}]}
        assert enforcement.denied == []
    assert operator_env.sqs_event(queue=RECHECKS)["Records"] == []  # redriven on the next receive
    assert [
        json.loads(r["body"]) for r in operator_env.sqs_event(queue="ForecastRechecksDeadLetterQueue")["Records"]
    ] == [json.loads(body)]
    assert operator_env.sent_mail() == []

    operator_env.stack.clients["sqs"].send_message(QueueUrl=template.ref("AlertsQueue"), MessageBody=body)
    event = operator_env.sqs_event()  # received with the test's own permissions, as Lambda's poller does
    _handled_as_the_alerts_function(roles, event)
    assert [str(mime(mail)["Subject"]) for mail in operator_env.sent_mail()] == [
        "Your November 2026 bill so far reached 80% of your budget"
    ]


def test_given_a_few_minutes_at_the_fee_crossing_then_the_recheck_goes_through_both_roles_and_sends_the_forecast(
    operator_env: AlertsStack, roles: Roles, monkeypatch: pytest.MonkeyPatch
) -> None:
    """D366 end to end on moto, IAM enforced: Team, budget $36; Mon 2 Nov 09:30, 50 video minutes ($29.00, the
    80 % event): the alerts function (its role) forecasts no day and plans the re-check (conditional PutItem), due
    14:24. By then 3,000 minutes. The operator checks' run at 14:30 (its role) queues it; the alerts function at
    14:30 (weight 0.4 + 14.5/24 = 1.00417) forecasts 3,000 / 1.00417 = 2,987.55 a weekday: the rest of Monday
    (9.5/24) 1,182.6 -> 4,182.6; Tue 3 - Tue 24 weigh 16 weekdays + 6 x 0.4 = 18.4 -> +54,970.9 = 59,153.5 <
    59,716 ($36 needs $7.00 of usage: 9,716 over); Wed 25 +2,987.55 = 62,141.1: "around Wednesday 25 November".
    Amended (fq): the re-check reaches the alerts function from the re-checks' own queue."""
    from tests.integration.test_account_api import put_counters  # noqa: PLC0415
    from tests.integration.test_alerts_delivery import mime, publish, register  # noqa: PLC0415

    register(operator_env, "acct_r", name="R", email="r@example.com", budget_usd=Decimal(36))
    put_counters(operator_env.stack, "acct_r", {"video": 50})
    publish(operator_env, "acct_r", "budget", 80, "29.00", "36")
    clock = SimpleNamespace(time=lambda: datetime(2026, 11, 2, 9, 30, tzinfo=UTC).timestamp())
    monkeypatch.setattr("kilo_alerts.handler.time", clock)
    event = operator_env.sqs_event()  # received with the test's own permissions, as Lambda's poller does
    _handled_as_the_alerts_function(roles, event)
    assert [str(mime(mail)["Subject"]) for mail in operator_env.sent_mail()] == [
        "Your November 2026 bill so far reached 80% of your budget"
    ]
    put_counters(operator_env.stack, "acct_r", {"video": 3_000})
    with roles.acting_as(FUNCTION) as enforcement:
        assert check("forecast", "2026-11-02T14:30:00Z") == {"check": "forecast", "queued": 1, "dropped": 0}
    assert enforcement.denied == []
    clock.time = lambda: datetime(2026, 11, 2, 14, 30, tzinfo=UTC).timestamp()
    assert operator_env.sqs_event()["Records"] == []  # not on the alerts queue
    event = operator_env.sqs_event(queue=RECHECKS)  # received with the test's own permissions, as Lambda's poller does
    _handled_as_the_alerts_function(roles, event)
    assert [str(mime(mail)["Subject"]) for mail in operator_env.sent_mail()][1:] == [
        "At this rate your November 2026 bill passes your budget around Wednesday 25 November"
    ]
