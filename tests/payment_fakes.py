"""An in-memory payment gateway (``kilo_invoice.ports.PaymentGateway``), held to tests/contract/test_payment_gateway.py
like the real Stripe adapter. It can fail on demand (``fail_next``) and crash half-way through ``issue_invoice``."""

from __future__ import annotations

import itertools
from dataclasses import dataclass, field
from decimal import Decimal

from kilo_invoice.ports import (
    Customer,
    GatewayInvoice,
    GatewayInvoiceStatus,
    GatewayMisconfiguredError,
    GatewayRejectedError,
    GatewayUnavailableError,
    InvoiceRequest,
    PaymentInvoice,
)


@dataclass
class _Invoice:
    gateway_id: str
    request: InvoiceRequest
    status: GatewayInvoiceStatus = "draft"
    lines_added: int = 0
    credited: Decimal = Decimal(0)
    refunded: Decimal = Decimal(0)
    payments: list[str] = field(default_factory=list)  # the payment intents that paid it (``settle``)
    latest_revision: str | None = None  # the revision that voided it (``revise``)
    card: str | None = None  # the card that paid it (the customer's default when settled), if any
    charged: Decimal | None = None  # what its payment charged when not its lines' sum (Stripe Tax added: ``settle``)


@dataclass
class InMemoryPaymentGateway:
    customers: dict[str, str] = field(default_factory=dict)  # account -> customer id
    details: dict[str, tuple[str | None, str | None]] = field(default_factory=dict)  # customer id -> (email, name)
    invoices: dict[str, _Invoice] = field(default_factory=dict)  # our invoice id -> invoice
    credit_notes: dict[str, tuple[str, Decimal]] = field(default_factory=dict)  # credit id -> (gateway id, amount)
    out_of_band_notes: set[str] = field(default_factory=set)  # credit ids of notes credited outside the processor
    to_card_notes: set[str] = field(default_factory=set)  # credit ids of notes the processor refunded (D433)
    refunds: dict[str, tuple[str, Decimal]] = field(default_factory=dict)
    failed_refunds: dict[str, str] = field(default_factory=dict)  # refund id -> the processor's failure reason
    returned_cards: set[str] = field(default_factory=set)  # cards (else gateway ids) whose bank returned a refund
    outside: set[str] = field(default_factory=set)  # gateway ids of invoices made outside Kilo Billing (no metadata)
    disputed: set[str] = field(default_factory=set)  # gateway ids whose payment's dispute says not refundable
    default_cards: dict[str, str] = field(default_factory=dict)  # customer id -> card id
    saved_cards: dict[str, list[str]] = field(default_factory=dict)  # customer id -> its cards, oldest first
    calls: list[str] = field(default_factory=list)
    fail_next: list[Exception] = field(default_factory=list)  # raised by the next calls, in order
    crash_after_lines: int | None = None  # issue_invoice stops (raises) after adding this many lines
    _ids: itertools.count[int] = field(default_factory=lambda: itertools.count(1))

    def _call(self, name: str) -> None:
        self.calls.append(name)
        if self.fail_next:
            raise self.fail_next.pop(0)

    def _new_id(self, prefix: str) -> str:
        return f"{prefix}_{next(self._ids):06d}"

    def ensure_customer(self, customer: Customer) -> str:
        self._call("ensure_customer")
        if customer.account_id not in self.customers:
            self.customers[customer.account_id] = self._new_id("cus")
        found = self.customers[customer.account_id]
        self.bring_details(found, customer, record=False)
        return found

    def bring_details(self, customer_id: str, customer: Customer, *, record: bool = True) -> None:
        if record:
            self._call("bring_details")
        email, name = self.details.get(customer_id, (None, None))
        self.details[customer_id] = (customer.email or email, customer.name or name)

    def forget_details(self, customer_id: str) -> None:
        self._call("forget_details")
        self.details[customer_id] = (None, None)

    def issue_invoice(self, request: InvoiceRequest) -> GatewayInvoice:
        self._call("issue_invoice")
        if request.customer_id not in self.customers.values():
            raise GatewayMisconfiguredError(f"no such customer {request.customer_id}")  # ours: D315
        if Decimal(0) < request.total < Decimal("0.50"):  # Stripe's minimum charge: the adapter refuses to send it
            raise GatewayRejectedError(f"{request.total} is below the minimum charge")
        invoice = self.invoices.get(request.invoice_id)
        if invoice is None:
            invoice = self.invoices[request.invoice_id] = _Invoice(self._new_id("in"), request)
        while invoice.lines_added < len(request.lines):
            if self.crash_after_lines is not None and invoice.lines_added >= self.crash_after_lines:
                self.crash_after_lines = None
                raise GatewayUnavailableError("crashed while adding lines")
            invoice.lines_added += 1
        if invoice.status == "draft":
            invoice.status = "paid" if request.total == 0 else "open"
        return self._view(invoice)

    def _view(self, invoice: _Invoice) -> GatewayInvoice:
        total = sum((line.amount for line in invoice.request.lines), Decimal(0)) - invoice.credited
        return GatewayInvoice(
            invoice.gateway_id,
            invoice.request.invoice_id,
            invoice.status,
            total,
            f"https://invoice.example/{invoice.gateway_id}",
            f"https://invoice.example/{invoice.gateway_id}.pdf",
        )

    def find_invoice(self, invoice_id: str) -> GatewayInvoice | None:
        self._call("find_invoice")
        invoice = self.invoices.get(invoice_id)
        return self._view(invoice) if invoice is not None else None

    def _by_gateway_id(self, gateway_id: str) -> _Invoice:
        for invoice in self.invoices.values():
            if invoice.gateway_id == gateway_id:
                return invoice
        raise GatewayMisconfiguredError(f"no such invoice {gateway_id}")  # ours: D315

    def credit_note(
        self, gateway_id: str, amount: Decimal, reason: str, credit_id: str, out_of_band: bool = False
    ) -> str:
        """As the port; no tax or discount modelled, so the refusal of a note on a taxed invoice carrying D432's
        coupon (the processor's note would take off other than ours, D433 amended (htax)) comes only from
        ``fail_next`` - give it the adapter's message with the invoice's own figures."""
        self._call("credit_note")
        if credit_id in self.credit_notes:
            return credit_id
        invoice = self._by_gateway_id(gateway_id)
        wanted = "paid" if out_of_band else "open"
        if invoice.status != wanted or amount <= 0 or amount > self._view(invoice).total:
            raise GatewayRejectedError(
                f"cannot credit {amount} on {gateway_id} ({invoice.status})", invoice.status, invoice.latest_revision
            )
        invoice.credited += amount
        self.credit_notes[credit_id] = (gateway_id, amount)
        if out_of_band:
            self.out_of_band_notes.add(credit_id)
        return credit_id

    def refund_note(self, gateway_id: str, amount: Decimal, reason: str, credit_id: str) -> str:
        """A paid invoice's note refunded to the card with it (no tax modelled: its amount); recorded as a note."""
        made = self.credit_note(gateway_id, amount, reason, credit_id, out_of_band=True)
        self.out_of_band_notes.discard(credit_id)
        self.to_card_notes.add(credit_id)
        return made

    def refund(self, gateway_id: str, amount: Decimal | None, refund_id: str, to_failed_card: bool = False) -> str:
        """As the Stripe adapter, for one payment per invoice: a request's refund made earlier (failed too) is found
        again; ``amount`` None is all that is left of the payment (what it charged less what was refunded, here or in
        the dashboard: ``refund_in_dashboard``); a payment by a card whose bank returned a refund (``fail_refund``
        with a card's reason, on any of the customer's invoices) is refused before anything is made unless
        ``to_failed_card``."""
        self._call("refund")
        if refund_id in self.refunds:
            return refund_id
        invoice = self._by_gateway_id(gateway_id)
        paid = self._charged(invoice)
        if gateway_id in self.disputed:  # the one payment's dispute says not refundable: the adapter leaves it out
            raise GatewayRejectedError(
                f"cannot refund {amount or 'all that is left'} of {gateway_id}: "
                f"{paid - invoice.refunded} of it is on a payment Stripe will not refund (a disputed payment left out)"
            )
        amount = paid - invoice.refunded if amount is None else amount
        if invoice.status != "paid" or amount <= 0 or invoice.refunded + amount > paid:
            raise GatewayRejectedError(f"cannot refund {amount} on {gateway_id} ({invoice.status})")
        if (invoice.card or gateway_id) in self.returned_cards and not to_failed_card:
            raise GatewayRejectedError(
                f"cannot refund {amount} more on {gateway_id}: {amount} of it would go back to a card whose bank "
                "returned a refund and would likely bounce again; the invoice has no payment by another card. "
                "Return it another way (a bank transfer), or send it to that card again explicitly (--to-failed-card)"
            )
        invoice.refunded += amount
        self.refunds[refund_id] = (gateway_id, amount)
        return refund_id

    def dispute(self, invoice_id: str) -> None:
        """A chargeback of the invoice's payment (open, lost or won): Stripe refuses its refund, as the adapter reads
        the Dispute's ``is_charge_refundable`` (D359); its events are the test's to send."""
        self.disputed.add(self.invoices[invoice_id].gateway_id)

    def _charged(self, invoice: _Invoice) -> Decimal:
        lines = sum((line.amount for line in invoice.request.lines), Decimal(0))
        return lines if invoice.charged is None else invoice.charged

    def refund_in_dashboard(self, invoice_id: str, amount: Decimal) -> None:
        """An operator's refund in Stripe's dashboard: what is left of the payment is that much less (its events are
        the test's to send)."""
        invoice = self.invoices[invoice_id]
        if invoice.refunded + amount > self._charged(invoice):
            raise AssertionError(f"{amount} is more than is left of {invoice_id}'s payment")
        invoice.refunded += amount

    def fail_refund(
        self, refund_id: str, reason: str = "expired_or_canceled_card", amount: Decimal | None = None
    ) -> None:
        """The processor's side of a refund made and then failed (Stripe's ``failure_reason``): its money is back,
        the invoice's room with it; a card's reason marks the card (the adapter's ``_CARDS_BANK``). ``amount``: only
        that part of it failed (a request Stripe made on two payments, one of them returned)."""
        if refund_id in self.failed_refunds:
            return
        gateway_id, made = self.refunds[refund_id]
        invoice = self._by_gateway_id(gateway_id)
        invoice.refunded -= made if amount is None else amount
        self.failed_refunds[refund_id] = reason
        if reason in ("lost_or_stolen_card", "expired_or_canceled_card", "declined", "unknown"):
            self.returned_cards.add(invoice.card or gateway_id)

    def payment_refs(self, gateway_id: str) -> tuple[str, ...]:
        self._call("payment_refs")
        return tuple(self._by_gateway_id(gateway_id).payments)

    def invoice_for_payment(self, payment_ref: str) -> PaymentInvoice | None:
        """As the adapter: the invoice and our id its metadata carries (its request's; None for ``outside``)."""
        self._call("invoice_for_payment")
        paid = next((i for i in self.invoices.values() if payment_ref in i.payments), None)
        if paid is None:
            return None
        return PaymentInvoice(paid.gateway_id, None if paid.gateway_id in self.outside else paid.request.invoice_id)

    def void(self, gateway_id: str) -> None:
        self._call("void")
        invoice = self._by_gateway_id(gateway_id)
        if invoice.status != "open":
            raise GatewayRejectedError(f"only open invoices can be voided ({invoice.status})")
        invoice.status = "void"

    def delete_draft(self, gateway_id: str) -> bool:
        self._call("delete_draft")
        if all(invoice.gateway_id != gateway_id for invoice in self.invoices.values()):
            return False  # gone: deleted already (Stripe's 404 resource_missing on it)
        invoice = self._by_gateway_id(gateway_id)
        if invoice.status != "draft":
            raise GatewayRejectedError(f"only draft invoices can be deleted ({invoice.status})", invoice.status)
        del self.invoices[invoice.request.invoice_id]
        return True

    def set_default_payment_method(self, customer_id: str, payment_method: str) -> str:
        self._call("set_default_payment_method")
        if customer_id not in self.customers.values():
            raise GatewayMisconfiguredError(f"no such customer {customer_id}")  # ours: D315
        card = f"card_{payment_method}"
        self.save_card(customer_id, card)
        self.default_cards[customer_id] = card
        return card

    def save_card(self, customer_id: str, card: str) -> None:
        """What Checkout in setup mode does: attach a card to the customer (not its default)."""
        cards = self.saved_cards.setdefault(customer_id, [])
        if card not in cards:
            cards.append(card)

    def default_to_latest_card(self, customer_id: str) -> str | None:
        self._call("default_to_latest_card")
        cards = self.saved_cards.get(customer_id)
        if not cards:
            return None
        self.default_cards[customer_id] = cards[-1]
        return cards[-1]

    def customer_account(self, customer_id: str) -> str | None:
        self._call("customer_account")
        return next((account for account, known in self.customers.items() if known == customer_id), None)

    # what the processor does on its own (tests drive it): a revision finalized, a card payment succeeding or failing
    def revise(self, gateway_id: str, revision_id: str) -> None:
        """An operator's "Edit invoice" finalized in Stripe: the original is voided, naming its ``latest_revision``
        (the revision itself is the test's to lay over, when it needs one)."""
        invoice = self._by_gateway_id(gateway_id)
        invoice.status = "void"
        invoice.latest_revision = revision_id

    def settle(self, invoice_id: str, paid: bool, charged: Decimal | None = None) -> str | None:
        """Returns the payment intent that paid it (``None``: not paid). ``charged``: what the payment took when it
        is not the lines' sum (Stripe Tax added to it)."""
        invoice = self.invoices[invoice_id]
        if not paid or invoice.status == "paid":
            return None
        invoice.status = "paid"
        invoice.charged = charged
        invoice.card = self.default_cards.get(invoice.request.customer_id)
        intent = self._new_id("pi")
        invoice.payments.append(intent)
        return intent
