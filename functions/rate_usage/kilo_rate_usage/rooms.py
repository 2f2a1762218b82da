"""A room's compact rating state, so that events arriving in order are folded in without re-reading the room (pure).

``rebuild_room`` folds *all* of a room's events in (createdAt, event id) order. The state keeps what continuing that
fold needs, so the next events give exactly the same sessions (docs/decisions.md, D42):
- ``fold``: the registers of the events older than ``horizon_s``, of the participants still *live* - open, pending
  (no start known yet), or closed too recently to be final;
- ``recent``: the events at or after ``horizon_s`` themselves (without their bodies), so events of the last
  ``REORDER_SECONDS`` may arrive in any order (LiveKit sends concurrently; createdAt has 1 s resolution) and
  duplicates are recognised by id;
- ``spans``: the merged video spans of the tracks of *retired* participants (closed before the horizon), kept from
  ``coverage_from_ms`` on - nobody still live started earlier;
- ``aside``: (createdAt, event id) of the recent events that named a retired participant (duplicates, the horizon).
A participant retires when its connection ended before the horizon: its session is final and stored, nothing about
it stays in the state; its registers go onto its session item (``Step.retired``). A later event naming it is folded
into those registers instead (``advance(..., retired=...)``) when that provably changes neither its session nor its
video spans - a track unpublished after its publisher left, a repeated join - else the room is rebuilt. An event
that the state cannot fold exactly - older than the horizon, changing a retired participant's session or spans,
changing the room's metadata or name, turning an old track into video, re-ending an ended track - makes ``advance``
answer None, and the caller rebuilds the room from its stored events (correctness first).
"""

from __future__ import annotations

import json
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field, fields, replace
from datetime import UTC, datetime
from fractions import Fraction
from typing import Any

from kilo_billing.events import LiveKitEventRecord
from kilo_billing.meters import Coverage
from kilo_rate_usage.model import CAPPED, SWEPT, AttributionRule, ClosedBy, Session
from kilo_rate_usage.sessions import ParticipantFold, RoomFold, TrackFold, event_order, fold_events, track_span

REORDER_SECONDS = 5  # events up to this much older (createdAt) than the room's latest are folded without a rebuild
UNUSABLE_HORIZON = 2**62  # every event is older than this horizon: the room is rebuilt
PRUNE_SPANS_FROM = 16  # merged spans kept before pruning those nobody live can still overlap


def merge_spans(spans: Iterable[tuple[int, int]]) -> tuple[tuple[int, int], ...]:
    merged: list[tuple[int, int]] = []
    for start, end in sorted(spans):
        if merged and start <= merged[-1][1]:
            merged[-1] = (merged[-1][0], max(merged[-1][1], end))
        else:
            merged.append((start, end))
    return tuple(merged)


