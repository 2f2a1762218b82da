"""A send is one request: the alerts' SES and SNS clients that send (SendEmail, Publish) make one attempt, so a call
the service took but answered after the read timeout is not sent again by botocore itself, outside the ledger's claim
(D380); the reads (SNS's opt-out list) keep the settings' retries.

The SDK side runs for real: the ports as ``kilo_alerts.dependencies.alerts()`` builds them from the environment, pointed (boto3's
``AWS_ENDPOINT_URL_<SERVICE>``) at a stand-in for SES v2 and SNS on 127.0.0.1 (a free port the OS picks, stopped by
the fixture) that answers the first send of each kind late and counts the requests it received.
"""

from __future__ import annotations

import json
import threading
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler
from typing import Any

import pytest

from kilo_alerts import dependencies
from kilo_alerts.logic import AlertPorts
from kilo_alerts.ports import SendFailedError
from kilo_alerts.settings import settings
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
SNS_UNAVAILABLE = (
    b'<ErrorResponse xmlns="http://sns.amazonaws.com/doc/2010-03-31/"><Error><Type>Receiver</Type>'
    b"<Code>InternalError</Code><Message>try again</Message></Error><RequestId>r-3</RequestId></ErrorResponse>"
)


@dataclass
class StandIn:
    """SES v2 (SendEmail) and SNS (Publish, CheckIfPhoneNumberIsOptedOut): ``requests`` names each request received;
    the first of each kind in ``late`` is answered after 1 s, the first of each in ``failing`` with a 500."""

    late: set[str]
    failing: set[str]
    requests: list[str] = field(default_factory=list)
    lock: threading.Lock = field(default_factory=threading.Lock)
    url: str = ""

    def answer(self, path: str, body: bytes) -> tuple[int, bytes, str]:
        """The status, body and content type answering a request (after 1 s for a late one)."""
        if path.startswith("/v2/email/outbound-emails"):
            kind, answer, content = "SendEmail", json.dumps({"MessageId": "e-1"}).encode(), "application/json"
        elif b"Action=Publish" in body:
            kind, answer, content = "Publish", SNS_PUBLISHED, "text/xml"
        else:
            kind, answer, content = "CheckIfPhoneNumberIsOptedOut", SNS_NOT_OPTED_OUT, "text/xml"
        with self.lock:
            first = kind not in self.requests
            self.requests.append(kind)
        if first and kind in self.late:
            time.sleep(1.0)  # taken, answered after the client's read timeout
        if first and kind in self.failing:
            return 500, SNS_UNAVAILABLE, "text/xml"
        return 200, answer, content


def _serve(late: set[str], failing: set[str]) -> Iterator[StandIn]:
    stand_in = StandIn(late, failing)

    class Handler(BaseHTTPRequestHandler):
        def do_POST(self) -> None:
            status, answer, content = stand_in.answer(
                self.path, self.rfile.read(int(self.headers.get("Content-Length") or 0))
            )
            try:
                self.send_response(status)
                self.send_header("Content-Type", content)
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
