"""The room state's incremental path gives exactly what a full rebuild gives.

A random room history (``test_rating_exactly_once.histories``: joins and leaves lost or not, aborted connections,
agents, SIP, egress, cameras and screen shares, sweeper closes, room_finished or not) is delivered one event per batch
- mostly in order, with some events delayed (late: older than the state's horizon, or only reordered inside it) and
some delivered twice - so most events are folded into the stored room state and the rest fall back to a rebuild. The
stored sessions must equal ``rebuild_room`` over all events (the reference, computed without any state), and the
aggregates must equal the sum of those sessions' minutes.
"""

from __future__ import annotations

from dataclasses import replace
from unittest.mock import patch

from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from kilo_billing.livekit_events import LiveKitEventRecord
from kilo_dev import livekit_events as lk
from kilo_dev.livekit_events import Participant, Room
from kilo_rate_usage import rooms
from kilo_rate_usage.logic import rate_batch
from kilo_rate_usage.model import CAPPED, SWEPT, AttributionRule, ListedParticipant, SessionKey
from kilo_rate_usage.rooms import advance
from kilo_rate_usage.sessions import rebuild_room
from kilo_rate_usage.sweeper import close_event, listed_join
from tests.fakes import InMemoryUsageRepository, RecordingPublisher, registered
from tests.property.test_rating_exactly_once import CONFIG, FULL_ROOM, METADATA, NOW_MS, T0, histories

# the accounts the rooms name, registered (on the free default) as the app does before it creates their rooms:
# minutes of an id nobody registered go to the unattributed bucket (D276)
ACCOUNTS = ("acct-a", "acct-b")


def _after_leaving(draw: st.DrawFn, events: list[LiveKitEventRecord]) -> list[LiveKitEventRecord]:
    """Events naming a participant well after its connection ended (it has retired from the room's state by then):
    a camera unpublished after its publisher left (LiveKit sends them concurrently; a reconnect leaves the old
    connection's tracks behind), the same join again, a track or a metadata update of the gone participant, a track
    becoming video, the room's metadata replaced (reported by a join again, or by a newcomer's join and left),
    someone whose join was lost leaving (its start long before, its metadata run found by time). Some change nothing billable (folded into the registers on its session item), some change its
    session or the room's video (the room is rebuilt) - either way the result must be a full rebuild's."""
    extra: list[LiveKitEventRecord] = []
    for number, left in enumerate(e for e in events if e.event_type == "participant_left"):
        if not draw(st.booleans()):
            continue
        at = left.created_at + draw(st.integers(6, 900))
        mine = [e for e in events if e.participant_sid == left.participant_sid]
        tracks = sorted({e.track_sid for e in mine if e.track_sid}) or [f"TR_gone_{number}"]
        kind = draw(st.sampled_from(
            ["unpublish", "unpublish", "join_again", "publish", "metadata", "video", "room_account", "newcomer",
             "lost_join"]
        ))  # fmt: skip
        base = replace(left, event_id=f"EV_after_{number}", created_at=at, body=b"")
        if kind == "unpublish":
            track = draw(st.sampled_from(tracks))
            video = any(e.track_sid == track and e.track_type == "VIDEO" for e in mine)
            extra.append(replace(base, event_type="track_unpublished", track_sid=track,
                                 track_type="VIDEO" if video else "AUDIO"))  # fmt: skip
        elif kind == "join_again":
            extra.append(replace(base, event_type="participant_joined"))
        elif kind == "publish":
            extra.append(replace(base, event_type="track_published", track_sid=f"TR_late_{number}", track_type="VIDEO"))
        elif kind == "room_account":  # its join again, the room's metadata replaced meanwhile (UpdateRoomMetadata)
            extra.append(replace(base, event_type="participant_joined", room_metadata=draw(st.sampled_from(METADATA))))
        elif kind == "newcomer":  # someone joins later, reporting the room's replaced metadata
            joined = replace(base, event_type="participant_joined", participant_sid=f"PA_late_{number}",
                             joined_at_ms=at * 1000, room_metadata=draw(st.sampled_from(METADATA)))  # fmt: skip
            extra += [joined, replace(joined, event_id=f"EV_after_left_{number}", event_type="participant_left",
                                      created_at=at + 60)]  # fmt: skip
        elif kind == "lost_join":  # someone whose join was lost leaves: its start (joinedAtMs) is long before
            start = draw(st.integers(T0, at))  # its run found by time, maybe one the state has pruned (D163)
            reports = [e for e in sorted(events, key=lambda e: (e.created_at, e.event_id))
                       if e.event_type in FULL_ROOM and e.created_at <= at]  # fmt: skip
            current = reports[-1].room_metadata if reports else base.room_metadata  # what a left sent then reports
            extra.append(replace(base, event_type="participant_left", participant_sid=f"PA_lost_{number}",
                                 joined_at_ms=start * 1000 + draw(st.integers(0, 999)), room_metadata=current))  # fmt: skip
        elif kind == "metadata":
            extra.append(replace(base, event_type="participant_metadata_updated",
                                 participant_metadata='{"account_id": "acct-b"}'))  # fmt: skip
        else:
            extra.append(replace(base, event_type="track_published", track_sid=draw(st.sampled_from(tracks)),
                                 track_type="VIDEO"))  # fmt: skip
    return extra


