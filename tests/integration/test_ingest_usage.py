"""POST /v1/usage end to end in-process: real API Gateway v2 events, HMAC-signed bodies, DynamoDB on moto.

The clock is frozen at 2026-03-01T12:00:00Z (unix 1772366400) so timestamps, the signature window and every stored
attribute can be written literally.
"""

from __future__ import annotations

import json
from collections.abc import Iterator
from datetime import UTC, datetime
from typing import Any

import pytest
import time_machine

from kilo_dev.apigw import http_api_event
from kilo_dev.signing import usage_signature
from kilo_webhook_ingest import usage_handler
from tests.conftest import (
    USAGE_CLIENTS,
    LambdaContext,
    Stack,
    _clear_caches,
    count_calls,
    recreate_table,
    register_accounts,
)

NOW = datetime(2026, 3, 1, 12, 0, 0, tzinfo=UTC)
NOW_S = 1772366400
CLIENT = "kilo-app"
SECRET = "usage-secret-new"
ALL_SECRETS = [secret for secrets in USAGE_CLIENTS.values() for secret in secrets]
TWO_MINUTES_AGO = "2026-03-01T11:58:00Z"


@pytest.fixture(autouse=True)
def clock() -> Iterator[None]:
    with time_machine.travel(NOW, tick=False):
        yield


REGISTERED = ("acct_7", "acct_42", "acct_scoped")


@pytest.fixture(autouse=True)
def accounts(stack: Stack) -> None:
    """The accounts these tests bill have profiles (usage is accepted only for registered accounts)."""
    register_accounts(stack, *REGISTERED)


def post(
    body: bytes,
    headers: dict[str, str],
    context: LambdaContext,
    *,
    force_base64: bool = False,
    path: str = "/v1/usage",
) -> tuple[int, dict[str, Any]]:
    event = http_api_event(
        "POST", path, body, {"content-type": "application/json", **headers}, force_base64=force_base64
    )
    response = usage_handler.lambda_handler(event, context)
    assert response["headers"]["content-type"] == "application/json"
    for secret in ALL_SECRETS:  # no response, error or not, may echo a signing secret
        assert secret not in response["body"]
    return response["statusCode"], json.loads(response["body"])


def signed(body: bytes, client: str = CLIENT, secret: str = SECRET, timestamp: int = NOW_S) -> dict[str, str]:
    return {"x-kilo-client": client, "x-kilo-signature": usage_signature(body, secret, timestamp)}


def batch(*events: dict[str, Any]) -> bytes:
    return json.dumps({"events": list(events)}).encode()


def message(key: str, **fields: Any) -> dict[str, Any]:
    return {
        "idempotency_key": key,
        "account_id": "acct_7",
        "meter": "messages",
        "quantity": 1,
        "timestamp": TWO_MINUTES_AGO,
        **fields,
    }


def send_batch(context: LambdaContext, *events: dict[str, Any]) -> tuple[int, dict[str, Any]]:
    body = batch(*events)
    return post(body, signed(body), context)


def items_by_key(stack: Stack) -> dict[str, dict[str, Any]]:
    return {item["pk"]["S"]: item for item in stack.table_items()}


MESSAGE_IN_ROOM = {
    "idempotency_key": "msg-0001",
    "account_id": "acct_42",
    "meter": "messages",
    "quantity": 3,
    "timestamp": TWO_MINUTES_AGO,
    "room": "standup-42",
    "participant": "alice",
}
TRANSFER_NO_ROOM = {
    "idempotency_key": "dt-0001",
    "account_id": "acct_42",
    "meter": "data_transfer",
    "quantity": 1048576,
    "timestamp": "2026-03-01T12:58:00+01:00",  # the same instant as 11:58Z, written with an offset
}
PLAIN_MESSAGE = {
    "idempotency_key": "msg-0002",
    "account_id": "acct_7",
    "meter": "messages",
    "quantity": 1,
    "timestamp": TWO_MINUTES_AGO,
}
VALID_BATCH = (MESSAGE_IN_ROOM, TRANSFER_NO_ROOM, PLAIN_MESSAGE)
COMMON = {
    "source": {"S": "usage"},
    "schema_version": {"N": "1"},
    "client_id": {"S": "kilo-app"},
    "occurred_at_ms": {"N": "1772366280000"},
    "received_at_ms": {"N": "1772366400000"},
    "expires_at": {"N": "1806926400"},  # received + RawEventTtlDays (400) days
}


# --- accepted batches ---------------------------------------------------------------------------------------------


