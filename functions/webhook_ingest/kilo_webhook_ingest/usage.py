"""App-reported usage (``POST /v1/usage``): HMAC signature like Stripe's, all-or-nothing batch validation.

Signature: ``X-Kilo-Client: <client id>`` and ``X-Kilo-Signature: t=<unix seconds>,v1=<hex HMAC-SHA256 of "t.body">``
(several ``v1=`` entries allowed; any secret of the client may match, for rotation). The timestamp must be within
``tolerance`` seconds of now, so a captured request cannot be replayed later.
"""

from __future__ import annotations

import hashlib
import hmac
import json
import re
from collections.abc import Sequence
from datetime import UTC, datetime, timedelta
from enum import StrEnum
from typing import Annotated, Any

from pydantic import (
    AfterValidator,
    AwareDatetime,
    BaseModel,
    ConfigDict,
    Field,
    StrictInt,
    TypeAdapter,
    ValidationError,
)

from kilo_billing.accounts import InvalidAccountIdError, check_account_id
from kilo_billing.usage_events import UsageEventRecord
from kilo_webhook_ingest import jsontext
from kilo_webhook_ingest.model import InvalidEventError, UnauthorizedError
from kilo_webhook_ingest.usage_model import UsageClient

MAX_BATCH = 1000
MAX_LISTED_PROBLEMS = 200  # a response names at most this many problems (and says how many there are)
CLIENT_ID = re.compile(r"[A-Za-z0-9][A-Za-z0-9_.-]{0,63}")
MAX_FUTURE = timedelta(minutes=5)
MAX_PAST = timedelta(days=35)

IdempotencyKey = Annotated[str, Field(min_length=1, max_length=128, pattern=r"^[A-Za-z0-9][A-Za-z0-9_.:@/+=-]*$")]


def _account_id(value: str) -> str:
    try:
        return check_account_id(value)  # the one grammar (kilo_billing.accounts), reserved ids refused
    except InvalidAccountIdError as exc:
        raise ValueError(str(exc)) from None


AccountId = Annotated[str, Field(min_length=1, max_length=128), AfterValidator(_account_id)]

Problem = dict[str, Any]


def _unauthorized(code: str, message: str) -> UnauthorizedError:
    return UnauthorizedError(code, message)


def verify_signature(
    body: bytes, client_id: str | None, signature: str | None, secrets: Sequence[str], now: int, tolerance: int
) -> None:
    if not client_id:
        raise _unauthorized("missing_client", "X-Kilo-Client header is required")
    if not CLIENT_ID.fullmatch(client_id):
        raise _unauthorized("unknown_client", "X-Kilo-Client is not a known usage client")
    if not signature:
        raise _unauthorized("missing_signature", "X-Kilo-Signature header is required")
    timestamp: int | None = None
    candidates: list[str] = []
    for part in signature.split(","):
        name, _, value = part.strip().partition("=")
        if name == "t":
            try:
                timestamp = int(value)
            except ValueError:
                raise _unauthorized("bad_signature", "X-Kilo-Signature t= must be unix seconds") from None
        elif name == "v1" and value:
            candidates.append(value.lower())
    if timestamp is None or not candidates:
        raise _unauthorized("bad_signature", "X-Kilo-Signature must look like t=<unix>,v1=<hex>")
    if abs(now - timestamp) > tolerance:
        raise _unauthorized("signature_expired", f"signature timestamp is more than {tolerance} s from now")
    if not secrets:
        raise _unauthorized("unknown_client", "X-Kilo-Client is not a known usage client")
    signed = str(timestamp).encode("ascii") + b"." + body
    for secret in secrets:
        expected = hmac.new(secret.encode("utf-8"), signed, hashlib.sha256).hexdigest().encode("ascii")
        if any(hmac.compare_digest(expected, candidate.encode("utf-8")) for candidate in candidates):
            return
    raise _unauthorized("bad_signature", "no v1 signature matches the body with this client's secrets")


class UsageMeter(StrEnum):
    MESSAGES = "messages"
    DATA_TRANSFER = "data_transfer"


class UsageEventIn(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)

    idempotency_key: IdempotencyKey
    account_id: AccountId
    meter: UsageMeter
    quantity: Annotated[StrictInt, Field(ge=0, le=10**15)]
    timestamp: AwareDatetime
    room: Annotated[str, Field(max_length=256)] = ""
    participant: Annotated[str, Field(max_length=256)] = ""

    def payload_hash(self) -> str:
        canonical = json.dumps(
            [self.account_id, self.meter.value, self.quantity, _epoch_ms(self.timestamp), self.room, self.participant],
            separators=(",", ":"),
        )
        return hashlib.sha256(canonical.encode("utf-8")).hexdigest()


