"""The bounce handler on moto (D400): SES's bounce and complaint records (AWS's published examples with our account
tag, tests/fixtures/ses) as the bounces queue hands them to the function, marking the address in the template's
alerts table; a redelivery marks nothing again; a record not ours is left to the dead-letter path."""

from __future__ import annotations

import hashlib
import json
from pathlib import Path
from typing import Any

import pytest

from tests.conftest import LambdaContext, Stack, _clear_caches
from tests.integration.test_ingest_livekit import metrics_in

FIXTURES = Path(__file__).parents[1] / "fixtures" / "ses"
REF = "erased-" + hashlib.sha256(b"acct_1\x00recipient@example.com").hexdigest()[:16]


def record(body: str, message_id: str) -> dict[str, Any]:
    return {
        "messageId": message_id,
        "receiptHandle": f"rh-{message_id}",
        "body": body,
        "attributes": {"ApproximateReceiveCount": "1"},
        "messageAttributes": {},
        "md5OfBody": hashlib.md5(body.encode()).hexdigest(),
        "eventSource": "aws:sqs",
        "eventSourceARN": "arn:aws:sqs:us-east-1:123456789012:kilo-billing-alerts-bounces-test",
        "awsRegion": "us-east-1",
    }


@pytest.fixture
def bounces(stack: Stack, monkeypatch: pytest.MonkeyPatch) -> Stack:
    for key, value in stack.template.function_environment("AlertsBouncesFunction").items():
        monkeypatch.setenv(key, value)
    _clear_caches()
    return stack


def mark(stack: Stack, account: str = "acct_1", ref: str = REF) -> dict[str, Any] | None:
    item = stack.clients["dynamodb"].get_item(
        TableName=stack.template.physical_name("AlertsTable"),
        Key={"pk": {"S": f"ACCOUNT#{account}"}, "sk": {"S": f"EMAILMARK#{ref}"}},
    )
    found: dict[str, Any] | None = item.get("Item")
    return found


def test_given_a_permanent_bounce_then_the_address_is_marked_once_and_a_redelivery_changes_nothing(
    bounces: Stack, capsys: pytest.CaptureFixture[str]
) -> None:
    from kilo_alerts.bounce_handler import lambda_handler  # noqa: PLC0415

    body = (FIXTURES / "bounce_permanent.json").read_text()
    capsys.readouterr()
    assert lambda_handler({"Records": [record(body, "m-1")]}, LambdaContext()) == {"batchItemFailures": []}
    assert metrics_in(capsys.readouterr().out).get("EmailsMarkedUndeliverable") == 1
    first = mark(bounces)
    assert first is not None
    assert (first["why"], first["detail"], first["at_ms"]) == (
        {"S": "bounce"},
        {"S": "Permanent/General 5.1.1"},
        {"N": "1501893662669"},
    )
    assert "recipient@example.com" not in json.dumps(first)  # the address by its pseudonym only (D203)

    # the same report again (SQS at least once), then a complaint about the same address: the first mark is kept
    complaint = (FIXTURES / "complaint.json").read_text()
    again = {"Records": [record(body, "m-2"), record(complaint, "m-3")]}
    assert lambda_handler(again, LambdaContext()) == {"batchItemFailures": []}
    assert metrics_in(capsys.readouterr().out).get("EmailsMarkedUndeliverable") is None
    assert mark(bounces) == first


def test_given_a_transient_bounce_and_a_report_not_ours_then_nothing_is_marked_and_only_the_stranger_fails(
    bounces: Stack,
) -> None:
    from kilo_alerts.bounce_handler import lambda_handler  # noqa: PLC0415

    transient = json.loads((FIXTURES / "bounce_permanent.json").read_text())
    transient["bounce"].update(bounceType="Transient", bounceSubType="MailboxFull")
    stranger = json.loads((FIXTURES / "complaint.json").read_text())
    del stranger["mail"]["tags"]["kilo-account"]
    event = {"Records": [record(json.dumps(transient), "m-1"), record(json.dumps(stranger), "m-2")]}

    assert lambda_handler(event, LambdaContext()) == {"batchItemFailures": [{"itemIdentifier": "m-2"}]}
    assert mark(bounces) is None


def test_given_ses_validating_the_topic_then_its_message_is_acknowledged_and_only_other_text_fails(
    bounces: Stack, capsys: pytest.CaptureFixture[str]
) -> None:
    """SES publishes this plain text to the topic when the event destination is created; raw delivery hands it to the
    queue as it is. Failed, it would reach the dead-letter queue and fire its alarm on every deployment that creates
    the destination. Only that exact text is acknowledged."""
    from kilo_alerts.bounce_handler import lambda_handler  # noqa: PLC0415

    validated = "Successfully validated SNS topic for Amazon SES event publishing."
    event = {"Records": [record(validated, "m-1"), record("Successfully validated SNS topic", "m-2")]}
    capsys.readouterr()

    assert lambda_handler(event, LambdaContext()) == {"batchItemFailures": [{"itemIdentifier": "m-2"}]}
    assert metrics_in(capsys.readouterr().out).get("EmailsMarkedUndeliverable") is None
    assert mark(bounces) is None
