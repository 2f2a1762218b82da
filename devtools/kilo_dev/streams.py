"""Read a DynamoDB stream (moto's or AWS's) and hand out records shaped exactly as Lambda delivers them."""

from __future__ import annotations

from typing import Any

from kilo_billing.items import lambda_shape


class StreamNotAdvancingError(RuntimeError):
    """A shard gave a sequence number no greater than one it gave before: two records numbered alike, or an iterator
    that did not move on (DynamoDB Streams numbers a shard's records in increasing order)."""


class StreamReader:
    """Follows every shard of a stream from its start (TRIM_HORIZON); ``poll`` returns what arrived since last time.
    A shard whose sequence numbers do not increase fails the poll (``StreamNotAdvancingError``) rather than handing
    out its last record again page after page (D448)."""

    def __init__(self, client: Any, stream_arn: str, region: str = "us-east-1") -> None:
        self._client = client
        self._arn = stream_arn
        self._region = region
        self._iterators: dict[str, str | None] = {}
        self._last: dict[str, int] = {}  # per shard, the last sequence number handed out

    def _refresh_shards(self) -> None:
        shards = self._client.describe_stream(StreamArn=self._arn)["StreamDescription"]["Shards"]
        for shard in shards:
            shard_id = shard["ShardId"]
            if shard_id not in self._iterators:
                self._iterators[shard_id] = self._client.get_shard_iterator(
                    StreamArn=self._arn, ShardId=shard_id, ShardIteratorType="TRIM_HORIZON"
                )["ShardIterator"]

    def poll(self, limit: int = 1000) -> list[dict[str, Any]]:
        self._refresh_shards()
        records: list[dict[str, Any]] = []
        for shard_id, start in list(self._iterators.items()):
            position = start
            while position is not None and len(records) < limit:
                page = self._client.get_records(ShardIterator=position, Limit=min(1000, limit - len(records)))
                position = page.get("NextShardIterator")
                for record in page["Records"]:
                    self._advance(shard_id, int(record["dynamodb"]["SequenceNumber"]))
                    records.append(self._to_lambda(record))
                if not page["Records"]:
                    break
            self._iterators[shard_id] = position
        return records

    def _advance(self, shard_id: str, number: int) -> None:
        last = self._last.get(shard_id)
        if last is not None and number <= last:
            raise StreamNotAdvancingError(
                f"shard {shard_id} of {self._arn} gave sequence number {number} after {last}: two records numbered "
                "alike or an iterator that did not move on"
            )
        self._last[shard_id] = number

    def _to_lambda(self, record: dict[str, Any]) -> dict[str, Any]:
        shaped: dict[str, Any] = lambda_shape(record)
        shaped.setdefault("eventVersion", "1.1")
        shaped.setdefault("eventSource", "aws:dynamodb")
        shaped.setdefault("awsRegion", self._region)
        shaped["eventSourceARN"] = self._arn
        return shaped
