"""History and reports (pure, over ports): revenue per account and tier for a period, usage per member and room.

Revenue of a period = what the invoices *of that period* billed (its period-end invoice and any early invoices): fees
(the next period's fee in advance + the closed period's fee true-up, or the first period's fee), overage (usage lines,
net of usage invoiced early), adjustments (late usage of earlier periods: the adjustment lines, and the credit notes
these invoices' closes made for negative late usage - the part a note took off an unpaid invoice lowers what was billed,
the part given as account credit is credit carried, as a negative subtotal's; the part a note records as already
``returned`` is not counted again: the refund or dispute that returned it is), credit; refunds (what the period's
invoices gave back: refunds made or owed, disputes' funds withdrawn); short paid (what a card payment fell short of
what it asked: never received, so not a refund, D344); the LiveKit cost basis of the usage they billed (the closed
period's usage + the late usage adjusted), and the margin = total billed - refunds - short paid - cost basis. A void
invoice bills nothing (its cost basis stays: the usage happened); a ``carried`` line is counted in the month of the
invoice it carries, not again in the month that collects it. An account whose period is not closed yet shows what is
invoiced so far (status ``open``). Usage nobody could be billed for (the ``unattributed`` bucket) is reported with its
cost: it is margin lost (docs/decisions.md, "Revenue report", D154).
"""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Iterable
from dataclasses import dataclass, field, fields
from datetime import timedelta
from decimal import Decimal
from typing import TypeVar

from kilo_billing.accounts import UNATTRIBUTED, AccountProfile
from kilo_billing.catalog import Catalog
from kilo_billing.invoicing import (
    BILLED_EARLY,
    CARRIED,
    CREDIT,
    FEE_KINDS,
    AccountLedger,
    InvoiceStatus,
    LedgerStore,
    invoice_id,
    is_early,
)
from kilo_billing.meters import Meter
from kilo_billing.money import ZERO, round_money, total
from kilo_billing.periods import Period
from kilo_billing.rating import LineKind, billing_quantity
from kilo_billing.session_usage import SessionReader, SessionUsage

_Summable = TypeVar("_Summable", "Usage", "RevenueFigures")


def _fieldwise_sum(first: _Summable, second: _Summable) -> _Summable:
    """Two figures of the same kind added field by field (every field adds: amounts, quantities, nested usage)."""
    return type(first)(*(getattr(first, f.name) + getattr(second, f.name) for f in fields(first)))


@dataclass(frozen=True, slots=True)
class Usage:
    """A period's usage in billing units: minutes, messages, GB."""

    video_minutes: Decimal = Decimal(0)
    audio_minutes: Decimal = Decimal(0)
    messages: Decimal = Decimal(0)
    data_gb: Decimal = Decimal(0)

    def __add__(self, other: Usage) -> Usage:
        return _fieldwise_sum(self, other)


@dataclass(frozen=True, slots=True)
class RevenueFigures:
    fees: Decimal = ZERO
    overage: Decimal = ZERO
    adjustments: Decimal = ZERO
    credit: Decimal = ZERO
    total_billed: Decimal = ZERO
    cost_basis: Decimal = ZERO
    usage: Usage = field(default_factory=Usage)
    refunds: Decimal = ZERO  # given back of what the period's invoices billed: refunds made or owed, disputes lost
    short_paid: Decimal = ZERO  # billed and never received: a card payment short of what it asked (D344)

    @property
    def margin(self) -> Decimal:
        return self.total_billed - self.refunds - self.short_paid - self.cost_basis

    def __add__(self, other: RevenueFigures) -> RevenueFigures:
        return _fieldwise_sum(self, other)


@dataclass(frozen=True, slots=True)
class AccountRevenue:
    account_id: str
    tier: str
    status: str  # closed (the period-end invoice exists) | open
    invoices: int
    figures: RevenueFigures


@dataclass(frozen=True, slots=True)
class TierRevenue:
    tier: str
    accounts: int
    figures: RevenueFigures


@dataclass(frozen=True, slots=True)
class UnattributedUsage:
    usage: Usage
    cost_basis: Decimal


@dataclass(frozen=True, slots=True)
class RevenueReport:
    period: str
    accounts: tuple[AccountRevenue, ...]
    tiers: tuple[TierRevenue, ...]
    totals: RevenueFigures
    unattributed: UnattributedUsage


def period_usage(ledger: AccountLedger, period: Period) -> Usage:
    """The period's usage as rating holds it now (every tier segment together)."""
    found = ledger.periods.get(period.key)
    sums: dict[Meter, int] = dict.fromkeys(Meter, 0)
    for (_, meter), quantity in (found.counters if found else {}).items():
        sums[Meter(meter)] += quantity
    return Usage(*(billing_quantity(meter, sums[meter]) for meter in Meter))


def _cost(usage: Usage, catalog: Catalog, period: Period) -> Decimal:
    book = catalog.for_period(period)
    quantities = (usage.video_minutes, usage.audio_minutes, usage.messages, usage.data_gb)
    return round_money(sum((q * book.base_price(m) for q, m in zip(quantities, Meter, strict=True)), Decimal(0)))


def tier_of(profile: AccountProfile | None, period: Period) -> str:
    """The tier an account is reported under: the one in effect at the end of the period."""
    return profile.tier_at(period.end - timedelta(microseconds=1)) if profile else "none"


