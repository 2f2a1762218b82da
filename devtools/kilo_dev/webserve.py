"""The dashboard (``web/``) served on 127.0.0.1, as CloudFront serves it in AWS: the static files, a generated
``/config.json`` (the API base and how to sign in), and the API's paths (``/v1/...``, ``/openapi.json``) passed to
the local stack's gateway, the way the distribution's second origin passes them to the HTTP API. The page and the
API share one origin, so the browser sends no CORS preflight, here or in AWS.

Run it with a local stack (``./dev demo --keep-running`` does), or alone against any gateway URL:
``python -m kilo_dev.webserve --api http://127.0.0.1:PORT``. ``write_config`` writes the ``config.json`` that a
deployment uploads to the site's bucket (Cognito's hosted UI as the sign-in).
"""

from __future__ import annotations

import argparse
import json
import mimetypes
import threading
import urllib.error
import urllib.parse
import urllib.request
from collections.abc import Sequence
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

from kilo_dev import processes

WEB_ROOT = Path(__file__).resolve().parents[2] / "web"
# the API's paths on the site's origin (CloudFront's cache behaviours in template.yaml name the same ones)
API_PREFIXES = ("/v1/", "/openapi.json")
_HOP_BY_HOP = {"connection", "keep-alive", "transfer-encoding", "upgrade", "proxy-authorization", "te", "trailer"}
_TYPES = {".js": "text/javascript", ".mjs": "text/javascript", ".css": "text/css", ".svg": "image/svg+xml"}


@dataclass(frozen=True)
class SiteConfig:
    """What the page reads from ``/config.json`` at start: where the API is and how a person signs in.

    ``auth_mode`` ``local``: a token from the local stack's issuer arrives in a sign-in link (``#token=...``) or is
    pasted; ``cognito``: the page redirects to Cognito's hosted UI (``authorize_url``, ``client_id``) for a code
    (PKCE), which it redeems at ``token_url`` for the ID token (D451); ``token_url`` defaults to the authorize URL's
    domain's ``/oauth2/token``, where Cognito's is."""

    api_base: str = ""  # "" = the site's own origin (CloudFront's /v1/* behaviour, or this server's proxy)
    auth_mode: str = "local"
    issuer: str = ""
    authorize_url: str = ""
    client_id: str = ""
    chains: dict[str, Any] = field(default_factory=dict)  # {"evm": [{"key", "chainId"}]}: the wallets' chains
    token_url: str = ""

    @property
    def token_endpoint(self) -> str:
        if self.token_url or not self.authorize_url:
            return self.token_url
        parts = urllib.parse.urlsplit(self.authorize_url)
        return urllib.parse.urlunsplit((parts.scheme, parts.netloc, "/oauth2/token", "", ""))

    def as_json(self) -> dict[str, Any]:
        return {
            "apiBase": self.api_base,
            "auth": {
                "mode": self.auth_mode,
                "issuer": self.issuer,
                "authorizeUrl": self.authorize_url,
                "clientId": self.client_id,
                "tokenUrl": self.token_endpoint,
            },
            "chains": self.chains,
        }


SIGN_IN_TTL_SECONDS = 12 * 3600  # the demo's sign-in links stay valid for a working day


def sign_in_link(site_url: str, token: str) -> str:
    """A link that signs the page in: the token rides in the fragment, which browsers never send to a server."""
    return f"{site_url}/#token={token}"


def serve_for_stack(stack: Any, accounts: Sequence[str]) -> tuple[DashboardServer, dict[str, str]]:
    """The dashboard against a running local stack (started; the caller stops it), and a sign-in link per account
    (its owner, a token from the stack's issuer); with the stack's chains, the page knows anvil's chain id."""
    chains: dict[str, Any] = {}
    if getattr(stack, "chains", None) is not None:  # the stack's anvil: a wallet on it pays the quotes' EIP-681 URIs
        evm = [c for c in stack.chains.chains() if c["kind"] == "evm"]
        chains = {"evm": [{"key": c["key"], "chainId": c["chain_id"]} for c in evm]}
    site = DashboardServer(stack.url, SiteConfig(issuer=stack.issuer.url, chains=chains)).start()
    links = {
        account: sign_in_link(
            site.url,
            stack.issuer.mint(user=f"owner-{account}", account=account, role="owner", ttl_seconds=SIGN_IN_TTL_SECONDS),
        )
        for account in accounts
    }
    return site, links


def write_config(path: Path, config: SiteConfig) -> None:
    path.write_text(json.dumps(config.as_json(), indent=2) + "\n", encoding="utf-8")


class DashboardServer(ThreadingHTTPServer):
    """Static files from ``root``, ``/config.json`` from ``config``, API paths proxied to ``api_url``."""

    daemon_threads = True
    request_queue_size = 128

    def __init__(self, api_url: str, config: SiteConfig, root: Path = WEB_ROOT, port: int = 0) -> None:
        super().__init__(("127.0.0.1", port), _Handler)
        self.api_url = api_url.rstrip("/")
        self.config = config
        self.root = root.resolve()
        self._thread: threading.Thread | None = None

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.server_address[1]}"

    def start(self) -> DashboardServer:
        self._thread = threading.Thread(target=processes.serving(self), name="dashboard", daemon=True)
        self._thread.start()
        return self

    def stop(self) -> None:
        if self._thread is not None:
            self.shutdown()
            self._thread.join(timeout=10)
            self._thread = None
        self.server_close()

    def __enter__(self) -> DashboardServer:
        return self.start()

    def __exit__(self, *_: object) -> None:
        self.stop()


