"""``SesMailer.send``: how SES v2 ``SendEmail``'s error answers are classified (D399).

moto's SES v2 answers none of these errors, so the sending client is stubbed with botocore's ``Stubber`` (it validates
each request against the real service model), and each error code is first checked to be one of ``SendEmail``'s
error shapes in botocore's SES v2 model, with the HTTP status that shape declares."""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import boto3
import pytest
from botocore.stub import ANY, Stubber

from kilo_alerts.adapters import SesMailer
from kilo_alerts.ports import SendFailedError, SendingPausedError, SendRefusedError

SENDER = "alerts@kilo.example"
ADDRESS = "ada@example.com"


def _client() -> Any:
    return boto3.client("sesv2", region_name="us-east-1", aws_access_key_id="test", aws_secret_access_key="test")


def _declared(client: Any, code: str) -> int:
    """The HTTP status of ``code``, an error shape SendEmail declares in botocore's SES v2 model."""
    shapes = {shape.name: shape for shape in client.meta.service_model.operation_model("SendEmail").error_shapes}
    assert code in shapes, f"{code} is not one of SendEmail's errors: {sorted(shapes)}"
    return int(shapes[code].metadata["error"]["httpStatusCode"])


@pytest.fixture
def ses() -> Iterator[tuple[Any, Stubber]]:
    client = _client()
    with Stubber(client) as stubber:
        yield client, stubber
        stubber.assert_no_pending_responses()  # every answer queued was asked for: the number of requests


def _answer(client: Any, stubber: Stubber, code: str, times: int) -> None:
    status = _declared(client, code)
    for _ in range(times):
        stubber.add_client_error("send_email", service_error_code=code, http_status_code=status)


def _mailer(client: Any, pauses: list[float]) -> SesMailer:
    reader = _client()
    Stubber(reader).activate()  # no answer queued: a suppression check would fail the test
    return SesMailer(client, SENDER, "kilo-billing-alerts-test", reader=reader, sleep=pauses.append)


@pytest.mark.parametrize(("code", "status"), [("TooManyRequestsException", 429), ("LimitExceededException", 400)])
def test_given_ses_throttling_every_request_then_it_is_sent_three_times_and_fails_for_now(
    ses: tuple[Any, Stubber], code: str, status: int
) -> None:
    """Throttled (the sending rate) or over a quota: SES did not take it, so sending it again cannot mail it twice;
    after three requests it is a failure for now (the queue redelivers it, then its dead-letter queue)."""
    client, stubber = ses
    assert _declared(client, code) == status
    _answer(client, stubber, code, 3)
    pauses: list[float] = []

    with pytest.raises(SendFailedError, match=code) as raised:
        _mailer(client, pauses).send(ADDRESS, "Subject", "<p>html</p>", "text")

    assert not isinstance(raised.value, SendingPausedError)
    assert pauses == [0.2, 0.5]  # three requests (the stubber holds no answer left)


def test_given_ses_over_a_quota_once_then_the_second_request_sends_it(ses: tuple[Any, Stubber]) -> None:
    client, stubber = ses
    _answer(client, stubber, "LimitExceededException", 1)
    stubber.add_response("send_email", {"MessageId": "ses-1"})
    pauses: list[float] = []

    assert _mailer(client, pauses).send(ADDRESS, "Subject", "<p>html</p>", "text") == "ses-1"
    assert pauses == [0.2]


@pytest.mark.parametrize("code", ["SendingPausedException", "AccountSuspendedException"])
def test_given_ses_sending_paused_for_the_account_then_one_request_and_a_paused_failure(
    ses: tuple[Any, Stubber], code: str
) -> None:
    """Our sending is paused (the configuration set's or the account's, by AWS or an operator): hours, not seconds.
    Not sent again within the call; a ``SendingPausedError`` - still a failure for now, never lost."""
    client, stubber = ses
    assert _declared(client, code) == 400
    _answer(client, stubber, code, 1)
    pauses: list[float] = []

    with pytest.raises(SendingPausedError, match=code) as raised:
        _mailer(client, pauses).send(ADDRESS, "Subject", "<p>html</p>", "text")

    assert isinstance(raised.value, SendFailedError)
    assert pauses == []


@pytest.mark.parametrize("code", ["MessageRejected", "MailFromDomainNotVerifiedException", "BadRequestException"])
def test_given_ses_refusing_the_message_then_it_is_refused_for_good_after_one_request(
    ses: tuple[Any, Stubber], code: str
) -> None:
    client, stubber = ses
    assert _declared(client, code) == 400
    _answer(client, stubber, code, 1)
    pauses: list[float] = []

    with pytest.raises(SendRefusedError, match=code):
        _mailer(client, pauses).send(ADDRESS, "Subject", "<p>html</p>", "text")

    assert pauses == []


def test_given_an_alert_email_then_the_request_ses_gets_names_the_configuration_set_and_the_account_tag(
    ses: tuple[Any, Stubber],
) -> None:
    """D400: the bounce handler finds the account only from the tag SES publishes with the set's events, so the
    real ``SendEmail`` request (the Stubber compares every parameter) carries the set and ``kilo-account`` =
    ``acct_1`` in URL-safe base64 without padding (``YWNjdF8x``, by hand: ``acc`` -> ``YWNj``, ``t_1`` -> ``dF8x``)."""
    client, stubber = ses
    expected = {
        "FromEmailAddress": SENDER,
        "Destination": {"ToAddresses": [ADDRESS]},
        "Content": ANY,  # the MIME message (its Message-ID differs each time)
        "ConfigurationSetName": "kilo-billing-alerts-test",
        "EmailTags": [{"Name": "kilo-account", "Value": "YWNjdF8x"}],
    }
    stubber.add_response("send_email", {"MessageId": "ses-1"}, expected_params=expected)

    sent = _mailer(client, []).send(ADDRESS, "Subject", "<p>html</p>", "text", account_id="acct_1")

    assert sent == "ses-1"


def test_given_an_alert_email_of_a_delivery_then_the_request_ses_gets_the_delivery_tag_too(
    ses: tuple[Any, Stubber],
) -> None:
    """D408: the bounce handler finds the bounced email's record from the ``kilo-delivery`` tag SES publishes with
    the bounce: the real ``SendEmail`` request carries it after ``kilo-account``, as the logic gave it."""
    client, stubber = ses
    expected = {
        "FromEmailAddress": SENDER,
        "Destination": {"ToAddresses": [ADDRESS]},
        "Content": ANY,
        "ConfigurationSetName": "kilo-billing-alerts-test",
        "EmailTags": [
            {"Name": "kilo-account", "Value": "YWNjdF8x"},
            {"Name": "kilo-delivery", "Value": "MjAyNi0xMSNhbGxvd2FuY2VfdGhyZXNob2xkI3ZpZGVvOjgw"},
        ],
    }
    stubber.add_response("send_email", {"MessageId": "ses-1"}, expected_params=expected)

    mailer = _mailer(client, [])
    sent = mailer.send(
        ADDRESS, "Subject", "<p>html</p>", "text", account_id="acct_1",
        delivery="MjAyNi0xMSNhbGxvd2FuY2VfdGhyZXNob2xkI3ZpZGVvOjgw",
    )  # fmt: skip

    assert sent == "ses-1"
    stubber.assert_no_pending_responses()
