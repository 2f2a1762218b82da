"""A Solana JSON-RPC stand-in for tests, the benchmark and the local stack: ``solders.litesvm`` behind HTTP.

No validator is installable here. LiteSVM is an in-process bank with the System, SPL Token, Associated Token Account
and Memo programs; it executes real transactions but keeps no ledger an RPC could serve. This stand-in is that ledger:
every transaction sent through it lands in its own slot, and it keeps its own index (signature -> transaction, meta,
slot; address -> signatures, oldest first) to answer the methods the real ``solana`` client (0.41,
``solana.rpc.async_api.AsyncClient``) needs for the watcher and for paying:

``getSlot``, ``getBalance``, ``getLatestBlockhash``, ``sendTransaction`` (base64 / base58; preflight unless
``skipPreflight``), ``getSignaturesForAddress`` (``before`` / ``until`` / ``limit``, newest first; ``minContextSlot``
above the bank's slot refused with -32016, as Agave does), ``getTransaction``
(``base64`` or ``json`` encoding, ``maxSupportedTransactionVersion``), ``getSignatureStatuses``, ``getBlock``
(``transactionDetails`` ``none`` or ``signatures``), ``getBlocks``, ``getBlockTime``, ``getHealth``, ``getVersion``.
Block times are ``genesis_time`` plus 400 ms a slot; a slot in ``untimed`` has none in ``getTransaction`` (and
``getSignaturesForAddress``), one in ``timeless`` has none anywhere (``getBlockTime`` null), as a node may answer.

Answers follow mainnet's shapes (Agave's RPC: docs.solana.com/api/http, and solders' serde of
``UiTransactionStatusMeta``, which is Agave's). Commitment: ``processed`` and ``confirmed`` see every landed slot;
``finalized`` lags ``confirmed`` by ``finality_lag`` slots, so finality can be tested. ``forget(signature)`` drops an
unfinalized transaction from the index (a fork that did not survive); LiteSVM's state is not rolled back (tests only
look at the index for it). Its slot is then skipped, as on Agave when the fork that held it dies: ``getBlock`` answers
-32007 "Slot N was skipped, or missing due to ledger jump to recent snapshot" once it is at or below the commitment's
slot, ``getBlocks`` omits it and the next block's ``parentSlot`` is the one before it;
``forget(signature, replaced=True)`` keeps a block at that slot without the signature (another fork's block at the same
slot became final - the rare case). Airdrops fund accounts without indexing a transaction (a faucet, not a payment).

Binds 127.0.0.1 on a free port; whoever starts it stops it (``stop()``, or the PID when run as
``python -m kilo_dev.solana_standin``, which prints ``<port>``). ``calls`` counts the requests served per method
(the benchmark's independent count of RPC calls).
"""

from __future__ import annotations

import argparse
import base64
import json
import threading
from collections import Counter
from collections.abc import Sequence
from dataclasses import dataclass
from decimal import Decimal
from http.server import BaseHTTPRequestHandler
from typing import Any

from solders.hash import Hash
from solders.litesvm import LiteSVM
from solders.pubkey import Pubkey
from solders.token.state import Mint, TokenAccount
from solders.transaction import VersionedTransaction
from solders.transaction_metadata import FailedTransactionMetadata
from solders.transaction_status import (
    TransactionErrorInstructionError,
    TransactionErrorInsufficientFundsForRent,
    TransactionStatus,
)

from kilo_crypto_watch.solana_rpc import b58decode, b58encode
from kilo_dev import processes

TOKEN_PROGRAM = Pubkey.from_string("TokenkegQfeZyiNwAJbNbGKPFXCWuBvf9Ss623VQ5DA")
TOKEN_ACCOUNT_SIZE = 165
GENESIS_TIME = 1_767_225_600  # 2026-01-01T00:00:00Z by default: block times are genesis plus 400 ms per slot
API_VERSION = "2.2.0"
# JSON-RPC error codes Agave uses
INVALID_PARAMS = -32602
METHOD_NOT_FOUND = -32601
SIMULATION_FAILED = -32002
BLOCK_NOT_AVAILABLE = -32004
SLOT_SKIPPED = -32007
UNSUPPORTED_VERSION = -32015
MIN_CONTEXT_SLOT_NOT_REACHED = -32016


