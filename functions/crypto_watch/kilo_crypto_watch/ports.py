"""The crypto function's ports: between the chain watchers and settlement (and their storage), the price sources, the
wallet store, and each chain's RPC as its watcher needs it (with the data it returns and the errors its adapter
raises). Protocols: adapters and fakes implement them (docs/decisions.md D22)."""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from datetime import datetime
from decimal import Decimal
from functools import partial
from typing import Literal, Protocol, runtime_checkable

from kilo_crypto_watch.model import (
    Asset,
    Bill,
    ChainConfig,
    Cursor,
    LockedRate,
    ObservedTransfer,
    Payment,
    PaymentStatus,
    PendingPayment,
    Quote,
    RateReading,
)


class CursorConflictError(Exception):
    """Another run moved the cursor first (the conditional write lost): this run stops without effect."""


class CursorStore(Protocol):
    def get(self, chain: str) -> Cursor | None: ...

    def put(self, cursor: Cursor, expected: Cursor | None) -> None:
        """Write ``cursor`` if the stored one is still ``expected`` (None: none stored); else CursorConflictError."""
        ...


class PaymentSink(Protocol):
    """Settlement as the watchers see it. Every method is idempotent per payment id."""

    def record_seen(self, transfer: ObservedTransfer) -> None:
        """A credit to a merchant address was seen (or failed): record it, match it to a bill or UNATTRIBUTED."""
        ...

    def record_batch(self, transfers: Sequence[ObservedTransfer]) -> None:
        """The credits one watcher batch saw, each recorded as by ``record_seen``; the customer is told of them once
        per bill (one ``CryptoPaymentSeen.v1`` carrying that bill's transfers, D216)."""
        ...

    def pending(self, chain: str) -> Sequence[PendingPayment]:
        """SEEN payments on ``chain`` awaiting finality, and FAILED ones whose block is not final yet."""
        ...

    def finalized(self, payment_id: str, block_hash: str | None = None) -> None:
        """Its block ``block_hash`` is final (the watcher checked it is the finalized chain's block at the payment's
        height): FINALIZED only if that is still the block recorded - moved meanwhile, it waits for the next check.
        None: whatever block is recorded (an operator's or a test's call, never a watcher's)."""
        ...

    def orphaned(self, payment_id: str, block_hash: str | None = None, *, failed: bool = False) -> None:
        """Its block ``block_hash`` left the canonical chain (or the log vanished; ``failed``: its transaction
        failed): the payment no longer counts - only if that is still the block recorded (a payment moved meanwhile
        to another block waits for its check)."""
        ...

    def stalled(self, payment_id: str, block_hash: str | None = None) -> None:
        """The watcher named this SEEN payment stuck at block ``block_hash``: final long since and neither its
        finality nor its loss is proven. It stays pending, but no longer holds its bill: a bill its final payments
        cover inside tolerance is PAID (D398), one they leave short beyond it is OPEN and asks the rest (D419);
        finalized later, it pays that write-off (D387) or counts again (credit on a bill paid meanwhile). Only if
        that is still the block recorded (a payment moved meanwhile waits for its check); None: whatever block is
        recorded."""
        ...


def settle_alone(stuck: list[str], payment_id: str, step: Callable[[], None]) -> bool:
    """One payment's settlement step (``PaymentSink.finalized`` / ``orphaned``) in a watcher's finality pass, kept
    from stopping the others: its error is added to ``stuck`` (``<payment id>: <error>``; the handler logs it and
    counts ``CryptoPaymentsStuck``, alarmed) and False returned - the payment stays pending and the next run tries it
    again. A node's failure (``ChainUnavailableError``) still fails the run (D285). The EVM rollback's orphaning runs
    through it too (D323)."""
    try:
        step()
    except ChainUnavailableError:
        raise
    except Exception as exc:
        stuck.append(f"{payment_id}: {type(exc).__name__}: {exc}")
        return False
    return True


