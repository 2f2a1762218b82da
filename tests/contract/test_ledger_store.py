"""One contract, two implementations of invoicing's ledger (``kilo_billing.invoicing.LedgerStore``): the in-memory
fake and DynamoDB (moto, the template's usage table). Rating's side is written the way rating writes it (counters
ADDed to ``ACCOUNT#<a>``/``PERIOD#<p>``), so the fence is checked against the real item."""

from __future__ import annotations

from dataclasses import replace
from decimal import Decimal
from typing import Any

import pytest

from kilo_billing import invoicing
from kilo_billing.accounts import AccountProfile
from kilo_billing.catalog import default_catalog
from kilo_billing.invoicing import (
    CreditMove,
    InvoiceStatus,
    LedgerConflictError,
    RefundRequest,
    compose_close,
    lowered_ahead,
)
from kilo_billing.items import to_item
from kilo_billing.periods import Period
from kilo_billing.rating import TierChange
from kilo_invoice.logic import close_account
from kilo_invoice.model import CloseDeps
from tests.conftest import Stack, count_calls
from tests.contract.ledger_harness import MAR, SEG, START, Ledger, _Bus, _draft, _dynamo, _team
from tests.payment_fakes import InMemoryPaymentGateway


def test_given_rated_usage_when_closed_then_the_invoice_and_watermark_read_back(ledger: Ledger) -> None:
    ledger.register(_team("acme"))
    ledger.rate("acme", "2026-03", SEG, "video", 60_000)
    draft = _draft(ledger.store.ledger("acme"))
    ledger.store.create_invoice(draft)
    found = ledger.store.ledger("acme")
    assert found.invoices == {"acme/2026-03": draft.invoice}
    assert found.invoices["acme/2026-03"].total == Decimal("65.20")
    march = found.periods["2026-03"]
    assert (march.invoiced, dict(march.billed), march.unbilled) == (True, {(SEG, "video"): 60_000}, {})
    assert (found.billing.seq, found.billing.credit) == (1, Decimal("0.00"))


def test_given_a_close_when_written_again_then_refused_and_nothing_changes(ledger: Ledger) -> None:
    ledger.register(_team("acme"))
    draft = _draft(ledger.store.ledger("acme"))
    ledger.store.create_invoice(draft)
    before = ledger.store.ledger("acme")
    with pytest.raises(LedgerConflictError):
        ledger.store.create_invoice(draft)
    assert ledger.store.ledger("acme") == before


def test_given_rating_adds_after_the_read_then_the_close_still_lands_and_the_rest_is_unbilled(ledger: Ledger) -> None:
    ledger.register(_team("acme"))
    ledger.rate("acme", "2026-03", SEG, "video", 100)
    draft = _draft(ledger.store.ledger("acme"))
    ledger.rate("acme", "2026-03", SEG, "video", 7)  # rating commits between the read and the close's transaction
    ledger.store.create_invoice(draft)
    march = ledger.store.ledger("acme").periods["2026-03"]
    assert march.counters == {(SEG, "video"): 107}
    assert march.unbilled == {(SEG, "video"): 7}


def test_given_a_stale_watermark_revision_then_the_close_is_refused(ledger: Ledger) -> None:
    ledger.register(_team("acme"))
    draft = _draft(ledger.store.ledger("acme"))
    stale = replace(draft, watermarks=tuple(replace(m, rev=3) for m in draft.watermarks))
    with pytest.raises(LedgerConflictError):
        ledger.store.create_invoice(stale)
    assert ledger.store.ledger("acme").invoices == {}


def test_given_an_invoice_then_updates_need_the_status_read_and_gateway_ids_find_it(ledger: Ledger) -> None:
    ledger.register(_team("acme"))
    draft = _draft(ledger.store.ledger("acme"))
    ledger.store.create_invoice(draft)
    opened = replace(draft.invoice.moved(InvoiceStatus.OPEN, MAR.end), gateway_id="in_1", gateway_refs=("ch_1",))
    with pytest.raises(LedgerConflictError):
        ledger.store.update_invoice(opened, InvoiceStatus.OPEN)
    stored = ledger.store.update_invoice(opened, InvoiceStatus.DRAFT)
    assert stored == replace(opened, revision=1)  # every write adds one to the revision
    assert ledger.store.ledger("acme").invoices["acme/2026-03"] == stored
    assert ledger.store.invoice_for_gateway("in_1") == ("acme", "acme/2026-03")
    assert ledger.store.invoice_for_gateway("ch_1") == ("acme", "acme/2026-03")
    assert ledger.store.invoice_for_gateway("in_2") is None


