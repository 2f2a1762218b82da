"""In-memory fakes of the alerts ports (the ledger's DynamoDB adapter runs the same contract suite)."""

from __future__ import annotations

import json
from dataclasses import replace

from kilo_alerts.bounces import BOUNCE, BOUNCE_MARK_MS, COMPLAINT, EmailMark
from kilo_alerts.enforcement import EnforcementPorts
from kilo_alerts.model import Delivery, EnforcementRecord, Held, Narrowing, Outcome, Participant
from kilo_alerts.ports import (
    ClaimHeldError,
    EnforcementLedger,
    ParticipantGoneError,
    RoomControlFailedError,
    SendFailedError,
    SendRefusedError,
)
from kilo_alerts.rechecks import ForecastRecheck
from kilo_billing.entitlements import EntitlementSource
from tests.fakes import InMemoryEntitlements


def _key(delivery: Delivery) -> tuple[str, str, str, str, str]:
    return (delivery.account_id, delivery.period, delivery.kind, delivery.key, delivery.channel.value)


class InMemoryLedger:
    def __init__(self) -> None:
        self.items: dict[tuple[str, str, str, str, str], tuple[Delivery, bool, int]] = {}  # delivery, pending, claimed
        self.sms_days: dict[tuple[str, str], int] = {}  # (account, UTC day) -> SMS counted
        self.email_marks: dict[tuple[str, str], EmailMark] = {}  # (account, address's pseudonym) -> its mark

    def claim(self, delivery: Delivery, lease_ms: int) -> int | None:
        found = self.items.get(_key(delivery))
        if found is not None:
            stored, pending, claimed_at = found
            stale = pending and claimed_at < delivery.at_ms - lease_ms
            if pending and not stale:
                raise ClaimHeldError(Held.CLAIM)
            if not (stored.outcome is Outcome.RETRY and not pending) and not stale:
                return None
        attempts = (found[0].attempts + 1) if found is not None else 1
        self.items[_key(delivery)] = (replace(delivery, attempts=attempts, outcome=Outcome.RETRY), True, delivery.at_ms)
        return attempts

    def take_sms(self, account_id: str, day: str, cap: int, at_ms: int) -> bool:
        if self.sms_days.get((account_id, day), 0) >= cap:
            return False
        self.sms_days[(account_id, day)] = self.sms_days.get((account_id, day), 0) + 1
        return True

    def give_back_sms(self, account_id: str, day: str) -> None:
        if self.sms_days.get((account_id, day), 0) > 0:
            self.sms_days[(account_id, day)] -= 1

    def record(self, delivery: Delivery) -> None:
        self.items[_key(delivery)] = (delivery, False, delivery.at_ms)

    def release(self, delivery: Delivery) -> None:
        self.items[_key(delivery)] = (replace(delivery, outcome=Outcome.RETRY), False, delivery.at_ms)

    def deliveries(self, account_id: str, period: str | None = None) -> list[Delivery]:
        return sorted(
            (d for d, _, _ in self.items.values() if d.account_id == account_id and period in (None, d.period)),
            key=lambda d: (d.period, d.kind, d.key, d.channel.value),
        )

    def mark_email(self, account_id: str, recipient: str, why: str, detail: str, at_ms: int) -> bool:
        kept = self.email_marks.get((account_id, recipient))
        replaced = kept is None or (
            kept.why == BOUNCE and (why == COMPLAINT or kept.at_ms <= at_ms - BOUNCE_MARK_MS)
        )  # a complaint replaces a bounce's mark (D424)
        if not replaced:
            return False
        self.email_marks[(account_id, recipient)] = EmailMark(why, detail, at_ms)
        return True

    def email_mark(self, account_id: str, recipient: str) -> EmailMark | None:
        return self.email_marks.get((account_id, recipient))


class ScriptedMailer:
    """Sends into ``sent``; ``failures`` are raised first, one per call. ``suppressed``: address -> the reason SES
    keeps it on the suppression list; ``check_failures`` are raised by the suppression check first, one per call;
    ``checked`` lists the addresses asked about."""

    def __init__(
        self,
        *failures: Exception,
        suppressed: dict[str, str] | None = None,
        check_failures: tuple[Exception, ...] = (),
    ) -> None:
        self.failures = list(failures)
        self.sent: list[tuple[str, str, str, str]] = []
        self.suppressed_addresses = dict(suppressed or {})
        self.check_failures = list(check_failures)
        self.checked: list[str] = []
        self.accounts: list[str] = []  # the account each email was sent for (its tag)
        self.deliveries: list[str] = []  # the delivery record each email named (its tag, D408)

    def suppressed(self, to: str) -> str | None:
        self.checked.append(to)
        if self.check_failures:
            raise self.check_failures.pop(0)
        return self.suppressed_addresses.get(to)

    def send(self, to: str, subject: str, html: str, text: str, account_id: str = "", delivery: str = "") -> str:
        if self.failures:
            raise self.failures.pop(0)
        self.deliveries.append(delivery)
        self.accounts.append(account_id)
        self.sent.append((to, subject, html, text))
        return f"mail-{len(self.sent)}"


