"""What rating's logic needs from the outside (Protocols), the units of work it hands over, and the domain errors the
adapters raise. Implemented by ``adapters`` (DynamoDB, SQS, RoomService) and, in tests, by ``tests/fakes.py`` - both
held to ``tests/contract/test_usage_repository_contract.py``."""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any, Protocol

from kilo_billing.accounts import AccountProfile
from kilo_billing.events import Item, StoredEvent
from kilo_billing.livekit_events import LiveKitEventRecord
from kilo_billing.usage_events import UsageEventRecord
from kilo_rate_usage.aggregates import by_aggregate
from kilo_rate_usage.model import (
    Aggregate,
    AggregateKey,
    ContributionKey,
    GiveUpClaim,
    RoomAnswers,
    RoomListing,
    SessionKey,
    StoredSession,
    SweptRoom,
)
from kilo_rate_usage.rooms import RoomState
from kilo_rate_usage.sessions import ParticipantFold

MAX_TRANSACT_ITEMS = 100  # DynamoDB's limit of items per TransactWriteItems


class ConflictError(Exception):
    """Someone else changed what this batch read (a concurrent batch, a redelivery that got there first): re-read and
    retry the batch."""


class RejectedWriteError(Exception):
    """DynamoDB refuses the write itself (validation, item too large): retrying the same write can never succeed."""


class UnreadableRoomError(RejectedWriteError):
    """A stored event of the room cannot be decoded by this reader (a newer schema written during a deploy or after a
    rollback, a broken write): the room cannot be rebuilt exactly, so nothing of it is written - its records are
    refused like a refused write (the poison queue), never rated from part of its events (D15)."""


class ExpiredEventsError(UnreadableRoomError):
    """Fewer of the room's events are stored than its stored state was rated from (their raw events passed their
    TTL: a very late replay): a rebuild from them would rate the room's sessions again from part of their events, so
    the room is refused like an unreadable one (D273)."""


@dataclass(frozen=True, slots=True)
class SessionChange:
    new: StoredSession
    old_version: str | None  # None: the session was never stored
    delta: dict[ContributionKey, int]  # new contributions - stored contributions


@dataclass(frozen=True, slots=True)
class StateChange:
    """A room's new state, conditioned on the version read (0: there was none): its header, and the live
    participants' items that changed (``puts``) or retired (``deletes``), written in the header's transaction; when
    they are more than one transaction holds (``chunked``), in transactions of their own under a *pending* mark on
    the header (set first, conditioned on the version read; each chunk checks it; the header's new version clears
    it: a crash in between leaves the mark, and whoever reads it rebuilds the room). With ``new_generation`` (a
    rebuild): every live participant's item under a new generation, written before the header, which then points at
    it; the old generation's items are deleted after the commit, with those of any generation a crash left that no
    header can name any more (D250)."""

    new: RoomState
    old_version: int
    puts: Mapping[str, ParticipantFold] = field(default_factory=dict)
    deletes: tuple[str, ...] = ()
    new_generation: bool = False
    old_generation: str = ""

    @property
    def items(self) -> int:
        """Items it adds to its transaction (the header, and its participant items unless in a new generation)."""
        return 1 if self.new_generation else 1 + len(self.puts) + len(self.deletes)

    def chunked(self, max_items: int = MAX_TRANSACT_ITEMS) -> bool:
        """Too many participant items for one transaction: written in chunks under a pending mark."""
        return not self.new_generation and self.items > max_items

    @property
    def outside(self) -> int:
        """Items written outside the transactions (a new generation's participant items, before them)."""
        return len(self.puts) if self.new_generation else 0


@dataclass(frozen=True, slots=True)
class UsageChange:
    """A usage event rated by this commit: marked rated (once: a second mark is a conflict) in the same transaction
    as its quantity's ADD to the aggregate counter ``key`` names."""

    record: UsageEventRecord
    key: ContributionKey


@dataclass(frozen=True, slots=True)
class Transaction:
    """Writes that land together or not at all: session versions, usage marks and the aggregate ADDs they cause."""

    sessions: tuple[SessionChange, ...]
    usage: tuple[UsageChange, ...]
    adds: dict[AggregateKey, dict[tuple[int, str], int]]  # per aggregate: (segment start, meter) -> quantity
    states: tuple[StateChange, ...] = ()
    # per account whose sessions it writes with participants' identities: the erasure mark the batch read (None: none);
    # the transaction lands only if the profile still carries that mark (``CommitUnit.erasure_marks``, D80)
    guards: tuple[tuple[str, datetime | None], ...] = ()

    @property
    def items(self) -> int:
        """Its size against DynamoDB's limit: the writes and the checks."""
        return self.writes + len(self.guards)

    @property
    def writes(self) -> int:
        """The items it writes (a check writes nothing)."""
        return len(self.sessions) + len(self.usage) + len(self.adds) + sum(state.items for state in self.states)


