"""pi: the queue-driven invoice handlers (close jobs, payment events) start a job only while the invocation has the
time one job needs at worst (``job_reserve_seconds``: 35 s, one Stripe call's 31.5 s at worst and the AWS calls
around it); the rest of the batch is reported failed untouched and the queue delivers it again - before, a batch of
10 ran on until the Lambda timeout failed all of it, the jobs done included."""

from __future__ import annotations

import json
from dataclasses import dataclass
from types import ModuleType
from typing import Any

import pytest
from aws_lambda_powertools.utilities.data_classes.sqs_event import SQSRecord

from kilo_invoice import close_handler, payment_handler
from kilo_invoice.settings import InvoiceSettings
from tests.conftest import LambdaContext, _clear_caches

JOB_SECONDS = 40  # each job of the batch takes 40 s of the invocation here


def sqs_record(message_id: str) -> dict[str, Any]:
    return {
        "messageId": message_id,
        "receiptHandle": f"r-{message_id}",
        "body": json.dumps({"account_id": "acme", "period": "2026-03"}),
        "attributes": {"ApproximateReceiveCount": "1"},
        "messageAttributes": {},
        "md5OfBody": "",
        "eventSource": "aws:sqs",
        "eventSourceARN": "arn:aws:sqs:us-east-1:123456789012:kilo-billing-test",
        "awsRegion": "us-east-1",
    }


@pytest.fixture(autouse=True)
def invoice_environment(monkeypatch: pytest.MonkeyPatch) -> None:
    """The invoice functions' one required setting; ``JOB_RESERVE_SECONDS`` unset: its default."""
    monkeypatch.setenv("USAGE_TABLE_NAME", "kilo-billing-usage-test")
    monkeypatch.delenv("JOB_RESERVE_SECONDS", raising=False)
    _clear_caches()


@dataclass
class Clock(LambdaContext):
    """The invocation's remaining time, spent by the jobs as they run."""

    spent_ms: int = 0

    def get_remaining_time_in_millis(self) -> int:
        return self.remaining_ms - self.spent_ms


def test_given_the_invoice_settings_then_a_job_is_started_with_35_seconds_left_at_least() -> None:
    assert InvoiceSettings(usage_table_name="t").job_reserve_seconds == 35


@pytest.mark.parametrize("handler", [close_handler, payment_handler], ids=["close", "payment"])
def test_given_a_batch_whose_time_runs_out_then_the_jobs_not_started_are_reported_failed_and_never_run(
    handler: ModuleType, monkeypatch: pytest.MonkeyPatch
) -> None:
    """120 s at the start (invoice close's timeout), 40 s a job, 35 s needed to start one: m-1 starts at 120 s left,
    m-2 at 80 s, m-3 at 40 s; m-4 would start at 0 s - it and m-5 are reported failed, neither run."""
    context = Clock(remaining_ms=120_000)
    started: list[str] = []

    def job(record: SQSRecord) -> None:
        started.append(record.message_id)
        context.spent_ms += JOB_SECONDS * 1000

    monkeypatch.setattr(handler, "_record", job)
    answer = handler.lambda_handler({"Records": [sqs_record(f"m-{n}") for n in range(1, 6)]}, context)
    assert started == ["m-1", "m-2", "m-3"]
    assert answer == {"batchItemFailures": [{"itemIdentifier": "m-4"}, {"itemIdentifier": "m-5"}]}


@pytest.mark.parametrize("handler", [close_handler, payment_handler], ids=["close", "payment"])
def test_given_less_time_than_a_job_needs_at_the_start_then_the_first_job_still_runs(
    handler: ModuleType, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The first job of a batch always starts (an invocation begins with the function's whole timeout, 120 s or 60 s,
    more than 35 s): a batch always moves on. 10 s at the start: m-1 runs, m-2 is left."""
    context = Clock(remaining_ms=10_000)
    started: list[str] = []
    monkeypatch.setattr(handler, "_record", lambda record: started.append(record.message_id))
    answer = handler.lambda_handler({"Records": [sqs_record("m-1"), sqs_record("m-2")]}, context)
    assert (started, answer) == (["m-1"], {"batchItemFailures": [{"itemIdentifier": "m-2"}]})
