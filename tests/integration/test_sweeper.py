"""The sweeper against a local HTTP server speaking LiveKit's Twirp RoomService (protobuf and JSON), end to end on
moto: open sessions LiveKit no longer has are closed as "swept", over-long ones "capped", and rating rebuilds them.
Also the month-to-date query, which counts sessions still open up to now."""

from __future__ import annotations

import time
from collections.abc import Iterator

import pytest

from kilo_dev import livekit_events as lk
from kilo_dev.fake_livekit import FakeLiveKit
from tests.conftest import LIVEKIT_KEYS, LambdaContext, Stack
from tests.integration.test_rating_stream import Lambda, deliver_webhook


@pytest.fixture
def livekit_server() -> Iterator[FakeLiveKit]:
    server = FakeLiveKit({"APIkeyCurrent": LIVEKIT_KEYS["APIkeyCurrent"]})
    server.start()
    yield server
    server.stop()


def test_given_the_roomservice_adapter_then_it_lists_participants_and_reports_gone_rooms(
    livekit_server: FakeLiveKit,
) -> None:
    from kilo_rate_usage.roomservice import LiveKitRoomDirectory  # noqa: PLC0415

    livekit_server.rooms["standup"] = [("PA_a", "alice"), ("PA_b", "bob")]
    # during a rotation the first configured key may already be refused: the next one is tried
    credentials = [
        ("APIkeyAAretired", "retired-secret-0123456789abcdef-0123"),
        ("APIkeyCurrent", LIVEKIT_KEYS["APIkeyCurrent"]),
    ]
    directory = LiveKitRoomDirectory(livekit_server.url, credentials)
    assert directory.participants(["standup", "gone"]) == {"standup": {"PA_a", "PA_b"}, "gone": None}
    assert [room for _, room in livekit_server.requests] == ["standup", "gone"]
    assert all(kind.startswith("application/protobuf") for kind, _ in livekit_server.requests)


def test_given_the_roomservice_with_a_wrong_secret_then_the_sweep_fails_loudly(livekit_server: FakeLiveKit) -> None:
    from livekit.api import TwirpError  # noqa: PLC0415

    from kilo_rate_usage.roomservice import LiveKitRoomDirectory  # noqa: PLC0415

    directory = LiveKitRoomDirectory(
        livekit_server.url, [("APIkeyCurrent", "not-the-secret-0123456789abcdef-0123456789")]
    )
    with pytest.raises(TwirpError):
        directory.participants(["standup"])  # never "room gone" on an auth error: that would close live sessions


def test_given_sessions_livekit_no_longer_has_then_swept_and_over_long_ones_capped(
    stack: Stack, lambda_context: LambdaContext, livekit_server: FakeLiveKit, monkeypatch: pytest.MonkeyPatch
) -> None:
    from kilo_billing.catalog import default_catalog  # noqa: PLC0415
    from kilo_billing.meters import Meter  # noqa: PLC0415
    from kilo_billing.periods import Period  # noqa: PLC0415
    from kilo_rate_usage import handler, settings, sweeper_handler  # noqa: PLC0415
    from kilo_rate_usage.queries import month_to_date  # noqa: PLC0415

    monkeypatch.setenv("LIVEKIT_URL", livekit_server.url)
    monkeypatch.setenv("MAX_SESSION_HOURS", "2")
    settings.settings.cache_clear()
    sweeper_handler.dependencies.cache_clear()
    handler.dependencies.cache_clear()
    now = int(time.time())
    room = lk.Room("RM_sweep01", "standup", account_id="acct_sweep", created_at=now - 4 * 3600)
    alice = lk.Participant("PA_alice_s", "alice", (now - 600) * 1000)  # still there
    bob = lk.Participant("PA_bob_s", "bob", (now - 900) * 1000)  # gone; his participant_left was lost
    carol = lk.Participant("PA_carol_s", "carol", (now - 3 * 3600) * 1000)  # "there" for 3 h > 2 h maximum
    for person in (alice, bob, carol):
        deliver_webhook(lk.participant_joined(room, person), lambda_context)
    runner = Lambda(stack)
    runner.run(runner.poll(), lambda_context)

    repo = handler.dependencies()[0]
    period = time.strftime("%Y-%m", time.gmtime(now))
    book = default_catalog().for_period(Period.parse(period))
    before = month_to_date(repo, "acct_sweep", period, now * 1000, book)
    assert before.open_sessions == 3
    # open sessions count as if they ended now: 10 + 15 + 180 minutes (plus the seconds the test itself takes)
    assert 205 <= before.rated.used[Meter.AUDIO] <= 207

    livekit_server.rooms["standup"] = [("PA_alice_s", "alice"), ("PA_carol_s", "carol")]
    result = sweeper_handler.lambda_handler({}, lambda_context)
    assert result == {"open": 3, "closed": 2}
    runner.run(runner.poll(), lambda_context)
    sessions = {
        item["sk"]["S"].removeprefix("SESSION#"): item
        for item in stack.table_items("UsageTable")
        if item["sk"]["S"].startswith("SESSION#")
    }
    assert sessions["PA_bob_s"]["closed_by"] == {"S": "swept"}
    assert sessions["PA_carol_s"]["closed_by"] == {"S": "capped"}
    assert int(sessions["PA_carol_s"]["end_ms"]["N"]) - int(sessions["PA_carol_s"]["start_ms"]["N"]) == 2 * 3600 * 1000
    assert "closed_by" not in sessions["PA_alice_s"]
    # a late real participant_left still wins over the sweeper's close
    deliver_webhook(lk.participant_left(room, bob, now - 300), lambda_context)
    runner.run(runner.poll(), lambda_context)
    bob_item = next(i for i in stack.table_items("UsageTable") if i["sk"]["S"] == "SESSION#PA_bob_s")
    assert bob_item["closed_by"] == {"S": "left"}
    assert int(bob_item["end_ms"]["N"]) == (now - 300) * 1000
    # the sweep again: nothing new to close (alice is still there)
    assert sweeper_handler.lambda_handler({}, lambda_context) == {"open": 1, "closed": 0}
