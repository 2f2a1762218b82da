"""Rating on moto with real DynamoDB streams: webhooks signed with LiveKit's SDK go through the ingest handler, the
events table's stream is read as Lambda reads it (filter criteria and batch size from template.yaml), and the rating
handler rates each batch. Redelivery, a crash half-way and a poison record change nothing they should not."""

from __future__ import annotations

import json
import threading
import time
from collections.abc import Callable, Iterator
from datetime import UTC, datetime
from typing import Any

import pytest
import time_machine

from kilo_dev import livekit_events as lk
from kilo_dev.apigw import http_api_event
from kilo_dev.patterns import matches
from kilo_dev.signing import livekit_authorization
from kilo_dev.streams import StreamReader
from kilo_webhook_ingest import livekit_handler
from tests.conftest import LIVEKIT_KEYS, YEARS_AHEAD, LambdaContext, Stack, accounts_registered, count_calls

T0 = 1_794_787_200  # 2026-11-16T00:00:00Z
PERIOD = "2026-11"
# The module's clock: after every instant its data names (calls from T0, the app's reports up to 2026-11-28T10:00)
# and within the 35 days ingest accepts usage for of the earliest (2026-11-16T00:30). On the real clock its usage
# tests would fail from 2026-12-21 (D450); the guard: every test here runs under a wall clock years ahead, ``NOW`` inside.
NOW = datetime(2026, 11, 28, 12, 0, tzinfo=UTC)
pytestmark = pytest.mark.wall_clock(YEARS_AHEAD)
ACCOUNT = "acct_team_1"
registered_accounts = accounts_registered(ACCOUNT, "acct_other")  # the accounts its rooms name (D276)


@pytest.fixture(autouse=True)
def clock() -> Iterator[None]:
    """Every test runs from ``NOW``, ticking on (moto's queues, visibility timeouts and the rating handler read the
    clock as they would on the real one)."""
    with time_machine.travel(NOW, tick=True):
        yield


def deliver_webhook(body: bytes, context: LambdaContext) -> None:
    authorization = livekit_authorization(body, "APIkeyCurrent", LIVEKIT_KEYS["APIkeyCurrent"])
    event = http_api_event("POST", "/webhooks/livekit", body, {"authorization": authorization})
    response = livekit_handler.lambda_handler(event, context)
    assert response["statusCode"] == 200, response["body"]


class Lambda:
    """Reads the stream like the event source mapping: the template's filter, batch size, then the handler."""

    def __init__(self, stack: Stack) -> None:
        spec = stack.template.resources["RateUsageFunction"]["Properties"]["Events"]["EventsStream"]["Properties"]
        self.filters = [json.loads(f["Pattern"]) for f in spec["FilterCriteria"]["Filters"]]
        self.batch_size = spec["BatchSize"]
        self.reader = StreamReader(stack.clients["dynamodbstreams"], stack.template.get_att("EventsTable", "StreamArn"))
        self.delivered: list[list[dict[str, Any]]] = []

    def poll(self) -> list[dict[str, Any]]:
        return [r for r in self.reader.poll() if any(matches(f, r) for f in self.filters)]

    def run(self, records: list[dict[str, Any]], context: LambdaContext) -> None:
        from kilo_rate_usage.handler import lambda_handler  # noqa: PLC0415

        for start in range(0, len(records), self.batch_size):
            batch = records[start : start + self.batch_size]
            self.delivered.append(batch)
            assert lambda_handler({"Records": batch}, context) == {"batchItemFailures": []}


def described(records: list[dict[str, Any]]) -> str:
    """What a poll read, for a failure's message (a clean-clone CI once read 1,000 records where 2 were written: two
    records numbered alike, D448)."""
    sequences = {r["dynamodb"]["SequenceNumber"] for r in records}
    keys = sorted(
        {(r["eventName"], r["dynamodb"]["Keys"]["pk"]["S"], r["dynamodb"]["Keys"]["sk"]["S"]) for r in records}
    )
    return f"{len(records)} records, {len(sequences)} distinct sequence numbers, keys {keys[:5]} (of {len(keys)})"


def rating_bus_probe(stack: Stack) -> str:
    """A queue (its URL) receiving everything rating publishes on the billing bus."""
    events, sqs = stack.clients["events"], stack.clients["sqs"]
    bus = stack.template.physical_name("BillingEventBus")
    queue = sqs.create_queue(QueueName="rating-probe")["QueueUrl"]
    arn = sqs.get_queue_attributes(QueueUrl=queue, AttributeNames=["QueueArn"])["Attributes"]["QueueArn"]
    events.put_rule(Name="probe", EventBusName=bus, EventPattern=json.dumps({"source": ["kilo.billing.rating"]}))
    events.put_targets(Rule="probe", EventBusName=bus, Targets=[{"Id": "q", "Arn": arn}])
    return str(queue)


def usage_state(stack: Stack) -> list[dict[str, Any]]:
    return sorted(stack.table_items("UsageTable"), key=lambda item: (item["pk"]["S"], item["sk"]["S"]))


def aggregate(stack: Stack, account: str = ACCOUNT, period: str = PERIOD) -> dict[str, int]:
    for item in stack.table_items("UsageTable"):
        if item["pk"]["S"] == f"ACCOUNT#{account}" and item["sk"]["S"] == f"PERIOD#{period}":
            totals: dict[str, int] = {}
            for name, value in item.items():
                if name.startswith("c#"):
                    meter = name.split("#", 2)[2]
                    totals[meter] = totals.get(meter, 0) + int(value["N"])
            return totals
    return {}


def video_call(context: LambdaContext) -> None:
    """Alice 0-30:00 with camera from 10:00 to 20:00; Bob 5:00-15:30 (left lost: closed by room_finished at 40:00)."""
    room = lk.Room("RM_stream01", "standup", account_id=ACCOUNT, created_at=T0)
    alice = lk.Participant("PA_alice01", "alice", T0 * 1000)
    bob = lk.Participant("PA_bob0001", "bob", (T0 + 300) * 1000)
    for body in (
        lk.room_started(room, T0),
        lk.participant_joined(room, alice),
        lk.track_published(room, alice, "TR_mic_a", T0 + 1, video=False),
        lk.participant_joined(room, bob),
        lk.track_published(room, alice, "TR_cam_a", T0 + 600, video=True),
        lk.track_unpublished(room, alice, "TR_cam_a", T0 + 1200, video=True),
        lk.participant_left(room, alice, T0 + 1800),
        lk.room_finished(room, T0 + 2400),
    ):
        deliver_webhook(body, context)


# alice: 1800 s -> 30 min; video 600 s -> 10 min video, 20 audio
# bob: 300..2400 = 2100 s -> 35 min; video overlap 600..1200 = 600 s -> 10 video, 25 audio
EXPECTED = {"video": 20, "audio": 45}


def test_given_a_video_call_through_ingest_and_the_stream_then_minutes_are_rated_per_policy(
    stack: Stack, lambda_context: LambdaContext
) -> None:
    video_call(lambda_context)
    runner = Lambda(stack)
    records = runner.poll()
    assert len(records) == 8
    runner.run(records, lambda_context)
    assert aggregate(stack) == EXPECTED
    sessions = {
        item["sk"]["S"]: item for item in stack.table_items("UsageTable") if item["sk"]["S"].startswith("SESSION#")
    }
    assert sessions["SESSION#PA_alice01"]["closed_by"] == {"S": "left"}
    assert sessions["SESSION#PA_bob0001"]["closed_by"] == {"S": "room_finished"}
    assert "open_account" not in sessions["SESSION#PA_bob0001"]


def test_given_the_same_batch_redelivered_then_nothing_changes_and_nothing_is_written(
    stack: Stack, lambda_context: LambdaContext
) -> None:
    video_call(lambda_context)
    runner = Lambda(stack)
    records = runner.poll()
    runner.run(records, lambda_context)
    before = usage_state(stack)
    from kilo_rate_usage import dependencies  # noqa: PLC0415

    counter = count_calls(dependencies.rating().repo._client)
    runner.run(records, lambda_context)
    runner.run(list(reversed(records)), lambda_context)  # and out of order
    assert usage_state(stack) == before
    assert [call for call in counter.calls if call in {"TransactWriteItems", "PutItem", "UpdateItem"}] == []


def test_given_events_one_per_batch_out_of_order_then_the_same_result(
    stack: Stack, lambda_context: LambdaContext
) -> None:
    video_call(lambda_context)
    runner = Lambda(stack)
    records = runner.poll()
    order = [7, 3, 0, 5, 1, 6, 2, 4]
    for index in order:
        runner.run([records[index]], lambda_context)
    assert aggregate(stack) == EXPECTED


def _fail_second_transaction(client: Any) -> Callable[..., None]:
    calls = {"n": 0}

    def hook(model: Any, **_: Any) -> None:
        if model.name == "TransactWriteItems":
            calls["n"] += 1
            if calls["n"] == 2:
                raise RuntimeError("Lambda crashed half-way through the batch")

    client.meta.events.register("before-call.dynamodb.TransactWriteItems", hook)
    return hook


