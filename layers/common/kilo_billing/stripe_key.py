"""The Stripe API key's secret as Secrets Manager holds it, read the same way by invoicing's gateway and the account
API's Checkout and Billing Portal pages. A JSON shape, no SDK: this module does not import ``stripe`` (each caller
reads the secret before it builds its client with ``kilo_billing.stripe_calls``)."""

from __future__ import annotations

from typing import NamedTuple


class StripeSecret(NamedTuple):
    api_key: str
    api_base: str | None  # another API address (a Stripe stand-in on the local stack); None: Stripe's own


def stripe_secret(value: object) -> StripeSecret | None:
    """``{"api_key": "sk_...", "api_base": optional}`` (parsed JSON); ``None`` when malformed (not an object, or no
    non-empty ``api_key`` string) - each caller refuses it with its own error. An ``api_base`` that is not a
    non-empty string is no stand-in: Stripe's own address."""
    if not isinstance(value, dict) or not isinstance(value.get("api_key"), str) or not value["api_key"]:
        return None
    base = value.get("api_base")
    return StripeSecret(str(value["api_key"]), str(base) if isinstance(base, str) and base else None)
