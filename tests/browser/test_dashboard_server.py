"""The dashboard's local server: web/ as static files, a generated config.json, the API's paths passed to the
gateway unchanged (method, path and query, Authorization, body; the gateway's status and body back), nothing outside
web/ readable, and a clear 502 when the gateway is down. Every server started here binds 127.0.0.1 on a free port
and is stopped here."""

from __future__ import annotations

import http.client
import json
import threading
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import pytest

from kilo_dev.webserve import DashboardServer, SiteConfig, main

ROOT = Path(__file__).resolve().parents[2]


class _Echo(BaseHTTPRequestHandler):
    def log_message(self, *args: Any) -> None:
        return

    def _reply(self) -> None:
        length = int(self.headers.get("Content-Length") or 0)
        seen = {
            "method": self.command,
            "path": self.path,
            "authorization": self.headers.get("Authorization"),
            "body": self.rfile.read(length).decode() if length else None,
        }
        body = json.dumps(seen).encode()
        self.send_response(403 if self.path.startswith("/v1/accounts/other") else 200)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    do_GET = do_PUT = do_POST = _reply  # noqa: N815


@pytest.fixture
def upstream() -> Iterator[ThreadingHTTPServer]:
    server = ThreadingHTTPServer(("127.0.0.1", 0), _Echo)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield server
    finally:
        server.shutdown()
        server.server_close()
        thread.join(timeout=5)


@pytest.fixture
def site(upstream: ThreadingHTTPServer) -> Iterator[DashboardServer]:
    config = SiteConfig(issuer="http://127.0.0.1:9/issuer", chains={"evm": [{"chainId": 1}]})
    with DashboardServer(f"http://127.0.0.1:{upstream.server_address[1]}", config) as server:
        yield server


def fetch(server: DashboardServer, method: str, path: str, body: bytes | None = None, **headers: str) -> Any:
    connection = http.client.HTTPConnection("127.0.0.1", int(server.server_address[1]), timeout=10)
    try:
        connection.request(method, path, body=body, headers=headers)
        response = connection.getresponse()
        return response.status, response.getheader("Content-Type"), response.read()
    finally:
        connection.close()


def test_given_the_site_root_then_the_dashboard_page_is_served_as_html(site: DashboardServer) -> None:
    status, kind, body = fetch(site, "GET", "/")
    assert (status, kind) == (200, "text/html; charset=utf-8")
    assert body == (ROOT / "web" / "index.html").read_bytes()
    status, kind, _ = fetch(site, "GET", "/js/app.js")
    assert (status, kind) == (200, "text/javascript; charset=utf-8")  # ES modules need a JavaScript type


def test_given_config_json_then_it_names_the_api_on_the_same_origin_and_the_local_sign_in(
    site: DashboardServer,
) -> None:
    status, _, body = fetch(site, "GET", "/config.json")
    assert status == 200
    assert json.loads(body) == {
        "apiBase": "",
        "auth": {
            "mode": "local",
            "issuer": "http://127.0.0.1:9/issuer",
            "authorizeUrl": "",
            "clientId": "",
            "tokenUrl": "",
        },
        "chains": {"evm": [{"chainId": 1}]},
    }


def test_given_an_api_path_then_method_query_token_and_body_reach_the_gateway_and_its_answer_comes_back(
    site: DashboardServer,
) -> None:
    status, kind, body = fetch(
        site, "PUT", "/v1/accounts/acct-1/budget?x=1", b'{"amount_usd":"5.00"}', Authorization="Bearer abc"
    )
    assert (status, kind) == (200, "application/json")
    assert json.loads(body) == {
        "method": "PUT",
        "path": "/v1/accounts/acct-1/budget?x=1",
        "authorization": "Bearer abc",
        "body": '{"amount_usd":"5.00"}',
    }
    status, _, body = fetch(site, "GET", "/v1/accounts/other/usage")
    assert status == 403  # the gateway's refusal is passed through, not turned into a page
    assert json.loads(body)["authorization"] is None


def test_given_a_path_outside_web_then_nothing_is_served(site: DashboardServer) -> None:
    for path in ("/../pyproject.toml", "/%2e%2e/pyproject.toml", "/js/../../README.md", "/missing.js"):
        status, _, body = fetch(site, "GET", path)
        assert status == 404, path
        assert b"Kilo" not in body
    assert fetch(site, "POST", "/index.html")[0] == 405


def test_given_the_gateway_is_down_then_api_paths_answer_502_naming_it() -> None:
    dead = ThreadingHTTPServer(("127.0.0.1", 0), _Echo)
    port = dead.server_address[1]
    dead.server_close()  # nothing listens there any more
    with DashboardServer(f"http://127.0.0.1:{port}", SiteConfig()) as server:
        status, kind, body = fetch(server, "GET", "/v1/pricing")
    assert (status, kind) == (502, "application/json")
    assert f"127.0.0.1:{port}" in json.loads(body)["message"]


def test_given_cognito_settings_then_the_config_command_writes_the_deployed_config(tmp_path: Path) -> None:
    out = tmp_path / "config.json"
    authorize = "https://kilo.auth.us-east-1.amazoncognito.com/oauth2/authorize"
    issuer = "https://cognito-idp.us-east-1.amazonaws.com/us-east-1_abc"
    assert (
        main(["config", "--out", str(out), "--authorize-url", authorize, "--client-id", "cid", "--issuer", issuer]) == 0
    )
    assert json.loads(out.read_text()) == {
        "apiBase": "",
        "auth": {
            "mode": "cognito",
            "issuer": issuer,
            "authorizeUrl": authorize,
            "clientId": "cid",
            "tokenUrl": "https://kilo.auth.us-east-1.amazoncognito.com/oauth2/token",  # the same domain's (D451)
        },
        "chains": {},
    }
    token = "https://login.example.com/oauth2/token"
    argv = ["config", "--out", str(out), "--authorize-url", authorize, "--client-id", "cid", "--issuer", issuer]
    assert main([*argv, "--token-url", token]) == 0
    assert json.loads(out.read_text())["auth"]["tokenUrl"] == token
