"""Negative late usage is a credit note against the invoice of the period it belongs to (billing policy: "late usage
... appears as an adjustment line on the next invoice (or a credit note if negative)"; D51, D131). Given/When/Then,
against the in-memory ledger and payment gateway. Figures worked by hand (price book 2026-01: video $0.00072; Personal
includes 5,000 video minutes, Team 50,000 for $29.00)."""

from __future__ import annotations

from dataclasses import replace
from decimal import Decimal

import pytest

from kilo_billing.invoicing import BillingMethod, BillingState, CreditNoteStatus, InvoiceStatus
from kilo_invoice.logic import apply_stripe_event, close_account, refund_invoice
from kilo_invoice.ports import GatewayMisconfiguredError, GatewayUnavailableError
from tests.scenarios.test_card_payment_events import Events, _charge, _paid_invoice
from tests.scenarios.test_invoicing import APR, MAR, MAY, World, amounts, at, seg


@pytest.fixture
def world() -> World:
    return World()


def _personal_march_of_72_cents_shortened_to_nothing(world: World, method: BillingMethod = BillingMethod.CARD) -> None:
    world.signup("solo", (at(1), "personal"), method=method)
    world.store.rate("solo", "2026-03", seg(at(1)), "video", 6_000)  # 1,000 over x 0.00072 = 0.72
    assert world.close("solo", MAR).total == Decimal("0.72")
    world.store.rate("solo", "2026-03", seg(at(1)), "video", -2_000)  # a capped call shortened by its real left
    # March now 4,000 minutes, inside the 5,000 included: 0.00 - 0.72 = -0.72


def test_given_an_unpaid_card_invoice_when_late_usage_is_negative_then_a_credit_note_lowers_its_amount_due(
    world: World,
) -> None:
    _personal_march_of_72_cents_shortened_to_nothing(world)
    march_gateway = world.store.invoices["solo/2026-03"].gateway_id
    assert march_gateway is not None
    april = world.close("solo", APR)
    assert amounts(april, "adjustment") == []  # not netted into the next invoice any more
    assert amounts(april, "credit") == []
    assert april.total == Decimal("0.00")
    note = world.store.credit_notes["solo/2026-03/credit-2026-04"]
    assert (note.invoice_id, note.found_by) == ("solo/2026-03", "solo/2026-04")
    assert (note.amount, note.to_due, note.to_credit) == (Decimal("0.72"), Decimal("0.72"), Decimal("0.00"))
    assert [(line.kind, line.amount, line.used) for line in note.lines] == [
        ("adjustment", Decimal("-0.72"), Decimal(-2000))
    ]
    assert note.status is CreditNoteStatus.DONE
    assert world.gateway.credit_notes == {"solo/2026-03/credit-2026-04": (march_gateway, Decimal("0.72"))}
    assert world.gateway.out_of_band_notes == set()  # it lowers the amount due: nothing was paid yet
    found = world.gateway.find_invoice("solo/2026-03")
    assert found is not None
    assert found.total == Decimal("0.00")  # March now asks for 0.72 - 0.72
    assert world.store.billing["solo"].credit == Decimal("0.00")


def test_given_a_credit_note_when_the_close_runs_again_then_nothing_is_credited_twice(world: World) -> None:
    _personal_march_of_72_cents_shortened_to_nothing(world)
    world.close("solo", APR)
    calls = world.gateway.calls.count("credit_note")
    notes = dict(world.store.credit_notes)
    world.close("solo", APR)  # a redelivered close job
    world.close("solo", MAY)  # and the next month: the watermark moved, nothing late any more
    assert world.gateway.calls.count("credit_note") == calls == 1
    assert world.store.credit_notes == notes
    assert world.store.billing["solo"].credit == Decimal("0.00")


def test_given_the_processor_call_failed_once_when_the_close_runs_again_then_the_same_note_is_made_once(
    world: World,
) -> None:
    _personal_march_of_72_cents_shortened_to_nothing(world)
    world.gateway.fail_next = [GatewayUnavailableError("timeout")] * 4  # every retry of this run
    with pytest.raises(GatewayUnavailableError):
        world.close("solo", APR)
    assert world.store.credit_notes["solo/2026-03/credit-2026-04"].status is CreditNoteStatus.PENDING
    world.close("solo", APR)
    assert world.store.credit_notes["solo/2026-03/credit-2026-04"].status is CreditNoteStatus.DONE
    assert list(world.gateway.credit_notes) == ["solo/2026-03/credit-2026-04"]
    assert world.store.billing["solo"].credit == Decimal("0.00")


