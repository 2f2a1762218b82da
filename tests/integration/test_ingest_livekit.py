"""POST /webhooks/livekit end to end in-process: real API Gateway v2 events, bodies signed with LiveKit's SDK, moto.

Bodies are the exact JSON LiveKit sends (string int64s, omitted zero values); signatures come from the official
``livekit-api`` AccessToken.
"""

from __future__ import annotations

import base64
import json
import threading
from datetime import timedelta
from pathlib import Path
from typing import Any

import pytest
import time_machine

from kilo_dev.apigw import http_api_event
from kilo_dev.signing import livekit_authorization
from kilo_webhook_ingest import livekit_handler
from tests.conftest import LIVEKIT_KEYS, LambdaContext, Stack, _clear_caches, count_calls, recreate_table

FIXTURES = Path(__file__).resolve().parents[1] / "fixtures" / "livekit"
KEY, SECRET = "APIkeyCurrent", LIVEKIT_KEYS["APIkeyCurrent"]


def fixture(name: str) -> bytes:
    return (FIXTURES / f"{name}.json").read_bytes().strip()


def send(
    body: bytes,
    authorization: str | None,
    context: LambdaContext,
    *,
    force_base64: bool = False,
    extra_headers: dict[str, str] | None = None,
) -> tuple[int, dict[str, Any]]:
    headers = {"content-type": "application/webhook+json", "user-agent": "Go-http-client/1.1"}
    if authorization is not None:
        headers["authorization"] = authorization
    headers |= extra_headers or {}
    event = http_api_event("POST", "/webhooks/livekit", body, headers, force_base64=force_base64)
    response = livekit_handler.lambda_handler(event, context)
    assert response["headers"]["content-type"] == "application/json"
    return response["statusCode"], json.loads(response["body"])


def signed(body: bytes, key: str = KEY, secret: str = SECRET, ttl: timedelta | None = None) -> str:
    return livekit_authorization(body, key, secret, ttl)


def test_given_signed_participant_joined_when_posted_then_stored_once_with_rating_fields(
    stack: Stack, lambda_context: LambdaContext
) -> None:
    body = fixture("participant_joined")
    status, payload = send(body, signed(body), lambda_context)
    assert status == 200
    assert payload == {"id": "EV_jT6Y4xyzXsjM", "event": "participant_joined", "status": "stored"}
    [item] = stack.table_items()
    assert item["pk"] == {"S": "room#RM_hycBMAjmt6Ub"}
    assert item["sk"] == {"S": "ev#EV_jT6Y4xyzXsjM"}
    assert item["source"] == {"S": "livekit"}
    assert item["event_type"] == {"S": "participant_joined"}
    assert item["created_at"] == {"N": "1771351907"}
    assert item["room_sid"] == {"S": "RM_hycBMAjmt6Ub"}
    assert item["participant_sid"] == {"S": "PA_5ZxHNpXzJYhQ"}
    assert item["participant_identity"] == {"S": "alice"}
    assert item["joined_at_ms"] == {"N": "1771351900456"}
    assert item["room_metadata"] == {"S": '{"account_id":"acct_team_1"}'}
    assert item["participant_attributes"] == {"S": '{"kilo.account_id":"acct_team_1"}'}
    assert "participant_kind" not in item  # STANDARD is the zero value
    assert item["api_key"] == {"S": KEY}
    assert bytes(item["body"]["B"]) == body  # the exact bytes LiveKit signed
    received_s = int(item["received_at_ms"]["N"]) // 1000
    assert int(item["expires_at"]["N"]) == received_s + 400 * 86_400  # RawEventTtlDays default


