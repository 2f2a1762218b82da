"""Phone verification through the account API on moto (D160): saving a number stores it unverified and texts a
code (SNS); the confirm route checks it (hashed, expiring, limited tries); an account gets at most 3 codes an hour.
Codes are read from the SMS moto's SNS received, as a person reads them from the phone."""

from __future__ import annotations

import hashlib
import hmac
import json
import re
from collections.abc import Iterator
from dataclasses import replace
from datetime import timedelta
from typing import Any

import pytest
import time_machine

from kilo_billing.account_store import DynamoAccountDirectory
from tests.account_api_support import api_environment, call, claims, clear_caches, store_members, utc
from tests.integration.test_account_api import register

NOW = utc(2026, 11, 15, 12)
ADMIN, MEMBER = claims("acct_a", "admin"), claims("acct_a", "member")
PREFERENCES = "/v1/accounts/acct_a/alert-preferences"
SEND = f"{PREFERENCES}/phone-code"
CONFIRM = f"{PREFERENCES}/phone-code/confirm"
PHONE, OTHER = "+14155550177", "+14155550178"


@pytest.fixture
def account_api(stack: Any, monkeypatch: pytest.MonkeyPatch) -> Iterator[Any]:
    yield from api_environment(stack, monkeypatch, {"acct_a": {"user-1": "owner"}, "acct_b": {"user-1": "admin"}})


@pytest.fixture(autouse=True)
def frozen() -> Iterator[None]:
    with time_machine.travel(NOW, tick=False):
        yield


def texts(stack: Any) -> list[tuple[str, str]]:
    from moto.sns.models import sns_backends  # noqa: PLC0415

    return [(to, text) for to, text in sns_backends[stack.template.account]["us-east-1"].sms_messages.values()]


def code_in(text: str) -> str:
    found = re.fullmatch(r"Kilo Billing: your code is (\d{6})\. .*expires in 10 min\.", text)
    assert found, text
    return found.group(1)


def stored_profile(stack: Any) -> Any:
    directory = DynamoAccountDirectory(stack.clients["dynamodb"], stack.template.physical_name("UsageTable"))
    return directory.registered(["acct_a"])["acct_a"]


def stored_code_item(stack: Any) -> dict[str, Any]:
    table = stack.template.physical_name("UsageTable")
    key = {"pk": {"S": "ACCOUNT#acct_a"}, "sk": {"S": "PHONECODE"}}
    found: dict[str, Any] = stack.clients["dynamodb"].get_item(TableName=table, Key=key, ConsistentRead=True)
    return found.get("Item", {})


def keyed_hash(stack: Any, salt: str, phone: str, code: str) -> str:
    """The stored hash as D160 describes it: HMAC-SHA256 under the key the template's secret holds, of salt, number
    and code (written out here, not the code's own function)."""
    name = stack.template.parameters["PhoneCodeKeySecretName"]
    key = json.loads(stack.clients["secretsmanager"].get_secret_value(SecretId=name)["SecretString"])["key"]
    message = bytes.fromhex(salt) + b"\x00" + phone.encode() + b"\x00" + code.encode()
    return hmac.new(key.encode(), message, hashlib.sha256).hexdigest()


def wrong(code: str) -> str:
    return f"{(int(code) + 1) % 1_000_000:06d}"


