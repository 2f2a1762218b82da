"""How senders sign requests to the ingest API - LiveKit (with the official SDK), the app's usage reports, Stripe.

Used by the tests, the simulator and the demo; the usage signer doubles as the reference for app developers.
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import time
from datetime import timedelta


def livekit_authorization(body: bytes, api_key: str, api_secret: str, ttl: timedelta | None = None) -> str:
    """The ``Authorization`` value LiveKit sends: a JWT from ``livekit-api``'s AccessToken with the body's sha256."""
    from livekit.api import AccessToken  # noqa: PLC0415 - the official SDK, heavy (aiohttp): dev-side only

    digest = base64.b64encode(hashlib.sha256(body).digest()).decode("ascii")
    token = AccessToken(api_key, api_secret).with_sha256(digest)
    if ttl is not None:
        token = token.with_ttl(ttl)
    return token.to_jwt()


def timestamped_hmac(body: bytes, secret: str, timestamp: int | None = None) -> str:
    """``t=<unix seconds>,v1=<hex HMAC-SHA256(secret, "<t>." + body)>`` (Stripe's scheme; usage shares it)."""
    t = int(time.time()) if timestamp is None else timestamp
    mac = hmac.new(secret.encode("utf-8"), f"{t}.".encode("ascii") + body, hashlib.sha256).hexdigest()
    return f"t={t},v1={mac}"


usage_signature = timestamped_hmac  # X-Kilo-Signature
stripe_signature = timestamped_hmac  # Stripe-Signature
