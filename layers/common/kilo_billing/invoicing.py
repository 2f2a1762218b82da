"""Invoicing's pure core: what a closed period owes, as our invoice (docs/decisions.md, invoicing entries).

Inputs are what rating stores per (account, period): counters ``(segment start, meter) -> base units`` (minutes,
messages, bytes), always ADDed by rating, never overwritten. The close bills a *snapshot* of them and records that
snapshot as the period's **billed watermark**; whatever rating adds later (a late ``participant_left`` that lengthens
or shortens a session, usage LiveKit reported late) is ``counters - billed`` at the next close and becomes adjustment
lines, per tier segment and meter - positive or negative. Nothing is merged into an invoiced total, nothing is lost.

Invoice lines: usage of the closed period in arrears (every meter, ``$0.00`` lines shown), the fee true-up of the
closed period (prorated segment fees - fee billed in advance), the next period's fee in advance, adjustments of earlier
periods whose late usage nets positive, then account credit: applied against a positive subtotal, or a negative subtotal
carried to the account's credit (an invoice never asks for less than zero; the customer is never left overbilled).

Late usage of an earlier period that nets negative is not an adjustment line: it is a **credit note** against that
period's invoice (``CreditNote``, billing policy; D51): a processor credit note lowers what an unpaid card invoice still
asks for, and whatever the customer has already paid, or a crypto bill, or more than the invoice still holds, becomes
account credit, applied to this very invoice (docs/decisions.md, "Negative late usage is a credit note").
"""

from __future__ import annotations

import hashlib
from collections.abc import Callable, Iterable, Iterator, Mapping
from dataclasses import dataclass, field, replace
from datetime import datetime
from decimal import Decimal
from enum import StrEnum
from typing import Final, Literal, Protocol, TypedDict, Unpack

from kilo_billing.accounts import AccountProfile
from kilo_billing.catalog import Catalog, PriceBook
from kilo_billing.meters import METER_UNITS, Meter
from kilo_billing.money import ZERO, decimal_str, is_whole_cents, money_str, total
from kilo_billing.periods import Period
from kilo_billing.rating import (
    InvoiceLine,
    LineKind,
    RatedPeriod,
    SegmentUsage,
    TierSegment,
    compose_invoice,
    rate_segments,
)

Counters = Mapping[tuple[int, str], int]  # (segment start, epoch seconds; meter) -> base units
CURRENCY: Final = "USD"
MAX_ADJUSTED_PERIODS: Final = 24  # periods adjusted by one invoice (fewer if their notes would pass the items below)
MAX_TRANSACTION_ITEMS: Final = 100  # what one DynamoDB transaction holds (``CloseDraft`` refuses more)
SHORTFALL: Final = "shortfall:"  # the outside refund recording an ``invoice.paid`` shortfall (D344)


class InvoicingError(ValueError):
    """A close or a transition that the rules refuse; the message says why."""


class InvoiceStatus(StrEnum):
    DRAFT = "draft"
    OPEN = "open"
    PAID = "paid"
    PAYMENT_FAILED = "payment_failed"
    UNCOLLECTIBLE = "uncollectible"
    VOID = "void"
    CARRIED = "carried"  # card, total above $0 but below the processor's minimum charge: never sent, nothing collected;
    # its total is a ``carried`` line on the account's next invoice (D126)


# draft -> open -> paid | payment_failed -> paid | uncollectible | void (an uncollectible invoice can still be paid);
# draft -> carried (a card invoice below the processor's minimum charge)
TRANSITIONS: Final[Mapping[InvoiceStatus, frozenset[InvoiceStatus]]] = {
    InvoiceStatus.DRAFT: frozenset({InvoiceStatus.OPEN, InvoiceStatus.VOID, InvoiceStatus.CARRIED}),
    InvoiceStatus.OPEN: frozenset(
        {InvoiceStatus.PAID, InvoiceStatus.PAYMENT_FAILED, InvoiceStatus.UNCOLLECTIBLE, InvoiceStatus.VOID}
    ),
    InvoiceStatus.PAYMENT_FAILED: frozenset({InvoiceStatus.PAID, InvoiceStatus.UNCOLLECTIBLE, InvoiceStatus.VOID}),
    InvoiceStatus.UNCOLLECTIBLE: frozenset({InvoiceStatus.PAID, InvoiceStatus.VOID}),
    InvoiceStatus.PAID: frozenset(),
    InvoiceStatus.VOID: frozenset(),
    InvoiceStatus.CARRIED: frozenset(),  # its amount is billed on a later invoice, never on this one
}


def can_move(current: InvoiceStatus, target: InvoiceStatus) -> bool:
    return target in TRANSITIONS[current]


class BillingMethod(StrEnum):
    CARD = "card"  # through the payment gateway (Stripe)
    CRYPTO = "crypto"  # a USD bill left open; the crypto rail settles it


@dataclass(frozen=True, slots=True)
class Line:
    """One line of our invoice as stored and shown (preview JSON: money and quantities as strings)."""

    kind: str  # rating.LineKind values, plus "credit"
    description: str
    amount: Decimal
    period: str
    meter: str | None = None
    tier: str | None = None
    quantity: Decimal | None = None  # billable units (x unit_price = amount, before rounding)
    unit_price: Decimal | None = None
    used: Decimal | None = None
    included: Decimal | None = None  # None with a usage line: unlimited
    start: datetime | None = None
    end: datetime | None = None
    source: str | None = None  # a ``carried`` line: the invoice id whose total it carries

    def as_json(self) -> dict[str, object]:
        return {
            "kind": self.kind,
            "meter": self.meter,
            "description": self.description,
            "quantity": decimal_str(self.quantity) if self.quantity is not None else None,
            "unit_price": decimal_str(self.unit_price) if self.unit_price is not None else None,
            "amount": money_str(self.amount),
            "start": self.start.isoformat() if self.start else None,
            "end": self.end.isoformat() if self.end else None,
        }


CREDIT: Final = "credit"
CARRIED: Final = "carried"  # line kind: the total of an earlier card invoice below the minimum charge
CARD_MINIMUM: Final = Decimal("0.50")  # Stripe's minimum chargeable amount in USD (docs: currencies, minimums)


@dataclass(frozen=True, slots=True)
class RefundRequest:
    """A card refund recorded on the invoice before the processor is asked for it: its id is the processor call's
    idempotency anchor, so a rerun after a crash asks for the same refund (never a second one)."""

    refund_id: str  # ``<invoice id>/refund/<n>``, n counting the invoice's refund requests
    amount: Decimal
    refunded_before: Decimal  # the invoice's ``refunded`` when it was requested (stored net of the failures)
    # the refunds that had failed when it was requested (``failed_refunds``' sum): ``refunded_before`` + this is gross,
    # as ``given_back``'s other figures (D340 amended, review 2); 0.00 on requests stored before it
    failed_before: Decimal = ZERO
    # asks the processor for all that is left of the invoice's payments, not ``amount`` tax included: a request for
    # everything a taxed invoice keeps (its charge money left, exactly, D384); False on requests stored before it
    whole: bool = False


