"""Tier allowances: every tier x meter below / at / just above / far above its included allowance.

Prices (billing-policy.md): video 0.00072, audio 0.00036, messages 0.00012, data 0.00012 per GB.
Allowances: Personal 5,000 / 10,000 / 100,000 / 10 GB ($0), Team 50,000 / 100,000 / 1,000,000 / 100 GB ($29),
Enterprise unlimited ($99). Usage is given in base units: minutes, messages, bytes (1 GB = 10^9 bytes).
"""

from __future__ import annotations

from decimal import Decimal
from typing import Any

import pytest

from kilo_billing.meters import Meter
from kilo_billing.rating import LineKind

GB = 10**9

# (quantity in base units, used, billable, line amount, invoice total)
PERSONAL_VIDEO = [
    pytest.param(4_999, Decimal("4999"), Decimal("0"), Decimal("0.00"), Decimal("0.00"), id="below"),
    pytest.param(5_000, Decimal("5000"), Decimal("0"), Decimal("0.00"), Decimal("0.00"), id="at"),
    # 1 x 0.00072 = 0.00072 -> 0.00
    pytest.param(5_001, Decimal("5001"), Decimal("1"), Decimal("0.00"), Decimal("0.00"), id="just_above"),
    # (105000 - 5000) x 0.00072 = 100000 x 0.00072 = 72.00
    pytest.param(105_000, Decimal("105000"), Decimal("100000"), Decimal("72.00"), Decimal("72.00"), id="far_above"),
]
PERSONAL_AUDIO = [
    pytest.param(9_999, Decimal("9999"), Decimal("0"), Decimal("0.00"), Decimal("0.00"), id="below"),
    pytest.param(10_000, Decimal("10000"), Decimal("0"), Decimal("0.00"), Decimal("0.00"), id="at"),
    # 1 x 0.00036 = 0.00036 -> 0.00
    pytest.param(10_001, Decimal("10001"), Decimal("1"), Decimal("0.00"), Decimal("0.00"), id="just_above"),
    # (110000 - 10000) x 0.00036 = 100000 x 0.00036 = 36.00
    pytest.param(110_000, Decimal("110000"), Decimal("100000"), Decimal("36.00"), Decimal("36.00"), id="far_above"),
]
PERSONAL_MESSAGES = [
    pytest.param(99_999, Decimal("99999"), Decimal("0"), Decimal("0.00"), Decimal("0.00"), id="below"),
    pytest.param(100_000, Decimal("100000"), Decimal("0"), Decimal("0.00"), Decimal("0.00"), id="at"),
    # 1 x 0.00012 = 0.00012 -> 0.00
    pytest.param(100_001, Decimal("100001"), Decimal("1"), Decimal("0.00"), Decimal("0.00"), id="just_above"),
    # (1100000 - 100000) x 0.00012 = 1000000 x 0.00012 = 120.00
    pytest.param(
        1_100_000, Decimal("1100000"), Decimal("1000000"), Decimal("120.00"), Decimal("120.00"), id="far_above"
    ),
]
PERSONAL_DATA = [
    # 9_990_000_000 bytes = 999 steps of 10^7 -> 9.99 GB
    pytest.param(9_990_000_000, Decimal("9.99"), Decimal("0"), Decimal("0.00"), Decimal("0.00"), id="below"),
    pytest.param(10 * GB, Decimal("10.00"), Decimal("0"), Decimal("0.00"), Decimal("0.00"), id="at"),
    # 10 GB + 1 byte -> ceil(1000.0000001) = 1001 steps = 10.01 GB; 0.01 x 0.00012 = 0.0000012 -> 0.00
    pytest.param(10 * GB + 1, Decimal("10.01"), Decimal("0.01"), Decimal("0.00"), Decimal("0.00"), id="just_above"),
    # (10010 - 10) x 0.00012 = 10000 x 0.00012 = 1.20
    pytest.param(
        10_010 * GB, Decimal("10010.00"), Decimal("10000.00"), Decimal("1.20"), Decimal("1.20"), id="far_above"
    ),
]
TEAM_VIDEO = [
    pytest.param(49_999, Decimal("49999"), Decimal("0"), Decimal("0.00"), Decimal("29.00"), id="below"),
    pytest.param(50_000, Decimal("50000"), Decimal("0"), Decimal("0.00"), Decimal("29.00"), id="at"),
    # 1 x 0.00072 = 0.00072 -> 0.00; total 29.00 fee
    pytest.param(50_001, Decimal("50001"), Decimal("1"), Decimal("0.00"), Decimal("29.00"), id="just_above"),
    # 100000 x 0.00072 = 72.00; 29.00 + 72.00 = 101.00
    pytest.param(150_000, Decimal("150000"), Decimal("100000"), Decimal("72.00"), Decimal("101.00"), id="far_above"),
]
TEAM_AUDIO = [
    pytest.param(99_999, Decimal("99999"), Decimal("0"), Decimal("0.00"), Decimal("29.00"), id="below"),
    pytest.param(100_000, Decimal("100000"), Decimal("0"), Decimal("0.00"), Decimal("29.00"), id="at"),
    # 1 x 0.00036 -> 0.00
    pytest.param(100_001, Decimal("100001"), Decimal("1"), Decimal("0.00"), Decimal("29.00"), id="just_above"),
    # 1000000 x 0.00036 = 360.00; 29.00 + 360.00 = 389.00
    pytest.param(
        1_100_000, Decimal("1100000"), Decimal("1000000"), Decimal("360.00"), Decimal("389.00"), id="far_above"
    ),
]
TEAM_MESSAGES = [
    pytest.param(999_999, Decimal("999999"), Decimal("0"), Decimal("0.00"), Decimal("29.00"), id="below"),
    pytest.param(1_000_000, Decimal("1000000"), Decimal("0"), Decimal("0.00"), Decimal("29.00"), id="at"),
    # 1 x 0.00012 -> 0.00
    pytest.param(1_000_001, Decimal("1000001"), Decimal("1"), Decimal("0.00"), Decimal("29.00"), id="just_above"),
    # 10000000 x 0.00012 = 1200.00; 29.00 + 1200.00 = 1229.00
    pytest.param(
        11_000_000, Decimal("11000000"), Decimal("10000000"), Decimal("1200.00"), Decimal("1229.00"), id="far_above"
    ),
]
TEAM_DATA = [
    pytest.param(99_990_000_000, Decimal("99.99"), Decimal("0"), Decimal("0.00"), Decimal("29.00"), id="below"),
    pytest.param(100 * GB, Decimal("100.00"), Decimal("0"), Decimal("0.00"), Decimal("29.00"), id="at"),
    # 100 GB + 1 byte -> 100.01 GB; 0.01 x 0.00012 = 0.0000012 -> 0.00
    pytest.param(100 * GB + 1, Decimal("100.01"), Decimal("0.01"), Decimal("0.00"), Decimal("29.00"), id="just_above"),
    # (10100 - 100) x 0.00012 = 10000 x 0.00012 = 1.20; 29.00 + 1.20 = 30.20
    pytest.param(
        10_100 * GB, Decimal("10100.00"), Decimal("10000.00"), Decimal("1.20"), Decimal("30.20"), id="far_above"
    ),
]


