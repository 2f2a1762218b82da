"""One contract, two implementations of the account directory: the in-memory fake and DynamoDB (moto, template's
usage table)."""

from __future__ import annotations

import re
from collections.abc import Callable, Iterable
from dataclasses import replace
from datetime import UTC, datetime, timedelta
from decimal import Decimal
from typing import Any

import pytest

from kilo_account_api import logic
from kilo_billing.account_store import DynamoAccountDirectory
from kilo_billing.accounts import (
    PROFILE_SAVE_ATTEMPTS,
    AccountDirectory,
    AccountExistsError,
    AccountProfile,
    AnswerExistsError,
    InvalidContactError,
    ProfileChangedError,
    StoredAnswer,
    UnknownAccountError,
    mark_phone_verified,
    register_account,
    set_alert_contact,
    set_status,
)
from kilo_billing.catalog import default_catalog
from kilo_billing.rating import TierChange
from tests.account_api_fakes import NO_USAGE, InMemoryMembers, InMemorySessionHistory
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
        phone_verified=True,
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
    assert (found.hard_limit_usd, found.status, found.phone_verified) == (None, "active", False)


def test_given_a_verified_number_then_saving_it_again_keeps_it_verified_and_another_number_is_not(
    directory: AccountDirectory,
) -> None:
    register_account(directory, "acct-a", "team", SIGNUP, ["personal", "team", "enterprise"])
    set_alert_contact(directory, "acct-a", phone="+14155550100")
    assert directory.registered(["acct-a"])["acct-a"].phone_verified is False
    with pytest.raises(InvalidContactError, match="no longer the account's number"):
        mark_phone_verified(directory, "acct-a", "+14155550101")
    assert mark_phone_verified(directory, "acct-a", "+14155550100").phone_verified is True
    set_alert_contact(directory, "acct-a", email="ada@example.com", phone="+14155550100")
    assert directory.registered(["acct-a"])["acct-a"].phone_verified is True
    set_alert_contact(directory, "acct-a", phone="+14155550101")
    stored = directory.registered(["acct-a"])["acct-a"]
    assert (stored.phone, stored.phone_verified) == ("+14155550101", False)


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
    for refused in ("0", "0.99", "1.001", "1000000.01", "1E+200", "NaN"):
        with pytest.raises(ValueError, match="progressive billing threshold must be"):
            set_progressive_threshold(directory, "acct-a", Decimal(refused))
    assert directory.registered(["acct-a"])["acct-a"].progressive_threshold_usd is None


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


def test_given_a_cancelled_tier_change_then_its_time_reads_back_and_a_profile_without_it_reads_as_none(
    directory: AccountDirectory,
) -> None:
    """D118 amended (ex2): the time of the last cancel of a pending change is kept, so a retry answers as it."""
    from dataclasses import replace  # noqa: PLC0415

    directory.register(team("acct-c"))
    assert directory.registered(["acct-c"])["acct-c"].tier_change_cancelled_at is None
    cancelled = datetime(2026, 11, 15, 11, 0, 0, 250_000, tzinfo=UTC)
    directory.save(replace(team("acct-c"), tier_change_cancelled_at=cancelled))
    assert directory.registered(["acct-c"])["acct-c"].tier_change_cancelled_at == cancelled


# --- concurrent writers (docs/decisions.md D142): a save is written only over the version it was read at ---------


def test_given_a_profile_saved_since_it_was_read_when_the_stale_copy_is_saved_then_refused_and_unchanged(
    directory: AccountDirectory,
) -> None:
    directory.register(team("acct-a"))
    first = directory.registered(["acct-a"])["acct-a"]
    second = directory.registered(["acct-a"])["acct-a"]
    held = directory.save(replace(first, status="abuse_hold"))
    assert held.version == 1
    with pytest.raises(ProfileChangedError):
        directory.save(replace(second, budget_usd=Decimal(50)))
    stored = directory.registered(["acct-a"])["acct-a"]
    assert (stored.status, stored.budget_usd, stored.version) == ("abuse_hold", None, 1)
    assert directory.save(replace(stored, budget_usd=Decimal(50))).version == 2
    stored = directory.registered(["acct-a"])["acct-a"]
    assert (stored.status, stored.budget_usd, stored.version) == ("abuse_hold", Decimal(50), 2)


