"""A real EVM chain for tests: one anvil node per pytest worker (session), the committed test contracts deployed once,
and every test on its own copy of that state (``evm_snapshot`` before, ``evm_revert`` after).

A plugin of the root conftest (``pytest_plugins``): every test may ask for ``chain``.
anvil runs with 4 slots per epoch: its ``finalized`` tag trails the head by 8 blocks (two epochs).
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any, Self

import pytest
from web3 import HTTPProvider, Web3

from kilo_crypto_watch.model import ChainConfig
from kilo_dev import contracts
from kilo_dev.anvil import DEV_ACCOUNTS, Anvil

FINALITY_LAG = 8  # blocks between anvil's head and its finalized tag with --slots-in-an-epoch 4
MERCHANT = DEV_ACCOUNTS[5]
PAYER = DEV_ACCOUNTS[1]
OTHER = DEV_ACCOUNTS[2]
USDC = 10**6  # one USDC in atomic units
ETHER = 10**18


@dataclass
class Deployed:
    node: Anvil
    usdc: str
    aggregator: str


@dataclass
class Chain:
    """The chain as a test drives it: payments, mining, reorgs; and the watcher's ChainConfig for it."""

    node: Anvil
    w3: Web3
    usdc: str
    aggregator: str

    def config(self, **overrides: Any) -> ChainConfig:
        values: dict[str, Any] = {
            "key": "ethereum",
            "kind": "evm",
            "rpc_url": self.node.url,
            "merchant_address": MERCHANT,
            "usdc": self.usdc,
            "native": "ETH",
            "chain_id": self.node.chain_id,
            "start_block": self.head() + 1,
        }
        values.update(overrides)
        return ChainConfig(**values)

    def head(self) -> int:
        return self.w3.eth.block_number

    def mine(self, blocks: int = 1) -> None:
        self.node.mine(blocks)

    def token(self) -> Any:
        return self.w3.eth.contract(address=Web3.to_checksum_address(self.usdc), abi=contracts.load("TestUSDC")["abi"])

    def mint(self, to: str, amount: int) -> str:
        return self._wait(self.token().functions.mint(to, amount).transact({"from": DEV_ACCOUNTS[0]}))

    def pay_usdc(self, sender: str, to: str, amount: int, gas: int | None = None) -> str:
        params: dict[str, Any] = {"from": sender}
        if gas is not None:
            params["gas"] = gas  # skips estimation: a transfer that reverts is still mined (status 0)
        return self._wait(self.token().functions.transfer(to, amount).transact(params))  # type: ignore[arg-type]

    def pay_eth(self, sender: str, to: str, wei: int) -> str:
        return self._wait(self.w3.eth.send_transaction({"from": sender, "to": to, "value": wei}))  # type: ignore[typeddict-item]

    def receipt(self, tx_hash: str) -> Any:
        return self.w3.eth.get_transaction_receipt(tx_hash)  # type: ignore[arg-type]

    def block_hash(self, number: int) -> str:
        return "0x" + bytes(self.w3.eth.get_block(number)["hash"]).hex()

    def _wait(self, tx_hash: Any) -> str:
        self.w3.eth.wait_for_transaction_receipt(tx_hash, timeout=10)
        return "0x" + bytes(tx_hash).hex()


def deploy(w3: Web3, name: str, *args: Any) -> str:
    compiled = contracts.load(name)
    factory = w3.eth.contract(abi=compiled["abi"], bytecode=compiled["bytecode"])
    tx_hash = factory.constructor(*args).transact({"from": DEV_ACCOUNTS[0]})
    address = w3.eth.wait_for_transaction_receipt(tx_hash, timeout=10)["contractAddress"]
    return str(address)


@pytest.fixture(scope="session")
def anvil_session() -> Iterator[Deployed]:
    """One anvil node per worker with the test contracts deployed (an ETH/USD feed at $3,000.00, 8 decimals)."""
    with Anvil(slots_in_an_epoch=4) as node:
        w3 = Web3(HTTPProvider(node.url))
        usdc = deploy(w3, "TestUSDC")
        aggregator = deploy(w3, "TestAggregator", 8, "ETH / USD", 3_000 * 10**8)
        yield Deployed(node, usdc, aggregator)


@pytest.fixture
def chain(anvil_session: Deployed) -> Iterator[Chain]:
    """The session's chain, restored after the test (evm_snapshot / evm_revert)."""
    node = anvil_session.node
    snapshot = node.call("evm_snapshot")
    w3 = Web3(HTTPProvider(node.url))
    yield Chain(node, w3, anvil_session.usdc, anvil_session.aggregator)
    assert node.call("evm_revert", snapshot) is True


