"""Cognito's pre-token-generation trigger through its handler on moto (the members table and its ``members_by_user``
index from template.yaml): the claims it adds are the ones the account API's routes read (``kilo_billing.auth``).
Events follow Cognito's documented shapes for trigger versions 1 and 2."""

from __future__ import annotations

from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest

from kilo_account_api.adapters import DynamoMembers
from kilo_account_api.model import Member
from kilo_billing.auth import Role, UnauthenticatedError, caller_from_claims
from tests.conftest import LambdaContext

FUNCTION = "AccountSignInClaimsFunction"
ADDED = datetime(2026, 11, 2, 8, tzinfo=UTC)


@pytest.fixture
def members(stack: Any, monkeypatch: pytest.MonkeyPatch) -> Iterator[DynamoMembers]:
    from kilo_account_api import dependencies, settings  # noqa: PLC0415

    for key, value in stack.template.function_environment(FUNCTION).items():
        monkeypatch.setenv(key, value)
    settings.settings.cache_clear()
    dependencies.sign_in_dependencies.cache_clear()
    yield DynamoMembers(stack.clients["dynamodb"], stack.template.physical_name("MembersTable"))
    settings.settings.cache_clear()
    dependencies.sign_in_dependencies.cache_clear()


def trigger_event(version: str, sub: str, groups: list[str], requested: str | None = None) -> dict[str, Any]:
    attributes = {"sub": sub, "email": f"{sub}@example.com", "email_verified": "true"}
    if requested:
        attributes["custom:kilo_account"] = requested
    response: dict[str, Any] = (
        {"claimsOverrideDetails": None} if version == "1" else {"claimsAndScopeOverrideDetails": None}
    )
    return {
        "version": version,
        "triggerSource": "TokenGeneration_HostedAuth",
        "region": "us-east-1",
        "userPoolId": "us-east-1_Example",
        "userName": sub,
        "callerContext": {"awsSdkVersion": "aws-sdk-unknown-unknown", "clientId": "kilo-dashboard"},
        "request": {
            "userAttributes": attributes,
            "groupConfiguration": {"groupsToOverride": groups, "iamRolesToOverride": [], "preferredRole": None},
            "scopes": ["openid", "email"],
        },
        "response": response,
    }


def invoke(event: dict[str, Any]) -> dict[str, Any]:
    from kilo_account_api.pretoken_handler import lambda_handler  # noqa: PLC0415

    return lambda_handler(event, LambdaContext())  # type: ignore[arg-type]


def test_given_a_member_of_two_accounts_when_signing_in_then_the_id_token_names_the_one_held_longest(
    members: DynamoMembers,
) -> None:
    """user-7 owns beta; acme's owner later added user-7 to acme, even as owner: user-7 still signs in to beta."""
    members.add(Member("acme", "user-7", "a@acme.example", Role.OWNER, ADDED + timedelta(days=3)))
    members.add(Member("beta", "user-7", "b@beta.example", Role.OWNER, ADDED))
    members.add(Member("beta", "user-8", "c@beta.example", Role.ADMIN, ADDED))
    answered = invoke(trigger_event("1", "user-7", []))
    claims = answered["response"]["claimsOverrideDetails"]["claimsToAddOrOverride"]
    assert claims == {"kilo_account": "beta", "kilo_role": "owner"}
    assert answered["userName"] == "user-7"  # Cognito expects its own event back, with the response filled in
    caller = caller_from_claims({"sub": "user-7", **claims})
    assert (caller.account_id, caller.role, caller.operator) == ("beta", Role.OWNER, False)


def test_given_version_2_and_a_requested_account_then_both_tokens_carry_the_claims(members: DynamoMembers) -> None:
    members.add(Member("acme", "user-7", "a@acme.example", Role.MEMBER, ADDED))
    members.add(Member("beta", "user-7", "b@beta.example", Role.OWNER, ADDED))
    details = invoke(trigger_event("2", "user-7", ["kilo-operators"], requested="acme"))["response"][
        "claimsAndScopeOverrideDetails"
    ]
    expected = {"kilo_account": "acme", "kilo_role": "member", "kilo_operator": "true"}
    assert details == {
        "idTokenGeneration": {"claimsToAddOrOverride": expected},
        "accessTokenGeneration": {"claimsToAddOrOverride": expected},
    }


def test_given_a_user_of_no_account_then_the_token_has_no_account_and_the_routes_refuse_it(
    members: DynamoMembers,
) -> None:
    members.add(Member("beta", "user-8", "c@beta.example", Role.ADMIN, ADDED))
    claims = invoke(trigger_event("1", "stranger", ["staff"]))["response"]["claimsOverrideDetails"][
        "claimsToAddOrOverride"
    ]
    assert claims == {}
    with pytest.raises(UnauthenticatedError, match="token names no account and role"):
        caller_from_claims({"sub": "stranger", **claims})


def test_given_an_event_without_a_user_then_the_sign_in_fails_closed(members: DynamoMembers) -> None:
    from kilo_account_api.pretoken_handler import MalformedTriggerEventError  # noqa: PLC0415

    event = trigger_event("1", "user-7", [])
    del event["request"]["userAttributes"]["sub"]
    with pytest.raises(MalformedTriggerEventError, match=r"userAttributes\.sub"):
        invoke(event)
