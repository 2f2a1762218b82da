"""The bounce handler on moto (D400): SES's bounce and complaint records (AWS's published examples with our account
tag, tests/fixtures/ses) as the bounces queue hands them to the function, marking the address in the template's
alerts table; a redelivery marks nothing again; a record not ours is left to the dead-letter path."""

from __future__ import annotations

import hashlib
import json
from datetime import UTC, datetime
from pathlib import Path
from typing import Any, Final

import boto3
import pytest

from kilo_alerts.model import Channel, Outcome, Reason
from kilo_billing.account_store import DynamoAccountDirectory
from kilo_billing.accounts import AccountProfile
from kilo_billing.contracts import SOURCE_INVOICING, PaymentFailedV1
from kilo_billing.publisher import EventBridgePublisher
from kilo_billing.rating import TierChange
from tests.conftest import AlertsStack, LambdaContext, Stack, _clear_caches
from tests.integration.test_alerts_delivery import publish, records, register, run
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

    # the same report again (SQS at least once): the first mark is kept
    again = {"Records": [record(body, "m-2")]}
    assert lambda_handler(again, LambdaContext()) == {"batchItemFailures": []}
    assert metrics_in(capsys.readouterr().out).get("EmailsMarkedUndeliverable") is None
    assert mark(bounces) == first

    # a complaint about the same address (the example's, within 30 days of the bounce): the stronger mark replaces
    # the bounce's (D424), counted new
    complaint = (FIXTURES / "complaint.json").read_text()
    assert lambda_handler({"Records": [record(complaint, "m-3")]}, LambdaContext()) == {"batchItemFailures": []}
    assert metrics_in(capsys.readouterr().out).get("EmailsMarkedUndeliverable") == 1
    replaced = mark(bounces)
    assert replaced is not None
    assert replaced["why"] == {"S": "complaint"}


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


# ``kilo-delivery`` of the 80 % video alert of 2026-11: base64url, unpadded, of "2026-11#allowance_threshold#video:80"
# (worked with the standard library's base64, not our encoder)
DELIVERY_80: Final = "MjAyNi0xMSNhbGxvd2FuY2VfdGhyZXNob2xkI3ZpZGVvOjgw"


def report_of(fixture: str, message_id: str, delivery: str = DELIVERY_80, **bounce: str) -> str:
    """AWS's example report, about the email SES took as ``message_id`` and tagged as our SendEmail tags it."""
    report = json.loads((FIXTURES / fixture).read_text())
    report["mail"]["messageId"] = message_id
    report["mail"]["tags"]["kilo-delivery"] = [delivery]
    report.get("bounce", {}).update(bounce)
    return json.dumps(report)


def test_given_the_first_email_to_an_address_bounces_then_its_own_record_becomes_undeliverable_once(
    alerts_stack: AlertsStack, bounces: Stack
) -> None:
    """D408: the first email to an address SES takes (recorded ``sent``, its message id kept apart on the record)
    and reports bounced for good afterwards: the bounce handler turns that record undeliverable (``bounced``), found
    by the email's ``kilo-delivery`` tag and checked by SES's message id - a report naming another email's id changes
    nothing, nor does the same report redelivered."""
    from kilo_alerts.adapters import DynamoDeliveryLedger  # noqa: PLC0415
    from kilo_alerts.bounce_handler import lambda_handler  # noqa: PLC0415

    register(alerts_stack, "acct_1", name="Ada", email="recipient@example.com")
    publish(alerts_stack, "acct_1", "video", 80, "48000", "60000")
    assert run(alerts_stack) == {"batchItemFailures": []}
    [mail] = alerts_stack.sent_mail()
    sent = records(alerts_stack, "acct_1")["email"]
    assert (sent["status"], sent["detail"], sent["message_id"]) == ("sent", mail.id, mail.id)

    # a report of another email SES took (an id not this record's): the record is left as it is
    other = report_of("bounce_permanent.json", "another-email")
    assert lambda_handler({"Records": [record(other, "m-0")]}, LambdaContext()) == {"batchItemFailures": []}
    assert records(alerts_stack, "acct_1")["email"] == sent

    report = report_of("bounce_permanent.json", mail.id)
    assert lambda_handler({"Records": [record(report, "m-1")]}, LambdaContext()) == {"batchItemFailures": []}
    bounced = records(alerts_stack, "acct_1")["email"]
    assert (bounced["status"], bounced["reason"]) == ("undeliverable", "bounced")
    assert bounced["detail"] == (
        "undeliverable: the address bounced for good or complained (bounce: Permanent/General 5.1.1); "
        f"SES took it as {mail.id}, then it bounced"
    )
    assert {k: v for k, v in bounced.items() if k not in ("status", "reason", "detail")} == {
        k: v for k, v in sent.items() if k not in ("status", "reason", "detail")
    }
    ledger = DynamoDeliveryLedger(
        alerts_stack.stack.clients["dynamodb"], alerts_stack.stack.template.physical_name("AlertsTable")
    )
    [email] = [d for d in ledger.deliveries("acct_1", "2026-11") if d.channel is Channel.EMAIL]
    assert (email.outcome, email.reason) == (Outcome.UNDELIVERABLE, Reason.BOUNCED)

    assert lambda_handler({"Records": [record(report, "m-2")]}, LambdaContext()) == {"batchItemFailures": []}
    assert records(alerts_stack, "acct_1")["email"] == bounced


