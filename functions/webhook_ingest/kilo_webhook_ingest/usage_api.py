"""Lambda handler for ``POST /v1/usage``: a Powertools HTTP resolver (the app's usage API; more routes may join)."""

from __future__ import annotations

import json
import time
from functools import cache
from typing import Any

from aws_lambda_powertools.event_handler import APIGatewayHttpResolver, Response
from aws_lambda_powertools.utilities.typing import LambdaContext

from kilo_webhook_ingest.config import IngestSettings
from kilo_webhook_ingest.http import JSON_HEADERS, RequestRejectedError, error_payload, raw_request
from kilo_webhook_ingest.logic import ingest_usage
from kilo_webhook_ingest.observability import count, logger, metrics, rejected
from kilo_webhook_ingest.secrets import ParametersSecretSource, SecretConfigError
from kilo_webhook_ingest.store import DynamoEventStore, StoreUnavailableError
from kilo_webhook_ingest.wiring import ingest_dependencies

app = APIGatewayHttpResolver()


@cache
def dependencies() -> tuple[IngestSettings, DynamoEventStore, ParametersSecretSource]:
    return ingest_dependencies("usage")


def _json(status: int, payload: object) -> Response[str]:
    return Response(status_code=status, headers=dict(JSON_HEADERS), body=json.dumps(payload, separators=(",", ":")))


@app.exception_handler(RequestRejectedError)  # type: ignore[untyped-decorator]
def _rejected(exc: RequestRejectedError) -> Response[str]:
    rejected("usage", exc.status, exc.code)
    return _json(exc.status, error_payload(exc))


@app.exception_handler(StoreUnavailableError)  # type: ignore[untyped-decorator]
@app.exception_handler(SecretConfigError)  # type: ignore[untyped-decorator]
def _not_stored(exc: Exception) -> Response[str]:
    logger.exception("usage batch not (fully) stored; the client must retry the batch")
    count("IngestStoreFailed")
    error = RequestRejectedError(
        503, "not_stored", "usage not (fully) stored; retry the same batch, duplicates are safe"
    )
    return _json(503, error_payload(error))


@app.not_found
def _not_found(_: Exception) -> Response[str]:
    return _json(404, {"error": {"code": "not_found", "message": "no such route"}})


@app.post("/v1/usage")
def post_usage() -> Response[str]:
    config, store, secrets = dependencies()
    request = raw_request(app.current_event.raw_event, config.max_usage_body_bytes)
    outcome = ingest_usage(request, secrets, store, config, int(time.time() * 1000))
    accepted, duplicates, conflicts = (outcome.count(s) for s in ("accepted", "duplicate", "conflict"))
    count("UsageRecorded", accepted)
    count("UsageDuplicate", duplicates)
    payload = {
        "accepted": accepted,
        "duplicates": duplicates,
        "conflicts": conflicts,
        "results": [
            {"index": item.index, "idempotency_key": item.idempotency_key, "status": item.status}
            for item in outcome.items
        ],
    }
    if conflicts:
        count("UsageConflict", conflicts)
        payload["error"] = {
            "code": "idempotency_conflict",
            "message": f"{conflicts} idempotency key(s) were already used for different usage; those items were "
            "not stored (the others were)",
        }
        return _json(409, payload)
    return _json(200, payload)


@metrics.log_metrics
@logger.inject_lambda_context(clear_state=True)
def lambda_handler(event: dict[str, Any], context: LambdaContext) -> dict[str, Any]:
    return app.resolve(event, context)
