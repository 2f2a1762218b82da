"""LiveKit webhooks: verify the signature exactly as LiveKit signs it, read the fields ingest stores.

LiveKit sends ``Authorization: <JWT>`` (no ``Bearer``), HS256 with the API secret, ``iss`` = API key, a ``sha256``
claim = standard padded base64 of SHA-256 over the raw body, ``nbf``/``exp`` around now (see
shared/reference/livekit.md). The hash is taken over the bytes received, never over a re-serialisation.

The body is LiveKit's ``WebhookEvent`` in protobuf's JSON mapping. Ingest reads only the fields it stores beside the
raw bytes (ids, room, participant, track), with ``json.loads`` (C) and the JSON mapping's rules for exactly those
fields (``_Reader``): both field spellings, ``null`` as unset, int64 as number or string, enums by name or number
(unknown names ignored, unknown numbers kept), strings without lone surrogates, map values strings. Other fields are
not read and not validated beyond being objects where LiveKit's schema has a message (docs/decisions.md): the stored
body is the signed bytes, unchanged. No protobuf on this path: its pure-Python JSON parser cost ~60 % of the logic's CPU
and its import ~70 ms of every cold start. ``tests/unit/test_livekit_fields.py`` holds this reader to protobuf's own
parse (``livekit-protocol``) and its enum tables to LiveKit's descriptors.
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import json
import re
from collections.abc import Callable, Mapping
from typing import Any, NamedTuple, TypeVar

import jwt

from kilo_billing.livekit_events import LiveKitEventRecord
from kilo_webhook_ingest import jsontext
from kilo_webhook_ingest.model import UNKNOWN_API_KEY, InvalidEventError, UnauthorizedError

ALGORITHM = "HS256"
MAX_ID_BYTES = 256  # LiveKit's ids are ~15 characters


def _unauthorized(code: str, message: str) -> UnauthorizedError:
    return UnauthorizedError(code, message)


def _unverified_issuer(token: str) -> str | None:
    """The ``iss`` claim, read before verification only to choose which secret verifies the token."""
    parts = token.split(".")
    if len(parts) != 3:
        return None
    try:
        claims = json.loads(base64.urlsafe_b64decode(parts[1] + "=" * (-len(parts[1]) % 4)))
    except (ValueError, RecursionError):  # not base64/JSON, or JSON nested deeper than the stack: not a token
        return None
    issuer = claims.get("iss") if isinstance(claims, dict) else None
    return issuer if isinstance(issuer, str) and issuer else None


def verify_signature(body: bytes, authorization: str | None, keys: Mapping[str, str], leeway_seconds: int) -> str:
    """Check the webhook's JWT and body hash; return the API key that signed it.

    Several API keys may be active at once (rotation): the secret is picked by the token's ``iss``.
    """
    if not authorization:
        raise _unauthorized("missing_signature", "Authorization header with LiveKit's webhook JWT is required")
    token = authorization.strip()
    if token[:7].lower() == "bearer ":
        raise _unauthorized("bad_signature", "Authorization must be the raw JWT LiveKit sends, without 'Bearer '")
    api_key = _unverified_issuer(token)
    if api_key is None:
        raise _unauthorized("bad_signature", "Authorization is not a JWT with an 'iss' (API key) claim")
    secret = keys.get(api_key)
    if secret is None:
        raise _unauthorized(UNKNOWN_API_KEY, "token was issued by an API key this endpoint does not accept")
    try:
        claims = jwt.decode(
            token,
            secret,
            algorithms=[ALGORITHM],
            issuer=api_key,
            leeway=leeway_seconds,
            options={"require": ["exp", "iss"]},
        )
    except jwt.ExpiredSignatureError as exc:
        raise _unauthorized("expired_signature", "token has expired") from exc
    except jwt.ImmatureSignatureError as exc:
        raise _unauthorized("premature_signature", "token is not valid yet (nbf is in the future)") from exc
    except jwt.MissingRequiredClaimError as exc:
        raise _unauthorized("bad_signature", f"token lacks the required claim {exc.claim!r}") from exc
    except (jwt.PyJWTError, RecursionError) as exc:
        raise _unauthorized("bad_signature", "token signature does not verify with this API key's secret") from exc
    claimed = claims.get("sha256")
    if not isinstance(claimed, str) or not claimed:
        raise _unauthorized("missing_body_hash", "token has no 'sha256' claim over the body")
    actual = base64.b64encode(hashlib.sha256(body).digest()).decode("ascii")
    if not hmac.compare_digest(claimed.encode("ascii", "replace"), actual.encode("ascii")):
        raise _unauthorized("body_hash_mismatch", "body does not match the signed sha256 claim")
    return api_key


def _bad_request(code: str, message: str) -> InvalidEventError:
    return InvalidEventError(code, message)


# LiveKit's enums (livekit-protocol 1.1.29: livekit.ParticipantInfo.Kind, livekit.TrackType, livekit.TrackSource),
# number -> name; the test compares them with the protocol package's descriptors.
PARTICIPANT_KINDS = {0: "STANDARD", 1: "INGRESS", 2: "EGRESS", 3: "SIP", 4: "AGENT", 7: "CONNECTOR", 8: "BRIDGE"}
TRACK_TYPES = {0: "AUDIO", 1: "VIDEO", 2: "DATA"}
TRACK_SOURCES = {0: "UNKNOWN", 1: "CAMERA", 2: "MICROPHONE", 3: "SCREEN_SHARE", 4: "SCREEN_SHARE_AUDIO"}
_KIND_NUMBERS, _TYPE_NUMBERS, _SOURCE_NUMBERS = (
    {name: number for number, name in table.items()} for table in (PARTICIPANT_KINDS, TRACK_TYPES, TRACK_SOURCES)
)
# WebhookEvent's singular message fields (JSON name, proto name): each must be an object when present
_MESSAGE_FIELDS = (
    ("room", "room"),
    ("participant", "participant"),
    ("egressInfo", "egress_info"),
    ("ingressInfo", "ingress_info"),
    ("track", "track"),
    ("job", "job"),
)
_INT64 = (-(2**63), 2**63 - 1)
_INT32 = (-(2**31), 2**31 - 1)
_LONE_SURROGATE = re.compile("[\ud800-\udfff]")


T = TypeVar("T")


class _FieldError(ValueError):
    pass


class LiveKitWebhook(NamedTuple):
    """What ingest reads of a ``WebhookEvent`` (zero values where absent, as protobuf's getters give them). A
    NamedTuple: ~0.1 ms to create at cold start where a frozen dataclass of 17 fields costs ~0.8 ms (D162)."""

    id: str
    event: str
    created_at: int
    room_sid: str
    room_name: str
    room_metadata: str
    egress_room_id: str | None  # None: no egressInfo
    egress_room_name: str
    ingress_room_name: str | None  # None: no ingressInfo
    participant_sid: str
    participant_identity: str
    participant_kind: int
    participant_metadata: str
    participant_attributes: dict[str, str]
    participant_joined_at: int
    participant_joined_at_ms: int
    track: bool  # a track object was sent
    track_sid: str
    track_type: int
    track_source: int


def _field(data: dict[str, Any], json_name: str, name: str, convert: Callable[[Any, str], T], where: str) -> T:
    """A field by either spelling, converted; both present: each must be valid and the later one wins (protobuf)."""
    if json_name == name or name not in data:
        return convert(data.get(json_name), where)
    if json_name not in data:
        return convert(data[name], where)
    converted = [convert(value, where) for key, value in data.items() if key in (json_name, name)]
    return converted[-1]


def _string(value: Any, where: str) -> str:
    if value is None:
        return ""
    if not isinstance(value, str):
        raise _FieldError(f"{where} must be a string")
    if _LONE_SURROGATE.search(value):
        raise _FieldError(f"{where} has an unpaired surrogate")
    return value


def _int64(value: Any, where: str) -> int:
    """protobuf's JSON int64: a number or a string (``"1771351907"``, also ``"1e3"``), integral, in range."""
    if value is None:
        return 0
    if isinstance(value, bool) or (isinstance(value, str) and " " in value):
        raise _FieldError(f"{where} must be an integer")
    if isinstance(value, float) and not value.is_integer():
        raise _FieldError(f"{where} must be an integer")
    try:
        number = int(value)
    except ValueError:
        try:
            as_float = float(value)
        except ValueError:
            raise _FieldError(f"{where} must be an integer") from None
        if not as_float.is_integer():
            raise _FieldError(f"{where} must be an integer") from None
        number = int(as_float)
    except (TypeError, OverflowError):
        raise _FieldError(f"{where} must be an integer") from None
    if not _INT64[0] <= number <= _INT64[1]:
        raise _FieldError(f"{where} is out of range")
    return number


def _enum(value: Any, numbers: dict[str, int], where: str) -> int:
    """An open proto3 enum: a name (unknown names are ignored: 0) or a number (kept even when unknown)."""
    if value is None:
        return 0
    if isinstance(value, bool):  # protobuf would read true as 1 (AGENT, VIDEO ...): never an enum value
        raise _bad_request("not_a_webhook_event", f"'{where}' must be an enum name or number")
    if isinstance(value, str):
        known = numbers.get(_string(value, where))
        if known is not None:
            return known
    try:
        number = int(value)
    except ValueError:
        return 0  # a name this protocol version does not know
    except (TypeError, OverflowError):
        raise _FieldError(f"{where} must be an enum name or number") from None
    if not _INT32[0] <= number <= _INT32[1]:
        raise _FieldError(f"{where} is out of range")
    return number


def _string_map(value: Any, where: str) -> dict[str, str]:
    if value is None:
        return {}
    if not isinstance(value, dict):
        raise _FieldError(f"{where} must be an object")
    if not all(isinstance(inner, str) for inner in value.values()):  # null too: a map's values are never unset
        raise _FieldError(f"{where} must map strings to strings")
    return {_string(key, where): _string(inner, f"{where}.{key}") for key, inner in value.items()}


def _object(value: Any, where: str) -> dict[str, Any] | None:
    return value if isinstance(value, dict) else None  # anything else but null was refused before


def parse_event(body: bytes) -> LiveKitWebhook:
    """Read a verified body's ``WebhookEvent`` fields. Unknown fields and unknown enum *names* are ignored (the zero
    value stays); unknown enum *numbers* are kept (``to_record`` stores them as ``UNKNOWN_<n>``)."""
    data = jsontext.loads(body, "a LiveKit WebhookEvent")
    if not isinstance(data, dict):
        raise _bad_request("not_a_webhook_event", "body must be a JSON object (a LiveKit WebhookEvent)")
    for json_name, name in _MESSAGE_FIELDS:
        for key in dict.fromkeys((json_name, name)):
            # protobuf's lenient parser silently drops a string where an object belongs; a WebhookEvent never has one
            if key in data and data[key] is not None and not isinstance(data[key], dict):
                raise _bad_request("not_a_webhook_event", f"'{key}' must be an object in a LiveKit WebhookEvent")
    try:
        event = _read(data)
    except _FieldError as exc:
        raise _bad_request("not_a_webhook_event", f"body is not a LiveKit WebhookEvent: {exc}") from exc
    if not event.id:
        raise _bad_request("missing_id", "WebhookEvent has no 'id'")
    if not event.event:
        raise _bad_request("missing_event", "WebhookEvent has no 'event' type")
    room_sid = event.room_sid or (event.egress_room_id or "")
    for name, value in (("id", event.id), ("room.sid", room_sid), ("event", event.event)):
        if len(value.encode("utf-8")) > MAX_ID_BYTES:  # ids become table keys (at most 1 KB / 2 KB in DynamoDB)
            raise _bad_request("invalid_id", f"'{name}' is longer than {MAX_ID_BYTES} bytes")
    return event


def _read(data: dict[str, Any]) -> LiveKitWebhook:
    room = _field(data, "room", "room", _object, "room") or {}
    egress = _field(data, "egressInfo", "egress_info", _object, "egressInfo")
    ingress = _field(data, "ingressInfo", "ingress_info", _object, "ingressInfo")
    participant = _field(data, "participant", "participant", _object, "participant") or {}
    track = _field(data, "track", "track", _object, "track")
    track_fields = track or {}
    return LiveKitWebhook(
        id=_string(data.get("id"), "id"),
        event=_string(data.get("event"), "event"),
        created_at=_field(data, "createdAt", "created_at", _int64, "createdAt"),
        room_sid=_string(room.get("sid"), "room.sid"),
        room_name=_string(room.get("name"), "room.name"),
        room_metadata=_string(room.get("metadata"), "room.metadata"),
        egress_room_id=None if egress is None else _field(egress, "roomId", "room_id", _string, "egressInfo.roomId"),
        egress_room_name=_field(egress or {}, "roomName", "room_name", _string, "egressInfo.roomName"),
        ingress_room_name=None
        if ingress is None
        else _field(ingress, "roomName", "room_name", _string, "ingressInfo.roomName"),
        participant_sid=_string(participant.get("sid"), "participant.sid"),
        participant_identity=_string(participant.get("identity"), "participant.identity"),
        participant_kind=_enum(participant.get("kind"), _KIND_NUMBERS, "participant.kind"),
        participant_metadata=_string(participant.get("metadata"), "participant.metadata"),
        participant_attributes=_string_map(participant.get("attributes"), "participant.attributes"),
        participant_joined_at=_field(participant, "joinedAt", "joined_at", _int64, "participant.joinedAt"),
        participant_joined_at_ms=_field(participant, "joinedAtMs", "joined_at_ms", _int64, "participant.joinedAtMs"),
        track=track is not None,
        track_sid=_string(track_fields.get("sid"), "track.sid"),
        track_type=_enum(track_fields.get("type"), _TYPE_NUMBERS, "track.type"),
        track_source=_enum(track_fields.get("source"), _SOURCE_NUMBERS, "track.source"),
    )


def enum_name(table: dict[int, str], number: int) -> str:
    """The enum value's name; ``""`` for the zero value (LiveKit omits it); ``UNKNOWN_<n>`` for a value this protocol
    version does not know (a newer LiveKit server), stored as is and rated as the safe default (docs/decisions.md)."""
    if not number:
        return ""
    return table.get(number, f"UNKNOWN_{number}")


def to_record(event: LiveKitWebhook, body: bytes, api_key: str, received_at_ms: int) -> LiveKitEventRecord:
    """The stored form: the raw signed bytes plus what rating reads (so rating never re-parses bodies)."""
    room_sid, room_name = event.room_sid, event.room_name
    if not room_sid and event.egress_room_id is not None:
        room_sid, room_name = event.egress_room_id, event.egress_room_name
    if not room_name and event.ingress_room_name is not None:
        room_name = event.ingress_room_name
    joined_at_ms = event.participant_joined_at_ms or event.participant_joined_at * 1000
    attributes = event.participant_attributes
    return LiveKitEventRecord(
        event_id=event.id,
        event_type=event.event,
        created_at=event.created_at or received_at_ms // 1000,
        api_key=api_key,
        body=body,
        received_at_ms=received_at_ms,
        room_sid=room_sid,
        room_name=room_name,
        room_metadata=event.room_metadata,
        participant_sid=event.participant_sid,
        participant_identity=event.participant_identity,
        participant_kind=enum_name(PARTICIPANT_KINDS, event.participant_kind),
        participant_metadata=event.participant_metadata,
        # compact and unescaped: never longer than the attributes' JSON in the signed body (the item stays bounded)
        participant_attributes=json.dumps(attributes, sort_keys=True, ensure_ascii=False, separators=(",", ":"))
        if attributes
        else "",
        joined_at_ms=joined_at_ms,
        track_sid=event.track_sid,
        track_type=enum_name(TRACK_TYPES, event.track_type) if event.track else "",
        track_source=enum_name(TRACK_SOURCES, event.track_source) if event.track else "",
    )
