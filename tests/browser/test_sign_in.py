"""Signing in through Cognito's hosted UI: the authorization code grant with PKCE (D451), and only a sign-in this page
started is taken (no login CSRF, D117).

Headless Chromium on the dashboard's own server, configured for Cognito; a stand-in for the hosted UI on 127.0.0.1
(another origin, as Cognito's domain is) answers as Cognito does: ``/oauth2/authorize`` redirects back to
``redirect_uri`` with a one-time ``code`` and the request's ``state`` in the query; ``/oauth2/token`` (POST, form
body, ``Access-Control-Allow-Origin: *`` as Cognito's) gives the ID token - carrying the authorize request's ``nonce``
- only for that code, once, with the same client and ``redirect_uri``, and a ``code_verifier`` whose SHA-256
(base64url, no padding) is the request's ``code_challenge`` (``S256``, the one method Cognito takes); anything else
is 400 ``invalid_grant``. No token ever rides in a URL.
"""

from __future__ import annotations

import base64
import hashlib
import ipaddress
import json
import re
import secrets
import ssl
import urllib.parse
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from http.server import BaseHTTPRequestHandler
from pathlib import Path
from typing import Any, ClassVar

import pytest
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import NameOID
from playwright.sync_api import expect

from kilo_dev.processes import LoopbackServer
from kilo_dev.webserve import DashboardServer, SiteConfig
from tests.browser.conftest import page_in

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


def s256(verifier: str) -> str:
    """RFC 7636 4.2, worked here apart from the page: BASE64URL(SHA256(ASCII(code_verifier))) without padding."""
    return base64.urlsafe_b64encode(hashlib.sha256(verifier.encode("ascii")).digest()).decode().rstrip("=")


class HostedUi(BaseHTTPRequestHandler):
    """Cognito's ``/oauth2/authorize`` and ``/oauth2/token`` (authorization code grant, PKCE) for ``acct-alice``.
    ``refuse``: the error the next authorize request is answered with (the person cancelled, say)."""

    asked: ClassVar[list[dict[str, str]]] = []  # the authorize requests' queries
    exchanged: ClassVar[list[tuple[int, dict[str, str]]]] = []  # each token request: our status, its form
    codes: ClassVar[dict[str, dict[str, str]]] = {}  # code -> its authorize request (a code is redeemed once)
    refuse: ClassVar[str | None] = None

    def log_message(self, *args: Any) -> None:
        return

    def do_GET(self) -> None:
        url = urllib.parse.urlsplit(self.path)
        query = dict(urllib.parse.parse_qsl(url.query))
        HostedUi.asked.append(query)
        if HostedUi.refuse is not None:
            answer = {"error": HostedUi.refuse, "state": query.get("state", "")}
        else:
            code = secrets.token_hex(8)
            HostedUi.codes[code] = query
            answer = {"code": code, "state": query.get("state", "")}
        self.send_response(302)
        self.send_header("Location", f"{query['redirect_uri']}?{urllib.parse.urlencode(answer)}")
        self.end_headers()

    def do_POST(self) -> None:
        length = int(self.headers.get("content-length") or 0)
        form = dict(urllib.parse.parse_qsl(self.rfile.read(length).decode()))
        asked = HostedUi.codes.pop(form.get("code", ""), None)
        good = (
            asked is not None
            and (self.headers.get("content-type") or "").split(";")[0] == "application/x-www-form-urlencoded"
            and form.get("grant_type") == "authorization_code"
            and form.get("client_id") == asked["client_id"]
            and form.get("redirect_uri") == asked["redirect_uri"]
            and asked.get("code_challenge_method") == "S256"
            and s256(form.get("code_verifier", "")) == asked.get("code_challenge")
        )
        HostedUi.exchanged.append((200 if good else 400, form))
        if good and asked is not None:
            body = {"id_token": id_token(claims_for("acct-alice", asked.get("nonce"))), "access_token": "a",
                    "refresh_token": "r", "expires_in": 3600, "token_type": "Bearer"}  # fmt: skip
        else:
            body = {"error": "invalid_grant"}
        data = json.dumps(body).encode()
        self.send_response(200 if good else 400)
        self.send_header("Content-Type", "application/json")
        self.send_header("Access-Control-Allow-Origin", "*")
        self.send_header("Content-Length", str(len(data)))
        self.end_headers()
        self.wfile.write(data)


