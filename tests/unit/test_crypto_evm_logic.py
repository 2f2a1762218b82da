"""The EVM watcher's pure parts: topics, call-data decoding, the chunk sizer, transaction hashes, the finality pass's
anchored reads."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import replace

import pytest

from kilo_crypto_watch.evm import (
    NATIVE_INDEX,
    TRANSFER_TOPIC,
    ChunkSizer,
    _anchored_hashes,
    _common_ancestor,
    _finality,
    address_topic,
    decode_transfer_call,
    normalise_tx_hash,
    topic_address,
)
from kilo_crypto_watch.model import ChainConfig, Cursor, ObservedTransfer, PaymentStatus, PendingPayment
from kilo_crypto_watch.ports import BlockRef, EvmLog, EvmReceipt, EvmTransaction
from tests.crypto_fakes import MemoryPaymentSink

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

    def __init__(self, stale: set[int] | None = None, old: dict[str, str] | None = None) -> None:
        self.reads: list[list[int]] = []
        self.stale = stale or set()
        self.old = old or {}  # old-fork blocks the node still has: hash -> parent hash (none: it dropped them)
        self.walked: list[str] = []  # the rollback walk's blocks read by hash (one batch each)

    def block_hashes(self, numbers: Sequence[int]) -> dict[int, str | None]:
        self.reads.append(list(numbers))
        dead = len(self.reads) - 1 in self.stale
        return {n: "0xdead" if dead else f"0x{n:x}" for n in numbers}

    def parent_beside(self, block_hash: str, numbers: Sequence[int]) -> tuple[str | None, dict[int, str | None]]:
        self.walked.append(block_hash)
        return self.old.get(block_hash), {n: f"0x{n:x}" for n in numbers}


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


# --- the finality pass: a replaced payment whose receipt's block the anchored read cannot confirm (D342) -------------
USDC_TOKEN = "0x5FbDB2315678afecb367f032d93F642f64180aa3"
CHAIN = ChainConfig("ethereum", "evm", "http://x", MERCHANT, USDC_TOKEN, "ETH", chain_id=1)


GENESIS = 1_700_000_000  # the fakes' block 0 timestamp (unix seconds)


def stamped(number: int, seconds: int = 12) -> BlockRef:
    """The finalized block ``number`` as the fakes' chain has it (``0xc<n>``), ``seconds`` a block from GENESIS."""
    return BlockRef(number, f"0xc{number}", GENESIS + seconds * number)


class Moved:
    """One backend per call. The height reader: canonical up to its ``head`` (``0xc<n>``, 100 = ``0xnew100`` - A's
    old block 0xold100 left the chain) plus ``blocks``, nothing above ``head``; a block's timestamp is GENESIS +
    ``seconds`` a block (12: Ethereum's slot). The receipt reader: A's receipt in ``receipt`` (block, hash), or none
    (A's nonce went to another transaction: not mined)."""

    def __init__(
        self, head: int, receipt: tuple[int, str] | None, blocks: dict[int, str] | None = None, seconds: int = 12
    ) -> None:
        self.head = head
        self.receipt = receipt
        self.blocks = {100: "0xnew100", **(blocks or {})}
        self.seconds = seconds
        self.header_reads: list[list[int]] = []

    def block_hashes(self, numbers: Sequence[int]) -> dict[int, str | None]:
        return {n: self.blocks.get(n, f"0xc{n}" if n <= self.head else None) for n in numbers}

    def headers(self, numbers: Sequence[int]) -> dict[int, BlockRef | None]:
        self.header_reads.append(list(numbers))
        return {
            n: None if h is None else BlockRef(n, h, GENESIS + self.seconds * n)
            for n, h in self.block_hashes(numbers).items()
        }

    def receipts(self, tx_hashes: Sequence[str]) -> dict[str, EvmReceipt]:
        if self.receipt is None:
            return {}
        number, block_hash = self.receipt
        log = EvmLog(
            USDC_TOKEN,
            (TRANSFER_TOPIC, address_topic(PAYER), address_topic(MERCHANT)),
            hex(A_UNITS),
            number,
            block_hash,
            "0xa",
            0,
        )
        return {h: EvmReceipt(h, True, number, block_hash, (log,)) for h in tx_hashes}

    def transaction(self, tx_hash: str) -> EvmTransaction:
        return EvmTransaction(tx_hash, PAYER, USDC_TOKEN, 0, "0x", 0)

    def receipt_beside(self, tx_hash: str, numbers: Sequence[int]) -> tuple[EvmReceipt | None, dict[int, str | None]]:
        """One batch, one backend: this fake's receipt reader and height reader answer it together."""
        return self.receipts([tx_hash]).get(tx_hash), self.block_hashes(numbers)


A_UNITS = 100_000_000  # 100 USDC (6 decimals): the $100.00 bill's quote at $1.00


def _seen_a() -> tuple[MemoryPaymentSink, str]:
    """A (100 USDC, payer -> merchant) seen at block 100 whose hash was 0xold100."""
    sink = MemoryPaymentSink()
    a = ObservedTransfer("ethereum", "USDC", "0xa", 0, 100, "0xold100", PAYER, MERCHANT, A_UNITS)
    sink.record_seen(a)
    return sink, a.payment_id


