"""The local runtime's event-source and schedule semantics, with a scripted function (no AWS needed), and the bounds the
local moto server puts on what it keeps."""

from __future__ import annotations

import json
from typing import Any

import pytest

from kilo_dev import moto_server
from kilo_dev.localstack import AsyncInvoke, Clock, Function, QueueSource, Schedule, StreamSource, parse_rate


def record(sequence: int, poison: bool = False) -> dict[str, Any]:
    return {
        "eventName": "INSERT",
        "dynamodb": {"SequenceNumber": str(sequence), "NewImage": {"poison": {"BOOL": poison}}},
    }


class FakeSqs:
    def __init__(self) -> None:
        self.sent: list[dict[str, Any]] = []

    def send_message(  # boto3's parameter names
        self,
        QueueUrl: str,  # noqa: N803
        MessageBody: str,  # noqa: N803
        MessageAttributes: dict[str, Any] | None = None,  # noqa: N803
    ) -> None:
        attributes = {name: value["StringValue"] for name, value in (MessageAttributes or {}).items()}
        self.sent.append({"url": QueueUrl, "body": json.loads(MessageBody), "attributes": attributes})


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


# --- schedules: the function's asynchronous invocation config (retries, maximum age, on-failure destination) -------

START = 1_794_787_200  # 2026-11-16T00:00:00Z


class RealTime:
    """The schedule's real-time source, driven by the test."""

    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


class Flaky:
    """A handler that fails its first ``failures`` calls."""

    def __init__(self, failures: int) -> None:
        self.failures = failures
        self.calls: list[dict[str, Any]] = []

    def __call__(self, event: dict[str, Any], _: Any) -> None:
        self.calls.append(event)
        if len(self.calls) <= self.failures:
            raise RuntimeError(f"failure {len(self.calls)}")


def scheduled(handler: Any, **invoke: Any) -> tuple[Schedule, Clock, RealTime, FakeSqs]:
    clock, real, sqs = Clock(), RealTime(), FakeSqs()
    clock.set(START)
    config = AsyncInvoke(function_arn="arn:aws:lambda:us-east-1:123456789012:function:sweeper", **invoke)
    schedule = Schedule(Function("sweeper", handler), 300, '{"t": "<aws.scheduler.scheduled-time>"}', clock,
                        invoke=config, sqs=sqs, monotonic=real)  # fmt: skip
    schedule.tick()  # arms
    clock.set(START + 300)
    schedule.tick()  # the run
    return schedule, clock, real, sqs


def retry_until_settled(schedule: Schedule, real: RealTime, limit: int = 20) -> None:
    for _ in range(limit):
        if not schedule.pending:
            return
        real.now += 10  # past any backoff
        schedule.tick()
    raise AssertionError("the schedule kept retrying")


def test_given_a_run_that_fails_once_then_it_is_retried_after_a_backoff_and_nothing_is_dead_lettered() -> None:
    handler = Flaky(failures=1)
    schedule, _, real, sqs = scheduled(handler, max_retries=2, on_failure_url="dlq")
    assert len(handler.calls) == 1
    assert len(schedule.pending) == 1
    schedule.tick()  # the backoff has not passed: no retry yet
    assert len(handler.calls) == 1
    real.now += 0.1
    schedule.tick()
    assert handler.calls == [{"t": "2026-11-16T00:05:00Z"}] * 2  # the same run, the same scheduled time
    assert (schedule.fired, schedule.failures, schedule.dead_lettered, schedule.pending, sqs.sent) == (1, 1, 0, [], [])


def test_given_a_run_that_keeps_failing_then_after_the_functions_retries_it_goes_to_its_on_failure_queue() -> None:
    handler = Flaky(failures=100)
    schedule, _, real, sqs = scheduled(handler, max_retries=2, on_failure_url="dlq")
    retry_until_settled(schedule, real)
    assert len(handler.calls) == 3  # the first try and MaximumRetryAttempts = 2 retries
    assert (schedule.failures, schedule.dead_lettered, schedule.dropped) == (3, 1, 0)
    [dead] = sqs.sent
    assert dead["url"] == "dlq"
    # Lambda's invocation record (what an asynchronous invocation's on-failure destination receives)
    record = dead["body"]
    assert record["requestPayload"] == {"t": "2026-11-16T00:05:00Z"}
    assert record["requestContext"]["condition"] == "RetriesExhausted"
    assert record["requestContext"]["approximateInvokeCount"] == 3
    assert record["requestContext"]["functionArn"] == "arn:aws:lambda:us-east-1:123456789012:function:sweeper:$LATEST"
    assert record["responseContext"]["functionError"] == "Unhandled"
    assert record["responsePayload"] == {"errorMessage": "failure 3", "errorType": "RuntimeError"}


