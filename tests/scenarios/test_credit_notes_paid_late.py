"""A credit note made while an invoice of its period was not paid (open, payment failed, written off) records the
withdrawn usage that invoice billed as not collected (``uncollected``, D188/D193/D337): nothing was paid for it, so
nothing is given back. When Stripe collects that invoice afterwards (``invoice.paid``: the customer pays an open or
even an uncollectible invoice), the customer has paid for usage that was withdrawn: the note now gives account credit
for what the payment holds of it, once, in the same write as the paid status (D339).

Figures (price book 2026-01: video $0.00072; Team $29 with 50,000 video minutes, Personal $0 with 5,000): acme on Team
by card from March 1, 60,000 March minutes -> March = 29.00 fee + 10,000 x 0.00072 = 7.20 + April's 29.00 in advance
= 65.20 (invoice KB-acme-00001). 10,000 March minutes withdrawn after March's close: -10,000 x 0.00072 = -7.20 (50,000
is inside the allowance). March's money pays its own usage (7.20) first, then the fees (D191)."""

from __future__ import annotations

from decimal import Decimal

import pytest

from kilo_billing.invoicing import BillingState, CreditNote, CreditNoteStatus, InvoiceStatus
from kilo_billing.periods import Period
from kilo_invoice.logic import apply_stripe_event, close_account, issue_early, refund_invoice
from tests.scenarios.test_card_payment_events import Events, _apply, _dispute, _paid_invoice
from tests.scenarios.test_credit_notes_period import EARLY, _early_event, _personal_billed_early
from tests.scenarios.test_credit_notes_written_off import _april_with_its_note_waiting, _refusing
from tests.scenarios.test_invoicing import APR, FEB, MAR, MAY, World, amounts, at, seg, team_with_march_overage
from tests.scenarios.test_progressive_billing import mid, progressive

JUN = Period(2026, 6)
NOTE = "acme/2026-03/credit-2026-04"
MARCH = "acme/2026-03"


def _event(world: World, events: Events, invoice_id: str, event_id: str, event_type: str, status: str) -> None:
    """Stripe's invoice event for ``invoice_id``, as the adapter's invoice is sent (our ids in the metadata)."""
    obj = _paid_invoice(world, invoice_id) | {"status": status}
    if status != "paid":
        obj |= {"amount_paid": 0, "amount_remaining": 6520}
    apply_stripe_event(world.store, world.bus, events, *events.add(event_id, event_type, obj), at(20, 4), world.gateway)


def _march_event(world: World, events: Events, event_id: str, event_type: str, status: str) -> None:
    _event(world, events, MARCH, event_id, event_type, status)


def _pay_march(world: World, events: Events, event_id: str = "evt_paid") -> None:
    world.gateway.settle(MARCH, paid=True)
    _march_event(world, events, event_id, "invoice.paid", "paid")
    assert world.store.invoices[MARCH].status is InvoiceStatus.PAID


def _note(world: World, credit_id: str = NOTE) -> CreditNote:
    return world.store.credit_notes[credit_id]


def _march_written_off_then_withdrawn(world: World, events: Events) -> None:
    """March 65.20 never paid: its payment failed, Stripe's dunning wrote it off; then -7.20 found by April's close."""
    assert world.close("acme", MAR).total == Decimal("65.20")
    _march_event(world, events, "evt_f", "invoice.payment_failed", "open")
    _march_event(world, events, "evt_u", "invoice.marked_uncollectible", "uncollectible")
    assert world.store.invoices[MARCH].status is InvoiceStatus.UNCOLLECTIBLE
    world.store.rate("acme", "2026-03", seg(at(1)), "video", -10_000)  # -7.20
    april = world.close("acme", APR)
    # D193: March collected nothing (no account credit applied): no credit, 7.20 not collected; April its fee
    assert (_note(world).to_credit, _note(world).uncollected) == (Decimal("0.00"), Decimal("7.20"))
    assert april.total == Decimal("29.00")


