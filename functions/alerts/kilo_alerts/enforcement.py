"""Enforcement of a hard budget mid-call (docs/alerts.md, "Hard limit"): first every participant of the account's open
sessions who may publish is narrowed to the microphone (video and screen share revoked, every other part of its
permission kept and saved, the call goes on), then after a grace period they are removed - unless the hard limit was
lifted meanwhile (raised, removed, or the month turned): then each gets its saved permission back. Every action is
recorded; each is claimed first (one record per (account, period, hard limit, room, identity, action) - a removal and
an audio-only per session too: the session's join, so one who rejoins with the same identity is narrowed or removed
again), so a redelivered event or step repeats nothing that was done, while a limit raised after it was enforced is
enforced again when the bill reaches the new one.

A participant RoomService no longer knows (left meanwhile) is recorded ``gone``; a failure for now (RoomService
unreachable) is recorded ``retry`` and raised, so the queue delivers the event again and only what is missing is done.
The removal step is scheduled before anyone is narrowed, so it comes whatever happens to the narrowing (D361): it
removes everyone still in a call, or - the limit lifted meanwhile - gives every narrowed participant its permission
back; a participant RoomService keeps failing on blocks nobody else. The step that removed records so (``done``):
whoever a later restriction of that limit finds in a call (joined since: a redelivered event, the sweeper saying the
limit is still reached) is removed at once, not narrowed to wait for a step that has run (D361 amended).
A claim another delivery holds within its lease is not taken as done: the event is retried too (``ClaimHeldError``).

The records name each participant by D80's pseudonym of its identity (``kilo_billing.accounts.pseudonym``), in the
key and in the item, never by the identity itself (D214): RoomService is called with the identity of the
account's open sessions (rating's), and a restore finds the participant to give its permission back to among them
(one no longer in a call is ``gone``). Records written before name the identity: they are read as their pseudonym.
An erasure while the call goes on turns the open sessions' identities into their pseudonyms (D80): such a participant
is found in its room's participant list (``RoomControl.identities``) as the one whose identity has that pseudonym
(``_LiveIdentities``), and RoomService is called with that identity.
"""

from __future__ import annotations

import uuid
from collections.abc import Callable, Sequence
from dataclasses import dataclass, replace
from datetime import UTC, datetime

from kilo_alerts.model import EnforcementAction, EnforcementRecord, Participant
from kilo_alerts.ports import (
    ClaimHeldError,
    EnforcementLedger,
    OpenSessions,
    ParticipantGoneError,
    RemovalScheduler,
    RoomControl,
    RoomControlFailedError,
)
from kilo_billing.accounts import is_pseudonym, pseudonym
from kilo_billing.contracts import limit_scope
from kilo_billing.entitlements import EntitlementSource
from kilo_billing.periods import Period


@dataclass(frozen=True, slots=True)
class EnforcementPolicy:
    grace_seconds: int = 120  # between audio-only and removal (<= 900: an SQS message delay)


@dataclass(frozen=True, slots=True)
class EnforcementPorts:
    """What the enforcement steps act through; each step uses the ones it needs."""

    sessions: OpenSessions  # the account's open sessions (rating's): who is in a call
    rooms: RoomControl  # LiveKit's RoomService
    ledger: EnforcementLedger  # the records: claims, outcomes and the account's turn
    scheduler: RemovalScheduler  # puts the delayed removal step on the queue
    entitlements: EntitlementSource  # the bill and the hard limit in force: whether the limit still holds


class EnforcementIncompleteError(Exception):
    """RoomService failed for now on some participants; the others are done and recorded. ``turn_held``: failed only
    because another delivery held the account's turn (``_in_turn``): worth trying again within seconds (the holder's
    RoomService calls take that long), not after the queue's visibility timeout (D209)."""

    def __init__(self, records: list[EnforcementRecord], *, turn_held: bool = False, reason: str = "") -> None:
        super().__init__(reason or f"{sum(1 for r in records if r.outcome == 'retry')} RoomService action(s) to retry")
        self.records = records
        self.turn_held = turn_held


