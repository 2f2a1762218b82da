"""A card invoice Stripe collected less on than we ask (D344): ``invoice.paid``'s ``amount_paid`` is compared
with what ours asks (its total less our own credit notes' reductions); the shortfall - a credit note made in Stripe's
dashboard before payment, say - is recorded as given back outside us, so what the invoice keeps, and every bound on
giving its money back (a refund, a note's credit), reads what was received; the operator is told."""

from __future__ import annotations

from dataclasses import replace
from decimal import Decimal
from typing import Any

import pytest

from kilo_account_api.model import InvoiceView
from kilo_account_api.schemas import InvoiceOut
from kilo_billing.invoicing import CreditNoteStatus, InvoiceStatus, amount_due
from kilo_invoice.logic import refund_invoice
from kilo_invoice.ports import GatewayRejectedError, GatewayUnavailableError
from tests.scenarios.test_card_payment_events import Events, _apply, _fixture, _paid_invoice
from tests.scenarios.test_invoicing import APR, MAR, MAY, World, at, seg, team_with_march_overage

TOTAL = {"total": 6520, "total_excluding_tax": 6520}  # Stripe's invoice of ours: 65.20, no tax


def test_given_a_dashboard_credit_note_before_payment_when_paid_then_it_keeps_what_was_received() -> None:
    """Team, March 65.20 (29.00 + 7.20 + 29.00 April in advance); a 10.00 credit note made in Stripe's dashboard, then
    paid 65.20 - 10.00 = 55.20. Before: paid in full, keeps 65.20, refunds allowed up to 65.20. Now: 10.00 recorded as
    given back outside us (once, whatever the redeliveries), keeps 55.20, a refund of more than 55.20 refused."""
    world, events = team_with_march_overage(), Events()
    march = world.close("acme", MAR)
    world.gateway.settle(march.invoice_id, paid=True)
    paid = _paid_invoice(world) | {"amount_paid": 5520, "pre_payment_credit_notes_amount": 1000} | TOTAL
    key = events.add("p", "invoice.paid", paid)
    outcome = _apply(world, events, key)
    _apply(world, events, key)  # delivered again: counted once
    ours = world.store.invoices[march.invoice_id]
    assert (ours.status, ours.refunded, ours.kept) == (InvoiceStatus.PAID, Decimal("10.00"), Decimal("55.20"))
    assert outcome.attention is not None
    assert "55.20" in outcome.attention
    assert "65.20" in outcome.attention
    with pytest.raises(ValueError, match=r"at most 55\.20"):
        refund_invoice(world.store, world.gateway, "acme", march.invoice_id, Decimal("55.21"))


def test_given_paid_in_full_then_nothing_is_recorded_and_nothing_said() -> None:
    world, events = team_with_march_overage(), Events()
    march = world.close("acme", MAR)
    world.gateway.settle(march.invoice_id, paid=True)
    outcome = _apply(world, events, events.add("p", "invoice.paid", _paid_invoice(world)))  # amount_paid 6520
    ours = world.store.invoices[march.invoice_id]
    assert (ours.refunded, ours.kept, outcome.attention) == (Decimal("0.00"), Decimal("65.20"), None)


def test_given_our_own_note_lowered_it_when_paid_what_it_asks_then_no_shortfall() -> None:
    """Our note took 5,000 minutes x 0.00072 = 3.60 off the open March invoice: it asks 65.20 - 3.60 = 61.60; paid
    6160: nothing short, it keeps 65.20 (the 3.60 is the note's reduction, counted by the notes, not here)."""
    world, events = World(), Events()
    world.signup("acme", (at(1), "team"))
    world.store.rate("acme", "2026-03", seg(at(1)), "video", 60_000)
    world.close("acme", MAR)
    world.store.rate("acme", "2026-03", seg(at(1)), "video", -5_000)
    world.close("acme", APR)
    world.gateway.settle("acme/2026-03", paid=True)
    outcome = _apply(world, events, events.add("p", "invoice.paid", _paid_invoice(world) | {"amount_paid": 6160}))
    ours = world.store.invoices["acme/2026-03"]
    assert (ours.status, ours.refunded, outcome.attention) == (InvoiceStatus.PAID, Decimal("0.00"), None)