@pytest.mark.parametrize(
    ("head", "blocks"),
    [(202, {}), (205, {203: "0xc203"})],
    ids=["receipt-block-above-the-readers-head", "receipt-block-above-finalized-read-as-another"],
)
def test_a_replaced_payment_whose_receipt_is_in_a_block_above_finalized_not_confirmed_waits_seen_unnamed(
    head: int, blocks: dict[int, str]
) -> None:
    """F = 200 (0xc200). A's block 100 now 0xnew100; A's receipt (another backend, head 205) in 203 as 0xb203; the
    height reader answers None at 203 (its head 202) or another block there (0xc203: another fork above F, not yet
    final). Before: "nothing proven" and then A ORPHANED (0, 1) - released although mined. Now the receipt says it is
    mined: A waits SEEN at 100 (0, 0), read again next run; not stuck - 203 is above F (200), finality has not got
    there yet, so no backend is wrong."""
    sink, a = _seen_a()
    stuck: list[str] = []

    counts = _finality(Moved(head, (203, "0xb203"), blocks), sink, CHAIN, BlockRef(200, "0xc200", 0), stuck)  # type: ignore[arg-type]

    assert (counts, stuck) == ((0, 0), [])
    assert sink.status[a] is PaymentStatus.SEEN
    assert (sink.transfers[a].block_number, sink.transfers[a].block_hash) == (100, "0xold100")


class Reread(Moved):
    """``Moved``, but the receipt reader answers each ``receipts`` call in turn from ``answers`` (the last one
    again once they run out): the batch of the pass first, then a re-read alone - behind a load balancer, maybe
    another backend. Each call's hashes are recorded."""

    def __init__(self, head: int, answers: list[tuple[int, str] | None], blocks: dict[int, str] | None = None) -> None:
        super().__init__(head, answers[0], blocks)
        self.answers = answers
        self.asked: list[list[str]] = []

    def receipts(self, tx_hashes: Sequence[str]) -> dict[str, EvmReceipt]:
        self.receipt = self.answers[min(len(self.asked), len(self.answers) - 1)]
        self.asked.append(list(tx_hashes))
        return super().receipts(tx_hashes)


@pytest.mark.parametrize(
    ("finalized", "dead"),
    [(BlockRef(200, "0xc200", 0), (100, "0xold100")), (BlockRef(205, "0xc205", 0), (203, "0xb203"))],
    ids=["own-block-then-no-receipt", "finalized-block-then-no-receipt"],
)
def test_a_replaced_payment_whose_receipt_a_final_block_proves_on_a_dead_fork_is_orphaned_once_read_again_alone(
    finalized: BlockRef, dead: tuple[int, str]
) -> None:
    """A (100 USDC = 100,000,000 units) stored at 100 as 0xold100; 100 is now 0xnew100. A's receipt is in a block at
    or below F whose canonical hash the anchored read has, and it is not the receipt's: A's own block 100 as
    0xold100 (F = 200, the pass's first read), or 203 as 0xb203 where the chain has 0xc203 (F = 205, the second
    read). Read again alone - one batch with F's height (and the receipt's) - the backend that answers F's hash at F
    (it holds the final chain) has no receipt: not mined. A ORPHANED (0, 1), nothing stuck, the receipt asked
    twice ([0xa], [0xa])."""
    sink, a = _seen_a()
    stuck: list[str] = []
    rpc = Reread(205, [dead, None])

    counts = _finality(rpc, sink, CHAIN, finalized, stuck)  # type: ignore[arg-type]

    assert (counts, stuck) == ((0, 1), [])
    assert sink.status[a] is PaymentStatus.ORPHANED
    assert rpc.asked == [["0xa"], ["0xa"]]


class Alone(Reread):
    """``Reread`` whose read alone (``receipt_beside``) another backend answers: at each height in ``view`` its
    answer (None: it has no block there), elsewhere the chain's."""

    def __init__(
        self,
        head: int,
        answers: list[tuple[int, str] | None],
        view: dict[int, str | None],
        blocks: dict[int, str] | None = None,
    ) -> None:
        super().__init__(head, answers, blocks)
        self.view = view

    def receipt_beside(self, tx_hash: str, numbers: Sequence[int]) -> tuple[EvmReceipt | None, dict[int, str | None]]:
        receipt, hashes = super().receipt_beside(tx_hash, numbers)
        return receipt, {n: self.view.get(n, hashes[n]) for n in numbers}


class Billed(MemoryPaymentSink):
    """The in-memory sink whose pending payments say the bill they count for (inv-1), as settlement's do."""

    def pending(self, chain: str) -> Sequence[PendingPayment]:
        return [replace(payment, invoice_id="inv-1") for payment in super().pending(chain)]


