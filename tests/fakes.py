"""In-memory fakes of the ports, for logic tests. Each is held to the same contract suite as its real adapter."""

from __future__ import annotations

import dataclasses
import threading
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import replace
from datetime import datetime
from typing import TYPE_CHECKING, Any

from kilo_billing.accounts import (
    AccountExistsError,
    AccountProfile,
    AnswerExistsError,
    ProfileChangedError,
    StoredAnswer,
    UnknownAccountError,
)
from kilo_billing.entitlements import EntitlementSource, Reading, SpendRecorder, SpendState
from kilo_billing.events import KEY, SORT_KEY, Item, ItemTooLargeError, check_item_size
from kilo_billing.livekit_events import LiveKitEventRecord
from kilo_billing.room_state_items import doomed_generations
from kilo_billing.usage_events import UsageEventRecord
from kilo_rate_usage.model import (
    Aggregate,
    AggregateKey,
    GiveUpClaim,
    ListedParticipant,
    RoomAnswers,
    RoomListing,
    SessionKey,
    StoredSession,
    SweptRoom,
    listed_join_id,
)
from kilo_rate_usage.ports import (
    MAX_TRANSACT_ITEMS,
    CommitUnit,
    ConflictError,
    RejectedWriteError,
    RoomDirectory,
    SweeperStore,
    Transaction,
    UsageRepository,
)
from kilo_rate_usage.rooms import RoomState
from kilo_rate_usage.sessions import ParticipantFold
from kilo_webhook_ingest.model import UnstorableEventError
from kilo_webhook_ingest.ports import PutResult, StorageUnavailableError
from kilo_webhook_ingest.usage_model import UsageClient

DYNAMODB_ITEM_LIMIT = 409_600  # "400 KB": what DynamoDB itself refuses above


class InMemoryEventStore:
    """``EventStore`` in memory; held to tests/contract/test_event_store_contract.py with the DynamoDB adapter."""

    def __init__(self) -> None:
        self.items: dict[tuple[str, str], Item] = {}
        self.writes = 0
        self.failing = False
        self._lock = threading.Lock()

    def put_new(self, item: Item) -> PutResult:
        with self._lock:
            self.writes += 1
            if self.failing:
                raise StorageUnavailableError("injected failure")
            try:
                check_item_size(item, DYNAMODB_ITEM_LIMIT)
            except ItemTooLargeError as exc:
                raise UnstorableEventError("event_not_storable", "the event store refuses this event") from exc
            key = (str(item[KEY]["S"]), str(item[SORT_KEY]["S"]))
            if key in self.items:
                return PutResult(stored=False, existing=self.items[key])
            self.items[key] = item
            return PutResult(stored=True)


class StaticSecretSource:
    """``SecretSource`` with fixed secrets (the Secrets Manager adapter is tested on moto in the integration suites)."""

    def __init__(
        self,
        livekit: dict[str, str] | None = None,
        usage: dict[str, UsageClient] | None = None,
        stripe: list[str] | None = None,
    ) -> None:
        self._livekit = livekit or {}
        self._usage = usage or {}
        self._stripe = stripe or []
        self.refreshes = 0  # keys read afresh on request

    def livekit_keys(self, refresh: bool = False) -> dict[str, str]:
        self.refreshes += refresh
        return self._livekit

    def usage_client(self, client_id: str) -> UsageClient | None:
        return self._usage.get(client_id)

    def stripe_webhook_secrets(self) -> list[str]:
        return self._stripe


