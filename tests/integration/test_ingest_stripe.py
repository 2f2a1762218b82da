"""POST /webhooks/stripe end to end in-process: Stripe-signed bodies built from Stripe's published fixtures, moto.

The clock is frozen at 2026-03-01T12:00:00Z (unix 1772366400). A probe rule on the billing bus forwards everything
ingest publishes to an SQS queue the test reads, so the EventBridge hand-off is checked as delivered, not as called.
"""

from __future__ import annotations

import copy
import json
import logging
import zlib
from collections.abc import Iterator
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import pytest
import time_machine

from kilo_billing.observability import logger
from kilo_dev.apigw import http_api_event
from kilo_webhook_ingest import stripe_handler
from kilo_webhook_ingest.http import SERVICE
from tests.conftest import STRIPE_SECRETS, LambdaContext, Stack, _clear_caches, recreate_table
from tests.integration.test_ingest_livekit import emitted_metrics

STRIPE_FIXTURES = Path(__file__).resolve().parents[1] / "fixtures/stripe/fixtures3.json"  # MIT, LICENSE beside it
NOW = datetime(2026, 3, 1, 12, 0, 0, tzinfo=UTC)
NOW_S = 1772366400
SECRET = "whsec_current_0123456789"
EVENT_ID = "evt_1Pgc76B7WZ01zgkWwyRHS12y"  # the fixture event's id
DETAIL = {
    "schema_version": 1,
    "key": {"pk": "stripe#evt_1Pgc76B7WZ01zgkWwyRHS12y", "sk": "stripe"},
    "stripe_event_id": "evt_1Pgc76B7WZ01zgkWwyRHS12y",
    "type": "invoice.paid",
    "created": 1234567890,
    "livemode": False,
}
PROBE_RULE = "test-probe-ingest"


@pytest.fixture(autouse=True)
def clock() -> Iterator[None]:
    with time_machine.travel(NOW, tick=False):
        yield


@pytest.fixture(scope="module")
def stripe_resources() -> dict[str, Any]:
    resources: dict[str, Any] = json.loads(STRIPE_FIXTURES.read_text())["resources"]
    return resources


@pytest.fixture
def invoice_paid(stripe_resources: dict[str, Any]) -> bytes:
    """An ``invoice.paid`` event around the fixture invoice, pretty-printed as Stripe sends it."""
    event = copy.deepcopy(stripe_resources["event"])
    event["type"] = "invoice.paid"
    event["data"] = {"object": copy.deepcopy(stripe_resources["invoice"])}
    return json.dumps(event, indent=2).encode()


def wire_probe(stack: Stack, queue_url: str) -> None:
    events = stack.clients["events"]
    bus = stack.template.physical_name("BillingEventBus")
    arn = stack.clients["sqs"].get_queue_attributes(QueueUrl=queue_url, AttributeNames=["QueueArn"])["Attributes"][
        "QueueArn"
    ]
    events.put_rule(Name=PROBE_RULE, EventBusName=bus, EventPattern=json.dumps({"source": ["kilo.billing.ingest"]}))
    events.put_targets(Rule=PROBE_RULE, EventBusName=bus, Targets=[{"Id": "probe", "Arn": arn}])


@pytest.fixture
def probe(stack: Stack) -> str:
    """URL of a queue receiving every event ingest puts on the billing bus."""
    url: str = stack.clients["sqs"].create_queue(QueueName="test-billing-bus-probe")["QueueUrl"]
    wire_probe(stack, url)
    return url


def delivered(stack: Stack, queue_url: str) -> list[dict[str, Any]]:
    messages: list[dict[str, Any]] = []
    while True:
        batch = stack.clients["sqs"].receive_message(QueueUrl=queue_url, MaxNumberOfMessages=10).get("Messages", [])
        if not batch:
            return messages
        messages.extend(json.loads(message["Body"]) for message in batch)


def post(body: bytes, signature: str | None, context: LambdaContext) -> tuple[int, dict[str, Any]]:
    headers = {
        "content-type": "application/json; charset=utf-8",
        "user-agent": "Stripe/1.0 (+https://stripe.com/docs/webhooks)",
    }
    if signature is not None:
        headers["stripe-signature"] = signature
    response = stripe_handler.lambda_handler(http_api_event("POST", "/webhooks/stripe", body, headers), context)
    assert response["headers"]["content-type"] == "application/json"
    for secret in STRIPE_SECRETS:  # no response, error or not, may echo a webhook secret
        assert secret not in response["body"]
    return response["statusCode"], json.loads(response["body"])


