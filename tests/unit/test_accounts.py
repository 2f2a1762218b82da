"""Accounts: one id grammar for every reader, reserved ids, registration and tier changes (operator CLI on moto)."""

from __future__ import annotations

import argparse
import hashlib
import json
from dataclasses import dataclass, field, replace
from datetime import UTC, datetime
from decimal import Decimal

import pytest
import time_machine

from kilo_billing.account_store import DynamoAccountDirectory
from kilo_billing.accounts import (
    AccountExistsError,
    AccountProfile,
    InvalidAccountIdError,
    InvoicedPeriodError,
    UnknownAccountError,
    change_tier,
    check_account_id,
    is_account_id,
    is_pseudonym,
    pseudonym,
    register_account,
    request_tier_change,
)
from kilo_billing.budgets import BudgetChange, set_budget
from kilo_billing.catalog import default_catalog
from kilo_billing.invoicing import compose_close
from kilo_billing.periods import Period
from kilo_billing.periods_store import DynamoLedgerStore
from kilo_billing.rating import TierChange
from kilo_billing.usage_signals import Counters
from kilo_billing_cli import accounts as cli_accounts
from kilo_billing_cli.main import main
from tests.account_api_fakes import NO_USAGE, InMemoryMonthToDate
from tests.conftest import Stack
from tests.fakes import InMemoryAccountDirectory

TIERS = ("personal", "team", "enterprise")


@pytest.mark.parametrize(
    "value", ["acct_1", "org:7", "user@example.com", "a", "A+b=c-d.e", "9" * 128, "team-42", "Unattributed-2"]
)
def test_given_a_well_formed_id_then_it_is_an_account_id(value: str) -> None:
    assert is_account_id(value)
    assert check_account_id(value) == value


@pytest.mark.parametrize(
    ("value", "reason"),
    [
        ("org/1", "must be 1-128"),  # "/" was accepted by the usage API and refused by attribution: now by both
        ("", "must be 1-128"),
        ("-leading", "must be 1-128"),
        ("has space", "must be 1-128"),
        ("pk#injection", "must be 1-128"),
        ("9" * 129, "must be 1-128"),
        ("unattributed", "reserved"),
        ("UNATTRIBUTED", "reserved"),
        ("system", "reserved"),
    ],
)
def test_given_a_malformed_or_reserved_id_then_refused_with_the_reason(value: str, reason: str) -> None:
    assert not is_account_id(value)
    with pytest.raises(InvalidAccountIdError, match=reason):
        check_account_id(value)


SIGNUP = datetime(2026, 11, 3, 9, 0, tzinfo=UTC)


def test_given_a_new_account_when_registered_then_its_tier_history_starts_at_signup() -> None:
    directory = InMemoryAccountDirectory()
    profile = register_account(directory, "acct-1", "team", SIGNUP, TIERS)
    assert profile.changes == (TierChange(SIGNUP, "team"),)
    assert directory.registered(["acct-1"]) == {"acct-1": profile}
    with pytest.raises(AccountExistsError):
        register_account(directory, "acct-1", "enterprise", SIGNUP, TIERS)


@pytest.mark.parametrize(
    ("account", "tier", "message"),
    [("unattributed", "team", "reserved"), ("org/1", "team", "must be 1-128"), ("acct-2", "gold", "unknown tier")],
)
def test_given_bad_registration_input_then_nothing_is_registered(account: str, tier: str, message: str) -> None:
    directory = InMemoryAccountDirectory()
    with pytest.raises(ValueError, match=message):
        register_account(directory, account, tier, SIGNUP, TIERS)
    assert directory.profiles == {}


def test_given_a_tier_change_before_a_later_one_then_refused() -> None:
    directory = InMemoryAccountDirectory()
    register_account(directory, "acct-1", "team", SIGNUP, TIERS)
    change_tier(directory, "acct-1", TierChange(datetime(2026, 11, 20, tzinfo=UTC), "enterprise"))
    with pytest.raises(ValueError, match="already has a tier change after"):
        change_tier(directory, "acct-1", TierChange(datetime(2026, 11, 10, tzinfo=UTC), "enterprise"))
    with pytest.raises(UnknownAccountError):
        change_tier(directory, "ghost", TierChange(SIGNUP, "team"))


