"""A hard limit reached during a long call, end to end on moto and a local RoomService: the threshold event published
on the billing bus as rating publishes it -> the alerts rule -> the alerts queue -> the alerts handler -> RoomService
(``livekit-api`` against kilo_dev.fake_livekit on 127.0.0.1, requests recorded as Twirp JSON) -> the delayed removal
step on the same queue -> RoomService again. The account's participants come from open sessions written as rating
writes them (its own item mapping), read by the alerts function through its own port."""

from __future__ import annotations

import hashlib
import json
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from decimal import Decimal
from fractions import Fraction

import boto3
import pytest
import time_machine

from kilo_billing.account_store import DynamoAccountDirectory
from kilo_billing.accounts import AccountProfile
from kilo_billing.rating import TierChange
from kilo_dev.fake_livekit import FakeLiveKit
from kilo_rate_usage.items import session_to_item
from kilo_rate_usage.model import Billing, Session, StoredSession
from tests.conftest import LIVEKIT_KEYS, AlertsStack, LambdaContext, _clear_caches
from tests.integration.test_alerts_delivery import mime, parts, run
from tests.integration.test_alerts_delivery import publish as publish_threshold

NOW = datetime(2026, 11, 20, 10, 5, tzinfo=UTC)
AUDIO_ONLY = {"canSubscribe": True, "canPublish": True, "canPublishData": True, "canPublishSources": ["MICROPHONE"]}
JOINED = {"canSubscribe": True, "canPublish": True, "canPublishData": True}  # what a plain roomJoin token grants


@pytest.fixture
def livekit() -> Iterator[FakeLiveKit]:
    server = FakeLiveKit(dict(LIVEKIT_KEYS))
    server.rooms = {
        "standup": [("PA_alice", "alice"), ("PA_bob", "bob")],
        "support": [("PA_carol", "carol"), ("PA_other", "dave")],  # dave is another account's participant
    }
    server.start()
    yield server
    server.stop()


@pytest.fixture
def enforcing(alerts_stack: AlertsStack, livekit: FakeLiveKit, monkeypatch: pytest.MonkeyPatch) -> AlertsStack:
    monkeypatch.setenv("LIVEKIT_URL", livekit.url)
    monkeypatch.setenv("ENFORCEMENT_GRACE_SECONDS", "0")  # the removal step is visible on the queue at once
    _clear_caches()
    stack = alerts_stack.stack
    table = stack.template.physical_name("UsageTable")
    DynamoAccountDirectory(stack.clients["dynamodb"], table).register(
        AccountProfile(
            "acct_9",
            (TierChange(datetime(2026, 1, 1, tzinfo=UTC), "team"),),
            budget_usd=Decimal("100"),
            hard_limit_usd=Decimal("150"),
            name="Nine Ltd",
            email="billing@nine.example",
            phone="+14155550109",
            phone_verified=True,
        )
    )
    for room_sid, room, participant, identity, account in [
        ("RM_1", "standup", "PA_alice", "alice", "acct_9"),
        ("RM_1", "standup", "PA_bob", "bob", "acct_9"),
        ("RM_2", "support", "PA_carol", "carol", "acct_9"),
        ("RM_2", "support", "PA_other", "dave", "acct_other"),
    ]:
        session = Session(
            room_sid, participant, identity, "standard", account, int(NOW.timestamp() * 1000) - 3_600_000, None,
            None, False, Billing.ROOM_RULE, Fraction(0), Fraction(0), (), True, 0, room,
        )  # fmt: skip
        stack.clients["dynamodb"].put_item(TableName=table, Item=session_to_item(StoredSession(session, {}, "v1")))
    return alerts_stack


@pytest.fixture(autouse=True)
def clock() -> Iterator[None]:
    with time_machine.travel(NOW, tick=False):
        yield


def publish(stack: AlertsStack, meter: str, percent: int, used: str, limit: str, scope: str | None = None) -> None:
    publish_threshold(stack, "acct_9", meter, percent, used, limit, scope)


