"""Hard limit enforcement (kilo_alerts.enforcement) on in-memory ports: when a limit counts as reached, what audio-only
changes and keeps, the permission given back when the limit is lifted, and claims another delivery holds. The LiveKit
adapter itself runs against a RoomService stand-in in tests/integration/test_hard_limit_enforcement.py."""

from __future__ import annotations

import hashlib
import json
from collections.abc import Callable
from datetime import UTC, datetime
from decimal import Decimal
from functools import partial

import pytest

from kilo_alerts.enforcement import (
    EnforcementIncompleteError,
    EnforcementPolicy,
    EnforcementPorts,
    hard_limit_reached,
    remove_account,
    restrict_account,
)
from kilo_alerts.model import EnforcementAction, EnforcementRecord, Narrowing, Participant
from kilo_alerts.ports import EnforcementLedger, RoomControlFailedError
from kilo_billing.accounts import AccountProfile, TierChange
from kilo_billing.entitlements import EntitlementSource, Reading
from tests.fakes import InMemoryAccountDirectory, InMemoryEntitlements
from tests.unit.alerts_fakes import (
    ENFORCEMENT_LEASE_MS,
    FakeRooms,
    InMemoryEnforcementLedger,
    RecordingScheduler,
    StaticSessions,
    enforcement_ports,
)

NOW = datetime(2026, 11, 20, 10, 0, tzinfo=UTC)
NOW_MS = int(NOW.timestamp() * 1000)
HOST = Participant("webinar", "host")
VIEWER = Participant("webinar", "viewer-42")
RECORDER = Participant("webinar", "recorder")


def pseudonym_of(identity: str) -> str:
    """D80's pseudonym, worked independently: ``erased-`` + 16 hex digits of sha256(account NUL identity)."""
    return "erased-" + hashlib.sha256(f"acct_1\x00{identity}".encode()).hexdigest()[:16]


# the records name participants by pseudonym only (D214): the names they stand for here, "-" the account's steps
NAMES = {"-": "-", **{pseudonym_of(name): name for name in ("host", "viewer-42", "recorder", "guest", "cohost")}}


def named(identity: str) -> str:
    """Who a record's pseudonym stands for (a KeyError for an identity kept in the clear)."""
    return NAMES[identity]


def enforce(
    step: Callable[[str, str, str, EnforcementPorts, EnforcementPolicy, int], list[EnforcementRecord]],
    limit: str,
    at_ms: int,
    sessions: StaticSessions,
    rooms: FakeRooms,
    ledger: EnforcementLedger,
    scheduler: RecordingScheduler,
    state: EntitlementSource | None = None,
    *,
    period: str = "2026-11",
    policy: EnforcementPolicy | None = None,
) -> list[EnforcementRecord]:
    """``step`` for acct_1 under ``limit`` at ``at_ms`` on the fakes; ``state``: the bill and hard limit the removal
    step reads; the default policy unless given."""
    ports = enforcement_ports(sessions, rooms, ledger, scheduler, state)
    return step("acct_1", period, limit, ports, policy or EnforcementPolicy(), at_ms)


restrict = partial(enforce, restrict_account)  # step 1: audio only (the removal scheduled)
remove = partial(enforce, remove_account)  # step 2: the removal step

# what each may do before the limit: the host publishes anything; the viewer only subscribes; the recorder is hidden
BEFORE: dict[tuple[str, str], dict[str, object]] = {
    ("webinar", "host"): {"can_publish": True, "can_subscribe": True, "sources": [], "hidden": False},
    ("webinar", "viewer-42"): {"can_publish": False, "can_subscribe": True, "sources": [], "hidden": False},
    ("webinar", "recorder"): {"can_publish": True, "can_subscribe": True, "sources": [], "hidden": True},
}


def entitlements(
    status: str, used: str, hard: str | None = "50", period: str = "2026-11", version: int = 0
) -> InMemoryEntitlements:
    profile = AccountProfile(
        "acct_1",
        (TierChange(datetime(2026, 1, 1, tzinfo=UTC), "team"),),
        hard_limit_usd=Decimal(hard) if hard is not None else None,
        status=status,
        hard_limit_version=version,
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
    restrict("50", NOW_MS, sessions, rooms, ledger, RecordingScheduler())
    remove("50", NOW_MS + 120_000, sessions, rooms, ledger, RecordingScheduler(), state)
    assert rooms.calls == [("audio_only", "webinar", "host"), ("remove", "webinar", "host")]
    assert rooms.permissions == {}


def restricted() -> tuple[FakeRooms, InMemoryEnforcementLedger, list[EnforcementRecord]]:
    rooms = FakeRooms({key: dict(value) for key, value in BEFORE.items()})
    ledger, scheduler = InMemoryEnforcementLedger(), RecordingScheduler()
    sessions = StaticSessions(HOST, VIEWER, RECORDER)
    records = restrict("50", NOW_MS, sessions, rooms, ledger, scheduler)
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
    outcomes = {(named(r.identity), r.action.value): r.outcome for r in records}
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
    done = remove("50", at_ms, sessions, rooms, ledger, RecordingScheduler(), state)
    assert rooms.permissions == BEFORE, reason
    assert sorted((r.action.value, named(r.identity), r.outcome) for r in done) == [
        ("remove", "-", "lifted"),
        ("restore", "host", "done"),
        ("restore", "recorder", "done"),
    ]
    assert [call for call in rooms.calls if call[0] != "audio_only"] == [
        ("restore", "webinar", "host"),
        ("restore", "webinar", "recorder"),
    ]
    # the removal step delivered again restores nothing twice
    assert remove("50", at_ms + 1000, sessions, rooms, ledger, RecordingScheduler(), state) == []
    assert len(rooms.calls) == 5


def test_given_a_restore_failing_for_now_then_the_step_is_retried_and_only_the_missing_one_is_restored() -> None:

    rooms, ledger, _ = restricted()
    rooms.failures = [RoomControlFailedError("RoomService 503")]
    state, sessions = entitlements("active", "50.40", hard="80"), StaticSessions(HOST, VIEWER, RECORDER)
    with pytest.raises(EnforcementIncompleteError):
        remove("50", NOW_MS + 120_000, sessions, rooms, ledger, RecordingScheduler(), state)
    assert rooms.permissions[("webinar", "host")]["sources"] == ["microphone"]  # the host's restore failed
    remove("50", NOW_MS + 480_000, sessions, rooms, ledger, RecordingScheduler(), state)
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
        "acct_1", "2026-11", "webinar", pseudonym_of("host"), EnforcementAction.AUDIO_ONLY, "", NOW_MS, limit="50"
    )
    assert ledger.claim(crashed)  # a delivery claimed the host's audio-only step, then its Lambda timed out

    # the queue delivers the event again 60 s later: the claim is not a decision - retried; the removal is scheduled
    # all the same, before anyone is narrowed (D361: the step that removes or gives back always comes)
    with pytest.raises(EnforcementIncompleteError) as raised:
        restrict("50", NOW_MS + 60_000, sessions, rooms, ledger, scheduler)
    assert [(named(r.identity), r.outcome) for r in raised.value.records] == [("host", "retry"), ("-", "done")]
    assert (rooms.calls, scheduler.scheduled) == ([], [("acct_1", "2026-11", 120, "50")])

    # delivered again once the claim is older than the lease: taken over, done, the removal scheduled
    later = NOW_MS + ENFORCEMENT_LEASE_MS + 1
    restrict("50", later, sessions, rooms, ledger, scheduler)
    assert rooms.calls == [("audio_only", "webinar", "host")]
    assert scheduler.scheduled == [("acct_1", "2026-11", 120, "50")]


