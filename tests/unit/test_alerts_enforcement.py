"""Hard limit enforcement (kilo_alerts.enforcement) on in-memory ports: when a limit counts as reached, what audio-only
changes and keeps, the permission given back when the limit is lifted, and claims another delivery holds. The LiveKit
adapter itself runs against a RoomService stand-in in tests/integration/test_hard_limit_enforcement.py."""

from __future__ import annotations

import json
from datetime import UTC, datetime
from decimal import Decimal

import pytest

from kilo_alerts.enforcement import (
    EnforcementIncompleteError,
    EnforcementPolicy,
    hard_limit_reached,
    remove_account,
    restrict_account,
)
from kilo_alerts.model import EnforcementAction, EnforcementRecord, Participant
from kilo_billing.accounts import AccountProfile, TierChange
from kilo_billing.entitlements import Reading
from tests.fakes import InMemoryAccountDirectory, InMemoryEntitlements
from tests.unit.alerts_fakes import (
    ENFORCEMENT_LEASE_MS,
    FakeRooms,
    InMemoryEnforcementLedger,
    RecordingScheduler,
    StaticSessions,
)

NOW = datetime(2026, 11, 20, 10, 0, tzinfo=UTC)
NOW_MS = int(NOW.timestamp() * 1000)
HOST = Participant("webinar", "host")
VIEWER = Participant("webinar", "viewer-42")
RECORDER = Participant("webinar", "recorder")
# what each may do before the limit: the host publishes anything; the viewer only subscribes; the recorder is hidden
BEFORE: dict[tuple[str, str], dict[str, object]] = {
    ("webinar", "host"): {"can_publish": True, "can_subscribe": True, "sources": [], "hidden": False},
    ("webinar", "viewer-42"): {"can_publish": False, "can_subscribe": True, "sources": [], "hidden": False},
    ("webinar", "recorder"): {"can_publish": True, "can_subscribe": True, "sources": [], "hidden": True},
}


def entitlements(status: str, used: str, hard: str | None = "50", period: str = "2026-11") -> InMemoryEntitlements:
    profile = AccountProfile(
        "acct_1",
        (TierChange(datetime(2026, 1, 1, tzinfo=UTC), "team"),),
        hard_limit_usd=Decimal(hard) if hard is not None else None,
        status=status,
    )
    found = InMemoryEntitlements(InMemoryAccountDirectory(profile))
    found.record("acct_1", "hard_limit", Reading(period, Decimal(used), Decimal(hard or "0"), NOW.isoformat()))
    return found


@pytest.mark.parametrize("status", ["active", "past_due", "abuse_hold", "suspended"])
def test_given_the_bill_over_the_hard_limit_then_it_is_reached_whatever_the_accounts_status(status: str) -> None:
    # $50.40 billed against a $50 hard limit: reached, for a declined card (past_due) or a hold just the same
    assert hard_limit_reached("acct_1", entitlements(status, "50.40"), NOW_MS) == "50"
    assert hard_limit_reached("acct_1", entitlements(status, "50.00"), NOW_MS) == "50"  # at the limit counts
    assert hard_limit_reached("acct_1", entitlements(status, "49.99"), NOW_MS) is None
    assert hard_limit_reached("acct_1", entitlements(status, "50.40", hard=None), NOW_MS) is None
    assert hard_limit_reached("acct_1", entitlements(status, "80", period="2026-10"), NOW_MS) is None  # last month's


def test_given_a_past_due_account_over_its_hard_limit_then_its_running_calls_are_removed_after_the_grace() -> None:
    rooms, ledger = FakeRooms({("webinar", "host"): dict(BEFORE[("webinar", "host")])}), InMemoryEnforcementLedger()
    sessions = StaticSessions(HOST)
    state = entitlements("past_due", "50.40")
    restrict_account(
        "acct_1", "2026-11", "50", sessions, rooms, ledger, RecordingScheduler(), EnforcementPolicy(), NOW_MS
    )
    remove_account("acct_1", "2026-11", "50", sessions, rooms, ledger, state, NOW_MS + 120_000)
    assert rooms.calls == [("audio_only", "webinar", "host"), ("remove", "webinar", "host")]
    assert rooms.permissions == {}


def restricted() -> tuple[FakeRooms, InMemoryEnforcementLedger, list[EnforcementRecord]]:
    rooms = FakeRooms({key: dict(value) for key, value in BEFORE.items()})
    ledger, scheduler = InMemoryEnforcementLedger(), RecordingScheduler()
    sessions = StaticSessions(HOST, VIEWER, RECORDER)
    records = restrict_account(
        "acct_1", "2026-11", "50", sessions, rooms, ledger, scheduler, EnforcementPolicy(), NOW_MS
    )
    assert scheduler.scheduled == [("acct_1", "2026-11", 120, "50")]
    return rooms, ledger, records


