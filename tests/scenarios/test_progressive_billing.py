"""Progressive billing stories (Given/When/Then): an account whose unbilled overage reaches its threshold is invoiced
early; the period-end invoice bills only the rest. Hand-worked figures (price book 2026-01: video $0.00072 a minute,
Team $29 with 50,000 video minutes, Enterprise $99 unlimited; March 2026 has 31 days)."""

from __future__ import annotations

from dataclasses import replace
from datetime import UTC, datetime
from decimal import Decimal

import pytest

from kilo_billing.catalog import default_catalog
from kilo_billing.invoicing import BillingMethod, InvoiceRecord, InvoiceStatus
from kilo_billing.periods import Period
from kilo_billing.progressive import compose_early, early_check, invoice_early
from kilo_billing.rating import TierChange
from kilo_invoice.logic import close_through, issue_early
from kilo_invoice.ports import GatewayUnavailableError
from tests.scenarios.test_invoicing import FEB, MAR, World, at, seg

APR = Period(2026, 4)


def mid(day: int, month: int = 3) -> datetime:
    return datetime(2026, month, day, 12, tzinfo=UTC)


def early(world: World, account: str, now: datetime, period: Period = MAR) -> InvoiceRecord | None:
    return invoice_early(world.store, account, period, default_catalog(), lambda: now)


def kinds(invoice: InvoiceRecord, kind: str) -> list[str]:
    return [str(line.amount) for line in invoice.lines if line.kind == kind]


def progressive(world: World, account: str, threshold: str) -> None:
    profile = world.store.profiles[account]
    world.store.profiles[account] = replace(profile, progressive_threshold_usd=Decimal(threshold))


@pytest.fixture
def world() -> World:
    w = World()
    w.signup("acme", (at(1, 2), "team"))
    progressive(w, "acme", "5.00")
    assert w.close("acme", FEB).total == Decimal("58.00")  # Feb true-up 29 + March 29 in advance
    return w


def test_given_overage_over_the_threshold_then_invoiced_early_and_the_close_bills_only_the_rest(world: World) -> None:
    world.store.rate("acme", "2026-03", seg(at(1)), "video", 60_000)
    first = early(world, "acme", mid(10))
    assert first is not None
    # 60,000 - 50,000 included = 10,000 x 0.00072 = 7.20; every meter's line shown, no fee lines
    assert first.invoice_id == "acme/2026-03/early-1"
    assert first.number == "KB-acme-00002"
    assert kinds(first, "usage") == ["7.20", "0.00", "0.00", "0.00"]
    assert first.total == Decimal("7.20")
    assert early(world, "acme", mid(10)) is None  # a rerun: nothing unbilled

    world.store.rate("acme", "2026-03", seg(at(1)), "video", 5_000)
    assert early(world, "acme", mid(20)) is None  # 15,000 over = 10.80, minus 7.20 billed = 3.60 < 5.00
    world.store.rate("acme", "2026-03", seg(at(1)), "video", 5_000)
    second = early(world, "acme", mid(25))
    assert second is not None
    # 20,000 over = 14.40, minus 7.20 invoiced early = 7.20
    assert (kinds(second, "usage")[0], kinds(second, "billed_early")) == ("14.40", ["-7.20"])
    assert (second.invoice_id, second.total) == ("acme/2026-03/early-2", Decimal("7.20"))

    world.store.rate("acme", "2026-03", seg(at(1)), "video", 2_000)  # more usage after the last early invoice
    close = world.close("acme", MAR)
    # 22,000 over = 15.84, minus 14.40 invoiced early = 1.44; fee billed in advance was right; April 29.00 ahead
    assert kinds(close, "usage")[0] == "15.84"
    assert kinds(close, "billed_early") == ["-14.40"]
    assert kinds(close, "fee_proration") == []
    assert kinds(close, "fee") == ["29.00"]
    assert close.total == Decimal("30.44")
    assert close.number == "KB-acme-00004"
    # the month's bill without progressive billing: 15.84 + 29.00 = 44.84 = 7.20 + 7.20 + 30.44
    assert first.total + second.total + close.total == Decimal("44.84")
    assert close.cost_basis == Decimal("43.20")  # 72,000 video minutes x LiveKit's 0.0006, once, on the close
    assert (first.cost_basis, second.cost_basis) == (Decimal("0.00"), Decimal("0.00"))


