"""``kilo_billing.aws``'s DynamoDB helpers on moto: ``paged_items`` (every page of a Query or Scan), ``put_if``
(one conditional PutItem that says whether it wrote), ``delete_if`` (one conditional DeleteItem that says whether it
deleted), and ``batch_get`` / ``batch_write`` (a batch's unprocessed part asked again with backoff, a bounded number of
times: on fake clients that leave part of it unprocessed, and on moto)."""

from __future__ import annotations

from typing import Any

import boto3
import pytest

from kilo_billing.aws import (
    BatchRetry,
    StorageUnavailableError,
    batch_get,
    batch_write,
    delete_if,
    give_back_counted,
    paged_items,
    put_if,
    take_counted,
)


def _table(name: str) -> Any:
    dynamodb = boto3.client("dynamodb")
    dynamodb.create_table(
        TableName=name,
        KeySchema=[{"AttributeName": "pk", "KeyType": "HASH"}, {"AttributeName": "sk", "KeyType": "RANGE"}],
        AttributeDefinitions=[
            {"AttributeName": "pk", "AttributeType": "S"},
            {"AttributeName": "sk", "AttributeType": "S"},
        ],
        BillingMode="PAY_PER_REQUEST",
    )
    return dynamodb


def test_follows_every_page_of_a_query_and_a_scan(aws: None) -> None:
    dynamodb = _table("paging")
    for n in range(5):
        dynamodb.put_item(TableName="paging", Item={"pk": {"S": "a"}, "sk": {"S": f"s{n}"}})
    dynamodb.put_item(TableName="paging", Item={"pk": {"S": "b"}, "sk": {"S": "s9"}})

    queried = paged_items(
        dynamodb.query,
        TableName="paging",
        KeyConditionExpression="pk = :pk",
        ExpressionAttributeValues={":pk": {"S": "a"}},
        Limit=2,  # three pages: 2, 2, 1
    )
    scanned = paged_items(dynamodb.scan, TableName="paging", Limit=4)

    assert [item["sk"]["S"] for item in queried] == ["s0", "s1", "s2", "s3", "s4"]
    assert sorted(item["sk"]["S"] for item in scanned) == ["s0", "s1", "s2", "s3", "s4", "s9"]


KEY: dict[str, Any] = {"pk": {"S": "a"}, "sk": {"S": "x"}}


def _stored(dynamodb: Any) -> dict[str, Any]:
    return dict(dynamodb.get_item(TableName="puts", Key=KEY)["Item"])


def test_given_no_item_when_put_then_written_and_a_second_put_of_the_key_is_refused(aws: None) -> None:
    dynamodb = _table("puts")

    written = [put_if(dynamodb, "puts", {**KEY, "n": {"N": n}}) for n in ("1", "2")]

    assert written == [True, False]
    assert _stored(dynamodb)["n"] == {"N": "1"}


def test_given_a_condition_with_names_and_values_then_the_put_happens_only_while_it_holds(aws: None) -> None:
    dynamodb = _table("puts")
    dynamodb.put_item(TableName="puts", Item={**KEY, "status": {"S": "retry"}})

    def claim(status: str) -> bool:
        return put_if(
            dynamodb,
            "puts",
            {**KEY, "status": {"S": status}},
            "attribute_not_exists(pk) OR #s = :retry",
            ExpressionAttributeNames={"#s": "status"},
            ExpressionAttributeValues={":retry": {"S": "retry"}},
        )

    assert [claim("pending"), claim("other")] == [True, False]
    assert _stored(dynamodb)["status"] == {"S": "pending"}


def test_given_an_item_when_deleted_then_gone_and_deleting_it_again_or_a_missing_key_is_refused(aws: None) -> None:
    dynamodb = _table("puts")
    dynamodb.put_item(TableName="puts", Item={**KEY, "n": {"N": "1"}})

    deleted = [delete_if(dynamodb, "puts", KEY) for _ in range(2)]

    assert deleted == [True, False]
    assert "Item" not in dynamodb.get_item(TableName="puts", Key=KEY)
    assert not delete_if(dynamodb, "puts", {"pk": {"S": "never"}, "sk": {"S": "x"}})


