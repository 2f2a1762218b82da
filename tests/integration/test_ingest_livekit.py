"""POST /webhooks/livekit end to end in-process: real API Gateway v2 events, bodies signed with LiveKit's SDK, moto.

Bodies are the exact JSON LiveKit sends (string int64s, omitted zero values); signatures come from the official
``livekit-api`` AccessToken.
"""

from __future__ import annotations

import base64
import json
import threading
import zlib
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
    stack: Stack, lambda_context: LambdaContext, monkeypatch: pytest.MonkeyPatch
) -> None:
    # DynamoDB applies a conditional PutItem atomically; in-process moto checks the condition and writes in two steps,
    # so two threads can both pass it (seen under load). Model DynamoDB's atomicity with a lock around moto's put.
    from moto.dynamodb.models import DynamoDBBackend  # noqa: PLC0415

    atomic = threading.Lock()
    original = DynamoDBBackend.put_item

    def put_item(self: DynamoDBBackend, *args: Any, **kwargs: Any) -> Any:
        with atomic:
            return original(self, *args, **kwargs)

    monkeypatch.setattr(DynamoDBBackend, "put_item", put_item)
    # Lambda runs one invocation per process; here four share Powertools' one metric set, and one thread's flush can
    # empty it between another's "anything to flush?" and its serialising (SchemaValidationError, seen under load).
    # Make each flush one step, as it is in its own process.
    from aws_lambda_powertools.metrics.provider.cloudwatch_emf.cloudwatch import (  # noqa: PLC0415
        AmazonCloudWatchEMFProvider,
    )

    flushing = threading.Lock()
    original_flush = AmazonCloudWatchEMFProvider.flush_metrics

    def flush_metrics(self: AmazonCloudWatchEMFProvider, *args: Any, **kwargs: Any) -> None:
        with flushing:
            original_flush(self, *args, **kwargs)

    monkeypatch.setattr(AmazonCloudWatchEMFProvider, "flush_metrics", flush_metrics)
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
    stack: Stack, lambda_context: LambdaContext, capsys: pytest.CaptureFixture[str], body: bytes, code: str
) -> None:
    """D396: the signature is checked before the body is parsed, so each of these is a body LiveKit signed - a
    refusal LiveKit takes as delivered and never resends (an event of ours lost, or a shape we do not read):
    counted apart as ``LiveKitSignedEventRefused`` (alarmed at the first), beside ``WebhookRejected``."""
    capsys.readouterr()
    status, payload = send(body, signed(body), lambda_context)
    assert (status, payload["error"]["code"]) == (400, code)
    assert stack.table_items() == []
    counted = emitted_metrics(capsys)
    assert (counted.get("LiveKitSignedEventRefused"), counted.get("WebhookRejected")) == (1, 1)


def test_given_an_unsigned_body_that_is_not_a_webhook_event_then_only_the_signature_refusal_is_counted(
    stack: Stack, lambda_context: LambdaContext, capsys: pytest.CaptureFixture[str]
) -> None:
    """D396: a body refused for its signature is never parsed - not a signed event refused."""
    capsys.readouterr()
    status, payload = send(b"[1, 2, 3]", None, lambda_context)
    assert (status, payload["error"]["code"]) == (401, "missing_signature")
    counted = emitted_metrics(capsys)
    assert (counted.get("LiveKitSignedEventRefused"), counted.get("SignatureRejected")) == (None, 1)


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


# --- hardening: input that once crashed, items that could never be stored, answers that said too much ------------

INTERNALS = ("DynamoDB", "dynamodb", "ResourceNotFound", "Exception", "secretsmanager", "kilo-billing/", "amazonaws")


def emitted_metrics(capsys: pytest.CaptureFixture[str]) -> dict[str, float]:
    """Sum of every metric the handler flushed (Powertools prints CloudWatch EMF lines to stdout)."""
    return metrics_in(capsys.readouterr().out)


def metrics_in(out: str) -> dict[str, float]:
    """Sum of every metric in ``out`` (captured stdout: CloudWatch EMF lines)."""
    totals: dict[str, float] = {}
    for line in out.splitlines():
        try:
            record = json.loads(line)
        except ValueError:
            continue
        if not isinstance(record, dict) or "_aws" not in record:
            continue
        for definition in record["_aws"]["CloudWatchMetrics"]:
            for metric in definition["Metrics"]:
                value = record[metric["Name"]]
                totals[metric["Name"]] = totals.get(metric["Name"], 0) + sum(
                    value if isinstance(value, list) else [value]
                )
    return totals


