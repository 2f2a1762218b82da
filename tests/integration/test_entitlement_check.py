"""POST /v1/entitlements/check end to end in-process: a real API Gateway v2 event, signed like /v1/usage, the
profile and the spend item on moto (written by the adapter the alerts function uses). One answer per reason."""

from __future__ import annotations

import json
from collections.abc import Iterator
from datetime import UTC, datetime
from decimal import Decimal
from typing import Any

import pytest
import time_machine

from kilo_billing.account_store import DynamoAccountDirectory
from kilo_billing.accounts import set_status
from kilo_billing.budgets import BudgetChange, set_budget
from kilo_billing.entitlement_store import DynamoEntitlements
from kilo_billing.entitlements import Reading
from kilo_dev.apigw import http_api_event
from kilo_dev.signing import usage_signature
from kilo_webhook_ingest import usage_handler
from tests.conftest import LambdaContext, Stack, count_calls, register_accounts

NOW = datetime(2026, 11, 20, 12, 0, 0, tzinfo=UTC)
NOW_S = int(NOW.timestamp())


@pytest.fixture(autouse=True)
def clock() -> Iterator[None]:
    with time_machine.travel(NOW, tick=False):
        yield


@pytest.fixture
def accounts(stack: Stack) -> tuple[DynamoAccountDirectory, DynamoEntitlements]:
    register_accounts(stack, "acct_7", "acct_42", tier="team")
    table = stack.template.physical_name("UsageTable")
    directory = DynamoAccountDirectory(stack.clients["dynamodb"], table)
    set_budget(directory, "acct_7", BudgetChange(budget_usd=Decimal("100"), hard_limit_usd=Decimal("150")))
    return directory, DynamoEntitlements(stack.clients["dynamodb"], table)


def check(account: Any, client: str = "kilo-app", secret: str = "usage-secret-new") -> tuple[int, dict[str, Any]]:
    body = json.dumps({"account_id": account}).encode()
    headers = {
        "content-type": "application/json",
        "x-kilo-client": client,
        "x-kilo-signature": usage_signature(body, secret, NOW_S),
    }
    event = http_api_event("POST", "/v1/entitlements/check", body, headers)
    response = usage_handler.lambda_handler(event, LambdaContext())
    return response["statusCode"], json.loads(response["body"])


def spent(store: DynamoEntitlements, used: str) -> None:
    store.record("acct_7", "budget", Reading("2026-11", Decimal(used), Decimal("100"), "2026-11-20T11:00:00+00:00"))


def test_given_spend_under_the_limit_then_allowed_with_remaining_budget_allowance_and_ttl(
    stack: Stack, accounts: tuple[DynamoAccountDirectory, DynamoEntitlements]
) -> None:
    _, store = accounts
    spent(store, "120.00")
    store.record("acct_7", "video", Reading("2026-11", Decimal("48000"), Decimal("60000"), "x"))
    calls = count_calls(usage_handler.dependencies().store._client)  # the route's one DynamoDB client
    status, body = check("acct_7")
    assert status == 200
    assert body == {
        "account_id": "acct_7",
        "allowed": True,
        "reason": None,
        "message": "allowed",
        # $30.00 left / $0.0072 a minute = 4,166.67 minutes: capped at 6 h
        "max_token_ttl_seconds": 21600,
        "budget": {
            "period": "2026-11",
            "spent_usd": "120.00",
            "as_of": "2026-11-20T11:00:00+00:00",
            "budget_usd": "100.00",
            "hard_limit_usd": "150.00",
            "remaining_usd": "30.00",
        },
        "remaining_allowance": {"video": "12000"},
    }
    assert calls.calls == ["BatchGetItem"]  # one read


def test_given_the_hard_limit_reached_then_refused_with_its_reason(
    accounts: tuple[DynamoAccountDirectory, DynamoEntitlements],
) -> None:
    _, store = accounts
    store.record("acct_7", "hard_limit", Reading("2026-11", Decimal("150.02"), Decimal("150"), "t"))
    status, body = check("acct_7")
    assert status == 200
    assert (body["allowed"], body["reason"], body["max_token_ttl_seconds"]) == (False, "hard_budget_reached", 0)
    assert body["budget"]["remaining_usd"] == "0.00"


@pytest.mark.parametrize(
    ("status_value", "reason"),
    [("suspended", "account_suspended"), ("abuse_hold", "abuse_hold"), ("past_due", "unpaid_past_due")],
)
def test_given_an_account_status_then_refused_with_its_reason(
    accounts: tuple[DynamoAccountDirectory, DynamoEntitlements], status_value: str, reason: str
) -> None:
    directory, _ = accounts
    set_status(directory, "acct_42", status_value)
    status, body = check("acct_42")
    assert (status, body["allowed"], body["reason"]) == (200, False, reason)


def test_given_a_scoped_client_then_it_may_ask_only_about_its_accounts(
    accounts: tuple[DynamoAccountDirectory, DynamoEntitlements],
) -> None:
    status, body = check("acct_42", client="scoped-app", secret="scoped-secret")
    assert status == 403
    assert body["error"]["code"] == "account_not_in_scope"
    status, body = check("acct_7", client="scoped-app", secret="scoped-secret")
    assert (status, body["allowed"]) == (200, True)


def test_given_a_bad_signature_or_body_then_401_or_400_naming_the_problem(
    accounts: tuple[DynamoAccountDirectory, DynamoEntitlements],
) -> None:
    status, body = check("acct_7", secret="wrong")
    assert (status, body["error"]["code"]) == (401, "bad_signature")
    status, body = check("org/1")
    assert status == 400
    assert body["error"]["details"][0]["field"] == "account_id"
    status, body = check(7)
    assert (status, body["error"]["message"]) == (400, "account_id: is required (a string)")


def test_given_an_unregistered_account_then_refused_as_not_registered(
    accounts: tuple[DynamoAccountDirectory, DynamoEntitlements],
) -> None:
    status, body = check("acct_ghost")
    assert (status, body["allowed"], body["reason"]) == (200, False, "account_not_registered")
