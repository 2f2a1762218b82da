"""Stored-event contracts (schema version 1): what ingest writes to the events table and rating reads from its stream.

One item per event, keyed so that a second delivery of the same event hits the same key (a conditional write turns it
into a duplicate). LiveKit events live under their room - ``pk = room#<room sid>``, ``sk = ev#<event id>`` - so rating
rebuilds a room with one strongly consistent query; other items: ``usage#<client>#<idempotency key>`` / ``usage``,
``stripe#<event id>`` / ``stripe``, and LiveKit events without a room ``livekit#<event id>`` / ``ev#<event id>``.
Items are encoded in DynamoDB's attribute-value format by hand (``S``/``N``/``B``), which is exactly what a stream's
``NewImage`` carries, so the same decoder reads both. Adding a field is backward compatible; changing a meaning bumps
``SCHEMA_VERSION`` and readers keep decoding the older versions.
"""

from __future__ import annotations

import base64
from dataclasses import dataclass
from enum import StrEnum
from typing import Any, Final

SCHEMA_VERSION: Final = 1

AttributeValue = dict[str, Any]
Item = dict[str, AttributeValue]

KEY = "pk"
SORT_KEY = "sk"
TTL_ATTRIBUTE = "expires_at"


class EventSource(StrEnum):
    LIVEKIT = "livekit"
    USAGE = "usage"
    STRIPE = "stripe"


class ContractError(ValueError):
    """A stored item that does not follow this contract."""


def room_partition(room_sid: str) -> str:
    return f"room#{room_sid}"


def livekit_key(event_id: str, room_sid: str = "") -> tuple[str, str]:
    return (room_partition(room_sid) if room_sid else f"livekit#{event_id}", f"ev#{event_id}")


def usage_key(client_id: str, idempotency_key: str) -> tuple[str, str]:
    return (f"usage#{client_id}#{idempotency_key}", "usage")


def stripe_key(event_id: str) -> tuple[str, str]:
    return (f"stripe#{event_id}", "stripe")


def _s(value: str) -> AttributeValue:
    return {"S": value}


def _n(value: int) -> AttributeValue:
    return {"N": str(value)}


def _b(value: bytes) -> AttributeValue:
    return {"B": value}


def _get_s(item: Item, name: str) -> str:
    try:
        return str(item[name]["S"])
    except KeyError as exc:
        raise ContractError(f"item lacks string attribute {name!r}") from exc


def _opt_s(item: Item, name: str) -> str:
    value = item.get(name)
    return str(value["S"]) if value is not None else ""


def _get_n(item: Item, name: str) -> int:
    try:
        return int(item[name]["N"])
    except KeyError as exc:
        raise ContractError(f"item lacks number attribute {name!r}") from exc


def _get_b(item: Item, name: str) -> bytes:
    value = item.get(name)
    if value is None:
        return b""
    raw = value["B"]
    # boto3 hands bytes; a Lambda stream event carries binary attributes base64-encoded
    return base64.b64decode(raw) if isinstance(raw, str) else bytes(raw)


def _common(source: EventSource, key: tuple[str, str], received_at_ms: int, expires_at: int) -> Item:
    return {
        KEY: _s(key[0]),
        SORT_KEY: _s(key[1]),
        "source": _s(source.value),
        "schema_version": _n(SCHEMA_VERSION),
        "received_at_ms": _n(received_at_ms),
        TTL_ATTRIBUTE: _n(expires_at),
    }


_LIVEKIT_STRINGS = (
    "room_sid",
    "room_name",
    "room_metadata",
    "participant_sid",
    "participant_identity",
    "participant_kind",
    "participant_metadata",
    "participant_attributes",
    "track_sid",
    "track_type",
    "track_source",
)


@dataclass(frozen=True, slots=True)
class LiveKitEventRecord:
    """A verified LiveKit webhook, with what rating needs lifted out of the body."""

    event_id: str
    event_type: str
    created_at: int  # seconds (LiveKit's createdAt)
    api_key: str
    body: bytes  # the raw bytes LiveKit signed
    received_at_ms: int
    room_sid: str = ""
    room_name: str = ""
    room_metadata: str = ""
    participant_sid: str = ""
    participant_identity: str = ""
    participant_kind: str = ""  # "" = STANDARD, else AGENT / SIP / EGRESS / INGRESS ...
    participant_metadata: str = ""
    participant_attributes: str = ""  # JSON object of the participant's attributes
    joined_at_ms: int = 0
    track_sid: str = ""
    track_type: str = ""  # "" = AUDIO (zero value), VIDEO, DATA
    track_source: str = ""

    @property
    def key(self) -> tuple[str, str]:
        return livekit_key(self.event_id, self.room_sid)

    def to_item(self, expires_at: int) -> Item:
        item = _common(EventSource.LIVEKIT, self.key, self.received_at_ms, expires_at)
        item |= {
            "event_id": _s(self.event_id),
            "event_type": _s(self.event_type),
            "created_at": _n(self.created_at),
            "api_key": _s(self.api_key),
            "body": _b(self.body),
        }
        for name in _LIVEKIT_STRINGS:
            value = getattr(self, name)
            if value:
                item[name] = _s(value)
        if self.joined_at_ms:
            item["joined_at_ms"] = _n(self.joined_at_ms)
        return item

    @classmethod
    def from_item(cls, item: Item) -> LiveKitEventRecord:
        return cls(
            event_id=_get_s(item, "event_id"),
            event_type=_get_s(item, "event_type"),
            created_at=_get_n(item, "created_at"),
            api_key=_get_s(item, "api_key"),
            body=_get_b(item, "body"),
            received_at_ms=_get_n(item, "received_at_ms"),
            joined_at_ms=_get_n(item, "joined_at_ms") if "joined_at_ms" in item else 0,
            **{name: _opt_s(item, name) for name in _LIVEKIT_STRINGS},
        )


