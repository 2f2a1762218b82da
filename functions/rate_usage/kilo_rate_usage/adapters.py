"""Implementations of rating's ports: DynamoDB (usage and events tables, the events stream), SQS (poison records, the
on-failure queue) and LiveKit's RoomService. Every AWS call goes through ``kilo_billing.aws.call``, the one mapping of
botocore errors; here those become rating's domain errors (``ports.ConflictError``, ``ports.RejectedWriteError``)."""

from __future__ import annotations

import asyncio
import json
from collections.abc import Callable, Iterable, Iterator, Mapping, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from datetime import datetime
from typing import Any

from aws_lambda_powertools import Logger

from kilo_billing import room_state_items as room_state
from kilo_billing.account_items import ERASED_AT, account_key, erasure_mark
from kilo_billing.account_store import DynamoAccountDirectory
from kilo_billing.accounts import AccountProfile
from kilo_billing.aws import (
    ConditionFailedError,
    InvalidRequestError,
    ResourceGoneError,
    StorageUnavailableError,
    batch_get,
    batch_write,
    call,
    delete_if,
    paged_items,
    put_if,
)
from kilo_billing.events import (
    CREATED_AT,
    KEY,
    ROOM_EVENTS_BY_TIME,
    SORT_KEY,
    ContractError,
    StoredEvent,
    decode_item,
    livekit_key,
    room_partition,
)
from kilo_billing.items import Item, lambda_shape, to_item
from kilo_billing.livekit_events import LiveKitEventRecord
from kilo_billing.livekit_rooms import RoomGoneError, RoomServiceFailedError, call_room_service, room_credentials
from kilo_billing.observability import Metric, count
from kilo_billing.usage_events import UsageEventRecord
from kilo_rate_usage import items
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
    SessionChange,
    StateChange,
    UndecodableItem,
    UnreadableRoomError,
    UsageChange,
)
from kilo_rate_usage.rooms import RoomState
from kilo_rate_usage.sessions import ParticipantFold

RATING_SERVICE = "rate-usage"  # the rating handler's service (``handler.SERVICE``): logs and metrics of its reads


def _undecodable(room_sid: str, item: Mapping[str, Any], exc: Exception) -> UnreadableRoomError:
    """A stored item of the room's partition this reader cannot decode (a newer schema during a deploy or after a
    rollback, a broken write): logged and counted, and the room refused (``UnreadableRoomError``): a rebuild from part
    of its events would un-bill what its other events rated - the room's records go to the poison queue instead,
    the batch's other rooms are rated, and no batch of the room blocks the shard."""
    keys = {name: item.get(name) for name in (KEY, SORT_KEY)}
    reason = f"{type(exc).__name__}: {exc}"
    # a child of the handler's logger (its JSON lines in Lambda); outside Lambda (the replay CLI) it goes to stderr
    Logger(service=RATING_SERVICE, child=True).error(
        "room not rated: a stored event of it cannot be decoded",
        extra={"room_sid": room_sid, "keys": keys, "reason": reason},
    )
    count(RATING_SERVICE, Metric.STORED_EVENTS_UNDECODABLE)
    return UnreadableRoomError(f"stored event {keys} of room {room_sid} cannot be decoded ({reason})")


@contextmanager
def _refusals() -> Iterator[None]:
    """A request DynamoDB refuses itself (``InvalidRequestError``: validation, item too large) is rejected for good."""
    try:
        yield
    except InvalidRequestError as exc:
        raise RejectedWriteError(str(exc)) from exc


def _write(operation: Any, **kwargs: Any) -> Any:
    """A write: failed conditions and cancelled transactions are conflicts; refused requests are rejected for good."""
    with _refusals():
        try:
            return call(operation, **kwargs)
        except ConditionFailedError as exc:  # includes TransactionConflictError
            raise ConflictError(str(exc)) from exc


def _written(conditional: Callable[..., bool], *args: Any, **kwargs: Any) -> bool:
    """A conditional write whose failed condition is an answer, not an error - the layer's ``put_if`` or
    ``delete_if``: True when written, False when the condition failed (the stored item stands) - with a refused
    request rejected for good, as ``_write``'s."""
    with _refusals():
        return conditional(*args, **kwargs)


