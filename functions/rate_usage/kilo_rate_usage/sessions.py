"""Rebuild a room's participant sessions from all of its stored events (pure; no I/O, no clock).

Rebuilding from the full, de-duplicated event set of the room - rather than applying events one by one - is what makes
rating indifferent to duplicates, redelivery and order: any permutation of the same events gives the same sessions.

Rules (shared/reference/livekit.md, billing-policy.md; decisions in docs/decisions.md):
- a session is (room sid, participant sid), closed by sid, never by identity;
- start = ``joinedAtMs`` (else ``joinedAt``) of the participant, from ``participant_joined`` or, if the join was lost or
  is late, from the participant info inside ``participant_left`` or from the sweeper's synthetic join
  (``kilo_participant_listed``: RoomService listed a participant with no start, with its kind and ``joinedAtMs``; a
  real ``participant_joined`` wins over it whatever the order, D375 amended); no known start = pending (nothing
  billed yet) while the room runs - once the room finished (or the sweeper closed the participant) the earliest
  moment we hold of it (``inferred_start_ms``: its join was lost, D375) - billed by its kind if an event told it,
  else (track events carry no kind: it may be an INGRESS, not billed, or a SIP caller, audio only) not billed,
  counted;
- end = ``participant_left``'s ``createdAt``, else the earlier of ``room_finished``'s and a sweeper's *swept* close
  (RoomService no longer listed the connection: it had ended), else ``room_finished``'s, else the sweeper's close
  (swept or capped); open otherwise (``session_end``);
- a real close (``participant_left``, ``room_finished``) is never capped, whatever the length: LiveKit saw both ends;
  only the sweeper caps, with a close event of its own, and a late real close still wins over a cap (D17);
- the account: the rule's steps (D16); the room's metadata is the one in force when the session started
  (``room_account``): a later change of the room's metadata does not re-attribute it;
- ``participant_connection_aborted`` bills nothing;
- a second is video while any video track (camera or screen share) is published in the room; open tracks close at
  ``room_finished``.
"""

from __future__ import annotations

import functools
import json
from bisect import bisect_left
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass, field, replace
from datetime import UTC, datetime, timedelta
from fractions import Fraction

