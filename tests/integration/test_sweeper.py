"""The sweeper against a local HTTP server speaking LiveKit's Twirp RoomService (protobuf and JSON), end to end on
moto: sessions LiveKit no longer lists are swept, sessions it lists stay open whatever their length, and only sessions
LiveKit could not vouch for past the limit are capped - at their last confirmation, with the ``SessionsCapped``
metric - and a later real close restores their minutes. Also the month-to-date query over open sessions."""

from __future__ import annotations

import json
import socket
from collections.abc import Iterator
from datetime import UTC, datetime
from typing import Any

import pytest

from kilo_dev import livekit_events as lk
from kilo_dev.fake_livekit import FakeLiveKit
from kilo_dev.template import Template
from tests.conftest import LIVEKIT_KEYS, LambdaContext, Stack, accounts_registered
from tests.integration.test_rating_stream import Lambda, aggregate, deliver_webhook

registered_accounts = accounts_registered(
    "acct_agent", "acct_deploy", "acct_mtd", "acct_outage", "acct_reconnect", "acct_sweep"
)  # the accounts its rooms name (D276)

T0 = 1_794_787_200  # 2026-11-16T00:00:00Z: every sweep below stays inside November
HOUR = 3600


@pytest.fixture
def livekit_server() -> Iterator[FakeLiveKit]:
    server = FakeLiveKit({"APIkeyCurrent": LIVEKIT_KEYS["APIkeyCurrent"]})
    server.start()
    yield server
    server.stop()


def closed_port_url() -> str:
    """A loopback URL nothing listens on (RoomService unreachable): connections are refused at once."""
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    return f"http://127.0.0.1:{port}"


def test_given_the_roomservice_adapter_then_it_lists_participants_and_reports_gone_rooms(
    livekit_server: FakeLiveKit,
) -> None:
    from kilo_rate_usage.adapters import LiveKitRoomDirectory  # noqa: PLC0415

    livekit_server.rooms["standup"] = [("PA_a", "alice"), ("PA_b", "bob")]
    # during a rotation the first configured key may already be refused: the next one is tried
    credentials = [
        ("APIkeyAAretired", "retired-secret-0123456789abcdef-0123"),
        ("APIkeyCurrent", LIVEKIT_KEYS["APIkeyCurrent"]),
    ]
    directory = LiveKitRoomDirectory(livekit_server.url, lambda: credentials)
    answers = directory.participants(["standup", "gone"])
    assert answers.present == {"standup": {"PA_a", "PA_b"}, "gone": None}
    assert answers.unanswered == {}
    assert sorted(room for _, room in livekit_server.requests) == ["gone", "standup"]
    assert all(kind.startswith("application/protobuf") for kind, _ in livekit_server.requests)


def test_given_the_roomservice_adapter_then_it_reports_each_listed_participant_s_kind_and_join(
    livekit_server: FakeLiveKit,
) -> None:
    """What the sweeper writes a lost join from (D375, amended): the kind by name as ingest stores a webhook's
    (0 -> STANDARD, a number this protocol does not know -> UNKNOWN_<n>), the join from joinedAtMs, else joinedAt."""
    from kilo_rate_usage.adapters import LiveKitRoomDirectory  # noqa: PLC0415
    from kilo_rate_usage.model import ListedParticipant  # noqa: PLC0415

    livekit_server.rooms["standup"] = [("PA_a", "alice"), ("PA_s", "+1555"), ("PA_n", "new"), ("PA_i", "rtmp")]
    livekit_server.infos = {
        "PA_a": {"joined_at": T0, "joined_at_ms": T0 * 1000 + 250, "metadata": '{"account_id": "a"}'},
        "PA_s": {"kind": 3, "joined_at": T0 + 7},  # no joinedAtMs (an older server): joinedAt x 1000
        "PA_n": {"kind": 9, "attributes": {"kilo.account_id": "acct_x"}},  # no join time at all: 0
        "PA_i": {"kind": 1, "joined_at_ms": T0 * 1000},
    }
    keys = [("APIkeyCurrent", LIVEKIT_KEYS["APIkeyCurrent"])]
    answers = LiveKitRoomDirectory(livekit_server.url, lambda: keys).participants(["standup", "gone"])
    assert answers.listed == {
        "standup": {
            "PA_a": ListedParticipant("PA_a", "alice", "STANDARD", T0 * 1000 + 250, '{"account_id": "a"}'),
            "PA_s": ListedParticipant("PA_s", "+1555", "SIP", (T0 + 7) * 1000),
            "PA_n": ListedParticipant("PA_n", "new", "UNKNOWN_9", 0, "", '{"kilo.account_id":"acct_x"}'),
            "PA_i": ListedParticipant("PA_i", "rtmp", "INGRESS", T0 * 1000),
        }
    }  # the gone room lists nobody: only ``present`` says it is gone
    assert answers.present == {"standup": {"PA_a", "PA_s", "PA_n", "PA_i"}, "gone": None}