def account_revenue(ledger: AccountLedger, period: Period, catalog: Catalog) -> AccountRevenue:
    found = [invoice for invoice in ledger.invoices.values() if invoice.period == period.key]
    invoices = [invoice for invoice in found if invoice.status is not InvoiceStatus.VOID]  # a void one billed nothing
    ids = {invoice.invoice_id for invoice in found}  # a note stands when the invoice that found it is voided (D132)
    notes = [note for note in ledger.credit_notes.values() if note.found_by in ids]  # negative late usage (D51)
    late_cost = Decimal(0)  # the usage happened, billed or not: every invoice's late usage, void ones' too
    for line in [line for invoice in found for line in invoice.lines] + [ln for n in notes for ln in n.lines]:
        if line.kind == LineKind.ADJUSTMENT.value and line.meter and line.used is not None:
            late_cost += line.used * catalog.for_period(Period.parse(line.period)).base_price(Meter(line.meter))
    figures = RevenueFigures(
        fees=total([i.amount_of(*FEE_KINDS) for i in invoices]),
        overage=total([i.amount_of(LineKind.USAGE.value, BILLED_EARLY) for i in invoices]),
        adjustments=total([i.amount_of(LineKind.ADJUSTMENT.value) for i in invoices] + [-n.amount for n in notes]),
        credit=total([i.amount_of(CREDIT) for i in invoices] + [n.to_credit for n in notes]),
        total_billed=total([i.total - i.amount_of(CARRIED) for i in invoices] + [-n.to_due for n in notes]),
        cost_basis=total([i.cost_basis for i in found]) + round_money(late_cost),
        usage=period_usage(ledger, period),
        refunds=total([i.total - i.kept - i.short_paid for i in invoices]),
        short_paid=total([i.short_paid for i in invoices]),
    )
    closed = invoice_id(ledger.account_id, period) in ledger.invoices
    early = sum(1 for i in invoices if is_early(i))
    return AccountRevenue(
        ledger.account_id, tier_of(ledger.profile, period), "closed" if closed else "open", early + closed, figures
    )


def revenue_report(store: LedgerStore, period: Period, catalog: Catalog) -> RevenueReport:
    """Per account (every registered account, one ledger read each), per tier, totals, and unattributed usage."""
    rows = tuple(sorted((account_revenue(store.ledger(a), period, catalog) for a in store.accounts()), key=_row_order))
    by_tier: dict[str, list[AccountRevenue]] = defaultdict(list)
    for row in rows:
        by_tier[row.tier].append(row)
    tiers = tuple(TierRevenue(tier, len(found), _sum(r.figures for r in found)) for tier, found in by_tier.items())
    usage = period_usage(store.ledger(UNATTRIBUTED), period)
    unattributed = UnattributedUsage(usage, _cost(usage, catalog, period))
    return RevenueReport(period.key, rows, tiers, _sum(r.figures for r in rows), unattributed)


def _row_order(row: AccountRevenue) -> tuple[str, str]:
    return (row.tier, row.account_id)


def _sum(figures: Iterable[RevenueFigures]) -> RevenueFigures:
    result = RevenueFigures()
    for figure in figures:
        result = result + figure
    return result


# --- usage per workspace member and per room -------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class MemberUsage:
    """Minutes of one participant identity (or one room) in the period, and LiveKit's cost of them."""

    key: str  # the identity, or the room ("<name> (<sid>)")
    sessions: int
    video_minutes: int
    audio_minutes: int
    cost_basis: Decimal
    participants: int = 0  # rooms: distinct identities


@dataclass(frozen=True, slots=True)
class EnterpriseReport:
    account_id: str
    period: str
    tier: str
    members: tuple[MemberUsage, ...]
    rooms: tuple[MemberUsage, ...]
    total: MemberUsage


def _usage_of(key: str, found: list[SessionUsage], catalog: Catalog, period: Period, rooms: bool) -> MemberUsage:
    book = catalog.for_period(period)
    video = sum(s.video_minutes for s in found)
    audio = sum(s.audio_minutes for s in found)
    cost = round_money(video * book.base_price(Meter.VIDEO) + audio * book.base_price(Meter.AUDIO))
    participants = len({s.identity for s in found}) if rooms else 0
    return MemberUsage(key, len(found), video, audio, cost, participants)


def enterprise_report(
    reader: SessionReader, profile: AccountProfile | None, account_id: str, period: Period, catalog: Catalog
) -> EnterpriseReport:
    """Video/audio minutes per participant identity and per room, from the account's rated sessions of ``period``
    (closed sessions; messages and data are reported per account, not per member)."""
    found = list(reader.sessions(account_id, period.key))
    members: dict[str, list[SessionUsage]] = defaultdict(list)
    rooms: dict[str, list[SessionUsage]] = defaultdict(list)
    for session in found:
        members[session.identity or "(no identity)"].append(session)
        rooms[f"{session.room_name or '(unnamed)'} ({session.room_sid})"].append(session)

    def ordered(groups: dict[str, list[SessionUsage]], as_rooms: bool) -> tuple[MemberUsage, ...]:
        rows = [_usage_of(key, sessions, catalog, period, as_rooms) for key, sessions in groups.items()]
        return tuple(sorted(rows, key=lambda r: (-(r.video_minutes + r.audio_minutes), r.key)))

    return EnterpriseReport(
        account_id,
        period.key,
        tier_of(profile, period),
        ordered(members, False),
        ordered(rooms, True),
        _usage_of("total", found, catalog, period, False),
    )
