"""Rating's domain models: participant sessions, what they contribute to an account's period, month-to-date
aggregates, threshold crossings, and the outcomes of a batch and of a sweep. Values only; the arithmetic lives in
``sessions`` (rebuilding a room) and ``aggregates`` (contributions, deltas, rating, thresholds).

A *contribution* is what one session or one usage event adds to an account's period: (account, period, tier-segment
start, meter) -> quantity. Sessions are stored with their contributions; when a room is rebuilt, the difference
between the new and the stored contributions is the delta to add to the aggregates - zero on any redelivery.
"""

from __future__ import annotations

import hashlib
from collections import defaultdict
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from decimal import Decimal
from enum import StrEnum
from fractions import Fraction
from typing import Final

from kilo_billing.catalog import PriceBook
from kilo_billing.periods import Period

SWEPT: Final = "kilo_participant_swept"  # synthetic close by the sweeper: LiveKit says the participant is gone
CAPPED: Final = "kilo_participant_capped"  # synthetic close by the sweeper: LiveKit could not confirm for too long
SWEEPER_API_KEY: Final = "kilo-sweeper"  # the api_key of the sweeper's synthetic events
# synthetic join by the sweeper: RoomService listed a participant whose participant_joined was lost (D375, amended)
LISTED: Final = "kilo_participant_listed"
JOINLESS_MARK_SECONDS: Final = 7 * 86_400  # how long rating's mark of a room with a join-less participant is kept
# the sweeper renews a mark this old whose room still holds a join-less participant: it outlives the room (D393)
JOINLESS_RENEW_MS: Final = 86_400_000
# the longest a sweeper run lives after its scheduled time: its timeout (120 s) after Lambda's last try of the event
# (MaximumEventAgeInSeconds 240): a give-up claimed and not said by a run this old is said by a later one (D421)
SWEEP_RUN_LIFE_MS: Final = (120 + 240) * 1000


class GiveUpClaim(StrEnum):
    """What ``SweeperStore.claim_give_up`` found (D412, D421)."""

    CLAIMED = "claimed"  # this run's to say: unclaimed, claimed by this run, or by one dead before saying it
    SAID = "said"  # another run said it
    HELD = "held"  # another run claimed it and may still be saying it: the room's mark stays


def listed_join_id(participant_sid: str) -> str:
    """The event id of the sweeper's synthetic join of a participant (one per participant: a second is a duplicate)."""
    return f"kilo-listed-{participant_sid}"


ContributionKey = tuple[str, str, int, str]  # account, period key, segment start (epoch s), meter value
AggregateKey = tuple[str, str]  # account, period key
SessionKey = tuple[str, str]  # room sid, participant sid


class ClosedBy(StrEnum):
    LEFT = "left"
    ROOM_FINISHED = "room_finished"
    SWEPT = "swept"
    CAPPED = "capped"


class Billing(StrEnum):
    """How a participant kind is billed (docs/decisions.md, D16)."""

    ROOM_RULE = "room_rule"  # video while any video track is published in the room, else audio
    AUDIO_ONLY = "audio_only"  # SIP: a phone line never receives video
    NOT_BILLED = "not_billed"  # EGRESS / INGRESS: LiveKit service participants, metered separately by LiveKit


@dataclass(frozen=True, slots=True)
class PeriodPart:
    period: str
    start_ms: int  # where the part starts (selects the tier segment)
    video: int
    audio: int


