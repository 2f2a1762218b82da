"""``POST /v1/accounts/<id>/subscription`` with an ``Idempotency-Key`` (D377, D373 amended (ik)) through the handler
on moto: the first answer is stored with the tier change and replayed for the same key and body whatever changed
since - an operator's change made between a click and its retry is kept - the same key with another body is 422, a
malformed key 400, and a request without the header 400 (D436: decided on the stored state, as before, a retry
dropped an operator's change made since)."""

from __future__ import annotations

from collections.abc import Iterator
from datetime import datetime
from typing import Any

import pytest
import time_machine

from kilo_billing.account_store import DynamoAccountDirectory
from kilo_billing.accounts import AnswerExistsError, request_tier_change
from kilo_billing.catalog import default_catalog
from kilo_billing.periods import Period
from kilo_billing.rating import TierChange
from tests.account_api_fakes import NO_USAGE
from tests.account_api_support import Answer, api_environment, call, claims, utc
from tests.integration.test_account_api import register, usage_table
from tests.integration.test_ingest_livekit import metrics_in

OWNER = claims("acct_b", "owner")
PATH = "/v1/accounts/acct_b/subscription"
JAN1 = utc(2026, 1, 1)


@pytest.fixture
def account_api(stack: Any, monkeypatch: pytest.MonkeyPatch) -> Iterator[Any]:
    yield from api_environment(stack, monkeypatch, {"acct_b": {"user-1": "owner"}})


def _post(at: datetime, tier: str, key: str | None) -> Answer:
    with time_machine.travel(at, tick=False):
        return call("POST", PATH, OWNER, {"tier": tier}, headers=None if key is None else {"idempotency-key": key})


def _operator_dates(stack: Any, tier: str, at: datetime, read_at: datetime) -> None:
    """What ``kilo-billing account tier <tier> --at <at>`` calls (cli/kilo_billing_cli/accounts.py)."""
    catalog = default_catalog()
    book = catalog.for_period(Period.containing(at))
    request_tier_change(
        _directory(stack), book, "acct_b", tier, at, (), month=NO_USAGE, read_at=read_at, catalog=catalog
    )


def _directory(stack: Any) -> DynamoAccountDirectory:
    return DynamoAccountDirectory(stack.clients["dynamodb"], usage_table(stack))


def _changes(stack: Any) -> tuple[TierChange, ...]:
    return _directory(stack).registered(["acct_b"])["acct_b"].changes


def test_given_an_upgrade_retried_with_its_key_after_an_operator_dated_downgrade_then_the_answer_is_replayed_and_the_downgrade_kept(
    account_api: Any,
) -> None:
    """D373 amended (api4), with a key: Team since Jan 1; Nov 15 09:00 "Upgrade to Enterprise now" (key K1;
    the answer lost); an operator dates Personal ``--at 2027-01-01`` (Feb 1 2027, as the unit test of (api4) has
    it); the 09:00 POST retried at 11:00 with K1 is answered as at 09:00 - upgrade_now effective 09:00 - and the
    Feb 1 downgrade stays (without a key it was cancelled: pending_change_cancelled effective 11:00)."""
    register(account_api, "acct_b")
    nine, eleven = utc(2026, 11, 15, 9), utc(2026, 11, 15, 11)
    first = _post(nine, "enterprise", "K1")
    assert (first.status, first.body) == (
        200,
        {
            "account_id": "acct_b",
            "current_tier": "enterprise",
            "requested_tier": "enterprise",
            "effective_at": "2026-11-15T09:00:00Z",
            "change": "upgrade_now",
        },
    )
    _operator_dates(account_api, "personal", utc(2027, 1, 1), read_at=utc(2026, 11, 15, 10))
    stored = (TierChange(JAN1, "team"), TierChange(nine, "enterprise"), TierChange(utc(2027, 2, 1), "personal"))
    assert _changes(account_api) == stored
    again = _post(eleven, "enterprise", "K1")
    assert (again.status, again.body) == (200, first.body)  # the 09:00 answer, not "cancelled at 11:00"
    assert _changes(account_api) == stored  # the operator's Feb 1 Personal kept


