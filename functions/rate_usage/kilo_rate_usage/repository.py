"""Rating's storage: the port the logic needs, and its DynamoDB adapter.

Usage table layout (single table):
- session   ``ROOM#<room sid>`` / ``SESSION#<participant sid>`` - the session as last rated, its contributions and a
  version; while open it carries ``open_account``/``open_since`` (sparse GSI ``open_sessions``);
- aggregate ``ACCOUNT#<account>`` / ``PERIOD#<YYYY-MM>`` - counters ``c#<segment start>#<meter>`` (ADDed), late
  counters ``late#<meter>`` once the period is invoiced (``invoiced_at``), announced thresholds ``thresholds`` (SS);
- profile   ``ACCOUNT#<account>`` / ``PROFILE`` - tier history and budget (written by the account side).
A usage event is marked rated on its own events-table item (``rated_at``) in the same transaction that adds it.
"""

from __future__ import annotations

import json
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from fractions import Fraction
from typing import Any, Protocol

from kilo_billing.account_store import account_key, profile_from_item, profile_to_item
from kilo_billing.accounts import AccountProfile
from kilo_billing.events import KEY, SORT_KEY, Item, LiveKitEventRecord, UsageEventRecord, room_partition
from kilo_rate_usage.model import (
    Aggregate,
    ContributionKey,
    StoredSession,
    decode_contributions,
    encode_contributions,
)
from kilo_rate_usage.sessions import Billing, ClosedBy, Session

MAX_TRANSACT_ITEMS = 100
OPEN_INDEX = "open_sessions"


class ConflictError(Exception):
    """Someone else changed what this batch read (a concurrent batch): retry the batch."""


class StorageUnavailableError(Exception):
    """DynamoDB refused or failed: retry the batch."""


@dataclass(frozen=True, slots=True)
class SessionChange:
    new: StoredSession
    old_version: str | None  # None: the session was never stored
    delta: dict[ContributionKey, int]  # new contributions - stored contributions


@dataclass(frozen=True, slots=True)
class UsageChange:
    record: UsageEventRecord
    key: ContributionKey


@dataclass
class CommitUnit:
    """Writes that must land together: session versions, usage marks and the aggregate deltas they cause."""

    sessions: list[SessionChange] = field(default_factory=list)
    usage: list[UsageChange] = field(default_factory=list)
    late: set[tuple[str, str]] = field(default_factory=set)  # (account, period) already invoiced

    def deltas(self) -> dict[ContributionKey, int]:
        total: dict[ContributionKey, int] = {}
        for change in self.sessions:
            for key, quantity in change.delta.items():
                total[key] = total.get(key, 0) + quantity
        for usage in self.usage:
            total[usage.key] = total.get(usage.key, 0) + usage.record.quantity
        return total


class UsageRepository(Protocol):
    def room_events(self, room_sid: str) -> list[LiveKitEventRecord]: ...

    def stored_sessions(self, room_sid: str) -> dict[str, StoredSession]: ...

    def profiles(self, accounts: Iterable[str]) -> dict[str, AccountProfile]: ...

    def aggregates(self, keys: Iterable[tuple[str, str]]) -> dict[tuple[str, str], Aggregate]: ...

    def unrated_usage(self, records: Sequence[UsageEventRecord]) -> list[UsageEventRecord]: ...

    def commit(self, unit: CommitUnit, now_ms: int) -> int: ...

    def add_thresholds(self, account: str, period: str, markers: Sequence[str]) -> None: ...

    def open_sessions(self, account: str | None = None) -> list[StoredSession]: ...


# --- item codecs -------------------------------------------------------------------------------------------------


def _fraction(text: str) -> Fraction:
    return Fraction(text) if text else Fraction(0)


def session_item(stored: StoredSession) -> Item:
    session = stored.session
    item: Item = {
        KEY: {"S": f"ROOM#{session.room_sid}"},
        SORT_KEY: {"S": f"SESSION#{session.participant_sid}"},
        "account": {"S": session.account},
        "identity": {"S": session.identity},
        "room_name": {"S": session.room_name},
        "kind": {"S": session.kind},
        "billing": {"S": session.billing.value},
        "start_ms": {"N": str(session.start_ms)},
        "aborted": {"BOOL": session.aborted},
        "connected_seconds": {"S": str(session.connected_seconds)},
        "video_seconds": {"S": str(session.video_seconds)},
        "video_active": {"BOOL": session.video_active},
        "as_of_ms": {"N": str(session.as_of_ms)},
        "contributions": {"S": encode_contributions(stored.contributions)},
        "parts": {"S": json.dumps([[p.period, p.start_ms, p.video, p.audio] for p in session.parts])},
        "version": {"S": stored.version},
    }
    if session.end_ms is not None:
        item["end_ms"] = {"N": str(session.end_ms)}
    if session.closed_by is not None:
        item["closed_by"] = {"S": session.closed_by.value}
    if session.is_open:
        item["open_account"] = {"S": session.account}
        item["open_since"] = {"N": str(session.start_ms)}
    return item


