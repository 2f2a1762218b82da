"""A required alert (D180) whose email SES refuses goes once by SMS to the account's verified number (D215),
end to end on moto: the event published on the billing bus as rating or invoicing publishes it -> the template's rule
-> the alerts queue -> the alerts handler -> SES v2 (refusing: the sender has no verified identity, as for an address
SES will not send to) and SNS, read back from moto, and the delivery records. Published twice and the batch handled
twice (a redelivery): one SMS, never two."""

from __future__ import annotations

import hashlib
from dataclasses import replace
from datetime import UTC, datetime
from decimal import Decimal
from types import SimpleNamespace
from typing import Any

import boto3
import pytest
import time_machine

from kilo_billing.account_store import DynamoAccountDirectory
from kilo_billing.accounts import AccountProfile
from kilo_billing.contracts import SOURCE_INVOICING, PaymentFailedV1
from kilo_billing.publisher import EventBridgePublisher
from kilo_billing.rating import TierChange
from tests.conftest import AlertsStack, LambdaContext
from tests.integration.test_alerts_delivery import publish

NUMBER = "+14155550123"


def register(
    stack: AlertsStack,
    account: str,
    kind: str,
    *,
    verified: bool = True,
    email: str = "ada@example.com",
    hard_limit: Decimal | None = None,
) -> None:
    """An account that chose email alone for ``kind`` (the dashboard's choice), with a number."""
    directory = DynamoAccountDirectory(boto3.client("dynamodb"), stack.stack.template.physical_name("UsageTable"))
    directory.register(
        AccountProfile(
            account, (TierChange(datetime(2026, 1, 1, tzinfo=UTC), "team"),), name="Ada", email=email,
            phone=NUMBER, phone_verified=verified, alert_preferences=((kind, ("email",)),), hard_limit_usd=hard_limit,
        )
    )  # fmt: skip


def run_twice(stack: AlertsStack) -> None:
    from kilo_alerts.handler import lambda_handler  # noqa: PLC0415

    event = stack.sqs_event()
    assert len(event["Records"]) == 2, "the rule did not put both events on the alerts queue"
    assert lambda_handler(event, LambdaContext(remaining_ms=60_000)) == {"batchItemFailures": []}
    assert lambda_handler(event, LambdaContext(remaining_ms=60_000)) == {"batchItemFailures": []}  # redelivered


def records(stack: AlertsStack, account: str) -> dict[str, dict[str, Any]]:
    table = stack.stack.template.physical_name("AlertsTable")
    items = boto3.resource("dynamodb").Table(table).scan(ConsistentRead=True)["Items"]
    found = [item for item in items if item.get("account_id") == account and str(item["sk"]).startswith("DELIVERY#")]
    return {str(item["channel"]): item for item in found}


def number_ref(account: str) -> str:
    """D80's pseudonym of the number, worked with hashlib (D203)."""
    return "erased-" + hashlib.sha256(f"{account}\x00{NUMBER}".encode()).hexdigest()[:16]