def test_given_a_saved_number_then_it_is_unverified_until_the_texted_code_is_confirmed(account_api: Any) -> None:
    register(account_api, "acct_a")
    saved = call("PUT", PREFERENCES, ADMIN, {"email": "ops@a.example", "phone": PHONE})
    assert (saved.status, saved.body["phone"], saved.body["phone_verified"]) == (200, PHONE, False)
    assert saved.body["phone_code"] == {"status": "sent", "reason": None}
    [(to, text)] = texts(account_api)
    code = code_in(text)
    assert to == PHONE
    item = stored_code_item(account_api)  # the code itself is never stored: an HMAC of number and code
    assert code not in str(item)
    assert item["code_hash"]["S"] == keyed_hash(account_api, item["salt"]["S"], PHONE, code)
    # the table alone does not give the code away: the salt beside the hash is not the HMAC's key (D160 before the
    # review: HMAC under the salt, so trying the 10^6 codes against the item found it)
    salt = bytes.fromhex(item["salt"]["S"])
    assert item["code_hash"]["S"] != hmac.new(salt, f"{PHONE}\x00{code}".encode(), hashlib.sha256).hexdigest()
    assert (item["phone"], item["tries_left"], item["code_expires_at"]) == (
        {"S": PHONE},
        {"N": "5"},
        {"S": "2026-11-15T12:10:00+00:00"},
    )
    assert int(item["expires_at"]["N"]) == int((NOW + timedelta(days=1)).timestamp())  # TTL: after the daily cap
    assert stored_profile(account_api).phone_verified is False
    # saving the form again while the code is pending texts nothing new
    again = call("PUT", PREFERENCES, ADMIN, {"email": "ops@a.example", "phone": PHONE})
    assert (again.status, again.body["phone_code"]) == (200, {"status": "pending", "reason": None})
    assert len(texts(account_api)) == 1

    refused = call("POST", CONFIRM, ADMIN, {"code": wrong(code)})
    assert (refused.status, refused.body) == (
        400,
        {"code": "invalid_request", "message": "code: the code is wrong; 4 tries left", "field": "code"},
    )
    assert call("POST", CONFIRM, MEMBER, {"code": code}).status == 403
    confirmed = call("POST", CONFIRM, ADMIN, {"code": code})
    assert (confirmed.status, confirmed.body["phone"], confirmed.body["phone_verified"]) == (200, PHONE, True)
    assert stored_profile(account_api).phone_verified is True
    assert call("GET", PREFERENCES, MEMBER).body["phone_verified"] is True
    # the same number saved again stays verified, nothing texted; another number is unverified and gets its code
    same = call("PUT", PREFERENCES, ADMIN, {"email": "ops@a.example", "phone": PHONE}).body
    assert (same["phone_verified"], same["phone_code"]) == (True, None)
    assert len(texts(account_api)) == 1
    assert call("POST", SEND, ADMIN).body["code"] == "conflict"  # verified already
    changed = call("PUT", PREFERENCES, ADMIN, {"email": "ops@a.example", "phone": OTHER})
    assert (changed.body["phone"], changed.body["phone_verified"]) == (OTHER, False)
    assert [to for to, _ in texts(account_api)] == [PHONE, OTHER]
    assert stored_profile(account_api).phone_verified is False


def test_given_a_code_then_it_expires_after_10_minutes_and_is_used_up_after_5_wrong_tries(account_api: Any) -> None:
    register(account_api, "acct_a", phone=PHONE)
    sent = call("POST", SEND, ADMIN)
    assert (sent.status, sent.body) == (200, {"phone": PHONE, "code_expires_at": "2026-11-15T12:10:00Z", "tries": 5})
    code = code_in(texts(account_api)[-1][1])
    with time_machine.travel(NOW + timedelta(minutes=10), tick=False):
        late = call("POST", CONFIRM, ADMIN, {"code": code})
        assert (late.status, late.body["message"]) == (400, "code: the code has expired: ask for a new one")
        assert call("POST", SEND, ADMIN).status == 200
    code = code_in(texts(account_api)[-1][1])
    for left in ("4 tries left", "3 tries left", "2 tries left", "1 try left", "no tries left: ask for a new one"):
        answer = call("POST", CONFIRM, ADMIN, {"code": wrong(code)})
        assert answer.body["message"] == f"code: the code is wrong; {left}"
    exhausted = call("POST", CONFIRM, ADMIN, {"code": code})  # the right code, after its tries are spent
    assert (exhausted.status, exhausted.body["message"]) == (
        400,
        "code: no code is pending for the account's number: ask for a new one",
    )
    assert stored_profile(account_api).phone_verified is False


