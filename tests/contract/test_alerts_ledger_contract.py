"""One contract, two implementations of the alerts delivery ledger and the operator alerts' ledger: the in-memory fake and DynamoDB (moto, the
template's alerts table)."""

from __future__ import annotations

from dataclasses import replace

import pytest

from kilo_alerts.bounces import EmailMark
from kilo_alerts.model import Channel, Delivery, Held, Outcome, Reason
from kilo_alerts.ports import ClaimHeldError, DeliveryLedger, OperatorLedger
from tests.conftest import Stack
from tests.unit.alerts_fakes import InMemoryLedger, InMemoryOperatorLedger

T0 = 1_790_000_000_000
LEASE = 60_000


@pytest.fixture(params=["fake", "dynamodb"])
def ledger(request: pytest.FixtureRequest) -> DeliveryLedger:
    if request.param == "fake":
        return InMemoryLedger()
    from kilo_alerts.adapters import DynamoDeliveryLedger  # noqa: PLC0415

    stack: Stack = request.getfixturevalue("stack")
    return DynamoDeliveryLedger(stack.clients["dynamodb"], stack.template.physical_name("AlertsTable"))


def delivery(channel: Channel = Channel.EMAIL, at_ms: int = T0, key: str = "video:80") -> Delivery:
    return Delivery("org:7@x", "2026-11", "allowance_threshold", key, channel, Outcome.RETRY, "", at_ms, event_id="e1")


def test_given_nothing_then_the_first_claim_wins_and_the_second_does_not(ledger: DeliveryLedger) -> None:
    assert ledger.claim(delivery(), LEASE) == 1
    with pytest.raises(ClaimHeldError):  # the first holder is still deciding: the second retries later
        ledger.claim(delivery(at_ms=T0 + 1), LEASE)
    assert ledger.claim(delivery(Channel.SMS), LEASE) == 1  # per channel
    assert ledger.claim(delivery(key="video:100"), LEASE) == 1  # per threshold


def test_given_a_recorded_outcome_then_it_reads_back_and_is_never_claimed_again(ledger: DeliveryLedger) -> None:
    attempts = ledger.claim(delivery(), LEASE)
    sent = replace(delivery(), outcome=Outcome.SENT, recipient="a@example.com", detail="msg-1", attempts=attempts or 0)
    ledger.record(sent)
    assert ledger.claim(delivery(at_ms=T0 + 10 * LEASE), LEASE) is None
    assert ledger.deliveries("org:7@x") == [sent]
    assert ledger.deliveries("org:7@x", "2026-10") == []


def test_given_a_decision_for_a_reason_then_it_reads_back_with_its_reason(ledger: DeliveryLedger) -> None:
    """D215 reads a missing address back from the record an earlier delivery wrote: typed, not by its detail."""
    ledger.claim(delivery(), LEASE)
    skipped = delivery().because(Reason.NO_EMAIL, Outcome.SKIPPED)
    ledger.record(skipped)
    [found] = ledger.deliveries("org:7@x")
    assert (found.outcome, found.reason, found.detail) == (Outcome.SKIPPED, Reason.NO_EMAIL, "no email address")


def test_given_a_pending_claim_then_the_error_names_a_held_claim(ledger: DeliveryLedger) -> None:
    ledger.claim(delivery(), LEASE)
    with pytest.raises(ClaimHeldError) as raised:
        ledger.claim(delivery(at_ms=T0 + 1), LEASE)
    assert (raised.value.held, str(raised.value)) == (Held.CLAIM, "claimed by another delivery, not decided yet")