def test_given_a_rooms_events_then_one_consistent_query_returns_them_all(
    stack: Stack, lambda_context: LambdaContext
) -> None:
    for name in ("track_published_video", "participant_joined", "track_published_audio", "room_finished"):
        body = fixture(name)
        assert send(body, signed(body), lambda_context)[0] == 200
    page = stack.clients["dynamodb"].query(
        TableName=stack.template.physical_name("EventsTable"),
        KeyConditionExpression="pk = :r",
        ExpressionAttributeValues={":r": {"S": "room#RM_hycBMAjmt6Ub"}},
        ConsistentRead=True,
    )
    assert sorted((int(item["created_at"]["N"]), item["event_type"]["S"]) for item in page["Items"]) == [
        (1771351907, "participant_joined"),
        (1771351910, "track_published"),
        (1771351920, "track_published"),
        (1771355400, "room_finished"),
    ]
    tracks = {
        item["track_sid"]["S"]: item.get("track_type", {}).get("S", "") for item in page["Items"] if "track_sid" in item
    }
    assert tracks == {"TR_AMkSnWvMgBtxSk": "", "TR_VCkq7bqTzLKXtp": "VIDEO"}


def test_given_audio_track_published_without_type_key_then_accepted_and_track_indexed(
    stack: Stack, lambda_context: LambdaContext
) -> None:
    body = fixture("track_published_audio")
    assert b'"type"' not in body  # AUDIO = 0 is omitted by LiveKit's encoder
    status, payload = send(body, signed(body), lambda_context)
    assert (status, payload["status"]) == (200, "stored")
    [item] = stack.table_items()
    assert item["track_sid"] == {"S": "TR_AMkSnWvMgBtxSk"}


def test_given_egress_event_then_its_room_is_taken_from_egress_info(
    stack: Stack, lambda_context: LambdaContext
) -> None:
    body = fixture("egress_ended")
    assert send(body, signed(body), lambda_context)[0] == 200
    [item] = stack.table_items()
    assert item["room_sid"] == {"S": "RM_hycBMAjmt6Ub"}
    assert item["room_name"] == {"S": "standup-42"}


def test_given_the_same_event_twice_then_second_is_a_200_duplicate_and_one_item(
    stack: Stack, lambda_context: LambdaContext
) -> None:
    body = fixture("participant_joined")
    assert send(body, signed(body), lambda_context) == (
        200,
        {"id": "EV_jT6Y4xyzXsjM", "event": "participant_joined", "status": "stored"},
    )
    # LiveKit's retry resends the identical body with a fresh token
    assert send(body, signed(body), lambda_context)[1]["status"] == "duplicate"
    assert len(stack.table_items()) == 1