def _enterprise(reference: int, far: int, used: tuple[str, str, str, str]) -> list[object]:
    """Enterprise has no allowance to be above: Team's allowance is the reference point, nothing is billable."""
    below, at, above, huge = used
    return [
        pytest.param(reference - 1, Decimal(below), id="below_team_allowance"),
        pytest.param(reference, Decimal(at), id="at_team_allowance"),
        pytest.param(reference + 1, Decimal(above), id="just_above_team_allowance"),
        pytest.param(far, Decimal(huge), id="far_above_team_allowance"),
    ]


# our price per unit (LiveKit base x 1.20) and the monthly fee, as published
UNIT_PRICE = {
    Meter.VIDEO: Decimal("0.00072"),
    Meter.AUDIO: Decimal("0.00036"),
    Meter.MESSAGES: Decimal("0.00012"),
    Meter.DATA_TRANSFER: Decimal("0.00012"),
}
FEE = {"personal": Decimal("0.00"), "team": Decimal("29.00"), "enterprise": Decimal("99.00")}


def _assert_single_meter(rated, line_for, meter, used, billable, amount, total, included) -> None:
    line = line_for(rated, meter)
    assert line.kind is LineKind.USAGE
    assert line.included == included
    assert line.used == used
    assert line.billable == billable
    assert line.unit_price == UNIT_PRICE[meter]
    assert line.amount == amount
    assert rated.fee == FEE[line.tier]
    for other in Meter:
        if other is not meter:
            assert line_for(rated, other).amount == Decimal("0.00")
    assert rated.total == total


def _around(tier: str, meter: Meter, included: Decimal | None, rows: list[Any]) -> list[Any]:
    """A table's hand-worked rows, each with the tier, meter and included allowance it is about."""
    return [pytest.param(tier, meter, included, *row.values, id=f"{tier}-{meter.value}-{row.id}") for row in rows]


AROUND_THE_ALLOWANCE = [
    *_around("personal", Meter.VIDEO, Decimal("5000"), PERSONAL_VIDEO),
    *_around("personal", Meter.AUDIO, Decimal("10000"), PERSONAL_AUDIO),
    *_around("personal", Meter.MESSAGES, Decimal("100000"), PERSONAL_MESSAGES),
    *_around("personal", Meter.DATA_TRANSFER, Decimal("10"), PERSONAL_DATA),
    *_around("team", Meter.VIDEO, Decimal("50000"), TEAM_VIDEO),
    *_around("team", Meter.AUDIO, Decimal("100000"), TEAM_AUDIO),
    *_around("team", Meter.MESSAGES, Decimal("1000000"), TEAM_MESSAGES),
    *_around("team", Meter.DATA_TRANSFER, Decimal("100"), TEAM_DATA),
]


