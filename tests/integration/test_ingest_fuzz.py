"""Property-based fuzzing of every ingest route: random bodies and headers, and validly signed random bodies (LiveKit's
SDK, the Stripe SDK's signer, the usage HMAC). Whatever arrives, a handler answers a JSON 2xx/4xx - never a 5xx (the
store here never fails, so no 5xx is allowed at all) and never an exception - and never echoes a secret.

The handlers run whole (API Gateway v2 events in, responses out) with in-memory fakes for the store, the secrets and
the account directory, so a few hundred examples take seconds.
"""

from __future__ import annotations

import json
import time
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest
import stripe
from hypothesis import HealthCheck, example, given, settings
from hypothesis import strategies as st

from kilo_billing.accounts import AccountProfile
from kilo_billing.entitlements import EntitlementPolicy
from kilo_billing.rating import TierChange
from kilo_dev.apigw import http_api_event
from kilo_dev.signing import livekit_authorization, usage_signature
from kilo_webhook_ingest import livekit_handler, stripe_handler, usage_handler
from kilo_webhook_ingest.dependencies import LiveKitDependencies, StripeDependencies, UsageDependencies
from kilo_webhook_ingest.settings import IngestSettings
from kilo_webhook_ingest.usage_model import UsageClient
from tests.conftest import LambdaContext
from tests.fakes import (
    InMemoryAccountDirectory,
    InMemoryEntitlements,
    InMemoryEventStore,
    RecordingPublisher,
    StaticSecretSource,
)

LK_KEY, LK_SECRET = "APIfuzz", "fuzz-livekit-secret-0123456789abcdef"
USAGE_SECRET, SCOPED_SECRET = "fuzz-usage-secret", "fuzz-scoped-secret"
STRIPE_SECRET = "whsec_fuzz_0123456789"
SECRETS = (LK_SECRET, USAGE_SECRET, SCOPED_SECRET, STRIPE_SECRET)
FUZZ = settings(max_examples=60, suppress_health_check=[HealthCheck.too_slow], deadline=None)
DEEP = b'{"id": "x", "event": "e", "object": "event", "events": ' + b"[" * 5000 + b"]" * 5000 + b"}"


@pytest.fixture(scope="module", autouse=True)
def fakes() -> Iterator[None]:
    """Every handler's dependencies replaced by fakes for the whole module (hypothesis reruns a test many times)."""
    config = IngestSettings(events_table="events")
    secrets = StaticSecretSource(
        livekit={LK_KEY: LK_SECRET},
        usage={"kilo-app": UsageClient((USAGE_SECRET,)), "scoped": UsageClient((SCOPED_SECRET,), ("acct_7",))},
        stripe=[STRIPE_SECRET],
    )
    signup = (TierChange(datetime(2026, 1, 1, tzinfo=UTC), "personal"),)
    accounts = InMemoryAccountDirectory(AccountProfile("acct_7", signup), AccountProfile("acct_42", signup))
    patch = pytest.MonkeyPatch()
    patch.setenv("AWS_DEFAULT_REGION", "us-east-1")
    patch.setattr(livekit_handler, "dependencies", lambda: LiveKitDependencies(config, InMemoryEventStore(), secrets))
    patch.setattr(
        usage_handler,
        "dependencies",
        lambda: UsageDependencies(
            config, InMemoryEventStore(), secrets, accounts, InMemoryEntitlements(accounts), EntitlementPolicy()
        ),
    )
    patch.setattr(
        stripe_handler,
        "dependencies",
        lambda: StripeDependencies(config, InMemoryEventStore(), secrets, RecordingPublisher()),
    )
    yield
    patch.undo()


def answered(response: dict[str, Any], allowed: set[int]) -> dict[str, Any]:
    assert response["statusCode"] in allowed, response
    assert response["headers"]["content-type"] == "application/json"
    assert not any(secret in response["body"] for secret in SECRETS)
    payload: dict[str, Any] = json.loads(response["body"])
    if response["statusCode"] >= 400:
        assert isinstance(payload["error"]["code"], str)
        assert isinstance(payload["error"]["message"], str)
    return payload


def call(handler: Any, path: str, body: bytes, headers: dict[str, str]) -> dict[str, Any]:
    result: dict[str, Any] = handler.lambda_handler(http_api_event("POST", path, body, headers), LambdaContext())
    return result


