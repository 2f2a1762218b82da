"""The replay's reading of on-failure records (AWS's ``DDBStreamBatchInfo``) and its choice of source, with fakes."""

from __future__ import annotations

import json
from collections.abc import Mapping
from typing import Any

from kilo_billing.catalog import default_catalog
from kilo_billing.events import ContractError, Item, StoredEvent
from kilo_billing.livekit_events import LiveKitEventRecord
from kilo_billing.usage_events import UsageEventRecord
from kilo_dev import livekit_events as lk
from kilo_rate_usage.items import key_item
from kilo_rate_usage.model import AttributionRule, RatingConfig
from kilo_rate_usage.ports import UndecodableItem
from kilo_rate_usage.replay import BatchInfo, replay
from tests.fakes import InMemoryPoisonSink, InMemoryUsageRepository, RecordingPublisher

# The example of AWS Lambda's documentation for a DynamoDB stream's on-failure destination
AWS_EXAMPLE = json.dumps({
    "requestContext": {"requestId": "316aa6d0-8154-xmpl-9af7-85d5f4a6bc81",
                       "functionArn": "arn:aws:lambda:us-east-2:123456789012:function:myfunction",
                       "condition": "RetryAttemptsExhausted", "approximateInvokeCount": 1},
    "responseContext": {"statusCode": 200, "executedVersion": "$LATEST", "functionError": "Unhandled"},
    "version": "1.0", "timestamp": "2019-11-14T00:13:49.717Z",
    "DDBStreamBatchInfo": {
        "shardId": "shardId-00000001573689847184-864758bb", "startSequenceNumber": "800000000003126276362",
        "endSequenceNumber": "800000000003126276362", "approximateArrivalOfFirstRecord": "2019-11-14T00:13:19Z",
        "approximateArrivalOfLastRecord": "2019-11-14T00:13:19Z", "batchSize": 1,
        "streamArn": "arn:aws:dynamodb:us-east-2:123456789012:table/mytable/stream/2019-11-14T00:04:06.388"},
})  # fmt: skip
ARRIVAL_MS = 1_573_690_399_000  # 2019-11-14T00:13:19Z
# the same record seven years later, inside a period the price book covers
LATER = AWS_EXAMPLE.replace("2019-11-14", "2026-11-14")
LATER_ARRIVAL_MS = 1_794_615_199_000  # 2026-11-14T00:13:19Z


class Queue:
    def __init__(self, *bodies: str) -> None:
        self.messages = {f"r{i}": body for i, body in enumerate(bodies)}

    def receive(self, limit: int) -> list[tuple[str, str]]:
        return list(self.messages.items())[:limit]

    def delete(self, receipt: str) -> None:
        del self.messages[receipt]


class ExpiredStream:
    def __init__(self) -> None:
        self.asked: list[tuple[str, str, str, str]] = []

    def batch_records(self, arn: str, shard: str, start: str, end: str) -> list[dict[str, Any]] | None:
        self.asked.append((arn, shard, start, end))
        return None


class Events:
    def __init__(self, *events: StoredEvent) -> None:
        self.events = list(events)
        self.windows: list[tuple[int, int]] = []

    def received_between(self, start_ms: int, end_ms: int) -> list[StoredEvent | UndecodableItem]:
        self.windows.append((start_ms, end_ms))
        return [event for event in self.events if start_ms <= event.received_at_ms <= end_ms]

    def stored_item(self, keys: Mapping[str, Any]) -> Item | None:
        found = [event.to_item(0) for event in self.events if key_item(*event.key) == keys]
        return found[0] if found else None


def test_given_awss_documented_record_then_every_coordinate_is_read() -> None:
    info = BatchInfo.parse(AWS_EXAMPLE)
    assert (info.shard_id, info.start_sequence, info.end_sequence, info.batch_size) == (
        "shardId-00000001573689847184-864758bb", "800000000003126276362", "800000000003126276362", 1
    )  # fmt: skip
    assert (info.first_arrival_ms, info.last_arrival_ms) == (ARRIVAL_MS, ARRIVAL_MS)
    # the events table is searched from 10 minutes before the first arrival to 10 minutes after the last
    assert info.window(600_000) == (ARRIVAL_MS - 600_000, ARRIVAL_MS + 600_000)


