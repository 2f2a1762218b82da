"""A required alert (D180: the hard limit reached, a failed payment) whose email SES refuses goes once by SMS to the
account's verified number when SMS was not chosen for it (D215), on in-memory ports: sent once, also across
redeliveries and a crash between the two decisions; nothing for an alert the account may silence, an email that
went, or a number not verified."""

from __future__ import annotations

import hashlib
from dataclasses import replace
from datetime import UTC, datetime

import pytest

from kilo_alerts.bounces import EmailMark
from kilo_alerts.catalogue import alert_from_event, hard_limit_enforced
from kilo_alerts.logic import DeliveryIncompleteError, DeliveryPolicy, deliver_alert
from kilo_alerts.model import Alert, Channel, Delivery, Outcome, Reason, Severity
from kilo_alerts.ports import SendingPausedError
from kilo_billing.accounts import AccountProfile
from kilo_billing.contracts import UsageThresholdCrossedV1
from kilo_billing.rating import TierChange
from tests.fakes import InMemoryAccountDirectory
from tests.unit.alerts_fakes import InMemoryLedger, ScriptedMailer, ScriptedTexter, SendFailedError, SendRefusedError

POLICY = DeliveryPolicy("https://prefs.example/alerts", dashboard_url="https://dash.example/", lease_ms=60_000)
T0 = 1_795_168_800_000  # 2026-11-20 10:00 UTC
PHONE = "+14155550100"
REFUSED = "Email address is on the account-level suppression list"
FACTS = {
    "period_label": "November 2026", "used": "$150.00", "limit": "$150.00", "grace_minutes": "2",
    "problem": "declined", "action": "pay", "total": "$29.00", "invoice_id": "in_1", "sms_problem": "declined",
    **hard_limit_enforced("2"),
}  # fmt: skip
REQUIRED = ["budget_hard_limit", "payment_failed"]


def account(
    kind: str, *, verified: bool = True, phone: str = PHONE, chosen: tuple[str, ...] = ("email",)
) -> InMemoryAccountDirectory:
    signup = (TierChange(datetime(2026, 1, 1, tzinfo=UTC), "team"),)
    return InMemoryAccountDirectory(
        AccountProfile(
            "acct_1", signup, email="ada@example.com", phone=phone, phone_verified=verified,
            alert_preferences=((kind, chosen),),
        )
    )  # fmt: skip


def required(kind: str) -> Alert:
    return Alert(kind, "acct_1", "2026-11", "k1", Severity.HIGH, FACTS, "e1")


def decided(ledger: InMemoryLedger) -> dict[Channel, tuple[Outcome, str]]:
    return {d.channel: (d.outcome, d.detail) for d in ledger.deliveries("acct_1")}


def number_ref() -> str:
    return "erased-" + hashlib.sha256(f"acct_1\x00{PHONE}".encode()).hexdigest()[:16]


@pytest.mark.parametrize("kind", REQUIRED)
def test_given_a_required_alert_whose_email_ses_refuses_then_it_goes_once_by_sms(kind: str) -> None:
    ledger, mailer, texter = InMemoryLedger(), ScriptedMailer(SendRefusedError(REFUSED)), ScriptedTexter()
    outcome = deliver_alert(required(kind), account(kind), ledger, mailer, texter, POLICY, T0)

    assert [phone for phone, _ in texter.sent] == [PHONE]
    assert texter.sent[0][1].startswith("Kilo: ")  # the alert's own SMS text
    assert {d.channel: d.outcome for d in outcome.deliveries} == {
        Channel.EMAIL: Outcome.UNDELIVERABLE,
        Channel.SMS: Outcome.SENT,
    }
    assert decided(ledger) == {
        Channel.EMAIL: (Outcome.UNDELIVERABLE, REFUSED),
        Channel.SMS: (Outcome.SENT, "sms-1; sent instead of the email SES refused"),
    }
    [sms] = [d for d in ledger.deliveries("acct_1") if d.channel is Channel.SMS]
    assert sms.recipient == number_ref()  # by its pseudonym only (D203)
    assert ledger.sms_days == {("acct_1", "2026-11-20"): 1}  # counted against the day's cap

    # delivered again (the queue, or the publisher's retry): both decided, nothing sent
    again = deliver_alert(required(kind), account(kind), ledger, ScriptedMailer(), texter, POLICY, T0 + 1_000)
    assert {d.outcome for d in again.deliveries} == {Outcome.DUPLICATE}
    assert len(texter.sent) == 1


