"""A stateful emulation of exactly the Stripe endpoints the Stripe adapter uses, in-process.

Requests are seen as Stripe's servers see them (method, path, form-encoded parameters, ``Idempotency-Key``): each is
checked against the SDK's typed params (``kilo_dev.stripe_params``) and refused with Stripe's error shape when they do
not allow it. Responses are Stripe's published fixtures (``fixtures3.json``, MIT) with the emulated state laid over
them, so the SDK parses the same shapes it gets from Stripe. Idempotency keys replay the first successful response and
refuse a key reused with other parameters (Stripe's rules); ``expire_idempotency_keys`` forgets them (Stripe: 24 h).

Card payments: a charge_automatically invoice finalized with ``auto_advance`` is charged at once with the
customer's default payment method: ``pm_card_visa`` pays, ``pm_card_chargeCustomerFail`` is declined
(``invoice.payment_failed``; its failed charge stays on the invoice's PaymentIntent, and ``retry_payment`` pays that
same intent with another card, as Stripe does), no card leaves it open (Stripe would retry); a paid invoice has an
InvoicePayment naming its payment intent, whose charge names the intent (API 2026-10-28: neither names the
invoice). Events (``invoice.finalized``, ``invoice.paid``, ``invoice.payment_failed``, ``charge.refunded``,
``refund.created``, ``refund.failed``/``refund.updated``/``charge.refund.updated`` from ``fail_refund``, and
``charge.dispute.created``/``funds_withdrawn``/``closed``/``funds_reinstated`` from ``open_dispute``/``close_dispute``)
go to ``on_event``. A disputed charge's Disputes are listed by ``disputes.list``; ``refunds.create`` refuses
(``charge_disputed``) only a charge whose dispute is not refundable (``is_charge_refundable``), and a refund that
leaves an inquiry's charge refunded in full closes the inquiry (``warning_closed``, ``charge.dispute.closed``), as
Stripe documents; a partial refund leaves it open. The customer's
invoice balance follows Stripe's rules: a paid invoice's credit note with ``credit_amount`` credits it, finalization
applies it (and moves below-minimum amounts to it), and a draft's ``starting_balance`` shows it. Line amounts follow
Stripe's documented rule (``unit_amount_decimal`` x quantity rounded to the nearest cent per line); ties, which
Stripe's docs leave open, are rounded half-to-even here - the other way from our half-up - so a tie sent as a price
would show. Stripe Tax: an invoice with ``automatic_tax`` enabled has each line taxed at its customer's rate
(``set_tax_rate``; none set: no tax), exclusive, rounded half-up per line; a negative line, a line with
``tax_rates`` or of ``tax_behavior=unspecified`` is refused on it (Stripe's rule, the SDK's docstring); a credit note's
``invoice_line_item`` lines credit that line's tax in proportion (on a discounted line, its share of the discount
too, ``discount_amount``, and the tax of what is left), a ``custom_line_item`` credits no tax, and
``credit_notes/preview`` shows the note the same parameters would make, its settled amounts checked as its create checks
them (D404, amended (cr2)): a note first lowers the invoice's ``amount_remaining``, not below zero, and the rest - all
of a paid invoice's note, the part beyond what a partly paid open one asks (``pay_part``) - must be its credit, refund
and out-of-band amounts (D433 amended (htax)). An invoice's ``discounts`` (one ``amount_off`` coupon) are spread over
its positive lines before tax; coupons take the caller's ``id`` (a taken one refused ``resource_already_exists``) and
``max_redemptions``, and are read and deleted; an invoice's retrieve expands its ``discounts`` (Stripe's Discount
objects naming their coupon) (D432 amended (gtax)); a paid invoice's note with ``refund_amount`` refunds it on the
invoice's payments (D432, D433).

Used by the contract tests through ``EmulatorHTTPClient`` (a ``stripe.HTTPClient``) and by the stand-in server.
"""

from __future__ import annotations

import copy
import itertools
import json
import threading
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from decimal import ROUND_HALF_EVEN, ROUND_HALF_UP, Decimal, localcontext
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

import stripe

from kilo_dev.stripe_params import UnknownEndpointError, check_request, decode_form

FIXTURES_PATH = Path(__file__).resolve().parents[2] / "tests/fixtures/stripe/fixtures3.json"
PAYING_CARDS = frozenset({"pm_card_visa", "pm_card_mastercard"})
DECLINED_CARDS = frozenset({"pm_card_chargeCustomerFail"})
MINIMUM_CHARGE_CENTS = {"usd": 50}  # Stripe's minimum charge amount per currency (docs: currencies, minimums)
EMBEDDED_LIST_LIMIT = 10  # Stripe: an expanded list inside an object holds 10, with ``has_more`` for the rest
INVOICE_MAX_ITEMS = 250  # Stripe: "no more than 250 invoice items" on an invoice (changelog 2016-02-22)
Json = dict[str, Any]
# an inquiry (the network's pre-dispute) still open: refunding its payment in full closes it ``warning_closed``
_INQUIRY_OPEN = frozenset({"warning_needs_response", "warning_under_review"})
# a test card's own details (Stripe's test cards differ by brand, last4 and fingerprint); others keep the fixture's
CARD_DETAILS: Mapping[str, Json] = {
    "pm_card_mastercard": {"brand": "mastercard", "last4": "4444", "fingerprint": "EmuMastercard4444"},
}


def _tax_detail(amount: int, taxable: int) -> Json:
    """One exclusive tax of a line, an invoice or a credit note, as Stripe shows it (``taxes``/``total_taxes``)."""
    return {
        "amount": amount,
        "tax_behavior": "exclusive",
        "taxable_amount": taxable,
        "taxability_reason": "standard_rated",
        "type": "tax_rate_details",
        "tax_rate_details": {"tax_rate": "txr_emu_stripe_tax"},
    }


def _half_up(numerator: int, denominator: int) -> int:
    """``numerator`` / ``denominator`` (cents) rounded half-up to a whole cent."""
    return int((Decimal(numerator) / Decimal(denominator)).to_integral_value(ROUND_HALF_UP))


@dataclass
class _NoteFigures:
    """A credit note's figures in cents: its lines' amounts (``subtotal``, before discounts and tax), the discount
    they give back, their tax; the cents credited per invoice line and the note's lines as Stripe shows them."""

    subtotal: int = 0
    discount: int = 0
    tax: int = 0
    per_line: dict[str, int] = field(default_factory=dict)
    lines: list[Json] = field(default_factory=list)

    @property
    def total(self) -> int:
        return self.subtotal - self.discount + self.tax


def load_fixtures(path: Path = FIXTURES_PATH) -> Mapping[str, Json]:
    resources: Mapping[str, Json] = json.loads(path.read_text(encoding="utf-8"))["resources"]
    return resources


class StripeApiError(Exception):
    def __init__(self, status: int, message: str, error_type: str = "invalid_request_error", code: str = "") -> None:
        super().__init__(message)
        self.status = status
        self.body: Json = {"error": {"type": error_type, "message": message, **({"code": code} if code else {})}}


@dataclass
class Response:
    status: int
    body: Json
    headers: dict[str, str] = field(default_factory=dict)


