"""Abuse and fraud heuristics: pure functions from what was read to the signals that fire (docs/alerts.md, "Abuse
and fraud signals"). Each takes its thresholds (``AbuseThresholds``, from config) and returns a ``Signal`` - the
account, what was observed, the threshold it passed, and the key it is flagged under (once per key) - or nothing.

- ``concurrent_sessions``: one identity of an account in many calls at once (shared credentials, a bot farm);
- ``connection_storm``: many sub-minute connections of an account in a short window (token scraping, reconnect bots);
- ``usage_spike``: this month's LiveKit cost far above the account's trailing monthly average, pro rata;
- ``shared_fingerprint``: several free accounts paying with one card (fingerprint) or wallet (free-tier farming);
- ``failed_payments``: repeated failed payments of an account within a window.
"""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from decimal import Decimal
from typing import Final

from kilo_billing.accounts import AccountProfile, pseudonym
from kilo_billing.catalog import PriceBook
from kilo_billing.invoicing import rate_counters
from kilo_billing.money import money_str
from kilo_billing.periods import Period
from kilo_billing.usage_signals import Counters, OpenSession, SessionStart

DAY_MS: Final = 86_400_000


@dataclass(frozen=True, slots=True)
class AbuseThresholds:
    concurrent_sessions_per_identity: int = 4  # one identity in this many calls at once
    short_connection_seconds: int = 60  # a connection shorter than this is "sub-minute"
    storm_connections: int = 30  # this many short connections ...
    storm_window_minutes: int = 60  # ... within this window
    spike_factor: Decimal = Decimal(5)  # LiveKit cost this month >= factor x trailing average, pro rata ...
    spike_min_cost_usd: Decimal = Decimal(20)  # ... and at least this much
    baseline_months: int = 3  # the trailing average: the previous months that had usage, up to this many
    free_accounts_per_fingerprint: int = 3  # free accounts paying with one card or wallet
    failed_payments: int = 3  # failed payments of an account ...
    failed_payments_window_days: int = 30  # ... within this window


@dataclass(frozen=True, slots=True)
class Signal:
    """One heuristic fired for one account. ``key`` is unique per occurrence (it is flagged and announced once)."""

    kind: str
    account_id: str
    key: str
    observed: str  # what was seen, for people
    threshold: str  # what it passed


def _day(at_ms: int) -> str:
    return datetime.fromtimestamp(at_ms / 1000, tz=UTC).strftime("%Y-%m-%d")


def concurrent_sessions(sessions: Iterable[OpenSession], t: AbuseThresholds, now_ms: int) -> list[Signal]:
    """Identities with at least ``concurrent_sessions_per_identity`` open sessions in distinct rooms. The identity is
    named by its pseudonym (D80's ``pseudonym``) in the key the flag is claimed under in the alerts table and in what
    was observed (logged, and told the operators with the rooms, where they find the participant): the alerts table
    keeps no participant's identity, which an erasure could not reach (D214)."""
    rooms: dict[tuple[str, str], set[str]] = defaultdict(set)
    for session in sessions:
        if session.identity:
            rooms[(session.account_id, pseudonym(session.account_id, session.identity))].add(session.room)
    return [
        Signal(
            "concurrent_sessions",
            account,
            f"concurrent_sessions:{ref}:{_day(now_ms)}",
            f"identity {ref} (its pseudonym) is in {len(found)} calls at once (rooms {_rooms(found)})",
            f"{t.concurrent_sessions_per_identity} calls at once",
        )
        for (account, ref), found in sorted(rooms.items())
        if len(found) >= t.concurrent_sessions_per_identity
    ]


def _rooms(names: set[str], shown: int = 5) -> str:
    listed = ", ".join(sorted(names)[:shown])
    return listed if len(names) <= shown else f"{listed} and {len(names) - shown} more"


