"""What the chain watchers hand to settlement, and what they keep between runs.

The watchers (``evm.py``, ``solana.py``) only observe chains: they turn blocks, logs and transactions into
``ObservedTransfer`` values and report finality; matching a transfer to a bill, the state machines and the money live in
settlement (``settlement.py``) behind the ``PaymentSink`` port (ports.py).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import datetime
from decimal import Decimal
from enum import StrEnum
from typing import Literal

Asset = Literal["ETH", "USDC", "SOL"]
DECIMALS: dict[str, int] = {"ETH": 18, "SOL": 9, "USDC": 6}


@dataclass(frozen=True, slots=True)
class ChainConfig:
    """One chain the merchant accepts payments on (mainnet defaults in settings; addresses from configuration).

    A second EVM chain (Base) is one more ChainConfig: nothing in the code names a chain.
    """

    key: str  # "ethereum", "base", "solana"
    kind: Literal["evm", "solana"]
    rpc_url: str
    merchant_address: str  # EVM 0x address / Solana base58 wallet (the owner of its USDC token account)
    usdc: str  # ERC-20 contract address / SPL mint
    native: Asset  # "ETH" on EVM chains, "SOL" on Solana
    chain_id: int | None = None  # EIP-155 id on EVM chains (EIP-681 URIs, SIWE); None on Solana
    explorer_tx_url: str | None = None  # e.g. "https://etherscan.io/tx/{tx}"
    start_block: int | None = None  # where a fresh cursor starts (EVM block / Solana slot); None: EVM at the
    # finalized block of its first run, Solana at slot 0 (its listing is per address, not per block)
    max_blocks_per_run: int = 20_000  # EVM: bounded work per run; the cursor resumes after downtime
    scan_batch: int = 100  # EVM: blocks (with their transactions) held at once; the cursor moves after each batch
    max_transactions_per_run: int = 20_000  # EVM: a run stops after the batch that reaches it (memory and time)
    initial_chunk: int = 2_000  # EVM eth_getLogs chunk, halved on provider errors
    # EVM: how far below its cursor a rollback rescans at most when the node no longer has the old fork's blocks (the
    # walk down its parents cannot find the fork) - deeper than the finality lag (64-95 blocks on Ethereum): what was
    # that far below the head was final (D342); Base's default is 1,800 (settings.CHAIN_DEFAULTS); at least 1 (review 6)
    reorg_window: int = 128


@dataclass(frozen=True, slots=True)
class RateReading:
    """One source's answer for an asset's USD price, stored with every quote that used it."""

    source: str  # e.g. "chainlink:ethereum:0x5f4e...", "exchange:coinbase"
    asset: Asset
    price: Decimal  # USD per whole unit
    updated_at: datetime  # when the source last updated (Chainlink updatedAt; the exchange's own timestamp)
    heartbeat_seconds: int | None = None  # older than this: stale (Chainlink feeds); None: the caller's default
    round_id: int | None = None


class PaymentStatus(StrEnum):
    """A chain payment: SEEN -> FINALIZED | ORPHANED (block hash changed, log vanished) | FAILED (reverted)."""

    SEEN = "SEEN"
    FINALIZED = "FINALIZED"
    ORPHANED = "ORPHANED"
    FAILED = "FAILED"


@dataclass(frozen=True, slots=True)
class ObservedTransfer:
    """One on-chain credit to a merchant address, as a watcher saw it (or as the fast path validated it).

    Addresses: EVM as 0x-hex checksummed, Solana as base58. ``recipient`` is the merchant's address (for SPL tokens
    the owner of the destination token account, not the token account itself).
    """

    chain: str  # configured chain key: "ethereum", "base", "solana"
    asset: Asset
    tx_id: str  # EVM: 0x transaction hash; Solana: base58 signature
    index: int  # EVM: the log index of an ERC-20 Transfer, -1 for native ETH; Solana: the instruction index
    block_number: int  # EVM block number; Solana slot
    block_hash: str  # EVM block hash; Solana blockhash of that slot
    sender: str
    recipient: str
    atomic_amount: int  # in the asset's smallest unit (wei, lamports, USDC's 6 decimals)
    succeeded: bool = True  # False: the transaction reverted / meta.err is set (recorded FAILED, never credited)
    references: tuple[str, ...] = ()  # Solana Pay reference keys found in the transfer's instruction
    memo: str | None = None
    block_time: datetime | None = None
    # credited to a token account the merchant's wallet owns that is not its payment address (Solana: not its USDC
    # associated token account, D324): no payment - never matched to a bill, kept UNATTRIBUTED for an operator
    # (D341)
    stray: bool = False

    @property
    def payment_id(self) -> str:
        """Stable identity of the credit: one row per (chain, transaction, index), whatever the run that saw it."""
        return f"{self.chain}:{self.tx_id}:{self.index}"

    @property
    def inclusion(self) -> tuple[int, str, bool]:
        """Where the credit was mined and how its transaction ended there: block number, block hash, succeeded. The
        same credit observed with another inclusion moved block (a reorg re-included it) or changed outcome."""
        return self.block_number, self.block_hash, self.succeeded

    @property
    def movement(self) -> tuple[str, str, str, int]:
        """What the credit moved: asset, sender, recipient (addresses case-folded) and amount. Two credits of one
        transaction with the same movement are the same credit, whatever their index."""
        return self.asset, self.sender.lower(), self.recipient.lower(), self.atomic_amount


@dataclass(frozen=True, slots=True)
class Cursor:
    """Where a chain's watcher resumes. EVM: the last scanned block and its hash (reorg check); Solana: the slot and
    the merchant's newest signature swept (``until`` for the next sweep)."""

    chain: str
    block_number: int
    block_hash: str
    last_signature: str | None = None
    updated_at: datetime | None = None
    # EVM: the first block its watcher scanned (the first run's start), kept by every move: without ``start_block``
    # the rollback never rescans below it (blocks from before the watcher ran: old credits as new alerts); None on a
    # cursor written before it was kept (no floor then) and on Solana (D342, amended (review 4))
    first_block: int | None = None