@dataclass
class StripeEmulator:
    fixtures: Mapping[str, Json] = field(default_factory=load_fixtures)
    on_event: Callable[[Json], None] | None = None
    base_url: str = "https://stripe.test"
    objects: dict[str, dict[str, Json]] = field(default_factory=dict)  # kind -> id -> object
    events: list[Json] = field(default_factory=list)
    refused_params: list[str] = field(default_factory=list)  # every typed-params problem seen, for tests to assert on
    # Stripe Tax's rate for a customer's location, in percent (``set_tax_rate``): lines of its invoices with
    # ``automatic_tax`` enabled are taxed at it, exclusive; none set: no tax (a location Stripe does not collect in)
    tax_percent: dict[str, Decimal] = field(default_factory=dict)
    # the Stripe Tax settings' default tax behaviour, for lines whose price says none (README: set it to exclusive);
    # ``unspecified`` (no default set) refuses such lines on an automatic-tax invoice
    default_tax_behavior: str = "exclusive"
    _idempotency: dict[str, tuple[str, Response]] = field(default_factory=dict)
    _ids: itertools.count[int] = field(default_factory=lambda: itertools.count(1))
    _clock: itertools.count[int] = field(default_factory=lambda: itertools.count(1_790_000_000))
    _lock: threading.RLock = field(default_factory=threading.RLock)

    # ------------------------------------------------------------------ the HTTP boundary
    def handle(self, method: str, path: str, encoded: str, headers: Mapping[str, str]) -> Response:
        """One request as Stripe receives it: ``encoded`` is the query string (GET) or the form body (POST)."""
        with self._lock:
            key = next((value for name, value in headers.items() if name.lower() == "idempotency-key"), None)
            fingerprint = f"{method.lower()} {path} {encoded}"
            if method.lower() == "post" and key is not None and key in self._idempotency:
                seen, response = self._idempotency[key]
                if seen != fingerprint:
                    return self._error(
                        StripeApiError(
                            400,
                            f"Keys for idempotent requests can only be used with the same parameters (key {key}).",
                            "idempotency_error",
                        )
                    )
                return Response(response.status, copy.deepcopy(response.body), {"idempotent-replayed": "true"})
            try:
                response = Response(200, self._dispatch(method, path, encoded))
            except StripeApiError as error:
                return self._error(error)
            if method.lower() == "post" and key is not None:
                self._idempotency[key] = (fingerprint, Response(response.status, copy.deepcopy(response.body)))
            return response

    def expire_idempotency_keys(self) -> None:
        """What 24 hours do to Stripe's idempotency keys."""
        with self._lock:
            self._idempotency.clear()

    @staticmethod
    def _error(error: StripeApiError) -> Response:
        return Response(error.status, error.body)

    def _dispatch(self, method: str, path: str, encoded: str) -> Json:
        try:
            route, ids, params, problems = check_request(method, path, encoded)
        except UnknownEndpointError as error:
            raise StripeApiError(404, str(error)) from error
        if problems:
            self.refused_params.extend(f"{method.upper()} {path}: {problem}" for problem in problems)
            raise StripeApiError(400, "; ".join(problems), code="parameter_unknown")
        handler: Callable[[dict[str, str], Json], Json] = getattr(self, "_" + route.operation.replace(".", "_"))
        return handler(ids, params)

    # ------------------------------------------------------------------ helpers
    def _new_id(self, prefix: str) -> str:
        return f"{prefix}_emu{next(self._ids):08d}"

    def _from_fixture(self, resource: str, **values: Any) -> Json:
        obj = copy.deepcopy(self.fixtures[resource])
        obj.update(values)
        obj["livemode"] = False
        return obj

    def _store(self, kind: str, obj: Json) -> Json:
        self.objects.setdefault(kind, {})[obj["id"]] = obj
        return obj

    def _get(self, kind: str, object_id: str) -> Json:
        obj = self.objects.get(kind, {}).get(object_id)
        if obj is None:
            raise StripeApiError(404, f"No such {kind}: '{object_id}'", code="resource_missing")
        return obj

    def _list(self, kind: str, params: Json, keep: Callable[[Json], bool], url: str) -> Json:
        found = sorted(
            (obj for obj in self.objects.get(kind, {}).values() if keep(obj)),
            key=lambda obj: (obj["created"], obj["id"]),
            reverse=True,
        )
        if "starting_after" in params:
            ids = [obj["id"] for obj in found]
            found = found[ids.index(params["starting_after"]) + 1 :] if params["starting_after"] in ids else []
        limit = int(params.get("limit", 10))
        page = [self._view(kind, obj) for obj in found[:limit]]
        return {"object": "list", "data": page, "has_more": len(found) > limit, "url": url}

    def _search(self, kind: str, params: Json, url: str) -> Json:
        key, value = _metadata_query(params["query"])
        found = [
            self._view(kind, obj) for obj in self.objects.get(kind, {}).values() if obj["metadata"].get(key) == value
        ]
        return {"object": "search_result", "data": found, "has_more": False, "next_page": None, "url": url}

    def _view(self, kind: str, obj: Json) -> Json:
        """What Stripe answers: the stored object without the emulator's own ``_`` fields. A draft invoice's
        ``starting_balance`` is the customer's balance now (Stripe's docs: until the invoice is finalized)."""
        view = {key: value for key, value in copy.deepcopy(obj).items() if not key.startswith("_")}
        if kind == "invoice" and view.get("status") == "draft":
            customer = self.objects.get("customer", {}).get(str(view.get("customer")))
            view["starting_balance"] = int((customer or {}).get("balance") or 0)
        return view

    def _emit(self, event_type: str, obj: Json) -> None:
        event = self._from_fixture(
            "event",
            id=self._new_id("evt"),
            type=event_type,
            created=next(self._clock),
            data={"object": copy.deepcopy(obj)},
            pending_webhooks=1,
            request={"id": None, "idempotency_key": None},
        )
        event.pop("previous_attributes", None)
        self.events.append(event)
        if self.on_event is not None:
            self.on_event(event)

    # ------------------------------------------------------------------ customers and cards
    def _customers_create(self, ids: dict[str, str], params: Json) -> Json:
        customer = self._from_fixture(
            "customer",
            id=self._new_id("cus"),
            created=next(self._clock),
            email=params.get("email"),
            name=params.get("name"),
            metadata=dict(params.get("metadata") or {}),
            discount=None,
        )
        pm = params.get("payment_method")
        if pm is not None:
            customer["invoice_settings"]["default_payment_method"] = self._attach(pm, customer["id"])["id"]
        return self._store("customer", customer)

    def _customers_search(self, ids: dict[str, str], params: Json) -> Json:
        return self._search("customer", params, "/v1/customers/search")

    def _customers_retrieve(self, ids: dict[str, str], params: Json) -> Json:
        return self._view("customer", self._get("customer", ids["customer"]))

    def _customers_update(self, ids: dict[str, str], params: Json) -> Json:
        customer = self._get("customer", ids["customer"])
        for name in ("email", "name", "phone", "description", "address", "shipping"):
            if name in params:
                customer[name] = params[name] if params[name] != "" else None  # Stripe: "" unsets a field
        customer["metadata"].update(params.get("metadata") or {})
        default = (params.get("invoice_settings") or {}).get("default_payment_method")
        if default is not None:
            card = self._get("payment_method", default)
            if card["customer"] != customer["id"]:
                raise StripeApiError(400, f"The payment method {default} is not attached to {customer['id']}")
            customer["invoice_settings"]["default_payment_method"] = default
        return self._view("customer", customer)

    def _attach(self, payment_method: str, customer_id: str) -> Json:
        if payment_method in PAYING_CARDS | DECLINED_CARDS:
            card = self._from_fixture(
                "payment_method",
                id=self._new_id("pm"),
                created=next(self._clock),
                customer=customer_id,
                type="card",
                metadata={"emulator_card": payment_method},
            )
            card["card"] = {**card["card"], **CARD_DETAILS.get(payment_method, {})}
            return self._store("payment_method", card)
        card = self._get("payment_method", payment_method)
        card["customer"] = customer_id
        return card

    def _payment_methods_attach(self, ids: dict[str, str], params: Json) -> Json:
        customer = self._get("customer", params.get("customer", ""))
        return self._view("payment_method", self._attach(ids["payment_method"], customer["id"]))

    def _payment_methods_list(self, ids: dict[str, str], params: Json) -> Json:
        customer, kind = params.get("customer"), params.get("type")
        return self._list("payment_method", params,
                          lambda card: card["customer"] == customer and (kind is None or card["type"] == kind),
                          "/v1/payment_methods")  # fmt: skip

    def complete_setup(self, session_id: str, payment_method: str) -> Json:
        """The customer finishes a Checkout Session in setup mode (the hosted page's part): the card is attached to
        the session's customer - not made its default, as in Stripe - and ``checkout.session.completed`` is sent."""
        with self._lock:
            session = self._get("checkout.session", session_id)
            self._attach(payment_method, session["customer"])
            session["status"] = "complete"
            self._emit("checkout.session.completed", self._view("checkout.session", session))
            return self._view("checkout.session", session)

    # ------------------------------------------------------------------ invoices
    def _invoices_create(self, ids: dict[str, str], params: Json) -> Json:
        customer = self._get("customer", params.get("customer", ""))
        invoice_id = self._new_id("in")
        invoice = self._from_fixture(
            "invoice",
            id=invoice_id,
            created=next(self._clock),
            customer=customer["id"],
            customer_email=customer["email"],
            customer_name=customer["name"],
            currency=params.get("currency", "usd"),
            collection_method=params.get("collection_method", "charge_automatically"),
            auto_advance=params.get("auto_advance", "true") == "true",
            metadata=dict(params.get("metadata") or {}),
            description=params.get("description"),
            number=None,
            status="draft",
            attempt_count=0,
            attempted=False,
            hosted_invoice_url=None,
            invoice_pdf=None,
            lines={"object": "list", "data": [], "has_more": False, "url": f"/v1/invoices/{invoice_id}/lines"},
            post_payment_credit_notes_amount=0,
            pre_payment_credit_notes_amount=0,
            last_finalization_error=None,
            from_invoice=None,
            next_payment_attempt=None,
            due_date=None,
            default_payment_method=params.get("default_payment_method"),
        )
        invoice["automatic_tax"]["enabled"] = (params.get("automatic_tax") or {}).get("enabled") == "true"
        invoice["_number"] = params.get("number")
        invoice["_discounts"] = self._redeem(invoice, params.get("discounts") or [])
        invoice["_coupons"] = [  # each discount's coupon, in order (one modelled)
            (discount_id, discount["coupon"])
            for (discount_id, _), discount in zip(invoice["_discounts"], params.get("discounts") or [], strict=True)
        ]
        invoice["discounts"] = [discount_id for discount_id, _ in invoice["_discounts"]]
        self._totals(invoice)
        return self._view("invoice", self._store("invoice", invoice))

    def _redeem(self, invoice: Json, discounts: list[Json]) -> list[tuple[str, int]]:
        """The invoice's ``discounts`` (its create's parameter: "The coupons and promotion codes to redeem into
        discounts for the invoice"), each a coupon redeemed into a discount of its ``amount_off`` (cents). Modelled:
        one coupon of ``amount_off`` in the invoice's currency, redeemed at most ``max_redemptions`` times; other
        kinds (percent off, promotion codes, several discounts) are refused as not modelled."""
        if len(discounts) > 1 or any(set(discount) != {"coupon"} for discount in discounts):
            raise StripeApiError(400, "The emulator models one coupon per invoice")
        redeemed: list[tuple[str, int]] = []
        for discount in discounts:
            coupon = self._get("coupon", discount["coupon"])
            if not coupon["valid"] or coupon["currency"] != invoice["currency"]:
                raise StripeApiError(400, f"Coupon {coupon['id']} cannot be redeemed on invoice {invoice['id']}")
            coupon["times_redeemed"] += 1
            coupon["valid"] = coupon["max_redemptions"] is None or coupon["times_redeemed"] < coupon["max_redemptions"]
            redeemed.append((self._new_id("di"), int(coupon["amount_off"])))
        return redeemed

    def _coupons_create(self, ids: dict[str, str], params: Json) -> Json:
        """A coupon of ``amount_off`` (cents, with its ``currency``): "Amount (in the currency specified) that will be
        taken off the subtotal of any invoices for this customer" (the Coupon object's reference, in the SDK). Percent
        off is not modelled (refused). Its ``id`` is the caller's when given ("Unique string of your choice"): an id
        another coupon holds is refused, 400 ``resource_already_exists`` (Stripe's code for an id taken); a deleted
        coupon's id is free again (an assumption: Stripe does not document it)."""
        if "amount_off" not in params or "currency" not in params or "percent_off" in params:
            raise StripeApiError(400, "The emulator models coupons of amount_off with a currency only")
        if int(params["amount_off"]) <= 0:
            raise StripeApiError(400, "amount_off must be a positive integer")
        if params.get("id") in self.objects.get("coupon", {}):
            raise StripeApiError(400, "Coupon already exists.", code="resource_already_exists")
        limit = params.get("max_redemptions")
        coupon = {
            "id": params.get("id") or self._new_id("co"),
            "object": "coupon",
            "amount_off": int(params["amount_off"]),
            "currency": params["currency"],
            "duration": params.get("duration", "once"),
            "duration_in_months": None,
            "max_redemptions": None if limit is None else int(limit),
            "metadata": dict(params.get("metadata") or {}),
            "name": params.get("name"),
            "percent_off": None,
            "redeem_by": None,
            "times_redeemed": 0,
            "valid": True,
            "created": next(self._clock),
            "livemode": False,
        }
        return self._view("coupon", self._store("coupon", coupon))

    def _coupons_retrieve(self, ids: dict[str, str], params: Json) -> Json:
        return self._view("coupon", self._get("coupon", ids["coupon"]))

    def _coupons_delete(self, ids: dict[str, str], params: Json) -> Json:
        """Stripe's API reference: "deleting a coupon does not affect any customers who have already applied the
        coupon; it means that new customers can't redeem the coupon" - the invoices that redeemed it keep their
        discounts (their ``_discounts``); one deleted already is 404 ``resource_missing``."""
        coupon = self._get("coupon", ids["coupon"])
        del self.objects["coupon"][coupon["id"]]
        return {"id": coupon["id"], "object": "coupon", "deleted": True}

    def _invoices_list(self, ids: dict[str, str], params: Json) -> Json:
        customer = params.get("customer")
        return self._list("invoice", params, lambda obj: customer in (None, obj["customer"]), "/v1/invoices")

    def _invoices_search(self, ids: dict[str, str], params: Json) -> Json:
        return self._search("invoice", params, "/v1/invoices/search")

    def _invoices_retrieve(self, ids: dict[str, str], params: Json) -> Json:
        """``expand[]=discounts``: each discount as Stripe's Discount object, its ``source`` the coupon redeemed (its
        id; the coupon may be deleted since); unexpanded, the discounts' ids."""
        invoice = self._get("invoice", ids["invoice"])
        view = self._view("invoice", invoice)
        if "discounts" in (params.get("expand") or []):
            view["discounts"] = [
                {
                    "id": discount_id,
                    "object": "discount",
                    "source": {"type": "coupon", "coupon": coupon_id},
                    "invoice": invoice["id"],
                    "customer": invoice["customer"],
                    "start": invoice["created"],
                    "end": None,
                }
                for discount_id, coupon_id in invoice.get("_coupons", [])
            ]
        return view

    def _invoices_add_lines(self, ids: dict[str, str], params: Json) -> Json:
        invoice = self._get("invoice", ids["invoice"])
        if invoice["status"] != "draft":
            raise StripeApiError(
                400, f"Invoice {invoice['id']} is {invoice['status']}: lines can only be added to drafts"
            )
        new_lines = [self._line(invoice, line) for line in params["lines"]]  # all or nothing
        if invoice["automatic_tax"]["enabled"]:
            self._taxable(invoice, params["lines"])
        if len(invoice["lines"]["data"]) + len(new_lines) > INVOICE_MAX_ITEMS:
            raise StripeApiError(400, f"An invoice holds at most {INVOICE_MAX_ITEMS} invoice items")
        invoice["lines"]["data"].extend(new_lines)
        self._totals(invoice)
        return self._view("invoice", invoice)

    def _line(self, invoice: Json, line: Json) -> Json:
        price = line.get("price_data")
        if ("amount" in line) == (price is not None):
            raise StripeApiError(400, "Each line takes exactly one of amount and price_data")
        quantity = Decimal(str(line.get("quantity_decimal", line.get("quantity", "1"))))
        if price is not None:
            if price.get("currency") != invoice["currency"]:
                raise StripeApiError(400, "price_data.currency must be the invoice's currency")
            if "product" not in price and "product_data" not in price:
                raise StripeApiError(400, "price_data takes one of product and product_data")
            unit = Decimal(price.get("unit_amount_decimal", price.get("unit_amount", "0")))
            if unit < 0 or quantity < 0:
                raise StripeApiError(400, "unit_amount_decimal and quantity must be non-negative")
            with localcontext() as context:
                context.prec = 60
                amount = int((unit * quantity).to_integral_value(ROUND_HALF_EVEN))
            pricing = {"type": "price_details", "unit_amount_decimal": str(unit)}
        else:
            amount = int(line["amount"])
            pricing = None
        item = copy.deepcopy(self.fixtures["line_item"])
        item.update(
            id=self._new_id("il"),
            invoice=invoice["id"],
            amount=amount,
            subtotal=amount,
            currency=invoice["currency"],
            description=line.get("description"),
            metadata=dict(line.get("metadata") or {}),
            quantity=int(quantity),
            quantity_decimal=str(quantity),
            pricing=pricing,
            livemode=False,
        )
        if "period" in line:
            item["period"] = {"start": int(line["period"]["start"]), "end": int(line["period"]["end"])}
        return item

    def _taxable(self, invoice: Json, lines: list[Json]) -> None:
        """Stripe's rule for an invoice with ``automatic_tax`` enabled, as the pinned SDK's docstring of
        ``automatic_tax.enabled`` gives it (``InvoiceCreateParams``): "incompatible invoice items (invoice items with
        manually specified tax rates, negative amounts, or ``tax_behavior=unspecified``) cannot be added to automatic
        tax invoices". A line's tax behaviour is its price's, else the Tax settings' default
        (``default_tax_behavior``). Any of them refuses the whole request (D404 amended (cr2))."""
        for line in lines:
            price = line.get("price_data") or {}
            behavior = price.get("tax_behavior") or line.get("tax_behavior") or self.default_tax_behavior
            if "amount" in line and int(line["amount"]) < 0:
                raise StripeApiError(
                    400, f"Invoice items with negative amounts cannot be added to automatic tax invoice {invoice['id']}"
                )
            if "tax_rates" in line:
                raise StripeApiError(400, "Invoice items with tax_rates cannot be added to automatic tax invoices")
            if behavior == "unspecified":
                raise StripeApiError(
                    400, "Invoice items with tax_behavior=unspecified cannot be added to automatic tax invoices"
                )

    def set_tax_rate(self, customer_id: str, percent: Decimal | str) -> None:
        """Stripe Tax's rate for the customer's location (``percent``, exclusive): its invoices with ``automatic_tax``
        enabled get a tax on each line of the line's amount x the rate, rounded half-up per line, from the next time
        their totals are worked (a negative line is refused on them: ``_taxable``)."""
        self.tax_percent[customer_id] = Decimal(percent)

    def _discount_lines(self, invoice: Json) -> int:
        """The invoice's discounts spread over its positive lines while it is a draft (a finalized invoice keeps its
        figures): each line's ``discount_amounts`` and ``pretax_credit_amounts`` ("pretax credit amounts (ex:
        discount, credit grants, etc) that apply to this line item", the SDK's invoice line item), in proportion to
        the line amounts, whole cents by largest remainder (an assumption: Stripe documents the per-line amounts, not
        its rounding), at most what the lines hold; coupons do not apply to negative lines (Stripe's changelog
        2015-03-24). The invoice's discount in cents."""
        lines = invoice["lines"]["data"]
        if invoice["status"] == "draft":
            positive = [line for line in lines if line["amount"] > 0]
            held = sum(line["amount"] for line in positive)
            for line in lines:
                line["discount_amounts"], line["pretax_credit_amounts"], line["_discount"] = [], [], 0
            for discount_id, amount_off in invoice.get("_discounts") or []:
                wanted = min(amount_off, held)
                if not held or not wanted:
                    continue
                exact = [Decimal(wanted * line["amount"]) / held for line in positive]
                shares = [int(share) for share in exact]
                by_remainder = sorted(range(len(positive)), key=lambda i: (-(exact[i] - shares[i]), i))
                for i in by_remainder[: wanted - sum(shares)]:
                    shares[i] += 1
                for line, share in zip(positive, shares, strict=True):
                    line["_discount"] += share
                    line["discount_amounts"].append({"amount": share, "discount": discount_id})
                    line["pretax_credit_amounts"].append(
                        {
                            "amount": share,
                            "discount": discount_id,
                            "type": "discount",
                            "credit_balance_transaction": None,
                        }
                    )
                held -= wanted
        return sum(int(line.get("_discount", 0)) for line in lines)

    def _tax_lines(self, invoice: Json) -> int:
        """Each line's ``taxes`` at the customer's Stripe Tax rate (``set_tax_rate``) while the invoice is a draft (a
        finalized invoice keeps its figures), on the line's amount less its discount (the invoice's
        ``total_excluding_tax`` "including all discounts but excluding all tax": tax after discounts); the invoice's
        tax in cents."""
        rate = self.tax_percent.get(invoice["customer"]) if invoice["automatic_tax"]["enabled"] else None
        for line in invoice["lines"]["data"]:
            if invoice["status"] != "draft" and "_tax" in line:
                continue
            taxable = line["amount"] - int(line.get("_discount", 0))
            tax = 0 if rate is None else int((Decimal(taxable) * rate / 100).to_integral_value(ROUND_HALF_UP))
            line["_tax"] = tax
            line["taxes"] = [] if rate is None else [_tax_detail(tax, taxable)]
        return sum(int(line.get("_tax", 0)) for line in invoice["lines"]["data"])

    def _totals(self, invoice: Json) -> None:
        subtotal = sum(line["amount"] for line in invoice["lines"]["data"])
        discount = self._discount_lines(invoice)
        tax = self._tax_lines(invoice)
        net = subtotal - discount
        by_discount: dict[str, int] = {}
        for line in invoice["lines"]["data"]:
            for part in line.get("discount_amounts") or []:
                by_discount[part["discount"]] = by_discount.get(part["discount"], 0) + part["amount"]
        invoice.update(
            subtotal=subtotal,
            subtotal_excluding_tax=subtotal,
            total=net + tax,
            total_excluding_tax=net,
            total_discount_amounts=[{"amount": cents, "discount": key} for key, cents in by_discount.items()],
            total_taxes=[_tax_detail(tax, net)] if any(line["taxes"] for line in invoice["lines"]["data"]) else [],
        )
        credited = invoice["pre_payment_credit_notes_amount"]
        due = max(net + tax - credited + invoice.get("_applied_balance", 0), 0)
        if invoice.get("_below_minimum"):
            due = 0  # moved to the customer's balance at finalization (Stripe's minimum charge rule)
        paid = due if invoice["status"] == "paid" else min(invoice.get("_paid_part", 0), due)  # ``pay_part``
        invoice.update(amount_due=due, amount_paid=paid, amount_remaining=due - paid)

    def _invoices_finalize(self, ids: dict[str, str], params: Json) -> Json:
        invoice = self._get("invoice", ids["invoice"])
        if invoice["status"] != "draft":
            raise StripeApiError(400, f"This invoice is already finalized ({invoice['status']})")
        if "auto_advance" in params:
            invoice["auto_advance"] = params["auto_advance"] == "true"
        invoice["status"] = "open"
        invoice["number"] = invoice["_number"] or f"EMU-{invoice['id'][-6:]}"
        invoice["hosted_invoice_url"] = f"{self.base_url}/invoice/{invoice['id']}"
        invoice["invoice_pdf"] = f"{self.base_url}/invoice/{invoice['id']}/pdf"
        invoice["effective_at"] = next(self._clock)
        self._apply_balance(invoice)
        self._totals(invoice)
        finalized = self._view("invoice", invoice)
        self._emit("invoice.finalized", finalized)
        if invoice["amount_due"] == 0:
            self._settle(invoice, paid=True)
        elif invoice["auto_advance"] and invoice["collection_method"] == "charge_automatically":
            self._collect(invoice)
        return finalized

    def _apply_balance(self, invoice: Json) -> None:
        """Stripe's customer invoice balance at finalization (docs: "Customer invoice balance"): the balance (positive:
        the customer owes it) applies to the next invoice finalized; an amount due above 0 but below the minimum
        chargeable amount (USD: 50 cents) is not charged - the invoice is marked paid and the amount moves to the
        balance as a debit, for the next invoice."""
        customer = self._get("customer", invoice["customer"])
        starting = int(customer.get("balance") or 0)
        self._totals(invoice)
        owed = invoice["amount_due"] + starting
        applied = starting if owed >= 0 else -invoice["amount_due"]  # a credit covers at most the amount due
        invoice["_applied_balance"] = applied
        ending = starting - applied
        if 0 < owed < MINIMUM_CHARGE_CENTS.get(invoice["currency"], 0):
            invoice["_below_minimum"] = True
            ending += owed
        customer["balance"] = ending
        invoice.update(starting_balance=starting, ending_balance=ending)

    def _collect(self, invoice: Json) -> None:
        """Stripe's automatic collection, at once: the default card pays, a declining card fails, none waits."""
        customer = self._get("customer", invoice["customer"])
        card_id = invoice.get("default_payment_method") or customer["invoice_settings"]["default_payment_method"]
        if card_id is None:
            return
        card = self._get("payment_method", card_id)
        self._settle(invoice, paid=card["metadata"].get("emulator_card") not in DECLINED_CARDS, card=card)

    def pay_part(self, invoice_id: str, cents: int) -> None:
        """Part of an open invoice's amount due paid (Stripe's partial payments): ``amount_paid`` grows, the invoice
        stays open asking the rest (``amount_remaining``). No charge or invoice payment is modelled for it."""
        invoice = self._get("invoice", invoice_id)
        if invoice["status"] != "open" or not 0 < cents < invoice["amount_remaining"]:
            raise ValueError(f"cannot pay {cents} of {invoice_id} ({invoice['status']}, {invoice['amount_remaining']})")
        invoice["_paid_part"] = invoice.get("_paid_part", 0) + cents
        self._totals(invoice)

    def retry_payment(self, invoice_id: str, card: str) -> None:
        """The customer pays an open invoice whose charge was declined with another card (a test card such as
        ``pm_card_visa``, attached to the customer): Stripe charges it on the invoice's same PaymentIntent, which
        keeps the declined attempt's failed charge beside the new one (``charges.list`` lists both)."""
        with self._lock:
            invoice = self._get("invoice", invoice_id)
            if invoice["status"] != "open":
                raise ValueError(f"cannot retry {invoice_id}: it is {invoice['status']}")
            attached = self._attach(card, str(invoice["customer"]))
            self._settle(invoice, paid=attached["metadata"].get("emulator_card") not in DECLINED_CARDS, card=attached)

    def _intent_for(self, invoice: Json, amount: int) -> Json:
        """The invoice's PaymentIntent: the one its earlier (declined) attempt made, else a new one."""
        known = invoice.get("_payment_intent")
        if known is not None:
            return self._get("payment_intent", known)
        intent = self._from_fixture(
            "payment_intent",
            id=self._new_id("pi"),
            created=next(self._clock),
            amount=amount,
            amount_received=0,
            currency=invoice["currency"],
            customer=invoice["customer"],
            status="requires_payment_method",
            metadata={},
            latest_charge=None,
        )
        intent["_refunded"] = 0
        invoice["_payment_intent"] = intent["id"]
        return self._store("payment_intent", intent)

    def _declined(self, intent: Json, card: Json, amount: int) -> Json:
        """A declined attempt by ``card`` on ``intent`` for ``amount`` (what was due then: a later attempt after the
        amount due changed charges the new amount, not the intent's first): Stripe keeps its charge, ``failed``
        (``card_declined``), on the intent, which waits for another payment method."""
        charge = self._charge(intent, amount, card, paid=False)
        intent.update(status="requires_payment_method", latest_charge=charge["id"])
        return self._store("charge", charge)

    def _charge(self, intent: Json, amount: int, card: Json | None, *, paid: bool) -> Json:
        """A new charge of ``amount`` on ``intent`` (not stored): ``paid``, captured and succeeded, else declined
        (``failed``, ``card_declined``, nothing captured); ``card``, the card charged: the charge names it and its
        details (fingerprint)."""
        outcome: Json = (
            {"amount_captured": amount, "status": "succeeded"}
            if paid
            else {
                "amount_captured": 0,
                "status": "failed",
                "failure_code": "card_declined",
                "failure_message": "Your card was declined.",
            }
        )
        charge = self._from_fixture(
            "charge",
            id=self._new_id("ch"),
            created=next(self._clock),
            amount=amount,
            amount_refunded=0,
            captured=paid,
            paid=paid,
            refunded=False,
            disputed=False,
            currency=intent["currency"],
            customer=intent["customer"],
            payment_intent=intent["id"],
            metadata={},
            **outcome,
        )
        if card is not None:
            _charged_with(charge, card)
        return charge

    def _settle(self, invoice: Json, *, paid: bool, card: Json | None = None) -> None:
        invoice["attempted"] = True
        invoice["attempt_count"] += 1
        if not paid:
            if card is not None and invoice["amount_due"] > 0:  # the declined charge stays on the invoice's intent
                self._declined(self._intent_for(invoice, invoice["amount_due"]), card, invoice["amount_due"])
            self._emit("invoice.payment_failed", self._view("invoice", invoice))
            return
        invoice["status"] = "paid"
        self._totals(invoice)
        if invoice["amount_paid"] > 0:
            intent = self._intent_for(invoice, invoice["amount_paid"])
            intent.update(amount=invoice["amount_paid"], amount_received=invoice["amount_paid"], status="succeeded")
            charge = self._charge(intent, invoice["amount_paid"], card, paid=True)
            charge["refunds"] = {"object": "list", "data": [], "has_more": False, "url": "/v1/refunds"}
            intent["latest_charge"] = charge["id"]
            self._store("charge", charge)
            payment = self._from_fixture(
                "invoice_payment",
                id=self._new_id("inpay"),
                created=next(self._clock),
                invoice=invoice["id"],
                amount_paid=invoice["amount_paid"],
                amount_requested=invoice["amount_paid"],
                currency=invoice["currency"],
                status="paid",
                is_default=True,
                payment={"type": "payment_intent", "payment_intent": intent["id"]},
            )
            self._store("invoice_payment", payment)
        self._emit("invoice.paid", self._view("invoice", invoice))

    def split_payment(
        self, invoice_id: str, first_cents: int, card: str | None = None, declined: str | None = None
    ) -> tuple[str, str]:
        """The paid invoice paid in two payments instead of one: its payment keeps ``first_cents`` and a second
        payment intent, charge and InvoicePayment carry the rest - paid by the same card, or by ``card`` (a test card
        such as ``pm_card_mastercard``, attached to the customer: its own payment method and fingerprint).
        ``declined``: a test card whose attempt on the second intent was declined before it was paid (its failed
        charge kept on the intent, older than the one that paid, as Stripe keeps it). Returns the two payment
        intents, oldest first."""
        with self._lock:
            (payment,) = [p for p in self.objects["invoice_payment"].values() if p["invoice"] == invoice_id]
            intent = self._get("payment_intent", payment["payment"]["payment_intent"])
            charge = self._get("charge", intent["latest_charge"])
            rest = payment["amount_paid"] - first_cents
            if not 0 < first_cents < payment["amount_paid"] or intent["_refunded"]:
                raise ValueError(f"cannot split {payment['amount_paid']} at {first_cents}")
            second_intent = copy.deepcopy(intent) | {"id": self._new_id("pi"), "created": next(self._clock)}
            if declined is not None:
                # on a copy: the attempt's charge names the second intent, which then is paid (stays succeeded)
                self._declined(dict(second_intent), self._attach(declined, intent["customer"]), rest)
            second_charge = copy.deepcopy(charge) | {
                "id": self._new_id("ch"),
                "created": next(self._clock),
                "payment_intent": second_intent["id"],
            }
            if card is not None:
                _charged_with(second_charge, self._attach(card, str(intent["customer"])))
            second_intent["latest_charge"] = second_charge["id"]
            second_payment = copy.deepcopy(payment) | {
                "id": self._new_id("inpay"),
                "created": next(self._clock),
                "is_default": False,
                "payment": {"type": "payment_intent", "payment_intent": second_intent["id"]},
            }
            for obj, amount in ((intent, first_cents), (second_intent, rest)):
                obj.update(amount=amount, amount_received=amount)
            for obj, amount in ((charge, first_cents), (second_charge, rest)):
                obj.update(amount=amount, amount_captured=amount)
            for obj, amount in ((payment, first_cents), (second_payment, rest)):
                obj.update(amount_paid=amount, amount_requested=amount)
            self._store("payment_intent", second_intent)
            self._store("charge", second_charge)
            self._store("invoice_payment", second_payment)
            return str(intent["id"]), str(second_intent["id"])

    def _invoices_void(self, ids: dict[str, str], params: Json) -> Json:
        invoice = self._get("invoice", ids["invoice"])
        if invoice["status"] != "open":
            raise StripeApiError(400, f"You can only void open invoices ({invoice['id']} is {invoice['status']})")
        invoice["status"] = "void"
        self._totals(invoice)
        return self._view("invoice", invoice)

    def revise(self, invoice_id: str, revision_id: str) -> None:
        """An operator's "Edit invoice" finalized in the dashboard (no API creates a revision): the open original is
        voided naming its ``latest_revision``, and ``invoice.voided`` is sent (the revision itself is not modelled)."""
        with self._lock:
            invoice = self._get("invoice", invoice_id)
            invoice["status"] = "void"
            invoice["latest_revision"] = revision_id
            self._totals(invoice)
            self._emit("invoice.voided", self._view("invoice", invoice))

    def _invoices_delete(self, ids: dict[str, str], params: Json) -> Json:
        """Stripe's API reference: "Permanently deletes a one-off invoice draft ... Attempts to delete invoices that
        are no longer in a draft state will fail"; the answer is the deleted object's stub."""
        invoice = self._get("invoice", ids["invoice"])
        if invoice["status"] != "draft":
            raise StripeApiError(400, f"You can only delete draft invoices ({invoice['id']} is {invoice['status']})")
        del self.objects["invoice"][invoice["id"]]
        return {"id": invoice["id"], "object": "invoice", "deleted": True}

    def _invoice_payments_list(self, ids: dict[str, str], params: Json) -> Json:
        wanted, status, payment = params.get("invoice"), params.get("status"), params.get("payment") or {}

        def keep(obj: Json) -> bool:
            paid_by = obj["payment"]
            same_payment = all(paid_by.get(name) == value for name, value in payment.items())
            return wanted in (None, obj["invoice"]) and status in (None, obj["status"]) and same_payment

        return self._list("invoice_payment", params, keep, "/v1/invoice_payments")

    # ------------------------------------------------------------------ credit notes and refunds
    def _credit_note_figures(self, invoice: Json, params: Json) -> _NoteFigures:
        """A credit note's figures as Stripe works them out. A line ``invoice_line_item`` credits ``amount`` (tax
        exclusive: Stripe's API reference for credit note lines, "If invoice is set up with automatic_tax[enabled]=true,
        this amount is tax exclusive") of one of the invoice's lines, at most what earlier notes left of it, with that
        line's share of its discount (a credit note line's ``discount_amount``, "the discount being credited for this
        line item"; its ``amount`` is "excluding (exclusive) tax and discounts", Stripe's API reference
        docs.stripe.com/api/credit_notes/line_item): the line's discount x ``amount`` / its amount, rounded half-up (an
        assumption: Stripe documents the amounts, not their rounding), and the line's own tax on what is left (the
        line's tax x (``amount`` - that share) / (its amount - its discount), half-up; with no discount, the line's tax
        in proportion); a ``custom_line_item`` is ``unit_amount`` x ``quantity`` with no tax (no ``tax_rates``
        modelled: a custom line on a taxed invoice credits no tax - one of the two readings D384 (st, 5) left open)."""
        lines = {line["id"]: line for line in invoice["lines"]["data"]}
        credited_before: dict[str, int] = invoice.setdefault("_credited_lines", {})
        figures = _NoteFigures()
        for line in params.get("lines") or []:
            if line.get("type") == "invoice_line_item":
                item = lines.get(str(line.get("invoice_line_item")))
                if item is None:
                    raise StripeApiError(400, f"No such invoice line item on {invoice['id']}: {line}")
                amount = int(line.get("amount", "0"))
                left = item["amount"] - credited_before.get(item["id"], 0) - figures.per_line.get(item["id"], 0)
                if amount <= 0 or amount > left:
                    raise StripeApiError(
                        400, f"The credit note line amount {amount} must be positive and at most {left}"
                    )
                line_discount = int(item.get("_discount", 0))
                discounts = [
                    {"amount": _half_up(part["amount"] * amount, item["amount"]), "discount": part["discount"]}
                    for part in item.get("discount_amounts") or []
                ]
                discount = sum(part["amount"] for part in discounts)
                taxable = item["amount"] - line_discount
                tax = _half_up(int(item.get("_tax", 0)) * (amount - discount), taxable) if taxable > 0 else 0
                figures.per_line[item["id"]] = figures.per_line.get(item["id"], 0) + amount
                figures.lines.append(
                    {
                        "type": "invoice_line_item",
                        "invoice_line_item": item["id"],
                        "amount": amount,
                        "discount_amount": discount,
                        "discount_amounts": discounts,
                        "taxes": [_tax_detail(tax, amount - discount)] if item.get("taxes") else [],
                    }
                )
                figures.subtotal += amount
                figures.discount += discount
                figures.tax += tax
            else:
                figures.subtotal += int(line.get("unit_amount", "0")) * int(line.get("quantity", "1"))
        credited = invoice["pre_payment_credit_notes_amount"] + invoice["post_payment_credit_notes_amount"]
        if figures.subtotal <= 0 or figures.total > invoice["total"] - credited:
            raise StripeApiError(
                400, f"The credit note amount {figures.total} must be positive and at most what is left"
            )
        return figures

    def _credit_note(self, invoice: Json, params: Json, note_id: str, figures: _NoteFigures, post: int) -> Json:
        """The note of ``figures``, ``post`` of it post-payment (``_settled``): its type pre-payment, post-payment
        or both ("mixed")."""
        by_discount: dict[str, int] = {}
        for line in figures.lines:
            for part in line["discount_amounts"]:
                by_discount[part["discount"]] = by_discount.get(part["discount"], 0) + part["amount"]
        net = figures.subtotal - figures.discount
        return self._from_fixture(
            "credit_note",
            id=note_id,
            created=next(self._clock),
            invoice=invoice["id"],
            customer=invoice["customer"],
            amount=figures.total,
            total=figures.total,
            subtotal=figures.subtotal,
            subtotal_excluding_tax=figures.subtotal,
            total_excluding_tax=net,
            discount_amount=figures.discount,
            discount_amounts=[{"amount": cents, "discount": key} for key, cents in by_discount.items()],
            pretax_credit_amounts=[
                {"amount": cents, "discount": key, "type": "discount", "credit_balance_transaction": None}
                for key, cents in by_discount.items()
            ],
            total_taxes=[_tax_detail(figures.tax, net)] if figures.tax else [],
            out_of_band_amount=int(params["out_of_band_amount"]) if "out_of_band_amount" in params else None,
            memo=params.get("memo"),
            metadata=dict(params.get("metadata") or {}),
            type="mixed" if 0 < post < figures.total else "post_payment" if post else "pre_payment",
            lines={
                "object": "list",
                "data": [self._credit_note_line(note_id, i, line) for i, line in enumerate(figures.lines)],
                "has_more": False,
                "url": f"/v1/credit_notes/{note_id}/lines",
            },
        )

    def _credit_note_line(self, note_id: str, index: int, line: Json) -> Json:
        """A note's ``invoice_line_item`` line as Stripe shows it (the fixture's first line, our figures over it)."""
        obj: Json = copy.deepcopy(self.fixtures["credit_note"]["lines"]["data"][0])
        obj.update(
            line,
            id=f"cnli_{note_id}_{index}",
            livemode=False,
            tax_rates=[],
            pretax_credit_amounts=[
                {"amount": part["amount"], "discount": part["discount"], "type": "discount"}
                for part in line["discount_amounts"]
            ],
            metadata={},
        )
        return obj

    def _credit_notes_preview(self, ids: dict[str, str], params: Json) -> Json:
        """Stripe's "Preview a credit note": the note the same parameters would make, nothing made."""
        invoice = self._get("invoice", params["invoice"])
        if invoice["status"] not in ("open", "paid"):
            raise StripeApiError(400, f"Credit notes need a finalized invoice ({invoice['id']} is {invoice['status']})")
        figures = self._credit_note_figures(invoice, params)
        post = self._settled(invoice, params, figures.total)  # the create's rule: the preview takes its parameters
        return self._view("credit_note", self._credit_note(invoice, params, "cnpreview_emu", figures, post))

    @staticmethod
    def _settled(invoice: Json, params: Json, amount: int) -> int:
        """A note's post-payment part (preview or create), settled: Stripe's note first lowers the invoice's
        ``amount_remaining``, not below zero (its ``pre_payment_amount``); the rest (``post_payment_amount``: all of
        it on a paid invoice, nothing remaining) its credit, refund and out-of-band amounts must add up to, tax
        included - a partly paid open invoice's note beyond what it asks too."""
        post = amount - min(amount, int(invoice["amount_remaining"]))
        settled = sum(int(params.get(name, "0")) for name in ("credit_amount", "refund_amount", "out_of_band_amount"))
        if settled != post:
            raise StripeApiError(400, "credit_amount + refund_amount + out_of_band_amount must equal the amount")
        return post

    def _credit_notes_create(self, ids: dict[str, str], params: Json) -> Json:
        invoice = self._get("invoice", params["invoice"])
        if invoice["status"] not in ("open", "paid"):
            raise StripeApiError(400, f"Credit notes need a finalized invoice ({invoice['id']} is {invoice['status']})")
        figures = self._credit_note_figures(invoice, params)
        amount = figures.total
        post = self._settled(invoice, params, amount)
        refunds = self._refunded_by_note(invoice, int(params.get("refund_amount", "0")))
        invoice["pre_payment_credit_notes_amount"] += amount - post
        if post:
            invoice["post_payment_credit_notes_amount"] += post
            # credit_amount goes to the customer's invoice balance, applied to the next invoice finalized (Stripe:
            # "Customer credit balance"); refund_amount and out_of_band_amount leave the balance as it is
            credit = int(params.get("credit_amount", "0"))
            if credit:
                customer = self._get("customer", invoice["customer"])
                customer["balance"] = int(customer.get("balance") or 0) - credit
        for line_id, cents in figures.per_line.items():
            invoice["_credited_lines"][line_id] = invoice["_credited_lines"].get(line_id, 0) + cents
        self._totals(invoice)
        note = self._credit_note(invoice, params, self._new_id("cn"), figures, post)
        note["refunds"] = refunds
        return self._view("credit_note", self._store("credit_note", note))

    def _refunded_by_note(self, invoice: Json, cents: int) -> list[Json]:
        """A paid invoice's note's ``refund_amount`` ("The integer amount ... representing the amount to refund. If set,
        a refund will be created for the charge associated with the invoice", the SDK's credit note params): a Refund
        of it on the invoice's payments, oldest first, each up to what is left of it, as ``refunds.create`` makes one
        (its events, its refusal of a charged-back payment - before the note is made). The note's ``refunds``."""
        payments = sorted(
            (p for p in self.objects.get("invoice_payment", {}).values() if p["invoice"] == invoice["id"]),
            key=lambda p: (p["created"], p["id"]),
        )
        made: list[Json] = []
        for payment in payments:
            if cents <= 0:
                break
            intent = self._get("payment_intent", payment["payment"]["payment_intent"])
            part = min(cents, intent["amount_received"] - intent["_refunded"])
            if part > 0:
                refund = self._refunds_create({}, {"payment_intent": intent["id"], "amount": str(part)})
                made.append({"amount_refunded": part, "refund": refund["id"], "type": "refund"})
                cents -= part
        if cents > 0:
            raise StripeApiError(400, f"Refund amount is more than what is left to refund on {invoice['id']}")
        return made

    def _invoices_line_items_list(self, ids: dict[str, str], params: Json) -> Json:
        """An invoice's lines, all of them, in order (the emulator's invoices hold at most 250, one page of 100 is
        not modelled: ``limit`` up to 100 - the adapter pages with ``auto_paging_iter``)."""
        invoice = self._get("invoice", ids["invoice"])
        lines = [copy.deepcopy(line) for line in invoice["lines"]["data"]]
        if "starting_after" in params:
            at = [line["id"] for line in lines]
            lines = lines[at.index(params["starting_after"]) + 1 :] if params["starting_after"] in at else []
        limit = int(params.get("limit", 10))
        page = [{key: value for key, value in line.items() if not key.startswith("_")} for line in lines[:limit]]
        return {
            "object": "list",
            "data": page,
            "has_more": len(lines) > limit,
            "url": f"/v1/invoices/{invoice['id']}/lines",
        }

    def _credit_notes_list(self, ids: dict[str, str], params: Json) -> Json:
        wanted = params.get("invoice")
        return self._list("credit_note", params, lambda obj: wanted in (None, obj["invoice"]), "/v1/credit_notes")

    def _refunds_create(self, ids: dict[str, str], params: Json) -> Json:
        intent = self._get("payment_intent", params.get("payment_intent", ""))
        amount = int(params.get("amount", intent["amount_received"] - intent["_refunded"]))
        if amount <= 0 or intent["_refunded"] + amount > intent["amount_received"]:
            raise StripeApiError(
                400, f"Refund amount {amount} is more than what is left to refund", code="amount_too_large"
            )
        charge = self._get("charge", intent["latest_charge"])
        # Stripe: a charged-back charge is not refunded (docs.stripe.com/error-codes); its dispute says so
        # (``is_charge_refundable`` false: a chargeback open, lost or won, modelled) - an inquiry's charge is
        if any(not d["is_charge_refundable"] for d in self._disputes_of(charge["id"])):
            raise StripeApiError(
                400, f"Charge {charge['id']} has been charged back; cannot issue a refund.", code="charge_disputed"
            )
        intent["_refunded"] += amount
        charge["amount_refunded"] += amount
        charge["refunded"] = charge["amount_refunded"] == charge["amount"]
        refund = self._from_fixture(
            "refund",
            id=self._new_id("re"),
            created=next(self._clock),
            amount=amount,
            payment_intent=intent["id"],
            charge=charge["id"],
            currency=intent["currency"],
            metadata=dict(params.get("metadata") or {}),
            reason=params.get("reason"),
            status="succeeded",
        )
        self._emit("charge.refunded", self._view("charge", charge))
        self._emit("refund.created", refund)
        if charge["refunded"]:  # Stripe: refunding an inquiry's payment in full resolves it (a partial does not)
            for dispute in self._disputes_of(charge["id"]):
                if dispute["status"] in _INQUIRY_OPEN:
                    dispute["status"] = "warning_closed"
                    self._emit("charge.dispute.closed", self._view("dispute", dispute))
        return self._view("refund", self._store("refund", refund))

    def fail_refund(self, refund_id: str, reason: str = "expired_or_canceled_card") -> None:
        """The card's bank returns a refund after Stripe made it (the card closed or expired): the Refund becomes
        ``failed`` with ``failure_reason``, the money goes back to the merchant's balance (the charge's and the
        intent's refunded amounts go down), and Stripe sends ``refund.failed`` and ``refund.updated`` (and
        ``charge.refund.updated``, for endpoints on older API versions) with the Refund."""
        with self._lock:
            refund = self._get("refund", refund_id)
            if refund["status"] == "failed":
                return
            refund["status"] = "failed"
            refund["failure_reason"] = reason
            intent = self._get("payment_intent", str(refund["payment_intent"]))
            intent["_refunded"] -= refund["amount"]
            charge = self._get("charge", str(refund["charge"]))
            charge["amount_refunded"] -= refund["amount"]
            charge["refunded"] = charge["amount_refunded"] == charge["amount"]
            for kind in ("refund.failed", "refund.updated", "charge.refund.updated"):
                self._emit(kind, self._view("refund", refund))

    # ------------------------------------------------------------------ disputes (the cardholder's bank's part)
    def open_dispute(self, payment_intent: str, *, inquiry: bool = False) -> str:
        """The cardholder disputes the payment: ``charge.dispute.created`` (the Dispute names its charge and payment
        intent, as Stripe's do; the charge becomes ``disputed``). A chargeback (``needs_response``): its funds are
        withdrawn at once (``charge.dispute.funds_withdrawn``) and the charge is not refundable
        (``is_charge_refundable`` false: Stripe refuses its refund, ``charge_disputed``). ``inquiry``: the network's
        pre-dispute (``warning_needs_response``): nothing withdrawn, the charge still refundable (Stripe's own
        fixture of an inquiry: ``is_charge_refundable`` true). Returns the dispute's id."""
        with self._lock:
            intent = self._get("payment_intent", payment_intent)
            charge = self._get("charge", intent["latest_charge"])
            charge["disputed"] = True
            dispute = self._from_fixture(
                "dispute",
                id=self._new_id("dp"),
                created=next(self._clock),
                amount=charge["amount"],
                currency=charge["currency"],
                charge=charge["id"],
                payment_intent=intent["id"],
                status="warning_needs_response" if inquiry else "needs_response",
                is_charge_refundable=inquiry,
                metadata={},
            )
            if not inquiry:  # a chargeback: its withdrawal listed on the Dispute at once
                dispute["balance_transactions"] = [self._dispute_transaction(dispute, -1, "dispute")]
            self._store("dispute", dispute)
            self._emit("charge.dispute.created", self._view("dispute", dispute))
            if not inquiry:
                self._emit("charge.dispute.funds_withdrawn", self._view("dispute", dispute))  # a chargeback: taken now
            return str(dispute["id"])

    def close_dispute(self, dispute_id: str, *, won: bool) -> None:
        """The bank decides: ``charge.dispute.closed`` with ``won`` (then ``charge.dispute.funds_reinstated``: the
        funds withdrawn come back; the charge stays not refundable, ``is_charge_refundable`` false, as in the one real
        payload of a won dispute found - Zulip's fixture ``charge_dispute_closed.json``, API 2016-07-06 - unchecked
        against a test-mode account) or ``lost`` (the funds stay withdrawn, the charge not refundable). An inquiry
        closes ``warning_closed`` (nothing was withdrawn: no funds event; still refundable), whatever ``won``."""
        with self._lock:
            dispute = self._get("dispute", dispute_id)
            inquiry = str(dispute["status"]).startswith("warning_")
            dispute["status"] = "warning_closed" if inquiry else "won" if won else "lost"
            dispute["is_charge_refundable"] = inquiry  # a won chargeback: false, as the one real payload found
            if won and not inquiry:  # the withdrawal given back: its reinstatement listed after it
                dispute["balance_transactions"].append(self._dispute_transaction(dispute, 1, "dispute_reversal"))
            self._emit("charge.dispute.closed", self._view("dispute", dispute))
            if won and not inquiry:
                self._emit("charge.dispute.funds_reinstated", self._view("dispute", dispute))

    def _dispute_transaction(self, dispute: Json, sign: int, category: str) -> Json:
        """A balance transaction of a Dispute's ``balance_transactions`` (stripe.BalanceTransaction's fields): the
        withdrawal (``sign`` -1: ``amount`` negative, Stripe's 15.00 dispute fee in ``fee``) or the reinstatement
        (+1: the amount back, the fee kept). An inquiry has none."""
        amount, fee = sign * int(dispute["amount"]), 1500 if sign < 0 else 0
        created = next(self._clock)
        return {
            "id": self._new_id("txn"),
            "object": "balance_transaction",
            "amount": amount,
            "available_on": created,
            "balance_type": "payments",
            "created": created,
            "currency": dispute["currency"],
            "description": f"Chargeback {'withdrawal' if sign < 0 else 'reversal'} for {dispute['charge']}",
            "exchange_rate": None,
            "fee": fee,
            "fee_details": [
                {
                    "amount": fee,
                    "application": None,
                    "currency": dispute["currency"],
                    "description": "Dispute fee",
                    "type": "stripe_fee",
                }
            ]
            if fee
            else [],
            "net": amount - fee,
            "reporting_category": category,
            "source": dispute["id"],
            "status": "available",
            "type": "adjustment",
        }

    def _disputes_of(self, charge_id: str) -> list[Json]:
        return [d for d in self.objects.get("dispute", {}).values() if d["charge"] == charge_id]

    def _disputes_list(self, ids: dict[str, str], params: Json) -> Json:
        """Disputes, newest first, of a charge or a payment intent (either filter, or both)."""
        charge, intent = params.get("charge"), params.get("payment_intent")
        return self._list(
            "dispute",
            params,
            lambda obj: charge in (None, obj["charge"]) and intent in (None, obj["payment_intent"]),
            "/v1/disputes",
        )

    def _charges_list(self, ids: dict[str, str], params: Json) -> Json:
        """Charges, newest first, of a customer or a payment intent; ``expand[]=data.refunds``: each with its Refunds
        (failed ones too), as Stripe's ``refunds`` list (not included unless expanded, API 2022-11-15 on)."""
        customer, intent = params.get("customer"), params.get("payment_intent")
        found = self._list(
            "charge",
            params,
            lambda obj: customer in (None, obj["customer"]) and intent in (None, obj["payment_intent"]),
            "/v1/charges",
        )
        for charge in found["data"]:
            charge.pop("refunds", None)
            if "data.refunds" in (params.get("expand") or []):  # an embedded list holds its first 10 (Stripe's)
                refunds = [r for r in self.objects.get("refund", {}).values() if r["charge"] == charge["id"]]
                data = [self._view("refund", r) for r in sorted(refunds, key=lambda r: (r["created"], r["id"]))]
                newest = data[::-1]
                charge["refunds"] = {
                    "object": "list",
                    "data": newest[:EMBEDDED_LIST_LIMIT],
                    "has_more": len(newest) > EMBEDDED_LIST_LIMIT,
                    "url": f"/v1/charges/{charge['id']}/refunds",
                }
        return found

    def _refunds_list(self, ids: dict[str, str], params: Json) -> Json:
        """Refunds, newest first, of a payment intent or of a charge (either filter, or both)."""
        intent, charge = params.get("payment_intent"), params.get("charge")
        return self._list(
            "refund",
            params,
            lambda obj: intent in (None, obj["payment_intent"]) and charge in (None, obj["charge"]),
            "/v1/refunds",
        )

    # ------------------------------------------------------------------ hosted pages
    def _checkout_sessions_create(self, ids: dict[str, str], params: Json) -> Json:
        if params.get("mode") != "setup":
            raise StripeApiError(400, "The stand-in only offers Checkout in setup mode")
        customer = self._get("customer", params.get("customer", ""))
        session_id = self._new_id("cs_test")
        session = self._from_fixture(
            "checkout.session",
            id=session_id,
            created=next(self._clock),
            customer=customer["id"],
            mode="setup",
            status="open",
            success_url=params.get("success_url"),
            cancel_url=params.get("cancel_url"),
            currency=params.get("currency"),
            metadata=dict(params.get("metadata") or {}),
            url=f"{self.base_url}/checkout/{session_id}",
        )
        return self._view("checkout.session", self._store("checkout.session", session))

    def _billing_portal_sessions_create(self, ids: dict[str, str], params: Json) -> Json:
        customer = self._get("customer", params.get("customer", ""))
        session_id = self._new_id("bps")
        session = self._from_fixture(
            "billing_portal.session",
            id=session_id,
            created=next(self._clock),
            customer=customer["id"],
            return_url=params.get("return_url"),
            url=f"{self.base_url}/portal/{session_id}",
        )
        return self._view("billing_portal.session", self._store("billing_portal.session", session))


