"""The alerts handler counts an email SES would not send because our sending is paused (D399): the
``AlertsSendingPaused`` metric (alarmed at the first, tests/infra), besides the retry it also is."""

from __future__ import annotations

from dataclasses import replace

import pytest

from kilo_alerts import handler
from kilo_alerts.logic import AlertOutcome
from kilo_alerts.model import Alert, Channel, Delivery, Outcome, Reason, Severity
from kilo_billing.observability import Metric

T0 = 1_795_168_800_000  # 2026-11-20 10:00 UTC


def test_given_an_email_paused_and_an_sms_sent_then_one_paused_one_retried_one_sent_are_counted(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    counted: dict[Metric, int] = {}
    monkeypatch.setattr(handler, "count", lambda _service, name, value=1: counted.update({name: value}))
    alert = Alert("payment_failed", "acct_1", "2026-11", "k1", Severity.HIGH, {}, "e1")
    email = Delivery.pending(alert, Channel.EMAIL, T0)
    paused = email.because(Reason.PAUSED, Outcome.RETRY)
    sent = replace(Delivery.pending(alert, Channel.SMS, T0), outcome=Outcome.SENT, detail="sms-1")

    handler._count(AlertOutcome(alert, (paused, sent)))

    assert counted[Metric.ALERTS_SENDING_PAUSED] == 1
    assert counted[Metric.ALERT_SEND_RETRIED] == 1
    assert counted[Metric.ALERTS_SENT] == 1


def test_given_an_email_to_an_address_marked_undeliverable_then_the_skip_is_counted_apart(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """D400: ``AlertsEmailBounced`` counts emails not sent to a marked address, and only it: ``AlertsUndeliverable``
    (alarmed at 10 an hour: invalid numbers, rejected addresses, an unverified sender) counts the refusals for good
    beside it - here one SMS to an invalid number - and not the marked addresses, which every month's alerts meet."""
    counted: dict[Metric, int] = {}
    monkeypatch.setattr(handler, "count", lambda _service, name, value=1: counted.update({name: value}))
    alert = Alert("budget_threshold", "acct_1", "2026-11", "k1", Severity.HIGH, {}, "e1")
    bounced = Delivery.pending(alert, Channel.EMAIL, T0).because(Reason.BOUNCED, Outcome.UNDELIVERABLE)
    refused = replace(
        Delivery.pending(alert, Channel.SMS, T0), outcome=Outcome.UNDELIVERABLE, detail="InvalidParameter"
    )

    handler._count(AlertOutcome(alert, (bounced, refused)))

    assert (counted[Metric.ALERTS_EMAIL_BOUNCED], counted[Metric.ALERTS_UNDELIVERABLE]) == (1, 1)


def test_given_a_required_alert_whose_address_ses_suppresses_then_the_skip_is_counted_on_its_own_metric(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """D410: an email not sent because SES's account-level suppression list holds its address (``Reason.SUPPRESSED``,
    D381) is the account's own mailbox like a marked one: counted ``AlertsEmailSuppressed`` (not alarmed), not
    ``AlertsUndeliverable``, whose alarm (10 an hour) means refusals for good of ours - here one SMS to an invalid
    number beside it."""
    counted: dict[Metric, int] = {}
    monkeypatch.setattr(handler, "count", lambda _service, name, value=1: counted.update({name: value}))
    alert = Alert("payment_failed", "acct_1", "2026-11", "k1", Severity.HIGH, {}, "e1")
    suppressed = Delivery.pending(alert, Channel.EMAIL, T0).because(Reason.SUPPRESSED, Outcome.UNDELIVERABLE)
    refused = replace(
        Delivery.pending(alert, Channel.SMS, T0), outcome=Outcome.UNDELIVERABLE, detail="InvalidParameter"
    )

    handler._count(AlertOutcome(alert, (suppressed, refused)))

    assert counted[Metric.ALERTS_UNDELIVERABLE] == 1
    assert counted[Metric("AlertsEmailSuppressed")] == 1
    assert counted[Metric.ALERTS_EMAIL_BOUNCED] == 0
