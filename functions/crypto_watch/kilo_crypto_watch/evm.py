"""The EVM chain watcher and the EVM fast path, over the ``EvmRpc`` port (ports.py; web3.py adapter: ``evm_rpc.py``).

One run per chain (``watch``):

1. **Reorg check.** The cursor holds the last scanned block and its hash. If the canonical chain no longer has that hash
   at that height, the run walks the old fork's parents back from that hash (``eth_getBlockByHash``, one batch per
   block beside the finalized height) to the first block the canonical chain has at its height: the fork point, so a
   1-block head reorg rescans 1 block. A node that no longer has an old-fork block (or a walk that reaches it) stops
   at a bound, and so does a step whose backend answers another hash than the run's at the cursor's height (one
   still on the old fork; nothing there is a backend behind: the step is asked again, D342 amended (review 6)), a
   walk past 64 batches, or a pending payment whose block left at or below the walk's fork
   point (D342 amended (review 5)) - ``reorg_window`` blocks below the cursor (a block that far below the head when
   it was scanned was final then), at most the ``finalized`` block, never below ``start_block`` (the fork may be
   below ``finalized`` when the reorg is noticed late: those new-fork blocks are rescanned too, D342 amended (review
   3)), always below the cursor (its block was replaced: D342, amended (review 6)). A pending
   payment's canonical block proves nothing about the blocks below it (the fast path and the finality pass store
   new-fork blocks: D342 amended (review 4)). Pending payments above ``finalized`` whose block hash changed are
   ORPHANED, each alone (``settle_alone``: one whose orphaning fails is named stuck and stays SEEN; the scan goes on,
   and the finality pass orphans it once its height is final - D323); those at or below it are left to the finality
   pass, after the rescan; the blocks above the start are scanned again (reporting is idempotent per payment id, so
   a payment re-included in the new chain is seen again with its new block).
2. **Scan** ``[cursor+1, min(head, cursor+max_blocks_per_run)]`` (a chain without a cursor starts at ``start_block``,
   else at the ``finalized`` block - never at genesis) in batches of ``scan_batch`` blocks: per batch, ``eth_getLogs``
   for USDC ``Transfer`` events to the merchant (topics as 0x-hex strings), in chunks that start at ``initial_chunk``
   blocks, halve on a provider error and double back after a success; and the batch's blocks themselves (full
   transactions, only one batch held in memory) for native ETH sent to the merchant and for direct USDC
   ``transfer(merchant, …)`` calls, whose receipts say whether they succeeded (a reverted call leaves no log: it is
   reported ``succeeded=False``). After each batch the cursor moves to the batch's last block and the hash that block
   had when it was read (a conditional write: a concurrent run that moved it first wins and this one stops; a reorg
   during the run is found by the next). A batch's blocks are read first, then its logs, and both must be of one
   fork - each log's block hash the block read at its height, each block the parent of the next, the first the
   child of the block the cursor holds - else the batch is read again or the run stops (D287). Each logs chunk is
   read in one JSON-RPC batch with its last block's hash (``logs_beside``): a backend behind that block (a load
   balancer's, a block behind the one that answered the blocks) answers logs up to its head without an error, so
   its chunk is halved, and the batch (and the run) ends at the last block whose logs are vouched for (D386).
   A run stops after the batch that reaches ``max_transactions_per_run``.
3. **Finality.** Every SEEN payment at or below the ``finalized`` block is FINALIZED if its block hash is still the
   canonical one at its height. If another block is there, its transaction's receipt is read first: mined in another
   canonical block, it is reported there (settlement stores the new block) and finalized once that block is. With no
   receipt, or one in a block at or below ``finalized`` where the anchored read has another block (a dead fork's
   receipt), the receipt is read again alone in ONE batch with the ``finalized`` height (and that block's): it is
   ORPHANED only when that batch answers the run's finalized block there and no receipt (a transaction replaced on that
   chain - a speed-up or cancel with its nonce - has none: its payment is released); it moves when that batch places it
   in a final block it answers with the receipt's hash; else it waits SEEN, named stuck with the bill that waits on it.
   A receipt in a block above ``finalized`` the pass cannot confirm (yet) proves nothing either way and the payment
   waits SEEN, silent until finality reaches that block (D342 and its amendments). A height the node answers nothing for
   is unknown, never "gone": the payment waits for the next run (and a node that does not know the cursor's block fails
   the run rather than walk back). Each read of heights in the pass (and in the rollback's walk back) asks the
   ``finalized`` block's height in the same batch: a backend whose answer there is not the run's finalized block (a dead
   fork, far behind) proves nothing - a first read so answered settles nothing that run, a receipt's block so read moves
   nothing, the rollback so read orphans nothing (it goes back to ``finalized``), all named stuck but a rollback read by
   a backend merely behind (nothing at ``finalized``: silent) (D342, amended).

The run reports ``final_through``: the ``finalized`` block's number, at most the last block it read - a payment
dropped with its block at or below it is dropped for good (that height is final, the fork that held it dead) and its
transaction is in no block read up to it, so the sweep may tell its customer (``Settlement.announce_due``, D449).
Read from the ``finalized`` tag the run reads anyway: no call more; a chain whose finality stalls holds the notice.

The watcher never asks anything per quote: RPC calls per run depend on the blocks scanned, the transactions to the
merchant and the payments pending finality, never on the number of open quotes. ``RunReport.rpc_calls`` counts the
JSON-RPC requests the run made (each element of a batch counts).
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime
from functools import partial
from itertools import pairwise

from kilo_crypto_watch.model import Asset, ChainConfig, Cursor, ObservedTransfer, PendingPayment, RunReport
from kilo_crypto_watch.ports import (
    BlockRef,
    CursorConflictError,
    CursorStore,
    EvmBlock,
    EvmLog,
    EvmReceipt,
    EvmRpc,
    EvmTransaction,
    MalformedTransactionIdError,
    PaymentSink,
    RpcRangeError,
    RpcUnavailableError,
    TransactionNotFoundError,
    record_alone,
    settle_alone,
)

TRANSFER_TOPIC = "0xddf252ad1be2c89b69c2b068fc378daa952ba7f163c4a11628f55a4df523b3ef"
TRANSFER_SELECTOR = "0xa9059cbb"  # transfer(address,uint256)
TRANSFER_FROM_SELECTOR = "0x23b872dd"  # transferFrom(address,address,uint256)
NATIVE_INDEX = -1  # ObservedTransfer.index of a credit that has no log: native ETH, or a reverted USDC call
ANCHORED_READ = 99  # heights read beside the finalized block's: 100 in one batch (the adapter's DEFAULT_BATCH)
SCAN_ATTEMPTS = 3  # reads of a batch whose blocks and logs disagree (a reorg between them) before the run fails
WALK_STEPS = 64  # the rollback walk's batches (one per old-fork block, sequential) before it falls back to the bound
# a payment named stuck at a final height is reported ``PaymentSink.stalled`` (it stops holding its bill, D398 and
# D419) only once the finalized block's timestamp is this many seconds past its block's, read from the chain: the
# same wall-clock wait on every EVM chain (D418) - 768 s is Ethereum's finality lag (two epochs of 32 slots of 12 s,
# D342), a dozen runs of the watcher (every minute); a read that disagrees for a run or two settles nothing meanwhile
STALL_SECONDS = 768


# --- pure decoding ----------------------------------------------------------------------------------------------------
def address_topic(address: str) -> str:
    """An address as an indexed topic: 32 bytes, 0x-hex, lower case (bytes topics match nothing on some providers)."""
    return "0x" + address.lower().removeprefix("0x").rjust(64, "0")


def topic_address(topic: str) -> str:
    return "0x" + topic[-40:]


def same_address(a: str | None, b: str | None) -> bool:
    return a is not None and b is not None and a.lower() == b.lower()


def _word(data: str, index: int) -> str:
    body = data.removeprefix("0x")
    return body[index * 64 : (index + 1) * 64]


def decode_transfer_call(tx: EvmTransaction) -> tuple[str, str, int] | None:
    """``(from, to, amount)`` of an ERC-20 ``transfer``/``transferFrom`` call, or None (other calls, short data)."""
    selector = tx.input[:10].lower()
    try:
        if selector == TRANSFER_SELECTOR and len(tx.input) >= 10 + 2 * 64:
            return tx.sender, topic_address(_word(tx.input[10:], 0)), int(_word(tx.input[10:], 1), 16)
        if selector == TRANSFER_FROM_SELECTOR and len(tx.input) >= 10 + 3 * 64:
            args = tx.input[10:]
            return topic_address(_word(args, 0)), topic_address(_word(args, 1)), int(_word(args, 2), 16)
    except ValueError:
        return None
    return None


def _checksum(address: str) -> str:
    from eth_utils.address import to_checksum_address  # noqa: PLC0415 - a dependency of web3, light (no web3 import)

    return str(to_checksum_address(address))


def _time(timestamp: int | None) -> datetime | None:
    return datetime.fromtimestamp(timestamp, UTC) if timestamp else None


def usdc_credit(chain: ChainConfig, log: EvmLog, timestamp: int | None = None) -> ObservedTransfer | None:
    """The merchant credit in a log, or None (another contract, another event, another recipient)."""
    if not same_address(log.address, chain.usdc) or len(log.topics) != 3 or log.topics[0].lower() != TRANSFER_TOPIC:
        return None
    recipient = topic_address(log.topics[2])
    if not same_address(recipient, chain.merchant_address):
        return None
    return ObservedTransfer(
        chain=chain.key,
        asset="USDC",
        tx_id=log.tx_hash,
        index=log.log_index,
        block_number=log.block_number,
        block_hash=log.block_hash,
        sender=_checksum(topic_address(log.topics[1])),
        recipient=_checksum(recipient),
        atomic_amount=int(log.data, 16) if log.data not in {"0x", ""} else 0,
        block_time=_time(timestamp),
    )


def wants_receipt(chain: ChainConfig, tx: EvmTransaction) -> bool:
    """A transaction whose receipt the watcher reads: native value to the merchant, or a USDC transfer call to it."""
    if same_address(tx.to, chain.merchant_address) and tx.value > 0:
        return True
    if same_address(tx.to, chain.usdc):
        call = decode_transfer_call(tx)
        return call is not None and same_address(call[1], chain.merchant_address)
    return False


def transaction_credits(
    chain: ChainConfig, tx: EvmTransaction, receipt: EvmReceipt, timestamp: int | None = None
) -> list[ObservedTransfer]:
    """Every merchant credit one mined transaction made: native value, USDC Transfer logs; for a reverted transaction,
    what it tried (native value, a direct USDC transfer call) with ``succeeded=False``."""

    def without_log(asset: Asset, sender: str, recipient: str, atomic_amount: int, succeeded: bool) -> ObservedTransfer:
        """A credit of the transaction itself (no log to index it: ``NATIVE_INDEX``), in its receipt's block."""
        return ObservedTransfer(
            chain=chain.key,
            asset=asset,
            tx_id=tx.hash,
            index=NATIVE_INDEX,
            block_number=receipt.block_number,
            block_hash=receipt.block_hash,
            sender=_checksum(sender),
            recipient=_checksum(recipient),
            atomic_amount=atomic_amount,
            succeeded=succeeded,
            block_time=_time(timestamp),
        )

    credits: list[ObservedTransfer] = []
    if same_address(tx.to, chain.merchant_address) and tx.value > 0:
        credits.append(without_log(chain.native, tx.sender, chain.merchant_address, tx.value, receipt.succeeded))
    if receipt.succeeded:
        for log in receipt.logs:
            credit = usdc_credit(chain, log, timestamp)
            if credit is not None:
                credits.append(credit)
    elif same_address(tx.to, chain.usdc):
        call = decode_transfer_call(tx)
        if call is not None and same_address(call[1], chain.merchant_address):
            sender, recipient, amount = call
            credits.append(without_log("USDC", sender, recipient, amount, succeeded=False))
    return credits


