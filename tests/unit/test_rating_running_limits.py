"""Budgets and hard limits count the calls still going on (D71): rating's announcement and the sweeper's
periodic check rate the month to date with open sessions' minutes up to now, as month to date does. Hand-worked:
Personal includes 100,000 messages and 10,000 audio minutes; 110,000 messages = 10,000 over x $0.00012 = $1.20."""

from __future__ import annotations

from dataclasses import replace
from datetime import UTC, datetime
from decimal import Decimal
from fractions import Fraction
from typing import Any

from kilo_billing.accounts import AccountProfile
from kilo_billing.catalog import default_catalog
from kilo_billing.contracts import HardLimitStillReachedV1, UsageThresholdCrossedV1
from kilo_billing.publisher import PublishError
from kilo_billing.rating import TierChange
from kilo_billing.usage_events import UsageEventRecord
from kilo_rate_usage.logic import check_running_limits, rate_batch
from kilo_rate_usage.model import AttributionRule, Billing, ClosedBy, RatingConfig, Session, StoredSession
from tests.fakes import InMemoryUsageRepository, RecordingPublisher

CONFIG = RatingConfig(AttributionRule(), default_catalog().for_period)
JAN_1 = datetime(2026, 1, 1, tzinfo=UTC)
NOV_1 = int(datetime(2026, 11, 1, tzinfo=UTC).timestamp() * 1000)
NOV_5 = int(datetime(2026, 11, 5, tzinfo=UTC).timestamp() * 1000)
DAY_MS = 86_400_000


def limited(repo: InMemoryUsageRepository, hard: str) -> None:
    repo.accounts.register(AccountProfile("acct_run", (TierChange(JAN_1, "personal"),), hard_limit_usd=Decimal(hard)))


def open_call(repo: InMemoryUsageRepository, *participants: str, start_ms: int = NOV_1) -> None:
    """Audio-only participants in a call since ``start_ms``, stored open as rating stores them (no minutes yet)."""
    for sid in participants:
        session = Session("RM_run", sid, sid, "standard", "acct_run", start_ms, None, None, False, Billing.ROOM_RULE,
                          Fraction(0), Fraction(0), (), False, start_ms, "run")  # fmt: skip
        repo.sessions[session.key] = StoredSession(session, {}, f"v-{sid}")


def messages(repo: InMemoryUsageRepository, publisher: RecordingPublisher, quantity: int, now_ms: int) -> None:
    record = UsageEventRecord("kilo-app", f"m-{quantity}", "acct_run", "messages", quantity, NOV_1, "h", NOV_1)
    repo.store_event(record)
    rate_batch([], [record], repo, publisher, CONFIG, now_ms)


def announced(publisher: RecordingPublisher) -> list[tuple[str, int, str]]:
    return [
        (d["meter"], d["threshold_percent"], d["used"])
        for t, d in publisher.published
        if t == UsageThresholdCrossedV1.DETAIL_TYPE and d["meter"] != "messages"
    ]


def test_given_an_open_call_when_usage_is_rated_then_the_hard_limit_counts_its_minutes_so_far() -> None:
    repo, publisher = InMemoryUsageRepository(), RecordingPublisher()
    limited(repo, "1.50")
    open_call(repo, "PA_a", "PA_b")
    # Nov 1 .. Nov 5 = 5,760 minutes each, 11,520 audio: 1,520 over x $0.00036 = $0.5472 -> $0.55; + $1.20 = $1.75
    messages(repo, publisher, 110_000, NOV_5)
    assert announced(publisher) == [("hard_limit", 100, "1.75")]


def test_given_no_open_call_then_the_same_usage_stays_below_the_limit() -> None:
    repo, publisher = InMemoryUsageRepository(), RecordingPublisher()
    limited(repo, "1.50")
    messages(repo, publisher, 110_000, NOV_5)  # $1.20 < $1.50
    assert announced(publisher) == []


