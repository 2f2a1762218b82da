"""The sweeper's synthetic joins (D375, amended 2026-12-03): rating marks a room whose state holds a participant with no
start (its ``participant_joined`` lost), the sweeper asks RoomService about it and writes one join per listed
participant from the answer (its kind and ``joinedAtMs``), and forgets the mark once the state holds none. Through
rating (``rate_batch``) and the sweeper (``run_sweep``) on the in-memory store and a static RoomService; figures by
hand."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import pytest

from kilo_billing.events import item_size
from kilo_billing.livekit_events import LiveKitEventRecord
from kilo_dev import livekit_events as lk
from kilo_rate_usage.logic import rate_batch
from kilo_rate_usage.model import LISTED, AttributionRule, Billing, ListedParticipant, SweepPolicy
from kilo_rate_usage.ports import RejectedWriteError
from kilo_rate_usage.sessions import rebuild_room
from kilo_rate_usage.sweeper import listed_join, run_sweep
from tests.fakes import InMemoryUsageRepository, RecordingPublisher, StaticRoomDirectory, registered
from tests.integration.test_rating_lost_events import ACCOUNT, ALICE, BOB, ROOM, T0, _lost_join_and_left
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


def _real_and_synthetic(real_join_at_s: int) -> list[LiveKitEventRecord]:
    """bob's camera T0+130, the sweep's join T0+400 (RoomService said SIP, joined T0+65 s), the real participant_joined
    dated ``real_join_at_s`` (STANDARD, joinedAtMs T0+5 s), room_finished T0+600 (fold_events orders them by time)."""
    listed = ListedParticipant(BOB_SID, "bob", "SIP", (T0 + 65) * 1000)
    return [
        lk.to_record(lk.track_published(ROOM, BOB, "TR_cam_b", T0 + 130, video=True)),
        listed_join(ROOM_SID, ROOM_NAME, listed, (T0 + 400) * 1000),
        lk.to_record(lk.participant_joined(ROOM, BOB, at=real_join_at_s)),
        lk.to_record(lk.room_finished(ROOM, T0 + 600)),
    ]


def test_a_real_join_dated_before_the_synthetic_one_wins() -> None:
    # the usual order: the real participant_joined (T0+5) is folded first, the synthetic one (T0+400) tells nothing new
    # bob 5..600 = 595 s, video 130..600 = 470 s -> 8 video + 2 audio
    [bob] = rebuild_room(_real_and_synthetic(T0 + 5), AttributionRule())
    assert (bob.start_ms, bob.kind, bob.billing) == ((T0 + 5) * 1000, "STANDARD", Billing.ROOM_RULE)
    assert [(p.video, p.audio) for p in bob.parts] == [(8, 2)]


def test_a_real_join_dated_after_the_synthetic_one_still_wins() -> None:
    # LiveKit's clock a few seconds ahead of the sweeper's (or the webhook delayed and dated late): the real join is
    # dated T0+402, after the sweep's T0+400 - the synthetic join is folded first, and the real one replaces its start
    # and kind (its joinedAtMs T0+5 s): the same 8 video + 2 audio, STANDARD
    [bob] = rebuild_room(_real_and_synthetic(T0 + 402), AttributionRule())
    assert (bob.start_ms, bob.kind, bob.billing) == ((T0 + 5) * 1000, "STANDARD", Billing.ROOM_RULE)
    assert [(p.video, p.audio) for p in bob.parts] == [(8, 2)]


def test_with_no_real_join_the_synthetic_one_gives_the_start_and_the_kind() -> None:
    # SIP is audio only: 65..600 = 535 s -> 9 audio
    camera, synthetic, _, finished = _real_and_synthetic(T0 + 5)
    [bob] = rebuild_room([camera, synthetic, finished], AttributionRule())
    assert (bob.start_ms, bob.kind, [(p.video, p.audio) for p in bob.parts]) == ((T0 + 65) * 1000, "SIP", [(0, 9)])


def test_a_room_whose_events_are_all_still_in_the_state_s_window_is_asked_about_too() -> None:
    # room_started T0 and bob's camera T0+2 only: both inside the state's 5 s window (no participant item, the room's
    # name only in the window's events) - the sweep still finds bob join-less and the room's name
    repo = _rated([lk.room_started(ROOM, T0), lk.track_published(ROOM, BOB, "TR_cam_b", T0 + 2, video=True)], T0 * 1000)
    directory = _bob_here()
    outcome, _, _ = run_sweep(repo, directory, (T0 + 300) * 1000, POLICY, EXPIRES)
    assert (directory.asked, outcome.joined) == ([[ROOM_NAME]], 1)


class CommitBetweenReads:
    """The store as DynamoDB serves it: the sweeper's reads are not one snapshot - a rating batch (``between``) commits
    between its read of the room's header (``room_states``) and its read of the participant items
    (``room_participants``)."""

    def __init__(self, repo: InMemoryUsageRepository, between: Callable[[], None]) -> None:
        self._repo, self._between = repo, between

    def __getattr__(self, name: str) -> Any:
        return getattr(self._repo, name)

    def room_participants(self, room_sid: str, generation: str, sids: Any) -> Any:
        between, self._between = self._between, lambda: None
        between()
        return self._repo.room_participants(room_sid, generation, sids)


CAROL = lk.Participant("PA_carol_l", "carol", (T0 + 900) * 1000)


def _commit_between_reads(race: bool) -> dict[str, int | str]:
    # bob join-less (camera at 130); alice's mic 290..302 - its unpublish sent after her leave at 300 (LiveKit sends
    # them concurrently) - so after dave's join at 306 the header holds alice closed inside the window
    first = _before_finish()
    bodies = [*first[:3], lk.track_published(ROOM, ALICE, "TR_mic_a", T0 + 290, video=False), first[3],
              lk.track_unpublished(ROOM, ALICE, "TR_mic_a", T0 + 302, video=False)]  # fmt: skip
    marked_ms = (T0 + 302) * 1000
    repo = _rated(bodies, marked_ms)
    dave = lk.Participant("PA_dave_l", "dave", (T0 + 306) * 1000)
    _rated([lk.participant_joined(ROOM, dave, at=T0 + 306)], (T0 + 306) * 1000, repo)
    assert repo.states[ROOM_SID].fold.closed == {ALICE.sid}
    assert repo.joinless_rooms() == {ROOM_SID: marked_ms}
    carol = lk.to_record(lk.participant_joined(ROOM, CAROL, at=T0 + 900))

    def commit() -> None:  # carol joins: alice (closed inside the header's window) retires; bob's item untouched
        repo.store_event(carol)
        rate_batch([carol], [], repo, RecordingPublisher(), CONFIG, (T0 + 901) * 1000)

    sweep_ms = (T0 + 910) * 1000  # more than the 10 min grace after the mark
    directory = _bob_here()
    directory.rooms[ROOM_NAME] = {BOB_SID, CAROL.sid, dave.sid}
    directory.infos[CAROL.sid] = ListedParticipant(CAROL.sid, "carol", "STANDARD", (T0 + 900) * 1000)
    if race:
        run_sweep(CommitBetweenReads(repo, commit), directory, sweep_ms, POLICY, EXPIRES)  # type: ignore[arg-type]
    else:
        commit()
        run_sweep(repo, directory, sweep_ms, POLICY, EXPIRES)
    _rate_closes(repo, sweep_ms + 1000)
    run_sweep(repo, directory, sweep_ms + 300_000, POLICY, EXPIRES)  # the next sweep: bob is still listed
    _rate_closes(repo, sweep_ms + 301_000)
    _rated([lk.participant_left(ROOM, CAROL, T0 + 1200), lk.participant_left(ROOM, dave, T0 + 1200),
            lk.room_finished(ROOM, T0 + 1200)], (T0 + 1200) * 1000, repo)  # fmt: skip
    bob = repo.sessions[(ROOM_SID, BOB_SID)].session
    return {"bob_kind": bob.kind, "bob_billed_parts": len(bob.parts), **repo.totals(ACCOUNT, "2026-11")}


# bob 5..1200 = 1195 s, camera 130..1200 = 1070 s -> 18 video + 2 audio; alice 0..300, camera from 130: 170 s -> 3 video
# + 2 audio; carol 900..1200 = 300 s -> 5 video; dave 306..1200 = 894 s -> 15 video: 41 video, 4 audio
BOB_BILLED = {"bob_kind": "STANDARD", "bob_billed_parts": 1, "video": 41, "audio": 4}


def test_without_a_commit_between_the_sweepers_reads_bob_is_billed() -> None:
    assert _commit_between_reads(race=False) == BOB_BILLED


def test_a_commit_between_the_sweepers_reads_keeps_the_mark_and_bob_is_billed_the_same() -> None:
    # the same history and RoomService answers, only the interleaving differs: the header and the participant items
    # read apart do not add up (the state cannot tell) - the mark stays, and the next sweep writes bob's join
    assert _commit_between_reads(race=True) == BOB_BILLED


NOV1 = 1_793_491_200  # 2026-11-01T00:00:00Z


def test_joined_on_october_31_listed_on_november_1_is_split_at_the_month() -> None:
    room = lk.Room("RM_month", "month", account_id=ACCOUNT, created_at=NOV1 - 3600)
    alice = lk.Participant("PA_alice_m", "alice", (NOV1 - 3600) * 1000)
    bob = lk.Participant("PA_bob_m", "bob", (NOV1 - 60) * 1000)
    listed = ListedParticipant("PA_bob_m", "bob", "STANDARD", (NOV1 - 60) * 1000)
    events = [
        lk.to_record(lk.room_started(room, NOV1 - 3600)),
        lk.to_record(lk.participant_joined(room, alice)),
        lk.to_record(lk.track_published(room, bob, "TR_mic_m", NOV1 - 30, video=False)),
        listed_join("RM_month", "month", listed, (NOV1 + 180) * 1000),
        lk.to_record(lk.room_finished(room, NOV1 + 600)),
    ]
    sessions = {s.participant_sid: s for s in rebuild_room(events, AttributionRule())}
    # bob 23:59:00 .. 00:10:00: October 60 s -> 1 audio minute; November 600 s -> 10 audio minutes
    assert [(p.period, p.video, p.audio) for p in sessions["PA_bob_m"].parts] == [("2026-10", 0, 1), ("2026-11", 0, 10)]


def _listed_with(metadata: str, attributes: str) -> LiveKitEventRecord:
    listed = ListedParticipant(BOB_SID, "bob", "SIP", (T0 + 65) * 1000, metadata, attributes)
    return listed_join(ROOM_SID, ROOM_NAME, listed, (T0 + 400) * 1000)


def test_a_join_keeps_roomservice_s_metadata_and_attributes_while_they_fit() -> None:
    join = _listed_with('{"account_id":"acct_x"}', '{"kilo.account_id":"acct_y"}')
    assert (join.participant_metadata, join.participant_attributes) == (
        '{"account_id":"acct_x"}',
        '{"kilo.account_id":"acct_y"}',
    )


def test_a_join_too_large_for_the_events_table_leaves_out_the_attributes_then_the_metadata() -> None:
    # 250 kB metadata + 200 kB attributes: past the 400 000-byte bound together; the metadata alone fits
    attributes = '{"blob":"' + "a" * 200_000 + '"}'
    join = _listed_with("m" * 250_000, attributes)
    assert (join.participant_metadata, join.participant_attributes) == ("m" * 250_000, "")
    # 450 kB of metadata: nothing of RoomService's fields fits - the kind and the join time stay
    join = _listed_with("m" * 450_000, '{"kilo.account_id":"acct_y"}')
    assert (join.participant_metadata, join.participant_attributes) == ("", "")
    assert (join.participant_kind, join.joined_at_ms) == ("SIP", (T0 + 65) * 1000)
    assert item_size(join.to_item(EXPIRES)) < 400_000
    # a smaller bound (ingest's ``max_item_bytes``) is kept too: 1000 bytes leave room for neither
    listed = ListedParticipant(BOB_SID, "bob", "SIP", 0, "m" * 1000, "")
    small = listed_join(ROOM_SID, ROOM_NAME, listed, (T0 + 400) * 1000, max_item_bytes=1000)
    assert small.participant_metadata == ""


class RefusingJoinsOf(InMemoryUsageRepository):
    """The in-memory store whose events table refuses the synthetic join of ``refused`` (as DynamoDB an item too
    large)."""

    def __init__(self, refused: str) -> None:
        super().__init__(registered(ACCOUNT))
        self.refused = refused

    def add_close(self, event: LiveKitEventRecord, expires_at: int) -> bool:
        if event.event_type == LISTED and event.participant_sid == self.refused:
            raise RejectedWriteError("Item size has exceeded the maximum allowed size")
        return super().add_close(event, expires_at)


def test_a_refused_join_stops_no_other_and_keeps_the_mark() -> None:
    # bob and carol both join-less (their cameras only); bob's join is refused, carol's written; the mark stays
    carol = lk.Participant("PA_carol_r", "carol", (T0 + 20) * 1000)
    repo = RefusingJoinsOf(BOB_SID)
    camera = lk.track_published(ROOM, carol, "TR_cam_c", T0 + 140, video=True)
    _rated([*_before_finish(), camera], (T0 + 300) * 1000, repo)
    directory = _bob_here()
    directory.rooms[ROOM_NAME] = {BOB_SID, carol.sid}
    directory.infos[carol.sid] = ListedParticipant(carol.sid, "carol", "STANDARD", (T0 + 20) * 1000)
    outcome, _, _ = run_sweep(repo, directory, (T0 + 1000) * 1000, POLICY, EXPIRES)
    assert outcome.joined == 1
    assert [(room, sid) for room, sid, _ in outcome.unwritten_joins] == [(ROOM_SID, BOB_SID)]
    assert [(e.event_type, e.participant_sid) for e in repo.closes.values()] == [(LISTED, carol.sid)]
    assert repo.joinless_rooms() == {ROOM_SID: (T0 + 300) * 1000}


DAY_MS = 86_400_000


def _expire_marks(repo: InMemoryUsageRepository, now_ms: int) -> None:
    """DynamoDB's TTL: a join-less mark whose ``expires_at`` has passed is deleted (the in-memory store keeps it)."""
    repo.joinless = {room: mark for room, mark in repo.joinless.items() if mark[1] * 1000 > now_ms}