def stored_session(item: Mapping[str, Any]) -> StoredSession:
    from kilo_rate_usage.sessions import PeriodPart  # noqa: PLC0415

    session = Session(
        room_sid=item[KEY]["S"].removeprefix("ROOM#"),
        participant_sid=item[SORT_KEY]["S"].removeprefix("SESSION#"),
        identity=item["identity"]["S"],
        kind=item["kind"]["S"],
        account=item["account"]["S"],
        start_ms=int(item["start_ms"]["N"]),
        end_ms=int(item["end_ms"]["N"]) if "end_ms" in item else None,
        closed_by=ClosedBy(item["closed_by"]["S"]) if "closed_by" in item else None,
        aborted=bool(item["aborted"]["BOOL"]),
        billing=Billing(item["billing"]["S"]),
        connected_seconds=_fraction(item["connected_seconds"]["S"]),
        video_seconds=_fraction(item["video_seconds"]["S"]),
        parts=tuple(PeriodPart(p, int(s), int(v), int(a)) for p, s, v, a in json.loads(item["parts"]["S"])),
        video_active=bool(item["video_active"]["BOOL"]),
        as_of_ms=int(item["as_of_ms"]["N"]),
        room_name=item.get("room_name", {}).get("S", ""),
    )
    return StoredSession(session, decode_contributions(item["contributions"]["S"]), item["version"]["S"])


def aggregate_from_item(account: str, period: str, item: Mapping[str, Any] | None) -> Aggregate:
    aggregate = Aggregate(account, period)
    for name, value in (item or {}).items():
        if name.startswith("c#"):
            _, segment, meter = name.split("#", 2)
            aggregate.counters[(int(segment), meter)] = int(value["N"])
        elif name.startswith("late#"):
            aggregate.late[name.removeprefix("late#")] = int(value["N"])
    aggregate.thresholds = set((item or {}).get("thresholds", {}).get("SS", []))
    aggregate.invoiced = "invoiced_at" in (item or {})
    return aggregate


# --- DynamoDB adapter ---------------------------------------------------------------------------------------------

_ROOM_EVENT_ATTRIBUTES = (
    "pk, sk, #src, schema_version, event_id, event_type, created_at, api_key, received_at_ms, expires_at, room_sid, "
    "room_name, room_metadata, participant_sid, participant_identity, participant_kind, participant_metadata, "
    "participant_attributes, joined_at_ms, track_sid, track_type, track_source"
)