def test_given_three_codes_in_an_hour_then_a_fourth_is_refused_until_the_first_is_an_hour_old(account_api: Any) -> None:
    register(account_api, "acct_a")
    assert call("PUT", PREFERENCES, ADMIN, {"phone": PHONE}).status == 200  # the first code
    for minutes in (1, 2):
        with time_machine.travel(NOW + timedelta(minutes=minutes), tick=False):
            assert call("POST", SEND, ADMIN).status == 200
    with time_machine.travel(NOW + timedelta(minutes=59), tick=False):
        refused = call("POST", SEND, ADMIN)
        assert (refused.status, refused.body) == (
            409,
            {
                "code": "conflict",
                "message": "3 codes were sent in the last 1 h; ask again after 2026-11-15 13:00:00 UTC",
                "field": None,
            },
        )
        # saving another number is not a way round the limit: saved, but not texted (and the answer says why)
        other = call("PUT", PREFERENCES, ADMIN, {"phone": OTHER})
        assert (other.status, other.body["phone"], other.body["phone_verified"]) == (200, OTHER, False)
        assert other.body["phone_code"] == {
            "status": "not_sent",
            "reason": "3 codes were sent in the last 1 h; ask again after 2026-11-15 13:00:00 UTC",
        }
    assert len(texts(account_api)) == 3
    with time_machine.travel(NOW + timedelta(minutes=60, seconds=1), tick=False):
        assert call("POST", SEND, ADMIN).status == 200
    assert [to for to, _ in texts(account_api)] == [PHONE, PHONE, PHONE, OTHER]


def test_given_no_number_then_no_code_is_sent_and_a_confirm_finds_none(account_api: Any) -> None:
    register(account_api, "acct_a")
    answer = call("POST", SEND, ADMIN)
    assert (answer.status, answer.body["field"]) == (400, "phone")
    assert call("POST", CONFIRM, ADMIN, {"code": "123456"}).body["field"] == "code"
    malformed = call("POST", CONFIRM, ADMIN, {"code": "12345x"})
    assert (malformed.status, malformed.body["field"]) == (400, "code")
    assert texts(account_api) == []


OPTED_OUT = "+14155550199"  # moto's SNS answers "opted out" for a number ending in 99, as SNS does after a STOP


def test_given_a_number_that_opted_out_of_sms_then_it_is_saved_but_gets_no_code_and_nothing_counts(
    account_api: Any,
) -> None:
    register(account_api, "acct_a")
    saved = call("PUT", PREFERENCES, ADMIN, {"email": "ops@a.example", "phone": OPTED_OUT})
    assert (saved.status, saved.body["phone"], saved.body["email"], saved.body["phone_code"]) == (
        200,
        OPTED_OUT,
        "ops@a.example",
        {"status": "not_sent", "reason": f"{OPTED_OUT} opted out of SMS (replied STOP): no code can be texted to it"},
    )
    assert stored_profile(account_api).phone == OPTED_OUT
    asked = call("POST", SEND, ADMIN)
    assert (asked.status, asked.body["field"]) == (400, "phone")
    assert texts(account_api) == []
    assert stored_code_item(account_api) == {}  # checked before a code is stored: none pending, none counted
    # another number right after: its code goes (the refused asks spent none of the 3 an hour)
    assert call("PUT", PREFERENCES, ADMIN, {"phone": PHONE}).body["phone_code"]["status"] == "sent"
    for _ in range(2):
        assert call("POST", SEND, ADMIN).status == 200
    assert [to for to, _ in texts(account_api)] == [PHONE, PHONE, PHONE]


OWNER = claims("acct_a", "owner")


def test_given_an_erased_account_then_its_phone_code_item_keeps_no_number_and_no_hash_only_send_times(
    account_api: Any,
) -> None:
    register(account_api, "acct_a")
    store_members(account_api, "acct_a", {"user-1": "owner"})  # OWNER (D202)
    call("PUT", PREFERENCES, ADMIN, {"phone": PHONE})
    before = call("GET", "/v1/accounts/acct_a/export", OWNER).body["phone_code"]
    assert before == {
        "phone": PHONE,
        "code_expires_at": "2026-11-15T12:10:00+00:00",
        "sent_at": ["2026-11-15T12:00:00+00:00"],
    }
    assert call("POST", "/v1/accounts/acct_a/erase", OWNER).status == 200
    item = stored_code_item(account_api)
    assert PHONE not in str(item)
    assert "phone" not in item
    assert "code_hash" not in item
    assert (item["tries_left"], item["sent_at"]) == ({"N": "0"}, {"L": [{"S": "2026-11-15T12:00:00+00:00"}]})
    after = call("GET", "/v1/accounts/acct_a/export", OWNER).body["phone_code"]
    assert after == {"phone": None, "code_expires_at": "2026-11-15T12:10:00+00:00", "sent_at": before["sent_at"]}
    # the erased account's send times still count: a new number gets the 2nd and 3rd code of the hour, not a 4th
    call("PUT", PREFERENCES, ADMIN, {"phone": OTHER})
    assert call("POST", SEND, ADMIN).status == 200
    assert call("POST", SEND, ADMIN).status == 409


