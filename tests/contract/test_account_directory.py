"""One contract, two implementations of the account directory: the in-memory fake and DynamoDB (moto, template's
usage table)."""

from __future__ import annotations

from datetime import UTC, datetime
from decimal import Decimal

import pytest

from kilo_billing.account_store import DynamoAccountDirectory
from kilo_billing.accounts import AccountDirectory, AccountExistsError, AccountProfile, UnknownAccountError
from kilo_billing.rating import TierChange
from tests.conftest import Stack
from tests.fakes import InMemoryAccountDirectory

SIGNUP = datetime(2026, 3, 4, 5, 6, 7, tzinfo=UTC)


@pytest.fixture(params=["fake", "dynamodb"])
def directory(request: pytest.FixtureRequest) -> AccountDirectory:
    if request.param == "fake":
        return InMemoryAccountDirectory()
    stack: Stack = request.getfixturevalue("stack")
    return DynamoAccountDirectory(stack.clients["dynamodb"], stack.template.physical_name("UsageTable"))


def team(account: str, budget: Decimal | None = None) -> AccountProfile:
    return AccountProfile(account, (TierChange(SIGNUP, "team"),), budget, (25, 90))


def test_given_nothing_registered_then_no_profile_is_found(directory: AccountDirectory) -> None:
    assert directory.registered(["acct-a", "acct-b"]) == {}


def test_given_a_registered_account_then_its_profile_reads_back_exactly(directory: AccountDirectory) -> None:
    profile = AccountProfile(
        "org:7@x",
        (TierChange(SIGNUP, "team"), TierChange(datetime(2026, 3, 20, tzinfo=UTC), "enterprise")),
        Decimal("123.45"),
        (25, 90),
    )
    directory.register(profile)
    directory.register(team("other"))
    assert directory.registered(["org:7@x", "missing"]) == {"org:7@x": profile}


def test_given_a_registered_account_when_registered_again_then_refused_and_unchanged(
    directory: AccountDirectory,
) -> None:
    directory.register(team("acct-a", Decimal(10)))
    with pytest.raises(AccountExistsError):
        directory.register(team("acct-a", Decimal(99)))
    assert directory.registered(["acct-a"])["acct-a"].budget_usd == Decimal(10)


def test_given_a_registered_account_when_saved_then_replaced(directory: AccountDirectory) -> None:
    directory.register(team("acct-a"))
    upgraded = AccountProfile("acct-a", (TierChange(SIGNUP, "team"), TierChange(SIGNUP.replace(day=9), "enterprise")))
    directory.save(upgraded)
    assert directory.registered(["acct-a"]) == {"acct-a": upgraded}


def test_given_an_unknown_account_when_saved_then_refused(directory: AccountDirectory) -> None:
    with pytest.raises(UnknownAccountError):
        directory.save(team("ghost"))
    assert directory.registered(["ghost"]) == {}


def test_given_more_accounts_than_one_batch_read_then_all_are_found(directory: AccountDirectory) -> None:
    for index in range(130):
        directory.register(team(f"acct-{index:03d}"))
    found = directory.registered([f"acct-{index:03d}" for index in range(0, 130, 1)])
    assert sorted(found) == [f"acct-{index:03d}" for index in range(130)]


def test_given_contact_preferences_hard_limit_and_status_then_they_read_back_exactly(
    directory: AccountDirectory,
) -> None:
    profile = AccountProfile(
        "acct-c",
        (TierChange(SIGNUP, "team"),),
        Decimal(200),
        (50, 100),
        name="Ada & Co",
        email="ada@example.com",
        phone="+14155550100",
        alert_preferences=(("allowance_threshold", ()), ("budget_threshold", ("email", "sms"))),
        hard_limit_usd=Decimal("250.50"),
        status="past_due",
    )
    directory.register(profile)
    assert directory.registered(["acct-c"]) == {"acct-c": profile}


def test_given_a_profile_without_contact_then_it_reads_with_the_defaults(directory: AccountDirectory) -> None:
    directory.register(team("acct-d"))
    found = directory.registered(["acct-d"])["acct-d"]
    assert (found.name, found.email, found.phone, found.alert_preferences) == ("", "", "", ())
    assert (found.hard_limit_usd, found.status) == (None, "active")


def test_given_progressive_billing_set_then_its_threshold_reads_back_and_can_be_turned_off(
    directory: AccountDirectory,
) -> None:
    from kilo_billing.accounts import set_progressive_threshold  # noqa: PLC0415

    directory.register(team("acct-a"))
    assert directory.registered(["acct-a"])["acct-a"].progressive_threshold_usd is None
    set_progressive_threshold(directory, "acct-a", Decimal("50.00"))
    assert directory.registered(["acct-a"])["acct-a"].progressive_threshold_usd == Decimal("50.00")
    set_progressive_threshold(directory, "acct-a", None)
    assert directory.registered(["acct-a"])["acct-a"].progressive_threshold_usd is None
    with pytest.raises(ValueError, match="positive amount"):
        set_progressive_threshold(directory, "acct-a", Decimal(0))


def test_given_a_crypto_billed_account_then_its_billing_method_reads_back_and_survives_a_tier_change(
    directory: AccountDirectory,
) -> None:
    directory.register(AccountProfile("acct-x", (TierChange(SIGNUP, "team"),), billing_method="crypto"))
    directory.register(team("acct-y"))
    found = directory.registered(["acct-x", "acct-y"])
    assert (found["acct-x"].billing_method, found["acct-y"].billing_method) == ("crypto", "card")
    upgraded = AccountProfile(
        "acct-x",
        (TierChange(SIGNUP, "team"), TierChange(SIGNUP.replace(day=9), "enterprise")),
        billing_method=found["acct-x"].billing_method,
    )
    directory.save(upgraded)
    assert directory.registered(["acct-x"])["acct-x"].billing_method == "crypto"


def test_given_an_erased_account_then_its_erasure_mark_reads_back_exactly(directory: AccountDirectory) -> None:
    from dataclasses import replace  # noqa: PLC0415

    directory.register(team("acct-e"))
    assert directory.registered(["acct-e"])["acct-e"].erased_at is None
    mark = datetime(2026, 11, 30, 19, 58, 1, 250_000, tzinfo=UTC)
    directory.save(replace(team("acct-e"), erased_at=mark))
    assert directory.registered(["acct-e"])["acct-e"].erased_at == mark


def test_given_limit_versions_then_they_read_back_and_a_profile_without_them_reads_as_version_0(
    directory: AccountDirectory,
) -> None:
    from dataclasses import replace  # noqa: PLC0415

    directory.register(team("acct-v"))
    fresh = directory.registered(["acct-v"])["acct-v"]
    assert (fresh.budget_version, fresh.hard_limit_version) == (0, 0)
    directory.save(replace(team("acct-v"), budget_usd=Decimal("10"), budget_version=2, hard_limit_version=5))
    found = directory.registered(["acct-v"])["acct-v"]
    assert (found.budget_version, found.hard_limit_version) == (2, 5)
