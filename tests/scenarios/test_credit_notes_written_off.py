"""A pending credit note's reduction refused because Stripe wrote the invoice off (uncollectible) gives account credit
only for money the invoice collected - the account credit it applied - as the close's own note would (D193); so does
a refusal on an invoice neither paid nor void (still open: an amount rule), D337.

Figures (price book 2026-01: video $0.00072, Team $29 with 50,000 video minutes): acme on Team by card from March 1,
60,000 March minutes -> March = 29.00 + 10,000 x 0.00072 = 7.20 + April's 29.00 in advance = 65.20, never paid.
5,000 March minutes go away after March's close: 5,000 x 0.00072 = 3.60 off March's amount due (April's note).
April = May's 29.00 in advance = 29.00; May = June's 29.00 = 29.00 (less any account credit)."""

from __future__ import annotations

from dataclasses import replace
from decimal import Decimal
from typing import Any

import pytest

from kilo_billing.invoicing import BillingState, CreditNoteStatus, InvoiceStatus
from kilo_invoice.logic import close_account
from kilo_invoice.ports import GatewayMisconfiguredError, GatewayRejectedError
from tests.scenarios.test_invoicing import APR, MAR, MAY, World, amounts, at, seg, team_with_march_overage

NOTE = "acme/2026-03/credit-2026-04"


def _april_with_its_note_waiting(world: World) -> None:
    """April's note on March (3.60 off its amount due) meets "ours to fix": April issued 29.00, the note pending."""
    world.store.rate("acme", "2026-03", seg(at(1)), "video", -5_000)  # -3.60
    world.gateway.fail_next = [GatewayMisconfiguredError("no such invoice")]
    assert world.close("acme", APR).total == Decimal("29.00")
    note = world.store.credit_notes[NOTE]
    assert (note.status, note.to_due) == (CreditNoteStatus.PENDING, Decimal("3.60"))


def _refusing(world: World, status: str | None) -> None:
    def refuse(*_args: Any, **_kwargs: Any) -> str:
        raise GatewayRejectedError("cannot credit this invoice", status)

    world.gateway.credit_note = refuse  # type: ignore[method-assign]


def test_given_a_pending_note_when_stripe_wrote_march_off_then_may_is_asked_its_whole_fee() -> None:
    world = team_with_march_overage()
    march = world.close("acme", MAR)
    assert march.total == Decimal("65.20")
    _april_with_its_note_waiting(world)
    world.gateway.invoices[march.invoice_id].status = "uncollectible"  # Stripe's dunning gave up; event not here

    may = world.close("acme", MAY)

    note = world.store.credit_notes[NOTE]
    # March collected nothing and applied no account credit: nothing to give back; 3.60 never collected
    assert (note.status, note.to_due, note.to_credit) == (CreditNoteStatus.DONE, Decimal("0.00"), Decimal("0.00"))
    assert (note.uncollected, note.processor) == (Decimal("3.60"), Decimal("0.00"))
    assert (amounts(may, "credit"), may.total) == ([], Decimal("29.00"))
    assert world.store.billing["acme"].credit == Decimal("0.00")
    assert world.gateway.credit_notes == {}


def test_given_our_record_uncollectible_when_the_refusal_names_no_status_then_nothing_is_credited() -> None:
    world = team_with_march_overage()
    march = world.close("acme", MAR)
    _april_with_its_note_waiting(world)
    world.store.invoices[march.invoice_id] = replace(march, status=InvoiceStatus.UNCOLLECTIBLE)  # its event came
    _refusing(world, None)

    may = world.close("acme", MAY)

    note = world.store.credit_notes[NOTE]
    assert (note.status, note.to_due, note.to_credit) == (CreditNoteStatus.DONE, Decimal("0.00"), Decimal("0.00"))
    assert may.total == Decimal("29.00")
    assert world.store.billing["acme"].credit == Decimal("0.00")


def test_given_march_applied_account_credit_when_written_off_then_the_note_credits_at_most_that() -> None:
    """5.00 of account credit before March: March asks 65.20 - 5.00 = 60.20, never paid. Of March's money only the
    5.00 it applied paid for anything, so the 3.60 withdrawn is credited in full (3.60 <= 5.00): May 29.00 - 3.60 =
    25.40."""
    world = team_with_march_overage()
    world.store.billing["acme"] = BillingState(credit=Decimal("5.00"))
    march = world.close("acme", MAR)
    assert march.total == Decimal("60.20")
    _april_with_its_note_waiting(world)
    world.gateway.invoices[march.invoice_id].status = "uncollectible"

    may = world.close("acme", MAY)

    note = world.store.credit_notes[NOTE]
    assert (note.status, note.to_due, note.to_credit) == (CreditNoteStatus.DONE, Decimal("0.00"), Decimal("3.60"))
    assert note.uncollected == Decimal("0.00")
    assert (amounts(may, "credit"), may.total) == (["-3.60"], Decimal("25.40"))


