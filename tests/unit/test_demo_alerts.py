"""The demo's expected alerts (kilo_dev.ground_truth.expected_alerts) on hand-worked months, and the reading of a
delivered subject or SMS back into (period, kind, key) - the two halves of the demo's alert check."""

from __future__ import annotations

from collections import Counter
from datetime import UTC, datetime
from fractions import Fraction

from kilo_dev.demo import classify
from kilo_dev.ground_truth import Budget, expected_alerts, price_sheet
from kilo_dev.simulator import Truth

NOV_START = int(datetime(2026, 11, 1, tzinfo=UTC).timestamp())
NOV_16 = int(datetime(2026, 11, 16, tzinfo=UTC).timestamp())
OCT_START = int(datetime(2026, 10, 1, tzinfo=UTC).timestamp())
SHEET = price_sheet(datetime(2026, 11, 1, tzinfo=UTC))


def truth_with(*pieces: tuple[str, int, int]) -> Truth:
    truth = Truth()
    for meter, quantity, at_s in pieces:
        truth.add("acct", "2026-11", meter, quantity, at_s * 1000)
    return truth


def test_given_a_personal_account_at_85_percent_of_its_messages_then_50_and_80_by_email_and_80_by_sms() -> None:
    truth = truth_with(("messages", 85_000, NOV_START + 3600))  # Personal includes 100,000 messages
    assert expected_alerts(truth, "acct", "2026-11", [(OCT_START, "personal")], SHEET) == Counter({
        ("2026-11", "allowance_threshold", "messages:50", "email"): 1,
        ("2026-11", "allowance_threshold", "messages:80", "email"): 1,
        ("2026-11", "allowance_threshold", "messages:80", "sms"): 1,
    })  # fmt: skip


def test_given_an_upgrade_halfway_then_each_segments_prorated_allowance_has_its_own_alerts() -> None:
    # Nov has 30 days; Personal until the 16th 00:00 = 15/30 of the month: 2,500 video minutes included there.
    # 2,000 video minutes before the upgrade: 50 and 80 % of 2,500 (of the full 5,000 it would be 40 %).
    truth = truth_with(("video", 2_000, NOV_START + 3600), ("video", 30_000, NOV_16 + 3600))
    history = [(OCT_START, "personal"), (NOV_16, "team")]  # Team after: 15/30 of 50,000 = 25,000, 30,000 used: 120 %
    found = expected_alerts(truth, "acct", "2026-11", history, SHEET)
    by_email = Counter({key: n for (_, kind, key, channel), n in found.items() if channel == "email"})
    assert by_email == Counter({"video:50": 2, "video:80": 2, "video:100": 1})  # Personal 50, 80; Team 50, 80, 100


def test_given_a_budget_whose_hard_limit_the_bill_reaches_then_budget_and_hard_limit_by_email_and_sms() -> None:
    # 110,000 messages: 10,000 over at $0.0001 x 1.20 = $1.20 >= the $1.00 budget and hard limit
    truth = truth_with(("messages", 110_000, NOV_START + 3600))
    budget = Budget(Fraction(1), (100,), Fraction(1))
    found = expected_alerts(truth, "acct", "2026-11", [(OCT_START, "personal")], SHEET, budget)
    assert {(kind, key, channel) for _, kind, key, channel in found if kind != "allowance_threshold"} == {
        ("budget_threshold", "budget:100", "email"),
        ("budget_threshold", "budget:100", "sms"),
        ("budget_hard_limit", "hard_limit:100", "email"),
        ("budget_hard_limit", "hard_limit:100", "sms"),
    }


def test_given_a_bill_below_the_budget_then_no_budget_alert() -> None:
    truth = truth_with(("messages", 105_000, NOV_START + 3600))  # $0.60 of overage
    budget = Budget(Fraction(1), (100,), Fraction(1))
    found = expected_alerts(truth, "acct", "2026-11", [(OCT_START, "personal")], SHEET, budget)
    assert {kind for _, kind, _, _ in found} == {"allowance_threshold"}


def test_given_a_fee_over_budget_percentages_then_they_are_announced_only_in_a_month_with_usage() -> None:
    # Team's $29 fee is 80.6 % of a $36 budget: 50 % and 80 % - once rating rates some usage of the month
    budget = Budget(Fraction(36), (50, 80, 100))
    history = [(OCT_START, "team")]
    assert expected_alerts(Truth(), "acct", "2026-11", history, SHEET, budget) == Counter()
    found = expected_alerts(
        truth_with(("messages", 7_500, NOV_START + 1800)), "acct", "2026-11", history, SHEET, budget
    )
    assert found == Counter({
        ("2026-11", "budget_threshold", "budget:50", "email"): 1,
        ("2026-11", "budget_threshold", "budget:80", "email"): 1,
        ("2026-11", "budget_threshold", "budget:80", "sms"): 1,
    })  # fmt: skip


def test_given_enterprise_then_no_allowance_alerts_whatever_the_use() -> None:
    truth = truth_with(("video", 10_000_000, NOV_START + 3600))
    assert expected_alerts(truth, "acct", "2026-11", [(OCT_START, "enterprise")], SHEET) == Counter()


def test_given_the_delivered_texts_then_each_reads_back_as_its_period_kind_and_key() -> None:
    assert classify("80% of your included GB of data transfer used for November 2026") == (
        "2026-11", "allowance_threshold", "data_transfer:80")  # fmt: skip
    assert classify("Kilo: 100% of included messages used for October 2026 (110,000 of 100,000). Overage applies "
                    "now. Reply STOP to opt out") == ("2026-10", "allowance_threshold", "messages:100")  # fmt: skip
    assert classify("Your November 2026 bill so far reached 100% of your budget") == (
        "2026-11", "budget_threshold", "budget:100")  # fmt: skip
    assert classify("Kilo: November 2026 bill so far $1.20, 100% of your $1.00 budget. Budget reached.") == (
        "2026-11", "budget_threshold", "budget:100")  # fmt: skip
    assert classify("Your November 2026 hard spending limit of $1.00 is reached: calls are stopping") == (
        "2026-11", "budget_hard_limit", "hard_limit:100")  # fmt: skip
    assert classify("Kilo: hard limit $1.00 reached (November 2026 bill $1.20). Calls go audio-only") == (
        "2026-11", "budget_hard_limit", "hard_limit:100")  # fmt: skip
    assert classify("something else entirely") is None
