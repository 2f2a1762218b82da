"""The Stripe SDK's client and one SDK call, built and mapped the same way for every function that talks to Stripe
(invoicing's payment gateway, the account API's Checkout and Billing Portal pages): a connection failure, rate
limiting, a 5xx or no status at all is *unavailable* (the caller retries later); a refusal of our own key, permissions,
objects or idempotency keys is ours to fix - *unavailable* too, unless the caller names it apart; only a refusal of
the payment itself (a card declined, Stripe's amount and state rules) is *refused* (``whose``, D315). Imported
only by the Stripe adapters: the SDK loads with them. The API key's secret is read by ``kilo_billing.stripe_key``,
which does not load the SDK."""

from __future__ import annotations

from collections.abc import Callable
from typing import Final, Literal, TypeVar

import stripe

_T = TypeVar("_T")


def stripe_client(
    api_key: str,
    *,
    max_network_retries: int,
    timeout_seconds: float,
    api_base: str | None = None,
    http_client: stripe.HTTPClient | None = None,
) -> stripe.StripeClient:
    """The SDK's client as every Stripe adapter builds it. ``timeout_seconds``: each attempt's timeout (the SDK's
    ``RequestsClient``; its default, 80 s, outlasts every function's own): the caller sizes it so that all its
    attempts fit its function's timeout. ``api_base``: another API address (a Stripe stand-in on the local stack);
    ``http_client``: the SDK's transport (tests put the Stripe emulator there; ``timeout_seconds`` is then its own
    business). ``api_base`` defaults to the SDK's own."""
    return stripe.StripeClient(
        api_key,
        max_network_retries=max_network_retries,
        base_addresses={"api": api_base} if api_base else None,
        http_client=http_client if http_client is not None else stripe.RequestsClient(timeout=timeout_seconds),
    )


# Stripe's codes for a request that met another one on the same object or idempotency key: retried as they are
CONTENTION: Final = frozenset({"lock_timeout", "idempotency_key_in_use", "rate_limit"})
# Stripe's codes for our own objects it does not know (a customer, invoice or payment intent we stored or found)
OURS_MISSING: Final = frozenset({"resource_missing"})
Whose = Literal["outage", "ours", "refused"]


def whose(error: stripe.StripeError) -> Whose:
    """The one rule for what a Stripe error means (D315):

    - ``outage``: no answer, 5xx, 429, or a conflict with another request (409; ``lock_timeout``,
      ``idempotency_key_in_use``): the same call succeeds later;
    - ``ours``: our own key or configuration - 401 (``AuthenticationError``: key revoked, rolled, malformed), 403
      (``PermissionError``: a restricted key without the permission), an ``IdempotencyError`` (our key sent again
      with other parameters), ``resource_missing`` or any 404 (an object of ours Stripe does not know; an address
      Stripe has no endpoint at - the secret's ``api_base`` wrong), a 4xx whose body is not Stripe's error
      (``APIError`` with no ``error`` object: a proxy's page, a wrong address): nothing the customer or the payment
      did; the call fails the same way until an operator fixes our side (D327);
    - ``refused``: the payment itself - ``CardError`` (402: declined), and every other refusal of the request
      (Stripe's amount and state rules: ``amount_too_large``, ``charge_already_refunded``, an invoice no longer open
      ...)."""
    status = error.http_status
    code = error.code or (error.error.code if error.error is not None else None)
    if isinstance(error, stripe.APIConnectionError | stripe.RateLimitError) or status is None:
        return "outage"
    if status >= 500 or status in (409, 429) or code in CONTENTION:
        return "outage"
    if isinstance(error, stripe.CardError):
        return "refused"
    if isinstance(error, stripe.AuthenticationError | stripe.PermissionError | stripe.IdempotencyError):
        return "ours"
    if status in (401, 403, 404) or code in OURS_MISSING:
        return "ours"
    if isinstance(error, stripe.APIError) and error.error is None:
        return "ours"  # a 4xx whose body Stripe did not write (a proxy, a wrong address): not Stripe refusing us
    return "refused"


def stripe_call(
    operation: Callable[[], _T],
    unavailable: Callable[[str], Exception],
    refused: Callable[[str], Exception],
    ours: Callable[[str], Exception] | None = None,
) -> _T:
    """Run one SDK call (its own retries included) and map what Stripe says by ``whose``: an outage to
    ``unavailable``, a refusal of our own key, permissions, objects or idempotency keys to ``ours`` (default:
    ``unavailable`` - retried, and alarmed where it keeps failing, never taken as the customer's), a refusal of the
    payment itself to ``refused``."""
    try:
        return operation()
    except stripe.StripeError as error:
        kind = whose(error)
        message = error.user_message or str(error)
        status = error.http_status
        if kind == "outage":
            raise unavailable(f"Stripe unavailable ({status}): {message}") from error
        if kind == "ours":
            raise (ours or unavailable)(f"Stripe refused ({status}): {message} [ours to fix]") from error
        raise refused(f"Stripe refused ({status}): {message}") from error
