"""Billing periods: UTC calendar months ``[first instant of month, first instant of next month)``.

All period math of the product lives here. Instants are timezone-aware UTC datetimes; naive datetimes are refused
so a local-time value can never slip into billing.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from datetime import UTC, datetime
from fractions import Fraction

_PERIOD_KEY = re.compile(r"^(\d{4})-(\d{2})$")


class NaiveDatetimeError(ValueError):
    """A datetime without a timezone reached period math."""


def ensure_utc(instant: datetime) -> datetime:
    """Return ``instant`` in UTC; refuse naive datetimes."""
    if instant.tzinfo is None or instant.utcoffset() is None:
        raise NaiveDatetimeError(f"datetime must be timezone-aware (UTC): {instant!r}")
    return instant.astimezone(UTC)


@dataclass(frozen=True, order=True, slots=True)
class Period:
    """One billing period (a UTC calendar month)."""

    year: int
    month: int

    def __post_init__(self) -> None:
        if not 1 <= self.month <= 12:
            raise ValueError(f"month must be 1..12, got {self.month}")
        if not 1970 <= self.year <= 9998:
            raise ValueError(f"year out of range: {self.year}")

    @classmethod
    def containing(cls, instant: datetime) -> Period:
        utc = ensure_utc(instant)
        return cls(utc.year, utc.month)

    @classmethod
    def parse(cls, key: str) -> Period:
        """Parse ``YYYY-MM``."""
        match = _PERIOD_KEY.match(key)
        if match is None:
            raise ValueError(f"period must look like YYYY-MM, got {key!r}")
        return cls(int(match.group(1)), int(match.group(2)))

    @property
    def key(self) -> str:
        return f"{self.year:04d}-{self.month:02d}"

    @property
    def start(self) -> datetime:
        return datetime(self.year, self.month, 1, tzinfo=UTC)

    @property
    def end(self) -> datetime:
        """Exclusive end: the first instant of the next period."""
        return self.next().start

    @property
    def seconds(self) -> int:
        return int((self.end - self.start).total_seconds())

    def next(self) -> Period:
        return Period(self.year + 1, 1) if self.month == 12 else Period(self.year, self.month + 1)

    def previous(self) -> Period:
        return Period(self.year - 1, 12) if self.month == 1 else Period(self.year, self.month - 1)

    def contains(self, instant: datetime) -> bool:
        return self.start <= ensure_utc(instant) < self.end

    def fraction(self, start: datetime, end: datetime) -> Fraction:
        """Exact fraction of this period covered by ``[start, end)`` (clipped to the period)."""
        lo = max(self.start, ensure_utc(start))
        hi = min(self.end, ensure_utc(end))
        if hi <= lo:
            return Fraction(0)
        covered = hi - lo
        covered_us = (covered.days * 86_400 + covered.seconds) * 1_000_000 + covered.microseconds
        return Fraction(covered_us, self.seconds * 1_000_000)

    def __str__(self) -> str:
        return self.key


@dataclass(frozen=True, slots=True)
class PeriodSlice:
    """The part of an interval that falls inside one period."""

    period: Period
    start: datetime
    end: datetime

    @property
    def seconds(self) -> Fraction:
        delta = self.end - self.start
        return Fraction((delta.days * 86_400 + delta.seconds) * 1_000_000 + delta.microseconds, 1_000_000)


def split_interval(start: datetime, end: datetime) -> list[PeriodSlice]:
    """Split ``[start, end)`` at period boundaries. An empty or inverted interval yields nothing."""
    lo, hi = ensure_utc(start), ensure_utc(end)
    slices: list[PeriodSlice] = []
    period = Period.containing(lo)
    while lo < hi:
        boundary = period.end
        slice_end = min(hi, boundary)
        slices.append(PeriodSlice(period, lo, slice_end))
        lo, period = slice_end, period.next()
    return slices
