"""``kilo_billing.aws.put_if``: one conditional PutItem that says whether it wrote, on moto's DynamoDB."""

from __future__ import annotations

from typing import Any

import boto3

from kilo_billing.aws import put_if


def _table() -> Any:
    dynamodb = boto3.client("dynamodb")
    dynamodb.create_table(
        TableName="puts",
        KeySchema=[{"AttributeName": "pk", "KeyType": "HASH"}, {"AttributeName": "sk", "KeyType": "RANGE"}],
        AttributeDefinitions=[
            {"AttributeName": "pk", "AttributeType": "S"},
            {"AttributeName": "sk", "AttributeType": "S"},
        ],
        BillingMode="PAY_PER_REQUEST",
    )
    return dynamodb


def _stored(dynamodb: Any) -> dict[str, Any]:
    found = dynamodb.get_item(TableName="puts", Key={"pk": {"S": "a"}, "sk": {"S": "x"}})
    return dict(found["Item"])


def test_given_no_item_when_put_then_written_and_a_second_put_of_the_key_is_refused(aws: None) -> None:
    dynamodb = _table()
    first = {"pk": {"S": "a"}, "sk": {"S": "x"}, "n": {"N": "1"}}
    second = {"pk": {"S": "a"}, "sk": {"S": "x"}, "n": {"N": "2"}}

    assert put_if(dynamodb, "puts", first) is True
    assert put_if(dynamodb, "puts", second) is False
    assert _stored(dynamodb)["n"] == {"N": "1"}


def test_given_a_condition_with_names_and_values_when_it_holds_then_the_put_replaces_the_item(aws: None) -> None:
    dynamodb = _table()
    put_if(dynamodb, "puts", {"pk": {"S": "a"}, "sk": {"S": "x"}, "status": {"S": "retry"}})
    retry = "attribute_not_exists(pk) OR #s = :retry"
    names, values = {"#s": "status"}, {":retry": {"S": "retry"}}

    taken = put_if(
        dynamodb,
        "puts",
        {"pk": {"S": "a"}, "sk": {"S": "x"}, "status": {"S": "pending"}},
        retry,
        ExpressionAttributeNames=names,
        ExpressionAttributeValues=values,
    )
    again = put_if(
        dynamodb,
        "puts",
        {"pk": {"S": "a"}, "sk": {"S": "x"}, "status": {"S": "other"}},
        retry,
        ExpressionAttributeNames=names,
        ExpressionAttributeValues=values,
    )

    assert (taken, again) == (True, False)
    assert _stored(dynamodb)["status"] == {"S": "pending"}
