"""Unit rules of the domain library that the scenario stories do not spell out: validation and edge cases."""

from __future__ import annotations

import json
from datetime import UTC, datetime, timedelta, timezone
from decimal import Decimal
from fractions import Fraction
from pathlib import Path

import pytest
from pydantic import ValidationError

from kilo_billing.catalog import Catalog, PriceBook, UnknownTierError, default_catalog, parse_price_book
from kilo_billing.meters import Coverage, Meter, connection_minutes
from kilo_billing.money import (
    FloatNotAllowedError,
    decimal_str,
    line_amount,
    optional_money_str,
    round_money,
    to_decimal,
)
from kilo_billing.periods import NaiveDatetimeError, Period, split_interval
from kilo_billing.rating import RatingError, TierChange, TierSegment, UsageRecord, rate_period, segments_for

BOOK_JSON = Path(__file__).resolve().parents[2] / "layers/common/kilo_billing/pricebooks/2026-01-01.json"


def book_data() -> dict[str, object]:
    data: dict[str, object] = json.loads(BOOK_JSON.read_text())
    return data


def test_given_a_float_when_used_as_money_then_refused() -> None:
    with pytest.raises(FloatNotAllowedError):
        round_money(0.1)  # type: ignore[arg-type]
    with pytest.raises(FloatNotAllowedError):
        to_decimal(1.5)  # type: ignore[arg-type]
    with pytest.raises(FloatNotAllowedError):
        line_amount(True, Decimal(1))


def test_given_negative_half_cent_then_rounds_away_from_zero() -> None:
    assert round_money(Decimal("-0.005")) == Decimal("-0.01")
    assert round_money(Decimal("-0.004")) == Decimal("0.00")
    assert str(round_money(Decimal("-0.004"))) == "0.00"  # never "-0.00"


def test_given_decimals_when_printed_then_never_scientific() -> None:
    assert decimal_str(Decimal("0.00072")) == "0.00072"
    assert decimal_str(Decimal("5E+3")) == "5000"
    assert decimal_str(Decimal("25.00")) == "25"
    assert decimal_str(Decimal("1.240")) == "1.24"


def test_given_an_amount_that_may_be_absent_then_two_decimals_or_none() -> None:
    assert optional_money_str(Decimal("150")) == "150.00"
    assert optional_money_str(Decimal("0.125")) == "0.13"  # half-up to the cent
    assert optional_money_str(None) is None


def test_given_naive_datetime_then_period_math_refuses_it() -> None:
    with pytest.raises(NaiveDatetimeError):
        Period.containing(datetime(2026, 1, 1))  # noqa: DTZ001 - the point of the test


def test_given_non_utc_offset_then_instant_is_converted_to_utc() -> None:
    # 2026-03-01 00:30 at +01:00 is still February in UTC
    instant = datetime(2026, 3, 1, 0, 30, tzinfo=timezone(timedelta(hours=1)))
    assert Period.containing(instant) == Period(2026, 2)


def test_given_december_then_next_period_is_january_and_bad_keys_are_refused() -> None:
    assert Period(2026, 12).next() == Period(2027, 1)
    assert Period.parse("2026-02").seconds == 28 * 86_400
    for bad in ("2026-2", "26-02", "2026-00", "2026-13", "x"):
        with pytest.raises(ValueError, match=r"YYYY-MM|month must be"):
            Period.parse(bad)


def test_given_interval_over_two_boundaries_then_three_slices() -> None:
    start = datetime(2026, 1, 31, 23, 0, tzinfo=UTC)
    end = datetime(2026, 3, 1, 0, 30, tzinfo=UTC)
    slices = split_interval(start, end)
    assert [s.period.key for s in slices] == ["2026-01", "2026-02", "2026-03"]
    assert [s.seconds for s in slices] == [3600, 28 * 86_400, 1800]
    assert split_interval(end, start) == []


