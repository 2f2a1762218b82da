"""Late usage for an invoiced period becomes adjustment lines: invoiced total + adjustments == rating of everything.

Every case goes through what the close runs (``kilo_billing.invoicing.adjustment_lines`` over the period's counters as
billed and as they are now, keyed by tier segment start as rating ADDs them, with the account's profile), then a few
through the close itself. Figures worked by hand from billing-policy.md (price book 2026-01: video $0.00072, audio
$0.00036, data $0.00012 per GB in 0.01 GB steps = ceil(bytes / 10^7) / 100; Personal includes 5,000 video minutes and
10 GB, Team 50,000 video, 100,000 audio minutes and 100 GB for $29.00; March 2026 has 31 days).
"""

from __future__ import annotations

from datetime import UTC, datetime
from decimal import Decimal

import pytest

from kilo_billing.accounts import AccountProfile
from kilo_billing.catalog import default_catalog
from kilo_billing.invoicing import Line, adjustment_lines, rate_counters
from kilo_billing.meters import Meter
from kilo_billing.periods import Period
from kilo_billing.rating import TierChange
from tests.scenarios.test_invoicing import APR, MAR, MAY, World, amounts, at, seg

MARCH = Period(2026, 3)
BOOK = default_catalog().for_period(MARCH)  # what the close rates March with
UPGRADE = datetime(2026, 3, 11, tzinfo=UTC)  # Personal -> Team: 10 of 31 days on Personal, 21 on Team

Usage = tuple[Meter, int, datetime]  # base units (minutes, messages, bytes) and when they happened


def _utc(*args: int) -> datetime:
    return datetime(*args, tzinfo=UTC)


def _on(tier: str) -> AccountProfile:
    """An account on ``tier`` since before March."""
    return AccountProfile("acct", (TierChange(_utc(2026, 1, 1), tier),))


def _upgraded() -> AccountProfile:
    return AccountProfile("acct", (TierChange(_utc(2026, 1, 1), "personal"), TierChange(UPGRADE, "team")))


def _counters(profile: AccountProfile, *usage: Usage) -> dict[tuple[int, str], int]:
    """What rating stores for March: base units ADDed per (start of the tier segment the usage happened in, meter)."""
    counters: dict[tuple[int, str], int] = {}
    for meter, quantity, when in usage:
        key = (profile.segment_start(int(when.timestamp()) * 1000), meter.value)
        counters[key] = counters.get(key, 0) + quantity
    return counters


def _late(profile: AccountProfile, invoiced: list[Usage], late: list[Usage]) -> list[Line]:
    """The close's call: March's counters as billed (the watermark) and as they are now."""
    billed, now = _counters(profile, *invoiced), _counters(profile, *invoiced, *late)
    return adjustment_lines(MARCH, profile, billed, now, BOOK)


def _total(profile: AccountProfile, *usage: Usage) -> Decimal:
    return rate_counters(MARCH, profile, _counters(profile, *usage), BOOK).total


def _video(minutes: int, day: int = 10) -> Usage:
    return (Meter.VIDEO, minutes, _utc(2026, 3, day, 12))


def _bytes(count: int, day: int = 2) -> Usage:
    return (Meter.DATA_TRANSFER, count, _utc(2026, 3, day))


def test_given_team_march_invoiced_when_late_video_stays_under_allowance_then_zero_adjustment_line() -> None:
    invoiced, late = [_video(40_000)], [_video(5_000, day=31)]
    (line,) = _late(_on("team"), invoiced, late)

    assert line.kind == "adjustment"
    assert (line.period, line.meter, line.tier) == ("2026-03", "video", "team")
    assert (line.start, line.end) == (MARCH.start, MARCH.end)
    assert line.used == Decimal("5000")  # late usage is shown, never dropped
    assert line.included == Decimal("50000")  # the whole month on Team
    assert line.quantity == Decimal("0")  # 45000 <= 50000
    assert line.amount == Decimal("0.00")
    assert _total(_on("team"), *invoiced) + line.amount == Decimal("29.00")


