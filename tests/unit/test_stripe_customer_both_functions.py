"""The account's Stripe customer is created by whichever comes first: the account API (a Checkout page to save a card)
or the invoice functions (the first card invoice). Stripe's search index lags its writes ("typically within a minute",
Stripe's search docs), so both may miss the other's customer and create one within the same minute: they send the
same idempotency key, and Stripe refuses a key reused with other parameters (idempotency_error). Both create it with
the same request (``kilo_billing.stripe_customers``), so the second create is the first's replay: one customer.
Through the Stripe SDK against the local emulator (which applies Stripe's idempotency rule)."""

from __future__ import annotations

import json
from collections.abc import Mapping
from typing import Any

import stripe

from kilo_account_api.stripe_adapter import StripePaymentPages
from kilo_dev.stripe_emulator import EmulatorHTTPClient, StripeEmulator
from kilo_invoice.ports import Customer
from kilo_invoice.stripe_adapter import StripePaymentGateway


class LaggingSearch(EmulatorHTTPClient):
    """The emulator, with Stripe's search index not yet showing any customer (its documented lag)."""

    def request(
        self, method: str, url: str, headers: Mapping[str, str] | None, post_data: Any = None, *, _usage: Any = None
    ) -> tuple[str, int, Mapping[str, str]]:
        if "/v1/customers/search" in url:
            empty = {"object": "search_result", "data": [], "has_more": False, "next_page": None, "url": url}
            return json.dumps(empty), 200, {"request-id": "req_lagging"}
        return super().request(method, url, headers, post_data, _usage=_usage)


def test_given_search_not_yet_showing_it_when_both_functions_create_the_customer_then_it_is_one_customer() -> None:
    emulator = StripeEmulator()
    pages_http, invoice_http = LaggingSearch(emulator), LaggingSearch(emulator)
    pages = StripePaymentPages.from_api_key("sk_test_unit", max_network_retries=0, http_client=pages_http)
    gateway = StripePaymentGateway(stripe.StripeClient("sk_test_unit", http_client=invoice_http, max_network_retries=0))

    from_pages = pages.customer("acct-7", "ops@acct7.example", "Acct Seven")
    from_invoice = gateway.ensure_customer(Customer("acct-7", "ops@acct7.example", "Acct Seven"))

    assert from_invoice == from_pages
    creates = [r for r in [*pages_http.requests, *invoice_http.requests] if r.path == "/v1/customers"]
    assert [(r.status, r.headers["Idempotency-Key"], r.params) for r in creates] == [
        (200, "kilo:acct-7:customer", {"metadata": {"kilo_account_id": "acct-7"}}),
        (200, "kilo:acct-7:customer", {"metadata": {"kilo_account_id": "acct-7"}}),
    ]
    stored = stripe.StripeClient("sk_test_unit", http_client=EmulatorHTTPClient(emulator)).v1.customers.retrieve(
        from_pages
    )
    assert (stored.email, stored.name, stored.metadata["kilo_account_id"]) == (
        "ops@acct7.example",
        "Acct Seven",
        "acct-7",
    )
    assert emulator.refused_params == []


def test_given_an_existing_customer_then_both_functions_bring_its_details_to_the_accounts_and_only_once() -> None:
    """D172: the account's profile is where invoices and receipts go, so a customer found with other details is
    updated by either function - once per change of the details (a second call sends nothing)."""
    emulator = StripeEmulator()
    sdk = stripe.StripeClient("sk_test_unit", http_client=EmulatorHTTPClient(emulator), max_network_retries=0)
    old = sdk.v1.customers.create(
        {"email": "old@acct7.example", "name": "Acct 7", "metadata": {"kilo_account_id": "acct-7"}}
    )
    pages_http, invoice_http = EmulatorHTTPClient(emulator), EmulatorHTTPClient(emulator)
    pages = StripePaymentPages.from_api_key("sk_test_unit", max_network_retries=0, http_client=pages_http)
    gateway = StripePaymentGateway(stripe.StripeClient("sk_test_unit", http_client=invoice_http, max_network_retries=0))

    assert pages.customer("acct-7", "ops@acct7.example", None) == old.id  # the name left as it is
    assert gateway.ensure_customer(Customer("acct-7", "ops@acct7.example", "Acct Seven")) == old.id
    assert pages.customer("acct-7", "ops@acct7.example", "Acct Seven") == old.id
    assert gateway.ensure_customer(Customer("acct-7", "ops@acct7.example", "Acct Seven")) == old.id

    updates = [r.params for r in [*pages_http.requests, *invoice_http.requests] if r.path == f"/v1/customers/{old.id}"]
    assert updates == [{"email": "ops@acct7.example"}, {"name": "Acct Seven"}]
    assert not any(r.path == "/v1/customers" for r in [*pages_http.requests, *invoice_http.requests])  # no create
    stored = sdk.v1.customers.retrieve(old.id)
    assert (stored.email, stored.name) == ("ops@acct7.example", "Acct Seven")


