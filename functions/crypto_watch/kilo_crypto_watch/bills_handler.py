"""Lambda handler for the crypto bills queue: each SQS record is an ``InvoiceIssued.v1`` event the billing bus routed
here (``CryptoBillsRule``, method crypto); the issued invoice becomes an OPEN crypto bill (``logic.open_bill``,
idempotent on the invoice id). A malformed event is logged and dropped to the DLQ by failing it; any other failure is
reported failed, redelivered, and after ``maxReceiveCount`` dead-lettered (alarmed)."""

from __future__ import annotations

import json
from typing import Any

from aws_lambda_powertools.utilities.batch import BatchProcessor, EventType, process_partial_response
from aws_lambda_powertools.utilities.data_classes.sqs_event import SQSRecord
from aws_lambda_powertools.utilities.typing import LambdaContext

from kilo_billing import observability
from kilo_billing.contracts import InvoiceIssuedV1
from kilo_crypto_watch import dependencies
from kilo_crypto_watch.logic import open_bill

SERVICE = "crypto-bills"
logger = observability.logger(SERVICE)
metrics = observability.metrics(SERVICE)
processor = BatchProcessor(event_type=EventType.SQS, raise_on_entire_batch_failure=False)


def _record(record: SQSRecord) -> None:
    event = json.loads(record.body)
    issued = InvoiceIssuedV1.model_validate(event["detail"])
    observability.correlate(
        SERVICE, event_id=issued.event_id, account_id=issued.account_id, invoice_id=issued.invoice_id
    )
    bill = open_bill(dependencies.store(), issued)
    logger.info("crypto bill", extra={"opened": bill is not None, "method": issued.method, "total": issued.total})


@metrics.log_metrics
@logger.inject_lambda_context(clear_state=True)
@observability.tracer(SERVICE).capture_lambda_handler(capture_response=False)
def lambda_handler(event: dict[str, Any], context: LambdaContext) -> dict[str, Any]:
    return dict(process_partial_response(event=event, record_handler=_record, processor=processor, context=context))
