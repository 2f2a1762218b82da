"""A credit note gives back what the customer paid for the period's usage, wherever it was billed (D166; D131): the
period's paid early (progressive) invoices and the account credit its invoices applied count as paid, as the
period-end invoice's own payment does; its next month's fee does not, nor an invoice never paid. Before, a note against
a period-end invoice that kept 0.00 (its usage billed early, or paid by account credit) recorded the whole reduction
as "already returned" though nothing was, and the customer stayed overbilled. Figures worked by hand (price book 2026-01: video $0.00072; Personal includes 5,000 video minutes)."""

from __future__ import annotations

from dataclasses import replace
from decimal import Decimal

import pytest

from kilo_billing.invoicing import InvoiceRecord, InvoiceStatus, amount_due
from kilo_invoice.logic import apply_stripe_event, issue_early, refund_invoice
from tests.scenarios.test_card_payment_events import Events, _fixture, _paid_invoice
from tests.scenarios.test_invoicing import APR, FEB, MAR, MAY, World, amounts, at, seg
from tests.scenarios.test_progressive_billing import mid, progressive
from tests.scenarios.test_voided_invoices import _void

EARLY = "acme/2026-03/early-1"


def _personal_billed_early(world: World) -> None:
    """Personal from February, progressive at 5.00: 15,000 video minutes in March, 10,000 over x 0.00072 = 7.20
    billed early; March's close then bills 7.20 - 7.20 = 0.00 (paid at once: nothing to collect)."""
    world.signup("acme", (at(1, 2), "personal"))
    progressive(world, "acme", "5.00")
    assert world.close("acme", FEB).total == Decimal("0.00")
    world.store.rate("acme", "2026-03", seg(at(1)), "video", 15_000)
    (early,) = issue_early(world.deps, "acme", MAR, mid(10))
    assert (early.invoice_id, early.total) == (EARLY, Decimal("7.20"))
    march = world.close("acme", MAR)
    assert (march.total, march.status) == (Decimal("0.00"), InvoiceStatus.PAID)


def _pay_early(world: World, events: Events) -> None:
    world.gateway.settle(EARLY, paid=True)
    paid = _paid_invoice(world, EARLY)
    apply_stripe_event(world.store, world.bus, events, *events.add("evt_paid", "invoice.paid", paid), mid(11))
    assert world.store.invoices[EARLY].status is InvoiceStatus.PAID


def test_given_usage_billed_early_when_it_shrinks_after_the_close_then_the_note_gives_it_back_as_credit() -> None:
    world, events = World(), Events()
    _personal_billed_early(world)
    _pay_early(world, events)
    world.store.rate("acme", "2026-03", seg(at(1)), "video", -10_000)  # March now 5,000: inside the allowance, -7.20
    april = world.close("acme", APR)
    note = world.store.credit_notes["acme/2026-03/credit-2026-04"]
    # the 7.20 was billed and paid by the early invoice: account credit, nothing "already returned"
    assert (note.to_due, note.to_credit, note.returned) == (Decimal("0.00"), Decimal("7.20"), Decimal("0.00"))
    assert april.total == Decimal("0.00")  # Personal, no April usage: the credit waits for the next positive invoice
    assert world.store.billing["acme"].credit == Decimal("7.20")


def test_given_the_early_invoice_still_unpaid_when_its_usage_shrinks_then_it_is_lowered_and_not_refunded_once_paid() -> (
    None
):
    """D313 (amending D166's "not lowered"): the early invoice's 7.20 is asked no more - a note on it lowers its
    amount due to 0.00 -, no spendable credit (money never collected), nothing recorded as not collected (nothing is
    asked for). Before: 7.20 still asked, recorded on March's note as not collected, and refundable 7.20 once paid."""
    world, events = World(), Events()
    _personal_billed_early(world)  # the early invoice's 7.20 not paid yet (open at the processor)
    world.store.rate("acme", "2026-03", seg(at(1)), "video", -10_000)  # -7.20
    world.close("acme", APR)
    note = world.store.credit_notes["acme/2026-03/credit-2026-04"]
    assert (note.to_due, note.to_credit, note.returned, note.uncollected) == (Decimal("0.00"),) * 4
    lowered = world.store.credit_notes["acme/2026-03/credit-2026-04/on-2026-03/early-1"]
    assert (lowered.invoice_id, lowered.to_due) == (EARLY, Decimal("7.20"))
    assert amount_due(world.store.invoices[EARLY], world.store.credit_notes.values()) == Decimal("0.00")
    assert world.store.billing["acme"].credit == Decimal("0.00")
    _pay_early(world, events)  # paid afterwards: nothing was asked for the withdrawn usage, nothing to give back
    with pytest.raises(ValueError, match=r"at most 0\.00"):
        refund_invoice(world.store, world.gateway, "acme", EARLY, Decimal("0.01"))