@dataclass(frozen=True, slots=True)
class UsageEventRecord:
    """One app-reported usage event (messages or bytes), stored once per (client, idempotency key)."""

    client_id: str
    idempotency_key: str
    account_id: str
    meter: str  # "messages" | "data_transfer"
    quantity: int
    occurred_at_ms: int
    payload_hash: str  # sha256 of the event's canonical JSON: detects a key reused for different usage
    received_at_ms: int
    room: str = ""
    participant: str = ""

    @property
    def key(self) -> tuple[str, str]:
        return usage_key(self.client_id, self.idempotency_key)

    def to_item(self, expires_at: int) -> Item:
        item = _common(EventSource.USAGE, self.key, self.received_at_ms, expires_at)
        item |= {
            "client_id": _s(self.client_id),
            "idempotency_key": _s(self.idempotency_key),
            "account_id": _s(self.account_id),
            "meter": _s(self.meter),
            "quantity": _n(self.quantity),
            "occurred_at_ms": _n(self.occurred_at_ms),
            "payload_hash": _s(self.payload_hash),
        }
        if self.room:
            item["room"] = _s(self.room)
        if self.participant:
            item["participant"] = _s(self.participant)
        return item

    @classmethod
    def from_item(cls, item: Item) -> UsageEventRecord:
        return cls(
            client_id=_get_s(item, "client_id"),
            idempotency_key=_get_s(item, "idempotency_key"),
            account_id=_get_s(item, "account_id"),
            meter=_get_s(item, "meter"),
            quantity=_get_n(item, "quantity"),
            occurred_at_ms=_get_n(item, "occurred_at_ms"),
            payload_hash=_get_s(item, "payload_hash"),
            received_at_ms=_get_n(item, "received_at_ms"),
            room=_opt_s(item, "room"),
            participant=_opt_s(item, "participant"),
        )


@dataclass(frozen=True, slots=True)
class StripeEventRecord:
    """A verified Stripe webhook event."""

    event_id: str
    event_type: str
    created: int
    livemode: bool
    body: bytes
    received_at_ms: int

    @property
    def key(self) -> tuple[str, str]:
        return stripe_key(self.event_id)

    def to_item(self, expires_at: int) -> Item:
        item = _common(EventSource.STRIPE, self.key, self.received_at_ms, expires_at)
        item |= {
            "event_id": _s(self.event_id),
            "event_type": _s(self.event_type),
            "created": _n(self.created),
            "livemode": {"BOOL": self.livemode},
            "body": _b(self.body),
        }
        return item

    @classmethod
    def from_item(cls, item: Item) -> StripeEventRecord:
        return cls(
            event_id=_get_s(item, "event_id"),
            event_type=_get_s(item, "event_type"),
            created=_get_n(item, "created"),
            livemode=bool(item.get("livemode", {}).get("BOOL", False)),
            body=_get_b(item, "body"),
            received_at_ms=_get_n(item, "received_at_ms"),
        )


StoredEvent = LiveKitEventRecord | UsageEventRecord | StripeEventRecord


def decode_item(item: Item) -> StoredEvent:
    """Decode an events-table item or a stream ``NewImage`` into its record."""
    version = _get_n(item, "schema_version")
    if version > SCHEMA_VERSION:
        raise ContractError(f"schema version {version} is newer than this reader ({SCHEMA_VERSION})")
    source = _get_s(item, "source")
    if source == EventSource.LIVEKIT:
        return LiveKitEventRecord.from_item(item)
    if source == EventSource.USAGE:
        return UsageEventRecord.from_item(item)
    if source == EventSource.STRIPE:
        return StripeEventRecord.from_item(item)
    raise ContractError(f"unknown event source {source!r}")


# --- EventBridge hand-offs --------------------------------------------------------------------------------------
BUS_SOURCE_INGEST: Final = "kilo.billing.ingest"
STRIPE_EVENT_RECEIVED: Final = "StripeEventReceived.v1"


def stripe_event_received_detail(record: StripeEventRecord) -> dict[str, Any]:
    """A thin notification: consumers read the verified event body from the events table by ``key``."""
    return {
        "schema_version": SCHEMA_VERSION,
        "key": {"pk": record.key[0], "sk": record.key[1]},
        "stripe_event_id": record.event_id,
        "type": record.event_type,
        "created": record.created,
        "livemode": record.livemode,
    }
