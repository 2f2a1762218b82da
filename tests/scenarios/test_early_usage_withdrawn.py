"""Usage billed early (progressive billing, D56), then withdrawn while the early invoice is still unpaid (D313):
the customer is asked no more for usage that no longer exists - the early invoice is lowered, as D306 lowers a later
invoice that billed late usage - and no account credit is given for money never collected.

Hand-worked (price book 2026-01: video $0.00072; Personal includes 5,000 video minutes, no fee). acme, Personal, card,
progressive at 5.00, from February. By March 10, 15,000 video minutes: 10,000 over x 0.00072 = 7.20, invoiced early
(``acme/2026-03/early-1``) and left unpaid. March's close: 7.20 - 7.20 billed early = 0.00 (paid at once)."""

from __future__ import annotations

from decimal import Decimal

import pytest

from kilo_billing.invoicing import InvoiceStatus, amount_due
from kilo_invoice.logic import issue_early, refund_invoice
from tests.scenarios.test_card_payment_events import Events
from tests.scenarios.test_credit_notes_period import EARLY, _early_event, _pay_early, _personal_billed_early
from tests.scenarios.test_invoicing import APR, FEB, MAR, World, at, seg
from tests.scenarios.test_progressive_billing import mid, progressive

MARCH_NOTE = "acme/2026-03/credit-2026-04"
ON_EARLY = "acme/2026-03/credit-2026-04/on-2026-03/early-1"
EARLY_2 = "acme/2026-03/early-2"


def _due(world: World, invoice_id: str) -> Decimal:
    return amount_due(world.store.invoices[invoice_id], world.store.credit_notes.values())


def _lowered(world: World) -> dict[str, Decimal]:
    return {n.invoice_id: n.to_due for n in world.store.credit_notes.values() if n.to_due > 0}


def test_given_the_early_invoice_open_when_its_usage_goes_away_then_it_asks_for_nothing() -> None:
    """-10,000 minutes (March 5,000: inside the allowance, -7.20). The early invoice's 7.20 is lowered by 7.20 (a
    processor note on it): due 0.00; no account credit, nothing recorded as not collected (nothing is asked for).
    Before: the early invoice still asked 7.20, the note on March recorded 7.20 not collected."""
    world = World()
    _personal_billed_early(world)
    world.store.rate("acme", "2026-03", seg(at(1)), "video", -10_000)
    world.close("acme", APR)
    assert _due(world, EARLY) == Decimal("0.00")
    lowered = world.store.credit_notes[ON_EARLY]
    assert (lowered.invoice_id, lowered.to_due, lowered.to_credit, lowered.processor) == (
        EARLY,
        Decimal("7.20"),
        Decimal("0.00"),
        Decimal("7.20"),
    )
    assert world.gateway.invoices[EARLY].credited == Decimal("7.20")  # lowered at the processor too
    note = world.store.credit_notes[MARCH_NOTE]  # the period's note holds the lines, credits the rest: nothing
    assert (note.to_due, note.to_credit, note.returned, note.uncollected) == (Decimal(0),) * 4
    assert world.store.billing["acme"].credit == Decimal("0.00")


def test_given_the_early_invoice_payment_failed_when_part_of_its_usage_goes_away_then_it_asks_only_the_rest() -> None:
    """Payment failed (still dunned). -5,000 minutes: March 10,000, 5,000 over x 0.00072 = 3.60, was 7.20: -3.60.
    The early invoice asks 7.20 - 3.60 = 3.60, what the standing usage is worth; paid afterwards, none of its 3.60 is
    refundable for the withdrawal (it was never asked for), and no credit was given: 3.60 paid for 3.60 of usage."""
    world, events = World(), Events()
    _personal_billed_early(world)
    _early_event(world, events, "evt_f", "invoice.payment_failed", "open")
    assert world.store.invoices[EARLY].status is InvoiceStatus.PAYMENT_FAILED
    world.store.rate("acme", "2026-03", seg(at(1)), "video", -5_000)
    world.close("acme", APR)
    assert _due(world, EARLY) == Decimal("3.60")
    assert _lowered(world) == {EARLY: Decimal("3.60")}
    note = world.store.credit_notes[MARCH_NOTE]
    assert (note.to_credit, note.returned, note.uncollected) == (Decimal(0), Decimal(0), Decimal(0))
    assert world.store.billing["acme"].credit == Decimal("0.00")


