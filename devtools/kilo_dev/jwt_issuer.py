"""A local OpenID issuer for the account API: an RS256 key pair generated at start (``cryptography``), its JWKS and
discovery document served on 127.0.0.1 (a free port), and tokens minted for (user, account, role) with PyJWT.

The local stack points the template's ``AccountApiJwtIssuer`` / ``AccountApiJwtAudience`` at it, and its gateway
verifies tokens the way API Gateway's JWT authorizer does (:func:`verify`): the key from the issuer's JWKS (found
through ``/.well-known/openid-configuration``), RS256 only, ``iss``, ``aud``, ``exp`` (and ``nbf``/``iat`` when
present). Claims as Cognito's pre-token-generation trigger would add them: ``kilo_account``, ``kilo_role`` and, for
operators, ``kilo_operator`` = ``"true"`` (kilo_billing.auth).

The account API checks an admin's or owner's writes against the members table too (D202, D208), and
Cognito's pre-token trigger signs only for a stored membership: ``signed_in`` (the local stack sets it) stores the
membership each token for an account is minted for, so a local token is one a real sign-in could have given.

Started and stopped by whoever owns it (the local stack), by its own server thread; nothing outlives :meth:`stop`.
"""

from __future__ import annotations

import json
import threading
import time
import urllib.parse
import urllib.request
import uuid
from collections.abc import Callable, Mapping
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any, Final

import jwt
from cryptography.hazmat.primitives.asymmetric import rsa

from kilo_dev import processes

AUDIENCE: Final = "kilo-dashboard"
ALGORITHM: Final = "RS256"
TOKEN_PATH: Final = "/local/token"  # noqa: S105 - a path, not a secret; ?account=&role=[&user=] or ?operator=true: a signed token (local only)
LEEWAY_SECONDS: Final = 0  # API Gateway's JWT authorizer allows no clock skew on exp


class TokenRejectedError(Exception):
    """Not a token the authorizer accepts; the message says why (API Gateway answers 401)."""


SignedIn = Callable[[str, str, str], None]  # (user, account, role): the membership a token is minted for


