"""Stored-event contracts: what ingest writes to the events table and rating reads from it (queries and its stream).

One item per event, keyed so that a second delivery of the same event hits the same key (a conditional write turns it
into a duplicate). LiveKit events live under their room - ``pk = room#<room sid>``, ``sk = ev#<event id>`` - so rating
rebuilds a room with one strongly consistent query; other items: ``usage#<client>#<idempotency key>`` / ``usage``,
``stripe#<event id>`` / ``stripe``, and LiveKit events without a room ``livekit#<event id>`` / ``ev#<event id>``.

Items are mapped through boto3's ``TypeSerializer``/``TypeDeserializer`` (``kilo_billing.items``); the same decoder
reads a boto3 item and a stream ``NewImage`` (whose binary values are base64 text).

Versions. ``schema_version`` on an item is the oldest reader version that decodes the item faithfully:
- 1: the raw signed body in ``body`` (bytes);
- 2: the body compressed with zlib in ``body_zlib`` instead (bodies of ``COMPRESS_FROM_BYTES`` or more), so that large
  events fit DynamoDB's item limit and cost fewer write units. Everything else is as in version 1.
Items with a small body are still written as version 1, so a reader of version 1 keeps reading them (rolling deploys).
This module reads both. Adding a field is backward compatible; changing a meaning bumps ``SCHEMA_VERSION``.

Size. DynamoDB refuses items over 400 KB (409,600 bytes: attribute names and values, binary values by their bytes).
``item_size`` measures as DynamoDB does (numbers generously) and ``MAX_ITEM_BYTES`` leaves a margin below it, so an item
``check_item_size`` lets through is not refused for its size. (moto refuses above 405,000 bytes and counts binary
values at their base64 length, a third more than DynamoDB: tests near the limit must allow for that.)
"""

from __future__ import annotations

import zlib
from collections.abc import Callable, Mapping
from dataclasses import MISSING, fields
from decimal import Decimal
from enum import StrEnum
from typing import TYPE_CHECKING, Any, ClassVar, Final, Self, TypeAlias

from kilo_billing import items as _items
from kilo_billing.items import from_item, to_item

if TYPE_CHECKING:
    from kilo_billing.livekit_events import LiveKitEventRecord
    from kilo_billing.stripe_events import StripeEventRecord
    from kilo_billing.usage_events import UsageEventRecord

Item = _items.Item  # an item in DynamoDB's attribute-value form

SCHEMA_VERSION: Final = 2  # the newest item version this module reads (and writes, for compressed bodies)
RAW_BODY_VERSION: Final = 1

KEY = "pk"
SORT_KEY = "sk"
CREATED_AT = "created_at"  # a LiveKit event's createdAt (seconds) on its item
# the events table's GSI of a room's events by createdAt (pk, created_at; keys only; sparse: LiveKit events only): a
# room's latest event is one item, a reverse Query with Limit 1 (the table's sort key is the event id)
ROOM_EVENTS_BY_TIME = "room_events_by_time"
TTL_ATTRIBUTE = "expires_at"
# How long raw events (webhooks, usage, the sweeper's synthetic closes) are kept: RAW_EVENT_TTL_DAYS, read by ingest
# and by rating's sweeper alike. Never under 40 days, so usage backdated the 35 days the usage API allows is still
# stored while it is rated (docs/decisions.md D14; the template's RawEventTtlDays has the same MinValue).
DEFAULT_RAW_EVENT_TTL_DAYS: Final = 400
MIN_RAW_EVENT_TTL_DAYS: Final = 40

MAX_ITEM_BYTES: Final = 400_000
COMPRESS_FROM_BYTES: Final = 4096  # smaller bodies are stored as they came (typical LiveKit events are ~1 KB)


class EventSource(StrEnum):
    LIVEKIT = "livekit"
    USAGE = "usage"
    STRIPE = "stripe"


class ContractError(ValueError):
    """A stored item that does not follow this contract."""


class ItemTooLargeError(ValueError):
    """An item that DynamoDB would refuse for its size, whatever the number of retries."""

    def __init__(self, size: int, limit: int) -> None:
        super().__init__(f"item of {size} bytes exceeds the {limit}-byte item limit")
        self.size = size
        self.limit = limit


def room_partition(room_sid: str) -> str:
    return f"room#{room_sid}"