def connection_storm(
    account_id: str, started: Sequence[SessionStart], t: AbuseThresholds, now_ms: int
) -> Signal | None:
    """At least ``storm_connections`` connections shorter than ``short_connection_seconds`` that started within the
    last ``storm_window_minutes`` (open ones are not short yet)."""
    since = now_ms - t.storm_window_minutes * 60_000
    short = [
        s
        for s in started
        if s.start_ms >= since and s.end_ms is not None and s.end_ms - s.start_ms < t.short_connection_seconds * 1000
    ]
    if len(short) < t.storm_connections:
        return None
    return Signal(
        "connection_storm",
        account_id,
        f"connection_storm:{_day(now_ms)}",
        f"{len(short)} connections shorter than {t.short_connection_seconds} s "
        f"in the last {t.storm_window_minutes} min",
        f"{t.storm_connections} in {t.storm_window_minutes} min",
    )


def livekit_cost(profile: AccountProfile, period: str, counters: Counters, book: PriceBook) -> Decimal:
    """LiveKit's cost of an account's counted usage in a period (units x base price, as rating's cost basis)."""
    return rate_counters(Period.parse(period), profile, counters, book).cost_basis


def baseline_periods(now: datetime, months: int) -> list[str]:
    periods, period = [], Period.containing(now)
    for _ in range(months):
        period = period.previous()
        periods.append(period.key)
    return periods


def usage_spike(
    profile: AccountProfile,
    counters: Mapping[str, Counters],
    book: PriceBook,
    t: AbuseThresholds,
    now: datetime,
) -> Signal | None:
    """This month's cost so far against ``spike_factor`` x the trailing monthly average x the share of the month
    elapsed; months without any usage are not part of the average (a new account's average is 0: only the floor
    ``spike_min_cost_usd`` applies)."""
    current = Period.containing(now)
    so_far = livekit_cost(profile, current.key, counters.get(current.key, {}), book)
    history = [
        livekit_cost(profile, period, counters[period], book)
        for period in baseline_periods(now, t.baseline_months)
        if counters.get(period)
    ]
    average = sum(history, Decimal(0)) / len(history) if history else Decimal(0)
    elapsed = current.fraction(current.start, now)
    expected = t.spike_factor * average * Decimal(elapsed.numerator) / Decimal(elapsed.denominator)
    limit = max(t.spike_min_cost_usd, expected)
    if so_far < limit:
        return None
    return Signal(
        "usage_spike",
        profile.account_id,
        f"usage_spike:{current.key}",
        f"LiveKit cost this month ${money_str(so_far)}; trailing monthly average ${money_str(average)}"
        f" ({len(history)} month(s))",
        f"${money_str(limit)} ({t.spike_factor} x the average pro rata, at least ${t.spike_min_cost_usd})",
    )


def shared_fingerprint(
    method: str,
    fingerprint: str,
    sharing: Iterable[AccountProfile],
    is_free: Callable[[str], bool],
    t: AbuseThresholds,
    now: datetime,
) -> list[Signal]:
    """Every free account of those paying with one card/wallet, when there are at least
    ``free_accounts_per_fingerprint`` of them."""
    free = sorted(p.account_id for p in sharing if is_free(p.tier_at(now)))
    if len(free) < t.free_accounts_per_fingerprint:
        return []
    return [
        Signal(
            f"shared_{method}",
            account,
            f"shared_{method}:{fingerprint}",
            f"{len(free)} free accounts pay with one {method} ({', '.join(free)})",
            f"{t.free_accounts_per_fingerprint} free accounts per {method}",
        )
        for account in free
    ]


def failed_payments(account_id: str, failures_ms: Iterable[int], t: AbuseThresholds, now_ms: int) -> Signal | None:
    since = now_ms - t.failed_payments_window_days * DAY_MS
    recent = sorted(at for at in failures_ms if since <= at <= now_ms)
    if len(recent) < t.failed_payments:
        return None
    return Signal(
        "failed_payments",
        account_id,
        f"failed_payments:{_day(now_ms)}",
        f"{len(recent)} failed payments in the last {t.failed_payments_window_days} days",
        f"{t.failed_payments} in {t.failed_payments_window_days} days",
    )
