"""Splitting an amount in cents across parts without losing or inventing a cent (``kilo_billing.money.allocate_cents``,
the largest-remainder method, D217), and where crypto shows a sum beside its parts: a bill's counted credits in
the account's history, the credits one ``CryptoPaymentSeen.v1`` carries, a submitted transaction's credits.

Every allocation is worked by hand: each part's exact share in cents, rounded down; the cents left go one each to the
largest remainders, a tie to the earlier part."""

from __future__ import annotations

from datetime import timedelta
from decimal import Decimal
from fractions import Fraction

import pytest

from kilo_billing.money import allocate_cents
from kilo_crypto_watch.history import account_history
from kilo_crypto_watch.model import BillStatus
from kilo_crypto_watch.settlement import counted_usd
from tests.conftest import Stack
from tests.crypto_core_fakes import CHAINS, CUSTOMER_WALLET, T0, Harness, bill, harness, quote, transfer


def cents(*values: str) -> list[Decimal]:
    return [Decimal(value) for value in values]


@pytest.mark.parametrize(
    ("total", "weights", "expected"),
    [
        # 100 cents / 3 = 33.33 each: 33 + 33 + 33 = 99, one left: the tie goes to the first
        ("1.00", [1, 1, 1], cents("0.34", "0.33", "0.33")),
        # 2 cents / 3 = 0.67 each: 0 + 0 + 0, two left: the first two
        ("0.02", [1, 1, 1], cents("0.01", "0.01", "0.00")),
        # 7 cents x 1/3 = 2.33, x 2/3 = 4.67: 2 + 4, one left to the larger remainder (0.67: the second)
        ("0.07", [1, 2], cents("0.02", "0.05")),
        # 1000 cents x 3/4 and x 1/4, nothing for a zero weight: exact
        ("10.00", [3, 0, 1], cents("7.50", "0.00", "2.50")),
        # 5 cents over ten $0.005 credits: 0.5 each, five left: the first five
        ("0.05", [Decimal("0.005")] * 10, cents(*(["0.01"] * 5 + ["0.00"] * 5))),
        # weights as exact fractions: 10 cents x 1/6, 2/6, 3/6 = 1.67, 3.33, 5: 1 + 3 + 5, one left to 0.67
        ("0.10", [Fraction(1, 6), Fraction(2, 6), Fraction(3, 6)], cents("0.02", "0.03", "0.05")),
        # a negative total: its magnitude split, each part negated
        ("-1.00", [1, 1, 1], cents("-0.34", "-0.33", "-0.33")),
        # nothing to split over nothing
        ("0.00", [0, 0], cents("0.00", "0.00")),
    ],
)
def test_given_a_total_and_weights_then_the_parts_are_the_hand_worked_ones_and_add_up_to_the_total(
    total: str, weights: list[Decimal | int | Fraction], expected: list[Decimal]
) -> None:
    parts = allocate_cents(Decimal(total), weights)
    assert parts == expected
    assert sum(parts, Decimal(0)) == Decimal(total)


@pytest.mark.parametrize(
    ("total", "weights", "message"),
    [
        ("0.005", [1], "whole cents"),
        ("1.00", [], "at least one weight"),
        ("1.00", [1, -1], "must not be negative"),
        ("1.00", [0, 0], "all zero"),
    ],
)
def test_given_what_cannot_be_split_then_allocate_cents_says_why(total: str, weights: list[int], message: str) -> None:
    with pytest.raises(ValueError, match=message):
        allocate_cents(Decimal(total), weights)


# --- where crypto shows a sum beside its parts -------------------------------------------------------------------

THIRD = 333_333  # 0.333333 USDC: three of them pay 0.999999, which a bill counts as $1.00 (rounded once, D178)


@pytest.fixture
def h(stack: Stack) -> Harness:
    h = harness(stack)
    h.store.link_wallet("evm", CUSTOMER_WALLET, "acct-1", "ethereum", T0)
    assert h.store.create_bill(bill(total="1.00"))
    h.store.add_quote(quote("q-usdc", "USDC", 1_000_000, "1", amount_usd="1.00"))
    h.clock.now = T0 + timedelta(minutes=5)
    return h