@pytest.mark.parametrize(
    ("answers", "view", "blocks", "stalled"),
    [
        ([(100, "0xold100"), (100, "0xold100")], {200: None}, {}, True),
        ([(100, "0xold100"), None], {200: None}, {}, True),
        ([None, None], {200: None}, {}, True),
        ([(100, "0xold100"), None], {200: "0xdead200"}, {}, True),
        ([(100, "0xold100"), (100, "0xold100")], {}, {}, True),
        ([(100, "0xnew100")], {}, {100: "0xdead100"}, True),
        ([(150, "0xc150")], {}, {150: "0xdead150"}, False),
        ([(190, "0xc190")], {}, {190: "0xdead190"}, False),
        ([(137, "0xc137")], {}, {137: "0xdead137"}, False),
        ([(136, "0xc136")], {}, {136: "0xdead136"}, True),
    ],
    ids=[
        "stale-backend-again-without-F",
        "no-receipt-from-a-backend-behind-F",
        "no-receipt-at-all-from-backends-behind-F",
        "no-receipt-from-a-dead-fork-backend",
        "dead-receipt-beside-F-split-batch",
        "canonical-receipt-vs-a-stale-element-of-the-pass-read",
        "canonical-receipt-vs-a-stale-element-of-the-receipt-block-read",
        "receipt-block-read-stale-120s-after-the-receipt",
        "receipt-block-read-stale-756s-after-the-receipt",
        "receipt-block-read-stale-768s-after-the-receipt",
    ],
)
def test_a_replaced_payment_is_not_orphaned_unless_one_backend_holding_finalized_has_no_receipt(
    answers: list[tuple[int, str] | None], view: dict[int, str | None], blocks: dict[int, str], stalled: bool
) -> None:
    """A (100 USDC = 100,000,000 units) stored at 100 as 0xold100, counted for bill inv-1; F = 200 (0xc200). A may
    be mined canonically at a final block the scan never reads again (a reorg noticed late: the rescan starts above
    it), so "released" would be for good: orphaned only when ONE batch - the receipt read alone beside F's height -
    answers F's hash at F (that backend holds the final chain) and no receipt. Here it never does: the read alone
    comes from a backend without F (None: the stale backend whose top is 100, or one behind F) or on a dead fork
    (0xdead200); or F is right but the same batch serves the dead receipt (its elements routed to different
    backends); or the pass's own reads had one stale element (0xdead100 at 100, 0xdead150 at 150 - A's receipt in
    its canonical block). Before: A ORPHANED (0, 1) - the bill reopened, the customer asked for a second $100.00.
    Now A waits SEEN at 100 (0, 0), named stuck once with its bill, and reported stalled: it no longer holds the
    bill's write-off (D398; before: not reported, a bill paid short beside it PROCESSING for as long) - F's block
    is 100 x 12 s = 1,200 s after A's height's, past the 768 s (D418). But where A's receipt is in a later block R
    whose read is stale, the wait runs from R (D418, amended (cw2); before: from A's height 100, so stalled): R = 150
    is 50 x 12 = 600 s before F, R = 190 120 s, R = 137 756 s - not stalled; R = 136, 768 s - stalled."""
    sink = Billed()
    transfer = ObservedTransfer("ethereum", "USDC", "0xa", 0, 100, "0xold100", PAYER, MERCHANT, A_UNITS)
    sink.record_seen(transfer)
    stuck: list[str] = []

    counts = _finality(Alone(205, answers, view, blocks), sink, CHAIN, stamped(200), stuck)  # type: ignore[arg-type]

    assert counts == (0, 0)
    assert sink.status[transfer.payment_id] is PaymentStatus.SEEN
    assert sink.transfers[transfer.payment_id].block_number == 100
    (entry,) = stuck
    assert entry.startswith(f"{transfer.payment_id}: ")
    assert entry.endswith("; bill inv-1 waits on it")
    expected = [("stalled", transfer.payment_id)] if stalled else []
    assert [call for call in sink.calls if call[0] == "stalled"] == expected


@pytest.mark.parametrize(
    ("seconds", "final", "stalled"),
    [(12, 163, False), (12, 164, True), (2, 164, False), (2, 483, False), (2, 484, True)],
    ids=[
        "ethereum-756s-past",
        "ethereum-768s-past",
        "base-64-blocks-128s-past",
        "base-766s-past",
        "base-768s-past",
    ],
)
def test_a_replaced_payment_left_waiting_is_reported_stalled_only_once_finality_is_768_seconds_past_its_block(
    seconds: int, final: int, stalled: bool
) -> None:
    """Review rcr 3, D418. The case ``canonical-receipt-vs-a-stale-element-of-the-pass-read``: A (100 USDC) stored
    at 100 as 0xold100, the pass's read at 100 one stale element (0xdead100), A's receipt in its canonical 0xnew100:
    A waits SEEN, named stuck at once (D342); reported stalled (D398) only once F's timestamp is ``STALL_SECONDS``
    (768) past the block at A's height, read in one batch beside F (``headers([F, 100])``). Ethereum, 12 s a block:
    F = 163 is 63 x 12 = 756 s past (stuck, not stalled), F = 164 is 768 s (stalled) - as the 64 blocks before.
    Base, 2 s a block: F = 164 is 128 s past (before: stalled, 64 blocks - two minutes), F = 483 is 766 s (not),
    F = 484 is 768 s (stalled)."""
    sink = Billed()
    transfer = ObservedTransfer("ethereum", "USDC", "0xa", 0, 100, "0xold100", PAYER, MERCHANT, A_UNITS)
    sink.record_seen(transfer)
    stuck: list[str] = []
    rpc = Alone(final + 5, [(100, "0xnew100")], {}, {100: "0xdead100"})
    rpc.seconds = seconds

    counts = _finality(rpc, sink, CHAIN, stamped(final, seconds), stuck)  # type: ignore[arg-type]

    assert counts == (0, 0)
    assert sink.status[transfer.payment_id] is PaymentStatus.SEEN
    (entry,) = stuck
    assert entry.endswith("; bill inv-1 waits on it")
    expected = [("stalled", transfer.payment_id)] if stalled else []
    assert [call for call in sink.calls if call[0] == "stalled"] == expected
    assert rpc.header_reads == [[final, 100]]