def test_given_a_cancel_retried_with_its_key_after_an_operator_dated_upgrade_then_the_answer_is_replayed_and_the_upgrade_kept(
    account_api: Any,
) -> None:
    """D373 amended (api3) review #2, with a key: Team since Jan 1; 09:00 Personal asked (from Dec 1, key K0);
    12:00 "Stay on Team" (key K1: cancels it, the answer lost); 12:01 an operator dates Enterprise from 15 Jan 2027;
    the 12:00 POST retried at 12:02 with K1 is answered as at 12:00 (pending_change_cancelled effective 12:00) and
    Enterprise from Jan 15 stays (without a key the retry was a new cancel and dropped it)."""
    register(account_api, "acct_b")
    down = _post(utc(2026, 11, 15, 9), "personal", "K0")
    assert (down.status, down.body["change"], down.body["effective_at"]) == (
        200,
        "downgrade_at_period_end",
        "2026-12-01T00:00:00Z",
    )
    stay = _post(utc(2026, 11, 15, 12), "team", "K1")
    assert (stay.status, stay.body["change"], stay.body["effective_at"], stay.body["current_tier"]) == (
        200,
        "pending_change_cancelled",
        "2026-11-15T12:00:00Z",
        "team",
    )
    jan15 = utc(2027, 1, 15)
    _operator_dates(account_api, "enterprise", jan15, read_at=utc(2026, 11, 15, 12, 1))
    stored = (TierChange(JAN1, "team"), TierChange(jan15, "enterprise"))
    assert _changes(account_api) == stored
    again = _post(utc(2026, 11, 15, 12, 2), "team", "K1")
    assert (again.status, again.body) == (200, stay.body)
    assert _changes(account_api) == stored  # Enterprise from Jan 15 kept


def test_given_a_key_used_then_the_same_key_with_another_body_is_422_and_saves_nothing(account_api: Any) -> None:
    register(account_api, "acct_b")
    nine = utc(2026, 11, 15, 9)
    assert _post(nine, "enterprise", "K1").status == 200
    other = _post(utc(2026, 11, 15, 9, 5), "personal", "K1")
    assert (other.status, other.body["code"], other.body["field"]) == (422, "unprocessable", "header.idempotency-key")
    assert _changes(account_api) == (TierChange(JAN1, "team"), TierChange(nine, "enterprise"))
    # a new key is a new request: Enterprise -> Personal is a downgrade, at the next period start Dec 1
    fresh = _post(utc(2026, 11, 15, 9, 6), "personal", "K2")
    assert (fresh.status, fresh.body["change"], fresh.body["effective_at"]) == (
        200,
        "downgrade_at_period_end",
        "2026-12-01T00:00:00Z",
    )


def test_given_an_upgrade_retried_without_a_key_after_an_operator_dated_downgrade_then_400_and_the_downgrade_kept(
    account_api: Any,
) -> None:
    """D436, the (api4) story of D373 with a client that retries without the header: Team since Jan 1; Nov 15
    09:00 "Upgrade to Enterprise now" (`upgrade_now`, the answer lost); an operator dates Personal ``--at
    2027-01-01`` (from Feb 1 2027); the POST retried at 11:00 without a key. Before (the header optional) it was
    decided on the stored state - Enterprise in effect with a change pending reads as "Stay on Enterprise" - 200
    `pending_change_cancelled` effective 11:00, the operator's Feb 1 downgrade dropped. Now 400 naming the header,
    nothing decided or saved."""
    register(account_api, "acct_b")
    nine = utc(2026, 11, 15, 9)
    assert _post(nine, "enterprise", "K1").body["effective_at"] == "2026-11-15T09:00:00Z"
    _operator_dates(account_api, "personal", utc(2027, 1, 1), read_at=utc(2026, 11, 15, 10))
    stored = (TierChange(JAN1, "team"), TierChange(nine, "enterprise"), TierChange(utc(2027, 2, 1), "personal"))
    assert _changes(account_api) == stored
    again = _post(utc(2026, 11, 15, 11), "enterprise", None)
    assert _changes(account_api) == stored  # the operator's Feb 1 Personal kept
    assert (again.status, again.body["code"], again.body["field"]) == (400, "invalid_request", "header.idempotency-key")