def test_given_a_valid_batch_when_posted_then_200_and_every_event_stored_with_its_attributes(
    stack: Stack, lambda_context: LambdaContext
) -> None:
    status, payload = send_batch(lambda_context, *VALID_BATCH)
    assert status == 200
    assert payload == {
        "accepted": 3,
        "duplicates": 0,
        "conflicts": 0,
        "results": [
            {"index": 0, "idempotency_key": "msg-0001", "status": "accepted"},
            {"index": 1, "idempotency_key": "dt-0001", "status": "accepted"},
            {"index": 2, "idempotency_key": "msg-0002", "status": "accepted"},
        ],
    }
    assert items_by_key(stack) == {
        "usage#kilo-app#msg-0001": {
            **COMMON,
            "pk": {"S": "usage#kilo-app#msg-0001"},
            "sk": {"S": "usage"},
            "idempotency_key": {"S": "msg-0001"},
            "account_id": {"S": "acct_42"},
            "meter": {"S": "messages"},
            "quantity": {"N": "3"},
            "room": {"S": "standup-42"},
            "participant": {"S": "alice"},
            "payload_hash": {"S": "bff0cbd672d181c8c6c003f0c272bb2dfe57a43d9febad8464c020ee4556813e"},
        },
        "usage#kilo-app#dt-0001": {
            **COMMON,
            "pk": {"S": "usage#kilo-app#dt-0001"},
            "sk": {"S": "usage"},
            "idempotency_key": {"S": "dt-0001"},
            "account_id": {"S": "acct_42"},
            "meter": {"S": "data_transfer"},
            "quantity": {"N": "1048576"},
            "payload_hash": {"S": "93643c1272f0468729f15857ae86ac2b2a03384127991357be27b5bcd966955e"},
        },
        "usage#kilo-app#msg-0002": {
            **COMMON,
            "pk": {"S": "usage#kilo-app#msg-0002"},
            "sk": {"S": "usage"},
            "idempotency_key": {"S": "msg-0002"},
            "account_id": {"S": "acct_7"},
            "meter": {"S": "messages"},
            "quantity": {"N": "1"},
            "payload_hash": {"S": "131f744032080cad1a1cbb8f0addec206f223b4b87e85363dd19a9caceac6367"},
        },
    }


def test_given_the_same_key_from_two_clients_then_each_client_has_its_own_item(
    stack: Stack, lambda_context: LambdaContext
) -> None:
    body = batch(PLAIN_MESSAGE)
    assert post(body, signed(body), lambda_context)[1]["accepted"] == 1
    assert post(body, signed(body, client="other-app", secret="other-secret"), lambda_context)[1]["accepted"] == 1
    assert sorted(items_by_key(stack)) == ["usage#kilo-app#msg-0002", "usage#other-app#msg-0002"]


def test_given_timestamps_just_inside_the_window_then_accepted(stack: Stack, lambda_context: LambdaContext) -> None:
    status, payload = send_batch(
        lambda_context,
        message("in-4min-future", timestamp="2026-03-01T12:04:00Z"),
        message("in-34-days-past", timestamp="2026-01-26T12:00:00Z"),
        message("zero-quantity", quantity=0),
    )
    assert (status, payload["accepted"]) == (200, 3)
    items = items_by_key(stack)
    assert items["usage#kilo-app#in-4min-future"]["occurred_at_ms"] == {"N": "1772366640000"}
    assert items["usage#kilo-app#in-34-days-past"]["occurred_at_ms"] == {"N": "1769428800000"}
    assert items["usage#kilo-app#zero-quantity"]["quantity"] == {"N": "0"}


def test_given_the_same_event_twice_in_one_batch_then_one_item_and_the_repeat_is_a_duplicate(
    stack: Stack, lambda_context: LambdaContext
) -> None:
    puts: list[str] = []  # the repeat is answered from the first, not raced to the same item (one write)
    usage_handler.dependencies().store._client.meta.events.register(
        "before-call.dynamodb.PutItem", lambda params, **_: puts.append(json.loads(params["body"])["Item"]["pk"]["S"])
    )
    status, payload = send_batch(lambda_context, PLAIN_MESSAGE, PLAIN_MESSAGE)
    assert status == 200
    assert (payload["accepted"], payload["duplicates"], payload["conflicts"]) == (1, 1, 0)
    assert list(items_by_key(stack)) == ["usage#kilo-app#msg-0002"]
    assert puts == ["usage#kilo-app#msg-0002"]


