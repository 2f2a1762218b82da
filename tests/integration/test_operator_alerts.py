"""Operator alerts on moto, read back from the operator topic (an SQS queue subscribed to it): unattributed usage and
failed payments published on the billing bus as their producers publish them -> the template's rule -> the alerts
queue -> the alerts handler; the scheduled abuse scan and the daily margin check through their handler, on sessions
and aggregates written with rating's attribute names. Figures worked by hand."""

from __future__ import annotations

import json
from datetime import UTC, datetime
from typing import Any

import boto3
import pytest

from kilo_billing.account_store import DynamoAccountDirectory
from kilo_billing.accounts import AccountProfile
from kilo_billing.contracts import (
    SOURCE_INVOICING,
    SOURCE_RATING,
    PaymentFailedV1,
    UnattributedAppUsageV1,
    UnattributedUsageV1,
)
from kilo_billing.items import to_item
from kilo_billing.publisher import EventBridgePublisher
from kilo_billing.rating import TierChange
from tests.conftest import AlertsStack, LambdaContext

NOV_START = int(datetime(2026, 11, 1, tzinfo=UTC).timestamp())


def topic_queue(stack: AlertsStack) -> str:
    sqs, sns = stack.stack.clients["sqs"], boto3.client("sns")
    url = sqs.create_queue(QueueName="operator-inbox")["QueueUrl"]
    arn = sqs.get_queue_attributes(QueueUrl=url, AttributeNames=["QueueArn"])["Attributes"]["QueueArn"]
    sns.subscribe(TopicArn=stack.stack.template.ref("OperatorAlarmTopic"), Protocol="sqs", Endpoint=arn)
    return str(url)


def inbox(stack: AlertsStack, url: str) -> list[tuple[str, str]]:
    sqs = stack.stack.clients["sqs"]
    found = []
    while True:
        answer = sqs.receive_message(QueueUrl=url, MaxNumberOfMessages=10, WaitTimeSeconds=0)
        if not answer.get("Messages"):
            return found
        for message in answer["Messages"]:
            body = json.loads(message["Body"])
            found.append((body.get("Subject", ""), body["Message"]))
            sqs.delete_message(QueueUrl=url, ReceiptHandle=message["ReceiptHandle"])


def register(stack: AlertsStack, account: str, tier: str) -> DynamoAccountDirectory:
    directory = DynamoAccountDirectory(boto3.client("dynamodb"), stack.stack.template.physical_name("UsageTable"))
    directory.register(AccountProfile(account, (TierChange(datetime(2026, 1, 1, tzinfo=UTC), tier),)))
    return directory


def publish(stack: AlertsStack, source: str, detail_type: str, detail: dict[str, Any]) -> None:
    bus = stack.stack.template.physical_name("BillingEventBus")
    EventBridgePublisher(boto3.client("events"), bus, source).publish(detail_type, detail)


def run_queue(stack: AlertsStack) -> dict[str, Any]:
    from kilo_alerts.handler import lambda_handler  # noqa: PLC0415

    return lambda_handler(stack.sqs_event(), LambdaContext(remaining_ms=60_000))


def test_given_unattributed_usage_from_rating_then_the_operator_topic_gets_it_once_per_room_and_day(
    alerts_stack: AlertsStack,
) -> None:
    url = topic_queue(alerts_stack)
    for participant in ("PA_1", "PA_1", "PA_2"):  # a redelivery, then a second participant of the same room
        event = UnattributedUsageV1(
            room_sid="RM_9", participant_sid=participant, identity="guest-7", period="2026-11", minutes=12
        )
        publish(alerts_stack, SOURCE_RATING, event.DETAIL_TYPE, event.model_dump())
    assert run_queue(alerts_stack) == {"batchItemFailures": []}
    messages = inbox(alerts_stack, url)
    assert len(messages) == 1
    subject, text = messages[0]
    assert subject == "Kilo Billing: 12 unattributed minute(s) in room RM_9"
    assert "12 minute(s) of participant PA_1 (identity 'guest-7') in room RM_9" in text
    assert "no billing account could be found" in text


def test_given_unattributed_usage_naming_an_unregistered_account_then_the_operator_alert_says_to_register_it(
    alerts_stack: AlertsStack,
) -> None:
    url = topic_queue(alerts_stack)
    event = UnattributedUsageV1(room_sid="RM_u", participant_sid="PA_1", identity="alice", period="2026-11",
                                minutes=10, unregistered_account="acct_unknown")  # fmt: skip
    publish(alerts_stack, SOURCE_RATING, event.DETAIL_TYPE, event.model_dump())
    assert run_queue(alerts_stack) == {"batchItemFailures": []}
    ((subject, text),) = inbox(alerts_stack, url)
    assert subject == "Kilo Billing: 10 unattributed minute(s) in room RM_u"
    assert "names account 'acct_unknown', which was not registered for that period" in text  # D276
    assert "If it is not registered, register it" in text


