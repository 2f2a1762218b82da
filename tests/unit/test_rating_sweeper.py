"""The sweeper's decisions (``kilo_rate_usage.sweeper``), with hand-set times: swept when LiveKit says gone, left open
when LiveKit lists the participant whatever the session's length, capped only when LiveKit could not vouch for it for
the limit - at the last confirmation. Run through the in-memory store and a static RoomService."""

from __future__ import annotations

from collections.abc import Iterable
from fractions import Fraction

import pytest

from kilo_billing.livekit_events import LiveKitEventRecord
from kilo_rate_usage.model import (
    CAPPED,
    SWEPT,
    Billing,
    RoomListing,
    Session,
    StoredSession,
    SweepPolicy,
    SweptRoom,
)
from kilo_rate_usage.sweeper import run_sweep
from tests.fakes import InMemoryUsageRepository, StaticRoomDirectory

T0_MS = 1_794_787_200_000  # 2026-11-16T00:00:00Z
HOUR_MS = 3_600_000
POLICY = SweepPolicy(max_unconfirmed_ms=24 * HOUR_MS, listing_ttl_ms=31 * 24 * HOUR_MS)
EXPIRES = 2_000_000_000


def open_session(sid: str, room: str, start_ms: int, as_of_ms: int) -> StoredSession:
    session = Session(f"RM_{room}", sid, sid.lower(), "STANDARD", "acct", start_ms, None, None, False,
                      Billing.ROOM_RULE, Fraction(0), Fraction(0), (), as_of_ms=as_of_ms, room_name=room)  # fmt: skip
    return StoredSession.of(session, {})


def store_with(*sessions: StoredSession) -> InMemoryUsageRepository:
    store = InMemoryUsageRepository()
    for stored in sessions:
        store.sessions[stored.session.key] = stored
    return store


def closes(store: InMemoryUsageRepository) -> dict[str, tuple[str, int]]:
    return {event.participant_sid: (event.event_type, event.created_at) for event in store.closes.values()}


