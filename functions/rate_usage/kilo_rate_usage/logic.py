"""Rate one stream batch: bring the rooms it touched up to date, apply the differences, announce thresholds.

Exactly once under redelivery, duplicates and crashes:
- a room's events are folded into its stored state (``rooms``) when they arrive in order - the sessions are then
  exactly those a rebuild would give; otherwise the room's sessions are rebuilt from *all* of its stored events (a
  strongly consistent query), so a repeated or reordered event changes nothing; a session is written only when its
  content changed, conditioned on the version read, and the room's state with it, conditioned on its version;
- the aggregate delta of a session is (new contributions - stored contributions), written in the same transaction as
  the session, so a crash either wrote both or neither;
- a usage event is marked ``rated_at`` in the same transaction that adds it, conditioned on not being marked yet;
- a batch's effect is combined per (account, period) before writing: one ADD per aggregate per transaction;
- a transaction writing sessions with participants' identities checks each such account's erasure mark is still the
  one the batch read (D80): an erasure in between makes it a conflict, and the retry writes pseudonyms.
Writes per batch = sessions changed + usage events rated + aggregates touched (per transaction chunk of <= 100 items)
+ one erasure-mark check per account whose identities a transaction writes + room state headers changed + live
participants' items changed or retired (a rebuild: every live participant's, and the old generation's deleted; a
chunked write: one more for its pending mark) + one threshold write per aggregate with new crossings.

Decoding the stream's records is the handler's edge (``stream.py``); this module never sees an event shape.
"""

from __future__ import annotations

import functools
from collections import defaultdict
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass, field, replace
from datetime import UTC, datetime

from kilo_billing.accounts import UNATTRIBUTED, AccountProfile, is_pseudonym, pseudonym
from kilo_billing.contracts import (
    HardLimitStillReachedV1,
    UnattributedAppUsageV1,
    UnattributedUsageV1,
    UsageThresholdCrossedV1,
)
from kilo_billing.livekit_events import LiveKitEventRecord
from kilo_billing.meters import Coverage
from kilo_billing.money import decimal_str
from kilo_billing.periods import Period
from kilo_billing.publisher import EventPublisher, PublishError
from kilo_billing.usage_events import UsageEventRecord
from kilo_rate_usage.aggregates import announced as recorded
from kilo_rate_usage.aggregates import crossings, delta, rate_aggregate, session_contributions
from kilo_rate_usage.model import (
    JOINLESS_MARK_SECONDS,
    Aggregate,
    AggregateKey,
    BatchOutcome,
    ContributionKey,
    RatingConfig,
    Rejected,
    Session,
    StoredSession,
)
from kilo_rate_usage.ports import (
    CommitUnit,
    ConflictError,
    ExpiredEventsError,
    RejectedWriteError,
    SessionChange,
    StateChange,
    UnreadableRoomError,
    UsageChange,
    UsageRepository,
)
from kilo_rate_usage.queries import running_extra
from kilo_rate_usage.rooms import (
    RoomState,
    advance,
    participants_needed,
    rebuilt,
    registers_from_text,
    registers_text,
)
from kilo_rate_usage.sessions import ParticipantFold, RoomFold, by_segment, fold_events


def _usage_key(record: UsageEventRecord, profiles: Mapping[str, AccountProfile]) -> ContributionKey:
    """The aggregate counter an app-reported usage event adds to: its account's, but for a period no close of the
    account invoices (before its signup's period), whose usage is the unattributed bucket's, as minutes are (D280,
    D291). Ingest refuses usage of an unregistered id (D30) and usage more than 35 days old (D14), not usage
    dated before the signup."""
    at = datetime.fromtimestamp(record.occurred_at_ms / 1000, tz=UTC)
    profile = profiles[record.account_id]
    key = (record.account_id, Period.containing(at).key, profile.segment_start(record.occurred_at_ms), record.meter)
    (routed,) = _before_signup_unattributed({key: record.quantity}, profiles)
    return routed


