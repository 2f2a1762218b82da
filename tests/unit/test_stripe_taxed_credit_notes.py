"""Our credit notes on invoices Stripe taxed (Stripe Tax, ``automatic_tax``), at the HTTP boundary: the emulator taxes
an automatic-tax invoice's lines at the customer's rate and credits a note's lines as Stripe does (D404). Every
request is checked against stripe-python's typed params (``refused_params``). Figures hand-worked in each test."""

from __future__ import annotations

import hashlib
from dataclasses import replace
from decimal import Decimal

import pytest
import stripe
from stripe.params import CreditNotePreviewParamsLine, InvoiceAddLinesParamsLine

from kilo_billing.money import before_tax, in_cents
from kilo_dev.stripe_emulator import EmulatorHTTPClient
from kilo_invoice.ports import Customer, GatewayLine, GatewayRejectedError, GatewayUnavailableError, InvoiceRequest
from kilo_invoice.stripe_adapter import StripePaymentGateway


def _taxed(
    percent: str, lines: list[GatewayLine], *, card: bool
) -> tuple[StripePaymentGateway, EmulatorHTTPClient, str]:
    """An invoice of ``lines`` with Stripe Tax at ``percent`` for the customer: paid at once by a card, or left open
    (no card: Stripe would retry); its Stripe id."""
    http = EmulatorHTTPClient()
    gateway = StripePaymentGateway(stripe.StripeClient("sk_test_unit", http_client=http, max_network_retries=0))
    customer = gateway.ensure_customer(Customer("acct-1"))
    http.emulator.set_tax_rate(customer, percent)
    if card:
        gateway.set_default_payment_method(customer, "pm_card_visa")
    request = InvoiceRequest("acct-1/2026-03", "KB-acct-1-0003", "acct-1", customer, lines, automatic_tax=True)
    return gateway, http, gateway.issue_invoice(request).gateway_id


def _notes_sent(http: EmulatorHTTPClient) -> list[dict[str, object]]:
    return [r.params for r in http.requests if r.method == "post" and r.path == "/v1/credit_notes"]


def test_given_10_percent_tax_when_an_open_invoice_is_credited_4_00_then_4_40_comes_off_what_it_asks() -> None:
    """10.00 + 10 % = 11.00 asked; a 4.00 note credits 4.00 and its 0.40 tax: 6.60 still asked (before: a custom
    line of 4.00 with no tax - 7.00 asked, 6.36 before tax against ours 6.00, and ``_paid_short`` saw no shortfall)."""
    gateway, http, invoice_id = _taxed("10", [GatewayLine("Video minutes", Decimal("10.00"))], card=False)
    assert http.emulator.objects["invoice"][invoice_id]["total"] == 1100

    gateway.credit_note(invoice_id, Decimal("4.00"), "late participant_left", "cn-1")

    (note,) = http.emulator.objects["credit_note"].values()
    assert (note["subtotal"], note["total"]) == (400, 440)
    assert http.emulator.objects["invoice"][invoice_id]["amount_due"] == 660
    found = gateway.find_invoice("acct-1/2026-03")
    assert found is not None
    assert found.total == Decimal("6.60")
    assert before_tax(Decimal("6.60"), (1100, 1000)) == Decimal("6.00")  # ours: 10.00 - 4.00, to the cent
    assert http.emulator.refused_params == []


def test_given_10_percent_tax_when_a_paid_invoice_is_credited_4_00_out_of_band_then_4_40_is_recorded() -> None:
    """Paid 11.00; a 4.00 note out of band is 4.40 at Stripe, its ``out_of_band_amount`` 4.40 (Stripe requires it
    to equal the note's total: 400 sent with the tax on the line is refused, 400 without it credits no tax)."""
    gateway, http, invoice_id = _taxed("10", [GatewayLine("Video minutes", Decimal("10.00"))], card=True)
    assert http.emulator.objects["invoice"][invoice_id]["status"] == "paid"

    gateway.credit_note(invoice_id, Decimal("4.00"), "late usage", "cn-1/out-of-band", out_of_band=True)

    (sent,) = _notes_sent(http)
    assert sent["out_of_band_amount"] == "440"
    assert "credit_amount" not in sent  # D130: no Stripe balance
    assert "refund_amount" not in sent
    (note,) = http.emulator.objects["credit_note"].values()
    assert (note["subtotal"], note["total"]) == (400, 440)
    assert http.emulator.objects["invoice"][invoice_id]["post_payment_credit_notes_amount"] == 440
    assert http.emulator.refused_params == []