def test_given_stripe_tax_when_paid_with_tax_then_only_a_shortfall_net_of_tax_counts() -> None:
    """Stripe Tax (exclusive, 10 %): ours 65.20, Stripe's total 71.72 (65.20 + 6.52 tax), all paid: nothing short.
    A 10.00 (+1.00 tax) dashboard note: paid 71.72 - 11.00 = 60.72; net of tax 60.72 x 6520 / 7172 = 55.20: 10.00
    short."""
    world, events = team_with_march_overage(), Events()
    march = world.close("acme", MAR)
    world.gateway.settle(march.invoice_id, paid=True)
    taxed = {"total": 7172, "total_excluding_tax": 6520}
    outcome = _apply(
        world, events, events.add("p", "invoice.paid", _paid_invoice(world) | taxed | {"amount_paid": 7172})
    )
    assert (world.store.invoices[march.invoice_id].kept, outcome.attention) == (Decimal("65.20"), None)
    again = team_with_march_overage()
    march = again.close("acme", MAR)
    again.gateway.settle(march.invoice_id, paid=True)
    _apply(again, events, events.add("q", "invoice.paid", _paid_invoice(again) | taxed | {"amount_paid": 6072}))
    assert again.store.invoices[march.invoice_id].kept == Decimal("55.20")


def test_given_a_shortfall_when_a_dashboard_refund_is_seen_first_by_its_charge_refunded_then_both_count() -> None:
    """65.20 asked, paid 55.20 (a 10.00 dashboard note before payment: 10.00 recorded short). The dashboard then refunds
    5.00 of the 55.20 charge; its ``charge.refunded`` (amount_refunded 500) comes before its ``refund.created``. By
    hand: given back 10.00 + 5.00 = 15.00, keeps 65.20 - 15.00 = 50.20, a refund of more than 50.20 refused. Before:
    the charge's 5.00 and the shortfall's 10.00 were separate figures, the larger read - 10.00 given back, 55.20 kept,
    a 55.20 refund accepted. Its ``refund.created`` later counts it once: still 15.00."""
    world, events = team_with_march_overage(), Events()
    march = world.close("acme", MAR)
    intent = world.gateway.settle(march.invoice_id, paid=True)
    _apply(world, events, events.add("p", "invoice.paid", _paid_invoice(world) | {"amount_paid": 5520} | TOTAL))
    charge = _fixture(
        "charge", id="ch_dash", payment_intent=intent, amount=5520, amount_captured=5520, captured=True,
        amount_refunded=500, refunded=False,
    )  # fmt: skip
    _apply(world, events, events.add("r", "charge.refunded", charge))
    ours = world.store.invoices[march.invoice_id]
    assert (ours.refunded, ours.kept) == (Decimal("15.00"), Decimal("50.20"))
    with pytest.raises(ValueError, match=r"at most 50\.20"):
        refund_invoice(world.store, world.gateway, "acme", march.invoice_id, Decimal("50.21"))
    refund = _fixture(
        "refund", id="re_dash", payment_intent=intent, charge="ch_dash", amount=500, status="succeeded", metadata={}
    )
    _apply(world, events, events.add("c", "refund.created", refund))
    ours = world.store.invoices[march.invoice_id]
    assert (ours.refunded, ours.kept) == (Decimal("15.00"), Decimal("50.20"))


