"""Every adapter's BatchGetItem / BatchWriteItem under throttling that never lets up: DynamoDB answers the whole
batch unprocessed, request after request. Each adapter asks again a bounded number of times (``kilo_billing.aws``'s
``BatchRetry``), then fails with ``StorageUnavailableError`` - before D335 each one asked again at once, for ever
(until the Lambda timed out). The fake client is bounded itself, so the old loop fails here instead of hanging."""

from __future__ import annotations

from collections.abc import Callable
from datetime import timedelta
from typing import Any

import pytest

from kilo_account_api.adapters import DynamoSessionHistory
from kilo_billing import aws
from kilo_billing.account_store import DynamoAccountDirectory
from kilo_billing.aws import StorageUnavailableError
from kilo_billing.entitlement_store import DynamoEntitlements
from kilo_billing.usage_signals_store import DynamoUsageSignals
from kilo_rate_usage.adapters import DynamoUsageRepository

TABLE = "usage"
BOUND = 40  # requests the fake answers before it gives up: far above the helper's cap, far below "for ever"


class SpunError(Exception):
    """The fake was asked more than ``BOUND`` times: an adapter that never gives up."""


class Throttled:
    """A DynamoDB client whose batch requests are answered wholly unprocessed, every time; a Query or Scan lists one
    session (for the adapters that list before they read)."""

    def __init__(self) -> None:
        self.batch_requests = 0

    def _count(self) -> None:
        self.batch_requests += 1
        if self.batch_requests > BOUND:
            raise SpunError(f"asked {BOUND} times, still unprocessed")

    def batch_get_item(self, RequestItems: dict[str, Any]) -> dict[str, Any]:  # noqa: N803 - boto3's name
        self._count()
        return {"Responses": {}, "UnprocessedKeys": RequestItems}

    def batch_write_item(self, RequestItems: dict[str, Any]) -> dict[str, Any]:  # noqa: N803 - boto3's name
        self._count()
        return {"UnprocessedItems": RequestItems}

    def query(self, **_: Any) -> dict[str, Any]:
        return {"Items": [{"pk": {"S": "ROOM#r1"}, "sk": {"S": "SESSION#p1"}}]}

    def scan(self, **_: Any) -> dict[str, Any]:
        return self.query()


KEY = {"pk": {"S": "ROOM#r1"}, "sk": {"S": "STATE"}}

CASES: dict[str, Callable[[Any], object]] = {
    "rating_batch_get": lambda client: DynamoUsageRepository(client, TABLE, "events").room_states(["r1"]),
    "rating_batch_write": lambda client: DynamoUsageRepository(client, TABLE, "events")._batch_write(
        [{"DeleteRequest": {"Key": KEY}}]
    ),
    "account_api_sessions": lambda client: list(
        DynamoSessionHistory(client, TABLE, timedelta(days=1)).all_sessions("acct_1")
    ),
    "account_directory": lambda client: DynamoAccountDirectory(client, TABLE).registered(["acct_1"]),
    "entitlements": lambda client: DynamoEntitlements(client, TABLE).read("acct_1"),
    "usage_signals": lambda client: DynamoUsageSignals(client, TABLE).counters([("acct_1", "2026-12")]),
}


@pytest.mark.parametrize("read", CASES.values(), ids=CASES.keys())
def test_given_a_batch_always_unprocessed_then_the_adapter_gives_up_after_six_requests(
    read: Callable[[Any], object], monkeypatch: pytest.MonkeyPatch
) -> None:
    waits: list[float] = []
    monkeypatch.setattr(aws, "BATCH_RETRY", aws.BatchRetry(sleep=waits.append), raising=False)
    client = Throttled()

    with pytest.raises(StorageUnavailableError, match="unprocessed after 6 requests"):
        read(client)

    assert client.batch_requests == 6  # the first request and 5 retries
    assert len(waits) == 5  # a wait before each retry