@pytest.mark.parametrize(
    ("tier", "meter", "included", "quantity", "used", "billable", "amount", "total"), AROUND_THE_ALLOWANCE
)
def test_given_personal_or_team_account_when_a_meter_is_around_its_allowance_then_the_fee_plus_only_units_beyond(
    rate_month, line_for, tier, meter, included, quantity, used, billable, amount, total
):
    rated = rate_month(tier, {meter: quantity})
    _assert_single_meter(rated, line_for, meter, used, billable, amount, total, included)


ENTERPRISE_ANY_USAGE = [
    *_around("enterprise", Meter.VIDEO, None, _enterprise(50_000, 50_000_000, ("49999", "50000", "50001", "50000000"))),
    *_around(
        "enterprise", Meter.AUDIO, None, _enterprise(100_000, 100_000_000, ("99999", "100000", "100001", "100000000"))
    ),
    *_around(
        "enterprise",
        Meter.MESSAGES,
        None,
        _enterprise(1_000_000, 1_000_000_000, ("999999", "1000000", "1000001", "1000000000")),
    ),
    # 100 GB - 1 byte -> 100.00 GB (ceil to 0.01 GB); 100 GB + 1 byte -> 100.01 GB; 100000 GB
    *_around(
        "enterprise",
        Meter.DATA_TRANSFER,
        None,
        _enterprise(100 * GB, 100_000 * GB, ("100.00", "100.00", "100.01", "100000.00")),
    ),
]


@pytest.mark.parametrize(("tier", "meter", "included", "quantity", "used"), ENTERPRISE_ANY_USAGE)
def test_given_enterprise_account_when_any_usage_of_a_meter_then_nothing_beyond_the_fee(
    rate_month, line_for, tier, meter, included, quantity, used
):
    rated = rate_month(tier, {meter: quantity})
    # unlimited: included None, billable 0, line $0.00; total = $99 fee
    _assert_single_meter(rated, line_for, meter, used, Decimal("0"), Decimal("0.00"), Decimal("99.00"), included)


def test_given_enterprise_account_when_huge_usage_on_every_meter_then_99_fee_and_zero_usage_shown_unlimited(
    rate_month, line_for
):
    rated = rate_month(
        "enterprise",
        {
            Meter.VIDEO: 10_000_000_000,
            Meter.AUDIO: 10_000_000_000,
            Meter.MESSAGES: 10_000_000_000_000,
            Meter.DATA_TRANSFER: 10**18,  # 10^9 GB
        },
    )
    assert rated.fee == Decimal("99.00")
    assert rated.usage_total == Decimal("0.00")
    assert rated.total == Decimal("99.00")
    for meter in Meter:
        line = line_for(rated, meter)
        assert line.included is None  # unlimited
        assert line.billable == Decimal("0")
        assert line.amount == Decimal("0.00")
        assert line.as_json()["included"] is None
    assert line_for(rated, Meter.DATA_TRANSFER).used == Decimal("1000000000.00")
    # LiveKit cost is still reported: 10^10 x 0.0006 + 10^10 x 0.0003 + 10^13 x 0.0001 + 10^9 x 0.0001
    #   = 6,000,000 + 3,000,000 + 1,000,000,000 + 100,000 = 1,009,100,000 -> the account runs at a loss
    assert rated.cost_basis_rounded == Decimal("1009100000.00")
    assert rated.margin == Decimal("-1009099901.00")  # 99.00 - 1,009,100,000.00


@pytest.mark.parametrize(
    ("tier", "fee"),
    [
        pytest.param("personal", Decimal("0.00"), id="personal"),
        pytest.param("team", Decimal("29.00"), id="team"),
        pytest.param("enterprise", Decimal("99.00"), id="enterprise"),
    ],
)
def test_given_account_on_each_tier_when_no_usage_then_every_meter_has_a_zero_line_and_total_is_the_fee(
    rate_month, tier, fee
):
    rated = rate_month(tier, {})
    assert [line.meter for line in rated.usage_lines] == list(Meter)  # video, audio, messages, data_transfer
    for line in rated.usage_lines:
        assert line.used == Decimal("0")
        assert line.billable == Decimal("0")
        assert line.amount == Decimal("0.00")
        assert line.as_json()["amount"] == "0.00"
    assert rated.usage_total == Decimal("0.00")
    assert rated.total == fee


def test_given_personal_account_when_every_meter_over_then_invoice_total_is_sum_of_all_four_lines(rate_month, line_for):
    rated = rate_month(
        "personal",
        {Meter.VIDEO: 6_000, Meter.AUDIO: 12_000, Meter.MESSAGES: 150_000, Meter.DATA_TRANSFER: 510 * GB},
    )
    assert line_for(rated, Meter.VIDEO).amount == Decimal("0.72")  # 1000 x 0.00072
    assert line_for(rated, Meter.AUDIO).amount == Decimal("0.72")  # 2000 x 0.00036
    assert line_for(rated, Meter.MESSAGES).amount == Decimal("6.00")  # 50000 x 0.00012
    assert line_for(rated, Meter.DATA_TRANSFER).amount == Decimal("0.06")  # 500 GB x 0.00012
    assert rated.total == Decimal("7.50")  # 0.00 fee + 0.72 + 0.72 + 6.00 + 0.06
