"""`kilo-billing account ...`: register accounts and change their tier (an account exists once it has a profile).

The usage table comes from ``--usage-table`` or ``USAGE_TABLE_NAME``; AWS credentials, region and endpoint
(``AWS_ENDPOINT_URL`` for the local stack) come from the usual AWS environment.
"""

from __future__ import annotations

import argparse
import os
from collections.abc import Callable
from datetime import UTC, datetime
from typing import Any

from kilo_billing.accounts import (
    AccountDirectory,
    AccountExistsError,
    AccountProfile,
    InvalidAccountIdError,
    MidPeriodDowngradeError,
    UnknownAccountError,
    register_account,
    request_tier_change,
)
from kilo_billing.catalog import Catalog, UnknownTierError
from kilo_billing.periods import Period
from kilo_billing.rating import RatingError


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
    tier = commands.add_parser("tier", help="change an account's tier (upgrades now, downgrades at period end)")
    tier.add_argument("--account", required=True)
    tier.add_argument("--tier", required=True)
    tier.add_argument("--at", type=_instant, help="when the change is requested (default: now)")
    change = commands.add_parser(
        "change-tier", help="change an account's tier: upgrades now (prorated), downgrades at the next period start"
    )
    change.add_argument("account", help="account id")
    change.add_argument("tier", help="personal, team or enterprise")
    change.add_argument("--at", type=_instant, help="when the change is requested (default: now)")
    show = commands.add_parser("show", help="an account's profile")
    show.add_argument("--account", required=True)
    for command in (create, tier, change, show):
        command.add_argument("--usage-table", default=os.environ.get("USAGE_TABLE_NAME", ""))
        command.add_argument("--json", action="store_true", help="machine-readable output")


def profile_json(profile: AccountProfile) -> dict[str, object]:
    return {
        "account_id": profile.account_id,
        "tiers": [{"from": change.at.isoformat(), "tier": change.tier} for change in profile.changes],
        "budget_usd": None if profile.budget_usd is None else str(profile.budget_usd),
        "budget_thresholds": list(profile.budget_thresholds),
    }


def dynamo_directory(table: str) -> AccountDirectory:
    from kilo_billing.account_store import DynamoAccountDirectory  # noqa: PLC0415
    from kilo_billing.aws import client  # noqa: PLC0415

    if not table:
        raise ValueError("the usage table is required: --usage-table or USAGE_TABLE_NAME")
    return DynamoAccountDirectory(client("dynamodb"), table)


def run(args: argparse.Namespace, catalog: Catalog, directory: AccountDirectory | None = None) -> dict[str, object]:
    """Do the command; errors a user can fix are ``ValueError`` (the caller prints them and exits 2)."""
    now = datetime.now(UTC)
    try:
        directory = directory or dynamo_directory(args.usage_table)
        if args.account_command == "create":
            at = args.signup or now
            book = catalog.for_period(Period.containing(at))
            profile = register_account(directory, args.account, args.tier, at, book.tier_ids, args.budget_usd)
        elif args.account_command in ("tier", "change-tier"):
            at = args.at or now
            book = catalog.for_period(Period.containing(at))
            profile = request_tier_change(directory, book, args.account, args.tier, at)
        else:
            profile = directory.registered([args.account]).get(args.account)  # type: ignore[assignment]
            if profile is None:
                raise UnknownAccountError(f"account {args.account!r} is not registered")
    except (
        AccountExistsError,
        UnknownAccountError,
        InvalidAccountIdError,
        UnknownTierError,
        RatingError,
        MidPeriodDowngradeError,
    ) as exc:
        raise ValueError(str(exc)) from exc
    return profile_json(profile)
