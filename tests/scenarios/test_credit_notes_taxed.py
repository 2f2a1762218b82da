"""A credit note on a paid invoice Stripe taxed gives the customer exactly what Stripe's note records: the note is
given back to the card by Stripe (``refund_amount``, its total tax included), not account credit of its amount
before tax (D433). Given/When/Then against the in-memory ledger and gateway; March 65.20 of ours + Stripe Tax
10 % = 71.72 charged (``TAXED``). Figures worked by hand."""

from __future__ import annotations

from dataclasses import replace
from decimal import Decimal

import pytest

from kilo_billing.catalog import default_catalog
from kilo_billing.invoicing import BillingState, CreditNoteStatus, amount_due
from kilo_billing.reports import account_revenue
from kilo_invoice.logic import refund_invoice
from kilo_invoice.ports import GatewayRejectedError
from tests.scenarios.test_card_payment_events import (
    Events,
    _apply,
    _fixture,
    _paid_invoice,
    _taxed_charge,
    _taxed_paid,
)
from tests.scenarios.test_invoicing import APR, MAR, World, amounts, at, seg, team_with_march_overage

NOTE = "acme/2026-03/credit-2026-04"


@pytest.fixture
def world() -> World:
    return team_with_march_overage()


def test_given_a_paid_taxed_invoice_when_late_usage_is_negative_then_the_card_gets_the_note_not_account_credit(
    world: World,
) -> None:
    """5,000 March minutes withdrawn: 5,000 x 0.00072 = 3.60 before tax; Stripe's note credits 3.60 + 0.36 = 3.96
    and refunds it. Ours: no account credit (April 29.00, no credit line), the note 0.00 credit, 3.60 given back by
    the note's refund (``returned``), recorded at Stripe to the card. Before: 3.60 account credit (April 25.40) and
    a 3.96 note out of band - 0.36 of tax Stripe's note says was given back that the customer never got."""
    events = Events()
    _taxed_paid(world, events)
    world.store.rate("acme", "2026-03", seg(at(1)), "video", -5_000)

    april = world.close("acme", APR)

    assert amounts(april, "credit") == []
    assert april.total == Decimal("29.00")
    note = world.store.credit_notes[NOTE]
    assert (note.to_due, note.to_credit, note.returned, note.processor) == (
        Decimal("0.00"),
        Decimal("0.00"),
        Decimal("3.60"),
        Decimal("3.60"),
    )
    assert (note.to_card, note.status) == (True, CreditNoteStatus.DONE)
    assert world.gateway.to_card_notes == {f"{NOTE}/refund"}
    assert world.gateway.out_of_band_notes == set()
    assert world.store.billing["acme"].credit == Decimal("0.00")


def test_given_the_notes_refund_reported_then_counted_once_as_given_back(world: World) -> None:
    """Stripe's refund of the note (3.96, no metadata of ours) arrives as a refund made outside us: 396 x 6520 /
    7172 = 3.60 of ours given back, kept 61.60; the revenue report's refunds 3.60. A refund of "all the rest" then
    asks 61.60 - the note's money is not counted twice (the note itself holds 0.00 of account credit)."""
    events = Events()
    intent = _taxed_paid(world, events)
    world.store.rate("acme", "2026-03", seg(at(1)), "video", -5_000)
    world.close("acme", APR)
    refund = _fixture("refund", id="re_note", payment_intent=intent, charge="ch_3Story", amount=396, metadata={})
    _apply(world, events, events.add("evt_rc", "refund.created", refund))
    _apply(world, events, events.add("evt_cr", "charge.refunded", _taxed_charge(intent, 396)))

    after = world.store.invoices["acme/2026-03"]
    revenue = account_revenue(world.store.ledger("acme"), MAR, default_catalog()).figures
    assert (after.refunded, after.kept, revenue.refunds) == (Decimal("3.60"), Decimal("61.60"), Decimal("3.60"))
    with pytest.raises(ValueError, match=r"at most 61\.60"):
        refund_invoice(world.store, world.gateway, "acme", "acme/2026-03", Decimal("65.20"))


