"""The EVM watcher on a real anvil node (web3.py adapter, the committed 6-decimal test USDC), reporting to an in-memory
PaymentSink held to the port's contract. Amounts, blocks and hashes are read from the chain's own receipts, never from
the watcher."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, replace
from datetime import UTC, datetime, timedelta
from decimal import Decimal
from typing import Any

import pytest
from web3 import Web3

from kilo_crypto_watch.evm import NATIVE_INDEX, EvmTransactionInspector, watch
from kilo_crypto_watch.evm_rpc import Web3EvmRpc
from kilo_crypto_watch.model import (
    Bill,
    BillFlag,
    BillStatus,
    ChainConfig,
    Cursor,
    ObservedTransfer,
    Payment,
    PaymentStatus,
    QuoteStatus,
    RunReport,
)
from kilo_crypto_watch.ports import (
    BlockRef,
    EvmBlock,
    EvmLog,
    EvmReceipt,
    RpcUnavailableError,
    TransactionNotFoundError,
)
from kilo_crypto_watch.settlement import remaining_usd
from kilo_dev import contracts
from tests.conftest import Stack
from tests.crypto_core_fakes import Harness, bill, harness, quote
from tests.crypto_fakes import MemoryCursorStore, MemoryPaymentSink
from tests.evm_chain import (
    ETHER,
    FINALITY_LAG,
    MERCHANT,
    OTHER,
    PAYER,
    USDC,
    Chain,
    LaggingLogsProxy,
    RangeLimitProxy,
    deploy,
)


class Watcher:
    """One chain's watcher as the scheduled handler runs it: the same cursor store and sink across runs."""

    def __init__(self, config: ChainConfig) -> None:
        self.config = config
        self.rpc = Web3EvmRpc(config.rpc_url)
        self.cursors = MemoryCursorStore()
        self.sink = MemoryPaymentSink()

    def run(self) -> Any:
        return watch(self.config, self.rpc, self.cursors, self.sink)


def hexhash(value: Any) -> str:
    return "0x" + bytes(value).hex()


def test_given_an_exact_usdc_payment_when_the_watcher_runs_then_it_is_seen_then_finalized(chain: Chain) -> None:
    watcher = Watcher(chain.config())
    chain.mint(PAYER, 100 * USDC)
    tx = chain.pay_usdc(PAYER, MERCHANT, 42_500_000)  # $42.50
    chain.pay_usdc(PAYER, OTHER, 1 * USDC)  # not to the merchant: not reported
    receipt = chain.receipt(tx)

    report = watcher.run()

    assert report.transfers_seen == 1
    assert report.to_block == chain.head()
    assert report.caught_up
    (seen,) = watcher.sink.with_status(PaymentStatus.SEEN)
    assert (seen.asset, seen.atomic_amount, seen.sender, seen.recipient) == ("USDC", 42_500_000, PAYER, MERCHANT)
    assert (seen.tx_id, seen.index) == (tx, receipt["logs"][0]["logIndex"])
    assert (seen.block_number, seen.block_hash) == (receipt["blockNumber"], hexhash(receipt["blockHash"]))
    assert seen.succeeded
    assert watcher.cursors.get("ethereum") == Cursor(
        "ethereum",
        chain.head(),
        chain.block_hash(chain.head()),
        updated_at=watcher.cursors.cursors["ethereum"].updated_at,
        first_block=watcher.config.start_block,  # the first run's start, kept (the rollback's floor)
    )

    chain.mine(FINALITY_LAG)
    again = watcher.run()

    assert (again.transfers_seen, again.finalized) == (0, 1)
    assert watcher.sink.status[seen.payment_id] is PaymentStatus.FINALIZED


def test_given_a_native_eth_payment_when_the_watcher_runs_then_the_block_scan_reports_it(chain: Chain) -> None:
    watcher = Watcher(chain.config())
    tx = chain.pay_eth(PAYER, MERCHANT, 12_300_000_000_000_000)  # 0.0123 ETH
    chain.pay_eth(PAYER, OTHER, ETHER)  # elsewhere: not reported
    receipt = chain.receipt(tx)

    report = watcher.run()

    assert report.transfers_seen == 1
    (seen,) = watcher.sink.with_status(PaymentStatus.SEEN)
    assert (seen.asset, seen.index, seen.atomic_amount) == ("ETH", NATIVE_INDEX, 12_300_000_000_000_000)
    assert (seen.sender, seen.recipient, seen.tx_id) == (PAYER, MERCHANT, tx)
    assert (seen.block_number, seen.block_hash) == (receipt["blockNumber"], hexhash(receipt["blockHash"]))


def test_given_a_reverted_usdc_transfer_when_the_watcher_runs_then_it_is_failed_and_pending_until_its_block_is_final(
    chain: Chain,
) -> None:
    """The port: a FAILED payment stays pending (``failed=True``) until its block is final - re-included elsewhere
    before that, it might succeed there - and is never pending again once it is."""
    watcher = Watcher(chain.config())
    chain.mint(PAYER, 1 * USDC)
    tx = chain.pay_usdc(PAYER, MERCHANT, 5 * USDC, gas=100_000)  # more than the balance: reverts, still mined
    assert chain.receipt(tx)["status"] == 0

    report = watcher.run()

    assert (report.transfers_seen, report.failed) == (1, 1)
    (failed,) = watcher.sink.with_status(PaymentStatus.FAILED)
    assert (failed.asset, failed.tx_id, failed.atomic_amount, failed.succeeded) == ("USDC", tx, 5 * USDC, False)
    assert (failed.sender, failed.recipient) == (PAYER, MERCHANT)
    (pending,) = watcher.sink.pending("ethereum")
    assert (pending.payment_id, pending.failed, pending.block_hash) == (failed.payment_id, True, failed.block_hash)

    chain.mine(FINALITY_LAG)
    watcher.run()
    assert watcher.sink.pending("ethereum") == []
    assert watcher.sink.status[failed.payment_id] is PaymentStatus.FAILED
    assert watcher.sink.final == {failed.payment_id}


def test_given_a_seen_payment_when_a_reorg_removes_its_block_then_it_is_orphaned_and_the_blocks_rescanned(
    chain: Chain,
) -> None:
    watcher = Watcher(chain.config())
    chain.mint(PAYER, 10 * USDC)
    chain.mine(FINALITY_LAG)  # the mint is final: the reorg below stays above the finalized block
    tx = chain.pay_usdc(PAYER, MERCHANT, 7 * USDC)
    paid_in = chain.receipt(tx)["blockNumber"]
    chain.mine(2)
    watcher.run()
    (seen,) = watcher.sink.with_status(PaymentStatus.SEEN)

    chain.node.call("anvil_reorg", 3, [])  # the last 3 blocks (the payment's among them) replaced by empty ones

    report = watcher.run()

    assert watcher.sink.status[seen.payment_id] is PaymentStatus.ORPHANED
    assert report.orphaned == 1
    assert report.rolled_back_to is not None
    assert report.rolled_back_to < paid_in
    assert report.from_block == report.rolled_back_to + 1
    assert report.transfers_seen == 0  # the rescan of the new blocks finds nothing: the payment is gone
    assert watcher.cursors.cursors["ethereum"].block_hash == chain.block_hash(chain.head())


def test_given_a_payment_reincluded_after_a_reorg_then_it_is_seen_again_in_its_new_block(chain: Chain) -> None:
    watcher = Watcher(chain.config())
    chain.mint(PAYER, 10 * USDC)
    chain.mine(FINALITY_LAG)
    before = chain.node.call("evm_snapshot")
    chain.mine(1)
    tx = chain.pay_usdc(PAYER, MERCHANT, 3 * USDC)
    chain.mine(1)
    watcher.run()
    (first,) = watcher.sink.with_status(PaymentStatus.SEEN)
    raw = chain.w3.eth.get_raw_transaction(tx)  # type: ignore[arg-type]
    chain.node.call("evm_revert", before)  # the fork: the payment's block is gone ...
    chain.mine(2)
    chain.w3.eth.send_raw_transaction(raw)  # ... and the same signed transaction lands in another block
    chain.mine(1)
    moved = chain.receipt(tx)

    report = watcher.run()

    assert report.rolled_back_to is not None
    assert watcher.sink.calls.count(("orphaned", first.payment_id)) == 1
    assert watcher.sink.status[first.payment_id] is PaymentStatus.SEEN
    again = watcher.sink.transfers[first.payment_id]
    assert (again.block_number, again.block_hash) == (moved["blockNumber"], hexhash(moved["blockHash"]))
    assert again.block_hash != first.block_hash


