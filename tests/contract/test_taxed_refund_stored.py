"""A card invoice with Stripe Tax read back from each ledger store (the in-memory fake and DynamoDB on moto): its
Stripe Tax figures (``taxed``) and a refund request for all that is left of its payments (``whole``) survive the
store, so a rerun after a timeout asks Stripe for the same thing (D384). Hand-worked figures: March 65.20 of ours +
10 % tax = 71.72 charged."""

from __future__ import annotations

import copy
from decimal import Decimal

import pytest

from kilo_invoice.logic import apply_stripe_event, refund_invoice
from tests.contract.ledger_harness import Ledger, team_march_closed
from tests.contract.test_note_refund_race import APR, _march_charge, _request_timing_out
from tests.contract.test_refund_failed import _Recorded
from tests.payment_fakes import InMemoryPaymentGateway
from tests.scenarios.test_card_payment_events import FIXTURES, TAXED, Events

MARCH = "acme/2026-03"


def _taxed_march_paid(ledger: Ledger) -> tuple[InMemoryPaymentGateway, str | None, Events]:
    """March closed and its ``invoice.paid`` (71.72 with Stripe Tax) applied: the gateway, the intent, the events."""
    gateway, _deps, _march = team_march_closed(ledger)
    intent = gateway.settle(MARCH, paid=True, charged=Decimal("71.72"))
    gateway_id = ledger.store.ledger("acme").invoices[MARCH].gateway_id
    paid = copy.deepcopy(FIXTURES["invoice"]) | TAXED
    paid.update(id=gateway_id, status="paid", metadata={"invoice_id": MARCH, "kilo_invoice_id": MARCH})
    events = Events()
    apply_stripe_event(
        ledger.store, _Recorded(), events, *events.add("e_paid", "invoice.paid", paid), APR.start, gateway
    )
    return gateway, intent, events


def test_given_a_taxed_invoice_when_the_rest_times_out_then_the_rerun_asks_for_all_that_is_left(ledger: Ledger) -> None:
    gateway, intent, events = _taxed_march_paid(ledger)
    assert ledger.store.ledger("acme").invoices[MARCH].taxed == (7172, 6520)
    # 35.86 of 71.72 refunded in Stripe's dashboard: 3586 x 6520 / 7172 = 32.60 of ours
    gateway.refund_in_dashboard(MARCH, Decimal("35.86"))
    charge = _march_charge(intent, 3586) | {"amount": 7172}
    apply_stripe_event(
        ledger.store, _Recorded(), events, *events.add("e_cr", "charge.refunded", charge), APR.start, gateway
    )
    _request_timing_out(ledger, gateway, None)
    pending = ledger.store.ledger("acme").invoices[MARCH].refund_pending
    assert pending is not None
    assert (pending.amount, pending.whole) == (Decimal("32.60"), True)
    done = refund_invoice(ledger.store, gateway, "acme", MARCH, None)
    assert [amount for _, amount in gateway.refunds.values()] == [Decimal("35.86")]  # 71.72 - 35.86, to the cent
    assert (done.refunded, done.kept, done.refund_pending) == (Decimal("65.20"), Decimal("0.00"), None)


@pytest.mark.parametrize("amount", [Decimal("10.00"), Decimal("65.20")])
def test_given_a_taxed_invoice_when_a_refund_is_asked_then_the_request_says_whether_it_takes_all(
    ledger: Ledger, amount: Decimal
) -> None:
    """10.00 is 10.00 x 7172 / 6520 = 11.00 asked (not all); 65.20, everything it keeps, is all that is left: 71.72."""
    gateway, _intent, _events = _taxed_march_paid(ledger)
    _request_timing_out(ledger, gateway, amount)
    pending = ledger.store.ledger("acme").invoices[MARCH].refund_pending
    assert pending is not None
    assert pending.whole is (amount == Decimal("65.20"))
    refund_invoice(ledger.store, gateway, "acme", MARCH, amount)
    assert [made for _, made in gateway.refunds.values()] == [Decimal("11.00") if amount < 65 else Decimal("71.72")]
