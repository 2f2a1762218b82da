"""The sweeper: closes sessions LiveKit no longer has (lost ``participant_left`` and ``room_finished``) and caps
sessions at the maximum length, by writing synthetic close events into the room's event stream - rating then rebuilds
the room like for any other event, so a late real ``participant_left`` still wins (left > room_finished > swept).
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Protocol

from kilo_billing.events import LiveKitEventRecord
from kilo_rate_usage.model import StoredSession
from kilo_rate_usage.sessions import CAPPED, SWEPT

SWEEPER_KEY = "kilo-sweeper"


class RoomDirectory(Protocol):
    def participants(self, room_names: Sequence[str]) -> Mapping[str, set[str] | None]:
        """Participant sids now in each room by name; None when the room no longer exists."""
        ...


class EventWriter(Protocol):
    def put_new(self, item: dict[str, dict[str, object]]) -> object: ...


@dataclass(frozen=True, slots=True)
class SweepOutcome:
    checked: int
    swept: int
    capped: int


def close_event(session: StoredSession, event_type: str, at_s: int, now_ms: int) -> LiveKitEventRecord:
    kind = "swept" if event_type == SWEPT else "capped"
    return LiveKitEventRecord(
        event_id=f"kilo-{kind}-{session.session.participant_sid}",  # one close per session: a re-sweep is a duplicate
        event_type=event_type,
        created_at=at_s,
        api_key=SWEEPER_KEY,
        body=b"{}",
        received_at_ms=now_ms,
        room_sid=session.session.room_sid,
        room_name=session.session.room_name,
        participant_sid=session.session.participant_sid,
        participant_identity=session.session.identity,
    )


def sweep(
    open_sessions: Sequence[StoredSession],
    directory: RoomDirectory,
    now_ms: int,
    max_session_seconds: int,
) -> list[LiveKitEventRecord]:
    closes: list[LiveKitEventRecord] = []
    to_check: list[StoredSession] = []
    for stored in open_sessions:
        session = stored.session
        if now_ms - session.start_ms >= max_session_seconds * 1000:
            closes.append(close_event(stored, CAPPED, (session.start_ms // 1000) + max_session_seconds, now_ms))
        else:
            to_check.append(stored)
    rooms = sorted({stored.session.room_name for stored in to_check if stored.session.room_name})
    present = directory.participants(rooms) if rooms else {}
    for stored in to_check:
        here = present.get(stored.session.room_name)
        if here is None or stored.session.participant_sid not in here:
            closes.append(close_event(stored, SWEPT, now_ms // 1000, now_ms))
    return closes