class DynamoUsageRepository:
    """``ports.UsageRepository`` and ``ports.SweeperStore`` on the usage and events tables."""

    def __init__(self, client: Any, usage_table: str, events_table: str) -> None:
        self._client = client
        self._usage = usage_table
        self._events = events_table
        self._accounts = DynamoAccountDirectory(client, usage_table)

    # --- reads ----------------------------------------------------------------------------------------------------

    def _batch_get(self, table: str, keys: Sequence[Item], projection: str = "") -> list[dict[str, Any]]:
        read: dict[str, Any] = {"ConsistentRead": True}
        if projection:
            read |= {"ProjectionExpression": projection, "ExpressionAttributeNames": {"#k": KEY, "#s": SORT_KEY}}
        return list(batch_get(self._client, table, keys, **read))

    def room_events(self, room_sid: str) -> list[LiveKitEventRecord]:
        found = paged_items(
            self._client.query,
            TableName=self._events,
            KeyConditionExpression="#k = :pk",
            ExpressionAttributeNames={"#k": KEY},
            ExpressionAttributeValues=to_item({":pk": room_partition(room_sid)}),
            ConsistentRead=True,
        )
        events: list[LiveKitEventRecord] = []
        for item in found:
            try:
                event = decode_item(item)
            except (ContractError, KeyError, TypeError, ValueError) as exc:
                raise _undecodable(room_sid, item, exc) from exc
            if isinstance(event, LiveKitEventRecord):
                events.append(event)
        return events

    def stored_sessions(self, room_sid: str) -> dict[str, StoredSession]:
        found = paged_items(
            self._client.query,
            TableName=self._usage,
            KeyConditionExpression="#k = :pk AND begins_with(#s, :prefix)",
            ExpressionAttributeNames={"#k": KEY, "#s": SORT_KEY},
            ExpressionAttributeValues=to_item({":pk": room_state.room_key(room_sid), ":prefix": items.SESSION_PREFIX}),
            ConsistentRead=True,
        )
        sessions = [items.session_from_item(item) for item in found]
        return {stored.session.participant_sid: stored for stored in sessions}

    def sessions_of(self, room_sid: str, participant_sids: Iterable[str]) -> dict[str, StoredSession]:
        keys = [items.session_key((room_sid, sid)) for sid in sorted(set(participant_sids))]
        sessions = [items.session_from_item(item) for item in self._batch_get(self._usage, keys)]
        return {stored.session.participant_sid: stored for stored in sessions}

    def room_state(self, room_sid: str) -> RoomState | None:
        found = call(self._client.get_item, TableName=self._usage, Key=items.state_key(room_sid), ConsistentRead=True)
        return items.state_from_item(found["Item"]) if "Item" in found else None

    def room_participants(
        self, room_sid: str, generation: str, participant_sids: Iterable[str] | None
    ) -> dict[str, ParticipantFold]:
        if participant_sids is None:
            found = self._generation_items(room_sid, generation)
        else:
            keys = [items.participant_key(room_sid, generation, sid) for sid in sorted(set(participant_sids))]
            found = self._batch_get(self._usage, keys)
        participants = [items.participant_from_item(item) for item in found]
        return {participant.sid: participant for participant in participants}

    def _generation_items(self, room_sid: str, generation: str | None, keys_only: bool = False) -> list[dict[str, Any]]:
        """The room's participant items of ``generation`` (None: of every generation)."""
        extra: dict[str, Any] = {"ProjectionExpression": "#k, #s"} if keys_only else {}
        prefix = room_state.PARTICIPANT_PREFIX if generation is None else room_state.participant_sort_key(generation)
        found = paged_items(
            self._client.query,
            TableName=self._usage,
            KeyConditionExpression="#k = :pk AND begins_with(#s, :prefix)",
            ExpressionAttributeNames={"#k": KEY, "#s": SORT_KEY},
            ExpressionAttributeValues=to_item({":pk": room_state.room_key(room_sid), ":prefix": prefix}),
            ConsistentRead=True,
            **extra,
        )
        return list(found)

    def room_states(self, room_sids: Iterable[str]) -> dict[str, RoomState]:
        keys = [items.state_key(sid) for sid in sorted(set(room_sids))]
        states = [items.state_from_item(item) for item in self._batch_get(self._usage, keys)]
        return {state.room_sid: state for state in states}

    def profiles(self, accounts: Iterable[str]) -> dict[str, AccountProfile]:
        return self._accounts.registered(sorted(set(accounts)))

    def aggregates(self, keys: Iterable[AggregateKey]) -> dict[AggregateKey, Aggregate]:
        wanted = sorted(set(keys))
        found = {
            items.aggregate_key_of(item): item
            for item in self._batch_get(self._usage, [items.aggregate_key(key) for key in wanted])
        }
        return {key: items.aggregate_from_item(key, found.get(key)) for key in wanted}

    def unrated_usage(self, records: Sequence[UsageEventRecord]) -> list[UsageEventRecord]:
        unique = {record.key: record for record in records}
        if not unique:
            return []
        keys = [items.key_item(*key) for key in unique]
        rated = {
            items.key_pair(item)
            for item in self._batch_get(self._events, keys, f"#k, #s, {items.RATED_AT}")
            if items.RATED_AT in item
        }
        return [record for key, record in unique.items() if key not in rated]

    def open_sessions(self, account: str | None = None) -> list[StoredSession]:
        if account is None:
            found = paged_items(self._client.scan, TableName=self._usage, IndexName=items.OPEN_INDEX)
        else:
            found = paged_items(
                self._client.query,
                TableName=self._usage,
                IndexName=items.OPEN_INDEX,
                KeyConditionExpression="#a = :a",
                ExpressionAttributeNames={"#a": items.OPEN_ACCOUNT},
                ExpressionAttributeValues=to_item({":a": account}),
            )
        return [items.session_from_item(item) for item in found]

    # --- writes ---------------------------------------------------------------------------------------------------

    def mark_joinless_rooms(self, room_sids: Iterable[str], at_ms: int, expires_at: int) -> None:
        for room_sid in sorted(set(room_sids)):
            item = items.joinless_room_item(room_sid, at_ms, expires_at)
            call(self._client.put_item, TableName=self._usage, Item=item)

    def commit(self, unit: CommitUnit, now_ms: int) -> int:
        generations: dict[int, str] = {}  # id(state change) -> the new generation its participant items went to
        written = 0
        for change in unit.states:
            if change.new_generation:
                generations[id(change)] = generation = items.new_generation(change.old_version + 1)
                puts = [items.participant_to_item(change.new.room_sid, generation, p) for p in change.puts.values()]
                self._batch_write([{"PutRequest": {"Item": item}} for item in puts])
                written += len(puts)
        landed: set[int] = set()  # id(state change) of the states whose transaction landed
        try:
            for transaction in unit.transactions():
                writes = [self._session_put(change) for change in transaction.sessions]
                writes += [self._usage_mark(mark, now_ms) for mark in transaction.usage]
                writes += [
                    {"Update": {"TableName": self._usage, **items.aggregate_add(key, counters, key in unit.late)}}
                    for key, counters in transaction.adds.items()
                ]
                for change in transaction.states:
                    writes += self._state_writes(change, generations.get(id(change), change.old_generation))
                checks = [self._erasure_guard(account, mark) for account, mark in transaction.guards]
                _write(self._client.transact_write_items, TransactItems=writes + checks)
                landed.update(id(change) for change in transaction.states)
                written += len(writes)
        except (ConflictError, RejectedWriteError) as refused:
            try:
                self._unused_generations(unit, generations, landed)
            except StorageUnavailableError as cleanup:  # throttled: the items wait for the next rebuild (D250)
                Logger(service=RATING_SERVICE, child=True).warning(
                    "refused commit's unused participant items left for the next rebuild",
                    extra={"reason": str(cleanup)[:200]},
                )
            raise refused  # the refusal decides (a refused room goes to the poison queue, D335)
        for change in unit.states:
            if change.chunked():
                written += self._chunked_state(change)
        for change in unit.states:  # a rebuild's old generation is no longer read, nor one a crash left: deleted
            if change.new_generation or not change.new.usable:  # a rebuild, or a finished room (D196)
                version, named = change.old_version + 1, generations.get(id(change), change.old_generation)
                old = change.old_generation if change.new_generation else ""
                dead = self._participant_keys(change.new.room_sid, room_state.doomed_generations(version, named, old))
                self._batch_write([{"DeleteRequest": {"Key": key}} for key in dead])
                written += len(dead)
        return written

    def _participant_keys(self, room_sid: str, doomed: Callable[[str], bool]) -> list[Item]:
        """The keys of the room's participant items (every generation: one keys-only Query) whose generation is
        ``doomed``: the header's old generation, and those a rebuild's crash orphaned (its new generation's items
        written, its header not; or landed, the old generation not deleted yet), which no header names
        (D250)."""
        pairs = [items.key_pair(item) for item in self._generation_items(room_sid, None, keys_only=True)]
        return [items.key_item(*pair) for pair in pairs if doomed(room_state.generation_of(pair[1]))]

    def _unused_generations(self, unit: CommitUnit, generations: Mapping[int, str], landed: set[int]) -> None:
        """A commit refused before a rebuild's header landed: the participant items written for its new generation
        are read by nobody (no header names them, and the next generation is another) - deleted, since they name
        the participants (D196, D220); a crash in between leaves them to the next rebuild (D250). Only when
        the stored header, read strongly consistently, names another generation: a transaction that landed but whose
        reply was lost, sent again and refused on the version it had itself moved, reads as refused too (D225)."""
        refused = [change for change in unit.states if id(change) in generations and id(change) not in landed]
        if not refused:
            return
        rooms = sorted({change.new.room_sid for change in refused})
        headers = self._batch_get(self._usage, [items.state_key(room) for room in rooms])
        named = {state.room_sid: state.generation for state in map(items.state_from_item, headers)}
        keys = [
            items.participant_key(change.new.room_sid, generations[id(change)], sid)
            for change in refused
            if named.get(change.new.room_sid) != generations[id(change)]
            for sid in change.puts
        ]
        self._batch_write([{"DeleteRequest": {"Key": key}} for key in keys])

    def _batch_write(self, requests: Sequence[dict[str, Any]]) -> None:
        batch_write(self._client, self._usage, requests)

    def _state_writes(self, change: StateChange, generation: str) -> list[dict[str, Any]]:
        writes = [self._state_put(change, generation)]
        return writes if change.new_generation else writes + self._participant_writes(change)

    def _participant_writes(self, change: StateChange) -> list[dict[str, Any]]:
        room, generation = change.new.room_sid, change.old_generation
        writes = [
            {"Put": {"TableName": self._usage, "Item": items.participant_to_item(room, generation, participant)}}
            for participant in change.puts.values()
        ]
        writes += [
            {"Delete": {"TableName": self._usage, "Key": items.participant_key(room, generation, sid)}}
            for sid in change.deletes
        ]
        return writes

    def _chunked_state(self, change: StateChange) -> int:
        """More participant items than one transaction holds: mark the header pending (on the version read), write
        them in chunks that each check the mark, then the header's new version, which clears it."""
        mark = items.new_mark()
        key = items.state_key(change.new.room_sid)
        names = {"#p": room_state.STATE_PENDING}
        _write(
            self._client.update_item,
            TableName=self._usage,
            Key=key,
            UpdateExpression="SET #p = :m",
            ConditionExpression="version = :v AND attribute_not_exists(#p)",
            ExpressionAttributeNames=names,
            ExpressionAttributeValues=to_item({":m": mark, ":v": change.old_version}),
        )
        check = {
            "ConditionCheck": {
                "TableName": self._usage,
                "Key": key,
                "ConditionExpression": "#p = :m",
                "ExpressionAttributeNames": names,
                "ExpressionAttributeValues": to_item({":m": mark}),
            }
        }
        writes = self._participant_writes(change)
        size = MAX_TRANSACT_ITEMS - 1
        for start in range(0, len(writes), size):
            _write(self._client.transact_write_items, TransactItems=[*writes[start : start + size], check])
        _write(self._client.transact_write_items, TransactItems=[self._state_put(change, change.old_generation, mark)])
        return 1 + len(writes) + 1

    def _erasure_guard(self, account: str, mark: datetime | None) -> dict[str, Any]:
        """The account's profile still carries the erasure mark the batch read (none, or that one): an erasure
        marked since makes the transaction a conflict (D80). An unregistered account's missing profile has none."""
        check: dict[str, Any] = {
            "TableName": self._usage,
            "Key": account_key(account),
            "ExpressionAttributeNames": {"#e": ERASED_AT},
        }
        if mark is None:
            check["ConditionExpression"] = "attribute_not_exists(#e)"
        else:
            check["ConditionExpression"] = "#e = :e"
            check["ExpressionAttributeValues"] = to_item({":e": erasure_mark(mark)})
        return {"ConditionCheck": check}

    def _session_put(self, change: SessionChange) -> dict[str, Any]:
        put: dict[str, Any] = {"TableName": self._usage, "Item": items.session_to_item(change.new)}
        if change.old_version is None:
            put["ConditionExpression"] = "attribute_not_exists(#k)"
            put["ExpressionAttributeNames"] = {"#k": KEY}
        else:
            put["ConditionExpression"] = "version = :v"
            put["ExpressionAttributeValues"] = to_item({":v": change.old_version})
        return {"Put": put}

    def _state_put(self, change: StateChange, generation: str, pending: str = "") -> dict[str, Any]:
        try:
            item = items.state_to_item(change.new, change.old_version + 1, generation)
        except items.StateTooLargeError:
            item = items.version_only_item(change.new, change.old_version + 1, generation)
            # no state (the room is rebuilt per batch), but the version still moves: concurrent batches conflict
        put: dict[str, Any] = {"TableName": self._usage, "Item": item, "ExpressionAttributeNames": {"#k": KEY}}
        if change.old_version == 0:
            put["ConditionExpression"] = "attribute_not_exists(#k)"
        elif pending:  # the end of a chunked write: the mark is still ours
            put["ConditionExpression"] = "attribute_exists(#k) AND version = :v AND #p = :m"
            put["ExpressionAttributeNames"]["#p"] = room_state.STATE_PENDING
            put["ExpressionAttributeValues"] = to_item({":v": change.old_version, ":m": pending})
        else:  # also over a pending mark left by a crash (a rebuild)
            put["ConditionExpression"] = "attribute_exists(#k) AND version = :v"
            put["ExpressionAttributeValues"] = to_item({":v": change.old_version})
        return {"Put": put}

    def _usage_mark(self, mark: UsageChange, now_ms: int) -> dict[str, Any]:
        return {
            "Update": {
                "TableName": self._events,
                "Key": items.key_item(*mark.record.key),
                "UpdateExpression": "SET #r = :now",
                "ConditionExpression": "attribute_exists(#k) AND attribute_not_exists(#r)",
                "ExpressionAttributeNames": {"#k": KEY, "#r": items.RATED_AT},
                "ExpressionAttributeValues": to_item({":now": now_ms}),
            }
        }

    def add_thresholds(self, account: str, period: str, markers: Sequence[str]) -> None:
        conditions = " AND ".join(f"NOT contains(#t, :m{i})" for i in range(len(markers)))
        _write(
            self._client.update_item,
            TableName=self._usage,
            Key=items.aggregate_key((account, period)),
            UpdateExpression="ADD #t :all",
            ConditionExpression=f"attribute_not_exists(#t) OR ({conditions})",
            ExpressionAttributeNames={"#t": items.THRESHOLDS},
            ExpressionAttributeValues=to_item({":all": set(markers), **{f":m{i}": m for i, m in enumerate(markers)}}),
        )

    # --- the sweeper's ----------------------------------------------------------------------------------------------

    def last_event_ms(self, room_sids: Iterable[str]) -> dict[str, int]:
        latest: dict[str, int] = {}
        for room_sid in sorted(set(room_sids)):  # the index's newest item of the room: one item read per room
            found = call(
                self._client.query,
                TableName=self._events,
                IndexName=ROOM_EVENTS_BY_TIME,
                KeyConditionExpression="#k = :pk",
                ProjectionExpression="#c",
                ExpressionAttributeNames={"#k": KEY, "#c": CREATED_AT},
                ExpressionAttributeValues=to_item({":pk": room_partition(room_sid)}),
                ScanIndexForward=False,
                Limit=1,
            ).get("Items", [])
            if found and "N" in found[0].get(CREATED_AT, {}):
                latest[room_sid] = int(found[0][CREATED_AT]["N"]) * 1000
        return latest

    def confirmations(self, keys: Iterable[SessionKey]) -> dict[SessionKey, int]:
        wanted = sorted(set(keys))
        found = self._batch_get(self._usage, [items.confirmation_key(key) for key in wanted])
        return dict(items.confirmation_from_item(item) for item in found)

    def room_listings(self, room_sids: Iterable[str]) -> dict[str, RoomListing]:
        found = self._batch_get(self._usage, [items.listing_key(sid) for sid in sorted(set(room_sids))])
        return dict(items.listing_from_item(item) for item in found)

    def record_listings(self, listings: Mapping[str, RoomListing], expires_at: int) -> None:
        for sid, listing in sorted(listings.items()):
            if not listing.participants:
                continue
            # one conditional put per room (a batch write takes no condition); not written: a newer (or this same)
            # answer is already recorded, and it stands
            _written(
                put_if,
                self._client,
                self._usage,
                items.listing_item(sid, listing, expires_at),
                "attribute_not_exists(#k) OR #a < :a",
                ExpressionAttributeNames={"#k": KEY, "#a": items.ANSWERED_AT_MS},
                ExpressionAttributeValues=to_item({":a": listing.answered_at_ms}),
            )

    def _marks(self, partition: str) -> Iterable[dict[str, Any]]:
        """Every item of a partition of marks (``SWEPT_ROOMS``, ``JOINLESS_ROOMS``), strongly consistent."""
        return paged_items(
            self._client.query,
            TableName=self._usage,
            KeyConditionExpression="#k = :pk",
            ExpressionAttributeNames={"#k": KEY},
            ExpressionAttributeValues=to_item({":pk": partition}),
            ConsistentRead=True,
        )

    def _forget_mark(self, key: Item, attribute: str, at_ms: int) -> None:
        """Delete a mark if its ``attribute`` is still ``at_ms`` (marked again since: kept; none: nothing happens)."""
        _written(
            delete_if,
            self._client,
            self._usage,
            key,
            "attribute_not_exists(#k) OR #c = :c",
            ExpressionAttributeNames={"#k": KEY, "#c": attribute},
            ExpressionAttributeValues=to_item({":c": at_ms}),
        )

    def swept_rooms(self) -> dict[str, SweptRoom]:
        return dict(items.swept_room_from_item(item) for item in self._marks(items.SWEPT_ROOMS))

    def mark_swept_rooms(self, room_sids: Iterable[str], at_ms: int, expires_at: int) -> None:
        for room_sid in sorted(set(room_sids)):
            call(self._client.put_item, TableName=self._usage, Item=items.swept_room_item(room_sid, at_ms, expires_at))

    def mark_dropped_room(self, room_sid: str, mark: SweptRoom, expires_at: int) -> None:
        _written(  # not written: marked again since (or gone), and that mark stands
            put_if,
            self._client,
            self._usage,
            items.swept_room_item(room_sid, mark.closed_at_ms, expires_at, mark.dropped_version),
            "#c = :c",
            ExpressionAttributeNames={"#c": items.CLOSED_AT_MS},
            ExpressionAttributeValues=to_item({":c": mark.closed_at_ms}),
        )

    def forget_swept_room(self, room_sid: str, at_ms: int) -> None:
        # not deleted: marked again since, and the next sweep looks at the room again
        self._forget_mark(items.swept_room_key(room_sid), items.CLOSED_AT_MS, at_ms)

    def joinless_rooms(self) -> dict[str, int]:
        return dict(items.joinless_room_from_item(item) for item in self._marks(items.JOINLESS_ROOMS))

    def forget_joinless_room(self, room_sid: str, at_ms: int) -> None:
        # not deleted: a batch marked the room again since, and the next sweep looks at it again
        self._forget_mark(items.joinless_room_key(room_sid), items.MARKED_AT_MS, at_ms)

    def renew_joinless_room(self, room_sid: str, at_ms: int, now_ms: int, expires_at: int) -> None:
        _written(  # not written: a batch marked the room again since (or the mark is gone), and that stands
            put_if,
            self._client,
            self._usage,
            items.joinless_room_item(room_sid, now_ms, expires_at),
            "#m = :m",
            ExpressionAttributeNames={"#m": items.MARKED_AT_MS},
            ExpressionAttributeValues=to_item({":m": at_ms}),
        )

    def stored_joins(self, participants: Iterable[tuple[str, str]]) -> set[tuple[str, str]]:
        found = set()
        for room_sid, participant_sid in sorted(set(participants)):  # one key read per participant (rare: gone rooms)
            pk, sk = livekit_key(listed_join_id(participant_sid), room_sid)
            answer = call(  # a Query of the one key: the sweeper's grant on the events table (no GetItem)
                self._client.query,
                TableName=self._events,
                KeyConditionExpression="#k = :pk AND #s = :sk",
                ExpressionAttributeNames={"#k": KEY, "#s": SORT_KEY},
                ExpressionAttributeValues=to_item({":pk": pk, ":sk": sk}),
                Select="COUNT",
                ConsistentRead=True,
            )
            if answer.get("Count", 0):
                found.add((room_sid, participant_sid))
        return found

    def claim_give_up(
        self, room_sid: str, participant_sid: str, at_ms: int, stale_before_ms: int, expires_at: int
    ) -> GiveUpClaim:
        try:
            with _refusals():
                call(
                    self._client.put_item,
                    TableName=self._usage,
                    Item=items.given_up_item(room_sid, participant_sid, at_ms, expires_at),
                    ConditionExpression=(
                        "attribute_not_exists(#k) OR (attribute_not_exists(#d) AND (#m = :m OR #m < :stale))"
                    ),
                    ExpressionAttributeNames={"#k": KEY, "#m": items.MARKED_AT_MS, "#d": items.SAID},
                    ExpressionAttributeValues=to_item({":m": at_ms, ":stale": stale_before_ms}),
                    ReturnValuesOnConditionCheckFailure="ALL_OLD",
                )
        except ConditionFailedError as claimed:  # the stored claim says whether its run said it
            return GiveUpClaim.SAID if claimed.item and items.SAID in claimed.item else GiveUpClaim.HELD
        return GiveUpClaim.CLAIMED

    def say_give_up(self, room_sid: str, participant_sid: str, at_ms: int, expires_at: int) -> None:
        _written(  # not written: a later sweep took the claim over (it says it too)
            put_if,
            self._client,
            self._usage,
            items.given_up_item(room_sid, participant_sid, at_ms, expires_at, said=True),
            "#m = :m",
            ExpressionAttributeNames={"#m": items.MARKED_AT_MS},
            ExpressionAttributeValues=to_item({":m": at_ms}),
        )

    def drop_room_state(self, state: RoomState) -> bool:
        if state.pending:  # a chunked write is writing this generation's items (or died: rating rebuilds the room)
            return False
        if state.usable and not _written(  # what a finished room keeps (D196), only if no batch wrote the header since
            put_if,
            self._client,
            self._usage,
            items.version_only_item(state, state.version + 1, state.generation),
            "attribute_exists(#k) AND version = :v AND attribute_not_exists(#p)",
            ExpressionAttributeNames={"#k": KEY, "#p": room_state.STATE_PENDING},
            ExpressionAttributeValues=to_item({":v": state.version}),
        ):
            return False
        # no longer read by anyone: a later event rebuilds the room under a new generation; with it, any generation a
        # rebuild's crash orphaned (D250)
        version, named = (state.version + 1 if state.usable else state.version), state.generation
        for key in self._participant_keys(state.room_sid, room_state.doomed_generations(version, named, named)):
            call(self._client.delete_item, TableName=self._usage, Key=key)
        return True

    def add_close(self, event: LiveKitEventRecord, expires_at: int) -> bool:
        return _written(
            put_if,
            self._client,
            self._events,
            event.to_item(expires_at),
            "attribute_not_exists(#k)",
            ExpressionAttributeNames={"#k": KEY},
        )


