"""The dashboard's Members page in headless Chromium against the local stack (``local_account_stack``: the account API
from template.yaml behind the gateway's JWT authorizer, tokens from the local issuer, which stores the membership it
signs for). A Team account's owner sees the members, invites someone by email and sees the open invitation; a
Personal account's owner gets the API's 409 (members need team_collaboration, D210) shown on the page, and nothing
is stored; a member sees the list without the form. Owners and admins withdraw an open invitation and remove a member
from the page (an admin not an owner; a dismissed confirmation removes nobody), and a signed-in person - one who
belongs to no account yet too - accepts or declines their own invitations there, a refused acceptance (the account's
tier lacks team_collaboration) shown as the API says it (D213)."""

from __future__ import annotations

import json
import re
import urllib.request
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest
from playwright.sync_api import expect

from kilo_dev.webserve import DashboardServer, serve_for_stack, sign_in_link
from tests.account_api_support import local_account_stack

pytestmark = [pytest.mark.browser, pytest.mark.e2e, pytest.mark.xdist_group("members")]
TEAM, PERSONAL = "acct-members-team", "acct-members-personal"
TEAM2, DOWNGRADED = "acct-members-team2", "acct-members-downgraded"  # team; personal since an invitation to it
# the price book's words (pricebooks/2026-01-01.json: personal has no entitlements, team and enterprise include
# team_collaboration), written out
REFUSED = (
    f"account '{PERSONAL}' is on the personal tier, which lacks the team_collaboration entitlement that members "
    "need: upgrade to team or enterprise"
)


@dataclass
class World:
    stack: Any
    site: DashboardServer
    links: dict[str, str]  # the owners' sign-in links (user owner-<account>)

    def members(self, account: str) -> list[tuple[str, str, str, str]]:
        """The account's members and open invitations as the API lists them (user, email, role, status)."""
        token = self.stack.sign_in(account, "owner", user=f"owner-{account}")
        request = urllib.request.Request(
            f"{self.stack.url}/v1/accounts/{account}/members", headers={"Authorization": f"Bearer {token}"}
        )
        with urllib.request.urlopen(request, timeout=30) as answer:
            found = json.loads(answer.read())["members"]
        return [(m["user"], m["email"], m["role"], m["status"]) for m in found]

    def expiry(self, account: str, user: str) -> str:
        """The day (UTC) the API says the user's open invitation to the account expires."""
        token = self.stack.sign_in(account, "owner", user=f"owner-{account}")
        request = urllib.request.Request(
            f"{self.stack.url}/v1/accounts/{account}/members", headers={"Authorization": f"Bearer {token}"}
        )
        with urllib.request.urlopen(request, timeout=30) as answer:
            [found] = [m for m in json.loads(answer.read())["members"] if m["user"] == user]
        return str(found["expires_at"])[:10]

    def invite(self, account: str, user: str, email: str, role: str) -> None:
        """An invitation through the API, as the account's owner."""
        token = self.stack.sign_in(account, "owner", user=f"owner-{account}")
        request = urllib.request.Request(
            f"{self.stack.url}/v1/accounts/{account}/members",
            data=json.dumps({"user": user, "email": email, "role": role}).encode(),
            headers={"Authorization": f"Bearer {token}", "Content-Type": "application/json"},
            method="POST",
        )
        with urllib.request.urlopen(request, timeout=30) as answer:
            assert answer.status == 201

    def invitation_from_before(self, account: str, user: str, email: str, role: str) -> datetime:
        """An open invitation as the members table keeps it, stored two days ago when the account was on team (it is
        on personal now: a downgrade since, D210), through the table's adapter; answers when it ends."""
        from kilo_account_api.adapters import DynamoMembers  # noqa: PLC0415
        from kilo_account_api.model import Member, MemberStatus  # noqa: PLC0415
        from kilo_billing.auth import Role  # noqa: PLC0415

        table = DynamoMembers(self.stack.clients["dynamodb"], self.stack.template.physical_name("MembersTable"))
        invited = (datetime.now(UTC) - timedelta(days=2)).replace(microsecond=0)  # whole seconds, as the API's
        ends = invited + timedelta(days=7)
        table.add(Member(account, user, email, Role[role.upper()], invited, MemberStatus.INVITED, ends))
        return ends