def with_enums(kind: object = None, track_type: object = None, source: object = None) -> bytes:
    data = json.loads(fixture("track_published_video"))
    data["id"] = "EV_enums0000001"
    if kind is not None:
        data["participant"]["kind"] = kind
    if track_type is not None:
        data["track"]["type"] = track_type
    if source is not None:
        data["track"]["source"] = source
    return json.dumps(data).encode()


def test_given_enum_numbers_this_protocol_does_not_know_then_stored_as_unknown_not_a_500(
    stack: Stack, lambda_context: LambdaContext
) -> None:
    # a newer LiveKit server's enum values: Go's protojson writes values it has no name for as numbers
    body = with_enums(kind=99, track_type=77, source=55)
    status, payload = send(body, signed(body), lambda_context)
    assert (status, payload["status"]) == (200, "stored")
    [item] = stack.table_items()
    assert item["participant_kind"] == {"S": "UNKNOWN_99"}
    assert item["track_type"] == {"S": "UNKNOWN_77"}
    assert item["track_source"] == {"S": "UNKNOWN_55"}


def test_given_unknown_enums_stored_then_rating_bills_the_participant_like_a_standard_one_and_never_as_video(
    stack: Stack, lambda_context: LambdaContext
) -> None:
    from kilo_billing.events import decode_item  # noqa: PLC0415
    from kilo_billing.livekit_events import LiveKitEventRecord  # noqa: PLC0415
    from kilo_rate_usage.sessions import AttributionRule, Billing, rebuild_room  # noqa: PLC0415

    joined = json.loads(fixture("participant_joined"))
    joined["participant"]["kind"] = 99
    track = json.loads(with_enums(kind=99, track_type=77))
    track["participant"]["joinedAtMs"] = joined["participant"]["joinedAtMs"]
    left = json.loads(fixture("participant_joined"))
    left |= {"event": "participant_left", "id": "EV_left00000001", "createdAt": "1771351990"}  # 89.544 s after join
    left["participant"]["kind"] = 99
    for data in (joined, track, left):
        body = json.dumps(data).encode()
        assert send(body, signed(body), lambda_context)[0] == 200
    records = [decode_item(item) for item in stack.table_items()]
    assert all(isinstance(record, LiveKitEventRecord) for record in records)
    [session] = rebuild_room(records, AttributionRule(), max_session_seconds=86_400)  # type: ignore[arg-type]
    assert (session.kind, session.billing) == ("UNKNOWN_99", Billing.ROOM_RULE)  # billed: never a lost minute
    assert session.video_seconds == 0  # an unknown track type is not video (the customer's side of the doubt)
    [part] = session.parts
    assert (part.video, part.audio) == (0, 2)  # 89.544 s -> one connection rounded up to 2 minutes, audio


@pytest.mark.parametrize(("outer", "inner"), [("participant", "kind"), ("track", "type"), ("track", "source")])
def test_given_a_boolean_where_an_enum_belongs_then_400_and_nothing_stored(
    stack: Stack, lambda_context: LambdaContext, outer: str, inner: str
) -> None:
    data = json.loads(with_enums())
    data[outer][inner] = True
    body = json.dumps(data).encode()
    status, payload = send(body, signed(body), lambda_context)
    assert (status, payload["error"]["code"]) == (400, "not_a_webhook_event")
    assert stack.table_items() == []


def test_given_a_signed_body_nested_10000_deep_then_400_not_a_crash(
    stack: Stack, lambda_context: LambdaContext
) -> None:
    body = b'{"event": "room_started", "id": "EV_deep", "x": ' + b"[" * 10_000 + b"]" * 10_000 + b"}"
    status, payload = send(body, signed(body), lambda_context)
    assert (status, payload["error"]["code"]) == (400, "too_deeply_nested")
    assert stack.table_items() == []


def test_given_a_token_whose_claims_nest_10000_deep_then_401_before_any_secret_is_used(
    stack: Stack, lambda_context: LambdaContext
) -> None:
    claims = b'{"iss": ' + b"[" * 10_000 + b"]" * 10_000 + b"}"
    token = "eyJhbGciOiJIUzI1NiJ9." + base64.urlsafe_b64encode(claims).decode().rstrip("=") + ".c2ln"
    body = fixture("participant_joined")
    status, payload = send(body, token, lambda_context)
    assert (status, payload["error"]["code"]) == (401, "bad_signature")
    assert stack.table_items() == []


