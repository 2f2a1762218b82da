"""Each abuse heuristic fires on a crafted scenario and stays quiet on a normal one (pure logic, hand-worked figures),
and a flag holds only a free, active account when the policy says so (fakes of the operator ports)."""

from __future__ import annotations

import hashlib
from collections.abc import Callable
from dataclasses import replace
from datetime import UTC, datetime

import pytest

from kilo_alerts import abuse
from kilo_alerts.abuse import AbuseThresholds, Signal
from kilo_alerts.operator import (
    Announced,
    OperatorAlertFailedError,
    OperatorPolicy,
    OperatorPorts,
    flag,
    on_payment_failed,
)
from kilo_alerts.ports import SendFailedError
from kilo_billing.accounts import AccountProfile, ProfileChangedError, set_status
from kilo_billing.catalog import default_catalog
from kilo_billing.rating import TierChange
from kilo_billing.usage_signals import OpenSession, SessionStart
from tests.fakes import InMemoryAccountDirectory
from tests.unit.alerts_fakes import InMemoryOperatorLedger, InMemoryPaymentSignals

T = AbuseThresholds()
NOW = datetime(2026, 11, 15, tzinfo=UTC)  # 14 of November's 30 days elapsed
NOW_MS = int(NOW.timestamp() * 1000)
NOV_START = int(datetime(2026, 11, 1, tzinfo=UTC).timestamp())
OCT_START = int(datetime(2026, 10, 1, tzinfo=UTC).timestamp())
BOOK = default_catalog().latest


def profile(account: str, tier: str = "personal", status: str = "active") -> AccountProfile:
    return AccountProfile(account, (TierChange(datetime(2026, 1, 1, tzinfo=UTC), tier),), status=status)


def test_given_one_identity_in_four_rooms_then_concurrent_sessions_fires_and_three_rooms_stay_quiet() -> None:
    many = [OpenSession("acct-a", "bot", f"room-{n}", NOW_MS) for n in range(4)]
    few = [OpenSession("acct-b", "alice", f"room-{n}", NOW_MS) for n in range(3)]
    # the same room twice (a reconnect) is one call, not two
    again = [OpenSession("acct-c", "carol", "room-x", NOW_MS), OpenSession("acct-c", "carol", "room-x", NOW_MS + 1)]
    found = abuse.concurrent_sessions([*many, *few, *again], T, NOW_MS)
    # the identity by D80's pseudonym only (D214): "erased-" + sha256("acct-a" NUL "bot")[:16], worked here
    bot = "erased-" + hashlib.sha256(b"acct-a\x00bot").hexdigest()[:16]
    assert [(s.account_id, s.key) for s in found] == [("acct-a", f"concurrent_sessions:{bot}:2026-11-15")]
    assert (
        found[0].observed
        == f"identity {bot} (its pseudonym) is in 4 calls at once (rooms room-0, room-1, room-2, room-3)"
    )
    assert "bot:" not in found[0].key


def test_given_one_identity_in_seven_rooms_then_five_rooms_are_named_and_the_rest_counted() -> None:
    found = abuse.concurrent_sessions([OpenSession("acct-a", "bot", f"r{n}", NOW_MS) for n in range(7)], T, NOW_MS)
    assert found[0].observed.endswith("is in 7 calls at once (rooms r0, r1, r2, r3, r4 and 2 more)")


def test_given_30_sub_minute_connections_in_the_hour_then_a_storm_fires_and_29_stay_quiet() -> None:
    start = NOW_MS - 50 * 60_000
    storm = [SessionStart("acct-a", "u", start + n * 60_000, start + n * 60_000 + 20_000) for n in range(30)]
    found = abuse.connection_storm("acct-a", storm, T, NOW_MS)
    assert found is not None
    assert found.key == "connection_storm:2026-11-15"
    assert found.observed == "30 connections shorter than 60 s in the last 60 min"
    assert abuse.connection_storm("acct-a", storm[:29], T, NOW_MS) is None
    # long calls, open ones and short ones before the window do not count
    long_calls = [SessionStart("acct-a", "u", start + n, start + n + 60_000) for n in range(30)]
    still_open = [SessionStart("acct-a", "u", start + n, None) for n in range(30)]
    earlier = [SessionStart("acct-a", "u", NOW_MS - 61 * 60_000 - n, NOW_MS - 61 * 60_000) for n in range(30)]
    for quiet in (long_calls, still_open, earlier):
        assert abuse.connection_storm("acct-a", quiet, T, NOW_MS) is None


