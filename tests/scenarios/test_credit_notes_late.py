"""Late usage billed on a later invoice, credited by a note, refunded and voided: the same money goes back at most once
and what is still held is credited (D166 amended, D191, D192). The later invoice's money pays its own
period's usage first, then the late usage it billed (oldest period first), and only then fees and the rest; a refund
takes from that rest first. Figures worked by hand (price book 2026-01: video $0.00072; Personal includes 5,000
video minutes, Team 50,000 and a 29.00 fee)."""

from __future__ import annotations

from decimal import Decimal

import pytest

from kilo_billing.invoicing import BillingState, InvoiceStatus
from kilo_invoice.logic import apply_stripe_event, issue_early, refund_invoice
from tests.scenarios.test_card_payment_events import Events, _paid_invoice
from tests.scenarios.test_invoicing import APR, FEB, MAR, MAY, World, amounts, at, seg
from tests.scenarios.test_progressive_billing import mid, progressive
from tests.scenarios.test_voided_invoices import _void


def _pay(world: World, events: Events, invoice_id: str, event_id: str, when: int) -> None:
    world.gateway.settle(invoice_id, paid=True)
    paid = _paid_invoice(world, invoice_id)
    apply_stripe_event(world.store, world.bus, events, *events.add(event_id, "invoice.paid", paid), at(when, 4))
    assert world.store.invoices[invoice_id].status is InvoiceStatus.PAID


def test_given_a_note_on_late_usage_when_the_later_invoice_is_refunded_in_two_parts_then_at_most_its_fee_goes_back() -> (
    None
):
    """Team from February; March 50,000 video minutes (inside the allowance): 0.00 + April's fee 29.00, paid. 10,000
    March minutes late: April's invoice = May's fee 29.00 + 7.20 late = 36.20, paid. The late minutes go away again:
    May's note credits the 7.20 (account credit). Of April's 36.20, the 7.20 is given back as credit, so refunds may
    give back 29.00 (the fee) and no more: 7.20 then the rest (21.80) is 29.00 in all; a third is refused.
    Before: the second refund gave back 29.00 more (36.20 refunded + 7.20 credit = 43.40 on a 36.20 payment)."""
    world, events = World(), Events()
    world.signup("acme", (at(1, 2), "team"))
    world.close("acme", FEB)
    world.store.rate("acme", "2026-03", seg(at(1)), "video", 50_000)
    march = world.close("acme", MAR)
    _pay(world, events, march.invoice_id, "evt_mar", 2)
    world.store.rate("acme", "2026-03", seg(at(1)), "video", 10_000)  # late: 10,000 x 0.00072 = 7.20
    april = world.close("acme", APR)
    assert amounts(april, "adjustment") == ["7.20"]
    assert april.total == Decimal("36.20")
    _pay(world, events, april.invoice_id, "evt_apr", 3)
    world.store.rate("acme", "2026-03", seg(at(1)), "video", -10_000)  # -7.20
    world.close("acme", MAY)
    note = world.store.credit_notes["acme/2026-03/credit-2026-05"]
    assert (note.to_credit, note.returned) == (Decimal("7.20"), Decimal("0.00"))
    first = refund_invoice(world.store, world.gateway, "acme", april.invoice_id, Decimal("7.20"))
    assert first.refunded == Decimal("7.20")
    second = refund_invoice(world.store, world.gateway, "acme", april.invoice_id, None)
    assert second.refunded == Decimal("29.00")  # 7.20 + 21.80: the fee; the late 7.20 went back as credit
    with pytest.raises(ValueError, match=r"at most 0\.00"):
        refund_invoice(world.store, world.gateway, "acme", april.invoice_id, Decimal("0.01"))


def test_given_one_refund_of_an_invoice_billing_two_periods_late_usage_then_the_notes_credit_what_it_still_holds() -> (
    None
):
    """Personal from February. February and March each 5,000 video minutes (inside the allowance): 0.00 each. Then
    10,000 minutes late for each: April's invoice bills 7.20 (February) + 7.20 (March) = 14.40, paid. An operator
    refunds 7.20 of it: April still holds 7.20 of late usage (paid oldest first: February's). Both periods' late
    minutes go away: May's notes credit February 7.20 and March 0.00 (7.20 returned) - 7.20 refunded + 7.20 credit =
    the 14.40 paid. Before: the 7.20 refund counted as returning both periods' late usage (14.40): both notes credited
    0.00 and the customer kept 7.20 less than they paid for usage that never happened. April then refunds nothing."""
    world, events = World(), Events()
    world.signup("acme", (at(1, 2), "personal"))
    world.store.rate("acme", "2026-02", seg(at(2, 2)), "video", 5_000)
    assert world.close("acme", FEB).total == Decimal("0.00")
    world.store.rate("acme", "2026-03", seg(at(1)), "video", 5_000)
    assert world.close("acme", MAR).total == Decimal("0.00")
    world.store.rate("acme", "2026-02", seg(at(2, 2)), "video", 10_000)  # late
    world.store.rate("acme", "2026-03", seg(at(1)), "video", 10_000)  # late
    april = world.close("acme", APR)
    assert (sorted(amounts(april, "adjustment")), april.total) == (["7.20", "7.20"], Decimal("14.40"))
    _pay(world, events, april.invoice_id, "evt_apr", 3)
    assert refund_invoice(world.store, world.gateway, "acme", april.invoice_id, Decimal("7.20")).refunded == Decimal(
        "7.20"
    )
    world.store.rate("acme", "2026-02", seg(at(2, 2)), "video", -10_000)  # -7.20
    world.store.rate("acme", "2026-03", seg(at(1)), "video", -10_000)  # -7.20
    world.close("acme", MAY)
    february = world.store.credit_notes["acme/2026-02/credit-2026-05"]
    march = world.store.credit_notes["acme/2026-03/credit-2026-05"]
    assert (february.to_credit, february.returned) == (Decimal("7.20"), Decimal("0.00"))
    assert (march.to_credit, march.returned) == (Decimal("0.00"), Decimal("7.20"))
    assert world.store.billing["acme"].credit == Decimal("7.20")
    with pytest.raises(ValueError, match=r"at most 0\.00"):
        refund_invoice(world.store, world.gateway, "acme", april.invoice_id, Decimal("0.01"))