def test_given_a_crash_between_claiming_and_scheduling_the_removal_then_the_redelivery_schedules_it() -> None:
    ledger, scheduler = InMemoryEnforcementLedger(), RecordingScheduler()
    marker = EnforcementRecord(
        "acct_1", "2026-11", "-", "-", EnforcementAction.SCHEDULE_REMOVAL, "", NOW_MS, limit="50"
    )
    assert ledger.claim(marker)  # claimed, then the Lambda died before SQS answered
    args = (
        "acct_1",
        "2026-11",
        "50",
        enforcement_ports(StaticSessions(), FakeRooms({}), ledger, scheduler),
        EnforcementPolicy(),
    )
    with pytest.raises(EnforcementIncompleteError):
        restrict_account(*args, NOW_MS + 60_000)
    assert scheduler.scheduled == []
    restrict_account(*args, NOW_MS + 360_000)  # the queue's visibility timeout later
    assert scheduler.scheduled == [("acct_1", "2026-11", 120, "50")]


class RefusingOne(FakeRooms):
    """RoomService refusing one participant's UpdateParticipant at every call while it is in its room (a 400 for its
    permission, say); everyone else's calls answer."""

    def __init__(self, permissions: dict[tuple[str, str], dict[str, object]], refused: Participant) -> None:
        super().__init__(permissions)
        self.refused = refused

    def audio_only(self, room: str, identity: str) -> Narrowing | None:
        if Participant(room, identity) == self.refused and (room, identity) in self.permissions:
            self.calls.append(("audio_only", room, identity))
            raise RoomControlFailedError("RoomService 400 invalid_argument")
        return super().audio_only(room, identity)


def test_given_one_participant_roomservice_keeps_refusing_then_the_removal_step_still_removes_everyone() -> None:
    """D361 (review re2, b): before, the removal was scheduled only once everyone was narrowed - never, with one
    participant refused at every delivery: after the queue's 5 receives the event was dead-lettered and the call went
    on audio-only, nobody removed. Now the step is scheduled first and the refused one blocks nobody."""
    rooms = RefusingOne({key: dict(BEFORE[key]) for key in (("webinar", "host"), ("webinar", "recorder"))}, HOST)
    ledger, scheduler, sessions = InMemoryEnforcementLedger(), RecordingScheduler(), StaticSessions(HOST, RECORDER)
    reached = entitlements("active", "50.40")  # $50.40 >= the $50 hard limit: still reached when the step comes
    with pytest.raises(EnforcementIncompleteError) as first:
        restrict("50", NOW_MS, sessions, rooms, ledger, scheduler)
    assert sorted((named(r.identity), r.action.value, r.outcome) for r in first.value.records) == [
        ("-", "schedule_removal", "done"),
        ("host", "audio_only", "retry"),
        ("recorder", "audio_only", "done"),
    ]
    assert scheduler.scheduled == [("acct_1", "2026-11", 120, "50")]
    # the step after the 120 s grace: the limit still reached, both removed - the host never narrowed, all the same
    removed = remove("50", NOW_MS + 120_000, sessions, rooms, ledger, scheduler, reached)
    assert sorted((named(r.identity), r.outcome) for r in removed) == [
        ("-", "done"),
        ("host", "done"),
        ("recorder", "done"),
    ]
    assert rooms.permissions == {}
    # the event delivered again (the queue's 360 s): the step ran (its "-" record), so whoever is listed is removed
    # at once - host and recorder were: nothing else to do, nothing scheduled twice
    again = restrict("50", NOW_MS + 360_000, sessions, rooms, ledger, scheduler)
    assert again == []
    assert scheduler.scheduled == [("acct_1", "2026-11", 120, "50")]


def test_given_the_limits_removal_step_found_it_lifted_then_a_late_redelivery_narrows_nobody_under_it() -> None:
    """D361: a redelivered event that read the $50 limit reached just before the customer raised it to $80 and the
    removal step gave the recorder its permission back (``lifted``): before, it then narrowed the host, whose first
    narrowing had failed - audio-only for good, the only step that gives back having run. Now nobody is narrowed."""
    rooms = FakeRooms(
        {key: dict(BEFORE[key]) for key in (("webinar", "host"), ("webinar", "recorder"))},
        RoomControlFailedError("RoomService 503"),  # the host (sorted first) fails once
    )
    ledger, scheduler, sessions = InMemoryEnforcementLedger(), RecordingScheduler(), StaticSessions(HOST, RECORDER)
    with pytest.raises(EnforcementIncompleteError):
        restrict("50", NOW_MS, sessions, rooms, ledger, scheduler)
    raised = entitlements("active", "50.40", hard="80")  # $50.40 < $80: lifted
    lifted = remove("50", NOW_MS + 120_000, sessions, rooms, ledger, scheduler, raised)
    assert [(named(r.identity), r.action.value, r.outcome) for r in lifted] == [
        ("recorder", "restore", "done"),
        ("-", "remove", "lifted"),
    ]
    late = restrict("50", NOW_MS + 360_000, sessions, rooms, ledger, scheduler)
    assert late == []
    assert rooms.permissions == {key: BEFORE[key] for key in (("webinar", "host"), ("webinar", "recorder"))}
    assert [call[0] for call in rooms.calls] == ["audio_only", "audio_only", "restore"]  # host failed, recorder, back


GUEST = Participant("webinar", "guest")
FULL = {"can_publish": True, "can_subscribe": True, "sources": [], "hidden": False}


def test_given_the_removal_step_ran_then_a_guest_joining_before_the_redelivery_is_removed_not_left_audio_only() -> None:
    """D361 amended (review v1, 1): the step's grace (120 s) is shorter than the queue's redelivery (360 s). The
    host's narrowing failed at delivery 1; the step removed host and recorder; a guest joined (a token minted before
    the limit, or the index lagging); the event came back. Before, the guest was narrowed under $50 and no second step
    followed (its one step had run): audio-only past the cap for good. Now the step leaves a ``done`` marker and a
    restriction after it removes the newcomer at once (the grace has passed)."""
    rooms = FakeRooms(
        {key: dict(BEFORE[key]) for key in (("webinar", "host"), ("webinar", "recorder"))},
        RoomControlFailedError("RoomService 503"),  # the host (sorted first) fails once
    )
    ledger, scheduler, sessions = InMemoryEnforcementLedger(), RecordingScheduler(), StaticSessions(HOST, RECORDER)
    # Team $29 + 29,723 video min over 50,000 x $0.00072 = $29 + $21.40056 -> $50.40 >= the $50 hard limit
    reached = entitlements("active", "50.40")
    with pytest.raises(EnforcementIncompleteError):
        restrict("50", NOW_MS, sessions, rooms, ledger, scheduler)
    # the step at +120 s: still reached, host and recorder removed, and the step recorded as run
    step = remove("50", NOW_MS + 120_000, sessions, rooms, ledger, scheduler, reached)
    assert [(named(r.identity), r.action.value, r.outcome) for r in step] == [
        ("host", "remove", "done"),
        ("recorder", "remove", "done"),
        ("-", "remove", "done"),
    ]
    assert rooms.permissions == {}
    # the guest joins; the event is delivered again at +360 s (or the sweeper says the limit is still reached)
    rooms.permissions[("webinar", "guest")] = dict(FULL)
    sessions.participants = [HOST, RECORDER, GUEST]
    again = restrict("50", NOW_MS + 360_000, sessions, rooms, ledger, scheduler)
    assert [(named(r.identity), r.action.value, r.outcome) for r in again] == [("guest", "remove", "done")]
    assert rooms.permissions == {}  # nobody left in the call: the bill stops at the cap
    assert scheduler.scheduled == [("acct_1", "2026-11", 120, "50")]  # no step needed after it
    assert [call[0] for call in rooms.calls] == ["audio_only", "audio_only", "remove", "remove", "remove"]
    # the step delivered twice (SQS at least once): nothing more
    args = (enforcement_ports(sessions, rooms, ledger, scheduler, reached), EnforcementPolicy())
    assert remove_account("acct_1", "2026-11", "50", *args, NOW_MS + 400_000) == []