def _paid_with_a_refund_pending(ledger: Ledger, requested: int, **fields: Any) -> Any:
    """acme on Team, no usage: March's draft written and opened as Stripe's ``in_1`` (stored); returned PAID by
    ``pi_1`` (not stored) with refund ``requested`` pending - 5.00, 10.00 refunded before it, 2.50 failed before it -
    and the caller's ``fields``."""
    ledger.register(_team("acme"))
    draft = _draft(ledger.store.ledger("acme"))
    ledger.store.create_invoice(draft)
    opened = replace(draft.invoice.moved(InvoiceStatus.OPEN, MAR.end), gateway_id="in_1")
    opened = ledger.store.update_invoice(opened, InvoiceStatus.DRAFT)
    pending = RefundRequest(f"acme/2026-03/refund/{requested}", Decimal("5.00"), Decimal("10.00"), Decimal("2.50"))
    return replace(
        opened.moved(InvoiceStatus.PAID, MAR.end),
        gateway_refs=("pi_1",),
        refunds_requested=requested,
        refund_pending=pending,
        **fields,
    )


def test_given_a_paid_invoice_then_its_payments_refund_request_and_chargeback_read_back(ledger: Ledger) -> None:
    paid = _paid_with_a_refund_pending(ledger, 2, refunded=Decimal("10.00"), charged_back=Decimal("20.50"))
    paid = ledger.store.update_invoice(paid, InvoiceStatus.OPEN)
    assert ledger.store.ledger("acme").invoices["acme/2026-03"] == paid
    assert ledger.store.invoice_for_gateway("pi_1") == ("acme", "acme/2026-03")
    finished = replace(paid, refund_pending=None, refunded=Decimal("15.00"))
    finished = ledger.store.update_invoice(finished, InvoiceStatus.PAID)
    assert ledger.store.ledger("acme").invoices["acme/2026-03"] == finished


def test_given_billing_details_then_they_read_back_and_accounts_are_listed(ledger: Ledger) -> None:
    ledger.register(_team("acme"))
    ledger.register(_team("beta"))
    ledger.rate("gamma", "2026-03", SEG, "video", 1)  # usage without a profile is not an account to invoice
    ledger.store.save_billing("acme", customer_id="cus_1", disputed=True, card_on_file=True)
    billing = ledger.store.ledger("acme").billing
    assert (billing.customer_id, billing.disputed, billing.card_on_file) == ("cus_1", True, True)
    assert sorted(ledger.store.accounts()) == ["acme", "beta"]


def test_given_a_spend_item_stored_with_an_account_id_then_the_account_is_listed_once(stack: Stack) -> None:
    """D430: the alerts' spend reading used to set `account_id` on the account's spend item (`ENTITLEMENT`), the
    `accounts` index's key: the index then held the account twice, and the close's fan-out queued it twice, the
    revenue report counted it twice. The reading no longer writes it; items written before keep it, so the listing
    names each account once (before: `["acme", "acme"]`)."""
    world = _dynamo(stack)
    world.register(_team("acme"))
    table = stack.template.physical_name("UsageTable")
    spend = {"pk": "ACCOUNT#acme", "sk": "ENTITLEMENT", "account_id": "acme", "spend": {"period": "2026-03"}}
    stack.clients["dynamodb"].put_item(TableName=table, Item=to_item(spend))  # as the old reading stored it
    assert list(world.store.accounts()) == ["acme"]


def test_given_one_billing_field_saved_then_the_others_are_left_as_stored(ledger: Ledger) -> None:
    ledger.register(_team("acme"))
    ledger.store.save_billing("acme", customer_id="cus_1", disputed=True, card_on_file=True)
    ledger.store.save_billing("acme", customer_id="cus_2")  # the close's write: the flags stay as stored
    ledger.store.save_billing("acme", disputed=False)
    billing = ledger.store.ledger("acme").billing
    assert (billing.customer_id, billing.disputed, billing.card_on_file) == ("cus_2", False, True)


def test_given_dynamodb_then_one_close_costs_two_reads_and_three_writes(stack: Stack) -> None:
    world = _dynamo(stack)
    world.register(_team("acme"))
    world.rate("acme", "2026-03", SEG, "video", 60_000)
    counter = count_calls(stack.clients["dynamodb"])
    gateway = InMemoryPaymentGateway()
    deps = CloseDeps(world.store, gateway, _Bus(), default_catalog(), lambda _s: None)
    outcome = close_account(deps, "acme", MAR, MAR.end)
    assert outcome.invoice is not None
    assert outcome.invoice.status is InvoiceStatus.OPEN
    # reads: the account's ledger (one Query); writes: the close (one transaction), the customer id (one update),
    # the invoice opened (one transaction), the "issued" announcement recorded (one transaction)
    assert counter.calls == ["Query", "TransactWriteItems", "UpdateItem", "TransactWriteItems", "TransactWriteItems"]
    counter.calls.clear()
    close_account(deps, "acme", MAR, MAR.end)  # a rerun of a finished close reads once and writes nothing
    assert counter.calls == ["Query"]


