"""The Stripe adapter at the HTTP boundary: ``StripeClient`` on the emulator's recording ``http_client`` (every request
checked against the SDK's typed params, answered from Stripe's published fixtures), plus the typed-params checker."""

from __future__ import annotations

import inspect
import re
from datetime import UTC, datetime
from decimal import ROUND_HALF_EVEN, ROUND_HALF_UP, Decimal
from pathlib import Path

import pytest
import stripe
from hypothesis import given
from hypothesis import strategies as st

from kilo_billing.invoicing import BillingMethod, InvoiceRecord, Line
from kilo_dev.stripe_emulator import EmulatorHTTPClient
from kilo_dev.stripe_params import ROUTES, check_request
from kilo_invoice.logic import gateway_request
from kilo_invoice.ports import (
    Customer,
    GatewayLine,
    GatewayRejectedError,
    GatewayUnavailableError,
    InvoiceRequest,
)
from kilo_invoice.stripe_adapter import StripePaymentGateway, priced_line


def _gateway(retries: int = 0) -> tuple[StripePaymentGateway, EmulatorHTTPClient]:
    http = EmulatorHTTPClient()
    client = stripe.StripeClient("sk_test_unit", http_client=http, max_network_retries=retries)
    return StripePaymentGateway(client), http


def _request(customer: str, invoice_id: str = "inv-acct-1-2026-11") -> InvoiceRequest:
    lines = [
        GatewayLine("Team fee, December 2026", Decimal("29.00")),
        GatewayLine("Video minutes", Decimal("7.20"), Decimal(10000), Decimal("0.00072")),
        GatewayLine("Audio minutes (included)", Decimal("0.00"), Decimal(3000), Decimal("0.00036")),
        GatewayLine("Messages", Decimal("0.01"), Decimal(7), Decimal("0.0015")),  # 1.05 cents: nearest is 1
        GatewayLine("Late usage credit", Decimal("-1.20"), metadata={"kind": "adjustment"}),
    ]
    return InvoiceRequest(invoice_id, "KB-acct-1-0001", "acct-1", customer, lines)


def _stripe_half_up(cents: Decimal) -> Decimal:
    return cents.quantize(Decimal(1), ROUND_HALF_UP)


def _stripe_half_even(cents: Decimal) -> Decimal:
    return cents.quantize(Decimal(1), ROUND_HALF_EVEN)


def _line_amounts_stripe_computes(http: EmulatorHTTPClient) -> list[Decimal]:
    """Stripe's documented rule, written here: an amount line is its ``amount``; a price line is
    ``unit_amount_decimal x quantity`` rounded to the nearest cent. Ties are unspecified by Stripe's docs, so both
    readings must agree for each line sent (else the figure would depend on Stripe's undocumented choice)."""
    (sent,) = [r for r in http.requests if r.path.endswith("/add_lines")]
    amounts = []
    for line in sent.params["lines"]:
        if "amount" in line:
            amounts.append(Decimal(line["amount"]))
            continue
        exact = Decimal(line["price_data"]["unit_amount_decimal"]) * Decimal(line["quantity_decimal"])
        assert _stripe_half_up(exact) == _stripe_half_even(exact), f"a tie sent as a price: {line}"
        amounts.append(_stripe_half_up(exact))
    return amounts


def test_given_our_lines_when_issued_then_stripe_computes_each_of_our_amounts_to_the_cent() -> None:
    gateway, http = _gateway()
    request = _request(gateway.ensure_customer(Customer("acct-1")))
    issued = gateway.issue_invoice(request)
    assert _line_amounts_stripe_computes(http) == [Decimal(2900), Decimal(720), Decimal(0), Decimal(1), Decimal(-120)]
    assert issued.total == Decimal("35.01")  # 29.00 + 7.20 + 0.00 + 0.01 - 1.20, by hand
    (sent,) = [r for r in http.requests if r.path.endswith("/add_lines")]
    video, included = sent.params["lines"][1], sent.params["lines"][2]
    assert video["price_data"]["unit_amount_decimal"] == "0.072"  # cents per minute
    assert video["quantity_decimal"] == "10000"
    assert included["amount"] == "0"
    assert "3000 x $0.00036" in included["description"]
    assert sent.params["lines"][4]["metadata"] == {
        "kind": "adjustment",
        "kilo_invoice_id": request.invoice_id,
        "kilo_line": "4",
    }