def hard_limit_reached(account_id: str, entitlements: EntitlementSource, now_ms: int) -> str | None:
    """The hard limit in force (``limit_scope``: what the enforcement's claims are keyed by) when the current period's
    bill (the spend item the entitlement check reads) is at or above it, else ``None``. Tested directly, whatever the
    account's status: ``decide`` reports a past_due / abuse_hold / suspended status before the hard budget, and such
    an account's running calls must stop at the cap all the same (new calls are refused by the status anyway)."""
    profile, state = entitlements.read(account_id)
    if profile is None or profile.hard_limit_usd is None:
        return None
    period = Period.containing(datetime.fromtimestamp(now_ms / 1000, tz=UTC)).key
    spend = state.spend if state is not None else None
    if spend is None or spend.period != period or spend.used < profile.hard_limit_usd:
        return None
    return limit_scope(profile.hard_limit_usd, profile.hard_limit_version)


CHANGED_BY_APP = "the app changed the permission since audio-only: its change is left as it is"
LEFT = "not in a call any more (no open session, not in its room): nothing to give back"
MARKER = "-"  # the room and identity of an account's own steps (schedule_removal, the removal's marker)


def stored(account_id: str, records: list[EnforcementRecord]) -> list[EnforcementRecord]:
    """The account's records (``EnforcementLedger.actions``) as they are written now: each participant by its
    pseudonym - a record written before D214 names the identity, and is read as its pseudonym (the same for the
    same identity of the same account), so its saved permission is found; the account's own steps stay as they are."""
    return [
        record if record.identity == MARKER else replace(record, identity=pseudonym(account_id, record.identity))
        for record in records
    ]


def _without_identity(text: str, identities: Sequence[str], ref: str) -> str:
    """A RoomService answer kept as the record's detail, the participant's identities in it (its session's, and the
    live one its pseudonym was matched to) replaced by ``ref``."""
    for identity in identities:
        if identity:
            text = text.replace(identity, ref)
    return text


class _LiveIdentities:
    """The identity to call RoomService with for an open session's participant: its own, or - the session's identity
    being a pseudonym, an erasure having rewritten it while the call goes on (D80) - the identity of the room's
    participant (``RoomControl.identities``, each room listed once per step) whose pseudonym it is; none such: it left
    (``ParticipantGoneError``). D214 amended."""

    def __init__(self, account_id: str, rooms: RoomControl) -> None:
        self._account_id = account_id
        self._rooms = rooms
        self._listed: dict[str, list[str]] = {}
        self.matched: dict[Participant, str] = {}  # a pseudonymised participant -> the live identity found

    def of(self, participant: Participant) -> Participant:
        if not is_pseudonym(participant.identity):
            return participant
        if participant.room not in self._listed:
            self._listed[participant.room] = self._rooms.identities(participant.room)
        for identity in self._listed[participant.room]:
            if pseudonym(self._account_id, identity) == participant.identity:
                self.matched[participant] = identity
                return Participant(participant.room, identity)
        raise ParticipantGoneError(f"no participant of {participant.room} has the pseudonym {participant.identity}")


_PER_SESSION = (EnforcementAction.REMOVE, EnforcementAction.AUDIO_ONLY)  # claimed per session (its join)


def _latest_sessions(account_id: str, participants: list[Participant]) -> list[Participant]:
    """Each participant's latest session (the highest join) of those listed: the lagging index may still list a
    session that left beside its identity's rejoin, while LiveKit has one participant per identity in a room -
    narrowing it twice in one step would save the permission the first narrowing left (D146: lifting the limit would
    give back audio-only). Keyed by (room, pseudonym), as the records are (an erasure may have rewritten one)."""
    latest: dict[tuple[str, str], Participant] = {}
    for participant in participants:
        key = (participant.room, pseudonym(account_id, participant.identity))
        if key not in latest or participant.joined_ms > latest[key].joined_ms:
            latest[key] = participant
    return list(latest.values())


