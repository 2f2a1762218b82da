"""Budgets: the soft level (alert percentages) and the hard limit, validated whole, set through the operator CLI on
moto; account status for the entitlement check."""

from __future__ import annotations

import json
from datetime import UTC, date, datetime
from decimal import Decimal
from fractions import Fraction

import pytest
import time_machine

from kilo_billing.accounts import (
    AccountProfile,
    TierChange,
    UnknownAccountError,
    register_account,
    request_tier_change,
    set_status,
)
from kilo_billing.aws import StorageUnavailableError
from kilo_billing.budgets import BudgetChange, InvalidBudgetError, apply_budget, check_thresholds, set_budget
from kilo_billing.catalog import Catalog, default_catalog
from kilo_billing.month_to_date import ROOM_RULE, OpenSessionFigures
from kilo_billing.periods import Period
from kilo_billing.usage_signals import Counters
from kilo_billing_cli import accounts as cli_accounts
from kilo_billing_cli.main import main
from tests.account_api_fakes import NO_USAGE, InMemoryMonthToDate
from tests.conftest import Stack
from tests.fakes import InMemoryAccountDirectory
from tests.integration.test_account_api import put_counters

SIGNUP = datetime(2026, 11, 1, tzinfo=UTC)
TIERS = ("personal", "team", "enterprise")


def _directory() -> InMemoryAccountDirectory:
    directory = InMemoryAccountDirectory()
    register_account(directory, "acct-1", "team", SIGNUP, TIERS, Decimal("100"))
    return directory


def test_given_a_budget_when_a_hard_limit_and_percentages_are_set_then_both_are_saved_and_the_budget_kept() -> None:
    directory = _directory()
    profile = set_budget(directory, "acct-1", BudgetChange(hard_limit_usd=Decimal("150"), thresholds=(90, 25, 50)))
    assert profile.budget_usd == Decimal("100")
    assert profile.hard_limit_usd == Decimal("150")
    assert profile.budget_thresholds == (25, 50, 90)
    assert directory.registered(["acct-1"])["acct-1"] == profile


def test_given_a_hard_limit_when_cleared_then_only_the_soft_budget_remains() -> None:
    directory = _directory()
    set_budget(directory, "acct-1", BudgetChange(hard_limit_usd=Decimal("120")))
    profile = set_budget(directory, "acct-1", BudgetChange(clear_hard_limit=True))
    assert (profile.budget_usd, profile.hard_limit_usd) == (Decimal("100"), None)


def test_given_only_a_hard_limit_without_soft_budget_then_it_is_accepted() -> None:
    directory = _directory()
    profile = set_budget(directory, "acct-1", BudgetChange(clear_budget=True, hard_limit_usd=Decimal("35.50")))
    assert (profile.budget_usd, profile.hard_limit_usd) == (None, Decimal("35.50"))


@pytest.mark.parametrize(
    ("change", "message"),
    [
        (BudgetChange(hard_limit_usd=Decimal("99.99")), "below the budget"),
        (BudgetChange(budget_usd=Decimal("0")), "positive amount"),
        (BudgetChange(budget_usd=Decimal("-5")), "positive amount"),
        (BudgetChange(hard_limit_usd=Decimal("NaN")), "positive amount"),
        (BudgetChange(budget_usd=Decimal("10.001")), "whole cents"),
        (BudgetChange(thresholds=()), "give 1 to 10"),
        (BudgetChange(thresholds=(50, 50)), "repeat"),
        (BudgetChange(thresholds=(0, 80)), "from 1 to 1000"),
        (BudgetChange(thresholds=(80, 1001)), "from 1 to 1000"),
        (BudgetChange(budget_usd=Decimal("5"), clear_budget=True), "not both"),
    ],
)
def test_given_an_invalid_budget_then_it_is_refused_naming_the_problem_and_nothing_changes(
    change: BudgetChange, message: str
) -> None:
    directory = _directory()
    before = directory.registered(["acct-1"])["acct-1"]
    with pytest.raises(InvalidBudgetError, match=message):
        set_budget(directory, "acct-1", change)
    assert directory.registered(["acct-1"])["acct-1"] == before


def test_given_eleven_percentages_then_refused() -> None:
    with pytest.raises(InvalidBudgetError, match="give 1 to 10"):
        check_thresholds(tuple(range(10, 120, 10)))


def test_given_an_unknown_account_then_budget_and_status_refuse() -> None:
    directory = _directory()
    with pytest.raises(UnknownAccountError):
        set_budget(directory, "ghost", BudgetChange(budget_usd=Decimal(1)))
    with pytest.raises(UnknownAccountError):
        set_status(directory, "ghost", "suspended")
    with pytest.raises(ValueError, match="not one of"):
        set_status(directory, "acct-1", "frozen")


def _cli(capsys: pytest.CaptureFixture[str], table: str, *argv: str) -> dict[str, object]:
    assert main(["account", *argv, "--usage-table", table, "--json"]) == 0
    result = json.loads(capsys.readouterr().out)
    assert isinstance(result, dict)
    return result


def test_given_the_cli_when_setting_a_budget_and_status_then_the_profile_on_dynamodb_carries_them(
    stack: Stack, capsys: pytest.CaptureFixture[str]
) -> None:
    table = stack.template.physical_name("UsageTable")
    _cli(capsys, table, "create", "--account", "acct-7", "--tier", "team", "--budget-usd", "100")
    shown = _cli(capsys, table, "budget", "--account", "acct-7", "--hard-limit-usd", "150", "--alert-at", "50,75,100")
    assert (shown["budget_usd"], shown["hard_limit_usd"], shown["budget_thresholds"]) == ("100", "150", [50, 75, 100])
    _cli(capsys, table, "status", "--account", "acct-7", "--status", "past_due")
    shown = _cli(capsys, table, "show", "--account", "acct-7")
    assert (shown["hard_limit_usd"], shown["status"]) == ("150", "past_due")
    shown = _cli(capsys, table, "budget", "--account", "acct-7", "--no-hard-limit")
    assert shown["hard_limit_usd"] is None


@pytest.mark.parametrize(
    ("argv", "message"),
    [
        (["budget", "--account", "acct-7", "--hard-limit-usd", "50"], "below the budget"),
        (["budget", "--account", "acct-7", "--alert-at", "80,x"], "whole percentages"),
        (["budget", "--account", "acct-7", "--budget-usd", "5", "--no-budget"], "not allowed with"),
        (["status", "--account", "acct-7", "--status", "frozen"], "invalid choice"),
    ],
)
def test_given_bad_budget_input_on_the_cli_then_exit_2_naming_the_problem(
    stack: Stack, capsys: pytest.CaptureFixture[str], argv: list[str], message: str
) -> None:
    table = stack.template.physical_name("UsageTable")
    _cli(capsys, table, "create", "--account", "acct-7", "--tier", "team", "--budget-usd", "100")
    with pytest.raises(SystemExit) as exit_info:
        main(["account", *argv, "--usage-table", table])
    assert exit_info.value.code == 2
    assert message in capsys.readouterr().err


