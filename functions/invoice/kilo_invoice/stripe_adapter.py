"""The payment gateway port (``kilo_invoice.ports.PaymentGateway``) on Stripe, with stripe-python 16.x.

The only module of the invoice function that imports ``stripe``. Money crosses as our Decimal dollars; Stripe takes
integer cents (and ``unit_amount_decimal`` in cents). Every POST carries an idempotency key derived from our id and the
step (``kilo:<invoice id>:create``); a rerun after Stripe's 24 h key expiry finds its earlier objects by ``metadata``
(invoices and credit notes by listing the customer's / invoice's objects, which is strongly consistent; customers by
Search). Errors (``kilo_billing.stripe_calls.whose``): 429, 409, 5xx and timeouts -> ``GatewayUnavailableError``
(retry the same call); our key, permissions, objects or idempotency keys refused (401, 403, ``resource_missing``,
``IdempotencyError``) -> ``GatewayMisconfiguredError`` (unavailable until fixed); the payment refused (a card declined,
Stripe's amount and state rules) -> ``GatewayRejectedError``. See docs/decisions.md (D48..3, D315).
"""

from __future__ import annotations

import hashlib
from collections.abc import Callable, Iterable, Mapping
from datetime import datetime
from decimal import ROUND_FLOOR, ROUND_HALF_UP, Decimal, localcontext
from fractions import Fraction
from typing import Any, Final, Literal, TypeVar, cast

import stripe
from stripe.params import (
    ChargeListParams,
    CouponCreateParams,
    CreditNoteCreateParams,
    CreditNoteCreateParamsLine,
    CreditNotePreviewParams,
    DisputeListParams,
    InvoiceAddLinesParamsLine,
    InvoiceCreateParams,
    InvoiceRetrieveParams,
    RefundCreateParams,
)

from kilo_billing.invoicing import CARD_MINIMUM
from kilo_billing.money import ZERO, allocate_cents, decimal_str, in_cents, money_str, round_money
from kilo_billing.stripe_calls import stripe_call, stripe_client
from kilo_billing.stripe_customers import bring_details, find_or_create, forget_details, idempotency_key, quoted
from kilo_invoice.ports import (
    GATEWAY_MAX_LINES,
    REFUND_METADATA,
    Customer,
    GatewayInvoice,
    GatewayInvoiceStatus,
    GatewayLine,
    GatewayMisconfiguredError,
    GatewayPartlyMisconfiguredError,
    GatewayPartlyRefundedError,
    GatewayPartlyUnavailableError,
    GatewayRejectedError,
    GatewayUnavailableError,
    InvoiceRequest,
    PaymentInvoice,
)

META_ACCOUNT = "kilo_account_id"
META_INVOICE = "kilo_invoice_id"
META_NUMBER = "kilo_invoice_number"
META_LINE = "kilo_line"
META_CREDIT = "kilo_credit_id"
META_REFUND = REFUND_METADATA
MAX_LINES = GATEWAY_MAX_LINES  # Stripe: at most 250 invoice items per invoice, added in one request
_STATUSES: frozenset[str] = frozenset({"draft", "open", "paid", "uncollectible", "void"})
_CENT = Decimal("0.01")
_T = TypeVar("_T")
_S = TypeVar("_S", bound=stripe.StripeObject)
_Settle = Literal["refund_amount", "out_of_band_amount"]  # how a paid invoice's note is settled


def dollars(amount_in_cents: int) -> Decimal:
    return (Decimal(amount_in_cents) / 100).quantize(_CENT)


def _plain(value: Decimal, max_places: int = 12) -> Decimal | None:
    """``value`` as a Decimal whose ``str`` has no exponent and at most ``max_places`` decimals, else None."""
    if value == value.to_integral_value():
        return value.quantize(Decimal(1))
    stripped = value.normalize()
    exponent = stripped.as_tuple().exponent
    if not isinstance(exponent, int) or -exponent > max_places:
        return None
    return stripped if "E" not in str(stripped) else None


def priced_line(line: GatewayLine) -> tuple[Decimal, Decimal] | None:
    """``(unit_amount_decimal in cents, quantity)`` when Stripe's rounding of their product reproduces our amount.

    Stripe rounds ``unit_amount_decimal x quantity`` to the nearest cent per line; its docs do not say how ties go
    (their example, 1.5 -> 2, fits half-up and half-to-even alike), so an exact tie is never sent as a price. Lines
    whose amount is not ``quantity x unit price`` (included usage at $0.00, proration, credits) are not either.
    None: send the amount, with quantity and unit price in the description.
    """
    if line.quantity is None or line.unit_price is None or line.amount < 0:
        return None
    unit = _plain(line.unit_price * 100)
    quantity = _plain(line.quantity)
    if unit is None or quantity is None or unit < 0 or quantity < 0:
        return None
    with localcontext() as context:
        context.prec = 80
        exact = unit * quantity
        if exact - exact.to_integral_value(rounding=ROUND_FLOOR) == Decimal("0.5"):
            return None
        nearest = exact.to_integral_value(rounding=ROUND_HALF_UP)  # not a tie: every "nearest" agrees
    return (unit, quantity) if nearest == in_cents(line.amount) else None


def described(line: GatewayLine) -> str:
    """The line's description; a usage line's with what was used and its allowance: its quantity is the billable
    units only, 0 for usage the allowance covers, and the policy shows customers what they used."""
    if line.used is None:
        return line.description
    allowance = "unlimited" if line.included is None else f"{decimal_str(line.included)} included"
    return f"{line.description} ({decimal_str(line.used)} used, {allowance})"


def describe(line: GatewayLine) -> str:
    """An amount line's description: ``described``, with quantity and unit price when it has them."""
    if line.quantity is None or line.unit_price is None:
        return described(line)
    return f"{described(line)} ({line.quantity} x ${line.unit_price})"


_key = idempotency_key  # the layer's one idempotency-key rule (kilo_billing.stripe_customers)


def _metadata(obj: Any) -> dict[str, str]:
    metadata = getattr(obj, "metadata", None)
    return {} if metadata is None else cast("dict[str, str]", metadata.to_dict())


_NOT_GIVEN: Final = ("failed", "canceled")  # a Refund's statuses whose money came back to our balance
# a failed Refund's ``failure_reason`` that is the card's bank's doing (the card lost, closed or expired, or its bank
# declined it; ``unknown`` counted with them): a new refund to that card would likely bounce. Stripe's others -
# ``insufficient_funds`` (our balance), ``merchant_request`` (ours), ``charge_for_pending_refund_disputed`` - are
# not the card's (D356)
_CARDS_BANK: Final = frozenset({"lost_or_stolen_card", "expired_or_canceled_card", "declined", "unknown"})