def test_given_a_refusal_on_an_invoice_stripe_still_holds_open_then_the_note_is_done_and_nothing_is_credited() -> None:
    """Stripe refuses the reduction yet says March is open (an amount rule: paid in part, another note made at Stripe):
    not money we know was collected - bounded as the close would (March applied no credit: 0.00), 3.60 not collected,
    the note done; May asked its whole 29.00. First written (D337) the note waited as ours to fix, named and alarmed
    at every close for as long as March stayed open (a review: no tool settles it); before that, 3.60 credit."""
    world = team_with_march_overage()
    world.close("acme", MAR)
    _april_with_its_note_waiting(world)
    _refusing(world, "open")

    outcome = close_account(world.deps, "acme", MAY, MAY.end)

    assert outcome.invoice is not None
    assert outcome.invoice.total == Decimal("29.00")
    assert outcome.notes_waiting == ()
    note = world.store.credit_notes[NOTE]
    assert (note.status, note.to_due, note.to_credit, note.uncollected) == (
        CreditNoteStatus.DONE,
        Decimal("0.00"),
        Decimal("0.00"),
        Decimal("3.60"),
    )
    assert world.store.billing["acme"].credit == Decimal("0.00")


def test_given_the_write_off_known_before_aprils_close_then_no_credit_and_april_its_fee() -> None:
    """The control (D193): March recorded uncollectible before April composes: 0.00 due, 0.00 credit, April 29.00."""
    world = team_with_march_overage()
    march = world.close("acme", MAR)
    world.gateway.invoices[march.invoice_id].status = "uncollectible"
    world.store.invoices[march.invoice_id] = replace(march, status=InvoiceStatus.UNCOLLECTIBLE)
    world.store.rate("acme", "2026-03", seg(at(1)), "video", -5_000)

    april = world.close("acme", APR)

    note = world.store.credit_notes[NOTE]
    assert (note.to_due, note.to_credit, note.uncollected) == (Decimal("0.00"), Decimal("0.00"), Decimal("3.60"))
    assert april.total == Decimal("29.00")


@pytest.mark.parametrize(
    "gone",
    [
        {"charged_back": Decimal("65.20"), "disputed": True},  # March's dispute lost: all 65.20 back to the bank
        {"refunded": Decimal("65.20"), "outside_refunds": (("re_dash", Decimal("65.20")),)},  # a dashboard refund
    ],
    ids=["dispute-lost", "dashboard-refund"],
)
def test_given_march_paid_then_its_money_gone_when_the_waiting_note_is_refused_as_paid_then_nothing_is_credited(
    gone: dict[str, Any],
) -> None:
    """A review of D337: April's 3.60 note on March waits; March is then paid at Stripe and all of its 65.20 goes
    back (a dispute lost, or a refund made in Stripe's dashboard). May's close steps the note: Stripe refuses the
    reduction, March is paid. March keeps 0.00, so the note credits 0.00 and records 3.60 as returned; May is asked
    its whole 29.00 - as when the same is known before April's close. Before: 3.60 credit on top of the 65.20 given
    back, May 25.40."""
    world = team_with_march_overage()
    march = world.close("acme", MAR)
    _april_with_its_note_waiting(world)
    stored = world.store.invoices[march.invoice_id]
    world.store.invoices[march.invoice_id] = replace(stored.moved(InvoiceStatus.PAID, MAY.end), **gone)
    world.gateway.invoices[march.invoice_id].status = "paid"

    may = world.close("acme", MAY)

    note = world.store.credit_notes[NOTE]
    assert (note.status, note.to_credit, note.returned) == (CreditNoteStatus.DONE, Decimal("0.00"), Decimal("3.60"))
    assert (world.store.billing["acme"].credit, may.total) == (Decimal("0.00"), Decimal("29.00"))


def test_given_march_paid_then_partly_refunded_when_the_waiting_note_is_refused_as_paid_then_it_credits_what_is_left() -> (
    None
):
    """The same with 63.00 of March's 65.20 refunded in Stripe's dashboard: refunds come out of what paid no usage
    first (the 58.00 of fees), then 5.00 of March's 7.20 of usage: March still holds 2.20 of usage. The note credits
    2.20 and records 1.40 as returned; May is asked 29.00 - 2.20 = 26.80. Before: 3.60 credit, May 25.40."""
    world = team_with_march_overage()
    march = world.close("acme", MAR)
    _april_with_its_note_waiting(world)
    stored = world.store.invoices[march.invoice_id]
    world.store.invoices[march.invoice_id] = replace(
        stored.moved(InvoiceStatus.PAID, MAY.end),
        refunded=Decimal("63.00"),
        outside_refunds=(("re_dash", Decimal("63.00")),),
    )
    world.gateway.invoices[march.invoice_id].status = "paid"

    may = world.close("acme", MAY)

    note = world.store.credit_notes[NOTE]
    assert (note.to_credit, note.returned) == (Decimal("2.20"), Decimal("1.40"))
    assert may.total == Decimal("26.80")