def test_given_limits_changed_then_each_change_of_an_amount_is_a_new_setting_and_nothing_else_is() -> None:
    """The versions that scope a limit's crossings (D124, D140): bumped when that amount changes - set, raised,
    lowered back, cleared - never by new percentages, the other limit, or the same amount given again."""
    directory = _directory()  # budget $100 at registration: version 0
    versions = []
    for change in (
        BudgetChange(hard_limit_usd=Decimal("150")),  # hard limit set: 1
        BudgetChange(hard_limit_usd=Decimal("500")),  # raised: 2
        BudgetChange(hard_limit_usd=Decimal("150.00")),  # back to $150: 3 (a new setting, also written 150.00)
        BudgetChange(hard_limit_usd=Decimal("150")),  # the same amount again: still 3
        BudgetChange(thresholds=(50, 90)),  # percentages only: nothing
        BudgetChange(budget_usd=Decimal("120")),  # the budget: its own version, 1
        BudgetChange(clear_hard_limit=True),  # cleared: 4
    ):
        profile = set_budget(directory, "acct-1", change)
        versions.append((profile.budget_version, profile.hard_limit_version))
    assert versions == [(0, 1), (0, 2), (0, 3), (0, 3), (0, 3), (1, 3), (1, 4)]
    assert directory.registered(["acct-1"])["acct-1"].hard_limit_version == 4


NOVEMBER = datetime(2026, 11, 20, 10, 0, tzinfo=UTC)


def _team(*changes: TierChange) -> AccountProfile:
    return AccountProfile("acct-1", changes or (TierChange(datetime(2026, 1, 1, tzinfo=UTC), "team"),))


@pytest.mark.parametrize(
    ("change", "message"),
    [
        (
            BudgetChange(hard_limit_usd=Decimal("20")),
            "hard limit $20 is not above the fixed monthly fee of $29.00: the bill starts at the fee, so it "
            "would be reached at once and every call refused for the month; set it above $29.00",
        ),
        (
            BudgetChange(hard_limit_usd=Decimal("29.00")),
            "hard limit $29.00 is not above the fixed monthly fee of $29.00",
        ),
        (BudgetChange(budget_usd=Decimal("29")), "budget $29 is not above the fixed monthly fee of $29.00"),
        (BudgetChange(budget_usd=Decimal("0.01")), "budget $0.01 is not above the fixed monthly fee of $29.00"),
    ],
)
def test_given_a_limit_at_or_below_the_months_fee_then_it_is_refused_naming_the_fee(
    change: BudgetChange, message: str
) -> None:
    with pytest.raises(InvalidBudgetError) as refused:
        apply_budget(_team(), change, NOVEMBER)
    assert str(refused.value).startswith(message)


def test_given_a_limit_above_the_fee_or_a_free_tier_then_it_is_accepted() -> None:
    assert apply_budget(_team(), BudgetChange(hard_limit_usd=Decimal("29.01")), NOVEMBER).hard_limit_usd == Decimal(
        "29.01"
    )
    personal = _team(TierChange(datetime(2026, 1, 1, tzinfo=UTC), "personal"))  # no fee
    assert apply_budget(personal, BudgetChange(hard_limit_usd=Decimal("1")), NOVEMBER).hard_limit_usd == Decimal(1)
    # upgraded to Team on 16 November: this month's fee is $29 x 15/30 = $14.50, but the limit stays in force in
    # December, whose bill starts at the full $29.00
    upgraded = _team(
        TierChange(datetime(2026, 1, 1, tzinfo=UTC), "personal"), TierChange(datetime(2026, 11, 16, tzinfo=UTC), "team")
    )
    with pytest.raises(InvalidBudgetError, match=r"fixed monthly fee of \$29\.00"):
        apply_budget(upgraded, BudgetChange(hard_limit_usd=Decimal("20")), NOVEMBER)
    # a downgrade to Personal already scheduled for 1 December: this month's $29.00 is what the bill starts at
    leaving = _team(
        TierChange(datetime(2026, 1, 1, tzinfo=UTC), "team"), TierChange(datetime(2026, 12, 1, tzinfo=UTC), "personal")
    )
    with pytest.raises(InvalidBudgetError, match=r"fixed monthly fee of \$29\.00"):
        apply_budget(leaving, BudgetChange(budget_usd=Decimal("10")), NOVEMBER)
    # and a Personal account upgrading to Team on 1 December: December's fee counts already
    joining = _team(
        TierChange(datetime(2026, 1, 1, tzinfo=UTC), "personal"), TierChange(datetime(2026, 12, 1, tzinfo=UTC), "team")
    )
    with pytest.raises(InvalidBudgetError, match=r"fixed monthly fee of \$29\.00"):
        apply_budget(joining, BudgetChange(hard_limit_usd=Decimal("5")), NOVEMBER)


def test_given_the_cli_and_a_hard_limit_below_the_fee_then_exit_2_naming_the_fee(
    stack: Stack, capsys: pytest.CaptureFixture[str]
) -> None:
    table = stack.template.physical_name("UsageTable")
    _cli(capsys, table, "create", "--account", "acct-7", "--tier", "team")
    with pytest.raises(SystemExit) as exit_info:
        main(["account", "budget", "--account", "acct-7", "--hard-limit-usd", "20", "--usage-table", table])
    assert exit_info.value.code == 2
    assert "hard limit $20 is not above the fixed monthly fee of $29.00" in capsys.readouterr().err
    assert _cli(capsys, table, "show", "--account", "acct-7")["hard_limit_usd"] is None  # nothing saved


def test_given_the_cli_path_of_a_tier_change_then_limits_below_the_new_fee_refuse_the_upgrade() -> None:
    """``request_tier_change`` (the CLI's ``account change-tier``) holds the same rule as the account API: Team with
    a $50 hard limit upgraded to Enterprise on Nov 20 would start at $99, so it is refused and nothing saved."""
    directory = _limited("team", SIGNUP, "50")
    with pytest.raises(InvalidBudgetError, match=r"^changing to enterprise: hard limit \$50 is not above .*\$99\.00"):
        request_tier_change(
            directory, default_catalog().for_period(Period(2026, 11)), "acct-1", "enterprise", NOVEMBER, month=NO_USAGE
        )
    assert directory.registered(["acct-1"])["acct-1"].tier_at(NOVEMBER) == "team"


def test_given_the_cli_path_of_a_tier_change_then_the_hard_limit_must_stay_above_the_bill_re_rated_with_it() -> None:
    """D150 amended (e2), the CLI's path: Team from Nov 1 with a $100 hard limit and 91,667 video minutes rated by
    Nov 16 ($29.00 + 41,667 over x $0.00072 = $59.00). Enterprise from Nov 16 00:00 prorates Team to 15/30: 25,000
    included, 66,667 over = $48.00, + $14.50 + $49.50 fees = $112.00 >= $100: refused, nothing saved. With no usage
    rated the bill is the fees alone ($64.00 < $100) and the same upgrade goes through."""
    upgrade_at = datetime(2026, 11, 16, tzinfo=UTC)
    book = default_catalog().for_period(Period(2026, 11))
    directory = _limited("team", SIGNUP, "100")
    month = InMemoryMonthToDate(directory, {("acct-1", "2026-11"): {(int(SIGNUP.timestamp()), "video"): 91_667}})
    with pytest.raises(InvalidBudgetError, match=r"^changing to enterprise: hard limit \$100 is not above \$112\.00"):
        request_tier_change(directory, book, "acct-1", "enterprise", upgrade_at, month=month)
    assert directory.registered(["acct-1"])["acct-1"].tier_at(upgrade_at) == "team"
    upgraded = request_tier_change(directory, book, "acct-1", "enterprise", upgrade_at, month=NO_USAGE)
    assert upgraded.tier_at(upgrade_at) == "enterprise"


