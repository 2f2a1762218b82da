"""`kilo-billing account ...`: register accounts, change their tier, budget and status, turn progressive billing on or
off (an account exists once it has a profile).

The usage table comes from ``--usage-table`` or ``USAGE_TABLE_NAME``; AWS credentials, region and endpoint
(``AWS_ENDPOINT_URL`` for the local stack) come from the usual AWS environment.
"""

from __future__ import annotations

import argparse
import os
from collections.abc import Callable
from datetime import UTC, datetime
from decimal import Decimal, InvalidOperation
from typing import Any

from kilo_billing.accounts import (
    ACCOUNT_STATUSES,
    BILLING_METHODS,
    TIER_CHANGE_MONTHS_BACK,
    AccountDirectory,
    AccountExistsError,
    AccountProfile,
    InvalidAccountIdError,
    InvoicedPeriodError,
    MidPeriodDowngradeError,
    TierChangeTooFarBackError,
    UnknownAccountError,
    progressive_threshold_problem,
    register_account,
    registered_profile,
    request_tier_change,
    set_progressive_threshold,
    set_status,
)
from kilo_billing.budgets import BudgetChange, InvalidBudgetError, apply_budget, set_budget
from kilo_billing.catalog import Catalog, UnknownTierError
from kilo_billing.month_to_date import MonthToDateSource
from kilo_billing.periods import Period
from kilo_billing.rating import RatingError, TierChange

_AT_HELP = (
    "when the change is requested (default: now; not in an invoiced period; in effect at most "
    f"{TIER_CHANGE_MONTHS_BACK} months before the clock's month: in January 2027 from 2026-11-01 on - a downgrade, in "
    "effect at the next period start, asked from 2026-10-01 on)"
)


def _instant(text: str) -> datetime:
    try:
        value = datetime.fromisoformat(text.replace("Z", "+00:00"))
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected an ISO-8601 time with a zone, got {text!r}") from None
    if value.tzinfo is None:
        raise argparse.ArgumentTypeError(f"time {text!r} needs a zone (e.g. 2026-11-01T00:00:00Z)")
    return value.astimezone(UTC)


def add_parser(sub: Any, decimal: Callable[[str], Any]) -> None:
    account = sub.add_parser("account", help="register billing accounts and change their tier")
    commands = account.add_subparsers(dest="account_command", required=True, parser_class=type(account))
    create = commands.add_parser("create", help="register an account (its profile: tier and signup time)")
    create.add_argument("--account", required=True, help="account id")
    create.add_argument("--tier", required=True, help="personal, team or enterprise")
    create.add_argument("--signup", type=_instant, help="signup time, ISO-8601 with zone (default: now)")
    create.add_argument("--budget-usd", type=decimal, help="monthly spending limit (optional)")
    create.add_argument(
        "--billing", choices=BILLING_METHODS, default="card", help="how invoices are paid: card (Stripe) or crypto"
    )
    tier = commands.add_parser("tier", help="change an account's tier (upgrades now, downgrades at period end)")
    tier.add_argument("--account", required=True)
    tier.add_argument("--tier", required=True)
    tier.add_argument("--at", type=_instant, help=_AT_HELP)
    budget = commands.add_parser(
        "budget", help="set the monthly budget: alert percentages (soft) and an optional hard limit that stops calls"
    )
    budget.add_argument("--account", required=True)
    amount = budget.add_mutually_exclusive_group()
    amount.add_argument("--budget-usd", type=decimal, help="the soft budget alerts are measured against")
    amount.add_argument("--no-budget", action="store_true", help="remove the soft budget")
    budget.add_argument("--alert-at", type=_percentages, help="alert percentages of the budget, e.g. 50,80,100")
    hard = budget.add_mutually_exclusive_group()
    hard.add_argument("--hard-limit-usd", type=decimal, help="new calls refused and running ones stopped from here")
    hard.add_argument("--no-hard-limit", action="store_true", help="remove the hard limit")
    status = commands.add_parser(
        "status", help="suspend, hold for abuse, mark past due, or make active (the entitlement check reads it)"
    )
    status.add_argument("--account", required=True)
    status.add_argument("--status", required=True, choices=ACCOUNT_STATUSES)
    change = commands.add_parser(
        "change-tier", help="change an account's tier: upgrades now (prorated), downgrades at the next period start"
    )
    change.add_argument("account", help="account id")
    change.add_argument("tier", help="personal, team or enterprise")
    change.add_argument("--at", type=_instant, help=_AT_HELP)
    progressive = commands.add_parser(
        "progressive",
        help="progressive billing: invoice the overage early once it reaches a threshold amount (decisions D56)",
    )
    progressive.add_argument("--account", required=True)
    threshold = progressive.add_mutually_exclusive_group(required=True)
    threshold.add_argument("--threshold-usd", type=_threshold, help="turn it on: the unbilled overage that is invoiced")
    threshold.add_argument("--off", action="store_true", help="turn it off (the period-end invoice bills it all)")
    show = commands.add_parser("show", help="an account's profile")
    show.add_argument("--account", required=True)
    for command in (create, tier, change, budget, status, progressive, show):
        command.add_argument("--usage-table", default=os.environ.get("USAGE_TABLE_NAME", ""))
        command.add_argument("--json", action="store_true", help="machine-readable output")


def _threshold(text: str) -> Decimal:
    try:
        value = Decimal(text)
    except InvalidOperation:
        raise argparse.ArgumentTypeError(f"--threshold-usd must be an amount, got {text!r}") from None
    problem = progressive_threshold_problem(value)
    if problem is not None:
        raise argparse.ArgumentTypeError(f"--threshold-usd {problem}")
    return value