def pseudonym_of(identity: str) -> str:
    """D80's pseudonym, worked independently: ``erased-`` + 16 hex digits of sha256(account NUL identity)."""
    return "erased-" + hashlib.sha256(f"acct_9\x00{identity}".encode()).hexdigest()[:16]


# enforcement records name participants by pseudonym only, in the key and the item (D214); "-": the account's
NAMES = {"-": "-", **{pseudonym_of(name): name for name in ("alice", "bob", "carol", "dave")}}


def named(item: dict[str, object]) -> str:
    """Who an enforcement record stands for: its identity is a pseudonym (KeyError for one in the clear), the last
    part of its sort key - or, on a removal of a session whose join is known, the part before that join (one claim
    per session, D71 amended (e4b))."""
    identity = str(item["identity"])
    session = f"#{item['joined_ms']}" if "joined_ms" in item else ""
    assert str(item["sk"]).endswith(f"#{identity}{session}")
    return NAMES[identity]


def actions(stack: AlertsStack) -> list[tuple[str, str, str, str]]:
    table = stack.stack.template.physical_name("AlertsTable")
    found = boto3.resource("dynamodb").Table(table).scan()["Items"]
    return sorted(
        (str(i["action"]), str(i["room"]), named(i), str(i["status"]))
        for i in found
        if str(i["sk"]).startswith("ENFORCEMENT#")
    )


def test_given_the_hard_limit_reached_in_a_call_then_audio_only_then_removal_in_order_once(
    enforcing: AlertsStack, livekit: FakeLiveKit
) -> None:
    publish(enforcing, "hard_limit", 100, "150.02", "150")
    assert run(enforcing) == {"batchItemFailures": []}

    assert livekit.calls == [
        ("UpdateParticipant", {"room": "standup", "identity": "alice", "permission": AUDIO_ONLY}),
        ("UpdateParticipant", {"room": "standup", "identity": "bob", "permission": AUDIO_ONLY}),
        ("UpdateParticipant", {"room": "support", "identity": "carol", "permission": AUDIO_ONLY}),
    ]
    # the removal step was put on the queue (grace 0 here): the next receive hands it to the function
    assert run(enforcing) == {"batchItemFailures": []}
    assert livekit.calls[3:] == [
        ("RemoveParticipant", {"room": "standup", "identity": "alice"}),
        ("RemoveParticipant", {"room": "standup", "identity": "bob"}),
        ("RemoveParticipant", {"room": "support", "identity": "carol"}),
    ]
    assert livekit.rooms == {"standup": [], "support": [("PA_other", "dave")]}
    assert actions(enforcing) == [
        ("audio_only", "standup", "alice", "done"),
        ("audio_only", "standup", "bob", "done"),
        ("audio_only", "support", "carol", "done"),
        ("remove", "-", "-", "done"),  # the step ran (D361 amended): who joins since is removed at once
        ("remove", "standup", "alice", "done"),
        ("remove", "standup", "bob", "done"),
        ("remove", "support", "carol", "done"),
        ("schedule_removal", "-", "-", "done"),
    ]
    # the account heard about it: email and SMS with the figures
    [mail] = [mime(message) for message in enforcing.sent_mail()]
    assert mail["Subject"] == "Your November 2026 hard spending limit of $150.00 is reached: calls are stopping"
    text, _ = parts(mail)
    assert "is $150.02 so far and has reached your hard spending limit of $150.00" in text
    [(phone, sms)] = [(p, text) for p, text, *_ in enforcing.sent_sms()]
    assert phone == "+14155550109"
    assert sms == (
        "Kilo: hard limit $150.00 reached (November 2026 bill $150.02). Calls go audio-only and end in 1 min. "
        "Reply STOP to opt out"
    )

    # a redelivered event (rating republishes the same event id after a crash) does nothing again
    publish(enforcing, "hard_limit", 100, "150.02", "150")
    assert run(enforcing) == {"batchItemFailures": []}
    assert len(livekit.calls) == 6
    assert len(enforcing.sent_mail()) == 1
    assert "Messages" not in enforcing.stack.clients["sqs"].receive_message(QueueUrl=enforcing.queue_url)  # no 2nd step


