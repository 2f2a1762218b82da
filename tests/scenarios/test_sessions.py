"""Session scenarios: LiveKit webhook sequences, in the exact JSON LiveKit sends (kilo_dev.livekit_events builders run
through the real ingest parser), rebuilt into participant sessions and billable minutes - and, for a few stories, rated
end to end through ``rate_batch`` with the in-memory repository.

Every expected number is worked out by hand in the comment next to it (billing-policy.md: per connection, billable
minutes = ceil(connected s / 60), video minutes = min(total, ceil(video s / 60)), audio = the rest; a second is video
while any video track is published in the room; a connection crossing a month boundary is split, each part rounded).
Times are epoch seconds around 2026-11-10.
"""

from __future__ import annotations

import json
import random
from collections.abc import Iterable, Sequence
from dataclasses import replace
from typing import Any

import pytest

from kilo_billing.catalog import default_catalog
from kilo_billing.livekit_events import LiveKitEventRecord
from kilo_billing.usage_events import UsageEventRecord
from kilo_dev import livekit_events as lk
from kilo_dev.livekit_events import Participant, Room
from kilo_rate_usage.logic import rate_batch
from kilo_rate_usage.model import (
    CAPPED,
    SWEPT,
    AttributionRule,
    BatchOutcome,
    Billing,
    ClosedBy,
    RatingConfig,
    Session,
    StoredSession,
    SweepPolicy,
)
from kilo_rate_usage.sessions import rebuild_room
from kilo_rate_usage.sweeper import close_event, run_sweep
from tests.fakes import InMemoryUsageRepository, RecordingPublisher, StaticRoomDirectory, registered

T0 = 1_794_304_800  # 2026-11-10T10:00:00Z
NOV_30_2350 = 1_796_082_600  # 2026-11-30T23:50:00Z
DEC_1_0000 = 1_796_083_200  # 2026-12-01T00:00:00Z
DAY = 24 * 3600
RULE = AttributionRule()
CONFIG = RatingConfig(AttributionRule(), default_catalog().for_period)
# the accounts the rooms name, registered (on the free default) as the app does before it creates their rooms:
# minutes of an id nobody registered go to the unattributed bucket (D276)
ACCOUNTS = (
    "acct-a",
    "acct-abort",
    "acct-agent",
    "acct-app",
    "acct-attr",
    "acct-audio",
    "acct-b",
    "acct-busy",
    "acct-cap",
    "acct-ct",
    "acct-end",
    "acct-first",
    "acct-handover",
    "acct-late",
    "acct-late-end",
    "acct-long",
    "acct-lost",
    "acct-meta",
    "acct-night",
    "acct-nojoin",
    "acct-one",
    "acct-probe",
    "acct-re",
    "acct-rec",
    "acct-reconnect",
    "acct-reg",
    "acct-room",
    "acct-sb",
    "acct-second",
    "acct-sf",
    "acct-share",
    "acct-sip",
    "acct-storm",
    "acct-swept",
    "acct-talk",
    "acct-two",
    "acct-video",
)
NOW_MS = (T0 + 7 * DAY) * 1000
EXPIRES = 2_000_000_000  # the sweeper's closes' TTL (not looked at here)


# --- helpers (no billing arithmetic here: they only build inputs and read outputs) ----------------------------------


def records(*bodies: bytes) -> list[LiveKitEventRecord]:
    """Bodies exactly as LiveKit sends them, through the real ingest parser."""
    return [lk.to_record(body) for body in bodies]


def sweeper_close(
    events: list[LiveKitEventRecord], sid: str, event_type: str, at: int, seen: int | None = None
) -> LiveKitEventRecord:
    """The sweeper's own close (``kilo_rate_usage.sweeper.close_event``) of the open session ``sid`` at ``at``, written
    by the sweep at ``seen`` (default ``at``: the sweep's own moment; later: a close dated back to the last moment
    something vouched for the session, D125)."""
    session = rebuild(events)[sid]
    assert session.is_open
    return close_event(session, event_type, at, (at if seen is None else seen) * 1000)


def with_participant_metadata(body: bytes, metadata: str) -> bytes:
    """The same webhook with ``participant.metadata`` set (the app may put the account there)."""
    event = json.loads(body)
    event["participant"]["metadata"] = metadata
    return json.dumps(event, separators=(",", ":")).encode()


def rebuild(events: Iterable[LiveKitEventRecord]) -> dict[str, Session]:
    return {s.participant_sid: s for s in rebuild_room(list(events), RULE)}


def fields(session: Session) -> dict[str, Any]:
    return {
        "account": session.account,
        "start_ms": session.start_ms,
        "end_ms": session.end_ms,
        "closed_by": session.closed_by,
        "parts": tuple((part.period, part.video, part.audio) for part in session.parts),
        "aborted": session.aborted,
    }


def expected(
    account: str,
    start_ms: int,
    end_ms: int | None,
    closed_by: ClosedBy | None,
    parts: tuple[tuple[str, int, int], ...],
    aborted: bool = False,
) -> dict[str, Any]:
    return {
        "account": account,
        "start_ms": start_ms,
        "end_ms": end_ms,
        "closed_by": closed_by,
        "parts": parts,
        "aborted": aborted,
    }


def deliver(
    repo: InMemoryUsageRepository,
    publisher: RecordingPublisher,
    livekit: Sequence[LiveKitEventRecord] = (),
    usage: Sequence[UsageEventRecord] = (),
    config: RatingConfig = CONFIG,
) -> BatchOutcome:
    """What the stream does: ingest stored the events first, then rating gets the batch."""
    for record in [*livekit, *usage]:
        repo.store_event(record)
    return rate_batch(list(livekit), list(usage), repo, publisher, config, NOW_MS)


def usage_record(key: str, account: str, meter: str, quantity: int, at_s: int) -> UsageEventRecord:
    return UsageEventRecord(
        client_id="kilo-app",
        idempotency_key=key,
        account_id=account,
        meter=meter,
        quantity=quantity,
        occurred_at_ms=at_s * 1000,
        payload_hash=f"hash-{key}",
        received_at_ms=at_s * 1000 + 50,
    )


# --- stories (each builds fresh events: event ids are unique per call) -----------------------------------------------


def audio_only_call() -> tuple[Room, Participant, Participant, list[LiveKitEventRecord]]:
    room = Room("RM_audio", "audio-call", account_id="acct-audio", created_at=T0)
    alice = Participant("PA_alice", "alice", T0 * 1000 + 250)
    bob = Participant("PA_bob", "bob", (T0 + 30) * 1000)
    events = records(
        lk.room_started(room, T0),
        lk.participant_joined(room, alice),
        lk.track_published(room, alice, "TR_alice_mic", T0 + 1, video=False),
        lk.participant_joined(room, bob),
        lk.track_published(room, bob, "TR_bob_mic", T0 + 31, video=False),
        lk.participant_left(room, alice, T0 + 1500),
        lk.participant_left(room, bob, T0 + 1531),
        lk.room_finished(room, T0 + 1551),
    )
    return room, alice, bob, events


def video_call_with_late_camera() -> tuple[Room, Participant, Participant, list[LiveKitEventRecord]]:
    room = Room("RM_video", "video-call", account_id="acct-video", created_at=T0)
    alice = Participant("PA_alice_v", "alice", T0 * 1000)
    bob = Participant("PA_bob_v", "bob", T0 * 1000 + 500)
    events = records(
        lk.room_started(room, T0),
        lk.participant_joined(room, alice),
        lk.participant_joined(room, bob),
        lk.track_published(room, alice, "TR_a_mic", T0 + 1, video=False),
        lk.track_published(room, bob, "TR_b_mic", T0 + 1, video=False),
        lk.track_published(room, alice, "TR_a_cam", T0 + 300, video=True),  # 5 min in
        lk.track_unpublished(room, alice, "TR_a_cam", T0 + 1261, video=True),
        lk.participant_left(room, alice, T0 + 1800),
        lk.participant_left(room, bob, T0 + 1800),
        lk.room_finished(room, T0 + 1810),
    )
    return room, alice, bob, events


def long_audio_call(minutes: int) -> list[LiveKitEventRecord]:
    room = Room("RM_long", "all-hands", account_id="acct-talk", created_at=T0)
    talker = Participant("PA_talker", "talker", T0 * 1000)
    return records(
        lk.participant_joined(room, talker),
        lk.track_published(room, talker, "TR_talk_mic", T0 + 1, video=False),
        lk.participant_left(room, talker, T0 + minutes * 60),
    )


# --- rebuilt sessions ---------------------------------------------------------------------------------------------


def test_given_an_audio_only_call_of_two_when_rebuilt_then_each_bills_rounded_audio_minutes_only():
    _, _, _, events = audio_only_call()

    sessions = rebuild(events)

    assert set(sessions) == {"PA_alice", "PA_bob"}
    # alice: joined T0+0.250 s, left T0+1500 s -> 1499.75 s -> ceil(1499.75/60) = ceil(24.996) = 25 audio
    assert fields(sessions["PA_alice"]) == expected(
        "acct-audio", T0 * 1000 + 250, (T0 + 1500) * 1000, ClosedBy.LEFT, (("2026-11", 0, 25),)
    )
    # bob: joined T0+30 s, left T0+1531 s -> 1501 s -> ceil(25.017) = 26 audio
    assert fields(sessions["PA_bob"]) == expected(
        "acct-audio", (T0 + 30) * 1000, (T0 + 1531) * 1000, ClosedBy.LEFT, (("2026-11", 0, 26),)
    )
    assert sessions["PA_alice"].identity == "alice"
    assert sessions["PA_bob"].kind == "STANDARD"


