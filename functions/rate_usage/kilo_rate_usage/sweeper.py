"""The sweeper: closes open sessions LiveKit no longer has, and caps only those LiveKit cannot vouch for
(docs/decisions.md D17).

Every run asks RoomService about every room with an open session:
- the room is gone, or the participant is not listed -> a ``swept`` close (a lost ``participant_left``): at now when
  something vouched for the session at most about one sweep interval before (``vouched_gap``: a room event, a recorded
  confirmation, or the previous answer listing it - the normal case, RoomService answering every sweep), else at that
  last moment (after an outage of RoomService or of the sweeper: no time billed that nobody can prove);
- the participant is listed -> confirmed: the session stays open whatever its length (an AI agent's or an always-on
  room may be live for days); per room, once per sweep, the answer's time and the open sessions' participants it
  listed are recorded (``RoomListing``: one conditional write per room, an older sweep never replacing a newer answer,
  kept ``listing_ttl`` after its answer). The listing is the only record of an answer: the per-session hourly
  confirmations it superseded are no longer written (a listing is written whenever one would have been, with the same
  time, and replaced only by a newer answer that lists every participant still open - one it does not list is swept by
  that same sweep), and those written before are read only for sessions no listing covers yet (the upgrade);
- RoomService gave no answer for the room (error, timeout, not configured) -> nothing is concluded, unless LiveKit has
  not vouched for the session for ``max_unconfirmed`` (no room event, no listing): then it is ``capped`` at the last
  moment LiveKit vouched for it.
A close about to be dated back (or a cap) first reads the room's latest stored event (``dated_back_rooms``): the room's
state may not show it - unreadable (a state too large to keep, one of an older format just after a deploy), missing, or
behind the events table (rating late) - and a close is never dated before what the events vouch for (D197).
Closes are synthetic events in the room's event partition: rating rebuilds the room as for any event, and a late real
``participant_left`` or ``room_finished`` still wins - a cap is provisional, the minutes come back with the real close.
A room the sweeper closed sessions of is marked (before its closes are written); once none of its sessions is open and
the room has been quiet for ``quiet_room_ms`` (no event, stored or rated, and no close by the sweeper), its running
state is dropped as a finished room's is (D196) - its ``room_finished`` was lost - on the condition that no batch
wrote it since it was read: a late event rated meanwhile keeps it, one arriving after rebuilds the room (D219).
The mark stays, naming the version the drop wrote, so that rebuild is dropped again once quiet (D222).

It also asks about participants whose ``participant_joined`` was lost (LiveKit drops queued webhooks), known only by
their track events (D375, amended 2026-12-03): rating marks a room whose state holds such a participant (no start, not
aborted, connection not ended: ``JOINLESS_ROOMS``, before its commit); every sweep reads the marks and each marked
room's state, asks RoomService about those rooms in the same round, and for each such participant it lists with a join
time writes a synthetic join (``listed_join``: ``kilo_participant_listed``, one id per participant - a second sweep
writes a duplicate, dropped) with the kind and ``joinedAtMs`` RoomService gave. Rating rebuilds the room: the session
opens from that join, billed by that kind, and is from then on an open session like any (a real
``participant_joined`` arriving later wins, the same session). One not listed left before the sweep: nothing is
written, and it stays as D375 has it (kind unknown, not billed, counted at ``room_finished``). A mark is forgotten once
the state positively holds nobody join-less (or there is no usable state) and the mark is ``mark_grace_ms`` old (the
batch that wrote it has committed or died), or at once when the room is gone; a state that cannot tell (a batch
committed between the sweeper's reads) keeps it. A mark a day old whose room still holds a join-less participant is
renewed (marked again at the sweep, expiring 7 days later: D393), so it outlives a room open for longer - or
RoomService unanswered for longer - than rating's 7 days. A gone room whose state has not finished (its room_finished
lost too) gives its join-less participants up: nobody can list them any more - said to ``give_up`` (the handler logs,
counts and alarms them) before the room's mark is forgotten, so a sweep failing later has said them already (D395),
and named in the outcome (``abandoned_joins``); never dropped silently. One whose synthetic join an earlier sweep
stored is not given up: rating folds that join, late, and he is an open session then (``unrated_joins``, D411).
Each give-up is claimed first (``claim_give_up``, a conditional put naming the sweep's moment), said, then its claim
marked said, one participant at a time: a sweep overlapping (a retry beside the next run) that read the same mark finds
it claimed and says nothing - once per scheduled run; a duplicate delivery of the same run may say it twice (D412). The
mark is forgotten only once every give-up of the room is said: one a run claimed and died before saying (a timeout, a
throttled write) is taken over and said by a later run once its claimant is ``SWEEP_RUN_LIFE_MS`` old - said at least
once, twice if the run died between saying it and marking it said (D421). A join stays
within the events table's item bound (RoomService's metadata and attributes left out when too large); one DynamoDB
refuses all the same is logged, counted and alarmed, the sweep goes on and the mark stays.
"""