def test_given_an_erasure_without_any_code_sent_then_no_phone_code_item_is_made(account_api: Any) -> None:
    register(account_api, "acct_a")
    store_members(account_api, "acct_a", {"user-1": "owner"})  # OWNER (D202)
    assert call("POST", "/v1/accounts/acct_a/erase", OWNER).status == 200
    assert stored_code_item(account_api) == {}
    assert call("GET", "/v1/accounts/acct_a/export", OWNER).body["phone_code"] is None


def test_given_a_number_texted_three_codes_today_then_no_account_gets_a_fourth_until_the_next_utc_day(
    account_api: Any,
) -> None:
    register(account_api, "acct_a")
    register(account_api, "acct_b")
    assert call("PUT", PREFERENCES, ADMIN, {"phone": PHONE}).body["phone_code"]["status"] == "sent"
    for minutes in (1, 2):
        with time_machine.travel(NOW + timedelta(minutes=minutes), tick=False):
            assert call("POST", SEND, ADMIN).status == 200
    # another account typing the same number: its first code of the hour, but the number's 4th today
    b_admin, b_preferences = claims("acct_b", "admin"), "/v1/accounts/acct_b/alert-preferences"
    saved = call("PUT", b_preferences, b_admin, {"phone": PHONE})
    assert (saved.status, saved.body["phone"], saved.body["phone_code"]) == (
        200,
        PHONE,
        {"status": "not_sent", "reason": f"{PHONE} was sent 3 codes today; ask again after 2026-11-16 00:00:00 UTC"},
    )
    with time_machine.travel(NOW + timedelta(hours=2), tick=False):  # acct_a's hourly limit is over, not the day's
        refused = call("POST", SEND, ADMIN)
        assert (refused.status, refused.body["message"]) == (
            409,
            f"{PHONE} was sent 3 codes today; ask again after 2026-11-16 00:00:00 UTC",
        )
        assert call("POST", SEND, ADMIN).status == 409
    with time_machine.travel(utc(2026, 11, 16, 0, 0, 1), tick=False):
        assert call("POST", f"{b_preferences}/phone-code", b_admin).status == 200
    assert [to for to, _ in texts(account_api)] == [PHONE] * 4


def test_given_ten_codes_in_a_day_then_an_account_gets_no_eleventh_whatever_the_numbers(account_api: Any) -> None:
    register(account_api, "acct_a")
    numbers = [f"+1415555{n:04d}" for n in range(10, 14)]  # 3 codes each at most, per number and day
    sent = 0
    for hour, number in enumerate(numbers):
        with time_machine.travel(NOW + timedelta(hours=hour), tick=False):
            assert call("PUT", PREFERENCES, ADMIN, {"phone": number}).body["phone_code"]["status"] == "sent"
            sent += 1
            while sent < 10 and call("POST", SEND, ADMIN).status == 200:
                sent += 1
    assert len(texts(account_api)) == 10
    with time_machine.travel(NOW + timedelta(hours=3, minutes=30), tick=False):
        refused = call("POST", SEND, ADMIN)
    assert (refused.status, refused.body["message"]) == (
        409,
        "10 codes were sent in the last 24 h; ask again after 2026-11-16 12:00:00 UTC",
    )
    with time_machine.travel(NOW + timedelta(hours=24, seconds=1), tick=False):
        assert call("POST", SEND, ADMIN).status == 200
    assert len(texts(account_api)) == 11


