"""Re-rating what the stream's on-failure queue or the poison queue points at (the operator's ``kilo-billing rating
replay``).

Lambda gives up on a batch after its retries and sends only its coordinates to the on-failure queue (AWS's
``DDBStreamBatchInfo``: stream ARN, shard, first and last sequence number, arrival times of the first and last
record). Within 24 h the records are read back from the stream by sequence number; after that the stream has dropped
them, and the events table answers instead: every event it received in the batch's arrival window (widened by a
margin; when the message carries no arrival times, the 24 h before the failure - the stream keeps nothing longer). A
stream read is taken only when it reached the batch's end sequence (GetRecords may answer empty pages before the
records that follow): a part of the batch is never rated as the whole. Items of the window no reader decodes go to
the poison queue, as the stream's undecodable records do.

A poison queue's message names one event by its events-table keys (``{"reason", "keys"}``; before, ``{"reason",
"record"}`` with the whole stream record, whose keys are used): the event is read from the events table and, once it
decodes and its meter is rated, re-rated; otherwise the message stays, naming why.

Either way the events go through ``logic.rate_batch``, the same exactly-once path as the stream: a room is rebuilt
from all of its events and only differences are written, a usage event is added only if not yet marked rated. So a
replay is idempotent: replaying twice, or replaying what a later retry already rated, changes nothing.

A dry run rates against a read-only view of the repository (``DryRunRepository``: reads pass through, writes are
counted, not made) and publishes nothing, so it reports exactly what ``--apply`` would change.
"""

from __future__ import annotations

import json
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass, field, replace
from datetime import datetime
from typing import Any

from kilo_billing.accounts import AccountProfile
from kilo_billing.events import KEY, SORT_KEY, ContractError
from kilo_billing.livekit_events import LiveKitEventRecord
from kilo_billing.publisher import EventPublisher, PublishError
from kilo_billing.usage_events import UsageEventRecord
from kilo_rate_usage.logic import rate_batch
from kilo_rate_usage.model import Aggregate, AggregateKey, BatchOutcome, RatingConfig, StoredSession
from kilo_rate_usage.ports import (
    CommitUnit,
    EventArchive,
    FailureQueue,
    PoisonSink,
    StreamArchive,
    UndecodableItem,
    UsageRepository,
)
from kilo_rate_usage.rooms import RoomState
from kilo_rate_usage.sessions import ParticipantFold
from kilo_rate_usage.stream import decode_records

STREAM_RETENTION_MS = 24 * 3_600_000
EVENTS_PER_CALL = 500  # the stream's batch size: a replay chunk is no heavier than a batch


class NotABatchInfoError(ValueError):
    """A queue message that is not a stream batch's on-failure record (it is left on the queue)."""


@dataclass(frozen=True, slots=True)
class PoisonMessage:
    """A poison queue's message: the events-table keys of an event rating could not rate, and why."""

    keys: dict[str, Any]  # attribute-value form, as a stream record's ``Keys``
    reason: str

    @classmethod
    def parse(cls, body: str) -> PoisonMessage | None:
        """The message's keys and reason - ``{"reason", "keys"}``, or the earlier ``{"reason", "record"}`` by the
        record's keys - or None when the body is not a poison message."""
        try:
            message = json.loads(body)
        except ValueError:
            return None
        if not isinstance(message, dict) or "reason" not in message:
            return None
        keys = message.get("keys")
        record = message.get("record")
        if keys is None and isinstance(record, dict):
            keys = (record.get("dynamodb") or {}).get("Keys")
        if not isinstance(keys, dict) or not all(isinstance(keys.get(name), dict) for name in (KEY, SORT_KEY)):
            return None
        return cls({KEY: keys[KEY], SORT_KEY: keys[SORT_KEY]}, str(message["reason"]))

    @property
    def label(self) -> str:
        return " / ".join(str(next(iter(self.keys[name].values()), "")) for name in (KEY, SORT_KEY))


def _epoch_ms(value: object) -> int | None:
    if not isinstance(value, str) or not value:
        return None
    return int(datetime.fromisoformat(value.replace("Z", "+00:00")).timestamp() * 1000)