def test_given_a_call_passing_the_limit_with_no_event_then_the_periodic_check_announces_it_once() -> None:
    repo, publisher = InMemoryUsageRepository(), RecordingPublisher()
    limited(repo, "0.50")
    open_call(repo, "PA_a", "PA_b")
    # 3 days: 2 x 4,320 = 8,640 audio, inside the 10,000 included: $0.00
    assert check_running_limits(repo, publisher, CONFIG, NOV_1 + 3 * DAY_MS, unpublished=[]) == 0
    # 5 days: 2 x 7,200 = 14,400: 4,400 over x $0.00036 = $1.584 -> $1.58 >= $0.50
    assert check_running_limits(repo, publisher, CONFIG, NOV_1 + 5 * DAY_MS, unpublished=[]) == 1
    assert announced(publisher) == [("hard_limit", 100, "1.58")]
    assert publisher.published[0][1]["event_id"] == "threshold:acct_run:2026-11:hard_limit@0.5:100"
    assert check_running_limits(repo, publisher, CONFIG, NOV_1 + 6 * DAY_MS, unpublished=[]) == 0  # once
    # an account without a budget or hard limit is not even rated
    other = InMemoryUsageRepository()
    open_call(other, "PA_a", "PA_b")
    assert check_running_limits(other, publisher, CONFIG, NOV_1 + 30 * DAY_MS, unpublished=[]) == 0


class StaleIndex(InMemoryUsageRepository):
    """The open-sessions index lags the table (a GSI is eventually consistent): it still lists sessions as open."""

    def __init__(self) -> None:
        super().__init__()
        self.listed: list[StoredSession] = []

    def open_sessions(self, account: str | None = None) -> list[StoredSession]:
        return [s for s in self.listed if account is None or s.session.account == account]


def test_given_the_index_still_listing_a_call_that_ended_then_it_is_not_counted_twice() -> None:
    repo, publisher = StaleIndex(), RecordingPublisher()
    limited(repo, "0.50")
    open_call(repo, "PA_a", "PA_b")
    repo.listed = list(repo.sessions.values())
    # the call ended at Nov 4 (2 x 4,320 = 8,640 audio, in the aggregate: $0.00); the index still lists it open
    for key, stored in list(repo.sessions.items()):
        closed = replace(stored.session, end_ms=NOV_1 + 3 * DAY_MS, closed_by=ClosedBy.LEFT)
        repo.sessions[key] = replace(stored, session=closed, version="v-closed")
    segment = int(JAN_1.timestamp())
    repo.counters[("acct_run", "2026-11")] = {(segment, "audio"): 8_640}
    # counted open as well it would be 8,640 + 2 x 7,200 = 23,040 audio: over the limit; re-read, it is closed, and
    # only what the aggregate says is announced: 8,640 of 10,000 audio = 86 %, its 50 and 80 % (no bill, no limit)
    assert check_running_limits(repo, publisher, CONFIG, NOV_1 + 5 * DAY_MS, unpublished=[]) == 2
    assert announced(publisher) == [("audio", 50, "8640"), ("audio", 80, "8640")]


def still_reached(publisher: RecordingPublisher) -> list[tuple[str, str, str]]:
    """The sweeper's ``HardLimitStillReached.v1`` events: (scope, used, event id)."""
    return [
        (d["scope"], d["used"], d["event_id"])
        for t, d in publisher.published
        if t == HardLimitStillReachedV1.DETAIL_TYPE
    ]


def test_given_a_participant_joining_after_the_hard_limit_was_enforced_then_each_run_says_it_is_still_reached() -> None:
    """Review re2 F2: the crossing is announced once; a participant joining afterwards (a token minted before the
    limit, or an app not asking the entitlement check) was never announced again, its call ran all month."""
    repo, publisher = InMemoryUsageRepository(), RecordingPublisher()
    limited(repo, "0.50")
    open_call(repo, "PA_a", "PA_b")
    # 5 days: 2 x 7,200 = 14,400 audio: 4,400 over x $0.00036 = $1.584 -> $1.58 >= $0.50: announced (the crossing)
    assert check_running_limits(repo, publisher, CONFIG, NOV_1 + 5 * DAY_MS, unpublished=[]) == 1
    assert still_reached(publisher) == []  # announced in this run: the crossing's own event enforces it
    # enforcement removed PA_a and PA_b at day 5; rating closed their 14,400 audio minutes into the aggregate
    repo.sessions.clear()
    repo.counters[("acct_run", "2026-11")] = {(int(JAN_1.timestamp()), "audio"): 14_400}
    assert (
        check_running_limits(repo, publisher, CONFIG, NOV_1 + 5 * DAY_MS + 300_000, unpublished=[]) == 0
    )  # no call: nothing
    assert still_reached(publisher) == []
    open_call(repo, "PA_c", start_ms=NOV_1 + 6 * DAY_MS)  # joins a day later
    # day 7: 14,400 + 1,440 = 15,840 audio: 5,840 over x $0.00036 = $2.1024 -> $2.10 (still >= $0.50; "2.1" as
    # decimal_str writes it, like the crossing's used)
    # no new hard-limit crossing; 3 = the closed 14,400 of 10,000 audio's allowance 50/80/100 % (here first read: no
    # rating of the close in this test; rating announces them when it rates it)
    assert check_running_limits(repo, publisher, CONFIG, NOV_1 + 7 * DAY_MS, unpublished=[]) == 3
    # day 10: 14,400 + 4 x 1,440 = 20,160 audio: 10,160 over x $0.00036 = $3.6576 -> $3.66
    assert check_running_limits(repo, publisher, CONFIG, NOV_1 + 10 * DAY_MS, unpublished=[]) == 0
    assert still_reached(publisher) == [
        ("0.5", "2.1", f"still_reached:acct_run:2026-11:hard_limit@0.5:{NOV_1 + 7 * DAY_MS}"),
        ("0.5", "3.66", f"still_reached:acct_run:2026-11:hard_limit@0.5:{NOV_1 + 10 * DAY_MS}"),
    ]
    # the crossing itself: still once (one alert)
    hard = [(meter, percent, used) for meter, percent, used in announced(publisher) if meter == "hard_limit"]
    assert hard == [("hard_limit", 100, "1.58")]
    # the limit raised to $5 (a new setting, not reached: $3.66 + 1,440 x $0.00036 = $4.18 at day 11): nothing
    repo.accounts.profiles["acct_run"] = replace(
        repo.accounts.profiles["acct_run"], hard_limit_usd=Decimal(5), hard_limit_version=1
    )
    assert check_running_limits(repo, publisher, CONFIG, NOV_1 + 11 * DAY_MS, unpublished=[]) == 0
    assert len(still_reached(publisher)) == 2


