"""A card invoice voided at Stripe (an operator's decision there; it reaches us as ``invoice.voided``) collected nothing,
so what it consumed comes back, once: the account credit it applied (D132) and any carried invoice whose total it
carried (D126, D133). Figures worked by hand (price book 2026-01: audio $0.00036, video $0.00072; Team $29.00
with 50,000 video minutes; Personal 10,000 audio and 5,000 video minutes)."""

from __future__ import annotations

from dataclasses import replace
from decimal import Decimal

import pytest

from kilo_billing.invoicing import BillingState, InvoiceStatus
from kilo_billing.money import ZERO
from kilo_invoice.logic import apply_stripe_event
from tests.scenarios.test_card_payment_events import Events, _paid_invoice
from tests.scenarios.test_invoicing import APR, MAR, MAY, World, amounts, at, seg


@pytest.fixture
def world() -> World:
    return World()


def _void(world: World, events: Events, invoice_id: str, event_id: str = "evt_void") -> None:
    voided = _paid_invoice(world, invoice_id) | {"status": "void", "amount_paid": 0}
    key = events.add(event_id, "invoice.voided", voided)
    apply_stripe_event(world.store, world.bus, events, *key, at(5, 4), world.gateway)


def test_given_credit_applied_to_an_invoice_when_it_is_voided_then_the_credit_comes_back_once(world: World) -> None:
    events = Events()
    world.signup("acme", (at(1), "team"))
    world.store.billing["acme"] = BillingState(credit=Decimal("10.00"))
    world.store.rate("acme", "2026-03", seg(at(1)), "video", 60_000)  # 29.00 + 7.20 + 29.00 = 65.20
    march = world.close("acme", MAR)
    assert amounts(march, "credit") == ["-10.00"]
    assert march.total == Decimal("55.20")
    assert world.store.billing["acme"].credit == Decimal("0.00")
    _void(world, events, "acme/2026-03")
    assert world.store.invoices["acme/2026-03"].status is InvoiceStatus.VOID
    assert world.store.billing["acme"].credit == Decimal("10.00")  # given back with the move to void
    _void(world, events, "acme/2026-03")  # Stripe delivers the event again
    _void(world, events, "acme/2026-03", "evt_void_2")  # or another event saying the same
    assert world.store.billing["acme"].credit == Decimal("10.00")  # once
    april = world.close("acme", APR)
    assert amounts(april, "credit") == ["-10.00"]  # the next invoice applies it
    assert world.store.billing["acme"].credit == Decimal("0.00")


def test_given_a_voided_invoice_without_credit_then_the_account_credit_is_left_alone(world: World) -> None:
    events = Events()
    world.signup("acme", (at(1), "team"))
    world.store.rate("acme", "2026-03", seg(at(1)), "video", 60_000)
    world.close("acme", MAR)
    world.store.billing["acme"] = BillingState(
        seq=1, credit=Decimal("4.00"), customer_id=world.store.billing["acme"].customer_id
    )  # credit given after March's close (a crypto overpayment, say): not March's to give back
    _void(world, events, "acme/2026-03")
    assert world.store.billing["acme"].credit == Decimal("4.00")


def test_given_a_carried_invoice_when_the_invoice_carrying_it_is_voided_then_it_is_carried_again(
    world: World,
) -> None:
    events = Events()
    world.signup("solo", (at(1), "personal"))
    world.store.rate("solo", "2026-03", seg(at(1)), "audio", 11_000)  # 1,000 over x 0.00036 = 0.36
    assert world.close("solo", MAR).status is InvoiceStatus.CARRIED
    world.store.rate("solo", "2026-04", seg(at(1, 4)), "video", 5_500)  # 500 over x 0.00072 = 0.36
    april = world.close("solo", APR)
    assert april.total == Decimal("0.72")  # 0.36 + 0.36 carried from March
    assert april.status is InvoiceStatus.OPEN
    _void(world, events, "solo/2026-04")
    may = world.close("solo", MAY)  # nothing used in May: March's 0.36 was never collected, so it is carried again
    assert [line.source for line in may.lines if line.kind == "carried"] == ["solo/2026-03"]
    assert may.total == Decimal("0.36")
    assert may.status is InvoiceStatus.CARRIED  # still below the card minimum: it keeps carrying
    june = world.close("solo", MAY.next())
    assert [line.source for line in june.lines if line.kind == "carried"] == ["solo/2026-05"]  # not March twice
    assert june.total == Decimal("0.36")


