"""The local stack's moto server (``kilo_dev.moto_server``) against moto's own, on what made the local stack's memory
grow (docs/decisions.md): every ``TransactWriteItems`` kept a deep copy of the whole table per item it wrote, for good,
and a cancelled transaction swapped a copy in, leaving stream readers on a shard that no longer receives records."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
import urllib.request
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import boto3
import pytest
from botocore.exceptions import ClientError

from kilo_dev.localstack import MotoServer
from kilo_dev.streams import StreamReader
from tests.e2e.liveness import alive

pytestmark = pytest.mark.e2e
TRANSACTIONS = 10


def start(tmp_path: Path, module: str) -> MotoServer:
    server = MotoServer(tmp_path / f"{module}.log", module=module)
    server.start()
    return server


@pytest.fixture
def local_moto(tmp_path: Path) -> Iterator[MotoServer]:
    server = start(tmp_path, "kilo_dev.moto_server")
    try:
        yield server
    finally:
        server.stop()


@pytest.fixture
def plain_moto(tmp_path: Path) -> Iterator[MotoServer]:
    server = start(tmp_path, "moto.server")
    try:
        yield server
    finally:
        server.stop()


def clients(server: MotoServer) -> tuple[Any, Any]:
    options = {"endpoint_url": server.url, "region_name": "us-east-1", "aws_access_key_id": "local",
               "aws_secret_access_key": "local"}  # fmt: skip
    return boto3.client("dynamodb", **options), boto3.client("dynamodbstreams", **options)


def item(pk: str, sk: str, **extra: str) -> dict[str, Any]:
    return {"pk": {"S": pk}, "sk": {"S": sk}} | {name: {"S": value} for name, value in extra.items()}


def put(pk: str, sk: str, **extra: str) -> dict[str, Any]:
    return {"Put": {"TableName": "t", "Item": item(pk, sk, **extra), "ConditionExpression": "attribute_not_exists(pk)"}}


def traffic(server: MotoServer) -> tuple[Any, list[dict[str, Any]]]:
    """A table with a stream; transactions, one of them cancelled, then one more write; what a reader that started
    before them all reads from the stream."""
    dynamodb, streams = clients(server)
    table = dynamodb.create_table(
        TableName="t",
        KeySchema=[{"AttributeName": "pk", "KeyType": "HASH"}, {"AttributeName": "sk", "KeyType": "RANGE"}],
        AttributeDefinitions=[
            {"AttributeName": "pk", "AttributeType": "S"},
            {"AttributeName": "sk", "AttributeType": "S"},
        ],
        BillingMode="PAY_PER_REQUEST",
        StreamSpecification={"StreamEnabled": True, "StreamViewType": "NEW_AND_OLD_IMAGES"},
    )["TableDescription"]
    reader = StreamReader(streams, table["LatestStreamArn"])
    assert reader.poll() == []
    for n in range(TRANSACTIONS - 1):
        dynamodb.transact_write_items(TransactItems=[put("room", f"ev{n:02d}a"), put("room", f"ev{n:02d}b")])
    with pytest.raises(ClientError, match="TransactionCanceled"):  # the second write's condition fails
        dynamodb.transact_write_items(TransactItems=[put("room", "new"), put("room", "ev00a", note="overwritten")])
    dynamodb.put_item(TableName="t", Item=item("room", "after"))
    return dynamodb, reader.poll()


def tables_alive(server: MotoServer) -> int:
    with urllib.request.urlopen(f"{server.url}/moto-api/data.json", timeout=10) as response:
        return len(json.load(response)["dynamodb"]["Table"])


def test_given_the_local_moto_server_then_transactions_keep_no_copies_and_a_cancellation_is_undone_in_place(
    local_moto: MotoServer,
) -> None:
    dynamodb, records = traffic(local_moto)
    keys = [(r["eventName"], r["dynamodb"]["Keys"]["sk"]["S"]) for r in records]
    assert keys == [("INSERT", f"ev{n:02d}{x}") for n in range(TRANSACTIONS - 1) for x in "ab"] + [("INSERT", "after")]
    assert "Item" not in dynamodb.get_item(TableName="t", Key=item("room", "new"))  # the cancelled put is undone
    assert dynamodb.get_item(TableName="t", Key=item("room", "ev00a"))["Item"] == item("room", "ev00a")
    assert tables_alive(local_moto) == 1  # the table itself, no copies


def test_given_motos_own_server_then_every_transaction_keeps_a_table_copy_and_a_cancellation_blinds_the_stream(
    plain_moto: MotoServer,
) -> None:
    """The cause, shown on moto 5.2.5 as pinned: if this fails after a moto upgrade, moto may have fixed it."""
    _, records = traffic(plain_moto)
    # a deep copy of the whole table for every item of every transaction (two items each), kept for good
    assert tables_alive(plain_moto) == 1 + 2 * TRANSACTIONS
    assert ("INSERT", "after") not in [(r["eventName"], r["dynamodb"]["Keys"]["sk"]["S"]) for r in records]


def test_given_the_process_that_started_it_killed_then_the_local_moto_server_ends_itself(tmp_path: Path) -> None:
    script = (
        "import sys, time\n"
        "from pathlib import Path\n"
        "from kilo_dev.localstack import MotoServer\n"
        "server = MotoServer(Path(sys.argv[1]))\n"
        "server.start()\n"
        "print(server.pid, flush=True)\n"
        "time.sleep(60)\n"
    )
    parent = subprocess.Popen(
        [sys.executable, "-c", script, str(tmp_path / "moto.log")], stdout=subprocess.PIPE, text=True
    )
    try:
        assert parent.stdout is not None
        moto_pid = int(parent.stdout.readline())
        os.kill(parent.pid, signal.SIGKILL)  # it cannot stop its moto server now
        parent.wait(timeout=10)
        deadline = time.monotonic() + 10
        while alive(moto_pid) and time.monotonic() < deadline:
            time.sleep(0.1)
        assert not alive(moto_pid)
    finally:
        if parent.poll() is None:
            parent.kill()
            parent.wait(timeout=10)
