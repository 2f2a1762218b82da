"""``kilo_billing.aws``'s DynamoDB helpers on moto: ``paged_items`` (every page of a Query or Scan), ``put_if``
(one conditional PutItem that says whether it wrote) and ``delete_if`` (one conditional DeleteItem that says whether it
deleted)."""

from __future__ import annotations

from typing import Any

import boto3

from kilo_billing.aws import delete_if, give_back_counted, paged_items, put_if, take_counted


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