@dataclass(frozen=True, slots=True)
class Session:
    room_sid: str
    participant_sid: str
    identity: str
    kind: str
    account: str
    start_ms: int
    end_ms: int | None  # None while open
    closed_by: ClosedBy | None
    aborted: bool
    billing: Billing
    connected_seconds: Fraction
    video_seconds: Fraction
    parts: tuple[PeriodPart, ...]  # billable minutes per period (empty while open, aborted or not billed)
    video_active: bool = False  # a video track is published at the last event time (open sessions)
    as_of_ms: int = 0  # time of the room's last event (open sessions: elapsed is counted from start to now)
    room_name: str = ""  # RoomService addresses rooms by name (the sweeper asks who is still there)
    # its start was inferred from its earliest event, its join lost (D375); not stored, not in its version, not
    # compared (a session read back equals the rebuilt one): counted (``BatchOutcome.sessions_join_lost``) when
    # first written
    inferred_start: bool = field(default=False, compare=False)

    @property
    def is_open(self) -> bool:
        return self.end_ms is None and not self.aborted

    @property
    def key(self) -> SessionKey:
        return (self.room_sid, self.participant_sid)


def canonical_contributions(contributions: Mapping[ContributionKey, int]) -> list[list[str | int]]:
    """Contributions as a sorted list of ``[account, period, segment, meter, quantity]`` (stored and hashed so)."""
    return [[a, p, s, m, q] for (a, p, s, m), q in sorted(contributions.items())]


@dataclass(frozen=True, slots=True)
class StoredSession:
    """A session as rating last stored it (``version`` changes whenever anything stored changes)."""

    session: Session
    contributions: dict[ContributionKey, int]
    version: str
    registers: str = field(default="", compare=False)  # once its participant retired from the room's state: what
    # folding its later events needs (``rooms``, D42) - a cache of its events, not part of what was billed

    @staticmethod
    def version_of(session: Session, contributions: Mapping[ContributionKey, int]) -> str:
        text = "|".join(
            str(value)
            for value in (
                session.account, session.start_ms, session.end_ms, session.closed_by, session.aborted,
                session.video_seconds, session.video_active, session.as_of_ms, session.identity, session.kind,
                session.room_name, canonical_contributions(contributions),
            )
        )  # fmt: skip
        return hashlib.sha256(text.encode()).hexdigest()[:24]

    @classmethod
    def of(cls, session: Session, contributions: Mapping[ContributionKey, int]) -> StoredSession:
        return cls(session, dict(contributions), cls.version_of(session, contributions))


@dataclass
class Aggregate:
    """Month-to-date counters of one account and period, per tier segment (start, epoch s) and meter."""

    account_id: str
    period: str
    counters: dict[tuple[int, str], int] = field(default_factory=dict)
    late: dict[str, int] = field(default_factory=dict)
    thresholds: set[str] = field(default_factory=set)
    invoiced: bool = False

    @property
    def key(self) -> AggregateKey:
        return (self.account_id, self.period)

    def totals(self) -> dict[str, int]:
        result: dict[str, int] = defaultdict(int)
        for (_, meter), quantity in self.counters.items():
            result[meter] += quantity
        return dict(result)


@dataclass(frozen=True, slots=True)
class Crossing:
    """A threshold reached: ``scope`` is what it was measured against (the contract's ``limit_scope`` of the budget or
    hard limit in force, ``segment_scope`` of the tier segment whose allowance it is)."""

    meter: str  # a meter value, "budget" or "hard_limit"
    threshold: int
    used: Decimal
    limit: Decimal
    scope: str

    @property
    def marker(self) -> str:
        """Recorded on the aggregate once announced: ``<meter>@<scope>#<threshold>``."""
        return f"{self.meter}@{self.scope}#{self.threshold}"

    @property
    def legacy_marker(self) -> str:
        """The marker written before crossings had a scope (``<meter>#<threshold>``, one a month)."""
        return f"{self.meter}#{self.threshold}"


@dataclass(frozen=True, slots=True)
class RatingConfig:
    """What rating reads besides the stored data: ``attribution``, where a session's billing account comes from (D16);
    ``book_for``, the price book in force in a period (the catalog's ``for_period``)."""

    attribution: AttributionRule
    book_for: Callable[[Period], PriceBook]