def test_given_no_dead_letter_queue_then_a_run_that_keeps_failing_is_dropped_and_counted() -> None:
    handler = Flaky(failures=100)
    schedule, _, real, sqs = scheduled(handler, max_retries=0)
    retry_until_settled(schedule, real)
    assert len(handler.calls) == 1
    assert (schedule.failures, schedule.dead_lettered, schedule.dropped, sqs.sent) == (1, 0, 1, [])


def test_given_a_run_older_than_the_maximum_event_age_then_it_is_not_retried_again() -> None:
    handler = Flaky(failures=100)
    schedule, clock, real, sqs = scheduled(handler, max_retries=185, max_age_seconds=600, on_failure_url="dlq")
    real.now += 10
    schedule.tick()  # the 00:05 run's first retry, 0 s old on the stack's clock
    clock.set(START + 300 + 601)  # now the 00:05 run is 601 s old
    real.now += 10
    schedule.tick()  # its second retry fails and it is too old for another; the next run (00:15:01) fires
    assert [call["t"] for call in handler.calls] == ["2026-11-16T00:05:00Z"] * 3 + ["2026-11-16T00:15:01Z"]
    assert [dead["body"]["requestPayload"]["t"] for dead in sqs.sent] == ["2026-11-16T00:05:00Z"]
    assert [run.event["t"] for run in schedule.pending] == ["2026-11-16T00:15:01Z"]


def test_given_backoff_then_retries_wait_longer_each_time_up_to_five_seconds() -> None:
    handler = Flaky(failures=100)
    schedule, _, real, _ = scheduled(handler, max_retries=10, on_failure_url="dlq")
    waits = []
    for _ in range(8):
        [run] = schedule.pending
        waits.append(round(run.due - real.now, 3))
        real.now = run.due
        schedule.tick()
    assert waits == [0.1, 0.2, 0.4, 0.8, 1.6, 3.2, 5.0, 5.0]


def test_given_the_local_moto_server_then_shard_iterators_expire_by_age_and_count(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    now = [0.0]
    monkeypatch.setattr(moto_server.time, "monotonic", lambda: now[0])
    monkeypatch.setattr(moto_server, "MAX_ITERATORS", 3)
    iterators = moto_server.ExpiringIterators()
    for name in ("a", "b", "c"):
        iterators[name] = name.upper()
        now[0] += 1
    iterators["d"] = "D"  # a fourth: the oldest goes
    assert sorted(iterators) == ["b", "c", "d"]
    assert iterators["d"] == "D"
    now[0] += 15 * 60  # b and c are older than 15 minutes now; d was issued 15 minutes ago exactly
    iterators["e"] = "E"
    assert sorted(iterators) == ["d", "e"]


def test_given_the_local_moto_server_then_tracked_instances_do_not_keep_them_alive() -> None:
    class Model:
        pass

    tracked = moto_server.WeakInstances()
    kept = [Model() for _ in range(3)]
    for instance in kept:
        tracked.append(instance)
    for _ in range(2000):
        tracked.append(Model())  # garbage at once
    assert list(tracked) == kept
    assert len(tracked) == 3


def test_given_a_queue_source_then_each_record_carries_its_receive_count_as_lambda_passes_it() -> None:
    """The local stack's SQS event source passes ``attributes.ApproximateReceiveCount`` as Lambda does: the payment
    handler counts an event of the other mode on its first receive only, the alerts handler knows its last (D349
    amended, review 2). A record failed is received again: "1", then "2"."""
    import boto3  # noqa: PLC0415
    from moto import mock_aws  # noqa: PLC0415

    seen: list[str] = []

    def failing(event: dict[str, Any], _context: Any) -> dict[str, Any]:
        seen.extend(r["attributes"]["ApproximateReceiveCount"] for r in event["Records"])
        return {"batchItemFailures": [{"itemIdentifier": r["messageId"]} for r in event["Records"]]}

    with mock_aws():
        sqs = boto3.client("sqs", region_name="us-east-1", aws_access_key_id="t", aws_secret_access_key="t")
        url = sqs.create_queue(QueueName="payments", Attributes={"VisibilityTimeout": "0"})["QueueUrl"]
        sqs.send_message(QueueUrl=url, MessageBody="{}")
        queue = QueueSource(Function("fn", failing), url, "arn:aws:sqs:us-east-1:123456789012:payments", 10, sqs)
        assert (queue.poll_once(), queue.poll_once()) == (1, 1)
    assert seen == ["1", "2"]