def test_given_team_march_invoiced_when_late_video_crosses_allowance_then_adjustment_bills_only_the_excess() -> None:
    invoiced, late = [_video(49_000)], [_video(3_000, day=20)]
    (line,) = _late(_on("team"), invoiced, late)

    assert _total(_on("team"), *invoiced) == Decimal("29.00")  # 49000 <= 50000
    assert line.used == Decimal("3000")
    assert line.quantity == Decimal("2000")  # 52000 - 50000, not 3000
    assert line.unit_price == Decimal("0.00072")
    assert line.amount == Decimal("1.44")  # 2000 x 0.00072
    assert _total(_on("team"), *invoiced, *late) == Decimal("30.44")
    assert _total(_on("team"), *invoiced) + line.amount == Decimal("30.44")  # 29.00 + 1.44


def test_given_personal_march_already_over_when_late_video_arrives_then_all_of_it_is_overage() -> None:
    (line,) = _late(_on("personal"), [_video(6_000)], [_video(1_000)])
    assert line.quantity == Decimal("1000")
    assert line.amount == Decimal("0.72")  # (2000 - 1000) x 0.00072; invoiced 0.72 + 0.72 = 1.44 = 2000 x 0.00072


def test_given_invoiced_line_rounded_up_when_late_minutes_fit_in_that_cent_then_adjustment_is_zero() -> None:
    invoiced, late = [_video(5_007)], [_video(7)]
    (line,) = _late(_on("personal"), invoiced, late)
    assert _total(_on("personal"), *invoiced) == Decimal("0.01")  # 7 x 0.00072 = 0.00504 -> 0.01
    assert line.quantity == Decimal("7")
    # all 14 over: 0.01008 -> 0.01, so the adjustment is 0.01 - 0.01 = 0.00 (rating 7 alone would add 0.01)
    assert line.amount == Decimal("0.00")


def test_given_invoiced_line_rounded_down_when_one_late_minute_tips_it_then_adjustment_is_one_cent() -> None:
    (line,) = _late(_on("personal"), [_video(5_006)], [_video(1)])
    # before 6 x 0.00072 = 0.00432 -> 0.00; after 7 x 0.00072 = 0.00504 -> 0.01; 1 x 0.00072 alone -> 0.00
    assert line.amount == Decimal("0.01")


def test_given_upgrade_on_march_11_when_late_usage_dated_before_and_after_then_each_tier_segment_adjusted() -> None:
    invoiced = [_video(1_000, day=5), _video(33_000, day=20)]
    late = [_video(1_000, day=8), _video(1_000, day=25)]
    lines = _late(_upgraded(), invoiced, late)

    assert [(line.tier, line.meter, line.start, line.end) for line in lines] == [
        ("personal", "video", MARCH.start, UPGRADE),
        ("team", "video", UPGRADE, MARCH.end),
    ]
    personal, team = lines
    assert personal.included == Decimal("1613")  # 5000 x 10/31 = 1612.9.. rounded up
    assert personal.quantity == Decimal("387")  # 2000 - 1613
    assert personal.amount == Decimal("0.28")  # 387 x 0.00072 = 0.27864
    assert team.included == Decimal("33871")  # 50000 x 21/31 = 33870.9.. rounded up
    assert team.quantity == Decimal("129")  # 34000 - 33871
    assert team.amount == Decimal("0.09")  # 129 x 0.00072 = 0.09288
    assert _total(_upgraded(), *invoiced) == Decimal("19.65")  # fees 0.00 + 19.65, usage within the allowances
    assert _total(_upgraded(), *invoiced, *late) == Decimal("20.02")  # 19.65 + 0.28 + 0.09
    assert _total(_upgraded(), *invoiced) + personal.amount + team.amount == Decimal("20.02")


