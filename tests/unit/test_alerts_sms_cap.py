"""The daily SMS cap per account (kilo_alerts.logic.deliver_alert): however many alerts rating emits - e.g. a budget
amount edited again and again, each amount a new scope whose thresholds are all announced again (D124) - one account
gets at most ``sms_per_day`` SMS a UTC day; every alert still goes out by email."""

from __future__ import annotations

import hashlib
from datetime import UTC, datetime
from decimal import Decimal

import pytest

from kilo_alerts.catalogue import alert_from_event
from kilo_alerts.logic import DeliveryPolicy, deliver_alert
from kilo_alerts.model import Alert, Channel, Delivery, Outcome
from kilo_alerts.ports import SendFailedError, SendRefusedError
from kilo_billing.accounts import AccountProfile, TierChange
from kilo_billing.contracts import UsageThresholdCrossedV1, limit_scope
from tests.fakes import InMemoryAccountDirectory
from tests.unit.alerts_fakes import InMemoryLedger, ScriptedMailer, ScriptedTexter

PERCENTS = (80, 100, 200, 300, 400, 500, 600, 700, 800, 1000)  # each >= 80 %: SMS by default
T0 = int(datetime(2026, 11, 20, 9, 0, tzinfo=UTC).timestamp() * 1000)
DASHBOARD = "https://dash.example/"
POLICY = DeliveryPolicy("https://x/prefs", dashboard_url=DASHBOARD)
# the records name the contact by its pseudonym only (D203): sha256("acct_p" NUL value), 16 hex digits
EMAIL_REF = "erased-" + hashlib.sha256(b"acct_p\x00p@example.com").hexdigest()[:16]
PHONE_REF = "erased-" + hashlib.sha256(b"acct_p\x00+14155550123").hexdigest()[:16]
DIRECTORY = InMemoryAccountDirectory(
    AccountProfile(
        "acct_p",
        (TierChange(datetime(2026, 1, 1, tzinfo=UTC), "team"),),
        email="p@example.com",
        phone="+14155550123",
        phone_verified=True,
    )
)


def crossing(budget: Decimal, percent: int) -> Alert:
    event = UsageThresholdCrossedV1(
        event_id=f"b{budget}:{percent}", account_id="acct_p", period="2026-11", meter="budget",
        threshold_percent=percent, used="29.00", limit=str(budget), occurred_at="2026-11-20T09:00:00+00:00",
        scope=limit_scope(budget),
    )  # fmt: skip
    return alert_from_event(UsageThresholdCrossedV1.DETAIL_TYPE, event.model_dump())


def pumped(cents: int) -> list[Alert]:
    """What rating announces when the budget is set to ``cents``: the $29.00 fee passes all ten percentages."""
    return [crossing(Decimal(cents) / 100, percent) for percent in PERCENTS]


def test_given_five_budget_edits_then_fifty_emails_but_only_the_days_cap_of_sms() -> None:
    ledger, mailer, texter = InMemoryLedger(), ScriptedMailer(), ScriptedTexter()
    policy = DeliveryPolicy("https://x/prefs", dashboard_url=DASHBOARD, sms_per_day=10)
    outcomes = [
        deliver_alert(alert, DIRECTORY, ledger, mailer, texter, policy, T0 + index * 1000)
        for index, alert in enumerate(a for cents in range(1, 6) for a in pumped(cents))
    ]
    assert (len(outcomes), len(mailer.sent), len(texter.sent)) == (50, 50, 10)
    capped = [d for o in outcomes for d in o.deliveries if d.channel is Channel.SMS and d.outcome is Outcome.SKIPPED]
    assert len(capped) == 40
    assert capped[0].detail == "the account's SMS cap of 10 a day (UTC) is reached; email is not capped"

    # the next UTC day the account can be texted again (a new budget amount, ten new crossings)
    next_day = T0 + 86_400_000
    later = [deliver_alert(a, DIRECTORY, ledger, mailer, texter, policy, next_day) for a in pumped(6)]
    assert sum(o.count(Outcome.SENT) for o in later) == 20  # ten emails, ten SMS
    assert len(texter.sent) == 20


