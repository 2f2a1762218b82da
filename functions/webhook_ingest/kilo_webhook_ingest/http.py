"""The HTTP edge of the ingest functions (API Gateway HTTP API, payload v2.0): the raw bytes a client sent in, JSON
responses out, and the one mapping of domain outcomes and errors to status codes, metrics and log lines.

A 4xx names the problem (it is about the sender's request); a 5xx never does - it carries a generic message and the
request id, and the detail goes to the log (secret names, AWS error codes and endpoints are nobody else's business).
"""

from __future__ import annotations

import base64
import binascii
import json
import time
from collections.abc import Callable, Mapping
from typing import Any, Final, NamedTuple

from kilo_billing.observability import Metric, correlate, count, logger
from kilo_webhook_ingest.model import (
    BodyTooLargeError,
    EventTooLargeToStoreError,
    ForbiddenAccountError,
    ForeignStripeEventError,
    IngestError,
    InvalidEventError,
    RateLimitedError,
    SignedLiveKitEventRefusedError,
    UnauthorizedError,
    UnstorableEventError,
    WebhookOutcome,
)

SERVICE: Final = "webhook-ingest"
JSON_HEADERS: Final = {"content-type": "application/json"}

# most specific first: the first class an error is an instance of decides its status
STATUS: Final[tuple[tuple[type[IngestError], int], ...]] = (
    (UnauthorizedError, 401),
    (ForbiddenAccountError, 403),
    (RateLimitedError, 429),
    (EventTooLargeToStoreError, 413),
    (BodyTooLargeError, 413),
    (UnstorableEventError, 422),
    (InvalidEventError, 400),
)

SIGNATURE_CODES: Final = frozenset(
    {
        "missing_signature",
        "bad_signature",
        "unknown_api_key",
        "expired_signature",
        "premature_signature",
        "missing_body_hash",
        "body_hash_mismatch",
        "signature_expired",
        "unknown_client",
        "missing_client",
    }
)


class RawRequest(NamedTuple):
    """The bytes and headers a client sent (a NamedTuple: cheaper to create at cold start than a frozen dataclass)."""

    body: bytes
    headers: Mapping[str, str]  # lower-cased names

    def header(self, name: str) -> str | None:
        return self.headers.get(name.lower())


def raw_request(event: Mapping[str, Any], max_body_bytes: int) -> RawRequest:
    """The exact bytes the client sent (base64-decoded when API Gateway encoded them) and lower-cased headers."""
    headers = {str(k).lower(): str(v) for k, v in (event.get("headers") or {}).items()}
    body = event.get("body")
    if body is None:
        data = b""
    elif event.get("isBase64Encoded"):
        # base64 inflates by 4/3: refuse before decoding a huge payload
        if len(body) > (max_body_bytes * 4) // 3 + 4:
            raise too_large(max_body_bytes)
        try:
            data = base64.b64decode(body, validate=True)
        except (binascii.Error, ValueError) as exc:
            raise InvalidEventError("bad_encoding", "body is marked base64 but is not valid base64") from exc
    else:
        data = str(body).encode("utf-8", "surrogatepass")
    if len(data) > max_body_bytes:
        raise too_large(max_body_bytes)
    return RawRequest(body=data, headers=headers)


def too_large(limit: int) -> BodyTooLargeError:
    return BodyTooLargeError("body_too_large", f"body exceeds {limit} bytes")


def status_of(error: IngestError) -> int:
    for kind, status in STATUS:
        if isinstance(error, kind):
            return status
    return 400


def json_body(payload: object) -> str:
    return json.dumps(payload, separators=(",", ":"))


def json_response(status: int, payload: object) -> dict[str, Any]:
    return {"statusCode": status, "headers": dict(JSON_HEADERS), "body": json_body(payload)}


def error_payload(error: IngestError) -> dict[str, Any]:
    body: dict[str, Any] = {"error": {"code": error.code, "message": error.message}}
    if error.details is not None:
        body["error"]["details"] = list(error.details)
    return body


