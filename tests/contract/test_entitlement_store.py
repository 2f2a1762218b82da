"""One contract for the entitlement state, run against the in-memory fake and the DynamoDB adapter on moto: one read
returns the profile and the spend item; a reading never lowers what is stored (older or redelivered events)."""

from __future__ import annotations

from collections.abc import Iterator
from datetime import UTC, datetime
from decimal import Decimal
from typing import Any

import pytest

from kilo_billing.account_store import DynamoAccountDirectory
from kilo_billing.accounts import AccountProfile
from kilo_billing.entitlement_store import DynamoEntitlements
from kilo_billing.entitlements import Reading, SpendState
from kilo_billing.rating import TierChange
from tests.conftest import Stack, count_calls
from tests.fakes import InMemoryAccountDirectory, InMemoryEntitlements

PROFILE = AccountProfile("acct-1", (TierChange(datetime(2026, 1, 1, tzinfo=UTC), "team"),), Decimal("100"))


@pytest.fixture(params=["memory", "dynamodb"])
def store(request: pytest.FixtureRequest) -> Iterator[Any]:
    if request.param == "memory":
        directory = InMemoryAccountDirectory()
        directory.register(PROFILE)
        yield InMemoryEntitlements(directory)
        return
    stack: Stack = request.getfixturevalue("stack")
    table = stack.template.physical_name("UsageTable")
    DynamoAccountDirectory(stack.clients["dynamodb"], table).register(PROFILE)
    yield DynamoEntitlements(stack.clients["dynamodb"], table)


def r(period: str, used: str, limit: str = "100", as_of: str = "t") -> Reading:
    return Reading(period, Decimal(used), Decimal(limit), as_of)


def test_given_no_event_then_the_profile_and_no_state(store: Any) -> None:
    assert store.read("acct-1") == (PROFILE, None)
    assert store.read("ghost") == (None, None)


def test_given_readings_then_the_latest_is_kept_and_older_or_equal_ones_are_ignored(store: Any) -> None:
    assert store.record("acct-1", "budget", r("2026-11", "50", as_of="a"))
    assert store.record("acct-1", "hard_limit", r("2026-11", "150.5", "150", as_of="b"))
    assert not store.record("acct-1", "budget", r("2026-11", "80", as_of="c"))  # older: lower than stored
    assert not store.record("acct-1", "hard_limit", r("2026-11", "150.5", "150", as_of="b"))  # redelivered
    assert not store.record("acct-1", "budget", r("2026-10", "900"))  # an earlier period
    assert store.record("acct-1", "video", r("2026-11", "48000", "60000"))
    assert store.record("acct-1", "video", r("2026-11", "60000", "60000"))
    assert not store.record("acct-1", "video", r("2026-11", "30000", "60000"))
    _, state = store.read("acct-1")
    assert state == SpendState(
        "acct-1", r("2026-11", "150.5", "150", as_of="b"), {"video": r("2026-11", "60000", "60000")}
    )
    assert store.record("acct-1", "budget", r("2026-12", "1", as_of="d"))  # a new month replaces it
    assert store.read("acct-1")[1].spend == r("2026-12", "1", as_of="d")


def test_given_the_dynamodb_adapter_then_the_read_is_one_request(stack: Stack) -> None:
    table = stack.template.physical_name("UsageTable")
    DynamoAccountDirectory(stack.clients["dynamodb"], table).register(PROFILE)
    store = DynamoEntitlements(stack.clients["dynamodb"], table)
    store.record("acct-1", "budget", r("2026-11", "50"))
    calls = count_calls(stack.clients["dynamodb"])
    profile, state = store.read("acct-1")
    assert calls.calls == ["BatchGetItem"]
    assert profile == PROFILE
    assert state is not None
    assert state.spend == r("2026-11", "50")