def test_given_this_months_cost_far_above_the_trailing_average_then_a_spike_fires() -> None:
    account = profile("acct-a")
    # October: 10,000 audio minutes x $0.0003 = $3.00; November so far: 100,000 minutes = $30.00
    # limit = max($20 floor, 5 x $3.00 x 14/30 = $7.00) = $20.00 -> fires
    counters = {"2026-10": {(OCT_START, "audio"): 10_000}, "2026-11": {(NOV_START, "audio"): 100_000}}
    found = abuse.usage_spike(account, counters, BOOK, T, NOW)
    assert found is not None
    assert found.key == "usage_spike:2026-11"
    assert found.observed.startswith("LiveKit cost this month $30.00; trailing monthly average $3.00 (1 month(s))")
    assert found.threshold.startswith("$20.00")


def test_given_a_cost_ending_in_half_a_cent_then_the_spike_shows_it_rounded_half_up() -> None:
    # November so far: 100,150 audio minutes x $0.0003 = $30.045 -> $30.05 (D2: half-up; half-even would say $30.04)
    counters = {"2026-10": {(OCT_START, "audio"): 10_000}, "2026-11": {(NOV_START, "audio"): 100_150}}
    found = abuse.usage_spike(profile("acct-a"), counters, BOOK, T, NOW)
    assert found is not None
    assert found.observed.startswith("LiveKit cost this month $30.05; trailing monthly average $3.00")


def test_given_normal_or_habitually_large_use_then_no_spike() -> None:
    account = profile("acct-a")
    small = {"2026-10": {(OCT_START, "audio"): 10_000}, "2026-11": {(NOV_START, "audio"): 5_000}}  # $1.50 < $20
    assert abuse.usage_spike(account, small, BOOK, T, NOW) is None
    # a big account: October $60.00 -> limit 5 x 60 x 14/30 = $140.00; November so far 400,000 min = $120.00
    big = {"2026-10": {(OCT_START, "audio"): 200_000}, "2026-11": {(NOV_START, "audio"): 400_000}}
    assert abuse.usage_spike(account, big, BOOK, T, NOW) is None
    # ... which fires at 480,000 minutes ($144.00 >= $140.00)
    bigger = {**big, "2026-11": {(NOV_START, "audio"): 480_000}}
    assert abuse.usage_spike(account, bigger, BOOK, T, NOW) is not None


def test_given_three_free_accounts_on_one_card_then_each_is_flagged_and_paying_accounts_do_not_count() -> None:
    def is_free(tier: str) -> bool:
        return tier == "personal"

    three = [profile("a1"), profile("a2"), profile("a3")]
    found = abuse.shared_fingerprint("card", "fp_1", three, is_free, T, NOW)
    assert [s.account_id for s in found] == ["a1", "a2", "a3"]
    assert {s.key for s in found} == {"shared_card:fp_1"}
    two_and_team = [profile("a1"), profile("a2"), profile("t1", "team")]
    assert abuse.shared_fingerprint("card", "fp_1", two_and_team, is_free, T, NOW) == []


def test_given_three_failed_payments_in_30_days_then_it_fires_and_older_ones_do_not_count() -> None:
    day = 86_400_000
    recent = [NOW_MS - 20 * day, NOW_MS - 10 * day, NOW_MS]
    found = abuse.failed_payments("acct-a", recent, T, NOW_MS)
    assert found is not None
    assert found.observed == "3 failed payments in the last 30 days"
    assert abuse.failed_payments("acct-a", [NOW_MS - 31 * day, NOW_MS - 10 * day, NOW_MS], T, NOW_MS) is None


