"""The account's dispute flag (D299): the account is disputed while any of its invoices is. Each dispute
event saves its invoice, then writes the account's flag from the ledger; these are the ways that second write went
wrong - a failed write a redelivery skipped, and two dispute events of one account each writing what it read before
the other's invoice - run against the in-memory fake and DynamoDB (moto, the template's usage table), the second
writer's read and write split by a hook that lands the first writer in between.

acme (Team, card) has March and April invoices, paid; the dispute objects name our invoice in their metadata."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import replace
from datetime import UTC, datetime
from typing import Any

import pytest

from kilo_billing.catalog import default_catalog
from kilo_billing.invoicing import (
    AccountLedger,
    InvoiceRecord,
    InvoiceStatus,
    LedgerConflictError,
    LedgerStore,
    compose_close,
)
from kilo_billing.periods import Period
from kilo_invoice.logic import apply_stripe_event
from tests.contract.ledger_harness import SEG, Ledger, _Bus, _team
from tests.scenarios.test_card_payment_events import Events, _dispute

MAR, APR = Period(2026, 3), Period(2026, 4)
NOW = datetime(2026, 5, 3, tzinfo=UTC)


def _closed_and_paid(ledger: Ledger, period: Period) -> None:
    draft = compose_close(ledger.store.ledger("acme"), period, default_catalog(), period.end)
    assert draft is not None
    ledger.store.create_invoice(draft)
    opened = ledger.store.update_invoice(draft.invoice.moved(InvoiceStatus.OPEN, period.end), InvoiceStatus.DRAFT)
    ledger.store.update_invoice(opened.moved(InvoiceStatus.PAID, period.end), InvoiceStatus.OPEN)


def _march_and_april_paid(ledger: Ledger) -> None:
    ledger.register(_team("acme"))
    ledger.rate("acme", "2026-03", SEG, "video", 60_000)
    _closed_and_paid(ledger, MAR)
    _closed_and_paid(ledger, APR)


def _event(events: Events, event_id: str, event_type: str, invoice_id: str, dispute_id: str, status: str) -> Any:
    obj = _dispute("pi_" + dispute_id, status) | {"id": dispute_id, "metadata": {"invoice_id": invoice_id}}
    return events.add(event_id, event_type, obj)


def _apply(store: Any, events: Events, key: tuple[str, str]) -> Any:
    return apply_stripe_event(store, _Bus(), events, *key, NOW, None)


class _FlagWriteFails:
    """The store, its first write of the account's flag failing (a throttle, a crash before it)."""

    def __init__(self, store: LedgerStore) -> None:
        self._store = store

    def __getattr__(self, name: str) -> Any:
        if name in {"save_billing", "save_dispute_flag"}:
            raise RuntimeError("throttled")
        return getattr(self._store, name)


class _LandsAfterRead:
    """The store, with ``other`` landed right after the first ledger read that follows the save of ``invoice_id``
    (the read the account's flag is computed from), before this writer writes the flag."""

    def __init__(self, store: LedgerStore, invoice_id: str, other: Callable[[], Any]) -> None:
        self._store, self._invoice_id, self._other = store, invoice_id, other
        self._armed = False

    def __getattr__(self, name: str) -> Any:
        return getattr(self._store, name)

    def update_invoice(self, invoice: InvoiceRecord, expected: InvoiceStatus) -> InvoiceRecord:
        written = self._store.update_invoice(invoice, expected)
        self._armed = self._armed or invoice.invoice_id == self._invoice_id
        return written

    def ledger(self, account_id: str) -> AccountLedger:
        read = self._store.ledger(account_id)
        if self._armed:
            self._armed, other = False, self._other
            self._other = lambda: None
            other()
        return read


def test_given_the_flag_write_failed_when_the_dispute_is_delivered_again_then_the_account_is_flagged(
    ledger: Ledger,
) -> None:
    """The first delivery saved March disputed, then its flag write failed; the redelivery finds March already
    disputed (nothing to save) and must still flag the account. Before: the flag was written only when the invoice's
    changed, so the account stayed unflagged for good."""
    _march_and_april_paid(ledger)
    events = Events()
    opened = _event(events, "evt_d1", "charge.dispute.created", "acme/2026-03", "dp_mar", "needs_response")
    with pytest.raises(RuntimeError, match="throttled"):
        _apply(_FlagWriteFails(ledger.store), events, opened)
    assert ledger.store.ledger("acme").invoices["acme/2026-03"].disputed
    _apply(ledger.store, events, opened)  # SQS delivers it again
    assert ledger.store.ledger("acme").billing.disputed


def test_given_a_dispute_closing_when_another_invoice_s_dispute_opens_between_its_read_and_write_then_flagged(
    ledger: Ledger,
) -> None:
    """March disputed (the account flagged). March's dispute closes (won): it saves March and reads the ledger -
    April not disputed, so the account not either; before it writes, April's dispute opens and writes the flag
    (April disputed). The close's write must not put back what it read: the account stays disputed (April).
    Before: the close wrote False last."""
    _march_and_april_paid(ledger)
    events = Events()
    _apply(
        ledger.store,
        events,
        _event(events, "evt_d1", "charge.dispute.created", "acme/2026-03", "dp_mar", "needs_response"),
    )
    assert ledger.store.ledger("acme").billing.disputed
    april = _event(events, "evt_d2", "charge.dispute.created", "acme/2026-04", "dp_apr", "needs_response")
    store = _LandsAfterRead(ledger.store, "acme/2026-03", lambda: _apply(ledger.store, events, april))
    _apply(store, events, _event(events, "evt_d3", "charge.dispute.closed", "acme/2026-03", "dp_mar", "won"))
    found = ledger.store.ledger("acme")
    assert (found.invoices["acme/2026-03"].disputed, found.invoices["acme/2026-04"].disputed) == (False, True)
    assert found.billing.disputed


def test_given_a_dispute_opening_when_it_closes_between_the_opening_s_read_and_write_then_not_flagged(
    ledger: Ledger,
) -> None:
    """The other way: March's dispute opens, saves March disputed and reads the ledger (disputed); before it writes,
    the dispute closes (won), saves March and writes the flag (nothing disputed). The opening's write must not put
    back the True it read. Before: it wrote True last, the account flagged with no dispute open."""
    _march_and_april_paid(ledger)
    events = Events()
    closed = _event(events, "evt_d2", "charge.dispute.closed", "acme/2026-03", "dp_mar", "won")
    store = _LandsAfterRead(ledger.store, "acme/2026-03", lambda: _apply(ledger.store, events, closed))
    _apply(
        store, events, _event(events, "evt_d1", "charge.dispute.created", "acme/2026-03", "dp_mar", "needs_response")
    )
    found = ledger.store.ledger("acme")
    assert not found.invoices["acme/2026-03"].disputed
    assert not found.billing.disputed


def test_given_a_flag_written_since_the_read_then_the_store_refuses_the_write(ledger: Ledger) -> None:
    _march_and_april_paid(ledger)
    ledger.store.save_dispute_flag("acme", True, 0)
    with pytest.raises(LedgerConflictError):
        ledger.store.save_dispute_flag("acme", False, 0)
    billing = ledger.store.ledger("acme").billing
    assert (billing.disputed, billing.dispute_revision) == (True, 1)
    ledger.store.save_dispute_flag("acme", False, 1)
    assert ledger.store.ledger("acme").billing.disputed is False
    assert replace(billing, disputed=False, dispute_revision=2) == ledger.store.ledger("acme").billing
