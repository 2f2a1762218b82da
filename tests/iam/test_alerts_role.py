"""Alerts under its generated role (AlertsFunctionRole): a threshold event through the template's rule to the alerts
queue (the test's own permissions), then the alerts handler claims it in the alerts table, reads the profile, sends
the email through SES v2 (the sender's identity, the alerts configuration set) and the SMS through SNS - moto
enforcing IAM. The negative control takes the configuration set's grant away: the email is refused on it."""

from __future__ import annotations

from datetime import UTC, datetime
from decimal import Decimal
from types import SimpleNamespace

import boto3
import botocore.exceptions
import pytest

from tests.conftest import AlertsStack, LambdaContext
from tests.iam.conftest import Roles
from tests.infra.test_generated_iam import (
    ALERTS_TABLE,
    OPERATOR_TOPIC,
    SES_CONFIGURATION_SET,
    SES_SENDER,
    USAGE_TABLE,
)
from tests.integration.test_account_api import put_counters
from tests.integration.test_alerts_delivery import mime, publish, register

FUNCTION = "AlertsFunction"


def test_given_alerts_under_its_generated_role_then_the_email_and_the_sms_are_sent(
    alerts_stack: AlertsStack, roles: Roles
) -> None:
    from kilo_alerts.handler import lambda_handler  # noqa: PLC0415

    register(alerts_stack, "acct_1", name="Ada", email="ada@example.com", phone="+14155550100", phone_verified=True)
    publish(alerts_stack, "acct_1", "video", 80, "48000", "60000")
    event = alerts_stack.sqs_event()
    assert len(event["Records"]) == 1
    with roles.acting_as(FUNCTION) as enforcement:
        answer = lambda_handler(event, LambdaContext(remaining_ms=60_000))
    assert enforcement.denied == []
    assert answer == {"batchItemFailures": []}
    assert [mime(mail)["To"] for mail in alerts_stack.sent_mail()] == ["ada@example.com"]
    assert [phone for phone, _ in alerts_stack.sent_sms()] == ["+14155550100"]
    assert {
        ("ses:SendEmail", SES_SENDER),
        ("ses:SendEmail", SES_CONFIGURATION_SET),
        ("sns:Publish", "*"),
        ("dynamodb:UpdateItem", ALERTS_TABLE),
        ("dynamodb:BatchGetItem", USAGE_TABLE),
    } <= enforcement.allowed


def test_given_the_configuration_set_taken_from_the_alerts_role_then_the_email_is_refused_on_it(
    alerts_stack: AlertsStack, roles: Roles
) -> None:
    from kilo_alerts.handler import lambda_handler  # noqa: PLC0415

    register(alerts_stack, "acct_1", name="Ada", email="ada@example.com")
    publish(alerts_stack, "acct_1", "video", 80, "48000", "60000")
    event = alerts_stack.sqs_event()
    with roles.acting_as(FUNCTION, without={("ses:SendEmail", SES_CONFIGURATION_SET)}) as enforcement:
        lambda_handler(event, LambdaContext(remaining_ms=60_000))
    assert set(enforcement.denied) == {("ses:SendEmail", SES_CONFIGURATION_SET)}
    assert alerts_stack.sent_mail() == []


def test_given_a_removal_step_under_its_generated_role_then_the_enforcements_turn_is_taken_and_ended(
    alerts_stack: AlertsStack, roles: Roles
) -> None:
    """D182: the removal step runs in the account's turn (a conditional put, then a conditional delete)."""
    import boto3  # noqa: PLC0415

    from kilo_alerts.adapters import SqsRemovalScheduler  # noqa: PLC0415
    from kilo_alerts.handler import lambda_handler  # noqa: PLC0415

    register(alerts_stack, "acct_1", name="Ada", email="ada@example.com")  # no hard limit: nothing to remove
    SqsRemovalScheduler(alerts_stack.stack.clients["sqs"], alerts_stack.queue_url).schedule_removal(
        "acct_1", "2026-11", 0, "50"
    )
    event = alerts_stack.sqs_event()
    with roles.acting_as(FUNCTION) as enforcement:
        answer = lambda_handler(event, LambdaContext(remaining_ms=60_000))
    assert enforcement.denied == []
    assert answer == {"batchItemFailures": []}
    assert {("dynamodb:PutItem", ALERTS_TABLE), ("dynamodb:DeleteItem", ALERTS_TABLE)} <= enforcement.allowed
    table = boto3.resource("dynamodb").Table(alerts_stack.stack.template.physical_name("AlertsTable"))
    kept = {str(item["sk"]): item.get("status") for item in table.scan()["Items"]}
    assert kept == {"ENFORCEMENT#2026-11@50#remove#-#-": "lifted"}  # the turn ended: no item left for it


