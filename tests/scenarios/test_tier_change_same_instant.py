"""Two tier changes taking effect at the same instant (Given/When/Then): an operator asks an Enterprise account to go
down to Team, then changes their mind to Personal, both during March - both downgrades take effect on April 1st. The
second replaces the first (``with_tier_change``), and every reader takes the last change recorded at an instant
(``tier_at`` as ``segments_for``), so the fee billed in advance and the rating of the month agree. Figures by hand
(price book 2026-01: Enterprise $99, Team $29, Personal $0)."""

from __future__ import annotations

from decimal import Decimal

from kilo_billing.accounts import AccountProfile, register_account, request_tier_change
from kilo_billing.catalog import default_catalog
from kilo_billing.rating import TierChange
from tests.account_api_fakes import NO_USAGE
from tests.fakes import InMemoryAccountDirectory
from tests.scenarios.test_invoicing import APR, MAR, MAY, World, amounts, at


def test_given_two_downgrades_asked_in_one_month_then_the_second_replaces_the_first() -> None:
    directory = InMemoryAccountDirectory()
    book = default_catalog().latest
    register_account(directory, "ent", "enterprise", at(1), book.tier_ids)
    request_tier_change(directory, book, "ent", "team", at(10), month=NO_USAGE)  # effective April 1st
    profile = request_tier_change(directory, book, "ent", "personal", at(11), month=NO_USAGE)  # effective April 1st too
    assert [(c.at, c.tier) for c in profile.changes] == [(at(1), "enterprise"), (APR.start, "personal")]
    assert profile.tier_at(APR.start) == "personal"
    assert [s.tier for s in profile.segments(APR)] == ["personal"]


def test_given_a_history_with_two_changes_at_one_instant_then_the_fee_in_advance_and_the_rating_agree() -> None:
    """A profile stored before changes at one instant were replaced: the last one recorded counts, everywhere."""
    world = World()
    changes = (TierChange(at(1), "enterprise"), TierChange(APR.start, "team"), TierChange(APR.start, "personal"))
    world.store.profiles["ent"] = AccountProfile("ent", changes)
    assert world.store.profiles["ent"].tier_at(APR.start) == "personal"
    march = world.close("ent", MAR)
    # March on Enterprise, its first month: the first-month fee 99.00; April's fee in advance: Personal, 0.00
    assert amounts(march, "fee_first_month") == ["99.00"]
    assert amounts(march, "fee") == ["0.00"]
    assert march.total == Decimal("99.00")
    april = world.close("ent", APR)
    assert amounts(april, "fee_proration") == []  # Personal was due, 0.00 was billed: nothing to true up
    assert april.total == Decimal("0.00")
    assert world.close("ent", MAY).total == Decimal("0.00")