def test_given_a_batch_already_stored_when_sent_again_then_200_all_duplicates_and_nothing_new(
    stack: Stack, lambda_context: LambdaContext
) -> None:
    assert send_batch(lambda_context, *VALID_BATCH)[0] == 200
    before = items_by_key(stack)
    with time_machine.travel(NOW_S + 60, tick=False):  # the client's retry, a minute later, freshly signed
        body = batch(*VALID_BATCH)
        status, payload = post(body, signed(body, timestamp=NOW_S + 60), lambda_context)
    assert status == 200
    assert payload == {
        "accepted": 0,
        "duplicates": 3,
        "conflicts": 0,
        "results": [
            {"index": 0, "idempotency_key": "msg-0001", "status": "duplicate"},
            {"index": 1, "idempotency_key": "dt-0001", "status": "duplicate"},
            {"index": 2, "idempotency_key": "msg-0002", "status": "duplicate"},
        ],
    }
    assert items_by_key(stack) == before  # not even received_at_ms moved


def test_given_a_key_reused_with_a_different_quantity_then_409_that_item_conflicts_and_the_original_stays(
    stack: Stack, lambda_context: LambdaContext
) -> None:
    assert send_batch(lambda_context, MESSAGE_IN_ROOM)[0] == 200
    status, payload = send_batch(lambda_context, {**MESSAGE_IN_ROOM, "quantity": 4}, PLAIN_MESSAGE)
    assert status == 409
    assert (payload["accepted"], payload["duplicates"], payload["conflicts"]) == (1, 0, 1)
    assert payload["results"] == [
        {"index": 0, "idempotency_key": "msg-0001", "status": "conflict"},
        {"index": 1, "idempotency_key": "msg-0002", "status": "accepted"},
    ]
    assert payload["error"]["code"] == "idempotency_conflict"
    items = items_by_key(stack)
    assert items["usage#kilo-app#msg-0001"]["quantity"] == {"N": "3"}
    assert items["usage#kilo-app#msg-0001"]["payload_hash"] == {
        "S": "bff0cbd672d181c8c6c003f0c272bb2dfe57a43d9febad8464c020ee4556813e"
    }
    assert sorted(items) == ["usage#kilo-app#msg-0001", "usage#kilo-app#msg-0002"]


def test_given_a_key_stored_when_a_batch_repeats_it_with_a_different_quantity_then_both_occurrences_conflict(
    stack: Stack, lambda_context: LambdaContext
) -> None:
    assert send_batch(lambda_context, MESSAGE_IN_ROOM)[0] == 200
    changed = {**MESSAGE_IN_ROOM, "quantity": 4}
    status, payload = send_batch(lambda_context, changed, changed)
    assert status == 409  # the repeat is not recorded either: it must not read as a duplicate of stored usage
    assert (payload["accepted"], payload["duplicates"], payload["conflicts"]) == (0, 0, 2)
    assert payload["results"] == [
        {"index": 0, "idempotency_key": "msg-0001", "status": "conflict"},
        {"index": 1, "idempotency_key": "msg-0001", "status": "conflict"},
    ]
    assert items_by_key(stack)["usage#kilo-app#msg-0001"]["quantity"] == {"N": "3"}


def test_given_a_key_stored_when_a_batch_repeats_it_unchanged_then_both_occurrences_are_duplicates(
    stack: Stack, lambda_context: LambdaContext
) -> None:
    assert send_batch(lambda_context, MESSAGE_IN_ROOM)[0] == 200
    status, payload = send_batch(lambda_context, MESSAGE_IN_ROOM, MESSAGE_IN_ROOM)
    assert status == 200
    assert (payload["accepted"], payload["duplicates"], payload["conflicts"]) == (0, 2, 0)


def test_given_a_full_batch_of_1000_events_then_all_accepted_with_one_write_each(
    stack: Stack, lambda_context: LambdaContext
) -> None:
    # moto needs ~3.5 ms per PutItem; answering the writes here keeps this test under a second while still running
    # the handler, the validation of 1000 events and botocore's request serialisation end to end
    written: list[str] = []

    def accept_write(params: dict[str, Any], **_: Any) -> tuple[Any, dict[str, Any]]:
        written.append(json.loads(params["body"])["Item"]["pk"]["S"])
        return type("Response", (), {"status_code": 200, "headers": {}})(), {}

    usage_handler.dependencies().store._client.meta.events.register("before-call.dynamodb.PutItem", accept_write)
    events = [message(f"bulk-{index:04d}") for index in range(1000)]
    status, payload = send_batch(lambda_context, *events)
    assert (status, payload["accepted"], len(payload["results"])) == (200, 1000, 1000)
    assert len(written) == 1000
    assert set(written) == {f"usage#kilo-app#bulk-{index:04d}" for index in range(1000)}