class InMemoryUsageRepository:
    """``kilo_rate_usage.ports.UsageRepository`` and ``SweeperStore`` in memory, held to
    tests/contract/test_usage_repository_contract.py: the same conditions as DynamoDB (session versions, usage marks on
    stored and unrated events only, thresholds once) and the same transactions - a commit applies
    ``CommitUnit.transactions()`` one at a time, each all or nothing, so ``crash_after_transactions`` crashes *between*
    writes, exactly where a Lambda timeout or a DynamoDB failure would leave a real commit."""

    def __init__(self, accounts: InMemoryAccountDirectory | None = None) -> None:
        self.events: dict[str, dict[str, LiveKitEventRecord]] = {}  # room sid -> event id -> event
        self.closes: dict[tuple[str, str], LiveKitEventRecord] = {}  # the sweeper's synthetic events by key
        self.usage_known: set[tuple[str, str]] = set()  # usage events ingest stored
        self.usage_rated: set[tuple[str, str]] = set()
        self.sessions: dict[SessionKey, StoredSession] = {}
        self.states: dict[str, RoomState] = {}  # room sid -> the room's rating state as last stored (its header)
        self.participants: dict[tuple[str, str], dict[str, ParticipantFold]] = {}  # (room, generation) -> items
        self.generations = 0  # new generations handed out (``g<n>``)
        self.pending: dict[str, str] = {}  # room sid -> the mark of a chunked write under way (or died)
        self.counters: dict[AggregateKey, dict[tuple[int, str], int]] = {}
        self.late: dict[AggregateKey, dict[str, int]] = {}
        self.invoiced: set[AggregateKey] = set()
        self.thresholds: dict[AggregateKey, set[str]] = {}
        self.confirmed: dict[SessionKey, int] = {}  # the sweeper's confirmations written before the listings
        self.listings: dict[str, RoomListing] = {}  # the sweeper's last RoomService answer per room sid
        self.listing_expiry: dict[str, int] = {}  # and when it expires (epoch seconds)
        self.swept: dict[str, tuple[SweptRoom, int]] = {}  # the sweeper's marks: room sid -> (mark, expires at)
        self.joinless: dict[str, tuple[int, int]] = {}  # rating's join-less marks: room sid -> (marked at, expires at)
        # the sweeper's claims of its give-ups: (room sid, participant sid) -> (claimed at, expires at)
        self.given_up: dict[tuple[str, str], tuple[int, int]] = {}
        self.said_given_up: set[tuple[str, str]] = set()  # the claims marked said (D421)
        self.accounts = accounts or InMemoryAccountDirectory()
        self.writes = 0  # items written, one per session put, usage mark, aggregate update or threshold record
        self.crash_after_transactions: int | None = None  # a commit dies after this many of its transactions
        self.max_transaction_items = MAX_TRANSACT_ITEMS  # smaller in tests that want many transactions per commit
        self.refused_rooms: set[str] = set()  # DynamoDB refuses these rooms' session items (validation)
        self.state_codec = True  # room states stored through the adapter's item codec (size limit included)

    # the events table side (what ingest writes)
    def store_event(self, event: LiveKitEventRecord | UsageEventRecord) -> None:
        if isinstance(event, LiveKitEventRecord):
            self.events.setdefault(event.room_sid, {}).setdefault(event.event_id, event)
        else:
            self.usage_known.add(event.key)

    def room_events(self, room_sid: str) -> list[LiveKitEventRecord]:
        return list(self.events.get(room_sid, {}).values())

    def stored_sessions(self, room_sid: str) -> dict[str, StoredSession]:
        return {sid: stored for (room, sid), stored in self.sessions.items() if room == room_sid}

    def sessions_of(self, room_sid: str, participant_sids: Iterable[str]) -> dict[str, StoredSession]:
        return {
            sid: self.sessions[(room_sid, sid)] for sid in set(participant_sids) if (room_sid, sid) in self.sessions
        }

    def room_state(self, room_sid: str) -> RoomState | None:
        state = self.states.get(room_sid)
        if state is not None and room_sid in self.pending:  # a chunked write that died: rebuild
            unusable = RoomState.unusable(room_sid, state.version)
            return replace(
                unusable,
                generation=state.generation,
                delivered_ms=state.delivered_ms,
                events_folded=state.events_folded,
            )
        return state

    def room_participants(
        self, room_sid: str, generation: str, participant_sids: Iterable[str] | None
    ) -> dict[str, ParticipantFold]:
        stored = self.participants.get((room_sid, generation), {})
        if participant_sids is None:
            return dict(stored)
        return {sid: stored[sid] for sid in set(participant_sids) if sid in stored}

    def room_states(self, room_sids: Iterable[str]) -> dict[str, RoomState]:
        found = {sid: self.states[sid] for sid in set(room_sids) if sid in self.states}
        for sid, state in found.items():  # as the adapter: a header under a pending mark reads as unusable
            if sid in self.pending:
                unusable = RoomState.unusable(sid, state.version)
                found[sid] = replace(
                    unusable, delivered_ms=state.delivered_ms, generation=state.generation, pending=True
                )
        return found

    def profiles(self, accounts: Iterable[str]) -> dict[str, AccountProfile]:
        return self.accounts.registered(set(accounts))

    def aggregates(self, keys: Iterable[AggregateKey]) -> dict[AggregateKey, Aggregate]:
        return {
            key: Aggregate(
                key[0],
                key[1],
                dict(self.counters.get(key, {})),
                dict(self.late.get(key, {})),
                set(self.thresholds.get(key, set())),
                key in self.invoiced,
            )
            for key in set(keys)
        }

    def unrated_usage(self, records: Sequence[UsageEventRecord]) -> list[UsageEventRecord]:
        unique = {record.key: record for record in records}
        return [record for key, record in unique.items() if key not in self.usage_rated]

    def commit(self, unit: CommitUnit, now_ms: int) -> int:
        written = 0
        generations: dict[int, str] = {}  # as the adapter: a new generation's items first, outside the transactions
        for change in unit.states:
            if change.new_generation:
                self.generations += 1
                generations[id(change)] = generation = f"{change.old_version + 1}.g{self.generations}"
                self.participants[(change.new.room_sid, generation)] = {
                    sid: self._stored_participant(change.new.room_sid, generation, p) for sid, p in change.puts.items()
                }
                written += len(change.puts)
        transactions = unit.transactions(self.max_transaction_items)
        landed: set[int] = set()
        try:
            for number, transaction in enumerate(transactions):
                self._crash(number, written)
                self._apply(transaction, unit.late, generations)
                landed.update(id(change) for change in transaction.states)
                written += transaction.writes
        except (ConflictError, RejectedWriteError):  # as the adapter: a new generation no header names is deleted
            for change in unit.states:
                if id(change) in generations and id(change) not in landed:
                    self.participants.pop((change.new.room_sid, generations[id(change)]), None)
            raise
        number = len(transactions)
        for change in unit.states:  # as the adapter: under a pending mark on the header, in chunks
            if not change.chunked(self.max_transaction_items):
                continue
            room = change.new.room_sid
            stored_state = self.states.get(room)
            if stored_state is None or stored_state.version != change.old_version or room in self.pending:
                raise ConflictError("room state version (or a pending chunked write)")
            self.pending[room] = mark = f"m{number}"
            written += 1
            writes: list[tuple[str, ParticipantFold | None]] = [*change.puts.items()]
            writes += [(sid, None) for sid in change.deletes]
            stored = self.participants.setdefault((room, change.old_generation), {})
            for start in range(0, len(writes), self.max_transaction_items - 1):
                self._crash(number, written)
                number += 1
                for sid, participant in writes[start : start + self.max_transaction_items - 1]:
                    if participant is None:
                        stored.pop(sid, None)
                    else:
                        stored[sid] = self._stored_participant(room, change.old_generation, participant)
                written += len(writes[start : start + self.max_transaction_items - 1])
            self._crash(number, written)
            number += 1
            assert self.pending.pop(room) == mark
            self.states[room] = self._stored_state(change.new, change.old_version + 1, change.old_generation)
            written += 1
        for change in unit.states:  # the old generation is no longer read, nor one a crash left (as the adapter)
            if change.new_generation or not change.new.usable:  # a rebuild, or a finished room (D196)
                version, named = change.old_version + 1, generations.get(id(change), change.old_generation)
                old = change.old_generation if change.new_generation else ""
                written += self._drop_generations(change.new.room_sid, doomed_generations(version, named, old))
        self.writes += written
        return written

    def _crash(self, number: int, written: int) -> None:
        if self.crash_after_transactions is not None and number >= self.crash_after_transactions:
            self.writes += written
            raise RuntimeError(f"simulated crash after {number} transaction(s) of the commit")

    def _apply(self, transaction: Transaction, late: set[AggregateKey], generations: Mapping[int, str]) -> None:
        for account, erased_at in transaction.guards:  # as the adapter's condition check on the profile (D80)
            profile = (
                self.accounts.profiles.get(account) if isinstance(self.accounts, InMemoryAccountDirectory) else None
            )
            if (profile.erased_at if profile is not None else None) != erased_at:
                raise ConflictError("the account's erasure mark changed since the batch read it")
        for change in transaction.sessions:
            if change.new.session.room_sid in self.refused_rooms:
                raise RejectedWriteError("TransactionCanceledException: ValidationError")
            current = self.sessions.get(change.new.session.key)
            if (current.version if current is not None else None) != change.old_version:
                raise ConflictError("session version")
        for mark in transaction.usage:
            if mark.record.key not in self.usage_known or mark.record.key in self.usage_rated:
                raise ConflictError("usage event missing or already rated")
        for state in transaction.states:
            stored_state = self.states.get(state.new.room_sid)
            if (stored_state.version if stored_state is not None else 0) != state.old_version:
                raise ConflictError("room state version")
        for change in transaction.sessions:
            self.sessions[change.new.session.key] = change.new
        for state in transaction.states:  # stored as DynamoDB would: the next version
            room = state.new.room_sid
            generation = generations.get(id(state), state.old_generation)
            self.states[room] = self._stored_state(state.new, state.old_version + 1, generation)
            self.pending.pop(room, None)  # a rebuild's header replaces a pending mark
            if not state.new_generation:
                stored = self.participants.setdefault((room, generation), {})
                for sid, participant in state.puts.items():
                    stored[sid] = self._stored_participant(room, generation, participant)
                for sid in state.deletes:
                    stored.pop(sid, None)
        for mark in transaction.usage:
            self.usage_rated.add(mark.record.key)
        for key, counters in transaction.adds.items():
            target = self.counters.setdefault(key, {})
            for counter, quantity in counters.items():
                target[counter] = target.get(counter, 0) + quantity
                if key in late:
                    late_counters = self.late.setdefault(key, {})
                    late_counters[counter[1]] = late_counters.get(counter[1], 0) + quantity

    def _stored_state(self, state: RoomState, version: int, generation: str) -> RoomState:
        """What the adapter's header item would read back as: through its codec (``state_codec``), or the object
        itself without its participants (a benchmark of the logic alone), except that a state over the item's limit
        is kept as its version only."""
        from kilo_rate_usage import items  # noqa: PLC0415

        if not self.state_codec:
            header = state.fold.copy()
            header.participants, header.video = {}, {entry for entry in header.video if not entry[0]}
            return replace(state, fold=header, full=None, complete=False, version=version, generation=generation)
        try:
            item = items.state_to_item(state, version, generation)
        except items.StateTooLargeError:
            item = items.version_only_item(state, version, generation)
        return items.state_from_item(item)

    def _stored_participant(self, room_sid: str, generation: str, participant: ParticipantFold) -> ParticipantFold:
        if not self.state_codec:
            return participant
        from kilo_rate_usage import items  # noqa: PLC0415

        return items.participant_from_item(items.participant_to_item(room_sid, generation, participant))

    def add_thresholds(self, account: str, period: str, markers: Sequence[str]) -> None:
        existing = self.thresholds.setdefault((account, period), set())
        if existing & set(markers):
            raise ConflictError("threshold already recorded")
        existing.update(markers)
        self.writes += 1

    def open_sessions(self, account: str | None = None) -> list[StoredSession]:
        return [
            stored
            for stored in self.sessions.values()
            if stored.session.is_open and (account is None or stored.session.account == account)
        ]

    # the sweeper's
    def last_event_ms(self, room_sids: Iterable[str]) -> dict[str, int]:
        return {
            sid: max(event.created_at for event in self.events[sid].values()) * 1000
            for sid in set(room_sids)
            if self.events.get(sid)
        }

    def confirmations(self, keys: Iterable[SessionKey]) -> dict[SessionKey, int]:
        return {key: self.confirmed[key] for key in set(keys) if key in self.confirmed}

    def room_listings(self, room_sids: Iterable[str]) -> dict[str, RoomListing]:
        return {sid: self.listings[sid] for sid in set(room_sids) if sid in self.listings}

    def record_listings(self, listings: Mapping[str, RoomListing], expires_at: int) -> None:
        for sid, listing in listings.items():
            recorded = self.listings.get(sid)
            if listing.participants and (recorded is None or recorded.answered_at_ms < listing.answered_at_ms):
                self.listings[sid] = listing
                self.listing_expiry[sid] = expires_at

    def swept_rooms(self) -> dict[str, SweptRoom]:
        return {sid: mark for sid, (mark, _) in self.swept.items()}

    def mark_swept_rooms(self, room_sids: Iterable[str], at_ms: int, expires_at: int) -> None:
        self.swept.update(dict.fromkeys(room_sids, (SweptRoom(at_ms), expires_at)))

    def mark_dropped_room(self, room_sid: str, mark: SweptRoom, expires_at: int) -> None:
        if room_sid in self.swept and self.swept[room_sid][0].closed_at_ms == mark.closed_at_ms:
            self.swept[room_sid] = (mark, expires_at)

    def forget_swept_room(self, room_sid: str, at_ms: int) -> None:
        if room_sid in self.swept and self.swept[room_sid][0].closed_at_ms == at_ms:
            del self.swept[room_sid]

    def mark_joinless_rooms(self, room_sids: Iterable[str], at_ms: int, expires_at: int) -> None:
        self.joinless.update(dict.fromkeys(room_sids, (at_ms, expires_at)))

    def joinless_rooms(self) -> dict[str, int]:
        return {sid: at_ms for sid, (at_ms, _) in self.joinless.items()}

    def forget_joinless_room(self, room_sid: str, at_ms: int) -> None:
        if room_sid in self.joinless and self.joinless[room_sid][0] == at_ms:
            del self.joinless[room_sid]

    def renew_joinless_room(self, room_sid: str, at_ms: int, now_ms: int, expires_at: int) -> None:
        if room_sid in self.joinless and self.joinless[room_sid][0] == at_ms:
            self.joinless[room_sid] = (now_ms, expires_at)

    def stored_joins(self, participants: Iterable[tuple[str, str]]) -> set[tuple[str, str]]:
        return {(room, sid) for room, sid in participants if listed_join_id(sid) in self.events.get(room, {})}

    def claim_give_up(
        self, room_sid: str, participant_sid: str, at_ms: int, stale_before_ms: int, expires_at: int
    ) -> GiveUpClaim:
        key = (room_sid, participant_sid)
        claimed = self.given_up.get(key)
        if claimed is not None and key in self.said_given_up:
            return GiveUpClaim.SAID
        if claimed is not None and stale_before_ms <= claimed[0] != at_ms:
            return GiveUpClaim.HELD
        self.given_up[key] = (at_ms, expires_at)
        return GiveUpClaim.CLAIMED

    def say_give_up(self, room_sid: str, participant_sid: str, at_ms: int, expires_at: int) -> None:
        if self.given_up.get((room_sid, participant_sid), (None, 0))[0] == at_ms:
            self.said_given_up.add((room_sid, participant_sid))

    def drop_room_state(self, state: RoomState) -> bool:
        room = state.room_sid
        if state.pending:
            return False
        if state.usable:
            stored = self.states.get(room)
            if stored is None or stored.version != state.version or room in self.pending:
                return False
            unusable = RoomState.unusable(room, state.version + 1)
            self.states[room] = replace(unusable, delivered_ms=state.delivered_ms, generation=state.generation)
        version, named = (state.version + 1 if state.usable else state.version), state.generation
        self._drop_generations(room, doomed_generations(version, named, named))
        return True

    def _drop_generations(self, room: str, doomed: Callable[[str], bool]) -> int:
        """Delete the room's participant items of every ``doomed`` generation; how many there were."""
        keys = [key for key in self.participants if key[0] == room and doomed(key[1])]
        return sum(len(self.participants.pop(key)) for key in keys)

    def add_close(self, event: LiveKitEventRecord, expires_at: int) -> bool:
        if event.event_id in self.events.get(event.room_sid, {}):
            return False
        self.store_event(event)
        self.closes[event.key] = event
        return True

    def totals(self, account: str, period: str) -> dict[str, int]:
        result: dict[str, int] = {}
        for (_, meter), quantity in self.counters.get((account, period), {}).items():
            result[meter] = result.get(meter, 0) + quantity
        return {meter: quantity for meter, quantity in result.items() if quantity}