from kilo_billing.accounts import UNATTRIBUTED, is_account_id
from kilo_billing.livekit_events import LiveKitEventRecord
from kilo_billing.meters import Coverage, minutes_by_segment, split_connection
from kilo_billing.periods import Period
from kilo_rate_usage.model import (
    CAPPED,
    LISTED,
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


@dataclass(slots=True)
class TrackFold:
    """One track's registers: first publish, last unpublish (seconds), whether any event called it video."""

    published: int | None = None
    unpublished: int | None = None
    video: bool = False


@dataclass(slots=True)
class ParticipantFold:
    sid: str
    identity: str = ""
    kind: str = ""
    metadata: str = ""
    attributes: dict[str, str] = field(default_factory=dict)  # replaced whole, never mutated (folds share it)
    joined_ms: int | None = None
    left_s: int | None = None
    aborted: bool = False
    # the sweeper's close: (close time, how, when the sweep saw it gone); the close time is the sweep's own moment, or
    # the last moment something vouched for the session when that is older (D125); a swept close when there is one
    # (the earliest), else the earliest cap
    sweep: tuple[int, ClosedBy, int] | None = None
    tracks: dict[str, TrackFold] = field(default_factory=dict)  # the tracks this participant published, by sid
    # the room's metadata run (index in ``RoomFold.metadata``) its first ``participant_joined`` reported: the metadata
    # in force at its start, whatever else was reported in the same second (D163); None: no join seen
    join_run: int | None = None

    def copy(self) -> ParticipantFold:
        return ParticipantFold(
            self.sid, self.identity, self.kind, self.metadata, self.attributes, self.joined_ms, self.left_s,
            self.aborted, self.sweep, {sid: replace(track) for sid, track in self.tracks.items()}, self.join_run,
        )  # fmt: skip

    @property
    def connection_end_s(self) -> int | None:
        """When its connection ended as far as its tracks are concerned: left, else the sweeper's close."""
        return self.left_s if self.left_s is not None else (self.sweep[0] if self.sweep is not None else None)


def _ms_to_dt(ms: int) -> datetime:
    return datetime.fromtimestamp(ms // 1000, tz=UTC).replace(microsecond=(ms % 1000) * 1000)


# the events whose ``room`` is the whole room (its metadata included); the track and egress events name only its sid
# and name, the sweeper's closes nothing of it
FULL_ROOM_EVENTS = frozenset(
    {"room_started", "room_finished", "participant_joined", "participant_left", "participant_connection_aborted"}
)


def reported_metadata(event: LiveKitEventRecord) -> str | None:
    """The room metadata ``event`` reports, None when it reports none. LiveKit omits empty metadata (a zero value), so
    an event carrying the whole room without metadata reports ``""``: the app cleared it (D163)."""
    if event.room_metadata or event.event_type in FULL_ROOM_EVENTS:
        return event.room_metadata
    return None


MetadataRun = tuple[int, int, str]  # a run of equal room metadata: first and last createdAt reporting it, the text


def room_account(runs: Sequence[MetadataRun], key: str, start_ms: int) -> str | None:
    """The account (a valid id under ``key``) of the room's metadata in force when a session started (D163):
    that of the first report at or after its start (normally its own ``participant_joined``); when that metadata has
    no valid account, the latest valid one reported before it (metadata without an account never overrides an
    account found), else the first reported after it. A change reported after that first report never moves it.
    One session's answer; a fold's sessions share one ``RoomAccounts`` (each run parsed once)."""
    return RoomAccounts(runs).account(key, start_ms)


def valid_account(text: str, key: str) -> str | None:
    """The valid account id ``text`` (room metadata) holds under ``key``, else None."""
    value = _json_value(text, key)
    return value if value is not None and is_account_id(value) else None


def holds_account(runs: Sequence[MetadataRun], key: str) -> bool:
    """Whether some run of the timeline holds a valid account under ``key`` (the latest first: usually one parse)."""
    return any(valid_account(text, key) is not None for _, _, text in reversed(runs))


class RoomAccounts:
    """``room_account`` for every session of one metadata timeline: each run's valid account under a key is parsed
    once, with the latest valid account before each run and the first valid one from each run on, so a session's
    answer is a binary search (the runs' last reports are in order) - the cost of a rebuild grows with sessions plus
    runs, not with their product (D163)."""

    __slots__ = ("_lasts", "_offset", "_runs", "_tables")

    def __init__(self, runs: Sequence[MetadataRun], offset: int = 0) -> None:
        self._runs = runs
        self._offset = offset  # runs pruned before ``runs[0]`` (``RoomFold.metadata_offset``): a join_run counts them
        self._lasts = [last for _, last, _ in runs]
        self._tables: dict[str, tuple[list[str | None], list[str | None], list[str | None]]] = {}

    def _table(self, key: str) -> tuple[list[str | None], list[str | None], list[str | None]]:
        table = self._tables.get(key)
        if table is None:
            valid: list[str | None] = []
            for _, _, text in self._runs:
                valid.append(valid_account(text, key))
            before: list[str | None] = [None]  # before[i]: the latest valid account of the runs before run i
            for value in valid:
                before.append(value or before[-1])
            after: list[str | None] = [None] * (len(valid) + 1)  # after[i]: the first valid one from run i on
            for i in range(len(valid) - 1, -1, -1):
                after[i] = valid[i] or after[i + 1]
            table = self._tables[key] = (valid, before, after)
        return table

    def account(self, key: str, start_ms: int, join_run: int | None = None) -> str | None:
        """``join_run``: the run the session's own ``participant_joined`` reported, when known - it comes first (a
        change reported in the same second as the join is otherwise ordered by event ids)."""
        if not self._runs:
            return None
        valid, before, after = self._table(key)
        if join_run is not None and 0 <= join_run - self._offset < len(valid):
            reached = join_run - self._offset
        else:
            reached = bisect_left(self._lasts, start_ms // 1000)  # the first run reported at or after the start
        if reached == len(valid):
            return before[reached]
        return valid[reached] or before[reached] or after[reached]


def _account(participant: ParticipantFold, runs: RoomAccounts, rule: AttributionRule) -> str:
    assert participant.joined_ms is not None
    for source, key in rule.steps:
        value: str | None
        if source == "room_metadata":
            value = runs.account(key, participant.joined_ms, participant.join_run)
        elif source == "participant_attribute":
            value = participant.attributes.get(key) or None
        else:
            value = _json_value(participant.metadata, key)
        if value and is_account_id(value):
            return value
        # a value that is not a valid account id is not trusted: the next source is tried, else "unattributed"
    return UNATTRIBUTED


def session_end(participant: ParticipantFold, room_end_s: int | None) -> tuple[int, ClosedBy] | None:
    """When (seconds) and how a participant's session ended, None while open (D17): its ``participant_left``; else
    ``room_finished`` when the room ended before the sweep saw the participant gone (a *swept* close is RoomService's
    proof that the connection was gone by the sweep; ``room_finished`` says when the room ended: the earlier one
    wins; a swept close dated back to its last vouched moment, D125, is only a lower bound, so a room end up to the
    sweep replaces it); ``room_finished`` over a *cap*, which proves nothing; else the sweeper's close (a swept one
    over a cap: ``ParticipantFold.sweep``)."""
    if participant.left_s is not None:
        return participant.left_s, ClosedBy.LEFT
    sweep = participant.sweep
    if room_end_s is not None and (sweep is None or sweep[1] is not ClosedBy.SWEPT or room_end_s <= sweep[2]):
        return room_end_s, ClosedBy.ROOM_FINISHED
    return (sweep[0], sweep[1]) if sweep is not None else None


def inferred_start_ms(participant: ParticipantFold, room_end_s: int | None) -> int | None:
    """The start (ms) of a participant no event told the start of (its ``participant_joined`` lost, and its
    ``participant_left`` too or without ``joinedAt``), once its end is known - the room finished or the sweeper closed
    it: the earliest moment we hold of it (a track's publish or unpublish, its leave, the sweeper's close), so the time
    it provably spent in the room is billed, never dropped (D375). None while its start is known, while it may still
    come (neither end known), for an aborted connection (it opens nothing) and when no moment is known. A real join
    folded later replaces it (``joined_ms``): the rebuild is from every event, so nothing is counted twice."""
    if participant.joined_ms is not None or participant.aborted:
        return None
    if room_end_s is None and participant.sweep is None:
        return None
    tracks = [at for track in participant.tracks.values() for at in (track.published, track.unpublished)]
    moments = [at for at in (*tracks, participant.connection_end_s) if at is not None]
    return min(moments) * 1000 if moments else None


def yields_to_room_end(participant: ParticipantFold) -> bool:
    """Whether a later ``room_finished`` can still change this closed participant's end (``session_end``): a cap, or a
    swept close dated back to before the sweep that saw the participant gone."""
    sweep = participant.sweep
    return participant.left_s is None and sweep is not None and (sweep[1] is ClosedBy.CAPPED or sweep[2] > sweep[0])


UNKNOWN_KIND = "UNKNOWN"  # the kind of a join-less participant no event told the kind of (not billed, D375)
FAR_FUTURE = datetime(9999, 1, 1, tzinfo=UTC)
US = 1_000_000  # microseconds per second (``Coverage.of_micros``)
FAR_FUTURE_US = (FAR_FUTURE - datetime(1970, 1, 1, tzinfo=UTC)) // timedelta(microseconds=1)


def track_span(track: TrackFold, publisher_end_s: int | None, room_end_s: int | None) -> tuple[int, int | None] | None:
    """The span (seconds) a video track was published: from its first ``track_published`` to its
    ``track_unpublished``, else its publisher's connection end (a lost unpublish must not bill everyone who stays as
    video), else ``room_finished``; end None = still published. None when it is not video or never seen published."""
    if not track.video or track.published is None:
        return None  # an unpublish without its publish: nothing known about when it started
    known = [end for end in (track.unpublished, publisher_end_s, room_end_s) if end is not None]
    if not known:
        return (track.published, None)
    end = min(known)
    return (track.published, end) if end > track.published else None


class RoomFold:
    """The registers a room's events fold into, in (createdAt, event id) order - what ``rebuild_room`` computes sessions
    from. Folding the same events in that order always gives the same registers; ``rooms`` keeps a fold of a room's
    older events and folds newer ones into a copy (copy-on-write per participant, so a copy is cheap)."""

    __slots__ = ("_owned", "closed", "last_s", "metadata", "metadata_offset", "orphans", "participants", "room_end_s",
                 "room_name", "room_sid", "video")  # fmt: skip

    def __init__(self) -> None:
        self.room_sid = ""
        self.room_name = ""
        self.metadata: list[MetadataRun] = []  # the room's metadata as reported over time, one run per change
        # runs pruned before ``metadata[0]`` (``rooms``, D163): a ``join_run`` indexes the whole timeline, so it counts
        # them - the runs kept are the whole timeline's last ones, as a rebuild folds them
        self.metadata_offset = 0
        self.room_end_s: int | None = None
        self.last_s: int | None = None  # createdAt of the latest event folded
        self.participants: dict[str, ParticipantFold] = {}
        self.orphans: dict[str, TrackFold] = {}  # tracks of events that name no participant
        self.closed: set[str] = set()  # participants whose connection end is known (left, swept or room finished)
        self.video: set[tuple[str, str]] = set()  # (participant sid, track sid) of every video track
        self._owned: set[str] = set()  # participants this fold may mutate (the others are shared with its source)

    def copy(self) -> RoomFold:
        other = RoomFold()
        other.room_sid, other.room_name, other.metadata = self.room_sid, self.room_name, list(self.metadata)
        other.metadata_offset = self.metadata_offset
        other.room_end_s, other.last_s = self.room_end_s, self.last_s
        other.participants = dict(self.participants)
        other.orphans = {sid: replace(track) for sid, track in self.orphans.items()}
        other.closed, other.video = set(self.closed), set(self.video)
        self._owned = set()  # from now on both share every participant: whoever writes, copies first
        return other

    def __eq__(self, other: object) -> bool:
        return isinstance(other, RoomFold) and all(
            getattr(self, name) == getattr(other, name) for name in self.__slots__ if name != "_owned"
        )

    __hash__ = None  # type: ignore[assignment]

    def participant(self, sid: str) -> ParticipantFold:
        """The participant, owned by this fold (copied first when shared)."""
        found = self.participants.get(sid)
        if found is None:
            found = self.participants[sid] = ParticipantFold(sid)
        elif sid not in self._owned:
            found = self.participants[sid] = found.copy()
        self._owned.add(sid)
        return found

    def remove(self, sid: str) -> ParticipantFold:
        self._owned.discard(sid)
        self.closed.discard(sid)
        removed = self.participants.pop(sid)
        self.video.difference_update((sid, track) for track in removed.tracks)
        return removed

    def apply_room(self, event: LiveKitEventRecord) -> None:
        """Fold only what one event says about the room (its sid, name, metadata, latest createdAt): how ``rooms``
        folds an event naming a participant whose registers are not loaded."""
        self.room_sid = self.room_sid or event.room_sid
        self.last_s = event.created_at if self.last_s is None else max(self.last_s, event.created_at)
        self.room_name = event.room_name or self.room_name
        reported = reported_metadata(event)
        if reported is not None:
            self._report_metadata(event.created_at, reported)

    def _report_metadata(self, at: int, text: str) -> None:
        last = self.metadata[-1] if self.metadata else None
        if last is not None and last[2] == text:
            self.metadata[-1] = (last[0], max(last[1], at), text)
        else:
            self.metadata.append((at, at, text))

    @property
    def room_metadata(self) -> str:
        """The latest metadata the room reported."""
        return self.metadata[-1][2] if self.metadata else ""

    def metadata_moves(self, event: LiveKitEventRecord, folded: bool = True) -> bool:
        """Whether the room metadata ``event`` reports may change a session's account: new metadata, or metadata
        reported earlier than its latest run started (it lands inside the timeline). With ``folded`` False (the event
        is kept aside, never folded), also a report after the latest run's end (the run would grow)."""
        reported = reported_metadata(event)
        if reported is None:
            return False
        if not self.metadata:
            return True
        first, last, text = self.metadata[-1]
        if text != reported or event.created_at < first:
            return True
        return not folded and event.created_at > last

    def apply(self, event: LiveKitEventRecord) -> None:
        """Fold one event (events must come in (createdAt, event id) order)."""
        self.apply_room(event)
        if event.event_type == "room_finished":
            self.room_end_s = event.created_at if self.room_end_s is None else min(self.room_end_s, event.created_at)
            self.closed.update(
                sid
                for sid, p in self.participants.items()
                if p.joined_ms is not None or inferred_start_ms(p, self.room_end_s) is not None  # D375
            )
        if event.track_sid:
            self._apply_track(event)
        if not event.participant_sid:
            return
        participant = self.participant(event.participant_sid)
        participant.identity = participant.identity or event.participant_identity
        # the sweeper's synthetic join (RoomService's answer) tells only what no webhook told before it - a start, and
        # with it a kind - and a participant_joined's kind (the zero value omitted: "" is STANDARD) replaces its kind,
        # so a real join wins in any order (D375, amended)
        if event.event_type != LISTED or participant.joined_ms is None:
            if event.participant_kind or event.event_type == "participant_joined":
                participant.kind = event.participant_kind
            if event.participant_metadata:
                participant.metadata = event.participant_metadata
            if event.participant_attributes:
                participant.attributes = json.loads(event.participant_attributes)
        if event.joined_at_ms and (participant.joined_ms is None or event.event_type == "participant_joined"):
            participant.joined_ms = event.joined_at_ms
        if event.event_type == "participant_joined" and participant.join_run is None and self.metadata:
            # ``apply_room`` folded its report into the latest run (counted over the whole timeline, pruned runs too)
            participant.join_run = self.metadata_offset + len(self.metadata) - 1
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
            kept = participant.sweep
            # a swept close (RoomService's proof the connection had ended) over a cap (which proves nothing), else the
            # earlier: a cap must not hide the sweep from ``session_end`` once room_finished overrides the cap (D17)
            if kept is None or (
                (closed_by is ClosedBy.SWEPT, -event.created_at) > (kept[1] is ClosedBy.SWEPT, -kept[0])
            ):
                participant.sweep = (event.created_at, closed_by, max(event.created_at, event.received_at_ms // 1000))
        # closed: its end known - also one whose join was lost once it has an inferred start (D375)
        ended = participant.connection_end_s is not None or self.room_end_s is not None
        if (participant.joined_ms is not None and ended) or inferred_start_ms(participant, self.room_end_s) is not None:
            self.closed.add(participant.sid)

    def _apply_track(self, event: LiveKitEventRecord) -> None:
        tracks = self.participant(event.participant_sid).tracks if event.participant_sid else self.orphans
        track = tracks.get(event.track_sid)
        if track is None:
            track = tracks[event.track_sid] = TrackFold()
        if event.track_type == "VIDEO":
            track.video = True
            self.video.add((event.participant_sid, event.track_sid))
        if event.event_type == "track_published":
            track.published = event.created_at if track.published is None else min(track.published, event.created_at)
        elif event.event_type == "track_unpublished":
            track.unpublished = (
                event.created_at if track.unpublished is None else max(track.unpublished, event.created_at)
            )

    def spans(self) -> list[tuple[int, int | None]]:
        """Every video span of the room (seconds; end None = still published)."""
        found = []
        for participant_sid, track_sid in self.video:
            if participant_sid:
                if participant_sid not in self.participants:
                    continue  # removed (retired) from this fold
                owner = self.participants[participant_sid]
                span = track_span(owner.tracks[track_sid], owner.connection_end_s, self.room_end_s)
            else:
                span = track_span(self.orphans[track_sid], None, self.room_end_s)
            if span is not None:
                found.append(span)
        return found

    def coverage(self, extra: Iterable[tuple[int, int | None]] = (), until_ms: int | None = None) -> Coverage:
        """The room's video coverage: its spans plus ``extra`` (spans kept elsewhere: retired participants', those of
        participants not loaded); a span still open ends at ``until_ms`` (month to date: now), else never."""
        open_end = until_ms * 1000 if until_ms is not None else FAR_FUTURE_US
        pairs = [(start * US, end * US if end is not None else open_end) for start, end in extra]
        pairs.extend((start * US, end * US if end is not None else open_end) for start, end in self.spans())
        return Coverage.of_micros(pairs)

    def provisional_accounts(self, rule: AttributionRule, sids: Iterable[str]) -> dict[str, tuple[str, int]]:
        """For each of ``sids`` with no start known yet (no session: its events came before its join), the account
        its session would be attributed to had it begun at the earliest moment the fold knows of it (a track's
        publish or unpublish, its leave, a sweep), and that moment in ms - what an erasure mark is judged by until
        the session exists (D220). A participant the fold knows no moment of is left out. Only the participants this
        fold holds are answered: rating asks a state's fold with its window's events folded in (``RoomState.folded``,
        D275)."""
        accounts = RoomAccounts(self.metadata, self.metadata_offset)
        found: dict[str, tuple[str, int]] = {}
        for sid in sorted(set(sids) & self.participants.keys()):
            participant = self.participants[sid]
            if participant.joined_ms is not None:
                continue
            tracks = [at for track in participant.tracks.values() for at in (track.published, track.unpublished)]
            moments = [at for at in (*tracks, participant.connection_end_s) if at is not None]
            if moments:
                at_ms = min(moments) * 1000
                found[sid] = (_account(replace(participant, joined_ms=at_ms), accounts, rule), at_ms)
        return found

    def sessions(
        self, rule: AttributionRule, coverage: Coverage | Callable[[], Coverage], sids: Iterable[str] | None = None
    ) -> list[Session]:
        """The sessions of ``sids`` (default: every participant) whose start is known or inferred
        (``inferred_start_ms``, D375), in participant-sid order.
        ``coverage``: the room's video coverage, or how to compute it (only a closed session needs it: an open one
        stores nothing that depends on video, D44)."""
        if isinstance(coverage, Coverage):
            merged: Coverage | None = coverage
        else:
            merged = None

        def once() -> Coverage:
            nonlocal merged
            if merged is None:
                assert callable(coverage)
                merged = coverage()
            return merged

        chosen = sorted(self.participants if sids is None else set(sids) & self.participants.keys())
        accounts = RoomAccounts(self.metadata, self.metadata_offset)  # each metadata run parsed once for all of them
        found: list[Session] = []
        for participant in (self.participants[sid] for sid in chosen):
            if participant.joined_ms is not None:
                built = _session(self.room_sid, participant, accounts, rule, self.room_end_s, once, self.room_name)
                found.append(built)
                continue
            # no start known: pending while the room runs; once it finished (or the sweeper closed it), a session from
            # the earliest moment we hold of it - its join was lost (D375). Billed by its kind if some event told
            # it; else (track events carry no kind) not billed: it may be an INGRESS (not billed) or a SIP caller
            # (audio only), and over-billing is worse than our lost cost - counted and logged instead
            start_ms = inferred_start_ms(participant, self.room_end_s)
            if start_ms is not None:
                inferred = replace(participant, joined_ms=start_ms)
                built = _session(self.room_sid, inferred, accounts, rule, self.room_end_s, once, self.room_name)
                if not participant.kind:
                    built = replace(built, kind=UNKNOWN_KIND, billing=Billing.NOT_BILLED, parts=())
                found.append(replace(built, inferred_start=True))
        return found


def fold_events(events: Iterable[LiveKitEventRecord], into: RoomFold | None = None) -> RoomFold:
    """Fold de-duplicated events in (createdAt, event id) order."""
    fold = into if into is not None else RoomFold()
    unique = {event.event_id: event for event in events}
    for event in sorted(unique.values(), key=event_order):
        fold.apply(event)
    return fold


def event_order(event: LiveKitEventRecord) -> tuple[int, str]:
    return (event.created_at, event.event_id)


def rebuild_room(
    events: Iterable[LiveKitEventRecord], rule: AttributionRule, max_session_seconds: int | None = None
) -> list[Session]:
    """All sessions of one room whose start is known, in participant-sid order.

    ``max_session_seconds`` is ignored (sessions are no longer capped here, D17); it is accepted until
    tests/unit/test_simulator.py stops passing it."""
    del max_session_seconds
    fold = fold_events(events)
    return fold.sessions(rule, fold.coverage())  # coverage merged once: each overlap is a binary search


def _session(
    room_sid: str,
    participant: ParticipantFold,
    metadata: RoomAccounts,
    rule: AttributionRule,
    room_end_s: int | None,
    coverage: Callable[[], Coverage],
    room_name: str = "",
) -> Session:
    """One participant's session. An open session holds nothing that changes with the clock (no video so far, no
    time of the room's last event): it is written when it opens and when it closes, not on every room event; month
    to date counts its minutes at query time from the room's state (D44)."""
    assert participant.joined_ms is not None
    start_ms = participant.joined_ms
    end_ms: int | None = None
    closed_by: ClosedBy | None = None
    end = session_end(participant, room_end_s)
    if end is not None:
        end_ms = max(end[0] * 1000, start_ms)  # createdAt has 1 s resolution; joinedAtMs has ms (no floor: D376)
        closed_by = end[1]
    billing = KIND_BILLING.get(participant.kind, Billing.ROOM_RULE)
    account = _account(participant, metadata, rule)
    parts: list[PeriodPart] = []
    connected = video = Fraction(0)
    if end_ms is not None and not participant.aborted:
        pieces = split_connection(
            _ms_to_dt(start_ms), _ms_to_dt(end_ms), coverage() if billing is Billing.ROOM_RULE else ()
        )
        for piece in pieces:
            connected += piece.connected_seconds
            video += piece.video_seconds
            if billing is not Billing.NOT_BILLED and piece.minutes.total:
                piece_start_ms = int(piece.start.timestamp() * 1000)
                parts.append(PeriodPart(piece.period.key, piece_start_ms, piece.minutes.video, piece.minutes.audio))
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
        room_name=room_name,
    )


Cuts = Callable[[int, int], Sequence[int]]  # [start, end) ms in one period -> its tier-segment starts inside


def by_segment(session: Session, cuts: Cuts, coverage: Callable[[], Coverage]) -> Session:
    """``session`` with each period part that overlaps more than one of its account's tier segments (``cuts``: the
    segment starts strictly inside the part) replaced by one part per segment, from the segment's start: the part's
    minutes, rounded once, shared out by its video and audio seconds inside each segment
    (``meters.minutes_by_segment``, D282). A part inside one segment is kept as it is; ``coverage`` (the
    room's video coverage, the one the session was computed with) is asked only when some part is cut."""
    if session.end_ms is None or not session.parts:
        return session
    parts: list[PeriodPart] = []
    cut_any = False
    for part in session.parts:
        period_start_ms, period_end_ms = _period_ms(part.period)
        start_ms, end_ms = max(session.start_ms, period_start_ms), min(session.end_ms, period_end_ms)
        inside = cuts(start_ms, end_ms)
        if not inside:
            parts.append(part)
            continue
        cut_any = True
        merged = coverage() if session.billing is Billing.ROOM_RULE else Coverage(())  # SIP: never video
        pieces = minutes_by_segment(start_ms, end_ms, inside, functools.partial(_video_in, merged))
        parts.extend(
            PeriodPart(part.period, at_ms, minutes.video, minutes.audio) for at_ms, minutes in pieces if minutes.total
        )
    return replace(session, parts=tuple(parts)) if cut_any else session


def _video_in(coverage: Coverage, start_ms: int, end_ms: int) -> Fraction:
    return coverage.seconds((_ms_to_dt(start_ms), _ms_to_dt(end_ms)))


@functools.lru_cache(maxsize=64)
def _period_ms(key: str) -> tuple[int, int]:
    """A period's [start, end) in epoch ms (parsed once per key: every closed session's parts ask)."""
    period = Period.parse(key)
    return int(period.start.timestamp()) * 1000, int(period.end.timestamp()) * 1000
