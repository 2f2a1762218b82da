"""An erased account leaves no contact detail in the alerts table (D203): alerts delivered by email and SMS
through the template's rule and the alerts handler under its generated role (AlertsFunctionRole), then the account
erased through the account API's route under its role (AccountApiFunctionRole), moto enforcing IAM; every item of the
alerts table is read back (the delivery records, the daily SMS count) and holds neither the address nor the number.
The records still tell which contact each went to, by the pseudonym D80's erasure uses (worked here with hashlib), and
a redelivery of the event sends nothing (the ledger's rows are keyed without the contact)."""

from __future__ import annotations

import hashlib
import json
from typing import Any

import boto3

from tests.account_api_support import api_environment, call, claims, store_members
from tests.conftest import AlertsStack, LambdaContext
from tests.iam.conftest import Roles
from tests.integration.test_alerts_delivery import publish, register

ADDRESS, NUMBER = "Ada.Lovelace@example.com", "+14155550100"
OWNER = claims("acct_e", "owner", user="owner-1")


def pseudonym_of(value: str) -> str:
    """D80's pseudonym, worked independently: ``erased-`` + the first 16 hex digits of sha256(account NUL value)."""
    return "erased-" + hashlib.sha256(f"acct_e\x00{value}".encode()).hexdigest()[:16]


def alerts_items(stack: AlertsStack) -> list[dict[str, Any]]:
    table = stack.stack.template.physical_name("AlertsTable")
    return list(boto3.resource("dynamodb").Table(table).scan(ConsistentRead=True)["Items"])


def test_given_alerts_sent_by_email_and_sms_when_the_account_is_erased_then_the_alerts_table_keeps_no_contact(
    alerts_stack: AlertsStack, roles: Roles, monkeypatch: Any
) -> None:
    from kilo_alerts.handler import lambda_handler  # noqa: PLC0415

    register(alerts_stack, "acct_e", name="Ada", email=ADDRESS, phone=NUMBER, phone_verified=True)
    publish(alerts_stack, "acct_e", "video", 80, "48000", "60000")
    publish(alerts_stack, "acct_e", "audio", 100, "20500", "20000")
    event = alerts_stack.sqs_event()
    assert len(event["Records"]) == 2
    with roles.acting_as("AlertsFunction") as sending:
        assert lambda_handler(event, LambdaContext(remaining_ms=60_000)) == {"batchItemFailures": []}
    assert sending.denied == []
    assert (len(alerts_stack.sent_mail()), len(alerts_stack.sent_sms())) == (2, 2)  # they did go to the contact

    for _ in api_environment(alerts_stack.stack, monkeypatch):  # the account API's environment, as deployed
        store_members(alerts_stack.stack, "acct_e", {"owner-1": "owner"})
        with roles.acting_as("AccountApiFunction") as erasing:
            erased = call("POST", "/v1/accounts/acct_e/erase", OWNER)
        assert erasing.denied == []
        assert erased.status == 200, erased.body

    stored = alerts_items(alerts_stack)
    text = json.dumps(stored, default=str).lower()
    for shown in (ADDRESS.lower(), "ada.lovelace", NUMBER, "14155550100", "4155550100"):
        assert shown not in text, f"{shown} is still in the alerts table"
    deliveries = [item for item in stored if str(item["sk"]).startswith("DELIVERY#")]
    assert sorted((item["channel"], item["status"], item["recipient"]) for item in deliveries) == [
        ("email", "sent", pseudonym_of(ADDRESS)),
        ("email", "sent", pseudonym_of(ADDRESS)),
        ("sms", "sent", pseudonym_of(NUMBER)),
        ("sms", "sent", pseudonym_of(NUMBER)),
    ]
    assert [item["sms_count"] for item in stored if str(item["sk"]).startswith("SMSDAY#")] == [2]  # the cap counts

    # the same events delivered again (the ledger's keys hold no contact): decided, nothing sent twice
    assert lambda_handler(event, LambdaContext(remaining_ms=60_000)) == {"batchItemFailures": []}
    assert (len(alerts_stack.sent_mail()), len(alerts_stack.sent_sms())) == (2, 2)


