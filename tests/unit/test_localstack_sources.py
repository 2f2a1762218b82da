"""The local runtime's event-source semantics, with a scripted function (no AWS needed)."""

from __future__ import annotations

import json
from typing import Any

import pytest

from kilo_dev.localstack import Clock, Function, Schedule, StreamSource, parse_rate


def record(sequence: int, poison: bool = False) -> dict[str, Any]:
    return {
        "eventName": "INSERT",
        "dynamodb": {"SequenceNumber": str(sequence), "NewImage": {"poison": {"BOOL": poison}}},
    }


class FakeSqs:
    def __init__(self) -> None:
        self.sent: list[dict[str, Any]] = []

    def send_message(self, QueueUrl: str, MessageBody: str) -> None:  # noqa: N803 - boto3's parameter names
        self.sent.append({"url": QueueUrl, "body": json.loads(MessageBody)})


class FakeReader:
    def __init__(self, records: list[dict[str, Any]]) -> None:
        self.records = records

    def poll(self) -> list[dict[str, Any]]:
        out, self.records = self.records, []
        return out


def source(records: list[dict[str, Any]], handler: Any, **overrides: Any) -> tuple[StreamSource, FakeSqs]:
    sqs = FakeSqs()
    settings = {"batch_size": 10, "max_retries": 2, "bisect": True, "on_failure": "dlq-url"} | overrides
    stream = StreamSource(Function("fn", handler), FakeReader(records), "arn:stream", [], sqs=sqs, **settings)  # type: ignore[arg-type]
    return stream, sqs


def test_given_a_poison_record_then_bisect_isolates_it_and_the_rest_is_processed() -> None:
    seen: list[int] = []

    def handler(event: dict[str, Any], _: Any) -> dict[str, Any]:
        if any(r["dynamodb"]["NewImage"]["poison"]["BOOL"] for r in event["Records"]):
            raise RuntimeError("cannot rate")
        seen.extend(int(r["dynamodb"]["SequenceNumber"]) for r in event["Records"])
        return {"batchItemFailures": []}

    stream, sqs = source([record(i, poison=(i == 5)) for i in range(1, 9)], handler)
    assert stream.poll_once() == 8
    assert sorted(seen) == [1, 2, 3, 4, 6, 7, 8]
    assert len(sqs.sent) == 1
    info = sqs.sent[0]["body"]["DDBStreamBatchInfo"]
    assert (info["startSequenceNumber"], info["endSequenceNumber"], info["batchSize"]) == ("5", "5", 1)


def test_given_partial_batch_failures_then_retried_from_the_first_failure_only() -> None:
    calls: list[list[int]] = []

    def handler(event: dict[str, Any], _: Any) -> dict[str, Any]:
        sequences = [int(r["dynamodb"]["SequenceNumber"]) for r in event["Records"]]
        calls.append(sequences)
        return {"batchItemFailures": [{"itemIdentifier": "3"}]} if len(calls) == 1 else {"batchItemFailures": []}

    stream, sqs = source([record(i) for i in range(1, 6)], handler)
    stream.poll_once()
    assert calls == [[1, 2, 3, 4, 5], [3, 4, 5]]
    assert sqs.sent == []
    assert stream.processed == 5


def test_given_batch_size_then_records_are_delivered_in_order_in_batches() -> None:
    calls: list[list[int]] = []

    def handler(event: dict[str, Any], _: Any) -> dict[str, Any]:
        calls.append([int(r["dynamodb"]["SequenceNumber"]) for r in event["Records"]])
        return {"batchItemFailures": []}

    stream, _ = source([record(i) for i in range(1, 8)], handler, batch_size=3)
    stream.poll_once()
    assert calls == [[1, 2, 3], [4, 5, 6], [7]]


def test_given_a_schedule_then_it_fires_on_the_simulated_clock_with_the_scheduled_time() -> None:
    events: list[dict[str, Any]] = []
    clock = Clock()
    clock.set(1_794_787_200)
    schedule = Schedule(
        Function("sweeper", lambda e, _: events.append(e)), 300, '{"t": "<aws.scheduler.scheduled-time>"}', clock
    )
    schedule.tick()  # arms
    clock.set(1_794_787_200 + 299)
    schedule.tick()
    assert events == []
    clock.set(1_794_787_200 + 3600)  # an hour later: one run, missed ticks are not backfilled
    schedule.tick()
    schedule.tick()
    assert events == [{"t": "2026-11-16T01:00:00Z"}]
    assert parse_rate("rate(5 minutes)") == 300
    with pytest.raises(ValueError, match="rate"):
        parse_rate("cron(0 12 * * ? *)")
