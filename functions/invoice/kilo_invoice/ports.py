"""The ports invoicing's logic needs: the payment gateway (a card processor, Stripe, in our terms) with its data and
the errors its adapter raises; the close's job queue, the stored Stripe events, the run markers, the clock. The ledger
is the layer's (``kilo_billing.invoicing.LedgerStore``).

The payment gateway: money crosses it as Decimal dollars with our amounts already rounded (D2); the adapter turns each
line into what the processor takes and must make the processor's line amount equal ours to the cent. Every call is
idempotent on our ids (``invoice_id``, ``refund_id``, ``credit_id``): calling again after a crash or a timeout returns
the object created the first time, also after the processor's own idempotency keys expired (24 h for Stripe).
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from datetime import datetime
from decimal import Decimal
from typing import Final, Literal, Protocol

from kilo_billing.stripe_events import StripeEventRecord

# --- the payment gateway ------------------------------------------------------------------------------------------

GatewayInvoiceStatus = Literal["draft", "open", "paid", "uncollectible", "void"]
# the most lines one processor invoice holds (Stripe: "no more than 250 invoice items" per invoice, API 2016-02-22;
# ``add_lines`` takes them in one all-or-nothing request): ``logic.gateway_request`` folds an invoice down to it
# the metadata key the gateway marks each refund it makes for us with (our request's id): a ``refund.created``
# without it was made outside us (Stripe's dashboard, D319)
REFUND_METADATA: Final = "kilo_refund_id"
GATEWAY_MAX_LINES: Final = 250


class GatewayUnavailableError(Exception):
    """The processor did not answer or asked us to slow down (timeouts, 5xx, 429): retry the same call later."""


class GatewayMisconfiguredError(GatewayUnavailableError):
    """Our side of the processor is wrong, not the request's payment: the key's secret missing, marked for deletion,
    undecryptable or malformed, the key revoked or without a permission, an object or idempotency key of ours the
    processor does not accept. Unavailable (retried, never acted on as a refusal) until an operator fixes it; where a
    failure is let pass, it is alarmed."""


class GatewayPartlyUnavailableError(GatewayUnavailableError):
    """A refund the processor made in part before it could not be reached (or refused our key) for the rest: an invoice
    paid in several payments, one payment's refund made, the next one's call failed. ``refunded`` of the amount asked
    is money it gave back (by this run or an earlier one of the same request); the request stays pending and a rerun
    counts it (found by the request's id), so it is said, never taken as 0.00. The failed call refused as ours to fix:
    ``GatewayPartlyMisconfiguredError``."""

    def __init__(self, message: str, refunded: Decimal) -> None:
        super().__init__(message)
        self.refunded = refunded


class GatewayPartlyMisconfiguredError(GatewayPartlyUnavailableError, GatewayMisconfiguredError):
    """A ``GatewayPartlyUnavailableError`` whose failed call was refused as ours to fix (our key revoked, a permission
    missing): a ``GatewayMisconfiguredError`` too, so a caller that alarms those alarms it (review rh2 5)."""


class GatewayRejectedError(Exception):
    """The processor refused the payment itself for good (a card declined, its amount or state rules: a refund above
    what is left, an invoice no longer open): do not retry. Never our key, permissions or objects
    (``GatewayMisconfiguredError``).
    ``status``: the processor's status of the invoice, when the refusal is about the state it is in (``paid``,
    ``void`` ...); None when unknown. ``revision``: the invoice's latest revision, when the processor names one (an
    original voided by a revision made in Stripe: D343 amended); None for a plain void, or unknown."""

    def __init__(self, message: str, status: str | None = None, revision: str | None = None) -> None:
        super().__init__(message)
        self.status = status
        self.revision = revision


class GatewayPartlyRefundedError(GatewayRejectedError):
    """A refund the processor made in part before it refused the rest for good (an invoice paid in several payments,
    one of them refused: a disputed charge): ``refunded`` of the amount asked is money it gave back - recorded, never
    dropped (D329)."""

    def __init__(self, message: str, refunded: Decimal) -> None:
        super().__init__(message)
        self.refunded = refunded


@dataclass(frozen=True, slots=True)
class PaymentInvoice:
    """The processor's invoice a payment paid (``gateway_id``) and the invoice of ours its metadata names
    (``kilo_invoice_id``; None: made outside Kilo Billing) - D383 amended."""

    gateway_id: str
    ours: str | None
    revises: str | None = None  # the processor's invoice it is a revision of (``from_invoice``), if any


@dataclass(frozen=True, slots=True)
class Customer:
    account_id: str
    email: str | None = None
    name: str | None = None


@dataclass(frozen=True, slots=True)
class GatewayLine:
    """One line of our invoice: ``amount`` is ours (quantity x unit price, half-up to the cent, or a fee/adjustment)."""

    description: str
    amount: Decimal
    quantity: Decimal | None = None  # billing units (minutes, messages, GB), None for fee/adjustment lines
    unit_price: Decimal | None = None  # USD per unit, exact (0.00072)
    period_start: datetime | None = None
    period_end: datetime | None = None
    metadata: Mapping[str, str] = field(default_factory=dict)
    # a usage line: the units used in its tier segment and its allowance (None: unlimited), shown beside the billable
    # ``quantity`` (covered usage is quantity 0: the policy shows what was used); None for the other lines
    used: Decimal | None = None
    included: Decimal | None = None


@dataclass(frozen=True, slots=True)
class InvoiceRequest:
    invoice_id: str  # ours, unique: the idempotency anchor of every call about this invoice
    number: str  # ours, sequential per account
    account_id: str
    customer_id: str
    lines: Sequence[GatewayLine]
    currency: str = "usd"
    charge_automatically: bool = True
    automatic_tax: bool = False
    metadata: Mapping[str, str] = field(default_factory=dict)

    @property
    def total(self) -> Decimal:
        return sum((line.amount for line in self.lines), Decimal(0))


@dataclass(frozen=True, slots=True)
class GatewayInvoice:
    gateway_id: str  # the processor's id (in_...)
    invoice_id: str  # ours (from the processor's metadata)
    status: GatewayInvoiceStatus
    total: Decimal
    hosted_url: str | None = None
    pdf_url: str | None = None


class PaymentGateway(Protocol):
    def ensure_customer(self, customer: Customer) -> str:
        """The processor's customer id for the account, created once (found again by the account id), given the
        account's email and name where they differ."""
        ...

    def bring_details(self, customer_id: str, customer: Customer) -> None:
        """Give a known customer the account's email and name where they differ (``None``: leave that one)."""
        ...

    def forget_details(self, customer_id: str) -> None:
        """The account was erased: unset every contact detail the customer holds (email, name, phone, address ...),
        keeping the customer and the account id it is found by. Idempotent (a customer holding none: no change)."""
        ...

    def issue_invoice(self, request: InvoiceRequest) -> GatewayInvoice:
        """Create the invoice with exactly these lines, finalize it and let the processor collect it. Idempotent on
        ``request.invoice_id``: a second call returns the invoice created by the first, whatever step it reached.
        Refused (``GatewayRejectedError``, left unfinalized) when the processor would charge other than the lines'
        total: its subtotal differs, or the customer has a processor balance it would apply."""
        ...

    def find_invoice(self, invoice_id: str) -> GatewayInvoice | None: ...

    def credit_note(
        self, gateway_id: str, amount: Decimal, reason: str, credit_id: str, out_of_band: bool = False
    ) -> str:
        """A credit note on a finalized invoice (negative late usage); returns its id. Unpaid (``out_of_band`` False):
        it lowers the amount the invoice asks for; paid (``out_of_band``): it records ``amount`` as credited outside
        the processor (we give it as account credit) - no refund, no processor balance. An invoice not in that state,
        or ``amount`` above what it still holds: ``GatewayRejectedError``, nothing made. So too, open or paid, a note
        on a taxed invoice carrying D432's coupon whose processor's note would take off other than ``amount`` before
        tax (its lines give back their share of the discount too; D432 amended (ftax), D433 amended (htax))."""
        ...

    def refund_note(self, gateway_id: str, amount: Decimal, reason: str, credit_id: str) -> str:
        """A credit note of ``amount`` (before tax) on a paid invoice whose money the processor gives back to the card
        with it: a refund of the note's total (with Stripe Tax, tax included, as Stripe works it out), made with the
        note; returns its id (D433). Not paid, or more than it still holds: ``GatewayRejectedError``, nothing
        made."""
        ...

    def refund(self, gateway_id: str, amount: Decimal | None, refund_id: str, to_failed_card: bool = False) -> str:
        """Refund part or all of a paid invoice's payment; returns the refund id. ``amount`` is what the processor
        gives back (charge money: with Stripe Tax, tax included); None - all that is left of each of its payments,
        exactly (D384). Refused for good after part of
        ``amount`` was refunded (earlier runs' parts included): ``GatewayPartlyRefundedError`` with that part. Never
        to a payment whose card's bank returned a refund of it (``GatewayRejectedError`` when only such a payment
        has room), unless ``to_failed_card`` (D340 amended)."""
        ...

    def payment_refs(self, gateway_id: str) -> tuple[str, ...]:
        """The processor's ids of an invoice's paid payments (Stripe: each InvoicePayment's payment intent, or its
        charge when the payment has no intent), oldest first: what the processor's refund and dispute events name
        (``invoice.paid`` records them on our invoice)."""
        ...

    def invoice_for_payment(self, payment_ref: str) -> PaymentInvoice | None:
        """The processor's invoice a paid payment (a payment intent id) belongs to, with the invoice of ours its
        metadata names; ``None`` when it pays no invoice (a refund or dispute event that arrives before its
        ``invoice.paid`` is matched this way)."""
        ...

    def void(self, gateway_id: str) -> None: ...

    def delete_draft(self, gateway_id: str) -> bool:
        """Delete the processor's invoice while it is a draft (never finalized: nothing was asked of the customer);
        one no longer a draft is refused (``GatewayRejectedError``). False when the processor no longer held it (its
        answer to an earlier try of the delete lost, the SDK's retry finding it gone): deleted, said so (rh2 1)."""
        ...

    def set_default_payment_method(self, customer_id: str, payment_method: str) -> str:
        """Attach a card the customer saved (Checkout in setup mode) and make it the one invoices charge; returns the
        card's id (``checkout.session.completed`` calls this)."""
        ...

    def default_to_latest_card(self, customer_id: str) -> str | None:
        """Make the card the customer saved last (Checkout in setup mode attaches it) the one invoices charge;
        returns its id, ``None`` when the customer has no card (``checkout.session.completed`` calls this)."""
        ...

    def customer_account(self, customer_id: str) -> str | None:
        """The account a customer of ours belongs to (the customer's metadata, set by ``ensure_customer``); ``None``
        for a customer that is not ours or no longer exists (``payment_method.attached`` calls this)."""
        ...


# --- the close queue, the stored Stripe events, the run markers, the clock -----------------------------------------


class CloseJobQueue(Protocol):
    def send(self, jobs: Sequence[tuple[str, str]], kind: str = "close") -> None:
        """Queue one job per (account id, period): a close, or (``kind="early"``) an early-invoice check."""
        ...


class StripeEvents(Protocol):
    def get(self, pk: str, sk: str) -> StripeEventRecord | None:
        """The verified Stripe event stored by ingest (``None``: not stored, or expired)."""
        ...


class RunMarkers(Protocol):
    """Which periods' closes were fanned out (the hourly schedule starts each period once, catching up if late)."""

    def fanned_out(self, period: str) -> bool: ...

    def mark_fanned_out(self, period: str, accounts: int, at_ms: int) -> None: ...


class Sleeper(Protocol):
    def __call__(self, seconds: float) -> None: ...