def test_given_20_percent_vat_on_two_lines_when_credited_out_of_band_then_stripes_own_tax() -> None:
    """20 % VAT, each line's tax rounded half-up: 10.03 -> 2.006 -> 2.01, 5.02 -> 1.004 -> 1.00; 15.05 + 3.01 =
    18.06 paid. 3.33 credited on the positive lines in proportion (largest
    remainder): 333 x 1003/1505 = 221.92, 333 x 502/1505 = 111.07 -> 221 + 111 = 332, the cent left to the larger
    remainder: 2.22 + 1.11. Their taxes, each line's own in proportion: 201 x 222/1003 = 44.49 -> 0.44,
    100 x 111/502 = 22.11 -> 0.22. The note is 3.33 + 0.66 = 3.99 (not 3.33 x 1.2 = 4.00: the 5.02 line's tax was
    rounded down), sent out of band as 3.99; read back before tax at the invoice's 1505/1806 it is ours:
    399 x 1505/1806 = 332.5 -> 3.33 half-up. (No negative line: Stripe refuses one on an automatic-tax invoice.)"""
    lines = [
        GatewayLine("Team fee", Decimal("10.03")),
        GatewayLine("Video minutes", Decimal("5.02")),
    ]
    gateway, http, invoice_id = _taxed("20", lines, card=True)
    invoice = http.emulator.objects["invoice"][invoice_id]
    assert (invoice["total_excluding_tax"], invoice["total"], invoice["status"]) == (1505, 1806, "paid")
    fee, video = (line["id"] for line in invoice["lines"]["data"])

    gateway.credit_note(invoice_id, Decimal("3.33"), "late usage", "cn-2/out-of-band", out_of_band=True)

    (sent,) = _notes_sent(http)
    assert sent["lines"] == [
        {"type": "invoice_line_item", "invoice_line_item": fee, "amount": "222"},
        {"type": "invoice_line_item", "invoice_line_item": video, "amount": "111"},
    ]
    assert sent["out_of_band_amount"] == "399"
    # previewed as it is made: with its out-of-band amount, the note's own figure (each line's tax in proportion)
    previews = [r.params for r in http.requests if r.path == "/v1/credit_notes/preview"]
    assert [preview.get("out_of_band_amount") for preview in previews] == ["399"]
    (note,) = http.emulator.objects["credit_note"].values()
    assert (note["subtotal"], note["total"]) == (333, 399)
    assert before_tax(Decimal("3.99"), (1806, 1505)) == Decimal("3.33")
    assert http.emulator.refused_params == []


def test_given_a_taxed_invoice_when_a_note_is_sent_again_then_one_note_and_the_same_lines() -> None:
    """A rerun (the answer lost) finds the note by our metadata: one note, one preview's figures."""
    gateway, http, invoice_id = _taxed("10", [GatewayLine("Video minutes", Decimal("10.00"))], card=True)
    first = gateway.credit_note(invoice_id, Decimal("4.00"), "late usage", "cn-1/out-of-band", out_of_band=True)
    again = gateway.credit_note(invoice_id, Decimal("4.00"), "late usage", "cn-1/out-of-band", out_of_band=True)
    assert first == again
    assert len(http.emulator.objects["credit_note"]) == 1


def test_given_an_untaxed_invoice_when_credited_then_one_custom_line_as_before() -> None:
    """No tax on the invoice (``total`` equals ``total_excluding_tax``): the note is our amount as one custom line,
    no preview asked - the request D130 made, unchanged."""
    gateway, http, invoice_id = _taxed("0", [GatewayLine("Video minutes", Decimal("10.00"))], card=True)
    gateway.credit_note(invoice_id, Decimal("4.00"), "late usage", "cn-1/out-of-band", out_of_band=True)
    (sent,) = _notes_sent(http)
    assert sent["lines"] == [
        {"type": "custom_line_item", "description": "late usage", "quantity": "1", "unit_amount": "400"}
    ]
    assert sent["out_of_band_amount"] == "400"
    assert not [r for r in http.requests if r.path == "/v1/credit_notes/preview"]


def _raw_tax_invoice(http: EmulatorHTTPClient) -> tuple[stripe.StripeClient, str]:
    """A draft with ``automatic_tax`` enabled, made with the SDK directly (no adapter in between)."""
    client = stripe.StripeClient("sk_test_unit", http_client=http, max_network_retries=0)
    customer = client.v1.customers.create({"email": "a@example.com"})
    http.emulator.set_tax_rate(customer.id, "10")
    invoice = client.v1.invoices.create(
        {"customer": customer.id, "currency": "usd", "auto_advance": False, "automatic_tax": {"enabled": True}}
    )
    assert invoice.id is not None
    return client, invoice.id


def test_given_automatic_tax_then_stripe_refuses_a_negative_line_and_a_line_of_unspecified_tax_behavior() -> None:
    """Stripe's own rule, in the pinned SDK's docstring of ``automatic_tax.enabled`` (``InvoiceCreateParams``):
    "incompatible invoice items (invoice items with manually specified tax rates, negative amounts, or
    ``tax_behavior=unspecified``) cannot be added to automatic tax invoices". Each refused, nothing added (before:
    the emulator added the -1.20 line and taxed it -0.12)."""
    http = EmulatorHTTPClient()
    client, invoice_id = _raw_tax_invoice(http)
    with pytest.raises(stripe.InvalidRequestError, match="negative"):
        client.v1.invoices.add_lines(invoice_id, {"lines": [{"amount": 2900}, {"amount": -120}]})
    unspecified: InvoiceAddLinesParamsLine = {
        "price_data": {
            "currency": "usd",
            "product_data": {"name": "Video minutes"},
            "unit_amount_decimal": Decimal(100),
            "tax_behavior": "unspecified",
        }
    }
    with pytest.raises(stripe.InvalidRequestError, match="tax_behavior"):
        client.v1.invoices.add_lines(invoice_id, {"lines": [unspecified]})
    assert http.emulator.objects["invoice"][invoice_id]["lines"]["data"] == []
    # an invoice without automatic tax takes a negative line, as before
    customer = http.emulator.objects["invoice"][invoice_id]["customer"]
    plain = client.v1.invoices.create({"customer": customer, "currency": "usd", "auto_advance": False})
    assert plain.id is not None
    added = client.v1.invoices.add_lines(plain.id, {"lines": [{"amount": 2900}, {"amount": -120}]})
    assert added.subtotal == 2780