def test_given_audio_only_then_only_publishers_are_narrowed_and_everything_else_they_had_is_kept() -> None:
    rooms, _, records = restricted()
    assert rooms.permissions == {
        ("webinar", "host"): {"can_publish": True, "can_subscribe": True, "sources": ["microphone"], "hidden": False},
        # the subscribe-only viewer is left alone: it never gains a microphone
        ("webinar", "viewer-42"): {"can_publish": False, "can_subscribe": True, "sources": [], "hidden": False},
        # the hidden recorder stays hidden
        ("webinar", "recorder"): {
            "can_publish": True,
            "can_subscribe": True,
            "sources": ["microphone"],
            "hidden": True,
        },
    }
    outcomes = {(r.identity, r.action.value): r.outcome for r in records}
    assert outcomes == {
        ("host", "audio_only"): "done",
        ("recorder", "audio_only"): "done",
        ("viewer-42", "audio_only"): "skipped",
        ("-", "schedule_removal"): "done",
    }


@pytest.mark.parametrize(
    ("reason", "state", "at_ms"),
    [
        ("limit raised to $80 within the grace", entitlements("active", "50.40", hard="80"), NOW_MS + 120_000),
        # the month turned during the grace: December's bill is $0 so far, November's cap no longer applies
        (
            "a new month",
            entitlements("active", "50.40"),
            int(datetime(2026, 12, 1, 0, 1, tzinfo=UTC).timestamp() * 1000),
        ),
    ],
)
def test_given_the_limit_lifted_before_the_removal_then_each_restricted_participant_gets_its_permission_back(
    reason: str, state: InMemoryEntitlements, at_ms: int
) -> None:
    rooms, ledger, _ = restricted()
    sessions = StaticSessions(HOST, VIEWER, RECORDER)
    done = remove_account("acct_1", "2026-11", "50", sessions, rooms, ledger, state, at_ms)
    assert rooms.permissions == BEFORE, reason
    assert sorted((r.action.value, r.identity, r.outcome) for r in done) == [
        ("remove", "-", "lifted"),
        ("restore", "host", "done"),
        ("restore", "recorder", "done"),
    ]
    assert [call for call in rooms.calls if call[0] != "audio_only"] == [
        ("restore", "webinar", "host"),
        ("restore", "webinar", "recorder"),
    ]
    # the removal step delivered again restores nothing twice
    assert remove_account("acct_1", "2026-11", "50", sessions, rooms, ledger, state, at_ms + 1000) == []
    assert len(rooms.calls) == 5


def test_given_a_restore_failing_for_now_then_the_step_is_retried_and_only_the_missing_one_is_restored() -> None:
    from kilo_alerts.ports import RoomControlFailedError  # noqa: PLC0415

    rooms, ledger, _ = restricted()
    rooms.failures = [RoomControlFailedError("RoomService 503")]
    state, sessions = entitlements("active", "50.40", hard="80"), StaticSessions(HOST, VIEWER, RECORDER)
    with pytest.raises(EnforcementIncompleteError):
        remove_account("acct_1", "2026-11", "50", sessions, rooms, ledger, state, NOW_MS + 120_000)
    assert rooms.permissions[("webinar", "host")]["sources"] == ["microphone"]  # the host's restore failed
    remove_account("acct_1", "2026-11", "50", sessions, rooms, ledger, state, NOW_MS + 480_000)
    assert rooms.permissions == BEFORE
    restores = [call for call in rooms.calls if call[0] == "restore"]
    assert restores == [
        ("restore", "webinar", "host"),
        ("restore", "webinar", "recorder"),
        ("restore", "webinar", "host"),
    ]


def test_given_a_claim_another_delivery_holds_then_the_event_is_retried_not_taken_as_done() -> None:
    rooms = FakeRooms({("webinar", "host"): dict(BEFORE[("webinar", "host")])})
    ledger, scheduler, sessions = InMemoryEnforcementLedger(), RecordingScheduler(), StaticSessions(HOST)
    crashed = EnforcementRecord(
        "acct_1", "2026-11", "webinar", "host", EnforcementAction.AUDIO_ONLY, "", NOW_MS, limit="50"
    )
    assert ledger.claim(crashed)  # a delivery claimed the host's audio-only step, then its Lambda timed out

    # the queue delivers the event again 60 s later: the claim is not a decision - retried, the removal not scheduled
    with pytest.raises(EnforcementIncompleteError) as raised:
        restrict_account(
            "acct_1", "2026-11", "50", sessions, rooms, ledger, scheduler, EnforcementPolicy(), NOW_MS + 60_000
        )
    assert [(r.identity, r.outcome) for r in raised.value.records] == [("host", "retry")]
    assert (rooms.calls, scheduler.scheduled) == ([], [])

    # delivered again once the claim is older than the lease: taken over, done, the removal scheduled
    later = NOW_MS + ENFORCEMENT_LEASE_MS + 1
    restrict_account("acct_1", "2026-11", "50", sessions, rooms, ledger, scheduler, EnforcementPolicy(), later)
    assert rooms.calls == [("audio_only", "webinar", "host")]
    assert scheduler.scheduled == [("acct_1", "2026-11", 120, "50")]