def rate_batch(
    livekit: Sequence[LiveKitEventRecord],
    usage: Sequence[UsageEventRecord],
    repo: UsageRepository,
    publisher: EventPublisher,
    config: RatingConfig,
    now_ms: int,
) -> BatchOutcome:
    """Rate a batch; when DynamoDB refuses a write for good (``RejectedWriteError``), rate each room and each usage
    event on its own, so only the refused ones are reported (``BatchOutcome.rejected``, for the poison queue) and the
    rest is rated - a refusal is never retried like a conflict. ``ConflictError`` and AWS failures propagate: the
    batch is retried whole, which the exactly-once writes make safe."""
    attempt = _Attempt(repo, publisher, config, now_ms)
    try:
        return _rate(livekit, usage, attempt)
    except RejectedWriteError:
        pass
    outcomes: list[BatchOutcome] = []
    rejected: list[Rejected] = []
    for room_sid, events in _by_room(livekit).items():
        try:
            outcomes.append(_rate(events, [], attempt))
        except UnreadableRoomError as exc:
            rejected.append(Rejected(room_sid=room_sid, reason=f"not rated: {exc}"))
        except RejectedWriteError as exc:
            rejected.append(Rejected(room_sid=room_sid, reason=f"DynamoDB refused the room's writes: {exc}"))
    for record in {record.key: record for record in usage}.values():
        try:
            outcomes.append(_rate([], [record], attempt))
        except RejectedWriteError as exc:
            rejected.append(Rejected(usage_key=record.key, reason=f"DynamoDB refused the usage write: {exc}"))
    return BatchOutcome.total(outcomes, rejected)


def _by_room(livekit: Iterable[LiveKitEventRecord]) -> dict[str, list[LiveKitEventRecord]]:
    by_room: dict[str, list[LiveKitEventRecord]] = defaultdict(list)
    for event in livekit:
        if event.room_sid:
            by_room[event.room_sid].append(event)
    return by_room


@dataclass(frozen=True, slots=True)
class _Attempt:
    """What one attempt at rating (part of) a batch works with."""

    repo: UsageRepository
    publisher: EventPublisher
    config: RatingConfig
    now_ms: int