def test_given_usage_lines_then_stripe_shows_what_was_used_and_included_beside_the_billed_quantity() -> None:
    """The policy shows usage covered by the allowance "so customers see what they used": Stripe's invoice line
    of a covered meter read quantity 0 with nothing else (our receipt showed the same)."""
    period = (datetime(2026, 10, 1, tzinfo=UTC), datetime(2026, 11, 1, tzinfo=UTC))
    lines = (
        Line("fee", "Team, monthly fee", Decimal("29.00"), "2026-10", tier="team", quantity=Decimal(1)),
        # 40,000 of 50,000 video minutes: 0 billable, 0.00
        Line(
            "usage",
            "Video (participant-minute) on Team, 2026-10",
            Decimal("0.00"),
            "2026-10",
            "video",
            "team",
            Decimal(0),
            Decimal("0.00072"),
            Decimal(40000),
            Decimal(50000),
            *period,
        ),
        # 130,000 of 100,000 audio minutes: 30,000 x 0.00036 = 10.80
        Line(
            "usage",
            "Audio (participant-minute) on Team, 2026-10",
            Decimal("10.80"),
            "2026-10",
            "audio",
            "team",
            Decimal(30000),
            Decimal("0.00036"),
            Decimal(130000),
            Decimal(100000),
            *period,
        ),
        # Enterprise: unlimited
        Line(
            "usage",
            "Messages (message) on Enterprise, 2026-10",
            Decimal("0.00"),
            "2026-10",
            "messages",
            "enterprise",
            Decimal(0),
            Decimal("0.00012"),
            Decimal(7000),
            None,
            *period,
        ),
    )
    record = InvoiceRecord("acct-1/2026-10", "acct-1", "2026-10", "KB-acct-1-0001", 1, BillingMethod.CARD, lines)
    gateway, http = _gateway()
    gateway.issue_invoice(gateway_request(record, gateway.ensure_customer(Customer("acct-1"))))
    (sent,) = [r for r in http.requests if r.path.endswith("/add_lines")]
    assert [line["description"] for line in sent.params["lines"]] == [
        "Team, monthly fee",
        "Video (participant-minute) on Team, 2026-10 (40000 used, 50000 included)",
        "Audio (participant-minute) on Team, 2026-10 (130000 used, 100000 included)",
        "Messages (message) on Enterprise, 2026-10 (7000 used, unlimited)",
    ]
    # what is charged stays the billable quantity: 0, 30,000 at 0.036 cents = 1,080 cents, 0
    assert [line.get("quantity_decimal") for line in sent.params["lines"][1:]] == ["0", "30000", "0"]
    assert _line_amounts_stripe_computes(http) == [Decimal(2900), Decimal(0), Decimal(1080), Decimal(0)]


@given(
    quantity=st.integers(min_value=0, max_value=10**9) | st.decimals("0", "100000", places=2),
    unit_price=st.decimals("0", "50", places=6),
)
def test_given_any_quantity_and_unit_price_then_the_line_sent_reproduces_our_half_up_amount(
    quantity: Decimal | int, unit_price: Decimal
) -> None:
    ours = (Decimal(quantity) * unit_price).quantize(Decimal("0.01"), ROUND_HALF_UP)  # D2, written out
    line = GatewayLine("usage", ours, Decimal(quantity), unit_price)
    priced = priced_line(line)
    if priced is None:
        return  # sent as the amount itself, which is ours by construction (checked in the test above)
    unit_cents, sent_quantity = priced
    exact = unit_cents * sent_quantity
    assert _stripe_half_up(exact) == _stripe_half_even(exact) == ours * 100


def test_given_a_tie_then_the_amount_is_sent_not_the_price() -> None:
    assert priced_line(GatewayLine("m", Decimal("0.01"), Decimal(10), Decimal("0.00125"))) == (
        Decimal("0.125"),
        Decimal(10),
    )
    assert priced_line(GatewayLine("m", Decimal("0.02"), Decimal(1), Decimal("0.015"))) is None  # 1.5 cents: a tie
    assert priced_line(GatewayLine("m", Decimal("0.02"), Decimal(3), Decimal("0.005"))) is None  # 1.5 cents: a tie
    assert priced_line(GatewayLine("m", Decimal("0.04"), Decimal(7), Decimal("0.005"))) is None  # 3.5 cents: a tie
    assert priced_line(GatewayLine("m", Decimal("0.03"), Decimal(5), Decimal("0.0055"))) == (
        Decimal("0.55"),
        Decimal(5),
    )


def test_given_every_post_then_it_carries_our_key_derived_from_id_and_step() -> None:
    gateway, http = _gateway()
    customer = gateway.ensure_customer(Customer("acct-1", "ops@example.com"))
    issued = gateway.issue_invoice(_request(customer))
    gateway.credit_note(issued.gateway_id, Decimal("1.00"), "correction", "cn-1")
    keys = [(r.path, r.headers["Idempotency-Key"]) for r in http.requests if r.method == "post"]
    assert keys[:6] == [
        ("/v1/customers", "kilo:acct-1:customer"),
        (f"/v1/customers/{customer}", keys[1][1]),
        ("/v1/invoices", "kilo:inv-acct-1-2026-11:create"),
        (f"/v1/invoices/{issued.gateway_id}/add_lines", "kilo:inv-acct-1-2026-11:lines"),
        (f"/v1/invoices/{issued.gateway_id}/finalize", "kilo:inv-acct-1-2026-11:finalize"),
        ("/v1/credit_notes", "kilo:cn-1:credit_note"),
    ]
    # the details update: a key of ours per update sent, never derived from the details (D172)
    assert keys[1][1].startswith(f"kilo:{customer}:customer-details:")
    assert http.emulator.refused_params == []


def test_given_a_429_then_unavailable_and_the_retry_succeeds_with_the_same_key() -> None:
    gateway, http = _gateway()
    customer = gateway.ensure_customer(Customer("acct-1"))
    request = _request(customer)
    http.faults = ["pass", 429]  # the list passes, the create is rate limited
    with pytest.raises(GatewayUnavailableError):
        gateway.issue_invoice(request)
    issued = gateway.issue_invoice(request)
    creates = [r for r in http.requests if r.method == "post" and r.path == "/v1/invoices"]
    assert [r.status for r in creates] == [429, 200]
    assert creates[0].headers["Idempotency-Key"] == creates[1].headers["Idempotency-Key"]
    assert len(http.emulator.objects["invoice"]) == 1
    assert issued.status == "open"


