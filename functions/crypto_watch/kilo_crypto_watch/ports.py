"""Ports between the chain watchers and settlement (and their storage). Protocols: adapters and fakes implement them."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Protocol

from kilo_crypto_watch.model import Asset, Cursor, ObservedTransfer, PendingPayment, RateReading


class CursorConflictError(Exception):
    """Another run moved the cursor first (the conditional write lost): this run stops without effect."""


class CursorStore(Protocol):
    def get(self, chain: str) -> Cursor | None: ...

    def put(self, cursor: Cursor, expected: Cursor | None) -> None:
        """Write ``cursor`` if the stored one is still ``expected`` (None: none stored); else CursorConflictError."""
        ...


class PaymentSink(Protocol):
    """Settlement as the watchers see it. Every method is idempotent per payment id."""

    def record_seen(self, transfer: ObservedTransfer) -> None:
        """A credit to a merchant address was seen (or failed): record it, match it to a bill or UNATTRIBUTED."""
        ...

    def pending(self, chain: str) -> Sequence[PendingPayment]:
        """SEEN payments on ``chain`` awaiting finality."""
        ...

    def finalized(self, payment_id: str) -> None: ...

    def orphaned(self, payment_id: str) -> None:
        """Its block left the canonical chain (or the log vanished): the payment no longer counts."""
        ...


class ReferenceSource(Protocol):
    """Solana Pay references of quotes still watched (active, or expired inside the monitoring window)."""

    def active_references(self, chain: str) -> Sequence[str]: ...


class PriceUnavailableError(Exception):
    """A price source did not answer, or answered something unusable (no round, zero or negative price)."""


class PriceSource(Protocol):
    """One independent source of an asset's USD price (Chainlink on chain, an exchange's spot API)."""

    def read(self, asset: Asset) -> RateReading: ...


class TransactionNotFoundError(LookupError):
    """The chain does not know the transaction (yet)."""


class TransactionInspector(Protocol):
    """The fast path: the credits to the merchant inside one transaction a customer submitted, as the watcher would
    see them (a reverted transaction gives its transfers with ``succeeded=False``; none to the merchant: empty)."""

    def transfers(self, tx_id: str) -> Sequence[ObservedTransfer]: ...
