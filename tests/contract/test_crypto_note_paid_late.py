"""A crypto bill paid on chain after a note found it unpaid (D346), against the in-memory fake and
DynamoDB (moto, the template's usage table): the PAID status, the bill's overpayment, the note (its ``uncollected``
back to nothing, its history) and the account credit are written together, once, and read back as written; the
write is refused whole when a close or the invoice's crypto credit moved since its read.

Figures worked by hand (price book 2026-01: video $0.00072, Team $29 with 50,000 video minutes): coin on Team by
crypto, 50,000 March minutes -> March = 29.00 + April's 29.00 in advance = 58.00, paid on chain; 10,000 late March
minutes billed on April: 7.20 + May's 29.00 = 36.20, open; the 10,000 withdrawn (-7.20): May's note 0.00 credit, 7.20
not collected (April, unpaid, billed it last). The chain pays April 40.00: 40.00 - 36.20 = 3.80 overpaid, and April's
money pays its 7.20 of late usage first, so 3.80 + 7.20 = 11.00 of account credit."""

from __future__ import annotations

from dataclasses import replace
from datetime import UTC, datetime
from decimal import Decimal

import pytest

from kilo_billing.accounts import AccountProfile
from kilo_billing.catalog import default_catalog
from kilo_billing.contracts import CryptoBillSettledV1
from kilo_billing.invoicing import CreditMove, InvoiceRecord, InvoiceStatus, LedgerConflictError
from kilo_billing.periods import Period
from kilo_billing.rating import TierChange
from kilo_invoice.crypto_settled import apply_crypto_settled
from kilo_invoice.logic import close_account
from kilo_invoice.model import CloseDeps
from tests.contract.ledger_harness import SEG, START, Ledger, _Bus
from tests.payment_fakes import InMemoryPaymentGateway

MAR, APR, MAY = Period(2026, 3), Period(2026, 4), Period(2026, 5)
NOTE = "coin/2026-03/credit-2026-05"
PAID_AT = datetime(2026, 5, 20, tzinfo=UTC)


def _settled(invoice: InvoiceRecord, settled_usd: str, credit: str) -> CryptoBillSettledV1:
    return CryptoBillSettledV1(
        event_id=f"crypto-settled:{invoice.invoice_id}",
        account_id=invoice.account_id,
        invoice_id=invoice.invoice_id,
        total=str(invoice.total),
        settled_usd=settled_usd,
        credit_usd=credit,
        occurred_at=PAID_AT.isoformat(),
    )


def _april_open_with_its_note(ledger: Ledger) -> InvoiceRecord:
    ledger.register(AccountProfile("coin", (TierChange(START, "team"),), billing_method="crypto"))
    ledger.rate("coin", "2026-03", SEG, "video", 50_000)
    deps = CloseDeps(ledger.store, InMemoryPaymentGateway(), _Bus(), default_catalog(), lambda _s: None)
    march = close_account(deps, "coin", MAR, MAR.end).invoice
    assert march is not None
    assert march.total == Decimal("58.00")  # 29.00 + 29.00
    apply_crypto_settled(ledger.store, _settled(march, "58.00", "0.00"))
    ledger.rate("coin", "2026-03", SEG, "video", 10_000)  # late: +7.20
    april = close_account(deps, "coin", APR, APR.end).invoice
    assert april is not None
    assert (april.total, april.status) == (Decimal("36.20"), InvoiceStatus.OPEN)
    ledger.rate("coin", "2026-03", SEG, "video", -10_000)  # -7.20
    close_account(deps, "coin", MAY, MAY.end)
    note = ledger.store.ledger("coin").credit_notes[NOTE]
    assert (note.to_credit, note.uncollected) == (Decimal("0.00"), Decimal("7.20"))
    return april


def test_given_an_open_crypto_april_overpaid_after_the_note_then_paid_overpaid_and_credited_once_as_stored(
    ledger: Ledger,
) -> None:
    april = _april_open_with_its_note(ledger)
    refunds_before = ledger.store.ledger("coin").billing.refund_rev

    _, changed = apply_crypto_settled(ledger.store, _settled(april, "40.00", "3.80"))
    _, changed_again = apply_crypto_settled(ledger.store, _settled(april, "40.00", "3.80"))  # delivered again

    assert (changed, changed_again) == (True, False)
    found = ledger.store.ledger("coin")
    paid = found.invoices["coin/2026-04"]
    assert (paid.status, paid.crypto_credit) == (InvoiceStatus.PAID, Decimal("3.80"))
    note = found.credit_notes[NOTE]
    assert (note.to_credit, note.uncollected, note.returned, note.version) == (
        Decimal("7.20"),
        Decimal("0.00"),
        Decimal("0.00"),
        2,
    )
    assert note.history[-1] == (
        "7.20 collected since (invoice KB-coin-00002 paid): account credit",
        PAID_AT.isoformat(),
    )
    assert found.billing.credit == Decimal("11.00")  # 3.80 + 7.20
    assert found.billing.refund_rev == refunds_before + 1  # the fence moved once, by the paid write


def test_given_the_paid_write_when_a_close_or_the_crypto_credit_moved_since_its_read_then_nothing_is_written(
    ledger: Ledger,
) -> None:
    """The store's side of the settled write: ``CreditMove.seq_read`` (the account's invoice sequence read) and
    ``crypto_added`` (the stored crypto credit must be the invoice's less it) refuse a stale write whole."""
    april = _april_open_with_its_note(ledger)
    read = ledger.store.ledger("coin")
    note = read.credit_notes[NOTE]
    paid = replace(april, status=InvoiceStatus.PAID, crypto_credit=Decimal("3.80"))
    paid = replace(paid, revision=read.invoices["coin/2026-04"].revision)
    again = replace(note, version=2, to_credit=Decimal("7.20"), uncollected=Decimal("0.00"))
    billing = read.billing
    added = Decimal("11.00")  # 3.80 + 7.20

    stale_seq = CreditMove(billing.credit, added, (again,), billing.refund_rev, billing.seq - 1)
    with pytest.raises(LedgerConflictError):  # a close since the read
        ledger.store.update_invoice_and_credit(paid, InvoiceStatus.OPEN, stale_seq, Decimal("3.80"))
    move = CreditMove(billing.credit, added, (again,), billing.refund_rev, billing.seq)
    with pytest.raises(LedgerConflictError):  # stored crypto credit 0.00, not 3.80 - 1.00
        ledger.store.update_invoice_and_credit(paid, InvoiceStatus.OPEN, move, Decimal("1.00"))
    assert ledger.store.ledger("coin") == read

    ledger.store.update_invoice_and_credit(paid, InvoiceStatus.OPEN, move, Decimal("3.80"))
    found = ledger.store.ledger("coin")
    assert (found.invoices["coin/2026-04"].status, found.invoices["coin/2026-04"].crypto_credit) == (
        InvoiceStatus.PAID,
        Decimal("3.80"),
    )
    assert (found.credit_notes[NOTE], found.billing.credit) == (again, Decimal("11.00"))