def test_given_our_note_made_at_stripe_but_its_answer_lost_when_paid_what_stripe_asks_then_no_shortfall(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """March 65.20 open; April's close asks Stripe for a note of 5,000 minutes x 0.00072 = 3.60 on it: Stripe makes
    it, but every answer is lost (the close fails; our note stays PENDING). Stripe asks 65.20 - 3.60 = 61.60 and
    collects 6160. Before: the pending note was left out of what ours asks (65.20), 3.60 recorded as a shortfall,
    the operator told; after May's close finished the note, refunds were bounded at 65.20 - 3.60 note - 3.60
    "short" = 58.00. Now: the note was asked on the paid Stripe invoice, so it counts: nothing short, refunded 0.00,
    nothing said; once May's close finishes it, refunds are bounded at 65.20 - 3.60 = 61.60."""
    world, events = World(), Events()
    world.signup("acme", (at(1), "team"))
    world.store.rate("acme", "2026-03", seg(at(1)), "video", 60_000)
    world.close("acme", MAR)
    world.store.rate("acme", "2026-03", seg(at(1)), "video", -5_000)
    made = world.gateway.credit_note

    def answer_lost(*args: Any) -> str:
        made(*args)  # made at Stripe...
        raise GatewayUnavailableError("timed out")  # ...its answer lost, every retry

    monkeypatch.setattr(world.gateway, "credit_note", answer_lost)
    with pytest.raises(GatewayUnavailableError):
        world.close("acme", APR)
    monkeypatch.undo()
    (note,) = world.store.credit_notes.values()
    assert (note.status, note.to_due) == (CreditNoteStatus.PENDING, Decimal("3.60"))
    world.gateway.settle("acme/2026-03", paid=True)
    outcome = _apply(world, events, events.add("p", "invoice.paid", _paid_invoice(world) | {"amount_paid": 6160}))
    ours = world.store.invoices["acme/2026-03"]
    assert (ours.status, ours.refunded, outcome.attention) == (InvoiceStatus.PAID, Decimal("0.00"), None)
    world.close("acme", MAY)
    assert world.store.credit_notes[note.credit_id].status is CreditNoteStatus.DONE
    with pytest.raises(ValueError, match=r"at most 61\.60"):
        refund_invoice(world.store, world.gateway, "acme", "acme/2026-03", Decimal("61.61"))


def test_given_our_note_asked_but_never_made_when_paid_short_then_the_refusal_completes_the_shortfall(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """Review 3, finding 3 (D344's interaction-review limit). April's note of 5,000 min x 0.00072 = 3.60 is asked on
    in_A (``asked_on`` stored) but the call fails before Stripe makes anything (an outage): PENDING. Stripe asks 65.20;
    a 10.00 dashboard note; 55.20 paid. ``invoice.paid`` counts the pending note asked there: 61.60 - 55.20 = 6.40
    recorded short. May's close asks again: refused on the paid in_A - proof it was never made - so the shortfall was
    65.20 - 55.20 = 10.00: 3.60 more, in the same write as the note's 3.60 account credit (March's 7.20 usage held
    first). Kept 55.20, May 29.00 - 3.60 = 25.40, refunds at most 55.20 - 3.60 = 51.60. Before: kept 58.80, bound
    55.20 - 58.80 back on 55.20 received."""
    world, events = World(), Events()
    world.signup("acme", (at(1), "team"))
    world.store.rate("acme", "2026-03", seg(at(1)), "video", 60_000)
    world.close("acme", MAR)
    world.store.rate("acme", "2026-03", seg(at(1)), "video", -5_000)

    def outage(*args: Any) -> str:
        raise GatewayUnavailableError("down")  # nothing made at Stripe

    monkeypatch.setattr(world.gateway, "credit_note", outage)
    with pytest.raises(GatewayUnavailableError):
        world.close("acme", APR)
    monkeypatch.undo()
    (note,) = world.store.credit_notes.values()
    in_a = world.store.invoices["acme/2026-03"].gateway_id
    assert (note.status, note.to_due, note.asked_on) == (CreditNoteStatus.PENDING, Decimal("3.60"), in_a)
    world.gateway.settle("acme/2026-03", paid=True)
    _apply(world, events, events.add("p", "invoice.paid", _paid_invoice(world) | {"amount_paid": 5520} | TOTAL))
    assert world.store.invoices["acme/2026-03"].short_paid == Decimal("6.40")  # 61.60 - 55.20, the note counted
    may = world.close("acme", MAY)
    ours = world.store.invoices["acme/2026-03"]
    note = world.store.credit_notes[note.credit_id]
    assert (ours.short_paid, ours.kept) == (Decimal("10.00"), Decimal("55.20"))  # 65.20 - 55.20
    assert (note.to_due, note.to_credit, note.returned) == (Decimal("0.00"), Decimal("3.60"), Decimal("0.00"))
    assert may.total == Decimal("25.40")  # June's fee 29.00 - the 3.60 credit
    with pytest.raises(ValueError, match=r"at most 51\.60"):  # 55.20 received - 3.60 credited back
        refund_invoice(world.store, world.gateway, "acme", "acme/2026-03", Decimal("51.61"))


def test_given_paid_short_when_the_customer_reads_the_invoice_then_the_shortfall_is_its_own_figure() -> None:
    """The dashboard note story: 65.20 asked, 55.20 paid. The account API's invoice shows 65.20 - 55.20 = 10.00 as
    ``short_paid``, and ``refunded`` 0.00 (nothing was refunded; before: ``refunded`` 10.00)."""
    world, events = team_with_march_overage(), Events()
    march = world.close("acme", MAR)
    world.gateway.settle(march.invoice_id, paid=True)
    _apply(world, events, events.add("p", "invoice.paid", _paid_invoice(world) | {"amount_paid": 5520} | TOTAL))
    ours = world.store.invoices[march.invoice_id]
    shown = InvoiceOut.of(InvoiceView(ours, (), amount_due(ours, ()))).model_dump(mode="json")
    assert (shown["short_paid"], shown["refunded"], shown["total"]) == ("10.00", "0.00", "65.20")


def test_given_paid_short_when_the_operator_reads_the_invoice_then_the_shortfall_is_not_a_refund() -> None:
    """Review 3, finding 5. 65.20 asked, 55.20 paid: the CLI's invoice (``invoice show``, ``invoice refund``'s
    summary, the invoice list) says refunded 0.00 and short_paid 65.20 - 55.20 = 10.00 (before: refunded 10.00); a
    5.00 refund then reads refunded 5.00, short_paid 10.00."""
    from kilo_billing_cli.invoices import _summary  # noqa: PLC0415

    world, events = team_with_march_overage(), Events()
    march = world.close("acme", MAR)
    world.gateway.settle(march.invoice_id, paid=True)
    _apply(world, events, events.add("p", "invoice.paid", _paid_invoice(world) | {"amount_paid": 5520} | TOTAL))
    summary = _summary(world.store.invoices[march.invoice_id])
    assert (summary["total"], summary["refunded"], summary["short_paid"]) == ("65.20", "0.00", "10.00")
    refund_invoice(world.store, world.gateway, "acme", march.invoice_id, Decimal("5.00"))
    summary = _summary(world.store.invoices[march.invoice_id])
    assert (summary["refunded"], summary["short_paid"]) == ("5.00", "10.00")


def _march_with_april_note_asked() -> World:
    """Team, 60,000 March minutes: 29.00 + 7.20 (10,000 over x 0.00072) + 29.00 (April ahead) = 65.20 on in_A; then
    5,000 March minutes gone (5,000 x 0.00072 = 3.60: April's note)."""
    world = World()
    world.signup("acme", (at(1), "team"))
    world.store.rate("acme", "2026-03", seg(at(1)), "video", 60_000)
    world.close("acme", MAR)
    world.store.rate("acme", "2026-03", seg(at(1)), "video", -5_000)
    return world


def test_given_the_payment_processed_while_our_note_is_asked_when_stripe_refuses_it_then_the_shortfall_is_completed(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """Review 4, finding 1 (a). April's close stores ``asked_on`` in_A; while its Stripe call is in flight the customer
    pays 55.20 (a 10.00 dashboard note) and ``invoice.paid`` counts the pending note asked there: 61.60 - 55.20 =
    6.40 short. Stripe then refuses the note (paid): never made, so Stripe asked 65.20 - 55.20 = 10.00 short; kept
    55.20; the note's 3.60 account credit (March's 7.20 usage held first); refunds at most 55.20 - 3.60 = 51.60.
    Before: the note was asked in this very run, so nothing was added - 6.40 short, kept 58.80, 51.61 refundable."""
    world, events = _march_with_april_note_asked(), Events()
    shorts = []

    def paid_meanwhile(*args: Any) -> str:
        if not shorts:
            world.gateway.settle("acme/2026-03", paid=True)
            _apply(world, events, events.add("p", "invoice.paid", _paid_invoice(world) | {"amount_paid": 5520} | TOTAL))
            shorts.append(world.store.invoices["acme/2026-03"].short_paid)
        raise GatewayRejectedError("cannot credit: it is paid, not open", "paid")

    monkeypatch.setattr(world.gateway, "credit_note", paid_meanwhile)
    world.close("acme", APR)
    monkeypatch.undo()
    assert shorts == [Decimal("6.40")]  # 61.60 - 55.20: the note counted by the payment
    ours = world.store.invoices["acme/2026-03"]
    (note,) = world.store.credit_notes.values()
    assert (note.to_due, note.to_credit, note.returned) == (Decimal("0.00"), Decimal("3.60"), Decimal("0.00"))
    assert (ours.short_paid, ours.kept) == (Decimal("10.00"), Decimal("55.20"))  # 65.20 - 55.20
    assert world.store.billing["acme"].credit == Decimal("3.60")
    with pytest.raises(ValueError, match=r"at most 51\.60"):  # 55.20 received - 3.60 credited back
        refund_invoice(world.store, world.gateway, "acme", "acme/2026-03", Decimal("51.61"))


def test_given_the_payment_processed_before_our_note_was_asked_when_stripe_refuses_it_then_nothing_is_added(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """Review 4, finding 1 (D353's listed limit). April's note of 3.60 is composed, its ``asked_on`` not yet
    stored (as stored before the field was written); in_A paid 55.20 (a 10.00 dashboard note): the pending note never
    asked there is not counted - 65.20 - 55.20 = 10.00 short, right already. May's close stores ``asked_on`` in_A and
    hits an outage; the next one is refused on the paid in_A. That payment never counted the note: still 10.00 short,
    kept 55.20, 3.60 credit. Before: the refusal added 3.60 (13.60 short, kept 51.60)."""
    world, events = _march_with_april_note_asked(), Events()

    def outage(*args: Any) -> str:
        raise GatewayUnavailableError("down")  # nothing made at Stripe

    monkeypatch.setattr(world.gateway, "credit_note", outage)
    with pytest.raises(GatewayUnavailableError):
        world.close("acme", APR)
    (note,) = world.store.credit_notes.values()
    world.store.credit_notes[note.credit_id] = replace(note, asked_on=None)
    world.gateway.settle("acme/2026-03", paid=True)
    _apply(world, events, events.add("p", "invoice.paid", _paid_invoice(world) | {"amount_paid": 5520} | TOTAL))
    assert world.store.invoices["acme/2026-03"].short_paid == Decimal("10.00")
    with pytest.raises(GatewayUnavailableError):
        world.close("acme", MAY)  # stores asked_on in_A first
    monkeypatch.undo()
    assert world.store.credit_notes[note.credit_id].asked_on == world.store.invoices["acme/2026-03"].gateway_id
    world.close("acme", MAY)
    ours = world.store.invoices["acme/2026-03"]
    note = world.store.credit_notes[note.credit_id]
    assert (note.to_due, note.to_credit) == (Decimal("0.00"), Decimal("3.60"))
    assert (ours.short_paid, ours.kept) == (Decimal("10.00"), Decimal("55.20"))  # 65.20 - 55.20, nothing added
