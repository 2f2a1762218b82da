"""Every operation the local moto server answers on its fast path (``FAST_JSON_OPERATIONS``, D443), run on the real
server in its verify mode: it answers with moto's own serializer and a 500 wherever the fast answer differs, so each
call below succeeding means the two said the same. Items carry every attribute type DynamoDB has."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import Any

import boto3
import pytest
from botocore.config import Config

from kilo_dev.localstack import MotoServer
from kilo_dev.moto_server import FAST_JSON_OPERATIONS, SERIALIZER_ENV

pytestmark = pytest.mark.e2e

ITEM = {
    "s": {"S": "text"}, "n": {"N": "12.50"}, "b": {"B": b"\x00\xffkilo"}, "ss": {"SS": ["a", "b"]},
    "ns": {"NS": ["1", "2.5"]}, "bs": {"BS": [b"x", b"\x01"]}, "null": {"NULL": True}, "bool": {"BOOL": False},
    "m": {"M": {"inner": {"L": [{"S": "x"}, {"N": "1"}, {"B": b"y"}, {"M": {}}]}}}, "l": {"L": []},
}  # fmt: skip


@pytest.fixture
def verifying(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[MotoServer]:
    monkeypatch.setenv(SERIALIZER_ENV, "verify")
    server = MotoServer(tmp_path / "moto.log")
    server.start()
    try:
        yield server
    finally:
        server.stop()


def client(server: MotoServer, service: str) -> Any:
    return boto3.client(service, endpoint_url=server.url, region_name="us-east-1", aws_access_key_id="local",
                        aws_secret_access_key="local", config=Config(retries={"total_max_attempts": 1}))  # fmt: skip


def key(pk: str, sk: str) -> dict[str, Any]:
    return {"pk": {"S": pk}, "sk": {"S": sk}}


def test_given_every_fast_operation_then_its_answers_are_moto_serializers_own(verifying: MotoServer) -> None:
    db, streams, done = client(verifying, "dynamodb"), client(verifying, "dynamodbstreams"), set()
    db.meta.events.register("after-call.dynamodb.*", lambda model, **_: done.add(model.name))
    streams.meta.events.register("after-call.dynamodbstreams.*", lambda model, **_: done.add(model.name))
    table = db.create_table(
        TableName="t", BillingMode="PAY_PER_REQUEST",
        KeySchema=[{"AttributeName": "pk", "KeyType": "HASH"}, {"AttributeName": "sk", "KeyType": "RANGE"}],
        AttributeDefinitions=[{"AttributeName": "pk", "AttributeType": "S"}, {"AttributeName": "sk", "AttributeType": "S"}],
        StreamSpecification={"StreamEnabled": True, "StreamViewType": "NEW_AND_OLD_IMAGES"},
    )["TableDescription"]  # fmt: skip
    for n in range(5):
        db.put_item(TableName="t", Item=key("a", f"{n}") | ITEM, ReturnConsumedCapacity="TOTAL")
    assert db.put_item(TableName="t", Item=key("a", "0") | ITEM, ReturnValues="ALL_OLD")["Attributes"]["b"] == ITEM["b"]
    got = db.get_item(TableName="t", Key=key("a", "1"), ReturnConsumedCapacity="INDEXES")["Item"]
    assert got["bs"]["BS"] == [b"x", b"\x01"]
    assert got["m"] == ITEM["m"]
    page = db.query(TableName="t", KeyConditionExpression="pk = :p", ExpressionAttributeValues={":p": {"S": "a"}},
                    Limit=2, ReturnConsumedCapacity="TOTAL")  # fmt: skip
    assert page["LastEvaluatedKey"] == key("a", "1")
    assert db.scan(TableName="t", ProjectionExpression="pk, b")["Count"] == 5
    assert db.query(TableName="t", KeyConditionExpression="pk = :p", ExpressionAttributeValues={":p": {"S": "z"}},
                    Select="COUNT")["Count"] == 0  # fmt: skip
    batch = db.batch_get_item(RequestItems={"t": {"Keys": [key("a", "2"), key("a", "9")]}})
    assert [item["sk"] for item in batch["Responses"]["t"]] == [{"S": "2"}]
    db.batch_write_item(RequestItems={"t": [{"PutRequest": {"Item": key("b", "1") | ITEM}},
                                            {"DeleteRequest": {"Key": key("a", "4")}}]})  # fmt: skip
    updated = db.update_item(TableName="t", Key=key("a", "3"), UpdateExpression="SET n = n + :one, b = :b",
                             ExpressionAttributeValues={":one": {"N": "1"}, ":b": {"B": b"new"}},
                             ReturnValues="ALL_NEW")["Attributes"]  # fmt: skip
    assert updated["b"] == {"B": b"new"}
    assert db.delete_item(TableName="t", Key=key("a", "2"), ReturnValues="ALL_OLD")["Attributes"]["ns"] == ITEM["ns"]
    db.delete_item(TableName="t", Key=key("a", "nothing"))
    db.transact_write_items(TransactItems=[{"Put": {"TableName": "t", "Item": key("c", "1") | ITEM}},
                                           {"Delete": {"TableName": "t", "Key": key("b", "1")}}])  # fmt: skip
    both = db.transact_get_items(TransactItems=[{"Get": {"TableName": "t", "Key": key("c", "1")}},
                                                {"Get": {"TableName": "t", "Key": key("b", "1")}}])["Responses"]  # fmt: skip
    assert [bool(r.get("Item")) for r in both] == [True, False]
    arn = table["LatestStreamArn"]
    shard = streams.describe_stream(StreamArn=arn)["StreamDescription"]["Shards"][0]["ShardId"]
    position = streams.get_shard_iterator(StreamArn=arn, ShardId=shard, ShardIteratorType="TRIM_HORIZON")
    records = streams.get_records(ShardIterator=position["ShardIterator"])["Records"]
    assert [r["eventName"] for r in records][:6] == ["INSERT"] * 5 + ["MODIFY"]
    assert records[5]["dynamodb"]["OldImage"]["b"] == ITEM["b"]
    assert done == set(FAST_JSON_OPERATIONS["dynamodb"] | FAST_JSON_OPERATIONS["dynamodbstreams"]) | {"CreateTable"}
