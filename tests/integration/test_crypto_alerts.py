"""The crypto alerts end to end on moto: CryptoPaymentSeen.v1, CryptoBillSettled.v1 and CryptoQuoteExpiring.v1 published
on the billing bus as crypto watching publishes them (source ``kilo.billing.crypto``; twice, as after a crash between
publishing and marking) -> the template's rule -> the alerts queue -> the alerts handler (each batch handled twice, as
SQS redelivers it) -> SES v2 email and SNS SMS read back from moto, once each. UnattributedCryptoPayment.v1 goes to
the operator topic, once. Figures in the expected texts are worked by hand."""

from __future__ import annotations

from datetime import UTC, datetime

import boto3
import pytest
import time_machine

from kilo_billing.contracts import (
    SOURCE_CRYPTO,
    CryptoBillReopenedV1,
    CryptoBillSettledV1,
    CryptoPaymentSeenV1,
    CryptoQuoteExpiringV1,
    UnattributedCryptoPaymentV1,
)
from kilo_billing.publisher import EventBridgePublisher
from tests.conftest import AlertsStack
from tests.integration.test_alerts_delivery import mime, parts
from tests.integration.test_invoicing_alerts import PREFS, records, register, run_twice
from tests.integration.test_operator_alerts import inbox, run_queue, topic_queue

ACCOUNT = "acct_cry"
TX = "0x8f2a5c9d0e1b7a3f4c6d2e8b1a9f0c3d5e7b2a4c6e8f0a1b3c5d7e9f1a2b3c4d"


def publish_twice(stack: AlertsStack, detail_type: str, detail: dict[str, object]) -> None:
    bus = stack.stack.template.physical_name("BillingEventBus")
    publisher = EventBridgePublisher(boto3.client("events"), bus, SOURCE_CRYPTO)
    publisher.publish(detail_type, detail)
    publisher.publish(detail_type, detail)


def test_given_a_payment_seen_on_chain_then_one_email_with_asset_usd_and_explorer_link_and_no_sms(
    alerts_stack: AlertsStack,
) -> None:
    register(alerts_stack, ACCOUNT)
    event = CryptoPaymentSeenV1(
        event_id=f"crypto-seen:base:{TX}:0",
        account_id=ACCOUNT,
        invoice_id="acct_cry/2026-10",
        quote_id="q_1",
        chain="base",
        asset="USDC",
        amount="1234.5",
        amount_usd="1234.50",
        tx_id=TX,
        explorer_url=f"https://basescan.org/tx/{TX}",
        occurred_at="2026-11-02T10:00:00+00:00",
    )
    publish_twice(alerts_stack, event.DETAIL_TYPE, event.model_dump())
    run_twice(alerts_stack)

    [mail] = [mime(m) for m in alerts_stack.sent_mail()]
    assert mail["To"] == "ada@example.com"
    assert mail["Subject"] == "We see your crypto payment of 1,234.5 USDC ($1,234.50) for invoice acct_cry/2026-10"
    text, html = parts(mail)
    assert (
        "A payment of 1,234.5 USDC ($1,234.50 at your quote's rate) on Base toward invoice acct_cry/2026-10 of your "
        "account acct_cry is on chain." in text
    )
    assert f"Transaction {TX}: https://basescan.org/tx/{TX}" in text
    assert f'<a href="https://basescan.org/tx/{TX}">view it</a>' in html
    assert f"{PREFS}?account=acct_cry" in text
    assert alerts_stack.sent_sms() == []  # low severity: email only unless the account chose SMS
    recorded = records(alerts_stack, ACCOUNT)
    assert {c: r["status"] for c, r in recorded.items()} == {"email": "sent", "sms": "skipped"}


def test_given_the_bill_settled_with_an_overpayment_then_one_email_naming_the_credit(alerts_stack: AlertsStack) -> None:
    register(alerts_stack, ACCOUNT)
    event = CryptoBillSettledV1(
        event_id="crypto-settled:acct_cry/2026-10",
        account_id=ACCOUNT,
        invoice_id="acct_cry/2026-10",
        total="129.00",
        settled_usd="130.25",
        credit_usd="1.25",  # 130.25 - 129.00, kept as credit
        flags=("OVERPAID",),
        tx_ids=(TX,),
        occurred_at="2026-11-02T10:30:00+00:00",
    )
    publish_twice(alerts_stack, event.DETAIL_TYPE, event.model_dump())
    run_twice(alerts_stack)

    [mail] = [mime(m) for m in alerts_stack.sent_mail()]
    assert mail["Subject"] == "Your Kilo invoice acct_cry/2026-10 is paid in crypto: $129.00"
    text, _ = parts(mail)
    assert "your crypto payments are final and settled $130.25 of the $129.00 bill." in text
    assert "The $1.25 paid over the bill is kept as credit on your account." in text
    assert f"Transactions: {TX}" in text
    assert alerts_stack.sent_sms() == []


