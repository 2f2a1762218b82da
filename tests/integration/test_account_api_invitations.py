"""Members join by invitation (D200), through the account API's handler and Cognito's pre-token trigger on moto
(the members table and its ``members_by_user`` index from template.yaml): adding a member invites them; the invitation
gives no claims at sign-in (so no access) and is not the user's account until they accept it through the API; they
may decline it; it ends 7 days after it was made (the template's default), and an ended one can be neither accepted
nor listed, and may be made again."""

from __future__ import annotations

from collections.abc import Iterator
from datetime import timedelta
from typing import Any

import pytest
import time_machine

from kilo_account_api.adapters import DynamoMembers
from kilo_account_api.model import Member
from kilo_billing.auth import Role
from tests.account_api_support import api_environment, call, claims, new_key, store_members, utc
from tests.conftest import LambdaContext
from tests.integration.test_account_api import NOW, register

OWNER = claims("acct_a", "owner", user="olga")
IVAN = claims(None, None, user="ivan")  # signed in, no account yet: the token of a user who belongs nowhere


@pytest.fixture
def account_api(stack: Any, monkeypatch: pytest.MonkeyPatch) -> Iterator[Any]:
    yield from api_environment(stack, monkeypatch)


@pytest.fixture(autouse=True)
def frozen() -> Iterator[None]:
    with time_machine.travel(NOW, tick=False):
        yield


@pytest.fixture
def acct_a(account_api: Any) -> Any:
    """acct_a with its owner olga, a member since before invitations (written as the store writes a membership)."""
    register(account_api, "acct_a")
    store = DynamoMembers(account_api.clients["dynamodb"], account_api.template.physical_name("MembersTable"))
    store.add(Member("acct_a", "olga", "olga@a.example", Role.OWNER, utc(2026, 10, 1)))
    return account_api


def sign_in_claims(user: str) -> dict[str, str]:
    """What Cognito's pre-token trigger (version 1) puts into ``user``'s ID token."""
    from kilo_account_api import dependencies  # noqa: PLC0415
    from kilo_account_api.pretoken_handler import lambda_handler  # noqa: PLC0415

    dependencies.sign_in_dependencies.cache_clear()
    event = {
        "version": "1",
        "triggerSource": "TokenGeneration_HostedAuth",
        "userName": user,
        "request": {"userAttributes": {"sub": user}, "groupConfiguration": {"groupsToOverride": []}},
        "response": {"claimsOverrideDetails": None},
    }
    answered = lambda_handler(event, LambdaContext())  # type: ignore[arg-type]
    found: dict[str, str] = answered["response"]["claimsOverrideDetails"]["claimsToAddOrOverride"]
    return found


def test_given_an_invitation_then_it_grants_nothing_until_the_user_accepts_it(acct_a: Any) -> None:
    invited = call(
        "POST", "/v1/accounts/acct_a/members", OWNER, {"user": "ivan", "email": "ivan@x.example", "role": "admin"}
    )
    assert (invited.status, invited.body) == (
        201,
        {
            "user": "ivan",
            "email": "ivan@x.example",
            "role": "admin",
            "added_at": "2026-11-15T12:00:00Z",
            "status": "invited",
            "expires_at": "2026-11-22T12:00:00Z",
        },
    )
    assert sign_in_claims("ivan") == {}  # no account claims: every account route answers 401
    assert call("GET", "/v1/accounts/acct_a/usage", IVAN).status == 401
    listed = call("GET", "/v1/accounts/acct_a/members", OWNER).body["members"]
    assert [(m["user"], m["status"]) for m in listed] == [("olga", "active"), ("ivan", "invited")]
    mine = call("GET", "/v1/invitations", IVAN)
    assert (mine.status, mine.body) == (
        200,
        {
            "user": "ivan",
            "invitations": [
                {
                    "account_id": "acct_a",
                    "role": "admin",
                    "email": "ivan@x.example",
                    "invited_at": "2026-11-15T12:00:00Z",
                    "expires_at": "2026-11-22T12:00:00Z",
                }
            ],
        },
    )
    assert call("GET", "/v1/invitations", claims(None, None, user="nina")).body == {"user": "nina", "invitations": []}
    # another user cannot accept it, nor can the inviter on ivan's behalf: acceptance is the token's own user
    assert call("POST", "/v1/invitations/acct_a/accept", claims(None, None, user="nina")).status == 404
    assert call("POST", "/v1/invitations/acct_a/accept", OWNER).status == 404
    assert sign_in_claims("ivan") == {}

    with time_machine.travel(NOW + timedelta(days=2), tick=False):
        accepted = call("POST", "/v1/invitations/acct_a/accept", IVAN)
        assert (accepted.status, accepted.body) == (
            200,
            {
                "user": "ivan",
                "email": "ivan@x.example",
                "role": "admin",
                "added_at": "2026-11-17T12:00:00Z",
                "status": "active",
                "expires_at": None,
            },
        )
        assert sign_in_claims("ivan") == {"kilo_account": "acct_a", "kilo_role": "admin"}
        assert call("GET", "/v1/invitations", IVAN).body["invitations"] == []
        again = call("POST", "/v1/invitations/acct_a/accept", IVAN)
        assert (again.status, again.body["code"]) == (404, "not_found")
        # a member is not invited again, and cannot decline a membership (they leave by being removed)
        assert call("POST", "/v1/accounts/acct_a/members", OWNER, {"user": "ivan"}).status == 409
        assert call("POST", "/v1/invitations/acct_a/decline", IVAN).status == 404


