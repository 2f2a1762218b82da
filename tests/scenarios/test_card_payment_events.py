"""A paid card invoice and what Stripe tells us about its payment afterwards (Given/When/Then): refunds and disputes
reach the invoice they are about, with the objects Stripe sends at the pinned API version (2026-10-28: an invoice
names neither its charge nor its payment intent, a charge names no invoice). Every event object is Stripe's published
fixture (tests/fixtures/stripe) with only the ids and amounts of this story laid over it."""

from __future__ import annotations

import copy
import json
from dataclasses import replace
from datetime import UTC, datetime
from decimal import Decimal
from typing import Any

import pytest

from kilo_alerts.catalogue import alert_from_event
from kilo_alerts.logic import deliver_alert
from kilo_billing.accounts import AccountProfile
from kilo_billing.catalog import default_catalog
from kilo_billing.contracts import DisputeOpenedV1, PaymentFailedV1
from kilo_billing.invoicing import InvoiceStatus
from kilo_billing.rating import TierChange
from kilo_billing.reports import account_revenue
from kilo_billing.stripe_events import StripeEventRecord
from kilo_dev.stripe_emulator import load_fixtures
from kilo_invoice.logic import apply_stripe_event, refund_invoice
from kilo_invoice.model import (
    EarlierRefundFinishedError,
    InvoiceNotFoundError,
    InvoiceNotRecordedYetError,
    PaymentOfAStrayInvoiceError,
)
from kilo_invoice.ports import GatewayRejectedError, GatewayUnavailableError
from tests.fakes import InMemoryAccountDirectory
from tests.payment_fakes import _Invoice
from tests.scenarios.test_invoicing import APR, MAR, World, at, team_with_march_overage
from tests.unit.alerts_fakes import InMemoryLedger, ScriptedMailer, ScriptedTexter
from tests.unit.test_alerts_logic import POLICY, T0

FIXTURES = load_fixtures()


class Events:
    def __init__(self) -> None:
        self.stored: dict[tuple[str, str], StripeEventRecord] = {}

    def add(self, event_id: str, event_type: str, obj: dict[str, Any], created: int | None = None) -> tuple[str, str]:
        """``created``: when Stripe created the event (seconds; None: the fixture's, the same for every event)."""
        event = copy.deepcopy(FIXTURES["event"]) | {"id": event_id, "type": event_type, "data": {"object": obj}}
        if created is not None:
            event["created"] = created
        record = StripeEventRecord(event_id, event_type, 1_775_000_000, False, json.dumps(event).encode(), 0)
        self.stored[record.key] = record
        return record.key

    def get(self, pk: str, sk: str) -> StripeEventRecord | None:
        return self.stored.get((pk, sk))


def _fixture(resource: str, **values: Any) -> dict[str, Any]:
    """A Stripe fixture with ``values``. A dispute's comes without ``balance_transactions`` unless given (the
    fixture's ``[]`` would say a lost dispute withdrew nothing): its close then leaves the ledger to infer the
    withdrawal (D359 amended (wd4)); tests of what the list says give it."""
    obj = copy.deepcopy(FIXTURES[resource])
    if resource == "dispute":
        obj.pop("balance_transactions", None)
    obj.update(values)
    return obj


def _paid_invoice(world: World, invoice_id: str = "acme/2026-03") -> dict[str, Any]:
    """``invoice.paid``'s object as the Stripe adapter's invoice is sent: our ids in its metadata, nothing else."""
    gateway_id = world.store.invoices[invoice_id].gateway_id
    meta = {"invoice_id": invoice_id, "kilo_invoice_id": invoice_id, "account_id": "acme"}
    return _fixture("invoice", id=gateway_id, status="paid", metadata=meta, amount_paid=6520, amount_remaining=0)


def _charge(intent: str, refunded_cents: int) -> dict[str, Any]:
    """The card payment's Charge, as ``charge.refunded`` carries it (Stripe's charge of an invoice payment names its
    payment intent, not the invoice)."""
    return _fixture(
        "charge",
        id="ch_3Story",
        payment_intent=intent,
        amount=6520,
        amount_captured=6520,
        captured=True,
        amount_refunded=refunded_cents,
        refunded=refunded_cents == 6520,
    )


def _dispute(intent: str, status: str) -> dict[str, Any]:
    return _fixture("dispute", id="dp_1Story", charge="ch_3Story", payment_intent=intent, amount=6520, status=status)


@pytest.fixture
def world() -> World:
    return team_with_march_overage()


def _apply(world: World, events: Events, key: tuple[str, str]) -> Any:
    return apply_stripe_event(world.store, world.bus, events, *key, at(2, 4), world.gateway)


def _close_and_pay(world: World, events: Events) -> str:
    invoice = world.close("acme", MAR)
    assert invoice.total == Decimal("65.20")
    intent = world.gateway.settle(invoice.invoice_id, paid=True)
    assert intent is not None
    _apply(world, events, events.add("evt_paid", "invoice.paid", _paid_invoice(world)))
    return intent


def test_given_a_paid_card_invoice_then_its_payment_intent_is_recorded_for_later_events(world: World) -> None:
    events = Events()
    intent = _close_and_pay(world, events)
    invoice = world.store.invoices["acme/2026-03"]
    assert invoice.status is InvoiceStatus.PAID
    assert invoice.gateway_refs == (intent,)
    assert world.store.invoice_for_gateway(intent) == ("acme", "acme/2026-03")
    calls = len(world.gateway.calls)
    _apply(world, events, events.add("evt_paid", "invoice.paid", _paid_invoice(world)))  # redelivered
    assert world.gateway.calls[calls:] == ["payment_refs"]  # asked again (D301: every invoice.paid asks once)
    assert world.store.invoices["acme/2026-03"].gateway_refs == (intent,)  # recorded once


def test_given_a_refund_made_in_stripe_then_the_invoice_records_it(world: World) -> None:
    events = Events()
    intent = _close_and_pay(world, events)
    outcome = _apply(world, events, events.add("evt_r1", "charge.refunded", _charge(intent, 1000)))
    assert (outcome.invoice_id, outcome.changed) == ("acme/2026-03", True)
    assert world.store.invoices["acme/2026-03"].refunded == Decimal("10.00")
    _apply(world, events, events.add("evt_r2", "charge.refunded", _charge(intent, 6520)))  # the rest, cumulative
    _apply(world, events, events.add("evt_r1", "charge.refunded", _charge(intent, 1000)))  # older, arrives last
    assert world.store.invoices["acme/2026-03"].refunded == Decimal("65.20")


def test_given_a_dispute_then_flagged_and_alerted_once_and_a_lost_dispute_leaves_the_invoice_not_paid_in_full(
    world: World,
) -> None:
    events = Events()
    intent = _close_and_pay(world, events)
    opened = events.add("evt_d1", "charge.dispute.created", _dispute(intent, "needs_response"))
    _apply(world, events, opened)
    _apply(world, events, opened)  # redelivered
    assert world.store.billing["acme"].disputed
    assert world.store.invoices["acme/2026-03"].disputed
    alerts = [d for t, d in world.bus.events if t == "DisputeOpened.v1"]
    assert [(a["invoice_id"], a["dispute_id"], a["amount"]) for a in alerts] == [("acme/2026-03", "dp_1Story", "65.20")]
    lost = events.add("evt_d2", "charge.dispute.closed", _dispute(intent, "lost"))
    _apply(world, events, lost)
    _apply(world, events, lost)  # redelivered: charged back once
    invoice = world.store.invoices["acme/2026-03"]
    assert not world.store.billing["acme"].disputed
    assert (invoice.status, invoice.charged_back, invoice.kept) == (InvoiceStatus.PAID, Decimal("65.20"), 0)
    assert invoice.as_json()["charged_back"] == "65.20"
    with pytest.raises(ValueError, match=r"at most 0\.00"):  # nothing of the payment is left to refund
        refund_invoice(world.store, world.gateway, "acme", invoice.invoice_id, Decimal("1.00"))


def test_given_a_dispute_won_then_the_flag_clears_and_nothing_is_charged_back(world: World) -> None:
    events = Events()
    intent = _close_and_pay(world, events)
    _apply(world, events, events.add("evt_d1", "charge.dispute.created", _dispute(intent, "needs_response")))
    _apply(world, events, events.add("evt_d2", "charge.dispute.closed", _dispute(intent, "won")))
    # the created event delivered again after the close (its object as it was then): the dispute stays closed
    _apply(world, events, events.add("evt_d1", "charge.dispute.created", _dispute(intent, "needs_response")))
    invoice = world.store.invoices["acme/2026-03"]
    assert not world.store.billing["acme"].disputed
    assert (invoice.disputed, invoice.charged_back, invoice.kept) == (False, 0, Decimal("65.20"))


def test_given_a_dispute_arriving_before_invoice_paid_then_the_processor_names_the_invoice(world: World) -> None:
    events = Events()
    invoice = world.close("acme", MAR)
    intent = world.gateway.settle(invoice.invoice_id, paid=True)
    assert intent is not None
    _apply(world, events, events.add("evt_d1", "charge.dispute.created", _dispute(intent, "needs_response")))
    assert world.store.billing["acme"].disputed
    assert world.store.invoices["acme/2026-03"].gateway_refs == (intent, "ch_3Story")
    assert world.gateway.calls[-1] == "invoice_for_payment"
    _apply(world, events, events.add("evt_paid", "invoice.paid", _paid_invoice(world)))
    assert world.store.invoices["acme/2026-03"].status is InvoiceStatus.PAID


def test_given_a_charge_that_pays_no_invoice_of_ours_then_it_is_not_found(world: World) -> None:
    events = Events()
    _close_and_pay(world, events)
    with pytest.raises(InvoiceNotFoundError):
        _apply(world, events, events.add("evt_x", "charge.refunded", _charge("pi_NotOurs", 500)))


def _paid_before_ours_knows_its_stripe_id(world: World) -> tuple[str, str]:
    """March (65.20) closed, finalized and paid at Stripe, but the close's save after Stripe's finalize never happened:
    ours is the stored draft with no Stripe id and no pointer to it. Returns the payment intent and the Stripe id."""
    invoice = world.close("acme", MAR)
    gateway_id = world.store.invoices[invoice.invoice_id].gateway_id
    assert gateway_id is not None
    intent = world.gateway.settle(invoice.invoice_id, paid=True)
    assert intent is not None
    world.store.invoices[invoice.invoice_id] = replace(
        world.store.invoices[invoice.invoice_id],
        status=InvoiceStatus.DRAFT,
        gateway_id=None,
        hosted_url=None,
        pdf_url=None,
    )
    world.store.pointers.pop(gateway_id, None)
    return intent, gateway_id


def test_given_a_dispute_before_ours_knows_its_stripe_invoice_then_retried_until_invoice_paid_lands(
    world: World,
) -> None:
    """Stripe ties the disputed payment to its invoice, which ours has not recorded yet: not "nothing of ours" (it
    was acknowledged and dropped: never flagged, the response deadline missed) - retried (D383)."""
    events = Events()
    intent, gateway_id = _paid_before_ours_knows_its_stripe_id(world)
    opened = events.add("evt_dc", "charge.dispute.created", _dispute(intent, "needs_response"))
    with pytest.raises(InvoiceNotRecordedYetError, match=gateway_id):
        _apply(world, events, opened)
    assert not world.store.invoices["acme/2026-03"].disputed
    _apply(world, events, events.add("evt_paid", "invoice.paid", _paid_invoice(world) | {"id": gateway_id}))
    _apply(world, events, opened)  # the queue's redelivery
    after = world.store.invoices["acme/2026-03"]
    assert (after.status, after.disputed, world.store.billing["acme"].disputed) == (InvoiceStatus.PAID, True, True)
    alerts = [d for t, d in world.bus.events if t == "DisputeOpened.v1"]
    assert [(a["invoice_id"], a["dispute_id"], a["amount"]) for a in alerts] == [("acme/2026-03", "dp_1Story", "65.20")]


def test_given_a_dashboard_refund_before_ours_knows_its_stripe_invoice_then_retried_and_counted(world: World) -> None:
    events = Events()
    intent, gateway_id = _paid_before_ours_knows_its_stripe_id(world)
    refunded = events.add("evt_cr", "charge.refunded", _charge(intent, 1000))
    with pytest.raises(InvoiceNotRecordedYetError):
        _apply(world, events, refunded)
    _apply(world, events, events.add("evt_paid", "invoice.paid", _paid_invoice(world) | {"id": gateway_id}))
    _apply(world, events, refunded)
    after = world.store.invoices["acme/2026-03"]
    assert (after.refunded, after.kept) == (Decimal("10.00"), Decimal("55.20"))


def test_given_stripe_down_when_invoice_paid_arrives_then_paid_and_a_later_dispute_finds_the_invoice_through_stripe(
    world: World,
) -> None:
    """The payments lookup is optional (D301): Stripe not answering it leaves the invoice paid without its
    payment refs rather than failing the event (five receives of a Stripe outage would dead-letter it, the invoice
    left open though paid: refunds refused). A dispute arriving later asks Stripe which invoice the intent paid."""
    events = Events()
    invoice = world.close("acme", MAR)
    intent = world.gateway.settle(invoice.invoice_id, paid=True)
    world.gateway.fail_next = [GatewayUnavailableError("503")]
    outcome = _apply(world, events, events.add("evt_paid", "invoice.paid", _paid_invoice(world)))
    assert (outcome.invoice_id, outcome.changed) == ("acme/2026-03", True)
    paid = world.store.invoices["acme/2026-03"]
    assert (paid.status, paid.gateway_refs) == (InvoiceStatus.PAID, ())
    _apply(world, events, events.add("evt_d1", "charge.dispute.created", _dispute(intent, "needs_response")))
    assert world.gateway.calls[-1] == "invoice_for_payment"
    assert world.store.invoices["acme/2026-03"].gateway_refs == (intent, "ch_3Story")
    assert world.store.billing["acme"].disputed


def test_given_the_gateway_cannot_be_built_when_invoice_paid_arrives_then_the_paid_status_is_stored_first(
    world: World,
) -> None:
    """The Stripe key's secret unreadable (not the processor's answer: the event fails, is delivered again and, for
    good, dead-lettered and alarmed) - the invoice is recorded paid all the same."""
    events = Events()
    invoice = world.close("acme", MAR)
    world.gateway.settle(invoice.invoice_id, paid=True)

    def unreadable(gateway_id: str) -> tuple[str, ...]:
        raise RuntimeError("secret kilo/stripe: AccessDeniedException")

    world.gateway.payment_refs = unreadable  # type: ignore[method-assign]
    with pytest.raises(RuntimeError, match="AccessDeniedException"):
        _apply(world, events, events.add("evt_paid", "invoice.paid", _paid_invoice(world)))
    assert world.store.invoices["acme/2026-03"].status is InvoiceStatus.PAID


def test_given_invoice_paid_recorded_without_its_refs_when_delivered_again_then_the_refs_are_recorded(
    world: World,
) -> None:
    events = Events()
    invoice = world.close("acme", MAR)
    intent = world.gateway.settle(invoice.invoice_id, paid=True)
    paid = events.add("evt_paid", "invoice.paid", _paid_invoice(world))
    world.gateway.fail_next = [GatewayUnavailableError("503")]
    _apply(world, events, paid)
    assert world.store.invoices["acme/2026-03"].gateway_refs == ()
    _apply(world, events, paid)  # Stripe answers again
    assert world.store.invoices["acme/2026-03"].gateway_refs == (intent,)
    assert world.store.invoice_for_gateway(intent) == ("acme", "acme/2026-03")


# --- refunds we make, and a rerun after a crash ------------------------------------------------------------------


