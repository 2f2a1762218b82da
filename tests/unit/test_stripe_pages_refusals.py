"""What the account API's Stripe pages answer when Stripe refuses a request (D34, D297): a refusal of what the
customer sent (a page URL, named by Stripe's ``param``) is a 400 naming that field; any other 4xx - a deleted
customer, no Billing Portal configuration - is ours to fix, so *unavailable* (a logged 503), never "invalid input".
Through the Stripe SDK: the errors are the SDK's own, built from the error bodies Stripe publishes."""

from __future__ import annotations

import json
from collections.abc import Mapping
from typing import Any
from urllib.parse import urlsplit

import pytest

from kilo_account_api.model import InvalidRequestError, UnavailableError
from kilo_account_api.stripe_adapter import StripePaymentPages
from kilo_dev.stripe_emulator import EmulatorHTTPClient

NO_SUCH_CUSTOMER = {
    "error": {
        "code": "resource_missing",
        "doc_url": "https://stripe.com/docs/error-codes/resource-missing",
        "message": "No such customer: 'cus_gone'",
        "param": "customer",
        "type": "invalid_request_error",
    }
}
NO_PORTAL_CONFIGURATION = {
    "error": {
        "message": "No configuration provided and your test mode default configuration has not been created. "
        "Provide a configuration or create your default by saving your customer portal settings in test mode at "
        "https://dashboard.stripe.com/test/settings/billing/portal.",
        "type": "invalid_request_error",
    }
}
BAD_SUCCESS_URL = {"error": {"message": "Not a valid URL", "param": "success_url", "type": "invalid_request_error"}}


class Refusing(EmulatorHTTPClient):
    """The emulator, except that a request to ``path`` gets Stripe's ``status`` and error ``body``."""

    def __init__(self, path: str, status: int, body: dict[str, Any] | str) -> None:
        super().__init__()
        self.refusal = (path, status, body)

    def request(
        self, method: str, url: str, headers: Mapping[str, str] | None, post_data: Any = None, **kwargs: Any
    ) -> tuple[str, int, Mapping[str, str]]:
        path, status, body = self.refusal
        if urlsplit(url).path == path:
            return (body if isinstance(body, str) else json.dumps(body)), status, {"request-id": "req_refused"}
        return super().request(method, url, headers, post_data, **kwargs)


def pages(path: str, status: int, body: dict[str, Any] | str) -> StripePaymentPages:
    return StripePaymentPages.from_api_key(
        "sk_test_unit", max_network_retries=0, http_client=Refusing(path, status, body)
    )


def test_given_a_deleted_customer_when_a_portal_page_is_asked_then_unavailable_not_the_customers_input() -> None:
    with pytest.raises(UnavailableError, match=r"Stripe refused \(400\): No such customer: 'cus_gone'"):
        pages("/v1/billing_portal/sessions", 400, NO_SUCH_CUSTOMER).portal_url("cus_gone", "https://app.example/b")


def test_given_no_billing_portal_configuration_when_a_portal_page_is_asked_then_unavailable() -> None:
    with pytest.raises(UnavailableError, match="No configuration provided"):
        pages("/v1/billing_portal/sessions", 400, NO_PORTAL_CONFIGURATION).portal_url("cus_1", "https://app.example/b")


def test_given_a_deleted_customer_when_a_setup_page_is_asked_then_unavailable() -> None:
    with pytest.raises(UnavailableError, match="No such customer"):
        pages("/v1/checkout/sessions", 400, NO_SUCH_CUSTOMER).setup_url(
            "cus_gone", "acct-1", "https://app.example/ok", "https://app.example/no"
        )


def test_given_stripe_refusing_the_customers_success_url_then_400_names_that_field() -> None:
    with pytest.raises(InvalidRequestError, match=r"Stripe refused \(400\): Not a valid URL") as refused:
        pages("/v1/checkout/sessions", 400, BAD_SUCCESS_URL).setup_url(
            "cus_1", "acct-1", "https://app.example/ok", "https://app.example/no"
        )
    assert refused.value.field == "success_url"