def test_a_participant_roomservice_lists_only_after_eight_days_unanswered_is_still_billed() -> None:
    """D393: rating marks the room once (bob's camera at T0+130, the batch at T0+300), expiring 7 days later; nothing
    of bob comes again. RoomService does not answer for 8 days; on the 9th it lists bob (STANDARD, joined T0+5 s).
    The sweeper renews a mark a day old whose room still holds bob, so it asks on the 9th day and writes his join -
    before, the mark expired on day 7 and bob stayed unbilled, counted only if the room's room_finished came."""
    marked_ms = (T0 + 300) * 1000
    repo = _rated(_before_finish(), marked_ms)
    assert repo.joinless[ROOM_SID] == (marked_ms, T0 + 300 + 7 * 86_400)
    for day in range(1, 9):
        now_ms = marked_ms + day * DAY_MS
        _expire_marks(repo, now_ms)
        run_sweep(repo, StaticRoomDirectory(unreachable=[ROOM_NAME]), now_ms, POLICY, EXPIRES)
    now_ms = marked_ms + 9 * DAY_MS
    _expire_marks(repo, now_ms)
    outcome, _, _ = run_sweep(repo, _bob_here(), now_ms, POLICY, EXPIRES)
    assert outcome.joined == 1
    [join] = repo.closes.values()
    assert (join.participant_sid, join.joined_at_ms) == (BOB_SID, (T0 + 5) * 1000)