# --- strategies ---------------------------------------------------------------------------------------------------

leaves = (
    st.none()
    | st.booleans()
    | st.integers(min_value=-(2**70), max_value=2**70)
    | st.floats(allow_nan=False, allow_infinity=False)
    | st.text(max_size=12)
)
json_values = st.recursive(
    leaves,
    lambda children: st.lists(children, max_size=4) | st.dictionaries(st.text(max_size=8), children, max_size=4),
    max_leaves=12,
)
header_values = st.text(alphabet=st.characters(min_codepoint=32, max_codepoint=126), max_size=80)


def maybe(values: st.SearchStrategy[Any]) -> st.SearchStrategy[Any]:
    return values | json_values


enum_values = st.sampled_from(["STANDARD", "AGENT", "SIP", "VIDEO", "AUDIO", "CAMERA", "HOLOGRAM", 0, 1, 99, -1])
livekit_events = st.fixed_dictionaries(
    {
        "id": maybe(st.text(min_size=1, max_size=20)),
        "event": maybe(st.sampled_from(["participant_joined", "participant_left", "track_published", "room_finished"])),
    },
    optional={
        "createdAt": maybe(st.integers(0, 2**40).map(str)),
        "room": maybe(
            st.fixed_dictionaries({}, optional={"sid": maybe(st.text(max_size=10)), "metadata": maybe(st.text())})
        ),
        "participant": maybe(
            st.fixed_dictionaries(
                {},
                optional={
                    "sid": maybe(st.text(max_size=10)),
                    "kind": maybe(enum_values),
                    "joinedAtMs": maybe(st.integers(0, 2**50).map(str)),
                    "attributes": maybe(st.dictionaries(st.text(max_size=8), st.text(max_size=8), max_size=3)),
                },
            )
        ),
        "track": maybe(st.fixed_dictionaries({}, optional={"type": maybe(enum_values), "source": maybe(enum_values)})),
        "egressInfo": json_values,
    },
)


# --- LiveKit --------------------------------------------------------------------------------------------------------


@FUZZ
@given(body=st.binary(max_size=600), authorization=st.none() | header_values, base64=st.booleans())
@example(body=DEEP, authorization=None, base64=False)
def test_given_any_unsigned_request_then_livekit_answers_4xx(
    body: bytes, authorization: str | None, base64: bool
) -> None:
    headers = {"authorization": authorization} if authorization is not None else {}
    event = http_api_event("POST", "/webhooks/livekit", body, headers, force_base64=base64)
    answered(livekit_handler.lambda_handler(event, LambdaContext()), {400, 401})


@FUZZ
@given(data=livekit_events, ascii_only=st.booleans())
def test_given_a_validly_signed_random_body_then_livekit_stores_it_or_answers_400(
    data: dict[str, Any], ascii_only: bool
) -> None:
    body = json.dumps(data, ensure_ascii=ascii_only).encode()
    response = call(
        livekit_handler, "/webhooks/livekit", body, {"authorization": livekit_authorization(body, LK_KEY, LK_SECRET)}
    )
    payload = answered(response, {200, 400})
    if response["statusCode"] == 200:
        assert payload["status"] in {"stored", "duplicate"}


@FUZZ
@given(
    body=st.sampled_from(
        [DEEP, b"[" * 100_000, b'{"id": "x", "event": "e", "room": ' + b"{" * 3000 + b"}" * 3000 + b"}"]
    )
)
def test_given_validly_signed_deep_json_then_livekit_answers_400(body: bytes) -> None:
    answered(
        call(
            livekit_handler,
            "/webhooks/livekit",
            body,
            {"authorization": livekit_authorization(body, LK_KEY, LK_SECRET)},
        ),
        {400},
    )


# --- usage ----------------------------------------------------------------------------------------------------------