@pytest.fixture
def ses_refusing(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("ALERT_SENDER_EMAIL", "alerts@unverified.example")  # no SES identity: MessageRejected


@pytest.mark.parametrize(
    ("email", "email_record", "instead"),
    [
        ("ada@example.com", ("undeliverable", "MessageRejected"), "; sent instead of the email SES refused"),
        # cleared through the account API (""): D236
        ("", ("skipped", "no email address"), "; sent instead of the email: the account has no email address"),
    ],
    ids=["refused by SES", "no email address"],
)
def test_given_the_hard_limit_alert_whose_email_reaches_nobody_then_one_sms_goes_to_the_verified_number(
    alerts_stack: AlertsStack,
    monkeypatch: pytest.MonkeyPatch,
    email: str,
    email_record: tuple[str, str],
    instead: str,
) -> None:
    monkeypatch.setenv("ALERT_SENDER_EMAIL", "alerts@unverified.example")  # no SES identity: MessageRejected
    register(alerts_stack, "acct_h", "budget_hard_limit", email=email, hard_limit=Decimal(150))
    publish(alerts_stack, "acct_h", "hard_limit", 100, "150.02", "150")
    publish(alerts_stack, "acct_h", "hard_limit", 100, "150.02", "150")  # rating's retry: the same event id

    with time_machine.travel(datetime(2026, 11, 20, 10, 5, tzinfo=UTC), tick=False):  # handled in the event's month
        run_twice(alerts_stack)

    assert alerts_stack.sent_mail() == []
    [(phone, sms)] = [(phone, text) for phone, text, *_ in alerts_stack.sent_sms()]
    assert phone == NUMBER
    # the $150 limit on the profile, reached in the running month: enforced, and the SMS says so (D360)
    assert sms.startswith("Kilo: hard limit $150.00 reached (November 2026 bill $150.02). Calls go audio-only")
    recorded = records(alerts_stack, "acct_h")
    assert (recorded["email"]["status"], recorded["email"]["detail"]) == email_record
    assert recorded["sms"]["status"] == "sent"
    assert str(recorded["sms"]["detail"]).endswith(instead)
    assert recorded["sms"]["recipient"] == number_ref("acct_h")
    assert int(recorded["sms"]["attempts"]) == 1


def test_given_a_failed_payment_alert_refused_by_ses_then_one_sms_and_none_to_an_unverified_number(
    alerts_stack: AlertsStack, ses_refusing: None
) -> None:
    register(alerts_stack, "acct_p", "payment_failed")
    register(alerts_stack, "acct_u", "payment_failed", verified=False)
    bus = alerts_stack.stack.template.physical_name("BillingEventBus")
    publisher = EventBridgePublisher(boto3.client("events"), bus, SOURCE_INVOICING)
    for account in ("acct_p", "acct_u"):
        event = PaymentFailedV1(
            event_id=f"payment-failed:evt_{account}", account_id=account, invoice_id="in_9", total="29",
            reason="payment_failed", hosted_url="", occurred_at="2026-11-03T09:00:00+00:00",
        )  # fmt: skip
        publisher.publish(event.DETAIL_TYPE, event.model_dump())

    run_twice(alerts_stack)

    assert alerts_stack.sent_mail() == []
    [(phone, sms)] = [(phone, text) for phone, text, *_ in alerts_stack.sent_sms()]
    assert (phone, sms) == (
        NUMBER,
        "Kilo: your payment of $29.00 was declined. Pay the invoice or update your card in your Kilo dashboard. "
        "Reply STOP to opt out",
    )
    assert {channel: item["status"] for channel, item in records(alerts_stack, "acct_p").items()} == {
        "email": "undeliverable",
        "sms": "sent",
    }
    unverified = records(alerts_stack, "acct_u")  # recorded as before: the refused email, no SMS
    assert (unverified["email"]["status"], unverified["sms"]["status"]) == ("undeliverable", "skipped")
    assert unverified["sms"]["detail"] == "not chosen for this alert"


def test_given_ses_failing_for_now_then_the_last_delivery_sends_the_failed_payment_by_sms_once(
    alerts_stack: AlertsStack, monkeypatch: pytest.MonkeyPatch
) -> None:
    """SES failing for now (here: nothing listening) at every receive of the event: the SMS waits for the email at
    the first four, goes at the fifth (the template's maxReceiveCount, the last before the dead-letter queue), and
    the email stays to retry, toward the dead-letter queue and its alarm; the queue redriven once SES is back sends
    the email and not the SMS again."""
    from kilo_alerts import dependencies, handler  # noqa: PLC0415
    from kilo_alerts.adapters import SesMailer  # noqa: PLC0415
    from kilo_alerts.handler import lambda_handler  # noqa: PLC0415
    from kilo_billing.aws import CallBudget, client  # noqa: PLC0415

    register(alerts_stack, "acct_f", "payment_failed")
    bus = alerts_stack.stack.template.physical_name("BillingEventBus")
    event = PaymentFailedV1(
        event_id="payment-failed:evt_f", account_id="acct_f", invoice_id="in_9", total="29",
        reason="payment_failed", hosted_url="", occurred_at="2026-11-03T09:00:00+00:00",
    )  # fmt: skip
    EventBridgePublisher(boto3.client("events"), bus, SOURCE_INVOICING).publish(event.DETAIL_TYPE, event.model_dump())
    healthy = dependencies.alerts()
    dead = client("sesv2", CallBudget(0.2, 0.2, 1), endpoint_url="http://127.0.0.1:9")  # nothing listens on port 9
    broken = replace(healthy, ports=replace(healthy.ports, mailer=SesMailer(dead, alerts_stack.sender)))
    monkeypatch.setattr(handler, "dependencies", SimpleNamespace(alerts=lambda: broken))

    for receive in (1, 2, 3, 4):
        batch = alerts_stack.sqs_event(visibility_timeout=0)
        assert batch["Records"][0]["attributes"]["ApproximateReceiveCount"] == str(receive)
        failed = lambda_handler(batch, LambdaContext(remaining_ms=60_000))
        assert failed == {"batchItemFailures": [{"itemIdentifier": batch["Records"][0]["messageId"]}]}
        assert (alerts_stack.sent_sms(), alerts_stack.sent_mail()) == ([], [])
        assert {channel: item["status"] for channel, item in records(alerts_stack, "acct_f").items()} == {
            "email": "retry",
            "sms": "retry",
        }

    last = alerts_stack.sqs_event(visibility_timeout=0)
    assert last["Records"][0]["attributes"]["ApproximateReceiveCount"] == "5"
    failed = lambda_handler(last, LambdaContext(remaining_ms=60_000))
    assert failed == {"batchItemFailures": [{"itemIdentifier": last["Records"][0]["messageId"]}]}  # the email: DLQ
    [(phone, _)] = [(phone, text) for phone, text, *_ in alerts_stack.sent_sms()]
    assert (phone, alerts_stack.sent_mail()) == (NUMBER, [])
    recorded = records(alerts_stack, "acct_f")
    assert (recorded["email"]["status"], recorded["sms"]["status"]) == ("retry", "sent")
    assert str(recorded["sms"]["detail"]).endswith(
        "; sent instead of the email: SES still failing for now at the event's last delivery"
    )

    # redriven from the dead-letter queue once SES is back: the email goes; the SMS is decided, not sent again
    monkeypatch.setattr(handler, "dependencies", SimpleNamespace(alerts=lambda: healthy))
    assert lambda_handler(last, LambdaContext(remaining_ms=60_000)) == {"batchItemFailures": []}
    assert (len(alerts_stack.sent_sms()), len(alerts_stack.sent_mail())) == (1, 1)
    assert {channel: item["status"] for channel, item in records(alerts_stack, "acct_f").items()} == {
        "email": "sent",
        "sms": "sent",
    }
