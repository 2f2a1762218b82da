"""Every route of the account API (enumerated from template.yaml, so a new route joins these tests) refuses a request
without verified claims (401), a token of another account (403, whether or not that account exists: nothing is read
before the check) and, on write routes, a role below the one it needs (403); operators read but do not manage.
The user's own routes (invitations) need a verified user and no account.
The minimum role of each route is written here, apart from the handler."""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import pytest

from kilo_billing.account_store import DynamoAccountDirectory
from kilo_billing.accounts import AccountProfile
from kilo_billing.rating import TierChange
from tests.account_api_support import ROUTES_FUNCTION, api_environment, call, claims, store_members, utc

PUBLIC = {("GET", "/v1/pricing"), ("GET", "/openapi.json")}
OPERATOR_ONLY = {("GET", "/v1/operator/accounts")}
# about the signed-in user, not an account: any verified token (a user invited to a first account has no account
# claims); each acts on the token's own user only (tests/integration/test_account_api_invitations.py)
USER_ROUTES = {
    ("GET", "/v1/invitations"),
    ("POST", "/v1/invitations/{account_id}/accept"),
    ("POST", "/v1/invitations/{account_id}/decline"),
}
# the least role each account route needs: members read, admins manage billing, owners export and erase
NEEDS = {
    ("GET", "/v1/accounts/{account_id}/usage"): "member",
    ("GET", "/v1/accounts/{account_id}/meetings"): "member",
    ("GET", "/v1/accounts/{account_id}/forecast"): "member",
    ("GET", "/v1/accounts/{account_id}/recommendations"): "member",
    ("GET", "/v1/accounts/{account_id}/budget"): "member",
    ("PUT", "/v1/accounts/{account_id}/budget"): "admin",
    ("GET", "/v1/accounts/{account_id}/alert-preferences"): "member",
    ("PUT", "/v1/accounts/{account_id}/alert-preferences"): "admin",
    ("POST", "/v1/accounts/{account_id}/alert-preferences/phone-code"): "admin",
    ("POST", "/v1/accounts/{account_id}/alert-preferences/phone-code/confirm"): "admin",
    ("POST", "/v1/accounts/{account_id}/entitlements/check"): "member",
    ("GET", "/v1/accounts/{account_id}/invoices"): "member",
    ("GET", "/v1/accounts/{account_id}/invoices/{number}"): "member",
    ("GET", "/v1/accounts/{account_id}/subscription"): "member",
    ("POST", "/v1/accounts/{account_id}/subscription"): "admin",
    ("POST", "/v1/accounts/{account_id}/payment-methods/checkout"): "admin",
    ("POST", "/v1/accounts/{account_id}/billing-portal"): "admin",
    ("GET", "/v1/accounts/{account_id}/members"): "member",
    ("POST", "/v1/accounts/{account_id}/members"): "admin",
    ("DELETE", "/v1/accounts/{account_id}/members/{user}"): "admin",
    ("GET", "/v1/accounts/{account_id}/export"): "owner",
    ("POST", "/v1/accounts/{account_id}/erase"): "owner",
}
BODIES = {
    ("PUT", "/v1/accounts/{account_id}/budget"): {"budget_usd": "10.00"},
    ("PUT", "/v1/accounts/{account_id}/alert-preferences"): {"email": "a@b.example"},
    ("POST", "/v1/accounts/{account_id}/alert-preferences/phone-code/confirm"): {"code": "123456"},
    ("POST", "/v1/accounts/{account_id}/subscription"): {"tier": "enterprise"},
    ("POST", "/v1/accounts/{account_id}/members"): {"user": "new-user", "role": "member"},
}
ROLES = ("member", "admin", "owner")


def template_routes() -> set[tuple[str, str]]:
    from kilo_dev.template import Template  # noqa: PLC0415

    events = Template(parameters={"Stage": "test"}).resources[ROUTES_FUNCTION]["Properties"]["Events"]
    return {(e["Properties"]["Method"], e["Properties"]["Path"]) for e in events.values()}


ACCOUNT_ROUTES = sorted(template_routes() - PUBLIC - OPERATOR_ONLY - USER_ROUTES)


def concrete(path: str, account: str) -> str:
    return path.replace("{account_id}", account).replace("{number}", f"KB-{account}-00001").replace("{user}", "bob")