def test_given_a_refund_whose_answer_was_lost_and_its_webhook_applied_when_run_again_then_no_second_refund(
    world: World,
) -> None:
    events = Events()
    intent = _close_and_pay(world, events)
    real = world.gateway.refund

    def refunded_then_lost(gateway_id: str, amount: Decimal, refund_id: str, to_failed_card: bool = False) -> str:
        real(gateway_id, amount, refund_id, to_failed_card)  # Stripe refunds ...
        raise GatewayUnavailableError("timeout")  # ... and the answer never reaches us

    world.gateway.refund = refunded_then_lost  # type: ignore[method-assign]
    with pytest.raises(GatewayUnavailableError):
        refund_invoice(world.store, world.gateway, "acme", "acme/2026-03", Decimal("10.00"))
    world.gateway.refund = real  # type: ignore[method-assign]
    _apply(world, events, events.add("evt_r1", "charge.refunded", _charge(intent, 1000)))  # Stripe's webhook first
    assert world.store.invoices["acme/2026-03"].refunded == Decimal("10.00")
    again = refund_invoice(world.store, world.gateway, "acme", "acme/2026-03", Decimal("10.00"))  # the rerun
    assert sorted(amount for _, amount in world.gateway.refunds.values()) == [Decimal("10.00")]
    assert (again.refunded, again.refund_pending) == (Decimal("10.00"), None)
    rest = refund_invoice(world.store, world.gateway, "acme", "acme/2026-03", None)  # a new request: the rest
    assert rest.refunded == Decimal("65.20")
    assert sorted(amount for _, amount in world.gateway.refunds.values()) == [Decimal("10.00"), Decimal("55.20")]


def test_given_an_unfinished_refund_when_another_amount_is_asked_then_the_first_is_finished_and_it_says_so(
    world: World,
) -> None:
    events = Events()
    _close_and_pay(world, events)
    world.gateway.fail_next = [GatewayUnavailableError("timeout")]  # Stripe not reached: nothing refunded
    with pytest.raises(GatewayUnavailableError):
        refund_invoice(world.store, world.gateway, "acme", "acme/2026-03", Decimal("10.00"))
    assert world.gateway.refunds == {}
    with pytest.raises(EarlierRefundFinishedError, match=r"earlier refund of 10\.00 .* now done"):
        refund_invoice(world.store, world.gateway, "acme", "acme/2026-03", Decimal("20.00"))
    assert [amount for _, amount in world.gateway.refunds.values()] == [Decimal("10.00")]
    assert world.store.invoices["acme/2026-03"].refunded == Decimal("10.00")
    after = refund_invoice(world.store, world.gateway, "acme", "acme/2026-03", Decimal("20.00"))
    assert after.refunded == Decimal("30.00")


def test_given_two_invoices_disputed_when_one_dispute_closes_then_the_account_stays_disputed_until_both(
    world: World,
) -> None:
    events = Events()
    march_intent = _close_and_pay(world, events)
    april = world.close("acme", APR)  # May's fee in advance: 29.00
    april_intent = world.gateway.settle(april.invoice_id, paid=True)
    assert april_intent is not None
    _apply(world, events, events.add("evt_paid_apr", "invoice.paid", _paid_invoice(world, april.invoice_id)))
    march_dispute = _dispute(march_intent, "needs_response")
    april_dispute = _dispute(april_intent, "needs_response") | {"id": "dp_2Story", "charge": "ch_4Story"}
    _apply(world, events, events.add("evt_d1", "charge.dispute.created", march_dispute))
    _apply(world, events, events.add("evt_d2", "charge.dispute.created", april_dispute))
    assert world.store.billing["acme"].disputed
    _apply(world, events, events.add("evt_d3", "charge.dispute.closed", march_dispute | {"status": "won"}))
    assert not world.store.invoices["acme/2026-03"].disputed
    assert world.store.invoices["acme/2026-04"].disputed
    assert world.store.billing["acme"].disputed  # April's dispute is still open
    _apply(world, events, events.add("evt_d4", "charge.dispute.closed", april_dispute | {"status": "won"}))
    assert not world.store.billing["acme"].disputed


def test_given_a_card_saved_while_the_close_creates_the_customer_then_the_card_flag_is_kept() -> None:
    """checkout.session.completed lands between the close's read of the account and its write of the customer id:
    the close writes the customer id only, never the card flag it read before."""
    world = World()
    world.signup("acme", (at(1), "team"))
    events = Events()
    original = world.gateway.ensure_customer

    def checkout_meanwhile(customer: Any) -> str:
        found = original(customer)
        session = {"id": "cs_1", "object": "checkout.session", "mode": "setup", "customer": found}
        key = events.add("evt_cs", "checkout.session.completed", session | {"metadata": {"account_id": "acme"}})
        apply_stripe_event(world.store, world.bus, events, *key, at(1, 4))
        return found

    world.gateway.ensure_customer = checkout_meanwhile  # type: ignore[method-assign]
    world.close("acme", MAR)
    billing = world.store.billing["acme"]
    assert billing.card_on_file
    assert billing.customer_id == world.gateway.customers["acme"]


def test_given_two_webhooks_for_one_paid_invoice_interleaved_then_both_changes_are_kept(world: World) -> None:
    """``charge.refunded`` and ``charge.dispute.created`` read the same paid invoice; the dispute's is written while
    the refund's write is on its way: the refund's write conflicts on the revision, re-reads and re-applies, and the
    invoice keeps both (before revisions the refund's copy, read at the same status, put the dispute flag back)."""
    events = Events()
    intent = _close_and_pay(world, events)
    dispute = events.add("evt_d1", "charge.dispute.created", _dispute(intent, "needs_response"))
    world.store.before_update.append(lambda: _apply(world, events, dispute))
    _apply(world, events, events.add("evt_r1", "charge.refunded", _charge(intent, 1000)))
    invoice = world.store.invoices["acme/2026-03"]
    assert (invoice.refunded, invoice.disputed) == (Decimal("10.00"), True)
    assert "dispute:dp_1Story" in invoice.announced


# --- an invoice paid in several payments, and a dispute's funds ---------------------------------------------------


def _paid_in_two(world: World, events: Events) -> tuple[str, str]:
    """acme's March invoice (65.20) paid in two payments: 40.00 (pi_A, its charge ch_A) and 25.20 (pi_B, ch_B)."""
    invoice = world.close("acme", MAR)
    world.gateway.invoices[invoice.invoice_id].status = "paid"
    world.gateway.invoices[invoice.invoice_id].payments.extend(["pi_A", "pi_B"])
    _apply(world, events, events.add("evt_paid", "invoice.paid", _paid_invoice(world)))
    assert world.store.invoices[invoice.invoice_id].gateway_refs == ("pi_A", "pi_B")
    return "pi_A", "pi_B"


def test_given_a_dispute_of_one_of_two_payments_before_invoice_paid_then_invoice_paid_records_the_other_payment(
    world: World,
) -> None:
    """Paid in two payments (pi_A, pi_B); a dispute of pi_A arrives first and records pi_A and its charge (the
    processor names the invoice). ``invoice.paid`` then still asks for the invoice's payments and records pi_B
    (before: the invoice, paid with a ref recorded, was taken for a repeated ``invoice.paid`` and not asked)."""
    events = Events()
    invoice = world.close("acme", MAR)
    world.gateway.invoices[invoice.invoice_id].status = "paid"
    world.gateway.invoices[invoice.invoice_id].payments.extend(["pi_A", "pi_B"])
    dispute = _dispute("pi_A", "needs_response") | {"charge": "ch_A"}
    _apply(world, events, events.add("evt_d1", "charge.dispute.created", dispute))
    assert world.store.invoices["acme/2026-03"].gateway_refs == ("pi_A", "ch_A")
    _apply(world, events, events.add("evt_paid", "invoice.paid", _paid_invoice(world)))
    stored = world.store.invoices["acme/2026-03"]
    assert (stored.status, stored.gateway_refs) == (InvoiceStatus.PAID, ("pi_A", "ch_A", "pi_B"))
    assert world.store.invoice_for_gateway("pi_B") == ("acme", "acme/2026-03")


def _charge_of(intent: str, charge: str, amount: int, refunded_cents: int) -> dict[str, Any]:
    return _charge(intent, refunded_cents) | {
        "id": charge,
        "amount": amount,
        "amount_captured": amount,
        "refunded": refunded_cents == amount,
    }


def test_given_an_invoice_paid_in_two_payments_then_each_charges_refunds_add_up(world: World) -> None:
    """``amount_refunded`` is the charge's own running total: a refund of the second payment (5.00 of 25.20) after
    one of the first (10.00 of 40.00) is 5.00 more, not the invoice's 5.00 in all."""
    events = Events()
    first, second = _paid_in_two(world, events)
    _apply(world, events, events.add("evt_r1", "charge.refunded", _charge_of(first, "ch_A", 4000, 1000)))
    outcome = _apply(world, events, events.add("evt_r2", "charge.refunded", _charge_of(second, "ch_B", 2520, 500)))
    assert outcome.changed
    assert world.store.invoices["acme/2026-03"].refunded == Decimal("15.00")
    _apply(world, events, events.add("evt_r1", "charge.refunded", _charge_of(first, "ch_A", 4000, 1000)))  # again
    assert world.store.invoices["acme/2026-03"].refunded == Decimal("15.00")
    _apply(world, events, events.add("evt_r3", "charge.refunded", _charge_of(second, "ch_B", 2520, 2520)))  # all
    invoice = world.store.invoices["acme/2026-03"]
    assert invoice.refunded == Decimal("35.20")  # 10.00 + 25.20
    assert invoice.kept == Decimal("30.00")
    assert invoice.charge_refunds == (("ch_A", Decimal("10.00")), ("ch_B", Decimal("25.20")))


def test_given_a_dispute_whose_funds_are_withdrawn_and_reinstated_when_won_then_paid_in_full_again(
    world: World,
) -> None:
    events = Events()
    intent = _close_and_pay(world, events)
    _apply(world, events, events.add("evt_d1", "charge.dispute.created", _dispute(intent, "needs_response")))
    withdrawn = events.add("evt_d2", "charge.dispute.funds_withdrawn", _dispute(intent, "needs_response"))
    _apply(world, events, withdrawn)
    _apply(world, events, withdrawn)  # redelivered: taken once
    invoice = world.store.invoices["acme/2026-03"]
    assert (invoice.disputed, invoice.charged_back, invoice.kept) == (True, Decimal("65.20"), 0)
    _apply(world, events, events.add("evt_d3", "charge.dispute.closed", _dispute(intent, "won")))
    reinstated = events.add("evt_d4", "charge.dispute.funds_reinstated", _dispute(intent, "won"))
    _apply(world, events, reinstated)
    _apply(world, events, reinstated)  # redelivered: given back once
    invoice = world.store.invoices["acme/2026-03"]
    assert (invoice.status, invoice.disputed, invoice.charged_back) == (InvoiceStatus.PAID, False, 0)
    assert invoice.kept == invoice.total == Decimal("65.20")
    assert not world.store.billing["acme"].disputed
    _apply(world, events, withdrawn)  # the withdrawal delivered again after all that: nothing moves
    assert world.store.invoices["acme/2026-03"].charged_back == 0


def test_given_a_dispute_lost_after_its_funds_were_withdrawn_then_charged_back_once(world: World) -> None:
    events = Events()
    intent = _close_and_pay(world, events)
    _apply(world, events, events.add("evt_d1", "charge.dispute.funds_withdrawn", _dispute(intent, "needs_response")))
    _apply(world, events, events.add("evt_d2", "charge.dispute.closed", _dispute(intent, "lost")))
    assert world.store.invoices["acme/2026-03"].charged_back == Decimal("65.20")


def test_given_a_dispute_reinstated_before_its_withdrawal_arrives_then_nothing_is_charged_back(world: World) -> None:
    events = Events()
    intent = _close_and_pay(world, events)
    _apply(world, events, events.add("evt_d4", "charge.dispute.funds_reinstated", _dispute(intent, "won")))
    _apply(world, events, events.add("evt_d2", "charge.dispute.funds_withdrawn", _dispute(intent, "under_review")))
    invoice = world.store.invoices["acme/2026-03"]
    assert (invoice.charged_back, invoice.kept) == (0, Decimal("65.20"))


# --- disputes tracked one by one (D345) --------------------------------------------------------------------


def test_given_a_dispute_first_delivered_after_it_closed_then_no_dispute_opened_alert(world: World) -> None:
    """``charge.dispute.created`` delivered for the first time after its ``closed`` (won) was applied: before, a
    DisputeOpened alert for a dispute already over. Now none; nothing flagged."""
    events = Events()
    intent = _close_and_pay(world, events)
    _apply(world, events, events.add("evt_d2", "charge.dispute.closed", _dispute(intent, "won")))
    _apply(world, events, events.add("evt_d1", "charge.dispute.created", _dispute(intent, "needs_response")))
    assert [t for t, _ in world.bus.events if t == "DisputeOpened.v1"] == []
    assert not world.store.invoices["acme/2026-03"].disputed
    assert not world.store.billing["acme"].disputed


def test_given_two_disputes_on_one_invoice_when_one_closes_then_it_stays_disputed_until_the_other_does(
    world: World,
) -> None:
    """March 65.20 paid in two payments, 40.00 (ch_A) and 25.20 (ch_B), each disputed (dp_A, dp_B). dp_A won: before,
    the invoice and the account read not disputed while dp_B was open. Now disputed until dp_B closes too."""
    events = Events()
    first, second = _paid_in_two(world, events)
    dp_a = _dispute(first, "needs_response") | {"id": "dp_A", "charge": "ch_A", "amount": 4000}
    dp_b = _dispute(second, "needs_response") | {"id": "dp_B", "charge": "ch_B", "amount": 2520}
    _apply(world, events, events.add("e1", "charge.dispute.created", dp_a))
    _apply(world, events, events.add("e2", "charge.dispute.created", dp_b))
    _apply(world, events, events.add("e3", "charge.dispute.closed", dp_a | {"status": "won"}))
    assert world.store.invoices["acme/2026-03"].disputed
    assert world.store.billing["acme"].disputed
    _apply(world, events, events.add("e4", "charge.dispute.closed", dp_b | {"status": "won"}))
    assert not world.store.invoices["acme/2026-03"].disputed
    assert not world.store.billing["acme"].disputed


# --- one payment attempt, two events (3-D Secure): one alert per (Stripe invoice, attempt) (D348) ----------


def _attempt(world: World, attempt_count: int | None) -> dict[str, Any]:
    """The open invoice as ``invoice.payment_failed`` / ``invoice.payment_action_required`` carry it after a payment
    attempt: Stripe's ``attempt_count`` counts the first attempt and each automatic retry (None: not sent)."""
    gateway_id = world.store.invoices["acme/2026-03"].gateway_id
    meta = {"invoice_id": "acme/2026-03", "kilo_invoice_id": "acme/2026-03", "account_id": "acme"}
    obj = _fixture("invoice", id=gateway_id, status="open", metadata=meta, amount_paid=0, amount_remaining=6520)
    if attempt_count is None:
        obj.pop("attempt_count", None)
    else:
        obj["attempt_count"] = attempt_count
    return obj


def _failed_alerts(world: World) -> list[tuple[str, str]]:
    return [(d["event_id"], d["reason"]) for t, d in world.bus.events if t == "PaymentFailed.v1"]


def test_given_3ds_needed_when_action_required_then_payment_failed_arrive_for_one_attempt_then_one_alert(
    world: World,
) -> None:
    """The first attempt of 65.20 needs 3-D Secure: Stripe sends both events for it (attempt_count 1). The customer
    is told once, with what to do (action_required); the failed event and every redelivery add nothing. The next
    automatic retry (attempt_count 2) declined is a new attempt: one more alert."""
    events = Events()
    invoice = world.close("acme", MAR)
    assert invoice.total == Decimal("65.20")
    gateway_id = world.store.invoices["acme/2026-03"].gateway_id
    action = events.add("evt_ar1", "invoice.payment_action_required", _attempt(world, 1))
    failed = events.add("evt_pf1", "invoice.payment_failed", _attempt(world, 1))
    for key in (action, failed, action, failed):  # both, then both redelivered
        _apply(world, events, key)
    assert world.store.invoices["acme/2026-03"].status is InvoiceStatus.PAYMENT_FAILED
    # the action-required event's alert id is its own kind's (":action_required"), whichever came first
    assert _failed_alerts(world) == [(f"payment-failed:{gateway_id}:1:action_required", "action_required")]
    retry = events.add("evt_pf2", "invoice.payment_failed", _attempt(world, 2))
    _apply(world, events, retry)
    _apply(world, events, retry)  # redelivered
    assert _failed_alerts(world) == [
        (f"payment-failed:{gateway_id}:1:action_required", "action_required"),
        (f"payment-failed:{gateway_id}:2", "payment_failed"),
    ]
    alert = next(d for t, d in world.bus.events if t == "PaymentFailed.v1")
    assert alert["total"] == "65.20"  # what the invoice still asks: nothing paid, no notes