def test_given_upgrade_when_late_audio_fits_the_prorated_allowance_then_a_zero_line_shows_it() -> None:
    invoiced = [(Meter.AUDIO, 60_000, _utc(2026, 3, 20))]
    late = [(Meter.AUDIO, 7_742, _utc(2026, 3, 30))]
    (line,) = _late(_upgraded(), invoiced, late)
    # Team's audio for 21 of 31 days: 100000 x 21/31 = 67741.9.. -> 67742; 60000 + 7742 = 67742, not one over
    assert (line.tier, line.meter, line.used, line.included) == ("team", "audio", Decimal(7742), Decimal(67742))
    assert (line.quantity, line.amount) == (Decimal("0"), Decimal("0.00"))
    (over,) = _late(_upgraded(), invoiced, [*late, (Meter.AUDIO, 1, _utc(2026, 3, 30))])
    assert (over.quantity, over.amount) == (Decimal("1"), Decimal("0.00"))  # 1 x 0.00036 -> 0.00, but billable


def test_given_personal_march_over_when_late_usage_is_negative_then_a_negative_line_per_segment_and_meter() -> None:
    (line,) = _late(_on("personal"), [_video(6_000)], [_video(-2_000)])  # a call shortened by its real end
    # as billed 1000 over -> 0.72; now 4000, inside the 5000 included -> 0.00
    assert (line.used, line.quantity, line.amount) == (Decimal(-2000), Decimal(-1000), Decimal("-0.72"))
    assert line.description == "Late video usage for 2026-03 on personal (-2000 participant-minute)"


def test_given_upgrade_when_late_usage_shortens_one_segment_and_lengthens_the_other_then_both_lines() -> None:
    invoiced = [_video(2_000, day=5), _video(40_000, day=20)]
    late = [_video(-1_000, day=5), _video(100, day=20)]
    personal, team = _late(_upgraded(), invoiced, late)
    # Personal: 2000 - 1613 = 387 over -> 0.28; now 1000, inside -> 0.00: -0.28
    assert (personal.tier, personal.used, personal.quantity, personal.amount) == (
        "personal",
        Decimal(-1000),
        Decimal(-387),
        Decimal("-0.28"),
    )
    # Team: 40000 - 33871 = 6129 over -> 4.41288 -> 4.41; now 6229 -> 4.48488 -> 4.48: +0.07
    assert (team.tier, team.used, team.quantity, team.amount) == ("team", Decimal(100), Decimal(100), Decimal("0.07"))
    assert _total(_upgraded(), *invoiced) == Decimal("24.34")  # 19.65 + 0.28 + 4.41
    assert _total(_upgraded(), *invoiced, *late) == Decimal("24.13")  # 19.65 + 0.00 + 4.48 = 24.34 - 0.28 + 0.07


def test_given_enterprise_march_invoiced_when_huge_late_usage_then_adjustment_shown_at_zero() -> None:
    (line,) = _late(_on("enterprise"), [], [(Meter.MESSAGES, 50_000_000, _utc(2026, 3, 30))])
    assert line.used == Decimal("50000000")
    assert line.included is None  # unlimited
    assert line.amount == Decimal("0.00")


def test_given_no_late_usage_when_adjusting_then_no_lines() -> None:
    assert _late(_on("team"), [_video(52_000)], []) == []


def test_given_late_bytes_within_the_same_hundredth_of_a_gb_then_no_line_as_billed_gb_unchanged() -> None:
    invoiced = [_bytes(5_000_000)]
    # 5*10^6 -> 0.01 GB; 10^7 -> still 0.01 GB: the period's billable quantity does not move
    assert _late(_on("personal"), invoiced, [_bytes(5_000_000, day=3)]) == []
    (line,) = _late(_on("personal"), invoiced, [_bytes(5_000_001, day=3)])
    assert line.used == Decimal("0.01")  # 10^7 + 1 bytes -> 0.02 GB; 0.02 - 0.01


def test_given_personal_data_over_its_allowance_when_late_bytes_cross_a_hundredth_of_a_gb_then_one_cent() -> None:
    invoiced = [_bytes(51_659_999_995)]  # ceil(5165.9999995) = 5166 steps = 51.66 GB; 41.66 over x 0.00012 = 0.0049992
    assert _total(_on("personal"), *invoiced) == Decimal("0.00")
    assert _late(_on("personal"), invoiced, [_bytes(5, day=20)]) == []  # 51,660,000,000 bytes: still 51.66 GB
    (line,) = _late(_on("personal"), invoiced, [_bytes(6, day=20)])  # 51,660,000,001: 5167 steps = 51.67 GB
    assert (line.meter, line.used, line.included) == ("data_transfer", Decimal("0.01"), Decimal("10"))
    assert line.quantity == Decimal("0.01")  # 41.67 - 41.66 over
    assert line.amount == Decimal("0.01")  # 41.67 x 0.00012 = 0.0050004 -> 0.01, minus 0.00 billed
    assert line.description == "Late data transfer usage for 2026-03 on personal (+0.01 GB)"


