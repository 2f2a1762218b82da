"""A card refund Stripe made and then failed (``refund.failed``; ``refund.updated``/``charge.refund.updated`` with
status ``failed``): the money went back to our Stripe balance, the customer got nothing. It is recorded on the
invoice by refund id and no longer counted as given back - ours or one made in the dashboard, in any order, once -
what notes recorded as returned meanwhile becomes account credit, and the failure is announced once
(D-refundfail-1). Run on the fake and on DynamoDB (moto): the new field is stored and read back.

Team card, March 65.20 paid: 29.00 March fee + 10,000 video minutes over the 50,000 included x 0.00072 = 7.20 of usage
+ 29.00 April's fee in advance (``_team_march_paid``)."""

from __future__ import annotations

import copy
from decimal import Decimal
from typing import Any

import pytest

from kilo_billing.contracts import RefundFailedV1
from kilo_billing.invoicing import refundable
from kilo_invoice.logic import apply_stripe_event, close_account, refund_invoice
from tests.contract.ledger_harness import SEG, Ledger
from tests.contract.test_note_refund_race import (
    APR,
    NONE,
    _march_charge,
    _request_timing_out,
    _team_march_paid,
)
from tests.payment_fakes import InMemoryPaymentGateway
from tests.scenarios.test_card_payment_events import FIXTURES, Events

MARCH = "acme/2026-03"
OURS = "acme/2026-03/refund/1"  # our first refund request's id, as the Stripe adapter puts it in the metadata


class _Recorded:
    """The bus: what was published, in order."""

    def __init__(self) -> None:
        self.published: list[tuple[str, dict[str, Any]]] = []

    def publish(self, detail_type: str, detail: Any) -> None:
        self.published.append((detail_type, dict(detail)))


def _refund(refund_id: str, intent: str | None, cents: int, status: str, ours: bool) -> dict[str, Any]:
    """A Refund of March's charge (Stripe's published fixture with this story's ids laid over it); ``ours``: made by
    the Stripe adapter (``kilo_refund_id``), else in the dashboard. Failed: Stripe's ``failure_reason`` set."""
    obj = copy.deepcopy(FIXTURES["refund"])
    obj.update(
        id=refund_id,
        amount=cents,
        charge="ch_mar",
        payment_intent=intent,
        metadata={"kilo_refund_id": OURS} if ours else {},
        status=status,
    )
    if status == "failed":
        obj["failure_reason"] = "expired_or_canceled_card"
    return obj


def _stripe(
    ledger: Ledger, gateway: InMemoryPaymentGateway, events: Events, name: str, kind: str, obj: Any, bus: Any = None
) -> Any:
    """One Stripe event stored under ``name`` (the same name again: a redelivery) and applied."""
    return apply_stripe_event(
        ledger.store, bus or _Recorded(), events, *events.add(name, kind, obj), APR.start, gateway
    )


def _march(ledger: Ledger) -> Any:
    return ledger.store.ledger("acme").invoices[MARCH]


def _ours_of_20_made(ledger: Ledger) -> tuple[InMemoryPaymentGateway, str | None, Events]:
    """Our refund of 20.00 made and its ``charge.refunded`` (2000): 20.00 refunded, March keeps 45.20."""
    gateway, _deps, intent = _team_march_paid(ledger)
    refund_invoice(ledger.store, gateway, "acme", MARCH, Decimal("20.00"))
    events = Events()
    _stripe(ledger, gateway, events, "evt_cr", "charge.refunded", _march_charge(intent, 2000))
    assert (_march(ledger).refunded, _march(ledger).kept) == (Decimal("20.00"), Decimal("45.20"))
    return gateway, intent, events