def _listed(draw: st.DrawFn, events: list[LiveKitEventRecord]) -> list[LiveKitEventRecord]:
    """The sweeper's synthetic joins (D375, amended): for some participants, RoomService's answer at a moment after
    their first event - a kind and a join time, maybe not those of their own webhooks (a real join must win) - as the
    sweeper writes it, whether their join was lost or not."""
    extra: list[LiveKitEventRecord] = []
    for sid in sorted({e.participant_sid for e in events if e.participant_sid}):
        if draw(st.integers(0, 2)):
            continue
        mine = [e for e in events if e.participant_sid == sid]
        at = min(e.created_at for e in mine) + draw(st.integers(0, 900))
        kind = draw(st.sampled_from(["STANDARD", "SIP", "INGRESS", "AGENT"]))
        joined_ms = draw(st.integers(T0, at)) * 1000 + draw(st.integers(0, 999))
        listed = ListedParticipant(sid, mine[0].participant_identity, kind, joined_ms)
        extra.append(listed_join(mine[0].room_sid, mine[0].room_name, listed, at * 1000 + draw(st.integers(0, 999))))
    return extra


@st.composite
def arrivals(draw: st.DrawFn) -> tuple[list[LiveKitEventRecord], list[LiveKitEventRecord]]:
    """The room's events, and the order they arrive in: in order, some delayed by a few places, some twice; some
    name participants long gone; some are the sweeper's synthetic joins."""
    events = [record for record in draw(histories()) if isinstance(record, LiveKitEventRecord)]
    events += _after_leaving(draw, events)
    events += _listed(draw, events)
    order = sorted(events, key=lambda e: (e.created_at, e.event_id))
    for _ in range(draw(st.integers(0, 3))):  # delays: the event arrives later, after some newer ones
        index = draw(st.integers(0, len(order) - 1))
        late = order.pop(index)
        order.insert(min(len(order), index + draw(st.integers(1, 4))), late)
    for _ in range(draw(st.integers(0, 3))):  # redeliveries
        order.insert(draw(st.integers(0, len(order))), order[draw(st.integers(0, len(order) - 1))])
    return events, order


def _tally(sessions: dict[SessionKey, object]) -> dict[tuple[str, str, str], int]:
    totals: dict[tuple[str, str, str], int] = {}
    for stored in sessions.values():
        for (account, period, _, meter), quantity in stored.contributions.items():  # type: ignore[attr-defined]
            totals[(account, period, meter)] = totals.get((account, period, meter), 0) + quantity
    return {key: quantity for key, quantity in totals.items() if quantity}


@settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(arrivals())
def test_one_event_batches_in_any_arrival_give_the_sessions_and_aggregates_of_a_full_rebuild(scenario) -> None:
    _one_event_batches_equal_a_rebuild(scenario)


@settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(arrivals())
def test_one_event_batches_with_metadata_runs_pruned_from_two_give_a_full_rebuild(scenario) -> None:
    """The same, pruning the room-metadata runs as soon as the header holds two (D163): every pruning, floor and
    rebuild for a session reaching a run pruned is exercised by histories whose metadata changes a few times."""
    with patch.object(rooms, "PRUNE_RUNS_FROM", 2):
        _one_event_batches_equal_a_rebuild(scenario)


