"""Crypto settlement stories on the crypto table (moto, created from template.yaml): matching, the bill and quote
state machines, tolerances, overpayment, late payments, orphaning, events exactly once.

Hand-worked figures: a $100.00 bill; ETH locked at $2,500.00 asks 0.04 ETH = 40_000_000_000_000_000 wei; USDC is
locked at 1 and asks 100 USDC = 100_000_000 units. Tolerance: USDC min(0.5 %, $1) = $0.50 on $100; ETH 1 % = $1.00.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass, field, replace
from datetime import UTC, datetime, timedelta
from decimal import Decimal
from typing import Any

import pytest

from kilo_crypto_watch import items, logic
from kilo_crypto_watch.adapters import DynamoCryptoStore
from kilo_crypto_watch.history import account_history
from kilo_crypto_watch.model import (
    Asset,
    Bill,
    BillFlag,
    BillPayment,
    BillStatus,
    LockedRate,
    ObservedTransfer,
    Payment,
    PaymentStatus,
    Quote,
    QuoteStatus,
)
from kilo_crypto_watch.ports import AlreadyExistsError, ChainBlock, ConflictError, SettlementChange
from kilo_crypto_watch.quotes import QuotePolicy, quotable_usd
from kilo_crypto_watch.settlement import (
    AlreadyClaimedError,
    ClaimRefusedError,
    NoQuoteError,
    NotAssignableError,
    NotUnderReviewError,
    Settlement,
    SettlementPolicy,
    remaining_usd,
)
from kilo_crypto_watch.wallets import SignInPolicy
from tests.conftest import Stack
from tests.crypto_core_fakes import (
    CHAINS,
    CUSTOMER_WALLET,
    STRANGER_WALLET,
    T0,
    FixedRates,
    Harness,
    bill,
    billed,
    harness,
    quote,
    quote_statuses,
    transfer,
)
from tests.fakes import RecordingPublisher

ETH_QUOTE = 40_000_000_000_000_000
USDC_QUOTE = 100_000_000
SEEN = "CryptoPaymentSeen.v1"
SETTLED = "CryptoBillSettled.v1"
UNATTRIBUTED = "UnattributedCryptoPayment.v1"


@pytest.fixture
def h(stack: Stack) -> Harness:
    quotes = [quote("q-usdc", "USDC", USDC_QUOTE, "1"), quote("q-eth", "ETH", ETH_QUOTE, "2500.00")]
    return billed(stack, quotes, T0 + timedelta(minutes=5))


def test_given_an_exact_usdc_payment_from_the_linked_wallet_when_seen_then_final_then_the_bill_is_paid_once(
    h: Harness,
) -> None:
    paid = transfer("0xaa", "USDC", USDC_QUOTE, T0 + timedelta(minutes=4))
    h.settlement.record_seen(paid)

    processing = h.store.bill("inv-1")
    assert processing is not None
    assert processing.status is BillStatus.PROCESSING
    assert processing.flags == frozenset()
    assert quote_statuses(h) == {"q-usdc": QuoteStatus.DETECTED, "q-eth": QuoteStatus.ACTIVE}
    [seen] = h.events(SEEN)
    assert (seen["account_id"], seen["invoice_id"], seen["quote_id"]) == ("acct-1", "inv-1", "q-usdc")
    assert (seen["amount"], seen["amount_usd"], seen["asset"]) == ("100", "100.00", "USDC")
    assert seen["explorer_url"] == "https://etherscan.io/tx/0xaa"
    assert seen["event_id"] == "crypto-seen:ethereum:0xaa:0"
    assert [p.payment_id for p in h.settlement.pending("ethereum")] == ["ethereum:0xaa:0"]
    assert h.events(SETTLED) == []

    h.settlement.finalized("ethereum:0xaa:0")
    h.settlement.finalized("ethereum:0xaa:0")  # a rerun: nothing more
    h.settlement.record_seen(paid)  # the watcher sees it again: nothing more

    final = h.store.bill("inv-1")
    assert final is not None
    assert final.status is BillStatus.PAID
    assert (final.settled_usd, final.written_off_usd, final.credit_usd) == (Decimal("100.00"), 0, 0)
    assert quote_statuses(h)["q-usdc"] is QuoteStatus.COMPLETED
    assert h.settlement.pending("ethereum") == []
    [settled] = h.events(SETTLED)
    assert settled["event_id"] == "crypto-settled:inv-1"
    assert (settled["total"], settled["settled_usd"], settled["written_off_usd"], settled["credit_usd"]) == (
        "100.00",
        "100.00",
        "0.00",
        "0.00",
    )
    assert settled["tx_ids"] == ["0xaa"]
    assert settled["flags"] == []
    assert len(h.events(SEEN)) == 1


@pytest.mark.parametrize(
    ("total", "asset", "atomic", "status", "written_off", "flags"),
    [
        # USDC on $100: tolerance min($0.50, $1) = $0.50
        ("100.00", "USDC", 99_600_000, BillStatus.PAID, "0.40", {BillFlag.PARTIAL}),
        ("100.00", "USDC", 99_500_000, BillStatus.PAID, "0.50", {BillFlag.PARTIAL}),
        ("100.00", "USDC", 99_490_000, BillStatus.OPEN, "0.00", {BillFlag.PARTIAL}),
        # USDC on $400: 0.5 % = $2.00, capped at $1.00
        ("400.00", "USDC", 399_000_000, BillStatus.PAID, "1.00", {BillFlag.PARTIAL}),
        ("400.00", "USDC", 398_990_000, BillStatus.OPEN, "0.00", {BillFlag.PARTIAL}),
        # ETH at $2,500 on $100: 1 % = $1.00; 0.0396 ETH = $99.00, 0.0395 ETH = $98.75
        ("100.00", "ETH", 39_600_000_000_000_000, BillStatus.PAID, "1.00", {BillFlag.PARTIAL}),
        ("100.00", "ETH", 39_500_000_000_000_000, BillStatus.OPEN, "0.00", {BillFlag.PARTIAL}),
    ],
)
def test_given_an_underpayment_when_final_then_paid_inside_tolerance_with_the_shortfall_written_off(
    stack: Stack,
    total: str,
    asset: str,
    atomic: int,
    status: BillStatus,
    written_off: str,
    flags: set[BillFlag],
) -> None:
    h = harness(stack)
    h.store.link_wallet("evm", CUSTOMER_WALLET, "acct-1", "ethereum", T0)
    h.store.create_bill(bill(total=total))
    if asset == "USDC":
        h.store.add_quote(quote("q", "USDC", int(Decimal(total) * 10**6), "1", amount_usd=total))
    else:
        h.store.add_quote(quote("q", "ETH", ETH_QUOTE, "2500.00"))
    h.clock.now = T0 + timedelta(minutes=5)
    h.settlement.record_seen(transfer("0xbb", asset, atomic, T0 + timedelta(minutes=4)))  # type: ignore[arg-type]
    h.settlement.finalized("ethereum:0xbb:0")

    final = h.store.bill("inv-1")
    assert final is not None
    assert (final.status, final.written_off_usd, set(final.flags)) == (status, Decimal(written_off), flags)
    assert len(h.events(SETTLED)) == (1 if status is BillStatus.PAID else 0)


def _short_then_rest(stack: Stack) -> Harness:
    """The $100.00 bill paid 99.60 USDC (an exchange's fee taken: inside the $0.50 band) and the 0.40 the dashboard
    still showed, on its own quote; both seen."""
    h = billed(
        stack,
        [quote("q-usdc", "USDC", USDC_QUOTE, "1"), quote("q-rest", "USDC", 400_000, "1", amount_usd="0.40")],
        T0 + timedelta(minutes=5),
    )
    h.settlement.record_seen(transfer("0xa1", "USDC", 99_600_000, T0 + timedelta(minutes=3)))
    h.settlement.record_seen(transfer("0xa2", "USDC", 400_000, T0 + timedelta(minutes=4)))
    return h


@pytest.mark.parametrize("order", [("0xa1", "0xa2"), ("0xa2", "0xa1")])
def test_given_a_short_payment_and_its_top_up_then_paid_in_full_whichever_finalizes_first(
    stack: Stack, order: tuple[str, str]
) -> None:
    """D387. 99.60 + 0.40 = 100.00 for the $100.00 bill: PAID, nothing written off, no credit, in either order.
    Before: 99.60 final first made the bill PAID with 0.40 written off, then the 0.40 became 0.40 of credit."""
    h = _short_then_rest(stack)
    h.settlement.finalized(f"ethereum:{order[0]}:0")
    waiting = h.store.bill("inv-1")
    assert waiting is not None
    assert waiting.status is BillStatus.PROCESSING  # a write-off waits for the payment still SEEN

    h.settlement.finalized(f"ethereum:{order[1]}:0")

    final = h.store.bill("inv-1")
    assert final is not None
    assert (final.status, final.settled_usd, final.written_off_usd, final.credit_usd) == (
        BillStatus.PAID,
        Decimal("100.00"),
        Decimal("0.00"),
        Decimal("0.00"),
    )
    [settled] = h.events(SETTLED)
    assert (settled["written_off_usd"], settled["credit_usd"]) == ("0.00", "0.00")
    assert h.events("CryptoCreditAdded.v1") == []


def test_given_a_short_payment_whose_top_up_is_orphaned_then_paid_with_the_shortfall_written_off(
    stack: Stack,
) -> None:
    """D387: the wait ends when the other payment stops counting - 99.60 final, the 0.40 orphaned: PAID, 0.40
    written off (inside the $0.50 band)."""
    h = _short_then_rest(stack)
    h.settlement.finalized("ethereum:0xa1:0")
    h.settlement.orphaned("ethereum:0xa2:0", "0xblock")

    final = h.store.bill("inv-1")
    assert final is not None
    assert final.status is BillStatus.PAID
    assert (final.written_off_usd, final.credit_usd) == (Decimal("0.40"), Decimal("0.00"))


def test_given_a_short_payment_whose_top_up_is_stuck_then_paid_with_the_write_off_and_the_top_up_pays_it_later(
    stack: Stack,
) -> None:
    """D398: 99.60 final, the 0.40 named stuck by its watcher (``stalled``): it no longer holds the write-off -
    PAID, 99.60 settled, 0.40 written off, told once (a second report changes nothing). It finalizes after all: it
    pays the write-off (D387), 0.00 written off, 0.00 credit. Before: PROCESSING for as long as it was stuck."""
    h = _short_then_rest(stack)
    h.settlement.finalized("ethereum:0xa1:0")
    held = h.store.bill("inv-1")
    assert held is not None
    assert held.status is BillStatus.PROCESSING

    h.settlement.stalled("ethereum:0xa2:0")
    h.settlement.stalled("ethereum:0xa2:0")

    paid = h.store.bill("inv-1")
    assert paid is not None
    assert (paid.status, paid.settled_usd, paid.written_off_usd, paid.credit_usd) == (
        BillStatus.PAID,
        Decimal("99.60"),
        Decimal("0.40"),
        Decimal("0.00"),
    )
    assert len(h.events(SETTLED)) == 1
    assert {line.tx_id: line.stalled for line in paid.payments} == {"0xa1": False, "0xa2": True}  # as stored
    assert [p.payment_id for p in h.settlement.pending("ethereum")] == ["ethereum:0xa2:0"]  # still watched
    h.settlement.finalized("ethereum:0xa2:0")
    final = h.store.bill("inv-1")
    assert final is not None
    assert (final.status, final.written_off_usd, final.credit_usd) == (
        BillStatus.PAID,
        Decimal("0.00"),
        Decimal("0.00"),
    )


class MovedUnderStore(DynamoCryptoStore):
    """The crypto table on moto; the first write of a bill holding a stalled line lets ``under`` (another watcher's
    step: the payment seen in another block) write first - between the stalled step's reads and its write."""

    under: Callable[[], None] | None = None

    def save(self, change: SettlementChange) -> None:
        if self.under is not None and change.bill is not None and any(line.stalled for line in change.bill.payments):
            under, self.under = self.under, None
            under()
        super().save(change)


def test_given_a_stalled_report_when_its_payment_moves_to_another_block_meanwhile_then_the_move_stands(
    stack: Stack,
) -> None:
    """Review rcr 2. The 0.40 top-up is named stuck at block 100 (``0xblock``); before ``stalled`` writes, another
    run records it seen at block 101 (``0xblock-b``, its transaction re-included). Before: ``stalled`` wrote back the
    payment it had read - stored at 100 again, the move undone - and the bill PAID with 0.40 written off for a
    payment at a block nobody named stuck. Now the write is conditional on the block it read: it conflicts, and the
    retry finds the payment moved since: the move stands (SEEN at 101), the bill PROCESSING, nothing written off."""
    h = _short_then_rest(stack)
    h.settlement.finalized("ethereum:0xa1:0")
    store = MovedUnderStore(stack.clients["dynamodb"], stack.template.physical_name("CryptoTable"))
    watcher = Settlement(store, h.published, CHAINS, h.rates, clock=h.clock)
    rest = transfer("0xa2", "USDC", 400_000, T0 + timedelta(minutes=4))
    store.under = lambda: h.settlement.record_seen(replace(rest, block_number=101, block_hash="0xblock-b"))

    watcher.stalled("ethereum:0xa2:0")

    assert store.under is None  # the move did land under the stalled step
    payment = h.store.payment("ethereum:0xa2:0")
    assert payment is not None
    assert (payment.status, payment.transfer.block_number, payment.transfer.block_hash) == (
        PaymentStatus.SEEN,
        101,
        "0xblock-b",
    )
    held = h.store.bill("inv-1")
    assert held is not None
    assert (held.status, held.written_off_usd) == (BillStatus.PROCESSING, Decimal("0.00"))
    assert {line.tx_id: line.stalled for line in held.payments} == {"0xa1": False, "0xa2": False}
    assert h.events(SETTLED) == []


def test_given_a_stalled_report_for_a_block_the_payment_has_left_then_nothing_is_stalled(stack: Stack) -> None:
    """Review rcr 2, the move landing before the stalled step's first read: the watcher named the 0.40 stuck at
    ``0xblock``; it is stored at ``0xblock-b`` (101) by then. ``stalled(id, "0xblock")`` leaves it, as ``orphaned``
    does: the new block is checked by the next run. Before: stalled at its new block - PAID, 0.40 written off."""
    h = _short_then_rest(stack)
    h.settlement.finalized("ethereum:0xa1:0")
    rest = transfer("0xa2", "USDC", 400_000, T0 + timedelta(minutes=4))
    h.settlement.record_seen(replace(rest, block_number=101, block_hash="0xblock-b"))

    h.settlement.stalled("ethereum:0xa2:0", "0xblock")

    held = h.store.bill("inv-1")
    assert held is not None
    assert (held.status, held.written_off_usd) == (BillStatus.PROCESSING, Decimal("0.00"))
    assert {line.tx_id: line.stalled for line in held.payments} == {"0xa1": False, "0xa2": False}
    assert h.events(SETTLED) == []


def _short_beyond_band_stuck(stack: Stack) -> Harness:
    """The $100.00 bill paid 60.00 USDC (final) and 40.00 USDC its watcher named stuck (``stalled``): the final
    payments are 40.00 short, beyond the $0.50 band."""
    h = billed(stack, [quote("q-usdc", "USDC", USDC_QUOTE, "1")], T0 + timedelta(minutes=5))
    h.settlement.record_seen(transfer("0xc1", "USDC", 60_000_000, T0 + timedelta(minutes=3)))
    h.settlement.record_seen(transfer("0xc2", "USDC", 40_000_000, T0 + timedelta(minutes=4)))
    h.settlement.finalized("ethereum:0xc1:0")
    held = h.store.bill("inv-1")
    assert held is not None
    assert (held.status, remaining_usd(held)) == (BillStatus.PROCESSING, Decimal("0.00"))  # covered while seen
    h.settlement.stalled("ethereum:0xc2:0")
    return h


def test_given_a_stuck_payment_the_bill_needs_beyond_its_band_then_the_customer_is_asked_for_the_rest(
    stack: Stack,
) -> None:
    """D419 (D398's limit lifted): 60.00 USDC final and 40.00 stuck - the stuck payment no longer holds the bill:
    OPEN, PARTIAL, a new quote asks 100.00 - 60.00 = 40.00, nothing written off, nothing told. The customer pays the
    rest (40.00 USDC, final): PAID, 60.00 + 40.00 = 100.00 settled, 0.00 off, 0.00 credit, told once. The stuck
    40.00 finalizes after all: a paid bill's later final payment is credit, 40.00, OVERPAID (never lost, never
    counted twice). Before: PROCESSING, 0.00 asked, for as long as the payment was stuck. The customer asks for a
    quote as the API does (``logic.create_quote``): a new USDC quote of 40.00 (40,000,000 units at $1.00), which the
    rest pays."""
    h = _short_beyond_band_stuck(stack)

    short = h.store.bill("inv-1")
    assert short is not None
    assert (short.status, short.written_off_usd) == (BillStatus.OPEN, Decimal("0.00"))
    assert BillFlag.PARTIAL in short.flags
    assert h.events(SETTLED) == []
    assert quotable_usd(short) == Decimal("40.00")  # what a new quote asks: 100.00 - 60.00
    h.rates.prices["USDC"] = Decimal("1")
    ports = logic.ApiPorts(
        h.store,
        h.settlement,
        h.rates,
        CHAINS,
        lambda chain: None,  # type: ignore[arg-type,return-value]
        QuotePolicy(),
        SignInPolicy("x", "y"),
        new_id=lambda: "q-rest",
    )
    rest = logic.create_quote(ports, "acct-1", "inv-1", "ethereum", "USDC", h.clock.now)
    assert (rest.quote_id, rest.amount_usd, rest.atomic_amount) == ("q-rest", Decimal("40.00"), 40_000_000)

    h.clock.now = T0 + timedelta(minutes=6)
    h.settlement.record_seen(transfer("0xc3", "USDC", rest.atomic_amount, h.clock.now))
    h.settlement.finalized("ethereum:0xc3:0")
    assert h.store.payment("ethereum:0xc3:0").quote_id == "q-rest"  # type: ignore[union-attr]
    assert quote_statuses(h)["q-rest"] is QuoteStatus.COMPLETED

    paid = h.store.bill("inv-1")
    assert paid is not None
    assert (paid.status, paid.settled_usd, paid.written_off_usd, paid.credit_usd) == (
        BillStatus.PAID,
        Decimal("100.00"),
        Decimal("0.00"),
        Decimal("0.00"),
    )
    assert BillFlag.PARTIAL not in paid.flags
    assert [e["settled_usd"] for e in h.events(SETTLED)] == ["100.00"]

    h.settlement.finalized("ethereum:0xc2:0")

    final = h.store.bill("inv-1")
    assert final is not None
    assert (final.status, final.settled_usd, final.written_off_usd, final.credit_usd) == (
        BillStatus.PAID,
        Decimal("100.00"),
        Decimal("0.00"),
        Decimal("40.00"),
    )
    assert BillFlag.OVERPAID in final.flags
    assert [e["credit_usd"] for e in h.events("CryptoCreditAdded.v1")] == ["40.00"]


def test_given_a_stuck_payment_then_the_history_shows_it_stuck_beside_an_open_bill(stack: Stack) -> None:
    """D419, amended (cw2): 60.00 final, 40.00 stuck, the bill OPEN asking 40.00. The customer's history shows the
    stuck payment as stuck (``stalled``) and the final one as not; each shows its own USD (the bill counts only the
    60.00 toward what it asks). Before: no ``stalled`` - 60.00 + 40.00 SEEN beside a bill asking 40.00, no sign why."""
    h = _short_beyond_band_stuck(stack)

    history = account_history(*h.store.account_history("acct-1"), CHAINS, h.clock.now)

    shown = {p["payment_id"]: (p["status"], p["amount_usd"], p["stalled"]) for p in history["payments"]}
    assert shown == {
        "ethereum:0xc1:0": ("FINALIZED", "60.00", False),
        "ethereum:0xc2:0": ("SEEN", "40.00", True),
    }
    [open_bill] = history["bills"]
    assert (open_bill["status"], open_bill["flags"]) == ("OPEN", ["MULTIPLE", "PARTIAL"])


def test_given_a_stuck_payment_seen_again_in_another_block_then_it_holds_its_bill_again(stack: Stack) -> None:
    """D419, amended (cw2): 60.00 final, 40.00 stuck (OPEN, 40.00 asked); the watcher sees the stuck transaction
    mined in another block (200, ``0xnew``): the block named stuck is gone, the payment is on its way again and
    covers the bill as any SEEN payment - PROCESSING, 0.00 asked, no PARTIAL; named stuck there later, it is released
    again. Before: the line kept ``stalled`` from the old block - OPEN asking 40.00 for money on its way (a second
    payment, then credit)."""
    h = _short_beyond_band_stuck(stack)
    moved = replace(
        transfer("0xc2", "USDC", 40_000_000, T0 + timedelta(minutes=4)), block_number=200, block_hash="0xnew"
    )

    h.settlement.record_seen(moved)

    again = h.store.bill("inv-1")
    assert again is not None
    assert (again.status, remaining_usd(again)) == (BillStatus.PROCESSING, Decimal("0.00"))
    assert BillFlag.PARTIAL not in again.flags
    assert [line.stalled for line in again.payments if line.payment_id == "ethereum:0xc2:0"] == [False]

    h.settlement.stalled("ethereum:0xc2:0", "0xnew")

    released = h.store.bill("inv-1")
    assert released is not None
    assert (released.status, remaining_usd(released)) == (BillStatus.OPEN, Decimal("40.00"))


REOPENED = "CryptoBillReopened.v1"


def test_given_a_stuck_payment_releasing_a_bill_short_beyond_its_band_then_the_customer_is_told_once(
    stack: Stack,
) -> None:
    """D434: 60.00 final, 40.00 stuck - the bill OPEN asking 100.00 - 60.00 = 40.00. The customer is told once
    (``CryptoBillReopened.v1``): the 40.00 asked, the bill's 100.00, the stuck 40.00 and its transaction, the
    invoice's number (the dashboard opens the bill by it); the watcher naming the payment stuck again next run
    publishes nothing more. Before: nothing published (D419's limit)."""
    h = _short_beyond_band_stuck(stack)
    h.settlement.stalled("ethereum:0xc2:0", "0xblock")  # the next run names it stuck again: nothing more

    assert h.events(REOPENED) == [
        {
            "schema_version": 1,
            "event_id": "crypto-reopened:inv-1:ethereum:0xc2:0@0xblock",
            "account_id": "acct-1",
            "invoice_id": "inv-1",
            "total": "100.00",
            "amount_usd": "40.00",  # 100.00 - 60.00
            "stuck_usd": "40.00",  # 40,000,000 units at $1.00
            "stuck_tx_ids": ["0xc2"],
            "occurred_at": (T0 + timedelta(minutes=5)).isoformat(),
            "number": "KB-inv-1",
        }
    ]
    assert h.events(SETTLED) == []


def test_given_a_bills_only_payment_stuck_then_the_customer_is_told_its_whole_total_is_asked_again(
    stack: Stack,
) -> None:
    """D434, D435: the $100.00 bill's only payment (100.00 USDC, seen) is named stuck - OPEN, PARTIAL, the
    whole 100.00 asked again, and the event says so: amount 100.00, stuck 100.00. Before: nothing published."""
    h = billed(stack, [quote("q-usdc", "USDC", USDC_QUOTE, "1")], T0 + timedelta(minutes=5))
    h.settlement.record_seen(transfer("0xc1", "USDC", 100_000_000, T0 + timedelta(minutes=3)))

    h.settlement.stalled("ethereum:0xc1:0")

    short = h.store.bill("inv-1")
    assert short is not None
    assert (short.status, remaining_usd(short)) == (BillStatus.OPEN, Decimal("100.00"))
    [told] = h.events(REOPENED)
    assert (told["event_id"], told["total"], told["amount_usd"], told["stuck_usd"], told["stuck_tx_ids"]) == (
        "crypto-reopened:inv-1:ethereum:0xc1:0@0xblock",
        "100.00",
        "100.00",
        "100.00",
        ["0xc1"],
    )


def test_given_a_stuck_payment_seen_again_elsewhere_and_stuck_there_too_then_each_reopen_is_told_once(
    stack: Stack,
) -> None:
    """D434: stuck at 0xblock (told: 40.00), seen again in block 200 (``0xnew``: PROCESSING, nothing told), stuck
    there too (OPEN again: told again, another event id - a consumer deduping by id sends both); named stuck at
    0xnew again: nothing more."""
    h = _short_beyond_band_stuck(stack)
    moved = replace(
        transfer("0xc2", "USDC", 40_000_000, T0 + timedelta(minutes=4)), block_number=200, block_hash="0xnew"
    )
    h.settlement.record_seen(moved)
    assert len(h.events(REOPENED)) == 1

    h.settlement.stalled("ethereum:0xc2:0", "0xnew")
    h.settlement.stalled("ethereum:0xc2:0", "0xnew")

    assert [(e["event_id"], e["amount_usd"]) for e in h.events(REOPENED)] == [
        ("crypto-reopened:inv-1:ethereum:0xc2:0@0xblock", "40.00"),
        ("crypto-reopened:inv-1:ethereum:0xc2:0@0xnew", "40.00"),
    ]


def test_given_the_bus_down_for_a_reopen_then_the_next_run_tells_the_customer_once(stack: Stack) -> None:
    """D434 amended (gcw): 60.00 final, 40.00 named stuck - the bill is saved OPEN asking 40.00, and publishing its
    ``CryptoBillReopened.v1`` fails (nothing published). The next run (the watcher naming the payment stuck again,
    then its sweep of what is due) publishes the notice once: 40.00 asked, 40.00 stuck, its id naming the payment
    and block; a further run nothing more, and the bill leaves the announcement list. Before: the next run found the
    line stalled already and returned - the customer was never told."""
    h = billed(stack, [quote("q-usdc", "USDC", USDC_QUOTE, "1")], T0 + timedelta(minutes=5))
    publisher = FailingPublisher()
    h = replace(h, published=publisher, settlement=Settlement(h.store, publisher, CHAINS, h.rates, clock=h.clock))
    h.settlement.record_seen(transfer("0xc1", "USDC", 60_000_000, T0 + timedelta(minutes=3)))
    h.settlement.record_seen(transfer("0xc2", "USDC", 40_000_000, T0 + timedelta(minutes=4)))
    h.settlement.finalized("ethereum:0xc1:0")

    publisher.down = True
    with pytest.raises(CrashError):
        h.settlement.stalled("ethereum:0xc2:0")
    assert h.events(REOPENED) == []
    publisher.down = False
    h.settlement.stalled("ethereum:0xc2:0", "0xblock")  # the next run
    h.settlement.announce_due()
    h.settlement.stalled("ethereum:0xc2:0", "0xblock")  # a further run
    h.settlement.announce_due()

    told = [(e["event_id"], e["amount_usd"], e["stuck_usd"], e["stuck_tx_ids"]) for e in h.events(REOPENED)]
    assert told == [("crypto-reopened:inv-1:ethereum:0xc2:0@0xblock", "40.00", "40.00", ["0xc2"])]
    assert h.store.bills_to_announce() == []


def test_given_two_payments_stuck_one_after_the_other_then_the_second_reopen_sums_both_and_names_both(
    stack: Stack,
) -> None:
    """D434 amended (fcw), the event the alert's plural reads: 30.00 final, 30.00 and 40.00 seen; 30.00 named stuck
    (OPEN, 100.00 - 30.00 - 40.00 = 30.00 asked: told, 30.00 stuck), then 40.00 (70.00 asked: told again, 30.00 +
    40.00 = 70.00 stuck, both transactions) - the sum of every stuck line, so the alert says "payments ... in all".
    A guard: passes before (the wording was the fault)."""
    h = billed(stack, [quote("q-usdc", "USDC", USDC_QUOTE, "1")], T0 + timedelta(minutes=5))
    h.settlement.record_seen(transfer("0xc1", "USDC", 30_000_000, T0 + timedelta(minutes=2)))
    h.settlement.record_seen(transfer("0xc2", "USDC", 30_000_000, T0 + timedelta(minutes=3)))
    h.settlement.record_seen(transfer("0xc3", "USDC", 40_000_000, T0 + timedelta(minutes=4)))
    h.settlement.finalized("ethereum:0xc1:0")

    h.settlement.stalled("ethereum:0xc2:0")
    h.settlement.stalled("ethereum:0xc3:0")

    told = [(e["amount_usd"], e["stuck_usd"], e["stuck_tx_ids"]) for e in h.events(REOPENED)]
    assert told == [("30.00", "30.00", ["0xc2"]), ("70.00", "70.00", ["0xc2", "0xc3"])]


def _unix(at: datetime) -> int:
    """Seconds since 1970-01-01 UTC: a lost payment's notice id ends in its due time so (D434 amended (hcw))."""
    return (at - datetime(1970, 1, 1, tzinfo=UTC)) // timedelta(seconds=1)


def _covered_by_a_seen_rest(stack: Stack) -> Harness:
    """The $100.00 bill paid 60.00 USDC (final) and 40.00 USDC seen in block 100 (``0xblock``): PROCESSING, 0.00
    asked."""
    h = billed(stack, [quote("q-usdc", "USDC", USDC_QUOTE, "1")], T0 + timedelta(minutes=5))
    h.settlement.record_seen(transfer("0xc1", "USDC", 60_000_000, T0 + timedelta(minutes=3)))
    h.settlement.record_seen(transfer("0xc2", "USDC", 40_000_000, T0 + timedelta(minutes=4)))
    h.settlement.finalized("ethereum:0xc1:0")
    held = h.store.bill("inv-1")
    assert held is not None
    assert (held.status, remaining_usd(held)) == (BillStatus.PROCESSING, Decimal("0.00"))
    return h


def test_given_a_seen_payment_orphaned_and_mined_again_in_the_same_run_then_nothing_is_told(stack: Stack) -> None:
    """D434 amended (hcw): 60.00 final, 40.00 seen in 0xblock; that block is reorged away (``orphaned``) - the bill
    goes OPEN asking 100.00 - 60.00 = 40.00 and owes the notice, but an orphaning's notice is not published inline
    (a reorged-out transaction normally returns to the mempool and is mined again): nothing told, the sweep at once
    tells nothing either (block 100 not final yet: the chain finalized through 99, D449). The transaction
    re-included in 0xnew: PROCESSING, the owed notice cleared silently; final there: PAID and the usual settled
    notice once (100.00), never a reopen. Before: "your payment was dropped" told at the orphaning."""
    h = _covered_by_a_seen_rest(stack)

    h.settlement.orphaned("ethereum:0xc2:0", "0xblock")
    h.settlement.orphaned("ethereum:0xc2:0", "0xblock")  # the next run reports it again: nothing more
    h.settlement.announce_due({"ethereum": 99})

    reopened = h.store.bill("inv-1")
    assert reopened is not None
    assert (reopened.status, remaining_usd(reopened), len(reopened.reopens_owed)) == (
        BillStatus.OPEN,
        Decimal("40.00"),
        1,
    )
    assert h.events(REOPENED) == []

    moved = replace(
        transfer("0xc2", "USDC", 40_000_000, T0 + timedelta(minutes=4)), block_number=201, block_hash="0xnew"
    )
    h.settlement.record_seen(moved)
    again = h.store.bill("inv-1")
    assert again is not None
    assert (again.status, again.reopens_owed) == (BillStatus.PROCESSING, ())
    h.clock.now += timedelta(hours=1)
    h.settlement.finalized("ethereum:0xc2:0", "0xnew")
    h.settlement.announce_due()

    assert [e["settled_usd"] for e in h.events(SETTLED)] == ["100.00"]
    assert h.events(REOPENED) == []


def test_given_a_seen_payment_orphaned_and_still_gone_once_its_block_is_final_then_the_customer_is_told_once(
    stack: Stack,
) -> None:
    """D434 amended (hcw), D449: 40.00 seen in block 100 (0xblock), orphaned at T0+5 min, never mined again. An hour
    on, its chain finalized through 99 (one block short of 100: the reorg could still be undone): nothing told, nor
    by a sweep without ethereum's height (another chain's run). Finalized through 100: the sweep tells it once - its
    id naming the payment, the block it left and when it was dropped, ``lost`` "dropped", the payment's 40.00
    (40,000,000 units at $1.00) and transaction, no stuck payment, asking 40.00. Swept again: nothing more.
    Before D449: told 768 s after the drop whatever the chain's finality."""
    h = _covered_by_a_seen_rest(stack)
    h.settlement.orphaned("ethereum:0xc2:0", "0xblock")

    h.clock.now = T0 + timedelta(hours=1, minutes=5)
    h.settlement.announce_due({"ethereum": 99})
    h.settlement.announce_due({"base": 5_000})
    h.settlement.announce_due()
    assert h.events(REOPENED) == []

    h.settlement.announce_due({"ethereum": 100})
    h.settlement.announce_due({"ethereum": 101})

    assert h.events(REOPENED) == [
        {
            "schema_version": 1,
            "event_id": f"crypto-reopened:inv-1:ethereum:0xc2:0@0xblock/{_unix(T0 + timedelta(minutes=5))}",
            "account_id": "acct-1",
            "invoice_id": "inv-1",
            "total": "100.00",
            "amount_usd": "40.00",
            "stuck_usd": "0.00",
            "stuck_tx_ids": [],
            "occurred_at": (T0 + timedelta(hours=1, minutes=5)).isoformat(),
            "number": "KB-inv-1",
            "lost": "dropped",
            "lost_usd": "40.00",
            "lost_tx_id": "0xc2",
        }
    ]
    assert h.store.bills_to_announce() == []


def test_given_a_dropped_payment_and_no_final_height_of_its_chain_then_768_s_and_a_day_later_nothing_is_told(
    stack: Stack,
) -> None:
    """D449: 40.00 seen in block 100 dropped at T0+5 min; the sweep runs 768 s later and a day later without
    ethereum's final height (a run that could not read it, or another chain's run): nothing told, the notice still
    owed (the bill on the announcement list). Before: told at 768 s of wall clock, finality delayed or not."""
    h = _covered_by_a_seen_rest(stack)
    h.settlement.orphaned("ethereum:0xc2:0", "0xblock")

    h.clock.now = T0 + timedelta(minutes=5, seconds=768)
    h.settlement.announce_due()
    h.clock.now = T0 + timedelta(days=1, minutes=5)
    h.settlement.announce_due()

    assert h.events(REOPENED) == []
    owed = h.store.bill("inv-1")
    assert owed is not None
    assert [entry.partition(";")[0] for entry in owed.reopens_owed] == ["ethereum:0xc2:0@0xblock"]
    assert [bill.invoice_id for bill in h.store.bills_to_announce()] == ["inv-1"]


def test_given_a_drop_owed_in_the_form_stored_before_d449_then_it_is_told_by_its_time_under_its_old_id(
    stack: Stack,
) -> None:
    """D449, reading what the code before it stored: the owed entry ``...;dropped;<due>`` (due = the drop + 768 s,
    no height) is told by that time as it was promised - not at 767 s even with block 100 final, at 768 s with no
    height given - under the id the old code would have given it (``/<due, Unix seconds>``)."""
    h = _covered_by_a_seen_rest(stack)
    h.settlement.orphaned("ethereum:0xc2:0", "0xblock")
    due = T0 + timedelta(minutes=5, seconds=768)
    stack.clients["dynamodb"].update_item(
        TableName=stack.template.physical_name("CryptoTable"),
        Key=items.key(items.bill_pk("inv-1"), "BILL"),
        UpdateExpression="SET reopens_owed = :owed",
        ExpressionAttributeValues={":owed": {"L": [{"S": f"ethereum:0xc2:0@0xblock;dropped;{due.isoformat()}"}]}},
    )

    h.clock.now = due - timedelta(seconds=1)
    h.settlement.announce_due({"ethereum": 100})
    assert h.events(REOPENED) == []
    h.clock.now = due
    h.settlement.announce_due()
    h.settlement.announce_due()

    told = [(e["event_id"], e["amount_usd"], e["lost"], e["lost_usd"]) for e in h.events(REOPENED)]
    assert told == [(f"crypto-reopened:inv-1:ethereum:0xc2:0@0xblock/{_unix(due)}", "40.00", "dropped", "40.00")]


def test_given_two_payments_orphaned_and_one_mined_again_while_the_bill_stays_open_then_only_the_other_is_told(
    stack: Stack,
) -> None:
    """D434 amended (hcw): 30.00 final, 30.00 (0xc2) and 40.00 (0xc3) seen; both blocks reorged away (OPEN, asking
    70.00), 0xc2 mined again in 0xnew (OPEN still, asking 40.00: 0xc3 is gone). Once block 100 is final: only 0xc3's
    notice is told (its 40.00), 0xc2's cleared - it counts again though the bill stays OPEN."""
    h = billed(stack, [quote("q-usdc", "USDC", USDC_QUOTE, "1")], T0 + timedelta(minutes=5))
    h.settlement.record_seen(transfer("0xc1", "USDC", 30_000_000, T0 + timedelta(minutes=3)))
    h.settlement.record_seen(transfer("0xc2", "USDC", 30_000_000, T0 + timedelta(minutes=4)))
    h.settlement.record_seen(transfer("0xc3", "USDC", 40_000_000, T0 + timedelta(minutes=4)))
    h.settlement.finalized("ethereum:0xc1:0")
    h.settlement.orphaned("ethereum:0xc2:0", "0xblock")
    h.settlement.orphaned("ethereum:0xc3:0", "0xblock")
    moved = replace(
        transfer("0xc2", "USDC", 30_000_000, T0 + timedelta(minutes=4)), block_number=201, block_hash="0xnew"
    )
    h.settlement.record_seen(moved)
    still = h.store.bill("inv-1")
    assert still is not None
    assert (still.status, remaining_usd(still)) == (BillStatus.OPEN, Decimal("40.00"))

    h.settlement.announce_due({"ethereum": 100})  # block 100, which both were dropped from, final

    told = [(e["event_id"], e["amount_usd"], e["lost_usd"], e["lost_tx_id"]) for e in h.events(REOPENED)]
    dropped = _unix(T0 + timedelta(minutes=5))
    assert told == [(f"crypto-reopened:inv-1:ethereum:0xc3:0@0xblock/{dropped}", "40.00", "40.00", "0xc3")]
    assert h.store.bills_to_announce() == []


def test_given_a_seen_payment_failing_in_its_new_block_then_the_customer_is_told_the_bill_asks_again_once(
    stack: Stack,
) -> None:
    """D434 amended (hcw): 60.00 final, 40.00 seen in 0xblock; the transaction re-included in 0xnew reverts there
    (``_rebased`` -> FAILED) - the bill goes OPEN asking 40.00, told once: its id names the payment and the new block,
    ``lost`` "failed", 40.00, its transaction. Reported failed in 0xnew again: nothing more. Before: nothing told."""
    h = _covered_by_a_seen_rest(stack)
    reverted = replace(
        transfer("0xc2", "USDC", 40_000_000, T0 + timedelta(minutes=4), succeeded=False),
        block_number=201,
        block_hash="0xnew",
    )

    h.settlement.record_seen(reverted)
    h.settlement.record_seen(reverted)  # the next run sees it again: nothing more

    reopened = h.store.bill("inv-1")
    assert reopened is not None
    assert (reopened.status, remaining_usd(reopened)) == (BillStatus.OPEN, Decimal("40.00"))
    told = [
        (e["event_id"], e["amount_usd"], e["stuck_usd"], e["stuck_tx_ids"], e["lost"], e["lost_usd"], e["lost_tx_id"])
        for e in h.events(REOPENED)
    ]
    event_id = f"crypto-reopened:inv-1:ethereum:0xc2:0@0xnew/{_unix(T0 + timedelta(minutes=5))}"
    assert told == [(event_id, "40.00", "0.00", [], "failed", "40.00", "0xc2")]
    assert h.events(SETTLED) == []


def test_given_an_orphaning_whose_notice_failed_to_publish_when_the_payment_is_back_meanwhile_then_nothing_is_told(
    stack: Stack,
) -> None:
    """D434 amended (hcw): 60.00 final, 40.00 seen and orphaned; once due (block 100 final, D449) the notice fails to
    publish (the bus down) and stays owed; the transaction re-included in 0xnew before the next run (PROCESSING, 0.00 asked): the
    sweep marks the notice said and publishes nothing - the payment covers the bill again."""
    h = billed(stack, [quote("q-usdc", "USDC", USDC_QUOTE, "1")], T0 + timedelta(minutes=5))
    publisher = FailingPublisher()
    h = replace(h, published=publisher, settlement=Settlement(h.store, publisher, CHAINS, h.rates, clock=h.clock))
    h.settlement.record_seen(transfer("0xc1", "USDC", 60_000_000, T0 + timedelta(minutes=3)))
    h.settlement.record_seen(transfer("0xc2", "USDC", 40_000_000, T0 + timedelta(minutes=4)))
    h.settlement.finalized("ethereum:0xc1:0")
    h.settlement.orphaned("ethereum:0xc2:0", "0xblock")
    publisher.down = True
    with pytest.raises(CrashError):
        h.settlement.announce_due({"ethereum": 100})
    owed = h.store.bill("inv-1")
    assert owed is not None
    assert [entry.partition(";")[0] for entry in owed.reopens_owed] == ["ethereum:0xc2:0@0xblock"]
    publisher.down = False

    moved = replace(
        transfer("0xc2", "USDC", 40_000_000, T0 + timedelta(minutes=4)), block_number=201, block_hash="0xnew"
    )
    h.settlement.record_seen(moved)
    h.settlement.announce_due()

    assert h.events(REOPENED) == []
    assert h.store.bills_to_announce() == []


def test_given_a_stuck_payment_whose_release_pays_the_bill_with_a_write_off_then_no_reopen_is_told(
    stack: Stack,
) -> None:
    """D398 beside D434: 99.60 final, 0.40 stuck - inside the $0.50 band the release makes the bill PAID with 0.40
    written off (told by ``CryptoBillSettled.v1``): not open again, nothing asked, no reopen event."""
    h = billed(stack, [quote("q-usdc", "USDC", USDC_QUOTE, "1")], T0 + timedelta(minutes=5))
    h.settlement.record_seen(transfer("0xc1", "USDC", 99_600_000, T0 + timedelta(minutes=3)))
    h.settlement.record_seen(transfer("0xc2", "USDC", 400_000, T0 + timedelta(minutes=4)))
    h.settlement.finalized("ethereum:0xc1:0")

    h.settlement.stalled("ethereum:0xc2:0")

    paid = h.store.bill("inv-1")
    assert paid is not None
    assert (paid.status, paid.written_off_usd) == (BillStatus.PAID, Decimal("0.40"))
    assert [e["written_off_usd"] for e in h.events(SETTLED)] == ["0.40"]
    assert h.events(REOPENED) == []


def test_given_a_short_bill_whose_stuck_payment_finalizes_before_the_rest_is_paid_then_paid_in_full(
    stack: Stack,
) -> None:
    """D419, the other order: 60.00 final, 40.00 stuck (OPEN, 40.00 asked); the 40.00 finalizes before the
    customer pays again: it counts again - PAID, 100.00 settled, 0.00 off, 0.00 credit, told once."""
    h = _short_beyond_band_stuck(stack)

    h.settlement.finalized("ethereum:0xc2:0")

    paid = h.store.bill("inv-1")
    assert paid is not None
    assert (paid.status, paid.settled_usd, paid.written_off_usd, paid.credit_usd) == (
        BillStatus.PAID,
        Decimal("100.00"),
        Decimal("0.00"),
        Decimal("0.00"),
    )
    assert [e["settled_usd"] for e in h.events(SETTLED)] == ["100.00"]


def test_given_a_bill_paid_with_a_write_off_when_a_later_payment_finalizes_then_it_pays_the_write_off_first(
    h: Harness,
) -> None:
    """D387. 99.60 USDC alone: PAID, 0.40 written off. A later 0.30 (a reference or a claim ties it to the paid
    bill) pays the write-off first: 0.10 still written off, no credit; a further 0.50 pays the 0.10 and 0.40 is
    credit. Each told to invoicing with what is still written off. Before: 0.30 then 0.80 of credit beside the whole
    0.40 write-off."""
    h.settlement.record_seen(transfer("0xb1", "USDC", 99_600_000, T0 + timedelta(minutes=3)))
    h.settlement.finalized("ethereum:0xb1:0")
    h.settlement.record(transfer("0xb2", "USDC", 300_000, T0 + timedelta(minutes=4)), claimed_for="inv-1")
    h.settlement.finalized("ethereum:0xb2:0")
    part = h.store.bill("inv-1")
    h.settlement.record(transfer("0xb3", "USDC", 500_000, T0 + timedelta(minutes=5)), claimed_for="inv-1")
    h.settlement.finalized("ethereum:0xb3:0")
    final = h.store.bill("inv-1")

    assert part is not None
    assert final is not None
    assert (part.status, part.written_off_usd, part.credit_usd) == (BillStatus.PAID, Decimal("0.10"), Decimal("0.00"))
    assert (final.written_off_usd, final.credit_usd) == (Decimal("0.00"), Decimal("0.40"))
    assert BillFlag.PARTIAL in part.flags
    assert BillFlag.PARTIAL not in final.flags
    [settled] = h.events(SETTLED)
    assert settled["written_off_usd"] == "0.40"
    added = [(e["event_id"], e["credit_usd"], e["written_off_usd"]) for e in h.events("CryptoCreditAdded.v1")]
    assert added == [
        ("crypto-credit:inv-1:0.00:0.10", "0.00", "0.10"),
        ("crypto-credit:inv-1:0.40:0.00", "0.40", "0.00"),
    ]
    assert h.store.bills_to_announce() == []


def test_given_an_overpayment_when_final_then_the_excess_is_account_credit(h: Harness) -> None:
    h.settlement.record_seen(transfer("0xcc", "USDC", 120_000_000, T0 + timedelta(minutes=4)))
    h.settlement.finalized("ethereum:0xcc:0")
    final = h.store.bill("inv-1")
    assert final is not None
    assert final.status is BillStatus.PAID
    assert (final.settled_usd, final.credit_usd, final.flags) == (
        Decimal("120.00"),
        Decimal("20.00"),
        frozenset({BillFlag.OVERPAID}),
    )
    [settled] = h.events(SETTLED)
    assert (settled["credit_usd"], settled["flags"]) == ("20.00", ["OVERPAID"])


def test_given_two_partial_payments_then_processing_only_when_both_seen_and_paid_only_when_both_final(
    h: Harness,
) -> None:
    h.settlement.record_seen(transfer("0x01", "USDC", 60_000_000, T0 + timedelta(minutes=2)))
    first = h.store.bill("inv-1")
    assert first is not None
    assert (first.status, first.flags) == (BillStatus.OPEN, frozenset({BillFlag.PARTIAL}))

    h.settlement.record_seen(transfer("0x02", "USDC", 40_000_000, T0 + timedelta(minutes=3)))
    both = h.store.bill("inv-1")
    assert both is not None
    assert (both.status, both.flags) == (BillStatus.PROCESSING, frozenset({BillFlag.MULTIPLE}))

    h.settlement.finalized("ethereum:0x01:0")
    one_final = h.store.bill("inv-1")
    assert one_final is not None
    assert one_final.status is BillStatus.PROCESSING
    h.settlement.finalized("ethereum:0x02:0")
    final = h.store.bill("inv-1")
    assert final is not None
    assert final.status is BillStatus.PAID
    assert final.settled_usd == Decimal("100.00")
    [settled] = h.events(SETTLED)
    assert settled["tx_ids"] == ["0x01", "0x02"]
    assert settled["flags"] == ["MULTIPLE"]


@pytest.mark.parametrize(
    ("price_now", "usd", "review", "status"),
    [
        ("2600.00", "100.00", True, BillStatus.OPEN),  # up 4 %: min(2500, 2600) = 2500 -> $100.00, but reviewed
        ("2450.00", "98.00", False, BillStatus.OPEN),  # down exactly 2 %: min = 2450 -> 0.04 x 2450 = $98.00, short $2
        ("2400.00", "96.00", True, BillStatus.OPEN),  # down 4 %: manual review, not counted
    ],
)
def test_given_a_late_eth_payment_then_valued_at_the_lower_rate_and_reviewed_beyond_a_two_percent_move(
    h: Harness, price_now: str, usd: str, review: bool, status: BillStatus
) -> None:
    h.rates.prices["ETH"] = Decimal(price_now)
    h.clock.now = T0 + timedelta(hours=2)  # the quote expired at T0 + 31 min; monitoring runs to T0 + 72 h 1 min
    h.settlement.record_seen(transfer("0xdd", "ETH", ETH_QUOTE, T0 + timedelta(hours=2)))
    h.settlement.finalized("ethereum:0xdd:0")

    payment = h.store.payment("ethereum:0xdd:0")
    assert payment is not None
    assert payment.late
    assert payment.review is review
    assert payment.usd == Decimal(usd)
    assert payment.rate == min(Decimal("2500.00"), Decimal(price_now))
    final = h.store.bill("inv-1")
    assert final is not None
    assert final.status is status
    assert quote_statuses(h)["q-eth"] is QuoteStatus.LATE
    if not review:
        assert final.flags == frozenset({BillFlag.PARTIAL, BillFlag.PAID_LATE})


def test_given_a_late_eth_payment_within_one_percent_then_paid_late(h: Harness) -> None:
    h.rates.prices["ETH"] = Decimal("2510.00")  # up 0.4 %: min(2500, 2510) = 2500 -> $100.00
    h.clock.now = T0 + timedelta(hours=2)
    h.settlement.record_seen(transfer("0xde", "ETH", ETH_QUOTE, T0 + timedelta(hours=2)))
    h.settlement.finalized("ethereum:0xde:0")
    final = h.store.bill("inv-1")
    assert final is not None
    assert final.status is BillStatus.PAID
    assert final.flags == frozenset({BillFlag.PAID_LATE})
    assert final.settled_usd == Decimal("100.00")


def test_given_a_late_usdc_payment_then_credited_one_to_one(h: Harness) -> None:
    h.clock.now = T0 + timedelta(hours=5)
    h.settlement.record_seen(transfer("0xee", "USDC", USDC_QUOTE, T0 + timedelta(hours=5)))
    h.settlement.finalized("ethereum:0xee:0")
    final = h.store.bill("inv-1")
    assert final is not None
    assert final.status is BillStatus.PAID
    assert final.flags == frozenset({BillFlag.PAID_LATE})
    assert quote_statuses(h)["q-usdc"] is QuoteStatus.LATE


def test_given_eth_sent_before_any_quote_when_claimed_on_a_later_quote_then_valued_at_its_own_time_and_reviewed(
    stack: Stack,
) -> None:
    """D385. 0.04 ETH from the linked wallet a day before the bill had a quote ($1,000 an ETH then: $40.00) is kept
    UNATTRIBUTED; ETH rises and the customer makes a quote locking $2,500.00 (0.04 ETH asked) and submits the old
    hash. Valued by the late rule at min(2500, 1000) = 1000: 0.04 x 1000 = $40.00, a 60 % move: in review, not
    counted; the bill stays OPEN. Before: $100.00 at the lock, on time, and the bill PAID."""
    h = billed(stack, [], T0 + timedelta(days=1))
    h.rates.prices["ETH"] = Decimal("1000.00")  # FixedRates: the rate at any block time asked
    early = transfer("0xe1", "ETH", ETH_QUOTE, T0 - timedelta(days=1), index=-1)
    h.settlement.record_seen(early)
    kept = h.store.payment("ethereum:0xe1:-1")
    assert kept is not None
    assert kept.invoice_id is None
    h.store.add_quote(quote("q-eth", "ETH", ETH_QUOTE, "2500.00"))  # made at T0 + 1 min
    h.clock.now = T0 + timedelta(minutes=5)

    claimed = h.settlement.record(early, claimed_for="inv-1")
    h.settlement.finalized("ethereum:0xe1:-1")

    assert (claimed.quote_id, claimed.rate, claimed.usd) == ("q-eth", Decimal("1000.00"), Decimal("40.00"))
    assert (claimed.late, claimed.review, claimed.status) == (True, True, PaymentStatus.SEEN)
    final = h.store.bill("inv-1")
    assert final is not None
    assert (final.status, final.settled_usd) == (BillStatus.OPEN, Decimal("0.00"))
    assert h.events(SETTLED) == []


@pytest.mark.parametrize(
    ("sent", "late", "usd"),
    [
        (T0, False, "100.00"),  # 60 s before the quote (made at T0 + 1 min): inside the clock margin, at the lock
        (T0 - timedelta(seconds=1), True, "40.00"),  # 61 s before: late rule, min(2500, 1000) x 0.04, in review
    ],
)
def test_given_a_payment_whose_block_time_is_just_before_its_quote_then_the_clock_margin_decides_the_rate(
    stack: Stack, sent: datetime, late: bool, usd: str
) -> None:
    """D385: ``QUOTE_CLOCK_MARGIN`` (60 s) - an Ethereum block's time is its slot's start, before a transaction
    sent for a quote made a few seconds earlier."""
    h = billed(stack, [quote("q-eth", "ETH", ETH_QUOTE, "2500.00")], T0 + timedelta(minutes=5))
    h.rates.prices["ETH"] = Decimal("1000.00")

    h.settlement.record_seen(transfer("0xe2", "ETH", ETH_QUOTE, sent))

    payment = h.store.payment("ethereum:0xe2:0")
    assert payment is not None
    assert (payment.quote_id, payment.late, payment.review, payment.usd) == ("q-eth", late, late, Decimal(usd))


def test_given_a_quote_made_before_a_payment_and_one_after_asking_its_amount_then_it_pays_the_earlier_at_its_lock(
    stack: Stack,
) -> None:
    """D385. q-old (made T0 + 1 min, locks $2,000.00, asks 0.04 ETH) and q-new (made T0 + 2 h, locks $2,500.00,
    asks 0.05 ETH). 0.05 ETH from the linked wallet at T0 + 10 min pays q-old, the quote that existed then: 0.05 x
    2000 = $100.00, on time. Before: q-new asked exactly its amount and won - $125.00 at a lock made after it."""
    old = quote("q-old", "ETH", 40_000_000_000_000_000, "2000.00", amount_usd="80.00")
    later = replace(
        quote("q-new", "ETH", 50_000_000_000_000_000, "2500.00", amount_usd="125.00"),
        created_at=T0 + timedelta(hours=2),
        expires_at=T0 + timedelta(hours=2, minutes=30),
        monitor_until=T0 + timedelta(hours=74),
    )
    h = billed(stack, [old, later], T0 + timedelta(hours=3))
    h.rates.prices["ETH"] = Decimal("2000.00")

    h.settlement.record_seen(transfer("0xe3", "ETH", 50_000_000_000_000_000, T0 + timedelta(minutes=10)))

    payment = h.store.payment("ethereum:0xe3:0")
    assert payment is not None
    # 0.05 ETH at q-old's $2,000.00 lock, on time: $100.00
    assert (payment.quote_id, payment.late, payment.usd) == ("q-old", False, Decimal("100.00"))


UNTIMED_WALLET = "PayerWa11et1111111111111111111111111111111"
UNTIMED_REF = "Ref2222222222222222222222222222222222222222"


def _untimed(stack: Stack, asset: Asset, atomic: int, references: tuple[str, ...] = ()) -> tuple[Payment, BillStatus]:
    """A $100.00 bill with one Solana quote made at T0 + 1 min (reference ``UNTIMED_REF``; SOL locked at $150.00,
    USDC at $1) and the payer's wallet linked; the payment is first seen by the watcher at T0 + 5 min with no block
    time (getTransaction's blockTime null and getBlockTime none: the time it was sent is unknown - maybe a day before
    the quote, a backlog seen late). SOL's feed answers $90.00 at any time asked."""
    h = harness(stack)
    h.store.link_wallet("solana", UNTIMED_WALLET, "acct-1", "solana", T0)
    assert h.store.create_bill(bill())
    h.store.add_quote(
        quote("q-sol", asset, atomic, "150.00" if asset == "SOL" else "1", chain="solana", reference=UNTIMED_REF)
    )
    h.rates.prices["SOL"] = Decimal("90.00")
    h.clock.now = T0 + timedelta(minutes=5)
    sent = replace(
        transfer("5untimed", asset, atomic, T0, sender=UNTIMED_WALLET, chain="solana", references=references),
        block_time=None,
    )
    h.settlement.record_seen(sent)
    payment, settled = h.store.payment("solana:5untimed:0"), h.store.bill("inv-1")
    assert payment is not None
    assert settled is not None
    return payment, settled.status


def test_given_a_solana_payment_with_no_block_time_matched_by_wallet_then_it_is_late_and_its_sol_reviewed(
    stack: Stack,
) -> None:
    """D397. 666,666,667 lamports from the linked wallet, no block time, seen 4 min after the quote was made: it may
    have been sent before the quote (a day before, at $90.00), so the quote's $150.00 lock is not its - late, and with
    no time to read the feed at, in review: not counted, the bill OPEN. Before: dated at the watcher's clock (T0 + 5
    min, after the quote), on time at the lock: 666,666,667 x 150 = $100.00000005, the bill PROCESSING."""
    payment, status = _untimed(stack, "SOL", SOL_QUOTE)

    assert (payment.quote_id, payment.late, payment.review, status) == ("q-sol", True, True, BillStatus.OPEN)
    assert payment.usd == Decimal("100.00000005")  # the lock's figure, kept for the operator's review only


def test_given_a_solana_usdc_payment_with_no_block_time_matched_by_wallet_then_paid_late_one_to_one(
    stack: Stack,
) -> None:
    """D397. 100 USDC (100,000,000 units) the same way: late, valued 1:1 (what it is worth whenever sent), not
    reviewed - $100.00 counted, the bill PROCESSING with the late flag to come. Before: on time at the lock."""
    payment, status = _untimed(stack, "USDC", USDC_QUOTE)

    assert (payment.quote_id, payment.late, payment.review, payment.usd) == ("q-sol", True, False, Decimal("100"))
    assert status is BillStatus.PROCESSING


def test_given_a_solana_payment_with_no_block_time_carrying_its_quotes_reference_then_on_time_at_the_lock(
    stack: Stack,
) -> None:
    """D397. The quote's reference is a key made with the quote: a transfer carrying it was sent after the quote
    was made, and before the watcher saw it (T0 + 5 min, inside the 30 min window) - on time at the lock,
    666,666,667 x 150 = $100.00000005."""
    payment, status = _untimed(stack, "SOL", SOL_QUOTE, references=(UNTIMED_REF,))

    assert (payment.quote_id, payment.late, payment.review, status) == ("q-sol", False, False, BillStatus.PROCESSING)
    assert payment.usd == Decimal("100.00000005")


def test_given_a_payment_after_monitoring_then_it_is_unattributed(h: Harness) -> None:
    h.clock.now = T0 + timedelta(hours=80)
    h.settlement.record_seen(transfer("0xef", "USDC", USDC_QUOTE, T0 + timedelta(hours=80)))
    payment = h.store.payment("ethereum:0xef:0")
    assert payment is not None
    assert payment.invoice_id is None
    assert len(h.events(UNATTRIBUTED)) == 1


def test_given_a_payment_from_an_unlinked_wallet_then_unattributed_until_an_operator_assigns_it(h: Harness) -> None:
    h.settlement.record_seen(transfer("0xff", "USDC", USDC_QUOTE, T0 + timedelta(minutes=4), sender=STRANGER_WALLET))
    [alert] = h.events(UNATTRIBUTED)
    assert (alert["amount"], alert["sender"], alert["tx_id"]) == ("100", STRANGER_WALLET, "0xff")
    assert [p.payment_id for p in h.store.unattributed()] == ["ethereum:0xff:0"]
    untouched = h.store.bill("inv-1")
    assert untouched is not None
    assert untouched.status is BillStatus.OPEN
    assert untouched.payments == ()

    with pytest.raises(NotAssignableError, match="belongs to account acct-1"):
        h.settlement.assign("ethereum:0xff:0", "acct-2", "inv-1")
    assigned = h.settlement.assign("ethereum:0xff:0", "acct-1", "inv-1")
    assert (assigned.invoice_id, assigned.matched_by, assigned.usd) == ("inv-1", "operator", Decimal("100.00"))
    assert h.store.unattributed() == []
    processing = h.store.bill("inv-1")
    assert processing is not None
    assert processing.status is BillStatus.PROCESSING
    assert len(h.events(SEEN)) == 1
    with pytest.raises(NotAssignableError, match="already pays bill inv-1"):
        h.settlement.assign("ethereum:0xff:0", "acct-1", "inv-1")


def test_given_a_seen_payment_when_orphaned_then_the_bill_is_open_again_and_the_quote_active(h: Harness) -> None:
    h.settlement.record_seen(transfer("0x0a", "ETH", ETH_QUOTE, T0 + timedelta(minutes=4)))
    assert quote_statuses(h)["q-eth"] is QuoteStatus.DETECTED
    h.settlement.orphaned("ethereum:0x0a:0")
    reopened = h.store.bill("inv-1")
    assert reopened is not None
    assert reopened.status is BillStatus.OPEN
    assert reopened.flags == frozenset()
    assert quote_statuses(h)["q-eth"] is QuoteStatus.ACTIVE
    payment = h.store.payment("ethereum:0x0a:0")
    assert payment is not None
    assert payment.status is PaymentStatus.ORPHANED
    h.settlement.finalized("ethereum:0x0a:0")  # an orphaned payment never finalizes
    assert h.events(SETTLED) == []

    h.settlement.record_seen(transfer("0x0a", "ETH", ETH_QUOTE, T0 + timedelta(minutes=4)))  # re-included
    again = h.store.bill("inv-1")
    assert again is not None
    assert again.status is BillStatus.PROCESSING


def test_given_a_solana_payment_with_the_quotes_reference_then_matched_by_reference(h: Harness) -> None:
    reference = "Ref1111111111111111111111111111111111111111"
    # $100.00 at $150.00/SOL: ceil(100 / 150 x 10^9) = 666_666_667 lamports, worth $100.00000005 (kept exact; the
    # bill counts it $100.00)
    h.store.add_quote(quote("q-sol", "SOL", 666_666_667, "150.00", chain="solana", reference=reference))
    assert h.settlement.active_references("solana") == [reference]
    paid = transfer(
        "5sig", "SOL", 666_666_667, T0 + timedelta(minutes=4), sender="Payer", chain="solana", references=(reference,)
    )
    h.settlement.record_seen(paid)
    payment = h.store.payment("solana:5sig:0")
    assert payment is not None
    assert (payment.matched_by, payment.quote_id, payment.usd) == (
        "reference",
        "q-sol",
        Decimal("100.00000005"),
    )
    h.clock.now = T0 + timedelta(hours=73)
    assert h.settlement.active_references("solana") == []


def test_given_a_failed_transaction_then_recorded_failed_and_nothing_counts(h: Harness) -> None:
    h.settlement.record_seen(transfer("0x0b", "USDC", USDC_QUOTE, T0 + timedelta(minutes=4), succeeded=False))
    payment = h.store.payment("ethereum:0x0b:0")
    assert payment is not None
    assert payment.status is PaymentStatus.FAILED
    untouched = h.store.bill("inv-1")
    assert untouched is not None
    assert untouched.status is BillStatus.OPEN
    assert untouched.payments == ()
    assert h.published.published == []
    # pending while its block is not final (a reorg may re-include it where it succeeds), as FAILED
    assert [(p.payment_id, p.failed) for p in h.settlement.pending("ethereum")] == [("ethereum:0x0b:0", True)]


def test_given_a_submitted_transaction_then_claimed_for_that_bill_and_refused_for_another(h: Harness) -> None:
    h.store.create_bill(bill("inv-2"))
    h.store.add_quote(quote("q2", "USDC", USDC_QUOTE, "1", invoice_id="inv-2"))
    paid = transfer("0x0c", "USDC", USDC_QUOTE, T0 + timedelta(minutes=4), sender=STRANGER_WALLET)
    payment = h.settlement.record(paid, claimed_for="inv-1")
    assert (payment.invoice_id, payment.matched_by) == ("inv-1", "fast_path")
    with pytest.raises(AlreadyClaimedError):
        h.settlement.record(paid, claimed_for="inv-2")
    assert h.settlement.record(paid, claimed_for="inv-1").invoice_id == "inv-1"  # the same claim again: fine
    assert len(h.events(SEEN)) == 1


# --- claims on the fast path (D112): another customer's payment is never taken ---------------------------------------
# acct-x's admin submits transactions for acct-x's own $100.00 bill inv-x, which has a USDC quote of the same 100 USDC
# as acct-1's: before D112's amendment the amount alone tied them to inv-x.

SOL_QUOTE = 666_666_667  # $100.00 at $150.00: 0.666666666.. SOL, rounded up to the lamport
REF = "Ref1111111111111111111111111111111111111111"
CREDIT = "CryptoCreditAdded.v1"


def _attacker(h: Harness) -> None:
    assert h.store.create_bill(bill("inv-x", "acct-x"))
    h.store.add_quote(quote("q-x", "USDC", USDC_QUOTE, "1", invoice_id="inv-x", account_id="acct-x"))


def test_given_a_payment_from_another_accounts_linked_wallet_when_claimed_then_refused_and_the_watcher_pays_theirs(
    h: Harness,
) -> None:
    _attacker(h)
    paid = transfer("0xv1", "USDC", USDC_QUOTE, T0 + timedelta(minutes=4))  # from CUSTOMER_WALLET: acct-1's
    with pytest.raises(ClaimRefusedError, match="sent from a wallet linked to another account"):
        h.settlement.record(paid, claimed_for="inv-x")
    assert h.store.payment("ethereum:0xv1:0") is None  # nothing written
    assert h.published.published == []

    h.settlement.record_seen(paid)  # the watcher's run
    h.settlement.finalized("ethereum:0xv1:0")
    payment = h.store.payment("ethereum:0xv1:0")
    assert payment is not None
    assert (payment.invoice_id, payment.account_id, payment.matched_by) == ("inv-1", "acct-1", "wallet")
    victim, attacker = h.store.bill("inv-1"), h.store.bill("inv-x")
    assert victim is not None
    assert attacker is not None
    assert (victim.status, victim.settled_usd) == (BillStatus.PAID, Decimal("100.00"))
    assert (attacker.status, attacker.payments) == (BillStatus.OPEN, ())
    with pytest.raises(AlreadyClaimedError):
        h.settlement.record(paid, claimed_for="inv-x")


def test_given_an_unattributed_payment_from_another_accounts_linked_wallet_when_claimed_then_refused(
    h: Harness,
) -> None:
    """acct-1 has no unpaid bill left, so its wallet's next payment is UNATTRIBUTED (an operator decides): acct-x's
    claim on it is refused all the same, and it stays unattributed."""
    h.settlement.record_seen(transfer("0xv0", "USDC", USDC_QUOTE, T0 + timedelta(minutes=4)))
    h.settlement.finalized("ethereum:0xv0:0")
    _attacker(h)
    extra = transfer("0xv2", "USDC", USDC_QUOTE, T0 + timedelta(minutes=6))
    h.settlement.record_seen(extra)
    assert h.store.payment("ethereum:0xv2:0") in h.store.unattributed()
    with pytest.raises(ClaimRefusedError, match="wallet linked to another account"):
        h.settlement.record(extra, claimed_for="inv-x")
    assert [p.payment_id for p in h.store.unattributed()] == ["ethereum:0xv2:0"]
    attacker = h.store.bill("inv-x")
    assert attacker is not None
    assert (attacker.status, attacker.payments) == (BillStatus.OPEN, ())


def test_given_a_solana_payment_with_another_bills_reference_when_claimed_then_refused_and_the_watcher_pays_it(
    h: Harness,
) -> None:
    h.store.add_quote(quote("q-sol", "SOL", SOL_QUOTE, "150.00", chain="solana", reference=REF))
    assert h.store.create_bill(bill("inv-x", "acct-x"))
    h.store.add_quote(
        quote("q-x", "SOL", SOL_QUOTE, "150.00", "inv-x", "acct-x", chain="solana", reference="RefAttacker")
    )
    paid = transfer(
        "5sig", "SOL", SOL_QUOTE, T0 + timedelta(minutes=4), sender="Payer", chain="solana", references=(REF,)
    )
    with pytest.raises(ClaimRefusedError, match="carries the reference of another bill's quote"):
        h.settlement.record(paid, claimed_for="inv-x")
    assert h.store.payment("solana:5sig:0") is None

    h.settlement.record_seen(paid)
    payment = h.store.payment("solana:5sig:0")
    assert payment is not None
    # 666_666_667 lamports x $150.00 = $100.00000005, kept exact (the bill rounds its sum once)
    assert (payment.invoice_id, payment.quote_id, payment.matched_by, payment.usd) == (
        "inv-1",
        "q-sol",
        "reference",
        Decimal("100.00000005"),
    )
    attacker = h.store.bill("inv-x")
    assert attacker is not None
    assert attacker.payments == ()


def test_given_a_paid_bill_when_a_payment_is_claimed_by_its_amount_alone_then_refused_and_no_credit(
    h: Harness,
) -> None:
    """acct-x pays inv-x (a claim by the amount while it is open: an exchange's payment), then claims further
    payments of the same amount by neither a linked wallet nor a reference: refused, no credit. The one from acct-1's
    linked wallet goes to acct-1's bill through the watcher; the other stays for an operator."""
    _attacker(h)
    own = transfer("0xown", "USDC", USDC_QUOTE, T0 + timedelta(minutes=4), sender="0x" + "33" * 20)
    assert h.settlement.record(own, claimed_for="inv-x").matched_by == "fast_path"
    h.settlement.finalized("ethereum:0xown:0")
    paid = h.store.bill("inv-x")
    assert paid is not None
    assert paid.status is BillStatus.PAID
    h.clock.now = T0 + timedelta(hours=10)

    stranger = transfer("0xs", "USDC", USDC_QUOTE, T0 + timedelta(hours=10), sender="0x" + "44" * 20)
    with pytest.raises(ClaimRefusedError, match="which is paid already"):
        h.settlement.record(stranger, claimed_for="inv-x")
    victims = transfer("0xv3", "USDC", USDC_QUOTE, T0 + timedelta(hours=10))  # acct-1's linked wallet
    with pytest.raises(ClaimRefusedError, match="wallet linked to another account"):
        h.settlement.record(victims, claimed_for="inv-x")
    assert h.store.payment("ethereum:0xs:0") is None
    assert h.store.payment("ethereum:0xv3:0") is None

    h.settlement.record_seen(stranger)
    h.settlement.record_seen(victims)
    h.settlement.finalized("ethereum:0xs:0")
    h.settlement.finalized("ethereum:0xv3:0")
    still = h.store.bill("inv-x")
    assert still is not None
    assert (still.status, still.settled_usd, still.credit_usd) == (BillStatus.PAID, Decimal("100.00"), 0)
    assert h.events(CREDIT) == []
    victim = h.store.bill("inv-1")
    assert victim is not None
    assert (victim.status, victim.settled_usd) == (BillStatus.PAID, Decimal("100.00"))  # late USDC counts 1:1
    assert [p.payment_id for p in h.store.unattributed()] == ["ethereum:0xs:0"]


def test_given_a_bill_covered_by_a_payment_not_yet_final_when_another_is_claimed_by_its_amount_then_refused(
    h: Harness,
) -> None:
    _attacker(h)
    h.settlement.record(transfer("0xown", "USDC", USDC_QUOTE, T0 + timedelta(minutes=4), sender="0x" + "33" * 20),
                        claimed_for="inv-x")  # fmt: skip
    covered = h.store.bill("inv-x")
    assert covered is not None
    assert covered.status is BillStatus.PROCESSING
    second = transfer("0xs2", "USDC", USDC_QUOTE, T0 + timedelta(minutes=6), sender="0x" + "44" * 20)
    with pytest.raises(ClaimRefusedError, match="which is processing already"):
        h.settlement.record(second, claimed_for="inv-x")
    assert h.store.payment("ethereum:0xs2:0") is None


# A claim by the amount alone (an exchange's payment: unlinked wallet, no reference) is accepted within the quote's
# EXACT tolerance, in the quote's atomic units: the window only ties a transfer to a bill (D112), recompute decides what
# is written off. With the band rounded down to the cent (D365 before its mx2 amendment) every USDC quote under $2
# accepted only its exact amount, and an ETH quote of $12.34 refused payments its bill would have settled.


def _unlinked_bill(stack: Stack, total: str, quoted: Quote) -> Harness:
    """The bill ``inv-1`` of ``total`` holding ``quoted``, no wallet linked (an exchange pays it), at T0 + 5 min."""
    h = harness(stack)
    assert h.store.create_bill(bill(total=total))
    h.store.add_quote(quoted)
    h.clock.now = T0 + timedelta(minutes=5)
    return h


def _claimed_and_finalized(h: Harness, asset: Asset, atomic: int) -> Bill:
    """``atomic`` units of ``asset`` from a stranger's wallet (0xex, at T0 + 4 min) claimed for inv-1 and tied to it,
    then final: the bill as stored."""
    paid = transfer("0xex", asset, atomic, T0 + timedelta(minutes=4), sender=STRANGER_WALLET)
    assert h.settlement.record(paid, claimed_for="inv-1").invoice_id == "inv-1"
    h.settlement.finalized("ethereum:0xex:0")
    stored = h.store.bill("inv-1")
    assert stored is not None
    return stored


def test_given_a_usdc_quote_under_two_dollars_when_claimed_one_unit_short_then_accepted_and_paid_in_full(
    stack: Stack,
) -> None:
    # $1.99 bill, USDC quote 1.99 = 1_990_000 units. Paid 1_989_999 units (1 unit = $0.000001 short) from an exchange.
    # Worth 1.989999 -> half-up $1.99: short 0.00, PAID, nothing written off.
    # Claim window: exact band 0.5 % x 1.99 = 0.00995 -> 1_990_000 x 0.00995 / 1.99 = 9_950 units; |-1| <= 9_950.
    # (Rounded down to the cent the band was $0.00 -> 0 units: refused.)
    h = _unlinked_bill(stack, "1.99", quote("q-usdc", "USDC", 1_990_000, "1", amount_usd="1.99"))
    done = _claimed_and_finalized(h, "USDC", 1_989_999)
    assert (done.status, done.settled_usd, done.written_off_usd) == (
        BillStatus.PAID,
        Decimal("1.99"),
        Decimal("0.00"),
    )


def test_given_a_usdc_quote_under_two_dollars_when_claimed_at_the_edge_of_its_exact_band_then_tied_but_left_open(
    stack: Stack,
) -> None:
    # $1.99 bill, quote 1_990_000 units, exact band 9_950 units (above).
    # 1_980_049 units: 9_951 short > 9_950: refused (not tied to the bill by its amount).
    # 1_980_050 units: 9_950 short <= 9_950: tied. Worth 1.98005 -> half-up $1.98: short 0.01 > the bill's band
    # 0.00995 (-> $0.00): OPEN and PARTIAL, nothing written off - the claim ties, recompute decides.
    h = _unlinked_bill(stack, "1.99", quote("q-usdc", "USDC", 1_990_000, "1", amount_usd="1.99"))
    beyond = transfer("0xfar", "USDC", 1_980_049, T0 + timedelta(minutes=4), sender=STRANGER_WALLET)
    with pytest.raises(ClaimRefusedError, match="not the amount of one of its quotes"):
        h.settlement.record(beyond, claimed_for="inv-1")
    still = _claimed_and_finalized(h, "USDC", 1_980_050)
    assert (still.status, still.written_off_usd) == (BillStatus.OPEN, Decimal("0.00"))
    assert BillFlag.PARTIAL in still.flags


def test_given_an_eth_quote_when_claimed_short_by_what_its_bill_writes_off_then_accepted_and_paid(
    stack: Stack,
) -> None:
    # $12.34 bill, ETH at $2,500: quote 12.34 / 2500 = 0.004936 ETH = 4_936_000_000_000_000 wei.
    # Paid 4_887_000_000_000_000 wei (4.9e13 short): 0.004887 x 2500 = 12.2175 -> half-up $12.22: short 0.12;
    # the bill's band 1 % x 12.34 = 0.1234 -> $0.12: 0.12 <= 0.12, PAID with $0.12 written off.
    # Claim window: 4.936e15 x 0.1234 / 12.34 = 4.936e13 wei >= 4.9e13: tied.
    # (Rounded down: 4.936e15 x 0.12 / 12.34 = 4.8e13 < 4.9e13: refused.)
    h = _unlinked_bill(stack, "12.34", quote("q-eth", "ETH", 4_936_000_000_000_000, "2500.00", amount_usd="12.34"))
    done = _claimed_and_finalized(h, "ETH", 4_887_000_000_000_000)
    assert (done.status, done.settled_usd, done.written_off_usd) == (
        BillStatus.PAID,
        Decimal("12.22"),
        Decimal("0.12"),
    )


def test_given_a_paid_bill_when_a_payment_with_its_own_quotes_reference_is_claimed_then_it_becomes_credit(
    h: Harness,
) -> None:
    """A reference of the bill's own quote ties the payment to it even once the bill is paid (its overpayment)."""
    h.store.add_quote(quote("q-sol-usdc", "USDC", USDC_QUOTE, "1", chain="solana", reference=REF))
    h.settlement.record_seen(transfer("0x20", "USDC", USDC_QUOTE, T0 + timedelta(minutes=4)))
    h.settlement.finalized("ethereum:0x20:0")
    extra = transfer(
        "5more", "USDC", 5_000_000, T0 + timedelta(minutes=6), sender="Payer", chain="solana", references=(REF,)
    )
    payment = h.settlement.record(extra, claimed_for="inv-1")
    assert (payment.invoice_id, payment.quote_id, payment.usd) == ("inv-1", "q-sol-usdc", Decimal("5.00"))
    h.settlement.finalized("solana:5more:0")
    final = h.store.bill("inv-1")
    assert final is not None
    assert (final.status, final.settled_usd, final.credit_usd) == (BillStatus.PAID, Decimal("100.00"), Decimal("5.00"))
    [credit] = h.events(CREDIT)
    assert (credit["credit_usd"], credit["tx_ids"]) == ("5.00", ["5more"])


def test_given_a_paid_bill_when_another_payment_is_final_then_it_becomes_credit_without_a_second_event(
    h: Harness,
) -> None:
    h.settlement.record_seen(transfer("0x10", "USDC", USDC_QUOTE, T0 + timedelta(minutes=4)))
    h.settlement.finalized("ethereum:0x10:0")
    # the customer submits another transaction for the paid bill (a linked wallet's payment with no unpaid bill left
    # would be UNATTRIBUTED: the operator decides)
    h.settlement.record(transfer("0x11", "USDC", 5_000_000, T0 + timedelta(minutes=6)), claimed_for="inv-1")
    h.settlement.finalized("ethereum:0x11:0")
    final = h.store.bill("inv-1")
    assert final is not None
    assert final.status is BillStatus.PAID
    assert (final.settled_usd, final.credit_usd) == (Decimal("100.00"), Decimal("5.00"))
    assert BillFlag.OVERPAID in final.flags
    assert len(h.events(SETTLED)) == 1


def test_given_a_stale_bill_version_when_saved_then_nothing_is_written(h: Harness) -> None:
    h.settlement.record_seen(transfer("0x12", "USDC", 50_000_000, T0 + timedelta(minutes=4)))
    moved = h.store.bill("inv-1")
    payment = h.store.payment("ethereum:0x12:0")
    assert moved is not None
    assert payment is not None
    assert moved.version == 1
    from dataclasses import replace  # noqa: PLC0415

    stale = replace(moved, version=1)  # written over version 0: the stored one is 1
    with pytest.raises(ConflictError):
        h.store.save(SettlementChange(replace(payment, status=PaymentStatus.FINALIZED), PaymentStatus.SEEN, stale))
    still = h.store.payment("ethereum:0x12:0")
    assert still is not None
    assert still.status is PaymentStatus.SEEN


def _late_eth_in_review(h: Harness, price_now: str, tx: str = "0xrv") -> str:
    h.rates.prices["ETH"] = Decimal(price_now)
    h.clock.now = T0 + timedelta(hours=2)
    h.settlement.record_seen(transfer(tx, "ETH", ETH_QUOTE, T0 + timedelta(hours=2)))
    payment = h.store.payment(f"ethereum:{tx}:0")
    assert payment is not None
    assert payment.review
    return payment.payment_id


def test_given_a_payment_in_review_when_the_operator_accepts_it_then_it_counts_at_the_policy_rate_once(
    h: Harness,
) -> None:
    payment_id = _late_eth_in_review(h, "2600.00")  # up 4 %: min(2500, 2600) = 2500 -> 0.04 x 2500 = $100.00
    h.settlement.finalized(payment_id)
    waiting = h.store.bill("inv-1")
    assert waiting is not None
    assert waiting.status is BillStatus.OPEN
    assert [p.payment_id for p in h.store.reviewed_payments()] == [payment_id]

    accepted = h.settlement.resolve_review(payment_id, accept=True)
    assert (accepted.review, accepted.refund_owed, accepted.usd) == (False, False, Decimal("100.00"))
    paid = h.store.bill("inv-1")
    assert paid is not None
    assert (paid.status, paid.settled_usd, paid.flags) == (BillStatus.PAID, Decimal("100.00"), {BillFlag.PAID_LATE})
    [settled] = h.events(SETTLED)
    assert (settled["settled_usd"], settled["flags"]) == ("100.00", ["PAID_LATE"])
    assert h.store.reviewed_payments() == []
    with pytest.raises(NotUnderReviewError):
        h.settlement.resolve_review(payment_id, accept=True)
    assert len(h.events(SETTLED)) == 1


def test_given_an_unfinalized_payment_accepted_in_review_then_processing_until_final(h: Harness) -> None:
    payment_id = _late_eth_in_review(h, "2600.00")
    h.settlement.resolve_review(payment_id, accept=True)
    processing = h.store.bill("inv-1")
    assert processing is not None
    assert processing.status is BillStatus.PROCESSING
    assert h.events(SETTLED) == []
    h.settlement.finalized(payment_id)
    paid = h.store.bill("inv-1")
    assert paid is not None
    assert paid.status is BillStatus.PAID
    assert len(h.events(SETTLED)) == 1


def test_given_a_payment_in_review_when_refused_then_a_refund_is_owed_and_it_never_counts(h: Harness) -> None:
    payment_id = _late_eth_in_review(h, "2400.00")  # down 4 %: $96.00 at 2400, in review
    h.settlement.finalized(payment_id)
    refused = h.settlement.resolve_review(payment_id, accept=False)
    assert (refused.review, refused.refund_owed, refused.status) == (False, True, PaymentStatus.FINALIZED)
    still = h.store.bill("inv-1")
    assert still is not None
    assert still.status is BillStatus.OPEN
    assert remaining_usd(still) == Decimal("100.00")  # a new quote asks the whole bill again
    [line] = still.payments
    assert (line.payment_id, line.refund_owed, line.review) == (payment_id, True, False)
    assert [(p.payment_id, p.refund_owed) for p in h.store.reviewed_payments()] == [(payment_id, True)]
    assert h.events(SETTLED) == []
    [shown] = account_history(*h.store.account_history("acct-1"), CHAINS, h.clock.now)["payments"]
    assert (shown["refund_owed"], shown["manual_review"]) == (True, False)  # the customer's history says so
    with pytest.raises(NotUnderReviewError):
        h.settlement.resolve_review(payment_id, accept=True)  # decided: the refund stands


EXPIRING = "CryptoQuoteExpiring.v1"
WINDOW = timedelta(minutes=10)  # the default: QUOTE_EXPIRING_MINUTES


def test_given_an_active_quote_then_announced_expiring_once_within_ten_minutes_of_its_expiry(h: Harness) -> None:
    # both quotes were made at T0 + 1 min and expire at T0 + 31 min
    h.clock.now = T0 + timedelta(minutes=20, seconds=59)  # 10 min 1 s before expiry: not yet
    assert h.settlement.announce_expiring("ethereum", WINDOW) == 0
    assert h.events(EXPIRING) == []

    h.clock.now = T0 + timedelta(minutes=21)  # exactly 10 min before
    assert h.settlement.announce_expiring("ethereum", WINDOW) == 2
    by_quote = {event["quote_id"]: event for event in h.events(EXPIRING)}
    assert sorted(by_quote) == ["q-eth", "q-usdc"]
    eth = by_quote["q-eth"]
    assert (eth["event_id"], eth["account_id"], eth["invoice_id"], eth["chain"]) == (
        "quote-expiring:q-eth",
        "acct-1",
        "inv-1",
        "ethereum",
    )
    assert (eth["asset"], eth["amount"], eth["payment_uri"]) == ("ETH", "0.04", "test:q-eth")
    assert eth["number"] == by_quote["q-usdc"]["number"] == "KB-inv-1"  # the bill's: the dashboard opens it by this
    assert eth["expires_at"] == (T0 + timedelta(minutes=31)).isoformat()

    h.clock.now = T0 + timedelta(minutes=25)
    assert h.settlement.announce_expiring("ethereum", WINDOW) == 0  # never twice
    assert h.settlement.announce_expiring("solana", WINDOW) == 0  # another chain's run: not its quotes
    assert len(h.events(EXPIRING)) == 2


def test_given_a_quote_with_a_payment_seen_then_it_is_not_announced_expiring(h: Harness) -> None:
    h.settlement.record_seen(transfer("0xaa", "USDC", USDC_QUOTE, T0 + timedelta(minutes=4)))
    assert quote_statuses(h)["q-usdc"] is QuoteStatus.DETECTED
    h.clock.now = T0 + timedelta(minutes=25)
    assert h.settlement.announce_expiring("ethereum", WINDOW) == 1
    assert [event["quote_id"] for event in h.events(EXPIRING)] == ["q-eth"]
    h.clock.now = T0 + timedelta(minutes=26)
    assert h.settlement.announce_expiring("ethereum", WINDOW) == 0
    assert h.store.expiring_quotes("ethereum", T0 + timedelta(days=1)) == []  # both retired from the list


def test_given_a_quote_passed_its_expiry_unannounced_then_retired_without_an_event(h: Harness) -> None:
    h.clock.now = T0 + timedelta(hours=2)  # the watcher was down through the whole window
    assert h.settlement.announce_expiring("ethereum", WINDOW) == 0
    assert h.events(EXPIRING) == []
    assert h.store.expiring_quotes("ethereum", T0 + timedelta(days=1)) == []


# --- contract wallets are linked per chain ----------------------------------------------------------------------------

CONTRACT_WALLET = "0x5555555555555555555555555555555555555555"


def test_given_a_contract_wallet_linked_on_one_chain_then_its_address_elsewhere_is_not_the_accounts(
    stack: Stack,
) -> None:
    """An ERC-1271 wallet verified on ethereum is acct-1's there only: on base the same address may be another
    contract (acct-2's, verified there) or none. A key's wallet (EOA) is the same account's on every EVM chain."""
    h = harness(stack)
    h.store.link_wallet("evm", CONTRACT_WALLET, "acct-1", "ethereum", T0, contract=True)
    h.store.link_wallet("evm", CUSTOMER_WALLET, "acct-1", "ethereum", T0)  # an EOA
    assert h.store.wallet_owner("evm", CONTRACT_WALLET, "ethereum") == "acct-1"
    assert h.store.wallet_owner("evm", CONTRACT_WALLET.upper().replace("0X", "0x"), "ethereum") == "acct-1"
    assert h.store.wallet_owner("evm", CONTRACT_WALLET, "base") is None
    assert h.store.wallet_owner("evm", CONTRACT_WALLET) is None
    assert h.store.wallet_owner("evm", CUSTOMER_WALLET, "base") == "acct-1"
    assert h.store.wallet_owner("evm", CUSTOMER_WALLET) == "acct-1"

    h.store.link_wallet("evm", CONTRACT_WALLET, "acct-2", "base", T0, contract=True)  # another contract, on base
    assert h.store.wallet_owner("evm", CONTRACT_WALLET, "base") == "acct-2"
    with pytest.raises(AlreadyExistsError):
        h.store.link_wallet("evm", CONTRACT_WALLET, "acct-2", "ethereum", T0, contract=True)
    with pytest.raises(AlreadyExistsError):  # the address's key is another account's: no contract link beside it
        h.store.link_wallet("evm", CUSTOMER_WALLET, "acct-2", "base", T0, contract=True)
    assert h.store.wallet_owner("evm", CUSTOMER_WALLET, "base") == "acct-1"

    for account, invoice in (("acct-1", "inv-1"), ("acct-2", "inv-2")):
        assert h.store.create_bill(bill(invoice, account))
        for chain in ("ethereum", "base"):
            h.store.add_quote(quote(f"q-{invoice}-{chain}", "USDC", USDC_QUOTE, "1", invoice, account, chain=chain))
    h.clock.now = T0 + timedelta(minutes=5)
    on_base = transfer("0xb1", "USDC", USDC_QUOTE, T0 + timedelta(minutes=4), sender=CONTRACT_WALLET, chain="base")
    h.settlement.record_seen(on_base)
    on_ethereum = transfer("0xe1", "USDC", USDC_QUOTE, T0 + timedelta(minutes=4), sender=CONTRACT_WALLET)
    h.settlement.record_seen(on_ethereum)
    paid_on_base, paid_on_ethereum = h.store.payment("base:0xb1:0"), h.store.payment("ethereum:0xe1:0")
    assert paid_on_base is not None
    assert paid_on_ethereum is not None
    assert (paid_on_base.invoice_id, paid_on_base.matched_by) == ("inv-2", "wallet")
    assert (paid_on_ethereum.invoice_id, paid_on_ethereum.matched_by) == ("inv-1", "wallet")


def test_given_a_seen_payment_when_seen_again_in_another_block_then_the_new_block_is_kept_and_it_finalizes(
    h: Harness,
) -> None:
    """A claimed payment whose block is reorged and whose transaction is re-included (block 100 -> 103) is the same
    payment: settlement stores block 103, so finality checks the block the transaction is in now (D87)."""
    paid = transfer("0x0d", "USDC", USDC_QUOTE, T0 + timedelta(minutes=4), sender=STRANGER_WALLET)
    h.settlement.check_claim(paid, "inv-1")
    h.settlement.record(paid, claimed_for="inv-1")  # the fast path, at block 100 ("0xblock")
    moved = replace(paid, block_number=103, block_hash="0xnewblock", block_time=T0 + timedelta(minutes=5))

    h.settlement.record_seen(moved)  # the watcher's rescan finds it in block 103

    assert [(p.block_number, p.block_hash) for p in h.settlement.pending("ethereum")] == [(103, "0xnewblock")]
    payment = h.store.payment("ethereum:0x0d:0")
    assert payment is not None
    assert (payment.status, payment.invoice_id, payment.usd) == (PaymentStatus.SEEN, "inv-1", Decimal("100.00"))
    h.settlement.finalized("ethereum:0x0d:0")
    paid_bill = h.store.bill("inv-1")
    assert paid_bill is not None
    assert paid_bill.status is BillStatus.PAID
    assert len(h.events(SETTLED)) == 1


def test_given_a_seen_payment_when_its_new_block_reverted_it_then_failed_and_the_bill_open_again(h: Harness) -> None:
    h.settlement.record_seen(transfer("0x0e", "USDC", USDC_QUOTE, T0 + timedelta(minutes=4)))
    processing = h.store.bill("inv-1")
    assert processing is not None
    assert processing.status is BillStatus.PROCESSING
    reverted = replace(
        transfer("0x0e", "USDC", USDC_QUOTE, T0 + timedelta(minutes=5), succeeded=False),
        block_number=104,
        block_hash="0xrevertedin",
    )

    h.settlement.record_seen(reverted)

    payment = h.store.payment("ethereum:0x0e:0")
    assert payment is not None
    assert payment.status is PaymentStatus.FAILED
    reopened = h.store.bill("inv-1")
    assert reopened is not None
    assert reopened.status is BillStatus.OPEN
    # pending as FAILED until block 104 is final: then final, never counted
    assert [(p.block_hash, p.failed) for p in h.settlement.pending("ethereum")] == [("0xrevertedin", True)]
    h.settlement.finalized("ethereum:0x0e:0", "0xrevertedin")
    assert h.settlement.pending("ethereum") == []
    final = h.store.payment("ethereum:0x0e:0")
    assert final is not None
    assert (final.status, final.final) == (PaymentStatus.FAILED, True)


def test_given_an_assigned_payment_past_monitoring_when_reorged_and_reincluded_then_it_keeps_its_bill(
    h: Harness,
) -> None:
    """An operator assigned a USDC payment made 4 days after the quote (past its 72 h monitoring): $100.00 at 1:1.
    A reorg orphans it; the re-included transaction is the same payment, still the bill's, valued as before - the
    quote's window does not apply again, and the watcher's report never raises."""
    late = T0 + timedelta(days=4)
    h.clock.now = late
    seen = transfer("0x0f", "USDC", USDC_QUOTE, late, sender=STRANGER_WALLET)
    h.settlement.record_seen(seen)
    h.settlement.assign("ethereum:0x0f:0", "acct-1", "inv-1")
    h.settlement.orphaned("ethereum:0x0f:0")
    reopened = h.store.bill("inv-1")
    assert reopened is not None
    assert reopened.status is BillStatus.OPEN

    h.settlement.record_seen(replace(seen, block_number=101, block_hash="0xnew"))

    payment = h.store.payment("ethereum:0x0f:0")
    assert payment is not None
    assert (payment.status, payment.invoice_id, payment.quote_id, payment.matched_by) == (
        PaymentStatus.SEEN,
        "inv-1",
        "q-usdc",
        "operator",
    )
    assert (payment.usd, payment.late, payment.transfer.block_number) == (Decimal("100.00"), True, 101)
    again = h.store.bill("inv-1")
    assert again is not None
    assert again.status is BillStatus.PROCESSING


def test_given_a_payment_settlement_cannot_attribute_when_the_watcher_reports_it_then_it_is_kept_unattributed(
    h: Harness,
) -> None:
    """An attributed payment orphaned, whose bill is gone when the transaction is re-included (a bill removed by an
    operator's data repair): the watcher's report is kept UNATTRIBUTED, for an operator, and does not raise."""
    seen = transfer("0x10", "USDC", USDC_QUOTE, T0 + timedelta(minutes=4))
    h.settlement.record_seen(seen)
    h.settlement.orphaned("ethereum:0x10:0")
    table = h.store._table
    h.store._client.delete_item(TableName=table, Key={"pk": {"S": "BILL#inv-1"}, "sk": {"S": "BILL"}})

    h.settlement.record_seen(replace(seen, block_number=101, block_hash="0xnew"))

    payment = h.store.payment("ethereum:0x10:0")
    assert payment is not None
    assert (payment.status, payment.invoice_id, payment.transfer.block_number) == (PaymentStatus.SEEN, None, 101)
    assert [p.payment_id for p in h.store.unattributed()] == ["ethereum:0x10:0"]


def test_given_a_submitted_transaction_whose_second_credit_has_no_quote_then_409_and_nothing_recorded(
    h: Harness,
) -> None:
    """Bill inv-2 has a USDC quote only. The submitted transaction pays it 100 USDC (a log) and 0.04 ETH (its value):
    the ETH credit has no quote, and its NoQuoteError comes before the USDC credit is written (no partial write)."""
    assert h.store.create_bill(bill("inv-2"))
    h.store.add_quote(quote("q2-usdc", "USDC", USDC_QUOTE, "1", invoice_id="inv-2"))
    usdc = transfer("0x11", "USDC", USDC_QUOTE, T0 + timedelta(minutes=4), index=7)
    eth = transfer("0x11", "ETH", ETH_QUOTE, T0 + timedelta(minutes=4), index=-1)

    class Inspector:
        def transfers(self, tx_id: str) -> list[ObservedTransfer]:
            return [usdc, eth]

    ports = logic.ApiPorts(
        h.store, h.settlement, h.rates, CHAINS, lambda chain: Inspector(), QuotePolicy(), SignInPolicy("x", "y")
    )
    with pytest.raises(NoQuoteError, match="no open ETH quote on ethereum"):
        logic.submit_transaction(ports, "acct-1", "inv-2", "ethereum", "0x11")

    assert h.store.payment(usdc.payment_id) is None
    assert h.store.payment(eth.payment_id) is None
    untouched = h.store.bill("inv-2")
    assert untouched is not None
    assert (untouched.status, untouched.payments) == (BillStatus.OPEN, ())
    assert h.published.published == []


def test_given_a_claimed_payment_re_mined_at_another_index_and_back_then_its_bill_follows_it_and_counts_it_once(
    h: Harness,
) -> None:
    """100 USDC from an unlinked wallet, claimed for inv-1 at log index 0 of block 100. Re-mined at index 1 of block
    103 (the old block orphaned first, as the watcher's reorg check does): the new id keeps inv-1, $100.00, the fast
    path. The chain reorgs back to block 100 (index 0 again; this time the new id is still SEEN when the old one is
    re-seen, as the finality check reports it): the bill moves back. Each time one payment counts: $100.00, not 200."""
    paid = transfer("0x1a", "USDC", USDC_QUOTE, T0 + timedelta(minutes=4), sender=STRANGER_WALLET)
    h.settlement.check_claim(paid, "inv-1")
    h.settlement.record(paid, claimed_for="inv-1")
    h.settlement.orphaned("ethereum:0x1a:0")
    remined = replace(paid, index=1, block_number=103, block_hash="0xnewblock")

    h.settlement.record_seen(remined)

    new = h.store.payment("ethereum:0x1a:1")
    old = h.store.payment("ethereum:0x1a:0")
    assert new is not None
    assert old is not None
    assert (new.status, new.invoice_id, new.matched_by, new.usd) == (
        PaymentStatus.SEEN,
        "inv-1",
        "fast_path",
        Decimal("100.00"),
    )
    assert (old.status, old.moved_to) == (PaymentStatus.ORPHANED, "ethereum:0x1a:1")
    moved_bill = h.store.bill("inv-1")
    assert moved_bill is not None
    assert moved_bill.status is BillStatus.PROCESSING
    assert remaining_usd(moved_bill) == Decimal("0.00")
    assert [p.payment_id for p in h.settlement.pending("ethereum")] == ["ethereum:0x1a:1"]
    assert h.store.unattributed() == []
    assert len(h.events(SEEN)) == 1  # announced once, under the first id

    h.settlement.record_seen(paid)  # back in block 100 at index 0, the new id still SEEN in block 103

    back = h.store.payment("ethereum:0x1a:0")
    left = h.store.payment("ethereum:0x1a:1")
    assert back is not None
    assert left is not None
    assert (back.status, back.invoice_id, back.moved_to) == (PaymentStatus.SEEN, "inv-1", None)
    assert (left.status, left.moved_to) == (PaymentStatus.ORPHANED, "ethereum:0x1a:0")
    h.settlement.orphaned("ethereum:0x1a:1")  # the watcher's orphaning after: nothing left to move
    h.settlement.finalized("ethereum:0x1a:0")
    paid_bill = h.store.bill("inv-1")
    assert paid_bill is not None
    assert (paid_bill.status, paid_bill.settled_usd, paid_bill.credit_usd) == (
        BillStatus.PAID,
        Decimal("100.00"),
        Decimal("0.00"),
    )
    assert paid_bill.settled_payment_ids == ("ethereum:0x1a:0",)
    assert len(h.events(SETTLED)) == 1


def test_given_a_payment_re_mined_at_another_index_when_claimed_for_another_bill_then_refused(h: Harness) -> None:
    h.store.create_bill(bill("inv-2"))
    h.store.add_quote(quote("q2-usdc", "USDC", USDC_QUOTE, "1", invoice_id="inv-2"))
    paid = transfer("0x1b", "USDC", USDC_QUOTE, T0 + timedelta(minutes=4), sender=STRANGER_WALLET)
    h.settlement.record(paid, claimed_for="inv-1")
    h.settlement.orphaned("ethereum:0x1b:0")
    remined = replace(paid, index=2, block_number=103, block_hash="0xnewblock")

    with pytest.raises(AlreadyClaimedError):
        h.settlement.check_claim(remined, "inv-2")
    with pytest.raises(AlreadyClaimedError):
        h.settlement.record(remined, claimed_for="inv-2")
    assert h.store.payment("ethereum:0x1b:2") is None


def test_given_two_identical_credits_whose_indexes_shift_down_when_re_mined_then_the_second_is_kept_not_dropped(
    h: Harness,
) -> None:
    """One transaction from an unlinked wallet with two identical 100 USDC credits, at log indexes 3 and 4 of block
    100: both unattributed; the operator assigns index 3 to inv-1, index 4 stays for an operator. Re-mined in block 103
    with one log fewer before them: indexes 2 and 3, reported in index order before block 100 is noticed orphaned.
    103:2 takes over inv-1 (index 3 moved to it); 103:3 is the transaction's other credit in that block - a new
    unattributed payment, not index 3's credit seen again. Index 4 is then orphaned: 200 USDC in, both recorded."""
    first = replace(transfer("0x77", "USDC", USDC_QUOTE, T0 + timedelta(minutes=4), sender=STRANGER_WALLET), index=3)
    h.settlement.record_seen(first)
    h.settlement.record_seen(replace(first, index=4))
    h.settlement.assign("ethereum:0x77:3", "acct-1", "inv-1")

    h.settlement.record_seen(replace(first, index=2, block_number=103, block_hash="0xC"))
    h.settlement.record_seen(replace(first, index=3, block_number=103, block_hash="0xC"))
    h.settlement.orphaned("ethereum:0x77:4", "0xblock")

    carried = h.store.payment("ethereum:0x77:2")
    second = h.store.payment("ethereum:0x77:3")
    gone = h.store.payment("ethereum:0x77:4")
    assert carried is not None
    assert second is not None
    assert gone is not None
    assert (carried.status, carried.invoice_id, carried.usd, carried.transfer.block_hash) == (
        PaymentStatus.SEEN,
        "inv-1",
        Decimal("100.00"),
        "0xC",
    )
    assert (second.status, second.invoice_id, second.moved_to, second.transfer.block_hash) == (
        PaymentStatus.SEEN,
        None,
        None,
        "0xC",
    )
    assert second.transfer.atomic_amount == USDC_QUOTE
    assert gone.status is PaymentStatus.ORPHANED
    assert "ethereum:0x77:3" in [p.payment_id for p in h.store.unattributed()]
    assert sorted(p.payment_id for p in h.settlement.pending("ethereum")) == ["ethereum:0x77:2", "ethereum:0x77:3"]
    counted = h.store.bill("inv-1")
    assert counted is not None
    assert (counted.status, remaining_usd(counted)) == (BillStatus.PROCESSING, Decimal("0.00"))  # $100 once


def test_given_an_attributed_payment_orphaned_then_reverted_elsewhere_when_it_succeeds_later_then_it_keeps_its_bill(
    h: Harness,
) -> None:
    """0.04 ETH from an unlinked wallet claimed for inv-1 (the fast path): its block is orphaned; the transaction is
    seen reverted in block 103 (not final), then succeeding in block 104: it is still inv-1's, $2,500.00 x 0.04 =
    $100.00, and the bill is paid once final."""
    paid = transfer("0x88", "ETH", ETH_QUOTE, T0 + timedelta(minutes=4), sender=STRANGER_WALLET, index=-1)
    h.settlement.record(paid, claimed_for="inv-1")
    h.settlement.orphaned("ethereum:0x88:-1", "0xblock")

    h.settlement.record_seen(replace(paid, block_number=103, block_hash="0xB", succeeded=False))

    failed = h.store.payment("ethereum:0x88:-1")
    assert failed is not None
    assert (failed.status, failed.final, failed.invoice_id, failed.matched_by) == (
        PaymentStatus.FAILED,
        False,
        "inv-1",
        "fast_path",
    )
    assert [(p.payment_id, p.failed) for p in h.settlement.pending("ethereum")] == [("ethereum:0x88:-1", True)]
    open_bill = h.store.bill("inv-1")
    assert open_bill is not None
    assert (open_bill.status, remaining_usd(open_bill)) == (BillStatus.OPEN, Decimal("100.00"))

    h.settlement.record_seen(replace(paid, block_number=104, block_hash="0xC", succeeded=True))

    again = h.store.payment("ethereum:0x88:-1")
    assert again is not None
    assert (again.status, again.invoice_id, again.matched_by, again.usd) == (
        PaymentStatus.SEEN,
        "inv-1",
        "fast_path",
        Decimal("100.00"),
    )
    assert h.store.unattributed() == []
    h.settlement.finalized("ethereum:0x88:-1", "0xC")
    settled = h.store.bill("inv-1")
    assert settled is not None
    assert (settled.status, settled.settled_usd) == (BillStatus.PAID, Decimal("100.00"))
    assert len(h.events(SETTLED)) == 1


def test_given_a_failed_payment_whose_block_is_not_final_when_it_succeeds_in_another_block_then_it_pays(
    h: Harness,
) -> None:
    """0.04 ETH from the linked wallet, reverted in block 100 (recorded FAILED, pending its block's finality); the
    block is reorged away and the transaction succeeds in block 103: read again, it pays inv-1 at $2,500.00 x 0.04 =
    $100.00 by the wallet, and the bill is paid once final."""
    failed = transfer("0x2a", "ETH", ETH_QUOTE, T0 + timedelta(minutes=4), index=-1, succeeded=False)
    h.settlement.record_seen(failed)
    stored = h.store.payment("ethereum:0x2a:-1")
    assert stored is not None
    assert (stored.status, stored.final) == (PaymentStatus.FAILED, False)
    assert [(p.payment_id, p.failed) for p in h.settlement.pending("ethereum")] == [("ethereum:0x2a:-1", True)]
    succeeded = replace(failed, succeeded=True, block_number=103, block_hash="0xnewblock")

    h.settlement.record_seen(succeeded)

    payment = h.store.payment("ethereum:0x2a:-1")
    assert payment is not None
    assert (payment.status, payment.invoice_id, payment.matched_by, payment.usd) == (
        PaymentStatus.SEEN,
        "inv-1",
        "wallet",
        Decimal("100.00"),
    )
    assert payment.transfer.block_hash == "0xnewblock"
    assert len(h.events(SEEN)) == 1
    h.settlement.finalized("ethereum:0x2a:-1")
    paid = h.store.bill("inv-1")
    assert paid is not None
    assert (paid.status, paid.settled_usd) == (BillStatus.PAID, Decimal("100.00"))


def test_given_a_failed_payment_whose_block_is_final_when_seen_succeeding_elsewhere_then_it_stays_failed(
    h: Harness,
) -> None:
    failed = transfer("0x2b", "ETH", ETH_QUOTE, T0 + timedelta(minutes=4), index=-1, succeeded=False)
    h.settlement.record_seen(failed)
    h.settlement.finalized("ethereum:0x2b:-1")  # its block is final: so is its failure
    assert h.settlement.pending("ethereum") == []

    h.settlement.record_seen(replace(failed, succeeded=True, block_number=103, block_hash="0xelsewhere"))

    payment = h.store.payment("ethereum:0x2b:-1")
    assert payment is not None
    assert (payment.status, payment.final, payment.invoice_id) == (PaymentStatus.FAILED, True, None)
    still = h.store.bill("inv-1")
    assert still is not None
    assert still.status is BillStatus.OPEN


def test_given_a_failed_payment_whose_block_is_orphaned_then_it_is_orphaned_and_counts_when_re_seen(
    h: Harness,
) -> None:
    failed = transfer("0x2c", "USDC", USDC_QUOTE, T0 + timedelta(minutes=4), succeeded=False)
    h.settlement.record_seen(failed)

    h.settlement.orphaned("ethereum:0x2c:0")
    orphaned = h.store.payment("ethereum:0x2c:0")
    assert orphaned is not None
    assert orphaned.status is PaymentStatus.ORPHANED
    h.settlement.record_seen(replace(failed, succeeded=True, block_number=104, block_hash="0xagain"))

    payment = h.store.payment("ethereum:0x2c:0")
    assert payment is not None
    assert (payment.status, payment.invoice_id, payment.usd) == (PaymentStatus.SEEN, "inv-1", Decimal("100.00"))


def test_given_a_payment_moved_to_another_block_after_the_watcher_read_it_then_finalize_on_the_old_block_waits(
    h: Harness,
) -> None:
    """The watcher read the payment in block 100 ("0xblock") and checked that block final; meanwhile a concurrent
    report moved it to block 103. Finalizing on 0xblock must not finalize it in 103, a block nobody checked: it stays
    SEEN (the bill PROCESSING) until the check of 103 finalizes it; orphaning on 0xblock leaves it too."""
    paid = transfer("0x3a", "USDC", USDC_QUOTE, T0 + timedelta(minutes=4))
    h.settlement.record_seen(paid)
    (read,) = h.settlement.pending("ethereum")
    h.settlement.record_seen(replace(paid, block_number=103, block_hash="0xnewblock"))  # the concurrent report

    h.settlement.finalized(read.payment_id, read.block_hash)
    h.settlement.orphaned(read.payment_id, read.block_hash)

    payment = h.store.payment("ethereum:0x3a:0")
    assert payment is not None
    assert (payment.status, payment.transfer.block_hash) == (PaymentStatus.SEEN, "0xnewblock")
    waiting = h.store.bill("inv-1")
    assert waiting is not None
    assert waiting.status is BillStatus.PROCESSING
    assert h.events(SETTLED) == []

    h.settlement.finalized(read.payment_id, "0xnewblock")

    paid_bill = h.store.bill("inv-1")
    assert paid_bill is not None
    assert paid_bill.status is BillStatus.PAID


def test_given_a_stale_block_when_the_finalize_write_races_a_move_then_the_conditional_write_refuses_it(
    h: Harness,
) -> None:
    """The store's side of it: the finalize's write is conditional on the recorded block hash, so a move that lands
    between settlement's read and its write (simulated by writing under it) makes the write conflict, not win."""
    paid = transfer("0x3b", "USDC", USDC_QUOTE, T0 + timedelta(minutes=4))
    h.settlement.record_seen(paid)
    stored = h.store.payment("ethereum:0x3b:0")
    assert stored is not None
    h.settlement.record_seen(replace(paid, block_number=103, block_hash="0xnewblock"))

    with pytest.raises(ConflictError):
        h.store.save(
            SettlementChange(
                replace(stored, status=PaymentStatus.FINALIZED),
                payment_expected=PaymentStatus.SEEN,
                block_expected="0xblock",
            )
        )
    payment = h.store.payment("ethereum:0x3b:0")
    assert payment is not None
    assert (payment.status, payment.transfer.block_hash) == (PaymentStatus.SEEN, "0xnewblock")


def test_given_a_new_unattributed_credit_at_a_re_mined_index_used_before_then_its_alert_has_its_own_id(
    h: Harness,
) -> None:
    """One transaction from an unlinked wallet with two credits, 5 USDC at log index 1 and 7 USDC at 2, both
    unattributed and alerted. Its block is reorged away and the transaction re-mined with one log fewer before it: 5 at
    index 0, 7 at index 1 - a new credit at index 1, whose id ``ethereum:0xmulti:1`` was the 5 USDC's. Its alert must
    not carry the id of the 5 USDC's alert (operators' alerts are deduplicated by event id): it is the id's second
    recording, ``#1``."""
    first = transfer("0xmulti", "USDC", 5_000_000, T0 + timedelta(minutes=4), sender=STRANGER_WALLET, index=1)
    second = replace(first, index=2, atomic_amount=7_000_000)
    h.settlement.record_seen(first)
    h.settlement.record_seen(second)
    h.clock.now = T0 + timedelta(minutes=7)
    h.settlement.orphaned("ethereum:0xmulti:1", "0xblock")
    h.settlement.orphaned("ethereum:0xmulti:2", "0xblock")
    moved = {"block_number": 101, "block_hash": "0xblock-b"}
    h.settlement.record_seen(replace(first, index=0, **moved))  # type: ignore[arg-type]
    h.settlement.record_seen(replace(second, index=1, **moved))  # type: ignore[arg-type]

    alerts = [(alert["event_id"], alert["amount"]) for alert in h.events(UNATTRIBUTED)]
    assert alerts == [
        ("crypto-unattributed:ethereum:0xmulti:1", "5"),
        ("crypto-unattributed:ethereum:0xmulti:2", "7"),
        ("crypto-unattributed:ethereum:0xmulti:0", "5"),
        ("crypto-unattributed:ethereum:0xmulti:1#1", "7"),
    ]
    assert len({event_id for event_id, _ in alerts}) == 4
    listed = {p.payment_id: p.transfer.atomic_amount for p in h.store.unattributed()}
    assert listed == {"ethereum:0xmulti:0": 5_000_000, "ethereum:0xmulti:1": 7_000_000}
    h.settlement.record_seen(replace(second, index=1, **moved))  # type: ignore[arg-type]  # seen again: no alert
    assert len(h.events(UNATTRIBUTED)) == 4


def test_given_a_credit_matched_at_a_re_mined_index_used_by_a_moved_claim_then_its_seen_event_has_its_own_id(
    h: Harness,
) -> None:
    """One transaction from a wallet nobody had linked: 100 USDC at index 1 (the customer claims it for inv-1) and 30
    USDC at 2 (unattributed). The wallet is then linked to the customer's account, and the block reorged away: the
    transaction re-mined at indexes 0 and 1. The 100 USDC at 0 keeps the claim (D155; the claim's id, index 1, moved
    to it); the 30 USDC at 1 is now matched by the linked wallet. Its ``CryptoPaymentSeen.v1`` must not carry the
    claim's id (``crypto-seen:ethereum:0xpair:1``), which the customer's alerts already hold."""
    claimed = transfer("0xpair", "USDC", USDC_QUOTE, T0 + timedelta(minutes=4), sender=STRANGER_WALLET, index=1)
    other = replace(claimed, index=2, atomic_amount=30_000_000)
    h.settlement.check_claim(claimed, "inv-1")
    h.settlement.record(claimed, claimed_for="inv-1")
    h.settlement.record_seen(other)
    h.store.link_wallet("evm", STRANGER_WALLET, "acct-1", "ethereum", T0 + timedelta(minutes=6))
    moved = {"block_number": 101, "block_hash": "0xblock-b"}
    h.settlement.record_seen(replace(claimed, index=0, **moved))  # type: ignore[arg-type]
    h.settlement.record_seen(replace(other, index=1, **moved))  # type: ignore[arg-type]

    seen = [(event["event_id"], event["amount_usd"]) for event in h.events(SEEN)]
    assert seen == [("crypto-seen:ethereum:0xpair:1", "100.00"), ("crypto-seen:ethereum:0xpair:1#1", "30.00")]
    carried = h.store.payment("ethereum:0xpair:0")
    matched = h.store.payment("ethereum:0xpair:1")
    assert carried is not None
    assert matched is not None
    assert (carried.invoice_id, carried.matched_by, carried.usd) == ("inv-1", "fast_path", Decimal("100.00"))
    assert (matched.invoice_id, matched.matched_by, matched.usd) == ("inv-1", "wallet", Decimal("30.00"))


def test_given_a_transaction_re_mined_with_its_indexes_shifted_up_then_each_credit_is_recorded_at_its_new_index(
    h: Harness,
) -> None:
    """One transaction from an unlinked wallet: 100 USDC at log index 0 (claimed for inv-1) and 30 USDC at 1
    (unattributed). Its block is reorged away and the transaction re-mined after another transaction's log: 100 at
    index 1, 30 at 2, reported (as the finality check's receipt reports them) while both are still SEEN in the dropped
    block. Index 1 now holds the 100 USDC: it takes the claim (D155) instead of being taken for the 30 USDC moved to
    another block (which would count the 30 twice and leave the claim SEEN in a dead block for ever); the 30 is at 2,
    unattributed; the bill counts $100 once and is paid when index 1 is final."""
    claimed = transfer("0xup", "USDC", USDC_QUOTE, T0 + timedelta(minutes=4), sender=STRANGER_WALLET, index=0)
    other = replace(claimed, index=1, atomic_amount=30_000_000)
    h.settlement.check_claim(claimed, "inv-1")
    h.settlement.record(claimed, claimed_for="inv-1")
    h.settlement.record_seen(other)
    h.clock.now = T0 + timedelta(minutes=7)
    moved = {"block_number": 101, "block_hash": "0xblock-b"}

    h.settlement.record_seen(replace(claimed, index=1, **moved))  # type: ignore[arg-type]
    h.settlement.record_seen(replace(other, index=2, **moved))  # type: ignore[arg-type]

    old, now_claim, now_other = (h.store.payment(f"ethereum:0xup:{i}") for i in range(3))
    assert old is not None
    assert now_claim is not None
    assert now_other is not None
    assert (old.status, old.moved_to) == (PaymentStatus.ORPHANED, "ethereum:0xup:1")
    assert (now_claim.status, now_claim.transfer.atomic_amount, now_claim.transfer.block_hash) == (
        PaymentStatus.SEEN,
        USDC_QUOTE,
        "0xblock-b",
    )
    assert (now_claim.invoice_id, now_claim.matched_by, now_claim.usd) == ("inv-1", "fast_path", Decimal("100.00"))
    assert (now_other.status, now_other.transfer.atomic_amount, now_other.invoice_id) == (
        PaymentStatus.SEEN,
        30_000_000,
        None,
    )
    assert {p.payment_id: p.transfer.atomic_amount for p in h.store.unattributed()} == {"ethereum:0xup:2": 30_000_000}
    assert sorted(p.payment_id for p in h.settlement.pending("ethereum")) == ["ethereum:0xup:1", "ethereum:0xup:2"]

    h.settlement.finalized("ethereum:0xup:1", "0xblock-b")
    paid = h.store.bill("inv-1")
    assert paid is not None
    assert (paid.status, paid.settled_usd, paid.settled_payment_ids) == (
        BillStatus.PAID,
        Decimal("100.00"),
        ("ethereum:0xup:1",),
    )


def _claimed(h: Harness, tx: str) -> tuple[ObservedTransfer, ObservedTransfer]:
    """One transaction from a wallet nobody linked paying two bills of acct-1: 100 USDC at log index 0 claimed for
    inv-1 ($100.00), 40 USDC at 1 claimed for inv-2 ($40.00, its quote asks 40 USDC) - both by the fast path."""
    h.store.create_bill(bill("inv-2", total="40.00"))
    h.store.add_quote(quote("q2-usdc", "USDC", 40_000_000, "1", invoice_id="inv-2", amount_usd="40.00"))
    first = transfer(tx, "USDC", USDC_QUOTE, T0 + timedelta(minutes=4), sender=STRANGER_WALLET, index=0)
    second = replace(first, index=1, atomic_amount=40_000_000)
    for credit, invoice_id in ((first, "inv-1"), (second, "inv-2")):
        h.settlement.check_claim(credit, invoice_id)
        h.settlement.record(credit, claimed_for=invoice_id)
    return first, second


def _counted(h: Harness, invoice_id: str) -> dict[str, tuple[PaymentStatus, Decimal]]:
    """The bill's lines that count (seen or finalized): payment id -> (status, USD)."""
    found = h.store.bill(invoice_id)
    assert found is not None
    return {
        line.payment_id: (line.status, line.usd)
        for line in found.payments
        if line.status in (PaymentStatus.SEEN, PaymentStatus.FINALIZED)
    }


def test_given_a_transaction_paying_two_bills_re_mined_with_its_indexes_shifted_up_then_both_keep_their_bills(
    h: Harness,
) -> None:
    """The transaction of ``_claimed`` is reorged away and re-mined in block 101 after another transaction's log: 100
    USDC at index 1, 40 USDC at 2, reported in index order while both are still SEEN in the dropped block. Index 1
    holds the 100 USDC now: it takes inv-1's claim (D155), and the 40 USDC's record at index 1 is kept under its own
    id (archived, D168), so at index 2 the 40 USDC keeps inv-2's claim - before, it was matched afresh, left
    unattributed (nobody linked the wallet), and inv-2 never paid. Each bill counts its credit once: $100.00 and
    $40.00, both PAID when their block is final."""
    first, second = _claimed(h, "0xtwo")
    h.clock.now = T0 + timedelta(minutes=7)
    moved = {"block_number": 101, "block_hash": "0xblock-b"}

    h.settlement.record_seen(replace(first, index=1, **moved))  # type: ignore[arg-type]
    h.settlement.record_seen(replace(second, index=2, **moved))  # type: ignore[arg-type]

    at_1, at_2 = h.store.payment("ethereum:0xtwo:1"), h.store.payment("ethereum:0xtwo:2")
    assert at_1 is not None
    assert at_2 is not None
    assert (at_1.transfer.atomic_amount, at_1.invoice_id, at_1.matched_by, at_1.usd) == (
        USDC_QUOTE,
        "inv-1",
        "fast_path",
        Decimal("100.00"),
    )
    assert (at_2.transfer.atomic_amount, at_2.invoice_id, at_2.matched_by, at_2.usd) == (
        40_000_000,
        "inv-2",
        "fast_path",
        Decimal("40.00"),
    )
    assert h.store.unattributed() == []
    assert _counted(h, "inv-1") == {"ethereum:0xtwo:1": (PaymentStatus.SEEN, Decimal("100.00"))}
    assert _counted(h, "inv-2") == {"ethereum:0xtwo:2": (PaymentStatus.SEEN, Decimal("40.00"))}
    assert sorted(p.payment_id for p in h.settlement.pending("ethereum")) == ["ethereum:0xtwo:1", "ethereum:0xtwo:2"]

    h.settlement.finalized("ethereum:0xtwo:1", "0xblock-b")
    h.settlement.finalized("ethereum:0xtwo:2", "0xblock-b")
    paid = {invoice_id: h.store.bill(invoice_id) for invoice_id in ("inv-1", "inv-2")}
    assert {k: (b.status, b.settled_usd, b.credit_usd) for k, b in paid.items() if b is not None} == {
        "inv-1": (BillStatus.PAID, Decimal("100.00"), Decimal("0.00")),
        "inv-2": (BillStatus.PAID, Decimal("40.00"), Decimal("0.00")),
    }
    assert len(h.events(SETTLED)) == 2


def test_given_a_transaction_paying_two_bills_re_mined_shifted_and_then_back_then_each_credit_counts_once(
    h: Harness,
) -> None:
    """The transaction of ``_claimed`` re-mined at indexes 1 and 2 (block 101), then that block reorged away too and
    the transaction back at 0 and 1 (block 102): every move keeps both claims - the 100 USDC's record at index 1 is
    archived when the 40 USDC lands there again - and no credit counts twice on any bill."""
    first, second = _claimed(h, "0xback")
    h.clock.now = T0 + timedelta(minutes=7)
    shifted = {"block_number": 101, "block_hash": "0xblock-b"}
    back = {"block_number": 102, "block_hash": "0xblock-c"}
    h.settlement.record_seen(replace(first, index=1, **shifted))  # type: ignore[arg-type]
    h.settlement.record_seen(replace(second, index=2, **shifted))  # type: ignore[arg-type]

    h.settlement.record_seen(replace(first, index=0, **back))  # type: ignore[arg-type]
    h.settlement.record_seen(replace(second, index=1, **back))  # type: ignore[arg-type]
    h.settlement.orphaned("ethereum:0xback:2", "0xblock-b")  # the finality check: index 2's block is gone

    assert _counted(h, "inv-1") == {"ethereum:0xback:0": (PaymentStatus.SEEN, Decimal("100.00"))}
    assert _counted(h, "inv-2") == {"ethereum:0xback:1": (PaymentStatus.SEEN, Decimal("40.00"))}
    at_0, at_1 = h.store.payment("ethereum:0xback:0"), h.store.payment("ethereum:0xback:1")
    assert at_0 is not None
    assert at_1 is not None
    assert (at_0.transfer.atomic_amount, at_0.invoice_id, at_0.transfer.block_hash) == (
        USDC_QUOTE,
        "inv-1",
        "0xblock-c",
    )
    assert (at_1.transfer.atomic_amount, at_1.invoice_id, at_1.transfer.block_hash) == (
        40_000_000,
        "inv-2",
        "0xblock-c",
    )
    assert h.store.unattributed() == []
    h.settlement.finalized("ethereum:0xback:0", "0xblock-c")
    h.settlement.finalized("ethereum:0xback:1", "0xblock-c")
    paid = {invoice_id: h.store.bill(invoice_id) for invoice_id in ("inv-1", "inv-2")}
    assert {k: (b.status, b.settled_usd, b.credit_usd) for k, b in paid.items() if b is not None} == {
        "inv-1": (BillStatus.PAID, Decimal("100.00"), Decimal("0.00")),
        "inv-2": (BillStatus.PAID, Decimal("40.00"), Decimal("0.00")),
    }


def test_given_one_bill_paid_by_two_credits_of_a_transaction_re_mined_shifted_up_then_both_count_once(
    h: Harness,
) -> None:
    """inv-1 ($100.00) paid by one transaction from an unlinked wallet: 60 USDC at index 0 and 40 USDC at 1, both
    unattributed and assigned to inv-1 by an operator. Re-mined at 1 and 2: the bill's lines are keyed by payment id,
    so the 40 USDC's line at index 1 goes with its archived record and is not taken for the 60 USDC's new one; the 40
    USDC at 2 keeps the operator's assignment. $100.00 counted once, PAID once final."""
    first = transfer("0xone", "USDC", 60_000_000, T0 + timedelta(minutes=4), sender=STRANGER_WALLET, index=0)
    second = replace(first, index=1, atomic_amount=40_000_000)
    h.settlement.record_seen(first)
    h.settlement.record_seen(second)
    h.settlement.assign("ethereum:0xone:0", "acct-1", "inv-1")
    h.settlement.assign("ethereum:0xone:1", "acct-1", "inv-1")
    h.clock.now = T0 + timedelta(minutes=7)
    moved = {"block_number": 101, "block_hash": "0xblock-b"}

    h.settlement.record_seen(replace(first, index=1, **moved))  # type: ignore[arg-type]
    h.settlement.record_seen(replace(second, index=2, **moved))  # type: ignore[arg-type]

    assert _counted(h, "inv-1") == {
        "ethereum:0xone:1": (PaymentStatus.SEEN, Decimal("60.00")),
        "ethereum:0xone:2": (PaymentStatus.SEEN, Decimal("40.00")),
    }
    assert h.store.unattributed() == []
    h.settlement.finalized("ethereum:0xone:1", "0xblock-b")
    h.settlement.finalized("ethereum:0xone:2", "0xblock-b")
    paid = h.store.bill("inv-1")
    assert paid is not None
    assert (paid.status, paid.settled_usd, paid.credit_usd) == (BillStatus.PAID, Decimal("100.00"), Decimal("0.00"))


@pytest.mark.parametrize(
    ("usdc", "wei", "status", "written_off", "remaining"),
    [
        # 99.00 USDC and 1 wei of ETH ($0.00 at $2,500): all the value in USDC, so USDC's band, $0.50 - not paid.
        # (Before: any ETH among the payments gave the bill ETH's 1 % = $1.00, and 1 wei wrote off $1.00.)
        (99_000_000, 1, BillStatus.OPEN, "0.00", "1.00"),
        # 50 USDC and 0.01968 ETH ($49.20): the band weighted by the value paid in each,
        # (0.50 x 50.00 + 1.00 x 49.20) / 99.20 = 74.20 / 99.20 = 0.7480 -> down $0.74; short 0.80: not paid.
        (50_000_000, 19_680_000_000_000_000, BillStatus.OPEN, "0.00", "0.80"),
        # 50 USDC and 0.0198 ETH ($49.50): (25.00 + 49.50) / 99.50 = 0.7487 -> down $0.74; short 0.50: paid.
        (50_000_000, 19_800_000_000_000_000, BillStatus.PAID, "0.50", "0.50"),
        # 50.25 USDC and 0.0196 ETH ($49.00): (0.50 x 50.25 + 1.00 x 49.00) / 99.25 = 74.125 / 99.25 = 0.74685
        # -> down $0.74; short 0.75: not paid (half-up made it $0.75 and wrote off 0.75, half a cent past the rule)
        (50_250_000, 19_600_000_000_000_000, BillStatus.OPEN, "0.00", "0.75"),
        # only ETH, 0.0396 ETH ($99.00): ETH's 1 % = $1.00, as before
        (0, 39_600_000_000_000_000, BillStatus.PAID, "1.00", "1.00"),
    ],
)
def test_given_usdc_and_eth_paying_one_bill_then_the_tolerance_is_weighted_by_what_each_paid(
    h: Harness, usdc: int, wei: int, status: BillStatus, written_off: str, remaining: str
) -> None:
    """A $100.00 bill paid from the linked wallet in USDC and ETH (locked at $2,500.00), both final. The shortfall
    written off is USDC's band (min(0.5 %, $1) = $0.50) for what USDC paid and ETH's (1 % = $1.00) for what ETH paid,
    weighted by their USD: a dust ETH payment must not open ETH's wider band for the whole bill."""
    paid = []
    if usdc:
        paid.append(transfer("0xu", "USDC", usdc, T0 + timedelta(minutes=4)))
    paid.append(transfer("0xe", "ETH", wei, T0 + timedelta(minutes=4), index=-1))
    for credit in paid:
        h.settlement.record_seen(credit)
    for credit in paid:
        h.settlement.finalized(credit.payment_id, "0xblock")

    found = h.store.bill("inv-1")
    assert found is not None
    assert (found.status, found.written_off_usd, remaining_usd(found)) == (
        status,
        Decimal(written_off),
        Decimal(remaining),
    )


def test_given_a_bill_too_large_to_take_another_line_then_the_credit_is_kept_for_an_operator_and_the_run_goes_on(
    stack: Stack,
) -> None:
    """A bill whose item is as large as DynamoDB takes (400 KB; its one line padded to the largest size the table
    accepts, found by trying): a 100 USDC credit from the account's linked wallet matches it, and the bill with one
    more line cannot be stored. The watcher's report is never refused: the credit is kept UNATTRIBUTED for an
    operator (and alerted), the bill unchanged - before, the store's refusal escaped ``record_seen`` and failed the
    watcher's run at that credit, every run, so no later payment on the chain was recorded."""
    from kilo_billing.aws import InvalidRequestError  # noqa: PLC0415
    from kilo_crypto_watch.model import BillPayment  # noqa: PLC0415

    h = harness(stack)
    h.store.link_wallet("evm", CUSTOMER_WALLET, "acct-1", "ethereum", T0)
    h.clock.now = T0 + timedelta(minutes=5)
    for pad in range(400 * 1024, 390 * 1024, -64):
        line = BillPayment("p" * pad, "0xt", "USDC", Decimal("0.00"), PaymentStatus.ORPHANED)
        try:
            assert h.store.create_bill(replace(bill(), payments=(line,)))
            break
        except InvalidRequestError:
            continue
    h.store.add_quote(quote("q-usdc", "USDC", USDC_QUOTE, "1"))
    full = h.store.bill("inv-1")
    assert full is not None

    paid = transfer("0xfull", "USDC", USDC_QUOTE, T0 + timedelta(minutes=4))
    h.settlement.record_seen(paid)

    kept = h.store.payment("ethereum:0xfull:0")
    assert kept is not None
    assert (kept.status, kept.invoice_id) == (PaymentStatus.SEEN, None)
    assert [p.payment_id for p in h.store.unattributed()] == ["ethereum:0xfull:0"]
    assert [alert["amount"] for alert in h.events(UNATTRIBUTED)] == ["100"]
    assert h.store.bill("inv-1") == full


@pytest.mark.parametrize(("lines", "attributed"), [(499, True), (500, False)])
def test_given_a_bill_holding_the_most_lines_it_takes_then_a_further_credit_is_kept_for_an_operator(
    stack: Stack, lines: int, attributed: bool
) -> None:
    """A bill takes 500 payment lines (``SettlementPolicy.max_bill_lines``; its item stays far below DynamoDB's 400 KB
    whatever the lines' statuses grow to, so finalizing a line never meets the limit). With 499 (orphaned) lines, a 100
    USDC credit from the linked wallet is its 500th; with 500, it is kept UNATTRIBUTED for an operator, the bill
    unchanged - before, the bill grew until the table refused it."""
    from kilo_crypto_watch.model import BillPayment  # noqa: PLC0415

    h = harness(stack)
    h.store.link_wallet("evm", CUSTOMER_WALLET, "acct-1", "ethereum", T0)
    old = tuple(
        BillPayment(f"ethereum:0xold{i}:0", f"0xold{i}", "USDC", Decimal("0.00"), PaymentStatus.ORPHANED)
        for i in range(lines)
    )
    assert h.store.create_bill(replace(bill(), payments=old))
    h.store.add_quote(quote("q-usdc", "USDC", USDC_QUOTE, "1"))
    h.clock.now = T0 + timedelta(minutes=5)

    h.settlement.record_seen(transfer("0xnext", "USDC", USDC_QUOTE, T0 + timedelta(minutes=4)))

    kept = h.store.payment("ethereum:0xnext:0")
    assert kept is not None
    found = h.store.bill("inv-1")
    assert found is not None
    assert (kept.invoice_id, len(found.payments), found.status) == (
        ("inv-1", 500, BillStatus.PROCESSING) if attributed else (None, 500, BillStatus.OPEN)
    )
    assert [p.payment_id for p in h.store.unattributed()] == ([] if attributed else ["ethereum:0xnext:0"])


def test_given_a_bill_holding_the_most_lines_when_its_credit_is_re_mined_at_another_index_then_the_bill_keeps_it(
    stack: Stack,
) -> None:
    """A bill at the 500-line cap (499 orphaned lines and a 100 USDC credit claimed for it at log index 0) whose block
    is reorged away, the transaction re-mined at index 1: the credit's new id carries its line (the old one stays,
    ORPHANED and pointing at the new), so the bill keeps counting it - 501 lines, $0.00 left, PROCESSING. Before, the
    move was refused as a 501st new line: the credit was kept UNATTRIBUTED and the bill, which had counted it, fell
    back to OPEN with $100.00 to pay (review of D177)."""
    from kilo_crypto_watch.model import BillPayment  # noqa: PLC0415

    h = harness(stack)
    old = tuple(
        BillPayment(f"ethereum:0xold{i}:0", f"0xold{i}", "USDC", Decimal("0.00"), PaymentStatus.ORPHANED)
        for i in range(499)
    )
    assert h.store.create_bill(replace(bill(), payments=old))
    h.store.add_quote(quote("q-usdc", "USDC", USDC_QUOTE, "1"))
    h.clock.now = T0 + timedelta(minutes=5)
    paid = transfer("0x1a", "USDC", USDC_QUOTE, T0 + timedelta(minutes=4), sender=STRANGER_WALLET)
    h.settlement.check_claim(paid, "inv-1")
    h.settlement.record(paid, claimed_for="inv-1")
    h.settlement.orphaned("ethereum:0x1a:0")

    h.settlement.record_seen(replace(paid, index=1, block_number=103, block_hash="0xnewblock"))

    new = h.store.payment("ethereum:0x1a:1")
    assert new is not None
    assert (new.status, new.invoice_id) == (PaymentStatus.SEEN, "inv-1")
    found = h.store.bill("inv-1")
    assert found is not None
    assert (len(found.payments), found.status, remaining_usd(found)) == (501, BillStatus.PROCESSING, Decimal("0.00"))
    assert h.store.unattributed() == []


def dust_harness(stack: Stack, total: str) -> Harness:
    """A bill of ``total`` with a USDC quote for it, the customer's wallet linked (every credit from it matches)."""
    h = harness(stack)
    h.store.link_wallet("evm", CUSTOMER_WALLET, "acct-1", "ethereum", T0)
    h.store.create_bill(bill(total=total))
    h.store.add_quote(quote("q", "USDC", int(Decimal(total) * 10**6), "1", amount_usd=total))
    h.clock.now = T0 + timedelta(minutes=5)
    return h


def pay_dust(h: Harness, first: int, count: int, atomic: int) -> None:
    for i in range(first, first + count):
        h.settlement.record_seen(transfer(f"0xd{i}", "USDC", atomic, T0 + timedelta(minutes=4)))
        h.settlement.finalized(f"ethereum:0xd{i}:0")


def test_given_sub_cent_credits_then_the_bill_counts_their_exact_sum_rounded_once(stack: Stack) -> None:
    # D178. A $0.10 bill (USDC tolerance: 0.5 % = $0.0005). Ten credits of 0.005 USDC pay $0.05; rounded one
    # by one (the old rule) each counted $0.01 and the ten paid the bill
    h = dust_harness(stack, "0.10")
    pay_dust(h, 0, 10, 5_000)
    opened = h.store.bill("inv-1")
    assert opened is not None
    assert (opened.status, opened.flags) == (BillStatus.OPEN, frozenset({BillFlag.PARTIAL, BillFlag.MULTIPLE}))
    assert remaining_usd(opened) == Decimal("0.05")
    assert {line.usd for line in opened.payments} == {Decimal("0.005")}  # each credit kept exact on its line
    payment = h.store.payment("ethereum:0xd0:0")
    assert payment is not None
    assert payment.usd == Decimal("0.005")
    assert h.events(SETTLED) == []

    pay_dust(h, 10, 1, 50_000)  # 0.05 USDC more: $0.05 + $0.05 = $0.10
    paid = h.store.bill("inv-1")
    assert paid is not None
    assert paid.status is BillStatus.PAID
    assert (paid.settled_usd, paid.written_off_usd, paid.credit_usd) == (Decimal("0.10"), 0, 0)
    [settled] = h.events(SETTLED)
    assert (settled["settled_usd"], settled["credit_usd"]) == ("0.10", "0.00")


def test_given_credits_each_under_half_a_cent_then_their_sum_still_counts(stack: Stack) -> None:
    # D178. A $0.01 bill (tolerance $0.00005), five credits of 0.004 USDC seen, then finalized one by one.
    # One by one each rounded to $0.00: the bill never paid, the $0.02 paid counted nothing
    h = dust_harness(stack, "0.01")
    for i in range(5):
        h.settlement.record_seen(transfer(f"0xd{i}", "USDC", 4_000, T0 + timedelta(minutes=4)))
    seen = h.store.bill("inv-1")
    assert seen is not None
    assert seen.status is BillStatus.PROCESSING  # $0.020 seen -> $0.02
    expected = [  # (status, settled, credit) after each credit finalizes: the final ones' exact sum, rounded once
        (BillStatus.PROCESSING, "0.00", "0.00"),  # $0.004 -> $0.00
        (BillStatus.PAID, "0.01", "0.00"),  # $0.008 -> $0.01: paid
        (BillStatus.PAID, "0.01", "0.00"),  # $0.012 -> $0.01: nothing more
        (BillStatus.PAID, "0.01", "0.01"),  # $0.016 -> $0.02: a cent of credit
        (BillStatus.PAID, "0.01", "0.01"),  # $0.020 -> $0.02
    ]
    for i, (status, settled, credit) in enumerate(expected):
        h.settlement.finalized(f"ethereum:0xd{i}:0")
        moved = h.store.bill("inv-1")
        assert moved is not None
        assert (moved.status, moved.settled_usd, moved.credit_usd) == (status, Decimal(settled), Decimal(credit))
    [settled_event] = h.events(SETTLED)
    assert (settled_event["settled_usd"], settled_event["credit_usd"]) == ("0.01", "0.00")
    assert [e["credit_usd"] for e in h.events("CryptoCreditAdded.v1")] == ["0.01"]


def test_given_a_bill_stored_with_lines_rounded_to_the_cent_then_it_reads_and_counts_them_as_stored(
    stack: Stack,
) -> None:
    # lines stored before D178 hold each credit's USD rounded half-up to the cent: read back, they count at
    # that value (a $0.10 bill with ten old $0.01 lines is covered), and a new exact line adds to them
    h = harness(stack)
    h.store.link_wallet("evm", CUSTOMER_WALLET, "acct-1", "ethereum", T0)
    old_lines = tuple(
        BillPayment(f"ethereum:0xo{i}:0", f"0xo{i}", "USDC", Decimal("0.01"), PaymentStatus.SEEN, quote_id="q")
        for i in range(9)
    )
    h.store.create_bill(replace(bill(total="0.10"), payments=old_lines))  # stored as before: numbers of cents
    h.store.add_quote(quote("q", "USDC", 100_000, "1", amount_usd="0.10"))
    h.clock.now = T0 + timedelta(minutes=5)
    stored = h.store.bill("inv-1")
    assert stored is not None
    assert (stored.status, remaining_usd(stored)) == (BillStatus.OPEN, Decimal("0.01"))
    pay_dust(h, 0, 1, 5_000)  # $0.005: 9 x $0.01 + $0.005 = $0.095 -> $0.10
    mixed = h.store.bill("inv-1")
    assert mixed is not None
    assert mixed.status is BillStatus.PROCESSING
    assert remaining_usd(mixed) == Decimal("0.00")


def test_given_a_credit_whose_exact_usd_has_more_digits_than_a_dynamodb_number_then_it_is_stored_and_counted(
    stack: Stack,
) -> None:
    # D178. 123_456_789_012_345_678_901_234 wei at an 18-decimal rate of $3,456.123456789012345678:
    # 123456789012345678901234 x 3456123456789012345678 / 10^36 = $426,681,904.405419905119303935755554032028766652,
    # 45 digits (a DynamoDB number holds 38): kept exact as a string, and the bill counts $426,681,904.41
    atomic, rate, total = 123_456_789_012_345_678_901_234, "3456.123456789012345678", "426681904.41"
    exact = Decimal("426681904.405419905119303935755554032028766652")
    h = harness(stack)
    h.store.link_wallet("evm", CUSTOMER_WALLET, "acct-1", "ethereum", T0)
    h.store.create_bill(bill(total=total))
    h.store.add_quote(quote("q", "ETH", atomic, rate, amount_usd=total))
    h.clock.now = T0 + timedelta(minutes=5)
    h.settlement.record_seen(transfer("0xwhale", "ETH", atomic, T0 + timedelta(minutes=4)))
    h.settlement.finalized("ethereum:0xwhale:0")
    payment = h.store.payment("ethereum:0xwhale:0")
    paid = h.store.bill("inv-1")
    assert payment is not None
    assert paid is not None
    assert payment.usd == exact
    assert [line.usd for line in paid.payments] == [exact]
    assert (paid.status, paid.settled_usd, paid.credit_usd, paid.written_off_usd) == (
        BillStatus.PAID,
        Decimal(total),
        0,
        0,
    )


class CrashError(Exception):
    """The watcher's process ending at this point (killed, timed out)."""


class CrashingStore(DynamoCryptoStore):
    """The crypto table on moto; while ``crash`` is set, marking a payment announced dies (the process ends between
    publishing a ``CryptoPaymentSeen.v1`` and marking its payments)."""

    crash = False

    def mark_payment_announced(self, payment_id: str) -> None:
        if self.crash:
            raise CrashError(f"died before marking {payment_id}")
        super().mark_payment_announced(payment_id)


class FailingPublisher(RecordingPublisher):
    """The bus refusing every event while ``down`` is set (nothing published)."""

    down = False

    def publish(self, detail_type: str, detail: Mapping[str, Any]) -> None:
        if self.down:
            raise CrashError(f"bus down for {detail_type}")
        super().publish(detail_type, detail)


def alerted(h: Harness) -> dict[str, list[str]]:
    """What the alerts function tells the customer: it keeps the first ``CryptoPaymentSeen.v1`` of each event id
    (its ledger drops a repeat), here as the payment ids each one covers."""
    kept: dict[str, list[str]] = {}
    for event in h.events(SEEN):
        kept.setdefault(event["event_id"], [t["payment_id"] for t in event["transfers"]])
    return kept


def test_given_a_crash_between_the_seen_event_and_its_marks_when_the_batch_has_grown_then_each_credit_is_told_once(
    stack: Stack,
) -> None:
    """D216. The first run's batch holds two 30 USDC credits to the bill: one event carrying both is published, and
    the process dies before marking them. The rerun's batch (the cursor did not move) has grown by a third credit
    that arrived meanwhile. The customer hears of the first two once - their event again under its own id, which
    the alerts drop - and of the third alone (one payment: its own id). Before, the rerun published the three under
    a new id (a digest of three ids): the first two were alerted twice."""
    h = harness(stack)
    h.store.link_wallet("evm", CUSTOMER_WALLET, "acct-1", "ethereum", T0)
    assert h.store.create_bill(bill())
    h.store.add_quote(quote("q-usdc", "USDC", USDC_QUOTE, "1"))
    h.clock.now = T0 + timedelta(minutes=5)
    store = CrashingStore(stack.clients["dynamodb"], stack.template.physical_name("CryptoTable"))
    watcher = Settlement(store, h.published, CHAINS, h.rates, clock=h.clock)
    at = T0 + timedelta(minutes=4)
    first = [transfer("0xa", "USDC", 30_000_000, at), transfer("0xb", "USDC", 30_000_000, at)]

    store.crash = True
    with pytest.raises(CrashError):
        watcher.record_batch(first)
    [published] = h.events(SEEN)
    assert [t["payment_id"] for t in published["transfers"]] == ["ethereum:0xa:0", "ethereum:0xb:0"]
    store.crash = False
    grown = [*first, transfer("0xc", "USDC", 30_000_000, at)]
    watcher.record_batch(grown)
    watcher.record_batch(grown)  # a further run: all announced, nothing more

    assert alerted(h) == {
        published["event_id"]: ["ethereum:0xa:0", "ethereum:0xb:0"],
        "crypto-seen:ethereum:0xc:0": ["ethereum:0xc:0"],
    }
    [third] = [e for e in h.events(SEEN) if e["event_id"] == "crypto-seen:ethereum:0xc:0"]
    assert (third["amount_usd"], third["total_usd"]) == ("30.00", "30.00")
    payments = [store.payment(f"ethereum:0x{tx}:0") for tx in "abc"]
    assert [p.announced for p in payments if p is not None] == [True, True, True]
    covered = store.bill("inv-1")
    assert covered is not None
    assert covered.status is BillStatus.OPEN  # $90.00 of $100.00: each credit counted once
    assert remaining_usd(covered) == Decimal("10.00")


def test_given_the_bus_down_for_the_seen_event_when_the_batch_has_grown_then_the_first_credits_are_still_told(
    stack: Stack,
) -> None:
    """D216. The first run stores two 30 USDC credits, and publishing their event fails (nothing published). The
    rerun's batch has a third credit: the customer hears of all three, each once (the first two together, the third
    alone, or the three together - never one credit twice, nor one left out)."""
    h = harness(stack)
    publisher = FailingPublisher()
    watcher = Settlement(h.store, publisher, CHAINS, h.rates, clock=h.clock)
    h = replace(h, published=publisher, settlement=watcher)
    h.store.link_wallet("evm", CUSTOMER_WALLET, "acct-1", "ethereum", T0)
    assert h.store.create_bill(bill())
    h.store.add_quote(quote("q-usdc", "USDC", USDC_QUOTE, "1"))
    h.clock.now = T0 + timedelta(minutes=5)
    at = T0 + timedelta(minutes=4)
    first = [transfer("0xa", "USDC", 30_000_000, at), transfer("0xb", "USDC", 30_000_000, at)]

    publisher.down = True
    with pytest.raises(CrashError):
        watcher.record_batch(first)
    assert h.events(SEEN) == []
    publisher.down = False
    grown = [*first, transfer("0xc", "USDC", 30_000_000, at)]
    watcher.record_batch(grown)
    watcher.record_batch(grown)

    told = sorted(payment_id for covered in alerted(h).values() for payment_id in covered)
    assert told == ["ethereum:0xa:0", "ethereum:0xb:0", "ethereum:0xc:0"]


def test_given_a_payment_not_stored_then_claiming_it_for_a_seen_event_is_refused_and_writes_nothing(
    stack: Stack,
) -> None:
    store = DynamoCryptoStore(stack.clients["dynamodb"], stack.template.physical_name("CryptoTable"))
    with pytest.raises(ConflictError, match="payment ethereum:0xgone:0 is not stored"):
        store.claim_seen("ethereum:0xgone:0", "crypto-seen:inv-1:abc")
    client, table = stack.clients["dynamodb"], stack.template.physical_name("CryptoTable")
    assert client.scan(TableName=table)["Items"] == []  # no bare row holding only the claim


def test_given_acct_1s_payment_orphaned_when_another_account_claims_it_then_refused_and_nothing_of_it_shown(
    h: Harness,
) -> None:
    """D288. acct-1's linked wallet paid inv-1; its block was orphaned. acct-x submits the transaction for its
    own bill inv-x: refused as another bill's (before: 202 with acct-1's payment), at the check and at the record."""
    _attacker(h)
    paid = transfer("0xo1", "USDC", USDC_QUOTE, T0 + timedelta(minutes=4))
    h.settlement.record_seen(paid)
    h.settlement.orphaned("ethereum:0xo1:0")
    again = replace(paid, block_number=101, block_hash="0xblock2")  # re-included in another block

    class Inspector:
        def transfers(self, tx_id: str) -> list[ObservedTransfer]:
            return [again]

    ports = logic.ApiPorts(
        h.store, h.settlement, h.rates, CHAINS, lambda chain: Inspector(), QuotePolicy(), SignInPolicy("x", "y")
    )
    with pytest.raises(AlreadyClaimedError, match="already pays another bill"):
        logic.submit_transaction(ports, "acct-x", "inv-x", "ethereum", "0xo1")
    with pytest.raises(AlreadyClaimedError, match="already pays another bill"):
        h.settlement.record(again, claimed_for="inv-x")

    stored = h.store.payment("ethereum:0xo1:0")
    assert stored is not None
    assert (stored.invoice_id, stored.status) == ("inv-1", PaymentStatus.ORPHANED)
    assert h.store.bill("inv-x") is not None
    assert h.store.bill("inv-x").payments == ()  # type: ignore[union-attr]


DUST_SENDER = "Po1soner1111111111111111111111111111111111"


def test_given_three_1_lamport_dust_transfers_from_a_stranger_then_kept_unattributed_without_an_alert(
    stack: Stack,
) -> None:
    """D364. Address-poisoning dust: a stranger sends 1 lamport three times. SOL at $150.00 (the feed at the
    slot's time): 1 lamport = 0.000000001 SOL x 150 = $0.00000015, rounded to the cent $0.00, below the $0.01
    default: each kept UNATTRIBUTED (on the operator's list) with no alert, counted for the metric. A rerun
    reporting them again neither alerts nor counts them again."""
    h = harness(stack)
    h.rates.prices["SOL"] = Decimal("150.00")
    dust = [
        transfer(f"dust{n}", "SOL", 1, T0 + timedelta(minutes=n), sender=DUST_SENDER, chain="solana") for n in (1, 2, 3)
    ]
    h.settlement.record_batch(dust)

    assert h.events(UNATTRIBUTED) == []
    assert sorted(p.payment_id for p in h.store.unattributed()) == [
        "solana:dust1:0",
        "solana:dust2:0",
        "solana:dust3:0",
    ]
    assert h.settlement.take_unalerted() == 3
    assert h.settlement.take_unalerted() == 0  # taken: from 0 again

    h.settlement.record_batch(dust)  # the watcher reports them again
    assert h.events(UNATTRIBUTED) == []
    assert h.settlement.take_unalerted() == 0


@pytest.mark.parametrize(
    ("asset", "chain", "atomic", "alerts", "amount"),
    [
        # 0.01 SOL = 10_000_000 lamports x $150.00 = $1.50 >= $0.01: alerted
        ("SOL", "solana", 10_000_000, 1, "0.01"),
        # ETH at $2,500.00: 1 wei = 10^-18 x 2500 = $0.0000000000000025 -> $0.00: no alert
        ("ETH", "ethereum", 1, 0, None),
        # 4 gwei = 4 x 10^-9 ETH x 2500 = $0.00001 -> $0.00: no alert
        ("ETH", "ethereum", 4_000_000_000, 0, None),
        # 0.000004 ETH = 4 x 10^12 wei x 2500 = $0.01 exactly: not below, alerted
        ("ETH", "ethereum", 4_000_000_000_000, 1, "0.000004"),
        # USDC 1:1: 0.005 USDC = $0.005, half-up to the cent $0.01: not below, alerted
        ("USDC", "ethereum", 5_000, 1, "0.005"),
        # 0.004999 USDC = $0.004999 -> $0.00: no alert
        ("USDC", "ethereum", 4_999, 0, None),
    ],
)
def test_given_an_unattributed_credit_then_alerted_only_from_one_cent_on_every_chain(
    stack: Stack, asset: str, chain: str, atomic: int, alerts: int, amount: str | None
) -> None:
    """D364. The $0.01 floor is the same on every chain: what is below it is kept on the operator's list and
    counted, what is at or above it is alerted as before."""
    h = harness(stack)
    h.rates.prices.update({"SOL": Decimal("150.00"), "ETH": Decimal("2500.00")})
    h.settlement.record_seen(
        transfer("0xd1", asset, atomic, T0, sender=STRANGER_WALLET, chain=chain)  # type: ignore[arg-type]
    )

    assert [alert["amount"] for alert in h.events(UNATTRIBUTED)] == ([amount] if alerts else [])
    assert [p.payment_id for p in h.store.unattributed()] == [f"{chain}:0xd1:0"]
    assert h.settlement.take_unalerted() == 1 - alerts


def test_given_no_rate_for_an_unattributed_sol_credit_then_it_is_alerted_as_before(stack: Stack) -> None:
    """D364. The feed refuses (no SOL price): the credit's worth is unknown, so the operator is told - 1 lamport,
    alerted with its amount 0.000000001 - rather than kept quiet."""
    h = harness(stack)
    h.settlement.record_seen(transfer("dustx", "SOL", 1, T0, sender=DUST_SENDER, chain="solana"))

    assert [alert["amount"] for alert in h.events(UNATTRIBUTED)] == ["0.000000001"]
    assert h.settlement.take_unalerted() == 0


def test_given_the_alert_floor_set_to_zero_then_even_1_wei_unattributed_is_alerted(stack: Stack) -> None:
    """D364. UNATTRIBUTED_ALERT_MIN_USD=0: every unattributed credit alerted, as before the floor; 1 wei at
    $2,500.00 = $0.0000000000000025, alerted with its amount 0.000000000000000001."""
    h = harness(stack)
    h.rates.prices["ETH"] = Decimal("2500.00")
    quiet = Settlement(
        h.store,
        h.published,
        CHAINS,
        h.rates,
        SettlementPolicy(unattributed_alert_min_usd=Decimal(0)),
        clock=h.clock,
    )
    quiet.record_seen(transfer("0xd0", "ETH", 1, T0, sender=STRANGER_WALLET))

    assert [alert["amount"] for alert in h.events(UNATTRIBUTED)] == ["0.000000000000000001"]
    assert quiet.take_unalerted() == 0


@dataclass
class CountedRates(FixedRates):
    """``FixedRates`` that records the moment of every read (``at``/``lock``)."""

    reads: list[datetime] = field(default_factory=list)

    def lock(self, asset: Asset, now: datetime) -> LockedRate:
        self.reads.append(now)
        return super().lock(asset, now)

    def at(self, asset: Asset, when: datetime, block: ChainBlock | None = None) -> LockedRate:
        self.reads.append(when)
        return FixedRates.lock(self, asset, when)


def test_given_three_sol_dust_credits_in_one_run_then_the_feed_is_read_once_at_now(stack: Stack) -> None:
    """D364 amended. Three 1-lamport credits at T0+1/2/3 min, the run at T0+1 h: the alert floor values them at
    ONE current SOL rate read once for the run ($150.00 at T0+1 h; 1 lamport x 150 = $0.00000015 -> $0.00 < $0.01),
    not at each slot's time (3 reads, each a block search on the feed's chain). The next run (after the handler
    takes its count) reads it again: 2 reads for 2 runs."""
    h = harness(stack)
    rates = CountedRates({"SOL": Decimal("150.00")})
    h.clock.now = T0 + timedelta(hours=1)
    settlement = Settlement(h.store, h.published, CHAINS, rates, clock=h.clock)
    dust = [
        transfer(f"dust{n}", "SOL", 1, T0 + timedelta(minutes=n), sender=DUST_SENDER, chain="solana") for n in (1, 2, 3)
    ]

    settlement.record_batch(dust)

    assert rates.reads == [T0 + timedelta(hours=1)]
    assert h.events(UNATTRIBUTED) == []
    assert settlement.take_unalerted() == 3

    h.clock.now = T0 + timedelta(hours=2)
    settlement.record_seen(transfer("dust4", "SOL", 1, T0 + timedelta(hours=2), sender=DUST_SENDER, chain="solana"))
    assert rates.reads == [T0 + timedelta(hours=1), T0 + timedelta(hours=2)]
    assert settlement.take_unalerted() == 1


def test_given_no_sol_rate_for_three_dust_credits_in_one_run_then_one_read_and_all_three_alerted(
    stack: Stack,
) -> None:
    """D364 amended. The feed refuses (no SOL price): the refusal is kept for the run too - 1 read, not 3 - and
    each credit, of unknown worth, is alerted as before (amount 0.000000001 each)."""
    h = harness(stack)
    rates = CountedRates()
    settlement = Settlement(h.store, h.published, CHAINS, rates, clock=h.clock)
    settlement.record_batch([transfer(f"dust{n}", "SOL", 1, T0, sender=DUST_SENDER, chain="solana") for n in (1, 2, 3)])

    assert rates.reads == [T0]
    assert [alert["amount"] for alert in h.events(UNATTRIBUTED)] == ["0.000000001"] * 3
    assert settlement.take_unalerted() == 0


@pytest.mark.parametrize(("failed", "lost"), [(True, "failed"), (False, "expired")])
def test_given_a_seen_solana_payment_failed_or_dropped_then_the_reopen_carries_its_cause(
    stack: Stack, failed: bool, lost: str
) -> None:
    """D434 amended (hcw): the $100.00 bill paid 666,666,667 lamports at $150.00 (seen, PROCESSING) on Solana in slot
    100; its watcher reports it ``orphaned`` - its transaction FAILED (``failed``): told at once, ``lost`` "failed";
    or its slot skipped: told only once its watcher's final slot for drops reaches 100 (99 is not enough, D449),
    ``lost`` "expired" (a Solana transaction cannot land once its blockhash is too old, never "may be mined again").
    Asking the whole 100.00 again, the payment's 100.00. Before: both "dropped", told at once - the failure inferred
    from the line's status (ORPHANED)."""
    h = billed(
        stack, [quote("q-sol", "SOL", SOL_QUOTE, "150.00", chain="solana", reference=REF)], T0 + timedelta(minutes=5)
    )
    h.settlement.record_seen(
        transfer("5sig", "SOL", SOL_QUOTE, T0 + timedelta(minutes=4), sender="Payer", chain="solana", references=(REF,))
    )
    h.settlement.orphaned("solana:5sig:0", "0xblock", failed=failed)
    h.settlement.announce_due({"solana": 99})
    assert len(h.events(REOPENED)) == (1 if failed else 0)

    h.settlement.announce_due({"solana": 100})

    told = [(e["event_id"], e["amount_usd"], e["lost"], e["lost_usd"], e["lost_tx_id"]) for e in h.events(REOPENED)]
    event_id = f"crypto-reopened:inv-1:solana:5sig:0@0xblock/{_unix(T0 + timedelta(minutes=5))}"
    assert told == [(event_id, "100.00", lost, "100.00", "5sig")]


def test_given_a_payment_dropped_from_a_block_twice_with_its_return_between_then_each_drop_is_told(
    stack: Stack,
) -> None:
    """D434 amended (hcw): 40.00 seen in 0xblock (block 100) dropped at T0+5 min (told once 100 is final, D449), the
    chain back to 0xblock (the payment seen there again, PROCESSING), then dropped from it again at T0+20 min (told
    once 100 is final): two notices, two ids - the second is not taken for the first. Before: both
    ``...@0xblock``, the second deduplicated away by consumers."""
    h = _covered_by_a_seen_rest(stack)
    h.settlement.orphaned("ethereum:0xc2:0", "0xblock")
    h.clock.now = T0 + timedelta(minutes=20)
    h.settlement.announce_due({"ethereum": 100})
    h.settlement.record_seen(transfer("0xc2", "USDC", 40_000_000, T0 + timedelta(minutes=4)))
    back = h.store.bill("inv-1")
    assert back is not None
    assert back.status is BillStatus.PROCESSING
    h.settlement.orphaned("ethereum:0xc2:0", "0xblock")
    h.clock.now = T0 + timedelta(minutes=40)
    h.settlement.announce_due({"ethereum": 100})

    ids = [e["event_id"] for e in h.events(REOPENED)]
    first, second = T0 + timedelta(minutes=5), T0 + timedelta(minutes=20)
    assert ids == [
        f"crypto-reopened:inv-1:ethereum:0xc2:0@0xblock/{_unix(first)}",
        f"crypto-reopened:inv-1:ethereum:0xc2:0@0xblock/{_unix(second)}",
    ]
