"""Refunds and disputes of a paid card invoice end to end in-process on moto: the close issues the invoice through the
real Stripe adapter on the Stripe emulator, which charges the card and later refunds it or has it disputed; every
event Stripe sends (objects at API 2026-10-28: the invoice names no charge, the charge and the dispute name the payment
intent, not the invoice) goes signed through the real ingest handler, the billing bus and ``PaymentEventsRule`` to
the payment-status handler, which asks Stripe (the emulator) for the paid invoice's payments.

Hand-worked figures: acct-a, Team, pm_card_visa, 60,000 video minutes in March 2026: 10,000 over x 0.00072 = 7.20 +
March fee 29.00 + April's fee in advance 29.00 = 65.20 (tests/integration/test_invoice_close.py)."""

from __future__ import annotations

from decimal import Decimal

import pytest
import stripe

from kilo_billing.invoicing import InvoiceStatus, refundable
from kilo_dev.stripe_emulator import StripeEmulator
from kilo_invoice.logic import refund_invoice
from kilo_invoice.ports import GatewayRejectedError
from tests.integration.test_invoice_close import Invoicing, _month, invoicing

__all__ = ["invoicing"]  # the fixture, shared with the close's integration tests


def _deliver(invoicing: Invoicing, since: int) -> int:
    """Send Stripe's events from index ``since`` through ingest and the payment-status queue; returns the next index."""
    emitted = invoicing.http.emulator.events[since:]
    assert [invoicing.webhook(event) for event in emitted] == [200] * len(emitted)
    invoicing.payments()
    return since + len(emitted)


def _paid_intents(invoicing: Invoicing) -> list[str]:
    """The payment intents that paid: acct-b's declined card leaves its invoice's intent waiting for another card
    (``requires_payment_method``, its failed charge on it), as Stripe does."""
    intents = invoicing.http.emulator.objects["payment_intent"].values()
    return [intent["id"] for intent in intents if intent["status"] == "succeeded"]


def _listed(invoicing: Invoicing, dispute: str) -> list[tuple[int, int, str]]:
    """The dispute's ``balance_transactions`` as the last ``charge.dispute.closed`` sent them, read through the SDK's
    types (stripe.Dispute, stripe.BalanceTransaction): (amount, fee, reporting_category) each."""
    (closed, *_) = [e for e in reversed(invoicing.http.emulator.events) if e["type"] == "charge.dispute.closed"]
    typed = stripe.Dispute.construct_from(closed["data"]["object"], "sk_test")
    assert typed.id == dispute
    assert all(isinstance(item, stripe.BalanceTransaction) for item in typed.balance_transactions)
    return [(item.amount, item.fee, item.reporting_category) for item in typed.balance_transactions]


def _closed_and_paid(invoicing: Invoicing) -> tuple[str, int]:
    _month(invoicing)
    invoicing.start("2026-04-01T06:00:00Z")
    invoicing.close_all()
    seen = _deliver(invoicing, 0)
    invoicing.published()
    invoice = invoicing.invoice("acct-a")
    assert (invoice.status, invoice.total) == (InvoiceStatus.PAID, Decimal("65.20"))
    (intent,) = _paid_intents(invoicing)  # the one card payment (acct-b's card declines)
    assert invoice.gateway_refs == (intent,)  # asked of Stripe on invoice.paid, recorded with its pointer
    assert invoicing.store.invoice_for_gateway(intent) == ("acct-a", "acct-a/2026-03")
    return intent, seen


def test_given_a_paid_card_invoice_when_stripe_refunds_it_then_the_invoice_records_the_refund(
    invoicing: Invoicing,
) -> None:
    _, seen = _closed_and_paid(invoicing)
    gateway = invoicing.store.ledger("acct-a").invoices["acct-a/2026-03"].gateway_id
    assert gateway is not None
    from kilo_invoice.dependencies import closer  # noqa: PLC0415

    closer().gateway.refund(gateway, Decimal("12.34"), "made-in-the-dashboard")  # a refund we did not record
    assert [e["type"] for e in invoicing.http.emulator.events[seen:]] == ["charge.refunded", "refund.created"]
    _deliver(invoicing, seen)
    assert invoicing.invoice("acct-a").refunded == Decimal("12.34")