def refused(route: str, error: IngestError) -> tuple[int, dict[str, Any]]:
    """A request refused for good (4xx): counted, logged with its reason code (never its body), answered plainly."""
    status = status_of(error)
    count(SERVICE, Metric.WEBHOOK_REJECTED)
    if error.code in SIGNATURE_CODES:
        count(SERVICE, Metric.SIGNATURE_REJECTED)
    if isinstance(error, ForeignStripeEventError):  # a webhook secret or endpoint misconfigured: alarmed
        count(SERVICE, Metric.STRIPE_EVENT_FOREIGN)
        logger(SERVICE).error(
            "Stripe event of another mode or a Connect account refused: check the endpoint's webhook secrets",
            extra={"route": route, "status": status, "code": error.code, "reason": error.message[:300]},
        )
        return status, error_payload(error)
    if isinstance(error, SignedLiveKitEventRefusedError):  # LiveKit never resends it: alarmed (D396)
        count(SERVICE, Metric.LIVEKIT_SIGNED_EVENT_REFUSED)
        logger(SERVICE).error(
            "signed LiveKit event refused: LiveKit will not send it again",
            extra={"route": route, "status": status, "code": error.code, "reason": error.message[:300]},
        )
        return status, error_payload(error)
    if isinstance(error, UnstorableEventError):
        count(SERVICE, Metric.UNSTORABLE_EVENT)
        logger(SERVICE).error(
            "valid event refused for good: it cannot be stored",
            extra={"route": route, "status": status, "code": error.code},
            exc_info=error.__cause__ is not None,
        )
    else:
        logger(SERVICE).warning("request rejected", extra={"route": route, "status": status, "code": error.code})
    return status, error_payload(error)


def not_stored(
    route: str, request_id: str, error: BaseException, message: str | None = None
) -> tuple[int, dict[str, Any]]:
    """A valid request that could not be handled now (store, bus or secret unavailable, time running out): 503 with
    a generic message and the request id; the error and its cause go to the log, never into the answer."""
    logger(SERVICE).error(
        "not stored; the sender must retry", extra={"route": route, "reason": type(error).__name__}, exc_info=error
    )
    count(SERVICE, Metric.INGEST_STORE_FAILED)
    text = message or "event not stored; retry later (a retry is safe: duplicates are detected)"
    return 503, {"error": {"code": "not_stored", "message": text, "request_id": request_id}}


def webhook_response(
    route: str,
    event: Mapping[str, Any],
    context: object,
    max_body_bytes: int,
    ingest: Callable[[RawRequest, int, InvocationDeadline], WebhookOutcome],
    transient: tuple[type[BaseException], ...],
    type_key: str,
    retry_message: str | None = None,
    *,
    rated: bool = False,
) -> dict[str, Any]:
    """One webhook request end to end: read its raw request and ``ingest`` it (the route's logic, given the request,
    the time now in ms and the invocation's deadline); answer a refused request 4xx, one that failed for now
    (``transient`` errors) 503 so the sender retries, and a stored or duplicate event 200 with its id, its type (under
    ``type_key``, as that sender names it) and its status. ``rated``: the route's events are the ones rating's stream
    takes (LiveKit's, not Stripe's), each stored one counted ``StoredForRating`` too (D416)."""
    try:
        outcome = ingest(raw_request(event, max_body_bytes), int(time.time() * 1000), InvocationDeadline(context))
    except IngestError as exc:
        return json_response(*refused(route, exc))
    except transient as exc:
        return json_response(*not_stored(route, request_id(context), exc, retry_message))
    # per-event success lines are DEBUG (metrics count them; one INFO line per webhook costs CloudWatch money, D14)
    logger(SERVICE).debug(f"{route} webhook", extra={"type": outcome.event_type, "status": outcome.status})
    count(SERVICE, Metric.WEBHOOK_STORED if outcome.status == "stored" else Metric.WEBHOOK_DUPLICATE)
    if rated and outcome.status == "stored":
        count(SERVICE, Metric.STORED_FOR_RATING)
    return json_response(200, {"id": outcome.event_id, type_key: outcome.event_type, "status": outcome.status})


def request_id(context: object) -> str:
    return str(getattr(context, "aws_request_id", "") or "unknown")


class InvocationDeadline:
    """``Deadline`` from the Lambda context (time left in this invocation); unbounded where the context cannot tell."""

    def __init__(self, context: object) -> None:
        self._remaining: Callable[[], int] | None = getattr(context, "get_remaining_time_in_millis", None)

    def seconds_left(self) -> float:
        return self._remaining() / 1000 if self._remaining is not None else float("inf")


def annotate(**keys: str | None) -> None:
    """Correlation keys on every following log line of this invocation (the logic calls it once it knows them)."""
    correlate(SERVICE, **keys)
