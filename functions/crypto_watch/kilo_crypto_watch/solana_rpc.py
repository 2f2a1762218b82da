"""The ``SolanaRpc`` port over the real ``solana`` client (0.41, async only: ``solana.rpc.async_api.AsyncClient``).

One method, one JSON-RPC request. Transactions are read with ``encoding="base64"`` (exact bytes, decoded by solders)
and ``maxSupportedTransactionVersion=0`` (v0 transactions with lookup tables: their loaded addresses follow the static
keys, as the meta's balances index them). ``chain_transaction`` also reads the ``json`` encoding (Solana's documented
example shape), so a mainnet answer of either kind parses. Every RPC or transport failure becomes ``SolanaRpcError``.
Used inside one ``asyncio.run`` (the scheduled handler; the fast path): ``async with SolanaRpcClient(url) as rpc``.
"""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable, Sequence
from datetime import UTC, datetime
from types import TracebackType
from typing import TypeVar

import httpx2
from solana.exceptions import SolanaRpcException
from solana.rpc.async_api import AsyncClient
from solana.rpc.commitment import Commitment as SolanaCommitment
from solana.rpc.commitment import Confirmed, Finalized
from solana.rpc.core import RPCException
from solders.pubkey import Pubkey
from solders.rpc.errors import (
    BlockCleanedUpMessage,
    BlockNotAvailableMessage,
    BlockStatusNotAvailableYetMessage,
    LongTermStorageSlotSkippedMessage,
    MinContextSlotNotReachedMessage,
    SlotSkippedMessage,
)
from solders.signature import Signature
from solders.transaction import VersionedTransaction
from solders.transaction_status import (
    EncodedConfirmedTransactionWithStatusMeta,
    TransactionConfirmationStatus,
    TransactionDetails,
    UiCompiledInstruction,
    UiConfirmedBlock,
    UiRawMessage,
    UiTransaction,
    UiTransactionTokenBalance,
)

from kilo_crypto_watch.model import ChainConfig, ObservedTransfer, RunReport
from kilo_crypto_watch.ports import (
    SIGNATURES_PAGE,
    ChainTransaction,
    Commitment,
    CursorStore,
    Head,
    Instruction,
    MalformedTransactionIdError,
    PaymentSink,
    ReferenceSource,
    SignatureInfo,
    SignatureStatus,
    SolanaNodeBehindError,
    SolanaRpcError,
    TokenBalance,
)
from kilo_crypto_watch.solana import SolanaWatcher, inspect

T = TypeVar("T")
CONFIRMED: SolanaCommitment = Confirmed
# getBlock's (and getBlockTime's) answers that show no block, proving nothing (Agave's -32004, -32001, -32007, -32009,
# -32014)
BLOCK_NOT_SHOWN = (
    BlockNotAvailableMessage,
    BlockCleanedUpMessage,
    SlotSkippedMessage,
    LongTermStorageSlotSkippedMessage,
    BlockStatusNotAvailableYetMessage,
)
# the slots after a skipped slot searched for the next finalized block (getBlocks); a run of skipped slots is a few
# leaders' 4 slots at most in practice: none found this far (a backend's ledger hole) proves nothing this run
NEXT_BLOCK_SLOTS = 100
B58_ALPHABET = "123456789ABCDEFGHJKLMNPQRSTUVWXYZabcdefghijkmnopqrstuvwxyz"


