"""Invoicing's side of crypto settlement: a ``CryptoBillSettled.v1`` (the crypto function's bill for our invoice is
paid by finalized chain payments) marks our crypto invoice PAID, once. Forward-only like every payment status (D53):
an invoice already paid, or a redelivered event, changes nothing; a card invoice is never touched by it.

An overpayment (``credit_usd`` > 0) becomes account credit: added to the ``BILLING`` credit in the same transaction
that marks the invoice paid, conditioned on the credit read (the close conditions its own credit write the same way),
so the next close applies it (``invoicing.with_credit``). Once: a redelivery finds the invoice paid and writes nothing.
The write-off stays recorded on the crypto bill and in the event."""

from __future__ import annotations

from dataclasses import replace
from datetime import datetime
from decimal import Decimal

from kilo_billing.contracts import CryptoBillSettledV1
from kilo_billing.invoicing import BillingMethod, InvoiceRecord, InvoiceStatus, can_move
from kilo_billing.periods_store import LedgerConflictError, LedgerStore
from kilo_invoice.logic import InvoiceNotFoundError

ATTEMPTS = 5


class NotCryptoInvoiceError(ValueError):
    """The event names a card invoice: a crypto settlement never pays it."""


def marker(invoice_id: str) -> str:
    return f"crypto_settled:{invoice_id}"


def apply_crypto_settled(store: LedgerStore, event: CryptoBillSettledV1) -> tuple[InvoiceRecord, bool]:
    """Mark the invoice paid (at the settlement's time). -> (the invoice, whether it changed)."""
    paid_at = datetime.fromisoformat(event.occurred_at)
    credit = Decimal(event.credit_usd)
    if credit < 0:
        raise ValueError(f"credit_usd must not be negative, got {event.credit_usd}")
    for _ in range(ATTEMPTS):
        ledger = store.ledger(event.account_id)
        invoice = ledger.invoices.get(event.invoice_id)
        if invoice is None:
            raise InvoiceNotFoundError(f"{event.account_id} has no invoice {event.invoice_id!r}")
        if invoice.method is not BillingMethod.CRYPTO:
            raise NotCryptoInvoiceError(f"invoice {invoice.number} is billed by card, not crypto")
        if not can_move(invoice.status, InvoiceStatus.PAID):
            return invoice, False  # paid already (or void): forward-only
        moved = invoice.moved(InvoiceStatus.PAID, paid_at)
        updated = replace(moved, announced=moved.announced | {marker(invoice.invoice_id)})
        try:
            if credit > 0:
                store.update_invoice_with_credit(updated, invoice.status, ledger.billing.credit, credit)
            else:
                store.update_invoice(updated, invoice.status)
        except LedgerConflictError:
            continue
        return updated, True
    raise LedgerConflictError(f"{event.invoice_id}: kept conflicting")