def _team_march_paid(world: World, events: Events) -> None:
    world.signup("acme", (at(1), "team"))
    world.store.rate("acme", "2026-03", seg(at(1)), "video", 60_000)  # 10,000 over x 0.00072 = 7.20
    assert world.close("acme", MAR).total == Decimal("65.20")  # 29.00 March + 7.20 + 29.00 April in advance
    world.gateway.settle("acme/2026-03", paid=True)
    apply_stripe_event(
        world.store,
        world.bus,
        events,
        *events.add("evt_paid", "invoice.paid", _paid_invoice(world)),
        at(2, 4),
        world.gateway,
    )
    assert world.store.invoices["acme/2026-03"].status is InvoiceStatus.PAID


def test_given_a_paid_card_invoice_when_late_usage_is_negative_then_account_credit_on_the_next_invoice(
    world: World,
) -> None:
    events = Events()
    _team_march_paid(world, events)
    world.store.rate("acme", "2026-03", seg(at(1)), "video", -5_000)  # 5,000 over x 0.00072 = 3.60: -3.60
    april = world.close("acme", APR)
    assert amounts(april, "adjustment") == []
    assert amounts(april, "credit") == ["-3.60"]  # the note's account credit, applied at once
    assert april.total == Decimal("25.40")  # 29.00 May in advance - 3.60
    note = world.store.credit_notes["acme/2026-03/credit-2026-04"]
    assert (note.to_due, note.to_credit, note.processor) == (Decimal("0.00"), Decimal("3.60"), Decimal("3.60"))
    march_gateway = world.store.invoices["acme/2026-03"].gateway_id
    # recorded on Stripe's paid invoice as credited outside Stripe: no refund, no Stripe balance
    assert world.gateway.credit_notes == {"acme/2026-03/credit-2026-04/out-of-band": (march_gateway, Decimal("3.60"))}
    assert world.gateway.out_of_band_notes == {"acme/2026-03/credit-2026-04/out-of-band"}
    assert world.store.billing["acme"].credit == Decimal("0.00")
    assert world.gateway.invoices["acme/2026-04"].request.total == Decimal("25.40")


def test_given_a_crypto_bill_when_late_usage_is_negative_then_account_credit_and_no_processor(world: World) -> None:
    _personal_march_of_72_cents_shortened_to_nothing(world, BillingMethod.CRYPTO)
    assert world.store.invoices["solo/2026-03"].status is InvoiceStatus.OPEN  # a USD bill, crypto settles it
    world.store.rate("solo", "2026-04", seg(at(1, 4)), "video", 7_000)  # 2,000 over x 0.00072 = 1.44
    april = world.close("solo", APR)
    note = world.store.credit_notes["solo/2026-03/credit-2026-04"]
    assert (note.to_due, note.to_credit, note.processor) == (Decimal("0.00"), Decimal("0.72"), Decimal("0.00"))
    assert amounts(april, "credit") == ["-0.72"]
    assert april.total == Decimal("0.72")  # 1.44 - 0.72
    assert world.gateway.calls == []  # the crypto rail cannot take money back: nothing asked of a card processor
    assert world.store.billing["solo"].credit == Decimal("0.00")


def test_given_negative_late_usage_above_what_the_unpaid_invoice_holds_then_the_rest_is_account_credit(
    world: World,
) -> None:
    world.signup("solo", (at(1), "personal"))
    world.store.billing["solo"] = BillingState(credit=Decimal("0.50"))
    world.store.rate("solo", "2026-03", seg(at(1)), "video", 7_000)  # 2,000 over x 0.00072 = 1.44
    march = world.close("solo", MAR)
    assert march.total == Decimal("0.94")  # 1.44 - 0.50 credit applied
    world.store.rate("solo", "2026-03", seg(at(1)), "video", -2_000)  # 5,000: inside the allowance, -1.44
    april = world.close("solo", APR)
    note = world.store.credit_notes["solo/2026-03/credit-2026-04"]
    assert (note.to_due, note.to_credit) == (Decimal("0.94"), Decimal("0.50"))  # March holds 0.94; 1.44 - 0.94
    assert world.gateway.credit_notes["solo/2026-03/credit-2026-04"][1] == Decimal("0.94")
    assert april.total == Decimal("0.00")  # nothing to apply the 0.50 to this month
    assert world.store.billing["solo"].credit == Decimal("0.50")  # back on the account