def test_given_an_invitation_when_the_user_declines_then_it_is_gone_and_grants_nothing(acct_a: Any) -> None:
    call("POST", "/v1/accounts/acct_a/members", OWNER, {"user": "ivan"})
    declined = call("POST", "/v1/invitations/acct_a/decline", IVAN, {})
    assert (declined.status, declined.body) == (204, None)
    assert call("POST", "/v1/invitations/acct_a/accept", IVAN).status == 404
    assert sign_in_claims("ivan") == {}
    assert call("GET", "/v1/invitations", IVAN).body["invitations"] == []
    assert [m["user"] for m in call("GET", "/v1/accounts/acct_a/members", OWNER).body["members"]] == ["olga"]
    assert call("POST", "/v1/invitations/acct_a/decline", IVAN).status == 404
    # the account may invite again
    assert call("POST", "/v1/accounts/acct_a/members", OWNER, {"user": "ivan"}).status == 201


def test_given_an_invitation_not_accepted_within_a_week_then_it_has_ended(acct_a: Any) -> None:
    call("POST", "/v1/accounts/acct_a/members", OWNER, {"user": "ivan", "role": "admin"})
    with time_machine.travel(NOW + timedelta(days=7, seconds=-1), tick=False):
        assert call("POST", "/v1/accounts/acct_a/members", OWNER, {"user": "ivan"}).status == 409  # still open
        assert len(call("GET", "/v1/invitations", IVAN).body["invitations"]) == 1
    with time_machine.travel(NOW + timedelta(days=7), tick=False):
        assert call("GET", "/v1/invitations", IVAN).body["invitations"] == []
        assert [m["user"] for m in call("GET", "/v1/accounts/acct_a/members", OWNER).body["members"]] == ["olga"]
        late = call("POST", "/v1/invitations/acct_a/accept", IVAN)
        assert (late.status, late.body["code"]) == (404, "not_found")
        assert sign_in_claims("ivan") == {}
        renewed = call("POST", "/v1/accounts/acct_a/members", OWNER, {"user": "ivan"})
        assert (renewed.status, renewed.body["role"], renewed.body["expires_at"]) == (
            201,
            "member",
            "2026-11-29T12:00:00Z",
        )
    stored = acct_a.clients["dynamodb"].get_item(
        TableName=acct_a.template.physical_name("MembersTable"),
        Key={"pk": {"S": "ACCOUNT#acct_a"}, "sk": {"S": "MEMBER#ivan"}},
        ConsistentRead=True,
    )["Item"]
    # the table's TTL attribute (template.yaml) holds the end, in epoch seconds: 2026-11-29T12:00:00Z
    assert (stored["status"], stored["expires_at"]) == ({"S": "invited"}, {"N": "1795953600"})