def test_given_the_hard_limit_already_reached_then_the_refused_upgrade_says_so_not_that_it_would_be_reached() -> None:
    """Review e2 v2 (1): Team from Nov 1, $100 hard limit, 160,000 video minutes by Nov 16. The bill is ALREADY
    $29.00 + 110,000 over x $0.00072 ($79.20) = $108.20 >= $100 (calls stopped). Enterprise from Nov 16 prorates Team
    to 15/30: 25,000 included, 135,000 over = $97.20, + $14.50 + $49.50 fees = $161.20: refused (right), but the
    message said the limit "would be reached at once" - it is reached already."""
    upgrade_at = datetime(2026, 11, 16, tzinfo=UTC)
    directory = _limited("team", SIGNUP, "100")
    month = InMemoryMonthToDate(directory, {("acct-1", "2026-11"): {(int(SIGNUP.timestamp()), "video"): 160_000}})
    with pytest.raises(InvalidBudgetError) as refused:
        request_tier_change(
            directory, default_catalog().for_period(Period(2026, 11)), "acct-1", "enterprise", upgrade_at, month=month
        )
    said = str(refused.value)
    assert said.startswith("changing to enterprise: hard limit $100 is not above $161.20")
    assert "the limit is already reached ($108.20 before the change)" in said
    assert "would be reached at once" not in said
    assert directory.registered(["acct-1"])["acct-1"].tier_at(upgrade_at) == "team"


def test_given_a_soft_budget_then_the_upgrade_holds_it_to_the_fee_alone_never_to_the_re_rated_bill() -> None:
    """D150 (e2, review v2 7), written down as it stands (passes before and after): Team, 160,000 video minutes by
    Nov 16. A $100 budget is above Enterprise's $99 fee: the upgrade goes through though the bill re-rated with it
    ($161.20, see above) passes the budget - an alert, nothing stopped. An $80 budget is at or below the $99 fee:
    refused, as setting it would be - every later month's first batch would pass it."""
    upgrade_at = datetime(2026, 11, 16, tzinfo=UTC)
    book = default_catalog().for_period(Period(2026, 11))
    for budget, refused in (("80", True), ("100", False)):
        directory = InMemoryAccountDirectory()
        register_account(directory, "acct-1", "team", SIGNUP, TIERS, Decimal(budget))
        month = InMemoryMonthToDate(directory, {("acct-1", "2026-11"): {(int(SIGNUP.timestamp()), "video"): 160_000}})
        if refused:
            with pytest.raises(
                InvalidBudgetError, match=r"^changing to enterprise: budget \$80 is not above .*\$99\.00"
            ):
                request_tier_change(directory, book, "acct-1", "enterprise", upgrade_at, month=month)
            continue
        upgraded = request_tier_change(directory, book, "acct-1", "enterprise", upgrade_at, month=month)
        assert upgraded.tier_at(upgrade_at) == "enterprise"


def _cameras_on_since(start_ms: int, count: int, first: int = 0) -> list[OpenSessionFigures]:
    """``count`` acct-1 participants (PA_<first>, ...) in RM_1 with their cameras on since ``start_ms`` (an open video
    session each)."""
    return [
        OpenSessionFigures("RM_1", f"PA_{i}", "acct-1", start_ms, ROOM_RULE, Fraction(60), True, start_ms + 60_000)
        for i in range(first, first + count)
    ]


def test_given_a_change_dated_after_the_read_then_open_sessions_count_on_to_its_date() -> None:
    """Review e2 v3 (1): `account change-tier --at` Nov 28 run at Nov 16 02:00 (read_at), Team from Nov 1, $120 hard
    limit, 150,000 video minutes rated and a camera open since Nov 16 00:00. Saving the change prorates Team to 27/30
    at once (45,000 included); counted only to the read (120 min) it was accepted at $111.69, yet by Nov 24 03:00
    (11,700 camera min) the bill is 116,700 over x $0.00072 = $84.02, + $26.10 (29 x 27/30) + $9.90 (99 x 3/30) =
    $120.02: calls stopped while still on Team. Counted on to Nov 28 (12 days = 17,280 min): 167,280 - 45,000 =
    122,280 over = $88.0416 -> $88.04, + $36.00 = $124.04 >= $120: refused. Before the change, read at 02:00: 150,120 -
    50,000 = 100,120 over = $72.09 + $29.00 = $101.09, not reached: "would be reached by" the change's date.
    A $124.05 limit is above it: accepted."""
    at, read_at = datetime(2026, 11, 28, tzinfo=UTC), datetime(2026, 11, 16, 2, tzinfo=UTC)
    book = default_catalog().for_period(Period(2026, 11))
    start_ms = int(datetime(2026, 11, 16, tzinfo=UTC).timestamp() * 1000)
    [camera] = _cameras_on_since(start_ms, 1, first=1)
    directory = InMemoryAccountDirectory()
    register_account(directory, "acct-1", "team", SIGNUP, TIERS)
    month = InMemoryMonthToDate(
        directory, {("acct-1", "2026-11"): {(int(SIGNUP.timestamp()), "video"): 150_000}}, [camera]
    )
    set_budget(directory, "acct-1", BudgetChange(hard_limit_usd=Decimal("120")))
    with pytest.raises(InvalidBudgetError) as refused:
        request_tier_change(directory, book, "acct-1", "enterprise", at, month=month, read_at=read_at)
    said = str(refused.value)
    assert said.startswith("changing to enterprise: hard limit $120 is not above $124.04, this month's bill up to the")
    assert "the limit would be reached by 2026-11-28 00:00 UTC, while still on team, and every call stopped" in said
    assert directory.registered(["acct-1"])["acct-1"].tier_at(at) == "team"
    set_budget(directory, "acct-1", BudgetChange(hard_limit_usd=Decimal("124.05")))
    upgraded = request_tier_change(directory, book, "acct-1", "enterprise", at, month=month, read_at=read_at)
    assert upgraded.tier_at(at) == "enterprise"


def test_given_a_change_dated_before_the_read_then_open_sessions_count_up_to_the_read() -> None:
    """Review e2 v3 (2), as review (up2) found it must be set up to fail with the count cut at `--at`: Personal from
    Nov 1 (5,000 included, no fee), $30 hard limit (above Team's $29 fee), nothing rated, 3 cameras open since Nov 16
    00:00; run Nov 28 00:00, `--at` Nov 16 to Team. Cameras: 3 x 12 days x 1,440 = 51,840 video min.
    Before (Personal all month): 51,840 - 5,000 = 46,840 over x $0.00072 = $33.7248 -> $33.72 >= $30 (reached).
    With the change: Personal 15/30 (2,500 included) nothing; Team 15/30 (25,000 included) 51,840 - 25,000 = 26,840
    over = $19.3248 -> $19.32, + $14.50 fee = $33.82, higher than $33.72: refused, "already reached ($33.72 before the
    change)", nothing saved. Counted only to Nov 16 (the bug review v3 (1) fixed) the bill with the change is the
    $14.50 fee alone, below $30: accepted."""
    at, read_at = datetime(2026, 11, 16, tzinfo=UTC), datetime(2026, 11, 28, tzinfo=UTC)
    directory = _limited("personal", SIGNUP, "30")
    month = InMemoryMonthToDate(directory, {}, _cameras_on_since(int(at.timestamp() * 1000), 3))
    said = _refused_change(directory, Period(2026, 11), "team", at, month, read_at)
    assert said.startswith("changing to team: hard limit $30 is not above $33.82,")
    assert "the limit is already reached ($33.72 before the change) and every call stopped" in said
    assert directory.registered(["acct-1"])["acct-1"].tier_at(at) == "personal"


