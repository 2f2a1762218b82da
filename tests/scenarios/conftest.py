"""Tiny shared builders for the billing scenarios (exposed as fixtures, so no helper module is imported)."""

from __future__ import annotations

from collections.abc import Callable, Mapping
from datetime import timedelta

import pytest

from kilo_billing.catalog import PriceBook, default_catalog
from kilo_billing.meters import Meter
from kilo_billing.periods import Period
from kilo_billing.rating import InvoiceLine, RatedPeriod, TierSegment, UsageRecord, rate_period

RateMonth = Callable[..., RatedPeriod]
LineFor = Callable[..., InvoiceLine]
MARCH_2026 = Period(2026, 3)  # 31 days; the default month of single-tier scenarios


@pytest.fixture(scope="session")
def book() -> PriceBook:
    """The shipped price book (2026-01), in effect for every period the scenarios use."""
    return default_catalog().for_period(Period(2026, 1))


@pytest.fixture
def rate_month(book: PriceBook) -> RateMonth:
    """Rate one whole month on a single tier; usage is given per meter in base units (minutes, messages, bytes)."""

    def rate(tier: str, usage: Mapping[Meter, int], period: Period = MARCH_2026) -> RatedPeriod:
        at = period.start + timedelta(days=14)
        records = [UsageRecord(meter, quantity, at) for meter, quantity in usage.items()]
        return rate_period(period, [TierSegment(tier, period.start, period.end)], records, book)

    return rate


@pytest.fixture
def line_for() -> LineFor:
    """The usage line of ``meter`` (of ``tier`` when the period has several tier segments)."""

    def find(rated: RatedPeriod, meter: Meter, tier: str | None = None) -> InvoiceLine:
        matches = [line for line in rated.usage_lines if line.meter is meter and (tier is None or line.tier == tier)]
        assert len(matches) == 1, f"expected one {meter} line for tier {tier}, got {len(matches)}"
        return matches[0]

    return find