def test_given_a_crypto_profile_then_the_ledger_bills_it_as_crypto(ledger: Ledger) -> None:
    from kilo_billing.invoicing import BillingMethod  # noqa: PLC0415

    ledger.register(AccountProfile("coin", (TierChange(START, "team"),), billing_method="crypto"))
    ledger.register(_team("card"))
    assert ledger.store.ledger("coin").method is BillingMethod.CRYPTO
    assert ledger.store.ledger("card").method is BillingMethod.CARD


def _opened(ledger: Ledger) -> Any:
    """acme's March invoice (65.20), closed and opened: what a crypto settlement finds."""
    ledger.register(_team("acme"))
    ledger.rate("acme", "2026-03", SEG, "video", 60_000)
    draft = _draft(ledger.store.ledger("acme"))
    ledger.store.create_invoice(draft)
    return ledger.store.update_invoice(draft.invoice.moved(InvoiceStatus.OPEN, MAR.end), InvoiceStatus.DRAFT)


def _april_note(ledger: Ledger) -> Any:
    """acme's March invoice opened (65.20), then 5,000 of its minutes withdrawn: April's close, written, holds the one
    credit note on March (its steps are what the tests move)."""
    _opened(ledger)
    ledger.rate("acme", "2026-03", SEG, "video", -5_000)
    april = Period(2026, 4)
    draft = compose_close(ledger.store.ledger("acme"), april, default_catalog(), april.end)
    assert draft is not None
    ledger.store.create_invoice(draft)
    [note] = draft.credit_notes
    return note


def test_given_an_overpaid_invoice_then_paid_and_credit_land_together_and_a_stale_credit_writes_nothing(
    ledger: Ledger,
) -> None:
    opened = _opened(ledger)
    paid = replace(opened.moved(InvoiceStatus.PAID, MAR.end), crypto_credit=Decimal("4.80"))
    before = ledger.store.ledger("acme")
    with pytest.raises(LedgerConflictError):  # the caller read a credit that is not the stored one
        ledger.store.update_invoice_with_credit(paid, InvoiceStatus.OPEN, Decimal("1.00"), Decimal("4.80"))
    with pytest.raises(LedgerConflictError):  # the status moved: the credit is not added either
        ledger.store.update_invoice_with_credit(paid, InvoiceStatus.DRAFT, Decimal("0.00"), Decimal("4.80"))
    assert ledger.store.ledger("acme") == before
    paid = ledger.store.update_invoice_with_credit(paid, InvoiceStatus.OPEN, Decimal("0.00"), Decimal("4.80"))
    found = ledger.store.ledger("acme")
    assert found.invoices["acme/2026-03"].status is InvoiceStatus.PAID
    assert (found.billing.seq, found.billing.credit) == (1, Decimal("4.80"))
    # a second credit (the bill's credit grew by 0.35) adds to the one stored, read first
    more = replace(paid, crypto_credit=Decimal("5.15"))
    ledger.store.update_invoice_with_credit(more, InvoiceStatus.PAID, Decimal("4.80"), Decimal("0.35"))
    assert ledger.store.ledger("acme").billing.credit == Decimal("5.15")


def test_given_a_writer_holding_an_older_copy_then_it_cannot_put_back_a_smaller_crypto_credit(ledger: Ledger) -> None:
    """A refund or marker written from a copy read before a credit event must not reset the invoice's crypto credit
    (the next credit event would add the difference again): it conflicts and re-reads."""
    opened = _opened(ledger)
    paid = opened.moved(InvoiceStatus.PAID, MAR.end)
    ledger.store.update_invoice(paid, InvoiceStatus.OPEN)
    stale = ledger.store.ledger("acme").invoices["acme/2026-03"]  # read: crypto credit 0.00
    credited = replace(stale, crypto_credit=Decimal("10.00"))
    ledger.store.update_invoice_with_credit(credited, InvoiceStatus.PAID, Decimal("0.00"), Decimal("10.00"))
    with pytest.raises(LedgerConflictError):
        ledger.store.update_invoice(replace(stale, refund_owed=Decimal("1.00")), InvoiceStatus.PAID)
    with pytest.raises(LedgerConflictError):  # and a credit computed from the old copy is refused too
        ledger.store.update_invoice_with_credit(credited, InvoiceStatus.PAID, Decimal("10.00"), Decimal("10.00"))
    fresh = ledger.store.ledger("acme")
    assert fresh.invoices["acme/2026-03"].crypto_credit == Decimal("10.00")
    assert fresh.billing.credit == Decimal("10.00")
    ledger.store.update_invoice(
        replace(fresh.invoices["acme/2026-03"], refund_owed=Decimal("1.00")), InvoiceStatus.PAID
    )
    assert ledger.store.ledger("acme").invoices["acme/2026-03"].refund_owed == Decimal("1.00")


