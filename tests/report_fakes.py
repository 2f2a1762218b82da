"""An in-memory ``kilo_billing.session_usage.SessionReader`` over rating's own session model (held to
tests/contract/test_session_usage.py with the DynamoDB adapter, which reads the items rating writes)."""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass, field
from fractions import Fraction

from kilo_billing.session_usage import SessionUsage
from kilo_rate_usage.model import Billing, ClosedBy, PeriodPart, Session


def session(
    room_sid: str,
    participant_sid: str,
    identity: str,
    account: str,
    parts: list[tuple[str, int, int]],  # (period, video minutes, audio minutes)
    room_name: str = "",
    aborted: bool = False,
) -> Session:
    """A closed session as rating stores it (parts start at 0 ms: reports do not read part starts)."""
    return Session(
        room_sid=room_sid,
        participant_sid=participant_sid,
        identity=identity,
        kind="STANDARD",
        account=account,
        start_ms=1_772_323_200_000,
        end_ms=1_772_326_800_000,
        closed_by=ClosedBy.LEFT,
        aborted=aborted,
        billing=Billing.ROOM_RULE,
        connected_seconds=Fraction(3600),
        video_seconds=Fraction(0),
        parts=tuple(PeriodPart(period, 1_772_323_200_000, video, audio) for period, video, audio in parts),
        room_name=room_name,
    )


@dataclass
class InMemorySessionReader:
    stored: list[Session] = field(default_factory=list)

    def sessions(self, account_id: str, period: str) -> Iterator[SessionUsage]:
        for found in self.stored:
            parts = [part for part in found.parts if part.period == period]
            if found.account != account_id or found.aborted or not parts:
                continue
            yield SessionUsage(
                found.room_sid,
                found.room_name,
                found.participant_sid,
                found.identity,
                sum(part.video for part in parts),
                sum(part.audio for part in parts),
            )