class StripePaymentGateway:
    """``PaymentGateway`` on a ``stripe.StripeClient`` (built with the API key from Secrets Manager)."""

    def __init__(self, client: stripe.StripeClient, *, currency: str = "usd", days_until_due: int = 30) -> None:
        self._client = client
        self._currency = currency
        self._days_until_due = days_until_due
        self._known: dict[str, str] = {}  # our invoice id -> Stripe's, learned in this process (Search lags)

    @classmethod
    def from_api_key(
        cls,
        api_key: str,
        *,
        max_network_retries: int = 2,
        timeout_seconds: float = 10,
        api_base: str | None = None,
        http_client: stripe.HTTPClient | None = None,
    ) -> StripePaymentGateway:
        """``timeout_seconds``, ``api_base``, ``http_client``: as ``kilo_billing.stripe_calls.stripe_client`` takes
        them (the invoice settings' ``stripe_timeout_seconds``)."""
        return cls(
            stripe_client(
                api_key,
                max_network_retries=max_network_retries,
                timeout_seconds=timeout_seconds,
                api_base=api_base,
                http_client=http_client,
            )
        )

    # ------------------------------------------------------------------ customers
    def ensure_customer(self, customer: Customer) -> str:
        # found or created as the account API does (kilo_billing.stripe_customers): the same requests
        return find_or_create(self._client, customer.account_id, customer.email, customer.name, self._call)

    def bring_details(self, customer_id: str, customer: Customer) -> None:
        bring_details(self._client, customer_id, customer.email, customer.name, self._call)

    def forget_details(self, customer_id: str) -> None:
        forget_details(self._client, customer_id, self._call)

    def set_default_payment_method(self, customer_id: str, payment_method: str) -> str:
        """Attach a card (a ``pm_...`` id, or a test token such as ``pm_card_visa``) and make it the one invoices
        charge - what ``checkout.session.completed`` (setup mode) calls for. Returns the attached card's id."""
        key = _key(customer_id, "attach", payment_method)
        card = self._call(
            lambda: self._client.v1.payment_methods.attach(
                payment_method, {"customer": customer_id}, {"idempotency_key": key}
            )
        )
        key = _key(customer_id, "default-card", card.id)
        self._call(
            lambda: self._client.v1.customers.update(
                customer_id, {"invoice_settings": {"default_payment_method": card.id}}, {"idempotency_key": key}
            )
        )
        return card.id

    def default_to_latest_card(self, customer_id: str) -> str | None:
        """The customer's newest card (Stripe lists newest first) becomes the default for invoices: after Checkout in
        setup mode that is the card just saved. Two calls; a repeat sends the same idempotency key."""
        cards = self._call(
            lambda: self._client.v1.payment_methods.list({"customer": customer_id, "type": "card", "limit": 1})
        )
        if not cards.data:
            return None
        card_id = str(cards.data[0].id)
        key = _key(customer_id, "default-card", card_id)
        self._call(
            lambda: self._client.v1.customers.update(
                customer_id, {"invoice_settings": {"default_payment_method": card_id}}, {"idempotency_key": key}
            )
        )
        return card_id

    def customer_account(self, customer_id: str) -> str | None:
        """One retrieve: the account in the customer's metadata (``ensure_customer`` wrote it); ``None`` when the
        customer is deleted, unknown, or carries no account of ours."""

        def retrieve() -> stripe.Customer | None:
            try:
                return self._client.v1.customers.retrieve(customer_id)
            except stripe.InvalidRequestError as exc:
                if exc.code == "resource_missing":
                    return None  # no such customer: not ours
                raise

        customer = self._call(retrieve)
        if customer is None or getattr(customer, "deleted", False):
            return None
        account = _metadata(customer).get(META_ACCOUNT)
        return account or None

    # ------------------------------------------------------------------ invoices
    def issue_invoice(self, request: InvoiceRequest) -> GatewayInvoice:
        if len(request.lines) > MAX_LINES:
            raise GatewayRejectedError(f"{len(request.lines)} lines: Stripe adds at most {MAX_LINES} in one request")
        if ZERO < request.total < CARD_MINIMUM:  # Stripe would mark it paid uncharged (a balance debit): D126
            raise GatewayRejectedError(
                f"{request.invoice_id}: {request.total} is below Stripe's minimum charge of {CARD_MINIMUM}: not sent"
            )
        # amounts become cents first: one that is no amount (``in_cents``' ValueError) stops before any POST (D284)
        sent, reduction = _sendable(request)
        lines = [self._line(request, index, line) for index, line in sent]
        subtotal = sum(in_cents(line.amount) for _, line in sent)
        invoice = self._find_for_customer(request.customer_id, request.invoice_id)
        if invoice is None:
            coupon = self._coupon(request, reduction) if reduction else None
            invoice = self._create_draft(request, coupon)
        self._known[request.invoice_id] = invoice.id
        if invoice.status == "draft":
            if not invoice.lines.data:
                invoice = self._add_lines(invoice.id, request.invoice_id, lines)
            if invoice.subtotal != subtotal:
                raise GatewayRejectedError(
                    f"Stripe's subtotal for {request.invoice_id} ({invoice.id}) is {dollars(invoice.subtotal)}, "
                    f"ours {dollars(subtotal)}: left as a draft, not finalized"
                )
            excluding = invoice.total_excluding_tax if invoice.total_excluding_tax is not None else invoice.subtotal
            if excluding != in_cents(request.total):  # its discount is not our negative lines (D432)
                raise GatewayRejectedError(
                    f"Stripe's total before tax for {request.invoice_id} ({invoice.id}) is {dollars(excluding)}, "
                    f"ours {request.total}: left as a draft, not finalized"
                )
            if invoice.starting_balance:  # a draft's starting balance is the customer's balance now
                raise GatewayRejectedError(
                    f"customer {request.customer_id} has a Stripe balance of {dollars(invoice.starting_balance)} "
                    f"(negative: a credit) that Stripe would apply to {request.invoice_id} ({invoice.id}), "
                    f"charging other than our {request.total}: left as a draft, not finalized"
                )
            invoice_id = invoice.id
            key = _key(request.invoice_id, "finalize")
            invoice = self._call(
                lambda: self._client.v1.invoices.finalize_invoice(
                    invoice_id, {"auto_advance": True}, {"idempotency_key": key}
                )
            )
        return self._view(invoice)

    def _coupon(self, request: InvoiceRequest, cents: int) -> str:
        """A one-off coupon of ``cents`` off (``amount_off``, once) for the invoice of ``request``: its negative lines,
        which Stripe refuses on an automatic-tax invoice, as a discount before tax (D432). Its id is ours, one per
        invoice, redeemed once (``max_redemptions`` 1): a rerun after Stripe pruned the idempotency key is told the id
        is taken (``resource_already_exists``) and reads it back - the same amount is redeemed again, another that no
        invoice redeemed deleted and made again, one redeemed refused naming it before the invoice is posted (D432
        amended (gtax))."""
        reductions = "; ".join(
            f"{describe(line)} {money_str(line.amount)}" for line in request.lines if line.amount < 0
        )
        coupon_id = _coupon_id(request.invoice_id)
        params: CouponCreateParams = {
            "id": coupon_id,
            "amount_off": cents,
            "currency": request.currency,
            "duration": "once",
            "max_redemptions": 1,
            "name": "Credits and reductions",
            "metadata": {META_INVOICE: request.invoice_id, META_ACCOUNT: request.account_id, "lines": reductions[:500]},
        }

        def create(step: str) -> bool:
            """Whether the coupon was made; False when its id is taken (an earlier try made it: read back)."""
            key = _key(request.invoice_id, step)

            def post() -> bool:
                try:
                    self._client.v1.coupons.create(params, {"idempotency_key": key})
                except stripe.InvalidRequestError as exc:
                    if exc.code == "resource_already_exists":
                        return False
                    raise
                return True

            return self._call(post)

        # the step names the cents: a recreate of another amount is not replayed as the earlier answer, and the
        # key differs from the one before ids (``coupon``, other parameters: Stripe's idempotency_error)
        if create(f"coupon-{cents}"):
            return coupon_id
        made = self._call(lambda: self._client.v1.coupons.retrieve(coupon_id))
        if (made.amount_off, made.currency) != (cents, request.currency):
            if made.times_redeemed:
                raise GatewayRejectedError(
                    f"Stripe's coupon {coupon_id} for {request.invoice_id} takes {dollars(made.amount_off or 0)} off "
                    f"({made.currency}), ours {dollars(cents)} ({request.currency}), and was redeemed "
                    f"{made.times_redeemed} of {made.max_redemptions} (its draft deleted in Stripe?); not issued "
                    f"(delete the coupon in Stripe to issue ours)"
                )
            # an earlier try of another amount made it and no invoice redeemed it: ours replaces it
            self._delete_coupon(coupon_id)
            if create(f"coupon-{cents}-after-{made.amount_off}-{made.currency}"):
                return coupon_id
            raise GatewayRejectedError(
                f"Stripe's coupon {coupon_id} for {request.invoice_id} was made again by another try while this one "
                f"replaced it; not issued (rerun the close)"
            )
        if not made.valid:
            raise GatewayRejectedError(
                f"Stripe's coupon {coupon_id} for {request.invoice_id} is no longer valid (redeemed "
                f"{made.times_redeemed} of {made.max_redemptions}: its draft deleted in Stripe?); "
                f"not issued (delete the coupon in Stripe to issue ours)"
            )
        return coupon_id

    def _drop_coupon(self, invoice: stripe.Invoice) -> None:
        """Delete D432's coupon(s) of ``invoice``, retrieved with its ``discounts`` expanded: each discount's coupon
        whose id is ours for the invoice (``_coupon_id``) or, one made before our ids (Stripe's id), whose metadata
        names our invoice - its draft deleted or its invoice voided by us, nothing else may redeem it. Any other
        coupon (one an operator set) is left. An invoice that redeemed it keeps its discount (Stripe: "deleting a
        coupon does not affect any customers who have already applied the coupon"); gone already (an earlier try):
        nothing to do (D432 amended (gtax))."""
        ours = _metadata(invoice).get(META_INVOICE)
        if not ours:
            return
        for discount in invoice.discounts or []:
            coupon_id = _field_id(getattr(discount, "source", None), "coupon")  # an unexpanded id: no source
            if coupon_id is None:
                continue
            if coupon_id != _coupon_id(ours) and self._coupon_invoice(coupon_id) != ours:
                continue
            self._delete_coupon(coupon_id)

    def _coupon_invoice(self, coupon_id: str) -> str | None:
        """Our invoice id in the coupon's metadata; None when it names none or is gone (404)."""

        def read() -> stripe.Coupon | None:
            try:
                return self._client.v1.coupons.retrieve(coupon_id)
            except stripe.InvalidRequestError as exc:
                if exc.code == "resource_missing":
                    return None
                raise

        coupon = self._call(read)
        return None if coupon is None else _metadata(coupon).get(META_INVOICE)

    def _delete_coupon(self, coupon_id: str) -> None:
        """``DELETE /v1/coupons/{id}``; one gone already (an earlier try): nothing to do."""

        def delete() -> None:
            try:
                self._client.v1.coupons.delete(coupon_id)
            except stripe.InvalidRequestError as exc:
                if exc.code != "resource_missing":
                    raise

        self._call(delete)

    def _create_draft(self, request: InvoiceRequest, coupon: str | None = None) -> stripe.Invoice:
        params: InvoiceCreateParams = {
            "customer": request.customer_id,
            "currency": request.currency,
            "auto_advance": False,  # a half-built draft must never finalize itself; finalize turns it on
            "pending_invoice_items_behavior": "exclude",
            "number": request.number,
            "automatic_tax": {"enabled": request.automatic_tax},
            "metadata": {
                **request.metadata,
                META_INVOICE: request.invoice_id,
                META_ACCOUNT: request.account_id,
                META_NUMBER: request.number,
            },
        }
        if coupon is not None:
            params["discounts"] = [{"coupon": coupon}]
        if request.charge_automatically:
            params["collection_method"] = "charge_automatically"
        else:
            params["collection_method"] = "send_invoice"
            params["days_until_due"] = self._days_until_due
        key = _key(request.invoice_id, "create")
        return self._call(lambda: self._client.v1.invoices.create(params, {"idempotency_key": key}))

    def _add_lines(self, stripe_id: str, invoice_id: str, lines: list[InvoiceAddLinesParamsLine]) -> stripe.Invoice:
        key = _key(invoice_id, "lines")
        return self._call(
            lambda: self._client.v1.invoices.add_lines(stripe_id, {"lines": lines}, {"idempotency_key": key})
        )

    @staticmethod
    def _line(request: InvoiceRequest, index: int, line: GatewayLine) -> InvoiceAddLinesParamsLine:
        param: InvoiceAddLinesParamsLine = {
            "metadata": {**line.metadata, META_INVOICE: request.invoice_id, META_LINE: str(index)},
        }
        if line.period_start is not None and line.period_end is not None:
            param["period"] = {"start": _seconds(line.period_start), "end": _seconds(line.period_end)}
        priced = priced_line(line)
        if priced is None:
            param["amount"] = in_cents(line.amount)
            param["description"] = describe(line)
        else:
            unit, quantity = priced
            param["description"] = described(line)
            param["quantity_decimal"] = quantity
            param["price_data"] = {
                "currency": request.currency,
                "product_data": {"name": described(line)},
                "unit_amount_decimal": unit,
                "tax_behavior": "exclusive",
            }
        return param

    def _find_for_customer(self, customer_id: str, invoice_id: str) -> stripe.Invoice | None:
        page = self._call(lambda: self._client.v1.invoices.list({"customer": customer_id, "limit": 100}))
        return self._call(lambda: self._first(page.auto_paging_iter(), META_INVOICE, invoice_id))  # later pages too

    def find_invoice(self, invoice_id: str) -> GatewayInvoice | None:
        known = self._known.get(invoice_id)
        if known is not None:
            return self._view(self._retrieve(known))
        found = self._call(
            lambda: self._client.v1.invoices.search(
                {"query": f"metadata[{quoted(META_INVOICE)}]:{quoted(invoice_id)}", "limit": 1}
            )
        )
        if not found.data:
            return None
        self._known[invoice_id] = found.data[0].id
        return self._view(found.data[0])

    def _retrieve(self, stripe_id: str, *, discounts: bool = False) -> stripe.Invoice:
        """The invoice; with ``discounts``, its discounts expanded (each its coupon: D432's to delete)."""
        params: InvoiceRetrieveParams = {"expand": ["discounts"]} if discounts else {}
        return self._call(lambda: self._client.v1.invoices.retrieve(stripe_id, params))

    @staticmethod
    def _view(invoice: stripe.Invoice) -> GatewayInvoice:
        status = invoice.status or "draft"
        if status not in _STATUSES:
            raise GatewayRejectedError(f"Stripe invoice {invoice.id} has an unknown status {status!r}")
        credited = (invoice.pre_payment_credit_notes_amount or 0) + (invoice.post_payment_credit_notes_amount or 0)
        return GatewayInvoice(
            invoice.id or "",
            _metadata(invoice).get(META_INVOICE, ""),
            cast("GatewayInvoiceStatus", status),
            dollars(invoice.total - credited),
            invoice.hosted_invoice_url,
            invoice.invoice_pdf,
        )

    # ------------------------------------------------------------------ corrections
    def credit_note(
        self, gateway_id: str, amount: Decimal, reason: str, credit_id: str, out_of_band: bool = False
    ) -> str:
        return self._note(gateway_id, amount, reason, credit_id, "out_of_band_amount" if out_of_band else None)

    def refund_note(self, gateway_id: str, amount: Decimal, reason: str, credit_id: str) -> str:
        return self._note(gateway_id, amount, reason, credit_id, "refund_amount")

    def _note(self, gateway_id: str, amount: Decimal, reason: str, credit_id: str, settle: _Settle | None) -> str:
        """A credit note of ``amount`` (before tax) on the invoice: open (``settle`` None), its amount due drops;
        paid, settled by ``settle`` - out of band (account credit of ours, D130) or refunded to the card (D433). A
        taxed note on a discounted invoice (D432's coupon) is previewed first, open or paid (``_note_total``)."""
        invoice = self._retrieve(gateway_id)
        notes = self._call(lambda: self._client.v1.credit_notes.list({"invoice": gateway_id, "limit": 100}))
        earlier = self._call(lambda: self._first(notes.auto_paging_iter(), META_CREDIT, credit_id))
        if earlier is not None:
            return earlier.id
        wanted = "open" if settle is None else "paid"
        if invoice.status != wanted:  # void by a revision made in Stripe: it names it (D343 amended)
            raise GatewayRejectedError(
                f"cannot credit {gateway_id}: it is {invoice.status}, not {wanted}",
                invoice.status,
                _field_id(invoice, "latest_revision"),
            )
        amount_in_cents = in_cents(amount)
        taxed = _charges_tax(invoice)
        lines, tax = (
            self._credited_lines(gateway_id, amount_in_cents) if taxed else _custom_line(reason, amount_in_cents)
        )
        params: CreditNoteCreateParams = {
            "invoice": gateway_id,
            "lines": lines,
            "memo": reason,
            "metadata": {META_CREDIT: credit_id, **_pick(_metadata(invoice), META_INVOICE, META_ACCOUNT)},
        }
        estimate = amount_in_cents + tax
        discounted = bool(invoice.total_discount_amounts)  # D432's coupon: a note gives back its share too
        if settle is not None:  # Stripe holds no balance of ours (D130)
            # a taxed invoice's note is ours and its tax, as Stripe works it out: its preview's total (D404)
            params[settle] = (
                self._note_total(gateway_id, lines, amount, estimate, settle, discounted) if taxed else estimate
            )
        elif taxed and discounted:  # what it takes off the amount due must be ours too (D433 amended (htax))
            self._note_total(gateway_id, lines, amount, estimate, None, discounted)
        key = _key(credit_id, "credit_note")
        note = self._call(lambda: self._client.v1.credit_notes.create(params, {"idempotency_key": key}))
        return note.id

    def _credited_lines(self, gateway_id: str, cents: int) -> tuple[list[CreditNoteCreateParamsLine], int]:
        """A taxed invoice's note as lines crediting its own lines (``invoice_line_item``: Stripe credits each with its
        tax in proportion, under manual tax rates and Stripe Tax alike): ``cents`` (before tax) split over its positive
        lines in proportion to their amounts (``money.allocate_cents``: whole cents adding up to ``cents``); a line's
        part of 0 is left out. More than its positive lines hold: refused, nothing made (D404). With them, an estimate
        of the note's tax in cents: each part's share of its line's own tax (``taxes``), rounded half-up - only what a
        paid invoice's preview is first asked with, Stripe's answer decides (``_note_total``, D404 amended (cr2))."""
        invoice_lines = self._listed(lambda: self._client.v1.invoices.line_items.list(gateway_id, {"limit": 100}))
        positive = [
            (line.id, int(line.amount), sum(int(tax.amount) for tax in line.taxes or ()))
            for line in invoice_lines
            if line.id and int(line.amount) > 0
        ]
        held = sum(amount for _, amount, _ in positive)
        if not positive or cents > held:
            raise GatewayRejectedError(
                f"cannot credit {dollars(cents)} on {gateway_id}: its lines hold {dollars(held)}"
            )
        parts = allocate_cents(dollars(cents), [amount for _, amount, _ in positive])
        credited = [(line, part) for line, part in zip(positive, parts, strict=True) if part > 0]
        # each part's tax share, in dollars (cents x its line's tax / its line's amount / 100), half-up to the cent
        tax = sum(
            in_cents(round_money(Fraction(line_tax * in_cents(part), line * 100)))
            for (_, line, line_tax), part in credited
        )
        lines: list[CreditNoteCreateParamsLine] = [
            {"type": "invoice_line_item", "invoice_line_item": line_id, "amount": in_cents(part)}
            for (line_id, _, _), part in credited
        ]
        return lines, tax

    def _note_total(
        self,
        gateway_id: str,
        lines: list[CreditNoteCreateParamsLine],
        amount: Decimal,
        estimate: int,
        settle: _Settle | None = "out_of_band_amount",
        discounted: bool = False,
    ) -> int:
        """What Stripe makes of a paid invoice's note of these ``lines`` - ours and the tax it works out - in cents:
        its preview (a GET: nothing made), asked as the note will be made, with ``estimate`` as its out-of-band amount
        (Stripe's rule for a paid invoice's note: its settled amounts add up to its total). A preview answering
        another total (its rule not applied to previews) is asked again with that total, which must then hold. Its
        amount before tax not ours (a line's part refused or rounded otherwise): refused, nothing made - our books
        record ``amount`` before tax (D384) and must be what Stripe credits (D404, amended (cr2)). On an invoice with
        discounts (``discounted``: D432's coupon) a note's line also gives back its share of the line's discount (a
        credit note line's ``discount_amount``): its ``total_excluding_tax`` ("including discounts") must be ours too,
        or it is refused (D432 amended (ftax)). An open invoice's note (``settle`` None: it lowers the amount due, no
        settled amount asked) is previewed and checked the same way, its total Stripe's (D433 amended (htax))."""
        for _ in range(2):
            preview: CreditNotePreviewParams = {"invoice": gateway_id, "lines": lines}
            if settle is not None:
                preview[settle] = estimate
            note = self._preview(preview)
            subtotal = int(note.subtotal_excluding_tax if note.subtotal_excluding_tax is not None else note.subtotal)
            if subtotal != in_cents(amount):
                raise GatewayRejectedError(
                    f"Stripe's credit note on {gateway_id} would credit {dollars(subtotal)} before tax, ours {amount}: "
                    "not made"
                )
            # its total before tax is not shown (nullable): not known to be ours, refused as well
            excluding = -1 if note.total_excluding_tax is None else int(note.total_excluding_tax)
            if discounted and excluding != in_cents(amount):
                raise GatewayRejectedError(
                    f"Stripe's credit note on {gateway_id} would credit {dollars(excluding)} after its discount, "
                    f"ours {amount}: not made"
                )
            if settle is None or int(note.total) == estimate:
                return int(note.total)
            estimate = int(note.total)
        raise GatewayRejectedError(
            f"Stripe's credit note on {gateway_id} previews another total each time it is asked: not made"
        )

    def _preview(self, params: CreditNotePreviewParams) -> stripe.CreditNote:
        return self._call(lambda: self._client.v1.credit_notes.preview(params))

    def refund(self, gateway_id: str, amount: Decimal | None, refund_id: str, to_failed_card: bool = False) -> str:
        """Refund ``amount`` (None: all that is left of each payment, D384) of a paid invoice from its payments,
        oldest first, each up to what is left of it (an
        invoice paid in several payments has a payment intent per payment; a refund is made on one). Refunds made
        earlier for ``refund_id`` (found by metadata, on every payment) count: a rerun refunds only what is still
        missing. Returns the refund ids, comma-separated when it took more than one payment. Stripe refusing a payment's
        refund after others' were made (now or by an earlier run): ``GatewayPartlyRefundedError`` with what was made
        (D329); Stripe not reached (or our key refused) for a payment after others' were made:
        ``GatewayPartlyUnavailableError`` with what was made, the request still pending (D358 amended). A payment by
        a card whose bank returned a refund (``failed`` for a card's reason, ``_CARDS_BANK``) - of this payment,
        another of the invoice or any of the customer's charges, the card told by its fingerprint, else its payment
        method (D355, D356) - gets no new money: the others are taken, and a request they cannot hold is refused as a
        whole before anything is made - unless ``to_failed_card`` (the operator's explicit word), which takes those
        payments last (D340 amended). A payment of this invoice whose charge is disputed has its Disputes read (no
        other charge's): left out when one says the charge is not refundable (``is_charge_refundable`` false: a
        chargeback open or lost - a won one too, as far as is known): Stripe refuses its refund, and the others are
        taken (D359); an inquiry's payment (refundable) is refunded too (D359 amended), taken last unless the request
        covers its rest in full: only a full refund resolves an inquiry (D359 amended (wd3))."""
        invoice = self._retrieve(gateway_id)
        if invoice.status != "paid":
            raise GatewayRejectedError(f"cannot refund {gateway_id}: it is {invoice.status}, not paid")
        payments = self._listed(
            lambda: self._client.v1.invoice_payments.list({"invoice": gateway_id, "status": "paid", "limit": 100})
        )
        paid = [
            (intent, int(payment.amount_paid or 0))
            for payment in sorted(payments, key=lambda p: (p.created, p.id))
            if (intent := _intent_id(payment.payment)) is not None
        ]
        if not paid:
            raise GatewayRejectedError(f"{gateway_id} has no card payment to refund")
        cards, bank_returned, disputed_charges = self._returned_cards(_field_id(invoice, "customer"))
        # only this invoice's disputed payments have their Disputes read: another invoice's dispute (or a key
        # without Disputes read) never touches this refund (D359 amended (wd2))
        read = {
            intent: self._refundability(disputed_charges[intent]) for intent, _ in paid if intent in disputed_charges
        }
        # a payment under an open inquiry is taken last unless refunded in full: only a full refund of its charge
        # resolves the inquiry, a part leaves it open to escalate (D359 amended (wd3))
        disputed, inquiries = ({i for i, (found, _) in read.items() if found == kind} for kind in (None, "inquiry"))
        made: list[str] = []
        undone: list[stripe.Refund] = []  # this request's refunds made and then failed or canceled (never made again)
        room: list[tuple[str, int]] = []  # (payment intent, cents left to refund on it)
        shut: list[tuple[str, int]] = []  # the same, for payments left out for their dispute (not refundable)
        earlier = 0  # cents this request's refunds made before (an earlier run's)
        bounced: list[tuple[str, int]] = []  # the same, for payments by a card whose bank returned a refund
        for intent, paid_cents in paid:
            refunds = self._refunds_of(intent)
            mine = [r for r in refunds if _metadata(r).get(META_REFUND) == refund_id]
            earlier += sum(r.amount for r in mine)  # failed ones too: made, then failed - never made again silently
            made += [r.id for r in mine]
            undone += [r for r in mine if r.status in _NOT_GIVEN]
            used = [r for r in refunds if r.status not in _NOT_GIVEN or r.id in made]  # this card's failed one too
            # a payment whose dispute says it is not refundable is left out: Stripe refuses a charged-back charge's
            # refund (charge_disputed), which would refuse the request before the other payments are tried (D359)
            # (what its chargebacks lost is gone for good: not left on it, D384 amended)
            left = paid_cents - sum(r.amount for r in used) - (read[intent][1] if intent in disputed else 0)
            card = cards.get(intent, intent)  # a payment whose card is not known stands for itself
            for refund in refunds:  # listed by its payment: counted even if the customer's charges missed it
                if _returned_by_bank(refund):
                    bank_returned.setdefault(card, {})[refund.id] = refund.failure_reason or "unknown"
            (shut if intent in disputed else bounced if card in bank_returned else room).append((intent, left))
        asked, wanted = _asked_of(gateway_id, amount, earlier, room + bounced)
        try:
            elsewhere = _room_left(gateway_id, amount, room, shut)
            if wanted > elsewhere + sum(left for _, left in bounced if left > 0):
                raise GatewayRejectedError(
                    f"cannot refund {dollars(wanted)} more on {gateway_id}: "
                    f"{dollars(elsewhere + sum(left for _, left in bounced if left > 0))} of its payments is left to "
                    f"refund{_DISPUTED_LEFT_OUT if any(intent in disputed for intent, _ in paid) else ''}"
                )
            if wanted > elsewhere and not to_failed_card:
                raise GatewayRejectedError(
                    _refused_for_failed_card(gateway_id, wanted, elsewhere, room, bounced, cards, bank_returned)
                )
            room = _inquiries_last(room, wanted, inquiries)
            room += bounced  # the operator's explicit word: the returned card's payments last
            for intent, left in room:
                if wanted <= 0:
                    break
                if left <= 0:
                    continue
                take = min(left, wanted)
                params: RefundCreateParams = {
                    "payment_intent": intent,
                    "amount": take,
                    "reason": "requested_by_customer",
                    "metadata": {META_REFUND: refund_id, **_pick(_metadata(invoice), META_INVOICE, META_ACCOUNT)},
                }
                key = _key(refund_id, "refund") if intent == paid[0][0] else _key(refund_id, "refund", intent)
                made.append(self._create_refund(params, key))
                wanted -= take
        except (GatewayRejectedError, GatewayUnavailableError) as exc:
            if wanted >= asked:
                raise  # nothing of it refunded: refused as a whole - or, not reached, the request pending as it is
            raise _made_in_part(exc, gateway_id, asked, wanted, made, undone) from exc
        return ",".join(made)

    def _refunds_of(self, intent: str) -> list[stripe.Refund]:
        """A payment intent's refunds, failed and canceled ones included (``_NOT_GIVEN``: their money came back): a
        request's own failed refund counts as made for it - a rerun after Stripe's idempotency keys expired (24 h)
        does not refund the same card again on its own (D340 amended); another's failed one leaves its
        amount refundable again, though only with ``to_failed_card`` (D340 amended, failed card)."""
        return self._listed(lambda: self._client.v1.refunds.list({"payment_intent": intent, "limit": 100}))

    def _returned_cards(
        self, customer_id: str | None
    ) -> tuple[dict[str, str], dict[str, dict[str, str]], dict[str, str]]:
        """The customer's charges, one list call with their Refunds (failed ones too): each payment intent's card
        (``_card_of``), and the cards whose bank returned a refund of ours or the dashboard's, on any of the
        customer's invoices (a card whose bank returned our money is suspect for this customer: D355) -> the
        refund ids and Stripe's ``failure_reason``; and the payment intents whose charge that paid is ``disputed``
        -> that charge's id (its Disputes are read by the caller, for the invoice's own payments only:
        ``_refundability``, D359 amended). A charge with more refunds than the expanded list holds has them listed
        by its payment intent or charge."""
        cards: dict[str, str] = {}
        returned: dict[str, dict[str, str]] = {}
        disputed: dict[str, str] = {}
        if customer_id is None:
            return cards, returned, disputed
        params: ChargeListParams = {"customer": customer_id, "limit": 100, "expand": ["data.refunds"]}
        for charge in self._listed(lambda: self._client.v1.charges.list(params)):
            card = _card_of(charge) or charge.id
            intent = _field_id(charge, "payment_intent")
            if intent is not None and charge.status == "succeeded":
                # the card that paid: a declined attempt on the same intent (an invoice retried with another card)
                # is listed too, newest first - it never names the intent's card (D355, review 4)
                cards[intent] = card
                if getattr(charge, "disputed", False):
                    disputed[intent] = charge.id
            listed = getattr(charge, "refunds", None)
            if listed is not None and not listed.has_more:
                refunds = list(listed.data)
            else:
                refunds = self._refunds_of_charge(charge.id)
            for refund in refunds:
                if _returned_by_bank(refund):
                    returned.setdefault(card, {})[refund.id] = refund.failure_reason or "unknown"
        return cards, returned, disputed

    def _refundability(self, charge_id: str) -> tuple[str | None, int]:
        """Whether Stripe refunds a ``disputed`` charge, and the cents its Disputes closed ``lost`` took for good (gone:
        never left on the charge to refund, D384 amended). Whether: None when it refuses - one of its Disputes says
        the charge is not refundable (``is_charge_refundable`` false: a chargeback open or lost; a won one as far as is
        known - Stripe's field is followed), or none is listed (``disputed`` is all that is known); else
        ``"inquiry"`` while one of them is an inquiry still open (``warning_needs_response``/``warning_under_review``:
        refundable, and resolved only by a full refund), ``"refundable"`` otherwise. One list call per disputed charge
        of the invoice only (API 2026-10-28: a Charge names no dispute to expand)."""
        params: DisputeListParams = {"charge": charge_id, "limit": 100}
        disputes = self._listed(lambda: self._client.v1.disputes.list(params))
        lost = sum(int(dispute.amount or 0) for dispute in disputes if dispute.status == "lost")
        if not disputes or any(not dispute.is_charge_refundable for dispute in disputes):
            return None, lost
        return "inquiry" if any(dispute.status in _INQUIRY_OPEN for dispute in disputes) else "refundable", lost

    def _refunds_of_charge(self, charge_id: str) -> list[stripe.Refund]:
        return self._listed(lambda: self._client.v1.refunds.list({"charge": charge_id, "limit": 100}))

    def _create_refund(self, params: RefundCreateParams, key: str) -> str:
        return self._call(lambda: self._client.v1.refunds.create(params, {"idempotency_key": key})).id

    # ------------------------------------------------------------------ payments
    def payment_refs(self, gateway_id: str) -> tuple[str, ...]:
        """The invoice's paid InvoicePayments (one list call; Stripe surfaces the payment intent, or the charge when it
        has no intent - API 2025-03-31 on: invoices no longer carry ``charge``/``payment_intent``)."""
        payments = self._listed(
            lambda: self._client.v1.invoice_payments.list({"invoice": gateway_id, "status": "paid", "limit": 100})
        )
        refs: list[str] = []
        for payment in sorted(payments, key=lambda p: (p.created, p.id)):
            for ref in (_field_id(payment.payment, "payment_intent"), _field_id(payment.payment, "charge")):
                if ref is not None and ref not in refs:
                    refs.append(ref)
        return tuple(refs)

    def invoice_for_payment(self, payment_ref: str) -> PaymentInvoice | None:
        """One list call filtered by the payment intent (Stripe filters invoice payments by intent, not by charge),
        then the invoice it names read for our ``kilo_invoice_id`` metadata (D383 amended)."""
        if not payment_ref.startswith("pi_"):
            return None
        page = self._call(
            lambda: self._client.v1.invoice_payments.list(
                {"payment": {"type": "payment_intent", "payment_intent": payment_ref}, "limit": 1}
            )
        )
        found = _field_id(page.data[0], "invoice") if page.data else None
        if found is None:
            return None
        invoice = self._retrieve(found)
        ours = _metadata(invoice).get(META_INVOICE)
        revised = getattr(invoice, "from_invoice", None)
        revises = _field_id(revised, "invoice") if revised is not None else None
        return PaymentInvoice(found, ours if isinstance(ours, str) and ours else None, revises)

    def void(self, gateway_id: str) -> None:
        invoice = self._retrieve(gateway_id, discounts=True)
        if invoice.status != "open":
            raise GatewayRejectedError(f"only open invoices can be voided ({gateway_id} is {invoice.status})")
        self._drop_coupon(invoice)  # first: a rerun finding the invoice void does not come back here
        key = _key(gateway_id, "void")
        self._call(lambda: self._client.v1.invoices.void_invoice(gateway_id, {}, {"idempotency_key": key}))

    def delete_draft(self, gateway_id: str) -> bool:
        """No idempotency key: Stripe takes them on POST only. A DELETE sent again after a lost answer (the SDK's
        retry) finds the draft gone: 404 ``resource_missing`` on the draft this run just found by our key - deleted,
        not our setting wrong (False: said so; D338 amended, rh2 1). A draft's D432 coupon is deleted first, so a
        try after one whose answer was lost finds neither (D432 amended (gtax))."""
        held = True
        try:
            invoice = self._retrieve(gateway_id, discounts=True)
            if invoice.status == "draft":  # one no longer a draft: Stripe refuses its delete below, nothing dropped
                self._drop_coupon(invoice)
            self._call(lambda: self._client.v1.invoices.delete(gateway_id))
        except GatewayMisconfiguredError as exc:
            cause = exc.__cause__
            if not (isinstance(cause, stripe.InvalidRequestError) and cause.code == "resource_missing"):
                raise
            held = False
        self._known = {ours: stripe_id for ours, stripe_id in self._known.items() if stripe_id != gateway_id}
        return held

    # ------------------------------------------------------------------ plumbing
    @staticmethod
    def _first(objects: Iterable[_T], metadata_key: str, value: str) -> _T | None:
        for obj in objects:
            if _metadata(obj).get(metadata_key) == value:
                return obj
        return None

    @classmethod
    def _listed(cls, operation: Callable[[], stripe.ListObject[_S]]) -> list[_S]:
        """Every object of a list call, all its pages: the later pages' calls mapped as the first's (a 429 on page 2
        is Stripe unavailable, not a raw SDK error)."""
        return cls._call(lambda: list(operation().auto_paging_iter()))

    @staticmethod
    def _call(operation: Callable[[], _T]) -> _T:
        """Run one SDK call (its own retries included) and map what Stripe says to the port's two errors."""
        return stripe_call(operation, GatewayUnavailableError, GatewayRejectedError, GatewayMisconfiguredError)