def test_given_a_status_saved_alone_then_only_the_status_changes_and_a_stale_copy_or_unknown_account_is_refused(
    directory: AccountDirectory,
) -> None:
    """pi: the abuse hold (the alerts and operator checks' only profile write) saves the status and the version alone,
    over the version read, as ``save`` does - the rest of the profile is left as stored."""
    directory.register(replace(team("acct-a"), name="Ada", email="ada@example.com"))
    first = directory.registered(["acct-a"])["acct-a"]
    second = directory.registered(["acct-a"])["acct-a"]
    held = directory.save_status(replace(first, status="abuse_hold"))
    stored = directory.registered(["acct-a"])["acct-a"]
    assert held == stored
    assert stored == replace(team("acct-a"), name="Ada", email="ada@example.com", status="abuse_hold", version=1)
    with pytest.raises(ProfileChangedError):
        directory.save_status(replace(second, status="suspended"))
    with pytest.raises(UnknownAccountError):
        directory.save_status(replace(team("acct-b"), status="abuse_hold"))
    assert directory.registered(["acct-b"]) == {}
    active = directory.save_status(replace(stored, status="active"))
    assert directory.registered(["acct-a"])["acct-a"] == active == replace(stored, status="active", version=2)


def test_given_a_status_saved_alone_then_the_dynamodb_request_names_only_the_granted_attributes(stack: Stack) -> None:
    """The attributes the hold's request names (its key, update and condition) are the ones the alerts and operator
    checks roles may write (tests/infra/test_generated_iam.py: pk, sk, status, version): an UpdateItem, no PutItem."""
    dynamodb = stack.clients["dynamodb"]
    directory = DynamoAccountDirectory(dynamodb, stack.template.physical_name("UsageTable"))
    directory.register(team("acct-a"))
    requests: list[tuple[str, dict[str, Any]]] = []

    def record(params: dict[str, Any], model: Any, **_: Any) -> None:
        requests.append((model.name, params))

    dynamodb.meta.events.register("provide-client-params.dynamodb.*", record)
    try:
        held = directory.save_status(replace(directory.registered(["acct-a"])["acct-a"], status="abuse_hold"))
        directory.save_status(replace(held, status="active"))
    finally:
        dynamodb.meta.events.unregister("provide-client-params.dynamodb.*", record)
    writes = [(name, params) for name, params in requests if name != "BatchGetItem"]
    assert [name for name, _ in writes] == ["UpdateItem", "UpdateItem"]
    for _, params in writes:
        named = set(params["Key"]) | set(params["ExpressionAttributeNames"].values())
        assert named == {"pk", "sk", "status", "version"}
        # every attribute goes by a #name: the bare words of the expressions are their keywords and functions only
        words = re.findall(r"(?<![#:\w])[A-Za-z_]\w*", f"{params['UpdateExpression']} {params['ConditionExpression']}")
        assert set(words) <= {"SET", "REMOVE", "AND", "attribute_exists", "attribute_not_exists"}, words


class Interleaved:
    """The directory as one writer sees it: ``other`` (another Lambda's change) runs against the real directory right
    after this writer's first ``times`` reads, i.e. between its read and its save."""

    def __init__(self, real: AccountDirectory, other: Callable[[AccountDirectory], object], times: int = 1) -> None:
        self.real, self.other, self.left = real, other, times
        self.saves = 0

    def registered(self, account_ids: Iterable[str]) -> dict[str, AccountProfile]:
        found = self.real.registered(account_ids)
        if self.left:
            self.left -= 1
            self.other(self.real)
        return found

    def register(self, profile: AccountProfile) -> None:
        self.real.register(profile)

    def save(self, profile: AccountProfile) -> AccountProfile:
        self.saves += 1
        return self.real.save(profile)

    def save_status(self, profile: AccountProfile) -> AccountProfile:
        self.saves += 1
        return self.real.save_status(profile)

    def answer(self, account_id: str, key: str, now: datetime) -> StoredAnswer | None:
        return self.real.answer(account_id, key, now)

    def save_answered(self, profile: AccountProfile, answer: StoredAnswer) -> AccountProfile:
        return self.real.save_answered(profile, answer)

    def keep_answer(self, answer: StoredAnswer) -> None:
        self.real.keep_answer(answer)


