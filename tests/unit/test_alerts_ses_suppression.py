"""``SesMailer.suppressed``: SES v2 ``GetSuppressedDestination`` on the mailer's reading client (D381).

moto does not implement ``GetSuppressedDestination`` (its server answers a plain 404, error code "404"), so the
adapter is tested with botocore's ``Stubber``, which validates each request and answer against the real service model;
the logic around it is tested on the port's fake (``tests/unit/test_alerts_required_sms.py``)."""

from __future__ import annotations

from collections.abc import Iterator
from datetime import UTC, datetime
from typing import Any

import boto3
import pytest
from botocore.stub import Stubber

from kilo_alerts.adapters import SesMailer
from kilo_alerts.ports import SendFailedError

ADDRESS = "ada@example.com"


def _client() -> Any:
    return boto3.client(
        "sesv2",
        region_name="us-east-1",
        aws_access_key_id="test",
        aws_secret_access_key="test",
    )


@pytest.fixture
def reader() -> Iterator[tuple[Any, Stubber]]:
    client = _client()
    with Stubber(client) as stubber:
        yield client, stubber
        stubber.assert_no_pending_responses()


def _mailer(reader: Any) -> SesMailer:
    sender = _client()
    Stubber(sender).activate()  # no answer queued: a call on the sending client would fail the test
    return SesMailer(sender, "alerts@kilo.example", reader=reader)


def test_given_an_address_on_the_suppression_list_then_its_reason_is_answered(reader: tuple[Any, Stubber]) -> None:
    client, stubber = reader
    stubber.add_response(
        "get_suppressed_destination",
        {
            "SuppressedDestination": {
                "EmailAddress": ADDRESS,
                "Reason": "BOUNCE",
                "LastUpdateTime": datetime(2026, 11, 19, 8, 0, tzinfo=UTC),
            }
        },
        {"EmailAddress": ADDRESS},
    )

    assert _mailer(client).suppressed(ADDRESS) == "BOUNCE"


def test_given_an_address_ses_does_not_know_then_it_is_not_suppressed(reader: tuple[Any, Stubber]) -> None:
    client, stubber = reader
    stubber.add_client_error(
        "get_suppressed_destination",
        service_error_code="NotFoundException",
        service_message=f"Email address {ADDRESS} does not exist on your suppression list.",
        http_status_code=404,
        expected_params={"EmailAddress": ADDRESS},
    )

    assert _mailer(client).suppressed(ADDRESS) is None


@pytest.mark.parametrize(("code", "status"), [("TooManyRequestsException", 429), ("BadRequestException", 400)])
def test_given_the_check_failing_then_it_is_a_failure_for_now_not_an_answer(
    reader: tuple[Any, Stubber], code: str, status: int
) -> None:
    client, stubber = reader
    stubber.add_client_error(
        "get_suppressed_destination", service_error_code=code, http_status_code=status, expected_params=None
    )

    with pytest.raises(SendFailedError, match=code):
        _mailer(client).suppressed(ADDRESS)