@dataclass(frozen=True, slots=True)
class Rejected:
    """Part of a batch DynamoDB refuses for good (validation, item too large): its records go to the poison queue."""

    room_sid: str = ""  # a room whose sessions cannot be written
    usage_key: tuple[str, str] | None = None  # or one usage event that cannot be marked rated
    reason: str = ""


@dataclass(frozen=True, slots=True)
class BatchOutcome:
    """What rating one batch did, for the handler's log and business metrics: the batch's rooms, the sessions whose
    stored version changed, the usage events marked rated, the aggregates written, the thresholds announced, the
    items written, and the minutes added to no account (unattributed); ``rejected``: what DynamoDB refused for good."""

    rooms: int
    sessions_changed: int
    usage_rated: int
    aggregates_touched: int
    thresholds: int
    writes: int
    unattributed_minutes: int
    rejected: tuple[Rejected, ...] = ()
    # sessions first written with an inferred start (their join lost, D375): counted and logged
    sessions_join_lost: tuple[Session, ...] = ()

    @classmethod
    def total(cls, outcomes: Sequence[BatchOutcome], rejected: Sequence[Rejected] = ()) -> BatchOutcome:
        """The sum of ``outcomes``, plus the parts refused outside them (``rejected``: a refused room counts as a room
        of the batch)."""
        return cls(
            rooms=sum(o.rooms for o in outcomes) + sum(1 for r in rejected if r.room_sid),
            sessions_changed=sum(o.sessions_changed for o in outcomes),
            usage_rated=sum(o.usage_rated for o in outcomes),
            aggregates_touched=sum(o.aggregates_touched for o in outcomes),
            thresholds=sum(o.thresholds for o in outcomes),
            writes=sum(o.writes for o in outcomes),
            unattributed_minutes=sum(o.unattributed_minutes for o in outcomes),
            sessions_join_lost=tuple(s for o in outcomes for s in o.sessions_join_lost),
            rejected=(*(r for o in outcomes for r in o.rejected), *rejected),
        )


@dataclass(frozen=True, slots=True)
class AttributionRule:
    """Where a session's billing account comes from, first match wins.

    Each step is ``(source, key)`` with source one of ``room_metadata`` (JSON object in the room's metadata),
    ``participant_attribute`` (a participant attribute) or ``participant_metadata`` (JSON object in its metadata).
    """

    steps: tuple[tuple[str, str], ...] = (
        ("room_metadata", "account_id"),
        ("participant_attribute", "kilo.account_id"),
        ("participant_metadata", "account_id"),
    )

    @classmethod
    def parse(cls, text: str) -> AttributionRule:
        steps = []
        for part in text.split(","):
            source, _, key = part.strip().partition(":")
            if source not in {"room_metadata", "participant_attribute", "participant_metadata"} or not key:
                raise ValueError(f"attribution step must be source:key with a known source, got {part!r}")
            steps.append((source, key))
        if not steps:
            raise ValueError("attribution rule needs at least one step")
        return cls(tuple(steps))