def test_given_an_abuse_hold_between_a_budget_read_and_its_save_then_both_are_kept(
    directory: AccountDirectory,
) -> None:
    register_account(directory, "acct-a", "personal", SIGNUP, ["personal", "team", "enterprise"])
    racing = Interleaved(directory, lambda real: set_status(real, "acct-a", "abuse_hold"))
    saved = logic.set_budget(racing, "acct-a", logic.BudgetRequest(Decimal(50), (50, 80, 100), None))
    stored = directory.registered(["acct-a"])["acct-a"]
    assert (stored.status, stored.budget_usd, stored.budget_thresholds) == ("abuse_hold", Decimal(50), (50, 80, 100))
    assert saved == stored
    assert racing.saves == 2  # the first save was refused, the budget applied again to the held profile


def _answered(outcome: logic.TierChangeOutcome) -> StoredAnswer:
    """The handler's ``answered`` for one tier request under its own key (required, D436)."""
    return StoredAnswer("acct-a", f"key-{outcome.effective_at.isoformat()}", "digest", 200, "{}", outcome.effective_at)


def test_given_an_upgrade_between_a_budget_read_and_its_save_then_the_upgrade_stays_in_the_history(
    directory: AccountDirectory,
) -> None:
    register_account(directory, "acct-a", "personal", SIGNUP, ["personal", "team", "enterprise"])
    upgraded_at = datetime(2026, 3, 15, tzinfo=UTC)

    def upgrade(real: AccountDirectory) -> None:
        outcome = logic.change_tier(real, default_catalog(), "acct-a", "team", upgraded_at, NO_USAGE, _answered)
        assert (outcome.effective_at, outcome.current_tier) == (upgraded_at, "team")

    logic.set_budget(Interleaved(directory, upgrade), "acct-a", logic.BudgetRequest(Decimal(50), (50, 80, 100), None))
    stored = directory.registered(["acct-a"])["acct-a"]
    assert stored.changes == (TierChange(SIGNUP, "personal"), TierChange(upgraded_at, "team"))
    assert stored.budget_usd == Decimal(50)


def test_given_a_budget_saved_between_an_upgrades_read_and_its_save_then_the_upgrade_is_decided_again_and_kept(
    directory: AccountDirectory,
) -> None:
    register_account(directory, "acct-a", "personal", SIGNUP, ["personal", "team", "enterprise"])
    upgraded_at = datetime(2026, 3, 15, tzinfo=UTC)
    budget = logic.BudgetRequest(Decimal(50), (50, 80, 100), None)
    racing = Interleaved(directory, lambda real: logic.set_budget(real, "acct-a", budget))
    outcome = logic.change_tier(racing, default_catalog(), "acct-a", "team", upgraded_at, NO_USAGE, _answered)
    stored = directory.registered(["acct-a"])["acct-a"]
    assert stored.changes == (TierChange(SIGNUP, "personal"), TierChange(upgraded_at, "team"))
    assert stored.budget_usd == Decimal(50)
    assert (outcome.effective_at, outcome.current_tier, outcome.profile) == (upgraded_at, "team", stored)


def test_given_alert_preferences_saved_during_an_erasure_then_the_erasure_mark_is_kept(
    directory: AccountDirectory,
) -> None:
    register_account(directory, "acct-a", "team", SIGNUP, ["personal", "team", "enterprise"])
    set_alert_contact(directory, "acct-a", name="Ada", email="ada@example.com", phone="+14155550100")
    erased_at = datetime(2026, 3, 20, 12, tzinfo=UTC)

    def preferences(real: AccountDirectory) -> None:
        set_alert_contact(real, "acct-a", preferences={"budget_threshold": ("email",)})

    logic.erase(Interleaved(directory, preferences), InMemoryMembers(), InMemorySessionHistory(), "acct-a", erased_at)
    stored = directory.registered(["acct-a"])["acct-a"]
    assert (stored.erased_at, stored.name, stored.email, stored.phone) == (erased_at, "", "", "")
    assert stored.alert_preferences == (("budget_threshold", ("email",)),)