def budget_alert() -> Alert:
    """100 % of the budget, as rating announces it (high severity, but an alert the account may silence)."""
    found = alert_from_event(
        UsageThresholdCrossedV1.DETAIL_TYPE,
        {
            "event_id": "threshold:acct_1:2026-11:budget:100", "account_id": "acct_1", "period": "2026-11",
            "meter": "budget", "threshold_percent": 100, "used": "100", "limit": "100",
            "occurred_at": "2026-11-20T10:00:00+00:00",
        },
    )  # fmt: skip
    assert found.severity is Severity.HIGH
    return found


def test_given_refused_emails_then_only_a_required_alert_not_chosen_for_sms_with_a_verified_number_adds_one() -> None:
    refused, went = SendRefusedError(REFUSED), None
    cases = {
        "hard limit, email only, verified number": (required("budget_hard_limit"), account("budget_hard_limit"), refused),
        "budget (may be silenced), email only": (budget_alert(), account("budget_threshold"), refused),
        "hard limit, the email went": (required("budget_hard_limit"), account("budget_hard_limit"), went),
        "hard limit, number not verified (D160)": (
            required("budget_hard_limit"), account("budget_hard_limit", verified=False), refused,
        ),
        "failed payment, no number": (required("payment_failed"), account("payment_failed", phone="", verified=False),
                                      refused),
        "hard limit, SMS chosen too": (
            required("budget_hard_limit"), account("budget_hard_limit", chosen=("email", "sms")), refused,
        ),
    }  # fmt: skip
    sms: dict[str, tuple[Outcome, str]] = {}
    texted: dict[str, int] = {}
    for case, (alert, profile, failure) in cases.items():
        ledger, texter = InMemoryLedger(), ScriptedTexter()
        mailer = ScriptedMailer(failure) if failure is not None else ScriptedMailer()
        deliver_alert(alert, profile, ledger, mailer, texter, POLICY, T0)
        sms[case], texted[case] = decided(ledger)[Channel.SMS], len(texter.sent)
    assert sms == {
        "hard limit, email only, verified number": (Outcome.SENT, "sms-1; sent instead of the email SES refused"),
        "budget (may be silenced), email only": (Outcome.SKIPPED, "not chosen for this alert"),
        "hard limit, the email went": (Outcome.SKIPPED, "not chosen for this alert"),
        "hard limit, number not verified (D160)": (Outcome.SKIPPED, "not chosen for this alert"),
        "failed payment, no number": (Outcome.SKIPPED, "not chosen for this alert"),
        "hard limit, SMS chosen too": (Outcome.SENT, "sms-1"),  # the chosen SMS, the only one
    }
    assert texted == {case: 1 if outcome is Outcome.SENT else 0 for case, (outcome, _) in sms.items()}


def test_given_the_email_failing_for_now_then_the_sms_waits_and_goes_once_when_the_retry_is_refused() -> None:
    ledger, texter = InMemoryLedger(), ScriptedTexter()
    mailer = ScriptedMailer(SendFailedError("Throttling"), SendRefusedError(REFUSED))
    with pytest.raises(DeliveryIncompleteError):
        deliver_alert(required("payment_failed"), account("payment_failed"), ledger, mailer, texter, POLICY, T0)
    assert texter.sent == []
    assert {channel: outcome for channel, (outcome, _) in decided(ledger).items()} == {
        Channel.EMAIL: Outcome.RETRY,
        Channel.SMS: Outcome.RETRY,  # released with the email: decided again at the redelivery
    }

    deliver_alert(required("payment_failed"), account("payment_failed"), ledger, mailer, texter, POLICY, T0 + 5_000)
    assert len(texter.sent) == 1
    assert decided(ledger)[Channel.SMS] == (Outcome.SENT, "sms-1; sent instead of the email SES refused")


