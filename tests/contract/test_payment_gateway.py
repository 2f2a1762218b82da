"""One contract for every payment gateway: the in-memory fake and the Stripe adapter (its ``StripeClient`` on a recording
``http_client`` whose every request is checked against the SDK's typed params and answered from Stripe's published
fixtures by ``kilo_dev.stripe_emulator``)."""

from __future__ import annotations

from collections.abc import Iterator
from decimal import Decimal

import pytest
import stripe

from kilo_dev.stripe_emulator import EmulatorHTTPClient, StripeEmulator
from kilo_invoice.ports import (
    Customer,
    GatewayLine,
    GatewayMisconfiguredError,
    GatewayRejectedError,
    InvoiceRequest,
    PaymentGateway,
    PaymentInvoice,
)
from kilo_invoice.stripe_adapter import StripePaymentGateway
from tests.payment_fakes import InMemoryPaymentGateway, _Invoice


@pytest.fixture
def http() -> EmulatorHTTPClient:
    """The Stripe adapter's recording HTTP client (its emulator holds what Stripe holds)."""
    return EmulatorHTTPClient()


@pytest.fixture(params=["fake", "stripe"])
def gateway(request: pytest.FixtureRequest, http: EmulatorHTTPClient) -> Iterator[PaymentGateway]:
    if request.param == "fake":
        yield InMemoryPaymentGateway()
        return
    yield StripePaymentGateway(stripe.StripeClient("sk_test_contract", http_client=http, max_network_retries=0))
    _all_parameters_typed(http)


def _all_parameters_typed(http: EmulatorHTTPClient) -> None:
    """Every request the adapter sent passed the SDK's typed params, and every POST carried our idempotency key."""
    assert http.emulator.refused_params == []
    assert http.requests
    for sent in http.requests:
        if sent.method == "post":
            assert sent.headers.get("Idempotency-Key", "").startswith("kilo:"), sent


def _request(gateway: PaymentGateway, invoice_id: str = "inv-acct-1-2026-11", *amounts: str) -> InvoiceRequest:
    customer = gateway.ensure_customer(Customer("acct-1", "ops@example.com", "Acme"))
    lines = [
        GatewayLine("Team fee, December 2026 (in advance)", Decimal("29.00")),
        GatewayLine("Video minutes over the allowance", Decimal("7.20"), Decimal(10000), Decimal("0.00072")),
        GatewayLine("Audio minutes (included)", Decimal("0.00"), Decimal(3000), Decimal("0.00036")),
    ] + [GatewayLine(f"adjustment {index}", Decimal(amount)) for index, amount in enumerate(amounts)]
    return InvoiceRequest(invoice_id, "KB-acct-1-0001", "acct-1", customer, lines)


def test_given_an_account_then_one_customer_however_often_asked(gateway: PaymentGateway) -> None:
    first = gateway.ensure_customer(Customer("acct-1"))
    assert gateway.ensure_customer(Customer("acct-1")) == first
    assert gateway.ensure_customer(Customer("acct-2")) != first


def test_given_an_invoice_when_issued_twice_then_one_invoice_with_our_total(gateway: PaymentGateway) -> None:
    request = _request(gateway)
    first = gateway.issue_invoice(request)
    again = gateway.issue_invoice(request)
    assert again.gateway_id == first.gateway_id
    assert first.total == Decimal("36.20")  # 29.00 + 7.20 + 0.00, worked by hand
    assert first.status == "open"
    assert gateway.find_invoice(request.invoice_id) == again
    assert gateway.find_invoice("inv-unknown") is None


def test_given_a_finalized_invoice_when_credited_then_its_total_drops_once(gateway: PaymentGateway) -> None:
    issued = gateway.issue_invoice(_request(gateway))
    gateway.credit_note(issued.gateway_id, Decimal("1.20"), "late participant_left", "cn-1")
    gateway.credit_note(issued.gateway_id, Decimal("1.20"), "late participant_left", "cn-1")  # same id: no second note
    found = gateway.find_invoice(issued.invoice_id)
    assert found is not None
    assert found.total == Decimal("35.00")
    with pytest.raises(GatewayRejectedError):
        gateway.credit_note(issued.gateway_id, Decimal("99.00"), "more than the invoice", "cn-2")


