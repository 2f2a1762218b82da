"""SES's bounce and complaint records (D400): the fixtures are AWS's published SNS examples with our account tag
(tests/fixtures/ses/README.md)."""

from __future__ import annotations

import hashlib
import json
import re
from pathlib import Path
from typing import Any

import pytest

from kilo_alerts.bounces import (
    REPLAYABLE,
    BounceRecordError,
    ReplayRefusedError,
    Undeliverable,
    account_from_tag,
    account_tag,
    mark_reported,
    ses_record,
    undeliverable,
)

FIXTURES = Path(__file__).parents[1] / "fixtures" / "ses"
AT_MS = 1_501_893_662_669  # 2017-08-05T00:41:02.669Z: 17,383 days x 86,400 s + 41 min 2 s, in ms
FEEDBACK = "01000157c44f053b-61b59c11-9236-11e6-8f96-7be8aexample-000000"
MESSAGE = "EXAMPLE7c191be45-e9aedb9a-02f9-4d12-a87d-dd0099a07f8a-000000"  # the example's mail.messageId


def fixture(name: str) -> dict[str, Any]:
    found: dict[str, Any] = json.loads((FIXTURES / name).read_text())
    return found


def test_given_a_permanent_bounce_then_its_recipient_of_the_tagged_account_is_marked() -> None:
    body = json.dumps(fixture("bounce_permanent.json"))

    assert undeliverable(ses_record(body)) == [
        Undeliverable("acct_1", "recipient@example.com", "bounce", "Permanent/General 5.1.1", AT_MS, FEEDBACK, MESSAGE)
    ]


def test_given_a_complaint_then_its_recipient_is_marked() -> None:
    body = json.dumps(fixture("complaint.json"))

    assert undeliverable(ses_record(body)) == [
        Undeliverable("acct_1", "recipient@example.com", "complaint", "abuse", AT_MS, FEEDBACK, MESSAGE)
    ]


@pytest.mark.parametrize(("bounce_type", "sub_type"), [("Transient", "MailboxFull"), ("Undetermined", "Undetermined")])
def test_given_a_bounce_that_is_not_permanent_then_nothing_is_marked(bounce_type: str, sub_type: str) -> None:
    record = fixture("bounce_permanent.json")
    record["bounce"].update(bounceType=bounce_type, bounceSubType=sub_type)

    assert undeliverable(ses_record(json.dumps(record))) == []


def test_given_a_complaint_whose_feedback_says_not_spam_then_nothing_is_marked() -> None:
    """The recipient's provider reports the mail as not spam (``complaintFeedbackType: not-spam``, e.g. taken out of
    the spam folder): no complaint about our mail, the address keeps getting it."""
    record = fixture("complaint.json")
    record["complaint"]["complaintFeedbackType"] = "not-spam"

    assert undeliverable(ses_record(json.dumps(record))) == []


def test_given_the_record_inside_an_sns_notification_then_it_is_read_the_same() -> None:
    """A subscription without raw delivery: SNS's envelope, SES's record as the ``Message`` string."""
    envelope = {"Type": "Notification", "MessageId": "m-1", "Message": json.dumps(fixture("complaint.json"))}

    [found] = undeliverable(ses_record(json.dumps(envelope)))
    assert (found.account_id, found.why) == ("acct_1", "complaint")


def test_given_another_event_type_then_nothing_is_marked() -> None:
    record = fixture("bounce_permanent.json")
    record["eventType"] = "Delivery"

    assert undeliverable(ses_record(json.dumps(record))) == []


def test_given_a_bounce_without_our_account_tag_then_it_is_refused_as_not_ours() -> None:
    record = fixture("bounce_permanent.json")
    del record["mail"]["tags"]["kilo-account"]

    with pytest.raises(BounceRecordError, match="no kilo-account tag"):
        undeliverable(ses_record(json.dumps(record)))


@pytest.mark.parametrize("body", ["not json", "[]", '{"eventType": "Bounce"}'])
def test_given_a_body_that_is_not_an_ses_record_then_it_is_refused(body: str) -> None:
    with pytest.raises(BounceRecordError):
        ses_record(body)


@pytest.mark.parametrize(("account", "tag"), [("acct_1", "YWNjdF8x"), ("org:7@x", "b3JnOjdAeA")])
def test_given_an_account_id_then_its_tag_takes_only_what_ses_allows_and_reads_back(account: str, tag: str) -> None:
    assert account_tag(account) == tag
    assert re.fullmatch(r"[A-Za-z0-9_-]{1,256}", tag)
    assert account_from_tag(tag) == account


def test_given_a_bounce_naming_the_address_with_capitals_then_its_mark_is_keyed_by_the_address_casefolded() -> None:
    """The mark's key is the pseudonym of the whole address casefolded (D400): whichever spelling SES reports and
    the profile keeps, the same key. Hand-worked: sha256 of ``acct_1``, NUL, ``recipient@example.com``."""
    record = fixture("bounce_permanent.json")
    record["bounce"]["bouncedRecipients"][0]["emailAddress"] = "Recipient@Example.COM"
    marked: list[tuple[str, str]] = []

    class Marks:
        def mark_email(self, account_id: str, recipient: str, why: str, detail: str, at_ms: int) -> bool:
            marked.append((account_id, recipient))
            return True

        def bounce_delivery(self, account_id: str, delivery: str, message_id: str, detail: str) -> str | None:
            raise AssertionError("the example carries no delivery tag")

        def reopen_sms(self, account_id: str, delivery: str) -> bool:
            raise AssertionError("the example carries no delivery tag")

        def replayed(self, account_id: str, delivery: str) -> None:
            raise AssertionError("the example carries no delivery tag")

    def replay(body: str) -> None:
        raise AssertionError("the example carries no delivery tag")

    mark_reported(json.dumps(record), Marks(), replay)

    key = "erased-" + hashlib.sha256(b"acct_1\x00recipient@example.com").hexdigest()[:16]
    assert marked == [("acct_1", key)]


