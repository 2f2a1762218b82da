"""The replay's reading of on-failure records (AWS's ``DDBStreamBatchInfo``) and its choice of source, with fakes."""

from __future__ import annotations

import json
import shlex
import subprocess
from collections.abc import Mapping
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import jmespath
import pytest

from kilo_billing.accounts import AccountProfile
from kilo_billing.catalog import default_catalog
from kilo_billing.events import ContractError, Item, StoredEvent
from kilo_billing.livekit_events import LiveKitEventRecord
from kilo_billing.publisher import PublishError
from kilo_billing.rating import TierChange
from kilo_billing.usage_events import UsageEventRecord
from kilo_dev import livekit_events as lk
from kilo_rate_usage import replay as replay_module
from kilo_rate_usage.items import key_item
from kilo_rate_usage.model import AttributionRule, RatingConfig
from kilo_rate_usage.ports import UndecodableItem
from kilo_rate_usage.replay import BatchInfo, replay
from tests.fakes import InMemoryAccountDirectory, InMemoryPoisonSink, InMemoryUsageRepository, RecordingPublisher

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


def test_given_a_hand_made_record_spanning_a_stall_past_the_streams_retention_then_its_window_is_rerated() -> None:
    """README's runbook for RatingNotInvokedAlarm: no command re-rates stored events by time range, so an operator
    puts on the on-failure queue a record of their own whose arrival times span the stall (here three days, from
    2026-11-14T00:13:19Z); no shard holds its sequence numbers, and the events table's window answers."""
    day = 86_400_000
    body = json.dumps({"DDBStreamBatchInfo": {
        "streamArn": "arn:aws:dynamodb:us-east-2:123456789012:table/kilo-billing-events-prod/stream/x",
        "shardId": "none", "startSequenceNumber": "0", "endSequenceNumber": "0",
        "approximateArrivalOfFirstRecord": "2026-11-14T00:13:19Z",
        "approximateArrivalOfLastRecord": "2026-11-17T00:13:19Z"}})  # fmt: skip

    def usage(event_id: str, quantity: int, received_ms: int) -> UsageEventRecord:
        return UsageEventRecord("kilo-app", event_id, "acct", "messages", quantity, received_ms, event_id, received_ms)

    first_day = usage("m-1", 70, LATER_ARRIVAL_MS + 3_600_000)  # an hour into the stall
    third_day = usage("m-2", 30, LATER_ARRIVAL_MS + 2 * day + 3_600_000)  # past the stream's 24 h
    before = usage("m-0", 5, LATER_ARRIVAL_MS - 3_600_000)  # an hour before: outside the 10-minute margin
    repo, queue, stream = InMemoryUsageRepository(), Queue(body), ExpiredStream()
    for record in (first_day, third_day, before):
        repo.store_event(record)
    config = RatingConfig(AttributionRule(), default_catalog().for_period)

    results = replay(queue, stream, Events(first_day, third_day, before), repo, RecordingPublisher(),
                     InMemoryPoisonSink(), config, LATER_ARRIVAL_MS + 3 * day + 60_000, True)  # fmt: skip

    assert [(r.plan.source, r.outcome.usage_rated if r.outcome else None, r.deleted) for r in results] == [
        ("events table", 2, True)
    ]  # fmt: skip
    assert repo.totals("acct", "2026-11") == {"messages": 100}  # 70 + 30; the 5 before the stall not re-rated here


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


CONFIG = RatingConfig(AttributionRule(), default_catalog().for_period)


class RefusingUnattributed(RecordingPublisher):
    """EventBridge refusing ``UnattributedAppUsage.v1`` for its content (rating publishes it before the commit)."""

    def publish(self, detail_type: str, detail: Mapping[str, Any]) -> None:
        if detail_type.startswith("UnattributedAppUsage"):
            raise PublishError("MalformedDetail: Detail is malformed.")
        super().publish(detail_type, detail)


def _customer_and_early() -> tuple[InMemoryUsageRepository, Events, UsageEventRecord]:
    """The customer's 70 messages, then 5 of "late" (signed up Dec 1 2026: its November usage is nobody's, so
    rating announces ``UnattributedAppUsage.v1``); both received in ``LATER``'s window."""
    directory = InMemoryAccountDirectory(
        AccountProfile("late", (TierChange(datetime(2026, 12, 1, tzinfo=UTC), "personal"),))
    )
    repo = InMemoryUsageRepository(directory)
    customer = UsageEventRecord(
        "kilo-app", "m-1", "acct", "messages", 70, LATER_ARRIVAL_MS, "h1", LATER_ARRIVAL_MS - 2_000
    )
    early = UsageEventRecord("kilo-app", "m-2", "late", "messages", 5, LATER_ARRIVAL_MS, "h2", LATER_ARRIVAL_MS - 1_000)
    for record in (customer, early):
        repo.store_event(record)
    return repo, Events(customer, early), early