def _credits_request(
    percent: str, lines: list[GatewayLine], *, card: bool = True
) -> tuple[StripePaymentGateway, EmulatorHTTPClient, InvoiceRequest]:
    """A customer taxed at ``percent`` (with a card that pays, or none: its invoice stays open) and the request of an
    automatic-tax invoice of ``lines`` (some negative), not yet issued."""
    http = EmulatorHTTPClient()
    gateway = StripePaymentGateway(stripe.StripeClient("sk_test_unit", http_client=http, max_network_retries=0))
    customer = gateway.ensure_customer(Customer("acct-1"))
    http.emulator.set_tax_rate(customer, percent)
    if card:
        gateway.set_default_payment_method(customer, "pm_card_visa")
    request = InvoiceRequest("acct-1/2026-04", "KB-acct-1-0004", "acct-1", customer, lines, automatic_tax=True)
    return gateway, http, request


def _issued_with_credits(
    percent: str, lines: list[GatewayLine]
) -> tuple[StripePaymentGateway, EmulatorHTTPClient, InvoiceRequest, str]:
    """An automatic-tax invoice of ``lines`` (some negative) issued by the adapter for a customer taxed at
    ``percent``, paid by card; the request and its Stripe id."""
    gateway, http, request = _credits_request(percent, lines)
    return gateway, http, request, gateway.issue_invoice(request).gateway_id


def test_given_stripe_tax_when_an_invoice_holds_account_credit_then_billed_with_a_pre_tax_discount_of_it() -> None:
    """29.00 team fee, 4.00 account credit applied (a 4.00 + 0.40 out-of-band note's credit), 10 %: ours asks 25.00
    before tax. Sent as Stripe takes it (no negative line on an automatic-tax invoice): the 29.00 line and a one-off
    ``amount_off`` 4.00 coupon on this invoice; Stripe Tax taxes after the discount: 29.00 - 4.00 = 25.00, tax 2.50,
    27.50 charged - the 4.00 and its 0.40 given back, as a negative line taxed negative would. Before: refused before
    any POST (D404 amended (cr2)), at every close of the account (D432)."""
    lines = [GatewayLine("Team fee", Decimal("29.00")), GatewayLine("Account credit applied", Decimal("-4.00"))]
    gateway, http, request, invoice_id = _issued_with_credits("10", lines)

    invoice = http.emulator.objects["invoice"][invoice_id]
    assert (invoice["subtotal"], invoice["total_excluding_tax"], invoice["total"]) == (2900, 2500, 2750)
    assert (invoice["status"], invoice["amount_paid"]) == ("paid", 2750)
    added = [r.params for r in http.requests if r.method == "post" and r.path.endswith("/add_lines")]
    assert [[line.get("amount") for line in sent["lines"]] for sent in added] == [["2900"]]  # no negative line
    (coupon,) = http.emulator.objects["coupon"].values()
    assert (coupon["amount_off"], coupon["currency"], coupon["duration"]) == (400, "usd", "once")
    found = gateway.find_invoice(request.invoice_id)
    assert found is not None
    assert found.total == Decimal("27.50")
    assert before_tax(Decimal("27.50"), (2750, 2500)) == request.total == Decimal("25.00")
    assert http.emulator.refused_params == []


def test_given_20_percent_vat_and_a_credit_with_a_cent_to_round_then_the_discount_is_taxed_as_a_negative_line() -> None:
    """20 % VAT; 10.03 + 5.02 and 1.20 of credits (a downgrade's true-up, say): ours 13.85 before tax. The 1.20
    discount is spread over the two lines in proportion to their amounts (Stripe's per-line ``discount_amounts``):
    120 x 1003/1505 = 79.97, 120 x 502/1505 = 40.03 -> 79 + 40 = 119, the cent left to the larger remainder:
    80 + 40. Each line taxed after its discount, half-up: (1003 - 80) x 0.2 = 184.6 -> 1.85, (502 - 40) x 0.2 =
    92.4 -> 0.92: 2.77 tax, 13.85 + 2.77 = 16.62 charged - the 16.62 D404 worked out for the -1.20 line taxed -0.24.
    Before: refused before any POST."""
    lines = [
        GatewayLine("Team fee", Decimal("10.03")),
        GatewayLine("Video minutes", Decimal("5.02")),
        GatewayLine("Fee true-up", Decimal("-1.20")),
    ]
    _, http, request, invoice_id = _issued_with_credits("20", lines)

    invoice = http.emulator.objects["invoice"][invoice_id]
    assert (invoice["subtotal"], invoice["total_excluding_tax"], invoice["total"]) == (1505, 1385, 1662)
    fee, video = invoice["lines"]["data"]
    assert [d["amount"] for d in fee["discount_amounts"]] == [80]
    assert [d["amount"] for d in video["discount_amounts"]] == [40]
    assert [t["amount"] for t in fee["taxes"]] == [185]
    assert [t["amount"] for t in video["taxes"]] == [92]
    assert invoice["amount_paid"] == 1662
    assert in_cents(request.total) == invoice["total_excluding_tax"]
    assert http.emulator.refused_params == []


