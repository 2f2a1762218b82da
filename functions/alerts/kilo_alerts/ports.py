"""What the alert logic needs from the outside world, and the errors its adapters raise."""

from __future__ import annotations

from typing import Protocol

from kilo_alerts.model import Delivery


class SendRefusedError(Exception):
    """The provider refused this message for good (invalid number, rejected or unverified address): record, never
    retry."""


class SendFailedError(Exception):
    """The provider failed for now (throttling, outage, timeout): the event is retried."""


class Mailer(Protocol):
    def send(self, to: str, subject: str, html: str, text: str) -> str:
        """Send one email; the provider's message id. ``SendRefusedError`` / ``SendFailedError``."""
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
    (sent, skipped, refused) or another caller holds a fresh claim. A claim older than the lease (a crash between
    claiming and recording) may be taken over. ``record`` writes the final outcome; ``release`` marks a transient
    failure so the next delivery of the event claims again."""

    def claim(self, delivery: Delivery, lease_ms: int) -> int | None: ...

    def record(self, delivery: Delivery) -> None: ...

    def release(self, delivery: Delivery) -> None: ...

    def deliveries(self, account_id: str, period: str | None = None) -> list[Delivery]: ...
