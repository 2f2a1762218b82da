"""One contract, two implementations: the in-memory fake and the DynamoDB adapter (on moto, table from the template)."""

from __future__ import annotations

import base64
import json
import zlib
from collections.abc import Callable, Iterator

import pytest

from kilo_billing.events import MAX_ITEM_BYTES, ContractError, decode_item, item_size
from kilo_billing.livekit_events import LiveKitEventRecord
from kilo_billing.usage_events import UsageEventRecord
from kilo_webhook_ingest.adapters import DynamoEventStore
from kilo_webhook_ingest.model import UnstorableEventError
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


# --- size: what DynamoDB refuses whatever the retries, the fake refuses too -----------------------------------------


def livekit_record(body: bytes, metadata: str = "") -> LiveKitEventRecord:
    return LiveKitEventRecord(
        event_id="EV_size",
        event_type="participant_joined",
        created_at=1_771_351_907,
        api_key="APIkey",
        body=body,
        received_at_ms=1_771_351_908_000,
        room_sid="RM_size",
        participant_metadata=metadata,
    )


def test_given_an_item_within_the_limit_then_both_store_it(
    store_and_breaker: tuple[EventStore, Callable[[], None]],
) -> None:
    store, _ = store_and_breaker
    # 300,000 bytes of text: under DynamoDB's 409,600 and under moto's 405,000 (text counts the same in both)
    item = livekit_record(b"{}", metadata="m" * 300_000).to_item(expires_at=1)
    assert 300_000 < item_size(item) < MAX_ITEM_BYTES
    assert store.put_new(item).stored


def test_given_an_item_over_dynamodbs_limit_then_both_refuse_it_for_good_not_as_unavailable(
    store_and_breaker: tuple[EventStore, Callable[[], None]],
) -> None:
    store, _ = store_and_breaker
    item = livekit_record(b"{}", metadata="m" * 420_000).to_item(expires_at=1)  # over 409,600 (and 405,000)
    with pytest.raises(UnstorableEventError):
        store.put_new(item)


# --- the stored-event contract (kilo_billing.events) ----------------------------------------------------------------


def test_given_a_small_body_then_the_item_is_version_1_with_the_raw_body_as_before() -> None:
    item = livekit_record(b'{"id":"EV_size"}').to_item(expires_at=7)
    assert item["schema_version"] == {"N": "1"}  # readers of version 1 keep reading it (rolling deploys)
    assert item["body"] == {"B": b'{"id":"EV_size"}'}
    assert "body_zlib" not in item
    assert "participant_metadata" not in item  # empty strings are left out (absent = empty)


def test_given_a_large_body_then_it_is_compressed_and_decodes_back_from_an_item_and_from_a_stream_image() -> None:
    body = json.dumps({"id": "EV_size", "notes": "standup " * 5000}).encode()
    record = livekit_record(body)
    item = record.to_item(expires_at=7)
    assert item["schema_version"] == {"N": "2"}
    assert zlib.decompress(item["body_zlib"]["B"]) == body
    assert len(item["body_zlib"]["B"]) < len(body) // 10
    assert decode_item(item) == record
    # a Lambda stream event carries binary attributes base64-encoded
    image = {
        name: {"B": base64.b64encode(value["B"]).decode()} if "B" in value else value for name, value in item.items()
    }
    assert decode_item(image) == record


def test_given_a_version_1_item_written_by_the_old_hand_codec_then_it_still_decodes() -> None:
    # the exact attribute values the version-1 writer produced (S/N/B by hand)
    item = {
        "pk": {"S": "room#RM_1"},
        "sk": {"S": "ev#EV_1"},
        "source": {"S": "livekit"},
        "schema_version": {"N": "1"},
        "received_at_ms": {"N": "1771351908000"},
        "expires_at": {"N": "1806000000"},
        "event_id": {"S": "EV_1"},
        "event_type": {"S": "participant_joined"},
        "created_at": {"N": "1771351907"},
        "api_key": {"S": "APIkey"},
        "body": {"B": base64.b64encode(b"{}").decode()},
        "room_sid": {"S": "RM_1"},
        "participant_sid": {"S": "PA_1"},
        "joined_at_ms": {"N": "1771351900456"},
    }
    assert decode_item(item) == LiveKitEventRecord(
        event_id="EV_1",
        event_type="participant_joined",
        created_at=1_771_351_907,
        api_key="APIkey",
        body=b"{}",
        received_at_ms=1_771_351_908_000,
        room_sid="RM_1",
        participant_sid="PA_1",
        joined_at_ms=1_771_351_900_456,
    )


def test_given_an_item_from_a_newer_writer_or_missing_fields_then_a_contract_error_names_it() -> None:
    item = livekit_record(b"{}").to_item(expires_at=7)
    with pytest.raises(ContractError, match="newer"):
        decode_item({**item, "schema_version": {"N": "3"}})
    with pytest.raises(ContractError, match="event_id"):
        decode_item({name: value for name, value in item.items() if name != "event_id"})


def test_given_items_then_their_size_is_measured_as_dynamodb_counts_it() -> None:
    # names + values: "pk"(2) + "room#x"(6) = 8; "n"(1) + "12345"(5 digits + 1) = 7; "b"(1) + 3 raw bytes = 4
    assert item_size({"pk": {"S": "room#x"}, "n": {"N": "12345"}, "b": {"B": b"abc"}}) == 19
    assert item_size({"b": {"B": base64.b64encode(b"abcdef").decode()}}) == 1 + 6  # stream images: decoded size
    assert item_size({"é": {"S": "ü"}}) == 4  # UTF-8 bytes