def test_given_an_owner_only_invited_as_owner_then_the_last_owner_still_cannot_leave(acct_a: Any) -> None:
    """An invitation to be owner is no owner: removing the account's one active owner stays a 409."""
    assert call("POST", "/v1/accounts/acct_a/members", OWNER, {"user": "bob", "role": "owner"}).status == 201
    refused = call("DELETE", "/v1/accounts/acct_a/members/olga", OWNER)
    assert (refused.status, refused.body["message"]) == (409, "the account's last owner cannot be removed")
    assert sign_in_claims("olga") == {"kilo_account": "acct_a", "kilo_role": "owner"}
    # an admin cannot withdraw an owner's invitation; the owner can
    store_members(acct_a, "acct_a", {"adam": "admin"})
    assert call("DELETE", "/v1/accounts/acct_a/members/bob", claims("acct_a", "admin", user="adam")).status == 409
    assert call("DELETE", "/v1/accounts/acct_a/members/bob", OWNER).status == 204
    assert call("POST", "/v1/invitations/acct_a/accept", claims(None, None, user="bob")).status == 404


def test_given_an_answer_with_a_body_other_than_none_or_empty_then_400_and_nothing_changes(acct_a: Any) -> None:
    call("POST", "/v1/accounts/acct_a/members", OWNER, {"user": "ivan"})
    for body in ({"role": "owner"}, [], "yes"):
        answer = call("POST", "/v1/invitations/acct_a/accept", IVAN, body)
        assert (answer.status, answer.body["code"]) == (400, "invalid_request"), body
    assert call("GET", "/v1/invitations", IVAN).body["invitations"][0]["role"] == "member"
    assert call("GET", "/v1/invitations", None).status == 401


def test_given_a_removed_admin_with_a_token_still_valid_then_they_cannot_make_themselves_a_member_again(
    acct_a: Any,
) -> None:
    """A token outlives a removal (its lifetime, D100). Before D202 the removed admin's token invited mia back
    (201) and she accepted: a membership outlasting the token. Membership changes now check the stored role."""
    call("POST", "/v1/accounts/acct_a/members", OWNER, {"user": "mia", "role": "admin"})
    mia_signed_in = claims("acct_a", "admin", user="mia")
    assert call("POST", "/v1/invitations/acct_a/accept", mia_signed_in).status == 200
    assert call("POST", "/v1/accounts/acct_a/members", mia_signed_in, {"user": "max"}).status == 201  # an admin
    assert call("DELETE", "/v1/accounts/acct_a/members/mia", OWNER).status == 204
    back = call("POST", "/v1/accounts/acct_a/members", mia_signed_in, {"user": "mia", "role": "admin"})
    assert (back.status, back.body["code"]) == (403, "forbidden")
    assert call("DELETE", "/v1/accounts/acct_a/members/max", mia_signed_in).status == 403
    assert call("POST", "/v1/invitations/acct_a/accept", mia_signed_in).status == 404
    assert sign_in_claims("mia") == {}
    listed = call("GET", "/v1/accounts/acct_a/members", OWNER).body["members"]
    assert [(m["user"], m["status"]) for m in listed] == [("olga", "active"), ("max", "invited")]


def test_given_a_token_role_above_the_stored_one_then_membership_changes_follow_the_stored_role(acct_a: Any) -> None:
    """A token naming owner for a user stored as admin (issued before a change, or by a stale sign-in) cannot invite
    an owner: the stored role decides."""
    call("POST", "/v1/accounts/acct_a/members", OWNER, {"user": "ada", "role": "admin"})
    call("POST", "/v1/invitations/acct_a/accept", claims(None, None, user="ada"))
    as_owner = claims("acct_a", "owner", user="ada")
    refused = call("POST", "/v1/accounts/acct_a/members", as_owner, {"user": "oz", "role": "owner"})
    assert (refused.status, refused.body["field"]) == (400, "role")
    assert call("DELETE", "/v1/accounts/acct_a/members/olga", as_owner).status == 409  # an admin cannot remove owners


