"""Faults around the close and the payment status (Given/When/Then): rating racing the close, reruns, processor
outages, a crash between the processor's invoice and our record, webhooks twice and out of order, a declined card,
refunds (card payment events and refund reruns: test_card_payment_events.py)."""

from __future__ import annotations

import json
from dataclasses import replace
from decimal import Decimal

import pytest

from kilo_billing.invoicing import BillingMethod, InvoiceStatus
from kilo_billing.stripe_events import StripeEventRecord
from kilo_invoice.logic import apply_stripe_event, refund_invoice, settle_crypto_refund
from kilo_invoice.ports import GatewayUnavailableError
from tests.scenarios.test_invoicing import APR, MAR, World, at, seg, team_with_march_overage


@pytest.fixture
def world() -> World:
    return team_with_march_overage()


# --- rating racing the close (the billed watermark) --------------------------------------------------------------


def test_given_a_rating_commit_just_before_the_close_then_it_is_on_the_invoice(world: World) -> None:
    world.store.rate("acme", "2026-03", seg(at(1)), "video", 1_000)
    assert world.close("acme", MAR).total == Decimal("65.92")  # 11,000 over x 0.00072 = 7.92 + 58.00
    assert [ln for ln in world.close("acme", APR).lines if ln.kind == "adjustment"] == []


def test_given_a_rating_commit_during_the_close_then_it_is_late_usage_on_the_next_invoice(world: World) -> None:
    # lands after the close read the counters, before its transaction: not in March's total, not lost
    world.store.before_create.append(lambda: world.store.rate("acme", "2026-03", seg(at(1)), "video", 1_000))
    assert world.close("acme", MAR).total == Decimal("65.20")
    april = world.close("acme", APR)
    assert [str(ln.amount) for ln in april.lines if ln.kind == "adjustment"] == ["0.72"]  # 1,000 x 0.00072


def test_given_a_rating_commit_after_the_close_then_it_is_late_usage_on_the_next_invoice(world: World) -> None:
    assert world.close("acme", MAR).total == Decimal("65.20")
    world.store.rate("acme", "2026-03", seg(at(1)), "video", 1_000)
    assert world.close("acme", MAR).total == Decimal("65.20")  # a rerun does not recompose
    april = world.close("acme", APR)
    assert [str(ln.amount) for ln in april.lines if ln.kind == "adjustment"] == ["0.72"]


def test_given_a_finished_period_when_run_again_then_nothing_changes(world: World) -> None:
    first = world.close("acme", MAR)
    writes, calls, events = world.store.writes, list(world.gateway.calls), list(world.bus.events)
    again = world.close("acme", MAR)
    assert again == first
    assert world.store.writes == writes
    assert world.gateway.calls == calls
    assert world.bus.events == events
    assert len(world.gateway.invoices) == 1


# --- the processor ----------------------------------------------------------------------------------------------


def test_given_the_processor_failing_twice_then_retried_with_the_same_invoice_id(world: World) -> None:
    world.gateway.fail_next = [GatewayUnavailableError("429"), GatewayUnavailableError("500")]
    invoice = world.close("acme", MAR)
    assert invoice.status is InvoiceStatus.OPEN
    assert list(world.gateway.invoices) == ["acme/2026-03"]
    # the first two calls (ensure_customer) failed and were made again; one customer, one invoice
    assert world.gateway.calls == ["ensure_customer"] * 3 + ["issue_invoice"]
    assert len(world.gateway.customers) == 1


def test_given_issue_invoice_timing_out_then_retried_with_the_same_invoice_id(world: World) -> None:
    world.gateway.crash_after_lines = 1  # the processor took part of the request, then the call timed out
    invoice = world.close("acme", MAR)
    assert world.gateway.calls == ["ensure_customer", "issue_invoice", "issue_invoice"]
    assert list(world.gateway.invoices) == [invoice.invoice_id]
    assert world.gateway.invoices[invoice.invoice_id].request.total == invoice.total