def test_given_a_condition_with_values_then_the_delete_happens_only_while_it_holds(aws: None) -> None:
    dynamodb = _table("puts")
    dynamodb.put_item(TableName="puts", Item={**KEY, "holder": {"S": "h1"}})

    def end(holder: str) -> bool:
        return delete_if(
            dynamodb, "puts", KEY, "holder = :holder", ExpressionAttributeValues={":holder": {"S": holder}}
        )

    assert end("h2") is False
    assert _stored(dynamodb)["holder"] == {"S": "h1"}  # another holder's: kept
    assert end("h1") is True
    assert "Item" not in dynamodb.get_item(TableName="puts", Key=KEY)


def test_given_a_cap_of_two_then_a_third_take_is_refused_until_one_is_given_back_and_never_below_zero(
    aws: None,
) -> None:
    dynamodb = _table("counts")

    taken = [take_counted(dynamodb, "counts", KEY, "sent", 2, 1_800_000_000) for _ in range(3)]
    give_back_counted(dynamodb, "counts", KEY, "sent")
    again = take_counted(dynamodb, "counts", KEY, "sent", 2, 1_800_000_000)
    for _ in range(4):  # more give-backs than takes: stops at 0
        give_back_counted(dynamodb, "counts", KEY, "sent")
    item = dynamodb.get_item(TableName="counts", Key=KEY)["Item"]

    assert (taken, again) == ([True, True, False], True)
    assert (item["sent"], item["expires_at"]) == ({"N": "0"}, {"N": "1800000000"})


# --- batch_get / batch_write: unprocessed keys and items ------------------------------------------------------------


def _key(n: int) -> dict[str, Any]:
    return {"pk": {"S": f"p{n}"}, "sk": {"S": "s"}}


class PartlyProcessed:
    """A client that leaves the last ``left`` keys / items of each batch request unprocessed for its first ``times``
    requests (``times=None``: every request), and records what each request asked for."""

    def __init__(self, times: int | None, left: int = 1) -> None:
        self.times, self.left = times, left
        self.asked: list[dict[str, Any]] = []

    def _split(self, items: list[Any]) -> tuple[list[Any], list[Any]]:
        if self.times is not None and len(self.asked) > self.times:
            return items, []
        return items[: -self.left], items[-self.left :]

    def batch_get_item(self, RequestItems: dict[str, Any]) -> dict[str, Any]:  # noqa: N803 - boto3's name
        self.asked.append(RequestItems)
        if len(self.asked) > 40:
            raise AssertionError("asked for ever")
        (table, spec), *_ = RequestItems.items()
        done, left = self._split(spec["Keys"])
        unprocessed = {table: {**spec, "Keys": left}} if left else {}
        return {
            "Responses": {table: [{**key, "found": {"BOOL": True}} for key in done]},
            "UnprocessedKeys": unprocessed,
        }

    def batch_write_item(self, RequestItems: dict[str, Any]) -> dict[str, Any]:  # noqa: N803 - boto3's name
        self.asked.append(RequestItems)
        if len(self.asked) > 40:
            raise AssertionError("asked for ever")
        (table, requests), *_ = RequestItems.items()
        _, left = self._split(requests)
        return {"UnprocessedItems": {table: left} if left else {}}


def _recording(waits: list[float], attempts: int = 6) -> BatchRetry:
    """The default figures, the waits recorded, each wait its bound (no jitter): the bounds themselves are seen."""
    return BatchRetry(attempts=attempts, sleep=waits.append, jitter=lambda bound: bound)


