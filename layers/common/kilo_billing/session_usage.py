"""Rated sessions as reports read them: who (participant identity) used how many minutes in which room, per period.

The model and the port (``SessionReader``); the item mapping of rating's session items is
``kilo_billing.session_usage_items``, the DynamoDB adapter ``kilo_billing.session_usage_store``. Open sessions are not
in a report until they close; aborted ones bill nothing.
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass
from typing import Protocol


@dataclass(frozen=True, slots=True)
class SessionUsage:
    """One participant session's billable minutes in one period."""

    room_sid: str
    room_name: str
    participant_sid: str
    identity: str
    video_minutes: int
    audio_minutes: int


class SessionReader(Protocol):
    def sessions(self, account_id: str, period: str) -> Iterator[SessionUsage]:
        """The account's closed sessions with billable minutes in ``period`` (any order)."""
        ...