def test_given_the_roomservice_with_a_wrong_secret_then_rooms_are_unanswered_never_gone(
    livekit_server: FakeLiveKit,
) -> None:
    from kilo_rate_usage.adapters import LiveKitRoomDirectory  # noqa: PLC0415

    livekit_server.rooms["standup"] = [("PA_a", "alice")]
    wrong = [("APIkeyCurrent", "not-the-secret-0123456789abcdef-0123456789")]
    answers = LiveKitRoomDirectory(livekit_server.url, lambda: wrong).participants(["standup", "gone"])
    assert answers.present == {}  # an auth error is never "room gone": that would close live sessions
    assert set(answers.unanswered) == {"standup", "gone"}
    assert "401" in answers.unanswered["standup"] or "unauth" in answers.unanswered["standup"].lower()


def test_given_roomservice_unreachable_or_unconfigured_then_every_room_is_unanswered() -> None:
    from kilo_rate_usage.adapters import LiveKitRoomDirectory  # noqa: PLC0415

    keys = [("APIkeyCurrent", LIVEKIT_KEYS["APIkeyCurrent"])]
    unreachable = LiveKitRoomDirectory(closed_port_url(), lambda: keys, request_timeout=2.0).participants(["a", "b"])
    assert (unreachable.present, sorted(unreachable.unanswered)) == ({}, ["a", "b"])
    unconfigured = LiveKitRoomDirectory("", lambda: keys).participants(["a"])
    assert unconfigured.unanswered == {"a": "RoomService is not configured (URL or keys)"}


def _sweep(event_time: int, context: LambdaContext, capsys: pytest.CaptureFixture[str]) -> tuple[dict[str, Any], int]:
    """One scheduled run at ``event_time``; returns its result and the SessionsCapped it emitted (EMF on stdout)."""
    from kilo_rate_usage import sweeper_handler  # noqa: PLC0415

    capsys.readouterr()
    stamp = datetime.fromtimestamp(event_time, tz=UTC).isoformat().replace("+00:00", "Z")
    result = sweeper_handler.lambda_handler({"scheduled_time": stamp}, context)
    capped = 0
    for line in capsys.readouterr().out.splitlines():
        if line.startswith("{") and '"_aws"' in line:
            capped += int(sum(json.loads(line).get("SessionsCapped", [])))
    return result, capped


def _sessions(stack: Stack) -> dict[str, dict[str, Any]]:
    return {
        item["sk"]["S"].removeprefix("SESSION#"): item
        for item in stack.table_items("UsageTable")
        if item["sk"]["S"].startswith("SESSION#")
    }


