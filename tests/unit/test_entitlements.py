"""The entitlement decision (kilo_billing.entitlements.decide): each reason, the remaining budget and allowance, the
token TTL - figures worked by hand. Policy: burn $0.0072 a minute (10 video participants), TTL 60 s .. 6 h."""

from __future__ import annotations

from dataclasses import replace
from datetime import UTC, datetime
from decimal import Decimal

import pytest

from kilo_billing.accounts import AccountProfile
from kilo_billing.entitlements import EntitlementPolicy, Reading, Reason, SpendState, decide
from kilo_billing.rating import TierChange

NOW = datetime(2026, 11, 20, 10, tzinfo=UTC)
POLICY = EntitlementPolicy()
PROFILE = AccountProfile(
    "acct-1",
    (TierChange(datetime(2026, 1, 1, tzinfo=UTC), "team"),),
    budget_usd=Decimal("100"),
    hard_limit_usd=Decimal("150"),
)


def spend(used: str, period: str = "2026-11") -> SpendState:
    return SpendState(
        "acct-1",
        Reading(period, Decimal(used), Decimal("150"), f"{period}-19T08:00:00+00:00"),
        {"video": Reading(period, Decimal("48000"), Decimal("60000"), "x")},
    )


def test_given_spend_under_the_hard_limit_then_allowed_with_the_remaining_budget_and_a_ttl_it_can_pay_for() -> None:
    answer = decide("acct-1", PROFILE, spend("149.00"), NOW, POLICY)
    assert (answer.allowed, answer.reason) == (True, None)
    assert answer.remaining_budget_usd == Decimal("1.00")
    # $1.00 / $0.0072 a minute = 138.88 minutes = 8,333.3 s -> 8,333 s
    assert answer.max_token_ttl_seconds == 8333
    assert answer.remaining_allowance == {"video": Decimal("12000")}
    assert (answer.spent_usd, answer.as_of) == (Decimal("149.00"), "2026-11-19T08:00:00+00:00")


def test_given_plenty_left_then_the_ttl_is_capped_at_six_hours_and_a_cent_left_gets_the_minimum() -> None:
    assert decide("acct-1", PROFILE, spend("10"), NOW, POLICY).max_token_ttl_seconds == 21600
    # $0.01 / $0.0072 = 1.39 minutes = 83 s
    assert decide("acct-1", PROFILE, spend("149.99"), NOW, POLICY).max_token_ttl_seconds == 83
    tiny = EntitlementPolicy(burn_usd_per_minute=Decimal("1"))
    assert decide("acct-1", PROFILE, spend("149.99"), NOW, tiny).max_token_ttl_seconds == 60  # 0.6 s -> 60 s


def test_given_spend_at_the_hard_limit_then_refused_hard_budget_reached_with_no_ttl() -> None:
    answer = decide("acct-1", PROFILE, spend("150.00"), NOW, POLICY)
    assert (answer.allowed, answer.reason, answer.max_token_ttl_seconds) == (False, Reason.HARD_BUDGET, 0)
    assert answer.remaining_budget_usd == Decimal("0")
    assert answer.message == "the account's hard spending limit for this month is reached"


def test_given_last_months_spend_then_this_month_starts_from_zero() -> None:
    answer = decide("acct-1", PROFILE, spend("150.00", period="2026-10"), NOW, POLICY)
    assert (answer.allowed, answer.spent_usd, answer.remaining_budget_usd) == (True, Decimal(0), Decimal("150"))
    assert answer.remaining_allowance == {}


@pytest.mark.parametrize(
    ("status", "reason"),
    [
        ("suspended", Reason.SUSPENDED),
        ("abuse_hold", Reason.ABUSE_HOLD),
        ("past_due", Reason.PAST_DUE),
    ],
)
def test_given_a_status_then_refused_for_it_before_the_budget(status: str, reason: str) -> None:
    answer = decide("acct-1", replace(PROFILE, status=status), spend("150.00"), NOW, POLICY)
    assert (answer.allowed, answer.reason, answer.max_token_ttl_seconds) == (False, reason, 0)


def test_given_no_hard_limit_then_never_refused_for_budget_and_the_remaining_is_to_the_soft_budget() -> None:
    soft = replace(PROFILE, hard_limit_usd=None)
    answer = decide("acct-1", soft, spend("140"), NOW, POLICY)
    assert (answer.allowed, answer.remaining_budget_usd, answer.max_token_ttl_seconds) == (True, Decimal(0), 21600)


def test_given_no_event_yet_then_allowed_with_the_whole_budget() -> None:
    answer = decide("acct-1", PROFILE, None, NOW, POLICY)
    assert (answer.allowed, answer.spent_usd, answer.remaining_budget_usd) == (True, Decimal(0), Decimal(150))
    assert answer.as_of is None


def test_given_no_profile_then_refused_as_not_registered() -> None:
    answer = decide("ghost", None, None, NOW, POLICY)
    assert (answer.allowed, answer.reason) == (False, Reason.NOT_REGISTERED)
