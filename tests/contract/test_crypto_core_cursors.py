"""One contract, two implementations of the watchers' cursor store (both chains): the in-memory fake the watchers'
tests use (tests/crypto_fakes.py) and the crypto table (moto, from template.yaml). Conditional moves only."""

from __future__ import annotations

from datetime import UTC, datetime

import pytest

from kilo_crypto_watch.model import Cursor
from kilo_crypto_watch.ports import CursorConflictError, CursorStore
from tests.conftest import Stack
from tests.crypto_fakes import MemoryCursorStore


@pytest.fixture(params=["fake", "dynamodb"])
def cursors(request: pytest.FixtureRequest) -> CursorStore:
    if request.param == "fake":
        return MemoryCursorStore()
    from kilo_crypto_watch.adapters import DynamoCursorStore  # noqa: PLC0415

    stack: Stack = request.getfixturevalue("stack")
    return DynamoCursorStore(stack.clients["dynamodb"], stack.template.physical_name("CryptoTable"))


def test_given_no_cursor_when_put_from_none_then_it_reads_back_and_a_second_first_put_conflicts(
    cursors: CursorStore,
) -> None:
    assert cursors.get("ethereum") is None
    first = Cursor("ethereum", 100, "0xaa", updated_at=datetime(2026, 11, 2, tzinfo=UTC))
    cursors.put(first, None)
    assert cursors.get("ethereum") == first
    with pytest.raises(CursorConflictError):
        cursors.put(Cursor("ethereum", 200, "0xbb"), None)
    assert cursors.get("ethereum") == first


def test_given_a_cursor_when_moved_from_a_stale_one_then_refused(cursors: CursorStore) -> None:
    start = Cursor("solana", 10, "hash10", last_signature="sigA")
    cursors.put(start, None)
    moved = Cursor("solana", 20, "hash20", last_signature="sigB")
    cursors.put(moved, start)
    with pytest.raises(CursorConflictError):
        cursors.put(Cursor("solana", 30, "hash30", last_signature="sigC"), start)
    assert cursors.get("solana") == moved
    assert cursors.get("ethereum") is None


def test_given_an_evm_cursor_without_a_signature_when_moved_from_it_then_it_moves_whatever_its_write_time(
    cursors: CursorStore,
) -> None:
    """The condition is the position (block, hash, signature), not when it was written: a cursor read back with
    another ``updated_at`` than the caller holds is still the one it started from."""
    start = Cursor("base", 10, "0x10", updated_at=datetime(2026, 11, 2, 9, tzinfo=UTC))
    cursors.put(start, None)
    moved = Cursor("base", 20, "0x20", updated_at=datetime(2026, 11, 2, 10, tzinfo=UTC))
    cursors.put(moved, Cursor("base", 10, "0x10"))
    assert cursors.get("base") == moved
    with pytest.raises(CursorConflictError):
        cursors.put(Cursor("base", 30, "0x30"), Cursor("base", 20, "0x21"))  # another hash at that height
    with pytest.raises(CursorConflictError):
        cursors.put(Cursor("base", 30, "0x30"), Cursor("base", 20, "0x20", last_signature="sigA"))
    assert cursors.get("base") == moved


def test_given_an_evm_cursor_with_its_first_block_then_it_reads_back_with_it(cursors: CursorStore) -> None:
    """The EVM cursor keeps the first block its watcher scanned (the rollback's floor without ``start_block``, D342
    amended (review 4)): 100 put, read back 100; moved to 150 keeping it; a cursor without one reads back None."""
    start = Cursor("ethereum", 120, "0x78", first_block=100)
    cursors.put(start, None)
    moved = Cursor("ethereum", 150, "0x96", first_block=100)
    cursors.put(moved, start)
    cursors.put(Cursor("base", 7, "0x7"), None)

    assert cursors.get("ethereum") == moved
    assert cursors.get("base") == Cursor("base", 7, "0x7", first_block=None)