class SqsPoisonSink:
    """Events that cannot be rated (not decodable, unknown meter, refused by DynamoDB): their events-table keys and
    the reason on a queue, ``{"reason": ..., "keys": {"pk": {"S": ...}, "sk": {"S": ...}}}`` - never the record
    itself: an event may be stored up to 400 KB, an SQS message holds 256 KiB (the event stays in the events table)."""

    def __init__(self, client: Any, queue_url: str) -> None:
        self._client = client
        self._queue = queue_url

    def send(self, keys: Mapping[str, Any], reason: str) -> None:
        body = json.dumps({"reason": reason[:4000], "keys": keys}, default=str)
        call(self._client.send_message, QueueUrl=self._queue, MessageBody=body)


class SqsFailureQueue:
    """The stream's on-failure queue or the poison queue, read by the operator's replay command.
    ``visibility_timeout``: how long received messages stay hidden - 0 for a dry run (they stay for the real run;
    repeats are recognised by message id), long enough for the re-rating when applying. ``wait_seconds`` and
    ``empty_receives``: a short poll (0) may answer none while messages remain, so a reader that must see every
    message (``--requeue``: several matching are refused) long-polls and stops only after that many empty receives in
    a row (D362 amended (rq2))."""

    def __init__(
        self, client: Any, queue_url: str, visibility_timeout: int = 0, wait_seconds: int = 0, empty_receives: int = 1
    ) -> None:
        self._client = client
        self._queue = queue_url
        self._visibility = visibility_timeout
        self._wait = wait_seconds
        self._empty_receives = empty_receives

    def receive(self, limit: int) -> list[tuple[str, str]]:
        messages: dict[str, tuple[str, str]] = {}
        empty = 0
        while len(messages) < limit and empty < self._empty_receives:
            response = call(
                self._client.receive_message,
                QueueUrl=self._queue,
                MaxNumberOfMessages=min(10, limit - len(messages)),
                VisibilityTimeout=self._visibility,
                WaitTimeSeconds=self._wait,
            )
            fresh = {m["MessageId"]: (m["ReceiptHandle"], m["Body"]) for m in response.get("Messages", [])}
            fresh = {key: value for key, value in fresh.items() if key not in messages}
            empty = 0 if fresh else empty + 1
            messages.update(fresh)
        return list(messages.values())

    def delete(self, receipt: str) -> None:
        call(self._client.delete_message, QueueUrl=self._queue, ReceiptHandle=receipt)