class ScriptedTexter:
    def __init__(self, *failures: Exception, opted_out: frozenset[str] = frozenset()) -> None:
        self.failures = list(failures)
        self.opted = opted_out
        self.sent: list[tuple[str, str]] = []

    def opted_out(self, phone: str) -> bool:
        return phone in self.opted

    def send(self, phone: str, text: str) -> str:
        if self.failures:
            raise self.failures.pop(0)
        self.sent.append((phone, text))
        return f"sms-{len(self.sent)}"


ENFORCEMENT_LEASE_MS = 5 * 60_000  # kilo_alerts.adapters.ENFORCEMENT_LEASE_MS, restated


class InMemoryEnforcementLedger:
    """``EnforcementLedger`` in memory, keyed like the DynamoDB adapter's sort key."""

    def __init__(self) -> None:
        self.items: dict[tuple[str, str, str, str, str, str, int], EnforcementRecord] = {}
        self.turns: dict[str, tuple[str, int]] = {}  # account -> (holder, taken at)

    @staticmethod
    def _key(record: EnforcementRecord) -> tuple[str, str, str, str, str, str, int]:
        return (
            record.account_id,
            record.period,
            record.limit,
            record.action.value,
            record.room,
            record.identity,
            record.joined_ms,  # a removal's or audio-only's session (``items.enforcement_sort_key``); 0 otherwise
        )

    def claim(self, record: EnforcementRecord) -> bool:
        found = self.items.get(self._key(record))
        if found is not None and found.outcome == "pending":
            if found.at_ms >= record.at_ms - ENFORCEMENT_LEASE_MS:
                raise ClaimHeldError(Held.CLAIM)
        elif found is not None and found.outcome != "retry":
            return False
        self.items[self._key(record)] = record.decided("pending")
        return True

    def record(self, record: EnforcementRecord) -> None:
        self.items[self._key(record)] = record

    def take_turn(self, account_id: str, holder: str, now_ms: int) -> None:
        found = self.turns.get(account_id)
        if found is not None and found[0] != holder and found[1] >= now_ms - ENFORCEMENT_LEASE_MS:
            raise ClaimHeldError(Held.TURN)
        self.turns[account_id] = (holder, now_ms)

    def end_turn(self, account_id: str, holder: str) -> None:
        if account_id in self.turns and self.turns[account_id][0] == holder:
            del self.turns[account_id]

    def actions(self, account_id: str) -> list[EnforcementRecord]:
        return sorted(
            (r for r in self.items.values() if r.account_id == account_id),
            key=lambda r: (r.at_ms, r.action.value, r.room, r.identity),
        )


class InMemoryOperatorLedger:
    """``OperatorLedger`` in memory: (account, kind, key) -> (status, at_ms), with the DynamoDB adapter's lease."""

    def __init__(self) -> None:
        self.items: dict[tuple[str, str, str], tuple[str, int]] = {}

    def claim(self, account_id: str, kind: str, key: str, now_ms: int, lease_ms: int) -> bool:
        status, at_ms = self.items.get((account_id, kind, key), ("retry", 0))
        if status == "pending" and at_ms >= now_ms - lease_ms:
            raise ClaimHeldError(Held.CLAIM)
        if status not in ("retry", "pending"):
            return False
        self.items[(account_id, kind, key)] = ("pending", now_ms)
        return True

    def record(self, account_id: str, kind: str, key: str, outcome: str, detail: str, now_ms: int) -> None:
        self.items[(account_id, kind, key)] = (outcome, now_ms)

    def release(self, account_id: str, kind: str, key: str, detail: str, now_ms: int) -> None:
        self.items[(account_id, kind, key)] = ("retry", now_ms)


class InMemoryPaymentSignals:
    """``PaymentSignals`` in memory: each account's failed payments once per event id, with its time (the DynamoDB
    adapter's conditional put), and the accounts paying with each card or wallet."""

    def __init__(self) -> None:
        self.failures: dict[str, dict[str, int]] = {}
        self.methods: dict[tuple[str, str], set[str]] = {}

    def record_failure(self, account_id: str, event_id: str, at_ms: int) -> list[int]:
        kept = self.failures.setdefault(account_id, {})
        kept.setdefault(event_id, at_ms)
        return sorted(kept.values())

    def record_method(self, account_id: str, method: str, fingerprint: str, at_ms: int) -> list[str]:
        accounts = self.methods.setdefault((method, fingerprint), set())
        accounts.add(account_id)
        return sorted(accounts)


AUDIO_ONLY_SOURCES = ("microphone",)


