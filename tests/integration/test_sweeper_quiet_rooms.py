"""A room whose ``room_finished`` is lost, end to end on moto (webhooks through ingest, the stream through rating, the
sweeper's handler against the local RoomService): once the sweeper has closed its sessions and the room has been quiet
for 60 minutes, its running state is dropped as a finished room's is (D196) - and a late event is never lost, whether
it is rated while the sweeper is dropping the state (the state is kept) or after (the room is rebuilt) (D219)."""

from __future__ import annotations

import zlib
from datetime import UTC, datetime
from typing import Any

import pytest

from kilo_dev import livekit_events as lk
from kilo_dev.fake_livekit import FakeLiveKit
from tests.conftest import LambdaContext, Stack, accounts_registered
from tests.integration.test_rating_stream import Lambda, aggregate, deliver_webhook
from tests.integration.test_sweeper import livekit_server

registered_accounts = accounts_registered("acct_quiet")  # the accounts its rooms name (D276)

__all__ = ["livekit_server"]
T0 = 1_794_787_200  # 2026-11-16T00:00:00Z
MINUTE = 60
ROOM = lk.Room("RM_lost", "lost-finish", account_id="acct_quiet", created_at=T0 - 600)
ALICE = lk.Participant("PA_alice", "alice.liddell", (T0 - 600) * 1000)


@pytest.fixture
def swept_room(
    stack: Stack, lambda_context: LambdaContext, livekit_server: FakeLiveKit, monkeypatch: pytest.MonkeyPatch
) -> Lambda:
    """Alice alone in the room from T0 - 10 min; RoomService lists her at T0 - 5 min, and at T0 the room is gone -
    neither her participant_left nor the room's room_finished came: swept at T0 and rated."""
    from kilo_rate_usage import dependencies, settings  # noqa: PLC0415

    monkeypatch.setenv("LIVEKIT_URL", livekit_server.url)
    settings.settings.cache_clear()
    dependencies.sweeper.cache_clear()
    runner = Lambda(stack)
    deliver_webhook(lk.room_started(ROOM, T0 - 600), lambda_context)
    deliver_webhook(lk.participant_joined(ROOM, ALICE), lambda_context)
    runner.run(runner.poll(), lambda_context)
    livekit_server.rooms["lost-finish"] = [("PA_alice", "alice.liddell")]
    assert sweep(T0 - 300, lambda_context)["listed"] == 1
    del livekit_server.rooms["lost-finish"]
    assert sweep(T0, lambda_context)["swept"] == 1
    runner.run(runner.poll(), lambda_context)
    return runner


def sweep(at: int, context: LambdaContext) -> dict[str, Any]:
    from kilo_rate_usage import sweeper_handler  # noqa: PLC0415

    stamp = datetime.fromtimestamp(at, tz=UTC).isoformat().replace("+00:00", "Z")
    return sweeper_handler.lambda_handler({"scheduled_time": stamp}, context)


def room_items(stack: Stack) -> dict[str, dict[str, Any]]:
    """The usage table's items of the room (by sort key) and the sweeper's marks (by ``mark#<sort key>``)."""
    found: dict[str, dict[str, Any]] = {}
    for item in stack.table_items("UsageTable"):
        if item["pk"]["S"] == "ROOM#RM_lost":
            found[item["sk"]["S"]] = item
        elif item["pk"]["S"] == "SWEPT_ROOMS":
            found["mark#" + item["sk"]["S"]] = item
    return found


def naming_alice(stack: Stack) -> list[str]:
    """Sort keys of the room's items other than her session that hold her identity anywhere (a header's state
    decompressed)."""
    found = []
    for sk, item in room_items(stack).items():
        text = repr(item) + (zlib.decompress(item["state_zlib"]["B"]).decode() if "state_zlib" in item else "")
        if sk != "SESSION#PA_alice" and "alice.liddell" in text:
            found.append(sk)
    return sorted(found)


def alice(stack: Stack) -> dict[str, Any]:
    return room_items(stack)["SESSION#PA_alice"]


