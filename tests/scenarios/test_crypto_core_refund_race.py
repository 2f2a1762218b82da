"""An operator's refund record (``Settlement.refunded``, D341 amended) against the steps that write the
same payment concurrently, on the crypto table (moto, from template.yaml): the refund lands between another writer's
read and its write. That writer's copy has no ``refund_tx``: its write is refused and it re-reads, so the refund is
never lost and a refunded payment never pays a bill.

Hand-worked figures: the $7.00 bill ``inv-1``; its Solana quote asks 7 USDC at $1.00 = 7,000,000 units; a stray
credit (into a side token account of ours) of 7,000,000 units = 7 USDC = $7.00 would pay it exactly. The EVM story:
the $100.00 bill, 100 USDC at $1.00 = 100,000,000 units.
"""

from __future__ import annotations

from dataclasses import replace
from datetime import timedelta
from decimal import Decimal

import pytest

from kilo_crypto_watch.model import BillStatus, Payment, PaymentStatus
from kilo_crypto_watch.ports import ConflictError, SettlementChange
from kilo_crypto_watch.settlement import ClaimRefusedError, NotAssignableError
from tests.conftest import Stack
from tests.crypto_core_fakes import STRANGER_WALLET, T0, Harness, bill, harness, quote, transfer

PID = "solana:sig-side:0"
SIDE = replace(transfer("sig-side", "USDC", 7_000_000, T0 + timedelta(minutes=4), chain="solana"), stray=True)


def _stray_kept(stack: Stack) -> Harness:
    """The $7.00 bill with its 7 USDC quote, and the stray 7 USDC credit kept SEEN, unattributed (listed)."""
    h = harness(stack)
    h.clock.now = T0 + timedelta(minutes=5)
    assert h.store.create_bill(bill("inv-1", "acct-1", "7.00"))
    h.store.add_quote(quote("q-1", "USDC", 7_000_000, "1", chain="solana", amount_usd="7.00"))
    h.settlement.record_seen(SIDE)
    return h


def _stored(h: Harness, payment_id: str = PID) -> Payment:
    found = h.store.payment(payment_id)
    assert found is not None
    return found


def test_given_a_refund_recorded_between_assigns_read_and_its_write_then_assign_is_refused_and_the_bill_stays_open(
    stack: Stack,
) -> None:
    """assign reads the stray payment SEEN, unattributed; the operator's refund commits; assign writes. Before: its
    whole-item put (conditioned on SEEN and no invoice - both still true) dropped ``refund_tx`` and credited it: bill
    PAID, settled 7.00 (7,000,000 units x $1.00) for 7 USDC sent back. Now the put is refused (the stored payment has
    a refund its copy has not), assign re-reads and refuses: the refund stays, the bill OPEN, settled 0.00."""
    h = _stray_kept(stack)
    read_bill = h.store.bill
    refunds: list[Payment] = []

    def bill_after_a_refund(invoice_id: str):  # type: ignore[no-untyped-def]
        if not refunds:  # assign has read the payment; the operator's command commits now
            refunds.append(h.settlement.refunded(PID, "sig-back"))
        return read_bill(invoice_id)

    h.store.bill = bill_after_a_refund  # type: ignore[method-assign]
    with pytest.raises(NotAssignableError, match="refunded by sig-back"):
        h.settlement.assign(PID, "acct-1", "inv-1")
    h.store.bill = read_bill  # type: ignore[method-assign]

    stored = _stored(h)
    assert (refunds[0].refund_tx, stored.refund_tx, stored.invoice_id) == ("sig-back", "sig-back", None)
    assert h.store.unattributed() == []
    paid = h.store.bill("inv-1")
    assert paid is not None
    assert (paid.status, paid.settled_usd, paid.payments) == (BillStatus.OPEN, Decimal("0"), ())


def test_given_a_refund_recorded_between_finalitys_read_and_its_write_then_it_is_finalized_with_its_refund(
    stack: Stack,
) -> None:
    """The watcher's finality step reads the payment SEEN; the refund commits; it writes FINALIZED. Before: the put
    (SEEN and its block hash, both still true) dropped the refund - back on the list, and assign then credited it
    (bill PAID 7.00). Now it re-reads and writes FINALIZED with the refund: off the list, assign refused."""
    h = _stray_kept(stack)
    save = h.store.save
    refunds: list[Payment] = []

    def refund_then_save(change: SettlementChange) -> None:
        if change.payment.status is PaymentStatus.FINALIZED and not refunds:
            refunds.append(h.settlement.refunded(PID, "sig-back"))
        save(change)

    h.store.save = refund_then_save  # type: ignore[method-assign]
    h.settlement.finalized(PID, "0xblock")
    h.store.save = save  # type: ignore[method-assign]

    stored = _stored(h)
    assert (stored.status, stored.refund_tx, stored.invoice_id) == (PaymentStatus.FINALIZED, "sig-back", None)
    assert h.store.unattributed() == []
    with pytest.raises(NotAssignableError, match="refunded by sig-back"):
        h.settlement.assign(PID, "acct-1", "inv-1")
    paid = h.store.bill("inv-1")
    assert paid is not None
    assert (paid.status, paid.settled_usd) == (BillStatus.OPEN, Decimal("0"))