def test_given_an_id_too_long_for_a_table_key_then_400_not_a_503_forever(
    stack: Stack, lambda_context: LambdaContext
) -> None:
    data = json.loads(fixture("participant_joined"))
    data["id"] = "EV_" + "x" * 2048  # DynamoDB refuses sort keys over 1 KB: every retry would fail
    body = json.dumps(data).encode()
    status, payload = send(body, signed(body), lambda_context)
    assert (status, payload["error"]["code"]) == (400, "invalid_id")
    assert stack.table_items() == []


def _random_text(size: int, seed: int) -> str:
    """Text that zlib cannot shrink much (random printable characters, as an encrypted blob in metadata would be)."""
    import random  # noqa: PLC0415

    alphabet = "".join(chr(c) for c in range(33, 127) if chr(c) not in '"\\')
    rng = random.Random(seed)
    return "".join(rng.choice(alphabet) for _ in range(size))


def test_given_a_205_kb_body_with_205_kb_of_metadata_then_stored_compressed_and_read_back_whole(
    stack: Stack, lambda_context: LambdaContext
) -> None:
    # once: 205 KB of metadata stored beside the 205 KB body that carries it = over 400 KB, a 503 on every retry
    data = json.loads(fixture("participant_joined"))
    data["room"]["metadata"] = json.dumps({"account_id": "acct_team_1", "notes": "standup " * 26_000})
    body = json.dumps(data).encode()
    assert 205_000 < len(body) < 256 * 1024
    status, payload = send(body, signed(body), lambda_context)
    assert (status, payload["status"]) == (200, "stored")
    [item] = stack.table_items()
    assert item["schema_version"] == {"N": "2"}
    assert "body" not in item
    assert zlib.decompress(bytes(item["body_zlib"]["B"])) == body  # the signed bytes, kept exactly
    assert len(item["room_metadata"]["S"]) > 205_000  # what rating reads stays lifted out, uncompressed


def test_given_incompressible_metadata_that_still_fits_then_stored(stack: Stack, lambda_context: LambdaContext) -> None:
    data = json.loads(fixture("participant_joined"))
    data["participant"]["metadata"] = _random_text(150_000, seed=1)
    body = json.dumps(data).encode()
    status, payload = send(body, signed(body), lambda_context)
    # ~125 KB compressed body + 150 KB metadata: fits (also by moto's count, which takes binary at its base64 length)
    assert (status, payload["status"]) == (200, "stored")
    [item] = stack.table_items()
    assert zlib.decompress(bytes(item["body_zlib"]["B"])) == body


def test_given_a_signed_event_too_large_to_store_then_413_once_counted_and_nothing_written(
    stack: Stack, lambda_context: LambdaContext, capsys: pytest.CaptureFixture[str]
) -> None:
    data = json.loads(fixture("participant_joined"))
    data["room"]["metadata"] = _random_text(125_000, seed=2)
    data["participant"]["metadata"] = _random_text(125_000, seed=3)
    body = json.dumps(data).encode()
    assert len(body) < 256 * 1024  # a body the endpoint accepts, signed with a valid key
    capsys.readouterr()
    status, payload = send(body, signed(body), lambda_context)
    # 250 KB of metadata beside a body that carries it (~210 KB compressed): over the item limit however often sent
    assert (status, payload["error"]["code"]) == (413, "event_too_large_to_store")
    assert stack.table_items() == []
    counted = emitted_metrics(capsys)
    assert counted.get("UnstorableEvent") == 1  # the alarm's metric
    assert "IngestStoreFailed" not in counted  # not a 5xx: LiveKit does not retry what can never succeed


def test_given_dynamodb_failing_then_the_503_names_no_internals_but_a_request_id(
    stack: Stack, lambda_context: LambdaContext
) -> None:
    stack.clients["dynamodb"].delete_table(TableName=stack.template.physical_name("EventsTable"))
    body = fixture("participant_joined")
    status, payload = send(body, signed(body), lambda_context)
    assert status == 503
    assert payload == {
        "error": {
            "code": "not_stored",
            "message": "event not stored; retry later (a retry is safe: duplicates are detected)",
            "request_id": lambda_context.aws_request_id,
        }
    }


def test_given_the_keys_secret_missing_then_an_unsigned_caller_learns_nothing_about_it(
    stack: Stack, lambda_context: LambdaContext
) -> None:
    secret = stack.template.parameters["LiveKitKeysSecretName"]
    stack.clients["secretsmanager"].delete_secret(SecretId=secret, ForceDeleteWithoutRecovery=True)
    _clear_caches()
    status, payload = send(b"{}", "not.a.jwt", lambda_context)  # anyone on the internet
    assert status == 503
    text = json.dumps(payload)
    assert secret not in text
    assert not any(word in text for word in INTERNALS), text
    assert payload["error"]["request_id"] == lambda_context.aws_request_id


