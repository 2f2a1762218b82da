"""The account API's Checkout page (setup mode) names our account, so ``checkout.session.completed`` can be tied back
to it (``kilo_invoice.logic.apply_stripe_event`` reads ``metadata.account_id`` or ``client_reference_id``), and asks
for the billing address that Stripe Tax needs on invoices. Through the Stripe SDK against the local emulator, which
refuses parameters the API does not take."""

from __future__ import annotations

from kilo_account_api.stripe_adapter import StripePaymentPages
from kilo_dev.stripe_emulator import EmulatorHTTPClient


def test_given_an_account_when_a_setup_page_is_made_then_stripe_gets_its_id_and_asks_for_the_address() -> None:
    http = EmulatorHTTPClient()
    pages = StripePaymentPages.from_api_key("sk_test_unit", max_network_retries=0, http_client=http)
    customer = pages.customer("acct-42", "ops@acct42.example", None)
    assert pages.customer("acct-42", None, None) == customer  # found again by its metadata, not created twice
    first = pages.setup_url(customer, "acct-42", "https://app.example/ok", "https://app.example/no")
    second = pages.setup_url(customer, "acct-42", "https://app.example/ok", "https://app.example/no")
    assert first.startswith("https://")
    assert first != second
    sessions = [r for r in http.requests if r.path == "/v1/checkout/sessions"]
    params = sessions[0].params
    assert params["mode"] == "setup"
    assert params["client_reference_id"] == "acct-42"
    assert params["metadata"] == {"account_id": "acct-42", "kilo_account_id": "acct-42"}
    assert params["billing_address_collection"] == "required"
    assert params["customer_update"] == {"address": "auto", "name": "auto"}
    keys = [r.headers["Idempotency-Key"] for r in sessions]
    assert all(key.startswith(f"kilo:{customer}:setup-session:") for key in keys)
    assert keys[0] != keys[1]
    assert pages.portal_url(customer, "https://app.example/billing").startswith("https://")
    assert http.emulator.refused_params == []  # the SDK's typed params and the API accept them all