# the host's sessions: joined 09:59 (narrowed at 10:00) and, after leaving, again at 10:01 with the same identity
HOST_0959 = Participant("webinar", "host", NOW_MS - 60_000)
HOST_1001 = Participant("webinar", "host", NOW_MS + 60_000)


def test_given_the_host_rejoining_within_the_grace_then_its_new_session_is_narrowed_and_given_back_when_lifted() -> (
    None
):
    """Finding (ao): audio-only is claimed per session (identity + join), as removals are. The host (joined 09:59)
    is narrowed at 10:00, leaves and rejoins at 10:01 (its token's permission again: video allowed); a restriction
    at 10:01:30 (the sweeper's still-reached event) narrows the 10:01 session - before, the host's claim was taken
    and it kept video until the step. The limit raised to $60 before the step (10:02: $50.40 < $60): the step gives
    the 10:01 session what it had on rejoining (before: found it never narrowed, ``kept``)."""
    rooms = FakeRooms({("webinar", "host"): dict(BEFORE[("webinar", "host")])})
    ledger, scheduler, sessions = InMemoryEnforcementLedger(), RecordingScheduler(), StaticSessions(HOST_0959)
    restrict("50", NOW_MS, sessions, rooms, ledger, scheduler)
    rooms.permissions[("webinar", "host")] = dict(BEFORE[("webinar", "host")])  # 10:01 rejoined: video again
    sessions.participants = [HOST_1001]  # rating closed the 09:59 session
    again = restrict("50", NOW_MS + 90_000, sessions, rooms, ledger, scheduler)
    assert [(named(r.identity), r.action.value, r.outcome, r.joined_ms) for r in again] == [
        ("host", "audio_only", "done", NOW_MS + 60_000)  # the 10:01 session's own claim
    ]
    assert again[0].detail == "a new session (rejoined) since the earlier narrowing: saved afresh"
    assert rooms.permissions[("webinar", "host")]["sources"] == ["microphone"]
    raised = entitlements("active", "50.40", hard="60")  # $50.40 < $60: the limit no longer reached
    step = remove("50", NOW_MS + 120_000, sessions, rooms, ledger, scheduler, raised)
    assert [(named(r.identity), r.action.value, r.outcome) for r in step] == [
        ("host", "restore", "done"),
        ("-", "remove", "lifted"),
    ]
    assert rooms.permissions == {("webinar", "host"): BEFORE[("webinar", "host")]}
    # RoomService: 10:00 audio-only (09:59 session), 10:01:30 audio-only (10:01 session), 10:02 restore = 3 calls
    assert [call[0] for call in rooms.calls] == ["audio_only", "audio_only", "restore"]
    assert scheduler.scheduled == [("acct_1", "2026-11", 120, "50")]  # one step


def test_given_the_index_listing_a_left_session_and_the_rejoin_of_one_identity_then_it_is_narrowed_once() -> None:
    """Audio-only per session: at the crossing (10:00) the lagging index lists the host's 09:59 session (left) and
    its 10:01 rejoin - one participant in LiveKit (one per identity in a room). It is narrowed once, through its
    latest session: a second UpdateParticipant would read the permission already narrowed and save that, and
    lifting the limit would give back audio-only. Lifted at 10:02 ($50.40 < $60): the host gets video back."""
    rooms = FakeRooms({("webinar", "host"): dict(BEFORE[("webinar", "host")])})
    ledger, scheduler = InMemoryEnforcementLedger(), RecordingScheduler()
    sessions = StaticSessions(HOST_0959, HOST_1001)
    narrowed = restrict("50", NOW_MS, sessions, rooms, ledger, scheduler)
    assert [(named(r.identity), r.action.value, r.outcome, r.joined_ms) for r in narrowed] == [
        ("host", "audio_only", "done", NOW_MS + 60_000),  # the latest session only
        ("-", "schedule_removal", "done", 0),
    ]
    raised = entitlements("active", "50.40", hard="60")
    remove("50", NOW_MS + 120_000, sessions, rooms, ledger, scheduler, raised)
    assert rooms.permissions == {("webinar", "host"): BEFORE[("webinar", "host")]}  # video back, not audio-only
    assert [call[0] for call in rooms.calls] == ["audio_only", "restore"]  # 1 UpdateParticipant, 1 restore


def test_given_a_narrowing_recorded_per_identity_before_then_its_session_is_narrowed_again_keeping_the_saved_one() -> (
    None
):
    """D361 amended (ao), a grace spanning the deploy: the host narrowed at 10:00 under the old key (join 0). A
    restriction at 10:01 lists its session (joined 09:59): a claim of its own - one more UpdateParticipant, which
    reads the narrowed permission - and the saved one (video allowed) is kept, so lifting the limit gives video back."""
    full = dict(BEFORE[("webinar", "host")])
    narrowed = {**full, "sources": ["microphone"]}
    rooms = FakeRooms({("webinar", "host"): dict(narrowed)})
    ledger, scheduler = InMemoryEnforcementLedger(), RecordingScheduler()
    before = EnforcementRecord(
        "acct_1", "2026-11", "webinar", pseudonym_of("host"), EnforcementAction.AUDIO_ONLY, "done", NOW_MS,
        limit="50", saved=json.dumps(full, sort_keys=True), narrowed=json.dumps(narrowed, sort_keys=True),
    )  # fmt: skip
    ledger.record(before)
    again = restrict("50", NOW_MS + 60_000, StaticSessions(HOST_0959), rooms, ledger, scheduler)
    assert [(named(r.identity), r.action.value, r.outcome, r.saved) for r in again[:1]] == [
        ("host", "audio_only", "done", json.dumps(full, sort_keys=True))  # the permission before the limit
    ]
    remove("50", NOW_MS + 120_000, StaticSessions(HOST_0959), rooms, ledger, scheduler, entitlements("active", "50.40",
           hard="60"))  # fmt: skip
    assert rooms.permissions == {("webinar", "host"): full}
    assert [call[0] for call in rooms.calls] == ["audio_only", "restore"]


