"""An event of another Stripe invoice than ours carrying our metadata (D343) is done, not applied, and said:
the payment-status handler logs it at ERROR and counts ``PaymentEventNeedsOperator``, which the template's
``PaymentEventNeedsOperatorAlarm`` watches; an ordinary ``invoice.paid`` says nothing."""

from __future__ import annotations

from typing import Any

import pytest

from kilo_billing.invoicing import InvoiceStatus
from kilo_billing.observability import Metric
from tests.scenarios.test_card_payment_events import Events, _fixture, _paid_invoice
from tests.scenarios.test_invoicing import MAR, World, team_with_march_overage
from tests.unit.payment_alarm_helpers import flushed_metrics, handle_stored, logged_errors, march_paid_at_stripe


def _handled(obj: dict[str, Any], monkeypatch: pytest.MonkeyPatch, world: World) -> Any:
    events = Events()
    return handle_stored(world, events, events.add("evt_x", "invoice.paid", obj), "evt_x", monkeypatch)


def test_given_a_duplicate_stripe_invoice_paid_when_handled_then_ours_untouched_and_alarmed(
    monkeypatch: pytest.MonkeyPatch, capfd: pytest.CaptureFixture[str], caplog: pytest.LogCaptureFixture
) -> None:
    world = team_with_march_overage()
    march = world.close("acme", MAR)
    meta = {"invoice_id": march.invoice_id, "kilo_invoice_id": march.invoice_id, "account_id": "acme"}
    duplicate = _fixture("invoice", id="in_DUP", status="paid", metadata=meta, amount_paid=6520, from_invoice=None)
    capfd.readouterr()
    assert _handled(duplicate, monkeypatch, world) == {"batchItemFailures": []}  # done: not redelivered
    assert world.store.invoices[march.invoice_id].status is InvoiceStatus.OPEN
    assert logged_errors(caplog) == ["Stripe event needs an operator"]
    assert flushed_metrics(capfd.readouterr().out).get(Metric.PAYMENT_EVENT_ATTENTION.value) == 1


def test_given_ours_paid_in_full_when_handled_then_nothing_is_said(
    monkeypatch: pytest.MonkeyPatch, capfd: pytest.CaptureFixture[str], caplog: pytest.LogCaptureFixture
) -> None:
    world, march_id = march_paid_at_stripe()
    capfd.readouterr()
    assert _handled(_paid_invoice(world), monkeypatch, world) == {"batchItemFailures": []}
    assert world.store.invoices[march_id].status is InvoiceStatus.PAID
    assert logged_errors(caplog) == []
    assert Metric.PAYMENT_EVENT_ATTENTION.value not in flushed_metrics(capfd.readouterr().out)