def test_given_a_discounted_draft_when_issued_again_then_one_coupon_and_one_invoice() -> None:
    """A rerun (the answer lost after the draft was made) finds the draft with its discount: no second coupon."""
    lines = [GatewayLine("Team fee", Decimal("29.00")), GatewayLine("Account credit applied", Decimal("-4.00"))]
    gateway, http, request, invoice_id = _issued_with_credits("10", lines)
    http.emulator.expire_idempotency_keys()

    again = gateway.issue_invoice(request)

    assert again.gateway_id == invoice_id
    assert len(http.emulator.objects["coupon"]) == 1
    assert len(http.emulator.objects["invoice"]) == 1


_CREDITED = [GatewayLine("Team fee", Decimal("29.00")), GatewayLine("Account credit applied", Decimal("-4.00"))]
# D432 amended (gtax): the coupon's id is ours, one per invoice - "kilo_" and the first 32 hex digits of the SHA-256
# of our invoice id (Stripe documents no character rule for a coupon id: letters, digits and "_" only)
_COUPON_ID = "kilo_" + hashlib.sha256(b"acct-1/2026-04").hexdigest()[:32]


def _coupon_posts(http: EmulatorHTTPClient) -> list[dict[str, object]]:
    return [r.params for r in http.requests if r.method == "post" and r.path == "/v1/coupons"]


def _coupon_used_by_a_draft_deleted_in_stripe() -> tuple[StripePaymentGateway, EmulatorHTTPClient, InvoiceRequest]:
    """The draft of ``_CREDITED`` made with our coupon of 4.00 (its finalize failed: Stripe 500), then deleted in
    Stripe's dashboard, not by us: the coupon stays, redeemed 1 of 1; the keys expired since."""
    gateway, http, request = _credits_request("10", _CREDITED)
    http.faults = ["pass", "pass", "pass", "pass", 500]
    with pytest.raises(GatewayUnavailableError):
        gateway.issue_invoice(request)
    (draft,) = http.emulator.objects["invoice"]
    stripe.StripeClient("sk_test_unit", http_client=http, max_network_retries=0).v1.invoices.delete(draft)
    http.emulator.expire_idempotency_keys()
    return gateway, http, request


def test_given_a_coupon_made_and_its_draft_not_when_rerun_after_the_keys_expired_then_that_coupon_is_redeemed() -> None:
    """The coupon is made (id ours, ``max_redemptions`` 1), the invoice's create fails (Stripe 500); a rerun after
    Stripe's 24 h idempotency window posts the same coupon again, is told its id is taken
    (``resource_already_exists``), reads it back (400 off, usd: ours) and redeems it: one coupon, one invoice, 29.00 -
    4.00 + 10 % = 27.50 paid. Before: no id of ours and no limit - a second, unlimited coupon made on the rerun."""
    gateway, http, request = _credits_request("10", _CREDITED)
    http.faults = ["pass", "pass", 500]  # the invoices' list, the coupon; the invoice's create fails
    with pytest.raises(GatewayUnavailableError):
        gateway.issue_invoice(request)
    assert "invoice" not in http.emulator.objects
    http.emulator.expire_idempotency_keys()

    issued = gateway.issue_invoice(request)

    (coupon,) = http.emulator.objects["coupon"].values()
    assert (coupon["id"], coupon["amount_off"], coupon["max_redemptions"]) == (_COUPON_ID, 400, 1)
    assert [(sent["id"], sent["max_redemptions"]) for sent in _coupon_posts(http)] == [(_COUPON_ID, "1")] * 2
    invoice = http.emulator.objects["invoice"][issued.gateway_id]
    assert (invoice["total_excluding_tax"], invoice["amount_paid"]) == (2500, 2750)
    assert http.emulator.refused_params == []


def test_given_our_coupon_id_holding_another_amount_unredeemed_when_rerun_then_it_is_made_again_with_ours() -> None:
    """A first try made the coupon of 4.00 off and failed at the invoice's create; the close is composed again with
    3.00 of credit (a note meanwhile, say) after the keys expired: the coupon of our id holds 4.00,
    redeemed by nothing - deleted and made again of 3.00, the invoice issued, 29.00 - 3.00 + 10 % = 28.60 paid
    (before: refused on every rerun, blocking the account's later closes)."""
    gateway, http, request = _credits_request("10", _CREDITED)
    http.faults = ["pass", "pass", 500]
    with pytest.raises(GatewayUnavailableError):
        gateway.issue_invoice(request)
    http.emulator.expire_idempotency_keys()
    less = [GatewayLine("Team fee", Decimal("29.00")), GatewayLine("Account credit applied", Decimal("-3.00"))]

    issued = gateway.issue_invoice(replace(request, lines=less))

    (coupon,) = http.emulator.objects["coupon"].values()
    assert (coupon["id"], coupon["amount_off"], coupon["times_redeemed"]) == (_COUPON_ID, 300, 1)
    invoice = http.emulator.objects["invoice"][issued.gateway_id]
    assert (invoice["total_excluding_tax"], invoice["amount_paid"]) == (2600, 2860)
    assert http.emulator.refused_params == []