def test_given_the_processor_down_for_good_then_the_job_fails_and_a_rerun_finishes(world: World) -> None:
    world.gateway.fail_next = [GatewayUnavailableError("timeout")] * 5
    with pytest.raises(GatewayUnavailableError):
        world.close("acme", MAR)
    assert world.store.invoices["acme/2026-03"].status is InvoiceStatus.DRAFT
    world.gateway.fail_next = []
    assert world.close("acme", MAR).status is InvoiceStatus.OPEN
    assert len(world.gateway.invoices) == 1


def test_given_a_crash_between_the_processor_invoice_and_our_record_then_a_rerun_makes_no_second(
    world: World,
) -> None:
    real = world.store.update_invoice

    def crash(*_: object) -> None:
        raise RuntimeError("Lambda timed out")

    world.store.update_invoice = crash  # type: ignore[method-assign]
    with pytest.raises(RuntimeError):
        world.close("acme", MAR)
    assert len(world.gateway.invoices) == 1  # created at the processor, our record still draft
    world.store.update_invoice = real  # type: ignore[method-assign]
    invoice = world.close("acme", MAR)
    assert len(world.gateway.invoices) == 1
    assert invoice.gateway_id == world.gateway.invoices["acme/2026-03"].gateway_id


def test_given_a_crash_while_adding_lines_then_the_rerun_completes_the_same_invoice(world: World) -> None:
    world.gateway.crash_after_lines = 2
    world.gateway.fail_next = []
    invoice = world.close("acme", MAR)  # the crash is retried in-process with the same id
    assert world.gateway.invoices["acme/2026-03"].lines_added == len(invoice.lines)
    assert len(world.gateway.invoices) == 1


# --- payment status from Stripe events ---------------------------------------------------------------------------


class Events:
    def __init__(self) -> None:
        self.stored: dict[tuple[str, str], StripeEventRecord] = {}

    def add(self, event_id: str, event_type: str, obj: dict[str, object]) -> tuple[str, str]:
        body = json.dumps({"id": event_id, "type": event_type, "data": {"object": obj}}).encode()
        record = StripeEventRecord(event_id, event_type, 1_775_000_000, False, body, 1_775_000_000_000)
        self.stored[record.key] = record
        return record.key

    def get(self, pk: str, sk: str) -> StripeEventRecord | None:
        return self.stored.get((pk, sk))


def _invoice_obj(world: World, **extra: object) -> dict[str, object]:
    gateway_id = world.store.invoices["acme/2026-03"].gateway_id
    return {"id": gateway_id, "object": "invoice", "metadata": {"invoice_id": "acme/2026-03"}, **extra}


def test_given_invoice_paid_twice_and_a_late_payment_failed_then_paid_once_no_alert(world: World) -> None:
    world.close("acme", MAR)
    events = Events()
    paid = events.add("evt_1", "invoice.paid", _invoice_obj(world))
    failed = events.add("evt_0", "invoice.payment_failed", _invoice_obj(world))
    now = at(2, 4)
    assert apply_stripe_event(world.store, world.bus, events, *paid, now).changed
    assert not apply_stripe_event(world.store, world.bus, events, *paid, now).changed
    assert not apply_stripe_event(world.store, world.bus, events, *failed, now).changed  # older, arrives last
    invoice = world.store.invoices["acme/2026-03"]
    assert invoice.status is InvoiceStatus.PAID
    assert [s for s, _ in invoice.transitions] == ["draft", "open", "paid"]
    assert [t for t, _ in world.bus.events] == ["InvoiceIssued.v1"]


def test_given_a_declined_card_then_payment_failed_and_one_alert_then_paid_on_retry(world: World) -> None:
    world.close("acme", MAR)
    events = Events()
    failed = events.add("evt_2", "invoice.payment_failed", _invoice_obj(world))
    now = at(2, 4)
    apply_stripe_event(world.store, world.bus, events, *failed, now)
    apply_stripe_event(world.store, world.bus, events, *failed, now)  # redelivered
    assert world.store.invoices["acme/2026-03"].status is InvoiceStatus.PAYMENT_FAILED
    alerts = [d for t, d in world.bus.events if t == "PaymentFailed.v1"]
    assert [(a["event_id"], a["total"]) for a in alerts] == [("payment-failed:evt_2", "65.20")]
    paid = events.add("evt_3", "invoice.paid", _invoice_obj(world))
    apply_stripe_event(world.store, world.bus, events, *paid, now)
    assert world.store.invoices["acme/2026-03"].status is InvoiceStatus.PAID


