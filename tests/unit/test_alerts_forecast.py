"""The forecast alert of a budget crossing (kilo_alerts.logic.handle_event on in-memory ports): the month's fixed fee
is in the bill but does not grow with time; only usage is extrapolated, as the account API's forecast does (both use
kilo_billing.budgets.bill_reached_on). Figures worked by hand in each test."""

from __future__ import annotations

from datetime import UTC, date, datetime
from decimal import Decimal

from kilo_alerts.logic import AlertPorts, AlertsPolicy, DeliveryPolicy, handle_event
from kilo_billing.accounts import AccountProfile, TierChange
from kilo_billing.budgets import DEFAULT_WEEKDAY_WEIGHTS, bill_reached_on, month_fee
from kilo_billing.catalog import default_catalog
from kilo_billing.contracts import UsageThresholdCrossedV1, limit_scope
from kilo_billing.periods import Period
from tests.fakes import InMemoryAccountDirectory, InMemoryEntitlements
from tests.unit.alerts_fakes import (
    FakeRooms,
    InMemoryEnforcementLedger,
    InMemoryLedger,
    RecordingScheduler,
    ScriptedMailer,
    ScriptedTexter,
    StaticSessions,
)

# Tuesday 3 November 2026, noon. November starts on a Sunday: weight so far Sun 0.4 + Mon 1 + half of Tue 0.5 = 1.9
NOON = datetime(2026, 11, 3, 12, 0, tzinfo=UTC)
TEAM = AccountProfile(
    "acct_t", (TierChange(datetime(2026, 1, 1, tzinfo=UTC), "team"),), budget_usd=Decimal(60), email="t@example.com"
)


def forecasts(used: str, percent: int) -> list[str]:
    directory = InMemoryAccountDirectory(TEAM)
    ports = AlertPorts(
        directory, InMemoryLedger(), ScriptedMailer(), ScriptedTexter(), InMemoryEntitlements(directory),
        InMemoryEntitlements(directory), StaticSessions(), FakeRooms({}), InMemoryEnforcementLedger(),
        RecordingScheduler(),
    )  # fmt: skip
    event = UsageThresholdCrossedV1(
        event_id=f"e-{used}", account_id="acct_t", period="2026-11", meter="budget", threshold_percent=percent,
        used=used, limit="60", occurred_at=NOON.isoformat(), scope=limit_scope(Decimal(60)),
    )  # fmt: skip
    outcome = handle_event(
        event.DETAIL_TYPE,
        event.model_dump(),
        ports,
        AlertsPolicy(DeliveryPolicy("https://x/prefs", dashboard_url="https://dash.example/")),
        0,
    )
    return [a.alert.values["date_label"] for a in outcome.alerts if a.alert.kind == "budget_forecast"]


def test_given_the_team_fee_then_the_month_fee_is_29_and_a_mid_month_upgrade_pays_its_share() -> None:
    book = default_catalog().for_period(Period.parse("2026-11"))
    assert month_fee(TEAM, "2026-11", book) == Decimal("29.00")
    upgraded = AccountProfile(
        "acct_u",
        (
            TierChange(datetime(2026, 1, 1, tzinfo=UTC), "personal"),
            TierChange(datetime(2026, 11, 16, tzinfo=UTC), "team"),
        ),
    )
    assert month_fee(upgraded, "2026-11", book) == Decimal("14.50")  # $29 x 15 of 30 days (Personal is free)


def test_given_a_bill_that_is_mostly_the_fee_then_no_forecast_is_sent() -> None:
    # $30.00 = $29.00 fee + $1.00 usage at 50 % of $60. Usage: $1.00 / 1.9 = $0.526 a weekday; the month weighs 24.6
    # (21 weekdays + 9 weekend days x 0.4) -> $12.95 of usage by the end, a $41.95 bill: $60 is never reached.
    # (The whole $30 as a run rate would say Thursday 5 November.)
    assert forecasts("30.00", 50) == []
    assert bill_reached_on(Decimal(29), Decimal(1), Decimal(60), NOON, DEFAULT_WEEKDAY_WEIGHTS) is None


def test_given_usage_growing_then_the_forecast_extrapolates_usage_only() -> None:
    # $48.00 = $29.00 fee + $19.00 usage at 80 %. Usage: $19.00 / 1.9 = $10.00 a weekday; $12.00 to $60: the rest of
    # Tuesday 5.00 (7.00 left), Wednesday 10.00 passes it -> Wednesday 4 November. (The whole bill: $25.26 a weekday,
    # the rest of Tuesday alone 12.63 -> Tuesday 3 November.)
    assert forecasts("48.00", 80) == ["Wednesday 4 November"]
    assert bill_reached_on(Decimal(29), Decimal(19), Decimal(60), NOON, DEFAULT_WEEKDAY_WEIGHTS) == date(2026, 11, 4)
