"""Lambda handler of the scheduled operator checks (``OperatorChecksFunction``): the abuse scan (every 15 minutes)
the daily negative-margin check and the forecast's re-checks due (D366: put on the alerts queue), chosen by the
schedule's input ``{"check": "abuse" | "margin" | "forecast"}``.

A check that could not announce everything for now raises: the schedule's retry policy runs it again, and what was
announced already is not announced again (the claims in the alerts table); after the retries the run is in the
checks' dead-letter queue (alarmed).
"""

from __future__ import annotations

import time
from datetime import datetime
from typing import Any

from aws_lambda_powertools.utilities.typing import LambdaContext

from kilo_alerts import dependencies
from kilo_alerts.operator import Announced, OperatorChecksIncompleteError, check_margin, scan_abuse
from kilo_alerts.rechecks import queue_due
from kilo_billing import observability
from kilo_billing.observability import Metric, count

SERVICE = "alerts-operator"
logger = observability.logger(SERVICE)
metrics = observability.metrics(SERVICE)


def _now_ms(event: dict[str, Any]) -> int:
    stamp = event.get("scheduled_time")
    if isinstance(stamp, str) and stamp:
        return int(datetime.fromisoformat(stamp.replace("Z", "+00:00")).timestamp() * 1000)
    return int(time.time() * 1000)


def log_flags(found: list[Announced]) -> None:
    """Every decision: the signal, what was observed against which threshold, the hold, the alert's outcome."""
    for announced in found:
        signal = announced.signal
        if signal is not None:
            count(SERVICE, Metric.ABUSE_FLAGS)
        if announced.outcome == "sent":
            count(SERVICE, Metric.OPERATOR_ALERTS)
        logger.info(
            "operator alert",
            extra={
                "kind": announced.alert.kind,
                "key": announced.alert.key,
                "account_id": announced.alert.account_id,
                "outcome": announced.outcome,
                "held": announced.held,
                "observed": signal.observed if signal else "",
                "threshold": signal.threshold if signal else "",
            },
        )


@metrics.log_metrics
@logger.inject_lambda_context(clear_state=True)
@observability.tracer(SERVICE).capture_lambda_handler(capture_response=False)
def lambda_handler(event: dict[str, Any], context: LambdaContext) -> dict[str, Any]:
    deps = dependencies.operator_checks()
    check, now_ms = event.get("check"), _now_ms(event)
    if check == "abuse":
        try:
            found = scan_abuse(deps.ports, deps.policy, now_ms)
        except OperatorChecksIncompleteError as exc:
            log_flags(exc.done)
            raise
        log_flags(found)
        return {"check": "abuse", "flagged": len(found), "held": len({a.alert.account_id for a in found if a.held})}
    if check == "margin":
        outcome = check_margin(deps.ports, deps.policy, now_ms)
        logger.info(
            "daily margin",
            extra={
                "day": outcome.snapshot.day,
                "revenue": str(outcome.day_revenue),
                "cost": str(outcome.day_cost),
                "negative": outcome.alert is not None,
            },
        )
        if outcome.alert is not None:
            log_flags([outcome.alert])
        return {
            "check": "margin",
            "day": outcome.snapshot.day,
            "negative": outcome.alert is not None,
        }
    if check == "forecast":  # the forecast's re-checks due (D366): onto the alerts queue, bounded and spread
        recheck = dependencies.forecast_rechecks()
        config = recheck.settings
        run = queue_due(
            recheck.rechecks,
            recheck.queue,
            now_ms,
            config.forecast_rechecks_per_run,
            config.forecast_recheck_spread_seconds,
        )
        # the month's last run: its re-checks still pending are moot once the month is over (counted, not alarmed)
        count(SERVICE, Metric.FORECAST_RECHECKS_DROPPED, run.dropped)
        logger.info("forecast re-checks queued", extra={"queued": len(run.queued), "dropped": run.dropped})
        return {"check": "forecast", "queued": len(run.queued), "dropped": run.dropped}
    raise ValueError(f"unknown check {check!r}: the schedule's input names 'abuse', 'margin' or 'forecast'")
