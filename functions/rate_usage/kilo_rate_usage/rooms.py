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
- ``index``: the video tracks of every live participant whose span is not final yet (as of the fold plus the recent
  events) - what the room's video coverage needs from participants that are not loaded (below);
- ``delivered_ms``: the latest ``received_at_ms`` of the events folded in (a rebuild folds only stored events received
  by then: those the stream has delivered, never those still queued behind a backlog).
Stored split (D42, issue 10): a small header (everything above but the live participants' registers) and one item per
live participant. A batch loads the participants it names, those of the window's events it moves past the horizon
and those closed in the fold (``participants_needed``; all of them at ``room_finished``); the window's events naming
anyone else fold only their room-level registers (that participant's video is in the index), and a session closed
inside the window that a late video change reaches is loaded when the change is seen (``Step.missing``). So an
in-order event reads and writes a number of items independent of the room's size and of its event rate; ``fold``
then holds only those (``complete`` False, ``loaded`` the participants asked for).
A participant retires when its connection ended before the horizon: its session is final and stored, nothing about
it stays in the state; its registers go onto its session item (``Step.retired``). A later event naming it is folded
into those registers instead (``advance(..., retired=...)``) when that provably changes neither its session nor its
video spans - a track unpublished after its publisher left, a repeated join - else the room is rebuilt. An event
that the state cannot fold exactly - older than the horizon, changing a retired participant's session or spans,
changing the room's metadata timeline (``RoomFold.metadata_moves``) or name, turning an old track into video,
re-ending an ended track, moving the video coverage before the horizon (a late real left after a sweep extends
its camera back to the sweep) - makes ``advance`` answer None, and the caller rebuilds the room from its stored events
(correctness first).
"""

from __future__ import annotations

import json
from bisect import bisect_left
from collections.abc import Collection, Iterable, Mapping, Sequence
from dataclasses import dataclass, field, fields, replace
from datetime import UTC, datetime
from fractions import Fraction
from typing import Any

from kilo_billing.livekit_events import LiveKitEventRecord
from kilo_billing.meters import Coverage
from kilo_rate_usage.model import CAPPED, SWEPT, AttributionRule, ClosedBy, Session
from kilo_rate_usage.sessions import (
    ParticipantFold,
    RoomFold,
    TrackFold,
    event_order,
    fold_events,
    holds_account,
    session_end,
    track_span,
    valid_account,
    yields_to_room_end,
)

REORDER_SECONDS = 5  # events up to this much older (createdAt) than the room's latest are folded without a rebuild
UNUSABLE_HORIZON = 2**62  # every event is older than this horizon: the room is rebuilt
PRUNE_SPANS_FROM = 16  # merged spans kept before pruning those nobody live can still overlap
PRUNE_RUNS_FROM = 32  # room-metadata runs kept before every live participant is loaded to prune them (D163)


VideoEntry = tuple[str, str, int, int | None, int | None]  # participant, track, published, unpublished, its end


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
    capped_retired: int = 0  # retired participants a later room_finished may re-close (a cap, a dated-back sweep: D17)
    aside: tuple[tuple[int, str], ...] = ()  # (createdAt, id) of recent events folded into retired participants
    version: int = 0  # the stored version (conditional writes); 0 = never stored
    full: RoomFold | None = field(default=None, compare=False)  # fold + recent, computed once
    index: tuple[VideoEntry, ...] = ()  # live participants' video tracks whose span is not final (sorted)
    complete: bool = True  # ``fold`` holds every live participant (else only those loaded)
    delivered_ms: int = 0  # the latest received_at_ms folded in: a rebuild's cut-off
    generation: str = ""  # the stored participant items' generation (the adapter's; a rebuild starts a new one)
    loaded: frozenset[str] | None = None  # the participants asked for (None: all); the recent events naming others
    # fold only their room-level registers (their video comes from the index)
    late_start_s: int = 0  # the latest start (s) of any participant folded without a join_run, retired ones too: a
    # metadata change appended after it reaches no session by time (``_appends_at_end``, D163)
    # the metadata runs pruned (``_prune_metadata``, D163): a session whose join_run is below ``metadata_floor_run``,
    # or found by time with a start at or before ``metadata_floor_s``, may reach a run pruned (or one whose answer
    # needs one): only a rebuild is exact for it
    metadata_floor_run: int = 0
    metadata_floor_s: int = 0
    prune_runs_at: int = 0  # twice the runs kept by the last pruning: the next is due at this many runs (at least
    # ``PRUNE_RUNS_FROM``), when every live participant is loaded (a room whose live participants still reach old runs
    # is not loaded whole at every batch)
    pending: bool = False  # the stored header carries a chunked write's pending mark (unusable: under way, or died)
    # how many distinct events were folded in (all received by ``delivered_ms``): a rebuild finding fewer of the
    # room's events stored refuses the room (their raw events expired: D273); 0 = not known (written before)
    events_folded: int = 0

    @property
    def prune_due(self) -> bool:
        """Whether the metadata runs are due to be pruned (every live participant's registers are needed)."""
        return len(self.fold.metadata) >= max(PRUNE_RUNS_FROM, self.prune_runs_at)

    def header(self) -> tuple[object, ...]:
        """What the header item holds (everything but the live participants' registers)."""
        fold = self.fold
        return (
            self.room_sid, fold.room_sid, fold.room_name, fold.metadata, fold.room_end_s, fold.last_s,
            fold.orphans, fold.closed, self.recent, self.horizon_s, self.spans, self.coverage_from_ms,
            self.capped_retired, self.aside, self.index, self.delivered_ms, self.late_start_s, fold.metadata_offset,
            self.metadata_floor_run, self.metadata_floor_s, self.prune_runs_at, self.events_folded,
        )  # fmt: skip

    def __eq__(self, other: object) -> bool:  # the header's content, not the version or the participants loaded
        return isinstance(other, RoomState) and self.header() == other.header()

    __hash__ = None  # type: ignore[assignment]

    def with_participants(
        self, participants: Mapping[str, ParticipantFold], loaded: frozenset[str] | None
    ) -> RoomState | None:
        """The state with the live participants' registers read for ``loaded`` (None: every live participant; a sid
        without an item is new, or only named by the recent events); None when one the header says is closed inside
        the window is missing (a stored state that does not add up: rebuild)."""
        if not self.fold.closed <= participants.keys() or (loaded is not None and not participants.keys() <= loaded):
            return None
        fold = self.fold.copy()
        for sid, participant in participants.items():
            fold.participants[sid] = participant
            fold.video.update((sid, t) for t, track in participant.tracks.items() if track.video)
        return replace(self, fold=fold, complete=loaded is None, full=None, loaded=loaded)

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
        return fold_loaded(self.recent, self.fold.copy(), self.loaded)

    @property
    def last_event_ms(self) -> int:
        last = self.folded().last_s if self.usable else None
        last = max([*([last] if last is not None else []), *(at for at, _ in self.aside)], default=None)
        return last * 1000 if last is not None else 0

    def coverage(self, until_ms: int | None = None) -> Coverage:
        """Video coverage from ``coverage_from_ms`` on; tracks still published end at ``until_ms`` (else never).
        Participants not loaded count through the index (as of the fold plus the recent events)."""
        full = self.folded()
        only = RoomFold()  # the orphans and the loaded participants of ``full``: the others come from the index
        only.room_end_s, only.orphans = full.room_end_s, full.orphans
        only.participants = {sid: p for sid, p in full.participants.items() if sid in self.fold.participants}
        only.video = {(sid, t) for sid, t in full.video if not sid or sid in only.participants}
        return only.coverage([*self.spans, *index_spans(self.index, only.participants, full.room_end_s)], until_ms)

    def video_seconds(self, start_ms: int, end_ms: int, coverage: Coverage) -> Fraction:
        """Seconds of video in the room within [start, end) (month to date: an open session as if it ended now)."""
        return video_seconds(start_ms, end_ms, coverage)


def video_seconds(start_ms: int, end_ms: int, coverage: Coverage) -> Fraction:
    """Seconds of ``coverage`` within [start, end)."""
    if end_ms <= start_ms:
        return Fraction(0)
    return coverage.seconds((_ms(start_ms), _ms(end_ms)))


def _ms(ms: int) -> datetime:
    return datetime.fromtimestamp(ms // 1000, tz=UTC).replace(microsecond=(ms % 1000) * 1000)


def index_spans(
    index: Iterable[VideoEntry], loaded: Collection[str], room_end_s: int | None
) -> list[tuple[int, int | None]]:
    """The video spans of the index's tracks whose participant is not among ``loaded``."""
    found = []
    for sid, _, published, unpublished, end_s in index:
        if sid not in loaded:
            span = track_span(TrackFold(published, unpublished, True), end_s, room_end_s)
            if span is not None:
                found.append(span)
    return found


def _reindex(
    index: Iterable[VideoEntry],
    full: RoomFold,
    gone: Collection[str],
    horizon_s: int,
    spans: tuple[tuple[int, int], ...],
) -> tuple[tuple[VideoEntry, ...], tuple[tuple[int, int], ...]]:
    """The index after a step (``full``: the live participants loaded, with the recent events; ``gone``: retired in
    this step), and the spans with every span now final (ended before the horizon: any event changing it rebuilds)
    moved out of the index into them - so the header holds the tracks still open, not the room's history."""
    entries = [entry for entry in index if entry[0] not in full.participants and entry[0] not in gone]
    for sid, participant in full.participants.items():
        end_s = participant.connection_end_s
        entries.extend(
            (sid, t, track.published, track.unpublished, end_s)
            for t, track in participant.tracks.items()
            if track.video and track.published is not None
        )
    kept: list[VideoEntry] = []
    final = list(spans)
    room_end_s = full.room_end_s
    for entry in entries:  # track_span, inline (this runs over every open camera per batch)
        _, _, published, unpublished, end_s = entry
        ends = [end for end in (unpublished, end_s, room_end_s) if end is not None]
        if not ends:
            kept.append(entry)
            continue
        end = min(ends)
        if end <= published:
            continue  # no span
        if end < horizon_s:
            final.append((published, end))
        else:
            kept.append(entry)
    kept.sort()
    return tuple(kept), merge_spans(final) if len(final) > len(spans) else spans


def participants_needed(state: RoomState, events: Iterable[LiveKitEventRecord]) -> frozenset[str] | None:
    """The live participants whose registers folding ``events`` into ``state`` reads: those the events name, those
    named by the window's events that this batch moves past the horizon (into the fold) and those closed in the
    fold; None (all of them) once the room finished, or when the metadata runs are due to be pruned (every live
    participant's run must be known, D163). The others' recent events fold only what they say about the
    room, and their video comes from the index (``advance`` may still ask for a few more: ``Step.missing``)."""
    events = list(events)
    if any(event.event_type == "room_finished" for event in (*events, *state.recent)) or (
        state.fold.room_end_s is not None or state.prune_due
    ):
        return None
    horizon = _horizon_at_most(state, events)
    moving = _named(event for event in state.recent if event.created_at < horizon)
    return frozenset(_named(events) | moving | state.fold.closed)


def _horizon_at_most(state: RoomState, events: Iterable[LiveKitEventRecord]) -> int:
    """An upper bound of the horizon after folding ``events`` (``advance`` counts only the new ones)."""
    last = max(
        [state.fold.last_s or 0, *(e.created_at for e in state.recent[-1:]), *(at for at, _ in state.aside[-1:]),
         *(e.created_at for e in events)]
    )  # fmt: skip
    return max(state.horizon_s, last - REORDER_SECONDS)


def fold_loaded(events: Iterable[LiveKitEventRecord], into: RoomFold, loaded: Collection[str] | None) -> RoomFold:
    """``fold_events``, except that an event naming a participant outside ``loaded`` (None: nobody is outside)
    folds only what it says about the room: that participant's registers were not read."""
    if loaded is None:
        return fold_events(events, into)
    unique = {event.event_id: event for event in events}
    for event in sorted(unique.values(), key=event_order):
        if event.participant_sid and event.participant_sid not in loaded:
            into.apply_room(event)
        else:
            into.apply(event)
    return into


def _bodiless(event: LiveKitEventRecord) -> LiveKitEventRecord:
    return replace(event, body=b"") if event.body else event


def _named(events: Iterable[LiveKitEventRecord]) -> set[str]:
    return {event.participant_sid for event in events if event.participant_sid}


def _retire(
    fold: RoomFold,
    horizon_s: int,
    recent: RoomFold,
    spans: Iterable[tuple[int, int]],
    coverage_from_ms: int,
    complete: bool = True,
) -> tuple[tuple[tuple[int, int], ...], int, int, dict[str, ParticipantFold]]:
    """Move participants whose connection ended before the horizon (and that no recent event names) out of the fold,
    their video spans into ``spans`` (pruned only when ``complete``: every live participant loaded). Returns the
    spans, the new coverage start, how many retired capped, and the retired participants' registers. ``recent``: the
    fold of the recent events alone (who they name, when those started)."""
    keep = set(recent.participants)
    collected = list(spans)
    capped = 0
    retired: dict[str, ParticipantFold] = {}
    # the room's end as of every event known, the recent ones too: a room_finished inside the window ends a capped
    # session there (D17), after the horizon - it is not final yet, whatever its cap said
    room_end_s = min((end for end in (fold.room_end_s, recent.room_end_s) if end is not None), default=None)
    for sid in sorted(fold.closed - keep):
        participant = fold.participants[sid]
        end = session_end(participant, room_end_s)
        if end is None or end[0] >= horizon_s:
            continue
        collected.extend(_closed_spans(participant, fold.room_end_s))
        if yields_to_room_end(participant):
            capped += 1
        retired[sid] = fold.remove(sid)
    merged = merge_spans(collected)
    if complete and len(merged) > PRUNE_SPANS_FROM:  # only with every live start known
        live = [*fold.participants.values(), *recent.participants.values()]
        starts = [p.joined_ms for p in live if p.joined_ms is not None]
        coverage_from_ms = max(coverage_from_ms, min([*starts, horizon_s * 1000]))
        merged = tuple(span for span in merged if span[1] * 1000 > coverage_from_ms)
    return merged, coverage_from_ms, capped, retired


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
        participant.left_s, participant.aborted, participant.sweep, participant.join_run,
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


def rebuilt(
    room_sid: str,
    events: Iterable[LiveKitEventRecord],
    delivered_ms: int = 0,
    metadata_keys: Collection[str] | None = None,
) -> tuple[RoomState, dict[str, ParticipantFold]]:
    """A fresh state from all of the room's events delivered so far (after a rebuild), and the registers of the
    participants it retired. ``delivered_ms``: the cut-off the events were chosen by (at least their latest
    ``received_at_ms``). ``metadata_keys``: the rule's room-metadata keys (None: unknown, no run is pruned)."""
    unique = sorted({event.event_id: event for event in events}.values(), key=event_order)
    last = unique[-1].created_at if unique else 0
    horizon = last - REORDER_SECONDS
    old = [event for event in unique if event.created_at < horizon]
    recent = tuple(_bodiless(event) for event in unique if event.created_at >= horizon)
    fold = fold_events(old)
    fold.room_sid = fold.room_sid or room_sid
    late_start = _late_start(fold_events(recent, fold.copy()))
    spans, coverage_from, capped, retired = _retire(fold, horizon, fold_events(recent), (), 0)
    floor = _prune_metadata(fold, fold_events(recent, fold.copy()).participants.values(), metadata_keys, (0, 0))
    full = fold_events(recent, fold.copy())
    index, spans = _reindex((), full, retired.keys(), horizon, spans)
    delivered = max([delivered_ms, *(event.received_at_ms for event in unique)])
    state = RoomState(
        room_sid,
        fold,
        recent,
        horizon,
        spans,
        coverage_from,
        capped,
        full=full,
        index=index,
        delivered_ms=delivered,
        late_start_s=late_start,
        metadata_floor_run=floor[0],
        metadata_floor_s=floor[1],
        prune_runs_at=floor[2],
        events_folded=len(unique),
    )
    return state, retired


def _prune_metadata(
    fold: RoomFold, live: Iterable[ParticipantFold], keys: Collection[str] | None, floor: tuple[int, int]
) -> tuple[int, int, int]:
    """Drop the runs of ``fold``'s metadata timeline that no live or future session can reach (D163), in place; the
    new floor (``RoomState.metadata_floor_run``, ``metadata_floor_s``) and when to try again (``prune_runs_at``).
    ``live``: every live participant (the window's too). Only with the rule's room-metadata ``keys`` known.

    A session's account under a key is that of the run it reached - its ``join_run``, else the first run reported at
    or after its start - or the latest valid one before it, or the first valid one from it on (``RoomAccounts``).
    ``e``: the earliest run a live participant reached (never past the latest run: it still grows). A future
    participant reaches the latest run or later (its own join), or one found by time (guarded by the floor). For
    each key, the runs from the latest valid one at or before ``e`` (else from ``e``) give every run from there on
    the same answer as the whole timeline: the runs before the earliest of those are dropped, and a session must
    reach the latest of those (``metadata_floor_run``) or later - else ``advance`` rebuilds. The runs kept are a
    suffix of the timeline, so a ``join_run`` counted from ``metadata_offset`` is a rebuild's."""
    runs = fold.metadata
    floor_run, floor_s = floor
    if keys is None or len(runs) < 2:
        return floor_run, floor_s, 2 * len(runs)
    offset = fold.metadata_offset
    lasts = [last for _, last, _ in runs]
    earliest = len(runs) - 1
    for participant in live:
        if participant.joined_ms is None:
            continue  # pending: its own join reports the latest run or a later one; a start found by time: the floor
        if participant.join_run is not None:
            reached = participant.join_run - offset
        else:
            reached = bisect_left(lasts, participant.joined_ms // 1000)
        earliest = min(earliest, max(0, reached))
    marks = [
        next((i for i in range(earliest, -1, -1) if valid_account(runs[i][2], key) is not None), earliest)
        for key in keys
    ] or [earliest]  # no room-metadata step: no session reads the runs
    low, high = min(marks), max(marks)
    if high > 0 and offset + high > floor_run:
        floor_run, floor_s = offset + high, max(floor_s, runs[high - 1][1])
    if low > 0:
        del runs[:low]
        fold.metadata_offset = offset + low
    return floor_run, floor_s, 2 * len(runs)


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
    spans: tuple[tuple[int, int], ...]  # the spans kept before this step
    retired: dict[str, ParticipantFold] = field(default_factory=dict)  # registers to keep on their session items
    index: tuple[VideoEntry, ...] = ()  # the index before this step: the video of participants not loaded
    missing: frozenset[str] = frozenset()  # not loaded, closed inside the window and the video changes during their
    # session: load them too and ask again (the rest of this step is then meaningless)

    def coverage(self) -> Coverage:
        """The room's video coverage (built only when a closed session needs it)."""
        elsewhere = index_spans(self.index, self.full.participants.keys(), self.full.room_end_s)
        return self.full.coverage([*self.spans, *elsewhere])

    def sessions(self, rule: AttributionRule) -> list[Session]:
        return self.full.sessions(rule, self.coverage, self.affected)


def advance(
    state: RoomState,
    events: Sequence[LiveKitEventRecord],
    retired: Mapping[str, ParticipantFold] | None = None,
    metadata_keys: Collection[str] | None = None,
) -> Step | None:
    """Fold ``events`` (of this room) into ``state``; None when only a rebuild from the stored events is exact.
    ``retired``: the registers (from their session items) of participants the events name that the state retired;
    without them such a participant looks new (``Step.unknown``): the caller looks it up and asks again. With only
    some participants loaded (``state.loaded``, from ``participants_needed``), ``Step.missing`` names those whose
    sessions this step changes but which were not loaded: the caller loads them too and asks again. ``metadata_keys``:
    the attribution rule's room-metadata keys (None: unknown - every change of the metadata timeline rebuilds); with
    them a change appended at the timeline's end is folded when it provably moves no session (``_appends_at_end``)."""
    retired = retired or {}
    known = {event.event_id for event in state.recent} | {event_id for _, event_id in state.aside}
    fresh = sorted(
        {e.event_id: e for e in events if e.event_id not in known}.values(), key=event_order
    )  # already folded: a duplicate
    if not fresh:  # all duplicates: their sessions are recomputed only for the thresholds (level-triggered)
        full = state.folded()
        again = frozenset(_named(events) & full.participants.keys())
        return Step(state, False, again, frozenset(), full, state.spans, index=state.index)
    if fresh[0].created_at < state.horizon_s:
        return None  # older than the horizon: a late event or a redelivery the state cannot tell apart
    before = state.folded()
    aside = [event for event in fresh if event.participant_sid in retired]
    fresh = [event for event in fresh if event.participant_sid not in retired]
    named = _named(fresh)
    if any(before.metadata_moves(e, folded=False) for e in aside):
        return None  # attribution of sessions, retired ones too, may change
    for event in (*fresh, *aside):
        if event.room_name and event.room_name != before.room_name and before.room_name:
            return None
        if event.event_type == "room_finished" and state.capped_retired:
            return None  # a capped (or dated-back swept) session may end at room_finished instead (D17)
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
    moving = _move(state, recent, horizon)
    if moving is None:
        return None
    fold, kept = moving
    everything = fold_loaded(kept, fold.copy(), state.loaded)  # before retiring: the sessions of this step come from it
    updated: dict[str, ParticipantFold] = {}
    for sid, registers in retired.items():
        mine = [event for event in aside if event.participant_sid == sid]
        if not mine:
            continue
        folded = _fold_retired(registers, mine, everything.room_end_s)
        if folded is None:
            return None
        updated[sid] = folded
    video_may_change = _coverage_may_change(before, fresh)
    since = _video_changes_from(before, everything, named) if video_may_change else None
    if video_may_change and state.loaded is not None:  # sessions closed inside the window, not loaded, it reaches
        missing = _closed_unloaded(kept, state.loaded, since)
        if missing:
            return Step(state, False, frozenset(), frozenset(), everything, state.spans, missing=missing)
    window = everything.closed if video_may_change else set()
    affected = frozenset((named | window) & everything.participants.keys())
    if (
        _beyond_state(state, everything, affected, since)
        or not _appends_at_end(before, fresh, _late_start(everything, state), metadata_keys)
        or _reaches_pruned(state, everything, affected)
    ):
        return None  # attribution of sessions, retired ones too, may change
    spans, coverage_from, capped, retiring = _retire(
        fold, horizon, fold_events(kept), state.spans, state.coverage_from_ms, state.complete
    )
    new_state = replace(
        _next_state(
            state, events, fold, kept, horizon, (spans, coverage_from, capped, retiring), set_aside, metadata_keys
        ),
        late_start_s=_late_start(everything, state),
        events_folded=state.events_folded + len(fresh) + len(aside),  # none folded before (``known``, the horizon)
    )
    return Step(new_state, True, affected, unknown, everything, state.spans, {**updated, **retiring}, state.index)


def _late_start(fold: RoomFold, state: RoomState | None = None) -> int:
    """The latest start (s) among the fold's participants without a ``join_run`` (their metadata run is found by
    time) and the state's (whose participants, retired ones too, were all loaded when their start was set)."""
    starts = [p.joined_ms // 1000 for p in fold.participants.values() if p.join_run is None and p.joined_ms is not None]
    return max([state.late_start_s if state is not None else 0, *starts])


def _appends_at_end(
    before: RoomFold, fresh: Sequence[LiveKitEventRecord], late_start_s: int, keys: Collection[str] | None
) -> bool:
    """Whether the metadata ``fresh`` reports changes no session's account: none moves the timeline
    (``RoomFold.metadata_moves``: new metadata, or reported before the latest run started), or those that do provably
    change no session's account, so they fold without a rebuild (D163): every one comes after the latest run's last
    report (it appends runs; none splits one); no session without a ``join_run`` started after that report (its run,
    found by time, would be an appended one: ``late_start_s``); and for every room-metadata key of the rule the
    timeline already holds a valid account (every session reaching a run held so far keeps its answer, ``valid[r] or
    before[r] or after[r]``). The sessions of participants the reports name are recomputed as always."""
    moves = [event for event in fresh if before.metadata_moves(event)]
    if not moves:
        return True
    runs = before.metadata
    if keys is None or not runs:
        return False
    latest = runs[-1][1]
    if any(event.created_at <= latest for event in moves) or late_start_s > latest:
        return False
    return all(holds_account(runs, key) for key in keys)


def _reaches_pruned(state: RoomState, everything: RoomFold, affected: Iterable[str]) -> bool:
    """Whether an affected session may reach a metadata run pruned, or one whose answer needs a run pruned
    (``_prune_metadata``): its ``join_run`` is below the floor, or its run is found by time and it started at or
    before the floor's last report (a join lost, its start known from a late left)."""
    for sid in affected:
        participant = everything.participants[sid]
        if participant.joined_ms is None:
            continue
        if participant.join_run is not None:
            if participant.join_run < state.metadata_floor_run:
                return True
        elif participant.joined_ms // 1000 <= state.metadata_floor_s:
            return True
    return False


def _beyond_state(state: RoomState, everything: RoomFold, affected: Iterable[str], since: int | None) -> bool:
    """Whether the step's sessions need more than the state keeps: the video coverage moves before the horizon
    (``since``: a late close extending a span that had ended there) - retired participants' final sessions may
    overlap it, and the spans there are final in the header -, or an affected session starts before the video spans
    kept."""
    if since is not None and since < state.horizon_s:
        return True
    starts = (everything.participants[sid].joined_ms for sid in affected)
    return any(joined is not None and joined < state.coverage_from_ms for joined in starts)


def _move(
    state: RoomState, recent: tuple[LiveKitEventRecord, ...], horizon: int
) -> tuple[RoomFold, tuple[LiveKitEventRecord, ...]] | None:
    """The fold with the recent events older than ``horizon`` moved into it, and the events kept; None when one names
    a participant whose registers were not loaded (``participants_needed`` loads them: never, unless it is wrong)."""
    moved = [event for event in recent if event.created_at < horizon]
    loaded = state.loaded
    if loaded is not None and any(e.participant_sid and e.participant_sid not in loaded for e in moved):
        return None
    fold = state.fold.copy()
    for event in moved:
        fold.apply(event)
    return fold, recent[len(moved) :]


def _next_state(
    state: RoomState,
    events: Sequence[LiveKitEventRecord],
    fold: RoomFold,
    kept: tuple[LiveKitEventRecord, ...],
    horizon: int,
    retirement: tuple[tuple[tuple[int, int], ...], int, int, dict[str, ParticipantFold]],
    set_aside: Sequence[tuple[int, str]],
    metadata_keys: Collection[str] | None = None,
) -> RoomState:
    spans, coverage_from, capped, retiring = retirement
    floor = (state.metadata_floor_run, state.metadata_floor_s, state.prune_runs_at)
    if state.complete and state.prune_due and metadata_keys is not None:
        live = fold_loaded(kept, fold.copy(), state.loaded).participants.values()  # every live one: all loaded
        floor = _prune_metadata(fold, live, metadata_keys, floor[:2])
    full = fold_loaded(kept, fold.copy(), state.loaded)
    index, spans = _reindex(state.index, full, retiring.keys(), horizon, spans)
    delivered = max([state.delivered_ms, *(event.received_at_ms for event in events)])
    return RoomState(
        state.room_sid, fold, kept, horizon, spans, coverage_from, state.capped_retired + capped,
        tuple(entry for entry in set_aside if entry[0] >= horizon), state.version, full, index, state.complete,
        delivered, state.generation, state.loaded, state.late_start_s, *floor,
    )  # fmt: skip


_CLOSES = frozenset({"participant_left", SWEPT, CAPPED})


def _video_changes_from(before: RoomFold, after: RoomFold, named: Iterable[str]) -> int | None:
    """The earliest second from which the room's video coverage differs between ``before`` and ``after`` (folds of
    the same loaded participants; only those ``named`` and the orphan tracks can differ), None when it does not.
    Spans are compared track by track: a span that appears or disappears differs from its start, one that moves
    from the earlier of its two starts, else from the earlier of its two ends."""
    pairs: list[tuple[tuple[int, int | None] | None, tuple[int, int | None] | None]] = []
    for sid in named:
        was, now = before.participants.get(sid), after.participants.get(sid)
        tracks = {*(was.tracks if was is not None else ()), *(now.tracks if now is not None else ())}
        for track in tracks:
            pairs.append((_span_of(was, track, before.room_end_s), _span_of(now, track, after.room_end_s)))
    for track in before.orphans.keys() | after.orphans.keys():
        was_track, now_track = before.orphans.get(track), after.orphans.get(track)
        pairs.append((
            track_span(was_track, None, before.room_end_s) if was_track is not None else None,
            track_span(now_track, None, after.room_end_s) if now_track is not None else None,
        ))  # fmt: skip
    earliest: int | None = None
    for was_span, now_span in pairs:
        if was_span == now_span:
            continue
        if was_span is None or now_span is None:
            at = (now_span or was_span or (0, None))[0]
        elif was_span[0] != now_span[0]:
            at = min(was_span[0], now_span[0])
        else:
            at = min(end for end in (was_span[1], now_span[1]) if end is not None)
        earliest = at if earliest is None else min(earliest, at)
    return earliest


def _span_of(participant: ParticipantFold | None, track: str, room_end_s: int | None) -> tuple[int, int | None] | None:
    if participant is None or track not in participant.tracks:
        return None
    return track_span(participant.tracks[track], participant.connection_end_s, room_end_s)


def _closed_unloaded(kept: Iterable[LiveKitEventRecord], loaded: Collection[str], since: int | None) -> frozenset[str]:
    """Participants not loaded whose session may have closed inside the window after ``since`` (the video changes
    from then on): a recent close names them. Their connection end is at most their latest close in the window (or
    before the horizon, from the fold): one whose latest close is at or before ``since`` keeps its video seconds."""
    if since is None:
        return frozenset()
    latest: dict[str, int] = {}
    for event in kept:
        sid = event.participant_sid
        if sid and sid not in loaded and event.event_type in _CLOSES:
            latest[sid] = max(latest.get(sid, event.created_at), event.created_at)
    return frozenset(sid for sid, at in latest.items() if at > since)


# --- the stored form (``items`` compresses it into the state item) --------------------------------------------------

_EVENT_FIELDS = tuple(f.name for f in fields(LiveKitEventRecord) if f.name != "body")
STATE_FORMAT = 7  # bump when the stored form changes meaning: a state of another format is ignored (rebuild)


def _track_out(sid: str, track: TrackFold) -> list[object]:
    return [sid, track.published, track.unpublished, track.video]


def _track_in(values: Sequence[Any]) -> tuple[str, TrackFold]:
    sid, published, unpublished, video = values
    return str(sid), TrackFold(published, unpublished, bool(video))


def participant_to_json(p: ParticipantFold) -> list[Any]:
    return [
        p.sid, p.identity, p.kind, p.metadata, p.attributes, p.joined_ms, p.left_s, p.aborted,
        list(p.sweep) if p.sweep is not None else None, [_track_out(t, p.tracks[t]) for t in sorted(p.tracks)],
        p.join_run,
    ]  # fmt: skip


def participant_from_json(values: Sequence[Any]) -> ParticipantFold:
    """Registers as ``participant_to_json`` wrote them; those written before ``join_run`` (ten values, on the session
    items of participants retired then) have none: a join folded into them later changes it, and the room is rebuilt."""
    sid, identity, kind, metadata, attributes, joined_ms, left_s, aborted, sweep, tracks = values[:10]
    join_run = values[10] if len(values) > 10 else None
    return ParticipantFold(
        sid, identity, kind, metadata, dict(attributes), joined_ms, left_s, bool(aborted),
        (int(sweep[0]), ClosedBy(sweep[1]), int(sweep[2])) if sweep is not None else None,
        dict(_track_in(t) for t in tracks), int(join_run) if join_run is not None else None,
    )  # fmt: skip


def registers_text(participant: ParticipantFold) -> str:
    """A retired participant's registers as kept on its session item (compact JSON)."""
    return json.dumps(participant_to_json(participant), separators=(",", ":"), sort_keys=True)


def registers_from_text(text: str) -> ParticipantFold:
    return participant_from_json(json.loads(text))


def state_to_json(state: RoomState) -> dict[str, Any]:
    """The header: everything but the live participants' registers (those are ``participant_to_json``, one item
    each)."""
    fold = state.fold
    return {
        "format": STATE_FORMAT,
        "room": [fold.room_sid, fold.room_name, [list(run) for run in fold.metadata], fold.room_end_s, fold.last_s],
        "metadata": [fold.metadata_offset, state.metadata_floor_run, state.metadata_floor_s, state.prune_runs_at],
        "orphans": [_track_out(t, track) for t, track in sorted(fold.orphans.items())],
        "closed": sorted(fold.closed),
        "recent": [[getattr(event, name) for name in _EVENT_FIELDS] for event in state.recent],
        "horizon_s": state.horizon_s,
        "spans": [list(span) for span in state.spans],
        "coverage_from_ms": state.coverage_from_ms,
        "capped_retired": state.capped_retired,
        "aside": [list(entry) for entry in state.aside],
        "index": [list(entry) for entry in state.index],
        "late_start_s": state.late_start_s,
    }


def state_from_json(
    room_sid: str, data: dict[str, Any], version: int, delivered_ms: int = 0, generation: str = ""
) -> RoomState:
    """The header, no participant loaded (``with_participants``); ``unusable`` when of another format: the room is
    then rebuilt and a fresh state written."""
    if data.get("format") != STATE_FORMAT:
        return replace(RoomState.unusable(room_sid, version), delivered_ms=delivered_ms, generation=generation)
    fold = RoomFold()
    fold.room_sid, fold.room_name, metadata, fold.room_end_s, fold.last_s = data["room"]
    fold.metadata = [(int(first), int(last), str(text)) for first, last, text in metadata]
    fold.metadata_offset, floor_run, floor_s, prune_runs_at = (int(value) for value in data["metadata"])
    fold.orphans = dict(_track_in(t) for t in data["orphans"])
    fold.video.update(("", t) for t, track in fold.orphans.items() if track.video)
    fold.closed = set(data["closed"])
    recent = tuple(
        LiveKitEventRecord(**dict(zip(_EVENT_FIELDS, values, strict=True)), body=b"") for values in data["recent"]
    )
    spans = tuple((int(a), int(b)) for a, b in data["spans"])
    index: tuple[VideoEntry, ...] = tuple(map(tuple, data["index"]))  # JSON's strings and ints, as written
    return RoomState(
        room_sid, fold, recent, int(data["horizon_s"]), spans, int(data["coverage_from_ms"]),
        int(data["capped_retired"]), tuple((int(at), str(event_id)) for at, event_id in data["aside"]), version,
        index=index, complete=False, delivered_ms=delivered_ms, generation=generation, loaded=frozenset(),
        late_start_s=int(data["late_start_s"]), metadata_floor_run=floor_run, metadata_floor_s=floor_s,
        prune_runs_at=prune_runs_at,
    )  # fmt: skip