def test_given_the_lowered_early_invoice_paid_afterwards_then_a_refund_gives_back_only_what_was_paid() -> None:
    """-5,000 minutes: the early invoice lowered 3.60, then paid: 7.20 - 3.60 = 3.60 collected. An operator's refund
    gives back at most those 3.60, once (before: the early invoice asked 7.20 and 7.20 was refundable, D166); no
    account credit was given for the withdrawn 3.60 (never asked for)."""
    world, events = World(), Events()
    _personal_billed_early(world)
    world.store.rate("acme", "2026-03", seg(at(1)), "video", -5_000)
    world.close("acme", APR)
    _pay_early(world, events)
    assert refund_invoice(world.store, world.gateway, "acme", EARLY, None).refunded == Decimal("3.60")
    with pytest.raises(ValueError, match=r"at most 0\.00"):
        refund_invoice(world.store, world.gateway, "acme", EARLY, Decimal("0.01"))
    assert world.store.billing["acme"].credit == Decimal("0.00")


def _early_7_20(world: World) -> None:
    """15,000 video minutes by March 10: the early invoice's 7.20, unpaid."""
    world.signup("acme", (at(1, 2), "personal"))
    progressive(world, "acme", "5.00")
    world.close("acme", FEB)
    world.store.rate("acme", "2026-03", seg(at(1)), "video", 15_000)
    issue_early(world.deps, "acme", MAR, mid(10))


def _march_open_after_early(world: World) -> None:
    """Early 7.20 unpaid; 1,000 more minutes after March 10: March's close 11,000 over x 0.00072 = 7.92 - 7.20 billed
    early = 0.72, open."""
    _early_7_20(world)
    world.store.rate("acme", "2026-03", seg(at(1)), "video", 1_000)
    march = world.close("acme", MAR)
    assert (march.total, march.status) == (Decimal("0.72"), InvoiceStatus.OPEN)


def test_given_march_open_and_the_early_invoice_unpaid_when_a_little_goes_away_then_march_is_lowered_first() -> None:
    """Order (latest billing first, D307): -1,000 minutes (-0.72) is what March's close billed last: March asks 0.00,
    the early invoice still 7.20 for the 10,000 minutes over that stand."""
    world = World()
    _march_open_after_early(world)
    world.store.rate("acme", "2026-03", seg(at(1)), "video", -1_000)
    world.close("acme", APR)
    assert (_due(world, "acme/2026-03"), _due(world, EARLY)) == (Decimal("0.00"), Decimal("7.20"))
    assert world.store.billing["acme"].credit == Decimal("0.00")


def test_given_march_open_and_the_early_invoice_unpaid_when_more_goes_away_then_both_are_lowered() -> None:
    """-6,000 minutes (March 10,000: 5,000 over = 3.60, was 7.92: -4.32): March 0.72 off (due 0.00), then the early
    invoice 4.32 - 0.72 = 3.60 off (due 3.60): 3.60 asked for 3.60 of usage, no credit."""
    world = World()
    _march_open_after_early(world)
    world.store.rate("acme", "2026-03", seg(at(1)), "video", -6_000)
    world.close("acme", APR)
    assert _lowered(world) == {"acme/2026-03": Decimal("0.72"), EARLY: Decimal("3.60")}
    assert (_due(world, "acme/2026-03"), _due(world, EARLY)) == (Decimal("0.00"), Decimal("3.60"))
    assert world.store.billing["acme"].credit == Decimal("0.00")


def test_given_two_unpaid_early_invoices_when_part_goes_away_then_the_latest_is_lowered_first() -> None:
    """Early-1 7.20 (10,000 over) and early-2 (8,000 more minutes by March 20: 8,000 x 0.00072 = 5.76), both open;
    March's close 0.00. -8,000 minutes (-5.76): early-2 asks 0.00, early-1 still 7.20."""
    world = World()
    _early_7_20(world)
    world.store.rate("acme", "2026-03", seg(at(1)), "video", 8_000)
    second = [i for i in issue_early(world.deps, "acme", MAR, mid(20)) if i.invoice_id != EARLY]
    assert [(i.invoice_id, i.total) for i in second] == [(EARLY_2, Decimal("5.76"))]
    assert world.close("acme", MAR).total == Decimal("0.00")
    world.store.rate("acme", "2026-03", seg(at(1)), "video", -8_000)
    world.close("acme", APR)
    assert (_due(world, EARLY_2), _due(world, EARLY)) == (Decimal("0.00"), Decimal("7.20"))
    assert _lowered(world) == {EARLY_2: Decimal("5.76")}


def test_given_the_early_invoice_written_off_when_its_usage_goes_away_then_it_is_not_lowered() -> None:
    """Guard (D306's exclusion kept): a written-off invoice asks nothing more: not lowered, 7.20 not collected."""
    world, events = World(), Events()
    _personal_billed_early(world)
    _early_event(world, events, "evt_f", "invoice.payment_failed", "open")
    _early_event(world, events, "evt_u", "invoice.marked_uncollectible", "uncollectible")
    world.store.rate("acme", "2026-03", seg(at(1)), "video", -10_000)
    world.close("acme", APR)
    assert _lowered(world) == {}
    assert world.store.credit_notes[MARCH_NOTE].uncollected == Decimal("7.20")
