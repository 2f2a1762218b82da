"""Checkout in setup mode names our account, so ``checkout.session.completed`` can be tied back to it
(``kilo_invoice.logic.apply_stripe_event`` reads ``metadata.account_id`` or ``client_reference_id``)."""

from __future__ import annotations

import stripe

from kilo_dev.stripe_emulator import EmulatorHTTPClient
from kilo_invoice.gateway import Customer
from kilo_invoice.stripe_adapter import StripePaymentGateway


def test_given_an_account_when_a_setup_session_is_made_then_stripe_gets_its_id_as_reference_and_metadata() -> None:
    http = EmulatorHTTPClient()
    gateway = StripePaymentGateway(stripe.StripeClient("sk_test_unit", http_client=http, max_network_retries=0))
    customer = gateway.ensure_customer(Customer("acct-42"))
    assert gateway.setup_session(customer, "https://app.example/ok", "https://app.example/no", "acct-42")
    gateway.setup_session(customer, "https://app.example/ok", "https://app.example/no")
    with_account, without = [r.params for r in http.requests if r.path == "/v1/checkout/sessions"]
    assert with_account["client_reference_id"] == "acct-42"
    assert with_account["metadata"] == {"account_id": "acct-42", "kilo_account_id": "acct-42"}
    assert "client_reference_id" not in without
    assert http.emulator.refused_params == []  # the SDK's typed params allow both