def test_given_a_camera_published_five_minutes_in_when_rebuilt_then_every_participant_bills_the_video_span_as_video():
    _, _, _, events = video_call_with_late_camera()

    sessions = rebuild(events)

    # camera published T0+300 .. unpublished T0+1261 = 961 s of video in the room
    # alice: T0 .. T0+1800 = 1800 s -> 30 min; video ceil(961/60) = ceil(16.02) = 17; audio 30 - 17 = 13
    assert fields(sessions["PA_alice_v"]) == expected(
        "acct-video", T0 * 1000, (T0 + 1800) * 1000, ClosedBy.LEFT, (("2026-11", 17, 13),)
    )
    # bob (no camera himself, but in a video room): T0+0.5 .. T0+1800 = 1799.5 s -> 30; video 961 s -> 17; audio 13
    assert fields(sessions["PA_bob_v"]) == expected(
        "acct-video", T0 * 1000 + 500, (T0 + 1800) * 1000, ClosedBy.LEFT, (("2026-11", 17, 13),)
    )
    assert sessions["PA_bob_v"].video_seconds == 961


def test_given_only_a_screen_share_when_rebuilt_then_the_shared_span_is_video():
    room = Room("RM_share", "design-review", account_id="acct-share", created_at=T0)
    alice = Participant("PA_alice_s", "alice", T0 * 1000)
    bob = Participant("PA_bob_s", "bob", T0 * 1000)
    events = records(
        lk.participant_joined(room, alice),
        lk.participant_joined(room, bob),
        lk.track_published(room, alice, "TR_mic_a", T0 + 2, video=False),
        lk.track_published(room, bob, "TR_mic_b", T0 + 2, video=False),
        lk.track_published(room, bob, "TR_screen", T0 + 600, video=True, source="SCREEN_SHARE"),
        lk.track_published(room, bob, "TR_screen_audio", T0 + 600, video=False, source="SCREEN_SHARE_AUDIO"),
        lk.track_unpublished(room, bob, "TR_screen", T0 + 900, video=True, source="SCREEN_SHARE"),
        lk.track_unpublished(room, bob, "TR_screen_audio", T0 + 900, video=False, source="SCREEN_SHARE_AUDIO"),
        lk.participant_left(room, alice, T0 + 1200),
        lk.participant_left(room, bob, T0 + 1200),
    )
    assert events[4].track_type == "VIDEO"
    assert events[4].track_source == "SCREEN_SHARE"
    assert events[5].track_type == ""  # screen-share audio: AUDIO is the omitted zero value

    sessions = rebuild(events)

    # both: T0 .. T0+1200 = 1200 s -> 20 min; screen share T0+600 .. T0+900 = 300 s -> 5 video; audio 20 - 5 = 15
    for sid in ("PA_alice_s", "PA_bob_s"):
        assert fields(sessions[sid]) == expected(
            "acct-share", T0 * 1000, (T0 + 1200) * 1000, ClosedBy.LEFT, (("2026-11", 5, 15),)
        )


def test_given_five_reconnects_within_a_minute_when_rebuilt_then_five_sessions_of_one_rounded_minute_each():
    room = Room("RM_storm", "flaky-wifi", account_id="acct-storm", created_at=T0)
    bodies: list[bytes] = []
    for i in range(5):  # joins at T0+0, +12, +24, +36, +48; each connected 10 s; all within T0 .. T0+58
        carol = Participant(f"PA_carol_{i}", "carol", (T0 + 12 * i) * 1000)
        bodies += [lk.participant_joined(room, carol), lk.participant_left(room, carol, T0 + 12 * i + 10)]

    sessions = rebuild(records(*bodies))

    assert sorted(sessions) == [f"PA_carol_{i}" for i in range(5)]
    assert {s.identity for s in sessions.values()} == {"carol"}
    for i in range(5):
        # 10 s -> ceil(10/60) = 1 audio minute per connection
        assert fields(sessions[f"PA_carol_{i}"]) == expected(
            "acct-storm", (T0 + 12 * i) * 1000, (T0 + 12 * i + 10) * 1000, ClosedBy.LEFT, (("2026-11", 0, 1),)
        )
    # 5 connections x 1 minute = 5 minutes (not ceil(50 s / 60) = 1: each connection is rounded on its own)
    assert sum(part.audio for s in sessions.values() for part in s.parts) == 5


def full_reconnect() -> list[LiveKitEventRecord]:
    room = Room("RM_reconnect", "standup", account_id="acct-re", created_at=T0)
    old = Participant("PA_old", "alice", T0 * 1000)
    new = Participant("PA_new", "alice", (T0 + 602) * 1000)
    return records(
        lk.participant_joined(room, old),
        lk.track_published(room, old, "TR_old_mic", T0 + 1, video=False),
        lk.participant_joined(room, new),  # delivered before the old connection's left
        lk.participant_left(room, old, T0 + 605),  # LiveKit noticed the old connection was gone 3 s after the rejoin
        lk.track_published(room, new, "TR_new_mic", T0 + 603, video=False),
        lk.participant_left(room, new, T0 + 1200),
    )


@pytest.mark.parametrize("seed", range(8))
def test_given_a_full_reconnect_delivered_out_of_order_when_rebuilt_then_both_sessions_are_closed_by_their_own_sid(
    seed,
):
    events = full_reconnect()
    random.Random(seed).shuffle(events)

    sessions = rebuild(events)

    # old: T0 .. T0+605 = 605 s -> ceil(10.08) = 11 audio (closed by its own left, not by the new join)
    assert fields(sessions["PA_old"]) == expected(
        "acct-re", T0 * 1000, (T0 + 605) * 1000, ClosedBy.LEFT, (("2026-11", 0, 11),)
    )
    # new: T0+602 .. T0+1200 = 598 s -> ceil(9.97) = 10 audio
    assert fields(sessions["PA_new"]) == expected(
        "acct-re", (T0 + 602) * 1000, (T0 + 1200) * 1000, ClosedBy.LEFT, (("2026-11", 0, 10),)
    )


def test_given_the_participant_left_is_lost_when_the_room_finishes_then_room_finished_closes_the_session():
    room = Room("RM_lostleft", "retro", account_id="acct-lost", created_at=T0)
    alice = Participant("PA_alice_l", "alice", T0 * 1000)
    bob = Participant("PA_bob_l", "bob", T0 * 1000)
    events = records(
        lk.participant_joined(room, alice),
        lk.participant_joined(room, bob),
        lk.participant_left(room, bob, T0 + 600),
        # alice's participant_left was dropped by LiveKit
        lk.room_finished(room, T0 + 900),
    )

    sessions = rebuild(events)

    # alice: T0 .. room_finished T0+900 = 900 s -> 15 audio
    assert fields(sessions["PA_alice_l"]) == expected(
        "acct-lost", T0 * 1000, (T0 + 900) * 1000, ClosedBy.ROOM_FINISHED, (("2026-11", 0, 15),)
    )
    # bob: T0 .. T0+600 = 600 s -> 10 audio (his own left wins over room_finished)
    assert fields(sessions["PA_bob_l"]) == expected(
        "acct-lost", T0 * 1000, (T0 + 600) * 1000, ClosedBy.LEFT, (("2026-11", 0, 10),)
    )


def test_given_left_and_room_finished_both_lost_when_the_sweeper_closes_then_the_session_ends_at_the_sweep():
    room = Room("RM_swept", "ghost", account_id="acct-swept", created_at=T0)
    alice = Participant("PA_alice_g", "alice", T0 * 1000)
    events = records(lk.participant_joined(room, alice))

    before = rebuild(events)["PA_alice_g"]
    # no close known yet: open, nothing billed
    assert before.is_open
    assert fields(before) == expected("acct-swept", T0 * 1000, None, None, ())

    after = rebuild([*events, sweeper_close(events, "PA_alice_g", SWEPT, T0 + 1260)])["PA_alice_g"]

    # T0 .. sweep T0+1260 = 1260 s -> 21 audio
    assert fields(after) == expected("acct-swept", T0 * 1000, (T0 + 1260) * 1000, ClosedBy.SWEPT, (("2026-11", 0, 21),))
    assert not after.is_open


def test_given_a_reconnect_whose_old_left_is_lost_when_swept_then_room_finished_does_not_reclose_the_old_connection():
    # alice's network drops ~1 min in: participant_left(PA_old) is lost, she reconnects as PA_new; the sweep at
    # T0 + 300 finds PA_old no longer listed (swept there); the call goes on 2 h, then room_finished
    room = Room("RM_reconnect", "standup", account_id="acct-reconnect", created_at=T0)
    old = Participant("PA_old_r", "alice", T0 * 1000)
    new = Participant("PA_new_r", "alice", (T0 + 60) * 1000)
    repo, publisher = InMemoryUsageRepository(registered(*ACCOUNTS)), RecordingPublisher()
    start = records(lk.room_started(room, T0), lk.participant_joined(room, old))
    deliver(repo, publisher, start)
    deliver(repo, publisher, records(lk.participant_joined(room, new)))
    deliver(repo, publisher, [sweeper_close(start, "PA_old_r", SWEPT, T0 + 300)])
    deliver(repo, publisher, records(lk.participant_left(room, new, T0 + 7200)))
    deliver(repo, publisher, records(lk.room_finished(room, T0 + 7201)))

    sessions = {key[1]: stored.session for key, stored in repo.sessions.items()}
    # PA_old: T0 .. the sweep T0 + 300 = 300 s -> 5 audio (not re-closed at room_finished: 7201 s -> 121)
    assert fields(sessions["PA_old_r"]) == expected(
        "acct-reconnect", T0 * 1000, (T0 + 300) * 1000, ClosedBy.SWEPT, (("2026-11", 0, 5),)
    )
    # PA_new: T0 + 60 .. T0 + 7200 = 7140 s -> 119 audio
    assert fields(sessions["PA_new_r"]) == expected(
        "acct-reconnect", (T0 + 60) * 1000, (T0 + 7200) * 1000, ClosedBy.LEFT, (("2026-11", 0, 119),)
    )
    # 5 + 119 = 124 audio minutes for a two-hour call (not 121 + 119 = 240)
    totals = repo.counters[("acct-reconnect", "2026-11")]
    assert {meter: quantity for (_, meter), quantity in totals.items() if quantity} == {"audio": 124}
    # a rebuild from the stored events gives the same
    assert rebuild(repo.room_events("RM_reconnect"))["PA_old_r"] == sessions["PA_old_r"]


