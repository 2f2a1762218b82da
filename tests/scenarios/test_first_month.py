"""An account's first month is always closed, before any later one (Given/When/Then; D51 amended): a close job that
finds no month-end invoice starts from the month the account signed up in (no earlier than the first price book), and
``compose_close`` refuses a later month while that one is not invoiced. Figures worked by hand (price book 2026-01:
video $0.00072, Team $29 with 50,000 video minutes; March 2026 has 31 days)."""

from __future__ import annotations

from datetime import UTC, datetime
from decimal import Decimal

import pytest

from kilo_billing.invoicing import InvoicingError
from kilo_billing.periods import Period
from kilo_invoice.logic import close_account, close_through
from tests.scenarios.test_invoicing import APR, MAR, World, amounts, at, seg, usage


def _signed_up_10_march_with_usage() -> World:
    world = World()
    world.signup("new", (at(10), "team"))  # Team from March 10th: 22 of 31 days; before it the free default
    world.store.rate("new", "2026-03", seg(at(10)), "video", 80_000)
    return world


def test_given_the_first_months_close_never_ran_when_the_next_months_job_runs_then_the_first_month_is_billed_first() -> (
    None
):
    world = _signed_up_10_march_with_usage()
    # March's job dead-lettered; April's job runs on May 1st
    outcomes = close_through(world.deps, "new", APR, APR.end)
    assert [(o.period, o.created) for o in outcomes] == [("2026-03", True), ("2026-04", True)]
    march = world.store.invoices["new/2026-03"]
    # fee 29 x 22/31 = 20.5806.. -> 20.58; allowance 50,000 x 22/31 = 35,483.87 -> 35,484 (rounded up);
    # 80,000 - 35,484 = 44,516 x 0.00072 = 32.05152 -> 32.05; April's fee in advance 29.00
    assert amounts(march, "fee_first_month") == ["20.58"]
    assert usage(march, "video", "team") == Decimal("32.05")
    assert amounts(march, "fee") == ["29.00"]
    assert march.total == Decimal("81.63")  # 20.58 + 32.05 + 29.00
    april = world.store.invoices["new/2026-04"]
    assert amounts(april, "fee_proration") == []  # April's 29.00 was billed in advance by March's invoice
    assert april.total == Decimal("29.00")  # May's fee in advance
    assert (march.number, april.number) == ("KB-new-00001", "KB-new-00002")
    # the operator redrives March's dead-lettered job: found, nothing new
    again = close_through(world.deps, "new", MAR, APR.end)
    assert [(o.period, o.created) for o in again] == [("2026-03", False)]
    assert sorted(world.store.invoices) == ["new/2026-03", "new/2026-04"]


def test_given_no_invoice_yet_when_a_later_month_is_closed_alone_then_refused_naming_the_first_month() -> None:
    world = _signed_up_10_march_with_usage()
    with pytest.raises(InvoicingError, match="close 2026-03 before 2026-04"):
        close_account(world.deps, "new", APR, APR.end)
    assert world.store.invoices == {}  # nothing written
    assert world.store.billing == {}


def test_given_a_signup_in_the_closed_month_then_only_that_month_is_closed() -> None:
    world = _signed_up_10_march_with_usage()
    outcomes = close_through(world.deps, "new", MAR, MAR.end)
    assert [o.period for o in outcomes] == ["2026-03"]
    assert world.store.invoices["new/2026-03"].total == Decimal("81.63")


def test_given_a_signup_before_the_first_price_book_then_billing_starts_with_the_price_books_first_month() -> None:
    world = World()
    world.signup("old", (datetime(2025, 11, 15, tzinfo=UTC), "team"))  # price books start in January 2026
    outcomes = close_through(world.deps, "old", Period(2026, 2), datetime(2026, 3, 1, 6, tzinfo=UTC))
    assert [o.period for o in outcomes] == ["2026-01", "2026-02"]
    # January: Team all month, nothing billed in advance -> true-up 29.00 + February in advance 29.00
    assert world.store.invoices["old/2026-01"].total == Decimal("58.00")
    assert world.store.invoices["old/2026-02"].total == Decimal("29.00")  # March in advance