@dataclass(frozen=True, slots=True)
class InvoiceRecord:
    """Our invoice: composed once at the close (frozen lines), then only its status and links change."""

    invoice_id: str
    account_id: str
    period: str
    number: str
    seq: int
    method: BillingMethod
    lines: tuple[Line, ...]
    status: InvoiceStatus = InvoiceStatus.DRAFT
    transitions: tuple[tuple[str, str], ...] = ()  # (status, ISO time), in order, draft first
    cost_basis: Decimal = ZERO  # LiveKit's cost of the closed period's usage, rounded once
    gateway_id: str | None = None
    gateway_refs: tuple[str, ...] = ()  # the processor's other ids for it (charge, payment intent): event lookups
    hosted_url: str | None = None
    pdf_url: str | None = None
    refunded: Decimal = ZERO
    refund_owed: Decimal = ZERO  # crypto: refunds an operator still has to send
    crypto_credit: Decimal = ZERO  # crypto: this invoice's overpayment already added to the account's credit
    # crypto: the shortfall settlement wrote off inside its tolerance - PAID, but never received: nothing to give back
    written_off: Decimal = ZERO
    disputed: bool = False
    charged_back: Decimal = ZERO  # card: disputes' funds withdrawn and not reinstated (lost or still open)
    refunds_requested: int = 0  # card refund requests so far (numbers their ids)
    refund_pending: RefundRequest | None = None  # a card refund requested whose processor call has not returned yet
    announced: frozenset[str] = frozenset()  # alerts published (issued, payment_failed:<in_...>:<attempt>, dispute...)
    # card: each payment's refunded amount as its charge's latest ``charge.refunded`` said (cumulative per charge, not
    # per invoice: an invoice paid in several payments has one figure per charge), (charge id, amount) by charge id
    charge_refunds: tuple[tuple[str, Decimal], ...] = ()
    # card: refunds made outside us (Stripe's dashboard) as their ``refund.created`` said, (refund id, amount) by id,
    # whether or not one of ours was pending; and what our own requests gave back once made (D331)
    outside_refunds: tuple[tuple[str, Decimal], ...] = ()
    refunds_made: Decimal = ZERO
    void_reason: str | None = None  # why an operator voided it (``invoice void-draft --reason``, D338 amended)
    # card: refunds the processor made and then failed (ours or outside), (refund id, amount) by id, as their
    # ``refund.failed`` (or ``refund.updated`` failed) said: the money came back to us, never given back
    # (D340)
    failed_refunds: tuple[tuple[str, Decimal], ...] = ()
    # card: when Stripe sent each charge's recorded total (``charge_refunds``: charge id -> the event's ``created``,
    # seconds) and each failure (``failed_refunds``: refund id -> (its charge, the failure event's ``created``)); a
    # total sent after a failure of its charge is already net of it (D340 amended). 0/absent: not known
    charge_refunds_at: tuple[tuple[str, int], ...] = ()
    failed_refunds_at: tuple[tuple[str, tuple[str, int]], ...] = ()
    # card with Stripe Tax: its Stripe invoice's (``total``, ``total_excluding_tax``) in cents, as its invoice events
    # said; what Stripe charged, refunded or disputed (tax included) is counted here before tax in that proportion
    # (``money.before_tax``), a refund of ours asked tax included (``money.with_tax``). None: no tax (D384)
    taxed: tuple[int, int] | None = None
    revision: int = 0  # the stored record's write count: every update is conditioned on it (0: never updated)

    @property
    def total(self) -> Decimal:
        return total([line.amount for line in self.lines])

    def amount_of(self, *kinds: str) -> Decimal:
        return total([line.amount for line in self.lines if line.kind in kinds])

    @property
    def kept(self) -> Decimal:
        """What the customer's payment still leaves with us: the total less refunds (made or owed) and disputes lost.
        A paid invoice is paid in full while this equals its total."""
        return self.total - self.refunded - self.refund_owed - self.charged_back

    @property
    def short_paid(self) -> Decimal:
        """What ``invoice.paid`` recorded Stripe collected less than ours asked (D344: ``SHORTFALL`` entries of
        ``outside_refunds``, counted in ``refunded`` as given back of its total; never charged, so never refunded)."""
        return total([amount for refund, amount in self.outside_refunds if refund.startswith(SHORTFALL)])

    @property
    def kept_less_pending(self) -> Decimal:
        """What it keeps once the card refund it has requested (``refund_pending``) is made: what every bound on
        giving its money back reads (a note's credit, a refund), so a refund whose processor call has not returned
        and a note never give the same money back (D302). What is given back with it is ``given_back`` counting it:
        its part already recorded as refunded (its ``charge.refunded`` came first) and a refund made outside us
        meanwhile are each counted once, in any order (D331). Never below nothing: it cannot give back what a
        refund made outside us since already did."""
        pending = self.refund_pending
        if pending is None:
            return self.kept
        more = self.given_back(pending) - self.refunded
        return self.kept - max(ZERO, min(more, self.kept))

    def given_back(self, pending: RefundRequest | None = None) -> Decimal:
        """What the card invoice has given back (with ``pending`` made too): the largest of figures that each count
        a refund at most once - ``refunded`` as recorded; the charges' ``charge.refunded`` totals (ours and
        outside); our requests made, the refunds made outside us by id and ``pending``; what was recorded when
        ``pending`` was requested and it (a refund seen only by its ``charge.refunded`` before it, D331) - less the
        refunds that failed (``failed_refunds``). Each figure is a lower bound of what was refunded at the processor,
        failed refunds included (a failed one is in ours made or in the outside ones by id; ``refunded`` is stored net
        of the failures stored with it, so it stands for ``refunded`` + their sum; a charge's total may be read before
        or after a failure), so the largest less the failures counts each failure once, in any order
        (D340). A charge's total Stripe sent after a failure of that charge is net of it already, so the
        failure is added back to that figure before the failures are taken off (``_failed_before_totals``): taken off
        once, not twice (D340 amended). The request's figure adds the failures known when it was asked
        (``failed_before``) to ``refunded_before``, net of them, so it is gross too (D340 amended, review 2).
        Never below nothing."""
        amount = ZERO if pending is None else pending.amount
        before = ZERO if pending is None else pending.refunded_before + pending.failed_before + amount
        # a shortfall ``invoice.paid`` recorded (D344) was never charged: no charge's total holds it, so it
        # is counted with them - one figure, else the larger of the two hides the other (D344 amended)
        charges = (
            total([refunded for _, refunded in self.charge_refunds]) + self._failed_before_totals() + self.short_paid
        )
        ours_and_outside = self.refunds_made + total([refunded for _, refunded in self.outside_refunds]) + amount
        failed = total([refunded for _, refunded in self.failed_refunds])
        back = max(ZERO, max(self.refunded + failed, charges, ours_and_outside, before) - failed)
        # with Stripe Tax each refund is counted before tax, rounded once: parts of one payment can come to a cent
        # more than the whole (20.00 + 20.00 + 30.58 of 70.58 -> 18.48 + 18.48 + 28.25 = 65.21 of 65.20), never more
        # than the invoice is given back (D384)
        # (with a chargeback too they can come to cents over it: the invoice function's ``_within_total`` settles that
        # after each change, once chargebacks are counted as they now stand, D384 amended)
        return min(back, self.total) if self.taxed is not None else back

    def _failed_before_totals(self) -> Decimal:
        """The failures a recorded charge total is already net of: a failure of that charge whose event Stripe created
        strictly before the event of the total (both times known). A failure at the same second, of unknown charge or
        time, or of a total recorded before times were kept counts as inside the total (taken off it)."""
        sent = dict(self.charge_refunds_at)
        amounts = dict(self.failed_refunds)
        return total(
            [
                amounts.get(refund, ZERO)
                for refund, (charge, at) in self.failed_refunds_at
                if at > 0 and 0 < at < sent.get(charge, 0)
            ]
        )

    def moved(self, target: InvoiceStatus, at: datetime) -> InvoiceRecord:
        if not can_move(self.status, target):
            raise InvoicingError(f"invoice {self.invoice_id} cannot go from {self.status} to {target}")
        return replace(self, status=target, transitions=(*self.transitions, (target.value, at.isoformat())))

    def as_json(self) -> dict[str, object]:
        return {
            "invoice_id": self.invoice_id,
            "number": self.number,
            "account_id": self.account_id,
            "period": self.period,
            "status": self.status.value,
            "method": self.method.value,
            "currency": CURRENCY,
            "lines": [line.as_json() for line in self.lines],
            "total": money_str(self.total),
            "transitions": [{"status": s, "at": at} for s, at in self.transitions],
            "refunded": money_str(self.refunded),
            "charged_back": money_str(self.charged_back),
            "hosted_url": self.hosted_url,
            "pdf_url": self.pdf_url,
        }


@dataclass(frozen=True, slots=True)
class PeriodLedger:
    """Rating's aggregate of one (account, period) as invoicing sees it."""

    period: str
    counters: Counters
    billed: Counters = field(default_factory=dict)  # the watermark: what invoices have covered so far
    invoiced: bool = False
    billed_rev: int = 0  # bumped by every write of the watermark (optimistic lock between closes)

    @property
    def unbilled(self) -> dict[tuple[int, str], int]:
        keys = set(self.counters) | set(self.billed)
        diff = {key: self.counters.get(key, 0) - self.billed.get(key, 0) for key in keys}
        return {key: value for key, value in diff.items() if value}


@dataclass(frozen=True, slots=True)
class BillingState:
    """Per account: the last invoice number used, credit on account, the processor's customer id, a dispute flag
    (with ``dispute_revision``, how many times it was written: ``LedgerStore.save_dispute_flag``'s condition), and
    ``refund_rev``, how many refunds were recorded: a close that writes credit notes waits on it (D283)."""

    seq: int = 0
    credit: Decimal = ZERO
    customer_id: str | None = None
    disputed: bool = False
    dispute_revision: int = 0
    refund_rev: int = 0
    card_on_file: bool = False
    customer_details: str | None = None  # ``customer_details_digest`` of the email and name last given the customer


class BillingFields(TypedDict, total=False):
    """The fields of an account's ``BillingState`` a writer sets through ``LedgerStore.save_billing``, each alone: a
    field not given, None, or an empty id or digest is left as stored (``billing_changes``)."""

    customer_id: str | None
    disputed: bool | None
    card_on_file: bool | None
    customer_details: str | None


def billing_changes(fields: BillingFields) -> dict[str, str | bool]:
    """What ``save_billing`` writes of ``fields``: the fields given with a value (an empty id or digest is none)."""
    return {name: value for name, value in fields.items() if isinstance(value, str | bool) and value != ""}


def customer_details_digest(email: str | None, name: str | None) -> str:
    """What the processor's customer was last given of the account's profile, as stored on the billing item: a
    digest (not the address itself), compared to know whether a known customer needs the profile's details (D172)."""
    return hashlib.sha256(f"{email or ''}\x00{name or ''}".encode()).hexdigest()[:32]


ERASED_DETAILS: Final = "erased"  # ``customer_details`` once an erased account's customer holds none of its details


def details_erased(profile: AccountProfile | None) -> bool:
    """The account was erased (D80) and its profile has held no email or name since: its processor customer must
    hold none of the details it had either (D189)."""
    return profile is not None and profile.erased_at is not None and not profile.email and not profile.name


class CreditNoteStatus(StrEnum):
    PENDING = "pending"  # the processor's credit note is still to be made (or to be given up on)
    DONE = "done"  # nothing more to do: the processor's note made, or none needed


@dataclass(frozen=True, slots=True)
class CreditNote:
    """Negative late usage of an invoiced period, credited against that period's invoice (billing policy: "a credit
    note if negative"). Our record, written once by the close that found the late usage (in its transaction, with the
    account credit it gives). ``amount`` = ``to_due + to_credit``:

    - ``to_due``: taken off what the credited card invoice still asks for, by the processor's credit note (unpaid
      invoices only; at most what it still holds);
    - ``to_credit``: account credit, applied from the invoice that found it onwards (a paid invoice, a crypto bill, a
      carried or $0.00 invoice, and whatever exceeds what an unpaid one holds).
    ``processor`` is the processor note's amount (``to_due``; or, for a paid card invoice, the account credit,
    recorded on it as credited outside the processor); 0: no processor note.
    ``returned``: the part of the late usage that a paid invoice no longer holds - refunds, refunds owed, disputes
    lost and earlier notes already gave it back - so neither account credit nor ``amount`` (D131).
    ``uncollected``: the part that an invoice of the period billed and was never paid for (open, payment failed,
    written off: D166), so nothing to give back; neither account credit nor ``amount`` (D188)."""

    credit_id: str  # ``<account>/<credited period>/credit-<period of the invoice that found it>``
    account_id: str
    invoice_id: str  # the credited invoice (the credited period's period-end invoice)
    found_by: str  # the invoice whose close found the late usage (and applied ``to_credit`` first)
    period: str  # the credited period
    lines: tuple[Line, ...]  # the late usage per segment and meter (adjustment lines, netting negative)
    to_due: Decimal
    to_credit: Decimal
    processor: Decimal = ZERO
    out_of_band: bool = False  # the processor note records a credit we give (paid invoice), not a lower amount due
    # the processor note gives ``processor`` back to the card itself (a paid invoice Stripe taxed: its ``refund_amount``
    # is the note's total, tax included), recorded here as ``returned``; its refund, reported as made outside us,
    # lowers what the invoice keeps (D433)
    to_card: bool = False
    status: CreditNoteStatus = CreditNoteStatus.DONE
    gateway_note_id: str | None = None
    # the processor invoice its reduction was last asked on, stored before the call: a note still pending on it may
    # have been made there (its answer lost) - ``invoice.paid`` of that invoice counts it (D344 amended, review i)
    asked_on: str | None = None
    version: int = 1  # bumped by every update after the close's write (conditional: the version read)
    history: tuple[tuple[str, str], ...] = ()  # (what happened, ISO time)
    returned: Decimal = ZERO
    uncollected: Decimal = ZERO

    @property
    def amount(self) -> Decimal:
        return self.to_due + self.to_credit

    @property
    def gateway_credit_id(self) -> str:
        """The processor call's idempotency anchor: another one for the out-of-band note that replaces a refused
        reduction (a key whose first request was refused is not used again with other parameters)."""
        if self.to_card:
            return self.credit_id + "/refund"
        return self.credit_id + ("/out-of-band" if self.out_of_band else "")

    def as_json(self) -> dict[str, object]:
        return {
            "credit_id": self.credit_id,
            "invoice_id": self.invoice_id,
            "found_by": self.found_by,
            "period": self.period,
            "amount": money_str(self.amount),
            "to_amount_due": money_str(self.to_due),
            "to_account_credit": money_str(self.to_credit),
            "already_returned": money_str(self.returned),
            "not_collected": money_str(self.uncollected),
            "status": self.status.value,
            "lines": [line.as_json() for line in self.lines],
        }


