"""Stripe invoices other than the one we recorded (D343): a revision made in Stripe's dashboard ("Edit
invoice": a new invoice whose ``from_invoice`` names ours, ours voided with ``latest_revision`` naming it) is the one
ours follows; a duplicate or any other invoice carrying our metadata is never applied to ours, it is said to the
operator. Given/When/Then, Stripe's published invoice fixture with this story's ids and amounts laid over it."""

from __future__ import annotations

from dataclasses import replace
from decimal import Decimal
from typing import Any

import pytest

from kilo_billing.invoicing import BillingState, CreditNoteStatus, InvoiceStatus
from kilo_billing.money import ZERO
from kilo_invoice import logic
from kilo_invoice.logic import close_account, refund_invoice
from kilo_invoice.model import CloseOutcome
from kilo_invoice.ports import GatewayMisconfiguredError, GatewayUnavailableError
from tests.scenarios.test_card_payment_events import Events, _apply, _charge, _dispute, _fixture
from tests.scenarios.test_invoicing import APR, MAR, MAY, World, at, seg, team_with_march_overage

META = {"invoice_id": "acme/2026-03", "kilo_invoice_id": "acme/2026-03", "account_id": "acme"}


def _with_credit() -> World:
    """acme on Team by card, 10.00 account credit, 60,000 March video minutes: 29.00 (March) + 7.20 (10,000 over x
    0.00072) + 29.00 (April in advance) = 65.20, less the 10.00 credit = 55.20 asked (in_A)."""
    world = World()
    world.signup("acme", (at(1), "team"))
    world.store.billing["acme"] = BillingState(credit=Decimal("10.00"))
    world.store.rate("acme", "2026-03", seg(at(1)), "video", 60_000)
    march = world.close("acme", MAR)
    assert (march.total, world.store.billing["acme"].credit) == (Decimal("55.20"), Decimal("0.00"))
    return world


def _revision(original: str, cents: int, status: str = "open", revision: str = "in_REV", **more: Any) -> dict[str, Any]:
    """``revision`` (in_REV), Stripe's revision of ``original``: its lines copied (so the same total unless edited),
    ``from_invoice`` naming the original. ``total`` is what it asks before any credit note (Stripe never lowers it for
    one: a note made on it lowers ``amount_due``/``amount_paid`` only - pass them)."""
    return _fixture(
        "invoice",
        id=revision,
        status=status,
        metadata=META,
        from_invoice={"action": "revision", "invoice": original},
        total=cents,
        total_excluding_tax=cents,
        amount_due=cents,
        **more,
    )


def _voided_by_revision(original: str) -> dict[str, Any]:
    return _fixture("invoice", id=original, status="void", metadata=META, latest_revision="in_REV", from_invoice=None)


def _march_on_in_a() -> tuple[World, str]:
    """acme on Team by card, 60,000 March video minutes: 29.00 + 7.20 (10,000 over x 0.00072) + 29.00 (April ahead)
    = 65.20 on in_A (returned with the world)."""
    world = World()
    world.signup("acme", (at(1), "team"))
    world.store.rate("acme", "2026-03", seg(at(1)), "video", 60_000)
    assert world.close("acme", MAR).total == Decimal("65.20")
    in_a = world.store.invoices["acme/2026-03"].gateway_id
    assert in_a is not None
    return world, in_a


def _revision_paid(world: World, events: Events, in_a: str, cents: int) -> None:
    """in_REV's events, in Stripe's order: finalized asking ``cents``, in_A voided naming it, paid ``cents``."""
    _apply(world, events, events.add("e1", "invoice.finalized", _revision(in_a, cents)))
    _apply(world, events, events.add("e2", "invoice.voided", _voided_by_revision(in_a)))
    _apply(world, events, events.add("e3", "invoice.paid", _revision(in_a, cents, "paid", amount_paid=cents)))


def _in_rev_paid_then_may_closed(world: World) -> CloseOutcome:
    """Stripe's side: ours' invoice is in_REV, paid; then May's close (its outcome returned)."""
    world.gateway.invoices["acme/2026-03"].gateway_id = "in_REV"
    world.gateway.invoices["acme/2026-03"].status = "paid"
    return close_account(world.deps, "acme", MAY, MAY.end)


def test_given_ours_revised_in_stripe_when_the_revision_is_paid_then_ours_is_paid_on_it_and_the_credit_stays_used() -> (
    None
):
    """Before: in_A's ``invoice.voided`` voided ours (the 10.00 credit given back: used twice), in_REV's 55.20 payment
    was never recorded, refunds refused. Now ours follows in_REV: paid, keeps 55.20, credit 0.00, in_A kept for
    lookups, refunds go to in_REV."""
    world, events = _with_credit(), Events()
    in_a = world.store.invoices["acme/2026-03"].gateway_id
    assert in_a is not None
    _apply(world, events, events.add("e1", "invoice.finalized", _revision(in_a, 5520)))
    voided = _apply(world, events, events.add("e2", "invoice.voided", _voided_by_revision(in_a)))
    paid = _apply(world, events, events.add("e3", "invoice.paid", _revision(in_a, 5520, "paid", amount_paid=5520)))
    ours = world.store.invoices["acme/2026-03"]
    assert (ours.status, ours.gateway_id, ours.kept) == (InvoiceStatus.PAID, "in_REV", Decimal("55.20"))
    assert in_a in ours.gateway_refs
    assert world.store.billing["acme"].credit == Decimal("0.00")  # applied once, on the invoice paid
    assert (voided.attention, paid.attention) == (None, None)  # same total (5520 = 55.20): nothing to say
    # Stripe's side of the story: the payment was on in_REV; a 5.00 refund is asked of in_REV
    world.gateway.invoices["acme/2026-03"].gateway_id = "in_REV"
    world.gateway.invoices["acme/2026-03"].status = "paid"
    refunded = refund_invoice(world.store, world.gateway, "acme", "acme/2026-03", Decimal("5.00"))
    assert refunded.refunded == Decimal("5.00")
    assert next(iter(world.gateway.refunds.values())) == ("in_REV", Decimal("5.00"))