def test_given_a_period_end_invoice_paid_by_account_credit_when_its_usage_shrinks_then_the_credit_comes_back() -> None:
    world = World()
    world.signup("acme", (at(1, 2), "personal"))
    world.close("acme", FEB)
    world.store.billing["acme"] = replace(world.store.billing["acme"], credit=Decimal("7.20"))
    world.store.rate("acme", "2026-03", seg(at(1)), "video", 15_000)  # 7.20, all paid by the credit
    march = world.close("acme", MAR)
    assert (amounts(march, "credit"), march.total) == (["-7.20"], Decimal("0.00"))
    world.store.rate("acme", "2026-03", seg(at(1)), "video", -10_000)  # -7.20
    world.close("acme", APR)
    note = world.store.credit_notes["acme/2026-03/credit-2026-04"]
    assert (note.to_credit, note.returned) == (Decimal("7.20"), Decimal("0.00"))
    assert world.store.billing["acme"].credit == Decimal("7.20")  # what the customer had before March


def test_given_the_note_credited_what_the_early_invoice_billed_then_the_early_invoice_is_not_refunded_too() -> None:
    world, events = World(), Events()
    _personal_billed_early(world)
    _pay_early(world, events)
    world.store.rate("acme", "2026-03", seg(at(1)), "video", -10_000)  # -7.20
    world.close("acme", APR)
    assert world.store.credit_notes["acme/2026-03/credit-2026-04"].to_credit == Decimal("7.20")
    with pytest.raises(ValueError, match=r"at most 0\.00"):  # given back once already, as account credit
        refund_invoice(world.store, world.gateway, "acme", EARLY, Decimal("0.01"))


def test_given_the_early_invoice_refunded_first_then_the_note_gives_no_credit_for_it() -> None:
    world, events = World(), Events()
    _personal_billed_early(world)
    _pay_early(world, events)
    assert refund_invoice(world.store, world.gateway, "acme", EARLY, None).refunded == Decimal("7.20")
    world.store.rate("acme", "2026-03", seg(at(1)), "video", -10_000)  # -7.20
    world.close("acme", APR)
    note = world.store.credit_notes["acme/2026-03/credit-2026-04"]
    assert (note.to_credit, note.returned) == (Decimal("0.00"), Decimal("7.20"))  # the refund gave it back
    assert world.store.billing["acme"].credit == Decimal("0.00")


# --- Team (29.00 a month, 50,000 video minutes included): the period-end invoice also bills the next month's fee -----


def _team_billed_early_and_paid(world: World, events: Events) -> str:
    """Team from February, progressive at 5.00. 60,000 video minutes in March: 10,000 over x 0.00072 = 7.20 billed
    early and paid by card. March's close: usage 7.20 - 7.20 billed early + April's fee in advance 29.00 = 29.00, paid:
    none of its 29.00 paid for March's usage. Returns the early invoice's payment intent."""
    world.signup("acme", (at(1, 2), "team"))
    progressive(world, "acme", "5.00")
    assert world.close("acme", FEB).total == Decimal("58.00")  # February's first month + March's fee in advance
    world.store.rate("acme", "2026-03", seg(at(1)), "video", 60_000)
    (early,) = issue_early(world.deps, "acme", MAR, mid(10))
    assert (early.invoice_id, early.total) == (EARLY, Decimal("7.20"))
    intent = world.gateway.settle(EARLY, paid=True)
    assert intent is not None
    paid = _paid_invoice(world, EARLY)
    apply_stripe_event(
        world.store, world.bus, events, *events.add("evt_e", "invoice.paid", paid), mid(11), world.gateway
    )
    march = world.close("acme", MAR)
    assert march.total == Decimal("29.00")
    world.gateway.settle(march.invoice_id, paid=True)
    paid = _paid_invoice(world, march.invoice_id)
    apply_stripe_event(world.store, world.bus, events, *events.add("evt_m", "invoice.paid", paid), at(2, 4))
    assert world.store.invoices[march.invoice_id].status is InvoiceStatus.PAID
    return intent


