"""Reductions lowered ahead of their period's note (D314) are taken into account once, for what they gave, and
usage that comes back after them is billed again (D326).

Hand-worked (price book 2026-01: video $0.00072; Personal includes 5,000 video minutes, no fee). acme, Personal,
card, from February. March 10,000 video minutes: 5,000 over x 0.00072 = 3.60, paid. 10,000 late minutes billed on
April (7.20, open), 10,000 more on May (7.20, open); all 20,000 withdrawn (-14.40) before June's close. Budget
lowered to 6 items: June lowers April 7.20 ahead (invoice + billing + its watermark + 1 note + 1 credited = 5),
July lowers May, August writes March's note (nothing left to lower or credit) and moves March's watermark."""

from __future__ import annotations

from decimal import Decimal

import pytest

from kilo_billing import invoicing
from kilo_billing.invoicing import CreditNoteStatus, InvoiceStatus, amount_due
from kilo_billing.periods import Period
from kilo_invoice.logic import GATEWAY_ATTEMPTS, apply_stripe_event, close_account
from kilo_invoice.model import NoteWaiting
from kilo_invoice.ports import GatewayMisconfiguredError, GatewayUnavailableError
from tests.scenarios.test_card_payment_events import Events, _paid_invoice
from tests.scenarios.test_credit_notes_late import _pay
from tests.scenarios.test_invoicing import APR, FEB, MAR, MAY, World, amounts, at, seg

JUN, JUL, AUG, SEP = (Period.parse(f"2026-{month:02d}") for month in (6, 7, 8, 9))


def _due(world: World, invoice_id: str) -> Decimal:
    return amount_due(world.store.invoices[invoice_id], world.store.credit_notes.values())


def _late_on_april_and_may(world: World, events: Events) -> tuple[str, str]:
    """March 3.60 paid; 10,000 late minutes on April and on May (7.20 each, open); -> (April's, May's invoice id)."""
    world.signup("acme", (at(1, 2), "personal"))
    world.close("acme", FEB)
    world.store.rate("acme", "2026-03", seg(at(1, 3)), "video", 10_000)
    march = world.close("acme", MAR)
    assert march.total == Decimal("3.60")
    _pay(world, events, march.invoice_id, "evt_mar", 2)
    ids = []
    for period in (APR, MAY):
        world.store.rate("acme", "2026-03", seg(at(1, 3)), "video", 10_000)
        late = world.close("acme", period)  # late: 10,000 x 0.00072 = 7.20
        assert (amounts(late, "adjustment"), late.total) == (["7.20"], Decimal("7.20"))
        ids.append(late.invoice_id)
    return ids[0], ids[1]


