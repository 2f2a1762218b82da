"""An in-memory ``kilo_billing.invoicing.LedgerStore`` (held to tests/contract/test_ledger_store.py with the DynamoDB
adapter), plus rating's side of the same items: ``rate`` ADDs counters the way rating's transactions do."""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass, field, replace
from decimal import Decimal
from typing import Any, Unpack

from kilo_billing.accounts import AccountProfile
from kilo_billing.invoicing import (
    AccountLedger,
    BillingFields,
    BillingMethod,
    BillingState,
    CloseDraft,
    CreditMove,
    CreditNote,
    InvoiceRecord,
    InvoiceStatus,
    LedgerConflictError,
    PeriodLedger,
    billing_changes,
)


@dataclass
class InMemoryLedgerStore:
    profiles: dict[str, AccountProfile] = field(default_factory=dict)
    methods: dict[str, BillingMethod] = field(default_factory=dict)
    periods: dict[tuple[str, str], PeriodLedger] = field(default_factory=dict)
    invoices: dict[str, InvoiceRecord] = field(default_factory=dict)
    billing: dict[str, BillingState] = field(default_factory=dict)
    pointers: dict[str, tuple[str, str]] = field(default_factory=dict)
    credit_notes: dict[str, CreditNote] = field(default_factory=dict)
    reads: int = 0
    writes: int = 0
    before_create: list[object] = field(default_factory=list)  # callables run just before the close's transaction
    before_update: list[object] = field(default_factory=list)  # callables run just before an invoice update's write

    # rating's side: counters are only ever ADDed
    def rate(self, account: str, period: str, segment: int, meter: str, quantity: int) -> None:
        found = self.periods.get((account, period), PeriodLedger(period, {}))
        counters = dict(found.counters)
        counters[(segment, meter)] = counters.get((segment, meter), 0) + quantity
        self.periods[(account, period)] = replace(found, counters=counters)

    def ledger(self, account_id: str) -> AccountLedger:
        self.reads += 1
        return AccountLedger(
            account_id,
            self.profiles.get(account_id),
            {p: ledger for (a, p), ledger in self.periods.items() if a == account_id},
            {i: inv for i, inv in self.invoices.items() if inv.account_id == account_id},
            self.billing.get(account_id, BillingState()),
            self.methods.get(account_id, self._method(account_id)),
            {c: note for c, note in self.credit_notes.items() if note.account_id == account_id},
        )

    def _method(self, account_id: str) -> BillingMethod:
        """As the DynamoDB adapter: the profile's billing method (``methods`` overrides it in scenarios)."""
        profile = self.profiles.get(account_id)
        return BillingMethod(profile.billing_method) if profile is not None else BillingMethod.CARD

    def create_invoice(self, draft: CloseDraft) -> None:
        for hook in list(self.before_create):
            hook()  # type: ignore[operator]
        self.before_create.clear()
        invoice = draft.invoice
        account = invoice.account_id
        if invoice.invoice_id in self.invoices:
            raise LedgerConflictError("invoice exists")
        for move in draft.watermarks:
            if self.periods.get((account, move.period), PeriodLedger(move.period, {})).billed_rev != move.rev:
                raise LedgerConflictError(f"{move.period} watermark moved")
        if self.billing.get(account, BillingState()).seq != draft.previous_seq:
            raise LedgerConflictError("sequence moved")
        if self.billing.get(account, BillingState()).credit != draft.previous_credit:
            raise LedgerConflictError("credit moved")
        if (
            draft.refunds_read is not None
            and self.billing.get(account, BillingState()).refund_rev != draft.refunds_read
        ):
            raise LedgerConflictError("a refund was recorded")
        if any(note.credit_id in self.credit_notes for note in draft.credit_notes):
            raise LedgerConflictError("credit note exists")
        for credited, revision in draft.credited:
            found = self.invoices.get(credited)
            if found is None or found.revision != revision:
                raise LedgerConflictError(f"{credited} moved")
        self.writes += 1
        self.invoices[invoice.invoice_id] = invoice
        self.credit_notes.update({note.credit_id: note for note in draft.credit_notes})
        for credited, revision in draft.credited:
            self.invoices[credited] = replace(self.invoices[credited], revision=revision + 1)
        for move in draft.watermarks:
            found = self.periods.get((account, move.period), PeriodLedger(move.period, {}))
            self.periods[(account, move.period)] = replace(
                found, billed=dict(move.billed), invoiced=True, billed_rev=move.rev + 1
            )
        self.billing[account] = replace(self.billing.get(account, BillingState()), seq=invoice.seq, credit=draft.credit)

    def update_invoice(
        self, invoice: InvoiceRecord, expected: InvoiceStatus, seq_read: int | None = None
    ) -> InvoiceRecord:
        return self._update(invoice, expected, invoice.crypto_credit, seq_read)

    def _run_before_update(self) -> None:
        """The ``before_update`` hooks, each once, before a write checks anything (a hook may write invoices itself)."""
        hooks, self.before_update = self.before_update, []
        for hook in hooks:
            hook()  # type: ignore[operator]

    def _update(
        self, invoice: InvoiceRecord, expected: InvoiceStatus, crypto_credit_read: Decimal, seq_read: int | None = None
    ) -> InvoiceRecord:
        self._run_before_update()
        billing = self.billing.get(invoice.account_id, BillingState())
        if seq_read is not None and billing.seq != seq_read:  # a refund's fence (D283): no close since its read
            raise LedgerConflictError("sequence moved")
        stored = self.invoices.get(invoice.invoice_id)
        if stored is None or stored.status is not expected:
            raise LedgerConflictError("status moved")
        if stored.crypto_credit != crypto_credit_read:
            raise LedgerConflictError("crypto credit moved")
        if stored.revision != invoice.revision:
            raise LedgerConflictError("revision moved")
        self.writes += 1
        written = replace(invoice, revision=invoice.revision + 1)
        self.invoices[invoice.invoice_id] = written
        if seq_read is not None:
            self.billing[invoice.account_id] = replace(billing, refund_rev=billing.refund_rev + 1)
        for ref in ([invoice.gateway_id] if invoice.gateway_id else []) + list(invoice.gateway_refs):
            self.pointers[ref] = (invoice.account_id, invoice.invoice_id)
        return written

    def update_invoice_with_credit(
        self, invoice: InvoiceRecord, expected: InvoiceStatus, credit_read: Decimal, added: Decimal
    ) -> InvoiceRecord:
        self._run_before_update()  # before the credit is checked, as before the invoice is
        billing = self._credit_moved(invoice.account_id, CreditMove(credit_read, added))
        written = self._update(invoice, expected, invoice.crypto_credit - added)
        self.billing[invoice.account_id] = billing
        return written

    def update_invoice_and_credit(
        self, invoice: InvoiceRecord, expected: InvoiceStatus, move: CreditMove, crypto_added: Decimal = Decimal(0)
    ) -> InvoiceRecord:
        self._run_before_update()  # before the credit, the sequence and the notes are checked, as before the invoice is
        billing = self._credit_moved(invoice.account_id, move)
        for note in move.notes:
            stored = self.credit_notes.get(note.credit_id)
            if stored is None or stored.version != note.version - 1:
                raise LedgerConflictError("credit note moved")
        written = self._update(invoice, expected, invoice.crypto_credit - crypto_added)
        self.billing[invoice.account_id] = billing
        self.credit_notes.update({note.credit_id: note for note in move.notes})
        return written

    def update_credit_note(
        self, note: CreditNote, credit_read: Decimal | None = None, added: Decimal = Decimal("0.00")
    ) -> None:
        billing = None if credit_read is None else self._credit_moved(note.account_id, CreditMove(credit_read, added))
        stored = self.credit_notes.get(note.credit_id)
        if stored is None or stored.version != note.version - 1:
            raise LedgerConflictError("credit note moved")
        self.writes += 1
        self.credit_notes[note.credit_id] = note
        if billing is not None:
            self.billing[note.account_id] = billing

    def _credit_moved(self, account_id: str, move: CreditMove) -> BillingState:
        """The account's billing state with its credit moved by ``move``, as the DynamoDB adapter's condition: the
        credit read must still be the stored one."""
        found = self.billing.get(account_id, BillingState())
        if found.credit != move.credit_read:
            raise LedgerConflictError("credit moved")
        if move.seq_read is not None and found.seq != move.seq_read:  # a close since the read (D346)
            raise LedgerConflictError("sequence moved")
        if move.refunds_read is None:
            return replace(found, credit=move.credit)
        if found.refund_rev != move.refunds_read:  # D308
            raise LedgerConflictError("a refund was recorded")
        return replace(found, credit=move.credit, refund_rev=found.refund_rev + 1)

    def save_billing(self, account_id: str, **fields: Unpack[BillingFields]) -> None:
        self.writes += 1
        found = self.billing.get(account_id, BillingState())
        changes: dict[str, Any] = billing_changes(fields)
        self.billing[account_id] = replace(found, **changes)

    def save_dispute_flag(self, account_id: str, disputed: bool, revision_read: int) -> None:
        found = self.billing.get(account_id, BillingState())
        if found.dispute_revision != revision_read:
            raise LedgerConflictError("dispute flag moved")
        self.writes += 1
        self.billing[account_id] = replace(found, disputed=disputed, dispute_revision=revision_read + 1)

    def invoice_for_gateway(self, gateway_id: str) -> tuple[str, str] | None:
        return self.pointers.get(gateway_id)

    def accounts(self) -> Iterator[str]:
        yield from sorted(self.profiles)
