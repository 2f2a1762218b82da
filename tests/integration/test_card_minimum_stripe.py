"""Card invoices below Stripe's minimum charge, against the Stripe stand-in (``kilo_dev.stripe_emulator``, which
follows Stripe's documented rule: an amount due above 0 but below the minimum chargeable amount - 50 cents in USD - is
marked paid uncharged and moved to the customer's balance as a debit, which the next invoice finalized adds) and the
real Stripe adapter on the Stripe SDK (D126). Figures worked by hand (audio $0.00036, video $0.00072; Personal
includes 10,000 audio and 5,000 video minutes)."""

from __future__ import annotations

from datetime import UTC, datetime
from decimal import Decimal
from typing import Any

import stripe

from kilo_billing.accounts import AccountProfile
from kilo_billing.catalog import default_catalog
from kilo_billing.invoicing import BillingState, InvoiceStatus
from kilo_billing.periods import Period
from kilo_billing.rating import TierChange
from kilo_dev.stripe_emulator import EmulatorHTTPClient
from kilo_invoice.logic import close_account
from kilo_invoice.model import CloseDeps
from kilo_invoice.ports import Customer
from kilo_invoice.stripe_adapter import StripePaymentGateway
from tests.invoice_fakes import InMemoryLedgerStore

MAR, APR = Period(2026, 3), Period(2026, 4)


class _Bus:
    def publish(self, detail_type: str, detail: Any) -> None:
        pass


def _client(http: EmulatorHTTPClient) -> stripe.StripeClient:
    return stripe.StripeClient("sk_test_minimum", http_client=http, max_network_retries=0)


def test_the_stand_in_follows_stripes_minimum_charge_rule() -> None:
    """What the fix guards against, as Stripe documents it: 36 cents are not charged but owed on the customer's
    balance, and the next invoice (100 cents) asks for 136 - more than its own lines."""
    http = EmulatorHTTPClient()
    client = _client(http)
    customer = client.v1.customers.create({"metadata": {"kilo_account_id": "solo"}})
    card = client.v1.payment_methods.attach("pm_card_visa", {"customer": customer.id})
    client.v1.customers.update(customer.id, {"invoice_settings": {"default_payment_method": card.id}})
    amounts = []
    for cents in (36, 100):
        draft = client.v1.invoices.create({"customer": customer.id, "currency": "usd", "auto_advance": False})
        client.v1.invoices.add_lines(draft.id or "", {"lines": [{"amount": cents, "description": "usage"}]})
        finalized = client.v1.invoices.finalize_invoice(draft.id or "", {"auto_advance": True})
        invoice = client.v1.invoices.retrieve(finalized.id or "")
        amounts.append((invoice.status, invoice.subtotal, invoice.amount_due, invoice.amount_paid))
        if cents == 36:
            assert client.v1.customers.retrieve(customer.id).balance == 36  # a debit: the customer owes it
    assert amounts == [("paid", 36, 0, 0), ("paid", 100, 136, 136)]
    assert client.v1.customers.retrieve(customer.id).balance == 0
    assert http.emulator.refused_params == []


def test_given_36_cents_on_a_card_when_closed_then_kept_ours_and_stripe_charges_exactly_our_next_invoice() -> None:
    http = EmulatorHTTPClient()
    gateway = StripePaymentGateway(_client(http))
    store = InMemoryLedgerStore()
    store.profiles["solo"] = AccountProfile("solo", (TierChange(datetime(2026, 3, 1, tzinfo=UTC), "personal"),))
    customer = gateway.ensure_customer(Customer("solo"))
    gateway.set_default_payment_method(customer, "pm_card_visa")
    store.billing["solo"] = BillingState(customer_id=customer)
    deps = CloseDeps(store, gateway, _Bus(), default_catalog(), lambda _s: None)

    store.rate("solo", "2026-03", int(MAR.start.timestamp()), "audio", 11_000)  # 1,000 over x 0.00036 = 0.36
    march = close_account(deps, "solo", MAR, MAR.end).invoice
    assert march is not None
    assert (march.total, march.status, march.gateway_id) == (Decimal("0.36"), InvoiceStatus.CARRIED, None)
    client = _client(http)
    assert client.v1.invoices.list({"customer": customer}).data == []  # nothing sent: no debit on Stripe's side

    store.rate("solo", "2026-04", int(APR.start.timestamp()), "video", 5_500)  # 500 over x 0.00072 = 0.36
    april = close_account(deps, "solo", APR, APR.end).invoice
    assert april is not None
    assert april.total == Decimal("0.72")  # 0.36 of April + 0.36 carried from March
    assert april.gateway_id is not None
    charged = client.v1.invoices.retrieve(april.gateway_id)
    assert (charged.status, charged.amount_due, charged.amount_paid) == ("paid", 72, 72)  # what our invoice says
    assert client.v1.customers.retrieve(customer).balance == 0
    assert http.emulator.refused_params == []
