"""Lambda handler for the alerts queue (the billing bus's alert events, through an EventBridge rule, and the delayed
removal steps of an enforcement) and the forecast's re-checks queue (D366 amended (fq): the operator checks' run puts
``BudgetForecastDue.v1`` there, and nothing else is taken from it - any other body is refused, toward that queue's
dead-letter queue): each SQS record is one event, handled by one logic call (``handle_event``: keep the spend item,
enforce a reached hard limit, deliver the alerts).

Partial batch failures: a record whose delivery failed for now (a channel to retry) or that cannot be read is
reported failed and redelivered by the queue; after ``maxReceiveCount`` the queue's redrive moves it to the alerts
dead-letter queue (alarmed). Channels already decided are never sent again (the ledger).
"""

from __future__ import annotations

import json
import re
import time
from typing import Any

from aws_lambda_powertools.utilities.batch import BatchProcessor, EventType, process_partial_response
from aws_lambda_powertools.utilities.data_classes.sqs_event import SQSRecord
from aws_lambda_powertools.utilities.typing import LambdaContext

from kilo_alerts import dependencies
from kilo_alerts.enforcement import TURN_RETRY_SECONDS, EnforcementIncompleteError
from kilo_alerts.logic import AlertOutcome, EventIncompleteError, EventOutcome, handle_event
from kilo_alerts.model import AlertError, Outcome, Reason
from kilo_alerts.rechecks import FORECAST_DUE, RecheckError
from kilo_alerts.settings import AlertSettings, settings
from kilo_billing import observability
from kilo_billing.aws import InvalidRequestError, StorageUnavailableError
from kilo_billing.observability import Metric, count

SERVICE = "alerts"
logger = observability.logger(SERVICE)
metrics = observability.metrics(SERVICE)
# a batch whose every record failed is answered like any other (the failed ids), not raised: same redelivery
processor = BatchProcessor(event_type=EventType.SQS, raise_on_entire_batch_failure=False)
# the settings a blank FORECAST_RECHECKS_QUEUE_URL was last said of: one error line per cold start (settings() is
# read once per container), not one per invocation
_told_unnamed: list[AlertSettings] = []


def _count(outcome: AlertOutcome) -> None:
    count(SERVICE, Metric.ALERTS_SENT, outcome.count(Outcome.SENT))
    count(SERVICE, Metric.ALERTS_DUPLICATE, outcome.count(Outcome.DUPLICATE))
    count(SERVICE, Metric.ALERTS_SKIPPED, outcome.count(Outcome.SKIPPED) + outcome.count(Outcome.OPTED_OUT))
    # refused for good (alarmed: invalid numbers, rejected addresses, an unverified sender); an address SES reported
    # bounced or complained about, or holds on its suppression list, is counted only below (the account's own
    # mailbox, which every month's alerts meet again: not an alarm, D400, D410)
    bounced = sum(d.reason is Reason.BOUNCED for d in outcome.deliveries)
    suppressed = sum(d.reason is Reason.SUPPRESSED for d in outcome.deliveries)
    refused = sum(
        d.outcome is Outcome.UNDELIVERABLE and d.reason not in (Reason.BOUNCED, Reason.SUPPRESSED)
        for d in outcome.deliveries
    )
    count(SERVICE, Metric.ALERTS_UNDELIVERABLE, refused)
    count(SERVICE, Metric.ALERT_SEND_RETRIED, outcome.count(Outcome.RETRY))
    # SES's sending paused for the account: alarmed at the first, not after the dead-letter queue's ~30 min (D399)
    count(SERVICE, Metric.ALERTS_SENDING_PAUSED, sum(d.reason is Reason.PAUSED for d in outcome.deliveries))
    # an email not sent: SES reported the address bounced for good or complained (D400)
    count(SERVICE, Metric.ALERTS_EMAIL_BOUNCED, bounced)
    # an email not sent: SES's account-level suppression list holds the address (a required alert, D381, D410)
    count(SERVICE, Metric.ALERTS_EMAIL_SUPPRESSED, suppressed)
    for delivery in outcome.deliveries:  # no addresses or numbers in logs
        logger.info(
            "alert delivery",
            extra={"channel": delivery.channel.value, "outcome": delivery.outcome.value, "key": delivery.key},
        )


def _enforced(outcome: EventOutcome) -> None:
    for record in outcome.enforcement:
        count(SERVICE, Metric.ENFORCEMENT_ACTIONS)
        logger.info(
            "enforcement action",
            extra={"action": record.action.value, "outcome": record.outcome, "room": record.room},
        )


def _from_rechecks_queue(source_arn: str, rechecks_queue: str, alerts_queue: str) -> bool:
    """The record came from the forecast's re-checks queue: the queue name its ARN ends with
    (``arn:aws:sqs:<region>:<account>:<name>``) is the one ``rechecks_queue`` ends with - the queue's URL
    (``https://sqs.<region>.amazonaws.com/<account>/<name>``) or, a slip forgiven, its ARN - and not the alerts
    queue's. A setting that names no queue, or names the alerts queue, refuses nothing: a wrong setting must not stop
    the real alerts (D366 amended (fq2)); a blank one is said by ``_rechecks_queue_named`` (amended (sm))."""

    def name(queue: str) -> str:
        return re.split(r"[/:]", queue.rstrip("/"))[-1]

    source = source_arn.rsplit(":", 1)[-1]
    return bool(source) and source == name(rechecks_queue) and source != name(alerts_queue)