@dataclass(frozen=True, slots=True)
class BatchInfo:
    stream_arn: str
    shard_id: str  # "" when the message does not name it (a local emulator): every shard holding the range is read
    start_sequence: str
    end_sequence: str
    batch_size: int
    first_arrival_ms: int | None
    last_arrival_ms: int | None
    failed_at_ms: int | None

    @classmethod
    def parse(cls, body: str) -> BatchInfo:
        try:
            message = json.loads(body)
        except ValueError as exc:
            raise NotABatchInfoError(f"not JSON: {exc}") from exc
        info = message.get("DDBStreamBatchInfo") if isinstance(message, dict) else None
        if not isinstance(info, dict):
            raise NotABatchInfoError("no DDBStreamBatchInfo: not a DynamoDB stream on-failure record")
        missing = [name for name in ("streamArn", "startSequenceNumber", "endSequenceNumber") if not info.get(name)]
        if missing:
            raise NotABatchInfoError(f"DDBStreamBatchInfo lacks {', '.join(missing)}")
        try:
            return cls(
                stream_arn=str(info["streamArn"]),
                shard_id=str(info.get("shardId") or ""),
                start_sequence=str(int(info["startSequenceNumber"])),
                end_sequence=str(int(info["endSequenceNumber"])),
                batch_size=int(info.get("batchSize") or 0),
                first_arrival_ms=_epoch_ms(info.get("approximateArrivalOfFirstRecord")),
                last_arrival_ms=_epoch_ms(info.get("approximateArrivalOfLastRecord")),
                failed_at_ms=_epoch_ms(message.get("timestamp")),
            )
        except ValueError as exc:
            raise NotABatchInfoError(f"malformed DDBStreamBatchInfo: {exc}") from exc

    def window(self, margin_ms: int) -> tuple[int, int]:
        """When the batch's events were received, for the events table (ingest stamps ``received_at_ms`` just before
        the write the stream records)."""
        if self.first_arrival_ms is not None and self.last_arrival_ms is not None:
            return self.first_arrival_ms - margin_ms, self.last_arrival_ms + margin_ms
        if self.failed_at_ms is None:
            raise NotABatchInfoError("no arrival times and no timestamp: the events table cannot be searched")
        return self.failed_at_ms - STREAM_RETENTION_MS - margin_ms, self.failed_at_ms


@dataclass(frozen=True, slots=True)
class ReplayPlan:
    receipt: str
    info: BatchInfo | None
    source: str  # "stream", "events table", "poison queue", or "" when the message is neither a batch nor a poison one
    livekit: list[LiveKitEventRecord] = field(default_factory=list)
    usage: list[UsageEventRecord] = field(default_factory=list)
    problem: str = ""  # why this message cannot be replayed (it stays on the queue)
    poison: Sequence[tuple[Mapping[str, Any], str]] = field(default_factory=list)  # (keys, reason): not ratable
    event: str = ""  # a poison message's event, "pk / sk"

    @property
    def rooms(self) -> list[str]:
        return sorted({event.room_sid for event in self.livekit if event.room_sid})


def plan(receipt: str, body: str, streams: StreamArchive, events: EventArchive, margin_ms: int = 600_000) -> ReplayPlan:
    """Which events a message concerns: a poison message's event from the events table; a failed batch's records
    from the stream (read whole up to its end sequence), else the events table's window."""
    poisoned = PoisonMessage.parse(body)
    if poisoned is not None:
        return _poisoned_event(receipt, poisoned, events)
    try:
        info = BatchInfo.parse(body)
    except NotABatchInfoError as exc:
        return ReplayPlan(receipt, None, "", problem=f"{exc}; nor a poison record (no reason and keys)")
    records = streams.batch_records(info.stream_arn, info.shard_id, info.start_sequence, info.end_sequence)
    if records is not None:
        decoded = decode_records(records)
        poison = [(_keys(records[bad.index]), bad.reason) for bad in decoded.poison]
        return ReplayPlan(receipt, info, "stream", decoded.livekit, decoded.usage, poison=poison)
    try:
        start, end = info.window(margin_ms)
    except NotABatchInfoError as exc:
        return ReplayPlan(receipt, info, "", problem=str(exc))
    found = events.received_between(start, end)
    livekit = [event for event in found if isinstance(event, LiveKitEventRecord)]
    usage = [event for event in found if isinstance(event, UsageEventRecord)]
    poison = [(item.keys, item.reason) for item in found if isinstance(item, UndecodableItem)]
    return ReplayPlan(receipt, info, "events table", livekit, usage, poison=poison)


def _keys(record: Mapping[str, Any]) -> dict[str, Any]:
    keys: dict[str, Any] = (record.get("dynamodb") or {}).get("Keys") or {}
    return keys