class SolanaRpcClient:
    def __init__(self, url: str, timeout_seconds: float = 10.0) -> None:
        self._client = AsyncClient(url, timeout=timeout_seconds)

    async def __aenter__(self) -> SolanaRpcClient:
        return self

    async def __aexit__(
        self, kind: type[BaseException] | None, error: BaseException | None, trace: TracebackType | None
    ) -> None:
        await self._client.close()

    async def head(self) -> Head:
        response = await self._request(self._client.get_latest_blockhash(CONFIRMED))
        return Head(response.context.slot, str(response.value.blockhash))

    async def slot(self, commitment: Commitment) -> int:
        response = await self._request(self._client.get_slot(Finalized if commitment == "finalized" else Confirmed))
        return int(response.value)

    async def signatures(
        self,
        address: str,
        *,
        before: str | None = None,
        until: str | None = None,
        limit: int = SIGNATURES_PAGE,
        min_slot: int | None = None,
    ) -> Sequence[SignatureInfo]:
        response = await self._request(
            self._client.get_signatures_for_address(
                Pubkey.from_string(address),
                before=Signature.from_string(before) if before else None,
                until=Signature.from_string(until) if until else None,
                limit=limit,
                commitment=CONFIRMED,
                min_context_slot=min_slot,
            )
        )
        return [SignatureInfo(str(item.signature), item.slot, item.err is not None) for item in response.value]

    async def transaction(self, signature: str) -> ChainTransaction | None:
        response = await self._request(
            self._client.get_transaction(
                Signature.from_string(signature),
                encoding="base64",
                commitment=CONFIRMED,
                max_supported_transaction_version=0,
            )
        )
        return None if response.value is None else chain_transaction(response.value)

    async def statuses(self, signatures: Sequence[str]) -> Sequence[SignatureStatus | None]:
        response = await self._request(
            self._client.get_signature_statuses(
                [Signature.from_string(signature) for signature in signatures], search_transaction_history=True
            )
        )
        return [
            None
            if status is None
            else SignatureStatus(
                slot=status.slot,
                failed=status.err is not None,
                finalized=status.confirmation_status == TransactionConfirmationStatus.Finalized,
            )
            for status in response.value
        ]

    async def block_hash(self, slot: int) -> str:
        response = await self._request(
            self._client.get_block(
                slot,
                transaction_details=TransactionDetails.None_,
                rewards=False,
                commitment=CONFIRMED,
                max_supported_transaction_version=0,
            )
        )
        return str(response.value.blockhash)

    async def block_time(self, slot: int) -> datetime | None:
        # a null, or an answer that shows no block (BLOCK_NOT_SHOWN: -32004 not available, -32009 skipped, ...),
        # gives no time: the payment's time is unknown (D397). Any other error (-32603, a rate limit sent as a
        # JSON-RPC error, a provider's storage failing) fails the run, as a transport failure does: the next run
        # asks again, where a None would be recorded for good (review rcr)
        response = await self._request(_unless_refused(self._client.get_block_time(slot), BLOCK_NOT_SHOWN))
        if response is None or response.value is None:
            return None
        return datetime.fromtimestamp(response.value, UTC)

    async def finalized_signatures(self, slot: int) -> Sequence[str] | None:
        block = await self._finalized_block(slot, TransactionDetails.Signatures, any_refusal=True)
        return None if block is None else [str(signature) for signature in block.signatures or ()]

    async def next_finalized_block(self, slot: int) -> int | None:
        # getBlocks' commitment is finalized by default (solana 0.41 sends none); its end is capped at the root. Any
        # JSON-RPC error answer (no getBlocks at the provider, -32601; "BigTable query failed", -32602) shows no block
        # there: None, the proof not made (review rs3); a transport failure is the run's, as for every other call
        response = await self._request(_unless_refused(self._client.get_blocks(slot + 1, slot + NEXT_BLOCK_SLOTS)))
        return min(response.value) if response is not None and response.value else None

    async def finalized_blocks(self, first: int, last: int) -> Sequence[int] | None:
        # getBlocks as ``next_finalized_block`` reads it: finalized by default, its end capped at the root; a JSON-RPC
        # error answer shows nothing (None), a transport failure is the caller's ``SolanaRpcError``
        response = await self._request(_unless_refused(self._client.get_blocks(first, last)))
        return None if response is None else sorted(int(slot) for slot in response.value)

    async def finalized_parent(self, slot: int) -> int | None:
        # the proof's last step: any JSON-RPC error answer proves nothing, as for getBlocks (review rs3)
        block = await self._finalized_block(slot, TransactionDetails.None_, any_refusal=True)
        return None if block is None else int(block.parent_slot)

    async def _finalized_block(
        self, slot: int, details: TransactionDetails, *, any_refusal: bool = False
    ) -> UiConfirmedBlock | None:
        """``getBlock(slot, finalized)``; None when the server does not show it (BLOCK_NOT_SHOWN; with
        ``any_refusal``, any JSON-RPC error answer); a transport failure or an unreadable answer -> ``SolanaRpcError``
        (``_request``)."""
        only = None if any_refusal else BLOCK_NOT_SHOWN
        response = await self._request(
            _unless_refused(
                self._client.get_block(
                    slot,
                    transaction_details=details,
                    rewards=False,
                    commitment=Finalized,
                    max_supported_transaction_version=0,
                ),
                only,
            )
        )
        return None if response is None else response.value

    async def _request(self, call: Awaitable[T]) -> T:
        """One request; the provider raises ``RPCException`` for a JSON-RPC error and ``SolanaRpcException`` for the
        transport (httpx2), both mapped here, the one place."""
        try:
            return await call
        except RPCException as exc:
            if exc.args and isinstance(exc.args[0], MinContextSlotNotReachedMessage):
                raise SolanaNodeBehindError(f"solana rpc: {exc}") from exc
            raise SolanaRpcError(f"solana rpc: {exc}") from exc
        except (SolanaRpcException, httpx2.HTTPError) as exc:
            raise SolanaRpcError(f"solana rpc: {exc}") from exc
        except BaseException as exc:
            if not _is_panic(exc):
                raise
            # an answer solders cannot read (a -32016 without its ``data``, say): a Rust panic surfaces as pyo3's
            # PanicException, a BaseException that no ``except Exception`` catches; it is this chain's failure alone
            raise SolanaRpcError(f"solana rpc: an answer the client could not read ({exc})") from exc


