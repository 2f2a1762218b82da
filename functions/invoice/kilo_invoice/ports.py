"""What invoicing's logic needs besides the payment gateway (``gateway.PaymentGateway``) and the ledger
(``kilo_billing.invoicing.LedgerStore``): the close's job queue, the stored Stripe events, the bus, the clock."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Protocol

from kilo_billing.stripe_events import StripeEventRecord


class CloseJobQueue(Protocol):
    def send(self, jobs: Sequence[tuple[str, str]], kind: str = "close") -> None:
        """Queue one job per (account id, period): a close, or (``kind="early"``) an early-invoice check."""
        ...


class StripeEvents(Protocol):
    def get(self, pk: str, sk: str) -> StripeEventRecord | None:
        """The verified Stripe event stored by ingest (``None``: not stored, or expired)."""
        ...


class RunMarkers(Protocol):
    """Which periods' closes were fanned out (the hourly schedule starts each period once, catching up if late)."""

    def fanned_out(self, period: str) -> bool: ...

    def mark_fanned_out(self, period: str, accounts: int, at_ms: int) -> None: ...


class Sleeper(Protocol):
    def __call__(self, seconds: float) -> None: ...