class FakeRooms:
    """``RoomControl`` over a permission table ``(room, identity) -> dict`` (can_publish, sources, hidden, ...): narrows
    and restores like the LiveKit adapter (tests/integration runs the adapter itself against a RoomService stand-in).
    ``failures`` are raised first, one per call; ``calls`` records (action, room, identity)."""

    def __init__(self, permissions: dict[tuple[str, str], dict[str, object]], *failures: Exception) -> None:
        self.permissions = permissions
        self.failures = list(failures)
        self.calls: list[tuple[str, str, str]] = []

    def _find(self, action: str, room: str, identity: str) -> dict[str, object]:
        self.calls.append((action, room, identity))
        if self.failures:
            raise self.failures.pop(0)
        if (room, identity) not in self.permissions:
            raise ParticipantGoneError(f"{identity} is not in {room}")
        return self.permissions[(room, identity)]

    def audio_only(self, room: str, identity: str) -> Narrowing | None:
        permission = self._find("audio_only", room, identity)
        if not permission["can_publish"]:
            return None
        saved = json.dumps(permission, sort_keys=True)
        self.permissions[(room, identity)] = {**permission, "sources": list(AUDIO_ONLY_SOURCES)}
        return Narrowing(saved, json.dumps(self.permissions[(room, identity)], sort_keys=True))

    def restore(self, room: str, identity: str, saved: str, narrowed: str) -> bool:
        current = self._find("restore", room, identity)
        if narrowed and current != json.loads(narrowed):
            return False
        self.permissions[(room, identity)] = json.loads(saved)
        return True

    def remove(self, room: str, identity: str) -> None:
        self._find("remove", room, identity)
        del self.permissions[(room, identity)]

    def identities(self, room: str) -> list[str]:
        """ListParticipants: recorded as ("identities", room, ""); a room nobody is in is gone (LiveKit ends it)."""
        self.calls.append(("identities", room, ""))
        if self.failures:
            raise self.failures.pop(0)
        found = [identity for (where, identity) in self.permissions if where == room]
        if not found:
            raise ParticipantGoneError(f"room {room} does not exist")
        return found


class StaticSessions:
    def __init__(self, *participants: Participant) -> None:
        self.participants = list(participants)

    def open_participants(self, account_id: str) -> list[Participant]:
        return list(self.participants)


class RecordingScheduler:
    def __init__(self) -> None:
        self.scheduled: list[tuple[str, str, int, str]] = []

    def schedule_removal(self, account_id: str, period: str, delay_seconds: int, limit: str) -> None:
        self.scheduled.append((account_id, period, delay_seconds, limit))


def enforcement_ports(
    sessions: StaticSessions,
    rooms: FakeRooms,
    ledger: EnforcementLedger,
    scheduler: RecordingScheduler,
    state: EntitlementSource | None = None,
) -> EnforcementPorts:
    """The enforcement's ports on fakes, ``ledger`` in memory or on DynamoDB; ``state``: the bill and hard limit the
    removal step reads (the audio-only step reads none: by default an empty one)."""
    return EnforcementPorts(sessions, rooms, ledger, scheduler, state or InMemoryEntitlements())


__all__ = [
    "FakeRooms",
    "InMemoryEnforcementLedger",
    "InMemoryLedger",
    "InMemoryOperatorLedger",
    "RecordingScheduler",
    "RoomControlFailedError",
    "ScriptedMailer",
    "ScriptedTexter",
    "SendFailedError",
    "SendRefusedError",
    "StaticSessions",
    "enforcement_ports",
]


class InMemoryForecastRechecks:
    """``ForecastRechecks`` as the alerts table keeps them: one row per account and month, pending until queued."""

    def __init__(self) -> None:
        self.rows: dict[tuple[str, str], ForecastRecheck] = {}
        self.pending: set[tuple[str, str]] = set()
        self.writes = 0  # every write that changed a row

    def plan(self, recheck: ForecastRecheck, at_ms: int) -> None:
        key = (recheck.account_id, recheck.period)
        found = self.rows.get(key)
        other_limit = found is not None and (found.limit_name, found.limit) != (recheck.limit_name, recheck.limit)
        if found is None or (key in self.pending and (recheck.forecast_day or other_limit)):
            self.rows[key] = recheck
            self.pending.add(key)
            self.writes += 1

    def due(self, period: str, now_ms: int, limit: int) -> list[ForecastRecheck]:
        found = [r for k, r in self.rows.items() if k in self.pending and r.period == period and r.due_ms <= now_ms]
        return sorted(found, key=lambda r: (r.due_ms, r.account_id))[:limit]

    def queued(self, recheck: ForecastRecheck, at_ms: int) -> bool:
        key = (recheck.account_id, recheck.period)
        found = self.rows.get(key)
        same = found is not None and (found.limit_name, found.limit, found.forecast_day) == (
            recheck.limit_name, recheck.limit, recheck.forecast_day
        )  # fmt: skip
        if key not in self.pending or not same:  # another run marked it, or the row was replaced since read
            return False
        self.pending.discard(key)
        return True


class RecordingRecheckQueue:
    def __init__(self) -> None:
        self.sent: list[tuple[ForecastRecheck, int]] = []  # (re-check, delay seconds)

    def send(self, recheck: ForecastRecheck, delay_seconds: int) -> None:
        self.sent.append((recheck, delay_seconds))