class JsonRpcProxy:
    """A JSON-RPC proxy on 127.0.0.1 (a free port, a thread of the test) in front of anvil: ``answer`` decides what
    the client gets (this one forwards everything); stopped by the test that entered it."""

    def __init__(self, upstream: str) -> None:
        import threading  # noqa: PLC0415
        from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer  # noqa: PLC0415

        self.upstream = upstream
        proxy = self

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self) -> None:
                body = self.rfile.read(int(self.headers["Content-Length"]))
                answer = proxy.answer(body)
                self.send_response(200)
                self.send_header("Content-Type", "application/json")
                self.send_header("Content-Length", str(len(answer)))
                self.end_headers()
                self.wfile.write(answer)

            def log_message(self, format: str, *args: Any) -> None:
                return

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.thread = threading.Thread(target=self.server.serve_forever, daemon=True)

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.server.server_address[1]}"

    def answer(self, body: bytes) -> bytes:
        return self.forward(body)

    def forward(self, body: bytes) -> bytes:
        import urllib.request  # noqa: PLC0415

        forwarded = urllib.request.Request(self.upstream, body, {"Content-Type": "application/json"})
        with urllib.request.urlopen(forwarded, timeout=10) as response:
            return bytes(response.read())

    def __enter__(self) -> Self:
        self.thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.server.shutdown()
        self.server.server_close()
        self.thread.join(timeout=5)


class RangeLimitProxy(JsonRpcProxy):
    """A proxy that refuses ``eth_getLogs`` over more than ``limit`` blocks, as hosted providers do (alone or inside
    a batch: that element answers the error), and records every ``eth_getLogs`` range it was asked
    (``(from, to, refused)``). Everything else goes through unchanged."""

    def __init__(self, upstream: str, limit: int) -> None:
        super().__init__(upstream)
        self.limit = limit
        self.ranges: list[tuple[int, int, bool]] = []

    def answer(self, body: bytes) -> bytes:
        import json  # noqa: PLC0415

        request = json.loads(body)
        if isinstance(request, dict):
            refusal = self.refusal(request)
            return json.dumps(refusal).encode() if refusal else self.forward(body)
        refusals = [self.refusal(element) for element in request]  # a batch: each eth_getLogs answered on its own
        rest = [element for element, refusal in zip(request, refusals, strict=True) if refusal is None]
        answers = json.loads(self.forward(json.dumps(rest).encode())) if rest else []
        return json.dumps([refusal for refusal in refusals if refusal] + answers).encode()

    def refusal(self, request: dict[str, Any]) -> dict[str, Any] | None:
        """The error answer to ``request`` when it is an ``eth_getLogs`` over more than ``limit`` blocks."""
        if request.get("method") != "eth_getLogs":
            return None
        query = request["params"][0]
        first, last = int(query["fromBlock"], 16), int(query["toBlock"], 16)
        refused = last - first + 1 > self.limit
        self.ranges.append((first, last, refused))
        if not refused:
            return None
        error = {"code": -32005, "message": f"query exceeds max block range {self.limit}"}
        return {"jsonrpc": "2.0", "id": request.get("id"), "error": error}


class LaggingLogsProxy(JsonRpcProxy):
    """A load-balanced provider whose backend answering ``eth_getLogs`` is at height ``head`` while the one answering
    everything else is up to date: a request or batch holding ``eth_getLogs`` is answered as a node at ``head`` does -
    no block above it (null), and the logs of a range reaching past it only up to it, with no error (anvil, geth:
    go-ethereum#24078); a range starting above it, no logs. ``head`` None: every backend up to date."""

    def __init__(self, upstream: str, head: int | None = None) -> None:
        super().__init__(upstream)
        self.head = head

    def answer(self, body: bytes) -> bytes:
        import json  # noqa: PLC0415

        request = json.loads(body)
        batch = request if isinstance(request, list) else [request]
        if self.head is None or not any(element.get("method") == "eth_getLogs" for element in batch):
            return self.forward(body)
        answers = [self.behind(element, self.head) for element in batch]
        rest = [element for element, answer in zip(batch, answers, strict=True) if answer is None]
        forwarded = json.loads(self.forward(json.dumps(rest).encode())) if rest else []
        merged = [answer for answer in answers if answer is not None] + forwarded
        return json.dumps(merged if isinstance(request, list) else merged[0]).encode()

    @staticmethod
    def behind(request: dict[str, Any], head: int) -> dict[str, Any] | None:
        """What a node at ``head`` answers itself (None: forward ``request``, its range clipped to ``head``)."""
        method, params = request.get("method"), request.get("params", [])
        nothing: dict[str, Any] = {"jsonrpc": "2.0", "id": request.get("id"), "result": None}
        if method == "eth_getBlockByNumber" and params[0].startswith("0x") and int(params[0], 16) > head:
            return nothing
        if method == "eth_getLogs":
            query = params[0]
            if int(query["fromBlock"], 16) > head:
                return {**nothing, "result": []}
            query["toBlock"] = hex(min(int(query["toBlock"], 16), head))
        return None