def test_given_the_invoice_was_paid_before_we_heard_when_the_reduction_is_refused_then_account_credit_once(
    world: World,
) -> None:
    _personal_march_of_72_cents_shortened_to_nothing(world)
    world.gateway.settle("solo/2026-03", paid=True)  # paid at Stripe; our record still says open
    assert world.store.invoices["solo/2026-03"].status is InvoiceStatus.OPEN
    april = world.close("solo", APR)
    assert april.total == Decimal("0.00")  # composed while March looked unpaid
    note = world.store.credit_notes["solo/2026-03/credit-2026-04"]
    assert (note.to_due, note.to_credit, note.status) == (Decimal("0.00"), Decimal("0.72"), CreditNoteStatus.DONE)
    assert world.store.billing["solo"].credit == Decimal("0.72")  # for May
    assert world.gateway.out_of_band_notes == {"solo/2026-03/credit-2026-04/out-of-band"}
    world.close("solo", APR)
    assert world.store.billing["solo"].credit == Decimal("0.72")  # once
    world.store.rate("solo", "2026-05", seg(at(1, 5)), "video", 7_000)  # 2,000 over x 0.00072 = 1.44
    may = world.close("solo", MAY)
    assert amounts(may, "credit") == ["-0.72"]
    assert may.total == Decimal("0.72")


def test_given_a_void_invoice_when_late_usage_is_negative_then_nothing_is_credited(world: World) -> None:
    events = Events()
    _personal_march_of_72_cents_shortened_to_nothing(world)
    gateway_id = world.store.invoices["solo/2026-03"].gateway_id
    voided = _paid_invoice(world, "solo/2026-03") | {"status": "void", "amount_paid": 0}
    apply_stripe_event(world.store, world.bus, events, *events.add("evt_void", "invoice.voided", voided), at(2, 4))
    assert world.store.invoices["solo/2026-03"].status is InvoiceStatus.VOID
    april = world.close("solo", APR)
    note = world.store.credit_notes["solo/2026-03/credit-2026-04"]
    assert note.amount == Decimal("0.00")  # nothing was collected for March, nothing is owed back
    assert [line.amount for line in note.lines] == [Decimal("-0.72")]  # the late usage is still on record
    assert april.total == Decimal("0.00")
    assert world.store.billing["solo"].credit == Decimal("0.00")
    assert gateway_id is not None
    assert world.gateway.credit_notes == {}


def test_given_positive_and_negative_late_periods_then_adjustment_lines_for_one_and_a_note_for_the_other(
    world: World,
) -> None:
    world.signup("solo", (at(1), "personal"))
    world.store.rate("solo", "2026-03", seg(at(1)), "video", 6_000)  # 0.72
    world.close("solo", MAR)
    world.store.rate("solo", "2026-04", seg(at(1, 4)), "video", 6_000)  # 0.72
    world.close("solo", APR)
    world.store.rate("solo", "2026-03", seg(at(1)), "video", 500)  # 1,500 over: 1.08, +0.36 on the next invoice
    world.store.rate("solo", "2026-04", seg(at(1, 4)), "video", -1_000)  # 5,000: inside, -0.72 -> a credit note
    may = world.close("solo", MAY)
    assert amounts(may, "adjustment") == ["0.36"]
    assert may.total == Decimal("0.36")  # below the card minimum: carried, as any other card invoice (D126)
    assert list(world.store.credit_notes) == ["solo/2026-04/credit-2026-05"]
    assert world.store.credit_notes["solo/2026-04/credit-2026-05"].to_due == Decimal("0.72")


def _upgraded_march_of_4_69_in_usage(world: World) -> None:
    world.signup("grow", (at(1), "personal"), (at(11), "team"))  # 10 of 31 days on Personal, 21 on Team
    world.store.rate("grow", "2026-03", seg(at(1)), "video", 2_000)  # 5,000 x 10/31 -> 1,613: 387 over, 0.27864
    world.store.rate("grow", "2026-03", seg(at(11)), "video", 40_000)  # 50,000 x 21/31 -> 33,871: 6,129 over, 4.41288
    # usage 0.28 + 4.41, first-month fee 29 x 21/31 = 19.645.. -> 19.65, April's Team fee in advance 29.00
    assert world.close("grow", MAR).total == Decimal("53.34")