def test_given_roomservice_failing_then_the_record_is_retried_and_only_the_missing_action_is_repeated(
    enforcing: AlertsStack, livekit: FakeLiveKit
) -> None:
    livekit.failures = [(503, "unavailable")]  # the first request (alice's GetParticipant) fails for now
    publish(enforcing, "hard_limit", 100, "151", "150")
    event = enforcing.sqs_event()
    from kilo_alerts.handler import lambda_handler  # noqa: PLC0415

    failed = lambda_handler(event, LambdaContext(remaining_ms=60_000))
    assert failed == {"batchItemFailures": [{"itemIdentifier": event["Records"][0]["messageId"]}]}
    assert [call[1]["identity"] for call in livekit.calls] == ["bob", "carol"]  # alice's read failed: not updated
    assert ("audio_only", "standup", "alice", "retry") in actions(enforcing)
    lambda_handler(event, LambdaContext(remaining_ms=60_000))  # the queue's redelivery
    assert [call[1]["identity"] for call in livekit.calls] == ["bob", "carol", "alice"]
    assert ("audio_only", "standup", "alice", "done") in actions(enforcing)


def test_given_the_limit_raised_before_the_grace_ends_then_nobody_is_removed(
    enforcing: AlertsStack, livekit: FakeLiveKit
) -> None:
    publish(enforcing, "budget", 100, "150.00", "100")  # a budget event at the hard limit enforces it too
    run(enforcing)
    assert [method for method, _ in livekit.calls] == ["UpdateParticipant"] * 3
    stack = enforcing.stack
    directory = DynamoAccountDirectory(stack.clients["dynamodb"], stack.template.physical_name("UsageTable"))
    from kilo_billing.budgets import BudgetChange, set_budget  # noqa: PLC0415

    set_budget(directory, "acct_9", BudgetChange(hard_limit_usd=Decimal("300")))
    run(enforcing)
    # nobody removed; each gets back the whole permission it had (a plain roomJoin grant here)
    everyone = [("standup", "alice"), ("standup", "bob"), ("support", "carol")]
    assert livekit.calls[3:] == [
        ("UpdateParticipant", {"room": room, "identity": who, "permission": JOINED}) for room, who in everyone
    ]
    assert ("remove", "-", "-", "lifted") in actions(enforcing)
    assert [a for a in actions(enforcing) if a[0] == "restore"] == [("restore", r, w, "done") for r, w in everyone]
    subjects = sorted(str(mime(mail)["Subject"]) for mail in enforcing.sent_mail())
    assert subjects == [
        "Your November 2026 bill so far reached 100% of your budget",
        "Your November 2026 hard spending limit of $150.00 is reached: calls are stopping",
    ]
    assert json.dumps(livekit.permissions[("standup", "alice")]) == json.dumps(JOINED)


def claims(stack: AlertsStack) -> list[tuple[str, str, str, str, str]]:
    """(hard limit, action, room, identity, status) of every enforcement record, from the alerts table."""
    table = stack.stack.template.physical_name("AlertsTable")
    found = boto3.resource("dynamodb").Table(table).scan()["Items"]
    return sorted(
        (str(i.get("limit", "")), str(i["action"]), str(i["room"]), named(i), str(i["status"]))
        for i in found
        if str(i["sk"]).startswith("ENFORCEMENT#")
    )