def test_given_an_invoiced_period_then_a_tier_change_dated_in_it_is_refused_naming_it() -> None:
    directory = InMemoryAccountDirectory()
    signup = datetime(2026, 9, 1, tzinfo=UTC)
    register_account(directory, "acct-1", "personal", signup, TIERS)
    book = default_catalog().for_period(Period(2026, 11))
    invoiced = {"2026-09", "2026-10"}
    backdated = datetime(2026, 10, 16, tzinfo=UTC)
    with pytest.raises(InvoicedPeriodError, match=r"falls in 2026-10, which is already invoiced.* 2026-11 or later"):
        request_tier_change(directory, book, "acct-1", "team", backdated, invoiced, month=NO_USAGE)
    with pytest.raises(InvoicedPeriodError, match="falls in 2026-09"):
        change_tier(directory, "acct-1", TierChange(datetime(2026, 9, 30, tzinfo=UTC), "team"), invoiced)
    assert directory.profiles["acct-1"].changes == (TierChange(signup, "personal"),)
    # the first instant of the next period is not invoiced; a downgrade asked for in October takes effect on Nov 1
    up = request_tier_change(
        directory, book, "acct-1", "team", datetime(2026, 11, 1, tzinfo=UTC), invoiced, month=NO_USAGE
    )
    assert up.changes[-1] == TierChange(datetime(2026, 11, 1, tzinfo=UTC), "team")
    directory.profiles["acct-1"] = AccountProfile("acct-1", (TierChange(signup, "team"),))  # a team account
    down = request_tier_change(directory, book, "acct-1", "personal", backdated, invoiced, month=NO_USAGE)
    assert down.changes[-1] == TierChange(datetime(2026, 11, 1, tzinfo=UTC), "personal")


def _cli(capsys: pytest.CaptureFixture[str], table: str, *argv: str) -> dict[str, object]:
    assert main(["account", *argv, "--usage-table", table, "--json"]) == 0
    result = json.loads(capsys.readouterr().out)
    assert isinstance(result, dict)
    return result


def test_given_the_cli_when_creating_and_upgrading_then_the_profile_on_dynamodb_shows_both(
    stack: Stack, capsys: pytest.CaptureFixture[str]
) -> None:
    table = stack.template.physical_name("UsageTable")
    created = _cli(capsys, table, "create", "--account", "acct-9", "--tier", "team", "--signup", "2026-11-01T00:00Z")
    assert created["tiers"] == [{"from": "2026-11-01T00:00:00+00:00", "tier": "team"}]
    # an upgrade takes effect when requested; a downgrade at the next period start (D3). Run on Nov 20 2026: the CLI
    # dates a change back at most 2 months (D150), so on the real clock November is refused from 1 Feb 2027
    with time_machine.travel(datetime(2026, 11, 20, 12, tzinfo=UTC), tick=False):
        _cli(capsys, table, "tier", "--account", "acct-9", "--tier", "enterprise", "--at", "2026-11-16T12:00:00Z")
        shown = _cli(capsys, table, "tier", "--account", "acct-9", "--tier", "personal", "--at", "2026-11-20T00:00Z")
    assert shown["tiers"] == [
        {"from": "2026-11-01T00:00:00+00:00", "tier": "team"},
        {"from": "2026-11-16T12:00:00+00:00", "tier": "enterprise"},
        {"from": "2026-12-01T00:00:00+00:00", "tier": "personal"},
    ]
    assert _cli(capsys, table, "show", "--account", "acct-9") == shown