@dataclass(frozen=True, slots=True)
class AccountLedger:
    account_id: str
    profile: AccountProfile | None
    periods: Mapping[str, PeriodLedger]
    invoices: Mapping[str, InvoiceRecord]
    billing: BillingState = BillingState()
    method: BillingMethod = BillingMethod.CARD
    credit_notes: Mapping[str, CreditNote] = field(default_factory=dict)


@dataclass(frozen=True, slots=True)
class WatermarkMove:
    """Set a period's billed watermark to ``billed`` (and mark it invoiced), if its revision is still ``rev``."""

    period: str
    billed: Counters
    rev: int


@dataclass(frozen=True, slots=True)
class CloseDraft:
    """Everything one close writes, all or nothing: the draft invoice, the watermarks, the number, the credit. The
    credit is written only if it is still ``previous_credit`` (what the close read): a credit added meanwhile (a crypto
    overpayment) makes the close conflict and compose again, so it is never overwritten."""

    invoice: InvoiceRecord
    watermarks: tuple[WatermarkMove, ...]
    previous_seq: int
    credit: Decimal
    previous_credit: Decimal
    credit_notes: tuple[CreditNote, ...] = ()  # negative late usage of earlier periods (written once: none yet)
    # the invoices those notes credit, with the revision read: the close bumps it, so a void (or any writer) that read
    # one before the notes were written re-reads them (D132: a void gives back credit net of its notes' credit)
    credited: tuple[tuple[str, int], ...] = ()
    # with notes: the account's ``refund_rev`` read, so a refund recorded since the notes' bound was read makes the
    # close compose again; a refund conditions on the ``seq`` it read, which the close moves (D283 amended)
    refunds_read: int | None = None

    def __post_init__(self) -> None:
        items = self.transaction_items
        if items > MAX_TRANSACTION_ITEMS:
            raise InvoicingError(
                f"{self.invoice.account_id}: the close of {self.invoice.period} would write {items} items in one "
                f"transaction; DynamoDB takes at most {MAX_TRANSACTION_ITEMS}"
            )

    @property
    def transaction_items(self) -> int:
        """The items the close writes in its one transaction: the invoice, the watermarks, the notes, the credited
        invoices' revisions and the account's billing item."""
        return 2 + len(self.watermarks) + len(self.credit_notes) + len(self.credited)


class LedgerConflictError(Exception):
    """Someone else changed what the close read (another close, a concurrent update): re-read and retry."""


@dataclass(frozen=True, slots=True)
class CreditMove:
    """A move of the account's credit from ``credit_read`` (what the writer read) to ``credit`` (``credit_read +
    added``), with the credit notes ``notes`` written in the same transaction, each over its stored version
    ``note.version - 1``. Every write that moves the account's credit goes through one, in both stores (an invoice
    update's, a credit note's step's): the ledger keeps credit in whole cents, so a move that is not is refused when
    built - ValueError naming the amounts - before anything is written (D265). With ``refunds_read`` (a dispute's
    funds reinstated into notes, bounded by what the period's invoices hold), the account's ``refund_rev`` must
    still be the one read and becomes one more, in the same write: a refund of another invoice of the period since
    the read makes it re-read, and a close or refund that read before it composes or bounds again (D308). With
    ``seq_read`` (notes credited: a crypto bill paid, a card invoice paid or keeping more), the account's invoice
    sequence must still be the one read (none stored reads 0): a close since the read - one that may have written a
    note on the notes' period the move did not see - makes the writer re-read (D346, D339
    amended)."""

    credit_read: Decimal
    added: Decimal
    notes: tuple[CreditNote, ...] = ()
    refunds_read: int | None = None
    seq_read: int | None = None

    def __post_init__(self) -> None:
        amounts = {"credit_read": self.credit_read, "added": self.added}
        odd = [f"{name} {value}" for name, value in amounts.items() if not is_whole_cents(value)]
        if odd:
            raise ValueError(f"the account's credit moves in whole cents; not whole cents: {', '.join(odd)}")

    @property
    def credit(self) -> Decimal:
        """The account's credit once moved: the one place it is computed (both stores write it)."""
        return self.credit_read + self.added


class LedgerStore(Protocol):
    """Invoicing's storage: an account's ledger, the close, invoice updates, the account list."""

    def ledger(self, account_id: str) -> AccountLedger: ...

    def create_invoice(self, draft: CloseDraft) -> None:
        """Write the close all or nothing; ``LedgerConflictError`` when the invoice or a read revision changed."""
        ...

    def update_invoice(
        self, invoice: InvoiceRecord, expected: InvoiceStatus, seq_read: int | None = None
    ) -> InvoiceRecord:
        """Replace the invoice if the stored one is still the one it was read from: its ``revision`` (a record
        written before revisions existed has none: read as 0), its status ``expected`` and its ``crypto_credit``
        (only ``update_invoice_with_credit`` moves it); ``LedgerConflictError`` otherwise (nothing written: re-read,
        re-apply). Returns the invoice as stored, its revision one more: a further update starts from it.
        With ``seq_read`` (a refund, or a dispute changing what it keeps: D308), also only if the account's
        invoice sequence is still the one read (no close or early invoice since: none stored reads 0), adding one to
        its ``refund_rev`` in the same transaction (D283)."""
        ...

    def update_invoice_with_credit(
        self, invoice: InvoiceRecord, expected: InvoiceStatus, credit_read: Decimal, added: Decimal
    ) -> InvoiceRecord:
        """``update_invoice`` and, in the same transaction, the account's credit from ``credit_read`` (what the caller
        read) to ``credit_read + added``, the invoice's ``crypto_credit`` having grown by ``added`` (its stored value
        must still be ``invoice.crypto_credit - added``); ``LedgerConflictError`` when the status, the invoice's
        crypto credit or the account's credit moved (nothing written)."""
        ...

    def update_invoice_and_credit(
        self, invoice: InvoiceRecord, expected: InvoiceStatus, move: CreditMove, crypto_added: Decimal = ZERO
    ) -> InvoiceRecord:
        """``update_invoice`` and, in the same transaction, ``move``: the account's credit (an invoice voided gives
        back the credit it consumed: the status condition makes it once) and the credit notes (a dispute's funds
        reinstated: what the notes credit again); ``LedgerConflictError`` when the status, the crypto credit, the
        account's credit or a note moved. With ``crypto_added`` (a crypto bill paid with an overpayment, whose notes
        it credits in the same write: D346), the invoice's ``crypto_credit`` has grown by it: its
        stored value must still be ``invoice.crypto_credit - crypto_added`` (``move.added`` includes it)."""
        ...

    def update_credit_note(self, note: CreditNote, credit_read: Decimal | None = None, added: Decimal = ZERO) -> None:
        """Replace a credit note if its stored ``version`` is still ``note.version - 1`` and, with ``credit_read``,
        move the account's credit from it to ``credit_read + added`` in the same transaction;
        ``LedgerConflictError`` otherwise (nothing written)."""
        ...

    def save_billing(self, account_id: str, **fields: Unpack[BillingFields]) -> None:
        """Set only the fields given (``billing_changes``) of the account's customer id, dispute flag, card flag and
        the digest of the details last given the customer (``customer_details_digest``),
        so a writer never puts back another writer's field from an earlier read (sequence and credit are the close's,
        and a crypto overpayment's: ``update_invoice_with_credit``)."""
        ...

    def save_dispute_flag(self, account_id: str, disputed: bool, revision_read: int) -> None:
        """Set the account's dispute flag if its ``dispute_revision`` is still ``revision_read`` (none stored: 0),
        the revision one more; ``LedgerConflictError`` otherwise (nothing written: re-read the ledger, recompute)."""
        ...

    def invoice_for_gateway(self, gateway_id: str) -> tuple[str, str] | None:
        """(account id, our invoice id) of a processor invoice id."""
        ...

    def accounts(self) -> Iterator[str]:
        """Every registered account (to fan the close out)."""
        ...


def invoice_id(account_id: str, period: Period, part: str = "") -> str:
    """Ours, unique: ``<account>/<YYYY-MM>`` (``/`` is never in an account id); ``part`` for early invoices."""
    return f"{account_id}/{period.key}" + (f"/{part}" if part else "")


def invoice_number(account_id: str, seq: int) -> str:
    return f"KB-{account_id}-{seq:05d}"


# --- rating counters -------------------------------------------------------------------------------------------


def segment_usage(period: Period, segments: list[TierSegment], counters: Counters) -> list[SegmentUsage]:
    """Counters keyed by segment start -> usage per tier segment (a key before the first segment goes to it)."""
    starts = [int(segment.start.timestamp()) for segment in segments]
    sums: list[dict[Meter, int]] = [dict.fromkeys(Meter, 0) for _ in segments]
    for (segment_start, meter), quantity in counters.items():
        index = max((i for i, start in enumerate(starts) if start <= segment_start), default=0)
        sums[index][Meter(meter)] += quantity
    return [SegmentUsage(segment, totals) for segment, totals in zip(segments, sums, strict=True)]


def rate_counters(period: Period, profile: AccountProfile, counters: Counters, book: PriceBook) -> RatedPeriod:
    return rate_segments(period, segment_usage(period, profile.segments(period), counters), book)


def _line(line: InvoiceLine, start: datetime | None = None, end: datetime | None = None) -> Line:
    usage = line.kind is LineKind.USAGE
    return Line(
        kind=line.kind.value,
        description=line.description,
        amount=line.amount,
        period=line.period.key,
        meter=line.meter.value if line.meter is not None else None,
        tier=line.tier,
        quantity=line.billable if usage else (Decimal(1) if line.kind is LineKind.FEE else None),
        unit_price=line.unit_price if usage else (line.amount if line.kind is LineKind.FEE else None),
        used=line.used if usage else None,
        included=line.included if usage else None,
        start=start,
        end=end,
    )


