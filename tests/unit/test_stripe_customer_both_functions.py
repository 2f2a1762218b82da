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


def test_a_search_literal_escapes_quotes_and_backslashes() -> None:
    from kilo_billing.stripe_customers import quoted  # noqa: PLC0415

    assert quoted("acct-7") == "'acct-7'"
    assert quoted("o'brien\\x") == "'o\\'brien\\\\x'"
