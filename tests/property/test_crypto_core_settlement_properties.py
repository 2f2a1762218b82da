"""Properties of the bill's money (``settlement.recompute``) over any sequence of payment lines: a bill is PAID
exactly when its finalized payments cover the total within tolerance (the reference formula below, written apart
from the code); then settled - credit + written off = total, nothing is lost, and later payments never unpay it.
Credits are worth token amount x rate, exactly; a bill counts the exact sum of its credits rounded half-up to the cent
once (D178): many sub-cent credits are drawn to hold it to that."""

from __future__ import annotations

import math
from dataclasses import replace
from datetime import UTC, datetime
from decimal import Decimal
from fractions import Fraction

from hypothesis import given
from hypothesis import strategies as st

from kilo_crypto_watch.model import Bill, BillPayment, BillStatus, PaymentStatus
from kilo_crypto_watch.settlement import SettlementPolicy, recompute, remaining_usd, tolerance, usd_value
from tests.crypto_core_fakes import bill_with

NOW = datetime(2026, 11, 2, tzinfo=UTC)
POLICY = SettlementPolicy()

cents = st.integers(min_value=1, max_value=50_000).map(lambda c: Decimal(c) / 100)
lines = st.lists(
    st.tuples(
        st.sampled_from(["USDC", "ETH", "SOL"]),
        cents,
        st.sampled_from(list(PaymentStatus)),
        st.booleans(),  # under review
    ),
    max_size=6,
)


def half_up(value: Fraction) -> Decimal:
    """A non-negative exact amount rounded half-up to the cent."""
    return Decimal(int(value * 100 + Fraction(1, 2))) / 100


def down(value: Fraction) -> Decimal:
    """A non-negative exact amount rounded down to the cent (what may be written off never exceeds its rule)."""
    return Decimal(math.floor(value * 100)) / 100


def reference_tolerance(total: Decimal, paid: list[tuple[str, Fraction]]) -> Decimal:
    """USDC's band min(0.5 %, $1) for what USDC paid, ETH/SOL's 1 % for what they paid, weighted by the USD paid in
    each (one class alone: its band; mixed: the weighted mean), rounded down to the cent (D176 amended)."""
    usdc_band = min(Fraction(total) * Fraction(5, 1000), Fraction(1))
    volatile_band = Fraction(total) / 100
    in_usdc = sum((usd for asset, usd in paid if asset == "USDC"), Fraction(0))
    in_volatile = sum((usd for asset, usd in paid if asset != "USDC"), Fraction(0))
    if in_volatile == 0:
        return down(usdc_band)
    if in_usdc == 0:
        return down(volatile_band)
    return down((usdc_band * in_usdc + volatile_band * in_volatile) / (in_usdc + in_volatile))


@given(total=cents, drawn=lines)
def test_paid_exactly_when_the_final_payments_cover_the_total_within_tolerance(
    total: Decimal, drawn: list[tuple[str, Decimal, PaymentStatus, bool]]
) -> None:
    moved = recompute(bill_with(total, drawn), POLICY, NOW)
    counted = [
        (a, usd, s) for a, usd, s, review in drawn if s in (PaymentStatus.SEEN, PaymentStatus.FINALIZED) and not review
    ]
    final = half_up(sum((Fraction(usd) for _, usd, s in counted if s is PaymentStatus.FINALIZED), Fraction(0)))
    seen_or_final = half_up(sum((Fraction(usd) for _, usd, _ in counted), Fraction(0)))
    allowed = reference_tolerance(total, [(a, Fraction(usd)) for a, usd, _ in counted])
    has_final = any(s is PaymentStatus.FINALIZED for _, _, s in counted)
    if has_final and final >= total - allowed:
        assert moved.status is BillStatus.PAID
        assert moved.settled_usd - moved.credit_usd + moved.written_off_usd == total
        assert Decimal(0) <= moved.written_off_usd <= allowed
        assert moved.credit_usd == max(Decimal(0), final - total)
    elif counted and seen_or_final >= total - allowed:
        assert moved.status is BillStatus.PROCESSING
    else:
        assert moved.status is BillStatus.OPEN