class RecordingPublisher:
    """``kilo_billing.publisher.EventPublisher`` that keeps what was published."""

    def __init__(self) -> None:
        self.published: list[tuple[str, dict[str, Any]]] = []

    def publish(self, detail_type: str, detail: Mapping[str, Any]) -> None:
        self.published.append((detail_type, dict(detail)))


class InMemoryPoisonSink:
    def __init__(self) -> None:
        self.sent: list[tuple[Mapping[str, Any], str]] = []

    def send(self, keys: Mapping[str, Any], reason: str) -> None:
        self.sent.append((keys, reason))


class StaticRoomDirectory:
    """``kilo_rate_usage.ports.RoomDirectory`` answering from a table (None = room gone); rooms listed in
    ``unreachable`` get no answer, as when RoomService fails."""

    def __init__(self, rooms: Mapping[str, set[str] | None] | None = None, unreachable: Iterable[str] = ()) -> None:
        self.rooms: dict[str, set[str] | None] = dict(rooms or {})
        self.unreachable = set(unreachable)
        self.asked: list[list[str]] = []
        self.infos: dict[str, ListedParticipant] = {}  # participant sid -> what ListParticipants says of it

    def participants(self, room_names: Sequence[str]) -> RoomAnswers:
        self.asked.append(list(room_names))
        answers = RoomAnswers()
        for name in room_names:
            if name in self.unreachable:
                answers.unanswered[name] = "unreachable"
            else:
                present = answers.present[name] = self.rooms.get(name)
                if present is not None:
                    answers.listed[name] = {
                        sid: self.infos.get(sid, ListedParticipant(sid, "", "STANDARD", 0)) for sid in present
                    }
        return answers


