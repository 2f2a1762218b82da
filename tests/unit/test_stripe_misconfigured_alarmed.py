"""A malformed Stripe secret during ``invoice.paid`` (D301: the payments lookup is optional, so the event is applied
without its refs) is said, not quiet (D316): the payment-status handler logs it at ERROR and counts
``StripeMisconfigured``, which the template's ``PaymentStripeMisconfiguredAlarm`` watches - and the event is done
(no batch item failure, the invoice paid). A Stripe outage during the same lookup stays quiet (D301)."""

from __future__ import annotations

import json
from decimal import Decimal
from types import SimpleNamespace
from typing import Any

import pytest

from kilo_billing.invoicing import InvoiceStatus
from kilo_billing.observability import Metric
from kilo_invoice import dependencies, payment_handler
from kilo_invoice.dependencies import LazyGateway, parse_stripe_secret
from kilo_invoice.ports import GatewayUnavailableError, PaymentGateway
from tests.conftest import LambdaContext
from tests.scenarios.test_card_payment_events import Events, _paid_invoice
from tests.scenarios.test_invoicing import MAR, World, team_with_march_overage
from tests.unit.payment_alarm_helpers import flushed_metrics, handle_stored, logged_errors, payment_message


def _malformed_secret() -> PaymentGateway:
    parse_stripe_secret({"key": "sk_test_1"}, "kilo/stripe")  # {"key"}, not {"api_key"}: refused by name
    raise AssertionError("a malformed secret builds no gateway")


def _publishable_key() -> PaymentGateway:
    parse_stripe_secret({"api_key": "pk_live_abc"}, "kilo/stripe")  # the publishable key, not the secret one
    raise AssertionError("a key not of Stripe's shape builds no gateway")


def _secret_refused(code: str, message: str) -> PaymentGateway:
    """Secrets Manager refuses the secret with ``code`` - ours to fix, as a malformed one (D315, D358 amended)."""
    import boto3  # noqa: PLC0415
    from botocore.stub import Stubber  # noqa: PLC0415

    from kilo_invoice.settings import InvoiceSettings  # noqa: PLC0415

    client = boto3.client("secretsmanager", region_name="us-east-1", aws_access_key_id="x", aws_secret_access_key="y")
    stubber = Stubber(client)
    stubber.add_client_error("get_secret_value", code, message)
    stubber.activate()
    config = InvoiceSettings(usage_table_name="t", stripe_api_key_secret_name="kilo/stripe")
    dependencies.stripe_gateway(config, client).payment_refs("in_1")  # builds it: reads the secret
    raise AssertionError("a secret refused builds no gateway")


def _missing_secret() -> PaymentGateway:
    """The secret's name wrong (or the secret deleted): ResourceNotFoundException. Before: ``GatewayUnavailableError``
    - quiet, as an outage."""
    return _secret_refused("ResourceNotFoundException", "Secrets Manager can't find it.")


def _secret_scheduled_for_deletion() -> PaymentGateway:
    """The secret scheduled for deletion (its recovery window): InvalidRequestException, not ResourceNotFound - before
    this review (rh2 2), quiet as an outage: no ERROR, no metric."""
    return _secret_refused(
        "InvalidRequestException",
        "You can't perform this operation on the secret because it was marked for deletion.",
    )


def _secret_undecryptable() -> PaymentGateway:
    """The secret's KMS key disabled or not granted to us: DecryptionFailure - ours to fix too (rh2 2)."""
    return _secret_refused("DecryptionFailure", "Secrets Manager can't decrypt the protected secret text.")


def _delivered(world: World, events: Events, gateway: PaymentGateway, monkeypatch: pytest.MonkeyPatch) -> Any:
    invoice = world.close("acme", MAR)
    world.gateway.settle(invoice.invoice_id, paid=True)
    key = events.add("evt_paid", "invoice.paid", _paid_invoice(world))
    return handle_stored(world, events, key, "evt_paid", monkeypatch, gateway=gateway)