@pytest.mark.parametrize(
    ("detail", "reason"),
    [("no email address", Reason.NO_EMAIL), ("not chosen for this alert", None), ("msg-1", None)],
)
def test_given_a_record_written_before_reasons_were_kept_then_a_missing_address_is_read_from_its_detail(
    stack: Stack, detail: str, reason: Reason | None
) -> None:
    """A record of before (no ``reason`` attribute: the table keeps records 400 days) still sends a required alert's
    SMS at a redelivery (D215): its missing address is read by the text it was written with."""
    from kilo_alerts.adapters import DynamoDeliveryLedger  # noqa: PLC0415

    client, table = stack.clients["dynamodb"], stack.template.physical_name("AlertsTable")
    outcome = Outcome.SENT if detail == "msg-1" else Outcome.SKIPPED
    client.put_item(
        TableName=table,
        Item={
            "pk": {"S": "ACCOUNT#org:7@x"},
            "sk": {"S": "DELIVERY#2026-11#allowance_threshold#video:80#email"},
            "account_id": {"S": "org:7@x"}, "period": {"S": "2026-11"}, "kind": {"S": "allowance_threshold"},
            "alert_key": {"S": "video:80"}, "channel": {"S": "email"}, "status": {"S": outcome.value},
            "recipient": {"S": ""}, "at_ms": {"N": str(T0)}, "detail": {"S": detail}, "event_id": {"S": "e1"},
            "attempts": {"N": "1"},
        },
    )  # fmt: skip
    [found] = DynamoDeliveryLedger(client, table).deliveries("org:7@x")
    assert (found.outcome, found.detail, found.reason) == (outcome, detail, reason)


def test_given_a_released_claim_then_it_is_claimed_again_with_the_next_attempt(ledger: DeliveryLedger) -> None:
    ledger.claim(delivery(), LEASE)
    ledger.release(replace(delivery(), detail="Throttling"))
    assert ledger.claim(delivery(at_ms=T0 + 5), LEASE) == 2


def test_given_a_stale_claim_then_it_is_taken_over_after_the_lease_only(ledger: DeliveryLedger) -> None:
    ledger.claim(delivery(), LEASE)
    with pytest.raises(ClaimHeldError):  # pending within the lease: not decided, so not a duplicate either
        ledger.claim(delivery(at_ms=T0 + LEASE), LEASE)
    assert ledger.claim(delivery(at_ms=T0 + LEASE + 1), LEASE) == 2


def test_given_a_claim_left_by_a_crash_then_the_queues_redelivery_sends_the_alert(ledger: DeliveryLedger) -> None:
    """The Lambda claimed the email and died before SES answered; SQS hands the record back after the alerts queue's
    360 s visibility timeout, past the 5-minute lease (the settings' default): it is taken over and sent."""
    from kilo_alerts.logic import DeliveryPolicy, deliver_alert  # noqa: PLC0415
    from kilo_alerts.settings import AlertSettings  # noqa: PLC0415
    from tests.unit.alerts_fakes import ScriptedMailer, ScriptedTexter  # noqa: PLC0415
    from tests.unit.test_alerts_logic import alert, directory  # noqa: PLC0415

    lease = (AlertSettings.model_fields["claim_lease_minutes"].default or 0) * 60_000
    assert lease == 300_000
    crashed = alert()
    ledger.claim(Delivery("acct_1", "2026-11", crashed.kind, crashed.key, Channel.EMAIL, Outcome.RETRY, "", T0), lease)
    mailer, texter = ScriptedMailer(), ScriptedTexter()
    outcome = deliver_alert(
        alert(),
        directory(),
        ledger,
        mailer,
        texter,
        DeliveryPolicy("https://x/prefs", lease, dashboard_url="https://dash.example/"),
        T0 + 360_000,
    )
    assert outcome.count(Outcome.SENT) == 2
    assert (len(mailer.sent), len(texter.sent)) == (1, 1)
    email = {d.channel: d for d in ledger.deliveries("acct_1")}[Channel.EMAIL]
    assert (email.outcome, email.attempts) == (Outcome.SENT, 2)


def test_given_a_daily_sms_cap_then_it_counts_per_account_and_utc_day_and_gives_back(ledger: DeliveryLedger) -> None:
    assert [ledger.take_sms("org:7@x", "2026-11-20", 2, T0) for _ in range(3)] == [True, True, False]
    assert ledger.take_sms("org:7@x", "2026-11-21", 2, T0)  # the next day counts afresh
    assert ledger.take_sms("org:8@x", "2026-11-20", 2, T0)  # another account
    ledger.give_back_sms("org:7@x", "2026-11-20")  # one was not sent after all
    assert ledger.take_sms("org:7@x", "2026-11-20", 2, T0)
    assert not ledger.take_sms("org:7@x", "2026-11-20", 2, T0)
    assert ledger.deliveries("org:7@x") == []  # the counts are not deliveries