class DynamoStreamArchive:
    """Reads a range of the events table's stream back by shard and sequence number (``GetShardIterator`` at the start
    sequence, then ``GetRecords`` up to the end), in the shape Lambda delivers."""

    def __init__(self, client: Any) -> None:
        self._client = client

    def batch_records(
        self, stream_arn: str, shard_id: str, start_sequence: str, end_sequence: str
    ) -> list[dict[str, Any]] | None:
        shards = [shard_id] if shard_id else self._shards_holding(stream_arn, start_sequence)
        for shard in shards:
            try:
                iterator = call(
                    self._client.get_shard_iterator,
                    StreamArn=stream_arn,
                    ShardId=shard,
                    ShardIteratorType="AT_SEQUENCE_NUMBER",
                    SequenceNumber=start_sequence,
                )["ShardIterator"]
            except (ResourceGoneError, InvalidRequestError):  # trimmed, expired, or not on this shard
                continue
            records = self._read(iterator, end_sequence)
            if records is not None:
                return records
        return None

    def _shards_holding(self, stream_arn: str, sequence: str) -> list[str]:
        """Shards whose sequence range holds ``sequence`` (the on-failure message of a local emulator may omit the
        shard)."""
        try:
            shards = call(self._client.describe_stream, StreamArn=stream_arn)["StreamDescription"]["Shards"]
        except (ResourceGoneError, InvalidRequestError):
            return []
        holding = []
        for shard in shards:
            bounds = shard.get("SequenceNumberRange", {})
            first = int(bounds.get("StartingSequenceNumber", "0"))
            last = bounds.get("EndingSequenceNumber")
            if first <= int(sequence) and (last is None or int(sequence) <= int(last)):
                holding.append(str(shard["ShardId"]))
        return holding

    def _read(self, iterator: str | None, end: str, max_empty_pages: int = 5) -> list[dict[str, Any]] | None:
        """The records up to ``end``; None when the read ended (``max_empty_pages`` empty pages in a row - GetRecords
        may return empty pages before records -, or a closed shard's end) before a record at or past ``end``: a part
        of a batch is never taken for the whole (the replay then reads the events table's window). None too when the
        first record read is already past ``end`` (an iterator on a sibling shard): the batch is not there."""
        records: list[dict[str, Any]] = []
        empty = 0
        while iterator and empty < max_empty_pages:
            page = call(self._client.get_records, ShardIterator=iterator, Limit=1000)
            for record in page.get("Records", []):
                sequence = int(record["dynamodb"]["SequenceNumber"])
                if sequence > int(end):  # past the end: nothing read is not an empty batch, it is not found
                    return records or None
                records.append(lambda_shape(dict(record)))
                if sequence == int(end):
                    return records
            empty = 0 if page.get("Records") else empty + 1
            iterator = page.get("NextShardIterator")
        return None