@dataclass(frozen=True, slots=True, eq=False)
class RoomState:
    room_sid: str
    fold: RoomFold  # events before ``horizon_s``, live participants only
    recent: tuple[LiveKitEventRecord, ...]  # events at or after ``horizon_s``, in fold order, bodies dropped
    horizon_s: int
    spans: tuple[tuple[int, int], ...] = ()  # merged video spans of retired participants' tracks (seconds)
    coverage_from_ms: int = 0  # spans before this are dropped: no live participant started earlier
    swept_retired: int = 0  # retired participants closed by the sweeper (a later room_finished would re-close them)
    aside: tuple[tuple[int, str], ...] = ()  # (createdAt, id) of recent events folded into retired participants
    version: int = 0  # the stored version (conditional writes); 0 = never stored
    full: RoomFold | None = field(default=None, compare=False)  # fold + recent, computed once

    def __eq__(self, other: object) -> bool:  # the content, not the version
        return isinstance(other, RoomState) and (
            self.room_sid, self.fold, self.recent, self.horizon_s, self.spans, self.coverage_from_ms,
            self.swept_retired, self.aside,
        ) == (
            other.room_sid, other.fold, other.recent, other.horizon_s, other.spans, other.coverage_from_ms,
            other.swept_retired, other.aside,
        )  # fmt: skip

    __hash__ = None  # type: ignore[assignment]

    @classmethod
    def unusable(cls, room_sid: str, version: int) -> RoomState:
        """A stored state that cannot be used (too large to store, another format): every event rebuilds the room,
        and the version still orders concurrent writers."""
        return cls(room_sid, RoomFold(), (), UNUSABLE_HORIZON, version=version)

    @property
    def usable(self) -> bool:
        return self.horizon_s < UNUSABLE_HORIZON

    def folded(self) -> RoomFold:
        """Every event the state knows, folded (the fold plus the recent events)."""
        if self.full is not None:
            return self.full
        return fold_events(self.recent, self.fold.copy())

    @property
    def last_event_ms(self) -> int:
        last = self.folded().last_s if self.usable else None
        last = max([*([last] if last is not None else []), *(at for at, _ in self.aside)], default=None)
        return last * 1000 if last is not None else 0

    def coverage(self, full: RoomFold | None = None, until_ms: int | None = None) -> Coverage:
        """Video coverage from ``coverage_from_ms`` on; tracks still published end at ``until_ms`` (else never)."""
        return (full or self.folded()).coverage(self.spans, until_ms)

    def video_seconds(self, start_ms: int, end_ms: int, coverage: Coverage) -> Fraction:
        """Seconds of video in the room within [start, end) (month to date: an open session as if it ended now)."""
        if end_ms <= start_ms:
            return Fraction(0)
        return coverage.seconds((_ms(start_ms), _ms(end_ms)))