def test_given_the_limit_reached_then_a_change_keeping_the_bill_is_accepted() -> None:
    """D150 amended (up2)'s "keeping" side (``after > before``, not ``>=``): Personal from Nov 1, $50 hard limit,
    52,500 video min rated before Nov 16 and 2 cameras open since Nov 16 00:00; run Nov 23 20:40 (7 days 20 h 40 min
    = 11,320 min each: 22,640 camera min), `--at` Nov 16 to Team.
    Before (Personal all month): 52,500 + 22,640 - 5,000 = 70,140 over x $0.00072 = $50.5008 -> $50.50 >= $50.
    With the change: Personal 15/30 (2,500 included) 50,000 over = $36.00; Team 15/30 (25,000 included) holds the
    22,640 camera min; + $14.50 fee = $50.50: the same bill, already reached, not raised: accepted, Team saved."""
    at, read_at = datetime(2026, 11, 16, tzinfo=UTC), datetime(2026, 11, 23, 20, 40, tzinfo=UTC)
    directory = _limited("personal", SIGNUP, "50")
    month = InMemoryMonthToDate(
        directory, {("acct-1", "2026-11"): {(int(SIGNUP.timestamp()), "video"): 52_500}},
        _cameras_on_since(int(at.timestamp() * 1000), 2),
    )  # fmt: skip
    upgraded = request_tier_change(
        directory, default_catalog().for_period(Period(2026, 11)), "acct-1", "team", at, month=month, read_at=read_at
    )
    assert upgraded.tier_at(at) == "team"
    assert directory.profiles["acct-1"].tier_at(read_at) == "team"  # saved


def test_given_an_upgrade_dated_back_in_the_month_lowering_a_bill_over_the_limit_then_it_is_accepted() -> None:
    """D150 amended (up2), the same-month side of the rule: Personal from Nov 1, $60 hard limit, 50,000 video minutes
    rated and 3 cameras open since Nov 16 00:00; run Nov 28 00:00 (3 x 12 days = 51,840 min), `--at` Nov 16 to
    Team. Before: 101,840 - 5,000 = 96,840 over x $0.00072 = $69.7248 -> $69.72 >= $60 (calls stopped already).
    With the change: Personal 15/30 (2,500 included, 47,500 over = $34.20) + Team 15/30 (25,000 included, 51,840 -
    25,000 = 26,840 over = $19.3248 -> $19.32) + $14.50 fee = $68.02: still over $60 but LOWER than $69.72. It stops
    nothing the limit does not stop already and bills less: accepted (was refused, "already reached")."""
    at, read_at = datetime(2026, 11, 16, tzinfo=UTC), datetime(2026, 11, 28, tzinfo=UTC)
    cameras = _cameras_on_since(int(at.timestamp() * 1000), 3)
    directory = _limited("personal", SIGNUP, "60")
    month = InMemoryMonthToDate(
        directory, {("acct-1", "2026-11"): {(int(SIGNUP.timestamp()), "video"): 50_000}}, cameras
    )
    upgraded = request_tier_change(
        directory, default_catalog().for_period(Period(2026, 11)), "acct-1", "team", at, month=month, read_at=read_at
    )
    assert upgraded.tier_at(at) == "team"
    assert directory.profiles["acct-1"].tier_at(read_at) == "team"  # saved


def test_given_a_change_dated_in_a_later_month_then_that_months_bill_up_to_it_is_checked_and_named() -> None:
    """Review e2 v3 (3), the other side: run Oct 28 00:00, `--at` Nov 16 to Enterprise, Team since Oct 1, $100 hard
    limit, 5 cameras open since Oct 28 00:00. November up to the change: 5 x 15 days = 108,000 video minutes, Team
    15/30 -> 25,000 included, 83,000 over x $0.00072 = $59.76, + $14.50 + $49.50 = $123.76 >= $100. Before the
    change, read at Oct 28: nothing of November used yet, $29.00. Refused, the bill named by its month."""
    at, read_at = datetime(2026, 11, 16, tzinfo=UTC), datetime(2026, 10, 28, tzinfo=UTC)
    start_ms = int(read_at.timestamp() * 1000)
    cameras = _cameras_on_since(start_ms, 5)
    directory = _limited("team", datetime(2026, 10, 1, tzinfo=UTC), "100")
    month = InMemoryMonthToDate(directory, {}, cameras)
    said = _refused_change(directory, Period(2026, 11), "enterprise", at, month, read_at)
    assert said.startswith(
        "changing to enterprise: hard limit $100 is not above $123.76, November 2026's bill up to the change"
    )
    assert "the limit would be reached by 2026-11-16 00:00 UTC, while still on team" in said


def test_given_a_change_dated_in_a_month_over_but_not_invoiced_then_that_months_bill_re_rated_is_checked() -> None:
    """D150 amended (up3), reversing review e2 v3 (2)'s skip: run Dec 3 12:00, `--at` Nov 16 to Enterprise, Team,
    $100 hard limit, 91,667 video minutes in November. November before: $29.00 + 41,667 over x $0.00072 ($30.00024
    -> $30.00) = $59.00 < $100. Re-rated with Enterprise: Team 15/30 (25,000 included), 66,667 over = $48.00024 ->
    $48.00, + $14.50 + $49.50 fees = $112.00 >= $100 - November is over but not invoiced: the month's bill would
    reach the limit. Refused naming November (was accepted: "refuses nothing"); December as Enterprise is the $99 fee alone."""
    upgrade_at, now = datetime(2026, 11, 16, tzinfo=UTC), datetime(2026, 12, 3, 12, tzinfo=UTC)
    directory = _limited("team", SIGNUP, "100")
    month = InMemoryMonthToDate(directory, {("acct-1", "2026-11"): {(int(SIGNUP.timestamp()), "video"): 91_667}})
    refusal = _refused_change(directory, Period(2026, 11), "enterprise", upgrade_at, month, now)
    assert refusal == (
        "changing to enterprise: hard limit $100 is not above $112.00, November 2026's bill re-rated with the change "
        "(in effect since 2026-11-16 00:00 UTC; $59.00 before the change): the month is over, not yet invoiced, and "
        "the month's bill would reach the limit; raise the hard limit above $112.00, or clear it, before changing tier"
    )
    assert directory.profiles["acct-1"].tier_at(upgrade_at) == "team"  # nothing saved


