"""The delivery logic with in-memory ports: claims, retries of one channel, leases, unregistered accounts."""

from __future__ import annotations

import json
from dataclasses import replace
from datetime import UTC, datetime
from decimal import Decimal

import pytest

from kilo_alerts.catalogue import alert_from_event, hard_limit_enforced
from kilo_alerts.enforcement import EnforcementIncompleteError
from kilo_alerts.logic import (
    ENFORCEMENT_STEP,
    AlertPorts,
    AlertsPolicy,
    DeliveryIncompleteError,
    DeliveryPolicy,
    EventIncompleteError,
    deliver_alert,
    handle_event,
)
from kilo_alerts.model import Alert, Channel, Delivery, EnforcementAction, Outcome, Participant, Severity
from kilo_alerts.ports import RoomControlFailedError
from kilo_billing.accounts import AccountProfile, pseudonym
from kilo_billing.aws import StorageUnavailableError
from kilo_billing.budgets import BudgetChange, apply_budget
from kilo_billing.contracts import HardLimitStillReachedV1, UsageThresholdCrossedV1, limit_scope
from kilo_billing.rating import TierChange
from tests.account_api_fakes import InMemoryMonthToDate
from tests.fakes import InMemoryAccountDirectory, InMemoryEntitlements
from tests.unit.alerts_fakes import (
    FakeRooms,
    InMemoryEnforcementLedger,
    InMemoryLedger,
    RecordingScheduler,
    ScriptedMailer,
    ScriptedTexter,
    SendFailedError,
    SendRefusedError,
    StaticSessions,
)

POLICY = DeliveryPolicy("https://prefs.example/alerts", dashboard_url="https://dash.example/", lease_ms=60_000)
T0 = 1_790_000_000_000


def alert(account: str = "acct_1", percent: int = 100) -> Alert:
    return alert_from_event(
        UsageThresholdCrossedV1.DETAIL_TYPE,
        {
            "event_id": f"threshold:{account}:2026-11:video:{percent}",
            "account_id": account,
            "period": "2026-11",
            "meter": "video",
            "threshold_percent": percent,
            "used": "60000",
            "limit": "60000",
            "occurred_at": "2026-11-20T10:00:00+00:00",
        },
    )


def directory(phone: str = "+14155550100") -> InMemoryAccountDirectory:
    signup = (TierChange(datetime(2026, 1, 1, tzinfo=UTC), "team"),)
    return InMemoryAccountDirectory(
        AccountProfile("acct_1", signup, name="Ada", email="ada@example.com", phone=phone, phone_verified=True)
    )


def outcomes(ledger: InMemoryLedger) -> dict[Channel, Outcome]:
    return {d.channel: d.outcome for d in ledger.deliveries("acct_1")}


def _hard_limit_50_crossed() -> UsageThresholdCrossedV1:
    """November's bill $50.40 crossing the $50 hard limit at 10:00 (50.40 / 50 = 100.8 % -> the 100 % threshold)."""
    return UsageThresholdCrossedV1(
        event_id="threshold:acct_1:2026-11:hard_limit@50:100", account_id="acct_1", period="2026-11",
        meter="hard_limit", threshold_percent=100, used="50.40", limit="50", occurred_at="2026-11-20T10:00:00+00:00",
        scope=limit_scope(Decimal(50)),
    )  # fmt: skip


def test_given_a_transient_email_failure_then_sms_is_sent_and_only_email_is_retried() -> None:
    ledger, mailer, texter = InMemoryLedger(), ScriptedMailer(SendFailedError("Throttling")), ScriptedTexter()

    with pytest.raises(DeliveryIncompleteError) as failed:
        deliver_alert(alert(), directory(), ledger, mailer, texter, POLICY, T0)
    assert failed.value.outcome.count(Outcome.SENT) == 1
    assert outcomes(ledger) == {Channel.EMAIL: Outcome.RETRY, Channel.SMS: Outcome.SENT}

    again = deliver_alert(alert(), directory(), ledger, mailer, texter, POLICY, T0 + 1000)
    assert [(d.channel, d.outcome, d.attempts) for d in again.deliveries] == [
        (Channel.EMAIL, Outcome.SENT, 2),
        (Channel.SMS, Outcome.DUPLICATE, 1),
    ]
    assert len(mailer.sent) == 1
    assert len(texter.sent) == 1


def test_given_a_permanent_refusal_then_it_is_recorded_and_a_redelivery_sends_nothing() -> None:
    ledger, mailer, texter = InMemoryLedger(), ScriptedMailer(SendRefusedError("MessageRejected")), ScriptedTexter()
    deliver_alert(alert(), directory(), ledger, mailer, texter, POLICY, T0)
    deliver_alert(alert(), directory(), ledger, mailer, texter, POLICY, T0 + 1000)
    assert outcomes(ledger) == {Channel.EMAIL: Outcome.UNDELIVERABLE, Channel.SMS: Outcome.SENT}
    assert mailer.sent == []
    assert len(texter.sent) == 1


def test_given_a_claim_whose_holder_crashed_then_it_is_taken_over_only_after_the_lease() -> None:
    ledger, probe = InMemoryLedger(), alert()
    for channel in Channel:  # the holder claimed both channels and crashed before sending
        claim = Delivery(probe.account_id, probe.period, probe.kind, probe.key, channel, Outcome.RETRY, "", T0)
        assert ledger.claim(claim, POLICY.lease_ms) == 1
    mailer, texter = ScriptedMailer(), ScriptedTexter()

    # the queue delivers the event again within the lease: the claims are not decisions - retried, nothing sent,
    # nothing released (the holder may still be sending)
    with pytest.raises(DeliveryIncompleteError) as early:
        deliver_alert(alert(), directory(), ledger, mailer, texter, POLICY, T0 + POLICY.lease_ms)
    assert early.value.outcome.count(Outcome.RETRY) == 2
    assert early.value.outcome.count(Outcome.DUPLICATE) == 0
    assert (mailer.sent, texter.sent) == ([], [])

    late = deliver_alert(alert(), directory(), ledger, mailer, texter, POLICY, T0 + POLICY.lease_ms + 1)
    assert late.count(Outcome.SENT) == 2