# --- the operator alerts' ledger ------------------------------------------------------------------------------------


@pytest.fixture(params=["fake", "dynamodb"])
def operator_ledger(request: pytest.FixtureRequest) -> OperatorLedger:
    if request.param == "fake":
        return InMemoryOperatorLedger()
    from kilo_alerts.adapters import DynamoOperatorLedger  # noqa: PLC0415

    stack: Stack = request.getfixturevalue("stack")
    return DynamoOperatorLedger(stack.clients["dynamodb"], stack.template.physical_name("AlertsTable"))


def test_given_an_operator_claim_pending_then_it_is_held_within_its_lease_and_taken_over_after(
    operator_ledger: OperatorLedger,
) -> None:
    assert operator_ledger.claim("acct_1", "abuse_x", "k1", T0, LEASE)
    with pytest.raises(ClaimHeldError):  # pending within the lease: not decided, so not a duplicate either
        operator_ledger.claim("acct_1", "abuse_x", "k1", T0 + LEASE, LEASE)
    assert operator_ledger.claim("acct_1", "abuse_x", "k2", T0 + 1, LEASE)  # per key
    assert operator_ledger.claim("acct_1", "abuse_x", "k1", T0 + LEASE + 1, LEASE)  # stale: taken over
    operator_ledger.record("acct_1", "abuse_x", "k1", "sent", "msg-1", T0 + LEASE + 2)
    assert not operator_ledger.claim("acct_1", "abuse_x", "k1", T0 + 100 * LEASE, LEASE)  # decided: a duplicate
    operator_ledger.release("acct_1", "abuse_x", "k2", "Throttling", T0 + 3)
    assert operator_ledger.claim("acct_1", "abuse_x", "k2", T0 + 4, LEASE)  # released: claimed again at once


def test_given_an_operator_alert_whose_delivery_crashed_then_the_queues_redelivery_announces_it(
    operator_ledger: OperatorLedger,
) -> None:
    """An unattributed-usage event on the alerts queue: the Lambda claimed the operator alert and died before the
    topic answered. Within the lease the record is failed for retry (not acknowledged as a duplicate); SQS hands it
    back after the queue's 360 s visibility timeout, past the claim lease the alerts function uses: announced."""
    from kilo_alerts.dependencies import operator_policy  # noqa: PLC0415
    from kilo_alerts.operator import OperatorAlertFailedError, OperatorPorts, on_unattributed  # noqa: PLC0415
    from kilo_alerts.settings import AlertSettings  # noqa: PLC0415
    from tests.fakes import InMemoryAccountDirectory  # noqa: PLC0415
    from tests.unit.test_abuse_signals import NoPayments, Notifier  # noqa: PLC0415

    config = AlertSettings(
        alerts_table_name="alerts",
        usage_table_name="usage",
        alert_sender_email="alerts@kilo.example",
        alert_preferences_url="https://kilo.example/prefs",
    )
    policy = operator_policy(config, config.claim_lease_minutes * 60_000)  # as dependencies.alerts() builds it
    assert policy.lease_ms == 300_000
    event = {"room_sid": "RM_1", "participant_sid": "PA_1", "identity": "guest", "period": "2026-11", "minutes": 3}
    notifier = Notifier()
    ports = OperatorPorts(operator_ledger, notifier, InMemoryAccountDirectory(), NoPayments())
    day = "1970-01-01"
    operator_ledger.claim("", "unattributed_usage", f"{day}:RM_1", 60_000, policy.lease_ms)  # then the crash
    with pytest.raises(OperatorAlertFailedError, match="not decided"):
        on_unattributed(event, ports, policy, 60_000 + 60_000)  # a retry within the lease: failed, retried later
    assert notifier.sent == []
    announced = on_unattributed(event, ports, policy, 60_000 + 360_000)
    assert announced.outcome == "sent"
    assert len(notifier.sent) == 1