@pytest.fixture
def account_api(stack: Any, monkeypatch: pytest.MonkeyPatch) -> Iterator[Any]:
    yield from api_environment(stack, monkeypatch)
    # registered: the refusals below must not depend on the account being unknown


@pytest.fixture
def registered(account_api: Any) -> Any:
    directory = DynamoAccountDirectory(
        account_api.clients["dynamodb"], account_api.template.physical_name("UsageTable")
    )
    for account in ("acct_a", "acct_b"):
        directory.register(AccountProfile(account, (TierChange(utc(2026, 1, 1), "personal"),)))
    store_members(account_api, "acct_a", {f"{role}-1": role for role in ROLES})  # membership changes check these
    return account_api


def test_given_the_template_then_every_account_route_has_a_stated_least_role() -> None:
    assert set(ACCOUNT_ROUTES) == set(NEEDS)
    assert template_routes() >= USER_ROUTES


@pytest.mark.parametrize(("method", "path"), sorted(USER_ROUTES))
def test_given_a_user_route_then_it_needs_a_verified_user_and_no_account(
    registered: Any, method: str, path: str
) -> None:
    answer = call(method, concrete(path, "acct_a"), None)
    assert (answer.status, answer.body["code"]) == (401, "unauthorized")
    for token in ({"sub": "u1"}, claims("acct_b", "member", user="u1"), claims(None, None, user="u1", operator=True)):
        answer = call(method, concrete(path, "acct_a"), token)
        assert answer.status not in (401, 403), (token, answer.body)


@pytest.mark.parametrize(("method", "path"), ACCOUNT_ROUTES + sorted(OPERATOR_ONLY))
def test_given_no_verified_claims_then_every_route_answers_401(registered: Any, method: str, path: str) -> None:
    answer = call(method, concrete(path, "acct_a"), None, BODIES.get((method, path)))
    assert answer.status == 401, answer.body
    assert answer.body["code"] == "unauthorized"
    token_without_account = {"sub": "u1"}  # verified, but names no account or role
    answer = call(method, concrete(path, "acct_a"), token_without_account, BODIES.get((method, path)))
    assert answer.status == 401


@pytest.mark.parametrize(("method", "path"), ACCOUNT_ROUTES)
@pytest.mark.parametrize("target", ["acct_b", "acct_unknown"])
def test_given_another_accounts_owner_token_then_every_route_answers_403(
    registered: Any, method: str, path: str, target: str
) -> None:
    answer = call(method, concrete(path, target), claims("acct_a", "owner"), BODIES.get((method, path)))
    assert answer.status == 403, answer.body
    assert answer.body["code"] == "forbidden"


@pytest.mark.parametrize(("method", "path"), ACCOUNT_ROUTES)
def test_given_each_role_then_routes_below_it_are_forbidden_and_the_others_pass_the_check(
    registered: Any, method: str, path: str
) -> None:
    least = NEEDS[(method, path)]
    for role in ROLES:
        token = claims("acct_a", role, user=f"{role}-1")
        answer = call(method, concrete(path, "acct_a"), token, BODIES.get((method, path)))
        if ROLES.index(role) < ROLES.index(least):
            assert answer.status == 403, (role, answer.body)
        else:
            assert answer.status not in {401, 403}, (role, answer.status, answer.body)


@pytest.mark.parametrize(("method", "path"), ACCOUNT_ROUTES)
def test_given_an_operator_then_reads_pass_and_writes_are_forbidden(registered: Any, method: str, path: str) -> None:
    operator = claims(None, None, user="ops-1", operator=True)
    answer = call(method, concrete(path, "acct_a"), operator, BODIES.get((method, path)))
    if NEEDS[(method, path)] == "member":
        assert answer.status not in (401, 403), answer.body
    else:
        assert answer.status == 403, answer.body


def test_given_a_member_token_then_the_operator_route_is_forbidden(registered: Any) -> None:
    assert call("GET", "/v1/operator/accounts", claims("acct_a", "owner")).status == 403
    answer = call("GET", "/v1/operator/accounts", claims(None, None, user="ops", operator=True))
    assert answer.status == 200
    assert [a["account_id"] for a in answer.body["accounts"]] == ["acct_a", "acct_b"]