def test_given_an_upgrade_raising_a_bill_past_the_limit_then_it_is_refused_whether_its_month_is_over_or_not() -> None:
    """Review (up2)'s probe, D150 amended (up3): Personal from Nov 1, $40 hard limit, 60,000 video min rated in
    November (before Nov 25), none in December; `--at` Nov 25 to Team.
    November before (Personal, 5,000 included): 55,000 over x $0.00072 = $39.60 < $40.
    With the change: Personal 24/30 = 4,000 included, 56,000 over = $40.32, + Team's fee 6/30 x $29 = $5.80 ->
    $46.12 >= $40.
    Run Nov 28 (November the clock's month): refused. Run Dec 3 12:00 (November over, not invoiced; December as
    Team the $29.00 fee alone, < $40): refused too, naming November 2026 and $46.12 (was accepted)."""
    at = datetime(2026, 11, 25, tzinfo=UTC)
    used = {("acct-1", "2026-11"): {(int(SIGNUP.timestamp()), "video"): 60_000}}
    for read_at, said in (
        (datetime(2026, 11, 28, tzinfo=UTC), "changing to team: hard limit $40 is not above $46.12, this month's bill"),
        (DECEMBER_3, "changing to team: hard limit $40 is not above $46.12, November 2026's bill re-rated with the "
                     "change (in effect since 2026-11-25 00:00 UTC; $39.60 before the change): the month is over"),
    ):  # fmt: skip
        directory = _limited("personal", SIGNUP, "40")
        refusal = _refused_change(
            directory, Period(2026, 11), "team", at, InMemoryMonthToDate(directory, used), read_at
        )
        assert refusal.startswith(said)
        assert directory.profiles["acct-1"].tier_at(read_at) == "personal"  # nothing saved


DECEMBER_3 = datetime(2026, 12, 3, 12, tzinfo=UTC)
DEC_SEGMENT = int(datetime(2026, 12, 1, tzinfo=UTC).timestamp())  # December's one segment starts with the period
TERABYTES_100 = 10**14  # bytes: 100,000.00 GB of data transfer


def test_given_an_upgrade_dated_into_an_earlier_month_then_the_clock_months_bill_re_rated_with_it_is_checked() -> None:
    """D150 amended (up): run Dec 3 12:00, `--at` Nov 25, Personal -> Team, $40 hard limit (above Team's $29 fee),
    100,000 GB of data transfer Dec 1-3. November is over (skipped, as before), but the change sets December's tier
    too. As Personal (no fee, 10 GB included): 99,990 GB x $0.00012 = $11.9988 -> $12.00. Re-rated as Team for the
    whole month: $29.00 + (100,000 - 100) = 99,900 GB x $0.00012 = $11.988 -> $11.99, = $40.99 >= $40: every call
    would stop at once. Refused naming December, nothing saved; with a $41 limit ($40.99 < $41) accepted."""
    at = datetime(2026, 11, 25, tzinfo=UTC)
    book = default_catalog().for_period(Period(2026, 11))
    directory = _limited("personal", SIGNUP, "40")
    month = InMemoryMonthToDate(directory, {("acct-1", "2026-12"): {(DEC_SEGMENT, "data_transfer"): TERABYTES_100}})
    with pytest.raises(InvalidBudgetError) as refused:
        request_tier_change(directory, book, "acct-1", "team", at, month=month, read_at=DECEMBER_3)
    assert str(refused.value) == (
        "changing to team: hard limit $40 is not above $40.99, December 2026's bill so far re-rated with the change "
        "(in effect since 2026-11-25 00:00 UTC, team's fee and allowances for the whole month; $12.00 before the "
        "change): the limit would be reached at once and every call stopped; raise the hard limit above $40.99, or "
        "clear it, before changing tier"
    )
    assert directory.profiles["acct-1"].tier_at(DECEMBER_3) == "personal"  # nothing saved
    set_budget(directory, "acct-1", BudgetChange(hard_limit_usd=Decimal("41")))
    upgraded = request_tier_change(directory, book, "acct-1", "team", at, month=month, read_at=DECEMBER_3)
    assert upgraded.tier_at(DECEMBER_3) == "team"


def test_given_the_limit_reached_then_an_upgrade_dated_into_an_earlier_month_raising_the_bill_is_refused() -> None:
    """As above with 400,000 GB Dec 1-3: as Personal 399,990 GB x $0.00012 = $47.9988 -> $48.00 >= $40, calls
    stopped already; as Team $29.00 + 399,900 GB x $0.00012 ($47.988 -> $47.99) = $76.99, HIGHER than $48.00:
    refused (D150 amended (up2): an already-reached bill may not be raised), the message saying it is reached
    already; nothing saved."""
    directory = _limited("personal", SIGNUP, "40")
    used = {("acct-1", "2026-12"): {(DEC_SEGMENT, "data_transfer"): 4 * TERABYTES_100}}
    said = _refused_change(
        directory,
        Period(2026, 11),
        "team",
        datetime(2026, 11, 25, tzinfo=UTC),
        InMemoryMonthToDate(directory, used),
        DECEMBER_3,
    )
    assert said.startswith("changing to team: hard limit $40 is not above $76.99, December 2026's bill so far")
    assert "$48.00 before the change): the limit is already reached and every call stopped" in said
    assert directory.profiles["acct-1"].tier_at(DECEMBER_3) == "personal"  # nothing saved


def test_given_the_limit_reached_then_an_upgrade_dated_into_an_earlier_month_lowering_the_bill_is_accepted() -> None:
    """Review (up) 1: run Dec 3 12:00, Personal, $40 hard limit, 70,000 video minutes Dec 1-3, `--at` Nov 25 to
    Team. As Personal (no fee, 5,000 included): 65,000 x $0.00072 = $46.80 >= $40, calls stopped already. As Team
    for the whole of December: $29.00 + (70,000 - 50,000) = 20,000 x $0.00072 ($14.40) = $43.40, still >= $40 but
    LOWER: calls stay stopped either way, and refusing kept the customer billed the higher $46.80. Accepted (was
    refused, "already reached"), Team saved."""
    directory = _limited("personal", SIGNUP, "40")
    used = {("acct-1", "2026-12"): {(DEC_SEGMENT, "video"): 70_000}}
    upgraded = request_tier_change(
        directory, default_catalog().for_period(Period(2026, 11)), "acct-1", "team",
        datetime(2026, 11, 25, tzinfo=UTC), month=InMemoryMonthToDate(directory, used), read_at=DECEMBER_3,
    )  # fmt: skip
    assert upgraded.tier_at(DECEMBER_3) == "team"
    assert directory.profiles["acct-1"].tier_at(DECEMBER_3) == "team"  # saved


def test_given_an_upgrade_to_enterprise_dated_into_an_earlier_month_then_the_clock_months_flat_fee_passes() -> None:
    """The finding's own example, written down (passes before and after): Team, $100 hard limit, 300,000 video
    minutes Dec 1-3 ($29.00 + 250,000 x $0.00072 ($180.00) = $209.00: already stopped), `--at` Nov 25 to
    Enterprise. Enterprise has no overage, so December re-rated is its fee alone, $99.00 < $100 (the fee rule keeps
    every hard limit above it): accepted - dating an upgrade back can only lower a month to the new tier's flat fee
    here."""
    at = datetime(2026, 11, 25, tzinfo=UTC)
    directory = _limited("team", SIGNUP, "100")
    month = InMemoryMonthToDate(directory, {("acct-1", "2026-12"): {(DEC_SEGMENT, "video"): 300_000}})
    upgraded = request_tier_change(
        directory, default_catalog().for_period(Period(2026, 11)), "acct-1", "enterprise", at, month=month,
        read_at=DECEMBER_3,
    )  # fmt: skip
    assert upgraded.tier_at(DECEMBER_3) == "enterprise"