def test_given_the_same_event_twice_concurrently_then_exactly_one_is_stored(
    stack: Stack, lambda_context: LambdaContext
) -> None:
    body = fixture("participant_joined")
    token = signed(body)
    livekit_handler.dependencies()  # build the client once, as a warm Lambda would have it
    results: list[tuple[int, dict[str, Any]]] = []
    barrier = threading.Barrier(4)

    def deliver() -> None:
        barrier.wait()
        results.append(send(body, token, lambda_context))

    threads = [threading.Thread(target=deliver) for _ in range(4)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert sorted(payload["status"] for _, payload in results) == ["duplicate", "duplicate", "duplicate", "stored"]
    assert {status for status, _ in results} == {200}
    assert len(stack.table_items()) == 1


def test_given_a_duplicate_then_it_costs_one_failed_conditional_write_and_no_read(
    stack: Stack, lambda_context: LambdaContext
) -> None:
    counter = count_calls(livekit_handler.dependencies().store._client)
    body = fixture("participant_joined")
    send(body, signed(body), lambda_context)
    assert counter.calls == ["PutItem"]  # one write per accepted webhook, zero reads
    send(body, signed(body), lambda_context)
    assert counter.calls == ["PutItem", "PutItem"]  # the duplicate: one failed conditional write, nothing else


def test_given_go_style_separators_then_the_raw_bytes_are_verified_not_a_reserialisation(
    stack: Stack, lambda_context: LambdaContext
) -> None:
    compact = fixture("participant_joined")
    go_style = compact.replace(b'","', b'", "')  # LiveKit's Go encoder sometimes emits ", "
    assert send(go_style, signed(go_style), lambda_context)[0] == 200
    [item] = stack.table_items()
    assert bytes(item["body"]["B"]) == go_style
    # a proxy that re-serialises the JSON breaks the hash
    reserialised = json.dumps(json.loads(go_style), separators=(",", ":")).encode()
    assert reserialised != go_style
    status, payload = send(reserialised, signed(go_style), lambda_context)
    assert (status, payload["error"]["code"]) == (401, "body_hash_mismatch")


def test_given_a_base64_encoded_body_then_the_decoded_bytes_are_hashed(
    stack: Stack, lambda_context: LambdaContext
) -> None:
    body = fixture("track_published_video")
    event = http_api_event("POST", "/webhooks/livekit", body, {"authorization": signed(body)}, force_base64=True)
    assert event["isBase64Encoded"] is True
    assert base64.b64decode(event["body"]) == body
    response = livekit_handler.lambda_handler(event, lambda_context)
    assert response["statusCode"] == 200
    assert bytes(stack.table_items()[0]["body"]["B"]) == body


def test_given_the_previous_api_key_during_rotation_then_accepted(stack: Stack, lambda_context: LambdaContext) -> None:
    body = fixture("room_finished")
    status, payload = send(body, signed(body, "APIkeyPrevious", LIVEKIT_KEYS["APIkeyPrevious"]), lambda_context)
    assert (status, payload["status"]) == (200, "stored")
    assert stack.table_items()[0]["api_key"] == {"S": "APIkeyPrevious"}


def test_given_unknown_fields_and_enum_values_then_ignored_and_stored(
    stack: Stack, lambda_context: LambdaContext
) -> None:
    data = json.loads(fixture("participant_joined"))
    data["participant"]["futureField"] = {"nested": True}
    data["participant"]["kind"] = "HOLOGRAM"  # an enum value this protocol version does not know
    data["brandNewTopLevel"] = "x"
    body = json.dumps(data).encode()
    assert send(body, signed(body), lambda_context)[0] == 200


def _without_sha256(body: bytes) -> str:
    from livekit.api import AccessToken  # noqa: PLC0415

    return AccessToken(KEY, SECRET).to_jwt()


@pytest.mark.parametrize(
    ("case", "code"),
    [
        ("tampered body", "body_hash_mismatch"),
        ("wrong secret", "bad_signature"),
        ("unknown iss", "unknown_api_key"),
        ("expired token", "expired_signature"),
        ("bearer prefix", "bad_signature"),
        ("missing header", "missing_signature"),
        ("empty header", "missing_signature"),
        ("body hash claim missing", "missing_body_hash"),
        ("not a jwt", "bad_signature"),
    ],
)
def test_given_a_bad_signature_then_401_names_the_problem_and_nothing_is_stored(
    stack: Stack, lambda_context: LambdaContext, case: str, code: str
) -> None:
    body = fixture("participant_joined")
    authorization: str | None
    sent = body
    if case == "tampered body":
        authorization = signed(body)
        sent = body.replace(b'"alice"', b'"mallory"')
    elif case == "wrong secret":
        authorization = signed(body, secret="not-the-secret-at-all-0123456789")
    elif case == "unknown iss":
        authorization = signed(body, key="APIkeyUnknown")
    elif case == "expired token":
        authorization = signed(body, ttl=timedelta(seconds=-120))  # beyond the 60 s leeway
    elif case == "bearer prefix":
        authorization = "Bearer " + signed(body)
    elif case == "missing header":
        authorization = None
    elif case == "empty header":
        authorization = ""
    elif case == "body hash claim missing":
        authorization = _without_sha256(body)
    else:
        authorization = "not.a.jwt"
    status, payload = send(sent, authorization, lambda_context)
    assert status == 401
    assert payload["error"]["code"] == code
    assert SECRET not in json.dumps(payload)
    assert stack.table_items() == []


def test_given_a_token_expired_within_the_leeway_then_still_accepted(
    stack: Stack, lambda_context: LambdaContext
) -> None:
    body = fixture("participant_joined")
    assert send(body, signed(body, ttl=timedelta(seconds=-30)), lambda_context)[0] == 200


def test_given_a_token_whose_nbf_is_in_the_future_then_401(stack: Stack, lambda_context: LambdaContext) -> None:
    body = fixture("participant_joined")
    with _shifted(300):
        authorization = signed(body)  # the SDK stamps nbf = its now, 5 minutes ahead of ours
    status, payload = send(body, authorization, lambda_context)
    assert (status, payload["error"]["code"]) == (401, "premature_signature")
    with _shifted(30):  # a sender clock 30 s ahead is within the leeway
        authorization = signed(body)
    assert send(body, authorization, lambda_context)[0] == 200


def _shifted(seconds: int) -> Any:
    import time  # noqa: PLC0415

    return time_machine.travel(time.time() + seconds, tick=True)


@pytest.mark.parametrize(
    ("body", "code"),
    [
        (b'{"event": "participant_joined", "id": ', "malformed_json"),
        (b"\xff\xfe not utf-8", "malformed_json"),
        (b"[1, 2, 3]", "not_a_webhook_event"),
        (b'{"event": "room_started", "id": "EV_1", "room": "not-an-object"}', "not_a_webhook_event"),
        (b'{"event": "room_started", "id": "EV_1", "createdAt": "yesterday"}', "not_a_webhook_event"),
        (b'{"event": "room_started", "room": {"sid": "RM_1"}}', "missing_id"),
        (b'{"id": "EV_2", "room": {"sid": "RM_1"}}', "missing_event"),
    ],
)
def test_given_a_signed_body_that_is_not_a_webhook_event_then_400_and_nothing_stored(
    stack: Stack, lambda_context: LambdaContext, body: bytes, code: str
) -> None:
    status, payload = send(body, signed(body), lambda_context)
    assert (status, payload["error"]["code"]) == (400, code)
    assert stack.table_items() == []


def test_given_int64_fields_as_strings_then_parsed_as_numbers(stack: Stack, lambda_context: LambdaContext) -> None:
    body = fixture("participant_joined")
    assert b'"createdAt":"1771351907"' in body
    assert send(body, signed(body), lambda_context)[0] == 200
    assert stack.table_items()[0]["created_at"] == {"N": "1771351907"}


def test_given_an_oversized_body_then_413_before_anything_else(stack: Stack, lambda_context: LambdaContext) -> None:
    data = json.loads(fixture("participant_joined"))
    data["room"]["metadata"] = "x" * (256 * 1024)
    body = json.dumps(data).encode()
    status, payload = send(body, signed(body), lambda_context)
    assert (status, payload["error"]["code"]) == (413, "body_too_large")
    status, _ = send(body, signed(body), lambda_context, force_base64=True)
    assert status == 413
    assert stack.table_items() == []


def test_given_dynamodb_failing_then_503_so_livekit_retries_and_nothing_is_half_written(
    stack: Stack, lambda_context: LambdaContext
) -> None:
    body = fixture("participant_joined")
    table = stack.template.physical_name("EventsTable")
    stack.clients["dynamodb"].delete_table(TableName=table)
    status, payload = send(body, signed(body), lambda_context)
    assert (status, payload["error"]["code"]) == (503, "not_stored")
    # the table comes back (as after an outage): the retry stores the event exactly once
    recreate_table(stack)
    assert send(body, signed(body), lambda_context)[1]["status"] == "stored"
    assert len(stack.table_items()) == 1


def test_given_a_malformed_keys_secret_then_503_not_401(stack: Stack, lambda_context: LambdaContext) -> None:
    stack.clients["secretsmanager"].put_secret_value(
        SecretId=stack.template.parameters["LiveKitKeysSecretName"], SecretString='["not", "a", "map"]'
    )
    _clear_caches()  # a new container: the secret is read again
    body = fixture("participant_joined")
    status, payload = send(body, signed(body), lambda_context)
    assert (status, payload["error"]["code"]) == (503, "not_stored")
    assert stack.table_items() == []
