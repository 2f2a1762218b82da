"""Time budgets: every ingest handler answers, logs and counts a slow or failing AWS itself, inside its Lambda timeout.

The SDK side runs for real: boto3 clients from ``kilo_billing.aws.client`` with the route's budget, pointed at a slow
HTTP server on 127.0.0.1 (a free port, stopped by the test). Assertions are on the configured budget and the number
of attempts the server saw, not on wall-clock thresholds.
"""

from __future__ import annotations

import json
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from datetime import UTC, datetime
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import pytest
import time_machine

from kilo_billing.accounts import AccountProfile
from kilo_billing.aws import CallBudget, client
from kilo_billing.entitlements import EntitlementPolicy
from kilo_billing.rating import TierChange
from kilo_dev.apigw import http_api_event
from kilo_dev.signing import livekit_authorization, usage_signature
from kilo_dev.template import Template
from kilo_webhook_ingest import livekit_handler, stripe_handler, usage_handler
from kilo_webhook_ingest.adapters import DynamoEventStore, SecretsManagerSource
from kilo_webhook_ingest.dependencies import LiveKitDependencies, StripeDependencies, UsageDependencies
from kilo_webhook_ingest.settings import LIVEKIT_BUDGET, STRIPE_BUDGET, USAGE_BUDGET, IngestSettings
from kilo_webhook_ingest.usage_model import UsageClient
from tests.conftest import LambdaContext
from tests.fakes import (
    InMemoryAccountDirectory,
    InMemoryEntitlements,
    InMemoryEventStore,
    RecordingPublisher,
    StaticSecretSource,
)

FIXTURES = Path(__file__).resolve().parents[1] / "fixtures"
KEY, SECRET = "APIkeySlow", "slow-secret-0123456789abcdef0123456789"
INTERNALS = ("DynamoDB", "dynamodb", "Timeout", "timeout", "127.0.0.1", "secretsmanager", "kilo-billing/")


# --- the budgets fit the template's timeouts ----------------------------------------------------------------------


def test_given_the_budgets_then_their_worst_cases_are_as_worked_out_by_hand() -> None:
    # attempts x (connect + read) + standard-mode backoff before each retry (at most 1 s, then 2 s)
    assert LIVEKIT_BUDGET.worst_case_seconds == 2 * (0.5 + 1.0) + 1  # 4 s
    assert STRIPE_BUDGET.worst_case_seconds == 2 * (0.5 + 1.0) + 1  # 4 s
    assert USAGE_BUDGET.worst_case_seconds == 3 * (0.5 + 1.5) + 1 + 2  # 9 s


@pytest.mark.parametrize(
    ("function", "budget", "calls"),
    [
        pytest.param("LiveKitWebhookFunction", LIVEKIT_BUDGET, 2, id="LiveKit: secret + write"),
        pytest.param("UsageApiFunction", USAGE_BUDGET, 3, id="usage: secret + account read + a round of writes"),
        pytest.param("StripeWebhookFunction", STRIPE_BUDGET, 2, id="Stripe: secret + write (publish: deadline)"),
    ],
)
def test_given_a_route_then_its_calls_worst_case_fits_the_functions_timeout(
    function: str, budget: CallBudget, calls: int
) -> None:
    timeout = int(Template(parameters={"Stage": "test"}).resources[function]["Properties"].get("Timeout", 10))
    margin = IngestSettings(events_table="t").deadline_margin_seconds
    assert calls * budget.worst_case_seconds + margin <= timeout


# --- a slow endpoint ------------------------------------------------------------------------------------------------


@dataclass
class SlowEndpoint:
    """Answers every request after ``delay`` seconds; counts the requests it received."""

    delay: float
    requests: list[str] = field(default_factory=list)
    url: str = ""
    _server: ThreadingHTTPServer | None = None

    def start(self) -> None:
        endpoint = self

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self) -> None:
                length = int(self.headers.get("content-length") or 0)
                self.rfile.read(length)
                endpoint.requests.append(self.headers.get("x-amz-target", "?"))
                time.sleep(endpoint.delay)
                try:
                    self.send_response(200)
                    self.send_header("content-type", "application/x-amz-json-1.0")
                    self.end_headers()
                    self.wfile.write(b"{}")
                except OSError:
                    pass  # the client gave up long ago

            def log_message(self, *args: Any) -> None:
                return None

        self._server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self._server.daemon_threads = True
        self.url = f"http://127.0.0.1:{self._server.server_address[1]}"
        threading.Thread(target=self._server.serve_forever, daemon=True).start()

    def stop(self) -> None:
        assert self._server is not None
        self._server.shutdown()
        self._server.server_close()