@pytest.mark.parametrize(
    ("session", "detail"),
    [
        (HOST_1001, "a new session (rejoined) since the earlier narrowing: saved afresh"),  # 10:01 > 10:00
        (HOST_0959, "the app changed the permission since the earlier narrowing: saved afresh"),  # 09:59 < 10:00
    ],
    ids=["rejoined_at_1001", "narrowed_session_0959"],
)
def test_given_a_narrowing_recorded_per_identity_before_then_a_session_joined_after_it_is_told_as_a_rejoin(
    session: Participant, detail: str
) -> None:
    """Review (rao), D361 amended (ao): the host narrowed at 10:00 under the old key (join 0, the join not known).
    At 10:01:30 it holds its full permission again (video). The session listed joined at 10:01, after that
    narrowing (10:01 > 10:00): a rejoin, told so (before: "the app changed the permission"). The session listed
    joined at 09:59, before it (09:59 < 10:00): the one narrowed at 10:00, so the app changed its permission."""
    full = dict(BEFORE[("webinar", "host")])
    narrowed = {**full, "sources": ["microphone"]}
    rooms = FakeRooms({("webinar", "host"): dict(full)})  # video again at 10:01:30
    ledger, scheduler = InMemoryEnforcementLedger(), RecordingScheduler()
    before = EnforcementRecord(
        "acct_1", "2026-11", "webinar", pseudonym_of("host"), EnforcementAction.AUDIO_ONLY, "done", NOW_MS,
        limit="50", saved=json.dumps(full, sort_keys=True), narrowed=json.dumps(narrowed, sort_keys=True),
    )  # fmt: skip
    ledger.record(before)  # 10:00, join 0
    again = restrict("50", NOW_MS + 90_000, StaticSessions(session), rooms, ledger, scheduler)
    assert [(named(r.identity), r.action.value, r.outcome, r.detail) for r in again[:1]] == [
        ("host", "audio_only", "done", detail)
    ]
    assert rooms.permissions == {("webinar", "host"): narrowed}  # narrowed afresh either way


def test_given_the_limits_step_superseded_at_the_month_turn_then_a_late_redelivery_narrows_nobody_under_it() -> None:
    """D361 (review v1, 2): a step is superseded when another limit - or the same one in a new month - is in force.
    A $20 hard limit, reached on 30 November; the host's narrowing fails; the step arrives on 1 December, where the
    bill is again over $20 (Team's $29): superseded, the December limit enforced by its own steps. The November event,
    delivered again, reads "20" reached (December's bill) and would narrow a guest who joined since under (2026-11,
    20) - whose only step has run: nothing would give the guest's permission back if December's limit were raised."""
    at = int(datetime(2026, 11, 30, 23, 58, 30, tzinfo=UTC).timestamp() * 1000)
    rooms = FakeRooms({("webinar", "host"): dict(BEFORE[("webinar", "host")])}, RoomControlFailedError("503"))
    ledger, scheduler, sessions = InMemoryEnforcementLedger(), RecordingScheduler(), StaticSessions(HOST)
    with pytest.raises(EnforcementIncompleteError):
        restrict("20", at, sessions, rooms, ledger, scheduler)
    december = entitlements("active", "29", hard="20", period="2026-12")  # Team's $29 >= $20 on 1 December
    step = remove("20", at + 120_000, sessions, rooms, ledger, scheduler, december)
    assert sorted((r.action.value, named(r.identity), r.period, r.outcome) for r in step) == [
        ("audio_only", "host", "2026-12", "done"),
        ("remove", "-", "2026-11", "superseded"),
        ("schedule_removal", "-", "2026-12", "done"),
    ]
    # a guest joins at 00:01; the November event comes back at 00:04:30 (the queue's 360 s)
    rooms.permissions[("webinar", "guest")] = dict(FULL)
    sessions.participants = [HOST, GUEST]
    late = restrict("20", at + 360_000, sessions, rooms, ledger, scheduler)
    assert late == []
    assert rooms.permissions[("webinar", "guest")] == FULL  # left to December's own steps
    assert scheduler.scheduled == [("acct_1", "2026-11", 120, "20"), ("acct_1", "2026-12", 120, "20")]


def test_given_a_limit_set_again_while_still_narrowed_then_lifting_it_gives_back_the_permission_before_either() -> None:
    # bill $70: hard limit $50 (first setting, 50v1) reached -> audio-only; within the grace raised to $60 (60v2),
    # still reached -> restricted again while already narrowed; then raised to $200: both removal steps find it lifted
    ledger, scheduler, sessions = InMemoryEnforcementLedger(), RecordingScheduler(), StaticSessions(HOST, RECORDER)
    both = FakeRooms({key: dict(BEFORE[key]) for key in (("webinar", "host"), ("webinar", "recorder"))})
    policy = EnforcementPolicy()
    restrict("50v1", NOW_MS, sessions, both, ledger, scheduler, policy=policy)
    restrict("60v2", NOW_MS + 60_000, sessions, both, ledger, scheduler, policy=policy)
    # the second step keeps what the host had before the first, not the microphone-only permission it reads now
    host_saved = {
        r.limit: json.loads(r.saved)
        for r in ledger.actions("acct_1")
        if r.action is EnforcementAction.AUDIO_ONLY and named(r.identity) == "host"
    }
    assert host_saved == {"50v1": BEFORE[("webinar", "host")], "60v2": BEFORE[("webinar", "host")]}
    lifted = entitlements("active", "70", hard="200")
    first = remove("50v1", NOW_MS + 120_000, sessions, both, ledger, RecordingScheduler(), lifted)
    assert sorted((r.action.value, named(r.identity), r.outcome) for r in first) == [
        ("remove", "-", "lifted"),
        ("restore", "host", "done"),
        ("restore", "recorder", "done"),
    ]
    second = remove("60v2", NOW_MS + 180_000, sessions, both, ledger, RecordingScheduler(), lifted)
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
    restrict("50v1", NOW_MS, sessions, room, ledger, scheduler)
    lifted = entitlements("active", "45", hard="200")
    remove("50v1", NOW_MS + 120_000, sessions, room, ledger, RecordingScheduler(), lifted)
    room.permissions[("webinar", "host")] = {**BEFORE[("webinar", "host")], "can_subscribe": False}  # the app's
    restrict("40v2", NOW_MS + 180_000, sessions, room, ledger, scheduler)
    [second] = [r for r in ledger.actions("acct_1") if r.action is EnforcementAction.AUDIO_ONLY and r.limit == "40v2"]
    assert json.loads(second.saved) == {"can_publish": True, "can_subscribe": False, "sources": [], "hidden": False}