def test_given_keys_left_unprocessed_twice_then_only_those_are_asked_again_after_growing_waits() -> None:
    client, waits = PartlyProcessed(times=2), []
    keys = [_key(n) for n in range(4)]

    found = list(batch_get(client, "t", keys, _recording(waits), ConsistentRead=True, ProjectionExpression="pk"))

    assert [item["pk"]["S"] for item in found] == ["p0", "p1", "p2", "p3"]
    # the first request, then the key it left (p3), twice more, with the request's other parameters kept
    assert [[k["pk"]["S"] for k in asked["t"]["Keys"]] for asked in client.asked] == [
        ["p0", "p1", "p2", "p3"],
        ["p3"],
        ["p3"],
    ]
    assert all(asked["t"]["ConsistentRead"] and asked["t"]["ProjectionExpression"] == "pk" for asked in client.asked)
    assert waits == [0.05, 0.1]  # 50 ms, then twice that


def test_given_keys_always_unprocessed_then_six_requests_with_capped_waits_and_an_error_naming_them() -> None:
    client, waits = PartlyProcessed(times=None, left=2), []

    with pytest.raises(StorageUnavailableError, match="UnprocessedKeys: 2 still unprocessed after 6 requests"):
        list(batch_get(client, "t", [_key(n) for n in range(3)], _recording(waits)))

    assert len(client.asked) == 6
    assert waits == [0.05, 0.1, 0.2, 0.4, 0.8]  # 1.55 s at most in all


def test_given_more_attempts_then_a_wait_never_exceeds_the_one_second_cap() -> None:
    client, waits = PartlyProcessed(times=None), []

    with pytest.raises(StorageUnavailableError, match="after 8 requests"):
        batch_write(client, "t", [{"DeleteRequest": {"Key": _key(0)}}] * 2, _recording(waits, attempts=8))

    assert waits == [0.05, 0.1, 0.2, 0.4, 0.8, 1.0, 1.0]
    assert BatchRetry().worst_case_seconds == pytest.approx(1.55)
    assert BatchRetry(attempts=8).worst_case_seconds == pytest.approx(3.55)


def test_given_the_default_jitter_then_each_wait_is_drawn_between_nothing_and_its_bound() -> None:
    client, waits = PartlyProcessed(times=None), []

    with pytest.raises(StorageUnavailableError):
        list(batch_get(client, "t", [_key(0), _key(1)], BatchRetry(sleep=waits.append)))

    assert len(waits) == 5
    assert all(0.0 <= wait <= bound for wait, bound in zip(waits, [0.05, 0.1, 0.2, 0.4, 0.8], strict=True))


def test_given_items_left_unprocessed_once_then_only_those_are_written_again() -> None:
    client, waits = PartlyProcessed(times=1, left=2), []
    requests = [{"PutRequest": {"Item": _key(n)}} for n in range(5)]

    batch_write(client, "t", requests, _recording(waits))

    assert client.asked == [{"t": requests}, {"t": requests[3:]}]
    assert waits == [0.05]


def test_given_everything_processed_then_one_request_a_chunk_of_100_keys_or_25_writes_and_no_wait() -> None:
    gets, writes, waits = PartlyProcessed(times=0), PartlyProcessed(times=0), []

    found = list(batch_get(gets, "t", [_key(n) for n in range(250)], _recording(waits)))
    batch_write(writes, "t", [{"DeleteRequest": {"Key": _key(n)}} for n in range(60)], _recording(waits))

    assert len(found) == 250
    assert [len(asked["t"]["Keys"]) for asked in gets.asked] == [100, 100, 50]
    assert [len(asked["t"]) for asked in writes.asked] == [25, 25, 10]
    assert waits == []


def test_batch_write_then_batch_get_on_moto_read_back_every_item_past_one_request(aws: None) -> None:
    dynamodb = _table("batches")
    batch_write(dynamodb, "batches", [{"PutRequest": {"Item": {**_key(n), "n": {"N": str(n)}}}} for n in range(130)])

    found = batch_get(dynamodb, "batches", [_key(n) for n in range(140)], ConsistentRead=True)  # 10 never written

    assert sorted(int(item["n"]["N"]) for item in found) == list(range(130))