def test_given_a_retired_swept_close_dated_back_when_room_finished_arrives_late_then_the_room_end_replaces_it():
    # the demo's story: a sweep at T0 + 3000 finds the room gone; nothing vouched for alice since T0 + 600, so D125
    # closes her there; bob leaves at T0 + 1200 (alice's close retires behind the horizon); room_finished, delayed,
    # says the room ended at T0 + 1320 - before the sweep saw alice gone: she was in it until then
    room = Room("RM_lateend", "sync", account_id="acct-late-end", created_at=T0)
    alice = Participant("PA_alice_le", "alice", T0 * 1000)
    bob = Participant("PA_bob_le", "bob", T0 * 1000)
    repo, publisher = InMemoryUsageRepository(registered(*ACCOUNTS)), RecordingPublisher()
    start = records(lk.room_started(room, T0), lk.participant_joined(room, alice), lk.participant_joined(room, bob))
    deliver(repo, publisher, start)
    deliver(repo, publisher, [sweeper_close(start, "PA_alice_le", SWEPT, T0 + 600, seen=T0 + 3000)])
    deliver(repo, publisher, records(lk.participant_left(room, bob, T0 + 1200)))
    deliver(repo, publisher, records(lk.room_finished(room, T0 + 1320)))

    sessions = {key[1]: stored.session for key, stored in repo.sessions.items()}
    # alice: T0 .. room_finished T0 + 1320 = 1320 s -> 22 audio (not the dated-back T0 + 600 -> 10)
    assert fields(sessions["PA_alice_le"]) == expected(
        "acct-late-end", T0 * 1000, (T0 + 1320) * 1000, ClosedBy.ROOM_FINISHED, (("2026-11", 0, 22),)
    )
    # bob: T0 .. T0 + 1200 = 1200 s -> 20 audio; 22 + 20 = 42
    totals = repo.counters[("acct-late-end", "2026-11")]
    assert {meter: quantity for (_, meter), quantity in totals.items() if quantity} == {"audio": 42}
    assert rebuild(repo.room_events("RM_lateend"))["PA_alice_le"] == sessions["PA_alice_le"]


@pytest.mark.parametrize(
    ("close", "finished_at", "end", "closed_by", "audio"),
    [
        # swept at T0 + 600, room_finished at T0 + 900: the sweep proves the connection had ended -> 600 s -> 10
        pytest.param(SWEPT, T0 + 900, T0 + 600, ClosedBy.SWEPT, 10, id="swept_before_room_finished_keeps_the_sweep"),
        # the sweep noticed late (T0 + 600) but the room had finished at T0 + 420 -> 420 s -> 7
        pytest.param(SWEPT, T0 + 420, T0 + 420, ClosedBy.ROOM_FINISHED, 7, id="room_finished_before_the_sweep_wins"),
        # a cap proves nothing (LiveKit could not be asked): room_finished at T0 + 900 wins -> 900 s -> 15
        pytest.param(CAPPED, T0 + 900, T0 + 900, ClosedBy.ROOM_FINISHED, 15, id="a_cap_yields_to_room_finished"),
    ],
)
def test_given_a_sweeper_close_and_room_finished_then_a_sweep_ends_at_the_earlier_and_a_cap_at_room_finished(
    close, finished_at, end, closed_by, audio
):
    room = Room("RM_sweepfin", "retro", account_id="acct-sf", created_at=T0)
    alice = Participant("PA_alice_sf", "alice", T0 * 1000)
    joined = records(lk.participant_joined(room, alice))
    events = [
        *joined,
        sweeper_close(joined, "PA_alice_sf", close, T0 + 600),
        *records(lk.room_finished(room, finished_at)),
    ]

    (session,) = rebuild(events).values()

    assert fields(session) == expected("acct-sf", T0 * 1000, end * 1000, closed_by, (("2026-11", 0, audio),))


@pytest.mark.parametrize(
    ("cap_at", "swept_at", "finished_at", "end", "closed_by", "audio"),
    [
        # swept at T0 + 100, room_finished at T0 + 7200: the sweep proves alice had gone -> 100 s -> 2 audio
        pytest.param(None, T0 + 100, T0 + 7200, T0 + 100, ClosedBy.SWEPT, 2, id="swept_alone"),
        # a cap at the same moment changes nothing: room_finished overrides the cap, not the sweep -> 2 audio
        # (before: the cap hid the sweep, room_finished closed her at T0 + 7200 -> 120 audio)
        pytest.param(T0 + 100, T0 + 100, T0 + 7200, T0 + 100, ClosedBy.SWEPT, 2, id="cap_and_sweep_together"),
        # a cap at T0 + 100, a sweep at T0 + 400 (before room_finished): gone by the sweep -> 400 s -> 7 audio
        pytest.param(T0 + 100, T0 + 400, T0 + 7200, T0 + 400, ClosedBy.SWEPT, 7, id="cap_then_sweep"),
        # no room_finished: the sweep's proof, not the cap's guess -> 400 s -> 7 audio
        pytest.param(T0 + 100, T0 + 400, None, T0 + 400, ClosedBy.SWEPT, 7, id="cap_then_sweep_room_open"),
        # a sweep after room_finished: the room's end, as for a sweep alone -> 300 s -> 5 audio
        pytest.param(T0 + 100, T0 + 400, T0 + 300, T0 + 300, ClosedBy.ROOM_FINISHED, 5, id="room_ends_first"),
    ],
)
def test_given_a_cap_and_a_sweep_of_one_session_then_the_sweep_decides_against_room_finished(
    cap_at, swept_at, finished_at, end, closed_by, audio
):
    room = Room("RM_captie", "retro", account_id="acct-ct", created_at=T0)
    alice = Participant("PA_alice_ct", "alice", T0 * 1000)
    bob = Participant("PA_bob_ct", "bob", T0 * 1000)
    joined = records(lk.participant_joined(room, alice), lk.participant_joined(room, bob))
    closes = [sweeper_close(joined, "PA_alice_ct", SWEPT, swept_at)]
    if cap_at is not None:
        closes.append(sweeper_close(joined, "PA_alice_ct", CAPPED, cap_at))
    finished = (
        records(lk.participant_left(room, bob, finished_at), lk.room_finished(room, finished_at)) if finished_at else []
    )
    events = [*joined, *closes, *finished]

    sessions = rebuild(events)

    assert fields(sessions["PA_alice_ct"]) == expected(
        "acct-ct", T0 * 1000, end * 1000, closed_by, (("2026-11", 0, audio),)
    )
    # rated one event per batch, in any of two orders (the in-order path and late events), the same minutes
    for order in (events, list(reversed(events))):
        repo, publisher = InMemoryUsageRepository(registered(*ACCOUNTS)), RecordingPublisher()
        for event in order:
            deliver(repo, publisher, [event])
        stored = {key[1]: item.session for key, item in repo.sessions.items()}
        assert fields(stored["PA_alice_ct"]) == fields(sessions["PA_alice_ct"])


@pytest.mark.parametrize(
    ("finished_at", "end", "closed_by", "audio"),
    [
        # the sweep at T0 + 1500 found the room gone and nothing had vouched for alice since T0 + 600 (D125: closed
        # there); room_finished says the room ran to T0 + 900, before the sweep: the room's end -> 900 s -> 15
        pytest.param(T0 + 900, T0 + 900, ClosedBy.ROOM_FINISHED, 15, id="room_finished_before_the_sweep_replaces_it"),
        # room_finished at T0 + 2000, after the sweep that saw alice gone: the dated-back close stands -> 600 s -> 10
        pytest.param(T0 + 2000, T0 + 600, ClosedBy.SWEPT, 10, id="room_finished_after_the_sweep_does_not"),
    ],
)
def test_given_a_swept_close_dated_back_then_a_room_end_up_to_the_sweep_replaces_it(finished_at, end, closed_by, audio):
    room = Room("RM_sweepback", "retro", account_id="acct-sb", created_at=T0)
    alice = Participant("PA_alice_sb", "alice", T0 * 1000)
    joined = records(lk.participant_joined(room, alice))
    events = [
        *joined,
        sweeper_close(joined, "PA_alice_sb", SWEPT, T0 + 600, seen=T0 + 1500),
        *records(lk.room_finished(room, finished_at)),
    ]

    (session,) = rebuild(events).values()

    assert fields(session) == expected("acct-sb", T0 * 1000, end * 1000, closed_by, (("2026-11", 0, audio),))