def test_given_three_failed_payments_then_the_third_flags_the_account_and_a_redelivery_adds_nothing(
    alerts_stack: AlertsStack,
) -> None:
    url = topic_queue(alerts_stack)
    register(alerts_stack, "acct-pay", "team")
    steps = ((1, "2026-11-01", 0), (2, "2026-11-08", 0), (3, "2026-11-15", 1), (3, "2026-11-15", 0))
    for n, day, expected in steps:
        event = PaymentFailedV1(
            event_id=f"payment-failed:evt_{n}",
            account_id="acct-pay",
            invoice_id="acct-pay/2026-10",
            total="29.00",
            reason="payment_failed",
            occurred_at=f"{day}T10:00:00+00:00",
        )
        publish(alerts_stack, SOURCE_INVOICING, event.DETAIL_TYPE, event.model_dump())
        assert run_queue(alerts_stack) == {"batchItemFailures": []}
        messages = inbox(alerts_stack, url)
        assert len(messages) == expected
        if expected:
            assert messages[0][0] == "Kilo Billing: abuse signal failed_payments on account acct-pay"
            assert "Observed: 3 failed payments in the last 30 days." in messages[0][1]
    # read it again from the ledger: one operator alert, sent
    table = boto3.resource("dynamodb").Table(alerts_stack.stack.template.physical_name("AlertsTable"))
    flags = [item for item in table.scan()["Items"] if str(item["sk"]).startswith("OPERATOR#abuse_failed_payments#")]
    assert [item["status"] for item in flags] == ["sent"]


@pytest.fixture
def operator_env(alerts_stack: AlertsStack, monkeypatch: pytest.MonkeyPatch) -> AlertsStack:
    from tests.conftest import _clear_caches  # noqa: PLC0415

    for key, value in alerts_stack.stack.template.function_environment("OperatorChecksFunction").items():
        if key != "POWERTOOLS_SERVICE_NAME":
            monkeypatch.setenv(key, value)
    _clear_caches()
    return alerts_stack


def put_session(stack: AlertsStack, account: str, room: str, participant: str, identity: str, start_ms: int,
                end_ms: int | None) -> None:  # fmt: skip
    """A session item with rating's attribute names (kilo_rate_usage.items.session_to_item)."""
    values: dict[str, Any] = {
        "pk": f"ROOM#{room}",
        "sk": f"SESSION#{participant}",
        "account": account,
        "identity": identity,
        "room_name": room,
        "kind": "standard",
        "start_ms": start_ms,
    }
    if end_ms is None:
        values |= {"open_account": account, "open_since": start_ms}
    else:
        values["end_ms"] = end_ms
    boto3.client("dynamodb").put_item(TableName=stack.stack.template.physical_name("UsageTable"), Item=to_item(values))


def check(name: str, at: str) -> dict[str, Any]:
    from kilo_alerts.operator_handler import lambda_handler  # noqa: PLC0415

    return lambda_handler({"check": name, "scheduled_time": at}, LambdaContext(remaining_ms=300_000))