def test_given_a_credit_added_after_the_close_read_then_the_close_conflicts_and_nothing_is_overwritten(
    ledger: Ledger,
) -> None:
    opened = _opened(ledger)
    april = Period(2026, 4)
    stale = compose_close(ledger.store.ledger("acme"), april, default_catalog(), april.end)
    assert stale is not None
    assert stale.credit == Decimal("0.00")
    paid = replace(opened.moved(InvoiceStatus.PAID, MAR.end), crypto_credit=Decimal("4.80"))  # lands in between
    ledger.store.update_invoice_with_credit(paid, InvoiceStatus.OPEN, Decimal("0.00"), Decimal("4.80"))
    with pytest.raises(LedgerConflictError):
        ledger.store.create_invoice(stale)
    assert "acme/2026-04" not in ledger.store.ledger("acme").invoices
    fresh = compose_close(ledger.store.ledger("acme"), april, default_catalog(), april.end)
    assert fresh is not None
    ledger.store.create_invoice(fresh)
    found = ledger.store.ledger("acme")
    # April: usage 0.00, fee true-up 29.00 - 29.00 in advance, May's fee 29.00; credit 4.80 applied -> 24.20
    assert found.invoices["acme/2026-04"].total == Decimal("24.20")
    assert [ln.amount for ln in found.invoices["acme/2026-04"].lines if ln.kind == "credit"] == [Decimal("-4.80")]
    assert found.billing.credit == Decimal("0.00")


def _paid(ledger: Ledger) -> Any:
    """acme's March invoice, closed, opened and paid (revision 2)."""
    return ledger.store.update_invoice(_opened(ledger).moved(InvoiceStatus.PAID, MAR.end), InvoiceStatus.OPEN)


def test_given_two_writers_that_read_the_same_paid_invoice_then_the_second_conflicts_and_nothing_is_lost(
    ledger: Ledger,
) -> None:
    """A refund's webhook and a dispute's (or the close's rerun) read the invoice at the same status: the one that
    writes second held a copy without the first's change and must not put it back - it conflicts, re-reads and
    writes its change on top."""
    _paid(ledger)
    refund_read = ledger.store.ledger("acme").invoices["acme/2026-03"]
    dispute_read = ledger.store.ledger("acme").invoices["acme/2026-03"]
    assert refund_read.revision == dispute_read.revision == 2
    ledger.store.update_invoice(replace(refund_read, refunded=Decimal("10.00")), InvoiceStatus.PAID)
    with pytest.raises(LedgerConflictError):  # same status read, older revision: refused, nothing written
        ledger.store.update_invoice(replace(dispute_read, disputed=True), InvoiceStatus.PAID)
    stored = ledger.store.ledger("acme").invoices["acme/2026-03"]
    assert (stored.refunded, stored.disputed, stored.revision) == (Decimal("10.00"), False, 3)
    ledger.store.update_invoice(replace(stored, disputed=True), InvoiceStatus.PAID)  # re-read, re-applied
    both = ledger.store.ledger("acme").invoices["acme/2026-03"]
    assert (both.refunded, both.disputed, both.revision) == (Decimal("10.00"), True, 4)