# --- refunds ----------------------------------------------------------------------------------------------------


def test_given_a_paid_invoice_then_partial_and_full_refunds_once_each(world: World) -> None:
    invoice = world.close("acme", MAR)
    world.store.invoices[invoice.invoice_id] = replace(invoice, status=InvoiceStatus.PAID)
    world.gateway.settle(invoice.invoice_id, paid=True)
    refunded = refund_invoice(world.store, world.gateway, "acme", invoice.invoice_id, Decimal("10.00"))
    assert refunded.refunded == Decimal("10.00")
    rest = refund_invoice(world.store, world.gateway, "acme", invoice.invoice_id, None)
    assert rest.refunded == Decimal("65.20")
    assert sorted(amount for _, amount in world.gateway.refunds.values()) == [Decimal("10.00"), Decimal("55.20")]
    with pytest.raises(ValueError, match=r"at most 0\.00"):
        refund_invoice(world.store, world.gateway, "acme", invoice.invoice_id, Decimal("0.01"))


def test_given_a_paid_crypto_bill_then_a_refund_owed_until_an_operator_settles_it() -> None:
    world = World()
    world.signup("coin", (at(1), "team"), method=BillingMethod.CRYPTO)
    invoice = world.close("coin", MAR)
    world.store.invoices[invoice.invoice_id] = replace(invoice, status=InvoiceStatus.PAID)
    owed = refund_invoice(world.store, world.gateway, "coin", invoice.invoice_id, Decimal("5.00"))
    assert (owed.refund_owed, owed.refunded) == (Decimal("5.00"), Decimal("0.00"))
    settled = settle_crypto_refund(world.store, "coin", invoice.invoice_id, "0xabc")
    assert (settled.refund_owed, settled.refunded) == (Decimal("0.00"), Decimal("5.00"))
    assert world.gateway.calls == []


def _crypto_refund_owed(amount: str) -> tuple[World, str]:
    world = World()
    world.signup("coin", (at(1), "team"), method=BillingMethod.CRYPTO)
    invoice = world.close("coin", MAR)  # 58.00: March's fee and April's in advance
    world.store.invoices[invoice.invoice_id] = replace(invoice, status=InvoiceStatus.PAID)
    refund_invoice(world.store, world.gateway, "coin", invoice.invoice_id, Decimal(amount))
    return world, invoice.invoice_id


def test_given_a_crypto_refund_settled_when_the_operator_reruns_it_after_another_refund_then_that_one_stays_owed() -> (
    None
):
    """The operator's rerun of ``crypto-refund-sent`` with the same transaction (its answer was lost) after a second
    refund was recorded: the transaction sent the first refund only, so the second stays owed (before: it was
    recorded as refunded by that transaction too, and never sent)."""
    world, invoice_id = _crypto_refund_owed("5.00")
    settle_crypto_refund(world.store, "coin", invoice_id, "0xabc")
    refund_invoice(world.store, world.gateway, "coin", invoice_id, Decimal("3.00"))
    again = settle_crypto_refund(world.store, "coin", invoice_id, "0xabc")
    assert (again.refunded, again.refund_owed) == (Decimal("5.00"), Decimal("3.00"))
    assert world.store.invoices[invoice_id] == again
    sent = settle_crypto_refund(world.store, "coin", invoice_id, "0xdef")  # the second one, sent by its own transaction
    assert (sent.refunded, sent.refund_owed) == (Decimal("8.00"), Decimal("0.00"))