def test_given_a_complaint_about_an_email_then_its_record_stays_sent_since_it_reached_the_mailbox(
    alerts_stack: AlertsStack, bounces: Stack
) -> None:
    """D408: a complaint marks the address (D400) but the email it is about was delivered: its record stays
    ``sent``."""
    from kilo_alerts.bounce_handler import lambda_handler  # noqa: PLC0415

    register(alerts_stack, "acct_1", name="Ada", email="recipient@example.com")
    publish(alerts_stack, "acct_1", "video", 80, "48000", "60000")
    assert run(alerts_stack) == {"batchItemFailures": []}
    [mail] = alerts_stack.sent_mail()
    sent = records(alerts_stack, "acct_1")["email"]

    complaint = report_of("complaint.json", mail.id)
    assert lambda_handler({"Records": [record(complaint, "m-1")]}, LambdaContext()) == {"batchItemFailures": []}
    assert records(alerts_stack, "acct_1")["email"] == sent
    assert mark(bounces) is not None


def test_given_a_bounce_mark_30_days_old_then_a_new_permanent_bounce_replaces_it_and_a_younger_one_does_not(
    bounces: Stack,
) -> None:
    """D409: a bounce's mark acts 30 days; a permanent bounce reported once it has lapsed marks the address again
    (counted new), one reported before is a no-op. Times by hand: the example's 2017-08-05T00:41:02.669Z is
    1501893662669 ms; 30 days later, 2017-09-04T00:41:02.669Z, is 1501893662669 + 2592000000 = 1504485662669."""
    from kilo_alerts.bounce_handler import lambda_handler  # noqa: PLC0415

    first = (FIXTURES / "bounce_permanent.json").read_text()
    assert lambda_handler({"Records": [record(first, "m-1")]}, LambdaContext()) == {"batchItemFailures": []}
    younger = report_of("bounce_permanent.json", "m", timestamp="2017-09-04T00:41:02.668Z")
    assert lambda_handler({"Records": [record(younger, "m-2")]}, LambdaContext()) == {"batchItemFailures": []}
    kept = mark(bounces)
    assert kept is not None
    assert kept["at_ms"] == {"N": "1501893662669"}

    lapsed = report_of("bounce_permanent.json", "m", timestamp="2017-09-04T00:41:02.669Z")
    assert lambda_handler({"Records": [record(lapsed, "m-3")]}, LambdaContext()) == {"batchItemFailures": []}
    again = mark(bounces)
    assert again is not None
    assert (again["why"], again["at_ms"]) == ({"S": "bounce"}, {"N": "1504485662669"})


def test_given_a_complaint_mark_a_year_old_then_a_later_bounce_keeps_it(bounces: Stack) -> None:
    """D409: a complaint's mark does not lapse: a bounce reported a year later (2018-08-05) leaves it."""
    from kilo_alerts.bounce_handler import lambda_handler  # noqa: PLC0415

    complaint = (FIXTURES / "complaint.json").read_text()
    assert lambda_handler({"Records": [record(complaint, "m-1")]}, LambdaContext()) == {"batchItemFailures": []}
    before = mark(bounces)
    later = report_of("bounce_permanent.json", "m", timestamp="2018-08-05T00:41:02.669Z")
    assert lambda_handler({"Records": [record(later, "m-2")]}, LambdaContext()) == {"batchItemFailures": []}
    assert mark(bounces) == before
    assert before is not None
    assert before["why"] == {"S": "complaint"}


