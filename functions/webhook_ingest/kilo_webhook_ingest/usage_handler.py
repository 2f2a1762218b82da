"""Lambda handler for the app's API - ``POST /v1/usage`` and ``POST /v1/entitlements/check`` - a Powertools HTTP
resolver: both routes are signed and scoped the same way (``logic.authenticate_client``).

Traced with Powertools Tracer: a batch makes many AWS calls (secret, account reads, up to 1,000 writes) worth seeing
in X-Ray; this path already loads pydantic and the resolver, the X-Ray SDK adds ~0.45 s to its cold start.
"""

from __future__ import annotations

import time
from typing import Any, TypedDict

from aws_lambda_powertools.event_handler import APIGatewayHttpResolver, Response
from aws_lambda_powertools.utilities.typing import LambdaContext

import kilo_webhook_ingest.usage  # noqa: F401 - pydantic and the batch model load during init, not per request
from kilo_billing.observability import Metric, count, logger, metrics, tracer
from kilo_webhook_ingest.dependencies import UsageDependencies
from kilo_webhook_ingest.dependencies import usage as dependencies
from kilo_webhook_ingest.http import (
    JSON_HEADERS,
    SERVICE,
    InvocationDeadline,
    RawRequest,
    annotate,
    json_body,
    not_stored,
    raw_request,
    refused,
    request_id,
)
from kilo_webhook_ingest.logic import Annotate, check_entitlement, ingest_usage
from kilo_webhook_ingest.model import (
    IngestError,
    OutOfTimeError,
    RateLimitedError,
)
from kilo_webhook_ingest.ports import Deadline, SecretConfigError, SecretSource, StorageUnavailableError
from kilo_webhook_ingest.settings import IngestSettings
from kilo_webhook_ingest.usage_model import UsageNotStoredError, UsageOutcome

app = APIGatewayHttpResolver()
log = logger(SERVICE)


def _json(status: int, payload: object) -> Response[str]:
    return Response(status_code=status, headers=dict(JSON_HEADERS), body=json_body(payload))


class _SignedRequest(TypedDict):
    request: RawRequest
    secrets: SecretSource
    settings: IngestSettings
    now_ms: int
    deadline: Deadline
    annotate: Annotate


def _signed(deps: UsageDependencies) -> _SignedRequest:
    """What both routes hand their logic to authenticate the client (``logic.authenticate_client``) and act: the raw
    request, the client secrets, the settings, the clock and this invocation's deadline."""
    return {
        "request": raw_request(app.current_event.raw_event, deps.settings.max_usage_body_bytes),
        "secrets": deps.secrets,
        "settings": deps.settings,
        "now_ms": int(time.time() * 1000),
        "deadline": InvocationDeadline(app.lambda_context),
        "annotate": annotate,
    }


def _summary(outcome: UsageOutcome) -> dict[str, Any]:
    return {
        "accepted": outcome.count("accepted"),
        "duplicates": outcome.count("duplicate"),
        "conflicts": outcome.count("conflict"),
        "results": [
            {"index": index, "idempotency_key": item.idempotency_key, "status": item.status}
            for index, item in enumerate(outcome.items)
        ],
    }


def _count(outcome: UsageOutcome) -> None:
    count(SERVICE, Metric.USAGE_RECORDED, outcome.count("accepted"))
    count(SERVICE, Metric.STORED_FOR_RATING, outcome.count("accepted"))  # rating's stream takes source usage (D416)
    count(SERVICE, Metric.USAGE_DUPLICATE, outcome.count("duplicate"))
    count(SERVICE, Metric.USAGE_CONFLICT, outcome.count("conflict"))


@app.exception_handler(IngestError)  # type: ignore[untyped-decorator]
def _refused(exc: IngestError) -> Response[str]:
    response = _json(*refused("usage", exc))
    if isinstance(exc, RateLimitedError):
        count(SERVICE, Metric.USAGE_RATE_LIMITED)
        response.headers["Retry-After"] = str(exc.retry_after_seconds)
    return response


@app.exception_handler(UsageNotStoredError)  # type: ignore[untyped-decorator]
def _partly_stored(exc: UsageNotStoredError) -> Response[str]:
    """503 listing what was stored and what was not: resending the same batch is safe."""
    _count(exc.outcome)
    missing = exc.outcome.count("not_stored")
    message = f"usage not (fully) stored: {missing} event(s) missing; retry the same batch, duplicates are safe"
    status, payload = not_stored("usage", request_id(app.lambda_context), exc.cause or exc, message)
    return _json(status, {**payload, **_summary(exc.outcome), "not_stored": missing})


@app.exception_handler(StorageUnavailableError)  # type: ignore[untyped-decorator]
@app.exception_handler(SecretConfigError)  # type: ignore[untyped-decorator]
@app.exception_handler(OutOfTimeError)  # type: ignore[untyped-decorator]
def _not_stored(exc: Exception) -> Response[str]:
    message = "usage not stored; retry the same batch, duplicates are safe"
    return _json(*not_stored("usage", request_id(app.lambda_context), exc, message))


@app.not_found
def _not_found(_: Exception) -> Response[str]:
    return _json(404, {"error": {"code": "not_found", "message": "no such route"}})


@app.post("/v1/usage")
def post_usage() -> Response[str]:
    deps = dependencies()
    outcome = ingest_usage(store=deps.store, accounts=deps.accounts, limiter=deps.limiter, **_signed(deps))
    _count(outcome)
    payload = _summary(outcome)
    conflicts = outcome.count("conflict")
    if conflicts:
        payload["error"] = {
            "code": "idempotency_conflict",
            "message": f"{conflicts} idempotency key(s) were already used for different usage; those items were "
            "not stored (the others were)",
        }
        return _json(409, payload)
    return _json(200, payload)


@app.post("/v1/entitlements/check")
def post_entitlement_check() -> Response[str]:
    """May the account start a call, and for how long may its LiveKit token live (200 either way; ``allowed``)."""
    deps = dependencies()
    entitlement = check_entitlement(entitlements=deps.entitlements, policy=deps.entitlement_policy, **_signed(deps))
    count(SERVICE, Metric.ENTITLEMENT_ALLOWED if entitlement.allowed else Metric.ENTITLEMENT_REFUSED)
    return _json(200, entitlement.as_json())


@metrics(SERVICE).log_metrics
@logger(SERVICE).inject_lambda_context(clear_state=True)
@tracer(SERVICE).capture_lambda_handler(capture_response=False)
def lambda_handler(event: dict[str, Any], context: LambdaContext) -> dict[str, Any]:
    return app.resolve(event, context)
