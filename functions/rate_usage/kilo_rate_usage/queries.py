"""Month to date for dashboards and budget checks: rated usage so far, including sessions still open."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from decimal import Decimal
from fractions import Fraction

from kilo_billing.accounts import AccountProfile
from kilo_billing.catalog import PriceBook
from kilo_billing.meters import Coverage, Meter
from kilo_billing.money import money_str
from kilo_billing.month_to_date import OpenSessionFigures, VideoSoFar, open_session_extra
from kilo_billing.rating import RatedPeriod
from kilo_rate_usage.aggregates import open_figures, rate_aggregate
from kilo_rate_usage.model import StoredSession
from kilo_rate_usage.ports import UnreadableRoomError, UsageRepository
from kilo_rate_usage.rooms import video_seconds
from kilo_rate_usage.sessions import fold_events


@dataclass(frozen=True, slots=True)
class MonthToDate:
    account_id: str
    period: str
    rated: RatedPeriod  # closed sessions + usage + open sessions as if they ended now
    open_sessions: int
    late: dict[str, int]

    @property
    def used(self) -> dict[str, Decimal]:
        return {meter.value: self.rated.used[meter] for meter in Meter}

    def as_json(self) -> dict[str, object]:
        return {
            "account_id": self.account_id,
            "period": self.period,
            "open_sessions": self.open_sessions,
            "lines": [line.as_json() for line in self.rated.lines],
            "fee": money_str(self.rated.fee),
            "usage": money_str(self.rated.usage_total),
            "total": money_str(self.rated.total),
            "livekit_cost": money_str(self.rated.cost_basis_rounded),
            "late": self.late,
        }


def _video_from_rooms(repo: UsageRepository, sessions: Sequence[StoredSession], now_ms: int) -> VideoSoFar:
    """Open sessions store nothing that grows with the clock: their video so far is the room's video coverage (from
    its state; tracks still published count until now) over the session's window - exact, in any period. A room whose
    state is unreadable (too large to keep, another format just after a deploy, a pending mark) or missing takes its
    coverage from its stored events, folded as a rebuild folds them (D198); only a room whose events cannot
    be decoded answers None (its sessions' stored figures)."""
    states = repo.room_states({stored.session.room_sid for stored in sessions})
    coverages: dict[str, Coverage | None] = {}

    def coverage(room_sid: str) -> Coverage | None:
        if room_sid not in coverages:
            state = states.get(room_sid)
            if state is not None and state.usable:
                coverages[room_sid] = state.coverage(until_ms=now_ms)
            else:
                try:
                    coverages[room_sid] = fold_events(repo.room_events(room_sid)).coverage(until_ms=now_ms)
                except UnreadableRoomError:  # logged and counted by the adapter; rating refuses the room too
                    coverages[room_sid] = None
        return coverages[room_sid]

    def video(session: OpenSessionFigures, start_ms: int, end_ms: int) -> Fraction | None:
        found = coverage(session.room_sid)
        if found is None:
            return None
        return video_seconds(start_ms, end_ms, found)

    return video


def running_extra(
    repo: UsageRepository,
    profile: AccountProfile,
    period: str,
    now_ms: int,
    sessions: Sequence[StoredSession] | None = None,
) -> tuple[dict[tuple[int, str], int], int]:
    """The minutes the account's open sessions would bill in ``period`` if they ended now (video exact from the rooms'
    states), and how many sessions are open. ``sessions``: the open sessions already read (else they are queried).
    Month to date and rating's budget and hard-limit checks use this one reading (D19, D44)."""
    found = repo.open_sessions(profile.account_id) if sessions is None else sessions
    open_sessions = [stored for stored in found if stored.session.account == profile.account_id]
    if not open_sessions:
        return {}, 0
    video = _video_from_rooms(repo, open_sessions, now_ms)
    return open_session_extra(open_figures(open_sessions), profile, now_ms, period, video), len(open_sessions)


def month_to_date(repo: UsageRepository, account_id: str, period: str, now_ms: int, book: PriceBook) -> MonthToDate:
    aggregate = repo.aggregates([(account_id, period)])[(account_id, period)]
    profile = repo.profiles([account_id]).get(account_id) or AccountProfile.default(account_id)  # not registered: D18
    extra, open_sessions = running_extra(repo, profile, period, now_ms)
    rated = rate_aggregate(aggregate, profile, book, extra)
    return MonthToDate(account_id, period, rated, open_sessions, dict(aggregate.late))