def test_given_overlapping_video_intervals_then_counted_once() -> None:
    t0 = datetime(2026, 5, 1, tzinfo=UTC)
    window = (t0, t0 + timedelta(seconds=100))
    intervals = [(t0, t0 + timedelta(seconds=30)), (t0 + timedelta(seconds=20), t0 + timedelta(seconds=50))]
    assert Coverage(intervals).seconds(window) == 50


def test_given_bad_connection_seconds_then_refused() -> None:
    with pytest.raises(ValueError, match="cannot exceed"):
        connection_minutes(10, 11)
    with pytest.raises(ValueError, match=">= 0"):
        connection_minutes(-1, 0)
    assert connection_minutes(Fraction(60001, 1000), 0).total == 2  # 60.001 s is two started minutes


def test_given_price_book_missing_a_meter_price_then_validation_names_it() -> None:
    data = book_data()
    meters = dict(data["meters"])  # type: ignore[call-overload]
    del meters["audio"]
    with pytest.raises(ValidationError, match="price missing for meters"):
        PriceBook.model_validate({**data, "meters": meters})


def test_given_price_book_effective_mid_month_then_refused() -> None:
    with pytest.raises(ValidationError, match="first day of a month"):
        PriceBook.model_validate({**book_data(), "effective_from": "2026-01-15"})


def test_given_negative_price_or_unknown_field_then_refused() -> None:
    data = book_data()
    with pytest.raises(ValidationError):
        PriceBook.model_validate({**data, "markup": "-1"})
    with pytest.raises(ValidationError, match="Extra inputs"):
        PriceBook.model_validate({**data, "discount": "0.5"})


def test_given_allowance_not_on_a_step_then_refused() -> None:
    data = book_data()
    tiers = [dict(tier) for tier in data["tiers"]]  # type: ignore[attr-defined]
    tiers[0]["included"] = {**tiers[0]["included"], "data_transfer": "10.005"}
    with pytest.raises(ValidationError, match="multiple of its step"):
        PriceBook.model_validate({**data, "tiers": tiers})


def test_given_json_numbers_then_read_as_decimal_not_float() -> None:
    raw = BOOK_JSON.read_text().replace('"markup": "1.20"', '"markup": 1.20')
    book = parse_price_book(raw)
    assert book.markup == Decimal("1.20")
    assert book.unit_price(Meter.VIDEO) == Decimal("0.00072")


def test_given_two_books_effective_the_same_day_or_none_then_the_catalog_refuses_them() -> None:
    # which book prices which period is the story in tests/scenarios/test_catalog.py
    base = default_catalog().latest
    with pytest.raises(ValueError, match="same date"):
        Catalog([base, base])
    with pytest.raises(ValueError, match="at least one price book"):
        Catalog([])


def test_given_unknown_tier_then_error_lists_known_tiers() -> None:
    with pytest.raises(UnknownTierError, match="personal, team, enterprise"):
        default_catalog().latest.tier("gold")


def test_given_bad_usage_or_segments_then_rating_refuses() -> None:
    book = default_catalog().latest
    period = Period(2026, 4)
    whole = [TierSegment("team", period.start, period.end)]
    # negative, float and out-of-period usage: tests/scenarios/test_data_and_messages.py
    with pytest.raises(RatingError, match="integer"):
        UsageRecord(Meter.VIDEO, Decimal(3), period.start)  # type: ignore[arg-type]
    assert rate_period(period, whole, [], book).fee == Decimal("29.00")  # control: one whole-period segment rates
    with pytest.raises(RatingError, match="cover the period"):
        rate_period(period, [TierSegment("team", period.start, period.end - timedelta(days=1))], [], book)
    with pytest.raises(RatingError, match="contiguous"):
        rate_period(period, [TierSegment("team", period.start + timedelta(days=1), period.end)], [], book)
    with pytest.raises(RatingError, match="no tier in effect"):
        segments_for(period, [TierChange(period.start + timedelta(days=2), "team")])
