"""Invoicing's domain models: what a close and a processor event come to, what a close needs, and the domain error
the logic raises when an event or a command names an invoice we do not have."""

from __future__ import annotations

from dataclasses import dataclass
from decimal import Decimal
from typing import NamedTuple

from kilo_billing.catalog import Catalog
from kilo_billing.invoicing import InvoiceRecord, LedgerStore
from kilo_billing.publisher import EventPublisher
from kilo_invoice.ports import PaymentGateway, Sleeper


class InvoiceNotFoundError(LookupError):
    """A processor event or an operator command names an invoice we do not have."""


class InvoiceNotRecordedYetError(RuntimeError):
    """A refund or dispute event of a payment the processor ties to a Stripe invoice we hold no pointer for yet: ours
    does not know that Stripe id (the close stopped between Stripe's finalize and its own save, and the invoice's
    ``invoice.finalized``/``invoice.paid`` is not applied yet). Not "nothing of ours": left to the queue, redelivered
    until the invoice's own event has recorded the id, dead-lettered (alarmed) if it never does (D383)."""


class PaymentOfAStrayInvoiceError(InvoiceNotFoundError):
    """A refund or dispute of a payment of a Stripe invoice that carries our metadata but can never become ours: a
    duplicate of one ours has recorded (``invoice.paid`` said "not applied", the operator told to refund it in
    Stripe), or of an invoice of ours voided. Ignored, as nothing of ours, but logged at ERROR (D383 amended)."""


class StripeModeMismatchError(RuntimeError):
    """A stored Stripe event of the other mode than the stage's (``STRIPE_LIVEMODE``): not applied, and not dropped
    either - the setting may be what is wrong (a stack upgraded without ``StripeLiveMode``), and ingest answered
    Stripe 200, so nothing would send it again. Left to the queue: redelivered, dead-lettered, redriven once the
    setting is right (D349 amended). ``stripe_type`` and ``invoice_id`` (as its metadata names it, not looked up)
    for the handler's log."""

    def __init__(self, said: str, stripe_type: str, invoice_id: str | None) -> None:
        super().__init__(said)
        self.stripe_type = stripe_type
        self.invoice_id = invoice_id


class EarlierRefundFinishedError(Exception):
    """A refund run found an earlier request of the invoice pending and finished it instead of the refund it asked
    (money may have moved: the invoice as stored says how much); the amount asked now was not refunded. Not bad input:
    the CLI says it as a refusal (exit 3, with what this run refunded), never as a usage error (review 4)."""


class NoteWaiting(NamedTuple):
    """A credit note left pending because the processor refused its step as ours to fix (D330), and why."""

    credit_id: str
    why: str


@dataclass(frozen=True, slots=True)
class CloseOutcome:
    account_id: str
    period: str
    invoice: InvoiceRecord | None  # None: nothing to close (no profile, signed up later)
    created: bool  # this run composed and stored the invoice (False: found from an earlier run)
    # credit notes whose processor step met a refusal of ours (``GatewayMisconfiguredError``: an invoice of ours the
    # processor does not know ...), by credit id: left pending for later runs, the invoice issued all the same; the
    # handler alarms them (D330)
    notes_waiting: tuple[NoteWaiting, ...] = ()


@dataclass(frozen=True, slots=True)
class DraftVoided:
    """An operator's void of a stored month-end draft (``logic.void_draft``, D338)."""

    invoice: InvoiceRecord  # as stored: void
    processor: str | None  # what was done at the processor (None: it held no invoice for it)
    # what the draft billed that no later close bills again (the period's usage and fee, earlier periods' late usage:
    # the billed watermarks stay where it moved them, D132) - the operator's to bill another way if it is owed
    not_billed_again: Decimal
    billed_again: Decimal  # fees it billed for later periods (in advance): the next close bills them (D153)


@dataclass(frozen=True, slots=True)
class CloseDeps:
    """What closing an account needs: the ledger, the gateway, the bus, the price book, a sleep between retries."""

    store: LedgerStore
    gateway: PaymentGateway
    publisher: EventPublisher
    catalog: Catalog
    sleep: Sleeper
    automatic_tax: bool = False


@dataclass(frozen=True, slots=True)
class EventOutcome:
    stripe_event_id: str
    event_type: str
    invoice_id: str | None
    changed: bool
    published: tuple[str, ...] = ()
    # why an optional processor lookup failed on our side (``GatewayMisconfiguredError``): the event is done, the
    # handler alarms it (D316)
    misconfigured: str | None = None
    # what an operator has to look at (D343, D344): an event of a Stripe invoice other than ours
    # not applied, a revision of ours asking another amount, a payment short of what ours asks; the handler alarms it
    attention: str | None = None
    # why the event is not ours to apply at all (D349): of a Stripe Connect account; the handler alarms it (one of the
    # other mode than the stage's raises ``StripeModeMismatchError`` instead: kept for a redrive)
    foreign: str | None = None