def signed(body: bytes, secret: str = SECRET, timestamp: int = NOW_S) -> str:
    """``Stripe-Signature`` as Stripe computes it, from the Stripe SDK's own signer."""
    import stripe  # noqa: PLC0415

    try:
        text = body.decode("utf-8")
    except UnicodeDecodeError:  # Stripe never sends such a body; sign its bytes the same way (HMAC over "t.body")
        from kilo_dev.signing import stripe_signature  # noqa: PLC0415

        return stripe_signature(body, secret, timestamp)
    return stripe.WebhookSignature.generate_signature_header(text, secret, timestamp)


# --- accepted -----------------------------------------------------------------------------------------------------


def test_given_a_signed_invoice_paid_event_then_200_stored_once_and_published_to_the_bus(
    stack: Stack, lambda_context: LambdaContext, invoice_paid: bytes, probe: str
) -> None:
    status, payload = post(invoice_paid, signed(invoice_paid), lambda_context)
    assert status == 200
    assert payload == {"id": "evt_1Pgc76B7WZ01zgkWwyRHS12y", "type": "invoice.paid", "status": "stored"}
    [item] = stack.table_items()
    assert item["pk"] == {"S": "stripe#evt_1Pgc76B7WZ01zgkWwyRHS12y"}
    assert item["source"] == {"S": "stripe"}
    assert item["schema_version"] == {"N": "2"}  # the body is compressed (version 2 items)
    assert item["event_id"] == {"S": "evt_1Pgc76B7WZ01zgkWwyRHS12y"}
    assert item["event_type"] == {"S": "invoice.paid"}
    assert item["created"] == {"N": "1234567890"}
    assert item["livemode"] == {"BOOL": False}
    assert item["received_at_ms"] == {"N": "1772366400000"}
    assert item["expires_at"] == {"N": "1806926400"}  # received + RawEventTtlDays (400) days
    assert len(invoice_paid) > 4096  # pretty-printed as Stripe sends it: over the compression threshold
    assert "body" not in item
    stored = zlib.decompress(bytes(item["body_zlib"]["B"]))
    assert stored == invoice_paid  # the exact bytes Stripe signed
    assert len(item["body_zlib"]["B"]) < len(invoice_paid) // 3
    assert json.loads(stored)["data"]["object"]["id"] == "in_1Pgc6tB7WZ01zgkWu9fdqL6I"
    [message] = delivered(stack, probe)
    assert message["source"] == "kilo.billing.ingest"
    assert message["detail-type"] == "StripeEventReceived.v1"
    assert message["detail"] == DETAIL


def test_given_the_same_event_twice_then_200_duplicate_one_item_and_published_again(
    stack: Stack, lambda_context: LambdaContext, invoice_paid: bytes, probe: str
) -> None:
    assert post(invoice_paid, signed(invoice_paid), lambda_context)[1]["status"] == "stored"
    with time_machine.travel(NOW_S + 3600, tick=False):  # Stripe's retry an hour later, freshly signed
        status, payload = post(invoice_paid, signed(invoice_paid, timestamp=NOW_S + 3600), lambda_context)
    assert (status, payload["status"]) == (200, "duplicate")
    [item] = stack.table_items()
    assert item["received_at_ms"] == {"N": "1772366400000"}  # the first delivery's item, untouched
    messages = delivered(stack, probe)
    assert [message["detail"] for message in messages] == [DETAIL, DETAIL]  # at-least-once; consumers dedupe by id


@pytest.mark.parametrize(
    ("secret", "timestamp"),
    [
        pytest.param("whsec_previous_abcdef", NOW_S, id="previous secret during rotation"),
        pytest.param(SECRET, NOW_S - 299, id="signed 299 s ago"),
    ],
)
def test_given_an_acceptable_signature_then_200_stored(
    stack: Stack, lambda_context: LambdaContext, invoice_paid: bytes, secret: str, timestamp: int
) -> None:
    status, payload = post(invoice_paid, signed(invoice_paid, secret, timestamp), lambda_context)
    assert (status, payload["status"]) == (200, "stored")
    assert len(stack.table_items()) == 1


# --- rejected: nothing stored, nothing published ------------------------------------------------------------------