def _one_event_batches_equal_a_rebuild(scenario: tuple[list[LiveKitEventRecord], list[LiveKitEventRecord]]) -> None:
    events, order = scenario
    repo, publisher = InMemoryUsageRepository(registered(*ACCOUNTS)), RecordingPublisher()
    for event in order:
        repo.store_event(event)
        rate_batch([event], [], repo, publisher, CONFIG, NOW_MS)

    reference = {(s.room_sid, s.participant_sid): s for s in rebuild_room(events, AttributionRule())}
    assert {key: stored.session for key, stored in repo.sessions.items()} == reference
    aggregates = {
        (account, period, meter): quantity
        for (account, period), counters in repo.counters.items()
        for (_, meter), quantity in counters.items()
        if quantity
    }
    combined: dict[tuple[str, str, str], int] = {}
    for (account, period, meter), quantity in aggregates.items():
        combined[(account, period, meter)] = combined.get((account, period, meter), 0) + quantity
    assert combined == _tally(repo.sessions)  # type: ignore[arg-type]


@st.composite
def crowded(draw: st.DrawFn) -> tuple[list[LiveKitEventRecord], list[LiveKitEventRecord]]:
    """A room where several participants join, publish (cameras, screens, microphones), unpublish and leave within
    seconds of each other, so the 5 s window holds events of several participants at once, and the order they
    arrive in: in order with some events a few places late (reordered inside the window, or past it), some twice.
    A batch loads only the participants it names or moves past the horizon; the others' sessions - closed inside the
    window - must still follow a camera event arriving late, before their close. Some are closed by the sweeper
    (swept or capped) a few seconds before their real left, which then wins and extends their cameras back past
    the horizon: those who retired meanwhile must follow too. The room's metadata changes every few seconds."""
    room = Room("RM_crowd", "crowd", account_id="acct-a", created_at=T0)
    bodies = [lk.room_started(room, T0)]
    closes: list[LiveKitEventRecord] = []
    last = T0
    for index in range(draw(st.integers(3, 8))):
        join = T0 + draw(st.integers(0, 30))
        person = Participant(f"PA_{index}", f"user-{index}", join * 1000 + draw(st.integers(0, 999)))
        left = join + draw(st.integers(0, 30))
        joined = lk.participant_joined(room, person)
        left_lost = not draw(st.integers(0, 4))  # sometimes the left is lost
        if left_lost or draw(st.integers(0, 5)):  # sometimes the join (its start then comes with the left, D163)
            bodies.append(joined)
        if not left_lost:
            bodies.append(lk.participant_left(room, person, left))
        if not draw(st.integers(0, 3)):  # the sweeper closed it first (its real left, if any, comes later and wins)
            (opened,) = rebuild_room([lk.to_record(joined)], AttributionRule())
            closed_at = max(join, left - draw(st.integers(0, 12)))
            kind = draw(st.sampled_from([SWEPT, CAPPED]))
            closes.append(close_event(opened, kind, closed_at, closed_at * 1000))
        last = max(last, left)
        for track in range(draw(st.integers(0, 2))):
            video = draw(st.booleans())
            source = draw(st.sampled_from(["CAMERA", "SCREEN_SHARE"])) if video else "MICROPHONE"
            published = join + draw(st.integers(0, 30))
            track_sid = f"TR_{index}_{track}"
            bodies.append(lk.track_published(room, person, track_sid, published, video=video, source=source))
            if draw(st.booleans()):
                unpublished = published + draw(st.integers(0, 30))
                bodies.append(lk.track_unpublished(room, person, track_sid, unpublished, video=video, source=source))
                last = max(last, unpublished)
    if draw(st.booleans()):
        bodies.append(lk.room_finished(room, last + draw(st.integers(0, 10))))
    records = [lk.to_record(body) for body in bodies]
    # the app replaces the room's metadata every few seconds (another account, none, none valid): the events carrying
    # the whole room report it from then on (D163: a change appended after the latest report may fold, not rebuild)
    for at, text in sorted(draw(st.lists(st.tuples(st.integers(0, 60), st.sampled_from(METADATA)), max_size=6))):
        records = [
            replace(record, room_metadata=text) if record.event_type in FULL_ROOM and record.created_at >= T0 + at
            else record
            for record in records
        ]  # fmt: skip
    events = sorted([*records, *closes], key=lambda e: (e.created_at, e.event_id))
    order = list(events)
    for _ in range(draw(st.integers(0, 6))):  # late by a few places: mostly inside the window, sometimes past it
        index = draw(st.integers(0, len(order) - 1))
        late = order.pop(index)
        order.insert(min(len(order), index + draw(st.integers(1, 8))), late)
    for _ in range(draw(st.integers(0, 2))):
        order.insert(draw(st.integers(0, len(order))), order[draw(st.integers(0, len(order) - 1))])
    return events, order


