"""The sweeper's synthetic joins (D375, amended 2026-12-03): rating marks a room whose state holds a participant with no
start (its ``participant_joined`` lost), the sweeper asks RoomService about it and writes one join per listed
participant from the answer (its kind and ``joinedAtMs``), and forgets the mark once the state holds none. Through
rating (``rate_batch``) and the sweeper (``run_sweep``) on the in-memory store and a static RoomService; figures by
hand."""

from __future__ import annotations

import itertools

from kilo_billing.livekit_events import LiveKitEventRecord
from kilo_dev import livekit_events as lk
from kilo_rate_usage.logic import rate_batch
from kilo_rate_usage.model import LISTED, AttributionRule, Billing, ListedParticipant, SweepPolicy
from kilo_rate_usage.sessions import rebuild_room
from kilo_rate_usage.sweeper import listed_join, run_sweep
from tests.fakes import InMemoryUsageRepository, RecordingPublisher, StaticRoomDirectory, registered
from tests.integration.test_rating_lost_events import ACCOUNT, BOB, ROOM, T0, _lost_join_and_left
from tests.property.test_rating_exactly_once import CONFIG

HOUR_MS = 3_600_000
POLICY = SweepPolicy(max_unconfirmed_ms=24 * HOUR_MS, listing_ttl_ms=31 * 24 * HOUR_MS)  # mark grace: 10 min
EXPIRES = 2_000_000_000
# the room of tests/integration/test_rating_lost_events.py: bob's participant_joined and participant_left are lost
ROOM_SID, ROOM_NAME, BOB_SID = ROOM.sid, ROOM.name, BOB.sid


def _rated(bodies: list[bytes], at_ms: int, repo: InMemoryUsageRepository | None = None) -> InMemoryUsageRepository:
    """Each event stored and rated on its own, rating's clock at ``at_ms``."""
    repo = repo or InMemoryUsageRepository(registered(ACCOUNT))
    for body in bodies:
        event = lk.to_record(body)
        repo.store_event(event)
        rate_batch([event], [], repo, RecordingPublisher(), CONFIG, at_ms)
    return repo


def _rate_closes(repo: InMemoryUsageRepository, at_ms: int) -> None:
    """Rating folds what the sweeper wrote (its synthetic events are stored in the room's partition)."""
    for event in list(repo.closes.values()):
        rate_batch([event], [], repo, RecordingPublisher(), CONFIG, at_ms)


def _before_finish() -> list[bytes]:
    """Up to alice's leave: room_started T0, alice joined T0, bob's camera published T0+130, alice left T0+300."""
    return _lost_join_and_left()[:4]


def _bob_here(kind: str = "STANDARD", joined_ms: int = (T0 + 5) * 1000) -> StaticRoomDirectory:
    directory = StaticRoomDirectory({ROOM_NAME: {BOB_SID}})
    directory.infos[BOB_SID] = ListedParticipant(BOB_SID, "bob", kind, joined_ms)
    return directory


def test_rating_marks_the_room_and_the_sweep_writes_one_join_from_roomservice_then_forgets_the_mark() -> None:
    marked_ms = (T0 + 300) * 1000
    repo = _rated(_before_finish(), marked_ms)
    assert repo.joinless_rooms() == {ROOM_SID: marked_ms}  # bob (a camera, no start) is in the room's state

    directory = _bob_here()
    outcome, _, _ = run_sweep(repo, directory, (T0 + 400) * 1000, POLICY, EXPIRES)
    assert directory.asked == [[ROOM_NAME]]  # no open session there: asked for bob alone
    [join] = repo.closes.values()
    assert (join.event_id, join.event_type, join.created_at) == (f"kilo-listed-{BOB_SID}", LISTED, T0 + 400)
    assert (join.participant_kind, join.joined_at_ms, join.participant_identity) == ("STANDARD", (T0 + 5) * 1000, "bob")
    assert outcome.joined == 1
    again, _, _ = run_sweep(repo, directory, (T0 + 450) * 1000, POLICY, EXPIRES)  # not rated yet: the same join
    assert (again.joined, len(repo.closes)) == (0, 1)  # a duplicate, dropped
    assert repo.joinless_rooms() == {ROOM_SID: marked_ms}  # bob still has no start in the state: kept

    _rate_closes(repo, (T0 + 460) * 1000)
    bob = repo.sessions[(ROOM_SID, BOB_SID)].session
    assert (bob.start_ms, bob.kind, bob.end_ms, bob.inferred_start) == ((T0 + 5) * 1000, "STANDARD", None, False)
    # the next sweep, 10 min (the grace) after the mark: bob has a start now - the mark goes; bob is an open session,
    # listed, left open
    third, _, _ = run_sweep(repo, directory, marked_ms + 600_000, POLICY, EXPIRES)
    assert (third.joined, third.listed, repo.joinless_rooms()) == (0, 1, {})

    _rated([lk.room_finished(ROOM, T0 + 600)], (T0 + 600) * 1000, repo)
    # bob 5..600 = 595 s -> 10 min, video 130..600 = 470 s -> 8 video + 2 audio; alice 0..300, video 130..300 = 170 s
    # -> 3 video + 2 audio: 11 video, 4 audio
    assert repo.totals(ACCOUNT, "2026-11") == {"video": 11, "audio": 4}


