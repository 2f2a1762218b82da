"""pi: every Stripe client is built with an explicit per-request timeout sized to its function (the SDK's default,
80 s a request and 2 retries - 240 s and more - outlasts invoice close's 120 s, payment status's 60 s and the account
API's 29 s). Read back from the Stripe SDK's own objects: the transport the client sends with and its timeout."""

from __future__ import annotations

import json
from typing import Any

import boto3
import pytest
import stripe
from botocore.stub import Stubber

from kilo_account_api.dependencies import _stripe_pages
from kilo_account_api.settings import AccountApiSettings
from kilo_billing.stripe_calls import stripe_client
from kilo_invoice import dependencies
from kilo_invoice.settings import InvoiceSettings

SECRET = json.dumps({"api_key": "sk_test_unit"})


def _sent_with(client: stripe.StripeClient) -> tuple[Any, int]:
    """The SDK's transport of ``client`` and its retries (where StripeClient keeps them: its requestor)."""
    requestor = client._requestor
    return requestor._client, requestor._options.max_network_retries


def test_given_no_transport_when_a_client_is_built_then_it_sends_through_requests_with_the_timeout_given() -> None:
    http, retries = _sent_with(stripe_client("sk_test_unit", max_network_retries=2, timeout_seconds=10))
    assert isinstance(http, stripe.RequestsClient)
    assert (http._timeout, retries) == (10, 2)


def test_given_the_invoice_settings_when_the_gateway_is_built_then_its_client_times_out_as_set() -> None:
    """The invoice functions' default (10 s) and a value from the environment's setting (STRIPE_TIMEOUT_SECONDS)."""
    assert InvoiceSettings(usage_table_name="t").stripe_timeout_seconds == 10
    secrets = boto3.client("secretsmanager", region_name="us-east-1", aws_access_key_id="x", aws_secret_access_key="y")
    stubber = Stubber(secrets)
    stubber.add_response("get_secret_value", {"Name": "kilo/stripe", "SecretString": SECRET})
    stubber.activate()
    config = InvoiceSettings(usage_table_name="t", stripe_api_key_secret_name="kilo/stripe", stripe_timeout_seconds=7)
    lazy = dependencies.stripe_gateway(config, secrets)
    assert isinstance(lazy, dependencies.LazyGateway)
    http, retries = _sent_with(lazy.gateway._client)  # type: ignore[attr-defined]
    assert isinstance(http, stripe.RequestsClient)
    assert (http._timeout, retries) == (7, 2)


def test_given_the_account_api_settings_when_its_pages_are_built_then_their_client_times_out_as_set(
    aws: None, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The account API's default (8 s, 1 retry: 2 x 8 s + 0.5 s backoff = 16.5 s inside its 29 s)."""
    boto3.client("secretsmanager").create_secret(Name="kilo/stripe", SecretString=SECRET)
    config = AccountApiSettings(usage_table_name="u", members_table_name="m", stripe_api_key_secret_name="kilo/stripe")
    assert config.stripe_timeout_seconds == 8
    http, retries = _sent_with(_stripe_pages(config)._client)  # type: ignore[attr-defined]
    assert isinstance(http, stripe.RequestsClient)
    assert (http._timeout, retries) == (8, 1)


def test_given_the_account_api_environment_then_its_timeout_is_its_own_and_not_the_invoice_functions(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """The local runtime runs every function in one environment (D402): the invoice functions' STRIPE_TIMEOUT_SECONDS
    (10) must not reach the account API, whose own setting is ACCOUNT_API_STRIPE_TIMEOUT_SECONDS."""
    monkeypatch.setenv("STRIPE_TIMEOUT_SECONDS", "10")
    assert AccountApiSettings(usage_table_name="u", members_table_name="m").stripe_timeout_seconds == 8
    monkeypatch.setenv("ACCOUNT_API_STRIPE_TIMEOUT_SECONDS", "6")
    assert AccountApiSettings(usage_table_name="u", members_table_name="m").stripe_timeout_seconds == 6
