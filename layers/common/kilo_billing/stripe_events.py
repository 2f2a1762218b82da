"""The stored record of a verified Stripe event (its own module: see ``kilo_billing.events.StoredEvent``)."""

from __future__ import annotations

from collections.abc import Mapping
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


def _mode(livemode: bool) -> str:
    return "live-mode" if livemode else "test-mode"


def foreign(envelope: Mapping[str, object], livemode: bool) -> tuple[str, str] | None:
    """Why a signed Stripe event is never ours to apply where ``livemode`` events are taken (D349) - its code and the
    words saying so - or ``None``: an event of the other mode (or with no boolean ``livemode``), or of a Stripe Connect
    account (the envelope's ``account``). The one rule ingest refuses by and the payment handler skips by."""
    found = envelope.get("livemode")
    if not isinstance(found, bool):
        said = f"event without a boolean 'livemode': this endpoint takes only {_mode(livemode)} events"
        return "livemode_mismatch", said
    if found is not livemode:
        return "livemode_mismatch", (
            f"{_mode(found)} event sent to a {_mode(livemode)} endpoint: a webhook secret of the other mode is "
            f"configured here (STRIPE_LIVEMODE / the StripeLiveMode parameter says which mode this endpoint takes)"
        )
    account = envelope.get("account")
    if account is not None:
        return "connect_account_event", (
            f"event of Stripe Connect account {str(account)[:255]!r}: this endpoint takes only the platform account's "
            f"own events (a Connect endpoint's secret is configured here)"
        )
    return None
