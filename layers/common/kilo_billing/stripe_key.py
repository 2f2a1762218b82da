"""The Stripe API key's secret as Secrets Manager holds it, read the same way by invoicing's gateway and the account
API's Checkout and Billing Portal pages. A JSON shape, no SDK: this module does not import ``stripe`` (each caller
reads the secret before it builds its client with ``kilo_billing.stripe_calls``)."""

from __future__ import annotations

import re
from typing import Final, NamedTuple

# Stripe's secret and restricted keys (``sk_live_51H...``, ``rk_test_...``): anything else - a space inside, the
# publishable key, the webhook's secret - is no key, refused here as ours to fix (D328) rather than met by the
# SDK's transport as a header it cannot send (``APIConnectionError``: an outage). Whitespace around the key (pasted
# with its line end, a trailing space) is no part of it: dropped, the key used (D328, amended).
KEY_SHAPE: Final = re.compile(r"[sr]k_(?:test|live)_[A-Za-z0-9]+", re.ASCII)


class StripeSecret(NamedTuple):
    api_key: str
    api_base: str | None  # another API address (a Stripe stand-in on the local stack); None: Stripe's own


def stripe_secret(value: object) -> StripeSecret | None:
    """``{"api_key": "sk_...", "api_base": optional}`` (parsed JSON); ``None`` when malformed (not an object, or no
    ``api_key`` string of Stripe's key shape, ``KEY_SHAPE``, once the whitespace around it is dropped) - each caller
    refuses it with its own error. An ``api_base`` that is not a non-empty string is no stand-in: Stripe's own
    address."""
    if not isinstance(value, dict) or not isinstance(value.get("api_key"), str):
        return None
    key = value["api_key"].strip(" \t\r\n")
    if KEY_SHAPE.fullmatch(key) is None:
        return None
    base = value.get("api_base")
    return StripeSecret(key, str(base) if isinstance(base, str) and base else None)