def test_given_an_upgraded_month_when_late_usage_of_its_segments_nets_negative_then_one_note_carries_both_lines(
    world: World,
) -> None:
    _upgraded_march_of_4_69_in_usage(world)
    march_gateway = world.store.invoices["grow/2026-03"].gateway_id
    world.store.rate("grow", "2026-03", seg(at(1)), "video", -1_000)  # Personal 1,000: inside, 0.00: -0.28
    world.store.rate("grow", "2026-03", seg(at(11)), "video", 100)  # Team 6,229 over: 4.48488 -> 4.48: +0.07
    april = world.close("grow", APR)
    assert amounts(april, "adjustment") == []  # nets -0.21: a credit note, not lines
    assert april.total == Decimal("29.00")  # May's Team fee in advance
    note = world.store.credit_notes["grow/2026-03/credit-2026-04"]
    assert [(line.tier, line.used, line.quantity, line.amount) for line in note.lines] == [
        ("personal", Decimal(-1000), Decimal(-387), Decimal("-0.28")),
        ("team", Decimal(100), Decimal(100), Decimal("0.07")),
    ]
    assert (note.amount, note.to_due, note.to_credit) == (Decimal("0.21"), Decimal("0.21"), Decimal("0.00"))
    assert world.gateway.credit_notes == {"grow/2026-03/credit-2026-04": (march_gateway, Decimal("0.21"))}
    assert world.store.billing["grow"].credit == Decimal("0.00")


def test_given_an_upgraded_month_when_late_usage_of_its_segments_nets_positive_then_both_lines_on_the_next_invoice(
    world: World,
) -> None:
    _upgraded_march_of_4_69_in_usage(world)
    world.store.rate("grow", "2026-03", seg(at(1)), "video", -1_000)  # Personal: -0.28, as above
    world.store.rate("grow", "2026-03", seg(at(11)), "video", 500)  # Team 6,629 over: 4.77288 -> 4.77: +0.36
    april = world.close("grow", APR)
    assert amounts(april, "adjustment") == ["-0.28", "0.36"]  # nets +0.08: lines, the negative one shown too
    assert april.total == Decimal("29.08")  # 29.00 + 0.08
    assert world.store.credit_notes == {}


def test_given_an_invoice_reduced_by_a_credit_note_and_paid_then_only_what_was_paid_is_refundable(
    world: World,
) -> None:
    world.signup("acme", (at(1), "team"))
    world.store.rate("acme", "2026-03", seg(at(1)), "video", 60_000)  # 65.20
    world.close("acme", MAR)
    world.store.rate("acme", "2026-03", seg(at(1)), "video", -5_000)  # -3.60 off the unpaid invoice
    world.close("acme", APR)
    assert world.gateway.find_invoice("acme/2026-03").total == Decimal("61.60")  # type: ignore[union-attr]
    world.gateway.settle("acme/2026-03", paid=True)
    events = Events()
    paid = _paid_invoice(world) | {"amount_paid": 6160}
    apply_stripe_event(world.store, world.bus, events, *events.add("evt_p", "invoice.paid", paid), at(3, 4))
    with pytest.raises(ValueError, match=r"at most 61\.60"):
        refund_invoice(world.store, world.gateway, "acme", "acme/2026-03", Decimal("65.20"))
    refunded = refund_invoice(world.store, world.gateway, "acme", "acme/2026-03", None)
    assert refunded.refunded == Decimal("61.60")


def test_given_a_paid_invoice_credited_when_the_next_invoice_has_nothing_to_apply_it_to_then_it_waits(
    world: World,
) -> None:
    events = Events()
    _personal_march_of_72_cents_shortened_to_nothing(world)
    world.gateway.settle("solo/2026-03", paid=True)
    paid = _paid_invoice(world, "solo/2026-03") | {"amount_paid": 72}
    apply_stripe_event(world.store, world.bus, events, *events.add("evt_p", "invoice.paid", paid), at(2, 4))
    april = world.close("solo", APR)
    assert april.total == Decimal("0.00")  # nothing used in April: no credit line, nothing to apply it to
    assert amounts(april, "credit") == []
    assert world.store.billing["solo"].credit == Decimal("0.72")
    world.store.rate("solo", "2026-05", seg(at(1, 5)), "video", 7_000)  # 2,000 over x 0.00072 = 1.44
    may = world.close("solo", MAY)
    assert amounts(may, "credit") == ["-0.72"]
    assert may.total == Decimal("0.72")
    assert world.store.billing["solo"].credit == Decimal("0.00")


def test_given_the_invoice_was_voided_before_the_note_was_made_then_nothing_is_credited(world: World) -> None:
    events = Events()
    _personal_march_of_72_cents_shortened_to_nothing(world)
    march = world.store.invoices["solo/2026-03"]
    world.store.before_create.append(  # Stripe voids March between April's read and its transaction
        lambda: (
            world.gateway.void(march.gateway_id),
            apply_stripe_event(
                world.store,
                world.bus,
                events,
                *events.add("evt_v", "invoice.voided", _paid_invoice(world, "solo/2026-03") | {"status": "void"}),
                at(2, 4),
            ),
        )
    )
    world.close("solo", APR)
    note = world.store.credit_notes["solo/2026-03/credit-2026-04"]
    assert (note.to_due, note.to_credit, note.status) == (Decimal("0.00"), Decimal("0.00"), CreditNoteStatus.DONE)
    assert world.store.billing["solo"].credit == Decimal("0.00")
    assert world.gateway.credit_notes == {}


