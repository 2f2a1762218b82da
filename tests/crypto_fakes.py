"""In-memory ports of the chain watchers (kilo_crypto_watch/ports.py), one of each for both chains, held to the ports'
contracts by tests/contract/test_crypto_watch_ports_contract.py, which runs the same suite against the real adapters
on moto (``DynamoCursorStore``; ``Settlement`` over ``DynamoCryptoStore``):

- ``MemoryCursorStore``: the cursor write is conditional on the stored cursor's position (block, hash, signature;
  not its write time), CursorConflictError otherwise.
- ``MemoryPaymentSink``: settlement as the watchers see it, for credits no bill claims (the watchers' tests have no
  bills): idempotent per payment id, one status per payment. SEEN -> FINALIZED | ORPHANED; a FAILED payment is
  pending until its block is final (then final and never pending again) or orphaned; a SEEN payment seen in another
  block moves to that block (FAILED if it reverted there); a FAILED one not final seen in another block moves too
  (SEEN if it succeeded there); an ORPHANED one seen again is recorded afresh, and so is another credit of the
  transaction reported at a SEEN (or FAILED, not final) payment's index in another block (re-mined with its logs
  shifted, D168). A credit reported again in its block keeps what is stored (a Solana transaction stored as one net
  credit before the split and reported split: the stored amount stays, the new siblings are recorded on their own;
  Settlement keeps them UNATTRIBUTED, D91 amended (sp2)). ``finalized`` / ``orphaned`` given a
  block hash act only while that is still the payment's recorded block.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field, replace

from kilo_crypto_watch.model import Cursor, ObservedTransfer, PaymentStatus, PendingPayment
from kilo_crypto_watch.ports import CursorConflictError


@dataclass
class MemoryCursorStore:
    cursors: dict[str, Cursor] = field(default_factory=dict)
    writes: int = 0

    def get(self, chain: str) -> Cursor | None:
        return self.cursors.get(chain)

    def put(self, cursor: Cursor, expected: Cursor | None) -> None:
        if _position(self.cursors.get(cursor.chain)) != _position(expected):
            raise CursorConflictError(f"cursor of {cursor.chain} moved")
        self.cursors[cursor.chain] = cursor
        self.writes += 1


def _position(cursor: Cursor | None) -> tuple[int, str, str | None] | None:
    """What the conditional write compares: where the cursor is, not when it was written."""
    return None if cursor is None else (cursor.block_number, cursor.block_hash, cursor.last_signature)


def _another_credit(stored: ObservedTransfer, seen: ObservedTransfer) -> bool:
    """Another credit of the transaction at the stored one's index, in another block (re-mined with its logs
    shifted): asset, sender, recipient or amount differ."""
    return stored.block_hash != seen.block_hash and stored.movement != seen.movement


@dataclass
class MemoryPaymentSink:
    transfers: dict[str, ObservedTransfer] = field(default_factory=dict)
    status: dict[str, PaymentStatus] = field(default_factory=dict)
    final: set[str] = field(default_factory=set)  # FAILED in a block now final
    calls: list[tuple[str, str]] = field(default_factory=list)  # (method, payment id) in order
    batches: list[list[str]] = field(default_factory=list)  # each ``record_batch`` call's payment ids
    failed_orphans: list[str] = field(default_factory=list)  # ``orphaned(..., failed=True)``'s payment ids

    @property
    def recorded(self) -> list[str]:
        """Every ``record_seen`` call's payment id, repeats included."""
        return [payment_id for method, payment_id in self.calls if method == "record_seen"]

    def record_seen(self, transfer: ObservedTransfer) -> None:
        payment_id = transfer.payment_id
        self.calls.append(("record_seen", payment_id))
        known = self.status.get(payment_id)
        if known is None or known is PaymentStatus.ORPHANED:
            self._store(transfer, transfer)
            self.final.discard(payment_id)
            return
        stored = self.transfers[payment_id]
        failed_not_final = known is PaymentStatus.FAILED and payment_id not in self.final
        if (known is PaymentStatus.SEEN or failed_not_final) and _another_credit(stored, transfer):
            self._store(transfer, transfer)  # its id now holds another credit of the transaction: recorded afresh
            return
        if (known is PaymentStatus.SEEN or failed_not_final) and stored.inclusion != transfer.inclusion:
            moved = replace(
                stored,
                block_number=transfer.block_number,
                block_hash=transfer.block_hash,
                block_time=transfer.block_time or stored.block_time,
                succeeded=transfer.succeeded,
            )
            self._store(moved if known is PaymentStatus.SEEN or not transfer.succeeded else transfer, transfer)

    def record_batch(self, transfers: Sequence[ObservedTransfer]) -> None:
        self.batches.append([transfer.payment_id for transfer in transfers])
        for transfer in transfers:
            self.record_seen(transfer)

    def _store(self, kept: ObservedTransfer, seen: ObservedTransfer) -> None:
        self.transfers[seen.payment_id] = kept
        self.status[seen.payment_id] = PaymentStatus.SEEN if seen.succeeded else PaymentStatus.FAILED

    def pending(self, chain: str) -> Sequence[PendingPayment]:
        return [
            PendingPayment.of(pid, t, failed=self.status[pid] is PaymentStatus.FAILED)
            for pid, t in self.transfers.items()
            if t.chain == chain
            and (
                self.status[pid] is PaymentStatus.SEEN
                or (self.status[pid] is PaymentStatus.FAILED and pid not in self.final)
            )
        ]

    def finalized(self, payment_id: str, block_hash: str | None = None) -> None:
        self.calls.append(("finalized", payment_id))
        self._move(payment_id, PaymentStatus.FINALIZED, block_hash)

    def orphaned(self, payment_id: str, block_hash: str | None = None, *, failed: bool = False) -> None:
        self.calls.append(("orphaned", payment_id))
        if failed:  # the cause the watcher reports (D434 amended (hcw))
            self.failed_orphans.append(payment_id)
        self._move(payment_id, PaymentStatus.ORPHANED, block_hash)

    def stalled(self, payment_id: str, block_hash: str | None = None) -> None:
        self.calls.append(("stalled", payment_id))  # no bills here: nothing else to do (D398)

    def _move(self, payment_id: str, status: PaymentStatus, block_hash: str | None) -> None:
        known = self.status.get(payment_id)
        if known is None or (block_hash is not None and self.transfers[payment_id].block_hash != block_hash):
            return
        if known is PaymentStatus.FAILED and payment_id not in self.final:
            if status is PaymentStatus.FINALIZED:
                self.final.add(payment_id)
            else:
                self.status[payment_id] = status
        elif known is PaymentStatus.SEEN:
            self.status[payment_id] = status

    def with_status(self, status: PaymentStatus) -> list[ObservedTransfer]:
        return [self.transfers[pid] for pid, s in self.status.items() if s is status]

    def only(self) -> ObservedTransfer:
        (transfer,) = self.transfers.values()
        return transfer


@dataclass
class StaticReferences:
    keys: list[str] = field(default_factory=list)

    def active_references(self, chain: str) -> Sequence[str]:
        return list(self.keys)

    def recent_references(self, chain: str) -> Sequence[str]:
        return list(self.keys)
