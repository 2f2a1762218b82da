"""A payment dropped with its block is told to its customer once the chain has made the drop final, not a wall-clock
wait later (D449): its owed reopen notice records the chain and the height it was dropped from, and the sweep tells
it once that chain's watcher reads that height final (``RunReport.final_through``). Hand-worked heights; the
payment is ``ethereum:0xc2:0`` seen in block 100 (``0xblock``), dropped at T0 + 5 min = 2026-11-02 09:05:00 UTC,
Unix 1,793,610,300 (20,759 days since 1970-01-01 x 86,400 s + 9 h 5 min)."""

from __future__ import annotations

from dataclasses import replace
from datetime import timedelta

import pytest

from kilo_crypto_watch.model import Payment, PaymentStatus
from kilo_crypto_watch.settlement import OwedReopen, parse_reopen, reopen_entry
from kilo_crypto_watch.solana import LANDING_BLOCKS, drop_final_slot
from tests.crypto_core_fakes import T0, transfer

DROPPED_AT = T0 + timedelta(minutes=5)
DROPPED_UNIX = 1_793_610_300
PAYMENT = Payment(transfer("0xc2", "USDC", 40_000_000, T0 + timedelta(minutes=4)), PaymentStatus.SEEN, T0)


def test_unix_seconds_of_the_drop_are_the_hand_worked_ones() -> None:
    assert int(DROPPED_AT.timestamp()) == DROPPED_UNIX


def test_given_a_drop_then_its_entry_records_the_chain_and_the_block_it_was_dropped_from() -> None:
    entry = reopen_entry(PAYMENT, "0xblock", "dropped", DROPPED_AT)

    assert entry == "ethereum:0xc2:0@0xblock;dropped;2026-11-02T09:05:00+00:00;ethereum;100"
    assert parse_reopen(entry) == OwedReopen(
        "ethereum:0xc2:0", f"ethereum:0xc2:0@0xblock/{DROPPED_UNIX}", "dropped", chain="ethereum", height=100
    )


def test_given_a_solana_drop_then_its_entry_records_the_slot() -> None:
    sol = replace(PAYMENT, transfer=replace(PAYMENT.transfer, chain="solana", tx_id="5sig", block_number=312_000_000))

    entry = reopen_entry(sol, "Hash1", "expired", DROPPED_AT)

    assert entry == "solana:5sig:0@Hash1;expired;2026-11-02T09:05:00+00:00;solana;312000000"
    owed = parse_reopen(entry)
    assert (owed.lost, owed.chain, owed.height) == ("expired", "solana", 312_000_000)


def test_given_a_failure_or_a_stall_then_no_height_is_recorded() -> None:
    failed = reopen_entry(PAYMENT, "0xnew", "failed", DROPPED_AT)

    assert failed == "ethereum:0xc2:0@0xnew;failed;2026-11-02T09:05:00+00:00"
    assert parse_reopen(failed) == OwedReopen(
        "ethereum:0xc2:0", f"ethereum:0xc2:0@0xnew/{DROPPED_UNIX}", "failed", at=DROPPED_AT
    )
    assert reopen_entry(PAYMENT, "0xblock") == "ethereum:0xc2:0@0xblock"
    assert parse_reopen("ethereum:0xc2:0@0xblock") == OwedReopen("ethereum:0xc2:0", "ethereum:0xc2:0@0xblock")


@pytest.mark.parametrize(
    ("final", "due"),
    [
        ({}, False),  # no chain's height read this run
        ({"base": 5_000}, False),  # another chain's run
        ({"ethereum": 99}, False),  # finalized one block below the block it was dropped from
        ({"ethereum": 100}, True),  # at it: that height is final, the fork that held it dead
        ({"ethereum": 164}, True),
    ],
)
def test_a_drop_is_due_once_its_chains_final_height_reaches_its_block_whatever_the_clock(
    final: dict[str, int], due: bool
) -> None:
    owed = parse_reopen(reopen_entry(PAYMENT, "0xblock", "dropped", DROPPED_AT))

    assert owed.due(DROPPED_AT, final) is due
    assert owed.due(DROPPED_AT + timedelta(days=1), final) is due  # a day later: the same


def test_given_an_entry_stored_before_d449_then_it_is_due_by_its_time_with_its_old_id() -> None:
    """Stored by the code before D449: ``;dropped;<due>`` with due = the drop + 768 s (09:17:48), no height."""
    old = parse_reopen("ethereum:0xc2:0@0xblock;dropped;2026-11-02T09:17:48+00:00")

    assert (old.tail, old.lost, old.height) == (f"ethereum:0xc2:0@0xblock/{DROPPED_UNIX + 768}", "dropped", None)
    assert not old.due(DROPPED_AT + timedelta(seconds=767), {"ethereum": 100})
    assert old.due(DROPPED_AT + timedelta(seconds=768), {})


def test_a_failure_is_due_at_once_and_a_stall_always() -> None:
    failed = parse_reopen(reopen_entry(PAYMENT, "0xnew", "failed", DROPPED_AT))

    assert failed.due(DROPPED_AT, {})
    assert parse_reopen("ethereum:0xc2:0@0xblock").due(DROPPED_AT, {})


# --- Solana: the slot through which a dropped transaction cannot land any more --------------------------------------
def test_the_landing_window_is_agaves_150_blocks_after_the_landing_blocks_parent() -> None:
    assert LANDING_BLOCKS == 151


@pytest.mark.parametrize(
    ("blocks", "final"),
    [
        # every slot 1,000..1,200 a finalized block (L = 1,200): the block 151 blocks below it, 1,049
        (list(range(1_000, 1_201)), 1_049),
        # 1,100 skipped: one block fewer between, 1,048 is 151 blocks below 1,200
        ([slot for slot in range(1_000, 1_201) if slot != 1_100], 1_048),
        # exactly 152 blocks (1,049..1,200): the first of them
        (list(range(1_049, 1_201)), 1_049),
        # 151 blocks: none is 151 blocks below the last - not known, a drop waits
        (list(range(1_050, 1_201)), None),
        ([], None),
    ],
)
def test_the_final_slot_for_drops_is_the_finalized_block_151_blocks_below_the_last(
    blocks: list[int], final: int | None
) -> None:
    """A transaction dropped from slot S names the blockhash of a block before S; where S <= the answer, that block is
    at least 152 blocks below the last finalized block L, so the transaction could land only in a block below L:
    Agave takes it while the landing block's parent is at most 150 blocks above its blockhash's block."""
    assert drop_final_slot(blocks) == final
