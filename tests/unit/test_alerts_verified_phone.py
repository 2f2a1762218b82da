"""Alerts text only a verified number (D160): an account whose number was never confirmed gets email instead, also
for an alert it chose to hear about on SMS alone."""

from __future__ import annotations

from datetime import UTC, datetime

import pytest

from kilo_alerts.logic import deliver_alert
from kilo_alerts.model import Channel, Outcome
from kilo_billing.accounts import AccountProfile
from kilo_billing.rating import TierChange
from tests.fakes import InMemoryAccountDirectory
from tests.unit.alerts_fakes import InMemoryLedger, ScriptedMailer, ScriptedTexter
from tests.unit.test_alerts_logic import POLICY, T0, alert


def directory(verified: bool, sms_only: bool) -> InMemoryAccountDirectory:
    chosen = (("allowance_threshold", ("sms",)),) if sms_only else ()
    return InMemoryAccountDirectory(
        AccountProfile(
            "acct_1",
            (TierChange(datetime(2026, 1, 1, tzinfo=UTC), "team"),),
            email="ada@example.com",
            phone="+14155550100",
            phone_verified=verified,
            alert_preferences=chosen,
        )
    )


@pytest.mark.parametrize("sms_only", [False, True], ids=["email-and-sms", "sms-only"])
def test_given_an_unverified_number_then_no_sms_and_the_alert_goes_by_email(sms_only: bool) -> None:
    ledger, mailer, texter = InMemoryLedger(), ScriptedMailer(), ScriptedTexter()
    outcome = deliver_alert(alert(), directory(False, sms_only), ledger, mailer, texter, POLICY, T0)
    assert [(d.channel, d.outcome, d.detail) for d in outcome.deliveries if d.channel is Channel.SMS] == [
        (Channel.SMS, Outcome.SKIPPED, "phone number not verified")
    ]
    assert texter.sent == []
    assert [to for to, *_ in mailer.sent] == ["ada@example.com"]


@pytest.mark.parametrize("sms_only", [False, True], ids=["email-and-sms", "sms-only"])
def test_given_a_verified_number_then_the_sms_goes_and_email_only_when_chosen(sms_only: bool) -> None:
    ledger, mailer, texter = InMemoryLedger(), ScriptedMailer(), ScriptedTexter()
    deliver_alert(alert(), directory(True, sms_only), ledger, mailer, texter, POLICY, T0)
    assert [to for to, _ in texter.sent] == ["+14155550100"]
    assert len(mailer.sent) == (0 if sms_only else 1)
