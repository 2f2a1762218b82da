"""One contract, two implementations of the enforcement ledger (kilo_alerts/ports.py ``EnforcementLedger``): the
in-memory fake the enforcement tests use (tests/unit/alerts_fakes.py) and DynamoDB (moto, the template's alerts
table). One claim per (account, period, hard limit, action, room, identity); a pending claim is held for
``ENFORCEMENT_LEASE_MS``: 5 minutes, 300_000 ms (longer than the function's 60 s timeout, shorter than the alerts
queue's 360 s visibility timeout)."""

from __future__ import annotations

from dataclasses import replace

import pytest

from kilo_alerts.model import EnforcementAction, EnforcementRecord, Held
from kilo_alerts.ports import ClaimHeldError, EnforcementLedger
from tests.conftest import Stack
from tests.unit.alerts_fakes import InMemoryEnforcementLedger

T0 = 1_790_000_000_000
LEASE = 300_000


@pytest.fixture(params=["fake", "dynamodb"])
def ledger(request: pytest.FixtureRequest) -> EnforcementLedger:
    if request.param == "fake":
        return InMemoryEnforcementLedger()
    from kilo_alerts.adapters import DynamoEnforcementLedger  # noqa: PLC0415

    stack: Stack = request.getfixturevalue("stack")
    return DynamoEnforcementLedger(stack.clients["dynamodb"], stack.template.physical_name("AlertsTable"))


def action(at_ms: int = T0, **changes: object) -> EnforcementRecord:
    record = EnforcementRecord(
        "org:7@x", "2026-11", "room-a", "alice", EnforcementAction.AUDIO_ONLY, "pending", at_ms, limit="video:hard"
    )
    return replace(record, **changes)  # type: ignore[arg-type]


def test_the_lease_is_five_minutes_in_the_adapter_and_the_fake() -> None:
    from kilo_alerts.adapters import ENFORCEMENT_LEASE_MS  # noqa: PLC0415
    from tests.unit import alerts_fakes  # noqa: PLC0415

    assert (ENFORCEMENT_LEASE_MS, alerts_fakes.ENFORCEMENT_LEASE_MS) == (LEASE, LEASE)


def test_given_nothing_then_the_first_claim_wins_and_a_second_within_the_lease_is_held(
    ledger: EnforcementLedger,
) -> None:
    assert ledger.claim(action())
    with pytest.raises(ClaimHeldError):
        ledger.claim(action(T0 + LEASE))
    assert ledger.claim(action(action=EnforcementAction.REMOVE))  # per action
    assert ledger.claim(action(identity="bob"))  # per participant
    assert ledger.claim(action(room="room-b"))  # per room
    assert ledger.claim(action(period="2026-12"))  # per period
    assert ledger.claim(action(limit="audio:hard"))  # per hard limit: a raised limit reached later acts again


def test_given_a_stale_pending_claim_then_it_is_taken_over_after_the_lease(ledger: EnforcementLedger) -> None:
    assert ledger.claim(action())
    assert ledger.claim(action(T0 + LEASE + 1))
    with pytest.raises(ClaimHeldError):  # the new holder's lease runs from its own claim
        ledger.claim(action(T0 + LEASE + 2))


def test_given_a_decided_action_then_it_is_never_claimed_again_and_reads_back(ledger: EnforcementLedger) -> None:
    ledger.claim(action())
    done = action(T0 + 5, outcome="done", detail="narrowed", saved='{"canPublish":true}', narrowed='{"x":1}')
    ledger.record(done)
    assert not ledger.claim(action(T0 + 10 * LEASE))
    assert ledger.actions("org:7@x") == [done]
    assert ledger.actions("org:8@x") == []


def test_given_a_retry_then_it_is_claimed_again_at_once(ledger: EnforcementLedger) -> None:
    ledger.claim(action())
    ledger.record(action(T0 + 1, outcome="retry", detail="RoomService 503"))
    assert ledger.claim(action(T0 + 2))
    with pytest.raises(ClaimHeldError):
        ledger.claim(action(T0 + 3))


def test_given_actions_then_they_read_back_in_time_order_with_their_pending_claims(ledger: EnforcementLedger) -> None:
    removal = action(T0 + 50, action=EnforcementAction.REMOVE, outcome="gone")
    ledger.record(removal)
    ledger.claim(action(T0 + 10))
    earlier = action(T0 + 10, identity="aaron", outcome="skipped")
    ledger.record(earlier)
    assert ledger.actions("org:7@x") == [earlier, action(T0 + 10), removal]


