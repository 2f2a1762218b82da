"""A credit note's stored item keeps whether its processor note gives its money back to the card (D433)."""

from __future__ import annotations

from dataclasses import replace
from decimal import Decimal

from kilo_billing.invoicing import CreditNote, CreditNoteStatus
from kilo_billing.items import from_item
from kilo_billing.periods_items import credit_note_from_values, credit_note_to_item


def _note(**changes: object) -> CreditNote:
    base = CreditNote(
        credit_id="acme/2026-03/credit-2026-04",
        account_id="acme",
        invoice_id="acme/2026-03",
        found_by="acme/2026-04",
        period="2026-03",
        lines=(),
        to_due=Decimal("0.00"),
        to_credit=Decimal("0.00"),
        processor=Decimal("3.60"),
        returned=Decimal("3.60"),
        status=CreditNoteStatus.PENDING,
    )
    return replace(base, **changes)


def test_given_a_note_to_the_card_when_stored_and_read_then_it_is_still_to_the_card() -> None:
    note = _note(to_card=True)
    read = credit_note_from_values("acme", from_item(credit_note_to_item(note)))
    assert read == note
    assert read.gateway_credit_id == "acme/2026-03/credit-2026-04/refund"


def test_given_a_note_stored_before_to_card_existed_then_it_reads_as_not_to_the_card() -> None:
    values = from_item(credit_note_to_item(_note()))
    assert "to_card" not in values
    assert credit_note_from_values("acme", values).to_card is False
