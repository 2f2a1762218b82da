"""Scheduled handler: sweep open sessions (gone from LiveKit, or past the maximum length)."""

from __future__ import annotations

import time
from datetime import datetime
from functools import cache
from typing import Any

from aws_lambda_powertools import Logger, Metrics
from aws_lambda_powertools.metrics import MetricUnit
from aws_lambda_powertools.utilities.typing import LambdaContext

from kilo_rate_usage.repository import DynamoUsageRepository
from kilo_rate_usage.roomservice import LiveKitRoomDirectory
from kilo_rate_usage.settings import settings
from kilo_rate_usage.sweeper import sweep

logger = Logger(service="rate-usage-sweeper")
metrics = Metrics(namespace="KiloBilling", service="rate-usage-sweeper")


@cache
def dependencies() -> tuple[DynamoUsageRepository, LiveKitRoomDirectory]:
    import boto3  # noqa: PLC0415
    from aws_lambda_powertools.utilities import parameters  # noqa: PLC0415

    config = settings()
    keys = parameters.get_secret(
        config.livekit_keys_secret_name, transform="json", max_age=config.secret_max_age_seconds
    )
    directory = LiveKitRoomDirectory(config.livekit_url, sorted(keys.items()))
    repo = DynamoUsageRepository(boto3.client("dynamodb"), config.usage_table_name, config.events_table_name)
    return repo, directory


def _scheduled_ms(event: dict[str, Any]) -> int | None:
    """The run's scheduled time (EventBridge Scheduler's ``<aws.scheduler.scheduled-time>`` in the template's Input)."""
    stamp = event.get("scheduled_time") if isinstance(event, dict) else None
    if not isinstance(stamp, str) or not stamp:
        return None
    return int(datetime.fromisoformat(stamp.replace("Z", "+00:00")).timestamp() * 1000)


@metrics.log_metrics
@logger.inject_lambda_context(clear_state=True)
def lambda_handler(event: dict[str, Any], context: LambdaContext) -> dict[str, Any]:
    repo, directory = dependencies()
    config = settings()
    now_ms = _scheduled_ms(event) or int(time.time() * 1000)
    open_sessions = repo.open_sessions()
    closes = sweep(open_sessions, directory, now_ms, config.max_session_seconds)
    expires = now_ms // 1000 + 400 * 86_400
    for close in closes:
        repo.put_event(close.to_item(expires))
    swept = sum(1 for close in closes if close.event_type.endswith("swept"))
    metrics.add_metric(name="SessionsSwept", unit=MetricUnit.Count, value=swept)
    metrics.add_metric(name="SessionsCapped", unit=MetricUnit.Count, value=len(closes) - swept)
    logger.info("sweep done", extra={"open": len(open_sessions), "closed": len(closes)})
    return {"open": len(open_sessions), "closed": len(closes)}