def test_given_ours_revised_when_the_original_is_voided_first_then_ours_follows_its_latest_revision() -> None:
    """The other order: in_A's ``invoice.voided`` (``latest_revision`` in_REV) first - ours is not voided, it moves to
    in_REV; in_REV's events then match ours by its id, even without our metadata."""
    world, events = _with_credit(), Events()
    in_a = world.store.invoices["acme/2026-03"].gateway_id
    assert in_a is not None
    _apply(world, events, events.add("e2", "invoice.voided", _voided_by_revision(in_a)))
    moved = world.store.invoices["acme/2026-03"]
    assert (moved.status, moved.gateway_id, world.store.billing["acme"].credit) == (
        InvoiceStatus.OPEN,
        "in_REV",
        Decimal("0.00"),
    )
    _apply(
        world,
        events,
        events.add("e3", "invoice.paid", _revision(in_a, 5520, "paid", amount_paid=5520) | {"metadata": {}}),
    )
    ours = world.store.invoices["acme/2026-03"]
    assert (ours.status, ours.kept) == (InvoiceStatus.PAID, Decimal("55.20"))


def test_given_a_revision_asking_another_amount_then_ours_follows_it_and_the_operator_is_told() -> None:
    """The operator took 5.20 off in Stripe's editor: in_REV asks 50.00, ours 55.20. Ours follows in_REV, the outcome
    says so (alarmed by the handler); paid 50.00, it keeps what it received: 55.20 - 5.20 short = 50.00."""
    world, events = _with_credit(), Events()
    in_a = world.store.invoices["acme/2026-03"].gateway_id
    assert in_a is not None
    finalized = _apply(world, events, events.add("e1", "invoice.finalized", _revision(in_a, 5000)))
    assert finalized.attention is not None
    assert "50.00" in finalized.attention
    assert "55.20" in finalized.attention
    _apply(world, events, events.add("e2", "invoice.voided", _voided_by_revision(in_a)))
    _apply(world, events, events.add("e3", "invoice.paid", _revision(in_a, 5000, "paid", amount_paid=5000)))
    ours = world.store.invoices["acme/2026-03"]
    assert (ours.status, ours.gateway_id, ours.kept) == (InvoiceStatus.PAID, "in_REV", Decimal("50.00"))
    assert world.store.billing["acme"].credit == Decimal("0.00")


def test_given_another_stripe_invoice_with_our_metadata_when_it_is_paid_then_ours_is_untouched_and_it_is_said() -> None:
    """A duplicate (dashboard "Duplicate invoice": no ``from_invoice`` revision of ours) paid 65.20 while ours (in_A)
    is open: before, ours was marked paid. Now ours stays open on in_A and the outcome names both invoices."""
    world, events = team_with_march_overage(), Events()
    march = world.close("acme", MAR)
    in_a = world.store.invoices[march.invoice_id].gateway_id
    duplicate = _fixture(
        "invoice", id="in_DUP", status="paid", metadata=META, amount_paid=6520, total=6520, from_invoice=None
    )
    outcome = _apply(world, events, events.add("e1", "invoice.paid", duplicate))
    ours = world.store.invoices[march.invoice_id]
    assert (ours.status, ours.gateway_id, outcome.changed) == (InvoiceStatus.OPEN, in_a, False)
    assert outcome.attention is not None
    assert "in_DUP" in outcome.attention
    voided = _apply(world, events, events.add("e2", "invoice.voided", duplicate | {"status": "void"}))
    assert world.store.invoices[march.invoice_id].status is InvoiceStatus.OPEN
    assert voided.attention is not None


def test_given_ours_followed_a_revision_when_a_late_event_of_the_original_arrives_then_it_is_not_applied() -> None:
    """in_A's ``invoice.payment_failed`` delivered late, after ours moved to in_REV: no payment-failed status, no
    PaymentFailed alert (the customer is asked on in_REV)."""
    world, events = _with_credit(), Events()
    in_a = world.store.invoices["acme/2026-03"].gateway_id
    assert in_a is not None
    _apply(world, events, events.add("e1", "invoice.finalized", _revision(in_a, 5520)))
    failed = _fixture("invoice", id=in_a, status="open", metadata=META, from_invoice=None)
    _apply(world, events, events.add("e0", "invoice.payment_failed", failed))
    ours = world.store.invoices["acme/2026-03"]
    assert (ours.status, ours.gateway_id) == (InvoiceStatus.OPEN, "in_REV")
    assert not [t for t, _ in world.bus.events if t == "PaymentFailed.v1"]


