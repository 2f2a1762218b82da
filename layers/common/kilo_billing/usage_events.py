"""The stored record of an app-reported usage event (its own module: see ``kilo_billing.events.StoredEvent``)."""

from __future__ import annotations

from dataclasses import dataclass
from typing import ClassVar

from kilo_billing.events import EventSource, StoredRecord, usage_key


@dataclass(frozen=True, slots=True)
class UsageEventRecord(StoredRecord):
    """One app-reported usage event (messages or bytes), stored once per (client, idempotency key)."""

    SOURCE: ClassVar[EventSource] = EventSource.USAGE

    client_id: str
    idempotency_key: str
    account_id: str
    meter: str  # "messages" | "data_transfer"
    quantity: int
    occurred_at_ms: int
    payload_hash: str  # sha256 of the event's canonical JSON: detects a key reused for different usage
    received_at_ms: int
    room: str = ""
    participant: str = ""

    @property
    def key(self) -> tuple[str, str]:
        return usage_key(self.client_id, self.idempotency_key)
