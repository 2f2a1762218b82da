"""What the alert logic needs from the outside world, and the errors its adapters raise."""

from __future__ import annotations

from typing import Protocol

from kilo_alerts.bounces import EmailMark
from kilo_alerts.model import Delivery, EnforcementRecord, Held, MarginSnapshot, Narrowing, Participant


class SendRefusedError(Exception):
    """The provider refused this message for good (invalid number, rejected or unverified address): record, never
    retry."""


class SendFailedError(Exception):
    """The provider failed for now (throttling, outage, timeout): the event is retried."""


class SendingPausedError(SendFailedError):
    """The provider will not send for us now - SES's sending paused for the configuration set or the account
    (``SendingPausedException``), the account suspended (``AccountSuspendedException``): hours or days, not a blip.
    Still a failure for now (the event is retried, then dead-lettered: never lost); a required alert's SMS does not
    wait for the last delivery (D399)."""


class MarkUnreadError(Exception):
    """The mark of an address SES reported undeliverable could not be read now (D400): the email is sent anyway,
    its record says so (as a suppression check that cannot answer, D381)."""


class ClaimHeldError(Exception):
    """A ledger claim is pending and not yet stale: another delivery of the same event is deciding it now, or one
    crashed within its lease. Not a duplicate (nothing is decided yet): the record is retried, and once the claim is
    older than the lease it is taken over. ``held``: a ledger claim, or the account's enforcement turn (D182)."""

    def __init__(self, held: Held) -> None:
        super().__init__(held.value)
        self.held = held


class Mailer(Protocol):
    def send(self, to: str, subject: str, html: str, text: str, account_id: str = "", delivery: str = "") -> str:
        """Send one email; the provider's message id. ``SendRefusedError`` / ``SendFailedError``. ``account_id``
        rides with the message (SES: a message tag), so a bounce or complaint names the account (D400); so does
        ``delivery`` (``bounces.delivery_tag``, when not empty), so a bounce names the email's record (D408)."""
        ...

    def suppressed(self, to: str) -> str | None:
        """Why the provider keeps ``to`` on the account's suppression list (SES: ``BOUNCE``, ``COMPLAINT``); ``None``
        when it is not on it. SES accepts an email to a suppressed address and drops it (a hard bounce after the
        call): the send's answer cannot tell. ``SendFailedError`` when it cannot be known now."""
        ...


class Texter(Protocol):
    def opted_out(self, phone: str) -> bool:
        """The number asked not to get SMS (replied STOP). ``SendFailedError`` when that cannot be known now."""
        ...

    def send(self, phone: str, text: str) -> str:
        """Send one SMS; the provider's message id. ``SendRefusedError`` / ``SendFailedError``."""
        ...


class DeliveryLedger(Protocol):
    """At most once per (account, period, kind, key, channel): a conditional claim before sending, the outcome after.

    ``claim`` returns the attempt number when this caller may send, ``None`` when the delivery is already decided
    (sent, skipped, refused); it raises ``ClaimHeldError`` when another caller holds a claim younger than the lease
    (still deciding, or crashed: retried, never taken as decided). A claim older than the lease (a crash between
    claiming and recording) may be taken over. ``record`` writes the final outcome; ``release`` marks a transient
    failure so the next delivery of the event claims again."""

    def claim(self, delivery: Delivery, lease_ms: int) -> int | None: ...

    def record(self, delivery: Delivery) -> None: ...

    def release(self, delivery: Delivery) -> None: ...

    def take_sms(self, account_id: str, day: str, cap: int, at_ms: int) -> bool:
        """Count one SMS to the account on UTC day ``day`` if fewer than ``cap`` are counted (atomic); false at the
        cap."""
        ...

    def give_back_sms(self, account_id: str, day: str) -> None:
        """Uncount one taken SMS that was not sent after all (refused, failed for now)."""
        ...

    def deliveries(self, account_id: str, period: str | None = None) -> list[Delivery]: ...

    def mark_email(self, account_id: str, recipient: str, why: str, detail: str, at_ms: int) -> bool:
        """Mark the address whose ``email_marks.mark_ref`` (its pseudonym, casefolded) is ``recipient`` undeliverable
        (``why``: bounce, complaint); false when it was marked before (the first mark is kept: a redelivered report
        changes nothing)."""
        ...

    def email_mark(self, account_id: str, recipient: str) -> EmailMark | None:
        """The mark of the address whose ``email_marks.mark_ref`` is ``recipient`` (it acts until cleared, D423),
        or ``None``; ``MarkUnreadError`` when it cannot be read now."""
        ...