def test_given_a_refund_made_in_stripes_dashboard_delivered_twice_then_it_counts_once_besides_ours(
    invoicing: Invoicing,
) -> None:
    """A 10.00 refund made in Stripe's dashboard (a Refund without ``kilo_refund_id``, as the emulator makes it):
    its ``charge.refunded`` and ``refund.created`` delivered, then both again (at-least-once delivery): 10.00
    refunded. Ours of 20.00 then made and its events delivered: 30.00 refunded, 35.20 still refundable
    (D331: the Refund's own id, charge and intent as Stripe's event carries them)."""
    intent, seen = _closed_and_paid(invoicing)
    emulator = invoicing.http.emulator
    assert emulator.handle("post", "/v1/refunds", f"payment_intent={intent}&amount=1000", {}).status == 200
    kinds = [event["type"] for event in emulator.events[seen:]]
    assert kinds == ["charge.refunded", "refund.created"]
    again = list(emulator.events[seen:])
    seen = _deliver(invoicing, seen)
    assert [invoicing.webhook(event) for event in again] == [200, 200]
    invoicing.payments()
    assert invoicing.invoice("acct-a").refunded == Decimal("10.00")
    from kilo_invoice.dependencies import closer  # noqa: PLC0415

    done = refund_invoice(invoicing.store, closer().gateway, "acct-a", "acct-a/2026-03", Decimal("20.00"))
    _deliver(invoicing, seen)
    march = invoicing.invoice("acct-a")
    assert (done.refunded, march.refunded) == (Decimal("30.00"), Decimal("30.00"))
    assert refundable(invoicing.store.ledger("acct-a"), march) == Decimal("35.20")


def test_given_a_paid_card_invoice_when_disputed_and_lost_then_flagged_alerted_and_charged_back(
    invoicing: Invoicing,
) -> None:
    intent, seen = _closed_and_paid(invoicing)
    dispute = invoicing.http.emulator.open_dispute(intent)
    seen = _deliver(invoicing, seen)
    assert invoicing.store.ledger("acct-a").billing.disputed
    assert [(t, d["invoice_id"], d["dispute_id"], d["amount"]) for t, d in invoicing.published()] == [
        ("DisputeOpened.v1", "acct-a/2026-03", dispute, "65.20")
    ]
    invoicing.http.emulator.close_dispute(dispute, won=False)
    _deliver(invoicing, seen)
    invoice = invoicing.invoice("acct-a")
    assert not invoicing.store.ledger("acct-a").billing.disputed
    assert (invoice.status, invoice.charged_back, invoice.kept) == (InvoiceStatus.PAID, Decimal("65.20"), 0)
    # the lost close lists its withdrawal, as Stripe's Dispute does: -6520 (fee 1500 apart) -> 65.20 charged back
    assert _listed(invoicing, dispute) == [(-6520, 1500, "dispute")]


def test_given_a_dispute_delivered_before_invoice_paid_then_stripe_names_the_invoice(invoicing: Invoicing) -> None:
    _month(invoicing)
    invoicing.start("2026-04-01T06:00:00Z")
    invoicing.close_all()
    (intent,) = _paid_intents(invoicing)
    invoicing.http.emulator.open_dispute(intent)
    events = invoicing.http.emulator.events
    (disputed,) = [e for e in events if e["type"] == "charge.dispute.created"]
    assert invoicing.webhook(disputed) == 200  # out of order: before every invoice event
    invoicing.payments()
    assert invoicing.store.ledger("acct-a").billing.disputed
    assert invoicing.invoice("acct-a").gateway_refs[0] == intent
    assert [r.params for r in invoicing.http.requests if r.path == "/v1/invoice_payments"][-1] == {
        "payment": {"type": "payment_intent", "payment_intent": intent},
        "limit": "1",
    }