def test_given_open_sessions_then_gone_ones_are_swept_confirmed_ones_stay_open_and_unvouched_ones_are_capped(
    stack: Stack,
    lambda_context: LambdaContext,
    livekit_server: FakeLiveKit,
    monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
) -> None:
    from kilo_billing.catalog import default_catalog  # noqa: PLC0415
    from kilo_billing.meters import Meter  # noqa: PLC0415
    from kilo_billing.periods import Period  # noqa: PLC0415
    from kilo_rate_usage import dependencies, settings  # noqa: PLC0415
    from kilo_rate_usage.queries import month_to_date  # noqa: PLC0415

    monkeypatch.setenv("LIVEKIT_URL", livekit_server.url)
    settings.settings.cache_clear()
    dependencies.sweeper.cache_clear()
    agents = lk.Room("RM_agents", "agent-space", account_id="acct_agent", created_at=T0 - 30 * HOUR)
    standup = lk.Room("RM_standup", "standup", account_id="acct_sweep", created_at=T0 - 1200)
    agent = lk.Participant("PA_agent", "kilo-agent", (T0 - 30 * HOUR) * 1000, kind="AGENT")  # live for 30 h
    carol = lk.Participant("PA_carol", "carol", (T0 - 1200) * 1000)
    bob = lk.Participant("PA_bob", "bob", (T0 - 900) * 1000)  # his participant_left was lost
    deliver_webhook(lk.participant_joined(agents, agent), lambda_context)
    deliver_webhook(lk.participant_joined(standup, carol), lambda_context)
    deliver_webhook(lk.participant_joined(standup, bob), lambda_context)
    runner = Lambda(stack)
    runner.run(runner.poll(), lambda_context)

    repo = dependencies.rating().repo
    book = default_catalog().for_period(Period.parse("2026-11"))
    before = month_to_date(repo, "acct_sweep", "2026-11", T0 * 1000, book)
    # open sessions count as if they ended at T0: carol 1200 s -> 20, bob 900 s -> 15 = 35 audio
    assert (before.open_sessions, before.rated.used[Meter.AUDIO]) == (2, 35)

    # run 0, five minutes before T0, RoomService up: everybody is listed and stays open - the agent is 30 h old, past
    # the 24 h limit, and quiet (no room event for over an hour): each room's listing is recorded (nothing per session)
    livekit_server.rooms["agent-space"] = [("PA_agent", "kilo-agent")]
    livekit_server.rooms["standup"] = [("PA_carol", "carol"), ("PA_bob", "bob")]
    result, capped = _sweep(T0 - 300, lambda_context, capsys)
    assert (result["swept"], result["capped"], result["listed"], capped) == (0, 0, 3, 0)
    listed = {item["pk"]["S"]: (sorted(item["participants"]["SS"]), int(item["expires_at"]["N"]))
              for item in stack.table_items("UsageTable") if item["sk"]["S"] == "LISTED"}  # fmt: skip
    kept = T0 - 300 + 31 * 24 * HOUR  # the answer + the default room_listing_ttl_days (31)
    assert listed == {"ROOM#RM_agents": (["PA_agent"], kept), "ROOM#RM_standup": (["PA_bob", "PA_carol"], kept)}
    assert not [item for item in stack.table_items("UsageTable") if item["sk"]["S"].startswith("CONFIRMED#")]

    # run 1 at T0: bob is no longer listed - his participant_left was lost - and the previous sweep listed him 5 min
    # before: swept at T0, the sweep that noticed; the agent and carol are listed and stay open
    livekit_server.rooms["standup"] = [("PA_carol", "carol")]
    result, capped = _sweep(T0, lambda_context, capsys)
    assert (result["swept"], result["capped"], result["listed"], capped) == (1, 0, 2, 0)

    # run 2, RoomService unreachable, 23 h later: nobody has gone unvouched for 24 h yet
    monkeypatch.setenv("LIVEKIT_URL", closed_port_url())
    settings.settings.cache_clear()
    dependencies.sweeper.cache_clear()
    result, capped = _sweep(T0 + 23 * HOUR, lambda_context, capsys)
    assert (result["open"], result["closed"], result["unanswered_rooms"]) == (3, 0, 2)  # bob's close not rated yet

    runner.run(runner.poll(), lambda_context)  # rating rebuilds the standup room with bob's swept close
    # run 3, still unreachable, 24 h 10 min after run 1: the agent and carol were last listed at T0 (run 1's
    # listings; carol's room's last event, bob's swept close, is at T0 too): both capped at T0
    result, capped = _sweep(T0 + 24 * HOUR + 600, lambda_context, capsys)
    assert (result["open"], result["capped"], capped) == (2, 2, 2)
    runner.run(runner.poll(), lambda_context)

    sessions = _sessions(stack)
    assert {sid: item["closed_by"]["S"] for sid, item in sessions.items()} == {
        "PA_agent": "capped",
        "PA_carol": "capped",
        "PA_bob": "swept",
    }
    # agent: T0 - 30 h .. T0 (its confirmation) = 108000 s -> 1800 audio, the 30 h LiveKit vouched for
    assert aggregate(stack, "acct_agent") == {"audio": 1800}
    # bob: T0 - 900 .. T0 (swept) = 900 s -> 15; carol: T0 - 1200 .. T0 (capped) = 1200 s -> 20; 35 audio
    assert aggregate(stack, "acct_sweep") == {"audio": 35}
    assert int(sessions["PA_carol"]["end_ms"]["N"]) == T0 * 1000

    # carol's real participant_left arrives after all: it wins over the cap, her minutes come back
    deliver_webhook(lk.participant_left(standup, carol, T0 + 24 * HOUR + 1200), lambda_context)
    runner.run(runner.poll(), lambda_context)
    assert _sessions(stack)["PA_carol"]["closed_by"] == {"S": "left"}
    # carol: T0 - 1200 .. T0 + 86400 + 1200 = 88800 s -> 1480; with bob's 15: 1495 audio
    assert aggregate(stack, "acct_sweep") == {"audio": 1495}
    # nothing left open: the next sweep has nothing to do
    result, capped = _sweep(T0 + 25 * HOUR, lambda_context, capsys)
    assert (result["open"], result["closed"], capped) == (0, 0, 0)