_DISPUTED_LEFT_OUT = " (a disputed payment left out: Stripe refuses its refund)"  # its dispute: not refundable
_INQUIRY_OPEN: Final = frozenset({"warning_needs_response", "warning_under_review"})


def _inquiries_last(room: list[tuple[str, int]], wanted: int, inquiries: set[str]) -> list[tuple[str, int]]:
    """``room`` (payment intent, cents left on it; oldest first) in the order a refund of ``wanted`` cents takes
    it: a payment under an open inquiry whose whole rest the request still covers first (refunded in full, the
    inquiry is resolved), then the others oldest first, then the inquiries it cannot cover - last, so a part goes
    on them only when the other payments cannot hold it (a partial refund leaves an inquiry open to escalate:
    Stripe, D359 amended (wd3))."""
    covered: list[tuple[str, int]] = []
    others: list[tuple[str, int]] = []
    partly: list[tuple[str, int]] = []
    for intent, left in room:
        if intent not in inquiries:
            others.append((intent, left))
        elif 0 < left <= wanted:
            covered.append((intent, left))
            wanted -= left
        else:
            partly.append((intent, left))
    return covered + others + partly


def _coupon_id(invoice_id: str) -> str:
    """D432's coupon's id for our invoice, one per invoice: ``kilo_`` and 32 hex digits of the SHA-256 of our id -
    letters, digits and ``_`` only (our ids hold ``/`` and an account's ``:@+=``; Stripe documents no character rule
    for a coupon id, "Unique string of your choice"), the id itself in the coupon's metadata (D432 amended (gtax))."""
    return "kilo_" + hashlib.sha256(invoice_id.encode()).hexdigest()[:32]


