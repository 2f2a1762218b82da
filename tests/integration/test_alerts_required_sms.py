"""A required alert (D180) whose email SES refuses goes once by SMS to the account's verified number (D215),
end to end on moto: the event published on the billing bus as rating or invoicing publishes it -> the template's rule
-> the alerts queue -> the alerts handler -> SES v2 (refusing: the sender has no verified identity, as for an address
SES will not send to) and SNS, read back from moto, and the delivery records. Published twice and the batch handled
twice (a redelivery): one SMS, never two."""

from __future__ import annotations

import hashlib
from datetime import UTC, datetime
from typing import Any

import boto3
import pytest

from kilo_billing.account_store import DynamoAccountDirectory
from kilo_billing.accounts import AccountProfile
from kilo_billing.contracts import SOURCE_INVOICING, PaymentFailedV1
from kilo_billing.publisher import EventBridgePublisher
from kilo_billing.rating import TierChange
from tests.conftest import AlertsStack, LambdaContext
from tests.integration.test_alerts_delivery import publish

NUMBER = "+14155550123"


def register(stack: AlertsStack, account: str, kind: str, *, verified: bool = True) -> None:
    """An account that chose email alone for ``kind`` (the dashboard's choice), with a number."""
    directory = DynamoAccountDirectory(boto3.client("dynamodb"), stack.stack.template.physical_name("UsageTable"))
    directory.register(
        AccountProfile(
            account, (TierChange(datetime(2026, 1, 1, tzinfo=UTC), "team"),), name="Ada", email="ada@example.com",
            phone=NUMBER, phone_verified=verified, alert_preferences=((kind, ("email",)),),
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


def test_given_the_hard_limit_alert_refused_by_ses_then_one_sms_goes_to_the_verified_number(
    alerts_stack: AlertsStack, ses_refusing: None
) -> None:
    register(alerts_stack, "acct_h", "budget_hard_limit")
    publish(alerts_stack, "acct_h", "hard_limit", 100, "150.02", "150")
    publish(alerts_stack, "acct_h", "hard_limit", 100, "150.02", "150")  # rating's retry: the same event id

    run_twice(alerts_stack)

    assert alerts_stack.sent_mail() == []
    [(phone, sms)] = [(phone, text) for phone, text, *_ in alerts_stack.sent_sms()]
    assert phone == NUMBER
    assert sms.startswith("Kilo: hard limit $150.00 reached (November 2026 bill $150.02). Calls go audio-only")
    recorded = records(alerts_stack, "acct_h")
    assert (recorded["email"]["status"], recorded["email"]["detail"]) == ("undeliverable", "MessageRejected")
    assert recorded["sms"]["status"] == "sent"
    assert str(recorded["sms"]["detail"]).endswith("; sent instead of the email SES refused")
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
        "Kilo: your payment of $29.00 was declined. Pay the invoice or update your card with the link in our email. "
        "Reply STOP to opt out",
    )
    assert {channel: item["status"] for channel, item in records(alerts_stack, "acct_p").items()} == {
        "email": "undeliverable",
        "sms": "sent",
    }
    unverified = records(alerts_stack, "acct_u")  # recorded as before: the refused email, no SMS
    assert (unverified["email"]["status"], unverified["sms"]["status"]) == ("undeliverable", "skipped")
    assert unverified["sms"]["detail"] == "not chosen for this alert"