# --- rejected batches: nothing stored -----------------------------------------------------------------------------

BAD_ITEMS = [
    pytest.param(message("bad-01", quantity=-1), "quantity", id="negative quantity"),
    pytest.param(message("bad-02", quantity="5"), "quantity", id="quantity as string"),
    pytest.param(message("bad-03", quantity=1.5), "quantity", id="quantity as float"),
    pytest.param(message("bad-04", quantity=True), "quantity", id="quantity as bool"),
    pytest.param(message("bad-05", meter="video"), "meter", id="unknown meter"),
    pytest.param({k: v for k, v in message("bad-06").items() if k != "account_id"}, "account_id", id="no account"),
    pytest.param(message("bad#07"), "idempotency_key", id="key with hash"),
    pytest.param(message("bad-08", currency="usd"), "currency", id="unknown extra field"),
    pytest.param(message("bad-09", timestamp="2026-03-01T11:58:00"), "timestamp", id="naive timestamp"),
    pytest.param(message("bad-10", timestamp="2026-03-01T12:10:00Z"), "timestamp", id="10 minutes in the future"),
    pytest.param(message("bad-11", timestamp="2026-01-24T12:00:00Z"), "timestamp", id="36 days in the past"),
    pytest.param(message("good-00", quantity=2), "idempotency_key", id="same key twice, different content"),
]


@pytest.mark.parametrize(("bad_item", "field"), BAD_ITEMS)
def test_given_one_bad_item_beside_a_good_one_then_400_names_it_and_nothing_is_stored(
    stack: Stack, lambda_context: LambdaContext, bad_item: dict[str, Any], field: str
) -> None:
    status, payload = send_batch(lambda_context, message("good-00"), bad_item)
    assert status == 400
    assert payload["error"]["code"] == "invalid_usage"
    assert payload["error"]["message"] == "1 problem(s) in the batch; nothing was stored"
    assert [(problem["index"], problem["field"]) for problem in payload["error"]["details"]] == [(1, field)]
    assert stack.table_items() == []


@pytest.mark.parametrize(
    ("timestamp", "message_text"),
    [
        # 0001-01-01T00:00+01:00 is 0000-12-31T23:00Z: no datetime holds it in UTC
        pytest.param("0001-01-01T00:00:00+01:00", "is more than 35 days in the past", id="year 1 with a + offset"),
        # 9999-12-31T23:59:59-01:00 is 10000-01-01T00:59:59Z
        pytest.param(
            "9999-12-31T23:59:59-01:00", "is more than 5 minutes in the future", id="year 9999 with a - offset"
        ),
    ],
)
def test_given_a_timestamp_that_cannot_be_held_in_utc_then_400_names_it_and_nothing_is_stored(
    stack: Stack, lambda_context: LambdaContext, timestamp: str, message_text: str
) -> None:
    status, payload = send_batch(lambda_context, message("good-00"), message("edge-01", timestamp=timestamp))
    assert status == 400
    assert payload["error"]["code"] == "invalid_usage"
    assert payload["error"]["details"] == [{"index": 1, "field": "timestamp", "message": message_text}]
    assert stack.table_items() == []


def test_given_many_bad_items_then_400_lists_every_one_by_index_and_field_and_nothing_is_stored(
    stack: Stack, lambda_context: LambdaContext
) -> None:
    events = [message("good-00")] + [param.values[0] for param in BAD_ITEMS] + [message("good-13")]
    status, payload = send_batch(lambda_context, *events)
    assert status == 400
    assert payload["error"]["code"] == "invalid_usage"
    assert sorted((problem["index"], problem["field"]) for problem in payload["error"]["details"]) == [
        (1, "quantity"),
        (2, "quantity"),
        (3, "quantity"),
        (4, "quantity"),
        (5, "meter"),
        (6, "account_id"),
        (7, "idempotency_key"),
        (8, "currency"),
        (9, "timestamp"),
        (10, "timestamp"),
        (11, "timestamp"),
        (12, "idempotency_key"),
    ]
    assert payload["error"]["message"] == "12 problem(s) in the batch; nothing was stored"
    assert stack.table_items() == []