@pytest.mark.parametrize(
    "kinds",
    [
        ("refund.failed",),
        ("refund.updated",),
        ("charge.refund.updated",),
        ("refund.failed", "refund.failed"),  # delivered again
        ("refund.updated", "refund.failed", "charge.refund.updated"),  # the same failure by each event: once
    ],
)
def test_given_our_refund_made_when_stripe_fails_it_then_the_invoice_keeps_it_again(
    ledger: Ledger, kinds: tuple[str, ...]
) -> None:
    """Ours of 20.00 made, then Stripe fails it: 20.00 - 20.00 = 0.00 refunded, March keeps 65.20 again and all 65.20
    is refundable again. Before: 20.00 refunded, 45.20 kept and refundable (the failure ignored)."""
    gateway, intent, events = _ours_of_20_made(ledger)
    for n, kind in enumerate(kinds):
        _stripe(ledger, gateway, events, f"evt_f{n}", kind, _refund("re_ours", intent, 2000, "failed", ours=True))
    march = _march(ledger)
    assert (march.refunded, march.kept, march.kept_less_pending) == (NONE, Decimal("65.20"), Decimal("65.20"))
    assert refundable(ledger.store.ledger("acme"), march) == Decimal("65.20")


def test_given_a_refund_updated_that_is_not_a_failure_then_nothing_changes(ledger: Ledger) -> None:
    """``refund.updated`` of ours with status ``succeeded`` (its other updates): still 20.00 refunded."""
    gateway, intent, events = _ours_of_20_made(ledger)
    outcome = _stripe(
        ledger, gateway, events, "evt_u", "refund.updated", _refund("re_ours", intent, 2000, "succeeded", ours=True)
    )
    assert (outcome.changed, _march(ledger).refunded) == (False, Decimal("20.00"))


@pytest.mark.parametrize(
    "order",
    [
        ("refund.created", "charge.refunded", "refund.failed"),
        ("refund.failed", "refund.created", "charge.refunded"),  # the failure first
        ("refund.created", "refund.failed", "charge.refunded"),  # the charge's total from before the failure, late
        ("charge.refunded", "refund.failed"),  # its refund.created not here
        ("refund.failed",),  # only the failure
        ("refund.created", "charge.refunded", "refund.failed", "refund.created", "charge.refunded"),  # again
    ],
)
def test_given_a_dashboard_refund_stripe_fails_in_any_order_then_it_is_not_given_back(
    ledger: Ledger, order: tuple[str, ...]
) -> None:
    """The dashboard refunds 10.00 (``refund.created`` 1000, ``charge.refunded`` 1000), Stripe fails it: in any
    order and repetition 0.00 refunded, March keeps 65.20. Before: 10.00 refunded, 55.20 kept."""
    gateway, _deps, intent = _team_march_paid(ledger)
    events = Events()
    objects = {
        "refund.created": _refund("re_dash", intent, 1000, "succeeded", ours=False),
        "charge.refunded": _march_charge(intent, 1000),
        "refund.failed": _refund("re_dash", intent, 1000, "failed", ours=False),
    }
    for n, kind in enumerate(order):
        _stripe(ledger, gateway, events, f"evt_{kind}_{n}", kind, objects[kind])
    march = _march(ledger)
    assert (march.refunded, march.kept) == (NONE, Decimal("65.20"))


def test_given_a_dashboard_refund_failed_and_another_made_then_only_the_other_is_given_back(ledger: Ledger) -> None:
    """The dashboard's 10.00 fails; then the dashboard refunds 5.00 (``refund.created`` 500; the charge's total
    after the failure: ``charge.refunded`` 500): 5.00 refunded, March keeps 65.20 - 5.00 = 60.20."""
    gateway, _deps, intent = _team_march_paid(ledger)
    events = Events()
    _stripe(ledger, gateway, events, "e1", "refund.created", _refund("re_dash", intent, 1000, "succeeded", False))
    _stripe(ledger, gateway, events, "e2", "charge.refunded", _march_charge(intent, 1000))
    _stripe(ledger, gateway, events, "e3", "refund.failed", _refund("re_dash", intent, 1000, "failed", False))
    _stripe(ledger, gateway, events, "e4", "refund.created", _refund("re_two", intent, 500, "succeeded", False))
    _stripe(ledger, gateway, events, "e5", "charge.refunded", _march_charge(intent, 500))
    march = _march(ledger)
    assert (march.refunded, march.kept) == (Decimal("5.00"), Decimal("60.20"))