def test_given_3ds_needed_when_payment_failed_arrives_first_then_the_action_required_follows_once(
    world: World,
) -> None:
    """The other order: the failed event is announced at once (nothing says another event is coming); the
    action-required event of the same attempt then adds the one alert that says what to do, once. A late failed
    redelivery after it adds nothing: two alerts for the attempt at most, never two of the same reason."""
    events = Events()
    world.close("acme", MAR)
    gateway_id = world.store.invoices["acme/2026-03"].gateway_id
    failed = events.add("evt_pf1", "invoice.payment_failed", _attempt(world, 1))
    action = events.add("evt_ar1", "invoice.payment_action_required", _attempt(world, 1))
    for key in (failed, action, failed, action):
        _apply(world, events, key)
    assert _failed_alerts(world) == [
        (f"payment-failed:{gateway_id}:1", "payment_failed"),
        (f"payment-failed:{gateway_id}:1:action_required", "action_required"),
    ]


def _one_attempt_failed_and_needing_action(world: World) -> tuple[Events, tuple[str, str], tuple[str, str]]:
    """March's 65.20 (29.00 fee + 7.20 overage + 29.00 April in advance) closed; attempt 1 needing 3-D Secure
    brings ``invoice.payment_failed`` (evt_pf1) and ``invoice.payment_action_required`` (evt_ar1)."""
    assert world.close("acme", MAR).total == Decimal("65.20")
    events = Events()
    failed = events.add("evt_pf1", "invoice.payment_failed", _attempt(world, 1))
    action = events.add("evt_ar1", "invoice.payment_action_required", _attempt(world, 1))
    return events, failed, action


def _failed_then_action_at_once(world: World) -> None:
    """The payment queue runs two deliveries at once (MaximumConcurrency 2): the action-required event is handled
    between the failed event's publish and its marker write, so it reads the invoice with nothing announced."""
    events, failed, action = _one_attempt_failed_and_needing_action(world)
    publish, ran = world.bus.publish, []

    def publish_then_the_other_worker(detail_type: str, detail: Any) -> None:
        publish(detail_type, detail)
        if not ran:
            ran.append(detail_type)
            _apply(world, events, action)

    world.bus.publish = publish_then_the_other_worker  # type: ignore[method-assign]
    _apply(world, events, failed)
    world.bus.publish = publish  # type: ignore[method-assign]
    for key in (failed, action):  # both redelivered later: nothing more
        _apply(world, events, key)


def test_given_3ds_failed_and_action_required_handled_at_once_then_the_action_alert_keeps_its_own_id(
    world: World,
) -> None:
    """D348 amended (review): neither event saw the other's marker, so each is announced - under the id of its own
    kind. Before, the action-required alert reused ``...:1`` (the id the "declined" alert took) and the alerts
    function, which sends each key once, dropped the one telling the customer what to do."""
    _failed_then_action_at_once(world)
    gateway_id = world.store.invoices["acme/2026-03"].gateway_id
    assert _failed_alerts(world) == [
        (f"payment-failed:{gateway_id}:1", "payment_failed"),
        (f"payment-failed:{gateway_id}:1:action_required", "action_required"),
    ]


def _marker_write_lost_after_the_first_alert(
    bus: Any, store: Any, detail_type: str = PaymentFailedV1.DETAIL_TYPE
) -> None:
    """The first ``detail_type`` alert (``PaymentFailed.v1`` unless named) is published on ``bus`` and the invoice
    write after it (its marker, in ``store``) times out, once: the SQS message comes again later."""
    publish, update = bus.publish, store.update_invoice
    published: list[str] = []

    def publish_and_note(detail_type_sent: str, detail: Any) -> None:
        publish(detail_type_sent, detail)
        published.append(detail_type_sent)

    def update_failing_once_after_the_publish(*args: Any, **kwargs: Any) -> Any:
        if published == [detail_type]:
            published.append("marker write timed out")
            raise TimeoutError("ledger write timed out")
        return update(*args, **kwargs)

    bus.publish = publish_and_note
    store.update_invoice = update_failing_once_after_the_publish


def test_given_the_failed_alerts_marker_write_lost_then_the_action_required_alert_still_goes_out(
    world: World,
) -> None:
    """The failed event's alert is published, its marker write times out (the SQS message comes again later); the
    action-required event then publishes under its own id, and the failed event's redelivery adds nothing."""
    events, failed, action = _one_attempt_failed_and_needing_action(world)
    gateway_id = world.store.invoices["acme/2026-03"].gateway_id
    _marker_write_lost_after_the_first_alert(world.bus, world.store)
    with pytest.raises(TimeoutError):
        _apply(world, events, failed)
    assert world.store.invoices["acme/2026-03"].announced == {"issued"}  # the failed alert's marker never landed
    _apply(world, events, action)
    _apply(world, events, failed)  # the redelivery
    assert _failed_alerts(world) == [
        (f"payment-failed:{gateway_id}:1", "payment_failed"),
        (f"payment-failed:{gateway_id}:1:action_required", "action_required"),
    ]


def test_given_both_alerts_of_a_3ds_race_delivered_then_the_customer_is_told_to_complete_the_payment(
    world: World,
) -> None:
    """Both alerts of the race above through the alerts function's delivery (one send per key): the text saying
    what to do goes out, after the "declined" one. 65.20 asked: "$65.20"."""
    _failed_then_action_at_once(world)
    signup = (TierChange(datetime(2026, 1, 1, tzinfo=UTC), "team"),)
    people = InMemoryAccountDirectory(
        AccountProfile("acme", signup, name="Ada", email="ada@example.com", phone="+14155550100", phone_verified=True)
    )
    ledger, mailer, texter = InMemoryLedger(), ScriptedMailer(), ScriptedTexter()
    alerts = [(t, d) for t, d in world.bus.events if t == PaymentFailedV1.DETAIL_TYPE]
    for n, (detail_type, detail) in enumerate(alerts):
        deliver_alert(alert_from_event(detail_type, detail), people, ledger, mailer, texter, POLICY, T0 + n)
    assert [text for _, text in texter.sent] == [
        "Kilo: your payment of $65.20 was declined. Pay the invoice or update your card in your Kilo dashboard. "
        "Reply STOP to opt out",
        "Kilo: your payment of $65.20 needs your confirmation. Complete the payment in your Kilo dashboard. "
        "Reply STOP to opt out",
    ]


def _delivered_a_second_after_each(
    detail_type: str, alerts: list[dict[str, Any]], handled: tuple[datetime, ...]
) -> tuple[ScriptedMailer, ScriptedTexter]:
    """``alerts`` (of ``detail_type``) through the alerts function's delivery - one send per key, channel and month of
    ``occurred_at`` - each a second after the handler that published it (``handled``), to acme's Ada (an email and a
    verified phone). Returns what the mailer and the texter sent."""
    signup = (TierChange(datetime(2026, 1, 1, tzinfo=UTC), "team"),)
    people = InMemoryAccountDirectory(
        AccountProfile("acme", signup, name="Ada", email="ada@example.com", phone="+14155550100", phone_verified=True)
    )
    ledger, mailer, texter = InMemoryLedger(), ScriptedMailer(), ScriptedTexter()
    for detail, at_handled in zip(alerts, handled, strict=True):
        now_ms = (int(at_handled.timestamp()) + 1) * 1000
        deliver_alert(alert_from_event(detail_type, detail), people, ledger, mailer, texter, POLICY, now_ms)
    return mailer, texter


def test_given_a_decline_redelivered_across_month_end_after_its_marker_was_lost_then_one_declined_text(
    world: World,
) -> None:
    """Review 2 (D348): Stripe's retry of March's 65.20 (attempt 2) declined, the event created 23:59:50 on 30 April;
    handled at 23:59:55, its alert published and its marker write lost; the message back at 00:00:30 on 1 May, the
    same alert published again. The alerts ledger sends a key once per month of ``occurred_at``: the handler's clock
    put the two in April and May (two "declined" texts); the event's own ``created`` puts both in April - one text."""
    assert world.close("acme", MAR).total == Decimal("65.20")
    gateway_id = world.store.invoices["acme/2026-03"].gateway_id
    events = Events()
    created = datetime(2026, 4, 30, 23, 59, 50, tzinfo=UTC)
    failed = events.add("evt_pf2", "invoice.payment_failed", _attempt(world, 2), int(created.timestamp()))
    first, again = datetime(2026, 4, 30, 23, 59, 55, tzinfo=UTC), datetime(2026, 5, 1, 0, 0, 30, tzinfo=UTC)
    _marker_write_lost_after_the_first_alert(world.bus, world.store)
    with pytest.raises(TimeoutError):
        apply_stripe_event(world.store, world.bus, events, *failed, first, world.gateway)
    apply_stripe_event(world.store, world.bus, events, *failed, again, world.gateway)
    alerts = [d for t, d in world.bus.events if t == PaymentFailedV1.DETAIL_TYPE]
    # published twice (the marker was lost), both as of the event's creation: 30 April 23:59:50 UTC
    assert [(a["event_id"], a["occurred_at"]) for a in alerts] == [
        (f"payment-failed:{gateway_id}:2", "2026-04-30T23:59:50+00:00")
    ] * 2
    mailer, texter = _delivered_a_second_after_each(PaymentFailedV1.DETAIL_TYPE, alerts, (first, again))
    assert [text for _, text in texter.sent] == [
        "Kilo: your payment of $65.20 was declined. Pay the invoice or update your card in your Kilo dashboard. "
        "Reply STOP to opt out",
    ]
    assert len(mailer.sent) == 1


def test_given_a_dispute_redelivered_across_month_end_after_its_marker_was_lost_then_one_dispute_email(
    world: World,
) -> None:
    """D348 amended (dated by the event): March's 65.20 paid, then disputed; ``charge.dispute.created`` created 23:59:50
    on 30 April, handled at 23:59:55 (its alert published, the marker write lost), the message back at 00:00:30 on 1
    May: published again. The alerts ledger sends a key once per month of ``occurred_at``: the handler's clock put the
    two in April and May (two "disputed" emails); the event's own ``created`` puts both in April - one."""
    events = Events()
    intent = _close_and_pay(world, events)
    created = datetime(2026, 4, 30, 23, 59, 50, tzinfo=UTC)
    opened = events.add(
        "evt_d1", "charge.dispute.created", _dispute(intent, "needs_response"), int(created.timestamp())
    )
    first, again = datetime(2026, 4, 30, 23, 59, 55, tzinfo=UTC), datetime(2026, 5, 1, 0, 0, 30, tzinfo=UTC)
    _marker_write_lost_after_the_first_alert(world.bus, world.store, DisputeOpenedV1.DETAIL_TYPE)
    with pytest.raises(TimeoutError):
        apply_stripe_event(world.store, world.bus, events, *opened, first, world.gateway)
    apply_stripe_event(world.store, world.bus, events, *opened, again, world.gateway)
    alerts = [d for t, d in world.bus.events if t == DisputeOpenedV1.DETAIL_TYPE]
    # published twice (the marker was lost), both as of the event's creation: 30 April 23:59:50 UTC
    assert [(a["event_id"], a["occurred_at"]) for a in alerts] == [
        ("dispute-opened:dp_1Story", "2026-04-30T23:59:50+00:00")
    ] * 2
    assert "dispute:dp_1Story" in world.store.invoices["acme/2026-03"].announced  # the redelivery's marker landed
    mailer, texter = _delivered_a_second_after_each(DisputeOpenedV1.DETAIL_TYPE, alerts, (first, again))
    # the dispute's whole payment, 6520 cents: "$65.20"; a MEDIUM alert goes by email only (SMS from HIGH)
    assert [(to, subject) for to, subject, _, _ in mailer.sent] == [
        ("ada@example.com", "A payment of $65.20 to Kilo was disputed (a chargeback)")
    ]
    assert texter.sent == []


def test_given_no_attempt_count_then_each_failed_event_is_announced_once_by_its_event_id(world: World) -> None:
    """Without ``attempt_count`` nothing says two events are one attempt: each event id is announced once (as
    before D348)."""
    events = Events()
    world.close("acme", MAR)
    action = events.add("evt_ar1", "invoice.payment_action_required", _attempt(world, None))
    failed = events.add("evt_pf1", "invoice.payment_failed", _attempt(world, None))
    for key in (action, failed, failed):
        _apply(world, events, key)
    assert _failed_alerts(world) == [
        ("payment-failed:evt_ar1", "action_required"),
        ("payment-failed:evt_pf1", "payment_failed"),
    ]


def test_given_an_alert_announced_by_event_id_before_the_change_when_redelivered_then_not_announced_again(
    world: World,
) -> None:
    """An event announced under the old marker (``payment_failed:<event id>``) and delivered again after the
    change keeps its one alert."""
    events = Events()
    world.close("acme", MAR)
    stored = world.store.invoices["acme/2026-03"]
    world.store.invoices["acme/2026-03"] = replace(
        stored.moved(InvoiceStatus.PAYMENT_FAILED, at(2, 4)), announced=stored.announced | {"payment_failed:evt_pf1"}
    )
    _apply(world, events, events.add("evt_pf1", "invoice.payment_failed", _attempt(world, 1)))
    assert _failed_alerts(world) == []


# --- a lost dispute whose withdrawal we never saw: counted at most what its charge still holds (D359 amended (wd3, wd4))


def _inquiry_refunded_then_lost(
    world: World, events: Events, refunded_a: int, refunded_b: int, *, redelivered: bool = True
) -> None:
    """March 65.20 paid as 40.00 (pi_A, ch_A) + 25.20 (pi_B, ch_B); an inquiry on A (``warning_needs_response``:
    nothing withdrawn); ``refunded_a``/``refunded_b`` cents refunded on each charge; the issuer escalates and the
    dispute closes ``lost`` with no ``charge.dispute.funds_withdrawn`` ever delivered (the close delivered twice, or
    once when not ``redelivered``)."""
    first, second = _paid_in_two(world, events)
    inquiry = _dispute(first, "warning_needs_response") | {"id": "dp_A", "charge": "ch_A", "amount": 4000}
    _apply(world, events, events.add("evt_d1", "charge.dispute.created", inquiry))
    if refunded_a:
        _apply(world, events, events.add("evt_r1", "charge.refunded", _charge_of(first, "ch_A", 4000, refunded_a)))
    if refunded_b:
        _apply(world, events, events.add("evt_r2", "charge.refunded", _charge_of(second, "ch_B", 2520, refunded_b)))
    lost = events.add("evt_d2", "charge.dispute.closed", inquiry | {"status": "lost"})
    _apply(world, events, lost)
    if redelivered:
        _apply(world, events, lost)  # redelivered: counted once


def test_given_an_inquiry_refunded_in_full_when_it_escalates_and_is_lost_unseen_then_nothing_is_charged_back(
    world: World,
) -> None:
    """All 65.20 refunded (4000 on ch_A + 2520 on ch_B) while A was under an inquiry; lost, no withdrawal seen and no
    ``balance_transactions`` in the close's payload to say one (D359 amended (wd4)): the withdrawal inferred is at most
    what A's charge still holds, max(0, min(40.00, 40.00 - 40.00 refunded)) = 0.00 -> charged back 0.00, kept 65.20 -
    65.20 - 0.00 = 0.00.
    Before: the dispute's whole 40.00 charged back, kept 65.20 - 65.20 - 40.00 = -40.00. The revenue report, which
    reads refunds as total - kept - short paid, agrees: 65.20 - 0.00 - 0.00 = 65.20 given back (before: 105.20, more
    than was ever paid)."""
    events = Events()
    _inquiry_refunded_then_lost(world, events, 4000, 2520)
    invoice = world.store.invoices["acme/2026-03"]
    assert (invoice.refunded, invoice.charged_back, invoice.kept) == (Decimal("65.20"), 0, 0)
    assert not invoice.disputed
    assert account_revenue(world.store.ledger("acme"), MAR, default_catalog()).figures.refunds == Decimal("65.20")


