"""The daily SMS cap per account (kilo_alerts.logic.deliver_alert): however many alerts rating emits - e.g. a budget
amount edited again and again, each amount a new scope whose thresholds are all announced again (D124) - one account
gets at most ``sms_per_day`` SMS a UTC day; every alert still goes out by email."""

from __future__ import annotations

from datetime import UTC, datetime
from decimal import Decimal

import pytest

from kilo_alerts.catalogue import alert_from_event
from kilo_alerts.logic import DeliveryPolicy, deliver_alert
from kilo_alerts.model import Alert, Channel, Outcome
from kilo_billing.accounts import AccountProfile, TierChange
from kilo_billing.contracts import UsageThresholdCrossedV1, limit_scope
from tests.fakes import InMemoryAccountDirectory
from tests.unit.alerts_fakes import InMemoryLedger, ScriptedMailer, ScriptedTexter

PERCENTS = (80, 100, 200, 300, 400, 500, 600, 700, 800, 1000)  # each >= 80 %: SMS by default
T0 = int(datetime(2026, 11, 20, 9, 0, tzinfo=UTC).timestamp() * 1000)
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
    policy = DeliveryPolicy("https://x/prefs", sms_per_day=10)
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
    policy = DeliveryPolicy("https://x/prefs", sms_per_day=1)
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