@pytest.mark.parametrize(
    ("roomservice", "closed_at", "audio"),
    [
        # RoomService answers every 5 minutes; alice's participant_left is lost after the sweep at T0 + 300 listed
        # her; the sweep at T0 + 600 finds the room gone: closed at T0 + 600 -> 600 s -> 10 audio (as before)
        pytest.param("answering", T0 + 600, 10, id="normal_case_billed_to_the_sweep_that_noticed"),
        # the sweep at T0 + 300 listed her, then RoomService was unreachable for 20 h (under the 24 h cap limit),
        # and at T0 + 20 h it answers: the room is gone. Nobody vouched for her after T0 + 300: closed there ->
        # 300 s -> 5 audio (before the fix: closed at T0 + 72000 -> 1200 audio, 19 h 55 min nobody could prove)
        pytest.param("outage_20h", T0 + 300, 5, id="after_a_20h_outage_billed_to_the_last_listing"),
    ],
)
def test_given_a_lost_left_when_the_sweeper_finds_the_participant_gone_then_billed_to_the_last_vouched_moment(
    roomservice, closed_at, audio
):
    room = Room("RM_probe", "probe", account_id="acct-probe", created_at=T0)
    alice = Participant("PA_alice_p", "alice", T0 * 1000)
    events = records(lk.participant_joined(room, alice))
    store = InMemoryUsageRepository(registered(*ACCOUNTS))
    session = rebuild(events)["PA_alice_p"]
    store.sessions[session.key] = StoredSession.of(session, {})
    directory = StaticRoomDirectory({"probe": {"PA_alice_p"}})
    policy = SweepPolicy(max_unconfirmed_ms=24 * 3_600_000, listing_ttl_ms=31 * 24 * 3_600_000)

    run_sweep(store, directory, (T0 + 300) * 1000, policy, EXPIRES)  # lists alice
    if roomservice == "answering":
        directory.rooms = {"probe": None}
        run_sweep(store, directory, (T0 + 600) * 1000, policy, EXPIRES)
    else:
        directory.unreachable = {"probe"}
        for hour in range(1, 20):  # one sweep an hour stands for the unanswered sweeps: nothing concluded
            outcome, _, _ = run_sweep(store, directory, (T0 + hour * 3600) * 1000, policy, EXPIRES)
            assert (outcome.swept, outcome.capped) == (0, 0)
        directory.unreachable, directory.rooms = set(), {"probe": None}
        run_sweep(store, directory, (T0 + 20 * 3600) * 1000, policy, EXPIRES)

    (close,) = store.closes.values()
    assert (close.event_type, close.created_at) == (SWEPT, closed_at)
    after = rebuild([*events, close])["PA_alice_p"]
    assert fields(after) == expected(
        "acct-probe", T0 * 1000, closed_at * 1000, ClosedBy.SWEPT, (("2026-11", 0, audio),)
    )


def test_given_a_connection_aborted_when_rebuilt_then_it_bills_nothing_and_is_not_open():
    room = Room("RM_abort", "onboarding", account_id="acct-abort", created_at=T0)
    alice = Participant("PA_alice_ok", "alice", T0 * 1000)
    dave = Participant("PA_dave", "dave", (T0 + 5) * 1000)
    events = records(
        lk.participant_joined(room, alice),
        lk.participant_connection_aborted(room, dave, T0 + 20),
        lk.participant_left(room, alice, T0 + 120),
    )

    sessions = rebuild(events)

    assert sessions["PA_dave"].aborted
    assert sessions["PA_dave"].parts == ()
    assert sessions["PA_dave"].connected_seconds == 0
    assert not sessions["PA_dave"].is_open
    # alice unaffected: 120 s -> 2 audio
    assert fields(sessions["PA_alice_ok"]) == expected(
        "acct-abort", T0 * 1000, (T0 + 120) * 1000, ClosedBy.LEFT, (("2026-11", 0, 2),)
    )


def two_rooms_at_once() -> tuple[list[LiveKitEventRecord], list[LiveKitEventRecord]]:
    one = Room("RM_one", "sales", account_id="acct-one", created_at=T0)
    two = Room("RM_two", "support", account_id="acct-two", created_at=T0)
    alice_one = Participant("PA_alice_1", "alice", T0 * 1000)
    alice_two = Participant("PA_alice_2", "alice", (T0 + 60) * 1000)
    room_one = records(
        lk.participant_joined(one, alice_one),
        lk.track_published(one, alice_one, "TR_cam_1", T0, video=True),
        lk.participant_left(one, alice_one, T0 + 600),
        lk.room_finished(one, T0 + 620),
    )
    room_two = records(
        lk.participant_joined(two, alice_two),
        lk.track_published(two, alice_two, "TR_mic_2", T0 + 60, video=False),
        lk.participant_left(two, alice_two, T0 + 1260),
    )
    return room_one, room_two


def test_given_one_identity_in_two_rooms_at_once_when_rebuilt_then_the_sessions_are_independent():
    room_one, room_two = two_rooms_at_once()

    one = rebuild(room_one)
    two = rebuild(room_two)

    # room one: T0 .. T0+600 = 600 s -> 10 min, camera the whole time -> 10 video, 0 audio
    assert fields(one["PA_alice_1"]) == expected(
        "acct-one", T0 * 1000, (T0 + 600) * 1000, ClosedBy.LEFT, (("2026-11", 10, 0),)
    )
    # room two: T0+60 .. T0+1260 = 1200 s -> 20 audio; room one's camera and room_finished do not reach it
    assert fields(two["PA_alice_2"]) == expected(
        "acct-two", (T0 + 60) * 1000, (T0 + 1260) * 1000, ClosedBy.LEFT, (("2026-11", 0, 20),)
    )


def test_given_one_identity_in_two_rooms_at_once_when_rated_in_one_batch_then_each_account_gets_its_own_room():
    room_one, room_two = two_rooms_at_once()
    repo, publisher = InMemoryUsageRepository(registered(*ACCOUNTS)), RecordingPublisher()

    outcome = deliver(repo, publisher, [*room_two, *room_one])

    assert outcome.rooms == 2
    assert set(repo.sessions) == {("RM_one", "PA_alice_1"), ("RM_two", "PA_alice_2")}
    assert repo.totals("acct-one", "2026-11") == {"video": 10}  # 600 s, all video
    assert repo.totals("acct-two", "2026-11") == {"audio": 20}  # 1200 s, audio


def room_name_reused() -> tuple[list[LiveKitEventRecord], list[LiveKitEventRecord]]:
    first = Room("RM_first", "daily", account_id="acct-first", created_at=T0)
    second = Room("RM_second", "daily", account_id="acct-second", created_at=T0 + 3600)
    alice_1 = Participant("PA_daily_1", "alice", T0 * 1000)
    alice_2 = Participant("PA_daily_2", "alice", (T0 + 3600) * 1000)
    first_events = records(
        lk.participant_joined(first, alice_1),
        lk.track_published(first, alice_1, "TR_daily_cam", T0, video=True),
        lk.participant_left(first, alice_1, T0 + 600),
        lk.room_finished(first, T0 + 610),
    )
    second_events = records(
        lk.room_started(second, T0 + 3600),
        lk.participant_joined(second, alice_2),
        # alice's participant_left lost: only the second room's own room_finished may close her
        lk.room_finished(second, T0 + 4500),
    )
    return first_events, second_events


def test_given_a_room_name_reused_with_a_new_sid_when_each_room_is_rebuilt_then_there_is_no_cross_talk():
    first_events, second_events = room_name_reused()
    assert {e.room_name for e in first_events + second_events} == {"daily"}

    first = rebuild(first_events)
    second = rebuild(second_events)

    assert set(first) == {"PA_daily_1"}
    assert set(second) == {"PA_daily_2"}
    # first: T0 .. T0+600 = 600 s, camera throughout -> 10 video
    assert fields(first["PA_daily_1"]) == expected(
        "acct-first", T0 * 1000, (T0 + 600) * 1000, ClosedBy.LEFT, (("2026-11", 10, 0),)
    )
    # second: T0+3600 .. its room_finished T0+4500 = 900 s -> 15 audio (the first room's camera/finish ignored)
    assert fields(second["PA_daily_2"]) == expected(
        "acct-second", (T0 + 3600) * 1000, (T0 + 4500) * 1000, ClosedBy.ROOM_FINISHED, (("2026-11", 0, 15),)
    )


def test_given_a_room_name_reused_when_rated_together_then_sessions_and_totals_stay_per_room_sid():
    first_events, second_events = room_name_reused()
    repo, publisher = InMemoryUsageRepository(registered(*ACCOUNTS)), RecordingPublisher()

    deliver(repo, publisher, [*second_events, *first_events])

    assert set(repo.sessions) == {("RM_first", "PA_daily_1"), ("RM_second", "PA_daily_2")}
    assert repo.totals("acct-first", "2026-11") == {"video": 10}
    assert repo.totals("acct-second", "2026-11") == {"audio": 15}


def test_given_a_session_across_the_last_midnight_of_the_month_when_rebuilt_then_each_month_part_is_rounded_alone():
    room = Room("RM_midnight", "night-shift", account_id="acct-night", created_at=NOV_30_2350)
    owl = Participant("PA_owl", "owl", (NOV_30_2350 + 30) * 1000)  # 2026-11-30T23:50:30Z
    events = records(
        lk.participant_joined(room, owl),
        lk.track_published(room, owl, "TR_owl_mic", NOV_30_2350 + 31, video=False),
        lk.participant_left(room, owl, DEC_1_0000 + 1230),  # 2026-12-01T00:20:30Z
    )

    (session,) = rebuild(events).values()

    # November: 23:50:30 .. 00:00:00 = 570 s -> ceil(9.5) = 10 audio
    # December: 00:00:00 .. 00:20:30 = 1230 s -> ceil(20.5) = 21 audio
    # (10 + 21 = 31, not ceil(1800/60) = 30: each part is rounded as its own connection)
    assert fields(session) == expected(
        "acct-night",
        (NOV_30_2350 + 30) * 1000,
        (DEC_1_0000 + 1230) * 1000,
        ClosedBy.LEFT,
        (("2026-11", 0, 10), ("2026-12", 0, 21)),
    )
    assert session.parts[1].start_ms == DEC_1_0000 * 1000