def test_given_a_turn_taken_then_another_holder_is_held_until_it_ends_or_its_lease_runs_out(
    ledger: EnforcementLedger,
) -> None:
    """D182: one delivery at a time restricts or restores an account's participants."""
    ledger.take_turn("org:7@x", "delivery-a", T0)
    ledger.take_turn("org:7@x", "delivery-a", T0 + 10)  # its own turn: taken again
    with pytest.raises(ClaimHeldError):
        ledger.take_turn("org:7@x", "delivery-b", T0 + LEASE)
    ledger.take_turn("org:8@x", "delivery-b", T0 + 20)  # per account
    ledger.end_turn("org:7@x", "delivery-b")  # not its turn: nothing ended
    with pytest.raises(ClaimHeldError):
        ledger.take_turn("org:7@x", "delivery-c", T0 + 30)
    ledger.end_turn("org:7@x", "delivery-a")
    ledger.take_turn("org:7@x", "delivery-c", T0 + 40)
    assert ledger.actions("org:7@x") == []  # the turn is not an action


def test_given_a_claim_or_the_turn_held_then_the_error_names_which(ledger: EnforcementLedger) -> None:
    """Typed, so the handler's "back in seconds" (D209) never depends on a message's text."""
    ledger.claim(action())
    with pytest.raises(ClaimHeldError) as claim:
        ledger.claim(action(T0 + 1))
    ledger.take_turn("org:7@x", "delivery-a", T0)
    with pytest.raises(ClaimHeldError) as turn:
        ledger.take_turn("org:7@x", "delivery-b", T0 + 1)
    assert (claim.value.held, turn.value.held) == (Held.CLAIM, Held.TURN)


def test_given_a_turn_whose_holder_crashed_then_it_is_taken_over_after_the_lease_and_the_old_holder_cannot_end_it(
    ledger: EnforcementLedger,
) -> None:
    ledger.take_turn("org:7@x", "crashed", T0)
    ledger.take_turn("org:7@x", "redelivery", T0 + LEASE + 1)
    ledger.end_turn("org:7@x", "crashed")  # the old holder wakes up late: the new holder keeps its turn
    with pytest.raises(ClaimHeldError):
        ledger.take_turn("org:7@x", "third", T0 + LEASE + 2)
    ledger.end_turn("org:7@x", "redelivery")
    ledger.end_turn("org:7@x", "redelivery")  # ended twice (a retried end): nothing more
    ledger.take_turn("org:7@x", "third", T0 + LEASE + 3)


def test_given_a_removal_decided_then_another_session_of_the_same_identity_is_claimed_and_both_read_back(
    ledger: EnforcementLedger,
) -> None:
    """D71 amended (e4b): a removal is claimed per session (its join): alice removed (joined at T0) who rejoins
    (joined at T0 + 60 s) is a new claim; the removed session is never claimed again; a removal whose join is not
    known (0) keeps the key it had before."""
    first = action(T0 + 100, action=EnforcementAction.REMOVE, joined_ms=T0)
    assert ledger.claim(first)
    ledger.record(first.decided("done"))
    assert not ledger.claim(action(T0 + 200, action=EnforcementAction.REMOVE, joined_ms=T0))
    rejoined = action(T0 + 200, action=EnforcementAction.REMOVE, joined_ms=T0 + 60_000)
    assert ledger.claim(rejoined)
    ledger.record(rejoined.decided("gone"))
    assert ledger.claim(action(T0 + 300, action=EnforcementAction.REMOVE))  # join not known: its own key, as before
    assert [(r.joined_ms, r.outcome) for r in ledger.actions("org:7@x")] == [
        (T0, "done"),
        (T0 + 60_000, "gone"),
        (0, "pending"),
    ]


def test_given_an_audio_only_decided_then_the_rejoined_session_is_claimed_and_both_saved_permissions_read_back(
    ledger: EnforcementLedger,
) -> None:
    """D361 amended (ao): audio-only is claimed per session too: alice narrowed (joined at T0) who rejoins (joined at
    T0 + 60 s) is a new claim, each session's saved permission read back with its join; the narrowed session is never
    claimed again."""
    first = action(T0 + 100, action=EnforcementAction.AUDIO_ONLY, joined_ms=T0)
    assert ledger.claim(first)
    ledger.record(replace(first.decided("done"), saved='{"sources": []}', narrowed='{"sources": [1]}'))
    assert not ledger.claim(action(T0 + 200, action=EnforcementAction.AUDIO_ONLY, joined_ms=T0))
    rejoined = action(T0 + 200, action=EnforcementAction.AUDIO_ONLY, joined_ms=T0 + 60_000)
    assert ledger.claim(rejoined)
    ledger.record(replace(rejoined.decided("done"), saved='{"sources": [3]}', narrowed='{"sources": [1]}'))
    assert [(r.joined_ms, r.outcome, r.saved) for r in ledger.actions("org:7@x")] == [
        (T0, "done", '{"sources": []}'),
        (T0 + 60_000, "done", '{"sources": [3]}'),
    ]
