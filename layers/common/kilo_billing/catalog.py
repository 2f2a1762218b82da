"""The price book as data: versioned, effective-dated, validated with pydantic.

Our unit price of every meter is derived, never typed: ``base price x markup``. A price book takes effect at the start
of a billing period; the book in effect at a period's start prices that whole period, so changing prices never touches
past periods or invoices.
"""

from __future__ import annotations

import json
from datetime import date
from decimal import Decimal
from enum import StrEnum
from functools import cache
from importlib import resources
from typing import Annotated

from pydantic import BaseModel, ConfigDict, Field, model_validator

from kilo_billing.meters import METER_UNITS, Meter
from kilo_billing.periods import Period

NonNegativeDecimal = Annotated[Decimal, Field(ge=0, allow_inf_nan=False)]


class OveragePolicy(StrEnum):
    PAY_AS_YOU_GO = "pay_as_you_go"
    NONE = "none"


class UnknownTierError(ValueError):
    def __init__(self, tier: str, known: list[str]) -> None:
        super().__init__(f"unknown tier {tier!r}; expected one of: {', '.join(known)}")
        self.tier = tier


class _Frozen(BaseModel):
    model_config = ConfigDict(frozen=True, extra="forbid", strict=False)


class MeterPrice(_Frozen):
    unit: str
    base_price: NonNegativeDecimal


class Tier(_Frozen):
    id: str = Field(pattern=r"^[a-z][a-z0-9_]*$")
    name: str
    rank: int = Field(ge=0, description="Order of tiers: a change to a higher rank is an upgrade")
    monthly_fee: NonNegativeDecimal
    included: dict[Meter, NonNegativeDecimal | None] = Field(description="Per-period allowance; null = unlimited")
    overage: OveragePolicy
    entitlements: tuple[str, ...] = ()

    @model_validator(mode="after")
    def _every_meter_has_an_allowance(self) -> Tier:
        missing = set(Meter) - set(self.included)
        if missing:
            raise ValueError(f"tier {self.id}: included allowance missing for {sorted(missing)}")
        for meter, allowance in self.included.items():
            if allowance is not None and allowance % METER_UNITS[meter].step != 0:
                raise ValueError(f"tier {self.id}: allowance for {meter} must be a multiple of its step")
        return self

    def allowance(self, meter: Meter) -> Decimal | None:
        return self.included[meter]


class PriceBook(_Frozen):
    version: str
    effective_from: date
    currency: str = Field(pattern=r"^[A-Z]{3}$")
    markup: Decimal = Field(gt=0, allow_inf_nan=False)
    meters: dict[Meter, MeterPrice]
    tiers: tuple[Tier, ...]

    @model_validator(mode="after")
    def _consistent(self) -> PriceBook:
        if self.effective_from.day != 1:
            raise ValueError("effective_from must be the first day of a month (a period start)")
        missing = set(Meter) - set(self.meters)
        if missing:
            raise ValueError(f"price missing for meters {sorted(missing)}")
        ids = [tier.id for tier in self.tiers]
        if len(set(ids)) != len(ids):
            raise ValueError(f"duplicate tier ids: {ids}")
        ranks = [tier.rank for tier in self.tiers]
        if len(set(ranks)) != len(ranks):
            raise ValueError(f"duplicate tier ranks: {ranks}")
        return self

    @property
    def effective_period(self) -> Period:
        return Period(self.effective_from.year, self.effective_from.month)

    def base_price(self, meter: Meter) -> Decimal:
        """LiveKit's cost per billing unit (our cost basis)."""
        return self.meters[meter].base_price

    def unit_price(self, meter: Meter) -> Decimal:
        """Our price per billing unit: base x markup (exact; never rounded, only line amounts are)."""
        return (self.meters[meter].base_price * self.markup).normalize()

    def tier(self, tier_id: str) -> Tier:
        for tier in self.tiers:
            if tier.id == tier_id:
                return tier
        raise UnknownTierError(tier_id, self.tier_ids)

    @property
    def tier_ids(self) -> list[str]:
        return [tier.id for tier in sorted(self.tiers, key=lambda t: t.rank)]


class Catalog:
    """All price book versions; picks the one in effect at a period's start."""

    def __init__(self, books: list[PriceBook]) -> None:
        if not books:
            raise ValueError("a catalog needs at least one price book")
        self._books = sorted(books, key=lambda book: book.effective_from)
        starts = [book.effective_from for book in self._books]
        if len(set(starts)) != len(starts):
            raise ValueError("two price books take effect on the same date")

    @property
    def latest(self) -> PriceBook:
        return self._books[-1]

    @property
    def first_period(self) -> Period:
        """The first period a price book is in effect for: nothing before it is billed."""
        return self._books[0].effective_period

    def for_period(self, period: Period) -> PriceBook:
        in_effect = [book for book in self._books if book.effective_period <= period]
        if not in_effect:
            raise LookupError(f"no price book in effect for period {period}")
        return in_effect[-1]


def parse_price_book(raw: str | bytes) -> PriceBook:
    """Validate a price book document (JSON numbers are read as Decimal, never float)."""
    data = json.loads(raw, parse_float=Decimal)
    return PriceBook.model_validate(data)


@cache
def default_catalog() -> Catalog:
    """The price books shipped with the library (``kilo_billing/pricebooks/*.json``), loaded on first use."""
    folder = resources.files("kilo_billing") / "pricebooks"
    books = [
        parse_price_book(entry.read_bytes())
        for entry in sorted(folder.iterdir(), key=lambda e: e.name)
        if entry.name.endswith(".json")
    ]
    return Catalog(books)