def test_given_an_unregistered_account_then_nothing_is_sent_and_both_channels_are_recorded_skipped() -> None:
    ledger, mailer, texter = InMemoryLedger(), ScriptedMailer(), ScriptedTexter()
    outcome = deliver_alert(alert("acct_nobody"), directory(), ledger, mailer, texter, POLICY, T0)
    assert {(d.outcome, d.detail) for d in outcome.deliveries} == {(Outcome.SKIPPED, "account not registered")}
    assert mailer.sent == []
    assert texter.sent == []


def test_given_an_opted_out_number_then_the_sms_is_recorded_opted_out() -> None:
    ledger, mailer, texter = InMemoryLedger(), ScriptedMailer(), ScriptedTexter(opted_out=frozenset({"+14155550100"}))
    deliver_alert(alert(), directory(), ledger, mailer, texter, POLICY, T0)
    assert outcomes(ledger) == {Channel.EMAIL: Outcome.SENT, Channel.SMS: Outcome.OPTED_OUT}
    assert texter.sent == []


@pytest.mark.parametrize("kind", ["budget_hard_limit", "payment_failed"])
def test_given_no_channel_stored_for_an_alert_that_must_reach_someone_then_it_goes_by_email(kind: str) -> None:
    """D180: a profile saved with no channel for such a kind before the account API refused it."""
    signup = (TierChange(datetime(2026, 1, 1, tzinfo=UTC), "team"),)
    chosen_nothing = InMemoryAccountDirectory(
        AccountProfile(
            "acct_1",
            signup,
            email="ada@example.com",
            phone="+14155550100",
            phone_verified=True,
            alert_preferences=((kind, ()), ("budget_threshold", ())),
        )
    )
    required = Alert(kind, "acct_1", "2026-11", "k", Severity.HIGH, {}, "e1")
    ledger, mailer, texter = InMemoryLedger(), ScriptedMailer(), ScriptedTexter()
    facts = {"period_label": "November 2026", "used": "$150.00", "limit": "$150.00", **hard_limit_enforced("2")}
    with_values = replace(required, values={**facts, "problem": "declined", "action": "pay", "total": "$29.00"})
    with_values = replace(with_values, values={**with_values.values, "invoice_id": "in_1", "sms_problem": "declined"})
    outcome = deliver_alert(with_values, chosen_nothing, ledger, mailer, texter, POLICY, T0)
    assert {d.channel: d.outcome for d in outcome.deliveries} == {
        Channel.EMAIL: Outcome.SENT,
        Channel.SMS: Outcome.SKIPPED,
    }
    assert [to for to, *_ in mailer.sent] == ["ada@example.com"]
    # an alert the account may silence stays silent
    budget = alert_from_event(
        UsageThresholdCrossedV1.DETAIL_TYPE,
        {
            "event_id": "threshold:acct_1:2026-11:budget:100", "account_id": "acct_1", "period": "2026-11",
            "meter": "budget", "threshold_percent": 100, "used": "100", "limit": "100",
            "occurred_at": "2026-11-20T10:00:00+00:00",
        },
    )  # fmt: skip
    quiet = deliver_alert(budget, chosen_nothing, ledger, mailer, texter, POLICY, T0)
    assert quiet.count(Outcome.SENT) == 0
    assert len(mailer.sent) == 1


class UnreachableScheduler:
    """The alerts queue refusing the delayed removal step (SQS unreachable), at every delivery."""

    def __init__(self) -> None:
        self.asked = 0

    def schedule_removal(self, account_id: str, period: str, delay_seconds: int, limit: str) -> None:
        self.asked += 1
        raise StorageUnavailableError("SQS SendMessage: unreachable")


def test_given_the_removal_step_cannot_be_scheduled_then_the_hard_limit_alert_still_goes_and_the_event_is_retried() -> (
    None
):
    """D183: before, the failure escaped before any alert was delivered: at each of the queue's five
    deliveries, so the customer never heard that the calls were stopping (the record went to the dead-letter queue)."""
    signup = (TierChange(datetime(2026, 1, 1, tzinfo=UTC), "team"),)
    profile = AccountProfile("acct_1", signup, email="ada@example.com", hard_limit_usd=Decimal(50))
    directory = InMemoryAccountDirectory(profile)
    ledger, mailer, scheduler = InMemoryLedger(), ScriptedMailer(), UnreachableScheduler()
    spend = InMemoryEntitlements(directory)  # the spend item the event keeps, read by the hard-limit check
    ports = AlertPorts(
        directory, ledger, mailer, ScriptedTexter(), spend, spend, StaticSessions(), FakeRooms({}),
        InMemoryEnforcementLedger(), scheduler, InMemoryMonthToDate(directory),
    )  # fmt: skip
    event = _hard_limit_50_crossed()
    now_ms = int(datetime(2026, 11, 20, 10, 0, 5, tzinfo=UTC).timestamp() * 1000)
    policy = AlertsPolicy(DeliveryPolicy("https://x/prefs", dashboard_url="https://dash.example/"))
    for delivery in range(2):
        with pytest.raises(EventIncompleteError) as failed:
            handle_event(event.DETAIL_TYPE, event.model_dump(), ports, policy, now_ms + delivery * 360_000)
        assert "SQS SendMessage: unreachable" in str(failed.value)
        # the step's retry record is in the event's outcome (before: none, the enforcement empty); nobody narrowed
        enforced = failed.value.outcome.enforcement
        assert [(r.action.value, r.identity, r.outcome) for r in enforced] == [("schedule_removal", "-", "retry")]
    assert scheduler.asked == 2  # retried for the enforcement
    [(to, subject, _, _)] = mailer.sent  # the alert went at the first delivery, once
    assert (to, subject) == (
        "ada@example.com",
        "Your November 2026 hard spending limit of $50.00 is reached: calls are stopping",
    )