def test_given_a_500_then_the_sdk_retries_with_the_same_key() -> None:
    gateway, http = _gateway(retries=2)
    customer = gateway.ensure_customer(Customer("acct-1"))
    http.faults = ["pass", 500]
    issued = gateway.issue_invoice(_request(customer))
    creates = [r for r in http.requests if r.path == "/v1/invoices" and r.method == "post"]
    assert [r.status for r in creates] == [500, 200]
    assert len({r.headers["Idempotency-Key"] for r in creates}) == 1
    assert issued.total == Decimal("35.01")


def test_given_a_timeout_after_stripe_acted_then_a_rerun_makes_no_second_invoice() -> None:
    gateway, http = _gateway()
    customer = gateway.ensure_customer(Customer("acct-1"))
    request = _request(customer)
    http.faults = ["pass", "lost"]  # the invoice is created, the answer never comes
    with pytest.raises(GatewayUnavailableError):
        gateway.issue_invoice(request)
    http.faults = ["timeout"]
    with pytest.raises(GatewayUnavailableError):
        gateway.issue_invoice(request)
    issued = gateway.issue_invoice(request)
    assert len(http.emulator.objects["invoice"]) == 1
    assert issued.total == Decimal("35.01")


def test_given_a_crash_after_the_draft_and_expired_keys_then_the_rerun_finds_it_by_metadata() -> None:
    gateway, http = _gateway()
    customer = gateway.ensure_customer(Customer("acct-1"))
    request = _request(customer)
    http.faults = ["pass", "pass", "lost"]  # list, create, then the lines are added but the answer is lost
    with pytest.raises(GatewayUnavailableError):
        gateway.issue_invoice(request)
    http.emulator.expire_idempotency_keys()  # a day later
    rerun, rerun_http = StripePaymentGateway(stripe.StripeClient("sk_test_unit", http_client=http)), http
    issued = rerun.issue_invoice(request)
    (invoice,) = http.emulator.objects["invoice"].values()
    assert issued.gateway_id == invoice["id"]
    assert len(invoice["lines"]["data"]) == len(request.lines)  # lines not added twice
    assert issued.status == "open"
    assert rerun.issue_invoice(request) == issued
    http.emulator.expire_idempotency_keys()
    assert rerun.ensure_customer(Customer("acct-1")) == customer  # found by Search, not created again
    assert len(rerun_http.emulator.objects["customer"]) == 1


def test_given_a_paid_invoice_then_partial_refunds_once_per_refund_id() -> None:
    gateway, http = _gateway()
    customer = gateway.ensure_customer(Customer("acct-1"))
    gateway.set_default_payment_method(customer, "pm_card_visa")
    issued = gateway.issue_invoice(_request(customer))
    found = gateway.find_invoice(issued.invoice_id)
    assert found is not None
    assert found.status == "paid"
    first = gateway.refund(issued.gateway_id, Decimal("5.00"), "rf-1")
    http.emulator.expire_idempotency_keys()
    assert gateway.refund(issued.gateway_id, Decimal("5.00"), "rf-1") == first  # found by metadata
    gateway.refund(issued.gateway_id, Decimal("30.01"), "rf-2")
    with pytest.raises(GatewayRejectedError):
        gateway.refund(issued.gateway_id, Decimal("0.01"), "rf-3")  # 35.01 already refunded
    assert [e["type"] for e in http.emulator.events][:2] == ["invoice.finalized", "invoice.paid"]


def test_given_a_declined_card_then_the_invoice_stays_open_and_payment_failed_is_sent() -> None:
    gateway, http = _gateway()
    customer = gateway.ensure_customer(Customer("acct-1"))
    gateway.set_default_payment_method(customer, "pm_card_chargeCustomerFail")
    issued = gateway.issue_invoice(_request(customer))
    assert issued.status == "open"
    assert [e["type"] for e in http.emulator.events] == ["invoice.finalized", "invoice.payment_failed"]


def test_given_stripe_totals_differ_from_ours_then_the_draft_is_not_finalized() -> None:
    gateway, http = _gateway()
    customer = gateway.ensure_customer(Customer("acct-1"))
    request = _request(customer)
    wrong = InvoiceRequest(
        request.invoice_id,
        request.number,
        request.account_id,
        customer,
        [GatewayLine("Video", Decimal("7.21"), Decimal(10000), Decimal("0.00072"))],
    )
    invoice = stripe.StripeClient("sk_test_unit", http_client=http).v1.invoices.create(
        {"customer": customer, "auto_advance": False, "metadata": {"kilo_invoice_id": request.invoice_id}},
        {"idempotency_key": "test:preexisting"},
    )
    stripe.StripeClient("sk_test_unit", http_client=http).v1.invoices.add_lines(
        invoice.id, {"lines": [{"amount": 999, "description": "not ours"}]}, {"idempotency_key": "test:lines"}
    )
    with pytest.raises(GatewayRejectedError, match=r"9\.99, ours 7\.21"):
        gateway.issue_invoice(wrong)
    assert http.emulator.objects["invoice"][invoice.id]["status"] == "draft"


