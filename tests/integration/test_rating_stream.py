"""Rating on moto with real DynamoDB streams: webhooks signed with LiveKit's SDK go through the ingest handler, the
events table's stream is read as Lambda reads it (filter criteria and batch size from template.yaml), and the rating
handler rates each batch. Redelivery, a crash half-way and a poison record change nothing they should not."""

from __future__ import annotations

import json
from collections.abc import Callable
from typing import Any

import pytest

from kilo_dev import livekit_events as lk
from kilo_dev.apigw import http_api_event
from kilo_dev.patterns import matches
from kilo_dev.signing import livekit_authorization
from kilo_dev.streams import StreamReader
from kilo_webhook_ingest import livekit_handler
from tests.conftest import LIVEKIT_KEYS, LambdaContext, Stack, count_calls

T0 = 1_794_787_200  # 2026-11-16T00:00:00Z
PERIOD = "2026-11"
ACCOUNT = "acct_team_1"


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
    from kilo_rate_usage.handler import dependencies  # noqa: PLC0415

    counter = count_calls(dependencies()[0]._client)
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
    from kilo_rate_usage.handler import dependencies, lambda_handler  # noqa: PLC0415

    video_call(lambda_context)
    # a busy room: 110 sessions in one batch need two transactions (at most 100 items each)
    room = lk.Room("RM_stream02", "all-hands", account_id="acct_other", created_at=T0)
    for index in range(110):
        person = lk.Participant(f"PA_p{index:06d}", f"p{index}", (T0 + index) * 1000)
        deliver_webhook(lk.participant_joined(room, person), lambda_context)
        deliver_webhook(lk.participant_left(room, person, T0 + index + 61), lambda_context)
    records = Lambda(stack).poll()
    client = dependencies()[0]._client
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
    assert poisoned["record"]["dynamodb"]["Keys"]["sk"] == {"S": "ev#EV_broken"}


def test_given_a_batch_then_writes_stay_within_the_stated_formula(stack: Stack, lambda_context: LambdaContext) -> None:
    from kilo_rate_usage.handler import dependencies  # noqa: PLC0415

    video_call(lambda_context)
    records = Lambda(stack).poll()
    counter = count_calls(dependencies()[0]._client)
    items_written: list[int] = []

    def count_items(params: dict[str, Any], **_: Any) -> None:
        items_written.append(len(params.get("TransactItems", [])) or 1)

    dependencies()[0]._client.meta.events.register("provide-client-params.dynamodb.TransactWriteItems", count_items)
    dependencies()[0]._client.meta.events.register("provide-client-params.dynamodb.UpdateItem", count_items)
    from kilo_rate_usage.handler import lambda_handler  # noqa: PLC0415

    lambda_handler({"Records": records}, lambda_context)
    # 2 sessions changed + 0 usage events + 1 aggregate (one transaction) + 0 thresholds = 3 items written
    assert sum(items_written) == 3
    assert counter.count("TransactWriteItems") == 1
    assert counter.count("PutItem") == 0


def test_given_app_usage_reported_twice_then_counted_once(stack: Stack, lambda_context: LambdaContext) -> None:
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
        response = usage_handler.lambda_handler(http_api_event("POST", "/v1/usage", body, headers), lambda_context)
        assert response["statusCode"] == 200
    runner = Lambda(stack)
    records = runner.poll()
    assert len(records) == 2  # the marks ("rated_at") are MODIFY records: filtered out
    runner.run(records, lambda_context)
    runner.run(records, lambda_context)  # the stream redelivers
    assert aggregate(stack) == {"messages": 1200, "data_transfer": 2_500_000_000}
    assert runner.poll() == []  # marking usage rated produced no new INSERT for rating


def test_given_usage_crossing_half_the_allowance_then_one_threshold_event_reaches_the_bus(
    stack: Stack, lambda_context: LambdaContext
) -> None:
    from kilo_dev.signing import usage_signature  # noqa: PLC0415
    from kilo_webhook_ingest import usage_handler  # noqa: PLC0415
    from tests.conftest import USAGE_CLIENTS, register_accounts  # noqa: PLC0415

    register_accounts(stack, "acct_free")  # ingest accepts usage of registered accounts only (personal since January)
    events, sqs = stack.clients["events"], stack.clients["sqs"]
    bus = stack.template.physical_name("BillingEventBus")
    queue = sqs.create_queue(QueueName="threshold-probe")["QueueUrl"]
    arn = sqs.get_queue_attributes(QueueUrl=queue, AttributeNames=["QueueArn"])["Attributes"]["QueueArn"]
    events.put_rule(Name="probe", EventBusName=bus, EventPattern=json.dumps({"source": ["kilo.billing.rating"]}))
    events.put_targets(Rule="probe", EventBusName=bus, Targets=[{"Id": "q", "Arn": arn}])
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
        "event_id": "threshold:acct_free:2026-11:messages:50",
        "account_id": "acct_free",
        "period": "2026-11",
        "meter": "messages",
        "threshold_percent": 50,
        "used": "60000",
        "limit": "100000",
        "occurred_at": envelope["detail"]["occurred_at"],
    }