def test_given_march_written_off_when_the_customer_pays_it_after_the_note_then_the_withdrawn_usage_is_credited_once() -> (
    None
):
    """March paid 65.20 after all: its money pays its 7.20 of usage first, so the 7.20 withdrawn was paid for and
    becomes account credit (7.20 <= 7.20 held); May = June's 29.00 - 7.20 = 21.80. A redelivered ``invoice.paid``,
    and the write-off's event arriving again after it, move nothing. March's refund then gives back at most its fees
    (65.20 - 7.20 = 58.00): the 7.20 is given back once, as the credit. Before: 0.00 credit, 7.20 left not collected,
    May 29.00 - the customer paid 65.20 for 58.00 of what stands."""
    world, events = team_with_march_overage(), Events()
    _march_written_off_then_withdrawn(world, events)

    _pay_march(world, events)

    note = _note(world)
    assert (note.to_credit, note.uncollected, note.returned, note.version) == (
        Decimal("7.20"),
        Decimal("0.00"),
        Decimal("0.00"),
        2,
    )
    assert note.history[-1][0] == "7.20 collected since (invoice KB-acme-00001 paid): account credit"
    assert world.store.billing["acme"].credit == Decimal("7.20")
    # D131: a paid card invoice's note credit is recorded on Stripe's invoice, out of band, by the next close's step
    assert (note.processor, note.out_of_band, note.status) == (Decimal("7.20"), True, CreditNoteStatus.PENDING)
    _march_event(world, events, "evt_paid", "invoice.paid", "paid")  # delivered again
    _march_event(world, events, "evt_u", "invoice.marked_uncollectible", "uncollectible")  # late, out of order
    assert world.store.invoices[MARCH].status is InvoiceStatus.PAID
    assert (world.store.billing["acme"].credit, _note(world).version) == (Decimal("7.20"), 2)
    may = world.close("acme", MAY)
    assert (amounts(may, "credit"), may.total) == (["-7.20"], Decimal("21.80"))
    march_at_stripe = world.store.invoices[MARCH].gateway_id
    assert world.gateway.credit_notes[f"{NOTE}/out-of-band"] == (march_at_stripe, Decimal("7.20"))
    assert f"{NOTE}/out-of-band" in world.gateway.out_of_band_notes
    assert _note(world).status is CreditNoteStatus.DONE
    with pytest.raises(ValueError, match=r"at most 58\.00"):
        refund_invoice(world.store, world.gateway, "acme", MARCH, Decimal("65.20"))


def test_given_march_paid_partly_by_account_credit_when_paid_after_the_write_off_then_the_rest_is_credited() -> None:
    """5.00 of account credit before March: March asks 65.20 - 5.00 = 60.20, written off. April's note credits the
    5.00 March applied (D193: its only money) and records 7.20 - 5.00 = 2.20 not collected; April = 29.00 - 5.00 =
    24.00. March then paid 60.20: 60.20 + 5.00 = 65.20 holds its 7.20 of usage, 5.00 credited already -> 2.20 more;
    May = 29.00 - 2.20 = 26.80. Before: 0.00 more, May 29.00."""
    world, events = team_with_march_overage(), Events()
    world.store.billing["acme"] = BillingState(credit=Decimal("5.00"))
    assert world.close("acme", MAR).total == Decimal("60.20")
    _march_event(world, events, "evt_u", "invoice.marked_uncollectible", "uncollectible")
    world.store.rate("acme", "2026-03", seg(at(1)), "video", -10_000)  # -7.20
    assert world.close("acme", APR).total == Decimal("24.00")
    assert (_note(world).to_credit, _note(world).uncollected) == (Decimal("5.00"), Decimal("2.20"))

    _pay_march(world, events)

    assert (_note(world).to_credit, _note(world).uncollected) == (Decimal("7.20"), Decimal("0.00"))
    assert world.store.billing["acme"].credit == Decimal("2.20")
    assert world.close("acme", MAY).total == Decimal("26.80")