@dataclass
class CommitUnit:
    """Everything a batch writes. Split into transactions of at most ``MAX_TRANSACT_ITEMS`` items, each carrying the
    aggregate deltas of its own sessions and usage, so a crash between two transactions leaves the aggregates equal to
    the sum of what the stored sessions and marks say - and the retry writes exactly the rest. Room states come last:
    a room's state is written only after all of its sessions, so a stored state always describes stored sessions."""

    sessions: list[SessionChange] = field(default_factory=list)
    usage: list[UsageChange] = field(default_factory=list)
    late: set[AggregateKey] = field(default_factory=set)  # (account, period) already invoiced
    states: list[StateChange] = field(default_factory=list)
    # the erasure mark (``AccountProfile.erased_at``) the batch read, per account it writes sessions of with a
    # participant's identity (not a pseudonym): each transaction writing such a session is conditioned on the profile
    # still carrying it, so an erasure marked after the batch read the profile makes the commit a conflict (retried:
    # the retry reads the mark and writes pseudonyms) - never an identity written behind the erasure's scan (D80)
    erasure_marks: dict[str, datetime | None] = field(default_factory=dict)

    @property
    def empty(self) -> bool:
        return not (self.sessions or self.usage or self.states)

    def deltas(self) -> dict[ContributionKey, int]:
        total: dict[ContributionKey, int] = {}
        for change in self.sessions:
            for key, quantity in change.delta.items():
                total[key] = total.get(key, 0) + quantity
        for usage in self.usage:
            total[usage.key] = total.get(usage.key, 0) + usage.record.quantity
        return total

    def transactions(self, max_items: int = MAX_TRANSACT_ITEMS) -> list[Transaction]:
        done: list[Transaction] = []
        sessions: list[SessionChange] = []
        usage: list[UsageChange] = []
        adds: dict[AggregateKey, dict[tuple[int, str], int]] = {}
        states: list[StateChange] = []
        guarded: set[str] = set()

        def flush() -> None:
            nonlocal sessions, usage, adds, states, guarded
            kept = {key: {c: q for c, q in counters.items() if q} for key, counters in adds.items()}
            kept = {key: counters for key, counters in kept.items() if counters}
            guards = tuple((account, self.erasure_marks[account]) for account in sorted(guarded))
            if sessions or usage or states:
                done.append(Transaction(tuple(sessions), tuple(usage), kept, tuple(states), guards))
            sessions, usage, adds, states, guarded = [], [], {}, [], set()

        def add(grouped: Mapping[AggregateKey, Mapping[tuple[int, str], int]]) -> None:
            for key, counters in grouped.items():
                target = adds.setdefault(key, {})
                for counter, quantity in counters.items():
                    target[counter] = target.get(counter, 0) + quantity

        for change in self.sessions:
            grouped = by_aggregate(change.delta)
            guard = {change.new.session.account} & self.erasure_marks.keys()
            if len(sessions) + len(usage) + len(adds.keys() | grouped.keys()) + len(guarded | guard) + 1 > max_items:
                flush()
            sessions.append(change)
            add(grouped)
            guarded |= guard
        for mark in self.usage:
            account, period, segment, meter = mark.key
            if len(sessions) + len(usage) + len(adds.keys() | {(account, period)}) + len(guarded) + 1 > max_items:
                flush()
            usage.append(mark)
            add({(account, period): {(segment, meter): mark.record.quantity}})
        for state in self.states:  # a state's header and participant items share one transaction, unless chunked
            if state.chunked(max_items):
                continue  # written after the transactions (``chunked``)
            size = len(sessions) + len(usage) + len(adds) + len(guarded) + sum(s.items for s in states) + state.items
            if size > max_items:
                flush()
            states.append(state)
        flush()
        return done