def test_given_an_invoice_written_before_revisions_then_it_reads_as_revision_0_and_is_fenced_from_then_on(
    stack: Stack,
) -> None:
    """Records written before revisions carry no ``revision`` attribute: the first update may write them (revision
    0 read), and a second writer holding the same old copy is refused."""
    ledger = _dynamo(stack)
    _paid(ledger)
    table = stack.template.physical_name("UsageTable")
    stack.clients["dynamodb"].update_item(  # as an item written before this change: no revision attribute
        TableName=table,
        Key=to_item({"pk": "ACCOUNT#acme", "sk": "INVOICE#2026-03"}),
        UpdateExpression="REMOVE #rev",
        ExpressionAttributeNames={"#rev": "revision"},
    )
    old = ledger.store.ledger("acme").invoices["acme/2026-03"]
    assert old.revision == 0
    written = ledger.store.update_invoice(replace(old, refunded=Decimal("10.00")), InvoiceStatus.PAID)
    assert written.revision == 1
    with pytest.raises(LedgerConflictError):
        ledger.store.update_invoice(replace(old, disputed=True), InvoiceStatus.PAID)
    assert ledger.store.ledger("acme").invoices["acme/2026-03"] == written


def test_given_negative_late_usage_then_the_credit_note_lands_with_the_close_once_and_reads_back(
    ledger: Ledger,
) -> None:
    opened = replace(_opened(ledger), gateway_id="in_1")  # March: 65.20, open at the processor
    ledger.store.update_invoice(opened, InvoiceStatus.OPEN)
    ledger.rate("acme", "2026-03", SEG, "video", -5_000)  # 60,000 -> 55,000: 7.20 -> 3.60, -3.60
    april = Period(2026, 4)
    draft = compose_close(ledger.store.ledger("acme"), april, default_catalog(), april.end)
    assert draft is not None
    [note] = draft.credit_notes
    assert (note.credit_id, note.invoice_id, note.to_due, note.to_credit) == (
        "acme/2026-03/credit-2026-04",
        opened.invoice_id,
        Decimal("3.60"),
        Decimal("0.00"),
    )
    ledger.store.create_invoice(draft)
    found = ledger.store.ledger("acme")
    assert found.credit_notes == {note.credit_id: note}  # every field, lines included, through the stored form
    assert found.periods["2026-03"].unbilled == {}
    again = replace(draft, invoice=replace(draft.invoice, invoice_id="acme/2026-04/other"))
    with pytest.raises(LedgerConflictError):  # the same note twice: refused, nothing written
        ledger.store.create_invoice(again)
    assert ledger.store.ledger("acme") == found


def test_given_a_credit_note_then_each_step_needs_the_version_read_and_moves_credit_with_it(ledger: Ledger) -> None:
    note = _april_note(ledger)
    moved = replace(
        note,
        version=2,
        to_due=Decimal("0.00"),
        to_credit=Decimal("2.20"),
        returned=Decimal("1.40"),
        out_of_band=True,
        asked_on="in_1",  # the Stripe invoice its reduction was asked on: read back (D344 amended, review i)
        history=(("x", "t"),),
    )
    with pytest.raises(LedgerConflictError):  # the account credit read is not the stored one: nothing written
        ledger.store.update_credit_note(moved, Decimal("1.00"), Decimal("3.60"))
    assert ledger.store.ledger("acme").credit_notes[note.credit_id] == note
    ledger.store.update_credit_note(moved, Decimal("0.00"), Decimal("3.60"))
    found = ledger.store.ledger("acme")
    assert found.credit_notes[note.credit_id] == moved  # ``returned`` included
    assert found.billing.credit == Decimal("3.60")
    with pytest.raises(LedgerConflictError):  # a step from the old version (another run took it first)
        ledger.store.update_credit_note(replace(note, version=2, gateway_note_id="cn_1"))
    done = replace(moved, version=3, gateway_note_id="cn_1")
    ledger.store.update_credit_note(done)
    assert ledger.store.ledger("acme").credit_notes[note.credit_id].gateway_note_id == "cn_1"
    assert ledger.store.ledger("acme").billing.credit == Decimal("3.60")


def test_given_an_invoice_voided_then_its_credit_comes_back_with_the_status_once(ledger: Ledger) -> None:
    opened = _opened(ledger)
    void = opened.moved(InvoiceStatus.VOID, MAR.end)
    with pytest.raises(LedgerConflictError):  # a stale credit read: neither the status nor the credit moves
        ledger.store.update_invoice_and_credit(void, InvoiceStatus.OPEN, CreditMove(Decimal("2.00"), Decimal("10.00")))
    assert ledger.store.ledger("acme").invoices[opened.invoice_id].status is InvoiceStatus.OPEN
    ledger.store.update_invoice_and_credit(void, InvoiceStatus.OPEN, CreditMove(Decimal("0.00"), Decimal("10.00")))
    found = ledger.store.ledger("acme")
    assert found.invoices[opened.invoice_id].status is InvoiceStatus.VOID
    assert found.billing.credit == Decimal("10.00")
    with pytest.raises(LedgerConflictError):  # once: the status read is no longer open
        ledger.store.update_invoice_and_credit(void, InvoiceStatus.OPEN, CreditMove(Decimal("10.00"), Decimal("10.00")))
    assert ledger.store.ledger("acme").billing.credit == Decimal("10.00")