def crashed_after_the_email(
    ledger: InMemoryLedger, probe: Alert, outcome: Outcome, detail: str, reason: Reason | None = None
) -> None:
    """The crashed delivery: the SMS claimed (waiting for the email), the email decided and recorded, then it died."""
    sms = Delivery("acct_1", "2026-11", probe.kind, probe.key, Channel.SMS, Outcome.RETRY, "", T0)
    assert ledger.claim(sms, POLICY.lease_ms) == 1
    email = replace(sms, channel=Channel.EMAIL)
    assert ledger.claim(email, POLICY.lease_ms) == 1
    ledger.record(replace(email, outcome=outcome, detail=detail, reason=reason))


def test_given_a_crash_after_the_refused_email_was_recorded_then_the_redelivery_sends_the_sms_once() -> None:
    ledger, texter = InMemoryLedger(), ScriptedTexter()
    probe = required("budget_hard_limit")
    crashed_after_the_email(ledger, probe, Outcome.UNDELIVERABLE, REFUSED)

    mailer = ScriptedMailer()
    with pytest.raises(DeliveryIncompleteError):  # within the SMS claim's lease: not decided, retried
        deliver_alert(probe, account(probe.kind), ledger, mailer, texter, POLICY, T0 + POLICY.lease_ms)
    assert texter.sent == []
    later = deliver_alert(probe, account(probe.kind), ledger, mailer, texter, POLICY, T0 + POLICY.lease_ms + 1)
    assert {d.channel: d.outcome for d in later.deliveries} == {
        Channel.EMAIL: Outcome.DUPLICATE,
        Channel.SMS: Outcome.SENT,
    }
    assert (mailer.sent, len(texter.sent)) == ([], 1)
    deliver_alert(probe, account(probe.kind), ledger, mailer, texter, POLICY, T0 + POLICY.lease_ms + 2)
    assert len(texter.sent) == 1


def test_given_sns_failing_for_now_then_the_sms_instead_is_retried_without_a_second_email() -> None:
    ledger, mailer = InMemoryLedger(), ScriptedMailer(SendRefusedError(REFUSED))
    texter = ScriptedTexter(SendFailedError("Throttling"))
    with pytest.raises(DeliveryIncompleteError):
        deliver_alert(required("budget_hard_limit"), account("budget_hard_limit"), ledger, mailer, texter, POLICY, T0)
    assert texter.sent == []
    assert ledger.sms_days == {("acct_1", "2026-11-20"): 0}  # given back
    deliver_alert(
        required("budget_hard_limit"), account("budget_hard_limit"), ledger, mailer, texter, POLICY, T0 + 5_000
    )
    assert len(texter.sent) == 1
    assert (mailer.failures, mailer.sent) == ([], [])  # the email was asked once
    assert decided(ledger) == {
        Channel.EMAIL: (Outcome.UNDELIVERABLE, REFUSED),
        Channel.SMS: (Outcome.SENT, "sms-1; sent instead of the email SES refused"),
    }


def test_given_the_number_opted_out_then_the_sms_instead_is_recorded_opted_out() -> None:
    ledger, mailer = InMemoryLedger(), ScriptedMailer(SendRefusedError(REFUSED))
    texter = ScriptedTexter(opted_out=frozenset({PHONE}))
    deliver_alert(required("payment_failed"), account("payment_failed"), ledger, mailer, texter, POLICY, T0)
    assert texter.sent == []
    assert decided(ledger)[Channel.SMS] == (
        Outcome.OPTED_OUT,
        "the number opted out of SMS (STOP); the email was refused by SES",
    )


def no_email(kind: str, *, verified: bool = True) -> InMemoryAccountDirectory:
    """An account that cleared its email address (the account API's ``""``), email chosen alone for ``kind``."""
    [profile] = account(kind, verified=verified).profiles.values()
    return InMemoryAccountDirectory(replace(profile, email=""))