def test_given_a_downgrade_dated_back_into_effect_then_the_clock_months_bill_re_rated_with_it_is_checked() -> None:
    """Review v2c (1): run Dec 3 12:00, `--at` Nov 16, Team -> Personal: the downgrade takes effect Dec 1 00:00,
    already past. Team, $40 hard limit, 62,000 video minutes Dec 1-3: as Team $29.00 + (62,000 - 50,000) x $0.00072
    = $29.00 + $8.64 = $37.64; re-rated as Personal (no fee, 5,000 included) (62,000 - 5,000) x $0.00072 = $41.04
    >= $40: every call would stop at once. Refused, nothing saved; with a $50 limit ($41.04 < $50) accepted."""
    at, now = datetime(2026, 11, 16, tzinfo=UTC), datetime(2026, 12, 3, 12, tzinfo=UTC)
    book = default_catalog().for_period(Period(2026, 11))
    directory = _limited("team", SIGNUP, "40")
    month = InMemoryMonthToDate(directory, {("acct-1", "2026-12"): {(int(SIGNUP.timestamp()), "video"): 62_000}})
    with pytest.raises(InvalidBudgetError, match=r"hard limit \$40 is not above \$41\.04, this month's bill") as exc:
        request_tier_change(directory, book, "acct-1", "personal", at, month=month, read_at=now)
    assert "$37.64 before the change" in str(exc.value)
    assert directory.profiles["acct-1"].tier_at(datetime(2026, 12, 1, tzinfo=UTC)) == "team"  # nothing saved
    set_budget(directory, "acct-1", BudgetChange(hard_limit_usd=Decimal("50")))
    downgraded = request_tier_change(directory, book, "acct-1", "personal", at, month=month, read_at=now)
    assert downgraded.tier_at(datetime(2026, 12, 1, tzinfo=UTC)) == "personal"


def test_given_the_limit_reached_then_a_downgrade_dated_back_raising_the_bill_is_refused() -> None:
    """D150 amended (up2), the mirror of the upgrade lowering a stopped bill: run Dec 3 12:00, Team, $40 hard limit,
    70,000 video minutes Dec 1-3, `--at` Nov 16 to Personal (in effect Dec 1, past). As Team: $29.00 + (70,000 -
    50,000) = 20,000 x $0.00072 ($14.40) = $43.40 >= $40, calls stopped already. As Personal (no fee, 5,000
    included): 65,000 x $0.00072 = $46.80, HIGHER: refused, "already reached" (was accepted: "stops nothing more",
    yet it billed the stopped month $3.40 more); nothing saved."""
    at = datetime(2026, 11, 16, tzinfo=UTC)
    directory = _limited("team", SIGNUP, "40")
    month = InMemoryMonthToDate(directory, {("acct-1", "2026-12"): {(DEC_SEGMENT, "video"): 70_000}})
    refusal = _refused_change(directory, Period(2026, 11), "personal", at, month, DECEMBER_3)
    assert refusal == (
        "changing to personal: hard limit $40 is not above $46.80, this month's bill so far re-rated with the change "
        "(in effect since 2026-12-01 00:00 UTC; $43.40 before the change): the limit is already reached and every "
        "call stopped; raise the hard limit above $46.80, or clear it, before changing tier"
    )
    assert directory.profiles["acct-1"].tier_at(DECEMBER_3) == "team"  # nothing saved


def test_given_a_downgrade_dated_back_two_months_then_the_month_over_it_re_rates_is_checked_and_named() -> None:
    """D150 amended (up3), the downgrade side: run Dec 3 12:00, Team since Oct 1, $40 hard limit, 62,000 video
    minutes in November, none in December; `--at` Oct 10 to Personal takes effect Nov 1, re-rating November (over,
    not invoiced) and December. November as Team: $29.00 + 12,000 x $0.00072 ($8.64) = $37.64; as Personal (no fee,
    5,000 included): 57,000 x $0.00072 = $41.04 >= $40. December as Personal: $0.00. Refused naming November (was
    accepted: only December was read), nothing saved."""
    directory = _limited("team", datetime(2026, 10, 1, tzinfo=UTC), "40")
    month = InMemoryMonthToDate(directory, {("acct-1", "2026-11"): {(int(SIGNUP.timestamp()), "video"): 62_000}})
    refusal = _refused_change(
        directory, Period(2026, 10), "personal", datetime(2026, 10, 10, tzinfo=UTC), month, DECEMBER_3
    )
    assert refusal == (
        "changing to personal: hard limit $40 is not above $41.04, November 2026's bill re-rated with the change (in "
        "effect since 2026-11-01 00:00 UTC; $37.64 before the change): the month is over, not yet invoiced, and the "
        "month's bill would reach the limit; raise the hard limit above $41.04, or clear it, before changing tier"
    )
    assert directory.profiles["acct-1"].tier_at(DECEMBER_3) == "team"  # nothing saved


def test_given_a_downgrade_taking_effect_after_the_clock_then_the_limits_set_before_it_never_refuse_it() -> None:
    """The same account and usage, run Nov 28: the downgrade takes effect Dec 1, not yet begun; nothing of December
    is re-rated now (December's usage is then rated as Personal from its first minute), so it is accepted."""
    at = datetime(2026, 11, 28, tzinfo=UTC)
    directory = _limited("team", SIGNUP, "40")
    month = InMemoryMonthToDate(directory, {("acct-1", "2026-12"): {(int(SIGNUP.timestamp()), "video"): 62_000}})
    downgraded = request_tier_change(
        directory, default_catalog().for_period(Period(2026, 11)), "acct-1", "personal", at, month=month, read_at=at
    )
    assert downgraded.tier_at(datetime(2026, 12, 1, tzinfo=UTC)) == "personal"


def test_given_the_cli_changing_tier_past_the_hard_limit_then_exit_2_naming_limit_and_bill(
    stack: Stack, capsys: pytest.CaptureFixture[str]
) -> None:
    """The CLI's own usage read (``dynamo_month`` on the moto usage table): Team, $100 hard limit, 91,667 video
    minutes; Enterprise from Nov 16 re-rates them to $112.00 (15/30: 25,000 included, 66,667 over = $48.00, + $14.50
    + $49.50): exit 2, one line naming the limit and the bill."""
    table = stack.template.physical_name("UsageTable")
    assert main(["account", "create", "--account", "acct_a", "--tier", "team", "--signup", "2026-11-01T00:00Z",
                 "--usage-table", table]) == 0  # fmt: skip
    assert main(["account", "budget", "--account", "acct_a", "--hard-limit-usd", "100", "--usage-table", table]) == 0
    put_counters(stack, "acct_a", {"video": 91_667})
    capsys.readouterr()
    with (
        time_machine.travel(datetime(2026, 11, 20, tzinfo=UTC), tick=False),  # November still running
        pytest.raises(SystemExit) as exited,
    ):
        main(["account", "change-tier", "acct_a", "enterprise", "--at", "2026-11-16T00:00:00Z", "--usage-table", table])
    assert exited.value.code == 2
    assert "changing to enterprise: hard limit $100 is not above $112.00" in capsys.readouterr().err