@pytest.mark.parametrize(
    ("anchor", "stalled"),
    [("0xc300", True), ("0xdead300", False), (None, False)],
    ids=["finalized-block-answered", "another-block-there", "nothing-there"],
)
def test_a_stuck_payments_wait_is_timed_only_by_a_read_that_answers_the_finalized_block(
    anchor: str | None, stalled: bool
) -> None:
    """D418. As above, F = 300 (0xc300; 200 x 12 = 2,400 s past A's height 100). The timestamps are read beside F's
    height: a backend answering F's hash there is on the final chain and its block at 100 dates A's height; one on
    another fork (0xdead300) or behind F (nothing at 300) proves no time - A is named stuck, not stalled, and read
    again next run."""
    sink = Billed()
    transfer = ObservedTransfer("ethereum", "USDC", "0xa", 0, 100, "0xold100", PAYER, MERCHANT, A_UNITS)
    sink.record_seen(transfer)
    stuck: list[str] = []
    rpc = Alone(305, [(100, "0xnew100")], {}, {100: "0xdead100"})
    real = rpc.headers

    def headers(numbers: Sequence[int]) -> dict[int, BlockRef | None]:
        read = real(numbers)
        if 300 in read and len(numbers) == 2:  # the stall's read (the pass's reads go through block_hashes)
            read[300] = None if anchor is None else BlockRef(300, anchor, GENESIS + 12 * 300)
        return read

    rpc.headers = headers  # type: ignore[method-assign]

    _finality(rpc, sink, CHAIN, stamped(300), stuck)  # type: ignore[arg-type]

    assert len(stuck) == 1
    expected = [("stalled", transfer.payment_id)] if stalled else []
    assert [call for call in sink.calls if call[0] == "stalled"] == expected


def test_a_dead_fork_receipt_read_alone_in_its_canonical_block_beside_finalized_moves_and_is_finalized() -> None:
    """F = 205 (0xc205). The pass's receipt batch places A in 203 as 0xb203; the chain has 0xc203 there (a dead
    fork's receipt). The read alone - one batch: the receipt, 205 and 203 - answers 0xc205 at 205, 0xc203 at 203
    and A's receipt in 203 as 0xc203: that backend holds the final chain and A in it. Before: the answers disagreed,
    A waited SEEN, stuck (0, 0). Now A moves to 203 (0xc203) and, 203 being final, is FINALIZED there (1, 0),
    nothing stuck; 100 USDC (100,000,000 units) kept."""
    sink, a = _seen_a()
    stuck: list[str] = []

    rpc = Alone(205, [(203, "0xb203"), (203, "0xc203")], {})

    counts = _finality(rpc, sink, CHAIN, BlockRef(205, "0xc205", 0), stuck)  # type: ignore[arg-type]

    assert (counts, stuck) == ((1, 0), [])
    assert sink.status[a] is PaymentStatus.FINALIZED
    moved = sink.transfers[a]
    assert (moved.block_number, moved.block_hash, moved.atomic_amount) == (203, "0xc203", 100_000_000)


def test_a_dead_fork_receipt_read_again_elsewhere_waits_named_stuck_then_moves_when_confirmed() -> None:
    """Run 1: F = 205 (0xc205), A's receipt (batch) in 203 as 0xb203, the chain has 0xc203 there: a dead fork; read
    again alone, another backend places A in 204 as 0xc204 (canonical). The answers disagree: A waits SEEN at 100,
    named stuck by A (0, 0). Run 2: the batch itself answers 204 (0xc204, below F): A moves there and is FINALIZED
    (1, 0), nothing stuck."""
    sink, a = _seen_a()
    first: list[str] = []
    second: list[str] = []

    assert _finality(
        Reread(205, [(203, "0xb203"), (204, "0xc204")]), sink, CHAIN, BlockRef(205, "0xc205", 0), first
    ) == (0, 0)  # type: ignore[arg-type]

    assert [entry.split(": ")[0] for entry in first] == [a]
    assert (sink.status[a], sink.transfers[a].block_number) == (PaymentStatus.SEEN, 100)

    assert _finality(Reread(205, [(204, "0xc204")]), sink, CHAIN, BlockRef(205, "0xc205", 0), second) == (1, 0)  # type: ignore[arg-type]

    assert second == []
    assert sink.status[a] is PaymentStatus.FINALIZED
    assert (sink.transfers[a].block_number, sink.transfers[a].block_hash) == (204, "0xc204")


WEI = 5 * 10**16  # 0.05 ETH


