"""The Stripe adapter against real Stripe test mode. Deselected by default (marker ``stripe_live``, pyproject addopts);
run with ``STRIPE_API_KEY=sk_test_... ./dev pytest -m stripe_live tests/live``. It refuses live keys."""

from __future__ import annotations

import os
import time
import uuid
from decimal import Decimal

import pytest

from kilo_account_api.stripe_adapter import StripePaymentPages
from kilo_invoice.ports import Customer, GatewayLine, GatewayRejectedError, InvoiceRequest
from kilo_invoice.stripe_adapter import StripePaymentGateway

pytestmark = pytest.mark.stripe_live


@pytest.fixture(scope="module")
def gateway() -> StripePaymentGateway:
    key = os.environ.get("STRIPE_API_KEY", "")
    if not key.startswith("sk_test_"):
        pytest.fail("the stripe_live suite needs STRIPE_API_KEY=sk_test_... (test mode only)")
    return StripePaymentGateway.from_api_key(key)


def test_given_test_mode_then_an_invoice_is_issued_paid_credited_and_refunded(gateway: StripePaymentGateway) -> None:
    run = uuid.uuid4().hex[:10]
    customer = gateway.ensure_customer(Customer(f"live-{run}", "ops@example.com", "Kilo live test"))
    gateway.set_default_payment_method(customer, "pm_card_visa")
    lines = [
        GatewayLine("Team fee", Decimal("29.00")),
        GatewayLine("Video minutes", Decimal("7.20"), Decimal(10000), Decimal("0.00072")),
        GatewayLine("Audio minutes (included)", Decimal("0.00"), Decimal(3000), Decimal("0.00036")),
    ]
    request = InvoiceRequest(f"inv-live-{run}", f"KBL-{run}", f"live-{run}", customer, lines)
    issued = gateway.issue_invoice(request)
    assert issued.total == Decimal("36.20")
    assert gateway.issue_invoice(request).gateway_id == issued.gateway_id
    for _ in range(30):  # Stripe collects auto-advanced invoices asynchronously
        found = gateway.find_invoice(request.invoice_id)
        if found is not None and found.status == "paid":
            break
        time.sleep(2)
    else:
        pytest.fail(f"{issued.gateway_id} was not paid within a minute")
    (intent,) = gateway.payment_refs(issued.gateway_id)  # what refunds and disputes will name
    assert intent.startswith("pi_")
    found = gateway.invoice_for_payment(intent)
    assert found is not None
    assert (found.gateway_id, found.ours) == (issued.gateway_id, issued.invoice_id)
    gateway.credit_note(issued.gateway_id, Decimal("1.20"), "late participant_left", f"cn-{run}")
    gateway.refund(issued.gateway_id, Decimal("5.00"), f"rf-{run}")
    pages = StripePaymentPages.from_api_key(os.environ["STRIPE_API_KEY"], max_network_retries=1)
    assert pages.setup_url(customer, f"live-{run}", "https://example.com/ok", "https://example.com/no").startswith(
        "https://"
    )
    with pytest.raises(GatewayRejectedError):
        gateway.void(issued.gateway_id)  # paid invoices cannot be voided