class LocalIssuer:
    def __init__(self, audience: str = AUDIENCE, signed_in: SignedIn | None = None) -> None:
        self.audience = audience
        self.signed_in = signed_in  # called before a token for an account is minted (the local stack stores it)
        self._key = rsa.generate_private_key(public_exponent=65537, key_size=2048)
        self.kid = uuid.uuid4().hex[:16]
        self._server: ThreadingHTTPServer | None = None
        self._thread: threading.Thread | None = None

    # --- lifecycle -----------------------------------------------------------------------------------------------
    def start(self) -> LocalIssuer:
        issuer = self

        class Handler(BaseHTTPRequestHandler):
            def log_message(self, *args: Any) -> None:
                return

            def do_GET(self) -> None:
                path, _, query = self.path.partition("?")
                if path == TOKEN_PATH:
                    self._token(urllib.parse.parse_qs(query))
                    return
                documents = {
                    "/.well-known/openid-configuration": issuer.discovery(),
                    "/.well-known/jwks.json": issuer.jwks(),
                }
                found = documents.get(path)
                self._send(200 if found is not None else 404, found if found is not None else {"message": "Not Found"})

            def _token(self, query: dict[str, list[str]]) -> None:
                """The local stack's sign-in (what Cognito's hosted UI would hand the dashboard): a token for the
                account and role asked for. Local only: the issuer listens on 127.0.0.1 and exists only in tests
                and the demo."""
                account = (query.get("account") or [""])[0]
                role = (query.get("role") or ["owner"])[0]
                operator = (query.get("operator") or [""])[0] == "true"
                if not operator and (not account or role not in ("owner", "admin", "member")):
                    self._send(400, {"message": "give account=<id> and role=owner|admin|member, or operator=true"})
                    return
                user = (query.get("user") or [f"{role}@{account}" if account else "operator"])[0]
                token = issuer.mint(user, account or None, role if account else None, operator=operator)
                self._send(200, {"access_token": token, "token_type": "Bearer", "expires_in": 3600})

            def _send(self, status: int, payload: object) -> None:
                body = json.dumps(payload).encode()
                self.send_response(status)
                self.send_header("Content-Type", "application/json")
                self.send_header("Access-Control-Allow-Origin", "*")
                self.send_header("Content-Length", str(len(body)))
                self.end_headers()
                self.wfile.write(body)

        self._server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self._server.daemon_threads = True
        self._thread = threading.Thread(target=processes.serving(self._server), name="jwt-issuer", daemon=True)
        self._thread.start()
        return self

    def stop(self) -> None:
        if self._server is not None:
            self._server.shutdown()
            self._server.server_close()
            self._server = None
        if self._thread is not None:
            self._thread.join(timeout=5)
            self._thread = None

    def __enter__(self) -> LocalIssuer:
        return self.start()

    def __exit__(self, *_: object) -> None:
        self.stop()

    # --- documents -----------------------------------------------------------------------------------------------
    @property
    def url(self) -> str:
        if self._server is None:
            raise RuntimeError("the issuer is not started")
        return f"http://127.0.0.1:{self._server.server_address[1]}"

    def discovery(self) -> dict[str, Any]:
        return {
            "issuer": self.url,
            "jwks_uri": f"{self.url}/.well-known/jwks.json",
            "id_token_signing_alg_values_supported": [ALGORITHM],
        }

    def jwks(self) -> dict[str, Any]:
        public = json.loads(jwt.algorithms.RSAAlgorithm.to_jwk(self._key.public_key()))
        return {"keys": [{**public, "kid": self.kid, "use": "sig", "alg": ALGORITHM}]}

    # --- tokens --------------------------------------------------------------------------------------------------
    def mint(
        self,
        user: str,
        account: str | None,
        role: str | None = "owner",
        *,
        operator: bool = False,
        ttl_seconds: int = 3600,
        audience: str | None = None,
        issuer: str | None = None,
        extra: Mapping[str, Any] | None = None,
    ) -> str:
        """A signed access token for ``user`` acting for ``account`` with ``role`` (what the dashboard sends); the
        membership it names is stored first (``signed_in``), as Cognito's trigger would have found it."""
        if self.signed_in is not None and account is not None and role is not None:
            self.signed_in(user, account, role)
        now = int(time.time())
        claims: dict[str, Any] = {
            "sub": user,
            "iss": issuer or self.url,
            "aud": audience or self.audience,
            "iat": now,
            "exp": now + ttl_seconds,
            "token_use": "access",
        }
        if account is not None:
            claims["kilo_account"] = account
        if role is not None:
            claims["kilo_role"] = role
        if operator:
            claims["kilo_operator"] = "true"
        claims.update(extra or {})
        return jwt.encode(claims, self._key, algorithm=ALGORITHM, headers={"kid": self.kid})


class JwtAuthorizer:
    """API Gateway's JWT authorizer, emulated: the token from ``Authorization`` (``Bearer`` optional, as AWS allows),
    its key from the issuer's JWKS (discovered once, cached by PyJWT), RS256, issuer, audience, expiry. The claims
    come back as API Gateway passes them to the function (values as strings)."""

    def __init__(self, issuer: str, audiences: list[str]) -> None:
        self.issuer = issuer.rstrip("/")
        self.audiences = audiences
        self._jwks: jwt.PyJWKClient | None = None
        self._lock = threading.Lock()

    def _client(self) -> jwt.PyJWKClient:
        with self._lock:
            if self._jwks is None:
                with urllib.request.urlopen(  # noqa: S310 - the configured issuer's discovery document
                    f"{self.issuer}/.well-known/openid-configuration", timeout=5
                ) as answer:
                    discovery = json.loads(answer.read())
                self._jwks = jwt.PyJWKClient(str(discovery["jwks_uri"]), cache_keys=True)
            return self._jwks

    def verify(self, authorization: str | None) -> dict[str, str]:
        if not authorization:
            raise TokenRejectedError("no Authorization header")
        token = authorization.removeprefix("Bearer ").strip()
        try:
            key = self._client().get_signing_key_from_jwt(token)
            claims = jwt.decode(
                token,
                key.key,
                algorithms=[ALGORITHM],
                audience=self.audiences,
                issuer=self.issuer,
                leeway=LEEWAY_SECONDS,
                options={"require": ["exp", "iss", "sub"]},
            )
        except (jwt.PyJWTError, OSError, KeyError, ValueError) as exc:
            raise TokenRejectedError(f"{type(exc).__name__}: {exc}") from exc
        return {name: value if isinstance(value, str) else json.dumps(value) for name, value in claims.items()}
