"""The account API's domain models: what its logic returns (values only) and the errors it raises. The HTTP shapes
are ``schemas`` (pydantic, for validation and the OpenAPI document); status codes live in ``handler`` alone."""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import UTC, date, datetime
from decimal import Decimal
from enum import StrEnum
from fractions import Fraction

from kilo_billing.auth import Role
from kilo_billing.invoicing import CreditNote, InvoiceRecord
from kilo_billing.rating import RatedPeriod, TierChange


class NotFoundError(Exception):
    """The thing asked for does not exist (an unregistered account, an unknown invoice or member)."""


class InvalidRequestError(ValueError):
    """A request the rules refuse; ``field`` names what to fix."""

    def __init__(self, field: str, message: str) -> None:
        super().__init__(message)
        self.field = field


class ConflictError(Exception):
    """The request contradicts the stored state (a member who is already there, the last owner removed); ``field``
    names what conflicts when it is not the state (``header.idempotency-key``: that key's request is in progress)."""

    def __init__(self, message: str, field: str | None = None) -> None:
        super().__init__(message)
        self.field = field


@dataclass(frozen=True, slots=True)
class SubscriptionState:
    """The subscription at an instant (D447): the tier in effect, the next change scheduled after it (``None``:
    none) and its version ``tag`` (D441's entity tag, which moves whenever either does)."""

    tier: str
    scheduled: TierChange | None
    tag: str


class SubscriptionChangedError(Exception):
    """A tier request's ``If-Match`` names a subscription version that is no longer the stored one (412, D441): the
    page it was clicked on showed another tier or scheduled change. ``current`` is the subscription now (its version,
    the tier in effect and the scheduled change it stands for); nothing was written."""

    def __init__(self, message: str, current: SubscriptionState) -> None:
        super().__init__(message)
        self.current = current


class UnprocessableError(ValueError):
    """Well-formed, but what it points at cannot be accepted (422): an ``Idempotency-Key`` already used with another
    request body (D377); ``field`` names it."""

    def __init__(self, field: str, message: str) -> None:
        super().__init__(message)
        self.field = field


class EntitlementMissingError(ConflictError):
    """The account's tier lacks an entitlement the request needs (D210: members need ``team_collaboration``);
    ``tier`` and ``entitlement`` name them, ``tiers_with`` the tiers that have it. ``moves_at``: the instant a
    scheduled change to ``tier`` takes effect when it is still ahead, but before the request's write may land;
    ``invitation_ends``: an invitee's acceptance refused, whose invitation waits for the owner's upgrade until
    then - the message says so, addressed to the invitee (who cannot upgrade the account)."""

    def __init__(
        self,
        account_id: str,
        tier: str,
        entitlement: str,
        tiers_with: tuple[str, ...],
        *,
        moves_at: datetime | None = None,
        invitation_ends: datetime | None = None,
    ) -> None:
        if moves_at is None:
            lacks = f"account {account_id!r} is on the {tier} tier, which lacks"
        else:
            lacks = (
                f"account {account_id!r} moves to the {tier} tier at {_instant(moves_at)}, before this acceptance "
                "could be recorded, and that tier lacks"
            )
        upgrade = " or ".join(tiers_with)
        if invitation_ends is None:
            then = f": upgrade to {upgrade}" if tiers_with else ""
        else:
            ends = _instant(invitation_ends)
            then = (
                f": the account's owner must upgrade to {upgrade} before the invitation can be accepted (it stays "
                f"open until {ends})"
                if tiers_with
                else f": the invitation stays open until {ends}"
            )
        super().__init__(f"{lacks} the {entitlement} entitlement that members need{then}")
        self.tier = tier
        self.entitlement = entitlement
        self.tiers_with = tiers_with
        self.moves_at = moves_at


