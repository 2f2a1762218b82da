"""The DynamoDB adapter of ``kilo_billing.usage_signals.UsageSignals`` (names and counters mapped by
``kilo_billing.usage_signals_items``)."""

from __future__ import annotations

from collections.abc import Iterable
from typing import Any, Final

from kilo_billing.aws import call, paged_items
from kilo_billing.items import from_item, to_item
from kilo_billing.usage_signals import Counters, OpenSession, SessionStart
from kilo_billing.usage_signals_items import ACCOUNT_SESSIONS_INDEX, ACCOUNTS_INDEX, OPEN_INDEX, counters_of

MAX_BATCH_GET: Final = 100


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