def registered(*account_ids: str) -> InMemoryAccountDirectory:
    """A directory with these accounts registered on the free default (D18), as the app registers an account before it
    creates the account's rooms: rating sends the minutes of an id nobody registered to the unattributed bucket
    (D276)."""
    return InMemoryAccountDirectory(*(AccountProfile.default(account_id) for account_id in account_ids))


class InMemoryAccountDirectory:
    """``kilo_billing.accounts.AccountDirectory`` in memory; held to tests/contract/test_account_directory.py."""

    def __init__(self, *profiles: AccountProfile) -> None:
        self.profiles: dict[str, AccountProfile] = {profile.account_id: profile for profile in profiles}
        self.reads = 0
        self.answers: dict[tuple[str, str], StoredAnswer] = {}

    def registered(self, account_ids: Iterable[str]) -> dict[str, AccountProfile]:
        self.reads += 1
        return {a: self.profiles[a] for a in set(account_ids) if a in self.profiles}

    def register(self, profile: AccountProfile) -> None:
        if profile.account_id in self.profiles:
            raise AccountExistsError(profile.account_id)
        self.profiles[profile.account_id] = replace(profile, version=0)

    def save(self, profile: AccountProfile) -> AccountProfile:
        """Replaces the profile only over the version it was read at, as the DynamoDB adapter does."""
        stored = self.profiles.get(profile.account_id)
        if stored is None:
            raise UnknownAccountError(profile.account_id)
        if stored.version != profile.version:
            raise ProfileChangedError(f"{profile.account_id}: version {stored.version}, read at {profile.version}")
        saved = replace(profile, version=profile.version + 1)
        self.profiles[profile.account_id] = saved
        return saved

    def save_status(self, profile: AccountProfile) -> AccountProfile:
        """The status alone over the stored profile, through ``save`` (its refusals; a subclass's ``save`` races it)."""
        stored = self.profiles.get(profile.account_id)
        if stored is None:
            raise UnknownAccountError(profile.account_id)
        return self.save(replace(stored, status=profile.status, version=profile.version))

    def answer(self, account_id: str, key: str, now: datetime) -> StoredAnswer | None:
        found = self.answers.get((account_id, key))
        return found if found is not None and found.expires_at > now else None

    def save_answered(self, profile: AccountProfile, answer: StoredAnswer) -> AccountProfile:
        """Both or neither, as the DynamoDB adapter's transaction: the key is checked before the profile is saved."""
        self._check_new(answer)
        saved = self.save(profile)
        self.answers[(answer.account_id, answer.key)] = answer
        return saved

    def keep_answer(self, answer: StoredAnswer) -> None:
        self._check_new(answer)
        self.answers[(answer.account_id, answer.key)] = answer

    def _check_new(self, answer: StoredAnswer) -> None:
        if self.answer(answer.account_id, answer.key, answer.answered_at) is not None:
            raise AnswerExistsError(f"{answer.account_id}: key {answer.key!r} answered already")