def record_alone(stuck: list[str], sink: PaymentSink, groups: Mapping[str, Sequence[ObservedTransfer]]) -> set[str]:
    """Credits a watcher's finality pass reports again (a transaction re-read in another block), kept from stopping
    the others: one ``record_batch`` of them all; if it fails, each group (one transaction's credits, in order) alone
    through ``settle_alone``, named ``stuck`` by its key - the pending payment the group was read again for, which
    the caller leaves pending as it was (D332). Returns the keys of the groups that failed; the next run reads
    them again. Recording is idempotent per payment id, so a group recorded before the failure is recorded again
    harmlessly (D323)."""
    credits = [credit for group in groups.values() for credit in group]
    if not credits:
        return set()
    try:
        sink.record_batch(credits)
    except ChainUnavailableError:
        raise
    except Exception:  # one payment's failure: found below, group by group
        return {
            key
            for key, group in groups.items()
            if group and not settle_alone(stuck, key, partial(sink.record_batch, list(group)))
        }
    return set()


class ReferenceSource(Protocol):
    """Solana Pay references of quotes still watched (active, or expired inside the monitoring window)."""

    def active_references(self, chain: str) -> Sequence[str]: ...

    def recent_references(self, chain: str) -> Sequence[str]:
        """The watched references worth a ``getSignaturesForAddress`` of their own: quotes not expired, or expired
        less than the settlement policy's ``reference_margin`` ago. A later payment is still found by the merchant's
        wallet and token-account sweeps, and matched by the reference it carries (D290)."""
        ...


class PriceUnavailableError(Exception):
    """A price source did not answer, or answered something unusable (no round, zero or negative price)."""


class PriceSource(Protocol):
    """One independent source of an asset's USD price (Chainlink on chain, an exchange's spot API). It reports what
    it read - the price, when the source updated it, the heartbeat it keeps - and refuses only an answer that is no
    price; whether a reading is too old is the rates' judgement (``rates._check_reading``, D241)."""

    def read(self, asset: Asset) -> RateReading: ...


@dataclass(frozen=True, slots=True)
class ChainBlock:
    """A block of a configured chain (EVM block number / Solana slot): where a payment was included."""

    chain: str
    number: int


@runtime_checkable
class HistoricalPriceSource(Protocol):
    """A price source that can answer for a past moment (Chainlink: the feed's state at a block). An exchange's
    spot API cannot, and is not one."""

    def read_at(self, asset: Asset, when: datetime, block: ChainBlock | None = None) -> RateReading:
        """The asset's price as the source stood at ``when``: on the feed's own chain, at ``block`` when it is a
        block of that chain, else at the last block at or before ``when``; its age is judged against ``when`` by
        the rates (``CheckedRates.at``). PriceUnavailableError as ``read``."""
        ...


class TransactionNotFoundError(LookupError):
    """The chain does not know the transaction (yet)."""


class MalformedTransactionIdError(TransactionNotFoundError, ValueError):
    """The submitted id cannot be a transaction of the chain (not 0x + 64 hex digits; not a base-58 signature): no
    chain will ever know it, so it is bad input, not "not found yet"."""


class ChainUnavailableError(Exception):
    """A chain's node did not answer usefully (connection, HTTP or RPC failure). Each chain's RPC adapter raises its
    own subclass. The message may carry the node's URL (a provider's key is often in it): it is for the log's eyes,
    never for an answer."""


class TransactionInspector(Protocol):
    """The fast path: the credits to the merchant inside one transaction a customer submitted, as the watcher would
    see them (a reverted transaction gives its transfers with ``succeeded=False``; none to the merchant: empty).
    ``ChainUnavailableError`` when the node does not answer."""

    def transfers(self, tx_id: str) -> Sequence[ObservedTransfer]: ...


# --- The core's own ports (settlement, quotes, wallets) -------------------------------------------------------------


class ConflictError(Exception):
    """A conditional write lost a race (the bill moved, the payment is already recorded): re-read and retry."""


class ChangeRefusedError(Exception):
    """The store refused a change itself, for good (an item over DynamoDB's 400 KB: a bill holding too many payment
    lines): the same change can never be stored, retried or not."""


class AlreadyExistsError(Exception):
    """The item exists already (a wallet linked to another account, a payment recorded, a used nonce)."""


