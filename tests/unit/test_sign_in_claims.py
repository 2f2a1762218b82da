"""Which account and role a user's token names (``kilo_account_api.sign_in``), worked by hand: the requested account
when it is the user's, else the membership held longest (ties by the smallest account id) - never the one another
account's owner added last, even as owner; operators by group."""

from __future__ import annotations

from datetime import UTC, datetime

import pytest

from kilo_account_api.model import Member, MemberStatus
from kilo_account_api.sign_in import token_claims
from kilo_billing.auth import Role

ADDED = datetime(2026, 11, 1, tzinfo=UTC)
LATER = datetime(2026, 11, 20, tzinfo=UTC)
ZED_MEMBER = Member("zed", "u1", "u1@z.example", Role.MEMBER, ADDED)
BETA_ADMIN = Member("beta", "u1", "u1@b.example", Role.ADMIN, ADDED)
ALPHA_ADMIN = Member("alpha", "u1", "u1@a.example", Role.ADMIN, ADDED)
ACME_OWNER_ADDED_LATER = Member("acme", "u1", "u1@acme.example", Role.OWNER, LATER)
# an invitation u1 has not accepted, made before every membership above and still open
ACME_OWNER_INVITED = Member("acme", "u1", "", Role.OWNER, ADDED.replace(month=10), MemberStatus.INVITED, LATER)


@pytest.mark.parametrize(
    ("memberships", "requested", "groups", "expected"),
    [
        ([ZED_MEMBER], None, [], {"kilo_account": "zed", "kilo_role": "member"}),
        # several accounts added at the same time: the smallest id, whatever the role
        ([ZED_MEMBER, BETA_ADMIN, ALPHA_ADMIN], None, [], {"kilo_account": "alpha", "kilo_role": "admin"}),
        ([ZED_MEMBER, BETA_ADMIN], None, [], {"kilo_account": "beta", "kilo_role": "admin"}),
        # another account's owner made u1 an owner there later: u1 still signs in to the membership held longest
        ([ACME_OWNER_ADDED_LATER, ZED_MEMBER], None, [], {"kilo_account": "zed", "kilo_role": "member"}),
        # ... and reaches it only by asking for it
        ([ACME_OWNER_ADDED_LATER, ZED_MEMBER], "acme", [], {"kilo_account": "acme", "kilo_role": "owner"}),
        # the requested account, when the user belongs to it, even with a lower role
        ([ZED_MEMBER, BETA_ADMIN], "zed", [], {"kilo_account": "zed", "kilo_role": "member"}),
        # a requested account that is not the user's is ignored, not granted
        ([ZED_MEMBER], "beta", [], {"kilo_account": "zed", "kilo_role": "member"}),
        # an invitation is no membership: not chosen though made first, not granted when asked for, alone nothing
        ([ACME_OWNER_INVITED, ZED_MEMBER], None, [], {"kilo_account": "zed", "kilo_role": "member"}),
        ([ACME_OWNER_INVITED, ZED_MEMBER], "acme", [], {"kilo_account": "zed", "kilo_role": "member"}),
        ([ACME_OWNER_INVITED], "acme", [], {}),
        # no membership: no account claims; an operator by group
        ([], None, ["staff", "kilo-operators"], {"kilo_operator": "true"}),
        ([], "beta", ["staff"], {}),
        (
            [BETA_ADMIN],
            None,
            ["kilo-operators"],
            {"kilo_account": "beta", "kilo_role": "admin", "kilo_operator": "true"},
        ),
    ],
)
def test_given_memberships_and_groups_then_the_token_names_one_account_and_role(
    memberships: list[Member], requested: str | None, groups: list[str], expected: dict[str, str]
) -> None:
    assert token_claims(memberships, requested, groups, "kilo-operators") == expected


def test_given_no_operator_group_configured_then_no_group_makes_an_operator() -> None:
    assert token_claims([], None, ["kilo-operators", ""], "") == {}
