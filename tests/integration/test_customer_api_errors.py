"""The customer API (``AccountApi``) answers errors in one shape, whichever function serves the route: the account
API's routes and the crypto routes give the same body for the same refusal. Every expected body is written out here
by hand (``kilo_billing.customer_api`` is not used to build them)."""

from __future__ import annotations

import json
from collections.abc import Iterator
from datetime import datetime
from decimal import Decimal
from typing import Any

import pytest

from kilo_billing.account_store import DynamoAccountDirectory
from kilo_billing.accounts import AccountProfile, StoredAnswer
from kilo_billing.rating import TierChange
from kilo_dev.apigw import http_api_event
from tests.account_api_support import api_environment, call, claims, utc
from tests.conftest import LambdaContext

QUOTE = "/v1/accounts/acct_a/crypto/bills/acct_a~2026-10/quotes"


@pytest.fixture
def account_api(stack: Any, monkeypatch: pytest.MonkeyPatch) -> Iterator[Any]:
    yield from api_environment(stack, monkeypatch, {"acct_a": {"user-1": "admin"}})


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


# --- bodies that are not JSON one may read (D32): 400 naming "body" on both route families, never a 500 -------------

BUDGET = "/v1/accounts/acct_a/budget"
WALLETS = "/v1/accounts/acct_a/crypto/wallets"


def raw_call(
    path: str, body: bytes, content_type: str = "application/json", *, force_base64: bool = False
) -> tuple[int, Any]:
    """``body`` as bytes, as API Gateway hands it on (base64 when it is not UTF-8 text), to whichever function serves
    ``path``: PUT the account API's budget, POST the crypto function's wallets. An exception escaping the handler
    (a 500 from Lambda) fails the test."""
    from kilo_account_api.handler import lambda_handler as account_handler  # noqa: PLC0415
    from kilo_crypto_watch.api_handler import lambda_handler as crypto_handler  # noqa: PLC0415
    from tests.account_api_support import route_of  # noqa: PLC0415

    method = "PUT" if path == BUDGET else "POST"
    route, params = route_of(method, path) if path == BUDGET else ("/v1/accounts/{account_id}/crypto/wallets", {})
    event = http_api_event(
        method, path, body, {"content-type": content_type}, route_key=f"{method} {route}", force_base64=force_base64
    )
    event["pathParameters"] = params or {"account_id": "acct_a"}
    event["requestContext"]["authorizer"] = {"jwt": {"claims": claims("acct_a", "owner"), "scopes": None}}
    handler = account_handler if path == BUDGET else crypto_handler
    response = handler(event, LambdaContext())
    return response["statusCode"], json.loads(response["body"])


@pytest.mark.parametrize("path", [BUDGET, WALLETS], ids=["account-api", "crypto"])
@pytest.mark.parametrize(
    ("body", "force_base64", "message"),
    [
        pytest.param(
            b'{"budget_usd": ' + b"[" * 20_000 + b"]" * 20_000 + b"}",
            False,
            "body nests JSON more than 64 levels deep (the request body)",
            id="20000 deep",
        ),
        pytest.param(
            b'{"budget_usd": [' + b"[" * 64 + b"]" * 64 + b"]}",
            False,
            "body nests JSON more than 64 levels deep (the request body)",
            id="66 deep",
        ),
        pytest.param(
            b'{"budget_usd": 1' + b"0" * 4_300 + b"}",
            False,
            "body has a number of more than 4300 digits (the request body)",
            id="4301 digits",
        ),
        pytest.param(b'{"budget_usd": "\xff\xfe"}', True, "body is not UTF-8 text", id="not UTF-8"),
        pytest.param(
            b'{"budget_usd": ',
            False,
            "body is not valid JSON (the request body): Expecting value: line 1 column 16 (char 15)",
            id="truncated",
        ),
    ],
)
def test_given_a_body_no_json_reader_should_take_then_400_names_the_body_on_both_route_families(
    account_api: Any, path: str, body: bytes, force_base64: bool, message: str
) -> None:
    status, answer = raw_call(path, body, force_base64=force_base64)
    assert (status, answer) == (400, {"code": "invalid_request", "message": message, "field": "body"})


