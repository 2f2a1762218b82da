"""Revenue projections: monthly revenue for a number of users, a tier mix and an overage amount.

Users are split across tiers by the mix (percentages summing to 100). When a share is not a whole number of users,
the largest-remainder method hands out the leftover users, so the tier counts always add up to ``users``.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from decimal import Decimal
from fractions import Fraction

from kilo_billing.catalog import PriceBook
from kilo_billing.money import line_amount, money_str, round_money, to_decimal, total


class ProjectionError(ValueError):
    pass


@dataclass(frozen=True, slots=True)
class TierProjection:
    tier: str
    share_percent: Decimal
    users: int
    monthly_fee: Decimal
    revenue: Decimal


@dataclass(frozen=True, slots=True)
class Projection:
    users: int
    tiers: tuple[TierProjection, ...]
    overage: Decimal

    @property
    def fees(self) -> Decimal:
        return total([tier.revenue for tier in self.tiers])

    @property
    def total(self) -> Decimal:
        return total([self.fees, self.overage])

    def as_json(self) -> dict[str, object]:
        return {
            "users": self.users,
            "tiers": [
                {
                    "tier": tier.tier,
                    "share_percent": str(tier.share_percent),
                    "users": tier.users,
                    "monthly_fee": money_str(tier.monthly_fee),
                    "revenue": money_str(tier.revenue),
                }
                for tier in self.tiers
            ],
            "fees": money_str(self.fees),
            "overage": money_str(self.overage),
            "total": money_str(self.total),
            "currency": "USD",
        }


def allocate_users(users: int, mix: Mapping[str, Decimal]) -> dict[str, int]:
    """Split ``users`` by percentage shares with the largest-remainder method (ties: order of the mix)."""
    exact = {tier: Fraction(users) * Fraction(share) / 100 for tier, share in mix.items()}
    counts = {tier: int(value) for tier, value in exact.items()}
    leftover = users - sum(counts.values())
    by_remainder = sorted(mix, key=lambda tier: exact[tier] - counts[tier], reverse=True)
    for tier in by_remainder[:leftover]:
        counts[tier] += 1
    return counts


def project_revenue(
    book: PriceBook, users: int, mix: Mapping[str, Decimal | int], overage_usd: Decimal | int | str
) -> Projection:
    if isinstance(users, bool) or not isinstance(users, int) or users < 0:
        raise ProjectionError(f"users must be a whole number >= 0, got {users!r}")
    shares = {tier: to_decimal(share) for tier, share in mix.items()}
    for tier, share in shares.items():
        book.tier(tier)  # raises UnknownTierError naming the tier
        if share < 0:
            raise ProjectionError(f"share of {tier} must be >= 0, got {share}")
    if sum(shares.values()) != 100:
        raise ProjectionError(f"tier mix must sum to 100, got {sum(shares.values())}")
    overage = to_decimal(overage_usd)
    if overage < 0:
        raise ProjectionError(f"overage must be >= 0, got {overage}")
    counts = allocate_users(users, shares)
    tiers = tuple(
        TierProjection(
            tier=tier,
            share_percent=shares[tier],
            users=counts[tier],
            monthly_fee=book.tier(tier).monthly_fee,
            revenue=line_amount(counts[tier], book.tier(tier).monthly_fee),
        )
        for tier in book.tier_ids
        if tier in shares
    )
    return Projection(users=users, tiers=tiers, overage=round_money(overage))