@pytest.mark.parametrize("kind", REQUIRED)
def test_given_a_required_alert_and_no_email_address_then_it_goes_once_by_sms_to_the_verified_number(kind: str) -> None:
    ledger, mailer, texter = InMemoryLedger(), ScriptedMailer(), ScriptedTexter()
    outcome = deliver_alert(required(kind), no_email(kind), ledger, mailer, texter, POLICY, T0)

    assert (mailer.sent, [phone for phone, _ in texter.sent]) == ([], [PHONE])
    assert {d.channel: d.outcome for d in outcome.deliveries} == {
        Channel.EMAIL: Outcome.SKIPPED,
        Channel.SMS: Outcome.SENT,
    }
    assert decided(ledger) == {
        Channel.EMAIL: (Outcome.SKIPPED, "no email address"),
        Channel.SMS: (Outcome.SENT, "sms-1; sent instead of the email: the account has no email address"),
    }
    assert ledger.sms_days == {("acct_1", "2026-11-20"): 1}

    again = deliver_alert(required(kind), no_email(kind), ledger, mailer, texter, POLICY, T0 + 1_000)
    assert {d.outcome for d in again.deliveries} == {Outcome.DUPLICATE}
    assert len(texter.sent) == 1


def test_given_no_email_address_then_neither_an_alert_the_account_may_silence_nor_an_unverified_number_gets_an_sms() -> (
    None
):
    cases = {
        "budget (may be silenced)": (budget_alert(), no_email("budget_threshold")),
        "hard limit, number not verified (D160)": (
            required("budget_hard_limit"), no_email("budget_hard_limit", verified=False),
        ),
    }  # fmt: skip
    for case, (alert, profile) in cases.items():
        ledger, texter = InMemoryLedger(), ScriptedTexter()
        deliver_alert(alert, profile, ledger, ScriptedMailer(), texter, POLICY, T0)
        assert (case, decided(ledger)) == (
            case,
            {
                Channel.EMAIL: (Outcome.SKIPPED, "no email address"),
                Channel.SMS: (Outcome.SKIPPED, "not chosen for this alert"),
            },
        )
        assert texter.sent == []


def test_given_a_crash_after_the_missing_address_was_recorded_then_the_redelivery_sends_the_sms_once() -> None:
    ledger, texter = InMemoryLedger(), ScriptedTexter()
    probe = required("payment_failed")
    crashed_after_the_email(ledger, probe, Outcome.SKIPPED, "no email address", Reason.NO_EMAIL)

    later = deliver_alert(
        probe, no_email(probe.kind), ledger, ScriptedMailer(), texter, POLICY, T0 + POLICY.lease_ms + 1
    )
    assert {d.channel: d.outcome for d in later.deliveries} == {
        Channel.EMAIL: Outcome.DUPLICATE,
        Channel.SMS: Outcome.SENT,
    }
    assert len(texter.sent) == 1


LAST = "sms-1; sent instead of the email: SES still failing for now at the event's last delivery"


@pytest.mark.parametrize("kind", REQUIRED)
def test_given_the_email_failing_for_now_at_the_last_delivery_then_the_sms_goes_once_and_the_email_stays_to_retry(
    kind: str,
) -> None:
    ledger, texter = InMemoryLedger(), ScriptedTexter()
    mailer = ScriptedMailer(SendFailedError("Throttling: Maximum sending rate exceeded"))
    with pytest.raises(DeliveryIncompleteError) as raised:  # the email: to the dead-letter queue and its alarm
        deliver_alert(required(kind), account(kind), ledger, mailer, texter, POLICY, T0, last_attempt=True)

    assert (mailer.sent, [phone for phone, _ in texter.sent]) == ([], [PHONE])
    assert {d.channel: d.outcome for d in raised.value.outcome.deliveries} == {
        Channel.EMAIL: Outcome.RETRY,
        Channel.SMS: Outcome.SENT,
    }
    assert decided(ledger) == {
        Channel.EMAIL: (Outcome.RETRY, "Throttling: Maximum sending rate exceeded"),  # released
        Channel.SMS: (Outcome.SENT, LAST),
    }

    # the dead-letter queue redriven once SES is back: the email goes, the SMS is not sent again
    again = deliver_alert(required(kind), account(kind), ledger, mailer, texter, POLICY, T0 + 60_000)
    assert {d.channel: d.outcome for d in again.deliveries} == {
        Channel.EMAIL: Outcome.SENT,
        Channel.SMS: Outcome.DUPLICATE,
    }
    assert (len(mailer.sent), len(texter.sent)) == (1, 1)