def test_given_5000_blocks_of_downtime_when_runs_are_bounded_then_they_catch_up_without_loss(chain: Chain) -> None:
    watcher = Watcher(chain.config(max_blocks_per_run=1_200, initial_chunk=500))
    chain.mint(PAYER, 100 * USDC)
    watcher.run()  # the cursor is at the head; then the watcher is down
    start = chain.head()
    early = chain.pay_usdc(PAYER, MERCHANT, 1 * USDC)
    chain.mine(2_500)
    middle = chain.pay_eth(PAYER, MERCHANT, ETHER // 100)
    chain.mine(2_497)
    late = chain.pay_usdc(PAYER, MERCHANT, 2 * USDC)
    head = chain.head()
    assert head - start == 5_000

    reports = []
    while not reports or not reports[-1].caught_up:
        reports.append(watcher.run())
        assert len(reports) <= 10

    # 5,000 blocks at 1,200 per run: 1,200 x 4 then 200 - five runs, contiguous, each within its bound
    assert [(r.from_block, r.to_block) for r in reports] == [
        (start + 1, start + 1_200),
        (start + 1_201, start + 2_400),
        (start + 2_401, start + 3_600),
        (start + 3_601, start + 4_800),
        (start + 4_801, start + 5_000),
    ]
    assert [r.caught_up for r in reports] == [False, False, False, False, True]
    reported = {t.tx_id: (t.atomic_amount, watcher.sink.status[pid]) for pid, t in watcher.sink.transfers.items()}
    assert reported == {  # the two older ones passed the finalized tag during the catch-up
        early: (1 * USDC, PaymentStatus.FINALIZED),
        middle: (ETHER // 100, PaymentStatus.FINALIZED),
        late: (2 * USDC, PaymentStatus.SEEN),
    }
    assert sum(r.transfers_seen for r in reports) == 3


def test_given_a_provider_that_refuses_large_ranges_when_scanning_then_chunks_halve_and_grow_back(
    chain: Chain,
) -> None:
    chain.mint(PAYER, 10 * USDC)
    config = chain.config(initial_chunk=400, scan_batch=400)  # the 300 blocks in one batch: eth_getLogs over all
    first = config.start_block
    assert first is not None
    chain.mine(150)
    a = chain.pay_usdc(PAYER, MERCHANT, 1 * USDC)  # block first + 150
    chain.mine(100)
    b = chain.pay_usdc(PAYER, MERCHANT, 2 * USDC)  # block first + 251
    chain.mine(300 - 252)
    assert chain.head() == first + 299  # a 300-block range

    with RangeLimitProxy(chain.node.url, limit=100) as proxy:
        watcher = Watcher(ChainConfig(**{**_fields(config), "rpc_url": proxy.url}))
        report = watcher.run()

    # hand-worked: 400 clipped to 300 refused, 200 refused, 100 ok; doubles to 200 refused, 100 ok; 200 clipped to 100 ok
    assert proxy.ranges == [
        (first, first + 299, True),
        (first, first + 199, True),
        (first, first + 99, False),
        (first + 100, first + 299, True),
        (first + 100, first + 199, False),
        (first + 200, first + 299, False),
    ]
    assert report.caught_up
    assert {t.tx_id: t.atomic_amount for t in watcher.sink.transfers.values()} == {a: 1 * USDC, b: 2 * USDC}


def _fields(config: ChainConfig) -> dict[str, Any]:
    return {name: getattr(config, name) for name in config.__dataclass_fields__}


def test_given_anvils_finalized_tag_then_a_payment_is_final_only_once_the_tag_passes_its_block(chain: Chain) -> None:
    watcher = Watcher(chain.config())
    tx = chain.pay_eth(PAYER, MERCHANT, ETHER)
    block = chain.receipt(tx)["blockNumber"]
    watcher.run()
    (seen,) = watcher.sink.with_status(PaymentStatus.SEEN)

    chain.mine(FINALITY_LAG - 1)  # head = block + 7: finalized = block - 1
    assert chain.w3.eth.get_block("finalized")["number"] == block - 1
    assert watcher.run().finalized == 0
    assert watcher.sink.status[seen.payment_id] is PaymentStatus.SEEN

    chain.mine(1)  # finalized = block
    assert watcher.run().finalized == 1
    assert watcher.sink.status[seen.payment_id] is PaymentStatus.FINALIZED


def test_given_a_run_that_lost_the_cursor_race_then_it_leaves_the_other_runs_cursor(chain: Chain) -> None:
    watcher = Watcher(chain.config())
    watcher.run()
    chain.mine(3)
    theirs = Cursor("ethereum", chain.head() - 1, chain.block_hash(chain.head() - 1))

    class Racing(MemoryCursorStore):
        def get(self, key: str) -> Cursor | None:
            found = super().get(key)
            self.cursors[key] = theirs  # another run writes between this run's read and its write
            return found

    racing = Racing(cursors=dict(watcher.cursors.cursors))
    watch(watcher.config, watcher.rpc, racing, watcher.sink)

    assert racing.cursors["ethereum"] == theirs


# --- the fast path -----------------------------------------------------------------------------------------------------
def test_given_a_submitted_usdc_tx_hash_then_the_inspector_returns_its_merchant_credit(chain: Chain) -> None:
    config = chain.config()
    chain.mint(PAYER, 10 * USDC)
    tx = chain.pay_usdc(PAYER, MERCHANT, 9_990_000)
    receipt = chain.receipt(tx)

    (credit,) = EvmTransactionInspector(config, Web3EvmRpc(config.rpc_url)).transfers(tx.upper().replace("0X", "0x"))

    assert (credit.asset, credit.atomic_amount, credit.sender, credit.recipient) == ("USDC", 9_990_000, PAYER, MERCHANT)
    assert (credit.tx_id, credit.index, credit.block_hash) == (
        tx,
        receipt["logs"][0]["logIndex"],
        hexhash(receipt["blockHash"]),
    )
    assert credit.succeeded


def test_given_submitted_eth_reverted_and_unrelated_txs_then_the_inspector_reports_what_each_did(chain: Chain) -> None:
    config = chain.config()
    inspector = EvmTransactionInspector(config, Web3EvmRpc(config.rpc_url))
    native = chain.pay_eth(PAYER, MERCHANT, 5 * ETHER // 10)
    reverted = chain.pay_usdc(PAYER, MERCHANT, 1 * USDC, gas=100_000)  # PAYER holds no USDC
    unrelated = chain.pay_eth(PAYER, OTHER, ETHER)

    (eth,) = inspector.transfers(native)
    (failed,) = inspector.transfers(reverted)

    assert (eth.asset, eth.index, eth.atomic_amount, eth.succeeded) == ("ETH", NATIVE_INDEX, 5 * ETHER // 10, True)
    assert (failed.asset, failed.atomic_amount, failed.succeeded) == ("USDC", 1 * USDC, False)
    assert inspector.transfers(unrelated) == []
    with pytest.raises(TransactionNotFoundError):
        inspector.transfers("0x" + "ab" * 32)
    with pytest.raises(ValueError, match="64 hex digits"):
        inspector.transfers("0x1234")


# --- reorgs and a node's empty answers ---------------------------------------------------------------------------------
class ReorgAfterScan(Web3EvmRpc):
    """anvil replaces the last ``depth`` blocks right after the run read them and their receipts (a reorg during
    the run, before its cursor is written)."""

    def __init__(self, chain: Chain, depth: int) -> None:
        super().__init__(chain.node.url)
        self.chain = chain
        self.depth = depth

    def receipts(self, tx_hashes: Sequence[str]) -> dict[str, EvmReceipt]:
        read = super().receipts(tx_hashes)
        if self.depth:
            self.chain.node.call("anvil_reorg", self.depth, [])
            self.depth = 0
        return read


class Lagging(Web3EvmRpc):
    """A load-balanced provider whose backend has no answer for some heights (null, as a node behind the head)."""

    def __init__(self, url: str, unknown: set[int]) -> None:
        super().__init__(url)
        self.unknown = unknown

    def headers(self, numbers: Sequence[int]) -> dict[int, BlockRef | None]:
        return {n: (None if n in self.unknown else ref) for n, ref in super().headers(numbers).items()}


class Ranges(Web3EvmRpc):
    """Records the block ranges the watcher loads at once."""

    def __init__(self, url: str) -> None:
        super().__init__(url)
        self.ranges: list[tuple[int, int]] = []

    def blocks(self, first: int, last: int) -> list[EvmBlock]:
        self.ranges.append((first, last))
        return super().blocks(first, last)


def test_given_a_reorg_during_a_run_then_the_cursor_keeps_the_scanned_hash_and_the_next_run_rolls_back(
    chain: Chain,
) -> None:
    chain.mint(PAYER, 10 * USDC)
    chain.mine(FINALITY_LAG)
    config = chain.config(start_block=chain.head() + 1)
    tx = chain.pay_usdc(PAYER, MERCHANT, 4 * USDC)
    chain.mine(1)
    scanned_head = chain.head()
    scanned_hash = chain.block_hash(scanned_head)
    watcher = Watcher(config)
    watcher.rpc = ReorgAfterScan(chain, depth=2)  # the payment's block and the one above, replaced by empty ones

    watcher.run()

    (seen,) = watcher.sink.with_status(PaymentStatus.SEEN)
    assert seen.tx_id == tx
    assert watcher.cursors.cursors["ethereum"].block_hash == scanned_hash  # the block as scanned, not the new fork's
    assert chain.block_hash(scanned_head) != scanned_hash
    report = watch(config, Web3EvmRpc(config.rpc_url), watcher.cursors, watcher.sink)
    assert report.rolled_back_to is not None
    assert watcher.sink.status[seen.payment_id] is PaymentStatus.ORPHANED


def test_given_a_node_that_answers_nothing_for_a_payments_block_then_it_stays_seen_until_it_answers(
    chain: Chain,
) -> None:
    watcher = Watcher(chain.config())
    tx = chain.pay_eth(PAYER, MERCHANT, ETHER // 10)
    paid_in = chain.receipt(tx)["blockNumber"]
    chain.mine(1)  # the cursor above the payment's block
    watcher.run()
    (seen,) = watcher.sink.with_status(PaymentStatus.SEEN)
    chain.mine(FINALITY_LAG + 1)  # finalized passes the payment's block

    lagging = watch(watcher.config, Lagging(chain.node.url, {paid_in}), watcher.cursors, watcher.sink)

    assert (lagging.orphaned, lagging.finalized) == (0, 0)
    assert watcher.sink.status[seen.payment_id] is PaymentStatus.SEEN
    assert watcher.run().finalized == 1
    assert watcher.sink.status[seen.payment_id] is PaymentStatus.FINALIZED


def test_given_a_node_behind_the_cursor_then_the_run_fails_and_nothing_is_orphaned(chain: Chain) -> None:
    watcher = Watcher(chain.config())
    chain.pay_eth(PAYER, MERCHANT, ETHER // 10)
    watcher.run()
    (seen,) = watcher.sink.with_status(PaymentStatus.SEEN)
    cursor = watcher.cursors.cursors["ethereum"]
    chain.mine(2)

    with pytest.raises(RpcUnavailableError, match=f"no block {cursor.block_number}"):
        watch(watcher.config, Lagging(chain.node.url, {cursor.block_number}), watcher.cursors, watcher.sink)

    assert watcher.sink.status[seen.payment_id] is PaymentStatus.SEEN
    assert watcher.cursors.cursors["ethereum"] == cursor
    assert ("orphaned", seen.payment_id) not in watcher.sink.calls


def test_given_a_payment_stored_at_a_replaced_block_then_finality_finds_its_transaction_in_its_new_block(
    chain: Chain,
) -> None:
    """The payment was stored at its first block (a fast-path answer from a node still on the old fork) while the
    cursor already passed the block the transaction is in now: finality reads its receipt before orphaning it."""
    chain.mine(FINALITY_LAG)
    watcher = Watcher(chain.config())
    watcher.run()
    before = chain.node.call("evm_snapshot")
    tx = chain.pay_eth(PAYER, MERCHANT, ETHER // 4)
    old = chain.receipt(tx)
    watcher.run()
    (first,) = watcher.sink.with_status(PaymentStatus.SEEN)
    raw = chain.w3.eth.get_raw_transaction(tx)  # type: ignore[arg-type]
    chain.node.call("evm_revert", before)
    chain.mine(2)
    chain.w3.eth.send_raw_transaction(raw)
    chain.mine(1)
    new = chain.receipt(tx)
    assert new["blockNumber"] == old["blockNumber"] + 2
    head = chain.head()
    watcher.cursors.cursors["ethereum"] = Cursor("ethereum", head, chain.block_hash(head))  # past the new block
    chain.mine(FINALITY_LAG + 1)

    report = watcher.run()

    assert (report.finalized, report.orphaned) == (1, 0)
    assert watcher.sink.status[first.payment_id] is PaymentStatus.FINALIZED
    moved = watcher.sink.transfers[first.payment_id]
    assert (moved.block_number, moved.block_hash) == (new["blockNumber"], hexhash(new["blockHash"]))


# --- bounded runs ------------------------------------------------------------------------------------------------------
def test_given_no_cursor_and_no_start_block_then_the_first_run_starts_at_the_finalized_block(chain: Chain) -> None:
    chain.pay_eth(PAYER, MERCHANT, ETHER // 10)  # before the watcher existed, and final by its first run
    chain.mine(FINALITY_LAG + 5)
    finalized = chain.w3.eth.get_block("finalized")["number"]
    config = chain.config(start_block=None)
    rpc = Ranges(config.rpc_url)
    sink = MemoryPaymentSink()

    report = watch(config, rpc, MemoryCursorStore(), sink)

    assert (report.from_block, report.to_block) == (finalized, chain.head())
    assert rpc.ranges[0][0] == finalized  # never genesis
    assert sink.transfers == {}


def test_given_a_range_then_blocks_are_loaded_a_batch_at_a_time_and_the_cursor_moves_after_each(chain: Chain) -> None:
    config = chain.config(scan_batch=10)
    start = config.start_block
    assert start is not None
    chain.mine(35)  # blocks start .. start + 34
    cursors = Counting()
    rpc = Ranges(config.rpc_url)

    report = watch(config, rpc, cursors, MemoryPaymentSink())

    assert rpc.ranges == [
        (start, start + 9),
        (start + 10, start + 19),
        (start + 20, start + 29),
        (start + 30, start + 34),
    ]
    assert [c.block_number for c in cursors.written] == [start + 9, start + 19, start + 29, start + 34]
    assert [c.block_hash for c in cursors.written] == [chain.block_hash(c.block_number) for c in cursors.written]
    assert report.caught_up


def test_given_a_transaction_cap_then_a_run_stops_after_the_batch_that_reaches_it_and_the_next_resumes(
    chain: Chain,
) -> None:
    config = chain.config(scan_batch=10, max_transactions_per_run=2)
    start = config.start_block
    assert start is not None
    chain.pay_eth(PAYER, MERCHANT, 1)  # block start: one transaction in batch 1
    chain.mine(10)  # start + 1 .. start + 10
    chain.pay_eth(PAYER, MERCHANT, 2)  # block start + 11: batch 2, two transactions in all - the cap
    chain.mine(8)  # .. start + 19
    chain.pay_eth(PAYER, MERCHANT, 3)  # block start + 20: batch 3, the next run's
    watcher = Watcher(config)

    first = watcher.run()
    second = watcher.run()

    assert (first.from_block, first.to_block, first.caught_up, first.transfers_seen) == (start, start + 19, False, 2)
    assert (second.from_block, second.to_block, second.caught_up, second.transfers_seen) == (
        start + 20,
        start + 20,
        True,
        1,
    )
    assert sorted(t.atomic_amount for t in watcher.sink.transfers.values()) == [1, 2, 3]


class Counting(MemoryCursorStore):
    def __init__(self) -> None:
        super().__init__()
        self.written: list[Cursor] = []

    def put(self, cursor: Cursor, expected: Cursor | None) -> None:
        super().put(cursor, expected)
        self.written.append(cursor)


def test_given_a_submitted_tx_then_the_inspector_dates_it_by_its_block(chain: Chain) -> None:
    config = chain.config()
    tx = chain.pay_eth(PAYER, MERCHANT, ETHER // 10)
    block = chain.w3.eth.get_block(chain.receipt(tx)["blockNumber"])

    (credit,) = EvmTransactionInspector(config, Web3EvmRpc(config.rpc_url)).transfers(tx)

    assert credit.block_time == datetime.fromtimestamp(block["timestamp"], UTC)


class FailingFor(MemoryPaymentSink):
    """A sink whose settlement step of one payment always fails (a bill its transaction cannot store, say)."""

    def __init__(self, payment_id: str) -> None:
        super().__init__()
        self.failing = payment_id

    def finalized(self, payment_id: str, block_hash: str | None = None) -> None:
        if payment_id == self.failing:
            raise RuntimeError(f"the store refused {payment_id}")
        super().finalized(payment_id, block_hash)


def test_given_one_payment_whose_finality_step_fails_then_the_others_finalize_and_it_is_named_stuck(
    chain: Chain,
) -> None:
    """D285: one bad payment is that payment's alone - it stays SEEN (the next run tries it again)."""
    chain.mint(PAYER, 10 * USDC)
    chain.mine(FINALITY_LAG)
    watcher = Watcher(chain.config(start_block=chain.head() + 1))
    chain.pay_usdc(PAYER, MERCHANT, 1 * USDC)
    chain.pay_usdc(PAYER, MERCHANT, 2 * USDC)
    watcher.run()
    ids = {seen.atomic_amount: seen.payment_id for seen in watcher.sink.with_status(PaymentStatus.SEEN)}
    first, second = 1 * USDC, 2 * USDC
    failing = FailingFor(ids[first])
    failing.transfers, failing.status = watcher.sink.transfers, watcher.sink.status
    watcher.sink = failing
    chain.mine(FINALITY_LAG)

    report = watcher.run()

    assert report.finalized == 1
    assert failing.status[ids[second]] is PaymentStatus.FINALIZED
    assert failing.status[ids[first]] is PaymentStatus.SEEN
    assert report.stuck == (f"{ids[first]}: RuntimeError: the store refused {ids[first]}",)


class Refusing(MemoryPaymentSink):
    """A sink whose store refuses some payments' steps: ``refused`` holds (step, payment id), step one of
    ``orphaned``, ``record_seen`` (a bill its transaction cannot store, say); emptied, the store takes them again."""

    def __init__(self, like: MemoryPaymentSink, refused: set[tuple[str, str]]) -> None:
        super().__init__()
        self.transfers, self.status, self.final = like.transfers, like.status, like.final
        self.refused = refused

    def orphaned(self, payment_id: str, block_hash: str | None = None, *, failed: bool = False) -> None:
        if ("orphaned", payment_id) in self.refused:
            raise RuntimeError(f"the store refused {payment_id}")
        super().orphaned(payment_id, block_hash, failed=failed)

    def record_seen(self, transfer: ObservedTransfer) -> None:
        if ("record_seen", transfer.payment_id) in self.refused:
            raise RuntimeError(f"the store refused {transfer.payment_id}")
        super().record_seen(transfer)


def test_given_a_rolled_back_payment_whose_orphaning_fails_then_the_others_finalize_the_scan_goes_on_and_it_is_retried(
    chain: Chain,
) -> None:
    """D323 (review F2). B (1 USDC) is due for finality and still SEEN (its step failed last run, D285); A's
    (2 USDC) block is then replaced by a reorg, and the store refuses A's orphaning. Before: every run raised, B
    stayed SEEN and no block was scanned. Now the run rolls back, names A stuck, scans on (C, 3 USDC paid after the
    reorg, is seen) and finalizes B; A stays SEEN above the finalized block, and once its height is final the finality
    pass orphans it (its block is not canonical and its transaction is mined nowhere)."""
    chain.mint(PAYER, 10 * USDC)
    chain.mine(FINALITY_LAG)
    watcher = Watcher(chain.config(start_block=chain.head() + 1))
    chain.pay_usdc(PAYER, MERCHANT, 1 * USDC)  # B
    chain.mine(FINALITY_LAG + 2)
    chain.pay_usdc(PAYER, MERCHANT, 2 * USDC)  # A
    chain.mine(1)
    watcher.sink = Refusing(watcher.sink, set())
    first = watcher.run()
    ids = {t.atomic_amount: pid for pid, t in watcher.sink.transfers.items()}
    b, a = ids[1 * USDC], ids[2 * USDC]
    assert first.finalized == 1
    watcher.sink.status[b] = PaymentStatus.SEEN  # B's step failed last run: due and SEEN
    refusing = Refusing(watcher.sink, {("orphaned", a)})
    watcher.sink = refusing
    chain.node.call("anvil_reorg", 2, [])  # A's block and the next replaced by empty ones
    paid_c = chain.pay_usdc(PAYER, MERCHANT, 3 * USDC)  # C, in the new fork
    chain.mine(1)

    report = watcher.run()

    assert report.rolled_back_to is not None
    assert report.stuck == (f"{a}: RuntimeError: the store refused {a}",)
    assert refusing.status[b] is PaymentStatus.FINALIZED
    assert refusing.status[a] is PaymentStatus.SEEN
    assert report.orphaned == 0
    # C, and B read again (idempotent): anvil drops the replaced blocks, so the rollback's walk down the old fork
    # stops at once and the rescan starts at its bound, the block before start_block (review 4: B's canonical block
    # no longer "proves" the blocks below it shared)
    assert report.rolled_back_to == watcher.config.start_block - 1  # type: ignore[operator]
    assert report.transfers_seen == 2
    assert [t.tx_id for pid, t in refusing.transfers.items() if t.atomic_amount == 3 * USDC] == [paid_c]
    assert watcher.cursors.cursors["ethereum"].block_number == chain.head()
    assert watcher.cursors.cursors["ethereum"].block_hash == chain.block_hash(chain.head())

    chain.mine(FINALITY_LAG)  # A's height is final now: the finality pass tries A again, still refused
    again = watcher.run()
    assert again.stuck == (f"{a}: RuntimeError: the store refused {a}",)
    assert refusing.status[a] is PaymentStatus.SEEN
    refusing.refused.clear()  # the store takes it again

    last = watcher.run()

    assert (last.stuck, last.orphaned) == ((), 1)
    assert refusing.status[a] is PaymentStatus.ORPHANED


def _seen_b_then_a(chain: Chain) -> tuple[Watcher, str, str, str]:
    """B (1 USDC) then A (2 USDC) paid and seen by a watcher's run: the watcher, B's and A's ids, A's transaction."""
    chain.mint(PAYER, 10 * USDC)
    chain.mine(FINALITY_LAG)
    watcher = Watcher(chain.config(start_block=chain.head() + 1))
    chain.pay_usdc(PAYER, MERCHANT, 1 * USDC)  # B
    paid_a = chain.pay_usdc(PAYER, MERCHANT, 2 * USDC)  # A
    watcher.run()
    ids = {t.atomic_amount: pid for pid, t in watcher.sink.transfers.items()}
    return watcher, ids[1 * USDC], ids[2 * USDC], paid_a


def test_given_a_final_payment_mined_in_another_block_whose_record_fails_then_the_others_finalize_and_it_waits(
    chain: Chain,
) -> None:
    """D323 (review F2). A (2 USDC) is held in a block that is not the canonical one at its height ("0xdead...",
    a fork the cursor never saw); its transaction is mined in the canonical block. The finality pass reports it there
    (``_relocated``) and the store refuses it. Before: the run raised and B (1 USDC, final) stayed SEEN. Now B is
    FINALIZED, A is named stuck and stays SEEN - never ORPHANED (its transaction stands) - and the next run, the
    store taking it again, moves it to its block and finalizes it."""
    watcher, b, a, paid_a = _seen_b_then_a(chain)
    mined = chain.receipt(paid_a)
    watcher.sink.transfers[a] = replace(watcher.sink.transfers[a], block_hash="0x" + "de" * 32)
    refusing = Refusing(watcher.sink, {("record_seen", a)})
    watcher.sink = refusing
    chain.mine(FINALITY_LAG)

    report = watcher.run()

    assert report.stuck == (f"{a}: RuntimeError: the store refused {a}",)
    assert (report.finalized, report.orphaned) == (1, 0)
    assert refusing.status[b] is PaymentStatus.FINALIZED
    assert refusing.status[a] is PaymentStatus.SEEN
    refusing.refused.clear()

    after = watcher.run()

    assert (after.stuck, after.finalized) == ((), 1)
    assert refusing.status[a] is PaymentStatus.FINALIZED
    assert refusing.transfers[a].block_hash == hexhash(mined["blockHash"])


def test_given_a_final_payment_mined_elsewhere_at_another_log_index_whose_record_fails_then_it_waits_not_orphaned(
    chain: Chain,
) -> None:
    """D332 (review rev7 F1). A (2 USDC) is held in a block that is not the canonical one at its height and at
    log index 3 (other logs came before it on that fork); its transaction is mined in the canonical block at log
    index 0, so its credit there is another payment id. The store refuses that new credit. Before: ``_relocated``
    returned as unrecorded only the failed ids it wanted (the old id was not among them), so the old payment was
    ORPHANED while its transaction stands, the new one never stored - the cursor past, the 2 USDC lost. Now the old
    payment is named stuck and stays SEEN; the store taking the credit again, the next run records the new id and
    orphans the old one (its id is no credit of the transaction), and the run after finalizes the new one."""
    watcher, b, a_now, paid_a = _seen_b_then_a(chain)
    held = watcher.sink.transfers.pop(a_now)
    del watcher.sink.status[a_now]
    old = replace(held, block_hash="0x" + "de" * 32, index=3)
    a_old = old.payment_id
    assert (a_old, a_now) == (f"{held.chain}:{held.tx_id}:3", f"{held.chain}:{held.tx_id}:0")
    watcher.sink.transfers[a_old] = old
    watcher.sink.status[a_old] = PaymentStatus.SEEN
    refusing = Refusing(watcher.sink, {("record_seen", a_now)})
    watcher.sink = refusing
    chain.mine(FINALITY_LAG)

    report = watcher.run()

    assert report.stuck == (f"{a_old}: RuntimeError: the store refused {a_now}",)
    assert (report.finalized, report.orphaned) == (1, 0)
    assert refusing.status[b] is PaymentStatus.FINALIZED
    assert refusing.status[a_old] is PaymentStatus.SEEN
    assert a_now not in refusing.status
    refusing.refused.clear()

    after = watcher.run()

    assert (after.stuck, after.finalized, after.orphaned) == ((), 0, 1)
    assert refusing.status[a_old] is PaymentStatus.ORPHANED
    assert refusing.status[a_now] is PaymentStatus.SEEN
    assert refusing.transfers[a_now].atomic_amount == 2 * USDC
    assert refusing.transfers[a_now].block_hash == hexhash(chain.receipt(paid_a)["blockHash"])

    last = watcher.run()

    assert (last.stuck, last.finalized) == ((), 1)
    assert refusing.status[a_now] is PaymentStatus.FINALIZED


class ReorgAfterLogs(Web3EvmRpc):
    """anvil replaces the last ``depth`` blocks right after the run's first ``eth_getLogs``, with blocks that hold
    ``txs`` (a payment only the new fork has)."""

    def __init__(self, chain: Chain, depth: int, txs: list[Any]) -> None:
        super().__init__(chain.node.url)
        self.chain = chain
        self.depth = depth
        self.txs = txs

    def logs_beside(
        self, address: str, topics: Sequence[str | None], first: int, last: int
    ) -> tuple[list[EvmLog], str | None]:
        read = super().logs_beside(address, topics, first, last)
        if self.depth:
            self.chain.node.call("anvil_reorg", self.depth, self.txs)
            self.depth = 0
        return read


@pytest.mark.parametrize("scan_batch", [100, 1])
def test_given_a_reorg_between_a_scans_reads_then_a_usdc_payment_through_a_contract_in_the_new_fork_is_seen(
    chain: Chain, scan_batch: int
) -> None:
    """D287. The old fork's two blocks are empty; the new fork's first holds 4 USDC paid through a contract
    (``TestBatchPay``: a Transfer log only - the block scan does not see it). The run and the next one see the
    payment. Before: one batch read its logs from the old fork and its blocks from the new, and the cursor took the
    new fork's hash; batches of one block: the second batch, read from the new fork, moved the cursor past the
    first's old-fork read - either way the payment was never seen."""
    chain.mint(OTHER, 10 * USDC)
    batch = Web3.to_checksum_address(deploy(chain.w3, "TestBatchPay"))
    _mined(chain, chain.token().functions.approve(batch, 10 * USDC).transact({"from": OTHER}))  # type: ignore[arg-type]
    chain.mine(FINALITY_LAG)
    config = chain.config(start_block=chain.head() + 1, scan_batch=scan_batch)
    chain.mine(2)  # the old fork: two empty blocks
    payer = chain.w3.eth.contract(address=batch, abi=contracts.load("TestBatchPay")["abi"])
    data = payer.encode_abi("pay", args=[chain.usdc, MERCHANT, [4 * USDC]])
    paying = {"from": OTHER, "to": batch, "data": data, "gas": hex(200_000)}
    watcher = Watcher(config)
    watcher.rpc = ReorgAfterLogs(chain, depth=2, txs=[[paying, 0]])

    watcher.run()
    watcher.rpc = Web3EvmRpc(config.rpc_url)
    watcher.run()

    (seen,) = watcher.sink.with_status(PaymentStatus.SEEN)
    assert (seen.asset, seen.atomic_amount, seen.sender, seen.recipient) == ("USDC", 4 * USDC, OTHER, MERCHANT)
    assert seen.block_hash == chain.block_hash(seen.block_number)  # the new fork's block


# --- a logs backend behind the blocks' backend (D386) -----------------------------------------------------------------
def _batch_payer(chain: Chain) -> Any:
    """``TestBatchPay`` approved to spend 10 of OTHER's USDC: a payment through a contract (a Smart Wallet, a Safe, an
    exchange's batcher) leaves a Transfer log and nothing the block scan sees."""
    chain.mint(OTHER, 10 * USDC)
    batch = Web3.to_checksum_address(deploy(chain.w3, "TestBatchPay"))
    _mined(chain, chain.token().functions.approve(batch, 10 * USDC).transact({"from": OTHER}))  # type: ignore[arg-type]
    return chain.w3.eth.contract(address=batch, abi=contracts.load("TestBatchPay")["abi"])


def _mined(chain: Chain, tx: Any) -> int:
    """The block a sent transaction was mined in: anvil's automine answers ``eth_sendTransaction`` before the block
    is in (the head read right after it was one block short under load once, and a block mined next could take it)."""
    return int(chain.w3.eth.wait_for_transaction_receipt(tx, timeout=10)["blockNumber"])


def test_given_the_logs_backend_a_block_behind_then_usdc_paid_through_a_contract_is_seen_the_next_run(
    chain: Chain,
) -> None:
    """D386. The run's range is an empty block then the block holding 4 USDC paid through ``TestBatchPay``; the
    provider's backend answering ``eth_getLogs`` has only the empty block. The run scans the empty block alone (the
    cursor there, not caught up) and the next one, every backend caught up, sees the 4 USDC. Before: the logs
    backend answered [] for the payment's block with no error, the cursor moved past it, never seen."""
    payer = _batch_payer(chain)
    chain.mine(FINALITY_LAG)
    config = chain.config(start_block=chain.head() + 1)
    chain.mine(1)  # an empty block: the one the lagging backend has
    paid_in = _mined(
        chain, payer.functions.pay(chain.usdc, MERCHANT, [4 * USDC]).transact({"from": OTHER, "gas": 200_000})
    )

    with LaggingLogsProxy(chain.node.url, head=paid_in - 1) as provider:
        watcher = Watcher(replace(config, rpc_url=provider.url))
        first = watcher.run()
        held = watcher.cursors.cursors["ethereum"]
        provider.head = None  # caught up
        chain.mine(1)
        second = watcher.run()

    assert (first.transfers_seen, first.to_block, first.caught_up) == (0, paid_in - 1, False)
    # D414 amended (ops2): one block short of the head read at its start (paid_in) - a lag of 1, under every
    # chain's alarm tolerance, where it recorded "behind" (1) and alarmed when each run was so
    assert (first.lag, second.lag) == (1, 0)
    assert (held.block_number, held.block_hash) == (paid_in - 1, chain.block_hash(paid_in - 1))
    assert second.transfers_seen == 1
    (seen,) = watcher.sink.with_status(PaymentStatus.SEEN)
    assert (seen.asset, seen.atomic_amount, seen.sender, seen.block_number) == ("USDC", 4 * USDC, OTHER, paid_in)


def test_given_the_logs_backend_behind_the_whole_range_then_the_run_moves_nothing_and_the_next_sees_the_payment(
    chain: Chain,
) -> None:
    """D386: the logs backend has none of the range's blocks (its first holds the payment): the run scans nothing,
    its cursor where it was (none yet: written by no one), and the next one sees the 4 USDC."""
    payer = _batch_payer(chain)
    chain.mine(FINALITY_LAG)
    config = chain.config(start_block=chain.head() + 1)
    paid_in = _mined(
        chain, payer.functions.pay(chain.usdc, MERCHANT, [4 * USDC]).transact({"from": OTHER, "gas": 200_000})
    )
    chain.mine(2)

    with LaggingLogsProxy(chain.node.url, head=paid_in - 1) as provider:
        watcher = Watcher(replace(config, rpc_url=provider.url))
        first = watcher.run()
        provider.head = None
        second = watcher.run()

    assert (first.transfers_seen, first.caught_up, watcher.cursors.writes) == (0, False, 1)
    assert (second.transfers_seen, second.caught_up) == (1, True)
    # D414 amended (ops2): nothing scanned: the lag is from the block before the range (paid_in - 1) to the head
    # (paid_in + 2), 3 blocks; caught up, 0
    assert (first.lag, second.lag) == (3, 0)
    (seen,) = watcher.sink.with_status(PaymentStatus.SEEN)
    assert (seen.atomic_amount, seen.block_number) == (4 * USDC, paid_in)


def test_given_the_logs_backend_three_blocks_behind_a_ten_block_batch_then_the_run_scans_up_to_its_head(
    chain: Chain,
) -> None:
    """D386: a batch of 10 blocks, the payment in its 6th, the logs backend at its 7th. The chunk is halved while
    its end is above that backend's head: 1..10 (behind), 1..5 (vouched), 6..10 (behind), 6..7 (vouched), 8..8
    (behind, one block): the run scans blocks 1..7, sees the payment and leaves its cursor at the 7th."""
    payer = _batch_payer(chain)
    chain.mine(FINALITY_LAG)
    first_block = chain.head() + 1
    config = chain.config(start_block=first_block)
    chain.mine(5)
    _mined(chain, payer.functions.pay(chain.usdc, MERCHANT, [4 * USDC]).transact({"from": OTHER, "gas": 200_000}))
    chain.mine(4)
    assert chain.head() == first_block + 9

    with LaggingLogsProxy(chain.node.url, head=first_block + 6) as provider:
        watcher = Watcher(replace(config, rpc_url=provider.url))
        report = watcher.run()

    assert (report.transfers_seen, report.to_block, report.caught_up) == (1, first_block + 6, False)
    (seen,) = watcher.sink.with_status(PaymentStatus.SEEN)
    assert (seen.atomic_amount, seen.block_number) == (4 * USDC, first_block + 5)
    cursor = watcher.cursors.cursors["ethereum"]
    assert (cursor.block_number, cursor.block_hash) == (first_block + 6, chain.block_hash(first_block + 6))


@pytest.mark.parametrize(("scan_batch", "calls"), [(100, 2 + 50 + 2), (10, 2 + 5 * (10 + 2))])
def test_given_up_to_date_backends_then_the_logs_anchor_costs_one_call_per_logs_chunk_not_per_block(
    chain: Chain, scan_batch: int, calls: int
) -> None:
    """D386. 50 empty blocks: the ``latest`` and ``finalized`` tags (2), each block (50), and per batch one
    ``eth_getLogs`` with the hash of its last block in the same JSON-RPC batch (2): 54 in one batch of 100, 62 in
    five of 10 - before, 53 and 57. Nothing pending: no finality reads."""
    config = chain.config(scan_batch=scan_batch)
    chain.mine(50)

    report = Watcher(config).run()

    assert (report.rpc_calls, report.to_block - report.from_block + 1, report.caught_up) == (calls, 50, True)


# --- a payment transaction replaced (same nonce, higher fee) on the fork that stands ----------------------------------
class Backends(Web3EvmRpc):
    """A load-balanced provider in front of anvil. ``unknown``: heights a backend behind the head answers null for.
    ``stale``: a backend still on the old fork, kept as it answered there - a transaction's receipt and the
    transaction, and its old blocks (``stale_blocks``: nothing above the highest, the shared chain below). The
    ``eth_getBlockByNumber`` batch asked right after such a receipt goes to it whole; with ``stale_reads`` so does
    every batch that asks for one of its old blocks' heights. ``behind``: the receipts come from a canonical
    backend whose head is that height (a receipt in a block above it: none). The read of a receipt alone beside
    heights (``receipt_beside``, one batch) goes to one backend whole: the one with head ``alone_head`` if set (a
    canonical backend, nothing above its head), else the stale backend for a transaction it has a receipt of (its
    old blocks and the receipt's block as it has them, nothing above the highest), else as ``behind`` says."""

    def __init__(self, url: str) -> None:
        super().__init__(url)
        self.unknown: set[int] = set()
        self.stale_receipts: dict[str, EvmReceipt] = {}
        self.stale_transactions: dict[str, Any] = {}
        self.stale_blocks: dict[int, BlockRef] = {}
        self.stale_reads = False
        self._stale_next = False
        self.behind: int | None = None
        self.alone_head: int | None = None

    def headers(self, numbers: Sequence[int]) -> dict[int, BlockRef | None]:
        answered = {n: (None if n in self.unknown else ref) for n, ref in super().headers(numbers).items()}
        to_stale = self._stale_next or (self.stale_reads and any(n in self.stale_blocks for n in numbers))
        self._stale_next = False
        if to_stale and self.stale_blocks:
            top = max(self.stale_blocks)
            for n in numbers:
                answered[n] = self.stale_blocks[n] if n in self.stale_blocks else None if n > top else answered[n]
        return answered

    def receipts(self, tx_hashes: Sequence[str]) -> dict[str, EvmReceipt]:
        answered = {
            tx_hash: receipt
            for tx_hash, receipt in super().receipts(tx_hashes).items()
            if self.behind is None or receipt.block_number <= self.behind
        }
        for tx_hash in tx_hashes:
            if tx_hash in self.stale_receipts:
                answered[tx_hash] = self.stale_receipts[tx_hash]
                self._stale_next = True
        return answered

    def transaction(self, tx_hash: str) -> Any:
        return self.stale_transactions.get(tx_hash) or super().transaction(tx_hash)

    def receipt_beside(self, tx_hash: str, numbers: Sequence[int]) -> tuple[EvmReceipt | None, dict[int, str | None]]:
        receipt, hashes = super().receipt_beside(tx_hash, numbers)  # anvil's answer: one mixed JSON-RPC batch
        stale = self.stale_receipts.get(tx_hash)
        head = self.alone_head if self.alone_head is not None else None if stale is not None else self.behind
        if head is not None:  # a canonical backend with that head
            if receipt is not None and receipt.block_number > head:
                receipt = None
            return receipt, {n: None if n > head or n in self.unknown else hashes[n] for n in numbers}
        if stale is not None:  # the stale backend, whole
            held = {**{n: ref.hash for n, ref in self.stale_blocks.items()}, stale.block_number: stale.block_hash}
            top = max(held)
            return stale, {n: held[n] if n in held else None if n > top else hashes[n] for n in numbers}
        return receipt, {n: None if n in self.unknown else hashes[n] for n in numbers}


@dataclass
class Replaced:
    """A (100 USDC to the merchant) seen at block ``a_block``; that block reorged away and A's nonce used on the
    fork that stands by ``a2`` (a speed-up: the same 100 USDC, a higher fee; or a cancel: 0 ETH to itself)."""

    h: Harness
    config: ChainConfig
    rpc: Backends
    cursors: MemoryCursorStore
    a: str
    a_block: int
    a2: str
    old: tuple[EvmReceipt, Any, BlockRef]  # A's receipt, transaction and block as the old fork answered them

    def run(self) -> Any:
        return watch(self.config, self.rpc, self.cursors, self.h.settlement)

    def payment(self, tx: str) -> Payment | None:
        return self.h.store.payment(f"ethereum:{tx}:0")

    def bill(self) -> Bill:
        found = self.h.store.bill("inv-1")
        assert found is not None
        return found

    def status(self, tx: str) -> PaymentStatus:
        """The status of ``tx``'s payment (log index 0), which must be stored."""
        found = self.payment(tx)
        assert found is not None
        return found.status

    def figures(self) -> tuple[BillStatus, Decimal, Decimal]:
        """The bill's status, settled USD and credit USD."""
        found = self.bill()
        return found.status, found.settled_usd, found.credit_usd


def _billed(chain: Chain, stack: Stack) -> tuple[Harness, ChainConfig, Backends, MemoryCursorStore]:
    """The $100.00 bill inv-1 of acct-1 (PAYER linked, 1,000 USDC minted) with a 100 USDC quote at $1.00
    (100,000,000 units), real settlement; the watcher behind ``Backends`` has run once (its cursor on the head)."""
    h = harness(stack)
    chain.mint(PAYER, 1_000 * USDC)
    chain.mine(FINALITY_LAG)
    now = datetime.fromtimestamp(chain.w3.eth.get_block("latest")["timestamp"], UTC)
    h.clock.now = now
    h.rates.prices["USDC"] = Decimal("1")
    h.store.link_wallet("evm", PAYER, "acct-1", "ethereum", now)
    assert h.store.create_bill(bill())
    made = quote("q-usdc", "USDC", 100 * USDC, "1")
    h.store.add_quote(
        replace(made, created_at=now, expires_at=now + timedelta(minutes=30), monitor_until=now + timedelta(hours=72))
    )
    config = chain.config(start_block=chain.head() + 1)
    rpc = Backends(config.rpc_url)
    cursors = MemoryCursorStore()
    watch(config, rpc, cursors, h.settlement)
    return h, config, rpc, cursors


def _bill_paid_then_seen(
    chain: Chain, h: Harness, config: ChainConfig, rpc: Backends, cursors: MemoryCursorStore, mined: int = 1
) -> tuple[Any, str, int]:
    """On ``_billed``'s bill: a snapshot, then P pays it (100 USDC = 100,000,000 units, PAYER to the merchant) at N,
    ``mined`` blocks above it, the watcher runs: P SEEN, the bill PROCESSING. Returns the snapshot (the fork point to
    revert to), P's hash and N."""
    before = chain.node.call("evm_snapshot")
    tx = chain.pay_usdc(PAYER, MERCHANT, 100 * USDC)
    paid_in = chain.receipt(tx)["blockNumber"]
    chain.mine(mined)
    watch(config, rpc, cursors, h.settlement)
    assert h.store.bill("inv-1").status is BillStatus.PROCESSING  # type: ignore[union-attr]
    return before, tx, paid_in


def _one_block_a_run(
    chain: Chain, h: Harness, config: ChainConfig, rpc: Backends, cursors: MemoryCursorStore, runs: int = 6
) -> list[tuple[RunReport, BillStatus]]:
    """``runs`` runs of the watcher, one block mined before each: each run's report and the bill's status after it."""
    states: list[tuple[RunReport, BillStatus]] = []
    for _ in range(runs):
        chain.mine(1)
        run = watch(config, rpc, cursors, h.settlement)
        states.append((run, h.store.bill("inv-1").status))  # type: ignore[union-attr]
    return states


def _cursor_block_replaced(
    chain: Chain, h: Harness, config: ChainConfig, rpc: Backends, cursors: MemoryCursorStore, sender: str
) -> None:
    """A 1-block head reorg: one block mined and watched (the cursor on it), then replaced by ``sender``'s 1 wei to
    itself (anvil drops the old block)."""
    top = chain.node.call("evm_snapshot")
    chain.mine(1)
    watch(config, rpc, cursors, h.settlement)
    chain.node.call("evm_revert", top)
    chain.pay_eth(sender, sender, 1)  # the cursor's block replaced


def _replaced(chain: Chain, stack: Stack, cancel: bool) -> Replaced:
    """The $100.00 bill (``_billed``). A is seen and counted (PROCESSING); then the fork without it: two empty
    blocks, then A's replacement, one block above."""
    h, config, rpc, cursors = _billed(chain, stack)  # the cursor on a block both forks share
    nonce = chain.w3.eth.get_transaction_count(PAYER)
    before, a, a_block = _bill_paid_then_seen(chain, h, config, rpc, cursors)
    old = (rpc.receipts([a])[a], rpc.transaction(a), rpc.headers([a_block])[a_block])
    chain.node.call("evm_revert", before)
    chain.mine(2)
    fee = {"from": PAYER, "nonce": nonce, "maxFeePerGas": 50 * 10**9, "maxPriorityFeePerGas": 5 * 10**9}
    if cancel:
        sent = chain.w3.eth.send_transaction({**fee, "to": PAYER, "value": 0})  # type: ignore[typeddict-item]
    else:
        sent = chain.token().functions.transfer(MERCHANT, 100 * USDC).transact(fee)  # type: ignore[arg-type]
    chain.w3.eth.wait_for_transaction_receipt(sent, timeout=10)
    a2 = hexhash(sent)
    assert a2 != a
    assert chain.w3.eth.get_transaction_count(PAYER) == nonce + 1
    chain.mine(1)
    return Replaced(h, config, rpc, cursors, a, a_block, a2, old)


def _past_the_rollback_beside_a_stale_backend(r: Replaced) -> None:
    """The rollback run with A's height unknown (A stays SEEN), then a backend still on the old fork serves A's
    receipt, transaction and old block (``Replaced.old``) from now on."""
    r.rpc.unknown = {r.a_block}
    r.run()
    r.rpc.unknown = set()
    receipt, transaction, block = r.old
    r.rpc.stale_receipts, r.rpc.stale_transactions, r.rpc.stale_blocks = (
        {r.a: receipt},
        {r.a: transaction},
        {r.a_block: block},
    )


@pytest.mark.parametrize("cancel", [False, True])
def test_given_a_seen_payment_replaced_by_a_speed_up_or_cancel_behind_a_lagging_node_then_counted_once_or_released(
    chain: Chain, stack: Stack, cancel: bool
) -> None:
    """D342 (reproduced, nothing lost). The rollback's node answers nothing for A's height (a backend
    behind): A is not orphaned there and stays SEEN; no node has A's receipt (its nonce went to A'). Speed-up: A'
    (100 USDC) is seen and matched by the linked wallet; A' final -> the bill PAID, settled 100.00 (finalized only:
    A' 100 USDC x $1.00), credit 0.00 although A SEEN also counts 100.00 while PROCESSING. Cancel: nothing pays,
    the bill stays PROCESSING on A alone while its height is unknown. Once the node answers for A's height, A is
    ORPHANED (no receipt anywhere): the bill keeps 100.00 settled / credit 0.00, or goes back to OPEN and its quote
    to ACTIVE - neither lost nor counted twice, nor left pending."""
    r = _replaced(chain, stack, cancel)
    r.rpc.unknown = {r.a_block}

    r.run()
    chain.mine(FINALITY_LAG)
    r.run()

    assert r.status(r.a) is PaymentStatus.SEEN
    if cancel:
        assert r.payment(r.a2) is None
        assert r.bill().status is BillStatus.PROCESSING
    else:
        assert r.figures() == (BillStatus.PAID, Decimal("100.00"), Decimal("0"))
    r.rpc.unknown = set()
    chain.mine(1)

    report = r.run()

    assert report.orphaned == 1
    assert r.status(r.a) is PaymentStatus.ORPHANED
    after = r.bill()
    if cancel:
        assert (after.status, after.settled_usd, after.credit_usd) == (BillStatus.OPEN, Decimal("0"), Decimal("0"))
        assert {q.quote_id: q.status for q in r.h.store.quotes("inv-1")} == {"q-usdc": QuoteStatus.ACTIVE}
    else:
        assert (after.status, after.settled_usd, after.credit_usd) == (BillStatus.PAID, Decimal("100.00"), Decimal("0"))
    assert r.h.settlement.pending("ethereum") == []


def test_given_a_replaced_payment_whose_old_receipt_a_stale_backend_still_serves_then_it_is_not_finalized_twice(
    chain: Chain, stack: Stack
) -> None:
    """D342, amended (review 2). As above (speed-up, A SEEN past the rollback), but at finality a backend still on
    the old fork answers A's receipt in A's old block N with N's old hash, after the pass's anchored read had
    another hash there. Before D342: A counted as "mined in another block" - its own old one - and FINALIZED on the
    dead fork beside A': the bill PAID with credit 100.00 (200 USDC counted, 100 received). Now A waits SEEN: read
    again alone beside the finalized block F, the same stale backend answers (nothing at F: its top is N), so
    nothing proves A unmined - named stuck with its bill (review 2 orphaned A here: review 3 showed that releases a
    payment re-mined in a final block the scan never reads again). A' FINALIZED: PAID, settled 100.00 (A' alone:
    100 USDC x $1.00), credit 0.00. Next run the batch still comes from the stale backend but the read alone from
    a healthy one (F's hash at F, no receipt: A's nonce went to A'): A ORPHANED, nothing stuck, the bill unchanged."""
    r = _replaced(chain, stack, cancel=False)
    _past_the_rollback_beside_a_stale_backend(r)  # A stays SEEN; A' seen
    chain.mine(FINALITY_LAG)

    report = r.run()

    held = r.payment(r.a)
    assert held is not None
    assert (report.orphaned, held.status, held.transfer.block_number) == (0, PaymentStatus.SEEN, r.a_block)
    (entry,) = report.stuck
    assert entry.startswith(f"ethereum:{r.a}:0: ")
    assert entry.endswith("; bill inv-1 waits on it")
    assert r.status(r.a2) is PaymentStatus.FINALIZED
    assert r.figures() == (BillStatus.PAID, Decimal("100.00"), Decimal("0"))
    r.rpc.alone_head = chain.head()  # the read alone reaches a healthy backend

    after = r.run()

    assert (after.orphaned, after.stuck) == (1, ())
    assert r.status(r.a) is PaymentStatus.ORPHANED
    assert r.figures() == (BillStatus.PAID, Decimal("100.00"), Decimal("0"))
    assert r.h.settlement.pending("ethereum") == []


def test_given_a_stuck_payment_on_a_two_second_chain_then_its_bill_is_released_after_768_seconds_not_64_blocks(
    chain: Chain, stack: Stack
) -> None:
    """D418 on anvil, blocks 2 s apart as on Base. The cancel case (A's nonce went to a 0 ETH transaction: nothing
    else pays the $100.00 bill), A SEEN at N past the rollback; a backend still on the old fork serves A's receipt
    and answers the read alone too: A waits SEEN, named stuck with its bill each run. The finalized block F (head - 8)
    at 70+ blocks past N but its timestamp 766 s past N's: not stalled - the bill PROCESSING, 0.00 asked (before:
    stalled at 64 blocks, two minutes). One block more, F is 768 s past N's: stalled; the bill's only payment stuck,
    it is OPEN and PARTIAL, 100.00 asked again (D419), and the customer is told so once (``CryptoBillReopened.v1``:
    100.00 asked of the 100.00 bill, the stuck 100 USDC = 100.00 and A's transaction; D434) - not while it
    waits, not again on the next run naming A stuck. Before D434: nothing told."""
    r = _replaced(chain, stack, cancel=True)
    _past_the_rollback_beside_a_stale_backend(r)
    mined_at = chain.w3.eth.get_block(r.a_block)["timestamp"]  # the canonical block at N: what the wait is timed by
    chain.node.call("anvil_mine", hex(70), hex(2))  # 70 blocks of 2 s: 64 blocks past N, well under 768 s
    for seconds in (766, 768):  # the next two blocks at N + 766 s and N + 768 s
        chain.node.call("evm_setNextBlockTimestamp", hex(mined_at + seconds))
        chain.mine(1)
    at_766 = chain.head() - 1
    chain.node.call("anvil_mine", hex(FINALITY_LAG - 1), hex(2))  # F (head - 8) is the block at N + 766 s
    assert at_766 - r.a_block > 64
    assert chain.w3.eth.get_block("finalized")["number"] == at_766

    waiting = r.run()

    (entry,) = waiting.stuck
    assert entry.startswith(f"ethereum:{r.a}:0: ")
    assert entry.endswith("; bill inv-1 waits on it")
    held = r.bill()
    assert (held.status, remaining_usd(held)) == (BillStatus.PROCESSING, Decimal("0.00"))
    assert [line.stalled for line in held.payments] == [False]
    assert r.h.events("CryptoBillReopened.v1") == []
    chain.mine(1)  # F: the block after, N + 768 s
    assert chain.w3.eth.get_block("finalized")["timestamp"] == mined_at + 768

    released = r.run()

    assert len(released.stuck) == 1
    assert r.status(r.a) is PaymentStatus.SEEN  # still watched: finalized later, it counts again
    short = r.bill()
    assert (short.status, short.settled_usd, short.written_off_usd, remaining_usd(short)) == (
        BillStatus.OPEN,
        Decimal("0"),
        Decimal("0"),
        Decimal("100.00"),
    )
    assert BillFlag.PARTIAL in short.flags
    assert [line.stalled for line in short.payments] == [True]
    [told] = r.h.events("CryptoBillReopened.v1")
    assert (told["invoice_id"], told["total"], told["amount_usd"], told["stuck_usd"], told["stuck_tx_ids"]) == (
        "inv-1",
        "100.00",
        "100.00",
        "100.00",
        [r.a],
    )
    stuck = r.payment(r.a)
    assert stuck is not None
    assert told["event_id"] == f"crypto-reopened:inv-1:ethereum:{r.a}:0@{stuck.transfer.block_hash}"
    chain.mine(1)

    r.run()  # A named stuck again: nothing more told

    assert len(r.h.events("CryptoBillReopened.v1")) == 1


def test_given_a_stale_backend_answering_the_finality_passs_own_read_then_nothing_is_settled_on_its_dead_block(
    chain: Chain, stack: Stack
) -> None:
    """D342, amended (a review). As above (speed-up, A SEEN past the rollback), but the backend still on
    the old fork answers the finality pass's first read: A's old hash at A's height N (A's block as it stood, so A
    "is still canonical"), nothing above its head N. Before: A FINALIZED on its dead block, no receipt read - 100
    USDC (100,000,000 units x $1.00 = 100.00) counted beside A' for 100 USDC received, nothing stuck. Now the pass
    reads the finalized block's height in the same batch; that backend has no such block (the run read the finalized
    block F - above N + 1 - from the canonical one), so nothing it answered is settled: A and A' wait SEEN, one stuck entry
    (the alarm). With the backend caught up: A ORPHANED, A' FINALIZED, PAID settled 100.00 (A' alone), credit 0.00."""
    r = _replaced(chain, stack, cancel=False)
    r.rpc.unknown = {r.a_block}
    r.run()  # rollback: A's height unknown, A stays SEEN; A' seen
    r.rpc.unknown = set()
    _, _, block = r.old
    r.rpc.stale_blocks, r.rpc.stale_reads = {r.a_block: block}, True
    chain.mine(FINALITY_LAG)

    report = r.run()

    held, replacing = r.payment(r.a), r.payment(r.a2)
    assert held is not None
    assert replacing is not None
    assert (held.status, replacing.status) == (PaymentStatus.SEEN, PaymentStatus.SEEN)
    (entry,) = report.stuck
    assert entry.startswith("ethereum:finality:")
    assert (report.finalized, report.orphaned) == (0, 0)
    assert r.bill().status is BillStatus.PROCESSING
    r.rpc.stale_blocks, r.rpc.stale_reads = {}, False

    after = r.run()

    assert (after.finalized, after.orphaned, after.stuck) == (1, 1, ())
    assert r.status(r.a) is PaymentStatus.ORPHANED
    assert r.figures() == (BillStatus.PAID, Decimal("100.00"), Decimal("0"))


DEAD = "0x" + "de" * 32  # a block hash of the old fork, never canonical


def test_given_a_stale_receipt_in_a_dead_block_at_another_height_then_the_payment_is_not_moved_there_or_finalized(
    chain: Chain, stack: Stack
) -> None:
    """D342, amended (a review). A (stored at N) replaced by A'; the stale backend places A's receipt in
    N + 1 under a dead hash and answers that hash for N + 1 right after (a height the pass's first read did not ask
    for, so D342's check did not cover it). Before: A "moved" to N + 1 (below the finalized block) and
    FINALIZED there beside A': PAID with credit 100.00 (200 USDC counted, 100 received), nothing stuck. Now the second
    read asks the finalized block's height too (above N + 1: A' at N + 2 is final), which that backend has not got: A waits SEEN, named stuck; A'
    FINALIZED, PAID 100.00 (100 USDC x $1.00), credit 0.00. The backend caught up: A ORPHANED, nothing stuck."""
    r = _replaced(chain, stack, cancel=False)
    r.rpc.unknown = {r.a_block}
    r.run()
    r.rpc.unknown = set()
    receipt, transaction, block = r.old
    above = r.a_block + 1
    logs = tuple(replace(log, block_number=above, block_hash=DEAD) for log in receipt.logs)
    r.rpc.stale_receipts = {r.a: replace(receipt, block_number=above, block_hash=DEAD, logs=logs)}
    r.rpc.stale_transactions = {r.a: transaction}
    r.rpc.stale_blocks = {r.a_block: block, above: BlockRef(above, DEAD, block.timestamp)}
    chain.mine(FINALITY_LAG)

    report = r.run()

    held = r.payment(r.a)
    assert held is not None
    assert (held.status, held.transfer.block_number) == (PaymentStatus.SEEN, r.a_block)
    (entry,) = report.stuck
    assert entry.split(":")[1] == r.a
    assert entry.endswith("; bill inv-1 waits on it")
    assert r.status(r.a2) is PaymentStatus.FINALIZED
    assert r.figures() == (BillStatus.PAID, Decimal("100.00"), Decimal("0"))
    r.rpc.stale_receipts, r.rpc.stale_transactions, r.rpc.stale_blocks = {}, {}, {}

    after = r.run()

    assert (after.orphaned, after.stuck) == (1, ())
    assert r.status(r.a) is PaymentStatus.ORPHANED
    assert r.bill().credit_usd == Decimal("0")


def test_given_a_replaced_payment_whose_receipt_is_in_a_block_above_finalized_not_yet_read_then_it_waits_not_released(
    chain: Chain, stack: Stack
) -> None:
    """D342, amended (orphan) and (review 2). The cancel case (A's nonce went to a 0 ETH transaction: nothing else
    pays the $100.00 bill), A SEEN past the rollback and counted while PROCESSING (100 USDC = 100,000,000 units x
    $1.00 = 100.00). At finality a receipt backend places A in block R = head + 3 (hash DEAD), a block the healthy
    height reader has not got (it answers the finalized block right, nothing at R). Before (orphan): "nothing
    proven" and then A ORPHANED although (as that backend says) mined. Now A waits SEEN, nothing stuck (R above the
    finalized block: ordinary), the bill PROCESSING. Once finality reaches R, the anchored read has the canonical
    block there, not DEAD: R is from a dead fork. Read again alone beside F, the same stale backend answers (DEAD at
    F = R, not F's hash): nothing proves A unmined, so it waits, named stuck with its bill, the bill PROCESSING
    (review 3; review 2 released it here). Before review 2 it waited so for as long as the backend served that
    receipt - the bill PROCESSING with 0.00 left to pay, so no new quote. Still released once a healthy backend
    answers the read alone (F's hash at F, no receipt: A cancelled), the batch still from the stale one: A
    ORPHANED in that run, the bill OPEN, settled 0.00, credit 0.00, 100.00 left to pay ($100.00 - 0.00), its quote
    ACTIVE, nothing stuck, nothing pending."""
    r = _replaced(chain, stack, cancel=True)
    r.rpc.unknown = {r.a_block}
    r.run()  # rollback: A's height unknown, A stays SEEN
    r.rpc.unknown = set()
    receipt, transaction, _ = r.old
    above = chain.head() + FINALITY_LAG + 3  # above the head after the next FINALITY_LAG blocks: nobody has it yet
    logs = tuple(replace(log, block_number=above, block_hash=DEAD) for log in receipt.logs)
    r.rpc.stale_receipts = {r.a: replace(receipt, block_number=above, block_hash=DEAD, logs=logs)}
    r.rpc.stale_transactions = {r.a: transaction}
    chain.mine(FINALITY_LAG)

    report = r.run()

    held = r.payment(r.a)
    assert held is not None
    assert (held.status, held.transfer.block_number) == (PaymentStatus.SEEN, r.a_block)
    assert (report.orphaned, report.stuck) == (0, ())
    assert r.bill().status is BillStatus.PROCESSING
    chain.mine(above - chain.head() + FINALITY_LAG)  # the finalized tag (head - 8) now at R: canonical there, not DEAD

    late = r.run()

    (entry,) = late.stuck
    assert (late.orphaned, entry.startswith(f"ethereum:{r.a}:0: ")) == (0, True)
    assert entry.endswith("; bill inv-1 waits on it")
    assert r.bill().status is BillStatus.PROCESSING
    r.rpc.alone_head = chain.head()  # the read alone reaches a healthy backend
    chain.mine(1)

    healthy = r.run()

    assert (healthy.orphaned, healthy.stuck) == (1, ())
    assert r.status(r.a) is PaymentStatus.ORPHANED
    assert r.figures() == (
        BillStatus.OPEN,
        Decimal("0"),
        Decimal("0"),
    )
    assert remaining_usd(r.bill()) == Decimal("100.00")
    assert {q.quote_id: q.status for q in r.h.store.quotes("inv-1")} == {"q-usdc": QuoteStatus.ACTIVE}
    assert r.h.settlement.pending("ethereum") == []


def test_given_a_rollback_whose_read_a_dead_fork_backend_answers_then_no_canonical_payment_is_orphaned(
    chain: Chain,
) -> None:
    """D342, amended (orphan). P (100 USDC = 100,000,000 units, the $100.00 bill's quote at $1.00) seen at block N,
    above the finalized block F = head - 8; then a reorg replaces only the top block (the cursor's): P stays canonical
    at N. The rollback's read of N goes to a backend on a dead fork below F (DEAD at F and at N). Before: P ORPHANED
    on its canonical block (released; the rescan from F + 1 sees it again: a release and a re-count for nothing). Now
    that read asks F beside N and the answer there is not the run's F: nothing orphaned, one ``ethereum:rollback:``
    stuck entry; P SEEN at N with its own hash throughout. The walk down the old fork proves nothing on that
    backend (its answer at F is not the run's F), so the rescan starts at the walk's bound: the block before ``start_block`` here (the cursor minus ``reorg_window`` = 128 is
    below it), not F."""
    watcher = Watcher(chain.config())
    rpc = Backends(watcher.config.rpc_url)
    watcher.rpc = rpc
    chain.mint(PAYER, 1_000 * USDC)
    chain.mine(FINALITY_LAG)
    tx = chain.pay_usdc(PAYER, MERCHANT, 100 * USDC)
    paid_in = chain.receipt(tx)["blockNumber"]
    chain.mine(1)
    below_top = chain.node.call("evm_snapshot")
    chain.mine(1)
    watcher.run()
    (seen,) = watcher.sink.with_status(PaymentStatus.SEEN)
    assert (seen.atomic_amount, seen.block_number) == (100_000_000, paid_in)
    cursor = watcher.cursors.cursors["ethereum"]
    chain.node.call("evm_revert", below_top)
    chain.pay_eth(OTHER, OTHER, 1)  # the cursor's block (paid_in + 2) replaced by another one: a reorg above N
    assert (chain.head(), chain.block_hash(cursor.block_number) != cursor.block_hash) == (paid_in + 2, True)
    finalized = chain.head() - FINALITY_LAG  # paid_in - 6: the run reads it from the canonical backend
    assert finalized < paid_in
    rpc.stale_blocks = {finalized: BlockRef(finalized, DEAD, 0), paid_in: BlockRef(paid_in, DEAD, 0)}
    rpc.stale_reads = True

    report = watcher.run()

    assert ("orphaned", seen.payment_id) not in watcher.sink.calls
    assert (report.orphaned, report.rolled_back_to) == (0, watcher.config.start_block - 1)  # type: ignore[operator]
    (entry,) = report.stuck
    assert entry.startswith("ethereum:rollback:")
    held = watcher.sink.transfers[seen.payment_id]
    assert watcher.sink.status[seen.payment_id] is PaymentStatus.SEEN
    assert (held.block_number, held.block_hash) == (paid_in, chain.block_hash(paid_in))


# --- a rollback read by a dead-fork backend, through settlement: the bill the customer sees (D342, amended (orphan))
def _dead_fork_rollback(chain: Chain, rpc: Backends, paid_in: int) -> int:
    """The rollback's reads go to a backend on a dead fork below the finalized block F = head - 8: DEAD at F and at
    the payment's block ``paid_in`` (nothing above its highest). Returns F."""
    finalized = chain.head() - FINALITY_LAG
    rpc.stale_blocks = {finalized: BlockRef(finalized, DEAD, 0), paid_in: BlockRef(paid_in, DEAD, 0)}
    rpc.stale_reads = True
    return finalized


def test_given_a_dead_fork_rollback_then_a_canonical_payments_bill_stays_processing_unannounced_and_is_paid_once(
    chain: Chain, stack: Stack
) -> None:
    """P (100 USDC = 100,000,000 units, the $100.00 bill's quote at $1.00) seen at N (bill PROCESSING); a reorg
    replaces only the cursor's block N + 2, P stays canonical at N. The rollback's read goes to a dead-fork backend
    (DEAD at F = N - 6, head N + 2 - 8): nothing orphaned, one stuck entry, rolled back to the walk's bound (the
    block before ``start_block``: N + 2 - 128 is below it; F before review 3); the rescan sees P again
    - no new event is published (P was never released), the bill stays PROCESSING. Caught up and 10 blocks on (F
    past N): P FINALIZED, the bill PAID, settled 100.00 (100 USDC x $1.00), credit 0.00."""
    h, config, rpc, cursors = _billed(chain, stack)
    tx = chain.pay_usdc(PAYER, MERCHANT, 100 * USDC)
    paid_in = chain.receipt(tx)["blockNumber"]
    chain.mine(1)
    below_top = chain.node.call("evm_snapshot")
    chain.mine(1)
    watch(config, rpc, cursors, h.settlement)
    assert h.store.bill("inv-1").status is BillStatus.PROCESSING  # type: ignore[union-attr]
    announced = len(h.published.published)
    chain.node.call("evm_revert", below_top)
    chain.pay_eth(OTHER, OTHER, 1)  # the cursor's block (N + 2) replaced: a reorg above N
    finalized = _dead_fork_rollback(chain, rpc, paid_in)
    assert finalized == paid_in - 6

    report = watch(config, rpc, cursors, h.settlement)

    assert (report.orphaned, report.rolled_back_to, len(report.stuck)) == (0, config.start_block - 1, 1)  # type: ignore[operator]
    assert h.published.published[announced:] == []
    assert h.store.bill("inv-1").status is BillStatus.PROCESSING  # type: ignore[union-attr]
    rpc.stale_blocks, rpc.stale_reads = {}, False
    chain.mine(FINALITY_LAG + 2)

    after = watch(config, rpc, cursors, h.settlement)

    paid = h.store.bill("inv-1")
    assert paid is not None
    assert after.finalized == 1
    assert (paid.status, paid.settled_usd, paid.credit_usd) == (BillStatus.PAID, Decimal("100.00"), Decimal("0"))


def test_given_a_dead_fork_rollback_of_a_cancelled_payment_then_its_bill_reopens_when_finality_passes_its_block(
    chain: Chain, stack: Stack
) -> None:
    """P (100 USDC) seen at N = H + 1 (bill PROCESSING); the reorg removes N and P's nonce goes to a 0 ETH cancel
    (head H + 3). The rollback's read goes to a dead-fork backend: P not orphaned there (0 orphaned, one stuck
    entry), the bill PROCESSING. F = head - 8 = H - 5 reaches N at head H + 9: one block a run, runs 1-5 keep the
    bill PROCESSING (F = H - 4 .. H), run 6 (F = H + 1 = N) finds no receipt for P and ORPHANS it: the bill OPEN,
    settled 0.00, 100.00 left to pay, its quote ACTIVE."""
    h, config, rpc, cursors = _billed(chain, stack)
    top = chain.head()  # H
    nonce = chain.w3.eth.get_transaction_count(PAYER)
    before, _, paid_in = _bill_paid_then_seen(chain, h, config, rpc, cursors)
    assert paid_in == top + 1
    chain.node.call("evm_revert", before)
    chain.mine(1)
    fee = {"from": PAYER, "nonce": nonce, "maxFeePerGas": 50 * 10**9, "maxPriorityFeePerGas": 5 * 10**9}
    cancel = chain.w3.eth.send_transaction({**fee, "to": PAYER, "value": 0})  # type: ignore[typeddict-item]
    chain.w3.eth.wait_for_transaction_receipt(cancel, timeout=10)
    chain.mine(1)
    assert chain.head() == top + 3
    _dead_fork_rollback(chain, rpc, paid_in)

    report = watch(config, rpc, cursors, h.settlement)

    assert (report.orphaned, len(report.stuck)) == (0, 1)
    rpc.stale_blocks, rpc.stale_reads = {}, False
    statuses = [(run.orphaned, status) for run, status in _one_block_a_run(chain, h, config, rpc, cursors)]

    assert statuses == [(0, BillStatus.PROCESSING)] * 5 + [(1, BillStatus.OPEN)]
    reopened = h.store.bill("inv-1")
    assert reopened is not None
    assert (reopened.settled_usd, remaining_usd(reopened)) == (Decimal("0"), Decimal("100.00"))
    assert {q.quote_id: q.status for q in h.store.quotes("inv-1")} == {"q-usdc": QuoteStatus.ACTIVE}


def test_given_a_dead_fork_rollback_of_a_payment_re_mined_at_another_log_index_then_the_bill_is_paid_once(
    chain: Chain, stack: Stack
) -> None:
    """P (100 USDC, log index 0) seen at N = H + 1; the reorg re-mines P's own transaction at N behind another
    sender's 1 USDC to the merchant (P now log index 1: another payment id), head H + 3. The rollback's read goes to
    a dead-fork backend (nothing orphaned by it); the rescan records P at index 1 and settlement moves the bill's
    payment there (the old id ORPHANED): the bill PROCESSING, flags none. One block a run: runs 1-5 PROCESSING
    (F = H - 4 .. H), run 6 (F = N) finalizes both credits at N: PAID, settled 100.00 (100 USDC x $1.00; the other
    sender's 1 USDC is not the bill's), credit 0.00 - counted once."""
    h, config, rpc, cursors = _billed(chain, stack)
    chain.mint(OTHER, 10 * USDC)
    top = chain.head()  # H
    before, tx, paid_in = _bill_paid_then_seen(chain, h, config, rpc, cursors)
    raw = chain.node.call("eth_getRawTransactionByHash", tx)
    chain.node.call("evm_revert", before)
    chain.node.call("evm_setAutomine", False)
    high = {"from": OTHER, "maxFeePerGas": 500 * 10**9, "maxPriorityFeePerGas": 400 * 10**9}
    chain.token().functions.transfer(MERCHANT, 1 * USDC).transact(high)  # type: ignore[arg-type]
    chain.node.call("eth_sendRawTransaction", raw)
    chain.node.call("evm_mine")
    chain.node.call("evm_setAutomine", True)
    chain.mine(2)
    again = chain.receipt(tx)
    assert (paid_in, again["blockNumber"], [log["logIndex"] for log in again["logs"]]) == (top + 1, top + 1, [1])
    _dead_fork_rollback(chain, rpc, paid_in)

    report = watch(config, rpc, cursors, h.settlement)

    rpc.stale_blocks, rpc.stale_reads = {}, False
    old, moved = h.store.payment(f"ethereum:{tx}:0"), h.store.payment(f"ethereum:{tx}:1")
    assert old is not None
    assert moved is not None
    assert (report.orphaned, old.status, moved.status) == (0, PaymentStatus.ORPHANED, PaymentStatus.SEEN)
    waiting = h.store.bill("inv-1")
    assert waiting is not None
    assert (waiting.status, waiting.flags) == (BillStatus.PROCESSING, frozenset())
    states = [(run.finalized, status) for run, status in _one_block_a_run(chain, h, config, rpc, cursors)]

    assert states == [(0, BillStatus.PROCESSING)] * 5 + [(2, BillStatus.PAID)]
    paid = h.store.bill("inv-1")
    assert paid is not None
    assert (paid.settled_usd, paid.credit_usd) == (Decimal("100.00"), Decimal("0"))


# --- a payment re-mined at a final block below where the rollback restarts (D342, amended (review 3)) --------------
@pytest.mark.parametrize("reader", ["stale", "stale-then-behind", "behind"])
def test_given_a_payment_re_mined_below_the_rollbacks_restart_then_no_backend_without_finalized_releases_it(
    chain: Chain, stack: Stack, reader: str
) -> None:
    """The $100.00 bill, its 100 USDC quote at $1.00 (100,000,000 units). A pays 100 USDC, SEEN at N (cursor N + 2,
    bill PROCESSING). A reorg re-mines the same signed A at C = N + 1 (the merchant IS paid); the watcher next runs
    at head N + 12, F = N + 4 >= the cursor N + 2 >= C. Before review 3 it rolled back to the cursor's height and
    rescanned from N + 3 whatever the reorg's depth; now (``reorg_window`` = 1 here: a reorg deeper than the walk,
    named stuck by the rollback) it rescans from N + 2: C is not read again. At finality A's block N holds another block; its receipt comes from ``reader``: the
    stale backend (A's old receipt at N, old hash) for the batch and the read alone; that batch, then a backend
    behind C (head N: no receipt) alone; or the backend behind C for both. Before: A ORPHANED - the bill OPEN, the
    customer asked for a second $100.00, and nothing would ever see A at C again. Now no read alone comes from a
    backend holding F (none answers F's hash at F): A waits SEEN at N, named stuck once with its bill, nothing
    orphaned, the bill PROCESSING. A healthy backend next run: A's receipt at C, confirmed beside F: A moves to C
    and, C <= F, is FINALIZED: PAID, settled 100.00 (100 USDC x $1.00), credit 0.00, nothing pending."""
    h, billed, rpc, cursors = _billed(chain, stack)
    config = replace(billed, reorg_window=1)
    before, a, n = _bill_paid_then_seen(chain, h, config, rpc, cursors, mined=2)
    raw = chain.node.call("eth_getRawTransactionByHash", a)
    receipt, transaction, block = rpc.receipts([a])[a], rpc.transaction(a), rpc.headers([n])[n]
    chain.node.call("evm_revert", before)
    chain.mine(1)  # N, empty on the new fork
    chain.node.call("eth_sendRawTransaction", raw)  # the same signed A, mined at N + 1
    assert chain.w3.eth.wait_for_transaction_receipt(a, timeout=10)["blockNumber"] == n + 1
    chain.mine(FINALITY_LAG + 3)  # head N + 12, F = N + 4
    assert chain.token().functions.balanceOf(MERCHANT).call() == 100 * USDC
    if reader != "behind":
        rpc.stale_receipts, rpc.stale_transactions, rpc.stale_blocks = {a: receipt}, {a: transaction}, {n: block}
    if reader == "stale-then-behind":
        rpc.alone_head = n
    if reader == "behind":
        rpc.behind = n

    report = watch(config, rpc, cursors, h.settlement)

    assert (report.rolled_back_to, report.orphaned) == (n + 1, 0)
    held = h.store.payment(f"ethereum:{a}:0")
    assert held is not None
    assert (held.status, held.transfer.block_number) == (PaymentStatus.SEEN, n)
    deeper, entry = report.stuck
    assert deeper.startswith("ethereum:rollback:")
    assert entry.startswith(f"ethereum:{a}:0: ")
    assert entry.endswith("; bill inv-1 waits on it")
    assert h.store.bill("inv-1").status is BillStatus.PROCESSING  # type: ignore[union-attr]
    rpc.stale_receipts, rpc.stale_transactions, rpc.stale_blocks = {}, {}, {}
    rpc.alone_head = rpc.behind = None
    chain.mine(1)

    after = watch(config, rpc, cursors, h.settlement)

    assert (after.finalized, after.orphaned, after.stuck) == (1, 0, ())
    final = h.store.payment(f"ethereum:{a}:0")
    assert final is not None
    assert (final.status, final.transfer.block_number) == (PaymentStatus.FINALIZED, n + 1)
    paid = h.store.bill("inv-1")
    assert paid is not None
    assert (paid.status, paid.settled_usd, paid.credit_usd) == (BillStatus.PAID, Decimal("100.00"), Decimal("0"))
    assert h.settlement.pending("ethereum") == []


def _watched_then_a_paid(chain: Chain) -> tuple[Watcher, Any, str]:
    """PAYER and OTHER minted 10 USDC each, the watcher run once; a snapshot (the fork point), then A: 4 USDC
    (4,000,000 units) from PAYER to the merchant. Returns the watcher, the snapshot and A's hash."""
    chain.mint(PAYER, 10 * USDC)
    chain.mint(OTHER, 10 * USDC)
    chain.mine(FINALITY_LAG)
    watcher = Watcher(chain.config())
    watcher.run()
    before = chain.node.call("evm_snapshot")
    return watcher, before, chain.pay_usdc(PAYER, MERCHANT, 4 * USDC)


def test_given_a_reorg_noticed_after_finality_passed_its_fork_then_a_new_payment_below_the_cursor_is_seen(
    chain: Chain,
) -> None:
    """A (4 USDC = 4,000,000 units) SEEN at N, cursor N + 2. The reorg: N empty on the new fork, then B - a brand-new
    payment, 1 USDC (1,000,000 units) from another sender - at N + 1; the watcher next runs at head N + 12, F = N + 4
    (the fork, below N, already final). Before: rolled back to min(F, cursor) = N + 2, rescanned from N + 3: B never
    read - 1 USDC received, nothing recorded, for good. Now anvil has dropped the old fork (the walk reads no
    block by its hashes), so the rescan starts at the walk's bound - the block before ``start_block`` (N + 2 - 128 is below it) - and reads
    B: FINALIZED at N + 1 (final) in that run; A (its nonce unused on the new fork: no receipt from a backend
    holding F) ORPHANED by the finality pass; nothing stuck."""
    watcher, before, a = _watched_then_a_paid(chain)
    n = chain.receipt(a)["blockNumber"]
    chain.mine(2)
    watcher.run()
    assert watcher.cursors.cursors["ethereum"].block_number == n + 2
    chain.node.call("evm_revert", before)
    chain.mine(1)  # N, empty on the new fork
    b = chain.pay_usdc(OTHER, MERCHANT, 1 * USDC)
    assert chain.w3.eth.wait_for_transaction_receipt(b, timeout=10)["blockNumber"] == n + 1  # type: ignore[arg-type]
    chain.mine(FINALITY_LAG + 3)  # head N + 12, F = N + 4

    report = watcher.run()

    assert report.rolled_back_to == watcher.config.start_block - 1  # type: ignore[operator]
    assert report.rolled_back_to < n  # type: ignore[operator]
    (found,) = [t for t in watcher.sink.transfers.values() if t.tx_id == b]
    assert (found.atomic_amount, found.block_number) == (1_000_000, n + 1)
    assert watcher.sink.status[found.payment_id] is PaymentStatus.FINALIZED
    assert watcher.sink.status[f"ethereum:{a}:0"] is PaymentStatus.ORPHANED
    assert report.stuck == ()


def test_given_a_rollback_that_rescans_a_finalized_payments_block_then_its_bill_is_counted_once(
    chain: Chain, stack: Stack
) -> None:
    """The $100.00 bill (100 USDC quote at $1.00 = 100,000,000 units); P pays it at N and is FINALIZED: PAID,
    settled 100.00, credit 0.00. A reorg replaces only the top block (the cursor's); anvil drops the replaced
    block (the walk finds no old-fork block by its hash), so the rollback rescans from the walk's bound (the block before ``start_block``, below N): P's
    final block is read and P recorded again. Recording is idempotent per payment id: P stays FINALIZED, the bill
    PAID, settled 100.00, credit 0.00, nothing published, nothing pending, nothing stuck."""
    h, config, rpc, cursors = _billed(chain, stack)
    tx = chain.pay_usdc(PAYER, MERCHANT, 100 * USDC)
    chain.mine(FINALITY_LAG + 1)
    watch(config, rpc, cursors, h.settlement)
    paid = h.store.bill("inv-1")
    assert paid is not None
    assert (paid.status, paid.settled_usd, paid.credit_usd) == (BillStatus.PAID, Decimal("100.00"), Decimal("0"))
    announced = len(h.published.published)
    _cursor_block_replaced(chain, h, config, rpc, cursors, OTHER)

    report = watch(config, rpc, cursors, h.settlement)

    assert (report.rolled_back_to, report.stuck) == (config.start_block - 1, ())  # type: ignore[operator]
    assert report.transfers_seen == 1  # P, read again in its final block
    final = h.store.payment(f"ethereum:{tx}:0")
    assert final is not None
    assert final.status is PaymentStatus.FINALIZED
    again = h.store.bill("inv-1")
    assert again is not None
    assert (again.status, again.settled_usd, again.credit_usd) == (BillStatus.PAID, Decimal("100.00"), Decimal("0"))
    assert h.published.published[announced:] == []
    assert h.settlement.pending("ethereum") == []


def test_given_a_payment_rebased_by_the_fast_path_before_the_rollback_then_a_new_payment_below_it_is_recorded(
    chain: Chain,
) -> None:
    """D342, amended (review 4). A (4 USDC = 4,000,000 units) SEEN at N on the old fork, cursor N + 3. A reorg: N
    empty, a brand-new B (1 USDC = 1,000,000 units, from OTHER) at N + 1, the same signed A at N + 2. The customer
    submits A's hash (the fast path) before the next run: A stored at N + 2 (the new fork). Before: the rollback took
    A's canonical block as proof that everything up to N + 2 was shared - rolled back to N + 2, B never recorded,
    nothing stuck. Now the start is the walk's (or its bound when the node dropped the old fork): the rescan starts at
    N (rolled back to N - 1), B recorded SEEN at N + 1 with 1,000,000 units, then both FINALIZED; nothing stuck."""
    watcher, before, a = _watched_then_a_paid(chain)
    raw = chain.node.call("eth_getRawTransactionByHash", a)
    n = chain.receipt(a)["blockNumber"]
    chain.mine(3)
    watcher.run()
    assert watcher.cursors.cursors["ethereum"].block_number == n + 3
    chain.node.call("evm_revert", before)
    chain.mine(1)  # N, empty
    b = chain.pay_usdc(OTHER, MERCHANT, 1 * USDC)  # N + 1
    chain.node.call("eth_sendRawTransaction", raw)
    chain.mine(1)  # A at N + 2
    assert chain.receipt(a)["blockNumber"] == n + 2
    chain.mine(2)  # head N + 4 (the cursor's block N + 3 replaced)
    for credit in EvmTransactionInspector(watcher.config, watcher.rpc).transfers(a):  # the fast path
        watcher.sink.record_seen(credit)
    assert watcher.sink.transfers[f"ethereum:{a}:0"].block_number == n + 2

    report = watcher.run()
    chain.mine(FINALITY_LAG + 2)
    later = watcher.run()

    assert report.rolled_back_to == n - 1
    new = watcher.sink.transfers[f"ethereum:{b}:0"]
    assert (new.block_number, new.atomic_amount) == (n + 1, 1_000_000)
    assert watcher.sink.status[f"ethereum:{b}:0"] is PaymentStatus.FINALIZED
    assert watcher.sink.status[f"ethereum:{a}:0"] is PaymentStatus.FINALIZED
    assert (report.stuck, later.stuck) == ((), ())


def test_given_a_head_reorg_rescanning_final_usdc_eth_and_unattributed_payments_then_nothing_is_published_again(
    chain: Chain, stack: Stack
) -> None:
    """A guard (the review-4 reviewer's repro; it passes before and after): the $100.00 bill paid by P (100 USDC =
    100,000,000 units) FINALIZED; an unattributed 7 USDC (7,000,000 units) and 0.5 ETH (5 x 10^17 wei) from OTHER
    alerted once. A 1-block head reorg that anvil drops the old block of: the rollback goes to the walk's bound, the
    block before ``start_block`` (below F), and P, the 7 USDC and the 0.5 ETH are read again (3 transfers seen):
    all stay FINALIZED, nothing published, the bill PAID, settled 100.00, credit 0.00."""
    h, config, rpc, cursors = _billed(chain, stack)
    p = chain.pay_usdc(PAYER, MERCHANT, 100 * USDC)
    chain.mint(OTHER, 10 * USDC)
    u = chain.pay_usdc(OTHER, MERCHANT, 7 * USDC)
    e = chain.pay_eth(OTHER, MERCHANT, 5 * 10**17)
    chain.mine(FINALITY_LAG + 1)
    watch(config, rpc, cursors, h.settlement)
    watch(config, rpc, cursors, h.settlement)
    published = len(h.published.published)
    _cursor_block_replaced(chain, h, config, rpc, cursors, PAYER)

    report = watch(config, rpc, cursors, h.settlement)

    assert report.rolled_back_to == config.start_block - 1  # type: ignore[operator]
    assert report.transfers_seen == 3
    assert h.published.published[published:] == []
    for payment_id in (f"ethereum:{p}:0", f"ethereum:{u}:0", f"ethereum:{e}:-1"):
        stored = h.store.payment(payment_id)
        assert stored is not None
        assert stored.status is PaymentStatus.FINALIZED
    paid = h.store.bill("inv-1")
    assert paid is not None
    assert (paid.status, paid.settled_usd, paid.credit_usd) == (BillStatus.PAID, Decimal("100.00"), Decimal("0"))


def test_the_adapters_parent_beside_reads_a_block_by_hash_and_heights_in_one_batch(chain: Chain) -> None:
    """The rollback walk's read (D342, amended (review 4)): the block ``head``'s parent hash read by its hash, beside
    the hashes at ``head - 1`` and ``head`` - 3 JSON-RPC requests in one batch; a hash the node does not have (a
    dropped fork's block): None, the heights still answered."""
    chain.mine(3)
    head = chain.head()
    rpc = Web3EvmRpc(chain.node.url)

    parent, hashes = rpc.parent_beside(chain.block_hash(head), [head - 1, head])
    unknown, again = rpc.parent_beside("0x" + "ab" * 32, [head])

    assert parent == chain.block_hash(head - 1)
    assert hashes == {head - 1: chain.block_hash(head - 1), head: chain.block_hash(head)}
    assert (unknown, again) == (None, {head: chain.block_hash(head)})
    assert rpc.calls == 5  # 3 + 2


def test_given_no_start_block_then_a_rollback_never_rescans_blocks_before_the_watchers_first(chain: Chain) -> None:
    """No ``start_block``: the first run starts at the finalized block F0 = head - 8 (anvil's lag); X (2 USDC =
    2,000,000 units) paid to the merchant two blocks before F0 - before the watcher - is never read. A 1-block head
    reorg (anvil drops the old block, so the walk falls back to its bound): the bound, cursor - 128, is below F0.
    Before: no floor - the rescan from block 0 read X, recorded as a new (unattributed) payment. Now the floor is
    the first cursor's first block: rolled back to F0 - 1, X never recorded."""
    chain.mint(PAYER, 10 * USDC)
    x = chain.pay_usdc(PAYER, MERCHANT, 2 * USDC)
    chain.mine(FINALITY_LAG + 2)  # X's block = F0 - 2
    watcher = Watcher(chain.config(start_block=None))
    first_block = chain.head() - FINALITY_LAG
    assert chain.receipt(x)["blockNumber"] == first_block - 2
    watcher.run()
    top = chain.node.call("evm_snapshot")
    chain.mine(1)
    watcher.run()
    chain.node.call("evm_revert", top)
    chain.pay_eth(OTHER, OTHER, 1)  # the cursor's block replaced

    report = watcher.run()

    assert report.rolled_back_to == first_block - 1
    assert [t for t in watcher.sink.transfers.values() if t.tx_id == x] == []
    assert watcher.cursors.cursors["ethereum"].first_block == first_block


# --- a reopen owed for a dropped payment (D434 amended (hcw)) -------------------------------------------------------
def test_given_a_paid_bills_payment_reorged_out_and_mined_again_in_the_same_run_then_no_reopen_is_told(
    chain: Chain, stack: Stack
) -> None:
    """P (100 USDC) pays the $100.00 bill, seen (PROCESSING); the fork drops P's block and the same signed transaction
    lands in another block; one run orphans P (the rollback) and records it in its new block (the rescan), then the
    sweep: the bill PROCESSING again, nothing owed, no ``CryptoBillReopened.v1`` - a routine reorg is not "your
    payment was dropped". Before: one reopen published though P counts again."""
    h, config, rpc, cursors = _billed(chain, stack)
    before, tx, _ = _bill_paid_then_seen(chain, h, config, rpc, cursors)
    raw = chain.node.call("eth_getRawTransactionByHash", tx)
    chain.node.call("evm_revert", before)
    chain.mine(2)
    chain.node.call("eth_sendRawTransaction", raw)
    chain.mine(1)

    report = watch(config, rpc, cursors, h.settlement)
    h.settlement.announce_due()

    back = h.store.bill("inv-1")
    assert back is not None
    assert (report.rolled_back_to is not None, back.status, back.reopens_owed) == (True, BillStatus.PROCESSING, ())
    assert h.events("CryptoBillReopened.v1") == []


# --- the height through which a drop is final (D449) ---------------------------------------------------------------
def test_given_a_watcher_catching_up_then_the_height_it_reads_final_for_drops_is_at_most_the_last_block_it_read(
    chain: Chain,
) -> None:
    """Blocks S..S+29 to read (S the start block), finalized S+21 (the head S+29 less anvil's 8), 10 blocks a run:
    the first run reads S..S+9 and reports S+9 - a drop's transaction mined again at S+15, final already, is not read
    yet, so no drop is final through S+15 for this watcher; the second S+19; the third reaches the head and reports
    the finalized block, S+21."""
    config = replace(chain.config(), max_blocks_per_run=10)
    start = config.start_block
    assert start is not None
    chain.mine(30)
    assert (chain.head(), chain.w3.eth.get_block("finalized")["number"]) == (start + 29, start + 21)
    watcher = Watcher(config)

    reports = [watcher.run() for _ in range(3)]

    assert [(r.to_block, r.final_through) for r in reports] == [
        (start + 9, start + 9),
        (start + 19, start + 19),
        (start + 29, start + 21),
    ]