def test_given_the_cli_dating_an_upgrade_into_an_earlier_month_then_exit_2_naming_the_clock_months_bill(
    stack: Stack, capsys: pytest.CaptureFixture[str]
) -> None:
    """D150 amended (up), the CLI's own usage read (``dynamo_month`` on the moto usage table): run Dec 3 12:00,
    Personal, $40 hard limit, 100,000 GB of data transfer Dec 1-3, `--at` Nov 25 to Team. December re-rated as Team:
    $29.00 + 99,900 GB x $0.00012 ($11.988 -> $11.99) = $40.99 >= $40 (as Personal 99,990 GB -> $12.00): exit 2,
    one line naming the limit, the bill and December; the account stays on Personal."""
    table = stack.template.physical_name("UsageTable")
    assert main(["account", "create", "--account", "acct_a", "--tier", "personal", "--signup", "2026-11-01T00:00Z",
                 "--usage-table", table]) == 0  # fmt: skip
    assert main(["account", "budget", "--account", "acct_a", "--hard-limit-usd", "40", "--usage-table", table]) == 0
    put_counters(stack, "acct_a", {"data_transfer": TERABYTES_100}, period="2026-12")
    capsys.readouterr()
    with time_machine.travel(DECEMBER_3, tick=False), pytest.raises(SystemExit) as exited:
        main(["account", "change-tier", "acct_a", "team", "--at", "2026-11-25T00:00:00Z", "--usage-table", table])
    assert exited.value.code == 2
    assert (
        "changing to team: hard limit $40 is not above $40.99, December 2026's bill so far" in capsys.readouterr().err
    )
    shown = _cli(capsys, table, "show", "--account", "acct_a")
    assert shown["tiers"] == [{"from": "2026-11-01T00:00:00+00:00", "tier": "personal"}]  # nothing saved


def _enterprise_at_150() -> Catalog:
    """The shipped catalog with Enterprise's monthly fee at $150 (shipped: $99), for ``main(argv, catalog)``."""
    shipped = default_catalog().for_period(Period(2026, 11))
    return Catalog([
        shipped.model_copy(update={"tiers": tuple(
            tier.model_copy(update={"monthly_fee": Decimal("150")}) if tier.id == "enterprise" else tier
            for tier in shipped.tiers
        )})
    ])  # fmt: skip


def test_given_the_cli_run_with_its_own_catalog_then_a_tier_change_is_checked_against_that_catalogs_fees(
    stack: Stack, capsys: pytest.CaptureFixture[str]
) -> None:
    """Review (up) 4: ``main(argv, catalog)`` priced the change with its catalog but checked the limits against the
    shipped one. A catalog whose Enterprise fee is $150 (shipped: $99): Team, $120 hard limit, no usage, run Nov 20,
    `change-tier enterprise`: $120 is not above $150.00 - exit 2 naming that fee, Team kept (was exit 0: checked
    against $99 < $120)."""
    dearer = _enterprise_at_150()
    table = stack.template.physical_name("UsageTable")
    assert main(["account", "create", "--account", "acct_a", "--tier", "team", "--signup", "2026-11-01T00:00Z",
                 "--usage-table", table], dearer) == 0  # fmt: skip
    assert main(["account", "budget", "--account", "acct_a", "--hard-limit-usd", "120", "--usage-table", table]) == 0
    capsys.readouterr()
    with time_machine.travel(datetime(2026, 11, 20, tzinfo=UTC), tick=False), pytest.raises(SystemExit) as exited:
        main(["account", "change-tier", "acct_a", "enterprise", "--usage-table", table], dearer)
    assert exited.value.code == 2
    assert "changing to enterprise: hard limit $120 is not above the fixed monthly fee of $150.00" in (
        capsys.readouterr().err
    )
    shown = _cli(capsys, table, "show", "--account", "acct_a")
    assert shown["tiers"] == [{"from": "2026-11-01T00:00:00+00:00", "tier": "team"}]  # nothing saved


def test_given_the_cli_run_with_its_own_catalog_then_a_budget_is_checked_against_that_catalogs_fees(
    stack: Stack, capsys: pytest.CaptureFixture[str]
) -> None:
    """Review (up2) 4, the other caller: `account budget` under ``main(argv, catalog)`` with Enterprise at $150
    checked the limit against the shipped $99. Enterprise account, run Nov 20, `--hard-limit-usd 120`: $120 is not
    above $150.00 - exit 2 naming that fee, nothing saved (was exit 0, $120 saved)."""
    dearer = _enterprise_at_150()
    table = stack.template.physical_name("UsageTable")
    assert main(["account", "create", "--account", "acct_a", "--tier", "enterprise", "--signup", "2026-11-01T00:00Z",
                 "--usage-table", table], dearer) == 0  # fmt: skip
    capsys.readouterr()
    with time_machine.travel(datetime(2026, 11, 20, tzinfo=UTC), tick=False), pytest.raises(SystemExit) as exited:
        main(["account", "budget", "--account", "acct_a", "--hard-limit-usd", "120", "--usage-table", table], dearer)
    assert exited.value.code == 2
    assert "hard limit $120 is not above the fixed monthly fee of $150.00" in capsys.readouterr().err
    assert _cli(capsys, table, "show", "--account", "acct_a")["hard_limit_usd"] is None  # nothing saved


