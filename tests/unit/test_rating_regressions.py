"""Regressions from the review of rating and ingest: each test is a bug that was found and fixed."""

from __future__ import annotations

import json
from datetime import UTC, datetime
from decimal import Decimal
from fractions import Fraction
from typing import Any

import pytest

from kilo_billing.accounts import UNATTRIBUTED, AccountProfile
from kilo_billing.catalog import default_catalog
from kilo_billing.month_to_date import open_session_extra
from kilo_billing.rating import TierChange
from kilo_billing.usage_events import UsageEventRecord
from kilo_dev import livekit_events as lk
from kilo_rate_usage.aggregates import open_figures, rate_aggregate
from kilo_rate_usage.logic import rate_batch
from kilo_rate_usage.model import Aggregate, AttributionRule, Billing, RatingConfig, Session, StoredSession
from tests.fakes import InMemoryUsageRepository, RecordingPublisher, registered

CONFIG = RatingConfig(AttributionRule(), default_catalog().for_period)
NOV_2 = int(datetime(2026, 11, 2, tzinfo=UTC).timestamp() * 1000)


def deliver(repo: InMemoryUsageRepository, publisher: Any, bodies: list[bytes]) -> Any:
    records = [lk.to_record(body) for body in bodies]
    for record in records:
        repo.store_event(record)
    return rate_batch(records, [], repo, publisher, CONFIG, NOV_2)


def test_given_an_account_id_with_separators_from_participant_metadata_then_it_is_not_trusted_and_nothing_breaks() -> (
    None
):
    repo, publisher = InMemoryUsageRepository(registered("acct1")), RecordingPublisher()
    room = lk.Room("RM_sep", "r")  # no account in the room's metadata
    t0 = NOV_2 // 1000
    mallory = lk.Participant("PA_m", "mallory", t0 * 1000)
    bob = lk.Participant("PA_b", "bob", t0 * 1000, attributes={"kilo.account_id": "acct1"})
    left = json.loads(lk.participant_left(room, mallory, t0 + 120))
    left["participant"]["metadata"] = json.dumps({"account_id": "x;y|z"})
    deliver(repo, publisher, [lk.participant_joined(room, mallory), lk.participant_joined(room, bob),
                              json.dumps(left).encode()])  # fmt: skip
    deliver(repo, publisher, [lk.participant_left(room, bob, t0 + 180)])  # the room keeps rating
    assert repo.totals(UNATTRIBUTED, "2026-11") == {"audio": 2}  # mallory: 120 s, untrusted id -> unattributed
    assert repo.totals("acct1", "2026-11") == {"audio": 3}
    # operators hear of it: one UnattributedUsage.v1 for mallory's connection (2 minutes), none for bob
    assert [(t, d) for t, d in publisher.published if t == "UnattributedUsage.v1"] == [
        (
            "UnattributedUsage.v1",
            {"schema_version": 1, "room_sid": "RM_sep", "participant_sid": "PA_m", "identity": "mallory",
             "period": "2026-11", "minutes": 2, "unregistered_account": None},
        )
    ]  # fmt: skip
    deliver(repo, publisher, [lk.participant_left(room, mallory, t0 + 120)])  # a second left: nothing changes
    assert len([t for t, _ in publisher.published if t == "UnattributedUsage.v1"]) == 1


def test_given_publishing_a_threshold_fails_after_the_commit_then_the_retry_announces_it() -> None:
    repo = InMemoryUsageRepository()
    usage = [UsageEventRecord("app", "k1", "acct_t", "messages", 60_000, NOV_2, "h", NOV_2)]
    repo.store_event(usage[0])

    class FailingOnce(RecordingPublisher):
        failed = False

        def publish(self, detail_type: str, detail: dict[str, object]) -> None:
            if not self.failed:
                self.failed = True
                raise RuntimeError("EventBridge unavailable")
            super().publish(detail_type, detail)

    publisher = FailingOnce()
    with pytest.raises(RuntimeError):
        rate_batch([], usage, repo, publisher, CONFIG, NOV_2)
    rate_batch([], usage, repo, publisher, CONFIG, NOV_2)  # Lambda retries the batch
    assert [(d["meter"], d["threshold_percent"]) for _, d in publisher.published] == [("messages", 50)]
    assert repo.totals("acct_t", "2026-11") == {"messages": 60_000}  # and nothing was counted twice


