"""Rebuild a room's participant sessions from all of its stored events (pure; no I/O, no clock).

Rebuilding from the full, de-duplicated event set of the room - rather than applying events one by one - is what makes
rating indifferent to duplicates, redelivery and order: any permutation of the same events gives the same sessions.

Rules (shared/reference/livekit.md, billing-policy.md; decisions in docs/decisions.md):
- a session is (room sid, participant sid), closed by sid, never by identity;
- start = ``joinedAtMs`` (else ``joinedAt``) of the participant, from ``participant_joined`` or, if the join was lost or
  is late, from the participant info inside ``participant_left``; no known start = pending (nothing billed yet);
- end = ``participant_left``'s ``createdAt``, else ``room_finished``'s, else the sweeper's close; open otherwise;
- a session longer than ``max_session_seconds`` is capped there; ``participant_connection_aborted`` bills nothing;
- a second is video while any video track (camera or screen share) is published in the room; open tracks close at
  ``room_finished``.
"""

from __future__ import annotations

import json
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime
from enum import StrEnum
from fractions import Fraction

from kilo_billing.accounts import UNATTRIBUTED, is_account_id
from kilo_billing.events import LiveKitEventRecord
from kilo_billing.meters import Interval, overlap_seconds, split_connection

SWEPT = "kilo_participant_swept"  # synthetic close written by the sweeper (participant gone from the room)
CAPPED = "kilo_participant_capped"  # synthetic close written by the sweeper (maximum session length reached)


class ClosedBy(StrEnum):
    LEFT = "left"
    ROOM_FINISHED = "room_finished"
    SWEPT = "swept"
    CAPPED = "capped"


class Billing(StrEnum):
    """How a participant kind is billed (docs/decisions.md, D16)."""

    ROOM_RULE = "room_rule"  # video while any video track is published in the room, else audio
    AUDIO_ONLY = "audio_only"  # SIP: a phone line never receives video
    NOT_BILLED = "not_billed"  # EGRESS / INGRESS: LiveKit service participants, metered separately by LiveKit


KIND_BILLING: dict[str, Billing] = {
    "": Billing.ROOM_RULE,  # STANDARD (the zero value is omitted)
    "STANDARD": Billing.ROOM_RULE,
    "AGENT": Billing.ROOM_RULE,
    "SIP": Billing.AUDIO_ONLY,
    "EGRESS": Billing.NOT_BILLED,
    "INGRESS": Billing.NOT_BILLED,
}


@dataclass(frozen=True, slots=True)
class AttributionRule:
    """Where a session's billing account comes from, first match wins.

    Each step is ``(source, key)`` with source one of ``room_metadata`` (JSON object in the room's metadata),
    ``participant_attribute`` (a participant attribute) or ``participant_metadata`` (JSON object in its metadata).
    """

    steps: tuple[tuple[str, str], ...] = (
        ("room_metadata", "account_id"),
        ("participant_attribute", "kilo.account_id"),
        ("participant_metadata", "account_id"),
    )

    @classmethod
    def parse(cls, text: str) -> AttributionRule:
        steps = []
        for part in text.split(","):
            source, _, key = part.strip().partition(":")
            if source not in {"room_metadata", "participant_attribute", "participant_metadata"} or not key:
                raise ValueError(f"attribution step must be source:key with a known source, got {part!r}")
            steps.append((source, key))
        if not steps:
            raise ValueError("attribution rule needs at least one step")
        return cls(tuple(steps))


def _json_value(text: str, key: str) -> str | None:
    if not text:
        return None
    try:
        data = json.loads(text)
    except ValueError:
        return None
    value = data.get(key) if isinstance(data, dict) else None
    return value if isinstance(value, str) and value else None


@dataclass(frozen=True, slots=True)
class PeriodPart:
    period: str
    start_ms: int  # where the part starts (selects the tier segment)
    video: int
    audio: int


@dataclass(frozen=True, slots=True)
class Session:
    room_sid: str
    participant_sid: str
    identity: str
    kind: str
    account: str
    start_ms: int
    end_ms: int | None  # None while open
    closed_by: ClosedBy | None
    aborted: bool
    billing: Billing
    connected_seconds: Fraction
    video_seconds: Fraction
    parts: tuple[PeriodPart, ...]  # billable minutes per period (empty while open, aborted or not billed)
    video_active: bool = False  # a video track is published at the last event time (open sessions)
    as_of_ms: int = 0  # time of the room's last event (open sessions: elapsed is counted from start to now)
    room_name: str = ""  # RoomService addresses rooms by name (the sweeper asks who is still there)

    @property
    def is_open(self) -> bool:
        return self.end_ms is None and not self.aborted


