"""The stored record of a verified Stripe event (its own module: see ``kilo_billing.events.StoredEvent``)."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import ClassVar, Final

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


LIVEMODE_MISMATCH: Final = "livemode_mismatch"  # of the other mode than the stage's (or saying none)
CONNECT_ACCOUNT_EVENT: Final = "connect_account_event"  # of a Stripe Connect account


def _mode(livemode: bool) -> str:
    return "live-mode" if livemode else "test-mode"


def foreign(envelope: Mapping[str, object], livemode: bool) -> tuple[str, str] | None:
    """Why a signed Stripe event is never ours to apply where ``livemode`` events are taken (D349) - its code and the
    fact, in words that hold for ingest and the payment handler alike (each says the likely cause its own way) - or
    ``None``: an event of the other mode (or with no boolean ``livemode``), or of a Stripe Connect account (the
    envelope's ``account``). The one rule ingest refuses by and the payment handler holds events back by."""
    found = envelope.get("livemode")
    if not isinstance(found, bool):
        return LIVEMODE_MISMATCH, f"event without a boolean 'livemode': this stage takes only {_mode(livemode)} events"
    if found is not livemode:
        return LIVEMODE_MISMATCH, (
            f"{_mode(found)} event where this stage takes {_mode(livemode)} events (STRIPE_LIVEMODE, the "
            f"StripeLiveMode parameter)"
        )
    account = envelope.get("account")
    if account is not None:
        return CONNECT_ACCOUNT_EVENT, (
            f"event of Stripe Connect account {str(account)[:255]!r}: this stage takes only the platform account's "
            f"own events"
        )
    return None
