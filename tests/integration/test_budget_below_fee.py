"""A budget or hard limit at or below the fixed monthly fee is refused by the layer's rule (kilo_billing.budgets) and
the account API surfaces it as a 400 naming the field and the fee, nothing saved (moto, the account API's handler)."""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import pytest

from tests.account_api_support import api_environment, call, claims
from tests.integration.test_account_api import register


@pytest.fixture
def account_api(stack: Any, monkeypatch: pytest.MonkeyPatch) -> Iterator[Any]:
    yield from api_environment(stack, monkeypatch, {"acct_a": {"user-1": "admin"}})


def test_given_a_team_account_when_the_hard_limit_is_put_below_its_fee_then_400_names_the_field_and_the_fee(
    account_api: Any,
) -> None:
    register(account_api, "acct_a")  # Team: $29.00 a month
    admin = claims("acct_a", "admin")
    before = call("GET", "/v1/accounts/acct_a/budget", admin).body
    refused = call("PUT", "/v1/accounts/acct_a/budget", admin, {"budget_usd": None, "hard_limit_usd": "20.00"})
    assert (refused.status, refused.body["field"]) == (400, "hard_limit_usd")
    assert "hard limit $20.00 is not above the fixed monthly fee of $29.00" in str(refused.body)
    low_budget = call("PUT", "/v1/accounts/acct_a/budget", admin, {"budget_usd": "29.00"})
    assert (low_budget.status, low_budget.body["field"]) == (400, "budget_usd")
    assert call("GET", "/v1/accounts/acct_a/budget", admin).body == before  # nothing saved
    accepted = call("PUT", "/v1/accounts/acct_a/budget", admin, {"budget_usd": "29.01", "hard_limit_usd": "29.01"})
    assert accepted.status == 200, accepted.body
