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


def test_given_a_delivery_to_an_address_that_only_starts_like_a_pseudonym_when_erased_then_it_names_its_pseudonym(
    alerts_stack: AlertsStack, roles: Roles, monkeypatch: Any
) -> None:
    """An address chosen as ``erased-...`` is not a pseudonym (D239): the erasure rewrites its record too."""
    from kilo_alerts.items import delivery_to_item  # noqa: PLC0415
    from kilo_alerts.model import Channel, Delivery, Outcome  # noqa: PLC0415

    chosen = "erased-jane@example.com"
    register(alerts_stack, "acct_e", name="Jane", email=chosen)
    client = alerts_stack.stack.clients["dynamodb"]
    table = alerts_stack.stack.template.physical_name("AlertsTable")
    delivery = Delivery("acct_e", "2026-10", "budget_threshold", "b:80", Channel.EMAIL, Outcome.SENT, chosen, 1, "m-1")
    client.put_item(TableName=table, Item=delivery_to_item(delivery))

    for _ in api_environment(alerts_stack.stack, monkeypatch):
        store_members(alerts_stack.stack, "acct_e", {"owner-1": "owner"})
        with roles.acting_as("AccountApiFunction") as erasing:
            erased = call("POST", "/v1/accounts/acct_e/erase", OWNER)
        assert erasing.denied == []
        assert erased.status == 200, erased.body

    stored = alerts_items(alerts_stack)
    assert "jane" not in json.dumps(stored, default=str).lower()
    assert [(item["alert_key"], item["recipient"]) for item in stored] == [("b:80", pseudonym_of(chosen))]