class UsageRepository(Protocol):
    """Rating's storage: the events it rebuilds from, the sessions and aggregates it keeps, account profiles."""

    def room_events(self, room_sid: str) -> list[LiveKitEventRecord]:
        """Every stored event of the room (strongly consistent)."""
        ...

    def stored_sessions(self, room_sid: str) -> dict[str, StoredSession]:
        """The room's sessions as last stored, by participant sid (strongly consistent)."""
        ...

    def sessions_of(self, room_sid: str, participant_sids: Iterable[str]) -> dict[str, StoredSession]:
        """The stored sessions of these participants of the room (those that exist), strongly consistent."""
        ...

    def room_state(self, room_sid: str) -> RoomState | None:
        """The room's state as last stored, its header only (strongly consistent), None when there is none."""
        ...

    def room_participants(
        self, room_sid: str, generation: str, participant_sids: Iterable[str] | None
    ) -> dict[str, ParticipantFold]:
        """The stored registers of these live participants of the room's state (those that exist; None: all of them,
        paged), strongly consistent."""
        ...

    def room_states(self, room_sids: Iterable[str]) -> dict[str, RoomState]:
        """The stored states of these rooms (those that exist), headers only."""
        ...

    def profiles(self, accounts: Iterable[str]) -> dict[str, AccountProfile]:
        """The profiles of those of ``accounts`` that are registered (one read; an unregistered id is absent - rating
        sends its sessions to the unattributed bucket, D276)."""
        ...

    def aggregates(self, keys: Iterable[AggregateKey]) -> dict[AggregateKey, Aggregate]:
        """Every aggregate asked for (empty when never written), strongly consistent."""
        ...

    def unrated_usage(self, records: Sequence[UsageEventRecord]) -> list[UsageEventRecord]:
        """Those of ``records`` not yet marked rated, each once."""
        ...

    def commit(self, unit: CommitUnit, now_ms: int) -> int:
        """Write ``unit.transactions()`` in order, each all or nothing; returns the number of items written.
        ``ConflictError`` when a condition fails (a stale session or room-state version, a usage event already marked),
        ``RejectedWriteError`` when DynamoDB refuses a write for good. Earlier transactions stay written."""
        ...

    def add_thresholds(self, account: str, period: str, markers: Sequence[str]) -> None:
        """Record announced thresholds; ``ConflictError`` when one of them is already recorded."""
        ...

    def open_sessions(self, account: str | None = None) -> list[StoredSession]:
        """Sessions stored as open (of one account, or all)."""
        ...

    def mark_joinless_rooms(self, room_sids: Iterable[str], at_ms: int, expires_at: int) -> None:
        """Mark rooms whose state holds a participant with no start (its ``participant_joined`` lost): the sweeper
        asks RoomService about them (D375, amended). A mark there is replaced (at ``at_ms``, expiring at
        ``expires_at``, epoch seconds)."""
        ...


class PoisonSink(Protocol):
    def send(self, keys: Mapping[str, Any], reason: str) -> None:
        """Keep the events-table keys (attribute-value form) of an event that cannot be rated, with the reason: the
        event itself stays in the events table, where ``kilo-billing rating replay`` reads it back."""
        ...


class RoomDirectory(Protocol):
    def participants(self, room_names: Sequence[str]) -> RoomAnswers:
        """Who is in each room now, by participant sid; rooms it could not ask about are reported, never guessed."""
        ...