def test_given_three_thirds_of_a_dollar_in_one_batch_then_the_seen_event_and_the_history_split_1_00_as_34_33_33(
    h: Harness,
) -> None:
    """Each credit is $0.333333 exactly; the bill counts their sum, $0.999999, as $1.00 (PROCESSING: covered). Shown
    one by one they were $0.33 each - $0.99 beside a bill counting $1.00; split by ``allocate_cents``: 0.34, 0.33,
    0.33 (the tie's cent to the first)."""
    at = T0 + timedelta(minutes=4)
    h.settlement.record_batch([transfer(f"0x{n}", "USDC", THIRD, at, index=n) for n in range(3)])

    counted = h.store.bill("inv-1")
    assert counted is not None
    assert counted.status is BillStatus.PROCESSING
    [seen] = h.events("CryptoPaymentSeen.v1")
    assert [t["amount_usd"] for t in seen["transfers"]] == ["0.34", "0.33", "0.33"]
    assert seen["total_usd"] == "1.00"
    history = account_history(*h.store.account_history("acct-1"), CHAINS, h.clock.now)
    by_id = {p["payment_id"]: p["amount_usd"] for p in history["payments"]}
    assert by_id == {"ethereum:0x0:0": "0.34", "ethereum:0x1:1": "0.33", "ethereum:0x2:2": "0.33"}
    payments = [h.store.payment(f"ethereum:0x{n}:{n}") for n in range(3)]
    shown = counted_usd(p for p in payments if p is not None)  # the fast path's answer for these credits
    assert [shown[f"ethereum:0x{n}:{n}"] for n in range(3)] == cents("0.34", "0.33", "0.33")


def test_given_ten_half_cent_credits_then_the_history_rows_add_up_to_the_five_cents_the_bill_counts(
    h: Harness,
) -> None:
    """Ten credits of 0.005 USDC: the bill counts $0.05 (D178). Shown one by one, each was $0.01 - $0.10 in rows
    beside $0.05 counted; split, five rows show $0.01 and five $0.00 (ties: the earlier lines)."""
    at = T0 + timedelta(minutes=4)
    for n in range(10):  # ten polls: ten events of one credit each
        h.settlement.record_batch([transfer(f"0x{n}", "USDC", 5_000, at, index=n)])

    history = account_history(*h.store.account_history("acct-1"), CHAINS, h.clock.now)
    by_id = {p["payment_id"]: p["amount_usd"] for p in history["payments"]}
    assert by_id == {f"ethereum:0x{n}:{n}": ("0.01" if n < 5 else "0.00") for n in range(10)}
    assert [e["total_usd"] for e in h.events("CryptoPaymentSeen.v1")] == ["0.01"] * 10  # each alone: $0.005 -> $0.01


def test_given_a_payment_in_review_in_the_batch_then_the_seen_event_splits_only_the_counted_sum_as_the_history_does(
    h: Harness,
) -> None:
    """D226: two late 0.005 USDC credits (1:1, counted: $0.01 together, split 0.01, 0.00) and, in the same batch,
    a late 0.0000025 ETH credit whose price moved 20 % (locked $2,500, then $2,000: $0.005, in review, not counted).
    The seen event shows the in-review one at its own USD, $0.01, as the history does, and the counted ones split
    their own $0.01; the total is what the transfers show, $0.02. Before, the batch's $0.015 (rounded once: $0.02)
    was split over all three: 0.01, 0.01 and $0.00 for the ETH - unlike the history's $0.01."""
    h.store.add_quote(quote("q-eth", "ETH", 2_500_000_000_000, "2500", amount_usd="0.01"))
    h.rates.prices["ETH"] = Decimal("2000")
    h.clock.now = at = T0 + timedelta(hours=2)  # both quotes expired at T0 + 31 min: late
    h.settlement.record_batch(
        [
            transfer("0x0", "USDC", 5_000, at, index=0),
            transfer("0x1", "USDC", 5_000, at, index=1),
            transfer("0x2", "ETH", 2_500_000_000_000, at, index=2),
        ]
    )

    eth = h.store.payment("ethereum:0x2:2")
    assert eth is not None
    assert (eth.review, eth.usd) == (True, Decimal("0.005"))
    [seen] = h.events("CryptoPaymentSeen.v1")
    assert [t["amount_usd"] for t in seen["transfers"]] == ["0.01", "0.00", "0.01"]  # before: 0.01, 0.01, 0.00
    assert seen["total_usd"] == "0.02"
    history = account_history(*h.store.account_history("acct-1"), CHAINS, h.clock.now)
    by_id = {p["payment_id"]: p["amount_usd"] for p in history["payments"]}
    assert by_id == {"ethereum:0x0:0": "0.01", "ethereum:0x1:1": "0.00", "ethereum:0x2:2": "0.01"}