def _act(
    account_id: str,
    period: str,
    limit: str,
    action: EnforcementAction,
    participants: list[Participant],
    ledger: EnforcementLedger,
    do: Callable[[EnforcementRecord, Participant], EnforcementRecord],
    now_ms: int,
    live: _LiveIdentities,
) -> list[EnforcementRecord]:
    """Claim, act (``do`` returns the decided record of the participant, RoomService called with ``live.of`` it),
    record - per participant, each keyed and recorded by the pseudonym of its identity (D214); a removal and an
    audio-only per session too (``joined_ms``, D71 amended (e4b), D361 amended (ao)): one who rejoins with the
    identity of a removed or narrowed session is another session, claimed and removed or narrowed afresh, while a
    session removed (or found gone) or narrowed is never asked about again. A claim another delivery holds within its
    lease is left alone and reported ``retry`` (not written): the record is delivered again."""
    records: list[EnforcementRecord] = []
    for participant in sorted(set(participants)):
        ref = pseudonym(account_id, participant.identity)
        joined = participant.joined_ms if action in _PER_SESSION else 0
        pending = EnforcementRecord(
            account_id, period, participant.room, ref, action, "", now_ms, limit=limit, joined_ms=joined
        )
        try:
            if not ledger.claim(pending):
                continue  # done before (a redelivered event or step)
        except ClaimHeldError as exc:
            records.append(pending.decided("retry", exc.held.value))
            continue
        try:
            decided = do(pending, participant)
        except (ParticipantGoneError, RoomControlFailedError) as exc:
            named = (participant.identity, live.matched.get(participant, ""))
            outcome = "gone" if isinstance(exc, ParticipantGoneError) else "retry"
            decided = pending.decided(outcome, _without_identity(str(exc), named, ref))
        ledger.record(decided)
        records.append(decided)
    if any(record.outcome == "retry" for record in records):
        raise EnforcementIncompleteError(records)
    return records


def _latest_unrestored(records: list[EnforcementRecord], period: str) -> dict[Participant, EnforcementRecord]:
    """Each participant's latest audio-only step of the period, under any hard limit, whose saved permission has not
    been given back yet: what our last update left it with (``narrowed``) and the permission it had before any limit
    of the period narrowed it, or the app's permission saved afresh since (``saved``: each step keeps the one before
    it, D146). ``records``: the account's records as stored (``stored``)."""
    latest: dict[Participant, EnforcementRecord] = {}
    for record in sorted(_all_unrestored(records, period), key=lambda record: record.at_ms):
        latest[Participant(record.room, record.identity)] = record
    return latest


def _narrow(
    rooms: RoomControl, earlier: dict[Participant, EnforcementRecord], live: _LiveIdentities
) -> Callable[[EnforcementRecord, Participant], EnforcementRecord]:
    """Narrow and save the permission it had; a participant still narrowed by an earlier limit of the period (a limit
    set again while reached is a new scope, D140) keeps the permission the latest such step saved: what it reads now
    is already narrowed, and giving that back would leave it audio-only (D146). Compared with what that latest step
    left: a permission the app changed since is saved afresh. ``earlier`` is keyed by the participants' pseudonyms,
    as the records are."""

    def narrow(pending: EnforcementRecord, participant: Participant) -> EnforcementRecord:
        who = live.of(participant)
        narrowing = rooms.audio_only(who.room, who.identity)
        latest = earlier.get(Participant(pending.room, pending.identity))
        changed = narrowing is not None and latest is not None and latest.narrowed not in ("", narrowing.saved)
        if latest is not None and not changed:
            detail = f"still narrowed under the hard limit {latest.limit or '(unscoped)'}: its saved permission kept"
            now = narrowing.narrowed if narrowing is not None else latest.narrowed
            return replace(pending.decided("done", detail), saved=latest.saved, narrowed=now)
        if narrowing is None:
            return pending.decided("skipped", "may not publish: nothing to narrow")
        # narrowed afresh: never narrowed this period, or the app changed the permission since (its change is saved),
        # or a new session of the participant (rejoined, D361 amended (ao)) has its token's permission again: another
        # join than the earlier narrowing's, or - that narrowing's join not known (keyed before) - a join after it
        rejoined = latest is not None and (
            latest.joined_ms != pending.joined_ms if latest.joined_ms else pending.joined_ms > latest.at_ms
        )
        again = "a new session (rejoined)" if rejoined else "the app changed the permission"
        detail = f"{again} since the earlier narrowing: saved afresh" if changed else ""
        return replace(pending.decided("done", detail), saved=narrowing.saved, narrowed=narrowing.narrowed)

    return narrow