from __future__ import annotations

import json
from collections.abc import Callable, Mapping, Sequence, Set
from dataclasses import dataclass, field, replace

from kilo_billing.events import MAX_ITEM_BYTES, item_size
from kilo_billing.livekit_events import LiveKitEventRecord
from kilo_rate_usage.model import (
    CAPPED,
    JOINLESS_MARK_SECONDS,
    JOINLESS_RENEW_MS,
    LISTED,
    SWEEP_RUN_LIFE_MS,
    SWEEPER_API_KEY,
    SWEPT,
    GiveUpClaim,
    ListedParticipant,
    RoomAnswers,
    RoomListing,
    Session,
    SessionKey,
    StoredSession,
    SweepOutcome,
    SweepPolicy,
    listed_join_id,
)
from kilo_rate_usage.ports import RejectedWriteError, RoomDirectory, SweeperStore
from kilo_rate_usage.rooms import RoomState
from kilo_rate_usage.sessions import ParticipantFold


def close_event(session: Session, event_type: str, at_s: int, now_ms: int) -> LiveKitEventRecord:
    """The synthetic close of one session (one id per session and kind: a second sweep writes a duplicate)."""
    kind = "swept" if event_type == SWEPT else "capped"
    return LiveKitEventRecord(
        event_id=f"kilo-{kind}-{session.participant_sid}",
        event_type=event_type,
        created_at=at_s,
        api_key=SWEEPER_API_KEY,
        body=b"{}",
        received_at_ms=now_ms,
        room_sid=session.room_sid,
        room_name=session.room_name,
        participant_sid=session.participant_sid,
        participant_identity=session.identity,
    )


# the largest TTL (epoch seconds) a join's item is measured with: an item's size grows with its numbers' digits
_MEASURED_EXPIRES_AT = 9_999_999_999


def listed_join(
    room_sid: str, room_name: str, listed: ListedParticipant, now_ms: int, max_item_bytes: int = MAX_ITEM_BYTES
) -> LiveKitEventRecord:
    """The synthetic join of a participant whose ``participant_joined`` was lost, from RoomService's answer: its kind,
    identity, metadata, attributes and ``joinedAtMs`` as LiveKit's ``participant_joined`` would carry them, dated at the
    sweep (one id per participant: a second sweep writes a duplicate, dropped). It stays within the events table's item
    bound (``max_item_bytes``, ingest's): when RoomService's metadata and attributes would pass it, the attributes are
    left out, then the metadata too - the join still carries the kind and the join time billing needs, and attribution
    then reads the room's metadata (the participant's steps of the rule find nothing: no room account -> unattributed,
    as for any participant whose fields name no account)."""
    participant = {
        "sid": listed.sid,
        "identity": listed.identity,
        "kind": listed.kind,
        "joinedAtMs": str(listed.joined_at_ms),
    }  # the body: what RoomService said, for an audit (rating reads the fields below)
    body = {"event": LISTED, "room": {"sid": room_sid, "name": room_name}, "participant": participant}
    join = LiveKitEventRecord(
        event_id=listed_join_id(listed.sid),
        event_type=LISTED,
        created_at=now_ms // 1000,
        api_key=SWEEPER_API_KEY,
        body=json.dumps(body, sort_keys=True, separators=(",", ":")).encode(),
        received_at_ms=now_ms,
        room_sid=room_sid,
        room_name=room_name,
        participant_sid=listed.sid,
        participant_identity=listed.identity,
        participant_kind=listed.kind,
        participant_metadata=listed.metadata,
        participant_attributes=listed.attributes,
        joined_at_ms=listed.joined_at_ms,
    )
    for smaller in (
        join,
        replace(join, participant_attributes=""),
        replace(join, participant_attributes="", participant_metadata=""),
    ):
        if item_size(smaller.to_item(_MEASURED_EXPIRES_AT)) <= max_item_bytes:
            return smaller
    return smaller  # still too large (an identity past the bound): DynamoDB refuses it, ``run_sweep`` counts it