def test_given_an_sms_failing_for_now_then_it_does_not_use_up_the_cap() -> None:
    from kilo_alerts.logic import DeliveryIncompleteError  # noqa: PLC0415
    from kilo_alerts.ports import SendFailedError  # noqa: PLC0415

    ledger, mailer, texter = InMemoryLedger(), ScriptedMailer(), ScriptedTexter(SendFailedError("Throttling"))
    policy = DeliveryPolicy("https://x/prefs", dashboard_url=DASHBOARD, sms_per_day=1)
    [first, second] = pumped(1)[:2]
    with pytest.raises(DeliveryIncompleteError):  # the email went, the SMS failed for now
        deliver_alert(first, DIRECTORY, ledger, mailer, texter, policy, T0)
    assert texter.sent == []
    deliver_alert(first, DIRECTORY, ledger, mailer, texter, policy, T0 + 1000)  # the redelivery: the one SMS
    assert len(texter.sent) == 1
    capped = deliver_alert(second, DIRECTORY, ledger, mailer, texter, policy, T0 + 2000)
    assert {d.channel: d.outcome for d in capped.deliveries} == {
        Channel.EMAIL: Outcome.SENT,
        Channel.SMS: Outcome.SKIPPED,
    }


SMS_ONLY = InMemoryAccountDirectory(
    AccountProfile(
        "acct_p",
        (TierChange(datetime(2026, 1, 1, tzinfo=UTC), "team"),),
        email="p@example.com",
        phone="+14155550123",
        phone_verified=True,
        alert_preferences=(("budget_threshold", ("sms",)),),
    )
)


def by_channel(ledger: InMemoryLedger, alert: Alert) -> dict[Channel, tuple[Outcome, str, str]]:
    return {
        d.channel: (d.outcome, d.recipient, d.detail)
        for d in ledger.deliveries("acct_p", "2026-11")
        if (d.kind, d.key) == (alert.kind, alert.key)
    }


def test_given_an_alert_chosen_by_sms_only_at_the_cap_then_it_goes_by_email_instead_once() -> None:
    ledger, mailer, texter = InMemoryLedger(), ScriptedMailer(), ScriptedTexter()
    policy = DeliveryPolicy("https://x/prefs", dashboard_url=DASHBOARD, sms_per_day=1)
    [first, second] = pumped(1)[:2]
    assert first.kind == "budget_threshold"  # the kind the account chose SMS only for
    deliver_alert(first, SMS_ONLY, ledger, mailer, texter, policy, T0)
    assert (len(texter.sent), len(mailer.sent)) == (1, 0)  # under the cap: SMS only, as chosen

    capped = deliver_alert(second, SMS_ONLY, ledger, mailer, texter, policy, T0 + 1000)
    assert {d.channel: d.outcome for d in capped.deliveries} == {
        Channel.EMAIL: Outcome.SENT,
        Channel.SMS: Outcome.SKIPPED,
    }
    assert len(texter.sent) == 1
    assert [(to, subject) for to, subject, _, _ in mailer.sent] == [("p@example.com", mailer.sent[0][1])]
    assert "budget" in mailer.sent[0][1]  # the alert's own email, not a generic notice
    cap = "the account's SMS cap of 1 a day (UTC) is reached"
    assert by_channel(ledger, second) == {
        Channel.EMAIL: (Outcome.SENT, EMAIL_REF, "mail-1"),
        Channel.SMS: (Outcome.SKIPPED, PHONE_REF, f"{cap}; sent by email instead"),
    }

    again = deliver_alert(second, SMS_ONLY, ledger, mailer, texter, policy, T0 + 2000)  # redelivered
    assert {d.outcome for d in again.deliveries} == {Outcome.DUPLICATE}
    assert (len(texter.sent), len(mailer.sent)) == (1, 1)