def test_given_an_unknown_parameter_or_a_wrong_type_then_the_checker_refuses_it() -> None:
    *_, problems = check_request("post", "/v1/invoices", "customer=cus_1&colour=red&auto_advance=yes")
    assert problems == [
        "colour: unknown parameter (not in InvoiceCreateParams)",
        "auto_advance: 'yes' is not a boolean",
    ]
    *_, problems = check_request("post", "/v1/invoices/in_1/add_lines", "lines[0][amount]=1.5")
    assert problems == ["lines[0][amount]: '1.5' is not a int"]
    *_, problems = check_request("post", "/v1/credit_notes", "memo=x")
    assert problems == ["invoice: missing required parameter (CreditNoteCreateParams)"]


def test_given_the_route_table_then_each_entry_is_the_sdk_services_own_method_path_and_params() -> None:
    sources = "\n".join(
        path.read_text(encoding="utf-8") for path in Path(inspect.getfile(stripe)).parent.rglob("*_service.py")
    )
    methods = re.split(r"\n    (?:async )?def ", sources)
    for route in ROUTES:
        literal = f'"{route.template}"'
        matching = [
            m
            for m in methods
            if f'"{route.method}"' in m
            and literal in m
            and f'"{route.params.__name__}"' in m
            and "_async" not in m[:60]
        ]
        assert matching, (
            f"no SDK service method sends {route.method.upper()} {route.template} with {route.params.__name__}"
        )


def _charged(http: EmulatorHTTPClient, gateway_id: str) -> int:
    """What Stripe collected for an invoice, in cents: its InvoicePayments' amounts paid (the charge it made)."""
    payments = http.emulator.objects.get("invoice_payment", {}).values()
    return sum(int(p["amount_paid"]) for p in payments if p["invoice"] == gateway_id and p["status"] == "paid")


def test_given_a_paid_invoice_credited_then_the_next_invoice_is_charged_exactly_our_total() -> None:
    """A credit note on a paid invoice must not credit the customer's Stripe balance: Stripe applies a balance to
    the next invoice it finalizes, and would charge less than our record (the stand-in follows that rule)."""
    gateway, http = _gateway()
    customer = gateway.ensure_customer(Customer("acct-1"))
    gateway.set_default_payment_method(customer, "pm_card_visa")
    march = gateway.issue_invoice(_request(customer, "acct-1/2026-03"))  # charged at once by the saved card
    assert _charged(http, march.gateway_id) == 3501  # 29.00 + 7.20 + 0.00 + 0.01 - 1.20
    gateway.credit_note(march.gateway_id, Decimal("5.00"), "late participant_left", "cn-1", out_of_band=True)
    (note,) = http.emulator.objects["credit_note"].values()
    assert note["amount"] == 500
    assert http.emulator.objects["customer"][customer]["balance"] == 0
    april = gateway.issue_invoice(_request(customer, "acct-1/2026-04"))
    assert http.emulator.objects["invoice"][april.gateway_id]["status"] == "paid"
    assert _charged(http, april.gateway_id) == 3501  # our total to the cent: no balance applied
    assert april.total == Decimal("35.01")
    assert http.emulator.refused_params == []


def test_given_a_customer_balance_in_stripe_then_the_invoice_is_left_a_draft_not_charged_otherwise() -> None:
    """A balance set outside our credit notes (the Dashboard, an older credit note) would be applied at
    finalization: the adapter refuses to finalize rather than let Stripe charge other than our invoice."""
    gateway, http = _gateway()
    customer = gateway.ensure_customer(Customer("acct-1"))
    gateway.set_default_payment_method(customer, "pm_card_visa")
    http.emulator.objects["customer"][customer]["balance"] = -500  # a 5.00 credit, granted in the Dashboard
    with pytest.raises(GatewayRejectedError, match=r"balance of -5\.00 .* left as a draft"):
        gateway.issue_invoice(_request(customer, "acct-1/2026-03"))
    (invoice,) = http.emulator.objects["invoice"].values()
    assert invoice["status"] == "draft"
    assert not [r for r in http.requests if r.path.endswith("/finalize")]


def test_given_an_invoice_paid_in_two_payments_then_a_refund_takes_from_each_in_turn_once() -> None:
    """35.01 paid as 20.00 + 15.01: a refund of 25.00 is 20.00 from the first payment and 5.00 from the second (a
    refund is made on one payment intent, and none can give back more than it received); a rerun after Stripe's
    keys expired refunds nothing more."""
    gateway, http = _gateway()
    customer = gateway.ensure_customer(Customer("acct-1"))
    gateway.set_default_payment_method(customer, "pm_card_visa")
    issued = gateway.issue_invoice(_request(customer))
    first, second = http.emulator.split_payment(issued.gateway_id, 2000)
    assert gateway.payment_refs(issued.gateway_id) == (first, second)
    made = gateway.refund(issued.gateway_id, Decimal("25.00"), "rf-1")
    refunds = http.emulator.objects["refund"].values()
    assert sorted((r["payment_intent"], r["amount"]) for r in refunds) == sorted([(first, 2000), (second, 500)])
    assert made == ",".join(r["id"] for r in refunds)
    http.emulator.expire_idempotency_keys()
    assert gateway.refund(issued.gateway_id, Decimal("25.00"), "rf-1") == made  # found by metadata on both
    assert len(http.emulator.objects["refund"]) == 2
    charges = {c["payment_intent"]: c["amount_refunded"] for c in http.emulator.objects["charge"].values()}
    assert charges == {first: 2000, second: 500}
    with pytest.raises(GatewayRejectedError, match=r"10\.02 more .* 10\.01 of its payments is left"):
        gateway.refund(issued.gateway_id, Decimal("10.02"), "rf-2")
    assert http.emulator.refused_params == []