@pytest.fixture
def world() -> World:
    """Team, card: March 60,000 video minutes (as tests/scenarios/test_card_payment_events.py's story)."""
    return team_with_march_overage()


@pytest.mark.parametrize(
    "build",
    [_malformed_secret, _publishable_key, _missing_secret, _secret_scheduled_for_deletion, _secret_undecryptable],
    ids=["no-api-key", "publishable-key", "missing", "scheduled-for-deletion", "undecryptable"],
)
def test_given_a_malformed_stripe_secret_when_invoice_paid_arrives_then_paid_and_alarmed_not_failed(
    build: Any,
    world: World,
    monkeypatch: pytest.MonkeyPatch,
    capfd: pytest.CaptureFixture[str],
    caplog: pytest.LogCaptureFixture,
) -> None:
    """A key pasted with its newline: before, the SDK's transport refused the header (``InvalidHeader`` ->
    ``APIConnectionError``), an outage - quiet, no metric (D328)."""
    capfd.readouterr()
    response = _delivered(world, Events(), LazyGateway(build), monkeypatch)
    assert response == {"batchItemFailures": []}  # the event is done: not redelivered, not dead-lettered
    paid = world.store.invoices["acme/2026-03"]
    assert (paid.status, paid.gateway_refs) == (InvoiceStatus.PAID, ())
    assert logged_errors(caplog) == ["Stripe misconfigured: payments lookup failed; event applied without them"]
    assert flushed_metrics(capfd.readouterr().out).get(Metric.STRIPE_MISCONFIGURED.value) == 1


def test_given_stripe_down_when_invoice_paid_arrives_then_paid_and_quiet(
    world: World,
    monkeypatch: pytest.MonkeyPatch,
    capfd: pytest.CaptureFixture[str],
    caplog: pytest.LogCaptureFixture,
) -> None:
    world.gateway.fail_next = [GatewayUnavailableError("Stripe unavailable (503)")]
    capfd.readouterr()
    assert _delivered(world, Events(), world.gateway, monkeypatch) == {"batchItemFailures": []}
    assert logged_errors(caplog) == []
    assert Metric.STRIPE_MISCONFIGURED.value not in flushed_metrics(capfd.readouterr().out)


@pytest.mark.parametrize(("job", "closed"), [("2026-04", ("2026-04",)), ("2026-05", ("2026-04", "2026-05"))])
def test_given_a_note_on_an_invoice_stripe_does_not_know_when_the_close_job_runs_then_issued_and_alarmed(
    monkeypatch: pytest.MonkeyPatch,
    capfd: pytest.CaptureFixture[str],
    caplog: pytest.LogCaptureFixture,
    job: str,
    closed: tuple[str, ...],
) -> None:
    """D330, through the close handler: March 65.20 open at Stripe, its Stripe invoice unknown to the key in use;
    April's note lowering March by 3.60 meets 404 ``resource_missing``. The job is done (no batch failure), April is
    issued, the note waits - one ERROR line, ``StripeMisconfigured`` 1 (the close's own alarm watches it). Before: the
    job failed at every delivery (``InvoiceCloseFailed``), April a draft, then dead-lettered. A catch-up job (May's,
    April not closed yet: both closed in one run, each retrying the waiting note) names it once too - before this
    was counted per closed period (2; a review of D330)."""
    from datetime import timedelta  # noqa: PLC0415

    from kilo_billing.invoicing import CreditNoteStatus  # noqa: PLC0415
    from kilo_billing.periods import Period  # noqa: PLC0415
    from kilo_invoice import close_handler  # noqa: PLC0415
    from tests.contract.ledger_harness import SEG  # noqa: PLC0415
    from tests.unit.test_stripe_gateway_refusals import Answering, march_closed  # noqa: PLC0415

    http = Answering()
    ledger, deps, march = march_closed(http, card=False)
    assert march.gateway_id is not None
    del http.emulator.objects["invoice"][march.gateway_id]
    ledger.rate("acme", "2026-03", SEG, "video", -5_000)
    monkeypatch.setattr(dependencies, "closer", lambda: deps)
    record = {
        "messageId": "m-1",
        "receiptHandle": "r-1",
        "body": json.dumps({"account_id": "acme", "period": job}),
        "attributes": {},
        "messageAttributes": {},
        "md5OfBody": "",
        "eventSource": "aws:sqs",
        "eventSourceARN": "arn:aws:sqs:us-east-1:123456789012:invoice-close",
        "awsRegion": "us-east-1",
    }
    after = Period.parse(job).end + timedelta(hours=6)
    monkeypatch.setattr(close_handler, "datetime", SimpleNamespace(now=lambda _tz: after))
    capfd.readouterr()
    response = close_handler.lambda_handler({"Records": [record]}, LambdaContext())  # type: ignore[arg-type]
    assert response == {"batchItemFailures": []}
    found = ledger.store.ledger("acme")
    assert [found.invoices[f"acme/{period}"].status for period in closed] == [InvoiceStatus.OPEN] * len(closed)
    assert found.credit_notes["acme/2026-03/credit-2026-04"].status is CreditNoteStatus.PENDING
    assert logged_errors(caplog) == [
        "Credit notes wait at Stripe (ours to fix, or its invoice revised there): invoice issued without them"
    ]
    metrics = flushed_metrics(capfd.readouterr().out)
    assert metrics.get(Metric.STRIPE_MISCONFIGURED.value) == 1
    assert Metric.INVOICE_CLOSE_FAILED.value not in metrics