def test_given_the_livekit_handler_and_its_dependencies_built_then_neither_the_xray_sdk_nor_pydantic_is_loaded() -> (
    None
):
    """The Tracer stays off the LiveKit cold path (docs/decisions.md D35); so do the account models."""
    import os  # noqa: PLC0415
    import subprocess  # noqa: PLC0415
    import sys  # noqa: PLC0415

    probe = (
        "import json, sys\n"
        "from kilo_webhook_ingest import livekit_handler\n"
        "livekit_handler.dependencies()\n"
        "print(json.dumps(sorted({name.split('.')[0] for name in sys.modules})))\n"
    )
    env = {**os.environ, "EVENTS_TABLE_NAME": "events", "AWS_DEFAULT_REGION": "us-east-1"}
    result = subprocess.run([sys.executable, "-c", probe], capture_output=True, text=True, check=True, env=env)
    loaded = set(json.loads(result.stdout))
    assert "kilo_webhook_ingest" in loaded
    assert loaded.isdisjoint({"aws_xray_sdk", "pydantic", "stripe"}), sorted(loaded & {"aws_xray_sdk", "pydantic"})


# --- key rotation: a key added to the secret is accepted before the cached copy expires ---------------------------


def test_given_a_key_added_to_the_secret_after_it_was_cached_then_its_first_webhook_is_stored_not_refused(
    stack: Stack, lambda_context: LambdaContext
) -> None:
    """LiveKit takes a 401 as delivered and never sends the event again: a webhook signed with a key added to the
    secret within the cache's 5 minutes must not be refused because the container's copy predates it."""
    body = fixture("participant_joined")
    assert send(body, signed(body), lambda_context)[0] == 200  # the keys are now cached in this container
    secret_id = stack.template.parameters["LiveKitKeysSecretName"]
    added = LIVEKIT_KEYS | {"APIkeyAdded": "added-secret-0123456789abcdef0123456789"}
    stack.clients["secretsmanager"].put_secret_value(SecretId=secret_id, SecretString=json.dumps(added))
    other = fixture("room_finished")
    status, payload = send(other, signed(other, "APIkeyAdded", added["APIkeyAdded"]), lambda_context)
    assert (status, payload["status"]) == (200, "stored")
    # a key nobody configured is still refused, as before
    status, payload = send(other, signed(other, "APIkeyNobody", "nobody-secret-0123456789abcdef012345"), lambda_context)
    assert (status, payload["error"]["code"]) == (401, "unknown_api_key")


def test_given_tokens_naming_unknown_keys_then_the_secret_is_read_afresh_at_most_once_per_interval(
    stack: Stack,
) -> None:
    """The adapter throttles forced reads: a flood of tokens naming keys nobody configured costs one Secrets Manager
    call per interval, not one per request."""
    from kilo_webhook_ingest.adapters import SecretsManagerSource  # noqa: PLC0415

    client = stack.clients["secretsmanager"]
    counter = count_calls(client)
    clock = [1000.0]
    source = SecretsManagerSource(
        client, {"livekit": stack.template.parameters["LiveKitKeysSecretName"]}, 300, 30.0, lambda: clock[0]
    )
    assert source.livekit_keys() == LIVEKIT_KEYS
    for _ in range(5):
        source.livekit_keys()  # cached
    assert counter.count("GetSecretValue") == 1
    source.livekit_keys(refresh=True)
    source.livekit_keys(refresh=True)  # within 30 s of the last forced read: the cache answers
    assert counter.count("GetSecretValue") == 2
    clock[0] += 31
    source.livekit_keys(refresh=True)
    assert counter.count("GetSecretValue") == 3


def test_given_a_livekit_event_stored_then_it_counts_as_stored_for_rating_and_its_duplicate_does_not(
    stack: Stack, lambda_context: LambdaContext, capsys: pytest.CaptureFixture[str]
) -> None:
    """D416: ``RatingNotInvokedAlarm`` reads ``StoredForRating``, counted once per event stored that rating's
    stream takes (source livekit): the stored event counts 1, LiveKit's resend of it (a duplicate) nothing."""
    body = fixture("participant_joined")
    capsys.readouterr()
    assert send(body, signed(body), lambda_context)[1]["status"] == "stored"
    counted = emitted_metrics(capsys)
    assert (counted.get("StoredForRating"), counted.get("WebhookStored")) == (1, 1)
    assert send(body, signed(body), lambda_context)[1]["status"] == "duplicate"
    assert "StoredForRating" not in emitted_metrics(capsys)
