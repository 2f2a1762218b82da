"""Payment status under its generated role (PaymentStatusFunctionRole): Stripe's events for a closed March (acct-a's
invoice.paid, acct-b's declined card) and later acct-a's charge.refunded go through the real ingest handler and
the billing bus (full permissions: ingest's part) to the payment-status queue, whose records the handler applies with
the credentials of a role holding exactly its generated policy - the Stripe API key read from Secrets Manager, the
invoice's payments asked of Stripe (the emulator), the invoices updated, the failed payment announced on the bus -
moto enforcing IAM. Figures as in test_card_payment_events.py: acct-a's invoice 65.20 paid; 12.34 refunded. The
negative control takes ``events:PutEvents`` away: acct-b's declined payment is refused on it (and retried)."""

from __future__ import annotations

from decimal import Decimal
from typing import Any

from kilo_billing.invoicing import InvoiceStatus
from kilo_invoice import payment_handler
from tests.iam.conftest import Enforcement, Roles
from tests.iam.test_invoicing_roles import queued
from tests.infra.test_generated_iam import BILLING_BUS, STRIPE_API_KEY, USAGE_TABLE
from tests.integration.test_invoice_close import Invoicing, _month, invoicing

__all__ = ["invoicing"]
FUNCTION = "PaymentStatusFunction"


def _events_queued(inv: Invoicing, since: int) -> tuple[list[dict[str, Any]], int]:
    """Stripe's events from index ``since`` through ingest (full permissions) onto the payment-status queue."""
    emitted = inv.http.emulator.events[since:]
    assert [inv.webhook(event) for event in emitted] == [200] * len(emitted)
    return queued(inv, "PaymentEventsQueue"), since + len(emitted)


def _closed(inv: Invoicing) -> tuple[list[dict[str, Any]], int]:
    _month(inv)
    inv.start("2026-04-01T06:00:00Z")
    inv.close_all()
    return _events_queued(inv, 0)


def _apply(inv: Invoicing, roles: Roles, records: list[dict[str, Any]], **grants: Any) -> tuple[Any, Enforcement]:
    with roles.acting_as(FUNCTION, **grants) as enforcement:
        answer = payment_handler.lambda_handler({"Records": records}, inv.context)
    return answer, enforcement


def test_given_payment_status_under_its_generated_role_then_paid_declined_and_refunded_are_applied(
    invoicing: Invoicing, roles: Roles
) -> None:
    records, seen = _closed(invoicing)
    answer, enforcement = _apply(invoicing, roles, records)
    assert enforcement.denied == []
    assert answer == {"batchItemFailures": []}
    invoice = invoicing.invoice("acct-a")
    assert (invoice.status, invoice.total) == (InvoiceStatus.PAID, Decimal("65.20"))
    assert invoicing.invoice("acct-b").status is InvoiceStatus.PAYMENT_FAILED
    secrets = [arn for action, arn in enforcement.allowed if action == "secretsmanager:GetSecretValue"]
    assert [arn.rpartition("-")[0] for arn in secrets] == [STRIPE_API_KEY.removesuffix("-??????")]
    assert {("dynamodb:PutItem", USAGE_TABLE), ("events:PutEvents", BILLING_BUS)} <= enforcement.allowed

    gateway = invoicing.store.ledger("acct-a").invoices["acct-a/2026-03"].gateway_id
    assert gateway is not None
    invoicing.gateway().refund(gateway, Decimal("12.34"), "made-in-the-dashboard")
    records, _ = _events_queued(invoicing, seen)
    answer, enforcement = _apply(invoicing, roles, records)
    assert enforcement.denied == []
    assert answer == {"batchItemFailures": []}
    assert invoicing.invoice("acct-a").refunded == Decimal("12.34")


def test_given_put_events_taken_from_the_payment_status_role_then_the_declined_payment_is_refused_on_it(
    invoicing: Invoicing, roles: Roles
) -> None:
    records, _ = _closed(invoicing)
    answer, enforcement = _apply(invoicing, roles, records, without={("events:PutEvents", BILLING_BUS)})
    assert enforcement.denied
    assert set(enforcement.denied) == {("events:PutEvents", BILLING_BUS)}
    assert answer["batchItemFailures"]  # the announcement's record is retried, not dropped
