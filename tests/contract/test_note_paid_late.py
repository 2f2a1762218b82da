"""A note's not-collected part credited when the invoice is paid afterwards (D339), against the in-memory fake
and DynamoDB (moto, the template's usage table): the paid status, the note (its ``uncollected`` back to nothing, its
history) and the account credit are written together, once, and read back as written.

Figures worked by hand (price book 2026-01: video $0.00072, Team $29 with 50,000 video minutes): acme on Team by card,
60,000 March minutes -> March = 29.00 + 10,000 x 0.00072 = 7.20 + April's 29.00 in advance = 65.20, written off;
10,000 March minutes withdrawn -> April's note: 0.00 credit, 7.20 not collected. March then paid 65.20: its money
pays its 7.20 of usage first, so the 7.20 withdrawn is account credit."""

from __future__ import annotations

from decimal import Decimal

from kilo_billing.invoicing import CreditNoteStatus, InvoiceStatus
from kilo_billing.periods import Period
from kilo_invoice.logic import apply_stripe_event, close_account
from tests.contract.ledger_harness import SEG, Ledger, _Bus, team_march_closed
from tests.scenarios.test_card_payment_events import Events

MAR, APR = Period(2026, 3), Period(2026, 4)
NOTE = "acme/2026-03/credit-2026-04"


def test_given_a_written_off_march_paid_after_its_note_then_the_note_credits_it_once_as_stored(ledger: Ledger) -> None:
    _gateway, deps, march = team_march_closed(ledger)  # 60,000 March minutes
    assert (march.total, march.status) == (Decimal("65.20"), InvoiceStatus.OPEN)
    ledger.store.update_invoice(march.moved(InvoiceStatus.UNCOLLECTIBLE, APR.start), InvoiceStatus.OPEN)
    ledger.rate("acme", "2026-03", SEG, "video", -10_000)  # -7.20
    close_account(deps, "acme", APR, APR.end)
    note = ledger.store.ledger("acme").credit_notes[NOTE]
    assert (note.to_credit, note.uncollected) == (Decimal("0.00"), Decimal("7.20"))

    events = Events()
    paid = {"id": march.gateway_id, "status": "paid", "metadata": {"invoice_id": "acme/2026-03"}}
    key = events.add("evt_paid", "invoice.paid", paid)
    apply_stripe_event(ledger.store, _Bus(), events, *key, APR.end, None)
    apply_stripe_event(ledger.store, _Bus(), events, *key, APR.end, None)  # delivered again

    found = ledger.store.ledger("acme")
    assert found.invoices["acme/2026-03"].status is InvoiceStatus.PAID
    note = found.credit_notes[NOTE]
    assert (note.to_credit, note.uncollected, note.returned, note.version) == (
        Decimal("7.20"),
        Decimal("0.00"),
        Decimal("0.00"),
        2,
    )
    assert note.history[-1][0] == "7.20 collected since (invoice KB-acme-00001 paid): account credit"
    assert found.billing.credit == Decimal("7.20")
    # to be recorded on March at Stripe out of band by the next close's note step (D131)
    assert (note.processor, note.out_of_band, note.status) == (Decimal("7.20"), True, CreditNoteStatus.PENDING)