def test_given_ours_voided_in_stripe_without_a_revision_then_ours_is_void_and_the_credit_goes_back() -> None:
    """Unchanged (D132): a plain void of in_A (no ``latest_revision``) voids ours, the 10.00 credit it applied back."""
    world, events = _with_credit(), Events()
    in_a = world.store.invoices["acme/2026-03"].gateway_id
    void = _fixture("invoice", id=in_a, status="void", metadata=META, latest_revision=None, from_invoice=None)
    _apply(world, events, events.add("e1", "invoice.voided", void))
    assert world.store.invoices["acme/2026-03"].status is InvoiceStatus.VOID
    assert world.store.billing["acme"].credit == Decimal("10.00")


def test_given_our_note_refused_on_an_original_void_by_its_revision_then_it_waits_and_credits_once_ours_follows() -> (
    None
):
    """Team, 60,000 March minutes: 29.00 + 7.20 (10,000 over x 0.00072) + 29.00 (April ahead) = 65.20 on in_A. The
    operator revises it in Stripe (in_REV, same lines: 65.20; in_A void there), its events still queued, when April's
    close finds 5,000 March minutes gone: 5,000 x 0.00072 = 3.60 off March. Stripe refuses the reduction on in_A
    (void); ours is still open on in_A, so the note is not "nothing collected" (before: done with 0.00, then in_REV
    paid 65.20 and 3.60 owed back, nobody told) - it waits, named by the close. in_REV's events: ours follows it, paid
    65.20. May's close takes the note to in_REV: paid there, 3.60 account credit (March kept 65.20 for 61.60 of
    usage and fees: 65.20 - 61.60 = 3.60), recorded on in_REV out of band."""
    (world, in_a), events = _march_on_in_a(), Events()
    world.gateway.revise(in_a, "in_REV")  # in_A voided by in_REV's finalization; its events not processed yet
    world.store.rate("acme", "2026-03", seg(at(1)), "video", -5_000)
    april = close_account(world.deps, "acme", APR, APR.end)
    note_id = "acme/2026-03/credit-2026-04"
    assert [waiting.credit_id for waiting in april.notes_waiting] == [note_id]  # alarmed by the close's handler
    note = world.store.credit_notes[note_id]
    assert (note.status, note.to_due, note.to_credit) == (CreditNoteStatus.PENDING, Decimal("3.60"), Decimal("0.00"))
    _revision_paid(world, events, in_a, 6520)
    ours = world.store.invoices["acme/2026-03"]
    assert (ours.status, ours.gateway_id, ours.kept) == (InvoiceStatus.PAID, "in_REV", Decimal("65.20"))
    may = _in_rev_paid_then_may_closed(world)
    assert may.notes_waiting == ()
    note = world.store.credit_notes[note_id]
    assert (note.status, note.to_due, note.to_credit) == (CreditNoteStatus.DONE, Decimal("0.00"), Decimal("3.60"))
    assert world.gateway.credit_notes[note.gateway_credit_id] == ("in_REV", Decimal("3.60"))  # out of band on in_REV


def test_given_a_late_event_of_the_original_checked_on_a_copy_read_before_ours_followed_then_it_is_not_applied() -> (
    None
):
    """The race: a delivery of in_A's late ``invoice.payment_failed`` reads ours while it is still on in_A, and
    in_REV's ``invoice.finalized`` moves ours to in_REV before it writes. Its write conflicts and re-reads ours: the
    decision whether the event is ours is taken again on what is stored - in_A is now a replaced original - so ours
    stays open on in_REV and no PaymentFailed alert goes out (before: decided on the stale copy, payment failed)."""
    world, events = _with_credit(), Events()
    stale = world.store.invoices["acme/2026-03"]
    in_a = stale.gateway_id
    assert in_a is not None
    _apply(world, events, events.add("e1", "invoice.finalized", _revision(in_a, 5520)))
    assert world.store.invoices["acme/2026-03"].gateway_id == "in_REV"
    failed = _fixture("invoice", id=in_a, status="open", metadata=META, from_invoice=None)
    key = events.add("e0", "invoice.payment_failed", failed)
    record = events.get(*key)
    assert record is not None
    event = logic._StripeEvent.parse(record.body)
    outcome, _ = logic._invoice_event(world.store, world.bus, world.store.ledger("acme"), stale, event, MAR.end)
    ours = world.store.invoices["acme/2026-03"]
    assert (ours.status, ours.gateway_id, outcome.changed) == (InvoiceStatus.OPEN, "in_REV", False)
    assert not [t for t, _ in world.bus.events if t == "PaymentFailed.v1"]