def test_given_an_invoice_update_with_credit_notes_then_all_land_together_over_the_versions_read_or_none(
    ledger: Ledger,
) -> None:
    """A dispute's funds reinstated: the invoice, the notes that credit again and the account credit, one write."""
    note = _april_note(ledger)
    march = ledger.store.ledger("acme").invoices["acme/2026-03"]
    credit = ledger.store.ledger("acme").billing.credit
    marked = replace(march, announced=frozenset({"dispute_reinstated:dp_1"}))
    again = replace(note, version=2, to_credit=note.to_credit + Decimal("1.00"), history=(("kept again", "t"),))
    stale = replace(again, version=3)  # not over the stored version 1
    with pytest.raises(LedgerConflictError):  # nothing written: not the invoice, not the credit
        ledger.store.update_invoice_and_credit(marked, march.status, CreditMove(credit, Decimal("1.00"), (stale,)))
    assert ledger.store.ledger("acme").invoices["acme/2026-03"] == march
    assert ledger.store.ledger("acme").billing.credit == credit
    written = ledger.store.update_invoice_and_credit(
        marked, march.status, CreditMove(credit, Decimal("1.00"), (again,))
    )
    found = ledger.store.ledger("acme")
    assert found.invoices["acme/2026-03"] == written
    assert found.credit_notes[note.credit_id] == again
    assert found.billing.credit == credit + Decimal("1.00")
    with pytest.raises(LedgerConflictError):  # once: the note's version read is gone
        ledger.store.update_invoice_and_credit(written, march.status, CreditMove(credit + 1, Decimal("1.00"), (again,)))
    assert ledger.store.ledger("acme").billing.credit == credit + Decimal("1.00")


def test_given_notes_reinstated_on_the_refunds_read_then_a_refund_since_refuses_them_and_they_move_the_fence(
    ledger: Ledger,
) -> None:
    """A dispute's funds reinstated into notes (D308): the write needs the account's ``refund_rev`` read. A
    refund recorded since (``refund_rev`` 0 -> 1) refuses it, nothing written; on the current one it lands and adds
    one (1 -> 2), so a close or refund that read 1 composes or bounds again."""
    note = _april_note(ledger)
    read = ledger.store.ledger("acme")
    march, credit = read.invoices["acme/2026-03"], read.billing.credit
    assert read.billing.refund_rev == 0
    ledger.store.update_invoice(  # a refund of April lands after the read: refund_rev 1
        read.invoices["acme/2026-04"], read.invoices["acme/2026-04"].status, read.billing.seq
    )
    marked = replace(march, announced=frozenset({"dispute_reinstated:dp_1"}))
    again = replace(note, version=2, to_credit=note.to_credit + Decimal("1.00"), history=(("kept again", "t"),))
    with pytest.raises(LedgerConflictError):
        ledger.store.update_invoice_and_credit(marked, march.status, CreditMove(credit, Decimal("1.00"), (again,), 0))
    found = ledger.store.ledger("acme")
    assert (found.invoices["acme/2026-03"], found.credit_notes[note.credit_id]) == (march, note)
    assert (found.billing.credit, found.billing.refund_rev) == (credit, 1)
    ledger.store.update_invoice_and_credit(marked, march.status, CreditMove(credit, Decimal("1.00"), (again,), 1))
    found = ledger.store.ledger("acme")
    assert found.credit_notes[note.credit_id] == again
    assert (found.billing.credit, found.billing.refund_rev) == (credit + Decimal("1.00"), 2)