def test_given_the_alerts_table_failing_then_reading_a_mark_is_a_mark_unread_error() -> None:
    """The adapter's side of "a mark that cannot be read holds no alert back" (D400): DynamoDB's failure (here
    ``InternalServerError``, as botocore's Stubber answers it) is the port's ``MarkUnreadError``, which the logic
    sends the email on (tests/unit/test_alerts_required_sms.py)."""
    import boto3  # noqa: PLC0415
    from botocore.stub import Stubber  # noqa: PLC0415

    from kilo_alerts.adapters import DynamoDeliveryLedger  # noqa: PLC0415
    from kilo_alerts.ports import MarkUnreadError  # noqa: PLC0415

    client = boto3.client("dynamodb", region_name="us-east-1", aws_access_key_id="t", aws_secret_access_key="t")
    with Stubber(client) as stubber:
        for _ in range(5):  # however many attempts the call makes
            stubber.add_client_error("get_item", service_error_code="InternalServerError", http_status_code=500)
        with pytest.raises(MarkUnreadError, match="InternalServerError"):
            DynamoDeliveryLedger(client, "kilo-billing-alerts-test").email_mark("acct_1", "erased-0123456789abcdef")


class _Kept:
    """Marks whose bounced email's record keeps ``event``; the SMS reopened as ``reopened`` says."""

    def __init__(self, event: str, reopened: bool = True) -> None:
        self.event, self.reopened, self.calls = event, reopened, []  # type: list[str]

    def mark_email(self, account_id: str, recipient: str, why: str, detail: str, at_ms: int) -> bool:
        return True

    def bounce_delivery(self, account_id: str, delivery: str, message_id: str, detail: str) -> str | None:
        return self.event

    def reopen_sms(self, account_id: str, delivery: str) -> bool:
        self.calls.append("reopen_sms")
        return self.reopened

    def replayed(self, account_id: str, delivery: str) -> None:
        self.calls.append("replayed")


def _tagged_bounce() -> str:
    record = fixture("bounce_permanent.json")
    record["mail"]["tags"]["kilo-delivery"] = [account_tag("2026-11#payment_failed#payment-failed:evt_1")]
    return json.dumps(record)


def test_given_a_bounced_required_alert_whose_sms_is_not_reopened_then_the_event_is_not_sent_back() -> None:
    """D422: no SMS owed (sent already, decided otherwise): nothing of the event runs again; the kept event is
    forgotten all the same."""
    marks = _Kept('{"detail":{},"detail-type":"PaymentFailed.v1"}', reopened=False)
    sent: list[str] = []
    mark_reported(_tagged_bounce(), marks, sent.append)
    assert (sent, marks.calls) == ([], ["reopen_sms", "replayed"])


@pytest.mark.parametrize(
    "event",
    [
        '{"detail":{"account_id":"acct_1","period":"2026-11","step":"remove"},"detail-type":"EnforcementStepDue.v1"}',
        '{"detail":{},"detail-type":"ForecastDue.v1"}',
        '{"detail":"x","detail-type":"PaymentFailed.v1"}',
        "not json",
    ],
)
def test_given_a_kept_event_that_is_not_a_required_alerts_then_it_is_not_sent_to_the_alerts_queue(event: str) -> None:
    """D422: the bounce role may send to the alerts queue; only a payment failed or a threshold crossed (the
    required alerts' events) goes - never an enforcement step (D366 kept other senders off the queue for it)."""
    marks = _Kept(event)
    sent: list[str] = []
    with pytest.raises(ReplayRefusedError):
        mark_reported(_tagged_bounce(), marks, sent.append)
    assert (sent, marks.calls) == ([], [])


def test_given_the_replayable_detail_types_then_they_are_the_required_alerts_contracts() -> None:
    from kilo_billing.contracts import PaymentFailedV1, UsageThresholdCrossedV1  # noqa: PLC0415

    assert {PaymentFailedV1.DETAIL_TYPE, UsageThresholdCrossedV1.DETAIL_TYPE} == REPLAYABLE


def test_given_a_delivery_tag_at_ses_limit_then_it_is_kept_and_one_longer_is_dropped_with_a_warning(
    caplog: pytest.LogCaptureFixture,
) -> None:
    """D424: SES takes a message tag value of at most 256 characters. Unpadded base64 of n bytes is 4n/3
    characters for n a multiple of 3 (192 bytes: 256), 4(n//3)+2 or +3 otherwise - 257 is no such length, so the
    boundary is 256 (kept) and 258 (193 bytes: dropped, warned). ``2026-11#budget_threshold#`` is 25 bytes."""
    from kilo_alerts.bounces import delivery_tag  # noqa: PLC0415

    kept = delivery_tag("2026-11", "budget_threshold", "k" * 167)  # 25 + 167 = 192 bytes
    assert (len(kept), account_from_tag(kept)) == (256, "2026-11#budget_threshold#" + "k" * 167)
    assert caplog.records == []

    with caplog.at_level("WARNING"):
        assert delivery_tag("2026-11", "budget_threshold", "k" * 168) == ""  # 193 bytes: 258 characters
    [warning] = caplog.records
    assert (warning.levelname, warning.tag_length) == ("WARNING", 258)
    assert "without its kilo-delivery tag" in warning.getMessage()