@given(total=cents, drawn=lines)
def test_the_band_is_whole_cents_never_above_its_rule_and_less_than_a_cent_below(
    total: Decimal, drawn: list[tuple[str, Decimal, PaymentStatus, bool]]
) -> None:
    paid = [(asset, Fraction(usd)) for asset, usd, _, _ in drawn]
    allowed = tolerance(total, [(asset, usd) for asset, usd, _, _ in drawn], POLICY)  # type: ignore[misc]
    assert allowed == reference_tolerance(total, paid)
    # the rule unrounded: each class's band weighted by what it paid (nothing in ETH/SOL: USDC's band)
    usdc_band = min(Fraction(total) / 200, Fraction(1))
    in_volatile = sum((usd for asset, usd in paid if asset != "USDC"), Fraction(0))
    whole = sum((usd for _, usd in paid), Fraction(0))
    rule = (
        usdc_band
        if in_volatile == 0
        else (usdc_band * (whole - in_volatile) + Fraction(total) / 100 * in_volatile) / whole
    )
    assert Fraction(allowed) <= rule < Fraction(allowed) + Fraction(1, 100)
    assert allowed == allowed.quantize(Decimal("0.01"))


@given(total=cents, over=st.integers(min_value=0, max_value=500), drawn=lines, later=lines)
def test_a_paid_bill_stays_paid_and_later_final_payments_only_add_credit(
    total: Decimal,
    over: int,
    drawn: list[tuple[str, Decimal, PaymentStatus, bool]],
    later: list[tuple[str, Decimal, PaymentStatus, bool]],
) -> None:
    covering = ("USDC", total + Decimal(over) / 100, PaymentStatus.FINALIZED, False)  # pays it whatever else there is
    first = recompute(bill_with(total, [*drawn, covering]), POLICY, NOW)
    assert first.status is BillStatus.PAID
    extra = bill_with(total, later).payments
    renamed = tuple(replace(line, payment_id=f"later{i}") for i, line in enumerate(extra))
    again = recompute(replace(first, payments=first.payments + renamed), POLICY, NOW)
    assert again.status is BillStatus.PAID
    assert (again.settled_usd, again.written_off_usd) == (first.settled_usd, first.written_off_usd)
    added = sum(
        (line.usd for line in renamed if line.status is PaymentStatus.FINALIZED and not line.review), Decimal(0)
    )
    assert again.credit_usd == first.credit_usd + added


DECIMALS = {"USDC": 6, "ETH": 18, "SOL": 9}
RATES = {"USDC": ["1", "0.9987"], "ETH": ["2500.00", "3456.78901234"], "SOL": ["150.00", "187.12345678"]}
UNDER_A_CENT = {"USDC": 9_999, "ETH": 2_800_000_000_000, "SOL": 53_000}  # atomic units worth less than $0.01
credits = st.lists(
    st.sampled_from(["USDC", "ETH", "SOL"]).flatmap(
        lambda asset: st.tuples(
            st.just(asset),
            st.integers(min_value=1, max_value=UNDER_A_CENT[asset]),
            st.sampled_from(RATES[asset]),
            st.sampled_from([PaymentStatus.SEEN, PaymentStatus.FINALIZED]),
        )
    ),
    min_size=1,
    max_size=80,
)


@given(total=st.integers(min_value=1, max_value=60).map(lambda c: Decimal(c) / 100), drawn=credits)
def test_many_sub_cent_credits_count_their_exact_sum_rounded_once(
    total: Decimal, drawn: list[tuple[str, int, str, PaymentStatus]]
) -> None:
    exact = [(asset, Fraction(atomic, 10 ** DECIMALS[asset]) * Fraction(rate), s) for asset, atomic, rate, s in drawn]
    payments = tuple(
        BillPayment(f"p{i}", f"t{i}", asset, usd_value(atomic, asset, Decimal(rate)), s)  # type: ignore[arg-type]
        for i, (asset, atomic, rate, s) in enumerate(drawn)
    )
    moved = recompute(Bill("inv", "acct", "KB-1", "2026-10", total, NOW, payments=payments), POLICY, NOW)
    final = half_up(sum((usd for _, usd, s in exact if s is PaymentStatus.FINALIZED), Fraction(0)))
    seen_or_final = half_up(sum((usd for _, usd, _ in exact), Fraction(0)))
    allowed = reference_tolerance(total, [(asset, usd) for asset, usd, _ in exact])
    if any(s is PaymentStatus.FINALIZED for *_, s in drawn) and final >= total - allowed:
        assert moved.status is BillStatus.PAID
        assert (moved.settled_usd, moved.credit_usd) == (final, max(Decimal(0), final - total))
        assert moved.written_off_usd == max(Decimal(0), total - final)
    else:
        assert moved.status is (BillStatus.PROCESSING if seen_or_final >= total - allowed else BillStatus.OPEN)
        assert remaining_usd(moved) == max(Decimal(0), total - seen_or_final)
    assert [Fraction(line.usd) for line in payments] == [usd for _, usd, _ in exact]  # each credit kept exact