def test_given_a_note_credited_an_open_early_invoice_s_account_credit_when_it_is_voided_then_no_credit_comes_twice() -> (
    None
):
    """Personal, progressive at 5.00, 5.00 of account credit. March 15,000 video minutes: the early invoice bills
    10,000 x 0.00072 = 7.20 less the 5.00 credit = 2.20, left open; March's close 7.20 - 7.20 = 0.00. The 10,000
    minutes go away: April's note credits the 5.00 of credit the early invoice spent and a note on the early invoice
    lowers its 2.20 (D313; before, 2.20 not collected and still asked for). An operator voids the early invoice:
    its 5.00 came back through the note already, so the credit stays 5.00 - what the customer had. Before: 10.00
    (the 5.00 given back twice)."""
    world, events = World(), Events()
    world.signup("acme", (at(1, 2), "personal"))
    progressive(world, "acme", "5.00")
    world.close("acme", FEB)
    world.store.billing["acme"] = BillingState(credit=Decimal("5.00"))
    world.store.rate("acme", "2026-03", seg(at(1)), "video", 15_000)
    (early,) = issue_early(world.deps, "acme", MAR, mid(10))
    assert (amounts(world.store.invoices[early.invoice_id], "credit"), early.total) == (["-5.00"], Decimal("2.20"))
    assert world.close("acme", MAR).total == Decimal("0.00")
    world.store.rate("acme", "2026-03", seg(at(1)), "video", -10_000)  # -7.20
    world.close("acme", APR)
    note = world.store.credit_notes["acme/2026-03/credit-2026-04"]
    lowered = world.store.credit_notes["acme/2026-03/credit-2026-04/on-2026-03/early-1"]  # D313: asked no more
    assert (note.to_credit, note.uncollected, lowered.to_due) == (Decimal("5.00"), Decimal("0.00"), Decimal("2.20"))
    assert world.store.billing["acme"].credit == Decimal("5.00")
    _void(world, events, early.invoice_id)
    assert world.store.invoices[early.invoice_id].status is InvoiceStatus.VOID
    assert world.store.billing["acme"].credit == Decimal("5.00")


def test_given_a_note_credited_a_later_open_invoice_s_account_credit_when_it_is_voided_then_no_credit_comes_twice() -> (
    None
):
    """Personal, 5.00 of account credit. March 5,000 video minutes: 0.00. 10,000 minutes late: April's invoice bills
    7.20 less the 5.00 credit = 2.20, left open. The late minutes go away: May's note on March credits the 5.00 April
    spent on them and a note on April lowers its 2.20 (D306; before, 2.20 not collected and still asked for). An
    operator voids April: the credit stays 5.00. Before D192: 10.00."""
    world, events = World(), Events()
    world.signup("acme", (at(1, 2), "personal"))
    world.close("acme", FEB)
    world.store.billing["acme"] = BillingState(credit=Decimal("5.00"))
    world.store.rate("acme", "2026-03", seg(at(1)), "video", 5_000)
    assert world.close("acme", MAR).total == Decimal("0.00")
    world.store.rate("acme", "2026-03", seg(at(1)), "video", 10_000)  # late: 7.20
    april = world.close("acme", APR)
    assert (amounts(april, "credit"), april.total) == (["-5.00"], Decimal("2.20"))
    world.store.rate("acme", "2026-03", seg(at(1)), "video", -10_000)  # -7.20
    world.close("acme", MAY)
    note = world.store.credit_notes["acme/2026-03/credit-2026-05"]
    lowered = world.store.credit_notes["acme/2026-03/credit-2026-05/on-2026-04"]  # D306: asked no more
    assert (note.to_credit, note.uncollected, lowered.to_due) == (Decimal("5.00"), Decimal("0.00"), Decimal("2.20"))
    assert world.store.billing["acme"].credit == Decimal("5.00")
    _void(world, events, april.invoice_id)
    assert world.store.invoices[april.invoice_id].status is InvoiceStatus.VOID
    assert world.store.billing["acme"].credit == Decimal("5.00")
