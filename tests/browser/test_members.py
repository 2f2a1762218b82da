"""The dashboard's Members page in headless Chromium against the local stack (``local_account_stack``: the account API
from template.yaml behind the gateway's JWT authorizer, tokens from the local issuer, which stores the membership it
signs for). A Team account's owner sees the members, invites someone by email and sees the open invitation; a
Personal account's owner gets the API's 409 (members need team_collaboration, D-api-1) shown on the page, and nothing
is stored; a member sees the list without the form."""

from __future__ import annotations

import json
import re
import urllib.request
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any

import pytest
from playwright.sync_api import expect

from kilo_dev.webserve import DashboardServer, serve_for_stack, sign_in_link
from tests.account_api_support import local_account_stack

pytestmark = [pytest.mark.browser, pytest.mark.e2e, pytest.mark.xdist_group("members")]
TEAM, PERSONAL = "acct-members-team", "acct-members-personal"
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


@pytest.fixture(scope="module")
def world(tmp_path_factory: pytest.TempPathFactory) -> Iterator[World]:
    log_path = tmp_path_factory.mktemp("members") / "local-stack.log"
    with local_account_stack(log_path, {TEAM: "team", PERSONAL: "personal"}) as stack:
        site, links = serve_for_stack(stack, [TEAM, PERSONAL])
        try:
            yield World(stack, site, links)
        finally:
            site.stop()


def open_members(world: World, page: Any, link: str) -> None:
    page.goto(link)
    page.wait_for_url(re.compile(r"#/usage$"))
    page.goto(f"{world.site.url}/#/members")
    page.get_by_role("heading", name="Members", level=1).wait_for()


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
    expect(page.locator("#status")).to_have_text(
        "Invitation sent to ivan@team.example; it grants nothing until they accept it."
    )
    row = page.locator("#members-list tr[data-user='ivan-1']")
    expect(row.locator("td")).to_have_text(["ivan-1", "ivan@team.example", "admin", re.compile(r"^\d{4}-\d{2}-\d{2}$")])
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