@dataclass(frozen=True, slots=True)
class PendingPayment:
    """A SEEN payment (or a FAILED one not final yet) the watcher must re-check for finality."""

    payment_id: str
    chain: str
    tx_id: str
    index: int
    block_number: int
    block_hash: str
    failed: bool = False  # recorded FAILED: final once its block is; re-read if its transaction moved or succeeded
    # the bill it counts for (None: unattributed, or a sink that does not say): named in a watcher's stuck entry, so
    # the operator sees which bill waits on it; not part of what the payment is (equality leaves it out)
    invoice_id: str | None = field(default=None, compare=False)

    @classmethod
    def of(
        cls, payment_id: str, transfer: ObservedTransfer, failed: bool, invoice_id: str | None = None
    ) -> PendingPayment:
        """The payment recorded at ``payment_id`` for ``transfer``, as the watcher re-checks it."""
        return cls(
            payment_id=payment_id,
            chain=transfer.chain,
            tx_id=transfer.tx_id,
            index=transfer.index,
            block_number=transfer.block_number,
            block_hash=transfer.block_hash,
            failed=failed,
            invoice_id=invoice_id,
        )


@dataclass(frozen=True, slots=True)
class RunReport:
    """What one watcher run did (logged, and returned for tests and the benchmark)."""

    chain: str
    from_block: int
    to_block: int
    transfers_seen: int
    finalized: int
    orphaned: int
    failed: int
    rpc_calls: int
    rolled_back_to: int | None = None
    caught_up: bool = True  # False: the run stopped at its work cap; the next run resumes from the cursor
    # how far short of the head the run read was left: blocks (EVM) or slots (Solana) from its last one read to the
    # head it read at its start, 0 when it reached it; recorded as ``CryptoWatchBehind`` per chain, whose alarm
    # tolerates a chain's few minutes of lag (a logs backend a block behind, D386) (D414 amended (ops2))
    lag: int = 0
    # payments whose finality step failed (``<payment id>: <error>``): left pending, the others went on (D285)
    stuck: tuple[str, ...] = ()
    # Solana: pending payments whose slot is final and whose status no backend gave, without proof they are gone
    # (kept pending, D91 amended (s2))
    unproven: int = 0
    # Solana: a listing page refused by a server behind the run's head on every ask (-32016, asked
    # ``BEHIND_ASKS`` times): the run read nothing and left its cursor (D91 amended (s1b)); counted and alarmed
    behind: bool = False
    # Solana: the run stopped its transaction loop on its time budget (less than ``TIME_MARGIN`` left at a slot's
    # start): what it read is recorded, the cursor is on the last whole slot read (D91 amended (s3)); logged
    out_of_time: bool = False
    # the height (EVM block number, Solana slot) through which a payment dropped with its block is final for this
    # run: the finalized block, at most the last block read (EVM); the slot below which no dropped transaction can
    # land any more and every slot was listed (Solana, ``SolanaWatcher._final_through``); None: not known this run.
    # The sweep tells a drop from a height at or below it (``Settlement.announce_due``, D449)
    final_through: int | None = None


