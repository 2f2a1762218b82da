"""Rebuild a room's participant sessions from all of its stored events (pure; no I/O, no clock).

Rebuilding from the full, de-duplicated event set of the room - rather than applying events one by one - is what makes
rating indifferent to duplicates, redelivery and order: any permutation of the same events gives the same sessions.

Rules (shared/reference/livekit.md, billing-policy.md; decisions in docs/decisions.md):
- a session is (room sid, participant sid), closed by sid, never by identity;
- start = ``joinedAtMs`` (else ``joinedAt``) of the participant, from ``participant_joined`` or, if the join was lost or
  is late, from the participant info inside ``participant_left``; no known start = pending (nothing billed yet);
- end = ``participant_left``'s ``createdAt``, else ``room_finished``'s, else the sweeper's close; open otherwise;
- a real close (``participant_left``, ``room_finished``) is never capped, whatever the length: LiveKit saw both ends;
  only the sweeper caps, with a close event of its own, and a late real close still wins (D17);
- ``participant_connection_aborted`` bills nothing;
- a second is video while any video track (camera or screen share) is published in the room; open tracks close at
  ``room_finished``.
"""

from __future__ import annotations

import json
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime
from fractions import Fraction

from kilo_billing.accounts import UNATTRIBUTED, is_account_id
from kilo_billing.events import LiveKitEventRecord
from kilo_billing.meters import Coverage, Interval, split_connection
from kilo_rate_usage.model import (
    CAPPED,
    SWEPT,
    AttributionRule,
    Billing,
    ClosedBy,
    PeriodPart,
    Session,
)

KIND_BILLING: dict[str, Billing] = {
    "": Billing.ROOM_RULE,  # STANDARD (the zero value is omitted)
    "STANDARD": Billing.ROOM_RULE,
    "AGENT": Billing.ROOM_RULE,
    "SIP": Billing.AUDIO_ONLY,
    "EGRESS": Billing.NOT_BILLED,
    "INGRESS": Billing.NOT_BILLED,
}


def _json_value(text: str, key: str) -> str | None:
    if not text:
        return None
    try:
        data = json.loads(text)
    except ValueError:
        return None
    value = data.get(key) if isinstance(data, dict) else None
    return value if isinstance(value, str) and value else None


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
    events: Iterable[LiveKitEventRecord], rule: AttributionRule, max_session_seconds: int | None = None
) -> list[Session]:
    """All sessions of one room whose start is known, in participant-sid order.

    ``max_session_seconds`` is ignored (sessions are no longer capped here, D17); it is accepted until
    tests/unit/test_simulator.py stops passing it."""
    del max_session_seconds
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
    coverage = Coverage(intervals)  # merged once: each session's overlap is then a binary search, not a re-sort
    last_ms = ordered[-1].created_at * 1000 if ordered else 0
    sessions = []
    for sid in sorted(participants):
        participant = participants[sid]
        if participant.joined_ms is None:
            continue  # pending: a left (or track) seen before any start is known
        sessions.append(
            _session(ordered[0].room_sid if ordered else "", participant, room_metadata, rule, room_end_s,
                     coverage, video_now, last_ms, room_name)
        )  # fmt: skip
    return sessions


def _session(
    room_sid: str,
    participant: _Participant,
    room_metadata: str,
    rule: AttributionRule,
    room_end_s: int | None,
    coverage: Coverage,
    video_now: bool,
    last_ms: int,
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
    billing = KIND_BILLING.get(participant.kind, Billing.ROOM_RULE)
    account = _account(participant, room_metadata, rule)
    parts: list[PeriodPart] = []
    connected = video = Fraction(0)
    if end_ms is not None and not participant.aborted:
        pieces = split_connection(
            _ms_to_dt(start_ms), _ms_to_dt(end_ms), coverage if billing is Billing.ROOM_RULE else ()
        )
        for piece in pieces:
            connected += piece.connected_seconds
            video += piece.video_seconds
            if billing is not Billing.NOT_BILLED and piece.minutes.total:
                piece_start_ms = int(piece.start.timestamp() * 1000)
                parts.append(PeriodPart(piece.period.key, piece_start_ms, piece.minutes.video, piece.minutes.audio))
    elif end_ms is None and not participant.aborted and billing is Billing.ROOM_RULE:
        video = _overlap_until(coverage, start_ms, last_ms)
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


def _overlap_until(coverage: Coverage, start_ms: int, until_ms: int) -> Fraction:
    if until_ms <= start_ms:
        return Fraction(0)
    return coverage.seconds((_ms_to_dt(start_ms), _ms_to_dt(until_ms)))
