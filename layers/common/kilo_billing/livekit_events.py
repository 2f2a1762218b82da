"""The stored record of a verified LiveKit webhook (its own module: see ``kilo_billing.events.StoredEvent``)."""

from __future__ import annotations

from dataclasses import dataclass
from typing import ClassVar

from kilo_billing.events import EventSource, StoredRecord, livekit_key


@dataclass(frozen=True, slots=True)
class LiveKitEventRecord(StoredRecord):
    """A verified LiveKit webhook, with what rating needs lifted out of the body.

    Enum values this protocol version does not know are kept as ``UNKNOWN_<number>`` (docs/decisions.md): rating bills
    an unknown participant kind like a standard participant and never reads an unknown track type as video.
    """

    SOURCE: ClassVar[EventSource] = EventSource.LIVEKIT

    event_id: str
    event_type: str
    created_at: int  # seconds (LiveKit's createdAt)
    api_key: str
    body: bytes  # the raw bytes LiveKit signed
    received_at_ms: int
    room_sid: str = ""
    room_name: str = ""
    room_metadata: str = ""
    participant_sid: str = ""
    participant_identity: str = ""
    participant_kind: str = ""  # "" = STANDARD, else AGENT / SIP / EGRESS / INGRESS ... or UNKNOWN_<n>
    participant_metadata: str = ""
    participant_attributes: str = ""  # JSON object of the participant's attributes
    joined_at_ms: int = 0
    track_sid: str = ""
    track_type: str = ""  # "" = AUDIO (zero value), VIDEO, DATA ... or UNKNOWN_<n>
    track_source: str = ""

    @property
    def key(self) -> tuple[str, str]:
        return livekit_key(self.event_id, self.room_sid)