def test_given_part_of_the_invoice_refunded_when_an_inquiry_is_lost_unseen_then_at_most_the_rest_is_charged_back(
    world: World,
) -> None:
    """35.20 refunded (1000 on ch_A + 2520 on ch_B) before A's inquiry (40.00) is lost unseen: A's charge still holds
    40.00 - 10.00 = 30.00, so min(40.00, 30.00) = 30.00 charged back, kept 65.20 - 35.20 - 30.00 = 0.00 (before wd3:
    40.00, kept -10.00). Nothing refunded before it (the usual chargeback lost unseen): min(40.00, 40.00 - 0.00) =
    40.00, kept 25.20 - as before."""
    events = Events()
    _inquiry_refunded_then_lost(world, events, 1000, 2520)
    invoice = world.store.invoices["acme/2026-03"]
    assert (invoice.refunded, invoice.charged_back, invoice.kept) == (Decimal("35.20"), Decimal("30.00"), 0)
    untouched = team_with_march_overage()
    events = Events()
    _inquiry_refunded_then_lost(untouched, events, 0, 0)
    invoice = untouched.store.invoices["acme/2026-03"]
    assert (invoice.charged_back, invoice.kept) == (Decimal("40.00"), Decimal("25.20"))


def test_given_a_lost_dispute_counted_unseen_when_its_withdrawal_arrives_late_then_the_seen_amount_stands(
    world: World,
) -> None:
    """The inquiry refunded in full and lost unseen (0.00 inferred, above); then Stripe's ``funds_withdrawn`` for it
    arrives (40.00: what Stripe says it took stands as recorded) -> charged back 0.00 + 40.00 = 40.00, kept 65.20 -
    65.20 - 40.00 = -40.00, once though delivered twice; a ``funds_reinstated`` after it gives the 40.00 back:
    charged back 0.00, kept 0.00. (Passed before too, with the whole 40.00 inferred: it guards that the cap never
    hides what Stripe says it took.)"""
    events = Events()
    _inquiry_refunded_then_lost(world, events, 4000, 2520)
    taken = _dispute("pi_A", "lost") | {"id": "dp_A", "charge": "ch_A", "amount": 4000}
    withdrawn = events.add("evt_d3", "charge.dispute.funds_withdrawn", taken)
    _apply(world, events, withdrawn)
    _apply(world, events, withdrawn)
    invoice = world.store.invoices["acme/2026-03"]
    assert (invoice.charged_back, invoice.kept) == (Decimal("40.00"), Decimal("-40.00"))
    _apply(world, events, events.add("evt_d4", "charge.dispute.funds_reinstated", taken))
    _apply(world, events, withdrawn)  # the withdrawal once more after it: nothing moves
    invoice = world.store.invoices["acme/2026-03"]
    assert (invoice.charged_back, invoice.kept) == (0, 0)


def test_given_a_refunded_in_full_and_b_not_when_a_is_lost_unseen_then_b_is_not_charged_back(world: World) -> None:
    """Review wd3 F1: A's 40.00 refunded in full, B's 25.20 not; A lost, no withdrawal seen, no list. The cap is A's
    own charge, max(0, min(40.00, 40.00 - 40.00)) = 0.00, not the invoice's rest (65.20 - 40.00 = 25.20, which is B's
    money) -> charged back 0.00, kept 65.20 - 40.00 - 0.00 = 25.20 (wd3: 25.20 charged back, kept 0.00)."""
    events = Events()
    _inquiry_refunded_then_lost(world, events, 4000, 0, redelivered=False)
    invoice = world.store.invoices["acme/2026-03"]
    assert (invoice.charged_back, invoice.kept) == (0, Decimal("25.20"))


def test_given_a_lost_unseen_when_its_charges_refund_arrives_after_then_the_inferred_amount_is_lowered(
    world: World,
) -> None:
    """Review wd3 F2: A's inquiry lost unseen with nothing refunded: 40.00 inferred, kept 65.20 - 40.00 = 25.20; then
    ``charge.refunded`` says A's charge refunded 40.00 in full: A holds 40.00 - 40.00 = 0.00, so the inferred amount
    is lowered to 0.00 -> charged back 0.00, kept 65.20 - 40.00 - 0.00 = 25.20 (wd3: 40.00 stayed, kept -14.80);
    redelivered, nothing moves."""
    events = Events()
    first, _second = _paid_in_two(world, events)
    inquiry = _dispute(first, "warning_needs_response") | {"id": "dp_A", "charge": "ch_A", "amount": 4000}
    _apply(world, events, events.add("evt_d1", "charge.dispute.created", inquiry))
    _apply(world, events, events.add("evt_d2", "charge.dispute.closed", inquiry | {"status": "lost"}))
    assert world.store.invoices["acme/2026-03"].charged_back == Decimal("40.00")
    refunded = events.add("evt_r1", "charge.refunded", _charge_of(first, "ch_A", 4000, 4000))
    _apply(world, events, refunded)
    _apply(world, events, refunded)
    invoice = world.store.invoices["acme/2026-03"]
    assert (invoice.refunded, invoice.charged_back, invoice.kept) == (Decimal("40.00"), 0, Decimal("25.20"))


def test_given_a_inferred_nothing_when_b_is_withdrawn_after_then_only_b_is_charged_back(world: World) -> None:
    """Review wd3 F3: A refunded in full and lost unseen (0.00 inferred, F1); then B's chargeback withdraws 25.20
    (``funds_withdrawn`` seen) -> charged back 0.00 + 25.20 = 25.20, kept 65.20 - 40.00 - 25.20 = 0.00 (wd3: A had
    inferred 25.20, so 50.40 charged back, kept -25.20)."""
    events = Events()
    _inquiry_refunded_then_lost(world, events, 4000, 0, redelivered=False)
    chargeback = _dispute("pi_B", "needs_response") | {"id": "dp_B", "charge": "ch_B", "amount": 2520}
    _apply(world, events, events.add("evt_b1", "charge.dispute.created", chargeback))
    _apply(world, events, events.add("evt_b2", "charge.dispute.funds_withdrawn", chargeback))
    invoice = world.store.invoices["acme/2026-03"]
    assert (invoice.charged_back, invoice.kept) == (Decimal("25.20"), 0)


def test_given_an_inferred_loss_when_redelivered_reinstated_and_withdrawn_late_then_never_doubled(
    world: World,
) -> None:
    """Review wd3 guard: 10.00 refunded on A, 25.20 on B; A lost unseen: 40.00 - 10.00 = 30.00 inferred; the close
    redelivered (30.00 still), reinstated twice (30.00 - 30.00 = 0.00, once), a late ``funds_withdrawn`` (already
    counted, then given back: nothing) -> charged back 0.00, kept 65.20 - 35.20 - 0.00 = 30.00."""
    events = Events()
    _inquiry_refunded_then_lost(world, events, 1000, 2520, redelivered=False)
    taken = _dispute("pi_A", "lost") | {"id": "dp_A", "charge": "ch_A", "amount": 4000}
    _apply(world, events, events.add("evt_d2b", "charge.dispute.closed", taken))
    assert world.store.invoices["acme/2026-03"].charged_back == Decimal("30.00")
    back = events.add("evt_d4", "charge.dispute.funds_reinstated", taken)
    _apply(world, events, back)
    _apply(world, events, back)
    _apply(world, events, events.add("evt_d3", "charge.dispute.funds_withdrawn", taken))
    invoice = world.store.invoices["acme/2026-03"]
    assert (invoice.charged_back, invoice.kept) == (0, Decimal("30.00"))


def _inquiry_on_a_closed(world: World) -> tuple[Events, dict[str, Any], dict[str, Any]]:
    """65.20 paid in two (A 40.00, B 25.20); an inquiry on A (dp_A, 40.00) created listing [] and closed
    ``warning_closed`` listing [] (0 items: 0.00 withdrawn): the events, the inquiry and its close."""
    events = Events()
    first, _second = _paid_in_two(world, events)
    inquiry = _dispute(first, "warning_needs_response") | {"id": "dp_A", "charge": "ch_A", "amount": 4000}
    _apply(world, events, events.add("evt_d1", "charge.dispute.created", inquiry | {"balance_transactions": []}))
    closed = inquiry | {"status": "warning_closed", "balance_transactions": []}
    _apply(world, events, events.add("evt_d2", "charge.dispute.closed", closed))
    return events, inquiry, closed


def _txn(cents: int, currency: str = "usd") -> dict[str, Any]:
    """A dispute's balance transaction (stripe.BalanceTransaction's fields used): a withdrawal (``cents`` < 0, Stripe's
    15.00 fee apart) or a reinstatement (> 0); ``currency``: the balance's (settlement) currency."""
    fee = 1500 if cents < 0 else 0
    return {"id": f"txn_{cents}", "object": "balance_transaction", "amount": cents, "fee": fee, "currency": currency}


def test_given_a_close_listing_its_balance_transactions_then_what_they_withdrew_is_charged_back(world: World) -> None:
    """Review wd3 F4: the close's ``balance_transactions`` say what Stripe took, fee apart. A refunded in full (40.00)
    yet its escalated dispute lost with a withdrawal listed (amount -4000, fee 1500): -(-4000) = 4000 -> 40.00
    charged back, no inference (the cap would say 0.00), the 15.00 fee not counted -> kept 65.20 - 40.00 - 40.00 =
    -14.80; the close redelivered: still 40.00; a late ``funds_reinstated`` (the close already said what stays
    withdrawn): still 40.00."""
    events = Events()
    first, _second = _paid_in_two(world, events)
    inquiry = _dispute(first, "warning_needs_response") | {"id": "dp_A", "charge": "ch_A", "amount": 4000}
    _apply(world, events, events.add("evt_d1", "charge.dispute.created", inquiry))
    _apply(world, events, events.add("evt_r1", "charge.refunded", _charge_of(first, "ch_A", 4000, 4000)))
    listed = {"status": "lost", "balance_transactions": [_txn(-4000)]}
    lost = events.add("evt_d2", "charge.dispute.closed", inquiry | listed)
    _apply(world, events, lost)
    _apply(world, events, lost)
    _apply(world, events, events.add("evt_d4", "charge.dispute.funds_reinstated", inquiry | listed))
    invoice = world.store.invoices["acme/2026-03"]
    assert (invoice.charged_back, invoice.kept) == (Decimal("40.00"), Decimal("-14.80"))


def test_given_an_inferred_loss_when_the_close_lists_nothing_withdrawn_then_nothing_is_charged_back(
    world: World,
) -> None:
    """A lost unseen with no list: 40.00 inferred (nothing refunded); the close delivered again, now with its list,
    empty (nothing taken): the listed 0.00 replaces the inferred 40.00 -> charged back 0.00, kept 65.20; a won
    dispute's close listing withdrawal -2520 and reinstatement +2520 on B after B's ``funds_withdrawn`` (25.20):
    -(-2520 + 2520) = 0.00 replaces the 25.20 -> charged back 0.00, kept 65.20."""
    events = Events()
    _inquiry_refunded_then_lost(world, events, 0, 0, redelivered=False)
    assert world.store.invoices["acme/2026-03"].charged_back == Decimal("40.00")
    listed = _dispute("pi_A", "lost") | {"id": "dp_A", "charge": "ch_A", "amount": 4000, "balance_transactions": []}
    _apply(world, events, events.add("evt_d2l", "charge.dispute.closed", listed))
    chargeback = _dispute("pi_B", "needs_response") | {"id": "dp_B", "charge": "ch_B", "amount": 2520}
    _apply(world, events, events.add("evt_b1", "charge.dispute.created", chargeback))
    _apply(world, events, events.add("evt_b2", "charge.dispute.funds_withdrawn", chargeback))
    assert world.store.invoices["acme/2026-03"].charged_back == Decimal("25.20")
    both = [_txn(-2520), _txn(2520)]
    won = chargeback | {"status": "won", "balance_transactions": both}
    _apply(world, events, events.add("evt_b3", "charge.dispute.closed", won))
    invoice = world.store.invoices["acme/2026-03"]
    assert (invoice.charged_back, invoice.kept) == (0, Decimal("65.20"))


# --- the longest balance_transactions list a dispute's events carry says what it withdrew (D359 amended (wd5))


def test_given_an_inquiry_closed_listing_nothing_when_it_escalates_and_is_lost_then_the_withdrawal_counts(
    world: World,
) -> None:
    """Review wd4 F1: an inquiry on A lists [] when created and when it closes ``warning_closed`` (0 items: 0.00
    withdrawn). The same dispute escalates: Stripe withdraws 40.00 (``funds_withdrawn`` listing [-4000]: 1 item, more
    than 0, so -(-4000) = 40.00 replaces 0.00) and it closes ``lost`` listing the same one item (nothing moves) ->
    charged back 40.00, kept 65.20 - 40.00 = 25.20 (wd4: the [] of the first close fixed 0.00, kept 65.20)."""
    events, inquiry, _closed = _inquiry_on_a_closed(world)
    took = {"status": "needs_response", "balance_transactions": [_txn(-4000)]}
    withdrawn = events.add("evt_d3", "charge.dispute.funds_withdrawn", inquiry | took)
    _apply(world, events, withdrawn)
    _apply(world, events, events.add("evt_d4", "charge.dispute.closed", inquiry | took | {"status": "lost"}))
    _apply(world, events, withdrawn)  # redelivered: equal length, nothing moves
    invoice = world.store.invoices["acme/2026-03"]
    assert (invoice.charged_back, invoice.kept) == (Decimal("40.00"), Decimal("25.20"))


def test_given_a_lost_close_listing_the_withdrawal_when_a_reinstatement_is_listed_after_then_it_counts(
    world: World,
) -> None:
    """Review wd4 F2: 10.00 refunded on A; its 40.00 chargeback withdraws 40.00 (created and ``funds_withdrawn`` list
    [-4000]); it closes ``lost`` listing [-4000] (40.00); then ``funds_reinstated`` lists [-4000, +1000] (the refunded
    part given back, 2 items): -(-4000 + 1000) = 30.00 replaces 40.00 -> charged back 30.00, kept 65.20 - 10.00 -
    30.00 = 25.20 (wd4: the close fixed 40.00, kept 15.20). A close delivered late listing one item: nothing moves."""
    events = Events()
    first, _second = _paid_in_two(world, events)
    chargeback = _dispute(first, "needs_response") | {"id": "dp_A", "charge": "ch_A", "amount": 4000}
    _apply(world, events, events.add("evt_r1", "charge.refunded", _charge_of(first, "ch_A", 4000, 1000)))
    one = {"balance_transactions": [_txn(-4000)]}
    _apply(world, events, events.add("evt_d1", "charge.dispute.created", chargeback | one))
    _apply(world, events, events.add("evt_d2", "charge.dispute.funds_withdrawn", chargeback | one))
    lost = events.add("evt_d3", "charge.dispute.closed", chargeback | one | {"status": "lost"})
    _apply(world, events, lost)
    assert world.store.invoices["acme/2026-03"].charged_back == Decimal("40.00")
    both = {"status": "lost", "balance_transactions": [_txn(-4000), _txn(1000)]}
    _apply(world, events, events.add("evt_d4", "charge.dispute.funds_reinstated", chargeback | both))
    _apply(world, events, lost)  # redelivered after: its shorter list changes nothing
    invoice = world.store.invoices["acme/2026-03"]
    assert (invoice.charged_back, invoice.kept) == (Decimal("30.00"), Decimal("25.20"))


