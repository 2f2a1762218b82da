"""A send is one request: the alerts' SES and SNS clients that send (SendEmail, Publish) make one attempt, so a call
the service took but answered after the read timeout is not sent again by botocore itself, outside the ledger's claim
(D380); the reads (SNS's opt-out list) keep the settings' retries. A send the service did not take (throttled, or
never connected) is sent again by the adapter, at most three requests in all, after a short pause (D380, amended).

The SDK side runs for real: the ports as ``kilo_alerts.dependencies.alerts()`` builds them from the environment, pointed (boto3's
``AWS_ENDPOINT_URL_<SERVICE>``) at a stand-in for SES v2 and SNS on 127.0.0.1 (a free port the OS picks, stopped by
the fixture) that answers the first send of each kind late and counts the requests it received.
"""

from __future__ import annotations

import json
import socket
import threading
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler
from typing import Any

import pytest

from kilo_alerts import dependencies
from kilo_alerts.adapters import SesMailer, SnsTexter
from kilo_alerts.logic import AlertPorts
from kilo_alerts.ports import SendFailedError
from kilo_alerts.settings import settings
from kilo_billing.aws import client
from kilo_dev.processes import LoopbackServer

READ_TIMEOUT = 0.3  # seconds: the stand-in answers a late send after 1 s
SNS_PUBLISHED = (
    b'<PublishResponse xmlns="http://sns.amazonaws.com/doc/2010-03-31/"><PublishResult><MessageId>m-1</MessageId>'
    b"</PublishResult><ResponseMetadata><RequestId>r-1</RequestId></ResponseMetadata></PublishResponse>"
)
SNS_NOT_OPTED_OUT = (
    b'<CheckIfPhoneNumberIsOptedOutResponse xmlns="http://sns.amazonaws.com/doc/2010-03-31/">'
    b"<CheckIfPhoneNumberIsOptedOutResult><isOptedOut>false</isOptedOut></CheckIfPhoneNumberIsOptedOutResult>"
    b"<ResponseMetadata><RequestId>r-2</RequestId></ResponseMetadata></CheckIfPhoneNumberIsOptedOutResponse>"
)
SNS_THROTTLED = (
    b'<ErrorResponse xmlns="http://sns.amazonaws.com/doc/2010-03-31/"><Error><Type>Sender</Type>'
    b"<Code>Throttling</Code><Message>Rate exceeded</Message></Error><RequestId>r-4</RequestId></ErrorResponse>"
)
SES_THROTTLED = json.dumps({"message": "Maximum sending rate exceeded."}).encode()
SNS_UNAVAILABLE = (
    b'<ErrorResponse xmlns="http://sns.amazonaws.com/doc/2010-03-31/"><Error><Type>Receiver</Type>'
    b"<Code>InternalError</Code><Message>try again</Message></Error><RequestId>r-3</RequestId></ErrorResponse>"
)


@dataclass
class StandIn:
    """SES v2 (SendEmail) and SNS (Publish, CheckIfPhoneNumberIsOptedOut): ``requests`` names each request received;
    the first of each kind in ``late`` is answered after 1 s, the first of each in ``failing`` with a 500, the first
    ``throttled[kind]`` of a kind throttled (SES: 429 ``TooManyRequestsException``; SNS: 400 ``Throttling``)."""

    late: set[str]
    failing: set[str]
    throttled: dict[str, int] = field(default_factory=dict)
    requests: list[str] = field(default_factory=list)
    lock: threading.Lock = field(default_factory=threading.Lock)
    url: str = ""

    def answer(self, path: str, body: bytes) -> tuple[int, bytes, str, dict[str, str]]:
        """The status, body, content type and other headers answering a request (after 1 s for a late one)."""
        if path.startswith("/v2/email/outbound-emails"):
            kind, answer, content = "SendEmail", json.dumps({"MessageId": "e-1"}).encode(), "application/json"
        elif b"Action=Publish" in body:
            kind, answer, content = "Publish", SNS_PUBLISHED, "text/xml"
        else:
            kind, answer, content = "CheckIfPhoneNumberIsOptedOut", SNS_NOT_OPTED_OUT, "text/xml"
        with self.lock:
            before = self.requests.count(kind)
            self.requests.append(kind)
        if before < self.throttled.get(kind, 0):  # not taken
            if kind == "SendEmail":
                return 429, SES_THROTTLED, "application/json", {"x-amzn-ErrorType": "TooManyRequestsException"}
            return 400, SNS_THROTTLED, "text/xml", {}
        if not before and kind in self.late:
            time.sleep(1.0)  # taken, answered after the client's read timeout
        if not before and kind in self.failing:
            return 500, SNS_UNAVAILABLE, "text/xml", {}
        return 200, answer, content, {}


