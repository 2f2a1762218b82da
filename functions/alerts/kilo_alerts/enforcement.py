"""Enforcement of a hard budget mid-call (docs/alerts.md, "Hard limit"): first every participant of the account's open
sessions may publish audio only (video and screen share revoked, the call goes on), then after a grace period they are
removed - unless the hard limit was lifted meanwhile. Every action is recorded; each is claimed first (one record per
(account, period, hard limit, room, identity, action)), so a redelivered event or step repeats nothing that was done,
while a limit raised after it was enforced is enforced again when the bill reaches the new one.

A participant RoomService no longer knows (left meanwhile) is recorded ``gone``; a failure for now (RoomService
unreachable) is recorded ``retry`` and raised, so the queue delivers the event again and only what is missing is done.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from datetime import UTC, datetime

from kilo_alerts.model import EnforcementAction, EnforcementRecord, Participant
from kilo_alerts.ports import (
    EnforcementLedger,
    OpenSessions,
    ParticipantGoneError,
    RemovalScheduler,
    RoomControl,
    RoomControlFailedError,
)
from kilo_billing.contracts import limit_scope
from kilo_billing.entitlements import EntitlementPolicy, EntitlementSource, Reason, decide


@dataclass(frozen=True, slots=True)
class EnforcementPolicy:
    grace_seconds: int = 120  # between audio-only and removal (<= 900: an SQS message delay)


class EnforcementIncompleteError(Exception):
    """RoomService failed for now on some participants; the others are done and recorded."""

    def __init__(self, records: list[EnforcementRecord]) -> None:
        super().__init__(f"{sum(1 for r in records if r.outcome == 'retry')} RoomService action(s) to retry")
        self.records = records


def hard_limit_reached(account_id: str, entitlements: EntitlementSource, now_ms: int) -> str | None:
    """From the same state and rule as the entitlement check: when the hard budget is what refuses the account now,
    the hard limit in force (``limit_scope``: what the enforcement's claims are keyed by), else ``None``."""
    profile, state = entitlements.read(account_id)
    now = datetime.fromtimestamp(now_ms / 1000, tz=UTC)
    answer = decide(account_id, profile, state, now, EntitlementPolicy())
    if answer.reason != Reason.HARD_BUDGET or answer.hard_limit_usd is None:
        return None
    return limit_scope(answer.hard_limit_usd, profile.hard_limit_version if profile is not None else 0)


def _act(
    account_id: str,
    period: str,
    limit: str,
    action: EnforcementAction,
    participants: list[Participant],
    ledger: EnforcementLedger,
    do: Callable[[Participant], None],
    now_ms: int,
) -> list[EnforcementRecord]:
    records: list[EnforcementRecord] = []
    for participant in sorted(set(participants)):
        pending = EnforcementRecord(
            account_id, period, participant.room, participant.identity, action, "", now_ms, limit=limit
        )
        if not ledger.claim(pending):
            continue  # done before (a redelivered event or step)
        try:
            do(participant)
        except ParticipantGoneError as exc:
            decided = pending.decided("gone", str(exc))
        except RoomControlFailedError as exc:
            decided = pending.decided("retry", str(exc))
        else:
            decided = pending.decided("done")
        ledger.record(decided)
        records.append(decided)
    if any(record.outcome == "retry" for record in records):
        raise EnforcementIncompleteError(records)
    return records


def restrict_account(
    account_id: str,
    period: str,
    limit: str,
    sessions: OpenSessions,
    rooms: RoomControl,
    ledger: EnforcementLedger,
    scheduler: RemovalScheduler,
    policy: EnforcementPolicy,
    now_ms: int,
) -> list[EnforcementRecord]:
    """Step 1 (the hard limit ``limit`` was reached): audio only for every open participant, then the removal is
    scheduled (once per account, period and hard limit)."""
    records = _act(
        account_id,
        period,
        limit,
        EnforcementAction.AUDIO_ONLY,
        sessions.open_participants(account_id),
        ledger,
        lambda p: rooms.audio_only(p.room, p.identity),
        now_ms,
    )
    marker = EnforcementRecord(
        account_id, period, "-", "-", EnforcementAction.SCHEDULE_REMOVAL, "", now_ms, limit=limit
    )
    if ledger.claim(marker):
        try:
            scheduler.schedule_removal(account_id, period, policy.grace_seconds, limit)
        except Exception:
            ledger.record(marker.decided("retry", "the removal could not be scheduled"))
            raise
        ledger.record(marker.decided("done", f"in {policy.grace_seconds} s"))
        records.append(marker.decided("done", f"in {policy.grace_seconds} s"))
    return records


def remove_account(
    account_id: str,
    period: str,
    limit: str,
    sessions: OpenSessions,
    rooms: RoomControl,
    ledger: EnforcementLedger,
    entitlements: EntitlementSource,
    now_ms: int,
) -> list[EnforcementRecord]:
    """Step 2 (after the grace period): remove every open participant of the account, if the hard limit still holds
    (raised or removed meanwhile: nothing is removed, and that is recorded). ``limit``: the hard limit step 1
    enforced (empty for a step scheduled before it was kept); the records are keyed by it."""
    if hard_limit_reached(account_id, entitlements, now_ms) is None:
        lifted = EnforcementRecord(account_id, period, "-", "-", EnforcementAction.REMOVE, "", now_ms, limit=limit)
        if ledger.claim(lifted):
            ledger.record(lifted.decided("lifted", "the hard limit no longer applies"))
            return [lifted.decided("lifted", "the hard limit no longer applies")]
        return []
    return _act(
        account_id,
        period,
        limit,
        EnforcementAction.REMOVE,
        sessions.open_participants(account_id),
        ledger,
        lambda p: rooms.remove(p.room, p.identity),
        now_ms,
    )