def test_given_the_limit_raised_after_it_was_enforced_then_reaching_the_new_limit_enforces_and_alerts_again(
    enforcing: AlertsStack, livekit: FakeLiveKit
) -> None:
    publish(enforcing, "hard_limit", 100, "150.02", "150", scope="150")  # as rating publishes it: scoped by the limit
    run(enforcing)
    assert [method for method, _ in livekit.calls] == ["UpdateParticipant"] * 3
    stack = enforcing.stack
    directory = DynamoAccountDirectory(stack.clients["dynamodb"], stack.template.physical_name("UsageTable"))
    from kilo_billing.budgets import BudgetChange, set_budget  # noqa: PLC0415

    set_budget(directory, "acct_9", BudgetChange(hard_limit_usd=Decimal("200.00")))  # within the grace (D47)
    run(enforcing)  # the removal step: the limit no longer holds, everyone's permission is set back
    everyone = [("standup", "alice"), ("standup", "bob"), ("support", "carol")]
    assert livekit.calls[3:] == [
        ("UpdateParticipant", {"room": room, "identity": who, "permission": JOINED}) for room, who in everyone
    ]
    # the calls go on and the bill reaches the raised limit: rating announces it with its own id (scoped by the amount
    # and the setting's version: the profile's first change of the limit)
    publish(enforcing, "hard_limit", 100, "200.40", "200", scope="200v1")
    run(enforcing)
    assert livekit.calls[6:] == [
        ("UpdateParticipant", {"room": room, "identity": who, "permission": AUDIO_ONLY}) for room, who in everyone
    ]
    run(enforcing)  # the new removal step, after the grace (0 s here)
    assert livekit.calls[9:] == [("RemoveParticipant", {"room": room, "identity": who}) for room, who in everyone]
    assert claims(enforcing) == sorted(
        [("150", "audio_only", room, who, "done") for room, who in everyone]
        + [("150", "schedule_removal", "-", "-", "done"), ("150", "remove", "-", "-", "lifted")]
        + [("150", "restore", room, who, "done") for room, who in everyone]
        + [("200v1", "audio_only", room, who, "done") for room, who in everyone]
        + [("200v1", "schedule_removal", "-", "-", "done")]
        + [("200v1", "remove", room, who, "done") for room, who in everyone]
        + [("200v1", "remove", "-", "-", "done")]
    )
    subjects = sorted(str(mime(mail)["Subject"]) for mail in enforcing.sent_mail())
    assert subjects == [
        "Your November 2026 hard spending limit of $150.00 is reached: calls are stopping",
        "Your November 2026 hard spending limit of $200.00 is reached: calls are stopping",
    ]
    assert len(enforcing.sent_sms()) == 2

    # the same crossing delivered again (rating republished it after a crash): one alert, nothing enforced twice
    publish(enforcing, "hard_limit", 100, "200.40", "200", scope="200v1")
    run(enforcing)
    assert len(livekit.calls) == 12
    assert (len(enforcing.sent_mail()), len(enforcing.sent_sms())) == (2, 2)
    assert "Messages" not in enforcing.stack.clients["sqs"].receive_message(QueueUrl=enforcing.queue_url)


def test_given_the_limit_set_back_to_an_amount_already_enforced_then_it_is_enforced_and_alerted_once_more(
    enforcing: AlertsStack, livekit: FakeLiveKit
) -> None:
    publish(enforcing, "hard_limit", 100, "150.02", "150")  # the limit as registered (no version: D124's scope)
    run(enforcing)
    run(enforcing)  # the removal step
    assert [method for method, _ in livekit.calls] == ["UpdateParticipant"] * 3 + ["RemoveParticipant"] * 3
    stack = enforcing.stack
    directory = DynamoAccountDirectory(stack.clients["dynamodb"], stack.template.physical_name("UsageTable"))
    from kilo_billing.budgets import BudgetChange, set_budget  # noqa: PLC0415

    set_budget(directory, "acct_9", BudgetChange(hard_limit_usd=Decimal("300")))  # version 1
    set_budget(directory, "acct_9", BudgetChange(hard_limit_usd=Decimal("150")))  # version 2: back to $150
    # the three rejoin; the bill is above $150: rating announces the new setting, as it scopes it
    livekit.rooms = {"standup": [("PA_alice2", "alice"), ("PA_bob2", "bob")], "support": [("PA_carol2", "carol")]}
    publish(enforcing, "hard_limit", 100, "151.00", "150", scope="150v2")
    run(enforcing)
    run(enforcing)
    publish(enforcing, "hard_limit", 100, "151.00", "150", scope="150v2")  # redelivered: nothing more
    run(enforcing)
    everyone = [("standup", "alice"), ("standup", "bob"), ("support", "carol")]
    assert livekit.calls[6:] == [
        ("UpdateParticipant", {"room": room, "identity": who, "permission": AUDIO_ONLY}) for room, who in everyone
    ] + [("RemoveParticipant", {"room": room, "identity": who}) for room, who in everyone]
    assert [c for c in claims(enforcing) if c[0] == "150v2"] == sorted(
        [("150v2", "audio_only", room, who, "done") for room, who in everyone]
        + [("150v2", "schedule_removal", "-", "-", "done")]
        + [("150v2", "remove", room, who, "done") for room, who in everyone]
        + [("150v2", "remove", "-", "-", "done")]
    )
    subjects = [str(mime(mail)["Subject"]) for mail in enforcing.sent_mail()]
    assert subjects == ["Your November 2026 hard spending limit of $150.00 is reached: calls are stopping"] * 2
    assert len(enforcing.sent_sms()) == 2