def test_given_ours_followed_the_revision_while_the_note_was_refused_on_the_original_then_it_is_made_on_the_revision() -> (
    None
):
    """The same March (65.20 on in_A, 3.60 to take off), but in_REV's ``invoice.finalized`` moves ours between the
    close's read and the note's step: refused on in_A (void), the re-read shows ours on in_REV, open there - the note
    is made on in_REV at once, lowering it 65.20 - 3.60 = 61.60; no account credit, nothing waits."""
    (world, in_a), events = _march_on_in_a(), Events()
    original = world.gateway.invoices["acme/2026-03"]
    world.gateway.invoices["acme/2026-03 revision"] = replace(original, gateway_id="in_REV", status="open")
    world.gateway.revise(in_a, "in_REV")
    world.store.rate("acme", "2026-03", seg(at(1)), "video", -5_000)  # 5,000 x 0.00072 = 3.60
    world.gateway.fail_next = [GatewayMisconfiguredError("held")]  # April's close leaves the note pending
    close_account(world.deps, "acme", APR, APR.end)
    note = world.store.credit_notes["acme/2026-03/credit-2026-04"]
    assert (note.status, note.to_due) == (CreditNoteStatus.PENDING, Decimal("3.60"))
    read = world.store.ledger("acme")  # the next close's read: ours still on in_A
    _apply(world, events, events.add("e1", "invoice.finalized", _revision(in_a, 6520)))
    done = logic._issue_credit_note(world.deps, read, note, MAY.end)
    assert (done.status, done.to_due, done.to_credit) == (CreditNoteStatus.DONE, Decimal("3.60"), Decimal("0.00"))
    assert world.gateway.credit_notes[done.gateway_credit_id] == ("in_REV", Decimal("3.60"))
    assert world.store.billing["acme"].credit == Decimal("0.00")


def test_given_a_discounted_revision_paid_while_our_note_waits_then_the_shortfall_counts_only_notes_made_there() -> (
    None
):
    """Team, 60,000 March minutes: 29.00 + 7.20 (10,000 over x 0.00072) + 29.00 (April ahead) = 65.20 on in_A. The
    operator revises it with a 5.20 discount (in_REV asks 60.00; in_A void there, naming in_REV); April's close finds
    5,000 March minutes gone (5,000 x 0.00072 = 3.60): refused on in_A, the note waits - never made at Stripe. in_REV
    paid 60.00. What Stripe asked is what ours asked there, 65.20 (our pending 3.60 took nothing off it): 65.20 -
    60.00 = 5.20 short, kept 60.00. May's close takes the note to in_REV (paid):
    ``money_held`` pays March's usage first (7.20 held), the 5.20 given back comes off the rest (fees: 65.20 - 7.20 =
    58.00 -> 52.80), so March still holds 7.20 >= 3.60: 3.60 account credit, once (May 29.00 - 3.60 = 25.40); at most
    60.00 - 3.60 = 56.40 can then be refunded. Before: the pending 3.60 came off what Stripe asked too (61.60 - 60.00 =
    1.60 short, kept 63.60, 60.00 refundable) and was credited as well - 3.60 counted twice."""
    (world, in_a), events = _march_on_in_a(), Events()
    world.gateway.revise(in_a, "in_REV")  # its events not processed yet
    world.store.rate("acme", "2026-03", seg(at(1)), "video", -5_000)
    assert close_account(world.deps, "acme", APR, APR.end).notes_waiting != ()
    _revision_paid(world, events, in_a, 6000)
    ours = world.store.invoices["acme/2026-03"]
    assert (ours.status, ours.kept) == (InvoiceStatus.PAID, Decimal("60.00"))
    assert [amount for refund, amount in ours.outside_refunds if refund.startswith("shortfall:")] == [Decimal("5.20")]
    may = _in_rev_paid_then_may_closed(world)
    assert may.notes_waiting == ()
    note = world.store.credit_notes["acme/2026-03/credit-2026-04"]
    assert (note.status, note.to_credit, note.returned) == (CreditNoteStatus.DONE, Decimal("3.60"), Decimal("0.00"))
    assert may.invoice is not None
    assert may.invoice.total == Decimal("25.40")  # June's fee 29.00 - the 3.60 credit
    with pytest.raises(ValueError, match=r"at most 56\.40"):  # 60.00 received - 3.60 credited back = 56.40
        refund_invoice(world.store, world.gateway, "acme", "acme/2026-03", Decimal("56.41"))


def test_given_our_note_made_on_the_original_when_its_revision_is_paid_in_full_then_what_it_took_off_is_credited_once() -> (
    None
):
    """D344's limit (interaction review, item 2). Team, 60,000 March minutes: 29.00 + 7.20 (10,000 over x 0.00072) +
    29.00 (April ahead) = 65.20 on in_A. April's close finds 5,000 March minutes gone (5,000 x 0.00072 = 3.60): made
    on in_A at Stripe (done), ours asks 65.20 - 3.60 = 61.60. The operator revises in_A in Stripe: in_REV copies the
    lines, not the note, asks 65.20 and is paid 65.20. 65.20 received - 61.60 asked = 3.60 over, at most the note's
    3.60 off the amount due: 3.60 moves from the note's amount due to account credit (to_due 0.00, to_credit 3.60),
    once however often the payment is delivered; no shortfall. May's close: June's fee 29.00 - 3.60 = 25.40. Refunds:
    kept 65.20, of which March's 7.20 usage holds the 3.60 credited - 65.20 - 3.60 = 61.60 at most, as before the
    revision. Before: kept 65.20, refunds bounded at 61.60 and no credit - the 3.60 neither credited nor
    refundable."""
    world, events, in_a = _note_made_on_in_a_then_revised()
    note_id = "acme/2026-03/credit-2026-04"
    _apply(world, events, events.add("e1", "invoice.finalized", _revision(in_a, 6520)))
    _apply(world, events, events.add("e2", "invoice.voided", _voided_by_revision(in_a)))
    paid = events.add("e3", "invoice.paid", _revision(in_a, 6520, "paid", amount_paid=6520))
    _apply(world, events, paid)
    _apply(world, events, paid)  # delivered again: credited once
    _apply(world, events, events.add("e4", "invoice.paid", _revision(in_a, 6520, "paid", amount_paid=6520)))
    ours = world.store.invoices["acme/2026-03"]
    assert (ours.status, ours.gateway_id, ours.kept) == (InvoiceStatus.PAID, "in_REV", Decimal("65.20"))
    assert not [refund for refund, _ in ours.outside_refunds if refund.startswith("shortfall:")]
    note = world.store.credit_notes[note_id]
    assert (note.status, note.to_due, note.to_credit) == (CreditNoteStatus.DONE, Decimal("0.00"), Decimal("3.60"))
    assert world.store.billing["acme"].credit == Decimal("3.60")
    may = _in_rev_paid_then_may_closed(world)
    assert may.invoice is not None
    assert may.invoice.total == Decimal("25.40")  # June's fee 29.00 - the 3.60 credit
    assert world.store.billing["acme"].credit == Decimal("0.00")
    with pytest.raises(ValueError, match=r"at most 61\.60"):  # 65.20 kept - 3.60 credited back = 61.60
        refund_invoice(world.store, world.gateway, "acme", "acme/2026-03", Decimal("61.61"))