class MovedEth(Moved):
    """``Moved`` for a native ETH payment: a receipt without logs, a transaction sending ``WEI`` to the merchant."""

    def receipts(self, tx_hashes: Sequence[str]) -> dict[str, EvmReceipt]:
        if self.receipt is None:
            return {}
        number, block_hash = self.receipt
        return {h: EvmReceipt(h, True, number, block_hash, ()) for h in tx_hashes}

    def transaction(self, tx_hash: str) -> EvmTransaction:
        return EvmTransaction(tx_hash, PAYER, MERCHANT, WEI, "0x", 0)


def test_a_replaced_native_eth_payment_waits_then_moves_and_is_finalized_once() -> None:
    """A native ETH credit (0.05 ETH = 5 x 10^16 wei, ``NATIVE_INDEX``) stored at 100 as 0xold100, replaced. Run 1:
    F = 200, its receipt in 203 (0xb203) above F, unknown to the height reader (head 202): waits SEEN, silent (0, 0).
    Run 2: F = 205, the receipt in 203 as the chain has it (0xc203): moved to 203 and FINALIZED there (1, 0), its
    amount kept (5 x 10^16); one FINALIZED payment in all (the credit is not recorded twice under another id)."""
    sink = MemoryPaymentSink()
    a = ObservedTransfer("ethereum", "ETH", "0xa", NATIVE_INDEX, 100, "0xold100", PAYER, MERCHANT, WEI)
    sink.record_seen(a)
    first: list[str] = []
    second: list[str] = []

    assert _finality(MovedEth(202, (203, "0xb203")), sink, CHAIN, BlockRef(200, "0xc200", 0), first) == (0, 0)  # type: ignore[arg-type]

    assert (first, sink.status[a.payment_id]) == ([], PaymentStatus.SEEN)

    assert _finality(MovedEth(205, (203, "0xc203")), sink, CHAIN, BlockRef(205, "0xc205", 0), second) == (1, 0)  # type: ignore[arg-type]

    moved = sink.transfers[a.payment_id]
    assert (second, moved.block_number, moved.atomic_amount) == ([], 203, 50_000_000_000_000_000)
    assert [pid for pid, status in sink.status.items() if status is PaymentStatus.FINALIZED] == [a.payment_id]


def test_a_replaced_payment_without_a_receipt_is_still_orphaned() -> None:
    """No backend has A's receipt (its nonce went to a speed-up or cancel): not mined, A ORPHANED (0, 1) - released,
    as D342 has it; nothing stuck."""
    sink, a = _seen_a()
    stuck: list[str] = []

    assert _finality(Moved(202, None), sink, CHAIN, BlockRef(200, "0xc200", 0), stuck) == (0, 1)  # type: ignore[arg-type]

    assert stuck == []
    assert sink.status[a] is PaymentStatus.ORPHANED


def test_the_rollbacks_read_answered_by_a_dead_fork_backend_orphans_nothing_and_rolls_back_to_finalized() -> None:
    """Cursor at 220, F = 200 (0xc8); a pending payment at 210 (0xd2, canonical in this fake). The rollback's read
    of 210 is answered by a backend on a dead fork (0xdead everywhere, 200 too). Before: the payment ORPHANED on its
    canonical block (released; only a rescan would see it again). Now the read asks 200 beside 210 and its answer
    there is not F: nothing orphaned, the ancestor is F (200: the rescan starts at 201), one stuck entry."""
    rpc = Heights(stale={0})
    pending = [PendingPayment("ethereum:0xp:0", "ethereum", "0xp", 0, 210, "0xd2")]  # 210 = 0xd2
    stuck: list[str] = []

    ancestor, orphaned = _common_ancestor(rpc, Cursor("ethereum", 220, "0xdc"), pending, FINALIZED, stuck)  # type: ignore[arg-type]

    assert (ancestor, orphaned) == (200, set())
    assert rpc.reads == [[200, 210]]
    (entry,) = stuck
    assert entry.startswith("ethereum:rollback:")


def test_the_rollbacks_read_answered_by_the_canonical_backend_orphans_a_payment_whose_block_left() -> None:
    """The same read answered with F's hash at 200 (0xc8): the payment at 210 stored as 0xold210 is ORPHANED-due
    (its block left), the ancestor stays F (200: no pending block still canonical above it); nothing stuck."""
    rpc = Heights()
    pending = [PendingPayment("ethereum:0xp:0", "ethereum", "0xp", 0, 210, "0xold210")]
    stuck: list[str] = []

    ancestor, orphaned = _common_ancestor(rpc, Cursor("ethereum", 220, "0xdc"), pending, FINALIZED, stuck)  # type: ignore[arg-type]

    assert (ancestor, orphaned, stuck) == (200, {"ethereum:0xp:0"}, [])


class Behind:
    """A backend on the canonical chain but behind the finalized block: head 150 (< F = 200), nothing above it."""

    def __init__(self) -> None:
        self.reads: list[list[int]] = []

    def block_hashes(self, numbers: Sequence[int]) -> dict[int, str | None]:
        self.reads.append(list(numbers))
        return {n: (f"0x{n:x}" if n <= 150 else None) for n in numbers}

    def parent_beside(self, block_hash: str, numbers: Sequence[int]) -> tuple[str | None, dict[int, str | None]]:
        """The rollback walk's read (the cursor's old block by hash beside heights): recorded as a read too."""
        return None, self.block_hashes(numbers)