async def _unless_refused(call: Awaitable[T], only: tuple[type, ...] | None = None) -> T | None:
    """``call``'s answer; None for a JSON-RPC error answer (``only``: one whose message is of these solders error
    message types). A transport failure, an unreadable answer or another error goes on to ``_request``'s mapping."""
    try:
        return await call
    except RPCException as exc:
        if only is None or (exc.args and isinstance(exc.args[0], only)):
            return None
        raise


def _is_panic(exc: BaseException) -> bool:
    """pyo3's ``PanicException`` (module ``pyo3_runtime``, not importable: its type is made on first use)."""
    return type(exc).__module__ == "pyo3_runtime" and type(exc).__name__ == "PanicException"


def chain_transaction(value: EncodedConfirmedTransactionWithStatusMeta) -> ChainTransaction:
    """``getTransaction``'s result (base64 or json encoding) as the watcher's ``ChainTransaction``."""
    encoded = value.transaction
    meta = encoded.meta
    if meta is None:
        raise SolanaRpcError("solana rpc: a transaction without meta (the node keeps no status for it)")
    transaction = encoded.transaction
    if isinstance(transaction, VersionedTransaction):
        message = transaction.message
        keys = [str(key) for key in message.account_keys]
        signer_count = message.header.num_required_signatures
        signature = str(transaction.signatures[0])
        compiled = [(ix.program_id_index, list(ix.accounts), bytes(ix.data)) for ix in message.instructions]
    elif isinstance(transaction, UiTransaction) and isinstance(transaction.message, UiRawMessage):
        raw = transaction.message
        keys = [str(key) for key in raw.account_keys]
        signer_count = raw.header.num_required_signatures
        signature = str(transaction.signatures[0])
        compiled = [
            (ix.program_id_index, list(ix.accounts), b58decode(ix.data))
            for ix in raw.instructions
            if isinstance(ix, UiCompiledInstruction)
        ]
    else:
        raise SolanaRpcError(f"solana rpc: unexpected transaction encoding {type(transaction).__name__}")
    loaded = meta.loaded_addresses
    if loaded is not None:
        keys += [str(key) for key in loaded.writable] + [str(key) for key in loaded.readonly]
    return ChainTransaction(
        signature=signature,
        slot=value.slot,
        block_time=None if value.block_time is None else datetime.fromtimestamp(value.block_time, UTC),
        failed=meta.err is not None,
        account_keys=tuple(keys),
        signer_count=signer_count,
        instructions=tuple(
            Instruction(keys[program], tuple(keys[index] for index in accounts), data)
            for program, accounts, data in compiled
        ),
        pre_balances=tuple(meta.pre_balances),
        post_balances=tuple(meta.post_balances),
        pre_token_balances=_token_balances(meta.pre_token_balances),
        post_token_balances=_token_balances(meta.post_token_balances),
    )