# --- a paid invoice gives its money back once: a refund, a dispute lost or a note's credit, never two of them (D131)


def test_given_a_paid_invoice_refunded_in_full_when_late_usage_is_negative_then_no_account_credit(
    world: World,
) -> None:
    events = Events()
    _team_march_paid(world, events)
    refund_invoice(world.store, world.gateway, "acme", "acme/2026-03", None)  # 65.20 back to the card
    world.store.rate("acme", "2026-03", seg(at(1)), "video", -5_000)  # -3.60
    april = world.close("acme", APR)
    note = world.store.credit_notes["acme/2026-03/credit-2026-04"]
    assert (note.to_due, note.to_credit, note.returned) == (Decimal("0.00"), Decimal("0.00"), Decimal("3.60"))
    assert (note.processor, note.status) == (Decimal("0.00"), CreditNoteStatus.DONE)
    assert amounts(april, "credit") == []
    assert april.total == Decimal("29.00")  # May in advance only: the 3.60 went back with the refund
    assert world.store.billing["acme"].credit == Decimal("0.00")
    assert world.gateway.credit_notes == {}


def test_given_a_paid_invoice_partly_refunded_when_late_usage_is_negative_then_credit_up_to_what_it_keeps(
    world: World,
) -> None:
    events = Events()
    _team_march_paid(world, events)
    refund_invoice(world.store, world.gateway, "acme", "acme/2026-03", Decimal("63.00"))  # keeps 65.20 - 63.00 = 2.20
    world.store.rate("acme", "2026-03", seg(at(1)), "video", -5_000)  # -3.60
    april = world.close("acme", APR)
    note = world.store.credit_notes["acme/2026-03/credit-2026-04"]
    assert (note.to_credit, note.returned, note.processor) == (Decimal("2.20"), Decimal("1.40"), Decimal("2.20"))
    assert amounts(april, "credit") == ["-2.20"]
    assert april.total == Decimal("26.80")  # 29.00 - 2.20
    with pytest.raises(ValueError, match=r"at most 0\.00"):  # 2.20 kept, all of it given back as credit
        refund_invoice(world.store, world.gateway, "acme", "acme/2026-03", Decimal("0.01"))


def test_given_a_paid_invoice_credited_by_a_note_when_refunded_in_full_then_only_the_rest_is_refunded(
    world: World,
) -> None:
    events = Events()
    _team_march_paid(world, events)
    world.store.rate("acme", "2026-03", seg(at(1)), "video", -5_000)  # -3.60 as account credit
    april = world.close("acme", APR)
    assert amounts(april, "credit") == ["-3.60"]
    with pytest.raises(ValueError, match=r"at most 61\.60"):
        refund_invoice(world.store, world.gateway, "acme", "acme/2026-03", Decimal("65.20"))
    refunded = refund_invoice(world.store, world.gateway, "acme", "acme/2026-03", None)
    assert refunded.refunded == Decimal("61.60")  # 65.20 - 3.60: 65.20 back in all


def test_given_a_crypto_bill_credited_by_a_note_when_two_refunds_race_then_the_re_applied_one_is_bounded_by_the_note(
    world: World,
) -> None:
    """65.20 paid; a note gave 3.60 back as account credit, so 61.60 is refundable. Refund B (3.60) reads; refund A
    (61.60) lands before B writes; B's write conflicts and is re-applied on the stored bill: 65.20 - 3.60 credited -
    61.60 owed = 0.00 left, so B is refused (before: 65.20 owed on top of the 3.60 credit, 68.80 back on 65.20)."""
    events = Events()
    _team_march_paid(world, events)
    world.store.rate("acme", "2026-03", seg(at(1)), "video", -5_000)  # -3.60 as account credit
    assert amounts(world.close("acme", APR), "credit") == ["-3.60"]
    march = world.store.invoices["acme/2026-03"]
    world.store.invoices["acme/2026-03"] = replace(march, method=BillingMethod.CRYPTO)  # the crypto path's refund
    world.store.before_update.append(
        lambda: refund_invoice(world.store, world.gateway, "acme", "acme/2026-03", Decimal("61.60"))
    )
    with pytest.raises(ValueError, match=r"refund must be at most 0\.00, got 3\.60$"):
        refund_invoice(world.store, world.gateway, "acme", "acme/2026-03", Decimal("3.60"))
    stored = world.store.invoices["acme/2026-03"]
    assert (stored.refund_owed, stored.refunded) == (Decimal("61.60"), Decimal("0.00"))
    assert world.store.credit_notes["acme/2026-03/credit-2026-04"].to_credit == Decimal("3.60")  # 65.20 back in all