def test_given_a_reduction_refused_on_an_open_march_when_stripe_collects_it_in_full_then_the_note_credits_it() -> None:
    """D337's known gap: April's 3.60 reduction (5,000 x 0.00072) waits, Stripe refuses it while March is still open
    (an amount rule): May's close records 3.60 not collected, May 29.00. Stripe then collects March's whole 65.20,
    3.60 of it for usage withdrawn: 3.60 credit; June = 29.00 - 3.60 = 25.40. Before: nothing credited, June 29.00."""
    world, events = team_with_march_overage(), Events()
    world.close("acme", MAR)
    _april_with_its_note_waiting(world)
    _refusing(world, "open")
    assert close_account(world.deps, "acme", MAY, MAY.end).invoice.total == Decimal("29.00")  # type: ignore[union-attr]
    assert (_note(world).status, _note(world).uncollected) == (CreditNoteStatus.DONE, Decimal("3.60"))

    _pay_march(world, events)

    assert (_note(world).to_due, _note(world).to_credit, _note(world).uncollected) == (
        Decimal("0.00"),
        Decimal("3.60"),
        Decimal("0.00"),
    )
    assert world.store.billing["acme"].credit == Decimal("3.60")
    june = world.close("acme", JUN)
    assert (amounts(june, "credit"), june.total) == (["-3.60"], Decimal("25.40"))


def test_given_a_note_that_lowered_open_march_at_stripe_when_march_is_paid_then_nothing_is_credited() -> None:
    """The control: April's note took 3.60 off March's amount due at Stripe (65.20 - 3.60 = 61.60 asked), so the
    payment paid nothing for the withdrawn usage: no credit, May 29.00 (passes before and after)."""
    world, events = team_with_march_overage(), Events()
    world.close("acme", MAR)
    world.store.rate("acme", "2026-03", seg(at(1)), "video", -5_000)  # -3.60
    world.close("acme", APR)
    lowered = _note(world)
    assert (lowered.to_due, lowered.uncollected, lowered.status) == (
        Decimal("3.60"),
        Decimal("0.00"),
        CreditNoteStatus.DONE,
    )

    _pay_march(world, events)

    assert _note(world) == lowered
    assert world.store.billing["acme"].credit == Decimal("0.00")
    assert world.close("acme", MAY).total == Decimal("29.00")


def test_given_the_early_invoice_written_off_when_it_is_paid_after_the_note_then_its_usage_is_credited_once() -> None:
    """Personal, progressive at 5.00: 7.20 billed early (KB-acme-00002), March 0.00; the early invoice written off,
    then -10,000 minutes: April's note 0.00 credit, 7.20 not collected. The early invoice paid after all: 7.20 credit;
    its refund is refused (at most 0.00: given back as the credit). Before: 0.00 credit, and the 7.20 refundable."""
    world, events = World(), Events()
    _personal_billed_early(world)
    _early_event(world, events, "evt_f", "invoice.payment_failed", "open")
    _early_event(world, events, "evt_u", "invoice.marked_uncollectible", "uncollectible")
    world.store.rate("acme", "2026-03", seg(at(1)), "video", -10_000)  # -7.20
    world.close("acme", APR)
    assert (_note(world).to_credit, _note(world).uncollected) == (Decimal("0.00"), Decimal("7.20"))

    world.gateway.settle(EARLY, paid=True)
    paid = events.add("evt_ep", "invoice.paid", _paid_invoice(world, EARLY))
    apply_stripe_event(world.store, world.bus, events, *paid, mid(20, 4), world.gateway)

    note = _note(world)
    assert (note.to_credit, note.uncollected) == (Decimal("7.20"), Decimal("0.00"))
    assert note.history[-1][0] == "7.20 collected since (invoice KB-acme-00002 paid): account credit"
    assert world.store.billing["acme"].credit == Decimal("7.20")
    # the note is on March's 0.00 invoice, the payment on the early one: nothing recorded at Stripe (ours only)
    assert (note.processor, note.status) == (Decimal("0.00"), CreditNoteStatus.DONE)
    apply_stripe_event(world.store, world.bus, events, *paid, mid(21, 4), world.gateway)  # delivered again
    assert world.store.billing["acme"].credit == Decimal("7.20")
    with pytest.raises(ValueError, match=r"at most 0\.00"):
        refund_invoice(world.store, world.gateway, "acme", EARLY, Decimal("0.01"))


