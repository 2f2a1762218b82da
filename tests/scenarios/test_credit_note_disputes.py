"""A credit note made while a dispute holds the invoice's funds (Given/When/Then; D131 amended): the note gives at
most what the invoice keeps, so with the funds withdrawn the late-usage credit is recorded as ``returned``; when the
dispute is won and the funds come back, the invoice keeps them again and that part becomes account credit, once, in
the same write as the invoice; a dispute lost leaves it returned (the bank kept the payment).

Hand-worked: acme, Team, 60,000 video minutes in March 2026 -> 10,000 over x 0.00072 = 7.20 + 29.00 + 29.00 = 65.20,
paid by card. A capped call shortened afterwards takes 10,000 minutes off: 50,000 is inside the allowance, so March's
usage is worth 0.00, 7.20 less (a credit note of 7.20 found by April's close). Stripe's event objects are its
published fixtures (tests/fixtures/stripe) with this story's ids and amounts."""

from __future__ import annotations

from decimal import Decimal

import pytest

from kilo_billing.invoicing import CreditNote
from tests.scenarios.test_card_payment_events import Events, _apply, _close_and_pay, _dispute, _fixture
from tests.scenarios.test_invoicing import APR, MAY, World, amounts, at, seg, team_with_march_overage

NOTE = "acme/2026-03/credit-2026-04"


@pytest.fixture
def world() -> World:
    return team_with_march_overage()


def _withdrawn_then_credited(world: World, events: Events) -> str:
    """March paid; its payment disputed and the funds withdrawn; late usage -7.20 found by April's close."""
    intent = _close_and_pay(world, events)
    _apply(world, events, events.add("evt_d1", "charge.dispute.created", _dispute(intent, "needs_response")))
    _apply(world, events, events.add("evt_d2", "charge.dispute.funds_withdrawn", _dispute(intent, "needs_response")))
    assert world.store.invoices["acme/2026-03"].kept == Decimal("0.00")
    world.store.rate("acme", "2026-03", seg(at(1)), "video", -10_000)
    april = world.close("acme", APR)
    note = world.store.credit_notes[NOTE]
    # the invoice keeps nothing while the funds are withdrawn: no credit yet, the 7.20 recorded as returned
    assert (note.to_credit, note.returned, note.amount) == (Decimal("0.00"), Decimal("7.20"), Decimal("0.00"))
    assert april.total == Decimal("29.00")  # May's fee in advance, no credit applied
    return intent


def _note(world: World) -> CreditNote:
    return world.store.credit_notes[NOTE]


def test_given_a_note_made_while_the_funds_were_withdrawn_when_the_dispute_is_won_then_the_credit_is_given_once(
    world: World,
) -> None:
    events = Events()
    intent = _withdrawn_then_credited(world, events)
    _apply(world, events, events.add("evt_d3", "charge.dispute.closed", _dispute(intent, "won")))
    assert world.store.billing["acme"].credit == Decimal("0.00")  # won, but the funds are not back yet
    reinstated = events.add("evt_d4", "charge.dispute.funds_reinstated", _dispute(intent, "won"))
    _apply(world, events, reinstated)
    assert world.store.invoices["acme/2026-03"].kept == Decimal("65.20")
    assert world.store.billing["acme"].credit == Decimal("7.20")
    note = _note(world)
    assert (note.to_credit, note.returned, note.amount, note.version) == (
        Decimal("7.20"),
        Decimal("0.00"),
        Decimal("7.20"),
        2,
    )
    assert note.history[-1][0] == "7.20 kept again (a dispute's funds reinstated): account credit"
    _apply(world, events, reinstated)  # delivered again: nothing more
    assert world.store.billing["acme"].credit == Decimal("7.20")
    assert _note(world).version == 2
    may = world.close("acme", MAY)
    assert amounts(may, "credit") == ["-7.20"]
    assert may.total == Decimal("21.80")  # June's fee 29.00 - 7.20: March billed 58.00 in all, what it is worth


def test_given_a_note_made_while_the_funds_were_withdrawn_when_the_dispute_is_lost_then_nothing_is_credited(
    world: World,
) -> None:
    events = Events()
    intent = _withdrawn_then_credited(world, events)
    _apply(world, events, events.add("evt_d3", "charge.dispute.closed", _dispute(intent, "lost")))
    assert world.store.billing["acme"].credit == Decimal("0.00")  # the bank kept the whole payment
    assert (_note(world).to_credit, _note(world).returned) == (Decimal("0.00"), Decimal("7.20"))
    assert world.close("acme", MAY).total == Decimal("29.00")


def test_given_part_refunded_before_the_dispute_when_won_then_the_credit_is_at_most_what_the_invoice_keeps(
    world: World,
) -> None:
    """60.00 refunded, the other 5.20 disputed and withdrawn (kept 0.00); the note's 7.20 is returned. Won: the invoice
    keeps 5.20 again, so 5.20 is credited (a note made now would give that) and 2.00 stays returned (the refund)."""
    events = Events()
    intent = _close_and_pay(world, events)
    charge = _fixture("charge", id="ch_3Story", payment_intent=intent, amount=6520, amount_refunded=6000)
    _apply(world, events, events.add("evt_r1", "charge.refunded", charge))
    disputed = {"id": "dp_2", "charge": "ch_3Story", "payment_intent": intent, "amount": 520}
    _apply(world, events, events.add("evt_d1", "charge.dispute.created", _fixture("dispute", **disputed)))
    withdrawn = _fixture("dispute", **disputed, status="needs_response")
    _apply(world, events, events.add("evt_d2", "charge.dispute.funds_withdrawn", withdrawn))
    assert world.store.invoices["acme/2026-03"].kept == Decimal("0.00")  # 65.20 - 60.00 - 5.20
    world.store.rate("acme", "2026-03", seg(at(1)), "video", -10_000)
    world.close("acme", APR)
    assert (_note(world).to_credit, _note(world).returned) == (Decimal("0.00"), Decimal("7.20"))
    won = _fixture("dispute", **disputed, status="won")
    _apply(world, events, events.add("evt_d3", "charge.dispute.funds_reinstated", won))
    assert world.store.invoices["acme/2026-03"].kept == Decimal("5.20")
    assert (_note(world).to_credit, _note(world).returned) == (Decimal("5.20"), Decimal("2.00"))
    assert world.store.billing["acme"].credit == Decimal("5.20")


def test_given_funds_reinstated_before_the_late_usage_then_the_note_credits_it_at_once_and_nothing_twice(
    world: World,
) -> None:
    events = Events()
    intent = _close_and_pay(world, events)
    _apply(world, events, events.add("evt_d2", "charge.dispute.funds_withdrawn", _dispute(intent, "needs_response")))
    _apply(world, events, events.add("evt_d4", "charge.dispute.funds_reinstated", _dispute(intent, "won")))
    world.store.rate("acme", "2026-03", seg(at(1)), "video", -10_000)
    april = world.close("acme", APR)
    assert (_note(world).to_credit, _note(world).returned) == (Decimal("7.20"), Decimal("0.00"))
    assert april.total == Decimal("21.80")  # May's fee 29.00 - 7.20, applied by the close that found it
    _apply(world, events, events.add("evt_d4", "charge.dispute.funds_reinstated", _dispute(intent, "won")))
    assert world.store.billing["acme"].credit == Decimal("0.00")
