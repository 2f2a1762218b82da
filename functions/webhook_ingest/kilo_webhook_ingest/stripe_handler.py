"""Lambda handler for ``POST /webhooks/stripe`` (its own function, so the Stripe SDK stays off the other paths).

Traced with Powertools Tracer (this path already pays for the Stripe SDK; the X-Ray SDK adds ~0.45 s to its cold
start, and Stripe is patient): the store and the publish show as AWS subsegments.
"""

from __future__ import annotations

import time
from typing import Any

import kilo_webhook_ingest.stripe_webhook  # noqa: F401 - the Stripe SDK loads during init (full CPU), not per request
from kilo_billing.observability import Metric, count, logger, metrics, tracer
from kilo_webhook_ingest.dependencies import stripe as dependencies
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
from kilo_webhook_ingest.logic import ingest_stripe
from kilo_webhook_ingest.model import IngestError, OutOfTimeError
from kilo_webhook_ingest.ports import PublishError, SecretConfigError, StorageUnavailableError

log = logger(SERVICE)


@metrics(SERVICE).log_metrics
@log.inject_lambda_context(clear_state=True)
@tracer(SERVICE).capture_lambda_handler(capture_response=False)
def lambda_handler(event: dict[str, Any], context: object) -> dict[str, Any]:
    deps = dependencies()
    try:
        request = raw_request(event, deps.settings.max_stripe_body_bytes)
        outcome = ingest_stripe(
            request,
            deps.secrets,
            deps.store,
            deps.publisher,
            deps.settings,
            int(time.time() * 1000),
            InvocationDeadline(context),
            annotate,
        )
    except IngestError as exc:
        return json_response(*refused("stripe", exc))
    except (StorageUnavailableError, SecretConfigError, PublishError, OutOfTimeError) as exc:
        # stored or not, Stripe retries: the retry stores what is missing and publishes (again)
        message = "event not stored or not handed on; retry later (a retry is safe: duplicates are detected)"
        return json_response(*not_stored("stripe", request_id(context), exc, message))
    # success lines are DEBUG, as for every webhook (docs/decisions.md D14); metrics count them
    log.debug("stripe webhook", extra={"type": outcome.event_type, "status": outcome.status})
    count(SERVICE, Metric.WEBHOOK_STORED if outcome.status == "stored" else Metric.WEBHOOK_DUPLICATE)
    return json_response(200, {"id": outcome.event_id, "type": outcome.event_type, "status": outcome.status})
