"""The DynamoDB adapter of ``kilo_billing.month_to_date.MonthToDateSource`` (open sessions mapped by
``kilo_billing.month_to_date_items``)."""

from __future__ import annotations

from typing import Any

from kilo_billing.accounts import AccountDirectory, AccountProfile
from kilo_billing.aws import paged_items
from kilo_billing.items import from_item, to_item
from kilo_billing.month_to_date import OpenSessionFigures
from kilo_billing.month_to_date_items import OPEN_ACCOUNT, OPEN_INDEX, open_session_from_values
from kilo_billing.usage_signals import Counters, UsageSignals


class DynamoMonthToDate:
    """``MonthToDateSource`` on the usage table: the profile through the account directory, the counters through
    ``UsageSignals.counters`` (one strongly consistent BatchGetItem), open sessions by a Query of the sparse
    ``open_sessions`` index on ``open_account``."""

    def __init__(self, client: Any, table: str, directory: AccountDirectory, signals: UsageSignals) -> None:
        self._client = client
        self._table = table
        self._directory = directory
        self._signals = signals

    def profile(self, account_id: str) -> AccountProfile | None:
        return self._directory.registered([account_id]).get(account_id)

    def counters(self, account_id: str, period: str) -> Counters:
        return self._signals.counters([(account_id, period)])[(account_id, period)]

    def open_sessions(self, account_id: str) -> list[OpenSessionFigures]:
        found = paged_items(
            self._client.query,
            TableName=self._table,
            IndexName=OPEN_INDEX,
            KeyConditionExpression="#a = :a",
            ExpressionAttributeNames={"#a": OPEN_ACCOUNT},
            ExpressionAttributeValues=to_item({":a": account_id}),
        )
        return [open_session_from_values(from_item(item)) for item in found]
