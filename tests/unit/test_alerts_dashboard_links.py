"""The links of the invoicing and crypto emails when the event names no page of its own (no processor's hosted page,
several transactions): the dashboard's page the text names (web/js/app.js's routes), never the alert preferences."""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any

import pytest

from kilo_alerts.catalogue import alert_from_event
from kilo_alerts.logic import DeliveryPolicy, deliver_alert
from kilo_billing.accounts import AccountProfile
from kilo_billing.contracts import (
    CryptoBillSettledV1,
    CryptoPaymentSeenV1,
    CryptoQuoteExpiringV1,
    InvoiceIssuedV1,
    PaymentFailedV1,
)
from kilo_billing.rating import TierChange
from tests.fakes import InMemoryAccountDirectory
from tests.unit.alerts_fakes import InMemoryLedger, ScriptedMailer, ScriptedTexter

POLICY = DeliveryPolicy("https://prefs.example/alerts", dashboard_url="https://dash.kilo.example/app/")
T0 = 1_790_000_000_000
TX_A, TX_B = "0x" + "a" * 64, "0x" + "b" * 64


def issued(method: str) -> dict[str, Any]:
    return {
        "event_id": "invoice-issued:acct_1/2026-10",
        "account_id": "acct_1",
        "invoice_id": "acct_1/2026-10",
        "number": "KILO-0007",
        "period": "2026-10",
        "total": "49",
        "method": method,
        "status": "open",
        "occurred_at": "2026-11-01T00:05:00+00:00",
    }


QUOTE_EXPIRING: dict[str, Any] = {
    "event_id": "quote-expiring:q_1",
    "account_id": "acct_1",
    "invoice_id": "acct_1/2026-10",
    "quote_id": "q_1",
    "chain": "ethereum",
    "asset": "ETH",
    "amount": "0.04213",
    "payment_uri": "ethereum:0x" + "1" * 40 + "@1?value=4.213e16",
    "expires_at": "2026-11-02T14:30:00+00:00",
    "occurred_at": "2026-11-02T14:15:00+00:00",
}


def seen_transfer(tx: str, amount: str, usd: str) -> dict[str, Any]:
    return {"payment_id": f"ethereum:{tx}:0", "quote_id": "q_1", "asset": "USDC", "amount": amount,
            "amount_usd": usd, "tx_id": tx}  # fmt: skip


def sent_text(detail_type: str, detail: dict[str, Any]) -> tuple[str, str]:
    signup = (TierChange(datetime(2026, 1, 1, tzinfo=UTC), "team"),)
    directory = InMemoryAccountDirectory(AccountProfile("acct_1", signup, name="Ada", email="ada@example.com"))
    mailer = ScriptedMailer()
    alert = alert_from_event(detail_type, detail)
    deliver_alert(alert, directory, InMemoryLedger(), mailer, ScriptedTexter(), POLICY, T0)
    [(_, _, html, text)] = mailer.sent
    assert "Manage your alerts: https://prefs.example/alerts?account=acct_1\n" in text
    return html, text


@pytest.mark.parametrize(
    ("method", "line", "anchor"),
    [
        (
            "card",
            "View the invoice: https://dash.kilo.example/app/#/billing\n",
            '<a href="https://dash.kilo.example/app/#/billing">View the invoice</a>',
        ),
        (
            "crypto",
            "It awaits payment in crypto: pay it on your dashboard's Pay with crypto page, linked below.\n\n"
            "View the invoice: https://dash.kilo.example/app/#/pay?invoice=KILO-0007\n",
            '<a href="https://dash.kilo.example/app/#/pay?invoice=KILO-0007">View the invoice</a>',
        ),
    ],
)
def test_given_an_invoice_without_a_hosted_page_then_its_email_links_the_dashboard_page_it_names(
    method: str, line: str, anchor: str
) -> None:
    html, text = sent_text(InvoiceIssuedV1.DETAIL_TYPE, issued(method))
    assert line in text
    assert anchor in html


def test_given_a_failed_payment_without_a_hosted_page_then_its_email_links_the_dashboards_billing_page() -> None:
    detail = {
        "event_id": "payment-failed:evt_1",
        "account_id": "acct_1",
        "invoice_id": "acct_1/2026-10",
        "total": "49",
        "reason": "payment_failed",
        "occurred_at": "2026-11-03T09:00:00+00:00",
    }
    _, text = sent_text(PaymentFailedV1.DETAIL_TYPE, detail)
    assert "Pay the invoice or update your card: https://dash.kilo.example/app/#/billing\n" in text


def test_given_a_quote_expiring_then_its_email_sends_for_a_new_quote_to_the_dashboards_pay_page() -> None:
    html, text = sent_text(CryptoQuoteExpiringV1.DETAIL_TYPE, QUOTE_EXPIRING)  # an event of before: no number
    assert (
        "After it expires, ask for a new quote on your dashboard's Pay with crypto page: "
        "https://dash.kilo.example/app/#/pay\n"
    ) in text
    assert (
        "After it expires, ask for a new quote on your dashboard's "
        '<a href="https://dash.kilo.example/app/#/pay">Pay with crypto page</a>.'
    ) in html


def test_given_a_quote_expiring_that_names_its_invoice_number_then_its_email_links_the_pay_page_with_that_bill() -> (
    None
):
    """pay.js opens the open crypto bill whose number ``#/pay?invoice=`` names (as the crypto invoice's email links)."""
    detail = QUOTE_EXPIRING | {"number": "KILO 0007/A"}  # escaped in the link
    html, text = sent_text(CryptoQuoteExpiringV1.DETAIL_TYPE, detail)
    assert (
        "After it expires, ask for a new quote on your dashboard's Pay with crypto page: "
        "https://dash.kilo.example/app/#/pay?invoice=KILO%200007%2FA\n"
    ) in text
    assert '<a href="https://dash.kilo.example/app/#/pay?invoice=KILO%200007%2FA">Pay with crypto page</a>' in html


def test_given_payments_seen_in_two_transactions_then_their_email_links_the_pay_page_that_lists_them() -> None:
    detail = {
        "event_id": "crypto-seen:acct_1/2026-10:0123456789abcdef0123",
        "account_id": "acct_1",
        "invoice_id": "acct_1/2026-10",
        "quote_id": "q_1",
        "chain": "ethereum",
        "asset": "USDC",
        "amount": "12.5",
        "amount_usd": "12.50",
        "tx_id": TX_A,
        "occurred_at": "2026-11-02T10:00:00+00:00",
        "transfers": [seen_transfer(TX_A, "12.5", "12.50"), seen_transfer(TX_B, "17.5", "17.50")],
        "total_usd": "30.00",
    }
    _, text = sent_text(CryptoPaymentSeenV1.DETAIL_TYPE, detail)
    assert f"Transactions {TX_A}, {TX_B}: https://dash.kilo.example/app/#/pay\n" in text


def test_given_a_crypto_bill_settled_then_its_email_links_the_dashboards_billing_page() -> None:
    detail = {
        "event_id": "crypto-settled:acct_1/2026-10",
        "account_id": "acct_1",
        "invoice_id": "acct_1/2026-10",
        "total": "49",
        "settled_usd": "49",
        "tx_ids": [TX_A],
        "occurred_at": "2026-11-02T10:30:00+00:00",
    }
    _, text = sent_text(CryptoBillSettledV1.DETAIL_TYPE, detail)
    assert "View the invoice: https://dash.kilo.example/app/#/billing\n" in text
