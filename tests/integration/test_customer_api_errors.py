"""The customer API (``AccountApi``) answers errors in one shape, whichever function serves the route: the account
API's routes and the crypto routes give the same body for the same refusal. Every expected body is written out here
by hand (``kilo_billing.customer_api`` is not used to build them)."""

from __future__ import annotations

import json
from collections.abc import Iterator
from typing import Any

import pytest

from kilo_billing.account_store import DynamoAccountDirectory
from kilo_billing.accounts import AccountProfile
from kilo_billing.rating import TierChange
from kilo_dev.apigw import http_api_event
from tests.account_api_support import api_environment, call, claims, utc
from tests.conftest import LambdaContext

QUOTE = "/v1/accounts/acct_a/crypto/bills/acct_a~2026-10/quotes"


@pytest.fixture
def account_api(stack: Any, monkeypatch: pytest.MonkeyPatch) -> Iterator[Any]:
    yield from api_environment(stack, monkeypatch)


def crypto_call(path: str, token: dict[str, str] | None, body: object = None) -> tuple[int, dict[str, str], Any]:
    """The crypto function as API Gateway invokes it (the claims its JWT authorizer verified, if any)."""
    from kilo_crypto_watch import api_handler  # noqa: PLC0415

    raw = json.dumps(body).encode() if body is not None else None
    event = http_api_event("POST", path, raw, {"content-type": "application/json"})
    if token is not None:
        event["requestContext"]["authorizer"] = {"jwt": {"claims": token, "scopes": None}}
    response = api_handler.lambda_handler(event, LambdaContext())
    return response["statusCode"], response["headers"], json.loads(response["body"])


def test_given_no_verified_claims_then_both_route_families_answer_the_same_401(account_api: Any) -> None:
    expected = {"code": "unauthorized", "message": "missing or invalid token", "field": None}
    answer = call("GET", "/v1/accounts/acct_a/budget", None)
    assert (answer.status, answer.body) == (401, expected)
    status, headers, body = crypto_call(QUOTE, None, {"chain": "ethereum", "asset": "USDC"})
    assert (status, body) == (401, expected)
    assert headers["content-type"] == "application/json"


def test_given_another_accounts_token_then_both_route_families_answer_the_same_403(account_api: Any) -> None:
    expected = {"code": "forbidden", "message": "not allowed to manage account 'acct_a'", "field": None}
    answer = call("PUT", "/v1/accounts/acct_a/budget", claims("acct_b", "owner"), {"budget_usd": "10.00"})
    assert (answer.status, answer.body) == (403, expected)
    status, _, body = crypto_call(QUOTE, claims("acct_b", "owner"), {"chain": "ethereum", "asset": "USDC"})
    assert (status, body) == (403, expected)
    read = {"code": "forbidden", "message": "not allowed to read account 'acct_a'", "field": None}
    assert call("GET", "/v1/accounts/acct_a/budget", claims("acct_b", "owner")).body == read


def test_given_a_path_no_route_serves_then_both_functions_answer_the_same_404(account_api: Any) -> None:
    """An invoice id with its slash (``%2F`` decoded by API Gateway before routing) is such a path."""
    from kilo_account_api.handler import lambda_handler  # noqa: PLC0415

    expected = {"code": "not_found", "message": "no such route", "field": None}
    event = http_api_event("GET", "/v1/accounts/acct_a/nothing-here", None)
    response = lambda_handler(event, LambdaContext())
    assert (response["statusCode"], json.loads(response["body"])) == (404, expected)
    slashed = "/v1/accounts/acct_a/crypto/bills/acct_a/2026-10/quotes"
    status, _, body = crypto_call(slashed, claims("acct_a", "admin"), {"chain": "ethereum", "asset": "USDC"})
    assert (status, body) == (404, expected)


def test_given_invalid_input_then_400_names_the_field_in_both_route_families(account_api: Any) -> None:
    directory = DynamoAccountDirectory(
        account_api.clients["dynamodb"], account_api.template.physical_name("UsageTable")
    )
    directory.register(AccountProfile("acct_a", (TierChange(utc(2026, 1, 1), "personal"),)))
    answer = call("PUT", "/v1/accounts/acct_a/budget", claims("acct_a", "admin"), {"budget_usd": "ten"})
    assert answer.status == 400
    assert (answer.body["code"], answer.body["field"], answer.body["fields"]) == (
        "invalid_request",
        "budget_usd",
        ["budget_usd"],
    )
    assert answer.body["message"].startswith("budget_usd: ")
    assert set(answer.body) == {"code", "message", "field", "fields"}

    status, _, body = crypto_call(
        "/v1/accounts/acct_a/crypto/bills/acct_a~2026-13/quotes",
        claims("acct_a", "admin"),
        {"chain": "ethereum", "asset": "USDC"},
    )
    assert (status, body) == (
        400,
        {
            "code": "invalid_request",
            "message": "invoice must be an invoice id with each '/' written '~' (<account>~<YYYY-MM>[~<part>], e.g. "
            "acct-1~2026-11), not 'acct_a~2026-13'",
            "field": "path.invoice",
        },
    )
