"""Lambda handler for the payment-status queue: each SQS record is a ``StripeEventReceived.v1`` event the billing bus
routed here (``PaymentEventsRule``); the verified Stripe event is read from the events table and applied to our
invoice (``apply_stripe_event``: forward-only states, alerts once, D53). Duplicates and any order are harmless.

An event about nothing of ours (no invoice of ours, or no longer stored) is logged and counted, not retried; a refund
or dispute of a Stripe invoice ours has not recorded yet (its ``invoice.finalized``/``paid`` still to be applied) is
logged at WARNING and reported failed, redelivered until that event has landed (D383) - unless its metadata
names an invoice of ours that never will record it (a duplicate, ours void): ignored, logged at ERROR; any other
failure is reported failed, redelivered, and after ``maxReceiveCount`` dead-lettered (alarmed). An optional
Stripe lookup that failed on our side (``invoice.paid``'s payments with the key's secret malformed or the key revoked)
leaves the event applied, logged at ERROR and counted (``StripeMisconfigured``, alarmed: D316). A refund Stripe made
and then failed is logged at ERROR and counted (``RefundFailed``, alarmed: D340). An event an operator
has to look at - of a Stripe invoice other than ours (not applied), of a revision of ours asking another amount, a
payment short of what ours asks - is logged at ERROR and counted (``PaymentEventNeedsOperator``, alarmed:
D343, D344). An event of a Stripe Connect account is not applied, logged at ERROR and counted
(``StripeEventForeign``, alarmed: D349); one of the other mode than the stage's (``STRIPE_LIVEMODE``) is not applied
either, logged at ERROR and counted alike on its first receive (later ones at WARNING, uncounted), and reported
failed: redelivered, dead-lettered, redriven once the setting is right (D349 amended).
"""

from __future__ import annotations

import json
from datetime import UTC, datetime
from typing import Any

from aws_lambda_powertools.utilities.batch import BatchProcessor, EventType, process_partial_response
from aws_lambda_powertools.utilities.data_classes.sqs_event import SQSRecord
from aws_lambda_powertools.utilities.typing import LambdaContext

from kilo_billing import observability
from kilo_billing.observability import Metric, count
from kilo_invoice import dependencies
from kilo_invoice.batch_time import time_boxed
from kilo_invoice.logic import apply_stripe_event
from kilo_invoice.model import (
    EventOutcome,
    InvoiceNotFoundError,
    InvoiceNotRecordedYetError,
    PaymentOfAStrayInvoiceError,
    StripeModeMismatchError,
)
from kilo_invoice.settings import settings

SERVICE = "invoice-payments"
logger = observability.logger(SERVICE)
metrics = observability.metrics(SERVICE)
processor = BatchProcessor(event_type=EventType.SQS, raise_on_entire_batch_failure=False)


def _record(record: SQSRecord) -> None:
    detail = json.loads(record.body)["detail"]
    pk, sk = str(detail["key"]["pk"]), str(detail["key"]["sk"])
    observability.correlate(SERVICE, stripe_event_id=str(detail.get("stripe_event_id", "")))
    deps = dependencies.payments()
    try:
        outcome = apply_stripe_event(
            deps.store, deps.publisher, deps.events, pk, sk, datetime.now(UTC), deps.gateway, deps.livemode
        )
    except InvoiceNotFoundError as exc:
        count(SERVICE, Metric.PAYMENT_EVENT_IGNORED)
        if isinstance(exc, PaymentOfAStrayInvoiceError):  # our metadata, never ours: a duplicate's refund (D383)
            logger.error("Stripe event of a stray invoice with our metadata; ignored", extra={"reason": str(exc)[:300]})
            return
        logger.warning("Stripe event about nothing of ours; ignored", extra={"reason": str(exc)[:200]})
        return
    except InvoiceNotRecordedYetError as exc:  # ours will know it once its invoice event lands: redelivered
        logger.warning("Stripe event of an invoice not recorded yet; retried", extra={"reason": str(exc)[:300]})
        raise
    except StripeModeMismatchError as exc:  # StripeLiveMode wrong, or a secret of the other mode: kept, alarmed
        _mode_mismatch(record, exc)
        raise
    if outcome.foreign is not None:  # never ours to apply: a Connect endpoint's secret is configured at ingest
        _operator(
            Metric.STRIPE_EVENT_FOREIGN, "Stripe event of a Connect account: not applied", outcome, outcome.foreign
        )
        return
    if outcome.misconfigured is not None:  # the event is done; every later Stripe call fails the same way
        said = "Stripe misconfigured: payments lookup failed; event applied without them"
        _operator(Metric.STRIPE_MISCONFIGURED, said, outcome, outcome.misconfigured[:200])
    if outcome.attention is not None:  # applied or not, the event is done: an operator looks at it in Stripe
        _operator(Metric.PAYMENT_EVENT_ATTENTION, "Stripe event needs an operator", outcome, outcome.attention[:500])
    if outcome.changed:
        count(SERVICE, Metric.PAYMENT_EVENT_APPLIED)
    count(SERVICE, Metric.PAYMENT_FAILED, sum(1 for e in outcome.published if e.startswith("payment-failed:")))
    refunds_failed = [e for e in outcome.published if e.startswith("refund-failed:")]
    if refunds_failed:  # the customer got nothing and the money is back with us: the operator returns it another way
        count(SERVICE, Metric.REFUND_FAILED, len(refunds_failed))
        logger.error(
            "Stripe refund failed after it was made: the customer got nothing; the invoice keeps it again",
            extra={"invoice_id": outcome.invoice_id, "refunds": refunds_failed, "stripe_type": outcome.event_type},
        )
    logger.info(
        "Stripe event applied",
        extra={"stripe_type": outcome.event_type, "invoice_id": outcome.invoice_id, "changed": outcome.changed},
    )


def _mode_mismatch(record: SQSRecord, exc: StripeModeMismatchError) -> None:
    """An event of the other mode, failed for a redrive: counted (``StripeEventForeign``) and logged at ERROR on its
    first receive only - the queue receives it ``maxReceiveCount`` (5) times before the DLQ, and counting each made
    the alarm flap; receives 2 to 5 are logged at WARNING, uncounted. A receive count missing or empty (Lambda always
    sends it) is taken as the first: alarmed rather than not."""
    receives = record.attributes.get("ApproximateReceiveCount")
    extra = {"stripe_type": exc.stripe_type, "invoice_id": exc.invoice_id, "reason": str(exc), "receives": receives}
    if receives in (None, "", "1"):
        count(SERVICE, Metric.STRIPE_EVENT_FOREIGN)
        logger.error("Stripe event of the other mode than the stage's: kept for redrive", extra=extra)
    else:
        logger.warning("Stripe event of the other mode than the stage's, received again: kept for redrive", extra=extra)


def _operator(metric: Metric, message: str, outcome: EventOutcome, reason: str) -> None:
    """Something an operator has to act on (each alarmed on its metric): counted, and logged at ERROR with why."""
    count(SERVICE, metric)
    logger.error(message, extra={"stripe_type": outcome.event_type, "invoice_id": outcome.invoice_id, "reason": reason})


@metrics.log_metrics
@logger.inject_lambda_context(clear_state=True)
@observability.tracer(SERVICE).capture_lambda_handler(capture_response=False)
def lambda_handler(event: dict[str, Any], context: LambdaContext) -> dict[str, Any]:
    # a job starts only with the time one needs left; the rest of the batch goes back to the queue untouched
    handler = time_boxed(_record, context, lambda: int(settings().job_reserve_seconds * 1000))
    return dict(process_partial_response(event=event, record_handler=handler, processor=processor, context=context))
