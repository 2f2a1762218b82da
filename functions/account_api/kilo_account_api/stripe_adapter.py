"""``PaymentPages`` on the Stripe SDK: the account's customer, a Checkout Session in setup mode (save a card) and a
Billing Portal session (manage cards, see receipts). Imported only when a request asks for one of these pages
(``dependencies.LazyPaymentPages``): every other route of the account API never loads the SDK.

The customer is the one the invoice functions use: found by the account id in its metadata (``kilo_account_id``),
created when there is none with the same requests and idempotency keys as theirs (``kilo_billing.stripe_customers``).
``checkout.session.completed`` carries the account back (``client_reference_id`` and metadata), and the payment-status
function makes the new card the default (D66).
"""

from __future__ import annotations

import uuid
from collections.abc import Callable
from typing import Final, TypeVar

import stripe
from stripe.params.billing_portal import SessionCreateParams as PortalSessionCreateParams
from stripe.params.checkout import SessionCreateParams as CheckoutSessionCreateParams

from kilo_account_api.model import InvalidRequestError, UnavailableError
from kilo_billing import stripe_customers
from kilo_billing.stripe_calls import stripe_call, stripe_client
from kilo_billing.stripe_customers import bring_details, find_or_create

META_ACCOUNT: Final = stripe_customers.META_ACCOUNT  # the customer metadata key the invoice functions search too
_T = TypeVar("_T")


class StripePaymentPages:
    def __init__(self, client: stripe.StripeClient, currency: str = "usd") -> None:
        self._client = client
        self._currency = currency

    @classmethod
    def from_api_key(
        cls,
        api_key: str,
        *,
        api_base: str | None = None,
        max_network_retries: int = 1,
        timeout_seconds: float = 8,
        http_client: stripe.HTTPClient | None = None,
    ) -> StripePaymentPages:
        """As ``kilo_billing.stripe_calls.stripe_client`` takes them (the settings' ``stripe_timeout_seconds``)."""
        return cls(
            stripe_client(
                api_key,
                max_network_retries=max_network_retries,
                timeout_seconds=timeout_seconds,
                api_base=api_base,
                http_client=http_client,
            )
        )

    def customer(self, account_id: str, email: str | None, name: str | None) -> str:
        # found or created as the invoice functions do (kilo_billing.stripe_customers): the same requests, so a create
        # by both within Stripe's search lag is one customer (the second is the first's replay)
        return find_or_create(self._client, account_id, email, name, self._call)

    def bring_details(self, customer_id: str, email: str | None, name: str | None) -> None:
        bring_details(self._client, customer_id, email, name, self._call)

    def setup_url(self, customer_id: str, account_id: str, success_url: str, cancel_url: str) -> str:
        params: CheckoutSessionCreateParams = {
            "mode": "setup",
            "customer": customer_id,
            "currency": self._currency,
            "success_url": success_url,
            "cancel_url": cancel_url,
            "client_reference_id": account_id,
            "metadata": {"account_id": account_id, META_ACCOUNT: account_id},
            # Stripe Tax on invoices (the invoice functions' STRIPE_AUTOMATIC_TAX) needs the customer's address
            "billing_address_collection": "required",
            "customer_update": {"address": "auto", "name": "auto"},
        }
        key = f"kilo:{customer_id}:setup-session:{uuid.uuid4().hex}"  # a new page per click
        session = self._call(lambda: self._client.v1.checkout.sessions.create(params, {"idempotency_key": key}))
        return _url(session.url, "Checkout Session")

    def portal_url(self, customer_id: str, return_url: str) -> str:
        params: PortalSessionCreateParams = {"customer": customer_id, "return_url": return_url}
        key = f"kilo:{customer_id}:portal-session:{uuid.uuid4().hex}"
        session = self._call(lambda: self._client.v1.billing_portal.sessions.create(params, {"idempotency_key": key}))
        return _url(session.url, "Billing Portal session")

    @staticmethod
    def _call(operation: Callable[[], _T]) -> _T:
        """One SDK call: a refusal of a page URL the customer sent (Stripe's ``param``) is a 400 naming it; every
        other refusal - a deleted customer, no Billing Portal configuration, a request we built wrong - is ours to
        fix, not the customer's: ``UnavailableError`` (a logged 503, D34, D297; our key, permissions and objects are
        unavailable already by the layer's rule, D315)."""
        try:
            # our key, permissions and objects are unavailable by the layer's rule (``stripe_calls.whose``)
            return stripe_call(operation, UnavailableError, _RefusedError)
        except _RefusedError as refused:
            param = getattr(refused.__cause__, "param", None)
            if param in CUSTOMER_FIELDS:
                raise InvalidRequestError(str(param), str(refused)) from refused.__cause__
            raise UnavailableError(str(refused)) from refused.__cause__


CUSTOMER_FIELDS: Final = frozenset({"success_url", "cancel_url", "return_url"})  # the request bodies' own fields


class _RefusedError(Exception):
    """Stripe refused the request (4xx): whose request it was is decided by ``StripePaymentPages._call``."""


def _url(url: str | None, what: str) -> str:
    if not url:
        raise UnavailableError(f"Stripe returned a {what} without a URL")
    return url