def _charges_tax(invoice: stripe.Invoice) -> bool:
    """Whether Stripe charged tax on the invoice (Stripe Tax or manual tax rates): its total is not its total
    excluding tax. Its credit notes must credit that tax too (D404)."""
    excluding = getattr(invoice, "total_excluding_tax", None)
    return excluding is not None and int(excluding) != int(invoice.total)


def _sendable(request: InvoiceRequest) -> tuple[list[tuple[int, GatewayLine]], int]:
    """The lines of ``request`` to send (with their index: their ``kilo_line`` metadata) and the cents to take off
    them as a discount. Stripe refuses a negative line on an automatic-tax invoice (the SDK's docstring of
    ``automatic_tax.enabled``: "incompatible invoice items (... negative amounts, or tax_behavior=unspecified) cannot
    be added to automatic tax invoices"): there ours - account credit applied, a fee true-up or late usage that nets
    down, a folded line netting down - add up to one ``amount_off`` discount of the invoice, which Stripe Tax takes
    off before tax (the invoice's ``total_excluding_tax`` includes its discounts): the taxed base is ours, as the
    negative lines would give (D432). Without automatic tax every line is sent as it is (D404)."""
    if not request.automatic_tax:
        return list(enumerate(request.lines)), 0
    sent = [(index, line) for index, line in enumerate(request.lines) if line.amount >= 0]
    return sent, -sum(in_cents(line.amount) for line in request.lines if line.amount < 0)