class SweeperStore(Protocol):
    """What the sweeper reads and writes: open sessions, the rooms' listings, synthetic close events."""

    def open_sessions(self, account: str | None = None) -> list[StoredSession]: ...

    def room_states(self, room_sids: Iterable[str]) -> dict[str, RoomState]:
        """The stored states of these rooms (their last event: evidence that LiveKit still had the room)."""
        ...

    def last_event_ms(self, room_sids: Iterable[str]) -> dict[str, int]:
        """The latest createdAt (epoch ms) of each room's events stored in the events table, rated or not (for those
        with any): what the room's state says when it is readable and up to date (D197). One item read per room
        (the newest of the events table's ``room_events_by_time`` index)."""
        ...

    def confirmations(self, keys: Iterable[SessionKey]) -> dict[SessionKey, int]:
        """When RoomService last listed each session's participant (epoch ms) by the hourly per-session confirmations
        written before the rooms' listings replaced them (read only, for the upgrade), for those recorded."""
        ...

    def room_listings(self, room_sids: Iterable[str]) -> dict[str, RoomListing]:
        """The last recorded RoomService answer listing participants of each room (by sid), for those recorded."""
        ...

    def record_listings(self, listings: Mapping[str, RoomListing], expires_at: int) -> None:
        """Record each room's answer (one item per room, expiring at ``expires_at``, epoch seconds), replacing the
        recorded one only when older: a late-running older sweep never replaces a newer answer."""
        ...

    def add_close(self, event: LiveKitEventRecord, expires_at: int) -> bool:
        """Store a synthetic event (a close, or a join from RoomService's answer) in the room's events once; False
        when it was already there."""
        ...

    def room_participants(
        self, room_sid: str, generation: str, participant_sids: Iterable[str] | None
    ) -> dict[str, ParticipantFold]:
        """The stored registers of the room state's live participants (``UsageRepository.room_participants``)."""
        ...

    def joinless_rooms(self) -> dict[str, int]:
        """The rooms rating marked as holding a participant with no start (``mark_joinless_rooms``) and not forgotten
        since: room sid -> when marked (epoch ms); strongly consistent."""
        ...

    def forget_joinless_room(self, room_sid: str, at_ms: int) -> None:
        """Remove the room's join-less mark if it is still the one made at ``at_ms`` (a batch that marked it again
        since: kept; none: nothing happens)."""
        ...

    def renew_joinless_room(self, room_sid: str, at_ms: int, now_ms: int, expires_at: int) -> None:
        """Replace the room's join-less mark by one made at ``now_ms``, expiring at ``expires_at``, if it is still the
        one made at ``at_ms`` (a batch that marked it again since: that mark stands; none: nothing is written)."""
        ...

    def stored_joins(self, participants: Iterable[tuple[str, str]]) -> set[tuple[str, str]]:
        """Of these (room sid, participant sid), those whose synthetic join (``listed_join_id``, an earlier sweep's)
        is stored in the room's events, rated or not; strongly consistent."""
        ...

    def claim_give_up(
        self, room_sid: str, participant_sid: str, at_ms: int, stale_before_ms: int, expires_at: int
    ) -> GiveUpClaim:
        """Claim the give-up of a join-less participant for the sweep at ``at_ms`` (expiring at ``expires_at``):
        ``CLAIMED`` when it is that sweep's to say - unclaimed, claimed at ``at_ms`` (a retry of the same run) or
        claimed before ``stale_before_ms`` and not said (its run died before saying it) -, ``SAID`` when another sweep
        said it, ``HELD`` when another sweep claimed it and may still say it (D412, D421)."""
        ...

    def say_give_up(self, room_sid: str, participant_sid: str, at_ms: int, expires_at: int) -> None:
        """Record that the sweep at ``at_ms`` said the give-up it claimed, the claim expiring at ``expires_at``
        (nothing written if another sweep took the claim over: that one says it too)."""
        ...

    def swept_rooms(self) -> dict[str, SweptRoom]:
        """The rooms marked by ``mark_swept_rooms`` (or ``mark_dropped_room``) and not forgotten since: room sid ->
        the mark; strongly consistent."""
        ...

    def mark_swept_rooms(self, room_sids: Iterable[str], at_ms: int, expires_at: int) -> None:
        """Mark rooms whose sessions a sweep closes (their ``room_finished`` may be lost: their running state is
        dropped once quiet, D219), each at ``at_ms`` (a mark there is replaced), expiring at ``expires_at``."""
        ...

    def mark_dropped_room(self, room_sid: str, mark: SweptRoom, expires_at: int) -> None:
        """Replace the room's mark by ``mark`` (its drop's header version) if it is still the one made at
        ``mark.closed_at_ms`` (a sweep that closed sessions of the room since marked it again: that mark stays),
        expiring at ``expires_at``."""
        ...

    def forget_swept_room(self, room_sid: str, at_ms: int) -> None:
        """Remove the room's mark if it is still the one made at ``at_ms`` (a sweep that closed sessions of the room
        since marked it again: kept; none: nothing happens)."""
        ...

    def drop_room_state(self, state: RoomState) -> bool:
        """Drop the room's running state read as ``state`` (a header, ``room_states``): a usable one is replaced by its
        version (+1), rebuild cut-off and generation alone - what a finished room keeps (D196) - on the condition
        that it is still the version read and carries no pending mark; then the participant items of that generation
        are deleted (no reader uses them again: the next event of the room rebuilds it under a new generation). An
        unusable one (finished, too large, dropped) only has that generation's items deleted. False, and nothing
        changed, when the header moved on meanwhile (an event rated since the read) or was read with a chunked
        write's pending mark (the items of its generation are that write's)."""
        ...


class StreamArchive(Protocol):
    """The events table's stream, read back by shard and sequence numbers (records expire after 24 h)."""

    def batch_records(
        self, stream_arn: str, shard_id: str, start_sequence: str, end_sequence: str
    ) -> list[dict[str, Any]] | None:
        """The records of that range up to its end sequence, shaped as Lambda delivers them; None when the stream
        no longer has them, or the read ended before reaching the end sequence (never part of a batch)."""
        ...


@dataclass(frozen=True, slots=True)
class UndecodableItem:
    """An events-table item no reader decodes: its keys (attribute-value form) and why."""

    keys: dict[str, Any]
    reason: str


class EventArchive(Protocol):
    """The events table itself: what it received in a time window (for batches whose stream records expired), and
    one item by its keys (for the poison queue's messages)."""

    def received_between(self, start_ms: int, end_ms: int) -> list[StoredEvent | UndecodableItem]:
        """The events received in the window, and the items in it (or of no readable receive time) that cannot be
        decoded."""
        ...

    def stored_item(self, keys: Mapping[str, Any]) -> Item | None:
        """The item of these keys as stored (strongly consistent), None when there is none."""
        ...


class FailureQueue(Protocol):
    """The queue the operator's replay reads: the stream's on-failure queue or the poison queue."""

    def receive(self, limit: int) -> list[tuple[str, str]]:
        """Up to ``limit`` messages as (receipt handle, body); they stay on the queue until deleted."""
        ...

    def delete(self, receipt: str) -> None: ...