def test_given_a_paid_invoice_when_credited_out_of_band_then_recorded_once_and_a_reduction_refused(
    gateway: PaymentGateway,
) -> None:
    customer = gateway.ensure_customer(Customer("acct-1"))
    gateway.set_default_payment_method(customer, "pm_card_visa")  # Stripe charges it when the invoice is finalized
    issued = gateway.issue_invoice(_request(gateway))
    if isinstance(gateway, InMemoryPaymentGateway):
        gateway.settle(issued.invoice_id, paid=True)
    with pytest.raises(GatewayRejectedError) as refused:  # paid: its amount due cannot drop any more
        gateway.credit_note(issued.gateway_id, Decimal("3.60"), "late participant_left", "cn-1")
    assert refused.value.status == "paid"  # the caller decides by it (D131)
    first = gateway.credit_note(issued.gateway_id, Decimal("3.60"), "late participant_left", "cn-1/oob", True)
    again = gateway.credit_note(issued.gateway_id, Decimal("3.60"), "late participant_left", "cn-1/oob", True)
    assert again == first  # same id: no second note
    found = gateway.find_invoice(issued.invoice_id)
    assert found is not None
    assert found.status == "paid"
    assert found.total == Decimal("32.60")  # 36.20 - 3.60 credited (by us, outside the processor)
    with pytest.raises(GatewayRejectedError):  # more than it still holds
        gateway.credit_note(issued.gateway_id, Decimal("32.61"), "more than the invoice", "cn-2", True)


def test_given_an_open_invoice_when_credited_out_of_band_then_refused(gateway: PaymentGateway) -> None:
    issued = gateway.issue_invoice(_request(gateway))
    with pytest.raises(GatewayRejectedError):  # unpaid: a note lowers what it asks for, nothing to credit outside
        gateway.credit_note(issued.gateway_id, Decimal("1.20"), "late participant_left", "cn-1", True)


def test_given_an_open_invoice_then_it_can_be_voided_once(gateway: PaymentGateway) -> None:
    issued = gateway.issue_invoice(_request(gateway))
    gateway.void(issued.gateway_id)
    found = gateway.find_invoice(issued.invoice_id)
    assert found is not None
    assert found.status == "void"
    with pytest.raises(GatewayRejectedError):
        gateway.void(issued.gateway_id)


def _left_a_draft(gateway: PaymentGateway, emulator: StripeEmulator) -> str:
    """A draft the processor holds and did not finalize. The Stripe adapter leaves one when the customer's Stripe
    balance would change what is charged (its refusal); the fake holds one as it was put there."""
    request = _request(gateway)
    if isinstance(gateway, InMemoryPaymentGateway):
        gateway.invoices[request.invoice_id] = _Invoice("in_draft", request)
        return "in_draft"
    emulator.objects["customer"][request.customer_id]["balance"] = -500  # a 5.00 credit Stripe would apply
    with pytest.raises(GatewayRejectedError, match="left as a draft"):
        gateway.issue_invoice(request)
    [draft] = emulator.objects["invoice"].values()
    return str(draft["id"])


def test_given_a_draft_then_it_can_be_deleted_once_and_is_found_no_more(
    gateway: PaymentGateway, http: EmulatorHTTPClient
) -> None:
    draft = _left_a_draft(gateway, http.emulator)
    found = gateway.find_invoice("inv-acct-1-2026-11")
    assert found is not None
    assert (found.gateway_id, found.status) == (draft, "draft")
    assert gateway.delete_draft(draft) is True  # held, and deleted
    assert gateway.find_invoice("inv-acct-1-2026-11") is None
    # deleted again (a lost answer's retry): gone is deleted, said by False - not our setting wrong (rh2 1); before,
    # GatewayMisconfiguredError (an id Stripe does not know, D315)
    assert gateway.delete_draft(draft) is False


def test_given_an_open_invoice_then_it_is_not_deleted(gateway: PaymentGateway) -> None:
    issued = gateway.issue_invoice(_request(gateway))
    with pytest.raises(GatewayRejectedError):  # finalized: voided, never deleted
        gateway.delete_draft(issued.gateway_id)
    found = gateway.find_invoice(issued.invoice_id)
    assert found is not None
    assert found.status == "open"


def test_given_an_unpaid_invoice_then_no_refund(gateway: PaymentGateway) -> None:
    issued = gateway.issue_invoice(_request(gateway))
    with pytest.raises(GatewayRejectedError):
        gateway.refund(issued.gateway_id, Decimal("1.00"), "rf-1")