def test_given_our_coupon_id_holding_another_amount_redeemed_when_issued_then_refused_before_the_invoice_is_made() -> (
    None
):
    """The coupon of 4.00 was redeemed by a draft deleted in Stripe's dashboard (not by us); the close is composed
    again with 3.00: the coupon of our id holds 4.00 and is used - refused naming both, no invoice posted, the coupon
    kept."""
    gateway, http, request = _coupon_used_by_a_draft_deleted_in_stripe()
    less = [GatewayLine("Team fee", Decimal("29.00")), GatewayLine("Account credit applied", Decimal("-3.00"))]
    posted = len(http.requests)

    with pytest.raises(GatewayRejectedError, match=r"4\.00 off.*ours 3\.00"):
        gateway.issue_invoice(replace(request, lines=less))

    assert [r.path for r in http.requests[posted:] if r.method != "get"] == ["/v1/coupons"]
    assert http.emulator.objects["coupon"][_COUPON_ID]["amount_off"] == 400


def test_given_a_coupon_posted_under_the_old_key_when_rerun_within_a_day_then_a_new_key_makes_ours() -> None:
    """Before this change the coupon was posted with no id under the key ``kilo:<invoice>:coupon``; a rerun within
    Stripe's 24 h posting our id and ``max_redemptions`` under that key would be refused (``idempotency_error``,
    other parameters). A new key: ours made, the invoice issued, 27.50 paid."""
    gateway, http, request = _credits_request("10", _CREDITED)
    old = stripe.StripeClient("sk_test_unit", http_client=http, max_network_retries=0)
    old.v1.coupons.create(
        {"amount_off": 400, "currency": "usd", "duration": "once", "name": "Credits and reductions"},
        {"idempotency_key": "kilo:acct-1/2026-04:coupon"},
    )

    issued = gateway.issue_invoice(request)

    assert http.emulator.objects["coupon"][_COUPON_ID]["times_redeemed"] == 1
    assert http.emulator.objects["invoice"][issued.gateway_id]["amount_paid"] == 2750


def test_given_our_coupon_used_up_by_a_draft_deleted_in_stripe_when_rerun_then_refused_naming_it() -> None:
    """The draft (its finalize failed) is deleted in Stripe's dashboard, not by us: its coupon stays, redeemed 1 of
    1. A rerun after the keys expired reads it back and refuses before posting an invoice, naming the coupon (Stripe
    would refuse to redeem it; before: a second coupon made)."""
    gateway, http, request = _coupon_used_by_a_draft_deleted_in_stripe()
    posted = len(http.requests)

    with pytest.raises(GatewayRejectedError, match=rf"{_COUPON_ID} .*no longer valid \(redeemed 1 of 1"):
        gateway.issue_invoice(request)

    assert [r.path for r in http.requests[posted:] if r.method == "post"] == ["/v1/coupons"]
    assert list(http.emulator.objects["coupon"]) == [_COUPON_ID]


def test_given_a_discounted_draft_when_deleted_then_its_coupon_is_deleted_and_a_rerun_makes_it_again() -> None:
    """The draft is made with its coupon, its finalize fails (Stripe 500), an operator deletes the draft
    (``invoice void-draft``): the coupon goes with it (before: left valid in Stripe). A rerun makes the coupon of the
    same id again and the invoice, 27.50 paid."""
    gateway, http, request = _credits_request("10", _CREDITED)
    http.faults = ["pass", "pass", "pass", "pass", 500]  # list, coupon, create, lines; the finalize fails
    with pytest.raises(GatewayUnavailableError):
        gateway.issue_invoice(request)
    (draft,) = http.emulator.objects["invoice"]

    assert gateway.delete_draft(draft) is True

    assert http.emulator.objects["coupon"] == {}
    assert http.emulator.objects["invoice"] == {}
    http.emulator.expire_idempotency_keys()
    issued = gateway.issue_invoice(request)
    assert list(http.emulator.objects["coupon"]) == [_COUPON_ID]
    assert http.emulator.objects["invoice"][issued.gateway_id]["amount_paid"] == 2750
    assert http.emulator.refused_params == []


def test_given_a_discounted_open_invoice_when_voided_then_its_coupon_is_deleted_and_the_invoice_keeps_its_discount() -> (
    None
):
    """No card: 27.50 left open; voided (``invoice void-draft``): its coupon is deleted too (before: left valid, its
    redemption spent but redeemable again had it no limit); the void invoice keeps its 4.00 discount."""
    gateway, http, request = _credits_request("10", _CREDITED, card=False)
    issued = gateway.issue_invoice(request)
    assert issued.status == "open"

    gateway.void(issued.gateway_id)

    assert http.emulator.objects["coupon"] == {}
    invoice = http.emulator.objects["invoice"][issued.gateway_id]
    assert (invoice["status"], invoice["total_excluding_tax"], invoice["total"]) == ("void", 2500, 2750)
    assert http.emulator.refused_params == []


def _old_style_draft(http: EmulatorHTTPClient, customer: str) -> tuple[str, str]:
    """A draft made before our coupon ids: its coupon of 4.00 has Stripe's own id (our invoice named in its metadata
    only), redeemed on the draft of 29.00; the draft's and the coupon's ids."""
    raw = stripe.StripeClient("sk_test_unit", http_client=http, max_network_retries=0)
    coupon = raw.v1.coupons.create(
        {
            "amount_off": 400,
            "currency": "usd",
            "duration": "once",
            "name": "Credits and reductions",
            "metadata": {"kilo_invoice_id": "acct-1/2026-04", "kilo_account_id": "acct-1"},
        }
    )
    draft = raw.v1.invoices.create(
        {
            "customer": customer,
            "currency": "usd",
            "auto_advance": False,
            "automatic_tax": {"enabled": True},
            "discounts": [{"coupon": coupon.id}],
            "metadata": {"kilo_invoice_id": "acct-1/2026-04", "kilo_account_id": "acct-1"},
        }
    )
    assert draft.id is not None
    raw.v1.invoices.add_lines(draft.id, {"lines": [{"amount": 2900, "description": "Team fee"}]})
    assert coupon.id != _COUPON_ID
    return draft.id, coupon.id