def test_given_the_same_usage_without_progressive_billing_then_one_invoice_of_the_same_amount() -> None:
    w = World()
    w.signup("flat", (at(1, 2), "team"))
    w.close("flat", FEB)
    w.store.rate("flat", "2026-03", seg(at(1)), "video", 72_000)
    assert early(w, "flat", mid(10)) is None  # not enabled
    assert w.close("flat", MAR).total == Decimal("44.84")


def test_given_late_usage_after_an_early_invoice_and_the_close_then_an_adjustment_next_month(world: World) -> None:
    world.store.rate("acme", "2026-03", seg(at(1)), "video", 60_000)
    assert early(world, "acme", mid(10)) is not None  # 7.20
    assert world.close("acme", MAR).total == Decimal("29.00")  # 7.20 - 7.20 + April's 29.00
    assert early(world, "acme", mid(31)) is None  # March is closed: no more early invoices for it
    world.store.rate("acme", "2026-03", seg(at(1)), "video", 10_000)  # a late participant_left after the close
    april = world.close("acme", APR)
    # March as billed: 10,000 over = 7.20; now 20,000 over = 14.40: adjustment +7.20; May 29.00 in advance
    assert kinds(april, "adjustment") == ["7.20"]
    assert kinds(april, "billed_early") == []
    assert april.total == Decimal("36.20")


def test_given_an_upgrade_after_an_early_invoice_then_the_close_reprorates_and_deducts_it(world: World) -> None:
    world.store.rate("acme", "2026-03", seg(at(1)), "video", 60_000)
    assert early(world, "acme", mid(5)) is not None  # on the whole month's Team allowance: 10,000 over = 7.20
    team = world.store.profiles["acme"]
    world.store.profiles["acme"] = replace(team, changes=(*team.changes, TierChange(at(11), "enterprise")))
    close = world.close("acme", MAR)
    # Team 10/31 of March: allowance 50,000 x 10/31 = 16,129.03 -> 16,130; 43,870 over x 0.00072 = 31.5864 -> 31.59
    # fees due 29 x 10/31 = 9.35 + 99 x 21/31 = 67.06 = 76.41, minus 29.00 in advance = 47.41; April 99.00 ahead
    assert kinds(close, "usage")[0] == "31.59"
    assert kinds(close, "fee_proration") == ["47.41"]
    assert kinds(close, "billed_early") == ["-7.20"]
    assert close.total == Decimal("170.80")  # 31.59 + 47.41 + 99.00 - 7.20
    assert close.total + Decimal("7.20") == Decimal("178.00")  # the bill without progressive billing


def test_given_a_first_month_with_an_early_invoice_then_the_close_still_runs() -> None:
    w = World()
    w.signup("late", (at(17), "team"))
    progressive(w, "late", "2.00")
    w.store.rate("late", "2026-03", seg(at(17)), "video", 30_000)
    first = early(w, "late", mid(20))
    assert first is not None
    # allowance 50,000 x 15/31 = 24,193.5 -> 24,194; 5,806 over x 0.00072 = 4.18032 -> 4.18
    assert first.total == Decimal("4.18")
    close = w.close("late", MAR)
    assert kinds(close, "billed_early") == ["-4.18"]
    assert close.total == Decimal("43.03")  # 4.18 - 4.18 + fee 29 x 15/31 = 14.03 + April 29.00
    assert first.total + close.total == Decimal("47.21")  # what test_invoicing's one invoice bills


def test_given_the_previous_period_not_closed_then_no_early_invoice_yet() -> None:
    w = World()
    w.signup("acme", (at(1, 2), "team"))
    progressive(w, "acme", "1.00")
    w.store.rate("acme", "2026-03", seg(at(1)), "video", 60_000)
    assert early(w, "acme", mid(1)) is None  # February's close (and its number) comes first
    w.close("acme", FEB)
    assert early(w, "acme", mid(1)) is not None