class InMemoryEntitlements:
    """``EntitlementSource`` + ``SpendRecorder`` in memory over an account directory; held to
    tests/contract/test_entitlement_store.py."""

    def __init__(self, directory: InMemoryAccountDirectory | None = None) -> None:
        self.directory = directory or InMemoryAccountDirectory()
        self.states: dict[str, SpendState] = {}
        self.reads = 0

    def read(self, account_id: str) -> tuple[AccountProfile | None, SpendState | None]:
        self.reads += 1
        return self.directory.profiles.get(account_id), self.states.get(account_id)

    def record(self, account_id: str, meter: str, reading: Reading) -> bool:
        state = self.states.get(account_id, SpendState(account_id))
        bill = meter in ("budget", "hard_limit")
        current = state.spend if bill else state.allowances.get(meter)
        if current is not None and (current.period, current.used) >= (reading.period, reading.used):
            return False
        if bill:
            self.states[account_id] = dataclasses.replace(state, spend=reading)
        else:
            self.states[account_id] = dataclasses.replace(state, allowances={**state.allowances, meter: reading})
        return True


if TYPE_CHECKING:  # mypy (pyproject: files) holds each fake to its port's Protocol
    from kilo_billing.publisher import EventPublisher
    from kilo_rate_usage.ports import PoisonSink

    _repository: UsageRepository = InMemoryUsageRepository()
    _sweeper_store: SweeperStore = InMemoryUsageRepository()
    _publisher: EventPublisher = RecordingPublisher()
    _poison: PoisonSink = InMemoryPoisonSink()
    _directory: RoomDirectory = StaticRoomDirectory()
    _entitlements: EntitlementSource = InMemoryEntitlements()
    _spend: SpendRecorder = InMemoryEntitlements()