def test_given_team_when_the_note_credited_the_early_usage_then_the_early_invoice_is_not_refunded_too() -> None:
    world, events = World(), Events()
    _team_billed_early_and_paid(world, events)
    world.store.rate("acme", "2026-03", seg(at(1)), "video", -10_000)  # March 50,000: inside the allowance, -7.20
    april = world.close("acme", APR)
    note = world.store.credit_notes["acme/2026-03/credit-2026-04"]
    assert (note.to_credit, note.returned) == (Decimal("7.20"), Decimal("0.00"))
    assert april.total == Decimal("21.80")  # May's fee 29.00 - 7.20 of credit
    # the 7.20 the early invoice kept is given back already (as credit): March's 29.00 (April's fee) does not stand in
    with pytest.raises(ValueError, match=r"at most 0\.00"):
        refund_invoice(world.store, world.gateway, "acme", EARLY, Decimal("0.01"))
    # April's fee, billed by March's close, paid for no March usage: it stays refundable whole
    assert refund_invoice(world.store, world.gateway, "acme", "acme/2026-03", None).refunded == Decimal("29.00")


def test_given_team_when_the_early_invoice_was_refunded_first_then_the_note_gives_no_credit_for_it() -> None:
    world, events = World(), Events()
    _team_billed_early_and_paid(world, events)
    assert refund_invoice(world.store, world.gateway, "acme", EARLY, None).refunded == Decimal("7.20")
    world.store.rate("acme", "2026-03", seg(at(1)), "video", -10_000)  # -7.20
    april = world.close("acme", APR)
    note = world.store.credit_notes["acme/2026-03/credit-2026-04"]
    assert (note.to_credit, note.returned) == (Decimal("0.00"), Decimal("7.20"))  # the refund gave it back
    assert april.total == Decimal("29.00")  # May's fee, no credit
    assert world.store.billing["acme"].credit == Decimal("0.00")


def test_given_team_when_the_early_invoice_s_dispute_was_lost_first_then_the_note_gives_no_credit_for_it() -> None:
    world, events = World(), Events()
    intent = _team_billed_early_and_paid(world, events)
    lost = _fixture("dispute", id="dp_early", charge="ch_early", payment_intent=intent, amount=720, status="lost")
    apply_stripe_event(
        world.store, world.bus, events, *events.add("evt_w", "charge.dispute.funds_withdrawn", lost), at(2, 5)
    )
    assert world.store.invoices[EARLY].kept == Decimal("0.00")
    world.store.rate("acme", "2026-03", seg(at(1)), "video", -10_000)  # -7.20
    world.close("acme", APR)
    note = world.store.credit_notes["acme/2026-03/credit-2026-04"]
    assert (note.to_credit, note.returned) == (Decimal("0.00"), Decimal("7.20"))  # the bank gave it back
    assert world.store.billing["acme"].credit == Decimal("0.00")


# --- an open period-end invoice: a note lowers its next month's fee only out of money the period still holds --------