def _poisoned_event(receipt: str, poisoned: PoisonMessage, events: EventArchive) -> ReplayPlan:
    """The poison message's event as stored now, decoded as the stream's records are: ratable, or the message
    stays with why (still undecodable, a meter rating does not rate, gone from the table)."""
    kept = ReplayPlan(receipt, None, "poison queue", event=poisoned.label)
    item = events.stored_item(poisoned.keys)
    if item is None:
        return replace(
            kept, problem=f"{poisoned.label} is not in the events table (expired or erased): nothing to re-rate"
        )
    decoded = decode_records([{"eventName": "INSERT", "dynamodb": {"Keys": poisoned.keys, "NewImage": item}}])
    if decoded.poison:
        return replace(kept, problem=f"still not ratable: {decoded.poison[0].reason}")
    if not decoded.rated:
        return replace(kept, problem=f"{poisoned.label} is not an event rating rates")
    return replace(kept, livekit=decoded.livekit, usage=decoded.usage)


class DryRunRepository:
    """A read-only view of a ``UsageRepository``: reads pass through, a commit counts what it would write."""

    def __init__(self, repo: UsageRepository) -> None:
        self._repo = repo

    def room_events(self, room_sid: str) -> list[LiveKitEventRecord]:
        return self._repo.room_events(room_sid)

    def stored_sessions(self, room_sid: str) -> dict[str, StoredSession]:
        return self._repo.stored_sessions(room_sid)

    def sessions_of(self, room_sid: str, participant_sids: Iterable[str]) -> dict[str, StoredSession]:
        return self._repo.sessions_of(room_sid, participant_sids)

    def room_state(self, room_sid: str) -> RoomState | None:
        return self._repo.room_state(room_sid)

    def room_participants(
        self, room_sid: str, generation: str, participant_sids: Iterable[str] | None
    ) -> dict[str, ParticipantFold]:
        return self._repo.room_participants(room_sid, generation, participant_sids)

    def room_states(self, room_sids: Iterable[str]) -> dict[str, RoomState]:
        return self._repo.room_states(room_sids)

    def profiles(self, accounts: Iterable[str]) -> dict[str, AccountProfile]:
        return self._repo.profiles(accounts)

    def aggregates(self, keys: Iterable[AggregateKey]) -> dict[AggregateKey, Aggregate]:
        return self._repo.aggregates(keys)

    def unrated_usage(self, records: Sequence[UsageEventRecord]) -> list[UsageEventRecord]:
        return self._repo.unrated_usage(records)

    def commit(self, unit: CommitUnit, now_ms: int) -> int:
        return sum(transaction.writes for transaction in unit.transactions()) + sum(s.outside for s in unit.states)

    def add_thresholds(self, account: str, period: str, markers: Sequence[str]) -> None:
        return None

    def mark_joinless_rooms(self, room_sids: Iterable[str], at_ms: int, expires_at: int) -> None:
        return None  # a dry run writes nothing

    def open_sessions(self, account: str | None = None) -> list[StoredSession]:
        return self._repo.open_sessions(account)


class _Silent:
    """Publishes nothing (a dry run announces no thresholds)."""

    def publish(self, detail_type: str, detail: Mapping[str, Any]) -> None:
        return None


@dataclass(frozen=True, slots=True)
class ReplayResult:
    plan: ReplayPlan
    applied: bool
    outcome: BatchOutcome | None
    deleted: bool

    def as_json(self) -> dict[str, object]:
        info = self.plan.info
        outcome = self.outcome
        return {
            "source": self.plan.source,
            "problem": self.plan.problem,
            "stream": info.stream_arn if info else None,
            "shard": info.shard_id if info else None,
            "sequence": [info.start_sequence, info.end_sequence] if info else None,
            "event": self.plan.event or None,
            "rooms": self.plan.rooms,
            "livekit_events": len(self.plan.livekit),
            "usage_events": len(self.plan.usage),
            "poison_records": [reason for _, reason in self.plan.poison],
            "applied": self.applied,
            "sessions_changed": outcome.sessions_changed if outcome else 0,
            "usage_rated": outcome.usage_rated if outcome else 0,
            "writes": outcome.writes if outcome else 0,
            "rejected": [r.room_sid or "/".join(r.usage_key or ()) for r in outcome.rejected] if outcome else [],
            "message_deleted": self.deleted,
        }