def test_given_no_key_then_the_tier_request_is_400_naming_the_header_and_saves_nothing(account_api: Any) -> None:
    """D436: a tier request without ``Idempotency-Key`` is refused before anything is decided (the draft
    standard's answer, draft-ietf-httpapi-idempotency-key-header: 400 for a missing required key); the message says
    what to send."""
    register(account_api, "acct_b")
    refused = _post(utc(2026, 11, 15, 9), "enterprise", None)
    assert (refused.status, refused.body["code"], refused.body["field"]) == (
        400,
        "invalid_request",
        "header.idempotency-key",
    )
    assert refused.body["message"] == (
        "header.idempotency-key: required: send an Idempotency-Key header, a new key (e.g. a UUID) per tier change "
        "and the same key on its retry"
    )
    assert _changes(account_api) == (TierChange(JAN1, "team"),)


def test_given_a_refusal_with_a_key_then_it_is_not_stored_and_the_key_answers_once_the_request_can_be_made(
    account_api: Any,
) -> None:
    """A refusal saves nothing and is not stored (D377): Team since Jan 1 asking Team at 09:00 is 409 "already on
    tier"; an operator then dates Personal from Dec 1; the same key and body at 11:00 is decided again - Team in
    effect, Personal pending: the cancel, 200 `pending_change_cancelled` effective 11:00 - not the 409 replayed."""
    register(account_api, "acct_b")
    refused = _post(utc(2026, 11, 15, 9), "team", "K1")
    assert (refused.status, refused.body["message"]) == (409, "already on tier 'team'")
    _operator_dates(account_api, "personal", utc(2026, 12, 1), read_at=utc(2026, 11, 15, 10))
    stay = _post(utc(2026, 11, 15, 11), "team", "K1")
    assert (stay.status, stay.body["change"], stay.body["effective_at"]) == (
        200,
        "pending_change_cancelled",
        "2026-11-15T11:00:00Z",
    )


@pytest.mark.parametrize("key", ["", "k" * 256, "tab\there", "bell\x07"])
def test_given_a_malformed_key_then_400_naming_the_header(account_api: Any, key: str) -> None:
    register(account_api, "acct_b")
    refused = _post(utc(2026, 11, 15, 9), "enterprise", key)
    assert (refused.status, refused.body["field"]) == (400, "header.idempotency-key")
    assert _changes(account_api) == (TierChange(JAN1, "team"),)


def test_given_a_key_of_255_printable_characters_then_it_is_accepted(account_api: Any) -> None:
    register(account_api, "acct_b")
    assert _post(utc(2026, 11, 15, 9), "enterprise", "k" * 255).status == 200