@pytest.mark.parametrize("path", [BUDGET, WALLETS], ids=["account-api", "crypto"])
@pytest.mark.parametrize(
    ("content_type", "body"),
    [
        ("text/plain", b'{"budget_usd": "10.00"}'),
        ("application/octet-stream", b'{"budget_usd": "10.00"}'),
        ("application/xml", b'{"budget_usd": "10.00"}'),
        # bodies Powertools would parse as form fields (then refused by validation as 400): not JSON either
        ("application/x-www-form-urlencoded", b"budget_usd=10.00&address=0xab"),
        ("Application/X-WWW-Form-Urlencoded; charset=utf-8", b"budget_usd=10.00"),
        (
            "multipart/form-data; boundary=kilo",
            b'--kilo\r\nContent-Disposition: form-data; name="budget_usd"\r\n\r\n10.00\r\n--kilo--\r\n',
        ),
    ],
    ids=["text", "octet-stream", "xml", "form", "form-uppercase", "multipart"],
)
def test_given_a_body_that_is_not_json_by_its_content_type_then_415_in_the_error_shape(
    account_api: Any, path: str, content_type: str, body: bytes
) -> None:
    status, answer = raw_call(path, body, content_type)
    assert (status, answer) == (
        415,
        {
            "code": "unsupported_media_type",
            "message": f"body's content type {content_type!r} is not JSON: send application/json",
            "field": "body",
        },
    )


@pytest.mark.parametrize(
    "content_type",
    ["application/json", "Application/JSON", "APPLICATION/JSON; charset=UTF-8", "application/merge-patch+json"],
)
def test_given_a_json_body_under_any_spelling_of_a_json_content_type_then_it_is_read(
    account_api: Any, content_type: str
) -> None:
    directory = DynamoAccountDirectory(
        account_api.clients["dynamodb"], account_api.template.physical_name("UsageTable")
    )
    directory.register(AccountProfile("acct_a", (TierChange(utc(2026, 1, 1), "personal"),)))
    status, answer = raw_call(BUDGET, b'{"budget_usd": "12.50"}', content_type)
    assert (status, answer["budget_usd"]) == (200, "12.50")
    assert directory.registered(["acct_a"])["acct_a"].budget_usd == Decimal("12.50")


def test_given_another_writer_changing_the_profile_at_every_read_then_put_budget_answers_409_and_saves_nothing(
    account_api: Any, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Each attempt reads the profile, then another Lambda (an abuse hold, an operator releasing it) saves it before
    this save: after the layer's attempts the answer is 409, not a lost write either way."""
    import dataclasses  # noqa: PLC0415

    from kilo_account_api import handler  # noqa: PLC0415
    from kilo_account_api.dependencies import dependencies  # noqa: PLC0415
    from kilo_billing.accounts import PROFILE_SAVE_ATTEMPTS, set_status  # noqa: PLC0415

    real = DynamoAccountDirectory(account_api.clients["dynamodb"], account_api.template.physical_name("UsageTable"))
    real.register(AccountProfile("acct_a", (TierChange(utc(2026, 1, 1), "personal"),)))
    statuses = iter(["abuse_hold", "active"] * PROFILE_SAVE_ATTEMPTS)

    class Racing:
        def registered(self, account_ids: Any) -> Any:
            found = real.registered(account_ids)
            set_status(real, "acct_a", next(statuses))
            return found

        def register(self, profile: AccountProfile) -> None:
            real.register(profile)

        def save(self, profile: AccountProfile) -> AccountProfile:
            return real.save(profile)

        def save_status(self, profile: AccountProfile) -> AccountProfile:
            return real.save_status(profile)

        def answer(self, account_id: str, key: str, now: datetime) -> StoredAnswer | None:
            return real.answer(account_id, key, now)

        def save_answered(self, profile: AccountProfile, answer: StoredAnswer) -> AccountProfile:
            return real.save_answered(profile, answer)

        def keep_answer(self, answer: StoredAnswer) -> None:
            real.keep_answer(answer)

    racing = dataclasses.replace(dependencies(), accounts=Racing())
    monkeypatch.setattr(handler, "_deps", lambda: racing)
    answer = call("PUT", BUDGET, claims("acct_a", "admin"), {"budget_usd": "10.00"})
    assert (answer.status, answer.body) == (
        409,
        {"code": "conflict", "message": "account 'acct_a' changed meanwhile (tried 5 times); retry", "field": None},
    )
    stored = real.registered(["acct_a"])["acct_a"]
    assert (stored.budget_usd, stored.status) == (None, "abuse_hold")  # the last of the five changes: a hold