class StillReachedThrottled(RecordingPublisher):
    """The bus refusing ``HardLimitStillReached.v1`` (a throttled PutEvents) while ``throttled``; the rest published."""

    throttled = True

    def publish(self, detail_type: str, detail: Any) -> None:
        if self.throttled and detail_type == HardLimitStillReachedV1.DETAIL_TYPE:
            raise PublishError("ThrottlingException")
        super().publish(detail_type, detail)


def test_given_a_still_reached_publish_refused_then_another_accounts_first_crossing_is_still_published() -> None:
    """Review v4 #2: acct_a's still-reached event throttled must not stop the run before acct_b (read after it)."""
    repo, publisher = InMemoryUsageRepository(), StillReachedThrottled()
    for account, hard in (("acct_a", "0.50"), ("acct_b", "3.00")):
        repo.accounts.register(AccountProfile(account, (TierChange(JAN_1, "personal"),), hard_limit_usd=Decimal(hard)))
        for sid in (f"PA_{account}_1", f"PA_{account}_2"):
            session = Session(f"RM_{account}", sid, sid, "standard", account, NOV_1, None, None, False,
                              Billing.ROOM_RULE, Fraction(0), Fraction(0), (), False, NOV_1, "run")  # fmt: skip
            repo.sessions[session.key] = StoredSession(session, {}, f"v-{sid}")
    # day 5, each account: 2 x 7,200 = 14,400 audio: 4,400 over x $0.00036 = $1.584 -> $1.58: >= $0.50 (a crosses),
    # < $3 (b not)
    assert check_running_limits(repo, publisher, CONFIG, NOV_1 + 5 * DAY_MS, unpublished=[]) == 1
    # day 7: 2 x 10,080 = 20,160 audio: 10,160 over x $0.00036 = $3.6576 -> $3.66: a still reached (its event
    # throttled), b crosses its $3: announced in the same run
    unpublished: list[str] = []
    assert check_running_limits(repo, publisher, CONFIG, NOV_1 + 7 * DAY_MS, unpublished=unpublished) == 1
    hard = [(d["account_id"], d["used"]) for t, d in publisher.published
            if t == UsageThresholdCrossedV1.DETAIL_TYPE and d["meter"] == "hard_limit"]  # fmt: skip
    assert hard == [("acct_a", "1.58"), ("acct_b", "3.66")]
    assert unpublished == ["acct_a: ThrottlingException"]
    assert still_reached(publisher) == []
    # day 8, the bus answering again: 2 x 11,520 = 23,040 audio: 13,040 over x $0.00036 = $4.6944 -> $4.69, both
    # accounts still reached and announced before: each said again (the retry of acct_a's day-7 event)
    publisher.throttled = False
    assert check_running_limits(repo, publisher, CONFIG, NOV_1 + 8 * DAY_MS, unpublished=[]) == 0
    assert [(scope, used) for scope, used, _ in still_reached(publisher)] == [("0.5", "4.69"), ("3", "4.69")]
