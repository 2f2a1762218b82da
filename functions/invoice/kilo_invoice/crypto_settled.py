"""Invoicing's side of crypto settlement: a ``CryptoBillSettled.v1`` (the crypto function's bill for our invoice is
paid by finalized chain payments) marks our crypto invoice PAID, once. Forward-only like every payment status (D53):
an invoice already paid, or a redelivered event, changes nothing; a card invoice is never touched by it.

An overpayment becomes account credit: added to the ``BILLING`` credit in the same transaction that writes the
invoice, conditioned on the credit read (the close conditions its own credit write the same way), so the next close
applies it (``invoicing.with_credit``). Both events carry the bill's credit in all, and the invoice records what it
has added (``crypto_credit``), so each adds only the difference: a redelivery, an older event or two events at once
add the credit once. ``CryptoCreditAdded.v1`` (a payment finalized after the bill was PAID) waits for the invoice to
be paid by its ``CryptoBillSettled.v1`` (SQS does not keep their order): until then it fails and is redelivered.
The write-off (``written_off_usd``: what tolerance let go unpaid) is recorded on the invoice with the move to PAID:
a refund or a credit note never gives it back (``invoicing.refundable``, ``money_held``; D289). A payment after PAID
pays the write-off before it becomes credit: ``CryptoCreditAdded.v1`` then carries what is still written off, and
the invoice's write-off is lowered to it, never raised (an older event) (D387).

The move to PAID also credits what credit notes recorded as not collected because this bill was unpaid when they were
made (``invoicing.credit_collected``, as ``invoice.paid`` does for a card invoice: D339), in the same
transaction as the status and the overpayment; the write needs the account's invoice sequence and ``refund_rev`` as
read (moving the latter), so a close racing it either composes again or makes it read again
(D346)."""

from __future__ import annotations

from dataclasses import replace
from datetime import datetime
from decimal import Decimal, InvalidOperation

from kilo_billing.contracts import CryptoBillSettledV1, CryptoCreditAddedV1
from kilo_billing.invoicing import (
    AccountLedger,
    BillingMethod,
    CreditMove,
    InvoiceRecord,
    InvoiceStatus,
    LedgerConflictError,
    LedgerStore,
    can_move,
    credit_collected,
    notes_credit,
    paid_since,
)
from kilo_billing.money import ZERO, is_whole_cents
from kilo_invoice.model import InvoiceNotFoundError

ATTEMPTS = 5


class NotCryptoInvoiceError(ValueError):
    """The event names a card invoice: a crypto settlement never pays it."""


class InvoiceNotPaidYetError(RuntimeError):
    """Credit of a paid crypto bill whose invoice is not paid here yet (its settlement is still on its way): retried."""


def marker(invoice_id: str) -> str:
    return f"crypto_settled:{invoice_id}"


def _credit(text: str, name: str = "credit_usd") -> Decimal:
    """The event's ``credit_usd`` (or ``written_off_usd``): whole cents, never negative, by contract. Anything else
    is refused (the record fails, is redelivered, then dead-lettered): never rounded here. Checked here although
    ``CreditMove`` refuses a sub-cent move too (D265): this names the event's field, and refuses before anything is
    read."""
    try:
        credit = Decimal(text)
    except InvalidOperation:
        raise ValueError(f"{name} must be an amount in USD, got {text!r}") from None
    if not is_whole_cents(credit):  # NaN and the infinities too: compared below, NaN would raise InvalidOperation
        raise ValueError(f"{name} must be whole cents, got {text}")
    if credit < 0:
        raise ValueError(f"{name} must not be negative, got {text}")
    return credit


