"""The moto server and anvil serve on a port bound for them at once (moto: a socket bound here and handed over; anvil:
port 0, read from what it prints), never on one picked first and bound later: meanwhile another process may take it,
and another helper's server found listening there would answer in their place. Here the old way's pick is made to
land on such a foreign server."""

from __future__ import annotations

import json
import threading
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler
from pathlib import Path

import boto3
import pytest

from kilo_dev import anvil, localstack
from kilo_dev.anvil import Anvil
from kilo_dev.localstack import MotoServer
from kilo_dev.processes import LoopbackServer

pytestmark = pytest.mark.e2e


class Foreign(BaseHTTPRequestHandler):
    """Another helper's server: answers anything with 200 (moto's readiness probe) and eth_chainId with anvil's."""

    requests: list[str] = []  # noqa: RUF012 - one list per test (the fixture clears it)
    lock = threading.Lock()

    def log_message(self, *args: object) -> None:
        pass

    def _answer(self, body: bytes) -> None:
        with self.lock:
            self.requests.append(self.path)
        self.send_response(200)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def do_GET(self) -> None:
        self._answer(b"{}")

    def do_POST(self) -> None:
        self.rfile.read(int(self.headers.get("Content-Length", 0)))
        self._answer(json.dumps({"jsonrpc": "2.0", "id": 1, "result": hex(anvil.CHAIN_ID)}).encode())


@pytest.fixture
def foreign(monkeypatch: pytest.MonkeyPatch) -> Iterator[int]:
    """A foreign server's port, which any port picked before binding would now be."""
    Foreign.requests = []
    server = LoopbackServer(Foreign, "foreign")
    server.start()
    port = int(server.server.server_address[1])
    monkeypatch.setattr(localstack, "free_port", lambda: port)
    monkeypatch.setattr(anvil, "free_port", lambda: port, raising=False)
    yield port
    server.stop()


def test_given_a_foreign_server_on_the_port_a_pick_would_give_then_the_moto_server_serves_on_its_own(
    foreign: int, tmp_path: Path
) -> None:
    server = MotoServer(tmp_path / "moto.log")
    server.start()
    try:
        assert server.port != foreign
        dynamodb = boto3.client("dynamodb", endpoint_url=server.url, region_name="us-east-1",
                                aws_access_key_id="local", aws_secret_access_key="local")  # fmt: skip
        assert dynamodb.list_tables()["TableNames"] == []  # moto answers, not the foreign server
        assert Foreign.requests == []
    finally:
        server.stop()
    assert "Address already in use" not in (tmp_path / "moto.log").read_text()


def test_given_a_foreign_server_on_the_port_a_pick_would_give_then_anvil_serves_on_its_own(
    foreign: int, tmp_path: Path
) -> None:
    with Anvil(log_path=tmp_path / "anvil.log") as node:
        assert node.port != foreign
        node.mine(3)
        assert node.head() == 3  # anvil answers, not the foreign server
    assert Foreign.requests == []


def test_given_no_log_path_then_anvils_output_is_a_temporary_file_deleted_on_stop() -> None:
    node = Anvil().start()
    try:
        temporary = node._temporary_log
        assert temporary is not None
        assert f"Listening on 127.0.0.1:{node.port}" in temporary.read_text()
    finally:
        node.stop()
    assert not temporary.exists()