def test_given_the_email_claimed_by_another_delivery_at_the_last_delivery_then_no_sms_goes() -> None:
    """The other delivery is deciding the email (it may be sending it): nothing is known to have failed."""
    ledger, texter = InMemoryLedger(), ScriptedTexter()
    probe = required("budget_hard_limit")
    email = Delivery("acct_1", "2026-11", probe.kind, probe.key, Channel.EMAIL, Outcome.RETRY, "", T0)
    assert ledger.claim(email, POLICY.lease_ms) == 1
    with pytest.raises(DeliveryIncompleteError):
        deliver_alert(probe, account(probe.kind), ledger, ScriptedMailer(), texter, POLICY, T0 + 1_000, True)
    assert texter.sent == []
    assert decided(ledger)[Channel.SMS][0] is Outcome.RETRY  # released: decided again with the email


# --- an address on SES's suppression list (D381): SES would take the email and drop it ----------------------------


@pytest.mark.parametrize("kind", REQUIRED)
def test_given_a_required_alert_to_a_suppressed_address_then_no_email_is_sent_and_one_sms_goes(kind: str) -> None:
    """SES answers a SendEmail to an address on the account's suppression list with a message id and turns it into a
    hard bounce afterwards: the check comes first, the email is recorded undeliverable, the SMS goes (D215)."""
    ledger, texter = InMemoryLedger(), ScriptedTexter()
    mailer = ScriptedMailer(suppressed={"ada@example.com": "BOUNCE"})

    outcome = deliver_alert(required(kind), account(kind), ledger, mailer, texter, POLICY, T0)

    assert mailer.checked == ["ada@example.com"]
    assert mailer.sent == []
    assert [phone for phone, _ in texter.sent] == [PHONE]
    assert {d.channel: d.outcome for d in outcome.deliveries} == {
        Channel.EMAIL: Outcome.UNDELIVERABLE,
        Channel.SMS: Outcome.SENT,
    }
    assert decided(ledger) == {
        Channel.EMAIL: (
            Outcome.UNDELIVERABLE,
            "suppressed: the address is on SES's suppression list for the account (BOUNCE)",
        ),
        Channel.SMS: (Outcome.SENT, "sms-1; sent instead of the email: the address is on SES's suppression list"),
    }
    [email] = [d for d in ledger.deliveries("acct_1") if d.channel is Channel.EMAIL]
    assert email.reason is Reason.SUPPRESSED

    again = deliver_alert(required(kind), account(kind), ledger, ScriptedMailer(), texter, POLICY, T0 + 1_000)
    assert {d.outcome for d in again.deliveries} == {Outcome.DUPLICATE}
    assert len(texter.sent) == 1


def test_given_a_required_alert_to_an_address_not_suppressed_then_the_email_goes_and_no_sms() -> None:
    ledger, mailer, texter = (
        InMemoryLedger(),
        ScriptedMailer(suppressed={"bob@example.com": "COMPLAINT"}),
        ScriptedTexter(),
    )

    deliver_alert(required("budget_hard_limit"), account("budget_hard_limit"), ledger, mailer, texter, POLICY, T0)

    assert mailer.checked == ["ada@example.com"]
    assert [to for to, *_ in mailer.sent] == ["ada@example.com"]
    assert texter.sent == []
    assert decided(ledger) == {
        Channel.EMAIL: (Outcome.SENT, "mail-1"),
        Channel.SMS: (Outcome.SKIPPED, "not chosen for this alert"),
    }