def _claim_marker(ledger: EnforcementLedger, marker: EnforcementRecord, records: list[EnforcementRecord]) -> bool:
    try:
        return ledger.claim(marker)
    except ClaimHeldError as exc:
        raise EnforcementIncompleteError([*records, marker.decided("retry", exc.held.value)]) from exc


def restrict_account(
    account_id: str, period: str, limit: str, ports: EnforcementPorts, policy: EnforcementPolicy, now_ms: int
) -> list[EnforcementRecord]:
    """Step 1 (the hard limit ``limit`` was reached): the removal is scheduled (once per account, period and hard
    limit), then audio only for every open participant who may publish (its permission saved). In the account's
    turn (``_in_turn``)."""
    marker = EnforcementRecord(account_id, period, "-", "-", EnforcementAction.AUDIO_ONLY, "", now_ms, limit=limit)
    return _in_turn(ports.ledger, marker, lambda: _restrict(account_id, period, limit, ports, policy, now_ms))


def _restrict(
    account_id: str, period: str, limit: str, ports: EnforcementPorts, policy: EnforcementPolicy, now_ms: int
) -> list[EnforcementRecord]:
    """The removal step is claimed and scheduled BEFORE anyone is narrowed (D361): only that step gives a
    permission back (the limit lifted) or removes (still reached), so narrowing without it scheduled could leave a
    participant audio-only for good - a redelivered event finding the limit no longer reached does nothing. Not
    scheduled (SQS refusing, its claim held): nobody is narrowed and the event is retried. A participant RoomService
    keeps failing on is retried on its own claim; the others are narrowed, and removed by the step. The limit's
    removal step already found it no longer in force (``lifted`` or ``superseded``: a redelivered event that read the
    limit reached before that step took the turn, or - superseded at the month's turn - the same limit reached again
    in the new month): nobody is narrowed under it - no step would give it back. The step already ran and removed
    (``done``): whoever is in a call now joined after it (a token minted before the limit, the index lagging) and is
    removed at once - the grace has passed, and a narrowing would wait for a step that has run (D361 amended)."""
    held = stored(account_id, ports.ledger.actions(account_id))
    step = {
        record.outcome
        for record in held
        if (record.action, record.identity, record.period, record.limit)
        == (EnforcementAction.REMOVE, MARKER, period, limit)
    }
    if step & {"lifted", "superseded"}:
        return []
    if "done" in step:  # the step ran, the limit reached: whoever is in a call now joined since - removed at once
        return _remove_listed(account_id, period, limit, ports, now_ms)
    scheduled = _schedule_removal(account_id, period, limit, ports, policy, now_ms)
    live = _LiveIdentities(account_id, ports.rooms)
    try:
        narrowed = _act(
            account_id,
            period,
            limit,
            EnforcementAction.AUDIO_ONLY,
            _latest_sessions(account_id, ports.sessions.open_participants(account_id)),
            ports.ledger,
            _narrow(ports.rooms, _latest_unrestored(held, period), live),
            now_ms,
            live,
        )
    except EnforcementIncompleteError as exc:
        raise EnforcementIncompleteError([*exc.records, *scheduled]) from exc
    return [*narrowed, *scheduled]  # the participants' records, then the account's step (as listed before)