@dataclass
class _Participant:
    sid: str
    identity: str = ""
    kind: str = ""
    metadata: str = ""
    attributes: dict[str, str] = field(default_factory=dict)
    joined_ms: int | None = None
    left_s: int | None = None
    aborted: bool = False
    sweep: tuple[int, ClosedBy] | None = None


def _ms_to_dt(ms: int) -> datetime:
    return datetime.fromtimestamp(ms // 1000, tz=UTC).replace(microsecond=(ms % 1000) * 1000)


def video_intervals(
    events: Sequence[LiveKitEventRecord], room_end_s: int | None, publisher_end_s: Mapping[str, int] | None = None
) -> tuple[list[Interval], bool]:
    """Spans with at least one video track published; and whether one is still published at the end of the data.

    A track ends at its ``track_unpublished``, else when its publisher's connection ended (a lost unpublish must not
    bill everyone who stays as video), else at ``room_finished``.
    """
    published: dict[str, int] = {}
    unpublished: dict[str, int] = {}
    video_tracks: set[str] = set()
    publisher: dict[str, str] = {}
    for event in events:
        if not event.track_sid:
            continue
        if event.participant_sid:
            publisher[event.track_sid] = event.participant_sid
        if event.track_type == "VIDEO":
            video_tracks.add(event.track_sid)
        if event.event_type == "track_published":
            published[event.track_sid] = min(event.created_at, published.get(event.track_sid, event.created_at))
        elif event.event_type == "track_unpublished":
            unpublished[event.track_sid] = max(event.created_at, unpublished.get(event.track_sid, event.created_at))
    intervals: list[Interval] = []
    active = False
    far_future = datetime(9999, 1, 1, tzinfo=UTC)
    for sid in video_tracks:
        if sid not in published:
            continue  # an unpublish without its publish: nothing known about when it started
        start = datetime.fromtimestamp(published[sid], tz=UTC)
        ends = [unpublished.get(sid), (publisher_end_s or {}).get(publisher.get(sid, "")), room_end_s]
        known = [end for end in ends if end is not None]
        end_s = min(known) if known else None
        if end_s is None:
            active = True
            intervals.append((start, far_future))
        elif end_s > published[sid]:
            intervals.append((start, datetime.fromtimestamp(end_s, tz=UTC)))
    return intervals, active


def _account(participant: _Participant, room_metadata: str, rule: AttributionRule) -> str:
    for source, key in rule.steps:
        value: str | None
        if source == "room_metadata":
            value = _json_value(room_metadata, key)
        elif source == "participant_attribute":
            value = participant.attributes.get(key) or None
        else:
            value = _json_value(participant.metadata, key)
        if value and is_account_id(value):
            return value
        # a value that is not a valid account id is not trusted: the next source is tried, else "unattributed"
    return UNATTRIBUTED


def rebuild_room(
    events: Iterable[LiveKitEventRecord], rule: AttributionRule, max_session_seconds: int
) -> list[Session]:
    """All sessions of one room whose start is known, in participant-sid order."""
    unique = {event.event_id: event for event in events}
    ordered = sorted(unique.values(), key=lambda e: (e.created_at, e.event_id))
    room_end_s: int | None = None
    room_metadata = room_name = ""
    participants: dict[str, _Participant] = {}
    for event in ordered:
        room_name = event.room_name or room_name
        if event.room_metadata:
            room_metadata = event.room_metadata  # the latest the room reported
        if event.event_type == "room_finished":
            room_end_s = event.created_at if room_end_s is None else min(room_end_s, event.created_at)
        if not event.participant_sid:
            continue
        participant = participants.setdefault(event.participant_sid, _Participant(event.participant_sid))
        participant.identity = participant.identity or event.participant_identity
        if event.participant_kind:
            participant.kind = event.participant_kind
        if event.participant_metadata:
            participant.metadata = event.participant_metadata
        if event.participant_attributes:
            participant.attributes = json.loads(event.participant_attributes)
        if event.joined_at_ms and (participant.joined_ms is None or event.event_type == "participant_joined"):
            participant.joined_ms = event.joined_at_ms
        if event.event_type == "participant_joined" and participant.joined_ms is None:
            participant.joined_ms = event.created_at * 1000
        elif event.event_type == "participant_left":
            participant.left_s = (
                event.created_at if participant.left_s is None else min(participant.left_s, event.created_at)
            )
        elif event.event_type == "participant_connection_aborted":
            participant.aborted = True
        elif event.event_type in (SWEPT, CAPPED):
            closed_by = ClosedBy.SWEPT if event.event_type == SWEPT else ClosedBy.CAPPED
            if participant.sweep is None or event.created_at < participant.sweep[0]:
                participant.sweep = (event.created_at, closed_by)
    publisher_end: dict[str, int] = {}
    for sid, participant in participants.items():
        if participant.left_s is not None:
            publisher_end[sid] = participant.left_s
        elif participant.sweep is not None:
            publisher_end[sid] = participant.sweep[0]
    intervals, video_now = video_intervals(ordered, room_end_s, publisher_end)
    last_ms = ordered[-1].created_at * 1000 if ordered else 0
    sessions = []
    for sid in sorted(participants):
        participant = participants[sid]
        if participant.joined_ms is None:
            continue  # pending: a left (or track) seen before any start is known
        sessions.append(
            _session(ordered[0].room_sid if ordered else "", participant, room_metadata, rule, room_end_s,
                     intervals, video_now, last_ms, max_session_seconds, room_name)
        )  # fmt: skip
    return sessions


def _session(
    room_sid: str,
    participant: _Participant,
    room_metadata: str,
    rule: AttributionRule,
    room_end_s: int | None,
    intervals: list[Interval],
    video_now: bool,
    last_ms: int,
    max_session_seconds: int,
    room_name: str = "",
) -> Session:
    assert participant.joined_ms is not None
    start_ms = participant.joined_ms
    end_ms: int | None = None
    closed_by: ClosedBy | None = None
    if participant.left_s is not None:
        end_ms, closed_by = participant.left_s * 1000, ClosedBy.LEFT
    elif room_end_s is not None:
        end_ms, closed_by = room_end_s * 1000, ClosedBy.ROOM_FINISHED
    elif participant.sweep is not None:
        end_ms, closed_by = participant.sweep[0] * 1000, participant.sweep[1]
    if end_ms is not None:
        end_ms = max(end_ms, start_ms)  # createdAt has 1 s resolution; joinedAtMs has ms
        if end_ms - start_ms > max_session_seconds * 1000:
            end_ms, closed_by = start_ms + max_session_seconds * 1000, ClosedBy.CAPPED
    billing = KIND_BILLING.get(participant.kind, Billing.ROOM_RULE)
    account = _account(participant, room_metadata, rule)
    parts: list[PeriodPart] = []
    connected = video = Fraction(0)
    if end_ms is not None and not participant.aborted:
        pieces = split_connection(
            _ms_to_dt(start_ms), _ms_to_dt(end_ms), intervals if billing is Billing.ROOM_RULE else ()
        )
        for piece in pieces:
            connected += piece.connected_seconds
            video += piece.video_seconds
            if billing is not Billing.NOT_BILLED and piece.minutes.total:
                piece_start_ms = int(piece.start.timestamp() * 1000)
                parts.append(PeriodPart(piece.period.key, piece_start_ms, piece.minutes.video, piece.minutes.audio))
    elif end_ms is None and not participant.aborted and billing is Billing.ROOM_RULE:
        video = _overlap_until(intervals, start_ms, last_ms)
    return Session(
        room_sid=room_sid,
        participant_sid=participant.sid,
        identity=participant.identity,
        kind=participant.kind or "STANDARD",
        account=account,
        start_ms=start_ms,
        end_ms=end_ms,
        closed_by=closed_by,
        aborted=participant.aborted,
        billing=billing,
        connected_seconds=connected,
        video_seconds=video,
        parts=tuple(parts),
        video_active=end_ms is None and video_now and billing is Billing.ROOM_RULE,
        as_of_ms=last_ms if end_ms is None and not participant.aborted else 0,  # only open sessions need it
        room_name=room_name,
    )


def _overlap_until(intervals: list[Interval], start_ms: int, until_ms: int) -> Fraction:
    if until_ms <= start_ms:
        return Fraction(0)
    return overlap_seconds((_ms_to_dt(start_ms), _ms_to_dt(until_ms)), intervals)