@pytest.mark.parametrize(
    ("period", "hard_limit", "subject", "sms", "what_now"),
    [
        (  # late usage rated into October, announced on Nov 20: the month is over, nothing of it is stopped
            "2026-10", Decimal(50),
            "Your October 2026 hard spending limit of $50.00 was reached",
            "Kilo: hard limit $50.00 was reached (October 2026 bill $50.40). Month over: calls go on. "
            "Reply STOP to opt out",
            "That month is over, so nothing is stopped: your calls go on.",
        ),
        (  # the customer raised the limit to $60 (above the $50.40 bill) before the event was handled
            "2026-11", Decimal(60),
            "Your November 2026 hard spending limit of $50.00 was reached; it has since been raised to $60.00",
            "Kilo: hard limit $50.00 was reached (November 2026 bill $50.40). Now $60.00: calls go on. "
            "Reply STOP to opt out",
            "You have since raised the limit to $60.00, above the bill, so nothing is stopped: your calls go on.",
        ),
        (  # ... or removed it
            "2026-11", None,
            "Your November 2026 hard spending limit of $50.00 was reached; it has since been removed",
            "Kilo: hard limit $50.00 was reached (November 2026 bill $50.40). Limit removed: calls go on. "
            "Reply STOP to opt out",
            "The limit has since been removed, so nothing is stopped: your calls go on.",
        ),
    ],
)  # fmt: skip
def test_given_a_hard_limit_event_nothing_enforces_then_its_alert_says_what_happened_not_that_calls_stop(
    period: str, hard_limit: Decimal | None, subject: str, sms: str, what_now: str
) -> None:
    """A $50.40 bill reached a $50 hard limit, handled on Nov 20 when nothing enforces it (rightly): an October event
    (late usage, a call over the month end), or the limit raised to $60 / removed since. The alert went all the same
    saying "is reached: calls are stopping" (review e2, finding B); it now says what is true, and nothing is stopped."""
    signup = (TierChange(datetime(2026, 1, 1, tzinfo=UTC), "team"),)
    profile = AccountProfile(
        "acct_1", signup, email="ada@example.com", phone="+14155550100", phone_verified=True,
        hard_limit_usd=hard_limit, hard_limit_version=0 if hard_limit == Decimal(50) else 1,
    )  # fmt: skip
    directory = InMemoryAccountDirectory(profile)
    mailer, texter, rooms, scheduler = ScriptedMailer(), ScriptedTexter(), FakeRooms({}), RecordingScheduler()
    spend = InMemoryEntitlements(directory)
    ports = AlertPorts(
        directory, InMemoryLedger(), mailer, texter, spend, spend,
        StaticSessions(Participant("webinar", "host")), rooms, InMemoryEnforcementLedger(), scheduler,
        InMemoryMonthToDate(directory),
    )  # fmt: skip
    event = UsageThresholdCrossedV1(
        event_id=f"threshold:acct_1:{period}:hard_limit@50:100", account_id="acct_1", period=period,
        meter="hard_limit", threshold_percent=100, used="50.40", limit="50", occurred_at=f"{period}-20T10:00:00+00:00",
        scope=limit_scope(Decimal(50)),
    )  # fmt: skip
    now_ms = int(datetime(2026, 11, 20, 10, 0, 5, tzinfo=UTC).timestamp() * 1000)
    policy = AlertsPolicy(DeliveryPolicy("https://x/prefs", dashboard_url="https://dash.example/"))
    outcome = handle_event(event.DETAIL_TYPE, event.model_dump(), ports, policy, now_ms)
    assert (outcome.enforcement, rooms.calls, scheduler.scheduled) == ((), [], [])  # nothing enforced
    [(_, sent_subject, html, text)] = mailer.sent
    [(_, sent_sms)] = texter.sent
    assert (sent_subject, sent_sms) == (subject, sms)
    assert "has reached your hard spending limit of $50.00" in text
    assert what_now in text
    assert what_now in html
    for told in (sent_subject, text, html, sent_sms):
        assert not any(word in told for word in ("stopping", "audio", "refused"))


def test_given_one_participants_narrowing_failing_and_the_limit_raised_then_the_removal_step_gives_permissions_back() -> (
    None
):
    """D361 (review re2, a): RoomService failed for the host at the hard limit's first delivery; the recorder was
    narrowed. Before, the removal step was scheduled only after everyone was narrowed: never, here - and the customer
    raising the limit (as the alert tells them) meant the redelivered event found it no longer reached and did
    nothing, the recorder audio-only until it left. Now the step is scheduled first and gives the permission back."""
    full = {"can_publish": True, "can_subscribe": True, "sources": [], "hidden": False}
    host, recorder = Participant("webinar", "host"), Participant("webinar", "recorder")
    # the host (sorted first) fails once: RoomService 503
    rooms = FakeRooms(
        {("webinar", "host"): dict(full), ("webinar", "recorder"): dict(full)}, RoomControlFailedError("503")
    )
    signup = (TierChange(datetime(2026, 1, 1, tzinfo=UTC), "team"),)
    profile = AccountProfile("acct_1", signup, email="ada@example.com", hard_limit_usd=Decimal(50))
    directory, scheduler = InMemoryAccountDirectory(profile), RecordingScheduler()
    spend = InMemoryEntitlements(directory)
    ports = AlertPorts(
        directory, InMemoryLedger(), ScriptedMailer(), ScriptedTexter(), spend, spend, StaticSessions(host, recorder),
        rooms, InMemoryEnforcementLedger(), scheduler, InMemoryMonthToDate(directory),
    )  # fmt: skip
    event = _hard_limit_50_crossed()
    now_ms = int(datetime(2026, 11, 20, 10, 0, 5, tzinfo=UTC).timestamp() * 1000)
    policy = AlertsPolicy(DeliveryPolicy("https://x/prefs", dashboard_url="https://dash.example/"))
    # delivery 1: the bill $50.40 >= the $50 hard limit: reached; the host's narrowing fails, the recorder's is done
    with pytest.raises(EventIncompleteError):
        handle_event(event.DETAIL_TYPE, event.model_dump(), ports, policy, now_ms)
    assert rooms.permissions[("webinar", "recorder")]["sources"] == ["microphone"]
    assert scheduler.scheduled == [("acct_1", "2026-11", 120, "50")]  # the step comes in the 120 s grace all the same
    # 60 s later the customer raises the hard limit to $60: $50.40 < $60, no longer reached
    raised_at = datetime(2026, 11, 20, 10, 1, 5, tzinfo=UTC)
    directory.profiles["acct_1"] = apply_budget(profile, BudgetChange(hard_limit_usd=Decimal(60)), now=raised_at)
    step = {"account_id": "acct_1", "period": "2026-11", "step": "remove", "limit": "50"}
    out = handle_event(ENFORCEMENT_STEP, step, ports, policy, now_ms + 120_000)  # the step, after the grace
    assert [(r.action.value, r.outcome) for r in out.enforcement] == [("restore", "done"), ("remove", "lifted")]
    assert rooms.permissions == {("webinar", "host"): full, ("webinar", "recorder"): full}  # nobody left audio-only
    # the event delivered again (the queue's 360 s): the limit no longer reached, nothing to do, nothing narrowed
    again = handle_event(event.DETAIL_TYPE, event.model_dump(), ports, policy, now_ms + 360_000)
    assert again.enforcement == ()
    assert rooms.permissions == {("webinar", "host"): full, ("webinar", "recorder"): full}
    assert [call[0] for call in rooms.calls] == ["audio_only", "audio_only", "restore"]  # host failed, recorder, back


