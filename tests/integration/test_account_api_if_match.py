"""``POST /v1/accounts/<id>/subscription`` with ``If-Match`` (D441) through the handler on moto: ``GET .../usage``
answers the subscription's version as ``ETag``; a tier request naming a version no longer stored is 412 naming the
subscription now, nothing written and nothing stored for its key; one naming the version now is decided and answers
the new ``ETag``; the replay of an answered key is answered as stored whatever its ``If-Match``; without
``If-Match`` a request is decided as before (D188: v1 only adds)."""

from __future__ import annotations

import hashlib
import json
from collections.abc import Iterator
from datetime import datetime
from typing import Any

import pytest
import time_machine

from kilo_account_api.handler import openapi_document
from kilo_billing.account_store import DynamoAccountDirectory
from kilo_billing.rating import TierChange
from tests.account_api_support import Answer, api_environment, call, claims, utc
from tests.integration.test_account_api import register, usage_table
from tests.integration.test_ingest_livekit import metrics_in

OWNER = claims("acct_b", "owner")
PATH = "/v1/accounts/acct_b/subscription"
JAN1 = utc(2026, 1, 1)
NINE = utc(2026, 11, 15, 9)


@pytest.fixture
def account_api(stack: Any, monkeypatch: pytest.MonkeyPatch) -> Iterator[Any]:
    yield from api_environment(stack, monkeypatch, {"acct_b": {"user-1": "owner"}})


def _tag_of(shown: str) -> str:
    """D441's tag worked by hand: the first 16 hex digits of SHA-256 of the tier in effect and each change to come
    (``|<at ISO>=<tier>``), quoted."""
    return '"' + hashlib.sha256(shown.encode()).hexdigest()[:16] + '"'


def _etag(answer: Answer) -> str | None:
    return {name.lower(): value for name, value in answer.headers.items()}.get("etag")


def _post(at: datetime, tier: str, key: str, if_match: str | None = None) -> Answer:
    headers = {"idempotency-key": key} | ({} if if_match is None else {"if-match": if_match})
    with time_machine.travel(at, tick=False):
        return call("POST", PATH, OWNER, {"tier": tier}, headers=headers)


def _usage(at: datetime) -> Answer:
    with time_machine.travel(at, tick=False):
        return call("GET", "/v1/accounts/acct_b/usage", OWNER)


def _changes(stack: Any) -> tuple[TierChange, ...]:
    directory = DynamoAccountDirectory(stack.clients["dynamodb"], usage_table(stack))
    return directory.registered(["acct_b"])["acct_b"].changes


def test_given_a_page_read_before_another_tier_request_then_its_click_is_412_naming_the_subscription_now(
    account_api: Any,
) -> None:
    """Team since Jan 1; 09:00 a page reads GET /usage (Team, nothing scheduled: tag of "team"); 09:05 another admin
    asks for Personal (from Dec 1); 09:10 the page's "Upgrade to Enterprise now" with its tag is 412 naming Team,
    Personal from Dec 1 and the tag now, nothing written; its key was not stored: the same key with the new tag is
    then decided (the Personal downgrade replaced by Enterprise now)."""
    register(account_api, "acct_b")
    page = _usage(NINE)
    assert (page.status, page.body["tier"], page.body["scheduled_change"], _etag(page)) == (
        200,
        "team",
        None,
        _tag_of("team"),
    )
    assert _post(utc(2026, 11, 15, 9, 5), "personal", "K0").status == 200  # someone else's click, no If-Match
    stored = (TierChange(JAN1, "team"), TierChange(utc(2026, 12, 1), "personal"))
    assert _changes(account_api) == stored
    now_tag = _tag_of("team|2026-12-01T00:00:00+00:00=personal")
    stale = _post(utc(2026, 11, 15, 9, 8), "enterprise", "K1", _etag(page))
    assert (stale.status, stale.body["code"], stale.body["field"], stale.body["current"], _etag(stale)) == (
        412,
        "precondition_failed",
        "header.if-match",
        {
            "tier": "team",
            "scheduled_change": {"tier": "personal", "effective_at": "2026-12-01T00:00:00Z"},
            "etag": now_tag,
        },
        now_tag,
    )
    assert _changes(account_api) == stored  # nothing written
    clicked = utc(2026, 11, 15, 9, 10)
    fresh = _post(clicked, "enterprise", "K1", now_tag)
    assert (fresh.status, fresh.body["change"], _etag(fresh)) == (200, "upgrade_now", _tag_of("enterprise"))
    assert _changes(account_api) == (TierChange(JAN1, "team"), TierChange(clicked, "enterprise"))


def test_given_the_version_now_then_the_request_is_decided_and_its_replay_answers_as_stored(account_api: Any) -> None:
    """Team with Personal from Dec 1 (the page's tag: of "team|2026-12-01...=personal"); "Stay on Team" with it
    cancels (ETag: of "team"); the same key and the (now stale) tag again is the replay - 200, the same body, no
    ETag (the version it answered may have moved on), nothing written twice."""
    register(account_api, "acct_b")
    assert _post(NINE, "personal", "K0").status == 200
    page = _usage(utc(2026, 11, 15, 10))
    assert _etag(page) == _tag_of("team|2026-12-01T00:00:00+00:00=personal")
    stay = _post(utc(2026, 11, 15, 11), "team", "K1", _etag(page))
    assert (stay.status, stay.body["change"], _etag(stay)) == (200, "pending_change_cancelled", _tag_of("team"))
    assert _changes(account_api) == (TierChange(JAN1, "team"),)
    again = _post(utc(2026, 11, 15, 11, 1), "team", "K1", _etag(page))
    assert (again.status, again.body, _etag(again)) == (200, stay.body, None)
    assert _changes(account_api) == (TierChange(JAN1, "team"),)