# --- Settlement's domain (owned by the core: quotes, bills, chain payments as recorded) ---------------------------


class QuoteStatus(StrEnum):
    """ACTIVE -> DETECTED -> COMPLETED; ACTIVE -> EXPIRED; EXPIRED + a payment inside monitoring -> LATE; DETECTED
    never finalized by the end of monitoring -> INVALID; DETECTED whose payments all orphaned -> ACTIVE / EXPIRED."""

    ACTIVE = "ACTIVE"
    DETECTED = "DETECTED"
    COMPLETED = "COMPLETED"
    EXPIRED = "EXPIRED"
    LATE = "LATE"
    INVALID = "INVALID"


class BillStatus(StrEnum):
    """OPEN -> PROCESSING (covered counting unfinalized payments) -> PAID (covered by finalized ones), exactly once."""

    OPEN = "OPEN"
    PROCESSING = "PROCESSING"
    PAID = "PAID"


class BillFlag(StrEnum):
    PARTIAL = "PARTIAL"
    OVERPAID = "OVERPAID"
    PAID_LATE = "PAID_LATE"
    MULTIPLE = "MULTIPLE"
    PAST_DUE = "PAST_DUE"
    MARKED = "MARKED"


@dataclass(frozen=True, slots=True)
class LockedRate:
    """The USD price a quote locks, with every source reading used to decide it."""

    asset: Asset
    price: Decimal
    readings: tuple[RateReading, ...]
    locked_at: datetime


@dataclass(frozen=True, slots=True)
class Quote:
    """One "pay this bill's remaining USD with asset X on chain Y" attempt."""

    quote_id: str
    invoice_id: str
    account_id: str
    chain: str
    asset: Asset
    amount_usd: Decimal  # the bill's remaining USD when the quote was made
    rate: LockedRate
    atomic_amount: int  # rounded up: paying it covers amount_usd at the locked rate
    pay_to: str  # the merchant address
    created_at: datetime
    expires_at: datetime
    monitor_until: datetime
    payment_uri: str
    reference: str | None = None  # Solana Pay reference key (base58)
    memo: str | None = None
    status: QuoteStatus = QuoteStatus.ACTIVE


MatchedBy = Literal["reference", "wallet", "fast_path", "operator"]