def _team_billed_early_march_open(world: World, events: Events) -> InvoiceRecord:
    """As ``_team_billed_early_and_paid`` (7.20 billed early and paid), but March's 29.00 (7.20 - 7.20 billed early
    + April's fee) is left open: none of what it asks for is March's usage."""
    world.signup("acme", (at(1, 2), "team"))
    progressive(world, "acme", "5.00")
    assert world.close("acme", FEB).total == Decimal("58.00")
    world.store.rate("acme", "2026-03", seg(at(1)), "video", 60_000)
    (early,) = issue_early(world.deps, "acme", MAR, mid(10))
    assert (early.invoice_id, early.total) == (EARLY, Decimal("7.20"))
    world.gateway.settle(EARLY, paid=True)
    paid = _paid_invoice(world, EARLY)
    apply_stripe_event(
        world.store, world.bus, events, *events.add("evt_e", "invoice.paid", paid), mid(11), world.gateway
    )
    march = world.close("acme", MAR)
    assert (march.total, march.status) == (Decimal("29.00"), InvoiceStatus.OPEN)
    return march


def test_given_team_with_march_open_when_the_early_invoice_was_refunded_first_then_the_note_lowers_nothing() -> None:
    world, events = World(), Events()
    _team_billed_early_march_open(world, events)
    assert refund_invoice(world.store, world.gateway, "acme", EARLY, None).refunded == Decimal("7.20")
    world.store.rate("acme", "2026-03", seg(at(1)), "video", -10_000)  # March 50,000: inside the allowance, -7.20
    world.close("acme", APR)
    note = world.store.credit_notes["acme/2026-03/credit-2026-04"]
    # the 7.20 the usage cost was refunded: taking it off April's fee on March's invoice would give it back twice
    assert (note.to_due, note.to_credit, note.returned, note.uncollected) == (
        Decimal("0.00"),
        Decimal("0.00"),
        Decimal("7.20"),
        Decimal("0.00"),
    )
    march = world.store.invoices["acme/2026-03"]
    assert amount_due(march, world.store.credit_notes.values()) == Decimal("29.00")  # April's fee, whole
    assert world.store.billing["acme"].credit == Decimal("0.00")


def test_given_team_with_march_open_when_the_note_lowered_april_s_fee_then_the_early_invoice_is_not_refunded_too() -> (
    None
):
    world, events = World(), Events()
    _team_billed_early_march_open(world, events)
    world.store.rate("acme", "2026-03", seg(at(1)), "video", -10_000)  # -7.20
    world.close("acme", APR)
    note = world.store.credit_notes["acme/2026-03/credit-2026-04"]
    # the early invoice's 7.20 comes back as 7.20 off what March still asks for: 29.00 - 7.20 = 21.80
    assert (note.to_due, note.to_credit, note.returned) == (Decimal("7.20"), Decimal("0.00"), Decimal("0.00"))
    march = world.store.invoices["acme/2026-03"]
    assert amount_due(march, world.store.credit_notes.values()) == Decimal("21.80")
    # so the early invoice's 7.20 is given back already: not refunded as well
    with pytest.raises(ValueError, match=r"at most 0\.00"):
        refund_invoice(world.store, world.gateway, "acme", EARLY, Decimal("0.01"))


# --- an early invoice never paid: nothing of it is given back as credit (D166 amended) -------------------------------


def _early_event(world: World, events: Events, event_id: str, event_type: str, status: str) -> None:
    gateway_id = world.store.invoices[EARLY].gateway_id
    meta = {"invoice_id": EARLY, "kilo_invoice_id": EARLY, "account_id": "acme"}
    obj = _fixture("invoice", id=gateway_id, status=status, metadata=meta, amount_paid=0, amount_remaining=720)
    apply_stripe_event(world.store, world.bus, events, *events.add(event_id, event_type, obj), mid(12), world.gateway)


def test_given_the_early_invoice_written_off_when_its_usage_shrinks_then_the_note_gives_no_credit_for_it() -> None:
    world, events = World(), Events()
    _personal_billed_early(world)  # early 7.20 (card), March 0.00 paid at once
    _early_event(world, events, "evt_f", "invoice.payment_failed", "open")
    _early_event(world, events, "evt_u", "invoice.marked_uncollectible", "uncollectible")
    assert world.store.invoices[EARLY].status is InvoiceStatus.UNCOLLECTIBLE
    world.store.rate("acme", "2026-03", seg(at(1)), "video", -10_000)  # -7.20
    world.close("acme", APR)
    note = world.store.credit_notes["acme/2026-03/credit-2026-04"]
    # the 7.20 was never paid (written off): no spendable credit for it; nothing else paid for March's usage
    assert (note.to_credit, note.returned, note.uncollected) == (Decimal("0.00"), Decimal("0.00"), Decimal("7.20"))
    assert world.store.billing["acme"].credit == Decimal("0.00")


