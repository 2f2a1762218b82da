"""Lambda handler for ``POST /webhooks/livekit`` (HTTP API, payload v2.0). Thin: parse, call logic, map the result.

Cold start matters here (every LiveKit event lands on it): no router, no pydantic, no stripe/web3/solana/aiohttp.
"""

from __future__ import annotations

import time
from functools import cache
from typing import Any

from kilo_webhook_ingest.config import IngestSettings
from kilo_webhook_ingest.http import RequestRejectedError, error_response, json_response, raw_request
from kilo_webhook_ingest.logic import ingest_livekit
from kilo_webhook_ingest.observability import count, logger, metrics, rejected
from kilo_webhook_ingest.secrets import ParametersSecretSource, SecretConfigError
from kilo_webhook_ingest.store import DynamoEventStore, StoreUnavailableError
from kilo_webhook_ingest.wiring import ingest_dependencies


@cache
def dependencies() -> tuple[IngestSettings, DynamoEventStore, ParametersSecretSource]:
    return ingest_dependencies("livekit")


@metrics.log_metrics
@logger.inject_lambda_context(clear_state=True)
def lambda_handler(event: dict[str, Any], context: object) -> dict[str, Any]:
    config, store, secrets = dependencies()
    try:
        request = raw_request(event, config.max_livekit_body_bytes)
        outcome = ingest_livekit(request, secrets, store, config, int(time.time() * 1000))
    except RequestRejectedError as exc:
        rejected("livekit", exc.status, exc.code)
        return error_response(exc)
    except (StoreUnavailableError, SecretConfigError) as exc:
        logger.exception("webhook not stored; LiveKit will retry")
        count("IngestStoreFailed")
        return error_response(RequestRejectedError(503, "not_stored", f"event not stored, retry: {exc}"))
    # per-event success lines are DEBUG (metrics count them; one INFO line per webhook costs CloudWatch money)
    logger.debug(
        "livekit webhook", extra={"event_id": outcome.event_id, "type": outcome.event_type, "status": outcome.status}
    )
    count("WebhookStored" if outcome.status == "stored" else "WebhookDuplicate")
    return json_response(200, {"id": outcome.event_id, "event": outcome.event_type, "status": outcome.status})