def test_given_the_template_then_a_cap_alarms_and_every_time_budget_fits_inside_its_function() -> None:
    from kilo_rate_usage.settings import RatingSettings  # noqa: PLC0415

    template = Template(parameters={"Stage": "test"})
    alarms = [
        alarm["Properties"]
        for alarm in template.of_type("AWS::CloudWatch::Alarm").values()
        if alarm["Properties"].get("MetricName") == "SessionsCapped"
    ]
    assert len(alarms) == 1
    assert alarms[0]["Namespace"] == "KiloBilling"
    assert alarms[0]["Dimensions"] == [{"Name": "service", "Value": "rate-usage-sweeper"}]
    assert alarms[0]["Threshold"] == 1
    assert alarms[0]["AlarmActions"]

    config = RatingSettings(usage_table_name="u", events_table_name="e")
    call = config.call_budget.worst_case_seconds  # one AWS call, retries included: 3 x (1 + 3) + (1 + 2) = 15 s
    assert call == 15
    timeouts = {
        name: template.resources[name]["Properties"]["Timeout"] for name in ("RateUsageFunction", "SweeperFunction")
    }
    assert call < timeouts["RateUsageFunction"]  # a failing call ends inside the handler, which logs and counts it
    # the sweeper: the secret, RoomService's whole budget, then a failing AWS call, all inside its timeout
    assert call + config.roomservice_budget_seconds + call < timeouts["SweeperFunction"]


def test_given_a_roomservice_outage_when_the_room_is_then_gone_then_the_session_is_billed_to_its_last_listing(
    stack: Stack,
    lambda_context: LambdaContext,
    livekit_server: FakeLiveKit,
    monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
) -> None:
    from kilo_rate_usage import dependencies, settings  # noqa: PLC0415

    def roomservice(url: str) -> None:
        monkeypatch.setenv("LIVEKIT_URL", url)
        settings.settings.cache_clear()
        dependencies.sweeper.cache_clear()

    room = lk.Room("RM_outage", "outage", account_id="acct_outage", created_at=T0 - 600)
    dave = lk.Participant("PA_dave", "dave", (T0 - 600) * 1000)
    deliver_webhook(lk.participant_joined(room, dave), lambda_context)
    runner = Lambda(stack)
    runner.run(runner.poll(), lambda_context)

    roomservice(livekit_server.url)
    livekit_server.rooms["outage"] = [("PA_dave", "dave")]
    result, _ = _sweep(T0, lambda_context, capsys)  # lists dave: recorded on the room's listing
    assert (result["open"], result["closed"]) == (1, 0)

    roomservice(closed_port_url())  # RoomService unreachable for 20 h (under the 24 h limit): nothing concluded
    result, _ = _sweep(T0 + 10 * HOUR, lambda_context, capsys)
    assert (result["closed"], result["unanswered_rooms"]) == (0, 1)

    roomservice(livekit_server.url)  # back, and the room is gone: dave's participant_left was lost at some point
    del livekit_server.rooms["outage"]
    result, capped = _sweep(T0 + 20 * HOUR, lambda_context, capsys)
    assert (result["swept"], capped) == (1, 0)
    runner.run(runner.poll(), lambda_context)

    # nobody vouched for dave after T0 (the last answer listing him): T0 - 600 .. T0 = 600 s -> 10 audio
    # (closed at the sweep that noticed it would be 72600 s -> 1210 audio, 19 h 50 min nobody could prove)
    assert int(_sessions(stack)["PA_dave"]["end_ms"]["N"]) == T0 * 1000
    assert aggregate(stack, "acct_outage") == {"audio": 10}


def test_given_a_reconnect_whose_old_left_is_lost_when_swept_and_the_room_finishes_then_the_old_connection_stays_swept(
    stack: Stack,
    lambda_context: LambdaContext,
    livekit_server: FakeLiveKit,
    monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
) -> None:
    from kilo_rate_usage import dependencies, settings  # noqa: PLC0415

    monkeypatch.setenv("LIVEKIT_URL", livekit_server.url)
    settings.settings.cache_clear()
    dependencies.sweeper.cache_clear()
    room = lk.Room("RM_reconnect", "reconnect", account_id="acct_reconnect", created_at=T0 - 600)
    old = lk.Participant("PA_old", "alice", (T0 - 600) * 1000)
    new = lk.Participant("PA_new", "alice", (T0 - 540) * 1000)  # she reconnected; PA_old's participant_left was lost
    deliver_webhook(lk.room_started(room, T0 - 600), lambda_context)
    deliver_webhook(lk.participant_joined(room, old), lambda_context)
    deliver_webhook(lk.participant_joined(room, new), lambda_context)
    runner = Lambda(stack)
    runner.run(runner.poll(), lambda_context)

    livekit_server.rooms["reconnect"] = [("PA_new", "alice")]  # RoomService lists the new connection only
    result, capped = _sweep(T0 - 300, lambda_context, capsys)
    assert (result["swept"], capped) == (1, 0)
    runner.run(runner.poll(), lambda_context)
    deliver_webhook(lk.participant_left(room, new, T0 + 2 * HOUR), lambda_context)
    runner.run(runner.poll(), lambda_context)
    deliver_webhook(lk.room_finished(room, T0 + 2 * HOUR + 1), lambda_context)
    runner.run(runner.poll(), lambda_context)

    sessions = _sessions(stack)
    assert {sid: item["closed_by"]["S"] for sid, item in sessions.items()} == {"PA_old": "swept", "PA_new": "left"}
    # PA_old: T0 - 600 .. the sweep T0 - 300 = 300 s -> 5 (re-closed at room_finished it was 7801 s -> 131);
    # PA_new: T0 - 540 .. T0 + 7200 = 7740 s -> 129; 134 audio
    assert int(sessions["PA_old"]["end_ms"]["N"]) == (T0 - 300) * 1000
    assert aggregate(stack, "acct_reconnect") == {"audio": 134}