@settings(max_examples=200, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(crowded())
def test_a_crowded_window_in_any_arrival_gives_the_sessions_and_aggregates_of_a_full_rebuild(scenario) -> None:
    _crowded_equals_a_rebuild(scenario)


@settings(max_examples=200, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(crowded())
def test_a_crowded_window_with_metadata_runs_pruned_from_two_gives_a_full_rebuild(scenario) -> None:
    """The same, pruning the room-metadata runs as soon as the header holds two (D163)."""
    with patch.object(rooms, "PRUNE_RUNS_FROM", 2):
        _crowded_equals_a_rebuild(scenario)


@st.composite
def crowded_listed(draw: st.DrawFn) -> tuple[list[LiveKitEventRecord], list[LiveKitEventRecord]]:
    """A crowded window with the sweeper's synthetic joins (``_listed``) inserted at random positions of the arrival:
    a sweep's join may reach rating before, among or after the window's own events."""
    events, order = draw(crowded())
    extra = _listed(draw, events)
    arrival = list(order)
    for event in extra:
        arrival.insert(draw(st.integers(0, len(arrival))), event)
    return [*events, *extra], arrival


@settings(max_examples=200, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(crowded_listed())
def test_a_crowded_window_with_synthetic_joins_in_any_arrival_gives_a_full_rebuild(scenario) -> None:
    _crowded_equals_a_rebuild(scenario)


@settings(max_examples=100, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(crowded_listed())
def test_a_crowded_window_with_synthetic_joins_and_runs_pruned_from_two_gives_a_full_rebuild(scenario) -> None:
    with patch.object(rooms, "PRUNE_RUNS_FROM", 2):
        _crowded_equals_a_rebuild(scenario)


def _crowded_equals_a_rebuild(scenario: tuple[list[LiveKitEventRecord], list[LiveKitEventRecord]]) -> None:
    events, order = scenario
    repo, publisher = InMemoryUsageRepository(registered(*ACCOUNTS)), RecordingPublisher()
    for event in order:
        repo.store_event(event)
        rate_batch([event], [], repo, publisher, CONFIG, NOW_MS)

    reference = {(s.room_sid, s.participant_sid): s for s in rebuild_room(events, AttributionRule())}
    assert {key: stored.session for key, stored in repo.sessions.items()} == reference
    combined: dict[tuple[str, str, str], int] = {}
    for (account, period), counters in repo.counters.items():
        for (_, meter), quantity in counters.items():
            combined[(account, period, meter)] = combined.get((account, period, meter), 0) + quantity
    assert {key: quantity for key, quantity in combined.items() if quantity} == _tally(repo.sessions)  # type: ignore[arg-type]


def room_reads(repo: InMemoryUsageRepository) -> list[str]:
    """The rooms whose stored events rating reads (a rebuild), in order, from now on."""
    reads: list[str] = []
    original = repo.room_events
    repo.room_events = lambda sid: reads.append(sid) or original(sid)  # type: ignore[method-assign]
    return reads


def rate_one_by_one(
    records: list[LiveKitEventRecord], repo: InMemoryUsageRepository, publisher: RecordingPublisher
) -> None:
    """Each event stored by ingest, then rated in a batch of its own (the stream in order)."""
    for record in records:
        repo.store_event(record)
        rate_batch([record], [], repo, publisher, CONFIG, NOW_MS)


def test_in_order_events_are_folded_without_reading_the_rooms_events() -> None:
    """The common case reads no events: a hand-made room where every event arrives in order."""
    from kilo_dev import livekit_events as lk  # noqa: PLC0415

    t0 = 1_794_312_000
    room = lk.Room("RM_fold", "fold", account_id="acct-a", created_at=t0)
    alice, bob = lk.Participant("PA_a", "alice", t0 * 1000), lk.Participant("PA_b", "bob", (t0 + 60) * 1000)
    bodies = [
        lk.room_started(room, t0),
        lk.participant_joined(room, alice),
        lk.participant_joined(room, bob),
        lk.track_published(room, alice, "TR_cam", t0 + 120, video=True),
        lk.track_unpublished(room, alice, "TR_cam", t0 + 300, video=True),
        lk.participant_left(room, bob, t0 + 600),
        lk.participant_left(room, alice, t0 + 900),
    ]
    records = [lk.to_record(body) for body in bodies]
    repo, publisher = InMemoryUsageRepository(registered(*ACCOUNTS)), RecordingPublisher()
    reads = room_reads(repo)
    rate_one_by_one(records, repo, publisher)
    assert reads == ["RM_fold"]  # only the first batch (no state yet) read the room's events
    # bob: 60..600 = 540 s -> 9 min, video 120..300 = 180 s -> 3 video, 6 audio;
    # alice: 0..900 = 900 s -> 15 min, 3 video, 12 audio
    assert repo.totals("acct-a", "2026-11") == {"video": 6, "audio": 18}
    state = repo.states["RM_fold"]
    assert advance(state, records[:1]) is None  # an event older than the horizon: only a rebuild is exact


def test_a_late_camera_reaches_a_session_closed_after_it_whose_participant_was_not_loaded() -> None:
    """Bob leaves at 102 s; Alice's camera, published at 100 s, arrives after his leave (inside the 5 s window). That
    batch names only Alice and moves nothing past the horizon, so Bob's registers are not read at first; his session
    (closed at 102 s, after the camera went on) must still get its 2 s of video - he is loaded then. The next event
    moves Bob past the horizon and retires him without recomputing his session: a miss here would be final."""
    from kilo_dev import livekit_events as lk  # noqa: PLC0415

    t0 = 1_794_312_000
    room = lk.Room("RM_late_cam", "late-cam", account_id="acct-a", created_at=t0)
    alice = lk.Participant("PA_a", "alice", t0 * 1000)
    bob = lk.Participant("PA_b", "bob", (t0 + 30) * 1000)
    carol = lk.Participant("PA_c", "carol", (t0 + 150) * 1000)
    bodies = [
        lk.room_started(room, t0),
        lk.participant_joined(room, alice),
        lk.participant_joined(room, bob),
        lk.participant_left(room, bob, t0 + 102),
        lk.track_published(room, alice, "TR_cam", t0 + 100, video=True),  # sent before bob's leave, arrives after
        lk.participant_joined(room, carol),
        lk.track_unpublished(room, alice, "TR_cam", t0 + 300, video=True),
        lk.participant_left(room, alice, t0 + 400),
        lk.participant_left(room, carol, t0 + 400),
    ]
    records = [lk.to_record(body) for body in bodies]
    repo, publisher = InMemoryUsageRepository(registered(*ACCOUNTS)), RecordingPublisher()
    reads = room_reads(repo)
    rate_one_by_one(records, repo, publisher)

    assert reads == ["RM_late_cam"]  # folded in order after the first batch, the late camera included
    video = {sid: stored.session.video_seconds for (_, sid), stored in repo.sessions.items()}
    # the camera is on 100..300 s: bob (30..102 s) 2 s, alice (0..400 s) 200 s, carol (150..400 s) 150 s
    assert video == {"PA_a": 200, "PA_b": 2, "PA_c": 150}
    reference = {(s.room_sid, s.participant_sid): s for s in rebuild_room(records, AttributionRule())}
    assert {key: stored.session for key, stored in repo.sessions.items()} == reference


def test_a_rebuild_during_a_backlog_folds_only_delivered_events_and_the_backlog_then_folds_in() -> None:
    """Ingest stored the whole room while rating lagged behind. The first batch (no state yet: a rebuild) folds only
    the stored events the stream has delivered - received by the batch's latest - so the backlog then folds in, in
    order: one rebuild, not one per event. A stale redelivery of that first batch (older than the horizon: rebuilt
    from everything delivered by then) changes nothing."""
    from kilo_dev import livekit_events as lk  # noqa: PLC0415

    t0 = 1_794_312_000
    room = lk.Room("RM_backlog", "backlog", account_id="acct-a", created_at=t0)
    people = [lk.Participant(f"PA_{i}", f"user-{i}", (t0 + 30 * i) * 1000) for i in range(4)]
    bodies = [lk.room_started(room, t0), *(lk.participant_joined(room, person) for person in people)]
    bodies += [
        lk.track_published(room, people[0], "TR_cam", t0 + 200, video=True),
        lk.track_unpublished(room, people[0], "TR_cam", t0 + 500, video=True),
    ]
    bodies += [lk.participant_left(room, person, t0 + 600 + 60 * i) for i, person in enumerate(people)]
    records = [lk.to_record(body, received_at_ms=(t0 + 1000 + n) * 1000) for n, body in enumerate(bodies)]
    repo, publisher = InMemoryUsageRepository(registered(*ACCOUNTS)), RecordingPublisher()
    reads = room_reads(repo)
    for record in records:  # ingest is ahead: everything is stored before rating sees the first batch
        repo.store_event(record)

    rate_batch(records[:3], [], repo, publisher, CONFIG, NOW_MS)
    for record in records[3:]:
        rate_batch([record], [], repo, publisher, CONFIG, NOW_MS)

    assert reads == ["RM_backlog"]  # folding everything stored would have made each later event "late": rebuilds
    # joined at 0, 30, 60, 90 s, left at 600, 660, 720, 780 s: 600, 630, 660, 690 s -> 10, 11, 11, 12 minutes; the
    # camera 200..500 s is inside everyone's connection: 5 video minutes each -> 20 video, 5 + 6 + 6 + 7 = 24 audio
    assert repo.totals("acct-a", "2026-11") == {"video": 20, "audio": 24}
    reference = {(s.room_sid, s.participant_sid): s for s in rebuild_room(records, AttributionRule())}
    assert {key: stored.session for key, stored in repo.sessions.items()} == reference

    stale = rate_batch(records[:3], [], repo, publisher, CONFIG, NOW_MS)  # e.g. a replay from the on-failure queue
    assert reads == ["RM_backlog", "RM_backlog"]  # older than the horizon: rebuilt ...
    assert (stale.sessions_changed, stale.writes) == (0, 0)  # ... from everything delivered: nothing moves back
    assert repo.totals("acct-a", "2026-11") == {"video": 20, "audio": 24}


def _handed_over(changes: int) -> list[LiveKitEventRecord]:
    """An always-on room handed back and forth between acct-a and acct-b every 10 s (UpdateRoomMetadata); each
    newcomer joins 1 s after a change (its own join reports it) and leaves 65 s later. A left reports the metadata in
    force when it is sent: that of the latest join before it."""
    import json  # noqa: PLC0415

    def reporting(body: bytes, metadata: str) -> bytes:
        event = json.loads(body)
        event["room"]["metadata"] = metadata
        return json.dumps(event).encode()

    room = lk.Room("RM_churn", "always-on", account_id="acct-a", created_at=CHURN_T0)
    accounts = ["acct-a", "acct-b"]
    timeline: list[tuple[int, bytes]] = [(CHURN_T0, lk.room_started(room, CHURN_T0))]
    for number in range(changes):
        joined_at = CHURN_T0 + 10 * number + 1
        person = lk.Participant(f"PA_{number:03}", f"user-{number}", joined_at * 1000)
        metadata = json.dumps({"account_id": accounts[number % 2]})
        timeline.append((joined_at, reporting(lk.participant_joined(room, person), metadata)))
        timeline.append((joined_at + 65, lk.participant_left(room, person, joined_at + 65)))
    reported: list[bytes] = []
    current = json.dumps({"account_id": "acct-a"})
    for _, body in sorted(timeline, key=lambda pair: pair[0]):
        event = json.loads(body)
        if event["event"] == "participant_joined":
            current = event["room"]["metadata"]
        reported.append(reporting(body, current))
    return [lk.to_record(body) for body in reported]


CHURN_T0 = 1_794_312_000


def test_an_always_on_room_whose_metadata_changes_every_few_seconds_folds_each_change_without_a_rebuild() -> None:
    """D163: a change of the room's metadata appended after the latest report, while the timeline already holds a
    valid account and no session found by time started after that report, moves no session: it is folded, not
    rebuilt. The room is handed back and forth between two accounts every 10 s; each newcomer's own join reports it."""
    records = _handed_over(20)
    repo, publisher = InMemoryUsageRepository(registered(*ACCOUNTS)), RecordingPublisher()
    reads = room_reads(repo)
    rate_one_by_one(records, repo, publisher)

    assert reads == ["RM_churn"]  # only the first batch (no state yet): none of the 20 changes rebuilt the room
    reference = {(s.room_sid, s.participant_sid): s for s in rebuild_room(records, AttributionRule())}
    assert {key: stored.session for key, stored in repo.sessions.items()} == reference
    # each of the 20 sessions: 65 s -> ceil(1.08) = 2 audio minutes, paid by the account its own join reported
    # (10 sessions each)
    assert repo.totals("acct-a", "2026-11") == {"audio": 20}
    assert repo.totals("acct-b", "2026-11") == {"audio": 20}
    assert len(repo.states["RM_churn"].fold.metadata) > 1  # the timeline has kept the changes (too few to prune)


def test_an_always_on_room_keeps_a_bounded_metadata_timeline_and_bills_each_session_its_own_account() -> None:
    """D163 (pruned runs): 300 changes, every 10 s. The header keeps the runs from the earliest live participant's
    run on (and the latest valid account before it): at most ``PRUNE_RUNS_FROM`` runs at any step, instead of one per
    change (~40 B each, until the header is too large to store and the room is rebuilt per batch). Pruning loads
    every live participant (not the room's events): the room is read once, at its first batch."""
    from kilo_rate_usage.rooms import PRUNE_RUNS_FROM  # noqa: PLC0415

    records = _handed_over(300)
    repo, publisher = InMemoryUsageRepository(registered(*ACCOUNTS)), RecordingPublisher()
    reads = room_reads(repo)
    longest = 0
    for record in records:
        repo.store_event(record)
        rate_batch([record], [], repo, publisher, CONFIG, NOW_MS)
        longest = max(longest, len(repo.states["RM_churn"].fold.metadata))

    assert reads == ["RM_churn"]
    assert longest <= PRUNE_RUNS_FROM == 32  # before: 301 runs at the end (one per change and the room's first)
    assert repo.states["RM_churn"].fold.metadata_offset >= 300 - PRUNE_RUNS_FROM
    # each of the 300 sessions: 65 s -> 2 audio minutes, to the account its own join reported (150 sessions each)
    assert repo.totals("acct-a", "2026-11") == {"audio": 300}
    assert repo.totals("acct-b", "2026-11") == {"audio": 300}
    reference = {(s.room_sid, s.participant_sid): s for s in rebuild_room(records, AttributionRule())}
    assert {key: stored.session for key, stored in repo.sessions.items()} == reference


def test_a_session_found_by_time_before_the_pruned_runs_is_rebuilt_and_bills_the_metadata_at_its_start() -> None:
    """A participant whose join was lost (its start known only from its late left's ``joinedAtMs``) started at
    t0 + 5 s, before runs pruned since: its run is found by time (the first report at or after its start: the join
    at t0 + 11 s handing the room to acct-b), so the state cannot answer it - the room is rebuilt."""
    records = _handed_over(60)
    ghost = lk.Participant("PA_ghost", "ghost", (CHURN_T0 + 5) * 1000)
    room = lk.Room("RM_churn", "always-on", account_id="acct-a", created_at=CHURN_T0)
    left_at = CHURN_T0 + 10 * 59 + 1 + 65 + 1  # one second after the last left
    records.append(lk.to_record(lk.participant_left(room, ghost, left_at)))
    repo, publisher = InMemoryUsageRepository(registered(*ACCOUNTS)), RecordingPublisher()
    reads = room_reads(repo)
    rate_one_by_one(records[:-1], repo, publisher)
    assert repo.states["RM_churn"].fold.metadata_offset > 2  # the ghost's run has been pruned
    rate_one_by_one(records[-1:], repo, publisher)

    # the ghost: t0+5 .. t0+657 = 652 s -> ceil(10.87) = 11 audio minutes, to acct-b; 60 sessions of 2 minutes
    assert repo.totals("acct-b", "2026-11") == {"audio": 60 + 11}
    assert repo.totals("acct-a", "2026-11") == {"audio": 60}
    assert reads == ["RM_churn", "RM_churn"]  # the first batch, and the ghost's left


@st.composite
def churn_with_lost_joins(draw: st.DrawFn) -> tuple[list[LiveKitEventRecord], list[LiveKitEventRecord]]:
    """An always-on room handed over every 10 s, plus participants whose join was lost: each leaves at a drawn time,
    its start (``joinedAtMs`` on the left) drawn anywhere before, so its metadata run - found by time - may be one
    the state has pruned; the order mostly the stream's, some events a few places late."""
    changes = draw(st.integers(3, 24))
    records = _handed_over(changes)
    room = lk.Room("RM_churn", "always-on", account_id="acct-a", created_at=CHURN_T0)
    end = CHURN_T0 + 10 * changes + 70
    for number in range(draw(st.integers(1, 3))):
        left_at = draw(st.integers(CHURN_T0 + 1, end))
        start = draw(st.integers(CHURN_T0, left_at))
        ghost = lk.Participant(f"PA_lost_{number}", f"lost-{number}", start * 1000 + draw(st.integers(0, 999)))
        records.append(lk.to_record(lk.participant_left(room, ghost, left_at)))
    events = sorted(records, key=lambda e: (e.created_at, e.event_id))
    order = list(events)
    for _ in range(draw(st.integers(0, 3))):
        index = draw(st.integers(0, len(order) - 1))
        late = order.pop(index)
        order.insert(min(len(order), index + draw(st.integers(1, 6))), late)
    return events, order


@settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(churn_with_lost_joins(), st.sampled_from([2, 3, 5]))
def test_a_handed_over_room_with_lost_joins_and_runs_pruned_gives_a_full_rebuild(scenario, prune_from: int) -> None:
    """Incremental rating with the runs pruned early equals a rebuild, lost joins included (D163)."""
    with patch.object(rooms, "PRUNE_RUNS_FROM", prune_from):
        _crowded_equals_a_rebuild(scenario)


def test_a_swept_close_dated_before_its_start_is_the_same_incrementally_and_rebuilt() -> None:
    # the case the crowded-window property found with D376's 1 s floor (PA_6): PA_6 joinedAtMs T0+0.001 s, swept
    # dated back to T0 (before its start); PA_0 joins at T0+1 and publishes a camera at T0+1 (open). Rated one event
    # per batch, PA_6 closed before the camera is known. Without the floor PA_6 lasts 0 s (T0+0.001 .. T0+0.001):
    # no video overlap, 0 minutes both ways (with the floor the rebuild gave 1 video minute, the incremental 1 audio)
    room = Room("RM_crowd", "crowd", account_id="acct-a", created_at=T0)
    six = Participant("PA_6", "user-6", T0 * 1000 + 1)
    zero = Participant("PA_0", "user-0", (T0 + 1) * 1000)
    joined6 = lk.to_record(lk.participant_joined(room, six))
    (opened,) = rebuild_room([joined6], AttributionRule())
    order = [
        lk.to_record(lk.room_started(room, T0)),
        joined6,
        close_event(opened, SWEPT, T0, T0 * 1000),
        lk.to_record(lk.participant_joined(room, zero)),
        lk.to_record(lk.track_published(room, zero, "TR_0_1", T0 + 1, video=True)),
    ]
    repo, publisher = InMemoryUsageRepository(registered("acct-a")), RecordingPublisher()
    for event in order:
        repo.store_event(event)
        rate_batch([event], [], repo, publisher, CONFIG, NOW_MS)
    reference = {(s.room_sid, s.participant_sid): s for s in rebuild_room(order, AttributionRule())}
    stored = {key: s.session for key, s in repo.sessions.items()}
    assert stored[("RM_crowd", "PA_6")].parts == ()
    assert stored == reference
