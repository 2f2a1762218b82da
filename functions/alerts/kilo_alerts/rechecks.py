"""The forecast alert's re-check (D366): one per account and month, due at the forecast's base.

A budget event below 100 % handled before the base has elapsed (the month's first calls: the fee crosses every
threshold it covers at once) forecasts from the use spread over the base, or from too little to give a day. It plans
one re-check (``ForecastRechecks.plan``: a conditional row, one per account and month whatever the receives); the
operator checks' scheduled run (``queue_due``) puts the rows now due - a bounded number per run, their delays spread
over the run's interval - on their own queue as ``BudgetForecastDue.v1``, which the alerts function forecasts from
the month read then (``kilo_alerts.logic``) and is all it takes from that queue (D366 amended (fq))."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import asdict, dataclass
from datetime import UTC, datetime, timedelta
from typing import Any, Final, Protocol

from kilo_billing.periods import Period

FORECAST_DUE: Final = "BudgetForecastDue.v1"  # the re-check's message, on its own queue


class RecheckError(ValueError):
    """A re-check message that does not name what it re-checks (a bug upstream: its queue's dead-letter path)."""


@dataclass(frozen=True, slots=True)
class ForecastRecheck:
    """The re-check of ``account_id``'s forecast for ``period``, due at ``due_ms``: of the limit forecast then
    (``limit_name`` "hard limit" or "budget", ``limit`` its amount as written), and the day that forecast said
    (``forecast_day``, ISO; empty when it gave none)."""

    account_id: str
    period: str
    due_ms: int
    limit_name: str
    limit: str
    forecast_day: str = ""

    def detail(self) -> dict[str, Any]:
        return asdict(self)

    @classmethod
    def from_detail(cls, detail: Mapping[str, Any]) -> ForecastRecheck:
        names = ("account_id", "period", "limit_name", "limit", "forecast_day")
        due = detail.get("due_ms")
        if not all(isinstance(detail.get(name), str) for name in names) or not isinstance(due, int):
            raise RecheckError(f"a forecast re-check names {', '.join(names)} and due_ms")
        return cls(
            str(detail["account_id"]),
            str(detail["period"]),
            due,
            str(detail["limit_name"]),
            str(detail["limit"]),
            str(detail["forecast_day"]),
        )


@dataclass(frozen=True, slots=True)
class RecheckRun:
    """One run of ``queue_due``: the re-checks it marked queued (a row another run marked first is that run's), and
    on the month's last run the month's re-checks it left pending (``dropped``: moot once the month is over; counted
    up to the run's bound)."""

    queued: tuple[ForecastRecheck, ...]
    dropped: int = 0


class ForecastRechecks(Protocol):
    """The re-check rows (the alerts table, ``ACCOUNT#<id>`` / ``FORECAST_RECHECK#<period>``)."""

    def plan(self, recheck: ForecastRecheck, at_ms: int) -> None:
        """Write the account's re-check of the month unless one is there; one still pending is replaced when
        ``recheck`` has a day (the forecast a later early event sent) or is of another limit (name or amount: the
        limit changed before the base)."""
        ...

    def due(self, period: str, now_ms: int, limit: int) -> list[ForecastRecheck]:
        """At most ``limit`` pending re-checks of ``period`` due at or before ``now_ms``, the earliest first."""
        ...

    def queued(self, recheck: ForecastRecheck, at_ms: int) -> bool:
        """Mark ``recheck`` queued (no longer pending) unless another run did or the row is no longer the one read
        (replaced since: another limit or day - it stays pending for the next run); false then."""
        ...


class RecheckQueue(Protocol):
    def send(self, recheck: ForecastRecheck, delay_seconds: int) -> None:
        """Put ``recheck`` on the re-checks' queue, delivered after ``delay_seconds`` (at most 900)."""
        ...


RUN_INTERVAL_SECONDS: Final = 900  # the operator checks' schedule for the re-checks: rate(15 minutes)


def queue_due(
    rechecks: ForecastRechecks, queue: RecheckQueue, now_ms: int, per_run: int, spread_seconds: int
) -> RecheckRun:
    """The operator checks' run: the current month's re-checks due by ``now_ms``, at most ``per_run``, each sent with
    a delay of its rank x ``spread_seconds`` / their number (the alerts function gets them spread over the run's
    interval, not all at the base's one instant; on the month's last run over the seconds left in the month), then
    marked queued if the row is still the one read; only those this run marked count (one another
    run marked first was sent by it too: the alerts function's ledger claims make the second send nothing). A failure
    raises: the run is retried and what was not marked is sent again. On the month's last run (the next one,
    ``RUN_INTERVAL_SECONDS`` later, is in another month) the month's re-checks still pending are counted as dropped
    (those it marked left out: the index may list them still)."""
    now = datetime.fromtimestamp(now_ms / 1000, UTC)
    period = Period.containing(now)
    found = rechecks.due(period.key, now_ms, per_run)
    # on the month's last run a delay past midnight would reach the alerts function in the next month (nothing sent)
    spread = max(0, min(spread_seconds, (int(period.end.timestamp()) * 1000 - now_ms) // 1000))
    queued = []
    for rank, recheck in enumerate(found):
        queue.send(recheck, rank * spread // len(found))
        if rechecks.queued(recheck, now_ms):
            queued.append(recheck)
    dropped = 0
    if not period.contains(now + timedelta(seconds=RUN_INTERVAL_SECONDS)):
        # the index is read eventually consistent: it may still list the rows just marked - left out
        marked = {(r.account_id, r.period) for r in queued}
        pending = rechecks.due(period.key, int(period.end.timestamp()) * 1000 - 1, per_run + len(marked))
        dropped = min(per_run, len([r for r in pending if (r.account_id, r.period) not in marked]))
    return RecheckRun(tuple(queued), dropped)
