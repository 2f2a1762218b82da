"""Rating's items in the usage table, through ``kilo_billing.items`` (boto3's TypeSerializer/TypeDeserializer).

Usage table layout (single table):
- session      ``ROOM#<room sid>`` / ``SESSION#<participant sid>`` - the session as last rated, its contributions and
  a version; while open it carries ``open_account``/``open_since`` (sparse GSI ``open_sessions``); once its
  participant retired from the room's state, ``registers`` (what folding its later events needs, D42);
- room state   ``ROOM#<room sid>`` / ``STATE`` - the header of what rating needs to fold the room's next events without
  re-reading them (``rooms.RoomState`` without the live participants): JSON compressed with zlib in ``state_zlib``,
  a ``version`` counter (conditional writes, in the same transaction as the sessions it describes), the
  ``generation`` of its participant items, ``delivered_ms`` (a rebuild's cut-off, D42) and ``events`` (how many
  distinct events it was rated from: a rebuild finding fewer stored refuses the room, D273);
- participant  ``ROOM#<room sid>`` / ``PART#<generation>#<participant sid>`` - one live participant's registers
  (compact JSON in ``registers``), read and written only by the batches that concern it; a generation is
  ``<header version it was written for>.<12 hex>`` (``new_generation``; before, 12 hex alone); the state's key
  shapes and attribute names are ``kilo_billing.room_state_items``, which the account API's erasure reads them from
  (D220);
- confirmation ``ROOM#<room sid>`` / ``CONFIRMED#<participant sid>`` - when RoomService last listed a quiet open
  session's participant (the sweeper's, D17): no longer written (the listings cover it), read for the upgrade;
- listing      ``ROOM#<room sid>`` / ``LISTED`` - the last RoomService answer that listed participants of the room's
  open sessions: ``answered_at_ms`` and those participants' sids (``participants``, SS) - one item per room, replaced
  only by a newer answer (conditional), expiring (``expires_at``, the table's TTL) ``listing_ttl`` after its answer
  (the sweeper's, D125);
- swept room   ``SWEPT_ROOMS`` / ``ROOM#<room sid>`` - a room whose sessions the sweeper closed: ``closed_at_ms``,
  expiring like a listing; the sweeper drops the room's running state once the room is quiet, then the mark
  (D219);
- join-less room ``JOINLESS_ROOMS`` / ``ROOM#<room sid>`` - rating's mark of a room whose state holds a participant
  with no start (its ``participant_joined`` lost): ``marked_at_ms``, expiring ``JOINLESS_MARK_SECONDS`` after the
  latest batch that wrote such a participant, or after the sweep that renewed it (a day old, its room still holding
  one: D393); the sweeper asks RoomService about the room, writes a synthetic join for each it lists, and forgets
  the mark once the state holds none or the room is gone (D375, amended);
- give-up      ``JOINLESS_GIVEN_UP`` / ``ROOM#<room sid>#PARTICIPANT#<participant sid>`` - the sweep that gives a
  join-less participant of a gone room up claims it first: ``marked_at_ms`` (the sweep's moment; a retry of that run
  holds it still), expiring ``JOINLESS_MARK_SECONDS`` later, and ``said`` once that sweep said it; an overlapping
  sweep finding it claimed says nothing (D412), a later one finding it unsaid past ``SWEEP_RUN_LIFE_MS`` takes it over
  and says it (D421);
- aggregate    ``ACCOUNT#<account>`` / ``PERIOD#<YYYY-MM>`` - counters ``c#<segment start>#<meter>`` (ADDed), late
  counters ``late#<meter>`` once the period is invoiced (``invoiced_at``), announced thresholds ``thresholds`` (SS);
- profile      ``ACCOUNT#<account>`` / ``PROFILE`` - ``kilo_billing.account_items``.
A usage event is marked rated on its own events-table item (``rated_at``) in the same transaction that adds it.
"""

from __future__ import annotations