def joinless_participants(
    state: RoomState, participants: Mapping[str, ParticipantFold]
) -> tuple[str, frozenset[str]] | None:
    """The room's name and the live participants of its running state with no start known - their
    ``participant_joined`` lost, their connection not ended - (``participants``: every live participant's stored
    registers; the state's window folded in); none once the room finished; None when the state cannot tell (unusable:
    finished, too large to keep, another format; a chunked write's pending mark; stored registers that do not add
    up)."""
    if not state.usable or state.pending:
        return None
    whole = state.with_participants(participants, None)
    if whole is None:
        return None
    fold = whole.folded()
    if fold.room_end_s is not None:
        return fold.room_name, frozenset()
    return fold.room_name, frozenset(
        sid
        for sid, p in fold.participants.items()
        if p.joined_ms is None and not p.aborted and p.connection_end_s is None
    )


@dataclass(frozen=True, slots=True)
class JoinlessRooms:
    """The marked rooms (rating's ``JOINLESS_ROOMS``) as this sweep found them: those whose state holds a join-less
    participant (room sid -> room name and those participants' sids), and the marks to forget (room sid -> when
    marked): the state positively holds none (or there is none usable) and the mark is older than ``mark_grace_ms``."""

    asking: dict[str, tuple[str, frozenset[str]]] = field(default_factory=dict)
    forget: dict[str, int] = field(default_factory=dict)
    marks: dict[str, int] = field(default_factory=dict)  # every mark read: room sid -> when marked
    # the asked rooms whose mark is ``JOINLESS_RENEW_MS`` old: renewed, so it never expires under a room that still
    # holds a join-less participant (D393)
    renew: dict[str, int] = field(default_factory=dict)


def find_joinless(store: SweeperStore, now_ms: int, policy: SweepPolicy) -> JoinlessRooms:
    """Read rating's marks and each marked room's state (header and every live participant's registers). A mark
    younger than ``mark_grace_ms`` is kept whatever the state says: rating marks before it commits the state. A mark
    is forgotten only when the state positively shows nobody join-less (no state, none usable, or an empty set); when
    the usable state cannot tell (a chunked write's pending mark; the header and the participant items, read apart,
    disagree - a rating batch committed between the two reads) the mark stays and the next sweep looks again."""
    marks = store.joinless_rooms()
    if not marks:
        return JoinlessRooms()
    found = JoinlessRooms(marks=dict(marks))
    states = store.room_states(marks)
    for room, marked_ms in sorted(marks.items()):
        state = states.get(room)
        if state is None or (not state.usable and not state.pending):
            named: tuple[str, frozenset[str]] | None = ("", frozenset())  # no state (or none usable): nobody to ask
        elif state.pending:
            named = None  # a chunked write under way: looked at again
        else:  # None: the header and the participant items disagree (a batch committed between the two reads)
            named = joinless_participants(state, store.room_participants(room, state.generation, None))
        if named is None:
            continue  # the state cannot tell: the mark stays, the next sweep looks again
        name, sids = named
        if sids and name:
            found.asking[room] = (name, sids)
            if now_ms - marked_ms >= JOINLESS_RENEW_MS:
                found.renew[room] = marked_ms
        elif not sids and now_ms - marked_ms >= policy.mark_grace_ms:
            found.forget[room] = marked_ms
    return found