def test_given_a_draft_discounted_before_our_coupon_ids_when_deleted_then_its_coupon_is_deleted_by_the_draft() -> None:
    """The coupon's id is read from the draft's own discounts (expanded), not derived from our invoice id: an
    old-style coupon (Stripe's id) is deleted with its draft (before: ``kilo_...`` deleted, not found, and the old
    coupon left valid)."""
    gateway, http, request = _credits_request("10", _CREDITED)
    draft, coupon = _old_style_draft(http, request.customer_id)

    assert gateway.delete_draft(draft) is True

    assert coupon not in http.emulator.objects["coupon"]
    assert http.emulator.objects["invoice"] == {}
    assert http.emulator.refused_params == []


def test_given_an_open_invoice_discounted_before_our_coupon_ids_when_voided_then_its_coupon_is_deleted() -> None:
    """The same for ``void``: the old-style coupon of an open invoice (no card) is deleted, the invoice void."""
    gateway, http, request = _credits_request("10", _CREDITED, card=False)
    draft, coupon = _old_style_draft(http, request.customer_id)
    stripe.StripeClient("sk_test_unit", http_client=http, max_network_retries=0).v1.invoices.finalize_invoice(draft)

    gateway.void(draft)

    assert coupon not in http.emulator.objects["coupon"]
    assert http.emulator.objects["invoice"][draft]["status"] == "void"
    assert http.emulator.refused_params == []


def test_given_a_taxed_invoice_when_a_note_asks_more_than_its_lines_hold_then_refused_and_nothing_made() -> None:
    """10.00 + 10 %: a 10.01 note would credit more than the line holds before tax (Stripe refuses a line credited
    beyond its amount); refused before any POST (before: a custom line of 10.01 with no tax, under the 11.00 total,
    made)."""
    gateway, http, invoice_id = _taxed("10", [GatewayLine("Video minutes", Decimal("10.00"))], card=False)
    with pytest.raises(GatewayRejectedError, match=r"its lines hold 10\.00"):
        gateway.credit_note(invoice_id, Decimal("10.01"), "late usage", "cn-9")
    assert _notes_sent(http) == []
    assert "credit_note" not in http.emulator.objects


def test_given_a_paid_invoice_then_a_notes_preview_follows_the_create_rule_on_its_settled_amounts() -> None:
    """Stripe's rule for a note on a paid invoice - credit, refund and out-of-band amounts add up to the note's
    amount - holds for its preview as for its create (the preview takes the create's parameters). 10.00 + 10 %
    paid; a 4.00 line credit is 4.40: previewed with none of the amounts, refused; with 440 out of band, answered
    (before: the preview answered without them, and the create alone refused)."""
    _, http, invoice_id = _taxed("10", [GatewayLine("Video minutes", Decimal("10.00"))], card=True)
    client = stripe.StripeClient("sk_test_unit", http_client=http, max_network_retries=0)
    line_id = http.emulator.objects["invoice"][invoice_id]["lines"]["data"][0]["id"]
    credited: CreditNotePreviewParamsLine = {"type": "invoice_line_item", "invoice_line_item": line_id, "amount": 400}
    with pytest.raises(stripe.InvalidRequestError, match="must equal the amount"):
        client.v1.credit_notes.preview({"invoice": invoice_id, "lines": [credited]})
    with pytest.raises(stripe.InvalidRequestError, match="must equal the amount"):
        client.v1.credit_notes.preview({"invoice": invoice_id, "lines": [credited], "out_of_band_amount": 400})
    preview = client.v1.credit_notes.preview({"invoice": invoice_id, "lines": [credited], "out_of_band_amount": 440})
    assert (preview.subtotal, preview.total) == (400, 440)
    assert "credit_note" not in http.emulator.objects


def test_given_a_preview_answering_another_total_then_it_is_asked_again_with_that_total_before_the_note() -> None:
    """Should Stripe answer a preview whose out-of-band amount is off (its rule not applied to previews, not known):
    the note's total it answers is asked again, and the note made with it. Forced here with lines showing no tax (the
    estimate 4.00) and a preview that does not check the rule: 440 answered, asked again with 440, made with 440."""
    gateway, http, invoice_id = _taxed("10", [GatewayLine("Video minutes", Decimal("10.00"))], card=True)
    for line in http.emulator.objects["invoice"][invoice_id]["lines"]["data"]:
        line["taxes"] = []  # the estimate sees no tax: 400
    http.emulator._settled = lambda invoice, params, amount: amount  # type: ignore[method-assign]  # paid: all post

    gateway.credit_note(invoice_id, Decimal("4.00"), "late usage", "cn-1/out-of-band", out_of_band=True)

    previews = [r.params.get("out_of_band_amount") for r in http.requests if r.path == "/v1/credit_notes/preview"]
    assert previews == ["400", "440"]
    (sent,) = _notes_sent(http)
    assert sent["out_of_band_amount"] == "440"