@pytest.mark.parametrize(
    ("reason", "card_suspect"), [("expired_or_canceled_card", True), ("insufficient_funds", False)]
)
def test_given_a_refund_that_failed_then_the_room_is_back_and_the_card_refused_only_for_a_card_reason(
    gateway: PaymentGateway, http: EmulatorHTTPClient, reason: str, card_suspect: bool
) -> None:
    """36.20 paid (29.00 + 7.20 + 0.00) by one card; a refund of 20.00 made, then failed with Stripe's ``reason``:
    its 20.00 is back (36.20 - 20.00 + 20.00 = 36.20 left to refund, 36.21 refused as more). The card's bank
    returning it (a card reason): a new refund is refused - the invoice has no payment by another card - unless
    ``to_failed_card``; our balance short (``insufficient_funds``): the card is not suspect, it is made. Either way
    the request's own failed refund is found again, never made twice (D340 amended, D356, D358)."""
    customer = gateway.ensure_customer(Customer("acct-1"))
    gateway.set_default_payment_method(customer, "pm_card_visa")
    issued = gateway.issue_invoice(_request(gateway))
    if isinstance(gateway, InMemoryPaymentGateway):
        gateway.settle(issued.invoice_id, paid=True)
    made = gateway.refund(issued.gateway_id, Decimal("20.00"), "rf-1")
    if isinstance(gateway, InMemoryPaymentGateway):
        gateway.fail_refund(made, reason)
    else:
        http.emulator.fail_refund(made, reason)
    assert gateway.refund(issued.gateway_id, Decimal("20.00"), "rf-1") == made  # its own: found, not made again
    with pytest.raises(GatewayRejectedError):
        gateway.refund(issued.gateway_id, Decimal("36.21"), "rf-2", to_failed_card=True)
    if card_suspect:
        with pytest.raises(GatewayRejectedError, match="the invoice has no payment by another card"):
            gateway.refund(issued.gateway_id, Decimal("36.20"), "rf-2")
    gateway.refund(issued.gateway_id, Decimal("36.20"), "rf-2", to_failed_card=card_suspect)
    with pytest.raises(GatewayRejectedError):  # all 36.20 refunded again: nothing left
        gateway.refund(issued.gateway_id, Decimal("0.01"), "rf-3", to_failed_card=True)


def test_given_a_saved_card_when_made_the_default_twice_then_the_same_card(gateway: PaymentGateway) -> None:
    customer = gateway.ensure_customer(Customer("acct-1"))
    first = gateway.set_default_payment_method(customer, "pm_card_visa")
    assert gateway.set_default_payment_method(customer, "pm_card_visa") == first
    with pytest.raises(GatewayMisconfiguredError):  # no customer of ours: Stripe's resource_missing (D315)
        gateway.set_default_payment_method("cus_unknown", "pm_card_visa")


def test_given_cards_saved_when_the_latest_is_made_the_default_then_invoices_charge_it(gateway: PaymentGateway) -> None:
    customer = gateway.ensure_customer(Customer("acct-1"))
    assert gateway.default_to_latest_card(customer) is None  # no card saved yet: nothing to make the default
    first = gateway.set_default_payment_method(customer, "pm_card_visa")
    assert gateway.default_to_latest_card(customer) == first
    second = gateway.set_default_payment_method(customer, "pm_card_chargeCustomerFail")
    assert gateway.default_to_latest_card(customer) == second
    assert gateway.default_to_latest_card(customer) == second  # twice: the same card


def test_given_a_customer_then_its_account_is_read_back_and_an_unknown_customer_is_none(
    gateway: PaymentGateway,
) -> None:
    customer = gateway.ensure_customer(Customer("acct-1"))
    other = gateway.ensure_customer(Customer("acct-2"))
    assert gateway.customer_account(customer) == "acct-1"
    assert gateway.customer_account(other) == "acct-2"
    assert gateway.customer_account("cus_unknown") is None  # not ours (Stripe: resource_missing)


def test_given_a_paid_invoice_then_its_payment_names_it_and_it_names_its_payment(gateway: PaymentGateway) -> None:
    customer = gateway.ensure_customer(Customer("acct-1"))
    gateway.set_default_payment_method(customer, "pm_card_visa")  # Stripe charges it when the invoice is finalized
    issued = gateway.issue_invoice(_request(gateway))
    if isinstance(gateway, InMemoryPaymentGateway):
        gateway.settle(issued.invoice_id, paid=True)  # the fake's processor side of the same charge
    refs = gateway.payment_refs(issued.gateway_id)
    assert len(refs) == 1
    assert refs[0].startswith("pi_")  # Stripe surfaces the payment intent of a card payment, not its charge
    # the invoice it paid and the invoice of ours its metadata names (read from the Stripe invoice, D383 amended)
    assert gateway.invoice_for_payment(refs[0]) == PaymentInvoice(issued.gateway_id, issued.invoice_id)
    assert gateway.invoice_for_payment("pi_NotOurs") is None
    other = gateway.ensure_customer(Customer("acct-2"))  # no card: the invoice stays open, nothing paid
    unpaid = gateway.issue_invoice(
        InvoiceRequest("inv-acct-2-2026-11", "KB-acct-2-0001", "acct-2", other, [GatewayLine("fee", Decimal("29.00"))])
    )
    assert unpaid.status == "open"
    assert gateway.payment_refs(unpaid.gateway_id) == ()


