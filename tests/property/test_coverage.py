"""The merged video coverage answers every window exactly as the reference sweep does.

The reference is written here, independently of ``kilo_billing.meters``: it walks the window second by second
(microsecond timestamps are whole seconds here, so counting covered seconds is exact)."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from fractions import Fraction

from hypothesis import given
from hypothesis import strategies as st

from kilo_billing.meters import Coverage

BASE = datetime(2026, 11, 30, 23, 58, tzinfo=UTC)
spans = st.lists(st.tuples(st.integers(0, 300), st.integers(0, 120)), max_size=12)


def _intervals(raw: list[tuple[int, int]]) -> list[tuple[datetime, datetime]]:
    return [(BASE + timedelta(seconds=a), BASE + timedelta(seconds=a + length)) for a, length in raw]


def _reference(raw: list[tuple[int, int]], lo: int, hi: int) -> Fraction:
    covered = {second for a, length in raw for second in range(a, a + length)}
    return Fraction(sum(1 for second in range(lo, hi) if second in covered))


@given(spans, st.integers(-20, 450), st.integers(0, 450))
def test_given_any_intervals_then_coverage_equals_the_reference(
    raw: list[tuple[int, int]], lo: int, length: int
) -> None:
    window = (BASE + timedelta(seconds=lo), BASE + timedelta(seconds=lo + length))
    expected = _reference(raw, lo, lo + length)
    assert Coverage(_intervals(raw)).seconds(window) == expected


def test_given_sub_second_edges_then_exact_microseconds() -> None:
    start = BASE + timedelta(microseconds=250_000)
    coverage = Coverage(
        [(start, start + timedelta(seconds=2)), (start + timedelta(seconds=1), start + timedelta(seconds=3))]
    )
    # union = [0.25 s, 3.25 s); window [1 s, 2.5 s) is fully covered: 1.5 s
    assert coverage.seconds(
        (BASE + timedelta(seconds=1), BASE + timedelta(seconds=2, microseconds=500_000))
    ) == Fraction(3, 2)
    assert coverage.seconds((BASE, BASE + timedelta(seconds=10))) == Fraction(3)
