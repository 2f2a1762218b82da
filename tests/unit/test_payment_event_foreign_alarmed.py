"""D349, behind ingest's refusal: a stored Stripe event the payment-status handler must not apply as it stands.
Of a Stripe Connect account: never applied, done (not redelivered), logged at ERROR and counted ``StripeEventForeign``
(alarmed). Of the other mode than the stage's (``STRIPE_LIVEMODE``) - stored before ingest refused them, or by a
stage whose setting was wrong or changed - not applied either, but reported failed (D349 amended, review): the queue
redelivers it and then dead-letters it (alarmed), to be redriven once the setting is right; acked, it was lost, as
ingest had answered Stripe 200. Its metadata naming our invoice changes nothing meanwhile."""

from __future__ import annotations

import copy
import json
import logging
from typing import Any

import pytest

from kilo_billing.invoicing import InvoiceStatus
from kilo_billing.observability import Metric
from kilo_billing.stripe_events import StripeEventRecord
from tests.scenarios.test_card_payment_events import FIXTURES, Events, _paid_invoice
from tests.scenarios.test_invoicing import World
from tests.unit.payment_alarm_helpers import flushed_metrics, handle_stored, logged_errors, march_paid_at_stripe


def _handled(
    world: World, monkeypatch: pytest.MonkeyPatch, stage_livemode: bool, envelope: dict[str, Any], receive: int = 1
) -> Any:
    """``invoice.paid`` of ours (metadata and Stripe id), its envelope overridden, handled by a function whose stage
    takes ``stage_livemode`` events; ``receive``: the SQS message's receive count, as Lambda passes it."""
    events = Events()
    event = copy.deepcopy(FIXTURES["event"]) | {"id": "evt_x", "type": "invoice.paid"}
    event |= {"data": {"object": _paid_invoice(world)}, **envelope}
    record = StripeEventRecord(
        "evt_x", "invoice.paid", 1_775_000_000, event["livemode"] is True, json.dumps(event).encode(), 0
    )
    events.stored[record.key] = record
    attributes = {"ApproximateReceiveCount": str(receive)}
    return handle_stored(
        world, events, record.key, "evt_x", monkeypatch, livemode=stage_livemode, attributes=attributes
    )


def test_given_an_event_of_a_connect_account_when_handled_then_done_not_applied_and_alarmed(
    monkeypatch: pytest.MonkeyPatch, capfd: pytest.CaptureFixture[str], caplog: pytest.LogCaptureFixture
) -> None:
    world, march_id = march_paid_at_stripe()
    bus = list(world.bus.events)
    capfd.readouterr()
    envelope = {"livemode": False, "account": "acct_1Connected"}
    assert _handled(world, monkeypatch, False, envelope) == {"batchItemFailures": []}  # done
    assert world.store.invoices[march_id].status is InvoiceStatus.OPEN  # 65.20 still asked, not paid
    assert world.bus.events == bus
    assert logged_errors(caplog) == ["Stripe event of a Connect account: not applied"]
    reason = next(r for r in caplog.records if r.levelno >= logging.ERROR).__dict__["reason"]
    assert "acct_1Connected" in reason
    assert "endpoint" not in reason  # ingest's wording: this function is no endpoint
    counted = flushed_metrics(capfd.readouterr().out)
    assert counted.get(Metric.STRIPE_EVENT_FOREIGN.value) == 1
    assert Metric.PAYMENT_EVENT_APPLIED.value not in counted