def test_given_livekit_says_gone_then_swept_now_and_listed_sessions_stay_open_however_old() -> None:
    store = store_with(
        open_session("PA_gone", "standup", T0_MS - 600_000, T0_MS - 600_000),
        open_session("PA_here", "standup", T0_MS - 72 * HOUR_MS, T0_MS - 1_000),  # 3 days old, recent room event
        open_session("PA_room_gone", "ended", T0_MS - 60_000, T0_MS - 60_000),
    )
    # the previous sweep, 5 minutes before T0, listed everybody (RoomService answering every sweep: the normal case)
    directory = StaticRoomDirectory({"standup": {"PA_gone", "PA_here"}, "ended": {"PA_room_gone"}})
    run_sweep(store, directory, T0_MS - 300_000, POLICY, EXPIRES)
    assert store.closes == {}

    directory.rooms = {"standup": {"PA_here"}, "ended": None}
    outcome, _, _ = run_sweep(store, directory, T0_MS, POLICY, EXPIRES)

    assert closes(store) == {"PA_gone": (SWEPT, T0_MS // 1000), "PA_room_gone": (SWEPT, T0_MS // 1000)}
    assert (outcome.swept, outcome.capped, outcome.listed) == (2, 0, 1)  # PA_here listed (a room event 1 s ago)
    assert directory.asked == [["ended", "standup"], ["ended", "standup"]]
    # one listing per room that listed an open session's participant: the gone room keeps its previous one
    assert store.listings == {
        "RM_standup": RoomListing(T0_MS, frozenset({"PA_here"})),
        "RM_ended": RoomListing(T0_MS - 300_000, frozenset({"PA_room_gone"})),
    }


@pytest.mark.parametrize(
    ("listed_at_ms", "confirmed_at_ms", "closed_at_ms"),
    [
        # the previous sweep (5 min before) listed it: the participant_left was lost since -> at the sweep that noticed
        pytest.param(T0_MS - 300_000, None, T0_MS, id="listed_one_sweep_before_closed_now"),
        # 7.5 min (the gap, one interval and a half) still counts as the previous sweep
        pytest.param(T0_MS - 450_000, None, T0_MS, id="listed_at_the_gap_closed_now"),
        # RoomService unreachable for 20 h (no cap yet: < 24 h), then the room is gone -> at its last listing
        pytest.param(T0_MS - 20 * HOUR_MS, None, T0_MS - 20 * HOUR_MS, id="outage_20h_closed_at_last_listing"),
        # 10 minutes without an answer (two sweeps missed) -> at its last listing, not now
        pytest.param(T0_MS - 600_000, None, T0_MS - 600_000, id="two_missed_sweeps_closed_at_last_listing"),
        # no listing yet (the first sweep after the upgrade), a confirmation written before it: vouches until then
        pytest.param(None, T0_MS - 20 * HOUR_MS, T0_MS - 20 * HOUR_MS, id="confirmation_before_the_listings"),
        # never listed (no listing recorded, e.g. the first sweep after an upgrade): its last room event
        pytest.param(None, None, T0_MS - 30 * HOUR_MS, id="never_listed_closed_at_last_room_event"),
    ],
)
def test_given_a_session_roomservice_no_longer_lists_then_closed_at_now_only_if_vouched_for_one_sweep_before(
    listed_at_ms: int | None, confirmed_at_ms: int | None, closed_at_ms: int
) -> None:
    # started 40 h before T0, last room event 30 h before T0 (a quiet agent), gone now
    session = open_session("PA_agent", "agents", T0_MS - 40 * HOUR_MS, T0_MS - 30 * HOUR_MS)
    store = store_with(session)
    if listed_at_ms is not None:
        store.listings["RM_agents"] = RoomListing(listed_at_ms, frozenset({"PA_agent", "PA_other"}))
    if confirmed_at_ms is not None:
        store.confirmed[session.session.key] = confirmed_at_ms

    outcome, _, _ = run_sweep(store, StaticRoomDirectory({"agents": None}), T0_MS, POLICY, EXPIRES)

    assert closes(store) == {"PA_agent": (SWEPT, closed_at_ms // 1000)}
    assert outcome.swept == 1


def test_given_a_listing_that_did_not_list_the_participant_then_it_vouches_for_nothing() -> None:
    session = open_session("PA_late", "agents", T0_MS - 2 * HOUR_MS, T0_MS - 2 * HOUR_MS)
    store = store_with(session)
    store.listings["RM_agents"] = RoomListing(T0_MS - 300_000, frozenset({"PA_other"}))

    run_sweep(store, StaticRoomDirectory({"agents": {"PA_other"}}), T0_MS, POLICY, EXPIRES)

    # only its join (2 h before T0) vouches for it
    assert closes(store) == {"PA_late": (SWEPT, (T0_MS - 2 * HOUR_MS) // 1000)}


def test_given_roomservice_unanswered_then_a_cap_is_at_the_last_listing_when_newer_than_the_confirmation() -> None:
    session = open_session("PA_agent", "agents", T0_MS - 30 * HOUR_MS, T0_MS - 30 * HOUR_MS)
    store = store_with(session)
    store.confirmed[session.session.key] = T0_MS  # the hourly confirmation
    store.listings["RM_agents"] = RoomListing(T0_MS + 40 * 60_000, frozenset({"PA_agent"}))  # listed 40 min later
    directory = StaticRoomDirectory(unreachable=["agents"])

    run_sweep(store, directory, T0_MS + 24 * HOUR_MS + 30 * 60_000, POLICY, EXPIRES)  # 23 h 50 min since the listing
    assert store.closes == {}
    run_sweep(store, directory, T0_MS + 24 * HOUR_MS + 40 * 60_000, POLICY, EXPIRES)  # 24 h since the listing

    assert closes(store) == {"PA_agent": (CAPPED, (T0_MS + 40 * 60_000) // 1000)}


def test_given_a_quiet_listed_session_then_only_its_rooms_listing_records_it_with_a_ttl_from_the_policy() -> None:
    quiet = open_session("PA_agent", "agents", T0_MS - 30 * HOUR_MS, T0_MS - 30 * HOUR_MS)
    store = store_with(quiet)
    directory = StaticRoomDirectory({"agents": {"PA_agent"}})
    policy = SweepPolicy(max_unconfirmed_ms=24 * HOUR_MS, listing_ttl_ms=48 * HOUR_MS)

    run_sweep(store, directory, T0_MS, policy, EXPIRES)
    run_sweep(store, directory, T0_MS + HOUR_MS, policy, EXPIRES)  # an hour later

    assert store.confirmed == {}  # no per-session confirmation: the listing says the same, every sweep
    assert store.listings == {"RM_agents": RoomListing(T0_MS + HOUR_MS, frozenset({"PA_agent"}))}
    assert store.listing_expiry == {"RM_agents": (T0_MS + HOUR_MS) // 1000 + 48 * 3600}  # its answer + 48 h
    assert store.closes == {}


def test_given_an_older_sweep_running_late_then_it_never_replaces_the_newer_listing() -> None:
    session = open_session("PA_agent", "agents", T0_MS - 2 * HOUR_MS, T0_MS - 2 * HOUR_MS)
    store = store_with(session)
    # the sweep of T0 + 5 min answered (listed the agent) and recorded it ...
    run_sweep(store, StaticRoomDirectory({"agents": {"PA_agent"}}), T0_MS + 300_000, POLICY, EXPIRES)
    # ... then the sweep of T0, delayed (a retry, a slow RoomService), gets its answer and records it last
    run_sweep(store, StaticRoomDirectory({"agents": {"PA_agent", "PA_other"}}), T0_MS, POLICY, EXPIRES)

    assert store.listings == {"RM_agents": RoomListing(T0_MS + 300_000, frozenset({"PA_agent"}))}


@pytest.mark.parametrize(
    ("hours_unanswered", "capped_at_ms"),
    [
        pytest.param(23, None, id="23h_unvouched_stays_open"),
        pytest.param(24, T0_MS, id="24h_unvouched_capped_at_last_confirmation"),
    ],
)
def test_given_roomservice_unanswered_then_capped_only_after_the_limit_at_the_last_confirmation(
    hours_unanswered: int, capped_at_ms: int | None
) -> None:
    session = open_session("PA_agent", "agents", T0_MS - 30 * HOUR_MS, T0_MS - 30 * HOUR_MS)
    store = store_with(session)
    store.confirmed[session.session.key] = T0_MS  # RoomService listed it at T0; nothing since

    outcome, answers, _ = run_sweep(
        store, StaticRoomDirectory(unreachable=["agents"]), T0_MS + hours_unanswered * HOUR_MS, POLICY, EXPIRES
    )

    assert answers.unanswered == {"agents": "unreachable"}
    if capped_at_ms is None:
        assert (store.closes, outcome.capped) == ({}, 0)
    else:
        assert closes(store) == {"PA_agent": (CAPPED, capped_at_ms // 1000)}
        assert outcome.capped == 1


def test_given_no_confirmation_recorded_then_the_last_room_event_is_the_last_confirmation() -> None:
    # started 40 h before T0, last room event 25 h before T0, never listed by RoomService
    store = store_with(open_session("PA_x", "flaky", T0_MS - 40 * HOUR_MS, T0_MS - 25 * HOUR_MS))

    run_sweep(store, StaticRoomDirectory(unreachable=["flaky"]), T0_MS, POLICY, EXPIRES)

    assert closes(store) == {"PA_x": (CAPPED, (T0_MS - 25 * HOUR_MS) // 1000)}


def stored_event(room: str, event_id: str, at_s: int) -> LiveKitEventRecord:
    """A LiveKit event stored in the room's partition (rated or not: the state the sweeper reads may not show it)."""
    return LiveKitEventRecord(event_id, "track_published", at_s, "APIkey", b"", at_s * 1000, room_sid=f"RM_{room}",
                              room_name=room, participant_sid="PA_other")  # fmt: skip


class CountingLastEvents(InMemoryUsageRepository):
    """The in-memory store, recording which rooms' events the sweeper queried for their latest createdAt."""

    def __init__(self) -> None:
        super().__init__()
        self.queried: list[set[str]] = []

    def last_event_ms(self, room_sids: Iterable[str]) -> dict[str, int]:
        self.queried.append(set(room_sids))
        return super().last_event_ms(room_sids)


def test_given_a_cap_due_by_the_room_s_state_then_the_room_s_stored_events_move_it_or_avoid_it() -> None:
    """No room state (or an unusable one) and RoomService unreachable: the session's own evidence is 30 h old, but
    the room's events table holds later events - a cap is at the latest of them (D197), or not due at all."""
    store = CountingLastEvents()
    for stored in (open_session("PA_a", "quiet", T0_MS - 30 * HOUR_MS, 0), open_session("PA_b", "busy",
                   T0_MS - 30 * HOUR_MS, 0), open_session("PA_c", "fresh", T0_MS - 30 * HOUR_MS, 0)):  # fmt: skip
        store.sessions[stored.session.key] = stored
    store.store_event(stored_event("quiet", "EV_q", (T0_MS - 26 * HOUR_MS) // 1000))  # 26 h ago: capped there
    store.store_event(stored_event("busy", "EV_b", (T0_MS - HOUR_MS) // 1000))  # 1 h ago: no cap due
    directory = StaticRoomDirectory(unreachable={"quiet", "busy", "fresh"})
    outcome, _, _ = run_sweep(store, directory, T0_MS, POLICY, EXPIRES)
    # quiet: capped at its room's last event T0 - 26 h (before: at its start, T0 - 30 h); busy: left open (before:
    # capped at its start); fresh: no event after its start in the table - capped at its start, as before
    assert closes(store) == {
        "PA_a": (CAPPED, (T0_MS - 26 * HOUR_MS) // 1000),
        "PA_c": (CAPPED, (T0_MS - 30 * HOUR_MS) // 1000),
    }
    assert outcome.capped == 2
    assert store.queried == [{"RM_quiet", "RM_busy", "RM_fresh"}]  # one read, of the rooms with a dated-back close


def test_given_closes_at_the_sweep_only_then_no_room_s_events_are_read() -> None:
    store = CountingLastEvents()
    store.sessions[("RM_standup", "PA_gone")] = open_session("PA_gone", "standup", T0_MS - 600_000, T0_MS - 60_000)
    run_sweep(store, StaticRoomDirectory({"standup": set()}), T0_MS, POLICY, EXPIRES)
    assert closes(store) == {"PA_gone": (SWEPT, T0_MS // 1000)}  # the room's event 60 s before vouched: at the sweep
    assert store.queried == []  # the normal case costs nothing more


def test_given_a_close_already_written_then_a_second_sweep_writes_nothing_new() -> None:
    store = store_with(open_session("PA_gone", "standup", T0_MS - 600_000, T0_MS - 600_000))
    directory = StaticRoomDirectory({"standup": set()})

    first, _, _ = run_sweep(store, directory, T0_MS, POLICY, EXPIRES)
    second, _, _ = run_sweep(store, directory, T0_MS + 300_000, POLICY, EXPIRES)  # rating has not rated it yet

    assert (first.swept, second.swept) == (1, 0)
    # never listed by a previous sweep: closed at its join, 10 min before T0 (the first close stays)
    assert closes(store) == {"PA_gone": (SWEPT, (T0_MS - 600_000) // 1000)}


def test_given_a_policy_whose_listings_expire_within_the_limit_then_refused() -> None:
    with pytest.raises(ValueError, match="longer than the unconfirmed limit"):
        SweepPolicy(max_unconfirmed_ms=24 * HOUR_MS, listing_ttl_ms=24 * HOUR_MS)
    with pytest.raises(ValueError, match="gap"):
        SweepPolicy(max_unconfirmed_ms=24 * HOUR_MS, listing_ttl_ms=31 * 24 * HOUR_MS, vouched_gap_ms=0)


def joined(room: str, n: int, at_ms: int) -> LiveKitEventRecord:
    return LiveKitEventRecord(f"EV_{room}_{n}", "participant_joined", at_ms // 1000, "APIkey", b"", at_ms,
                              room_sid=f"RM_{room}", room_name=room, participant_sid=f"PA_{room}_{n}",
                              participant_identity=f"id-{n}", joined_at_ms=at_ms)  # fmt: skip


def state_at(store: InMemoryUsageRepository, room: str, last_ms: int) -> None:
    """A running state of the room whose last event (two joins, the second inside the window) is at ``last_ms``."""
    from kilo_rate_usage.ports import CommitUnit, StateChange  # noqa: PLC0415
    from kilo_rate_usage.rooms import from_events  # noqa: PLC0415

    events = [joined(room, n, at) for n, at in enumerate((last_ms - 600_000, last_ms))]
    state = from_events(f"RM_{room}", events)
    store.commit(CommitUnit(states=[StateChange(state, 0, dict(state.fold.participants), (), True)]), last_ms)


def test_given_swept_rooms_then_only_those_quiet_for_an_hour_with_nothing_open_lose_their_state() -> None:
    """D219: the marks of rooms the sweeper closed sessions of. Quiet for 2 h with nothing open: dropped (and
    its mark); a session open again, a last rated event 30 min old, an event stored 10 min ago but not rated yet:
    kept, marks kept; no state at all: only the mark goes. The dropped room keeps its mark, naming the version its
    drop wrote (D222)."""
    store = InMemoryUsageRepository()
    for room in ("quiet", "busy", "recent", "behind"):
        state_at(store, room, T0_MS - (30 * 60_000 if room == "recent" else 2 * HOUR_MS))
    store.sessions[("RM_busy", "PA_back")] = open_session("PA_back", "busy", T0_MS - HOUR_MS, T0_MS - HOUR_MS)
    store.store_event(stored_event("behind", "EV_late", (T0_MS - 600_000) // 1000))
    store.mark_swept_rooms(["RM_quiet", "RM_busy", "RM_recent", "RM_behind", "RM_gone"], T0_MS - 2 * HOUR_MS, EXPIRES)
    generation = store.states["RM_quiet"].generation
    assert store.participants[("RM_quiet", generation)]  # the state's participant items

    outcome, _, _ = run_sweep(store, StaticRoomDirectory({"busy": {"PA_back"}}), T0_MS, POLICY, EXPIRES)

    assert outcome.dropped_states == 1
    assert {room: state.usable for room, state in store.states.items()} == {
        "RM_quiet": False, "RM_busy": True, "RM_recent": True, "RM_behind": True,
    }  # fmt: skip
    assert store.states["RM_quiet"].version == 2  # the version still orders writers
    assert ("RM_quiet", generation) not in store.participants
    assert store.swept_rooms() == {
        "RM_quiet": SweptRoom(T0_MS - 2 * HOUR_MS, 2),
        **dict.fromkeys(["RM_busy", "RM_recent", "RM_behind"], SweptRoom(T0_MS - 2 * HOUR_MS)),
    }


def test_given_a_dropped_room_rebuilt_by_a_late_event_then_the_next_quiet_sweep_drops_it_again() -> None:
    """D222: after the drop, the room's mark stays with the version the drop wrote. While the header is still
    there nothing is done; a late event's rebuild (a running state again, no room_finished) is dropped again once
    quiet; a rebuild that ends the room (its room_finished came late: a header the sweeper did not write) has its
    generation's items deleted and its mark forgotten."""
    from kilo_rate_usage.ports import CommitUnit, StateChange  # noqa: PLC0415
    from kilo_rate_usage.rooms import RoomState, from_events  # noqa: PLC0415

    store = InMemoryUsageRepository()
    state_at(store, "late", T0_MS - 2 * HOUR_MS)
    store.mark_swept_rooms(["RM_late"], T0_MS - 2 * HOUR_MS, EXPIRES)
    assert run_sweep(store, StaticRoomDirectory({}), T0_MS, POLICY, EXPIRES)[0].dropped_states == 1
    dropped = store.states["RM_late"]
    assert (dropped.usable, dropped.version) == (False, 2)
    assert run_sweep(store, StaticRoomDirectory({}), T0_MS + 300_000, POLICY, EXPIRES)[0].dropped_states == 0
    assert store.states["RM_late"] is dropped  # untouched: no write
    assert store.swept_rooms() == {"RM_late": SweptRoom(T0_MS - 2 * HOUR_MS, 2)}

    # a late event rebuilds the room: a running state again, under a new generation
    rebuilt = from_events("RM_late", [joined("late", n, T0_MS - 2 * HOUR_MS - 600_000 * n) for n in (0, 1)])
    store.commit(CommitUnit(states=[StateChange(rebuilt, 2, dict(rebuilt.fold.participants), (), True)]), T0_MS)
    generation = store.states["RM_late"].generation
    assert store.states["RM_late"].usable
    assert store.participants[("RM_late", generation)]
    outcome, _, _ = run_sweep(store, StaticRoomDirectory({}), T0_MS + 600_000, POLICY, EXPIRES)
    assert outcome.dropped_states == 1  # before: 0, and the rebuilt state for good
    assert (store.states["RM_late"].usable, store.states["RM_late"].version) == (False, 4)
    assert ("RM_late", generation) not in store.participants
    assert store.swept_rooms() == {"RM_late": SweptRoom(T0_MS - 2 * HOUR_MS, 4)}

    # the room finished late: rating wrote a header of its own (version 5) - its generation's items go, and the mark
    finished = RoomState.unusable("RM_late", 0)
    store.commit(CommitUnit(states=[StateChange(finished, 4, dict(rebuilt.fold.participants), (), True)]), T0_MS)
    generation = store.states["RM_late"].generation
    assert store.participants[("RM_late", generation)]
    assert run_sweep(store, StaticRoomDirectory({}), T0_MS + 900_000, POLICY, EXPIRES)[0].dropped_states == 0
    assert ("RM_late", generation) not in store.participants
    assert store.swept_rooms() == {}