def test_given_10_percent_tax_when_a_paid_invoice_is_credited_4_00_to_the_card_then_stripe_refunds_4_40() -> None:
    """Paid 11.00 (10.00 + 10 %); the 4.00 note given back to the card (D433): the note is 4.00 + 0.40, its
    ``refund_amount`` its total 4.40 (no out-of-band amount, no balance), and Stripe refunds 4.40 of the payment -
    what ours counts as 4.00 given back at the invoice's 1000/1100. Before: no such note (4.40 recorded out of band
    while ours gave 4.00 of account credit)."""
    gateway, http, invoice_id = _taxed("10", [GatewayLine("Video minutes", Decimal("10.00"))], card=True)

    gateway.refund_note(invoice_id, Decimal("4.00"), "late usage", "cn-1/refund")

    (sent,) = _notes_sent(http)
    assert sent["refund_amount"] == "440"
    assert "out_of_band_amount" not in sent
    assert "credit_amount" not in sent
    (note,) = http.emulator.objects["credit_note"].values()
    assert (note["subtotal"], note["total"]) == (400, 440)
    (refund,) = http.emulator.objects["refund"].values()
    assert refund["amount"] == 440
    (charge,) = http.emulator.objects["charge"].values()
    assert charge["amount_refunded"] == 440
    assert [e["type"] for e in http.emulator.events][-2:] == ["charge.refunded", "refund.created"]
    assert before_tax(Decimal("4.40"), (1100, 1000)) == Decimal("4.00")
    assert http.emulator.refused_params == []


def test_given_20_percent_vat_on_two_lines_when_credited_to_the_card_then_the_refund_is_stripes_note_3_99() -> None:
    """18.06 paid (10.03 + 5.02 at 20 %, each line's tax rounded); 3.33 credited to the card: the note 2.22 + 1.11
    with 0.44 + 0.22 tax (worked in the out-of-band test above) is 3.99, refunded 3.99 - not 3.33 x 1806/1505 =
    3.996 -> 4.00, a cent more than Stripe's note; read back 399 x 1505/1806 = 332.5 -> 3.33, ours."""
    lines = [GatewayLine("Team fee", Decimal("10.03")), GatewayLine("Video minutes", Decimal("5.02"))]
    gateway, http, invoice_id = _taxed("20", lines, card=True)

    gateway.refund_note(invoice_id, Decimal("3.33"), "late usage", "cn-2/refund")

    (sent,) = _notes_sent(http)
    assert sent["refund_amount"] == "399"
    (refund,) = http.emulator.objects["refund"].values()
    assert refund["amount"] == 399
    assert before_tax(Decimal("3.99"), (1806, 1505)) == Decimal("3.33")
    assert http.emulator.refused_params == []


def test_given_a_discounted_taxed_invoice_when_a_note_is_asked_then_refused_as_stripe_would_credit_less() -> None:
    """29.00 - 4.00 of account credit at 10 % (D432): the 2900 line carries the 400 discount, taxed 250 on 2500;
    27.50 paid. A 3.60 note on that line gives back its share of the discount too (a credit note line's
    ``discount_amount``, docs.stripe.com/api/credit_notes/line_item): 400 x 360/2900 = 49.66 -> 0.50, so Stripe's
    note is 3.60 - 0.50 = 3.10 before tax, 250 x 310/2500 = 0.31 tax, 3.41 - while our books would record 3.60
    returned. Refused, nothing made (the refusal gives account credit, D433). Our first preview asks 3.91 (the
    line's tax share 250 x 360/2900 = 31.03 -> 0.31 on 3.60); a preview answering its own total in place of refusing
    it (Stripe's rule not known to apply to previews, as in the test above) is asked again with 3.41, which holds:
    before, a 3.41 note and refund were made."""
    lines = [GatewayLine("Team fee", Decimal("29.00")), GatewayLine("Account credit applied", Decimal("-4.00"))]
    gateway, http, _, invoice_id = _issued_with_credits("10", lines)
    invoice = http.emulator.objects["invoice"][invoice_id]
    assert (invoice["total_excluding_tax"], invoice["total"], invoice["status"]) == (2500, 2750, "paid")
    (line,) = invoice["lines"]["data"]
    client = stripe.StripeClient("sk_test_unit", http_client=http, max_network_retries=0)
    credited: CreditNotePreviewParamsLine = {"type": "invoice_line_item", "invoice_line_item": line["id"]}
    credited["amount"] = 360
    preview = client.v1.credit_notes.preview({"invoice": invoice_id, "lines": [credited], "refund_amount": 341})
    figures = (preview.subtotal, preview.discount_amount, preview.total_excluding_tax, preview.total)
    assert figures == (360, 50, 310, 341)
    assert [(item.amount, item.discount_amount) for item in preview.lines.data] == [(360, 50)]
    http.emulator._settled = lambda invoice, params, amount: amount  # type: ignore[method-assign]  # paid: all post

    with pytest.raises(GatewayRejectedError, match=r"3\.10 after its discount, ours 3\.60"):
        gateway.refund_note(invoice_id, Decimal("3.60"), "late usage", "cn-1/refund")
    with pytest.raises(GatewayRejectedError, match=r"3\.10 after its discount, ours 3\.60"):
        gateway.credit_note(invoice_id, Decimal("3.60"), "late usage", "cn-1/out-of-band", out_of_band=True)

    assert _notes_sent(http) == []
    assert "credit_note" not in http.emulator.objects
    assert "refund" not in http.emulator.objects
    assert http.emulator.refused_params == []