def test_given_a_partially_won_dispute_when_the_close_lists_both_after_the_reinstatement_then_it_stands(
    world: World,
) -> None:
    """Guard (right in wd4 too): as above, the reinstatement [-4000, +1000] arriving before the close listing the same
    two items: -(-3000) = 30.00 -> charged back 30.00, kept 65.20 - 10.00 - 30.00 = 25.20."""
    events = Events()
    first, _second = _paid_in_two(world, events)
    chargeback = _dispute(first, "needs_response") | {"id": "dp_A", "charge": "ch_A", "amount": 4000}
    _apply(world, events, events.add("evt_r1", "charge.refunded", _charge_of(first, "ch_A", 4000, 1000)))
    one = {"balance_transactions": [_txn(-4000)]}
    _apply(world, events, events.add("evt_d2", "charge.dispute.funds_withdrawn", chargeback | one))
    both = {"status": "lost", "balance_transactions": [_txn(-4000), _txn(1000)]}
    _apply(world, events, events.add("evt_d4", "charge.dispute.funds_reinstated", chargeback | both))
    _apply(world, events, events.add("evt_d3", "charge.dispute.closed", chargeback | both))
    invoice = world.store.invoices["acme/2026-03"]
    assert (invoice.charged_back, invoice.kept) == (Decimal("30.00"), Decimal("25.20"))


def test_given_a_list_in_the_settlement_currency_then_the_disputes_own_amount_counts(world: World) -> None:
    """Review wd4 F3: a 40.00 USD dispute on an account settling in EUR closes lost listing -3700 eur (a balance
    transaction's amount is in the balance's currency): the list is not read; no withdrawal seen, nothing refunded:
    min(40.00, 40.00 - 0.00) = 40.00 USD charged back (not 37.00), kept 65.20 - 40.00 = 25.20."""
    events = Events()
    first, _second = _paid_in_two(world, events)
    chargeback = _dispute(first, "needs_response") | {"id": "dp_A", "charge": "ch_A", "amount": 4000, "currency": "usd"}
    lost = {"status": "lost", "balance_transactions": [_txn(-3700, "eur")]}
    _apply(world, events, events.add("evt_d3", "charge.dispute.closed", chargeback | lost))
    invoice = world.store.invoices["acme/2026-03"]
    assert (invoice.charged_back, invoice.kept) == (Decimal("40.00"), Decimal("25.20"))


def test_given_a_list_of_ids_then_it_reads_as_unknown(world: World) -> None:
    """Review wd4 F4: A's chargeback withdraws 40.00 (``funds_withdrawn`` seen, no list); the close lists ids only
    (["txn_1"], not expanded): unknown, not "0.00 withdrawn" -> the 40.00 stays, kept 65.20 - 40.00 = 25.20."""
    events = Events()
    first, _second = _paid_in_two(world, events)
    chargeback = _dispute(first, "needs_response") | {"id": "dp_A", "charge": "ch_A", "amount": 4000}
    _apply(world, events, events.add("evt_d2", "charge.dispute.funds_withdrawn", chargeback))
    lost = {"status": "lost", "balance_transactions": ["txn_1"]}
    _apply(world, events, events.add("evt_d3", "charge.dispute.closed", chargeback | lost))
    invoice = world.store.invoices["acme/2026-03"]
    assert (invoice.charged_back, invoice.kept) == (Decimal("40.00"), Decimal("25.20"))


def test_given_an_inquiry_closed_listing_nothing_when_it_escalates_listing_eur_then_the_seen_withdrawal_counts(
    world: World,
) -> None:
    """Review fa2 #1: USD invoice, EUR-settling account. March 65.20 = A 40.00 + B 25.20. Inquiry on A: created [],
    closed ``warning_closed`` [] (0 items: settled 0.00). The same dispute escalates: ``funds_withdrawn`` listing
    -3700 eur (unknown list) then ``lost`` listing the same. The 0-item figure gives way to the old rule: the seen
    withdrawal counts the dispute's 40.00 -> charged back 40.00, kept 65.20 - 0.00 - 40.00 = 25.20 (was 65.20)."""
    events = Events()
    first, _second = _paid_in_two(world, events)
    inquiry = _dispute(first, "warning_needs_response") | {
        "id": "dp_A",
        "charge": "ch_A",
        "amount": 4000,
        "currency": "usd",
    }
    _apply(world, events, events.add("evt_d1", "charge.dispute.created", inquiry | {"balance_transactions": []}))
    closed = inquiry | {"status": "warning_closed", "balance_transactions": []}
    _apply(world, events, events.add("evt_d2", "charge.dispute.closed", closed))
    took = {"status": "needs_response", "balance_transactions": [_txn(-3700, "eur")]}
    _apply(world, events, events.add("evt_d3", "charge.dispute.funds_withdrawn", inquiry | took))
    _apply(world, events, events.add("evt_d4", "charge.dispute.closed", inquiry | took | {"status": "lost"}))
    _apply(world, events, events.add("evt_d2", "charge.dispute.closed", closed))  # the [] close redelivered late
    invoice = world.store.invoices["acme/2026-03"]
    assert (invoice.charged_back, invoice.kept) == (Decimal("40.00"), Decimal("25.20"))


def test_given_a_refund_that_failed_when_a_loss_is_inferred_then_it_counts_what_the_charge_holds(world: World) -> None:
    """Review fa2 #2: A's 40.00 refunded in full from the dashboard (``refund.created`` re_A + ``charge.refunded``
    4000 at t=100), then the refund FAILS at t=200 (the 40.00 is back with us: refunded 40.00 - 40.00 = 0.00). A's
    chargeback closes lost listing EUR (unknown: inferred). A's charge holds 40.00 - 0.00 = 40.00 -> charged back
    min(40.00, 40.00 - 0.00) = 40.00, kept 65.20 - 0.00 - 40.00 = 25.20 (was 0.00 charged back, kept 65.20)."""
    events = Events()
    first, _second = _paid_in_two(world, events)
    refund = _fixture("refund", id="re_A", payment_intent=first, charge="ch_A", amount=4000, metadata={})
    _apply(world, events, events.add("r0", "refund.created", refund | {"status": "succeeded"}, created=100))
    _apply(world, events, events.add("r1", "charge.refunded", _charge_of(first, "ch_A", 4000, 4000), created=100))
    failed = refund | {"status": "failed", "failure_reason": "expired_or_canceled_card"}
    _apply(world, events, events.add("r2", "refund.failed", failed, created=200))
    assert world.store.invoices["acme/2026-03"].refunded == 0
    chargeback = _dispute(first, "lost") | {"id": "dp_A", "charge": "ch_A", "amount": 4000, "currency": "usd"}
    lost = chargeback | {"balance_transactions": [_txn(-3700, "eur")]}
    _apply(world, events, events.add("evt_d4", "charge.dispute.closed", lost, created=300))
    invoice = world.store.invoices["acme/2026-03"]
    assert (invoice.refunded, invoice.charged_back, invoice.kept) == (0, Decimal("40.00"), Decimal("25.20"))


def test_given_an_inferred_loss_when_the_refund_fails_after_then_it_is_recapped(world: World) -> None:
    """Review fa2 #2, the other order: A refunded 40.00 (t=100), A's chargeback closes lost listing EUR: inferred
    min(40.00, 40.00 - 40.00) = 0.00. Then the refund fails (t=200): A holds 40.00 again -> re-capped to 40.00,
    refunded 0.00, kept 65.20 - 0.00 - 40.00 = 25.20."""
    events = Events()
    first, _second = _paid_in_two(world, events)
    refund = _fixture("refund", id="re_A", payment_intent=first, charge="ch_A", amount=4000, metadata={})
    _apply(world, events, events.add("r0", "refund.created", refund | {"status": "succeeded"}, created=100))
    _apply(world, events, events.add("r1", "charge.refunded", _charge_of(first, "ch_A", 4000, 4000), created=100))
    chargeback = _dispute(first, "lost") | {"id": "dp_A", "charge": "ch_A", "amount": 4000, "currency": "usd"}
    lost = chargeback | {"balance_transactions": [_txn(-3700, "eur")]}
    _apply(world, events, events.add("evt_d4", "charge.dispute.closed", lost, created=150))
    assert world.store.invoices["acme/2026-03"].charged_back == 0
    failed = refund | {"status": "failed", "failure_reason": "expired_or_canceled_card"}
    _apply(world, events, events.add("r2", "refund.failed", failed, created=200))
    invoice = world.store.invoices["acme/2026-03"]
    assert (invoice.refunded, invoice.charged_back, invoice.kept) == (0, Decimal("40.00"), Decimal("25.20"))


def test_given_a_dispute_won_under_the_old_rule_when_a_late_one_item_list_arrives_then_nothing_changes(
    world: World,
) -> None:
    """Review fa2 #3: A's dispute withdrawn and reinstated under the old rule (events without a list: markers
    ``dispute_withdrawn`` + ``dispute_reinstated``, 2 events recorded, charged back 40.00 - 40.00 = 0.00). A late
    ``funds_withdrawn`` snapshot listing [-4000] (1 item, not more than 2) changes nothing: charged back 0.00, kept
    65.20 (was 40.00, kept 25.20)."""
    events = Events()
    first, _second = _paid_in_two(world, events)
    plain = _dispute(first, "won") | {"id": "dp_A", "charge": "ch_A", "amount": 4000, "currency": "usd"}
    _apply(world, events, events.add("evt_d2", "charge.dispute.funds_withdrawn", plain))
    _apply(world, events, events.add("evt_d3", "charge.dispute.funds_reinstated", plain))
    assert world.store.invoices["acme/2026-03"].charged_back == 0
    late = plain | {"status": "needs_response", "balance_transactions": [_txn(-4000)]}
    _apply(world, events, events.add("evt_d2", "charge.dispute.funds_withdrawn", late))
    invoice = world.store.invoices["acme/2026-03"]
    assert (invoice.charged_back, invoice.kept) == (0, Decimal("65.20"))


def test_given_an_inquiry_closed_when_it_escalates_then_the_dispute_is_flagged_and_alerted_again_once(
    world: World,
) -> None:
    """Review fa2 #4: inquiry on A (alerted once), closed ``warning_closed`` (flag off); the same dispute escalates
    (``funds_withdrawn`` [-4000] status needs_response, then ``updated``): 40.00 charged back and a chargeback open ->
    invoice and account disputed, a second ``DisputeOpened.v1`` (40.00) once, redelivery publishing nothing more; the
    ``lost`` close clears the flag, kept 65.20 - 40.00 = 25.20."""
    events, inquiry, _closed = _inquiry_on_a_closed(world)
    assert not world.store.invoices["acme/2026-03"].disputed
    took = {"status": "needs_response", "balance_transactions": [_txn(-4000)]}
    _apply(world, events, events.add("evt_d3", "charge.dispute.funds_withdrawn", inquiry | took))
    _apply(world, events, events.add("evt_d3u", "charge.dispute.updated", inquiry | took))
    _apply(world, events, events.add("evt_d3u", "charge.dispute.updated", inquiry | took))  # redelivered
    invoice = world.store.invoices["acme/2026-03"]
    assert invoice.charged_back == Decimal("40.00")
    assert (invoice.disputed, world.store.billing["acme"].disputed) == (True, True)
    alerts = [d for t, d in world.bus.events if t == DisputeOpenedV1.DETAIL_TYPE]
    assert [(a["dispute_id"], a["amount"]) for a in alerts] == [("dp_A", "40.00"), ("dp_A", "40.00")]
    assert alerts[1]["event_id"] != alerts[0]["event_id"]
    lost = inquiry | took | {"status": "lost"}
    _apply(world, events, events.add("evt_d4", "charge.dispute.closed", lost))
    invoice = world.store.invoices["acme/2026-03"]
    assert (invoice.disputed, world.store.billing["acme"].disputed) == (False, False)
    assert (invoice.charged_back, invoice.kept) == (Decimal("40.00"), Decimal("25.20"))


def test_given_a_lost_close_when_an_older_open_snapshot_arrives_late_then_nothing_reopens(world: World) -> None:
    """Guard for fa2 #4 (the re-open is only for an inquiry's ``warning_closed``): A's chargeback withdrawn (40.00)
    and closed lost; Stripe retries an older ``updated`` (status needs_response) after the close: still closed, not
    flagged, one alert only (its ``created``); charged back 40.00, kept 65.20 - 40.00 = 25.20."""
    events = Events()
    first, _second = _paid_in_two(world, events)
    chargeback = _dispute(first, "needs_response") | {"id": "dp_A", "charge": "ch_A", "amount": 4000}
    _apply(world, events, events.add("evt_d1", "charge.dispute.created", chargeback))
    _apply(world, events, events.add("evt_d2", "charge.dispute.funds_withdrawn", chargeback))
    _apply(world, events, events.add("evt_d3", "charge.dispute.closed", chargeback | {"status": "lost"}))
    _apply(world, events, events.add("evt_d1u", "charge.dispute.updated", chargeback))
    invoice = world.store.invoices["acme/2026-03"]
    assert (invoice.disputed, world.store.billing["acme"].disputed) == (False, False)
    assert len([t for t, _ in world.bus.events if t == DisputeOpenedV1.DETAIL_TYPE]) == 1
    assert (invoice.charged_back, invoice.kept) == (Decimal("40.00"), Decimal("25.20"))


def test_given_an_inquiry_escalated_in_the_same_month_then_both_alerts_are_delivered(world: World) -> None:
    """Review rwd6 F1: wd6 #4 says a second DisputeOpened.v1 goes out on escalation. The alerts function keys
    dispute_opened by (period = month of occurred_at, key = dispute_id): the escalation in the same month must still
    reach Ada. Expected 2 emails (the inquiry, then the chargeback); (it was 1: the second was DUPLICATE)."""
    events, inquiry, _closed = _inquiry_on_a_closed(world)
    took = {"status": "needs_response", "balance_transactions": [_txn(-4000)]}
    _apply(world, events, events.add("evt_d3", "charge.dispute.funds_withdrawn", inquiry | took))
    alerts = [d for t, d in world.bus.events if t == DisputeOpenedV1.DETAIL_TYPE]
    assert len(alerts) == 2
    assert alerts[0]["occurred_at"][:7] == alerts[1]["occurred_at"][:7]  # same month (the fixture's created)
    handled = (datetime(2026, 4, 2, 4, tzinfo=UTC), datetime(2026, 4, 2, 5, tzinfo=UTC))
    mailer, _texter = _delivered_a_second_after_each(DisputeOpenedV1.DETAIL_TYPE, alerts, handled)
    assert len(mailer.sent) == 2


def test_given_an_inferred_loss_when_the_inquiry_empty_close_is_redelivered_then_the_loss_is_kept(world: World) -> None:
    """Review rwd6 F2: wd6 #1's own redelivery, on the inferred path: inquiry created [], closed warning_closed []
    (settled 0 items); it escalates and closes lost listing -3700 eur (unknown; its funds_withdrawn not handled): the
    0-item figure gives way, inferred min(40.00, 40.00 - 0.00) = 40.00 -> kept 65.20 - 40.00 = 25.20. The [] close
    redelivered late (0 items, older) must change nothing: expected charged back 40.00, kept 25.20."""
    events = Events()
    first, _second = _paid_in_two(world, events)
    inquiry = _dispute(first, "warning_needs_response") | {"id": "dp_A", "charge": "ch_A", "amount": 4000,
                                                            "currency": "usd"}  # fmt: skip
    _apply(world, events, events.add("evt_d1", "charge.dispute.created", inquiry | {"balance_transactions": []}))
    closed = inquiry | {"status": "warning_closed", "balance_transactions": []}
    _apply(world, events, events.add("evt_d2", "charge.dispute.closed", closed))
    lost = inquiry | {"status": "lost", "balance_transactions": [_txn(-3700, "eur")]}
    _apply(world, events, events.add("evt_d4", "charge.dispute.closed", lost))
    assert world.store.invoices["acme/2026-03"].charged_back == Decimal("40.00")
    _apply(world, events, events.add("evt_d2", "charge.dispute.closed", closed))  # the [] close redelivered late
    invoice = world.store.invoices["acme/2026-03"]
    assert (invoice.charged_back, invoice.kept) == (Decimal("40.00"), Decimal("25.20"))