def _header_unusable(stack: Stack, room_sid: str, how: str) -> None:
    """Make the room's stored header what the sweeper finds in these cases: ``format 6`` - a header written before
    the deploy of state format 7 (every room's, until its next event rebuilds it); ``too large`` - the version-only
    item of a state too large to keep (D42)."""
    import zlib  # noqa: PLC0415

    client = stack.clients["dynamodb"]
    table = stack.template.physical_name("UsageTable")
    key = {"pk": {"S": f"ROOM#{room_sid}"}, "sk": {"S": "STATE"}}
    item = client.get_item(TableName=table, Key=key)["Item"]
    if how == "format 6":
        data = json.loads(zlib.decompress(item["state_zlib"]["B"]))
        assert data["format"] == 7  # the format this test was written against: a format 6 header is unusable
        data["format"] = 6
        item["state_zlib"] = {"B": zlib.compress(json.dumps(data).encode())}
    else:
        del item["state_zlib"]
    client.put_item(TableName=table, Item=item)


@pytest.mark.parametrize("case", ["format 6", "too large", "rating behind"])
def test_given_no_readable_last_event_and_no_listing_when_swept_then_the_close_is_not_dated_back_to_the_start(
    case: str,
    stack: Stack,
    lambda_context: LambdaContext,
    livekit_server: FakeLiveKit,
    monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
) -> None:
    """The sweeper's first sweep of a room (no listing from a previous sweep) whose header gives no last event: just
    after the deploy of state format 7 (every header unusable), a state too large to keep, or rating behind the
    events table (the header readable, bob's join stored but not rated yet). Alice's participant_left was lost; bob
    joined 2 minutes before the sweep - the room's events vouch for the room until then. The close must be where a
    readable, up-to-date header puts it: at the sweep, not at alice's start (docs/decisions.md D197)."""
    from kilo_rate_usage import dependencies, settings  # noqa: PLC0415

    monkeypatch.setenv("LIVEKIT_URL", livekit_server.url)
    settings.settings.cache_clear()
    dependencies.sweeper.cache_clear()
    room = lk.Room("RM_deploy", "deploy", account_id="acct_deploy", created_at=T0 - HOUR)
    alice = lk.Participant("PA_alice", "alice", (T0 - HOUR) * 1000)
    bob = lk.Participant("PA_bob", "bob", (T0 - 120) * 1000)
    runner = Lambda(stack)
    deliver_webhook(lk.participant_joined(room, alice), lambda_context)
    runner.run(runner.poll(), lambda_context)
    deliver_webhook(lk.participant_joined(room, bob), lambda_context)
    if case != "rating behind":
        runner.run(runner.poll(), lambda_context)
        _header_unusable(stack, "RM_deploy", case)

    livekit_server.rooms["deploy"] = [("PA_bob", "bob")]  # alice is gone; her participant_left was lost
    result, capped = _sweep(T0, lambda_context, capsys)
    assert (result["swept"], capped) == (1, 0)
    runner.run(runner.poll(), lambda_context)

    sessions = _sessions(stack)
    assert {sid: item.get("closed_by", {}).get("S") for sid, item in sessions.items()} == {
        "PA_alice": "swept",
        "PA_bob": None,
    }
    # alice: T0 - 3600 .. the sweep T0 (bob's join at T0 - 120 vouched for the room, 120 s <= one sweep gap) =
    # 3600 s -> 60 audio; bob is still open. Before: closed at her start, T0 - 3600 .. T0 - 3600 -> 0 minutes.
    assert int(sessions["PA_alice"]["end_ms"]["N"]) == T0 * 1000
    assert aggregate(stack, "acct_deploy") == {"audio": 60}