def test_given_an_invoice_paid_in_two_payments_when_the_rest_is_refunded_then_each_gives_back_what_is_left() -> None:
    """35.01 paid as 20.00 + 15.01, 5.00 refunded from the first: all that is left (``amount`` None, a taxed
    invoice's "the rest", D384) is 15.00 of the first and 15.01 of the second - 30.01, every parameter of the
    SDK's typed ``RefundCreateParams``; a rerun after Stripe's keys expired makes nothing more."""
    gateway, http = _gateway()
    customer = gateway.ensure_customer(Customer("acct-1"))
    gateway.set_default_payment_method(customer, "pm_card_visa")
    issued = gateway.issue_invoice(_request(customer))
    first, second = http.emulator.split_payment(issued.gateway_id, 2000)
    gateway.refund(issued.gateway_id, Decimal("5.00"), "rf-1")
    made = gateway.refund(issued.gateway_id, None, "rf-2")
    refunds = [(r["payment_intent"], r["amount"]) for r in http.emulator.objects["refund"].values()]
    assert sorted(refunds) == sorted([(first, 500), (first, 1500), (second, 1501)])
    http.emulator.expire_idempotency_keys()
    assert gateway.refund(issued.gateway_id, None, "rf-2") == made
    assert len(http.emulator.objects["refund"]) == 3
    assert http.emulator.refused_params == []
    sent = [r for r in http.requests if r.method == "post" and r.path == "/v1/refunds"]
    assert [r.params["amount"] for r in sent] == ["500", "1500", "1501"]  # form-encoded


def test_given_an_invoice_split_on_another_card_then_its_second_charge_names_that_card_else_the_first() -> None:
    """The emulator's ``split_payment``: by default payment 2's charge is card 1's (the same payment method and
    fingerprint); with ``card`` it is that card, attached to the customer, with its own fingerprint."""
    gateway, http = _gateway()
    customer = gateway.ensure_customer(Customer("acct-1"))
    gateway.set_default_payment_method(customer, "pm_card_visa")
    same = gateway.issue_invoice(_request(customer))
    other = gateway.issue_invoice(_request(customer, "inv-acct-1-2026-12"))
    pairs = []
    for issued, card in ((same, None), (other, "pm_card_mastercard")):
        first, second = http.emulator.split_payment(issued.gateway_id, 2000, card)
        charges = {c["payment_intent"]: c for c in http.emulator.objects["charge"].values()}
        pairs.append([charges[i]["payment_method_details"]["card"]["fingerprint"] for i in (first, second)])
        methods = {charges[i]["payment_method"] for i in (first, second)}
        assert len(methods) == (1 if card is None else 2)
    visa = pairs[0][0]
    assert pairs == [[visa, visa], [visa, "EmuMastercard4444"]]


def _paid_twice(default_second: str) -> tuple[StripePaymentGateway, EmulatorHTTPClient, str, str]:
    """Two invoices of one customer, 35.01 each (29.00 + 7.20 + 0.00 + 0.01 - 1.20), the first paid by the visa, the
    second by ``default_second`` (the customer's default when it is issued). A refund of 10.00 of the first is
    returned by the visa's bank (``expired_or_canceled_card``)."""
    gateway, http = _gateway()
    customer = gateway.ensure_customer(Customer("acct-1"))
    gateway.set_default_payment_method(customer, "pm_card_visa")
    first = gateway.issue_invoice(_request(customer))
    gateway.set_default_payment_method(customer, default_second)
    second = gateway.issue_invoice(_request(customer, "inv-acct-1-2026-12"))
    returned = gateway.refund(first.gateway_id, Decimal("10.00"), "rf-1")
    http.emulator.fail_refund(returned)
    return gateway, http, first.gateway_id, second.gateway_id


def test_given_a_cards_bank_returned_a_refund_on_another_invoice_when_one_it_paid_is_refunded_then_refused() -> None:
    """The visa's bank returned a refund of the customer's first invoice; the second invoice, paid by the same visa,
    is refunded 10.00: refused before anything is made (the card is suspect for this customer, D355), unless
    ``to_failed_card``: then 1000 cents on it. Before: sent (the rule read only the invoice's own payments)."""
    gateway, http, _first, second = _paid_twice("pm_card_visa")
    with pytest.raises(GatewayRejectedError, match="would go back to a card whose bank returned a refund"):
        gateway.refund(second, Decimal("10.00"), "rf-2")
    assert [r["amount"] for r in http.emulator.objects["refund"].values()] == [1000]  # only the returned one
    gateway.refund(second, Decimal("10.00"), "rf-2", to_failed_card=True)
    assert [r["amount"] for r in http.emulator.objects["refund"].values()] == [1000, 1000]