def self_signed(folder: Path) -> ssl.SSLContext:
    """A server context with a certificate of its own for 127.0.0.1: the hosted UI is served over HTTPS as
    Cognito's is, which the page's Content-Security-Policy requires of the token endpoint (``connect-src 'self'
    https:``); the browser context below accepts the certificate."""
    key = ec.generate_private_key(ec.SECP256R1())
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "127.0.0.1")])
    now = datetime.now(UTC)
    certificate = (
        x509.CertificateBuilder()
        .subject_name(name)
        .issuer_name(name)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - timedelta(hours=1))
        .not_valid_after(now + timedelta(hours=1))
        .add_extension(x509.SubjectAlternativeName([x509.IPAddress(ipaddress.ip_address("127.0.0.1"))]), False)
        .sign(key, hashes.SHA256())
    )
    (folder / "cert.pem").write_bytes(certificate.public_bytes(serialization.Encoding.PEM))
    (folder / "key.pem").write_bytes(
        key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption())
    )
    context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    context.load_cert_chain(folder / "cert.pem", folder / "key.pem")
    return context


@pytest.fixture
def page(browser: Any) -> Iterator[Any]:
    yield from page_in(browser, "UTC", ignore_https_errors=True)  # the hosted UI's own certificate


@pytest.fixture
def site(tmp_path: Path) -> Iterator[tuple[DashboardServer, LoopbackServer]]:
    HostedUi.asked.clear()
    HostedUi.exchanged.clear()
    HostedUi.codes.clear()
    HostedUi.refuse = None
    hosted = LoopbackServer(HostedUi, "hosted-ui")
    # each connection's handshake in its own handler thread, not in the accepting one (a browser's idle
    # preconnection would hold every other request)
    context = self_signed(tmp_path)
    hosted.server.socket = context.wrap_socket(hosted.server.socket, server_side=True, do_handshake_on_connect=False)
    hosted.start()
    authorize = hosted.url.replace("http://", "https://") + "/oauth2/authorize"
    config = SiteConfig(auth_mode="cognito", authorize_url=authorize, client_id=CLIENT_ID)
    try:
        # the API is not needed to sign in: a closed port (its pages answer 502, shown as errors, not thrown)
        with DashboardServer("http://127.0.0.1:9", config) as server:
            yield server, hosted
    finally:
        hosted.stop()


def stored_token(page: Any) -> str | None:
    value: str | None = page.evaluate("() => sessionStorage.getItem('kilo.token')")
    return value


def _sign_in(page: Any, server: DashboardServer) -> list[str]:
    """Click "Sign in" and come back from the hosted UI; the URLs the page was at on the way (each navigation)."""
    seen: list[str] = []
    page.on("framenavigated", lambda frame: seen.append(frame.url))
    page.goto(f"{server.url}/#/signin")
    page.get_by_role("link", name="Sign in with your Kilo account").click()
    page.wait_for_url(re.compile(r"/#/usage$"))  # back from the hosted UI, the code dropped from the address bar
    return seen


def test_given_the_hosted_ui_sign_in_then_its_code_is_exchanged_with_the_verifier_and_the_token_taken(
    page: Any, site: tuple[DashboardServer, LoopbackServer]
) -> None:
    """The authorize request asks for a code with an S256 challenge, a state and a nonce; the page redeems the code
    at the token endpoint with the verifier whose SHA-256 is that challenge (the stand-in refuses any other) and
    takes the ID token carrying its nonce; no URL ever carried a token, and the code left the address bar."""
    server, _ = site
    seen = _sign_in(page, server)
    expect(page.locator("#who")).to_contain_text("acct-alice · owner")
    [asked] = HostedUi.asked
    assert (asked["client_id"], asked["response_type"], asked["code_challenge_method"]) == (CLIENT_ID, "code", "S256")
    assert asked["redirect_uri"] == f"{server.url}/"
    assert re.fullmatch(r"[0-9a-f]{32}", asked["state"])
    assert re.fullmatch(r"[0-9a-f]{32}", asked["nonce"])
    [(status, form)] = HostedUi.exchanged
    # RFC 7636 4.1: 43 to 128 unreserved characters; 43 base64url characters are 32 random bytes
    assert re.fullmatch(r"[A-Za-z0-9_-]{43}", form["code_verifier"])
    assert (status, s256(form["code_verifier"])) == (200, asked["code_challenge"])
    assert (form["grant_type"], form["client_id"], form["redirect_uri"]) == (
        "authorization_code",
        CLIENT_ID,
        f"{server.url}/",
    )
    assert stored_token(page) == id_token(claims_for("acct-alice", asked["nonce"]))
    assert not [url for url in seen if "token" in url]
    assert "code=" not in page.url