def _percentages(text: str) -> tuple[int, ...]:
    try:
        return tuple(int(part) for part in text.split(","))
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected whole percentages separated by commas, got {text!r}") from None


def profile_json(profile: AccountProfile) -> dict[str, object]:
    return {
        "account_id": profile.account_id,
        "tiers": [{"from": change.at.isoformat(), "tier": change.tier} for change in profile.changes],
        "budget_usd": None if profile.budget_usd is None else str(profile.budget_usd),
        "budget_thresholds": list(profile.budget_thresholds),
        "hard_limit_usd": None if profile.hard_limit_usd is None else str(profile.hard_limit_usd),
        "status": profile.status,
        "billing_method": profile.billing_method,
        "progressive_threshold_usd": (
            None if profile.progressive_threshold_usd is None else str(profile.progressive_threshold_usd)
        ),
    }


def dynamo_directory(table: str) -> AccountDirectory:
    from kilo_billing.account_store import DynamoAccountDirectory  # noqa: PLC0415
    from kilo_billing_cli.clients import client  # noqa: PLC0415

    if not table:
        raise ValueError("the usage table is required: --usage-table or USAGE_TABLE_NAME")
    return DynamoAccountDirectory(client("dynamodb"), table)


def invoiced_periods(table: str, account_id: str) -> set[str]:
    """The periods the account's period-end invoices closed (one Query of its ledger)."""
    from kilo_billing.invoicing import closed_periods  # noqa: PLC0415
    from kilo_billing.periods_store import DynamoLedgerStore  # noqa: PLC0415
    from kilo_billing_cli.clients import client  # noqa: PLC0415

    return closed_periods(DynamoLedgerStore(client("dynamodb"), table).ledger(account_id).invoices.values())


def dynamo_month(table: str, directory: AccountDirectory) -> MonthToDateSource:
    """The accounts' month to date on the usage table (rating's counters and open sessions), as the account API reads
    it: a tier change's limits are checked against the bill re-rated with it (D150)."""
    from kilo_billing.month_to_date_store import DynamoMonthToDate  # noqa: PLC0415
    from kilo_billing.usage_signals_store import DynamoUsageSignals  # noqa: PLC0415
    from kilo_billing_cli.clients import client  # noqa: PLC0415

    dynamodb = client("dynamodb")
    return DynamoMonthToDate(dynamodb, table, directory, DynamoUsageSignals(dynamodb, table))


def run(
    args: argparse.Namespace,
    catalog: Catalog,
    directory: AccountDirectory | None = None,
    invoiced: Callable[[str], set[str]] | None = None,
    month: MonthToDateSource | None = None,
) -> dict[str, object]:
    """Do the command; errors a user can fix are ``ValueError`` (the caller prints them and exits 2); a storage read
    or write failing (``StorageUnavailableError``) is left to the caller (one line, exit 4: rerun). ``invoiced``:
    an account's invoiced periods (default: read from the usage table); a tier change dated in one is refused.
    ``month``: the accounts' month to date (default: read from the usage table), which a tier change's hard limit
    must stay above once re-rated with it."""
    now = datetime.now(UTC)
    try:
        directory = directory or dynamo_directory(args.usage_table)
        if args.account_command == "create":
            at = args.signup or now
            book = catalog.for_period(Period.containing(at))
            if args.budget_usd is not None and args.tier in book.tier_ids:  # above the fee, as every budget (D150)
                unsaved = AccountProfile(args.account, (TierChange(at.astimezone(UTC), args.tier),))
                apply_budget(unsaved, BudgetChange(budget_usd=args.budget_usd), at, catalog)
            profile = register_account(
                directory, args.account, args.tier, at, book.tier_ids, args.budget_usd, args.billing
            )
        elif args.account_command in ("tier", "change-tier"):
            at = args.at or now
            book = catalog.for_period(Period.containing(at))
            ledger = invoiced or (lambda account: invoiced_periods(args.usage_table, account))
            usage = month or dynamo_month(args.usage_table, directory)
            profile = request_tier_change(
                directory,
                book,
                args.account,
                args.tier,
                at,
                lambda: ledger(args.account),  # read on each attempt of the profile's retry (D150)
                month=usage,
                read_at=now,  # open sessions counted to the later of --at and now; --at at most 2 months back (D150)
                catalog=catalog,
            )
        elif args.account_command == "budget":
            change = BudgetChange(
                budget_usd=args.budget_usd,
                thresholds=args.alert_at,
                hard_limit_usd=args.hard_limit_usd,
                clear_budget=args.no_budget,
                clear_hard_limit=args.no_hard_limit,
            )
            profile = set_budget(directory, args.account, change, now=now, catalog=catalog)  # its fees (D150)
        elif args.account_command == "status":
            profile = set_status(directory, args.account, args.status)
        elif args.account_command == "progressive":
            profile = set_progressive_threshold(directory, args.account, None if args.off else args.threshold_usd)
        else:
            profile = registered_profile(directory, args.account)
    except (
        AccountExistsError,
        UnknownAccountError,
        InvalidAccountIdError,
        InvalidBudgetError,
        UnknownTierError,
        RatingError,
        MidPeriodDowngradeError,
        InvoicedPeriodError,
        TierChangeTooFarBackError,
    ) as exc:
        raise ValueError(str(exc)) from exc
    return profile_json(profile)