def test_given_a_crash_between_claiming_and_scheduling_the_removal_then_the_redelivery_schedules_it() -> None:
    ledger, scheduler = InMemoryEnforcementLedger(), RecordingScheduler()
    marker = EnforcementRecord(
        "acct_1", "2026-11", "-", "-", EnforcementAction.SCHEDULE_REMOVAL, "", NOW_MS, limit="50"
    )
    assert ledger.claim(marker)  # claimed, then the Lambda died before SQS answered
    args = ("acct_1", "2026-11", "50", StaticSessions(), FakeRooms({}), ledger, scheduler, EnforcementPolicy())
    with pytest.raises(EnforcementIncompleteError):
        restrict_account(*args, NOW_MS + 60_000)  # type: ignore[arg-type]
    assert scheduler.scheduled == []
    restrict_account(*args, NOW_MS + 360_000)  # type: ignore[arg-type]  # the queue's visibility timeout later
    assert scheduler.scheduled == [("acct_1", "2026-11", 120, "50")]


def test_given_a_limit_set_again_while_still_narrowed_then_lifting_it_gives_back_the_permission_before_either() -> None:
    # bill $70: hard limit $50 (first setting, 50v1) reached -> audio-only; within the grace raised to $60 (60v2),
    # still reached -> restricted again while already narrowed; then raised to $200: both removal steps find it lifted
    ledger, scheduler, sessions = InMemoryEnforcementLedger(), RecordingScheduler(), StaticSessions(HOST, RECORDER)
    both = FakeRooms({key: dict(BEFORE[key]) for key in (("webinar", "host"), ("webinar", "recorder"))})
    policy = EnforcementPolicy()
    restrict_account("acct_1", "2026-11", "50v1", sessions, both, ledger, scheduler, policy, NOW_MS)
    restrict_account("acct_1", "2026-11", "60v2", sessions, both, ledger, scheduler, policy, NOW_MS + 60_000)
    # the second step keeps what the host had before the first, not the microphone-only permission it reads now
    host_saved = {
        r.limit: json.loads(r.saved)
        for r in ledger.actions("acct_1")
        if r.action is EnforcementAction.AUDIO_ONLY and r.identity == "host"
    }
    assert host_saved == {"50v1": BEFORE[("webinar", "host")], "60v2": BEFORE[("webinar", "host")]}
    lifted = entitlements("active", "70", hard="200")
    first = remove_account("acct_1", "2026-11", "50v1", sessions, both, ledger, lifted, NOW_MS + 120_000)
    assert sorted((r.action.value, r.identity, r.outcome) for r in first) == [
        ("remove", "-", "lifted"),
        ("restore", "host", "done"),
        ("restore", "recorder", "done"),
    ]
    second = remove_account("acct_1", "2026-11", "60v2", sessions, both, ledger, lifted, NOW_MS + 180_000)
    assert [(r.action.value, r.outcome) for r in second] == [("remove", "lifted")]  # given back once, not twice
    assert both.permissions == {
        ("webinar", "host"): {"can_publish": True, "can_subscribe": True, "sources": [], "hidden": False},
        ("webinar", "recorder"): {"can_publish": True, "can_subscribe": True, "sources": [], "hidden": True},
    }
    assert [call for call in both.calls if call[0] == "restore"] == [
        ("restore", "webinar", "host"),
        ("restore", "webinar", "recorder"),
    ]


def test_given_a_participant_restored_then_a_limit_reached_again_narrows_and_saves_afresh() -> None:
    # restored under 50v1, then the limit lowered again (40v2) and reached: the new step saves what it reads now
    room = FakeRooms({("webinar", "host"): dict(BEFORE[("webinar", "host")])})
    ledger, scheduler, sessions = InMemoryEnforcementLedger(), RecordingScheduler(), StaticSessions(HOST)
    restrict_account("acct_1", "2026-11", "50v1", sessions, room, ledger, scheduler, EnforcementPolicy(), NOW_MS)
    lifted = entitlements("active", "45", hard="200")
    remove_account("acct_1", "2026-11", "50v1", sessions, room, ledger, lifted, NOW_MS + 120_000)
    room.permissions[("webinar", "host")] = {**BEFORE[("webinar", "host")], "can_subscribe": False}  # the app's
    restrict_account(
        "acct_1", "2026-11", "40v2", sessions, room, ledger, scheduler, EnforcementPolicy(), NOW_MS + 180_000
    )
    [second] = [r for r in ledger.actions("acct_1") if r.action is EnforcementAction.AUDIO_ONLY and r.limit == "40v2"]
    assert json.loads(second.saved) == {"can_publish": True, "can_subscribe": False, "sources": [], "hidden": False}