def test_given_a_quote_expiring_then_one_email_and_one_sms_with_amount_time_and_payment_link(
    alerts_stack: AlertsStack,
) -> None:
    register(alerts_stack, ACCOUNT)
    uri = "ethereum:0x1111111111111111111111111111111111111111@1?value=4.213e16"
    event = CryptoQuoteExpiringV1(
        event_id="quote-expiring:q_9",
        account_id=ACCOUNT,
        invoice_id="acct_cry/2026-10",
        quote_id="q_9",
        chain="ethereum",
        asset="ETH",
        amount="0.04213",
        payment_uri=uri,
        expires_at="2026-11-02T14:30:00+00:00",
        occurred_at="2026-11-02T14:15:00+00:00",
    )
    publish_twice(alerts_stack, event.DETAIL_TYPE, event.model_dump())
    # delivered before the expiry: one at or after it sends nothing (D379)
    with time_machine.travel(datetime(2026, 11, 2, 14, 16, tzinfo=UTC), tick=False):
        run_twice(alerts_stack)

    [mail] = [mime(m) for m in alerts_stack.sent_mail()]
    assert mail["Subject"] == "Your crypto quote for invoice acct_cry/2026-10 expires at 14:30 UTC on 2 November 2026"
    text, html = parts(mail)
    assert "with 0.04213 ETH on Ethereum expires at 14:30 UTC on 2 November 2026" in text
    assert f"Pay before then: {uri}" in text
    # then a new quote: the dashboard's (the template's DashboardUrl) Pay with crypto page, not the alert preferences
    assert (
        "After it expires, ask for a new quote on your dashboard's Pay with crypto page: http://127.0.0.1:8000/#/pay\n"
        in text
    )
    assert '<a href="ethereum:0x1111111111111111111111111111111111111111@1?value=4.213e16">' in html
    [(phone, sms)] = [(p, message) for p, message, *_ in alerts_stack.sent_sms()]
    assert phone == "+14155550100"
    assert sms == (
        "Kilo: your quote to pay 0.04213 ETH on Ethereum expires 14:30 UTC. Get a new one: Pay with crypto in your "
        "dashboard. Reply STOP to opt out"
    )
    assert {c: r["status"] for c, r in records(alerts_stack, ACCOUNT).items()} == {"email": "sent", "sms": "sent"}


def test_given_a_bill_reopened_by_a_stuck_payment_then_one_email_and_one_sms_asking_the_rest(
    alerts_stack: AlertsStack,
) -> None:
    """D434 end to end: ``CryptoBillReopened.v1`` published twice and each batch handled twice - one email and one
    SMS (medium): the 40.00 asked (100.00 - 60.00), the stuck 40.00 and its transaction, the pay page with the bill
    chosen, and what a late landing does (credit, not sent back by itself)."""
    register(alerts_stack, ACCOUNT)
    event = CryptoBillReopenedV1(
        event_id=f"crypto-reopened:acct_cry/2026-10:ethereum:{TX}:0@0xblock",
        account_id=ACCOUNT,
        invoice_id="acct_cry/2026-10",
        total="100.00",
        amount_usd="40.00",
        stuck_usd="40.00",
        stuck_tx_ids=(TX,),
        occurred_at="2026-11-02T11:00:00+00:00",
        number="KB-0042",
    )
    publish_twice(alerts_stack, event.DETAIL_TYPE, event.model_dump())
    run_twice(alerts_stack)

    [mail] = [mime(m) for m in alerts_stack.sent_mail()]
    assert mail["Subject"] == "Your Kilo invoice acct_cry/2026-10 is open again: pay $40.00"
    text, html = parts(mail)
    assert "Your crypto payment of $40.00 toward it is stuck" in text
    assert "we ask the rest, $40.00." in text
    assert (
        "Pay $40.00 with a new quote on your dashboard's Pay with crypto page: "
        "http://127.0.0.1:8000/#/pay?invoice=KB-0042\n" in text
    )
    assert "a stuck payment final after the bill is paid is kept as credit on your account" in text
    assert "a payment sent after the bill is paid may not be matched to your account by itself" in text  # D435
    assert f"Stuck transactions: {TX}" in text
    assert '<a href="http://127.0.0.1:8000/#/pay?invoice=KB-0042">' in html
    [(phone, sms)] = [(p, message) for p, message, *_ in alerts_stack.sent_sms()]
    assert phone == "+14155550100"
    assert sms == (
        "Kilo: a $40.00 crypto payment is stuck; your bill is open again, $40.00 more. Pay: Pay with crypto in your "
        "dashboard. Reply STOP to opt out"
    )
    assert {c: r["status"] for c, r in records(alerts_stack, ACCOUNT).items()} == {"email": "sent", "sms": "sent"}