def plan_joins(joinless: JoinlessRooms, answers: RoomAnswers, now_ms: int) -> tuple[list[LiveKitEventRecord], set[str]]:
    """The synthetic joins of the join-less participants RoomService lists (with a join time), and the marked rooms
    RoomService says are gone (nobody of them can be listed again: their marks are forgotten). A participant it does
    not list left before the sweep: nothing is written, and it stays as D375 has it (kind unknown, not billed,
    counted) - the mark stays while the state holds it."""
    joins: list[LiveKitEventRecord] = []
    gone: set[str] = set()
    for room, (name, sids) in sorted(joinless.asking.items()):
        if name in answers.present and answers.present[name] is None:
            gone.add(room)
            continue
        listed = answers.listed.get(name, {})
        for sid in sorted(sids & listed.keys()):
            if listed[sid].joined_at_ms > 0:
                joins.append(listed_join(room, name, listed[sid], now_ms))
    return joins, gone


def with_room_activity(store: SweeperStore, sessions: Sequence[StoredSession]) -> list[StoredSession]:
    """Open sessions with the time of their room's last event (``as_of_ms``), read from the rooms' states: stored
    sessions hold nothing that changes with the clock, so that every room event does not rewrite every open session."""
    states = store.room_states({stored.session.room_sid for stored in sessions})
    result = []
    for stored in sessions:
        state = states.get(stored.session.room_sid)
        if state is None:
            result.append(stored)
            continue
        session = replace(stored.session, as_of_ms=max(stored.session.as_of_ms, state.last_event_ms))
        result.append(replace(stored, session=session))
    return result


def with_last_events(sessions: Sequence[StoredSession], latest: Mapping[str, int]) -> list[StoredSession]:
    """Open sessions with their room's latest stored event (``latest``, ms by room sid) as evidence too."""
    return [
        replace(stored, session=replace(stored.session, as_of_ms=latest[stored.session.room_sid]))
        if latest.get(stored.session.room_sid, 0) > stored.session.as_of_ms
        else stored
        for stored in sessions
    ]