def test_given_the_email_instead_failing_for_now_then_the_redelivery_sends_it_once() -> None:
    from kilo_alerts.logic import DeliveryIncompleteError  # noqa: PLC0415
    from kilo_alerts.ports import SendFailedError  # noqa: PLC0415

    ledger, mailer, texter = InMemoryLedger(), ScriptedMailer(SendFailedError("Throttling")), ScriptedTexter()
    policy = DeliveryPolicy("https://x/prefs", dashboard_url=DASHBOARD, sms_per_day=1)
    [first, second] = pumped(1)[:2]
    deliver_alert(first, SMS_ONLY, ledger, mailer, texter, policy, T0)
    with pytest.raises(DeliveryIncompleteError) as failed:
        deliver_alert(second, SMS_ONLY, ledger, mailer, texter, policy, T0 + 1000)
    # neither channel is decided: the redelivery decides both again (the SMS is still capped)
    assert {d.channel: d.outcome for d in failed.value.outcome.deliveries} == {
        Channel.EMAIL: Outcome.RETRY,
        Channel.SMS: Outcome.RETRY,
    }
    assert mailer.sent == []
    redelivered = deliver_alert(second, SMS_ONLY, ledger, mailer, texter, policy, T0 + 2000)
    assert {d.channel: d.outcome for d in redelivered.deliveries} == {
        Channel.EMAIL: Outcome.SENT,
        Channel.SMS: Outcome.SKIPPED,
    }
    deliver_alert(second, SMS_ONLY, ledger, mailer, texter, policy, T0 + 3000)
    assert (len(texter.sent), len(mailer.sent)) == (1, 1)
    assert ledger.sms_days[("acct_p", "2026-11-20")] == 1


def test_given_an_sms_only_alert_under_the_cap_then_no_email() -> None:
    ledger, mailer, texter = InMemoryLedger(), ScriptedMailer(), ScriptedTexter()
    outcome = deliver_alert(
        pumped(1)[0],
        SMS_ONLY,
        ledger,
        mailer,
        texter,
        POLICY,
        T0,
    )
    assert {d.channel: d.outcome for d in outcome.deliveries} == {
        Channel.EMAIL: Outcome.SKIPPED,
        Channel.SMS: Outcome.SENT,
    }
    assert mailer.sent == []


def test_given_an_sms_only_alert_failing_for_now_then_capped_at_the_redelivery_then_it_goes_by_email() -> None:
    from kilo_alerts.logic import DeliveryIncompleteError  # noqa: PLC0415
    from kilo_alerts.ports import SendFailedError  # noqa: PLC0415

    ledger, mailer, texter = InMemoryLedger(), ScriptedMailer(), ScriptedTexter(SendFailedError("Throttling"))
    policy = DeliveryPolicy("https://x/prefs", dashboard_url=DASHBOARD, sms_per_day=1)
    [first, second] = pumped(1)[:2]
    with pytest.raises(DeliveryIncompleteError) as failed:  # the SMS failed for now: the email waits for its decision
        deliver_alert(first, SMS_ONLY, ledger, mailer, texter, policy, T0)
    assert {d.channel: d.outcome for d in failed.value.outcome.deliveries} == {
        Channel.EMAIL: Outcome.RETRY,
        Channel.SMS: Outcome.RETRY,
    }
    deliver_alert(second, SMS_ONLY, ledger, mailer, texter, policy, T0 + 1000)  # meanwhile: the day's one SMS
    redelivered = deliver_alert(first, SMS_ONLY, ledger, mailer, texter, policy, T0 + 2000)
    assert {d.channel: d.outcome for d in redelivered.deliveries} == {
        Channel.EMAIL: Outcome.SENT,
        Channel.SMS: Outcome.SKIPPED,
    }
    assert (len(texter.sent), [to for to, *_ in mailer.sent]) == (1, ["p@example.com"])


@pytest.mark.parametrize(
    ("texter", "outcome", "detail"),
    [
        (ScriptedTexter(opted_out=frozenset({"+14155550123"})), Outcome.OPTED_OUT, "the number opted out of SMS (STOP)"),
        (ScriptedTexter(*[SendRefusedError("InvalidParameter")] * 2), Outcome.UNDELIVERABLE, "SNS refused the SMS: InvalidParameter"),
    ],
)  # fmt: skip
def test_given_an_sms_only_alert_to_a_number_that_cannot_be_texted_then_the_email_instead_goes_once_retries_included(
    texter: ScriptedTexter, outcome: Outcome, detail: str
) -> None:
    from kilo_alerts.logic import DeliveryIncompleteError  # noqa: PLC0415
    from kilo_alerts.ports import SendFailedError  # noqa: PLC0415

    ledger, mailer = InMemoryLedger(), ScriptedMailer(SendFailedError("Throttling"))
    policy = DeliveryPolicy("https://x/prefs", dashboard_url=DASHBOARD)
    alert = pumped(1)[0]
    with pytest.raises(DeliveryIncompleteError) as failed:  # the email instead failed for now: both decided again
        deliver_alert(alert, SMS_ONLY, ledger, mailer, texter, policy, T0)
    assert {d.channel: d.outcome for d in failed.value.outcome.deliveries} == {
        Channel.EMAIL: Outcome.RETRY,
        Channel.SMS: Outcome.RETRY,
    }
    deliver_alert(alert, SMS_ONLY, ledger, mailer, texter, policy, T0 + 1000)
    assert by_channel(ledger, alert) == {
        Channel.EMAIL: (Outcome.SENT, EMAIL_REF, "mail-1"),
        Channel.SMS: (outcome, PHONE_REF, f"{detail}; sent by email instead"),
    }
    again = deliver_alert(alert, SMS_ONLY, ledger, mailer, texter, policy, T0 + 2000)
    assert {d.outcome for d in again.deliveries} == {Outcome.DUPLICATE}
    assert (texter.sent, len(mailer.sent)) == ([], 1)
    assert ledger.sms_days.get(("acct_p", "2026-11-20"), 0) == 0  # a refused SMS gave its count back