def test_given_a_carried_early_invoice_when_its_carrier_was_refunded_then_the_note_gives_no_credit_for_it() -> None:
    """An early invoice stored CARRIED (as one below the card minimum was before D165; the bound does not look at
    why): March's close bills it (usage 7.20 - 7.20 billed early + 7.20 carried = 7.20), paid by card, then refunded
    whole. The carried invoice itself was never paid: counted as held, it gave 7.20 of credit for money refunded."""
    world, events = World(), Events()
    world.signup("acme", (at(1, 2), "personal"))
    progressive(world, "acme", "5.00")
    world.close("acme", FEB)
    world.store.rate("acme", "2026-03", seg(at(1)), "video", 15_000)  # 10,000 over: 7.20
    (early,) = issue_early(world.deps, "acme", MAR, mid(10))
    world.store.invoices[EARLY] = replace(early, status=InvoiceStatus.CARRIED)
    march = world.close("acme", MAR)
    assert (amounts(march, "carried"), march.total) == (["7.20"], Decimal("7.20"))
    world.gateway.settle(march.invoice_id, paid=True)
    paid = _paid_invoice(world, march.invoice_id)
    apply_stripe_event(world.store, world.bus, events, *events.add("evt_m", "invoice.paid", paid), at(2, 4))
    assert refund_invoice(world.store, world.gateway, "acme", march.invoice_id, None).refunded == Decimal("7.20")
    world.store.rate("acme", "2026-03", seg(at(1)), "video", -10_000)  # -7.20
    world.close("acme", APR)
    note = world.store.credit_notes["acme/2026-03/credit-2026-04"]
    assert (note.to_credit, note.returned) == (Decimal("0.00"), Decimal("7.20"))  # the refund gave it back
    assert world.store.billing["acme"].credit == Decimal("0.00")


def test_given_a_carried_early_invoice_paid_by_its_carrier_when_its_usage_shrinks_then_the_note_credits_it_once() -> (
    None
):
    world, events = World(), Events()
    world.signup("acme", (at(1, 2), "personal"))
    progressive(world, "acme", "5.00")
    world.close("acme", FEB)
    world.store.rate("acme", "2026-03", seg(at(1)), "video", 15_000)
    (early,) = issue_early(world.deps, "acme", MAR, mid(10))
    world.store.invoices[EARLY] = replace(early, status=InvoiceStatus.CARRIED)
    march = world.close("acme", MAR)
    world.gateway.settle(march.invoice_id, paid=True)
    paid = _paid_invoice(world, march.invoice_id)
    apply_stripe_event(world.store, world.bus, events, *events.add("evt_m", "invoice.paid", paid), at(2, 4))
    world.store.rate("acme", "2026-03", seg(at(1)), "video", -10_000)  # -7.20
    world.close("acme", APR)
    note = world.store.credit_notes["acme/2026-03/credit-2026-04"]
    assert (note.to_credit, note.returned) == (Decimal("7.20"), Decimal("0.00"))  # paid once, by March's close
    with pytest.raises(ValueError, match=r"at most 0\.00"):  # and given back: nothing of March left to refund
        refund_invoice(world.store, world.gateway, "acme", march.invoice_id, Decimal("0.01"))


# --- a note on an unpaid period-end invoice beyond what it asks for (D166 amended, s8) ---------------------------