@pytest.fixture(scope="module")
def world(tmp_path_factory: pytest.TempPathFactory) -> Iterator[World]:
    log_path = tmp_path_factory.mktemp("members") / "local-stack.log"
    tiers = {TEAM: "team", PERSONAL: "personal", TEAM2: "team", DOWNGRADED: "personal"}
    with local_account_stack(log_path, tiers) as stack:
        site, links = serve_for_stack(stack, [TEAM, PERSONAL])
        try:
            yield World(stack, site, links)
        finally:
            site.stop()


def open_members(world: World, page: Any, link: str, heading: str = "Members") -> None:
    page.goto(link)
    page.wait_for_url(re.compile(r"#/usage$"))
    page.goto(f"{world.site.url}/#/members")
    page.get_by_role("heading", name=heading, level=1).wait_for()


def invite(page: Any, email: str, user: str, role: str) -> None:
    page.get_by_label("Email").fill(email)
    page.get_by_label("Kilo user ID").fill(user)
    page.get_by_label("Role").select_option(role)
    page.get_by_role("button", name="Send invitation").click()


def test_given_a_team_owner_when_inviting_by_email_then_the_open_invitation_is_listed(world: World, page: Any) -> None:
    open_members(world, page, world.links[TEAM])
    owner = page.locator(f"#members-list tr[data-user='owner-{TEAM}']")
    expect(owner).to_contain_text("owner")
    expect(page.get_by_test_id("no-invitations")).to_have_text("No open invitations.")
    invite(page, "ivan@team.example", "ivan-1", "admin")
    row = page.locator("#members-list tr[data-user='ivan-1']")
    expect(row).to_be_visible()
    ends = world.expiry(TEAM, "ivan-1")  # the invitation's own end, as the API set it (INVITATION_DAYS)
    expect(page.locator("#status")).to_have_text(
        f"Invitation sent to ivan@team.example; it grants nothing until they accept it, which they can until {ends}."
    )
    expect(row.locator("td")).to_have_text(["ivan-1", "ivan@team.example", "admin", ends, "Withdraw"])
    # the form's hint names no number of days (the server's INVITATION_DAYS decides)
    expect(page.locator("#invite-user-help")).not_to_contain_text("days")
    assert (("ivan-1", "ivan@team.example", "admin", "invited")) in world.members(TEAM)
    expect(page.get_by_test_id("invite-problem")).to_be_empty()


def test_given_a_personal_owner_when_inviting_then_the_page_shows_the_409_and_nothing_is_stored(
    world: World, page: Any
) -> None:
    open_members(world, page, world.links[PERSONAL])
    invite(page, "mia@personal.example", "mia-1", "member")
    expect(page.get_by_test_id("invite-problem").get_by_role("alert")).to_have_text(REFUSED)
    expect(page.get_by_label("Email")).to_be_focused()
    expect(page.get_by_test_id("no-invitations")).to_be_visible()
    assert world.members(PERSONAL) == [(f"owner-{PERSONAL}", "", "owner", "active")]


def test_given_a_member_then_the_list_shows_without_the_invitation_form(world: World, page: Any) -> None:
    token = world.stack.sign_in(TEAM, "member", user="mo-1")
    open_members(world, page, sign_in_link(world.site.url, token))
    expect(page.locator("#members-list tr[data-user='mo-1']")).to_contain_text("member")
    expect(page.get_by_text("Only owners and admins can invite members.")).to_be_visible()
    expect(page.get_by_role("button", name="Send invitation")).to_have_count(0)


def test_given_a_team_owner_then_an_open_invitation_is_withdrawn_and_a_member_removed_from_the_page(
    world: World, page: Any
) -> None:
    world.invite(TEAM, "wes-1", "wes@team.example", "member")
    world.stack.sign_in(TEAM, "member", user="rae-1")  # the issuer stores the membership it signs for
    open_members(world, page, world.links[TEAM])
    expect(page.get_by_role("button", name=f"Remove owner-{TEAM}")).to_have_count(0)  # nobody removes themselves

    page.get_by_role("button", name="Withdraw the invitation of wes-1").click()
    expect(page.locator("#status")).to_have_text("Invitation of wes@team.example withdrawn.")
    expect(page.locator("#members-list tr[data-user='wes-1']")).to_have_count(0)
    assert [m for m in world.members(TEAM) if m[0] == "wes-1"] == []

    page.once("dialog", lambda dialog: dialog.accept())
    page.get_by_role("button", name="Remove rae-1").click()
    expect(page.locator("#status")).to_have_text("rae-1 is no longer a member.")
    expect(page.locator("#members-list tr[data-user='rae-1']")).to_have_count(0)
    assert [m for m in world.members(TEAM) if m[0] == "rae-1"] == []
    expect(page.get_by_test_id("members-problem")).to_be_empty()