now = datetime.now(tz=UTC)
usage_events = st.fixed_dictionaries(
    {},
    optional={
        "idempotency_key": maybe(st.text(min_size=1, max_size=12)),
        "account_id": maybe(st.sampled_from(["acct_7", "acct_42", "acct_ghost", "unattributed", "org/1", "", "ADMIN"])),
        "meter": maybe(st.sampled_from(["messages", "data_transfer", "video"])),
        "quantity": maybe(st.integers(min_value=-5, max_value=2**64)),
        "timestamp": maybe(
            st.sampled_from(
                [
                    (now - timedelta(minutes=2)).isoformat(),
                    "2026-03-01T11:58:00",
                    str(int(now.timestamp())),
                    "soon",
                    "0001-01-01T00:00:00+01:00",  # no datetime holds it in UTC (year 0)
                    "9999-12-31T23:59:59-01:00",  # nor this one (year 10000)
                ]
            )
        ),
        "room": maybe(st.text(max_size=10)),
        "extra": json_values,
    },
)
usage_batches = st.fixed_dictionaries({"events": maybe(st.lists(usage_events, max_size=5))}) | json_values


@FUZZ
@given(
    body=st.binary(max_size=400),
    client=st.none() | header_values,
    signature=st.none() | header_values,
)
@example(body=DEEP, client="kilo-app", signature="t=1,v1=00")
def test_given_any_unsigned_request_then_usage_answers_4xx(
    body: bytes, client: str | None, signature: str | None
) -> None:
    headers = {"content-type": "application/json"}
    if client is not None:
        headers["x-kilo-client"] = client
    if signature is not None:
        headers["x-kilo-signature"] = signature
    answered(call(usage_handler, "/v1/usage", body, headers), {400, 401})


@FUZZ
@given(batch=usage_batches, scoped=st.booleans())
@example(batch={"events": []}, scoped=False)
@example(
    batch={"events": [{"idempotency_key": "k1", "account_id": "acct_7", "meter": "messages", "quantity": 1,
                       "timestamp": "0001-01-01T00:00:00+01:00"}]},
    scoped=False,
)  # fmt: skip
def test_given_a_validly_signed_random_batch_then_usage_stores_it_or_answers_400_or_409(
    batch: Any, scoped: bool
) -> None:
    body = json.dumps(batch).encode()
    client, secret = ("scoped", SCOPED_SECRET) if scoped else ("kilo-app", USAGE_SECRET)
    headers = {"x-kilo-client": client, "x-kilo-signature": usage_signature(body, secret, int(time.time()))}
    response = call(usage_handler, "/v1/usage", body, headers)
    payload = answered(response, {200, 400, 409})
    if response["statusCode"] == 400 and payload["error"]["code"] == "invalid_usage":
        assert all({"index", "field", "message"} <= set(problem) for problem in payload["error"]["details"])


def test_given_a_validly_signed_deep_batch_then_usage_answers_400() -> None:
    headers = {"x-kilo-client": "kilo-app", "x-kilo-signature": usage_signature(DEEP, USAGE_SECRET, int(time.time()))}
    assert answered(call(usage_handler, "/v1/usage", DEEP, headers), {400})["error"]["code"] == "too_deeply_nested"


# --- Stripe ---------------------------------------------------------------------------------------------------------

stripe_events = st.fixed_dictionaries(
    {"object": maybe(st.just("event"))},
    optional={
        "id": maybe(st.text(min_size=1, max_size=20)),
        "type": maybe(st.sampled_from(["invoice.paid", "charge.refunded"])),
        "created": maybe(st.integers(min_value=-1, max_value=2**60)),
        "livemode": json_values,
        "data": json_values,
    },
)


@FUZZ
@given(body=st.binary(max_size=400), signature=st.none() | header_values)
@example(body=DEEP, signature="t=1,v1=00")
def test_given_any_unsigned_request_then_stripe_answers_4xx(body: bytes, signature: str | None) -> None:
    headers = {"stripe-signature": signature} if signature is not None else {}
    answered(call(stripe_handler, "/webhooks/stripe", body, headers), {400, 401})


@FUZZ
@given(data=stripe_events | json_values, ascii_only=st.booleans())
@example(data={"object": "event", "id": "evt_1", "type": "invoice.paid", "created": True}, ascii_only=True)
def test_given_a_validly_signed_random_body_then_stripe_stores_it_or_answers_400(data: Any, ascii_only: bool) -> None:
    text = json.dumps(data, ensure_ascii=ascii_only)
    header = stripe.WebhookSignature.generate_signature_header(text, STRIPE_SECRET)
    response = call(stripe_handler, "/webhooks/stripe", text.encode(), {"stripe-signature": header})
    payload = answered(response, {200, 400})
    if response["statusCode"] == 200:
        assert payload["status"] in {"stored", "duplicate"}
