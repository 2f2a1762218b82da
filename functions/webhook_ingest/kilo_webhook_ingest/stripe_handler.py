"""Lambda handler for ``POST /webhooks/stripe`` (its own function, so the Stripe SDK stays off the other paths).

Traced with Powertools Tracer (this path already pays for the Stripe SDK; the X-Ray SDK adds ~0.45 s to its cold
start, and Stripe is patient): the store and the publish show as AWS subsegments.
"""

from __future__ import annotations

from typing import Any

import kilo_webhook_ingest.stripe_webhook  # noqa: F401 - the Stripe SDK loads during init (full CPU), not per request
from kilo_billing.observability import logger, metrics, tracer
from kilo_webhook_ingest.dependencies import stripe as dependencies
from kilo_webhook_ingest.http import SERVICE, InvocationDeadline, RawRequest, annotate, webhook_response
from kilo_webhook_ingest.logic import ingest_stripe
from kilo_webhook_ingest.model import OutOfTimeError, WebhookOutcome
from kilo_webhook_ingest.ports import PublishError, SecretConfigError, StorageUnavailableError

log = logger(SERVICE)

# stored or not, Stripe retries: the retry stores what is missing and publishes (again)
RETRY_MESSAGE = "event not stored or not handed on; retry later (a retry is safe: duplicates are detected)"


@metrics(SERVICE).log_metrics
@log.inject_lambda_context(clear_state=True)
@tracer(SERVICE).capture_lambda_handler(capture_response=False)
def lambda_handler(event: dict[str, Any], context: object) -> dict[str, Any]:
    deps = dependencies()

    def ingest(request: RawRequest, now_ms: int, deadline: InvocationDeadline) -> WebhookOutcome:
        return ingest_stripe(
            request, deps.secrets, deps.store, deps.publisher, deps.settings, now_ms, deadline, annotate
        )

    transient = (StorageUnavailableError, SecretConfigError, PublishError, OutOfTimeError)
    limit = deps.settings.max_stripe_body_bytes
    return webhook_response("stripe", event, context, limit, ingest, transient, "type", RETRY_MESSAGE)