def test_given_the_usage_read_failing_when_the_cli_changes_tier_then_exit_4_with_one_line(
    stack: Stack, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    """Review e2 v2 (5), v3 (4): a usage table read failing in `account change-tier` was a traceback, then exit 2
    (bad input's code) with the usage banner. Nothing was wrong with the input: exit 4 (a service unavailable,
    rerun), stderr the one line and nothing else."""

    class Unreadable(InMemoryMonthToDate):
        def counters(self, account_id: str, period: str) -> Counters:
            raise StorageUnavailableError("ThrottlingException: rate exceeded")

    table = stack.template.physical_name("UsageTable")
    monkeypatch.setattr(cli_accounts, "dynamo_month", lambda _table, directory: Unreadable(directory))
    assert main(["account", "create", "--account", "acct_a", "--tier", "team", "--signup", "2026-11-01T00:00Z",
                 "--usage-table", table]) == 0  # fmt: skip
    assert main(["account", "budget", "--account", "acct_a", "--hard-limit-usd", "100", "--usage-table", table]) == 0
    capsys.readouterr()
    with time_machine.travel(datetime(2026, 11, 20, tzinfo=UTC), tick=False):  # November still running: read
        code = main(
            ["account", "change-tier", "acct_a", "enterprise", "--at", "2026-11-16T00:00:00Z", "--usage-table", table]
        )
    assert code == 4
    assert capsys.readouterr().err == "kilo-billing: storage unavailable: ThrottlingException: rate exceeded; rerun\n"


def test_given_the_cli_creating_an_account_with_a_budget_at_or_below_its_fee_then_exit_2_and_nothing_registered(
    stack: Stack, capsys: pytest.CaptureFixture[str]
) -> None:
    """``account create --budget-usd`` holds the same rule as every other way of setting a budget (D150): a Team
    account's budget of $29 is passed by the $29.00 fee alone; $30 is accepted; Personal has no fee."""
    table = stack.template.physical_name("UsageTable")
    create = ["account", "create", "--tier", "team", "--usage-table", table, "--budget-usd"]
    with pytest.raises(SystemExit) as exit_info:
        main([*create, "29", "--account", "acct-7"])
    assert exit_info.value.code == 2
    assert "budget $29 is not above the fixed monthly fee of $29.00" in capsys.readouterr().err
    with pytest.raises(SystemExit):  # nothing registered: the account is unknown
        main(["account", "show", "--account", "acct-7", "--usage-table", table])
    capsys.readouterr()
    assert (
        _cli(capsys, table, "create", "--account", "acct-7", "--tier", "team", "--budget-usd", "30")["budget_usd"]
        == "30"
    )
    personal = _cli(capsys, table, "create", "--account", "acct-8", "--tier", "personal", "--budget-usd", "5")
    assert personal["budget_usd"] == "5"


OCT_1, NOV_1, DEC_1, JAN_1 = (datetime(y, m, 1, tzinfo=UTC) for y, m in ((2026, 10), (2026, 11), (2026, 12), (2027, 1)))


def _refused_change(
    directory: InMemoryAccountDirectory,
    book: Period,
    tier: str,
    at: datetime,
    month: InMemoryMonthToDate,
    read_at: datetime,
) -> str:
    """acct-1's change to ``tier`` dated ``at``, checked with the shipped catalog's ``book``: refused, its message."""
    with pytest.raises(InvalidBudgetError) as refused:
        request_tier_change(
            directory, default_catalog().for_period(book), "acct-1", tier, at, month=month, read_at=read_at
        )
    return str(refused.value)


def _limited(tier: str, signup: datetime, hard: str) -> InMemoryAccountDirectory:
    directory = InMemoryAccountDirectory()
    register_account(directory, "acct-1", tier, signup, TIERS)
    set_budget(directory, "acct-1", BudgetChange(hard_limit_usd=Decimal(hard)))
    return directory


def test_each_month_its_own_book() -> None:
    """Review (up3): each month re-rated is rated with its own price book, not the clock's. A December book with
    markup 2.40 (video $0.00144 a minute, twice November's $0.00072). Personal since Nov 1, $40, 60,000 video minutes
    in November, `--at` Nov 25 to Team, run Dec 3. November with ITS book: before 55,000 over x $0.00072 = $39.60;
    with the change 56,000 over x $0.00072 = $40.32 + Team's 6/30 x $29 = $5.80 -> $46.12, refused. With December's
    book it would read $79.20 -> $86.44 (fails so with the clock's book for every month)."""
    shipped = default_catalog().for_period(Period(2026, 11))
    december = shipped.model_copy(update={"effective_from": date(2026, 12, 1), "markup": Decimal("2.40")})
    catalog = Catalog([shipped, december])
    directory = _limited("personal", NOV_1, "40")
    month = InMemoryMonthToDate(directory, {("acct-1", "2026-11"): {(int(NOV_1.timestamp()), "video"): 60_000}})
    with pytest.raises(InvalidBudgetError) as refused:
        request_tier_change(
            directory, catalog.for_period(Period(2026, 11)), "acct-1", "team", datetime(2026, 11, 25, tzinfo=UTC),
            month=month, read_at=DECEMBER_3, catalog=catalog,
        )  # fmt: skip
    assert "$46.12, November 2026's bill" in str(refused.value)
    assert "$39.60 before the change" in str(refused.value)


def test_month_over_already_over_and_raised_wording() -> None:
    """Team since Oct 1, $40, 70,000 video minutes in November; `--at` Oct 10 to Personal (in effect Nov 1), run
    Dec 3. November as Team: $29 + 20,000 over x $0.00072 ($14.40) = $43.40, over the limit already; as Personal
    (5,000 included, no fee) 65,000 x $0.00072 = $46.80, higher: refused, saying the bill is raised."""
    directory = _limited("team", OCT_1, "40")
    month = InMemoryMonthToDate(directory, {("acct-1", "2026-11"): {(int(NOV_1.timestamp()), "video"): 70_000}})
    refusal = _refused_change(
        directory, Period(2026, 10), "personal", datetime(2026, 10, 10, tzinfo=UTC), month, DECEMBER_3
    )
    assert refusal == (
        "changing to personal: hard limit $40 is not above $46.80, November 2026's bill re-rated with the change (in "
        "effect since 2026-11-01 00:00 UTC; $43.40 before the change): the month is over, not yet invoiced, and the "
        "month's bill, over the limit already, would be raised; raise the hard limit above $46.80, or clear it, "
        "before changing tier"
    )


def test_month_over_already_over_and_lowered_accepted() -> None:
    """Personal since Oct 1, $40, 70,000 video minutes in November; `--at` Oct 10 to Team, run Dec 3. October: no
    usage, Team's fee 22/31 x $29 = $20.58 < $40; November as Personal 65,000 x $0.00072 = $46.80 (over) -> as
    Team $29 + 20,000 x $0.00072 = $43.40, lowered: accepted (fails when a month over is refused at or past the
    limit whatever it was before); December as Team $29.00."""
    directory = _limited("personal", OCT_1, "40")
    month = InMemoryMonthToDate(directory, {("acct-1", "2026-11"): {(int(NOV_1.timestamp()), "video"): 70_000}})
    upgraded = request_tier_change(
        directory, default_catalog().for_period(Period(2026, 10)), "acct-1", "team",
        datetime(2026, 10, 10, tzinfo=UTC), month=month, read_at=DECEMBER_3,
    )  # fmt: skip
    assert upgraded.tier_at(NOV_1) == "team"
    assert directory.profiles["acct-1"].tier_at(NOV_1) == "team"  # saved


@pytest.mark.parametrize(
    ("period", "starts", "said"),
    [
        # the month over is December 2026, across the year
        pytest.param(
            "2026-12",
            DEC_1,
            (
                "$41.04, December 2026's bill re-rated",
                "(in effect since 2026-12-01 00:00 UTC; $37.64 before the change)",
            ),
            id="month-over-december",
        ),
        # the minutes in January 2027, the clock's month: refused as this month's bill (calls stopped)
        pytest.param("2027-01", JAN_1, ("$41.04, this month's bill so far",), id="clock-month-january"),
    ],
)
def test_year_boundary_the_month_the_minutes_fall_in_is_checked(
    period: str, starts: datetime, said: tuple[str, ...]
) -> None:
    """Team since Nov 1, $40, 62,000 video minutes in ``period``; `--at` Nov 10 to Personal (in effect Dec 1), run
    Jan 3 2027. As Team: $29 + 12,000 x $0.00072 = $37.64; as Personal 57,000 x $0.00072 = $41.04 >= $40: refused
    naming the month (December 2026, over) or this month's bill (January 2027)."""
    directory = _limited("team", NOV_1, "40")
    month = InMemoryMonthToDate(directory, {("acct-1", period): {(int(starts.timestamp()), "video"): 62_000}})
    refusal = _refused_change(
        directory,
        Period(2026, 11),
        "personal",
        datetime(2026, 11, 10, tzinfo=UTC),
        month,
        datetime(2027, 1, 3, tzinfo=UTC),
    )
    for words in said:
        assert words in refusal
