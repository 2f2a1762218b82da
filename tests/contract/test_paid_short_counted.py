"""Which pending credit notes an ``invoice.paid`` shortfall counted as made at Stripe (D353 amended, review 4),
against the in-memory fake and DynamoDB (moto, the template's usage table): the marker is written with the paid
status and the shortfall, once, read back as written, and the refusal that later proves the note never made grows
that shortfall in the same write as the note's account credit.

Figures worked by hand (price book 2026-01: video $0.00072, Team $29 with 50,000 video minutes): acme on Team by card,
60,000 March minutes -> March = 29.00 + 10,000 x 0.00072 = 7.20 + April's 29.00 in advance = 65.20 on Stripe's in_A;
5,000 March minutes withdrawn -> April's note 5,000 x 0.00072 = 3.60, asked on in_A, an outage: pending. A 10.00
dashboard note; 55.20 paid: 65.20 - 3.60 = 61.60 - 55.20 = 6.40 recorded short, the note counted. May's close: the
note refused on the paid in_A, never made: 65.20 - 55.20 = 10.00 short, 3.60 account credit."""

from __future__ import annotations

from decimal import Decimal
from typing import Any

import pytest

from kilo_billing.invoicing import CreditNoteStatus, InvoiceStatus
from kilo_billing.periods import Period
from kilo_invoice.logic import apply_stripe_event, close_account
from kilo_invoice.ports import GatewayUnavailableError
from tests.contract.ledger_harness import SEG, Ledger, _Bus, team_march_closed
from tests.scenarios.test_card_payment_events import Events

MAR, APR, MAY = Period(2026, 3), Period(2026, 4), Period(2026, 5)
NOTE = "acme/2026-03/credit-2026-04"


def test_given_a_pending_note_counted_by_a_short_payment_then_the_marker_is_stored_with_it_and_read_back(
    ledger: Ledger, monkeypatch: pytest.MonkeyPatch
) -> None:
    gateway, deps, march = team_march_closed(ledger)  # 60,000 March minutes
    in_a = march.gateway_id
    assert march.total == Decimal("65.20")
    ledger.rate("acme", "2026-03", SEG, "video", -5_000)  # -3.60

    def outage(*args: Any) -> str:
        raise GatewayUnavailableError("down")  # nothing made at Stripe

    monkeypatch.setattr(gateway, "credit_note", outage)
    with pytest.raises(GatewayUnavailableError):
        close_account(deps, "acme", APR, APR.end)
    monkeypatch.undo()
    note = ledger.store.ledger("acme").credit_notes[NOTE]
    assert (note.status, note.to_due, note.asked_on) == (CreditNoteStatus.PENDING, Decimal("3.60"), in_a)

    gateway.settle("acme/2026-03", paid=True)
    events = Events()
    meta = {"invoice_id": "acme/2026-03", "kilo_invoice_id": "acme/2026-03", "account_id": "acme"}
    paid = {"id": in_a, "status": "paid", "metadata": meta, "amount_paid": 5520, "total": 6520}
    key = events.add("evt_paid", "invoice.paid", paid | {"total_excluding_tax": 6520})
    apply_stripe_event(ledger.store, _Bus(), events, *key, APR.end, None)
    apply_stripe_event(ledger.store, _Bus(), events, *key, APR.end, None)  # delivered again
    ours = ledger.store.ledger("acme").invoices["acme/2026-03"]
    assert (ours.status, ours.short_paid) == (InvoiceStatus.PAID, Decimal("6.40"))  # 61.60 - 55.20
    assert f"short_counted:{in_a}:{NOTE}" in ours.announced

    close_account(deps, "acme", MAY, MAY.end)  # refused on the paid in_A
    found = ledger.store.ledger("acme")
    ours, note = found.invoices["acme/2026-03"], found.credit_notes[NOTE]
    assert (ours.short_paid, ours.kept) == (Decimal("10.00"), Decimal("55.20"))  # 65.20 - 55.20
    assert (note.to_due, note.to_credit) == (Decimal("0.00"), Decimal("3.60"))