def test_given_the_suppression_check_failing_for_now_then_the_email_is_still_sent_and_the_record_says_so() -> None:
    ledger, texter = InMemoryLedger(), ScriptedTexter()
    mailer = ScriptedMailer(check_failures=(SendFailedError("StorageUnavailableError: TooManyRequestsException"),))

    deliver_alert(required("payment_failed"), account("payment_failed"), ledger, mailer, texter, POLICY, T0)

    assert [to for to, *_ in mailer.sent] == ["ada@example.com"]
    assert texter.sent == []
    assert decided(ledger)[Channel.EMAIL] == (
        Outcome.SENT,
        "mail-1; the suppression list not checked: StorageUnavailableError: TooManyRequestsException",
    )


def test_given_an_alert_the_account_may_silence_then_its_email_is_sent_without_asking_the_suppression_list() -> None:
    """One read more per email only where an SMS can follow (the required kinds, D180)."""
    ledger, texter = InMemoryLedger(), ScriptedTexter()
    mailer = ScriptedMailer(suppressed={"ada@example.com": "BOUNCE"})

    deliver_alert(budget_alert(), account("budget_threshold"), ledger, mailer, texter, POLICY, T0)

    assert mailer.checked == []
    assert [to for to, *_ in mailer.sent] == ["ada@example.com"]


# --- SES sending paused for the account (D399): hours, not a blip -----------------------------------------------

PAUSED = "SendingPausedException: sending is paused for this account"
SENT_PAUSED = "sms-1; sent instead of the email: SES sending is paused for the account"


@pytest.mark.parametrize("kind", REQUIRED)
def test_given_a_required_alert_whose_email_ses_has_paused_then_the_sms_goes_at_once_and_the_email_stays_to_retry(
    kind: str,
) -> None:
    """Not at the event's last delivery (30 minutes later): at the first; the email is released (toward the
    dead-letter queue, redriven once sending resumes), the SMS's own row keeps it once."""
    ledger, texter = InMemoryLedger(), ScriptedTexter()
    mailer = ScriptedMailer(SendingPausedError(PAUSED), SendingPausedError(PAUSED))
    with pytest.raises(DeliveryIncompleteError) as raised:
        deliver_alert(required(kind), account(kind), ledger, mailer, texter, POLICY, T0)

    assert (mailer.sent, [phone for phone, _ in texter.sent]) == ([], [PHONE])
    assert {(d.channel, d.outcome, d.reason) for d in raised.value.outcome.deliveries} == {
        (Channel.EMAIL, Outcome.RETRY, Reason.PAUSED),
        (Channel.SMS, Outcome.SENT, None),
    }
    assert decided(ledger) == {
        Channel.EMAIL: (Outcome.RETRY, PAUSED),  # released
        Channel.SMS: (Outcome.SENT, SENT_PAUSED),
    }

    # the queue's next receive, sending still paused: no second SMS
    with pytest.raises(DeliveryIncompleteError):
        deliver_alert(required(kind), account(kind), ledger, mailer, texter, POLICY, T0 + 360_000)
    assert len(texter.sent) == 1

    # redriven once sending resumed: the email goes, the SMS is not sent again
    again = deliver_alert(required(kind), account(kind), ledger, mailer, texter, POLICY, T0 + 3_600_000)
    assert {d.channel: d.outcome for d in again.deliveries} == {
        Channel.EMAIL: Outcome.SENT,
        Channel.SMS: Outcome.DUPLICATE,
    }
    assert (len(mailer.sent), len(texter.sent)) == (1, 1)


def test_given_an_alert_the_account_may_silence_whose_email_ses_has_paused_then_no_sms_and_the_email_retries() -> None:
    ledger, texter = InMemoryLedger(), ScriptedTexter()
    mailer = ScriptedMailer(SendingPausedError(PAUSED))
    with pytest.raises(DeliveryIncompleteError) as raised:
        deliver_alert(budget_alert(), account("budget_threshold"), ledger, mailer, texter, POLICY, T0)

    assert texter.sent == []
    assert [
        (d.channel, d.outcome, d.reason) for d in raised.value.outcome.deliveries if d.channel is Channel.EMAIL
    ] == [(Channel.EMAIL, Outcome.RETRY, Reason.PAUSED)]


