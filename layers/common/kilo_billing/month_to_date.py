"""Month to date: an account's period rated so far - rating's counters plus the sessions still open, as if they ended
now - read by rating's own query (``kilo_rate_usage.queries``) and by the account API, through one port.

Moved here from rating (``kilo_rate_usage.aggregates``) so that the account API reuses the arithmetic without
importing the rating function:
- ``rate_with_extra``: counters ``(segment start, meter) -> base units`` (plus open sessions' minutes) rated under the
  account's tier segments;
- ``open_session_extra``: the minutes open sessions would bill in a period if they ended now. A session's video
  seconds inside the window come from ``video_in`` when the caller can answer them exactly (rating reads its rooms'
  states); otherwise the video seconds stored on the session are shared out in proportion to the time elapsed, and a
  camera still on at the session's last stored event counts until now (an estimate, exact once the session closes).

The model and the arithmetic, with the port ``MonthToDateSource``; the item mapping of rating's open sessions is
``kilo_billing.month_to_date_items``, the DynamoDB adapter ``kilo_billing.month_to_date_store``.
"""

from __future__ import annotations

import functools
from collections import defaultdict
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass, field
from decimal import Decimal
from fractions import Fraction
from typing import Final, Protocol

from kilo_billing.accounts import AccountProfile
from kilo_billing.catalog import PriceBook
from kilo_billing.invoicing import segment_usage
from kilo_billing.meters import Meter, minutes_by_segment
from kilo_billing.periods import Period
from kilo_billing.rating import RatedPeriod, rate_segments
from kilo_billing.usage_signals import Counters

ROOM_RULE: Final = "room_rule"  # billing kinds of rating's sessions (kilo_rate_usage.model.Billing, D16)
AUDIO_ONLY: Final = "audio_only"
NOT_BILLED: Final = "not_billed"


@dataclass(frozen=True, slots=True)
class OpenSessionFigures:
    """What month to date needs of one open session (rating's ``Session`` while ``end_ms`` is None)."""

    room_sid: str
    participant_sid: str
    account: str
    start_ms: int
    billing: str  # ROOM_RULE | AUDIO_ONLY | NOT_BILLED
    video_seconds: Fraction = Fraction(0)  # video so far as of ``as_of_ms``
    video_active: bool = False  # a camera was on at ``as_of_ms``
    as_of_ms: int = 0
    identity: str = ""
    room_name: str = ""


VideoSoFar = Callable[[OpenSessionFigures, int, int], Fraction | None]  # session, window (ms) -> video seconds


def rate_with_extra(
    period_key: str,
    counters: Mapping[tuple[int, str], int],
    profile: AccountProfile,
    book: PriceBook,
    extra: Mapping[tuple[int, str], int] | None = None,
) -> RatedPeriod:
    """Rate month-to-date counters (plus ``extra``: open sessions' elapsed minutes) under the account's segments."""
    period = Period.parse(period_key)
    combined: dict[tuple[int, str], int] = defaultdict(int)
    for source in (counters, extra or {}):
        for key, quantity in source.items():
            combined[key] += quantity
    return rate_segments(period, segment_usage(period, profile.segments(period), dict(combined)), book)


def open_session_extra(
    sessions: Iterable[OpenSessionFigures],
    profile: AccountProfile,
    now_ms: int,
    period: str,
    video_in: VideoSoFar | None = None,
) -> dict[tuple[int, str], int]:
    """Minutes open sessions would bill in ``period`` if they ended now, keyed like rating's counters (module doc).
    The connection is clipped to the period; each one is rounded as a connection of its own, once, and its minutes
    shared out to the account's tier segments it overlaps by its video and audio seconds in each
    (``meters.minutes_by_segment``, D282), as rating does when it closes.
    """
    bounds = Period.parse(period)
    period_start_ms = int(bounds.start.timestamp() * 1000)
    period_end_ms = int(bounds.end.timestamp() * 1000)
    extra: dict[tuple[int, str], int] = defaultdict(int)
    for session in sessions:
        if session.billing == NOT_BILLED:
            continue
        start_ms = max(session.start_ms, period_start_ms)
        end_ms = min(now_ms, period_end_ms)
        if end_ms <= start_ms:
            continue
        video = functools.partial(_video_so_far, session, now_ms, video_in)
        # cut at the account's tier changes: rounded once, shared out by video and audio seconds (D282)
        for at_ms, minutes in minutes_by_segment(start_ms, end_ms, profile.segment_cuts(start_ms, end_ms), video):
            segment = profile.segment_start(at_ms)
            extra[(segment, Meter.VIDEO.value)] += minutes.video
            extra[(segment, Meter.AUDIO.value)] += minutes.audio
    return dict(extra)


def _video_so_far(
    session: OpenSessionFigures, now_ms: int, video_in: VideoSoFar | None, start_ms: int, end_ms: int
) -> Fraction:
    """The open session's video seconds within ``[start_ms, end_ms)`` (inside its elapsed time): exact from
    ``video_in`` when it answers, else the stored video shared out by elapsed time plus a camera still on (module doc).
    Additive over adjacent windows, so a part's pieces sum to the part."""
    connected = Fraction(end_ms - start_ms, 1000)
    if session.billing != ROOM_RULE:
        return Fraction(0)
    exact = video_in(session, start_ms, end_ms) if video_in is not None else None
    if exact is not None:
        return min(exact, connected)
    video = Fraction(0)
    as_of = min(max(session.as_of_ms, session.start_ms), now_ms)
    known = Fraction(max(0, as_of - session.start_ms), 1000)
    inside = Fraction(max(0, min(as_of, end_ms) - max(start_ms, session.start_ms)), 1000)
    if known > 0:
        video = session.video_seconds * inside / known
    if session.video_active and end_ms > max(as_of, start_ms):
        video += Fraction(end_ms - max(as_of, start_ms), 1000)
    return min(video, connected)


@dataclass(frozen=True, slots=True)
class MonthToDate:
    account_id: str
    period: str
    profile: AccountProfile
    rated: RatedPeriod  # closed sessions + usage + open sessions as if they ended now
    open_sessions: int
    counters: Counters = field(default_factory=dict)  # rating's counters alone (closed sessions, usage)
    extra: dict[tuple[int, str], int] = field(default_factory=dict)  # open sessions' minutes so far
    open: tuple[OpenSessionFigures, ...] = ()  # the open sessions counted

    @property
    def used(self) -> dict[str, Decimal]:
        return {meter.value: self.rated.used[meter] for meter in Meter}


class MonthToDateSource(Protocol):
    """What month to date reads: the profile, rating's counters of the period, the account's open sessions."""

    def profile(self, account_id: str) -> AccountProfile | None:
        """The registered profile; ``None`` when the account is not registered."""
        ...

    def counters(self, account_id: str, period: str) -> Counters: ...

    def open_sessions(self, account_id: str) -> list[OpenSessionFigures]: ...


def month_to_date(
    source: MonthToDateSource,
    account_id: str,
    period: str,
    now_ms: int,
    book: PriceBook,
    video_in: VideoSoFar | None = None,
    profile: AccountProfile | None = None,
) -> MonthToDate:
    """The account's period so far (``profile``: the default for an unregistered account, or one already read)."""
    found = profile or source.profile(account_id) or AccountProfile.default(account_id)
    counters = source.counters(account_id, period)
    sessions = [session for session in source.open_sessions(account_id) if session.account == account_id]
    extra = open_session_extra(sessions, found, now_ms, period, video_in)
    rated = rate_with_extra(period, counters, found, book, extra)
    return MonthToDate(account_id, period, found, rated, len(sessions), dict(counters), extra, tuple(sessions))