@pytest.mark.parametrize(
    ("case", "code"),
    [
        ("wrong secret", "bad_signature"),
        ("timestamp 301 s old", "bad_signature"),
        ("missing header", "missing_signature"),
        ("tampered body", "bad_signature"),
        ("garbage header", "bad_signature"),
    ],
)
def test_given_a_bad_stripe_signature_then_401_and_nothing_stored_or_published(
    stack: Stack, lambda_context: LambdaContext, invoice_paid: bytes, probe: str, case: str, code: str
) -> None:
    body = invoice_paid
    signature: str | None
    if case == "wrong secret":
        signature = signed(body, secret="whsec_not_ours")
    elif case == "timestamp 301 s old":
        signature = signed(body, timestamp=NOW_S - 301)
    elif case == "missing header":
        signature = None
    elif case == "tampered body":
        signature = signed(body)
        body = body.replace(b'"amount_paid": 0', b'"amount_paid": 1000')
        assert body != invoice_paid
    else:
        assert case == "garbage header"
        signature = "garbage"
    status, payload = post(body, signature, lambda_context)
    assert (status, payload["error"]["code"]) == (401, code)
    assert stack.table_items() == []
    assert delivered(stack, probe) == []


def test_given_an_unsigned_non_utf8_body_then_400_not_a_crash_and_nothing_stored(
    stack: Stack, lambda_context: LambdaContext, invoice_paid: bytes, probe: str
) -> None:
    # anyone can send this; Stripe signs UTF-8 JSON, so it is refused before the signature is looked at
    status, payload = post(b"\xff\xfe" + invoice_paid, f"t={NOW_S},v1={'0' * 64}", lambda_context)
    assert (status, payload["error"]["code"]) == (400, "malformed_json")
    assert stack.table_items() == []
    assert delivered(stack, probe) == []


def _without(event: dict[str, Any], name: str) -> dict[str, Any]:
    return {key: value for key, value in event.items() if key != name}


@pytest.mark.parametrize(
    ("make_body", "code"),
    [
        pytest.param(lambda r: b'{"id": "evt_1", "object": "event",', "malformed_json", id="truncated JSON"),
        pytest.param(lambda r: b"\xff\xfe not utf-8", "malformed_json", id="not UTF-8"),
        pytest.param(lambda r: b'["evt_1"]', "not_a_stripe_event", id="a JSON list"),
        pytest.param(lambda r: json.dumps(r["invoice"]).encode(), "not_a_stripe_event", id="an invoice, not an event"),
        pytest.param(lambda r: json.dumps(_without(r["event"], "id")).encode(), "missing_id", id="no id"),
        pytest.param(
            lambda r: json.dumps({**r["event"], "created": "2009-02-13"}).encode(), "missing_created", id="bad created"
        ),
        # hostile input that once ended in a 500, or a 503 forever (D32)
        pytest.param(
            lambda r: json.dumps({**r["event"], "created": True}).encode(), "missing_created", id="created true"
        ),
        pytest.param(
            lambda r: json.dumps({**r["event"], "created": 1.5}).encode(), "missing_created", id="created 1.5"
        ),
        pytest.param(
            lambda r: json.dumps({**r["event"], "id": "evt_" + "x" * 300}).encode(), "invalid_id", id="id over 255"
        ),
        pytest.param(
            lambda r: b'{"object": "event", "id": "evt_1", "x": ' + b"[" * 10_000 + b"]" * 10_000 + b"}",
            "too_deeply_nested",
            id="nested 10000 deep",
        ),
    ],
)
def test_given_a_signed_body_that_is_not_a_stripe_event_then_400_and_nothing_stored_or_published(
    stack: Stack,
    lambda_context: LambdaContext,
    stripe_resources: dict[str, Any],
    probe: str,
    make_body: Any,
    code: str,
) -> None:
    body: bytes = make_body(stripe_resources)
    status, payload = post(body, signed(body), lambda_context)
    assert (status, payload["error"]["code"]) == (400, code)
    assert stack.table_items() == []
    assert delivered(stack, probe) == []


# --- failures: 503 so that Stripe retries -------------------------------------------------------------------------


def test_given_dynamodb_failing_then_503_nothing_published_and_the_retry_stores_and_publishes(
    stack: Stack, lambda_context: LambdaContext, invoice_paid: bytes, probe: str
) -> None:
    stack.clients["dynamodb"].delete_table(TableName=stack.template.physical_name("EventsTable"))
    status, payload = post(invoice_paid, signed(invoice_paid), lambda_context)
    assert (status, payload["error"]["code"]) == (503, "not_stored")
    assert delivered(stack, probe) == []  # never announce an event consumers cannot read
    recreate_table(stack)  # the outage ends; Stripe retries
    status, payload = post(invoice_paid, signed(invoice_paid), lambda_context)
    assert (status, payload["status"]) == (200, "stored")
    assert len(stack.table_items()) == 1
    assert [message["detail"] for message in delivered(stack, probe)] == [DETAIL]