def test_given_an_invoice_below_the_minimum_charge_then_refused_and_nothing_created(gateway: PaymentGateway) -> None:
    customer = gateway.ensure_customer(Customer("acct-1"))
    lines = [GatewayLine("Audio minutes over the allowance", Decimal("0.36"), Decimal(1000), Decimal("0.00036"))]
    with pytest.raises(GatewayRejectedError, match="minimum"):  # Stripe would mark it paid and not charge it
        gateway.issue_invoice(InvoiceRequest("inv-acct-1-2026-03", "KB-acct-1-0001", "acct-1", customer, lines))
    assert gateway.find_invoice("inv-acct-1-2026-03") is None
    at_minimum = [GatewayLine("Audio minutes over the allowance", Decimal("0.50"))]
    issued = gateway.issue_invoice(
        InvoiceRequest("inv-acct-1-2026-04", "KB-acct-1-0002", "acct-1", customer, at_minimum)
    )
    assert issued.total == Decimal("0.50")


def test_given_a_voided_invoice_when_credited_then_refused_saying_it_is_void(gateway: PaymentGateway) -> None:
    issued = gateway.issue_invoice(_request(gateway))
    gateway.void(issued.gateway_id)
    with pytest.raises(GatewayRejectedError) as refused:
        gateway.credit_note(issued.gateway_id, Decimal("1.20"), "late participant_left", "cn-1")
    assert refused.value.status == "void"


def test_given_an_invoice_revised_in_stripe_when_credited_then_refused_naming_its_revision(
    gateway: PaymentGateway, http: EmulatorHTTPClient
) -> None:
    """A revision voids the original naming it (``latest_revision``); the refusal carries it, a plain void none
    (D343 amended, review 2: the caller waits only for a revision)."""
    revised, plain = gateway.issue_invoice(_request(gateway)), gateway.issue_invoice(_request(gateway, "inv-2"))
    if isinstance(gateway, InMemoryPaymentGateway):
        gateway.revise(revised.gateway_id, "in_REV")
    else:
        http.emulator.revise(revised.gateway_id, "in_REV")
    gateway.void(plain.gateway_id)
    with pytest.raises(GatewayRejectedError) as refused:
        gateway.credit_note(revised.gateway_id, Decimal("1.20"), "late participant_left", "cn-1")
    assert (refused.value.status, refused.value.revision) == ("void", "in_REV")
    with pytest.raises(GatewayRejectedError) as refused:
        gateway.credit_note(plain.gateway_id, Decimal("1.20"), "late participant_left", "cn-2")
    assert (refused.value.status, refused.value.revision) == ("void", None)


def test_given_an_erased_account_when_its_details_are_forgotten_twice_then_the_customer_still_bills_the_account(
    gateway: PaymentGateway,
) -> None:
    customer = gateway.ensure_customer(Customer("acct-1", "ops@example.com", "Acme"))
    gateway.forget_details(customer)
    gateway.forget_details(customer)  # idempotent
    assert gateway.customer_account(customer) == "acct-1"
    assert gateway.ensure_customer(Customer("acct-1")) == customer
    issued = gateway.issue_invoice(_request(gateway, "inv-acct-1-2026-12"))
    assert issued.total == Decimal("36.20")


def test_given_part_refunded_when_all_that_is_left_is_refunded_then_exactly_the_rest_once(
    gateway: PaymentGateway, http: EmulatorHTTPClient
) -> None:
    """36.20 paid, 10.00 refunded: ``amount`` None refunds the 26.20 left (a taxed invoice's "the rest", D384);
    run again with its id, nothing more; a new request for the rest is refused - nothing is left."""
    customer = gateway.ensure_customer(Customer("acct-1"))
    gateway.set_default_payment_method(customer, "pm_card_visa")
    issued = gateway.issue_invoice(_request(gateway))
    if isinstance(gateway, InMemoryPaymentGateway):
        gateway.settle(issued.invoice_id, paid=True)
    gateway.refund(issued.gateway_id, Decimal("10.00"), "rf-1")
    made = gateway.refund(issued.gateway_id, None, "rf-2")
    assert gateway.refund(issued.gateway_id, None, "rf-2") == made  # its own: found, not made again
    if isinstance(gateway, InMemoryPaymentGateway):
        amounts = [amount for _, amount in gateway.refunds.values()]
    else:
        amounts = [Decimal(r["amount"]).scaleb(-2) for r in http.emulator.objects["refund"].values()]
    assert sorted(amounts) == [Decimal("10.00"), Decimal("26.20")]
    with pytest.raises(GatewayRejectedError):
        gateway.refund(issued.gateway_id, None, "rf-3")