def test_given_a_budget_event_at_the_hard_limit_then_ratings_own_hard_limit_event_repeats_nothing(
    enforcing: AlertsStack, livekit: FakeLiveKit
) -> None:
    # the budget's 100 % ($100) with the bill at the $150 hard limit: the hard-limit alert is derived from it (D47)
    publish(enforcing, "budget", 100, "150.00", "100", scope="100")
    run(enforcing)
    # then rating's own hard_limit event of the same limit (written 150.00 in the profile's figures): the same key
    publish(enforcing, "hard_limit", 100, "150.00", "150.00", scope="150")
    run(enforcing)
    subjects = sorted(str(mime(mail)["Subject"]) for mail in enforcing.sent_mail())
    assert subjects == [
        "Your November 2026 bill so far reached 100% of your budget",
        "Your November 2026 hard spending limit of $150.00 is reached: calls are stopping",
    ]
    # enforced once: audio only for the three, one removal step (grace 0: it came with the second event)
    methods = sorted(method for method, _ in livekit.calls)
    assert methods == ["RemoveParticipant"] * 3 + ["UpdateParticipant"] * 3
    assert "Messages" not in enforcing.stack.clients["sqs"].receive_message(QueueUrl=enforcing.queue_url)


def test_given_a_subscribe_only_viewer_and_a_hidden_recorder_then_audio_only_keeps_everything_but_video(
    enforcing: AlertsStack, livekit: FakeLiveKit
) -> None:
    # UpdateParticipant replaces the whole permission (LiveKit's VideoGrant.UpdateFromPermission): what is sent must
    # be each participant's own permission with only its publish sources narrowed
    viewer = {"canSubscribe": True, "canPublishData": True}  # a webinar viewer: may not publish
    recorder = {"canSubscribe": True, "canPublish": True, "hidden": True, "recorder": True, "canUpdateMetadata": True}
    screen = {"canSubscribe": True, "canPublish": True, "canPublishSources": ["CAMERA", "SCREEN_SHARE"]}
    livekit.permissions.update(
        {("standup", "alice"): viewer, ("standup", "bob"): recorder, ("support", "carol"): screen}
    )
    publish(enforcing, "hard_limit", 100, "150.02", "150")
    run(enforcing)
    assert livekit.calls == [  # the viewer is left alone: it never gains a microphone
        ("UpdateParticipant", {"room": "standup", "identity": "bob", "permission": {
            "canSubscribe": True, "canPublish": True, "canPublishSources": ["MICROPHONE"], "hidden": True,
            "recorder": True, "canUpdateMetadata": True}}),
        # camera and screen share only, no microphone: publishing is turned off
        ("UpdateParticipant", {"room": "support", "identity": "carol", "permission": {"canSubscribe": True}}),
    ]  # fmt: skip
    assert ("audio_only", "standup", "alice", "skipped") in actions(enforcing)

    # the limit is raised within the grace: the removal step gives each its own permission back, whole
    stack = enforcing.stack
    directory = DynamoAccountDirectory(stack.clients["dynamodb"], stack.template.physical_name("UsageTable"))
    from kilo_billing.budgets import BudgetChange, set_budget  # noqa: PLC0415

    set_budget(directory, "acct_9", BudgetChange(hard_limit_usd=Decimal("300")))
    run(enforcing)
    assert livekit.calls[2:] == [
        ("UpdateParticipant", {"room": "standup", "identity": "bob", "permission": recorder}),
        ("UpdateParticipant", {"room": "support", "identity": "carol", "permission": screen}),
    ]
    assert livekit.permissions == {
        ("standup", "alice"): viewer,
        ("standup", "bob"): recorder,
        ("support", "carol"): screen,
    }