def test_given_the_hard_limit_still_reached_then_a_late_joiner_is_narrowed_and_removed_and_nobody_is_alerted() -> None:
    """Review re2 F2: the crossing's event enforced the limit once (the host: audio-only, removed after the grace);
    a guest who joined afterwards with a token minted before the limit was in none of its steps. The sweeper's
    ``HardLimitStillReached.v1`` removes it at once (the limit's removal step ran: its grace is over, D361 amended);
    no alert goes again, no second step."""
    signup = (TierChange(datetime(2026, 1, 1, tzinfo=UTC), "team"),)
    profile = AccountProfile("acct_1", signup, email="ada@example.com", hard_limit_usd=Decimal(50))
    directory = InMemoryAccountDirectory(profile)
    full = {"can_publish": True, "can_subscribe": True, "sources": [], "hidden": False}
    host, guest = Participant("webinar", "host"), Participant("webinar", "guest")
    rooms, sessions = FakeRooms({("webinar", "host"): dict(full)}), StaticSessions(host)
    mailer, scheduler, spend = ScriptedMailer(), RecordingScheduler(), InMemoryEntitlements(directory)
    ports = AlertPorts(
        directory, InMemoryLedger(), mailer, ScriptedTexter(), spend, spend, sessions, rooms,
        InMemoryEnforcementLedger(), scheduler, InMemoryMonthToDate(directory),
    )  # fmt: skip
    policy = AlertsPolicy(DeliveryPolicy("https://x/prefs", dashboard_url="https://dash.example/"))
    t = int(datetime(2026, 11, 20, 10, 0, 5, tzinfo=UTC).timestamp() * 1000)
    crossed = _hard_limit_50_crossed()
    handle_event(crossed.DETAIL_TYPE, crossed.model_dump(), ports, policy, t)  # $50.40 >= $50: host audio-only
    step = {"account_id": "acct_1", "period": "2026-11", "step": "remove", "limit": "50"}
    handle_event(ENFORCEMENT_STEP, step, ports, policy, t + 120_000)  # after the 120 s grace: host removed
    assert ("webinar", "host") not in rooms.permissions
    assert scheduler.scheduled == [("acct_1", "2026-11", 120, "50")]
    # the guest joins at 10:05 with a token minted before the limit; the sweeper's run at 10:10 finds $51.10 >= $50
    rooms.permissions[("webinar", "guest")] = dict(full)
    sessions.participants = [guest]
    still = HardLimitStillReachedV1(
        event_id="still_reached:acct_1:2026-11:hard_limit@50:1795169400000", account_id="acct_1", period="2026-11",
        used="51.10", limit="50", occurred_at="2026-11-20T10:10:00+00:00", scope="50",
    )  # fmt: skip
    out = handle_event(still.DETAIL_TYPE, still.model_dump(), ports, policy, t + 600_000)
    assert out.alerts == ()
    assert [(r.room, r.action.value, r.outcome) for r in out.enforcement] == [("webinar", "remove", "done")]
    assert ("webinar", "guest") not in rooms.permissions  # removed: the bill stops at the cap
    assert scheduler.scheduled == [("acct_1", "2026-11", 120, "50")]  # no second step: the grace is over
    assert len(mailer.sent) == 1  # the crossing's alert only, once
    # the customer raises the limit to $60 ($51.10 < $60): a late still-reached event of the $50 limit does nothing
    directory.profiles["acct_1"] = replace(profile, hard_limit_usd=Decimal(60), hard_limit_version=1)
    rooms.permissions[("webinar", "guest")] = dict(full)
    out = handle_event(still.DETAIL_TYPE, still.model_dump(), ports, policy, t + 900_000)
    assert (out.alerts, out.enforcement) == ((), ())
    assert rooms.permissions[("webinar", "guest")] == full
    assert len(scheduler.scheduled) == 1


FULL = {"can_publish": True, "can_subscribe": True, "sources": [], "hidden": False}
AT_10_00 = int(datetime(2026, 11, 20, 10, 0, 0, tzinfo=UTC).timestamp() * 1000)  # the host's first session joins
MINUTE = 60_000
REMOVAL_STEP = {"account_id": "acct_1", "period": "2026-11", "step": "remove", "limit": "50"}