import json
import uuid
import zlib
from collections.abc import Mapping
from dataclasses import replace
from fractions import Fraction
from typing import Any, Final

from kilo_billing.events import KEY, SORT_KEY
from kilo_billing.items import Item, from_item, to_item
from kilo_billing.room_state_items import (
    ROOM_PREFIX,
    STATE_BLOB,
    STATE_DELIVERED_MS,
    STATE_EVENTS,
    STATE_GENERATION,
    STATE_PENDING,
    STATE_SORT_KEY,
    STATE_VERSION,
    participant_sort_key,
    room_key,
)
from kilo_rate_usage.model import (
    Aggregate,
    AggregateKey,
    Billing,
    ClosedBy,
    ContributionKey,
    PeriodPart,
    RoomListing,
    Session,
    SessionKey,
    StoredSession,
    SweptRoom,
    canonical_contributions,
)
from kilo_rate_usage.rooms import (
    RoomState,
    participant_from_json,
    participant_to_json,
    state_from_json,
    state_to_json,
)
from kilo_rate_usage.sessions import ParticipantFold

OPEN_INDEX: Final = "open_sessions"
OPEN_ACCOUNT: Final = "open_account"
RATED_AT: Final = "rated_at"  # on a usage event's events-table item: rated, and when
INVOICED_AT: Final = "invoiced_at"  # on an aggregate: invoicing closed the period (set by invoicing)
THRESHOLDS: Final = "thresholds"
SESSION_PREFIX: Final = "SESSION#"
REGISTERS: Final = "registers"  # on a session whose participant retired from its room's state (``rooms``)
CONFIRMED_PREFIX: Final = "CONFIRMED#"
LISTED_SORT_KEY: Final = "LISTED"
ANSWERED_AT_MS: Final = "answered_at_ms"
EXPIRES_AT: Final = "expires_at"  # the usage table's TTL attribute (only the sweeper's listings and marks carry it)
SWEPT_ROOMS: Final = "SWEPT_ROOMS"  # the partition of the sweeper's marks of rooms it closed sessions of
CLOSED_AT_MS: Final = "closed_at_ms"
DROPPED_VERSION: Final = "dropped_version"  # on a mark: the header version the sweeper's drop wrote (D222)
JOINLESS_ROOMS: Final = "JOINLESS_ROOMS"  # the partition of rating's marks of rooms with a join-less participant
JOINLESS_GIVEN_UP: Final = "JOINLESS_GIVEN_UP"  # the partition of the sweeper's claims of its give-ups (D412)
SAID: Final = "said"  # a give-up's claim: its sweep said it (D421)
MARKED_AT_MS: Final = "marked_at_ms"
COUNTER_PREFIX: Final = "c#"
LATE_PREFIX: Final = "late#"


MAX_STATE_BYTES: Final = 300_000  # a larger state is not stored: the room is rebuilt per batch, as before states


def key_item(pk: str, sk: str) -> Item:
    return to_item({KEY: pk, SORT_KEY: sk})


def session_key(key: SessionKey) -> Item:
    return key_item(room_key(key[0]), SESSION_PREFIX + key[1])


def confirmation_key(key: SessionKey) -> Item:
    return key_item(room_key(key[0]), CONFIRMED_PREFIX + key[1])


def aggregate_key(key: AggregateKey) -> Item:
    return key_item(f"ACCOUNT#{key[0]}", f"PERIOD#{key[1]}")


def key_pair(item: Mapping[str, Any]) -> tuple[str, str]:
    values = from_item({name: item[name] for name in (KEY, SORT_KEY)})
    return (str(values[KEY]), str(values[SORT_KEY]))


def aggregate_key_of(item: Mapping[str, Any]) -> AggregateKey:
    pk, sk = key_pair(item)
    return (pk.removeprefix("ACCOUNT#"), sk.removeprefix("PERIOD#"))