def _schedule_removal(
    account_id: str, period: str, limit: str, ports: EnforcementPorts, policy: EnforcementPolicy, now_ms: int
) -> list[EnforcementRecord]:
    """The removal step of ``limit`` put on the queue, once per account, period and limit (claimed): its record, or
    none when an earlier delivery scheduled it. The queue refusing it: ``EnforcementIncompleteError`` with its
    ``retry`` record (the event is retried, D183)."""
    marker = EnforcementRecord(
        account_id, period, "-", "-", EnforcementAction.SCHEDULE_REMOVAL, "", now_ms, limit=limit
    )
    if not _claim_marker(ports.ledger, marker, []):
        return []
    try:
        ports.scheduler.schedule_removal(account_id, period, policy.grace_seconds, limit)
    except Exception as exc:  # its retry record kept in the event's outcome (the queue's answer in the message)
        failed = marker.decided("retry", "the removal could not be scheduled")
        ports.ledger.record(failed)
        raise EnforcementIncompleteError([failed], reason=f"the removal could not be scheduled: {exc}") from exc
    done = marker.decided("done", f"in {policy.grace_seconds} s")
    ports.ledger.record(done)
    return [done]


def restore_account(
    account_id: str, period: str, limit: str, ports: EnforcementPorts, now_ms: int
) -> list[EnforcementRecord]:
    """The hard limit ``limit`` no longer holds (raised, removed, or a new month): every participant restricted under
    it gets back its saved permission (once each; one who left meanwhile is recorded gone). No limit of the period
    holds then, so what is given back is the participant's latest audio-only step of the period not given back yet,
    whichever limit's removal step runs first: its saved permission, while the participant still holds what that step
    left (else ``kept``). That step and the older ones under the period's other limits are recorded restored (or
    kept) too: their removal steps give nothing back a second time. The records name participants by pseudonym:
    each is given back through the identity of its open session (``ports.sessions``) in the same room whose pseudonym
    it is; one with none has left the call (its permission went with it) and is recorded ``gone`` (D214). A
    session an erasure pseudonymised is matched to the room's live participant (``_LiveIdentities``).

    The open sessions are read from rating's ``open_sessions`` index (eventually consistent), which is not trusted
    to say who left: a participant it does not list is looked for in its room's participant list by its pseudonym
    (``_LiveIdentities``: one ListParticipants per such room) and given back through the identity found there; only
    one its room does not list (or a room that ended) is ``gone``. So a restore never depends on the index having
    caught up with the audio-only step's read - the grace between them may be 0 s (D262). The other way round
    (a session closed, still listed) RoomService decides: not found, ``gone``. Each restore is claimed once per
    participant and limit: a read that differs never restores twice."""
    records = stored(account_id, ports.ledger.actions(account_id))
    saved = {
        Participant(record.room, record.identity): record
        for record in records
        if record.action is EnforcementAction.AUDIO_ONLY
        and (record.period, record.limit) == (period, limit)
        and record.outcome == "done"
        and record.saved
    }
    unrestored = _all_unrestored(records, period)
    latest = _latest_unrestored(records, period)
    in_call = {
        Participant(found.room, pseudonym(account_id, found.identity)): found
        for found in ports.sessions.open_participants(account_id)
    }
    live = _LiveIdentities(account_id, ports.rooms)

    def restore(pending: EnforcementRecord, session: Participant) -> EnforcementRecord:
        participant = Participant(pending.room, pending.identity)
        narrowed = latest.get(participant, saved[participant])
        if participant in in_call:
            who = live.of(session)
        else:  # the index does not list it (left, or the index lags): its room says (``session`` is its pseudonym)
            try:
                who = live.of(session)
            except ParticipantGoneError:
                return pending.decided("gone", LEFT)
        given = ports.rooms.restore(who.room, who.identity, narrowed.saved, narrowed.narrowed)
        for other in unrestored:
            if (
                Participant(other.room, other.identity) == participant
                and other.limit != limit
                and other.at_ms <= narrowed.at_ms
            ):
                _mark_restored(ports.ledger, replace(pending, limit=other.limit), limit, given)
        if not given:
            return pending.decided("kept", CHANGED_BY_APP)
        return pending.decided("done")

    # each participant by its open session's identity; one without: by its pseudonym (``restore`` records it gone)
    participants = [in_call.get(participant, participant) for participant in saved]
    return _act(account_id, period, limit, EnforcementAction.RESTORE, participants, ports.ledger, restore, now_ms, live)