def raw_call(method: str, path: str, token_claims: dict[str, str], body: bytes | None, content_type: str) -> Any:
    """The handler invoked with ``body`` as sent (not necessarily JSON) under ``content_type``."""
    from kilo_account_api.handler import lambda_handler  # noqa: PLC0415
    from kilo_dev.apigw import http_api_event  # noqa: PLC0415
    from tests.account_api_support import route_of  # noqa: PLC0415
    from tests.conftest import LambdaContext  # noqa: PLC0415

    route, params = route_of(method, path)
    built = http_api_event(method, path, body, {"content-type": content_type}, route_key=f"{method} {route}")
    built["pathParameters"] = params
    built["requestContext"]["authorizer"] = {"jwt": {"claims": token_claims, "scopes": None}}
    response = lambda_handler(built, LambdaContext())
    return response["statusCode"], json.loads(response.get("body") or "null")


def number_counters(stack: Any) -> list[dict[str, Any]]:
    table = stack.template.physical_name("UsageTable")
    found = stack.clients["dynamodb"].scan(TableName=table)["Items"]
    return [item for item in found if item["pk"]["S"].startswith("PHONE#")]


@pytest.mark.parametrize(
    ("body", "content_type", "status", "field", "message"),
    [
        (b'{"code": "123456"}', "application/json", 400, "code", "code: Extra inputs are not permitted"),
        (b'{"phone": "+14155550178"}', "application/json", 400, "phone", "phone: Extra inputs are not permitted"),
        (b"[]", "application/json", 400, "body", "body: Input should be a valid dictionary"),
        (b'"send"', "application/json", 400, "body", "body: Input should be a valid dictionary"),
        (b"1", "application/json", 400, "body", "body: Input should be a valid dictionary"),
        (b"null", "application/json", 400, "body", "body: send no body or a JSON object (an empty one: {})"),
        (b"please send", "application/json", 400, "body", "body is not valid JSON"),
        (b"phone=%2B14155550178", "application/x-www-form-urlencoded", 415, "body", None),
        (b"send", "text/plain", 415, "body", None),
    ],
)
def test_given_a_body_other_than_none_or_an_empty_object_then_the_send_is_refused_naming_it_and_nothing_happens(
    account_api: Any, body: bytes, content_type: str, status: int, field: str, message: str | None
) -> None:
    register(account_api, "acct_a", phone=PHONE)
    answer_status, answer = raw_call("POST", SEND, ADMIN, body, content_type)
    assert (answer_status, answer["field"]) == (status, field), answer
    assert answer["code"] == {400: "invalid_request", 415: "unsupported_media_type"}[status]
    if message is not None:
        assert answer["message"].startswith(message), answer
    assert texts(account_api) == []  # nothing texted, nothing stored, nothing counted
    assert stored_code_item(account_api) == {}
    assert number_counters(account_api) == []


@pytest.mark.parametrize("body", [None, b"{}", b" { } "])
def test_given_no_body_or_an_empty_object_then_the_code_is_sent(account_api: Any, body: bytes | None) -> None:
    register(account_api, "acct_a", phone=PHONE)
    answer_status, answer = raw_call("POST", SEND, ADMIN, body, "application/json")
    assert (answer_status, answer) == (200, {"phone": PHONE, "code_expires_at": "2026-11-15T12:10:00Z", "tries": 5})
    assert [to for to, _ in texts(account_api)] == [PHONE]


def test_given_the_document_then_the_send_route_takes_an_optional_empty_object_and_documents_its_400_and_415(
    account_api: Any,
) -> None:
    document = call("GET", "/openapi.json", None).body
    operation = document["paths"]["/v1/accounts/{account_id}/alert-preferences/phone-code"]["post"]
    body = operation["requestBody"]
    assert body.get("required", False) is False  # may be left out
    schema = body["content"]["application/json"]["schema"]
    assert schema == {"$ref": "#/components/schemas/PhoneCodeRequestIn"}  # not "or null": null is refused
    found = document["components"]["schemas"]["PhoneCodeRequestIn"]
    assert (found["type"], found["properties"], found["additionalProperties"]) == ("object", {}, False)
    assert {"400", "415"} <= set(operation["responses"])
    # the other optional bodies say the same (a JSON null is refused there too)
    for path in ("/v1/accounts/{account_id}/payment-methods/checkout", "/v1/accounts/{account_id}/billing-portal"):
        other = document["paths"][path]["post"]["requestBody"]
        assert other.get("required", False) is False
        assert "anyOf" not in other["content"]["application/json"]["schema"]


