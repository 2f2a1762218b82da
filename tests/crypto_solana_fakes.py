"""In-memory ports for the Solana watcher's tests (cursor store, payment sink, reference source), held to the ports'
contracts in kilo_crypto_watch/ports.py: the cursor write is conditional on the stored cursor, and every sink method
is idempotent per payment id (a second ``record_seen`` of the same credit changes nothing; FAILED is never pending;
finality only moves a SEEN payment)."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field

from kilo_crypto_watch.model import Cursor, ObservedTransfer, PaymentStatus, PendingPayment
from kilo_crypto_watch.ports import CursorConflictError


@dataclass
class MemoryCursors:
    stored: dict[str, Cursor] = field(default_factory=dict)

    def get(self, chain: str) -> Cursor | None:
        return self.stored.get(chain)

    def put(self, cursor: Cursor, expected: Cursor | None) -> None:
        if self.stored.get(cursor.chain) != expected:
            raise CursorConflictError(cursor.chain)
        self.stored[cursor.chain] = cursor


@dataclass
class MemorySink:
    transfers: dict[str, ObservedTransfer] = field(default_factory=dict)
    status: dict[str, PaymentStatus] = field(default_factory=dict)
    recorded: list[str] = field(default_factory=list)  # every record_seen call, repeats included

    def record_seen(self, transfer: ObservedTransfer) -> None:
        self.recorded.append(transfer.payment_id)
        if transfer.payment_id in self.transfers:
            return
        self.transfers[transfer.payment_id] = transfer
        self.status[transfer.payment_id] = PaymentStatus.SEEN if transfer.succeeded else PaymentStatus.FAILED

    def pending(self, chain: str) -> Sequence[PendingPayment]:
        return [
            PendingPayment(pid, t.chain, t.tx_id, t.index, t.block_number, t.block_hash)
            for pid, t in self.transfers.items()
            if t.chain == chain and self.status[pid] is PaymentStatus.SEEN
        ]

    def finalized(self, payment_id: str, block_hash: str | None = None) -> None:
        if self.status[payment_id] is PaymentStatus.SEEN:
            self.status[payment_id] = PaymentStatus.FINALIZED

    def orphaned(self, payment_id: str, block_hash: str | None = None) -> None:
        if self.status[payment_id] is PaymentStatus.SEEN:
            self.status[payment_id] = PaymentStatus.ORPHANED

    def only(self) -> ObservedTransfer:
        (transfer,) = self.transfers.values()
        return transfer


@dataclass
class StaticReferences:
    keys: list[str] = field(default_factory=list)

    def active_references(self, chain: str) -> Sequence[str]:
        return list(self.keys)