_KEEP = (
    "the message stays on the queue (not deleted) and each run skips it the same way - do not delete it (that usage "
    "would never be rated): report it, and keep it past the queue's 14-day retention (README's runbook)"
)


def test_given_a_window_of_two_chunks_whose_second_announcement_is_refused_then_the_first_is_rated_and_the_row_says_so(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """Review (cx2) 2: the row said "none of the batch's other records are rated either", but a window is rated in
    chunks of ``EVENTS_PER_CALL`` (500) events, each committed: the chunks before the refused one are rated. One event
    a chunk here (stands for a window of more than 500): the customer's 70 messages (chunk 1) are rated, "late"'s 5
    (chunk 2, its announcement refused) are not; the message stays."""
    monkeypatch.setattr(replay_module, "EVENTS_PER_CALL", 1)
    repo, events, _ = _customer_and_early()
    queue = Queue(LATER)

    [row] = replay(queue, ExpiredStream(), events, repo, RefusingUnattributed(), InMemoryPoisonSink(), CONFIG,
                   LATER_ARRIVAL_MS + 86_400_000, apply=True, refused=str)  # fmt: skip

    assert row.plan.problem == (
        "not replayed: EventBridge refused its event itself (MalformedDetail: Detail is malformed.), and refuses it on "
        "every run: the records of its chunk (up to 500 events: the whole batch when no larger) and of the chunks "
        "after it are not rated, other accounts' usage included (its chunk's are when the refused event is a "
        "threshold event: it goes after the writes); the chunks before it are rated; " + _KEEP
    )
    assert repo.totals("acct", "2026-11") == {"messages": 70}  # chunk 1: 70 messages, rated
    assert repo.unrated_usage(events.events) == [events.events[1]]  # chunk 2: "late"'s 5, not rated
    assert (row.deleted, list(queue.messages)) == (False, ["r0"])


def test_given_a_poison_message_whose_announcement_is_refused_then_its_row_speaks_of_its_one_event() -> None:
    """Review (cx2) 4: a poison message names one event, but its row spoke of "the batch's other records"."""
    repo, events, early = _customer_and_early()
    body = json.dumps({"reason": "DynamoDB refused the usage write: too large", "keys": key_item(*early.key)})
    queue = Queue(body)

    [row] = replay(queue, ExpiredStream(), events, repo, RefusingUnattributed(), InMemoryPoisonSink(), CONFIG,
                   LATER_ARRIVAL_MS + 86_400_000, apply=True, refused=str)  # fmt: skip

    assert (row.plan.source, row.plan.event) == ("poison queue", "usage#kilo-app#m-2 / usage")
    assert row.plan.problem == (
        "not replayed: EventBridge refused its event itself (MalformedDetail: Detail is malformed.), and refuses it on "
        "every run: this event is not rated (a room's: none of the room's sessions) when the refused event goes "
        "before the writes (UnattributedUsage.v1, UnattributedAppUsage.v1); " + _KEEP
    )
    assert repo.unrated_usage([early]) == [early]
    assert list(queue.messages) == ["r0"]


def _runbook_block() -> str:
    readme = (Path(__file__).parents[2] / "README.md").read_text()
    start = readme.index("replace it by a copy of its body")
    return readme[start : readme.index("```\n", readme.index("```bash", start) + 7)]


def _runbook_query(block: str) -> str:
    """The ``--query`` argument of the runbook's ``receive-message`` as bash passes it (its quotes and escapes
    undone, its continuation lines joined)."""
    command = block[block.index("MSG=$(") + len("MSG=$(") : block.index(")\n", block.index("MSG=$("))]
    words = shlex.split(command.replace("\\\n", " "))
    return words[words.index("--query") + 1]


def _batch(first: str, end: str, compact: bool) -> str:
    """AWS's example record naming the batch ``first``..``end``, compact (``"key":"value"``) or spaced."""
    info = json.loads(LATER)
    info["DDBStreamBatchInfo"] |= {"startSequenceNumber": first, "endSequenceNumber": end}
    return json.dumps(info, separators=(",", ":") if compact else None)


@pytest.mark.parametrize("compact", [True, False])
def test_the_runbooks_query_picks_the_batch_by_its_whole_first_sequence_number_as_requeue_does(compact: bool) -> None:
    """README's manual fallback picked the message by ``contains(Body, '<start>')``: a row's first sequence number
    12 also picked the batch 123-130 (and the one ending at 12). Now the query names ``startSequenceNumber`` and the
    whole quoted number, as ``--requeue`` compares it (``_selectors``): of the batches 123-130, 1-12 and 12-20 on the
    queue, in that order, 12 picks 12-20 - in AWS's body compact or spaced."""
    from kilo_billing_cli.replay import _selectors  # noqa: PLC0415

    bodies = {"h-123": _batch("123", "130", compact), "h-1": _batch("1", "12", compact),
              "h-12": _batch("12", "20", compact)}  # fmt: skip
    received = {"Messages": [{"ReceiptHandle": handle, "Body": body} for handle, body in bodies.items()]}

    picked = jmespath.search(_runbook_query(_runbook_block()).replace("<start>", "12"), received)

    assert picked == ["h-12", bodies["h-12"]]
    assert [handle for handle, body in bodies.items() if "12" in _selectors(body)] == ["h-12"]  # the CLI's choice


def test_the_poison_runbooks_query_picks_the_event_by_its_whole_keys() -> None:
    """The poison queue's fallback picked by ``contains(Body, '<pk>')``: ROOM#RM_a also picked ROOM#RM_ab's event.
    Its query now names the pk and the sk whole, as the rating function writes them (``json.dumps`` of
    ``{"reason", "keys"}``): of ROOM#RM_ab / EV#1, ROOM#RM_a / EV#10 and ROOM#RM_a / EV#1, it picks the last."""
    readme = (Path(__file__).parents[2] / "README.md").read_text()
    text = readme[readme.index("the runbook's `--query` being") + len("the runbook's `--query` being") :]
    quoted = text[text.index("`") + 1 : text.index("`", text.index("`") + 1)]
    [query] = shlex.split(quoted)
    keys = [("ROOM#RM_ab", "EV#1"), ("ROOM#RM_a", "EV#10"), ("ROOM#RM_a", "EV#1")]
    bodies = [json.dumps({"reason": "r", "keys": {"pk": {"S": pk}, "sk": {"S": sk}}}) for pk, sk in keys]
    received = {"Messages": [{"ReceiptHandle": f"h{i}", "Body": body} for i, body in enumerate(bodies)]}

    picked = jmespath.search(query.replace("<pk>", "ROOM#RM_a").replace("<sk>", "EV#1"), received)

    assert picked == ["h2", bodies[2]]


def test_given_the_runbooks_copy_of_a_refused_batchs_message_then_the_copy_is_the_body_as_sent_and_replays() -> None:
    """Review (cx2) 1: the runbook's copy (`--message-body '<its Body>'` from receive-message's default JSON output)
    kept the JSON escapes: the copy was "not JSON" and never rated. The runbook's commands now: its JMESPath picks the
    message by the row's start sequence among those received (run here with jmespath, as the AWS CLI does), its
    `--output text` prints the handle and body tab-separated (a list of scalars: one line, raw strings), its `read`
    line (run in bash) splits them - the body is exactly as sent, and a replay of it rates the batch (the customer's
    70 messages) and deletes it."""
    block = _runbook_block()
    read = next(line.strip() for line in block.splitlines() if "read -r HANDLE BODY" in line)
    other = LATER.replace("800000000003126276362", "800000000003126279999")  # another batch on the queue
    received = {"Messages": [{"ReceiptHandle": "h-other", "Body": other}, {"ReceiptHandle": "h-ref", "Body": LATER}]}
    picked = jmespath.search(_runbook_query(block).replace("<start>", "800000000003126276362"), received)
    printed = "\t".join(picked)  # the AWS CLI's text output of one row of scalars; `$(...)` drops its newline
    script = f'{read}\nprintf "%s|%s" "$HANDLE" "$BODY"'
    shell = subprocess.run(["bash", "-c", script], env={"MSG": printed}, capture_output=True, text=True, check=True)
    handle, body = shell.stdout.split("|", 1)
    assert (handle, body) == ("h-ref", LATER)
    repo, events, _ = _customer_and_early()
    queue = Queue(body)

    [row] = replay(queue, ExpiredStream(), events, repo, RecordingPublisher(), InMemoryPoisonSink(), CONFIG,
                   LATER_ARRIVAL_MS + 86_400_000, apply=True)  # fmt: skip

    assert (row.plan.problem, row.outcome.usage_rated if row.outcome else None, row.deleted) == ("", 2, True)
    assert repo.totals("acct", "2026-11") == {"messages": 70}


class PagedSqs:
    """An SQS client answering each receive with the next page (a short poll may answer fewer, or none, while messages
    remain); records the waits asked, the sends and the deletes."""

    def __init__(self, pages: list[list[tuple[str, str]]]) -> None:
        self.pages = pages
        self.waits: list[int] = []
        self.sent: list[str] = []
        self.deleted: list[str] = []

    def receive_message(self, **kw: Any) -> dict[str, Any]:
        self.waits.append(kw["WaitTimeSeconds"])
        page = self.pages.pop(0) if self.pages else []
        return {"Messages": [{"MessageId": m, "ReceiptHandle": f"rh-{m}", "Body": b} for m, b in page]}

    def send_message(self, **kw: Any) -> dict[str, Any]:
        self.sent.append(kw["MessageBody"])
        return {"MessageId": "copy"}

    def delete_message(self, **kw: Any) -> None:
        self.deleted.append(kw["ReceiptHandle"])


def _batch_body(first: str) -> str:
    return json.dumps(
        {
            "DDBStreamBatchInfo": {
                "shardId": "s1",
                "startSequenceNumber": first,
                "endSequenceNumber": str(int(first) + 5),
                "batchSize": 2,
                "streamArn": "arn:x",
            }
        }
    )


def test_given_an_empty_receive_between_two_copies_then_requeue_still_sees_both_and_refuses(
    monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    """D362 amended (rq2): an empty receive does not prove the queue empty (short polling samples some servers): two
    copies answered as [m1], [], [m2] - the requeue long-polls and stops only after two empty receives in a row, so it
    sees 1 + 0 + 1 = 2 matching messages: refused (exit 2), nothing sent or deleted."""
    from kilo_billing import aws  # noqa: PLC0415
    from kilo_billing_cli.main import main  # noqa: PLC0415

    fake = PagedSqs([[("m1", _batch_body("12"))], [], [("m2", _batch_body("12"))]])
    monkeypatch.setattr(aws, "client", lambda service, *a, **k: fake)

    with pytest.raises(SystemExit) as exited:
        main(["rating", "replay", "--queue-url", "q", "--requeue", "12"])

    assert exited.value.code == 2
    assert "2 messages match" in capsys.readouterr().err
    assert (fake.sent, fake.deleted) == ([], [])
    # receives: [m1], [], [m2], [], [] - five, each a long poll (WaitTimeSeconds 1 or more)
    assert len(fake.waits) == 5
    assert min(fake.waits) >= 1


def test_given_two_different_poison_events_of_one_room_then_requeue_by_the_pk_is_refused_without_calling_them_copies(
    monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    """Two DIFFERENT poison events of one room (pk ROOM#RM_a, sk EV#1 and EV#2) both match the pk alone: refused, and
    the line asks to name one by 'pk / sk' - not 'copies ... delete one by hand' (deleting one would lose an event)."""
    from kilo_billing import aws  # noqa: PLC0415
    from kilo_billing_cli.main import main  # noqa: PLC0415

    poison = [
        json.dumps({"reason": "r", "keys": {"pk": {"S": "ROOM#RM_a"}, "sk": {"S": sk}}}) for sk in ("EV#1", "EV#2")
    ]
    fake = PagedSqs([[("p1", poison[0]), ("p2", poison[1])]])
    monkeypatch.setattr(aws, "client", lambda service, *a, **k: fake)

    with pytest.raises(SystemExit) as exited:
        main(["rating", "replay", "--queue-url", "q", "--requeue", "ROOM#RM_a"])

    err = capsys.readouterr().err
    assert exited.value.code == 2
    assert "2 different messages" in err
    assert "'pk / sk'" in err
    assert "copies" not in err
    assert "delete one by hand" not in err
    assert (fake.sent, fake.deleted) == ([], [])


def test_given_requeue_with_json_then_it_is_refused_before_any_receive(
    monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    """D362 amended (rq2): --requeue prints one plain line; with --json it is a usage error (exit 2), nothing received."""
    from kilo_billing import aws  # noqa: PLC0415
    from kilo_billing_cli.main import main  # noqa: PLC0415

    fake = PagedSqs([[("m1", _batch_body("12"))]])
    monkeypatch.setattr(aws, "client", lambda service, *a, **k: fake)

    with pytest.raises(SystemExit) as exited:
        main(["rating", "replay", "--queue-url", "q", "--requeue", "12", "--json"])

    assert exited.value.code == 2
    assert "not with --json" in capsys.readouterr().err
    assert (fake.waits, fake.sent, fake.deleted) == ([], [], [])


class RefusingSqs(PagedSqs):
    """``PagedSqs`` whose send fails with the AWS error code given."""

    def __init__(self, pages: list[list[tuple[str, str]]], code: str) -> None:
        super().__init__(pages)
        self.code = code

    def send_message(self, **kw: Any) -> dict[str, Any]:
        from botocore.exceptions import ClientError  # noqa: PLC0415

        raise ClientError({"Error": {"Code": self.code, "Message": "no"}}, "SendMessage")


QUEUE = "https://sqs.us-east-1.amazonaws.com/123456789012/kilo-billing-rating-dlq-prod"
_KEPT = "nothing was deleted: the original stays on the queue, hidden 5 minutes by this run's receive"
_COUNT = (
    f"aws sqs get-queue-attributes --queue-url {QUEUE} --attribute-names ApproximateNumberOfMessages "
    "ApproximateNumberOfMessagesNotVisible"
)


@pytest.mark.parametrize(
    ("code", "status", "line"),
    [
        ("ServiceUnavailable", 4,
         "kilo-billing: --requeue '12': the copy was not sent: the send failed (ServiceUnavailable), and SQS may still "
         f"have taken the copy (an answer lost); {_KEPT}. Do not rerun now: wait 5 minutes, then count the queue's "
         f"messages ({_COUNT}) - one more than before this --requeue means the copy is there (delete one of the two by "
         "hand, README), as many means rerun\n"),
        ("AccessDenied", 2,
         "kilo-billing: --requeue '12': the copy was not sent: access denied (AccessDenied), so SQS took no copy; "
         f"{_KEPT}. Give the credentials sqs:SendMessage on {QUEUE}, then rerun after 5 minutes\n"),
        ("InvalidParameterValue", 4,
         "kilo-billing: --requeue '12': the copy was not sent: SQS refused the request (InvalidParameterValue), so it "
         f"took no copy; {_KEPT}. A rerun sends the same body and is refused again: report it, with this line\n"),
    ],
)  # fmt: skip
def test_given_the_copys_send_failing_then_requeue_prints_one_line_saying_what_failed_and_what_to_do(
    monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str], code: str, status: int, line: str
) -> None:
    """D362 amended (sm): a failed send printed requeue's wait-and-count line and then main's generic one ("storage
    unavailable: ServiceUnavailable; rerun" - the opposite advice - or, access denied, "access denied to a table or
    event bus this command uses"). Now one line per failure, nothing deleted: a send that failed may have been taken
    (exit 4, count before rerunning); access denied took no copy (exit 2, fix the permission and rerun after the
    5 minutes the original is hidden); the request refused took none either (exit 4, a rerun is refused again)."""
    from kilo_billing import aws  # noqa: PLC0415
    from kilo_billing_cli.main import main  # noqa: PLC0415

    fake = RefusingSqs([[("m1", _batch_body("12")), ("m2", _batch_body("123"))]], code)
    monkeypatch.setattr(aws, "client", lambda service, *a, **k: fake)

    with pytest.raises(SystemExit) as exited:
        main(["rating", "replay", "--queue-url", QUEUE, "--requeue", "12"])

    assert exited.value.code == status
    assert capsys.readouterr().err == line
    assert fake.deleted == []


class UnreadableSqs(PagedSqs):
    """``PagedSqs`` whose receive fails with the AWS error code given."""

    def __init__(self, code: str) -> None:
        super().__init__([])
        self.code = code

    def receive_message(self, **kw: Any) -> dict[str, Any]:
        from botocore.exceptions import ClientError  # noqa: PLC0415

        raise ClientError({"Error": {"Code": self.code, "Message": "no"}}, "ReceiveMessage")


_READ = "kilo-billing: --requeue '12': the queue could not be read"


@pytest.mark.parametrize(
    ("code", "status", "line"),
    [
        ("AccessDenied", 2,
         f"{_READ}: access denied (AccessDenied); nothing was sent or deleted. Give the credentials sqs:ReceiveMessage "
         f"on {QUEUE}, then rerun\n"),
        ("AWS.SimpleQueueService.NonExistentQueue", 2,
         f"{_READ}: no such queue (AWS.SimpleQueueService.NonExistentQueue); nothing was sent or deleted. Fix "
         f"--queue-url ({QUEUE}), then rerun\n"),
        ("ValidationException", 4,
         f"{_READ}: SQS refused the receive (ValidationException); nothing was sent or deleted. A rerun asks the same "
         "and is refused again: report it, with this line\n"),
        ("ServiceUnavailable", 4,
         f"{_READ}: the receive failed (ServiceUnavailable); nothing was sent or deleted. Rerun after 5 minutes (a "
         "message received before the failure is hidden that long)\n"),
    ],
)  # fmt: skip
def test_given_the_receive_failing_then_requeue_prints_one_line_about_the_queue(
    monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str], code: str, status: int, line: str
) -> None:
    """D362 amended (sm): a failed receive printed main's generic line - access denied "to a table or event bus this
    command uses" (naming --events-table and --usage-table, which --requeue never reads), or "storage unavailable",
    or a traceback (a request refused). Now one line about the queue, nothing sent or deleted."""
    from kilo_billing import aws  # noqa: PLC0415
    from kilo_billing_cli.main import main  # noqa: PLC0415

    fake = UnreadableSqs(code)
    monkeypatch.setattr(aws, "client", lambda service, *a, **k: fake)

    with pytest.raises(SystemExit) as exited:
        main(["rating", "replay", "--queue-url", QUEUE, "--requeue", "12"])

    assert exited.value.code == status
    assert capsys.readouterr().err == line
    assert (fake.sent, fake.deleted) == ([], [])


class UndeletingSqs(PagedSqs):
    """``PagedSqs`` whose delete fails with the AWS error code given (the copy's send succeeds)."""

    def __init__(self, pages: list[list[tuple[str, str]]], code: str) -> None:
        super().__init__(pages)
        self.code = code

    def delete_message(self, **kw: Any) -> None:
        from botocore.exceptions import ClientError  # noqa: PLC0415

        raise ClientError({"Error": {"Code": self.code, "Message": "no"}}, "DeleteMessage")


_NOT_DELETED = "kilo-billing: --requeue '12': copy sent (MessageId copy), the original was NOT deleted"


@pytest.mark.parametrize(
    ("code", "status", "line"),
    [
        ("AccessDenied", 2,
         f"{_NOT_DELETED}: access denied (AccessDenied): two copies are on the queue (a replay rates their usage "
         "once). Do not rerun: it would copy a copy and fail its delete again. Give the credentials sqs:DeleteMessage "
         f"on {QUEUE}, then delete one of the two copies by hand (README)\n"),
        ("ServiceUnavailable", 4,
         f"{_NOT_DELETED} (ServiceUnavailable): two copies are on the queue (a replay rates their usage once). Do not "
         "rerun now: the original is hidden 5 minutes, a rerun would copy the copy and leave two; wait 5 minutes, then "
         f"count the queue's messages ({_COUNT}) and delete one of the two by hand (README)\n"),
    ],
)  # fmt: skip
def test_given_the_originals_delete_failing_then_requeue_says_two_copies_and_what_to_fix_first(
    monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str], code: str, status: int, line: str
) -> None:
    """D362 amended (sm): the delete refused for access told the operator to delete one copy by hand - which the same
    credentials are refused too. Now: fix sqs:DeleteMessage, then delete one copy (no waiting and counting: the
    delete surely failed). Any other failure keeps its line (it may have deleted: wait, count). Access denied exits 2
    as D362's every other (D362 amended (sw); was 4), any other failure 4."""
    from kilo_billing import aws  # noqa: PLC0415
    from kilo_billing_cli.main import main  # noqa: PLC0415

    fake = UndeletingSqs([[("m1", _batch_body("12")), ("m2", _batch_body("123"))]], code)
    monkeypatch.setattr(aws, "client", lambda service, *a, **k: fake)

    with pytest.raises(SystemExit) as exited:
        main(["rating", "replay", "--queue-url", QUEUE, "--requeue", "12"])

    assert exited.value.code == status
    assert capsys.readouterr().err == line
    assert fake.sent == [_batch_body("12")]
