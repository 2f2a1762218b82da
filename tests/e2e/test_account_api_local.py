"""The account API on the local stack from template.yaml: requests over HTTP through the gateway, which emulates API
Gateway's JWT authorizer with the template's settings pointed at the local issuer; tokens minted by that issuer (RS256,
JWKS on 127.0.0.1). Stripe's hosted pages come from the stack's Stripe stand-in through the product's adapter.
Everything started here is stopped here."""

from __future__ import annotations

import json
import time
import urllib.error
import urllib.request
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from tests.account_api_support import local_account_stack

pytestmark = pytest.mark.e2e


@pytest.fixture(scope="module")
def local(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Any]:
    log_path: Path = tmp_path_factory.mktemp("account-api") / "stack.log"
    with local_account_stack(log_path, {"acct_local_a": "team", "acct_local_b": "team"}) as stack:
        yield stack


def request(
    local: Any, method: str, path: str, token: str | None = None, body: object | None = None
) -> tuple[int, Any]:
    data = json.dumps(body).encode() if body is not None else None
    headers = {"content-type": "application/json"}
    if token is not None:
        headers["authorization"] = f"Bearer {token}"
    built = urllib.request.Request(f"{local.gateway.url}{path}", data=data, headers=headers, method=method)
    try:
        with urllib.request.urlopen(built, timeout=30) as answer:
            text = answer.read()
            return answer.status, json.loads(text) if text else None
    except urllib.error.HTTPError as error:
        text = error.read()
        return error.code, json.loads(text) if text else None


def test_given_no_token_then_pricing_and_openapi_answer_and_account_routes_are_refused_by_the_authorizer(
    local: Any,
) -> None:
    status, pricing = request(local, "GET", "/v1/pricing")
    assert status == 200
    assert {tier["id"] for tier in pricing["tiers"]} == {"personal", "team", "enterprise"}
    status, document = request(local, "GET", "/openapi.json")
    assert status == 200
    assert "/v1/accounts/{account_id}/usage" in document["paths"]
    status, body = request(local, "GET", "/v1/accounts/acct_local_a/usage")
    assert (status, body) == (401, {"message": "Unauthorized"})


def test_given_tokens_the_authorizer_would_refuse_then_401_before_the_function(local: Any) -> None:
    import jwt  # noqa: PLC0415

    from kilo_dev.jwt_issuer import LocalIssuer  # noqa: PLC0415

    issuer = local.issuer
    stranger = LocalIssuer()  # a key pair the stack's issuer never published
    # under the issuer's key id, so the key lookup finds the published key: the signature check is what refuses it
    stranger.kid = issuer.kid
    refused = {
        "another key": stranger.mint("u1", "acct_local_a", "owner", issuer=issuer.url),
        "expired": issuer.mint("u1", "acct_local_a", "owner", ttl_seconds=-60),
        "another audience": issuer.mint("u1", "acct_local_a", "owner", audience="someone-else"),
        "another issuer": issuer.mint("u1", "acct_local_a", "owner", issuer="https://evil.example"),
        "not a jwt": "not-a-token",
        "unsigned (alg none)": jwt.encode(
            {
                "sub": "u1",
                "iss": issuer.url,
                "aud": issuer.audience,
                "exp": int(time.time()) + 600,
                "kilo_account": "acct_local_a",
                "kilo_role": "owner",
            },
            None,
            algorithm="none",
            headers={"kid": issuer.kid},  # the key is found: the algorithm check is what refuses it
        ),
    }
    for why, token in refused.items():
        status, _ = request(local, "GET", "/v1/accounts/acct_local_a/usage", token)
        assert status == 401, why


def test_given_a_valid_token_then_its_own_account_answers_and_another_account_is_forbidden(local: Any) -> None:
    token = local.issuer.mint("user-a", "acct_local_a", "member")
    status, usage = request(local, "GET", "/v1/accounts/acct_local_a/usage", token)
    assert status == 200, usage
    assert (usage["account_id"], usage["tier"], usage["fee"], usage["total"]) == (
        "acct_local_a",
        "team",
        "29.00",
        "29.00",
    )
    status, body = request(local, "GET", "/v1/accounts/acct_local_b/usage", token)
    assert status == 403
    assert body["code"] == "forbidden"


def test_given_a_member_and_an_admin_then_only_the_admin_changes_the_budget(local: Any) -> None:
    member = local.issuer.mint("user-m", "acct_local_a", "member")
    admin = local.issuer.mint("user-x", "acct_local_a", "admin")
    change = {"budget_usd": "75.00", "alert_percentages": [50, 100]}
    status, _ = request(local, "PUT", "/v1/accounts/acct_local_a/budget", member, change)
    assert status == 403
    status, saved = request(local, "PUT", "/v1/accounts/acct_local_a/budget", admin, change)
    assert status == 200, saved
    status, read = request(local, "GET", "/v1/accounts/acct_local_a/budget", member)
    assert (status, read["budget_usd"], read["alert_percentages"]) == (200, "75.00", [50, 100])
    status, bad = request(local, "PUT", "/v1/accounts/acct_local_a/budget", admin, {"budget_usd": "-1"})
    assert status == 400
    assert bad["field"] == "budget_usd"


