"""``kilo_billing.aws.paged_items``: every page of a Query or Scan, on moto's DynamoDB."""

from __future__ import annotations

import boto3

from kilo_billing.aws import paged_items


def test_follows_every_page_of_a_query_and_a_scan(aws: None) -> None:
    dynamodb = boto3.client("dynamodb")
    dynamodb.create_table(
        TableName="paging",
        KeySchema=[{"AttributeName": "pk", "KeyType": "HASH"}, {"AttributeName": "sk", "KeyType": "RANGE"}],
        AttributeDefinitions=[
            {"AttributeName": "pk", "AttributeType": "S"},
            {"AttributeName": "sk", "AttributeType": "S"},
        ],
        BillingMode="PAY_PER_REQUEST",
    )
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
