"""The web3.py adapter of ``EvmRpc`` (ports.py): JSON-RPC over web3's HTTPProvider, batched where the watcher reads many
blocks or receipts at once, every request counted (``calls``) for the run report and the benchmark.

The provider's raw answers are used (``make_request`` / ``make_batch_request``) rather than web3's formatted ones: a
batch in which one element is null (a block above the head) would make web3 raise for the whole batch, and the watcher
compares hashes as the node sends them (0x-hex, lower case). Errors are mapped here, once: a JSON-RPC error to
``eth_getLogs``, or an HTTP 4xx/5xx answer to its batch (``logs_beside``: the logs and the block at the range's end,
one batch), is a refused range (``RpcRangeError``: the watcher halves its chunk); anything else that fails is
``RpcUnavailableError`` (the run fails; the schedule retries it).
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any, Final

import requests
from web3 import HTTPProvider
from web3.types import RPCEndpoint

from kilo_crypto_watch.ports import (
    BlockRef,
    BlockTag,
    EvmBlock,
    EvmLog,
    EvmReceipt,
    EvmTransaction,
    RpcRangeError,
    RpcUnavailableError,
)

DEFAULT_BATCH: Final = 100  # JSON-RPC requests per HTTP batch (providers cap batches; 100 is accepted widely)
DEFAULT_TIMEOUT_S: Final = 10.0


def _int(value: Any) -> int:
    return int(value, 16) if isinstance(value, str) else int(value)


def _checksum(address: str | None) -> str | None:
    if address is None:
        return None
    from eth_utils.address import to_checksum_address  # noqa: PLC0415

    return str(to_checksum_address(address))


def _transaction(raw: dict[str, Any]) -> EvmTransaction:
    block_number = raw.get("blockNumber")
    return EvmTransaction(
        hash=str(raw["hash"]).lower(),
        sender=str(_checksum(raw["from"])),
        to=_checksum(raw.get("to")),
        value=_int(raw.get("value", "0x0")),
        input=str(raw.get("input", "0x")).lower(),
        block_number=_int(block_number) if block_number is not None else None,
        block_hash=str(raw["blockHash"]).lower() if raw.get("blockHash") else None,
    )


def _log(raw: dict[str, Any]) -> EvmLog:
    return EvmLog(
        address=str(_checksum(raw["address"])),
        topics=tuple(str(topic).lower() for topic in raw.get("topics", [])),
        data=str(raw.get("data", "0x")).lower(),
        block_number=_int(raw["blockNumber"]),
        block_hash=str(raw["blockHash"]).lower(),
        tx_hash=str(raw["transactionHash"]).lower(),
        log_index=_int(raw["logIndex"]),
    )


def _receipt(raw: dict[str, Any]) -> EvmReceipt:
    return EvmReceipt(
        tx_hash=str(raw["transactionHash"]).lower(),
        succeeded=_int(raw.get("status", "0x1")) == 1,
        block_number=_int(raw["blockNumber"]),
        block_hash=str(raw["blockHash"]).lower(),
        logs=tuple(_log(entry) for entry in raw.get("logs", [])),
    )


def _block(raw: dict[str, Any]) -> EvmBlock:
    return EvmBlock(
        number=_int(raw["number"]),
        hash=str(raw["hash"]).lower(),
        timestamp=_int(raw["timestamp"]),
        transactions=tuple(_transaction(tx) for tx in raw.get("transactions", []) if isinstance(tx, dict)),
        parent_hash=str(raw.get("parentHash") or "").lower(),
    )


class Web3EvmRpc:
    """EvmRpc over web3.py's HTTPProvider (one per chain; reused across warm invocations)."""

    def __init__(self, url: str, timeout_s: float = DEFAULT_TIMEOUT_S, batch_size: int = DEFAULT_BATCH) -> None:
        self.provider = HTTPProvider(url, request_kwargs={"timeout": timeout_s})
        self.batch_size = batch_size
        self._calls = 0

    @property
    def calls(self) -> int:
        return self._calls

    # --- transport ----------------------------------------------------------------------------------------------------
    def _request(self, method: str, params: list[Any]) -> Any:
        self._calls += 1
        try:
            answer = self.provider.make_request(RPCEndpoint(method), params)
        except (requests.RequestException, OSError) as exc:
            raise RpcUnavailableError(f"{method}: {exc}") from exc
        if "error" in answer:
            error = answer["error"]
            message = error.get("message", error) if isinstance(error, dict) else error
            raise RpcUnavailableError(f"{method}: {message}")
        return answer.get("result")

    def _batch(self, method: str, params: Sequence[list[Any]]) -> list[Any]:
        return self._mixed([(method, p) for p in params])

    def _mixed(self, requests_: Sequence[tuple[str, list[Any]]]) -> list[Any]:
        """The answers to ``requests_`` (any methods), in order, ``batch_size`` of them per HTTP batch."""
        results: list[Any] = []
        for start in range(0, len(requests_), self.batch_size):
            part = list(requests_[start : start + self.batch_size])
            names = "/".join(sorted({method for method, _ in part}))
            self._calls += len(part)
            try:
                answers = self.provider.make_batch_request([(RPCEndpoint(method), p) for method, p in part])
            except (requests.RequestException, OSError) as exc:
                raise RpcUnavailableError(f"{names} batch: {exc}") from exc
            if not isinstance(answers, list):
                error = answers.get("error") if isinstance(answers, dict) else answers
                raise RpcUnavailableError(f"{names} batch refused: {error}")
            by_id = sorted(answers, key=lambda a: _int(a.get("id", 0)))
            for answer in by_id:
                if "error" in answer:
                    raise RpcUnavailableError(f"{names}: {answer['error']}")
                results.append(answer.get("result"))
        return results

    # --- EvmRpc -------------------------------------------------------------------------------------------------------
    def block_ref(self, tag: BlockTag) -> BlockRef:
        raw = self._request("eth_getBlockByNumber", [tag, False])
        if raw is None:
            raise RpcUnavailableError(f"the node has no {tag} block")
        return BlockRef(_int(raw["number"]), str(raw["hash"]).lower(), _int(raw["timestamp"]))

    def block_hashes(self, numbers: Sequence[int]) -> dict[int, str | None]:
        return {n: (header.hash if header else None) for n, header in self.headers(numbers).items()}

    def headers(self, numbers: Sequence[int]) -> dict[int, BlockRef | None]:
        raws = self._batch("eth_getBlockByNumber", [[hex(n), False] for n in numbers])
        return {
            n: (BlockRef(_int(raw["number"]), str(raw["hash"]).lower(), _int(raw["timestamp"])) if raw else None)
            for n, raw in zip(numbers, raws, strict=True)
        }

    def blocks(self, first: int, last: int) -> list[EvmBlock]:
        numbers = list(range(first, last + 1))
        raws = self._batch("eth_getBlockByNumber", [[hex(n), True] for n in numbers])
        missing = [n for n, raw in zip(numbers, raws, strict=True) if raw is None]
        if missing:
            raise RpcUnavailableError(f"the node has no block {missing[0]} (asked up to {last})")
        return [_block(raw) for raw in raws]

    def logs_beside(
        self, address: str, topics: Sequence[str | None], first: int, last: int
    ) -> tuple[list[EvmLog], str | None]:
        query = {"address": address, "topics": list(topics), "fromBlock": hex(first), "toBlock": hex(last)}
        calls = [(RPCEndpoint("eth_getBlockByNumber"), [hex(last), False]), (RPCEndpoint("eth_getLogs"), [query])]
        self._calls += len(calls)
        try:  # the block first: a backend that has it when asked has it for the logs read after it
            answers = self.provider.make_batch_request(calls)
        except requests.HTTPError as exc:  # a provider refusing the batch for its range, as it refuses eth_getLogs
            raise RpcRangeError(f"eth_getLogs refused: {exc}") from exc
        except (requests.RequestException, OSError) as exc:
            raise RpcUnavailableError(f"eth_getBlockByNumber/eth_getLogs batch: {exc}") from exc
        if not isinstance(answers, list) or len(answers) != len(calls):
            error = answers.get("error") if isinstance(answers, dict) else answers
            raise RpcUnavailableError(f"eth_getBlockByNumber/eth_getLogs batch refused: {error}")
        block, found = sorted(answers, key=lambda a: _int(a.get("id", 0)))
        if "error" in block:
            raise RpcUnavailableError(f"eth_getBlockByNumber: {block['error']}")
        raw = block.get("result")
        if raw is None:  # a backend behind ``last``: whatever its logs answer (some, none, a refusal) vouches nothing
            return [], None
        if "error" in found:
            error = found["error"]
            message = error.get("message", error) if isinstance(error, dict) else error
            raise RpcRangeError(f"eth_getLogs refused: {message}")
        return [_log(entry) for entry in found.get("result") or []], str(raw["hash"]).lower()

    def receipts(self, tx_hashes: Sequence[str]) -> dict[str, EvmReceipt]:
        raws = self._batch("eth_getTransactionReceipt", [[h] for h in tx_hashes])
        return {receipt.tx_hash: receipt for receipt in (_receipt(raw) for raw in raws if raw)}

    def transaction(self, tx_hash: str) -> EvmTransaction | None:
        raw = self._request("eth_getTransactionByHash", [tx_hash])
        return _transaction(raw) if raw else None

    def parent_beside(self, block_hash: str, numbers: Sequence[int]) -> tuple[str | None, dict[int, str | None]]:
        if len(numbers) >= self.batch_size:  # two HTTP batches could reach two backends: the point is one
            raise ValueError(f"parent_beside: {len(numbers)} heights do not fit one batch of {self.batch_size}")
        calls: list[tuple[str, list[Any]]] = [
            ("eth_getBlockByHash", [block_hash, False]),
            *(("eth_getBlockByNumber", [hex(n), False]) for n in numbers),
        ]
        raw, *blocks = self._mixed(calls)
        hashes = {n: (str(block["hash"]).lower() if block else None) for n, block in zip(numbers, blocks, strict=True)}
        return (str(raw["parentHash"]).lower() if raw else None), hashes

    def receipt_beside(self, tx_hash: str, numbers: Sequence[int]) -> tuple[EvmReceipt | None, dict[int, str | None]]:
        if len(numbers) >= self.batch_size:  # two HTTP batches could reach two backends: the point is one
            raise ValueError(f"receipt_beside: {len(numbers)} heights do not fit one batch of {self.batch_size}")
        calls: list[tuple[str, list[Any]]] = [
            ("eth_getTransactionReceipt", [tx_hash]),
            *(("eth_getBlockByNumber", [hex(n), False]) for n in numbers),
        ]
        raw, *blocks = self._mixed(calls)
        hashes = {n: (str(block["hash"]).lower() if block else None) for n, block in zip(numbers, blocks, strict=True)}
        return (_receipt(raw) if raw else None), hashes
