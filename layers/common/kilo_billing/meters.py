"""Meters and units, and the measuring rules of the policy.

Quantities are integers in their base unit (seconds of a connection, messages, bytes) until a rule turns them into
billing units: per-connection minutes (rounded up per connection, video/audio split) and GB in 0.01 GB steps.
"""

from __future__ import annotations

import bisect
import itertools
import math
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from decimal import Decimal
from enum import StrEnum
from fractions import Fraction

from kilo_billing.periods import Period, ensure_utc, split_interval

BYTES_PER_GB = 10**9
GB_STEP_BYTES = 10**7  # 0.01 GB
GB_STEP = Decimal("0.01")


class Meter(StrEnum):
    VIDEO = "video"
    AUDIO = "audio"
    MESSAGES = "messages"
    DATA_TRANSFER = "data_transfer"


@dataclass(frozen=True, slots=True)
class MeterUnit:
    billing_unit: str  # what a price is per
    base_unit: str  # what usage is recorded in
    step: Decimal  # the smallest billable step of the billing unit


METER_UNITS: dict[Meter, MeterUnit] = {
    Meter.VIDEO: MeterUnit("participant-minute", "connection", Decimal(1)),
    Meter.AUDIO: MeterUnit("participant-minute", "connection", Decimal(1)),
    Meter.MESSAGES: MeterUnit("message", "message", Decimal(1)),
    Meter.DATA_TRANSFER: MeterUnit("GB", "byte", GB_STEP),
}


def _ceil(value: Fraction) -> int:
    return math.ceil(value)