def test_given_eventbridge_failing_then_503_and_the_retry_after_recovery_publishes_the_stored_event(
    stack: Stack, lambda_context: LambdaContext, invoice_paid: bytes, probe: str
) -> None:
    events = stack.clients["events"]
    bus = stack.template.physical_name("BillingEventBus")
    events.remove_targets(Rule=PROBE_RULE, EventBusName=bus, Ids=["probe"])
    events.delete_rule(Name=PROBE_RULE, EventBusName=bus)
    events.delete_event_bus(Name=bus)
    status, payload = post(invoice_paid, signed(invoice_paid), lambda_context)
    assert (status, payload["error"]["code"]) == (503, "not_stored")
    assert len(stack.table_items()) == 1  # stored before the hand-off failed
    events.create_event_bus(Name=bus)  # the bus is back
    wire_probe(stack, probe)
    assert delivered(stack, probe) == []
    status, payload = post(invoice_paid, signed(invoice_paid), lambda_context)
    assert (status, payload["status"]) == (200, "duplicate")
    assert len(stack.table_items()) == 1
    assert [message["detail"] for message in delivered(stack, probe)] == [DETAIL]


def test_given_a_malformed_stripe_secret_then_503_not_401(
    stack: Stack, lambda_context: LambdaContext, invoice_paid: bytes
) -> None:
    stack.clients["secretsmanager"].put_secret_value(
        SecretId=stack.template.parameters["StripeWebhookSecretName"],
        SecretString=json.dumps({"webhook_secrets": {"whsec_current_0123456789": True}}),
    )
    _clear_caches()  # a new container: the secret is read again
    status, payload = post(invoice_paid, signed(invoice_paid), lambda_context)  # post() asserts no secret echoed
    assert (status, payload["error"]["code"]) == (503, "not_stored")
    assert stack.table_items() == []


# --- hardening ----------------------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("ahead", "status"),
    [
        pytest.param(86_400, 401, id="signed a day in the future"),
        pytest.param(301, 401, id="301 s ahead"),
        pytest.param(299, 200, id="299 s ahead (sender clock skew)"),
    ],
)
def test_given_a_signature_timestamp_in_the_future_then_only_the_tolerance_is_accepted(
    stack: Stack, lambda_context: LambdaContext, invoice_paid: bytes, probe: str, ahead: int, status: int
) -> None:
    answered, payload = post(invoice_paid, signed(invoice_paid, timestamp=NOW_S + ahead), lambda_context)
    assert answered == status
    if status == 401:
        assert payload["error"]["code"] == "bad_signature"
        assert stack.table_items() == []
        assert delivered(stack, probe) == []
    else:
        assert len(stack.table_items()) == 1


def test_given_the_bus_failing_then_the_503_names_no_internals_but_a_request_id(
    stack: Stack, lambda_context: LambdaContext, invoice_paid: bytes
) -> None:
    stack.clients["events"].delete_event_bus(Name=stack.template.physical_name("BillingEventBus"))
    status, payload = post(invoice_paid, signed(invoice_paid), lambda_context)
    assert status == 503
    assert payload == {
        "error": {
            "code": "not_stored",
            "message": "event not stored or not handed on; retry later (a retry is safe: duplicates are detected)",
            "request_id": lambda_context.aws_request_id,
        }
    }


def test_given_the_stripe_secret_missing_then_an_unsigned_caller_learns_nothing_about_it(
    stack: Stack, lambda_context: LambdaContext
) -> None:
    secret = stack.template.parameters["StripeWebhookSecretName"]
    stack.clients["secretsmanager"].delete_secret(SecretId=secret, ForceDeleteWithoutRecovery=True)
    _clear_caches()
    status, payload = post(b'{"object": "event"}', "t=1,v1=00", lambda_context)
    assert status == 503
    assert secret not in json.dumps(payload)
    assert set(payload["error"]) == {"code", "message", "request_id"}


# --- another mode or a Connect account: refused, never stored (D349) ----------------------------------------


