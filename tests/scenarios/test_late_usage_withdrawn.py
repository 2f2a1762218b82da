"""Late usage billed on a later invoice, then withdrawn before the next close (D131, D306): the customer is never
asked to pay for usage that went away, and never credited twice.

Hand-worked (price book 2026-01: video $0.00072; Personal includes 5,000 video minutes, no fee). acme, Personal, card,
from February. March 10,000 video minutes: 5,000 over x 0.00072 = 3.60, paid. 10,000 more March minutes arrive late:
April's invoice bills them as an adjustment line, 10,000 x 0.00072 = 7.20 (April's own usage 0, fee 0: total 7.20).
Those 10,000 minutes then go away again (-7.20 of March's usage) before May's close. March's own 10,000 minutes stand:
the customer owes 3.60 for March, all told."""

from __future__ import annotations

from dataclasses import replace
from decimal import Decimal

from kilo_billing.invoicing import InvoiceRecord, amount_due
from tests.scenarios.test_card_payment_events import Events, _apply, _fixture, _paid_invoice
from tests.scenarios.test_credit_notes_late import _pay
from tests.scenarios.test_invoicing import APR, FEB, MAR, MAY, World, amounts, at, seg

MARCH_NOTE = "acme/2026-03/credit-2026-05"


def _april_bills_late_usage(world: World, events: Events, credit: str = "0.00") -> InvoiceRecord:
    """March 3.60 paid; ``credit`` of account credit given before April's close; April bills the 7.20 late."""
    world.signup("acme", (at(1, 2), "personal"))
    world.close("acme", FEB)
    world.store.rate("acme", "2026-03", seg(at(1)), "video", 10_000)
    march = world.close("acme", MAR)
    assert march.total == Decimal("3.60")
    _pay(world, events, march.invoice_id, "evt_mar", 2)
    world.store.billing["acme"] = replace(world.store.billing["acme"], credit=Decimal(credit))
    world.store.rate("acme", "2026-03", seg(at(1)), "video", 10_000)  # late: 10,000 x 0.00072 = 7.20
    april = world.close("acme", APR)
    assert amounts(april, "adjustment") == ["7.20"]
    return april


def _withdraw_and_close_may(world: World) -> None:
    world.store.rate("acme", "2026-03", seg(at(1)), "video", -10_000)  # -7.20
    world.close("acme", MAY)


def _due(world: World, invoice_id: str) -> Decimal:
    return amount_due(world.store.invoices[invoice_id], world.store.credit_notes.values())


def test_given_april_open_with_marchs_late_usage_when_that_usage_goes_away_then_april_asks_for_nothing() -> None:
    """April (7.20, open) billed only the withdrawn minutes: May's close lowers its amount due by 7.20 (a processor
    credit note on April), 7.20 - 7.20 = 0.00. March's 3.60 paid for minutes that stand: no account credit. Before:
    April stayed open at 7.20 and March's note credited 3.60 (the customer asked 7.20 more, credited 3.60)."""
    world, events = World(), Events()
    april = _april_bills_late_usage(world, events)
    assert april.total == Decimal("7.20")
    _withdraw_and_close_may(world)
    assert _due(world, april.invoice_id) == Decimal("0.00")
    notes = [note for note in world.store.credit_notes.values() if note.invoice_id == april.invoice_id]
    assert [(note.period, note.to_due, note.to_credit) for note in notes] == [("2026-03", Decimal("7.20"), Decimal(0))]
    assert world.gateway.invoices[april.invoice_id].credited == Decimal("7.20")  # lowered at the processor too
    assert sum(note.to_credit for note in world.store.credit_notes.values()) == Decimal("0.00")
    assert world.store.billing["acme"].credit == Decimal("0.00")


def test_given_april_open_with_account_credit_applied_when_the_usage_goes_away_then_it_is_lowered_and_credited() -> (
    None
):
    """5.00 of account credit before April: April = 7.20 - 5.00 applied = 2.20, open. The 7.20 goes away: April's
    2.20 is asked no more (processor note 2.20) and the 5.00 of credit it spent on the withdrawn minutes comes back:
    credit 5.00, what the customer had. Nothing is recorded as not collected (nothing is asked for)."""
    world, events = World(), Events()
    april = _april_bills_late_usage(world, events, "5.00")
    assert (amounts(april, "credit"), april.total) == (["-5.00"], Decimal("2.20"))
    _withdraw_and_close_may(world)
    assert _due(world, april.invoice_id) == Decimal("0.00")
    assert world.gateway.invoices[april.invoice_id].credited == Decimal("2.20")
    assert world.store.billing["acme"].credit == Decimal("5.00")
    assert sum(note.uncollected for note in world.store.credit_notes.values()) == Decimal("0.00")