def test_given_the_last_delivery_while_sns_and_ses_both_fail_for_now_then_both_stay_to_retry_and_nothing_counted() -> (
    None
):
    """D179: at the last delivery an SMS failing for now goes by email instead; when that email fails for now
    too, neither is decided (the record goes to the dead-letter queue: a redrive tries both again), nothing sent."""
    from kilo_alerts.logic import DeliveryIncompleteError  # noqa: PLC0415
    from kilo_alerts.ports import SendFailedError  # noqa: PLC0415

    sms_only = InMemoryAccountDirectory(
        AccountProfile(
            "acct_p",
            (TierChange(datetime(2026, 1, 1, tzinfo=UTC), "team"),),
            email="p@example.com",
            phone="+14155550123",
            phone_verified=True,
            alert_preferences=(("budget_threshold", ("sms",)),),
        )
    )
    ledger = InMemoryLedger()
    mailer, texter = ScriptedMailer(SendFailedError("SES throttled")), ScriptedTexter(SendFailedError("Throttling"))
    policy = DeliveryPolicy("https://x/prefs", dashboard_url=DASHBOARD, sms_per_day=1)
    with pytest.raises(DeliveryIncompleteError) as failed:
        deliver_alert(pumped(1)[1], sms_only, ledger, mailer, texter, policy, T0, last_attempt=True)
    assert {d.channel: d.outcome for d in failed.value.outcome.deliveries} == {
        Channel.SMS: Outcome.RETRY,
        Channel.EMAIL: Outcome.RETRY,
    }
    assert (mailer.sent, texter.sent) == ([], [])
    # the SMS given back to the day's count: the redrive's SMS still fits the cap of one
    redriven = deliver_alert(pumped(1)[1], sms_only, ledger, ScriptedMailer(), ScriptedTexter(), policy, T0 + 1000)
    assert {d.channel: d.outcome for d in redriven.deliveries} == {
        Channel.SMS: Outcome.SENT,
        Channel.EMAIL: Outcome.SKIPPED,
    }


def test_given_the_last_delivery_after_an_earlier_one_sent_the_email_instead_then_the_sms_is_decided_without_a_second() -> (
    None
):
    """D179: a delivery crashed after the email instead was sent (its SMS row released, for now); the last
    delivery finds the email decided: nothing sent again, and the SMS's record says so (not "sent by email instead",
    which this delivery did not do)."""
    from kilo_alerts.ports import SendFailedError  # noqa: PLC0415

    sms_only = InMemoryAccountDirectory(
        AccountProfile(
            "acct_p",
            (TierChange(datetime(2026, 1, 1, tzinfo=UTC), "team"),),
            email="p@example.com",
            phone="+14155550123",
            phone_verified=True,
            alert_preferences=(("budget_threshold", ("sms",)),),
        )
    )
    alert = pumped(1)[1]
    ledger, mailer = InMemoryLedger(), ScriptedMailer()
    email_row = Delivery(
        "acct_p", alert.period, alert.kind, alert.key, Channel.EMAIL, Outcome.SENT, "p@example.com", T0, "mail-0"
    )
    assert ledger.claim(email_row, 60_000) == 1
    ledger.record(email_row)  # sent by the delivery that crashed
    policy = DeliveryPolicy("https://x/prefs", dashboard_url=DASHBOARD, sms_per_day=1)
    texter = ScriptedTexter(SendFailedError("Throttling"))
    outcome = deliver_alert(alert, sms_only, ledger, mailer, texter, policy, T0 + 1000, last_attempt=True)
    assert mailer.sent == []
    [sms] = [d for d in outcome.deliveries if d.channel is Channel.SMS]
    assert (sms.outcome, sms.detail) == (
        Outcome.UNDELIVERABLE,
        "SNS still failing for now at the event's last delivery: Throttling; the email was decided before",
    )


