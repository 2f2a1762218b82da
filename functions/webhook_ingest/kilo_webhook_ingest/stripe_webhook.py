"""Stripe webhooks: verify ``Stripe-Signature`` with the Stripe SDK and read the event's envelope.

Imported only by the Stripe function (through ``logic.ingest_stripe``): the LiveKit and usage paths never load the
Stripe SDK.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import Final

import stripe

from kilo_billing.stripe_events import CONNECT_ACCOUNT_EVENT, LIVEMODE_MISMATCH, StripeEventRecord, foreign
from kilo_webhook_ingest import jsontext
from kilo_webhook_ingest.model import ForeignStripeEventError, InvalidEventError, UnauthorizedError

MAX_ID_BYTES = 255  # Stripe's ids are at most 255 characters


def _signed_at(header: str) -> int | None:
    """The ``t=`` the SDK verified (the first one, as the SDK reads it)."""
    for part in header.split(","):
        name, _, value = part.partition("=")
        if name.strip() == "t":
            try:
                return int(value)
            except ValueError:
                return None
    return None


def verify_signature(body: bytes, header: str | None, secrets: Sequence[str], tolerance: int, now: int) -> None:
    """Any active webhook secret (rotation) may match; the SDK checks the HMAC and that the timestamp is not older
    than ``tolerance``; a timestamp more than ``tolerance`` ahead of ``now`` is refused here (the SDK accepts it)."""
    if not header:
        raise UnauthorizedError("missing_signature", "Stripe-Signature header is required")
    try:
        body.decode("utf-8")  # the SDK verifies the text form; Stripe only ever sends UTF-8 JSON
    except UnicodeDecodeError as exc:
        raise InvalidEventError("malformed_json", "body is not UTF-8 JSON") from exc
    last: stripe.SignatureVerificationError | None = None
    for secret in secrets:
        try:
            stripe.WebhookSignature.verify_header(body, header, secret, tolerance)
        except stripe.SignatureVerificationError as exc:
            last = exc
            continue
        signed_at = _signed_at(header)
        if signed_at is None or signed_at > now + tolerance:
            message = f"Stripe-Signature timestamp is more than {tolerance} s in the future"
            raise UnauthorizedError("bad_signature", message)
        return
    message = "Stripe-Signature does not verify (wrong secret, tampered body or timestamp outside tolerance)"
    raise UnauthorizedError("bad_signature", message) from last


# what a foreign event signed by one of our secrets says about this endpoint's configuration
_CAUSES: Final = {
    LIVEMODE_MISMATCH: (
        ": a webhook secret of the other mode's endpoint is configured here, or StripeLiveMode is set wrong"
    ),
    CONNECT_ACCOUNT_EVENT: " (a Connect endpoint's secret is configured here)",
}


def check_origin(data: dict[str, object], livemode: bool) -> None:
    """Refuse an event of the other mode than this endpoint's (``livemode``) or of a Stripe Connect account
    (``stripe_events.foreign``): signed by one of our secrets all the same, it is never ours to apply."""
    refused = foreign(data, livemode)
    if refused is not None:
        code, fact = refused
        cause = _CAUSES.get(code, "")
        raise ForeignStripeEventError(code, f"{fact}{cause}")


def parse_event(
    body: bytes, received_at_ms: int, livemode: bool, identified: Callable[[str], None] = lambda _: None
) -> StripeEventRecord:
    """The event's envelope, of this endpoint's mode (``livemode``) and of no Connect account (``check_origin``).
    ``identified`` is told the event's id once it is read, before the origin is checked: a refusal's log names it."""
    data = jsontext.loads(body, "a Stripe event")
    if not isinstance(data, dict) or data.get("object") != "event":
        raise InvalidEventError("not_a_stripe_event", "body is not a Stripe event object")
    event_id, event_type, created = data.get("id"), data.get("type"), data.get("created")
    if not isinstance(event_id, str) or not event_id:
        raise InvalidEventError("missing_id", "Stripe event has no 'id'")
    if len(event_id.encode("utf-8")) > MAX_ID_BYTES:
        raise InvalidEventError("invalid_id", f"Stripe event 'id' is longer than {MAX_ID_BYTES} bytes")
    if not isinstance(event_type, str) or not event_type:
        raise InvalidEventError("missing_type", "Stripe event has no 'type'")
    # bool is an int in Python: true/false are not timestamps
    if not isinstance(created, int) or isinstance(created, bool) or not 0 <= created < 2**53:
        raise InvalidEventError("missing_created", "Stripe event has no integer 'created' (unix seconds)")
    identified(event_id)
    check_origin(data, livemode)
    return StripeEventRecord(
        event_id=event_id,
        event_type=event_type,
        created=created,
        livemode=livemode,
        body=body,
        received_at_ms=received_at_ms,
    )