class CountingRepository:
    """A repository counting the items every read returns (GetItem, BatchGetItem, Query alike: what DynamoDB charges
    for) and the batches that rebuilt a room from its events (the reads-per-event test and ``bench/rooms``)."""

    def __init__(self, repo: Any) -> None:
        self.repo = repo
        self.items_read = 0
        self.rebuilds = 0

    def __getattr__(self, name: str) -> Any:
        return getattr(self.repo, name)

    def _count(self, found: Any) -> Any:
        self.items_read += len(found) if isinstance(found, list | dict) else (0 if found is None else 1)
        return found

    def room_state(self, room_sid: str) -> Any:
        return self._count(self.repo.room_state(room_sid))

    def room_participants(self, room_sid: str, generation: str, sids: Iterable[str] | None) -> Any:
        return self._count(self.repo.room_participants(room_sid, generation, sids))

    def sessions_of(self, room_sid: str, sids: Iterable[str]) -> Any:
        return self._count(self.repo.sessions_of(room_sid, sids))

    def stored_sessions(self, room_sid: str) -> Any:
        return self._count(self.repo.stored_sessions(room_sid))

    def room_events(self, room_sid: str) -> Any:
        self.rebuilds += 1
        return self._count(self.repo.room_events(room_sid))

    def aggregates(self, keys: Any) -> Any:
        return self._count(self.repo.aggregates(keys))

    def profiles(self, accounts: Any) -> Any:
        return self._count(self.repo.profiles(accounts))

    def open_sessions(self, account: str | None = None) -> Any:
        return self._count(self.repo.open_sessions(account))

    def unrated_usage(self, records: Any) -> Any:
        return self._count(self.repo.unrated_usage(records))