def _crossed_50_limit() -> tuple[
    AccountProfile, InMemoryAccountDirectory, FakeRooms, StaticSessions, RecordingScheduler, AlertPorts, AlertsPolicy
]:
    """A $50 hard limit reached at 10:00:05 ($50.40): the host (joined 10:00) narrowed by the crossing's event, the
    limit's removal step scheduled (due at 10:02:05, the 120 s grace) but not run."""
    signup = (TierChange(datetime(2026, 1, 1, tzinfo=UTC), "team"),)
    profile = AccountProfile("acct_1", signup, email="ada@example.com", hard_limit_usd=Decimal(50))
    directory = InMemoryAccountDirectory(profile)
    rooms = FakeRooms({("webinar", "host"): dict(FULL)})
    sessions = StaticSessions(Participant("webinar", "host", AT_10_00))
    scheduler, spend = RecordingScheduler(), InMemoryEntitlements(directory)
    ports = AlertPorts(
        directory, InMemoryLedger(), ScriptedMailer(), ScriptedTexter(), spend, spend, sessions, rooms,
        InMemoryEnforcementLedger(), scheduler, InMemoryMonthToDate(directory),
    )  # fmt: skip
    policy = AlertsPolicy(DeliveryPolicy("https://x/prefs", dashboard_url="https://dash.example/"))
    crossed = _hard_limit_50_crossed()
    handle_event(crossed.DETAIL_TYPE, crossed.model_dump(), ports, policy, AT_10_00 + 5_000)
    return profile, directory, rooms, sessions, scheduler, ports, policy


def _enforced_50_limit() -> tuple[
    AccountProfile, InMemoryAccountDirectory, FakeRooms, StaticSessions, RecordingScheduler, AlertPorts, AlertsPolicy
]:
    """``_crossed_50_limit``, then the limit's removal step at 10:02:05 (the 120 s grace) removes the host."""
    profile, directory, rooms, sessions, scheduler, ports, policy = _crossed_50_limit()
    handle_event(ENFORCEMENT_STEP, REMOVAL_STEP, ports, policy, AT_10_00 + 5_000 + 120_000)
    assert ("webinar", "host") not in rooms.permissions  # removed at 10:02:05
    return profile, directory, rooms, sessions, scheduler, ports, policy


def _still_reached_at(run_ms: int, scope: str = "50", period: str = "2026-11") -> dict[str, object]:
    """The sweeper's ``HardLimitStillReached.v1`` of its run at ``run_ms``: $51.10 >= $50."""
    return HardLimitStillReachedV1(
        event_id=HardLimitStillReachedV1.make_id("acct_1", period, scope, run_ms), account_id="acct_1", period=period,
        used="51.10", limit="50", occurred_at=datetime.fromtimestamp(run_ms / 1000, tz=UTC).isoformat(), scope=scope,
    ).model_dump()  # fmt: skip


def test_given_a_removed_host_rejoining_with_its_identity_then_the_next_still_reached_event_removes_it_again() -> None:
    """Review v4 #1: the removal is claimed per session (its join), not per identity: the host removed at 10:02
    rejoins at 10:03 with the same identity (a cached token); the sweeper's run at 10:05 finds $51.10 >= $50 and the
    limit's step has run, so the new session is removed at once. A second rejoin (10:06) is removed by the next run."""
    _, _, rooms, sessions, scheduler, ports, policy = _enforced_50_limit()
    rooms.permissions[("webinar", "host")] = dict(FULL)  # 10:03 the host clicks "rejoin": same identity
    sessions.participants = [Participant("webinar", "host", AT_10_00 + 3 * MINUTE)]
    out = handle_event(HardLimitStillReachedV1.DETAIL_TYPE, _still_reached_at(AT_10_00 + 5 * MINUTE), ports, policy,
                       AT_10_00 + 5 * MINUTE)  # fmt: skip
    assert [(r.action.value, r.outcome, r.joined_ms) for r in out.enforcement] == [
        ("remove", "done", AT_10_00 + 3 * MINUTE)  # the 10:03 session: a claim of its own
    ]
    assert ("webinar", "host") not in rooms.permissions  # removed again at 10:05
    # the index still lists the 10:03 session at 10:10 (lagging) and the host rejoined at 10:06: only 10:06 removed
    rooms.permissions[("webinar", "host")] = dict(FULL)
    sessions.participants = [
        Participant("webinar", "host", AT_10_00 + 3 * MINUTE), Participant("webinar", "host", AT_10_00 + 6 * MINUTE)
    ]  # fmt: skip
    handle_event(HardLimitStillReachedV1.DETAIL_TYPE, _still_reached_at(AT_10_00 + 10 * MINUTE), ports, policy,
                 AT_10_00 + 10 * MINUTE)  # fmt: skip
    assert ("webinar", "host") not in rooms.permissions
    # RoomService: 10:00 audio-only, 10:02 the step's removal, 10:05 and 10:10 one removal each = 4 calls
    assert [call[0] for call in rooms.calls] == ["audio_only", "remove", "remove", "remove"]
    assert len(scheduler.scheduled) == 1  # the crossing's step only: the grace is over