def _team_early_and_march_written_off(world: World, events: Events) -> None:
    """Team from February, progressive at 5.00: 60,000 March minutes, 7.20 billed early (KB-acme-00002); March's
    close 7.20 - 7.20 billed early + April's fee 29.00 = 29.00. Both written off; -10,000 minutes found by April:
    0.00 credit, 7.20 not collected (all of it billed by the early invoice, March's 29.00 the fee)."""
    world.signup("acme", (at(1, 2), "team"))
    progressive(world, "acme", "5.00")
    assert world.close("acme", FEB).total == Decimal("58.00")
    world.store.rate("acme", "2026-03", seg(at(1)), "video", 60_000)
    (early,) = issue_early(world.deps, "acme", MAR, mid(10))
    assert (early.invoice_id, early.total) == (EARLY, Decimal("7.20"))
    assert world.close("acme", MAR).total == Decimal("29.00")
    _early_event(world, events, "evt_eu", "invoice.marked_uncollectible", "uncollectible")
    _march_event(world, events, "evt_mu", "invoice.marked_uncollectible", "uncollectible")
    world.store.rate("acme", "2026-03", seg(at(1)), "video", -10_000)  # -7.20
    world.close("acme", APR)
    assert (_note(world).to_credit, _note(world).uncollected) == (Decimal("0.00"), Decimal("7.20"))


def test_given_the_early_invoice_paid_later_while_march_stays_written_off_then_only_its_usage_is_credited() -> None:
    """The early invoice paid (7.20, all March usage): 7.20 credit. March paid afterwards too (29.00, April's fee:
    none of it paid for March's usage): nothing more. Before: 0.00 credit."""
    world, events = World(), Events()
    _team_early_and_march_written_off(world, events)
    world.gateway.settle(EARLY, paid=True)
    paid = events.add("evt_ep", "invoice.paid", _paid_invoice(world, EARLY))
    apply_stripe_event(world.store, world.bus, events, *paid, mid(20, 4), world.gateway)
    assert (_note(world).to_credit, _note(world).uncollected) == (Decimal("7.20"), Decimal("0.00"))
    assert world.store.billing["acme"].credit == Decimal("7.20")

    _pay_march(world, events)

    assert (_note(world).to_credit, _note(world).version) == (Decimal("7.20"), 2)
    assert world.store.billing["acme"].credit == Decimal("7.20")


def test_given_march_paid_before_the_early_invoice_then_nothing_until_the_early_invoice_is_paid() -> None:
    """The other order: March's 29.00 paid first pays for none of March's usage (its usage lines net 0.00): nothing;
    the early invoice's payment then credits 7.20."""
    world, events = World(), Events()
    _team_early_and_march_written_off(world, events)
    _pay_march(world, events)
    assert (_note(world).to_credit, _note(world).version) == (Decimal("0.00"), 1)
    assert world.store.billing["acme"].credit == Decimal("0.00")
    world.gateway.settle(EARLY, paid=True)
    paid = events.add("evt_ep", "invoice.paid", _paid_invoice(world, EARLY))
    apply_stripe_event(world.store, world.bus, events, *paid, mid(20, 4), world.gateway)
    assert (_note(world).to_credit, _note(world).uncollected) == (Decimal("7.20"), Decimal("0.00"))
    assert world.store.billing["acme"].credit == Decimal("7.20")


def test_given_the_early_invoice_paid_between_aprils_read_and_its_write_then_the_close_composes_again() -> None:
    """The race: April's close reads the early invoice written off, its ``invoice.paid`` lands before the close's
    write (no note to credit yet). The paid write moves the refunds' fence (D308), so the close composes again and its
    note credits 7.20 at once. Without the fence: a note with 7.20 not collected that nothing credits."""
    world, events = World(), Events()
    _personal_billed_early(world)
    _early_event(world, events, "evt_u", "invoice.marked_uncollectible", "uncollectible")
    world.store.rate("acme", "2026-03", seg(at(1)), "video", -10_000)  # -7.20

    def pay_early() -> None:
        world.gateway.settle(EARLY, paid=True)
        paid = events.add("evt_ep", "invoice.paid", _paid_invoice(world, EARLY))
        apply_stripe_event(world.store, world.bus, events, *paid, mid(20, 4), world.gateway)

    world.store.before_create.append(pay_early)
    world.close("acme", APR)

    assert (_note(world).to_credit, _note(world).uncollected) == (Decimal("7.20"), Decimal("0.00"))
    assert world.store.billing["acme"].credit == Decimal("7.20")