def test_given_video_across_the_month_boundary_when_rebuilt_then_video_seconds_are_split_with_the_connection():
    room = Room("RM_midnight_v", "night-video", account_id="acct-night", created_at=NOV_30_2350)
    owl = Participant("PA_owl_v", "owl", NOV_30_2350 * 1000 + 400)  # 2026-11-30T23:50:00.400Z
    events = records(
        lk.participant_joined(room, owl),
        lk.track_published(room, owl, "TR_owl_cam", NOV_30_2350 + 300, video=True),  # 23:55:00
        lk.track_unpublished(room, owl, "TR_owl_cam", DEC_1_0000 + 300, video=True),  # 00:05:00
        lk.participant_left(room, owl, DEC_1_0000 + 1200),  # 00:20:00
    )

    (session,) = rebuild(events).values()

    # November: 23:50:00.4 .. 00:00 = 599.6 s -> 10; video 23:55 .. 00:00 = 300 s -> 5; audio 10 - 5 = 5
    # December: 00:00 .. 00:20 = 1200 s -> 20; video 00:00 .. 00:05 = 300 s -> 5; audio 20 - 5 = 15
    assert fields(session) == expected(
        "acct-night",
        NOV_30_2350 * 1000 + 400,
        (DEC_1_0000 + 1200) * 1000,
        ClosedBy.LEFT,
        (("2026-11", 5, 5), ("2026-12", 5, 15)),
    )


def test_given_an_agent_participant_in_a_video_call_when_rebuilt_then_it_is_billed_like_a_standard_participant():
    room = Room("RM_agent", "agent-call", account_id="acct-agent", created_at=T0)
    alice = Participant("PA_human", "alice", T0 * 1000)
    agent = Participant("PA_agent", "agent-kilo", (T0 + 2) * 1000, kind="AGENT")
    events = records(
        lk.participant_joined(room, alice),
        lk.participant_joined(room, agent),
        lk.track_published(room, alice, "TR_human_cam", T0 + 1, video=True),
        lk.track_published(room, agent, "TR_agent_mic", T0 + 3, video=False),
        lk.participant_left(room, agent, T0 + 602),
        lk.participant_left(room, alice, T0 + 610),
        lk.room_finished(room, T0 + 615),
    )

    sessions = rebuild(events)

    agent_session = sessions["PA_agent"]
    assert agent_session.kind == "AGENT"
    assert agent_session.billing is Billing.ROOM_RULE
    # agent: T0+2 .. T0+602 = 600 s -> 10; camera published since T0+1 -> 600 s of video -> 10 video, 0 audio
    assert fields(agent_session) == expected(
        "acct-agent", (T0 + 2) * 1000, (T0 + 602) * 1000, ClosedBy.LEFT, (("2026-11", 10, 0),)
    )
    # alice: T0 .. T0+610 = 610 s -> ceil(10.17) = 11; video T0+1 .. T0+610 = 609 s -> ceil(10.15) = 11; audio 0
    assert fields(sessions["PA_human"]) == expected(
        "acct-agent", T0 * 1000, (T0 + 610) * 1000, ClosedBy.LEFT, (("2026-11", 11, 0),)
    )


def test_given_a_sip_participant_in_a_video_room_when_rebuilt_then_it_bills_audio_only():
    room = Room("RM_sip", "dial-in", account_id="acct-sip", created_at=T0)
    alice = Participant("PA_host", "alice", T0 * 1000)
    phone = Participant("PA_phone", "sip_+15551234567", (T0 + 60) * 1000, kind="SIP")
    events = records(
        lk.participant_joined(room, alice),
        lk.track_published(room, alice, "TR_host_cam", T0, video=True),
        lk.participant_joined(room, phone),
        lk.track_published(room, phone, "TR_phone_mic", T0 + 61, video=False),
        lk.participant_left(room, phone, T0 + 660),
        lk.participant_left(room, alice, T0 + 720),
    )

    sessions = rebuild(events)

    assert sessions["PA_phone"].kind == "SIP"
    # phone: T0+60 .. T0+660 = 600 s -> 10; a phone line never receives video -> 0 video, 10 audio
    assert fields(sessions["PA_phone"]) == expected(
        "acct-sip", (T0 + 60) * 1000, (T0 + 660) * 1000, ClosedBy.LEFT, (("2026-11", 0, 10),)
    )
    # host: T0 .. T0+720 = 720 s -> 12; camera throughout -> 12 video
    assert fields(sessions["PA_host"]) == expected(
        "acct-sip", T0 * 1000, (T0 + 720) * 1000, ClosedBy.LEFT, (("2026-11", 12, 0),)
    )


def test_given_an_egress_participant_when_rebuilt_and_rated_then_it_bills_nothing():
    room = Room("RM_egress", "recorded", account_id="acct-rec", created_at=T0)
    alice = Participant("PA_speaker", "alice", T0 * 1000)
    recorder = Participant("PA_recorder", "EG_recorder", (T0 + 5) * 1000, kind="EGRESS")
    events = records(
        lk.participant_joined(room, alice),
        lk.track_published(room, alice, "TR_speaker_cam", T0 + 1, video=True),
        lk.participant_joined(room, recorder),
        lk.participant_left(room, recorder, T0 + 900),
        lk.participant_left(room, alice, T0 + 900),
        lk.room_finished(room, T0 + 905),
    )

    sessions = rebuild(events)

    assert sessions["PA_recorder"].billing is Billing.NOT_BILLED
    assert sessions["PA_recorder"].parts == ()
    repo, publisher = InMemoryUsageRepository(registered(*ACCOUNTS)), RecordingPublisher()
    deliver(repo, publisher, events)
    # only alice: T0 .. T0+900 = 900 s -> 15; video T0+1 .. T0+900 = 899 s -> ceil(14.98) = 15 video
    assert repo.totals("acct-rec", "2026-11") == {"video": 15}


def test_given_the_join_is_lost_when_the_left_arrives_then_the_start_comes_from_the_lefts_participant_info():
    room = Room("RM_nojoin", "quick-sync", account_id="acct-nojoin", created_at=T0)
    alice = Participant("PA_alice_nj", "alice", T0 * 1000 + 700)
    events = records(
        # participant_joined lost
        lk.track_published(room, alice, "TR_nj_mic", T0 + 1, video=False),
        lk.participant_left(room, alice, T0 + 900),
    )

    (session,) = rebuild(events).values()

    # joinedAtMs from the left's participant info: T0+0.7 .. T0+900 = 899.3 s -> ceil(14.99) = 15 audio
    assert fields(session) == expected(
        "acct-nojoin", T0 * 1000 + 700, (T0 + 900) * 1000, ClosedBy.LEFT, (("2026-11", 0, 15),)
    )


def test_given_a_session_of_thirty_hours_closed_by_its_own_left_when_rebuilt_then_nothing_is_capped():
    room = Room("RM_marathon", "agent-space", account_id="acct-long", created_at=T0)
    agent = Participant("PA_marathon", "kilo-agent", T0 * 1000, kind="AGENT")
    events = records(
        lk.participant_joined(room, agent),
        lk.participant_left(room, agent, T0 + 30 * 3600),  # 30 h later: LiveKit saw both ends
    )

    (session,) = rebuild(events).values()

    # 30 h = 108000 s -> 1800 audio, all of it (a real close is never capped)
    assert fields(session) == expected(
        "acct-long", T0 * 1000, (T0 + 30 * 3600) * 1000, ClosedBy.LEFT, (("2026-11", 0, 1800),)
    )


def test_given_a_session_capped_by_the_sweeper_when_its_real_left_arrives_later_then_the_left_wins():
    room = Room("RM_forgotten", "forgotten-tab", account_id="acct-cap", created_at=T0)
    alice = Participant("PA_forgotten", "alice", T0 * 1000)
    joined = records(lk.participant_joined(room, alice))
    capped = [*joined, sweeper_close(joined, "PA_forgotten", CAPPED, T0 + DAY)]

    (session,) = rebuild(capped).values()

    # capped at its last confirmation, T0 + 86400 s -> 1440 audio
    assert fields(session) == expected(
        "acct-cap", T0 * 1000, (T0 + DAY) * 1000, ClosedBy.CAPPED, (("2026-11", 0, 1440),)
    )

    (session,) = rebuild([*capped, *records(lk.participant_left(room, alice, T0 + 26 * 3600))]).values()

    # the real left at T0 + 26 h = 93600 s -> 1560 audio: the minutes after the cap come back
    assert fields(session) == expected(
        "acct-cap", T0 * 1000, (T0 + 26 * 3600) * 1000, ClosedBy.LEFT, (("2026-11", 0, 1560),)
    )


