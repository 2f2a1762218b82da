"""Stripe's webhook under its generated role (StripeWebhookFunctionRole): a signed ``invoice.paid`` - the webhook
secrets read from Secrets Manager, the event stored in the events table and announced on the billing bus - moto
enforcing IAM. Event and signature as in test_ingest_stripe.py. The negative control takes ``events:PutEvents``
away: the webhook is refused on it (Stripe retries it)."""

from __future__ import annotations

import pytest

from tests.conftest import LambdaContext, Stack
from tests.iam.conftest import Roles
from tests.infra.test_generated_iam import BILLING_BUS, EVENTS_TABLE
from tests.integration.test_ingest_stripe import (
    clock,
    delivered,
    invoice_paid,
    post,
    probe,
    signed,
    stripe_resources,
)

__all__ = ["clock", "invoice_paid", "probe", "stripe_resources"]
FUNCTION = "StripeWebhookFunction"
pytestmark = pytest.mark.usefixtures("clock")


def test_given_the_stripe_webhook_under_its_generated_role_then_it_is_stored_and_announced(
    stack: Stack, roles: Roles, lambda_context: LambdaContext, invoice_paid: bytes, probe: str
) -> None:
    with roles.acting_as(FUNCTION) as enforcement:
        status, payload = post(invoice_paid, signed(invoice_paid), lambda_context)
    assert enforcement.denied == []
    assert (status, payload["status"]) == (200, "stored")
    assert {("dynamodb:PutItem", EVENTS_TABLE), ("events:PutEvents", BILLING_BUS)} <= enforcement.allowed
    assert {action for action, _ in enforcement.allowed} == {
        "dynamodb:PutItem",
        "events:PutEvents",
        "secretsmanager:GetSecretValue",
    }
    assert len(stack.table_items("EventsTable")) == 1
    assert [event["detail-type"] for event in delivered(stack, probe)] != []


def test_given_put_events_taken_from_the_stripe_webhook_s_role_then_it_is_refused_on_it(
    stack: Stack, roles: Roles, lambda_context: LambdaContext, invoice_paid: bytes, probe: str
) -> None:
    with roles.acting_as(FUNCTION, without={("events:PutEvents", BILLING_BUS)}) as enforcement:
        status, _ = post(invoice_paid, signed(invoice_paid), lambda_context)
    assert enforcement.denied == [("events:PutEvents", BILLING_BUS)]
    assert status >= 500
    assert delivered(stack, probe) == []