def test_the_rollbacks_read_by_a_backend_behind_finalized_orphans_nothing_and_names_nothing() -> None:
    """Cursor at 220, F = 200, a pending payment at 210 (0xd2). The rollback's read [200, 210] goes to a backend
    behind F (head 150): None at 200 and at 210 - it knows nothing there, so nothing changed that it could prove.
    Before: (200, {}) and one ``ethereum:rollback:`` stuck entry (the CryptoPaymentsStuck alarm) as for a dead fork.
    Now: (200, {}) - nothing orphaned, the rescan from 201 - and nothing stuck, as before the anchor. Since review 4
    the rollback's first read is the walk's (the cursor's block by hash beside [200, 219], since review 5 220 too):
    None at 200 already says behind, so the pending heights are not read."""
    rpc = Behind()
    pending = [PendingPayment("ethereum:0xp:0", "ethereum", "0xp", 0, 210, "0xd2")]
    stuck: list[str] = []

    ancestor, orphaned = _common_ancestor(rpc, Cursor("ethereum", 220, "0xdc"), pending, FINALIZED, stuck)  # type: ignore[arg-type]

    assert (ancestor, orphaned, stuck) == (200, set(), [])
    assert rpc.reads == [[200, 219, 220]]


def test_a_rollback_noticed_after_finality_passed_the_fork_rescans_from_a_proven_or_bounded_point_below_it() -> None:
    """Cursor at 14 (its hash 0xold14 gone), F = 16 (0x10): the reorg was noticed only once finality passed its
    fork, so min(F, cursor) = 14 is NOT shared - rescanning from 15 skips the new fork's blocks up to 14 (a payment
    there missed for good). A (at 12, 0xold12) left the chain; B (at 9, 0x9) is still canonical. The node still has
    the old fork 0xold10..0xold14, 0xold10's parent the canonical 9: the walk down the parents finds the fork there,
    the ancestor is 9 (rescan from 10; review 3 took B's block as that proof - review 4 walks, B's block proves
    nothing). A node that dropped the old fork: the bound - the walk goes back at most
    ``window`` = 8 blocks below the cursor (14 - 8 = 6), never below ``floor`` (4). A is not orphaned by the
    rollback (at or below F: the finality pass, after the rescan, reads its transaction). Before: (14, {})."""
    a = PendingPayment("ethereum:0xa:0", "ethereum", "0xa", 0, 12, "0xold12")
    b = PendingPayment("ethereum:0xb:0", "ethereum", "0xb", 0, 9, "0x9")
    cursor = Cursor("ethereum", 14, "0xold14")
    finalized = BlockRef(16, "0x10", 0)  # 16 = 0x10
    stuck: list[str] = []

    old = {f"0xold{n}": f"0xold{n - 1}" for n in range(11, 15)} | {"0xold10": "0x9"}
    proven = _common_ancestor(Heights(old=old), cursor, [a, b], finalized, stuck, window=8, floor=4, still="0xe")  # type: ignore[arg-type]  # 14 = 0xe
    bounded = _common_ancestor(Heights(), cursor, [a], finalized, stuck, window=8, floor=4)  # type: ignore[arg-type]
    floored = _common_ancestor(Heights(), cursor, [a], finalized, stuck, window=12, floor=4)  # type: ignore[arg-type]

    assert (proven, bounded, floored, stuck) == ((9, set()), (6, set()), (4, set()), [])


def test_a_rollback_whose_reorg_reaches_below_the_walks_bound_is_named_stuck() -> None:
    """As above (cursor 14, F = 16, window 8: the bound 6), with a pending payment at 5 (0xold5) whose block left
    the chain too: the reorg goes deeper than the walk rescans. The rollback still goes to 6 and orphans nothing
    (5 is final: the finality pass reads its transaction), and one ``ethereum:rollback:`` stuck entry (the
    CryptoPaymentsStuck alarm) names the payment: blocks at or below 6 of the new fork are not rescanned."""
    deep = PendingPayment("ethereum:0xd:0", "ethereum", "0xd", 0, 5, "0xold5")
    stuck: list[str] = []

    found = _common_ancestor(
        Heights(), Cursor("ethereum", 14, "0xold14"), [deep], BlockRef(16, "0x10", 0), stuck, window=8, floor=0
    )  # type: ignore[arg-type]

    assert found == (6, set())
    (entry,) = stuck
    assert entry.startswith("ethereum:rollback:")
    assert "ethereum:0xd:0" in entry


def test_a_pending_payment_rebased_onto_the_new_fork_hides_the_forks_lower_blocks() -> None:
    """Cursor 20 (0xold20, old fork), F = 16 (0x10), the fork at 13: old-fork blocks 0xold14..0xold20, 0xold14's
    parent 0xd (13, canonical). Q re-mined on the new fork at 18 and stored there (0x12: the fast path / the finality
    pass's move) before the watcher rolls back. Before: Q's canonical block 'proved' 18 shared, the rescan started
    at 19 and the new fork's blocks 14..17 (a brand-new payment B there) were never read, nothing stuck: (18, {}).
    Now the walk follows the old fork's parents from 0xold20 down to 0xold14, whose parent is the canonical 13:
    rescan from 14; 7 blocks read by hash (20, 19, ..., 14)."""
    q = PendingPayment("ethereum:0xq:0", "ethereum", "0xq", 0, 18, "0x12")  # 18 = 0x12, canonical in Heights
    old = {f"0xold{n}": f"0xold{n - 1}" for n in range(15, 21)} | {"0xold14": "0xd"}  # 13 = 0xd
    rpc = Heights(old=old)
    stuck: list[str] = []

    cursor, finalized = Cursor("ethereum", 20, "0xold20"), BlockRef(16, "0x10", 0)

    found = _common_ancestor(rpc, cursor, [q], finalized, stuck, window=128, floor=0, still="0x14")  # type: ignore[arg-type]

    assert (found, stuck) == ((13, set()), [])
    assert len(rpc.walked) == 7  # 20 - 14 + 1