@pytest.mark.parametrize(
    ("stage_livemode", "livemode", "said"),
    [
        (True, False, "test-mode event where this stage takes live-mode events"),  # a test event, live stage
        (False, True, "live-mode event where this stage takes test-mode events"),  # upgraded without StripeLiveMode
    ],
)
def test_given_an_event_of_the_other_mode_when_handled_then_not_applied_failed_for_redrive_and_alarmed(
    monkeypatch: pytest.MonkeyPatch,
    capfd: pytest.CaptureFixture[str],
    caplog: pytest.LogCaptureFixture,
    stage_livemode: bool,
    livemode: bool,
    said: str,
) -> None:
    """A live ``invoice.paid`` stored (Stripe answered 200) before a stack upgraded without ``StripeLiveMode=true``
    handles it: left on the queue (redelivered, then dead-lettered: alarmed), not dropped. Redriven once the
    setting is right, it applies: March's 65.20 (29.00 fee + 7.20 overage + 29.00 April) paid."""
    world, march_id = march_paid_at_stripe()
    bus = list(world.bus.events)
    capfd.readouterr()
    answer = _handled(world, monkeypatch, stage_livemode, {"livemode": livemode})
    assert answer == {"batchItemFailures": [{"itemIdentifier": "m-1"}]}  # kept: redelivered, then the DLQ
    assert world.store.invoices[march_id].status is InvoiceStatus.OPEN  # 65.20 still asked
    assert world.bus.events == bus
    errors = [r for r in caplog.records if r.levelno >= logging.ERROR and r.getMessage().startswith("Stripe event")]
    assert [r.getMessage() for r in errors] == ["Stripe event of the other mode than the stage's: kept for redrive"]
    assert said in errors[0].__dict__["reason"]
    counted = flushed_metrics(capfd.readouterr().out)
    assert counted.get(Metric.STRIPE_EVENT_FOREIGN.value) == 1
    assert Metric.PAYMENT_EVENT_APPLIED.value not in counted
    # the setting fixed, the message redriven from the DLQ
    assert _handled(world, monkeypatch, livemode, {"livemode": livemode}) == {"batchItemFailures": []}
    assert world.store.invoices[march_id].status is InvoiceStatus.PAID


def test_given_an_event_of_the_other_mode_received_until_dead_lettered_then_counted_and_logged_at_error_once(
    monkeypatch: pytest.MonkeyPatch, capfd: pytest.CaptureFixture[str], caplog: pytest.LogCaptureFixture
) -> None:
    """Review 2 (D349): the payment queue's maxReceiveCount is 5, so a live event in a test-mode stage is received 5
    times before the DLQ. Counted (``StripeEventForeign``: 1, not 5) and logged at ERROR on the first receive only,
    naming the event's type and the invoice its metadata names; receives 2 to 5 at WARNING, uncounted - each still
    failed for the queue. Redriven with the setting still wrong: a first receive again, counted once more."""
    world, march_id = march_paid_at_stripe()
    capfd.readouterr()
    kept = {"batchItemFailures": [{"itemIdentifier": "m-1"}]}
    for receive in (1, 2, 3, 4, 5):
        assert _handled(world, monkeypatch, False, {"livemode": True}, receive) == kept
    mismatch = [r for r in caplog.records if r.getMessage().startswith("Stripe event of the other mode")]
    assert [(r.levelno, r.__dict__["receives"]) for r in mismatch] == [
        (logging.ERROR, "1"),
        (logging.WARNING, "2"),
        (logging.WARNING, "3"),
        (logging.WARNING, "4"),
        (logging.WARNING, "5"),
    ]
    assert (mismatch[0].__dict__["stripe_type"], mismatch[0].__dict__["invoice_id"]) == ("invoice.paid", "acme/2026-03")
    assert flushed_metrics(capfd.readouterr().out).get(Metric.STRIPE_EVENT_FOREIGN.value) == 1  # 5 receives, 1 counted
    assert _handled(world, monkeypatch, False, {"livemode": True}, 1) == kept  # redriven, StripeLiveMode not fixed
    assert flushed_metrics(capfd.readouterr().out).get(Metric.STRIPE_EVENT_FOREIGN.value) == 1
    assert world.store.invoices[march_id].status is InvoiceStatus.OPEN  # 65.20 still asked


@pytest.mark.parametrize("livemode", [True, False])
def test_given_an_event_of_the_stages_mode_when_handled_then_applied(
    monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture, livemode: bool
) -> None:
    world, march_id = march_paid_at_stripe()
    assert _handled(world, monkeypatch, livemode, {"livemode": livemode}) == {"batchItemFailures": []}
    assert world.store.invoices[march_id].status is InvoiceStatus.PAID
    assert logged_errors(caplog) == []