@pytest.mark.parametrize(
    ("change", "hard", "version"),
    [
        ("raised to $60 within the grace, still reached", "60", 2),
        ("lowered to $40 within the grace", "40", 2),
        ("set again to $50 (a new setting, D140)", "50", 2),
    ],
)
def test_given_the_limit_replaced_within_the_grace_by_one_also_reached_then_the_old_step_removes_nobody(
    change: str, hard: str, version: int
) -> None:
    # bill $70, hard limit $50 (50v1) reached -> audio-only, removal in 120 s. Within the grace the limit is replaced;
    # the new one is reached too. The 50v1 step no longer applies: it removes nobody and hands over to the new
    # limit's own steps (audio-only kept, its own grace), whose removal step removes at the end of that grace
    rooms = FakeRooms({("webinar", "host"): dict(BEFORE[("webinar", "host")])})
    ledger, scheduler, sessions = InMemoryEnforcementLedger(), RecordingScheduler(), StaticSessions(HOST)
    restrict("50v1", NOW_MS, sessions, rooms, ledger, scheduler)
    replaced = entitlements("active", "70", hard=hard, version=version)
    new = f"{hard}v{version}"
    step = remove("50v1", NOW_MS + 120_000, sessions, rooms, ledger, scheduler, replaced)
    assert ("remove", "webinar", "host") not in rooms.calls, change
    assert rooms.permissions == {  # still narrowed: the new limit is reached
        ("webinar", "host"): {"can_publish": True, "can_subscribe": True, "sources": ["microphone"], "hidden": False}
    }
    assert sorted((r.action.value, named(r.identity), r.limit, r.outcome) for r in step) == [
        ("audio_only", "host", new, "done"),
        ("remove", "-", "50v1", "superseded"),
        ("schedule_removal", "-", new, "done"),
    ]
    assert scheduler.scheduled == [("acct_1", "2026-11", 120, "50v1"), ("acct_1", "2026-11", 120, new)]
    # the new limit's audio-only step keeps the permission the host had before any limit
    [kept] = [r for r in step if r.action is EnforcementAction.AUDIO_ONLY]
    assert json.loads(kept.saved) == BEFORE[("webinar", "host")]
    # redelivered: nothing more
    args = (enforcement_ports(sessions, rooms, ledger, scheduler, replaced), EnforcementPolicy())
    assert remove_account("acct_1", "2026-11", "50v1", *args, NOW_MS + 130_000) == []
    assert len(scheduler.scheduled) == 2
    # the new limit's own removal step, at the end of its grace: removed
    remove(new, NOW_MS + 240_000, sessions, rooms, ledger, scheduler, replaced)
    assert rooms.permissions == {}
    assert [call[0] for call in rooms.calls] == ["audio_only", "audio_only", "remove"]


def test_given_the_limit_replaced_by_one_the_rating_event_already_enforced_then_the_old_step_repeats_nothing() -> None:
    # the new limit's own event (rating announces a limit set again, D140) narrowed and scheduled before the old step
    rooms = FakeRooms({("webinar", "host"): dict(BEFORE[("webinar", "host")])})
    ledger, scheduler, sessions = InMemoryEnforcementLedger(), RecordingScheduler(), StaticSessions(HOST)
    policy = EnforcementPolicy()
    restrict("50v1", NOW_MS, sessions, rooms, ledger, scheduler, policy=policy)
    restrict("60v2", NOW_MS + 60_000, sessions, rooms, ledger, scheduler, policy=policy)
    replaced = entitlements("active", "70", hard="60", version=2)
    step = remove("50v1", NOW_MS + 120_000, sessions, rooms, ledger, scheduler, replaced, policy=policy)
    assert [(r.action.value, r.outcome) for r in step] == [("remove", "superseded")]
    assert [call[0] for call in rooms.calls] == ["audio_only", "audio_only"]
    assert len(scheduler.scheduled) == 2


def test_given_the_app_changed_a_permission_after_audio_only_then_the_restore_leaves_it_alone() -> None:
    rooms, ledger, _ = restricted()
    # during the grace the app revokes the host's publishing (its own moderation), the recorder is left as we set it
    revoked = {"can_publish": False, "can_subscribe": True, "sources": [], "hidden": False}
    rooms.permissions[("webinar", "host")] = dict(revoked)
    lifted, sessions = entitlements("active", "50.40", hard="80"), StaticSessions(HOST, VIEWER, RECORDER)
    done = remove("50", NOW_MS + 120_000, sessions, rooms, ledger, RecordingScheduler(), lifted)
    assert sorted((r.action.value, named(r.identity), r.outcome) for r in done) == [
        ("remove", "-", "lifted"),
        ("restore", "host", "kept"),
        ("restore", "recorder", "done"),
    ]
    [kept] = [r for r in done if r.outcome == "kept"]
    assert kept.detail == "the app changed the permission since audio-only: its change is left as it is"
    assert rooms.permissions == {
        ("webinar", "host"): revoked,  # the app's change stays
        ("webinar", "viewer-42"): BEFORE[("webinar", "viewer-42")],
        ("webinar", "recorder"): BEFORE[("webinar", "recorder")],  # given back
    }


def test_given_two_scopes_and_the_app_changing_the_permission_after_both_then_neither_restore_overwrites_it() -> None:
    # bill $70: 50v1 narrows, 60v2 (set within the grace, reached) keeps 50v1's saved permission; then the app revokes
    # the host's publishing; then the limit is raised to $200: both steps find it lifted, neither gives back
    rooms = FakeRooms({("webinar", "host"): dict(BEFORE[("webinar", "host")])})
    ledger, scheduler, sessions, policy = (
        InMemoryEnforcementLedger(),
        RecordingScheduler(),
        StaticSessions(HOST),
        EnforcementPolicy(),
    )
    restrict("50v1", NOW_MS, sessions, rooms, ledger, scheduler, policy=policy)
    restrict("60v2", NOW_MS + 60_000, sessions, rooms, ledger, scheduler, policy=policy)
    revoked = {"can_publish": False, "can_subscribe": True, "sources": [], "hidden": False}
    rooms.permissions[("webinar", "host")] = dict(revoked)
    lifted = entitlements("active", "70", hard="200", version=3)
    remove("60v2", NOW_MS + 180_000, sessions, rooms, ledger, scheduler, lifted, policy=policy)
    remove("50v1", NOW_MS + 190_000, sessions, rooms, ledger, scheduler, lifted, policy=policy)
    assert rooms.permissions == {("webinar", "host"): revoked}
    assert sorted((r.limit, r.outcome) for r in ledger.actions("acct_1") if r.action is EnforcementAction.RESTORE) == [
        ("50v1", "kept"),
        ("60v2", "kept"),
    ]
    assert [call[0] for call in rooms.calls] == ["audio_only", "audio_only", "restore"]


def test_given_the_app_changed_the_permission_between_two_scopes_then_the_second_saves_the_apps_one() -> None:
    # 50v1 narrows the host; the app then makes it hidden (publishing anything again); 60v2, reached, narrows that:
    # what it saves - and gives back when the limit lifts - is the app's permission, not the one before 50v1
    rooms = FakeRooms({("webinar", "host"): dict(BEFORE[("webinar", "host")])})
    ledger, scheduler, sessions, policy = (
        InMemoryEnforcementLedger(),
        RecordingScheduler(),
        StaticSessions(HOST),
        EnforcementPolicy(),
    )
    restrict("50v1", NOW_MS, sessions, rooms, ledger, scheduler, policy=policy)
    apps = {"can_publish": True, "can_subscribe": True, "sources": [], "hidden": True}
    rooms.permissions[("webinar", "host")] = dict(apps)
    [second] = restrict("60v2", NOW_MS + 60_000, sessions, rooms, ledger, scheduler, policy=policy)[:1]
    assert json.loads(second.saved) == apps
    assert rooms.permissions[("webinar", "host")] == {**apps, "sources": ["microphone"]}
    lifted = entitlements("active", "70", hard="200", version=3)
    remove("60v2", NOW_MS + 180_000, sessions, rooms, ledger, scheduler, lifted, policy=policy)
    assert rooms.permissions == {("webinar", "host"): apps}
    remove("50v1", NOW_MS + 190_000, sessions, rooms, ledger, scheduler, lifted, policy=policy)
    assert rooms.permissions == {("webinar", "host"): apps}  # 50v1's step gives nothing back a second time
    assert [call[0] for call in rooms.calls] == ["audio_only", "audio_only", "restore"]