def _custom_line(reason: str, cents: int) -> tuple[list[CreditNoteCreateParamsLine], int]:
    """An untaxed invoice's note: our amount as one custom line (D130), no tax."""
    return [{"type": "custom_line_item", "description": reason, "quantity": 1, "unit_amount": cents}], 0


def _returned_by_bank(refund: stripe.Refund) -> bool:
    """A Refund the card's bank returned: ``failed`` for one of the card's reasons (``_CARDS_BANK``; none given reads
    as ``unknown``). A failure for another reason (our balance, our request, a dispute) says nothing of the card."""
    return refund.status == "failed" and (getattr(refund, "failure_reason", None) or "unknown") in _CARDS_BANK


def _asked_of(gateway_id: str, amount: Decimal | None, earlier: int, room: list[tuple[str, int]]) -> tuple[int, int]:
    """(asked, still wanted) in cents of a refund request whose earlier runs made ``earlier``: ``amount``, or with
    None all that is left of each payment (``room``: payment intent, cents left) beside what they made - a taxed
    invoice's "all"/"the rest", exact to the cent (D384); nothing left and nothing made is refused."""
    if amount is not None:
        asked = in_cents(amount)
        return asked, asked - earlier
    left = sum(cents for _, cents in room if cents > 0)
    if left + earlier == 0:
        raise GatewayRejectedError(f"cannot refund the rest of {gateway_id}: nothing of its payments is left")
    return left + earlier, left