def livekit_key(event_id: str, room_sid: str = "") -> tuple[str, str]:
    return (room_partition(room_sid) if room_sid else f"livekit#{event_id}", f"ev#{event_id}")


def usage_key(client_id: str, idempotency_key: str) -> tuple[str, str]:
    return (f"usage#{client_id}#{idempotency_key}", "usage")


def stripe_key(event_id: str) -> tuple[str, str]:
    return (f"stripe#{event_id}", "stripe")


STRIPE_LIVEMODE: Final = "STRIPE_LIVEMODE"


def stage_livemode(raw: str | None) -> bool:
    """The stage's Stripe mode from ``STRIPE_LIVEMODE`` (the template's ``StripeLiveMode``), read the same by ingest
    and the invoice functions (the rule it feeds is ``stripe_events.foreign``; kept here, where every ingest route
    already loads, so the LiveKit and usage routes load no Stripe module, D127): exactly the template's AllowedValues,
    ``true`` or ``false`` (unset or empty: ``false``, test mode); anything else raises ``ValueError`` - a function
    refusing to start rather than guessing a mode (D349)."""
    if raw is None or raw == "":
        return False
    if raw not in ("true", "false"):
        raise ValueError(f"{STRIPE_LIVEMODE} must be true or false (the StripeLiveMode parameter), got {raw[:20]!r}")
    return raw == "true"


# --- size ---------------------------------------------------------------------------------------------------------


def _value_size(value: Mapping[str, Any]) -> int:
    ((kind, inner),) = value.items()
    if kind == "S":
        return len(str(inner).encode("utf-8"))
    if kind == "N":
        return len(str(inner)) + 1
    if kind == "B":  # the raw bytes (a stream image carries them base64-encoded)
        return len(inner) if isinstance(inner, bytes | bytearray) else len(str(inner)) * 3 // 4
    if kind in ("BOOL", "NULL"):
        return 1
    if kind in ("SS", "NS", "BS"):
        return sum(_value_size({kind[0]: member}) for member in inner) + 3
    if kind == "L":
        return sum(_value_size(member) for member in inner) + 3 + len(inner)
    if kind == "M":
        return sum(len(name.encode("utf-8")) + _value_size(member) + 1 for name, member in inner.items()) + 3
    raise ContractError(f"unknown attribute type {kind!r}")


def item_size(item: Item) -> int:
    """Bytes ``item`` counts against the item limit, measured conservatively (see the module's docstring)."""
    return sum(len(name.encode("utf-8")) + _value_size(value) for name, value in item.items())


def check_item_size(item: Item, limit: int = MAX_ITEM_BYTES) -> Item:
    size = item_size(item)
    if size > limit:
        raise ItemTooLargeError(size, limit)
    return item


# --- decoding helpers ---------------------------------------------------------------------------------------------


def _required(values: Mapping[str, Any], name: str) -> Any:
    try:
        return values[name]
    except KeyError:
        raise ContractError(f"item lacks attribute {name!r}") from None


def _str(values: Mapping[str, Any], name: str) -> str:
    value = _required(values, name)
    if not isinstance(value, str):
        raise ContractError(f"attribute {name!r} must be a string")
    return value


def _int(values: Mapping[str, Any], name: str) -> int:
    value = _required(values, name)
    if not isinstance(value, Decimal) or value != value.to_integral_value():
        raise ContractError(f"attribute {name!r} must be an integer")
    return int(value)


def _body_values(body: bytes) -> tuple[dict[str, Any], int]:
    """The body's attributes and the item version they need: raw (1) or zlib-compressed (2) when that is smaller."""
    if len(body) >= COMPRESS_FROM_BYTES:
        packed = zlib.compress(body, 6)
        if len(packed) < len(body):
            return {"body_zlib": packed}, SCHEMA_VERSION
    return {"body": body}, RAW_BODY_VERSION


def _body(values: Mapping[str, Any]) -> bytes:
    if "body_zlib" in values:
        packed = values["body_zlib"]
        try:
            return zlib.decompress(packed)
        except (zlib.error, TypeError) as exc:
            raise ContractError(f"body_zlib does not decompress: {exc}") from exc
    body = values.get("body", b"")
    if not isinstance(body, bytes):
        raise ContractError("attribute 'body' must be binary")
    return body