def _all_unrestored(records: list[EnforcementRecord], period: str) -> list[EnforcementRecord]:
    """Every done audio-only step of the period (any limit) whose permission was not given back nor its participant
    removed under its limit."""
    ended = {
        (record.limit, record.room, record.identity)
        for record in records
        if record.period == period
        and record.action in (EnforcementAction.RESTORE, EnforcementAction.REMOVE)
        and record.outcome in ("done", "gone", "kept")
    }
    return [
        record
        for record in records
        if record.action is EnforcementAction.AUDIO_ONLY
        and record.period == period
        and record.outcome == "done"
        and record.saved
        and (record.limit, record.room, record.identity) not in ended
    ]


def _mark_restored(ledger: EnforcementLedger, pending: EnforcementRecord, under: str, given: bool) -> None:
    """Record the restore of ``pending``'s limit as done by the restore under ``under`` (``given``: set back; else
    kept, the app's change left alone) - claimed like any action: decided or held by another delivery, it is left
    alone."""
    try:
        if not ledger.claim(pending):
            return
    except ClaimHeldError:
        return
    if not given:
        ledger.record(pending.decided("kept", f"{CHANGED_BY_APP} (the restore under the hard limit {under or '-'})"))
        return
    ledger.record(pending.decided("done", f"given back with the restore under the hard limit {under or '(unscoped)'}"))


def _remove(
    account_id: str, period: str, limit: str, ports: EnforcementPorts, policy: EnforcementPolicy, now_ms: int
) -> list[EnforcementRecord]:
    """Step 2 (after the grace period): remove every open participant of the account, if the hard limit it was
    scheduled under is still the one in force (same amount and setting, D140; same month) and still reached. Raised or
    removed meanwhile, or the month turned: nobody is removed, everyone restricted gets their permission back, and
    that is recorded (``lifted``). Replaced by another limit that is reached too (raised, lowered or set again within
    the grace): nobody is removed under the old one; the limit in force is enforced by its own steps - audio-only
    (kept for who is narrowed already) and its own removal after its own grace (``restrict_account``: claimed, so
    nothing its own event did is repeated) - and the step is recorded ``superseded``. ``limit``: the hard limit step 1
    enforced (empty for a step scheduled before it was kept: taken as the one in force); the records are keyed by
    it. Still reached: everyone removed, then the step recorded ``done`` (its own claim, so delivered again it does
    nothing): a restriction of the limit after it removes at once whoever joined since (``_restrict``). Decided and
    done in the account's turn (``remove_account``)."""
    in_force = hard_limit_reached(account_id, ports.entitlements, now_ms)
    marker = EnforcementRecord(account_id, period, "-", "-", EnforcementAction.REMOVE, "", now_ms, limit=limit)
    if in_force is None:
        if not _claim_marker(ports.ledger, marker, []):
            return []
        try:
            restored = restore_account(account_id, period, limit, ports, now_ms)
        except EnforcementIncompleteError as exc:
            ports.ledger.record(marker.decided("retry", "permissions not all restored yet"))
            raise EnforcementIncompleteError([*exc.records, marker.decided("retry")]) from exc
        ports.ledger.record(marker.decided("lifted", "the hard limit no longer applies"))
        return [*restored, marker.decided("lifted", "the hard limit no longer applies")]
    current = Period.containing(datetime.fromtimestamp(now_ms / 1000, tz=UTC)).key
    if limit and (current, in_force) != (period, limit):
        return _superseded(marker, current, in_force, ports, policy)
    if not _claim_marker(ports.ledger, marker, []):
        return []  # this step ran (delivered again): who joined since is removed by the restriction (``_restrict``)
    try:
        removed = _remove_listed(account_id, period, limit, ports, now_ms, narrowed_too=True)
    except EnforcementIncompleteError as exc:
        ports.ledger.record(marker.decided("retry", "participants not all removed yet"))
        raise EnforcementIncompleteError([*exc.records, marker.decided("retry")]) from exc
    except Exception:
        ports.ledger.record(marker.decided("retry", "participants not all removed yet"))
        raise
    done = marker.decided("done", "everyone in a call removed: who joins since is removed by the restriction")
    ports.ledger.record(done)
    return [*removed, done]