def test_given_a_swept_room_quiet_for_an_hour_then_its_running_state_is_dropped_and_a_late_left_rebuilds_it(
    stack: Stack, lambda_context: LambdaContext, swept_room: Lambda
) -> None:
    runner = swept_room
    items = room_items(stack)
    assert "state_zlib" in items["STATE"]  # the running state: her registers and the window's events name her
    assert naming_alice(stack) == sorted(["STATE", *(sk for sk in items if sk.startswith("PART#"))])
    assert "mark#ROOM#RM_lost" in items
    # swept at T0: T0 - 600 .. T0 = 600 s -> 10 audio
    assert (alice(stack)["closed_by"]["S"], aggregate(stack, "acct_quiet")) == ("swept", {"audio": 10})

    assert sweep(T0 + 30 * MINUTE, lambda_context)["dropped_states"] == 0  # quiet for 30 minutes only: kept
    assert "state_zlib" in room_items(stack)["STATE"]

    assert sweep(T0 + 61 * MINUTE, lambda_context)["dropped_states"] == 1
    items = room_items(stack)
    header = items["STATE"]
    # the mark stays, naming the version the drop wrote: a late event that rebuilds the room is dropped again
    assert ("state_zlib" in header, int(items["mark#ROOM#RM_lost"]["dropped_version"]["N"])) == (
        False, int(header["version"]["N"]),
    )  # fmt: skip
    assert not [sk for sk in items if sk.startswith("PART#")]
    assert naming_alice(stack) == []  # before: the header and her participant item, for good
    version = int(header["version"]["N"])
    assert sweep(T0 + 70 * MINUTE, lambda_context)["dropped_states"] == 0  # the drop untouched: nothing to do
    assert int(room_items(stack)["STATE"]["version"]["N"]) == version

    # her real participant_left, delivered late: it rebuilds the room and wins over the sweep
    deliver_webhook(lk.participant_left(ROOM, ALICE, T0 - 120), lambda_context)
    runner.run(runner.poll(), lambda_context)
    # T0 - 600 .. T0 - 120 = 480 s -> 8 audio
    assert (alice(stack)["closed_by"]["S"], int(alice(stack)["end_ms"]["N"])) == ("left", (T0 - 120) * 1000)
    assert aggregate(stack, "acct_quiet") == {"audio": 8}
    assert int(room_items(stack)["STATE"]["version"]["N"]) > version
    # the rebuild (no room_finished) is a running state naming her again: the kept mark has the sweeper drop it
    # again once quiet - her left at T0 - 2 min and the sweep's close at T0 are over an hour old (D222)
    assert "state_zlib" in room_items(stack)["STATE"]
    assert sweep(T0 + 200 * MINUTE, lambda_context)["dropped_states"] == 1  # before: 0, and the state for good
    assert sweep(T0 + 2000 * MINUTE, lambda_context)["dropped_states"] == 0
    items = room_items(stack)
    assert ("state_zlib" in items["STATE"], [sk for sk in items if sk.startswith("PART#")]) == (False, [])
    assert naming_alice(stack) == []
    assert (alice(stack)["closed_by"]["S"], aggregate(stack, "acct_quiet")) == ("left", {"audio": 8})


def test_given_a_late_event_rated_while_the_sweeper_drops_the_state_then_the_state_is_kept_and_dropped_later(
    stack: Stack, lambda_context: LambdaContext, swept_room: Lambda
) -> None:
    """The sweeper has read the room's header (quiet for an hour) when rating rates her late participant_left: the
    drop, conditioned on the version read, changes nothing; the mark stays, and the next quiet sweep drops it."""
    from kilo_rate_usage import dependencies  # noqa: PLC0415

    runner = swept_room
    deliver_webhook(lk.participant_left(ROOM, ALICE, T0 - 120), lambda_context)  # stored, not rated yet
    late = runner.poll()
    rated: list[int] = []

    def rate_first(params: dict[str, Any], **_: Any) -> None:
        if params["Item"]["sk"] == {"S": "STATE"} and not rated:  # the sweeper's drop, about to be sent
            runner.run(late, lambda_context)
            rated.append(1)

    client = dependencies.sweeper().store._client  # the sweeper's own client, as its handler uses it
    client.meta.events.register("provide-client-params.dynamodb.PutItem", rate_first)
    assert sweep(T0 + 61 * MINUTE, lambda_context)["dropped_states"] == 0
    assert rated == [1]
    items = room_items(stack)
    assert ("state_zlib" in items["STATE"], "mark#ROOM#RM_lost" in items) == (True, True)  # rating's new state
    # the late left counted: T0 - 600 .. T0 - 120 = 480 s -> 8 audio
    assert (alice(stack)["closed_by"]["S"], aggregate(stack, "acct_quiet")) == ("left", {"audio": 8})

    assert sweep(T0 + 66 * MINUTE, lambda_context)["dropped_states"] == 1  # the room's events are an hour old
    assert naming_alice(stack) == []
    items = room_items(stack)  # the mark kept, naming the drop's version (D222)
    assert int(items["mark#ROOM#RM_lost"]["dropped_version"]["N"]) == int(items["STATE"]["version"]["N"])
    assert aggregate(stack, "acct_quiet") == {"audio": 8}