def session_to_item(stored: StoredSession) -> Item:
    session = stored.session
    return to_item(
        {
            KEY: room_key(session.room_sid),
            SORT_KEY: SESSION_PREFIX + session.participant_sid,
            "account": session.account,
            "identity": session.identity,
            "room_name": session.room_name,
            "kind": session.kind,
            "billing": session.billing.value,
            "start_ms": session.start_ms,
            "end_ms": session.end_ms,
            "closed_by": session.closed_by.value if session.closed_by is not None else None,
            "aborted": session.aborted,
            "connected_seconds": str(session.connected_seconds),
            "video_seconds": str(session.video_seconds),
            "video_active": session.video_active,
            "as_of_ms": session.as_of_ms,
            "contributions": canonical_contributions(stored.contributions),
            "parts": [[part.period, part.start_ms, part.video, part.audio] for part in session.parts],
            "version": stored.version,
            REGISTERS: stored.registers or None,
            OPEN_ACCOUNT: session.account if session.is_open else None,
            "open_since": session.start_ms if session.is_open else None,
        }
    )


def session_from_item(item: Mapping[str, Any]) -> StoredSession:
    values = from_item(item)
    closed_by = values.get("closed_by")
    session = Session(
        room_sid=str(values[KEY]).removeprefix("ROOM#"),
        participant_sid=str(values[SORT_KEY]).removeprefix(SESSION_PREFIX),
        identity=str(values.get("identity", "")),
        kind=str(values["kind"]),
        account=str(values["account"]),
        start_ms=int(values["start_ms"]),
        end_ms=int(values["end_ms"]) if "end_ms" in values else None,
        closed_by=ClosedBy(closed_by) if closed_by else None,
        aborted=bool(values["aborted"]),
        billing=Billing(values["billing"]),
        connected_seconds=Fraction(str(values["connected_seconds"])),
        video_seconds=Fraction(str(values["video_seconds"])),
        parts=tuple(PeriodPart(str(p), int(s), int(v), int(a)) for p, s, v, a in values.get("parts", [])),
        video_active=bool(values["video_active"]),
        as_of_ms=int(values["as_of_ms"]),
        room_name=str(values.get("room_name", "")),
    )
    contributions: dict[ContributionKey, int] = {
        (str(a), str(p), int(s), str(m)): int(q) for a, p, s, m, q in values.get("contributions", [])
    }
    return StoredSession(session, contributions, str(values["version"]), str(values.get(REGISTERS) or ""))


def aggregate_from_item(key: AggregateKey, item: Mapping[str, Any] | None) -> Aggregate:
    aggregate = Aggregate(key[0], key[1])
    values = from_item(item or {})
    for name, value in values.items():
        if name.startswith(COUNTER_PREFIX):
            _, segment, meter = name.split("#", 2)
            aggregate.counters[(int(segment), meter)] = int(value)
        elif name.startswith(LATE_PREFIX):
            aggregate.late[name.removeprefix(LATE_PREFIX)] = int(value)
    aggregate.thresholds = {str(marker) for marker in values.get(THRESHOLDS, set())}
    aggregate.invoiced = INVOICED_AT in values
    return aggregate


def aggregate_add(key: AggregateKey, counters: Mapping[tuple[int, str], int], late: bool) -> dict[str, Any]:
    """The parts of an ``Update`` that ADDs counters (and, for an invoiced period, late counters) to an aggregate."""
    names: dict[str, str] = {}
    values: dict[str, Any] = {}
    adds = []
    late_totals: dict[str, int] = {}
    for index, ((segment, meter), quantity) in enumerate(sorted(counters.items())):
        names[f"#c{index}"] = f"{COUNTER_PREFIX}{segment}#{meter}"
        values[f":c{index}"] = quantity
        adds.append(f"#c{index} :c{index}")
        late_totals[meter] = late_totals.get(meter, 0) + quantity
    if late:
        for index, (meter, quantity) in enumerate(sorted(late_totals.items())):
            names[f"#l{index}"] = LATE_PREFIX + meter
            values[f":l{index}"] = quantity
            adds.append(f"#l{index} :l{index}")
    return {
        "Key": aggregate_key(key),
        "UpdateExpression": "ADD " + ", ".join(adds),
        "ExpressionAttributeNames": names,
        "ExpressionAttributeValues": to_item(values),
    }


