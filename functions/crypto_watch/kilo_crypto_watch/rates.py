"""The rates logic: from two or more independent readings (Chainlink on chain, an exchange's spot API) to the USD price
a quote locks - or a refusal naming why.

Rules (crypto.md): every source must answer (``PriceSource.read``); a reading older than its heartbeat (the feed's, else
``default_heartbeat_seconds``) is stale; two readings more than ``max_disagreement`` apart (relative to the lower one)
refuse the quote, naming both; a stablecoin read outside its band (0.98-1.02) is off its peg. The price locked is the
first source's (Chainlink, the on-chain reference; the others guard it); a stablecoin inside its band is locked at
exactly 1 (a $12.34 bill asks 12.34 USDC). Every reading used is kept with the locked rate (stored with the quote).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime
from decimal import Decimal
from typing import TYPE_CHECKING

from kilo_crypto_watch.model import Asset, LockedRate, RateReading
from kilo_crypto_watch.ports import (
    ChainBlock,
    HistoricalPriceSource,
    PriceSource,
    PriceUnavailableError,
    RateRefusedError,
)
from kilo_crypto_watch.settlement import STABLECOINS

if TYPE_CHECKING:
    from kilo_crypto_watch.settings import CryptoSettings


class SourceUnavailableError(RateRefusedError):
    pass


class StaleRateError(RateRefusedError):
    pass


class SourcesDisagreeError(RateRefusedError):
    pass


class DepegError(RateRefusedError):
    pass


@dataclass(frozen=True, slots=True)
class RatePolicy:
    max_disagreement: Decimal = Decimal("0.01")
    stable_low: Decimal = Decimal("0.98")
    stable_high: Decimal = Decimal("1.02")
    default_heartbeat_seconds: int = 3600
    min_sources: int = 2

    @classmethod
    def from_settings(cls, config: CryptoSettings) -> RatePolicy:
        return cls(
            max_disagreement=config.max_source_disagreement,
            stable_low=config.stablecoin_band_low,
            stable_high=config.stablecoin_band_high,
            default_heartbeat_seconds=config.default_heartbeat_seconds,
        )


def _check_reading(asset: Asset, reading: RateReading, at: datetime, policy: RatePolicy) -> None:
    """A reading usable for ``asset`` at ``at`` (now, or a past moment): of that asset (else SourceUnavailableError)
    and no older then than its heartbeat, the feed's or else the policy's default (else StaleRateError). The one
    staleness check: sources report what they read and do not judge its age (D241)."""
    if reading.asset != asset:
        raise SourceUnavailableError(f"{reading.source} answered for {reading.asset}, not {asset}")
    heartbeat = reading.heartbeat_seconds or policy.default_heartbeat_seconds
    age = (at - reading.updated_at).total_seconds()
    if age > heartbeat:
        raise StaleRateError(
            f"{asset} price from {reading.source} is stale at {at.isoformat()}: updated {int(age)} s before, "
            f"heartbeat {heartbeat} s"
        )


def decide(asset: Asset, readings: Sequence[RateReading], now: datetime, policy: RatePolicy) -> LockedRate:
    """The locked rate from ``readings`` at ``now``, or a RateRefusedError subclass naming the problem."""
    if len(readings) < policy.min_sources:
        raise SourceUnavailableError(
            f"{asset}: {len(readings)} price source(s) answered, {policy.min_sources} independent ones needed"
        )
    for reading in readings:
        _check_reading(asset, reading, now, policy)
    if asset in STABLECOINS:
        for reading in readings:
            if not policy.stable_low <= reading.price <= policy.stable_high:
                raise DepegError(
                    f"{asset} is off its peg: {reading.source} reads {reading.price} USD, "
                    f"outside {policy.stable_low}-{policy.stable_high}"
                )
    for i, first in enumerate(readings):
        for second in readings[i + 1 :]:
            low = min(first.price, second.price)
            apart = abs(first.price - second.price) / low
            if apart > policy.max_disagreement:
                raise SourcesDisagreeError(
                    f"{asset} price sources disagree: {first.source} reads {first.price} USD, {second.source} reads "
                    f"{second.price} USD ({(apart * 100).quantize(Decimal('0.01'))} % apart, limit "
                    f"{(policy.max_disagreement * 100).normalize()} %)"
                )
    price = Decimal(1) if asset in STABLECOINS else readings[0].price
    return LockedRate(asset=asset, price=price, readings=tuple(readings), locked_at=now)


class CheckedRates:
    """The ``Rates`` port over price sources: reads every source, then ``decide``."""

    def __init__(self, sources: Sequence[PriceSource], policy: RatePolicy | None = None) -> None:
        self._sources = list(sources)
        self._policy = policy or RatePolicy()

    def lock(self, asset: Asset, now: datetime) -> LockedRate:
        readings = []
        for source in self._sources:
            try:
                readings.append(source.read(asset))
            except PriceUnavailableError as exc:
                raise SourceUnavailableError(f"{asset}: a price source is unavailable: {exc}") from exc
        return decide(asset, readings, now, self._policy)

    def at(self, asset: Asset, when: datetime, block: ChainBlock | None = None) -> LockedRate:
        """The price at ``when`` from the first source that can read the past (Chainlink, on chain; D218): its
        answer as it stood at ``block`` (or the block at ``when``), refused when it was stale then. The exchange's
        spot price cannot guard it (it knows only now): the on-chain reading is the one that is verifiable later."""
        source = next((s for s in self._sources if isinstance(s, HistoricalPriceSource)), None)
        if source is None:
            raise SourceUnavailableError(f"{asset}: no price source can read a past price")
        try:
            reading = source.read_at(asset, when, block)
        except PriceUnavailableError as exc:
            raise SourceUnavailableError(f"{asset}: no price at {when.isoformat()}: {exc}") from exc
        _check_reading(asset, reading, when, self._policy)
        return LockedRate(asset=asset, price=reading.price, readings=(reading,), locked_at=when)