def test_given_a_cards_bank_returned_a_refund_on_another_invoice_when_one_another_card_paid_is_refunded_then_made() -> (
    None
):
    """The same, the second invoice paid by the mastercard: its 10.00 is refunded there, no flag needed."""
    gateway, http, _first, second = _paid_twice("pm_card_mastercard")
    gateway.refund(second, Decimal("10.00"), "rf-2")
    assert [r["amount"] for r in http.emulator.objects["refund"].values()] == [1000, 1000]


def test_given_a_paid_invoice_when_credited_then_out_of_band_never_to_stripes_balance_nor_a_refund() -> None:
    gateway, http = _gateway()
    customer = gateway.ensure_customer(Customer("acct-1"))
    gateway.set_default_payment_method(customer, "pm_card_visa")
    issued = gateway.issue_invoice(_request(customer))
    gateway.credit_note(issued.gateway_id, Decimal("3.60"), "late usage", "cn-1/out-of-band", out_of_band=True)
    (sent,) = [r for r in http.requests if r.method == "post" and r.path == "/v1/credit_notes"]
    assert sent.params["out_of_band_amount"] == "360"
    assert "credit_amount" not in sent.params  # Stripe holds no balance of ours (D126)
    assert "refund_amount" not in sent.params
    assert sent.headers["Idempotency-Key"] == "kilo:cn-1/out-of-band:credit_note"
    assert http.emulator.refused_params == []


def test_given_an_erased_account_then_its_customer_s_contact_details_are_unset_once_and_the_customer_kept() -> None:
    """D189: Stripe unsets a field given as an empty string; the request is checked against the SDK's typed
    params (``CustomerUpdateParams``) by the emulator."""
    gateway, http = _gateway()
    customer = gateway.ensure_customer(Customer("acct-1", "ops@example.com", "Ops Ltd"))
    client = stripe.StripeClient("sk_test_unit", http_client=http, max_network_retries=0)
    # set in the Billing Portal, say
    client.v1.customers.update(customer, {"phone": "+15555550100", "address": {"line1": "1 Main St", "city": "Metz"}})
    gateway.forget_details(customer)
    (sent,) = [r for r in http.requests if r.method == "post" and r.path == f"/v1/customers/{customer}"][-1:]
    assert sent.params == {"email": "", "name": "", "phone": "", "address": ""}
    assert sent.headers["Idempotency-Key"].startswith(f"kilo:{customer}:customer-details:")
    held = client.v1.customers.retrieve(customer)
    assert (held.email, held.name, held.phone, held.address) == (None, None, None, None)
    assert held.metadata.to_dict() == {"kilo_account_id": "acct-1"}  # still found by the account id
    posts = len([r for r in http.requests if r.method == "post"])
    gateway.forget_details(customer)  # again: nothing left to unset, no request
    assert len([r for r in http.requests if r.method == "post"]) == posts
    assert gateway.customer_account(customer) == "acct-1"
    assert http.emulator.refused_params == []


ODD_AMOUNTS = [
    pytest.param(Decimal("1e-99999999"), r"^1E-99999999 is not whole cents$", id="a tiny exponent"),
    pytest.param(Decimal("12.345"), r"^12\.345 is not whole cents$", id="a tenth of a cent"),
    pytest.param(Decimal("-0.005"), r"^-0\.005 is not whole cents$", id="negative, half a cent"),
    pytest.param(
        Decimal("123456789012345678901234567.89"),  # 29 digits in cents: x 100 in Decimal's 28 digits rounds it
        r"^123456789012345678901234567\.89 is too large for an amount \(more than 28 digits in cents\)$",
        id="more than 28 digits",
    ),
]


@pytest.mark.parametrize(("amount", "error"), ODD_AMOUNTS)
def test_given_an_amount_that_is_no_whole_cents_amount_then_the_adapter_refuses_it_as_money_does_and_posts_nothing(
    amount: Decimal, error: str
) -> None:
    """The adapter's cents are ``money.in_cents`` (D266, D270, D278: one rule for whole cents and their size): a
    refund, a credit note and an invoice line each refuse the amount with money's ValueError, before any POST."""
    gateway, http = _gateway()
    customer = gateway.ensure_customer(Customer("acct-1"))
    gateway.set_default_payment_method(customer, "pm_card_visa")
    issued = gateway.issue_invoice(_request(customer))
    posts = len([r for r in http.requests if r.method == "post"])
    with pytest.raises(ValueError, match=error):
        gateway.refund(issued.gateway_id, amount, "rf-odd")
    with pytest.raises(ValueError, match=error):
        gateway.credit_note(issued.gateway_id, amount, "late usage", "cn-odd/out-of-band", out_of_band=True)
    odd_line = InvoiceRequest(
        "inv-acct-1-2026-12", "KB-acct-1-0002", "acct-1", customer, [GatewayLine("Adjustment", amount)]
    )
    with pytest.raises(ValueError, match=error):
        gateway.issue_invoice(odd_line)
    sent = [r.path for r in http.requests if r.method == "post"][posts:]
    assert not [path for path in sent if path.startswith(("/v1/refunds", "/v1/credit_notes"))]
    assert "/v1/invoices" not in sent  # the invoice's create: no draft left behind for an amount we refuse
    assert not [path for path in sent if path.startswith("/v1/invoices/")]  # no lines added, nothing finalized


