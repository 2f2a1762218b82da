"""LiveKit webhooks: verify the signature exactly as LiveKit signs it, parse into LiveKit's own protobuf types.

LiveKit sends ``Authorization: <JWT>`` (no ``Bearer``), HS256 with the API secret, ``iss`` = API key, a ``sha256``
claim = standard padded base64 of SHA-256 over the raw body, ``nbf``/``exp`` around now (see
shared/reference/livekit.md). The hash is taken over the bytes received, never over a re-serialisation.
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import json
from collections.abc import Mapping

import jwt
from google.protobuf import json_format
from google.protobuf.descriptor import EnumDescriptor
from livekit.protocol.models import ParticipantInfo, TrackSource, TrackType
from livekit.protocol.webhook import WebhookEvent

from kilo_billing.events import LiveKitEventRecord
from kilo_webhook_ingest import jsontext
from kilo_webhook_ingest.model import InvalidEventError, UnauthorizedError

ALGORITHM = "HS256"
MAX_ID_BYTES = 256  # LiveKit's ids are ~15 characters
MAX_PARSE_DEPTH = 100  # protobuf's own default; deeper JSON is refused before it can exhaust the stack


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
        raise _unauthorized("unknown_api_key", "token was issued by an API key this endpoint does not accept")
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


_MESSAGE_FIELDS = tuple(
    field for field in WebhookEvent.DESCRIPTOR.fields if field.message_type is not None and not field.is_repeated
)


def parse_event(body: bytes) -> WebhookEvent:
    """Parse a verified body into ``livekit.WebhookEvent``. Unknown fields and unknown enum *names* are ignored (the
    zero value stays); unknown enum *numbers* are kept (``to_record`` stores them as ``UNKNOWN_<n>``)."""
    data = jsontext.loads(body, "a LiveKit WebhookEvent")
    if not isinstance(data, dict):
        raise _bad_request("not_a_webhook_event", "body must be a JSON object (a LiveKit WebhookEvent)")
    for field in _MESSAGE_FIELDS:
        # protobuf's lenient parser silently drops a string where an object belongs; a WebhookEvent never has one
        for name in (field.json_name, field.name):
            if name in data and not isinstance(data[name], dict):
                raise _bad_request("not_a_webhook_event", f"'{name}' must be an object in a LiveKit WebhookEvent")
    for outer, inner in _ENUM_PATHS:
        if isinstance(data.get(outer), dict) and isinstance(data[outer].get(inner), bool):
            # protobuf would read true as 1 (AGENT, VIDEO ...): a boolean is never an enum value
            raise _bad_request("not_a_webhook_event", f"'{outer}.{inner}' must be an enum name or number")
    event = WebhookEvent()
    try:
        json_format.ParseDict(data, event, ignore_unknown_fields=True, max_recursion_depth=MAX_PARSE_DEPTH)
    except RecursionError as exc:
        raise _bad_request("too_deeply_nested", "body nests JSON deeper than any WebhookEvent") from exc
    except (json_format.ParseError, ValueError, TypeError) as exc:
        detail = str(exc)[:200]
        raise _bad_request("not_a_webhook_event", f"body is not a LiveKit WebhookEvent: {detail}") from exc
    if not event.id:
        raise _bad_request("missing_id", "WebhookEvent has no 'id'")
    if not event.event:
        raise _bad_request("missing_event", "WebhookEvent has no 'event' type")
    room_sid = event.room.sid or event.egress_info.room_id
    for name, value in (("id", event.id), ("room.sid", room_sid), ("event", event.event)):
        if len(value.encode("utf-8")) > MAX_ID_BYTES:  # ids become table keys (at most 1 KB / 2 KB in DynamoDB)
            raise _bad_request("invalid_id", f"'{name}' is longer than {MAX_ID_BYTES} bytes")
    return event


_ENUM_PATHS = (("participant", "kind"), ("track", "type"), ("track", "source"))


def enum_name(enum: EnumDescriptor, number: int) -> str:
    """The enum value's name; ``""`` for the zero value (LiveKit omits it); ``UNKNOWN_<n>`` for a value this protocol
    version does not know (a newer LiveKit server), stored as is and rated as the safe default (docs/decisions.md)."""
    if not number:
        return ""
    value = enum.values_by_number.get(number)
    return value.name if value is not None else f"UNKNOWN_{number}"


def to_record(event: WebhookEvent, body: bytes, api_key: str, received_at_ms: int) -> LiveKitEventRecord:
    """The stored form: the raw signed bytes plus what rating reads (so rating never re-parses bodies)."""
    room_sid, room_name = event.room.sid, event.room.name
    if not room_sid and event.HasField("egress_info"):
        room_sid, room_name = event.egress_info.room_id, event.egress_info.room_name
    if not room_name and event.HasField("ingress_info"):
        room_name = event.ingress_info.room_name
    participant = event.participant
    joined_at_ms = participant.joined_at_ms or participant.joined_at * 1000
    kind = enum_name(ParticipantInfo.Kind.DESCRIPTOR, participant.kind)
    has_track = event.HasField("track")
    track_type = enum_name(TrackType.DESCRIPTOR, event.track.type) if has_track else ""
    track_source = enum_name(TrackSource.DESCRIPTOR, event.track.source) if has_track else ""
    return LiveKitEventRecord(
        event_id=event.id,
        event_type=event.event,
        created_at=event.created_at or received_at_ms // 1000,
        api_key=api_key,
        body=body,
        received_at_ms=received_at_ms,
        room_sid=room_sid,
        room_name=room_name,
        room_metadata=event.room.metadata,
        participant_sid=participant.sid,
        participant_identity=participant.identity,
        participant_kind=kind,
        participant_metadata=participant.metadata,
        # compact and unescaped: never longer than the attributes' JSON in the signed body (the item stays bounded)
        participant_attributes=json.dumps(
            dict(participant.attributes), sort_keys=True, ensure_ascii=False, separators=(",", ":")
        )
        if participant.attributes
        else "",
        joined_at_ms=joined_at_ms,
        track_sid=event.track.sid,
        track_type=track_type,
        track_source=track_source,
    )