def test_a_one_block_head_reorg_rescans_one_block_not_the_window() -> None:
    """Ethereum: cursor at the head 1000 (0xold1000), F = 930 (0x3a2), reorg_window 128, nothing pending; the new
    head replaced 1000 only: 0xold1000's parent is the canonical 999 (0x3e7). Before: the bound, 1000 - 128 = 872
    (rescan 873..1000: 128 blocks, 58 of them final; before review 3 from F: 70). Now one block read by hash and the
    rescan from 1000: 1 block."""
    rpc = Heights(old={"0xold1000": "0x3e7"})  # 999 = 0x3e7
    stuck: list[str] = []

    cursor, finalized = Cursor("ethereum", 1000, "0xold1000"), BlockRef(930, "0x3a2", 0)

    found = _common_ancestor(rpc, cursor, [], finalized, stuck, window=128, still="0x3e8")  # type: ignore[arg-type]  # 1000 = 0x3e8

    assert (found, stuck, rpc.walked, rpc.reads) == ((999, set()), [], ["0xold1000"], [])


class OldForkStep(Heights):
    """A backend still on the OLD fork answering the rollback walk: above the fork (13) it has the old blocks
    ``0xold14``..``0xold20`` at their heights (their parents each other's, ``0xold14``'s the canonical 13 = 0xd), at
    and below 13 the canonical hashes (``0x{n:x}``), F included."""

    def parent_beside(self, block_hash: str, numbers: Sequence[int]) -> tuple[str | None, dict[int, str | None]]:
        self.walked.append(block_hash)
        return self.old.get(block_hash), {n: (f"0xold{n}" if n > 13 else f"0x{n:x}") for n in numbers}


OLD_FORK = {f"0xold{n}": f"0xold{n - 1}" for n in range(15, 21)} | {"0xold14": "0xd"}  # 13 = 0xd


def test_a_walk_step_answered_by_a_backend_on_the_old_fork_falls_back_to_the_bound() -> None:
    """Cursor 20 (0xold20), the real fork at 13, F = 12 (0xc), window 8, floor 0: the bound is
    max(0, min(min(12, 20), 20 - 8)) = 12. The run read 0x14 (20, the new fork) at the cursor's height (``still``).
    The walk's first step lands on a backend still on the old fork: it answers 0xc at F (the same block), 0xold19 at
    19 - the old parent itself - and 0xold20 at 20, not ``still``. Before: the step was checked against F only,
    19 taken as shared, (19, set()): the new fork's 14..19 never scanned. Now: 20 is asked in the same batch, the
    backend's 0xold20 is not ``still`` (0x14), so the step proves nothing: the bound, (12, set()), rescan 13..20."""
    rpc = OldForkStep(old=OLD_FORK)
    stuck: list[str] = []

    found = _common_ancestor(
        rpc, Cursor("ethereum", 20, "0xold20"), [], BlockRef(12, "0xc", 0), stuck, window=8, floor=0, still="0x14"
    )  # type: ignore[arg-type]

    assert (found, stuck, rpc.walked) == ((12, set()), [], ["0xold20"])


def test_a_payment_whose_block_left_below_the_walks_fork_point_rescans_from_the_bound_not_orphaned() -> None:
    """Cursor 20 (0xold20), F = 12 (0xc), window 8, floor 0: the bound 12 (as above). The walk's backend answers
    ``still`` (0x14) at 20 and 0x13 (19, canonical) as 0xold20's parent: fork at 19, rescan from 20. The pending
    read (another backend) says P's block at 17 (0xold17) left: canonical 0x11 there (17 = 0x11). Before: (19, {P})
    - P orphaned, its re-mined transaction in 14..19 never rescanned, the alarm saying the finality pass reads it.
    Now: P is at or below the walk's 19 and above the bound 12: the rescan starts at the bound (13 .. 20 read again,
    P's new block among them), P is not orphaned this run (17 > F = 12: not the finality pass's yet), and one
    ``ethereum:rollback:`` stuck entry names P and the rescan from 13."""
    p = PendingPayment("ethereum:0xp:0", "ethereum", "0xp", 0, 17, "0xold17")
    rpc = Heights(old={"0xold20": "0x13"})  # 19 = 0x13
    stuck: list[str] = []

    found = _common_ancestor(
        rpc, Cursor("ethereum", 20, "0xold20"), [p], BlockRef(12, "0xc", 0), stuck, window=8, floor=0, still="0x14"
    )  # type: ignore[arg-type]

    assert found == (12, set())
    (entry,) = stuck
    assert entry.startswith("ethereum:rollback:")
    assert "ethereum:0xp:0" in entry
    assert "rescanning from 13" in entry
    assert "not orphaned" in entry


