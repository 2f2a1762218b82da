"""Month to date for dashboards and budget checks: rated usage so far, including sessions still open."""

from __future__ import annotations

from dataclasses import dataclass
from decimal import Decimal

from kilo_billing.catalog import PriceBook
from kilo_billing.meters import Meter
from kilo_billing.money import money_str
from kilo_billing.rating import RatedPeriod
from kilo_rate_usage.aggregates import open_session_extra, rate_aggregate
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


def month_to_date(repo: UsageRepository, account_id: str, period: str, now_ms: int, book: PriceBook) -> MonthToDate:
    aggregate = repo.aggregates([(account_id, period)])[(account_id, period)]
    profile = repo.profiles([account_id])[account_id]
    open_sessions = [stored for stored in repo.open_sessions(account_id) if stored.session.account == account_id]
    extra = open_session_extra(open_sessions, profile, now_ms, period)
    rated = rate_aggregate(aggregate, profile, book, extra)
    return MonthToDate(account_id, period, rated, len(open_sessions), dict(aggregate.late))