def test_given_notes_credited_again_on_the_sequence_read_then_a_close_since_refuses_them(ledger: Ledger) -> None:
    """Notes credited again (a late payment, D339 amended): the write needs the account's invoice sequence
    read with the notes. April's close wrote seq 2 (March 1, April 2); a move read at seq 1 - before a close that may
    have written a note it did not see - is refused, nothing written (invoice, note, credit, ``refund_rev``); on the
    current sequence (2) it lands, the sequence left as it is."""
    note = _april_note(ledger)
    read = ledger.store.ledger("acme")
    march, credit = read.invoices["acme/2026-03"], read.billing.credit
    assert read.billing.seq == 2
    marked = replace(march, announced=frozenset({"paid_late"}))
    again = replace(note, version=2, to_credit=note.to_credit + Decimal("1.00"), history=(("collected since", "t"),))
    with pytest.raises(LedgerConflictError):
        ledger.store.update_invoice_and_credit(
            marked, march.status, CreditMove(credit, Decimal("1.00"), (again,), 0, seq_read=1)
        )
    found = ledger.store.ledger("acme")
    assert (found.invoices["acme/2026-03"], found.credit_notes[note.credit_id]) == (march, note)
    assert (found.billing.credit, found.billing.refund_rev, found.billing.seq) == (credit, 0, 2)
    ledger.store.update_invoice_and_credit(
        marked, march.status, CreditMove(credit, Decimal("1.00"), (again,), 0, seq_read=2)
    )
    found = ledger.store.ledger("acme")
    assert found.credit_notes[note.credit_id] == again
    assert (found.billing.credit, found.billing.refund_rev, found.billing.seq) == (credit + Decimal("1.00"), 1, 2)


def test_given_a_void_that_takes_back_more_credit_than_is_left_then_the_credit_is_stored_below_zero(
    ledger: Ledger,
) -> None:
    opened = _opened(ledger)
    void = opened.moved(InvoiceStatus.VOID, MAR.end)
    ledger.store.update_invoice_and_credit(void, InvoiceStatus.OPEN, CreditMove(Decimal("0.00"), Decimal("-0.94")))
    assert ledger.store.ledger("acme").billing.credit == Decimal("-0.94")  # billed by the next invoice (D132)


@pytest.mark.parametrize(
    ("credit_read", "added", "named"),
    [
        (Decimal("0.00"), Decimal("0.005"), "added 0.005"),
        (Decimal("0.001"), Decimal("1.00"), "credit_read 0.001"),
        (Decimal("0.00"), Decimal("NaN"), "added NaN"),
    ],
)
def test_given_a_credit_move_not_in_whole_cents_when_any_writer_passes_it_then_refused_naming_it_and_nothing_written(
    ledger: Ledger, credit_read: Decimal, added: Decimal, named: str
) -> None:
    """The ledger stores credit in whole cents (D265): each of the three writes that move the account's credit
    (a crypto overpayment, a void or a dispute's funds reinstated, a credit note's step) refuses a sub-cent amount."""
    opened = _opened(ledger)
    ledger.rate("acme", "2026-03", SEG, "video", -5_000)
    april = Period(2026, 4)
    draft = compose_close(ledger.store.ledger("acme"), april, default_catalog(), april.end)
    assert draft is not None
    ledger.store.create_invoice(draft)
    [note] = draft.credit_notes
    before = ledger.store.ledger("acme")
    paid = replace(before.invoices[opened.invoice_id].moved(InvoiceStatus.PAID, MAR.end), crypto_credit=added)
    with pytest.raises(ValueError, match=f"not whole cents: {named}"):
        ledger.store.update_invoice_with_credit(paid, InvoiceStatus.OPEN, credit_read, added)
    with pytest.raises(ValueError, match=f"not whole cents: {named}"):  # a void's or a dispute's move: built first
        CreditMove(credit_read, added)
    with pytest.raises(ValueError, match=f"not whole cents: {named}"):
        ledger.store.update_credit_note(replace(note, version=2), credit_read, added)
    assert ledger.store.ledger("acme") == before


def test_given_a_close_with_a_credit_note_then_it_needs_the_credited_invoice_as_read_and_moves_its_revision(
    ledger: Ledger,
) -> None:
    opened = ledger.store.update_invoice(replace(_opened(ledger), gateway_id="in_1"), InvoiceStatus.OPEN)
    assert opened.revision == 2  # opened, then given its processor id
    ledger.rate("acme", "2026-03", SEG, "video", -5_000)
    april = Period(2026, 4)
    draft = compose_close(ledger.store.ledger("acme"), april, default_catalog(), april.end)
    assert draft is not None
    assert draft.credited == (("acme/2026-03", 2),)
    before = ledger.store.ledger("acme")
    with pytest.raises(LedgerConflictError):  # March written since it was read: nothing of the close lands
        ledger.store.create_invoice(replace(draft, credited=(("acme/2026-03", 1),)))
    assert ledger.store.ledger("acme") == before
    ledger.store.create_invoice(draft)
    march = ledger.store.ledger("acme").invoices["acme/2026-03"]
    assert march == replace(opened, revision=3)  # only the revision moved
    with pytest.raises(LedgerConflictError):  # a writer holding March as read before the note must re-read it
        ledger.store.update_invoice(opened.moved(InvoiceStatus.VOID, MAR.end), InvoiceStatus.OPEN)