def test_given_a_bill_reopened_by_a_dropped_payment_then_one_email_and_one_sms_naming_it_dropped(
    alerts_stack: AlertsStack,
) -> None:
    """D434 amended (hcw) end to end: a reopen told for a payment dropped with its block (``lost``), published twice
    and each batch handled twice - one email naming the dropped $40.00 and its transaction, one SMS."""
    register(alerts_stack, ACCOUNT)
    event = CryptoBillReopenedV1(
        event_id=f"crypto-reopened:acct_cry/2026-10:ethereum:{TX}:0@0xblock",
        account_id=ACCOUNT,
        invoice_id="acct_cry/2026-10",
        total="100.00",
        amount_usd="40.00",
        stuck_usd="0.00",
        occurred_at="2026-11-02T11:00:00+00:00",
        number="KB-0042",
        lost="dropped",
        lost_usd="40.00",
        lost_tx_id=TX,
    )
    publish_twice(alerts_stack, event.DETAIL_TYPE, event.model_dump())
    run_twice(alerts_stack)

    [mail] = [mime(m) for m in alerts_stack.sent_mail()]
    assert mail["Subject"] == "Your Kilo invoice acct_cry/2026-10 is open again: pay $40.00"
    text, _ = parts(mail)
    assert "Your crypto payment of $40.00 toward it was dropped: the block that held it was replaced" in text
    assert "we ask the rest, $40.00." in text
    assert f"Dropped transaction: {TX}" in text
    [(_, sms)] = [(p, message) for p, message, *_ in alerts_stack.sent_sms()]
    assert sms == (
        "Kilo: a $40.00 crypto payment dropped; your bill is open again, $40.00 more. Pay: Pay with crypto in your "
        "dashboard. Reply STOP to opt out"
    )


def _unattributed(index: int, amount: str, counted_in: str | None = None) -> UnattributedCryptoPaymentV1:
    """Output ``index`` of TX on Solana, ``amount`` SOL from the same sender at 11:00 UTC on 2 November 2026."""
    return UnattributedCryptoPaymentV1(
        event_id=f"crypto-unattributed:solana:{TX}:{index}",
        chain="solana",
        asset="SOL",
        amount=amount,
        tx_id=TX,
        sender="7xKXtg2CW87d97TXJSDpbD5jBkheTqA83TZRuJosgAsU",
        occurred_at="2026-11-02T11:00:00+00:00",
        counted_in=counted_in,
    )


@pytest.mark.parametrize("redelivered", [False, True])
def test_given_an_unattributed_crypto_payment_then_the_operators_hear_once(
    alerts_stack: AlertsStack, redelivered: bool
) -> None:
    url = topic_queue(alerts_stack)
    event = _unattributed(0, "12.5")
    bus = alerts_stack.stack.template.physical_name("BillingEventBus")
    publisher = EventBridgePublisher(boto3.client("events"), bus, SOURCE_CRYPTO)
    for _ in range(2 if redelivered else 1):
        publisher.publish(event.DETAIL_TYPE, event.model_dump())
    assert run_queue(alerts_stack) == {"batchItemFailures": []}
    [(subject, message)] = inbox(alerts_stack, url)
    assert subject == "Kilo Billing: unattributed crypto payment of 12.5 SOL on solana"
    assert f"12.5 SOL on solana, transaction {TX}, from 7xKXtg2CW87d97TXJSDpbD5jBkheTqA83TZRuJosgAsU" in message
    assert alerts_stack.sent_mail() == []


def test_given_an_unattributed_crypto_payment_counted_in_another_then_the_email_names_it_and_says_not_to_refund(
    alerts_stack: AlertsStack,
) -> None:
    """Review (rsp3) F1, D91 amended (sp4): 0.5 SOL at :1, a split sibling of the net credit :0 stored before the
    split (1.5 SOL on inv-1, $225.00 = 1.5 x 150). Refunding it would leave inv-1 with 1.0 SOL kept ($150.00)
    against $225.00 counted ($75.00 short). Before: the email said "attribute it ... or refund it to the sender"."""
    url = topic_queue(alerts_stack)
    event = _unattributed(1, "0.5", counted_in=f"solana:{TX}:0")
    bus = alerts_stack.stack.template.physical_name("BillingEventBus")
    EventBridgePublisher(boto3.client("events"), bus, SOURCE_CRYPTO).publish(
        event.DETAIL_TYPE, event.model_dump(mode="json", exclude_none=True)
    )
    assert run_queue(alerts_stack) == {"batchItemFailures": []}
    [(subject, message)] = inbox(alerts_stack, url)
    assert subject == "Kilo Billing: unattributed crypto payment of 0.5 SOL on solana"
    assert f"already counted in payment solana:{TX}:0" in message
    assert "do NOT refund it or assign it" in message
    assert f"act on the bill payment solana:{TX}:0 pays" in message
    # :0 may pay no bill (an unattributed net credit): then it is the payment to move (D91 amended (sp5))
    assert f"if it pays no bill, assign or refund payment solana:{TX}:0." in message
    assert "refund it to the sender" not in message