class DynamoUsageRepository:
    def __init__(self, client: Any, usage_table: str, events_table: str) -> None:
        self._client = client
        self._usage = usage_table
        self._events = events_table

    def _call(self, operation: str, **kwargs: Any) -> Any:
        from botocore.exceptions import BotoCoreError, ClientError  # noqa: PLC0415

        try:
            return getattr(self._client, operation)(**kwargs)
        except ClientError as exc:
            code = exc.response.get("Error", {}).get("Code", "")
            if code in {"TransactionCanceledException", "ConditionalCheckFailedException"}:
                raise ConflictError(code) from exc
            raise StorageUnavailableError(code or "ClientError") from exc
        except BotoCoreError as exc:
            raise StorageUnavailableError(type(exc).__name__) from exc

    def _query(self, **kwargs: Any) -> list[dict[str, Any]]:
        items: list[dict[str, Any]] = []
        while True:
            page = self._call("query", **kwargs)
            items.extend(page["Items"])
            if "LastEvaluatedKey" not in page:
                return items
            kwargs["ExclusiveStartKey"] = page["LastEvaluatedKey"]

    def room_events(self, room_sid: str) -> list[LiveKitEventRecord]:
        items = self._query(
            TableName=self._events,
            KeyConditionExpression="pk = :pk",
            ExpressionAttributeValues={":pk": {"S": room_partition(room_sid)}},
            ExpressionAttributeNames={"#src": "source"},
            ProjectionExpression=_ROOM_EVENT_ATTRIBUTES,
            ConsistentRead=True,
        )
        return [LiveKitEventRecord.from_item(item) for item in items]

    def stored_sessions(self, room_sid: str) -> dict[str, StoredSession]:
        items = self._query(
            TableName=self._usage,
            KeyConditionExpression="pk = :pk AND begins_with(sk, :s)",
            ExpressionAttributeValues={":pk": {"S": f"ROOM#{room_sid}"}, ":s": {"S": "SESSION#"}},
            ConsistentRead=True,
        )
        sessions = [stored_session(item) for item in items]
        return {stored.session.participant_sid: stored for stored in sessions}

    def _batch_get(self, table: str, keys: list[Item], projection: str | None = None) -> list[dict[str, Any]]:
        found: list[dict[str, Any]] = []
        for start in range(0, len(keys), 100):
            request: dict[str, Any] = {"Keys": keys[start : start + 100], "ConsistentRead": True}
            if projection:
                request["ProjectionExpression"] = projection
            pending: dict[str, Any] = {table: request}
            while pending:
                response = self._call("batch_get_item", RequestItems=pending)
                found.extend(response["Responses"].get(table, []))
                pending = response.get("UnprocessedKeys") or {}
        return found

    def profiles(self, accounts: Iterable[str]) -> dict[str, AccountProfile]:
        wanted = sorted(set(accounts))
        keys = [account_key(a) for a in wanted]
        found = [profile_from_item(item) for item in self._batch_get(self._usage, keys)]
        registered = {profile.account_id: profile for profile in found}
        return {account: registered.get(account) or AccountProfile.default(account) for account in wanted}

    def aggregates(self, keys: Iterable[tuple[str, str]]) -> dict[tuple[str, str], Aggregate]:
        wanted = sorted(set(keys))
        request = [{KEY: {"S": f"ACCOUNT#{a}"}, SORT_KEY: {"S": f"PERIOD#{p}"}} for a, p in wanted]
        found = {
            (item[KEY]["S"].removeprefix("ACCOUNT#"), item[SORT_KEY]["S"].removeprefix("PERIOD#")): item
            for item in self._batch_get(self._usage, request)
        }
        return {key: aggregate_from_item(key[0], key[1], found.get(key)) for key in wanted}

    def unrated_usage(self, records: Sequence[UsageEventRecord]) -> list[UsageEventRecord]:
        if not records:
            return []
        keys = [{KEY: {"S": r.key[0]}, SORT_KEY: {"S": r.key[1]}} for r in records]
        rated = {
            (item[KEY]["S"], item[SORT_KEY]["S"])
            for item in self._batch_get(self._events, keys, "pk, sk, rated_at")
            if "rated_at" in item
        }
        unique = {record.key: record for record in records}
        return [record for key, record in unique.items() if key not in rated]

    def commit(self, unit: CommitUnit, now_ms: int) -> int:
        """Write the unit in transactions of at most 100 items; returns the number of items written."""
        operations: list[tuple[list[dict[str, Any]], dict[tuple[str, str], dict[tuple[int, str], int]]]] = []
        current: list[dict[str, Any]] = []
        current_deltas: dict[tuple[str, str], dict[tuple[int, str], int]] = {}

        def flush() -> None:
            nonlocal current, current_deltas
            if current or current_deltas:
                operations.append((current, current_deltas))
            current, current_deltas = [], {}

        def add_delta(key: tuple[str, str], counters: Mapping[tuple[int, str], int]) -> None:
            target = current_deltas.setdefault(key, {})
            for counter, quantity in counters.items():
                target[counter] = target.get(counter, 0) + quantity

        for change in unit.sessions:
            session_deltas = by_aggregate(change.delta)
            if len(current) + len(current_deltas.keys() | session_deltas.keys()) + 1 > MAX_TRANSACT_ITEMS:
                flush()
            current.append(self._session_put(change.new, change.old_version))
            for key, counters in session_deltas.items():
                add_delta(key, counters)
        for usage in unit.usage:
            account, period, segment, meter = usage.key
            if len(current) + len(current_deltas.keys() | {(account, period)}) + 1 > MAX_TRANSACT_ITEMS:
                flush()
            current.append(self._usage_mark(usage.record, now_ms))
            add_delta((account, period), {(segment, meter): usage.record.quantity})
        flush()
        written = 0
        for items, deltas in operations:
            updates = [
                self._aggregate_add(key, counters, key in unit.late) for key, counters in deltas.items() if counters
            ]
            self._call("transact_write_items", TransactItems=items + updates)
            written += len(items) + len(updates)
        return written

    def _session_put(self, stored: StoredSession, old_version: str | None) -> dict[str, Any]:
        put: dict[str, Any] = {"TableName": self._usage, "Item": session_item(stored)}
        if old_version is None:
            put["ConditionExpression"] = "attribute_not_exists(pk)"
        else:
            put["ConditionExpression"] = "version = :v"
            put["ExpressionAttributeValues"] = {":v": {"S": old_version}}
        return {"Put": put}

    def _usage_mark(self, record: UsageEventRecord, now_ms: int) -> dict[str, Any]:
        return {
            "Update": {
                "TableName": self._events,
                "Key": {KEY: {"S": record.key[0]}, SORT_KEY: {"S": record.key[1]}},
                "UpdateExpression": "SET rated_at = :now",
                "ConditionExpression": "attribute_exists(pk) AND attribute_not_exists(rated_at)",
                "ExpressionAttributeValues": {":now": {"N": str(now_ms)}},
            }
        }

    def _aggregate_add(
        self, key: tuple[str, str], counters: Mapping[tuple[int, str], int], late: bool
    ) -> dict[str, Any]:
        names: dict[str, str] = {}
        values: dict[str, Any] = {}
        adds = []
        late_totals: dict[str, int] = {}
        for index, ((segment, meter), quantity) in enumerate(sorted(counters.items())):
            names[f"#c{index}"] = f"c#{segment}#{meter}"
            values[f":c{index}"] = {"N": str(quantity)}
            adds.append(f"#c{index} :c{index}")
            late_totals[meter] = late_totals.get(meter, 0) + quantity
        if late:
            for index, (meter, quantity) in enumerate(sorted(late_totals.items())):
                names[f"#l{index}"] = f"late#{meter}"
                values[f":l{index}"] = {"N": str(quantity)}
                adds.append(f"#l{index} :l{index}")
        return {
            "Update": {
                "TableName": self._usage,
                "Key": {KEY: {"S": f"ACCOUNT#{key[0]}"}, SORT_KEY: {"S": f"PERIOD#{key[1]}"}},
                "UpdateExpression": "ADD " + ", ".join(adds),
                "ExpressionAttributeNames": names,
                "ExpressionAttributeValues": values,
            }
        }

    def add_thresholds(self, account: str, period: str, markers: Sequence[str]) -> None:
        conditions = " AND ".join(f"NOT contains(thresholds, :m{i})" for i in range(len(markers)))
        self._call(
            "update_item",
            TableName=self._usage,
            Key={KEY: {"S": f"ACCOUNT#{account}"}, SORT_KEY: {"S": f"PERIOD#{period}"}},
            UpdateExpression="ADD thresholds :all",
            ConditionExpression=f"attribute_not_exists(thresholds) OR ({conditions})",
            ExpressionAttributeValues={
                ":all": {"SS": list(markers)},
                **{f":m{i}": {"S": m} for i, m in enumerate(markers)},
            },
        )

    def open_sessions(self, account: str | None = None) -> list[StoredSession]:
        if account is None:
            items: list[dict[str, Any]] = []
            kwargs: dict[str, Any] = {"TableName": self._usage, "IndexName": OPEN_INDEX}
            while True:
                page = self._call("scan", **kwargs)
                items.extend(page["Items"])
                if "LastEvaluatedKey" not in page:
                    break
                kwargs["ExclusiveStartKey"] = page["LastEvaluatedKey"]
        else:
            items = self._query(
                TableName=self._usage,
                IndexName=OPEN_INDEX,
                KeyConditionExpression="open_account = :a",
                ExpressionAttributeValues={":a": {"S": account}},
            )
        return [stored_session(item) for item in items]

    def put_event(self, item: Item) -> bool:
        """Store a synthetic event (the sweeper's closes) once; False when it was already there."""
        try:
            self._call(
                "put_item",
                TableName=self._events,
                Item=item,
                ConditionExpression="attribute_not_exists(pk)",
            )
        except ConflictError:
            return False
        return True

    def put_profile(self, profile: AccountProfile) -> None:
        self._call("put_item", TableName=self._usage, Item=profile_to_item(profile))


def by_aggregate(contributions: Mapping[ContributionKey, int]) -> dict[tuple[str, str], dict[tuple[int, str], int]]:
    result: dict[tuple[str, str], dict[tuple[int, str], int]] = {}
    for (account, period, segment, meter), quantity in contributions.items():
        counters = result.setdefault((account, period), {})
        counters[(segment, meter)] = counters.get((segment, meter), 0) + quantity
    return result