def test_given_the_host_rejoining_within_the_grace_then_the_still_reached_event_narrows_its_new_session() -> None:
    """Finding (ao): audio-only was claimed per identity, so a host narrowed at 10:00:05 who leaves and rejoins at
    10:01 (a new session, same identity, full permissions from its token) found its claim taken: the sweeper's run at
    10:01:30 ($51.10 >= $50, the step due at 10:02:05 not run) asked nothing and the host had video until the step.
    Audio-only is claimed per session (its join), as removals are: the 10:01 session is narrowed at 10:01:30."""
    _, _, rooms, sessions, scheduler, ports, policy = _crossed_50_limit()
    assert rooms.permissions[("webinar", "host")]["sources"] == ["microphone"]  # narrowed at 10:00:05
    rooms.permissions[("webinar", "host")] = dict(FULL)  # 10:01 the host leaves and rejoins: video allowed again
    sessions.participants = [Participant("webinar", "host", AT_10_00 + MINUTE)]  # rating closed the 10:00 session
    out = handle_event(HardLimitStillReachedV1.DETAIL_TYPE, _still_reached_at(AT_10_00 + 90_000), ports, policy,
                       AT_10_00 + 90_000)  # fmt: skip
    # the 10:01 session's own claim (joined 10:00 + 60 s); no second step (the crossing's is pending)
    assert [(r.action.value, r.outcome, r.joined_ms) for r in out.enforcement] == [
        ("audio_only", "done", AT_10_00 + MINUTE)
    ]
    assert rooms.permissions[("webinar", "host")]["sources"] == ["microphone"]  # no video from 10:01:30
    assert json.loads(out.enforcement[0].saved) == FULL  # what its token gave it: given back if the limit lifts
    handle_event(ENFORCEMENT_STEP, REMOVAL_STEP, ports, policy, AT_10_00 + 125_000)  # the step at 10:02:05
    assert ("webinar", "host") not in rooms.permissions
    # RoomService: 10:00:05 audio-only (the 10:00 session), 10:01:30 audio-only (the 10:01 session), 10:02:05 the
    # step's removal (the 10:01 session, the only one listed) = 3 calls, all for "host"
    assert rooms.calls == [
        ("audio_only", "webinar", "host"), ("audio_only", "webinar", "host"), ("remove", "webinar", "host")
    ]  # fmt: skip
    assert scheduler.scheduled == [("acct_1", "2026-11", 120, "50")]  # one step


def test_given_a_session_open_in_rating_but_gone_from_livekit_then_roomservice_is_asked_once_not_every_run() -> None:
    """Review v4 #1: a guest who left at 10:05 while its session's close never reached rating is listed open by
    every run. Its removal is claimed once per session: the 10:10 run asks RoomService (``gone``), the runs of 10:15
    and 10:20 ask nothing - what bounds it is one RoomService call per session and limit."""
    _, _, rooms, sessions, _, ports, policy = _enforced_50_limit()
    sessions.participants = [Participant("webinar", "guest", AT_10_00 + 4 * MINUTE)]  # not in rooms.permissions
    outcomes_by_run = [
        [(r.action.value, r.outcome) for r in handle_event(
            HardLimitStillReachedV1.DETAIL_TYPE, _still_reached_at(run), ports, policy, run).enforcement]
        for run in (AT_10_00 + 10 * MINUTE, AT_10_00 + 15 * MINUTE, AT_10_00 + 20 * MINUTE)
    ]  # fmt: skip
    assert outcomes_by_run == [[("remove", "gone")], [], []]
    assert [call for call in rooms.calls if call[2] == "guest"] == [("remove", "webinar", "guest")]


def test_given_a_still_reached_event_of_a_limit_set_again_then_the_limit_in_force_is_not_enforced_by_it() -> None:
    """Review v4 #3 (scope check): the $50 limit (v0) enforced, then set again at $50 (v1, scope ``50v1``) while
    reached: a new limit with its own crossing. A late still-reached event of scope ``50`` finds ``50v1`` in force:
    nothing - no step scheduled under ``50v1`` by it, the guest who joined at 10:05 not narrowed by it."""
    profile, directory, rooms, sessions, scheduler, ports, policy = _enforced_50_limit()
    directory.profiles["acct_1"] = replace(profile, hard_limit_usd=Decimal(50), hard_limit_version=1)
    rooms.permissions[("webinar", "guest")] = dict(FULL)
    sessions.participants = [Participant("webinar", "guest", AT_10_00 + 5 * MINUTE)]
    out = handle_event(HardLimitStillReachedV1.DETAIL_TYPE, _still_reached_at(AT_10_00 + 10 * MINUTE), ports, policy,
                       AT_10_00 + 10 * MINUTE)  # fmt: skip
    assert (out.alerts, out.enforcement) == ((), ())
    assert rooms.permissions[("webinar", "guest")] == FULL
    assert scheduler.scheduled == [("acct_1", "2026-11", 120, "50")]  # the v0 limit's step only


def test_given_a_still_reached_event_of_last_month_then_nothing_is_enforced_under_it() -> None:
    """Review v4 #3 (month check): an event of October's run (period ``2026-10``, scope ``50``) delivered late in
    November while November's $51.10 reaches the same $50 limit: nothing under October - no October step scheduled,
    the guest not touched (November's own crossing enforces November)."""
    _, _, rooms, sessions, scheduler, ports, policy = _enforced_50_limit()
    rooms.permissions[("webinar", "guest")] = dict(FULL)
    sessions.participants = [Participant("webinar", "guest", AT_10_00 + 5 * MINUTE)]
    october = _still_reached_at(AT_10_00 + 10 * MINUTE, period="2026-10")
    out = handle_event(HardLimitStillReachedV1.DETAIL_TYPE, october, ports, policy, AT_10_00 + 10 * MINUTE)
    assert (out.alerts, out.enforcement) == ((), ())
    assert rooms.permissions[("webinar", "guest")] == FULL
    assert scheduler.scheduled == [("acct_1", "2026-11", 120, "50")]


