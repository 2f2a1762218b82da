"""Signing in through Cognito's hosted UI takes only a sign-in this page started (no login CSRF).

Headless Chromium on the dashboard's own server, configured for Cognito; a stand-in for the hosted UI on 127.0.0.1
answers ``/oauth2/authorize`` as Cognito's implicit flow does: a redirect back to ``redirect_uri`` with the ID token
(carrying the request's ``nonce``) and the request's ``state`` in the fragment. A link carrying someone else's token
(an attacker's own, valid ID token) must not sign the browser into their account.
"""

from __future__ import annotations

import base64
import json
import re
import urllib.parse
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler
from typing import Any, ClassVar

import pytest
from playwright.sync_api import expect

from kilo_dev.processes import LoopbackServer
from kilo_dev.webserve import DashboardServer, SiteConfig

pytestmark = [pytest.mark.browser]
CLIENT_ID = "dashboard-client"


def id_token(claims: dict[str, Any]) -> str:
    """A JWT-shaped ID token (the page only reads its claims; the API's authorizer checks signatures)."""

    def part(value: dict[str, Any]) -> str:
        return base64.urlsafe_b64encode(json.dumps(value).encode()).decode().rstrip("=")

    return f"{part({'alg': 'RS256', 'kid': 'k1'})}.{part(claims)}.c2lnbmF0dXJl"


def claims_for(account: str, nonce: str | None = None) -> dict[str, Any]:
    claims = {"sub": f"user-{account}", "email": f"owner@{account}.example", "kilo_account": account,
              "kilo_role": "owner", "aud": CLIENT_ID, "token_use": "id"}  # fmt: skip
    return claims | ({"nonce": nonce} if nonce is not None else {})


class HostedUi(BaseHTTPRequestHandler):
    """Cognito's ``/oauth2/authorize`` (implicit flow) for the account ``acct-alice``."""

    asked: ClassVar[list[dict[str, str]]] = []

    def log_message(self, *args: Any) -> None:
        return

    def do_GET(self) -> None:
        url = urllib.parse.urlsplit(self.path)
        query = dict(urllib.parse.parse_qsl(url.query))
        HostedUi.asked.append(query)
        fragment = urllib.parse.urlencode(
            {
                "id_token": id_token(claims_for("acct-alice", query.get("nonce"))),
                "access_token": "a",
                "expires_in": "3600",
                "token_type": "Bearer",
                "state": query.get("state", ""),
            }
        )
        self.send_response(302)
        self.send_header("Location", f"{query['redirect_uri']}#{fragment}")
        self.end_headers()


@pytest.fixture
def site() -> Iterator[tuple[DashboardServer, LoopbackServer]]:
    HostedUi.asked.clear()
    hosted = LoopbackServer(HostedUi, "hosted-ui")
    hosted.start()
    config = SiteConfig(auth_mode="cognito", authorize_url=f"{hosted.url}/oauth2/authorize", client_id=CLIENT_ID)
    try:
        # the API is not needed to sign in: a closed port (its pages answer 502, shown as errors, not thrown)
        with DashboardServer("http://127.0.0.1:9", config) as server:
            yield server, hosted
    finally:
        hosted.stop()


def stored_token(page: Any) -> str | None:
    value: str | None = page.evaluate("() => sessionStorage.getItem('kilo.token')")
    return value


def test_given_the_hosted_ui_sign_in_then_the_token_it_returns_with_this_pages_state_and_nonce_is_taken(
    page: Any, site: tuple[DashboardServer, LoopbackServer]
) -> None:
    server, _ = site
    page.goto(f"{server.url}/#/signin")
    page.get_by_role("link", name="Sign in with your Kilo account").click()
    page.wait_for_url(re.compile(r"#/usage$"))  # back from the hosted UI, the fragment dropped
    expect(page.locator("#who")).to_contain_text("acct-alice · owner")
    [asked] = HostedUi.asked
    assert (asked["client_id"], asked["response_type"]) == (CLIENT_ID, "token")
    assert re.fullmatch(r"[0-9a-f]{32}", asked["state"])
    assert re.fullmatch(r"[0-9a-f]{32}", asked["nonce"])
    assert stored_token(page) == id_token(claims_for("acct-alice", asked["nonce"]))


def test_given_a_link_carrying_someone_elses_id_token_then_the_browser_is_not_signed_in(
    page: Any, site: tuple[DashboardServer, LoopbackServer]
) -> None:
    """Login CSRF: the attacker's own valid token (their account), state and nonce of their own choosing."""
    server, _ = site
    forged = id_token(claims_for("acct-mallory", "n0nce"))
    page.goto(f"{server.url}/#id_token={forged}&state=st4te")
    expect(page.locator("#status")).to_contain_text("Not signed in: this sign-in was not started from this page")
    assert stored_token(page) is None
    assert "id_token" not in page.url  # dropped from the address bar all the same
    expect(page.locator("#who")).to_contain_text("Sign in")
    # the local stack's sign-in links are not taken either when the site signs in with Cognito
    page.goto(f"{server.url}/#token={forged}")
    page.reload()
    assert stored_token(page) is None


def test_given_a_sign_in_answer_replayed_then_it_is_refused_its_state_being_used_once(
    page: Any, site: tuple[DashboardServer, LoopbackServer]
) -> None:
    server, _ = site
    page.goto(f"{server.url}/#/signin")
    answers: list[str] = []
    page.on("framenavigated", lambda frame: answers.append(frame.url) if "id_token=" in frame.url else None)
    page.get_by_role("link", name="Sign in with your Kilo account").click()
    page.wait_for_url(re.compile(r"#/usage$"))
    expect(page.locator("#who")).to_contain_text("acct-alice · owner")
    page.get_by_role("button", name="Sign out").click()
    assert stored_token(page) is None
    [answer] = answers
    page.goto(answer)  # the same redirect again (from history, or a copied link)
    page.reload()
    expect(page.locator("#who")).to_contain_text("Sign in")
    assert stored_token(page) is None


@pytest.mark.parametrize(
    ("failure", "link"), [("500", "token"), ("unreachable", "id_token"), ("not JSON", "token")], ids=str
)
def test_given_config_json_unreadable_then_a_token_link_is_refused_with_a_visible_error(
    page: Any, site: tuple[DashboardServer, LoopbackServer], failure: str, link: str
) -> None:
    """Without its configuration the page cannot know it is on the local stack: a ``#token=`` or ``#id_token=``
    link (no state, no nonce) is not taken - it would reopen the login CSRF the Cognito check closed (D117)."""
    server, _ = site

    def answer(route: Any) -> None:
        if failure == "unreachable":
            route.abort()
        else:
            route.fulfill(status=500 if failure == "500" else 200, content_type="text/html", body="<html>")

    page.route("**/config.json", answer)
    forged = id_token(claims_for("acct-mallory"))
    page.goto(f"{server.url}/#{link}={forged}&state=st4te")
    expect(page.locator("#status")).to_contain_text("Not signed in: the dashboard's configuration could not be read")
    assert stored_token(page) is None
    assert "token=" not in page.url
    expect(page.locator("#who")).to_contain_text("Sign in")
