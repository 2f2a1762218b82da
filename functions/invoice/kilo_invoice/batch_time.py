"""The queue-driven invoice handlers' time box: a job of the batch starts only while the invocation has the time one
job needs at worst (``InvoiceSettings.job_reserve_seconds``); the first always starts (an invocation begins with the
function's whole timeout). A job not started raises ``JobNotStartedError`` untouched, so Powertools' BatchProcessor
reports it in ``batchItemFailures`` and the queue delivers it again - instead of the Lambda timeout failing the whole
batch, the jobs done included."""

from __future__ import annotations

from collections.abc import Callable

from aws_lambda_powertools.utilities.data_classes.sqs_event import SQSRecord
from aws_lambda_powertools.utilities.typing import LambdaContext


class JobNotStartedError(Exception):
    """Too little of the invocation left for this job: not started, left for the queue's next delivery."""


def time_boxed(
    job: Callable[[SQSRecord], None], context: LambdaContext, reserve_ms: Callable[[], int]
) -> Callable[[SQSRecord], None]:
    """``job`` for one batch: from the second record on, started only while ``context`` has ``reserve_ms()`` left."""
    started = False

    def run(record: SQSRecord) -> None:
        nonlocal started
        if started:
            left, needed = context.get_remaining_time_in_millis(), reserve_ms()
            if left < needed:
                raise JobNotStartedError(f"{left} ms left of the invocation, a job needs {needed} ms: not started")
        started = True
        job(record)

    return run