def _host_removed_guests_removal_failed() -> tuple[
    FakeRooms, StaticSessions, InMemoryEnforcementLedger, AlertPorts, AlertsPolicy, Participant
]:
    """Team with a $50 hard limit: host (joined 10:00) and guest (10:01) narrowed at 10:00:05 by the $50.40 crossing;
    the removal step at 10:02:05 (10:00 + 125 s) removes the host, the guest's RemoveParticipant fails (RoomService
    503, the guest sorted first): the step is incomplete, the queue delivers it again."""
    signup = (TierChange(datetime(2026, 1, 1, tzinfo=UTC), "team"),)
    profile = AccountProfile("acct_1", signup, email="ada@example.com", hard_limit_usd=Decimal(50))
    directory = InMemoryAccountDirectory(profile)
    rooms = FakeRooms({("webinar", "host"): dict(FULL), ("webinar", "guest"): dict(FULL)})
    host, guest = Participant("webinar", "host", AT_10_00), Participant("webinar", "guest", AT_10_00 + MINUTE)
    sessions, scheduler, spend = StaticSessions(host, guest), RecordingScheduler(), InMemoryEntitlements(directory)
    ledger = InMemoryEnforcementLedger()
    ports = AlertPorts(
        directory, InMemoryLedger(), ScriptedMailer(), ScriptedTexter(), spend, spend, sessions, rooms, ledger,
        scheduler, InMemoryMonthToDate(directory),
    )  # fmt: skip
    policy = AlertsPolicy(DeliveryPolicy("https://x/prefs", dashboard_url="https://dash.example/"))
    crossed = _hard_limit_50_crossed()
    handle_event(crossed.DETAIL_TYPE, crossed.model_dump(), ports, policy, AT_10_00 + 5_000)  # both audio-only
    rooms.failures.append(RoomControlFailedError("RoomService 503"))  # sorted by identity: the guest is first
    with pytest.raises(EnforcementIncompleteError):  # the step is incomplete: the queue delivers it again
        handle_event(ENFORCEMENT_STEP, REMOVAL_STEP, ports, policy, AT_10_00 + 125_000)
    assert ("webinar", "host") not in rooms.permissions  # the host removed at 10:02:05
    return rooms, sessions, ledger, ports, policy, guest


def test_given_the_removal_step_redelivered_after_a_removed_hosts_session_closed_then_the_host_is_not_claimed_again() -> (
    None
):
    """Review v4b: host (joined 10:00) and guest (10:01) narrowed at 10:00:05. The step at 10:02:05 removes the host
    (its claim keyed by its 10:00 join) but the guest's RemoveParticipant fails (RoomService 503): the step is
    redelivered. Rating closes the host's removed session meanwhile, so at 10:02:40 the index lists the guest only and
    the host is "narrowed, unlisted" - an unlisted participant has no join (0), so its removal key was another one:
    a second claim of the same removed session (LiveKit asked again, a ``gone`` record). One already removed under the
    limit (done or gone, any join) is not looked for again: the redelivery removes the guest only."""
    rooms, sessions, ledger, ports, policy, guest = _host_removed_guests_removal_failed()
    sessions.participants = [guest]  # rating closed the host's removed session
    calls_before = len(rooms.calls)
    handle_event(ENFORCEMENT_STEP, REMOVAL_STEP, ports, policy, AT_10_00 + 160_000)  # the redelivery at 10:02:40
    assert ("webinar", "guest") not in rooms.permissions
    # the host looked for in its room (one ListParticipants, e4d: it may have rejoined), not found: not asked again
    assert rooms.calls[calls_before:] == [("identities", "webinar", ""), ("remove", "webinar", "guest")]
    removals = sorted(
        (record.joined_ms, record.outcome)
        for record in ledger.items.values()
        if record.action is EnforcementAction.REMOVE and record.identity == pseudonym("acct_1", "host")
    )
    assert removals == [(AT_10_00, "done")]  # one session, one claim (not also (0, "gone"))


def test_given_the_removal_step_redelivered_after_a_removed_host_rejoined_unlisted_then_the_host_is_removed_again() -> (
    None
):
    """Review v4b (e4d): as above, but the host REJOINS at 10:02:30 (full permissions) while the index lists the guest
    only. Its room is asked (one ListParticipants): it is there, so the redelivered step at 10:02:40 removes it again
    - claimed as the presence after its removal at 10:02:05 - not left with video until the sweeper's next run."""
    rooms, sessions, ledger, ports, policy, guest = _host_removed_guests_removal_failed()
    sessions.participants = [guest]  # rating closed the host's removed session; the index does not list its rejoin
    rooms.permissions[("webinar", "host")] = dict(FULL)  # the host rejoins at 10:02:30, video allowed
    calls_before = len(rooms.calls)
    handle_event(ENFORCEMENT_STEP, REMOVAL_STEP, ports, policy, AT_10_00 + 160_000)  # 10:02:40 = 10:00 + 160 s
    assert ("webinar", "guest") not in rooms.permissions
    assert ("webinar", "host") not in rooms.permissions  # the rejoined host removed by the redelivered step
    # one ListParticipants of the room (the host looked for by its pseudonym), then RemoveParticipant in the claims'
    # order, sorted by the name each is claimed by: the host's pseudonym ("erased-...") before "guest"
    assert rooms.calls[calls_before:] == [
        ("identities", "webinar", ""),
        ("remove", "webinar", "host"),
        ("remove", "webinar", "guest"),
    ]
    removals = sorted(
        (record.joined_ms, record.outcome)
        for record in ledger.items.values()
        if record.action is EnforcementAction.REMOVE and record.identity == pseudonym("acct_1", "host")
    )
    # its 10:00 session removed at 10:02:05; the presence after that removal keyed by it: 10:00 + 125 s
    assert removals == [(AT_10_00, "done"), (AT_10_00 + 125_000, "done")]


def test_given_a_rejoin_removed_by_the_presence_check_then_listed_later_then_roomservice_is_asked_once_more() -> None:
    """Finding (ao, b), left as it is (D361 amended (ao)): the rejoined host removed by the 10:02:40 presence check is
    claimed under 10:02:05 (its latest removal's time: ListParticipants gives no join), so once the index lists that
    rejoin with its own join (10:02:30) the 10:05 run claims it and asks RemoveParticipant once more (``gone``) - one
    wasted call per such rejoin, not one per run: the 10:10 run asks nothing."""
    rooms, sessions, _, ports, policy, guest = _host_removed_guests_removal_failed()
    sessions.participants = [guest]
    rooms.permissions[("webinar", "host")] = dict(FULL)  # the host rejoins at 10:02:30, unlisted
    handle_event(ENFORCEMENT_STEP, REMOVAL_STEP, ports, policy, AT_10_00 + 160_000)  # 10:02:40: host and guest removed
    rejoin = Participant("webinar", "host", AT_10_00 + 150_000)  # 10:02:30 = 10:00 + 150 s
    sessions.participants = [rejoin]  # the index lists the rejoin now (its close not seen yet)
    calls_before = len(rooms.calls)
    runs = [
        [(r.action.value, r.outcome, r.joined_ms) for r in handle_event(
            HardLimitStillReachedV1.DETAIL_TYPE, _still_reached_at(run), ports, policy, run).enforcement]
        for run in (AT_10_00 + 5 * MINUTE, AT_10_00 + 10 * MINUTE)
    ]  # fmt: skip
    assert runs == [[("remove", "gone", AT_10_00 + 150_000)], []]
    assert rooms.calls[calls_before:] == [("remove", "webinar", "host")]  # 1 call in 2 runs, answered gone