# ``kilo-delivery`` of acct_p's failed-payment alert: base64url("2026-11#payment_failed#payment-failed:evt_acct_p")
DELIVERY_PAYMENT: Final = "MjAyNi0xMSNwYXltZW50X2ZhaWxlZCNwYXltZW50LWZhaWxlZDpldnRfYWNjdF9w"


def test_given_a_required_alerts_first_email_bounces_then_its_event_comes_back_and_one_sms_goes_instead(
    alerts_stack: AlertsStack, bounces: Stack
) -> None:
    """D408: a failed payment (a required alert, D180) the account chose email alone for, with a verified number:
    the email is sent, the SMS skipped as not chosen. SES reports the email bounced for good: the bounce handler
    makes the email's record undeliverable, reopens the SMS's and sends the event back to the alerts queue; its
    redelivery texts the verified number instead, as a later alert to the marked address would (D400). The report
    redelivered, and the event handled again, send nothing more."""
    from kilo_alerts.bounce_handler import lambda_handler as bounce_handler  # noqa: PLC0415
    from kilo_alerts.handler import lambda_handler  # noqa: PLC0415

    _failed_payment(alerts_stack)
    assert lambda_handler(alerts_stack.sqs_event(), LambdaContext(remaining_ms=60_000)) == {"batchItemFailures": []}
    [mail] = alerts_stack.sent_mail()
    first = records(alerts_stack, "acct_p")
    assert (first["email"]["status"], first["sms"]["status"], first["sms"]["detail"]) == (
        "sent",
        "skipped",
        "not chosen for this alert",
    )
    assert alerts_stack.sent_sms() == []

    report = report_of("bounce_permanent.json", mail.id, DELIVERY_PAYMENT)
    report = report.replace('"kilo-account": ["YWNjdF8x"]', '"kilo-account": ["YWNjdF9w"]')  # acct_p, by hand
    assert bounce_handler({"Records": [record(report, "m-1")]}, LambdaContext()) == {"batchItemFailures": []}
    assert bounce_handler({"Records": [record(report, "m-2")]}, LambdaContext()) == {"batchItemFailures": []}

    again = alerts_stack.sqs_event()
    assert len(again["Records"]) == 1, "the event was not sent back once"
    assert lambda_handler(again, LambdaContext(remaining_ms=60_000)) == {"batchItemFailures": []}
    assert lambda_handler(again, LambdaContext(remaining_ms=60_000)) == {"batchItemFailures": []}  # redelivered

    assert len(alerts_stack.sent_mail()) == 1  # no second email to the bounced address
    [(phone, sms)] = [(phone, text) for phone, text, *_ in alerts_stack.sent_sms()]
    assert (phone, sms) == (
        "+14155550123",
        "Kilo: your payment of $29.00 was declined. Pay the invoice or update your card in your Kilo dashboard. "
        "Reply STOP to opt out",
    )
    after = records(alerts_stack, "acct_p")
    assert (after["email"]["status"], after["email"]["reason"]) == ("undeliverable", "bounced")
    assert "replay" not in after["email"]
    assert after["sms"]["status"] == "sent"
    assert str(after["sms"]["detail"]).endswith(
        "; sent instead of the email: the address bounced for good or complained"
    )