def _serve(late: set[str], failing: set[str], throttled: dict[str, int] | None = None) -> Iterator[StandIn]:
    stand_in = StandIn(late, failing, throttled or {})

    class Handler(BaseHTTPRequestHandler):
        def do_POST(self) -> None:
            status, answer, content, headers = stand_in.answer(
                self.path, self.rfile.read(int(self.headers.get("Content-Length") or 0))
            )
            try:
                self.send_response(status)
                self.send_header("Content-Type", content)
                for name, value in headers.items():
                    self.send_header(name, value)
                self.send_header("Content-Length", str(len(answer)))
                self.end_headers()
                self.wfile.write(answer)
            except OSError:  # the client gave up on the late answer
                pass

        def log_message(self, *args: Any) -> None:
            pass

    server = LoopbackServer(Handler, "ses-sns-stand-in")
    stand_in.url = server.url
    server.start()
    try:
        yield stand_in
    finally:
        server.stop()


@pytest.fixture
def late_sends() -> Iterator[StandIn]:
    yield from _serve({"SendEmail", "Publish"}, set())


@pytest.fixture
def throttled_once() -> Iterator[StandIn]:
    yield from _serve(set(), set(), {"SendEmail": 1, "Publish": 1})


@pytest.fixture
def throttled_always() -> Iterator[StandIn]:
    yield from _serve(set(), set(), {"SendEmail": 9, "Publish": 9})


@pytest.fixture
def failing_publish() -> Iterator[StandIn]:
    yield from _serve(set(), {"Publish"})


@pytest.fixture
def failing_opt_out_check() -> Iterator[StandIn]:
    yield from _serve(set(), {"CheckIfPhoneNumberIsOptedOut"})


@pytest.fixture
def environment(monkeypatch: pytest.MonkeyPatch) -> Iterator[Callable[[StandIn], AlertPorts]]:
    """The alerts function's ports as a new container builds them (``dependencies.alerts()``) from its environment,
    SES and SNS pointed at the stand-in; the settings' and dependencies' caches forgotten before and after."""

    def ports(server: StandIn) -> AlertPorts:
        for name, value in {
            "AWS_ACCESS_KEY_ID": "test",
            "AWS_SECRET_ACCESS_KEY": "test",
            "AWS_DEFAULT_REGION": "us-east-1",
            "AWS_ENDPOINT_URL_SNS": server.url,
            "AWS_ENDPOINT_URL_SESV2": server.url,
            "ALERTS_TABLE_NAME": "alerts",
            "USAGE_TABLE_NAME": "usage",
            "ALERT_SENDER_EMAIL": "alerts@kilo.example",
            "ALERT_PREFERENCES_URL": "https://prefs.example/alerts",
            "OPERATOR_TOPIC_ARN": "arn:aws:sns:us-east-1:123456789012:operator",
            "AWS_READ_TIMEOUT_SECONDS": str(READ_TIMEOUT),
            "AWS_MAX_ATTEMPTS": "3",  # the reads' retries: three attempts
        }.items():
            monkeypatch.setenv(name, value)
        monkeypatch.delenv("AWS_ENDPOINT_URL", raising=False)
        _forget()
        return dependencies.alerts().ports

    yield ports
    _forget()


def _forget() -> None:
    settings.cache_clear()
    dependencies.alerts.cache_clear()


def test_given_an_sms_publish_answered_late_then_sns_receives_it_once(
    late_sends: StandIn, environment: Callable[[StandIn], AlertPorts]
) -> None:
    texter = environment(late_sends).texter

    with pytest.raises(SendFailedError):  # no answer in time: a failure for now, the queue's to retry
        texter.send("+14155550100", "Kilo: hard limit $150.00 reached")

    assert late_sends.requests == ["Publish"]  # not three: botocore did not publish it again


def test_given_an_email_answered_late_then_ses_receives_it_once(
    late_sends: StandIn, environment: Callable[[StandIn], AlertPorts]
) -> None:
    mailer = environment(late_sends).mailer

    with pytest.raises(SendFailedError):
        mailer.send("ada@example.com", "Hard limit reached", "<p>hi</p>", "hi")

    assert late_sends.requests == ["SendEmail"]