def _chunks(found: ReplayPlan) -> list[tuple[list[LiveKitEventRecord], list[UsageEventRecord]]]:
    """Calls of about ``EVENTS_PER_CALL`` events, as the stream would batch them; a room's events stay together."""
    by_room: dict[str, list[LiveKitEventRecord]] = {}
    for event in found.livekit:
        by_room.setdefault(event.room_sid, []).append(event)
    chunks: list[tuple[list[LiveKitEventRecord], list[UsageEventRecord]]] = [([], [])]
    for events in by_room.values():
        livekit, usage = chunks[-1]
        if (livekit or usage) and len(livekit) + len(usage) + len(events) > EVENTS_PER_CALL:
            chunks.append(([], []))
        chunks[-1][0].extend(events)
    for record in found.usage:
        if len(chunks[-1][0]) + len(chunks[-1][1]) >= EVENTS_PER_CALL:
            chunks.append(([], []))
        chunks[-1][1].append(record)
    return [chunk for chunk in chunks if chunk[0] or chunk[1]]


# A refused event's consequence (D362 amended (cx2), (cx3)). Rating announces unattributed usage before a call's
# commit, a threshold event after it; the calls (``_chunks``) before the refused one have committed.
_KEEP = (
    "the message stays on the queue (not deleted) and each run skips it the same way - do not delete it (that usage "
    "would never be rated): report it, and keep it past the queue's 14-day retention (README's runbook)"
)
_REFUSED_CHUNK = (
    f"the records of its chunk (up to {EVENTS_PER_CALL} events: the whole batch when no larger) and of the chunks "
    "after it are not rated, other accounts' usage included (its chunk's are when the refused event is a threshold "
    "event: it goes after the writes); the chunks before it are rated; " + _KEEP
)
_REFUSED_EVENT = (
    "this event is not rated (a room's: none of the room's sessions) when the refused event goes before the writes "
    "(UnattributedUsage.v1, UnattributedAppUsage.v1); " + _KEEP
)


def replay(
    queue: FailureQueue,
    streams: StreamArchive,
    events: EventArchive,
    repo: UsageRepository,
    publisher: EventPublisher,
    poison: PoisonSink,
    config: RatingConfig,
    now_ms: int,
    apply: bool,
    max_messages: int = 100,
    margin_ms: int = 600_000,
    refused: Callable[[PublishError], str | None] | None = None,
) -> list[ReplayResult]:
    """Plan every message (up to ``max_messages``) of the on-failure queue or the poison queue; with ``apply``,
    re-rate each, send its unratable records' keys to the poison queue and delete its message once it is rated
    whole. A dry run writes, sends and deletes nothing. An
    AWS failure stops the run (a message is deleted only after its own re-rating succeeded); rerunning is safe. A
    message whose re-rating meets stored data this reader cannot decode (``ContractError``) is reported with that
    problem and kept on the queue; the run goes on with the next. So does one whose event the bus refused for its
    content (``refused``, the caller's reading of the ``PublishError``, answers the reason; ``None``: any other
    failure, which stops the run): sent again it is refused again, so the message stays on the queue, named, and the
    others are replayed (D362)."""
    results = []
    target: UsageRepository = repo if apply else DryRunRepository(repo)
    announce: EventPublisher = publisher if apply else _Silent()
    for receipt, body in queue.receive(max_messages):
        found = plan(receipt, body, streams, events, margin_ms)
        if found.problem:
            results.append(ReplayResult(found, False, None, False))
            continue
        try:
            outcome = BatchOutcome.total(
                [rate_batch(lk, us, target, announce, config, now_ms) for lk, us in _chunks(found)]
            )
        except ContractError as exc:  # stored data this reader cannot read: this message stays, the others go on
            results.append(ReplayResult(replace(found, problem=f"not rated: {exc}"), False, None, False))
            continue
        except PublishError as exc:
            reason = refused(exc) if refused is not None else None
            if reason is None:  # the bus unavailable, throttled, denied: the run stops (rerun later)
                raise
            problem = (
                f"not replayed: EventBridge refused its event itself ({reason}), and refuses it on every run: "
                + (_REFUSED_EVENT if found.source == "poison queue" else _REFUSED_CHUNK)
            )
            results.append(ReplayResult(replace(found, problem=problem), False, None, False))
            continue
        deleted = False
        if apply and not outcome.rejected:
            for keys, reason in found.poison:
                poison.send(keys, reason)
            queue.delete(receipt)
            deleted = True
        results.append(ReplayResult(found, apply, outcome, deleted))
    return results
