"""The DynamoDB adapter of ``kilo_billing.session_usage.SessionReader`` (items mapped by
``kilo_billing.session_usage_items``)."""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

from kilo_billing.aws import paged_items
from kilo_billing.items import from_item, to_item
from kilo_billing.session_usage import SessionUsage
from kilo_billing.session_usage_items import SESSION_PREFIX, session_usage


class DynamoSessionReader:
    """``SessionReader`` on the usage table: sessions are keyed by room, so an account's sessions are found by a Scan
    filtered on ``account`` (an operator's report, like the replay's table scan; no index is kept for it)."""

    def __init__(self, client: Any, table: str) -> None:
        self._client = client
        self._table = table

    def sessions(self, account_id: str, period: str) -> Iterator[SessionUsage]:
        request: dict[str, Any] = {
            "TableName": self._table,
            "FilterExpression": "begins_with(#sk, :session) AND #account = :account",
            "ProjectionExpression": "#pk, #sk, #account, #identity, #room, #aborted, #parts",
            "ExpressionAttributeNames": {
                "#pk": "pk",
                "#sk": "sk",
                "#account": "account",
                "#identity": "identity",
                "#room": "room_name",
                "#aborted": "aborted",
                "#parts": "parts",
            },
            "ExpressionAttributeValues": to_item({":session": SESSION_PREFIX, ":account": account_id}),
        }
        for item in paged_items(self._client.scan, **request):
            found = session_usage(from_item(item), period)
            if found is not None:
                yield found