def test_given_a_discounted_taxed_open_invoice_when_reduced_then_refused_as_stripe_would_take_off_less() -> None:
    """29.00 - 4.00 of account credit at 10 % (D432), no card: 25.00 + 2.50 = 27.50 asked, left open. A 3.60
    reduction of the 2900 line gives back its share of the discount too (a credit note line's ``discount_amount``):
    400 x 360/2900 = 49.66 -> 0.50, so Stripe's note is 3.60 - 0.50 = 3.10 before tax, 250 x 310/2500 = 31 -> 0.31
    tax, 3.41 off: Stripe would then ask 27.50 - 3.41 = 24.09 (21.90 before tax) while ours records 25.00 - 3.60 =
    21.40. Previewed first (as a paid invoice's note is, D433 amended (htax)) and refused, nothing made: Stripe still
    asks 27.50 (the refusal's path for an open invoice: account credit for what it collected, D337). Before: a 3.41
    note made, 24.09 asked."""
    gateway, http, request = _credits_request("10", _CREDITED, card=False)
    invoice_id = gateway.issue_invoice(request).gateway_id
    invoice = http.emulator.objects["invoice"][invoice_id]
    assert (invoice["status"], invoice["total_excluding_tax"], invoice["amount_due"]) == ("open", 2500, 2750)

    with pytest.raises(GatewayRejectedError, match=r"3\.10 after its discount, ours 3\.60"):
        gateway.credit_note(invoice_id, Decimal("3.60"), "late usage", "cn-1")

    previews = [r for r in http.requests if r.path == "/v1/credit_notes/preview"]
    assert [(r.method, r.params.get("refund_amount"), r.params.get("out_of_band_amount")) for r in previews] == [
        ("get", None, None)
    ]
    assert _notes_sent(http) == []
    assert "credit_note" not in http.emulator.objects
    assert http.emulator.objects["invoice"][invoice_id]["amount_due"] == 2750
    assert http.emulator.refused_params == []


def test_given_an_undiscounted_taxed_open_invoice_when_reduced_then_no_preview_and_the_note_as_before() -> None:
    """10.00 + 10 % open, no discount: a 4.00 note is made as before with no preview (its figures are Stripe's own:
    4.00 + 0.40 off, 6.60 asked) - the preview is for a discounted invoice, whose note lines give back a share."""
    gateway, http, invoice_id = _taxed("10", [GatewayLine("Video minutes", Decimal("10.00"))], card=False)

    gateway.credit_note(invoice_id, Decimal("4.00"), "late usage", "cn-1")

    assert [r for r in http.requests if r.path == "/v1/credit_notes/preview"] == []
    assert http.emulator.objects["invoice"][invoice_id]["amount_due"] == 660
    assert http.emulator.refused_params == []


def test_given_a_partly_paid_open_invoice_when_a_note_exceeds_what_it_asks_then_the_rest_must_be_settled() -> None:
    """Stripe's rule is the invoice's ``amount_remaining``, not its status: a note first lowers what is left to pay,
    not below zero (its pre-payment part); the rest (post-payment) must be settled by its credit, refund and
    out-of-band amounts. 10.00 + 10 % = 11.00 open, 8.00 of it paid: 3.00 remaining. A 4.00 line credit is 4.40:
    3.00 off what is left, 4.40 - 3.00 = 1.40 to settle - refused with none (preview and create), made with 1.40 out
    of band: 0.00 remaining, 8.00 due and paid (11.00 - 3.00), 3.00 pre- and 1.40 post-payment (before: the open
    invoice's note made with nothing settled, 3.00 - 4.40 remaining below zero)."""
    _, http, invoice_id = _taxed("10", [GatewayLine("Video minutes", Decimal("10.00"))], card=False)
    http.emulator.pay_part(invoice_id, 800)
    invoice = http.emulator.objects["invoice"][invoice_id]
    assert (invoice["status"], invoice["amount_paid"], invoice["amount_remaining"]) == ("open", 800, 300)
    client = stripe.StripeClient("sk_test_unit", http_client=http, max_network_retries=0)
    line_id = invoice["lines"]["data"][0]["id"]
    credited: CreditNotePreviewParamsLine = {"type": "invoice_line_item", "invoice_line_item": line_id, "amount": 400}
    with pytest.raises(stripe.InvalidRequestError, match="must equal"):
        client.v1.credit_notes.preview({"invoice": invoice_id, "lines": [credited]})
    with pytest.raises(stripe.InvalidRequestError, match="must equal"):
        client.v1.credit_notes.create({"invoice": invoice_id, "lines": [credited]})
    assert "credit_note" not in http.emulator.objects

    note = client.v1.credit_notes.create({"invoice": invoice_id, "lines": [credited], "out_of_band_amount": 140})

    assert (note.total, note.type) == (440, "mixed")
    invoice = http.emulator.objects["invoice"][invoice_id]
    assert (invoice["amount_due"], invoice["amount_paid"], invoice["amount_remaining"]) == (800, 800, 0)
    assert (invoice["pre_payment_credit_notes_amount"], invoice["post_payment_credit_notes_amount"]) == (300, 140)
    assert http.emulator.refused_params == []
