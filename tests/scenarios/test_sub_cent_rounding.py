"""Sub-cent amounts: each line is quantity x unit price rounded half-up to the cent; a total is the sum of lines.
(One minute over an allowance, 0.00072 -> 0.00, is the ``just_above`` case of every tier in test_tier_allowances.)"""

from __future__ import annotations

from decimal import Decimal

from kilo_billing.meters import Meter

GB = 10**9


def test_given_team_account_when_seven_video_minutes_over_then_line_rounds_up_to_one_cent(rate_month, line_for):
    line = line_for(rate_month("team", {Meter.VIDEO: 50_007}), Meter.VIDEO)
    assert line.billable == Decimal("7")
    assert line.amount == Decimal("0.01")  # 7 x 0.00072 = 0.00504 -> 0.01


def test_given_personal_account_when_125_audio_minutes_over_then_exact_half_cent_rounds_up(rate_month, line_for):
    # audio has a tie: 36q = 1000k + 500 -> q = 125, k = 4: 125 x 0.00036 = 0.045 -> 0.05 (half-up)
    line = line_for(rate_month("personal", {Meter.AUDIO: 10_125}), Meter.AUDIO)
    assert line.billable == Decimal("125")
    assert line.amount == Decimal("0.05")


def test_given_personal_account_when_124_audio_minutes_over_then_just_below_half_cent_rounds_down(rate_month, line_for):
    line = line_for(rate_month("personal", {Meter.AUDIO: 10_124}), Meter.AUDIO)
    assert line.amount == Decimal("0.04")  # 124 x 0.00036 = 0.04464 -> 0.04


def test_given_personal_account_when_125_messages_over_then_exact_half_cent_rounds_up(rate_month, line_for):
    line = line_for(rate_month("personal", {Meter.MESSAGES: 100_125}), Meter.MESSAGES)
    assert line.amount == Decimal("0.02")  # 125 x 0.00012 = 0.015 -> 0.02 (half-up)


def test_given_personal_account_when_125_gb_over_then_exact_half_cent_rounds_up(rate_month, line_for):
    line = line_for(rate_month("personal", {Meter.DATA_TRANSFER: 135 * GB}), Meter.DATA_TRANSFER)
    assert line.billable == Decimal("125.00")  # 135.00 - 10
    assert line.amount == Decimal("0.02")  # 125 x 0.00012 = 0.015 -> 0.02 (half-up)


def test_given_video_price_when_searching_for_a_half_cent_tie_then_none_exists_and_nearest_round_down(
    rate_month, line_for
):
    # 72q/100000 = (2m+1)/200 <=> 18q = 125(2m+1): even = odd, impossible -> video never ties.
    # 0.00072 x 118 = 0.08496 -> 0.08 and 0.00072 x 132 = 0.09504 -> 0.10 straddle 0.085 and 0.095.
    assert line_for(rate_month("team", {Meter.VIDEO: 50_118}), Meter.VIDEO).amount == Decimal("0.08")
    assert line_for(rate_month("team", {Meter.VIDEO: 50_132}), Meter.VIDEO).amount == Decimal("0.10")


def test_given_sub_cent_overage_on_three_meters_when_invoiced_then_total_is_sum_of_rounded_lines(rate_month, line_for):
    rated = rate_month("personal", {Meter.VIDEO: 5_006, Meter.AUDIO: 10_012, Meter.MESSAGES: 100_036})
    # each line 0.00432 -> 0.00 (6 x 0.00072, 12 x 0.00036, 36 x 0.00012); exact sum 0.01296 would be 0.01
    for meter in (Meter.VIDEO, Meter.AUDIO, Meter.MESSAGES):
        assert line_for(rated, meter).amount == Decimal("0.00")
    assert rated.total == Decimal("0.00")