def app_updates(livekit: FakeLiveKit, room: str, identity: str, permission: dict[str, object]) -> None:
    """The app's own backend changes a participant's permission (RoomService UpdateParticipant, the official SDK)."""
    import asyncio  # noqa: PLC0415

    from google.protobuf import json_format  # noqa: PLC0415
    from livekit import api  # noqa: PLC0415

    key, secret = next(iter(LIVEKIT_KEYS.items()))

    async def update() -> None:
        async with api.LiveKitAPI(livekit.url, key, secret) as client:
            grant = json_format.ParseDict(permission, api.ParticipantPermission())
            await client.room.update_participant(
                api.UpdateParticipantRequest(room=room, identity=identity, permission=grant)
            )

    asyncio.run(update())


def test_given_the_app_changed_a_permission_after_audio_only_then_the_restore_leaves_the_apps_change_alone(
    enforcing: AlertsStack, livekit: FakeLiveKit
) -> None:
    publish(enforcing, "hard_limit", 100, "150.02", "150", scope="150")
    run(enforcing)
    assert [method for method, _ in livekit.calls] == ["UpdateParticipant"] * 3
    # during the grace the app makes bob a hidden recorder (no publishing) and revokes carol's publish
    recorder = {"canSubscribe": True, "hidden": True, "recorder": True}
    listener = {"canSubscribe": True, "canPublishData": True}
    app_updates(livekit, "standup", "bob", recorder)
    app_updates(livekit, "support", "carol", listener)
    stack = enforcing.stack
    directory = DynamoAccountDirectory(stack.clients["dynamodb"], stack.template.physical_name("UsageTable"))
    from kilo_billing.budgets import BudgetChange, set_budget  # noqa: PLC0415

    set_budget(directory, "acct_9", BudgetChange(hard_limit_usd=Decimal("300")))
    run(enforcing)  # the removal step: the limit lifted
    # only alice, whose permission is still the one audio-only set, gets hers back; the app's changes stay
    assert livekit.calls[5:] == [
        ("UpdateParticipant", {"room": "standup", "identity": "alice", "permission": JOINED}),
    ]
    assert livekit.permissions == {
        ("standup", "alice"): JOINED,
        ("standup", "bob"): recorder,
        ("support", "carol"): listener,
    }
    assert [c for c in claims(enforcing) if c[1] == "restore"] == [
        ("150", "restore", "standup", "alice", "done"),
        ("150", "restore", "standup", "bob", "kept"),
        ("150", "restore", "support", "carol", "kept"),
    ]
    assert ("150", "remove", "-", "-", "lifted") in claims(enforcing)
    run_again = enforcing.stack.clients["sqs"].receive_message(QueueUrl=enforcing.queue_url)
    assert "Messages" not in run_again


def test_given_the_limit_lowered_within_the_grace_then_the_old_step_removes_nobody_and_the_new_limit_has_its_own_steps(
    enforcing: AlertsStack, livekit: FakeLiveKit
) -> None:
    publish(enforcing, "hard_limit", 100, "150.02", "150", scope="150")
    run(enforcing)
    assert [method for method, _ in livekit.calls] == ["UpdateParticipant"] * 3
    stack = enforcing.stack
    directory = DynamoAccountDirectory(stack.clients["dynamodb"], stack.template.physical_name("UsageTable"))
    from kilo_billing.budgets import BudgetChange, set_budget  # noqa: PLC0415

    set_budget(directory, "acct_9", BudgetChange(hard_limit_usd=Decimal("140")))  # 140v1: the $150.02 bill is above
    run(enforcing)  # the $150 limit's removal step: no longer the limit in force -> nobody removed under it
    assert "RemoveParticipant" not in [method for method, _ in livekit.calls]
    everyone = [("standup", "alice"), ("standup", "bob"), ("support", "carol")]
    assert [c for c in claims(enforcing) if c[1] != "audio_only" or c[0] != "150"] == sorted(
        [("150", "schedule_removal", "-", "-", "done"), ("150", "remove", "-", "-", "superseded")]
        + [("140v1", "audio_only", room, who, "done") for room, who in everyone]
        + [("140v1", "schedule_removal", "-", "-", "done")]
    )
    run(enforcing)  # the $140 limit's own removal step, after its own grace (0 s here)
    assert [call for call in livekit.calls if call[0] == "RemoveParticipant"] == [
        ("RemoveParticipant", {"room": room, "identity": who}) for room, who in everyone
    ]
    assert "Messages" not in enforcing.stack.clients["sqs"].receive_message(QueueUrl=enforcing.queue_url)