def _room_left(
    gateway_id: str, amount: Decimal | None, room: list[tuple[str, int]], shut: list[tuple[str, int]]
) -> int:
    """The cents left on ``room``'s payments (payment intent, cents left). "All that is left" (``amount`` None) is
    refused as a whole when a payment left out for its dispute (``shut``, the same; Stripe will not refund it) holds
    money: the other payments alone would give back less than the invoice keeps, and ours would record it all
    (D384 amended, review rfs)."""
    left_out = sum(cents for _, cents in shut if cents > 0)
    if amount is None and left_out > 0:
        raise GatewayRejectedError(
            f"cannot refund all that is left of {gateway_id}: {dollars(left_out)} of it is on a payment Stripe will "
            f"not refund{_DISPUTED_LEFT_OUT}"
        )
    return sum(cents for _, cents in room if cents > 0)


def _made_in_part(
    exc: Exception, gateway_id: str, asked: int, wanted: int, made: list[str], undone: list[stripe.Refund]
) -> Exception:
    """A refund request's failure after part of it was made (``asked - wanted`` cents, now or by an earlier run):
    refused for good -> ``GatewayPartlyRefundedError`` (D329); a payment's call not answered or our key refused ->
    ``GatewayPartlyUnavailableError``, the request still pending (D358 amended). Both say what was made."""
    failed = sum(r.amount for r in undone)
    if isinstance(exc, GatewayUnavailableError):
        partly = (
            GatewayPartlyMisconfiguredError
            if isinstance(exc, GatewayMisconfiguredError)
            else GatewayPartlyUnavailableError
        )
        return partly(
            f"{dollars(asked - wanted - failed)} of {dollars(asked)} refunded on {gateway_id} ({', '.join(made)})"
            f"{_undone_said(undone)} before the next payment's refund failed: {exc}",
            dollars(asked - wanted - failed),  # given back (now or by an earlier run), not what failed or was canceled
        )
    return GatewayPartlyRefundedError(
        f"{dollars(asked - wanted - failed)} of {dollars(asked)} refunded on {gateway_id} ({', '.join(made)})"
        f"{_undone_said(undone)}; the rest refused: {exc}",
        dollars(asked - wanted),  # made at the processor, the failed part too: the failure takes it off
    )