class DynamoEventArchive:
    """The events table, for the operator's replay: scanned for what it received in a window (a batch whose stream
    records expired) - a full scan, the whole table read once per such message (documented in the runbook, D27) -
    and read by keys (a poison queue's message)."""

    def __init__(self, client: Any, events_table: str) -> None:
        self._client = client
        self._events = events_table

    def received_between(self, start_ms: int, end_ms: int) -> list[StoredEvent | UndecodableItem]:
        found: list[StoredEvent | UndecodableItem] = []
        for item in paged_items(self._client.scan, TableName=self._events):
            try:
                event = decode_item(item)
            except (ContractError, KeyError, TypeError, ValueError) as exc:
                received = _received_at_ms(item)  # an item no reader decodes: the batch's if received in its window
                if received is None or start_ms <= received <= end_ms:  # or if it cannot be dated (it may be)
                    keys = {name: item[name] for name in (KEY, SORT_KEY) if name in item}
                    found.append(UndecodableItem(keys, f"{type(exc).__name__}: {exc}"))
                continue
            if start_ms <= event.received_at_ms <= end_ms:
                found.append(event)
        return found

    def stored_item(self, keys: Mapping[str, Any]) -> Item | None:
        found = call(self._client.get_item, TableName=self._events, Key=dict(keys), ConsistentRead=True)
        item: Item | None = found.get("Item")
        return item


