"""A close is one DynamoDB transaction, which holds at most 100 items: a draft that would hold more is refused when
built, naming the account and the count, before anything is written (D283 amended). What a composed close holds: the
invoice, the billing item, the watermark of its period and of at most 24 adjusted ones (``MAX_ADJUSTED_PERIODS``), their
notes and the invoices those credit; a period whose notes would pass 100 is left for the next close (D311)."""

from __future__ import annotations

from decimal import Decimal

import pytest

from kilo_billing.invoicing import BillingMethod, CloseDraft, InvoiceRecord, InvoicingError, WatermarkMove

NONE = Decimal("0.00")


def _draft(watermarks: int) -> CloseDraft:
    invoice = InvoiceRecord("acme/2026-03", "acme", "2026-03", "ACME-0001", 1, BillingMethod.CARD, ())
    moves = tuple(WatermarkMove(f"p{index}", {}, 0) for index in range(watermarks))
    return CloseDraft(invoice, moves, 0, NONE, NONE)


def test_given_a_draft_of_exactly_100_items_then_it_is_built() -> None:
    assert _draft(98).transaction_items == 100  # the invoice, the billing item, 98 watermarks


def test_given_a_draft_of_101_items_then_it_is_refused_naming_the_account_and_the_count() -> None:
    message = r"^acme: the close of 2026-03 would write 101 items in one transaction; DynamoDB takes at most 100$"
    with pytest.raises(InvoicingError, match=message):
        _draft(99)