def confirmation_item(key: SessionKey, at_ms: int) -> Item:
    return to_item({KEY: room_key(key[0]), SORT_KEY: CONFIRMED_PREFIX + key[1], "confirmed_at_ms": at_ms})


def confirmation_from_item(item: Mapping[str, Any]) -> tuple[SessionKey, int]:
    values = from_item(item)
    key = (str(values[KEY]).removeprefix("ROOM#"), str(values[SORT_KEY]).removeprefix(CONFIRMED_PREFIX))
    return key, int(values["confirmed_at_ms"])


def listing_key(room_sid: str) -> Item:
    return key_item(room_key(room_sid), LISTED_SORT_KEY)


def listing_item(room_sid: str, listing: RoomListing, expires_at: int) -> Item:
    return to_item(
        {
            KEY: room_key(room_sid),
            SORT_KEY: LISTED_SORT_KEY,
            ANSWERED_AT_MS: listing.answered_at_ms,
            "participants": set(listing.participants),  # never empty: only answers that listed someone are recorded
            EXPIRES_AT: expires_at,
        }
    )


def listing_from_item(item: Mapping[str, Any]) -> tuple[str, RoomListing]:
    values = from_item(item)
    room_sid = str(values[KEY]).removeprefix("ROOM#")
    return room_sid, RoomListing(int(values[ANSWERED_AT_MS]), frozenset(str(sid) for sid in values["participants"]))


def swept_room_key(room_sid: str) -> Item:
    return key_item(SWEPT_ROOMS, room_key(room_sid))


def swept_room_item(room_sid: str, at_ms: int, expires_at: int, dropped_version: int = 0) -> Item:
    values: dict[str, Any] = {
        KEY: SWEPT_ROOMS, SORT_KEY: room_key(room_sid), CLOSED_AT_MS: at_ms, EXPIRES_AT: expires_at,
    }  # fmt: skip
    if dropped_version:
        values[DROPPED_VERSION] = dropped_version
    return to_item(values)


def swept_room_from_item(item: Mapping[str, Any]) -> tuple[str, SweptRoom]:
    values = from_item(item)
    mark = SweptRoom(int(values[CLOSED_AT_MS]), int(values.get(DROPPED_VERSION, 0)))
    return str(values[SORT_KEY]).removeprefix("ROOM#"), mark


def joinless_room_key(room_sid: str) -> Item:
    return key_item(JOINLESS_ROOMS, room_key(room_sid))


def joinless_room_item(room_sid: str, at_ms: int, expires_at: int) -> Item:
    return to_item({KEY: JOINLESS_ROOMS, SORT_KEY: room_key(room_sid), MARKED_AT_MS: at_ms, EXPIRES_AT: expires_at})


def given_up_item(room_sid: str, participant_sid: str, at_ms: int, expires_at: int, *, said: bool = False) -> Item:
    """The claim of a join-less participant's give-up by the sweep at ``at_ms`` (D412): a mark's attributes, and
    ``said`` once that sweep said it (D421)."""
    sort_key = f"{room_key(room_sid)}#PARTICIPANT#{participant_sid}"
    values = {KEY: JOINLESS_GIVEN_UP, SORT_KEY: sort_key, MARKED_AT_MS: at_ms, EXPIRES_AT: expires_at}
    return to_item(values | ({SAID: True} if said else {}))


def joinless_room_from_item(item: Mapping[str, Any]) -> tuple[str, int]:
    values = from_item(item)
    return str(values[SORT_KEY]).removeprefix("ROOM#"), int(values[MARKED_AT_MS])


