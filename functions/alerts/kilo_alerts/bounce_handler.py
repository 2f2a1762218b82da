"""Lambda handler for SES's bounce and complaint events of the alerts' emails (D400): the alerts configuration set's
event destination (SNS topic) -> the bounces queue (raw delivery) -> here. Each record marks the addresses SES reports
bounced for good or complained about (``bounces.mark_reported``); later alerts send them no email (``logic``).

Partial batch failures: a record that is not an SES record of ours (no account tag), or whose mark failed to be
written, is reported failed and redelivered; after five receives it is in the bounces dead-letter queue (alarmed).
Marking is idempotent (a conditional put): a redelivered record changes nothing."""

from __future__ import annotations

from typing import Any

from aws_lambda_powertools.utilities.batch import BatchProcessor, EventType, process_partial_response
from aws_lambda_powertools.utilities.data_classes.sqs_event import SQSRecord
from aws_lambda_powertools.utilities.typing import LambdaContext

from kilo_alerts import dependencies
from kilo_alerts.bounces import BounceRecordError, mark_reported
from kilo_billing import observability
from kilo_billing.observability import Metric, count

SERVICE = "alerts-bounces"
logger = observability.logger(SERVICE)
metrics = observability.metrics(SERVICE)
processor = BatchProcessor(event_type=EventType.SQS, raise_on_entire_batch_failure=False)


def _record(record: SQSRecord) -> None:
    try:
        marked = mark_reported(record.body, dependencies.bounce_marks(), dependencies.bounce_replay())
    except BounceRecordError as exc:
        logger.error("not an SES report of an alert email; left to the dead-letter queue", extra={"reason": str(exc)})
        raise
    for found, new, bounced in marked:  # no addresses in logs: the account, what SES said
        count(SERVICE, Metric.EMAILS_MARKED_UNDELIVERABLE, int(new))
        logger.info(
            "address marked undeliverable" if new else "address marked before",
            extra={"account_id": found.account_id, "why": found.why, "detail": found.detail},
        )
        if bounced:  # the email SES took is now recorded undeliverable, not sent (D408)
            logger.info("bounced email's record made undeliverable", extra={"account_id": found.account_id})


@metrics.log_metrics
@logger.inject_lambda_context(clear_state=True)
@observability.tracer(SERVICE).capture_lambda_handler(capture_response=False)
def lambda_handler(event: dict[str, Any], context: LambdaContext) -> dict[str, Any]:
    return dict(process_partial_response(event=event, record_handler=_record, processor=processor, context=context))
