"""The bounce handler under its generated role (AlertsBouncesFunctionRole), moto enforcing IAM (D400): SES's
permanent bounce (AWS's published example with our account tag, tests/fixtures/ses) marks the address with the one
action the role needs, a conditional ``PutItem`` on the alerts table. The negative control takes that grant away:
the record fails (redelivered, then dead-lettered) and nothing is marked."""

from __future__ import annotations

from tests.conftest import LambdaContext, Stack
from tests.iam.conftest import Roles
from tests.infra.test_generated_iam import ALERTS_QUEUE, ALERTS_TABLE
from tests.integration.test_alerts_bounces import FIXTURES, bounces, mark, record, report_of

__all__ = ["bounces"]
FUNCTION = "AlertsBouncesFunction"


def test_given_a_permanent_bounce_under_the_bounce_handlers_role_then_the_address_is_marked_with_only_putitem(
    bounces: Stack, roles: Roles
) -> None:
    from kilo_alerts.bounce_handler import lambda_handler  # noqa: PLC0415

    body = (FIXTURES / "bounce_permanent.json").read_text()
    with roles.acting_as(FUNCTION) as enforcement:
        assert lambda_handler({"Records": [record(body, "m-1")]}, LambdaContext()) == {"batchItemFailures": []}
    assert enforcement.denied == []
    assert set(enforcement.allowed) == {("dynamodb:PutItem", ALERTS_TABLE)}
    marked = mark(bounces)
    assert marked is not None
    assert marked["why"] == {"S": "bounce"}


def test_given_putitem_taken_from_the_bounce_handlers_role_then_the_report_fails_and_nothing_is_marked(
    bounces: Stack, roles: Roles
) -> None:
    from kilo_alerts.bounce_handler import lambda_handler  # noqa: PLC0415

    body = (FIXTURES / "bounce_permanent.json").read_text()
    # the role's only inline grant taken away; a read it never makes kept so the policy is not empty (IAM refuses one)
    without, unused = {("dynamodb:PutItem", ALERTS_TABLE)}, [("dynamodb:GetItem", ALERTS_TABLE)]
    with roles.acting_as(FUNCTION, without=without, extra=unused) as enforcement:
        failed = lambda_handler({"Records": [record(body, "m-1")]}, LambdaContext())
    assert failed == {"batchItemFailures": [{"itemIdentifier": "m-1"}]}
    assert enforcement.denied == [("dynamodb:PutItem", ALERTS_TABLE)]
    assert mark(bounces) is None


def test_given_a_bounce_of_a_tagged_email_under_the_bounce_handlers_role_then_its_record_is_updated_with_updateitem(
    bounces: Stack, roles: Roles
) -> None:
    """D408: the bounced email's own record (sent as SES's message id) made undeliverable needs ``UpdateItem`` on the
    alerts table, besides the mark's ``PutItem``; nothing else."""
    from kilo_alerts.bounce_handler import lambda_handler  # noqa: PLC0415

    table = bounces.template.physical_name("AlertsTable")
    sk = "DELIVERY#2026-11#allowance_threshold#video:80#email"
    bounces.clients["dynamodb"].put_item(
        TableName=table,
        Item={
            "pk": {"S": "ACCOUNT#acct_1"}, "sk": {"S": sk}, "status": {"S": "sent"}, "detail": {"S": "ses-1"},
            "message_id": {"S": "ses-1"},
        },
    )  # fmt: skip
    body = report_of("bounce_permanent.json", "ses-1")
    with roles.acting_as(FUNCTION) as enforcement:
        assert lambda_handler({"Records": [record(body, "m-1")]}, LambdaContext()) == {"batchItemFailures": []}
    assert enforcement.denied == []
    assert set(enforcement.allowed) == {("dynamodb:PutItem", ALERTS_TABLE), ("dynamodb:UpdateItem", ALERTS_TABLE)}
    item = bounces.clients["dynamodb"].get_item(TableName=table, Key={"pk": {"S": "ACCOUNT#acct_1"}, "sk": {"S": sk}})
    assert item["Item"]["status"] == {"S": "undeliverable"}


def test_given_a_required_alerts_email_bouncing_under_the_bounce_handlers_role_then_its_sms_reopens_and_its_event_goes_back(
    bounces: Stack, roles: Roles
) -> None:
    """D408: a required alert's bounced email (its record keeps the event): the SMS record skipped as not chosen is
    reopened (a conditional ``UpdateItem`` to ``retry``; the role deletes nothing, D422) and the event sent to the
    alerts queue (``sqs:SendMessage``), besides the mark and the record's updates - exactly the grants the role
    has."""
    from kilo_alerts.bounce_handler import lambda_handler  # noqa: PLC0415

    table = bounces.template.physical_name("AlertsTable")
    dynamodb = bounces.clients["dynamodb"]
    delivery = "DELIVERY#2026-11#allowance_threshold#video:80"
    replay = '{"detail":{"account_id":"acct_1"},"detail-type":"PaymentFailed.v1"}'
    dynamodb.put_item(
        TableName=table,
        Item={
            "pk": {"S": "ACCOUNT#acct_1"}, "sk": {"S": f"{delivery}#email"}, "status": {"S": "sent"},
            "detail": {"S": "ses-1"}, "message_id": {"S": "ses-1"}, "replay": {"S": replay},
        },
    )  # fmt: skip
    dynamodb.put_item(
        TableName=table,
        Item={
            "pk": {"S": "ACCOUNT#acct_1"}, "sk": {"S": f"{delivery}#sms"}, "status": {"S": "skipped"},
            "detail": {"S": "not chosen for this alert"},
        },
    )  # fmt: skip
    body = report_of("bounce_permanent.json", "ses-1")
    with roles.acting_as(FUNCTION) as enforcement:
        assert lambda_handler({"Records": [record(body, "m-1")]}, LambdaContext()) == {"batchItemFailures": []}
    assert enforcement.denied == []
    assert set(enforcement.allowed) == {
        ("dynamodb:PutItem", ALERTS_TABLE),
        ("dynamodb:UpdateItem", ALERTS_TABLE),
        ("sqs:SendMessage", ALERTS_QUEUE),
    }
    queue = bounces.template.ref("AlertsQueue")
    [message] = bounces.clients["sqs"].receive_message(QueueUrl=queue, MaxNumberOfMessages=10)["Messages"]
    assert message["Body"] == replay
    sms = dynamodb.get_item(TableName=table, Key={"pk": {"S": "ACCOUNT#acct_1"}, "sk": {"S": f"{delivery}#sms"}})
    assert (sms["Item"]["status"], sms["Item"]["detail"]) == (
        {"S": "retry"},
        {"S": "not chosen for this alert; reopened: the email bounced, the event is sent again"},
    )