def _remove_listed(
    account_id: str, period: str, limit: str, ports: EnforcementPorts, now_ms: int, *, narrowed_too: bool = False
) -> list[EnforcementRecord]:
    """RemoveParticipant for every open participant (each claimed once per period and limit: one removed before is
    not asked again) and, ``narrowed_too``, each narrowed under ``limit`` the open sessions do not list
    (``_narrowed_unlisted``). One whose room could not be listed (its presence unknown: ``retry``) blocks nobody
    else: the others are removed first, then the step is incomplete (D361)."""
    live = _LiveIdentities(account_id, ports.rooms)
    listed = ports.sessions.open_participants(account_id)
    unlisted, unchecked = (
        _narrowed_unlisted(account_id, period, limit, listed, ports.ledger, live, now_ms) if narrowed_too else ([], [])
    )
    try:
        removed = _act(
            account_id,
            period,
            limit,
            EnforcementAction.REMOVE,
            [*listed, *unlisted],
            ports.ledger,
            lambda pending, participant: _removed(ports.rooms, pending, live.of(participant)),
            now_ms,
            live,
        )
    except EnforcementIncompleteError as exc:
        raise EnforcementIncompleteError([*unchecked, *exc.records]) from exc
    if unchecked:
        raise EnforcementIncompleteError([*unchecked, *removed])
    return removed


def _narrowed_unlisted(
    account_id: str,
    period: str,
    limit: str,
    listed: list[Participant],
    ledger: EnforcementLedger,
    live: _LiveIdentities,
    now_ms: int,
) -> tuple[list[Participant], list[EnforcementRecord]]:
    """The participants narrowed under ``limit`` that the open sessions (``listed``) do not list, by pseudonym: the
    index is eventually consistent and may not list yet one the audio-only step's read found (a grace of 0 s,
    D262), so each is looked for in its room (``_LiveIdentities``) and removed, or recorded ``gone``. One with a
    removal under ``limit`` already decided (``done`` or ``gone``, of any join) is looked for in its room first
    (one ListParticipants per room): not there, nothing is claimed nor recorded - an unlisted participant has no join
    (0), so a claim keyed by it would claim the removed session again once rating closed it (D71 amended (e4c));
    there (rejoined while the index lags), it is removed, claimed as the presence that joined after its latest decided
    removal (``joined_ms``: that removal's ``at_ms``), so a rerun that finds it again does not claim it again (D71
    amended (e4d)). Its room's listing failing for now (``RoomControlFailedError``: whether it is there unknown), it
    is returned apart (the second list): a ``retry`` under that presence's key, neither claimed nor written - the
    redelivery looks again - while the others are removed all the same (D71 amended (e4e))."""
    records = stored(account_id, ledger.actions(account_id))
    seen = {Participant(found.room, pseudonym(account_id, found.identity)) for found in listed}
    removed: dict[Participant, int] = {}  # each participant's latest decided removal under the limit
    for record in records:
        if (
            record.action is EnforcementAction.REMOVE
            and (record.period, record.limit) == (period, limit)
            and record.outcome in ("done", "gone")
            and record.identity != MARKER
        ):
            who = Participant(record.room, record.identity)
            removed[who] = max(removed.get(who, 0), record.at_ms)
    narrowed = sorted(
        {
            Participant(record.room, record.identity)
            for record in records
            if record.action is EnforcementAction.AUDIO_ONLY
            and (record.period, record.limit, record.outcome) == (period, limit, "done")
            and record.identity != MARKER
            and Participant(record.room, record.identity) not in seen
        }
    )
    unlisted: list[Participant] = []
    unchecked: list[EnforcementRecord] = []
    for participant in narrowed:
        if participant not in removed:
            unlisted.append(participant)
            continue
        presence = replace(participant, joined_ms=removed[participant])
        try:
            live.of(participant)  # its pseudonym: matched in its room's participant list
        except ParticipantGoneError:
            continue  # not back in its room: its removal stands, nothing recorded
        except RoomControlFailedError as exc:  # its room not listed this time: looked for again when redelivered
            pending = EnforcementRecord(
                account_id, period, presence.room, presence.identity, EnforcementAction.REMOVE, "", now_ms,
                limit=limit, joined_ms=presence.joined_ms,
            )  # fmt: skip
            unchecked.append(pending.decided("retry", str(exc)))
            continue
        unlisted.append(presence)
    return unlisted, unchecked