def apply_crypto_settled(store: LedgerStore, event: CryptoBillSettledV1) -> tuple[InvoiceRecord, bool]:
    """Mark the invoice paid (at the settlement's time), with the bill's credit and its write-off (what tolerance
    let go unpaid: never refunded nor credited back, D289). -> (the invoice, whether changed)."""
    paid_at = datetime.fromisoformat(event.occurred_at)
    credit = _credit(event.credit_usd)
    written_off = _credit(event.written_off_usd, "written_off_usd")
    return _apply(store, event.account_id, event.invoice_id, credit, paid_at, written_off)


def apply_crypto_credit(store: LedgerStore, event: CryptoCreditAddedV1) -> tuple[InvoiceRecord, bool]:
    """Add what the bill's credit has grown by since this invoice last added it; lower the invoice's write-off to the
    bill's when the event carries it (a later payment paid part of it, D387) - never raise it."""
    still = None if event.written_off_usd is None else _credit(event.written_off_usd, "written_off_usd")
    return _apply(store, event.account_id, event.invoice_id, _credit(event.credit_usd), None, still_written_off=still)


def _apply(
    store: LedgerStore,
    account_id: str,
    invoice_id: str,
    credit: Decimal,
    paid_at: datetime | None,
    written_off: Decimal = Decimal(0),
    still_written_off: Decimal | None = None,
) -> tuple[InvoiceRecord, bool]:
    for _ in range(ATTEMPTS):
        ledger = store.ledger(account_id)
        invoice = ledger.invoices.get(invoice_id)
        if invoice is None:
            raise InvoiceNotFoundError(f"{account_id} has no invoice {invoice_id!r}")
        if invoice.method is not BillingMethod.CRYPTO:
            raise NotCryptoInvoiceError(f"invoice {invoice.number} is billed by card, not crypto")
        updated = invoice
        if paid_at is not None and can_move(invoice.status, InvoiceStatus.PAID):
            moved = invoice.moved(InvoiceStatus.PAID, paid_at)
            updated = replace(moved, announced=moved.announced | {marker(invoice.invoice_id)}, written_off=written_off)
        if updated.status is not InvoiceStatus.PAID:
            if paid_at is None and can_move(invoice.status, InvoiceStatus.PAID):
                raise InvoiceNotPaidYetError(f"invoice {invoice.number} is {invoice.status.value}: not paid here yet")
            return invoice, False  # void: forward-only, the money stays recorded on the crypto bill
        added = credit - invoice.crypto_credit
        if added > 0:
            updated = replace(updated, crypto_credit=credit)
        if still_written_off is not None and still_written_off < updated.written_off:  # an older event: no rise
            updated = replace(updated, written_off=still_written_off)
        if updated == invoice:
            return invoice, False  # paid already with this credit: a redelivery or an older event
        try:
            if paid_at is not None and paid_since(invoice, updated):  # notes' not-collected part with it, once
                move = _paid_move(ledger, updated, max(added, ZERO), paid_at)
                written = store.update_invoice_and_credit(updated, invoice.status, move, max(added, ZERO))
            elif added > 0:
                written = store.update_invoice_with_credit(updated, invoice.status, ledger.billing.credit, added)
            else:
                written = store.update_invoice(updated, invoice.status)
        except LedgerConflictError:
            continue
        return written, True
    raise LedgerConflictError(f"{invoice_id}: kept conflicting")


def _paid_move(ledger: AccountLedger, paid: InvoiceRecord, overpaid: Decimal, at: datetime) -> CreditMove:
    """The account-credit move of the write that marks ``paid`` PAID (D346): the bill's overpayment
    ``overpaid`` (D95) and what the credit notes that found it unpaid recorded as not collected and its payment now
    holds (``credit_collected``, as an ``invoice.paid`` does for a card invoice: D339), with those notes one
    version on. Conditioned on the account's ``refund_rev`` (moved: a close that read the bill unpaid and writes
    notes composes again) and its invoice sequence (a close since the read - one that may have written a note the
    payment credits - makes the settlement read again), as read in ``ledger``."""
    return notes_credit(ledger, credit_collected(ledger, paid, at), overpaid, ledger.billing.seq)