def _note_made_on_in_a_then_revised() -> tuple[World, Events, str]:
    """Team, 60,000 March minutes: 29.00 + 7.20 (10,000 over x 0.00072) + 29.00 (April ahead) = 65.20 on in_A;
    April's close finds 5,000 March minutes gone (5,000 x 0.00072 = 3.60): made on in_A at Stripe (done, ours asks
    61.60). The operator then revises in_A in Stripe (in_REV: the lines copied, not the note)."""
    (world, in_a), events = _march_on_in_a(), Events()
    world.store.rate("acme", "2026-03", seg(at(1)), "video", -5_000)
    close_account(world.deps, "acme", APR, APR.end)
    note = world.store.credit_notes["acme/2026-03/credit-2026-04"]
    assert (note.status, note.to_due, note.asked_on) == (CreditNoteStatus.DONE, Decimal("3.60"), in_a)
    world.gateway.revise(in_a, "in_REV")
    return world, events, in_a


def _march_paid_with_a(world: World, short_paid: str, kept: str, a: tuple[str, str], credit: str) -> None:
    """Ours PAID with ``short_paid`` and ``kept``; our note A (April's, made on in_A) at ``a`` = (to_due,
    to_credit); the account's ``credit`` (the figures as Decimal strings)."""
    ours = world.store.invoices["acme/2026-03"]
    note = world.store.credit_notes["acme/2026-03/credit-2026-04"]
    assert (ours.status, ours.short_paid, ours.kept) == (InvoiceStatus.PAID, Decimal(short_paid), Decimal(kept))
    assert (note.to_due, note.to_credit) == (Decimal(a[0]), Decimal(a[1]))
    assert world.store.billing["acme"].credit == Decimal(credit)


def _note_made_on_the_revision(world: World, revision: str = "in_REV") -> None:
    """Stripe's side: ours' invoice is ``revision``, open; May's close finds 2,500 more March minutes gone (2,500 x
    0.00072 = 1.80): note B, made on ``revision`` at Stripe (done, ``asked_on`` it)."""
    fake = world.gateway.invoices["acme/2026-03"]
    fake.gateway_id, fake.status, fake.latest_revision = revision, "open", None
    world.store.rate("acme", "2026-03", seg(at(1)), "video", -2_500)
    close_account(world.deps, "acme", MAY, MAY.end)
    note = world.store.credit_notes["acme/2026-03/credit-2026-05"]
    assert (note.status, note.to_due, note.asked_on) == (CreditNoteStatus.DONE, Decimal("1.80"), revision)


def _revised_then_noted_there(world: World, events: Events, in_a: str, cents: int) -> None:
    """in_REV finalized asking ``cents``, in_A voided naming it; then note B made on in_REV at Stripe
    (``_note_made_on_the_revision``: 1.80)."""
    _apply(world, events, events.add("e1", "invoice.finalized", _revision(in_a, cents)))
    _apply(world, events, events.add("e2", "invoice.voided", _voided_by_revision(in_a)))
    _note_made_on_the_revision(world)


def _in_rev_paid_at_stripe(world: World) -> str:
    """Stripe's side: ours' invoice is in_REV, paid by a payment intent (returned, for its charge's events)."""
    world.gateway.invoices["acme/2026-03"].gateway_id = "in_REV"
    world.gateway.invoices["acme/2026-03"].status = "open"
    world.gateway.invoices["acme/2026-03"].latest_revision = None
    intent = world.gateway.settle("acme/2026-03", paid=True)
    assert intent is not None
    return intent