def test_given_the_removal_step_redelivered_while_listing_the_unlisted_hosts_room_fails_then_the_guest_is_removed() -> (
    None
):
    """Review of b7d145d (e4e): as above, the host not back; at 10:02:40 the ListParticipants that looks for the
    unlisted host in its room fails (RoomService 503). Before, that failure went up before anyone was acted on: the
    guest kept full permissions. A participant RoomService fails on blocks nobody else (D361): the host's presence
    check is reported ``retry`` (for it alone, nothing written), the guest is removed, and only then is the step
    incomplete (redelivered); the next delivery finds the host gone and ends the step."""
    rooms, sessions, ledger, ports, policy, guest = _host_removed_guests_removal_failed()
    sessions.participants = [guest]  # rating closed the host's removed session
    rooms.failures.append(RoomControlFailedError("RoomService 503"))  # the next call fails: the room's listing
    calls_before = len(rooms.calls)
    with pytest.raises(EnforcementIncompleteError) as incomplete:
        handle_event(ENFORCEMENT_STEP, REMOVAL_STEP, ports, policy, AT_10_00 + 160_000)  # 10:02:40 = 10:00 + 160 s
    assert ("webinar", "guest") not in rooms.permissions  # removed although the host's check failed
    assert rooms.calls[calls_before:] == [("identities", "webinar", ""), ("remove", "webinar", "guest")]
    host, guest_ref = pseudonym("acct_1", "host"), pseudonym("acct_1", "guest")
    # the host's check keyed as the presence after its removal at 10:02:05 (10:00 + 125 s); the guest's session by
    # its 10:01 join (10:00 + 60 s); the step's own marker ("-", join 0) retry: 2 records to retry
    assert [(r.identity, r.joined_ms, r.outcome) for r in incomplete.value.records] == [
        (host, AT_10_00 + 125_000, "retry"),
        (guest_ref, AT_10_00 + MINUTE, "done"),
        ("-", 0, "retry"),
    ]
    host_removals = sorted(
        (record.joined_ms, record.outcome)
        for record in ledger.items.values()
        if record.action is EnforcementAction.REMOVE and record.identity == host
    )
    assert host_removals == [(AT_10_00, "done")]  # the failed check claims nothing: no record of its own
    # the next delivery (10:03:15 = 10:00 + 195 s): the room lists nobody (the host not back): the step is done
    out = handle_event(ENFORCEMENT_STEP, REMOVAL_STEP, ports, policy, AT_10_00 + 195_000)
    assert [(r.identity, r.outcome) for r in out.enforcement] == [("-", "done")]
    assert rooms.calls[calls_before + 2 :] == [("identities", "webinar", "")]


QUOTE_EXPIRING = {
    "event_id": "quote-expiring:q_1", "account_id": "acct_1", "invoice_id": "acct_1/2026-11", "quote_id": "q_1",
    "chain": "ethereum", "asset": "ETH", "amount": "0.04213", "payment_uri": "ethereum:0xabc@1?value=4.213e16",
    "expires_at": "2026-11-02T14:30:00+00:00", "occurred_at": "2026-11-02T14:20:00+00:00",
}  # fmt: skip


def _at(hour: int, minute: int) -> int:
    return int(datetime(2026, 11, 2, hour, minute, tzinfo=UTC).timestamp() * 1000)


@pytest.mark.parametrize("minute", [33, 30], ids=["14:33, two failures later", "14:30, the expiry itself"])
def test_given_a_quote_expiring_alert_delivered_at_or_after_the_expiry_then_each_channel_is_skipped_nothing_sent(
    minute: int,
) -> None:
    """Published 10 minutes before a 14:30 expiry; a failure for now puts the delivery 6 minutes later (the queue's
    visibility timeout), a second one at 14:32+: the alert would ask to pay an expired quote through its link."""
    ledger, mailer, texter = InMemoryLedger(), ScriptedMailer(), ScriptedTexter()
    quote = alert_from_event("CryptoQuoteExpiring.v1", QUOTE_EXPIRING)

    done = deliver_alert(quote, directory(), ledger, mailer, texter, POLICY, _at(14, minute))

    assert [(d.channel, d.outcome, d.detail) for d in done.deliveries] == [
        (Channel.EMAIL, Outcome.SKIPPED, "quote expired before delivery"),
        (Channel.SMS, Outcome.SKIPPED, "quote expired before delivery"),
    ]
    assert (mailer.sent, texter.sent) == ([], [])
    assert outcomes(ledger) == {Channel.EMAIL: Outcome.SKIPPED, Channel.SMS: Outcome.SKIPPED}  # recorded: decided


def test_given_a_quote_expiring_alert_delivered_a_minute_before_the_expiry_then_it_is_sent_with_its_payment_link() -> (
    None
):
    ledger, mailer, texter = InMemoryLedger(), ScriptedMailer(), ScriptedTexter()
    quote = alert_from_event("CryptoQuoteExpiring.v1", QUOTE_EXPIRING)

    deliver_alert(quote, directory(), ledger, mailer, texter, POLICY, _at(14, 29))

    assert outcomes(ledger) == {Channel.EMAIL: Outcome.SENT, Channel.SMS: Outcome.SENT}
    assert [to for to, *_ in mailer.sent] == ["ada@example.com"]
    assert "ethereum:0xabc@1?value=4.213e16" in mailer.sent[0][3]  # the text part names the payment link
    assert [phone for phone, _ in texter.sent] == ["+14155550100"]