def test_given_the_cli_when_progressive_billing_is_turned_on_and_off_then_the_profile_on_dynamodb_holds_it(
    stack: Stack, capsys: pytest.CaptureFixture[str]
) -> None:
    table = stack.template.physical_name("UsageTable")
    created = _cli(capsys, table, "create", "--account", "acct-9", "--tier", "team", "--signup", "2026-11-01T00:00Z")
    assert created["progressive_threshold_usd"] is None  # off unless asked for (D56)
    on = _cli(capsys, table, "progressive", "--account", "acct-9", "--threshold-usd", "25.50")
    assert on["progressive_threshold_usd"] == "25.50"
    stored = DynamoAccountDirectory(stack.clients["dynamodb"], table).registered(["acct-9"])["acct-9"]
    assert stored.progressive_threshold_usd == Decimal("25.50")  # what the invoice worker's early check reads
    assert on["tiers"] == created["tiers"]  # nothing else of the profile changed
    off = _cli(capsys, table, "progressive", "--account", "acct-9", "--off")
    assert off["progressive_threshold_usd"] is None
    assert _cli(capsys, table, "show", "--account", "acct-9") == off
    exponent = _cli(capsys, table, "progressive", "--account", "acct-9", "--threshold-usd", "1E+2")
    assert exponent["progressive_threshold_usd"] == "100.00"  # whole cents, stored as such


@pytest.mark.parametrize(
    ("argv", "message"),
    [
        (["progressive", "--account", "acct-1", "--threshold-usd", "0"], "must be from 1.00 to 1000000.00 USD, got 0"),
        (["progressive", "--account", "acct-1", "--threshold-usd", "-5"], "must be from 1.00 to 1000000.00 USD"),
        (["progressive", "--account", "acct-1", "--threshold-usd", "1e-9"], "must be from 1.00 to 1000000.00 USD"),
        (["progressive", "--account", "acct-1", "--threshold-usd", "0.001"], "must be from 1.00 to 1000000.00 USD"),
        (["progressive", "--account", "acct-1", "--threshold-usd", "0.99"], "must be from 1.00 to 1000000.00 USD"),
        (["progressive", "--account", "acct-1", "--threshold-usd", "1E+200"], "must be from 1.00 to 1000000.00 USD"),
        (["progressive", "--account", "acct-1", "--threshold-usd", "1000000.01"], "must be from 1.00 to 1000000.00"),
        (["progressive", "--account", "acct-1", "--threshold-usd", "25.505"], "must be a whole number of cents"),
        (["progressive", "--account", "acct-1", "--threshold-usd", "Infinity"], "must be an amount in USD"),
        (["progressive", "--account", "acct-1", "--threshold-usd", "lots"], "must be an amount"),
        (["progressive", "--account", "acct-1"], "one of the arguments --threshold-usd --off is required"),
        (["progressive", "--account", "ghost", "--threshold-usd", "10"], "not registered"),
    ],
)
def test_given_bad_progressive_input_then_exit_2_naming_the_problem_and_nothing_saved(
    stack: Stack, capsys: pytest.CaptureFixture[str], argv: list[str], message: str
) -> None:
    table = stack.template.physical_name("UsageTable")
    _cli(capsys, table, "create", "--account", "acct-1", "--tier", "team", "--signup", "2026-11-01T00:00Z")
    with pytest.raises(SystemExit) as exit_info:
        main(["account", *argv, "--usage-table", table])
    assert exit_info.value.code == 2
    assert message in capsys.readouterr().err
    directory = DynamoAccountDirectory(stack.clients["dynamodb"], table)
    assert list(directory.registered(["acct-1", "ghost"])) == ["acct-1"]
    assert directory.registered(["acct-1"])["acct-1"].progressive_threshold_usd is None


@pytest.mark.parametrize(
    ("argv", "message"),
    [
        (["create", "--account", "unattributed", "--tier", "team"], "reserved"),
        (["create", "--account", "acct-1", "--tier", "gold"], "gold"),
        (["tier", "--account", "ghost", "--tier", "team"], "not registered"),
        (["show", "--account", "ghost"], "not registered"),
        (["create", "--account", "acct-1", "--tier", "team", "--signup", "2026-11-01T00:00"], "needs a zone"),
    ],
)
def test_given_bad_cli_input_then_exit_2_naming_the_problem(
    stack: Stack, capsys: pytest.CaptureFixture[str], argv: list[str], message: str
) -> None:
    table = stack.template.physical_name("UsageTable")
    with pytest.raises(SystemExit) as exit_info:
        main(["account", *argv, "--usage-table", table])
    assert exit_info.value.code == 2
    assert message in capsys.readouterr().err
    assert [item for item in stack.table_items("UsageTable") if item["sk"]["S"] == "PROFILE"] == []