def test_given_the_app_changed_a_permission_between_two_limits_then_the_older_limits_step_gives_back_the_apps_one(
    enforcing: AlertsStack, livekit: FakeLiveKit
) -> None:
    # $150 reached -> audio-only, its removal step queued; a minute on, the app makes bob hidden (publishing anything)
    # and the limit is lowered to $140 (140v1, reached): rating's event narrows bob again and saves the app's
    # permission; the limit is raised to $300; then the $150 removal step fires first (scheduled first), then 140v1's
    from kilo_alerts.handler import lambda_handler  # noqa: PLC0415
    from kilo_billing.budgets import BudgetChange, set_budget  # noqa: PLC0415

    stack = enforcing.stack
    directory = DynamoAccountDirectory(stack.clients["dynamodb"], stack.template.physical_name("UsageTable"))
    publish(enforcing, "hard_limit", 100, "150.02", "150", scope="150")
    run(enforcing)
    held = enforcing.sqs_event(max_messages=1)  # the $150 step (grace 0 here), held until the end of a real grace
    [step] = [json.loads(record["body"])["detail"] for record in held["Records"]]
    assert (step["step"], step["limit"]) == ("remove", "150")
    hidden = {"canSubscribe": True, "canPublish": True, "canPublishData": True, "hidden": True}
    with time_machine.travel(NOW + timedelta(seconds=60), tick=False):
        app_updates(livekit, "standup", "bob", hidden)
        set_budget(directory, "acct_9", BudgetChange(hard_limit_usd=Decimal("140")))  # 140v1
        publish(enforcing, "hard_limit", 100, "150.02", "140", scope="140v1")
        run(enforcing)  # rating's 140v1 event
    assert livekit.permissions[("standup", "bob")] == {**hidden, "canPublishSources": ["MICROPHONE"]}
    with time_machine.travel(NOW + timedelta(seconds=90), tick=False):
        set_budget(directory, "acct_9", BudgetChange(hard_limit_usd=Decimal("300")))
    with time_machine.travel(NOW + timedelta(seconds=120), tick=False):
        assert lambda_handler(held, LambdaContext(remaining_ms=60_000)) == {"batchItemFailures": []}
    assert livekit.permissions == {
        ("standup", "alice"): JOINED,
        ("standup", "bob"): hidden,  # the app's permission, not microphone-only
        ("support", "carol"): JOINED,
    }
    with time_machine.travel(NOW + timedelta(seconds=180), tick=False):
        run(enforcing)  # 140v1's removal step: nothing given back a second time
    assert livekit.permissions[("standup", "bob")] == hidden
    everyone = [("standup", "alice"), ("standup", "bob"), ("support", "carol")]
    assert [c for c in claims(enforcing) if c[1] in ("restore", "remove")] == sorted(
        [(limit, "restore", room, who, "done") for limit in ("140v1", "150") for room, who in everyone]
        + [("140v1", "remove", "-", "-", "lifted"), ("150", "remove", "-", "-", "lifted")]
    )
    assert [method for method, _ in livekit.calls].count("UpdateParticipant") == 3 + 1 + 3 + 3