def bytes_to_gb(total_bytes: int) -> Decimal:
    """A period's billable GB: ``ceil(bytes / 10^7) / 100`` (0.01 GB steps, GB = 10^9 bytes)."""
    if total_bytes < 0:
        raise ValueError(f"bytes must be >= 0, got {total_bytes}")
    return Decimal(-(-total_bytes // GB_STEP_BYTES)) * GB_STEP


@dataclass(frozen=True, slots=True)
class ConnectionMinutes:
    """Billable minutes of one connection, split into video and audio."""

    video: int
    audio: int

    @property
    def total(self) -> int:
        return self.video + self.audio


def connection_minutes(connected_seconds: Fraction | int, video_seconds: Fraction | int) -> ConnectionMinutes:
    """Per-connection rounding (mirrors LiveKit Cloud's cost basis).

    billable minutes = ceil(connected seconds / 60); video minutes = min(billable, ceil(video seconds / 60));
    audio minutes = the rest.
    """
    connected, video = Fraction(connected_seconds), Fraction(video_seconds)
    if connected < 0 or video < 0:
        raise ValueError("connected and video seconds must be >= 0")
    if video > connected:
        raise ValueError(f"video seconds ({video}) cannot exceed connected seconds ({connected})")
    total = _ceil(connected / 60)
    video_minutes = min(total, _ceil(video / 60))
    return ConnectionMinutes(video=video_minutes, audio=total - video_minutes)


def _largest_remainder(total: int, weights: Sequence[Fraction]) -> list[int]:
    """``total`` shared out in proportion to ``weights`` (not all zero): each share's floor, then one more to each of
    the largest remainders until the shares sum to ``total`` - a tie to the later share."""
    whole = sum(weights, Fraction(0))
    quotas = [total * weight / whole for weight in weights]
    shares = [math.floor(quota) for quota in quotas]
    by_remainder = sorted(range(len(quotas)), key=lambda i: (quotas[i] - shares[i], i), reverse=True)
    for index in by_remainder[: total - sum(shares)]:
        shares[index] += 1
    return shares


def allocate_minutes(
    minutes: ConnectionMinutes, pieces: Sequence[tuple[Fraction, Fraction]]
) -> list[ConnectionMinutes]:
    """One connection part's rounded ``minutes`` shared out to the tier segments it overlaps (docs/decisions.md
    D282): ``pieces`` are its (connected seconds, video seconds) inside each segment, in time order.

    Video minutes go in proportion to the video seconds of each piece, audio minutes in proportion to its audio
    (connected - video) seconds, each by the largest-remainder method (a tie to the later segment), so the shares sum
    exactly to the part's minutes, which stay rounded once. With consistent pieces a kind with minutes always has
    weight (video minutes > 0 needs video seconds > 0; audio minutes > 0 needs ceil(connected / 60) >
    ceil(video / 60), so connected > video); should a kind have none anywhere, it goes by connected seconds."""
    if not pieces:
        raise ValueError("a connection part needs at least one piece")
    for connected, video in pieces:
        if connected < 0 or video < 0 or video > connected:
            raise ValueError(f"a piece needs 0 <= video ({video}) <= connected ({connected}) seconds")
    if len(pieces) == 1:
        return [minutes]
    connected_weights = [connected for connected, _ in pieces]
    if not any(connected_weights):
        raise ValueError("a connection part with minutes needs connected seconds")
    shares: list[list[int]] = []
    for quantity, weights in (
        (minutes.video, [video for _, video in pieces]),
        (minutes.audio, [connected - video for connected, video in pieces]),
    ):
        if not quantity:
            shares.append([0] * len(pieces))
            continue
        shares.append(_largest_remainder(quantity, weights if any(weights) else connected_weights))
    return [ConnectionMinutes(video=v, audio=a) for v, a in zip(shares[0], shares[1], strict=True)]


def minutes_by_segment(
    start_ms: int, end_ms: int, cuts_ms: Sequence[int], video_in: Callable[[int, int], Fraction]
) -> list[tuple[int, ConnectionMinutes]]:
    """A connection's part ``[start_ms, end_ms)`` in one period, cut at ``cuts_ms`` (the starts of the account's tier
    segments strictly inside it): its minutes rounded once over the whole part (``connection_minutes``), then shared
    out to the pieces (``allocate_minutes``). Returns (piece start ms, minutes) per piece, in order; with no cut, the
    part itself with exactly ``connection_minutes``. ``video_in(a, b)``: video seconds within ``[a, b)``."""
    bounds = [start_ms, *(cut for cut in sorted(cuts_ms) if start_ms < cut < end_ms), end_ms]
    pieces = []
    for a, b in itertools.pairwise(bounds):
        connected = Fraction(b - a, 1000)
        pieces.append((connected, min(video_in(a, b), connected)))
    whole = connection_minutes(sum(c for c, _ in pieces), sum(v for _, v in pieces))
    return list(zip(bounds[:-1], allocate_minutes(whole, pieces), strict=True))


Interval = tuple[datetime, datetime]


def _micros(instant: datetime) -> int:
    delta = ensure_utc(instant) - _EPOCH
    return (delta.days * 86_400 + delta.seconds) * 1_000_000 + delta.microseconds


_EPOCH = datetime(1970, 1, 1, tzinfo=UTC)


class Coverage:
    """The union of a room's video intervals, merged once; ``seconds(window)`` answers in O(log n).

    Exact (microsecond resolution). Merging once matters for large rooms: re-sorting the intervals for every window
    made a room of n participants cost n^2 log n per rebuild; this costs n log n.
    """

    __slots__ = ("_covered_before", "_ends", "_starts")

    def __init__(self, intervals: Iterable[Interval]) -> None:
        self._merge((_micros(a), _micros(b)) for a, b in intervals)

    @classmethod
    def of_micros(cls, spans: Iterable[tuple[int, int]]) -> Coverage:
        """The same from (start, end) in microseconds since the epoch (no datetimes: large rooms build one often)."""
        coverage = cls.__new__(cls)
        coverage._merge(spans)
        return coverage

    def _merge(self, pairs: Iterable[tuple[int, int]]) -> None:
        spans = sorted((a, b) for a, b in pairs if b > a)
        starts: list[int] = []
        ends: list[int] = []
        for a, b in spans:
            if ends and a <= ends[-1]:
                ends[-1] = max(ends[-1], b)
            else:
                starts.append(a)
                ends.append(b)
        covered = [0]
        for a, b in zip(starts, ends, strict=True):
            covered.append(covered[-1] + b - a)
        self._starts, self._ends, self._covered_before = starts, ends, covered

    def _covered_until(self, at: int) -> int:
        """Microseconds covered in (-inf, at)."""
        index = bisect.bisect_right(self._starts, at) - 1  # the last span starting at or before ``at``
        if index < 0:
            return 0
        return self._covered_before[index] + min(at, self._ends[index]) - self._starts[index]

    def seconds(self, window: Interval) -> Fraction:
        lo, hi = _micros(window[0]), _micros(window[1])
        if hi <= lo:
            return Fraction(0)
        return Fraction(self._covered_until(hi) - self._covered_until(lo), 1_000_000)


@dataclass(frozen=True, slots=True)
class PeriodConnection:
    """The part of one connection inside one period, with its rounded minutes."""

    period: Period
    start: datetime
    end: datetime
    connected_seconds: Fraction
    video_seconds: Fraction
    minutes: ConnectionMinutes


def split_connection(
    start: datetime, end: datetime, video_intervals: Sequence[Interval] | Coverage = ()
) -> list[PeriodConnection]:
    """Split a connection at period boundaries; each part is rounded as a connection of its own period.

    ``video_intervals`` are the spans during which at least one video track was published in the room (merged once
    into a ``Coverage`` by a caller that asks for many connections).
    """
    coverage = video_intervals if isinstance(video_intervals, Coverage) else Coverage(video_intervals)
    parts: list[PeriodConnection] = []
    for piece in split_interval(start, end):
        video = coverage.seconds((piece.start, piece.end))
        parts.append(
            PeriodConnection(
                period=piece.period,
                start=piece.start,
                end=piece.end,
                connected_seconds=piece.seconds,
                video_seconds=video,
                minutes=connection_minutes(piece.seconds, video),
            )
        )
    return parts