def test_given_a_carried_amount_and_nothing_else_then_every_later_close_still_bills_it(world: World) -> None:
    world.signup("solo", (at(1), "personal"))
    world.store.rate("solo", "2026-03", seg(at(1)), "audio", 11_000)  # 0.36
    world.close("solo", MAR)
    for period in (APR, MAY, MAY.next()):  # a Personal account nobody uses any more
        invoice = world.close("solo", period)
        assert amounts(invoice, "carried") == ["0.36"]
        assert invoice.status is InvoiceStatus.CARRIED
    carried = [i for i in world.store.invoices.values() if i.status is InvoiceStatus.CARRIED]
    assert sum((i.total for i in carried if i.period == "2026-06"), Decimal(0)) == Decimal("0.36")


# --- a voided invoice and its credit notes: the same money is given back once (D132 with D131) ---------------------


def _solo_march_with_half_a_dollar_of_credit(world: World) -> None:
    world.signup("solo", (at(1), "personal"))
    world.store.billing["solo"] = BillingState(credit=Decimal("0.50"))
    world.store.rate("solo", "2026-03", seg(at(1)), "video", 7_000)  # 2,000 over x 0.00072 = 1.44
    march = world.close("solo", MAR)
    assert amounts(march, "credit") == ["-0.50"]
    assert march.total == Decimal("0.94")
    assert world.store.billing["solo"].credit == Decimal("0.00")


def _uncollectible(world: World, events: Events, invoice_id: str) -> None:
    gave_up = _paid_invoice(world, invoice_id) | {"status": "uncollectible", "amount_paid": 0}
    key = events.add("evt_uncollectible", "invoice.marked_uncollectible", gave_up)
    apply_stripe_event(world.store, world.bus, events, *key, at(20, 3), world.gateway)


def test_given_an_uncollectible_invoice_credited_by_a_note_when_it_is_voided_then_credit_is_given_once(
    world: World,
) -> None:
    events = Events()
    _solo_march_with_half_a_dollar_of_credit(world)
    _uncollectible(world, events, "solo/2026-03")
    world.store.rate("solo", "2026-03", seg(at(1)), "video", -2_000)  # 5,000: inside the allowance, -1.44
    world.close("solo", APR)
    note = world.store.credit_notes["solo/2026-03/credit-2026-04"]
    # written off: of March's 1.44 only the 0.50 of credit it applied was paid; the 0.94 asked for never was
    assert (note.to_due, note.to_credit, note.uncollected, note.returned) == (
        Decimal("0.00"),
        Decimal("0.50"),
        Decimal("0.94"),
        Decimal("0.00"),
    )
    assert world.store.billing["solo"].credit == Decimal("0.50")
    _void(world, events, "solo/2026-03")
    # March collected nothing and its usage is now 0.00: the 0.50 the customer had (0.50 + 0.50 back - 0.50 noted)
    assert world.store.billing["solo"].credit == Decimal("0.50")


def test_given_the_note_credit_was_spent_when_the_written_off_invoice_is_voided_then_nothing_is_overdrawn(
    world: World,
) -> None:
    events = Events()
    _solo_march_with_half_a_dollar_of_credit(world)
    _uncollectible(world, events, "solo/2026-03")
    world.store.rate("solo", "2026-03", seg(at(1)), "video", -2_000)  # -1.44 -> 0.50 account credit, 0.94 not
    world.store.rate("solo", "2026-04", seg(at(1, 4)), "video", 7_000)  # April: 1.44
    april = world.close("solo", APR)
    assert amounts(april, "credit") == ["-0.50"]
    assert april.total == Decimal("0.94")
    _void(world, events, "solo/2026-03")
    assert world.store.billing["solo"].credit == Decimal("0.00")  # 0.00 + 0.50 given back - 0.50 the note gave
    may = world.close("solo", MAY)
    assert amounts(may, "credit") == []
    assert may.total == Decimal("0.00")
    # over March to May the customer used 0.00 + 1.44 + 0.00 and had 0.50 of credit: owes 0.94, April's invoice
    assert world.store.billing["solo"].credit == Decimal("0.00")