def test_given_an_account_whose_history_starts_mid_month_then_it_rates_and_the_fee_starts_at_signup() -> None:
    profile = AccountProfile("acct_new", (TierChange(datetime(2026, 11, 16, tzinfo=UTC), "team"),))
    rated = rate_aggregate(Aggregate("acct_new", "2026-11"), profile, default_catalog().latest)
    # free until the signup on the 16th, then Team for 15 of 30 days: 29 x 15/30 = 14.50
    assert rated.fee == Decimal("14.50")


def test_given_overage_in_the_segment_before_an_upgrade_then_the_100_percent_alert_fires() -> None:
    repo, publisher = InMemoryUsageRepository(), RecordingPublisher()
    changes = (
        TierChange(datetime(2026, 1, 1, tzinfo=UTC), "personal"),
        TierChange(datetime(2026, 11, 10, tzinfo=UTC), "team"),
    )
    repo.accounts.register(AccountProfile("acct_up", changes))
    nov_3 = int(datetime(2026, 11, 3, tzinfo=UTC).timestamp() * 1000)
    # personal for 9 of 30 days: 5,000 x 9/30 = 1,500 video minutes included; 3,000 used -> 200 %
    usage = [UsageEventRecord("app", "v", "acct_up", "messages", 0, nov_3, "h", nov_3)]
    repo.store_event(usage[0])
    repo.counters[("acct_up", "2026-11")] = {(int(datetime(2026, 11, 1, tzinfo=UTC).timestamp()), "video"): 3000}
    rate_batch([], usage, repo, publisher, CONFIG, NOV_2)
    assert ("video", 100) in [(d["meter"], d["threshold_percent"]) for _, d in publisher.published]


def test_given_an_open_session_across_the_month_start_then_month_to_date_counts_each_month_its_own_part() -> None:
    start = int(datetime(2026, 3, 31, 22, 0, tzinfo=UTC).timestamp() * 1000)
    now = int(datetime(2026, 4, 1, 0, 30, tzinfo=UTC).timestamp() * 1000)
    session = Session("RM", "PA", "a", "STANDARD", "acct", start, None, None, False, Billing.ROOM_RULE,
                      Fraction(0), Fraction(7140), (), video_active=False, as_of_ms=start + 7_140_000)  # fmt: skip
    stored = StoredSession(session, {}, "v")
    profile = AccountProfile.default("acct")
    march = open_session_extra(open_figures([stored]), profile, now, "2026-03")
    april = open_session_extra(open_figures([stored]), profile, now, "2026-04")
    # March: 22:00-24:00 = 120 min, of which 7,140 s (119 min) video; April: 00:00-00:30 audio only
    assert sum(q for (_, m), q in march.items() if m == "video") == 119
    assert sum(q for (_, m), q in march.items() if m == "audio") == 1
    assert sum(q for (_, m), q in april.items() if m == "video") == 0
    assert sum(q for (_, m), q in april.items() if m == "audio") == 30
    assert open_session_extra(open_figures([stored]), profile, now, "2026-02") == {}


def test_given_a_new_event_in_a_room_then_closed_sessions_are_not_rewritten() -> None:
    repo, publisher = InMemoryUsageRepository(), RecordingPublisher()
    room = lk.Room("RM_big", "r", account_id="acct_big")
    t0 = NOV_2 // 1000
    bodies = []
    for index in range(20):
        person = lk.Participant(f"PA_{index}", f"p{index}", (t0 + index) * 1000)
        bodies += [lk.participant_joined(room, person), lk.participant_left(room, person, t0 + index + 60)]
    deliver(repo, publisher, bodies)
    outcome = deliver(
        repo, publisher, [lk.participant_joined(room, lk.Participant("PA_late", "late", (t0 + 999) * 1000))]
    )
    assert outcome.sessions_changed == 1  # only the new one


def test_given_a_non_ascii_usage_signature_then_401_not_a_crash() -> None:
    from kilo_webhook_ingest.http import status_of  # noqa: PLC0415
    from kilo_webhook_ingest.model import UnauthorizedError  # noqa: PLC0415
    from kilo_webhook_ingest.usage import verify_signature  # noqa: PLC0415

    with pytest.raises(UnauthorizedError) as rejected:
        verify_signature(b"{}", "kilo-app", "t=100,v1=\u00e9", ["secret"], now=100, tolerance=300)
    assert status_of(rejected.value) == 401