def test_given_a_paid_card_invoice_when_disputed_and_won_then_the_funds_come_back_and_it_is_paid_in_full(
    invoicing: Invoicing,
) -> None:
    """Stripe withdraws a disputed payment's funds when the dispute opens (``charge.dispute.funds_withdrawn``) and
    reinstates them when the dispute is won (``charge.dispute.funds_reinstated``)."""
    intent, seen = _closed_and_paid(invoicing)
    dispute = invoicing.http.emulator.open_dispute(intent)
    assert [e["type"] for e in invoicing.http.emulator.events[seen:]] == [
        "charge.dispute.created",
        "charge.dispute.funds_withdrawn",
    ]
    seen = _deliver(invoicing, seen)
    invoice = invoicing.invoice("acct-a")
    assert (invoice.disputed, invoice.charged_back, invoice.kept) == (True, Decimal("65.20"), 0)
    invoicing.http.emulator.close_dispute(dispute, won=True)
    _deliver(invoicing, seen)
    invoice = invoicing.invoice("acct-a")
    assert not invoicing.store.ledger("acct-a").billing.disputed
    assert (invoice.status, invoice.disputed, invoice.charged_back) == (InvoiceStatus.PAID, False, 0)
    assert invoice.kept == invoice.total == Decimal("65.20")
    # the won close lists withdrawal and reinstatement: -(-6520 + 6520) = 0 -> 0.00 charged back
    assert _listed(invoicing, dispute) == [(-6520, 1500, "dispute"), (6520, 0, "dispute_reversal")]


def test_given_an_invoice_paid_in_two_payments_when_refunded_from_both_then_the_invoice_records_the_sum(
    invoicing: Invoicing,
) -> None:
    """65.20 paid as 40.00 + 25.20; a refund of 50.00 is 40.00 of the first and 10.00 of the second: two
    ``charge.refunded``, each with its own charge's running total (40.00, 10.00) - the invoice's refund is 50.00."""
    _, seen = _closed_and_paid(invoicing)
    gateway = invoicing.store.ledger("acct-a").invoices["acct-a/2026-03"].gateway_id
    assert gateway is not None
    invoicing.http.emulator.split_payment(gateway, 4000)
    from kilo_invoice.dependencies import closer  # noqa: PLC0415

    closer().gateway.refund(gateway, Decimal("50.00"), "made-in-the-dashboard")
    refunded = [e["data"]["object"] for e in invoicing.http.emulator.events[seen:] if e["type"] == "charge.refunded"]
    assert sorted(charge["amount_refunded"] for charge in refunded) == [1000, 4000]
    _deliver(invoicing, seen)
    invoice = invoicing.invoice("acct-a")
    assert (invoice.refunded, invoice.kept) == (Decimal("50.00"), Decimal("15.20"))