def test_given_a_closed_month_when_the_cli_backdates_a_tier_change_into_it_then_exit_2_naming_the_month(
    stack: Stack, capsys: pytest.CaptureFixture[str]
) -> None:
    table = stack.template.physical_name("UsageTable")
    _cli(capsys, table, "create", "--account", "acct-9", "--tier", "personal", "--signup", "2026-10-01T00:00Z")
    store = DynamoLedgerStore(stack.clients["dynamodb"], table)
    october = Period(2026, 10)
    draft = compose_close(store.ledger("acct-9"), october, default_catalog(), october.end)
    assert draft is not None
    store.create_invoice(draft)  # October's invoice, as the close writes it
    with time_machine.travel(DECEMBER_3, tick=False):  # the CLI dates a change back at most 2 months (D150)
        with pytest.raises(SystemExit) as exit_info:
            main(["account", "change-tier", "acct-9", "team", "--at", "2026-10-16T00:00:00Z", "--usage-table", table])
        assert exit_info.value.code == 2
        assert "falls in 2026-10, which is already invoiced" in capsys.readouterr().err
        shown = _cli(capsys, table, "change-tier", "acct-9", "team", "--at", "2026-11-02T00:00:00Z")
    assert shown["tiers"] == [
        {"from": "2026-10-01T00:00:00+00:00", "tier": "personal"},
        {"from": "2026-11-02T00:00:00+00:00", "tier": "team"},
    ]


def test_given_a_value_that_only_starts_like_a_pseudonym_then_it_gets_one_and_a_pseudonym_stays_as_it_is() -> None:
    """D80: a pseudonym stays a pseudonym, but an identity chosen as ``erased-...`` is personal data like any other."""
    # D80's formula written out: "erased-" and the first 16 hex digits of sha256(account NUL value)
    jane = "erased-" + hashlib.sha256(b"acct_1\x00erased-jane@example.com").hexdigest()[:16]
    assert pseudonym("acct_1", "erased-jane@example.com") == jane
    assert pseudonym("acct_1", jane) == jane
    assert pseudonym("acct_2", jane) == jane  # whichever account's: the hash is not reversed
    assert pseudonym("acct_1", "") == ""
    assert (is_pseudonym(jane), is_pseudonym("erased-jane@example.com"), is_pseudonym("")) == (True, False, False)
    # the exact shape ``pseudonym`` produces: 16 lower-case hex digits, nothing before or after
    shapes = [
        "erased-0123456789ABCDEF",
        "erased-0123456789abcde",
        "erased-0123456789abcdef0",
        "xerased-0123456789abcdef",
    ]
    assert [is_pseudonym(value) for value in shapes] == [False, False, False, False]
    assert all(pseudonym("acct_1", value) != value for value in shapes)


DECEMBER_3 = datetime(2026, 12, 3, 12, tzinfo=UTC)


def _change_tier(tier: str, at: datetime) -> argparse.Namespace:
    """``kilo-billing account change-tier acct-1 <tier> --at <at>``, as parsed."""
    return argparse.Namespace(account_command="change-tier", account="acct-1", tier=tier, at=at, usage_table="")


class _RacedByTheInvoiceRun(InMemoryAccountDirectory):
    """A directory whose first save finds the profile saved by another writer meanwhile (its version moved on, as an
    abuse hold or a budget edit would), while the invoice run closed November in between: ``invoiced`` is what the
    account's ledger answers at each read."""

    def __init__(self, *profiles: AccountProfile) -> None:
        super().__init__(*profiles)
        self.invoiced: set[str] = set()
        self.saves = 0

    def save(self, profile: AccountProfile) -> AccountProfile:
        self.saves += 1
        if self.saves == 1:
            stored = self.profiles[profile.account_id]
            self.profiles[profile.account_id] = replace(stored, version=stored.version + 1)  # another writer
            self.invoiced.add("2026-11")  # November's invoice, closed by the invoice run meanwhile
        return super().save(profile)