def test_given_a_refund_recorded_between_a_customers_claim_read_and_its_write_then_the_claim_is_refused(
    stack: Stack,
) -> None:
    """An unattributed EVM payment (100 USDC = 100,000,000 units from a wallet nobody linked, the $100.00 bill's quote
    amount): the customer's fast-path claim reads it, the operator's refund commits, the claim writes. Before: the
    claim's put dropped the refund and the bill went PROCESSING on 100.00 sent back. Now: refused (409), refund kept,
    bill OPEN with no line."""
    h = harness(stack)
    assert h.store.create_bill(bill())
    h.store.add_quote(quote("q-usdc", "USDC", 100_000_000, "1"))
    h.clock.now = T0 + timedelta(minutes=5)
    paid_in = transfer("0xabc", "USDC", 100_000_000, T0 + timedelta(minutes=4), sender=STRANGER_WALLET)
    h.settlement.record_seen(paid_in)
    read_bill = h.store.bill
    refunds: list[Payment] = []

    def bill_after_a_refund(invoice_id: str):  # type: ignore[no-untyped-def]
        if not refunds:
            refunds.append(h.settlement.refunded(paid_in.payment_id, "0xback"))
        return read_bill(invoice_id)

    h.store.bill = bill_after_a_refund  # type: ignore[method-assign]
    with pytest.raises(ClaimRefusedError, match="refunded by 0xback"):
        h.settlement.record(paid_in, claimed_for="inv-1")
    h.store.bill = read_bill  # type: ignore[method-assign]

    stored = _stored(h, paid_in.payment_id)
    assert (stored.refund_tx, stored.invoice_id) == ("0xback", None)
    after = h.store.bill("inv-1")
    assert after is not None
    assert (after.status, after.payments) == (BillStatus.OPEN, ())


def test_given_the_payment_rebased_between_the_refunds_read_and_its_write_then_the_refund_keeps_the_new_block(
    stack: Stack,
) -> None:
    """The refund reads the payment in block 100 (0xblock); the watcher rebases it to block 101 (0xother); the refund
    writes. Before: its whole-item put (SEEN, no invoice - still true) put block 100 back, and finality then checked
    a block the payment is not in. Now the refund is one update of ``refund_tx`` alone: block 101 stays."""
    h = _stray_kept(stack)
    moved = replace(SIDE, block_number=101, block_hash="0xother")
    read_payment = h.store.payment
    rebased: list[bool] = []

    def payment_then_rebase(payment_id: str) -> Payment | None:
        found = read_payment(payment_id)
        if not rebased and found is not None and found.refund_tx is None:
            rebased.append(True)  # the refund has read it: the watcher's report of block 101 commits now
            h.settlement.record_seen(moved)
        return found

    h.store.payment = payment_then_rebase  # type: ignore[method-assign]
    h.settlement.refunded(PID, "sig-back")
    h.store.payment = read_payment  # type: ignore[method-assign]

    stored = _stored(h)
    assert rebased == [True]
    assert (stored.transfer.block_number, stored.transfer.block_hash) == (101, "0xother")
    assert (stored.status, stored.refund_tx) == (PaymentStatus.SEEN, "sig-back")


def test_given_a_refunded_payment_when_a_copy_without_the_refund_is_saved_then_the_store_refuses_it(
    stack: Stack,
) -> None:
    """The store's side of it: a write of a payment whose copy has no ``refund_tx`` is conditioned on the stored
    payment having none (ConflictError, nothing written); a copy carrying the refund is written."""
    h = _stray_kept(stack)
    stale = _stored(h)
    h.settlement.refunded(PID, "sig-back")
    with pytest.raises(ConflictError):
        h.store.save(SettlementChange(replace(stale, status=PaymentStatus.FINALIZED), PaymentStatus.SEEN))
    assert (_stored(h).status, _stored(h).refund_tx) == (PaymentStatus.SEEN, "sig-back")
    h.store.save(SettlementChange(replace(_stored(h), status=PaymentStatus.FINALIZED), PaymentStatus.SEEN))
    assert (_stored(h).status, _stored(h).refund_tx) == (PaymentStatus.FINALIZED, "sig-back")
    with pytest.raises(ConflictError):  # the refund itself: recorded once, never over another
        h.store.record_refund(replace(_stored(h), refund_tx="sig-other"), PaymentStatus.FINALIZED)
    assert _stored(h).refund_tx == "sig-back"