def _metadata_query(query: str) -> tuple[str, str]:
    """``metadata['key']:'value'`` - the one search form the adapter uses (Stripe's search query language)."""
    prefix, _, rest = query.partition("']:'")
    if not prefix.startswith("metadata['") or not rest.endswith("'"):
        raise StripeApiError(400, f"The stand-in searches metadata only: {query!r}")
    return prefix[len("metadata['") :], rest[:-1].replace("\\'", "'")


@dataclass
class Recorded:
    method: str
    path: str
    params: Json
    headers: dict[str, str]
    status: int


class EmulatorHTTPClient(stripe.HTTPClient):
    """A ``stripe.HTTPClient`` answering from a ``StripeEmulator`` in-process: records every request, checks it against
    the SDK's typed params (through the emulator) and can fail on demand: ``faults`` holds, for the next requests in
    order, ``"pass"`` (no fault), an HTTP status answered instead of the emulator (429, 500), ``"timeout"`` (no
    answer; nothing happens), or ``"lost"`` (the emulator acts, the answer is lost as a timeout)."""

    name = "kilo-emulator"

    def __init__(self, emulator: StripeEmulator | None = None) -> None:
        super().__init__()
        self.emulator = emulator if emulator is not None else StripeEmulator()
        self.requests: list[Recorded] = []
        self.faults: list[int | str] = []

    def _sleep_time_seconds(self, num_retries: int) -> float:
        return 0.0  # the SDK's own retries, without the wait

    def request(
        self,
        method: str,
        url: str,
        headers: Mapping[str, str] | None,
        post_data: Any = None,
        *,
        _usage: list[str] | None = None,
    ) -> tuple[str, int, Mapping[str, str]]:
        parts = urlsplit(url)
        encoded = parts.query if method.lower() != "post" else (post_data or "")
        if isinstance(encoded, bytes):
            encoded = encoded.decode("utf-8")
        headers = dict(headers or {})
        fault = self.faults.pop(0) if self.faults else None
        if fault == "timeout":
            self._record(method, parts.path, encoded, headers, 0)
            raise stripe.APIConnectionError("Request timed out (emulated)", should_retry=True)  # type: ignore[no-untyped-call]
        if isinstance(fault, int):
            self._record(method, parts.path, encoded, headers, fault)
            body = {"error": {"type": "api_error", "message": f"emulated {fault}"}}
            return json.dumps(body), fault, {"request-id": "req_emulated"}
        response = self.emulator.handle(method, parts.path, encoded, headers)
        self._record(method, parts.path, encoded, headers, response.status)
        if fault == "lost":
            raise stripe.APIConnectionError("Response lost (emulated)", should_retry=True)  # type: ignore[no-untyped-call]
        return json.dumps(response.body), response.status, {"request-id": "req_emulated", **response.headers}

    def _record(self, method: str, path: str, encoded: str, headers: dict[str, str], status: int) -> None:
        self.requests.append(Recorded(method.lower(), path, decode_form(encoded), headers, status))

    def close(self) -> None:
        return None


def _charged_with(charge: Json, card: Json) -> None:
    """A charge made by ``card`` (a stored PaymentMethod): its id and its card's brand, last4 and fingerprint."""
    details = charge.setdefault("payment_method_details", {"type": "card"})
    charge["payment_method"] = card["id"]
    details["card"] = {**(details.get("card") or {}), **_pick_card(card["card"])}


def _pick_card(card: Json) -> Json:
    return {name: card[name] for name in ("brand", "last4", "fingerprint") if name in card}