def test_a_mark_is_renewed_once_a_day_keeping_its_grace_rule() -> None:
    # renewed at the first sweep a day or more after it was made (a new marked_at_ms: the forget stays conditional),
    # not at every sweep
    marked_ms = (T0 + 300) * 1000
    repo = _rated(_before_finish(), marked_ms)
    unanswered = StaticRoomDirectory(unreachable=[ROOM_NAME])
    run_sweep(repo, unanswered, marked_ms + DAY_MS - 1, POLICY, EXPIRES)
    assert repo.joinless[ROOM_SID] == (marked_ms, T0 + 300 + 7 * 86_400)
    renewed_ms = marked_ms + DAY_MS
    run_sweep(repo, unanswered, renewed_ms, POLICY, EXPIRES)
    assert repo.joinless[ROOM_SID] == (renewed_ms, renewed_ms // 1000 + 7 * 86_400)
    run_sweep(repo, unanswered, renewed_ms + 300_000, POLICY, EXPIRES)
    assert repo.joinless[ROOM_SID] == (renewed_ms, renewed_ms // 1000 + 7 * 86_400)


def test_a_gone_room_whose_state_still_holds_a_join_less_participant_gives_him_up_loudly() -> None:
    """D393: bob left before any sweep (never listed) and the room's room_finished was lost: RoomService says the
    room is gone, the mark is forgotten - bob is given up, and the sweep names him (``abandoned_joins``, counted and
    alarmed by the handler) instead of forgetting him silently. A room that finished (its room_finished rated) holds
    nobody join-less: nothing given up."""
    repo = _rated(_before_finish(), (T0 + 300) * 1000)
    run_sweep(repo, StaticRoomDirectory({ROOM_NAME: set()}), (T0 + 1000) * 1000, POLICY, EXPIRES)
    outcome, _, _ = run_sweep(repo, StaticRoomDirectory({ROOM_NAME: None}), (T0 + 1300) * 1000, POLICY, EXPIRES)
    assert (outcome.abandoned_joins, repo.joinless_rooms()) == (((ROOM_SID, BOB_SID),), {})

    finished = _rated([*_before_finish(), lk.room_finished(ROOM, T0 + 600)], (T0 + 300) * 1000)
    outcome, _, _ = run_sweep(finished, StaticRoomDirectory({ROOM_NAME: None}), (T0 + 1300) * 1000, POLICY, EXPIRES)
    assert (outcome.abandoned_joins, finished.joinless_rooms()) == ((), {})


def test_a_synthetic_join_attributes_by_roomservice_s_fields_at_the_sweep_and_a_late_real_join_by_its_own() -> None:
    """D393 (a limit, documented): RoomService answers a participant's attributes as they are at the sweep, not as
    its lost participant_joined carried them. Bob joined at T0+5 s with ``kilo.account_id`` acct_team_a (the app's
    token); the app set it to acct_team_b before the sweep at T0+400. The room names no account: the synthetic join
    bills acct_team_b; the real join, arriving late, wins and bills acct_team_a. His tier is never the sweep's: the
    session's parts are cut at the account's tier changes by its own times, from T0+5 s (``_by_segment``)."""
    room = lk.Room("RM_attr", "attr", created_at=T0)
    bob = lk.Participant("PA_bob_a", "bob", (T0 + 5) * 1000, attributes={"kilo.account_id": "acct_team_a"})
    listed = ListedParticipant(bob.sid, "bob", "STANDARD", (T0 + 5) * 1000, "", '{"kilo.account_id":"acct_team_b"}')
    events = [
        lk.to_record(lk.room_started(room, T0)),
        lk.to_record(lk.track_published(room, bob, "TR_cam_a", T0 + 130, video=True)),
        listed_join(room.sid, room.name, listed, (T0 + 400) * 1000),
        lk.to_record(lk.room_finished(room, T0 + 600)),
    ]
    [synthetic] = rebuild_room(events, AttributionRule())
    assert (synthetic.account, synthetic.start_ms) == ("acct_team_b", (T0 + 5) * 1000)
    [real] = rebuild_room([*events, lk.to_record(lk.participant_joined(room, bob))], AttributionRule())
    assert (real.account, real.start_ms) == ("acct_team_a", (T0 + 5) * 1000)


def test_a_give_up_claimed_by_a_run_that_died_before_saying_it_is_said_by_a_later_run() -> None:
    """D421: the run at T0+1300 claims bob's give-up and dies before saying him (``give_up`` raises: a timeout, a
    throttled write). The run at T0+1600 finds the claim unsaid and 300 s old - its claimant may still be running
    (a run lives at most 120 s + 240 s of event age = 360 s): it says nothing and keeps the mark. The run at T0+1900
    finds it 600 s old: it takes the claim over, says bob once and forgets the mark (before: the T0+1600 run found
    the claim, said nothing and forgot the mark - bob never said)."""
    repo = _rated(_before_finish(), (T0 + 300) * 1000)
    run_sweep(repo, StaticRoomDirectory({ROOM_NAME: set()}), (T0 + 1000) * 1000, POLICY, EXPIRES)
    said: list[tuple[str, str]] = []

    def dies(abandoned: Any) -> None:
        raise RuntimeError("Task timed out after 120.00 seconds")

    gone = StaticRoomDirectory({ROOM_NAME: None})
    with pytest.raises(RuntimeError, match="timed out"):
        run_sweep(repo, gone, (T0 + 1300) * 1000, POLICY, EXPIRES, give_up=dies)
    outcome, _, _ = run_sweep(repo, gone, (T0 + 1600) * 1000, POLICY, EXPIRES, give_up=said.extend)
    assert (said, outcome.abandoned_joins, repo.joinless_rooms()) == ([], (), {ROOM_SID: (T0 + 300) * 1000})
    outcome, _, _ = run_sweep(repo, gone, (T0 + 1900) * 1000, POLICY, EXPIRES, give_up=said.extend)
    assert (said, outcome.abandoned_joins, repo.joinless_rooms()) == ([(ROOM_SID, BOB_SID)], ((ROOM_SID, BOB_SID),), {})
    outcome, _, _ = run_sweep(repo, gone, (T0 + 2200) * 1000, POLICY, EXPIRES, give_up=said.extend)
    assert (said, outcome.abandoned_joins) == ([(ROOM_SID, BOB_SID)], ())