class Notifier:
    def __init__(self, *failures: Exception) -> None:
        self.failures = list(failures)
        self.sent: list[tuple[str, str]] = []

    def notify(self, subject: str, message: str) -> str:
        if self.failures:
            raise self.failures.pop(0)
        self.sent.append((subject, message))
        return f"msg-{len(self.sent)}"


class NoPayments:
    def record_failure(self, account_id: str, event_id: str, at_ms: int) -> list[int]:
        raise AssertionError("not used")

    def record_method(self, account_id: str, method: str, fingerprint: str, at_ms: int) -> list[str]:
        raise AssertionError("not used")


STORM = Signal("connection_storm", "free-1", "connection_storm:2026-11-15", "40 short", "30 in 60 min")


def ports(directory: InMemoryAccountDirectory, notifier: Notifier) -> OperatorPorts:
    return OperatorPorts(ledger=InMemoryOperatorLedger(), notifier=notifier, directory=directory, payments=NoPayments())


def policy(auto_hold: bool) -> OperatorPolicy:
    return OperatorPolicy(book=BOOK, is_free=lambda tier: tier == "personal", auto_hold=auto_hold)


def test_given_auto_hold_then_a_free_active_account_is_held_once_and_the_operator_told_once() -> None:
    directory = InMemoryAccountDirectory()
    directory.register(profile("free-1"))
    notifier = Notifier()
    p = ports(directory, notifier)
    first = flag(STORM, p, policy(True), NOW_MS)
    assert (first.outcome, first.held) == ("sent", True)
    assert directory.registered(["free-1"])["free-1"].status == "abuse_hold"
    assert "The account is on hold (status abuse_hold)" in notifier.sent[0][1]
    set_status(directory, "free-1", "active")  # an operator made it active again after review
    again = flag(STORM, p, policy(True), NOW_MS + 60_000)
    assert (again.outcome, again.held) == ("duplicate", False)
    assert directory.registered(["free-1"])["free-1"].status == "active"
    assert len(notifier.sent) == 1


def test_given_a_paying_account_or_no_auto_hold_then_nothing_is_held_but_the_operator_is_told() -> None:
    for tier, auto in (("team", True), ("personal", False)):
        directory = InMemoryAccountDirectory()
        directory.register(profile("free-1", tier))
        notifier = Notifier()
        outcome = flag(STORM, ports(directory, notifier), policy(auto), NOW_MS)
        assert (outcome.outcome, outcome.held) == ("sent", False)
        assert directory.registered(["free-1"])["free-1"].status == "active"
        assert "Nothing was changed" in notifier.sent[0][1]


def test_given_the_topic_failing_for_now_then_the_claim_is_released_and_the_next_run_sends() -> None:
    directory = InMemoryAccountDirectory()
    directory.register(profile("free-1", "team"))
    notifier = Notifier(SendFailedError("throttled"))
    p = ports(directory, notifier)
    with pytest.raises(OperatorAlertFailedError, match="throttled"):
        flag(STORM, p, policy(False), NOW_MS)
    assert flag(STORM, p, policy(False), NOW_MS).outcome == "sent"
    assert len(notifier.sent) == 1


def test_given_the_hold_applied_and_the_topic_failing_then_the_retry_still_says_the_account_is_on_hold() -> None:
    directory = InMemoryAccountDirectory()
    directory.register(profile("free-1"))
    notifier = Notifier(SendFailedError("throttled"))
    p = ports(directory, notifier)
    with pytest.raises(OperatorAlertFailedError, match="throttled"):
        flag(STORM, p, policy(True), NOW_MS)  # held, then the operator topic failed for now: the claim released
    assert directory.registered(["free-1"])["free-1"].status == "abuse_hold"
    retried = flag(STORM, p, policy(True), NOW_MS + 900_000)
    assert (retried.outcome, retried.held) == ("sent", True)
    [(_, message)] = notifier.sent
    assert "The account is on hold (status abuse_hold)" in message
    assert "Nothing was changed" not in message


