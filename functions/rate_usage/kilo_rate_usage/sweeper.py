"""The sweeper: closes open sessions LiveKit no longer has, and caps only those LiveKit cannot vouch for
(docs/decisions.md D17).

Every run asks RoomService about every room with an open session:
- the room is gone, or the participant is not listed -> a ``swept`` close at now (a lost ``participant_left``);
- the participant is listed -> confirmed: the session stays open whatever its length (an AI agent's or an always-on
  room may be live for days); for a quiet session (no room event for ``confirm_every``) the confirmation is recorded;
- RoomService gave no answer for the room (error, timeout, not configured) -> nothing is concluded, unless LiveKit has
  not vouched for the session for ``max_unconfirmed`` (no room event, no recorded confirmation): then it is ``capped``
  at its last confirmation, the last moment LiveKit saw it.
Closes are synthetic events in the room's event partition: rating rebuilds the room as for any event, and a late real
``participant_left`` or ``room_finished`` still wins - a cap is provisional, the minutes come back with the real close.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field, replace

from kilo_billing.events import LiveKitEventRecord
from kilo_rate_usage.model import (
    CAPPED,
    SWEEPER_API_KEY,
    SWEPT,
    RoomAnswers,
    Session,
    SessionKey,
    StoredSession,
    SweepOutcome,
    SweepPolicy,
)
from kilo_rate_usage.ports import RoomDirectory, SweeperStore


def close_event(session: Session, event_type: str, at_s: int, now_ms: int) -> LiveKitEventRecord:
    """The synthetic close of one session (one id per session and kind: a second sweep writes a duplicate)."""
    kind = "swept" if event_type == SWEPT else "capped"
    return LiveKitEventRecord(
        event_id=f"kilo-{kind}-{session.participant_sid}",
        event_type=event_type,
        created_at=at_s,
        api_key=SWEEPER_API_KEY,
        body=b"{}",
        received_at_ms=now_ms,
        room_sid=session.room_sid,
        room_name=session.room_name,
        participant_sid=session.participant_sid,
        participant_identity=session.identity,
    )


def with_room_activity(store: SweeperStore, sessions: Sequence[StoredSession]) -> list[StoredSession]:
    """Open sessions with the time of their room's last event (``as_of_ms``), read from the rooms' states: stored
    sessions hold nothing that changes with the clock, so that every room event does not rewrite every open session."""
    states = store.room_states({stored.session.room_sid for stored in sessions})
    result = []
    for stored in sessions:
        state = states.get(stored.session.room_sid)
        if state is None:
            result.append(stored)
            continue
        session = replace(stored.session, as_of_ms=max(stored.session.as_of_ms, state.last_event_ms))
        result.append(replace(stored, session=session))
    return result


def last_evidence_ms(session: Session) -> int:
    """The last moment the events vouch for an open session: its start, or the room's last event."""
    return max(session.start_ms, session.as_of_ms)


def quiet(sessions: Sequence[StoredSession], now_ms: int, policy: SweepPolicy) -> list[SessionKey]:
    """Open sessions without a room event for ``confirm_every``: their recorded confirmations matter."""
    return [s.session.key for s in sessions if now_ms - last_evidence_ms(s.session) >= policy.confirm_every_ms]


@dataclass(frozen=True, slots=True)
class SweepPlan:
    closes: list[LiveKitEventRecord] = field(default_factory=list)
    confirm: list[SessionKey] = field(default_factory=list)


def plan_sweep(
    open_sessions: Sequence[StoredSession],
    answers: RoomAnswers,
    confirmations: Mapping[SessionKey, int],
    now_ms: int,
    policy: SweepPolicy,
) -> SweepPlan:
    plan = SweepPlan()
    for stored in open_sessions:
        session = stored.session
        last = max(last_evidence_ms(session), confirmations.get(session.key, 0))
        if session.room_name in answers.present:
            here = answers.present[session.room_name]
            if here is None or session.participant_sid not in here:
                plan.closes.append(close_event(session, SWEPT, now_ms // 1000, now_ms))
            elif now_ms - last >= policy.confirm_every_ms:
                plan.confirm.append(session.key)
        elif now_ms - last >= policy.max_unconfirmed_ms:
            plan.closes.append(close_event(session, CAPPED, last // 1000, now_ms))
    return plan


def run_sweep(
    store: SweeperStore, directory: RoomDirectory, now_ms: int, policy: SweepPolicy, expires_at: int
) -> tuple[SweepOutcome, RoomAnswers, list[LiveKitEventRecord]]:
    """One sweep: ask, decide, write the closes and confirmations. Returns the outcome, what RoomService said and the
    closes written (for the handler's logs)."""
    open_sessions = with_room_activity(store, store.open_sessions())
    rooms = sorted({stored.session.room_name for stored in open_sessions if stored.session.room_name})
    answers = directory.participants(rooms) if rooms else RoomAnswers()
    confirmations = store.confirmations(quiet(open_sessions, now_ms, policy))
    plan = plan_sweep(open_sessions, answers, confirmations, now_ms, policy)
    written = [close for close in plan.closes if store.add_close(close, expires_at)]
    if plan.confirm:
        store.confirm(plan.confirm, now_ms)
    outcome = SweepOutcome(
        open=len(open_sessions),
        swept=sum(1 for close in written if close.event_type == SWEPT),
        capped=sum(1 for close in written if close.event_type == CAPPED),
        confirmed=len(plan.confirm),
        unanswered_rooms=len(answers.unanswered),
    )
    return outcome, answers, written
