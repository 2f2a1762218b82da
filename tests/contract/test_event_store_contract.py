"""One contract, two implementations: the in-memory fake and the DynamoDB adapter (on moto, table from the template)."""

from __future__ import annotations

from collections.abc import Callable, Iterator

import pytest

from kilo_billing.events import UsageEventRecord, decode_item
from kilo_webhook_ingest.adapters import DynamoEventStore
from kilo_webhook_ingest.ports import EventStore, StorageUnavailableError
from tests.conftest import Stack
from tests.fakes import InMemoryEventStore


def usage_record(quantity: int = 5, key: str = "k-1") -> UsageEventRecord:
    return UsageEventRecord(
        client_id="kilo-app",
        idempotency_key=key,
        account_id="acct_1",
        meter="messages",
        quantity=quantity,
        occurred_at_ms=1_771_351_907_000,
        payload_hash=f"hash-{quantity}",
        received_at_ms=1_771_351_908_000,
    )


@pytest.fixture(params=["fake", "dynamodb"])
def store_and_breaker(request: pytest.FixtureRequest) -> Iterator[tuple[EventStore, Callable[[], None]]]:
    if request.param == "fake":
        fake = InMemoryEventStore()

        def break_fake() -> None:
            fake.failing = True

        yield fake, break_fake
        return
    stack: Stack = request.getfixturevalue("stack")
    table = stack.template.physical_name("EventsTable")
    client = stack.clients["dynamodb"]

    def break_table() -> None:
        client.delete_table(TableName=table)

    yield DynamoEventStore(client, table), break_table


def test_given_a_new_key_then_stored(store_and_breaker: tuple[EventStore, Callable[[], None]]) -> None:
    store, _ = store_and_breaker
    assert store.put_new(usage_record().to_item(expires_at=2_000_000_000)).stored is True


def test_given_an_existing_key_then_not_stored_and_the_first_item_is_returned(
    store_and_breaker: tuple[EventStore, Callable[[], None]],
) -> None:
    store, _ = store_and_breaker
    first = usage_record(quantity=5)
    store.put_new(first.to_item(expires_at=2_000_000_000))
    result = store.put_new(usage_record(quantity=9).to_item(expires_at=2_000_000_000))
    assert result.stored is False
    assert result.existing is not None
    assert decode_item(result.existing) == first  # the original, untouched


def test_given_distinct_keys_then_both_stored(store_and_breaker: tuple[EventStore, Callable[[], None]]) -> None:
    store, _ = store_and_breaker
    assert store.put_new(usage_record(key="a").to_item(expires_at=1)).stored
    assert store.put_new(usage_record(key="b").to_item(expires_at=1)).stored


def test_given_the_store_failing_then_store_unavailable(
    store_and_breaker: tuple[EventStore, Callable[[], None]],
) -> None:
    store, break_store = store_and_breaker
    break_store()
    with pytest.raises(StorageUnavailableError):
        store.put_new(usage_record().to_item(expires_at=1))