def _personal_early_then_open_close(world: World) -> None:
    """Personal, progressive at 5.00: 15,000 video minutes by March 10 (10,000 over x 0.00072 = 7.20 billed early),
    1,000 more afterwards. March's close: 11,000 over x 0.00072 = 7.92 - 7.20 billed early = 0.72, sent to the
    processor (above its 0.50 minimum) and left open."""
    world.signup("acme", (at(1, 2), "personal"))
    progressive(world, "acme", "5.00")
    world.close("acme", FEB)
    world.store.rate("acme", "2026-03", seg(at(1)), "video", 15_000)
    (early,) = issue_early(world.deps, "acme", MAR, mid(10))
    assert (early.invoice_id, early.total) == (EARLY, Decimal("7.20"))
    world.store.rate("acme", "2026-03", seg(at(1)), "video", 1_000)
    march = world.close("acme", MAR)
    assert (march.total, march.status) == (Decimal("0.72"), InvoiceStatus.OPEN)


def test_given_an_open_period_end_invoice_and_an_unpaid_early_one_then_the_rest_beyond_its_total_is_no_credit() -> None:
    world = World()
    _personal_early_then_open_close(world)  # neither invoice paid
    world.store.rate("acme", "2026-03", seg(at(1)), "video", -11_000)  # March 5,000: inside the allowance, -7.92
    world.close("acme", APR)
    note = world.store.credit_notes["acme/2026-03/credit-2026-04"]
    # 0.72 off what March still asks; the other 7.20 was billed by the early invoice, never paid: not account credit,
    # but asked no more - 7.20 off the early invoice (D313; before: recorded as not collected, still asked)
    assert (note.to_due, note.to_credit, note.returned, note.uncollected) == (
        Decimal("0.72"),
        Decimal("0.00"),
        Decimal("0.00"),
        Decimal("0.00"),
    )
    assert world.store.credit_notes["acme/2026-03/credit-2026-04/on-2026-03/early-1"].to_due == Decimal("7.20")
    assert world.store.billing["acme"].credit == Decimal("0.00")


def test_given_an_open_period_end_invoice_and_a_paid_early_one_then_the_rest_beyond_its_total_is_credit() -> None:
    world, events = World(), Events()
    _personal_early_then_open_close(world)
    _pay_early(world, events)  # the early invoice's 7.20 paid by card
    world.store.rate("acme", "2026-03", seg(at(1)), "video", -11_000)  # -7.92
    world.close("acme", APR)
    note = world.store.credit_notes["acme/2026-03/credit-2026-04"]
    # 0.72 off March's amount due; 7.20 that the early invoice's payment made: account credit
    assert (note.to_due, note.to_credit, note.returned) == (Decimal("0.72"), Decimal("7.20"), Decimal("0.00"))
    assert world.store.billing["acme"].credit == Decimal("7.20")


# --- late usage billed on a later invoice counts toward its period's note bound (D166 amended, s8) ----------------


def _march_late_usage_paid_in_april(world: World, events: Events) -> tuple[str, str]:
    """Personal from February. March: 5,000 video minutes, inside the allowance: 0.00 (paid at once). 10,000 more
    minutes of March arrive late: April's close bills them as late usage, 10,000 x 0.00072 = 7.20, paid by card.
    Returns April's invoice id and the payment intent that paid it."""
    world.signup("acme", (at(1, 2), "personal"))
    world.close("acme", FEB)
    world.store.rate("acme", "2026-03", seg(at(1)), "video", 5_000)
    assert world.close("acme", MAR).total == Decimal("0.00")
    world.store.rate("acme", "2026-03", seg(at(1)), "video", 10_000)  # late: March now 15,000
    april = world.close("acme", APR)
    assert (amounts(april, "adjustment"), april.total) == (["7.20"], Decimal("7.20"))
    intent = world.gateway.settle(april.invoice_id, paid=True)
    assert intent is not None
    paid = _paid_invoice(world, april.invoice_id)
    paid_event = events.add("evt_apr", "invoice.paid", paid)
    apply_stripe_event(world.store, world.bus, events, *paid_event, at(3, 5), world.gateway)
    assert world.store.invoices[april.invoice_id].status is InvoiceStatus.PAID
    return april.invoice_id, intent