# --- the watcher ------------------------------------------------------------------------------------------------------
@dataclass
class ChunkSizer:
    """``eth_getLogs`` chunk size: starts at ``initial``, halves on a refused range, doubles back after a success."""

    initial: int
    size: int = 0
    halvings: int = field(default=0)

    def __post_init__(self) -> None:
        self.size = self.size or self.initial

    def refused(self) -> bool:
        """Halve; False when already at one block (nothing smaller to try)."""
        if self.size <= 1:
            return False
        self.size = max(1, self.size // 2)
        self.halvings += 1
        return True

    def succeeded(self) -> None:
        self.size = min(self.initial, self.size * 2)

    def behind(self, length: int) -> bool:
        """A chunk of ``length`` blocks ends past the answering backend's head: half of it next; False when it was
        one block already."""
        if length <= 1:
            return False
        self.size = length // 2
        self.halvings += 1
        return True


class _OtherForkError(Exception):
    """The logs' backend holds another block at a chunk's end than the one the batch read: a reorg between the
    reads (or a backend on another fork). The batch is read again (``_read_batch``)."""


def _usdc_logs(
    rpc: EvmRpc, chain: ChainConfig, first: int, last: int, sizer: ChunkSizer, hashes: Mapping[int, str]
) -> tuple[list[EvmLog], int]:
    """The merchant's USDC logs in ``first..last`` and the last block they are vouched for (``first - 1``: none).

    Each chunk's logs are read in one batch with the hash of the chunk's last block (``EvmRpc.logs_beside``): a
    backend that answers the block the batch read (``hashes``) there had it when it read the logs, so its logs
    cover the chunk. A backend behind it (nothing there: a load-balanced provider's backend a block behind the one
    that answered the blocks) answers logs only up to its own head, without an error (go-ethereum#24078) - an empty
    answer would pass the per-log check and the cursor would move past a payment made through a contract (a
    Transfer log only). Its chunk is halved until its end is a block that backend has; one block it does not have
    ends the logs vouched for there (D386). Another hash there: ``_OtherForkError``."""
    topics = [TRANSFER_TOPIC, None, address_topic(chain.merchant_address)]
    found: list[EvmLog] = []
    start = first
    while start <= last:
        end = min(last, start + sizer.size - 1)
        try:
            chunk, answered = rpc.logs_beside(chain.usdc, topics, start, end)
        except RpcRangeError:
            if not sizer.refused():
                raise
            continue
        if answered is None:  # that backend is behind ``end``: fewer blocks, or stop before ``start``
            if sizer.behind(end - start + 1):
                continue
            return found, start - 1
        if answered != hashes.get(end):
            raise _OtherForkError(f"the logs' backend has {answered} at {end}, the batch read {hashes.get(end)}")
        found.extend(chunk)
        sizer.succeeded()
        start = end + 1
    return found, last


class ForkBelowError(Exception):
    """The batch's first block does not descend from the block the cursor was just moved to: a reorg replaced it
    during the run. The run stops scanning; the next one finds the cursor's block gone and rolls back."""


class LogsBehindError(Exception):
    """No block of the batch has its logs vouched for: the backend answering ``eth_getLogs`` is behind the batch's
    first block (``_usdc_logs``). The run stops scanning, its cursor before the batch; the next run reads it again."""


def _read_batch(
    rpc: EvmRpc, chain: ChainConfig, first: int, last: int, sizer: ChunkSizer, parent: str | None
) -> tuple[list[EvmBlock], list[EvmLog]]:
    """The blocks ``first..`` (at most ``last``) and the merchant's USDC logs in them, read from one fork (D287): the
    blocks first, then the logs, and each log's block hash must be the block read at its height, each block the
    parent of the next, each logs chunk read beside its last block's hash as the batch read it; a reorg between the
    reads is read again (up to ``SCAN_ATTEMPTS`` times, then the run fails and the next resumes from the cursor). The
    blocks returned end where the logs are vouched for (``_usdc_logs``: a logs backend behind the blocks' one): fewer
    than asked, the run stops after them (``LogsBehindError`` when none). A first block that is not the child of
    ``parent`` (the hash the cursor holds for ``first - 1``): ``ForkBelowError``. A reorg after both reads leaves
    the cursor on the old fork's hash, which the next run's reorg check finds."""
    for _ in range(SCAN_ATTEMPTS):
        blocks = rpc.blocks(first, last)
        if not blocks or blocks[-1].number != last:
            raise RpcUnavailableError(f"the node did not return blocks {first}..{last} whole")
        if parent is not None and blocks[0].parent_hash not in ("", parent):
            raise ForkBelowError(f"block {first} does not descend from the cursor's block {first - 1} ({parent})")
        linked = all(child.parent_hash in ("", block.hash) for block, child in pairwise(blocks))
        hashes = {block.number: block.hash for block in blocks}
        try:
            logs, through = _usdc_logs(rpc, chain, first, last, sizer, hashes)
        except _OtherForkError:
            continue
        if linked and all(hashes.get(log.block_number) == log.block_hash for log in logs):
            if through < first:
                raise LogsBehindError(f"the logs' backend does not have block {first} yet")
            return [block for block in blocks if block.number <= through], logs
    raise RpcUnavailableError(f"blocks {first}..{last} changed under {SCAN_ATTEMPTS} reads running (a reorg)")


def _scan(
    rpc: EvmRpc, sink: PaymentSink, chain: ChainConfig, first: int, last: int, sizer: ChunkSizer, parent: str | None
) -> tuple[int, int, int, tuple[int, str]]:
    """Report every merchant credit in ``first..last`` (read from one fork, ``_read_batch``; it may end before
    ``last``, where the logs are vouched for); returns (transfers reported, failed among them, transactions in the
    blocks, the number and hash of the last block as scanned - the cursor's, so that a reorg during the run is found
    by the next one). Only these blocks are held in memory."""
    blocks, logs = _read_batch(rpc, chain, first, last, sizer, parent)
    stamps = {block.number: block.timestamp for block in blocks}
    watched = [tx for block in blocks for tx in block.transactions if wants_receipt(chain, tx)]
    receipts = rpc.receipts([tx.hash for tx in watched]) if watched else {}
    seen: dict[str, ObservedTransfer] = {}
    for log in logs:
        credit = usdc_credit(chain, log, stamps.get(log.block_number))
        if credit is not None:
            seen[credit.payment_id] = credit
    for tx in watched:
        receipt = receipts.get(tx.hash)
        if receipt is None:  # mined in a scanned block, so it has a receipt; a node that lost it: the run fails
            raise RpcUnavailableError(f"no receipt for {tx.hash} mined in block {tx.block_number}")
        for credit in transaction_credits(chain, tx, receipt, stamps.get(receipt.block_number)):
            seen.setdefault(credit.payment_id, credit)  # USDC logs were already found by eth_getLogs
    ordered = sorted(seen.values(), key=lambda t: (t.block_number, t.index if t.index >= 0 else 1 << 30, t.tx_id))
    sink.record_batch(ordered)  # one batch: one "payment seen" per bill (D216), before the cursor moves past it
    transactions = sum(len(block.transactions) for block in blocks)
    ending = (blocks[-1].number, blocks[-1].hash)
    return len(ordered), sum(1 for credit in ordered if not credit.succeeded), transactions, ending


def _fork_point(
    rpc: EvmRpc, cursor: Cursor, finalized: BlockRef, bound: int, still: str | None
) -> tuple[int, str | None]:
    """Where the cursor's fork left the canonical chain, and what the node answered at the finalized height.

    The walk follows the old fork's parents from the cursor's stored hash (``eth_getBlockByHash``), each step one
    JSON-RPC batch with the canonical hash at the parent's height, the finalized block's and the cursor's
    (``parent_beside``: one backend's view): the first parent the canonical chain has at its height is the fork point
    - the rescan starts above it, so a 1-block head reorg rescans 1 block. It stops at ``bound`` (the rescan then
    starts there): when the node no longer has an old-fork block (it dropped the dead fork, or never had it), when
    the walk reaches it (a reorg at least that deep), after ``WALK_STEPS`` batches (a long walk would outlast the
    function's timeout every run), when a step's answer at the cursor's height is another hash than ``still`` (the
    run's canonical hash there: a backend still on the old fork has the old parent at its height - the walk would
    stop at once; D342, amended (review 5)), or when a step's answer at the finalized height is not the run's
    finalized block (another backend's view proves nothing; that answer is returned for the caller to name). Nothing
    at the cursor's height is a backend behind, not another fork: the same step is asked again, counted among the
    ``WALK_STEPS`` (D342, amended (review 6)). Pending payments' blocks are not trusted as shared: the fast path and
    the finality pass store a payment's NEW-fork block, which says nothing about the blocks below it (D342, amended
    (review 4))."""
    number, block_hash = cursor.block_number, cursor.block_hash
    for _ in range(WALK_STEPS):
        if number - 1 <= bound:
            break
        heights = list(dict.fromkeys([finalized.number, number - 1, cursor.block_number]))
        parent, read = rpc.parent_beside(block_hash, heights)
        answered = read.get(finalized.number)
        if answered != finalized.hash or still is None:
            return bound, answered
        at_cursor = read.get(cursor.block_number)
        if at_cursor is None:  # a backend behind the cursor's height: the same step again (D342, amended (review 6))
            continue
        if parent is None or at_cursor != still:  # another fork's view at the cursor: unproven
            return bound, answered
        if read.get(number - 1) == parent:
            return number - 1, answered
        number, block_hash = number - 1, parent
    return bound, finalized.hash


def _common_ancestor(
    rpc: EvmRpc,
    cursor: Cursor,
    pending: Sequence[PendingPayment],
    finalized: BlockRef,
    stuck: list[str],
    *,
    window: int = 0,
    floor: int = -1,
    still: str | None = None,
) -> tuple[int, set[str]]:
    """The block the rescan starts above, and the pending payments above ``finalized`` whose block left the chain.

    The start is the fork point the walk finds (``_fork_point``: the old fork's parents followed from the cursor's
    stored hash until the canonical chain has one), else the bound: ``window`` blocks below the cursor
    (``ChainConfig.reorg_window``: a block the watcher scanned was at most the head then, and blocks more than the
    finality lag below the head were final then, so shared), at most ``finalized`` - the fork may be below it, a reorg
    noticed only once finality passed it (the watcher down, or behind) - never below ``floor`` (the block before
    ``start_block``), and always below the cursor (its block was replaced; D342, amended (review 6)). Blocks at or below
    ``finalized`` rescanned are final: reporting them again is idempotent per payment id, and a payment re-mined there
    is recorded in its new block (D342, amended (review 3)). A pending payment's canonical block never proves the blocks
    below it shared: one re-mined on the new fork (the fast path, the finality pass's move) has a canonical block above
    blocks of the new fork nobody read (D342, amended (review 4)). A pending payment at or below the walk's start whose
    block left the chain says the reorg went deeper, or the walk's and the pending read's backends disagree: the rescan
    starts at the bound, the payment is not orphaned this run (the rescan reads its height again if above the bound; the
    finality pass reads its transaction once its height is final) and is named in ``stuck`` (the alarm; D342, amended
    (review 5)). Only the other payments above ``finalized`` are orphaned here; those at or below it are the finality
    pass's (after the rescan), which reads their transactions. ``still`` is the run's canonical hash at the cursor's
    height: a walk step is trusted only beside it (``_fork_point``); without it, the bound.

    Every read is beside the finalized block's height (``parent_beside``, ``_anchored_hashes``): a backend whose
    answer there is not the run's finalized block proves nothing - no payment is orphaned, the rescan starts at the
    bound. One that answered another hash there (a dead fork) is named in ``stuck`` (D342, amended (orphan)); one
    that answered nothing there is only behind (a lagging backend: every height it does not have is unknown, as
    before the anchor), silent (D342, amended (review 2))."""
    top = min(finalized.number, cursor.block_number)
    bound = min(cursor.block_number - 1, max(floor, min(top, cursor.block_number - window)))  # its block replaced
    start, answered = _fork_point(rpc, cursor, finalized, bound, still)
    candidates = sorted({p.block_number for p in pending if p.block_number <= cursor.block_number})
    canonical: dict[int, str | None] = {}
    if candidates and answered == finalized.hash:
        canonical, answered = _anchored_hashes(rpc, candidates, finalized)
    if answered is None:  # behind the finalized block: it knows nothing above it, nothing to say
        return bound, set()
    if answered != finalized.hash:
        stuck.append(
            f"{cursor.chain}:rollback: the node answered {answered} for the finalized block {finalized.number} "
            f"({finalized.hash}) beside the rollback's reads ({len(candidates)} pending payments' heights): none "
            f"orphaned, rescanning from {bound + 1}"
        )
        return bound, set()
    left = {p.payment_id: p for p in pending if canonical.get(p.block_number) not in (None, p.block_hash)}
    deeper = sorted(pid for pid, p in left.items() if p.block_number <= start)
    below = [pid for pid in deeper if left[pid].block_number <= bound]
    between = [pid for pid in deeper if left[pid].block_number > bound]
    if below:
        stuck.append(
            f"{cursor.chain}:rollback: the block of {', '.join(below)} (at or below {bound}) left the chain: the "
            f"reorg goes deeper than the rescan from {bound + 1} (reorg_window {window}); the new fork's blocks "
            "below are not scanned; the finality pass reads their transactions once their height is final"
        )
    if between:
        stuck.append(
            f"{cursor.chain}:rollback: the block of {', '.join(between)} (above {bound}, at or below {start}, where "
            f"the walk found the fork) left the chain: the walk's and the pending read's backends disagree; "
            f"rescanning from {bound + 1}, not orphaned this run (the rescan reads the new fork's blocks there; the "
            "finality pass reads their transactions once their height is final)"
        )
    if deeper:  # below the walk's fork point: the walk proves nothing (D342, amended (review 5))
        start = bound
    orphaned = {pid for pid, p in left.items() if p.block_number > finalized.number and pid not in deeper}
    return start, orphaned


def _orphan_alone(sink: PaymentSink, pending: Sequence[PendingPayment], ids: set[str], stuck: list[str]) -> int:
    """The rollback's orphaning, each payment alone (``settle_alone``): one that fails is named ``stuck`` and stays
    SEEN on its old block while the run goes on; the finality pass finds that block not canonical once its height is
    final and orphans it then (D323). Returns how many were orphaned."""
    hashes = {p.payment_id: p.block_hash for p in pending}
    return sum(settle_alone(stuck, pid, partial(sink.orphaned, pid, hashes[pid])) for pid in sorted(ids))


def _floor(chain: ChainConfig, first_block: int | None) -> int:
    """The block a rollback never rescans below: the one before ``start_block``, else before the watcher's first block
    (the cursor's ``first_block``: blocks from before the watcher ran would bring old credits back as new alerts);
    -1 (none) for a cursor written before it kept one (D342, amended (review 4))."""
    lowest = chain.start_block if chain.start_block is not None else first_block
    return lowest - 1 if lowest is not None else -1


def _cursor_back(
    rpc: EvmRpc, cursors: CursorStore, cursor: Cursor | None, last: int, stamp: datetime, first_block: int | None
) -> None:
    """Rolled back and nothing scanned: the cursor goes back to the ancestor ``last`` (at or below finalized)."""
    ancestor_hash = rpc.block_hashes([last]).get(last)
    if ancestor_hash is not None and cursor is not None:
        with contextlib.suppress(CursorConflictError):
            moved = Cursor(cursor.chain, last, ancestor_hash, updated_at=stamp, first_block=first_block)
            cursors.put(moved, expected=cursor)


def watch(
    chain: ChainConfig,
    rpc: EvmRpc,
    cursors: CursorStore,
    sink: PaymentSink,
    now: datetime | None = None,
) -> RunReport:
    """One bounded run of the EVM watcher for ``chain`` (see the module docstring)."""
    calls_before = rpc.calls
    cursor = cursors.get(chain.key)
    head = rpc.block_ref("latest")
    finalized = rpc.block_ref("finalized")
    pending = list(sink.pending(chain.key))
    rolled_back_to: int | None = None
    orphaned_ids: set[str] = set()
    stuck: list[str] = []
    rolled_back = 0  # payments the rollback orphaned
    # a chain without a cursor starts at its configured block, else at the finalized block (never at genesis)
    next_block = chain.start_block if chain.start_block is not None else finalized.number
    first_block = next_block if cursor is None else cursor.first_block  # kept by every move of the cursor
    if cursor is not None:
        next_block = cursor.block_number + 1
        still = rpc.block_hashes([cursor.block_number]).get(cursor.block_number)
        if still is None:  # a node behind the cursor (a lagging backend) knows nothing: not a reorg
            raise RpcUnavailableError(f"the node has no block {cursor.block_number} (the cursor's): behind it")
        if still != cursor.block_hash:
            rolled_back_to, orphaned_ids = _common_ancestor(
                rpc,
                cursor,
                pending,
                finalized,
                stuck,
                window=chain.reorg_window,
                floor=_floor(chain, first_block),
                still=still,
            )
            next_block = rolled_back_to + 1
            rolled_back = _orphan_alone(sink, pending, orphaned_ids, stuck)
    limit = min(head.number, next_block + chain.max_blocks_per_run - 1)
    stamp = now or datetime.now(UTC)
    seen = failed = transactions = 0
    sizer = ChunkSizer(chain.initial_chunk)
    written = cursor
    last = next_block - 1  # the last block scanned
    start = next_block
    while start <= limit and transactions < chain.max_transactions_per_run:
        end = min(limit, start + chain.scan_batch - 1)
        parent = written.block_hash if written is not None and written.block_number == start - 1 else None
        try:
            found, failures, txs, (scanned, end_hash) = _scan(rpc, sink, chain, start, end, sizer, parent)
        except (ForkBelowError, LogsBehindError):
            break  # the cursor's block replaced meanwhile (the next run rolls back from it), or the logs' backend
            # has not reached the batch yet (the next run reads it, D386)
        seen, failed, transactions, last = seen + found, failed + failures, transactions + txs, scanned
        moved = Cursor(chain.key, scanned, end_hash, updated_at=stamp, first_block=first_block)
        try:  # per batch: a run that stops (a timeout, a node error) keeps what it scanned
            cursors.put(moved, expected=written)
        except CursorConflictError:
            break  # another run moved the cursor first: what this one reported is idempotent; its cursor stands
        written = moved
        # logs vouched for only up to ``scanned`` (a logs backend behind, D386): the run ends there
        start, limit = scanned + 1, (limit if scanned == end else scanned)
    if rolled_back_to is not None and written is cursor and last >= 0:
        _cursor_back(rpc, cursors, cursor, last, stamp, first_block)
    finalized_count, orphaned_count = _finality(rpc, sink, chain, finalized, stuck, exclude=orphaned_ids)
    orphaned_count += rolled_back
    return RunReport(
        chain=chain.key,
        from_block=next_block,
        to_block=last if last >= next_block else limit,
        transfers_seen=seen,
        finalized=finalized_count,
        orphaned=orphaned_count,
        failed=failed,
        rpc_calls=rpc.calls - calls_before,
        rolled_back_to=rolled_back_to,
        caught_up=last >= head.number,
        lag=max(head.number - last, 0),
        stuck=tuple(stuck),
        # a drop at or below it is final, and the blocks up to it were read: its transaction is in none of them
        # (re-mined there, it was seen again and counts) - D449
        final_through=min(finalized.number, last),
    )


def _finality(
    rpc: EvmRpc,
    sink: PaymentSink,
    chain: ChainConfig,
    finalized: BlockRef,
    stuck: list[str],
    exclude: Iterable[str] = (),
) -> tuple[int, int]:
    """SEEN payments at or below the finalized block: FINALIZED if their block hash is canonical. One whose block was
    replaced is looked up by its transaction first: mined elsewhere, it moves to that block (FINALIZED there once that
    block is final too); only a transaction a backend holding the finalized block does not have mined (no receipt,
    read alone beside that block: ``_read_alone``) is ORPHANED - one with a receipt
    in a block the pass cannot confirm waits, named stuck once that block is at or below ``finalized``. A height the
    node answers
    nothing for is unknown, not gone: the payment waits for the next run. A payment whose step fails is added to
    ``stuck`` and the others go on (``settle_alone``). The heights are read beside the finalized block's
    (``_anchored_hashes``): answered another block there, the pass settles nothing and says so in ``stuck``."""
    skip = set(exclude)
    due = [p for p in sink.pending(chain.key) if p.block_number <= finalized.number and p.payment_id not in skip]
    if not due:
        return 0, 0
    canonical, answered = _anchored_hashes(rpc, sorted({p.block_number for p in due}), finalized)
    if answered != finalized.hash:  # another backend's view (a dead fork, far behind): nothing it says is proven
        stuck.append(
            f"{chain.key}:finality: the node answered {answered} for the finalized block {finalized.number} "
            f"({finalized.hash}) beside {len(due)} due payments' heights: none settled, read again next run"
        )
        return 0, 0
    replaced = [p for p in due if canonical.get(p.block_number) not in (None, p.block_hash)]
    moved, unrecorded = _relocated(rpc, sink, chain, replaced, stuck, canonical, finalized)
    finalized_count = orphaned_count = 0
    for payment in due:
        here = canonical.get(payment.block_number)
        pid = payment.payment_id
        if pid in unrecorded:
            continue  # mined elsewhere but its record there failed, the node's answers disagree (named stuck), or
            # its receipt's block is not confirmed yet (named stuck once final): pending as it was, read next run
        if here == payment.block_hash:
            finalized_count += settle_alone(stuck, pid, partial(sink.finalized, pid, payment.block_hash))
        elif pid in moved:
            new_block = moved[pid]
            if new_block.block_number <= finalized.number:
                finalized_count += settle_alone(stuck, pid, partial(sink.finalized, pid, new_block.block_hash))
        elif here is not None:
            orphaned_count += settle_alone(stuck, pid, partial(sink.orphaned, pid, payment.block_hash))
    return finalized_count, orphaned_count


def _stalled(
    rpc: EvmRpc,
    sink: PaymentSink,
    replaced: Sequence[PendingPayment],
    tx_hash: str,
    stuck: list[str],
    entry: str,
    finalized: BlockRef,
    receipt_block: int = 0,
) -> None:
    """``entry`` (none if empty) names the transaction's payments stuck at a final height; those the finalized block
    is ``STALL_SECONDS`` past stop holding their bills (``PaymentSink.stalled``, D398, D419; review rcr: not on
    the first pass). Past in the chain's own time (D418): the finalized block's timestamp less that of the block at
    the later of the payment's height and ``receipt_block`` (the receipt's, that its pass cannot confirm), read in
    one batch beside the finalized block's height (``rpc.headers``; a backend whose answer there is another block, or
    none at the height, proves no time: read again next run). Blocks are 12 s apart on Ethereum, 2 s on Base: a
    count of blocks was ~13 minutes on one and ~2 on the other."""
    if not entry:
        return
    stuck.append(entry)
    due = sorted((p for p in replaced if p.tx_id == tx_hash), key=lambda p: p.payment_id)
    heights = {p.payment_id: max(p.block_number, receipt_block) for p in due}
    if not due or min(heights.values()) >= finalized.number:
        return  # no time has passed since the block was final: nothing to read
    read = rpc.headers([finalized.number, *sorted({h for h in heights.values() if h != finalized.number})])
    anchor = read.get(finalized.number)
    if anchor is None or anchor.hash != finalized.hash:
        return
    for payment in due:
        mined = read.get(heights[payment.payment_id])
        if mined is not None and finalized.timestamp - mined.timestamp >= STALL_SECONDS:
            pid = payment.payment_id
            settle_alone(stuck, pid, partial(sink.stalled, pid, payment.block_hash))


def _anchored_hashes(
    rpc: EvmRpc, numbers: Sequence[int], finalized: BlockRef
) -> tuple[dict[int, str | None], str | None]:
    """The hashes at ``numbers``, each read beside the ``finalized`` block's height in one JSON-RPC batch (at most
    ``ANCHORED_READ`` heights a read, so one HTTP batch of the adapter's), and what the node answered there: the
    hash the run read for it when every read agrees, else the first other answer (None for a node without it).
    Blocks link by hash, so a backend whose block at that height is the run's finalized block has the canonical
    block at every height below it; a backend on a dead fork (or far behind) answers something else there and its
    other answers prove nothing (D342, amended)."""
    hashes: dict[int, str | None] = {}
    answered: str | None = finalized.hash
    for start in range(0, len(numbers), ANCHORED_READ):
        part = list(numbers[start : start + ANCHORED_READ])
        read = rpc.block_hashes([finalized.number, *(n for n in part if n != finalized.number)])
        hashes.update({n: read.get(n) for n in part})
        if answered == finalized.hash:
            answered = read.get(finalized.number)
    return hashes, answered


def _relocated(
    rpc: EvmRpc,
    sink: PaymentSink,
    chain: ChainConfig,
    replaced: Sequence[PendingPayment],
    stuck: list[str],
    canonical: Mapping[int, str | None],
    finalized: BlockRef,
) -> tuple[dict[str, ObservedTransfer], set[str]]:
    """The credits of ``replaced`` payments whose transactions are mined in another canonical block, reported again
    there (settlement stores the new block); keyed by payment id. A re-included transaction's other credits (a log
    index that changed with the block) are reported too, as new payments, before its replaced ones. A transaction
    whose credits the sink fails to record is named ``stuck`` (``ports.record_alone``) by its replaced payment, and
    all its replaced payments are returned second - by transaction, not by id: re-mined at another log index, a
    payment's credit there has another id, and the old one must not be orphaned while its credit is unrecorded. They
    stay pending on their old block - neither moved nor orphaned - and the next run reads the transaction again, its
    new payments with it (D323, D332).

    ``canonical``: the hashes the pass read at the replaced payments' heights. A receipt whose block is at or below
    ``finalized`` where an anchored read (that one, or this function's read of the receipts' blocks answered with the
    finalized block) has another block is from a dead fork: the canonical chain holds another block at that final
    height, so the transaction is not in the receipt's block. Moved "there", a transaction replaced by a speed-up was
    finalized on the dead fork beside its replacement (D342); left waiting, a cancelled one kept its bill PROCESSING
    for as long as a backend served that receipt. Such a transaction, and one with no receipt in the batch, is read
    again alone (``_read_alone``: one batch with the finalized height, so one backend's view): ORPHANED only on a
    backend's "no receipt" that holds the run's finalized block (a payment mined canonically in a final block the
    scan does not read again would be released for good); moved to a final block that batch confirms; else
    waiting, named ``stuck`` (D342, amended (review 2) and (review 3)).

    A receipt whose block the anchored read does not confirm (nothing there: above the reading backend's head; or
    another hash: another fork above ``finalized``; or that read answered from another view), or whose transaction
    is not read, is a mined transaction all the same: its payments wait the same way (orphaned, a payment mined in a
    block the scan already passed was released for good). Above ``finalized`` that is ordinary (the backends agree
    once finality reaches the block), so it is silent; at or below it, named ``stuck`` (D342, amended (orphan)) and
    reported ``PaymentSink.stalled`` once the finalized block is ``STALL_SECONDS`` past it (D418), as a waiting
    suspect is: it stops holding its bill (D398, D419).
    Each ``stuck`` entry this function writes names the payment and the bill it counts for
    (``PendingPayment.invoice_id``), which waits on it; a failed record (``ports.record_alone``) is named by the
    payment alone, as a failed settle step is (``settle_alone``: ``<payment id>: <error>``)."""
    if not replaced:
        return {}, set()
    tx_hashes = sorted({p.tx_id for p in replaced})
    receipts = rpc.receipts(tx_hashes)
    heights, answered = _anchored_hashes(rpc, sorted({r.block_number for r in receipts.values()}), finalized)
    wanted = {p.payment_id for p in replaced}
    held = {tx_hash: min(p.payment_id for p in replaced if p.tx_id == tx_hash) for tx_hash in tx_hashes}
    bills = {p.payment_id: p.invoice_id for p in replaced}

    def blocking(key: str) -> str:
        """What a stuck entry adds about the bill that waits on the payment ``key``."""
        bill = bills.get(key)
        return f"; bill {bill} waits on it" if bill else ""

    groups: dict[str, list[ObservedTransfer]] = {}
    disputed: set[str] = set()  # transactions whose receipts the node's answers do not settle either way
    waiting: set[str] = set()  # transactions with a receipt whose block the pass cannot confirm (yet)
    # read again alone beside the finalized block: no receipt (None), or one in a block off the canonical chain and
    # the hash the anchored read has there
    suspects: dict[str, tuple[EvmReceipt, str] | None] = {}
    for tx_hash, key in held.items():
        receipt = receipts.get(tx_hash)
        if receipt is None:
            suspects[tx_hash] = None
            continue
        first = canonical.get(receipt.block_number)  # a due height (at or below finalized), anchored by the pass
        if first is not None and first != receipt.block_hash:
            suspects[tx_hash] = (receipt, first)
            continue
        if answered != finalized.hash:  # the receipt's block read from another view than the pass's: unproven
            stuck.append(
                f"{key}: the node places {tx_hash} in block {receipt.block_number} ({receipt.block_hash}) but "
                f"answered {answered} for the finalized block {finalized.number} beside it: waiting until its "
                f"answers agree{blocking(key)}"
            )
            disputed.add(tx_hash)
            continue
        read = heights.get(receipt.block_number)
        if receipt.block_number <= finalized.number and read is not None and read != receipt.block_hash:
            suspects[tx_hash] = (receipt, read)
            continue
        tx = rpc.transaction(tx_hash) if read == receipt.block_hash else None
        if tx is None:  # mined (a receipt), but its block is not confirmed canonical (yet), or no transaction read:
            # not "not mined" - its payments wait SEEN on their old block, read again next run; named stuck once
            # finality has passed the receipt's block
            waiting.add(tx_hash)
            if receipt.block_number <= finalized.number:
                what = "no transaction" if read == receipt.block_hash else f"read {read} there"
                _stalled(
                    rpc,
                    sink,
                    replaced,
                    tx_hash,
                    stuck,
                    f"{key}: the node places {tx_hash} in block {receipt.block_number} ({receipt.block_hash}), at "
                    f"or below the finalized block {finalized.number}, but {what}: waiting until its answers "
                    f"agree{blocking(key)}",
                    finalized,
                    receipt.block_number,
                )
            continue
        credits = transaction_credits(chain, tx, receipt)  # no block time: settlement keeps the first one
        # a replaced payment is recorded last: if a new credit of its transaction fails, it stays replaced (retried)
        groups[key] = sorted(credits, key=lambda credit: credit.payment_id in wanted)
    for tx_hash, suspect in suspects.items():  # released only on one backend's word that holds the final chain
        verdict = _read_alone(rpc, chain, tx_hash, suspect, finalized)
        if isinstance(verdict, list):  # mined in a final block that backend holds: moved there
            groups[held[tx_hash]] = sorted(verdict, key=lambda credit: credit.payment_id in wanted)
        elif verdict is not None:  # None: not mined, its replaced payments orphaned (``_finality``); else waiting
            disputed.add(tx_hash)
            _stalled(
                rpc,
                sink,
                replaced,
                tx_hash,
                stuck,
                verdict and f"{held[tx_hash]}: {verdict}: waiting{blocking(held[tx_hash])}",
                finalized,
                suspect[0].block_number if suspect else 0,  # its receipt's block: the wait runs from there (D418)
            )
    failed = record_alone(stuck, sink, groups)
    failed_txs = {tx_hash for tx_hash, key in held.items() if key in failed}
    found = {credit.payment_id: credit for key, group in groups.items() if key not in failed for credit in group}
    unrecorded = {p.payment_id for p in replaced if p.tx_id in failed_txs | disputed | waiting}
    return {pid: credit for pid, credit in found.items() if pid in wanted}, unrecorded


def _read_alone(
    rpc: EvmRpc, chain: ChainConfig, tx_hash: str, suspect: tuple[EvmReceipt, str] | None, finalized: BlockRef
) -> list[ObservedTransfer] | str | None:
    """A replaced payment's transaction read again before it is released: its receipt alone, in ONE batch with the
    finalized block's height (and the suspect receipt's block's), so one backend answers it all. None - release it:
    that backend has the run's finalized block there (so the final chain below it) and no receipt. The credits -
    move them: its receipt is in a block at or below ``finalized`` that the same batch answers with the receipt's
    hash. Else what keeps it waiting: a stuck entry's text, or "" (silent: a receipt above ``finalized``, ordinary).
    A payment released on a weaker answer may be mined canonically in a final block the scan never reads again (a
    reorg noticed only once finality passed the fork: the rescan starts above it) - released for good, the bill
    reopened and paid twice (D342, amended (review 3))."""
    numbers = [finalized.number]
    if suspect is not None and suspect[0].block_number != finalized.number:
        numbers.append(suspect[0].block_number)
    again, hashes = rpc.receipt_beside(tx_hash, numbers)
    at_final = hashes.get(finalized.number)
    held = at_final == finalized.hash
    if held and again is None:
        return None
    if held and again is not None and again.block_number <= finalized.number:
        tx = rpc.transaction(tx_hash) if hashes.get(again.block_number) == again.block_hash else None
        if tx is not None:
            return transaction_credits(chain, tx, again)  # no block time: settlement keeps the first one
    if held and again is not None and again.block_number > finalized.number:
        return ""  # mined above the finalized block, not final yet: read again next run, silent
    first = "no receipt for it"
    if suspect is not None:
        receipt, read = suspect
        first = f"it in block {receipt.block_number} ({receipt.block_hash}), where the canonical chain has {read}"
    why = "its answers disagree" if held else "not a backend holding the final chain"
    then = "no receipt" if again is None else f"block {again.block_number} ({again.block_hash})"
    return (
        f"the node answered {first}; read again alone beside the finalized block {finalized.number} "
        f"({finalized.hash}) it answered {at_final} there and {then} ({why})"
    )


# --- the fast path ----------------------------------------------------------------------------------------------------
class EvmTransactionInspector:
    """TransactionInspector for an EVM chain: the merchant credits in one submitted transaction, as the watcher would
    report them (USDC logs, native value; a reverted transaction gives what it tried with ``succeeded=False``)."""

    def __init__(self, chain: ChainConfig, rpc: EvmRpc) -> None:
        self.chain = chain
        self.rpc = rpc

    def transfers(self, tx_id: str) -> Sequence[ObservedTransfer]:
        try:
            tx_hash = normalise_tx_hash(tx_id)
        except ValueError as exc:
            raise MalformedTransactionIdError(str(exc)) from exc
        tx = self.rpc.transaction(tx_hash)
        if tx is None:
            raise TransactionNotFoundError(f"{self.chain.key} does not know transaction {tx_hash}")
        receipt = self.rpc.receipts([tx_hash]).get(tx_hash)
        if receipt is None:
            raise TransactionNotFoundError(f"transaction {tx_hash} on {self.chain.key} is not mined yet")
        header = self.rpc.headers([receipt.block_number]).get(receipt.block_number)
        if header is None or header.hash != receipt.block_hash:  # the node's answers disagree: ask again later
            raise RpcUnavailableError(f"{self.chain.key}: block {receipt.block_number} of {tx_hash} is not readable")
        # lateness is judged by the block's time, as the watcher does (D98), not by when the customer submits it
        return transaction_credits(self.chain, tx, receipt, header.timestamp)


def normalise_tx_hash(tx_id: str) -> str:
    """A transaction hash as 0x + 64 lower-case hex digits; ValueError names what is wrong."""
    text = tx_id.strip().lower()
    body = text.removeprefix("0x")
    if len(body) != 64 or any(c not in "0123456789abcdef" for c in body):
        raise ValueError(f"not an EVM transaction hash (0x and 64 hex digits): {tx_id!r}")
    return "0x" + body
