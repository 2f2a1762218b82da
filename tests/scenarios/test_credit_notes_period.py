"""A credit note gives back what the customer paid for the period, wherever it was billed (D166; D131): the
period's early (progressive) invoices and the account credit its invoices applied count as paid, as the period-end
invoice's own payment does - before, a note against a period-end invoice that kept 0.00 (its usage billed early, or
paid by account credit) recorded the whole reduction as "already returned" though nothing was, and the customer stayed
overbilled. Figures worked by hand (price book 2026-01: video $0.00072; Personal includes 5,000 video minutes)."""

from __future__ import annotations

from dataclasses import replace
from decimal import Decimal

import pytest

from kilo_billing.invoicing import InvoiceStatus
from kilo_invoice.logic import apply_stripe_event, issue_early, refund_invoice
from tests.scenarios.test_card_payment_events import Events, _paid_invoice
from tests.scenarios.test_invoicing import APR, FEB, MAR, World, amounts, at, seg
from tests.scenarios.test_progressive_billing import mid, progressive

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
    world = World()
    _personal_billed_early(world)
    world.store.rate("acme", "2026-03", seg(at(1)), "video", -10_000)  # March now 5,000: inside the allowance, -7.20
    april = world.close("acme", APR)
    note = world.store.credit_notes["acme/2026-03/credit-2026-04"]
    # the 7.20 was billed by the early invoice (still owed): account credit, nothing "already returned"
    assert (note.to_due, note.to_credit, note.returned) == (Decimal("0.00"), Decimal("7.20"), Decimal("0.00"))
    assert april.total == Decimal("0.00")  # Personal, no April usage: the credit waits for the next positive invoice
    assert world.store.billing["acme"].credit == Decimal("7.20")


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
