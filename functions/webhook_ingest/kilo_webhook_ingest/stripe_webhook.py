"""Stripe webhooks: verify ``Stripe-Signature`` with the Stripe SDK, store once, hand on to the billing bus.

Imported only by the Stripe function: the LiveKit and usage paths never load the Stripe SDK.
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any, Protocol

import stripe

from kilo_billing.events import (
    BUS_SOURCE_INGEST,
    STRIPE_EVENT_RECEIVED,
    StripeEventRecord,
    stripe_event_received_detail,
)
from kilo_webhook_ingest.http import RawRequest, RequestRejectedError
from kilo_webhook_ingest.store import EventStore


class EventPublisher(Protocol):
    def publish_stripe_event(self, record: StripeEventRecord) -> None: ...


def verify_signature(body: bytes, header: str | None, secrets: Sequence[str], tolerance: int) -> None:
    """Any active webhook secret (rotation) may match; the SDK checks the HMAC and the timestamp tolerance."""
    if not header:
        raise RequestRejectedError(401, "missing_signature", "Stripe-Signature header is required")
    try:
        body.decode("utf-8")  # the SDK verifies the text form; Stripe only ever sends UTF-8 JSON
    except UnicodeDecodeError as exc:
        raise RequestRejectedError(400, "malformed_json", "body is not UTF-8 JSON") from exc
    last: stripe.SignatureVerificationError | None = None
    for secret in secrets:
        try:
            stripe.WebhookSignature.verify_header(body, header, secret, tolerance)
        except stripe.SignatureVerificationError as exc:
            last = exc
            continue
        return
    message = "Stripe-Signature does not verify (wrong secret, tampered body or timestamp outside tolerance)"
    raise RequestRejectedError(401, "bad_signature", message) from last


def parse_event(body: bytes, received_at_ms: int) -> StripeEventRecord:
    try:
        data = json.loads(body)
    except (UnicodeDecodeError, ValueError) as exc:
        raise RequestRejectedError(400, "malformed_json", "body is not valid JSON") from exc
    if not isinstance(data, dict) or data.get("object") != "event":
        raise RequestRejectedError(400, "not_a_stripe_event", "body is not a Stripe event object")
    event_id, event_type, created = data.get("id"), data.get("type"), data.get("created")
    if not isinstance(event_id, str) or not event_id:
        raise RequestRejectedError(400, "missing_id", "Stripe event has no 'id'")
    if not isinstance(event_type, str) or not event_type:
        raise RequestRejectedError(400, "missing_type", "Stripe event has no 'type'")
    if not isinstance(created, int):
        raise RequestRejectedError(400, "missing_created", "Stripe event has no integer 'created'")
    return StripeEventRecord(
        event_id=event_id,
        event_type=event_type,
        created=created,
        livemode=bool(data.get("livemode", False)),
        body=body,
        received_at_ms=received_at_ms,
    )


@dataclass(frozen=True, slots=True)
class StripeOutcome:
    event_id: str
    event_type: str
    status: str


def ingest_stripe(
    request: RawRequest,
    secrets: Sequence[str],
    store: EventStore,
    publisher: EventPublisher,
    tolerance: int,
    ttl: int,
    now_ms: int,
) -> StripeOutcome:
    """Verify, store once, publish. A duplicate is published again: the hand-off is at-least-once, so a publish that
    failed after the store succeeded is repaired by Stripe's retry; consumers dedupe on the Stripe event id."""
    verify_signature(request.body, request.header("stripe-signature"), secrets, tolerance)
    record = parse_event(request.body, now_ms)
    result = store.put_new(record.to_item(ttl))
    publisher.publish_stripe_event(record)
    return StripeOutcome(record.event_id, record.event_type, "stored" if result.stored else "duplicate")


class PublishFailedError(Exception):
    pass


class EventBridgePublisher:
    def __init__(self, client: Any, bus_name: str) -> None:
        self._client = client
        self._bus = bus_name

    def publish_stripe_event(self, record: StripeEventRecord) -> None:
        try:
            response = self._client.put_events(
                Entries=[
                    {
                        "EventBusName": self._bus,
                        "Source": BUS_SOURCE_INGEST,
                        "DetailType": STRIPE_EVENT_RECEIVED,
                        "Detail": json.dumps(stripe_event_received_detail(record)),
                    }
                ]
            )
        except Exception as exc:  # botocore errors of any kind: the sender must retry
            raise PublishFailedError(type(exc).__name__) from exc
        if response.get("FailedEntryCount", 0):
            raise PublishFailedError(str(response["Entries"][0].get("ErrorCode", "failed entry")))