def state_key(room_sid: str) -> Item:
    return key_item(room_key(room_sid), STATE_SORT_KEY)


def state_to_item(state: RoomState, version: int, generation: str) -> Item:
    """The header item; ``StateTooLargeError`` when even compressed it would come near DynamoDB's item limit. An
    unusable state (a finished room's, D196) is its version and cut-off alone."""
    if not state.usable:
        return version_only_item(state, version, generation)
    text = json.dumps(state_to_json(state), separators=(",", ":"), sort_keys=True).encode()
    packed = zlib.compress(text, 1)
    if len(packed) > MAX_STATE_BYTES:
        raise StateTooLargeError(len(packed))
    return to_item(
        {
            KEY: room_key(state.room_sid),
            SORT_KEY: STATE_SORT_KEY,
            STATE_BLOB: packed,
            STATE_VERSION: version,
            STATE_GENERATION: generation,
            STATE_DELIVERED_MS: state.delivered_ms,
            STATE_EVENTS: state.events_folded,
        }
    )


def version_only_item(state: RoomState, version: int, generation: str = "") -> Item:
    """A header too large to keep: the version (concurrent writers still conflict), the rebuild's cut-off and the
    generation of the participant items written with it (the next rebuild deletes them, D199)."""
    values: dict[str, Any] = {
        KEY: room_key(state.room_sid), SORT_KEY: STATE_SORT_KEY,
        STATE_VERSION: version, STATE_DELIVERED_MS: state.delivered_ms, STATE_EVENTS: state.events_folded,
    }  # fmt: skip
    if generation:
        values[STATE_GENERATION] = generation
    return to_item(values)


def state_from_item(item: Mapping[str, Any]) -> RoomState:
    """The header (no participant loaded)."""
    values = from_item(item)
    room_sid = str(values[KEY]).removeprefix(ROOM_PREFIX)
    version, delivered = int(values[STATE_VERSION]), int(values.get(STATE_DELIVERED_MS, 0))
    generation, folded = str(values.get(STATE_GENERATION, "")), int(values.get(STATE_EVENTS, 0))
    pending = STATE_PENDING in values
    if values.get(STATE_BLOB) is None or pending:  # too large to keep, or a chunked write under way / died
        unusable = RoomState.unusable(room_sid, version)
        return replace(unusable, delivered_ms=delivered, generation=generation, pending=pending, events_folded=folded)
    data = json.loads(zlib.decompress(bytes(values[STATE_BLOB])))
    return replace(state_from_json(room_sid, data, version, delivered, generation), events_folded=folded)


def participant_key(room_sid: str, generation: str, participant_sid: str) -> Item:
    return key_item(room_key(room_sid), participant_sort_key(generation, participant_sid))


def participant_to_item(room_sid: str, generation: str, participant: ParticipantFold) -> Item:
    registers = json.dumps(participant_to_json(participant), separators=(",", ":"))
    return to_item(
        {KEY: room_key(room_sid), SORT_KEY: participant_sort_key(generation, participant.sid), REGISTERS: registers}
    )


def participant_from_item(item: Mapping[str, Any]) -> ParticipantFold:
    return participant_from_json(json.loads(str(from_item(item)[REGISTERS])))


def new_mark() -> str:
    """A chunked write's pending mark: one no other writer picks."""
    return uuid.uuid4().hex[:12]


def new_generation(version: int) -> str:
    """A generation no other writer picks (concurrent rebuilds of a room write apart; only the header's counts), named
    after the header version the rebuild writes (``<version>.<12 hex>``): only that write - conditioned on the version
    before it - can name the generation, so once a header is at that version or past it naming another, none ever
    will and its items are dead (``kilo_billing.room_state_items.dead_generation``)."""
    return f"{version}.{new_mark()}"


class StateTooLargeError(ValueError):
    def __init__(self, size: int) -> None:
        super().__init__(f"room state of {size} compressed bytes is over {MAX_STATE_BYTES}")