@dataclass(frozen=True, slots=True)
class SettlementChange:
    """What one settlement step writes, all or nothing: the payment (new, or moved from ``payment_expected``), the
    bill (if attributed; written only if its stored version is still ``bill.version - 1``, or absent for version 0)
    and the quotes whose status changed."""

    payment: Payment
    payment_expected: PaymentStatus | None  # None: the payment must not exist yet
    bill: Bill | None = None
    quotes: tuple[Quote, ...] = ()
    was_unattributed: bool = False  # an operator assignment: the stored payment must still be unattributed
    moved: Payment | None = None  # the payment whose bill ``payment`` takes over (ORPHANED, ``moved_to`` set);
    moved_expected: PaymentStatus | None = None  # written only if still in this status and not moved already
    block_expected: str | None = None  # the payment is written only if its stored block hash is still this one
    # the refund the step read on the stored payment and drops or keeps (another credit recorded afresh at its id):
    # written over only while that is still its refund. Unset: a payment with no ``refund_tx`` is written only over
    # one with none, so that a copy read before an operator's refund never drops it (D341); one with a
    # refund over none or the same one
    refund_read: str | None = None


class SettlementStore(Protocol):
    def bill(self, invoice_id: str) -> Bill | None: ...

    def quotes(self, invoice_id: str) -> Sequence[Quote]: ...

    def create_bill(self, bill: Bill) -> bool:
        """Store a new bill; False when it exists already (a redelivered InvoiceIssued)."""
        ...

    def unpaid_bills(self, account_id: str) -> Sequence[Bill]: ...

    def add_quote(self, quote: Quote) -> None: ...

    def quote_by_reference(self, reference: str) -> Quote | None: ...

    def expiring_quotes(self, chain: str, until: datetime) -> Sequence[Quote]:
        """Quotes on ``chain`` not yet announced as expiring whose expiry is at or before ``until`` (passed ones too:
        the caller retires them), oldest expiry first."""
        ...

    def retire_expiring(self, quote: Quote) -> None:
        """Take the quote off the expiring list (announced, or no longer to announce); idempotent."""
        ...

    def payment(self, payment_id: str) -> Payment | None: ...

    def transaction_payments(self, chain: str, tx_id: str) -> Sequence[Payment]:
        """The attributed payments recorded for transaction ``tx_id`` on ``chain`` (any index; archived ones too),
        and the refunded ones (D341)."""
        ...

    def save(self, change: SettlementChange) -> None:
        """Write the change in one transaction; ConflictError when a condition failed, ChangeRefusedError when the
        store can never take it (an item too large)."""
        ...

    def record_refund(self, refunded: Payment, expected: PaymentStatus) -> None:
        """Record the operator's refund (``refunded.refund_tx``) on the stored payment by itself (nothing else of it
        is written), only while it is still in ``expected`` status, unattributed and with no refund, and its
        transaction's link to it (``transaction_payments`` finds it re-mined at another index); ConflictError
        otherwise."""
        ...

    def claim_seen(self, payment_id: str, event_id: str) -> str:
        """Note that ``payment_id`` is told in the ``CryptoPaymentSeen.v1`` ``event_id``, unless it is claimed by one
        already; returns the event it is told in. Idempotent (D216)."""
        ...

    def mark_payment_announced(self, payment_id: str) -> None: ...

    def mark_bill_announced(self, invoice_id: str, credit_usd: Decimal, written_off_usd: Decimal | None = None) -> None:
        """The bill's settlement (or its credit in all, ``credit_usd``, and its write-off, ``written_off_usd`` when
        given: a later payment paid part of it, D387) has been published; the bill leaves the announcement list
        unless its credit or write-off has changed meanwhile."""
        ...

    def mark_reopen_said(self, invoice_id: str, owed: str) -> None:
        """The bill's ``CryptoBillReopened.v1`` for ``owed`` (``<payment id>@<block hash>``) has been published (or
        is no longer to tell): it leaves ``reopens_owed``, and the bill the announcement list when nothing else of
        it is due. A write that loses a race leaves it owed (the sweep publishes it again under the same id)."""
        ...

    def bills_to_announce(self) -> Sequence[Bill]:
        """PAID bills whose settlement or credit invoicing has not been told of, and bills with a reopen owed
        (``items.announcement_due``)."""
        ...

    def pending_payments(self, chain: str) -> Sequence[Payment]: ...

    def watched_references(self, chain: str, now: datetime, expired_after: datetime | None = None) -> Sequence[str]:
        """References of quotes monitored past ``now``; given ``expired_after``, only those of quotes expiring after
        it (a reference stored before its quote's expiry was kept on it counts as not expired)."""
        ...

    def wallet_owner(self, chain_kind: str, address: str, chain: str | None = None) -> str | None:
        """The account ``address`` is linked to: by its key (every chain of ``chain_kind``), or as a contract wallet
        on ``chain`` (ERC-1271 links hold on the chain they were verified on only). None: not linked."""
        ...

    def unattributed(self) -> Sequence[Payment]: ...

    def reviewed_payments(self) -> Sequence[Payment]:
        """Payments waiting in manual review, and those refused there (a refund owed), for the operator."""
        ...

    def account_history(self, account_id: str) -> tuple[Sequence[Bill], Sequence[Quote], Sequence[Payment]]: ...