def test_given_our_refund_failing_after_a_note_counted_it_then_the_note_credits_what_it_could_not(
    ledger: Ledger,
) -> None:
    """Ours refunds all 65.20 (made); 5,000 March minutes go away late (-5,000 x 0.00072 = -3.60): April's note finds
    March holding nothing - 0.00 credit, 3.60 returned. Stripe then fails the refund: March keeps 65.20 again, so the
    note's 3.60 becomes account credit (0.00 returned) and its history says why. Before: 0.00 credit, 3.60 returned -
    the customer got neither the refund nor the credit."""
    gateway, deps, intent = _team_march_paid(ledger)
    done = refund_invoice(ledger.store, gateway, "acme", MARCH, None)
    assert done.refunded == Decimal("65.20")
    ledger.rate("acme", "2026-03", SEG, "video", -5_000)
    close_account(deps, "acme", APR, APR.end)
    note = ledger.store.ledger("acme").credit_notes["acme/2026-03/credit-2026-04"]
    assert (note.to_credit, note.returned) == (NONE, Decimal("3.60"))
    events = Events()
    _stripe(ledger, gateway, events, "evt_f", "refund.failed", _refund("re_ours", intent, 6520, "failed", ours=True))
    found = ledger.store.ledger("acme")
    note = found.credit_notes["acme/2026-03/credit-2026-04"]
    assert (note.to_credit, note.returned) == (Decimal("3.60"), NONE)
    assert found.billing.credit == Decimal("3.60")
    assert note.history[-1][0] == "3.60 kept again (a refund of 65.20 failed at the card processor): account credit"
    assert found.invoices[MARCH].kept == Decimal("65.20")


def test_given_our_refund_pending_when_stripe_fails_it_then_the_request_ends_and_a_new_one_is_asked_anew(
    ledger: Ledger,
) -> None:
    """Ours of 20.00 recorded, Stripe's answer lost (pending: March keeps 65.20 - 20.00 = 45.20 less pending); its
    refund fails at Stripe before we hear back. The request ends (its refund was made, then failed): nothing
    pending, 0.00 refunded, March keeps 65.20. Before: still pending (45.20), and the rerun would record 20.00 as
    refunded. Refunding again is the operator's new request (``/refund/2``), not a silent retry to the same card:
    20.00 refunded, 45.20 kept."""
    gateway, _deps, intent = _team_march_paid(ledger)
    _request_timing_out(ledger, gateway, Decimal("20.00"))
    assert _march(ledger).kept_less_pending == Decimal("45.20")
    events = Events()
    _stripe(ledger, gateway, events, "evt_f", "refund.failed", _refund("re_ours", intent, 2000, "failed", ours=True))
    march = _march(ledger)
    assert (march.refund_pending, march.refunded, march.kept_less_pending) == (None, NONE, Decimal("65.20"))
    again = refund_invoice(ledger.store, gateway, "acme", MARCH, Decimal("20.00"))
    assert (again.refunds_requested, again.refunded, again.kept) == (2, Decimal("20.00"), Decimal("45.20"))


def test_given_a_refund_failed_then_it_is_announced_once(ledger: Ledger) -> None:
    """The failure of ours (20.00) is published once as ``RefundFailed.v1`` with Stripe's reason, whatever event
    says it and however often; the outcome names it."""
    gateway, intent, events = _ours_of_20_made(ledger)
    bus = _Recorded()
    failed = _refund("re_ours", intent, 2000, "failed", ours=True)
    first = _stripe(ledger, gateway, events, "evt_f", "refund.failed", failed, bus)
    _stripe(ledger, gateway, events, "evt_f", "refund.failed", failed, bus)
    _stripe(ledger, gateway, events, "evt_u", "refund.updated", failed, bus)
    assert first.published == ("refund-failed:re_ours",)
    assert [(kind, detail["event_id"]) for kind, detail in bus.published] == [
        (RefundFailedV1.DETAIL_TYPE, "refund-failed:re_ours")
    ]
    detail = bus.published[0][1]
    assert (detail["invoice_id"], detail["amount"], detail["reason"], detail["ours"]) == (
        MARCH,
        "20.00",
        "expired_or_canceled_card",
        True,
    )