def test_given_late_usage_billed_on_a_written_off_april_when_april_is_paid_after_the_note_then_it_is_credited() -> None:
    """Team from February; March 50,000 video minutes (inside the allowance): 0.00 + April's fee 29.00, paid. 10,000
    March minutes late: April = May's fee 29.00 + 7.20 late = 36.20, written off. The late minutes go away: May's note
    on March credits 0.00 (April collected nothing), 7.20 not collected; May 29.00. April then paid 36.20: its money
    pays its own usage (0.00), then March's late 7.20, then the fee: 7.20 credit, June = 29.00 - 7.20 = 21.80; April's
    refund gives back at most its fee, 29.00. Before: 0.00 credit, June 29.00, April refundable 36.20."""
    world, events = World(), Events()
    world.signup("acme", (at(1, 2), "team"))
    world.close("acme", FEB)
    world.store.rate("acme", "2026-03", seg(at(1)), "video", 50_000)
    world.close("acme", MAR)
    world.gateway.settle(MARCH, paid=True)
    _march_event(world, events, "evt_mp", "invoice.paid", "paid")
    world.store.rate("acme", "2026-03", seg(at(1)), "video", 10_000)  # late: 10,000 x 0.00072 = 7.20
    april = world.close("acme", APR)
    assert (amounts(april, "adjustment"), april.total) == (["7.20"], Decimal("36.20"))
    _event(world, events, april.invoice_id, "evt_au", "invoice.marked_uncollectible", "uncollectible")
    world.store.rate("acme", "2026-03", seg(at(1)), "video", -10_000)  # -7.20
    assert world.close("acme", MAY).total == Decimal("29.00")
    late_note = "acme/2026-03/credit-2026-05"
    assert (_note(world, late_note).to_credit, _note(world, late_note).uncollected) == (
        Decimal("0.00"),
        Decimal("7.20"),
    )

    world.gateway.settle(april.invoice_id, paid=True)
    _event(world, events, april.invoice_id, "evt_ap", "invoice.paid", "paid")

    assert (_note(world, late_note).to_credit, _note(world, late_note).uncollected) == (
        Decimal("7.20"),
        Decimal("0.00"),
    )
    assert world.store.billing["acme"].credit == Decimal("7.20")
    june = world.close("acme", JUN)
    assert (amounts(june, "credit"), june.total) == (["-7.20"], Decimal("21.80"))
    with pytest.raises(ValueError, match=r"at most 29\.00"):
        refund_invoice(world.store, world.gateway, "acme", april.invoice_id, Decimal("36.20"))