def test_given_a_crash_after_a_partial_write_then_the_retry_completes_exactly_once(
    stack: Stack, lambda_context: LambdaContext
) -> None:
    from kilo_rate_usage import dependencies  # noqa: PLC0415
    from kilo_rate_usage.handler import lambda_handler  # noqa: PLC0415

    video_call(lambda_context)
    # a busy room: 110 sessions in one batch need two transactions (at most 100 items each)
    room = lk.Room("RM_stream02", "all-hands", account_id="acct_other", created_at=T0)
    for index in range(110):
        person = lk.Participant(f"PA_p{index:06d}", f"p{index}", (T0 + index) * 1000)
        deliver_webhook(lk.participant_joined(room, person), lambda_context)
        deliver_webhook(lk.participant_left(room, person, T0 + index + 61), lambda_context)
    records = Lambda(stack).poll()
    client = dependencies.rating().repo._client
    hook = _fail_second_transaction(client)
    with pytest.raises(RuntimeError, match="half-way"):
        lambda_handler({"Records": records}, lambda_context)
    partial = usage_state(stack)
    assert partial  # the first transaction landed
    client.meta.events.unregister("before-call.dynamodb.TransactWriteItems", hook)
    lambda_handler({"Records": records}, lambda_context)  # Lambda retries the whole batch
    lambda_handler({"Records": records}, lambda_context)  # and once more, for good measure
    assert aggregate(stack) == EXPECTED
    assert aggregate(stack, "acct_other") == {"audio": 220}  # 110 x 61 s -> 110 x 2 minutes


def _with_room_metadata(body: bytes, metadata: str) -> bytes:
    event = json.loads(body)
    event["room"]["metadata"] = metadata  # UpdateRoomMetadata replaces the whole string
    return json.dumps(event, separators=(",", ":")).encode()


def test_given_the_room_metadata_replaced_after_a_session_closed_then_its_minutes_stay_with_its_account(
    stack: Stack, lambda_context: LambdaContext
) -> None:
    room = lk.Room("RM_meta01", "allhands", account_id=ACCOUNT, created_at=T0)
    alice = lk.Participant("PA_alice_m1", "alice", T0 * 1000)
    bob = lk.Participant("PA_bob_m1", "bob", (T0 + 5400) * 1000)
    runner = Lambda(stack)
    for body in (
        lk.room_started(room, T0),
        lk.participant_joined(room, alice),
        lk.participant_left(room, alice, T0 + 3600),
    ):
        deliver_webhook(body, lambda_context)
    runner.run(runner.poll(), lambda_context)
    assert aggregate(stack) == {"audio": 60}  # alice: 3600 s -> 60 audio

    # 30 min later the app sets the room's topic, without the account: bob's join is the first event carrying it
    topic = '{"topic":"Q4"}'
    deliver_webhook(_with_room_metadata(lk.participant_joined(room, bob), topic), lambda_context)
    runner.run(runner.poll(), lambda_context)
    deliver_webhook(_with_room_metadata(lk.participant_left(room, bob, T0 + 6000), topic), lambda_context)
    runner.run(runner.poll(), lambda_context)

    # alice's 60 stay; bob: T0 + 5400 .. T0 + 6000 = 600 s -> 10 audio, to the room's account found before
    assert aggregate(stack) == {"audio": 70}
    assert aggregate(stack, "unattributed") == {}
    accounts = {
        item["sk"]["S"]: item["account"]["S"]
        for item in stack.table_items("UsageTable")
        if item["sk"]["S"].startswith("SESSION#")
    }
    assert accounts == {"SESSION#PA_alice_m1": ACCOUNT, "SESSION#PA_bob_m1": ACCOUNT}


def test_given_a_poison_record_then_it_goes_to_the_poison_queue_and_the_rest_is_rated(
    stack: Stack, lambda_context: LambdaContext
) -> None:
    video_call(lambda_context)
    stack.clients["dynamodb"].put_item(
        TableName=stack.template.physical_name("EventsTable"),
        Item={"pk": {"S": "room#RM_broken"}, "sk": {"S": "ev#EV_broken"}, "source": {"S": "livekit"},
              "schema_version": {"N": "1"}},  # no event id, no type: cannot be rated
    )  # fmt: skip
    runner = Lambda(stack)
    records = runner.poll()
    assert len(records) == 9
    runner.run(records, lambda_context)
    assert aggregate(stack) == EXPECTED
    queue = stack.template.ref("PoisonRecordDeadLetterQueue")
    messages = stack.clients["sqs"].receive_message(QueueUrl=queue, MaxNumberOfMessages=10)["Messages"]
    assert len(messages) == 1
    poisoned = json.loads(messages[0]["Body"])
    assert "event_id" in poisoned["reason"]
    assert poisoned["keys"]["sk"] == {"S": "ev#EV_broken"}


# no event id, no type (cannot be decoded), in the partition of the very room being rated
BROKEN_IN_ROOM = {"pk": {"S": "room#RM_stream01"}, "sk": {"S": "ev#EV_broken"}, "source": {"S": "livekit"},
                  "schema_version": {"N": "1"}}  # fmt: skip


def test_given_an_undecodable_item_in_the_rooms_partition_then_the_room_goes_to_the_poison_queue_unrated(
    stack: Stack, lambda_context: LambdaContext, capsys: pytest.CaptureFixture[str]
) -> None:
    """A rebuild from part of a room's events would un-bill what the others rated (a reader rolled back, D15): the
    room is refused whole - nothing of it written, its records on the poison queue naming the item - and counted."""
    stack.clients["dynamodb"].put_item(TableName=stack.template.physical_name("EventsTable"), Item=BROKEN_IN_ROOM)
    video_call(lambda_context)
    runner = Lambda(stack)
    records = runner.poll()
    capsys.readouterr()
    runner.run(records, lambda_context)  # the room's rebuild reads the broken item: the room is refused, not retried
    assert aggregate(stack) == {}
    undecodable = 0
    for line in capsys.readouterr().out.splitlines():
        if line.startswith("{") and '"_aws"' in line:
            undecodable += int(sum(json.loads(line).get("StoredEventsUndecodable", [])))
    assert undecodable >= 1
    queue = stack.template.ref("PoisonRecordDeadLetterQueue")
    bodies = []
    while messages := stack.clients["sqs"].receive_message(QueueUrl=queue, MaxNumberOfMessages=10).get("Messages"):
        bodies += [json.loads(m["Body"]) for m in messages]
        for m in messages:
            stack.clients["sqs"].delete_message(QueueUrl=queue, ReceiptHandle=m["ReceiptHandle"])
    keys = sorted(body["keys"]["sk"]["S"] for body in bodies)
    assert len(keys) == len(records)  # every record of the batch: the broken item's own and the room's events
    assert "ev#EV_broken" in keys
    room_reasons = {body["reason"] for body in bodies if body["keys"]["sk"]["S"] != "ev#EV_broken"}
    assert len(room_reasons) == 1
    assert "not rated" in room_reasons.pop()


def test_given_a_batch_then_writes_stay_within_the_stated_formula(stack: Stack, lambda_context: LambdaContext) -> None:
    from kilo_rate_usage import dependencies  # noqa: PLC0415

    video_call(lambda_context)
    records = Lambda(stack).poll()
    client = dependencies.rating().repo._client
    counter = count_calls(client)
    items_written: list[int] = []

    def count_items(params: dict[str, Any], **_: Any) -> None:
        items_written.append(len(params.get("TransactItems", [])) or 1)

    client.meta.events.register("provide-client-params.dynamodb.TransactWriteItems", count_items)
    client.meta.events.register("provide-client-params.dynamodb.UpdateItem", count_items)
    from kilo_rate_usage.handler import lambda_handler  # noqa: PLC0415

    lambda_handler({"Records": records}, lambda_context)
    # 2 sessions changed + 0 usage events + 1 aggregate (one transaction) + 1 room state + 0 thresholds = 4 items,
    # and in the transaction the check of the account's erasure mark (identities written, D80): 5 items
    assert sum(items_written) == 5
    assert counter.count("TransactWriteItems") == 1
    assert counter.count("PutItem") == 0


def _report_usage_twice_and_rate(stack: Stack, context: LambdaContext) -> None:
    from kilo_dev.signing import usage_signature  # noqa: PLC0415
    from kilo_webhook_ingest import usage_handler  # noqa: PLC0415
    from tests.conftest import USAGE_CLIENTS, register_accounts  # noqa: PLC0415

    register_accounts(stack, ACCOUNT)  # ingest accepts usage of registered accounts only
    body = json.dumps(
        {"events": [
            {"idempotency_key": "m-1", "account_id": ACCOUNT, "meter": "messages", "quantity": 1200,
             "timestamp": "2026-11-28T10:00:00Z"},
            {"idempotency_key": "b-1", "account_id": ACCOUNT, "meter": "data_transfer", "quantity": 2_500_000_000,
             "timestamp": "2026-11-28T10:00:00Z"},
        ]}
    ).encode()  # fmt: skip
    headers = {"content-type": "application/json", "x-kilo-client": "kilo-app"}
    for _ in range(2):  # the app retries after a timeout: the second is all duplicates at ingest
        headers["x-kilo-signature"] = usage_signature(body, USAGE_CLIENTS["kilo-app"][0])
        response = usage_handler.lambda_handler(http_api_event("POST", "/v1/usage", body, headers), context)
        assert response["statusCode"] == 200
    runner = Lambda(stack)
    records = runner.poll()
    assert len(records) == 2, described(records)  # the marks ("rated_at") are MODIFY records: filtered out
    runner.run(records, context)
    runner.run(records, context)  # the stream redelivers
    assert aggregate(stack) == {"messages": 1200, "data_transfer": 2_500_000_000}
    assert runner.poll() == []  # marking usage rated produced no new INSERT for rating


