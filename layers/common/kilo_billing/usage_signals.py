"""What the operator checks read of the usage table (abuse signals, the daily margin): rating's sessions and aggregates
and the account list, read by attribute name through this port - never by importing rating.

- open sessions: a Scan of rating's sparse ``open_sessions`` index (only open sessions carry ``open_account``);
- sessions an account started since a time: a Query of the ``account_sessions`` index (``account``, ``start_ms``;
  every session item carries both, nothing else in the table carries ``account``);
- the registered accounts: a Scan of the sparse ``accounts`` index (only profiles carry ``account_id``);
- month-to-date counters ``c#<segment start>#<meter>`` of ``ACCOUNT#<id>`` / ``PERIOD#<YYYY-MM>``: BatchGetItem.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from typing import Any, Final, Protocol

from kilo_billing.aws import call, paged_items
from kilo_billing.items import from_item, to_item

OPEN_INDEX: Final = "open_sessions"
ACCOUNT_SESSIONS_INDEX: Final = "account_sessions"
ACCOUNTS_INDEX: Final = "accounts"
COUNTER_PREFIX: Final = "c#"
MAX_BATCH_GET: Final = 100

Counters = dict[tuple[int, str], int]  # (segment start, meter) -> base units


@dataclass(frozen=True, slots=True, order=True)
class OpenSession:
    account_id: str
    identity: str
    room: str
    start_ms: int


@dataclass(frozen=True, slots=True, order=True)
class SessionStart:
    """A session an account started: when, and when it ended (``None`` while open)."""

    account_id: str
    identity: str
    start_ms: int
    end_ms: int | None


class UsageSignals(Protocol):
    def open_sessions(self) -> list[OpenSession]: ...

    def sessions_started(self, account_id: str, since_ms: int) -> list[SessionStart]: ...

    def accounts(self) -> list[str]: ...

    def counters(self, keys: Iterable[tuple[str, str]]) -> dict[tuple[str, str], Counters]:
        """Month-to-date counters of (account, period) pairs; a pair without an aggregate maps to ``{}``."""
        ...


def counters_of(values: Mapping[str, Any]) -> Counters:
    found: Counters = {}
    for name, value in values.items():
        if name.startswith(COUNTER_PREFIX):
            _, segment, meter = name.split("#", 2)
            found[(int(segment), meter)] = int(value)
    return found


class DynamoUsageSignals:
    def __init__(self, client: Any, table: str) -> None:
        self._client = client
        self._table = table

    def _pages(self, operation: Any, request: dict[str, Any]) -> Iterable[dict[str, Any]]:
        return (from_item(item) for item in paged_items(operation, **request))

    def open_sessions(self) -> list[OpenSession]:
        request = {
            "TableName": self._table,
            "IndexName": OPEN_INDEX,
            "ProjectionExpression": "#a, #i, #r, #s",
            "ExpressionAttributeNames": {"#a": "open_account", "#i": "identity", "#r": "room_name", "#s": "start_ms"},
        }
        return sorted(
            OpenSession(
                str(v["open_account"]), str(v.get("identity", "")), str(v.get("room_name", "")), int(v["start_ms"])
            )
            for v in self._pages(self._client.scan, request)
            if "start_ms" in v
        )

    def sessions_started(self, account_id: str, since_ms: int) -> list[SessionStart]:
        request = {
            "TableName": self._table,
            "IndexName": ACCOUNT_SESSIONS_INDEX,
            "KeyConditionExpression": "#a = :a AND #s >= :since",
            "ProjectionExpression": "#a, #i, #s, #e",
            "ExpressionAttributeNames": {"#a": "account", "#i": "identity", "#s": "start_ms", "#e": "end_ms"},
            "ExpressionAttributeValues": to_item({":a": account_id, ":since": since_ms}),
        }
        return sorted(
            SessionStart(
                str(v["account"]),
                str(v.get("identity", "")),
                int(v["start_ms"]),
                int(v["end_ms"]) if v.get("end_ms") is not None else None,
            )
            for v in self._pages(self._client.query, request)
        )

    def accounts(self) -> list[str]:
        request = {"TableName": self._table, "IndexName": ACCOUNTS_INDEX, "ProjectionExpression": "account_id"}
        return sorted({str(v["account_id"]) for v in self._pages(self._client.scan, request)})

    def counters(self, keys: Iterable[tuple[str, str]]) -> dict[tuple[str, str], Counters]:
        wanted = sorted(set(keys))
        found: dict[tuple[str, str], Counters] = {key: {} for key in wanted}
        for start in range(0, len(wanted), MAX_BATCH_GET):
            keys_part = [
                to_item({"pk": f"ACCOUNT#{account}", "sk": f"PERIOD#{period}"})
                for account, period in wanted[start : start + MAX_BATCH_GET]
            ]
            pending: dict[str, Any] = {self._table: {"Keys": keys_part, "ConsistentRead": True}}
            while pending:
                answer = call(self._client.batch_get_item, RequestItems=pending)
                for item in answer["Responses"].get(self._table, []):
                    values = from_item(item)
                    key = (str(values["pk"]).removeprefix("ACCOUNT#"), str(values["sk"]).removeprefix("PERIOD#"))
                    found[key] = counters_of(values)
                pending = answer.get("UnprocessedKeys") or {}
        return found
