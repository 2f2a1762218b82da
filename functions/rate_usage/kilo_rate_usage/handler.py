"""Lambda handler for the events table's stream: decode, rate the whole batch, report poison records.

Transient failures (DynamoDB, EventBridge, a concurrent batch) raise: Lambda retries the batch (bisecting it) and, after
``MaximumRetryAttempts``, sends its coordinates to the stream's on-failure queue. Records that can never be rated go to
the poison queue with their content, so the rest of the batch is rated and nothing is lost.
"""

from __future__ import annotations

import time
from dataclasses import asdict
from functools import cache
from typing import Any

from aws_lambda_powertools import Logger, Metrics
from aws_lambda_powertools.metrics import MetricUnit
from aws_lambda_powertools.utilities.typing import LambdaContext

from kilo_billing.catalog import default_catalog
from kilo_rate_usage.adapters import EventBridgePublisher, SqsPoisonSink
from kilo_rate_usage.logic import RatingConfig, decode_records, rate_batch
from kilo_rate_usage.repository import DynamoUsageRepository
from kilo_rate_usage.settings import settings

logger = Logger(service="rate-usage")
metrics = Metrics(namespace="KiloBilling", service="rate-usage")


@cache
def dependencies() -> tuple[DynamoUsageRepository, EventBridgePublisher, SqsPoisonSink, RatingConfig]:
    import boto3  # noqa: PLC0415

    config = settings()
    repo = DynamoUsageRepository(boto3.client("dynamodb"), config.usage_table_name, config.events_table_name)
    publisher = EventBridgePublisher(boto3.client("events"), config.event_bus_name)
    poison = SqsPoisonSink(boto3.client("sqs"), config.poison_queue_url)
    rating = RatingConfig(config.attribution, config.max_session_seconds, default_catalog().for_period)
    return repo, publisher, poison, rating


@metrics.log_metrics
@logger.inject_lambda_context(clear_state=True)
def lambda_handler(event: dict[str, Any], context: LambdaContext) -> dict[str, Any]:
    repo, publisher, poison, config = dependencies()
    records = event.get("Records", [])
    decoded = decode_records(records)
    for bad in decoded.poison:
        poison.send(records[bad.index], bad.reason)
        logger.error("poison record sent to the poison queue", extra={"reason": bad.reason})
    outcome = rate_batch(decoded.livekit, decoded.usage, repo, publisher, config, int(time.time() * 1000))
    for name, value in (
        ("SessionsRated", outcome.sessions_changed),
        ("UsageRated", outcome.usage_rated),
        ("ThresholdsCrossed", outcome.thresholds),
        ("PoisonRecords", len(decoded.poison)),
        ("UnattributedMinutes", outcome.unattributed_minutes),
    ):
        if value:
            metrics.add_metric(name=name, unit=MetricUnit.Count, value=value)
    if outcome.unattributed_minutes:
        logger.warning(
            "usage without a billing account kept as unattributed", extra={"minutes": outcome.unattributed_minutes}
        )
    logger.info("batch rated", extra={"records": len(records), **asdict(outcome)})
    return {"batchItemFailures": []}