def test_given_marchs_note_written_in_august_when_marchs_own_usage_is_withdrawn_then_september_credits_it(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """F1. June lowers April 7.20 ahead, July May 7.20, August writes March's note (0.00). Then 5,000 of March's own
    minutes go away too (5,000 x 0.00072 = -3.60): March paid 3.60 for them, so September's note credits 3.60. Before:
    April's and May's notes still counted as lowered ahead (14.40 > 3.60): credit 0.00, the 3.60 recorded nowhere."""
    world, events = World(), Events()
    april, may = _late_on_april_and_may(world, events)
    world.store.rate("acme", "2026-03", seg(at(1, 3)), "video", -20_000)
    monkeypatch.setattr(invoicing, "MAX_TRANSACTION_ITEMS", 6)
    for period in (JUN, JUL, AUG):
        world.close("acme", period)
    assert "acme/2026-03/credit-2026-08" in world.store.credit_notes
    assert (_due(world, april), _due(world, may)) == (Decimal("0.00"), Decimal("0.00"))
    monkeypatch.setattr(invoicing, "MAX_TRANSACTION_ITEMS", 100)

    world.store.rate("acme", "2026-03", seg(at(1, 3)), "video", -5_000)
    world.close("acme", SEP)
    note = world.store.credit_notes["acme/2026-03/credit-2026-09"]
    assert (note.to_due, note.to_credit) == (Decimal("0.00"), Decimal("3.60"))
    assert world.store.billing["acme"].credit == Decimal("3.60")


def test_given_april_paid_before_june_lowers_it_ahead_then_the_withdrawn_usage_is_credited_once(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """F2. April is paid at Stripe just before June's close (its event reaches us after): June's reduction of April
    is refused and becomes 7.20 account credit. July lowers May 7.20; August writes March's note. 14.40 withdrawn:
    7.20 credited (April's payment), 7.20 no longer asked (May), March's 3.60 paid for what stands. Before: August's
    note counted only the ahead notes' reductions (7.20, May) and credited the other 7.20 again, bounded by March's
    3.60 held: 3.60 more, credit 10.80."""
    world, events = World(), Events()
    april, may = _late_on_april_and_may(world, events)
    world.store.rate("acme", "2026-03", seg(at(1, 3)), "video", -20_000)
    monkeypatch.setattr(invoicing, "MAX_TRANSACTION_ITEMS", 6)
    world.gateway.settle(april, paid=True)  # paid at Stripe; the event is not with us yet
    world.close("acme", JUN)
    ahead = world.store.credit_notes["acme/2026-03/credit-2026-06/on-2026-04"]
    assert (ahead.to_due, ahead.to_credit) == (Decimal("0.00"), Decimal("7.20"))
    assert world.store.billing["acme"].credit == Decimal("7.20")  # given when the reduction was refused
    paid = _paid_invoice(world, april)
    apply_stripe_event(world.store, world.bus, events, *events.add("evt_apr", "invoice.paid", paid), at(2, 6))
    for period in (JUL, AUG, SEP):
        world.close("acme", period)
    assert _due(world, may) == Decimal("0.00")
    assert world.store.credit_notes["acme/2026-03/credit-2026-08"].to_credit == Decimal("0.00")
    assert world.store.billing["acme"].credit == Decimal("7.20")


@pytest.mark.parametrize(
    ("back", "rebilled", "july"),
    [
        # all 20,000 come back: the 7.20 lowered ahead is billed again; 20,000 late minutes = 14.40 asked in all
        (20_000, ["7.20"], "7.20"),
        # 30,000: 10,000 more than withdrawn (+7.20) and the 7.20 lowered ahead: 30,000 = 21.60 asked in all
        (30_000, ["7.20", "7.20"], "14.40"),
        # 15,000: 5,000 still withdrawn (-3.60) against 7.20 lowered ahead: 3.60 more; 15,000 = 10.80 in all
        (15_000, ["-3.60", "7.20"], "3.60"),
    ],
)
def test_given_usage_comes_back_after_a_reduction_ahead_then_the_next_close_bills_it_again(
    monkeypatch: pytest.MonkeyPatch, back: int, rebilled: list[str], july: str
) -> None:
    """F3. June lowers April 7.20 ahead (March's note and watermark wait). Then ``back`` of the 20,000 withdrawn minutes
    come back before July's close: July bills March's late usage against the watermark and the 7.20 lowered ahead
    again. Before: with 20,000 back, March had nothing unbilled and was never adjusted again (April 0.00, May 7.20:
    7.20 asked for 14.40 of usage); with 15,000, July's note on March credited nothing (clamped at 0.00) and lowered
    nothing: May 7.20 only for 10.80."""
    world, events = World(), Events()
    april, may = _late_on_april_and_may(world, events)
    world.store.rate("acme", "2026-03", seg(at(1, 3)), "video", -20_000)
    monkeypatch.setattr(invoicing, "MAX_TRANSACTION_ITEMS", 6)
    world.close("acme", JUN)
    assert _due(world, april) == Decimal("0.00")
    world.store.rate("acme", "2026-03", seg(at(1, 3)), "video", back)

    invoice = world.close("acme", JUL)
    assert (amounts(invoice, "adjustment"), invoice.total) == (rebilled, Decimal(july))
    assert not world.store.periods[("acme", "2026-03")].unbilled
    later = world.close("acme", AUG)
    assert later.total == Decimal("0.00")
    asked = _due(world, april) + _due(world, may) + invoice.total
    assert asked == Decimal("0.00072") * back
    assert world.store.billing["acme"].credit == Decimal("0.00")


def test_given_usage_billed_again_when_it_is_withdrawn_once_more_then_it_is_lowered_in_full(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """F3, then the 20,000 go away again: July billed the 7.20 lowered ahead again, so the earlier reduction no longer
    counts: August (budget 100) lowers May 7.20 and July 7.20 and credits nothing: 0.00 asked for no late usage."""
    world, events = World(), Events()
    april, may = _late_on_april_and_may(world, events)
    world.store.rate("acme", "2026-03", seg(at(1, 3)), "video", -20_000)
    monkeypatch.setattr(invoicing, "MAX_TRANSACTION_ITEMS", 6)
    world.close("acme", JUN)
    world.store.rate("acme", "2026-03", seg(at(1, 3)), "video", 20_000)
    july = world.close("acme", JUL)
    assert july.total == Decimal("7.20")
    monkeypatch.setattr(invoicing, "MAX_TRANSACTION_ITEMS", 100)

    world.store.rate("acme", "2026-03", seg(at(1, 3)), "video", -20_000)
    world.close("acme", AUG)
    assert [_due(world, each) for each in (april, may, july.invoice_id)] == [Decimal("0.00")] * 3
    assert world.store.billing["acme"].credit == Decimal("0.00")


def _june_ahead_note_pending(world: World, events: Events, refusal: Exception) -> tuple[str, str]:
    """June lowers April 7.20 ahead (budget 6), but the note's Stripe step meets ``refusal``: the note stays pending
    at 7.20 (an outage fails June's job, every retry here; ours to fix lets June issue, D330)."""
    april, may = _late_on_april_and_may(world, events)
    world.store.rate("acme", "2026-03", seg(at(1, 3)), "video", -20_000)
    world.gateway.fail_next = [refusal] * GATEWAY_ATTEMPTS
    if isinstance(refusal, GatewayMisconfiguredError):  # a subclass of GatewayUnavailableError: asked first
        assert close_account(world.deps, "acme", JUN, JUN.end).notes_waiting == (NoteWaiting(AHEAD, str(refusal)),)
    else:
        with pytest.raises(GatewayUnavailableError):
            world.close("acme", JUN)
    world.gateway.fail_next = []
    note = world.store.credit_notes[AHEAD]
    assert (note.status, note.to_due) == (CreditNoteStatus.PENDING, Decimal("7.20"))
    return april, may


AHEAD = "acme/2026-03/credit-2026-06/on-2026-04"


@pytest.mark.parametrize(
    "refusal", [GatewayUnavailableError("down"), GatewayMisconfiguredError("no such invoice")], ids=["outage", "ours"]
)
def test_given_a_pending_ahead_note_when_stripe_voids_its_invoice_then_the_next_close_runs_it_first_and_bills_nothing_again(
    monkeypatch: pytest.MonkeyPatch, refusal: Exception
) -> None:
    """D334. June's ahead note on April (7.20) is still pending; April is voided at Stripe; the 20,000 minutes come
    back. July's close runs the note's step before it composes: refused, void -> 0.00 (counts for nothing, D326),
    so nothing was lowered ahead and nothing withdrawn is left: July bills nothing for March. With April's
    invoice.voided: March 3.60 + May 7.20 = 10.80 asked (April's 7.20 the operator's to replace, D132). Before: July
    composed first, read the note at 7.20 and billed it again (7.20), then the step made it 0.00: 18.00 asked."""
    monkeypatch.setattr(invoicing, "MAX_TRANSACTION_ITEMS", 6)
    world, events = World(), Events()
    april, may = _june_ahead_note_pending(world, events, refusal)
    world.gateway.void(world.store.invoices[april].gateway_id or "")
    monkeypatch.setattr(invoicing, "MAX_TRANSACTION_ITEMS", 100)
    world.store.rate("acme", "2026-03", seg(at(1, 3)), "video", 20_000)

    july = close_account(world.deps, "acme", JUL, JUL.end)
    assert july.invoice is not None
    note = world.store.credit_notes[AHEAD]
    assert (note.status, note.amount, july.notes_waiting) == (CreditNoteStatus.DONE, Decimal("0.00"), ())
    assert (amounts(july.invoice, "adjustment"), july.invoice.total) == ([], Decimal("0.00"))
    voided = _paid_invoice(world, april) | {"status": "void"}
    apply_stripe_event(world.store, world.bus, events, *events.add("evt_void", "invoice.voided", voided), at(2, 7))
    world.close("acme", AUG)
    asked = sum((_due(world, i) for i in world.store.invoices if i != april), Decimal("0.00"))
    assert (asked, _due(world, may), world.store.billing["acme"].credit) == (
        Decimal("10.80"),
        Decimal("7.20"),
        Decimal("0.00"),
    )


def test_given_a_pending_ahead_note_stripe_still_refuses_as_ours_then_the_next_close_issues_and_names_it_once(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """D334 keeps D330: July's close runs June's pending note first; Stripe refuses it as ours to fix again:
    the note waits (pending, 7.20), July is composed as before (the 20,000 back: the 7.20 lowered ahead billed again)
    and issued, and the outcome names the note once (it is not tried again after the compose)."""
    monkeypatch.setattr(invoicing, "MAX_TRANSACTION_ITEMS", 6)
    world, events = World(), Events()
    _june_ahead_note_pending(world, events, GatewayMisconfiguredError("no such invoice"))
    monkeypatch.setattr(invoicing, "MAX_TRANSACTION_ITEMS", 100)
    world.store.rate("acme", "2026-03", seg(at(1, 3)), "video", 20_000)
    world.gateway.fail_next = [GatewayMisconfiguredError("no such invoice")]  # the note's call; the invoice's pass

    july = close_account(world.deps, "acme", JUL, JUL.end)
    assert july.invoice is not None
    assert july.notes_waiting == (NoteWaiting(AHEAD, "no such invoice"),)
    assert (july.invoice.status, amounts(july.invoice, "adjustment")) == (InvoiceStatus.OPEN, ["7.20"])
    assert world.store.credit_notes[AHEAD].status is CreditNoteStatus.PENDING


def test_given_a_pending_ahead_note_when_stripe_is_down_at_the_next_close_then_it_fails_before_composing(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """D334: an outage on an earlier close's pending note fails the close (retried, as before) - now before July
    is composed, so no July is stored from a note the processor has not answered. Once Stripe answers (April voided
    meanwhile) the rerun bills nothing for March: the note 0.00."""
    monkeypatch.setattr(invoicing, "MAX_TRANSACTION_ITEMS", 6)
    world, events = World(), Events()
    april, _may = _june_ahead_note_pending(world, events, GatewayUnavailableError("down"))
    monkeypatch.setattr(invoicing, "MAX_TRANSACTION_ITEMS", 100)
    world.store.rate("acme", "2026-03", seg(at(1, 3)), "video", 20_000)
    world.gateway.fail_next = [GatewayUnavailableError("down")] * GATEWAY_ATTEMPTS
    with pytest.raises(GatewayUnavailableError):
        world.close("acme", JUL)
    assert "acme/2026-07" not in world.store.invoices
    world.gateway.void(world.store.invoices[april].gateway_id or "")

    july = world.close("acme", JUL)
    assert (amounts(july, "adjustment"), world.store.credit_notes[AHEAD].amount) == ([], Decimal("0.00"))