def test_given_app_usage_reported_twice_then_counted_once(stack: Stack, lambda_context: LambdaContext) -> None:
    _report_usage_twice_and_rate(stack, lambda_context)


def _one_write_lands_while_the_other_builds_its_record(stack: Stack, monkeypatch: pytest.MonkeyPatch) -> list[int]:
    """Serve the events table's first two stream writes as a loaded machine may: the first to build its stream record
    (moto has numbered it by then) waits until the other has landed on the stream whole. Returns the sequence
    numbers of the two records as moto first gave them."""
    from moto.dynamodb.models.table import StreamRecord, StreamShard  # noqa: PLC0415

    table_name = stack.template.physical_name("EventsTable")
    build, add = StreamRecord.__init__, StreamShard.add
    waiting: list[int] = []  # the thread of the write that waits
    numbered: list[int] = []
    landed, lock = threading.Event(), threading.Lock()

    def building(self: Any, table: Any, stream_type: str, event_name: str, old: Any, new: Any, seq: int) -> None:
        if table.name == table_name:
            with lock:
                first = not waiting
                if first:
                    waiting.append(threading.get_ident())
                numbered.append(seq)
            if first:
                assert landed.wait(60), "the other write never reached the stream"  # a guard: both run meanwhile
        build(self, table, stream_type, event_name, old, new, seq)

    def adding(self: Any, old: Any, new: Any) -> None:
        add(self, old, new)
        if self.table.name == table_name and threading.get_ident() not in waiting:
            landed.set()

    monkeypatch.setattr(StreamRecord, "__init__", building)
    monkeypatch.setattr(StreamShard, "add", adding)
    return numbered