def _undone_said(undone: list[stripe.Refund]) -> str:
    """A request's own refunds made then failed or canceled, as the partial refusal says them: failed at the card's
    bank when its bank returned them all, else with Stripe's reasons; canceled ones said as canceled (review 4)."""
    failed = [r for r in undone if r.status != "canceled"]
    canceled = [r for r in undone if r.status == "canceled"]
    said = ""
    if failed:
        where = (
            "at the card's bank"
            if all(_returned_by_bank(r) for r in failed)
            else f"(Stripe: {', '.join(sorted({r.failure_reason or 'no reason given' for r in failed}))})"
        )
        said += f"; {dollars(sum(r.amount for r in failed))} made then failed {where} (not sent again)"
    if canceled:
        said += f"; {dollars(sum(r.amount for r in canceled))} made then canceled (not sent again)"
    return said


def _card_of(charge: Any) -> str | None:
    """The card that paid a charge: its fingerprint (the same for the same card number, whatever the payment method
    object), else its payment method; None when the charge names neither."""
    details = getattr(charge, "payment_method_details", None)
    card = getattr(details, "card", None) if details is not None else None
    fingerprint = getattr(card, "fingerprint", None) if card is not None else None
    if fingerprint:
        return f"card {fingerprint}"
    method = _field_id(charge, "payment_method")
    return f"payment method {method}" if method else None