def two_scopes_with_the_app_between(apps: dict[str, object]) -> tuple[FakeRooms, InMemoryEnforcementLedger]:
    """Bill $70: 50v1 narrows the host; then the app sets ``apps``; then 60v2 (set within the grace, reached) narrows
    that and saves it afresh."""
    rooms = FakeRooms({("webinar", "host"): dict(BEFORE[("webinar", "host")])})
    ledger, scheduler, sessions = InMemoryEnforcementLedger(), RecordingScheduler(), StaticSessions(HOST)
    restrict("50v1", NOW_MS, sessions, rooms, ledger, scheduler)
    rooms.permissions[("webinar", "host")] = dict(apps)
    restrict("60v2", NOW_MS + 60_000, sessions, rooms, ledger, scheduler)
    return rooms, ledger


def removal_step(
    rooms: FakeRooms, ledger: InMemoryEnforcementLedger, limit: str, in_force: InMemoryEntitlements, at: int
) -> list[EnforcementRecord]:
    sessions, scheduler, policy = StaticSessions(HOST), RecordingScheduler(), EnforcementPolicy()
    return remove(limit, NOW_MS + at, sessions, rooms, ledger, scheduler, in_force, policy=policy)


@pytest.mark.parametrize(
    "apps",
    [
        {"can_publish": True, "can_subscribe": True, "sources": [], "hidden": True},  # made hidden
        {"can_publish": True, "can_subscribe": True, "sources": ["camera", "microphone"], "hidden": False},  # no screen
    ],
    ids=["made-hidden", "screen-share-dropped"],
)
def test_given_the_app_changed_the_permission_between_two_scopes_then_the_older_limits_step_gives_back_the_apps_one(
    apps: dict[str, object],
) -> None:
    # the real order: 50v1's removal step was scheduled first, so it fires first once the limit is raised to $200.
    # What the host holds then is what 60v2's step left: the app's permission is given back, by whichever step runs
    rooms, ledger = two_scopes_with_the_app_between(apps)
    lifted = entitlements("active", "70", hard="200", version=3)
    first = removal_step(rooms, ledger, "50v1", lifted, 120_000)
    assert [(r.action.value, r.limit, r.outcome) for r in first] == [
        ("restore", "50v1", "done"),
        ("remove", "50v1", "lifted"),
    ]
    assert rooms.permissions == {("webinar", "host"): apps}
    second = removal_step(rooms, ledger, "60v2", lifted, 180_000)
    assert [(r.action.value, r.limit, r.outcome) for r in second] == [("remove", "60v2", "lifted")]
    assert rooms.permissions == {("webinar", "host"): apps}
    assert sorted((r.limit, r.outcome) for r in ledger.actions("acct_1") if r.action is EnforcementAction.RESTORE) == [
        ("50v1", "done"),
        ("60v2", "done"),
    ]
    assert [call[0] for call in rooms.calls] == ["audio_only", "audio_only", "restore"]


def test_given_a_third_scope_after_the_apps_change_then_it_keeps_the_apps_permission_not_our_narrowing() -> None:
    # 50v1, the app makes the host hidden, 60v2 saves that; 60v3 (set again, reached) compares with what 60v2 left -
    # unchanged - so it keeps the app's permission, not the microphone-only one it reads; the old steps superseded,
    # then the limit raised to $200: 60v3's step gives back the app's permission
    apps = {"can_publish": True, "can_subscribe": True, "sources": [], "hidden": True}
    rooms, ledger = two_scopes_with_the_app_between(apps)
    restrict("60v3", NOW_MS + 90_000, StaticSessions(HOST), rooms, ledger, RecordingScheduler())
    [third] = [r for r in ledger.actions("acct_1") if r.action is EnforcementAction.AUDIO_ONLY and r.limit == "60v3"]
    assert json.loads(third.saved) == apps
    in_force = entitlements("active", "70", hard="60", version=3)
    assert [(r.limit, r.outcome) for r in removal_step(rooms, ledger, "50v1", in_force, 120_000)] == [
        ("50v1", "superseded")
    ]
    assert [(r.limit, r.outcome) for r in removal_step(rooms, ledger, "60v2", in_force, 150_000)] == [
        ("60v2", "superseded")
    ]
    lifted = entitlements("active", "70", hard="200", version=4)
    last = removal_step(rooms, ledger, "60v3", lifted, 210_000)
    assert [(r.action.value, r.outcome) for r in last] == [("restore", "done"), ("remove", "lifted")]
    assert rooms.permissions == {("webinar", "host"): apps}


class RestrictedMidRestore(FakeRooms):
    """RoomService as it answers two deliveries at once: the removal step's restore reads the host (GetParticipant),
    and before its UpdateParticipant lands, another delivery - the limit reached again - runs its whole audio-only
    step (``during``); then the restore's update is written."""

    def __init__(self, permissions: dict[tuple[str, str], dict[str, object]]) -> None:
        super().__init__(permissions)
        self.during: list[object] = []
        self.concurrent: Callable[[], object] | None = None

    def restore(self, room: str, identity: str, saved: str, narrowed: str) -> bool:
        current = self._find("restore", room, identity)  # the restore's GetParticipant
        if self.concurrent is not None:
            run, self.concurrent = self.concurrent, None
            try:
                self.during.append(run())
            except EnforcementIncompleteError as exc:  # its delivery fails for now: the queue delivers it again
                self.during.append(exc)
        if narrowed and current != json.loads(narrowed):
            return False
        self.permissions[(room, identity)] = json.loads(saved)  # the restore's UpdateParticipant
        return True


def test_given_the_limit_reached_again_while_its_restore_runs_then_the_participant_ends_audio_only() -> None:
    """D182. $50 (50v1) reached: the host is narrowed. The limit is raised to $60 (60v2), so the removal step
    gives the host's permission back - and meanwhile the bill passes $60 and the new limit's audio-only step runs.
    Before, both went ahead: the audio-only step read the host still narrowed (so it kept the saved permission and
    wrote the narrowed one again), then the restore's update gave the host video back - under a limit recorded
    enforced. Now the second delivery waits for the account's turn (retried by the queue) and narrows afresh."""
    rooms = RestrictedMidRestore({("webinar", "host"): dict(BEFORE[("webinar", "host")])})
    ledger, scheduler, sessions, policy = (
        InMemoryEnforcementLedger(),
        RecordingScheduler(),
        StaticSessions(HOST),
        EnforcementPolicy(),
    )
    restrict("50v1", NOW_MS, sessions, rooms, ledger, scheduler, policy=policy)
    lifted = entitlements("active", "55", hard="60", version=2)  # raised to $60, not reached yet

    def reached_again() -> object:  # the bill passed $60 meanwhile: rating's hard-limit event, another delivery
        return restrict("60v2", NOW_MS + 125_000, sessions, rooms, ledger, scheduler, policy=policy)

    rooms.concurrent = reached_again
    remove("50v1", NOW_MS + 120_000, sessions, rooms, ledger, scheduler, lifted, policy=policy)
    [during] = rooms.during
    assert isinstance(during, EnforcementIncompleteError)  # refused while the restore held the account's turn
    assert [(r.action.value, r.outcome) for r in during.records] == [("audio_only", "retry")]
    assert rooms.permissions[("webinar", "host")] == BEFORE[("webinar", "host")]  # given back, for now

    # the queue delivers the hard-limit event again: the host is narrowed afresh, its permission before saved
    restrict("60v2", NOW_MS + 485_000, sessions, rooms, ledger, scheduler, policy=policy)
    assert rooms.permissions[("webinar", "host")] == {**BEFORE[("webinar", "host")], "sources": ["microphone"]}
    [step] = [r for r in ledger.actions("acct_1") if r.action is EnforcementAction.AUDIO_ONLY and r.limit == "60v2"]
    assert (step.outcome, json.loads(step.saved)) == ("done", BEFORE[("webinar", "host")])
    assert [s[3] for s in scheduler.scheduled] == ["50v1", "60v2"]  # and the new limit's removal is scheduled
    assert ledger.turns == {}  # every turn ended