def test_given_a_chunked_write_under_way_on_a_quiet_room_then_the_sweeper_leaves_its_items_and_drops_it_later(
    stack: Stack, lambda_context: LambdaContext, swept_room: Lambda
) -> None:
    """D223: rating's chunked write of the room's participant items (too many for one transaction) has put its
    pending mark on the header and is writing its chunks into the header's generation when the quiet sweep runs: the
    sweeper leaves the header, those items and its mark alone (before: it read the header as unusable and deleted
    every item of that generation - the write's own). Once the write's header lands (the mark cleared), the next
    quiet sweep drops the state."""
    usage = stack.template.physical_name("UsageTable")
    client = stack.clients["dynamodb"]
    key = {"pk": {"S": "ROOM#RM_lost"}, "sk": {"S": "STATE"}}
    client.update_item(  # the chunked write's first step: its mark on the header, at the version it read
        TableName=usage, Key=key, UpdateExpression="SET #p = :m", ExpressionAttributeNames={"#p": "pending"},
        ExpressionAttributeValues={":m": {"S": "chunking"}},
    )  # fmt: skip
    parts = sorted(sk for sk in room_items(stack) if sk.startswith("PART#"))
    assert parts  # her item, in the header's generation: what the chunked write writes
    header = room_items(stack)["STATE"]

    assert sweep(T0 + 61 * MINUTE, lambda_context)["dropped_states"] == 0
    items = room_items(stack)
    assert sorted(sk for sk in items if sk.startswith("PART#")) == parts  # before: deleted
    assert (items["STATE"], "mark#ROOM#RM_lost" in items) == (header, True)

    client.update_item(  # the write's header lands: its next version, the mark cleared
        TableName=usage, Key=key, UpdateExpression="SET version = version + :one REMOVE #p",
        ExpressionAttributeNames={"#p": "pending"}, ExpressionAttributeValues={":one": {"N": "1"}},
    )  # fmt: skip
    assert sweep(T0 + 66 * MINUTE, lambda_context)["dropped_states"] == 1
    assert naming_alice(stack) == []


def test_given_a_dropped_rooms_mark_expired_then_a_late_left_bills_as_with_the_mark_and_only_the_state_stays(
    stack: Stack, lambda_context: LambdaContext, swept_room: Lambda
) -> None:
    """The dropped room's mark expires (DynamoDB's TTL, ``listing_ttl`` after the drop, D222) before her late
    participant_left comes (a replay of the on-failure queue's record, or of the events table, weeks later). The
    mark guards no minute: rating rebuilds the room from its stored events as it does with the mark (8 audio, closed
    by ``left``, the same figures as above); only the rebuilt running state, naming her, is no longer dropped again -
    D222's stated limit, until the room's next event or the erasure of her account (D220) (D251)."""
    runner = swept_room
    assert sweep(T0 + 61 * MINUTE, lambda_context)["dropped_states"] == 1
    assert naming_alice(stack) == []
    usage = stack.template.physical_name("UsageTable")
    swept = {"pk": {"S": "SWEPT_ROOMS"}, "sk": {"S": "ROOM#RM_lost"}}
    stack.clients["dynamodb"].delete_item(TableName=usage, Key=swept)  # what the table's TTL does once it is due
    assert "mark#ROOM#RM_lost" not in room_items(stack)

    deliver_webhook(lk.participant_left(ROOM, ALICE, T0 - 120), lambda_context)
    runner.run(runner.poll(), lambda_context)
    # T0 - 600 .. T0 - 120 = 480 s -> 8 audio: her left wins over the sweep, as with the mark
    assert (alice(stack)["closed_by"]["S"], int(alice(stack)["end_ms"]["N"])) == ("left", (T0 - 120) * 1000)
    assert aggregate(stack, "acct_quiet") == {"audio": 8}
    assert sweep(T0 + 200 * MINUTE, lambda_context)["dropped_states"] == 0  # no mark: the state stays
    assert "state_zlib" in room_items(stack)["STATE"]
    assert aggregate(stack, "acct_quiet") == {"audio": 8}