def _record(record: SQSRecord) -> None:
    deps = dependencies.alerts()
    try:
        event = json.loads(record.body)
        detail_type, detail = str(event["detail-type"]), event["detail"]
        account = detail.get("account_id")
    except (ValueError, KeyError, TypeError, AttributeError) as exc:
        logger.error("event is not an alert; left to the dead-letter queue", extra={"reason": str(exc)[:200]})
        raise
    # the forecast's re-checks queue (whose sender - the operator checks' role - could put any body there): only the
    # re-check is taken; anything else goes that queue's dead-letter path (alarmed). Named by its own setting, so a
    # wrong or blank one lets a forgery through rather than refusing every real alert (D366 amended (fq2)); a blank
    # one is loud (_rechecks_queue_named, amended (sm))
    queues = deps.settings.forecast_rechecks_queue_url, deps.settings.alerts_queue_url
    if detail_type != FORECAST_DUE and _from_rechecks_queue(record.event_source_arn, *queues):
        logger.error(
            "only a forecast re-check is taken from this queue; left to its dead-letter queue",
            extra={"detail_type": detail_type[:100], "source": record.event_source_arn},
        )
        raise RecheckError(f"{detail_type!r} from {record.event_source_arn}: only {FORECAST_DUE} is taken from there")
    observability.correlate(
        SERVICE, account_id=str(account), period=str(detail.get("period")), event_id=str(detail.get("event_id", ""))
    )
    try:
        # the queue's last receive before its redrive to the dead-letter queue: an SMS failing for now goes by email
        receives = int(record.attributes.approximate_receive_count or 1)
        last = receives >= deps.settings.alerts_queue_max_receives
        outcome = handle_event(detail_type, detail, deps.ports, deps.policy, int(time.time() * 1000), last)
    except EventIncompleteError as exc:
        for alert in exc.outcome.alerts:
            _count(alert)
        _enforced(exc.outcome)
        logger.warning("event not fully handled; the queue delivers it again", extra={"reason": str(exc)[:200]})
        if exc.turn_held:  # back in seconds, not after the queue's 360 s (D209)
            _sooner(deps.redelivery, record.receipt_handle, receives, deps.settings.alerts_queue_max_receives)
        raise
    except EnforcementIncompleteError as exc:  # the delayed removal step
        if exc.turn_held:
            _sooner(deps.redelivery, record.receipt_handle, receives, deps.settings.alerts_queue_max_receives)
        raise
    except (AlertError, ValueError) as exc:
        logger.error("event is not an alert; left to the dead-letter queue", extra={"reason": str(exc)[:200]})
        raise
    for alert in outcome.alerts:
        _count(alert)
    _enforced(outcome)


def _rechecks_queue_named() -> None:
    """A blank FORECAST_RECHECKS_QUEUE_URL names no queue, so nothing is refused from the re-checks queue - its
    forgery defence off - while every alert is handled as before (a queue setting never stops the real alerts, D366
    amended (fq2)). Said, not refused (amended (sm)): ``ForecastRechecksQueueUnnamed`` each invocation (alarmed) and
    an error line once per cold start. Settings that cannot be read are not this check's to fail: each record fails
    on them, as it did before this check."""
    try:
        config = settings()
    except ValueError:  # pydantic's ValidationError, pydantic-settings' SettingsError
        return
    if config.forecast_rechecks_queue_url:
        return
    count(SERVICE, Metric.FORECAST_RECHECKS_QUEUE_UNNAMED)
    if _told_unnamed and _told_unnamed[0] is config:
        return
    _told_unnamed[:] = [config]
    logger.error(
        "FORECAST_RECHECKS_QUEUE_URL is blank: the forecast re-checks queue's forgery defence is off (any alert put on "
        "that queue is acted on); every alert is still handled. Set it to the queue's URL (the template's !Ref "
        "ForecastRechecksQueue) (D366 amended (sm))"
    )


def _sooner(redelivery: Any, receipt_handle: str, receives: int, max_receives: int) -> None:
    """Make the record visible again in ``TURN_RETRY_SECONDS`` - but not on the receive before the last one: that one
    waits the queue's own timeout (360 s, past the turn's 5-minute lease), so a turn whose holder crashed is taken
    over on the last receive rather than the event reaching the dead-letter queue within seconds (D209)."""
    if receives >= max_receives - 1:
        return
    try:
        redelivery.sooner(receipt_handle, TURN_RETRY_SECONDS)
    except (StorageUnavailableError, InvalidRequestError) as exc:  # the queue's own timeout then: later, not lost
        logger.warning("redelivery not hastened", extra={"reason": str(exc)[:200]})


@metrics.log_metrics
@logger.inject_lambda_context(clear_state=True)
@observability.tracer(SERVICE).capture_lambda_handler(capture_response=False)
def lambda_handler(event: dict[str, Any], context: LambdaContext) -> dict[str, Any]:
    _rechecks_queue_named()  # before any record, never failing one
    return dict(process_partial_response(event=event, record_handler=_record, processor=processor, context=context))