@dataclass(frozen=True, slots=True)
class Payment:
    """A chain payment as settlement recorded it: the transfer, its finality, what it was matched to and its USD."""

    transfer: ObservedTransfer
    status: PaymentStatus
    seen_at: datetime
    invoice_id: str | None = None  # None: UNATTRIBUTED
    account_id: str | None = None
    quote_id: str | None = None
    matched_by: MatchedBy | None = None
    rate: Decimal | None = None  # USD per whole unit used to value it
    usd: Decimal | None = None  # its USD value (cents), None while unattributed
    late: bool = False  # detected after its quote expired (late-payment policy applied)
    review: bool = False  # late ETH/SOL whose price moved > the review band: an operator decides; not counted
    announced: bool = False  # CryptoPaymentSeen / UnattributedCryptoPayment published
    refund_owed: bool = False  # an operator refused it in review: its asset amount is owed back; never counted
    # an UNATTRIBUTED payment an operator sent back on chain: the refund's transaction; off the unattributed list,
    # never assigned or claimed afterwards (D341, amended)
    refund_tx: str | None = None
    moved_to: str | None = None  # ORPHANED, its transfer re-mined under another id: the payment its bill moved to
    final: bool = False  # FAILED in a finalized block: final (before that, a changed block or outcome is re-read)
    # recorded afresh at a payment id used before (a credit re-mined at a reused log index, a payment seen again
    # after its orphaning): 1, 2, ... - its events' ids carry it, so they are not taken for the earlier ones'
    generation: int = 0
    # displaced from its id by another credit of its transaction (re-mined with its log indexes shifted, D168): kept
    # under its own id ``<id>~<generation>`` (ORPHANED), so that seen again at its new index it keeps its bill
    archived: bool = False
    # the ``CryptoPaymentSeen.v1`` it is told in, claimed before that event is published: a rerun after a crash before
    # ``announced`` publishes that event again (same id) rather than count it in another (D216)
    seen_event: str | None = None
    # kept UNATTRIBUTED for good: its amount is counted in that payment already (a Solana transaction stored as one
    # net credit before the split and recorded split afterwards, D91 amended (sp3)) - never matched, claimed or
    # assigned
    counted_in: str | None = None

    @property
    def payment_id(self) -> str:
        """The transfer's id; an archived payment's is ``<transfer's id>~<generation>`` (the id its row was
        displaced from, and which recording of that id it was: unique, so it never meets the live row's)."""
        if self.archived:
            return f"{self.transfer.payment_id}~{self.generation}"
        return self.transfer.payment_id

    @property
    def attributed(self) -> bool:
        return self.invoice_id is not None


@dataclass(frozen=True, slots=True)
class BillPayment:
    """A payment's line on its bill (kept on the bill item, so one conditional write moves the bill)."""

    payment_id: str
    tx_id: str
    asset: Asset
    usd: Decimal
    status: PaymentStatus
    quote_id: str | None = None
    late: bool = False
    review: bool = False
    refund_owed: bool = False
    stalled: bool = False  # named stuck by its watcher: it no longer holds a write-off (D398) or the rest (D419)


@dataclass(frozen=True, slots=True)
class Bill:
    """An open USD bill of a crypto-billed account (our invoice), settled by chain payments."""

    invoice_id: str
    account_id: str
    number: str
    period: str
    total_usd: Decimal
    issued_at: datetime
    status: BillStatus = BillStatus.OPEN
    flags: frozenset[BillFlag] = frozenset()
    payments: tuple[BillPayment, ...] = ()
    settled_usd: Decimal = Decimal("0.00")  # finalized payments' USD when it became PAID
    written_off_usd: Decimal = Decimal("0.00")  # shortfall inside tolerance, written off
    credit_usd: Decimal = Decimal("0.00")  # overpayment (and payments after PAID) kept as account credit
    settled_payment_ids: tuple[str, ...] = ()  # the payments that made it PAID
    paid_at: datetime | None = None
    settled_announced: bool = False  # CryptoBillSettled published
    credit_announced_usd: Decimal = Decimal("0.00")  # the credit in all that invoicing has been told of
    # the write-off invoicing has been told of after the settlement (None: the one CryptoBillSettled carried,
    # total - settled; a later payment pays it first, D387)
    written_off_announced_usd: Decimal | None = None
    # the CryptoBillReopened notices saved with a stall and not yet published, each "<payment id>@<block hash>"
    # (its event id's tail; a lost payment's adds its cause and, dropped, the height it waits on to be final:
    # ``settlement.reopen_entry``): the sweep publishes what a failed publish or a crash left out (D434, D449)
    reopens_owed: tuple[str, ...] = ()
    version: int = 0

    def write_off_announced(self) -> Decimal:
        """The write-off invoicing holds for this bill: the last announced after PAID, else the settlement's."""
        if self.written_off_announced_usd is not None:
            return self.written_off_announced_usd
        return max(Decimal("0.00"), self.total_usd - self.settled_usd)