def _both(emulator: StripeEmulator) -> tuple[StripePaymentPages, StripePaymentGateway, stripe.StripeClient]:
    pages = StripePaymentPages.from_api_key(
        "sk_test_unit", max_network_retries=0, http_client=EmulatorHTTPClient(emulator)
    )
    gateway = StripePaymentGateway(
        stripe.StripeClient("sk_test_unit", http_client=EmulatorHTTPClient(emulator), max_network_retries=0)
    )
    sdk = stripe.StripeClient("sk_test_unit", http_client=EmulatorHTTPClient(emulator), max_network_retries=0)
    return pages, gateway, sdk


def test_given_the_email_changed_a_to_b_and_back_within_a_day_then_each_checkout_and_the_close_set_it() -> None:
    """D172: the same fields sent again from another state (a@ -> b@ -> a@, all inside Stripe's 24 h key life) are
    applied each time - never refused as a key reused with other parameters, never replayed as an earlier no-op."""
    emulator = StripeEmulator()
    pages, gateway, sdk = _both(emulator)

    seen = []
    for email in ["a@acct7.example", "b@acct7.example", "a@acct7.example", "b@acct7.example"]:
        customer_id = pages.customer("acct-7", email, "Seven")
        seen.append(sdk.v1.customers.retrieve(customer_id).email)
    assert seen == ["a@acct7.example", "b@acct7.example", "a@acct7.example", "b@acct7.example"]
    assert gateway.ensure_customer(Customer("acct-7", "a@acct7.example", "Seven")) == customer_id
    assert sdk.v1.customers.retrieve(customer_id).email == "a@acct7.example"
    assert emulator.refused_params == []
    assert len(emulator.objects["customer"]) == 1


def test_given_details_edited_in_the_billing_portal_then_checkout_and_the_close_set_the_profiles_back() -> None:
    """D172's trade-off: the profile is the one record; a Portal edit is set back at the next Checkout page or close."""
    emulator = StripeEmulator()
    pages, gateway, sdk = _both(emulator)
    customer_id = pages.customer("acct-7", "ops@acct7.example", "Acct Seven")

    sdk.v1.customers.update(customer_id, {"email": "portal@acct7.example"})  # the customer, in the Billing Portal
    assert pages.customer("acct-7", "ops@acct7.example", "Acct Seven") == customer_id
    assert sdk.v1.customers.retrieve(customer_id).email == "ops@acct7.example"

    sdk.v1.customers.update(customer_id, {"email": "portal@acct7.example", "name": "Other"})
    assert gateway.ensure_customer(Customer("acct-7", "ops@acct7.example", "Acct Seven")) == customer_id
    stored = sdk.v1.customers.retrieve(customer_id)
    assert (stored.email, stored.name) == ("ops@acct7.example", "Acct Seven")
    assert emulator.refused_params == []


def test_given_a_known_customer_then_both_functions_bring_it_the_details_that_differ_each_time() -> None:
    """D172, a customer id the ledger knows: one retrieve, then an update of the fields that differ (none when equal),
    applied each time - a@ -> b@ -> a@ included."""
    emulator = StripeEmulator()
    pages, gateway, sdk = _both(emulator)
    known = sdk.v1.customers.create({"email": "a@acct7.example", "metadata": {"kilo_account_id": "acct-7"}}).id

    gateway.bring_details(known, Customer("acct-7", "b@acct7.example", "Seven"))
    assert (sdk.v1.customers.retrieve(known).email, sdk.v1.customers.retrieve(known).name) == (
        "b@acct7.example",
        "Seven",
    )
    pages.bring_details(known, "a@acct7.example", None)  # the name left as it is
    assert (sdk.v1.customers.retrieve(known).email, sdk.v1.customers.retrieve(known).name) == (
        "a@acct7.example",
        "Seven",
    )
    gateway.bring_details(known, Customer("acct-7", "b@acct7.example", "Seven"))
    assert sdk.v1.customers.retrieve(known).email == "b@acct7.example"
    assert emulator.refused_params == []
    assert len(emulator.objects["customer"]) == 1


def test_a_search_literal_escapes_quotes_and_backslashes() -> None:
    from kilo_billing.stripe_customers import quoted  # noqa: PLC0415

    assert quoted("acct-7") == "'acct-7'"
    assert quoted("o'brien\\x") == "'o\\'brien\\\\x'"