def test_given_a_payment_disputed_and_won_when_the_whole_invoice_is_refunded_then_it_is_refused_and_nothing_sent(
    invoicing: Invoicing,
) -> None:
    """65.20 paid as 40.00 (payment 1) + 25.20 (payment 2); payment 1 disputed: its 40.00 withdrawn (charged back
    40.00, 65.20 - 40.00 = 25.20 refundable); the dispute won: the 40.00 reinstated (charged back 0.00, the ledger
    counts all 65.20 refundable again). Stripe's won dispute says its charge is not refundable (the emulator models
    ``is_charge_refundable`` false, as the one real payload of a won dispute found, Zulip's fixture, API 2016-07-06),
    so payment 1 is left out (D359): ``refund_invoice`` of 65.20 is refused as a whole ("25.20 of its payments is
    left to refund (a disputed payment left out"), nothing sent, nothing recorded refunded. Before (D359 amended
    (wd)): 4000 + 2520 cents sent, the emulator agreeing with the adapter's reading of a won dispute."""
    _, seen = _closed_and_paid(invoicing)
    gateway = invoicing.store.ledger("acct-a").invoices["acct-a/2026-03"].gateway_id
    assert gateway is not None
    first, _second = invoicing.http.emulator.split_payment(gateway, 4000)
    dispute = invoicing.http.emulator.open_dispute(first)
    seen = _deliver(invoicing, seen)
    march = invoicing.invoice("acct-a")
    assert (march.charged_back, refundable(invoicing.store.ledger("acct-a"), march)) == (
        Decimal("40.00"),
        Decimal("25.20"),
    )
    invoicing.http.emulator.close_dispute(dispute, won=True)
    _deliver(invoicing, seen)
    march = invoicing.invoice("acct-a")
    assert (march.disputed, march.charged_back) == (False, 0)
    assert refundable(invoicing.store.ledger("acct-a"), march) == Decimal("65.20")
    from kilo_invoice.dependencies import closer  # noqa: PLC0415

    with pytest.raises(
        GatewayRejectedError,
        match=r"cannot refund 65\.20 more .*: 25\.20 of its payments is left to refund \(a disputed payment left out",
    ):
        refund_invoice(invoicing.store, closer().gateway, "acct-a", "acct-a/2026-03", Decimal("65.20"))
    assert invoicing.http.emulator.objects.get("refund", {}) == {}  # before: 4000 on payment 1 + 2520 on payment 2
    assert invoicing.invoice("acct-a").refunded == 0


def test_given_a_payment_under_an_inquiry_when_the_whole_invoice_is_refunded_then_both_payments_are_refunded(
    invoicing: Invoicing,
) -> None:
    """65.20 paid as 40.00 (payment 1) + 25.20 (payment 2); an inquiry on payment 1 (``warning_needs_response``:
    nothing withdrawn, the charge refundable - Stripe's documented behaviour): the ledger marks the invoice disputed,
    charged back 0.00, all 65.20 refundable. ``refund_invoice`` of 65.20: 4000 cents on payment 1 (its whole 40.00,
    oldest first) + 65.20 - 40.00 = 25.20 = 2520 cents on payment 2. Payment 1 refunded in full closes the inquiry
    (``warning_closed``, Stripe's documented behaviour - the emulator sends ``charge.dispute.closed`` after the
    refund's events; before (wd3) the test closed it by hand): recorded 65.20 refunded, 65.20 - 65.20 = 0.00 kept,
    0.00 charged back, no longer disputed."""
    _, seen = _closed_and_paid(invoicing)
    gateway = invoicing.store.ledger("acct-a").invoices["acct-a/2026-03"].gateway_id
    assert gateway is not None
    first, second = invoicing.http.emulator.split_payment(gateway, 4000)
    dispute = invoicing.http.emulator.open_dispute(first, inquiry=True)
    seen = _deliver(invoicing, seen)
    march = invoicing.invoice("acct-a")
    assert (march.disputed, march.charged_back) == (True, 0)
    assert refundable(invoicing.store.ledger("acct-a"), march) == Decimal("65.20")
    from kilo_invoice.dependencies import closer  # noqa: PLC0415

    done = refund_invoice(invoicing.store, closer().gateway, "acct-a", "acct-a/2026-03", Decimal("65.20"))
    made = [(r["payment_intent"], r["amount"]) for r in invoicing.http.emulator.objects["refund"].values()]
    assert made == [(first, 4000), (second, 2520)]
    closed = [e["data"]["object"] for e in invoicing.http.emulator.events[seen:] if e["type"].startswith("charge.dis")]
    assert [(d["id"], d["status"]) for d in closed] == [(dispute, "warning_closed")]
    _deliver(invoicing, seen)
    march = invoicing.invoice("acct-a")
    assert (done.refunded, march.refunded, march.kept, march.charged_back, march.disputed) == (
        Decimal("65.20"),
        Decimal("65.20"),
        0,
        0,
        False,
    )


