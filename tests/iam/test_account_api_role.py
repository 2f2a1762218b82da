"""The account API under its generated role (AccountApiFunctionRole): a member's month of usage (the profile, the
counters, the open sessions' index), an admin's budget replaced, members invited (the invitee listing, accepting or
declining: the ``members_by_user`` index, UpdateItem, DeleteItem) and an owner removed (the removal's
``DeleteItem`` with a ``ConditionCheckItem`` that another owner remains, one transaction) - moto enforcing IAM.
Seed and figures as in test_account_api.py (Team, November 2026 so far: 29.00). The negative control takes
``ConditionCheckItem`` on the members table away: the owner's removal is refused on it and the owner stays."""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import pytest

from tests.account_api_support import api_environment, call, claims, store_members
from tests.iam.conftest import Roles
from tests.infra.test_generated_iam import MEMBERS_BY_USER_INDEX, MEMBERS_TABLE, OPEN_SESSIONS_INDEX, USAGE_TABLE
from tests.integration.test_account_api import frozen, seed_november

__all__ = ["frozen"]
FUNCTION = "AccountApiFunction"
OWNER, ADMIN = claims("acct_a", "owner", user="owner-1"), claims("acct_a", "admin", user="admin-1")
MEMBER = claims("acct_a", "member")
MIA = claims(None, None, user="mia")
pytestmark = pytest.mark.usefixtures("frozen")


@pytest.fixture
def account_api(stack: Any, monkeypatch: pytest.MonkeyPatch) -> Iterator[Any]:
    yield from api_environment(stack, monkeypatch)


def owners(account_api: Any) -> None:
    """Two owners (olga, oscar) invited and accepting with full permissions: removing one leaves the other. OWNER's
    and ADMIN's own memberships are stored (membership changes check the stored role)."""
    store_members(account_api, "acct_a", {"owner-1": "owner", "admin-1": "admin"})
    for user in ("olga", "oscar"):
        assert call("POST", "/v1/accounts/acct_a/members", OWNER, {"user": user, "role": "owner"}).status == 201
        assert call("POST", "/v1/invitations/acct_a/accept", claims(None, None, user=user)).status == 200


def test_given_the_account_api_under_its_generated_role_then_usage_budget_and_members_work(
    account_api: Any, roles: Roles
) -> None:
    seed_november(account_api)
    owners(account_api)
    with roles.acting_as(FUNCTION) as enforcement:
        usage = call("GET", "/v1/accounts/acct_a/usage", MEMBER)
        budget = call("PUT", "/v1/accounts/acct_a/budget", ADMIN, {"budget_usd": "40.00", "hard_limit_usd": "60.00"})
        added = call("POST", "/v1/accounts/acct_a/members", ADMIN, {"user": "mia", "email": "mia@a.example"})
        mine = call("GET", "/v1/invitations", MIA)
        accepted = call("POST", "/v1/invitations/acct_a/accept", MIA)
        removed = call("DELETE", "/v1/accounts/acct_a/members/mia", ADMIN)
        call("POST", "/v1/accounts/acct_a/members", ADMIN, {"user": "max"})
        declined = call("POST", "/v1/invitations/acct_a/decline", claims(None, None, user="max"))
        owner_removed = call("DELETE", "/v1/accounts/acct_a/members/olga", OWNER)
        listed = call("GET", "/v1/accounts/acct_a/members", MEMBER)
    assert enforcement.denied == []
    assert usage.status == 200, usage.body
    assert (usage.body["period"], usage.body["total"], usage.body["open_sessions"]) == ("2026-11", "29.00", 1)
    assert budget.status == 200, budget.body
    assert budget.body["budget_usd"] == "40.00"
    assert (added.status, removed.status, owner_removed.status) == (201, 204, 204), owner_removed.body
    assert ([i["account_id"] for i in mine.body["invitations"]], accepted.status, declined.status) == (
        ["acct_a"],
        200,
        204,
    )
    assert [(m["user"], m["role"]) for m in listed.body["members"]] == [
        ("oscar", "owner"),
        ("owner-1", "owner"),
        ("admin-1", "admin"),
    ]
    assert {
        ("dynamodb:Query", OPEN_SESSIONS_INDEX),
        ("dynamodb:PutItem", MEMBERS_TABLE),
        ("dynamodb:DeleteItem", MEMBERS_TABLE),
        ("dynamodb:ConditionCheckItem", MEMBERS_TABLE),
        ("dynamodb:Query", MEMBERS_BY_USER_INDEX),
        ("dynamodb:UpdateItem", MEMBERS_TABLE),
    } <= enforcement.allowed
    assert {arn for _, arn in enforcement.allowed} <= {
        USAGE_TABLE,
        OPEN_SESSIONS_INDEX,
        MEMBERS_TABLE,
        MEMBERS_BY_USER_INDEX,
    } | {f"{USAGE_TABLE}/index/account_sessions"}


