"""Lambda handler for ``POST /webhooks/livekit`` (HTTP API, payload v2.0). Thin: parse, call logic, map the result.

Cold start matters here (every LiveKit event lands on it): no router, no pydantic, no stripe/web3/solana/aiohttp, and
no Powertools Tracer - the X-Ray SDK costs ~0.45 s of import, more than the rest of the handler; the function's X-Ray
segments (``Tracing: Active``) still time every invocation (docs/decisions.md).
"""

from __future__ import annotations

import time
from typing import Any

from kilo_billing.observability import Metric, count, logger, metrics
from kilo_webhook_ingest.dependencies import livekit as dependencies
from kilo_webhook_ingest.http import (
    SERVICE,
    InvocationDeadline,
    annotate,
    json_response,
    not_stored,
    raw_request,
    refused,
    request_id,
)
from kilo_webhook_ingest.logic import ingest_livekit
from kilo_webhook_ingest.model import IngestError, OutOfTimeError
from kilo_webhook_ingest.ports import SecretConfigError, StorageUnavailableError

log = logger(SERVICE)


@metrics(SERVICE).log_metrics
@log.inject_lambda_context(clear_state=True)
def lambda_handler(event: dict[str, Any], context: object) -> dict[str, Any]:
    deps = dependencies()
    try:
        request = raw_request(event, deps.settings.max_livekit_body_bytes)
        outcome = ingest_livekit(
            request,
            deps.secrets,
            deps.store,
            deps.settings,
            int(time.time() * 1000),
            InvocationDeadline(context),
            annotate,
        )
    except IngestError as exc:
        return json_response(*refused("livekit", exc))
    except (StorageUnavailableError, SecretConfigError, OutOfTimeError) as exc:
        return json_response(*not_stored("livekit", request_id(context), exc))  # LiveKit retries 5xx
    # per-event success lines are DEBUG (metrics count them; one INFO line per webhook costs CloudWatch money)
    log.debug("livekit webhook", extra={"type": outcome.event_type, "status": outcome.status})
    count(SERVICE, Metric.WEBHOOK_STORED if outcome.status == "stored" else Metric.WEBHOOK_DUPLICATE)
    return json_response(200, {"id": outcome.event_id, "event": outcome.event_type, "status": outcome.status})
