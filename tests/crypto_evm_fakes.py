"""In-memory CursorStore and PaymentSink for the EVM watcher's tests, held to the ports' contracts (kilo_crypto_watch
ports.py): a conditional cursor write, and a sink that is idempotent per payment id and keeps one status per payment
(SEEN -> FINALIZED | ORPHANED; FAILED recorded and never pending). A payment seen again after it was orphaned (its
transaction re-included in another block) is SEEN again with the new block; a SEEN one seen in another block keeps
SEEN with the new block (settlement's ``record``).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field

from kilo_crypto_watch.model import Cursor, ObservedTransfer, PaymentStatus, PendingPayment
from kilo_crypto_watch.ports import CursorConflictError


@dataclass
class MemoryCursorStore:
    cursors: dict[str, Cursor] = field(default_factory=dict)
    writes: int = 0

    def get(self, chain: str) -> Cursor | None:
        return self.cursors.get(chain)

    def put(self, cursor: Cursor, expected: Cursor | None) -> None:
        if self.cursors.get(cursor.chain) != expected:
            raise CursorConflictError(f"cursor of {cursor.chain} moved")
        self.cursors[cursor.chain] = cursor
        self.writes += 1


@dataclass
class MemoryPaymentSink:
    transfers: dict[str, ObservedTransfer] = field(default_factory=dict)
    status: dict[str, PaymentStatus] = field(default_factory=dict)
    calls: list[tuple[str, str]] = field(default_factory=list)  # (method, payment id) in order

    def record_seen(self, transfer: ObservedTransfer) -> None:
        self.calls.append(("record_seen", transfer.payment_id))
        known = self.status.get(transfer.payment_id)
        if not transfer.succeeded:
            if known is None:
                self.transfers[transfer.payment_id] = transfer
                self.status[transfer.payment_id] = PaymentStatus.FAILED
            return
        if known is None or (known is PaymentStatus.ORPHANED and transfer != self.transfers[transfer.payment_id]):
            self.transfers[transfer.payment_id] = transfer
            self.status[transfer.payment_id] = PaymentStatus.SEEN
        elif known is PaymentStatus.SEEN:
            stored = self.transfers[transfer.payment_id]
            if (stored.block_number, stored.block_hash) != (transfer.block_number, transfer.block_hash):
                self.transfers[transfer.payment_id] = transfer

    def pending(self, chain: str) -> Sequence[PendingPayment]:
        return [
            PendingPayment(pid, t.chain, t.tx_id, t.index, t.block_number, t.block_hash)
            for pid, t in self.transfers.items()
            if t.chain == chain and self.status[pid] is PaymentStatus.SEEN
        ]

    def finalized(self, payment_id: str, block_hash: str | None = None) -> None:
        self.calls.append(("finalized", payment_id))
        if self.status.get(payment_id) is PaymentStatus.SEEN:
            self.status[payment_id] = PaymentStatus.FINALIZED

    def orphaned(self, payment_id: str, block_hash: str | None = None) -> None:
        self.calls.append(("orphaned", payment_id))
        if self.status.get(payment_id) is PaymentStatus.SEEN:
            self.status[payment_id] = PaymentStatus.ORPHANED

    def with_status(self, status: PaymentStatus) -> list[ObservedTransfer]:
        return [self.transfers[pid] for pid, s in self.status.items() if s is status]
