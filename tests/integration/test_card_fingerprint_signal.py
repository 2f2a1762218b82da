"""The shared-card abuse signal fed by its real producer, end to end on moto: cards saved on Stripe (the real adapter on
the Stripe emulator, through the SDK's ``http_client``) -> Stripe's ``payment_method.attached`` events signed with the
Stripe SDK -> the ingest Stripe handler -> the billing bus -> ``PaymentEventsRule`` -> the payment-status handler,
which reads the account from the customer's metadata and publishes ``PaymentMethodAttached.v1`` with the card's
fingerprint -> ``AlertsRule`` -> the alerts queue -> the alerts handler -> the operator topic (read back from an SQS
queue subscribed to it)."""

from __future__ import annotations

import copy
from typing import Any

import pytest
import stripe

from kilo_dev.stripe_emulator import load_fixtures
from kilo_invoice.ports import Customer
from tests.conftest import AlertsStack, LambdaContext, Stack
from tests.integration.test_invoice_close import API_KEY, Invoicing, invoicing_on
from tests.integration.test_operator_alerts import inbox, register, run_queue, topic_queue

FINGERPRINT = "AOB934RVNwzk6xtn"  # Stripe's fixture card (4242...): the emulator gives every test card this one


@pytest.fixture
def invoicing(stack: Stack, monkeypatch: pytest.MonkeyPatch, lambda_context: LambdaContext) -> Invoicing:
    return invoicing_on(stack, monkeypatch, lambda_context)


def attached_event(invoicing: Invoicing, account: str, number: int) -> dict[str, Any]:
    """The account's customer saves a card on Stripe; the ``payment_method.attached`` event Stripe sends for it, in
    the shape of Stripe's published event fixture, its object the card as the SDK reads it back."""
    gateway = invoicing.gateway()
    customer = gateway.ensure_customer(Customer(account))
    gateway.set_default_payment_method(customer, "pm_card_visa")
    client = stripe.StripeClient(API_KEY, http_client=invoicing.http, max_network_retries=0)
    [card] = client.v1.payment_methods.list({"customer": customer, "type": "card"}).data
    event = copy.deepcopy(load_fixtures()["event"])
    event.update(id=f"evt_attached_{number}", type="payment_method.attached", created=1_794_787_200 + number)
    event["data"] = {"object": card.to_dict()}
    return event


def published_methods(invoicing: Invoicing) -> list[dict[str, Any]]:
    return [detail for kind, detail in invoicing.published() if kind == "PaymentMethodAttached.v1"]


def test_given_three_free_accounts_saving_one_card_then_the_payment_events_flag_each_once(
    invoicing: Invoicing, alerts_stack: AlertsStack
) -> None:
    inbox_url = topic_queue(alerts_stack)
    for account, tier in (
        ("acct-f1", "personal"),
        ("acct-f2", "personal"),
        ("acct-t", "team"),
        ("acct-f3", "personal"),
    ):
        register(alerts_stack, account, tier)

    # two free accounts and a paying one share the card: two free accounts are below the threshold (3)
    for number, account in enumerate(("acct-f1", "acct-f2", "acct-t"), start=1):
        assert invoicing.webhook(attached_event(invoicing, account, number)) == 200
    assert len(invoicing.payments()) == 3
    announced = published_methods(invoicing)
    assert sorted((d["account_id"], d["method"], d["fingerprint"]) for d in announced) == [
        ("acct-f1", "card", FINGERPRINT),
        ("acct-f2", "card", FINGERPRINT),
        ("acct-t", "card", FINGERPRINT),
    ]
    assert all(d["event_id"].startswith("payment-method:pm_") for d in announced)
    assert run_queue(alerts_stack) == {"batchItemFailures": []}
    assert inbox(alerts_stack, inbox_url) == []

    # the third free account: each of the three free accounts is flagged, once
    third = attached_event(invoicing, "acct-f3", 4)
    assert invoicing.webhook(third) == 200
    invoicing.payments()
    [first_time] = published_methods(invoicing)
    assert run_queue(alerts_stack) == {"batchItemFailures": []}
    messages = inbox(alerts_stack, inbox_url)
    assert sorted(subject for subject, _ in messages) == [
        "Kilo Billing: abuse signal shared_card on account acct-f1",
        "Kilo Billing: abuse signal shared_card on account acct-f2",
        "Kilo Billing: abuse signal shared_card on account acct-f3",
    ]
    assert all("3 free accounts pay with one card (acct-f1, acct-f2, acct-f3)" in text for _, text in messages)

    # the same attachment announced again (a Stripe retry stored as another event): the same id, nothing new
    third["id"] = "evt_attached_4_again"
    assert invoicing.webhook(third) == 200
    invoicing.payments()
    [second_time] = published_methods(invoicing)
    assert second_time["event_id"] == first_time["event_id"]
    assert run_queue(alerts_stack) == {"batchItemFailures": []}
    assert inbox(alerts_stack, inbox_url) == []


def test_given_a_card_of_a_customer_not_ours_then_nothing_is_announced(invoicing: Invoicing) -> None:
    event = attached_event(invoicing, "acct-f1", 1)
    event["data"]["object"]["customer"] = "cus_someone_else"
    assert invoicing.webhook(event) == 200
    assert len(invoicing.payments()) == 1
    assert published_methods(invoicing) == []