def test_given_an_operator_alert_answered_late_then_the_topic_receives_it_once(
    late_sends: StandIn, environment: Callable[[StandIn], AlertPorts]
) -> None:
    operator = environment(late_sends).operator
    assert operator is not None
    notifier = operator.notifier

    with pytest.raises(SendFailedError):
        notifier.notify("Unattributed usage", "3 rooms without an account")

    assert late_sends.requests == ["Publish"]


def test_given_the_opt_out_check_failing_once_then_it_is_retried_and_answered(
    failing_opt_out_check: StandIn, environment: Callable[[StandIn], AlertPorts]
) -> None:
    texter = environment(failing_opt_out_check).texter

    assert texter.opted_out("+14155550100") is False
    assert failing_opt_out_check.requests == ["CheckIfPhoneNumberIsOptedOut", "CheckIfPhoneNumberIsOptedOut"]


def test_given_an_email_throttled_once_then_the_adapter_sends_it_again_and_ses_takes_it(
    throttled_once: StandIn, environment: Callable[[StandIn], AlertPorts]
) -> None:
    mailer = environment(throttled_once).mailer

    # SES's 429 says it did not take the message: sending it again cannot mail it twice
    assert mailer.send("ada@example.com", "Hard limit reached", "<p>hi</p>", "hi") == "e-1"
    assert throttled_once.requests == ["SendEmail", "SendEmail"]


def test_given_an_sms_throttled_once_then_the_adapter_publishes_it_again_and_sns_takes_it(
    throttled_once: StandIn, environment: Callable[[StandIn], AlertPorts]
) -> None:
    texter = environment(throttled_once).texter

    assert texter.send("+14155550100", "Kilo: hard limit $150.00 reached") == "m-1"
    assert throttled_once.requests == ["Publish", "Publish"]


def test_given_an_operator_alert_throttled_once_then_the_topic_takes_it_on_the_second_request(
    throttled_once: StandIn, environment: Callable[[StandIn], AlertPorts]
) -> None:
    operator = environment(throttled_once).operator
    assert operator is not None

    assert operator.notifier.notify("Unattributed usage", "3 rooms without an account") == "m-1"
    assert throttled_once.requests == ["Publish", "Publish"]


def test_given_a_send_throttled_every_time_then_three_requests_with_short_pauses_and_a_failure_for_now(
    throttled_always: StandIn, environment: Callable[[StandIn], AlertPorts]
) -> None:
    environment(throttled_always)  # the environment, for the settings' budget
    budget = dependencies.sending_budget(settings().call_budget)
    pauses: list[float] = []
    mailer = SesMailer(client("sesv2", budget), "alerts@kilo.example", sleep=pauses.append)
    texter = SnsTexter(client("sns", budget), sleep=pauses.append)

    with pytest.raises(SendFailedError, match="TooManyRequestsException"):
        mailer.send("ada@example.com", "Hard limit reached", "<p>hi</p>", "hi")
    with pytest.raises(SendFailedError, match="Throttling"):
        texter.send("+14155550100", "Kilo: hard limit $150.00 reached")

    assert throttled_always.requests == ["SendEmail"] * 3 + ["Publish"] * 3
    assert pauses == [0.2, 0.5, 0.2, 0.5]  # 0.7 s at most per send


def test_given_nothing_listening_then_the_publish_is_tried_three_times(
    late_sends: StandIn, environment: Callable[[StandIn], AlertPorts]
) -> None:
    environment(late_sends)
    with socket.socket() as probe:  # a free port on 127.0.0.1, closed again: the connection is refused
        probe.bind(("127.0.0.1", 0))
        closed = f"http://127.0.0.1:{probe.getsockname()[1]}"
    pauses: list[float] = []
    texter = SnsTexter(
        client("sns", dependencies.sending_budget(settings().call_budget), endpoint_url=closed), sleep=pauses.append
    )

    with pytest.raises(SendFailedError, match="EndpointConnectionError"):
        texter.send("+14155550100", "Kilo: hard limit $150.00 reached")

    assert pauses == [0.2, 0.5]  # never connected, so never taken: tried again
    assert late_sends.requests == []


def test_given_a_publish_answered_with_a_5xx_then_it_is_not_sent_again(
    failing_publish: StandIn, environment: Callable[[StandIn], AlertPorts]
) -> None:
    texter = environment(failing_publish).texter

    with pytest.raises(SendFailedError, match="InternalError"):  # SNS may have taken it: the queue's to retry
        texter.send("+14155550100", "Kilo: hard limit $150.00 reached")

    assert failing_publish.requests == ["Publish"]