def _instant(at: datetime) -> str:
    """An instant in a message as the API writes it (``2026-12-01T00:00:00Z``)."""
    return at.astimezone(UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


class UnavailableError(Exception):
    """A dependency outside AWS (Stripe) could not be reached; retry later."""


class ErasureIncompleteError(UnavailableError):
    """The erasure could not show every session pseudonymised (the sessions index kept listing identities); what it
    did stands, and a retry continues it (503)."""


@dataclass(frozen=True, slots=True)
class SessionPart:
    period: str
    start_ms: int  # selects the tier segment
    video_minutes: int
    audio_minutes: int


@dataclass(frozen=True, slots=True)
class SessionRecord:
    """One participant session as rating stored it (``ROOM#<room>`` / ``SESSION#<participant>``)."""

    room_sid: str
    participant_sid: str
    identity: str
    room_name: str
    start_ms: int
    end_ms: int | None  # None while open
    aborted: bool = False
    billing: str = "room_rule"
    parts: tuple[SessionPart, ...] = ()  # billable minutes per period (empty while open)
    video_seconds: Fraction = Fraction(0)
    connected_seconds: Fraction = Fraction(0)
    # periods whose minutes rating gave the unattributed bucket, not the account (rating's contributions, D280, D292)
    unattributed_periods: frozenset[str] = frozenset()

    @property
    def is_open(self) -> bool:
        return self.end_ms is None and not self.aborted

    def parts_in(self, period: str) -> tuple[SessionPart, ...]:
        return tuple(part for part in self.parts if part.period == period)

    def minutes_in(self, period: str) -> tuple[int, int]:
        parts = self.parts_in(period)
        return sum(p.video_minutes for p in parts), sum(p.audio_minutes for p in parts)

    def minutes_by_period(self) -> dict[str, tuple[int, int]]:
        """Video and audio minutes per period, in the parts' order: a period cut at a tier change (D282) once."""
        return {part.period: self.minutes_in(part.period) for part in self.parts}


@dataclass(frozen=True, slots=True)
class MeterSegment:
    """One meter in one tier segment of the period ``[start, end)``: used, the segment's allowance (prorated;
    ``None``: unlimited), the share of it used, overage and charge."""

    tier: str
    start: datetime
    end: datetime
    used: Decimal
    included: Decimal | None
    used_percent: Decimal | None
    overage: Decimal
    amount: Decimal


@dataclass(frozen=True, slots=True)
class MeterUsage:
    """One meter over the period (all tier segments, D369): used (all of it), included (the allowances of the
    segments that have one; ``None`` only when every segment is unlimited), the share used of the one segment that has
    an allowance (``None`` when two or more have one: each segment's own is in ``segments``, D369 amended (av2)),
    overage and charge; and each segment's figures (``segments``)."""

    meter: str
    unit: str
    used: Decimal
    included: Decimal | None
    used_percent: Decimal | None
    overage: Decimal
    amount: Decimal
    segments: tuple[MeterSegment, ...] = ()


@dataclass(frozen=True, slots=True)
class DayUsage:
    """Minutes of one UTC day of the period (``logic.daily_series``): a connection's on the day it began in the
    period (all its parts, D321), an open session's so far; the days sum to the month to date."""

    day: date
    video_minutes: int
    audio_minutes: int


@dataclass(frozen=True, slots=True)
class UsageReport:
    """The account's month to date at ``as_of`` (open sessions as if they ended then): per meter, rated by the tier
    in effect (``rated``: fee, usage lines, total), and per day."""

    account_id: str
    period: str
    tier: str
    as_of: datetime
    open_sessions: int
    meters: tuple[MeterUsage, ...]
    rated: RatedPeriod
    daily: tuple[DayUsage, ...]
    scheduled: TierChange | None = None  # a change asked for that takes effect later (a downgrade, D118; D370)
    subscription_tag: str = ""  # the subscription's version shown (``logic.subscription_tag``), its ETag (D441)


@dataclass(frozen=True, slots=True)
class Meeting:
    """One room instance (LiveKit room sid) of the period: who took part and the minutes it billed."""

    room_sid: str
    room_name: str
    start_ms: int
    end_ms: int | None  # None while someone is still in it
    participants: int  # distinct identities
    sessions: int
    video_minutes: int
    audio_minutes: int


@dataclass(frozen=True, slots=True)
class MeetingsPage:
    """One page of the period's meetings, newest first; ``next_cursor`` reads the next page (``None``: the last)."""

    meetings: tuple[Meeting, ...]
    next_cursor: str | None


@dataclass(frozen=True, slots=True)
class SessionsPage:
    """Stored sessions of an account begun from a time on, in start order, a bounded number (the export's pages,
    D372); ``next_start_ms``: where the next page begins (``None``: none is left)."""

    sessions: tuple[SessionRecord, ...]
    next_start_ms: int | None


@dataclass(frozen=True, slots=True)
class ExportPage:
    """One page of the export's sessions, in start order; ``next_cursor`` reads the next page (``None``: the last)."""

    sessions: tuple[SessionRecord, ...]
    next_cursor: str | None


class BudgetStatus(StrEnum):
    NO_BUDGET = "no_budget"
    UNDER = "under_budget"
    OVER_BUDGET = "over_budget"  # the soft budget is passed: alerts, calls go on
    HARD_LIMIT_REACHED = "hard_limit_reached"  # calls are refused


@dataclass(frozen=True, slots=True)
class Forecast:
    account_id: str
    period: str
    as_of: datetime
    spent: Decimal  # the bill so far (fees + usage, open sessions as if they ended now)
    projected_total: Decimal | None  # at the period end, weekday-weighted run rate; None: not enough data yet
    budget_usd: Decimal | None
    hard_limit_usd: Decimal | None
    budget_reached_on: date | None
    hard_limit_reached_on: date | None
    status: BudgetStatus


class RecommendationKind(StrEnum):
    CHEAPER_TIER = "cheaper_tier"
    AUDIO_ONLY_AUDIENCES = "audio_only_audiences"
    LOWER_SIMULCAST = "lower_simulcast_layers"
    IDLE_CAMERA = "idle_camera_minutes"


@dataclass(frozen=True, slots=True)
class Recommendation:
    kind: RecommendationKind
    title: str
    detail: str
    saving_usd: Decimal  # this period's bill as observed minus the bill with the change (>= 0.01)
    current_usd: Decimal
    with_change_usd: Decimal
    tier: str | None = None  # the cheaper tier (CHEAPER_TIER)
    rooms: tuple[str, ...] = ()  # the rooms it is about (room names), largest saving first


class MemberStatus(StrEnum):
    ACTIVE = "active"  # a member: the role is in the user's tokens (sign_in)
    INVITED = "invited"  # an invitation the user has not accepted: grants nothing, ends at ``expires_at``


@dataclass(frozen=True, slots=True)
class Member:
    """A membership or, ``INVITED``, an invitation to one (the same key: one per user and account). ``added_at``: when
    the user accepted (when invited, for an invitation; a membership written before invitations: when added)."""

    account_id: str
    user: str
    email: str
    role: Role
    added_at: datetime
    status: MemberStatus = MemberStatus.ACTIVE
    expires_at: datetime | None = None  # an invitation's end (``None`` for a membership)

    @property
    def active(self) -> bool:
        return self.status is MemberStatus.ACTIVE

    def invited_at(self, now: datetime) -> bool:
        """An invitation still open at ``now`` (an expired one is as good as gone: it can be neither accepted nor
        keep another invitation out)."""
        return self.status is MemberStatus.INVITED and self.expires_at is not None and now < self.expires_at


@dataclass(frozen=True, slots=True)
class Erasure:
    account_id: str
    erased_at: datetime
    sessions_pseudonymised: int
    members_pseudonymised: int
    profile_cleared: bool
    kept: tuple[str, ...] = field(default=("invoices", "amounts", "usage counters"))


@dataclass(frozen=True, slots=True)
class InvoiceView:
    """An invoice as the customer sees it: the record, the credit notes against it (D131; oldest finding close
    first) and what it asks for after them (``invoicing.amount_due``: its total less the notes' ``to_due``)."""

    record: InvoiceRecord
    credit_notes: tuple[CreditNote, ...]
    amount_due: Decimal


def found_in_period(note: CreditNote) -> str:
    """The period of the invoice whose close found the note's late usage: ``found_by`` is an invoice id,
    ``<account>/<YYYY-MM>[/<part>]`` (``invoicing.invoice_id``; an account id never holds ``/``)."""
    return note.found_by.split("/")[1]


@dataclass(frozen=True, slots=True)
class PhoneChallenge:
    """The code last sent to prove the account's SMS number (``phone``), stored hashed (never the code itself):
    ``code_hash`` is HMAC-SHA256 of the number and code under ``salt`` (new for each code, so it also tells one code
    from the next); ``tries_left`` guesses until ``code_expires_at``. ``sent_at``: the codes sent within the rate
    window, oldest first (the per-account limit, D160)."""

    account_id: str
    phone: str
    salt: str
    code_hash: str
    code_expires_at: datetime
    tries_left: int
    sent_at: tuple[datetime, ...]