_EVENT = TypeAdapter(UsageEventIn)


def _epoch_ms(instant: datetime) -> int:
    delta = instant.astimezone(UTC) - datetime(1970, 1, 1, tzinfo=UTC)
    return (delta.days * 86_400 + delta.seconds) * 1000 + delta.microseconds // 1000


def _problem(index: int | None, field: str, message: str) -> Problem:
    return {"index": index, "field": field, "message": message}


def _pydantic_problems(index: int | None, error: ValidationError) -> list[Problem]:
    return [
        _problem(index, ".".join(str(part) for part in item["loc"]) or "(event)", item["msg"])
        for item in error.errors(include_url=False, include_input=False, include_context=False)
    ]


def invalid(problems: list[Problem]) -> InvalidEventError:
    """The batch is refused whole: every problem (up to ``MAX_LISTED_PROBLEMS``) by index and field."""
    ordered = sorted(problems, key=lambda p: -1 if p["index"] is None else p["index"])
    listed = ordered[:MAX_LISTED_PROBLEMS]
    more = f" (the first {len(listed)} are listed)" if len(listed) < len(ordered) else ""
    return InvalidEventError(
        "invalid_usage", f"{len(ordered)} problem(s) in the batch; nothing was stored{more}", listed
    )


def validate_batch(body: bytes, now: datetime) -> tuple[list[tuple[int, UsageEventIn]], list[Problem]]:
    """Validate each event on its own: the well-formed events (with their index) and every problem found (shape,
    ranges, the timestamp window, a key repeated with different usage), so one response can name them all.

    A body that is not a batch at all raises at once.
    """
    data = jsontext.loads(body, "a usage batch")
    if not isinstance(data, dict):
        raise invalid([_problem(None, "(body)", 'must be a JSON object {"events": [...]}')])
    unknown = sorted(set(data) - {"events"})
    raw_events = data.get("events")
    problems: list[Problem] = [_problem(None, name[:128], "unknown field") for name in unknown]
    if not isinstance(raw_events, list):
        problems.append(_problem(None, "events", "must be a list of usage events"))
    elif not 1 <= len(raw_events) <= MAX_BATCH:
        problems.append(_problem(None, "events", f"must hold 1 to {MAX_BATCH} events, got {len(raw_events)}"))
    if problems or not isinstance(raw_events, list):
        raise invalid(problems)
    events: list[tuple[int, UsageEventIn]] = []
    seen: dict[str, tuple[int, str]] = {}
    for index, raw in enumerate(raw_events):
        try:
            event = _EVENT.validate_python(raw)
        except ValidationError as exc:
            problems.extend(_pydantic_problems(index, exc))
            continue
        if event.timestamp > now + MAX_FUTURE:
            problems.append(_problem(index, "timestamp", "is more than 5 minutes in the future"))
            continue  # out of the window, nothing else is read from it (near year 1 or 9999 UTC cannot even be held)
        if event.timestamp < now - MAX_PAST:
            problems.append(_problem(index, "timestamp", "is more than 35 days in the past"))
            continue
        earlier = seen.get(event.idempotency_key)
        if earlier is not None and earlier[1] != event.payload_hash():
            problems.append(_problem(index, "idempotency_key", f"repeats item {earlier[0]}'s key with different usage"))
        seen.setdefault(event.idempotency_key, (index, event.payload_hash()))
        events.append((index, event))
    return events, problems


def scope_problems(events: list[tuple[int, UsageEventIn]], client_id: str, client: UsageClient) -> list[Problem]:
    """Events for accounts this client may not bill (checked before registration, so a scoped client learns nothing
    about accounts outside its scope)."""
    return [
        _problem(index, "account_id", f"usage client {client_id!r} may not bill account {event.account_id!r}")
        for index, event in events
        if not client.may_bill(event.account_id)
    ]


def registration_problems(events: list[tuple[int, UsageEventIn]], registered: set[str]) -> list[Problem]:
    return [
        _problem(index, "account_id", f"account {event.account_id!r} is not registered")
        for index, event in events
        if event.account_id not in registered
    ]


def to_record(event: UsageEventIn, client_id: str, received_at_ms: int) -> UsageEventRecord:
    return UsageEventRecord(
        client_id=client_id,
        idempotency_key=event.idempotency_key,
        account_id=event.account_id,
        meter=event.meter.value,
        quantity=event.quantity,
        occurred_at_ms=_epoch_ms(event.timestamp),
        payload_hash=event.payload_hash(),
        received_at_ms=received_at_ms,
        room=event.room,
        participant=event.participant,
    )
