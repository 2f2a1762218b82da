"""The Stripe SDK's client and one SDK call, built and mapped the same way for every function that talks to Stripe
(invoicing's payment gateway, the account API's Checkout and Billing Portal pages): a connection failure, rate
limiting, a 5xx or no status at all is *unavailable* (the caller retries later); any other refusal is *refused* (the
request itself is wrong and a retry would fail the same way). Imported only by the Stripe adapters: the SDK loads
with them. The API key's secret is read by ``kilo_billing.stripe_key``, which does not load the SDK."""

from __future__ import annotations

from collections.abc import Callable, Collection
from typing import TypeVar

import stripe

_T = TypeVar("_T")


def stripe_client(
    api_key: str,
    *,
    max_network_retries: int,
    api_base: str | None = None,
    http_client: stripe.HTTPClient | None = None,
) -> stripe.StripeClient:
    """The SDK's client as every Stripe adapter builds it. ``api_base``: another API address (a Stripe stand-in on the
    local stack); ``http_client``: the SDK's transport (tests put the Stripe emulator there). Both default to the
    SDK's own."""
    return stripe.StripeClient(
        api_key,
        max_network_retries=max_network_retries,
        base_addresses={"api": api_base} if api_base else None,
        http_client=http_client,
    )


def stripe_call(
    operation: Callable[[], _T],
    unavailable: Callable[[str], Exception],
    refused: Callable[[str], Exception],
    also_unavailable: Collection[int] = (),
) -> _T:
    """Run one SDK call (its own retries included). ``also_unavailable``: statuses the caller treats as an outage
    too (e.g. 401/403 - our key, not the customer's request)."""
    try:
        return operation()
    except (stripe.APIConnectionError, stripe.RateLimitError) as error:
        raise unavailable(f"Stripe unavailable: {error.user_message or error}") from error
    except stripe.StripeError as error:
        status = error.http_status
        if status is None or status >= 500 or status == 429 or status in also_unavailable:
            raise unavailable(f"Stripe unavailable ({status}): {error.user_message}") from error
        raise refused(f"Stripe refused ({status}): {error.user_message}") from error