class RateRefusedError(Exception):
    """No rate can be locked now (a source unavailable or stale, sources disagree, a stablecoin off its peg)."""


class Rates(Protocol):
    """The rates logic as settlement and quotes use it: the USD price of an asset now, checked (fresh, sources agree,
    stablecoin on its peg), with the readings that decided it; RateRefusedError otherwise."""

    def lock(self, asset: Asset, now: datetime) -> LockedRate: ...

    def at(self, asset: Asset, when: datetime, block: ChainBlock | None = None) -> LockedRate:
        """The USD price of an asset at a past moment (a late payment's block time, D218), from the on-chain
        source as it stood then (``block``: the payment's block, read there when the feed is on its chain), fresh
        as of ``when``; RateRefusedError when no source can say."""
        ...


# --- Wallet linking (wallets.py), and the crypto table as the API routes use it ---------------------------------------


class WalletStore(Protocol):
    def put_nonce(self, nonce: str, account_id: str, expires_at: datetime) -> None: ...

    def take_nonce(self, nonce: str) -> tuple[str, datetime] | None: ...

    def link_wallet(
        self, kind: str, address: str, account_id: str, chain: str, now: datetime, contract: bool = False
    ) -> None:
        """``contract``: an ERC-1271 wallet, linked for ``chain`` only; a key's wallet is linked on every chain of its
        kind. AlreadyExistsError when another account holds the link."""
        ...


class ContractSignatureVerifier(Protocol):
    """ERC-1271: does the contract at ``address`` on ``chain`` accept ``signature`` over ``message_hash``?"""

    def is_valid_signature(self, chain: ChainConfig, address: str, message_hash: bytes, signature: bytes) -> bool: ...


class CryptoStore(SettlementStore, WalletStore, Protocol):
    """The crypto table as the routes use it."""


# --- The EVM JSON-RPC (evm.py's port; the web3.py adapter is evm_rpc.py) ----------------------------------------------

BlockTag = Literal["latest", "finalized"]


@dataclass(frozen=True, slots=True)
class BlockRef:
    number: int
    hash: str
    timestamp: int = 0


@dataclass(frozen=True, slots=True)
class EvmTransaction:
    hash: str
    sender: str  # checksummed
    to: str | None  # checksummed; None for a contract creation
    value: int  # wei
    input: str  # 0x-hex call data
    block_number: int | None = None
    block_hash: str | None = None


@dataclass(frozen=True, slots=True)
class EvmBlock:
    number: int
    hash: str
    timestamp: int
    transactions: tuple[EvmTransaction, ...] = ()
    parent_hash: str = ""  # "" when the source does not say (the scan's fork check then trusts the block)