def _token_balances(balances: Sequence[UiTransactionTokenBalance] | None) -> tuple[TokenBalance, ...]:
    return tuple(
        TokenBalance(
            account_index=balance.account_index,
            mint=str(balance.mint),
            owner=None if balance.owner is None else str(balance.owner),
            amount=int(balance.ui_token_amount.amount),
        )
        for balance in balances or ()
    )


def b58encode(data: bytes) -> str:
    """Base58 (Bitcoin alphabet): leading zero bytes become "1"s."""
    number = int.from_bytes(data, "big")
    text = ""
    while number:
        number, remainder = divmod(number, 58)
        text = B58_ALPHABET[remainder] + text
    return "1" * (len(data) - len(data.lstrip(b"\0"))) + text


def b58decode(text: str) -> bytes:
    """Base58 (Bitcoin alphabet), as the ``json`` encoding writes instruction data."""
    number = 0
    for char in text:
        number = number * 58 + B58_ALPHABET.index(char)
    body = number.to_bytes((number.bit_length() + 7) // 8, "big") if number else b""
    return b"\0" * (len(text) - len(text.lstrip("1"))) + body


async def watch(
    config: ChainConfig,
    cursors: CursorStore,
    sink: PaymentSink,
    references: ReferenceSource,
    timeout_seconds: float = 10.0,
    time_left: Callable[[], float] | None = None,
) -> RunReport:
    """One watcher run on one Solana chain over its RPC (the scheduled handler's call, inside ``asyncio.run``), with
    the watcher's own cap on the transactions a run reads (``SolanaWatcher.max_transactions``) and, given
    ``time_left`` (seconds the invocation has left), its time budget (``SolanaWatcher.time_left``)."""
    async with SolanaRpcClient(config.rpc_url, timeout_seconds) as rpc:
        return await SolanaWatcher(config, rpc, cursors, sink, references, time_left=time_left).run()


class SolanaTransactionInspector:
    """The fast path's ``TransactionInspector`` for one Solana chain: a customer's signature -> the merchant credits
    in it (confirmed), as the watcher would record them. Synchronous for the API handler: one ``asyncio.run`` each."""

    def __init__(
        self, config: ChainConfig, timeout_seconds: float = 10.0, references: ReferenceSource | None = None
    ) -> None:
        self._config = config
        self._timeout = timeout_seconds
        self._references = references

    def transfers(self, tx_id: str) -> Sequence[ObservedTransfer]:
        try:
            Signature.from_string(tx_id)
        except ValueError as exc:
            raise MalformedTransactionIdError(f"{tx_id!r} is not a Solana signature (base-58, 64 bytes)") from exc
        return asyncio.run(self._transfers(tx_id))

    async def _transfers(self, tx_id: str) -> list[ObservedTransfer]:
        async with SolanaRpcClient(self._config.rpc_url, self._timeout) as rpc:
            watched = self._references.active_references(self._config.key) if self._references else ()
            return await inspect(rpc, self._config, tx_id, frozenset(watched))