def test_given_stripe_refuses_the_notes_refund_then_the_note_becomes_account_credit(world: World) -> None:
    """Stripe refusing the note to the card (a charged-back payment, say): the customer got nothing back, so the
    3.60 becomes account credit after all (for May: April was composed without it), the note done."""
    events = Events()
    _taxed_paid(world, events)
    world.store.rate("acme", "2026-03", seg(at(1)), "video", -5_000)
    world.gateway.fail_next = [GatewayRejectedError("charge disputed", "paid")]

    april = world.close("acme", APR)

    assert april.total == Decimal("29.00")
    note = world.store.credit_notes[NOTE]
    assert (note.to_credit, note.returned, note.to_card, note.status) == (
        Decimal("3.60"),
        Decimal("0.00"),
        False,
        CreditNoteStatus.DONE,
    )
    assert world.store.billing["acme"].credit == Decimal("3.60")
    assert world.gateway.to_card_notes == set()


def test_given_a_taxed_invoice_paid_before_we_heard_when_the_reduction_is_refused_then_to_the_card(
    world: World,
) -> None:
    """March 65.20 (+ 10 %: its ``invoice.finalized`` recorded the proportion) paid at Stripe, our record still open:
    the close composes a 3.60 reduction, Stripe refuses it (paid), and what it would have taken off goes back to the
    card by Stripe's note (3.60 + 0.36 refunded) - not 3.60 of account credit for May (before)."""
    march = world.close("acme", MAR)
    world.store.invoices[march.invoice_id] = replace(world.store.invoices[march.invoice_id], taxed=(7172, 6520))
    world.gateway.settle(march.invoice_id, paid=True)
    world.store.rate("acme", "2026-03", seg(at(1)), "video", -5_000)

    april = world.close("acme", APR)

    assert april.total == Decimal("29.00")  # composed while March looked unpaid
    note = world.store.credit_notes[NOTE]
    assert (note.to_due, note.to_credit, note.returned, note.processor) == (
        Decimal("0.00"),
        Decimal("0.00"),
        Decimal("3.60"),
        Decimal("3.60"),
    )
    assert (note.to_card, note.status) == (True, CreditNoteStatus.DONE)
    assert world.gateway.to_card_notes == {f"{NOTE}/refund"}
    assert world.store.billing["acme"].credit == Decimal("0.00")


def test_given_the_notes_refund_fails_then_the_note_becomes_account_credit(world: World) -> None:
    """The card's bank returns the note's 3.96 refund (card closed): the customer got nothing back, March keeps 65.20
    again, and the note's 3.60 given back by it becomes account credit (``credit_reinstated``, as for any refund
    failed, D340): 3.60 on the account, the note 3.60 credit, 0.00 returned."""
    events = Events()
    intent = _taxed_paid(world, events)
    world.store.rate("acme", "2026-03", seg(at(1)), "video", -5_000)
    world.close("acme", APR)
    refund = _fixture("refund", id="re_note", payment_intent=intent, charge="ch_3Story", amount=396, metadata={})
    _apply(world, events, events.add("evt_rc", "refund.created", refund))

    failed = refund | {"status": "failed", "failure_reason": "expired_or_canceled_card"}
    _apply(world, events, events.add("evt_rf", "refund.failed", failed))

    after = world.store.invoices["acme/2026-03"]
    assert (after.refunded, after.kept) == (Decimal("0.00"), Decimal("65.20"))
    note = world.store.credit_notes[NOTE]
    assert (note.to_credit, note.returned) == (Decimal("3.60"), Decimal("0.00"))
    assert world.store.billing["acme"].credit == Decimal("3.60")