@pytest.mark.parametrize(
    ("mailer", "texter", "outcome"),
    [
        (  # SES names the addresses it refuses (an identity not verified in the sandbox), in any case
            ScriptedMailer(SendRefusedError("Email address is not verified. The following identities failed the "
                                            "check in region US-EAST-1: P@Example.com")),
            ScriptedTexter(SendRefusedError("Invalid parameter: PhoneNumber Reason: 14155550123 is not valid")),
            Outcome.UNDELIVERABLE,
        ),
        (  # failing for now: the released rows keep the message too
            ScriptedMailer(SendFailedError("Throttling for p@example.com")),
            ScriptedTexter(SendFailedError("Rate exceeded for +14155550123")),
            Outcome.RETRY,
        ),
    ],
)  # fmt: skip
def test_given_providers_naming_the_contact_in_their_refusal_then_the_records_name_it_by_its_pseudonym_only(
    mailer: ScriptedMailer, texter: ScriptedTexter, outcome: Outcome
) -> None:
    """D203: a provider's message kept as a record's detail has the address or number replaced by the same
    pseudonym as the record's recipient (an erasure would otherwise leave it in the alerts table for 400 days)."""
    from kilo_alerts.logic import DeliveryIncompleteError  # noqa: PLC0415

    ledger = InMemoryLedger()
    try:
        deliver_alert(
            pumped(1)[0],
            DIRECTORY,
            ledger,
            mailer,
            texter,
            POLICY,
            T0,
        )
    except DeliveryIncompleteError:
        assert outcome is Outcome.RETRY
    recorded = {d.channel: d for d in ledger.deliveries("acct_p", "2026-11")}
    assert {channel: (d.outcome, d.recipient) for channel, d in recorded.items()} == {
        Channel.EMAIL: (outcome, EMAIL_REF),
        Channel.SMS: (outcome, PHONE_REF),
    }
    assert EMAIL_REF in recorded[Channel.EMAIL].detail
    assert PHONE_REF in recorded[Channel.SMS].detail
    kept = " ".join(d.detail + d.recipient for d in recorded.values()).lower()
    assert "example.com" not in kept
    assert "4155550123" not in kept


def test_given_an_sms_only_alert_to_a_verified_premium_rate_number_of_an_allowed_region_then_it_goes_by_email() -> None:
    """A toll-fraud guard (D221 amended): +1 900 is the US by region but premium rate by type - withheld before the cap
    counts it, the reason naming its type (never the number), the alert sent by email instead."""
    premium = "+19005550100"
    directory = InMemoryAccountDirectory(
        AccountProfile(
            "acct_p",
            (TierChange(datetime(2026, 1, 1, tzinfo=UTC), "team"),),
            email="p@example.com",
            phone=premium,
            phone_verified=True,
            alert_preferences=(("budget_threshold", ("sms",)),),
        )
    )
    ledger, mailer, texter = InMemoryLedger(), ScriptedMailer(), ScriptedTexter()
    policy = DeliveryPolicy("https://x/prefs", dashboard_url=DASHBOARD, sms_regions=frozenset({"US"}))
    [alert] = pumped(1)[:1]
    deliver_alert(alert, directory, ledger, mailer, texter, policy, T0)
    assert texter.sent == []
    assert [to for to, _, _, _ in mailer.sent] == ["p@example.com"]
    withheld = (
        "the number has region US and type PREMIUM_RATE; SMS goes only to mobile numbers (libphonenumber's MOBILE, "
        "FIXED_LINE_OR_MOBILE); sent by email instead"
    )
    ref = "erased-" + hashlib.sha256(f"acct_p\x00{premium}".encode()).hexdigest()[:16]
    assert by_channel(ledger, alert) == {
        Channel.EMAIL: (Outcome.SENT, EMAIL_REF, "mail-1"),
        Channel.SMS: (Outcome.SKIPPED, ref, withheld),
    }
    assert ledger.sms_days == {}  # the cap not counted
