"""``GET /v1/accounts/<id>/subscription`` through the handler on moto (D447): the subscription as a resource of its
own - the tier in effect, the next scheduled change and its version (D441's tag, worked by hand here) as body and
``ETag`` - for a member to read, and for ``POST .../subscription``'s ``If-Match``; ``If-None-Match`` naming the version
now is 304 with no body (a poll that costs nothing to answer)."""

from __future__ import annotations

import hashlib
import json
from collections.abc import Iterator
from datetime import datetime
from typing import Any

import pytest
import time_machine

from kilo_account_api.handler import openapi_document
from tests.account_api_support import Answer, api_environment, call, claims, utc
from tests.integration.test_account_api import register

OWNER = claims("acct_b", "owner")
MEMBER = claims("acct_b", "member", user="user-2")
PATH = "/v1/accounts/acct_b/subscription"
NINE = utc(2026, 11, 15, 9)
TEAM = '"' + hashlib.sha256(b"team").hexdigest()[:16] + '"'
TEAM_TO_PERSONAL = '"' + hashlib.sha256(b"team|2026-12-01T00:00:00+00:00=personal").hexdigest()[:16] + '"'
PERSONAL = '"' + hashlib.sha256(b"personal").hexdigest()[:16] + '"'


@pytest.fixture
def account_api(stack: Any, monkeypatch: pytest.MonkeyPatch) -> Iterator[Any]:
    yield from api_environment(stack, monkeypatch, {"acct_b": {"user-1": "owner", "user-2": "member"}})


def _headers(answer: Answer) -> dict[str, str]:
    return {name.lower(): value for name, value in answer.headers.items()}


def _get(at: datetime, token: dict[str, str] = OWNER, if_none_match: str | None = None) -> Answer:
    headers = None if if_none_match is None else {"if-none-match": if_none_match}
    with time_machine.travel(at, tick=False):
        return call("GET", PATH, token, headers=headers)


def _post(at: datetime, tier: str, key: str, if_match: str | None = None) -> Answer:
    headers = {"idempotency-key": key} | ({} if if_match is None else {"if-match": if_match})
    with time_machine.travel(at, tick=False):
        return call("POST", PATH, OWNER, {"tier": tier}, headers=headers)


def test_given_a_team_account_then_a_member_reads_its_tier_and_version(account_api: Any) -> None:
    """Team since Jan 1, nothing scheduled: a member (reads need no more) gets Team, no change, the tag of "team" as
    body and ``ETag``; ``Cache-Control`` asks a cache to check again before reusing it (the tag can move any time)."""
    register(account_api, "acct_b")
    answer = _get(NINE, MEMBER)
    assert (answer.status, answer.body) == (200, {"tier": "team", "scheduled_change": None, "etag": TEAM})
    assert (_headers(answer)["etag"], _headers(answer)["cache-control"]) == (TEAM, "private, no-cache")


def test_given_a_downgrade_then_it_is_read_as_scheduled_until_it_takes_effect(account_api: Any) -> None:
    """Team; 09:05 Personal asked (from Dec 1): read at 10:00, Team with Personal from Dec 1 and the tag of
    "team|2026-12-01T00:00:00+00:00=personal"; read on Dec 1 00:00, Personal in effect, nothing scheduled, the tag
    of "personal"."""
    register(account_api, "acct_b")
    assert _post(utc(2026, 11, 15, 9, 5), "personal", "K0").status == 200
    later = _get(utc(2026, 11, 15, 10))
    assert (later.status, later.body, _headers(later)["etag"]) == (
        200,
        {
            "tier": "team",
            "scheduled_change": {"tier": "personal", "effective_at": "2026-12-01T00:00:00Z"},
            "etag": TEAM_TO_PERSONAL,
        },
        TEAM_TO_PERSONAL,
    )
    december = _get(utc(2026, 12, 1))
    assert (december.body, _headers(december)["etag"]) == (
        {"tier": "personal", "scheduled_change": None, "etag": PERSONAL},
        PERSONAL,
    )