def _bool(values: Mapping[str, Any], name: str) -> bool:
    return values.get(name) is True


def _body_attribute(values: Mapping[str, Any], _: str) -> bytes:
    return _body(values)


# how a field is read back, by its declared type; a field with a default that the item lacks takes its default
_DECODERS: Final[Mapping[str, Callable[[Mapping[str, Any], str], Any]]] = {
    "str": _str,
    "int": _int,
    "bool": _bool,
    "bytes": _body_attribute,
}


class StoredRecord:
    """The item mapping every stored-event record shares, driven by the record's dataclass fields: the key and the
    common attributes, then one attribute per field (a ``bytes`` field is the body, raw or compressed; a field holding
    its default is left out, so absent = default)."""

    __slots__ = ()
    SOURCE: ClassVar[EventSource]

    @property
    def key(self) -> tuple[str, str]:
        raise NotImplementedError

    def to_item(self, expires_at: int) -> Item:
        values: dict[str, Any] = {}
        version = RAW_BODY_VERSION
        for field in fields(self):  # type: ignore[arg-type]  # every subclass is a dataclass
            value = getattr(self, field.name)
            if field.type == "bytes":
                body, version = _body_values(value)
                values |= body
            else:
                values[field.name] = None if field.default is not MISSING and value == field.default else value
        key = self.key
        values |= {
            KEY: key[0],
            SORT_KEY: key[1],
            "source": self.SOURCE.value,
            "schema_version": version,
            TTL_ATTRIBUTE: expires_at,
        }
        return to_item(values)

    @classmethod
    def from_item(cls, item: Item) -> Self:
        return cls._from_values(from_item(item))

    @classmethod
    def _from_values(cls, values: Mapping[str, Any]) -> Self:
        decoded = {
            field.name: (
                field.default
                if field.default is not MISSING and field.name not in values
                else _DECODERS[str(field.type)](values, field.name)
            )
            for field in fields(cls)  # type: ignore[arg-type]
        }
        return cls(**decoded)


# the record of each source lives in its own module, so that a function loads only the records it handles
# (each dataclass costs ~0.5 ms of a cold start): kilo_billing.livekit_events, usage_events, stripe_events
StoredEvent: TypeAlias = "LiveKitEventRecord | UsageEventRecord | StripeEventRecord"


def decode_item(item: Item) -> StoredEvent:
    """Decode an events-table item or a stream ``NewImage`` (any version up to ``SCHEMA_VERSION``) into its record."""
    try:
        values = from_item(item)
    except (TypeError, ValueError, KeyError) as exc:
        raise ContractError(f"not a DynamoDB item: {exc}") from exc
    version = _int(values, "schema_version")
    if version > SCHEMA_VERSION:
        raise ContractError(f"schema version {version} is newer than this reader ({SCHEMA_VERSION})")
    source = _str(values, "source")
    if source == EventSource.LIVEKIT:
        from kilo_billing.livekit_events import LiveKitEventRecord  # noqa: PLC0415 - see StoredEvent

        return LiveKitEventRecord._from_values(values)
    if source == EventSource.USAGE:
        from kilo_billing.usage_events import UsageEventRecord  # noqa: PLC0415

        return UsageEventRecord._from_values(values)
    if source == EventSource.STRIPE:
        from kilo_billing.stripe_events import StripeEventRecord  # noqa: PLC0415

        return StripeEventRecord._from_values(values)
    raise ContractError(f"unknown event source {source!r}")


# --- EventBridge hand-offs --------------------------------------------------------------------------------------
BUS_SOURCE_INGEST: Final = "kilo.billing.ingest"
STRIPE_EVENT_RECEIVED: Final = "StripeEventReceived.v1"
STRIPE_EVENT_RECEIVED_VERSION: Final = 1  # the detail's own version (the detail-type's .v1), not the item version


def stripe_event_received_detail(record: StripeEventRecord) -> dict[str, Any]:
    """A thin notification: consumers read the verified event body from the events table by ``key``."""
    return {
        "schema_version": STRIPE_EVENT_RECEIVED_VERSION,
        "key": {"pk": record.key[0], "sk": record.key[1]},
        "stripe_event_id": record.event_id,
        "type": record.event_type,
        "created": record.created,
        "livemode": record.livemode,
    }
