"""The pure arithmetic on rating's models: what a session contributes, deltas between versions, rating month-to-date
counters under the account's tier segments, thresholds reached, and open sessions' minutes so far."""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Callable, Mapping, Sequence
from decimal import Decimal
from fractions import Fraction

from kilo_billing.accounts import AccountProfile
from kilo_billing.catalog import PriceBook
from kilo_billing.meters import Meter, connection_minutes
from kilo_billing.periods import Period
from kilo_billing.rating import RatedPeriod, SegmentUsage, rate_segments
from kilo_rate_usage.model import Aggregate, AggregateKey, Billing, ContributionKey, Crossing, Session, StoredSession

ALLOWANCE_THRESHOLDS = (50, 80, 100)


def session_contributions(session: Session, profile: AccountProfile) -> dict[ContributionKey, int]:
    result: dict[ContributionKey, int] = defaultdict(int)
    for part in session.parts:
        segment = profile.segment_start(part.start_ms)
        if part.video:
            result[(session.account, part.period, segment, Meter.VIDEO.value)] += part.video
        if part.audio:
            result[(session.account, part.period, segment, Meter.AUDIO.value)] += part.audio
    return dict(result)


def delta(old: Mapping[ContributionKey, int], new: Mapping[ContributionKey, int]) -> dict[ContributionKey, int]:
    changes = {key: new.get(key, 0) - old.get(key, 0) for key in set(old) | set(new)}
    return {key: value for key, value in changes.items() if value}


def by_aggregate(contributions: Mapping[ContributionKey, int]) -> dict[AggregateKey, dict[tuple[int, str], int]]:
    """Contributions grouped per (account, period): counters keyed by (segment start, meter)."""
    result: dict[AggregateKey, dict[tuple[int, str], int]] = {}
    for (account, period, segment, meter), quantity in contributions.items():
        counters = result.setdefault((account, period), {})
        counters[(segment, meter)] = counters.get((segment, meter), 0) + quantity
    return result


def rate_aggregate(
    aggregate: Aggregate, profile: AccountProfile, book: PriceBook, extra: Mapping[tuple[int, str], int] | None = None
) -> RatedPeriod:
    """Rate month-to-date counters (plus ``extra``: open sessions' elapsed minutes) under the account's segments."""
    period = Period.parse(aggregate.period)
    segments = profile.segments(period)
    per_segment: list[dict[Meter, int]] = [dict.fromkeys(Meter, 0) for _ in segments]
    starts = [int(segment.start.timestamp()) for segment in segments]
    combined: dict[tuple[int, str], int] = defaultdict(int)
    for source in (aggregate.counters, extra or {}):
        for key, quantity in source.items():
            combined[key] += quantity
    for (segment_start, meter), quantity in combined.items():
        index = max((i for i, start in enumerate(starts) if start <= segment_start), default=0)
        per_segment[index][Meter(meter)] += quantity
    usage = [SegmentUsage(segment, totals) for segment, totals in zip(segments, per_segment, strict=True)]
    return rate_segments(period, usage, book)


def crossings(
    rated: RatedPeriod, profile: AccountProfile, already: set[str], spend: RatedPeriod | None = None
) -> list[Crossing]:
    """Thresholds reached and not yet announced: 50/80/100 % of an included allowance, of the budget, and the hard
    limit (an account's spending cap: calls are stopped there).

    ``rated`` is the closed usage; ``spend`` (when given) the bill including open sessions as if they ended now, which
    the budget and the hard limit are checked against (a limit is reached during a call, not when it ends).

    Allowances are per tier segment (prorated on a tier change) and overage is charged per segment, so a meter's
    share is the highest share among its segments: an overage is never charged without its 100 % alert.
    """
    worst: dict[str, tuple[Decimal, Decimal]] = {}  # meter -> (used, included) of its fullest segment
    for line in rated.usage_lines:
        assert line.meter is not None
        if line.included is None or line.included <= 0:
            continue
        meter = line.meter.value
        current = worst.get(meter)
        if current is None or line.used * current[1] > current[0] * line.included:
            worst[meter] = (line.used, line.included)
    found: list[Crossing] = []
    for meter, (used, limit) in worst.items():
        found.extend(
            Crossing(meter, threshold, used, limit)
            for threshold in ALLOWANCE_THRESHOLDS
            if used * 100 >= limit * threshold and f"{meter}#{threshold}" not in already
        )
    bill = (spend or rated).total
    if profile.budget_usd is not None and profile.budget_usd > 0:
        found.extend(
            Crossing("budget", threshold, bill, profile.budget_usd)
            for threshold in profile.budget_thresholds
            if bill * 100 >= profile.budget_usd * threshold and f"budget#{threshold}" not in already
        )
    hard = profile.hard_limit_usd
    if hard is not None and hard > 0 and bill >= hard and "hard_limit#100" not in already:
        # its own crossing (D47): enforcement must not depend on a budget percentage happening to equal the limit
        found.append(Crossing("hard_limit", 100, bill, hard))
    return found


VideoSoFar = Callable[[Session, int, int], Fraction | None]  # session, window start, end (ms) -> video seconds


def open_session_extra(
    sessions: Sequence[StoredSession],
    profile: AccountProfile,
    now_ms: int,
    period: str,
    video_in: VideoSoFar | None = None,
) -> dict[tuple[int, str], int]:
    """Minutes open sessions would bill in ``period`` if they ended now (month-to-date views and budget checks).

    The connection is clipped to the period. ``video_in`` answers a session's video seconds inside that window exactly
    (from its room's state, ``queries``); without it (or when it has no answer) the video seconds stored on the session
    are shared out in proportion to the time elapsed in the period (an estimate).
    """
    bounds = Period.parse(period)
    period_start_ms = int(bounds.start.timestamp() * 1000)
    period_end_ms = int(bounds.end.timestamp() * 1000)
    extra: dict[tuple[int, str], int] = defaultdict(int)
    for stored in sessions:
        session = stored.session
        if not session.is_open or session.billing is Billing.NOT_BILLED:
            continue
        start_ms = max(session.start_ms, period_start_ms)
        end_ms = min(now_ms, period_end_ms)
        if end_ms <= start_ms:
            continue
        connected = Fraction(end_ms - start_ms, 1000)
        video = Fraction(0)
        exact = video_in(session, start_ms, end_ms) if video_in is not None else None
        if session.billing is Billing.ROOM_RULE and exact is not None:
            video = min(exact, connected)
        elif session.billing is Billing.ROOM_RULE:
            as_of = min(max(session.as_of_ms, session.start_ms), now_ms)
            known = Fraction(max(0, as_of - session.start_ms), 1000)
            inside = Fraction(max(0, min(as_of, end_ms) - start_ms), 1000)
            if known > 0:
                video = session.video_seconds * inside / known
            if session.video_active and end_ms > max(as_of, start_ms):
                video += Fraction(end_ms - max(as_of, start_ms), 1000)
            video = min(video, connected)
        minutes = connection_minutes(connected, video)
        segment = profile.segment_start(start_ms)
        extra[(segment, Meter.VIDEO.value)] += minutes.video
        extra[(segment, Meter.AUDIO.value)] += minutes.audio
    return dict(extra)