def test_given_an_address_marked_undeliverable_then_it_reads_back_and_a_second_report_keeps_the_first(
    ledger: DeliveryLedger,
) -> None:
    """D400: a bounce or complaint marks the address (by its pseudonym); a redelivered report is a no-op."""
    assert ledger.email_mark("org:7@x", "erased-0123456789abcdef") is None
    assert ledger.mark_email("org:7@x", "erased-0123456789abcdef", "bounce", "Permanent/General 5.1.1", T0) is True
    # the same report redelivered, or a later bounce: no-op (a complaint replaces it: D424, below)
    assert ledger.mark_email("org:7@x", "erased-0123456789abcdef", "bounce", "Permanent/General 5.1.1", T0) is False
    assert ledger.mark_email("org:7@x", "erased-0123456789abcdef", "bounce", "Permanent/General 5.1.2", T0 + 1) is False

    assert ledger.email_mark("org:7@x", "erased-0123456789abcdef") == EmailMark("bounce", "Permanent/General 5.1.1", T0)
    assert ledger.email_mark("org:7@x", "erased-fedcba9876543210") is None  # another address of the account
    assert ledger.email_mark("org:8", "erased-0123456789abcdef") is None  # another account
    assert ledger.deliveries("org:7@x") == []  # not a delivery record


def test_given_a_bounce_mark_lapsed_then_a_new_bounce_replaces_it_and_a_complaint_mark_never_lapses(
    ledger: DeliveryLedger,
) -> None:
    """D409: a bounce's mark acts 30 days (2,592,000,000 ms): a report 1 ms short of that keeps it, one at 30 days
    replaces it; a complaint's mark is kept by a bounce a year (31,536,000,000 ms) later."""
    days30, year = 2_592_000_000, 31_536_000_000
    assert ledger.mark_email("org:7@x", "erased-0123456789abcdef", "bounce", "Permanent/General 5.1.1", T0) is True
    assert (
        ledger.mark_email("org:7@x", "erased-0123456789abcdef", "bounce", "Permanent/General 5.1.2", T0 + days30 - 1)
        is False
    )
    assert (
        ledger.mark_email("org:7@x", "erased-0123456789abcdef", "bounce", "Permanent/General 5.1.2", T0 + days30)
        is True
    )
    assert ledger.email_mark("org:7@x", "erased-0123456789abcdef") == EmailMark(
        "bounce", "Permanent/General 5.1.2", T0 + days30
    )
    assert ledger.mark_email("org:7@x", "erased-fedcba9876543210", "complaint", "abuse", T0) is True
    assert (
        ledger.mark_email("org:7@x", "erased-fedcba9876543210", "bounce", "Permanent/General 5.1.1", T0 + year) is False
    )
    assert ledger.email_mark("org:7@x", "erased-fedcba9876543210") == EmailMark("complaint", "abuse", T0)


def test_given_a_bounce_mark_then_a_complaint_within_30_days_replaces_it_and_a_second_complaint_does_not(
    ledger: DeliveryLedger,
) -> None:
    """D424: a complaint is the stronger mark (it never lapses and SES lists it as COMPLAINT): one reported a day
    after a bounce's mark (86,400,000 ms) replaces it; a redelivered or later complaint keeps the first."""
    day = 86_400_000
    assert ledger.mark_email("org:7@x", "erased-0123456789abcdef", "bounce", "Permanent/General 5.1.1", T0) is True
    assert ledger.mark_email("org:7@x", "erased-0123456789abcdef", "complaint", "abuse", T0 + day) is True
    assert ledger.mark_email("org:7@x", "erased-0123456789abcdef", "complaint", "fraud", T0 + 2 * day) is False
    assert ledger.email_mark("org:7@x", "erased-0123456789abcdef") == EmailMark("complaint", "abuse", T0 + day)