def test_given_a_late_real_left_after_a_sweep_when_rated_one_event_at_a_time_then_those_gone_meanwhile_get_its_video():
    # pat's camera ended at the sweep (T0+600) until pat's real participant_left (T0+611) arrives: the left wins (D17),
    # so the camera was published until T0+611. quinn left at T0+602 and had already retired from the room's state
    # (closed before its horizon) when the left arrived: quinn's video seconds must follow, as in a full rebuild.
    room = Room("RM_late_left", "standup", account_id="acct-late", created_at=T0)
    pat = Participant("PA_pat", "pat", T0 * 1000)
    quinn = Participant("PA_quinn", "quinn", T0 * 1000)
    rae = Participant("PA_rae", "rae", (T0 + 609) * 1000)
    joined = records(
        lk.room_started(room, T0),
        lk.participant_joined(room, pat),
        lk.participant_joined(room, quinn),
        lk.track_published(room, pat, "TR_pat_cam", T0 + 1, video=True),
        lk.track_published(room, pat, "TR_pat_mic", T0 + 1, video=False),
    )
    events = [
        *joined,
        sweeper_close(joined, "PA_pat", SWEPT, T0 + 600),
        *records(
            lk.participant_left(room, quinn, T0 + 602),
            lk.track_unpublished(room, pat, "TR_pat_mic", T0 + 607, video=False),  # keeps pat in the window
            lk.participant_joined(room, rae),  # moves the horizon past quinn's left: quinn retires
            lk.participant_left(room, pat, T0 + 611),  # the real left, after the sweep
            lk.participant_left(room, rae, T0 + 640),
        ),
    ]
    repo, publisher = InMemoryUsageRepository(registered(*ACCOUNTS)), RecordingPublisher()
    for event in events:  # one event per batch, in order: the room state's incremental path
        deliver(repo, publisher, [event])

    stored = {key[1]: fields(stored.session) for key, stored in repo.sessions.items()}
    # pat: T0 .. T0+611 = 611 s -> 11; video T0+1 .. T0+611 = 610 s -> ceil(10.17) = 11 video
    assert stored["PA_pat"] == expected("acct-late", T0 * 1000, (T0 + 611) * 1000, ClosedBy.LEFT, (("2026-11", 11, 0),))
    # quinn: T0 .. T0+602 = 602 s -> 11; video T0+1 .. T0+602 = 601 s -> ceil(10.02) = 11 video, no audio
    # (with the camera ending at the sweep: 599 s -> 10 video, 1 audio)
    assert stored["PA_quinn"] == expected(
        "acct-late", T0 * 1000, (T0 + 602) * 1000, ClosedBy.LEFT, (("2026-11", 11, 0),)
    )
    # rae: T0+609 .. T0+640 = 31 s -> 1; video T0+609 .. T0+611 = 2 s -> 1 video
    assert stored["PA_rae"] == expected(
        "acct-late", (T0 + 609) * 1000, (T0 + 640) * 1000, ClosedBy.LEFT, (("2026-11", 1, 0),)
    )
    assert repo.totals("acct-late", "2026-11") == {"video": 23}  # 11 + 11 + 1


def test_given_a_capped_session_ended_by_room_finished_when_a_camera_arrives_late_then_it_still_gets_the_video():
    # pat is capped at T0+600 (its last confirmation); room_finished at T0+607 ends pat's session there instead (a cap
    # yields to room_finished, D17). quinn's camera, published at T0+604, arrives after the room_finished: still
    # inside the room state's window, so it is folded in - and pat, whose cap lies before the horizon but whose
    # session ends at the room's end after it, must get those seconds of video, as in a full rebuild.
    room = Room("RM_capped_end", "townhall", account_id="acct-end", created_at=T0)
    pat = Participant("PA_pat_c", "pat", T0 * 1000)
    quinn = Participant("PA_quinn_c", "quinn", T0 * 1000)
    joined = records(lk.room_started(room, T0), lk.participant_joined(room, pat), lk.participant_joined(room, quinn))
    camera = records(lk.track_published(room, quinn, "TR_quinn_cam", T0 + 604, video=True))
    events = [
        *joined,
        sweeper_close(joined, "PA_pat_c", CAPPED, T0 + 600),
        *records(lk.room_finished(room, T0 + 607)),
        *camera,  # late: after the room_finished, 3 s older than it
    ]
    repo, publisher = InMemoryUsageRepository(registered(*ACCOUNTS)), RecordingPublisher()
    for event in events:  # one event per batch: the room state's incremental path
        deliver(repo, publisher, [event])

    stored = {key[1]: fields(stored.session) for key, stored in repo.sessions.items()}
    # each: T0 .. T0+607 = 607 s -> ceil(10.12) = 11; video T0+604 .. T0+607 = 3 s -> 1 video, 10 audio
    for sid in ("PA_pat_c", "PA_quinn_c"):
        assert stored[sid] == expected(
            "acct-end", T0 * 1000, (T0 + 607) * 1000, ClosedBy.ROOM_FINISHED, (("2026-11", 1, 10),)
        )
    assert repo.totals("acct-end", "2026-11") == {"video": 2, "audio": 20}


@pytest.mark.parametrize(
    ("room_account", "attributes", "metadata", "account"),
    [
        pytest.param("acct-room", {"kilo.account_id": "acct-attr"}, '{"account_id":"acct-meta"}', "acct-room",
                     id="room_metadata_wins"),
        pytest.param(None, {"kilo.account_id": "acct-attr"}, '{"account_id":"acct-meta"}', "acct-attr",
                     id="participant_attribute_next"),
        pytest.param(None, {}, '{"account_id":"acct-meta"}', "acct-meta", id="participant_metadata_last"),
        pytest.param(None, {"other": "x"}, '{"plan":"free"}', "unattributed", id="none_is_unattributed"),
    ],
)  # fmt: skip
def test_given_account_hints_in_room_and_participant_when_rebuilt_then_the_first_rule_step_that_matches_pays(
    room_account, attributes, metadata, account
):
    room = Room("RM_attr", "who-pays", account_id=room_account, created_at=T0)
    alice = Participant("PA_attr", "alice", T0 * 1000, attributes=attributes)
    events = records(
        with_participant_metadata(lk.participant_joined(room, alice), metadata),
        lk.track_published(room, alice, "TR_attr_mic", T0 + 1, video=False),
        with_participant_metadata(lk.participant_left(room, alice, T0 + 300), metadata),
    )

    (session,) = rebuild(events).values()

    # 300 s -> 5 audio
    assert fields(session) == expected(account, T0 * 1000, (T0 + 300) * 1000, ClosedBy.LEFT, (("2026-11", 0, 5),))


def with_room_metadata(body: bytes, metadata: str) -> bytes:
    """The same webhook with ``room.metadata`` replaced (UpdateRoomMetadata replaces the whole string); cleared, the
    key is absent (LiveKit omits zero values)."""
    event = json.loads(body)
    event["room"]["metadata"] = metadata
    if not metadata:
        del event["room"]["metadata"]
    return json.dumps(event, separators=(",", ":")).encode()


def audio_by_account(repo: InMemoryUsageRepository) -> dict[str, int]:
    totals: dict[str, int] = {}
    for (account, _), counters in repo.counters.items():
        for (_, meter), quantity in counters.items():
            if quantity:
                assert meter == "audio"
                totals[account] = totals.get(account, 0) + quantity
    return totals


@pytest.mark.parametrize(
    ("new_metadata", "bob_pays"),
    [
        # the app sets the room's topic and drops the account: metadata without a valid account never overrides
        # the account found before it - bob pays acct-a too
        pytest.param('{"topic":"Q4"}', "acct-a", id="metadata_without_account"),
        pytest.param('{"account_id":"not a valid id!"}', "acct-a", id="metadata_with_an_invalid_account"),
        # the room is handed to another account: from then on acct-b pays, what went before stays acct-a's
        pytest.param('{"account_id":"acct-b","topic":"Q4"}', "acct-b", id="metadata_with_another_account"),
    ],
)
def test_given_the_room_metadata_changes_after_a_session_closed_then_that_session_keeps_its_account(
    new_metadata, bob_pays
):
    room = Room("RM_meta", "allhands", account_id="acct-a", created_at=T0)
    alice = Participant("PA_alice_m", "alice", T0 * 1000)
    # bob joins 90 min in, 300 ms before his participant_joined is queued - the first event carrying the new metadata
    bob = Participant("PA_bob_m", "bob", (T0 + 5400) * 1000 - 300)
    repo, publisher = InMemoryUsageRepository(registered(*ACCOUNTS)), RecordingPublisher()
    deliver(repo, publisher, records(lk.room_started(room, T0), lk.participant_joined(room, alice)))
    deliver(repo, publisher, records(lk.participant_left(room, alice, T0 + 3600)))
    assert audio_by_account(repo) == {"acct-a": 60}  # alice: 3600 s -> 60 audio

    deliver(repo, publisher, records(with_room_metadata(lk.participant_joined(room, bob, T0 + 5400), new_metadata)))
    deliver(repo, publisher, records(with_room_metadata(lk.participant_left(room, bob, T0 + 6000), new_metadata)))

    sessions = {key[1]: stored.session for key, stored in repo.sessions.items()}
    assert sessions["PA_alice_m"].account == "acct-a"
    assert sessions["PA_bob_m"].account == bob_pays
    # alice 60 stays acct-a's; bob: T0 + 5399.7 .. T0 + 6000 = 600.3 s -> 11 audio
    expected_totals = {"acct-a": 71} if bob_pays == "acct-a" else {"acct-a": 60, "acct-b": 11}
    assert audio_by_account(repo) == expected_totals
    assert publisher.published == []  # no UnattributedUsage.v1: nothing moved to unattributed
    # a rebuild from the stored events attributes the same
    assert {sid: s.account for sid, s in rebuild(repo.room_events("RM_meta")).items()} == {
        "PA_alice_m": "acct-a",
        "PA_bob_m": bob_pays,
    }