def test_given_a_storm_and_an_identity_in_four_calls_then_the_scan_flags_and_holds_the_free_account_only(
    operator_env: AlertsStack, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("ABUSE_AUTO_HOLD", "true")
    from tests.conftest import _clear_caches  # noqa: PLC0415

    _clear_caches()
    url = topic_queue(operator_env)
    directory = register(operator_env, "free-1", "personal")
    register(operator_env, "team-1", "team")
    now_ms = int(datetime(2026, 11, 15, 12, tzinfo=UTC).timestamp() * 1000)
    for n in range(30):  # 30 connections of 20 s in the last 45 minutes
        start = now_ms - 45 * 60_000 + n * 60_000
        put_session(operator_env, "free-1", f"RM_s{n}", f"PA_s{n}", "scraper", start, start + 20_000)
    for n in range(5):  # a normal account: a few short reconnects, one person in one call
        start = now_ms - 30 * 60_000 + n * 60_000
        put_session(operator_env, "team-1", "RM_t", f"PA_t{n}", "alice", start, start + 20_000)
    put_session(operator_env, "team-1", "RM_t", "PA_open", "alice", now_ms - 60_000, None)
    for n in range(4):  # one identity in four calls at once
        put_session(operator_env, "free-1", f"RM_c{n}", f"PA_c{n}", "bot", now_ms - 600_000, None)

    assert check("abuse", "2026-11-15T12:00:00Z") == {"check": "abuse", "flagged": 2, "held": 1}
    subjects = sorted(subject for subject, _ in inbox(operator_env, url))
    assert subjects == [
        "Kilo Billing: abuse signal concurrent_sessions on account free-1",
        "Kilo Billing: abuse signal connection_storm on account free-1",
    ]
    assert directory.registered(["free-1", "team-1"])["free-1"].status == "abuse_hold"
    assert directory.registered(["team-1"])["team-1"].status == "active"
    # the next scan of the same day announces nothing again
    assert check("abuse", "2026-11-15T12:15:00Z")["flagged"] == 2
    assert inbox(operator_env, url) == []


def put_aggregate(stack: AlertsStack, account: str, counters: dict[str, int]) -> None:
    values: dict[str, Any] = {"pk": f"ACCOUNT#{account}", "sk": "PERIOD#2026-11"}
    values |= {f"c#{NOV_START}#{meter}": quantity for meter, quantity in counters.items()}
    boto3.client("dynamodb").put_item(TableName=stack.stack.template.physical_name("UsageTable"), Item=to_item(values))


def test_given_a_day_whose_revenue_is_below_livekit_cost_then_one_negative_margin_alert(
    operator_env: AlertsStack,
) -> None:
    url = topic_queue(operator_env)
    register(operator_env, "team-1", "team")
    register(operator_env, "free-1", "personal")
    # 14 Nov 00:00: Team's $29 fee x 13/30 days = $12.57 recognised, no usage: a positive first day
    assert check("margin", "2026-11-14T00:00:00Z") == {"check": "margin", "day": "2026-11-14", "negative": False}
    # by 15 Nov: the free account used its 10,000 included audio minutes (LiveKit: 10,000 x $0.0003 = $3.00),
    # revenue of the day = $29 / 30 = $0.97 (no usage charge: within the allowance) -> margin -$2.03
    put_aggregate(operator_env, "free-1", {"audio": 10_000})
    assert check("margin", "2026-11-15T00:00:00Z") == {"check": "margin", "day": "2026-11-15", "negative": True}
    messages = inbox(operator_env, url)
    assert [subject for subject, _ in messages] == ["Kilo Billing: negative margin on 2026-11-15"]
    assert "Revenue since 2026-11-14 $0.97 is below LiveKit's cost $3.00 (margin $-2.03; 2 accounts)" in messages[0][1]
    assert check("margin", "2026-11-15T06:00:00Z")["negative"] is True  # a rerun the same day: not announced again
    assert inbox(operator_env, url) == []
    # 16 Nov: nothing more used, the day's fee share $0.97 > $0.00 cost
    assert check("margin", "2026-11-16T00:00:00Z")["negative"] is False


def test_given_a_subject_longer_than_sns_takes_then_the_notifier_cuts_it_to_100_characters(
    alerts_stack: AlertsStack,
) -> None:
    """The operator alerts' subjects name an account, a room or a chain of any length: the adapter, where SNS's limit
    is, cuts them (a longer Subject is refused by SNS); the message keeps the whole."""
    from kilo_alerts.adapters import SnsOperatorNotifier  # noqa: PLC0415

    url = topic_queue(alerts_stack)
    notifier = SnsOperatorNotifier(boto3.client("sns"), alerts_stack.stack.template.ref("OperatorAlarmTopic"))
    subject = "Kilo Billing: unattributed crypto payment of 1,234.5678 USDC on " + "solana-" * 10
    notifier.notify(subject, f"The whole subject: {subject}\n")

    cut = "Kilo Billing: unattributed crypto payment of 1,234.5678 USDC on solana-solana-solana-solana-solana-s"
    assert len(cut) == 100
    assert inbox(alerts_stack, url) == [(cut, f"The whole subject: {subject}\n")]


def test_given_app_usage_dated_before_the_signup_from_rating_then_the_operator_hears_of_it_once_per_account_and_day(
    alerts_stack: AlertsStack,
) -> None:
    url = topic_queue(alerts_stack)
    for meter, quantity in (("messages", 1200), ("messages", 1200), ("data_transfer", 2_500_000_000)):  # a redelivery
        event = UnattributedAppUsageV1(account_id="acct_late", period="2026-11", meter=meter, quantity=quantity)
        publish(alerts_stack, SOURCE_RATING, event.DETAIL_TYPE, event.model_dump())
    assert run_queue(alerts_stack) == {"batchItemFailures": []}
    ((subject, text),) = inbox(alerts_stack, url)  # D291: one per account and day
    assert subject == "Kilo Billing: unattributed app usage of account acct_late"
    assert "dated in period 2026-11, before the account's signup period: 1,200 message(s)" in text
    assert "kept under 'unattributed', not billed" in text