class RpcError(Exception):
    def __init__(self, code: int, message: str, data: object = None) -> None:
        super().__init__(message)
        self.code, self.message, self.data = code, message, data


@dataclass
class Landed:
    """One transaction in the stand-in's ledger."""

    signature: str
    slot: int
    transaction: VersionedTransaction
    meta: dict[str, Any]  # mainnet's meta JSON
    err: object  # the error JSON (None: succeeded)
    memo: str | None  # getSignaturesForAddress's memo field ("[len] text; ...")


class SolanaStandin:
    def __init__(self, finality_lag: int = 32, genesis_time: int = GENESIS_TIME) -> None:
        self.finality_lag = finality_lag
        self.genesis_time = genesis_time  # the block time of the first slot (unix seconds)
        self.svm = LiteSVM()
        self.calls: Counter[str] = Counter()
        self._lock = threading.RLock()
        self._slot = self._genesis_slot = self.svm.get_clock().slot
        self._blockhashes: dict[int, str] = {self._slot: str(self.svm.latest_blockhash())}
        self._parents: dict[int, int] = {}
        self._slot_signatures: dict[int, list[str]] = {}
        self._skipped: set[int] = set()  # slots whose block did not survive (forgotten, not replaced)
        # slots whose time getTransaction answers null (Agave's blockTime is null where the node has no time for
        # the slot); in ``timeless`` getBlockTime answers null and getBlock's blockTime is null as well
        self.untimed: set[int] = set()
        self.timeless: set[int] = set()
        self._landed: dict[str, Landed] = {}
        self._by_address: dict[str, list[str]] = {}  # oldest first
        self._http = processes.LoopbackServer(self._handler_class(), "solana-standin")

    # -- lifecycle -------------------------------------------------------------------------------------------------
    @property
    def url(self) -> str:
        return self._http.url

    def start(self) -> SolanaStandin:
        self._http.start()
        return self

    def stop(self) -> None:
        self._http.stop()

    def __enter__(self) -> SolanaStandin:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()

    # -- the chain, for tests ----------------------------------------------------------------------------------------
    @property
    def slot(self) -> int:
        return self._slot

    @property
    def finalized_slot(self) -> int:
        return self._slot - self.finality_lag

    def airdrop(self, address: Pubkey, lamports: int) -> None:
        with self._lock:
            self.svm.airdrop(address, lamports)

    def advance(self, slots: int = 1) -> int:
        """Produce ``slots`` empty slots (time passing; finality catching up). Returns the new slot."""
        with self._lock:
            for _ in range(slots):
                self._next_slot()
            return self._slot

    def finalize(self) -> int:
        """Advance until everything landed so far is finalized."""
        return self.advance(self.finality_lag)

    def forget(self, signature: str, *, replaced: bool = False) -> None:
        """Drop an unfinalized transaction from the index: it was on a fork that did not survive. Its slot is skipped
        (the next block's parent is the slot before it); ``replaced``: a block of another fork at the same slot,
        without it, survives instead."""
        with self._lock:
            landed = self._landed[signature]
            if landed.slot <= self.finalized_slot:
                raise ValueError("a finalized transaction cannot vanish")
            del self._landed[signature]
            self._slot_signatures[landed.slot].remove(signature)
            for key in self._keys(landed.transaction):
                self._by_address[str(key)].remove(signature)
            if replaced or self._slot_signatures[landed.slot]:
                return
            self._skipped.add(landed.slot)
            for child, parent in self._parents.items():
                if parent == landed.slot:
                    self._parents[child] = self._parents.get(landed.slot, landed.slot - 1)

    def blockhash(self, slot: int) -> str:
        return self._blockhashes[slot]

    def transaction(self, signature: str) -> Landed | None:
        return self._landed.get(signature)

    def reset_calls(self) -> None:
        self.calls.clear()

    def rpc_calls(self) -> int:
        return sum(self.calls.values())

    def _next_slot(self) -> int:
        parent = self._slot
        while parent in self._skipped:
            parent = self._parents.get(parent, parent - 1)
        self._slot += 1
        self.svm.warp_to_slot(self._slot)
        self.svm.expire_blockhash()
        self._blockhashes[self._slot] = str(self.svm.latest_blockhash())
        self._parents[self._slot] = parent
        return self._slot

    def _commitment_slot(self, config: dict[str, Any] | None) -> int:
        """The slot of the bank at the request's commitment; a ``minContextSlot`` above it is refused (-32016), as
        Agave refuses it (``RpcCustomError::MinContextSlotNotReached``, ``data.contextSlot`` the bank's slot)."""
        commitment = (config or {}).get("commitment", "finalized")
        if commitment not in {"processed", "confirmed", "finalized"}:
            raise RpcError(INVALID_PARAMS, f"Invalid params: unknown commitment {commitment!r}")
        slot = self.finalized_slot if commitment == "finalized" else self._slot
        min_context_slot = (config or {}).get("minContextSlot")
        if min_context_slot is not None and int(min_context_slot) > slot:
            raise RpcError(
                MIN_CONTEXT_SLOT_NOT_REACHED, "Minimum context slot has not been reached", {"contextSlot": slot}
            )
        return slot

    def block_time(self, slot: int) -> int:
        return self.genesis_time + ((slot - self._genesis_slot) * 2) // 5

    # -- JSON-RPC ---------------------------------------------------------------------------------------------------
    def handle(self, request: dict[str, Any]) -> dict[str, Any]:
        request_id = request.get("id")
        method = request.get("method")
        params = request.get("params") or []
        self.calls[str(method)] += 1
        handler = getattr(self, f"_rpc_{method}", None) if isinstance(method, str) else None
        try:
            if handler is None:
                raise RpcError(METHOD_NOT_FOUND, "Method not found")
            with self._lock:
                result = handler(*params)
        except RpcError as error:
            body: dict[str, Any] = {"code": error.code, "message": error.message}
            if error.data is not None:
                body["data"] = error.data
            return {"jsonrpc": "2.0", "error": body, "id": request_id}
        except (TypeError, ValueError) as error:
            body = {"code": INVALID_PARAMS, "message": f"Invalid params: {error}"}
            return {"jsonrpc": "2.0", "error": body, "id": request_id}
        return {"jsonrpc": "2.0", "result": result, "id": request_id}

    def _context(self) -> dict[str, Any]:
        return {"slot": self._slot, "apiVersion": API_VERSION}

    def _rpc_getHealth(self) -> str:  # noqa: N802 - JSON-RPC method names
        return "ok"

    def _rpc_getVersion(self) -> dict[str, Any]:  # noqa: N802
        return {"solana-core": API_VERSION, "feature-set": 0}

    def _rpc_getSlot(self, config: dict[str, Any] | None = None) -> int:  # noqa: N802
        return self._commitment_slot(config)

    def _rpc_getBalance(self, address: str, config: dict[str, Any] | None = None) -> dict[str, Any]:  # noqa: N802
        return {"context": self._context(), "value": self.svm.get_balance(Pubkey.from_string(address)) or 0}

    def _rpc_getLatestBlockhash(self, config: dict[str, Any] | None = None) -> dict[str, Any]:  # noqa: N802
        value = {"blockhash": str(self.svm.latest_blockhash()), "lastValidBlockHeight": self._slot + 150}
        return {"context": self._context(), "value": value}

    def _rpc_sendTransaction(self, encoded: str, config: dict[str, Any] | None = None) -> str:  # noqa: N802
        config = config or {}
        raw = base64.b64decode(encoded) if config.get("encoding", "base58") == "base64" else b58decode(encoded)
        transaction = VersionedTransaction.from_bytes(raw)
        if not config.get("skipPreflight", False):
            simulated = self.svm.simulate_transaction(transaction)
            if isinstance(simulated, FailedTransactionMetadata):
                meta = simulated.meta()
                raise RpcError(
                    SIMULATION_FAILED,
                    f"Transaction simulation failed: {simulated.err()}",
                    {
                        "err": _error_json(simulated.err()),
                        "logs": meta.logs(),
                        "accounts": None,
                        "unitsConsumed": meta.compute_units_consumed(),
                        "returnData": None,
                        "innerInstructions": None,
                    },
                )
        return self.land(transaction)

    def land(self, transaction: VersionedTransaction) -> str:
        """Execute ``transaction`` in the next slot and index it (what ``sendTransaction`` does after preflight)."""
        with self._lock:
            keys = self._keys(transaction)
            pre, pre_tokens = self._balances(keys)
            result = self.svm.send_transaction(transaction)
            err: object = None
            if isinstance(result, FailedTransactionMetadata):
                error = result.err()
                if not isinstance(error, TransactionErrorInstructionError | TransactionErrorInsufficientFundsForRent):
                    # rejected before execution (bad blockhash, already processed, fee payer cannot pay): never lands
                    raise RpcError(SIMULATION_FAILED, f"Transaction rejected: {error}", {"err": _error_json(error)})
                meta, err = result.meta(), _error_json(error)
            else:
                meta = result
            post, post_tokens = self._balances(keys)
            slot = self._next_slot()
            signature = str(transaction.signatures[0])
            memos = _memos(transaction)
            self._landed[signature] = Landed(
                signature=signature,
                slot=slot,
                transaction=transaction,
                meta={
                    "err": err,
                    "status": {"Ok": None} if err is None else {"Err": err},
                    "fee": meta.fee(),
                    "preBalances": pre,
                    "postBalances": post,
                    "innerInstructions": _inner(meta.inner_instructions()),
                    "logMessages": meta.logs(),
                    "preTokenBalances": pre_tokens,
                    "postTokenBalances": post_tokens,
                    "rewards": [],
                    "loadedAddresses": {"writable": [], "readonly": []},
                    "computeUnitsConsumed": meta.compute_units_consumed(),
                },
                err=err,
                memo="; ".join(f"[{len(memo.encode())}] {memo}" for memo in memos) or None,
            )
            self._slot_signatures.setdefault(slot, []).append(signature)
            for key in keys:
                self._by_address.setdefault(str(key), []).append(signature)
            return signature

    def _keys(self, transaction: VersionedTransaction) -> list[Pubkey]:
        return list(transaction.message.account_keys)

    def _balances(self, keys: Sequence[Pubkey]) -> tuple[list[int], list[dict[str, Any]]]:
        lamports, tokens = [], []
        for index, key in enumerate(keys):
            account = self.svm.get_account(key)
            lamports.append(0 if account is None else account.lamports)
            if account is None or account.owner != TOKEN_PROGRAM or len(account.data) != TOKEN_ACCOUNT_SIZE:
                continue
            state = TokenAccount.from_bytes(bytes(account.data))
            mint_account = self.svm.get_account(state.mint)
            decimals = Mint.from_bytes(bytes(mint_account.data)).decimals if mint_account is not None else 0
            ui = Decimal(state.amount).scaleb(-decimals)
            tokens.append(
                {
                    "accountIndex": index,
                    "mint": str(state.mint),
                    "uiTokenAmount": {
                        "uiAmount": float(ui),
                        "decimals": decimals,
                        "amount": str(state.amount),
                        "uiAmountString": _plain(ui),
                    },
                    "owner": str(state.owner),
                    "programId": str(TOKEN_PROGRAM),
                }
            )
        return lamports, tokens

    def _rpc_getSignaturesForAddress(self, address: str, config: dict[str, Any] | None = None) -> list[dict[str, Any]]:  # noqa: N802
        config = config or {}
        limit = int(config.get("limit") or 1000)
        if not 1 <= limit <= 1000:
            raise RpcError(INVALID_PARAMS, "Invalid limit; max 1000")
        ceiling = self._commitment_slot(config)
        before, until = config.get("before"), config.get("until")
        newest_first = [sig for sig in reversed(self._by_address.get(address, [])) if self._landed[sig].slot <= ceiling]
        if before is not None:
            newest_first = newest_first[newest_first.index(before) + 1 :] if before in newest_first else []
        answer: list[dict[str, Any]] = []
        for signature in newest_first:
            if signature == until or len(answer) == limit:
                break
            landed = self._landed[signature]
            answer.append(
                {
                    "signature": signature,
                    "slot": landed.slot,
                    "err": landed.err,
                    "memo": landed.memo,
                    "blockTime": None if landed.slot in self.untimed | self.timeless else self.block_time(landed.slot),
                    "confirmationStatus": self._confirmation(landed.slot),
                }
            )
        return answer

    def _confirmation(self, slot: int) -> str:
        return "finalized" if slot <= self.finalized_slot else "confirmed"

    def _rpc_getTransaction(self, signature: str, config: dict[str, Any] | str | None = None) -> dict[str, Any] | None:  # noqa: N802
        config = {"encoding": config} if isinstance(config, str) else (config or {})
        landed = self._landed.get(signature)
        if landed is None or landed.slot > self._commitment_slot(config):
            return None
        version = landed.transaction.version()
        legacy = not isinstance(version, int)
        if not legacy and config.get("maxSupportedTransactionVersion") is None:
            raise RpcError(
                UNSUPPORTED_VERSION,
                f"Transaction version ({version}) is not supported by the requesting client. Please try the request "
                'again with the following configuration parameter: "maxSupportedTransactionVersion": 0',
            )
        encoding = config.get("encoding", "json")
        if encoding == "base64":
            encoded: object = [base64.b64encode(bytes(landed.transaction)).decode(), "base64"]
        elif encoding == "json":
            encoded = _json_transaction(landed.transaction)
        else:
            raise RpcError(INVALID_PARAMS, f"Invalid params: encoding {encoding!r} is not served by the stand-in")
        return {
            "slot": landed.slot,
            "transaction": encoded,
            "meta": landed.meta,
            "version": "legacy" if legacy else version,
            "blockTime": None if landed.slot in self.untimed | self.timeless else self.block_time(landed.slot),
        }

    def _rpc_getSignatureStatuses(self, signatures: list[str], config: dict[str, Any] | None = None) -> dict[str, Any]:  # noqa: N802
        if len(signatures) > 256:
            raise RpcError(INVALID_PARAMS, "Too many inputs provided; max 256")
        value: list[dict[str, Any] | None] = []
        for signature in signatures:
            landed = self._landed.get(signature)
            if landed is None:
                value.append(None)
                continue
            finalized = landed.slot <= self.finalized_slot
            value.append(
                {
                    "slot": landed.slot,
                    "confirmations": None if finalized else self._slot - landed.slot,
                    "err": landed.err,
                    "status": {"Ok": None} if landed.err is None else {"Err": landed.err},
                    "confirmationStatus": self._confirmation(landed.slot),
                }
            )
        return {"context": self._context(), "value": value}

    def _rpc_getBlock(self, slot: int, config: dict[str, Any] | str | None = None) -> dict[str, Any]:  # noqa: N802
        config = {"encoding": config} if isinstance(config, str) else (config or {})
        if slot not in self._blockhashes or slot > self._commitment_slot(config):
            raise RpcError(BLOCK_NOT_AVAILABLE, f"Block not available for slot {slot}")
        if slot in self._skipped:
            raise RpcError(SLOT_SKIPPED, f"Slot {slot} was skipped, or missing due to ledger jump to recent snapshot")
        details = config.get("transactionDetails", "full")
        parent = self._parents.get(slot, slot - 1)
        block: dict[str, Any] = {
            "blockhash": self._blockhashes[slot],
            "previousBlockhash": self._blockhashes.get(parent, str(Hash.default())),
            "parentSlot": parent,
            "blockTime": None if slot in self.timeless else self.block_time(slot),
            "blockHeight": slot,
        }
        if details == "signatures":
            block["signatures"] = list(self._slot_signatures.get(slot, []))
        elif details != "none":
            raise RpcError(INVALID_PARAMS, "Invalid params: the stand-in serves transactionDetails none or signatures")
        if config.get("rewards", True):
            block["rewards"] = []
        return block

    def _rpc_getBlockTime(self, slot: int) -> int | None:  # noqa: N802
        """The block's time, as Agave answers: -32004 for a slot with no confirmed block, null where it has none."""
        if slot not in self._blockhashes or slot > self._slot or slot in self._skipped:
            raise RpcError(BLOCK_NOT_AVAILABLE, f"Block not available for slot {slot}")
        return None if slot in self.timeless else self.block_time(slot)

    def _rpc_getBlocks(  # noqa: N802
        self, start: int, end: int | dict[str, Any] | None = None, config: dict[str, Any] | None = None
    ) -> list[int]:
        """The slots in ``[start, end]`` holding a block at the commitment (``finalized`` by default; skipped slots
        omitted; ``end`` capped at the commitment's slot), as Agave answers; a range over 500,000 slots refused."""
        if isinstance(end, dict):
            end, config = None, end
        last = int(start) + 500_000 if end is None else int(end)
        if last - int(start) > 500_000:
            raise RpcError(INVALID_PARAMS, "Slot range too large; max 500000")
        ceiling = min(last, self._commitment_slot(config))
        return [slot for slot in range(max(int(start), self._genesis_slot), ceiling + 1) if slot not in self._skipped]

    def _handler_class(self) -> type[BaseHTTPRequestHandler]:
        standin = self

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self) -> None:
                body = json.loads(self.rfile.read(int(self.headers.get("Content-Length", "0"))) or b"null")
                answer: object
                if isinstance(body, list):
                    answer = [standin.handle(item) for item in body]
                elif isinstance(body, dict):
                    answer = standin.handle(body)
                else:
                    answer = {"jsonrpc": "2.0", "error": {"code": -32600, "message": "Invalid request"}, "id": None}
                payload = json.dumps(answer).encode()
                self.send_response(200)
                self.send_header("Content-Type", "application/json")
                self.send_header("Content-Length", str(len(payload)))
                self.end_headers()
                self.wfile.write(payload)

            def log_message(self, format: str, *args: Any) -> None:
                return None

        return Handler