def _as_stored_before_the_bound(world: World, credit_id: str, to_credit: Decimal) -> None:
    """A note on a written-off invoice as closes wrote it before D193: its whole late usage account credit
    (the account credit moved with it, as that close's transaction did)."""
    note = world.store.credit_notes[credit_id]
    world.store.credit_notes[credit_id] = replace(note, to_credit=to_credit, uncollected=ZERO, returned=ZERO)
    billing = world.store.billing[note.account_id]
    world.store.billing[note.account_id] = replace(billing, credit=billing.credit + to_credit - note.to_credit)


def test_given_a_note_stored_before_the_bound_was_spent_when_the_invoice_is_voided_then_the_next_invoice_bills_it(
    world: World,
) -> None:
    events = Events()
    _solo_march_with_half_a_dollar_of_credit(world)
    _uncollectible(world, events, "solo/2026-03")
    world.store.rate("solo", "2026-03", seg(at(1)), "video", -2_000)  # -1.44
    april = world.close("solo", APR)  # nothing used in April
    assert april.total == Decimal("0.00")
    _as_stored_before_the_bound(world, "solo/2026-03/credit-2026-04", Decimal("1.44"))
    assert world.store.billing["solo"].credit == Decimal("1.44")
    world.store.rate("solo", "2026-05", seg(at(1, 5)), "video", 7_000)  # May: 1.44
    may = world.close("solo", MAY)
    assert amounts(may, "credit") == ["-1.44"]
    assert may.total == Decimal("0.00")
    _void(world, events, "solo/2026-03")
    assert world.store.billing["solo"].credit == Decimal("-0.94")  # 0.00 + 0.50 given back - 1.44 the note gave
    june = world.close("solo", MAY.next())
    assert amounts(june, "credit") == ["0.94"]
    # over March to June the customer used 0.00 + 0.00 + 1.44 + 0.00 and had 0.50 of credit: owes 0.94
    assert june.total == Decimal("0.94")
    assert world.store.billing["solo"].credit == Decimal("0.00")


def test_given_a_note_written_when_stripe_voids_before_its_reduction_then_credit_is_given_once(
    world: World,
) -> None:
    events = Events()
    _solo_march_with_half_a_dollar_of_credit(world)
    world.store.rate("solo", "2026-03", seg(at(1)), "video", -2_000)  # -1.44: 0.94 off March, 0.50 account credit
    gateway_id = world.store.invoices["solo/2026-03"].gateway_id
    real = world.gateway.credit_note

    def voided_first(gateway: str, amount: Decimal, reason: str, credit_id: str, out_of_band: bool = False) -> str:
        if world.store.invoices["solo/2026-03"].status is not InvoiceStatus.VOID:
            world.gateway.void(gateway_id)  # an operator voids March at Stripe between April's write and the note
            _void(world, events, "solo/2026-03")
        return real(gateway, amount, reason, credit_id, out_of_band)

    world.gateway.credit_note = voided_first  # type: ignore[method-assign]
    world.close("solo", APR)
    note = world.store.credit_notes["solo/2026-03/credit-2026-04"]
    assert (note.to_due, note.to_credit) == (Decimal("0.00"), Decimal("0.50"))
    assert world.store.billing["solo"].credit == Decimal("0.50")  # what the customer had before March