def _inquiry_refunded_in_full(invoicing: Invoicing) -> tuple[StripeEmulator, str, int]:
    """65.20 paid as 40.00 (payment 1) + 25.20 (payment 2), an inquiry on payment 1, then all 65.20 refunded (4000 +
    2520), each step delivered: the emulator, the inquiry's id and the events seen so far."""
    _, seen = _closed_and_paid(invoicing)
    gateway = invoicing.store.ledger("acct-a").invoices["acct-a/2026-03"].gateway_id
    assert gateway is not None
    emulator = invoicing.http.emulator
    first, _second = emulator.split_payment(gateway, 4000)
    dispute = emulator.open_dispute(first, inquiry=True)
    seen = _deliver(invoicing, seen)
    from kilo_invoice.dependencies import closer  # noqa: PLC0415

    refund_invoice(invoicing.store, closer().gateway, "acct-a", "acct-a/2026-03", Decimal("65.20"))
    seen = _deliver(invoicing, seen)
    return emulator, dispute, seen


def test_given_an_inquiry_refunded_in_full_when_it_escalates_and_is_lost_unseen_then_nothing_is_charged_back(
    invoicing: Invoicing,
) -> None:
    """65.20 paid as 40.00 (payment 1) + 25.20 (payment 2), an inquiry on payment 1; all 65.20 refunded (4000 +
    2520: the inquiry closes ``warning_closed``); the issuer escalates it and it closes ``lost`` with no
    ``charge.dispute.funds_withdrawn`` and its ``balance_transactions`` still empty (nothing taken: "after the payment
    has been fully refunded, no further funds are withdrawn", the SDK's is_charge_refundable). Through ingest: the
    list never grows past 0 items, -(sum of nothing) = 0.00 charged back -> 65.20 refunded, 0.00 charged back, 0.00
    kept, nothing refundable. Before (D359 amended (wd3)): 40.00 charged back, kept 65.20 - 65.20 - 40.00 = -40.00.
    The next test lists a withdrawal on the lost close: it counts (D359 amended (wd5))."""
    emulator, dispute, seen = _inquiry_refunded_in_full(invoicing)
    assert emulator.objects["dispute"][dispute]["status"] == "warning_closed"
    emulator.objects["dispute"][dispute]["status"] = "needs_response"  # escalated, its list still empty
    emulator.close_dispute(dispute, won=False)
    assert [e["type"] for e in emulator.events[seen:]] == ["charge.dispute.closed"]
    _deliver(invoicing, seen)
    march = invoicing.invoice("acct-a")
    assert (march.refunded, march.charged_back, march.kept) == (Decimal("65.20"), 0, 0)
    assert refundable(invoicing.store.ledger("acct-a"), march) == 0


def test_given_an_inquiry_refunded_in_full_when_it_escalates_and_its_lost_close_lists_a_withdrawal_then_it_counts(
    invoicing: Invoicing,
) -> None:
    """Review wd4 F1 through ingest: as above, but the escalated dispute's lost close lists Stripe's withdrawal
    (-4000, 1 item, more than the 0 items of the ``warning_closed`` close): -(-4000) = 40.00 charged back, kept 65.20 -
    65.20 - 40.00 = -40.00 (wd4: 0.00, fixed at the first close's empty list)."""
    emulator, dispute, seen = _inquiry_refunded_in_full(invoicing)
    stored = emulator.objects["dispute"][dispute]
    assert stored["status"] == "warning_closed"
    stored["status"] = "needs_response"  # escalated: Stripe withdraws the 40.00 and lists it
    stored["balance_transactions"] = [emulator._dispute_transaction(stored, -1, "dispute")]
    emulator.close_dispute(dispute, won=False)
    _deliver(invoicing, seen)
    march = invoicing.invoice("acct-a")
    assert (march.refunded, march.charged_back, march.kept) == (Decimal("65.20"), Decimal("40.00"), Decimal("-40.00"))