@pytest.mark.parametrize(
    ("body", "code", "fields"),
    [
        pytest.param(b'{"events": []}', "invalid_usage", [(None, "events")], id="empty events"),
        pytest.param(
            batch(*(message(f"k-{index:04d}") for index in range(1001))),
            "invalid_usage",
            [(None, "events")],
            id="1001 events",
        ),
        pytest.param(b"[]", "invalid_usage", [(None, "(body)")], id="a JSON list"),
        pytest.param(b"{}", "invalid_usage", [(None, "events")], id="no events"),
        pytest.param(batch(PLAIN_MESSAGE)[:-1] + b', "note": "x"}', "invalid_usage", [(None, "note")], id="extra key"),
        pytest.param(b'{"events": [', "malformed_json", None, id="truncated JSON"),
        pytest.param(b"\xff\xfe{}", "malformed_json", None, id="not UTF-8"),
    ],
)
def test_given_a_signed_body_that_is_not_a_usage_batch_then_400_and_nothing_is_stored(
    stack: Stack,
    lambda_context: LambdaContext,
    body: bytes,
    code: str,
    fields: list[tuple[int | None, str]] | None,
) -> None:
    status, payload = post(body, signed(body), lambda_context)
    assert (status, payload["error"]["code"]) == (400, code)
    if fields is None:
        assert "details" not in payload["error"]
    else:
        assert [(problem["index"], problem["field"]) for problem in payload["error"]["details"]] == fields
    assert stack.table_items() == []


# --- signatures ---------------------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("case", "code"),
    [
        ("replayed 6 minutes later", "signature_expired"),
        ("signed 6 minutes in the future", "signature_expired"),
        ("wrong secret", "bad_signature"),
        ("another client's secret", "bad_signature"),
        ("unknown client", "unknown_client"),
        ("client id with spaces", "unknown_client"),
        ("missing X-Kilo-Client", "missing_client"),
        ("missing X-Kilo-Signature", "missing_signature"),
        ("garbage signature", "bad_signature"),
        ("t not a number", "bad_signature"),
        ("no v1 entry", "bad_signature"),
        ("t changed after signing", "bad_signature"),
        ("body tampered after signing", "bad_signature"),
    ],
)
def test_given_a_bad_signature_then_401_names_the_problem_and_nothing_is_stored(
    stack: Stack, lambda_context: LambdaContext, case: str, code: str
) -> None:
    body = batch(*VALID_BATCH)
    sent = body
    headers = signed(body)
    mac = headers["x-kilo-signature"].split("v1=")[1]
    if case == "replayed 6 minutes later":
        headers = signed(body, timestamp=NOW_S - 360)
    elif case == "signed 6 minutes in the future":
        headers = signed(body, timestamp=NOW_S + 360)
    elif case == "wrong secret":
        headers = signed(body, secret="not-the-secret")
    elif case == "another client's secret":
        headers = signed(body, secret="other-secret")
    elif case == "unknown client":
        headers = signed(body, client="stranger-app")
    elif case == "client id with spaces":
        headers = signed(body, client="kilo app")
    elif case == "missing X-Kilo-Client":
        del headers["x-kilo-client"]
    elif case == "missing X-Kilo-Signature":
        del headers["x-kilo-signature"]
    elif case == "garbage signature":
        headers["x-kilo-signature"] = "garbage"
    elif case == "t not a number":
        headers["x-kilo-signature"] = f"t=yesterday,v1={mac}"
    elif case == "no v1 entry":
        headers["x-kilo-signature"] = f"t={NOW_S}"
    elif case == "t changed after signing":
        headers["x-kilo-signature"] = f"t={NOW_S - 1},v1={mac}"
    else:
        sent = body.replace(b'"quantity": 3', b'"quantity": 300')
        assert sent != body
    status, payload = post(sent, headers, lambda_context)
    assert status == 401
    assert payload["error"]["code"] == code
    assert stack.table_items() == []


@pytest.mark.parametrize(
    "case",
    [
        "previous secret during rotation",
        "two v1 entries, the second matches",
        "signed 4 minutes ago",
        "sender clock 4 minutes ahead",
    ],
)
def test_given_an_acceptable_signature_then_200_and_stored(
    stack: Stack, lambda_context: LambdaContext, case: str
) -> None:
    body = batch(PLAIN_MESSAGE)
    headers = signed(body)
    mac = headers["x-kilo-signature"].split("v1=")[1]
    if case == "previous secret during rotation":
        headers = signed(body, secret="usage-secret-old")
    elif case == "two v1 entries, the second matches":
        wrong = signed(body, secret="not-the-secret")["x-kilo-signature"].split("v1=")[1]
        headers["x-kilo-signature"] = f"t={NOW_S},v1={wrong},v1={mac}"
    elif case == "signed 4 minutes ago":
        headers = signed(body, timestamp=NOW_S - 240)
    else:
        headers = signed(body, timestamp=NOW_S + 240)
    status, payload = post(body, headers, lambda_context)
    assert (status, payload["accepted"]) == (200, 1)
    assert list(items_by_key(stack)) == ["usage#kilo-app#msg-0002"]


