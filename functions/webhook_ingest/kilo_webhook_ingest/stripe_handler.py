"""Lambda handler for ``POST /webhooks/stripe`` (its own function, so the Stripe SDK stays off the other paths)."""

from __future__ import annotations

import time
from functools import cache
from typing import Any

from kilo_webhook_ingest.config import IngestSettings
from kilo_webhook_ingest.http import RequestRejectedError, error_response, json_response, raw_request
from kilo_webhook_ingest.logic import expires_at
from kilo_webhook_ingest.observability import count, logger, metrics, rejected
from kilo_webhook_ingest.secrets import ParametersSecretSource, SecretConfigError
from kilo_webhook_ingest.store import DynamoEventStore, StoreUnavailableError
from kilo_webhook_ingest.stripe_webhook import EventBridgePublisher, PublishFailedError, ingest_stripe
from kilo_webhook_ingest.wiring import ingest_dependencies


@cache
def dependencies() -> tuple[IngestSettings, DynamoEventStore, ParametersSecretSource, EventBridgePublisher]:
    import boto3  # noqa: PLC0415

    config, store, secrets = ingest_dependencies("stripe")
    return config, store, secrets, EventBridgePublisher(boto3.client("events"), config.event_bus)


@metrics.log_metrics
@logger.inject_lambda_context(clear_state=True)
def lambda_handler(event: dict[str, Any], context: object) -> dict[str, Any]:
    config, store, secrets, publisher = dependencies()
    now_ms = int(time.time() * 1000)
    try:
        request = raw_request(event, config.max_stripe_body_bytes)
        outcome = ingest_stripe(
            request,
            secrets.stripe_webhook_secrets(),
            store,
            publisher,
            config.stripe_tolerance_seconds,
            expires_at(now_ms, config),
            now_ms,
        )
    except RequestRejectedError as exc:
        rejected("stripe", exc.status, exc.code)
        return error_response(exc)
    except (StoreUnavailableError, SecretConfigError, PublishFailedError) as exc:
        logger.exception("stripe event not stored or not handed on; Stripe will retry")
        count("IngestStoreFailed")
        message = f"event not stored or not handed on; retry (safe, duplicates are detected): {exc}"
        return error_response(RequestRejectedError(503, "not_stored", message))
    logger.info(
        "stripe webhook",
        extra={"stripe_event_id": outcome.event_id, "type": outcome.event_type, "status": outcome.status},
    )
    count("WebhookStored" if outcome.status == "stored" else "WebhookDuplicate")
    return json_response(200, {"id": outcome.event_id, "type": outcome.event_type, "status": outcome.status})
