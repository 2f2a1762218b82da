"""Progressive billing (optional, per account): when a period's overage not yet invoiced reaches the account's
threshold amount (``AccountProfile.progressive_threshold_usd``), it is invoiced early; the period-end invoice bills
only the rest (docs/decisions.md, "Progressive billing").

An early invoice ``<account>/<YYYY-MM>/early-<n>`` bills the period's usage *to date*, rated as the close rates it
(every meter's line, tier segments, allowances of the whole period), minus what earlier early invoices of the period
billed (a ``billed_early`` line). The period-end close rates the whole period again and deducts everything billed
early, so ``early invoices + period-end invoice == the period's bill without progressive billing`` to the cent,
whatever happened in between (more usage, an upgrade that re-prorates the allowance, a shortened session).

An early invoice moves no billed watermark: the period stays open to rating (no late usage yet) until its close.
It takes the account's next invoice number in the same conditional write as the close does, so an early invoice and
the close can never both build on the same read: whichever lands second is refused and re-reads.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from datetime import datetime
from decimal import Decimal
from typing import Final

from kilo_billing.catalog import Catalog
from kilo_billing.invoicing import (
    BILLED_EARLY,
    EARLY_PART,
    AccountLedger,
    CloseDraft,
    InvoiceRecord,
    InvoiceStatus,
    LedgerConflictError,
    LedgerStore,
    Line,
    PeriodLedger,
    below_minimum_charge,
    billed_early,
    early_invoices,
    invoice_id,
    invoice_number,
    rate_counters,
    unclosed_previous,
    usage_lines,
    with_credit,
)
from kilo_billing.money import ZERO, money_str, total
from kilo_billing.periods import Period
from kilo_billing.rating import RatedPeriod

ATTEMPTS: Final = 5


@dataclass(frozen=True, slots=True)
class EarlyCheck:
    """Where an account stands against its threshold: the period rated to date, billed early, the rest, and the
    threshold."""

    account_id: str
    period: str
    rated: RatedPeriod
    billed_early: Decimal
    threshold: Decimal | None

    @property
    def usage_to_date(self) -> Decimal:
        return self.rated.usage_total

    @property
    def unbilled(self) -> Decimal:
        return self.usage_to_date - self.billed_early

    @property
    def due(self) -> bool:
        return self.threshold is not None and self.unbilled >= self.threshold


def _rated(ledger: AccountLedger, period: Period, catalog: Catalog) -> RatedPeriod | None:
    profile = ledger.profile
    if profile is None or profile.signed_up_at >= period.end:
        return None
    counters = ledger.periods.get(period.key, PeriodLedger(period.key, {})).counters
    return rate_counters(period, profile, counters, catalog.for_period(period))


def early_check(ledger: AccountLedger, period: Period, catalog: Catalog) -> EarlyCheck | None:
    """The account's unbilled overage of ``period`` against its threshold; ``None`` without a profile."""
    rated = _rated(ledger, period, catalog)
    if rated is None or ledger.profile is None:
        return None
    threshold = ledger.profile.progressive_threshold_usd
    return EarlyCheck(ledger.account_id, period.key, rated, billed_early(ledger, period), threshold)


def compose_early(ledger: AccountLedger, period: Period, catalog: Catalog, now: datetime) -> CloseDraft | None:
    """The early invoice due for ``period`` at ``now``, or ``None``: progressive billing off, threshold not reached,
    the period over (its close bills it), the previous period not closed yet (invoices go out in period order), or -
    card accounts - what it would ask for, after account credit, above $0.00 but below the processor's minimum charge
    (``CARD_MINIMUM``): an early invoice is optional, so none is made that could not be charged; the usage stays the
    period's, billed by a later early invoice or by the close (which carries it if it is still below, D126)."""
    profile = ledger.profile
    if profile is None or profile.progressive_threshold_usd is None or not period.contains(now):
        return None
    if invoice_id(ledger.account_id, period) in ledger.invoices:
        return None
    if unclosed_previous(ledger.account_id, profile, ledger.invoices, period, catalog) is not None:
        return None
    check = early_check(ledger, period, catalog)
    if check is None or not check.due:
        return None
    lines: list[Line] = usage_lines(check.rated)
    earlier = early_invoices(ledger, period)
    if earlier:
        numbers = ", ".join(invoice.number for invoice in earlier)
        lines.append(
            Line(
                BILLED_EARLY,
                f"Usage of {period} invoiced early before ({numbers}): {money_str(check.billed_early)}",
                -check.billed_early,
                period.key,
                start=period.start,
                end=period.end,
            )
        )
    lines, credit = with_credit(lines, ledger.billing.credit, period)
    if below_minimum_charge(ledger.method, total([line.amount for line in lines])):
        return None  # not yet: the card could not be charged it (D165); a later check or the close bills it
    seq = ledger.billing.seq + 1
    record = InvoiceRecord(
        invoice_id=invoice_id(ledger.account_id, period, f"{EARLY_PART}{len(earlier) + 1}"),
        account_id=ledger.account_id,
        period=period.key,
        number=invoice_number(ledger.account_id, seq),
        seq=seq,
        method=ledger.method,
        lines=tuple(lines),
        transitions=((InvoiceStatus.DRAFT.value, now.isoformat()),),
        cost_basis=ZERO,  # the period-end invoice carries the period's cost basis, once
    )
    return CloseDraft(record, (), ledger.billing.seq, credit, ledger.billing.credit)


def invoice_early(
    store: LedgerStore, account_id: str, period: Period, catalog: Catalog, now: Callable[[], datetime]
) -> InvoiceRecord | None:
    """Store the early invoice due now, if any (a draft: it is issued like the close's). Safe to run again at any
    time: an early invoice is due only while the unbilled overage is at or over the threshold, and the number it
    takes is conditional on the number read (a concurrent early invoice or close makes this one re-read)."""
    for _ in range(ATTEMPTS):
        ledger = store.ledger(account_id)
        draft = compose_early(ledger, period, catalog, now())
        if draft is None:
            return None
        try:
            store.create_invoice(draft)
        except LedgerConflictError:
            continue
        return draft.invoice
    raise LedgerConflictError(f"{account_id} {period}: the early invoice kept conflicting")