@pytest.mark.parametrize(
    "metadata_at_alices_join",
    [
        pytest.param('{"topic":"Q4"}', id="metadata_without_account"),
        # LiveKit omits empty metadata: the join carries no room metadata at all - a report that it was cleared
        pytest.param("", id="metadata_cleared"),
    ],
)
def test_given_the_room_metadata_cleared_when_someone_joins_then_the_account_found_before_still_pays(
    metadata_at_alices_join,
):
    room = Room("RM_cleared", "cleared", account_id="acct-a", created_at=T0)
    handed = Room("RM_cleared", "cleared", account_id="acct-b", created_at=T0)
    bob = Participant("PA_bob_cl", "bob", (T0 + 10) * 1000)
    alice = Participant("PA_alice_cl", "alice", (T0 + 100) * 1000)
    carol = Participant("PA_carol_cl", "carol", (T0 + 3000) * 1000)
    bodies = [
        lk.room_started(room, T0),
        lk.participant_joined(room, bob),
        with_room_metadata(lk.participant_joined(room, alice), metadata_at_alices_join),
        # later the room is handed to acct-b: carol's join reports it, and so does alice's left
        lk.participant_joined(handed, carol),
        lk.participant_left(handed, alice, T0 + 3700),
    ]
    if not metadata_at_alices_join:
        assert "metadata" not in json.loads(bodies[2])["room"]  # as LiveKit sends it
    events = records(*bodies)

    sessions = rebuild(events)

    # alice T0 + 100 .. T0 + 3700 = 3600 s -> 60 audio; the metadata in force at her start has no account: acct-a,
    # found before it, pays (D163) - never acct-b, set after she joined
    assert fields(sessions["PA_alice_cl"]) == expected(
        "acct-a", (T0 + 100) * 1000, (T0 + 3700) * 1000, ClosedBy.LEFT, (("2026-11", 0, 60),)
    )
    # rated one event per batch (the in-order path), the same
    repo, publisher = InMemoryUsageRepository(registered(*ACCOUNTS)), RecordingPublisher()
    for event in events:
        deliver(repo, publisher, [event])
    assert audio_by_account(repo) == {"acct-a": 60}


@pytest.mark.parametrize(("left_id", "join_id"), [("EV_samesec_1", "EV_samesec_2"), ("EV_samesec_2", "EV_samesec_1")])
def test_given_the_room_handed_over_in_the_second_someone_joins_then_their_own_join_decides(left_id, join_id):
    # bob leaves at T0 + 100 reporting acct-a; in the same second the room is handed to acct-b and alice joins, her
    # own participant_joined reporting acct-b. The two events' order in that second is only their random ids.
    room = Room("RM_samesec", "handover", account_id="acct-a", created_at=T0)
    handed = Room("RM_samesec", "handover", account_id="acct-b", created_at=T0)
    bob = Participant("PA_bob_ss", "bob", T0 * 1000)
    alice = Participant("PA_alice_ss", "alice", (T0 + 100) * 1000 + 700)
    bob_joined, bob_left, alice_joined, alice_left = records(
        lk.participant_joined(room, bob),
        lk.participant_left(room, bob, T0 + 100),
        lk.participant_joined(handed, alice, T0 + 100),
        lk.participant_left(handed, alice, T0 + 700),
    )
    events = [bob_joined, replace(bob_left, event_id=left_id), replace(alice_joined, event_id=join_id), alice_left]

    sessions = rebuild(events)

    # alice T0 + 100.7 .. T0 + 700 = 599.3 s -> 10 audio, acct-b (her join's); bob T0 .. T0 + 100 -> 2 audio, acct-a
    assert fields(sessions["PA_alice_ss"]) == expected(
        "acct-b", (T0 + 100) * 1000 + 700, (T0 + 700) * 1000, ClosedBy.LEFT, (("2026-11", 0, 10),)
    )
    assert fields(sessions["PA_bob_ss"]) == expected(
        "acct-a", T0 * 1000, (T0 + 100) * 1000, ClosedBy.LEFT, (("2026-11", 0, 2),)
    )
    repo, publisher = InMemoryUsageRepository(registered(*ACCOUNTS)), RecordingPublisher()
    for event in events:  # one event per batch, in order: the same
        deliver(repo, publisher, [event])
    assert audio_by_account(repo) == {"acct-a": 2, "acct-b": 10}


def test_given_the_room_account_is_only_set_after_a_session_started_then_the_first_account_reported_pays():
    # the app creates the room without metadata and sets the account a minute later: alice, already in, pays with it
    bare = Room("RM_late_meta", "late", account_id=None, created_at=T0)
    billed = Room("RM_late_meta", "late", account_id="acct-late", created_at=T0)
    alice = Participant("PA_alice_lm", "alice", T0 * 1000)
    bob = Participant("PA_bob_lm", "bob", (T0 + 60) * 1000)
    events = records(
        lk.room_started(bare, T0),
        lk.participant_joined(bare, alice),
        lk.participant_joined(billed, bob),
        lk.participant_left(billed, alice, T0 + 600),
        lk.participant_left(billed, bob, T0 + 600),
    )

    sessions = rebuild(events)

    # alice T0 .. T0 + 600 = 600 s -> 10 audio; bob T0 + 60 .. T0 + 600 = 540 s -> 9 audio; both acct-late
    assert fields(sessions["PA_alice_lm"]) == expected(
        "acct-late", T0 * 1000, (T0 + 600) * 1000, ClosedBy.LEFT, (("2026-11", 0, 10),)
    )
    assert fields(sessions["PA_bob_lm"]) == expected(
        "acct-late", (T0 + 60) * 1000, (T0 + 600) * 1000, ClosedBy.LEFT, (("2026-11", 0, 9),)
    )


def test_given_a_camera_publisher_leaves_without_track_unpublished_then_the_others_are_audio_after_it_left():
    # track_unpublished is lost (or never sent) but the publisher's participant_left arrived: once it has left, its
    # camera is no longer published in the room (billing-policy: a video second needs a published video track)
    room = Room("RM_gone_cam", "handover", account_id="acct-handover", created_at=T0)
    alice = Participant("PA_cam_owner", "alice", T0 * 1000)
    bob = Participant("PA_stayer", "bob", T0 * 1000)
    events = records(
        lk.participant_joined(room, alice),
        lk.participant_joined(room, bob),
        lk.track_published(room, alice, "TR_owner_cam", T0 + 60, video=True),
        lk.participant_left(room, alice, T0 + 600),
        lk.participant_left(room, bob, T0 + 1200),
    )

    sessions = rebuild(events)

    # alice: T0 .. T0+600 = 600 s -> 10; video T0+60 .. T0+600 = 540 s -> 9 video; audio 1
    assert fields(sessions["PA_cam_owner"]) == expected(
        "acct-handover", T0 * 1000, (T0 + 600) * 1000, ClosedBy.LEFT, (("2026-11", 9, 1),)
    )
    # bob: T0 .. T0+1200 = 1200 s -> 20; video only while alice's camera existed, T0+60 .. T0+600 = 540 s -> 9;
    # audio 20 - 9 = 11
    assert fields(sessions["PA_stayer"]) == expected(
        "acct-handover", T0 * 1000, (T0 + 1200) * 1000, ClosedBy.LEFT, (("2026-11", 9, 11),)
    )


# --- end to end through rate_batch ----------------------------------------------------------------------------------


def test_given_a_video_call_when_rated_then_the_accounts_totals_are_the_sum_of_rounded_connections():
    _, _, _, events = video_call_with_late_camera()
    repo, publisher = InMemoryUsageRepository(registered(*ACCOUNTS)), RecordingPublisher()

    outcome = deliver(repo, publisher, events)

    # alice 17 video + 13 audio, bob 17 video + 13 audio -> 34 video, 26 audio
    assert repo.totals("acct-video", "2026-11") == {"video": 34, "audio": 26}
    assert outcome.sessions_changed == 2
    assert outcome.unattributed_minutes == 0
    assert publisher.published == []


def test_given_batches_redelivered_and_duplicated_when_rated_again_then_nothing_changes():
    _, _, _, video_events = video_call_with_late_camera()
    _, _, _, audio_events = audio_only_call()
    repo, publisher = InMemoryUsageRepository(registered(*ACCOUNTS)), RecordingPublisher()
    deliver(repo, publisher, [*video_events, *audio_events])
    sessions, counters, writes = dict(repo.sessions), {k: dict(v) for k, v in repo.counters.items()}, repo.writes

    again = deliver(repo, publisher, [*video_events, *video_events, *audio_events])  # redelivered, duplicated
    reversed_halves = deliver(repo, publisher, list(reversed(audio_events)))

    assert (again.sessions_changed, again.writes) == (0, 0)
    assert (reversed_halves.sessions_changed, reversed_halves.writes) == (0, 0)
    assert repo.writes == writes
    assert repo.sessions == sessions
    assert repo.counters == counters
    assert repo.totals("acct-video", "2026-11") == {"video": 34, "audio": 26}  # 2 x (17 video, 13 audio)
    assert repo.totals("acct-audio", "2026-11") == {"audio": 51}  # 25 + 26


def test_given_a_reconnect_split_over_batches_out_of_order_when_rated_then_totals_match_the_hand_sum():
    events = full_reconnect()
    joined_old, _, joined_new, left_old, _, left_new = events
    repo, publisher = InMemoryUsageRepository(registered(*ACCOUNTS)), RecordingPublisher()

    deliver(repo, publisher, [joined_new, left_new])  # the new connection first
    deliver(repo, publisher, [joined_old])  # the old one now open
    deliver(repo, publisher, [left_old, *events])  # its left last, then everything again

    # old 605 s -> 11, new 598 s -> 10 -> 21 audio
    assert repo.totals("acct-re", "2026-11") == {"audio": 21}


