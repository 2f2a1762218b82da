"""Early invoices (progressive billing) in the ledger contract: held by the in-memory fake and by DynamoDB alike - an
early invoice moves no watermark and takes the next number conditionally, so it and the close fence each other."""

from __future__ import annotations

from dataclasses import replace
from datetime import UTC, datetime
from decimal import Decimal

import pytest

from kilo_billing.catalog import default_catalog
from kilo_billing.invoicing import LedgerConflictError
from kilo_billing.progressive import compose_early, invoice_early
from tests.contract.ledger_harness import MAR, SEG, Ledger, _draft, _team

NOW = datetime(2026, 3, 20, tzinfo=UTC)


def _progressive(ledger: Ledger, account: str) -> None:
    ledger.register(replace(_team(account), progressive_threshold_usd=Decimal("5.00")))


def test_given_overage_over_the_threshold_then_the_early_invoice_reads_back_and_moves_no_watermark(
    ledger: Ledger,
) -> None:
    _progressive(ledger, "acme")
    ledger.rate("acme", "2026-03", SEG, "video", 60_000)
    early = invoice_early(ledger.store, "acme", MAR, default_catalog(), lambda: NOW)
    assert early is not None
    found = ledger.store.ledger("acme")
    assert found.invoices == {"acme/2026-03/early-1": early}
    assert early.total == Decimal("7.20")  # 10,000 over x 0.00072
    march = found.periods["2026-03"]
    assert (march.invoiced, dict(march.billed), march.billed_rev) == (False, {}, 0)  # rating sees no late usage
    assert found.billing.seq == 1
    assert invoice_early(ledger.store, "acme", MAR, default_catalog(), lambda: NOW) is None  # rerun: nothing due
    close = _draft(ledger.store.ledger("acme"))
    ledger.store.create_invoice(close)
    assert ledger.store.ledger("acme").invoices["acme/2026-03"].total == Decimal(
        "58.00"
    )  # 7.20 - 7.20 + March 29.00 + April 29.00


def test_given_the_close_and_an_early_invoice_from_one_read_then_the_second_is_refused(ledger: Ledger) -> None:
    _progressive(ledger, "acme")
    ledger.rate("acme", "2026-03", SEG, "video", 60_000)
    read = ledger.store.ledger("acme")
    early = compose_early(read, MAR, default_catalog(), NOW)
    assert early is not None
    ledger.store.create_invoice(_draft(read))
    with pytest.raises(LedgerConflictError):
        ledger.store.create_invoice(early)
    assert sorted(ledger.store.ledger("acme").invoices) == ["acme/2026-03"]