def test_given_our_note_made_on_the_original_when_a_discounted_revision_is_paid_then_its_discount_is_short_and_the_note_credited() -> (
    None
):
    """Review 3, finding 1. The note's 3.60 is done on in_A; in_REV copies the lines (65.20), not the note, and the
    operator's 5.20 discount: it asks 60.00, paid 60.00. What in_REV asked took nothing of our note off: 65.20 asked
    - 60.00 received = 5.20 short (the discount, given back outside us), kept 60.00; the note's 3.60 becomes account
    credit (March's 7.20 usage is held first: 7.20 >= 3.60). May's close: June's 29.00 - 3.60 = 25.40. Refunds at most
    60.00 - 3.60 = 56.40. Before: the done note came off what in_REV asked (61.60 - 60.00 = 1.60 short, kept 63.60),
    the credit was bounded by what was received above 61.60 (nothing): credit 0.00, May 29.00, 56.41 refundable."""
    world, events, in_a = _note_made_on_in_a_then_revised()
    _revision_paid(world, events, in_a, 6000)
    ours = world.store.invoices["acme/2026-03"]
    assert (ours.status, ours.short_paid, ours.kept) == (InvoiceStatus.PAID, Decimal("5.20"), Decimal("60.00"))
    note = world.store.credit_notes["acme/2026-03/credit-2026-04"]
    assert (note.to_due, note.to_credit, note.returned) == (Decimal("0.00"), Decimal("3.60"), Decimal("0.00"))
    assert world.store.billing["acme"].credit == Decimal("3.60")
    may = _in_rev_paid_then_may_closed(world)
    assert may.invoice is not None
    assert may.invoice.total == Decimal("25.40")  # June's fee 29.00 - the 3.60 credit
    with pytest.raises(ValueError, match=r"at most 56\.40"):  # 60.00 kept - 3.60 credited back = 56.40
        refund_invoice(world.store, world.gateway, "acme", "acme/2026-03", Decimal("56.41"))


@pytest.mark.parametrize("gone", ["dispute", "refund"])
def test_given_the_revisions_payment_gone_before_its_paid_event_when_it_comes_back_then_the_note_is_credited_once(
    gone: str,
) -> None:
    """Review 3, finding 2. The note's 3.60 done on in_A; in_REV asks 65.20 and is paid 65.20, but before its
    ``invoice.paid`` reaches us the payment is disputed (funds withdrawn 65.20) or refunded whole from the dashboard
    (``charge.refunded`` 65.20). At ``invoice.paid`` it holds nothing: no account credit, the note's 3.60 leaves the
    amount due as given back already (``returned``: to_due 0.00, to_credit 0.00, returned 3.60). Then the dispute
    is won (funds reinstated) or the refund fails: kept 65.20 again, the 3.60 becomes account credit, once; May's
    close: June's 29.00 - 3.60 = 25.40. Before: the 3.60 stayed on the amount due - never credited, never refundable
    (bound 61.60)."""
    world, events, in_a = _note_made_on_in_a_then_revised()
    intent = _in_rev_paid_at_stripe(world)
    _apply(world, events, events.add("e1", "invoice.finalized", _revision(in_a, 6520)))
    _apply(world, events, events.add("e2", "invoice.voided", _voided_by_revision(in_a)))
    disputed = _dispute(intent, "needs_response")
    refund = _fixture("refund", id="re_dash", payment_intent=intent, charge="ch_3Story", amount=6520, metadata={})
    if gone == "dispute":
        _apply(world, events, events.add("d0", "charge.dispute.created", disputed))
        _apply(world, events, events.add("d1", "charge.dispute.funds_withdrawn", disputed))
    else:
        _apply(world, events, events.add("r0", "refund.created", refund | {"status": "succeeded"}))
        _apply(world, events, events.add("r1", "charge.refunded", _charge(intent, 6520)))
    _apply(world, events, events.add("e3", "invoice.paid", _revision(in_a, 6520, "paid", amount_paid=6520)))
    note = world.store.credit_notes["acme/2026-03/credit-2026-04"]
    assert (note.to_due, note.to_credit, note.returned) == (Decimal("0.00"), Decimal("0.00"), Decimal("3.60"))
    assert (world.store.invoices["acme/2026-03"].kept, world.store.billing["acme"].credit) == (ZERO, ZERO)
    if gone == "dispute":
        _apply(world, events, events.add("d2", "charge.dispute.funds_reinstated", disputed | {"status": "won"}))
        _apply(world, events, events.add("d3", "charge.dispute.closed", disputed | {"status": "won"}))
    else:
        failed = refund | {"status": "failed", "failure_reason": "expired_or_canceled_card"}
        _apply(world, events, events.add("r2", "refund.failed", failed))
    ours = world.store.invoices["acme/2026-03"]
    note = world.store.credit_notes["acme/2026-03/credit-2026-04"]
    assert (ours.status, ours.kept) == (InvoiceStatus.PAID, Decimal("65.20"))
    assert (note.to_due, note.to_credit, note.returned) == (Decimal("0.00"), Decimal("3.60"), Decimal("0.00"))
    assert world.store.billing["acme"].credit == Decimal("3.60")
    world.gateway.invoices["acme/2026-03"].status = "paid"
    may = close_account(world.deps, "acme", MAY, MAY.end)
    assert may.invoice is not None
    assert may.invoice.total == Decimal("25.40")  # June's fee 29.00 - the 3.60 credit


