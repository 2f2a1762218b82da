"""The stored record of a verified Stripe event (its own module: see ``kilo_billing.events.StoredEvent``)."""

from __future__ import annotations

from dataclasses import dataclass
from typing import ClassVar

from kilo_billing.events import EventSource, StoredRecord, stripe_key


@dataclass(frozen=True, slots=True)
class StripeEventRecord(StoredRecord):
    """A verified Stripe webhook event."""

    SOURCE: ClassVar[EventSource] = EventSource.STRIPE

    event_id: str
    event_type: str
    created: int
    livemode: bool
    body: bytes
    received_at_ms: int

    @property
    def key(self) -> tuple[str, str]:
        return stripe_key(self.event_id)