def test_given_a_base64_encoded_body_then_the_signature_is_checked_on_the_decoded_bytes(
    stack: Stack, lambda_context: LambdaContext
) -> None:
    body = batch(*VALID_BATCH)
    event = http_api_event("POST", "/v1/usage", body, signed(body), force_base64=True)
    assert event["isBase64Encoded"] is True
    assert event["body"] != body.decode()
    response = usage_handler.lambda_handler(event, lambda_context)
    assert response["statusCode"] == 200
    assert json.loads(response["body"])["accepted"] == 3
    assert len(stack.table_items()) == 3


# --- failures ----------------------------------------------------------------------------------------------------


def test_given_dynamodb_failing_then_503_json_error_and_the_retried_batch_is_stored_in_full(
    stack: Stack, lambda_context: LambdaContext
) -> None:
    stack.clients["dynamodb"].delete_table(TableName=stack.template.physical_name("EventsTable"))
    body = batch(*VALID_BATCH)
    status, payload = post(body, signed(body), lambda_context)
    assert status == 503
    assert payload == {
        "error": {
            "code": "not_stored",
            "message": "usage not (fully) stored: 3 event(s) missing; retry the same batch, duplicates are safe",
            "request_id": lambda_context.aws_request_id,
        },
        "accepted": 0,
        "duplicates": 0,
        "conflicts": 0,
        "not_stored": 3,
        "results": [
            {"index": 0, "idempotency_key": "msg-0001", "status": "not_stored"},
            {"index": 1, "idempotency_key": "dt-0001", "status": "not_stored"},
            {"index": 2, "idempotency_key": "msg-0002", "status": "not_stored"},
        ],
    }  # nothing about DynamoDB, its error codes or the table in the answer: that is in the log
    recreate_table(stack)  # the outage ends
    status, payload = post(body, signed(body), lambda_context)
    assert (status, payload["accepted"], payload["duplicates"]) == (200, 3, 0)
    assert len(stack.table_items()) == 3


def test_given_one_write_throttled_then_503_and_the_retry_stores_only_what_is_missing(
    stack: Stack, lambda_context: LambdaContext
) -> None:
    client = usage_handler.dependencies().store._client

    def throttle_dt(params: dict[str, Any], **_: Any) -> tuple[Any, dict[str, Any]] | None:
        if json.loads(params["body"])["Item"]["pk"]["S"] != "usage#kilo-app#dt-0001":
            return None
        error = {"Error": {"Code": "ProvisionedThroughputExceededException", "Message": "slow down"}}
        return type("Response", (), {"status_code": 400, "headers": {}})(), error

    client.meta.events.register("before-call.dynamodb.PutItem", throttle_dt, unique_id="throttle-dt")
    body = batch(*VALID_BATCH)
    status, payload = post(body, signed(body), lambda_context)
    assert (status, payload["error"]["code"]) == (503, "not_stored")
    statuses = {result["idempotency_key"]: result["status"] for result in payload["results"]}
    assert statuses["dt-0001"] == "not_stored"
    # after the failure no further write starts (parallel writes already under way finish): the answer says
    # exactly which events are stored
    stored = {key for key, value in statuses.items() if value == "accepted"}
    assert set(statuses.values()) <= {"accepted", "not_stored"}
    assert set(items_by_key(stack)) == {f"usage#kilo-app#{key}" for key in stored}
    assert (payload["accepted"], payload["not_stored"]) == (len(stored), 3 - len(stored))
    client.meta.events.unregister("before-call.dynamodb.PutItem", unique_id="throttle-dt")
    status, payload = post(body, signed(body), lambda_context)
    assert status == 200
    assert {result["idempotency_key"]: result["status"] for result in payload["results"]} == {
        key: "duplicate" if key in stored else "accepted" for key in statuses
    }
    assert len(stack.table_items()) == 3


def test_given_a_malformed_clients_secret_then_503_not_401_and_no_secret_echoed(
    stack: Stack, lambda_context: LambdaContext
) -> None:
    stack.clients["secretsmanager"].put_secret_value(
        SecretId=stack.template.parameters["UsageClientsSecretName"],
        SecretString=json.dumps({"kilo-app": {"usage-secret-new": "usage-secret-old"}}),
    )
    _clear_caches()  # a new container: the secret is read again
    body = batch(PLAIN_MESSAGE)
    status, payload = post(body, signed(body), lambda_context)  # post() asserts no secret is in the body
    assert (status, payload["error"]["code"]) == (503, "not_stored")
    assert stack.table_items() == []