def test_given_a_credit_note_made_while_a_disputes_funds_were_withdrawn_when_won_then_the_account_is_credited_once(
    invoicing: Invoicing,
) -> None:
    """The dispute holds March's 65.20 when April's close finds March's late usage 3.60 lower (55,000 minutes: 5,000
    over x 0.00072 = 3.60, was 7.20): March keeps nothing, so the note credits nothing and records 3.60 returned. Stripe
    reinstates the funds (won): March keeps 65.20 again, the note credits 3.60 to the account, once."""
    intent, seen = _closed_and_paid(invoicing)
    dispute = invoicing.http.emulator.open_dispute(intent)
    seen = _deliver(invoicing, seen)
    invoicing.rate("acct-a", "video", -5_000)
    invoicing.start("2026-05-01T06:00:00Z")
    invoicing.close_all()
    seen = _deliver(invoicing, seen)
    ledger = invoicing.store.ledger("acct-a")
    note = ledger.credit_notes["acct-a/2026-03/credit-2026-04"]
    assert (note.to_credit, note.returned, ledger.billing.credit) == (Decimal("0.00"), Decimal("3.60"), 0)
    assert invoicing.invoice("acct-a", "2026-04").total == Decimal("29.00")  # May's fee in advance, no credit
    invoicing.http.emulator.close_dispute(dispute, won=True)
    _deliver(invoicing, seen)
    ledger = invoicing.store.ledger("acct-a")
    note = ledger.credit_notes["acct-a/2026-03/credit-2026-04"]
    assert (note.to_credit, note.returned, ledger.billing.credit) == (Decimal("3.60"), 0, Decimal("3.60"))
    reinstated = [e for e in invoicing.http.emulator.events if e["type"] == "charge.dispute.funds_reinstated"]
    assert [invoicing.webhook(event) for event in reinstated] == [200]  # Stripe sends it again
    invoicing.payments()
    assert invoicing.store.ledger("acct-a").billing.credit == Decimal("3.60")


def test_given_our_refund_made_when_the_cards_bank_returns_it_then_march_keeps_it_again_and_the_customer_is_told(
    invoicing: Invoicing,
) -> None:
    """D340 end to end: ours of 20.00 made (its ``charge.refunded`` and ``refund.created`` delivered: 20.00
    refunded, 45.20 refundable); the card's bank returns it (the emulator's ``fail_refund``: ``refund.failed``,
    ``refund.updated`` and ``charge.refund.updated``, each signed through ingest - accepted, 200 - and delivered
    twice): 20.00 - 20.00 = 0.00 refunded, all 65.20 refundable again, one ``RefundFailed.v1`` on the bus. Before:
    20.00 refunded, 45.20 refundable, nothing published."""
    _intent, seen = _closed_and_paid(invoicing)
    from kilo_invoice.dependencies import closer  # noqa: PLC0415

    done = refund_invoice(invoicing.store, closer().gateway, "acct-a", "acct-a/2026-03", Decimal("20.00"))
    seen = _deliver(invoicing, seen)
    assert (done.refunded, invoicing.invoice("acct-a").refunded) == (Decimal("20.00"), Decimal("20.00"))
    invoicing.published()
    emulator = invoicing.http.emulator
    (refund,) = emulator.objects["refund"]
    emulator.fail_refund(refund)
    failure = list(emulator.events[seen:])
    assert [event["type"] for event in failure] == ["refund.failed", "refund.updated", "charge.refund.updated"]
    _deliver(invoicing, seen)
    assert [invoicing.webhook(event) for event in failure] == [200, 200, 200]  # delivered again
    invoicing.payments()
    march = invoicing.invoice("acct-a")
    assert (march.refunded, march.kept) == (Decimal("0.00"), Decimal("65.20"))
    assert refundable(invoicing.store.ledger("acct-a"), march) == Decimal("65.20")
    told = [(kind, detail["event_id"], detail["amount"]) for kind, detail in invoicing.published()]
    assert told == [("RefundFailed.v1", f"refund-failed:{refund}", "20.00")]