def test_given_whole_cents_of_either_sign_then_the_adapter_sends_them_as_integer_cents() -> None:
    """Negative amounts are whole cents too (a late usage credit line): -1.20 goes as -120, 1E+1 as 1000."""
    gateway, http = _gateway()
    customer = gateway.ensure_customer(Customer("acct-1"))
    lines = [GatewayLine("Team fee", Decimal("1E+1")), GatewayLine("Late usage credit", Decimal("-1.20"))]
    gateway.issue_invoice(InvoiceRequest("inv-acct-1-2026-12", "KB-acct-1-0002", "acct-1", customer, lines))
    (sent,) = [r for r in http.requests if r.path.endswith("/add_lines")]
    assert [line["amount"] for line in sent.params["lines"]] == ["1000", "-120"]


def test_given_a_declined_card_when_the_invoice_is_paid_with_another_then_its_intent_keeps_both_charges() -> None:
    """The emulator as Stripe: a declined attempt leaves its failed charge on the invoice's PaymentIntent; the
    customer then pays with the visa on that same intent - two charges, the declined one older: 35.01 (29.00 + 7.20 +
    0.00 + 0.01 - 1.20) paid by the visa. Before: a declined attempt left no charge."""
    gateway, http = _gateway()
    customer = gateway.ensure_customer(Customer("acct-1"))
    gateway.set_default_payment_method(customer, "pm_card_chargeCustomerFail")
    issued = gateway.issue_invoice(_request(customer))
    assert issued.status == "open"
    http.emulator.retry_payment(issued.gateway_id, "pm_card_visa")
    (intent,) = gateway.payment_refs(issued.gateway_id)
    charges = sorted(
        (c for c in http.emulator.objects["charge"].values() if c["payment_intent"] == intent),
        key=lambda c: c["created"],
    )
    assert [(c["status"], c["amount"], c["paid"]) for c in charges] == [
        ("failed", 3501, False),
        ("succeeded", 3501, True),
    ]
    methods = [http.emulator.objects["payment_method"][c["payment_method"]]["metadata"] for c in charges]
    assert methods == [{"emulator_card": "pm_card_chargeCustomerFail"}, {"emulator_card": "pm_card_visa"}]
    assert http.emulator.objects["payment_intent"][intent]["latest_charge"] == charges[1]["id"]
    assert http.emulator.objects["invoice"][issued.gateway_id]["status"] == "paid"


def test_given_a_declined_card_when_declined_again_after_the_amount_due_dropped_then_the_attempt_is_the_new_amount() -> (
    None
):
    """The emulator as Stripe: 35.01 (29.00 + 7.20 + 0.00 + 0.01 - 1.20) declined; a credit note of 5.01 on the open
    invoice drops its amount due to 35.01 - 5.01 = 30.00; the same card declined again charges 30.00, the visa then
    pays 30.00. Before: the second declined attempt showed the intent's first amount, 35.01."""
    gateway, http = _gateway()
    customer = gateway.ensure_customer(Customer("acct-1"))
    gateway.set_default_payment_method(customer, "pm_card_chargeCustomerFail")
    issued = gateway.issue_invoice(_request(customer))
    gateway.credit_note(issued.gateway_id, Decimal("5.01"), "late usage", "cn-acct-1/open")
    http.emulator.retry_payment(issued.gateway_id, "pm_card_chargeCustomerFail")
    http.emulator.retry_payment(issued.gateway_id, "pm_card_visa")
    charges = sorted(http.emulator.objects["charge"].values(), key=lambda c: c["created"])
    assert [(c["status"], c["amount"]) for c in charges] == [("failed", 3501), ("failed", 3000), ("succeeded", 3000)]


def test_given_a_charge_with_11_refunds_the_oldest_returned_when_refunded_again_then_the_card_is_still_refused() -> (
    None
):
    """35.01 paid by the visa; 1.00 refunded and returned by the visa's bank, then ten more of 1.00 sent to it on the
    operator's word (``to_failed_card``): 11 refunds on one charge, the oldest failed - Stripe embeds a charge's 10
    newest, ``has_more`` for the rest, so the returned one is found by listing the charge's refunds. A 12th 1.00
    (10.00 refunded, 35.01 - 10.00 = 25.01 left) is refused, nothing made. The emulator: the embedded list holds 10
    with ``has_more``, and ``refunds.list`` by charge lists that charge's only. Before: it embedded all 11 (the
    adapter's ``has_more`` branch never ran) and ignored ``charge`` (every refund of every charge)."""
    gateway, http = _gateway()
    customer = gateway.ensure_customer(Customer("acct-1"))
    gateway.set_default_payment_method(customer, "pm_card_visa")
    issued = gateway.issue_invoice(_request(customer))
    other = gateway.issue_invoice(_request(customer, "inv-acct-1-2026-12"))
    gateway.refund(other.gateway_id, Decimal("2.00"), "rf-other")  # another charge's refund, never listed with ours
    http.emulator.fail_refund(gateway.refund(issued.gateway_id, Decimal("1.00"), "rf-0"))
    for n in range(1, 11):
        gateway.refund(issued.gateway_id, Decimal("1.00"), f"rf-{n}", to_failed_card=True)
    (intent,) = gateway.payment_refs(issued.gateway_id)
    charge = http.emulator.objects["payment_intent"][intent]["latest_charge"]
    client = stripe.StripeClient("sk_test_unit", http_client=http)
    (listed,) = [
        c for c in client.v1.charges.list({"customer": customer, "expand": ["data.refunds"]}) if c.id == charge
    ]
    assert listed.refunds is not None
    assert (len(listed.refunds.data), listed.refunds.has_more) == (10, True)  # the 10 newest: 1.00 each, sent
    assert {r.status for r in listed.refunds.data} == {"succeeded"}
    of_charge = client.v1.refunds.list({"charge": charge, "limit": 100}).data
    assert sorted((r.charge, r.amount, r.status) for r in of_charge) == sorted(
        [(charge, 100, "failed")] + [(charge, 100, "succeeded")] * 10
    )
    seen = len(http.requests)
    with pytest.raises(GatewayRejectedError, match="would go back to a card whose bank returned a refund"):
        gateway.refund(issued.gateway_id, Decimal("1.00"), "rf-11")
    assert any(r.path == "/v1/refunds" and r.params.get("charge") == charge for r in http.requests[seen:])
    assert len(http.emulator.objects["refund"]) == 12  # 11 on ours + the other invoice's: nothing made