def _refused_for_failed_card(
    gateway_id: str,
    wanted: int,
    elsewhere: int,
    room: list[tuple[str, int]],
    bounced: list[tuple[str, int]],
    cards: Mapping[str, str],
    returned: Mapping[str, Mapping[str, str]],
) -> str:
    """Why a refund is refused before anything is made: how much would go back to which card (its payments, the
    refunds its bank returned and why) and what the other payments can take, if there are any."""
    payments = [intent for intent, left in bounced if left > 0]
    suspects = sorted({cards.get(intent, intent) for intent in payments})
    why = "; ".join(
        f"{card}, paying {', '.join(i for i in payments if cards.get(i, i) == card)}: "
        + ", ".join(f"{refund} {reason}" for refund, reason in sorted(returned.get(card, {}).items()))
        for card in suspects
    )
    if not room:
        others = "the invoice has no payment by another card. Return it another way (a bank transfer)"
    elif elsewhere <= 0:
        others = "its payments by other cards have nothing left to refund. Return it another way (a bank transfer)"
    else:
        others = (
            f"at most {dollars(elsewhere)} can go to its other payments. Refund that and return the rest another way "
            "(a bank transfer)"
        )
    return (
        f"cannot refund {dollars(wanted)} more on {gateway_id}: {dollars(wanted - elsewhere)} of it would go back to "
        f"a card whose bank returned a refund ({why}) and would likely bounce again; {others}, or send it to that "
        "card again explicitly (--to-failed-card)"
    )


def _intent_id(payment: Any) -> str | None:
    return _field_id(payment, "payment_intent")


def _field_id(obj: Any, name: str) -> str | None:
    """An expandable field's id (a string, or the expanded object's ``id``); ``None`` when absent or null."""
    value = getattr(obj, name, None)
    if value is None or isinstance(value, str):
        return value
    return cast("str", value.id)


def _pick(values: Mapping[str, str], *keys: str) -> dict[str, str]:
    return {key: values[key] for key in keys if key in values}


def _seconds(moment: datetime) -> int:
    if moment.tzinfo is None:
        raise GatewayRejectedError(f"naive datetime {moment.isoformat()} in a line period")
    return int(moment.timestamp())


__all__ = ["StripePaymentGateway", "describe", "dollars", "priced_line"]