def remove_account(
    account_id: str, period: str, limit: str, ports: EnforcementPorts, policy: EnforcementPolicy, now_ms: int
) -> list[EnforcementRecord]:
    """Step 2, the removal step (``_remove``): whether the limit still holds is read, and what follows done, in the
    account's turn (``_in_turn``): a restore never runs while a restriction does."""
    marker = EnforcementRecord(account_id, period, "-", "-", EnforcementAction.REMOVE, "", now_ms, limit=limit)
    return _in_turn(ports.ledger, marker, lambda: _remove(account_id, period, limit, ports, policy, now_ms))


TURN_RETRY_SECONDS = 5  # a delivery that found the turn held is received again after this, not the queue's 360 s


def _in_turn(
    ledger: EnforcementLedger, marker: EnforcementRecord, work: Callable[[], list[EnforcementRecord]]
) -> list[EnforcementRecord]:
    """``work`` in the account's turn at its RoomService actions (D182). RoomService has no conditional update,
    so a restore (permission given back when the limit no longer holds) and a restriction (a limit reached again
    meanwhile) running at once could interleave their reads and writes: the restriction reads the permission still
    narrowed and keeps the earlier saved one, then the restore gives the full permission back - the participant
    publishes video under a limit recorded enforced. One turn per account makes them run one after the other; the
    removal step reads whether the limit holds inside it. A turn held by another delivery (within the lease: a crashed
    holder's is taken over) fails this one for now (``EnforcementIncompleteError``): the queue delivers it again."""
    holder = uuid.uuid4().hex
    try:
        ledger.take_turn(marker.account_id, holder, marker.at_ms)
    except ClaimHeldError as exc:
        raise EnforcementIncompleteError([marker.decided("retry", exc.held.value)], turn_held=True) from exc
    try:
        return work()
    finally:
        ledger.end_turn(marker.account_id, holder)


def _superseded(
    marker: EnforcementRecord, period: str, in_force: str, ports: EnforcementPorts, policy: EnforcementPolicy
) -> list[EnforcementRecord]:
    """The removal step of ``marker.limit`` when another limit, ``in_force`` (of ``period``), is reached instead:
    nobody removed under the old limit; the one in force decided by its own policy (D140, D146)."""
    if not _claim_marker(ports.ledger, marker, []):
        return []
    account_id, now_ms = marker.account_id, marker.at_ms
    try:
        records = _restrict(account_id, period, in_force, ports, policy, now_ms)
    except EnforcementIncompleteError as exc:
        ports.ledger.record(marker.decided("retry", f"the hard limit {in_force} in force not enforced yet"))
        raise EnforcementIncompleteError([*exc.records, marker.decided("retry")]) from exc
    except Exception:
        ports.ledger.record(marker.decided("retry", f"the hard limit {in_force} in force not enforced yet"))
        raise
    done = marker.decided("superseded", f"the hard limit in force is {in_force}: enforced by its own steps")
    ports.ledger.record(done)
    return [*records, done]


def _removed(rooms: RoomControl, pending: EnforcementRecord, participant: Participant) -> EnforcementRecord:
    rooms.remove(participant.room, participant.identity)
    return pending.decided("done")
