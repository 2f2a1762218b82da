"""A dispute of a payment whose Stripe invoice ours has not recorded yet (the close stopped between Stripe's finalize
and its own save; ``invoice.finalized``/``paid`` not applied yet) through the payment-status handler: reported failed
(a batch item failure: the queue redelivers it, and dead-letters it - alarmed - if ours never learns the id), not
acknowledged as "about nothing of ours" (D383). A charge of no invoice at all is still ignored."""

from __future__ import annotations

from dataclasses import replace
from unittest.mock import patch

import pytest

from kilo_billing.invoicing import InvoiceStatus
from kilo_billing.observability import Metric
from kilo_invoice import payment_handler
from tests.payment_fakes import _Invoice
from tests.scenarios.test_card_payment_events import Events, _charge, _dispute
from tests.unit.payment_alarm_helpers import flushed_metrics, handle_stored, march_paid_at_stripe


def test_given_a_dispute_of_a_stripe_invoice_ours_has_not_recorded_then_the_message_is_retried(
    monkeypatch: pytest.MonkeyPatch, capfd: pytest.CaptureFixture[str]
) -> None:
    world, march = march_paid_at_stripe()
    gateway_id = world.store.invoices[march].gateway_id
    assert gateway_id is not None
    intent = world.gateway.invoices[march].payments[0]
    world.store.invoices[march] = replace(world.store.invoices[march], status=InvoiceStatus.DRAFT, gateway_id=None)
    world.store.pointers.pop(gateway_id)
    events = Events()
    key = events.add("evt_dc", "charge.dispute.created", _dispute(intent, "needs_response"))
    capfd.readouterr()
    with patch.object(payment_handler.logger, "warning") as warned:
        response = handle_stored(world, events, key, "evt_dc", monkeypatch)
    assert response == {"batchItemFailures": [{"itemIdentifier": "m-1"}]}
    assert [call.args[0] for call in warned.call_args_list] == ["Stripe event of an invoice not recorded yet; retried"]
    assert gateway_id in warned.call_args.kwargs["extra"]["reason"]
    assert Metric.PAYMENT_EVENT_IGNORED.value not in flushed_metrics(capfd.readouterr().out)


def test_given_a_charge_of_no_invoice_at_all_then_it_is_still_ignored(
    monkeypatch: pytest.MonkeyPatch, capfd: pytest.CaptureFixture[str]
) -> None:
    world, _ = march_paid_at_stripe()
    events = Events()
    key = events.add("evt_x", "charge.refunded", _charge("pi_NotOurs", 500))
    capfd.readouterr()
    response = handle_stored(world, events, key, "evt_x", monkeypatch)
    assert response == {"batchItemFailures": []}
    assert flushed_metrics(capfd.readouterr().out).get(Metric.PAYMENT_EVENT_IGNORED.value) == 1


def test_given_a_dispute_of_a_duplicate_of_a_recorded_invoice_then_ignored_with_an_error_line_not_retried(
    monkeypatch: pytest.MonkeyPatch, capfd: pytest.CaptureFixture[str]
) -> None:
    """A paid duplicate of March in Stripe (our metadata, another Stripe id; March has recorded its own): its
    dispute is acknowledged (no batch failure: never dead-lettered), logged at ERROR naming the duplicate, and
    counted ignored (D383 amended, review rfs 2)."""
    world, march = march_paid_at_stripe()
    world.gateway.invoices["dup"] = _Invoice("in_DUP", world.gateway.invoices[march].request, "paid", payments=["pi_D"])
    events = Events()
    key = events.add("evt_dd", "charge.dispute.created", _dispute("pi_D", "needs_response"))
    capfd.readouterr()
    with patch.object(payment_handler.logger, "error") as logged:
        response = handle_stored(world, events, key, "evt_dd", monkeypatch)
    assert response == {"batchItemFailures": []}
    assert [call.args[0] for call in logged.call_args_list] == [
        "Stripe event of a stray invoice with our metadata; ignored"
    ]
    assert "in_DUP" in logged.call_args.kwargs["extra"]["reason"]
    assert flushed_metrics(capfd.readouterr().out).get(Metric.PAYMENT_EVENT_IGNORED.value) == 1