def test_given_an_admin_then_owners_cannot_be_removed_and_a_dismissed_confirmation_removes_nobody(
    world: World, page: Any
) -> None:
    world.stack.sign_in(TEAM, "member", user="max-1")
    token = world.stack.sign_in(TEAM, "admin", user="ada-1")
    open_members(world, page, sign_in_link(world.site.url, token))
    expect(page.locator(f"#members-list tr[data-user='owner-{TEAM}']")).to_contain_text("owner")
    expect(page.get_by_role("button", name=f"Remove owner-{TEAM}")).to_have_count(0)
    page.once("dialog", lambda dialog: dialog.dismiss())
    page.get_by_role("button", name="Remove max-1").click()
    expect(page.locator("#members-list tr[data-user='max-1']")).to_contain_text("member")
    assert ("max-1", "", "member", "active") in world.members(TEAM)


def test_given_a_person_with_no_account_then_they_decline_one_invitation_and_accept_another(
    world: World, page: Any
) -> None:
    world.invite(TEAM, "nia-1", "nia@team.example", "member")
    world.invite(TEAM2, "nia-1", "nia@team.example", "admin")
    token = world.stack.issuer.mint("nia-1", None, None)  # no account claims: she belongs to none yet
    open_members(world, page, sign_in_link(world.site.url, token), heading="Your invitations")
    expect(page.locator("#who")).to_contain_text("nia-1 · no account yet")
    expect(page.get_by_role("link", name="Usage")).to_be_hidden()  # an account's pages need an account
    expect(page.locator("#my-invitations tbody tr")).to_have_count(2)
    expect(page.locator(f"#my-invitations tr[data-account='{TEAM2}'] td").nth(1)).to_have_text("admin")

    page.get_by_role("button", name=f"Decline the invitation to {TEAM2}").click()
    expect(page.locator("#status")).to_have_text(f"Invitation to {TEAM2} declined.")
    expect(page.locator(f"#my-invitations tr[data-account='{TEAM2}']")).to_have_count(0)
    assert [m for m in world.members(TEAM2) if m[0] == "nia-1"] == []

    page.get_by_role("button", name=f"Accept the invitation to {TEAM}").click()
    expect(page.locator("#status")).to_have_text(f"You are now a member of {TEAM}; sign in again to act for it.")
    expect(page.get_by_test_id("no-invitations-to-me")).to_have_text("No open invitations to you.")
    assert ("nia-1", "nia@team.example", "member", "active") in world.members(TEAM)


def test_given_a_member_invited_to_an_account_moved_to_personal_then_the_refused_acceptance_shows_and_the_invitation_stays(
    world: World, page: Any
) -> None:
    ends = world.invitation_from_before(DOWNGRADED, "kai-1", "kai@team.example", "admin")
    token = world.stack.sign_in(TEAM, "member", user="kai-1")
    open_members(world, page, sign_in_link(world.site.url, token))
    expect(page.locator("#members-list tr[data-user='kai-1']")).to_contain_text("member")  # their account's list
    page.get_by_role("button", name=f"Accept the invitation to {DOWNGRADED}").click()
    refused = page.get_by_test_id("answer-problem").get_by_role("alert")
    expect(refused).to_have_text(  # addressed to the invitee: the owner must upgrade, the invitation waits
        f"account '{DOWNGRADED}' is on the personal tier, which lacks the team_collaboration entitlement that "
        "members need: the account's owner must upgrade to team or enterprise before the invitation can be accepted "
        f"(it stays open until {ends:%Y-%m-%dT%H:%M:%S}Z)"
    )
    expect(refused).to_be_focused()
    expect(page.locator(f"#my-invitations tr[data-account='{DOWNGRADED}']")).to_have_count(1)
    assert ("kai-1", "kai@team.example", "admin", "invited") in world.members(DOWNGRADED)