def test_given_a_link_carrying_someone_elses_code_then_it_is_not_redeemed_and_the_browser_is_not_signed_in(
    page: Any, site: tuple[DashboardServer, LoopbackServer]
) -> None:
    """Login CSRF: the attacker's own valid code (their account), with a state of their choosing: refused before
    any token request (the state is not one this tab made); dropped from the address bar all the same."""
    server, _ = site
    HostedUi.codes["mallory-code"] = {"client_id": CLIENT_ID, "redirect_uri": f"{server.url}/",
                                      "code_challenge_method": "S256", "code_challenge": s256("v" * 43)}  # fmt: skip
    page.goto(f"{server.url}/?code=mallory-code&state=st4te")
    expect(page.locator("#status")).to_contain_text("Not signed in: this sign-in was not started from this page")
    assert (stored_token(page), HostedUi.exchanged) == (None, [])
    assert "code=" not in page.url
    expect(page.locator("#who")).to_contain_text("Sign in")


@pytest.mark.parametrize("link", ["id_token", "token"])
def test_given_a_link_carrying_a_token_then_a_cognito_site_takes_none(
    page: Any, site: tuple[DashboardServer, LoopbackServer], link: str
) -> None:
    """The implicit flow's answer (``#id_token=...&state=...``) is no longer taken at all - this page only asks for
    codes - nor the local stack's ``#token=`` links on a site signing in with Cognito."""
    server, _ = site
    forged = id_token(claims_for("acct-mallory", "n0nce"))
    page.goto(f"{server.url}/#{link}={forged}&state=st4te")
    expect(page.locator("#status")).to_contain_text("Not signed in: this sign-in was not started from this page")
    assert stored_token(page) is None
    assert "token=" not in page.url
    expect(page.locator("#who")).to_contain_text("Sign in")


def test_given_a_sign_in_answer_replayed_then_it_is_refused_its_state_being_used_once(
    page: Any, site: tuple[DashboardServer, LoopbackServer]
) -> None:
    """The hosted UI's redirect (code and state) opened again after signing out, from history or a copied link:
    refused by the page (its state was used) - no second token request."""
    server, _ = site
    seen = _sign_in(page, server)
    expect(page.locator("#who")).to_contain_text("acct-alice · owner")
    page.get_by_role("button", name="Sign out").click()
    assert stored_token(page) is None
    [answer] = [url for url in seen if "code=" in url]
    page.goto(answer)
    expect(page.locator("#status")).to_contain_text("Not signed in: this sign-in was not started from this page")
    assert (stored_token(page), len(HostedUi.exchanged)) == (None, 1)
    expect(page.locator("#who")).to_contain_text("Sign in")


def test_given_the_token_endpoint_refusing_the_code_then_a_visible_error_and_no_session(
    page: Any, site: tuple[DashboardServer, LoopbackServer]
) -> None:
    """The code expired or was redeemed already (Cognito: 400 ``invalid_grant``): the page says so and that signing
    in again is the remedy; nothing is stored."""
    server, _ = site

    def redeemed_meanwhile(route: Any) -> None:
        HostedUi.codes.clear()  # the code is gone before the page redeems it
        route.continue_()

    page.route("**/oauth2/token", redeemed_meanwhile)
    page.goto(f"{server.url}/#/signin")
    page.get_by_role("link", name="Sign in with your Kilo account").click()
    expect(page.locator("#status")).to_contain_text(
        "Not signed in: the sign-in could not be completed (invalid_grant): sign in again"
    )
    assert [status for status, _ in HostedUi.exchanged] == [400]
    assert stored_token(page) is None
    assert "code=" not in page.url


def test_given_the_hosted_ui_answering_an_error_then_the_page_names_it_and_redeems_nothing(
    page: Any, site: tuple[DashboardServer, LoopbackServer]
) -> None:
    """The person cancelled at the hosted UI (``?error=access_denied&state=...``, the state this tab sent)."""
    server, _ = site
    HostedUi.refuse = "access_denied"
    page.goto(f"{server.url}/#/signin")
    page.get_by_role("link", name="Sign in with your Kilo account").click()
    expect(page.locator("#status")).to_contain_text("Not signed in: the sign-in was refused (access_denied)")
    assert (stored_token(page), HostedUi.exchanged) == (None, [])
    assert "error=" not in page.url


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