def test_given_a_record_without_arrival_times_then_the_window_is_the_streams_24_hours_before_the_failure() -> None:
    body = json.dumps({"timestamp": "2019-11-14T00:13:49.717Z", "DDBStreamBatchInfo": {
        "startSequenceNumber": "5", "endSequenceNumber": "9", "batchSize": 5, "streamArn": "arn:s"}})  # fmt: skip
    failed = 1_573_690_429_717  # 2019-11-14T00:13:49.717Z
    assert BatchInfo.parse(body).window(600_000) == (failed - 86_400_000 - 600_000, failed)


def test_given_expired_stream_records_then_the_window_is_rerated_once_and_the_message_deleted_only_on_apply() -> None:
    in_window = UsageEventRecord(
        "kilo-app", "m-1", "acct", "messages", 70, LATER_ARRIVAL_MS, "h", LATER_ARRIVAL_MS - 2_000
    )
    outside = UsageEventRecord(
        "kilo-app", "m-0", "acct", "messages", 5, LATER_ARRIVAL_MS, "h0", LATER_ARRIVAL_MS - 3_600_000
    )
    repo, queue, stream = InMemoryUsageRepository(), Queue(LATER, "not json"), ExpiredStream()
    events = Events(in_window, outside)
    for record in (in_window, outside):
        repo.store_event(record)
    config = RatingConfig(AttributionRule(), default_catalog().for_period)

    def run(apply: bool) -> list[Any]:
        return replay(queue, stream, events, repo, RecordingPublisher(), InMemoryPoisonSink(), config,
                      LATER_ARRIVAL_MS + 60_000, apply)  # fmt: skip

    dry = run(apply=False)
    assert [(r.plan.source, r.outcome.usage_rated if r.outcome else None) for r in dry] == [
        ("events table", 1), ("", None)
    ]  # fmt: skip
    assert "not JSON" in dry[1].plan.problem
    assert repo.totals("acct", "2026-11") == {}  # a dry run writes nothing
    assert len(queue.messages) == 2

    applied = run(apply=True)
    assert [r.deleted for r in applied] == [True, False]  # the unreadable message stays for a person to look at
    assert repo.totals("acct", "2026-11") == {"messages": 70}  # only the event received in the window
    queue.messages["again"] = LATER
    again = run(apply=True)
    assert [r.outcome.usage_rated if r.outcome else None for r in again] == [None, 0]
    assert repo.totals("acct", "2026-11") == {"messages": 70}
    assert stream.asked[0][1:] == ("shardId-00000001573689847184-864758bb", "800000000003126276362",
                                   "800000000003126276362")  # fmt: skip


class SchemaAhead(InMemoryUsageRepository):
    """A repository one of whose rooms holds an item of a newer schema (a rolling deploy): reading it fails."""

    def room_events(self, room_sid: str) -> list[LiveKitEventRecord]:
        if room_sid == "RM_ahead":
            raise ContractError("schema version 2 is newer than this reader (1)")
        return super().room_events(room_sid)