def _event(stripe_resources: dict[str, Any], **envelope: Any) -> bytes:
    """``invoice.paid`` around the fixture invoice, its envelope overridden (``livemode``, a Connect ``account``)."""
    event = copy.deepcopy(stripe_resources["event"])
    event.update(type="invoice.paid", data={"object": copy.deepcopy(stripe_resources["invoice"])}, **envelope)
    return json.dumps(event, indent=2).encode()


@pytest.mark.parametrize(
    ("envelope", "code", "named"),
    [
        ({"livemode": True}, "livemode_mismatch", "live-mode event"),  # this endpoint is test mode (the template's)
        ({"livemode": "false"}, "livemode_mismatch", "event without a boolean 'livemode'"),
        ({"account": "acct_1Connected"}, "connect_account_event", "acct_1Connected"),
    ],
)
def test_given_a_signed_event_of_the_other_mode_or_a_connect_account_then_400_naming_why_and_nothing_stored(
    stack: Stack,
    lambda_context: LambdaContext,
    stripe_resources: dict[str, Any],
    probe: str,
    envelope: dict[str, Any],
    code: str,
    named: str,
    capsys: pytest.CaptureFixture[str],
) -> None:
    """A test-mode endpoint's secret among the live secrets (or a Connect endpoint's) signs events whose metadata may
    name our invoices: refused with a 400 saying why (Stripe shows it on that endpoint and retries it: a mode set
    wrong and fixed within Stripe's retries - 3 days for a live event, a few hours in test mode - loses nothing),
    never stored or handed on; counted (``StripeEventForeign``)."""
    assert stack.template.parameters["StripeLiveMode"] == "false"
    body = _event(stripe_resources, **envelope)
    capsys.readouterr()
    status, payload = post(body, signed(body), lambda_context)
    assert (status, payload["error"]["code"]) == (400, code)
    assert named in payload["error"]["message"]
    assert stack.table_items() == []
    assert delivered(stack, probe) == []
    counted = emitted_metrics(capsys)
    assert (counted.get("StripeEventForeign"), counted.get("WebhookRejected")) == (1, 1)  # the alarm's metric


def test_given_a_signed_event_of_the_other_mode_refused_then_its_error_log_names_the_event(
    stack: Stack, lambda_context: LambdaContext, stripe_resources: dict[str, Any], caplog: pytest.LogCaptureFixture
) -> None:
    """The operator alarmed on ``StripeEventForeign`` finds the refused event by its id in the ERROR line (the event
    id is known once the envelope is read, before the mode is checked), and the line says which setting decides."""
    body = _event(stripe_resources, livemode=True)
    assert post(body, signed(body), lambda_context)[0] == 400
    [record] = [record for record in caplog.records if record.levelno >= logging.ERROR]
    error = json.loads(logger(SERVICE).registered_formatter.format(record))  # the line as CloudWatch gets it
    assert error["stripe_event_id"] == EVENT_ID
    assert "live-mode event where this stage takes test-mode events" in error["reason"]
    assert "StripeLiveMode" in error["reason"]


def test_given_a_live_mode_endpoint_then_live_events_are_stored_and_test_mode_ones_refused(
    stack: Stack, lambda_context: LambdaContext, stripe_resources: dict[str, Any], monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("STRIPE_LIVEMODE", "true")
    _clear_caches()  # a new container, deployed with StripeLiveMode "true"
    live = _event(stripe_resources, id="evt_live", livemode=True)
    test = _event(stripe_resources, id="evt_test", livemode=False)
    assert post(live, signed(live), lambda_context)[0] == 200
    status, payload = post(test, signed(test), lambda_context)
    assert (status, payload["error"]["code"]) == (400, "livemode_mismatch")
    assert "test-mode event" in payload["error"]["message"]
    assert [item["event_id"]["S"] for item in stack.table_items()] == ["evt_live"]
    assert [item["livemode"]["BOOL"] for item in stack.table_items()] == [True]


def test_given_a_stripe_event_stored_then_it_is_not_counted_as_stored_for_rating(
    stack: Stack, lambda_context: LambdaContext, invoice_paid: bytes, capsys: pytest.CaptureFixture[str]
) -> None:
    """D416: rating's stream drops source stripe, so a Stripe event stored is ``WebhookStored`` only - never
    ``StoredForRating``, the count ``RatingNotInvokedAlarm`` waits for rating on."""
    capsys.readouterr()
    assert post(invoice_paid, signed(invoice_paid), lambda_context)[1]["status"] == "stored"
    counted = emitted_metrics(capsys)
    assert (counted.get("WebhookStored"), counted.get("StoredForRating")) == (1, None)