def test_given_a_card_with_11_refunds_and_another_cards_returned_one_when_refunded_then_it_is_made() -> None:
    """The visa paid invoice 1 and its bank returned a 10.00 refund; the mastercard paid invoice 2 (35.01), which has
    11 refunds of 1.00, none returned. A 12th 1.00 on invoice 2 (11.00 refunded, 35.01 - 11.00 = 24.01 left) goes
    to the mastercard. Its charge's refunds are listed by charge (``has_more``): only its own - the visa's returned
    refund is not the mastercard's. Before (once the embedded list held 10): the emulator listed every refund for
    ``charge``, the visa's failed one among them, and the mastercard was refused."""
    gateway, http, _first, second = _paid_twice("pm_card_mastercard")
    for n in range(11):
        gateway.refund(second, Decimal("1.00"), f"rf-mc-{n}")
    gateway.refund(second, Decimal("1.00"), "rf-mc-11")
    assert [r["amount"] for r in http.emulator.objects["refund"].values()] == [1000] + [100] * 12


def test_given_a_taxed_payment_whose_chargeback_is_lost_when_all_that_is_left_is_refunded_then_the_other_payment_is() -> (
    None
):
    """71.72 charged (65.20 + 10 % tax) paid as 44.00 + 27.72; the 44.00 payment's chargeback lost: its 44.00 is gone
    (withdrawn for good), nothing of it is left to refund. "All" (``amount`` None) refunds the other payment's 27.72
    and sends nothing for the disputed one. Before: refused, "44.00 of it is on a payment Stripe will not refund"
    (the lost payment counted as still holding its money)."""
    gateway, http = _gateway()
    customer = gateway.ensure_customer(Customer("acct-1"))
    gateway.set_default_payment_method(customer, "pm_card_visa")
    taxed = InvoiceRequest(
        "inv-acct-1-2026-03", "KB-acct-1-0003", "acct-1", customer, [GatewayLine("Tax incl.", Decimal("71.72"))]
    )
    issued = gateway.issue_invoice(taxed)
    first, second = http.emulator.split_payment(issued.gateway_id, 4400)
    http.emulator.close_dispute(http.emulator.open_dispute(first), won=False)
    gateway.refund(issued.gateway_id, None, "rf-all")
    made = http.emulator.objects["refund"].values()
    assert [(r["payment_intent"], r["amount"]) for r in made] == [(second, 2772)]


@pytest.mark.parametrize("won", [False, True])
def test_given_a_taxed_payment_disputed_when_all_that_is_left_is_refunded_then_refused_and_nothing_made(
    won: bool,
) -> None:
    """71.72 charged (65.20 + 10 % tax: the charge money the adapter sees) paid as 44.00 + 27.72; the 44.00 payment
    disputed - its chargeback's funds withdrawn (the dispute open: ours may not have applied the withdrawal yet) or
    the dispute won; either way its Dispute says the charge is not refundable. A taxed invoice's "all" (``amount``
    None) cannot give back the 71.72 ours counts: refused as a whole, naming the left-out payment, nothing sent.
    Before: 27.72 refunded of the second payment alone, and ours recorded all 65.20 refunded (review rfs)."""
    gateway, http = _gateway()
    customer = gateway.ensure_customer(Customer("acct-1"))
    gateway.set_default_payment_method(customer, "pm_card_visa")
    taxed = InvoiceRequest(
        "inv-acct-1-2026-03", "KB-acct-1-0003", "acct-1", customer, [GatewayLine("Tax incl.", Decimal("71.72"))]
    )
    issued = gateway.issue_invoice(taxed)
    first, _second = http.emulator.split_payment(issued.gateway_id, 4400)
    dispute = http.emulator.open_dispute(first)
    if won:
        http.emulator.close_dispute(dispute, won=True)
    with pytest.raises(GatewayRejectedError, match=r"44\.00 of it is on a payment Stripe will not refund \(a disputed"):
        gateway.refund(issued.gateway_id, None, "rf-all")
    assert http.emulator.objects.get("refund", {}) == {}
    assert [r for r in http.requests if r.method == "post" and r.path == "/v1/refunds"] == []