def _error_json(error: object) -> object:
    """A transaction error as the RPC writes it (``{"InstructionError": [0, {"Custom": 1}]}``), via solders' serde."""
    return json.loads(TransactionStatus(0, None, None, error, None).to_json())["err"]  # type: ignore[arg-type]


def _plain(value: Decimal) -> str:
    return format(value.normalize(), "f")


def _memos(transaction: VersionedTransaction) -> list[str]:
    keys = transaction.message.account_keys
    memo_programs = {"MemoSq4gqABAXKb96qnH8TysNcWxMyWCqXgDLGmfcHr", "Memo1UhkJRfHyvLMcVucJwxXeuD728EqVDDwQDxFMNo"}
    return [
        bytes(ix.data).decode("utf-8", "replace")
        for ix in transaction.message.instructions
        if str(keys[ix.program_id_index]) in memo_programs
    ]


def _inner(inner: Sequence[Sequence[Any]]) -> list[dict[str, Any]]:
    return [
        {
            "index": index,
            "instructions": [
                {
                    "programIdIndex": item.instruction().program_id_index,
                    "accounts": list(item.instruction().accounts),
                    "data": b58encode(bytes(item.instruction().data)),
                    "stackHeight": item.stack_height(),
                }
                for item in items
            ],
        }
        for index, items in enumerate(inner)
        if items
    ]


def _json_transaction(transaction: VersionedTransaction) -> dict[str, Any]:
    message = transaction.message
    header = message.header
    return {
        "signatures": [str(signature) for signature in transaction.signatures],
        "message": {
            "accountKeys": [str(key) for key in message.account_keys],
            "header": {
                "numRequiredSignatures": header.num_required_signatures,
                "numReadonlySignedAccounts": header.num_readonly_signed_accounts,
                "numReadonlyUnsignedAccounts": header.num_readonly_unsigned_accounts,
            },
            "recentBlockhash": str(message.recent_blockhash),
            "instructions": [
                {
                    "programIdIndex": ix.program_id_index,
                    "accounts": list(ix.accounts),
                    "data": b58encode(bytes(ix.data)),
                    "stackHeight": None,
                }
                for ix in message.instructions
            ],
        },
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--finality-lag", type=int, default=32)
    args = parser.parse_args()
    standin = SolanaStandin(finality_lag=args.finality_lag).start()
    print(standin.url.rsplit(":", 1)[1], flush=True)  # the port, for whoever started it
    processes.serve_until_signalled(standin.stop)


if __name__ == "__main__":
    main()