def test_given_enforcement_records_and_abuse_flags_when_erased_then_no_participant_identity_is_left(
    alerts_stack: AlertsStack, roles: Roles, monkeypatch: Any
) -> None:
    """D214: the enforcement of a hard limit and the abuse flag of one identity in many calls, written by the
    alerts function's code under its role, name the participants by pseudonym only; records written before, keyed
    by the identity, are deleted by the erasure under the account API's role (DeleteItem by key). Another account's
    records are left alone. Audio-only is claimed per session (D361 amended (ao)): its key ends with the session's
    join, 13 digits after the pseudonym, and is kept; one keyed by the identity before D214 is deleted, join or not
    (D214 amended (ao))."""
    from kilo_alerts import abuse  # noqa: PLC0415
    from kilo_alerts.adapters import DynamoEnforcementLedger, DynamoOperatorLedger  # noqa: PLC0415
    from kilo_alerts.enforcement import EnforcementPolicy, restrict_account  # noqa: PLC0415
    from kilo_alerts.items import enforcement_to_item  # noqa: PLC0415
    from kilo_alerts.model import EnforcementAction, EnforcementRecord, Participant  # noqa: PLC0415
    from kilo_billing.usage_signals import OpenSession  # noqa: PLC0415
    from tests.infra.test_generated_iam import ALERTS_TABLE  # noqa: PLC0415
    from tests.unit.alerts_fakes import FakeRooms, RecordingScheduler, StaticSessions, enforcement_ports  # noqa: PLC0415

    register(alerts_stack, "acct_e", name="Ada", email=ADDRESS, phone=NUMBER, phone_verified=True)
    table = alerts_stack.stack.template.physical_name("AlertsTable")
    now_ms = 1_795_168_800_000  # 2026-11-20 10:00 UTC
    alice_joined = 1_795_168_680_000  # 09:58 = 10:00 - 120 000 ms: 13 digits; bob's join not known (0, no suffix)
    joined = {"can_publish": True, "can_subscribe": True, "sources": [], "hidden": False}
    rooms = FakeRooms({("standup", "alice.smith"): dict(joined), ("standup", "bob.jones"): dict(joined)})
    with roles.acting_as("AlertsFunction") as writing:
        client = boto3.client("dynamodb")
        sessions = StaticSessions(
            Participant("standup", "alice.smith", alice_joined), Participant("standup", "bob.jones")
        )
        ports = enforcement_ports(sessions, rooms, DynamoEnforcementLedger(client, table), RecordingScheduler())
        restrict_account("acct_e", "2026-11", "50", ports, EnforcementPolicy(), now_ms)
        calls = [OpenSession("acct_e", "alice.smith", f"room-{n}", now_ms) for n in range(4)]
        [signal] = abuse.concurrent_sessions(calls, abuse.AbuseThresholds(), now_ms)
        DynamoOperatorLedger(client, table).record("acct_e", f"abuse_{signal.kind}", signal.key, "sent", "m-1", now_ms)
    assert writing.denied == []
    assert rooms.calls == [("audio_only", "standup", "alice.smith"), ("audio_only", "standup", "bob.jones")]

    # written before D214: keyed by the identity (this account's, and another account's that must stay)
    old = [
        EnforcementRecord("acct_e", "2026-10", "standup", "alice.smith", EnforcementAction.AUDIO_ONLY, "done", 1,
                          limit="40", saved='{"can_publish": true}'),
        EnforcementRecord("acct_e", "2026-10", "standup", "alice.smith", EnforcementAction.REMOVE, "gone", 2,
                          detail="RoomService: participant alice.smith not found", limit="40"),
        EnforcementRecord("acct_e", "2026-10", "a#b", "bob.jones", EnforcementAction.REMOVE, "done", 3),
        EnforcementRecord("acct_e", "2026-10", "standup", "bob.jones", EnforcementAction.AUDIO_ONLY, "done", 9,
                          limit="40", joined_ms=1_793_000_000_000),  # an identity before its 13-digit join: deleted
        EnforcementRecord("acct_e", "2026-10", "-", "-", EnforcementAction.SCHEDULE_REMOVAL, "done", 4, limit="40"),
        EnforcementRecord("acct_o", "2026-10", "standup", "carol", EnforcementAction.REMOVE, "done", 5),
    ]  # fmt: skip
    admin = alerts_stack.stack.clients["dynamodb"]
    for record in old:
        admin.put_item(TableName=table, Item=enforcement_to_item(record))
    ledger = DynamoOperatorLedger(admin, table)
    ledger.record("acct_e", "abuse_concurrent_sessions", "concurrent_sessions:alice.smith:2026-11-14", "sent", "m", 6)
    ledger.record("acct_o", "abuse_concurrent_sessions", "concurrent_sessions:carol:2026-11-14", "sent", "m", 7)
    ledger.record("acct_e", "abuse_connection_storm", "connection_storm:2026-11-14", "sent", "m", 8)

    for _ in api_environment(alerts_stack.stack, monkeypatch):
        store_members(alerts_stack.stack, "acct_e", {"owner-1": "owner"})
        with roles.acting_as("AccountApiFunction") as erasing:
            erased = call("POST", "/v1/accounts/acct_e/erase", OWNER)
            again = call("POST", "/v1/accounts/acct_e/erase", OWNER)  # nothing left to delete: no error
        assert erasing.denied == []
        assert (erased.status, again.status) == (200, 200), erased.body
        assert ("dynamodb:DeleteItem", ALERTS_TABLE) in erasing.allowed

    stored = alerts_items(alerts_stack)
    mine = [item for item in stored if item["pk"] == "ACCOUNT#acct_e"]
    text = json.dumps(mine, default=str).lower()
    for shown in ("alice", "bob", "smith", "jones"):
        assert shown not in text, f"{shown} is still in the alerts table"
    alice, bob = pseudonym_of("alice.smith"), pseudonym_of("bob.jones")
    assert sorted(str(item["sk"]) for item in mine if not str(item["sk"]).startswith("DELIVERY#")) == [
        "ENFORCEMENT#2026-10@40#schedule_removal#-#-",  # the account's own step: no participant
        f"ENFORCEMENT#2026-11@50#audio_only#standup#{alice}#1795168680000",  # per session: kept with its join
        f"ENFORCEMENT#2026-11@50#audio_only#standup#{bob}",
        "ENFORCEMENT#2026-11@50#schedule_removal#-#-",
        f"OPERATOR#abuse_concurrent_sessions#concurrent_sessions:{alice}:2026-11-20",
        "OPERATOR#abuse_connection_storm#connection_storm:2026-11-14",
    ]
    others = sorted(str(item["sk"]) for item in stored if item["pk"] == "ACCOUNT#acct_o")
    assert others == [
        "ENFORCEMENT#2026-10#remove#standup#carol",
        "OPERATOR#abuse_concurrent_sessions#concurrent_sessions:carol:2026-11-14",
    ]