def test_given_a_session_across_midnight_when_rated_then_each_period_gets_its_own_rounded_part():
    room = Room("RM_midnight_r", "night-shift", account_id="acct-night", created_at=NOV_30_2350)
    owl = Participant("PA_owl_r", "owl", (NOV_30_2350 + 30) * 1000)
    events = records(lk.participant_joined(room, owl), lk.participant_left(room, owl, DEC_1_0000 + 1230))
    repo, publisher = InMemoryUsageRepository(registered(*ACCOUNTS)), RecordingPublisher()

    deliver(repo, publisher, events)

    assert repo.totals("acct-night", "2026-11") == {"audio": 10}  # 570 s -> 10
    assert repo.totals("acct-night", "2026-12") == {"audio": 21}  # 1230 s -> 21


def test_given_unattributable_usage_when_rated_then_it_is_kept_in_the_unattributed_bucket():
    room = Room("RM_orphan", "no-account", created_at=T0)
    alice = Participant("PA_orphan", "alice", T0 * 1000)
    events = records(lk.participant_joined(room, alice), lk.participant_left(room, alice, T0 + 420))
    repo, publisher = InMemoryUsageRepository(registered(*ACCOUNTS)), RecordingPublisher()

    outcome = deliver(repo, publisher, events)

    assert repo.totals("unattributed", "2026-11") == {"audio": 7}  # 420 s -> 7
    assert outcome.unattributed_minutes == 7


def test_given_a_crash_mid_commit_when_the_same_batch_is_retried_then_totals_equal_a_clean_run():
    _, _, _, video_events = video_call_with_late_camera()
    usage = [usage_record("msg-crash", "acct-video", "messages", 42, T0 + 100)]
    clean, clean_publisher = InMemoryUsageRepository(registered(*ACCOUNTS)), RecordingPublisher()
    deliver(clean, clean_publisher, video_events, usage)

    crashed, crashed_publisher = InMemoryUsageRepository(registered(*ACCOUNTS)), RecordingPublisher()
    crashed.crash_after_transactions = 0
    with pytest.raises(RuntimeError, match="simulated crash"):
        deliver(crashed, crashed_publisher, video_events, usage)
    # the crash came before the first transaction: no trace
    assert crashed.sessions == {}
    assert crashed.counters == {}
    assert crashed.usage_rated == set()
    crashed.crash_after_transactions = None
    deliver(crashed, crashed_publisher, video_events, usage)

    # 34 video, 26 audio (2 x (17, 13)); 42 messages
    assert crashed.totals("acct-video", "2026-11") == {"video": 34, "audio": 26, "messages": 42}
    assert clean.totals("acct-video", "2026-11") == crashed.totals("acct-video", "2026-11")
    assert crashed.sessions == clean.sessions
    assert crashed_publisher.published == clean_publisher.published


def test_given_usage_records_delivered_twice_when_rated_then_each_is_counted_once():
    messages = usage_record("msg-1", "acct-app", "messages", 120, T0 + 10)
    more_messages = usage_record("msg-2", "acct-app", "messages", 30, T0 + 20)
    data = usage_record("bytes-1", "acct-app", "data_transfer", 2_500_000_000, T0 + 30)
    repo, publisher = InMemoryUsageRepository(registered(*ACCOUNTS)), RecordingPublisher()

    first = deliver(repo, publisher, usage=[messages, data, messages])  # duplicate inside one batch
    second = deliver(repo, publisher, usage=[data, messages, more_messages])  # redelivered with one new record

    assert first.usage_rated == 2
    assert second.usage_rated == 1
    # messages 120 + 30 = 150; data 2.5e9 bytes once
    assert repo.totals("acct-app", "2026-11") == {"messages": 150, "data_transfer": 2_500_000_000}


def test_given_personal_audio_crossing_half_its_allowance_when_rated_then_one_threshold_event_is_published_once():
    events = long_audio_call(5000)  # joined T0, left T0 + 5000 x 60 s = 300000 s
    repo, publisher = InMemoryUsageRepository(registered(*ACCOUNTS)), RecordingPublisher()

    first = deliver(repo, publisher, events)
    deliver(repo, publisher, events)  # redelivered
    deliver(repo, publisher, [events[-1], events[0]])  # and again, reordered

    # 300000 s -> 5000 audio minutes; personal includes 10000 -> 5000 / 10000 = 50 % (not 80 %)
    assert repo.totals("acct-talk", "2026-11") == {"audio": 5000}
    assert first.thresholds == 1
    assert len(publisher.published) == 1
    detail_type, detail = publisher.published[0]
    assert detail_type == "UsageThresholdCrossed.v1"
    assert {
        k: detail[k] for k in ("event_id", "account_id", "period", "meter", "threshold_percent", "used", "limit")
    } == {
        # scoped by the tier segment: the whole of November on Personal, from 2026-11-01T00:00Z = 1793491200 s
        "event_id": "threshold:acct-talk:2026-11:audio@1793491200:50",
        "account_id": "acct-talk",
        "period": "2026-11",
        "meter": "audio",
        "threshold_percent": 50,
        "used": "5000",
        "limit": "10000",
    }
    assert repo.thresholds[("acct-talk", "2026-11")] == {"audio@1793491200#50"}


def test_given_personal_audio_just_below_half_when_rated_then_no_threshold_is_published():
    events = long_audio_call(4999)  # 4999 x 60 s -> 4999 minutes < 5000 = 50 % of 10000
    repo, publisher = InMemoryUsageRepository(registered(*ACCOUNTS)), RecordingPublisher()

    deliver(repo, publisher, events)

    assert repo.totals("acct-talk", "2026-11") == {"audio": 4999}
    assert publisher.published == []


def test_given_a_crash_between_two_transactions_of_a_commit_when_retried_then_each_session_counts_once():
    # 110 sessions in one batch need two transactions (at most 100 items each: 98 sessions + 1 aggregate + the check of
    # the account's erasure mark, D80; then 12 + 1 + 1)
    room = Room("RM_busy", "all-hands", account_id="acct-busy", created_at=T0)
    bodies: list[bytes] = []
    for i in range(110):
        person = Participant(f"PA_busy_{i:03d}", f"p{i}", (T0 + i) * 1000)
        bodies += [lk.participant_joined(room, person), lk.participant_left(room, person, T0 + i + 61)]
    events = records(*bodies)
    repo, publisher = InMemoryUsageRepository(registered(*ACCOUNTS)), RecordingPublisher()

    repo.crash_after_transactions = 1
    with pytest.raises(RuntimeError, match="after 1 transaction"):
        deliver(repo, publisher, events)

    # the first transaction landed and nothing of the second: 98 sessions x 61 s -> 98 x 2 = 196 audio
    assert len(repo.sessions) == 98
    assert repo.totals("acct-busy", "2026-11") == {"audio": 196}
    repo.crash_after_transactions = None
    retry = deliver(repo, publisher, events)  # Lambda retries the whole batch
    # only the 12 missing sessions are written: 110 x 2 = 220 audio
    assert retry.sessions_changed == 12
    assert repo.totals("acct-busy", "2026-11") == {"audio": 220}


def test_given_a_participant_retiring_in_a_batch_not_naming_it_then_its_registers_follow_and_a_late_video_event_counts():
    # alice's left arrives first (the room is rebuilt: her session and registers are stored), then her join and her
    # track's publish (no type: audio) - her session does not change, so it is not rewritten. She retires from the
    # room's state in a batch naming only bob. A late track_published calls her track VIDEO: the track is video from
    # its first publish (T0) to her connection's end (D16), so her and bob's minutes are video, as a rebuild says.
    # Before, the registers kept on her session item were those of the first rebuild (no track): the late event was
    # folded into them as a new track published after her left (no video), and 14 video minutes were billed as audio.
    room = Room("RM_registers", "standup", account_id="acct-reg", created_at=T0)
    alice, bob = Participant("PA_alice", "alice", T0 * 1000), Participant("PA_bob", "bob", T0 * 1000)
    published = records(lk.track_published(room, alice, "TR_alice", T0, video=False))[0]
    late_video = replace(published, event_id="EV_late_video", created_at=T0 + 560, track_type="VIDEO")
    arrival = [
        *records(lk.participant_left(room, alice, T0 + 554)),
        *records(lk.room_started(room, T0), lk.participant_joined(room, alice), lk.participant_joined(room, bob)),
        published,
        *records(lk.participant_left(room, bob, T0 + 187)),
        *records(lk.track_unpublished(room, bob, "TR_bob_gone", T0 + 560, video=False)),  # alice retires here
        late_video,
    ]
    repo, publisher = InMemoryUsageRepository(registered(*ACCOUNTS)), RecordingPublisher()
    for event in arrival:
        deliver(repo, publisher, [event])

    stored = {key[1]: fields(stored.session) for key, stored in repo.sessions.items()}
    # alice: T0 .. T0+554 = 554 s, all video -> ceil(9.23) = 10 video; bob: T0 .. T0+187 = 187 s -> 4 video
    assert stored["PA_alice"] == expected(
        "acct-reg", T0 * 1000, (T0 + 554) * 1000, ClosedBy.LEFT, (("2026-11", 10, 0),)
    )
    assert stored["PA_bob"] == expected("acct-reg", T0 * 1000, (T0 + 187) * 1000, ClosedBy.LEFT, (("2026-11", 4, 0),))
    assert repo.totals("acct-reg", "2026-11") == {"video": 14}