def test_given_the_read_version_then_a_tier_request_with_it_is_decided_and_a_stale_one_refused(
    account_api: Any,
) -> None:
    """What the version is for: 09:00 read (tag of "team"); 09:05 another admin asks for Personal; 09:10 the
    upgrade sent with the 09:00 tag is 412; read again (the new tag) and sent with it: decided (Enterprise now)."""
    register(account_api, "acct_b")
    first = _headers(_get(NINE))["etag"]
    assert _post(utc(2026, 11, 15, 9, 5), "personal", "K0").status == 200
    assert _post(utc(2026, 11, 15, 9, 10), "enterprise", "K1", first).status == 412
    again = _headers(_get(utc(2026, 11, 15, 9, 11)))["etag"]
    assert again == TEAM_TO_PERSONAL
    decided = _post(utc(2026, 11, 15, 9, 12), "enterprise", "K1", again)
    assert (decided.status, decided.body["change"]) == (200, "upgrade_now")


@pytest.mark.parametrize(
    "if_none_match",
    [
        TEAM,  # the version now
        "W/" + TEAM,  # weak comparison (RFC 9110 13.1.2): a weak tag of the version now matches
        '"0000000000000000", ' + TEAM,  # one of a list
        "*",  # any current representation
    ],
)
def test_given_if_none_match_naming_the_version_now_then_304_without_a_body(
    account_api: Any, if_none_match: str
) -> None:
    register(account_api, "acct_b")
    answer = _get(NINE, if_none_match=if_none_match)
    assert (answer.status, answer.body) == (304, None)
    assert (_headers(answer)["etag"], _headers(answer)["cache-control"]) == (TEAM, "private, no-cache")


@pytest.mark.parametrize("if_none_match", [TEAM_TO_PERSONAL, '"0000000000000000"', ""])
def test_given_if_none_match_naming_another_version_then_the_subscription_now(
    account_api: Any, if_none_match: str
) -> None:
    """A page that read Team with Personal scheduled, after the downgrade was cancelled: the subscription now (200)."""
    register(account_api, "acct_b")
    answer = _get(NINE, if_none_match=if_none_match)
    assert (answer.status, answer.body["tier"], _headers(answer)["etag"]) == (200, "team", TEAM)


def test_given_an_unregistered_account_then_404_even_with_if_none_match_star(account_api: Any) -> None:
    """``*`` matches only a subscription that exists: an account of the token's own that was never registered is 404."""
    for sent in (None, "*"):
        answer = _get(NINE, if_none_match=sent)
        assert (answer.status, answer.body["code"]) == (404, "not_found")


def test_the_document_names_the_read_its_304_and_its_headers() -> None:
    document = json.loads(openapi_document())
    get = document["paths"]["/v1/accounts/{account_id}/subscription"]["get"]
    parameters = {p["name"]: p for p in get["parameters"] if p["in"] == "header"}
    assert parameters["If-None-Match"]["required"] is False
    assert set(get["responses"]["200"]["headers"]) == {"ETag", "Cache-Control"}
    assert set(get["responses"]["304"]["headers"]) == {"ETag", "Cache-Control"}
    assert get["responses"]["200"]["content"]["application/json"]["schema"] == {
        "$ref": "#/components/schemas/SubscriptionStateOut"
    }
    state = document["components"]["schemas"]["SubscriptionStateOut"]
    assert set(state["required"]) == {"tier", "scheduled_change", "etag"}
    # the 412 of a tier request names the subscription now in the same shape
    refused = document["paths"]["/v1/accounts/{account_id}/subscription"]["post"]["responses"]["412"]
    current = refused["content"]["application/json"]["schema"]["properties"]["current"]
    assert current == {"$ref": "#/components/schemas/SubscriptionStateOut"}