@pytest.mark.parametrize("case", ["format 6", "too large"])
def test_given_an_unreadable_room_state_then_month_to_date_counts_an_open_session_s_video_from_the_room_s_events(
    case: str, stack: Stack, lambda_context: LambdaContext
) -> None:
    """Month to date (and so the budget and hard-limit checks, D71) takes an open session's video from its room's
    state (D44). An unreadable state (just after the format-7 deploy, or too large to keep) gave no video: the camera's
    minutes counted as audio. Now the room's events give the coverage (D198)."""
    from kilo_billing.catalog import default_catalog  # noqa: PLC0415
    from kilo_billing.meters import Meter  # noqa: PLC0415
    from kilo_billing.periods import Period  # noqa: PLC0415
    from kilo_rate_usage import dependencies  # noqa: PLC0415
    from kilo_rate_usage.queries import month_to_date  # noqa: PLC0415

    room = lk.Room("RM_mtd", "mtd", account_id="acct_mtd", created_at=T0 - HOUR)
    alice = lk.Participant("PA_alice", "alice", (T0 - HOUR) * 1000)
    deliver_webhook(lk.participant_joined(room, alice), lambda_context)
    deliver_webhook(lk.track_published(room, alice, "TR_cam", T0 - 1800, video=True), lambda_context)
    runner = Lambda(stack)
    runner.run(runner.poll(), lambda_context)
    _header_unusable(stack, "RM_mtd", case)

    repo = dependencies.rating().repo
    book = default_catalog().for_period(Period.parse("2026-11"))
    found = month_to_date(repo, "acct_mtd", "2026-11", T0 * 1000, book)
    # alice, open, as if she left at T0: T0 - 3600 .. T0, her camera on from T0 - 1800 -> 30 video + 30 audio
    # (before: no video from an unreadable state, 60 audio)
    assert (found.open_sessions, found.rated.used[Meter.VIDEO], found.rated.used[Meter.AUDIO]) == (1, 30, 30)


