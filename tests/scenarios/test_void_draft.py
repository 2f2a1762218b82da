"""An operator voids a month-end invoice still our draft - Stripe refused its issue for good, and every later close of
the account waits behind it (D336) - with ``kilo-billing invoice void-draft`` (``logic.void_draft``, D338), on the
in-memory ledger and gateway. Hand-worked (price book 2026-01): Team, 60,000 video minutes in March: 10,000 over x
0.00072 = 7.20 + March's fee 29.00 + April's in advance 29.00 = 65.20, less 10.00 of account credit = 55.20."""

from __future__ import annotations

from decimal import Decimal

import pytest

from kilo_billing.invoicing import BillingState, InvoiceStatus
from kilo_invoice.logic import close_account, close_through, gateway_request, void_draft
from kilo_invoice.ports import GatewayRejectedError, InvoiceRequest
from tests.payment_fakes import _Invoice
from tests.scenarios.test_invoicing import APR, MAR, World, amounts, at, seg


@pytest.fixture
def world() -> World:
    return World()


def _draft(world: World, monkeypatch: pytest.MonkeyPatch) -> None:
    world.signup("acme", (at(1), "team"))
    world.store.billing["acme"] = BillingState(credit=Decimal("10.00"))
    world.store.rate("acme", "2026-03", seg(at(1)), "video", 60_000)

    def refuse(request: InvoiceRequest) -> None:
        raise GatewayRejectedError("Amount must be no more than $999,999.99")

    monkeypatch.setattr(world.gateway, "issue_invoice", refuse)
    with pytest.raises(GatewayRejectedError):
        close_account(world.deps, "acme", MAR, MAR.end)
    march = world.store.invoices["acme/2026-03"]
    assert (march.status, march.total, amounts(march, "credit")) == (InvoiceStatus.DRAFT, Decimal("55.20"), ["-10.00"])
    assert world.store.billing["acme"].credit == Decimal("0.00")
    monkeypatch.undo()


def test_given_a_draft_stripe_refused_when_voided_then_its_credit_comes_back_and_april_closes(
    world: World, monkeypatch: pytest.MonkeyPatch
) -> None:
    _draft(world, monkeypatch)
    world.gateway.fail_next.append(GatewayRejectedError("Amount must be no more than $999,999.99"))
    with pytest.raises(GatewayRejectedError):  # before: every later close fails behind the draft (D336)
        close_through(world.deps, "acme", APR, APR.end)
    done = void_draft(world.store, world.gateway, "acme", MAR, at(2, 4), "Stripe refuses the customer")
    assert (done.invoice.status, done.processor) == (InvoiceStatus.VOID, None)
    assert world.store.invoices["acme/2026-03"].void_reason == "Stripe refuses the customer"  # kept for the audit
    assert (done.not_billed_again, done.billed_again) == (Decimal("36.20"), Decimal("29.00"))  # 7.20 + 29.00; April's
    assert world.store.billing["acme"].credit == Decimal("10.00")  # the credit it applied, back (D132)
    [april] = close_through(world.deps, "acme", APR, APR.end)  # March is through: April alone
    assert april.invoice is not None
    # April's fee again (29.00, March's advance was not collected, D153) + May's 29.00 - the 10.00 credit = 48.00
    assert (april.period, april.invoice.total, april.invoice.status) == (
        "2026-04",
        Decimal("48.00"),
        InvoiceStatus.OPEN,
    )
    with pytest.raises(ValueError, match="KB-acme-00001 is void: only a draft is voided here"):
        void_draft(world.store, world.gateway, "acme", MAR, at(3, 4), "Stripe refuses the customer")
    with pytest.raises(ValueError, match="KB-acme-00002 is open: only a draft"):
        void_draft(world.store, world.gateway, "acme", APR, at(3, 4), "Stripe refuses the customer")


def test_given_stripe_holds_a_paid_invoice_for_it_then_void_draft_refuses_and_ours_stays_a_draft(
    world: World, monkeypatch: pytest.MonkeyPatch
) -> None:
    _draft(world, monkeypatch)
    march = world.store.invoices["acme/2026-03"]
    world.gateway.invoices[march.invoice_id] = _Invoice("in_x", gateway_request(march, "cus_x"), "paid")
    with pytest.raises(GatewayRejectedError, match="Stripe's invoice in_x for KB-acme-00001 is paid; "):
        void_draft(world.store, world.gateway, "acme", MAR, at(2, 4), "Stripe refuses the customer")
    assert world.store.invoices["acme/2026-03"].status is InvoiceStatus.DRAFT
    assert world.store.billing["acme"].credit == Decimal("0.00")
    assert "void" not in world.gateway.calls
    assert "delete_draft" not in world.gateway.calls


def test_given_stripe_holds_a_draft_for_it_then_void_draft_deletes_it_there_first(
    world: World, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Before (D338 as first written): refused, "delete it in Stripe, then run this again". Now Stripe's draft - never
    finalized, nothing asked of the customer - is deleted, then ours is void: its 10.00 of credit back."""
    _draft(world, monkeypatch)
    march = world.store.invoices["acme/2026-03"]
    world.gateway.invoices[march.invoice_id] = _Invoice("in_x", gateway_request(march, "cus_x"), "draft")
    done = void_draft(world.store, world.gateway, "acme", MAR, at(2, 4), "Stripe refuses the customer")
    assert (done.processor, done.invoice.gateway_id) == ("Stripe draft invoice in_x deleted", None)
    assert march.invoice_id not in world.gateway.invoices
    assert world.store.invoices["acme/2026-03"].status is InvoiceStatus.VOID
    assert world.store.billing["acme"].credit == Decimal("10.00")


def test_given_a_blank_reason_then_void_draft_refuses_and_ours_stays_a_draft(
    world: World, monkeypatch: pytest.MonkeyPatch
) -> None:
    _draft(world, monkeypatch)
    with pytest.raises(ValueError, match="a reason must say why the draft is voided"):
        void_draft(world.store, world.gateway, "acme", MAR, at(2, 4), "  ")
    assert world.store.invoices["acme/2026-03"].status is InvoiceStatus.DRAFT


def test_given_stripe_holds_it_open_then_void_draft_voids_it_there_first(
    world: World, monkeypatch: pytest.MonkeyPatch
) -> None:
    _draft(world, monkeypatch)
    march = world.store.invoices["acme/2026-03"]
    world.gateway.invoices[march.invoice_id] = _Invoice("in_x", gateway_request(march, "cus_x"), "open")
    done = void_draft(world.store, world.gateway, "acme", MAR, at(2, 4), "Stripe refuses the customer")
    assert (done.processor, done.invoice.gateway_id) == ("Stripe invoice in_x voided", "in_x")
    assert world.gateway.invoices[march.invoice_id].status == "void"
    assert world.store.invoices["acme/2026-03"].status is InvoiceStatus.VOID


def test_given_no_invoice_for_the_period_then_void_draft_says_so(world: World) -> None:
    world.signup("acme", (at(1), "team"))
    with pytest.raises(LookupError, match="acme has no month-end invoice for 2026-03"):
        void_draft(world.store, world.gateway, "acme", MAR, at(2, 4), "Stripe refuses the customer")
