"""The rates logic: two sources, staleness by heartbeat, disagreement over 1 %, the USDC depeg guard."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from decimal import Decimal

import pytest

from kilo_crypto_watch.model import RateReading
from kilo_crypto_watch.ports import PriceUnavailableError
from kilo_crypto_watch.rates import (
    CheckedRates,
    DepegError,
    RatePolicy,
    SourcesDisagreeError,
    SourceUnavailableError,
    StaleRateError,
    decide,
)

NOW = datetime(2026, 11, 2, 12, 0, tzinfo=UTC)
POLICY = RatePolicy()


def chainlink(asset: str, price: str, age_s: int = 600, heartbeat: int = 3600) -> RateReading:
    return RateReading("chainlink:ethereum", asset, Decimal(price), NOW - timedelta(seconds=age_s), heartbeat)  # type: ignore[arg-type]


def exchange(asset: str, price: str, age_s: int = 30) -> RateReading:
    return RateReading("exchange:coinbase", asset, Decimal(price), NOW - timedelta(seconds=age_s), 120)  # type: ignore[arg-type]


def test_given_two_fresh_agreeing_sources_then_the_chainlink_price_is_locked_with_both_readings() -> None:
    readings = [chainlink("ETH", "2500.00"), exchange("ETH", "2510.00")]  # 10 / 2500 = 0.4 % apart
    locked = decide("ETH", readings, NOW, POLICY)
    assert (locked.price, locked.readings, locked.locked_at) == (Decimal("2500.00"), tuple(readings), NOW)


def test_given_sources_exactly_one_percent_apart_then_still_quoted() -> None:
    assert decide("ETH", [chainlink("ETH", "2500.00"), exchange("ETH", "2525.00")], NOW, POLICY).price == Decimal(
        "2500.00"
    )


def test_given_sources_more_than_one_percent_apart_then_refused_naming_both() -> None:
    with pytest.raises(SourcesDisagreeError) as refused:
        decide("ETH", [chainlink("ETH", "2500.00"), exchange("ETH", "2526.00")], NOW, POLICY)  # 26 / 2500 = 1.04 %
    assert str(refused.value) == (
        "ETH price sources disagree: chainlink:ethereum reads 2500.00 USD, exchange:coinbase reads 2526.00 USD "
        "(1.04 % apart, limit 1 %)"
    )


def test_given_a_reading_older_than_its_heartbeat_then_stale() -> None:
    at_now = r"is stale at 2026-11-02T12:00:00\+00:00"
    with pytest.raises(StaleRateError, match=rf"chainlink:ethereum {at_now}: updated 3601 s before, heartbeat 3600 s"):
        decide("ETH", [chainlink("ETH", "2500.00", age_s=3601), exchange("ETH", "2500.00")], NOW, POLICY)
    with pytest.raises(StaleRateError, match=rf"exchange:coinbase {at_now}: updated 121 s before, heartbeat 120 s"):
        decide("ETH", [chainlink("ETH", "2500.00"), exchange("ETH", "2500.00", age_s=121)], NOW, POLICY)
    fresh = decide("ETH", [chainlink("ETH", "2500.00", age_s=3600), exchange("ETH", "2500.00")], NOW, POLICY)
    assert fresh.price == Decimal("2500.00")


@pytest.mark.parametrize("price", ["0.9799", "1.0201"])
def test_given_usdc_off_its_peg_then_refused(price: str) -> None:
    with pytest.raises(
        DepegError, match=f"USDC is off its peg: exchange:coinbase reads {price} USD, outside 0.98-1.02"
    ):
        decide("USDC", [chainlink("USDC", "1.0000", heartbeat=86400), exchange("USDC", price)], NOW, POLICY)


def test_given_usdc_inside_its_band_then_locked_at_exactly_one() -> None:
    locked = decide("USDC", [chainlink("USDC", "0.9990", heartbeat=86400), exchange("USDC", "0.9985")], NOW, POLICY)
    assert locked.price == Decimal(1)


def test_given_one_source_then_refused() -> None:
    with pytest.raises(SourceUnavailableError, match="1 price source"):
        decide("SOL", [chainlink("SOL", "150.00")], NOW, POLICY)


class Source:
    def __init__(self, reading: RateReading | None) -> None:
        self.reading = reading

    def read(self, asset: str) -> RateReading:
        if self.reading is None:
            raise PriceUnavailableError("feed answered no round")
        return self.reading


def test_given_a_source_that_does_not_answer_then_the_quote_is_refused_naming_it() -> None:
    rates = CheckedRates([Source(None), Source(exchange("ETH", "2500.00"))])
    with pytest.raises(SourceUnavailableError, match="ETH: a price source is unavailable: feed answered no round"):
        rates.lock("ETH", NOW)
    both = CheckedRates([Source(chainlink("ETH", "2500.00")), Source(exchange("ETH", "2501.00"))])
    assert both.lock("ETH", NOW).price == Decimal("2500.00")


class PastSource(Source):
    """A source that reads the past (as Chainlink does): what it answered at each moment asked."""

    def __init__(self, answers: dict[datetime, RateReading]) -> None:
        super().__init__(None)
        self.answers = answers
        self.asked: list[tuple[datetime, object]] = []

    def read_at(self, asset: str, when: datetime, block: object = None) -> RateReading:
        self.asked.append((when, block))
        return self.answers[when]


def test_given_a_past_moment_then_the_rate_is_the_past_readers_answer_then_fresh_as_of_that_moment() -> None:
    """D218: the first source that reads the past answers (the exchange knows only now); fresh against the
    moment asked (10 min old then), though it is a day old now."""
    from kilo_crypto_watch.ports import ChainBlock  # noqa: PLC0415

    then = NOW - timedelta(days=1)
    past = RateReading("chainlink:ethereum", "ETH", Decimal("2480.00"), then - timedelta(minutes=10), 3600)
    chainlink_source = PastSource({then: past})
    rates = CheckedRates([Source(exchange("ETH", "2000.00")), chainlink_source])

    locked = rates.at("ETH", then, ChainBlock("ethereum", 123))

    assert (locked.price, locked.readings, locked.locked_at) == (Decimal("2480.00"), (past,), then)
    assert chainlink_source.asked == [(then, ChainBlock("ethereum", 123))]


def test_given_no_source_reading_the_past_or_a_stale_answer_then_no_rate_then() -> None:
    then = NOW - timedelta(days=1)
    with pytest.raises(SourceUnavailableError, match="no price source can read a past price"):
        CheckedRates([Source(exchange("ETH", "2500.00"))]).at("ETH", then)
    stale = RateReading("chainlink:ethereum", "ETH", Decimal("2480.00"), then - timedelta(seconds=3601), 3600)
    then_stale = r"ETH price from chainlink:ethereum is stale at 2026-11-01T12:00:00\+00:00: updated 3601 s before"
    with pytest.raises(StaleRateError, match=rf"{then_stale}, heartbeat 3600 s"):
        CheckedRates([PastSource({then: stale})]).at("ETH", then)


def test_given_a_reading_of_another_asset_then_refused_with_one_message_now_and_for_a_past_moment() -> None:
    then = NOW - timedelta(days=1)
    sol = RateReading("chainlink:ethereum", "SOL", Decimal("150.00"), then - timedelta(minutes=10), 3600)
    message = "chainlink:ethereum answered for SOL, not ETH"
    with pytest.raises(SourceUnavailableError, match=message):
        decide("ETH", [chainlink("SOL", "150.00"), exchange("ETH", "2500.00")], NOW, POLICY)
    with pytest.raises(SourceUnavailableError, match=message):
        CheckedRates([PastSource({then: sol})]).at("ETH", then)