def test_given_an_admin_then_checkout_and_portal_pages_come_from_stripe(local: Any) -> None:
    admin = local.issuer.mint("user-x", "acct_local_b", "admin")
    status, checkout = request(local, "POST", "/v1/accounts/acct_local_b/payment-methods/checkout", admin, {})
    assert status == 200, checkout
    assert checkout["url"].startswith(local.stripe.url)
    status, portal = request(local, "POST", "/v1/accounts/acct_local_b/billing-portal", admin, {})
    assert status == 200, portal
    assert portal["url"].startswith("http")


def test_given_an_operator_token_then_the_operator_route_lists_accounts_and_others_are_refused(local: Any) -> None:
    operator = local.issuer.mint("ops-1", None, None, operator=True)
    status, body = request(local, "GET", "/v1/operator/accounts", operator)
    assert status == 200, body
    assert {"acct_local_a", "acct_local_b"} <= {a["account_id"] for a in body["accounts"]}
    owner = local.issuer.mint("user-a", "acct_local_a", "owner")
    status, _ = request(local, "GET", "/v1/operator/accounts", owner)
    assert status == 403


def test_given_the_local_sign_in_then_its_token_is_accepted_and_a_bad_request_is_refused(local: Any) -> None:
    with urllib.request.urlopen(f"{local.issuer.url}/local/token?account=acct_local_a&role=member", timeout=10) as got:
        token = json.loads(got.read())["access_token"]
    status, _ = request(local, "GET", "/v1/accounts/acct_local_a/forecast", token)
    assert status == 200
    status, _ = request(local, "GET", "/v1/accounts/acct_local_a/usage", local.sign_in("acct_local_a", "admin"))
    assert status == 200
    with pytest.raises(urllib.error.HTTPError) as refused:
        urllib.request.urlopen(f"{local.issuer.url}/local/token?role=member", timeout=10)
    assert refused.value.code == 400


def test_given_the_local_sign_in_of_an_admin_then_its_membership_is_stored_and_its_writes_are_accepted(
    local: Any,
) -> None:
    """Admin writes check the stored role (D208); as Cognito's trigger signs only for a stored membership, the
    local issuer stores the membership it signs for: the local sign-in's admin token may replace the budget, and the
    members table holds the admin; a token the issuer did not sign that way (no stored member) is refused (403)."""
    with urllib.request.urlopen(
        f"{local.issuer.url}/local/token?account=acct_local_b&role=admin&user=ada", timeout=10
    ) as got:
        token = json.loads(got.read())["access_token"]
    status, body = request(local, "PUT", "/v1/accounts/acct_local_b/budget", token, {"budget_usd": "75.00"})
    assert (status, body["budget_usd"]) == (200, "75.00"), body
    status, body = request(local, "GET", "/v1/accounts/acct_local_b/members", token)
    assert ("ada", "admin", "active") in [(m["user"], m["role"], m["status"]) for m in body["members"]], body
    local.issuer.signed_in, hook = None, local.issuer.signed_in
    try:
        unsigned = local.issuer.mint("ben", "acct_local_b", "admin")
    finally:
        local.issuer.signed_in = hook
    status, body = request(local, "PUT", "/v1/accounts/acct_local_b/budget", unsigned, {"budget_usd": "1.00"})
    assert (status, body["code"]) == (403, "forbidden"), body


def test_given_an_invoice_id_in_a_crypto_path_then_only_its_slash_free_key_reaches_the_function(local: Any) -> None:
    """The gateway URL-decodes the path before matching routes, as API Gateway HTTP APIs do: ``%2F`` is a separator
    there, so ``<account>%2F<period>`` matches no route (the gateway's own 404); the key ``<account>~<period>`` is
    routed to the crypto function."""
    token = local.issuer.mint("user-a", "acct_local_a", "admin")
    bills = "/v1/accounts/acct_local_a/crypto/bills"
    status, body = request(local, "POST", f"{bills}/acct_local_a%2F2026-10/quotes", token, {"asset": "USDC"})
    assert (status, body) == (404, {"message": "Not Found"})
    member = local.issuer.mint("user-m", "acct_local_a", "member")  # refused by the function itself, before any read
    paid = {"chain": "ethereum", "tx_id": "0x" + "ab" * 32}
    status, body = request(local, "POST", f"{bills}/acct_local_a~2026-10/transactions", member, paid)
    assert (status, body) == (
        403,
        {"code": "forbidden", "message": "not allowed to manage account 'acct_local_a'", "field": None},
    )
    status, body = request(local, "POST", f"{bills}/acct_local_a-2026-10/transactions", token, paid)
    assert (status, body["code"], body["field"]) == (400, "invalid_request", "path.invoice")