def test_given_a_card_invoice_credited_by_a_note_when_two_refunds_race_then_the_re_applied_request_is_bounded(
    world: World,
) -> None:
    """The same race on the card path: refund A (61.60) is requested, refunded by the processor and recorded between
    refund B's read and its request's write; B's request, re-applied on the stored invoice, finds 65.20 - 3.60 -
    61.60 = 0.00 refundable and is refused: the processor is asked for one refund only (before: 3.60 more, 65.20
    refunded on top of the note's 3.60 credit)."""
    events = Events()
    _team_march_paid(world, events)
    world.store.rate("acme", "2026-03", seg(at(1)), "video", -5_000)  # -3.60 as account credit
    assert amounts(world.close("acme", APR), "credit") == ["-3.60"]
    refunds = world.gateway.calls.count("refund")
    world.store.before_update.append(
        lambda: refund_invoice(world.store, world.gateway, "acme", "acme/2026-03", Decimal("61.60"))
    )
    with pytest.raises(ValueError, match=r"refund must be at most 0\.00, got 3\.60$"):
        refund_invoice(world.store, world.gateway, "acme", "acme/2026-03", Decimal("3.60"))
    stored = world.store.invoices["acme/2026-03"]
    assert (stored.refunded, stored.refund_owed, stored.refund_pending) == (Decimal("61.60"), Decimal("0.00"), None)
    assert stored.refunds_requested == 1
    assert world.gateway.calls.count("refund") == refunds + 1


def test_given_a_card_refund_still_pending_when_late_usage_is_negative_then_the_note_counts_it_as_given_back(
    world: World,
) -> None:
    """65.20 paid; a refund of 65.20 is requested and recorded, the processor times out: the request stays pending.
    5,000 March minutes go away late (-3.60). April's note must count the pending 65.20 as given back: 65.20 - 65.20
    = 0.00 held, so 0.00 credit and 3.60 returned; the refund run again completes 65.20: 65.20 back on 65.20 paid
    (before: 3.60 account credit, then 65.20 refunded, 68.80 back)."""
    events = Events()
    _team_march_paid(world, events)
    world.gateway.fail_next = [GatewayUnavailableError("timeout")]
    with pytest.raises(GatewayUnavailableError):
        refund_invoice(world.store, world.gateway, "acme", "acme/2026-03", Decimal("65.20"))
    pending = world.store.invoices["acme/2026-03"].refund_pending
    assert pending is not None
    assert pending.amount == Decimal("65.20")
    world.store.rate("acme", "2026-03", seg(at(1)), "video", -5_000)  # -3.60
    april = world.close("acme", APR)
    note = world.store.credit_notes["acme/2026-03/credit-2026-04"]
    assert (note.to_credit, note.returned, note.processor) == (Decimal("0.00"), Decimal("3.60"), Decimal("0.00"))
    assert amounts(april, "credit") == []
    assert april.total == Decimal("29.00")  # May in advance only
    done = refund_invoice(world.store, world.gateway, "acme", "acme/2026-03", Decimal("65.20"))
    assert (done.refunded, done.refund_pending) == (Decimal("65.20"), None)
    assert world.store.billing["acme"].credit == Decimal("0.00")  # 65.20 + 0.00 back on 65.20 paid


def test_given_a_pending_refund_whose_webhook_came_first_when_late_usage_is_negative_then_it_is_counted_once(
    world: World,
) -> None:
    """A refund of 30.00 is requested and the processor times out on our side, but it refunded: its
    ``charge.refunded`` (30.00) is recorded while the request is still pending. March keeps 65.20 - 30.00 = 35.20,
    the 30.00 taken from the fees first: the 7.20 of March's usage is still held. 10,000 minutes go away late
    (-7.20): 7.20 credit (counting the 30.00 twice would leave 65.20 - 60.00 = 5.20, 2.00 short)."""
    events = Events()
    _team_march_paid(world, events)
    world.gateway.fail_next = [GatewayUnavailableError("timeout")]
    with pytest.raises(GatewayUnavailableError):
        refund_invoice(world.store, world.gateway, "acme", "acme/2026-03", Decimal("30.00"))
    intent = world.store.invoices["acme/2026-03"].gateway_refs[0]
    apply_stripe_event(
        world.store, world.bus, events, *events.add("evt_r1", "charge.refunded", _charge(intent, 3000)), at(3, 4)
    )
    march = world.store.invoices["acme/2026-03"]
    assert (march.refunded, march.refund_pending is not None) == (Decimal("30.00"), True)
    world.store.rate("acme", "2026-03", seg(at(1)), "video", -10_000)  # 10,000 x 0.00072 = -7.20
    world.close("acme", APR)
    note = world.store.credit_notes["acme/2026-03/credit-2026-04"]
    assert (note.to_credit, note.returned) == (Decimal("7.20"), Decimal("0.00"))