def _open_snapshot_after_the_loss(world: World, events: Events, lost: dict[str, Any]) -> None:
    """The escalation's ``updated`` (needs_response, dp_A listing [-4000]) handled after its ``lost`` close: not
    flagged, 1 alert, charged back 40.00, kept 65.20 - 40.00 = 25.20."""
    _apply(world, events, events.add("evt_d3u", "charge.dispute.updated", lost | {"status": "needs_response"}))
    invoice = world.store.invoices["acme/2026-03"]
    assert (invoice.charged_back, invoice.kept) == (Decimal("40.00"), Decimal("25.20"))
    assert (invoice.disputed, world.store.billing["acme"].disputed) == (False, False)
    assert len([t for t, _ in world.bus.events if t == DisputeOpenedV1.DETAIL_TYPE]) == 1


def test_given_an_escalation_lost_at_once_when_its_open_snapshot_arrives_late_then_nothing_reopens(
    world: World,
) -> None:
    """Review rwd6 F3: wd6 #4's guard, with an inquiry first: inquiry on A closed warning_closed; it escalates and is
    accepted at once (Dispute close -> lost, listing [-4000]); the escalation's ``updated`` (needs_response) is handled
    after the lost close (a retried delivery). Expected as the guard test: not flagged, 1 alert, charged back 40.00,
    kept 25.20. (It was: disputed again, a second DisputeOpened.v1 after the loss.)"""
    events, inquiry, _closed = _inquiry_on_a_closed(world)
    took = {"balance_transactions": [_txn(-4000)]}
    _apply(world, events, events.add("evt_d4", "charge.dispute.closed", inquiry | took | {"status": "lost"}))
    _open_snapshot_after_the_loss(world, events, inquiry | took)


def test_given_an_escalated_inquiry_when_its_close_is_redelivered_then_the_chargeback_stays_flagged(
    world: World,
) -> None:
    """Review rwd6 F4: wd6 #4 with #1's own redelivery: inquiry closed warning_closed; it escalates (funds_withdrawn
    [-4000], needs_response): disputed again. The [] warning_closed close redelivered late (as in wd6 #1's test) while
    the chargeback is open: expected still disputed (invoice and account), charged back 40.00 (it was: flag cleared)."""
    events, inquiry, closed = _inquiry_on_a_closed(world)
    took = {"status": "needs_response", "balance_transactions": [_txn(-4000)]}
    _apply(world, events, events.add("evt_d3", "charge.dispute.funds_withdrawn", inquiry | took))
    assert world.store.invoices["acme/2026-03"].disputed
    _apply(world, events, events.add("evt_d2", "charge.dispute.closed", closed))  # redelivered late
    invoice = world.store.invoices["acme/2026-03"]
    assert invoice.charged_back == Decimal("40.00")
    assert (invoice.disputed, world.store.billing["acme"].disputed) == (True, True)


def test_given_an_escalation_lost_at_once_when_the_inquiry_close_and_an_open_snapshot_arrive_late_then_nothing_reopens(
    world: World,
) -> None:
    """Review rwd6 F3, with the inquiry's ``warning_closed`` [] redelivered after the ``lost`` close (and before the
    escalation's late ``updated``): the final close blocks the re-open still - not flagged, 1 alert, charged back
    40.00 (the [] is 0 items, not more than the lost close's listed 1), kept 65.20 - 40.00 = 25.20."""
    events, inquiry, closed = _inquiry_on_a_closed(world)
    took = {"balance_transactions": [_txn(-4000)]}
    _apply(world, events, events.add("evt_d4", "charge.dispute.closed", inquiry | took | {"status": "lost"}))
    _apply(world, events, events.add("evt_d2", "charge.dispute.closed", closed))  # redelivered late
    _open_snapshot_after_the_loss(world, events, inquiry | took)


# --- what the dispute is: DisputeOpened.v1's ``kind``, and the escalation's date (D359 amended (dk)) -----------------


def _kinds(world: World) -> list[tuple[str, str, str]]:
    return [(a["event_id"], a["kind"], a["amount"]) for t, a in world.bus.events if t == DisputeOpenedV1.DETAIL_TYPE]


@pytest.mark.parametrize(
    ("status", "kind"),
    [
        ("needs_response", "chargeback"),
        ("under_review", "chargeback"),
        ("warning_needs_response", "inquiry"),  # Stripe: an inquiry, no funds withdrawn
        ("warning_under_review", "inquiry"),
    ],
)
def test_given_a_dispute_created_then_its_alert_says_chargeback_or_inquiry(
    world: World, status: str, kind: str
) -> None:
    """March's 65.20 paid in one payment and disputed whole (6520 cents -> "65.20"): the created's status says which."""
    events = Events()
    intent = _close_and_pay(world, events)
    _apply(world, events, events.add("evt_d1", "charge.dispute.created", _dispute(intent, status)))
    assert _kinds(world) == [("dispute-opened:dp_1Story", kind, "65.20")]


def test_given_an_inquiry_escalated_in_the_same_month_then_inquiry_and_chargeback_wording_both_go_out(
    world: World,
) -> None:
    """Inquiry on A (40.00, 4000 cents) closed warning_closed, then escalated (``funds_withdrawn`` [-4000],
    needs_response) in the same month: two alerts, an inquiry's and an escalation's, two emails worded apart."""
    events, inquiry, _closed = _inquiry_on_a_closed(world)
    took = {"status": "needs_response", "balance_transactions": [_txn(-4000)]}
    _apply(world, events, events.add("evt_d3", "charge.dispute.funds_withdrawn", inquiry | took))
    assert _kinds(world) == [
        ("dispute-opened:dp_A", "inquiry", "40.00"),
        ("dispute-escalated:dp_A", "escalation", "40.00"),
    ]
    alerts = [d for t, d in world.bus.events if t == DisputeOpenedV1.DETAIL_TYPE]
    handled = (datetime(2026, 4, 2, 4, tzinfo=UTC), datetime(2026, 4, 2, 5, tzinfo=UTC))
    mailer, _texter = _delivered_a_second_after_each(DisputeOpenedV1.DETAIL_TYPE, alerts, handled)
    assert [subject for _, subject, _, _ in mailer.sent] == [
        "Your bank asked about a payment of $40.00 to Kilo",
        "Your bank's inquiry about a payment of $40.00 to Kilo became a chargeback",
    ]


def test_given_an_escalation_published_twice_across_month_end_after_its_marker_was_lost_then_one_email(
    world: World,
) -> None:
    """The dispute dp_A was created (Stripe's ``created`` on the Dispute) 10 April 09:00:00 UTC as an inquiry, closed
    warning_closed. It escalates: ``updated`` (needs_response) created 30 April 23:59:50, handled at 23:59:55, the
    escalation's alert published and its ``dispute_escalated:`` marker write lost; ``funds_withdrawn`` created 1 May
    00:00:20, handled at 00:00:30, publishes it again (no marker). Dated by each event, the two were April and May:
    the alerts ledger (month + ``dp_A:escalated``) sent two escalation emails. Dated by the Dispute's own
    ``created`` (the same on every event of it), both are 2026-04-10T09:00:00: one escalation email, 2 in all."""
    events, inquiry, _closed = _inquiry_on_a_closed(world)
    dispute_created = int(datetime(2026, 4, 10, 9, 0, 0, tzinfo=UTC).timestamp())
    took = {"status": "needs_response", "balance_transactions": [_txn(-4000)], "created": dispute_created}
    april = int(datetime(2026, 4, 30, 23, 59, 50, tzinfo=UTC).timestamp())
    may = int(datetime(2026, 5, 1, 0, 0, 20, tzinfo=UTC).timestamp())
    updated = events.add("evt_d3u", "charge.dispute.updated", inquiry | took, april)
    withdrawn = events.add("evt_d3", "charge.dispute.funds_withdrawn", inquiry | took, may)
    first, again = datetime(2026, 4, 30, 23, 59, 55, tzinfo=UTC), datetime(2026, 5, 1, 0, 0, 30, tzinfo=UTC)
    _marker_write_lost_after_the_first_alert(world.bus, world.store, DisputeOpenedV1.DETAIL_TYPE)
    with pytest.raises(TimeoutError):
        apply_stripe_event(world.store, world.bus, events, *updated, first, world.gateway)
    apply_stripe_event(world.store, world.bus, events, *withdrawn, again, world.gateway)
    alerts = [d for t, d in world.bus.events if t == DisputeOpenedV1.DETAIL_TYPE]
    assert [(a["event_id"], a["kind"], a["occurred_at"]) for a in alerts[1:]] == [
        ("dispute-escalated:dp_A", "escalation", "2026-04-10T09:00:00+00:00")
    ] * 2
    handled = (datetime(2026, 4, 2, 4, tzinfo=UTC), first, again)
    mailer, _texter = _delivered_a_second_after_each(DisputeOpenedV1.DETAIL_TYPE, alerts, handled)
    assert [subject for _, subject, _, _ in mailer.sent] == [
        "Your bank asked about a payment of $40.00 to Kilo",
        "Your bank's inquiry about a payment of $40.00 to Kilo became a chargeback",
    ]


def _escalation_subjects(world: World) -> list[str]:
    """The emails Ada gets for the DisputeOpened.v1 alerts published so far, each handled an hour apart on 2 April."""
    alerts = [d for t, d in world.bus.events if t == DisputeOpenedV1.DETAIL_TYPE]
    handled = tuple(datetime(2026, 4, 2, 4 + n, tzinfo=UTC) for n in range(len(alerts)))
    mailer, _texter = _delivered_a_second_after_each(DisputeOpenedV1.DETAIL_TYPE, alerts, handled)
    return [subject for _, subject, _, _ in mailer.sent]


@pytest.mark.parametrize("escalating", ["charge.dispute.funds_withdrawn", "charge.dispute.updated"])
def test_given_an_open_inquiry_when_it_escalates_without_a_close_then_the_escalation_is_alerted_once(
    world: World, escalating: str
) -> None:
    """Review rdk F1: inquiry on A (dp_A, 4000 cents -> 40.00) created warning_needs_response; still open (no
    warning_closed) the issuer escalates it: ``escalating`` (needs_response, [-4000]), then the other of the two,
    then ``escalating`` redelivered. Money as before: 40.00 charged back (-(-4000) = 4000 cents), invoice and account
    disputed. Alerts: the inquiry's, then ONE escalation (``dispute-escalated:dp_A``) - two emails; it was one (the
    inquiry's "no money withdrawn yet" only)."""
    events = Events()
    first, _second = _paid_in_two(world, events)
    inquiry = _dispute(first, "warning_needs_response") | {"id": "dp_A", "charge": "ch_A", "amount": 4000}
    _apply(world, events, events.add("evt_d1", "charge.dispute.created", inquiry | {"balance_transactions": []}))
    took = {"status": "needs_response", "balance_transactions": [_txn(-4000)]}
    other = next(t for t in ("charge.dispute.funds_withdrawn", "charge.dispute.updated") if t != escalating)
    _apply(world, events, events.add("evt_d3", escalating, inquiry | took))
    _apply(world, events, events.add("evt_d3o", other, inquiry | took))
    _apply(world, events, events.add("evt_d3", escalating, inquiry | took))  # redelivered
    invoice = world.store.invoices["acme/2026-03"]
    assert invoice.charged_back == Decimal("40.00")
    assert (invoice.disputed, world.store.billing["acme"].disputed) == (True, True)
    assert _kinds(world) == [
        ("dispute-opened:dp_A", "inquiry", "40.00"),
        ("dispute-escalated:dp_A", "escalation", "40.00"),
    ]
    assert _escalation_subjects(world) == [
        "Your bank asked about a payment of $40.00 to Kilo",
        "Your bank's inquiry about a payment of $40.00 to Kilo became a chargeback",
    ]


def test_given_an_escalated_inquiry_when_its_created_is_handled_last_then_no_inquiry_alert_follows(
    world: World,
) -> None:
    """Review rdk F2: the inquiry's ``charge.dispute.created`` (warning_needs_response) handled LAST (its deliveries
    failed; a redrive): its close warning_closed, then the escalation (``funds_withdrawn`` [-4000], needs_response)
    first. The escalation's alert goes out; the late created publishes nothing (the dispute is a chargeback by then):
    one email, the escalation's. It was two, the inquiry's "no money has been withdrawn yet" last. Money: 40.00
    charged back, disputed (the re-open; unchanged)."""
    events = Events()
    first, _second = _paid_in_two(world, events)
    inquiry = _dispute(first, "warning_needs_response") | {"id": "dp_A", "charge": "ch_A", "amount": 4000}
    created = events.add("evt_d1", "charge.dispute.created", inquiry | {"balance_transactions": []})
    closed = inquiry | {"status": "warning_closed", "balance_transactions": []}
    _apply(world, events, events.add("evt_d2", "charge.dispute.closed", closed))
    took = {"status": "needs_response", "balance_transactions": [_txn(-4000)]}
    _apply(world, events, events.add("evt_d3", "charge.dispute.funds_withdrawn", inquiry | took))
    _apply(world, events, created)  # late
    invoice = world.store.invoices["acme/2026-03"]
    assert invoice.charged_back == Decimal("40.00")
    assert (invoice.disputed, world.store.billing["acme"].disputed) == (True, True)
    assert _kinds(world) == [("dispute-escalated:dp_A", "escalation", "40.00")]
    assert _escalation_subjects(world) == ["Your bank's inquiry about a payment of $40.00 to Kilo became a chargeback"]


def test_given_an_open_inquiry_escalated_when_its_created_is_handled_last_then_the_escalation_is_alerted(
    world: World,
) -> None:
    """F1 and F2 together: no close; the escalation's ``funds_withdrawn`` (needs_response, [-4000]) is handled before
    the inquiry's ``created`` (warning_needs_response). The ``funds_withdrawn`` cannot tell an inquiry yet (nothing
    published: a plain chargeback's alert is its created's); the late created finds the dispute already a chargeback:
    no inquiry alert, the escalation's instead (once: the created redelivered publishes nothing). Money: 40.00
    charged back; disputed (the created flags it)."""
    events = Events()
    first, _second = _paid_in_two(world, events)
    inquiry = _dispute(first, "warning_needs_response") | {"id": "dp_A", "charge": "ch_A", "amount": 4000}
    created = events.add("evt_d1", "charge.dispute.created", inquiry | {"balance_transactions": []})
    took = {"status": "needs_response", "balance_transactions": [_txn(-4000)]}
    _apply(world, events, events.add("evt_d3", "charge.dispute.funds_withdrawn", inquiry | took))
    assert _kinds(world) == []
    _apply(world, events, created)  # late
    _apply(world, events, created)  # redelivered
    invoice = world.store.invoices["acme/2026-03"]
    assert invoice.charged_back == Decimal("40.00")
    assert (invoice.disputed, world.store.billing["acme"].disputed) == (True, True)
    assert _kinds(world) == [("dispute-escalated:dp_A", "escalation", "40.00")]


def test_given_an_escalated_inquiry_when_its_created_is_redelivered_then_two_alerts_only(world: World) -> None:
    """Guard (review rdk): the usual order (created, close warning_closed, ``funds_withdrawn`` [-4000]) then the
    created redelivered: its ``dispute:`` marker holds - the inquiry's alert and the escalation's, nothing more."""
    events, inquiry, _closed = _inquiry_on_a_closed(world)
    took = {"status": "needs_response", "balance_transactions": [_txn(-4000)]}
    _apply(world, events, events.add("evt_d3", "charge.dispute.funds_withdrawn", inquiry | took))
    redelivered = events.add("evt_d1", "charge.dispute.created", inquiry | {"balance_transactions": []})
    _apply(world, events, redelivered)
    assert [kind for _, kind, _ in _kinds(world)] == ["inquiry", "escalation"]