def test_given_a_marked_address_then_the_operator_clears_its_mark_by_the_cli_and_a_second_clear_finds_none(
    bounces: Stack, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    """D409: ``kilo-billing alerts clear-mark ACCOUNT ADDRESS`` deletes the mark the bounce handler wrote (the
    address as the account spells it, capitals and all: the key is the pseudonym of it casefolded, ``REF`` by hand),
    and takes the address off SES's account-level suppression list (D423: ``DeleteSuppressedDestination``; moto
    does not implement it, so SES v2 is botocore's Stubber, validating the request against the service model: removed
    the first time, ``NotFoundException`` the second)."""
    from botocore.stub import Stubber  # noqa: PLC0415

    from kilo_alerts.bounce_handler import lambda_handler  # noqa: PLC0415
    from kilo_billing import aws  # noqa: PLC0415
    from kilo_billing_cli.main import main  # noqa: PLC0415

    ses = boto3.client("sesv2", region_name="us-east-1")
    stubber = Stubber(ses)
    stubber.add_response("delete_suppressed_destination", {}, {"EmailAddress": "Recipient@Example.com"})
    stubber.add_client_error(
        "delete_suppressed_destination", "NotFoundException", http_status_code=404,
        expected_params={"EmailAddress": "Recipient@Example.com"},
    )  # fmt: skip
    stubber.activate()
    made = aws.client
    monkeypatch.setattr(aws, "client", lambda service, *a, **k: ses if service == "sesv2" else made(service, *a, **k))

    body = (FIXTURES / "bounce_permanent.json").read_text()
    assert lambda_handler({"Records": [record(body, "m-1")]}, LambdaContext()) == {"batchItemFailures": []}
    assert mark(bounces) is not None
    table = bounces.template.physical_name("AlertsTable")
    capsys.readouterr()

    assert main(["alerts", "clear-mark", "acct_1", "Recipient@Example.com", "--alerts-table", table]) == 0
    assert mark(bounces) is None
    first = capsys.readouterr().out
    assert "the address's mark cleared" in first
    assert "the address taken off SES's suppression list" in first
    assert main(["alerts", "clear-mark", "acct_1", "Recipient@Example.com", "--alerts-table", table]) == 0
    second = capsys.readouterr().out
    assert "the address has no mark" in second
    assert "the address is not on SES's suppression list" in second
    stubber.assert_no_pending_responses()


def _failed_payment(alerts_stack: AlertsStack, chosen: tuple[str, ...] = ("email",)) -> None:
    """acct_p (verified number) and its failed payment on the alerts queue: the required alert of D408's story."""
    directory = DynamoAccountDirectory(
        alerts_stack.stack.clients["dynamodb"], alerts_stack.stack.template.physical_name("UsageTable")
    )
    directory.register(
        AccountProfile(
            "acct_p", (TierChange(datetime(2026, 1, 1, tzinfo=UTC), "team"),), name="Ada",
            email="recipient@example.com", phone="+14155550123", phone_verified=True,
            alert_preferences=(("payment_failed", chosen),),
        )
    )  # fmt: skip
    event = PaymentFailedV1(
        event_id="payment-failed:evt_acct_p", account_id="acct_p", invoice_id="in_9", total="29",
        reason="payment_failed", hosted_url="", occurred_at="2026-11-03T09:00:00+00:00",
    )  # fmt: skip
    bus = alerts_stack.stack.template.physical_name("BillingEventBus")
    EventBridgePublisher(boto3.client("events"), bus, SOURCE_INVOICING).publish(event.DETAIL_TYPE, event.model_dump())


def _payment_report(message_id: str) -> str:
    report = report_of("bounce_permanent.json", message_id, DELIVERY_PAYMENT)
    return report.replace('"kilo-account": ["YWNjdF8x"]', '"kilo-account": ["YWNjdF9w"]')  # acct_p, by hand


def test_given_a_bounce_landing_while_the_sms_is_still_a_claim_then_the_report_is_retried_and_one_sms_goes(
    alerts_stack: AlertsStack, bounces: Stack, monkeypatch: pytest.MonkeyPatch
) -> None:
    """D422 (race): SES's bounce is handled between the email's record (``sent``, the event kept) and the SMS's
    "not chosen" decision (its record still a claim). The report fails (SQS redelivers it) and sends nothing back;
    redelivered once the SMS is decided, it reopens the SMS and sends the event back: one SMS goes."""
    from kilo_alerts.adapters import DynamoDeliveryLedger  # noqa: PLC0415
    from kilo_alerts.bounce_handler import lambda_handler as bounce_handler  # noqa: PLC0415
    from kilo_alerts.handler import lambda_handler  # noqa: PLC0415

    _failed_payment(alerts_stack)
    answers: list[dict[str, Any]] = []
    original = DynamoDeliveryLedger.record

    def record_then_bounce(self: DynamoDeliveryLedger, delivery: Any) -> None:
        original(self, delivery)
        if delivery.channel is Channel.EMAIL and delivery.outcome is Outcome.SENT:
            [mail] = alerts_stack.sent_mail()
            sms = records(alerts_stack, "acct_p")["sms"]
            assert sms["status"] == "pending"  # the race: the SMS not decided yet
            answers.append(bounce_handler({"Records": [record(_payment_report(mail.id), "m-1")]}, LambdaContext()))

    monkeypatch.setattr(DynamoDeliveryLedger, "record", record_then_bounce)
    assert lambda_handler(alerts_stack.sqs_event(), LambdaContext(remaining_ms=60_000)) == {"batchItemFailures": []}
    monkeypatch.setattr(DynamoDeliveryLedger, "record", original)
    assert answers == [{"batchItemFailures": [{"itemIdentifier": "m-1"}]}]
    assert alerts_stack.sqs_event()["Records"] == []  # nothing sent back while the SMS was a claim

    [mail] = alerts_stack.sent_mail()
    assert bounce_handler({"Records": [record(_payment_report(mail.id), "m-2")]}, LambdaContext()) == {
        "batchItemFailures": []
    }
    again = alerts_stack.sqs_event()
    assert len(again["Records"]) == 1
    assert lambda_handler(again, LambdaContext(remaining_ms=60_000)) == {"batchItemFailures": []}
    assert [phone for phone, *_ in alerts_stack.sent_sms()] == ["+14155550123"]
    assert records(alerts_stack, "acct_p")["sms"]["status"] == "sent"


def test_given_a_required_alerts_email_bouncing_when_its_sms_went_already_then_the_event_is_not_sent_back(
    alerts_stack: AlertsStack, bounces: Stack
) -> None:
    """D422: the account chose email and SMS for its failed payment: both went. The email's bounce makes its
    record undeliverable; no SMS is owed, so the event is not handled again (the email record keeps no event)."""
    from kilo_alerts.bounce_handler import lambda_handler as bounce_handler  # noqa: PLC0415
    from kilo_alerts.handler import lambda_handler  # noqa: PLC0415

    _failed_payment(alerts_stack, ("email", "sms"))
    assert lambda_handler(alerts_stack.sqs_event(), LambdaContext(remaining_ms=60_000)) == {"batchItemFailures": []}
    [mail] = alerts_stack.sent_mail()
    assert len(alerts_stack.sent_sms()) == 1

    assert bounce_handler({"Records": [record(_payment_report(mail.id), "m-1")]}, LambdaContext()) == {
        "batchItemFailures": []
    }
    assert alerts_stack.sqs_event()["Records"] == []
    after = records(alerts_stack, "acct_p")
    assert (after["email"]["status"], after["email"]["reason"]) == ("undeliverable", "bounced")
    assert "replay" not in after["email"]
    assert len(alerts_stack.sent_sms()) == 1


def test_given_the_send_to_the_alerts_queue_failing_once_then_the_redelivered_report_sends_the_event_and_one_sms_goes(
    alerts_stack: AlertsStack, bounces: Stack, monkeypatch: pytest.MonkeyPatch
) -> None:
    """D408's redelivery path: the record is made undeliverable and the SMS reopened, then the send to the alerts
    queue fails; the report fails and comes back. Redelivered, it finds the bounced record with its event still kept
    (the update's ``reason = bounced AND attribute_exists(replay)`` branch) and the SMS reopened: the event goes back
    once, and one SMS goes."""
    from kilo_alerts import dependencies  # noqa: PLC0415
    from kilo_alerts.bounce_handler import lambda_handler as bounce_handler  # noqa: PLC0415
    from kilo_alerts.handler import lambda_handler  # noqa: PLC0415

    _failed_payment(alerts_stack)
    assert lambda_handler(alerts_stack.sqs_event(), LambdaContext(remaining_ms=60_000)) == {"batchItemFailures": []}
    [mail] = alerts_stack.sent_mail()

    real = dependencies.bounce_replay
    failures = ["SQS unavailable"]

    def flaky() -> Any:
        send = real()

        def replay(body: str) -> None:
            if failures:
                raise RuntimeError(failures.pop())
            send(body)

        return replay

    monkeypatch.setattr(dependencies, "bounce_replay", flaky)
    report = _payment_report(mail.id)
    assert bounce_handler({"Records": [record(report, "m-1")]}, LambdaContext()) == {
        "batchItemFailures": [{"itemIdentifier": "m-1"}]
    }
    assert alerts_stack.sqs_event()["Records"] == []
    kept = records(alerts_stack, "acct_p")
    assert (kept["email"]["status"], "replay" in kept["email"]) == ("undeliverable", True)

    assert bounce_handler({"Records": [record(report, "m-1")]}, LambdaContext()) == {"batchItemFailures": []}
    again = alerts_stack.sqs_event()
    assert len(again["Records"]) == 1, "the redelivered report did not send the event back"
    assert lambda_handler(again, LambdaContext(remaining_ms=60_000)) == {"batchItemFailures": []}
    assert [phone for phone, *_ in alerts_stack.sent_sms()] == ["+14155550123"]
    assert "replay" not in records(alerts_stack, "acct_p")["email"]