def test_given_a_period_invoiced_between_the_read_and_the_retry_then_the_cli_tier_change_is_refused() -> None:
    """D150 amended (cx): the CLI read the invoiced periods once, outside the profile's optimistic retry; a period
    invoiced between that read and the retry was not seen. Personal since Oct 1, `change-tier team --at 2026-11-20`
    run Dec 3: the first save meets another writer's save, and November was invoiced meanwhile - the retry re-reads
    the ledger and refuses the change dated in November (was: saved on the retry, after November's invoice)."""
    directory = _RacedByTheInvoiceRun(
        AccountProfile("acct-1", (TierChange(datetime(2026, 10, 1, tzinfo=UTC), "personal"),))
    )
    with time_machine.travel(DECEMBER_3, tick=False), pytest.raises(ValueError, match="falls in 2026-11") as refused:
        cli_accounts.run(
            _change_tier("team", datetime(2026, 11, 20, tzinfo=UTC)),
            default_catalog(),
            directory,
            lambda _account: set(directory.invoiced),
            NO_USAGE,
        )
    assert "falls in 2026-11, which is already invoiced" in str(refused.value)
    assert directory.saves == 1  # the retry saved nothing
    assert directory.profiles["acct-1"].changes == (TierChange(datetime(2026, 10, 1, tzinfo=UTC), "personal"),)


@dataclass
class _CountingMonth(InMemoryMonthToDate):
    """A month to date recording which months' counters are read."""

    read: list[str] = field(default_factory=list)

    def counters(self, account_id: str, period: str) -> Counters:
        self.read.append(period)
        return super().counters(account_id, period)


def test_given_an_account_never_invoiced_then_a_change_dated_further_back_than_two_months_is_refused_unread() -> None:
    """D150 amended (cx): an account never invoiced could date a change back to its signup, and the limits' check
    re-rated every month since, one by one. The CLI dates a change back at most two months before the clock's month:
    run Dec 3 2026, the earliest month a change may take effect in is 2026-12 - 2 = 2026-10. Personal since Jan 1,
    $100 hard limit, `change-tier team --at 2026-09-30T23:00Z` takes effect then (an upgrade: at once), in 2026-09 -
    refused before any month is read (was: accepted after reading September to December). `--at 2026-10-01T00:00Z`
    is accepted (the bound's first instant), and a downgrade asked on Sep 10 takes effect on Oct 1: accepted."""
    signup = datetime(2026, 1, 1, tzinfo=UTC)
    directory = InMemoryAccountDirectory(AccountProfile("acct-1", (TierChange(signup, "personal"),)))
    set_budget(directory, "acct-1", BudgetChange(hard_limit_usd=Decimal("100")))
    month = _CountingMonth(directory)
    never = set[str]
    with time_machine.travel(DECEMBER_3, tick=False):
        with pytest.raises(ValueError, match="takes effect in 2026-09") as refused:
            cli_accounts.run(_change_tier("team", datetime(2026, 9, 30, 23, tzinfo=UTC)), default_catalog(),
                             directory, lambda _account: never(), month)  # fmt: skip
        assert str(refused.value) == (
            "a tier change at 2026-09-30T23:00:00+00:00 takes effect in 2026-09, more than 2 months before the "
            "clock's 2026-12: the CLI dates a change back at most to 2026-10 (every month from the change on is "
            "re-rated for the hard limit); date it 2026-10-01T00:00:00+00:00 or later"
        )
        assert month.read == []  # refused before any month is read
        assert directory.profiles["acct-1"].changes == (TierChange(signup, "personal"),)
        shown = cli_accounts.run(_change_tier("team", datetime(2026, 10, 1, tzinfo=UTC)), default_catalog(),
                                 directory, lambda _account: never(), month)  # fmt: skip
        assert shown["tiers"][-1] == {"from": "2026-10-01T00:00:00+00:00", "tier": "team"}
    team = InMemoryAccountDirectory(AccountProfile("acct-1", (TierChange(signup, "team"),)))
    with time_machine.travel(DECEMBER_3, tick=False):
        down = cli_accounts.run(_change_tier("personal", datetime(2026, 9, 10, tzinfo=UTC)), default_catalog(),
                                team, lambda _account: never(), InMemoryMonthToDate(team))  # fmt: skip
    assert down["tiers"][-1] == {"from": "2026-10-01T00:00:00+00:00", "tier": "personal"}


