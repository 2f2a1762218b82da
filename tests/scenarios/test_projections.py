"""Revenue projections of the pricing model (fees: Personal $0, Team $29, Enterprise $99; plus an overage amount)."""

from __future__ import annotations

from decimal import Decimal

import pytest

from kilo_billing.projections import ProjectionError, project_revenue

MIX_60_30_10 = {"personal": Decimal("60"), "team": Decimal("30"), "enterprise": Decimal("10")}


def test_given_100_users_split_60_30_10_when_200_overage_then_2060_per_month(book):
    projection = project_revenue(book, 100, MIX_60_30_10, Decimal("200"))
    assert [(t.tier, t.users, t.revenue) for t in projection.tiers] == [
        ("personal", 60, Decimal("0.00")),  # 60 x 0
        ("team", 30, Decimal("870.00")),  # 30 x 29
        ("enterprise", 10, Decimal("990.00")),  # 10 x 99
    ]
    assert projection.fees == Decimal("1860.00")  # 0 + 870 + 990
    assert projection.total == Decimal("2060.00")  # 1860 + 200
    assert projection.as_json()["total"] == "2060.00"


def test_given_1000_users_split_600_300_100_when_2000_overage_then_20600_per_month(book):
    projection = project_revenue(book, 1000, MIX_60_30_10, "2000")
    assert [t.users for t in projection.tiers] == [600, 300, 100]
    assert projection.fees == Decimal("18600.00")  # 0 + 300 x 29 (8700) + 100 x 99 (9900)
    assert projection.total == Decimal("20600.00")  # 18600 + 2000


@pytest.mark.parametrize(
    "mix",
    [
        pytest.param({"personal": Decimal("60"), "team": Decimal("30"), "enterprise": Decimal("9")}, id="sums_to_99"),
        pytest.param({"personal": Decimal("60"), "team": Decimal("31"), "enterprise": Decimal("10")}, id="sums_to_101"),
        pytest.param({"personal": Decimal("60"), "team": Decimal("30")}, id="missing_tier_sums_to_90"),
    ],
)
def test_given_tier_mix_not_summing_to_100_when_projecting_then_projection_error(book, mix):
    with pytest.raises(ProjectionError, match="sum to 100"):
        project_revenue(book, 100, mix, Decimal("0"))


def test_given_7_users_split_60_30_10_when_projecting_then_largest_remainder_gives_whole_users(book):
    projection = project_revenue(book, 7, MIX_60_30_10, 0)
    # exact 4.2 / 2.1 / 0.7 -> floors 4 / 2 / 0, one left over goes to the largest remainder (0.7: enterprise)
    assert [t.users for t in projection.tiers] == [4, 2, 1]
    assert projection.total == Decimal("157.00")  # 2 x 29 + 1 x 99
