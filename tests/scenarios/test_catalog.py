"""The catalog is data: one markup, derived prices, effective-dated price books."""

from __future__ import annotations

from datetime import UTC, date, datetime
from decimal import Decimal

import pytest

from kilo_billing.catalog import Catalog, PriceBook, default_catalog
from kilo_billing.meters import Meter
from kilo_billing.periods import Period
from kilo_billing.rating import TierSegment, UsageRecord, compose_invoice, rate_period


def _book_from_july(book: PriceBook) -> PriceBook:
    """A second price book from 2026-07: markup 1.50 and a $35 Team fee; everything else as in 2026-01."""
    data = book.model_dump(mode="json")
    data.update(version="2026-07", effective_from="2026-07-01", markup="1.50")
    data["tiers"] = [dict(tier, monthly_fee="35") if tier["id"] == "team" else tier for tier in data["tiers"]]
    return PriceBook.model_validate(data)


def test_given_shipped_price_book_when_deriving_unit_prices_then_they_equal_the_published_table(book):
    assert book.markup == Decimal("1.20")
    assert book.currency == "USD"
    assert book.effective_from == date(2026, 1, 1)
    published = {
        Meter.VIDEO: (Decimal("0.0006"), Decimal("0.00072")),  # 0.0006 x 1.20
        Meter.AUDIO: (Decimal("0.0003"), Decimal("0.00036")),  # 0.0003 x 1.20
        Meter.MESSAGES: (Decimal("0.0001"), Decimal("0.00012")),  # 0.0001 x 1.20
        Meter.DATA_TRANSFER: (Decimal("0.0001"), Decimal("0.00012")),  # 0.0001 x 1.20
    }
    for meter, (base, ours) in published.items():
        assert book.base_price(meter) == base
        assert book.unit_price(meter) == ours


def test_given_shipped_price_book_when_reading_tiers_then_fees_allowances_and_entitlements_match_the_policy(book):
    assert book.tier_ids == ["personal", "team", "enterprise"]
    personal, team, enterprise = (book.tier(t) for t in book.tier_ids)
    assert (personal.monthly_fee, team.monthly_fee, enterprise.monthly_fee) == (
        Decimal("0"),
        Decimal("29"),
        Decimal("99"),
    )
    assert [personal.allowance(m) for m in Meter] == [
        Decimal("5000"),
        Decimal("10000"),
        Decimal("100000"),
        Decimal("10"),
    ]
    assert [team.allowance(m) for m in Meter] == [
        Decimal("50000"),
        Decimal("100000"),
        Decimal("1000000"),
        Decimal("100"),
    ]
    assert [enterprise.allowance(m) for m in Meter] == [None, None, None, None]  # unlimited
    assert "shared_workspaces" in team.entitlements
    assert "custom_llm_endpoints" in enterprise.entitlements
    assert "team_collaboration" not in personal.entitlements


def test_given_second_price_book_from_july_when_picking_a_book_then_later_periods_only_use_it():
    shipped = default_catalog().for_period(Period(2026, 1))
    july = _book_from_july(shipped)
    catalog = Catalog([july, shipped])  # order of construction does not matter

    assert catalog.for_period(Period(2026, 1)).version == "2026-01"
    assert catalog.for_period(Period(2026, 6)).version == "2026-01"
    assert catalog.for_period(Period(2026, 7)).version == "2026-07"
    assert catalog.for_period(Period(2027, 3)).version == "2026-07"
    assert catalog.latest.version == "2026-07"
    assert july.unit_price(Meter.VIDEO) == Decimal("0.0009")  # 0.0006 x 1.50
    with pytest.raises(LookupError):
        catalog.for_period(Period(2025, 12))


def test_given_price_change_in_july_when_june_and_july_rated_then_june_keeps_old_prices(book):
    catalog = Catalog([book, _book_from_july(book)])
    june, july = Period(2026, 6), Period(2026, 7)

    def rate(period: Period):
        usage = [UsageRecord(Meter.VIDEO, 51_000, datetime(period.year, period.month, 2, tzinfo=UTC))]
        return rate_period(period, [TierSegment("team", period.start, period.end)], usage, catalog.for_period(period))

    june_rated, july_rated = rate(june), rate(july)
    assert june_rated.price_book_version == "2026-01"
    assert june_rated.total == Decimal("29.72")  # 29 + 1000 x 0.00072
    assert july_rated.price_book_version == "2026-07"
    assert july_rated.total == Decimal("35.90")  # 35 + 1000 x 0.0009
    # the June invoice bills July's fee in advance from July's book
    invoice = compose_invoice("acct", june_rated, "team", catalog.for_period(july), Decimal("29.00"))
    assert invoice.lines[-1].amount == Decimal("35.00")
    assert invoice.total == Decimal("35.72")  # 0.72 June usage + 35.00 July fee