def test_given_the_period_over_or_below_threshold_then_nothing_early(world: World) -> None:
    world.store.rate("acme", "2026-03", seg(at(1)), "video", 56_000)  # 6,000 over = 4.32 < 5.00
    check = early_check(world.store.ledger("acme"), MAR, default_catalog())
    assert check is not None
    assert (check.unbilled, check.due) == (Decimal("4.32"), False)
    assert early(world, "acme", mid(30)) is None
    world.store.rate("acme", "2026-03", seg(at(1)), "video", 1_000)  # 5.04
    assert compose_early(world.store.ledger("acme"), MAR, default_catalog(), MAR.end) is None  # period over
    assert early(world, "acme", mid(31)) is not None


def test_given_credit_on_account_then_applied_to_the_early_invoice(world: World) -> None:
    world.store.billing["acme"] = replace(world.store.billing["acme"], credit=Decimal("2.00"))
    world.store.rate("acme", "2026-03", seg(at(1)), "video", 60_000)
    first = early(world, "acme", mid(10))
    assert first is not None
    assert kinds(first, "credit") == ["-2.00"]
    assert first.total == Decimal("5.20")  # 7.20 - 2.00
    assert world.store.billing["acme"].credit == Decimal("0.00")
    close = world.close("acme", MAR)
    assert kinds(close, "billed_early") == ["-7.20"]  # the usage billed early, not what the credit paid
    assert close.total == Decimal("29.00")


# --- races: an early invoice and the close both take the next number, conditionally --------------------------------


def test_given_an_early_invoice_landing_during_the_close_then_the_close_rereads_and_deducts_it(world: World) -> None:
    world.store.rate("acme", "2026-03", seg(at(1)), "video", 60_000)

    def racing() -> None:
        world.store.before_create.clear()
        assert early(world, "acme", mid(31)) is not None  # 7.20, composed before the period ended

    world.store.before_create.append(racing)
    close = world.close("acme", MAR)
    assert kinds(close, "billed_early") == ["-7.20"]
    assert close.total == Decimal("29.00")
    assert [i.number for i in world.store.invoices.values()] == ["KB-acme-00001", "KB-acme-00002", "KB-acme-00003"]


def test_given_the_close_landing_during_an_early_invoice_then_no_early_invoice(world: World) -> None:
    world.store.rate("acme", "2026-03", seg(at(1)), "video", 60_000)

    def racing() -> None:
        world.store.before_create.clear()
        world.close("acme", MAR)

    world.store.before_create.append(racing)
    assert early(world, "acme", mid(31)) is None  # refused on the number, re-read: March is closed
    march = world.store.invoices["acme/2026-03"]
    assert march.total == Decimal("36.20")  # 7.20 + April 29.00, billed once
    assert "acme/2026-03/early-1" not in world.store.invoices


def test_given_an_early_invoice_left_a_draft_at_month_end_then_the_close_issues_it_before_deducting_it(
    world: World,
) -> None:
    world.store.rate("acme", "2026-03", seg(at(1)), "video", 60_000)  # 10,000 over x 0.00072 = 7.20
    world.gateway.fail_next = [GatewayUnavailableError("stripe down")] * 20
    late_march = datetime(2026, 3, 31, 23, 30, tzinfo=UTC)
    for _ in range(5):  # the early check's job, received maxReceiveCount times, then dead-lettered
        with pytest.raises(GatewayUnavailableError):
            issue_early(world.deps, "acme", MAR, late_march)
    world.gateway.fail_next = []
    assert world.store.invoices["acme/2026-03/early-1"].status is InvoiceStatus.DRAFT
    assert issue_early(world.deps, "acme", APR, datetime(2026, 4, 1, 1, tzinfo=UTC)) == []  # April's check: April's

    close = close_through(world.deps, "acme", MAR, datetime(2026, 4, 1, 6, tzinfo=UTC))[-1].invoice
    assert close is not None
    assert kinds(close, "billed_early") == ["-7.20"]
    assert close.total == Decimal("29.00")  # April's fee in advance; March's 7.20 is the early invoice's
    drafted = world.store.invoices["acme/2026-03/early-1"]
    assert drafted.status is InvoiceStatus.OPEN  # issued by the close
    assert world.gateway.invoices["acme/2026-03/early-1"].request.total == Decimal("7.20")
    issued = [d["invoice_id"] for t, d in world.bus.events if t == "InvoiceIssued.v1"]
    assert issued == ["acme/2026-02", "acme/2026-03/early-1", "acme/2026-03"]
    # billed for March through Stripe: 7.20 + 29.00 = 36.20 = the month without progressive billing (7.20 + 29.00)
    march = [i.request.total for key, i in world.gateway.invoices.items() if key.startswith("acme/2026-03")]
    assert sum(march) == Decimal("36.20")