def test_the_walk_stops_after_64_steps_and_falls_back_to_the_bound() -> None:
    """Cursor 100 (0xold100), F = 90 (0x5a), window 128, floor 0: the bound max(0, min(90, 100 - 128)) = 0. The node
    keeps the old fork 0xold21..0xold100, 0xold21's parent the canonical 20 (0x14): the fork at 20 is 80 steps down
    (100 .. 21). Before: 80 sequential batches (on Base, 1,800 at 10 s each outlast the 300 s timeout). Now: 64
    batches (0xold100 .. 0xold37), then the bound: (0, set())."""
    old = {f"0xold{n}": f"0xold{n - 1}" for n in range(22, 101)} | {"0xold21": "0x14"}
    rpc = Heights(old=old)
    stuck: list[str] = []

    found = _common_ancestor(
        rpc, Cursor("ethereum", 100, "0xold100"), [], BlockRef(90, "0x5a", 0), stuck, window=128, floor=0, still="0x64"
    )  # type: ignore[arg-type]

    assert (found, stuck) == ((0, set()), [])
    assert (len(rpc.walked), rpc.walked[-1]) == (64, "0xold37")  # 100 - 64 + 1 = 37


def test_a_floor_above_a_rewound_cursor_does_not_lift_the_rescan_above_the_cursor() -> None:
    """A cursor rewound by hand to 10 (0xold10, gone) whose first_block stayed 50: floor 49. F = 200 (0xc8), window
    128: before, the bound max(49, min(min(200, 10), 10 - 128)) = 49 - the rescan from 50, blocks 11..49 skipped.
    Review 5: at most the cursor, min(10, 49) = 10 - the rescan from 11, the cursor's own replaced block 10 skipped.
    Now below the cursor: min(10 - 1, 49) = 9, rescan from 10; no walk step (10 - 1 <= 9)."""
    rpc = Heights(old={"0xold10": "0x9"})
    stuck: list[str] = []

    found = _common_ancestor(
        rpc, Cursor("ethereum", 10, "0xold10"), [], FINALIZED, stuck, window=128, floor=49, still="0xa"
    )  # type: ignore[arg-type]

    assert (found, stuck, rpc.walked) == ((9, set()), [], [])


class BehindOnce(Heights):
    """The walk's first batch lands on a backend one block behind (head 999: nothing at 1000, the old block 0xold1000
    never seen); every later batch on one that has the new head ``0x3e8`` (1000) and still the old block."""

    def parent_beside(self, block_hash: str, numbers: Sequence[int]) -> tuple[str | None, dict[int, str | None]]:
        self.walked.append(block_hash)
        if len(self.walked) == 1:
            return None, {n: (f"0x{n:x}" if n <= 999 else None) for n in numbers}
        return self.old.get(block_hash), {n: f"0x{n:x}" for n in numbers}


def test_a_walk_step_answered_by_a_backend_one_block_behind_is_asked_again_not_sent_to_the_bound() -> None:
    """Ethereum: cursor 1000 (0xold1000), its old parent the canonical 999 (0x3e7), F = 930 (0x3a2), window 128, the
    run's ``still`` at 1000 is 0x3e8. The first step's backend is one block behind: 0x3a2 at F, nothing at 1000.
    Before: None != ``still`` sent the walk to the bound 1000 - 128 = 872 at once (rescan 873..1000: 128 blocks,
    silent). Now nothing at the cursor is "behind": the same step is asked again (two batches, both for 0xold1000);
    the retry answers ``still`` and 999 as 0xold1000's parent: (999, set()), rescan 1000 only."""
    rpc = BehindOnce(old={"0xold1000": "0x3e7"})  # 999 = 0x3e7
    stuck: list[str] = []

    found = _common_ancestor(
        rpc, Cursor("ethereum", 1000, "0xold1000"), [], BlockRef(930, "0x3a2", 0), stuck, window=128, still="0x3e8"
    )  # type: ignore[arg-type]  # 930 = 0x3a2, 1000 = 0x3e8

    assert (found, stuck, rpc.walked) == ((999, set()), [], ["0xold1000", "0xold1000"])


def test_a_zero_window_with_the_cursor_at_or_below_finalized_rescans_the_cursors_own_replaced_block() -> None:
    """Cursor 14 (0xold14, gone: the node dropped the old fork), F = 16 (0x10), window 0, no floor (-1). Before: the
    bound max(-1, min(min(16, 14), 14 - 0)) = 14 - the rescan from 15, the cursor's own replaced height 14 never
    read again (a payment re-mined there missed). Now the bound is below the cursor: min(14 - 1, 14) = 13, rescan
    from 14; no walk step (14 - 1 <= 13). (A window of 0 is refused in the settings too.)"""
    rpc = Heights()
    stuck: list[str] = []

    found = _common_ancestor(
        rpc, Cursor("ethereum", 14, "0xold14"), [], BlockRef(16, "0x10", 0), stuck, window=0, still="0xe"
    )  # type: ignore[arg-type]  # 16 = 0x10, 14 = 0xe

    assert (found, stuck, rpc.walked) == ((13, set()), [], [])