# --- an address SES reported bounced for good or complained about (D400) -----------------------------------------


def address_ref(address: str = "ada@example.com") -> str:
    return "erased-" + hashlib.sha256(f"acct_1\x00{address}".encode()).hexdigest()[:16]


MARKED = "undeliverable: the address bounced for good or complained (bounce: Permanent/General 5.1.1)"


def test_given_an_address_marked_undeliverable_then_an_alert_skips_its_email_and_says_why() -> None:
    ledger, texter, mailer = InMemoryLedger(), ScriptedTexter(), ScriptedMailer()
    ledger.mark_email("acct_1", address_ref(), "bounce", "Permanent/General 5.1.1", T0 - 60_000)

    outcome = deliver_alert(budget_alert(), account("budget_threshold"), ledger, mailer, texter, POLICY, T0)

    assert (mailer.sent, texter.sent) == ([], [])
    [email] = [d for d in outcome.deliveries if d.channel is Channel.EMAIL]
    assert (email.outcome, email.reason, email.detail) == (Outcome.UNDELIVERABLE, Reason.BOUNCED, MARKED)
    assert email.recipient == address_ref()


@pytest.mark.parametrize("kind", REQUIRED)
def test_given_a_required_alert_to_an_address_marked_undeliverable_then_one_sms_goes_instead(kind: str) -> None:
    ledger, texter, mailer = InMemoryLedger(), ScriptedTexter(), ScriptedMailer()
    ledger.mark_email("acct_1", address_ref(), "complaint", "abuse", T0 - 60_000)

    deliver_alert(required(kind), account(kind), ledger, mailer, texter, POLICY, T0)

    assert mailer.sent == []
    assert mailer.checked == []  # marked: SES's suppression list is not asked
    assert [phone for phone, _ in texter.sent] == [PHONE]
    assert decided(ledger)[Channel.SMS] == (
        Outcome.SENT,
        "sms-1; sent instead of the email: the address bounced for good or complained",
    )


def test_given_a_bounce_marked_in_lower_case_then_the_profile_spelling_the_address_with_capitals_gets_no_email() -> (
    None
):
    """D400: the mark is keyed by the address casefolded (the bounce handler reports SES's spelling, the profile
    keeps the account's): ``Ada@Example.com`` in the profile, ``ada@example.com`` marked."""
    ledger, texter, mailer = InMemoryLedger(), ScriptedTexter(), ScriptedMailer()
    ledger.mark_email("acct_1", address_ref("ada@example.com"), "bounce", "Permanent/General 5.1.1", T0 - 60_000)
    [profile] = account("budget_threshold").profiles.values()
    capitals = InMemoryAccountDirectory(replace(profile, email="Ada@Example.com"))

    outcome = deliver_alert(budget_alert(), capitals, ledger, mailer, texter, POLICY, T0)

    assert mailer.sent == []
    [email] = [d for d in outcome.deliveries if d.channel is Channel.EMAIL]
    assert (email.outcome, email.reason) == (Outcome.UNDELIVERABLE, Reason.BOUNCED)
    assert email.recipient == address_ref("Ada@Example.com")  # the record names the address as the profile has it


def test_given_the_bounce_mark_cannot_be_read_then_the_email_is_sent_and_its_record_says_so() -> None:
    """D400: like the suppression check (D381), a mark that cannot be read now holds no alert back: the email goes,
    its record says the mark was not checked (the address by its pseudonym only)."""
    from kilo_alerts.ports import MarkUnreadError  # noqa: PLC0415

    class Unreadable(InMemoryLedger):
        def email_mark(self, account_id: str, recipient: str) -> EmailMark | None:
            raise MarkUnreadError("ThrottledError: ada@example.com's mark")

    ledger, texter, mailer = Unreadable(), ScriptedTexter(), ScriptedMailer()

    outcome = deliver_alert(budget_alert(), account("budget_threshold"), ledger, mailer, texter, POLICY, T0)

    assert [to for to, *_ in mailer.sent] == ["ada@example.com"]
    [email] = [d for d in outcome.deliveries if d.channel is Channel.EMAIL]
    assert email.outcome is Outcome.SENT
    assert email.detail.endswith(f"; the bounce mark not checked: ThrottledError: {address_ref()}'s mark")


