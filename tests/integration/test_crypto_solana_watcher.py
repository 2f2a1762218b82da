"""The Solana watcher end to end: payments made with the real ``solana`` client through the LiteSVM stand-in's JSON-RPC,
watched by ``SolanaWatcher`` over ``SolanaRpcClient`` (the real ``AsyncClient``), reported to in-memory ports.

Amounts are the ones the tests pay (hand-chosen atomic units); slots and block hashes are read back from the stand-in,
which is independent of the watcher."""

from __future__ import annotations

import asyncio
from collections.abc import Callable, Iterator, Sequence
from dataclasses import replace
from datetime import UTC, datetime, timedelta
from decimal import Decimal
from typing import Any

import pytest
import spl.token.instructions as token
from solders.instruction import AccountMeta, Instruction
from solders.keypair import Keypair
from solders.pubkey import Pubkey
from solders.system_program import TransferParams, transfer
from spl.memo.constants import MEMO_PROGRAM_ID
from spl.token.constants import TOKEN_PROGRAM_ID
from spl.token.models import MintToCheckedParams, TransferCheckedParams

from kilo_crypto_watch import logic, solana
from kilo_crypto_watch.model import LockedRate, ObservedTransfer, PaymentStatus, Quote, RateReading, RunReport
from kilo_crypto_watch.ports import (
    SIGNATURES_PAGE,
    ChainTransaction,
    CursorConflictError,
    SignatureInfo,
    SignatureStatus,
    SolanaNodeBehindError,
    SolanaRpcError,
    TransactionNotFoundError,
)
from kilo_crypto_watch.quotes import QuotePolicy
from kilo_crypto_watch.settlement import (
    AlreadyClaimedError,
    ClaimRefusedError,
    NotAssignableError,
    NotRefundableError,
    Settlement,
)
from kilo_crypto_watch.solana import SolanaWatcher, inspect, rotation
from kilo_crypto_watch.solana_rpc import SolanaRpcClient, SolanaTransactionInspector
from kilo_crypto_watch.wallets import SignInPolicy
from kilo_dev import solana_standin as standin_module
from kilo_dev.solana_standin import SolanaStandin
from tests.conftest import Stack
from tests.crypto_core_fakes import CHAINS, Harness, bill, harness
from tests.crypto_core_fakes import transfer as _core_transfer
from tests.crypto_fakes import MemoryCursorStore, MemoryPaymentSink, StaticReferences
from tests.crypto_solana_chain import SOL, USDC, SolanaTestChain

LAG = 8


@pytest.fixture
def standin() -> Iterator[SolanaStandin]:
    """The stand-in with its clock at now: the quotes the tests make now are made before the payments' blocks (a
    payment made before its quote is valued by the late rule, D385)."""
    with SolanaStandin(finality_lag=LAG, genesis_time=int(datetime.now(UTC).timestamp())) as running:
        yield running


@pytest.fixture
def chain(standin: SolanaStandin) -> SolanaTestChain:
    return SolanaTestChain(standin)


class Watch:
    def __init__(self, chain: SolanaTestChain, max_transactions: int = 500) -> None:
        self.chain = chain
        self.cursors = MemoryCursorStore()
        self.sink = MemoryPaymentSink()
        self.references = StaticReferences()
        self.max_transactions = max_transactions
        self.start_block = 0
        self.time_left: Callable[[], float] | None = None  # the watcher's time budget (a fake clock), none by default

    def run(self) -> RunReport:
        async def go() -> RunReport:
            async with SolanaRpcClient(self.chain.standin.url) as rpc:
                watcher = SolanaWatcher(
                    self.chain.config(self.start_block),
                    rpc,
                    self.cursors,
                    self.sink,
                    self.references,
                    self.max_transactions,
                    time_left=self.time_left,
                )
                return await watcher.run()

        self.chain.standin.reset_calls()
        report = asyncio.run(go())
        assert report.rpc_calls == self.chain.standin.rpc_calls()  # the watcher's count is the server's
        return report


@pytest.fixture
def watch(chain: SolanaTestChain) -> Watch:
    return Watch(chain)


def test_given_a_sol_payment_with_reference_and_memo_then_it_is_seen_with_its_amount_reference_and_memo(
    chain: SolanaTestChain, watch: Watch
) -> None:
    reference = Keypair().pubkey()
    watch.references.keys.append(str(reference))
    signature = chain.pay_sol(250_000_000, reference=reference, memo="kilo bill INV-7")

    report = watch.run()

    transfer = watch.sink.only()
    landed = chain.standin.transaction(signature)
    assert landed is not None
    assert (transfer.asset, transfer.atomic_amount, transfer.tx_id, transfer.index) == (
        "SOL",
        250_000_000,
        signature,
        0,
    )
    assert (transfer.sender, transfer.recipient) == (str(chain.payer.pubkey()), str(chain.merchant.pubkey()))
    assert transfer.references == (str(reference),)
    assert transfer.memo == "kilo bill INV-7"
    assert (transfer.block_number, transfer.block_hash) == (landed.slot, chain.standin.blockhash(landed.slot))
    assert transfer.succeeded
    assert watch.sink.status[transfer.payment_id] is PaymentStatus.SEEN
    assert (report.transfers_seen, report.to_block, report.caught_up) == (1, chain.standin.slot, True)
    cursor = watch.cursors.cursors["solana"]
    assert (cursor.block_number, cursor.block_hash) == (chain.standin.slot, chain.standin.blockhash(chain.standin.slot))


def test_given_a_usdc_payment_with_reference_and_memo_then_the_merchant_token_delta_is_seen(
    chain: SolanaTestChain, watch: Watch
) -> None:
    reference = Keypair().pubkey()
    watch.references.keys.append(str(reference))
    signature = chain.pay_usdc(12_340_000, reference=reference, memo="INV-8")

    watch.run()

    transfer = watch.sink.only()
    # instruction 0 creates the ATA idempotently; the transfer_checked is instruction 1
    assert (transfer.asset, transfer.atomic_amount, transfer.tx_id, transfer.index) == (
        "USDC",
        12_340_000,
        signature,
        1,
    )
    assert transfer.sender == str(chain.payer.pubkey())  # the owner of the source account, not the token account
    assert transfer.recipient == str(chain.merchant.pubkey())  # the owner of the destination account
    assert transfer.references == (str(reference),)
    assert transfer.memo == "INV-8"


def test_given_a_token_of_another_mint_then_it_is_not_a_payment(chain: SolanaTestChain, watch: Watch) -> None:
    other = chain.create_mint(decimals=6)
    chain.fund_tokens(other, 50 * USDC)
    reference = Keypair().pubkey()
    watch.references.keys.append(str(reference))
    chain.pay_usdc(12_340_000, reference=reference, memo="INV-9", mint=other)

    report = watch.run()

    assert watch.sink.transfers == {}
    assert report.transfers_seen == 0


def test_given_a_payment_to_another_wallet_then_it_is_not_a_payment(chain: SolanaTestChain, watch: Watch) -> None:
    stranger = Keypair().pubkey()
    reference = Keypair().pubkey()
    watch.references.keys.append(str(reference))
    chain.pay_sol(250_000_000, reference=reference, to=stranger)
    chain.pay_usdc(5 * USDC, reference=reference, to=stranger)

    watch.run()

    assert watch.sink.transfers == {}


def test_given_a_failed_transaction_then_it_is_recorded_failed_and_pending_until_its_slot_is_final(
    chain: SolanaTestChain, watch: Watch
) -> None:
    reference = Keypair().pubkey()
    watch.references.keys.append(str(reference))
    # more than the payer holds: the System program fails it; sent without preflight, it lands with meta.err
    signature = chain.pay_sol(1_000 * SOL, reference=reference, skip_preflight=True)
    landed = chain.standin.transaction(signature)
    assert landed is not None
    assert landed.err == {"InstructionError": [0, {"Custom": 1}]}

    report = watch.run()

    transfer = watch.sink.only()
    assert (transfer.succeeded, transfer.atomic_amount, transfer.references) == (False, 1_000 * SOL, (str(reference),))
    assert watch.sink.status[transfer.payment_id] is PaymentStatus.FAILED
    assert report.failed == 1
    (pending,) = watch.sink.pending("solana")
    assert (pending.payment_id, pending.failed, pending.block_number) == (transfer.payment_id, True, landed.slot)

    chain.standin.advance(LAG)  # the finalized slot passes the transaction's
    watch.run()
    assert watch.sink.pending("solana") == []
    assert watch.sink.status[transfer.payment_id] is PaymentStatus.FAILED
    assert watch.sink.final == {transfer.payment_id}


def test_given_a_failed_transaction_then_preflight_refuses_it_and_nothing_lands(chain: SolanaTestChain) -> None:
    from solana.rpc.core import RPCException  # noqa: PLC0415

    with pytest.raises(RPCException, match="simulation failed"):
        chain.pay_sol(1_000 * SOL)


def test_given_payments_without_reference_then_the_merchant_sweep_catches_sol_and_usdc(
    chain: SolanaTestChain, watch: Watch
) -> None:
    sol = chain.pay_sol(75_000_000, memo="no reference")
    usdc = chain.pay_usdc(3 * USDC)

    watch.run()

    seen = {(t.asset, t.tx_id, t.atomic_amount, t.references) for t in watch.sink.transfers.values()}
    assert seen == {("SOL", sol, 75_000_000, ()), ("USDC", usdc, 3 * USDC, ())}