def test_given_a_restriction_running_when_the_removal_step_arrives_then_the_step_waits_and_reads_the_limit_after() -> (
    None
):
    """The mirror order: the removal step of 50v1 arrives while 60v2's audio-only step is running (the bill passed
    $60 just after the raise). It is refused for now; redelivered, it reads the limit in force (60v2, reached) and
    removes nobody under 50v1 nor gives anything back."""
    rooms = FakeRooms({("webinar", "host"): dict(BEFORE[("webinar", "host")])})
    ledger, scheduler, sessions, policy = (
        InMemoryEnforcementLedger(),
        RecordingScheduler(),
        StaticSessions(HOST),
        EnforcementPolicy(),
    )
    restrict("50v1", NOW_MS, sessions, rooms, ledger, scheduler, policy=policy)
    ledger.take_turn("acct_1", "the 60v2 delivery", NOW_MS + 119_000)  # its audio-only step is running
    lifted_then_reached = entitlements("active", "60.10", hard="60", version=2)
    with pytest.raises(EnforcementIncompleteError) as held:
        remove("50v1", NOW_MS + 120_000, sessions, rooms, ledger, scheduler, lifted_then_reached, policy=policy)
    assert [(r.action.value, r.outcome) for r in held.value.records] == [("remove", "retry")]
    assert [c for c in rooms.calls if c[0] != "audio_only"] == []  # nothing given back, nobody removed
    ledger.end_turn("acct_1", "the 60v2 delivery")

    redelivered = remove(
        "50v1", NOW_MS + 480_000, sessions, rooms, ledger, scheduler, lifted_then_reached, policy=policy
    )
    assert [(r.action.value, r.limit, r.outcome) for r in redelivered][-1] == ("remove", "50v1", "superseded")
    assert rooms.permissions[("webinar", "host")] == {**BEFORE[("webinar", "host")], "sources": ["microphone"]}


def test_given_a_turn_whose_holder_crashed_then_the_redelivery_takes_it_over_after_the_lease() -> None:
    rooms = FakeRooms({("webinar", "host"): dict(BEFORE[("webinar", "host")])})
    ledger, scheduler, sessions, policy = (
        InMemoryEnforcementLedger(),
        RecordingScheduler(),
        StaticSessions(HOST),
        EnforcementPolicy(),
    )
    ledger.take_turn("acct_1", "a crashed delivery", NOW_MS)
    with pytest.raises(EnforcementIncompleteError):
        restrict("50v1", NOW_MS + ENFORCEMENT_LEASE_MS, sessions, rooms, ledger, scheduler, policy=policy)
    restrict("50v1", NOW_MS + ENFORCEMENT_LEASE_MS + 1, sessions, rooms, ledger, scheduler, policy=policy)
    assert rooms.permissions[("webinar", "host")]["sources"] == ["microphone"]


def test_given_enforcement_then_every_record_names_participants_by_pseudonym_and_roomservice_by_identity() -> None:
    rooms, ledger, _ = restricted()
    # RoomService was asked with the identities of the open sessions ...
    assert rooms.calls == [("audio_only", "webinar", "host"), ("audio_only", "webinar", "recorder"),
                           ("audio_only", "webinar", "viewer-42")]  # fmt: skip
    # ... and the ledger's keys and records hold only their pseudonyms (D214)
    assert sorted((key[3], key[5]) for key in ledger.items) == sorted(
        [("audio_only", pseudonym_of(name)) for name in ("host", "recorder", "viewer-42")] + [("schedule_removal", "-")]
    )
    assert {record.identity for record in ledger.items.values()} == {
        "-", pseudonym_of("host"), pseudonym_of("recorder"), pseudonym_of("viewer-42")
    }  # fmt: skip


def test_given_a_participant_roomservice_no_longer_knows_then_its_gone_record_names_it_by_pseudonym() -> None:
    rooms, ledger = FakeRooms({}), InMemoryEnforcementLedger()  # the host left before RoomService was asked
    done = restrict("50", NOW_MS, StaticSessions(HOST), rooms, ledger, RecordingScheduler())
    [gone] = [r for r in done if r.outcome == "gone"]
    # FakeRooms answers "<identity> is not in <room>", as a RoomService message may name the participant
    assert (gone.identity, gone.detail) == (pseudonym_of("host"), f"{pseudonym_of('host')} is not in webinar")


def test_given_a_restricted_participant_who_left_before_the_limit_was_lifted_then_it_is_recorded_gone() -> None:
    rooms, ledger, _ = restricted()
    del rooms.permissions[("webinar", "recorder")]  # the recorder left: rating closed its session
    lifted, sessions = entitlements("active", "50.40", hard="80"), StaticSessions(HOST, VIEWER)
    done = remove("50", NOW_MS + 120_000, sessions, rooms, ledger, RecordingScheduler(), lifted)
    assert sorted((r.action.value, named(r.identity), r.outcome, r.detail) for r in done) == [
        ("remove", "-", "lifted", "the hard limit no longer applies"),
        ("restore", "host", "done", ""),
        (
            "restore",
            "recorder",
            "gone",
            "not in a call any more (no open session, not in its room): nothing to give back",
        ),
    ]
    # the index no longer lists the recorder: its room is asked (it is not there); the host is given back by identity
    assert sorted(rooms.calls[3:]) == [("identities", "webinar", ""), ("restore", "webinar", "host")]
    assert rooms.permissions[("webinar", "host")] == BEFORE[("webinar", "host")]


def test_given_no_grace_and_the_open_sessions_index_behind_then_the_lifted_limit_still_gives_the_permission_back() -> (
    None
):
    """Grace 0 (``ENFORCEMENT_GRACE_SECONDS=0``, the template allows it): the removal step follows the audio-only
    step at once, and rating's eventually consistent ``open_sessions`` index may not list yet the host the
    audio-only step's read found (a session opened just before). The limit was lifted meanwhile: the host, still in
    its room, gets its permission back - found in the room's participant list by its pseudonym - instead of being
    recorded gone and left audio-only for the rest of its call."""
    rooms = FakeRooms({("webinar", "host"): dict(BEFORE[("webinar", "host")])})
    ledger, scheduler = InMemoryEnforcementLedger(), RecordingScheduler()
    restrict("50", NOW_MS, StaticSessions(HOST), rooms, ledger, scheduler, policy=EnforcementPolicy(grace_seconds=0))
    assert scheduler.scheduled == [("acct_1", "2026-11", 0, "50")]
    assert rooms.permissions[("webinar", "host")]["sources"] == ["microphone"]
    lagging, lifted = StaticSessions(), entitlements("active", "50.40", hard="80")  # the index lists nobody yet
    done = remove(
        "50",
        NOW_MS + 1_000,
        lagging,
        rooms,
        ledger,
        RecordingScheduler(),
        lifted,
        policy=EnforcementPolicy(grace_seconds=0),
    )
    assert sorted((r.action.value, named(r.identity), r.outcome) for r in done) == [
        ("remove", "-", "lifted"),
        ("restore", "host", "done"),
    ]
    assert rooms.calls[1:] == [("identities", "webinar", ""), ("restore", "webinar", "host")]
    assert rooms.permissions[("webinar", "host")] == BEFORE[("webinar", "host")]  # video and screen share again