def _reminders_after(stack: Stack, atomic: int) -> int:
    """The $7.00 bill's 7 USDC quote (7,000,000 units, reference R1; made T0+1 min, expiring T0+31 min); a stray
    credit of ``atomic`` units with R1 seen at T0+5 min; at T0+20 min the 15-minute window reaches T0+35 min, past the
    expiry: the reminders ``announce_expiring`` sends."""
    h = harness(stack)
    h.clock.now = T0 + timedelta(minutes=5)
    assert h.store.create_bill(bill("inv-1", "acct-1", "7.00"))
    h.store.add_quote(quote("q-1", "USDC", 7_000_000, "1", chain="solana", amount_usd="7.00", reference="R1"))
    stray = transfer("sig-dust", "USDC", atomic, T0 + timedelta(minutes=4), chain="solana", references=("R1",))
    h.settlement.record_seen(replace(stray, stray=True))
    h.clock.now = T0 + timedelta(minutes=20)
    return h.settlement.announce_expiring("solana", timedelta(minutes=15))


def test_given_a_stray_credit_short_of_its_quote_then_the_quotes_reminder_is_still_sent(stack: Stack) -> None:
    """0.01 USDC = 10,000 units < the quote's 7,000,000 with its reference: nothing near the amount was paid - the
    "pay 7 USDC" reminder is sent (1; before: 0, any stray with the reference silenced it). 6,999,999 units (one unit
    short) too; the exact 7,000,000 units or more stop it (0)."""
    assert _reminders_after(stack, 10_000) == 1


@pytest.mark.parametrize(("atomic", "sent"), [(6_999_999, 1), (7_000_000, 0), (7_000_001, 0)])
def test_given_a_stray_credit_with_a_quotes_reference_then_its_reminder_stops_only_when_it_covers_the_amount(
    stack: Stack, atomic: int, sent: int
) -> None:
    """One unit short of 7,000,000: reminded (1); 7,000,000 exactly or one unit more: the customer paid it, into the
    wrong account - not asked to pay again (0)."""
    assert _reminders_after(stack, atomic) == sent


def test_given_a_refunded_evm_payment_re_mined_at_another_log_index_then_the_new_id_keeps_the_refund(
    stack: Stack,
) -> None:
    """100 USDC (100,000,000 units) from a wallet nobody linked, unattributed at log index 0 of 0xabc (block 100),
    refunded by 0xback; block 100 reorged away (ORPHANED), the transaction re-mined in block 105 with its log at index
    3: a new payment id. Before: a new unattributed payment - listed again, alerted a second time (2) and assignable
    (bill PROCESSING on 100.00 sent back). Now it carries the refund (as ``_moved_from`` carries a bill): SEEN with
    0xback, off the list, one alert in all, assign and the customer's claim refused, bill OPEN with no line."""
    h = harness(stack)
    assert h.store.create_bill(bill())
    h.store.add_quote(quote("q-usdc", "USDC", 100_000_000, "1"))
    h.clock.now = T0 + timedelta(minutes=5)
    first = transfer("0xabc", "USDC", 100_000_000, T0 + timedelta(minutes=4), sender=STRANGER_WALLET)
    h.settlement.record_seen(first)
    h.settlement.refunded(first.payment_id, "0xback")
    h.settlement.orphaned(first.payment_id, "0xblock")
    again = replace(first, index=3, block_number=105, block_hash="0xnew")
    with pytest.raises(ClaimRefusedError, match="refunded by 0xback"):
        h.settlement.check_claim(again, "inv-1")
    h.settlement.record_seen(again)

    carried = _stored(h, "ethereum:0xabc:3")
    assert (carried.status, carried.refund_tx, carried.invoice_id) == (PaymentStatus.SEEN, "0xback", None)
    assert h.store.unattributed() == []
    assert len(h.events("UnattributedCryptoPayment.v1")) == 1
    with pytest.raises(NotAssignableError, match="refunded by 0xback"):
        h.settlement.assign("ethereum:0xabc:3", "acct-1", "inv-1")
    with pytest.raises(ClaimRefusedError, match="refunded by 0xback"):
        h.settlement.record(again, claimed_for="inv-1")
    after = h.store.bill("inv-1")
    assert after is not None
    assert (after.status, after.payments) == (BillStatus.OPEN, ())