class ParticipantGoneError(Exception):
    """RoomService does not know the room or the participant (it left): nothing to enforce."""


class RoomControlFailedError(Exception):
    """RoomService failed for now (unreachable, an error, no answer in time): retried."""


class OpenSessions(Protocol):
    def open_participants(self, account_id: str) -> list[Participant]:
        """Who of the account is in a call now (rating's open sessions)."""
        ...


class RoomControl(Protocol):
    """LiveKit's RoomService. ``ParticipantGoneError`` / ``RoomControlFailedError``."""

    def audio_only(self, room: str, identity: str) -> Narrowing | None:
        """Narrow the participant's publish sources to the microphone, every other part of its permission kept: the
        whole permission it had before and the one it holds now (opaque, for ``restore``), or ``None`` when it may not
        publish (unchanged)."""
        ...

    def restore(self, room: str, identity: str, saved: str, narrowed: str) -> bool:
        """Set back ``saved`` if the participant's permission is still ``narrowed`` (what ``audio_only`` left; empty:
        whatever it is); false, nothing written, when it is not (the app changed it since)."""
        ...

    def remove(self, room: str, identity: str) -> None: ...

    def identities(self, room: str) -> list[str]:
        """The identities of the room's participants now (ListParticipants): how an open session whose identity an
        erasure turned into its pseudonym (D80) is matched to the live participant (D214 amended).
        ``ParticipantGoneError`` when RoomService does not know the room (it ended)."""
        ...


class RemovalScheduler(Protocol):
    def schedule_removal(self, account_id: str, period: str, delay_seconds: int, limit: str) -> None:
        """Deliver the removal step for the account (of the hard limit ``limit``) after ``delay_seconds``."""
        ...


class EnforcementLedger(Protocol):
    """``claim`` is true when this caller may act (never claimed, the last attempt failed for now, or a pending claim
    older than the lease), false when the action is decided; ``ClaimHeldError`` for a pending claim within the
    lease."""

    def claim(self, record: EnforcementRecord) -> bool: ...

    def record(self, record: EnforcementRecord) -> None: ...

    def actions(self, account_id: str) -> list[EnforcementRecord]: ...

    def take_turn(self, account_id: str, holder: str, now_ms: int) -> None:
        """Begin ``holder``'s turn at the account's RoomService actions (one delivery at a time restricts or restores
        its participants, D182): taken when nobody holds it, when ``holder`` does, or when the turn is older
        than the lease (its holder crashed); ``ClaimHeldError`` while another holder's turn is within the lease."""
        ...

    def end_turn(self, account_id: str, holder: str) -> None:
        """End ``holder``'s turn; nothing when the turn is not its own (taken over after the lease)."""
        ...


# --- operator alerts, abuse signals, the daily margin ------------------------------------------------------------


class OperatorNotifier(Protocol):
    def notify(self, subject: str, message: str) -> str:
        """Publish one operator alert (the operator topic: email, and whatever else subscribes); the provider's
        message id. ``subject`` of any length: the adapter cuts it to the provider's limit. ``SendRefusedError`` /
        ``SendFailedError``."""
        ...


class OperatorLedger(Protocol):
    """At most once per (account or the operator, kind, key): ``claim`` is true when this caller may act (never
    claimed, released after a failure for now, or a pending claim older than the lease), false when the alert is
    decided; ``ClaimHeldError`` for a pending claim within the lease (never taken as decided: retried). ``record``
    writes the outcome, ``release`` marks a failure for now."""

    def claim(self, account_id: str, kind: str, key: str, now_ms: int, lease_ms: int) -> bool: ...

    def record(self, account_id: str, kind: str, key: str, outcome: str, detail: str, now_ms: int) -> None: ...

    def release(self, account_id: str, kind: str, key: str, detail: str, now_ms: int) -> None: ...


class PaymentSignals(Protocol):
    """The payment facts the abuse signals count, kept in the alerts table."""

    def record_failure(self, account_id: str, event_id: str, at_ms: int) -> list[int]:
        """Keep one failed payment (once per event id); every failure time kept for the account."""
        ...

    def record_method(self, account_id: str, method: str, fingerprint: str, at_ms: int) -> list[str]:
        """Keep that the account pays with this card/wallet; every account that does."""
        ...


class MarginSnapshots(Protocol):
    """Month-to-date revenue and cost of all accounts, one snapshot a day (``day`` ``YYYY-MM-DD``)."""

    def latest_before(self, day: str) -> MarginSnapshot | None: ...

    def save(self, snapshot: MarginSnapshot) -> None: ...
