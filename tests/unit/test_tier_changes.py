"""Tier changes (Given/When/Then): upgrades at once, downgrades at the next period start, and no path can store a
downgrade inside a period (the DynamoDB directory refuses it, whoever writes)."""

from __future__ import annotations

import json
from datetime import UTC, datetime

import pytest
import time_machine

from kilo_billing.account_store import DynamoAccountDirectory
from kilo_billing.accounts import AccountProfile, MidPeriodDowngradeError, register_account, request_tier_change
from kilo_billing.catalog import default_catalog
from kilo_billing.rating import TierChange
from kilo_billing_cli.main import main
from tests.account_api_fakes import NO_USAGE
from tests.conftest import Stack

SIGNUP = datetime(2026, 3, 1, tzinfo=UTC)
MID = datetime(2026, 3, 15, 12, tzinfo=UTC)
BOOK = default_catalog().latest


@pytest.fixture
def directory(stack: Stack) -> DynamoAccountDirectory:
    return DynamoAccountDirectory(stack.clients["dynamodb"], stack.template.physical_name("UsageTable"))


def test_given_team_when_upgraded_mid_month_then_enterprise_from_the_request(directory: DynamoAccountDirectory) -> None:
    register_account(directory, "acme", "team", SIGNUP, BOOK.tier_ids)
    profile = request_tier_change(directory, BOOK, "acme", "enterprise", MID, month=NO_USAGE)
    assert profile.changes[-1] == TierChange(MID, "enterprise")


def test_given_team_when_downgrade_requested_mid_month_then_from_the_next_period(
    directory: DynamoAccountDirectory,
) -> None:
    register_account(directory, "acme", "team", SIGNUP, BOOK.tier_ids)
    profile = request_tier_change(directory, BOOK, "acme", "personal", MID, month=NO_USAGE)
    assert profile.changes[-1] == TierChange(datetime(2026, 4, 1, tzinfo=UTC), "personal")
    assert directory.registered(["acme"])["acme"].tier_at(MID) == "team"


def test_given_any_writer_when_it_stores_a_mid_period_downgrade_then_refused(directory: DynamoAccountDirectory) -> None:
    register_account(directory, "acme", "team", SIGNUP, BOOK.tier_ids)
    bad = AccountProfile("acme", (TierChange(SIGNUP, "team"), TierChange(MID, "personal")))
    with pytest.raises(MidPeriodDowngradeError):
        directory.save(bad)
    assert directory.registered(["acme"])["acme"].changes == (TierChange(SIGNUP, "team"),)


def test_given_the_cli_when_change_tier_downgrades_then_it_prints_the_next_period_start(
    directory: DynamoAccountDirectory, capsys: pytest.CaptureFixture[str]
) -> None:
    register_account(directory, "acme", "team", SIGNUP, BOOK.tier_ids)
    table = directory._table
    argv = ["account", "change-tier", "acme", "personal", "--at", MID.isoformat(), "--usage-table", table, "--json"]
    with time_machine.travel(MID, tick=False):  # run in March: the CLI dates a change back at most 2 months (D150)
        assert main(argv) == 0
    shown = json.loads(capsys.readouterr().out)
    assert shown["tiers"][-1] == {"from": "2026-04-01T00:00:00+00:00", "tier": "personal"}