def test_given_upgrade_on_march_11_when_late_bytes_land_in_the_team_segment_then_its_own_steps_and_allowance() -> None:
    invoiced = [_bytes(6_000_000, day=5), _bytes(2_000_000, day=20)]  # 0.01 GB in each segment
    # Team now 5 x 10^6 bytes: still 0.01 GB (the month's 1.1 x 10^7 together would be 0.02: steps are per segment)
    assert _late(_upgraded(), invoiced, [_bytes(3_000_000, day=25)]) == []
    (line,) = _late(_upgraded(), invoiced, [_bytes(8_000_001, day=25)])  # Team 10^7 + 1 bytes: 2 steps = 0.02 GB
    assert (line.tier, line.start, line.end) == ("team", UPGRADE, MARCH.end)
    assert (line.used, line.included, line.amount) == (Decimal("0.01"), Decimal("67.75"), Decimal("0.00"))  # 100x21/31


# --- through the close: the April invoice carries March's late usage -------------------------------------------------


@pytest.fixture
def world() -> World:
    return World()


def test_given_an_upgrade_on_march_11_when_late_usage_lands_in_both_segments_then_april_adjusts_each_segment(
    world: World,
) -> None:
    world.signup("grow", (at(1), "personal"), (at(11), "team"))
    world.store.rate("grow", "2026-03", seg(at(1)), "video", 1_000)
    world.store.rate("grow", "2026-03", seg(at(11)), "video", 33_000)
    # usage inside both prorated allowances (1613, 33871): 0.00; first-month fee 29 x 21/31 = 19.645.. -> 19.65;
    # April's fee in advance 29.00
    assert world.close("grow", MAR).total == Decimal("48.65")
    world.store.rate("grow", "2026-03", seg(at(1)), "video", 1_000)
    world.store.rate("grow", "2026-03", seg(at(11)), "video", 1_000)
    world.store.rate("grow", "2026-03", seg(at(11)), "audio", 500)  # inside Team's 67742 prorated audio minutes
    april = world.close("grow", APR)
    # Personal 387 over -> 0.28; Team 129 over -> 0.09 (as above); Team audio 500 -> 0.00, shown
    assert amounts(april, "adjustment") == ["0.28", "0.09", "0.00"]
    audio = [line for line in april.lines if line.kind == "adjustment" and line.meter == "audio"]
    assert [(line.tier, line.used, line.included) for line in audio] == [("team", Decimal(500), Decimal(67742))]
    assert april.total == Decimal("29.37")  # May in advance 29.00 + 0.28 + 0.09 + 0.00
    assert world.close("grow", MAY).total == Decimal("29.00")  # adjusted once, never again


def test_given_personal_data_over_its_allowance_when_late_bytes_cross_a_step_then_april_adds_one_cent(
    world: World,
) -> None:
    world.signup("solo", (at(1), "personal"))
    world.store.rate("solo", "2026-03", seg(at(1)), "data_transfer", 51_659_999_995)  # 51.66 GB: 0.0049992 -> 0.00
    assert world.close("solo", MAR).total == Decimal("0.00")
    world.store.rate("solo", "2026-03", seg(at(1)), "data_transfer", 6)  # 51.67 GB: 41.67 x 0.00012 = 0.0050004
    april = world.close("solo", APR)
    [line] = [line for line in april.lines if line.kind == "adjustment"]
    assert (line.meter, line.used, line.amount) == ("data_transfer", Decimal("0.01"), Decimal("0.01"))
    assert april.total == Decimal("0.01")  # May's Personal fee 0.00 + 0.01
