"""A hard limit reached during a long call with no further event, end to end on moto and a local RoomService: two
people join (LiveKit webhooks signed with the SDK -> ingest -> the events stream -> rating: open sessions), then
nothing more arrives. The sweeper's scheduled run checks the calls still going on (``check_running_limits``): once
their minutes so far pass the hard limit it publishes ``UsageThresholdCrossed.v1`` (hard_limit) on the billing bus ->
the template's alerts rule -> the alerts queue -> the alerts handler -> RoomService audio-only, then removal after the
grace (``kilo_dev.fake_livekit`` on 127.0.0.1, requests recorded in order). Figures worked by hand below."""

from __future__ import annotations

import json
from collections.abc import Iterator
from datetime import UTC, datetime
from decimal import Decimal
from typing import Any

import pytest
import time_machine

from kilo_billing.account_store import DynamoAccountDirectory
from kilo_billing.accounts import AccountProfile
from kilo_billing.rating import TierChange
from kilo_dev import livekit_events as lk
from kilo_dev.fake_livekit import FakeLiveKit
from tests.conftest import LIVEKIT_KEYS, AlertsStack, LambdaContext, _clear_caches
from tests.integration.test_alerts_delivery import mime, parts, run
from tests.integration.test_rating_stream import Lambda, aggregate, deliver_webhook

T0 = 1_794_787_200  # 2026-11-16T00:00:00Z
HOUR = 3600
ACCOUNT = "acct_long"
AUDIO_ONLY = {"canSubscribe": True, "canPublish": True, "canPublishData": True, "canPublishSources": ["MICROPHONE"]}


@pytest.fixture
def livekit() -> Iterator[FakeLiveKit]:
    server = FakeLiveKit(dict(LIVEKIT_KEYS))
    server.rooms = {"allhands": [("PA_alice", "alice"), ("PA_bob", "bob")]}  # LiveKit still lists both: they stay
    server.start()
    yield server
    server.stop()


@pytest.fixture
def long_call(alerts_stack: AlertsStack, livekit: FakeLiveKit, monkeypatch: pytest.MonkeyPatch) -> AlertsStack:
    monkeypatch.setenv("LIVEKIT_URL", livekit.url)  # the sweeper asks it who is there; the alerts function enforces
    monkeypatch.setenv("ENFORCEMENT_GRACE_SECONDS", "0")  # the removal step is visible on the queue at once
    _clear_caches()
    stack = alerts_stack.stack
    DynamoAccountDirectory(stack.clients["dynamodb"], stack.template.physical_name("UsageTable")).register(
        AccountProfile(
            ACCOUNT,
            (TierChange(datetime(2026, 1, 1, tzinfo=UTC), "personal"),),
            hard_limit_usd=Decimal("0.25"),
            name="Long Calls Ltd",
            email="ops@long.example",
            phone="+14155550142",
            phone_verified=True,
        )
    )
    return alerts_stack


@pytest.fixture
def clock() -> Iterator[time_machine.Coordinates]:
    """The test's clock, moved by hand (moto's queues expire messages by the clock: it must not jump back to now)."""
    with time_machine.travel(datetime.fromtimestamp(T0, tz=UTC), tick=False) as traveller:
        yield traveller


def sweep(clock: time_machine.Coordinates, seconds: int) -> dict[str, Any]:
    """One scheduled run of the sweeper at ``seconds`` (its schedule's time, as the template's Input passes it)."""
    from kilo_rate_usage import sweeper_handler  # noqa: PLC0415

    clock.move_to(datetime.fromtimestamp(seconds, tz=UTC))
    stamp = datetime.fromtimestamp(seconds, tz=UTC).isoformat().replace("+00:00", "Z")
    return sweeper_handler.lambda_handler({"scheduled_time": stamp}, LambdaContext(remaining_ms=120_000))