def test_given_no_grace_and_the_open_sessions_index_behind_then_the_removal_still_removes_the_narrowed_host() -> None:
    """Grace 0 and the limit still reached: the index may not list yet the host the audio-only step narrowed; the
    removal finds it in its room by its pseudonym and removes it (before: not listed, not removed - its call went on,
    audio only, past the hard limit). A narrowed participant no longer in its room is recorded gone."""
    rooms = FakeRooms({key: dict(value) for key, value in BEFORE.items() if key[1] != "viewer-42"})
    ledger = InMemoryEnforcementLedger()
    restrict(
        "50",
        NOW_MS,
        StaticSessions(HOST, RECORDER),
        rooms,
        ledger,
        RecordingScheduler(),
        policy=EnforcementPolicy(grace_seconds=0),
    )
    del rooms.permissions[("webinar", "recorder")]  # the recorder left meanwhile
    still = entitlements("active", "50.40")  # the $50 limit still reached
    done = remove(
        "50",
        NOW_MS + 1_000,
        StaticSessions(),
        rooms,
        ledger,
        RecordingScheduler(),
        still,
        policy=EnforcementPolicy(grace_seconds=0),
    )
    assert sorted((r.action.value, named(r.identity), r.outcome) for r in done) == [
        ("remove", "-", "done"),
        ("remove", "host", "done"),
        ("remove", "recorder", "gone"),
    ]
    assert ("remove", "webinar", "host") in rooms.calls
    assert rooms.permissions == {}  # nobody of the account left in a call


def test_given_records_written_before_with_identities_then_the_restore_finds_the_saved_permission() -> None:
    # an audio-only step recorded before D214: keyed and stored by the host's identity
    narrowed = {"can_publish": True, "can_subscribe": True, "sources": ["microphone"], "hidden": False}
    rooms = FakeRooms({("webinar", "host"): dict(narrowed)})
    ledger = InMemoryEnforcementLedger()
    before = EnforcementRecord(
        "acct_1", "2026-11", "webinar", "host", EnforcementAction.AUDIO_ONLY, "done", NOW_MS, limit="50",
        saved=json.dumps(BEFORE[("webinar", "host")], sort_keys=True), narrowed=json.dumps(narrowed, sort_keys=True),
    )  # fmt: skip
    ledger.record(before)
    lifted = entitlements("active", "50.40", hard="80")
    done = remove("50", NOW_MS + 120_000, StaticSessions(HOST), rooms, ledger, RecordingScheduler(), lifted)
    assert rooms.permissions == {("webinar", "host"): BEFORE[("webinar", "host")]}  # given back
    assert [(r.action.value, named(r.identity), r.outcome) for r in done] == [
        ("restore", "host", "done"),
        ("remove", "-", "lifted"),
    ]


# an erasure (D80) rewrites the open sessions' identities to their pseudonyms while the call goes on: RoomService still
# knows each participant by its identity (D214 amended)
ERASED = tuple(Participant(p.room, pseudonym_of(p.identity)) for p in (HOST, VIEWER, RECORDER))


def test_given_the_account_erased_mid_call_then_the_restore_gives_the_live_participants_their_permission_back() -> None:
    rooms, ledger, _ = restricted()  # audio-only before the erasure, by identity
    lifted = entitlements("active", "50.40", hard="80")
    done = remove("50", NOW_MS + 120_000, StaticSessions(*ERASED), rooms, ledger, RecordingScheduler(), lifted)
    assert rooms.permissions == BEFORE  # the host publishes video again (before: recorded gone, left audio-only)
    assert sorted((r.action.value, named(r.identity), r.outcome) for r in done) == [
        ("remove", "-", "lifted"),
        ("restore", "host", "done"),
        ("restore", "recorder", "done"),
    ]
    # the room listed once, then RoomService asked by the identities whose pseudonyms the sessions hold
    assert rooms.calls[3:] == [
        ("identities", "webinar", ""),
        ("restore", "webinar", "host"),
        ("restore", "webinar", "recorder"),
    ]


def test_given_an_erased_accounts_live_participants_then_audio_only_and_the_removal_reach_them() -> None:
    rooms = FakeRooms({key: dict(value) for key, value in BEFORE.items()})
    ledger, scheduler, sessions = InMemoryEnforcementLedger(), RecordingScheduler(), StaticSessions(*ERASED)
    restricted_after = restrict("50", NOW_MS, sessions, rooms, ledger, scheduler)
    assert sorted((named(r.identity), r.outcome) for r in restricted_after) == [
        ("-", "done"), ("host", "done"), ("recorder", "done"), ("viewer-42", "skipped")
    ]  # fmt: skip
    assert rooms.permissions[("webinar", "host")]["sources"] == ["microphone"]  # before: skipped as gone
    assert {record.identity for record in ledger.items.values()} == {"-", *(p.identity for p in ERASED)}
    removed = remove("50", NOW_MS + 120_000, sessions, rooms, ledger, scheduler, entitlements("active", "50.40"))
    assert sorted((named(r.identity), r.outcome) for r in removed) == [
        ("-", "done"), ("host", "done"), ("recorder", "done"), ("viewer-42", "done")
    ]  # fmt: skip
    assert rooms.permissions == {}  # nobody of the account goes on past the hard limit
    assert [call for call in rooms.calls if call[0] == "identities"] == [("identities", "webinar", "")] * 2


def test_given_a_pseudonymised_participant_no_longer_in_its_room_then_it_is_gone_and_no_identity_is_recorded() -> None:
    rooms = FakeRooms({("webinar", "guest"): dict(BEFORE[("webinar", "host")])})  # the host left; a guest stays
    ledger = InMemoryEnforcementLedger()
    done = restrict("50", NOW_MS, StaticSessions(ERASED[0]), rooms, ledger, RecordingScheduler())
    [gone] = [r for r in done if r.outcome == "gone"]
    assert (named(gone.identity), gone.detail) == (
        "host", f"no participant of webinar has the pseudonym {pseudonym_of('host')}"
    )  # fmt: skip
    assert rooms.calls == [("identities", "webinar", "")]  # the guest is not touched
    assert rooms.permissions[("webinar", "guest")] == BEFORE[("webinar", "host")]


def test_given_a_live_identity_that_merely_starts_with_erased_then_audio_only_reaches_it_by_that_identity() -> None:
    # a participant who chose the identity "erased-jane" (not a pseudonym: a pseudonym is "erased-" + 16 hex digits)
    jane = Participant("webinar", "erased-jane")
    rooms = FakeRooms({("webinar", "erased-jane"): dict(BEFORE[("webinar", "host")])})
    ledger = InMemoryEnforcementLedger()
    done = restrict("50", NOW_MS, StaticSessions(jane), rooms, ledger, RecordingScheduler())
    assert sorted(r.outcome for r in done) == ["done", "done"]  # the account's step and jane's audio-only
    assert rooms.calls == [("audio_only", "webinar", "erased-jane")]  # asked by her identity, no listing
    assert rooms.permissions[("webinar", "erased-jane")]["sources"] == ["microphone"]