def test_given_a_removed_owner_with_a_token_still_valid_then_no_export_and_no_erasure(acct_a: Any) -> None:
    """The erasure cannot be undone and an export hands out everything: both check the stored role too (D202);
    before, the removed owner's token erased the account (200)."""
    store_members(acct_a, "acct_a", {"otto": "owner"})
    otto = claims("acct_a", "owner", user="otto")
    assert call("GET", "/v1/accounts/acct_a/export", otto).status == 200
    assert call("DELETE", "/v1/accounts/acct_a/members/otto", OWNER).status == 204
    assert call("GET", "/v1/accounts/acct_a/export", otto).status == 403
    erased = call("POST", "/v1/accounts/acct_a/erase", otto)
    assert (erased.status, erased.body["code"]) == (403, "forbidden")
    members = call("GET", "/v1/accounts/acct_a/export", OWNER).body["members"]
    assert [(m["user"], m["email"]) for m in members] == [("olga", "olga@a.example")]  # nothing erased


def test_given_the_invitee_accepts_while_the_invitation_is_withdrawn_then_409_and_the_membership_stays(
    acct_a: Any, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Review B finding 6: the withdrawal read ivan as invited; ivan accepts before its delete. The delete was
    unconditional (204, an active member removed without the owners' rules); it is now conditioned on the invitation
    still being one: 409 naming the race, ivan stays a member."""
    from dataclasses import replace  # noqa: PLC0415

    from kilo_account_api import dependencies, handler  # noqa: PLC0415

    call("POST", "/v1/accounts/acct_a/members", OWNER, {"user": "ivan", "role": "admin"})
    client = acct_a.clients["dynamodb"]
    table = acct_a.template.physical_name("MembersTable")

    class AcceptedInBetween:
        """The moto client; ivan's acceptance (the store's own conditional update) lands just before any delete."""

        def __getattr__(self, name: str) -> Any:
            return getattr(client, name)

        def delete_item(self, **request: Any) -> Any:
            DynamoMembers(client, table).accept("acct_a", "ivan", NOW)
            return client.delete_item(**request)

        def transact_write_items(self, **request: Any) -> Any:
            DynamoMembers(client, table).accept("acct_a", "ivan", NOW)
            return client.transact_write_items(**request)

    built = dependencies.dependencies()
    with monkeypatch.context() as patched:
        racing = DynamoMembers(AcceptedInBetween(), table)
        patched.setattr(handler, "dependencies", lambda: replace(built, members=racing))
        withdrawn = call("DELETE", "/v1/accounts/acct_a/members/ivan", OWNER)
    assert withdrawn.status == 409, withdrawn
    assert withdrawn.body["code"] == "conflict"
    assert "accepted" in withdrawn.body["message"], withdrawn.body
    listed = call("GET", "/v1/accounts/acct_a/members", OWNER).body["members"]
    assert [(m["user"], m["status"]) for m in listed] == [("olga", "active"), ("ivan", "active")]


def test_given_a_removed_admin_with_a_token_still_valid_then_no_write_that_outlasts_the_token(acct_a: Any) -> None:
    """Review B finding 3: a removed admin's token redirected the alerts (PUT alert-preferences), lifted the hard
    limit (PUT budget), changed the tier and opened Stripe's pages (200 each, before): every admin write now checks
    the stored role (D208). Before the removal the same token may make them."""
    store_members(acct_a, "acct_a", {"mia": "admin"})
    mia = claims("acct_a", "admin", user="mia")
    writes: list[tuple[str, str, dict[str, Any] | None]] = [
        ("PUT", "/v1/accounts/acct_a/alert-preferences", {"email": "mia@attacker.example"}),
        ("PUT", "/v1/accounts/acct_a/budget", {"budget_usd": "50.00"}),
        ("POST", "/v1/accounts/acct_a/subscription", {"tier": "enterprise"}),
        ("POST", "/v1/accounts/acct_a/billing-portal", None),
        ("POST", "/v1/accounts/acct_a/payment-methods/checkout", None),
        ("POST", "/v1/accounts/acct_a/alert-preferences/phone-code", None),
        ("POST", "/v1/accounts/acct_a/alert-preferences/phone-code/confirm", {"code": "123456"}),
    ]
    assert call("PUT", "/v1/accounts/acct_a/budget", mia, {"budget_usd": "40.00"}).status == 200  # still an admin
    assert call("DELETE", "/v1/accounts/acct_a/members/mia", OWNER).status == 204
    for method, path, body in writes:
        refused = call(method, path, mia, body)
        assert (refused.status, refused.body["code"]) == (403, "forbidden"), (path, refused.body)
    kept = call("GET", "/v1/accounts/acct_a/alert-preferences", OWNER).body
    assert kept["email"] != "mia@attacker.example"
    assert call("GET", "/v1/accounts/acct_a/budget", OWNER).body["budget_usd"] == "40.00"


# the price book's words (pricebooks/2026-01-01.json: personal has no entitlements; team and enterprise include
# team_collaboration), written out, not derived from the book
NO_COLLABORATION = {
    "code": "conflict",
    "message": "account 'acct_a' is on the personal tier, which lacks the team_collaboration entitlement that members "
    "need: upgrade to team or enterprise",
    "field": None,
}

# the invitee's refusal (mia, invited on November 28th at noon for the template's 7 days): says who must do what
NOT_YET_ACCEPTABLE = NO_COLLABORATION | {
    "message": "account 'acct_a' is on the personal tier, which lacks the team_collaboration entitlement that members "
    "need: the account's owner must upgrade to team or enterprise before the invitation can be accepted (it stays "
    "open until 2026-12-05T12:00:00Z)"
}


def test_given_a_downgrade_to_personal_then_members_stay_new_ones_are_refused_and_invitations_wait(
    acct_a: Any,
) -> None:
    """D210: members need team_collaboration. acct_a (team) invites ivan and mia on the 28th, ivan accepts, the
    owner downgrades to personal (from December 1st); on December 2nd mia's acceptance and a new invitation are 409
    naming the tier and the entitlement, nothing is written, ivan keeps his membership and mia her invitation, which
    she accepts once the account is back on team."""
    store = DynamoMembers(acct_a.clients["dynamodb"], acct_a.template.physical_name("MembersTable"))
    mia = claims(None, None, user="mia")
    with time_machine.travel(utc(2026, 11, 28, 12), tick=False):
        for user in ("ivan", "mia"):
            assert call("POST", "/v1/accounts/acct_a/members", OWNER, {"user": user}).status == 201
        assert call("POST", "/v1/invitations/acct_a/accept", IVAN).status == 200
        down = call("POST", "/v1/accounts/acct_a/subscription", OWNER, {"tier": "personal"}, headers=new_key())
        assert (down.status, down.body["effective_at"]) == (200, "2026-12-01T00:00:00Z")
    with time_machine.travel(utc(2026, 12, 2, 9), tick=False):
        stored_before = {(m.user, m.status.value, m.added_at) for m in store.members("acct_a")}
        refused = call("POST", "/v1/invitations/acct_a/accept", mia)
        assert (refused.status, refused.body) == (409, NOT_YET_ACCEPTABLE)
        invited = call("POST", "/v1/accounts/acct_a/members", OWNER, {"user": "zoe", "email": "zoe@z.example"})
        assert (invited.status, invited.body) == (409, NO_COLLABORATION)
        assert {(m.user, m.status.value, m.added_at) for m in store.members("acct_a")} == stored_before
        assert store.member("acct_a", "zoe") is None
        listed = call("GET", "/v1/accounts/acct_a/members", OWNER).body["members"]
        assert [(m["user"], m["status"]) for m in listed] == [
            ("olga", "active"),
            ("ivan", "active"),
            ("mia", "invited"),
        ]
        assert sign_in_claims("ivan") == {"kilo_account": "acct_a", "kilo_role": "member"}  # members keep access
        assert sign_in_claims("mia") == {}
        # no invitation: 404 as before, whatever the tier
        assert call("POST", "/v1/invitations/acct_a/accept", claims(None, None, user="zoe")).status == 404
    with time_machine.travel(utc(2026, 12, 3, 10), tick=False):
        up = call("POST", "/v1/accounts/acct_a/subscription", OWNER, {"tier": "team"}, headers=new_key())
        assert (up.status, up.body["change"]) == (200, "upgrade_now")
        accepted = call("POST", "/v1/invitations/acct_a/accept", mia)
        assert (accepted.status, accepted.body["status"], accepted.body["added_at"]) == (
            200,
            "active",
            "2026-12-03T10:00:00Z",
        )


def test_given_a_downgrade_at_midnight_when_an_acceptance_could_land_after_it_then_409_and_nothing_is_written(
    acct_a: Any,
) -> None:
    """D210, amended: the acceptance's write lands after the instant it is judged at, at the latest when the
    invocation times out. At 23:59:50 on November 30th with 29 s left, a downgrade to personal at midnight could
    take effect first: 409 naming when, mia still invited. At 23:59:30 with 29 s left the invocation ends on team:
    ivan is accepted."""
    store = DynamoMembers(acct_a.clients["dynamodb"], acct_a.template.physical_name("MembersTable"))
    mia = claims(None, None, user="mia")
    with time_machine.travel(utc(2026, 11, 28, 12), tick=False):
        for user in ("ivan", "mia"):
            assert call("POST", "/v1/accounts/acct_a/members", OWNER, {"user": user}).status == 201
        down = call("POST", "/v1/accounts/acct_a/subscription", OWNER, {"tier": "personal"}, headers=new_key())
        assert (down.status, down.body["effective_at"]) == (200, "2026-12-01T00:00:00Z")
    with time_machine.travel(utc(2026, 11, 30, 23, 59, 50), tick=False):
        refused = call("POST", "/v1/invitations/acct_a/accept", mia, remaining_ms=29_000)
        assert (refused.status, refused.body) == (
            409,
            NO_COLLABORATION
            | {
                "message": "account 'acct_a' moves to the personal tier at 2026-12-01T00:00:00Z, before this "
                "acceptance could be recorded, and that tier lacks the team_collaboration entitlement that members "
                "need: the account's owner must upgrade to team or enterprise before the invitation can be accepted "
                "(it stays open until 2026-12-05T12:00:00Z)"
            },
        )
        assert [(m.user, m.status.value) for m in store.members("acct_a") if m.user == "mia"] == [("mia", "invited")]
        assert sign_in_claims("mia") == {}
    with time_machine.travel(utc(2026, 11, 30, 23, 59, 30), tick=False):
        accepted = call("POST", "/v1/invitations/acct_a/accept", IVAN, remaining_ms=29_000)
        assert (accepted.status, accepted.body["added_at"]) == (200, "2026-11-30T23:59:30Z")


NOT_A_USER_ID = "'.' and '..' are not user ids: a browser rewrites them in a URL path (send another id)"


@pytest.mark.parametrize("user", [".", ".."])
def test_given_a_dot_user_id_when_invited_then_400_names_the_user_and_nothing_is_stored(acct_a: Any, user: str) -> None:
    """``fetch(".../members/..")`` would reach ``.../accounts/acct_a`` instead: such an invitation could never be
    withdrawn from the page, so it is never made."""
    answer = call("POST", "/v1/accounts/acct_a/members", OWNER, {"user": user})
    assert (answer.status, answer.body["code"], answer.body["field"]) == (400, "invalid_request", "user"), answer.body
    assert answer.body["message"] == f"user: Value error, {NOT_A_USER_ID}"
    assert [m["user"] for m in call("GET", "/v1/accounts/acct_a/members", OWNER).body["members"]] == ["olga"]


@pytest.mark.parametrize("user", [".", ".."])
def test_given_a_dot_user_id_in_the_path_when_removed_then_400_names_the_path_parameter(acct_a: Any, user: str) -> None:
    answer = call("DELETE", f"/v1/accounts/acct_a/members/{user}", OWNER)
    assert (answer.status, answer.body) == (
        400,
        {"code": "invalid_request", "message": f"path.user: {NOT_A_USER_ID}", "field": "path.user"},
    )


def test_given_ids_with_dots_that_are_not_path_segments_then_they_are_invited(acct_a: Any) -> None:
    """Guard: only the two path segments a browser rewrites are refused."""
    for user in ("...", ".ivan", "i.van"):
        assert call("POST", "/v1/accounts/acct_a/members", OWNER, {"user": user}).status == 201, user