def test_given_a_message_whose_stored_data_cannot_be_read_then_it_stays_with_its_problem_and_the_next_is_rated() -> (
    None
):
    later = LATER.replace("00:13:19Z", "05:13:19Z")  # a second failed batch, five hours after the first
    room = lk.Room("RM_ahead", "ahead", account_id="acct", created_at=LATER_ARRIVAL_MS // 1000 - 600)
    joined = lk.to_record(
        lk.participant_joined(room, lk.Participant("PA_ahead", "alice", (LATER_ARRIVAL_MS - 600_000))),
        received_at_ms=LATER_ARRIVAL_MS - 2_000,
    )
    usage = UsageEventRecord(
        "kilo-app", "m-5", "acct", "messages", 70, LATER_ARRIVAL_MS, "h5", LATER_ARRIVAL_MS + 5 * 3_600_000 - 2_000
    )
    repo, queue = SchemaAhead(), Queue(LATER, later)
    for record in (joined, usage):
        repo.store_event(record)
    config = RatingConfig(AttributionRule(), default_catalog().for_period)

    results = replay(queue, ExpiredStream(), Events(joined, usage), repo, RecordingPublisher(), InMemoryPoisonSink(),
                     config, LATER_ARRIVAL_MS + 6 * 3_600_000, apply=True)  # fmt: skip

    assert [(r.plan.rooms, r.applied, r.deleted) for r in results] == [(["RM_ahead"], False, False), ([], True, True)]
    assert results[0].plan.problem == "not rated: schema version 2 is newer than this reader (1)"
    assert list(queue.messages) == ["r0"]  # kept for a person (or a reader of the newer schema) to replay
    assert repo.totals("acct", "2026-11") == {"messages": 70}  # the second batch's usage, rated


def _poison_run(queue: Queue, events: Events, repo: InMemoryUsageRepository, poison: InMemoryPoisonSink) -> list[Any]:
    config = RatingConfig(AttributionRule(), default_catalog().for_period)
    return replay(queue, ExpiredStream(), events, repo, RecordingPublisher(), poison, config,
                  LATER_ARRIVAL_MS + 60_000, apply=True)  # fmt: skip


def test_given_a_poison_message_of_the_earlier_shape_when_replayed_then_its_usage_is_rated_once() -> None:
    """Messages sent before the poison queue carried keys held the whole stream record: still replayable (by the
    record's keys, from the events table), and a second replay of the same message rates nothing more."""
    usage = UsageEventRecord("kilo-app", "m-9", "acct", "messages", 70, LATER_ARRIVAL_MS, "h9", LATER_ARRIVAL_MS)
    record = {
        "eventName": "INSERT",
        "eventID": "e-9",
        "dynamodb": {"Keys": key_item(*usage.key), "NewImage": usage.to_item(0), "SequenceNumber": "7"},
    }
    body = json.dumps({"reason": "DynamoDB refused the usage write: too large", "record": record})  # fmt: skip
    repo, queue, poison = InMemoryUsageRepository(), Queue(body, body), InMemoryPoisonSink()
    repo.store_event(usage)

    results = _poison_run(queue, Events(usage), repo, poison)

    assert [(r.plan.source, r.outcome.usage_rated if r.outcome else None, r.deleted) for r in results] == [
        ("poison queue", 1, True), ("poison queue", 0, True)
    ]  # fmt: skip
    assert repo.totals("acct", "2026-11") == {"messages": 70}
    assert queue.messages == {}
    assert poison.sent == []


def test_given_a_poison_message_whose_event_is_still_not_ratable_or_gone_then_it_stays_naming_why() -> None:
    unknown = UsageEventRecord("kilo-app", "v-1", "acct", "video_seconds", 5, LATER_ARRIVAL_MS, "h", LATER_ARRIVAL_MS)
    gone = {"pk": {"S": "usage#kilo-app#m-gone"}, "sk": {"S": "usage"}}
    bodies = [json.dumps({"reason": "usage meter 'video_seconds' cannot be rated", "keys": key_item(*unknown.key)}),
              json.dumps({"reason": "DynamoDB refused the usage write: too large", "keys": gone})]  # fmt: skip
    repo, queue, poison = InMemoryUsageRepository(), Queue(*bodies), InMemoryPoisonSink()

    results = _poison_run(queue, Events(unknown), repo, poison)

    assert [r.plan.problem for r in results] == [
        "still not ratable: usage meter 'video_seconds' cannot be rated",
        "usage#kilo-app#m-gone / usage is not in the events table (expired or erased): nothing to re-rate",
    ]
    assert [r.deleted for r in results] == [False, False]  # kept on the queue, for a person to look at
    assert len(queue.messages) == 2
    assert poison.sent == []  # not sent to the poison queue a second time
