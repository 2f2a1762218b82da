"""The invoicing alerts end to end on moto: InvoiceIssued.v1, PaymentFailed.v1 and DisputeOpened.v1 published on the
billing bus as invoicing publishes them (source ``kilo.billing.invoicing``) -> the template's rule -> the alerts
queue -> the alerts handler -> SES v2 email and SNS SMS read back from moto, and the delivery records. A failed
payment also still feeds the operator's failed-payments signal. Figures in the expected texts are worked by hand."""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any

import boto3

from kilo_billing.account_store import DynamoAccountDirectory
from kilo_billing.accounts import AccountProfile
from kilo_billing.contracts import SOURCE_INVOICING, DisputeOpenedV1, InvoiceIssuedV1, PaymentFailedV1
from kilo_billing.publisher import EventBridgePublisher
from kilo_billing.rating import TierChange
from tests.conftest import AlertsStack, LambdaContext
from tests.integration.test_alerts_delivery import mime, parts

PREFS = "https://app.kilo.example/settings/alerts"
HOSTED = "https://invoice.stripe.com/i/acct_1Kilo/test_YWNjdF8x?s=ap"


def register(stack: AlertsStack, account: str) -> None:
    directory = DynamoAccountDirectory(boto3.client("dynamodb"), stack.stack.template.physical_name("UsageTable"))
    profile = AccountProfile(
        account,
        (TierChange(datetime(2026, 1, 1, tzinfo=UTC), "team"),),
        name="Ada & Co",
        email="ada@example.com",
        phone="+14155550100",
        phone_verified=True,
    )
    directory.register(profile)


def publish_twice(stack: AlertsStack, detail_type: str, detail: dict[str, Any]) -> None:
    """Published as invoicing does; twice, as after a crash between publishing and marking it announced."""
    bus = stack.stack.template.physical_name("BillingEventBus")
    publisher = EventBridgePublisher(boto3.client("events"), bus, SOURCE_INVOICING)
    publisher.publish(detail_type, detail)
    publisher.publish(detail_type, detail)


def run_twice(stack: AlertsStack) -> None:
    """The queue's records through the handler, then the same batch again (SQS redelivers it)."""
    from kilo_alerts.handler import lambda_handler  # noqa: PLC0415

    event = stack.sqs_event()
    assert len(event["Records"]) == 2, "the rule did not put both events on the alerts queue"
    assert lambda_handler(event, LambdaContext(remaining_ms=60_000)) == {"batchItemFailures": []}
    assert lambda_handler(event, LambdaContext(remaining_ms=60_000)) == {"batchItemFailures": []}


def records(stack: AlertsStack, account: str) -> dict[str, dict[str, Any]]:
    table = stack.stack.template.physical_name("AlertsTable")
    items = boto3.resource("dynamodb").Table(table).scan()["Items"]
    found = [item for item in items if item.get("account_id") == account and str(item["sk"]).startswith("DELIVERY#")]
    return {str(item["channel"]): item for item in found}


def test_given_an_issued_card_invoice_then_one_email_with_number_period_total_and_link_and_no_sms(
    alerts_stack: AlertsStack,
) -> None:
    register(alerts_stack, "acct_inv")
    event = InvoiceIssuedV1(
        event_id="invoice-issued:in_42",
        account_id="acct_inv",
        invoice_id="in_42",
        number="KILO-0042",
        period="2026-10",
        total="1234.50",
        method="card",
        status="open",
        hosted_url=HOSTED,
        occurred_at="2026-11-01T00:05:00+00:00",
    )
    publish_twice(alerts_stack, event.DETAIL_TYPE, event.model_dump())

    run_twice(alerts_stack)

    [mail] = alerts_stack.sent_mail()
    message = mime(mail)
    assert message["To"] == "ada@example.com"
    assert message["Subject"] == "Your Kilo invoice KILO-0042 for October 2026: $1,234.50"
    text, html = parts(message)
    assert "Invoice KILO-0042 of your account acct_inv for October 2026 is issued: $1,234.50." in text
    assert "It is charged to the payment method on file" in text
    assert "crypto" not in text
    assert f"View the invoice: {HOSTED}\n" in text
    assert "<strong>KILO-0042</strong>" in html
    assert "<strong>$1,234.50</strong>" in html
    assert f'<a href="{HOSTED}">View the invoice</a>' in html
    assert alerts_stack.sent_sms() == []  # low severity: email only by default
    recorded = records(alerts_stack, "acct_inv")
    assert (recorded["email"]["status"], recorded["email"]["alert_key"]) == ("sent", "in_42")
    assert str(recorded["email"]["sk"]) == "DELIVERY#2026-10#invoice_issued#in_42#email"
    assert (recorded["sms"]["status"], recorded["sms"]["detail"]) == ("skipped", "not chosen for this alert")