def erase_sessions(stack: AlertsStack) -> None:
    """What the erasure does to the account's stored sessions while the call goes on (D80): each identity becomes its
    pseudonym (rating's open-sessions index then names acct_9's participants by pseudonym); LiveKit still knows them
    by their identities."""
    table = stack.stack.template.physical_name("UsageTable")
    for room_sid, room, participant, identity in [
        ("RM_1", "standup", "PA_alice", "alice"),
        ("RM_1", "standup", "PA_bob", "bob"),
        ("RM_2", "support", "PA_carol", "carol"),
    ]:
        session = Session(
            room_sid, participant, pseudonym_of(identity), "standard", "acct_9",
            int(NOW.timestamp() * 1000) - 3_600_000, None, None, False, Billing.ROOM_RULE, Fraction(0), Fraction(0),
            (), True, 0, room,
        )  # fmt: skip
        stack.stack.clients["dynamodb"].put_item(
            TableName=table, Item=session_to_item(StoredSession(session, {}, "v2"))
        )


def test_given_the_account_erased_between_audio_only_and_the_limit_raised_then_the_restore_reaches_the_participants(
    enforcing: AlertsStack, livekit: FakeLiveKit
) -> None:
    """D214 amended: the restore matches each pseudonymised session to its room's live participant
    (ListParticipants) - before, it called RoomService with the pseudonym, recorded gone, and left them audio-only."""
    publish(enforcing, "hard_limit", 100, "150.02", "150")
    run(enforcing)
    assert len(livekit.calls) == 3
    erase_sessions(enforcing)
    stack = enforcing.stack
    directory = DynamoAccountDirectory(stack.clients["dynamodb"], stack.template.physical_name("UsageTable"))
    from kilo_billing.budgets import BudgetChange, set_budget  # noqa: PLC0415

    set_budget(directory, "acct_9", BudgetChange(hard_limit_usd=Decimal("300")))
    livekit.requests.clear()
    run(enforcing)
    everyone = [("standup", "alice"), ("standup", "bob"), ("support", "carol")]
    assert livekit.calls[3:] == [
        ("UpdateParticipant", {"room": room, "identity": who, "permission": JOINED}) for room, who in everyone
    ]
    assert [room for _, room in livekit.requests] == ["standup", "support"]  # each room listed once
    assert [a for a in actions(enforcing) if a[0] == "restore"] == [("restore", r, w, "done") for r, w in everyone]


def test_given_the_account_erased_mid_call_then_audio_only_and_the_removal_reach_its_participants(
    enforcing: AlertsStack, livekit: FakeLiveKit
) -> None:
    erase_sessions(enforcing)
    publish(enforcing, "hard_limit", 100, "150.02", "150")
    assert run(enforcing) == {"batchItemFailures": []}
    assert run(enforcing) == {"batchItemFailures": []}  # the removal step (grace 0)
    assert [(method, call["room"], call["identity"]) for method, call in livekit.calls] == [
        ("UpdateParticipant", "standup", "alice"),
        ("UpdateParticipant", "standup", "bob"),
        ("UpdateParticipant", "support", "carol"),
        ("RemoveParticipant", "standup", "alice"),
        ("RemoveParticipant", "standup", "bob"),
        ("RemoveParticipant", "support", "carol"),
    ]
    assert livekit.rooms == {"standup": [], "support": [("PA_other", "dave")]}  # dave: another account's, kept
    # 3 audio-only, the step scheduled, 3 removals and the step's own record (D361 amended)
    assert [a[3] for a in actions(enforcing)] == ["done"] * 8


def test_given_the_roomservice_adapter_then_it_lists_a_rooms_identities_and_a_room_gone_is_gone(
    livekit: FakeLiveKit,
) -> None:
    from kilo_alerts.adapters import LiveKitRoomControl  # noqa: PLC0415
    from kilo_alerts.ports import ParticipantGoneError, RoomControlFailedError  # noqa: PLC0415

    rooms = LiveKitRoomControl(livekit.url, lambda: list(LIVEKIT_KEYS.items()))
    assert rooms.identities("standup") == ["alice", "bob"]
    assert rooms.identities("support") == ["carol", "dave"]
    assert [room for _, room in livekit.requests] == ["standup", "support"]
    with pytest.raises(ParticipantGoneError):
        rooms.identities("ended")
    livekit.failures = [(503, "unavailable")]
    with pytest.raises(RoomControlFailedError):
        rooms.identities("standup")