def _received_at_ms(item: Item) -> int | None:
    """An undecodable item's ``received_at_ms`` when it reads as a number, else None."""
    try:
        return int((item.get("received_at_ms") or {})["N"])
    except (KeyError, TypeError, ValueError):
        return None


@dataclass(frozen=True, slots=True)
class LiveKitRoomDirectory:
    """LiveKit's RoomService through the official SDK (``livekit-api``, Twirp): who is still in each room.

    Rooms are asked concurrently (at most ``concurrency`` at once), each request bounded by ``request_timeout`` and
    the whole by ``budget_seconds``; a room that gets no answer in time, or an error, is reported unanswered - never
    read as "gone". ``credentials``: every (API key, secret) pair configured; during a key rotation LiveKit may
    already refuse the first, so a refused key (401) is followed by the next one."""

    url: str
    credentials: Callable[[], Sequence[tuple[str, str]]]
    request_timeout: float = 5.0
    budget_seconds: float = 60.0
    concurrency: int = 8

    def participants(self, room_names: Sequence[str]) -> RoomAnswers:
        rooms = sorted(set(room_names))
        if not rooms:
            return RoomAnswers()
        try:
            credentials = room_credentials(self.url, self.credentials)
        except RoomServiceFailedError as exc:  # unreadable or not configured: nothing can be confirmed, reported
            return RoomAnswers(unanswered=dict.fromkeys(rooms, str(exc)))
        return asyncio.run(self._ask_all(rooms, credentials))

    async def _ask_all(self, rooms: list[str], credentials: list[tuple[str, str]]) -> RoomAnswers:
        import aiohttp  # noqa: PLC0415 - the sweeper only

        answers = RoomAnswers()
        gate = asyncio.Semaphore(self.concurrency)
        async with aiohttp.ClientSession(timeout=aiohttp.ClientTimeout(total=self.request_timeout)) as http:

            async def ask(room: str) -> None:
                async with gate:
                    try:
                        listed = await self._ask(http, room, credentials)
                    except Exception as exc:  # any failure means "not confirmed", reported
                        answers.unanswered[room] = f"{type(exc).__name__}: {exc}"[:200]
                        return
                    answers.present[room] = None if listed is None else {p.sid for p in listed}
                    if listed is not None:
                        answers.listed[room] = {p.sid: p for p in listed}

            tasks = [asyncio.ensure_future(ask(room)) for room in rooms]
            _, pending = await asyncio.wait(tasks, timeout=self.budget_seconds)
            for task in pending:
                task.cancel()
            await asyncio.gather(*pending, return_exceptions=True)
        for room in rooms:
            if room not in answers.present and room not in answers.unanswered:
                answers.unanswered[room] = f"no answer within the sweep's {self.budget_seconds:g} s budget"
        return answers

    async def _ask(self, http: Any, room: str, credentials: list[tuple[str, str]]) -> list[ListedParticipant] | None:
        from livekit import api  # noqa: PLC0415

        request = api.ListParticipantsRequest(room=room)
        try:
            response = await call_room_service(
                self.url, credentials, lambda client: client.room.list_participants(request), http
            )
        except RoomGoneError:
            return None  # the room is gone: everyone in it has left
        return [listed_participant(participant) for participant in response.participants]


def listed_participant(info: Any) -> ListedParticipant:
    """RoomService's ``ParticipantInfo`` as the sweeper reads it: its kind by name as ingest stores a webhook's
    (``STANDARD`` for 0, ``UNKNOWN_<n>`` for a number this protocol does not know), its join in ms (``joinedAtMs``,
    else ``joinedAt`` x 1000), its metadata and attributes (compact JSON, as ingest stores them)."""
    try:
        kind = str(info.Kind.Name(info.kind))
    except ValueError:
        kind = f"UNKNOWN_{info.kind}"
    attributes = dict(info.attributes)
    return ListedParticipant(
        sid=info.sid,
        identity=info.identity,
        kind=kind,
        joined_at_ms=int(info.joined_at_ms) or int(info.joined_at) * 1000,
        metadata=info.metadata,
        attributes=json.dumps(attributes, sort_keys=True, ensure_ascii=False, separators=(",", ":"))
        if attributes
        else "",
    )