@dataclass(frozen=True, slots=True)
class EvmLog:
    address: str  # checksummed emitter
    topics: tuple[str, ...]  # 0x-hex, lower case
    data: str  # 0x-hex
    block_number: int
    block_hash: str
    tx_hash: str
    log_index: int


@dataclass(frozen=True, slots=True)
class EvmReceipt:
    tx_hash: str
    succeeded: bool  # status 1
    block_number: int
    block_hash: str
    logs: tuple[EvmLog, ...] = ()


class RpcRangeError(Exception):
    """The provider refused an ``eth_getLogs`` range (too many blocks or results, a limit, a timeout): try smaller."""


class RpcUnavailableError(ChainUnavailableError):
    """The node did not answer usefully (connection, HTTP or JSON-RPC failure): the run fails and is retried."""


class EvmRpc(Protocol):
    """The JSON-RPC an EVM watcher needs. ``calls`` counts the JSON-RPC requests made (each batch element counts)."""

    @property
    def calls(self) -> int: ...

    def block_ref(self, tag: BlockTag) -> BlockRef:
        """The ``latest`` or ``finalized`` block."""
        ...

    def block_hashes(self, numbers: Sequence[int]) -> dict[int, str | None]:
        """The canonical hash at each height (None above the head, or a node that does not know it)."""
        ...

    def headers(self, numbers: Sequence[int]) -> dict[int, BlockRef | None]:
        """The canonical block at each height: number, hash, timestamp (None as for ``block_hashes``)."""
        ...

    def blocks(self, first: int, last: int) -> list[EvmBlock]:
        """Blocks ``first..last`` with their full transactions."""
        ...

    def logs_beside(
        self, address: str, topics: Sequence[str | None], first: int, last: int
    ) -> tuple[list[EvmLog], str | None]:
        """``eth_getLogs`` over ``first..last`` and the hash of block ``last`` (None: that node does not have it), in
        ONE JSON-RPC batch, the block asked first: one backend's view (as ``receipt_beside``). A node asked for logs
        past its head answers up to its head, no error (go-ethereum#24078): only the hash says whether the logs
        cover ``last`` (D386). Raises RpcRangeError when the provider refuses the range."""
        ...

    def receipts(self, tx_hashes: Sequence[str]) -> dict[str, EvmReceipt]:
        """Receipts of mined transactions (a pending or unknown one is missing from the answer)."""
        ...

    def transaction(self, tx_hash: str) -> EvmTransaction | None: ...

    def parent_beside(self, block_hash: str, numbers: Sequence[int]) -> tuple[str | None, dict[int, str | None]]:
        """The parent hash of the block ``block_hash`` (None: that node does not have it - a dead fork's block it
        dropped) and the hashes at ``numbers`` (at most the adapter's batch less one), in ONE JSON-RPC batch (one
        backend's view, as ``receipt_beside``): the rollback's walk down an old fork (D342, amended (review 4))."""
        ...

    def receipt_beside(self, tx_hash: str, numbers: Sequence[int]) -> tuple[EvmReceipt | None, dict[int, str | None]]:
        """One transaction's receipt (None: not mined, as that node sees it) and the hashes at ``numbers`` (at most
        the adapter's batch less one), in ONE JSON-RPC batch: a load balancer routes it whole to one backend, so the
        receipt and the blocks are that backend's view together (D342, amended (review 3))."""
        ...


# --- The Solana RPC (solana.py's port; the solana-py adapter is solana_rpc.py) ----------------------------------------

Commitment = Literal["confirmed", "finalized"]
SIGNATURES_PAGE = 1_000  # getSignaturesForAddress's maximum limit


class SolanaRpcError(ChainUnavailableError):
    """The RPC did not answer, or answered an error: the run fails and is retried (nothing was half-recorded)."""


class SolanaNodeBehindError(SolanaRpcError):
    """The server answering has not reached the ``min_slot`` asked for (Agave's -32016 "Minimum context slot has not
    been reached"): a load-balanced provider's backend behind the one that gave the head. The watcher stops its scan
    there, its cursor not moved, and the next run asks again (D91)."""


@dataclass(frozen=True, slots=True)
class SignatureInfo:
    signature: str
    slot: int
    failed: bool