def usage_lines(rated: RatedPeriod) -> list[Line]:
    """The period's usage lines with the tier segment each one rates (rating emits them segment by segment)."""
    meters = len(Meter)
    lines = []
    for index, line in enumerate(rated.usage_lines):
        segment = rated.segments[index // meters].segment
        lines.append(_line(line, segment.start, segment.end))
    return lines


def adjustment_lines(
    period: Period, profile: AccountProfile, billed: Counters, current: Counters, book: PriceBook
) -> list[Line]:
    """Late usage of an invoiced period, either sign: per segment and meter, (rating now) - (rating as billed), so
    ``billed total + adjustments == rating everything together`` to the cent (D5), allowances included."""
    before = rate_counters(period, profile, billed, book)
    after = rate_counters(period, profile, current, book)
    meters = len(Meter)
    lines: list[Line] = []
    for index, (old, new) in enumerate(zip(before.usage_lines, after.usage_lines, strict=True)):
        if new.used == old.used:
            continue
        meter = Meter(str(old.meter))
        segment = after.segments[index // meters].segment
        delta = new.used - old.used
        sign = "+" if delta > 0 else ""
        lines.append(
            Line(
                kind=LineKind.ADJUSTMENT.value,
                description=(
                    f"Late {meter.value.replace('_', ' ')} usage for {period} on {old.tier} "
                    f"({sign}{decimal_str(delta)} {METER_UNITS[meter].billing_unit})"
                ),
                amount=new.amount - old.amount,
                period=period.key,
                meter=meter.value,
                tier=old.tier,
                quantity=new.billable - old.billable,
                unit_price=old.unit_price,
                used=delta,
                included=new.included,
                start=segment.start,
                end=segment.end,
            )
        )
    return lines


def with_credit(lines: list[Line], credit: Decimal, period: Period) -> tuple[list[Line], Decimal]:
    """Apply credit on account to a positive subtotal; carry a negative subtotal to the credit; bill a credit below
    zero (a void took back credit a credit note had given and that was spent meanwhile, D132). -> (lines, credit)."""
    subtotal = total([line.amount for line in lines])
    if subtotal < 0:
        carried = -subtotal
        line = Line(CREDIT, f"Carried to account credit ({money_str(carried)})", carried, period.key)
        return [*lines, line], credit + carried
    if credit < 0:
        owed = -credit
        line = Line(CREDIT, f"Account credit overdrawn by a voided invoice ({money_str(owed)})", owed, period.key)
        return [*lines, line], ZERO
    if credit > 0 and subtotal > 0:
        applied = min(credit, subtotal)
        line = Line(CREDIT, f"Account credit applied ({money_str(applied)})", -applied, period.key)
        return [*lines, line], credit - applied
    return lines, credit


def first_period(profile: AccountProfile, catalog: Catalog) -> Period:
    """The account's first period to close: the one it signed up in, or the price book's first when it signed up
    before any price book was in effect (D51: every period from it on is closed, in order)."""
    return max(Period.containing(profile.signed_up_at), catalog.first_period)


def unclosed_previous(
    account_id: str, profile: AccountProfile, invoices: Mapping[str, InvoiceRecord], period: Period, catalog: Catalog
) -> Period | None:
    """The period before ``period`` when the account had to be invoiced for it first and is not: it is one of the
    account's periods (from ``first_period`` on) and has no invoice. A close of ``period`` then would bill the next
    period's fee in advance and leave the earlier one's usage and fee billed by nothing, for good (D51)."""
    previous = period.previous()
    if previous < first_period(profile, catalog) or invoice_id(account_id, previous) in invoices:
        return None
    return previous


def compose_close(ledger: AccountLedger, period: Period, catalog: Catalog, now: datetime) -> CloseDraft | None:
    """The invoice that closes ``period`` for the account, with what the close must write; ``None`` when the account
    has nothing to close (no profile, or it signed up after the period)."""
    profile = ledger.profile
    if profile is None or profile.signed_up_at >= period.end:
        return None
    key = period.key
    later = sorted(i.period for i in ledger.invoices.values() if i.period > key)
    if later:
        raise InvoicingError(f"{ledger.account_id}: {key} cannot be closed after {later[0]}")
    waiting = unclosed_previous(ledger.account_id, profile, ledger.invoices, period, catalog)
    if waiting is not None:
        raise InvoicingError(f"{ledger.account_id}: close {waiting} before {key}")
    current = ledger.periods.get(key, PeriodLedger(key, {}))
    book = catalog.for_period(period)
    rated = rate_counters(period, profile, current.counters, book)
    advance = fees_billed(ledger, key)  # in advance, by the previous invoice unless it was voided
    next_period = period.next()
    first = (profile.signed_up_at, book) if period == first_period(profile, catalog) else None
    invoice = compose_invoice(
        ledger.account_id,
        rated,
        profile.tier_at(next_period.start),
        catalog.for_period(next_period),
        advance,
        first_month=first,
    )
    lines = usage_lines(rated)
    voided = fees_voided(ledger, key)
    for line in invoice.lines[len(rated.usage_lines) :]:
        if line.kind is LineKind.FEE:  # the next period's fee, in advance
            lines.append(_line(line, next_period.start, next_period.end))
        elif line.kind is LineKind.FEE_PRORATION and voided:
            lines.append(_refee_line(period, rated.fee, advance, voided))
        else:
            lines.append(_line(line, period.start, period.end))
    lines.extend(fees_billed_again(ledger, profile, period, catalog))
    moves = [WatermarkMove(key, dict(current.counters), current.billed_rev)]
    notes: list[CreditNote] = []
    this_invoice = invoice_id(ledger.account_id, period)
    for other_key in _to_adjust(ledger, key):
        other = ledger.periods[other_key]
        other_period = Period.parse(other_key)
        late = _late_lines(ledger, profile, other_period, catalog)
        credited = ledger.invoices.get(invoice_id(ledger.account_id, other_period))
        negative = total([line.amount for line in late]) < 0  # policy: a credit note if negative
        found = credit_notes(ledger, credited, late, this_invoice, [*notes]) if credited and negative else []
        if 1 + len(moves) + _note_items([*notes, *found]) > MAX_TRANSACTION_ITEMS:
            # its notes would pass one transaction's items: left, with the later ones, for the next close (D311);
            # the first one alone: the invoices that fit are lowered now, the rest, its note and its watermark wait
            # for the next closes (D314)
            notes = notes or _lowered_ahead(found, len(moves))
            break
        notes = [*notes, *found]
        if not found:
            lines.extend(late)
        moves.append(WatermarkMove(other_key, dict(other.counters), other.billed_rev))
    lines.extend(billed_early_lines(ledger, period))
    lines.extend(carried_lines(ledger))
    given = total([note.to_credit for note in notes])
    lines, credit = with_credit(lines, ledger.billing.credit + given, period)
    seq = ledger.billing.seq + 1
    record = InvoiceRecord(
        invoice_id=this_invoice,
        account_id=ledger.account_id,
        period=key,
        number=invoice_number(ledger.account_id, seq),
        seq=seq,
        method=ledger.method,
        lines=tuple(lines),
        transitions=((InvoiceStatus.DRAFT.value, now.isoformat()),),
        cost_basis=rated.cost_basis_rounded,
    )
    # the credited invoices as read (D132); a refund recorded meanwhile (``refund_rev``) makes the close compose
    # again, with the notes bounded by what is left (D283)
    read = {note.invoice_id: ledger.invoices[note.invoice_id].revision for note in notes}
    return CloseDraft(
        record,
        tuple(moves),
        ledger.billing.seq,
        credit,
        ledger.billing.credit,
        tuple(notes),
        tuple(sorted(read.items())),
        ledger.billing.refund_rev if notes else None,
    )


def _note_items(notes: list[CreditNote]) -> int:
    """The items a close writes besides the watermarks: its invoice, the account's billing item, the notes and the
    invoices they name (each revision once)."""
    return 2 + len(notes) + len({note.invoice_id for note in notes})


def _lowered_ahead(found: list[CreditNote], watermarks: int) -> list[CreditNote]:
    """Of one period's notes (``credit_notes``, in order), the reductions of its unpaid invoices that fit in the close
    with ``watermarks`` moves, without the period's note or its watermark (D314): the next close finds the same
    late usage and lowers on from there (``lowered_ahead``)."""
    ahead: list[CreditNote] = []
    for note in found:
        if note.lines or watermarks + _note_items([*ahead, note]) > MAX_TRANSACTION_ITEMS:
            break
        ahead.append(note)
    return ahead


def _to_adjust(ledger: AccountLedger, key: str) -> list[str]:
    """The earlier invoiced periods a close of ``key`` adjusts, oldest first, at most ``MAX_ADJUSTED_PERIODS``: those
    with late usage unbilled, or with reductions lowered ahead of their note that the usage may since have taken back
    (``lowered_ahead``, D326)."""
    found = sorted(
        p
        for p, each in ledger.periods.items()
        if p < key and each.invoiced and (each.unbilled or lowered_ahead(ledger, p))
    )
    return found[:MAX_ADJUSTED_PERIODS]


def _late_lines(ledger: AccountLedger, profile: AccountProfile, period: Period, catalog: Catalog) -> list[Line]:
    """``period``'s late usage against its watermark (``adjustment_lines``); when less is withdrawn now than earlier
    closes lowered ahead of its note (``lowered_ahead``), with the line billing the difference again (D326)."""
    other = ledger.periods[period.key]
    late = adjustment_lines(period, profile, other.billed, other.counters, catalog.for_period(period))
    ahead = lowered_ahead(ledger, period.key)
    if ahead > 0 and ahead > -total([line.amount for line in late]):
        late.append(_billed_again(period, ahead))
    return late


def _billed_again(period: Period, ahead: Decimal) -> Line:
    """The adjustment line billing again what earlier closes lowered ahead of ``period``'s note (``lowered_ahead``)
    when some of the late usage they lowered for came back before the note: with the late lines against the watermark
    (netting what is still withdrawn, or what came back beyond it), the period's lines net what was lowered ahead for
    usage that stands (D326)."""
    return Line(
        kind=LineKind.ADJUSTMENT.value,
        description=f"Late usage for {period} taken off earlier invoices ahead of its credit note, reported again",
        amount=ahead,
        period=period.key,
        start=period.start,
        end=period.end,
    )


# --- fees on a voided invoice: never collected, so billed again, once (docs/decisions.md, D132 amended) ----------

FEE_KINDS: Final = frozenset({LineKind.FEE.value, LineKind.FEE_PRORATION.value, LineKind.FEE_FIRST_MONTH.value})


def _voided_for_later(invoice: InvoiceRecord, line: Line) -> bool:
    """A fee line that a void invoice billed for another period than its own: the next period's fee in advance, or a
    fee billed again. What a voided invoice billed for its own period (its usage, that period's true-up) stays the
    operator's to replace (D132); a fee it billed for another period is that period's, so it is billed again."""
    return invoice.status is InvoiceStatus.VOID and line.kind in FEE_KINDS and line.period != invoice.period


def fees_billed(ledger: AccountLedger, period: str) -> Decimal:
    """The fee of ``period`` billed so far: every fee line for it (in advance, a true-up, a fee billed again), except
    those a void invoice billed ahead of its own period (it collected nothing)."""
    return total(
        [
            line.amount
            for invoice in ledger.invoices.values()
            for line in invoice.lines
            if line.kind in FEE_KINDS and line.period == period and not _voided_for_later(invoice, line)
        ]
    )


def fees_voided(ledger: AccountLedger, period: str) -> list[InvoiceRecord]:
    """The void invoices that had billed a fee of ``period`` ahead of their own period, oldest first."""
    found = [
        invoice
        for invoice in ledger.invoices.values()
        if any(_voided_for_later(invoice, line) and line.period == period and line.amount for line in invoice.lines)
    ]
    return sorted(found, key=lambda invoice: invoice.seq)


def _refee_line(period: Period, due: Decimal, billed: Decimal, voided: list[InvoiceRecord]) -> Line:
    numbers = ", ".join(invoice.number for invoice in voided)
    return Line(
        LineKind.FEE_PRORATION.value,
        f"Fee for {period}: due {money_str(due)}, billed {money_str(billed)} "
        f"(the fee billed on voided invoice {numbers} was not collected)",
        due - billed,
        period.key,
        start=period.start,
        end=period.end,
    )


def fees_billed_again(ledger: AccountLedger, profile: AccountProfile, closing: Period, catalog: Catalog) -> list[Line]:
    """Fees of periods already closed that a void invoice had billed ahead and no other invoice bills yet: the
    prorated fee due less what is billed for it (``fees_billed``), oldest period first. An invoice voided before the
    close of the period whose fee it billed in advance is met by that close's true-up; one voided later (or between a
    close's read and its write) is met here, by the next close. Once billed again, the line counts as billed."""
    periods = sorted(
        {
            line.period
            for invoice in ledger.invoices.values()
            for line in invoice.lines
            if _voided_for_later(invoice, line) and line.period < closing.key
        }
    )
    lines = []
    for key in periods:
        period = Period.parse(key)
        due = rate_counters(period, profile, {}, catalog.for_period(period)).fee
        billed = fees_billed(ledger, key)
        if due != billed:
            lines.append(_refee_line(period, due, billed, fees_voided(ledger, key)))
    return lines


def closed_periods(invoices: Iterable[InvoiceRecord]) -> set[str]:
    """The periods a period-end invoice closed (an early, progressive invoice closes nothing)."""
    return {invoice.period for invoice in invoices if not is_early(invoice)}


# --- progressive billing: what the period-end invoice deducts (composition of early invoices: kilo_billing.progressive)


EARLY_PART: Final = "early-"  # early invoices: ``<account>/<YYYY-MM>/early-<n>``
BILLED_EARLY: Final = "billed_early"  # line kind: usage of the period already invoiced early (negative)


def is_early(invoice: InvoiceRecord) -> bool:
    return invoice.invoice_id.rsplit("/", 1)[-1].startswith(EARLY_PART)


def early_invoices(ledger: AccountLedger, period: Period) -> list[InvoiceRecord]:
    """The period's early invoices, oldest first."""
    found = [i for i in ledger.invoices.values() if i.period == period.key and is_early(i)]
    return sorted(found, key=lambda invoice: invoice.seq)


def billed_early(ledger: AccountLedger, period: Period) -> Decimal:
    """Usage of ``period`` invoiced early so far: each early invoice bills (usage to date - billed early before), so
    the sum of their usage and deduction lines is the usage to date of the last one (credit applied is not usage)."""
    return total([i.amount_of(LineKind.USAGE.value, BILLED_EARLY) for i in early_invoices(ledger, period)])


def billed_early_lines(ledger: AccountLedger, period: Period) -> list[Line]:
    """The deduction that makes an invoice bill only the rest of the period's usage (none without early invoices)."""
    early = early_invoices(ledger, period)
    amount = billed_early(ledger, period)
    if not early:
        return []
    numbers = ", ".join(invoice.number for invoice in early)
    description = f"Usage of {period} invoiced early ({numbers}): {money_str(amount)}"
    return [Line(BILLED_EARLY, description, -amount, period.key, start=period.start, end=period.end)]


# --- card invoices below the processor's minimum charge (D126) ------------------------------------------------


def below_minimum_charge(method: BillingMethod, amount: Decimal) -> bool:
    """More than $0 but less than the processor will charge a card (the crypto rail bills any amount)."""
    return method is BillingMethod.CARD and ZERO < amount < CARD_MINIMUM


def below_card_minimum(invoice: InvoiceRecord) -> bool:
    """A card invoice that asks for more than $0 but less than the processor will charge: Stripe would mark it paid
    without charging and move the amount to the customer's Stripe balance. We keep it (``CARRIED``) instead."""
    return below_minimum_charge(invoice.method, invoice.total)


def carried_lines(ledger: AccountLedger) -> list[Line]:
    """One ``carried`` line per carried invoice that no invoice carries yet, oldest first: its total is billed here,
    once (the line names it in ``source``; invoices are written one at a time per account, fenced by their number).
    A void invoice carries nothing: nothing it asked for was collected, so what it carried is carried again."""
    taken = {
        line.source
        for invoice in ledger.invoices.values()
        if invoice.status is not InvoiceStatus.VOID
        for line in invoice.lines
        if line.kind == CARRIED
    }
    waiting = sorted(
        (i for i in ledger.invoices.values() if i.status is InvoiceStatus.CARRIED and i.invoice_id not in taken),
        key=lambda invoice: invoice.seq,
    )
    return [
        Line(
            CARRIED,
            f"Carried from invoice {i.number} ({i.period}), below the card minimum of {money_str(CARD_MINIMUM)}: "
            f"{money_str(i.total)}",
            i.total,
            i.period,
            source=i.invoice_id,
        )
        for i in waiting
    ]


# --- negative late usage: credit notes against the credited period's invoice (billing policy; D51) ---------------


def credit_note_id(account_id: str, credited: Period | str, found_by: Period | str) -> str:
    """Ours, unique: one note per (credited period, close that found it)."""
    return f"{account_id}/{credited}/credit-{found_by}"


def credited_by_processor(invoice: InvoiceRecord, notes: Iterable[CreditNote]) -> Decimal:
    """What our processor credit notes have taken (or will take) off ``invoice`` so far. Not a note given back to the
    card (``to_card``): its refund lowers what the invoice keeps itself (D433)."""
    return total([note.processor for note in notes if note.invoice_id == invoice.invoice_id and not note.to_card])


def credited_by_notes(invoice: InvoiceRecord, notes: Iterable[CreditNote]) -> Decimal:
    """What credit notes have given back against ``invoice`` so far, both ways: taken off its amount due, or account
    credit. A refund of the invoice is bounded by what it keeps less this (D131)."""
    return total([note.amount for note in notes if note.invoice_id == invoice.invoice_id])


def credit_applied(invoice: InvoiceRecord) -> Decimal:
    """The account credit ``invoice`` applied (its negative ``credit`` lines): money the customer had with us, spent on
    it as surely as a payment."""
    return -total([line.amount for line in invoice.lines if line.kind == CREDIT and line.amount < 0])


def _lowered(invoice: InvoiceRecord, notes: Iterable[CreditNote], period: str | None = None) -> Decimal:
    """What credit notes took off ``invoice``'s amount due (never asked for, so never paid); with ``period``, only
    notes on that period's usage (a later invoice is lowered for the late usage it billed, D306)."""
    return total(
        [
            note.to_due
            for note in notes
            if note.invoice_id == invoice.invoice_id and (period is None or note.period == period)
        ]
    )


def usage_billed(invoice: InvoiceRecord, period: str) -> Decimal:
    """What ``invoice`` billed for ``period``'s usage: its lines of that period (usage, the deduction of what was
    billed early, a carried early invoice of it), fees and account credit aside - not the next period's fee in advance,
    a fee of its own, late usage of other periods or what it carries from them."""
    return total(
        [
            line.amount
            for line in invoice.lines
            if line.period == period and line.kind not in FEE_KINDS and line.kind != CREDIT
        ]
    )


def invoice_held(invoice: InvoiceRecord, period: str, notes: Iterable[CreditNote]) -> Decimal:
    """The money with us that paid for ``period``'s usage on ``invoice`` (D166): what it billed for that usage (less
    what notes took off its amount due), at most what it still holds - what it keeps if it is paid (its total less
    refunds, disputes lost and notes' reductions) plus the account credit it applied; its money pays that usage first.
    An invoice not paid (open, payment failed, written off, carried: what a carried one asked for is billed, and held,
    by the invoice that carries it) holds only the credit it applied; a void one holds nothing (``money_held``)."""
    if period != invoice.period:
        return ZERO
    return money_held(invoice, notes).held.get(period, ZERO)


@dataclass(frozen=True)
class MoneyHeld:
    """What an invoice's money still with us pays for (``money_held``): per period of usage (its own, and each earlier
    period whose late usage it billed), and ``free`` - what a refund may give back without taking money a note has
    credited: what paid for no usage (fees, what it carries, ...) and what paid for usage notes have not credited."""

    held: dict[str, Decimal]
    free: Decimal


def money_held(
    invoice: InvoiceRecord, notes: Iterable[CreditNote], given: Mapping[str, Decimal] | None = None
) -> MoneyHeld:
    """How ``invoice``'s money (what it was paid, if paid, plus the account credit it applied) pays what it billed
    (D166, D191): its own period's usage first (less what notes took off its amount due), then the late usage
    of earlier periods it billed, oldest period first, and only then the rest (fees, what it carries, ...). What left
    us again (refunds made, owed or requested, disputes' funds withdrawn) is taken from that rest first, then from
    usage notes have not credited (latest paid first), and only then from usage they credited - of each period, this
    invoice counts as paying what the notes on it gave back (``given``, by period: ``given_back``; without it, their
    account credit), up to what it paid for it. So one partial refund never counts as giving back two periods' late
    usage, and two refunds never give back what a note credited: notes credit at most what is held
    (``period_held``), and a refund gives back at most ``free``. Unpaid, it holds only the credit it applied; void,
    nothing."""
    if invoice.status is InvoiceStatus.VOID:
        return MoneyHeld({}, ZERO)
    notes = list(notes)
    lowered = _lowered(invoice, notes)
    # paid: what it asked for, less what settlement wrote off (never received, D289)
    paid = invoice.total - lowered - invoice.written_off if invoice.status is InvoiceStatus.PAID else ZERO
    gone = invoice.total - invoice.kept_less_pending if invoice.status is InvoiceStatus.PAID else ZERO
    late = sorted(
        {
            line.period
            for line in invoice.lines
            if line.kind == LineKind.ADJUSTMENT.value and line.period < invoice.period
        }
    )
    billed = [(invoice.period, usage_billed(invoice, invoice.period) - _lowered(invoice, notes, invoice.period))]
    billed += [(period, late_usage_billed(invoice, period) - _lowered(invoice, notes, period)) for period in late]
    left = max(ZERO, paid + credit_applied(invoice))
    held: dict[str, Decimal] = {}
    for period, amount in billed:
        held[period] = max(ZERO, min(amount, left))
        left -= held[period]
    if given is None:
        given = {period: total([note.to_credit for note in notes if note.period == period]) for period in held}
    credited = {period: min(amount, max(ZERO, given.get(period, ZERO))) for period, amount in held.items()}
    free = {period: amount - credited[period] for period, amount in held.items()}
    taken = min(gone, left)
    left, gone = left - taken, gone - taken
    for period in reversed(list(held)):  # what no note credited, latest paid first
        taken = min(gone, free[period])
        free[period], held[period], gone = free[period] - taken, held[period] - taken, gone - taken
    for period in reversed(list(held)):  # then what notes credited (a dispute lost, D131)
        taken = min(gone, held[period])
        held[period], gone = held[period] - taken, gone - taken
    return MoneyHeld(held, left + total(list(free.values())))


def late_usage_billed(invoice: InvoiceRecord, period: str) -> Decimal:
    """What ``invoice`` billed as late usage of an earlier ``period`` (its adjustment lines of that period: the billing
    policy's "adjustment line on the next invoice")."""
    if period == invoice.period:
        return ZERO
    return total(
        [line.amount for line in invoice.lines if line.kind == LineKind.ADJUSTMENT.value and line.period == period]
    )


def late_held(invoice: InvoiceRecord, period: str, notes: Iterable[CreditNote]) -> Decimal:
    """The money with us that paid for ``period``'s late usage billed on a later ``invoice`` (D166 amended, s8;
    D191): its money pays its own period's usage first, then the late usage it billed, oldest period first,
    before fees and the rest (``money_held``); a refund takes from that rest first. Paid less, or refunded beyond the
    rest, it holds less; unpaid, only the account credit it applied; void, nothing."""
    if period >= invoice.period:
        return ZERO
    return money_held(invoice, notes).held.get(period, ZERO)


def period_held(ledger: AccountLedger, period: str, notes: Iterable[CreditNote] = ()) -> Decimal:
    """What the customer paid for ``period``'s usage and has not had back, over the invoices that billed it - its
    period-end invoice, its early (progressive) ones, and later invoices that billed its late usage - less the account
    credit notes against the period gave already. A note gives at most this; a refund takes from it only what it
    takes of an invoice's money that paid for the period's usage (D166)."""
    notes = list(notes)
    given = given_back(ledger, notes)
    held = total(
        [
            money_held(invoice, notes, given).held.get(period, ZERO)
            for invoice in ledger.invoices.values()
            if invoice.period >= period
        ]
    )
    return held - given.get(period, ZERO)


def given_back(ledger: AccountLedger, notes: Iterable[CreditNote]) -> dict[str, Decimal]:
    """What notes gave back of each period's payments, by period: the account credit they gave, and what they took off
    the amount due of the period's invoices beyond what each billed for its usage (``lowered_beyond``)."""
    notes = list(notes)
    return {
        period: total([note.to_credit for note in notes if note.period == period])
        + lowered_beyond(ledger, period, notes)
        for period in {note.period for note in notes}
    }


def lowered_beyond(ledger: AccountLedger, period: str, notes: Iterable[CreditNote]) -> Decimal:
    """What notes took off the amount due of ``period``'s invoices (not void) beyond what each billed for the period's
    usage - off the next period's fee on it, say: money the period's other invoices were paid, given back as surely as
    account credit (D194). A void invoice asks for nothing, so its reductions give nothing back."""
    notes = list(notes)
    return total(
        [
            max(ZERO, _lowered(invoice, notes, period) - max(ZERO, usage_billed(invoice, period)))
            for invoice in ledger.invoices.values()
            if invoice.period == period and invoice.status is not InvoiceStatus.VOID
        ]
    )


def refundable(ledger: AccountLedger, invoice: InvoiceRecord) -> Decimal:
    """At most what a refund of the paid ``invoice`` may give back now (D131, D166, D191): what it keeps less
    what notes took off its amount due; and of that, only its money that paid for no usage (the next period's fee,
    what it carries, ...) or for usage - its period's, and late usage of earlier periods it billed - that notes have
    not credited (``money_held``'s ``free``), so a note and a refund, or two refunds, never give the same money back,
    whichever comes first."""
    notes = list(ledger.credit_notes.values())
    keeps = invoice.kept_less_pending - invoice.written_off - _lowered(invoice, notes)  # write-off: never received
    return max(ZERO, min(keeps, money_held(invoice, notes, given_back(ledger, notes)).free))


def amount_due(invoice: InvoiceRecord, notes: Iterable[CreditNote]) -> Decimal:
    """What an invoice asks the customer for: its total less what credit notes took off its amount due."""
    return invoice.total - total([note.to_due for note in notes if note.invoice_id == invoice.invoice_id])


UNPAID_AT_PROCESSOR: Final = frozenset({InvoiceStatus.OPEN, InvoiceStatus.PAYMENT_FAILED})
# credited as a paid invoice is, for at most what paid for the period's usage: a written-off invoice's was only the
# account credit it applied (D193)
BOUNDED: Final = frozenset({InvoiceStatus.PAID, InvoiceStatus.UNCOLLECTIBLE})


def credit_notes(
    ledger: AccountLedger, credited: InvoiceRecord, late: list[Line], found_by: str, pending: Iterable[CreditNote] = ()
) -> list[CreditNote]:
    """The notes for a period's negative late usage (``late``), found by the close of ``found_by`` (D131,
    D306, D313): what went away is first asked for no more by every card invoice still unpaid at the processor
    (open, payment failed) that billed the period's usage, each lowered by a note against it for at most what it billed
    of that usage (less earlier reductions of it) and what it still asks - the later invoices that billed it as late
    usage (oldest first, D306), then the period's own invoice (its note's reduction, ``credit_note``), then its early
    (progressive) invoices, latest first: the customer is never asked to pay for usage that went away; only the rest is
    credited (``credit_note``, latest billing first: D307), by the note against the period's invoice, which holds the
    late lines. An invoice paid, written off or on the crypto rail is not lowered: what it was paid is held for the
    period (``period_held``) and credited by the period's note."""
    notes = [*ledger.credit_notes.values(), *pending]
    left = -total([line.amount for line in late]) - lowered_ahead(ledger, credited.period)
    later = sorted(
        (invoice for invoice in ledger.invoices.values() if invoice.period > credited.period and _lowerable(invoice)),
        key=lambda invoice: invoice.seq,
    )
    lowered = _lower(ledger, credited.period, later, left, found_by, notes)
    own = credit_note(ledger, credited, late, found_by, [*pending, *lowered])
    early = [i for i in reversed(early_invoices(ledger, Period.parse(credited.period))) if _lowerable(i)]
    left -= total([note.to_due for note in lowered]) + own.to_due
    more = _lower(ledger, credited.period, early, left, found_by, [*notes, *lowered, own])
    if not more:
        return [*lowered, own]
    return [*lowered, *more, credit_note(ledger, credited, late, found_by, [*pending, *lowered, *more])]


def lowered_ahead(ledger: AccountLedger, period: str) -> Decimal:
    """What earlier closes lowered of ``period``'s late usage ahead of its note - the period's note and watermark
    left for a later close because they did not fit (D314) - and no close has taken into account yet: a note
    lowering an invoice (no lines) whose close wrote no note on the period, counted until a later close writes the
    period's note (it lowers and credits only the rest) or bills its late usage (it bills again what came back):
    those records, written in the same transaction as the watermark they move, are what consumes it (D326).
    Counted for what it gave (``amount``): a reduction refused because the invoice was paid meanwhile gave it as
    account credit."""
    notes = [note for note in ledger.credit_notes.values() if note.period == period]
    ahead = [note for note in notes if not note.lines]
    if not ahead:
        return ZERO
    closes = {_close_period(note) for note in notes if note.lines} | {
        invoice.period
        for invoice in ledger.invoices.values()
        if invoice.period > period
        and any(line.kind == LineKind.ADJUSTMENT.value and line.period == period for line in invoice.lines)
    }
    return total([note.amount for note in ahead if not any(found >= _close_period(note) for found in closes)])


def _close_period(note: CreditNote) -> str:
    """The period whose close found ``note``'s late usage."""
    return note.found_by.rsplit("/", 1)[-1]


def _lowerable(invoice: InvoiceRecord) -> bool:
    """A card invoice the processor still asks to be paid (open, payment failed): a note may lower what it asks."""
    return (
        invoice.method is BillingMethod.CARD
        and invoice.gateway_id is not None
        and invoice.status in UNPAID_AT_PROCESSOR
    )


def _lower(
    ledger: AccountLedger,
    period: str,
    invoices: Iterable[InvoiceRecord],
    left: Decimal,
    found_by: str,
    notes: Iterable[CreditNote],
) -> list[CreditNote]:
    """Notes lowering ``invoices``, in that order, by ``left`` of ``period``'s withdrawn usage: each by at most what it
    billed of that usage (a later invoice's late usage of it, an early invoice's usage of it), less what notes took
    off it for it already, and what it still asks (``credit_notes``)."""
    notes = list(notes)
    base = credit_note_id(ledger.account_id, period, found_by.rsplit("/", 1)[-1])
    lowered: list[CreditNote] = []
    for invoice in invoices:
        billed = usage_billed(invoice, period) if invoice.period == period else late_usage_billed(invoice, period)
        billed -= _lowered(invoice, notes, period)
        asks = invoice.total - credited_by_processor(invoice, notes)
        to_due = max(ZERO, min(left, billed, asks))
        if to_due <= 0:
            continue
        note = CreditNote(
            credit_id=f"{base}/on-{invoice.invoice_id.split('/', 1)[1]}",
            account_id=ledger.account_id,
            invoice_id=invoice.invoice_id,
            found_by=found_by,
            period=period,
            lines=(),
            to_due=to_due,
            to_credit=ZERO,
            processor=to_due,
            status=CreditNoteStatus.PENDING,
        )
        lowered.append(note)
        notes.append(note)
        left -= to_due
    return lowered


def credit_note(
    ledger: AccountLedger, credited: InvoiceRecord, late: list[Line], found_by: str, pending: Iterable[CreditNote] = ()
) -> CreditNote:
    """How negative late usage (``late`` nets below zero) is credited against the period's invoice ``credited``:

    - an unpaid card invoice at the processor (open, payment failed): the processor's credit note lowers its amount
      due by as much as it still holds (its total less earlier notes); any rest is account credit;
    - a paid invoice (card or crypto): account credit for at most what the period's invoices still hold
      (``period_held``: what the period-end invoice and its early invoices billed for the period's usage, at most
      what each still keeps - less refunds made or owed and disputes lost - plus the account credit it applied, less
      the account credit earlier notes gave); the rest was given back already (``returned``).
      A card invoice's credit is recorded on the processor's invoice as credited outside it;
    - an uncollectible (written-off) invoice: as a paid one, bounded by ``period_held`` - of its own money only the
      account credit it applied paid for anything; the rest was never collected (D193). No processor note;
    - a void invoice: nothing (nothing was collected, nothing is owed back);
    - anything else (a crypto bill - the crypto rail cannot take money back to the payer -, a carried or $0.00
      invoice never sent to the processor, a draft): account credit."""
    notes = [*ledger.credit_notes.values(), *pending]
    # what notes of this close on other invoices of the period lowered already (``credit_notes``), and earlier
    # closes' reductions of the same late usage ahead of this note (``lowered_ahead``)
    this_close = [note for note in pending if note.found_by == found_by and note.period == credited.period]
    amount = max(
        ZERO,
        -total([line.amount for line in late])
        - total([note.to_due for note in this_close])
        - lowered_ahead(ledger, credited.period),
    )
    taken = credited_by_processor(credited, notes)
    base = CreditNote(
        credit_id=credit_note_id(ledger.account_id, credited.period, found_by.rsplit("/", 1)[-1]),
        account_id=ledger.account_id,
        invoice_id=credited.invoice_id,
        found_by=found_by,
        period=credited.period,
        lines=tuple(late),
        to_due=ZERO,
        to_credit=amount,
    )
    on_card = credited.method is BillingMethod.CARD and credited.gateway_id is not None
    if credited.status is InvoiceStatus.VOID:
        return replace(base, to_credit=ZERO)
    if on_card and credited.status in UNPAID_AT_PROCESSOR:
        # what it asks for its period's usage may simply be asked no more; beyond that (the next period's fee ...), a
        # reduction gives back money the period's other invoices were paid, so only what they still hold
        own = max(ZERO, usage_billed(credited, credited.period) - _lowered(credited, notes, credited.period))
        others = period_held(ledger, credited.period, notes) - invoice_held(credited, credited.period, notes)
        to_due = max(ZERO, min(amount, credited.total - taken, own + max(ZERO, others)))
        lowered = replace(base, to_due=to_due, to_credit=ZERO, processor=to_due, status=_pending_if(to_due))
        # beyond what it still asks for: account credit only for money that paid for the period's usage (D166)
        held = creditable(ledger, credited.period, [*notes, lowered], amount - to_due)
        return _not_credited(ledger, replace(lowered, to_credit=held), amount - to_due - held, [*notes, lowered])
    if credited.status in BOUNDED:  # never more back than the customer's payments still leave with us
        held = creditable(ledger, credited.period, notes, amount)
        paid = _not_credited(ledger, replace(base, to_credit=held), amount - held, notes)
        if not on_card or credited.status is InvoiceStatus.UNCOLLECTIBLE:  # written off: no processor note
            return paid
        recorded = max(ZERO, min(held, credited.kept_less_pending - taken))
        if credited.taxed is not None and credited.status is InvoiceStatus.PAID and recorded > 0:
            return to_the_card(paid, recorded)
        return replace(paid, processor=recorded, out_of_band=True, status=_pending_if(recorded))
    return base


def to_the_card(note: CreditNote, given: Decimal) -> CreditNote:
    """``note`` on a paid invoice Stripe taxed with ``given`` of its account credit given back to the card instead:
    Stripe's note refunds its total, tax included (``refund_amount``), so the customer gets exactly what the note
    records - account credit before tax would give back the tax only through a later invoice's tax, at its rate, and
    Stripe's tax report would show it reversed twice (D433). ``given`` is ``returned`` (given back by the note's
    refund, which its ``refund.created`` counts on the invoice), the note's processor amount; pending."""
    return replace(
        note,
        to_credit=note.to_credit - given,
        returned=note.returned + given,
        processor=given,
        out_of_band=False,
        to_card=True,
        status=CreditNoteStatus.PENDING,
    )


def creditable(ledger: AccountLedger, period: str, notes: Iterable[CreditNote], rest: Decimal) -> Decimal:
    """The account credit a note on ``period`` gives for ``rest`` of withdrawn late usage (D166, D307): what
    went away is what was billed last, so it is taken from the period's billings latest first (a later invoice's late
    usage before the period's own invoices), after what earlier notes on the period withdrew, and each part is
    credited for at most what that invoice holds for the period (``money_held``) less what earlier notes withdrew of
    it; all told at most ``period_held``. So money that paid for usage that stands is never credited because the
    money that paid for the withdrawn usage went back already (a refund, a dispute's funds withdrawn)."""
    notes = list(notes)
    given = given_back(ledger, notes)
    # withdrawn by earlier notes beyond what they took off an invoice's amount due (that is off its billing below)
    skip = total([n.to_credit + n.returned + n.uncollected for n in notes if n.period == period])
    need, credit = rest, ZERO
    billings = sorted(
        (invoice for invoice in ledger.invoices.values() if invoice.period >= period),
        key=lambda invoice: invoice.seq,
        reverse=True,
    )
    for invoice in billings:
        lowered = _lowered(invoice, notes, period)
        billed = usage_billed(invoice, period) if invoice.period == period else late_usage_billed(invoice, period)
        billed = max(ZERO, billed - lowered)  # what notes took off it is asked no more: withdrawn already
        before = min(skip, billed)
        skip -= before
        take = min(need, billed - before)
        need -= take
        held = money_held(invoice, notes, given).held.get(period, ZERO)
        credit += min(take, max(ZERO, held - before))
    return max(ZERO, min(rest, credit, period_held(ledger, period, notes)))


NOT_COLLECTED: Final = frozenset(
    {InvoiceStatus.DRAFT, InvoiceStatus.OPEN, InvoiceStatus.PAYMENT_FAILED, InvoiceStatus.UNCOLLECTIBLE}
)


def period_uncollected(ledger: AccountLedger, period: str, notes: Iterable[CreditNote]) -> Decimal:
    """What invoices never paid (a draft, open, payment failed, written off) billed for ``period``'s usage beyond the
    account credit that paid it: usage the customer was asked for and has not paid (D166). And what a paid invoice
    short of what it asked (``short_paid``, D344) billed for it beyond what its payment - kept whole (``kept_whole``:
    a refund or dispute since is given back, not uncollected) - holds: asked and never received (D354)."""
    notes = list(notes)
    owed = []
    for invoice in ledger.invoices.values():
        short = invoice.status is InvoiceStatus.PAID and invoice.short_paid > 0
        if invoice.status not in NOT_COLLECTED and not short:
            continue
        read = kept_whole(invoice) if short else invoice
        if invoice.period == period:
            billed = usage_billed(invoice, period) - _lowered(invoice, notes, period)
            owed.append(billed - invoice_held(read, period, notes))
        elif invoice.period > period:
            billed = late_usage_billed(invoice, period) - _lowered(invoice, notes, period)
            owed.append(billed - late_held(read, period, notes))
    return total([max(ZERO, each) for each in owed])


def _not_credited(ledger: AccountLedger, note: CreditNote, rest: Decimal, notes: Iterable[CreditNote]) -> CreditNote:
    """``note`` with the part of the late usage it does not credit (``rest``) split into what invoices of the period
    billed and were never paid (``uncollected``) and what was paid and given back already (``returned``)."""
    uncollected = max(ZERO, min(rest, period_uncollected(ledger, note.period, notes)))
    return replace(note, uncollected=uncollected, returned=rest - uncollected)


def credit_reinstated(ledger: AccountLedger, invoice: InvoiceRecord, at: datetime) -> tuple[CreditNote, ...]:
    """The credit notes that now give more account credit because the paid ``invoice`` (as it is about to be stored,
    replacing the ledger's) keeps more than when they were made: a dispute's funds, withdrawn then, reinstated since
    (the dispute won). A note gave at most what paid for its period's usage (``period_held``), the rest recorded as
    ``returned``; for each period the invoice paid usage of - its own (as the period-end invoice or an early one) and
    any whose late usage it billed - each note's ``returned`` becomes account credit for what ``creditable`` now gives
    for it (by billing, latest first: money that paid for usage that stands is not credited; D312), at most what
    the period holds beyond the notes' credit, earliest note first, as a note made now would give (D131 amended; D166
    amended, s8: before, only notes against the invoice itself, bounded by its whole ``kept``). Each changed note comes
    back one version on, with its history (naming why: the dispute won, or a pending refund refused, D317); the
    account credit to add is what their ``to_credit`` grew by. A dispute lost leaves them as they are."""
    if invoice.status is not InvoiceStatus.PAID:
        return ()
    why = _kept_again_why(ledger.invoices.get(invoice.invoice_id), invoice)
    return _credited_again(ledger, invoice, at, "returned", lambda given: f"{given} kept again ({why})")


def paid_since(before: InvoiceRecord | None, after: InvoiceRecord) -> bool:
    """``after`` is the invoice moving to PAID from a status that had collected nothing (open, payment failed, written
    off, a draft): the payment notes recorded as not collected is now with us (D339)."""
    return before is not None and before.status in NOT_COLLECTED and after.status is InvoiceStatus.PAID


def notes_credit(
    ledger: AccountLedger, notes: tuple[CreditNote, ...], more: Decimal = ZERO, seq_read: int | None = None
) -> CreditMove:
    """The move that writes ``notes`` (each one version on from the ledger's) and adds what their ``to_credit`` grew
    by - and ``more`` (a crypto bill's overpayment paid with them) - to the account's credit, both as read in
    ``ledger``, on its ``refund_rev`` (bounded by the period's invoices as read: a refund since makes the writer
    re-read, D308) and, with ``seq_read``, its invoice sequence (D346)."""
    before = {note.credit_id: note.to_credit for note in ledger.credit_notes.values()}
    given = total([note.to_credit - before[note.credit_id] for note in notes])
    return CreditMove(ledger.billing.credit, more + given, notes, ledger.billing.refund_rev, seq_read)


def credit_collected(ledger: AccountLedger, invoice: InvoiceRecord, at: datetime) -> tuple[CreditNote, ...]:
    """The credit notes that now give more account credit because ``invoice`` (as it is about to be stored, replacing
    the ledger's) is paid after they were made while it was not (``paid_since``: Stripe collected an open, failed or
    written-off invoice). A note made then recorded the withdrawn usage that invoice billed as ``uncollected`` (D188,
    D193, D337): the customer had not paid for it. Now it has: for each period the invoice paid usage of, each note's
    ``uncollected`` becomes account credit for what ``creditable`` now gives for its not-credited rest - by billing,
    latest first, at most what the payment holds for the period's usage (``money_held``: its usage first, then fees;
    what a note took off its amount due was never paid, so never credited) - and at most the room ``period_held``
    leaves, earliest note first, as ``credit_reinstated`` gives ``returned`` (D339). What the payment paid for
    but no longer holds - a dispute's funds withdrawn or a refund recorded before the payment's event - was collected
    and given back already: it moves from ``uncollected`` to ``returned`` (what the payment would give were it kept
    whole, less what it gives), so the funds reinstated or the refund failed later credit it (``credit_reinstated``;
    D339 amended). Each changed note comes back one version on, its history naming the invoice paid;
    ``uncollected`` only goes down, so a second delivery of the payment (the invoice is paid already: ``paid_since``
    is false) or of any later event gives nothing again."""
    if not paid_since(ledger.invoices.get(invoice.invoice_id), invoice):
        return ()
    why = f"invoice {invoice.number} paid"
    return _credited_again(
        ledger,
        invoice,
        at,
        "uncollected",
        lambda given: f"{given} collected since ({why})",
        lambda lost: f"{lost} collected since ({why}) and given back already (refunded or disputed): not credited",
    )


def kept_whole(invoice: InvoiceRecord) -> InvoiceRecord:
    """``invoice`` as if nothing it was paid had left us: no refund (made, owed, pending, outside us or failed) and no
    dispute's funds withdrawn - what its payment covered (``credit_collected``). A shortfall ``invoice.paid``
    recorded (``SHORTFALL``, D344) stays: it was never received, so never given back - what it leaves of a note's
    not-collected part stays not collected (D339 amended, interaction review)."""
    short = tuple(entry for entry in invoice.outside_refunds if entry[0].startswith(SHORTFALL))
    return replace(
        invoice,
        refunded=total([amount for _, amount in short]),
        refund_owed=ZERO,
        charged_back=ZERO,
        refund_pending=None,
        charge_refunds=(),
        outside_refunds=short,
        refunds_made=ZERO,
        failed_refunds=(),
    )


def _credited_again(
    ledger: AccountLedger,
    invoice: InvoiceRecord,
    at: datetime,
    part: Literal["returned", "uncollected"],
    what: Callable[[str], str],
    lost: Callable[[str], str] | None = None,
) -> tuple[CreditNote, ...]:
    """The notes on the periods the paid ``invoice`` paid usage of whose not-credited ``part`` (``returned`` or
    ``uncollected``) becomes account credit now that it holds more (``credit_reinstated``, ``credit_collected``):
    each gives at most that part, what ``creditable`` gives for its whole not-credited rest (after the period's earlier
    notes and its own credit, D312) and the room ``period_held`` leaves, earliest note first; its history says
    ``what(amount)``. With ``lost`` (the ``uncollected`` part), what the invoice would give were it kept whole
    (``kept_whole``) beyond what it gives moves to ``returned``, its history saying ``lost(amount)``. The credit
    given is recorded at the processor (``_recorded_at_processor``)."""
    after = replace(ledger, invoices={**ledger.invoices, invoice.invoice_id: invoice})
    whole = replace(ledger, invoices={**ledger.invoices, invoice.invoice_id: kept_whole(invoice)})
    notes = list(ledger.credit_notes.values())
    periods = {invoice.period} | {
        line.period for line in invoice.lines if line.kind == LineKind.ADJUSTMENT.value and line.period < invoice.period
    }
    changed: list[CreditNote] = []
    # what the processor's invoice still keeps beyond what processor notes take (or will take) off it: the most
    # recorded on it out of band (as the close's note on a paid card invoice, D131)
    recordable = max(ZERO, invoice.kept_less_pending - credited_by_processor(invoice, notes))
    for period in sorted(periods):
        room = period_held(after, period, notes)
        room_whole = period_held(whole, period, notes) if lost is not None else ZERO
        ordered = sorted((note for note in notes if note.period == period), key=lambda note: note.credit_id)
        for index, note in enumerate(ordered):
            # what its not-credited rest would credit now: by billing, latest first, after what the period's earlier
            # notes and its own credit withdrew (D307; D312): money that paid for usage that stands stays
            basis = [
                *(other for other in notes if other.period != period),
                *ordered[:index],
                replace(note, returned=ZERO, uncollected=ZERO),
            ]
            rest = note.returned + note.uncollected
            would = creditable(after, period, basis, rest)
            left = note.uncollected if part == "uncollected" else note.returned
            given = max(ZERO, min(left, room, would))
            covered = given
            if lost is not None:  # what the payment paid for, kept whole; beyond ``given``: given back already
                covered = max(given, min(left, room_whole, creditable(whole, period, basis, rest)))
                room_whole -= covered
            if covered <= 0:
                continue
            room -= given
            history = note.history
            if given > 0:
                history = (*history, (f"{what(money_str(given))}: account credit", at.isoformat()))
            if lost is not None and covered > given:
                history = (*history, (lost(money_str(covered - given)), at.isoformat()))
            moved = replace(note, to_credit=note.to_credit + given, version=note.version + 1, history=history)
            moved = _recorded_at_processor(moved, note, invoice, min(given, recordable))
            recordable -= moved.processor - note.processor
            if part == "uncollected":
                changed.append(replace(moved, uncollected=left - covered, returned=note.returned + covered - given))
            else:
                changed.append(replace(moved, returned=left - given))
    return tuple(changed)


def _recorded_at_processor(moved: CreditNote, note: CreditNote, invoice: InvoiceRecord, given: Decimal) -> CreditNote:
    """``moved`` (``note`` giving more account credit because the paid ``invoice`` holds more) with ``given`` of that
    credit (at most what the processor's invoice still keeps beyond its processor notes) recorded on the processor's
    invoice as credited out of band, as D131 records a paid card invoice's note credit: ``processor`` that amount,
    ``out_of_band``, PENDING - the next close's note step makes it (idempotent on the note's out-of-band id). Only
    when it fits that step: a card invoice the processor holds, the note's own credited invoice (a note's processor
    note is on that invoice; an early invoice or a later one billing late usage is another processor invoice), and
    the note has no processor note yet, made or waiting (one per note: its idempotency key). Otherwise the credit is
    ours only, as before (D339 amended)."""
    fits = (
        given > 0
        and invoice.method is BillingMethod.CARD
        and invoice.gateway_id is not None
        and note.invoice_id == invoice.invoice_id
        and note.processor == 0
        and note.gateway_note_id is None
        and note.status is CreditNoteStatus.DONE
        # its out-of-band key refused once already (the note step's "refused (...)"): not asked again with it
        and not any(what.startswith("refused (") for what, _ in note.history)
    )
    if not fits:
        return moved
    return replace(moved, processor=given, out_of_band=True, status=CreditNoteStatus.PENDING)


def _kept_again_why(before: InvoiceRecord | None, after: InvoiceRecord) -> str:
    """Why ``after`` keeps more than ``before`` (the note history's reason, D317): a pending card refund the
    processor refused for good (the request dropped, nothing refunded for it) or a dispute's funds reinstated (the
    dispute won: ``charged_back`` lowered) - or a refund the processor made and then failed (``failed_refunds``
    grew: the money came back to us, D340) - the writes that raise ``kept_less_pending``."""
    known = dict(before.failed_refunds) if before is not None else {}
    failed = [amount for refund, amount in after.failed_refunds if refund not in known]
    if before is not None and failed:
        return f"a refund of {money_str(total(failed))} failed at the card processor"
    if before is not None and after.charged_back < before.charged_back:
        return "a dispute's funds reinstated"
    if before is not None and before.refund_pending is not None and after.refund_pending is None:
        asked, made = before.refund_pending.amount, after.refunds_made - before.refunds_made
        if made > 0:  # part made before the processor refused the rest (D329)
            return f"{money_str(asked - made)} of the refund of {money_str(asked)} refused by the card processor"
        return f"the refund of {money_str(asked)} refused by the card processor"
    return "the invoice keeps more than when the note was made"


def _pending_if(amount: Decimal) -> CreditNoteStatus:
    return CreditNoteStatus.PENDING if amount > 0 else CreditNoteStatus.DONE


def credit_note_reason(note: CreditNote) -> str:
    if not note.lines:  # a later invoice lowered for the late usage it billed, an early one for its usage
        billed = "Usage" if note.invoice_id.rsplit("/", 1)[-1].startswith(EARLY_PART) else "Late usage"
        return f"{billed} of {note.period} billed on this invoice withdrawn ({money_str(note.amount)})"
    late = "; ".join(line.description for line in note.lines)
    return f"Late usage of {note.period} credited ({money_str(note.amount)}): {late}"


# --- a voided invoice and the account credit (D132) ---------------------------------------------------------------


def void_credit(ledger: AccountLedger, invoice: InvoiceRecord) -> Decimal:
    """What voiding ``invoice`` moves on the account's credit, so that the invoice and its credit notes leave the
    credit as if it had never been issued: the credit it applied comes back (its credit lines, reversed), less the
    account credit notes already gave out of its money (the same money: a note credits usage of a period the void now
    cancels). Negative when the notes gave more than it applied (D132). For each period it held money for - its own,
    and each earlier one whose late usage it billed (D192) - what every note on that period credited beyond
    what the period's other invoices hold for it (a paid early invoice, a later invoice that paid its late usage:
    their money, which stays credit, D190) was its money, at most what it held for that period; and the notes
    against it (it is the period-end invoice) count whole beyond the others' money, as D132 counts them (the credit may
    go below zero)."""
    notes = list(ledger.credit_notes.values())
    before = ledger.invoices.get(invoice.invoice_id, invoice)  # as read before the void: what it held
    mine = {invoice.period: ZERO} | money_held(before, notes).held
    # what the notes gave back of each period, a void invoice's reductions aside (it asks for nothing)
    given = given_back(replace(ledger, invoices={**ledger.invoices, invoice.invoice_id: invoice}), notes)
    taken = ZERO
    for period, held in mine.items():
        others = total(
            [
                money_held(other, notes, given).held.get(period, ZERO)
                for other in ledger.invoices.values()
                if other.invoice_id != invoice.invoice_id and other.period >= period
            ]
        )
        beyond = min(held, max(ZERO, given.get(period, ZERO) - others))
        if period == invoice.period:
            against = total([note.to_credit for note in notes if note.invoice_id == invoice.invoice_id])
            beyond = max(beyond, against - others)
        taken += beyond
    return -invoice.amount_of(CREDIT) - taken