def _ms(ms: int) -> datetime:
    return datetime.fromtimestamp(ms // 1000, tz=UTC).replace(microsecond=(ms % 1000) * 1000)


def _bodiless(event: LiveKitEventRecord) -> LiveKitEventRecord:
    return replace(event, body=b"") if event.body else event


def _named(events: Iterable[LiveKitEventRecord]) -> set[str]:
    return {event.participant_sid for event in events if event.participant_sid}


def _retire(
    fold: RoomFold, horizon_s: int, recent: RoomFold, spans: Iterable[tuple[int, int]], coverage_from_ms: int
) -> tuple[tuple[tuple[int, int], ...], int, int, dict[str, ParticipantFold]]:
    """Move participants whose connection ended before the horizon (and that no recent event names) out of the fold,
    their video spans into ``spans``. Returns the spans, the new coverage start, how many retired swept, and the
    retired participants' registers. ``recent``: the fold of the recent events alone (who they name, when those
    started)."""
    keep = set(recent.participants)
    collected = list(spans)
    swept = 0
    retired: dict[str, ParticipantFold] = {}
    for sid in sorted(fold.closed - keep):
        participant = fold.participants[sid]
        end_s = participant.connection_end_s
        if participant.left_s is None and fold.room_end_s is not None:
            end_s = fold.room_end_s
        if end_s is None or end_s >= horizon_s:
            continue
        collected.extend(_closed_spans(participant, fold.room_end_s))
        if participant.left_s is None and fold.room_end_s is None:
            swept += 1
        retired[sid] = fold.remove(sid)
    merged = merge_spans(collected)
    if len(merged) > PRUNE_SPANS_FROM:
        live = [*fold.participants.values(), *recent.participants.values()]
        starts = [p.joined_ms for p in live if p.joined_ms is not None]
        coverage_from_ms = max(coverage_from_ms, min([*starts, horizon_s * 1000]))
        merged = tuple(span for span in merged if span[1] * 1000 > coverage_from_ms)
    return merged, coverage_from_ms, swept, retired


def _closed_spans(participant: ParticipantFold, room_end_s: int | None) -> list[tuple[int, int]]:
    """The video spans of a participant whose connection ended (each ends by then), sorted."""
    found = []
    for track in participant.tracks.values():
        span = track_span(track, participant.connection_end_s, room_end_s)
        if span is not None and span[1] is not None:
            found.append((span[0], span[1]))
    return sorted(found)


def _session_registers(participant: ParticipantFold) -> tuple[object, ...]:
    """Everything of a participant's registers its session depends on besides its tracks (and the room)."""
    return (
        participant.identity, participant.kind, participant.metadata, participant.attributes, participant.joined_ms,
        participant.left_s, participant.aborted, participant.sweep,
    )  # fmt: skip


def _fold_retired(
    participant: ParticipantFold, events: Sequence[LiveKitEventRecord], room_end_s: int | None
) -> ParticipantFold | None:
    """A retired participant's registers with ``events`` (all naming it, newer than its connection end) folded in;
    None when that would change its session or its video spans (then only a rebuild is exact)."""
    scratch = RoomFold()
    scratch.participants[participant.sid] = participant  # copied on the first write (not owned)
    fold_events(events, scratch)
    after = scratch.participants[participant.sid]
    if _session_registers(after) != _session_registers(participant):
        return None  # a new start, end, kind, attribution or abort
    if _closed_spans(after, room_end_s) != _closed_spans(participant, room_end_s):
        return None  # the room's video coverage before the horizon would change: other final sessions with it
    return after


def _coverage_may_change(before: RoomFold, events: Sequence[LiveKitEventRecord]) -> bool:
    """Whether ``events`` may change the room's video coverage (or end open sessions): then the sessions closed inside
    the window are recomputed too (their end may lie after the horizon, where the coverage moves); otherwise only
    the participants the events name. A video track's event, a connection end of a participant with a video track,
    a synthetic close, the room finishing."""
    for event in events:
        if event.event_type == "room_finished" or event.event_type in (SWEPT, CAPPED):
            return True
        owner = before.participants.get(event.participant_sid)
        if event.track_sid:
            tracks = owner.tracks if owner is not None else before.orphans
            known = tracks.get(event.track_sid)
            if event.track_type == "VIDEO" or (known is not None and known.video) or not event.participant_sid:
                return True
        elif event.event_type in ("participant_left", "participant_connection_aborted") and (
            owner is None or any(track.video for track in owner.tracks.values())
        ):
            return True
    return False


def rebuilt(room_sid: str, events: Iterable[LiveKitEventRecord]) -> tuple[RoomState, dict[str, ParticipantFold]]:
    """A fresh state from all of the room's events (after a rebuild), and the registers of the participants it
    retired."""
    unique = sorted({event.event_id: event for event in events}.values(), key=event_order)
    last = unique[-1].created_at if unique else 0
    horizon = last - REORDER_SECONDS
    old = [event for event in unique if event.created_at < horizon]
    recent = tuple(_bodiless(event) for event in unique if event.created_at >= horizon)
    fold = fold_events(old)
    fold.room_sid = fold.room_sid or room_sid
    spans, coverage_from, swept, retired = _retire(fold, horizon, fold_events(recent), (), 0)
    return RoomState(room_sid, fold, recent, horizon, spans, coverage_from, swept), retired


def from_events(room_sid: str, events: Iterable[LiveKitEventRecord]) -> RoomState:
    """A fresh state from all of the room's events (after a rebuild)."""
    return rebuilt(room_sid, events)[0]


@dataclass(frozen=True, slots=True)
class Step:
    """The result of folding a batch's events into a state."""

    state: RoomState  # the new state (``changed``: it must be written)
    changed: bool
    affected: frozenset[str]  # participants whose sessions may have changed: recompute and compare with the stored
    unknown: frozenset[str]  # participants the state did not know: new - unless a stored session says retired
    full: RoomFold  # every event folded, participants retired by this step included (their sessions are final now)
    spans: tuple[tuple[int, int], ...]  # the spans retired before this step
    retired: dict[str, ParticipantFold] = field(default_factory=dict)  # registers to keep on their session items

    def sessions(self, rule: AttributionRule) -> list[Session]:
        return self.full.sessions(rule, lambda: self.full.coverage(self.spans), self.affected)


def advance(
    state: RoomState, events: Sequence[LiveKitEventRecord], retired: Mapping[str, ParticipantFold] | None = None
) -> Step | None:
    """Fold ``events`` (of this room) into ``state``; None when only a rebuild from the stored events is exact.
    ``retired``: the registers (from their session items) of participants the events name that the state retired;
    without them such a participant looks new (``Step.unknown``): the caller looks it up and asks again."""
    retired = retired or {}
    known = {event.event_id for event in state.recent} | {event_id for _, event_id in state.aside}
    fresh = sorted(
        {e.event_id: e for e in events if e.event_id not in known}.values(), key=event_order
    )  # already folded: a duplicate
    if not fresh:  # all duplicates: their sessions are recomputed only for the thresholds (level-triggered)
        full = state.folded()
        return Step(state, False, frozenset(_named(events) & full.participants.keys()), frozenset(), full, state.spans)
    if fresh[0].created_at < state.horizon_s:
        return None  # older than the horizon: a late event or a redelivery the state cannot tell apart
    before = state.folded()
    aside = [event for event in fresh if event.participant_sid in retired]
    fresh = [event for event in fresh if event.participant_sid not in retired]
    named = _named(fresh)
    for event in (*fresh, *aside):
        if event.room_metadata and event.room_metadata != before.room_metadata:
            return None  # attribution of every session, retired ones too, may change
        if event.room_name and event.room_name != before.room_name and before.room_name:
            return None
        if event.event_type == "room_finished" and state.swept_retired:
            return None  # a swept session ends at room_finished instead
        owner = before.participants.get(event.participant_sid)
        track = None
        if event.track_sid:
            track = owner.tracks.get(event.track_sid) if owner is not None else None
            if not event.participant_sid:
                track = before.orphans.get(event.track_sid)
        if track is not None and track.published is not None:
            if event.track_type == "VIDEO" and not track.video:
                return None  # a track published long ago turns out to be video
            if (
                event.event_type == "track_unpublished"
                and track.unpublished is not None
                and track.unpublished < state.horizon_s
            ):
                return None  # an ended track ends later: retired participants overlapped it
    unknown = frozenset(named - before.participants.keys())

    recent = tuple(sorted((*state.recent, *(_bodiless(e) for e in fresh)), key=event_order))
    set_aside = sorted({*state.aside, *((e.created_at, e.event_id) for e in aside)})
    last = max([*(e.created_at for e in recent[-1:]), *(at for at, _ in set_aside[-1:]), before.last_s or 0])
    horizon = max(state.horizon_s, last - REORDER_SECONDS)
    fold = state.fold.copy()
    moved = [event for event in recent if event.created_at < horizon]
    for event in moved:
        fold.apply(event)
    kept = recent[len(moved) :]
    everything = fold_events(kept, fold.copy())  # before retiring: the sessions of this step come from it
    updated: dict[str, ParticipantFold] = {}
    for sid, registers in retired.items():
        mine = [event for event in aside if event.participant_sid == sid]
        if not mine:
            continue
        folded = _fold_retired(registers, mine, everything.room_end_s)
        if folded is None:
            return None
        updated[sid] = folded
    window = everything.closed if _coverage_may_change(before, fresh) else set()
    affected = frozenset((named | window) & everything.participants.keys())
    for sid in affected:
        joined = everything.participants[sid].joined_ms
        if joined is not None and joined < state.coverage_from_ms:
            return None  # a start before the video spans kept
    spans, coverage_from, swept, retiring = _retire(
        fold, horizon, fold_events(kept), state.spans, state.coverage_from_ms
    )
    new_state = RoomState(
        state.room_sid, fold, kept, horizon, spans, coverage_from, state.swept_retired + swept,
        tuple(entry for entry in set_aside if entry[0] >= horizon), state.version, fold_events(kept, fold.copy()),
    )  # fmt: skip
    return Step(new_state, True, affected, unknown, everything, state.spans, {**updated, **retiring})


# --- the stored form (``items`` compresses it into the state item) --------------------------------------------------

_EVENT_FIELDS = tuple(f.name for f in fields(LiveKitEventRecord) if f.name != "body")
STATE_FORMAT = 2  # bump when the stored form changes meaning: a state of another format is ignored (rebuild)


def _track_out(sid: str, track: TrackFold) -> list[object]:
    return [sid, track.published, track.unpublished, track.video]


def _track_in(values: Sequence[Any]) -> tuple[str, TrackFold]:
    sid, published, unpublished, video = values
    return str(sid), TrackFold(published, unpublished, bool(video))


def participant_to_json(p: ParticipantFold) -> list[Any]:
    return [
        p.sid, p.identity, p.kind, p.metadata, p.attributes, p.joined_ms, p.left_s, p.aborted,
        list(p.sweep) if p.sweep is not None else None, [_track_out(t, p.tracks[t]) for t in sorted(p.tracks)],
    ]  # fmt: skip


def participant_from_json(values: Sequence[Any]) -> ParticipantFold:
    sid, identity, kind, metadata, attributes, joined_ms, left_s, aborted, sweep, tracks = values
    return ParticipantFold(
        sid, identity, kind, metadata, dict(attributes), joined_ms, left_s, bool(aborted),
        (int(sweep[0]), ClosedBy(sweep[1])) if sweep is not None else None, dict(_track_in(t) for t in tracks),
    )  # fmt: skip


def registers_text(participant: ParticipantFold) -> str:
    """A retired participant's registers as kept on its session item (compact JSON)."""
    return json.dumps(participant_to_json(participant), separators=(",", ":"), sort_keys=True)


def registers_from_text(text: str) -> ParticipantFold:
    return participant_from_json(json.loads(text))


def state_to_json(state: RoomState) -> dict[str, Any]:
    fold = state.fold
    return {
        "format": STATE_FORMAT,
        "room": [fold.room_sid, fold.room_name, fold.room_metadata, fold.room_end_s, fold.last_s],
        "participants": [participant_to_json(fold.participants[sid]) for sid in sorted(fold.participants)],
        "orphans": [_track_out(t, track) for t, track in sorted(fold.orphans.items())],
        "closed": sorted(fold.closed),
        "recent": [[getattr(event, name) for name in _EVENT_FIELDS] for event in state.recent],
        "horizon_s": state.horizon_s,
        "spans": [list(span) for span in state.spans],
        "coverage_from_ms": state.coverage_from_ms,
        "swept_retired": state.swept_retired,
        "aside": [list(entry) for entry in state.aside],
    }


def state_from_json(room_sid: str, data: dict[str, Any], version: int) -> RoomState:
    """The state (``unusable`` when of another format: the room is then rebuilt and a fresh state written)."""
    if data.get("format") != STATE_FORMAT:
        return RoomState.unusable(room_sid, version)
    fold = RoomFold()
    fold.room_sid, fold.room_name, fold.room_metadata, fold.room_end_s, fold.last_s = data["room"]
    for values in data["participants"]:
        participant = participant_from_json(values)
        fold.participants[participant.sid] = participant
        fold.video.update((participant.sid, t) for t, track in participant.tracks.items() if track.video)
    fold.orphans = dict(_track_in(t) for t in data["orphans"])
    fold.video.update(("", t) for t, track in fold.orphans.items() if track.video)
    fold.closed = set(data["closed"])
    recent = tuple(
        LiveKitEventRecord(**dict(zip(_EVENT_FIELDS, values, strict=True)), body=b"") for values in data["recent"]
    )
    spans = tuple((int(a), int(b)) for a, b in data["spans"])
    return RoomState(
        room_sid, fold, recent, int(data["horizon_s"]), spans, int(data["coverage_from_ms"]),
        int(data["swept_retired"]), tuple((int(at), str(event_id)) for at, event_id in data["aside"]), version,
    )  # fmt: skip
