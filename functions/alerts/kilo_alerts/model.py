"""The alerts function's domain values: channels, severities, an alert to deliver, what it renders to, and the record
kept of every delivery attempt."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field, replace
from decimal import Decimal
from enum import StrEnum
from typing import Final

# a channel's record skipped because the account did not choose it for the alert (the bounce handler reopens a
# required alert's SMS so skipped once its email bounced, D408)
NOT_CHOSEN: Final = "not chosen for this alert"


class Channel(StrEnum):
    EMAIL = "email"
    SMS = "sms"


class Severity(StrEnum):
    LOW = "low"  # informational (50 % of an allowance): email only unless the account asks for SMS
    MEDIUM = "medium"  # act soon (80 %)
    HIGH = "high"  # money is being charged or calls will stop (100 %, hard limit)


class Outcome(StrEnum):
    SENT = "sent"  # handed to SES / SNS (their message id is recorded)
    DUPLICATE = "duplicate"  # already sent, or being sent by another delivery of the same event
    SKIPPED = "skipped"  # the account chose not to get it on this channel, or has no address/number for it
    OPTED_OUT = "opted_out"  # the number replied STOP (SNS's opted-out list)
    UNDELIVERABLE = "undeliverable"  # refused for good: invalid number, address rejected by SES
    RETRY = "retry"  # a transient failure: the event is delivered again by the queue


class Held(StrEnum):
    """What another delivery holds within its lease (``ports.ClaimHeldError``); the value is the text people read."""

    CLAIM = "claimed by another delivery, not decided yet"  # a ledger claim: its record is not decided yet
    TURN = "another delivery is restricting or restoring the account's participants: retried"  # the turn (D182)


class Reason(StrEnum):
    """Why a delivery is decided (or not yet) as it is, where code acts on it (D215: an email that reached nobody
    sends a required alert's SMS): typed on the delivery and kept in its record, never read from its detail;
    ``detail`` is the text people read."""

    HELD = "held"  # not decided: another delivery holds the claim (retried, never taken as decided)
    NO_EMAIL = "no_email"  # skipped: the account has no email address
    SUPPRESSED = "suppressed"  # undeliverable: the address is on SES's suppression list (a required alert, D381)
    PAUSED = "paused"  # not decided: SES's sending is paused for the account (retried, D399)
    BOUNCED = "bounced"  # undeliverable: SES reported the address bounced for good or complained (D400)

    @property
    def detail(self) -> str:
        return {
            Reason.HELD: Held.CLAIM.value,
            Reason.NO_EMAIL: "no email address",
            Reason.SUPPRESSED: "suppressed: the address is on SES's suppression list for the account",
            Reason.PAUSED: "SES sending is paused for the account",
            Reason.BOUNCED: "undeliverable: the address bounced for good or complained",
        }[self]


@dataclass(frozen=True, slots=True)
class Alert:
    """One alert of the catalogue for one account: ``key`` identifies the occurrence within (account, period, kind),
    e.g. ``video:80``; ``values`` are the facts the templates show (already formatted for people)."""

    kind: str
    account_id: str
    period: str
    key: str
    severity: Severity
    values: Mapping[str, str] = field(default_factory=dict)
    event_id: str = ""
    # what it says is untrue from this time on (a crypto quote's expiry: its payment link and "pay before then"):
    # delivered at or after it, each channel is recorded skipped with ``expired_detail``, nothing sent (D379)
    expires_ms: int | None = None
    expired_detail: str = ""
    # a required alert's (D180) event as the alerts queue carries it (``{"detail-type", "detail"}``), kept on its
    # email's record: the email's bounce sends it again, and the redelivery sends the SMS instead (D408)
    replay: str = ""


@dataclass(frozen=True, slots=True)
class Rendered:
    subject: str
    html: str
    text: str
    sms: str


@dataclass(frozen=True, slots=True)
class Delivery:
    """Who, what, when, on which channel, with what outcome (every attempt that reaches a decision is recorded)."""

    account_id: str
    period: str
    kind: str
    key: str
    channel: Channel
    outcome: Outcome
    recipient: str  # the address or number used, by its pseudonym only (D203); empty when there was none
    at_ms: int
    detail: str = ""  # why it was skipped or refused; the provider's message id when sent
    event_id: str = ""
    attempts: int = 1
    reason: Reason | None = None  # what code reads of the decision (its detail is for people)
    # the provider's id of a sent email, kept apart from the detail: SES's later bounce finds the record by it (D408)
    message_id: str = ""
    replay: str = ""  # an email's: ``Alert.replay`` (D408)

    def because(self, reason: Reason, outcome: Outcome) -> Delivery:
        """This delivery decided ``outcome`` for ``reason``, its detail the reason's text."""
        return replace(self, outcome=outcome, detail=reason.detail, reason=reason)

    @classmethod
    def pending(cls, alert: Alert, channel: Channel, at_ms: int) -> Delivery:
        """The claim of ``alert`` on ``channel`` at ``at_ms``: nothing decided (``RETRY``) nor sent to anyone yet."""
        return cls(
            account_id=alert.account_id,
            period=alert.period,
            kind=alert.kind,
            key=alert.key,
            channel=channel,
            outcome=Outcome.RETRY,
            recipient="",
            at_ms=at_ms,
            event_id=alert.event_id,
            replay=alert.replay if channel is Channel.EMAIL else "",
        )


class AlertError(Exception):
    """An event the alerts function cannot turn into an alert (unknown type, malformed detail): never retried."""


class EnforcementAction(StrEnum):
    AUDIO_ONLY = "audio_only"  # RoomService UpdateParticipant: its publish sources narrowed to the microphone
    SCHEDULE_REMOVAL = "schedule_removal"  # the removal step put on the queue with the grace period as delay
    REMOVE = "remove"  # RoomService RemoveParticipant
    RESTORE = "restore"  # the limit lifted before the removal: the permission saved by audio_only set back


@dataclass(frozen=True, slots=True, order=True)
class Participant:
    """Who to act on through RoomService: the room's name and the participant's identity; ``joined_ms``: when its
    session began (rating's ``open_since``), 0 when not known (a participant named by a record) - it tells a
    participant who rejoined with the same identity from the session that was removed or narrowed (a removal and an
    audio-only are claimed per session, D71 amended (e4b), D361 amended (ao))."""

    room: str
    identity: str
    joined_ms: int = 0


@dataclass(frozen=True, slots=True)
class Narrowing:
    """What audio-only did to one participant's permission (RoomService's JSON, opaque here; equal permissions give
    equal text): ``saved`` - the whole permission it had, given back when the limit lifts; ``narrowed`` - the one it
    holds after our update, compared at the restore (the app may have changed it since: then it is left alone)."""

    saved: str
    narrowed: str


@dataclass(frozen=True, slots=True)
class EnforcementRecord:
    """One enforcement action: ``outcome`` done, gone (not in the room any more), lifted (the limit no longer
    applies), skipped (audio-only: the participant may not publish, nothing to narrow), retry (RoomService failed for
    now). ``limit``: the hard limit enforced (the contract's ``limit_scope``), so a raised limit reached later is
    enforced again; empty on records written before it was kept. ``saved``: on a done audio-only action, the
    participant's whole permission before it (RoomService's JSON, opaque here), set back if the limit is lifted;
    ``narrowed``: the permission our update left it with, set back only while it still holds that one (empty on records
    written before it was kept: set back unconditionally). A restore finding the app changed it since is ``kept``.
    ``identity``: the participant's pseudonym (``kilo_billing.accounts.pseudonym``, D214), never the identity
    RoomService knows it by; ``-`` on the account's own steps. ``joined_ms``: on a removal or an audio-only, when the
    session acted on began (``Participant.joined_ms``; 0 when not known): both are claimed per session, so a
    participant who rejoins with the same identity is removed, or narrowed, again (D71 amended (e4b), D361 amended
    (ao))."""

    account_id: str
    period: str
    room: str
    identity: str
    action: EnforcementAction
    outcome: str
    at_ms: int
    detail: str = ""
    limit: str = ""
    saved: str = ""
    narrowed: str = ""
    joined_ms: int = 0

    def decided(self, outcome: str, detail: str = "") -> EnforcementRecord:
        return replace(self, outcome=outcome, detail=detail)


@dataclass(frozen=True, slots=True)
class OperatorAlert:
    """A message to the operators (the operator topic), sent once per (account or none, kind, key)."""

    kind: str  # unattributed_usage, negative_margin, abuse_<signal>
    key: str
    subject: str
    message: str
    account_id: str = ""  # the account it is about; empty for the whole service


@dataclass(frozen=True, slots=True)
class MarginSnapshot:
    """All accounts' month to date at ``day``: revenue recognised so far (fees pro rata over the period elapsed, plus
    usage charges) and LiveKit's cost (cost basis), exact."""

    day: str  # YYYY-MM-DD, the day the snapshot was taken (UTC)
    period: str
    revenue: Decimal
    cost: Decimal
    accounts: int