class RacingDirectory(InMemoryAccountDirectory):
    """The first save loses against another writer that saved ``racer(stored profile)`` just before it (an upgrade
    or an operator's status between the flag's read and its save)."""

    def __init__(self, racer: Callable[[AccountProfile], AccountProfile]) -> None:
        super().__init__()
        self.racer, self.raced = racer, False

    def save(self, profile: AccountProfile) -> AccountProfile:
        if not self.raced:
            self.raced = True
            super().save(self.racer(self.profiles[profile.account_id]))
        return super().save(profile)


@pytest.mark.parametrize(
    ("reason", "racer", "status", "tier"),
    [
        (
            "upgraded to Team meanwhile",
            lambda p: replace(p, changes=(*p.changes, TierChange(datetime(2026, 11, 10, tzinfo=UTC), "team"))),
            "active",
            "team",
        ),
        ("suspended by an operator meanwhile", lambda p: replace(p, status="suspended"), "suspended", "personal"),
    ],
)
def test_given_the_account_changed_between_the_flags_read_and_its_hold_then_it_is_judged_as_it_is_now(
    reason: str, racer: Callable[[AccountProfile], AccountProfile], status: str, tier: str
) -> None:
    directory = RacingDirectory(racer)
    directory.register(profile("free-1"))
    notifier = Notifier()
    flagged = flag(STORM, ports(directory, notifier), policy(True), NOW_MS)
    stored = directory.registered(["free-1"])["free-1"]
    assert (stored.status, stored.tier_at(NOW)) == (status, tier), reason
    assert (flagged.outcome, flagged.held) == ("sent", False), reason
    assert "Nothing was changed" in notifier.sent[0][1]


def test_given_the_profile_changing_on_every_save_then_the_flag_is_released_and_run_again() -> None:
    class Busy(InMemoryAccountDirectory):
        def save(self, profile: AccountProfile) -> AccountProfile:
            raise ProfileChangedError("another writer")

    directory = Busy()
    directory.register(profile("free-1"))
    notifier = Notifier()
    p = ports(directory, notifier)
    with pytest.raises(OperatorAlertFailedError, match="changed meanwhile"):
        flag(STORM, p, policy(True), NOW_MS)
    assert notifier.sent == []
    assert p.ledger.claim("free-1", "abuse_connection_storm", STORM.key, NOW_MS + 1, 60_000)  # released


def test_given_one_attempts_failed_and_action_required_alerts_then_one_failed_payment_is_counted() -> None:
    """D348 (amended, review): attempt 1 of a 3-D Secure payment announced twice (failed, then action-required:
    ``in_1:1`` and ``in_1:1:action_required``), attempt 2 once (``in_1:2:action_required``): 2 failed payments,
    below the 3 in 30 days that flag - no flag, the operator told nothing. Attempt 3 (``in_1:3``) is the third:
    flagged once."""
    directory = InMemoryAccountDirectory()
    directory.register(profile("acct-1"))
    payments, notifier = InMemoryPaymentSignals(), Notifier()
    operator = OperatorPorts(InMemoryOperatorLedger(), notifier, directory, payments)

    def alert(suffix: str) -> list[Announced]:
        detail = {
            "event_id": f"payment-failed:{suffix}",
            "account_id": "acct-1",
            "invoice_id": "acct-1/2026-11",
            "total": "29.00",
            "reason": "action_required" if suffix.endswith(":action_required") else "payment_failed",
            "occurred_at": "2026-11-15T10:00:00+00:00",
        }
        return on_payment_failed(detail, operator, policy(auto_hold=False), NOW_MS)

    for suffix in ("in_1:1", "in_1:1:action_required", "in_1:2:action_required"):
        assert alert(suffix) == []
    assert sorted(payments.failures["acct-1"]) == ["payment-failed:in_1:1", "payment-failed:in_1:2"]
    assert (notifier.sent, operator.ledger.items) == ([], {})  # 2 < 3: no flag
    assert [found.outcome for found in alert("in_1:3")] == ["sent"]  # 3 failed payments in 30 days
    assert "Observed: 3 failed payments in the last 30 days." in notifier.sent[0][1]