def dated_back_rooms(plan: SweepPlan, now_ms: int) -> set[str]:
    """The rooms of the plan's closes dated before the sweep (a swept close dated back to the last evidence, a cap):
    only for them can a later event the room's state does not show move the close (D197)."""
    return {close.room_sid for close in plan.closes if close.created_at < now_ms // 1000}


def last_evidence_ms(session: Session) -> int:
    """The last moment the events vouch for an open session: its start, or the room's last event."""
    return max(session.start_ms, session.as_of_ms)


def unlisted(sessions: Sequence[StoredSession], listings: Mapping[str, RoomListing], now_ms: int) -> list[SessionKey]:
    """Open sessions no recorded listing covers: only for them can a confirmation written before the listings (an
    hourly per-session record, D17; no longer written) still be the last moment something vouched for them."""
    return [s.session.key for s in sessions if not listed_ms(s.session, listings, now_ms)]


@dataclass(frozen=True, slots=True)
class SweepPlan:
    closes: list[LiveKitEventRecord] = field(default_factory=list)
    listings: dict[str, RoomListing] = field(default_factory=dict)  # by room sid: what this sweep's answers listed


def listed_ms(session: Session, listings: Mapping[str, RoomListing], now_ms: int) -> int:
    """When a previous sweep's answer last listed the session's participant (0 when none did)."""
    listing = listings.get(session.room_sid)
    if listing is None or session.participant_sid not in listing.participants or listing.answered_at_ms > now_ms:
        return 0
    return listing.answered_at_ms


def plan_sweep(
    open_sessions: Sequence[StoredSession],
    answers: RoomAnswers,
    confirmations: Mapping[SessionKey, int],
    now_ms: int,
    policy: SweepPolicy,
    listings: Mapping[str, RoomListing] | None = None,
) -> SweepPlan:
    """``listings``: the previous answers recorded per room sid (``RoomListing``); none recorded -> only room events and
    (written before the listings) confirmations vouch for a session."""
    plan = SweepPlan()
    listed: dict[str, set[str]] = {}
    for stored in open_sessions:
        session = stored.session
        # the last moment anything vouched for it: a room event, the previous answer listing it, an old confirmation
        last = max(
            last_evidence_ms(session), listed_ms(session, listings or {}, now_ms), confirmations.get(session.key, 0)
        )
        if session.room_name in answers.present:
            here = answers.present[session.room_name]
            if here is None or session.participant_sid not in here:
                at_ms = now_ms if now_ms - last <= policy.vouched_gap_ms else last
                plan.closes.append(close_event(session, SWEPT, at_ms // 1000, now_ms))
                continue
            listed.setdefault(session.room_sid, set()).add(session.participant_sid)
        elif now_ms - last >= policy.max_unconfirmed_ms:
            plan.closes.append(close_event(session, CAPPED, last // 1000, now_ms))
    plan.listings.update({room: RoomListing(now_ms, frozenset(sids)) for room, sids in sorted(listed.items())})
    return plan


def run_sweep(
    store: SweeperStore,
    directory: RoomDirectory,
    now_ms: int,
    policy: SweepPolicy,
    expires_at: int,
    give_up: Callable[[Sequence[tuple[str, str]]], None] = lambda abandoned: None,
) -> tuple[SweepOutcome, RoomAnswers, list[LiveKitEventRecord]]:
    """One sweep: ask, decide, write the closes and the rooms' listings. Returns the outcome, what RoomService said
    and the closes written (for the handler's logs). ``give_up`` is told a gone room's join-less participants (room
    sid, participant sid), one at a time as each is claimed, before its mark is forgotten: a later step failing leaves
    a retry no mark to find them by, so they are said then (D395); the mark is kept while a give-up is claimed and
    not said (D421)."""
    open_sessions = with_room_activity(store, store.open_sessions())
    joinless = find_joinless(store, now_ms, policy)
    rooms = sorted(
        {stored.session.room_name for stored in open_sessions if stored.session.room_name}
        | {name for name, _ in joinless.asking.values()}
    )
    answers = directory.participants(rooms) if rooms else RoomAnswers()
    listings = store.room_listings({stored.session.room_sid for stored in open_sessions})
    confirmations = store.confirmations(unlisted(open_sessions, listings, now_ms))
    plan = plan_sweep(open_sessions, answers, confirmations, now_ms, policy, listings)
    doubted = dated_back_rooms(plan, now_ms)
    if doubted:  # the room's state may not show its latest events (unreadable, missing, rating behind): read them
        open_sessions = with_last_events(open_sessions, store.last_event_ms(doubted))
        plan = plan_sweep(open_sessions, answers, confirmations, now_ms, policy, listings)
    marks_expire = now_ms // 1000 + policy.listing_ttl_ms // 1000
    if plan.closes:  # before the closes: a crash in between leaves a mark on a room still open (looked at again)
        store.mark_swept_rooms({close.room_sid for close in plan.closes}, now_ms, marks_expire)
    written = [close for close in plan.closes if store.add_close(close, expires_at)]
    joins, gone = plan_joins(joinless, answers, now_ms)
    joined: list[LiveKitEventRecord] = []
    unwritten: list[tuple[str, str, str]] = []
    for join in joins:  # one refused join (DynamoDB's item limit, ...) stops no other: its room's mark stays
        try:
            if store.add_close(join, expires_at):
                joined.append(join)
        except RejectedWriteError as refused:
            unwritten.append((join.room_sid, join.participant_sid, str(refused)[:500]))
    for room, marked_ms in sorted(joinless.renew.items()):
        if room not in gone:  # its participant may be listed later: the mark outlives its 7 days (D393)
            store.renew_joinless_room(room, marked_ms, now_ms, now_ms // 1000 + JOINLESS_MARK_SECONDS)
    # the join-less participants of a gone room whose state has not finished: nobody can list them any more - but
    # one whose synthetic join an earlier sweep wrote is not lost: rating folds it, late (D411)
    held = tuple((room, sid) for room in sorted(gone) for sid in sorted(joinless.asking[room][1]))
    unrated = store.stored_joins(held) if held else set()
    abandoned: list[tuple[str, str]] = []
    for room in sorted(joinless.forget.keys() | gone):  # last: a retry of this sweep still finds them
        lost = [pair for pair in held if pair[0] == room and pair not in unrated]
        if room in gone and not _give_up_room(store, lost, now_ms, give_up, abandoned):
            continue  # a give-up another run may still be saying: the mark stays, a later run looks again (D421)
        store.forget_joinless_room(room, joinless.marks[room])
    if plan.listings:  # last: a retry of this sweep still reads the previous answers (its closes are written once)
        store.record_listings(plan.listings, marks_expire)
    dropped = drop_quiet_rooms(store, {stored.session.room_sid for stored in open_sessions}, now_ms, policy)
    outcome = SweepOutcome(
        open=len(open_sessions),
        swept=sum(1 for close in written if close.event_type == SWEPT),
        capped=sum(1 for close in written if close.event_type == CAPPED),
        listed=sum(len(listing.participants) for listing in plan.listings.values()),
        unanswered_rooms=len(answers.unanswered),
        dropped_states=dropped,
        joined=len(joined),
        unwritten_joins=tuple(unwritten),
        abandoned_joins=tuple(abandoned),
        unrated_joins=tuple(pair for pair in held if pair in unrated),
    )
    return outcome, answers, written


def _give_up_room(
    store: SweeperStore,
    lost: Sequence[tuple[str, str]],
    now_ms: int,
    give_up: Callable[[Sequence[tuple[str, str]]], None],
    abandoned: list[tuple[str, str]],
) -> bool:
    """Give a gone room's lost join-less participants up, one at a time: claimed (D412), said, then the claim marked
    said - said before the room's mark is forgotten (D395), and a claim a run died holding (unsaid, its claimant past
    ``SWEEP_RUN_LIFE_MS``) taken over and said by a later run (D421). True when every one is said (by this run or
    another): the mark may be forgotten."""
    every_said = True
    expires_at = now_ms // 1000 + JOINLESS_MARK_SECONDS
    for pair in lost:
        claim = store.claim_give_up(*pair, now_ms, now_ms - SWEEP_RUN_LIFE_MS, expires_at)
        if claim is GiveUpClaim.CLAIMED:
            give_up([pair])
            store.say_give_up(*pair, now_ms, expires_at)
            abandoned.append(pair)
        every_said = every_said and claim is not GiveUpClaim.HELD
    return every_said


def drop_quiet_rooms(store: SweeperStore, busy: Set[str], now_ms: int, policy: SweepPolicy) -> int:
    """Drop the running state of each marked room with no open session (``busy``: the rooms of this sweep's open
    sessions) quiet for ``policy.quiet_room_ms``: its latest event - rated (the state's) or only stored (the events
    table's) - and the sweeper's last close of it are that old. A room an event reached meanwhile keeps its state and
    its mark, and is looked at again by the next sweep; so does a header carrying a chunked write's pending mark
    (that write is writing its generation's items, D223). A dropped room keeps its mark, naming the version the
    drop wrote: while the header is still at that version nothing is read or written; a late event that rebuilds the
    room to a running state moves it, and the room is dropped again once quiet (D222). The mark goes when the
    room has no usable state left that the sweeper did not write (finished, too large to keep) - with that
    generation's items (D199) - or no header at all (or when it expires). Returns the states dropped."""
    marked = store.swept_rooms()
    rooms = sorted(marked.keys() - busy)
    if not rooms:
        return 0
    states = store.room_states(rooms)
    usable = [room for room in rooms if room in states and states[room].usable]
    latest = store.last_event_ms(usable) if usable else {}
    expires_at = now_ms // 1000 + policy.listing_ttl_ms // 1000
    dropped = 0
    for room in rooms:
        mark, state = marked[room], states.get(room)
        if state is None:
            store.forget_swept_room(room, mark.closed_at_ms)
        elif state.pending or (not state.usable and state.version == mark.dropped_version):
            continue  # a chunked write under way (its generation's items: rating clears or rebuilds it), or the
            # sweeper's own drop, untouched
        elif state.usable:
            last = max(state.last_event_ms, latest.get(room, 0), mark.closed_at_ms)
            if now_ms - last >= policy.quiet_room_ms and store.drop_room_state(state):
                dropped += 1
                store.mark_dropped_room(room, replace(mark, dropped_version=state.version + 1), expires_at)
        elif store.drop_room_state(state):  # no state left; a participant item of its generation may still be (D199)
            store.forget_swept_room(room, mark.closed_at_ms)
    return dropped