@pytest.fixture
def slow_endpoint(monkeypatch: pytest.MonkeyPatch) -> Iterator[SlowEndpoint]:
    for name, value in {
        "AWS_ACCESS_KEY_ID": "testing",
        "AWS_SECRET_ACCESS_KEY": "testing",
        "AWS_DEFAULT_REGION": "us-east-1",
    }.items():
        monkeypatch.setenv(name, value)
    endpoint = SlowEndpoint(delay=LIVEKIT_BUDGET.read_timeout + 1.5)  # every attempt times out reading
    endpoint.start()
    yield endpoint
    endpoint.stop()


def livekit_event() -> dict[str, Any]:
    body = (FIXTURES / "livekit" / "participant_joined.json").read_bytes().strip()
    return http_api_event(
        "POST", "/webhooks/livekit", body, {"authorization": livekit_authorization(body, KEY, SECRET)}
    )


def assert_generic_503(response: dict[str, Any], context: LambdaContext) -> None:
    assert response["statusCode"] == 503
    payload = json.loads(response["body"])
    assert payload["error"]["code"] == "not_stored"
    assert payload["error"]["request_id"] == context.aws_request_id
    assert not any(word in response["body"] for word in INTERNALS), response["body"]


def test_given_dynamodb_answering_too_slowly_then_the_livekit_handler_answers_503_after_its_budgeted_attempts(
    slow_endpoint: SlowEndpoint, monkeypatch: pytest.MonkeyPatch, lambda_context: LambdaContext
) -> None:
    settings = IngestSettings(events_table="events")
    store = DynamoEventStore(client("dynamodb", settings.livekit_budget, endpoint_url=slow_endpoint.url), "events")
    deps = LiveKitDependencies(settings, store, StaticSecretSource(livekit={KEY: SECRET}))
    monkeypatch.setattr(livekit_handler, "dependencies", lambda: deps)
    response = livekit_handler.lambda_handler(livekit_event(), lambda_context)
    assert_generic_503(response, lambda_context)
    assert slow_endpoint.requests == ["DynamoDB_20120810.PutItem"] * LIVEKIT_BUDGET.max_attempts


def test_given_secrets_manager_answering_too_slowly_then_503_that_names_neither_the_secret_nor_the_endpoint(
    slow_endpoint: SlowEndpoint, monkeypatch: pytest.MonkeyPatch, lambda_context: LambdaContext
) -> None:
    settings = IngestSettings(events_table="events")
    secrets = SecretsManagerSource(
        client("secretsmanager", settings.livekit_budget, endpoint_url=slow_endpoint.url),
        {"livekit": "kilo-billing/livekit-webhook-keys"},
    )
    deps = LiveKitDependencies(settings, InMemoryEventStore(), secrets)
    monkeypatch.setattr(livekit_handler, "dependencies", lambda: deps)
    response = livekit_handler.lambda_handler(livekit_event(), lambda_context)
    assert_generic_503(response, lambda_context)
    assert slow_endpoint.requests == ["secretsmanager.GetSecretValue"] * LIVEKIT_BUDGET.max_attempts


# --- the deadline: no AWS call starts that might not finish ---------------------------------------------------------


class DwindlingContext(LambdaContext):
    """A Lambda context whose remaining time drops to ``low_ms`` after ``plenty`` readings."""

    def __init__(self, plenty: int, low_ms: int, high_ms: int = 29_000) -> None:
        super().__init__()
        self.readings = 0
        self._plenty, self._low, self._high = plenty, low_ms, high_ms
        self._lock = threading.Lock()

    def get_remaining_time_in_millis(self) -> int:
        with self._lock:
            self.readings += 1
            return self._high if self.readings <= self._plenty else self._low


