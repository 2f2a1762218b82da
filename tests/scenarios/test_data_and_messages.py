"""Data transfer in 0.01 GB steps (GB = 10^9 bytes, period GB = ceil(bytes / 10^7) / 100) and message counts."""

from __future__ import annotations

from datetime import UTC, datetime
from decimal import Decimal

import pytest

from kilo_billing.meters import Meter, bytes_to_gb
from kilo_billing.periods import NaiveDatetimeError, Period
from kilo_billing.rating import RatingError, TierSegment, UsageRecord, rate_period

GB = 10**9
MARCH = Period(2026, 3)


@pytest.mark.parametrize(
    ("total_bytes", "gb", "shown"),
    [
        pytest.param(0, Decimal("0.00"), "0", id="0_bytes"),
        pytest.param(1, Decimal("0.01"), "0.01", id="1_byte"),  # ceil(1 / 10^7) = 1 step
        pytest.param(10**7, Decimal("0.01"), "0.01", id="10^7_bytes"),  # exactly 1 step
        pytest.param(10**7 + 1, Decimal("0.02"), "0.02", id="10^7+1_bytes"),  # ceil(1.0000001) = 2 steps
        pytest.param(GB, Decimal("1.00"), "1", id="1_GB"),  # 100 steps
        pytest.param(GB + 1, Decimal("1.01"), "1.01", id="1_GB_plus_1_byte"),  # 101 steps
    ],
)
def test_given_bytes_reported_when_converted_then_gb_in_one_hundredth_steps_rounded_up(
    rate_month, line_for, total_bytes, gb, shown
):
    assert bytes_to_gb(total_bytes) == gb
    rated = rate_month("personal", {Meter.DATA_TRANSFER: total_bytes})
    assert line_for(rated, Meter.DATA_TRANSFER).used == gb
    assert line_for(rated, Meter.DATA_TRANSFER).as_json()["used"] == shown  # JSON view: string, never float


def test_given_three_small_transfers_when_rated_then_bytes_are_summed_before_stepping(book, line_for):
    records = [UsageRecord(Meter.DATA_TRANSFER, 4_000_000, datetime(2026, 3, day, tzinfo=UTC)) for day in (1, 2, 3)]
    rated = rate_period(MARCH, [TierSegment("personal", MARCH.start, MARCH.end)], records, book)
    # 3 x 4,000,000 = 12,000,000 bytes -> ceil(1.2) = 2 steps = 0.02 GB (per-record rounding would give 0.03)
    assert line_for(rated, Meter.DATA_TRANSFER).used == Decimal("0.02")


def test_given_personal_account_when_110_gb_transferred_then_100_gb_overage_is_one_cent(rate_month, line_for):
    line = line_for(rate_month("personal", {Meter.DATA_TRANSFER: 110 * GB}), Meter.DATA_TRANSFER)
    assert line.billable == Decimal("100.00")  # 110 - 10
    assert line.unit_price == Decimal("0.00012")
    assert line.amount == Decimal("0.01")  # 100 x 0.00012 = 0.012 -> 0.01


def test_given_team_account_when_data_over_by_a_fraction_of_gb_then_billed_in_hundredths(rate_month, line_for):
    # 141.5 GB + 1 byte -> 14151 steps = 141.51 GB; 41.51 x 0.00012 = 0.0049812 -> 0.00
    line = line_for(rate_month("team", {Meter.DATA_TRANSFER: 141_500_000_001}), Meter.DATA_TRANSFER)
    assert line.used == Decimal("141.51")
    assert line.billable == Decimal("41.51")
    assert line.amount == Decimal("0.00")


def test_given_app_reports_messages_in_batches_when_rated_then_counts_are_summed(book, line_for):
    batches = [(60_000, 3), (50_000, 17), (1, 31)]  # (messages, day of March)
    records = [UsageRecord(Meter.MESSAGES, n, datetime(2026, 3, day, 8, tzinfo=UTC)) for n, day in batches]
    rated = rate_period(MARCH, [TierSegment("personal", MARCH.start, MARCH.end)], records, book)
    line = line_for(rated, Meter.MESSAGES)
    assert line.used == Decimal("110001")  # 60000 + 50000 + 1
    assert line.billable == Decimal("10001")  # 110001 - 100000
    assert line.amount == Decimal("1.20")  # 10001 x 0.00012 = 1.20012 -> 1.20


def test_given_malformed_usage_when_recorded_then_refused_instead_of_silently_billed():
    at = datetime(2026, 3, 5, tzinfo=UTC)
    with pytest.raises(RatingError, match=">= 0"):
        UsageRecord(Meter.MESSAGES, -1, at)  # negative count
    with pytest.raises(RatingError, match="integer"):
        UsageRecord(Meter.DATA_TRANSFER, 1.5, at)  # a float quantity
    with pytest.raises(NaiveDatetimeError):
        UsageRecord(Meter.MESSAGES, 1, datetime(2026, 3, 5))  # noqa: DTZ001 - naive on purpose
    with pytest.raises(ValueError, match="bytes must be >= 0"):
        bytes_to_gb(-1)


def test_given_usage_of_april_when_rating_march_then_refused_so_it_is_billed_in_its_own_period(book):
    april_usage = [UsageRecord(Meter.MESSAGES, 5, datetime(2026, 4, 1, tzinfo=UTC))]
    with pytest.raises(RatingError, match="outside period"):
        rate_period(MARCH, [TierSegment("team", MARCH.start, MARCH.end)], april_usage, book)
