"""Cognito's pre-token-generation trigger under its generated role (AccountSignInClaimsFunctionRole): a member of two
accounts signs in and the token names the one held longest, read from the members table's ``members_by_user`` index -
moto enforcing IAM. Seed and claims as in test_sign_in_trigger.py. The negative control grants the ``Query`` on the
table instead of its index (the role's one grant, misplaced): the sign-in is refused on the index and fails closed."""

from __future__ import annotations

from datetime import timedelta

import pytest

from kilo_account_api.adapters import DynamoMembers
from kilo_account_api.model import Member
from kilo_billing.auth import Role
from kilo_billing.aws import StorageUnavailableError
from tests.iam.conftest import Roles
from tests.infra.test_generated_iam import MEMBERS_BY_USER_INDEX, MEMBERS_TABLE
from tests.integration.test_sign_in_trigger import ADDED, FUNCTION, invoke, members, trigger_event

__all__ = ["members"]


@pytest.fixture
def two_accounts(members: DynamoMembers) -> DynamoMembers:
    """user-7 owns beta and was added to acme three days later (full permissions: the account API's part)."""
    members.add(Member("acme", "user-7", "a@acme.example", Role.OWNER, ADDED + timedelta(days=3)))
    members.add(Member("beta", "user-7", "b@beta.example", Role.OWNER, ADDED))
    return members


def test_given_the_sign_in_trigger_under_its_generated_role_then_the_token_names_the_account_held_longest(
    two_accounts: DynamoMembers, roles: Roles
) -> None:
    with roles.acting_as(FUNCTION) as enforcement:
        answered = invoke(trigger_event("1", "user-7", []))
    assert enforcement.denied == []
    claims = answered["response"]["claimsOverrideDetails"]["claimsToAddOrOverride"]
    assert claims == {"kilo_account": "beta", "kilo_role": "owner"}
    assert enforcement.allowed == {("dynamodb:Query", MEMBERS_BY_USER_INDEX)}


def test_given_the_query_granted_on_the_table_instead_of_its_index_then_the_sign_in_is_refused_on_the_index(
    two_accounts: DynamoMembers, roles: Roles
) -> None:
    without, extra = {("dynamodb:Query", MEMBERS_BY_USER_INDEX)}, [("dynamodb:Query", MEMBERS_TABLE)]
    with (
        roles.acting_as(FUNCTION, without=without, extra=extra) as enforcement,
        pytest.raises(StorageUnavailableError),  # Cognito refuses the sign-in: no token without its claims
    ):
        invoke(trigger_event("1", "user-7", []))
    assert enforcement.denied == [("dynamodb:Query", MEMBERS_BY_USER_INDEX)]