def test_given_a_waiting_note_retried_after_an_outage_on_a_discounted_paid_revision_then_its_shortfall_is_unchanged(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """Review 4, finding 1 (b). The waiting-note story above (note 3.60 asked on in_A, refused there: void by in_REV;
    in_REV discounted 5.20, paid 60.00: 65.20 - 60.00 = 5.20 short, the note not counted), but May's first close
    stores ``asked_on`` in_REV and hits an outage. The next close is refused on the paid in_REV: its payment never
    counted the note, so nothing is added - 5.20 short, kept 60.00, 3.60 credit, refunds at most 60.00 - 3.60 = 56.40.
    Before: 3.60 added (8.80 short, kept 56.40, bound 52.80)."""
    (world, in_a), events = _march_on_in_a(), Events()
    world.gateway.revise(in_a, "in_REV")
    world.store.rate("acme", "2026-03", seg(at(1)), "video", -5_000)
    assert close_account(world.deps, "acme", APR, APR.end).notes_waiting != ()
    _revision_paid(world, events, in_a, 6000)
    assert world.store.invoices["acme/2026-03"].short_paid == Decimal("5.20")
    world.gateway.invoices["acme/2026-03"].gateway_id = "in_REV"  # Stripe's side: in_REV, paid
    world.gateway.invoices["acme/2026-03"].status = "paid"

    def outage(*args: Any) -> str:
        raise GatewayUnavailableError("down")

    monkeypatch.setattr(world.gateway, "credit_note", outage)
    with pytest.raises(GatewayUnavailableError):
        close_account(world.deps, "acme", MAY, MAY.end)
    monkeypatch.undo()
    assert world.store.credit_notes["acme/2026-03/credit-2026-04"].asked_on == "in_REV"
    close_account(world.deps, "acme", MAY, MAY.end)
    ours = world.store.invoices["acme/2026-03"]
    note = world.store.credit_notes["acme/2026-03/credit-2026-04"]
    assert (note.to_credit, note.returned) == (Decimal("3.60"), Decimal("0.00"))
    assert (ours.short_paid, ours.kept) == (Decimal("5.20"), Decimal("60.00"))  # 65.20 - 60.00, as without the outage
    with pytest.raises(ValueError, match=r"at most 56\.40"):  # 60.00 received - 3.60 credited back
        refund_invoice(world.store, world.gateway, "acme", "acme/2026-03", Decimal("56.41"))


def test_given_the_operator_takes_our_note_off_the_revision_by_hand_then_it_is_not_credited_twice() -> None:
    """Review 4, finding 2. The note's 3.60 done on in_A (ours asks 65.20 - 3.60 = 61.60); the operator revises in_A
    and takes our 3.60 off by hand: in_REV asks 61.60 - exactly the total less our notes made on in_A, so read as our
    note carried over. Finalizing says so (in_REV asks 61.60 where a revision asks 65.20). Paid 61.60: 0.00 short,
    the note stays on the amount due (to_due 3.60, no credit), kept 65.20, refunds at most 65.20 - 3.60 = 61.60.
    Before: 65.20 - 61.60 = 3.60 short AND 3.60 credited - the customer given the 3.60 twice, nobody told."""
    world, events, in_a = _note_made_on_in_a_then_revised()
    finalized = _apply(world, events, events.add("e1", "invoice.finalized", _revision(in_a, 6160)))
    assert finalized.attention is not None
    assert "asks 61.60 (before tax) where 65.20 is expected" in finalized.attention
    assert "read as our notes made before the revision (3.60) carried over: not credited" in finalized.attention
    _apply(world, events, events.add("e2", "invoice.voided", _voided_by_revision(in_a)))
    paid = events.add("e3", "invoice.paid", _revision(in_a, 6160, "paid", amount_paid=6160))
    _apply(world, events, paid)
    _apply(world, events, paid)  # delivered again
    _march_paid_with_a(world, "0.00", "65.20", ("3.60", "0.00"), "0.00")  # A stays on the amount due, no credit
    world.gateway.invoices["acme/2026-03"].gateway_id = "in_REV"  # Stripe's side: in_REV, paid
    world.gateway.invoices["acme/2026-03"].status = "paid"
    with pytest.raises(ValueError, match=r"at most 61\.60"):  # 65.20 kept - 3.60 taken off by our note
        refund_invoice(world.store, world.gateway, "acme", "acme/2026-03", Decimal("61.61"))


def test_given_our_note_made_on_the_original_when_a_revision_is_discounted_then_finalizing_says_the_note_is_credited() -> (
    None
):
    """Review 4, finding 2: the discount story's alarm. in_REV asks 60.00 (a 5.20 discount) where a revision of ours
    asks 65.20 (its total less only notes asked on it: none); 65.20 - 60.00 = 5.20 is not our notes' 3.60, so it is
    a discount - recorded short when paid - and our 3.60 note made on in_A is credited as well (the figures: the
    discounted-revision test above: 5.20 short, 3.60 credit)."""
    world, events, in_a = _note_made_on_in_a_then_revised()
    finalized = _apply(world, events, events.add("e1", "invoice.finalized", _revision(in_a, 6000)))
    assert finalized.attention is not None
    assert "asks 60.00 (before tax) where 65.20 is expected" in finalized.attention
    assert "our notes made before the revision (3.60) are credited as well" in finalized.attention
    full = _apply(world, events, events.add("e2", "invoice.finalized", _revision(in_a, 6520) | {"id": "in_REV2"}))
    assert full.attention is None or "in_REV2, a revision" not in full.attention  # 65.20: as expected


def test_given_our_note_carried_by_hand_when_a_note_is_made_on_the_revision_then_neither_is_credited_twice() -> None:
    """Review 5, finding 1. A (3.60) done on in_A, carried by hand onto in_REV (asks 65.20 - 3.60 = 61.60); May's
    close makes B (2,500 x 0.00072 = 1.80) on in_REV at Stripe: its ``total`` stays 61.60, paid 61.60 - 1.80 = 59.80.
    Owed 65.20 - 3.60 - 1.80 = 59.80: 0.00 short, A stays on the amount due (to_due 3.60, no credit), credit 0.00,
    kept 65.20; refunds at most 65.20 - 3.60 - 1.80 = 59.80, after a 10.00 refund 59.80 - 10.00 = 49.80. Before: the
    revision was expected to ask 65.20 - 1.80 - 3.60 = 59.80 != 61.60, a discount: 3.60 short AND A's 3.60 credited."""
    world, events, in_a = _note_made_on_in_a_then_revised()
    _revised_then_noted_there(world, events, in_a, 6160)
    paid = _apply(world, events, events.add("e3", "invoice.paid", _revision(in_a, 6160, "paid", amount_paid=5980)))
    assert paid.attention is None or "recorded as given back" not in paid.attention
    _march_paid_with_a(world, "0.00", "65.20", ("3.60", "0.00"), "0.00")  # A stays on the amount due, no credit
    world.gateway.invoices["acme/2026-03"].status = "paid"  # Stripe's side: in_REV, paid
    with pytest.raises(ValueError, match=r"at most 59\.80"):  # 65.20 kept - 3.60 (A) - 1.80 (B)
        refund_invoice(world.store, world.gateway, "acme", "acme/2026-03", Decimal("59.81"))
    refund_invoice(world.store, world.gateway, "acme", "acme/2026-03", Decimal("10.00"))
    with pytest.raises(ValueError, match=r"at most 49\.80"):  # 59.80 - 10.00 refunded
        refund_invoice(world.store, world.gateway, "acme", "acme/2026-03", Decimal("49.81"))


def test_given_a_note_made_on_a_full_revision_when_it_is_paid_then_no_alarm_and_our_earlier_note_is_credited() -> None:
    """Review 5, finding 2. A (3.60) done on in_A; in_REV asks 65.20 (not carried: what a revision of ours asks);
    B (1.80) made on in_REV - its ``total`` stays 65.20, paid 65.20 - 1.80 = 63.40. Owed 65.20 - 1.80 = 63.40 of
    in_REV: 0.00 short, A's 3.60 credited (March's 7.20 usage holds it). No alarm: in_REV asks its total, 65.20.
    Before: "asks 65.20 ... where 63.40 is expected" (the total less B, which Stripe's total never takes off)."""
    world, events, in_a = _note_made_on_in_a_then_revised()
    _revised_then_noted_there(world, events, in_a, 6520)
    paid = _apply(world, events, events.add("e3", "invoice.paid", _revision(in_a, 6520, "paid", amount_paid=6340)))
    assert paid.attention is None or "a revision of" not in paid.attention
    # kept 63.40 paid + 1.80 (B, on in_REV's amount due) = 65.20; A's 3.60 credited: to_due 0.00, credit 3.60
    _march_paid_with_a(world, "0.00", "65.20", ("0.00", "3.60"), "3.60")


def test_given_a_revision_of_a_revision_carrying_our_hand_edit_then_only_the_note_made_on_its_source_is_credited() -> (
    None
):
    """Review 5, finding 3. A (3.60) done on in_A, carried by hand onto in_REV (61.60); B (1.80) made on in_REV; the
    operator revises in_REV into in_REV2: Stripe copies the lines (A's hand edit with them), not B - in_REV2 asks
    61.60 = 65.20 - 3.60 (our notes made on Stripe invoices other than its source), paid 61.60. Owed 65.20 - 3.60 -
    1.80 = 59.80: 0.00 short, A carried (to_due 3.60, no credit), B's 1.80 credited (credit 1.80: 61.60 received
    - 59.80 owed). Finalizing says A is carried and B credited. Before: A + B = 5.40 expected off, 61.60 read as a
    3.60 discount: 3.60 short AND 5.40 credited."""
    world, events, in_a = _note_made_on_in_a_then_revised()
    _revised_then_noted_there(world, events, in_a, 6160)
    finalized = _apply(
        world, events, events.add("e3", "invoice.finalized", _revision("in_REV", 6160, revision="in_REV2"))
    )
    assert finalized.attention is not None
    assert "asks 61.60 (before tax) where 65.20 is expected" in finalized.attention
    assert "read as our notes made before the revision (3.60) carried over: not credited" in finalized.attention
    assert "1.80 of our notes made on in_REV credited" in finalized.attention
    voided = _voided_by_revision("in_REV") | {"latest_revision": "in_REV2"}
    _apply(world, events, events.add("e4", "invoice.voided", voided))
    paid = _revision("in_REV", 6160, "paid", revision="in_REV2", amount_paid=6160)
    _apply(world, events, events.add("e5", "invoice.paid", paid))
    ours = world.store.invoices["acme/2026-03"]
    a = world.store.credit_notes["acme/2026-03/credit-2026-04"]
    b = world.store.credit_notes["acme/2026-03/credit-2026-05"]
    assert (ours.gateway_id, ours.status, ours.short_paid) == ("in_REV2", InvoiceStatus.PAID, Decimal("0.00"))
    assert (a.to_due, a.to_credit) == (Decimal("3.60"), Decimal("0.00"))
    assert (b.to_due, b.to_credit) == (Decimal("0.00"), Decimal("1.80"))
    assert world.store.billing["acme"].credit == Decimal("1.80")
