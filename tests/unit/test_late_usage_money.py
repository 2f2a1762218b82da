"""Property (D191): an invoice that billed its own usage, two earlier periods' late usage and a fee, paid in
full; credit notes on those periods and partial refunds in any order never give back more than was paid, never leave
a period holding less than its notes credited, and a refund of the rest at the end gives back exactly what the notes
did not: refunds + notes' credit = the payment. Pure: the real ``credit_note`` and ``refundable`` on hand-built
records (no rating, no store)."""

from __future__ import annotations

from dataclasses import replace
from decimal import Decimal

from hypothesis import given, settings
from hypothesis import strategies as st

from kilo_billing.invoicing import (
    AccountLedger,
    BillingMethod,
    InvoiceRecord,
    InvoiceStatus,
    Line,
    credit_note,
    period_held,
    refundable,
)

ZERO = Decimal("0.00")
cents = st.integers(min_value=0, max_value=3_000).map(lambda n: Decimal(n) / 100)


def _invoice(invoice_id: str, period: str, lines: list[Line]) -> InvoiceRecord:
    return InvoiceRecord(
        invoice_id, "acct", period, invoice_id, 1, BillingMethod.CARD, tuple(lines), InvoiceStatus.PAID,
        gateway_id=f"in_{invoice_id}",
    )  # fmt: skip


ops = st.lists(
    st.one_of(
        st.tuples(st.just("note"), st.sampled_from(["2026-01", "2026-02"]), cents.filter(lambda a: a > 0)),
        st.tuples(st.just("refund"), st.just(""), cents.filter(lambda a: a > 0)),
    ),
    max_size=6,
)


@settings(max_examples=300, deadline=None)
@given(own=cents, late_jan=cents, late_feb=cents, fee=cents, steps=ops)
def test_notes_and_refunds_in_any_order_give_back_at_most_what_was_paid(
    own: Decimal, late_jan: Decimal, late_feb: Decimal, fee: Decimal, steps: list[tuple[str, str, Decimal]]
) -> None:
    january = _invoice("jan", "2026-01", [Line("usage", "u", ZERO, "2026-01")])  # 0.00, paid at once
    february = _invoice("feb", "2026-02", [Line("usage", "u", ZERO, "2026-02")])
    march = _invoice(
        "mar",
        "2026-03",
        [
            Line("usage", "own", own, "2026-03"),
            Line("adjustment", "late January", late_jan, "2026-01"),
            Line("adjustment", "late February", late_feb, "2026-02"),
            Line("fee", "April's fee", fee, "2026-04"),
        ],
    )
    paid = own + late_jan + late_feb + fee
    ledger = AccountLedger("acct", None, {}, {"jan": january, "feb": february, "mar": march})
    for number, (kind, period, amount) in enumerate(steps):
        if kind == "note":
            credited = ledger.invoices["jan" if period == "2026-01" else "feb"]
            found_by = f"acct/2026-{number + 4:02d}"
            note = credit_note(ledger, credited, [Line("adjustment", "shrank", -amount, period)], found_by)
            assert note.to_credit + note.returned + note.uncollected == amount
            ledger = replace(ledger, credit_notes={**ledger.credit_notes, note.credit_id: note})
        else:
            march = ledger.invoices["mar"]
            if amount <= refundable(ledger, march):
                march = replace(march, refunded=march.refunded + amount)
                ledger = replace(ledger, invoices={**ledger.invoices, "mar": march})
        credits = sum((note.to_credit for note in ledger.credit_notes.values()), ZERO)
        assert ledger.invoices["mar"].refunded + credits <= paid
        for each in ("2026-01", "2026-02", "2026-03"):
            assert period_held(ledger, each, ledger.credit_notes.values()) >= 0
    march = ledger.invoices["mar"]
    rest = refundable(ledger, march)
    march = replace(march, refunded=march.refunded + rest)
    credits = sum((note.to_credit for note in ledger.credit_notes.values()), ZERO)
    assert march.refunded + credits == paid
