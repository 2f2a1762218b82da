"""Lambda handler for the crypto-settled queue: each SQS record is a ``CryptoBillSettled.v1`` or
``CryptoCreditAdded.v1`` event the billing bus routed here (``CryptoSettledRule``); our crypto invoice becomes paid
(``apply_crypto_settled``, once) and the bill's credit is added once (``apply_crypto_credit``). An event about an
invoice we do not have is logged and counted, not retried; any other failure (a credit before its settlement
included) is redelivered, then dead-lettered (alarmed)."""

from __future__ import annotations

import json
from functools import cache
from typing import Any

from aws_lambda_powertools.utilities.batch import BatchProcessor, EventType, process_partial_response
from aws_lambda_powertools.utilities.data_classes.sqs_event import SQSRecord
from aws_lambda_powertools.utilities.typing import LambdaContext

from kilo_billing import observability
from kilo_billing.contracts import CryptoBillSettledV1, CryptoCreditAddedV1
from kilo_billing.invoicing import LedgerStore
from kilo_billing.observability import Metric, count
from kilo_invoice.crypto_settled import NotCryptoInvoiceError, apply_crypto_credit, apply_crypto_settled
from kilo_invoice.model import InvoiceNotFoundError
from kilo_invoice.settings import settings

SERVICE = "invoice-crypto"
logger = observability.logger(SERVICE)
metrics = observability.metrics(SERVICE)
processor = BatchProcessor(event_type=EventType.SQS, raise_on_entire_batch_failure=False)


@cache
def ledger() -> LedgerStore:
    from kilo_billing.aws import client  # noqa: PLC0415
    from kilo_billing.periods_store import DynamoLedgerStore  # noqa: PLC0415

    config = settings()
    return DynamoLedgerStore(client("dynamodb", config.call_budget), config.usage_table_name)


def _record(record: SQSRecord) -> None:
    body = json.loads(record.body)
    event: CryptoBillSettledV1 | CryptoCreditAddedV1
    if body.get("detail-type") == CryptoCreditAddedV1.DETAIL_TYPE:
        event = CryptoCreditAddedV1.model_validate(body["detail"])
    else:
        event = CryptoBillSettledV1.model_validate(body["detail"])
    observability.correlate(SERVICE, event_id=event.event_id, account_id=event.account_id, invoice_id=event.invoice_id)
    try:
        if isinstance(event, CryptoCreditAddedV1):
            invoice, changed = apply_crypto_credit(ledger(), event)
        else:
            invoice, changed = apply_crypto_settled(ledger(), event)
    except (InvoiceNotFoundError, NotCryptoInvoiceError) as exc:
        count(SERVICE, Metric.PAYMENT_EVENT_IGNORED)
        logger.warning("crypto settlement about no crypto invoice of ours; ignored", extra={"reason": str(exc)})
        return
    if changed:
        count(SERVICE, Metric.PAYMENT_EVENT_APPLIED)
    logger.info("crypto settlement applied", extra={"changed": changed, "status": invoice.status.value})


@metrics.log_metrics
@logger.inject_lambda_context(clear_state=True)
@observability.tracer(SERVICE).capture_lambda_handler(capture_response=False)
def lambda_handler(event: dict[str, Any], context: LambdaContext) -> dict[str, Any]:
    return dict(process_partial_response(event=event, record_handler=_record, processor=processor, context=context))
