"""The stream reader the tests and the local stack read DynamoDB streams with (``kilo_dev.streams``): a shard whose
sequence numbers stop increasing fails the poll, naming the shard and the number, instead of handing out its last
record page after page (D448)."""

from __future__ import annotations

from typing import Any

import pytest

from kilo_dev.streams import StreamNotAdvancingError, StreamReader

ARN = "arn:aws:dynamodb:us-east-1:123456789012:table/events/stream/2026-11-16T00:00:00"
START = 1100000000017454423009


def record(number: int, key: str) -> dict[str, Any]:
    return {
        "eventID": key,
        "eventName": "INSERT",
        "dynamodb": {"SequenceNumber": str(number), "Keys": {"pk": {"S": key}}, "NewImage": {"pk": {"S": key}}},
    }


class Shard:
    """One shard's records served as moto serves them: an iterator is a place, the next one the last number + 1
    taken as a place (``AFTER_SEQUENCE_NUMBER``)."""

    def __init__(self, records: list[dict[str, Any]]) -> None:
        self.records = records
        self.pages = 0

    def describe_stream(self, StreamArn: str) -> dict[str, Any]:  # noqa: N803 - boto3's parameter names
        return {"StreamDescription": {"Shards": [{"ShardId": "shardId-1"}]}}

    def get_shard_iterator(self, StreamArn: str, ShardId: str, ShardIteratorType: str) -> dict[str, Any]:  # noqa: N803
        return {"ShardIterator": str(START)}

    def get_records(self, ShardIterator: str, Limit: int) -> dict[str, Any]:  # noqa: N803
        self.pages += 1
        place = int(ShardIterator) - START
        page = self.records[place : place + Limit]
        after = max((int(r["dynamodb"]["SequenceNumber"]) for r in page), default=int(ShardIterator) - 1)
        return {"Records": page, "NextShardIterator": str(after + 1)}


def test_given_records_numbered_in_order_then_each_poll_gives_what_arrived_since_the_last() -> None:
    shard = Shard([record(START, "a"), record(START + 1, "b")])
    reader = StreamReader(shard, ARN)
    assert [r["eventID"] for r in reader.poll()] == ["a", "b"]
    shard.records.append(record(START + 2, "c"))
    assert [r["eventID"] for r in reader.poll()] == ["c"]
    assert reader.poll() == []


def test_given_two_records_numbered_alike_then_the_poll_fails_naming_the_shard_and_the_number() -> None:
    """moto once gave two writes served at once one number: its next iterator (that number + 1, as a place) read the
    second record again on every page, and a poll handed out 1,000 records where 2 were written."""
    shard = Shard([record(START, "m-1"), record(START, "b-1")])
    reader = StreamReader(shard, ARN)
    with pytest.raises(StreamNotAdvancingError, match=f"shard shardId-1 of {ARN} gave sequence number {START} after"):
        reader.poll()
    assert shard.pages == 1  # on the first page: not after 500 rounds of the same record