@dataclass(frozen=True, slots=True)
class SweepPolicy:
    """How the sweeper treats open sessions (docs/decisions.md D17, D125).

    ``max_unconfirmed_ms``: a session LiveKit has not vouched for this long (no room event, no RoomService answer
    listing it) while RoomService cannot be asked is capped at the last moment something vouched for it.
    ``listing_ttl_ms``: how long a room's recorded listing is kept after its answer (DynamoDB's TTL); longer than
    ``max_unconfirmed_ms``, so a listing is never gone while a cap could still use it. ``vouched_gap_ms``: about one
    sweep interval (5 minutes, with slack): a session RoomService no longer lists is closed at the sweep that noticed
    only when something vouched for it at most this long before (a room event, the previous answer listing it);
    otherwise at that last moment, so an outage never bills time nobody can prove. ``quiet_room_ms``: a room whose
    sessions the sweeper closed, with none open since and no event for this long, loses its running state (its
    ``room_finished`` was lost; docs/decisions.md D219)."""

    max_unconfirmed_ms: int
    listing_ttl_ms: int
    vouched_gap_ms: int = 450_000
    quiet_room_ms: int = 3_600_000
    mark_grace_ms: int = 600_000  # a join-less mark younger than this is kept: the batch that wrote it may not have
    # committed its room's state yet (rating marks before its commit; its timeout is 120 s)

    def __post_init__(self) -> None:
        if not 0 < self.max_unconfirmed_ms < self.listing_ttl_ms:
            raise ValueError("a room's listing must be kept longer than the unconfirmed limit (a cap reads it)")
        if self.vouched_gap_ms <= 0:
            raise ValueError("the vouched gap (about one sweep interval) must be positive")
        if self.quiet_room_ms <= 0:
            raise ValueError("the quiet time before a swept room's state is dropped must be positive")
        if self.mark_grace_ms <= 0:
            raise ValueError("the grace before a join-less room's mark is forgotten must be positive")


@dataclass(frozen=True, slots=True)
class ListedParticipant:
    """What RoomService's ``ListParticipants`` says of one participant (``ParticipantInfo``): its kind by name
    (``STANDARD``, ``SIP``, ... as ingest stores a webhook's) and its join (``joinedAtMs``, else ``joinedAt`` x 1000;
    0 when it gave neither)."""

    sid: str
    identity: str
    kind: str
    joined_at_ms: int
    metadata: str = ""
    attributes: str = ""  # JSON object (compact, sorted keys), "" when none


@dataclass(frozen=True, slots=True)
class RoomAnswers:
    """What RoomService said: participant sids per room name (None = the room no longer exists), and the rooms it
    could not answer for (error, timeout, no credentials) with the reason - never read as "gone". ``listed``: what it
    said of each participant listed, by room name and sid (kind, join), when the directory reports it."""

    present: dict[str, set[str] | None] = field(default_factory=dict)
    unanswered: dict[str, str] = field(default_factory=dict)
    listed: dict[str, dict[str, ListedParticipant]] = field(default_factory=dict)


@dataclass(frozen=True, slots=True)
class RoomListing:
    """A sweep's RoomService answer about one room (by sid): when it answered, and which of the room's open sessions'
    participants it listed (the sweeper's, D17)."""

    answered_at_ms: int
    participants: frozenset[str]


@dataclass(frozen=True, slots=True)
class SweptRoom:
    """The sweeper's mark of a room it closed sessions of (D219): when it last closed one (epoch ms), and the
    header version its own drop of the room's running state wrote (0: not dropped yet). A dropped room keeps its mark:
    a late event that rebuilds the room to a running state finds the header moved past that version, and the room is
    dropped again once quiet (D222)."""

    closed_at_ms: int
    dropped_version: int = 0


@dataclass(frozen=True, slots=True)
class SweepOutcome:
    open: int
    swept: int
    capped: int
    listed: int  # open sessions RoomService listed (recorded in their rooms' listings)
    unanswered_rooms: int
    dropped_states: int = 0  # running states of swept, quiet rooms dropped (D219)
    joined: int = 0  # synthetic joins written for join-less participants RoomService listed (D375, amended)
    # synthetic joins DynamoDB refused (room sid, participant sid, reason): the sweep goes on, their rooms' marks stay
    unwritten_joins: tuple[tuple[str, str, str], ...] = ()
    # join-less participants (room sid, participant sid) of rooms RoomService says are gone while their states have not
    # finished (room_finished lost too): nobody can list them any more - not billed, given up (D393)
    abandoned_joins: tuple[tuple[str, str], ...] = ()
    # join-less participants of such rooms whose synthetic join an earlier sweep wrote, not yet rated: rating folds it
    # (and a later sweep sweeps the session it opens) - not given up (D411)
    unrated_joins: tuple[tuple[str, str], ...] = ()