def test_given_a_budget_event_under_its_generated_role_then_the_forecast_reads_the_month_and_is_sent(
    alerts_stack: AlertsStack, roles: Roles, monkeypatch: pytest.MonkeyPatch
) -> None:
    # the forecast's reads (D148): the ledger's forecast rows (Query on the alerts table), the profile, rating's
    # counters (BatchGetItem) and open sessions (the usage table's index). Figures as in test_alerts_delivery's
    # forecast test: $80.00 of a $100 hard limit by Fri 20 Nov 10:00 (120,834 video minutes): Wednesday 25 November
    from kilo_alerts.handler import lambda_handler  # noqa: PLC0415

    register(alerts_stack, "acct_f", name="F", email="f@example.com", budget_usd=Decimal(100),
             hard_limit_usd=Decimal(100))  # fmt: skip
    put_counters(alerts_stack.stack, "acct_f", {"video": 120_834})
    publish(alerts_stack, "acct_f", "budget", 80, "80", "100")
    handled_at = datetime(2026, 11, 20, 10, tzinfo=UTC).timestamp()  # the event's day: the forecast's clock
    monkeypatch.setattr("kilo_alerts.handler.time", SimpleNamespace(time=lambda: handled_at))
    event = alerts_stack.sqs_event()
    with roles.acting_as(FUNCTION) as enforcement:
        answer = lambda_handler(event, LambdaContext(remaining_ms=60_000))
    assert enforcement.denied == []
    assert answer == {"batchItemFailures": []}
    subjects = sorted(str(mime(mail)["Subject"]) for mail in alerts_stack.sent_mail())
    assert subjects == [
        "At this rate your November 2026 bill passes your hard limit around Wednesday 25 November",
        "Your November 2026 bill so far reached 80% of your budget",
    ]
    assert {("dynamodb:Query", ALERTS_TABLE), ("dynamodb:BatchGetItem", USAGE_TABLE)} <= enforcement.allowed


# --- sns:Publish on "*": every topic of the account, the operator topic among them (D382) -------------------------


def test_given_an_operator_alert_under_the_alerts_role_then_it_reaches_the_operator_topic(
    alerts_stack: AlertsStack, roles: Roles
) -> None:
    from kilo_alerts import dependencies  # noqa: PLC0415

    with roles.acting_as(FUNCTION) as enforcement:
        operator = dependencies.alerts().ports.operator
        assert operator is not None
        operator.notifier.notify("Unattributed usage", "room RM_9: 12 minutes without an account")
    assert enforcement.denied == []
    assert ("sns:Publish", OPERATOR_TOPIC) in enforcement.allowed


def _publish_to_another_topic(roles: Roles, function: str) -> tuple[bool, list[tuple[str, str]]]:
    arn = boto3.client("sns").create_topic(Name="some-other-teams-topic")["TopicArn"]
    with roles.acting_as(function) as enforcement:
        try:
            boto3.client("sns").publish(TopicArn=arn, Message="not an alert")
            published = True
        except botocore.exceptions.ClientError:
            published = False
    return published, enforcement.denied


def test_given_the_alerts_role_then_another_topic_of_the_account_takes_a_publish_too_but_not_under_the_account_api_role(
    alerts_stack: AlertsStack, roles: Roles
) -> None:
    """What is granted, exactly: the comment and D37 said "no topic"; the account API's role (D160's Deny) is the
    control. Tightening it would turn this test around (D382)."""
    assert _publish_to_another_topic(roles, FUNCTION) == (True, [])
    published, denied = _publish_to_another_topic(roles, "AccountApiFunction")
    assert not published
    assert [action for action, _ in denied] == ["sns:Publish"]
