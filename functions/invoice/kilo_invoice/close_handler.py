"""Lambda handler for the close queue: each SQS record is one (account, period) close job (``close_through``).

Partial batch failures: a job that failed for now (the processor or DynamoDB unavailable, a conflict that kept
recurring) is reported failed and redelivered by the queue; after ``maxReceiveCount`` the redrive moves it to the
close dead-letter queue (alarmed). A rerun of a job is safe at any point (docs/decisions.md D51). A credit note
Stripe refuses as ours to fix does not fail the job (the invoice is issued, the note waits): logged at ERROR and
counted as ``StripeMisconfigured``, which ``CloseStripeMisconfiguredAlarm`` watches (D330).
"""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any

from aws_lambda_powertools.utilities.batch import BatchProcessor, EventType, process_partial_response
from aws_lambda_powertools.utilities.data_classes.sqs_event import SQSRecord
from aws_lambda_powertools.utilities.typing import LambdaContext

from kilo_billing import observability
from kilo_billing.observability import Metric, count
from kilo_billing.periods import Period
from kilo_invoice import dependencies
from kilo_invoice.adapters import parse_job
from kilo_invoice.batch_time import time_boxed
from kilo_invoice.logic import EARLY_JOB, close_through, issue_early
from kilo_invoice.settings import settings

SERVICE = "invoice-close"
logger = observability.logger(SERVICE)
metrics = observability.metrics(SERVICE)
processor = BatchProcessor(event_type=EventType.SQS, raise_on_entire_batch_failure=False)


def _record(record: SQSRecord) -> None:
    account, period, kind = parse_job(record.body)
    observability.correlate(SERVICE, account_id=account, period=period)
    if kind == EARLY_JOB:  # progressive billing: an early invoice if one is due now
        early = issue_early(dependencies.closer(), account, Period.parse(period), datetime.now(UTC))
        logger.info("early invoices", extra={"invoices": [(i.invoice_id, i.status.value) for i in early]})
        return
    try:
        outcomes = close_through(dependencies.closer(), account, Period.parse(period), datetime.now(UTC))
    except Exception as exc:
        count(SERVICE, Metric.INVOICE_CLOSE_FAILED)
        logger.warning("close failed; the queue delivers the job again", extra={"reason": str(exc)[:200]})
        raise
    # a catch-up run closes several periods, each retrying the same waiting notes: each note named once (D330)
    waiting = {note.credit_id: note for outcome in outcomes for note in outcome.notes_waiting}.values()
    if waiting:  # issued; these notes wait until an operator fixes our side at Stripe
        count(SERVICE, Metric.STRIPE_MISCONFIGURED, len(waiting))
        logger.error(
            "Credit notes wait at Stripe (ours to fix, or its invoice revised there): invoice issued without them",
            extra={
                "closed_periods": [o.period for o in outcomes],
                "notes": [f"{note.credit_id}: {note.why}"[:200] for note in waiting],
            },
        )
    for outcome in outcomes:
        if outcome.invoice is None:
            logger.info("nothing to close", extra={"closed_period": outcome.period})
            continue
        if outcome.created:
            count(SERVICE, Metric.INVOICE_ISSUED)
        logger.info(
            "account closed",
            extra={
                "invoice_id": outcome.invoice.invoice_id,
                "status": outcome.invoice.status.value,
                "total": str(outcome.invoice.total),
                "new_invoice": outcome.created,  # not "created": a LogRecord attribute
            },
        )


@metrics.log_metrics
@logger.inject_lambda_context(clear_state=True)
@observability.tracer(SERVICE).capture_lambda_handler(capture_response=False)
def lambda_handler(event: dict[str, Any], context: LambdaContext) -> dict[str, Any]:
    # a job starts only with the time one needs left; the rest of the batch goes back to the queue untouched
    handler = time_boxed(_record, context, lambda: int(settings().job_reserve_seconds * 1000))
    return dict(process_partial_response(event=event, record_handler=handler, processor=processor, context=context))