def queued(stack: AlertsStack) -> list[dict[str, Any]]:
    """What the alerts rule put on the alerts queue (bodies as EventBridge put them); left visible for the handler."""
    sqs = stack.stack.clients["sqs"]
    answer = sqs.receive_message(QueueUrl=stack.queue_url, MaxNumberOfMessages=10, VisibilityTimeout=0)
    return [json.loads(message["Body"]) for message in answer.get("Messages", [])]


def test_given_a_long_call_with_no_further_event_when_the_sweeper_runs_then_the_hard_limit_is_enforced_once(
    long_call: AlertsStack, livekit: FakeLiveKit, lambda_context: LambdaContext, clock: time_machine.Coordinates
) -> None:
    room = lk.Room("RM_allhands", "allhands", account_id=ACCOUNT, created_at=T0)
    for person in (lk.Participant("PA_alice", "alice", T0 * 1000), lk.Participant("PA_bob", "bob", T0 * 1000)):
        deliver_webhook(lk.participant_joined(room, person), lambda_context)
    runner = Lambda(long_call.stack)
    runner.run(runner.poll(), lambda_context)
    assert aggregate(long_call.stack, ACCOUNT) == {}  # two open sessions, nothing closed: rating counted nothing
    assert queued(long_call) == []

    # 80 h in: 2 x 4,800 = 9,600 audio minutes, inside Personal's 10,000 included: $0.00, nothing to announce
    result = sweep(clock, T0 + 80 * HOUR)
    assert (result["open"], result["closed"], result["thresholds"]) == (2, 0, 0)
    assert queued(long_call) == []

    # 90 h in: 2 x 5,400 = 10,800 audio minutes, 800 over the allowance x $0.00036 = $0.288 -> $0.29 >= $0.25
    result = sweep(clock, T0 + 90 * HOUR)
    assert (result["open"], result["closed"], result["thresholds"]) == (2, 0, 1)
    [event] = queued(long_call)
    assert event["detail-type"] == "UsageThresholdCrossed.v1"
    assert event["source"] == "kilo.billing.rating"
    assert {k: event["detail"][k] for k in ("event_id", "meter", "threshold_percent", "used", "limit", "scope")} == {
        "event_id": "threshold:acct_long:2026-11:hard_limit@0.25:100",  # scoped by the hard limit in force
        "meter": "hard_limit",
        "threshold_percent": 100,
        "used": "0.29",
        "limit": "0.25",
        "scope": "0.25",
    }

    assert run(long_call) == {"batchItemFailures": []}  # the threshold event: audio only, removal scheduled
    assert livekit.calls == [
        ("UpdateParticipant", {"room": "allhands", "identity": "alice", "permission": AUDIO_ONLY}),
        ("UpdateParticipant", {"room": "allhands", "identity": "bob", "permission": AUDIO_ONLY}),
    ]
    assert run(long_call) == {"batchItemFailures": []}  # the removal step after the grace (0 s here)
    assert livekit.calls[2:] == [
        ("RemoveParticipant", {"room": "allhands", "identity": "alice"}),
        ("RemoveParticipant", {"room": "allhands", "identity": "bob"}),
    ]
    [mail] = [mime(message) for message in long_call.sent_mail()]
    assert mail["To"] == "ops@long.example"
    assert mail["Subject"] == "Your November 2026 hard spending limit of $0.25 is reached: calls are stopping"
    text, _ = parts(mail)
    assert "is $0.29 so far and has reached your hard spending limit of $0.25" in text
    [(phone, sms)] = [(p, message) for p, message, *_ in long_call.sent_sms()]
    assert phone == "+14155550142"
    assert sms.startswith("Kilo: hard limit $0.25 reached (November 2026 bill $0.29).")

    # the next run (the call still listed as open until rating sees the removals) announces nothing again
    result = sweep(clock, T0 + 90 * HOUR + 300)
    assert result["thresholds"] == 0
    assert queued(long_call) == []
    assert len(livekit.calls) == 4
