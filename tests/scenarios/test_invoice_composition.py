"""One invoice per account per period: usage of the period in arrears, the next period's fee in advance, a fee true-up
when the tier changed, and late-usage adjustments of earlier periods."""

from __future__ import annotations

from datetime import UTC, datetime
from decimal import Decimal

from kilo_billing.accounts import AccountProfile
from kilo_billing.catalog import default_catalog
from kilo_billing.invoicing import AccountLedger, PeriodLedger, compose_close
from kilo_billing.meters import Meter
from kilo_billing.periods import Period
from kilo_billing.rating import (
    LineKind,
    TierChange,
    TierSegment,
    UsageRecord,
    compose_invoice,
    effective_change,
    rate_period,
    segments_for,
)

MARCH, APRIL, MAY = Period(2026, 3), Period(2026, 4), Period(2026, 5)


def _utc(*args: int) -> datetime:
    return datetime(*args, tzinfo=UTC)


def _kinds(invoice) -> list[LineKind]:
    return [line.kind for line in invoice.lines]


def test_given_team_account_all_march_when_invoiced_then_usage_in_arrears_and_april_fee_in_advance(book):
    usage = [UsageRecord(Meter.VIDEO, 52_000, _utc(2026, 3, 9))]
    rated = rate_period(MARCH, [TierSegment("team", MARCH.start, MARCH.end)], usage, book)
    invoice = compose_invoice("acct-1", rated, "team", book, fees_billed_in_advance=Decimal("29.00"))

    assert invoice.period == MARCH
    assert invoice.currency == "USD"
    assert _kinds(invoice) == [LineKind.USAGE] * 4 + [LineKind.FEE]  # no true-up: 29.00 due, 29.00 billed
    advance = invoice.lines[-1]
    assert (advance.period, advance.tier, advance.amount) == (APRIL, "team", Decimal("29.00"))
    assert invoice.lines[0].amount == Decimal("1.44")  # 2000 x 0.00072
    assert invoice.total == Decimal("30.44")  # 1.44 + 29.00
    assert invoice.as_json()["total"] == "30.44"


def test_given_personal_account_upgraded_to_team_on_march_11_when_invoiced_then_fee_true_up_and_team_advance(
    book,
):
    changes = [
        TierChange(_utc(2026, 1, 1), "personal"),
        effective_change(book, "personal", "team", _utc(2026, 3, 11)),
    ]
    usage = [
        UsageRecord(Meter.VIDEO, 2_000, _utc(2026, 3, 5)),
        UsageRecord(Meter.VIDEO, 40_000, _utc(2026, 3, 20)),
    ]
    rated = rate_period(MARCH, segments_for(MARCH, changes), usage, book)
    # Personal was billed in advance for March: $0.00
    invoice = compose_invoice("acct-2", rated, "team", book, fees_billed_in_advance=Decimal("0.00"))

    assert _kinds(invoice) == [LineKind.USAGE] * 8 + [LineKind.FEE_PRORATION, LineKind.FEE]
    (true_up,) = [line for line in invoice.lines if line.kind is LineKind.FEE_PRORATION]
    assert true_up.amount == Decimal("19.65")  # due 0.00 + 29 x 21/31 (19.65) - billed 0.00
    assert invoice.lines[-1].amount == Decimal("29.00")  # April, Team, in advance
    assert invoice.total == Decimal("53.34")  # usage 0.28 + 4.41 + true-up 19.65 + advance 29.00


def test_given_team_account_upgraded_to_enterprise_on_march_11_when_invoiced_then_true_up_beyond_fee_paid(book):
    changes = [TierChange(_utc(2026, 1, 1), "team"), effective_change(book, "team", "enterprise", _utc(2026, 3, 11))]
    usage = [UsageRecord(Meter.VIDEO, 20_000, _utc(2026, 3, 10))]
    rated = rate_period(MARCH, segments_for(MARCH, changes), usage, book)
    invoice = compose_invoice("acct-3", rated, "enterprise", book, fees_billed_in_advance=Decimal("29.00"))

    (true_up,) = [line for line in invoice.lines if line.kind is LineKind.FEE_PRORATION]
    assert rated.fee == Decimal("76.41")  # 29 x 10/31 = 9.35 + 99 x 21/31 = 67.06
    assert true_up.amount == Decimal("47.41")  # 76.41 - 29.00 already paid
    assert invoice.lines[-1].amount == Decimal("99.00")  # April, Enterprise, in advance
    assert invoice.total == Decimal("149.20")  # usage 2.79 (3870 x 0.00072) + 47.41 + 99.00


def test_given_team_account_downgrading_to_personal_in_april_when_march_invoiced_then_no_true_up_and_zero_advance(
    book,
):
    changes = [
        TierChange(_utc(2026, 1, 1), "team"),
        effective_change(book, "team", "personal", _utc(2026, 3, 15)),
    ]
    rated = rate_period(MARCH, segments_for(MARCH, changes), [], book)
    next_tier = segments_for(APRIL, changes)[0].tier
    invoice = compose_invoice("acct-4", rated, next_tier, book, fees_billed_in_advance=Decimal("29.00"))

    assert next_tier == "personal"
    assert _kinds(invoice) == [LineKind.USAGE] * 4 + [LineKind.FEE]  # March fully Team: 29.00 due, 29.00 paid
    assert (invoice.lines[-1].tier, invoice.lines[-1].amount) == ("personal", Decimal("0.00"))
    assert invoice.total == Decimal("0.00")


def test_given_late_march_usage_when_april_invoiced_then_adjustment_line_appears_on_april_invoice() -> None:
    # composed as the close composes it (invoicing.compose_close), from March's counters as billed and as they are now
    catalog = default_catalog()
    profile = AccountProfile("acct-5", (TierChange(_utc(2026, 3, 1), "team"),))
    video = (int(MARCH.start.timestamp()), "video")  # rating's counter: (segment start, meter)
    march_ledger = AccountLedger("acct-5", profile, {"2026-03": PeriodLedger("2026-03", {video: 49_000})}, {})
    march = compose_close(march_ledger, MARCH, catalog, MARCH.end)
    assert march is not None
    late = PeriodLedger("2026-03", {video: 52_000}, billed={video: 49_000}, invoiced=True)  # 3,000 on March 31
    ledger = AccountLedger("acct-5", profile, {"2026-03": late}, {march.invoice.invoice_id: march.invoice})

    april = compose_close(ledger, APRIL, catalog, APRIL.end)
    assert april is not None
    invoice = april.invoice
    assert [line.kind for line in invoice.lines] == ["usage"] * 4 + ["fee", "adjustment"]  # April's fee billed in March
    adjustment = invoice.lines[-1]
    assert adjustment.period == MARCH.key  # the period the usage belongs to
    assert adjustment.amount == Decimal("1.44")  # (52000 - 50000) x 0.00072
    assert invoice.lines[-2].period == MAY.key  # May fee in advance
    assert invoice.total == Decimal("30.44")  # 0.00 usage + 29.00 May fee + 1.44 adjustment
    assert invoice.as_json()["lines"][-1]["kind"] == "adjustment"
    assert [(move.period, move.billed) for move in april.watermarks] == [
        ("2026-04", {}),
        ("2026-03", {video: 52_000}),  # billed up to what the adjustment covers: never adjusted twice
    ]
