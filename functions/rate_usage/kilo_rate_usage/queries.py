"""Month to date for dashboards and budget checks: rated usage so far, including sessions still open."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from decimal import Decimal
from fractions import Fraction

from kilo_billing.catalog import PriceBook
from kilo_billing.meters import Coverage, Meter
from kilo_billing.money import money_str
from kilo_billing.month_to_date import OpenSessionFigures, VideoSoFar
from kilo_billing.rating import RatedPeriod
from kilo_rate_usage.aggregates import open_session_extra, rate_aggregate
from kilo_rate_usage.model import StoredSession
from kilo_rate_usage.ports import UsageRepository


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
    its state; tracks still published count until now) over the session's window - exact, in any period."""
    states = repo.room_states({stored.session.room_sid for stored in sessions})
    coverages: dict[str, Coverage] = {}

    def video(session: OpenSessionFigures, start_ms: int, end_ms: int) -> Fraction | None:
        state = states.get(session.room_sid)
        if state is None or not state.usable:
            return None
        if session.room_sid not in coverages:
            coverages[session.room_sid] = state.coverage(until_ms=now_ms)
        return state.video_seconds(start_ms, end_ms, coverages[session.room_sid])

    return video


def month_to_date(repo: UsageRepository, account_id: str, period: str, now_ms: int, book: PriceBook) -> MonthToDate:
    aggregate = repo.aggregates([(account_id, period)])[(account_id, period)]
    profile = repo.profiles([account_id])[account_id]
    open_sessions = [stored for stored in repo.open_sessions(account_id) if stored.session.account == account_id]
    extra = open_session_extra(open_sessions, profile, now_ms, period, _video_from_rooms(repo, open_sessions, now_ms))
    rated = rate_aggregate(aggregate, profile, book, extra)
    return MonthToDate(account_id, period, rated, len(open_sessions), dict(aggregate.late))