# --- cost: writes only, never reads ------------------------------------------------------------------------------


def test_given_n_new_events_then_one_account_read_and_exactly_n_put_items(
    stack: Stack, lambda_context: LambdaContext
) -> None:
    counter = count_calls(usage_handler.dependencies().store._client)
    events = [message(f"cost-{index}") for index in range(5)]
    assert send_batch(lambda_context, *events)[1]["accepted"] == 5
    # the client's request counter, then the batch's accounts read once, together, then one write per event
    assert counter.calls == ["UpdateItem", "BatchGetItem"] + ["PutItem"] * 5
    assert (counter.count("GetItem"), counter.count("Query"), counter.count("Scan")) == (0, 0, 0)


def test_given_a_replayed_batch_then_n_failed_conditional_writes_and_nothing_else(
    stack: Stack, lambda_context: LambdaContext
) -> None:
    events = [message(f"cost-{index}") for index in range(5)]
    assert send_batch(lambda_context, *events)[1]["accepted"] == 5
    client = usage_handler.dependencies().store._client
    counter = count_calls(client)
    outcomes: list[str] = []

    def record(parsed: dict[str, Any], **_: Any) -> None:
        outcomes.append(parsed.get("Error", {}).get("Code", "OK"))

    client.meta.events.register("after-call.dynamodb.*", record)
    assert send_batch(lambda_context, *events)[1]["duplicates"] == 5
    assert counter.calls == ["UpdateItem", "BatchGetItem"] + ["PutItem"] * 5
    assert outcomes == ["OK", "OK"] + ["ConditionalCheckFailedException"] * 5


# --- routing -----------------------------------------------------------------------------------------------------


def test_given_an_unknown_route_then_404_json(stack: Stack, lambda_context: LambdaContext) -> None:
    body = batch(PLAIN_MESSAGE)
    status, payload = post(body, signed(body), lambda_context, path="/v1/nope")
    assert status == 404
    assert payload == {"error": {"code": "not_found", "message": "no such route"}}
    assert stack.table_items() == []


# --- who may bill what: registered accounts, reserved ids, the client's scope -------------------------------------


def problems_of(payload: dict[str, Any]) -> list[tuple[int | None, str, str]]:
    return [(problem["index"], problem["field"], problem["message"]) for problem in payload["error"]["details"]]


@pytest.mark.parametrize(
    ("account", "expected"),
    [
        pytest.param("acct_ghost", "account 'acct_ghost' is not registered", id="not registered"),
        pytest.param(
            "unattributed", "Value error, account id 'unattributed' is reserved", id="the unattributed bucket"
        ),
        pytest.param("Unattributed", "Value error, account id 'Unattributed' is reserved", id="reserved, any case"),
        pytest.param("admin", "Value error, account id 'admin' is reserved", id="reserved"),
        pytest.param(
            "org/1",
            "Value error, account id 'org/1' must be 1-128 characters: a letter or digit, then letters, digits or "
            "_ . : @ + = -",
            id="a slash (refused by room attribution too)",
        ),
    ],
)
def test_given_usage_for_an_account_that_may_not_be_billed_then_400_names_the_item_and_nothing_is_stored(
    stack: Stack, lambda_context: LambdaContext, account: str, expected: str
) -> None:
    status, payload = send_batch(lambda_context, message("good-00"), message("bad-01", account_id=account))
    assert (status, payload["error"]["code"]) == (400, "invalid_usage")
    assert problems_of(payload) == [(1, "account_id", expected)]
    assert stack.table_items() == []


def test_given_a_scoped_client_then_it_bills_its_accounts_only_and_learns_nothing_about_others(
    stack: Stack, lambda_context: LambdaContext
) -> None:
    body = batch(
        message("s-0", account_id="acct_7"),  # in scope, registered
        message("s-1", account_id="acct_42"),  # registered, not in scope
        message("s-2", account_id="acct_nobody"),  # neither: told "may not bill", not whether it exists
        message("s-3", account_id="acct_scoped"),  # in scope, registered
    )
    status, payload = post(body, signed(body, client="scoped-app", secret="scoped-secret"), lambda_context)
    assert (status, payload["error"]["code"]) == (400, "invalid_usage")
    assert problems_of(payload) == [
        (1, "account_id", "usage client 'scoped-app' may not bill account 'acct_42'"),
        (2, "account_id", "usage client 'scoped-app' may not bill account 'acct_nobody'"),
    ]
    assert stack.table_items() == []
    body = batch(message("s-0", account_id="acct_7"), message("s-3", account_id="acct_scoped"))
    status, payload = post(body, signed(body, client="scoped-app", secret="scoped-secret"), lambda_context)
    assert (status, payload["accepted"]) == (200, 2)
    assert sorted(items_by_key(stack)) == ["usage#scoped-app#s-0", "usage#scoped-app#s-3"]


