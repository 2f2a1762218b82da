"""On moto, through ingest, the events table's stream and the rating handler (D276): a room whose metadata names
an account id nobody registered has its minutes kept in the unattributed bucket and announced on the billing bus with
the id; once the account is registered, the room's next rebuild moves them to it. Usage dated in a period before the
account's signup period, minutes (D280) or app-reported (D291), stays in the bucket, announced."""

from __future__ import annotations

import json
import time
from datetime import UTC, datetime, timedelta
from typing import Any

from kilo_billing.account_store import DynamoAccountDirectory
from kilo_billing.accounts import AccountProfile
from kilo_billing.periods import Period
from kilo_billing.rating import TierChange
from kilo_dev import livekit_events as lk
from kilo_dev.apigw import http_api_event
from kilo_dev.signing import usage_signature
from kilo_webhook_ingest import usage_handler
from tests.conftest import USAGE_CLIENTS, LambdaContext, Stack, register_accounts
from tests.integration.test_rating_stream import PERIOD, T0, Lambda, aggregate, deliver_webhook, rating_bus_probe

UNKNOWN = "acct_unknown"


def unattributed(stack: Stack, queue: str, detail_type: str = "UnattributedUsage.v1") -> list[dict[str, Any]]:
    messages = stack.clients["sqs"].receive_message(QueueUrl=queue, MaxNumberOfMessages=10).get("Messages", [])
    envelopes = [json.loads(message["Body"]) for message in messages]
    return [e["detail"] for e in envelopes if e["detail-type"] == detail_type]


def test_given_a_room_naming_an_unregistered_account_then_its_minutes_are_unattributed_until_it_registers(
    stack: Stack, lambda_context: LambdaContext
) -> None:
    queue = rating_bus_probe(stack)
    room = lk.Room("RM_unreg01", "standup", account_id=UNKNOWN, created_at=T0)
    alice = lk.Participant("PA_alice_u1", "alice", T0 * 1000)
    left = lk.participant_left(room, alice, T0 + 1200)
    for body in (
        lk.room_started(room, T0),
        lk.participant_joined(room, alice),
        left,
        lk.room_finished(room, T0 + 1300),
    ):
        deliver_webhook(body, lambda_context)
    runner = Lambda(stack)
    runner.run(runner.poll(), lambda_context)

    # alice: 1200 s -> 20 audio minutes, in the unattributed bucket, not on an aggregate of the unregistered id
    assert aggregate(stack, UNKNOWN) == {}
    assert aggregate(stack, "unattributed") == {"audio": 20}
    assert unattributed(stack, queue) == [
        {"schema_version": 1, "room_sid": "RM_unreg01", "participant_sid": "PA_alice_u1", "identity": "alice",
         "period": PERIOD, "minutes": 20, "unregistered_account": UNKNOWN},
    ]  # fmt: skip

    register_accounts(stack, UNKNOWN)  # the operator registers it (personal since January)
    # a webhook LiveKit delivers late (alice's microphone): the finished room is rebuilt from its events (D196)
    deliver_webhook(lk.track_published(room, alice, "TR_mic_u1", T0 + 1, video=False), lambda_context)
    runner.run(runner.poll(), lambda_context)

    assert aggregate(stack, UNKNOWN) == {"audio": 20}  # moved by the normal delta: +20 here, -20 there
    assert aggregate(stack, "unattributed") == {"audio": 0}
    assert unattributed(stack, queue) == []  # a move out of the bucket announces nothing


def test_given_the_account_registered_in_the_month_after_the_call_then_a_rebuild_leaves_its_minutes_unattributed(
    stack: Stack, lambda_context: LambdaContext
) -> None:
    queue = rating_bus_probe(stack)
    room = lk.Room("RM_unreg02", "standup", account_id=UNKNOWN, created_at=T0)
    alice = lk.Participant("PA_alice_u2", "alice", T0 * 1000)
    for body in (
        lk.room_started(room, T0),
        lk.participant_joined(room, alice),
        lk.participant_left(room, alice, T0 + 600),
        lk.room_finished(room, T0 + 700),
    ):
        deliver_webhook(body, lambda_context)
    runner = Lambda(stack)
    runner.run(runner.poll(), lambda_context)
    assert aggregate(stack, "unattributed") == {"audio": 10}  # alice: 600 s on 2026-11-16
    assert [event["unregistered_account"] for event in unattributed(stack, queue)] == [UNKNOWN]

    # signed up on 2026-12-05: its first close is December's, November is never invoiced (compose_close)
    directory = DynamoAccountDirectory(stack.clients["dynamodb"], stack.template.physical_name("UsageTable"))
    directory.register(AccountProfile(UNKNOWN, (TierChange(datetime(2026, 12, 5, tzinfo=UTC), "personal"),)))
    deliver_webhook(lk.track_published(room, alice, "TR_mic_u2", T0 + 1, video=False), lambda_context)  # rebuild
    runner.run(runner.poll(), lambda_context)

    assert aggregate(stack, "unattributed") == {"audio": 10}  # kept in the bucket, reported
    assert aggregate(stack, UNKNOWN) == {}  # not on an aggregate no close or report reads
    assert unattributed(stack, queue) == []  # nothing added to the bucket: announced once, above


def test_given_app_usage_dated_before_the_accounts_signup_period_then_rating_keeps_it_unattributed_and_announces_it(
    stack: Stack, lambda_context: LambdaContext
) -> None:
    queue = rating_bus_probe(stack)
    # ingest refuses usage more than 35 days old (D14): dated 30 minutes before this month, from a signup at its start
    this_month = Period.containing(datetime.fromtimestamp(time.time(), tz=UTC))
    earlier = Period.containing(this_month.start - timedelta(minutes=30))
    directory = DynamoAccountDirectory(stack.clients["dynamodb"], stack.template.physical_name("UsageTable"))
    directory.register(AccountProfile(UNKNOWN, (TierChange(this_month.start, "personal"),)))
    at = (this_month.start - timedelta(minutes=30)).isoformat()
    event = {"idempotency_key": "m-early", "account_id": UNKNOWN, "meter": "messages", "quantity": 1200}
    body = json.dumps({"events": [event | {"timestamp": at}]}).encode()
    headers = {"x-kilo-client": "kilo-app", "x-kilo-signature": usage_signature(body, USAGE_CLIENTS["kilo-app"][0])}
    response = usage_handler.lambda_handler(http_api_event("POST", "/v1/usage", body, headers), lambda_context)
    assert response["statusCode"] == 200, response["body"]  # accepted: registered, within 35 days
    runner = Lambda(stack)
    runner.run(runner.poll(), lambda_context)

    # the month before the signup's is closed by no invoice of the account: the bucket keeps the 1,200 messages
    assert aggregate(stack, "unattributed", earlier.key) == {"messages": 1200}
    assert aggregate(stack, UNKNOWN, earlier.key) == {}
    assert unattributed(stack, queue, "UnattributedAppUsage.v1") == [
        {"schema_version": 1, "account_id": UNKNOWN, "period": earlier.key, "meter": "messages", "quantity": 1200},
    ]
