"""The sweeper's decisions (``kilo_rate_usage.sweeper``), with hand-set times: swept when LiveKit says gone, left open
when LiveKit lists the participant whatever the session's length, capped only when LiveKit could not vouch for it for
the limit - at the last confirmation. Run through the in-memory store and a static RoomService."""

from __future__ import annotations

from fractions import Fraction

import pytest

from kilo_rate_usage.model import CAPPED, SWEPT, Billing, Session, StoredSession, SweepPolicy
from kilo_rate_usage.sweeper import run_sweep
from tests.fakes import InMemoryUsageRepository, StaticRoomDirectory

T0_MS = 1_794_787_200_000  # 2026-11-16T00:00:00Z
HOUR_MS = 3_600_000
POLICY = SweepPolicy(max_unconfirmed_ms=24 * HOUR_MS, confirm_every_ms=HOUR_MS)
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
    directory = StaticRoomDirectory({"standup": {"PA_here"}, "ended": None})

    outcome, _, _ = run_sweep(store, directory, T0_MS, POLICY, EXPIRES)

    assert closes(store) == {"PA_gone": (SWEPT, T0_MS // 1000), "PA_room_gone": (SWEPT, T0_MS // 1000)}
    assert (outcome.swept, outcome.capped, outcome.confirmed) == (2, 0, 0)  # PA_here had a room event 1 s ago
    assert directory.asked == [["ended", "standup"]]


def test_given_a_quiet_listed_session_then_its_confirmation_is_recorded_at_most_hourly() -> None:
    quiet = open_session("PA_agent", "agents", T0_MS - 30 * HOUR_MS, T0_MS - 30 * HOUR_MS)
    store = store_with(quiet)
    directory = StaticRoomDirectory({"agents": {"PA_agent"}})

    run_sweep(store, directory, T0_MS, POLICY, EXPIRES)
    run_sweep(store, directory, T0_MS + 30 * 60_000, POLICY, EXPIRES)  # half an hour later: not again
    assert store.confirmed == {quiet.session.key: T0_MS}
    run_sweep(store, directory, T0_MS + HOUR_MS, POLICY, EXPIRES)  # an hour later: recorded again
    assert store.confirmed == {quiet.session.key: T0_MS + HOUR_MS}
    assert store.closes == {}


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


def test_given_a_close_already_written_then_a_second_sweep_writes_nothing_new() -> None:
    store = store_with(open_session("PA_gone", "standup", T0_MS - 600_000, T0_MS - 600_000))
    directory = StaticRoomDirectory({"standup": set()})

    first, _, _ = run_sweep(store, directory, T0_MS, POLICY, EXPIRES)
    second, _, _ = run_sweep(store, directory, T0_MS + 300_000, POLICY, EXPIRES)  # rating has not rated it yet

    assert (first.swept, second.swept) == (1, 0)
    assert closes(store) == {"PA_gone": (SWEPT, T0_MS // 1000)}


def test_given_a_policy_whose_confirmations_are_rarer_than_the_limit_then_refused() -> None:
    with pytest.raises(ValueError, match="more often"):
        SweepPolicy(max_unconfirmed_ms=HOUR_MS, confirm_every_ms=2 * HOUR_MS)