def test_given_an_issued_crypto_invoice_without_a_hosted_page_then_the_email_says_it_awaits_crypto(
    alerts_stack: AlertsStack,
) -> None:
    register(alerts_stack, "acct_cr")
    event = InvoiceIssuedV1(
        event_id="invoice-issued:in_7",
        account_id="acct_cr",
        invoice_id="in_7",
        number="KILO-0007",
        period="2026-09",
        total="49",
        method="crypto",
        status="open",
        occurred_at="2026-10-01T00:05:00+00:00",
    )
    publish_twice(alerts_stack, event.DETAIL_TYPE, event.model_dump())

    run_twice(alerts_stack)

    [mail] = alerts_stack.sent_mail()
    message = mime(mail)
    assert message["Subject"] == "Your Kilo invoice KILO-0007 for September 2026: $49.00"
    text, _ = parts(message)
    assert "It awaits payment in crypto: pay it on your dashboard's Pay with crypto page, linked below." in text
    # no hosted page: the dashboard's (the template's DashboardUrl) Pay with crypto page, this bill chosen
    assert "View the invoice: http://127.0.0.1:8000/#/pay?invoice=KILO-0007\n" in text
    assert alerts_stack.sent_sms() == []


def test_given_a_failed_payment_then_email_and_sms_go_once_and_the_operator_signal_still_counts_it(
    alerts_stack: AlertsStack,
) -> None:
    register(alerts_stack, "acct_pf")
    event = PaymentFailedV1(
        event_id="payment-failed:evt_9",
        account_id="acct_pf",
        invoice_id="in_9",
        total="29",
        reason="payment_failed",
        hosted_url=HOSTED,
        occurred_at="2026-11-03T09:00:00+00:00",
    )
    publish_twice(alerts_stack, event.DETAIL_TYPE, event.model_dump())

    run_twice(alerts_stack)

    [mail] = alerts_stack.sent_mail()
    message = mime(mail)
    assert message["Subject"] == "Action needed: your Kilo payment of $29.00 was declined"
    text, html = parts(message)
    assert (
        "The payment of $29.00 for invoice in_9 of your account acct_pf could not be collected: the payment was "
        "declined." in text
    )
    assert f"Pay the invoice or update your card: {HOSTED}\n" in text
    assert f'<a href="{HOSTED}">Pay the invoice or update your card</a>' in html
    [(phone, sms)] = alerts_stack.sent_sms()
    assert phone == "+14155550100"
    assert sms == (
        "Kilo: your payment of $29.00 was declined. Pay the invoice or update your card in your Kilo dashboard. "
        "Reply STOP to opt out"
    )
    assert {channel: item["status"] for channel, item in records(alerts_stack, "acct_pf").items()} == {
        "email": "sent",
        "sms": "sent",
    }
    table = boto3.resource("dynamodb").Table(alerts_stack.stack.template.physical_name("AlertsTable"))
    failures = [item for item in table.scan()["Items"] if str(item["sk"]).startswith("PAYFAIL#")]
    assert [str(item["sk"]) for item in failures] == ["PAYFAIL#payment-failed:evt_9"]  # the abuse count, once


def test_given_a_payment_needing_action_then_the_alert_asks_to_complete_it(alerts_stack: AlertsStack) -> None:
    register(alerts_stack, "acct_ar")
    event = PaymentFailedV1(
        event_id="payment-failed:evt_10",
        account_id="acct_ar",
        invoice_id="in_10",
        total="150.005",
        reason="action_required",
        occurred_at="2026-11-03T09:00:00+00:00",
    )
    publish_twice(alerts_stack, event.DETAIL_TYPE, event.model_dump())

    run_twice(alerts_stack)

    [mail] = alerts_stack.sent_mail()
    message = mime(mail)
    assert message["Subject"] == "Action needed: your Kilo payment of $150.01 needs your confirmation"
    text, _ = parts(message)
    assert "needs your confirmation (for example 3-D Secure) before it can be collected." in text
    assert "Complete the payment: http://127.0.0.1:8000/#/billing\n" in text  # no hosted page: the dashboard's Billing
    [(_, sms)] = alerts_stack.sent_sms()
    assert sms == (
        "Kilo: your payment of $150.01 needs your confirmation. Complete the payment in your Kilo dashboard. "
        "Reply STOP to opt out"
    )


def test_given_a_dispute_then_one_email_with_amount_and_invoice_and_no_sms(alerts_stack: AlertsStack) -> None:
    register(alerts_stack, "acct_dp")
    event = DisputeOpenedV1(
        event_id="dispute-opened:dp_3",
        account_id="acct_dp",
        invoice_id="in_3",
        dispute_id="dp_3",
        amount="29.00",
        occurred_at="2026-11-20T12:00:00+00:00",
    )
    publish_twice(alerts_stack, event.DETAIL_TYPE, event.model_dump())

    run_twice(alerts_stack)

    [mail] = alerts_stack.sent_mail()
    message = mime(mail)
    assert message["Subject"] == "A payment of $29.00 to Kilo was disputed (a chargeback)"  # no kind: a chargeback
    text, html = parts(message)
    assert "A payment of $29.00 for invoice in_3 of your account acct_dp was disputed" in text
    assert "<strong>$29.00</strong> for invoice <strong>in_3</strong>" in html
    assert alerts_stack.sent_sms() == []  # medium: email only by default
    recorded = records(alerts_stack, "acct_dp")
    assert str(recorded["email"]["sk"]) == "DELIVERY#2026-11#dispute_opened#dp_3#email"
    assert recorded["email"]["status"] == "sent"