def test_given_the_account_changed_its_address_after_a_bounce_then_the_new_one_is_mailed_with_the_account_tag() -> None:
    ledger, texter, mailer = InMemoryLedger(), ScriptedTexter(), ScriptedMailer()
    ledger.mark_email("acct_1", address_ref("old@example.com"), "bounce", "Permanent/General 5.1.1", T0 - 60_000)

    outcome = deliver_alert(budget_alert(), account("budget_threshold"), ledger, mailer, texter, POLICY, T0)

    assert [d.outcome for d in outcome.deliveries if d.channel is Channel.EMAIL] == [Outcome.SENT]
    assert [to for to, *_ in mailer.sent] == ["ada@example.com"]
    assert mailer.accounts == ["acct_1"]  # tagged: its bounce would name the account


DAY_MS = 86_400_000


@pytest.mark.parametrize("age_days", [29, 30, 365])
def test_given_a_bounce_mark_then_it_keeps_email_away_until_the_operator_clears_it(age_days: int) -> None:
    """D409 amended (D423): a permanent bounce's mark does not lapse - SES's account-level suppression list keeps
    the address too (until ``DeleteSuppressedDestination``), so an email sent after a lapse would be dropped by SES
    and recorded ``sent``. 29, 30 and 365 days on, the email is skipped; the operator's ``clear-mark`` ends both."""
    ledger, texter, mailer = InMemoryLedger(), ScriptedTexter(), ScriptedMailer()
    ledger.mark_email("acct_1", address_ref(), "bounce", "Permanent/General 5.1.1", T0 - age_days * DAY_MS)

    outcome = deliver_alert(budget_alert(), account("budget_threshold"), ledger, mailer, texter, POLICY, T0)

    [email] = [d for d in outcome.deliveries if d.channel is Channel.EMAIL]
    assert (len(mailer.sent), email.outcome, email.reason) == (0, Outcome.UNDELIVERABLE, Reason.BOUNCED)


def test_given_a_complaint_mark_a_year_old_then_the_address_still_gets_no_email() -> None:
    """D409: a complaint's mark does not lapse (the person said they do not want our mail)."""
    ledger, texter, mailer = InMemoryLedger(), ScriptedTexter(), ScriptedMailer()
    ledger.mark_email("acct_1", address_ref(), "complaint", "abuse", T0 - 365 * DAY_MS)

    outcome = deliver_alert(budget_alert(), account("budget_threshold"), ledger, mailer, texter, POLICY, T0)

    assert mailer.sent == []
    [email] = [d for d in outcome.deliveries if d.channel is Channel.EMAIL]
    assert (email.outcome, email.reason) == (Outcome.UNDELIVERABLE, Reason.BOUNCED)


def test_given_an_email_sent_then_ses_gets_the_delivery_tag_and_the_record_keeps_the_message_id_apart() -> None:
    """D408: the email's send names its delivery record (``<period>#<kind>#<key>``, the tag the bounce comes back
    with) and the record keeps SES's message id in its own field."""
    ledger, texter, mailer = InMemoryLedger(), ScriptedTexter(), ScriptedMailer()

    outcome = deliver_alert(budget_alert(), account("budget_threshold"), ledger, mailer, texter, POLICY, T0)

    [email] = [d for d in outcome.deliveries if d.channel is Channel.EMAIL]
    assert (email.outcome, email.detail, email.message_id) == (Outcome.SENT, "mail-1", "mail-1")
    assert mailer.deliveries == [
        "MjAyNi0xMSNidWRnZXRfdGhyZXNob2xkI2J1ZGdldDoxMDA"  # base64url("2026-11#budget_threshold#budget:100"), no "="
    ]