def test_given_a_crypto_refund_being_settled_when_another_is_recorded_meanwhile_then_only_the_one_read_is_settled() -> (
    None
):
    """Another refund lands between the settlement's read and its write (the write conflicts and is tried again on
    the stored invoice): the transaction sent what was owed when read, 5.00; the 3.00 recorded since stays owed."""
    world, invoice_id = _crypto_refund_owed("5.00")
    world.store.before_update.append(
        lambda: refund_invoice(world.store, world.gateway, "coin", invoice_id, Decimal("3.00"))
    )
    settled = settle_crypto_refund(world.store, "coin", invoice_id, "0xabc")
    assert (settled.refunded, settled.refund_owed) == (Decimal("5.00"), Decimal("3.00"))
    assert world.store.invoices[invoice_id] == settled


def test_given_a_crypto_refund_being_settled_when_another_transaction_settles_it_meanwhile_then_refused_not_twice() -> (
    None
):
    world, invoice_id = _crypto_refund_owed("5.00")
    world.store.before_update.append(lambda: settle_crypto_refund(world.store, "coin", invoice_id, "0xdef"))
    with pytest.raises(ValueError, match=r"now owes 0\.00, not the 5\.00 read"):
        settle_crypto_refund(world.store, "coin", invoice_id, "0xabc")
    stored = world.store.invoices[invoice_id]
    assert (stored.refunded, stored.refund_owed) == (Decimal("5.00"), Decimal("0.00"))
    assert "crypto_refund:0xabc" not in stored.announced


def test_given_a_crypto_refund_when_another_is_recorded_meanwhile_then_their_sum_is_still_bounded_by_what_was_paid() -> (
    None
):
    """Two refunds of 40.00 asked at once on a bill of 58.00 (March's fee and April's in advance, 29.00 each), a cent
    refunded already: each was within what was left when read (57.99); the second to write re-reads the bill (its
    write conflicts) and is bounded again: 58.00 - 40.01 = 17.99 is left, so it is refused (before: 80.01 owed)."""
    world, invoice_id = _crypto_refund_owed("0.01")
    assert world.store.invoices[invoice_id].total == Decimal("58.00")
    world.store.before_update.append(
        lambda: refund_invoice(world.store, world.gateway, "coin", invoice_id, Decimal("40.00"))
    )
    with pytest.raises(ValueError, match=r"refund must be at most 17\.99, got 40\.00$"):
        refund_invoice(world.store, world.gateway, "coin", invoice_id, Decimal("40.00"))
    assert world.store.invoices[invoice_id].refund_owed == Decimal("40.01")


@pytest.mark.parametrize("method", [BillingMethod.CRYPTO, BillingMethod.CARD])
def test_given_a_paid_invoice_when_a_refund_of_half_a_cent_is_asked_then_refused_naming_it_and_nothing_written(
    method: BillingMethod,
) -> None:
    """0.005 stored as a crypto refund owed would be shown as 0.01 (half-up) and counted 0.00 by the revenue report
    (half-even); a card refund of it would be recorded as requested before Stripe refused it. The logic refuses it
    whoever calls (the CLI refuses it too: test_invoice_cli.py)."""
    world = World()
    world.signup("coin", (at(1), "team"), method=method)
    invoice = world.close("coin", MAR)
    world.store.invoices[invoice.invoice_id] = replace(invoice, status=InvoiceStatus.PAID)
    if method is BillingMethod.CARD:
        world.gateway.settle(invoice.invoice_id, paid=True)
    before, writes, calls = world.store.invoices[invoice.invoice_id], world.store.writes, list(world.gateway.calls)
    with pytest.raises(ValueError, match=r"refund must be whole cents, got 0\.005$"):
        refund_invoice(world.store, world.gateway, "coin", invoice.invoice_id, Decimal("0.005"))
    assert world.store.invoices[invoice.invoice_id] == before
    assert (world.store.writes, world.gateway.calls) == (writes, calls)
    owed = refund_invoice(world.store, world.gateway, "coin", invoice.invoice_id, Decimal("0.01"))  # a cent is fine
    assert owed.refund_owed + owed.refunded == Decimal("0.01")