def test_given_a_close_landing_between_a_refund_request_and_its_processor_call_then_the_note_credits_nothing_twice(
    world: World, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The same without an outage: April's close runs after the refund's request (65.20) is recorded and before the
    processor refunds it. 65.20 - 65.20 pending = 0.00 held: 0.00 credit, 3.60 returned (before: 3.60 credit)."""
    events = Events()
    _team_march_paid(world, events)
    world.store.rate("acme", "2026-03", seg(at(1)), "video", -5_000)  # -3.60
    processor_refund = world.gateway.refund

    def close_first(gateway_id: str, amount: Decimal, refund_id: str, to_failed_card: bool = False) -> str:
        world.close("acme", APR)
        return processor_refund(gateway_id, amount, refund_id, to_failed_card)

    monkeypatch.setattr(world.gateway, "refund", close_first)
    done = refund_invoice(world.store, world.gateway, "acme", "acme/2026-03", None)
    assert done.refunded == Decimal("65.20")
    note = world.store.credit_notes["acme/2026-03/credit-2026-04"]
    assert (note.to_credit, note.returned) == (Decimal("0.00"), Decimal("3.60"))
    assert amounts(world.store.invoices["acme/2026-04"], "credit") == []
    assert world.store.billing["acme"].credit == Decimal("0.00")


def test_given_a_paid_invoice_charged_back_when_late_usage_is_negative_then_no_account_credit(world: World) -> None:
    events = Events()
    _team_march_paid(world, events)
    refs = world.store.invoices["acme/2026-03"].gateway_refs
    dispute = {"id": "dp_1", "payment_intent": refs[0], "amount": 6520, "status": "lost"}
    apply_stripe_event(
        world.store, world.bus, events, *events.add("evt_dl", "charge.dispute.closed", dispute), at(3, 4)
    )
    assert world.store.invoices["acme/2026-03"].charged_back == Decimal("65.20")
    world.store.rate("acme", "2026-03", seg(at(1)), "video", -5_000)  # -3.60
    april = world.close("acme", APR)
    note = world.store.credit_notes["acme/2026-03/credit-2026-04"]
    assert (note.to_credit, note.returned) == (Decimal("0.00"), Decimal("3.60"))
    assert amounts(april, "credit") == []
    assert world.store.billing["acme"].credit == Decimal("0.00")


def test_given_a_paid_crypto_bill_with_a_refund_owed_when_late_usage_is_negative_then_credit_up_to_what_it_keeps(
    world: World,
) -> None:
    _personal_march_of_72_cents_shortened_to_nothing(world, BillingMethod.CRYPTO)
    march = world.store.invoices["solo/2026-03"]
    world.store.invoices["solo/2026-03"] = replace(
        march, status=InvoiceStatus.PAID, refund_owed=Decimal("0.50")
    )  # paid 0.72 on chain, an operator owes 0.50 back: it keeps 0.22
    world.close("solo", APR)
    note = world.store.credit_notes["solo/2026-03/credit-2026-04"]
    assert (note.to_due, note.to_credit, note.returned) == (Decimal("0.00"), Decimal("0.22"), Decimal("0.50"))
    assert world.store.billing["solo"].credit == Decimal("0.22")


def test_given_an_invoice_lowered_by_a_note_when_its_payment_fails_then_the_alert_states_what_it_still_asks(
    world: World,
) -> None:
    events = Events()
    world.signup("acme", (at(1), "team"))
    world.store.rate("acme", "2026-03", seg(at(1)), "video", 60_000)  # 65.20
    world.close("acme", MAR)
    world.store.rate("acme", "2026-03", seg(at(1)), "video", -5_000)  # -3.60 off the unpaid invoice
    world.close("acme", APR)
    failed = _paid_invoice(world) | {"status": "open", "amount_paid": 0}
    key = events.add("evt_f", "invoice.payment_failed", failed)
    apply_stripe_event(world.store, world.bus, events, *key, at(3, 4))
    alerts = [detail for kind, detail in world.bus.events if kind == "PaymentFailed.v1"]
    assert [alert["total"] for alert in alerts] == ["61.60"]  # 65.20 - 3.60, what the card is asked for


def test_given_stripe_voided_the_invoice_before_we_heard_when_the_reduction_is_refused_then_nothing_is_credited(
    world: World,
) -> None:
    events = Events()
    _personal_march_of_72_cents_shortened_to_nothing(world)
    world.gateway.void(world.store.invoices["solo/2026-03"].gateway_id)  # its invoice.voided still on the way
    assert world.store.invoices["solo/2026-03"].status is InvoiceStatus.OPEN
    world.close("solo", APR)
    note = world.store.credit_notes["solo/2026-03/credit-2026-04"]
    assert (note.to_due, note.to_credit, note.status) == (Decimal("0.00"), Decimal("0.00"), CreditNoteStatus.DONE)
    assert world.store.billing["solo"].credit == Decimal("0.00")  # nothing was collected for March
    assert world.gateway.out_of_band_notes == set()
    voided = _paid_invoice(world, "solo/2026-03") | {"status": "void", "amount_paid": 0}
    apply_stripe_event(world.store, world.bus, events, *events.add("evt_v", "invoice.voided", voided), at(2, 4))
    assert world.store.billing["solo"].credit == Decimal("0.00")


def test_given_stripe_voided_the_invoice_without_a_revision_when_its_voided_event_never_comes_then_no_note_waits(
    world: World,
) -> None:
    """Personal, March 0.72 (1,000 over x 0.00072), all of it gone (-0.72); March voided in Stripe's dashboard (a
    plain void: no revision), its ``invoice.voided`` lost. April's close: refused as void, no revision named - nothing
    was collected, so nothing is owed back: the note is done at 0.00 (0.72 - 0.72), named by no close. Before
    (D343 amended, review 2): it waited for an ``invoice.voided`` that never came, at every close."""
    _personal_march_of_72_cents_shortened_to_nothing(world)
    world.gateway.void(world.store.invoices["solo/2026-03"].gateway_id or "")
    waiting = [close_account(world.deps, "solo", period, period.end).notes_waiting for period in (APR, MAY)]
    assert waiting == [(), ()]
    note = world.store.credit_notes["solo/2026-03/credit-2026-04"]
    assert (note.to_due, note.to_credit, note.status) == (Decimal("0.00"), Decimal("0.00"), CreditNoteStatus.DONE)
    assert world.store.invoices["solo/2026-03"].status is InvoiceStatus.OPEN  # ours: the operator's (D132)
    assert world.store.billing["solo"].credit == Decimal("0.00")
    assert world.gateway.credit_notes == {}


def test_given_a_note_left_pending_on_an_invoice_paid_at_stripe_then_the_next_close_credits_it_on_its_own_invoice(
    world: World,
) -> None:
    """D334. Team, March 65.20 (29.00 + 7.20 + 29.00 April in advance) paid at Stripe, its ``invoice.paid`` not
    here yet; 5,000 March minutes go away (-3.60). April's note lowering March meets "ours to fix": April is issued,
    the note waits (D330). May's close takes it to Stripe before composing: refused, paid -> 3.60 account credit,
    which May applies: 29.00 (June in advance) - 3.60 = 25.40. Before: May composed first (29.00) and the 3.60 waited
    for June's invoice."""
    world.signup("acme", (at(1), "team"))
    world.store.rate("acme", "2026-03", seg(at(1)), "video", 60_000)  # 10,000 over x 0.00072 = 7.20
    assert world.close("acme", MAR).total == Decimal("65.20")
    world.gateway.settle("acme/2026-03", paid=True)
    world.store.rate("acme", "2026-03", seg(at(1)), "video", -5_000)  # -3.60
    world.gateway.fail_next = [GatewayMisconfiguredError("no such invoice")]
    assert world.close("acme", APR).total == Decimal("29.00")
    assert world.store.credit_notes["acme/2026-03/credit-2026-04"].status is CreditNoteStatus.PENDING

    may = world.close("acme", MAY)
    note = world.store.credit_notes["acme/2026-03/credit-2026-04"]
    assert (note.status, note.to_due, note.to_credit) == (CreditNoteStatus.DONE, Decimal("0.00"), Decimal("3.60"))
    assert (amounts(may, "credit"), may.total) == (["-3.60"], Decimal("25.40"))
    assert world.store.billing["acme"].credit == Decimal("0.00")