# --- an early invoice below the card minimum is not made (D165; month-end invoices carry, D126) ------------


def _personal_with_threshold(threshold: str, method: BillingMethod = BillingMethod.CARD) -> World:
    w = World()
    w.signup("solo", (at(1, 2), "personal"), method=method)
    progressive(w, "solo", threshold)
    assert w.close("solo", FEB).total == Decimal("0.00")  # Personal: no fee, no usage in February
    return w


def test_given_an_early_amount_below_the_card_minimum_then_no_early_invoice_until_it_reaches_it() -> None:
    w = _personal_with_threshold("0.20")
    w.store.rate("solo", "2026-03", seg(at(1)), "video", 5_500)  # 500 over 5,000 x 0.00072 = 0.36: over 0.20
    check = early_check(w.store.ledger("solo"), MAR, default_catalog())
    assert check is not None
    assert (check.unbilled, check.due) == (Decimal("0.36"), True)
    assert issue_early(w.deps, "solo", MAR, mid(10)) == []  # 0.36 < 0.50: the card could not be charged it
    assert "solo/2026-03/early-1" not in w.store.invoices
    assert w.store.billing["solo"].seq == 1  # no invoice number taken
    assert w.gateway.invoices == {}  # nothing sent to the processor
    w.store.rate("solo", "2026-03", seg(at(1)), "video", 250)  # 750 over x 0.00072 = 0.54
    (first,) = issue_early(w.deps, "solo", MAR, mid(11))
    assert (first.invoice_id, first.total, first.status) == (
        "solo/2026-03/early-1",
        Decimal("0.54"),
        InvoiceStatus.OPEN,
    )
    w.store.rate("solo", "2026-03", seg(at(1)), "video", 100)  # 850 over x 0.00072 = 0.612 -> 0.61
    close = w.close("solo", MAR)
    # 0.61 - 0.54 billed early = 0.07: below the minimum at the month end, so carried (D126), never lost
    assert kinds(close, "billed_early") == ["-0.54"]
    assert (close.total, close.status) == (Decimal("0.07"), InvoiceStatus.CARRIED)


def test_given_credit_leaving_an_early_invoice_below_the_card_minimum_then_none_and_the_credit_stays() -> None:
    w = _personal_with_threshold("1.00")
    w.store.billing["solo"] = replace(w.store.billing["solo"], credit=Decimal("1.00"))
    w.store.rate("solo", "2026-03", seg(at(1)), "video", 6_875)  # 1,875 over x 0.00072 = 1.35: over 1.00
    assert issue_early(w.deps, "solo", MAR, mid(10)) == []  # 1.35 - 1.00 credit = 0.35 < 0.50
    assert w.store.billing["solo"].credit == Decimal("1.00")  # not spent on an invoice that was not made
    close = w.close("solo", MAR)
    assert kinds(close, "credit") == ["-1.00"]
    assert close.total == Decimal("0.35")  # below the minimum at the month end: carried
    assert close.status is InvoiceStatus.CARRIED


def test_given_credit_covering_the_early_amount_then_a_paid_zero_invoice_as_before() -> None:
    w = _personal_with_threshold("0.20")
    w.store.billing["solo"] = replace(w.store.billing["solo"], credit=Decimal("5.00"))
    w.store.rate("solo", "2026-03", seg(at(1)), "video", 5_500)  # 0.36, all paid by the credit
    (first,) = issue_early(w.deps, "solo", MAR, mid(10))
    assert (first.total, first.status) == (Decimal("0.00"), InvoiceStatus.PAID)
    assert w.store.billing["solo"].credit == Decimal("4.64")


def test_given_a_crypto_account_then_an_early_bill_below_the_card_minimum_is_made() -> None:
    w = _personal_with_threshold("0.20", BillingMethod.CRYPTO)
    w.store.rate("solo", "2026-03", seg(at(1)), "video", 5_500)  # 0.36: the crypto rail has no minimum
    (first,) = issue_early(w.deps, "solo", MAR, mid(10))
    assert (first.total, first.status) == (Decimal("0.36"), InvoiceStatus.OPEN)