def test_given_a_client_in_the_older_secret_shape_then_it_may_bill_every_registered_account_only(
    stack: Stack, lambda_context: LambdaContext
) -> None:
    body = batch(message("o-0", account_id="acct_42"), message("o-1", account_id="acct_ghost"))
    status, payload = post(body, signed(body, client="other-app", secret="other-secret"), lambda_context)
    assert problems_of(payload) == [(1, "account_id", "account 'acct_ghost' is not registered")]
    body = batch(message("o-0", account_id="acct_42"))
    status, payload = post(body, signed(body, client="other-app", secret="other-secret"), lambda_context)
    assert (status, payload["accepted"]) == (200, 1)


def test_given_shape_scope_and_registration_problems_together_then_all_are_listed_in_one_400(
    stack: Stack, lambda_context: LambdaContext
) -> None:
    body = batch(
        message("m-0", account_id="acct_42"),  # out of scope
        message("m-1", quantity=-1),  # shape
        message("m-2", account_id="acct_7"),  # fine
        message("m-3", account_id="none"),  # reserved
    )
    status, payload = post(body, signed(body, client="scoped-app", secret="scoped-secret"), lambda_context)
    assert status == 400
    assert [(index, field) for index, field, _ in problems_of(payload)] == [
        (0, "account_id"),
        (1, "quantity"),
        (3, "account_id"),
    ]
    assert payload["error"]["message"] == "3 problem(s) in the batch; nothing was stored"
    assert stack.table_items() == []


def test_given_a_batch_nested_10000_deep_then_400_not_a_crash(stack: Stack, lambda_context: LambdaContext) -> None:
    body = b'{"events": ' + b"[" * 10_000 + b"]" * 10_000 + b"}"
    status, payload = post(body, signed(body), lambda_context)
    assert (status, payload["error"]["code"]) == (400, "too_deeply_nested")
    assert stack.table_items() == []


def test_given_thousands_of_unknown_fields_then_the_400_lists_the_first_200_and_counts_them_all(
    stack: Stack, lambda_context: LambdaContext
) -> None:
    body = json.dumps({"events": [message("k-0", **{f"field_{n:05d}": n for n in range(5000)})]}).encode()
    status, payload = post(body, signed(body), lambda_context)
    assert status == 400
    assert payload["error"]["message"] == "5000 problem(s) in the batch; nothing was stored (the first 200 are listed)"
    assert len(payload["error"]["details"]) == 200
    assert stack.table_items() == []


def test_given_the_account_table_unreachable_then_503_without_internals_and_nothing_stored(
    stack: Stack, lambda_context: LambdaContext
) -> None:
    stack.clients["dynamodb"].delete_table(TableName=stack.template.physical_name("UsageTable"))
    status, payload = send_batch(lambda_context, PLAIN_MESSAGE)
    assert status == 503
    assert payload == {
        "error": {
            "code": "not_stored",
            "message": "usage not stored; retry the same batch, duplicates are safe",
            "request_id": lambda_context.aws_request_id,
        }
    }
    assert stack.table_items() == []


def test_given_usage_events_accepted_then_each_counts_as_stored_for_rating_and_a_resent_batch_nothing(
    stack: Stack, lambda_context: LambdaContext, capsys: pytest.CaptureFixture[str]
) -> None:
    """D416: each usage event stored (source usage, which rating's stream takes) counts one ``StoredForRating``,
    the input of ``RatingNotInvokedAlarm``; the same batch resent stores nothing and counts nothing."""
    from tests.integration.test_ingest_livekit import emitted_metrics  # noqa: PLC0415

    capsys.readouterr()
    assert send_batch(lambda_context, *VALID_BATCH)[1]["accepted"] == 3
    counted = emitted_metrics(capsys)
    assert (counted.get("StoredForRating"), counted.get("UsageRecorded")) == (3, 3)
    assert send_batch(lambda_context, *VALID_BATCH)[1]["accepted"] == 0
    assert "StoredForRating" not in emitted_metrics(capsys)