def test_given_march_disputed_before_its_payment_is_seen_when_the_dispute_is_won_then_the_withdrawn_usage_is_credited() -> (
    None
):
    """March 65.20 written off; April's note: 0.00 credit, 7.20 not collected. The customer pays 65.20 and disputes
    it; the dispute's ``funds_withdrawn`` (65.20) reaches us before ``invoice.paid``. Paid: March keeps 65.20 - 65.20
    = 0.00, so nothing is credited yet - but its payment paid for the 7.20, and gave it back (the dispute): 7.20 moves
    from not collected to returned (0.00 credit, 0.00 not collected, 7.20 returned). The dispute won (funds
    reinstated): March keeps 65.20 again, pays its 7.20 of usage first: 7.20 returned -> 7.20 account credit, as when
    the events come in order; May = 29.00 - 7.20 = 21.80, and the credit is recorded on March at Stripe (out of band).
    Before: the 7.20 stayed not collected and the reinstatement (which moves only ``returned``) credited 0.00."""
    world, events = team_with_march_overage(), Events()
    _march_written_off_then_withdrawn(world, events)
    intent = world.gateway.settle(MARCH, paid=True)
    assert intent is not None
    _apply(world, events, events.add("evt_d1", "charge.dispute.funds_withdrawn", _dispute(intent, "needs_response")))
    assert world.store.invoices[MARCH].charged_back == Decimal("65.20")

    _apply(world, events, events.add("evt_paid", "invoice.paid", _paid_invoice(world, MARCH)))

    note = _note(world)
    assert world.store.invoices[MARCH].status is InvoiceStatus.PAID
    assert (note.to_credit, note.uncollected, note.returned, note.version) == (
        Decimal("0.00"),
        Decimal("0.00"),
        Decimal("7.20"),
        2,
    )
    assert note.history[-1][0] == (
        "7.20 collected since (invoice KB-acme-00001 paid) and given back already (refunded or disputed): not credited"
    )
    assert world.store.billing["acme"].credit == Decimal("0.00")

    _apply(world, events, events.add("evt_d2", "charge.dispute.funds_reinstated", _dispute(intent, "won")))

    note = _note(world)
    assert world.store.invoices[MARCH].kept == Decimal("65.20")
    assert (note.to_credit, note.uncollected, note.returned) == (Decimal("7.20"), Decimal("0.00"), Decimal("0.00"))
    assert (note.processor, note.out_of_band, note.status) == (Decimal("7.20"), True, CreditNoteStatus.PENDING)
    assert world.store.billing["acme"].credit == Decimal("7.20")
    may = world.close("acme", MAY)
    assert (amounts(may, "credit"), may.total) == (["-7.20"], Decimal("21.80"))
    assert world.gateway.credit_notes[f"{NOTE}/out-of-band"][1] == Decimal("7.20")


def test_given_may_writes_a_second_note_between_the_early_payments_read_and_its_write_then_both_are_credited() -> None:
    """Personal, progressive at 5.00: 7.20 billed early (10,000 minutes over the 5,000 included x 0.00072), written
    off; March 0.00. -5,000 minutes found by April: note 1, 0.00 credit, 3.60 not collected. Another -5,000 found by
    May's close - which commits while the early invoice's ``invoice.paid`` is between its read and its write (a
    close and the webhook at once): note 2, 0.00 credit, 3.60 not collected. The paid 7.20 paid for all 10,000
    withdrawn minutes: 3.60 + 3.60 = 7.20 credit. Before: the paid write, conditioned on notes it read (note 1
    only), landed: 3.60 credit, note 2's 3.60 not collected for good."""
    world, events = World(), Events()
    _personal_billed_early(world)
    _early_event(world, events, "evt_u", "invoice.marked_uncollectible", "uncollectible")
    world.store.rate("acme", "2026-03", seg(at(1)), "video", -5_000)  # -3.60
    world.close("acme", APR)
    assert (_note(world).to_credit, _note(world).uncollected) == (Decimal("0.00"), Decimal("3.60"))
    world.store.rate("acme", "2026-03", seg(at(1)), "video", -5_000)  # -3.60 more
    world.store.before_update.append(lambda: world.close("acme", MAY))  # lands inside the paid write

    world.gateway.settle(EARLY, paid=True)
    paid = events.add("evt_ep", "invoice.paid", _paid_invoice(world, EARLY))
    apply_stripe_event(world.store, world.bus, events, *paid, mid(20, 5), world.gateway)

    second = _note(world, "acme/2026-03/credit-2026-05")
    assert (_note(world).to_credit, _note(world).uncollected) == (Decimal("3.60"), Decimal("0.00"))
    assert (second.to_credit, second.uncollected) == (Decimal("3.60"), Decimal("0.00"))
    assert world.store.billing["acme"].credit == Decimal("7.20")