def test_given_delivery_records_written_before_they_named_a_pseudonym_when_erased_then_they_name_it_too(
    alerts_stack: AlertsStack, roles: Roles, monkeypatch: Any
) -> None:
    """Records the alerts function wrote before D203 hold the address or number, and a provider's refusal
    naming it: the erasure (under the account API's role: Query and UpdateItem on the alerts table) rewrites them."""
    from kilo_alerts.items import delivery_to_item  # noqa: PLC0415
    from kilo_alerts.model import Channel, Delivery, Outcome  # noqa: PLC0415
    from tests.infra.test_generated_iam import ALERTS_TABLE  # noqa: PLC0415

    register(alerts_stack, "acct_e", name="Ada", email=ADDRESS, phone=NUMBER, phone_verified=True)
    old = "old.ada@example.com"  # an address the account had before: its records name it
    written_before = [
        Delivery("acct_e", "2026-10", "budget_threshold", "b:80", Channel.EMAIL, Outcome.SENT, old, 1, "mail-1"),
        Delivery(
            "acct_e", "2026-10", "budget_threshold", "b:100", Channel.EMAIL, Outcome.UNDELIVERABLE, ADDRESS, 2,
            f"Email address is not verified. The following identities failed the check: {ADDRESS.upper()}",
        ),
        Delivery(
            "acct_e", "2026-11", "budget_threshold", "b:80", Channel.SMS, Outcome.UNDELIVERABLE, NUMBER, 3,
            "SNS refused the SMS: Invalid parameter: PhoneNumber Reason: 14155550100 is not valid",
        ),
        Delivery("acct_e", "2026-11", "invoice_issued", "inv-1", Channel.SMS, Outcome.SKIPPED, "", 4, "no phone number"),
    ]  # fmt: skip
    client = alerts_stack.stack.clients["dynamodb"]
    table = alerts_stack.stack.template.physical_name("AlertsTable")
    for delivery in written_before:
        client.put_item(TableName=table, Item=delivery_to_item(delivery))

    for _ in api_environment(alerts_stack.stack, monkeypatch):
        store_members(alerts_stack.stack, "acct_e", {"owner-1": "owner"})
        with roles.acting_as("AccountApiFunction") as erasing:
            erased = call("POST", "/v1/accounts/acct_e/erase", OWNER)
            again = call("POST", "/v1/accounts/acct_e/erase", OWNER)  # nothing left to rewrite: no error
        assert erasing.denied == []
        assert (erased.status, again.status) == (200, 200), erased.body
        assert {("dynamodb:Query", ALERTS_TABLE), ("dynamodb:UpdateItem", ALERTS_TABLE)} <= erasing.allowed

    stored = alerts_items(alerts_stack)
    text = json.dumps(stored, default=str).lower()
    for shown in (ADDRESS.lower(), "ada.lovelace", old, NUMBER, "14155550100"):
        assert shown not in text, f"{shown} is still in the alerts table"
    assert sorted((item["alert_key"], item.get("recipient", ""), item["detail"]) for item in stored) == [
        ("b:100", pseudonym_of(ADDRESS), "Email address is not verified. The following identities failed the check: "
         + pseudonym_of(ADDRESS)),
        ("b:80", pseudonym_of(old), "mail-1"),
        ("b:80", pseudonym_of(NUMBER), "SNS refused the SMS: Invalid parameter: PhoneNumber Reason: "
         + pseudonym_of(NUMBER) + " is not valid"),
        ("inv-1", "", "no phone number"),
    ]  # fmt: skip
    assert {item["status"] for item in stored} == {"sent", "undeliverable", "skipped"}  # nothing else rewritten
