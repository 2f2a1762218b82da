"""Shared by the account API's tests: the function's environment on the moto stack, API Gateway events carrying a
JWT authorizer's claims, rating's items written in rating's own layout (``kilo_rate_usage.items``), and a plain local
stack with registered accounts (the e2e and browser tests of the account API over HTTP)."""

from __future__ import annotations

import contextlib
import json
import uuid
from collections.abc import Iterator, Mapping
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import pytest

from kilo_dev.apigw import http_api_event

ROUTES_FUNCTION = "AccountApiFunction"


def clear_caches() -> None:
    from kilo_account_api import dependencies, settings  # noqa: PLC0415

    settings.settings.cache_clear()
    dependencies.dependencies.cache_clear()


def api_environment(
    stack: Any, monkeypatch: pytest.MonkeyPatch, staff: dict[str, dict[str, str]] | None = None
) -> Iterator[Any]:
    """For a fixture: the account API's environment as the template deploys it, its caches cleared around; ``staff``
    (account -> user -> role): the memberships the file's admin and owner tokens name, stored (every admin write
    checks the stored role: D202, D208)."""
    for key, value in stack.template.function_environment(ROUTES_FUNCTION).items():
        monkeypatch.setenv(key, value)
    for account, roles in (staff or {}).items():
        store_members(stack, account, roles)
    clear_caches()
    yield stack
    clear_caches()


def new_key() -> dict[str, str]:
    """A tier request's ``Idempotency-Key`` header with a fresh key: a new click (the header is required, D436;
    the same key again is that click's retry, replayed - D377)."""
    return {"idempotency-key": str(uuid.uuid4())}


def claims(account: str | None, role: str | None, user: str = "user-1", operator: bool = False) -> dict[str, str]:
    found = {"sub": user, "iss": "https://issuer.test", "aud": "kilo-dashboard"}
    if account is not None:
        found["kilo_account"] = account
    if role is not None:
        found["kilo_role"] = role
    if operator:
        found["kilo_operator"] = "true"
    return found


def event(
    method: str,
    path: str,
    route: str,
    token_claims: dict[str, str] | None,
    body: object | None = None,
    query: str = "",
    path_parameters: dict[str, str] | None = None,
    headers: dict[str, str] | None = None,
) -> dict[str, Any]:
    data = json.dumps(body).encode() if body is not None else None
    sent = {"content-type": "application/json", **(headers or {})}
    built = http_api_event(method, path, data, sent, route_key=f"{method} {route}", query=query)
    if path_parameters:
        built["pathParameters"] = path_parameters
    if token_claims is not None:
        built["requestContext"]["authorizer"] = {"jwt": {"claims": token_claims, "scopes": None}}
    return built


@dataclass
class Answer:
    status: int
    body: Any
    headers: dict[str, str]


def call(
    method: str,
    path: str,
    token_claims: dict[str, str] | None,
    body: object | None = None,
    query: str = "",
    remaining_ms: int | None = None,
    headers: dict[str, str] | None = None,
) -> Answer:
    """Invoke the handler as API Gateway would for ``path`` (its route template and path parameters derived);
    ``remaining_ms``: the invocation's time left before its timeout (the test context's default otherwise);
    ``headers``: sent besides the content type (API Gateway passes them lower-cased)."""
    from kilo_account_api.handler import lambda_handler  # noqa: PLC0415
    from tests.conftest import LambdaContext  # noqa: PLC0415

    route, params = route_of(method, path)
    context = LambdaContext() if remaining_ms is None else LambdaContext(remaining_ms=remaining_ms)
    response = lambda_handler(event(method, path, route, token_claims, body, query, params, headers), context)
    text = response.get("body") or ""
    return Answer(int(response["statusCode"]), json.loads(text) if text else None, dict(response.get("headers") or {}))


def route_of(method: str, path: str) -> tuple[str, dict[str, str]]:
    from kilo_dev.template import Template  # noqa: PLC0415

    template = Template(parameters={"Stage": "test"})
    for event_spec in template.resources[ROUTES_FUNCTION]["Properties"]["Events"].values():
        props = event_spec["Properties"]
        if props["Method"] != method:
            continue
        pattern, names = props["Path"].split("/"), {}
        parts = path.split("/")
        if len(pattern) != len(parts):
            continue
        for want, got in zip(pattern, parts, strict=True):
            if want.startswith("{"):
                names[want.strip("{}")] = got
            elif want != got:
                break
        else:
            return props["Path"], names
    raise AssertionError(f"no route for {method} {path}")


def store_members(stack: Any, account: str, roles: dict[str, str], added_at: datetime | None = None) -> None:
    """Memberships (user -> role) stored as accepted ones, as the members table holds them (the store's own item
    mapping; one stored before is replaced): admin writes and membership changes check the caller's stored role, not
    only the token's (D202, D208)."""
    from kilo_account_api import items  # noqa: PLC0415
    from kilo_account_api.model import Member  # noqa: PLC0415
    from kilo_billing.auth import Role  # noqa: PLC0415

    table = stack.template.physical_name("MembersTable")
    for user, role in roles.items():
        member = Member(account, user, "", Role[role.upper()], added_at or datetime(2026, 1, 1, tzinfo=UTC))
        stack.clients["dynamodb"].put_item(TableName=table, Item=items.member_to_item(member))


def ms(moment: datetime) -> int:
    return int(moment.timestamp() * 1000)


def utc(*parts: int) -> datetime:
    return datetime(*parts, tzinfo=UTC)  # type: ignore[misc]


@contextlib.contextmanager
def local_account_stack(log_path: Path, tiers: Mapping[str, str]) -> Iterator[Any]:
    """A local stack from template.yaml with no pollers or schedules (``autopoll=False``) and no chains, each account
    of ``tiers`` (account -> tier) registered on that tier from 2026-01-01 with the contact ``ops@<account>.example``;
    the stack (its moto server, gateway and issuer) is stopped on the way out, also when the body fails."""
    from kilo_billing.account_store import DynamoAccountDirectory  # noqa: PLC0415
    from kilo_billing.accounts import AccountProfile  # noqa: PLC0415
    from kilo_billing.rating import TierChange  # noqa: PLC0415
    from kilo_dev.localstack import LocalSettings, LocalStack  # noqa: PLC0415

    stack = LocalStack(LocalSettings.from_env(), log=lambda _: None, log_path=log_path, autopoll=False)
    stack.start()
    try:
        directory = DynamoAccountDirectory(stack.clients["dynamodb"], stack.template.physical_name("UsageTable"))
        signup = datetime(2026, 1, 1, tzinfo=UTC)
        for account, tier in tiers.items():
            directory.register(AccountProfile(account, (TierChange(signup, tier),), email=f"ops@{account}.example"))
        yield stack
    finally:
        stack.stop()
