"""Scheduled handler (hourly): once a period's grace window has passed, fan its close out - one SQS job per registered
account (``start_run``; the run marker makes later hours a no-op, and a missed hour is caught up by the next). Every
hour it also queues an early-invoice check for the running period per account with a progressive billing threshold
(``start_early_checks``; the worker issues an early invoice when one is due)."""

from __future__ import annotations

import time
from datetime import UTC, datetime
from typing import Any

from aws_lambda_powertools.utilities.typing import LambdaContext

from kilo_billing import observability
from kilo_billing.observability import Metric, count
from kilo_billing.periods import Period
from kilo_invoice import dependencies
from kilo_invoice.logic import due_period, start_early_checks, start_run

SERVICE = "invoice-start"
logger = observability.logger(SERVICE)
metrics = observability.metrics(SERVICE)


def scheduled_at(event: object) -> datetime:
    """The run's scheduled time (EventBridge Scheduler's ``<aws.scheduler.scheduled-time>`` in the template's Input),
    else now."""
    stamp = event.get("scheduled_time") if isinstance(event, dict) else None
    if isinstance(stamp, str) and stamp:
        return datetime.fromisoformat(stamp.replace("Z", "+00:00")).astimezone(UTC)
    return datetime.fromtimestamp(time.time(), UTC)


@metrics.log_metrics
@logger.inject_lambda_context(clear_state=True)
@observability.tracer(SERVICE).capture_lambda_handler(capture_response=False)
def lambda_handler(event: dict[str, Any], context: LambdaContext) -> dict[str, Any]:
    deps = dependencies.starter()
    now = scheduled_at(event)
    period = due_period(now, deps.settings.grace)
    observability.correlate(SERVICE, period=period.key)
    queued = start_run(deps.store, deps.queue, deps.markers, period, int(now.timestamp() * 1000))
    count(SERVICE, Metric.CLOSE_JOBS_QUEUED, queued)
    if queued:
        logger.info("period close fanned out", extra={"accounts": queued})
    running = Period.containing(now)
    early = start_early_checks(deps.store, deps.directory, deps.queue, running)
    if early:
        logger.info("early invoice checks queued", extra={"accounts": early, "running_period": running.key})
    return {"period": period.key, "queued": queued, "early_checks": early}