def test_given_no_if_match_then_the_request_is_decided_on_the_state_now_as_before(account_api: Any) -> None:
    """D188 (v1 only adds): an API client without If-Match, after another request changed the tier, is decided on
    the state now: Team, Personal from Dec 1, then Enterprise asked: upgrade now."""
    register(account_api, "acct_b")
    assert _post(NINE, "personal", "K0").status == 200
    ten = utc(2026, 11, 15, 10)
    up = _post(ten, "enterprise", "K1")
    assert (up.status, up.body["change"]) == (200, "upgrade_now")
    assert _changes(account_api) == (TierChange(JAN1, "team"), TierChange(ten, "enterprise"))


def test_the_document_names_if_match_its_412_and_the_etags() -> None:
    document = json.loads(openapi_document())
    post = document["paths"]["/v1/accounts/{account_id}/subscription"]["post"]
    headers = {p["name"]: p for p in post["parameters"] if p["in"] == "header"}
    assert (headers["If-Match"]["required"], headers["Idempotency-Key"]["required"]) == (False, True)
    assert post["responses"]["412"]["content"]["application/json"]["schema"]["properties"]["code"]["enum"] == [
        "precondition_failed"
    ]
    assert "ETag" in post["responses"]["200"]["headers"]
    usage = document["paths"]["/v1/accounts/{account_id}/usage"]["get"]
    assert "ETag" in usage["responses"]["200"]["headers"]
    assert usage["responses"]["200"]["content"]["application/json"]["schema"] == {
        "$ref": "#/components/schemas/UsageOut"
    }


def test_given_get_usage_then_its_answer_is_not_stored_by_caches_as_its_etag_is_the_subscriptions(
    account_api: Any,
) -> None:
    """RFC 9110 8.8.1: a strong ETag names a representation, but GET /usage's names the subscription it shows (D441),
    not its usage figures, which move without it; so the answer says ``Cache-Control: no-store`` (no cache answers
    a conditional request or serves old figures on that tag), and the document names the header."""
    register(account_api, "acct_b")
    page = _usage(NINE)
    headers = {name.lower(): value for name, value in page.headers.items()}
    assert (page.status, headers.get("cache-control"), headers.get("etag")) == (200, "no-store", _tag_of("team"))
    document = json.loads(openapi_document())
    usage = document["paths"]["/v1/accounts/{account_id}/usage"]["get"]
    assert "Cache-Control" in usage["responses"]["200"]["headers"]


def test_given_a_tag_read_before_a_scheduled_downgrade_took_effect_then_its_click_after_is_412_and_nothing_written(
    account_api: Any,
) -> None:
    """D441 through the handler: Team, Personal asked on Nov 15 (from Dec 1); the page read then (Team, Personal from
    Dec 1: its tag of "team|2026-12-01T00:00:00+00:00=personal"). Its "Upgrade to Enterprise now" sent on Dec 1 at
    09:00, when Personal is in effect and nothing is scheduled: 412 naming Personal, nothing scheduled, the tag of
    "personal"; the stored changes are as before; the same key with the new tag is then decided (nothing was stored
    under it). Fails when the tag is not worked at the request's instant (it would not move on Dec 1)."""
    register(account_api, "acct_b")
    assert _post(NINE, "personal", "K0").status == 200
    page = _usage(utc(2026, 11, 15, 10))
    assert _etag(page) == _tag_of("team|2026-12-01T00:00:00+00:00=personal")
    dec1 = utc(2026, 12, 1, 9)
    stale = _post(dec1, "enterprise", "K1", _etag(page))
    assert (stale.status, stale.body["code"], stale.body["current"], _etag(stale)) == (
        412,
        "precondition_failed",
        {"tier": "personal", "scheduled_change": None, "etag": _tag_of("personal")},
        _tag_of("personal"),
    )
    assert _changes(account_api) == (TierChange(JAN1, "team"), TierChange(utc(2026, 12, 1), "personal"))
    fresh = _post(dec1, "enterprise", "K1", _tag_of("personal"))
    assert (fresh.status, fresh.body["change"]) == (200, "upgrade_now")


def test_given_a_stale_if_match_then_the_412_is_counted_for_operations_to_see(
    account_api: Any, capsys: pytest.CaptureFixture[str]
) -> None:
    """D441: each tier request refused 412 for a stale If-Match is one ``TierRequestStale`` point (as
    ``TierRequestKeyMissing`` counts D436's 400s); a request decided with the tag now, and one without If-Match, are
    not counted."""
    register(account_api, "acct_b")
    capsys.readouterr()
    assert _post(NINE, "personal", "K0", _tag_of("team")).status == 200  # the tag now: decided
    assert _post(utc(2026, 11, 15, 10), "enterprise", "K1", _tag_of("team")).status == 412  # stale
    assert _post(utc(2026, 11, 15, 11), "team", "K2").status == 200  # no If-Match
    assert metrics_in(capsys.readouterr().out).get("TierRequestStale") == 1