def test_given_an_open_discounted_taxed_invoice_when_stripe_would_take_off_less_then_the_reduction_is_account_credit(
    world: World,
) -> None:
    """5.00 of account credit; March 29.00 + 7.20 + 29.00 - 5.00 = 60.20 (the 5.00 D432's pre-tax discount at
    Stripe), left open. 5,000 March minutes withdrawn: 3.60 to take off March. The adapter previews the reduction
    and refuses it - Stripe's note would give back 3.60's share of the discount too and take off less than ours
    (D433 amended (htax)): the 5.00 spread over March's 65.20 gives the 7.20 line 5.00 x 7.20/65.20 = 0.55, and
    3.60 of that line half of it, 5.00 x 7.20/65.20 x 3.60/7.20 = 0.276 -> 0.28, so Stripe's note would credit
    3.60 - 0.28 = 3.32 after its discount (injected as the adapter's refusal; the emulator's own run of the rule in
    `tests/unit/test_stripe_taxed_credit_notes.py`). The open
    invoice's refusal path (D337): account credit for what March collected - the 5.00 credit it applied holds the
    3.60 (its period's usage first: min(7.20, 5.00)) - nothing left uncollected, no Stripe note; March still asks
    60.20 of ours, as Stripe does; the 3.60 for May (April was composed while the note was pending)."""
    world.store.billing["acme"] = BillingState(credit=Decimal("5.00"))
    march = world.close("acme", MAR)
    assert (amounts(march, "credit"), march.total) == (["-5.00"], Decimal("60.20"))
    world.store.rate("acme", "2026-03", seg(at(1)), "video", -5_000)
    world.gateway.fail_next = [
        GatewayRejectedError(
            "Stripe's credit note on in_march would credit 3.32 after its discount, ours 3.60: not made"
        )
    ]

    april = world.close("acme", APR)

    note = world.store.credit_notes[NOTE]
    assert (note.to_due, note.to_credit, note.uncollected, note.processor, note.status) == (
        Decimal("0.00"),
        Decimal("3.60"),
        Decimal("0.00"),
        Decimal("0.00"),
        CreditNoteStatus.DONE,
    )
    assert "3.32 after its discount, ours 3.60" in note.history[-1][0]  # the refusal the close met
    assert world.gateway.credit_notes == {}
    assert amount_due(world.store.invoices[march.invoice_id], [note]) == Decimal("60.20")
    assert (amounts(april, "credit"), april.total) == ([], Decimal("29.00"))
    assert world.store.billing["acme"].credit == Decimal("3.60")


def test_given_an_open_discounted_taxed_invoice_refused_when_then_paid_then_the_uncollected_part_is_credited_once(
    world: World,
) -> None:
    """1.00 of account credit; March 65.20 - 1.00 = 64.20 open. The 3.60 reduction refused as above (D433 amended
    (htax)) - Stripe's note would credit 3.60 - 1.00 x 7.20/65.20 x 3.60/7.20 = 3.60 - 0.0552 -> 3.60 - 0.06 =
    3.54 after its discount: account credit for what March collected, the 1.00 credit it applied (min(3.60,
    1.00)), the other 3.60 - 1.00 = 2.60 not collected. The customer then pays March's 64.20 (``invoice.paid``): 64.20 + 1.00 = 65.20 holds
    its 7.20 of usage, so the 2.60 not collected becomes account credit (D339's ``credit_collected``): 1.00 + 2.60 =
    3.60 on the note, 0.00 not collected, 3.60 on the account - once: the same event delivered again gives nothing."""
    world.store.billing["acme"] = BillingState(credit=Decimal("1.00"))
    march = world.close("acme", MAR)
    assert (amounts(march, "credit"), march.total) == (["-1.00"], Decimal("64.20"))
    world.store.rate("acme", "2026-03", seg(at(1)), "video", -5_000)
    world.gateway.fail_next = [
        GatewayRejectedError(
            "Stripe's credit note on in_march would credit 3.54 after its discount, ours 3.60: not made"
        )
    ]
    world.close("acme", APR)
    note = world.store.credit_notes[NOTE]
    assert (note.to_credit, note.uncollected) == (Decimal("1.00"), Decimal("2.60"))
    assert world.store.billing["acme"].credit == Decimal("1.00")
    events = Events()

    world.gateway.settle(march.invoice_id, paid=True)
    paid = _paid_invoice(world) | {"amount_paid": 6420}
    _apply(world, events, events.add("evt_paid", "invoice.paid", paid))

    note = world.store.credit_notes[NOTE]
    assert (note.to_credit, note.uncollected) == (Decimal("3.60"), Decimal("0.00"))
    assert world.store.billing["acme"].credit == Decimal("3.60")
    _apply(world, events, events.add("evt_paid", "invoice.paid", paid))  # delivered again
    assert world.store.credit_notes[NOTE].to_credit == Decimal("3.60")
    assert world.store.billing["acme"].credit == Decimal("3.60")