def test_given_the_published_document_then_the_tier_change_lists_its_idempotency_key_as_the_handler_takes_it(
    account_api: Any,
) -> None:
    """The document ``GET /openapi.json`` serves names the ``Idempotency-Key`` header of the tier change, required
    (D436; D377 amended (sm): it was read from the event and documented nowhere), its format, and the 400 and 422 it can
    cause, with the error shape. The format agrees with the handler: keys the schema refuses (empty, 256
    characters, a tab, a bell, a non-ASCII letter) are answered 400 naming the header, those it takes (255
    characters, a UUID, spaces and ``~``) are not."""
    from jsonschema import Draft202012Validator  # noqa: PLC0415

    document = call("GET", "/openapi.json", None).body
    operation = document["paths"]["/v1/accounts/{account_id}/subscription"]["post"]
    # the key and D441's optional If-Match
    [header] = [p for p in operation["parameters"] if p["in"] == "header" and p["name"] != "If-Match"]
    assert (header["name"], header["required"]) == ("Idempotency-Key", True)  # D436: required
    # what only the required header's text says (the optional one's said "Optional" and "decided on the stored state")
    assert header["description"].startswith("Required: ")
    assert "without it, or an empty, longer or non-printable key" in header["description"]
    assert "stored state" not in header["description"]
    assert "Optional" not in header["description"]
    # the one operation that reads the header (the handler's ``_idempotency_key``) is the one that documents it
    documenting = {
        (method.upper(), path)
        for path, operations in document["paths"].items()
        for method, op in operations.items()
        for parameter in op.get("parameters", [])
        if parameter["in"] == "header" and parameter["name"].lower() == "idempotency-key"
    }
    assert documenting == {("POST", "/v1/accounts/{account_id}/subscription")}
    assert header["schema"] == {
        "type": "string",
        "minLength": 1,
        "maxLength": 255,
        "pattern": "^[ -+\\--~]+$",
    }  # no comma
    assert "422" in header["description"]
    assert "header.idempotency-key" in header["description"]
    error_body = {"$ref": "#/components/schemas/ErrorBody"}
    for status in ("400", "422"):
        assert operation["responses"][status]["content"]["application/json"]["schema"] == error_body
    assert "422" not in document["paths"]["/v1/accounts/{account_id}/budget"]["put"]["responses"]  # this route's

    register(account_api, "acct_b")
    schema = Draft202012Validator(header["schema"])
    keys = ["", "k" * 256, "a\tb", "a\x07b", "Ünï", "k1,k2", "k" * 255, "0b8e4bd2-5f0c-4c39-9d83-2f4b5d6c7a10", "a b~"]
    answers = {key: _post(utc(2026, 11, 15, 9), "enterprise", key).status for key in keys}
    assert {key: schema.is_valid(key) for key in keys} == {key: answers[key] != 400 for key in keys}
    assert [key for key in keys if answers[key] == 400] == keys[:6]


def test_given_two_keys_joined_by_the_gateway_then_400_naming_the_header_and_saves_nothing(account_api: Any) -> None:
    """D436: API Gateway's HTTP API (payload 2.0) joins a repeated header with commas - two ``Idempotency-Key``
    headers arrive as ``k1,k2``, a key neither client sent: refused, naming the header, nothing changed."""
    register(account_api, "acct_b")
    refused = _post(utc(2026, 11, 15, 9), "enterprise", "k1,k2")
    assert (refused.status, refused.body["code"], refused.body["field"]) == (
        400,
        "invalid_request",
        "header.idempotency-key",
    )
    assert _changes(account_api) == (TierChange(JAN1, "team"),)


def test_given_no_key_then_the_refusal_is_counted_for_the_keyless_callers_to_be_seen(
    account_api: Any, capsys: pytest.CaptureFixture[str]
) -> None:
    """D436: each tier request refused for a missing key is one ``TierRequestKeyMissing`` point; a request with
    a key (answered) and one with a malformed key are not counted."""
    register(account_api, "acct_b")
    capsys.readouterr()
    _post(utc(2026, 11, 15, 9), "enterprise", None)
    _post(utc(2026, 11, 15, 9), "enterprise", "")
    _post(utc(2026, 11, 15, 9), "enterprise", "K1")
    assert metrics_in(capsys.readouterr().out).get("TierRequestKeyMissing") == 1


def test_given_the_key_answered_meanwhile_but_not_readable_yet_then_409_naming_the_header(
    account_api: Any, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A concurrent retry: the tier change's write finds the key's answer stored (``AnswerExistsError``) but the
    read after it sees none yet - 409 naming ``header.idempotency-key``, which the dashboard reads as "no answer yet,
    keep the key" (D436), unlike the other 409s (no field)."""
    register(account_api, "acct_b")

    def answered_meanwhile(self: DynamoAccountDirectory, profile: Any, answer: Any) -> Any:
        raise AnswerExistsError

    monkeypatch.setattr(DynamoAccountDirectory, "save_answered", answered_meanwhile)
    refused = _post(utc(2026, 11, 15, 9), "enterprise", "K1")
    assert (refused.status, refused.body["code"], refused.body["field"]) == (409, "conflict", "header.idempotency-key")
    assert refused.body["message"] == "the request with this Idempotency-Key is in progress; retry"