def test_given_a_downgrade_refused_by_the_two_month_bound_then_it_names_the_at_typed_and_earliest_accepted() -> None:
    """Review (cx) 3: a downgrade takes effect at the next period start, so the bound's message named the effective
    date as "a tier change at 2026-09-01" (not the --at typed) and advised "date it 2026-10-01 or later" - which, for
    a downgrade, takes effect on Nov 1, a month later than needed. Team since Jan 1, run Dec 3 2026: the earliest month
    a change may take effect in is 2026-12 - 2 = 2026-10. `change-tier personal --at 2026-08-15` takes effect Sep 1
    (2026-09 < 2026-10): refused, naming Aug 15 and Sep 1; a downgrade asked on Sep 1 00:00 (the first instant of
    2026-10 - 1 = 2026-09) takes effect Oct 1: the earliest --at accepted, and it is."""
    signup = datetime(2026, 1, 1, tzinfo=UTC)
    team = InMemoryAccountDirectory(AccountProfile("acct-1", (TierChange(signup, "team"),)))
    never = set[str]
    with time_machine.travel(DECEMBER_3, tick=False):
        with pytest.raises(ValueError, match="takes effect") as refused:
            cli_accounts.run(_change_tier("personal", datetime(2026, 8, 15, tzinfo=UTC)), default_catalog(),
                             team, lambda _account: never(), InMemoryMonthToDate(team))  # fmt: skip
        assert str(refused.value) == (
            "a downgrade asked for at 2026-08-15T00:00:00+00:00 takes effect at the next period start, "
            "2026-09-01T00:00:00+00:00, in 2026-09, more than 2 months before the clock's 2026-12: the CLI dates a "
            "change back at most to 2026-10 (every month from the change on is re-rated for the hard limit); ask for "
            "the downgrade at 2026-09-01T00:00:00+00:00 or later (in effect from 2026-10-01T00:00:00+00:00)"
        )
        assert team.profiles["acct-1"].changes == (TierChange(signup, "team"),)
        down = cli_accounts.run(_change_tier("personal", datetime(2026, 9, 1, tzinfo=UTC)), default_catalog(),
                                team, lambda _account: never(), InMemoryMonthToDate(team))  # fmt: skip
    assert down["tiers"][-1] == {"from": "2026-10-01T00:00:00+00:00", "tier": "personal"}


@pytest.mark.parametrize("command", ["change-tier", "tier"])
def test_given_tier_change_help_then_at_names_the_two_month_bound(
    command: str, capsys: pytest.CaptureFixture[str]
) -> None:
    """Review (cx2) 5: `--at`'s help said only "not in an invoiced period"; the two-month bound (D150 amended (cx))
    was learnt from a refusal. Its example, hand-worked: in January 2027 the earliest month is 2027-01 - 2 = 2026-11,
    a change in effect from 2026-11-01; a downgrade takes effect at the next period start, so asked from 2026-10-01."""
    with pytest.raises(SystemExit):
        main(["account", command, "--help"])

    shown = " ".join(capsys.readouterr().out.split())
    assert (
        "--at AT when the change is requested (default: now; not in an invoiced period; in effect at most 2 months "
        "before the clock's month: in January 2027 from 2026-11-01 on - a downgrade, in effect at the next period "
        "start, asked from 2026-10-01 on)"
    ) in shown