def test_given_finality_lag_then_a_payment_stays_seen_until_its_slot_is_finalized(
    chain: SolanaTestChain, watch: Watch
) -> None:
    chain.pay_sol(SOL // 10)
    watch.run()
    (payment_id,) = watch.sink.transfers
    slot = watch.sink.only().block_number

    chain.standin.advance(LAG - 1)  # the finalized slot is now one short of the payment's
    assert chain.standin.finalized_slot == slot - 1
    report = watch.run()
    assert watch.sink.status[payment_id] is PaymentStatus.SEEN
    assert report.finalized == 0

    chain.standin.advance(1)
    report = watch.run()
    assert watch.sink.status[payment_id] is PaymentStatus.FINALIZED
    assert report.finalized == 1
    assert watch.sink.pending("solana") == []


def test_given_a_seen_payment_that_vanishes_before_finality_then_it_is_orphaned(
    chain: SolanaTestChain, watch: Watch
) -> None:
    signature = chain.pay_sol(SOL // 10)
    watch.run()
    (payment_id,) = watch.sink.transfers

    chain.standin.forget(signature, replaced=True)  # its fork did not survive: another block at its slot did
    chain.standin.advance(LAG - 1)
    watch.run()
    assert watch.sink.status[payment_id] is PaymentStatus.SEEN  # the finalized slot has not reached it yet

    chain.standin.advance(1)
    report = watch.run()
    assert watch.sink.status[payment_id] is PaymentStatus.ORPHANED
    assert report.orphaned == 1


def test_given_a_seen_payment_whose_transaction_failed_then_it_is_orphaned_as_failed_and_a_vanished_one_not(
    chain: SolanaTestChain, watch: Watch
) -> None:
    """D434 amended (hcw): two seen payments; one's transaction now reads failed (its status ``err`` set), the other's
    fork did not survive: both orphaned, only the failed one reported ``failed`` - the cause carried, not inferred.
    Before: no ``failed`` passed (both told "dropped")."""
    failing = chain.pay_sol(SOL // 10)
    vanishing = chain.pay_sol(SOL // 20)
    watch.run()
    ids = {transfer.tx_id: payment_id for payment_id, transfer in watch.sink.transfers.items()}
    landed = chain.standin._landed[failing]  # the stand-in has no failing of a landed one
    landed.err = {"InstructionError": [0, {"Custom": 1}]}
    chain.standin.forget(vanishing, replaced=True)
    chain.standin.advance(LAG)

    report = watch.run()

    assert report.orphaned == 2
    assert watch.sink.failed_orphans == [ids[failing]]


def test_given_a_seen_payment_whose_fork_died_then_its_skipped_slot_is_proven_by_the_next_final_block_and_orphaned(
    chain: SolanaTestChain, watch: Watch
) -> None:
    """Review rs2: Agave answers getBlock(finalized) of a dead fork's slot with -32007 "skipped"; it stayed SEEN for
    ever (its bill PROCESSING, named stuck every run from 750 slots on). Proof: the next finalized block's parent."""
    signature = chain.pay_sol(SOL // 10)
    watch.run()
    (payment_id,) = watch.sink.transfers
    slot = watch.sink.only().block_number
    chain.standin.forget(signature)  # its fork died: on the finalized chain its slot S is skipped (getBlock -32007)

    chain.standin.advance(LAG)  # finalized = S: final, but no later block final yet to show the chain went past S
    assert chain.standin.finalized_slot == slot
    report = watch.run()
    assert (report.orphaned, report.unproven, report.stuck) == (0, 1, ())
    assert watch.sink.status[payment_id] is PaymentStatus.SEEN

    chain.standin.advance(1)  # finalized = S + 1, its block's parentSlot S - 1 < S: S skipped, the payment gone
    report = watch.run()
    assert (report.orphaned, report.unproven, report.stuck) == (1, 0, ())
    assert watch.sink.status[payment_id] is PaymentStatus.ORPHANED
    assert watch.sink.pending("solana") == []  # no stuck alarm left for the next runs


def test_given_reruns_then_nothing_is_recorded_twice_and_calls_stay_flat(chain: SolanaTestChain, watch: Watch) -> None:
    reference = Keypair().pubkey()
    watch.references.keys.append(str(reference))
    chain.pay_sol(SOL // 4, reference=reference)
    chain.pay_usdc(7 * USDC)
    first = watch.run()
    assert first.transfers_seen == 2

    second = watch.run()
    third = watch.run()

    assert len(watch.sink.recorded) == 2  # record_seen was not called again
    assert second.transfers_seen == third.transfers_seen == 0
    # getLatestBlockhash + 1 reference + wallet and token-account sweeps + one getSignatureStatuses for the 2 pending
    # + one getBlocks (the final slot for drops, D449)
    assert second.rpc_calls == third.rpc_calls == 1 + 1 + 2 + 1 + 1


def test_given_more_new_signatures_than_the_cap_then_runs_resume_until_caught_up(chain: SolanaTestChain) -> None:
    watch = Watch(chain, max_transactions=2)
    watch.start_block = chain.standin.slot  # deployed after the chain's setup: only the payments below are new
    paid = [chain.pay_sol(SOL // 100 + n) for n in range(5)]  # one slot each

    reports = [watch.run() for _ in range(4)]

    assert [r.caught_up for r in reports] == [False, False, True, True]
    assert [r.transfers_seen for r in reports] == [2, 2, 1, 0]
    assert sorted(t.tx_id for t in watch.sink.transfers.values()) == sorted(paid)
    assert sorted(t.atomic_amount for t in watch.sink.transfers.values()) == [SOL // 100 + n for n in range(5)]
    assert len(watch.sink.recorded) == 5


class _Clock:
    """A fake clock for the watcher's time budget: 60 s left at each of the first ``slots`` asks (one a slot, at its
    start), then 29 s - less than ``solana.TIME_MARGIN`` (30 s) - for good."""

    def __init__(self, slots: int) -> None:
        self.slots = slots
        self.asks = 0

    def __call__(self) -> float:
        self.asks += 1
        return 60.0 if self.asks <= self.slots else 29.0


def test_given_the_run_runs_out_of_time_mid_batch_then_it_records_the_whole_slots_read_and_the_next_run_the_rest(
    chain: SolanaTestChain,
) -> None:
    # review fc: ~1,103 sequential calls can outlast the 120 s Lambda timeout; killed mid-loop, a run recorded nothing
    # and left its cursor, so every run after it timed out on the same backlog
    watch = Watch(chain)
    watch.start_block = chain.standin.slot  # only the payments below are new
    paid = [chain.pay_sol(SOL // 100 + n) for n in range(5)]  # one slot each, no reference: the wallet sweep lists them
    slots = [landed.slot for landed in map(chain.standin.transaction, paid) if landed is not None]
    assert slots == [watch.start_block + 1 + n for n in range(5)]  # five consecutive slots
    watch.time_left = _Clock(slots=3)

    first = watch.run()

    # time enough for slots 1-3, 29 s < 30 s at slot 4's start: the batch ends on slot 3, before slot 4
    assert (first.out_of_time, first.caught_up) == (True, False)
    assert first.to_block == watch.cursors.cursors["solana"].block_number == slots[3] - 1 == slots[2]
    assert watch.cursors.cursors["solana"].last_signature == paid[2]  # the wallet sweep resumes after it
    assert first.transfers_seen == 3
    # 0.01 SOL = 10_000_000 lamports, plus n for the n-th payment
    assert sorted(t.atomic_amount for t in watch.sink.transfers.values()) == [10_000_000, 10_000_001, 10_000_002]
    # getLatestBlockhash + 2 sweeps + 3 getTransaction + 3 getBlock (one per slot with a credit) + 1 statuses (3 pending)
    # + 1 getBlocks (the final slot for drops, D449)
    assert first.rpc_calls == 1 + 2 + 3 + 3 + 1 + 1

    watch.time_left = _Clock(slots=5)  # time enough now
    second = watch.run()

    assert (second.out_of_time, second.caught_up, second.transfers_seen) == (False, True, 2)
    assert sorted(t.tx_id for t in watch.sink.transfers.values()) == sorted(paid)
    assert len(watch.sink.recorded) == 5  # nothing recorded twice


def test_given_less_than_the_margin_left_before_the_first_slot_then_nothing_is_read_and_the_cursor_stays(
    chain: SolanaTestChain,
) -> None:
    watch = Watch(chain)
    watch.start_block = chain.standin.slot
    chain.pay_sol(SOL // 100)
    watch.time_left = _Clock(slots=0)  # 29 s at the first slot's start

    report = watch.run()

    assert (report.out_of_time, report.transfers_seen, watch.sink.recorded) == (True, 0, [])
    assert watch.cursors.cursors["solana"].block_number == watch.start_block  # the first slot - 1: the floor
    watch.time_left = None  # no budget: the slot is read
    assert watch.run().transfers_seen == 1


def test_given_another_run_moved_the_cursor_then_this_run_stops_with_a_conflict(
    chain: SolanaTestChain, watch: Watch
) -> None:
    watch.run()
    stale = watch.cursors.cursors["solana"]
    chain.pay_sol(SOL // 10)
    watch.run()  # moves the cursor past ``stale``

    class Stale(MemoryCursorStore):
        def get(self, chain_key: str) -> object:  # type: ignore[override]
            return stale

    watch.cursors = Stale(cursors=watch.cursors.cursors)
    with pytest.raises(CursorConflictError):
        watch.run()


def test_given_a_signature_on_the_fast_path_then_the_inspector_returns_the_merchant_credit(
    chain: SolanaTestChain,
) -> None:
    reference = Keypair().pubkey()
    usdc = chain.pay_usdc(9_990_000, reference=reference, memo="fast")
    elsewhere = chain.pay_sol(SOL // 10, to=Keypair().pubkey())

    async def go(signature: str) -> list[object]:
        async with SolanaRpcClient(chain.standin.url) as rpc:
            return list(await inspect(rpc, chain.config(), signature))

    (transfer,) = asyncio.run(go(usdc))
    assert (transfer.asset, transfer.atomic_amount, transfer.references, transfer.memo) == (  # type: ignore[attr-defined]
        "USDC",
        9_990_000,
        (str(reference),),
        "fast",
    )
    assert asyncio.run(go(elsewhere)) == []
    with pytest.raises(TransactionNotFoundError):
        asyncio.run(go(str(Keypair().sign_message(b"never sent"))))


@pytest.mark.parametrize("timeless", [False, True])
def test_given_a_transaction_answered_without_a_block_time_then_its_credit_is_dated_by_get_block_time_or_left_unknown(
    chain: SolanaTestChain, watch: Watch, timeless: bool
) -> None:
    """D397. getTransaction answers blockTime null for the payment's slot: the watcher asks getBlockTime for that
    slot (one call) and records its time - the stand-in's genesis plus 400 ms a slot; a node with no time there
    either (null) leaves it None, for settlement's unknown-time rule. Before: None whatever getBlockTime knew, and
    settlement dated the payment at its own clock."""
    signature = chain.pay_sol(SOL // 10)  # 100,000,000 lamports, no reference: the wallet sweep lists it
    landed = chain.standin.transaction(signature)
    assert landed is not None
    (chain.standin.timeless if timeless else chain.standin.untimed).add(landed.slot)

    watch.run()

    transfer = watch.sink.only()
    expected = None if timeless else datetime.fromtimestamp(chain.standin.block_time(landed.slot), UTC)
    assert (transfer.tx_id, transfer.atomic_amount, transfer.block_time) == (signature, 100_000_000, expected)
    assert chain.standin.calls["getBlockTime"] == 1


def test_given_a_submitted_signature_answered_without_a_block_time_then_the_fast_path_dates_it_by_get_block_time(
    chain: SolanaTestChain,
) -> None:
    """D397: the fast path dates a credit as the watcher does (else a claim was valued at the API's clock)."""
    signature = chain.pay_usdc(9_990_000)
    landed = chain.standin.transaction(signature)
    assert landed is not None
    chain.standin.untimed.add(landed.slot)

    async def go() -> list[ObservedTransfer]:
        async with SolanaRpcClient(chain.standin.url) as rpc:
            return list(await inspect(rpc, chain.config(), signature))

    (transfer,) = asyncio.run(go())
    assert transfer.block_time == datetime.fromtimestamp(chain.standin.block_time(landed.slot), UTC)


def _block_time_answers(monkeypatch: pytest.MonkeyPatch, code: int, message: str) -> None:
    """getBlockTime answered with a JSON-RPC error: Agave's -32004 "Block not available" (no time for that block
    here), or -32603 "Internal error" (a provider failing, a rate limit sent as a JSON-RPC error)."""

    def refused(self: SolanaStandin, slot: int) -> None:
        raise standin_module.RpcError(code, message)

    monkeypatch.setattr(SolanaStandin, "_rpc_getBlockTime", refused)


def test_given_get_block_time_answered_with_an_internal_error_then_the_run_fails_and_the_next_run_dates_the_payment(
    chain: SolanaTestChain, watch: Watch, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Review rcr 1: any JSON-RPC error from getBlockTime was "no time": on a -32603 the payment was recorded with
    block_time None for good (the next run, the node healthy, does not record it again) - SOL to review, its bill
    OPEN until an operator acted. Now only a null or a "no block shown" answer (-32004 ...) is no time; another
    error fails the run (nothing recorded, the cursor not moved) and the next run dates the payment."""
    signature = chain.pay_sol(SOL // 10)  # 100,000,000 lamports, no reference: the wallet sweep lists it
    landed = chain.standin.transaction(signature)
    assert landed is not None
    chain.standin.untimed.add(landed.slot)
    _block_time_answers(monkeypatch, -32603, "Internal error")

    with pytest.raises(SolanaRpcError):  # before: recorded, block_time None
        watch.run()
    assert watch.sink.transfers == {}

    monkeypatch.undo()
    watch.run()
    transfer = watch.sink.only()
    expected = datetime.fromtimestamp(chain.standin.block_time(landed.slot), UTC)
    assert (transfer.tx_id, transfer.atomic_amount, transfer.block_time) == (signature, 100_000_000, expected)


def test_given_get_block_time_answered_block_not_available_then_the_payment_is_recorded_with_no_time(
    chain: SolanaTestChain, watch: Watch, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Review rcr 1: Agave's -32004 (BLOCK_NOT_SHOWN's kind) says the node has no time for that block: no time
    (D397), as a null answer; the run goes on."""
    signature = chain.pay_sol(SOL // 10)
    landed = chain.standin.transaction(signature)
    assert landed is not None
    chain.standin.untimed.add(landed.slot)
    _block_time_answers(monkeypatch, -32004, f"Block not available for slot {landed.slot}")

    watch.run()

    transfer = watch.sink.only()
    assert (transfer.tx_id, transfer.atomic_amount, transfer.block_time) == (signature, 100_000_000, None)


def test_given_a_submitted_signature_whose_get_block_time_answers_an_internal_error_then_the_fast_path_fails(
    chain: SolanaTestChain, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Review rcr 1, the fast path: a -32603 from getBlockTime gave a credit with no time (the claim valued as
    sent before every quote but its reference's); now the claim fails, to be asked again."""
    signature = chain.pay_usdc(9_990_000)
    landed = chain.standin.transaction(signature)
    assert landed is not None
    chain.standin.untimed.add(landed.slot)
    _block_time_answers(monkeypatch, -32603, "Internal error")

    async def go() -> list[ObservedTransfer]:
        async with SolanaRpcClient(chain.standin.url) as rpc:
            return list(await inspect(rpc, chain.config(), signature))

    with pytest.raises(SolanaRpcError):  # before: one credit, block_time None
        asyncio.run(go())


def test_given_a_solana_chain_then_the_apis_fast_path_entry_point_inspects_through_the_real_client(
    chain: SolanaTestChain, stack: Stack, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The crypto API finds a chain kind's inspector by module (``dependencies.inspector``): the Solana one must be
    there and give what the watcher would record - the active references of the crypto table (moto) included."""
    from kilo_crypto_watch import dependencies, settings  # noqa: PLC0415

    for key, value in stack.template.function_environment("CryptoApiFunction").items():
        monkeypatch.setenv(key, value)
    monkeypatch.setenv("RPC_SECRET_NAME", "")  # the chain's URL is the stand-in's, in its configuration
    settings.settings.cache_clear()
    dependencies.clear_caches()
    reference = Keypair().pubkey()
    try:
        assert dependencies.store().create_bill(bill("inv-1", "acct-1", "37.50"))
        dependencies.store().add_quote(_sol_quote("q-1", "inv-1", "acct-1", SOL // 4, str(reference)))
        sent = chain.send([_pay(chain, SOL // 4), _pay(chain, 0, reference), _memo("bill")])
        inspector = dependencies.inspector(chain.config())
        (transfer,) = inspector.transfers(sent)
        assert (transfer.asset, transfer.atomic_amount, transfer.memo, transfer.tx_id) == (
            "SOL",
            SOL // 4,
            "bill",
            sent,
        )
        assert transfer.references == (str(reference),)
        with pytest.raises(TransactionNotFoundError):
            inspector.transfers("not-a-signature")
    finally:
        settings.settings.cache_clear()
        dependencies.clear_caches()


def _pay(chain: SolanaTestChain, lamports: int, reference: Pubkey | None = None) -> Instruction:
    """A System transfer to the merchant; ``reference`` appended as a read-only key (on a second, 0-lamport transfer:
    a wallet that puts the Solana Pay reference on another instruction than the payment's)."""
    ix = transfer(
        TransferParams(from_pubkey=chain.payer.pubkey(), to_pubkey=chain.merchant.pubkey(), lamports=lamports)
    )
    if reference is None:
        return ix
    return Instruction(ix.program_id, ix.data, [*ix.accounts, AccountMeta(reference, False, False)])


def _memo(text: str) -> Instruction:
    return Instruction(MEMO_PROGRAM_ID, text.encode(), [])


def _sol_quote(
    quote_id: str, invoice_id: str, account_id: str, lamports: int, reference: str | None, amount_usd: str = "37.50"
) -> Quote:
    """A SOL quote made now, locked at $150.00 (0.25 SOL = $37.50), watched for 72 hours."""
    created = datetime.now(UTC)
    rate = LockedRate("SOL", Decimal("150.00"), (RateReading("fixed", "SOL", Decimal("150.00"), created),), created)
    return Quote(
        quote_id=quote_id,
        invoice_id=invoice_id,
        account_id=account_id,
        chain="solana",
        asset="SOL",
        amount_usd=Decimal(amount_usd),
        rate=rate,
        atomic_amount=lamports,
        pay_to="merchant",
        created_at=created,
        expires_at=created + timedelta(minutes=30),
        monitor_until=created + timedelta(hours=72),
        payment_uri=f"test:{quote_id}",
        reference=reference,
    )


# --- a node's empty answers --------------------------------------------------------------------------------------------
class Lagging(SolanaRpcClient):
    """A load-balanced RPC: ``getTransaction`` of ``hidden`` signatures answers null (a backend that has not got them
    yet), ``getSignatureStatuses`` answers null for all when ``no_statuses``, ``getBlock(finalized)`` shows no block
    (Agave's "Block not available for slot", at any slot) when ``no_blocks``; ``getSignaturesForAddress`` answered by
    a backend whose confirmed slot is ``listed_to``: it lists nothing above it and, as a real server does, refuses a
    ``minContextSlot`` above it (-32016, the client's ``SolanaNodeBehindError``) and answers an empty page for a
    ``before`` signature above it (one it has not got); ``first_page_current``: only ``before`` pages go to it."""

    def __init__(
        self,
        url: str,
        hidden: frozenset[str] = frozenset(),
        no_statuses: bool = False,
        no_blocks: bool = False,
        listed_to: int | None = None,
        first_page_current: bool = False,
    ) -> None:
        super().__init__(url)
        self.hidden = hidden
        self.no_statuses = no_statuses
        self.no_blocks = no_blocks
        self.listed_to = listed_to
        self.first_page_current = first_page_current  # only ``before`` pages go to the backend behind

    async def signatures(
        self,
        address: str,
        *,
        before: str | None = None,
        until: str | None = None,
        limit: int = SIGNATURES_PAGE,
        min_slot: int | None = None,
    ) -> Sequence[SignatureInfo]:
        if self.listed_to is None or (self.first_page_current and before is None):
            return await super().signatures(address, before=before, until=until, limit=limit, min_slot=min_slot)
        if min_slot is not None and min_slot > self.listed_to:
            raise SolanaNodeBehindError(f"solana rpc: Minimum context slot has not been reached ({self.listed_to})")
        if before is not None:
            (status,) = await super().statuses([before])
            if status is None or status.slot > self.listed_to:
                return []  # a ``before`` signature it has not got yet: an empty page, not an error
        page = await super().signatures(address, before=before, until=until, limit=limit)
        return [info for info in page if info.slot <= self.listed_to]

    async def finalized_signatures(self, slot: int) -> Sequence[str] | None:
        return None if self.no_blocks else await super().finalized_signatures(slot)

    async def finalized_parent(self, slot: int) -> int | None:
        return None if self.no_blocks else await super().finalized_parent(slot)

    async def transaction(self, signature: str) -> ChainTransaction | None:
        return None if signature in self.hidden else await super().transaction(signature)

    async def statuses(self, signatures: Sequence[str]) -> Sequence[SignatureStatus | None]:
        return [None for _ in signatures] if self.no_statuses else await super().statuses(signatures)


def _run(watch: Watch, rpc: SolanaRpcClient, behind_pause: float = 0.4) -> RunReport:
    async def go() -> RunReport:
        async with rpc:
            watcher = SolanaWatcher(watch.chain.config(), rpc, watch.cursors, watch.sink, watch.references)
            watcher.behind_pause = behind_pause
            return await watcher.run()

    return asyncio.run(go())


def test_given_a_listed_signature_the_node_does_not_serve_yet_then_the_cursor_stops_before_its_slot(
    chain: SolanaTestChain, watch: Watch
) -> None:
    signature = chain.pay_sol(SOL // 10)
    landed = chain.standin.transaction(signature)
    assert landed is not None

    report = _run(watch, Lagging(chain.standin.url, hidden=frozenset({signature})))

    assert watch.sink.transfers == {}
    assert watch.cursors.cursors["solana"].block_number == landed.slot - 1
    assert not report.caught_up
    watch.run()  # the node has it now
    assert [t.tx_id for t in watch.sink.transfers.values()] == [signature]


def test_given_a_listing_node_behind_the_head_then_the_cursor_stays_and_a_later_run_records_the_payment(
    chain: SolanaTestChain, watch: Watch
) -> None:
    # getLatestBlockhash from an up-to-date backend, getSignaturesForAddress from one a slot behind (review rs): the
    # run must not move its cursor past slots its listing server had not reached
    first = watch.run()
    signature = chain.pay_sol(SOL // 10)  # 0.1 SOL = 100_000_000 lamports, no reference: found by the wallet sweep
    landed = chain.standin.transaction(signature)
    assert landed is not None
    assert landed.slot == first.to_block + 1  # each transaction lands in its own slot

    report = _run(watch, Lagging(chain.standin.url, listed_to=landed.slot - 1))

    assert watch.sink.transfers == {}
    assert watch.cursors.cursors["solana"].block_number == first.to_block  # not moved: no slot of it past the floor
    assert (report.caught_up, report.to_block) == (False, first.to_block)
    watch.run()  # every backend up to date now
    assert [(t.tx_id, t.atomic_amount) for t in watch.sink.transfers.values()] == [(signature, 100_000_000)]


def test_given_a_later_page_answered_by_a_node_behind_the_head_then_the_scan_does_not_stop_short_of_the_floor(
    chain: SolanaTestChain, watch: Watch, monkeypatch: pytest.MonkeyPatch
) -> None:
    # paging past a full page: the first page from an up-to-date backend, the ``before`` page from one behind (review
    # rs). Pages of 2 stand for pages of 1,000 (the paging logic is the same; 1,001 transactions are not needed)
    monkeypatch.setattr(solana, "SIGNATURES_PAGE", 2)
    first = watch.run()
    paid = [chain.pay_sol(SOL // 100 + n) for n in range(3)]  # slots floor+1, +2, +3 (one slot each), no reference
    floor = first.to_block
    assert [landed.slot for landed in map(chain.standin.transaction, paid) if landed] == [
        floor + 1,
        floor + 2,
        floor + 3,
    ]

    # page 1 (newest first): floor+3, floor+2 - full, its last slot above the floor -> page 2 ``before`` floor+2's
    # signature, sent to the backend that has reached only the floor: it does not know that signature
    report = _run(watch, Lagging(chain.standin.url, listed_to=floor, first_page_current=True))

    assert watch.sink.transfers == {}
    assert watch.cursors.cursors["solana"].block_number == floor  # not moved past floor+1, which page 2 would list
    assert (report.caught_up, report.to_block) == (False, floor)
    watch.run()  # every backend up to date now
    # 0.01 SOL + 0, + 1, + 2 lamports: 10_000_000, 10_000_001, 10_000_002
    assert sorted((t.tx_id, t.atomic_amount) for t in watch.sink.transfers.values()) == sorted(
        zip(paid, [10_000_000, 10_000_001, 10_000_002], strict=True)
    )


def test_given_a_seen_payment_whose_status_the_node_does_not_know_then_it_is_not_orphaned_while_it_is_served(
    chain: SolanaTestChain, watch: Watch
) -> None:
    chain.pay_sol(SOL // 10)
    watch.run()
    (payment_id,) = watch.sink.transfers
    chain.standin.advance(LAG)  # the finalized slot passes the payment's

    report = _run(watch, Lagging(chain.standin.url, no_statuses=True))

    assert report.orphaned == 0
    assert watch.sink.status[payment_id] is PaymentStatus.SEEN
    assert watch.run().finalized == 1
    assert watch.sink.status[payment_id] is PaymentStatus.FINALIZED


def test_given_a_finalized_payment_whose_status_and_transaction_a_lagging_backend_answers_null_then_it_is_not_orphaned(
    chain: SolanaTestChain, stack: Stack
) -> None:
    h = harness(stack)
    h.clock.now = datetime.now(UTC)
    reference = Keypair().pubkey()
    assert h.store.create_bill(bill("inv-1", "acct-1", "37.50"))
    h.store.add_quote(_sol_quote("q-1", "inv-1", "acct-1", SOL // 4, str(reference)))
    watch = Watch(chain)
    watch.sink = h.settlement  # type: ignore[assignment]
    watch.references = h.settlement  # type: ignore[assignment]
    signature = chain.send([_pay(chain, SOL // 4, reference)])  # 0.25 SOL x $150.00 = $37.50, the bill's total
    watch.run()
    assert _bill_and_payment(h, f"solana:{signature}:0") == ("PROCESSING", "SEEN")
    chain.standin.advance(LAG)  # its slot is finalized; the finalized block there holds it

    # getSlot(finalized) and getBlock(finalized) from an up-to-date backend; getSignatureStatuses and getTransaction
    # from one that is behind: no proof it is gone (before: ORPHANED here, the bill OPEN, never checked again)
    report = _run(watch, Lagging(chain.standin.url, hidden=frozenset({signature}), no_statuses=True))

    assert (report.orphaned, report.unproven, report.stuck) == (0, 1, ())
    assert _bill_and_payment(h, f"solana:{signature}:0") == ("PROCESSING", "SEEN")
    assert watch.run().finalized == 1  # every backend up to date: $37.50 finalized pays the $37.50 bill
    assert _bill_and_payment(h, f"solana:{signature}:0") == ("PAID", "FINALIZED")


def test_given_a_listed_signature_whose_transaction_and_status_a_lagging_backend_answers_null_after_finality_then_the_cursor_waits(
    chain: SolanaTestChain, watch: Watch
) -> None:
    signature = chain.pay_sol(SOL // 10)  # 0.1 SOL = 100,000,000 lamports, no reference: the wallet sweep lists it
    landed = chain.standin.transaction(signature)
    assert landed is not None
    chain.standin.advance(LAG)  # its slot is finalized; the finalized block there holds it

    report = _run(watch, Lagging(chain.standin.url, hidden=frozenset({signature}), no_statuses=True))

    # before: "vanished" - skipped, the cursor moved to the head and no later run lists it again (never recorded)
    assert watch.sink.transfers == {}
    assert watch.cursors.cursors["solana"].block_number == landed.slot - 1
    assert not report.caught_up
    watch.run()  # every backend up to date
    assert [(t.tx_id, t.atomic_amount) for t in watch.sink.transfers.values()] == [(signature, 100_000_000)]


def test_given_a_vanished_payment_whose_finalized_block_no_backend_shows_then_it_waits_and_is_named_stuck_after_750_slots(
    chain: SolanaTestChain, watch: Watch
) -> None:
    signature = chain.pay_sol(SOL // 10)
    watch.run()
    (payment_id,) = watch.sink.transfers
    slot = watch.sink.only().block_number
    chain.standin.forget(signature)  # its fork did not survive
    lagging = frozenset({signature})

    chain.standin.advance(LAG + 749)  # finalized = slot + 749: its slot final, no block shown to prove it gone
    assert chain.standin.finalized_slot == slot + 749
    report = _run(watch, Lagging(chain.standin.url, hidden=lagging, no_statuses=True, no_blocks=True))
    assert (report.orphaned, report.unproven, report.stuck) == (0, 1, ())
    assert watch.sink.status[payment_id] is PaymentStatus.SEEN

    chain.standin.advance(1)  # finalized = slot + 750: unproven for 750 slots (~5 minutes at 400 ms a slot)
    report = _run(watch, Lagging(chain.standin.url, hidden=lagging, no_statuses=True, no_blocks=True))
    assert (report.orphaned, report.unproven) == (0, 1)
    assert [entry.split(":")[0:3] for entry in report.stuck] == [payment_id.split(":")]
    assert watch.sink.status[payment_id] is PaymentStatus.SEEN

    report = watch.run()  # a backend shows the finalized block at its slot without it: proof
    assert (report.orphaned, report.unproven, report.stuck) == (1, 0, ())
    assert watch.sink.status[payment_id] is PaymentStatus.ORPHANED


def test_given_a_bill_paid_short_whose_top_up_is_stuck_then_paid_with_the_write_off_and_the_top_up_pays_it_later(
    chain: SolanaTestChain, stack: Stack
) -> None:
    """D398. The $37.50 bill (SOL: 1 % tolerance, $0.37) paid 248,000,000 lamports ($37.20 at the $150.00 lock)
    and 2,000,000 ($0.30), both with its reference. The $37.20 finalizes; the $0.30 is then unknown to every
    backend past its final slot and no block proves it gone: SEEN, held by D387 - before, the bill stayed PROCESSING
    for as long as it was stuck. Named stuck 750 slots after its slot is final (the alarm), it still holds the bill;
    1,920 slots after (~768 s at 400 ms a slot, as on EVM chains: D418, amended (cw2); before: at 750, ~300 s) it
    stops holding the write-off: PAID, $37.20 settled, $0.30 written off. When it finalizes after all, it pays that
    write-off (D387): $0.00 written off, $0.00 credit."""
    h = harness(stack)
    h.clock.now = datetime.now(UTC)
    reference = Keypair().pubkey()
    assert h.store.create_bill(bill("inv-1", "acct-1", "37.50"))
    h.store.add_quote(_sol_quote("q-1", "inv-1", "acct-1", SOL // 4, str(reference)))
    watch = Watch(chain)
    watch.sink = h.settlement  # type: ignore[assignment]
    watch.references = h.settlement  # type: ignore[assignment]
    short = chain.send([_pay(chain, 248_000_000, reference)])
    top_up = chain.send([_pay(chain, 2_000_000, reference)])  # the next slot
    chain.standin.advance(LAG - 1)  # the first slot final, the top-up's not yet
    watch.run()
    assert _bill_and_payment(h, f"solana:{short}:0") == ("PROCESSING", "FINALIZED")
    assert _bill_and_payment(h, f"solana:{top_up}:0") == ("PROCESSING", "SEEN")

    def lagging() -> Lagging:  # a backend that does not know the top-up (a client per run: a run closes it)
        return Lagging(chain.standin.url, hidden=frozenset({top_up}), no_statuses=True, no_blocks=True)

    chain.standin.advance(751)  # the top-up's slot final for 750 slots
    report = _run(watch, lagging())

    assert (report.unproven, [entry.split(":")[1] for entry in report.stuck]) == (1, [top_up])
    assert _bill_and_payment(h, f"solana:{top_up}:0") == ("PROCESSING", "SEEN")  # named stuck, not stalled yet

    chain.standin.advance(1919 - 750)  # 1,919 slots: still held
    report = _run(watch, lagging())
    assert (report.unproven, [entry.split(":")[1] for entry in report.stuck]) == (1, [top_up])
    assert _bill_and_payment(h, f"solana:{top_up}:0") == ("PROCESSING", "SEEN")

    chain.standin.advance(1)  # the top-up's slot final for 1,920 slots
    report = _run(watch, lagging())

    assert (report.unproven, [entry.split(":")[1] for entry in report.stuck]) == (1, [top_up])
    assert _bill_and_payment(h, f"solana:{top_up}:0") == ("PAID", "SEEN")
    paid = h.store.bill("inv-1")
    assert paid is not None
    assert (paid.settled_usd, paid.written_off_usd, paid.credit_usd) == (
        Decimal("37.20"),
        Decimal("0.30"),
        Decimal("0.00"),
    )

    assert watch.run().finalized == 1  # every backend up to date: it was final all along
    assert _bill_and_payment(h, f"solana:{top_up}:0") == ("PAID", "FINALIZED")
    later = h.store.bill("inv-1")
    assert later is not None
    assert (later.written_off_usd, later.credit_usd) == (Decimal("0.00"), Decimal("0.00"))


def test_given_a_bills_only_payment_stuck_on_solana_then_its_whole_total_is_asked_again_and_the_customer_told_once(
    chain: SolanaTestChain, stack: Stack
) -> None:
    """D434, D435 on the Solana stand-in: the $37.50 bill's only payment, 250,000,000 lamports ($37.50 at the
    $150.00 lock) with its reference, then unknown to every backend past its final slot and no block proving it gone.
    1,919 slots after: named stuck, still holding the bill (PROCESSING), nothing told; 1,920: released - OPEN, the
    whole 37.50 asked again, and one ``CryptoBillReopened.v1`` (37.50 asked of 37.50, 37.50 stuck, its signature);
    the next run naming it stuck again tells nothing more. Before D434: OPEN, nothing told."""
    h = harness(stack)
    h.clock.now = datetime.now(UTC)
    reference = Keypair().pubkey()
    assert h.store.create_bill(bill("inv-1", "acct-1", "37.50"))
    h.store.add_quote(_sol_quote("q-1", "inv-1", "acct-1", SOL // 4, str(reference)))
    watch = Watch(chain)
    watch.sink = h.settlement  # type: ignore[assignment]
    watch.references = h.settlement  # type: ignore[assignment]
    only = chain.send([_pay(chain, SOL // 4, reference)])
    watch.run()
    assert _bill_and_payment(h, f"solana:{only}:0") == ("PROCESSING", "SEEN")

    def lagging() -> Lagging:  # a backend that does not know the payment (a client per run: a run closes it)
        return Lagging(chain.standin.url, hidden=frozenset({only}), no_statuses=True, no_blocks=True)

    stored = h.store.payment(f"solana:{only}:0")
    assert stored is not None
    slot = stored.transfer.block_number
    chain.standin.advance(slot + 1919 - chain.standin.finalized_slot)  # finalized 1,919 slots past its slot
    assert chain.standin.finalized_slot == slot + 1919
    report = _run(watch, lagging())  # named stuck, still held
    assert [entry.split(":")[1] for entry in report.stuck] == [only]
    assert _bill_and_payment(h, f"solana:{only}:0") == ("PROCESSING", "SEEN")
    assert h.events("CryptoBillReopened.v1") == []

    chain.standin.advance(1)  # 1,920 slots (STALL_SLOTS): released
    _run(watch, lagging())

    assert _bill_and_payment(h, f"solana:{only}:0") == ("OPEN", "SEEN")
    [told] = h.events("CryptoBillReopened.v1")
    assert (told["total"], told["amount_usd"], told["stuck_usd"], told["stuck_tx_ids"]) == (
        "37.50",
        "37.50",  # the whole total: its only payment is stuck
        "37.50",  # 250,000,000 lamports = 0.25 SOL x $150.00
        [only],
    )
    chain.standin.advance(1)
    _run(watch, lagging())  # named stuck again: nothing more told
    assert len(h.events("CryptoBillReopened.v1")) == 1


def test_given_a_listed_signature_no_backend_proves_gone_then_the_cursor_waits_and_it_is_named_stuck_after_750_slots(
    chain: SolanaTestChain, watch: Watch
) -> None:
    signature = chain.pay_sol(SOL // 10)
    landed = chain.standin.transaction(signature)
    assert landed is not None
    lagging = Lagging(chain.standin.url, hidden=frozenset({signature}), no_statuses=True, no_blocks=True)

    chain.standin.advance(LAG + 749)  # finalized = slot + 749
    report = _run(watch, lagging)
    assert (watch.cursors.cursors["solana"].block_number, report.stuck) == (landed.slot - 1, ())

    chain.standin.advance(1)  # finalized = slot + 750: unproven for 750 slots
    report = _run(watch, Lagging(chain.standin.url, hidden=frozenset({signature}), no_statuses=True, no_blocks=True))
    assert watch.cursors.cursors["solana"].block_number == landed.slot - 1
    assert [entry.split(":")[0] for entry in report.stuck] == [signature]
    assert watch.sink.transfers == {}
    watch.run()  # every backend up to date: read and recorded, 0.1 SOL = 100,000,000 lamports
    assert [(t.tx_id, t.atomic_amount) for t in watch.sink.transfers.values()] == [(signature, 100_000_000)]


class DeadForkListing(Lagging):
    """A listing backend still on a fork that died: its pages add ``stale`` signatures, served by nobody since (no
    transaction, no status anywhere; their slots skipped on the finalized chain)."""

    def __init__(self, url: str, stale: Sequence[SignatureInfo]) -> None:
        super().__init__(url)
        self.stale = stale

    async def signatures(
        self,
        address: str,
        *,
        before: str | None = None,
        until: str | None = None,
        limit: int = SIGNATURES_PAGE,
        min_slot: int | None = None,
    ) -> Sequence[SignatureInfo]:
        page = await super().signatures(address, before=before, until=until, limit=limit, min_slot=min_slot)
        return [*page, *self.stale] if before is None else page


def test_given_a_listed_signature_whose_fork_died_then_its_skipped_slot_is_proven_and_the_cursor_moves_past_it(
    chain: SolanaTestChain, watch: Watch
) -> None:
    """Review rs2: a listed signature in a slot later skipped was never proven gone: the cursor waited before it for
    ever and every later payment with it."""
    watch.run()
    signature = chain.pay_sol(SOL // 10)  # slot S
    landed = chain.standin.transaction(signature)
    assert landed is not None
    later = chain.pay_sol(SOL // 5)  # slot S + 1, a good payment after it
    chain.standin.forget(signature)  # its fork died: S skipped, S + 1's parent is S - 1
    chain.standin.advance(LAG)  # finalized = S + 1

    assert chain.standin.finalized_slot == landed.slot + 1
    report = _run(watch, DeadForkListing(chain.standin.url, [SignatureInfo(signature, landed.slot, False)]))
    assert report.to_block == watch.cursors.cursors["solana"].block_number == chain.standin.slot
    assert (report.caught_up, report.stuck) == (True, ())
    # the later payment read and recorded: 0.2 SOL = 200,000,000 lamports; nothing for the vanished one
    assert [(t.tx_id, t.atomic_amount) for t in watch.sink.transfers.values()] == [(later, 200_000_000)]


class LedgerHole(Lagging):
    """A backend whose ledger lacks the finalized block at a slot (restarted from a later snapshot: Agave says
    "skipped, or missing due to ledger jump") although the chain holds it; it has not got the payment either."""

    async def finalized_signatures(self, slot: int) -> Sequence[str] | None:
        return None


def test_given_a_backend_missing_the_block_at_a_payments_slot_then_the_next_blocks_parent_proves_nothing_and_it_waits(
    chain: SolanaTestChain, watch: Watch
) -> None:
    signature = chain.pay_sol(SOL // 10)  # slot S
    watch.run()
    (payment_id,) = watch.sink.transfers
    chain.standin.advance(LAG + 1)  # finalized = S + 1, whose parentSlot is S: the chain holds a block at S
    report = _run(watch, LedgerHole(chain.standin.url, hidden=frozenset({signature}), no_statuses=True))
    assert (report.orphaned, report.unproven, report.stuck) == (0, 1, ())
    assert watch.sink.status[payment_id] is PaymentStatus.SEEN  # not orphaned on a backend's hole
    report = watch.run()  # a backend that has it: finalized
    assert (report.finalized, watch.sink.status[payment_id]) == (1, PaymentStatus.FINALIZED)


def test_given_the_real_client_then_finalized_signatures_shows_a_finalized_block_and_none_before(
    chain: SolanaTestChain,
) -> None:
    kept, dropped = chain.pay_sol(SOL // 10), chain.pay_sol(SOL // 20)
    kept_slot, dropped_slot = chain.standin.transaction(kept).slot, chain.standin.transaction(dropped).slot  # type: ignore[union-attr]
    chain.standin.forget(dropped, replaced=True)

    async def shown(slot: int) -> Sequence[str] | None:
        async with SolanaRpcClient(chain.standin.url) as rpc:
            return await rpc.finalized_signatures(slot)

    assert asyncio.run(shown(kept_slot)) is None  # not finalized yet: Agave's -32004 "Block not available"
    chain.standin.finalize()
    assert asyncio.run(shown(kept_slot)) == [kept]
    assert asyncio.run(shown(dropped_slot)) == []  # the slot final, its block without the dropped transaction


def _bill_and_payment(h: Harness, payment_id: str) -> tuple[str, str]:
    b, p = h.store.bill("inv-1"), h.store.payment(payment_id)
    assert b is not None
    assert p is not None
    return b.status.value, p.status.value


def test_given_a_reference_on_another_instruction_when_claimed_for_another_bill_then_refused(
    chain: SolanaTestChain, stack: Stack
) -> None:
    """The wallet put bill A's quote reference on a second instruction (D91 counts any active reference among the
    transaction's keys): the fast path sees it too, so acct-B's claim of A's payment by its amount is refused (D112)."""
    h = harness(stack)
    h.clock.now = datetime.now(UTC)
    reference = Keypair().pubkey()
    for invoice, account in (("inv-A", "acct-A"), ("inv-B", "acct-B")):
        assert h.store.create_bill(bill(invoice, account, "37.50"))
    h.store.add_quote(_sol_quote("qa", "inv-A", "acct-A", SOL // 4, str(reference)))
    h.store.add_quote(_sol_quote("qb", "inv-B", "acct-B", SOL // 4, None))
    sent = chain.send([_pay(chain, SOL // 4), _pay(chain, 0, reference)])
    inspector = SolanaTransactionInspector(chain.config(), references=h.settlement)

    (credit,) = inspector.transfers(sent)

    assert credit.references == (str(reference),)
    with pytest.raises(ClaimRefusedError, match="reference of another bill's quote"):
        h.settlement.check_claim(credit, "inv-B")
    h.settlement.check_claim(credit, "inv-A")


def _settling_watch(chain: SolanaTestChain, h: Harness) -> Watch:
    """A watcher of ``chain`` recording into, and taking its references from, the harness's ``Settlement``."""
    watch = Watch(chain)
    watch.sink = h.settlement  # type: ignore[assignment]
    watch.references = h.settlement  # type: ignore[assignment]
    return watch


def _two_bills_stored_net(h: Harness, chain: SolanaTestChain) -> str:
    """``_two_bills`` paid in one transaction (1,500,000,000 lamports with inv-1's reference, 250,000,000 with
    inv-2's), stored before the split as one net credit of 1,750,000,000 at :0 with both references (``record_batch``,
    on inv-1: 1.75 x 150 = $262.50). Returns the signature."""
    h.clock.now = datetime.now(UTC)
    first, second = _two_bills(h)
    signature = chain.send([_pay(chain, 1_500_000_000, first), _pay(chain, 250_000_000, second)])
    at_0, _ = SolanaTransactionInspector(chain.config(), references=h.settlement).transfers(signature)
    h.settlement.record_batch([replace(at_0, atomic_amount=1_750_000_000, references=(str(first), str(second)))])
    return signature


def _two_bills(h: Harness) -> tuple[Pubkey, Pubkey]:
    """acct-1's two bills, each with a SOL quote and its Solana Pay reference, locked at $150.00: inv-1 $225.00 asks
    1.5 SOL (1.5 x 150 = 225), inv-2 $37.50 asks 0.25 SOL (0.25 x 150 = 37.50)."""
    first, second = Keypair().pubkey(), Keypair().pubkey()
    assert h.store.create_bill(bill("inv-1", "acct-1", "225.00"))
    assert h.store.create_bill(bill("inv-2", "acct-1", "37.50"))
    h.store.add_quote(_sol_quote("q-1", "inv-1", "acct-1", 1_500_000_000, str(first), amount_usd="225.00"))
    h.store.add_quote(_sol_quote("q-2", "inv-2", "acct-1", 250_000_000, str(second)))
    return first, second


def test_given_one_transaction_paying_two_bills_by_their_references_then_each_bill_is_paid_once_by_its_own_amount(
    chain: SolanaTestChain, stack: Stack
) -> None:
    """One signed transaction, two System transfers to the merchant: 1,500,000,000 lamports with inv-1's reference,
    250,000,000 with inv-2's (a wallet paying two invoices at once). Before: one credit of the merchant's net delta,
    1,750,000,000 lamports, at instruction 0 with both references - inv-1 paid 1.75 x 150 = $262.50 (overpaid by
    $37.50), inv-2 never paid. Now: a credit per instruction, each matched by its own reference."""
    h = harness(stack)
    h.clock.now = datetime.now(UTC)
    first, second = _two_bills(h)
    signature = chain.send([_pay(chain, 1_500_000_000, first), _pay(chain, 250_000_000, second)])
    watch = _settling_watch(chain, h)

    report = watch.run()

    at_0, at_1 = h.store.payment(f"solana:{signature}:0"), h.store.payment(f"solana:{signature}:1")
    assert at_0 is not None
    assert at_1 is not None
    assert (at_0.transfer.atomic_amount, at_0.transfer.references, at_0.invoice_id, at_0.matched_by, at_0.usd) == (
        1_500_000_000,
        (str(first),),
        "inv-1",
        "reference",
        Decimal("225.00"),
    )
    assert (at_1.transfer.atomic_amount, at_1.transfer.references, at_1.invoice_id, at_1.matched_by, at_1.usd) == (
        250_000_000,
        (str(second),),
        "inv-2",
        "reference",
        Decimal("37.50"),
    )
    assert report.transfers_seen == 2
    assert h.store.unattributed() == []

    chain.standin.advance(LAG)
    assert watch.run().finalized == 2
    paid = {invoice_id: h.store.bill(invoice_id) for invoice_id in ("inv-1", "inv-2")}
    assert {k: (b.status.value, b.settled_usd, b.credit_usd) for k, b in paid.items() if b is not None} == {
        "inv-1": ("PAID", Decimal("225.00"), Decimal("0.00")),
        "inv-2": ("PAID", Decimal("37.50"), Decimal("0.00")),
    }


def test_given_one_transaction_paying_two_bills_then_each_credit_passes_the_claim_check_for_its_own_bill_only(
    chain: SolanaTestChain, stack: Stack
) -> None:
    """The same transaction read by the fast path's inspector (with the active references): two credits, each
    carrying only its own reference - the other credit's reference (a watched key elsewhere in the transaction) is
    that credit's, so it does not tie this one to the other bill (D91's "any watched key counts"). Credit by credit,
    ``check_claim`` passes each for its own bill and refuses it (409) for the other; recorded so, each bill counts
    its own amount once. Through the API (``submit_transaction`` checks every credit against the one bill
    submitted, D112) neither bill can be claimed: one credit is refused whichever bill - as for an EVM transaction
    with two bills' logs; the watcher attributes both (D91, amended (sp2)). Re-submitted after the watcher paid
    both, the other bill's credit is AlreadyClaimedError (409)."""
    h = harness(stack)
    h.clock.now = datetime.now(UTC)
    first, second = _two_bills(h)
    signature = chain.send([_pay(chain, 1_500_000_000, first), _pay(chain, 250_000_000, second)])

    one, two = SolanaTransactionInspector(chain.config(), references=h.settlement).transfers(signature)

    assert [(c.index, c.atomic_amount, c.references) for c in (one, two)] == [
        (0, 1_500_000_000, (str(first),)),
        (1, 250_000_000, (str(second),)),
    ]
    with pytest.raises(ClaimRefusedError, match="reference of another bill's quote"):
        h.settlement.check_claim(two, "inv-1")
    with pytest.raises(ClaimRefusedError, match="reference of another bill's quote"):
        h.settlement.check_claim(one, "inv-2")
    for credit, invoice_id in ((one, "inv-1"), (two, "inv-2")):
        h.settlement.check_claim(credit, invoice_id)
        h.settlement.record(credit, claimed_for=invoice_id)
    counted = {invoice_id: h.store.bill(invoice_id) for invoice_id in ("inv-1", "inv-2")}
    assert {k: [(line.payment_id, line.usd) for line in b.payments] for k, b in counted.items() if b is not None} == {
        "inv-1": [(f"solana:{signature}:0", Decimal("225.00"))],
        "inv-2": [(f"solana:{signature}:1", Decimal("37.50"))],
    }
    with pytest.raises(AlreadyClaimedError):  # submitted again for inv-1: :1 pays inv-2 already
        h.settlement.check_claim(two, "inv-1")


def _one_bill_paid_in_two(h: Harness, chain: SolanaTestChain) -> tuple[Pubkey, str]:
    """inv-1 ($225.00) asks 1.5 SOL at $150 (1,500,000,000 lamports) by a Solana Pay reference; one transaction pays
    it 1.0 SOL with the reference + 0.5 SOL with none (1,000,000,000 + 500,000,000). Returns the reference and the
    signature."""
    h.clock.now = datetime.now(UTC)
    reference = Keypair().pubkey()
    assert h.store.create_bill(bill("inv-1", "acct-1", "225.00"))
    h.store.add_quote(_sol_quote("q-1", "inv-1", "acct-1", 1_500_000_000, str(reference), amount_usd="225.00"))
    signature = chain.send([_pay(chain, 1_000_000_000, reference), _pay(chain, 500_000_000)])
    return reference, signature


def test_given_one_bill_paid_in_two_sol_transfers_with_its_reference_on_the_first_only_then_it_counts_both(
    chain: SolanaTestChain, stack: Stack
) -> None:
    """Review (sp2) finding 1. inv-1 $225.00 asks 1.5 SOL (locked at $150.00); one transaction sends 1.0 SOL with
    inv-1's reference and 0.5 SOL with none. Before this fix (after the split): inv-1 OPEN with 1.0 x 150 = $150.00
    at :0, the 500,000,000 lamports at :1 unattributed, the fast path refusing :1 - the customer reminded, may pay
    twice. Now the reference-less transfer carries the watched reference: :0 1.0 x 150 = $150.00 and :1
    0.5 x 150 = $75.00, $225.00 in all, PAID at finality; the fast path's check passes both for inv-1."""
    h = harness(stack)
    reference, signature = _one_bill_paid_in_two(h, chain)

    one, two = SolanaTransactionInspector(chain.config(), references=h.settlement).transfers(signature)
    assert [(c.index, c.atomic_amount, c.references) for c in (one, two)] == [
        (0, 1_000_000_000, (str(reference),)),
        (1, 500_000_000, (str(reference),)),
    ]
    h.settlement.check_claim(one, "inv-1")
    h.settlement.check_claim(two, "inv-1")
    watch = _settling_watch(chain, h)
    watch.run()

    counted = h.store.bill("inv-1")
    assert counted is not None
    assert [(line.payment_id, line.usd) for line in counted.payments] == [
        (f"solana:{signature}:0", Decimal("150.00")),
        (f"solana:{signature}:1", Decimal("75.00")),
    ]
    assert h.store.unattributed() == []
    chain.standin.advance(LAG)
    watch.run()
    paid = h.store.bill("inv-1")
    assert paid is not None
    assert (paid.status.value, paid.settled_usd) == ("PAID", Decimal("225.00"))  # 150.00 + 75.00


def test_given_a_transaction_stored_as_one_net_credit_before_the_split_when_reported_again_then_nothing_counts_twice(
    chain: SolanaTestChain, stack: Stack
) -> None:
    """Review (sp2) finding 2 (transition). Stored before the split (a run that wrote record_batch but not its cursor,
    retried after the deploy; or an old fast-path claim the new watcher lists later): one net credit of
    1,750,000,000 lamports at :0 with both references, on inv-1: 1.75 x 150 = $262.50. The new watcher reports :0
    (1,500,000,000) and :1 (250,000,000) in the same block. Before this fix: :0 unchanged ($262.50) and :1 new,
    matched to inv-2 ($37.50): $300.00 counted for $262.50 received. Now the stored credit wins and the new sibling
    is kept UNATTRIBUTED, the operator alerted (0.25 SOL): $262.50 counted, inv-2 OPEN."""
    h = harness(stack)
    signature = _two_bills_stored_net(h, chain)
    watch = _settling_watch(chain, h)

    watch.run()

    counted = {invoice_id: h.store.bill(invoice_id) for invoice_id in ("inv-1", "inv-2")}
    assert {k: [(line.payment_id, line.usd) for line in b.payments] for k, b in counted.items() if b is not None} == {
        "inv-1": [(f"solana:{signature}:0", Decimal("262.50"))],  # 1.75 x 150, as stored
        "inv-2": [],
    }
    stored = h.store.payment(f"solana:{signature}:0")
    assert stored is not None
    assert stored.transfer.atomic_amount == 1_750_000_000
    assert [(p.payment_id, p.transfer.atomic_amount) for p in h.store.unattributed()] == [
        (f"solana:{signature}:1", 250_000_000)
    ]
    assert [(e["tx_id"], e["asset"], e["amount"]) for e in h.events("UnattributedCryptoPayment.v1")] == [
        (signature, "SOL", "0.25")  # 250,000,000 / 10^9
    ]


def _submit(h: Harness, chain: SolanaTestChain, signature: str, settlement: Settlement | None = None) -> None:
    """The API's ``submit_transaction`` of ``signature`` for acct-1's inv-1 (through ``settlement``, the harness's by
    default: another container's is another ``Settlement`` on the same store)."""
    settled = settlement or h.settlement
    ports = logic.ApiPorts(
        h.store,
        settled,
        h.rates,
        {**CHAINS, "solana": chain.config()},
        lambda _: SolanaTransactionInspector(chain.config(), references=settled),
        QuotePolicy(),
        SignInPolicy("x", "y"),
    )
    logic.submit_transaction(ports, "acct-1", "inv-1", "solana", signature)


def _one_bill_stored_net(h: Harness, chain: SolanaTestChain) -> str:
    """inv-1 ($225.00) asks 1.5 SOL at $150 (1,500,000,000 lamports); paid by 1.0 SOL + 0.5 SOL in one
    transaction, the reference on the first; stored before the split as one net credit of 1,500,000,000 at :0 on
    inv-1 (its fast-path claim then: 1.5 x 150 = $225.00). Returns the signature."""
    _, signature = _one_bill_paid_in_two(h, chain)
    one, _ = SolanaTransactionInspector(chain.config(), references=h.settlement).transfers(signature)
    h.settlement.record(replace(one, atomic_amount=1_500_000_000), claimed_for="inv-1")
    return signature


def test_given_one_bill_stored_as_one_net_credit_before_the_split_when_submitted_twice_then_it_counts_once(
    chain: SolanaTestChain, stack: Stack
) -> None:
    """Review (sp2) finding 2 and review (rsp2) F1, the fast path: inv-1 stored as one net credit of 1.5 SOL at :0
    ($225.00, ``_one_bill_stored_net``). The customer submits the signature: :0 (1,000,000,000) and :1 (500,000,000,
    carrying the reference) pass the check; :0 keeps its stored amount and :1 is stored counted in :0, UNATTRIBUTED.
    The client submits it again: before this fix (a note in memory checked for new credits only) the stored :1 was
    claimed - 225.00 + 75.00 = $300.00 for 1.5 SOL; now 409, naming :0, and $225.00 (1.5 x 150) counted."""
    h = harness(stack)
    signature = _one_bill_stored_net(h, chain)

    _submit(h, chain, signature)
    with pytest.raises(AlreadyClaimedError, match=f"already counted in solana:{signature}:0"):
        _submit(h, chain, signature)

    counted = h.store.bill("inv-1")
    assert counted is not None
    assert [(line.payment_id, line.usd) for line in counted.payments] == [(f"solana:{signature}:0", Decimal("225.00"))]
    assert [(p.payment_id, p.transfer.atomic_amount, p.counted_in) for p in h.store.unattributed()] == [
        (f"solana:{signature}:1", 500_000_000, f"solana:{signature}:0")
    ]


def test_given_the_watcher_kept_a_split_sibling_of_a_stored_net_credit_when_another_container_claims_it_then_409(
    chain: SolanaTestChain, stack: Stack
) -> None:
    """Review (rsp2) F1 and F3: inv-1 stored as one net credit of 1.5 SOL at :0 ($225.00). The watcher reads the
    transaction again and keeps :1 (0.5 SOL) unattributed; then the customer submits the signature once, served by
    another container (its own ``Settlement``, nothing in memory). Before: :1 claimed, $300.00 counted. Now the
    mark is stored with :1: 409 naming :0, $225.00 (1.5 x 150) counted."""
    h = harness(stack)
    signature = _one_bill_stored_net(h, chain)
    watch = _settling_watch(chain, h)
    watch.run()
    assert [(p.payment_id, p.counted_in) for p in h.store.unattributed()] == [
        (f"solana:{signature}:1", f"solana:{signature}:0")
    ]

    another = Settlement(h.store, h.published, CHAINS, h.rates, clock=h.clock)
    with pytest.raises(AlreadyClaimedError, match=f"already counted in solana:{signature}:0"):
        _submit(h, chain, signature, another)

    counted = h.store.bill("inv-1")
    assert counted is not None
    assert [(line.payment_id, line.usd) for line in counted.payments] == [(f"solana:{signature}:0", Decimal("225.00"))]


def test_given_a_split_sibling_counted_in_a_stored_net_credit_when_the_operator_assigns_it_then_refused_naming_it(
    chain: SolanaTestChain, stack: Stack
) -> None:
    """Review (rsp2) F2: two bills; stored before the split as one net credit of 1.75 SOL at :0 on inv-1
    (1.75 x 150 = $262.50). The watcher keeps :1 (0.25 SOL, carrying inv-2's reference) unattributed. The alert
    and the operator's list say it is counted in :0; ``crypto assign(:1, acct-1, inv-2)`` is refused, saying to move
    the amount from :0's bill. Before: accepted, 262.50 + 37.50 = $300.00 for $262.50 received."""
    h = harness(stack)
    signature = _two_bills_stored_net(h, chain)
    watch = _settling_watch(chain, h)
    watch.run()
    net = f"solana:{signature}:0"
    assert [(e["tx_id"], e["amount"], e["counted_in"]) for e in h.events("UnattributedCryptoPayment.v1")] == [
        (signature, "0.25", net)  # 250,000,000 / 10^9
    ]

    with pytest.raises(NotAssignableError) as refused:
        h.settlement.assign(f"solana:{signature}:1", "acct-1", "inv-2")

    # D91 amended (sp6): the refusal says what the CLI allows - nothing moves a payment to another bill
    assert str(refused.value) == (
        f"payment solana:{signature}:1 is already counted in {net} (its transaction was stored as one net credit there"
        f" before the split): not assigned (it stays unattributed) - this amount counts for bill inv-1 already, with"
        f" payment {net}; no command moves a payment to another bill: solana:{signature}:1 needs nothing"
    )

    bills = {invoice_id: h.store.bill(invoice_id) for invoice_id in ("inv-1", "inv-2")}
    assert {k: [(line.payment_id, line.usd) for line in b.payments] for k, b in bills.items() if b is not None} == {
        "inv-1": [(net, Decimal("262.50"))],  # 1.75 x 150
        "inv-2": [],
    }


def test_given_a_split_sibling_counted_in_an_unattributed_net_credit_when_refunded_then_told_to_act_on_that_payment(
    stack: Stack,
) -> None:
    """Review (rsp4) / D91 amended (sp5): stored before the split as one net credit of 1.5 SOL at :0 with no
    reference (kept UNATTRIBUTED: no bill); after the split :0 is 1.0 SOL and :1 0.5 SOL, kept counted_in :0.
    ``crypto refunded(:1)`` is refused - but :0 pays no bill, so the refusal says to assign or refund :0 (before: "act
    on the bill of :0", a bill that does not exist)."""
    h = harness(stack)
    _sibling_of_an_unattributed_net(h)
    sibling = h.store.payment("solana:sig-n:1")
    assert sibling is not None
    assert sibling.counted_in == "solana:sig-n:0"

    refusal = _sibling_refused(h, NotRefundableError, "refunded", "solana:sig-n:1", "sig-back")

    assert refusal == _COUNTED_IN_THE_NET + (
        "not refunded - to send this money back, assign or refund payment solana:sig-n:0 (it pays no bill)"
    )


def test_given_a_split_sibling_counted_in_an_unattributed_net_credit_when_the_customer_submits_then_the_net_is_claimed(
    chain: SolanaTestChain, stack: Stack
) -> None:
    """Review (fa1) / D91 amended (sp6): inv-1 asks 1.5 SOL ($225.00); paid 1.0 SOL + 0.5 SOL in one transaction.
    Stored before the split as one net credit of 1.5 SOL at :0 with no reference (UNATTRIBUTED); the watcher then
    keeps :1 counted_in :0. The customer submits the signature for inv-1: :1 is left as it is (its amount is :0's)
    and :0 is claimed, 1.5 x 150 = $225.00. Before: every credit checked first, 409 on :1, nothing claimed."""
    h = harness(stack)
    _, signature = _one_bill_paid_in_two(h, chain)
    one, _ = SolanaTransactionInspector(chain.config(), references=h.settlement).transfers(signature)
    h.settlement.record_batch([replace(one, atomic_amount=1_500_000_000, references=())])
    _settling_watch(chain, h).run()
    net = f"solana:{signature}:0"
    assert [(p.payment_id, p.counted_in) for p in h.store.unattributed()] == [
        (net, None),
        (f"solana:{signature}:1", net),
    ]

    _submit(h, chain, signature)

    counted = h.store.bill("inv-1")
    assert counted is not None
    assert [(line.payment_id, line.usd) for line in counted.payments] == [(net, Decimal("225.00"))]  # 1.5 x 150
    assert [(p.payment_id, p.transfer.atomic_amount, p.counted_in) for p in h.store.unattributed()] == [
        (f"solana:{signature}:1", 500_000_000, net)
    ]


_COUNTED_IN_THE_NET = (
    "payment solana:sig-n:1 is already counted in solana:sig-n:0 (its transaction was stored as one net credit"
    " there before the split): "
)


def _sibling_refused(h: Harness, error: type[Exception], command: str, *args: str) -> str:
    """The message of ``error`` raised by the operator's ``command`` (``refunded``, ``assign``) with ``args``."""
    with pytest.raises(error) as refused:
        getattr(h.settlement, command)(*args)
    return str(refused.value)


def _sibling_of_an_unattributed_net(h: Harness) -> None:
    """Stored before the split as one net credit of 1.5 SOL at solana:sig-n:0 with no reference (UNATTRIBUTED);
    after the split :0 is 1.0 SOL and :1 0.5 SOL, :1 kept counted_in :0."""
    at = datetime(2026, 11, 2, 9, 4, tzinfo=UTC)
    h.clock.now = at + timedelta(minutes=1)
    h.settlement.record_batch([_core_transfer("sig-n", "SOL", 1_500_000_000, at, chain="solana")])
    h.settlement.record_batch(
        [
            _core_transfer("sig-n", "SOL", 1_000_000_000, at, chain="solana"),
            _core_transfer("sig-n", "SOL", 500_000_000, at, chain="solana", index=1),
        ]
    )


def test_given_a_split_sibling_whose_unattributed_net_credit_was_refunded_when_refunded_then_told_it_needs_nothing(
    stack: Stack,
) -> None:
    """Review (fa1) / D91 amended (sp6): :0 (the net 1.5 SOL) is recorded refunded by sig-back; ``crypto
    refunded(:1)`` is refused saying :0 was refunded already and :1 needs nothing (before: "assign or refund payment
    :0 (it pays no bill)", though :0 is refunded)."""
    h = harness(stack)
    _sibling_of_an_unattributed_net(h)
    h.settlement.refunded("solana:sig-n:0", "sig-back")

    refusal = _sibling_refused(h, NotRefundableError, "refunded", "solana:sig-n:1", "sig-back-2")

    assert refusal == _COUNTED_IN_THE_NET + (
        "not refunded - payment solana:sig-n:0 was refunded by sig-back already, this"
        " amount with it: solana:sig-n:1 needs nothing"
    )


def test_given_a_split_sibling_counted_in_an_unattributed_net_credit_when_assigned_then_told_the_commands_for_the_net(
    stack: Stack,
) -> None:
    """Review (fa1) / D91 amended (sp6): ``crypto assign(:1, acct-1, inv-1)`` is refused naming the CLI commands the
    operator has: assign :0 (the whole 1.5 SOL) or record its refund (before: "move that amount from the bill of
    :0", a bill that does not exist and no command)."""
    h = harness(stack)
    _sibling_of_an_unattributed_net(h)

    refusal = _sibling_refused(h, NotAssignableError, "assign", "solana:sig-n:1", "acct-1", "inv-1")

    assert refusal == _COUNTED_IN_THE_NET + (
        "not assigned (it stays unattributed) - payment solana:sig-n:0 pays no bill:"
        " `crypto assign solana:sig-n:0 <account> <invoice>` counts this amount with it, or `crypto refunded"
        " solana:sig-n:0 --tx <refund tx>` records it sent back; solana:sig-n:1 needs nothing"
    )


def test_given_usdc_paid_into_a_side_account_in_two_transfers_with_the_reference_on_the_first_then_no_reminder(
    chain: SolanaTestChain, stack: Stack
) -> None:
    """D341 with the split (review (sp2)): inv-1's 7 USDC quote (reference R); the customer sends 4 USDC with R and
    3 USDC without, both into a side token account of the merchant's wallet: two stray credits, 4,000,000 and
    3,000,000 units, both kept UNATTRIBUTED. Their sum, 4 + 3 = 7 USDC, covers the quote: its "expiring, pay ..."
    reminder is not sent (before: each credit alone, 4 and 3 < 7, left the reminder - the customer would pay
    twice)."""
    h = harness(stack)
    h.clock.now = datetime.now(UTC)
    reference = Keypair().pubkey()
    assert h.store.create_bill(bill("inv-1", "acct-1", "7.00"))
    h.store.add_quote(_usdc_quote("q-1", "inv-1", "acct-1", 7 * USDC, str(reference)))
    side = chain.create_token_account(chain.merchant.pubkey(), chain.usdc)
    watch = _settling_watch(chain, h)
    signature = chain.send([_usdc_to(chain, side, 4 * USDC, reference), _usdc_to(chain, side, 3 * USDC)])

    watch.run()

    assert sorted((p.payment_id, p.transfer.atomic_amount) for p in h.store.unattributed()) == [
        (f"solana:{signature}:0", 4_000_000),
        (f"solana:{signature}:1", 3_000_000),
    ]
    h.clock.now += timedelta(minutes=20)  # 10 minutes before the quote's expiry, inside a 15-minute window
    assert h.settlement.announce_expiring("solana", timedelta(minutes=15)) == 0
    assert h.events("CryptoQuoteExpiring.v1") == []


def test_given_one_transaction_with_two_usdc_transfers_each_with_its_reference_then_two_credits(
    chain: SolanaTestChain, watch: Watch
) -> None:
    """Two ``transfer_checked`` into the merchant's associated token account, 100 USDC with one reference and 40 USDC
    with another. Before: one credit of the token account's delta, 140,000,000, at instruction 0 with both."""
    first, second = Keypair().pubkey(), Keypair().pubkey()
    watch.references.keys.extend([str(first), str(second)])

    def transfer_checked(amount: int, reference: Pubkey) -> Instruction:
        ix = token.transfer_checked(
            TransferCheckedParams(
                program_id=TOKEN_PROGRAM_ID,
                source=token.get_associated_token_address(chain.payer.pubkey(), chain.usdc),
                mint=chain.usdc,
                dest=token.get_associated_token_address(chain.merchant.pubkey(), chain.usdc),
                owner=chain.payer.pubkey(),
                amount=amount,
                decimals=6,
            )
        )
        return Instruction(ix.program_id, ix.data, [*ix.accounts, AccountMeta(reference, False, False)])

    signature = chain.send([transfer_checked(100 * USDC, first), transfer_checked(40 * USDC, second)])

    report = watch.run()

    found = sorted(watch.sink.transfers.values(), key=lambda credit: credit.index)
    assert [(c.tx_id, c.asset, c.index, c.atomic_amount, c.references) for c in found] == [
        (signature, "USDC", 0, 100_000_000, (str(first),)),
        (signature, "USDC", 1, 40_000_000, (str(second),)),
    ]
    assert report.transfers_seen == 2


def test_given_a_failed_transaction_recorded_by_settlement_then_pending_until_its_failure_is_finalized(
    chain: SolanaTestChain, stack: Stack
) -> None:
    """A failed SOL transfer (more than the payer holds) is FAILED in settlement, but not final while its slot is
    not finalized (a signature can land again on another fork): it stays pending, and is final - off the pending
    list, counted in the run's finalized - once the finalized slot reaches it."""
    h = harness(stack)
    h.clock.now = datetime.now(UTC)
    watch = Watch(chain)
    watch.sink = h.settlement  # type: ignore[assignment]
    signature = chain.pay_sol(1_000 * SOL, skip_preflight=True)
    payment_id = f"solana:{signature}:0"

    watch.run()
    chain.standin.advance(LAG - 1)
    report = watch.run()

    failed = h.store.payment(payment_id)
    assert failed is not None
    assert (failed.status, failed.final, report.finalized) == (PaymentStatus.FAILED, False, 0)
    assert [(p.payment_id, p.failed) for p in h.settlement.pending("solana")] == [(payment_id, True)]

    chain.standin.advance(1)
    report = watch.run()

    final = h.store.payment(payment_id)
    assert final is not None
    assert (final.status, final.final, report.finalized) == (PaymentStatus.FAILED, True, 1)
    assert h.settlement.pending("solana") == []


def test_given_a_payment_recorded_failed_on_a_dead_fork_when_its_signature_succeeded_then_it_is_read_again_and_pays(
    chain: SolanaTestChain, stack: Stack
) -> None:
    """Settlement holds the signature FAILED in a slot of a fork that did not survive ("dead-fork-hash"); on the
    chain that stands (the stand-in) the same signature succeeded, paying the $37.50 bill's 0.25 SOL quote by its
    reference. The watcher's cursor is past the payment's slot (the scan does not list it again): the finality check
    sees its status without an error, reads the transaction again and reports it - SEEN, matched by the reference,
    the bill PROCESSING."""
    h = harness(stack)
    h.clock.now = datetime.now(UTC)
    reference = Keypair().pubkey()
    assert h.store.create_bill(bill("inv-1", "acct-1", "37.50"))
    h.store.add_quote(_sol_quote("q-1", "inv-1", "acct-1", SOL // 4, str(reference)))
    signature = chain.send([_pay(chain, SOL // 4, reference)])
    landed = chain.standin.transaction(signature)
    assert landed is not None
    (credit,) = SolanaTransactionInspector(chain.config(), references=h.settlement).transfers(signature)
    h.settlement.record_seen(replace(credit, succeeded=False, block_hash="dead-fork-hash"))
    assert [p.failed for p in h.settlement.pending("solana")] == [True]
    watch = Watch(chain)
    watch.sink = h.settlement  # type: ignore[assignment]
    watch.references = h.settlement  # type: ignore[assignment]
    watch.start_block = landed.slot  # the scan covers later slots only

    watch.run()

    payment = h.store.payment(f"solana:{signature}:0")
    assert payment is not None
    assert (payment.status, payment.invoice_id, payment.matched_by, payment.usd) == (
        PaymentStatus.SEEN,
        "inv-1",
        "reference",
        Decimal("37.50"),
    )
    assert payment.transfer.block_hash == chain.standin.blockhash(landed.slot)
    processing = h.store.bill("inv-1")
    assert processing is not None
    assert processing.status.value == "PROCESSING"


def test_given_a_failed_split_whose_signature_succeeded_final_without_a_credit_at_its_index_then_it_is_closed(
    chain: SolanaTestChain, watch: Watch
) -> None:
    """Review (sp2) finding 5. A FAILED transaction splits into a credit per transfer whatever the amounts: recorded
    FAILED at :0 (0.25 SOL) and :1 (0.1 SOL) in a fork that did not survive. Where it stands it succeeded with a
    credit at :0 only (here one transfer; a CPI or the merchant's own debit gives the same: one net credit at the
    first transfer). Before: :1 stayed FAILED and pending, its transaction read again every run forever. Now, once the
    succeeded status is finalized, the re-read of a FAILED id with no credit at its index closes it (final, FAILED:
    it counts nothing); before that it is read again (the landing could still be undone)."""
    signature = chain.send([_pay(chain, SOL // 4)])
    landed = chain.standin.transaction(signature)
    assert landed is not None
    (credit,) = SolanaTransactionInspector(chain.config()).transfers(signature)
    dead = replace(credit, succeeded=False, block_hash="dead-fork-hash")
    watch.sink.record_batch([dead, replace(dead, index=1, atomic_amount=SOL // 10)])
    watch.start_block = landed.slot  # the scan covers later slots only

    watch.run()  # not final yet: :0 read again (SEEN), :1 still FAILED and pending

    assert sorted((p.payment_id[-2:], p.failed) for p in watch.sink.pending("solana")) == [(":0", False), (":1", True)]
    chain.standin.advance(LAG)
    watch.run()

    assert watch.sink.pending("solana") == []
    assert (watch.sink.status[f"solana:{signature}:0"], watch.sink.status[f"solana:{signature}:1"]) == (
        PaymentStatus.FINALIZED,
        PaymentStatus.FAILED,
    )
    assert f"solana:{signature}:1" in watch.sink.final
    calls = len(watch.sink.calls)
    watch.run()
    assert len(watch.sink.calls) == calls  # nothing pending: nothing read again


def test_given_250_recent_references_then_a_run_queries_100_and_three_minutes_of_runs_query_them_all(
    watch: Watch,
) -> None:
    """D290. 250 references (no payments): a run makes 100 calls more than the same run watching none
    (before: 250 more, one per reference); the rotation's windows at minutes 0, 1, 2 start at 0, 100 and 200
    (mod 250) and cover all 250."""
    baseline = watch.run().rpc_calls
    watch.cursors.cursors.clear()  # the same run again: from no cursor
    watch.references.keys = [str(Keypair().pubkey()) for _ in range(250)]

    report = watch.run()

    assert report.rpc_calls == baseline + 100
    ordered = sorted(watch.references.keys)
    minute = datetime(2026, 11, 2, 9, 0, tzinfo=UTC)
    seen = [set(rotation(ordered, 100, minute + timedelta(minutes=n))) for n in range(3)]
    assert [len(window) for window in seen] == [100, 100, 100]
    assert set().union(*seen) == set(ordered)


class RefusingRecord(MemoryPaymentSink):
    """A sink whose store refuses to record the payment ids in ``refused`` (a bill it cannot store, say)."""

    def __init__(self, refused: set[str]) -> None:
        super().__init__()
        self.refused = refused

    def record_seen(self, transfer: ObservedTransfer) -> None:
        if transfer.payment_id in self.refused:
            raise RuntimeError(f"the store refused {transfer.payment_id}")
        super().record_seen(transfer)


def test_given_a_failed_payment_read_again_whose_record_fails_then_the_others_finalize_and_it_waits(
    chain: SolanaTestChain, watch: Watch
) -> None:
    """D323 (review F2). A (0.25 SOL) is held FAILED on a fork that did not survive, its signature succeeded on
    the chain that stands; B (0.5 SOL) is SEEN and final. The store refuses A's record. Before: ``_reread``'s
    ``record_batch`` raised, the run failed and B stayed SEEN, every run. Now B is FINALIZED, A is named stuck and
    stays FAILED and pending; the store taking it again, the next run reads it again: SEEN."""
    signature_a = chain.pay_sol(SOL // 4)
    landed = chain.standin.transaction(signature_a)
    assert landed is not None
    (credit,) = SolanaTransactionInspector(chain.config()).transfers(signature_a)
    a = credit.payment_id
    sink = RefusingRecord(set())
    sink.record_seen(replace(credit, succeeded=False, block_hash="dead-fork-hash"))
    sink.refused.add(a)
    watch.sink = sink
    watch.start_block = landed.slot  # the scan covers later slots only
    chain.pay_sol(SOL // 2)  # B
    chain.standin.advance(LAG + 1)

    report = watch.run()

    (b,) = [pid for pid, t in sink.transfers.items() if t.atomic_amount == SOL // 2]
    assert report.stuck == (f"{a}: RuntimeError: the store refused {a}",)
    assert sink.status[b] is PaymentStatus.FINALIZED
    assert sink.status[a] is PaymentStatus.FAILED
    assert [(p.payment_id, p.failed) for p in sink.pending("solana")] == [(a, True)]
    sink.refused.clear()

    after = watch.run()

    assert after.stuck == ()
    assert sink.status[a] is PaymentStatus.SEEN
    assert sink.transfers[a].block_hash == chain.standin.blockhash(landed.slot)


def test_given_a_failed_payment_read_again_whose_other_credit_fails_then_it_stays_failed_and_both_are_recorded_later(
    chain: SolanaTestChain, watch: Watch
) -> None:
    """D332 (review rev7 F2). A transaction pays the merchant 0.25 SOL (a top-level transfer) and 4 USDC minted
    into its ATA (no transfer instruction of its own: index -1, as a CPI's credit), held FAILED with only its SOL
    credit (its failing fork); it succeeded on the chain that stands. The store refuses the USDC credit. Before:
    ``_reread`` recorded SOL then USDC as one batch, SOL became SEEN before USDC failed, so it was never read again
    and the 4 USDC were never stored. Now SOL is recorded last: it stays FAILED and pending, named stuck; the store
    taking USDC again, the next run records both."""
    ata = token.get_associated_token_address(chain.merchant.pubkey(), chain.usdc)
    signature = chain.send(
        [
            transfer(
                TransferParams(from_pubkey=chain.payer.pubkey(), to_pubkey=chain.merchant.pubkey(), lamports=SOL // 4)
            ),
            token.mint_to_checked(
                MintToCheckedParams(
                    program_id=TOKEN_PROGRAM_ID,
                    mint=chain.usdc,
                    dest=ata,
                    mint_authority=chain.payer.pubkey(),
                    amount=4 * USDC,
                    decimals=6,
                )
            ),
        ]
    )
    landed = chain.standin.transaction(signature)
    assert landed is not None
    found = {c.asset: c for c in SolanaTransactionInspector(chain.config()).transfers(signature)}
    assert {(asset, c.atomic_amount) for asset, c in found.items()} == {("SOL", SOL // 4), ("USDC", 4 * USDC)}
    sol, usdc = found["SOL"].payment_id, found["USDC"].payment_id
    assert usdc == f"solana:{signature}:-1"
    sink = RefusingRecord({usdc})
    sink.record_seen(replace(found["SOL"], succeeded=False, block_hash="dead-fork-hash"))
    watch.sink = sink
    watch.start_block = landed.slot  # the scan covers later slots only
    chain.standin.advance(LAG + 1)

    report = watch.run()

    assert report.stuck == (f"{sol}: RuntimeError: the store refused {usdc}",)
    assert sink.status[sol] is PaymentStatus.FAILED
    assert usdc not in sink.status
    sink.refused.clear()

    after = watch.run()

    assert after.stuck == ()
    assert (sink.status[sol], sink.status[usdc]) == (PaymentStatus.SEEN, PaymentStatus.SEEN)
    assert sink.transfers[usdc].atomic_amount == 4 * USDC


def test_given_usdc_paid_into_a_merchant_token_account_other_than_its_ata_then_it_is_no_credit_whatever_the_reference(
    chain: SolanaTestChain, watch: Watch
) -> None:
    """D324 (review F1). 7 USDC with a watched Solana Pay reference into a side token account the merchant's
    wallet owns; neither the wallet nor the ATA is among the transaction's keys, so no sweep lists it. Before:
    ``credits`` counted it (7,000,000) and the watcher recorded it only through the reference lookup - i.e. only
    while D290's rotation and 2 h margin queried that reference. Now it is no credit, on every path; 3 USDC paid to
    the ATA in the same run is recorded (3,000,000). Amended (D341): where the transaction is read (the
    reference's lookup, the fast path) the side payment is reported as a stray credit - kept for an operator,
    never matched to a bill."""
    side = chain.create_token_account(chain.merchant.pubkey(), chain.usdc)
    reference = Keypair().pubkey()
    watch.references.keys.append(str(reference))
    watch.run()  # the cursor before the payments
    transfer_ix = token.transfer_checked(
        TransferCheckedParams(
            program_id=TOKEN_PROGRAM_ID,
            source=token.get_associated_token_address(chain.payer.pubkey(), chain.usdc),
            mint=chain.usdc,
            dest=side,
            owner=chain.payer.pubkey(),
            amount=7 * USDC,
            decimals=6,
        )
    )
    to_side = chain.send(
        [
            Instruction(
                transfer_ix.program_id, transfer_ix.data, [*transfer_ix.accounts, AccountMeta(reference, False, False)]
            )
        ]
    )
    chain.pay_usdc(3 * USDC)

    report = watch.run()

    # D341: the side payment is reported, marked stray (never matched to a bill), beside the 3 USDC credit
    assert [(t.atomic_amount, t.stray) for t in watch.sink.transfers.values()] == [(7 * USDC, True), (3 * USDC, False)]
    assert report.transfers_seen == 2
    (inspected,) = asyncio.run(_inspect(chain, to_side, frozenset({str(reference)})))
    assert (inspected.atomic_amount, inspected.stray, inspected.payment_id) == (7 * USDC, True, f"solana:{to_side}:0")


def test_given_usdc_with_a_bills_reference_paid_into_a_side_token_account_then_kept_unattributed_and_the_operator_told(
    chain: SolanaTestChain, stack: Stack
) -> None:
    """D341. The $7.00 bill inv-1 has a 7 USDC quote with reference R. The customer sends exactly 7 USDC
    (7,000,000 units) carrying R - but into a token account of the merchant's wallet that is not its ATA (D324: no
    payment). Before: nothing was recorded, nothing raised; the 7 USDC sat in our side account unseen. Now the
    reference's lookup finds it: it is recorded UNATTRIBUTED (not matched, although R and the amount name inv-1's
    quote), the operator's UnattributedCryptoPayment.v1 alert says 7 USDC, the CLI's list holds it, the bill stays
    OPEN with no line; finalized like any payment once its slot is; and the customer's claim of it is refused."""
    h = harness(stack)
    h.clock.now = datetime.now(UTC)
    reference = Keypair().pubkey()
    assert h.store.create_bill(bill("inv-1", "acct-1", "7.00"))
    h.store.add_quote(_usdc_quote("q-1", "inv-1", "acct-1", 7 * USDC, str(reference)))
    side = chain.create_token_account(chain.merchant.pubkey(), chain.usdc)
    watch = Watch(chain)
    watch.sink = h.settlement  # type: ignore[assignment]
    watch.references = h.settlement  # type: ignore[assignment]
    signature = chain.send([_usdc_to(chain, side, 7 * USDC, reference)])
    payment_id = f"solana:{signature}:0"  # the transfer_checked is the transaction's only instruction

    watch.run()

    stray = h.store.payment(payment_id)
    assert stray is not None
    assert (stray.status, stray.invoice_id, stray.transfer.atomic_amount, stray.transfer.stray) == (
        PaymentStatus.SEEN,
        None,
        7 * USDC,
        True,
    )
    assert [p.payment_id for p in h.store.unattributed()] == [payment_id]
    assert [(e["tx_id"], e["asset"], e["amount"]) for e in h.events("UnattributedCryptoPayment.v1")] == [
        (signature, "USDC", "7")  # 7,000,000 / 10^6
    ]
    assert h.events("CryptoPaymentSeen.v1") == []
    still = h.store.bill("inv-1")
    assert still is not None
    assert (still.status.value, still.payments) == ("OPEN", ())
    with pytest.raises(ClaimRefusedError, match="not our payment address"):
        h.settlement.check_claim(stray.transfer, "inv-1")

    chain.standin.advance(LAG)
    report = watch.run()

    final = h.store.payment(payment_id)
    assert final is not None
    assert (final.status, final.invoice_id, report.finalized) == (PaymentStatus.FINALIZED, None, 1)
    assert len(h.events("UnattributedCryptoPayment.v1")) == 1  # told once

    h.settlement.assign(payment_id, "acct-1", "inv-1")  # the operator, having checked it, gives it to the bill

    paid = h.store.bill("inv-1")
    assert paid is not None
    assert (paid.status.value, paid.settled_usd) == ("PAID", Decimal("7.00"))  # 7 USDC x $1.00 covers $7.00


def test_given_a_stray_payment_the_operator_refunded_then_off_the_list_never_assigned_and_its_quote_not_reminded(
    chain: SolanaTestChain, stack: Stack
) -> None:
    """D341, amended (a review). As above: 7 USDC (7,000,000 units) with inv-1's quote reference R into a
    side account, kept UNATTRIBUTED. The quote (7 USDC, expiring 30 minutes after it was made) stays ACTIVE, but
    its reference is on the stray payment: 20 minutes later the expiring reminder ("pay 7 USDC", window 15 minutes)
    is not sent - the customer paid already and would pay twice (before: 1 sent). The operator refunds the 7 USDC on
    chain and records it (``Settlement.refunded``, the refund's signature): it leaves the unattributed list, stays so
    when the watcher reads it again and finalizes it, and a later assign (or a second refund) is refused - before,
    no way to record it: it stayed listed and an assign credited 7.00 (7 USDC x $1.00) refunded already."""
    h = harness(stack)
    h.clock.now = datetime.now(UTC)
    reference = Keypair().pubkey()
    assert h.store.create_bill(bill("inv-1", "acct-1", "7.00"))
    h.store.add_quote(_usdc_quote("q-1", "inv-1", "acct-1", 7 * USDC, str(reference)))
    side = chain.create_token_account(chain.merchant.pubkey(), chain.usdc)
    watch = Watch(chain)
    watch.sink = h.settlement  # type: ignore[assignment]
    watch.references = h.settlement  # type: ignore[assignment]
    signature = chain.send([_usdc_to(chain, side, 7 * USDC, reference)])
    payment_id = f"solana:{signature}:0"
    watch.run()
    assert [p.payment_id for p in h.store.unattributed()] == [payment_id]

    h.clock.now += timedelta(minutes=20)  # 10 minutes before the quote's expiry, inside a 15-minute window
    assert h.settlement.announce_expiring("solana", timedelta(minutes=15)) == 0
    assert h.events("CryptoQuoteExpiring.v1") == []

    refunded = h.settlement.refunded(payment_id, "refund-sig-1")

    assert (refunded.refund_tx, refunded.invoice_id, refunded.status) == ("refund-sig-1", None, PaymentStatus.SEEN)
    assert h.store.unattributed() == []
    assert h.settlement.refunded(payment_id, "refund-sig-1") == refunded  # recorded once, told again
    with pytest.raises(NotRefundableError, match="refunded by refund-sig-1"):
        h.settlement.refunded(payment_id, "refund-sig-2")
    with pytest.raises(NotAssignableError, match="refunded by refund-sig-1"):
        h.settlement.assign(payment_id, "acct-1", "inv-1")
    chain.standin.advance(LAG)
    watch.run()
    final = h.store.payment(payment_id)
    assert final is not None
    assert (final.status, final.refund_tx, final.invoice_id) == (PaymentStatus.FINALIZED, "refund-sig-1", None)
    assert h.store.unattributed() == []
    assert len(h.events("UnattributedCryptoPayment.v1")) == 1
    still = h.store.bill("inv-1")
    assert still is not None
    assert (still.status.value, still.settled_usd, still.payments) == ("OPEN", Decimal("0"), ())


def _usdc_to(chain: SolanaTestChain, account: Pubkey, amount: int, reference: Pubkey | None = None) -> Instruction:
    """A ``transfer_checked`` of ``amount`` USDC from the payer into the token account ``account``, ``reference``
    (if any) appended read-only (Solana Pay)."""
    ix = token.transfer_checked(
        TransferCheckedParams(
            program_id=TOKEN_PROGRAM_ID,
            source=token.get_associated_token_address(chain.payer.pubkey(), chain.usdc),
            mint=chain.usdc,
            dest=account,
            owner=chain.payer.pubkey(),
            amount=amount,
            decimals=6,
        )
    )
    if reference is None:
        return ix
    return Instruction(ix.program_id, ix.data, [*ix.accounts, AccountMeta(reference, False, False)])


def _usdc_quote(quote_id: str, invoice_id: str, account_id: str, atomic: int, reference: str) -> Quote:
    """A $7.00 USDC quote made now at $1.00 (7,000,000 units), watched for 72 hours."""
    created = datetime.now(UTC)
    rate = LockedRate("USDC", Decimal("1.00"), (RateReading("fixed", "USDC", Decimal("1.00"), created),), created)
    return replace(
        _sol_quote(quote_id, invoice_id, account_id, atomic, reference),
        asset="USDC",
        amount_usd=Decimal("7.00"),
        rate=rate,
    )


async def _inspect(chain: SolanaTestChain, signature: str, watched: frozenset[str]) -> list[ObservedTransfer]:
    async with SolanaRpcClient(chain.standin.url) as rpc:
        return await inspect(rpc, chain.config(), signature, watched)


# --- review rs2: a listing server behind the head now and then ------------------------------------------------------
class OneInK(SolanaRpcClient):
    """A load balancer: one ``getSignaturesForAddress`` call in ``k`` (a page asked again counts as a call) lands on a
    backend one slot behind the head, which refuses its ``minContextSlot`` (-32016); ``asks`` counts the calls."""

    def __init__(self, url: str, k: int, offset: int = 0) -> None:
        super().__init__(url)
        self.k, self.asks = k, offset

    async def signatures(
        self,
        address: str,
        *,
        before: str | None = None,
        until: str | None = None,
        limit: int = SIGNATURES_PAGE,
        min_slot: int | None = None,
    ) -> Sequence[SignatureInfo]:
        self.asks += 1
        if self.asks % self.k == 0 and min_slot is not None:
            raise SolanaNodeBehindError("solana rpc: Minimum context slot has not been reached")
        return await super().signatures(address, before=before, until=until, limit=limit, min_slot=min_slot)


def test_given_one_listing_call_in_twelve_refused_by_a_server_a_slot_behind_then_the_page_is_asked_again_and_paid(
    chain: SolanaTestChain, watch: Watch
) -> None:
    # 10 recent references + the 2 sweeps = 12 pages a run; the 12th call is refused. Before the fix one refused
    # page threw the whole run away: the cursor never moved and nothing alarmed (review rs2)
    watch.references.keys = [str(Keypair().pubkey()) for _ in range(10)]
    first = watch.run()
    signature = chain.pay_sol(SOL // 10)  # 0.1 SOL = 100_000_000 lamports, found by the wallet sweep
    rpc = OneInK(chain.standin.url, k=12)

    report = _run(watch, rpc)

    # calls 1..10 the references, 11 the wallet sweep, 12 the USDC sweep refused, 13 that page asked again: answered
    assert rpc.asks == 13
    assert [(t.tx_id, t.atomic_amount) for t in watch.sink.transfers.values()] == [(signature, 100_000_000)]
    assert watch.cursors.cursors["solana"].block_number == report.to_block > first.to_block
    assert (report.caught_up, report.behind) == (True, False)


def test_given_a_listing_server_behind_on_every_ask_then_the_page_is_asked_three_times_and_the_run_reports_behind(
    chain: SolanaTestChain, watch: Watch
) -> None:
    first = watch.run()
    signature = chain.pay_sol(SOL // 10)
    landed = chain.standin.transaction(signature)
    assert landed is not None
    rpc = OneInK(chain.standin.url, k=1)  # every call refused: a backend that stays behind

    report = _run(watch, rpc)

    # no recent reference: the wallet sweep's first page is the first call; asked once + 2 times again = 3, then
    # the run reads nothing, leaves its cursor and says it was behind (counted, alarmed after 10 runs in a row)
    assert rpc.asks == 3
    assert watch.sink.transfers == {}
    assert watch.cursors.cursors["solana"].block_number == first.to_block
    assert (report.caught_up, report.behind, report.to_block) == (False, True, first.to_block)


def test_given_a_minus_32016_answer_without_data_then_the_run_fails_with_a_solana_rpc_error_not_a_panic(
    chain: SolanaTestChain, watch: Watch, monkeypatch: pytest.MonkeyPatch
) -> None:
    # a proxy that drops the error's ``data`` ({"contextSlot": n}): solders panics reading it (pyo3's
    # PanicException, a BaseException), which went past every ``except Exception`` and stopped the other chains' runs
    answered = SolanaStandin._commitment_slot

    def refuse(self: SolanaStandin, config: dict[str, Any] | None) -> int:
        if (config or {}).get("minContextSlot") is not None:
            raise standin_module.RpcError(-32016, "Minimum context slot has not been reached")  # no data
        return answered(self, config)

    monkeypatch.setattr(SolanaStandin, "_commitment_slot", refuse)

    with pytest.raises(SolanaRpcError):
        watch.run()


def test_given_every_other_listing_call_refused_then_a_run_asks_again_20_times_at_most_and_then_reports_behind(
    chain: SolanaTestChain, watch: Watch
) -> None:
    # 30 references + 2 sweeps = 32 pages; calls 2, 4, 6, ... refused. Page 1: call 1. Pages 2..21: refused once each
    # (calls 2, 4, ..., 40), answered on the ask again (calls 3, 5, ..., 41): 20 asks again, the run's budget (20 x
    # 0.4 s = 8 s of pauses, inside the Lambda's timeout). Page 22: call 42 refused, no ask again left: behind
    watch.references.keys = [str(Keypair().pubkey()) for _ in range(30)]
    first = watch.run()
    rpc = OneInK(chain.standin.url, k=2)

    report = _run(watch, rpc, behind_pause=0.0)  # no pause: the count of asks is what is checked

    assert rpc.asks == 42
    assert (report.behind, report.to_block) == (True, first.to_block)
    assert watch.cursors.cursors["solana"].block_number == first.to_block


# --- review rs3: the skipped-slot proof's own errors and its search ------------------------------------------------
REFUSALS = ("getBlocks -32601", "getBlocks -32602", "parent getBlock -32602")


def _refuse(monkeypatch: pytest.MonkeyPatch, refusal: str) -> None:
    """A provider that answers the skipped-slot proof's calls with a JSON-RPC error: no ``getBlocks`` at all (-32601
    "Method not found", the stand-in's answer to a method it lacks), or Agave's long-term storage failing (-32602
    "BigTable query failed") on ``getBlocks`` or on the next block's ``getBlock(finalized, none)``."""
    if refusal == "getBlocks -32601":
        monkeypatch.delattr(SolanaStandin, "_rpc_getBlocks")
        return

    def bigtable(*_: object) -> None:
        raise standin_module.RpcError(
            standin_module.INVALID_PARAMS, "BigTable query failed (maybe timeout due to too large range?)"
        )

    if refusal == "getBlocks -32602":
        monkeypatch.setattr(SolanaStandin, "_rpc_getBlocks", bigtable)
        return
    served = SolanaStandin._rpc_getBlock

    def block(self: SolanaStandin, slot: int, config: dict[str, Any] | str | None = None) -> dict[str, Any]:
        if isinstance(config, dict) and (config.get("transactionDetails"), config.get("commitment")) == (
            "none",
            "finalized",
        ):
            bigtable()  # the next block's parent asked; block_hash (confirmed) and the signatures (S) still served
        return served(self, slot, config)

    monkeypatch.setattr(SolanaStandin, "_rpc_getBlock", block)


@pytest.mark.parametrize("refusal", REFUSALS)
def test_given_the_skipped_slot_proof_answered_with_an_error_then_it_proves_nothing_and_the_other_payments_finalize(
    chain: SolanaTestChain, watch: Watch, monkeypatch: pytest.MonkeyPatch, refusal: str
) -> None:
    """Review rs3: a JSON-RPC error from getBlocks (or the next block's getBlock) failed the whole run: no payment of
    the chain was finalized any more and its cursor never moved (before the skipped-slot proof: the payment waited)."""
    dead = chain.pay_sol(SOL // 10)  # slot S
    good = chain.pay_sol(SOL // 5)  # slot S + 1
    watch.run()
    ids = {transfer.tx_id: payment_id for payment_id, transfer in watch.sink.transfers.items()}
    chain.standin.forget(dead)  # its fork died: S skipped, S + 1's parent is S - 1
    chain.standin.advance(LAG + 2)  # finalized = S + 3: both slots final
    _refuse(monkeypatch, refusal)

    report = watch.run()  # before: SolanaRpcError, both payments SEEN

    # good: finalized status -> 1 finalized; dead: no status, no transaction, S not shown, the proof refused -> unproven
    assert (report.finalized, report.orphaned, report.unproven, report.stuck) == (1, 0, 1, ())
    assert watch.sink.status[ids[good]] is PaymentStatus.FINALIZED
    assert watch.sink.status[ids[dead]] is PaymentStatus.SEEN
    monkeypatch.undo()  # the provider answers again: S + 1's parent S - 1 < S proves S skipped
    report = watch.run()
    assert (report.orphaned, report.unproven) == (1, 0)
    assert watch.sink.status[ids[dead]] is PaymentStatus.ORPHANED


def test_given_the_slots_own_block_answered_with_an_error_then_the_next_blocks_parent_still_proves_it_skipped(
    chain: SolanaTestChain, watch: Watch, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Review rs3 (left by the fix, mended at the merge): the payment's own slot asked with its signatures
    (``getBlock(S, finalized, signatures)``) answered by long-term storage failing (-32602 "BigTable query failed")
    failed the whole run, as the proof's other calls did: it proves nothing now, and the next block's parent does."""
    dead = chain.pay_sol(SOL // 10)  # slot S
    good = chain.pay_sol(SOL // 5)  # slot S + 1
    watch.run()
    ids = {transfer.tx_id: payment_id for payment_id, transfer in watch.sink.transfers.items()}
    chain.standin.forget(dead)  # its fork died: S skipped, S + 1's parent is S - 1
    chain.standin.advance(LAG + 2)  # finalized = S + 3: both slots final
    served = SolanaStandin._rpc_getBlock

    def block(self: SolanaStandin, slot: int, config: dict[str, Any] | str | None = None) -> dict[str, Any]:
        if isinstance(config, dict) and config.get("transactionDetails") == "signatures":
            raise standin_module.RpcError(standin_module.INVALID_PARAMS, "BigTable query failed")
        return served(self, slot, config)

    monkeypatch.setattr(SolanaStandin, "_rpc_getBlock", block)

    report = watch.run()  # before: SolanaRpcError, both payments SEEN

    # good: finalized; dead: S's own block refused (nothing proven), S + 1's parent S - 1 < S: orphaned
    assert (report.finalized, report.orphaned, report.unproven, report.stuck) == (1, 1, 0, ())
    assert watch.sink.status[ids[good]] is PaymentStatus.FINALIZED
    assert watch.sink.status[ids[dead]] is PaymentStatus.ORPHANED


@pytest.mark.parametrize("refusal", REFUSALS)
def test_given_a_listed_signature_whose_skipped_slot_proof_is_answered_with_an_error_then_the_run_ends_and_the_cursor_waits(
    chain: SolanaTestChain, watch: Watch, monkeypatch: pytest.MonkeyPatch, refusal: str
) -> None:
    watch.run()
    signature = chain.pay_sol(SOL // 10)  # slot S
    landed = chain.standin.transaction(signature)
    assert landed is not None
    later = chain.pay_sol(SOL // 5)  # slot S + 1
    chain.standin.forget(signature)
    chain.standin.advance(LAG)  # finalized = S + 1
    _refuse(monkeypatch, refusal)
    stale = [SignatureInfo(signature, landed.slot, False)]

    report = _run(watch, DeadForkListing(chain.standin.url, stale))  # before: SolanaRpcError, every run

    # unproven: the cursor stops before S (S - 1), as for any listed signature not proven gone; 1 slot final < 750
    assert report.to_block == watch.cursors.cursors["solana"].block_number == landed.slot - 1
    assert (report.caught_up, report.stuck) == (False, ())
    assert watch.sink.transfers == {}
    monkeypatch.undo()
    report = _run(watch, DeadForkListing(chain.standin.url, stale))
    assert report.to_block == watch.cursors.cursors["solana"].block_number == chain.standin.slot
    # 0.2 SOL = 200,000,000 lamports; nothing for the vanished one
    assert [(t.tx_id, t.atomic_amount) for t in watch.sink.transfers.values()] == [(later, 200_000_000)]


def test_given_a_leaders_whole_window_of_payments_on_a_dead_fork_then_each_is_proven_by_the_first_block_after_it(
    chain: SolanaTestChain, watch: Watch
) -> None:
    """A leader's 4 slots S..S+3 all dropped: the block after S is not S + 1 (skipped too) but S + 4, found by
    getBlocks; its parent S - 1 is before each of the 4 slots."""
    paid = [chain.pay_sol(SOL // 100 + n) for n in range(4)]  # slots S..S+3, one each
    watch.run()
    slots = [landed.slot for landed in map(chain.standin.transaction, paid) if landed]
    assert slots == [slots[0], slots[0] + 1, slots[0] + 2, slots[0] + 3]
    for signature in paid:
        chain.standin.forget(signature)
    chain.standin.advance(LAG + 1)  # head S + 3 + 9, finalized S + 4, whose parentSlot is S - 1

    report = watch.run()

    # S, S+1, S+2, S+3: getBlocks(S+k+1, ...) -> first S + 4, parent S - 1 < S + k: 4 orphaned (the block after S
    # taken as S + 1 would prove only S + 3's: S+1..S+3 skipped, no parent shown -> 3 unproven)
    assert (report.orphaned, report.unproven, report.stuck) == (4, 0, ())
    assert set(watch.sink.status.values()) == {PaymentStatus.ORPHANED}


class _CountingPaymentReads:
    """The crypto store, counting ``payment`` reads (each one GetItem on DynamoDB)."""

    def __init__(self, store: Any) -> None:
        self._store = store
        self.reads: list[str] = []

    def payment(self, payment_id: str) -> Any:
        self.reads.append(payment_id)
        return self._store.payment(payment_id)

    def __getattr__(self, name: str) -> Any:
        return getattr(self._store, name)


def test_given_solana_credits_alone_in_their_transactions_then_nets_reads_no_payment(stack: Stack) -> None:
    """Review (rsp3) F4: a pre-split net credit needs two or more credits of one asset in a transaction, so ``nets``
    reads only those groups. Batch: sig-a 1 SOL at :0 alone; sig-b 1 SOL at :0 and 0.5 USDC at :1 (one credit per
    asset); sig-c 1.0 + 0.5 SOL at :0 and :1. Before: one read per credit = 1 + 2 + 2 = 5; now sig-c's two = 2."""
    h = harness(stack)
    counting = _CountingPaymentReads(h.store)
    settlement = Settlement(counting, h.published, CHAINS, h.rates, clock=h.clock)  # type: ignore[arg-type]
    at = datetime(2026, 11, 2, 11, 0, tzinfo=UTC)
    batch = [
        _core_transfer("sig-a", "SOL", 1_000_000_000, at, chain="solana"),
        _core_transfer("sig-b", "SOL", 1_000_000_000, at, chain="solana"),
        _core_transfer("sig-b", "USDC", 500_000, at, chain="solana", index=1),
        _core_transfer("sig-c", "SOL", 1_000_000_000, at, chain="solana"),
        _core_transfer("sig-c", "SOL", 500_000_000, at, chain="solana", index=1),
    ]

    assert settlement.nets(batch) == {}
    assert counting.reads == ["solana:sig-c:0", "solana:sig-c:1"]
