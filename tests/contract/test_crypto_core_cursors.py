"""The watchers' cursor store on the crypto table (moto, from template.yaml): conditional moves only."""

from __future__ import annotations

from datetime import UTC, datetime

import pytest

from kilo_crypto_watch.adapters import DynamoCursorStore
from kilo_crypto_watch.model import Cursor
from kilo_crypto_watch.ports import CursorConflictError
from tests.conftest import Stack


@pytest.fixture
def cursors(stack: Stack) -> DynamoCursorStore:
    return DynamoCursorStore(stack.clients["dynamodb"], stack.template.physical_name("CryptoTable"))


def test_given_no_cursor_when_put_from_none_then_it_reads_back_and_a_second_first_put_conflicts(
    cursors: DynamoCursorStore,
) -> None:
    assert cursors.get("ethereum") is None
    first = Cursor("ethereum", 100, "0xaa", updated_at=datetime(2026, 11, 2, tzinfo=UTC))
    cursors.put(first, None)
    assert cursors.get("ethereum") == first
    with pytest.raises(CursorConflictError):
        cursors.put(Cursor("ethereum", 200, "0xbb"), None)
    assert cursors.get("ethereum") == first


def test_given_a_cursor_when_moved_from_a_stale_one_then_refused(cursors: DynamoCursorStore) -> None:
    start = Cursor("solana", 10, "hash10", last_signature="sigA")
    cursors.put(start, None)
    moved = Cursor("solana", 20, "hash20", last_signature="sigB")
    cursors.put(moved, start)
    with pytest.raises(CursorConflictError):
        cursors.put(Cursor("solana", 30, "hash30", last_signature="sigC"), start)
    assert cursors.get("solana") == moved
    assert cursors.get("ethereum") is None