@pytest.mark.parametrize("route", ["payment-methods/checkout", "billing-portal"])
def test_given_a_json_null_to_another_optional_body_then_it_is_refused_naming_the_body(
    account_api: Any, route: str
) -> None:
    register(account_api, "acct_a")
    status, answer = raw_call("POST", f"/v1/accounts/acct_a/{route}", ADMIN, b"null", "application/json")
    assert (status, answer["code"], answer["field"]) == (400, "invalid_request", "body")
    assert answer["message"] == "body: send no body or a JSON object (an empty one: {})"


@pytest.mark.parametrize("route", ["erase", "entitlements/check", "alert-preferences/phone-code"])
@pytest.mark.parametrize("body", [None, b""])
@pytest.mark.parametrize("content_type", ["application/x-www-form-urlencoded", "text/plain; charset=utf-8"])
def test_given_no_body_under_a_content_type_that_is_not_json_then_the_optional_body_route_answers_as_for_no_body(
    account_api: Any, route: str, body: bytes | None, content_type: str
) -> None:
    """D169: no body is no body whatever the content type (``curl -X POST -d ''``, jQuery's ``$.post(url)``, Java's
    HttpURLConnection send a form type with it); D159's 415 is for a body that is not JSON."""
    register(account_api, "acct_a", phone=PHONE, email="ops@a.example")
    store_members(account_api, "acct_a", {"user-1": "owner"})  # OWNER (D202)
    status, answer = raw_call("POST", f"/v1/accounts/acct_a/{route}", OWNER, body, content_type)
    assert status == 200, answer
    if route == "alert-preferences/phone-code":
        assert [to for to, _ in texts(account_api)] == [PHONE]


JAMAICA = "+18765550100"  # +1 876: a calling code the US and Canada share, yet Jamaica's
JAMAICA_REFUSED = (
    "phone: +18765550100 has region JM; SMS goes only to the regions of SMS_REGIONS (AU, CA, GB, IE, NZ, US): "
    "use a number in one of them"
)


def test_given_a_number_of_a_region_off_the_sms_list_then_it_is_not_saved_and_no_code_is_texted_to_it(
    account_api: Any, monkeypatch: pytest.MonkeyPatch
) -> None:
    """D221, with the template's list (SMS_REGIONS: the US, Canada, the UK, Ireland, Australia, New Zealand): a
    Jamaican number is +1 like the US, and refused all the same."""
    register(account_api, "acct_a", email="old@a.example", phone=PHONE)
    refused = call("PUT", PREFERENCES, ADMIN, {"email": "new@a.example", "phone": JAMAICA})
    assert (refused.status, refused.body) == (
        400,
        {"code": "invalid_request", "message": JAMAICA_REFUSED, "field": "phone"},
    )
    stored = stored_profile(account_api)
    assert (stored.phone, stored.email) == (PHONE, "old@a.example")  # nothing of the save
    assert texts(account_api) == []
    assert stored_code_item(account_api) == {}

    # a number saved before Jamaica left the list (or before the list): the send route refuses it, nothing counted
    directory = DynamoAccountDirectory(
        account_api.clients["dynamodb"], account_api.template.physical_name("UsageTable")
    )
    directory.save(replace(stored, phone=JAMAICA))
    asked = call("POST", SEND, ADMIN)
    assert (asked.status, asked.body) == (
        400,
        {"code": "invalid_request", "message": JAMAICA_REFUSED, "field": "phone"},
    )
    assert texts(account_api) == []
    assert stored_code_item(account_api) == {}

    # the operator adds Jamaica: the same number gets its code
    monkeypatch.setenv("SMS_REGIONS", "US,CA,GB,IE,AU,NZ,JM")
    clear_caches()
    sent = call("POST", SEND, ADMIN)
    assert (sent.status, sent.body["phone"]) == (200, JAMAICA)
    assert [to for to, _ in texts(account_api)] == [JAMAICA]