def test_given_an_open_inquiry_escalated_when_its_warning_closed_arrives_late_then_the_chargeback_stays_flagged(
    world: World,
) -> None:
    """Review rdk2 (dk3 1): inquiry on A (dp_A, 4000 cents -> 40.00) created warning_needs_response; the escalation
    (``funds_withdrawn``, needs_response, [-4000]) handled with no close before it; then the inquiry's
    ``warning_closed`` (sent before the escalation, delivered late). The chargeback is open: invoice and account stay
    disputed (they were cleared). Money as before: 40.00 charged back (-(-4000) = 4000 cents; the close's empty list,
    0 items, is shorter than the 1 listed and changes nothing). Alerts as before: the inquiry's and the escalation's."""
    events = Events()
    first, _second = _paid_in_two(world, events)
    inquiry = _dispute(first, "warning_needs_response") | {"id": "dp_A", "charge": "ch_A", "amount": 4000}
    _apply(world, events, events.add("evt_d1", "charge.dispute.created", inquiry | {"balance_transactions": []}))
    took = {"status": "needs_response", "balance_transactions": [_txn(-4000)]}
    _apply(world, events, events.add("evt_d3", "charge.dispute.funds_withdrawn", inquiry | took))
    closed = inquiry | {"status": "warning_closed", "balance_transactions": []}
    _apply(world, events, events.add("evt_d2", "charge.dispute.closed", closed))  # late
    invoice = world.store.invoices["acme/2026-03"]
    assert invoice.charged_back == Decimal("40.00")
    assert (invoice.disputed, world.store.billing["acme"].disputed) == (True, True)
    assert [kind for _, kind, _ in _kinds(world)] == ["inquiry", "escalation"]
    # and its final close still clears both: lost, the same list ([-4000]: 1 item, 40.00 - no more money)
    lost = inquiry | {"status": "lost", "balance_transactions": [_txn(-4000)]}
    _apply(world, events, events.add("evt_d4", "charge.dispute.closed", lost))
    invoice = world.store.invoices["acme/2026-03"]
    assert invoice.charged_back == Decimal("40.00")
    assert (invoice.disputed, world.store.billing["acme"].disputed) == (False, False)


def test_given_an_inquiry_created_and_its_escalation_handled_at_once_then_no_inquiry_alert_after_the_escalation(
    world: World,
) -> None:
    """Review rdk2 (dk3 2): two of the payment-events queue's handlers at once (MaximumConcurrency 2, a DLQ redrive):
    the inquiry's ``created`` (warning_needs_response, dp_A, 4000 cents) saves its invoice; before it publishes, the
    escalating ``funds_withdrawn`` (needs_response, [-4000]) is handled whole (it sees the inquiry's marker: publishes
    the escalation). The created handler publishes no inquiry alert from its stale copy ("no money withdrawn yet" is
    wrong by then): one alert, the escalation. It was two, the inquiry's after the escalation. Money: -(-4000) cents
    = 40.00 charged back; disputed."""
    events = Events()
    first, _second = _paid_in_two(world, events)
    inquiry = _dispute(first, "warning_needs_response") | {"id": "dp_A", "charge": "ch_A", "amount": 4000}
    created = events.add("evt_d1", "charge.dispute.created", inquiry | {"balance_transactions": []})
    took = {"status": "needs_response", "balance_transactions": [_txn(-4000)]}
    withdrawn = events.add("evt_d3", "charge.dispute.funds_withdrawn", inquiry | took)
    save_flag, done = world.store.save_dispute_flag, []

    def other_handler_meanwhile(account_id: str, disputed: bool, revision_read: int) -> None:
        save_flag(account_id, disputed, revision_read)
        if not done:  # the created's invoice is saved; the other handler runs whole before it publishes
            done.append(1)
            apply_stripe_event(world.store, world.bus, events, *withdrawn, at(2, 4), world.gateway)

    world.store.save_dispute_flag = other_handler_meanwhile  # type: ignore[method-assign]
    apply_stripe_event(world.store, world.bus, events, *created, at(2, 4), world.gateway)
    invoice = world.store.invoices["acme/2026-03"]
    assert invoice.charged_back == Decimal("40.00")
    assert (invoice.disputed, world.store.billing["acme"].disputed) == (True, True)
    assert [kind for _, kind, _ in _kinds(world)] == ["escalation"]


# --- Stripe Tax: a payment's refunds and disputes counted before tax (D384) ---------------------------------------
# March 65.20 of ours + Stripe Tax 10 % = 71.72 charged: 7172 cents x 6520 / 7172 of each charge figure is ours
TAXED = {"amount_paid": 7172, "total": 7172, "total_excluding_tax": 6520, "subtotal": 6520}


def _taxed_paid(world: World, events: Events, taxed: dict[str, int] = TAXED) -> str:
    """March closed and paid with Stripe Tax added (``taxed``: the Stripe invoice's figures); returns the intent."""
    invoice = world.close("acme", MAR)
    assert invoice.total == Decimal("65.20")
    intent = world.gateway.settle(invoice.invoice_id, paid=True, charged=Decimal(taxed["total"]).scaleb(-2))
    assert intent is not None
    _apply(world, events, events.add("evt_paid", "invoice.paid", _paid_invoice(world) | taxed))
    paid = world.store.invoices["acme/2026-03"]
    assert (paid.status, paid.refunded, paid.kept) == (InvoiceStatus.PAID, Decimal(0), Decimal("65.20"))  # D344
    return intent


def _taxed_charge(intent: str, refunded_cents: int, charged: int = 7172) -> dict[str, Any]:
    return _charge(intent, refunded_cents) | {"amount": charged, "amount_captured": charged}


def _refunds_asked(world: World) -> list[Decimal]:
    return [amount for _, amount in world.gateway.refunds.values()]


def test_given_stripe_tax_when_the_whole_payment_is_refunded_in_the_dashboard_then_the_invoice_gives_back_its_total(
    world: World,
) -> None:
    """71.72 refunded: 7172 x 6520 / 7172 = 65.20 of ours given back, 0.00 kept, 65.20 in the revenue report's
    refunds. Before: 71.72 refunded, kept -6.52 (more than the invoice)."""
    events = Events()
    intent = _taxed_paid(world, events)
    refund = _fixture("refund", id="re_dash", payment_intent=intent, charge="ch_3Story", amount=7172, metadata={})
    _apply(world, events, events.add("evt_rc", "refund.created", refund))
    _apply(world, events, events.add("evt_cr", "charge.refunded", _taxed_charge(intent, 7172)))
    after = world.store.invoices["acme/2026-03"]
    revenue = account_revenue(world.store.ledger("acme"), MAR, default_catalog()).figures
    assert (after.refunded, after.kept, revenue.refunds) == (Decimal("65.20"), Decimal("0.00"), Decimal("65.20"))


def test_given_stripe_tax_when_half_is_refunded_in_the_dashboard_then_the_rest_refunds_what_is_left_of_the_payment(
    world: World,
) -> None:
    """35.86 of 71.72 refunded in the dashboard = 32.60 of ours (3586 x 6520 / 7172); "the rest" asks Stripe for all
    that is left of the payment, 71.72 - 35.86 = 35.86 (the customer gets the tax back too), and the invoice gives
    back its other 32.60: 65.20, 0.00 kept. Before: 32.60 asked of Stripe (the rest before tax), 3.26 of tax kept."""
    events = Events()
    intent = _taxed_paid(world, events)
    world.gateway.refund_in_dashboard("acme/2026-03", Decimal("35.86"))
    _apply(world, events, events.add("evt_cr", "charge.refunded", _taxed_charge(intent, 3586)))
    assert world.store.invoices["acme/2026-03"].refunded == Decimal("32.60")
    done = refund_invoice(world.store, world.gateway, "acme", "acme/2026-03", None)
    assert _refunds_asked(world) == [Decimal("35.86")]
    assert (done.refunded, done.kept) == (Decimal("65.20"), Decimal("0.00"))
    _apply(world, events, events.add("evt_cr2", "charge.refunded", _taxed_charge(intent, 7172)))  # its webhook
    assert world.store.invoices["acme/2026-03"].refunded == Decimal("65.20")


def test_given_stripe_tax_when_the_cli_refunds_all_or_part_then_stripe_is_asked_tax_included(world: World) -> None:
    """10.00 of ours is 10.00 x 7172 / 6520 = 11.00 asked of Stripe (its charge.refunded, 1100, reads 10.00 back);
    then all: the 71.72 - 11.00 = 60.72 left of the payment, the invoice 65.20 refunded, 0.00 kept. Before: 10.00
    and 55.20 asked - 6.52 of the customer's tax never given back."""
    events = Events()
    intent = _taxed_paid(world, events)
    part = refund_invoice(world.store, world.gateway, "acme", "acme/2026-03", Decimal("10.00"))
    assert (_refunds_asked(world), part.refunded, part.kept) == ([Decimal("11.00")], Decimal("10.00"), Decimal("55.20"))
    _apply(world, events, events.add("evt_cr", "charge.refunded", _taxed_charge(intent, 1100)))
    assert world.store.invoices["acme/2026-03"].refunded == Decimal("10.00")
    done = refund_invoice(world.store, world.gateway, "acme", "acme/2026-03", None)
    assert _refunds_asked(world) == [Decimal("11.00"), Decimal("60.72")]
    assert (done.refunded, done.kept) == (Decimal("65.20"), Decimal("0.00"))


def test_given_stripe_tax_when_a_dispute_is_lost_then_the_invoice_charges_back_its_total(world: World) -> None:
    """A dispute of the whole 71.72: funds withdrawn and lost = 65.20 of ours charged back, 0.00 kept; the alert
    names what the customer disputes (71.72). Before: 71.72 charged back, kept -6.52."""
    events = Events()
    intent = _taxed_paid(world, events)
    disputed = _dispute(intent, "needs_response") | {"amount": 7172}
    _apply(world, events, events.add("evt_dc", "charge.dispute.created", disputed))
    withdrawn = _dispute(intent, "under_review") | {"amount": 7172}
    _apply(world, events, events.add("evt_dw", "charge.dispute.funds_withdrawn", withdrawn))
    _apply(world, events, events.add("evt_dl", "charge.dispute.closed", _dispute(intent, "lost") | {"amount": 7172}))
    after = world.store.invoices["acme/2026-03"]
    assert (after.charged_back, after.kept) == (Decimal("65.20"), Decimal("0.00"))
    assert [d["amount"] for t, d in world.bus.events if t == "DisputeOpened.v1"] == ["71.72"]


def test_given_stripe_tax_when_a_lost_dispute_lists_its_withdrawal_then_it_is_counted_before_tax(world: World) -> None:
    """The close lists the withdrawal (-7172 in the dispute's currency): 65.20 of ours, by the same rule."""
    events = Events()
    intent = _taxed_paid(world, events)
    listed = [{"amount": -7172, "currency": "usd", "fee": 1500}]
    lost = _dispute(intent, "lost") | {"amount": 7172, "currency": "usd", "balance_transactions": listed}
    _apply(world, events, events.add("evt_dl", "charge.dispute.closed", lost))
    after = world.store.invoices["acme/2026-03"]
    assert (after.charged_back, after.kept) == (Decimal("65.20"), Decimal("0.00"))


def test_given_stripe_tax_when_a_dashboard_refund_fails_then_it_is_back_before_tax_and_said_as_stripe_made_it(
    world: World,
) -> None:
    """35.86 refunded in the dashboard (32.60 of ours), then failed: 0.00 refunded, 65.20 kept; RefundFailed names the
    35.86 Stripe refunded."""
    events = Events()
    intent = _taxed_paid(world, events)
    refund = _fixture("refund", id="re_dash", payment_intent=intent, charge="ch_3Story", amount=3586, metadata={})
    _apply(world, events, events.add("evt_rc", "refund.created", refund))
    assert world.store.invoices["acme/2026-03"].refunded == Decimal("32.60")
    failed = refund | {"status": "failed", "failure_reason": "expired_or_canceled_card"}
    _apply(world, events, events.add("evt_rf", "refund.failed", failed))
    after = world.store.invoices["acme/2026-03"]
    assert (after.refunded, after.kept) == (Decimal("0.00"), Decimal("65.20"))
    assert [d["amount"] for t, d in world.bus.events if t == "RefundFailed.v1"] == ["35.86"]


def test_given_stripe_tax_when_three_dashboard_refunds_take_the_whole_payment_then_not_a_cent_more_than_the_total(
    world: World,
) -> None:
    """Tax 8.25 %: 65.20 + 5.379 = 70.58 charged (7058). Refunded as 20.00 + 20.00 + 30.58: each before tax
    18.48 (2000 x 6520 / 7058 = 18.4755), 18.48 and 28.25 (3058 x 6520 / 7058 = 28.2487) - 65.21 together, a cent
    more than the invoice; the charge's totals read 18.48, 36.95 (36.9510), 65.20. Given back: 65.20, kept 0.00."""
    events = Events()
    taxed = {"amount_paid": 7058, "total": 7058, "total_excluding_tax": 6520, "subtotal": 6520}
    intent = _taxed_paid(world, events, taxed)
    running = 0
    for n, cents in enumerate((2000, 2000, 3058)):
        running += cents
        refund = _fixture("refund", id=f"re_{n}", payment_intent=intent, charge="ch_3Story", amount=cents, metadata={})
        _apply(world, events, events.add(f"evt_rc{n}", "refund.created", refund))
        _apply(world, events, events.add(f"evt_cr{n}", "charge.refunded", _taxed_charge(intent, running, 7058)))
    after = world.store.invoices["acme/2026-03"]
    assert (after.refunded, after.kept) == (Decimal("65.20"), Decimal("0.00"))


def test_given_stripe_tax_when_a_payment_fails_then_the_alert_names_what_stripe_tried(world: World) -> None:
    """Stripe tried 71.72 (65.20 + tax): the alert says 71.72, not our 65.20 before tax."""
    events = Events()
    world.close("acme", MAR)
    gateway_id = world.store.invoices["acme/2026-03"].gateway_id
    meta = {"invoice_id": "acme/2026-03", "kilo_invoice_id": "acme/2026-03", "account_id": "acme"}
    failed = _fixture(
        "invoice", id=gateway_id, status="open", metadata=meta, attempt_count=1, amount_due=7172, amount_paid=0
    ) | {key: value for key, value in TAXED.items() if key != "amount_paid"}
    _apply(world, events, events.add("evt_pf", "invoice.payment_failed", failed))
    assert [d["total"] for t, d in world.bus.events if t == "PaymentFailed.v1"] == ["71.72"]


def test_given_stripe_tax_and_a_chargeback_not_applied_yet_when_all_is_refunded_then_refused_and_nothing_recorded(
    world: World,
) -> None:
    """71.72 charged for 65.20 of ours; the customer disputes it and Stripe withdraws the funds, but ours has applied
    only ``charge.dispute.created`` (its ``funds_withdrawn`` still queued): ours keeps 65.20, and "all" asks Stripe for
    all that is left of the payment - which its dispute makes not refundable. Refused, nothing made, nothing
    recorded refunded; the withdrawal then lands: 65.20 charged back, 0.00 kept (not 65.20 refunded and 65.20 charged
    back of a 65.20 invoice)."""
    events = Events()
    intent = _taxed_paid(world, events)
    world.gateway.dispute("acme/2026-03")
    taken = _dispute(intent, "needs_response") | {"amount": 7172}
    _apply(world, events, events.add("e_dc", "charge.dispute.created", taken))
    with pytest.raises(GatewayRejectedError, match=r"71\.72 of it is on a payment Stripe will not refund"):
        refund_invoice(world.store, world.gateway, "acme", "acme/2026-03", None)
    assert world.gateway.refunds == {}
    march = world.store.invoices["acme/2026-03"]
    assert (march.refunded, march.refund_pending, march.kept) == (Decimal(0), None, Decimal("65.20"))
    _apply(world, events, events.add("e_dw", "charge.dispute.funds_withdrawn", taken | {"status": "needs_response"}))
    march = world.store.invoices["acme/2026-03"]
    assert (march.refunded, march.charged_back, march.kept) == (Decimal(0), Decimal("65.20"), Decimal("0.00"))


# 20 % VAT (a common EU rate): 65.20 + 13.04 = 78.24 charged; each charge figure is 7824 -> 6520, x 5/6 exactly
VAT20 = {"amount_paid": 7824, "total": 7824, "total_excluding_tax": 6520, "subtotal": 6520}