def test_given_a_sweep_failing_after_it_gave_a_join_less_participant_up_then_the_give_up_is_counted_once(
    livekit_server: FakeLiveKit,
    stack: Stack,
    lambda_context: LambdaContext,
    capsys: pytest.CaptureFixture[str],
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """D395: Dan's join was lost (only his camera's track_published is rated) and RoomService says his room is gone,
    its room_finished lost too: the sweep gives him up and forgets the room's mark - then a later step of the same
    sweep fails (reading the swept rooms' marks to drop quiet rooms), and Lambda retries. The retry finds no mark, so
    the give-up must have been logged and counted by the failed run: SweepJoinsAbandoned 1 over both runs, a warning
    naming Dan once (before: 0 - the failed run counted nothing, the retry gave nobody up)."""
    from kilo_rate_usage import sweeper_handler  # noqa: PLC0415
    from kilo_rate_usage.adapters import DynamoUsageRepository  # noqa: PLC0415

    monkeypatch.setenv("LIVEKIT_URL", livekit_server.url)
    room = lk.Room("RM_gone", "goneroom", account_id="acct_sweep", created_at=T0 - 1200)
    _dan_join_less(stack, lambda_context, room)  # goneroom is not in livekit_server.rooms: "no such room"

    def unavailable(self: DynamoUsageRepository) -> None:
        raise RuntimeError("DynamoDB unavailable")

    warnings = _recorded_warnings(monkeypatch)
    capsys.readouterr()
    with monkeypatch.context() as failing:
        failing.setattr(DynamoUsageRepository, "swept_rooms", unavailable)
        with pytest.raises(RuntimeError, match="DynamoDB unavailable"):
            sweeper_handler.lambda_handler(_scheduled(T0 + 600), lambda_context)
    abandoned, _ = _given_up(capsys, warnings, "PA_dan")
    retried = sweeper_handler.lambda_handler(_scheduled(T0 + 600), lambda_context)
    abandoned_again, warned = _given_up(capsys, warnings, "PA_dan")
    assert (abandoned + abandoned_again, warned, retried["joins_abandoned"]) == (1, 1, 0)
    assert not [i for i in stack.table_items("UsageTable") if i["pk"]["S"] == "JOINLESS_ROOMS"]


def _given_up(
    capsys: pytest.CaptureFixture[str], warnings: list[dict[str, object]], participant: str
) -> tuple[int, int]:
    """SweepJoinsAbandoned over the EMF lines printed since the last read, and the warnings naming ``participant``."""
    counted = sum(
        int(sum(json.loads(line).get("SweepJoinsAbandoned", [])))
        for line in capsys.readouterr().out.splitlines()
        if line.startswith("{") and '"_aws"' in line
    )
    return counted, len([extra for extra in warnings if extra.get("participant_sid") == participant])


def _recorded_warnings(monkeypatch: pytest.MonkeyPatch) -> list[dict[str, object]]:
    """The sweeper handler's warnings' ``extra``, recorded at the call: Powertools' logger keeps the stream (and
    handlers) it was made with, so an earlier test of the same worker can leave its lines out of caplog and capsys."""
    from kilo_rate_usage import sweeper_handler  # noqa: PLC0415

    warnings: list[dict[str, object]] = []
    real_warning = sweeper_handler.logger.warning

    def recorded(msg: object, *args: object, **kwargs: Any) -> None:
        warnings.append(dict(kwargs.get("extra") or {}))
        real_warning(msg, *args, **kwargs)

    monkeypatch.setattr(sweeper_handler.logger, "warning", recorded)
    return warnings


def _scheduled(at_s: int) -> dict[str, str]:
    return {"scheduled_time": datetime.fromtimestamp(at_s, tz=UTC).isoformat().replace("+00:00", "Z")}


def _dan_join_less(stack: Stack, lambda_context: LambdaContext, room: lk.Room) -> lk.Participant:
    """Dan joined at T0 - 600 s, his participant_joined lost: only his camera's track_published (T0 - 500) is rated -
    the room is marked join-less."""
    dan = lk.Participant("PA_dan", "dan", (T0 - 600) * 1000)
    deliver_webhook(lk.room_started(room, T0 - 1200), lambda_context)
    deliver_webhook(lk.track_published(room, dan, "TR_dan_cam", T0 - 500, video=True), lambda_context)
    runner = Lambda(stack)
    runner.run(runner.poll(), lambda_context)
    marks = [i["sk"]["S"] for i in stack.table_items("UsageTable") if i["pk"]["S"] == "JOINLESS_ROOMS"]
    assert marks == [f"ROOM#{room.sid}"]
    return dan


def test_given_a_synthetic_join_not_yet_rated_when_its_room_is_gone_then_nobody_is_given_up_and_it_is_billed(
    livekit_server: FakeLiveKit,
    stack: Stack,
    lambda_context: LambdaContext,
    capsys: pytest.CaptureFixture[str],
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """D411: the sweep at T0+300 lists Dan (STANDARD, joined T0-600) and writes his synthetic join; rating lags (the
    join stored, not rated) and at the next sweep, T0+600, RoomService says the room is gone, its room_finished lost.
    Dan is not lost: his join is stored and rating folds it - so nobody is given up (before: joins_abandoned 1,
    SweepJoinsAbandoned 1 and a warning naming Dan, a false alarm). Rating then folds the join (Dan open from T0-600),
    and the sweep at T0+900 sweeps him at the last moment anything vouched for him: his join's record, T0+300 (600 s
    before the sweep, more than the 450 s vouched gap). Dan T0-600 .. T0+300 = 900 s -> 15 min; camera T0-500 ..
    T0+300 = 800 s -> 14 video (ceil 13.3), 1 audio."""
    from kilo_rate_usage import sweeper_handler  # noqa: PLC0415

    monkeypatch.setenv("LIVEKIT_URL", livekit_server.url)
    room = lk.Room("RM_lag", "lagroom", account_id="acct_sweep", created_at=T0 - 1200)
    _dan_join_less(stack, lambda_context, room)
    livekit_server.rooms["lagroom"] = [("PA_dan", "dan")]
    livekit_server.infos["PA_dan"] = {"joined_at_ms": (T0 - 600) * 1000}
    warnings = _recorded_warnings(monkeypatch)
    assert sweeper_handler.lambda_handler(_scheduled(T0 + 300), lambda_context)["joined"] == 1
    del livekit_server.rooms["lagroom"]  # the room ends, its room_finished lost; rating has not rated the join yet
    capsys.readouterr()
    gone = sweeper_handler.lambda_handler(_scheduled(T0 + 600), lambda_context)
    assert (gone["joins_abandoned"], *_given_up(capsys, warnings, "PA_dan")) == (0, 0, 0)

    runner = Lambda(stack)
    runner.run(runner.poll(), lambda_context)  # rating catches up: the join, then nothing more of the room
    assert _sessions(stack)["PA_dan"].get("end_ms") is None
    swept = sweeper_handler.lambda_handler(_scheduled(T0 + 900), lambda_context)
    runner.run(runner.poll(), lambda_context)
    assert (swept["swept"], swept["joins_abandoned"], *_given_up(capsys, warnings, "PA_dan")) == (1, 0, 0, 0)
    dan = _sessions(stack)["PA_dan"]
    assert (int(dan["start_ms"]["N"]), int(dan["end_ms"]["N"]), dan["closed_by"]["S"]) == (
        (T0 - 600) * 1000,
        (T0 + 300) * 1000,
        "swept",
    )
    assert aggregate(stack, "acct_sweep") == {"video": 14, "audio": 1}


def test_given_two_sweeps_overlapping_then_a_join_less_participant_is_given_up_once(
    livekit_server: FakeLiveKit,
    stack: Stack,
    lambda_context: LambdaContext,
    capsys: pytest.CaptureFixture[str],
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """D412: Dan's join lost, his room gone with its room_finished lost (as in the D395 test). The run scheduled at
    T0+600 is slow: while it has read the room's mark and not yet given Dan up, the run of T0+900 starts (a retry
    beside a scheduled run is the same) and does the whole sweep - it reads the same mark. Each sweep gives Dan up only
    by claiming the give-up (a conditional put): the T0+900 run claims and says it, the T0+600 run finds it claimed
    and says nothing. SweepJoinsAbandoned 1 over both runs and one warning (before: 2 and 2); no mark left."""
    from kilo_rate_usage import sweeper_handler  # noqa: PLC0415
    from kilo_rate_usage.adapters import DynamoUsageRepository  # noqa: PLC0415

    monkeypatch.setenv("LIVEKIT_URL", livekit_server.url)
    room = lk.Room("RM_gone", "goneroom", account_id="acct_sweep", created_at=T0 - 1200)
    _dan_join_less(stack, lambda_context, room)  # goneroom is not in livekit_server.rooms: "no such room"
    warnings = _recorded_warnings(monkeypatch)
    real_listings = DynamoUsageRepository.room_listings
    overlapping: list[dict[str, Any]] = []
    started: list[int] = []

    def listings_then_the_next_run(self: DynamoUsageRepository, room_sids: Any) -> Any:
        # read after the marks and before any give-up: the next run sweeps whole meanwhile (once: not within itself)
        if not started:
            started.append(T0 + 900)
            overlapping.append(sweeper_handler.lambda_handler(_scheduled(T0 + 900), lambda_context))
        return real_listings(self, room_sids)

    monkeypatch.setattr(DynamoUsageRepository, "room_listings", listings_then_the_next_run)
    capsys.readouterr()
    slow = sweeper_handler.lambda_handler(_scheduled(T0 + 600), lambda_context)
    [fast] = overlapping
    assert (fast["joins_abandoned"], slow["joins_abandoned"]) == (1, 0)
    assert _given_up(capsys, warnings, "PA_dan") == (1, 1)
    assert not [i for i in stack.table_items("UsageTable") if i["pk"]["S"] == "JOINLESS_ROOMS"]


def test_given_a_sweep_killed_after_it_said_a_give_up_then_the_give_up_was_counted_at_once(
    livekit_server: FakeLiveKit,
    stack: Stack,
    lambda_context: LambdaContext,
    capsys: pytest.CaptureFixture[str],
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """D421: the run at T0+600 gives Dan up (his join lost, his room gone with its room_finished) and is killed
    right after saying him - before recording it said him (a timeout: Lambda ends the process, the handler's end never
    comes, so nothing buffered for it is flushed). SweepJoinsAbandoned 1 and the warning were written as he was said
    (before: the count waited for the handler's end, lost with it - a warning and no alarm). The claim, unsaid, is
    taken over by the run at T0+1200 (600 s on, past a run's 360 s life), which says Dan again: at least once."""
    from kilo_rate_usage import sweeper_handler  # noqa: PLC0415
    from kilo_rate_usage.adapters import DynamoUsageRepository  # noqa: PLC0415

    monkeypatch.setenv("LIVEKIT_URL", livekit_server.url)
    room = lk.Room("RM_gone", "goneroom", account_id="acct_sweep", created_at=T0 - 1200)
    _dan_join_less(stack, lambda_context, room)  # goneroom is not in livekit_server.rooms: "no such room"

    def killed(self: DynamoUsageRepository, *args: object) -> None:
        raise RuntimeError("Task timed out after 120.00 seconds")

    warnings = _recorded_warnings(monkeypatch)
    capsys.readouterr()
    provider = sweeper_handler.metrics.provider
    with monkeypatch.context() as dying:
        dying.setattr(DynamoUsageRepository, "say_give_up", killed)
        dying.setattr(provider, "flush_metrics", lambda *args, **kwargs: None)  # a killed process flushes nothing
        with pytest.raises(RuntimeError, match="timed out"):
            sweeper_handler.lambda_handler(_scheduled(T0 + 600), lambda_context)
    provider.clear_metrics()  # what the killed process buffered dies with it
    assert _given_up(capsys, warnings, "PA_dan") == (1, 1)
    assert [i for i in stack.table_items("UsageTable") if i["pk"]["S"] == "JOINLESS_ROOMS"]  # kept: not said yet
    again = sweeper_handler.lambda_handler(_scheduled(T0 + 1200), lambda_context)
    # counted once more, and the warnings naming Dan (recorded over both runs) are two: said again, not lost
    assert (again["joins_abandoned"], *_given_up(capsys, warnings, "PA_dan")) == (1, 1, 2)
    assert not [i for i in stack.table_items("UsageTable") if i["pk"]["S"] == "JOINLESS_ROOMS"]