def test_given_march_written_off_when_paid_short_then_the_unreceived_rest_stays_not_collected() -> None:
    """March 65.20 written off, April's note: 7.20 not collected. A 60.20 dashboard note, then Stripe collects
    65.20 - 60.20 = 5.00: 60.20 short (D344). The 5.00 received pays March's usage first (D191): 5.00 of the 7.20
    withdrawn was paid for -> 5.00 account credit; the other 7.20 - 5.00 = 2.20 was never received, so it stays not
    collected. Before: the shortfall was left out of the "kept whole" reading like a refund, so the 2.20 moved to
    ``returned`` ("given back already (refunded or disputed)") - nothing was given back. May: June's 29.00 - 5.00 = 24.00."""
    world, events = team_with_march_overage(), Events()
    _march_written_off_then_withdrawn(world, events)
    intent = world.gateway.settle(MARCH, paid=True)
    assert intent is not None
    obj = _paid_invoice(world, MARCH) | {"amount_paid": 500, "total": 6520, "total_excluding_tax": 6520}
    apply_stripe_event(world.store, world.bus, events, *events.add("p", "invoice.paid", obj), at(20, 4), world.gateway)

    note = _note(world)
    assert world.store.invoices[MARCH].refunded == Decimal("60.20")  # the shortfall
    assert (note.to_credit, note.uncollected, note.returned) == (Decimal("5.00"), Decimal("2.20"), Decimal("0.00"))
    assert (note.as_json()["not_collected"], note.as_json()["already_returned"]) == ("2.20", "0.00")
    assert world.store.billing["acme"].credit == Decimal("5.00")
    # a dispute withdraws the 5.00 charged and is won: 5.00 received, 5.00 credited - nothing more, nothing moved
    disputed = _dispute(intent, "needs_response") | {"amount": 500}
    for key, kind, status in (("d1", "funds_withdrawn", "needs_response"), ("d2", "funds_reinstated", "won")):
        _apply(world, events, events.add(key, f"charge.dispute.{kind}", disputed | {"status": status}))
    _apply(world, events, events.add("d3", "charge.dispute.closed", disputed | {"status": "won"}))
    note = _note(world)
    assert (note.to_credit, note.uncollected, note.returned) == (Decimal("5.00"), Decimal("2.20"), Decimal("0.00"))
    assert world.store.billing["acme"].credit == Decimal("5.00")
    assert world.close("acme", MAY).total == Decimal("24.00")


def test_given_march_paid_short_when_a_later_note_withdraws_usage_then_the_unreceived_part_is_not_collected() -> None:
    """Review 3, finding 4: the same money, the note made after the short payment. Team, 60,000 March minutes: 65.20
    (29.00 + 7.20 = 10,000 over x 0.00072 + 29.00 April ahead); a 60.20 dashboard note, Stripe collects 5.00 (60.20
    short, D344). April's close withdraws 10,000 March minutes (7.20): the 5.00 received pays March's usage first ->
    5.00 account credit; the other 7.20 - 5.00 = 2.20 was asked and never received: not collected. Before: 2.20
    ``returned``, shown already_returned 2.20 ("refunded or charged back"), not_collected 0.00. April's invoice:
    May's fee 29.00 - 5.00 = 24.00."""
    world, events = World(), Events()
    world.signup("acme", (at(1), "team"))
    world.store.rate("acme", "2026-03", seg(at(1)), "video", 60_000)
    assert world.close("acme", MAR).total == Decimal("65.20")
    world.gateway.settle(MARCH, paid=True)
    obj = _paid_invoice(world, MARCH) | {"amount_paid": 500, "total": 6520, "total_excluding_tax": 6520}
    _apply(world, events, events.add("p", "invoice.paid", obj))
    assert world.store.invoices[MARCH].short_paid == Decimal("60.20")
    world.store.rate("acme", "2026-03", seg(at(1)), "video", -10_000)
    april = close_account(world.deps, "acme", APR, APR.end)
    note = _note(world)
    assert (note.to_credit, note.uncollected, note.returned) == (Decimal("5.00"), Decimal("2.20"), Decimal("0.00"))
    assert (note.as_json()["not_collected"], note.as_json()["already_returned"]) == ("2.20", "0.00")
    assert april.invoice is not None
    assert april.invoice.total == Decimal("24.00")  # May's fee 29.00 - the 5.00 credit, applied by the same close
