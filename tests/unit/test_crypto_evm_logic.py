"""The EVM watcher's pure parts: topics, call-data decoding, the chunk sizer, transaction hashes, the finality pass's
anchored reads."""

from __future__ import annotations

from collections.abc import Sequence

import pytest

from kilo_crypto_watch.evm import (
    ChunkSizer,
    _anchored_hashes,
    address_topic,
    decode_transfer_call,
    normalise_tx_hash,
    topic_address,
)
from kilo_crypto_watch.ports import BlockRef, EvmTransaction

MERCHANT = "0x9965507D1a55bcC2695C58ba16FB37d819B0A4dc"
PAYER = "0x70997970C51812dc3A010C7d01b50e0d17dc79C8"


def test_an_address_topic_is_32_bytes_of_lower_case_hex() -> None:
    topic = address_topic(MERCHANT)

    assert topic == "0x0000000000000000000000009965507d1a55bcc2695c58ba16fb37d819b0a4dc"
    assert topic_address(topic) == MERCHANT.lower()


def _call(data: str) -> EvmTransaction:
    return EvmTransaction(hash="0x" + "1" * 64, sender=PAYER, to="0x" + "2" * 40, value=0, input=data)


def test_transfer_and_transfer_from_calls_decode_to_sender_recipient_amount() -> None:
    recipient = address_topic(MERCHANT)[2:]
    owner = address_topic(PAYER)[2:]
    amount = format(12_340_000, "064x")

    assert decode_transfer_call(_call("0xa9059cbb" + recipient + amount)) == (PAYER, MERCHANT.lower(), 12_340_000)
    assert decode_transfer_call(_call("0x23b872dd" + owner + recipient + amount)) == (
        "0x" + PAYER.lower()[2:],
        MERCHANT.lower(),
        12_340_000,
    )
    assert decode_transfer_call(_call("0xa9059cbb" + recipient)) is None  # short call data
    assert decode_transfer_call(_call("0x095ea7b3" + recipient + amount)) is None  # approve


def test_the_chunk_sizer_halves_to_one_block_and_doubles_back_to_its_start() -> None:
    sizer = ChunkSizer(2_000)

    assert [sizer.refused() for _ in range(3)] == [True, True, True]
    assert sizer.size == 250
    sizer.succeeded()
    assert sizer.size == 500
    for _ in range(5):
        sizer.succeeded()
    assert sizer.size == 2_000
    small = ChunkSizer(3)
    assert (small.refused(), small.size, small.refused()) == (True, 1, False)


@pytest.mark.parametrize(
    ("given", "expected"),
    [
        ("0X" + "AB" * 32, "0x" + "ab" * 32),
        ("  " + "cd" * 32 + "\n", "0x" + "cd" * 32),
    ],
)
def test_a_submitted_hash_is_normalised(given: str, expected: str) -> None:
    assert normalise_tx_hash(given) == expected


@pytest.mark.parametrize("given", ["0x1234", "0x" + "g" * 64, "", "0x" + "a" * 65])
def test_a_malformed_hash_is_refused_naming_the_form(given: str) -> None:
    with pytest.raises(ValueError, match="0x and 64 hex digits"):
        normalise_tx_hash(given)


class Heights:
    """block_hashes only: each read recorded (one JSON-RPC batch in the adapter); ``stale``: the reads (by
    position) a backend on a dead fork answers, with ``0xdead`` everywhere."""

    def __init__(self, stale: set[int] | None = None) -> None:
        self.reads: list[list[int]] = []
        self.stale = stale or set()

    def block_hashes(self, numbers: Sequence[int]) -> dict[int, str | None]:
        self.reads.append(list(numbers))
        dead = len(self.reads) - 1 in self.stale
        return {n: "0xdead" if dead else f"0x{n:x}" for n in numbers}


FINALIZED = BlockRef(200, "0xc8", 0)  # 200 = 0xc8: the canonical hash this fake answers at 200


def test_the_finality_reads_ask_the_finalized_height_beside_at_most_99_others() -> None:
    """150 due heights (1..150): two reads, 99 + 51 heights, each led by the finalized height 200 (100 and 52 asked
    - one batch each at the adapter's 100); all agree: the run's hash is what the node answered there."""
    rpc = Heights()

    hashes, answered = _anchored_hashes(rpc, list(range(1, 151)), FINALIZED)  # type: ignore[arg-type]

    assert [(read[0], len(read)) for read in rpc.reads] == [(200, 100), (200, 52)]
    assert [read[1:] for read in rpc.reads] == [list(range(1, 100)), list(range(100, 151))]
    assert (len(hashes), hashes[150], answered) == (150, "0x96", "0xc8")  # 150 = 0x96


def test_a_finality_read_answered_by_another_backend_gives_its_answer_at_the_finalized_height() -> None:
    """The second of the two reads answered by a dead fork's backend: what it said at 200 (``0xdead``) is returned,
    so the caller settles nothing; the height 200 due itself is asked once per read, not twice."""
    rpc = Heights(stale={1})

    _, answered = _anchored_hashes(rpc, [*range(1, 151), 200], FINALIZED)  # type: ignore[arg-type]

    assert answered == "0xdead"
    assert [read.count(200) for read in rpc.reads] == [1, 1]