def test_given_april_paid_when_marchs_late_usage_goes_away_then_the_note_credits_it_once() -> None:
    """Guard (D166 amended, D191): April's 7.20 paid; May's note on March credits 7.20 (account credit), April is not
    lowered (it asks for nothing more); 3.60 + 7.20 paid - 7.20 credit = 3.60, March's standing usage."""
    world, events = World(), Events()
    april = _april_bills_late_usage(world, events)
    _pay(world, events, april.invoice_id, "evt_apr", 3)
    _withdraw_and_close_may(world)
    note = world.store.credit_notes[MARCH_NOTE]
    assert (note.to_due, note.to_credit, note.returned) == (Decimal("0.00"), Decimal("7.20"), Decimal("0.00"))
    assert world.store.billing["acme"].credit == Decimal("7.20")
    assert _due(world, april.invoice_id) == Decimal("7.20")


def test_given_april_paid_and_its_funds_withdrawn_by_a_dispute_when_the_usage_goes_away_then_nothing_is_credited() -> (
    None
):
    """April's 7.20 paid, disputed, the 7.20 withdrawn (the bank gave it back). The withdrawn minutes' 7.20 is given
    back already: May's note credits 0.00, 7.20 returned. March's 3.60 paid for minutes that stand: not credited."""
    world, events = World(), Events()
    april = _april_bills_late_usage(world, events)
    intent = world.gateway.settle(april.invoice_id, paid=True)
    _apply(world, events, events.add("evt_apr", "invoice.paid", _paid_invoice(world, april.invoice_id)))
    dispute = _fixture(
        "dispute", id="dp_apr", charge="ch_apr", payment_intent=intent, amount=720, status="needs_response"
    )
    _apply(world, events, events.add("evt_d1", "charge.dispute.created", dispute))
    _apply(world, events, events.add("evt_d2", "charge.dispute.funds_withdrawn", dispute))
    assert world.store.invoices[april.invoice_id].kept == Decimal("0.00")
    _withdraw_and_close_may(world)
    note = world.store.credit_notes[MARCH_NOTE]
    assert (note.to_credit, note.returned) == (Decimal("0.00"), Decimal("7.20"))
    assert world.store.billing["acme"].credit == Decimal("0.00")


def test_given_both_payments_withdrawn_when_marchs_dispute_is_won_then_the_withdrawn_late_usage_stays_uncredited() -> (
    None
):
    """D312. April's 7.20 (the late minutes) paid and withdrawn by a dispute, then March's 3.60 withdrawn too. The
    late minutes go away: May's note credits 0.00, 7.20 returned (April's money, given back already). March's dispute
    is won: its 3.60 is kept again, but it paid for March's own minutes, which stand - the note still credits 0.00
    (before: 3.60 from the period's pooled money, so the customer ended with 0.00 paid for 3.60 of usage)."""
    world, events = World(), Events()
    april = _april_bills_late_usage(world, events)
    march_id = "acme/2026-03"
    march_intent = world.gateway.invoices[march_id].payments[0]
    april_intent = world.gateway.settle(april.invoice_id, paid=True)
    _apply(world, events, events.add("evt_apr", "invoice.paid", _paid_invoice(world, april.invoice_id)))
    for name, intent, amount in (("apr", april_intent, 720), ("mar", march_intent, 360)):
        dispute = _fixture(
            "dispute",
            id=f"dp_{name}",
            charge=f"ch_{name}",
            payment_intent=intent,
            amount=amount,
            status="needs_response",
        )
        _apply(world, events, events.add(f"evt_{name}_d1", "charge.dispute.created", dispute))
        _apply(world, events, events.add(f"evt_{name}_d2", "charge.dispute.funds_withdrawn", dispute))
    assert world.store.invoices[march_id].kept == Decimal("0.00")
    _withdraw_and_close_may(world)
    note = world.store.credit_notes[MARCH_NOTE]
    assert (note.to_credit, note.returned) == (Decimal("0.00"), Decimal("7.20"))

    won = _fixture("dispute", id="dp_mar", charge="ch_mar", payment_intent=march_intent, amount=360, status="won")
    _apply(world, events, events.add("evt_mar_d3", "charge.dispute.funds_reinstated", won))

    assert world.store.invoices[march_id].kept == Decimal("3.60")
    note = world.store.credit_notes[MARCH_NOTE]
    assert (note.to_credit, note.returned) == (Decimal("0.00"), Decimal("7.20"))
    assert world.store.billing["acme"].credit == Decimal("0.00")
