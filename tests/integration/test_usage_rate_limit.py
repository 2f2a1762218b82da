"""The per-client limit of POST /v1/usage on moto: the template's RateLimitTable, the handler as deployed, a limit of
3 requests a minute (USAGE_REQUESTS_PER_MINUTE): the 4th request of a minute is answered 429 with Retry-After (the
seconds left in the minute), nothing of it is stored; another client and the next minute are not affected; requests
with a bad signature are not counted against the client."""

from __future__ import annotations

import json
from collections.abc import Iterator
from datetime import UTC, datetime
from typing import Any

import pytest
import time_machine

from kilo_dev.apigw import http_api_event
from kilo_dev.signing import usage_signature
from kilo_webhook_ingest import usage_handler
from tests.conftest import LambdaContext, Stack, _clear_caches, register_accounts

START = datetime(2026, 3, 1, 12, 0, 15, tzinfo=UTC)  # 15 s into the minute: 45 s left
START_S = 1772366415


@pytest.fixture(autouse=True)
def limited(stack: Stack, monkeypatch: pytest.MonkeyPatch) -> Iterator[time_machine.Coordinates]:
    monkeypatch.setenv("USAGE_REQUESTS_PER_MINUTE", "3")
    _clear_caches()
    register_accounts(stack, "acct_7")
    with time_machine.travel(START, tick=False) as traveller:
        yield traveller


def post(key: str, client: str, secret: str, now_s: int) -> tuple[int, dict[str, str], dict[str, Any]]:
    event = {"idempotency_key": key, "account_id": "acct_7", "meter": "messages", "quantity": 1,
             "timestamp": "2026-03-01T11:59:00Z"}  # fmt: skip
    body = json.dumps({"events": [event]}).encode()
    headers = {"content-type": "application/json", "x-kilo-client": client,
               "x-kilo-signature": usage_signature(body, secret, now_s)}  # fmt: skip
    response = usage_handler.lambda_handler(http_api_event("POST", "/v1/usage", body, headers), LambdaContext())
    return response["statusCode"], response["headers"], json.loads(response["body"])


def stored_keys(stack: Stack) -> set[str]:
    return {item["idempotency_key"]["S"] for item in stack.table_items() if "idempotency_key" in item}


def test_given_a_client_over_its_limit_then_429_with_retry_after_and_nothing_stored(stack: Stack) -> None:
    for index in range(3):
        assert post(f"k{index}", "kilo-app", "usage-secret-new", START_S)[0] == 200
    status, headers, body = post("k3", "kilo-app", "usage-secret-new", START_S)
    assert status == 429
    assert headers["Retry-After"] == "45"  # 12:00:15 -> the next minute starts at 12:01:00
    assert body["error"]["code"] == "rate_limited"
    assert "kilo-app" in body["error"]["message"]
    assert "3 requests a minute" in body["error"]["message"]
    assert stored_keys(stack) == {"k0", "k1", "k2"}


def test_given_another_client_then_its_own_limit_applies(stack: Stack) -> None:
    for index in range(4):
        post(f"a{index}", "kilo-app", "usage-secret-new", START_S)
    assert post("o0", "other-app", "other-secret", START_S)[0] == 200


def test_given_the_next_minute_then_the_client_is_served_again(stack: Stack, limited: time_machine.Coordinates) -> None:
    for index in range(4):
        post(f"m{index}", "kilo-app", "usage-secret-new", START_S)
    limited.move_to(datetime(2026, 3, 1, 12, 1, 0, tzinfo=UTC))
    assert post("next", "kilo-app", "usage-secret-new", START_S + 45)[0] == 200
    assert "next" in stored_keys(stack)


def test_given_requests_with_a_bad_signature_then_they_do_not_use_up_the_clients_limit(stack: Stack) -> None:
    for index in range(5):
        assert post(f"bad{index}", "kilo-app", "wrong-secret", START_S)[0] == 401
    for index in range(3):
        assert post(f"good{index}", "kilo-app", "usage-secret-new", START_S)[0] == 200


def test_given_the_counter_table_unavailable_then_usage_is_still_accepted(stack: Stack) -> None:
    stack.clients["dynamodb"].delete_table(TableName=stack.template.physical_name("RateLimitTable"))
    assert post("open", "kilo-app", "usage-secret-new", START_S)[0] == 200
    assert "open" in stored_keys(stack)