def test_given_a_void_read_before_the_close_wrote_a_note_then_the_void_counts_the_note(world: World) -> None:
    events = Events()
    _solo_march_with_half_a_dollar_of_credit(world)
    _uncollectible(world, events, "solo/2026-03")
    world.store.rate("solo", "2026-03", seg(at(1)), "video", -2_000)  # -1.44 -> 0.50 account credit (0.94 not paid)
    world.store.rate("solo", "2026-04", seg(at(1, 4)), "video", 7_000)  # April: 1.44, 0.50 of it paid by that credit
    # April's close writes the note between the void's read and its write; the account credit stays 0.00 through it
    world.store.before_update.append(lambda: world.close("solo", APR))
    _void(world, events, "solo/2026-03")
    assert world.store.credit_notes["solo/2026-03/credit-2026-04"].to_credit == Decimal("0.50")
    assert world.store.invoices["solo/2026-04"].total == Decimal("0.94")  # 1.44 less the note's 0.50 applied
    assert world.store.invoices["solo/2026-03"].status is InvoiceStatus.VOID
    assert world.store.billing["solo"].credit == Decimal("0.00")  # 0.50 back - 0.50 the note gave, not +0.50


# --- a voided invoice's fees: never collected, so billed again by the next close, once -------------------------------


def test_given_the_invoice_that_billed_aprils_fee_in_advance_is_voided_then_aprils_close_bills_it(world: World) -> None:
    events = Events()
    world.signup("acme", (at(1), "team"))
    world.store.rate("acme", "2026-03", seg(at(1)), "video", 60_000)
    march = world.close("acme", MAR)
    assert (amounts(march, "fee_first_month"), amounts(march, "fee")) == (["29.00"], ["29.00"])  # March, April ahead
    _void(world, events, "acme/2026-03")
    april = world.close("acme", APR)  # no usage in April
    # April's 29.00 was billed only on the voided March invoice: April's close bills it (29.00), plus May's in advance
    assert (amounts(april, "fee_proration"), amounts(april, "fee")) == (["29.00"], ["29.00"])
    assert april.total == Decimal("58.00")
    may = world.close("acme", MAY)
    assert may.total == Decimal("29.00")  # June in advance only: April's fee is not billed twice


def test_given_the_advance_invoice_is_voided_after_the_next_close_then_the_following_close_bills_that_fee(
    world: World,
) -> None:
    events = Events()
    world.signup("acme", (at(1), "team"))
    world.close("acme", MAR)  # 29.00 March + 29.00 April in advance
    april = world.close("acme", APR)  # April's fee read as billed in advance (March was not void yet)
    assert april.total == Decimal("29.00")  # May in advance
    _void(world, events, "acme/2026-03")  # an operator voids March after April's close
    may = world.close("acme", MAY)
    # April's fee, billed only on the voided March invoice: 29.00 now; May's was billed on April (not void): none;
    # June's in advance 29.00 -> 58.00
    assert amounts(may, "fee_proration") == ["29.00"]
    assert [line.period for line in may.lines if line.kind == "fee_proration"] == ["2026-04"]
    assert may.total == Decimal("58.00")
    june = world.close("acme", MAY.next())
    assert june.total == Decimal("29.00")  # once


def test_given_a_paid_advance_invoice_then_the_next_close_bills_no_fee_again(world: World) -> None:
    world.signup("acme", (at(1), "team"))
    world.close("acme", MAR)
    assert world.close("acme", APR).total == Decimal("29.00")  # the control: an invoice that is not void counts


def test_given_an_upgrade_in_a_month_whose_advance_was_voided_then_its_close_bills_the_whole_prorated_fee(
    world: World,
) -> None:
    events = Events()
    world.signup("grow", (at(1), "team"), (at(11, 4), "enterprise"))  # April: 10 days Team, 20 days Enterprise
    world.close("grow", MAR)  # March 29.00 + April 29.00 in advance (Team on April 1st)
    _void(world, events, "grow/2026-03")
    april = world.close("grow", APR)
    # April's fee due: 29 x 10/30 = 9.666.. -> 9.67 + 99 x 20/30 = 66.00 -> 75.67; billed in advance: 0.00 (voided)
    assert amounts(april, "fee_proration") == ["75.67"]
    assert [ln.description for ln in april.lines if ln.kind == "fee_proration"] == [
        "Fee for 2026-04: due 75.67, billed 0.00 (the fee billed on voided invoice KB-grow-00001 was not collected)"
    ]
    assert april.total == Decimal("174.67")  # + May's 99.00 in advance