NOW = datetime(2026, 3, 1, 12, 0, 0, tzinfo=UTC)


def usage_request(count: int) -> dict[str, Any]:
    events = [
        {"idempotency_key": f"k-{n:04d}", "account_id": "acct_7", "meter": "messages", "quantity": 1,
         "timestamp": "2026-03-01T11:58:00Z"}
        for n in range(count)
    ]  # fmt: skip
    body = json.dumps({"events": events}).encode()
    headers = {"x-kilo-client": "kilo-app", "x-kilo-signature": usage_signature(body, "usage-secret", 1772366400)}
    return http_api_event("POST", "/v1/usage", body, headers)


def usage_deps(store: InMemoryEventStore) -> UsageDependencies:
    profile = AccountProfile("acct_7", (TierChange(datetime(2026, 1, 1, tzinfo=UTC), "personal"),))
    secrets = StaticSecretSource(usage={"kilo-app": UsageClient(("usage-secret",))})
    directory = InMemoryAccountDirectory(profile)
    return UsageDependencies(
        IngestSettings(events_table="events"),
        store,
        secrets,
        directory,
        InMemoryEntitlements(directory),
        EntitlementPolicy(),
    )


def test_given_time_running_low_mid_batch_then_no_further_write_starts_and_the_503_lists_what_was_stored(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    store = InMemoryEventStore()
    monkeypatch.setattr(usage_handler, "dependencies", lambda: usage_deps(store))
    # 29 s left for the secret read, the account read and 40 writes; then 5 s, below one write's 9 s worst case
    context = DwindlingContext(plenty=2 + 40, low_ms=5_000)
    with time_machine.travel(NOW, tick=False):
        response = usage_handler.lambda_handler(usage_request(1000), context)
    assert response["statusCode"] == 503
    payload = json.loads(response["body"])
    stored = {result["idempotency_key"] for result in payload["results"] if result["status"] == "accepted"}
    assert len(stored) == 40
    assert payload["not_stored"] == 960
    assert {key[0] for key in store.items} == {f"usage#kilo-app#{key}" for key in stored}  # the answer is the truth


def test_given_the_store_throttling_then_the_batch_stops_after_the_writes_under_way(
    monkeypatch: pytest.MonkeyPatch, lambda_context: LambdaContext
) -> None:
    store = InMemoryEventStore()
    store.failing = True
    monkeypatch.setattr(usage_handler, "dependencies", lambda: usage_deps(store))
    with time_machine.travel(NOW, tick=False):
        response = usage_handler.lambda_handler(usage_request(1000), lambda_context)
    assert response["statusCode"] == 503
    assert json.loads(response["body"])["not_stored"] == 1000
    workers = IngestSettings(events_table="t").usage_max_workers
    assert store.writes <= workers  # once: 1,000 throttled writes, each retried (74 s); now at most one per worker


def test_given_too_little_time_left_to_publish_then_503_and_stripes_retry_finds_the_event_stored(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    import stripe  # noqa: PLC0415

    resources = json.loads((FIXTURES / "stripe" / "fixtures3.json").read_text())["resources"]
    body = json.dumps(resources["event"]).encode()
    store, publisher = InMemoryEventStore(), RecordingPublisher()
    deps = StripeDependencies(
        IngestSettings(events_table="events"), store, StaticSecretSource(stripe=["whsec_x"]), publisher
    )
    monkeypatch.setattr(stripe_handler, "dependencies", lambda: deps)
    with time_machine.travel(NOW, tick=False):
        header = stripe.WebhookSignature.generate_signature_header(body.decode(), "whsec_x", 1772366400)
        event = http_api_event("POST", "/webhooks/stripe", body, {"stripe-signature": header})
        # 10 s for the secret and the write, then 3 s: less than the publish's 4 s worst case + margin
        response = stripe_handler.lambda_handler(event, DwindlingContext(plenty=2, low_ms=3_000, high_ms=10_000))
        assert response["statusCode"] == 503
        assert len(store.items) == 1
        assert publisher.published == []
        response = stripe_handler.lambda_handler(event, LambdaContext())
    assert json.loads(response["body"])["status"] == "duplicate"
    assert [detail_type for detail_type, _ in publisher.published] == ["StripeEventReceived.v1"]
