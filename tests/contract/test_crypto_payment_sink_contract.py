"""One contract, two implementations of the watchers' ``PaymentSink`` (kilo_crypto_watch/ports.py): the in-memory fake
the watchers' tests use (tests/crypto_fakes.py) and the real ``Settlement`` over the crypto table (moto, from
template.yaml). Credits no bill claims (the watchers' tests have none), reported as the watchers report them.

The port: every method idempotent per payment id; ``pending`` returns SEEN payments and FAILED ones whose block is not
final yet (``failed=True``); ``finalized`` / ``orphaned`` given a block hash act only while that is still the payment's
recorded block."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, replace

import pytest

from kilo_crypto_watch.model import ObservedTransfer, PaymentStatus, PendingPayment
from kilo_crypto_watch.ports import PaymentSink
from tests.conftest import Stack
from tests.crypto_fakes import MemoryPaymentSink

SENDER = "0x1111111111111111111111111111111111111111"
MERCHANT = "0x00000000000000000000000000000000000Ba5e0"


@dataclass
class Sink:
    port: PaymentSink
    status: Callable[[str], PaymentStatus | None]  # the payment's recorded status, read past the port
    amount: Callable[[str], int | None]  # the atomic amount recorded at the payment id, read past the port


@pytest.fixture(params=["fake", "settlement-on-moto"])
def sink(request: pytest.FixtureRequest) -> Sink:
    if request.param == "fake":
        fake = MemoryPaymentSink()
        return Sink(fake, fake.status.get, lambda pid: t.atomic_amount if (t := fake.transfers.get(pid)) else None)
    from tests.crypto_core_fakes import harness  # noqa: PLC0415

    stack: Stack = request.getfixturevalue("stack")
    real = harness(stack)

    def status(payment_id: str) -> PaymentStatus | None:
        found = real.store.payment(payment_id)
        return None if found is None else found.status

    def amount(payment_id: str) -> int | None:
        found = real.store.payment(payment_id)
        return None if found is None else found.transfer.atomic_amount

    return Sink(real.settlement, status, amount)


def transfer(block: int = 10, succeeded: bool = True, chain: str = "ethereum", tx: str = "0xabc") -> ObservedTransfer:
    return ObservedTransfer(chain, "USDC", tx, 3, block, f"0xh{block}", SENDER, MERCHANT, 5_000_000, succeeded)


def pending(block: int = 10, failed: bool = False, tx: str = "0xabc") -> PendingPayment:
    return PendingPayment(f"ethereum:{tx}:3", "ethereum", tx, 3, block, f"0xh{block}", failed)


PID = "ethereum:0xabc:3"


def test_given_a_credit_seen_twice_then_it_is_pending_once_on_its_chain_until_final(sink: Sink) -> None:
    sink.port.record_seen(transfer())
    sink.port.record_seen(transfer())
    assert list(sink.port.pending("ethereum")) == [pending()]
    assert list(sink.port.pending("base")) == []
    sink.port.finalized(PID, "0xh10")
    assert (list(sink.port.pending("ethereum")), sink.status(PID)) == ([], PaymentStatus.FINALIZED)
    sink.port.orphaned(PID, "0xh10")  # final stays final
    sink.port.record_seen(transfer(block=11))
    assert (list(sink.port.pending("ethereum")), sink.status(PID)) == ([], PaymentStatus.FINALIZED)


def test_given_a_reverted_transfer_then_it_is_pending_as_failed_until_its_block_is_final(sink: Sink) -> None:
    sink.port.record_seen(transfer(succeeded=False))
    assert list(sink.port.pending("ethereum")) == [pending(failed=True)]
    sink.port.finalized(PID, "0xh10")
    assert (list(sink.port.pending("ethereum")), sink.status(PID)) == ([], PaymentStatus.FAILED)
    sink.port.record_seen(transfer(block=12))  # final: a later report changes nothing
    assert (list(sink.port.pending("ethereum")), sink.status(PID)) == ([], PaymentStatus.FAILED)


def test_given_a_failed_payment_not_final_when_seen_in_other_blocks_then_it_follows_them(sink: Sink) -> None:
    sink.port.record_seen(transfer(succeeded=False))
    sink.port.record_seen(transfer(block=11, succeeded=False))  # reverted again where it was re-included
    assert list(sink.port.pending("ethereum")) == [pending(block=11, failed=True)]
    sink.port.finalized(PID, "0xh10")  # the block the watcher checked is no longer the recorded one
    assert list(sink.port.pending("ethereum")) == [pending(block=11, failed=True)]
    sink.port.record_seen(transfer(block=12))  # succeeded in a third block
    assert (list(sink.port.pending("ethereum")), sink.status(PID)) == ([pending(block=12)], PaymentStatus.SEEN)


def test_given_a_failed_payment_whose_block_left_the_chain_then_it_is_orphaned_and_counts_if_seen_again(
    sink: Sink,
) -> None:
    sink.port.record_seen(transfer(succeeded=False))
    sink.port.orphaned(PID, "0xh10")
    assert (list(sink.port.pending("ethereum")), sink.status(PID)) == ([], PaymentStatus.ORPHANED)
    sink.port.record_seen(transfer(block=13))
    assert (list(sink.port.pending("ethereum")), sink.status(PID)) == ([pending(block=13)], PaymentStatus.SEEN)


def test_given_a_seen_payment_seen_in_another_block_then_finality_checks_the_new_block_only(sink: Sink) -> None:
    sink.port.record_seen(transfer())
    sink.port.record_seen(transfer(block=11))
    assert list(sink.port.pending("ethereum")) == [pending(block=11)]
    sink.port.orphaned(PID, "0xh10")  # a stale check of the old block
    sink.port.finalized(PID, "0xh10")
    assert (list(sink.port.pending("ethereum")), sink.status(PID)) == ([pending(block=11)], PaymentStatus.SEEN)
    sink.port.orphaned(PID, "0xh11")
    assert (list(sink.port.pending("ethereum")), sink.status(PID)) == ([], PaymentStatus.ORPHANED)
    sink.port.finalized(PID, "0xh11")  # orphaned is not finalized later
    assert sink.status(PID) is PaymentStatus.ORPHANED
    sink.port.record_seen(transfer(block=11))  # the same block again (the reorg reverted): counts again
    assert (list(sink.port.pending("ethereum")), sink.status(PID)) == ([pending(block=11)], PaymentStatus.SEEN)


def test_given_a_seen_payment_reverted_where_it_was_re_included_then_it_is_pending_as_failed(sink: Sink) -> None:
    sink.port.record_seen(transfer())
    sink.port.record_seen(transfer(block=14, succeeded=False))
    assert (list(sink.port.pending("ethereum")), sink.status(PID)) == (
        [pending(block=14, failed=True)],
        PaymentStatus.FAILED,
    )


def test_given_finality_without_a_block_hash_then_it_applies_to_whatever_block_is_recorded(sink: Sink) -> None:
    sink.port.record_seen(transfer())
    sink.port.record_seen(transfer(tx="0xdef", succeeded=False))
    sink.port.finalized(PID)
    sink.port.finalized("ethereum:0xdef:3")
    sink.port.finalized("ethereum:0xnone:3")  # never seen: nothing
    assert list(sink.port.pending("ethereum")) == []
    assert (sink.status(PID), sink.status("ethereum:0xdef:3")) == (PaymentStatus.FINALIZED, PaymentStatus.FAILED)
    assert sink.status("ethereum:0xnone:3") is None


def test_given_a_transaction_re_mined_with_its_indexes_shifted_up_then_each_id_holds_the_credit_now_there(
    sink: Sink,
) -> None:
    """5 USDC at log index 3 and 7 USDC at 4 of one transaction (block 10), re-mined in block 11 after another
    transaction's log: 5 at index 4, 7 at 5, reported in index order while both are still SEEN in block 10. Index 4
    holds the 5 USDC now (another credit than the one stored there: recorded afresh, D168), 5 the 7 USDC; index 3 is
    orphaned by the finality check. Every credit is on record once: 5 + 7 USDC pending, none twice."""
    five = ObservedTransfer("ethereum", "USDC", "0xtwo", 3, 10, "0xh10", SENDER, MERCHANT, 5_000_000)
    seven = ObservedTransfer("ethereum", "USDC", "0xtwo", 4, 10, "0xh10", SENDER, MERCHANT, 7_000_000)
    sink.port.record_seen(five)
    sink.port.record_seen(seven)
    moved = {"block_number": 11, "block_hash": "0xh11"}

    sink.port.record_seen(replace(five, index=4, **moved))  # type: ignore[arg-type]
    sink.port.record_seen(replace(seven, index=5, **moved))  # type: ignore[arg-type]
    sink.port.orphaned("ethereum:0xtwo:3", "0xh10")

    pending = sorted((p.payment_id, p.block_hash) for p in sink.port.pending("ethereum"))
    assert pending == [("ethereum:0xtwo:4", "0xh11"), ("ethereum:0xtwo:5", "0xh11")]
    assert {pid: sink.amount(pid) for pid, _ in pending} == {
        "ethereum:0xtwo:4": 5_000_000,
        "ethereum:0xtwo:5": 7_000_000,
    }
    assert sink.status("ethereum:0xtwo:3") is PaymentStatus.ORPHANED


def test_given_many_sub_cent_credits_of_one_transaction_then_each_is_on_record_once_at_its_exact_amount(
    sink: Sink,
) -> None:
    """Twelve credits of one transaction (a batch: one Transfer log each), 0.005 USDC (5_000 units) and the smallest
    unit (1) in turn, reported twice: each is its own payment at its own index, its atomic amount as sent (nothing
    merged, dropped or rounded - settlement values them exactly, D178), pending once, final once."""
    dust = [
        ObservedTransfer("ethereum", "USDC", "0xdust", i, 10, "0xh10", SENDER, MERCHANT, 5_000 if i % 2 else 1)
        for i in range(12)
    ]
    for credit in dust + dust:
        sink.port.record_seen(credit)

    ids = [f"ethereum:0xdust:{i}" for i in range(12)]
    assert sorted(p.payment_id for p in sink.port.pending("ethereum")) == sorted(ids)
    assert [sink.amount(pid) for pid in ids] == [5_000 if i % 2 else 1 for i in range(12)]
    for pid in ids:
        sink.port.finalized(pid, "0xh10")
    assert list(sink.port.pending("ethereum")) == []
    assert {sink.status(pid) for pid in ids} == {PaymentStatus.FINALIZED}


def test_given_a_batch_of_credits_then_each_is_recorded_as_record_seen_would_and_a_repeat_adds_nothing(
    sink: Sink,
) -> None:
    """``record_batch`` (D216) records each credit as ``record_seen`` does: pending once each, idempotent."""
    batch = [transfer(tx="0xabc"), transfer(block=11, tx="0xdef"), transfer(succeeded=False, tx="0x123")]
    sink.port.record_batch(batch)
    sink.port.record_batch(batch)
    assert sorted(sink.port.pending("ethereum"), key=lambda p: p.tx_id) == [
        pending(failed=True, tx="0x123"),
        pending(tx="0xabc"),
        pending(block=11, tx="0xdef"),
    ]
    assert sink.status("ethereum:0xdef:3") is PaymentStatus.SEEN


def test_given_a_solana_credit_stored_as_one_net_credit_when_reported_split_in_its_block_then_it_keeps_its_amount(
    sink: Sink,
) -> None:
    """D91, amended (sp2): a Solana transaction stored before the split as one net credit of 1,750,000,000 lamports
    at :0, reported again in the same block as :0 1,500,000,000 and :1 250,000,000 (1.5 + 0.25 = 1.75 SOL). The
    stored credit wins (same block: unchanged); :1 is recorded, pending, on its own (Settlement keeps it
    UNATTRIBUTED: its lamports are in :0's amount already)."""
    net = ObservedTransfer("solana", "SOL", "sig", 0, 300, "h300", "payer", "merchant", 1_750_000_000, True)
    sink.port.record_batch([net])
    sink.port.record_batch(
        [replace(net, atomic_amount=1_500_000_000), replace(net, index=1, atomic_amount=250_000_000)]
    )
    assert (sink.amount("solana:sig:0"), sink.amount("solana:sig:1")) == (1_750_000_000, 250_000_000)
    assert sorted(p.payment_id for p in sink.port.pending("solana")) == ["solana:sig:0", "solana:sig:1"]


def test_given_a_seen_payment_reported_stalled_then_it_stays_seen_and_pending_until_final(sink: Sink) -> None:
    """D398: ``stalled`` releases a bill's write-off, never the payment: it is still watched and finalizes."""
    sink.port.record_seen(transfer())
    sink.port.stalled(PID)
    sink.port.stalled(PID)
    assert (list(sink.port.pending("ethereum")), sink.status(PID)) == ([pending()], PaymentStatus.SEEN)
    sink.port.finalized(PID, "0xh10")
    assert (list(sink.port.pending("ethereum")), sink.status(PID)) == ([], PaymentStatus.FINALIZED)