def test_given_a_refund_stripe_fails_after_it_was_made_then_the_handler_alarms_it_once(
    world: World,
    monkeypatch: pytest.MonkeyPatch,
    capfd: pytest.CaptureFixture[str],
    caplog: pytest.LogCaptureFixture,
) -> None:
    """D340 through the payment-status handler: March 65.20 paid, our refund of 20.00 made, then Stripe's
    ``refund.failed`` for it (a Refund with our ``kilo_refund_id``, the card expired). The event is done, the invoice
    keeps it again (0.00 refunded), one ERROR line and ``RefundFailed`` 1 (``PaymentRefundFailedAlarm`` watches it);
    delivered again, nothing more. Before: no line, no metric, 20.00 still counted as refunded."""
    from tests.scenarios.test_card_payment_events import _fixture  # noqa: PLC0415

    events = Events()
    _delivered(world, events, world.gateway, monkeypatch)  # invoice.paid: March paid, its payment intent recorded
    from kilo_invoice.logic import refund_invoice  # noqa: PLC0415

    made = refund_invoice(world.store, world.gateway, "acme", "acme/2026-03", Decimal("20.00"))
    assert made.refunded == Decimal("20.00")
    intent = world.store.invoices["acme/2026-03"].gateway_refs[0]
    failed = _fixture(
        "refund",
        id="re_ours",
        amount=2000,
        payment_intent=intent,
        charge=None,
        status="failed",
        failure_reason="expired_or_canceled_card",
        metadata={"kilo_refund_id": "acme/2026-03/refund/1"},
    )
    pk, sk = events.add("evt_failed", "refund.failed", failed)
    capfd.readouterr()
    caplog.clear()
    for _ in range(2):  # delivered again: alarmed once
        record = payment_message((pk, sk), "evt_failed", message_id="m-2")
        response = payment_handler.lambda_handler({"Records": [record]}, LambdaContext())  # type: ignore[arg-type]
        assert response == {"batchItemFailures": []}
    assert world.store.invoices["acme/2026-03"].refunded == Decimal("0.00")
    assert logged_errors(caplog) == [
        "Stripe refund failed after it was made: the customer got nothing; the invoice keeps it again"
    ]
    assert flushed_metrics(capfd.readouterr().out).get(Metric.REFUND_FAILED.value) == 1