def test_given_a_crypto_invoice_paid_with_a_write_off_then_the_write_off_is_stored_with_it(ledger: Ledger) -> None:
    """D289: what settlement wrote off is read back as written (not refundable)."""
    opened = _opened(ledger)
    paid = replace(opened.moved(InvoiceStatus.PAID, MAR.end), written_off=Decimal("0.29"))

    ledger.store.update_invoice(paid, InvoiceStatus.OPEN)

    assert ledger.store.ledger("acme").invoices["acme/2026-03"].written_off == Decimal("0.29")


def test_given_a_reduction_lowered_ahead_when_the_usage_comes_back_then_the_next_close_bills_it_again_once(
    ledger: Ledger, monkeypatch: pytest.MonkeyPatch
) -> None:
    """D314/3 through the stored form. March 65.20 open; 10,000 late minutes billed on April (7.20 late), open.
    They go away (-7.20) with the budget at 5 items: May lowers April 7.20 ahead (invoice + billing + May's watermark
    + the note + April's revision = 5), March's note and watermark wait. They come back before June: June bills the
    7.20 again (one line, no meter), and, read back, nothing is lowered ahead any more: July bills no late usage."""
    opened = ledger.store.update_invoice(replace(_opened(ledger), gateway_id="in_1"), InvoiceStatus.OPEN)
    ledger.rate("acme", "2026-03", SEG, "video", 10_000)
    april, may, june, july = (Period(2026, month) for month in (4, 5, 6, 7))

    def close(period: Period) -> Any:
        draft = compose_close(ledger.store.ledger("acme"), period, default_catalog(), period.end)
        assert draft is not None
        ledger.store.create_invoice(draft)
        return draft

    late = close(april).invoice
    assert [line.amount for line in late.lines if line.kind == "adjustment"] == [Decimal("7.20")]
    late = ledger.store.update_invoice(late.moved(InvoiceStatus.OPEN, april.end), InvoiceStatus.DRAFT)
    ledger.store.update_invoice(replace(late, gateway_id="in_2"), InvoiceStatus.OPEN)
    ledger.rate("acme", "2026-03", SEG, "video", -10_000)
    monkeypatch.setattr(invoicing, "MAX_TRANSACTION_ITEMS", 5)
    [ahead] = close(may).credit_notes
    assert (ahead.invoice_id, ahead.to_due, ahead.lines) == (late.invoice_id, Decimal("7.20"), ())
    found = ledger.store.ledger("acme")
    assert found.credit_notes == {ahead.credit_id: ahead}
    assert (lowered_ahead(found, "2026-03"), found.invoices[opened.invoice_id].revision) == (Decimal("7.20"), 2)
    monkeypatch.setattr(invoicing, "MAX_TRANSACTION_ITEMS", 100)

    ledger.rate("acme", "2026-03", SEG, "video", 10_000)
    billed = close(june).invoice
    again = [line for line in billed.lines if line.kind == "adjustment"]
    assert [(line.period, line.amount, line.meter) for line in again] == [("2026-03", Decimal("7.20"), None)]
    found = ledger.store.ledger("acme")
    assert found.invoices[billed.invoice_id] == billed  # the line, through the stored form
    assert (lowered_ahead(found, "2026-03"), found.periods["2026-03"].unbilled) == (Decimal("0.00"), {})
    assert not [line for line in close(july).invoice.lines if line.kind == "adjustment"]


def test_given_an_invoice_with_every_refund_record_then_each_is_read_back_as_written(ledger: Ledger) -> None:
    """Every field the refund, shortfall and failure records added to an invoice (D331, D340, D344), with a
    ``shortfall:`` entry among the outside refunds, reads back equal from the fake and from DynamoDB."""
    paid = _paid_with_a_refund_pending(
        ledger,
        1,
        outside_refunds=(("re_d", Decimal("3.00")), ("shortfall:in_1", Decimal("10.00"))),
        charge_refunds=(("ch_1", Decimal("8.00")),),
        failed_refunds=(("re_d", Decimal("3.00")), ("re_x", Decimal("1.00"))),
        charge_refunds_at=(("ch_1", 1775000000),),
        failed_refunds_at=(("re_d", ("ch_1", 1774999999)), ("re_x", ("", 0))),
        refunded=Decimal("10.00"),
        refunds_made=Decimal("4.00"),
        void_reason="why not",
    )
    paid = ledger.store.update_invoice(paid, InvoiceStatus.OPEN)
    assert ledger.store.ledger("acme").invoices["acme/2026-03"] == paid
    assert paid.short_paid == Decimal("10.00")