class _Handler(BaseHTTPRequestHandler):
    server: DashboardServer
    protocol_version = "HTTP/1.1"

    def log_message(self, *args: Any) -> None:
        return

    def _handle(self) -> None:
        path = self.path.partition("?")[0]
        if path.startswith(API_PREFIXES):
            self._proxy()
        elif self.command not in ("GET", "HEAD"):
            self._send(405, "application/json", b'{"message":"Method Not Allowed"}')
        elif path == "/config.json":
            body = json.dumps(self.server.config.as_json()).encode()
            self._send(200, "application/json", body)
        else:
            self._static(path)

    def _static(self, path: str) -> None:
        relative = urllib.parse.unquote(path).lstrip("/") or "index.html"
        target = (self.server.root / relative).resolve()
        if not target.is_relative_to(self.server.root) or not target.is_file():
            self._send(404, "text/plain; charset=utf-8", b"Not Found")
            return
        kind = _TYPES.get(target.suffix) or mimetypes.guess_type(target.name)[0] or "application/octet-stream"
        if kind.startswith("text/") and "charset" not in kind:
            kind += "; charset=utf-8"
        self._send(200, kind, target.read_bytes())

    def _proxy(self) -> None:
        length = int(self.headers.get("Content-Length") or 0)
        body = self.rfile.read(length) if length else None
        headers = {k: v for k, v in self.headers.items() if k.lower() not in _HOP_BY_HOP | {"host", "content-length"}}
        request = urllib.request.Request(  # noqa: S310 - the local gateway's own http URL
            self.server.api_url + self.path, data=body, headers=headers, method=self.command
        )
        try:
            with urllib.request.urlopen(request, timeout=60) as response:  # noqa: S310
                status, reply_headers, data = response.status, list(response.headers.items()), response.read()
        except urllib.error.HTTPError as error:
            status, reply_headers, data = error.code, list(error.headers.items()), error.read()
        except OSError as error:
            message = json.dumps({"message": f"the API at {self.server.api_url} is unreachable: {error}"})
            self._send(502, "application/json", message.encode())
            return
        self.send_response(status)
        for name, value in reply_headers:
            if name.lower() not in _HOP_BY_HOP | {"content-length", "date", "server"}:
                self.send_header(name, value)
        self.send_header("Content-Length", str(len(data)))
        self.end_headers()
        if self.command != "HEAD":
            self.wfile.write(data)

    def _send(self, status: int, content_type: str, body: bytes) -> None:
        self.send_response(status)
        self.send_header("Content-Type", content_type)
        self.send_header("Content-Length", str(len(body)))
        self.send_header("Cache-Control", "no-store")
        self.send_header("X-Content-Type-Options", "nosniff")
        self.send_header("Referrer-Policy", "no-referrer")
        self.end_headers()
        if self.command != "HEAD":
            self.wfile.write(body)

    def handle(self) -> None:
        try:
            super().handle()
        except (BrokenPipeError, ConnectionResetError):
            return  # the browser went away (a page closed or navigated) before the answer was sent

    do_GET = do_HEAD = do_POST = do_PUT = do_DELETE = do_PATCH = _handle  # noqa: N815


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m kilo_dev.webserve", description=__doc__.split("\n\n")[0])
    sub = parser.add_subparsers(dest="command", required=True)
    serve = sub.add_parser("serve", help="serve web/ on 127.0.0.1 against a running gateway")
    serve.add_argument("--api", required=True, help="the gateway's URL, e.g. http://127.0.0.1:PORT")
    serve.add_argument("--issuer", default="", help="the local issuer's URL (shown on the sign-in page)")
    serve.add_argument("--port", type=int, default=0, help="default: a free port")
    config = sub.add_parser("config", help="write the config.json a deployment uploads next to web/")
    config.add_argument("--out", type=Path, required=True)
    config.add_argument("--api-base", default="", help='"" (default): the site\'s own origin (CloudFront /v1/*)')
    config.add_argument("--authorize-url", required=True, help="Cognito hosted UI: https://DOMAIN/oauth2/authorize")
    config.add_argument("--client-id", required=True, help="the Cognito app client id (the authorizer's audience)")
    config.add_argument("--issuer", required=True, help="the authorizer's issuer")
    config.add_argument(
        "--token-url",
        default="",
        help="Cognito's token endpoint (default: --authorize-url's https://DOMAIN/oauth2/token)",
    )
    args = parser.parse_args(argv)
    if args.command == "config":
        site = SiteConfig(
            args.api_base, "cognito", args.issuer, args.authorize_url, args.client_id, token_url=args.token_url
        )
        write_config(args.out, site)
        return 0
    server = DashboardServer(args.api, SiteConfig(issuer=args.issuer), port=args.port)
    print(f"dashboard on {server.url} (Ctrl-C stops it)", flush=True)
    try:
        server.serve_forever()
    except KeyboardInterrupt:
        pass
    finally:
        server.server_close()
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