def test_given_a_writer_that_keeps_changing_the_profile_then_the_change_gives_up_with_nothing_of_it_saved(
    directory: AccountDirectory,
) -> None:
    register_account(directory, "acct-a", "personal", SIGNUP, ["personal", "team", "enterprise"])
    flips = iter(["abuse_hold", "active"] * PROFILE_SAVE_ATTEMPTS)
    racing = Interleaved(directory, lambda real: set_status(real, "acct-a", next(flips)), PROFILE_SAVE_ATTEMPTS)
    with pytest.raises(ProfileChangedError, match="changed meanwhile"):
        logic.set_budget(racing, "acct-a", logic.BudgetRequest(Decimal(50), (50, 80, 100), None))
    stored = directory.registered(["acct-a"])["acct-a"]
    assert (stored.budget_usd, stored.status, racing.saves) == (None, "abuse_hold", PROFILE_SAVE_ATTEMPTS)


# --- idempotency keys (D377): an answer is stored with the profile's save, in one write --------------------------


def test_given_an_answer_saved_with_a_profile_then_both_read_back_and_the_key_expires_after_24_hours(
    directory: AccountDirectory,
) -> None:
    directory.register(team("acct-k"))
    read = directory.registered(["acct-k"])["acct-k"]
    at = datetime(2026, 11, 15, 9, 0, tzinfo=UTC)
    answer = StoredAnswer("acct-k", "7f0c-key", "d1", 200, '{"change":"upgrade_now"}', at)
    upgraded = replace(read, changes=(*read.changes, TierChange(at, "enterprise")))
    assert directory.save_answered(upgraded, answer).version == 1
    assert directory.registered(["acct-k"])["acct-k"].tier_at(at) == "enterprise"
    assert directory.answer("acct-k", "7f0c-key", at) == answer
    assert directory.answer("acct-k", "other-key", at) is None
    assert directory.answer("acct-other", "7f0c-key", at) is None
    # expires_at = 2026-11-15 09:00 + 24 h = 2026-11-16 09:00: still there a second before, gone at it
    assert directory.answer("acct-k", "7f0c-key", datetime(2026, 11, 16, 8, 59, 59, tzinfo=UTC)) == answer
    assert directory.answer("acct-k", "7f0c-key", datetime(2026, 11, 16, 9, 0, tzinfo=UTC)) is None


def test_given_a_key_answered_then_a_second_answer_for_it_writes_neither_the_profile_nor_the_answer(
    directory: AccountDirectory,
) -> None:
    directory.register(team("acct-k"))
    at = datetime(2026, 11, 15, 9, 0, tzinfo=UTC)
    first = StoredAnswer("acct-k", "k1", "d1", 200, "{}", at)
    directory.keep_answer(first)
    read = directory.registered(["acct-k"])["acct-k"]
    second = StoredAnswer("acct-k", "k1", "d2", 200, '{"x":1}', at + timedelta(hours=2))
    with pytest.raises(AnswerExistsError):
        directory.save_answered(replace(read, budget_usd=Decimal(50)), second)
    with pytest.raises(AnswerExistsError):
        directory.keep_answer(second)
    assert directory.answer("acct-k", "k1", at + timedelta(hours=2)) == first
    assert (directory.registered(["acct-k"])["acct-k"].budget_usd, read.version) == (None, 0)
    assert directory.registered(["acct-k"])["acct-k"].version == 0
    # 24 h after the first answer (16 Nov 09:00) the key is free again: an answer stored TTL has not deleted yet
    # is overwritten
    later = StoredAnswer("acct-k", "k1", "d3", 200, "{}", at + timedelta(hours=24))
    directory.keep_answer(later)
    assert directory.answer("acct-k", "k1", at + timedelta(hours=24)) == later


def test_given_a_stale_profile_saved_with_an_answer_then_neither_is_written(directory: AccountDirectory) -> None:
    directory.register(team("acct-k"))
    read = directory.registered(["acct-k"])["acct-k"]
    directory.save(replace(read, status="abuse_hold"))  # another writer: version 0 -> 1
    at = datetime(2026, 11, 15, 9, 0, tzinfo=UTC)
    with pytest.raises(ProfileChangedError):
        directory.save_answered(replace(read, budget_usd=Decimal(50)), StoredAnswer("acct-k", "k1", "d", 200, "{}", at))
    assert directory.answer("acct-k", "k1", at) is None
    assert directory.registered(["acct-k"])["acct-k"].budget_usd is None