def test_a_mark_younger_than_the_grace_is_kept_though_the_state_holds_nobody_join_less() -> None:
    # rating marks before it commits: a sweep reading the state between the two must not forget the mark
    repo = _rated(_before_finish()[:2], (T0 + 10) * 1000)
    assert repo.joinless_rooms() == {}  # alice has a start: nothing marked
    repo.mark_joinless_rooms([ROOM_SID], (T0 + 100) * 1000, EXPIRES)  # as if a batch marked it, its commit pending
    directory = StaticRoomDirectory({ROOM_NAME: {"PA_alice_l"}})
    run_sweep(repo, directory, (T0 + 100) * 1000 + 599_999, POLICY, EXPIRES)
    assert repo.joinless_rooms() == {ROOM_SID: (T0 + 100) * 1000}
    run_sweep(repo, directory, (T0 + 100) * 1000 + 600_000, POLICY, EXPIRES)
    assert repo.joinless_rooms() == {}


def test_a_gone_room_forgets_its_mark_and_an_unanswered_or_unlisted_one_keeps_it_writing_nothing() -> None:
    repo = _rated(_before_finish(), (T0 + 300) * 1000)
    unanswered = StaticRoomDirectory(unreachable=[ROOM_NAME])
    run_sweep(repo, unanswered, (T0 + 400) * 1000, POLICY, EXPIRES)
    unlisted = StaticRoomDirectory({ROOM_NAME: set()})  # bob left before the sweep: stays as D375 has him
    run_sweep(repo, unlisted, (T0 + 1000) * 1000, POLICY, EXPIRES)
    assert (repo.closes, repo.joinless_rooms()) == ({}, {ROOM_SID: (T0 + 300) * 1000})
    run_sweep(repo, StaticRoomDirectory({ROOM_NAME: None}), (T0 + 1300) * 1000, POLICY, EXPIRES)
    assert (repo.closes, repo.joinless_rooms()) == ({}, {})  # gone: nobody of it can be listed again


def test_a_listed_participant_without_a_join_time_gets_no_synthetic_join() -> None:
    repo = _rated(_before_finish(), (T0 + 300) * 1000)
    outcome, _, _ = run_sweep(repo, _bob_here(joined_ms=0), (T0 + 400) * 1000, POLICY, EXPIRES)
    assert (outcome.joined, repo.closes) == (0, {})  # no evidence of when he joined: D375's inferred start at the end


def test_a_real_join_wins_over_the_synthetic_one_in_every_order() -> None:
    # RoomService said SIP, joined T0+65 s; the real participant_joined says STANDARD, joinedAtMs T0+5 s: whichever
    # comes first, the session is the webhook's - LiveKit's own record of the join, and the fold gives a
    # participant_joined precedence over any other carrier of joinedAt (a participant_left's, the sweeper's).
    # bob 5..600 = 595 s, video 130..600 = 470 s -> 8 video + 2 audio
    listed = ListedParticipant(BOB_SID, "bob", "SIP", (T0 + 65) * 1000)
    synthetic = listed_join(ROOM_SID, ROOM_NAME, listed, (T0 + 400) * 1000)
    events: list[LiveKitEventRecord] = [
        lk.to_record(lk.track_published(ROOM, BOB, "TR_cam_b", T0 + 130, video=True)),
        synthetic,
        lk.to_record(lk.participant_joined(ROOM, BOB, at=T0 + 5)),
        lk.to_record(lk.room_finished(ROOM, T0 + 600)),
    ]
    for order in itertools.permutations(events):
        [bob] = rebuild_room(order, AttributionRule())
        assert (bob.start_ms, bob.kind, bob.billing) == ((T0 + 5) * 1000, "STANDARD", Billing.ROOM_RULE)
        assert [(p.video, p.audio) for p in bob.parts] == [(8, 2)]
    # and with no real join: the synthetic one's start and kind (SIP: audio only) -> 65..600 = 535 s -> 9 audio
    [bob] = rebuild_room([events[0], synthetic, events[3]], AttributionRule())
    assert (bob.start_ms, bob.kind, [(p.video, p.audio) for p in bob.parts]) == ((T0 + 65) * 1000, "SIP", [(0, 9)])


def test_a_room_whose_events_are_all_still_in_the_state_s_window_is_asked_about_too() -> None:
    # room_started T0 and bob's camera T0+2 only: both inside the state's 5 s window (no participant item, the room's
    # name only in the window's events) - the sweep still finds bob join-less and the room's name
    repo = _rated([lk.room_started(ROOM, T0), lk.track_published(ROOM, BOB, "TR_cam_b", T0 + 2, video=True)], T0 * 1000)
    directory = _bob_here()
    outcome, _, _ = run_sweep(repo, directory, (T0 + 300) * 1000, POLICY, EXPIRES)
    assert (directory.asked, outcome.joined) == ([[ROOM_NAME]], 1)