def test_given_the_two_writes_of_a_usage_report_served_at_once_then_the_stream_gives_each_once_and_both_are_counted(
    stack: Stack, lambda_context: LambdaContext, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The usage route writes a batch's events in parallel. moto numbered a stream record before it built it, so two
    writes served at once gave their records one number, and the reader's next page started at the second of them
    again and again: a CI run under load read 1,000 records here where 2 were written (D448)."""
    numbered = _one_write_lands_while_the_other_builds_its_record(stack, monkeypatch)
    _report_usage_twice_and_rate(stack, lambda_context)
    assert numbered[0] == numbered[1]  # moto numbered both before either landed: the two were served at once


def test_given_usage_crossing_half_the_allowance_then_one_threshold_event_reaches_the_bus(
    stack: Stack, lambda_context: LambdaContext
) -> None:
    from kilo_dev.signing import usage_signature  # noqa: PLC0415
    from kilo_webhook_ingest import usage_handler  # noqa: PLC0415
    from tests.conftest import USAGE_CLIENTS, register_accounts  # noqa: PLC0415

    register_accounts(stack, "acct_free")  # ingest accepts usage of registered accounts only (personal since January)
    sqs = stack.clients["sqs"]
    queue = rating_bus_probe(stack)
    # a personal account (no profile: the free tier) sends 60,000 of its 100,000 included messages, in two reports
    for key, quantity in (("m-a", 30_000), ("m-b", 30_000)):
        body = json.dumps({"events": [{"idempotency_key": key, "account_id": "acct_free", "meter": "messages",
                                       "quantity": quantity, "timestamp": "2026-11-28T10:00:00Z"}]}).encode()  # fmt: skip
        headers = {"x-kilo-client": "kilo-app", "x-kilo-signature": usage_signature(body, USAGE_CLIENTS["kilo-app"][0])}
        assert (
            usage_handler.lambda_handler(http_api_event("POST", "/v1/usage", body, headers), lambda_context)[
                "statusCode"
            ]
            == 200
        )
    runner = Lambda(stack)
    records = runner.poll()
    runner.run(records[:1], lambda_context)  # 30 % : nothing yet
    runner.run(records, lambda_context)  # 60 %: the 50 % threshold, once; the first record is already rated
    runner.run(records, lambda_context)  # redelivered: nothing more
    messages = sqs.receive_message(QueueUrl=queue, MaxNumberOfMessages=10)["Messages"]
    assert len(messages) == 1
    envelope = json.loads(messages[0]["Body"])
    assert envelope["detail-type"] == "UsageThresholdCrossed.v1"
    assert envelope["detail"] == {
        "schema_version": 1,
        # scoped by its tier segment: Personal all November, from 2026-11-01T00:00Z = 1793491200 s
        "event_id": "threshold:acct_free:2026-11:messages@1793491200:50",
        "account_id": "acct_free",
        "period": "2026-11",
        "meter": "messages",
        "threshold_percent": 50,
        "used": "60000",
        "limit": "100000",
        "occurred_at": envelope["detail"]["occurred_at"],
        "scope": "1793491200",
    }


def test_given_dynamodb_refuses_one_rooms_writes_then_its_records_go_to_the_poison_queue_and_the_rest_is_rated(
    stack: Stack, lambda_context: LambdaContext
) -> None:
    """A TransactionCanceled caused by validation (not a conflict) can never succeed: it is not retried like a
    conflict (which would end on the on-failure queue) - the refused room's records are poison, the rest is rated."""
    from botocore.exceptions import ClientError  # noqa: PLC0415

    from kilo_rate_usage import dependencies  # noqa: PLC0415
    from kilo_rate_usage.handler import lambda_handler  # noqa: PLC0415

    video_call(lambda_context)
    huge = lk.Room("RM_huge01", "huge", account_id="acct_other", created_at=T0)
    person = lk.Participant("PA_huge01", "h", T0 * 1000)
    deliver_webhook(lk.participant_joined(huge, person), lambda_context)
    deliver_webhook(lk.participant_left(huge, person, T0 + 120), lambda_context)

    def refuse(params: dict[str, Any], **_: Any) -> None:
        items = params.get("TransactItems", [])
        if any(item.get("Put", {}).get("Item", {}).get("pk") == {"S": "ROOM#RM_huge01"} for item in items):
            reasons = [{"Code": "ValidationError", "Message": "Item size has exceeded the maximum allowed size"}]
            reasons += [{"Code": "None"}] * (len(items) - 1)
            raise ClientError(
                {"Error": {"Code": "TransactionCanceledException", "Message": "Transaction cancelled"},
                 "CancellationReasons": reasons}, "TransactWriteItems",
            )  # fmt: skip

    dependencies.rating().repo._client.meta.events.register("provide-client-params.dynamodb.TransactWriteItems", refuse)
    records = Lambda(stack).poll()
    assert len(records) == 10
    assert lambda_handler({"Records": records}, lambda_context) == {"batchItemFailures": []}  # no retry

    assert aggregate(stack) == EXPECTED  # the video call is rated
    assert aggregate(stack, "acct_other") == {}
    queue = stack.template.ref("PoisonRecordDeadLetterQueue")
    messages = stack.clients["sqs"].receive_message(QueueUrl=queue, MaxNumberOfMessages=10)["Messages"]
    poisoned = [json.loads(message["Body"]) for message in messages]
    assert sorted(p["keys"]["pk"]["S"] for p in poisoned) == ["room#RM_huge01"] * 2
    assert all("ValidationError" in p["reason"] for p in poisoned)


def _report_messages(stack: Stack, context: LambdaContext, account: str = ACCOUNT, quantity: int = 1200) -> None:
    from kilo_dev.signing import usage_signature  # noqa: PLC0415
    from kilo_webhook_ingest import usage_handler  # noqa: PLC0415
    from tests.conftest import USAGE_CLIENTS, register_accounts  # noqa: PLC0415

    register_accounts(stack, account)  # ingest accepts usage of registered accounts only

    body = json.dumps({"events": [{"idempotency_key": "m-replay", "account_id": account, "meter": "messages",
                                   "quantity": quantity, "timestamp": "2026-11-16T00:30:00Z"}]}).encode()  # fmt: skip
    headers = {"x-kilo-client": "kilo-app", "x-kilo-signature": usage_signature(body, USAGE_CLIENTS["kilo-app"][0])}
    assert (
        usage_handler.lambda_handler(http_api_event("POST", "/v1/usage", body, headers), context)["statusCode"] == 200
    )


def _fail_batch_into_the_on_failure_queue(stack: Stack) -> str:
    """The real stream path (kilo_dev's event source mapping, the template's filter and batch size) with rating
    failing transiently on every try: Lambda gives up and the batch's coordinates land on the on-failure queue."""
    from kilo_dev.localstack import Function, StreamSource  # noqa: PLC0415
    from kilo_rate_usage import dependencies  # noqa: PLC0415
    from kilo_rate_usage.handler import lambda_handler  # noqa: PLC0415

    spec = stack.template.resources["RateUsageFunction"]["Properties"]["Events"]["EventsStream"]["Properties"]
    arn = stack.template.get_att("EventsTable", "StreamArn")
    dlq = stack.template.ref("RatingDeadLetterQueue")
    source = StreamSource(
        Function("RateUsageFunction", lambda_handler),
        StreamReader(stack.clients["dynamodbstreams"], arn),
        arn,
        [json.loads(f["Pattern"]) for f in spec["FilterCriteria"]["Filters"]],
        spec["BatchSize"],
        1,
        False,
        dlq,
        stack.clients["sqs"],
    )  # fmt: skip  (one retry, no bisect: the giving up is what matters here, not its pace)

    def outage(**_: Any) -> None:
        raise RuntimeError("DynamoDB unavailable (injected)")

    client = dependencies.rating().repo._client
    client.meta.events.register("before-call.dynamodb.TransactWriteItems", outage)
    source.poll_once(flush=True)
    client.meta.events.unregister("before-call.dynamodb.TransactWriteItems", outage)
    assert source.failed_batches == 1
    return str(dlq)


def _cli(*args: str, capsys: pytest.CaptureFixture[str]) -> dict[str, Any]:
    from kilo_billing_cli.main import main  # noqa: PLC0415

    capsys.readouterr()
    assert main(["rating", "replay", *args, "--json"]) == 0
    # the rating handler ran in this process first: its logger holds stdout, yet stdout is the CLI's document alone
    result: dict[str, Any] = json.loads(capsys.readouterr().out)
    return result


def test_given_a_batch_on_the_on_failure_queue_when_replayed_then_month_to_date_is_right_and_a_rerun_changes_nothing(
    stack: Stack, lambda_context: LambdaContext, capsys: pytest.CaptureFixture[str]
) -> None:
    from kilo_billing.catalog import default_catalog  # noqa: PLC0415
    from kilo_billing.meters import Meter  # noqa: PLC0415
    from kilo_billing.periods import Period  # noqa: PLC0415
    from kilo_rate_usage import dependencies  # noqa: PLC0415
    from kilo_rate_usage.queries import month_to_date  # noqa: PLC0415

    video_call(lambda_context)
    _report_messages(stack, lambda_context)
    dlq = _fail_batch_into_the_on_failure_queue(stack)
    assert aggregate(stack) == {}  # nothing rated

    dry = _cli("--queue-url", dlq, capsys=capsys)
    [message] = dry["messages"]
    assert (message["source"], message["rooms"], message["livekit_events"], message["usage_events"]) == (
        "stream",
        ["RM_stream01"],
        8,
        1,
    )
    # would write: alice's and bob's sessions, the usage mark, the account's aggregate and the room's state - its
    # header alone: the room finished, so no participant item is kept (D196; before, bob's, closed by
    # room_finished inside the window) = 5 items
    assert (message["sessions_changed"], message["usage_rated"], message["writes"]) == (2, 1, 5)
    assert (message["applied"], message["message_deleted"]) == (False, False)
    assert aggregate(stack) == {}  # a dry run writes nothing

    applied = _cli("--queue-url", dlq, "--apply", capsys=capsys)
    [message] = applied["messages"]
    assert (message["sessions_changed"], message["usage_rated"], message["message_deleted"]) == (2, 1, True)
    # the hand-worked call (EXPECTED: 20 video, 45 audio) and the 1,200 messages
    assert aggregate(stack) == {"video": 20, "audio": 45, "messages": 1200}
    book = default_catalog().for_period(Period.parse(PERIOD))
    mtd = month_to_date(dependencies.rating().repo, ACCOUNT, PERIOD, (T0 + 3600) * 1000, book)
    assert (mtd.rated.used[Meter.VIDEO], mtd.rated.used[Meter.AUDIO], mtd.rated.used[Meter.MESSAGES]) == (20, 45, 1200)
    # no profile: the Personal tier, no fee, all of it inside its allowances (5,000 video, 10,000 audio, 100,000 msgs)
    assert str(mtd.rated.total) == "0.00"

    assert _cli("--queue-url", dlq, "--apply", capsys=capsys)["messages"] == []  # the queue is empty
    before = usage_state(stack)
    stack.clients["sqs"].send_message(QueueUrl=dlq, MessageBody=same_batch_again(message))
    again = _cli("--queue-url", dlq, "--apply", capsys=capsys)["messages"]
    assert [(m["sessions_changed"], m["usage_rated"], m["writes"]) for m in again] == [(0, 0, 0)]
    assert usage_state(stack) == before


def test_given_an_undecodable_item_in_a_replayed_rooms_partition_then_the_replay_rates_the_rest_and_keeps_the_message(
    stack: Stack, lambda_context: LambdaContext, capsys: pytest.CaptureFixture[str]
) -> None:
    stack.clients["dynamodb"].put_item(TableName=stack.template.physical_name("EventsTable"), Item=BROKEN_IN_ROOM)
    video_call(lambda_context)
    _report_messages(stack, lambda_context)
    dlq = _fail_batch_into_the_on_failure_queue(stack)
    assert aggregate(stack) == {}

    [dry] = _cli("--queue-url", dlq, capsys=capsys)["messages"]
    assert (dry["problem"], dry["sessions_changed"], dry["usage_rated"]) == ("", 0, 1)
    from kilo_billing_cli.main import main  # noqa: PLC0415

    capsys.readouterr()
    with pytest.raises(SystemExit) as refused:  # the CLI exits 1 when a message is refused
        main(["rating", "replay", "--queue-url", dlq, "--apply", "--json"])
    assert refused.value.code == 1
    printed = capsys.readouterr()
    [applied] = json.loads(printed.out)["messages"]  # the document alone on stdout
    # rating's log line about the refused room (Powertools' JSON, from the handler's logger) went to stderr
    logged = [json.loads(line) for line in printed.err.splitlines() if '"room not rated' in line]
    assert logged  # once per attempt at the room: the batch whole, then the room alone
    assert {(line["level"], line["room_sid"]) for line in logged} == {("ERROR", "RM_stream01")}
    # kept on the queue: its room is not rated
    assert (applied["rejected"], applied["usage_rated"], applied["message_deleted"]) == (["RM_stream01"], 1, False)
    # the 1,200 messages are rated; the room's call (20 video, 45 audio) is not, from part of its events
    assert aggregate(stack) == {"messages": 1200}


def same_batch_again(message: dict[str, Any]) -> str:
    """The same batch's on-failure record again, in AWS's format (as if Lambda had reported it twice)."""
    return json.dumps({
        "requestContext": {"condition": "RetryAttemptsExhausted", "approximateInvokeCount": 2},
        "version": "1.0", "timestamp": "2026-11-16T01:00:00.000Z",
        "DDBStreamBatchInfo": {"shardId": message["shard"], "startSequenceNumber": message["sequence"][0],
                               "endSequenceNumber": message["sequence"][1], "batchSize": 9,
                               "streamArn": message["stream"]},
    })  # fmt: skip


def test_given_the_stream_records_expired_when_replayed_then_the_events_table_window_gives_the_same_month_to_date(
    stack: Stack, lambda_context: LambdaContext
) -> None:
    from botocore.exceptions import ClientError  # noqa: PLC0415

    from kilo_billing.catalog import default_catalog  # noqa: PLC0415
    from kilo_rate_usage import adapters, dependencies  # noqa: PLC0415
    from kilo_rate_usage.model import AttributionRule, RatingConfig  # noqa: PLC0415
    from kilo_rate_usage.replay import replay  # noqa: PLC0415
    from tests.fakes import InMemoryPoisonSink, RecordingPublisher  # noqa: PLC0415

    video_call(lambda_context)
    _report_messages(stack, lambda_context)
    dlq = _fail_batch_into_the_on_failure_queue(stack)
    stack.clients["sqs"].purge_queue(QueueUrl=dlq)
    # the record Lambda sends, in AWS's own format: shard, sequence range and arrival times of the real stream
    streams = stack.clients["dynamodbstreams"]
    arn = stack.template.get_att("EventsTable", "StreamArn")
    [shard] = streams.describe_stream(StreamArn=arn)["StreamDescription"]["Shards"]
    iterator = streams.get_shard_iterator(StreamArn=arn, ShardId=shard["ShardId"], ShardIteratorType="TRIM_HORIZON")
    records = streams.get_records(ShardIterator=iterator["ShardIterator"])["Records"]
    first, last = records[0], records[-1]
    stamp = "%Y-%m-%dT%H:%M:%SZ"
    body = json.dumps({
        "requestContext": {"condition": "RetryAttemptsExhausted", "approximateInvokeCount": 2}, "version": "1.0",
        "timestamp": last["dynamodb"]["ApproximateCreationDateTime"].strftime("%Y-%m-%dT%H:%M:%S.000Z"),
        "DDBStreamBatchInfo": {
            "shardId": shard["ShardId"], "startSequenceNumber": first["dynamodb"]["SequenceNumber"],
            "endSequenceNumber": last["dynamodb"]["SequenceNumber"],
            "approximateArrivalOfFirstRecord": first["dynamodb"]["ApproximateCreationDateTime"].strftime(stamp),
            "approximateArrivalOfLastRecord": last["dynamodb"]["ApproximateCreationDateTime"].strftime(stamp),
            "batchSize": len(records), "streamArn": arn,
        },
    })  # fmt: skip
    stack.clients["sqs"].send_message(QueueUrl=dlq, MessageBody=body)

    def trimmed(**_: Any) -> None:  # 24 h later the stream answers so for every sequence number of the batch
        error = {"Error": {"Code": "TrimmedDataAccessException", "Message": "records trimmed"}}
        raise ClientError(error, "GetShardIterator")

    streams.meta.events.register("before-call.dynamodbstreams.GetShardIterator", trimmed)
    dynamodb = stack.clients["dynamodb"]
    results = replay(
        queue=adapters.SqsFailureQueue(stack.clients["sqs"], dlq, visibility_timeout=60),
        streams=adapters.DynamoStreamArchive(streams),
        events=adapters.DynamoEventArchive(dynamodb, stack.template.physical_name("EventsTable")),
        repo=dependencies.rating().repo,
        publisher=RecordingPublisher(),
        poison=InMemoryPoisonSink(),
        config=RatingConfig(AttributionRule(), default_catalog().for_period),
        now_ms=(T0 + 3600) * 1000,
        apply=True,
    )
    [result] = results
    assert (result.plan.source, result.plan.rooms, len(result.plan.usage), result.deleted) == (
        "events table",
        ["RM_stream01"],
        1,
        True,
    )
    assert aggregate(stack) == {"video": 20, "audio": 45, "messages": 1200}


def _refuse_usage_marks(params: dict[str, Any], **_: Any) -> None:
    """DynamoDB refusing for good every transaction that marks a usage event rated (as for a transaction too large)."""
    from botocore.exceptions import ClientError  # noqa: PLC0415

    items = params.get("TransactItems", [])
    if any(item.get("Update", {}).get("Key", {}).get("pk", {}).get("S", "").startswith("usage#") for item in items):
        reasons = [{"Code": "ValidationError", "Message": "Transaction request cannot exceed 4 MB"}]
        raise ClientError(
            {"Error": {"Code": "TransactionCanceledException", "Message": "Transaction cancelled"},
             "CancellationReasons": reasons + [{"Code": "None"}] * (len(items) - 1)}, "TransactWriteItems",
        )  # fmt: skip


def _peek(stack: Stack, queue: str) -> list[str]:
    """The bodies on a queue, left on it."""
    messages = stack.clients["sqs"].receive_message(QueueUrl=queue, MaxNumberOfMessages=10, VisibilityTimeout=0)
    return [message["Body"] for message in messages.get("Messages", [])]


def test_given_a_usage_event_refused_onto_the_poison_queue_when_replayed_then_it_is_rated_once(
    stack: Stack, lambda_context: LambdaContext, capsys: pytest.CaptureFixture[str]
) -> None:
    """A record DynamoDB refused for good stays unrated in the events table; once the cause is fixed, `rating
    replay` on the poison queue re-rates it through the exactly-once path and deletes the message; a second replay of
    the same message rates nothing more."""
    from kilo_rate_usage import dependencies  # noqa: PLC0415
    from kilo_rate_usage.handler import lambda_handler  # noqa: PLC0415

    _report_messages(stack, lambda_context)  # 1,200 messages for ACCOUNT
    client = dependencies.rating().repo._client
    client.meta.events.register("provide-client-params.dynamodb.TransactWriteItems", _refuse_usage_marks)
    assert lambda_handler({"Records": Lambda(stack).poll()}, lambda_context) == {"batchItemFailures": []}
    client.meta.events.unregister("provide-client-params.dynamodb.TransactWriteItems", _refuse_usage_marks)
    assert aggregate(stack) == {}  # refused: not rated
    poison = stack.template.ref("PoisonRecordDeadLetterQueue")
    [body] = _peek(stack, poison)

    [dry] = _cli("--queue-url", poison, capsys=capsys)["messages"]
    assert (dry["source"], dry["usage_events"], dry["usage_rated"], dry["message_deleted"]) == (
        "poison queue", 1, 1, False
    )  # fmt: skip
    assert aggregate(stack) == {}  # a dry run writes nothing
    [applied] = _cli("--queue-url", poison, "--apply", capsys=capsys)["messages"]
    assert (applied["problem"], applied["usage_rated"], applied["message_deleted"]) == ("", 1, True)
    assert aggregate(stack) == {"messages": 1200}
    assert _peek(stack, poison) == []

    before = usage_state(stack)
    stack.clients["sqs"].send_message(QueueUrl=poison, MessageBody=body)  # the same message replayed again
    [again] = _cli("--queue-url", poison, "--apply", capsys=capsys)["messages"]
    assert (again["usage_rated"], again["writes"], again["message_deleted"]) == (0, 0, True)
    assert aggregate(stack) == {"messages": 1200}
    assert usage_state(stack) == before


def test_given_a_poison_record_near_dynamodbs_item_limit_then_its_message_names_its_keys_within_sqss_limit(
    stack: Stack, lambda_context: LambdaContext
) -> None:
    """An event can be stored up to 400,000 bytes, an SQS message at most 256 KiB: the poison message carries the
    event's keys and the reason (the event itself stays in the events table), never the whole record."""
    from kilo_rate_usage.handler import lambda_handler  # noqa: PLC0415

    stack.clients["dynamodb"].put_item(
        TableName=stack.template.physical_name("EventsTable"),
        Item={"pk": {"S": "room#RM_large"}, "sk": {"S": "ev#EV_large"}, "source": {"S": "livekit"},
              "schema_version": {"N": "1"}, "note": {"S": "x" * 300_000}},  # undecodable, and 300 KB
    )  # fmt: skip
    assert lambda_handler({"Records": Lambda(stack).poll()}, lambda_context) == {"batchItemFailures": []}
    [body] = _peek(stack, stack.template.ref("PoisonRecordDeadLetterQueue"))
    assert len(body.encode()) <= 262_144  # SQS refuses larger messages (moto does not: checked here)
    message = json.loads(body)
    assert message["keys"] == {"pk": {"S": "room#RM_large"}, "sk": {"S": "ev#EV_large"}}
    assert "event_id" in message["reason"]


class StallingStream:
    """The streams client, except that GetRecords gives a first page of 3 records and then only empty pages (AWS
    documents that GetRecords can return empty pages before it reaches the records that follow)."""

    def __init__(self, real: Any) -> None:
        self.real = real
        self.pages = 0

    def __getattr__(self, name: str) -> Any:
        return getattr(self.real, name)

    def get_records(self, **kwargs: Any) -> dict[str, Any]:
        self.pages += 1
        if self.pages == 1:
            page: dict[str, Any] = self.real.get_records(**{**kwargs, "Limit": 3})
            return page
        return {"Records": [], "NextShardIterator": kwargs["ShardIterator"]}


def _replay_with(stack: Stack, dlq: str, streams: Any, poison: Any) -> list[Any]:
    from kilo_billing.catalog import default_catalog  # noqa: PLC0415
    from kilo_rate_usage import adapters, dependencies  # noqa: PLC0415
    from kilo_rate_usage.model import AttributionRule, RatingConfig  # noqa: PLC0415
    from kilo_rate_usage.replay import replay  # noqa: PLC0415
    from tests.fakes import RecordingPublisher  # noqa: PLC0415

    return replay(
        queue=adapters.SqsFailureQueue(stack.clients["sqs"], dlq, visibility_timeout=60),
        streams=adapters.DynamoStreamArchive(streams),
        events=adapters.DynamoEventArchive(stack.clients["dynamodb"], stack.template.physical_name("EventsTable")),
        repo=dependencies.rating().repo,
        publisher=RecordingPublisher(),
        poison=poison,
        config=RatingConfig(AttributionRule(), default_catalog().for_period),
        now_ms=(T0 + 3600) * 1000,
        apply=True,
    )


def test_given_a_stream_read_that_stops_before_the_batchs_end_when_replayed_then_the_events_table_rates_it_whole(
    stack: Stack, lambda_context: LambdaContext
) -> None:
    from tests.fakes import InMemoryPoisonSink  # noqa: PLC0415

    video_call(lambda_context)
    _report_messages(stack, lambda_context)
    dlq = _fail_batch_into_the_on_failure_queue(stack)  # 9 records: the call's 8 events and the usage event
    streams = StallingStream(stack.clients["dynamodbstreams"])

    [result] = _replay_with(stack, dlq, streams, InMemoryPoisonSink())

    assert streams.pages > 1  # the stream gave 3 of the 9 records, then empty pages
    assert (result.plan.source, len(result.plan.livekit), len(result.plan.usage), result.deleted) == (
        "events table", 8, 1, True
    )  # fmt: skip
    # the whole call (EXPECTED: 20 video, 45 audio, hand-worked) and the 1,200 messages - not 3 records' worth
    assert aggregate(stack) == {"video": 20, "audio": 45, "messages": 1200}


def test_given_an_undecodable_event_in_the_events_table_window_when_replayed_then_it_goes_to_the_poison_queue(
    stack: Stack, lambda_context: LambdaContext
) -> None:
    from botocore.exceptions import ClientError  # noqa: PLC0415

    from tests.fakes import InMemoryPoisonSink  # noqa: PLC0415

    video_call(lambda_context)
    received = int(time.time() * 1000)
    stack.clients["dynamodb"].put_item(
        TableName=stack.template.physical_name("EventsTable"),
        Item={"pk": {"S": "room#RM_broken"}, "sk": {"S": "ev#EV_broken"}, "source": {"S": "livekit"},
              "schema_version": {"N": "1"}, "received_at_ms": {"N": str(received)}},  # no event id: undecodable
    )  # fmt: skip
    dlq = _fail_batch_into_the_on_failure_queue(stack)
    streams = stack.clients["dynamodbstreams"]

    def trimmed(**_: Any) -> None:  # 24 h later the stream answers so for every sequence number of the batch
        raise ClientError({"Error": {"Code": "TrimmedDataAccessException", "Message": "trimmed"}}, "GetShardIterator")

    streams.meta.events.register("before-call.dynamodbstreams.GetShardIterator", trimmed)
    poison = InMemoryPoisonSink()

    [result] = _replay_with(stack, dlq, streams, poison)

    assert (result.plan.source, result.plan.rooms, result.deleted) == ("events table", ["RM_stream01"], True)
    assert aggregate(stack) == EXPECTED  # the call is rated
    [(keys, reason)] = poison.sent  # and the item no reader decodes reaches the poison queue (and its alarm)
    assert keys == {"pk": {"S": "room#RM_broken"}, "sk": {"S": "ev#EV_broken"}}
    assert "event_id" in reason


class PastTheEndStream:
    """The streams client, except that GetRecords answers only the records after ``end``: a read that starts past the
    batch (an iterator on a sibling shard, when the on-failure message names no shard)."""

    def __init__(self, real: Any, end: str) -> None:
        self.real = real
        self.end = int(end)

    def __getattr__(self, name: str) -> Any:
        return getattr(self.real, name)

    def get_records(self, **kwargs: Any) -> dict[str, Any]:
        page: dict[str, Any] = self.real.get_records(**kwargs)
        page["Records"] = [r for r in page["Records"] if int(r["dynamodb"]["SequenceNumber"]) > self.end]
        return page


def test_given_a_stream_read_whose_first_record_is_past_the_batchs_end_when_replayed_then_the_events_table_rates_it(
    stack: Stack, lambda_context: LambdaContext
) -> None:
    from tests.fakes import InMemoryPoisonSink  # noqa: PLC0415

    video_call(lambda_context)
    _report_messages(stack, lambda_context)
    dlq = _fail_batch_into_the_on_failure_queue(stack)  # 9 records: the call's 8 events and the usage event
    [body] = _peek(stack, dlq)
    end = json.loads(body)["DDBStreamBatchInfo"]["endSequenceNumber"]
    later = lk.Room("RM_later01", "later", account_id=ACCOUNT, created_at=T0 + 5000)
    deliver_webhook(lk.room_started(later, T0 + 5000), lambda_context)  # a record past the batch's end (no minutes)

    [result] = _replay_with(stack, dlq, PastTheEndStream(stack.clients["dynamodbstreams"], end), InMemoryPoisonSink())

    # nothing of the batch read from the stream: not an empty batch (the message deleted, nothing rated) but not found
    assert (result.plan.source, len(result.plan.usage), result.deleted) == ("events table", 1, True)
    assert aggregate(stack) == {"video": 20, "audio": 45, "messages": 1200}  # EXPECTED, hand-worked, and 1,200


def test_given_an_event_bus_that_does_not_exist_then_replay_apply_writes_nothing_and_exits_2_fix_the_bus(
    stack: Stack, lambda_context: LambdaContext, capsys: pytest.CaptureFixture[str]
) -> None:
    """Review cl2 (4): real EventBridge has been reported to answer PutEvents to a bus that does not exist with success
    (aws/aws-cli#9186, aws/aws-sdk#186): ``--apply --event-bus <typo>`` would rate, delete the message and lose the
    threshold events. The bus is asked for (``DescribeEventBus``) before any message is received: exit 2, nothing
    rated, the message still on the queue and visible (a dry run lists it)."""
    from kilo_billing_cli.main import main  # noqa: PLC0415

    video_call(lambda_context)
    _report_messages(stack, lambda_context)
    dlq = _fail_batch_into_the_on_failure_queue(stack)
    capsys.readouterr()

    code = main(["rating", "replay", "--queue-url", dlq, "--apply", "--event-bus", "kilo-typo-bus", "--json"])

    printed = capsys.readouterr()
    assert (code, printed.out) == (2, "")
    assert printed.err == (
        "kilo-billing: the event bus 'kilo-typo-bus' was not found (ResourceNotFoundException): nothing was written; "
        "fix --event-bus 'kilo-typo-bus' (or EVENT_BUS_NAME), then rerun\n"
    )
    assert aggregate(stack) == {}  # nothing rated
    [message] = _cli("--queue-url", dlq, capsys=capsys)["messages"]  # 1 message, not received by the refused run
    assert (message["usage_rated"], message["message_deleted"]) == (1, False)


def _batch_message(records: list[dict[str, Any]], arn: str, shard: str) -> str:
    """The on-failure record Lambda would send for ``records`` (one batch of the shard), in AWS's format."""
    return json.dumps({
        "requestContext": {"condition": "RetryAttemptsExhausted", "approximateInvokeCount": 2},
        "version": "1.0", "timestamp": "2026-11-16T01:00:00.000Z",
        "DDBStreamBatchInfo": {"shardId": shard, "startSequenceNumber": records[0]["dynamodb"]["SequenceNumber"],
                               "endSequenceNumber": records[-1]["dynamodb"]["SequenceNumber"],
                               "batchSize": len(records), "streamArn": arn},
    })  # fmt: skip


# the refused message's row after its reason (D362 amended (cx2), (cx3)): its chunk (a stream batch is one) and the
# chunks after it are not rated
_NOT_RATED = (
    "the records of its chunk (up to 500 events: the whole batch when no larger) and of the chunks after it are not "
    "rated, other accounts' usage included (its chunk's are when the refused event is a threshold event: it goes "
    "after the writes); the chunks before it are rated; the message stays on the queue (not deleted) and each run "
    "skips it the same way - do not delete it (that usage would never be rated): report it, and keep it past the "
    "queue's 14-day retention (README's runbook)"
)


def _ghost_room_then_the_call(stack: Stack, lambda_context: LambdaContext) -> tuple[list[Any], str, str]:
    """A room of an account nobody registered (10 audio minutes, unattributed), then the registered customer's video
    call (``EXPECTED``), delivered through the webhook; the events table's stream records of both (4 + 8), its ARN and
    shard id."""
    ghost = lk.Room("RM_ghost01", "ghost", account_id="acct_nobody", created_at=T0)
    someone = lk.Participant("PA_ghost01", "g", T0 * 1000)
    for body in (
        lk.room_started(ghost, T0),
        lk.participant_joined(ghost, someone),
        lk.participant_left(ghost, someone, T0 + 600),  # 10 audio minutes, unattributed
        lk.room_finished(ghost, T0 + 700),
    ):
        deliver_webhook(body, lambda_context)
    video_call(lambda_context)
    streams = stack.clients["dynamodbstreams"]
    arn = stack.template.get_att("EventsTable", "StreamArn")
    [shard] = streams.describe_stream(StreamArn=arn)["StreamDescription"]["Shards"]
    iterator = streams.get_shard_iterator(StreamArn=arn, ShardId=shard["ShardId"], ShardIteratorType="TRIM_HORIZON")
    return streams.get_records(ShardIterator=iterator["ShardIterator"])["Records"], arn, shard["ShardId"]


def test_given_a_message_whose_event_eventbridge_refuses_then_replay_apply_skips_it_and_replays_the_others(
    stack: Stack, lambda_context: LambdaContext, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    """D362 amended (cx): `--apply` stopped at the first message whose event EventBridge refused for its content; the
    message stays on the queue (deleted only once rated), so every later run stopped on it again and no other message
    was ever replayed. Two batches on the on-failure queue: the first a room of an account nobody registered (its
    minutes go to the unattributed bucket and rating publishes ``UnattributedUsage.v1``), the second the registered
    account's video call (nothing published: no threshold). EventBridge refusing every entry for its content (moto:
    ``InvalidArgument``, an entry without a Source): the first message is named as not replayed and kept on the queue,
    the second is rated and deleted; exit 1 (a message not replayed). Was: exit 2 at the first, the second never rated.
    """
    from kilo_billing import contracts  # noqa: PLC0415
    from kilo_billing_cli.main import main  # noqa: PLC0415

    records, arn, shard_id = _ghost_room_then_the_call(stack, lambda_context)
    assert len(records) == 4 + 8  # the ghost room's 4 events, then the call's 8
    dlq = stack.template.ref("RatingDeadLetterQueue")
    for batch in (records[:4], records[4:]):
        stack.clients["sqs"].send_message(QueueUrl=dlq, MessageBody=_batch_message(batch, arn, shard_id))
    monkeypatch.setattr(contracts, "SOURCE_RATING", "")  # moto fails every entry: InvalidArgument (no Source)
    capsys.readouterr()

    with pytest.raises(SystemExit) as exited:
        main(["rating", "replay", "--queue-url", dlq, "--apply", "--json"])

    assert exited.value.code == 1
    rows = {tuple(row["rooms"]): row for row in json.loads(capsys.readouterr().out)["messages"]}
    refused, replayed = rows[("RM_ghost01",)], rows[("RM_stream01",)]
    assert refused["problem"] == (
        "not replayed: EventBridge refused its event itself (InvalidArgument: Parameter Source is not valid. Reason: "
        "Source is a required argument.), and refuses it on every run: " + _NOT_RATED
    )
    assert (refused["message_deleted"], replayed["problem"], replayed["message_deleted"]) == (False, "", True)
    assert aggregate(stack) == EXPECTED  # the call (20 video, 45 audio, hand-worked above) is rated
    counts = stack.clients["sqs"].get_queue_attributes(
        QueueUrl=dlq, AttributeNames=["ApproximateNumberOfMessages", "ApproximateNumberOfMessagesNotVisible"]
    )["Attributes"]
    # the refused message alone is left, hidden for 900 s by the run that received it
    assert (counts["ApproximateNumberOfMessages"], counts["ApproximateNumberOfMessagesNotVisible"]) == ("0", "1")


def test_given_a_refused_event_in_one_batch_with_a_customers_call_then_the_call_stays_unrated_and_its_row_says_so(
    stack: Stack, lambda_context: LambdaContext, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    """Review (cx) 2, D362 amended (cx2): ONE batch (as Lambda batches a shard) holding a room of an account nobody
    registered (its 10 audio minutes go to the unattributed bucket: rating publishes ``UnattributedUsage.v1``) and the
    registered customer's video call. EventBridge refuses the announcement for its content; it goes before the
    batch's writes, so nothing of the batch is written - the customer's 20 video + 45 audio minutes (``EXPECTED``,
    hand-worked above) stay unrated on every run. The row said "what was written before it stays" (and the runbook
    "until it is removed by hand", which loses that usage for good); it says the batch's other records are not rated
    and not to delete the message."""
    from kilo_billing import contracts  # noqa: PLC0415
    from kilo_billing_cli.main import main  # noqa: PLC0415

    records, arn, shard_id = _ghost_room_then_the_call(stack, lambda_context)
    dlq = stack.template.ref("RatingDeadLetterQueue")
    stack.clients["sqs"].send_message(QueueUrl=dlq, MessageBody=_batch_message(records, arn, shard_id))
    monkeypatch.setattr(contracts, "SOURCE_RATING", "")  # moto fails every entry: InvalidArgument (no Source)
    capsys.readouterr()

    with pytest.raises(SystemExit) as exited:
        main(["rating", "replay", "--queue-url", dlq, "--apply", "--json"])

    assert exited.value.code == 1
    [row] = json.loads(capsys.readouterr().out)["messages"]
    assert sorted(row["rooms"]) == ["RM_ghost01", "RM_stream01"]
    assert row["problem"] == (
        "not replayed: EventBridge refused its event itself (InvalidArgument: Parameter Source is not valid. Reason: "
        "Source is a required argument.), and refuses it on every run: " + _NOT_RATED
    )
    assert row["message_deleted"] is False
    assert aggregate(stack) == {}  # neither the customer's 20 video + 45 audio minutes nor the bucket's 10 written


def _dlq_bodies(stack: Stack, dlq: str) -> list[tuple[str, str]]:
    """(MessageId, Body) of every message on ``dlq``, hidden ones included (a receive would hide them, and misses
    those a receive hid): read from moto's own queue."""
    from moto.sqs.models import sqs_backends  # noqa: PLC0415

    name = dlq.rsplit("/", 1)[-1]
    return sorted(
        (message.id, message.body)
        for regions in sqs_backends.values()
        for backend in regions.values()
        for queue_name, queue in backend.queues.items()
        if queue_name == name
        for message in queue._messages  # visible or not (``messages`` is the visible ones)
    )


def test_given_requeue_by_first_sequence_then_an_exact_copy_replaces_the_original_and_replays_to_the_same_minutes(
    stack: Stack, lambda_context: LambdaContext, capsys: pytest.CaptureFixture[str]
) -> None:
    """D362 amended (rq): `rating replay --requeue <first sequence>` copies the named message's body to the same queue
    and deletes the original once the copy is sent (cx3's hand-made `aws sqs` steps). The copy replays to the call's
    20 video + 45 audio minutes (``EXPECTED``: alice 10 video + 20 audio, bob 10 + 25, hand-worked above)."""
    from kilo_billing_cli.main import main  # noqa: PLC0415

    records, arn, shard_id = _ghost_room_then_the_call(stack, lambda_context)
    dlq = stack.template.ref("RatingDeadLetterQueue")
    ghost, call = _batch_message(records[:4], arn, shard_id), _batch_message(records[4:], arn, shard_id)
    for body in (ghost, call):
        stack.clients["sqs"].send_message(QueueUrl=dlq, MessageBody=body)
    [(call_id, _)] = [(mid, body) for mid, body in _dlq_bodies(stack, dlq) if body == call]
    first = records[4]["dynamodb"]["SequenceNumber"]
    capsys.readouterr()

    assert main(["rating", "replay", "--queue-url", dlq, "--requeue", first]) == 0

    after = _dlq_bodies(stack, dlq)
    assert sorted(body for _, body in after) == sorted([ghost, call])  # the same two bodies, byte for byte
    assert call_id not in {mid for mid, _ in after}  # the original is gone, a copy (new id) in its place
    assert "deleted" in capsys.readouterr().out
    # the ghost batch's message is hidden 300 s by the requeue's receive: this run replays the copy alone
    assert main(["rating", "replay", "--queue-url", dlq, "--apply", "--json"]) == 0
    [row] = json.loads(capsys.readouterr().out)["messages"]
    assert (row["sequence"][0], row["problem"], row["message_deleted"]) == (first, "", True)
    assert aggregate(stack) == EXPECTED


@pytest.mark.parametrize(("copies", "says"), [(1, "no message matches"), (2, "2 messages match")])
def test_given_requeue_naming_no_message_or_two_then_it_is_refused_and_the_queue_is_unchanged(
    stack: Stack, lambda_context: LambdaContext, capsys: pytest.CaptureFixture[str], copies: int, says: str
) -> None:
    """A selector no message matches (the call's message on the queue, a sequence number none starts at), and one
    that two identical copies match (what a requeue interrupted between its send and its delete leaves), are refused
    (exit 2, the CLI's usage error): nothing sent, nothing deleted."""
    from kilo_billing_cli.main import main  # noqa: PLC0415

    records, arn, shard_id = _ghost_room_then_the_call(stack, lambda_context)
    dlq = stack.template.ref("RatingDeadLetterQueue")
    for _ in range(copies):
        stack.clients["sqs"].send_message(QueueUrl=dlq, MessageBody=_batch_message(records[4:], arn, shard_id))
    before = _dlq_bodies(stack, dlq)
    assert len(before) == copies  # the helper reads moto's queue: an empty read would make the comparison below vacuous
    selector = records[4]["dynamodb"]["SequenceNumber"] if copies == 2 else records[5]["dynamodb"]["SequenceNumber"]
    capsys.readouterr()

    with pytest.raises(SystemExit) as exited:
        main(["rating", "replay", "--queue-url", dlq, "--requeue", selector])

    assert exited.value.code == 2
    assert says in capsys.readouterr().err
    assert _dlq_bodies(stack, dlq) == before  # the same ids, the same bodies


def test_given_the_copy_failing_to_send_then_requeue_deletes_nothing(
    stack: Stack, lambda_context: LambdaContext, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    """The original is deleted only after its copy was sent: SQS refusing the send (ServiceUnavailable) leaves the
    original on the queue and exits 4, one line saying to wait and count before a rerun (D362 amended (sm))."""
    from botocore.exceptions import ClientError  # noqa: PLC0415

    from kilo_billing import aws  # noqa: PLC0415
    from kilo_billing_cli.main import main  # noqa: PLC0415

    records, arn, shard_id = _ghost_room_then_the_call(stack, lambda_context)
    dlq = stack.template.ref("RatingDeadLetterQueue")
    stack.clients["sqs"].send_message(QueueUrl=dlq, MessageBody=_batch_message(records[4:], arn, shard_id))
    before = _dlq_bodies(stack, dlq)
    real = aws.client

    def failing_sends(service: str, *args: Any, **kwargs: Any) -> Any:
        made = real(service, *args, **kwargs)
        if service == "sqs":

            def refuse(**_: Any) -> Any:
                raise ClientError({"Error": {"Code": "ServiceUnavailable", "Message": "down"}}, "SendMessage")

            made.send_message = refuse
        return made

    monkeypatch.setattr(aws, "client", failing_sends)
    capsys.readouterr()

    with pytest.raises(SystemExit) as failed:
        main(["rating", "replay", "--queue-url", dlq, "--requeue", records[4]["dynamodb"]["SequenceNumber"]])
    assert failed.value.code == 4
    assert len(before) == 1  # the one original (an empty read of moto's queue would pass the next line vacuously)
    assert _dlq_bodies(stack, dlq) == before
    # D362 amended (rq2): the original is hidden 5 minutes by this receive, and a send whose answer was lost may have
    # been taken: the line says to wait, then count the queue's messages before rerunning
    [line] = capsys.readouterr().err.splitlines()  # one line: not main's "storage unavailable ...; rerun" after it
    assert "wait 5 minutes" in line
    assert "ApproximateNumberOfMessages" in line

    monkeypatch.setattr(aws, "client", real)  # a rerun at once: the original is still hidden by the failed requeue
    with pytest.raises(SystemExit) as exited:
        main(["rating", "replay", "--queue-url", dlq, "--requeue", records[4]["dynamodb"]["SequenceNumber"]])
    assert exited.value.code == 2
    assert "a --requeue run's 5 minutes" in capsys.readouterr().err


def test_given_a_poison_message_then_requeue_by_its_event_copies_it_and_deletes_the_original(
    stack: Stack, capsys: pytest.CaptureFixture[str]
) -> None:
    """The poison queue's messages (``{"reason", "keys"}``, one event) are requeued the same way, named by the event
    as their row prints it (``pk / sk``): two messages, the named one's body copied exactly, its original gone, the
    other untouched."""
    from kilo_billing_cli.main import main  # noqa: PLC0415

    poison = stack.template.ref("PoisonRecordDeadLetterQueue")
    named, other = (
        json.dumps({"reason": "refused", "keys": {"pk": {"S": f"ROOM#{room}"}, "sk": {"S": "EV#0001"}}})
        for room in ("RM_a", "RM_b")
    )
    for body in (named, other):
        stack.clients["sqs"].send_message(QueueUrl=poison, MessageBody=body)
    before = dict(_dlq_bodies(stack, poison))
    assert len(before) == 2  # named + other
    capsys.readouterr()

    assert main(["rating", "replay", "--queue-url", poison, "--requeue", "ROOM#RM_a / EV#0001"]) == 0

    after = dict(_dlq_bodies(stack, poison))
    assert sorted(after.values()) == sorted([named, other])
    [gone] = [mid for mid, body in before.items() if body == named]
    [kept] = [mid for mid, body in before.items() if body == other]
    assert gone not in after
    assert kept in after


def test_given_the_original_failing_to_delete_after_the_copy_then_requeue_says_two_copies_and_exits_4(
    stack: Stack, lambda_context: LambdaContext, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    """A crash between the send and the delete loses nothing: SQS refusing the delete (ServiceUnavailable) after the
    copy was sent leaves two identical copies (1 original + 1 copy = 2 messages), said on stderr, exit 4."""
    from botocore.exceptions import ClientError  # noqa: PLC0415

    from kilo_billing import aws  # noqa: PLC0415
    from kilo_billing_cli.main import main  # noqa: PLC0415

    records, arn, shard_id = _ghost_room_then_the_call(stack, lambda_context)
    dlq = stack.template.ref("RatingDeadLetterQueue")
    call = _batch_message(records[4:], arn, shard_id)
    stack.clients["sqs"].send_message(QueueUrl=dlq, MessageBody=call)
    real = aws.client

    def failing_deletes(service: str, *args: Any, **kwargs: Any) -> Any:
        made = real(service, *args, **kwargs)
        if service == "sqs":

            def refuse(**_: Any) -> Any:
                raise ClientError({"Error": {"Code": "ServiceUnavailable", "Message": "down"}}, "DeleteMessage")

            made.delete_message = refuse
        return made

    monkeypatch.setattr(aws, "client", failing_deletes)
    capsys.readouterr()

    with pytest.raises(SystemExit) as exited:
        main(["rating", "replay", "--queue-url", dlq, "--requeue", records[4]["dynamodb"]["SequenceNumber"]])

    assert exited.value.code == 4
    err = capsys.readouterr().err
    assert "the original was NOT deleted" in err
    # D362 amended (rq2): a rerun at once sees the copy alone (the original hidden 5 minutes) and would copy it again:
    # the line says to wait, then count, and no longer that a rerun is refused
    assert "a rerun is refused" not in err
    assert "wait 5 minutes" in err
    assert "ApproximateNumberOfMessages" in err
    assert [body for _, body in _dlq_bodies(stack, dlq)] == [call, call]  # 1 original + 1 copy


class _RawBody:
    """The HTTP body of a botocore ``AWSResponse`` (what urllib3 hands botocore, read whole)."""

    def __init__(self, body: bytes) -> None:
        self.body = body

    def stream(self, **_: Any) -> Any:
        yield self.body


# AWS's answers refusing the caller's IAM permission, as they come on the wire: SQS's JSON protocol is query-compatible
# (botocore reads the code from ``x-amzn-query-error``: ``AccessDenied``); EventBridge's JSON 1.1 names the type
_DENIED_ON_THE_WIRE = {
    "sqs": (
        403,
        {"x-amzn-query-error": "AccessDenied;Sender", "Content-Type": "application/x-amz-json-1.0"},
        {
            "__type": "com.amazon.coral.service#AccessDeniedException",
            "message": "User: arn:aws:iam::123456789012:user/operator is not authorized to perform: sqs:{action} on "
            "resource: arn:aws:sqs:us-east-1:123456789012:queue because no identity-based policy allows the "
            "sqs:{action} action",
        },
    ),
    "events": (
        400,
        {"Content-Type": "application/x-amz-json-1.1"},
        {
            "__type": "AccessDeniedException",
            "Message": "User: arn:aws:iam::123456789012:user/operator is not authorized to perform: events:{action} "
            "on resource: arn:aws:events:us-east-1:123456789012:event-bus/bus",
        },
    ),
}


def _denying(service: str, operation: str) -> Callable[..., Any]:
    """``aws.client`` whose ``service`` client is answered, for ``operation`` alone, with AWS's access-denied response
    as it comes on the wire (parsed by botocore itself: the error's shape is botocore's, not a hand-made
    ``ClientError``); every other call goes to moto."""
    from botocore.awsrequest import AWSResponse  # noqa: PLC0415

    from kilo_billing import aws  # noqa: PLC0415

    real = aws.client
    status, headers, body = _DENIED_ON_THE_WIRE[service]
    text = json.dumps({key: value.format(action=operation) for key, value in body.items()}).encode()

    def deny(request: Any, **_: Any) -> AWSResponse:
        url, request.url = request.url, "https://denied.invalid/"  # botocore asks every handler: moto's matches none
        return AWSResponse(url, status, dict(headers), _RawBody(text))

    def made(name: str, *args: Any, **kwargs: Any) -> Any:
        client = real(name, *args, **kwargs)
        if name == service:
            client.meta.events.register_first(
                f"before-send.{client.meta.service_model.endpoint_prefix}.{operation}", deny
            )
        return client

    return made


def _exit_status(argv: list[str]) -> int:
    from kilo_billing_cli.main import main  # noqa: PLC0415

    try:
        return main(argv)
    except SystemExit as exited:
        return int(str(exited.code))


@pytest.mark.parametrize("operation", ["ReceiveMessage", "SendMessage", "DeleteMessage"])
def test_given_sqs_denying_any_call_of_requeue_then_it_exits_2_as_every_access_denied(
    stack: Stack,
    lambda_context: LambdaContext,
    capsys: pytest.CaptureFixture[str],
    monkeypatch: pytest.MonkeyPatch,
    operation: str,
) -> None:
    """D362: access denied exits 2 - a rerun fails the same way, so a script retrying on 4 ("unavailable: rerun")
    loops. ``--requeue``'s delete refused for access exited 4: a script retrying it copied the copy each time (the
    original hidden 5 minutes, the copy visible: one more message on the queue per retry). Each of its three calls
    refused with SQS's own answer (botocore's parser, the query-compatible ``AccessDenied``): exit 2."""
    from kilo_billing import aws  # noqa: PLC0415

    records, arn, shard_id = _ghost_room_then_the_call(stack, lambda_context)
    dlq = stack.template.ref("RatingDeadLetterQueue")
    call = _batch_message(records[4:], arn, shard_id)
    stack.clients["sqs"].send_message(QueueUrl=dlq, MessageBody=call)
    monkeypatch.setattr(aws, "client", _denying("sqs", operation))
    capsys.readouterr()

    status = _exit_status(
        ["rating", "replay", "--queue-url", dlq, "--requeue", records[4]["dynamodb"]["SequenceNumber"]]
    )

    [line] = capsys.readouterr().err.splitlines()
    assert (status, "access denied (AccessDenied)" in line) == (2, True)
    # the copy made only when the send was allowed: 1 original (+ 1 copy)
    assert [body for _, body in _dlq_bodies(stack, dlq)] == ([call, call] if operation == "DeleteMessage" else [call])


@pytest.mark.parametrize(
    ("service", "operation"),
    [("events", "DescribeEventBus"), ("sqs", "ReceiveMessage"), ("sqs", "DeleteMessage")],
)
def test_given_aws_denying_a_call_of_replay_apply_then_it_exits_2_as_every_access_denied(
    stack: Stack,
    lambda_context: LambdaContext,
    capsys: pytest.CaptureFixture[str],
    monkeypatch: pytest.MonkeyPatch,
    service: str,
    operation: str,
) -> None:
    """D362: ``rating replay --apply`` refused for access - the bus's check before any write, the queue's receive, the
    delete of a message once its batch was re-rated - exits 2 with one line, each with AWS's own answer parsed by
    botocore (EventBridge ``AccessDeniedException``, SQS ``AccessDenied``)."""
    from kilo_billing import aws  # noqa: PLC0415

    video_call(lambda_context)
    _report_messages(stack, lambda_context)
    dlq = _fail_batch_into_the_on_failure_queue(stack)
    monkeypatch.setattr(aws, "client", _denying(service, operation))
    capsys.readouterr()

    status = _exit_status(["rating", "replay", "--queue-url", dlq, "--apply"])

    [line] = capsys.readouterr().err.splitlines()
    assert (status, "access denied" in line) == (2, True)
    # re-rated (20 video, 45 audio, 1,200 messages: the hand-worked call) only when the refusal came after the writes
    assert aggregate(stack) == ({"video": 20, "audio": 45, "messages": 1200} if operation == "DeleteMessage" else {})
    assert len(_dlq_bodies(stack, dlq)) == 1  # the message stays on the queue: a rerun re-rates it (changing nothing)
