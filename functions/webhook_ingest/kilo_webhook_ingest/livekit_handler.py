"""Lambda handler for ``POST /webhooks/livekit`` (HTTP API, payload v2.0). Thin: parse, call logic, map the result.

Cold start matters here (every LiveKit event lands on it): no router, no pydantic, no stripe/web3/solana/aiohttp, and
no Powertools Tracer - the X-Ray SDK costs ~0.45 s of import, more than the rest of the handler; the function's X-Ray
segments (``Tracing: Active``) still time every invocation (docs/decisions.md).
"""

from __future__ import annotations

from typing import Any

from kilo_billing.observability import logger, metrics
from kilo_webhook_ingest.dependencies import livekit as dependencies
from kilo_webhook_ingest.http import SERVICE, InvocationDeadline, RawRequest, annotate, webhook_response
from kilo_webhook_ingest.logic import ingest_livekit
from kilo_webhook_ingest.model import OutOfTimeError, WebhookOutcome
from kilo_webhook_ingest.ports import SecretConfigError, StorageUnavailableError

log = logger(SERVICE)


@metrics(SERVICE).log_metrics
@log.inject_lambda_context(clear_state=True)
def lambda_handler(event: dict[str, Any], context: object) -> dict[str, Any]:
    deps = dependencies()

    def ingest(request: RawRequest, now_ms: int, deadline: InvocationDeadline) -> WebhookOutcome:
        return ingest_livekit(request, deps.secrets, deps.store, deps.settings, now_ms, deadline, annotate)

    transient = (StorageUnavailableError, SecretConfigError, OutOfTimeError)  # LiveKit retries 5xx
    limit = deps.settings.max_livekit_body_bytes
    return webhook_response("livekit", event, context, limit, ingest, transient, type_key="event", rated=True)
