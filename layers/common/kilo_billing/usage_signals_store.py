"""The DynamoDB adapter of ``kilo_billing.usage_signals.UsageSignals`` (names and counters mapped by
``kilo_billing.usage_signals_items``)."""

from __future__ import annotations

from collections.abc import Iterable, Iterator
from typing import Any, Final

from kilo_billing.aws import batch_get, paged_items
from kilo_billing.items import from_item, to_item
from kilo_billing.usage_signals import Counters, OpenSession, SessionStart
from kilo_billing.usage_signals_items import (
    ACCOUNT_SESSIONS_INDEX,
    ACCOUNTS_INDEX,
    OPEN_INDEX,
    counters_of,
    stored_for,
)

# what the checks read of a session item (a listed session is read whole from the table, not the index's copy)
SESSION_NAMES: Final = {
    "#pk": "pk",
    "#sk": "sk",
    "#a": "account",
    "#i": "identity",
    "#r": "room_name",
    "#s": "start_ms",
    "#e": "end_ms",
}
SESSION_PROJECTION: Final = ", ".join(SESSION_NAMES)


class DynamoUsageSignals:
    """The index listings name sessions; what is counted is read from the items themselves (BatchGetItem, eventually
    consistent like the index) and kept only where the item is stored for the account it was listed under
    (``stored_for``): a session rating moved to another account is not counted for the one the lagging index still
    lists it under (D206, D293, D318)."""

    def __init__(self, client: Any, table: str) -> None:
        self._client = client
        self._table = table

    def _pages(self, operation: Any, request: dict[str, Any]) -> Iterable[dict[str, Any]]:
        return (from_item(item) for item in paged_items(operation, **request))

    def _items(self, keys: Iterable[tuple[str, str]], **read: Any) -> Iterator[dict[str, Any]]:
        """The items of ``keys`` (pk, sk) by BatchGetItem (``kilo_billing.aws.batch_get``: ``MAX_BATCH_GET`` a request,
        unprocessed keys asked again with backoff); ``read``: the request's other parameters (``ConsistentRead``, a
        projection)."""
        wanted = [to_item({"pk": pk, "sk": sk}) for pk, sk in sorted(set(keys))]
        yield from (from_item(item) for item in batch_get(self._client, self._table, wanted, **read))

    def _stored(self, listed: Iterable[tuple[str, str, str]]) -> Iterator[dict[str, Any]]:
        """The session items that index entries (pk, sk, the account listed under) name, as stored, each kept only
        when it is stored for that account."""
        under = {(pk, sk): account for pk, sk, account in listed}
        found = self._items(under, ProjectionExpression=SESSION_PROJECTION, ExpressionAttributeNames=SESSION_NAMES)
        return (values for values in found if stored_for(values, under[(str(values["pk"]), str(values["sk"]))]))

    def open_sessions(self) -> list[OpenSession]:
        request = {
            "TableName": self._table,
            "IndexName": OPEN_INDEX,
            "ProjectionExpression": "#pk, #sk, #a",
            "ExpressionAttributeNames": {"#pk": "pk", "#sk": "sk", "#a": "open_account"},
        }
        listed = {(str(v["pk"]), str(v["sk"])) for v in self._pages(self._client.scan, request)}
        # every account's open sessions at once: each counted for the account it is stored for now, whichever the
        # lagging index lists it under (a session rating just moved counts for its new account, not for neither)
        found = self._items(listed, ProjectionExpression=SESSION_PROJECTION, ExpressionAttributeNames=SESSION_NAMES)
        return sorted(
            OpenSession(str(v["account"]), str(v.get("identity", "")), str(v.get("room_name", "")), int(v["start_ms"]))
            for v in found
            if "start_ms" in v and v.get("end_ms") is None  # closed, still listed by the lagging index: not open
        )

    def sessions_started(self, account_id: str, since_ms: int) -> list[SessionStart]:
        request = {
            "TableName": self._table,
            "IndexName": ACCOUNT_SESSIONS_INDEX,
            "KeyConditionExpression": "#a = :a AND #s >= :since",
            "ProjectionExpression": "#pk, #sk",
            "ExpressionAttributeNames": {"#pk": "pk", "#sk": "sk", "#a": "account", "#s": "start_ms"},
            "ExpressionAttributeValues": to_item({":a": account_id, ":since": since_ms}),
        }
        listed = [(str(v["pk"]), str(v["sk"]), account_id) for v in self._pages(self._client.query, request)]
        started = [
            SessionStart(
                str(v["account"]),
                str(v.get("identity", "")),
                int(v["start_ms"]),
                int(v["end_ms"]) if v.get("end_ms") is not None else None,
            )
            for v in self._stored(listed)
        ]
        # open ones (no end) after the ended ones of the same start: ``None`` does not compare with an end
        return sorted(started, key=lambda s: (s.account_id, s.identity, s.start_ms, s.end_ms is None, s.end_ms or 0))

    def accounts(self) -> list[str]:
        request = {"TableName": self._table, "IndexName": ACCOUNTS_INDEX, "ProjectionExpression": "account_id"}
        return sorted({str(v["account_id"]) for v in self._pages(self._client.scan, request)})

    def counters(self, keys: Iterable[tuple[str, str]]) -> dict[tuple[str, str], Counters]:
        wanted = sorted(set(keys))
        found: dict[tuple[str, str], Counters] = {key: {} for key in wanted}
        aggregates = self._items(
            ((f"ACCOUNT#{account}", f"PERIOD#{period}") for account, period in wanted), ConsistentRead=True
        )
        for values in aggregates:
            key = (str(values["pk"]).removeprefix("ACCOUNT#"), str(values["sk"]).removeprefix("PERIOD#"))
            found[key] = counters_of(values)
        return found