def test_given_late_usage_paid_on_a_later_invoice_when_it_shrinks_then_the_note_gives_it_back_as_credit() -> None:
    world, events = World(), Events()
    april, _ = _march_late_usage_paid_in_april(world, events)
    world.store.rate("acme", "2026-03", seg(at(1)), "video", -10_000)  # March back to 5,000: -7.20
    world.close("acme", MAY)
    note = world.store.credit_notes["acme/2026-03/credit-2026-05"]
    # the 7.20 was paid, on April's invoice: account credit, nothing "already returned"
    assert (note.to_due, note.to_credit, note.returned) == (Decimal("0.00"), Decimal("7.20"), Decimal("0.00"))
    assert world.store.billing["acme"].credit == Decimal("7.20")
    with pytest.raises(ValueError, match=r"at most 0\.00"):  # given back once already, as account credit
        refund_invoice(world.store, world.gateway, "acme", april, Decimal("0.01"))


def test_given_the_later_invoice_refunded_first_then_the_note_gives_no_credit_for_its_late_usage() -> None:
    world, events = World(), Events()
    april, _ = _march_late_usage_paid_in_april(world, events)
    assert refund_invoice(world.store, world.gateway, "acme", april, None).refunded == Decimal("7.20")
    world.store.rate("acme", "2026-03", seg(at(1)), "video", -10_000)  # -7.20
    world.close("acme", MAY)
    note = world.store.credit_notes["acme/2026-03/credit-2026-05"]
    assert (note.to_credit, note.returned) == (Decimal("0.00"), Decimal("7.20"))  # the refund gave it back
    assert world.store.billing["acme"].credit == Decimal("0.00")


def test_given_team_when_the_early_invoice_s_dispute_is_won_after_the_note_then_its_usage_is_credited_once() -> None:
    """The early invoice's 7.20 withdrawn by a dispute when the note is made (0.00 credit, 7.20 returned); the dispute
    won and the funds reinstated on the early invoice: the note's 7.20 becomes account credit, once (D166 amended,
    s8: before, only a dispute on the period-end invoice was looked at)."""
    world, events = World(), Events()
    intent = _team_billed_early_and_paid(world, events)
    dispute = {"id": "dp_early", "charge": "ch_early", "payment_intent": intent, "amount": 720}
    withdrawn = _fixture("dispute", **dispute, status="needs_response")
    apply_stripe_event(
        world.store, world.bus, events, *events.add("evt_w", "charge.dispute.funds_withdrawn", withdrawn), at(2, 5)
    )
    assert world.store.invoices[EARLY].kept == Decimal("0.00")
    world.store.rate("acme", "2026-03", seg(at(1)), "video", -10_000)  # -7.20
    world.close("acme", APR)
    note = world.store.credit_notes["acme/2026-03/credit-2026-04"]
    assert (note.to_credit, note.returned) == (Decimal("0.00"), Decimal("7.20"))
    won = _fixture("dispute", **dispute, status="won")
    reinstated = events.add("evt_r", "charge.dispute.funds_reinstated", won)
    apply_stripe_event(world.store, world.bus, events, *reinstated, at(6, 5))
    assert world.store.invoices[EARLY].kept == Decimal("7.20")
    note = world.store.credit_notes["acme/2026-03/credit-2026-04"]
    assert (note.to_credit, note.returned, note.version) == (Decimal("7.20"), Decimal("0.00"), 2)
    assert world.store.billing["acme"].credit == Decimal("7.20")
    apply_stripe_event(world.store, world.bus, events, *reinstated, at(6, 5))  # delivered again: nothing more
    assert world.store.billing["acme"].credit == Decimal("7.20")
    with pytest.raises(ValueError, match=r"at most 0\.00"):  # credited: the early invoice is not refunded too
        refund_invoice(world.store, world.gateway, "acme", EARLY, Decimal("0.01"))