def test_given_20_percent_vat_when_three_dashboard_refunds_take_the_whole_payment_then_nothing_kept_nor_below(
    world: World,
) -> None:
    """78.24 refunded as 3 x 26.08: each before tax 2608 x 5/6 = 21.7333 -> 21.73 (65.19 together, a cent under);
    the charge's totals 21.73, 52.16 -> 43.4667 -> 43.47, 78.24 -> 65.20. Given back 65.20, kept 0.00, revenue
    refunds 65.20: refunded + charged back + kept = 65.20 (the suspected -0.01 kept does not reproduce)."""
    events = Events()
    intent = _taxed_paid(world, events, VAT20)
    running = 0
    for n in range(3):
        running += 2608
        refund = _fixture("refund", id=f"re_{n}", payment_intent=intent, charge="ch_3Story", amount=2608, metadata={})
        _apply(world, events, events.add(f"evt_rc{n}", "refund.created", refund))
        _apply(world, events, events.add(f"evt_cr{n}", "charge.refunded", _taxed_charge(intent, running, 7824)))
    after = world.store.invoices["acme/2026-03"]
    revenue = account_revenue(world.store.ledger("acme"), MAR, default_catalog()).figures
    assert (after.refunded, after.charged_back, after.kept) == (Decimal("65.20"), Decimal(0), Decimal("0.00"))
    assert revenue.refunds == Decimal("65.20")


def test_given_20_percent_vat_when_part_is_refunded_and_the_rest_lost_in_a_dispute_then_not_a_cent_below_nothing(
    world: World,
) -> None:
    """78.24 charged; 39.09 refunded in the dashboard (3909 x 5/6 = 3257.5 -> 32.58), the other 39.15 disputed and
    lost (3915 x 5/6 = 3262.5 -> 32.63): each rounded half-up on its own, 65.21 of a 65.20 invoice. The refund yields
    the rounding's cent: 32.57 refunded + 32.63 charged back + 0.00 kept = 65.20, revenue refunds 65.20. Whichever
    lands first. Before: 32.58 + 32.63, kept -0.01, revenue refunds 65.21."""
    for refund_first in (True, False):
        world = team_with_march_overage()
        events = Events()
        intent = _taxed_paid(world, events, VAT20)
        refund = _fixture("refund", id="re_dash", payment_intent=intent, charge="ch_3Story", amount=3909, metadata={})
        refunded = [
            events.add("evt_rc", "refund.created", refund),
            events.add("evt_cr", "charge.refunded", _taxed_charge(intent, 3909, 7824)),
        ]
        disputed = [
            events.add(f"evt_d{n}", kind, _dispute(intent, status) | {"amount": 3915})
            for n, (kind, status) in enumerate(
                (
                    ("charge.dispute.created", "needs_response"),
                    ("charge.dispute.funds_withdrawn", "under_review"),
                    ("charge.dispute.closed", "lost"),
                )
            )
        ]
        for key in refunded + disputed if refund_first else disputed + refunded:
            _apply(world, events, key)
        after = world.store.invoices["acme/2026-03"]
        revenue = account_revenue(world.store.ledger("acme"), MAR, default_catalog()).figures
        assert (after.refunded, after.charged_back, after.kept) == (
            Decimal("32.57"),
            Decimal("32.63"),
            Decimal("0.00"),
        ), refund_first
        assert revenue.refunds == Decimal("65.20")


def test_given_20_percent_vat_when_both_payments_are_lost_in_disputes_then_the_chargebacks_come_to_the_total(
    world: World,
) -> None:
    """78.24 charged for 65.20, paid as 39.09 (pi_A, ch_A) + 39.15 (pi_B, ch_B); both disputed and lost: 3909 x 5/6
    = 3257.5 -> 32.58 and 3915 x 5/6 = 3262.5 -> 32.63, 65.21 of 65.20 with no refund to yield the cent. The later
    chargeback yields it: 65.20 charged back, 0.00 kept, revenue refunds 65.20. Before: 65.21, kept -0.01."""
    events = Events()
    invoice = world.close("acme", MAR)
    world.gateway.invoices[invoice.invoice_id].status = "paid"
    world.gateway.invoices[invoice.invoice_id].payments.extend(["pi_A", "pi_B"])
    _apply(world, events, events.add("evt_paid", "invoice.paid", _paid_invoice(world) | VAT20))
    for intent, charge, cents in (("pi_A", "ch_A", 3909), ("pi_B", "ch_B", 3915)):
        lost = {"id": f"dp_{charge}", "charge": charge, "amount": cents}
        _apply(
            world,
            events,
            events.add(f"w_{charge}", "charge.dispute.funds_withdrawn", _dispute(intent, "under_review") | lost),
        )
        _apply(world, events, events.add(f"l_{charge}", "charge.dispute.closed", _dispute(intent, "lost") | lost))
    after = world.store.invoices["acme/2026-03"]
    revenue = account_revenue(world.store.ledger("acme"), MAR, default_catalog()).figures
    assert (after.refunded, after.charged_back, after.kept) == (Decimal(0), Decimal("65.20"), Decimal("0.00"))
    assert revenue.refunds == Decimal("65.20")


def test_given_20_percent_vat_and_an_inferred_loss_when_the_charge_is_refunded_then_no_cent_is_taken_from_the_refund(
    world: World,
) -> None:
    """78.24 charged; a 39.15 dispute closed ``lost`` with no withdrawal seen and no list: 3915 x 5/6 = 3262.5 ->
    32.63 inferred (nothing refunded yet). Then the charge's 39.09 refund: 3909 x 5/6 = 3257.5 -> 32.58 refunded, and
    the inference re-capped to 32.63 - 32.58 = 0.05 charged back: 32.58 + 0.05 = 32.63 of 65.20, nothing over, so
    nothing yields a cent: 32.58 refunded, 0.05 charged back, 32.57 kept. Before: 32.57 / 0.05 / 32.58 (the cent
    taken from the refund against the 32.63 counted before the re-cap)."""
    events = Events()
    intent = _taxed_paid(world, events, VAT20)
    lost = _dispute(intent, "lost") | {"amount": 3915}
    _apply(world, events, events.add("evt_dl", "charge.dispute.closed", lost))
    assert world.store.invoices["acme/2026-03"].charged_back == Decimal("32.63")
    refund = _fixture("refund", id="re_dash", payment_intent=intent, charge="ch_3Story", amount=3909, metadata={})
    _apply(world, events, events.add("evt_rc", "refund.created", refund))
    _apply(world, events, events.add("evt_cr", "charge.refunded", _taxed_charge(intent, 3909, 7824)))
    after = world.store.invoices["acme/2026-03"]
    assert (after.refunded, after.charged_back, after.kept) == (Decimal("32.58"), Decimal("0.05"), Decimal("32.57"))


def _vat20_paid_in_two(world: World, events: Events) -> None:
    """March (65.20) paid with 20 % VAT, 78.24, as two payments pi_A (ch_A) and pi_B (ch_B)."""
    invoice = world.close("acme", MAR)
    world.gateway.invoices[invoice.invoice_id].status = "paid"
    world.gateway.invoices[invoice.invoice_id].payments.extend(["pi_A", "pi_B"])
    _apply(world, events, events.add("evt_paid", "invoice.paid", _paid_invoice(world) | VAT20))


def test_given_20_percent_vat_when_two_payments_are_each_part_refunded_part_lost_then_two_cents_do_not_go_below(
    world: World,
) -> None:
    """78.24 (65.20) paid as A 39.12 + B 39.12; each has 19.53 refunded (1953 x 5/6 = 1627.5 -> 16.28) and 19.59
    disputed and lost, withdrawal seen (1959 x 5/6 = 1632.5 -> 16.33): 32.56 refunded + 32.66 charged back = 65.22
    of 65.20, four parts each rounded up by half a cent. The refunds yield the two cents: 32.54 refunded + 32.66
    charged back + 0.00 kept = 65.20, revenue refunds 65.20. Before: 32.56 + 32.66, kept -0.02."""
    events = Events()
    _vat20_paid_in_two(world, events)
    for intent, charge in (("pi_A", "ch_A"), ("pi_B", "ch_B")):
        _apply(world, events, events.add(f"r_{charge}", "charge.refunded", _charge_of(intent, charge, 3912, 1953)))
        lost = _dispute(intent, "under_review") | {"id": f"dp_{charge}", "charge": charge, "amount": 1959}
        _apply(world, events, events.add(f"w_{charge}", "charge.dispute.funds_withdrawn", lost))
        _apply(world, events, events.add(f"l_{charge}", "charge.dispute.closed", lost | {"status": "lost"}))
    after = world.store.invoices["acme/2026-03"]
    revenue = account_revenue(world.store.ledger("acme"), MAR, default_catalog()).figures
    assert (after.refunded, after.charged_back, after.kept) == (Decimal("32.54"), Decimal("32.66"), Decimal("0.00"))
    assert revenue.refunds == Decimal("65.20")


def test_given_20_percent_vat_and_both_payments_withdrawn_when_one_is_reinstated_then_the_other_counts_in_full(
    world: World,
) -> None:
    """78.24 (65.20) paid as A 39.09 + B 39.15, both withdrawn: 32.58 + 32.63 = 65.21, the later yields the cent (65.20
    charged back). A's dispute won, its funds reinstated: B's 32.63 alone is charged back (Stripe's figure), 32.57
    kept - the cent B yielded is B's again, nothing is over. Before: 32.62 charged back, 32.58 kept."""
    events = Events()
    _vat20_paid_in_two(world, events)
    for intent, charge, cents in (("pi_A", "ch_A", 3909), ("pi_B", "ch_B", 3915)):
        taken = _dispute(intent, "under_review") | {"id": f"dp_{charge}", "charge": charge, "amount": cents}
        _apply(world, events, events.add(f"w_{charge}", "charge.dispute.funds_withdrawn", taken))
    assert world.store.invoices["acme/2026-03"].charged_back == Decimal("65.20")
    won = _dispute("pi_A", "won") | {"id": "dp_ch_A", "charge": "ch_A", "amount": 3909}
    _apply(world, events, events.add("evt_back", "charge.dispute.funds_reinstated", won))
    after = world.store.invoices["acme/2026-03"]
    assert (after.charged_back, after.kept) == (Decimal("32.63"), Decimal("32.57"))


def test_given_stripe_tax_when_a_dashboard_credit_note_refunds_part_then_its_refund_counts_before_tax_once(
    world: World,
) -> None:
    """A credit note made in Stripe's dashboard on the paid 71.72: 10.00 + 1.00 tax, refunded to the card. Stripe sends
    ``credit_note.created`` (``amount``/``total`` 1100 tax included, ``total_excluding_tax`` 1000) and the refund's
    ``refund.created`` and ``charge.refunded`` (1100). The note's event is not read (no figure of it reaches ours);
    its refund is, before tax: 1100 x 6520 / 7172 = 10.00 refunded, 55.20 kept - not 11.00, not 20.00."""
    events = Events()
    intent = _taxed_paid(world, events)
    gateway_id = world.store.invoices["acme/2026-03"].gateway_id
    note = _fixture(
        "credit_note",
        id="cn_dash",
        invoice=gateway_id,
        amount=1100,
        total=1100,
        subtotal=1000,
        total_excluding_tax=1000,
        refunds=[{"amount_refunded": 1100, "refund": "re_cn"}],
        metadata={},
    )
    outcome = _apply(world, events, events.add("evt_cn", "credit_note.created", note))
    assert not outcome.changed
    refund = _fixture("refund", id="re_cn", payment_intent=intent, charge="ch_3Story", amount=1100, metadata={})
    _apply(world, events, events.add("evt_rc", "refund.created", refund))
    _apply(world, events, events.add("evt_cr", "charge.refunded", _taxed_charge(intent, 1100)))
    after = world.store.invoices["acme/2026-03"]
    assert (after.refunded, after.kept) == (Decimal("10.00"), Decimal("55.20"))


def test_given_a_taxed_invoice_stored_before_d384_when_its_invoice_paid_is_sent_again_then_refunds_count_before_tax(
    world: World,
) -> None:
    """March paid 71.72 (65.20 + 10 % tax) and stored before D384: no ``taxed`` on it. Stripe's dashboard resends its
    ``invoice.paid`` (the same event, ``total`` 7172, ``total_excluding_tax`` 6520): ours records the figures, and a
    whole dashboard refund of 71.72 then counts 7172 x 6520 / 7172 = 65.20 refunded, 0.00 kept (the remedy D384's
    limit names; without it the refund counts 71.72)."""
    events = Events()
    intent = _taxed_paid(world, events)
    world.store.invoices["acme/2026-03"] = replace(world.store.invoices["acme/2026-03"], taxed=None)  # stored before
    assert world.store.ledger("acme").invoices["acme/2026-03"].taxed is None
    _apply(world, events, next(key for key, record in events.stored.items() if record.event_id == "evt_paid"))
    assert world.store.invoices["acme/2026-03"].taxed == (7172, 6520)
    refund = _fixture("refund", id="re_dash", payment_intent=intent, charge="ch_3Story", amount=7172, metadata={})
    _apply(world, events, events.add("evt_rc", "refund.created", refund))
    _apply(world, events, events.add("evt_cr", "charge.refunded", _taxed_charge(intent, 7172)))
    after = world.store.invoices["acme/2026-03"]
    assert (after.refunded, after.kept) == (Decimal("65.20"), Decimal("0.00"))


def test_given_a_refund_of_a_duplicate_stripe_invoice_with_our_metadata_then_ignored_as_a_stray_not_retried(
    world: World,
) -> None:
    """A duplicate of March in Stripe (the dashboard's "Duplicate invoice", carrying our metadata) paid: not applied,
    the operator told to refund it in Stripe. That refund's event names a payment of in_DUP, which March (in Stripe
    as another id) will never record: ignored as a stray (``PaymentOfAStrayInvoiceError``, an ``InvoiceNotFoundError``:
    logged at ERROR, not retried into the dead-letter queue). Before: retried on every receive (review rfs 2)."""
    events = Events()
    _taxed_paid(world, events)
    march = world.gateway.invoices["acme/2026-03"]
    world.gateway.invoices["dup"] = _Invoice("in_DUP", march.request, "paid", payments=["pi_DUP"])
    meta = {"invoice_id": "acme/2026-03", "kilo_invoice_id": "acme/2026-03", "account_id": "acme"}
    duplicate = _fixture("invoice", id="in_DUP", status="paid", metadata=meta, amount_paid=6520, from_invoice=None)
    outcome = _apply(world, events, events.add("e_dup", "invoice.paid", duplicate))
    assert outcome.attention is not None
    assert "in_DUP" in outcome.attention  # told to refund it in Stripe
    refund = _fixture("refund", id="re_dup", payment_intent="pi_DUP", charge="ch_DUP", amount=6520, metadata={})
    with pytest.raises(
        PaymentOfAStrayInvoiceError, match=r"in_DUP, which names invoice acme/2026-03 of ours but is not"
    ):
        _apply(world, events, events.add("e_rdup", "refund.created", refund))
    assert world.store.invoices["acme/2026-03"].refunded == Decimal(0)


def test_given_a_refund_of_a_stripe_invoice_made_outside_kilo_billing_then_ignored_as_nothing_of_ours(
    world: World,
) -> None:
    """A Stripe invoice with no metadata of ours (made by hand in the same Stripe account), paid and refunded: its
    refund is nothing of ours (``InvoiceNotFoundError``, not the stray kind) - ignored, not retried."""
    events = Events()
    _taxed_paid(world, events)
    march = world.gateway.invoices["acme/2026-03"]
    world.gateway.invoices["hand"] = _Invoice("in_HAND", march.request, "paid", payments=["pi_HAND"])
    world.gateway.outside.add("in_HAND")
    refund = _fixture("refund", id="re_hand", payment_intent="pi_HAND", charge="ch_HAND", amount=500, metadata={})
    with pytest.raises(InvoiceNotFoundError) as raised:
        _apply(world, events, events.add("e_rhand", "refund.created", refund))
    assert type(raised.value) is InvoiceNotFoundError