@dataclass(frozen=True, slots=True)
class Instruction:
    program_id: str
    accounts: tuple[str, ...]
    data: bytes


@dataclass(frozen=True, slots=True)
class TokenBalance:
    account_index: int
    mint: str
    owner: str | None
    amount: int


@dataclass(frozen=True, slots=True)
class ChainTransaction:
    """A transaction as ``getTransaction`` returns it, reduced to what validation needs."""

    signature: str
    slot: int
    block_time: datetime | None
    failed: bool
    account_keys: tuple[str, ...]  # static keys, then loaded writable, then loaded read-only (v0 lookup tables)
    signer_count: int
    instructions: tuple[Instruction, ...]
    pre_balances: tuple[int, ...]
    post_balances: tuple[int, ...]
    pre_token_balances: tuple[TokenBalance, ...] = ()
    post_token_balances: tuple[TokenBalance, ...] = ()


@dataclass(frozen=True, slots=True)
class Head:
    slot: int
    blockhash: str


@dataclass(frozen=True, slots=True)
class SignatureStatus:
    slot: int
    failed: bool
    finalized: bool


class SolanaRpc(Protocol):
    """The Solana RPC methods the watcher uses; each call is one JSON-RPC request (the watcher counts them)."""

    async def head(self) -> Head:
        """The ``confirmed`` bank's slot and latest blockhash (``getLatestBlockhash``)."""
        ...

    async def slot(self, commitment: Commitment) -> int: ...

    async def signatures(
        self,
        address: str,
        *,
        before: str | None = None,
        until: str | None = None,
        limit: int = SIGNATURES_PAGE,
        min_slot: int | None = None,
    ) -> Sequence[SignatureInfo]:
        """Newest first, at the ``confirmed`` commitment. ``min_slot``: ``minContextSlot``; a server whose confirmed
        slot is below it raises ``SolanaNodeBehindError`` instead of answering a shorter list."""
        ...

    async def transaction(self, signature: str) -> ChainTransaction | None:
        """At the ``confirmed`` commitment; None when unknown."""
        ...

    async def statuses(self, signatures: Sequence[str]) -> Sequence[SignatureStatus | None]: ...

    async def block_hash(self, slot: int) -> str: ...

    async def block_time(self, slot: int) -> datetime | None:
        """The block's time at ``slot`` (``getBlockTime``), asked for a transaction whose ``getTransaction`` answer
        had none; None when the node has none (null, or a JSON-RPC error answer: not available, cleaned up, skipped).
        A transport failure or an unreadable answer is ``SolanaRpcError``, as for every call."""
        ...

    async def finalized_signatures(self, slot: int) -> Sequence[str] | None:
        """The signatures in the finalized block at ``slot`` (``getBlock``, ``finalized``, ``transactionDetails:
        signatures``): what proves a transaction is not there. None when the backend answering does not show that
        block (not finalized or not available there yet, cleaned up; or "skipped, or missing due to ledger jump to
        recent snapshot", which a backend also says of a slot its own ledger lacks): no proof either way."""
        ...

    async def next_finalized_block(self, slot: int) -> int | None:
        """The first slot after ``slot`` holding a finalized block on the answering backend (``getBlocks`` of a
        short range after it, ``finalized``); None when it shows none there or answers a JSON-RPC error (no
        ``getBlocks`` at the provider, its long-term storage failing): no proof either way."""
        ...

    async def finalized_blocks(self, first: int, last: int) -> Sequence[int] | None:
        """The slots in ``[first, last]`` holding a finalized block on the answering backend, ascending (``getBlocks``,
        ``finalized``: capped at its finalized slot, skipped slots left out); None when it answers a JSON-RPC error
        (no ``getBlocks`` at the provider, its long-term storage failing)."""
        ...

    async def finalized_parent(self, slot: int) -> int | None:
        """The ``parentSlot`` of the finalized block at ``slot`` (``getBlock``, ``finalized``, ``transactionDetails:
        none``); None when the backend does not show that block (as ``finalized_signatures``) or answers any other
        JSON-RPC error."""
        ...