def test_given_late_usage_paid_later_and_withdrawn_when_the_dispute_is_won_then_the_note_credits_it() -> None:
    """March's late usage paid on April's invoice (7.20); April's payment disputed and withdrawn; -10,000 minutes
    found by May's close: 0.00 credit, 7.20 returned; the dispute won: 7.20 credit."""
    world, events = World(), Events()
    april, intent = _march_late_usage_paid_in_april(world, events)
    dispute = {"id": "dp_apr", "charge": "ch_apr", "payment_intent": intent, "amount": 720}
    withdrawn = _fixture("dispute", **dispute, status="needs_response")
    apply_stripe_event(
        world.store, world.bus, events, *events.add("evt_w", "charge.dispute.funds_withdrawn", withdrawn), at(5, 5)
    )
    assert world.store.invoices[april].kept == Decimal("0.00")
    world.store.rate("acme", "2026-03", seg(at(1)), "video", -10_000)  # -7.20
    world.close("acme", MAY)
    note = world.store.credit_notes["acme/2026-03/credit-2026-05"]
    assert (note.to_credit, note.returned) == (Decimal("0.00"), Decimal("7.20"))
    reinstated = events.add("evt_r", "charge.dispute.funds_reinstated", _fixture("dispute", **dispute, status="won"))
    apply_stripe_event(world.store, world.bus, events, *reinstated, at(8, 6))
    note = world.store.credit_notes["acme/2026-03/credit-2026-05"]
    assert (note.to_credit, note.returned) == (Decimal("7.20"), Decimal("0.00"))
    assert world.store.billing["acme"].credit == Decimal("7.20")


def test_given_one_early_invoice_refunded_and_one_unpaid_then_the_note_tells_returned_from_not_collected() -> None:
    """Personal, progressive at 5.00: 15,000 video minutes by March 10 (7.20 billed early, paid, then refunded), 8,000
    more by March 20 (8,000 x 0.00072 = 5.76 billed early, left open); March's close 0.00. -18,000 minutes late
    (March 5,000: -12.96): nothing paid for March is still with us - 7.20 was refunded (returned); the 5.76 never paid
    is asked no more, a note lowering the second early invoice (D313; before: 5.76 not collected, still asked)."""
    world, events = World(), Events()
    world.signup("acme", (at(1, 2), "personal"))
    progressive(world, "acme", "5.00")
    world.close("acme", FEB)
    world.store.rate("acme", "2026-03", seg(at(1)), "video", 15_000)
    issue_early(world.deps, "acme", MAR, mid(10))
    _pay_early(world, events)
    assert refund_invoice(world.store, world.gateway, "acme", EARLY, None).refunded == Decimal("7.20")
    world.store.rate("acme", "2026-03", seg(at(1)), "video", 8_000)
    second = [i for i in issue_early(world.deps, "acme", MAR, mid(20)) if i.invoice_id != EARLY]
    assert [(i.total, i.status) for i in second] == [(Decimal("5.76"), InvoiceStatus.OPEN)]
    assert world.close("acme", MAR).total == Decimal("0.00")
    world.store.rate("acme", "2026-03", seg(at(1)), "video", -18_000)
    world.close("acme", APR)
    note = world.store.credit_notes["acme/2026-03/credit-2026-04"]
    assert (note.to_credit, note.returned, note.uncollected) == (Decimal("0.00"), Decimal("7.20"), Decimal("0.00"))
    assert world.store.credit_notes["acme/2026-03/credit-2026-04/on-2026-03/early-2"].to_due == Decimal("5.76")


def test_given_a_note_credited_the_paid_early_invoice_when_the_period_end_invoice_is_voided_then_the_credit_stays() -> (
    None
):
    """D190: the note's 7.20 of account credit came from the early invoice's payment, not from March's open
    0.72 invoice; an operator voiding March (it collected nothing) takes back only what March applied (0.00) and
    what the note credited beyond the other invoices' money (0.00). Before, the void took the 7.20 back: the customer
    paid 7.20 for usage that never happened and kept nothing of it."""
    world, events = World(), Events()
    _personal_early_then_open_close(world)
    _pay_early(world, events)
    world.store.rate("acme", "2026-03", seg(at(1)), "video", -11_000)  # -7.92: 0.72 off March, 7.20 credit
    world.close("acme", APR)
    assert world.store.billing["acme"].credit == Decimal("7.20")
    _void(world, events, "acme/2026-03")
    assert world.store.invoices["acme/2026-03"].status is InvoiceStatus.VOID
    assert world.store.billing["acme"].credit == Decimal("7.20")