def _rate(livekit: Sequence[LiveKitEventRecord], usage: Sequence[UsageEventRecord], attempt: _Attempt) -> BatchOutcome:
    repo, publisher, config, now_ms = attempt.repo, attempt.publisher, attempt.config, attempt.now_ms
    by_room = _by_room(livekit)
    rated: list[_Room] = []
    accounts: set[str] = set()
    unit = CommitUnit()
    for room_sid, batch_events in by_room.items():
        room = _room(room_sid, batch_events, repo, config)
        rated.append(room)
        accounts.update(session.account for session in room.sessions)
        # a stored session's contributions are its account's; one without any (a registers-only rewrite) needs its
        # profile too: its erasure mark guards the write (D80)
        accounts.update(previous.session.account for previous in room.stored.values())
        accounts.update(account for account, _ in room.sessionless.values())  # their erasure marks count too
    fresh_usage = repo.unrated_usage(usage)
    accounts.update(record.account_id for record in usage)
    registered = repo.profiles(accounts)
    # an unregistered id (and the bucket) on the free default (D18): only its erasure mark (none) and a usage event's
    # segment read it - ingest refuses usage of an unregistered account; its sessions' minutes go to the bucket (D276)
    profiles = {account: registered.get(account) or AccountProfile.default(account) for account in accounts}
    profiles.setdefault(UNATTRIBUTED, AccountProfile.default(UNATTRIBUTED))
    unregistered = frozenset(accounts - registered.keys() - {UNATTRIBUTED})

    for room in rated:
        _room_changes(room, profiles, unregistered, unit)
    _complete(unit, fresh_usage, profiles)

    deltas = unit.deltas()
    touched = sorted({(account, period) for account, period, _, _ in deltas})
    before = repo.aggregates(touched)
    unit.late = {key for key, aggregate in before.items() if aggregate.invoiced}
    _announce_unattributed(unit, publisher)  # before the commit: a retry after a failed publish announces again
    # before the commit too: a crash in between leaves a mark on a room whose state may not hold the participant - the
    # sweeper looks, finds none, and forgets it - never a state holding one unmarked (D375, amended)
    joinless = sorted(room.state.new.room_sid for room in rated if room.sessionless and room.state is not None)
    if joinless:
        repo.mark_joinless_rooms(joinless, now_ms, now_ms // 1000 + JOINLESS_MARK_SECONDS)
    writes = repo.commit(unit, now_ms) if not unit.empty else 0

    # Thresholds are level-triggered on everything this batch concerns - also when a retry finds nothing left to
    # write (an announcement lost after the commit is made up), and read after the commit, so concurrent batches on
    # other shards are seen too.
    concerned: set[AggregateKey] = set(touched)
    for room in rated:
        concerned.update((s.account, p.period) for s in room.sessions for p in s.parts if s.account not in unregistered)
    concerned.update((record.account_id, _usage_key(record, profiles)[1]) for record in usage)
    concerned = {key for key in concerned if key[0] != UNATTRIBUTED and _invoiced(*key, profiles)}
    thresholds = 0
    if concerned:
        for key, aggregate in sorted(repo.aggregates(concerned).items()):
            running = _running(repo, profiles[key[0]], key[1], now_ms)
            announced = _announce(aggregate, profiles[key[0]], config, publisher, repo, now_ms, running)
            thresholds += announced
            writes += 1 if announced else 0
    unattributed = sum(
        q for (a, _, _, m), q in deltas.items() if a == UNATTRIBUTED and m in ("video", "audio") and q > 0
    )
    return BatchOutcome(
        rooms=len(by_room),
        sessions_changed=len(unit.sessions),
        usage_rated=len(unit.usage),
        aggregates_touched=len(touched),
        thresholds=thresholds,
        writes=writes,
        unattributed_minutes=unattributed,
        sessions_join_lost=tuple(
            c.new.session for c in unit.sessions if c.old_version is None and c.new.session.inferred_start
        ),
    )


def _sessionless(change: StateChange | None, config: RatingConfig) -> dict[str, tuple[str, int]]:
    """The participants the room's new state (``change``) writes (their items, the window's events) that have no
    session yet: their provisional account and earliest moment (``RoomFold.provisional_accounts``), judged on every
    event the state knows - its fold and its window: a participant whose only events are still in the window is in
    no item yet, but the window's events name him (D275)."""
    if change is None or not change.new.usable:
        return {}
    state = change.new
    sids = set(change.puts) | {event.participant_sid for event in state.recent if event.participant_sid}
    return state.folded().provisional_accounts(config.attribution, sids)


def _invoiced(account: str, period: str, profiles: Mapping[str, AccountProfile]) -> bool:
    """Whether a close of the account can ever invoice ``period``: the account's signup period or a later one
    (``invoicing.compose_close`` closes nothing that ends at or before the signup). The bucket and an unregistered id
    are on the free default, signed up in 1970: always."""
    return period >= Period.containing(profiles[account].signed_up_at).key


def _before_signup_unattributed(
    contributions: Mapping[ContributionKey, int],
    profiles: Mapping[str, AccountProfile],
    unregistered: frozenset[str] = frozenset(),
) -> dict[ContributionKey, int]:
    """``contributions`` with each period no close of its account invoices (``_invoiced``: before the account's
    signup period - an id registered after the usage) and every period of an id nobody registered
    (``unregistered``, D276) moved to the unattributed bucket, so it is kept there and announced with the id, not
    left on an aggregate nothing invoices or reports (D276, D280). A period wholly before the signup is one tier
    segment from the period's start for the account and for the bucket alike."""
    moved: dict[ContributionKey, int] = defaultdict(int)
    for (account, period, segment, meter), quantity in contributions.items():
        billed = account not in unregistered and _invoiced(account, period, profiles)
        owner = account if billed else UNATTRIBUTED
        moved[(owner, period, segment, meter)] += quantity
    return dict(moved)


def _by_segment(session: Session, profile: AccountProfile, coverage: Callable[[], Coverage] | None) -> Session:
    """The session's period parts cut at its account's tier changes, each segment's share of the part's minutes by
    its video and audio seconds there (``sessions.by_segment``, D282): here, where the account's segments
    (its profile) and the room's video coverage are both known."""
    if coverage is None:
        return session
    return by_segment(session, profile.segment_cuts, coverage)


def _before_erasure(at_ms: int, profile: AccountProfile) -> bool:
    """Whether ``at_ms`` is before the account's last erasure mark: what happened then is named by its pseudonym
    (D80, D240)."""
    erased_at = profile.erased_at
    return erased_at is not None and at_ms < int(erased_at.timestamp() * 1000)


def _room_changes(
    room: _Room, profiles: Mapping[str, AccountProfile], unregistered: frozenset[str], unit: CommitUnit
) -> None:
    """The room's session writes (with the pseudonyms of an erased account's participants, D80) and its state's:
    a participant with no session yet whose earliest moment the state knows is before its provisional account's
    erasure mark (``room.sessionless``) is named in the state by that account's pseudonym too (D240). A session
    attributed to an id nobody registered (``unregistered``) is stored under that id with its minutes in the
    unattributed bucket (D276): the id's erasure, once it is registered, lists it by account (D292)."""
    pseudonyms: dict[str, str] = {}  # participant sid -> the pseudonym its session is stored under (D80)
    for built in room.sessions:
        found = _by_segment(built, profiles[built.account], room.coverage)
        previous = room.stored.get(found.participant_sid)
        session = _erased(found, previous, profiles[found.account])
        if is_pseudonym(session.identity):
            pseudonyms[found.participant_sid] = session.identity
        found_contributions = session_contributions(session, profiles[session.account])
        contributions = _before_signup_unattributed(found_contributions, profiles, unregistered)
        version = StoredSession.version_of(session, contributions)
        writing = previous is None or previous.version != version
        registers = _registers_as(room.registers(session, previous, writing), session.identity)
        if not writing and previous is not None and registers == previous.registers:
            continue
        old = previous.contributions if previous is not None else {}
        unit.sessions.append(
            SessionChange(
                StoredSession(session, contributions, version, registers),
                previous.version if previous is not None else None,
                delta(old, contributions),
            )
        )
    computed = {session.participant_sid for session in room.sessions}
    for sid, text in sorted(room.retiring.items()):  # retired earlier, named again: only its registers
        previous = room.stored.get(sid)
        if sid in computed or previous is None:
            continue
        registers = _registers_as(text, previous.session.identity)
        if previous.registers == registers:
            continue
        unit.sessions.append(
            SessionChange(
                StoredSession(previous.session, previous.contributions, previous.version, registers),
                previous.version,
                {},
            )
        )
    if room.state is not None:
        fold = room.state.new.folded()  # the window's participants too (``_sessionless``)
        for sid, (account, at_ms) in room.sessionless.items():
            if _before_erasure(at_ms, profiles[account]):
                pseudonyms[sid] = pseudonym(account, fold.participants[sid].identity)
        unit.states.append(_state_as(room.state, pseudonyms))


def _complete(
    unit: CommitUnit, fresh_usage: Iterable[UsageEventRecord], profiles: Mapping[str, AccountProfile]
) -> None:
    """Once the unit's sessions are known: the usage events to mark rated, and the erasure marks its writes of
    identities are conditioned on (``_erasure_marks``, D80)."""
    unit.usage.extend(UsageChange(record, _usage_key(record, profiles)) for record in fresh_usage)
    unit.erasure_marks = _erasure_marks(unit.sessions, profiles)


def _erasure_marks(
    sessions: Iterable[SessionChange], profiles: Mapping[str, AccountProfile]
) -> dict[str, datetime | None]:
    """The erasure mark read, per account this batch writes sessions of with a participant's identity: those writes
    land only while the profile still carries it, so an erasure marked after this read - whose scan of the stored
    sessions may already have run - makes the commit a conflict, and the retry writes pseudonyms (D80)."""
    return {
        change.new.session.account: profiles[change.new.session.account].erased_at
        for change in sessions
        if change.new.session.account != UNATTRIBUTED and not is_pseudonym(change.new.session.identity)
    }


def _erased(session: Session, previous: StoredSession | None, profile: AccountProfile) -> Session:
    """The session to store: with the pseudonym its stored version carries, when the account API's erasure replaced
    its identity, or with the participant's pseudonym when the session began before the account's last erasure
    (docs/decisions.md D80) - the raw events still name the participant until they expire, and neither a rebuild
    from them, nor the session's close, nor a first rating of events queued at the erasure may write the identity."""
    if previous is not None and is_pseudonym(previous.session.identity):
        return replace(session, identity=previous.session.identity)
    if _before_erasure(session.start_ms, profile):
        return replace(session, identity=pseudonym(session.account, session.identity))
    return session


def _registers_as(registers: str, identity: str) -> str:
    """A retired participant's registers (kept on its session item) with the session's pseudonym, not the identity
    the events carried (D80)."""
    if not registers or not is_pseudonym(identity):
        return registers
    participant = registers_from_text(registers)
    if participant.identity == identity:
        return registers
    return registers_text(replace(participant, identity=identity))


def _state_as(change: StateChange, pseudonyms: Mapping[str, str]) -> StateChange:
    """The room's new state naming each participant whose session is stored under a pseudonym (``pseudonyms``, by
    participant sid: its account erased after it began, D80) by that pseudonym, in its registers and in the window's
    events, instead of the identity the events carried - a rebuild after the erasure dropped the running state, or an
    event folded since, never writes the identity back into the state (D220). Sessions are unchanged: they
    take the pseudonym from the stored session or the erasure mark whatever the state says (``_erased``)."""
    state = change.new
    if not pseudonyms or not state.usable:
        return change
    fold = state.fold.copy()
    puts = dict(change.puts)
    for sid, identity in pseudonyms.items():
        participant = fold.participants.get(sid)
        if participant is not None and participant.identity != identity:
            fold.participants[sid] = puts[sid] = replace(participant.copy(), identity=identity)
    recent = tuple(
        replace(event, participant_identity=pseudonyms[event.participant_sid])
        if event.participant_sid in pseudonyms and event.participant_identity != pseudonyms[event.participant_sid]
        else event
        for event in state.recent
    )
    if puts == change.puts and recent == state.recent:
        return change
    return replace(change, new=replace(state, fold=fold, recent=recent, full=None), puts=puts)


def _announce_unattributed(unit: CommitUnit, publisher: EventPublisher) -> None:
    """``UnattributedUsage.v1`` for each session whose minutes went to the unattributed bucket (operators are alerted;
    D16), naming the account id it is stored under - one nobody registered (D276), or one that signed up after the
    period (D280) - and ``UnattributedAppUsage.v1`` per account, period and meter for the app-reported usage the
    bucket got (D291). Published before the commit, so a batch retried after a failed publish or commit
    announces again: at least once, and consumers take one per room (or account) and day (D62)."""
    for change in unit.sessions:
        session = change.new.session
        added: dict[str, int] = {}
        for (account, period, _, meter), quantity in change.delta.items():
            if account == UNATTRIBUTED and meter in ("video", "audio") and quantity > 0:
                added[period] = added.get(period, 0) + quantity
        claimed = None if session.account == UNATTRIBUTED else session.account
        for period, minutes in sorted(added.items()):
            event = UnattributedUsageV1(
                room_sid=session.room_sid,
                participant_sid=session.participant_sid,
                identity=session.identity,
                period=period,
                minutes=minutes,
                unregistered_account=claimed,
            )
            publisher.publish(UnattributedUsageV1.DETAIL_TYPE, event.model_dump())
    app: dict[tuple[str, str, str], int] = defaultdict(int)
    for mark in unit.usage:
        owner, period, _, meter = mark.key
        if owner == UNATTRIBUTED and mark.record.quantity > 0:
            app[(mark.record.account_id, period, meter)] += mark.record.quantity
    for (account, period, meter), quantity in sorted(app.items()):
        found = UnattributedAppUsageV1(account_id=account, period=period, meter=meter, quantity=quantity)
        publisher.publish(UnattributedAppUsageV1.DETAIL_TYPE, found.model_dump())


@dataclass(frozen=True, slots=True)
class _Room:
    sessions: list[Session]  # the sessions that may have changed
    stored: dict[str, StoredSession]  # their stored versions (and those of retired participants named again)
    state: StateChange | None  # the room's new state (None: unchanged)
    retiring: dict[str, str]  # registers of participants leaving the state: kept on their session items
    fold: RoomFold  # every event folded: the registers of a closed session written anyway go with it
    # the participants the new state writes with no session yet: provisional account and earliest moment (D240)
    sessionless: Mapping[str, tuple[str, int]] = field(default_factory=dict)
    # the room's video coverage the sessions were computed with: their parts' tier cuts ask it (D282)
    coverage: Callable[[], Coverage] | None = None

    def registers(self, session: Session, previous: StoredSession | None, writing: bool) -> str:
        """The registers to store with ``session`` (``writing``: its content changed and is written anyway)."""
        sid = session.participant_sid
        if sid in self.retiring:
            return self.retiring[sid]
        if writing and session.end_ms is not None and sid in self.fold.participants:
            return registers_text(self.fold.participants[sid])  # most often unchanged when it retires: no rewrite
        return previous.registers if previous is not None else ""


def _room(room_sid: str, batch: Sequence[LiveKitEventRecord], repo: UsageRepository, config: RatingConfig) -> _Room:
    """The room's sessions that may have changed, their stored versions, the room's new state, the registers of
    participants retiring from it and those of its new state with no session yet (``_sessionless``).

    In order (the common case): the batch is folded into the stored state - its header and the items of the
    participants it concerns (``rooms.participants_needed``): a read whose size does not grow with the room - and
    only the participants it concerns are read and recomputed; a participant the state retired is folded into the
    registers on its session item. Otherwise (no state yet, an event older than the state's horizon, one that would
    change a retired participant's session, anything else ``rooms.advance`` cannot fold exactly): rebuilt from the
    room's stored events that the stream has delivered, and a fresh state is written."""
    header = repo.room_state(room_sid)
    found = None
    if header is not None and header.usable:
        found = _in_order(batch, repo, config, header, participants_needed(header, batch))
    if found is None:
        found = _rebuild(room_sid, batch, repo, config, header)
    return replace(found, sessionless=_sessionless(found.state, config))


def _in_order(
    batch: Sequence[LiveKitEventRecord],
    repo: UsageRepository,
    config: RatingConfig,
    header: RoomState,
    needed: frozenset[str] | None,
) -> _Room | None:
    """The batch folded into the stored state (None: only a rebuild is exact). A participant closed inside the window
    whose video this batch changes, not loaded at first, is loaded then (``Step.missing``)."""
    keys = [key for source, key in config.attribution.steps if source == "room_metadata"]  # D163
    participants = _participants_of(repo, header, needed)
    state = header.with_participants(participants, needed)
    step = advance(state, batch, metadata_keys=keys) if state is not None else None
    if state is not None and step is not None and step.missing and needed is not None:
        participants.update(_participants_of(repo, header, step.missing))
        state = header.with_participants(participants, needed | step.missing)
        step = advance(state, batch, metadata_keys=keys) if state is not None else None
    if state is None or step is None or step.missing:
        return None
    # the sessions of those retiring too, though this batch may not name them: the registers kept on their session
    # items must be their final ones (a later event naming them folds into those), D195
    stored = repo.sessions_of(header.room_sid, step.affected | step.unknown | step.retired.keys())
    named = {sid: stored[sid].registers for sid in step.unknown & stored.keys()}  # retired, named again
    if named and not all(named.values()):
        return None  # stored before registers were kept: rebuild
    if named:
        step = advance(state, batch, {sid: registers_from_text(text) for sid, text in named.items()}, keys)
        if step is None:
            return None
        if step.retired.keys() - stored.keys():
            stored.update(repo.sessions_of(header.room_sid, step.retired.keys() - stored.keys()))
    change = _state_change(state, step.state) if step.changed else None
    if change is not None and step.full.room_end_s is not None:  # the room finished: keep no identity (D196)
        change = StateChange(_finished(step.state), state.version, {}, tuple(sorted(state.fold.participants)), False,
                             state.generation)  # fmt: skip
    coverage = functools.cache(step.coverage)  # merged at most once: the sessions and their tier cuts share it
    sessions = step.full.sessions(config.attribution, coverage, step.affected)  # = step.sessions
    return _Room(sessions, stored, change, _texts(step.retired), step.full, coverage=coverage)


def _finished(state: RoomState) -> RoomState:
    """What is kept of a finished room's state (D196): its version and the rebuild's cut-off
    (``delivered_ms``, D70), no participant, no event - nothing naming anyone. A later event of the room (one
    delivered late, a replay) rebuilds it from its stored events, which is exact (D15)."""
    unusable = RoomState.unusable(state.room_sid, state.version)
    return replace(unusable, delivered_ms=state.delivered_ms, events_folded=state.events_folded)


def _rebuild(
    room_sid: str,
    batch: Sequence[LiveKitEventRecord],
    repo: UsageRepository,
    config: RatingConfig,
    header: RoomState | None,
) -> _Room:
    """Every session of the room from its stored events that the stream has delivered (received by the latest
    delivery: the state's and this batch's) - never those still queued behind a backlog, which then arrive in order
    and fold in - and a fresh state under a new generation."""
    delivered = max([header.delivered_ms if header is not None else 0, *(e.received_at_ms for e in batch)])
    stored_events = [event for event in repo.room_events(room_sid) if event.received_at_ms <= delivered]
    if header is not None:
        _check_events_kept(header, stored_events)
    events = _merge(stored_events, batch)
    keys = [key for source, key in config.attribution.steps if source == "room_metadata"]  # D163
    fresh, retired = rebuilt(room_sid, events, delivered, keys)
    if fresh.folded().room_end_s is not None:
        fresh = _finished(fresh)
    change: StateChange | None = None
    if header is None or header != fresh or _participants(repo, header) != fresh.fold.participants:
        change = StateChange(
            fresh, header.version if header is not None else 0, dict(fresh.fold.participants), (), True,
            header.generation if header is not None else "",
        )  # fmt: skip
    fold = fold_events(events)
    coverage = functools.cache(fold.coverage)  # merged at most once: the sessions and their tier cuts share it
    sessions = fold.sessions(config.attribution, coverage)  # = rebuild_room(events)
    return _Room(sessions, repo.stored_sessions(room_sid), change, _texts(retired), fold, coverage=coverage)


def _check_events_kept(header: RoomState, stored: Sequence[LiveKitEventRecord]) -> None:
    """``ExpiredEventsError`` when fewer of the room's events received by the state's cut-off are stored than the
    state was rated from (``RoomState.events_folded``; 0: not known): events are never deleted but by their TTL, so
    some expired - a rebuild would rate the room's sessions again from part of their events (D273)."""
    kept = len({event.event_id for event in stored if event.received_at_ms <= header.delivered_ms})
    if kept < header.events_folded:
        raise ExpiredEventsError(
            f"room {header.room_sid}: {kept} of the {header.events_folded} events its stored state was rated from "
            "are stored (the others passed their TTL?): a rebuild from them would rate its sessions again from part "
            "of their events"
        )


def _participants(repo: UsageRepository, header: RoomState) -> dict[str, ParticipantFold]:
    """Every live participant's stored registers (a rebuild that changes nothing writes nothing)."""
    return repo.room_participants(header.room_sid, header.generation, None) if header.usable else {}


def _participants_of(
    repo: UsageRepository, header: RoomState, needed: frozenset[str] | None
) -> dict[str, ParticipantFold]:
    """The stored registers of the live participants ``needed`` (None: all of them)."""
    return dict(repo.room_participants(header.room_sid, header.generation, needed))


def _state_change(old: RoomState, new: RoomState) -> StateChange:
    """The header and the participant items that changed (or retired)."""
    before, after = old.fold.participants, new.fold.participants
    puts = {sid: p for sid, p in after.items() if before.get(sid) is not p and before.get(sid) != p}
    deletes = tuple(sorted(before.keys() - after.keys()))
    return StateChange(new, old.version, puts, deletes, False, old.generation)


def _texts(retired: Mapping[str, ParticipantFold]) -> dict[str, str]:
    return {sid: registers_text(registers) for sid, registers in retired.items()}


def _merge(stored: Iterable[LiveKitEventRecord], batch: Iterable[LiveKitEventRecord]) -> list[LiveKitEventRecord]:
    merged = {event.event_id: event for event in stored}
    for event in batch:
        merged.setdefault(event.event_id, event)
    return list(merged.values())


def _announce(
    aggregate: Aggregate,
    profile: AccountProfile,
    config: RatingConfig,
    publisher: EventPublisher,
    repo: UsageRepository,
    now_ms: int,
    running: Mapping[tuple[int, str], int] | None = None,
) -> int:
    """Publish thresholds reached and not yet announced, then record them (level-triggered, at least once).
    ``running``: open sessions' minutes so far (``queries.running_extra``), counted for the budget and hard limit.

    A concurrent batch that recorded the same markers first makes the record fail: both published the same
    deterministic event ids, which consumers treat as one, and this batch goes on with the other aggregates."""
    period = Period.parse(aggregate.period)
    book = config.book_for(period)
    rated = rate_aggregate(aggregate, profile, book)
    spend = rate_aggregate(aggregate, profile, book, running) if running else None
    found = crossings(rated, profile, aggregate.thresholds, spend)
    if not found:
        return 0
    occurred = datetime.fromtimestamp(now_ms / 1000, tz=UTC).isoformat()
    for crossing in found:
        event = UsageThresholdCrossedV1(
            event_id=UsageThresholdCrossedV1.make_id(
                aggregate.account_id, aggregate.period, crossing.meter, crossing.threshold, crossing.scope
            ),
            account_id=aggregate.account_id,
            period=aggregate.period,
            meter=crossing.meter,
            threshold_percent=crossing.threshold,
            used=decimal_str(crossing.used),
            limit=decimal_str(crossing.limit),
            occurred_at=occurred,
            scope=crossing.scope,
        )
        publisher.publish(UsageThresholdCrossedV1.DETAIL_TYPE, event.model_dump())
    try:
        repo.add_thresholds(aggregate.account_id, aggregate.period, [crossing.marker for crossing in found])
    except ConflictError:
        return 0
    return len(found)


def _limited(profile: AccountProfile) -> bool:
    """The account set a budget or a hard limit: its open calls count towards them (D71)."""
    return bool(profile.budget_usd and profile.budget_usd > 0) or bool(
        profile.hard_limit_usd and profile.hard_limit_usd > 0
    )


def _running(
    repo: UsageRepository,
    profile: AccountProfile,
    period: str,
    now_ms: int,
    found: Sequence[StoredSession] | None = None,
) -> dict[tuple[int, str], int] | None:
    """Open sessions' minutes up to now for an account with a budget or hard limit, read as month to date reads them
    (``queries.running_extra``). The open-sessions index is eventually consistent: a session the index still lists as
    open is re-read from the table (strongly consistent) and counted only if it is still open there, so a call that
    just ended is never counted twice (closed in the aggregate and open here)."""
    if not _limited(profile):
        return None
    listed = repo.open_sessions(profile.account_id) if found is None else found
    by_room: dict[str, set[str]] = defaultdict(set)
    for stored in listed:
        if stored.session.account == profile.account_id:
            by_room[stored.session.room_sid].add(stored.session.participant_sid)
    still_open = [
        stored
        for room_sid, sids in sorted(by_room.items())
        for stored in repo.sessions_of(room_sid, sids).values()
        if stored.session.is_open and stored.session.account == profile.account_id
    ]
    extra, _ = running_extra(repo, profile, period, now_ms, still_open)
    return extra or None


def check_running_limits(
    repo: UsageRepository,
    publisher: EventPublisher,
    config: RatingConfig,
    now_ms: int,
    ended: Iterable[tuple[str, str]] = (),
    *,
    unpublished: list[str],
) -> int:
    """The periodic check (the sweeper's schedule): a budget percentage or a hard limit reached by calls still going
    on, with no new event for the account to make rating look, is announced like any crossing - the same
    ``UsageThresholdCrossed.v1`` with its deterministic id, once (markers on the aggregate). Only accounts with a
    budget or a hard limit and an open session are read; the period is the one containing ``now_ms``. Returns the
    number of thresholds announced. ``ended``: (room sid, participant sid) of sessions the sweep has just closed (a
    capped one ended before now): not counted as running; rating announces their minutes when it rates the close.

    A hard limit announced before this run and still reached by an account with calls going on is said again, each
    run: ``HardLimitStillReached.v1`` (enforcement only, no alert; ``_still_reached``), so a participant who joined
    after the enforcement (a token minted before the limit, an app skipping the entitlement check) is enforced too
    (D71 amended). Such an event the bus refuses (``PublishError``: throttled, a failed entry) is not retried here
    nor does it stop the run: the accounts after it are still checked (their first crossings published); the next run
    says it again - that is its retry. The account and the reason are appended to ``unpublished`` (required: the
    handler logs and counts them, and three sweeps in a row with one alarm, D71 amended (e4c)). A first crossing the
    bus refuses still fails the run (Lambda's retry, then the dead-letter queue): it is said once (D71 amended
    (e4b))."""
    skip = set(ended)
    by_account: dict[str, list[StoredSession]] = defaultdict(list)
    for stored in repo.open_sessions():
        if stored.session.account != UNATTRIBUTED and stored.session.key not in skip:
            by_account[stored.session.account].append(stored)
    if not by_account:
        return 0
    period = Period.containing(datetime.fromtimestamp(now_ms / 1000, tz=UTC)).key
    profiles = {a: p for a, p in repo.profiles(by_account).items() if _limited(p)}
    if not profiles:
        return 0
    announced = 0
    for key, aggregate in sorted(repo.aggregates((account, period) for account in profiles).items()):
        profile = profiles[key[0]]
        running = _running(repo, profile, period, now_ms, by_account[key[0]])
        announced += _announce(aggregate, profile, config, publisher, repo, now_ms, running)
        if running:
            try:
                _still_reached(aggregate, profile, config, publisher, now_ms, running)
            except PublishError as exc:  # the next run says it again: its retry (D71 amended (e4b))
                unpublished.append(f"{aggregate.account_id}: {exc}")
    return announced


def _still_reached(
    aggregate: Aggregate,
    profile: AccountProfile,
    config: RatingConfig,
    publisher: EventPublisher,
    now_ms: int,
    running: Mapping[tuple[int, str], int],
) -> None:
    """The hard limit in force, announced before this run (its marker among ``aggregate.thresholds`` as read before
    ``_announce``) and still reached with the calls going on (``running``): ``HardLimitStillReached.v1``. The crossing
    was announced once and its enforcement ran once; whoever joined since is in none of its steps. The alerts
    function narrows and schedules the removal of the account's open participants again (claims skip whoever was
    done), and sends no alert."""
    book = config.book_for(Period.parse(aggregate.period))
    spend = rate_aggregate(aggregate, profile, book, running)
    hard = [c for c in crossings(spend, profile, set()) if c.meter == "hard_limit"]
    if not hard or not recorded(hard[0], aggregate.thresholds):
        return
    crossing = hard[0]
    event = HardLimitStillReachedV1(
        event_id=HardLimitStillReachedV1.make_id(aggregate.account_id, aggregate.period, crossing.scope, now_ms),
        account_id=aggregate.account_id,
        period=aggregate.period,
        used=decimal_str(crossing.used),
        limit=decimal_str(crossing.limit),
        occurred_at=datetime.fromtimestamp(now_ms / 1000, tz=UTC).isoformat(),
        scope=crossing.scope,
    )
    publisher.publish(HardLimitStillReachedV1.DETAIL_TYPE, event.model_dump())