def test_given_condition_check_taken_from_the_account_api_s_role_then_an_owner_s_removal_is_refused_on_it(
    account_api: Any, roles: Roles
) -> None:
    seed_november(account_api)
    owners(account_api)
    without = {("dynamodb:ConditionCheckItem", MEMBERS_TABLE)}
    with roles.acting_as(FUNCTION, without=without) as enforcement:
        removed = call("DELETE", "/v1/accounts/acct_a/members/olga", OWNER)
    assert enforcement.denied == [("dynamodb:ConditionCheckItem", MEMBERS_TABLE)]
    assert removed.status >= 500
    listed = call("GET", "/v1/accounts/acct_a/members", MEMBER)
    assert [(m["user"], m["role"]) for m in listed.body["members"]] == [
        ("olga", "owner"),
        ("oscar", "owner"),
        ("owner-1", "owner"),
        ("admin-1", "admin"),
    ]


def test_given_a_known_stripe_customer_when_an_owner_erases_the_account_under_its_role_then_nothing_is_denied(
    account_api: Any, roles: Roles
) -> None:
    """The erasure under the generated role: the profile cleared, sessions and members pseudonymised, and the billing
    item's digest of the Stripe customer's details replaced (D172: read the ledger, one UpdateItem)."""
    from kilo_billing.periods_store import DynamoLedgerStore  # noqa: PLC0415

    seed_november(account_api)
    store_members(account_api, "acct_a", {"owner-1": "owner"})  # OWNER (D202)
    ledger = DynamoLedgerStore(account_api.clients["dynamodb"], account_api.template.physical_name("UsageTable"))
    ledger.save_billing("acct_a", customer_id="cus_known", customer_details="0" * 32)
    with roles.acting_as(FUNCTION) as enforcement:
        erased = call("POST", "/v1/accounts/acct_a/erase", OWNER)
    assert enforcement.denied == []
    assert erased.status == 200, erased.body
    assert ledger.ledger("acct_a").billing.customer_details not in (None, "0" * 32)
    assert ("dynamodb:UpdateItem", USAGE_TABLE) in enforcement.allowed


def test_given_a_running_room_when_an_owner_erases_the_account_under_its_role_then_its_state_is_dropped(
    account_api: Any, roles: Roles, lambda_context: Any
) -> None:
    """D220: the erasure drops rating's running state of the account's room (its header made version-only,
    its participant items deleted) under the generated role."""
    from kilo_dev import livekit_events as lk  # noqa: PLC0415
    from tests.integration.test_rating_stream import Lambda, deliver_webhook  # noqa: PLC0415

    seed_november(account_api)
    store_members(account_api, "acct_a", {"owner-1": "owner"})
    room = lk.Room("RM_iamerase", "erase-me", account_id="acct_a", created_at=1_794_700_800)
    runner = Lambda(account_api)
    for sid, name, at in (("PA_ann", "ann", 1_794_700_800), ("PA_ben", "ben", 1_794_700_860)):
        deliver_webhook(lk.participant_joined(room, lk.Participant(sid, name, at * 1000)), lambda_context)
        runner.run(runner.poll(), lambda_context)  # ann's join passes the window: her participant item
    room_items = [i for i in account_api.table_items("UsageTable") if i["pk"]["S"] == "ROOM#RM_iamerase"]
    assert any(i["sk"]["S"].startswith("PART#") for i in room_items)
    with roles.acting_as(FUNCTION) as enforcement:
        erased = call("POST", "/v1/accounts/acct_a/erase", OWNER)
    assert (enforcement.denied, erased.status) == ([], 200)
    assert ("dynamodb:DeleteItem", USAGE_TABLE) in enforcement.allowed
    room_items = [i for i in account_api.table_items("UsageTable") if i["pk"]["S"] == "ROOM#RM_iamerase"]
    assert sorted(i["sk"]["S"] for i in room_items) == ["SESSION#PA_ann", "SESSION#PA_ben", "STATE"]
    assert "state_zlib" not in next(i for i in room_items if i["sk"]["S"] == "STATE")
