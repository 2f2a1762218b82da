"""Thresholds are scoped by what they are measured against: a raised budget or hard limit is announced again when the
bill reaches it, a new tier segment's allowance gets its own 50/80/100 %, and the same crossing stays one event.
Figures hand-worked from the 2026-01-01 price book: video $0.0006 a minute + 20 % = $0.00072; Personal includes
5,000 video minutes a month, Team 50,000 (prorated by the share of the month a segment covers)."""

from __future__ import annotations

from datetime import UTC, datetime
from decimal import Decimal

from kilo_billing.accounts import AccountProfile
from kilo_billing.budgets import BudgetChange, set_budget
from kilo_billing.catalog import default_catalog
from kilo_billing.rating import TierChange
from kilo_billing.usage_events import UsageEventRecord
from kilo_rate_usage.logic import rate_batch
from kilo_rate_usage.model import AttributionRule, RatingConfig
from tests.fakes import InMemoryUsageRepository, RecordingPublisher

CONFIG = RatingConfig(AttributionRule(), default_catalog().for_period)
NOV_2 = int(datetime(2026, 11, 2, tzinfo=UTC).timestamp() * 1000)
JAN_1 = int(datetime(2026, 1, 1, tzinfo=UTC).timestamp())
NOV_1 = 1_793_491_200  # 2026-11-01T00:00Z: where November's first tier segment starts
NOV_16 = 1_794_787_200  # 2026-11-16T00:00Z = NOV_1 + 15 days: the upgrade below
PERSONAL = (TierChange(datetime(2026, 1, 1, tzinfo=UTC), "personal"),)


def touch(repo: InMemoryUsageRepository, publisher: RecordingPublisher, key: str) -> None:
    """A batch that touches the account (one message): rating re-checks the month to date's thresholds."""
    record = UsageEventRecord("kilo-app", key, "acct_r", "messages", 1, NOV_2, f"h-{key}", NOV_2)
    repo.store_event(record)
    rate_batch([], [record], repo, publisher, CONFIG, NOV_2)


def video(repo: InMemoryUsageRepository, minutes: int, segment: int = JAN_1) -> None:
    repo.counters.setdefault(("acct_r", "2026-11"), {})[(segment, "video")] = minutes


def announced(publisher: RecordingPublisher) -> list[tuple[str, int, str, str]]:
    return [(d["meter"], d["threshold_percent"], d["limit"], d["event_id"]) for _, d in publisher.published]


def test_given_a_hard_limit_raised_after_it_fired_then_the_new_limit_is_announced_when_reached() -> None:
    repo, publisher = InMemoryUsageRepository(), RecordingPublisher()
    repo.accounts.register(AccountProfile("acct_r", PERSONAL, hard_limit_usd=Decimal("7.00")))
    video(repo, 15_000)  # 10,000 over the 5,000 included: $7.20 >= $7.00
    touch(repo, publisher, "a")
    hard = [c for c in announced(publisher) if c[0] == "hard_limit"]
    assert hard == [("hard_limit", 100, "7", "threshold:acct_r:2026-11:hard_limit@7:100")]
    # the user raises the limit in the grace period (D47); $7.20 is below it: nothing
    set_budget(repo.accounts, "acct_r", BudgetChange(hard_limit_usd=Decimal("10.00")))
    touch(repo, publisher, "b")
    assert [c for c in announced(publisher) if c[0] == "hard_limit"] == hard
    # 20,000 minutes: 15,000 over = $10.80 >= $10.00: the raised limit is reached and announced, with its own id
    video(repo, 20_000)
    touch(repo, publisher, "c")
    assert [c for c in announced(publisher) if c[0] == "hard_limit"] == [
        *hard,
        ("hard_limit", 100, "10", "threshold:acct_r:2026-11:hard_limit@10v1:100"),
    ]
    assert [Decimal(d["used"]) for _, d in publisher.published if d["meter"] == "hard_limit"][-1] == Decimal("10.80")
    # rated again (a redelivered batch, the sweeper's check): the same crossing is not announced twice
    touch(repo, publisher, "d")
    touch(repo, publisher, "d")
    assert len([c for c in announced(publisher) if c[0] == "hard_limit"]) == 2
    assert repo.thresholds[("acct_r", "2026-11")] >= {"hard_limit@7#100", "hard_limit@10v1#100"}


def test_given_a_budget_raised_then_its_percentages_are_announced_again_against_the_new_amount() -> None:
    repo, publisher = InMemoryUsageRepository(), RecordingPublisher()
    profile = AccountProfile("acct_r", PERSONAL, budget_usd=Decimal("10.00"), budget_thresholds=(50, 100))
    repo.accounts.register(profile)
    video(repo, 15_000)  # $7.20: 72 % of $10
    touch(repo, publisher, "a")
    budget = [(m, p, limit) for m, p, limit, _ in announced(publisher) if m == "budget"]
    assert budget == [("budget", 50, "10")]
    set_budget(repo.accounts, "acct_r", BudgetChange(budget_usd=Decimal("12.00")))
    touch(repo, publisher, "b")  # $7.20 is 60 % of $12: its 50 % is reached (a new budget, a new alert)
    video(repo, 22_000)  # 17,000 over = $12.24 >= $12: 100 %
    touch(repo, publisher, "c")
    touch(repo, publisher, "d")
    budget = [(m, p, limit, i) for m, p, limit, i in announced(publisher) if m == "budget"]
    assert budget == [
        ("budget", 50, "10", "threshold:acct_r:2026-11:budget@10:50"),
        ("budget", 50, "12", "threshold:acct_r:2026-11:budget@12v1:50"),  # the first change of the budget
        ("budget", 100, "12", "threshold:acct_r:2026-11:budget@12v1:100"),
    ]


def test_given_only_the_percentages_changed_then_nothing_reached_is_announced_again() -> None:
    repo, publisher = InMemoryUsageRepository(), RecordingPublisher()
    repo.accounts.register(AccountProfile("acct_r", PERSONAL, budget_usd=Decimal("10.00"), budget_thresholds=(50,)))
    video(repo, 15_000)  # $7.20
    touch(repo, publisher, "a")
    set_budget(repo.accounts, "acct_r", BudgetChange(thresholds=(50, 70)))
    touch(repo, publisher, "b")
    assert [(m, p) for m, p, *_ in announced(publisher) if m == "budget"] == [("budget", 50), ("budget", 70)]


def test_given_an_upgrade_mid_month_then_the_new_segments_allowance_gets_its_own_crossings() -> None:
    repo, publisher = InMemoryUsageRepository(), RecordingPublisher()
    repo.accounts.register(AccountProfile("acct_r", PERSONAL))
    video(repo, 2_500)  # Personal all month so far: 2,500 of 5,000 = 50 %
    touch(repo, publisher, "a")
    # upgraded to Team on Nov 16 00:00: the Personal segment is now 15/30 of 5,000 = 2,500 included (all used)
    repo.accounts.save(AccountProfile("acct_r", (*PERSONAL, TierChange(datetime(2026, 11, 16, tzinfo=UTC), "team"))))
    touch(repo, publisher, "b")
    personal = [(m, p, limit, i) for m, p, limit, i in announced(publisher) if m == "video"]
    assert personal == [
        ("video", 50, "5000", f"threshold:acct_r:2026-11:video@{NOV_1}:50"),
        ("video", 80, "2500", f"threshold:acct_r:2026-11:video@{NOV_1}:80"),
        ("video", 100, "2500", f"threshold:acct_r:2026-11:video@{NOV_1}:100"),
    ]
    # Team from Nov 16: 15/30 of 50,000 = 25,000 included; 30,000 used there = 120 %, 5,000 minutes of overage
    # charged - each of its 50/80/100 % is announced, scoped by the segment's start
    video(repo, 30_000, segment=NOV_16)
    touch(repo, publisher, "c")
    touch(repo, publisher, "d")
    team = [(m, p, limit, i) for m, p, limit, i in announced(publisher) if m == "video"][3:]
    assert team == [
        ("video", percent, "25000", f"threshold:acct_r:2026-11:video@{NOV_16}:{percent}") for percent in (50, 80, 100)
    ]


def test_given_markers_recorded_before_scopes_then_they_still_stand_for_their_month() -> None:
    """Markers written before this change (``<meter>#<threshold>``) cover every scope of their month: the deploy
    announces nothing twice; the month after, every crossing is scoped."""
    repo, publisher = InMemoryUsageRepository(), RecordingPublisher()
    limits = {"budget_usd": Decimal("7.00"), "budget_thresholds": (100,), "hard_limit_usd": Decimal("7.00")}
    repo.accounts.register(AccountProfile("acct_r", PERSONAL, **limits))  # type: ignore[arg-type]
    video(repo, 15_000)  # $7.20: the budget, the hard limit and the video allowance's 50/80/100 % reached
    repo.thresholds[("acct_r", "2026-11")] = {"video#50", "video#80", "video#100", "budget#100", "hard_limit#100"}
    touch(repo, publisher, "a")
    assert publisher.published == []
    # the same usage without those markers: each of them is a crossing (so the assertion above can fail)
    repo.thresholds[("acct_r", "2026-11")] = set()
    touch(repo, publisher, "b")
    assert sorted((m, p) for m, p, *_ in announced(publisher)) == [
        ("budget", 100),
        ("hard_limit", 100),
        ("video", 50),
        ("video", 80),
        ("video", 100),
    ]


def test_given_a_hard_limit_lowered_back_to_an_amount_already_announced_then_it_is_announced_again_once() -> None:
    """10 -> 50 -> 10 in one month, the bill above 10 all along: each setting of the limit is a crossing of its own
    (scoped by the limit's amount and its setting's version), announced once however often it is rated again."""
    repo, publisher = InMemoryUsageRepository(), RecordingPublisher()
    repo.accounts.register(AccountProfile("acct_r", PERSONAL))
    video(repo, 25_000)  # 20,000 over the 5,000 included: 20,000 x $0.00072 = $14.40
    set_budget(repo.accounts, "acct_r", BudgetChange(hard_limit_usd=Decimal("10.00")))  # the first setting
    touch(repo, publisher, "a")
    set_budget(repo.accounts, "acct_r", BudgetChange(hard_limit_usd=Decimal("50.00")))  # $14.40 is below: nothing
    touch(repo, publisher, "b")
    set_budget(repo.accounts, "acct_r", BudgetChange(hard_limit_usd=Decimal("10.00")))  # back to $10: crossed at once
    touch(repo, publisher, "c")
    touch(repo, publisher, "c")  # the same batch redelivered
    touch(repo, publisher, "d")  # and another one: still one announcement per setting
    hard = [c for c in announced(publisher) if c[0] == "hard_limit"]
    assert hard == [
        ("hard_limit", 100, "10", "threshold:acct_r:2026-11:hard_limit@10v1:100"),
        ("hard_limit", 100, "10", "threshold:acct_r:2026-11:hard_limit@10v3:100"),
    ]
    # setting the same amount again is no new setting (nothing changed): not announced a third time
    set_budget(repo.accounts, "acct_r", BudgetChange(hard_limit_usd=Decimal("10")))
    touch(repo, publisher, "e")
    assert len([c for c in announced(publisher) if c[0] == "hard_limit"]) == 2


def test_given_a_budget_lowered_back_then_its_percentages_are_announced_again_and_old_markers_still_count() -> None:
    """A budget set before versions existed (version 0) keeps D124's amount scope, so its markers still count; a
    later setting of the same amount is a new one."""
    repo, publisher = InMemoryUsageRepository(), RecordingPublisher()
    profile = AccountProfile("acct_r", PERSONAL, budget_usd=Decimal("10.00"), budget_thresholds=(50,))
    repo.accounts.register(profile)
    video(repo, 15_000)  # $7.20: 72 % of $10
    repo.thresholds[("acct_r", "2026-11")] = {"budget@10#50"}  # announced under D124's scope before the deploy
    touch(repo, publisher, "a")
    assert [c for c in announced(publisher) if c[0] == "budget"] == []
    set_budget(repo.accounts, "acct_r", BudgetChange(budget_usd=Decimal("20.00")))  # 36 %: nothing
    set_budget(repo.accounts, "acct_r", BudgetChange(budget_usd=Decimal("10.00")))
    touch(repo, publisher, "b")
    assert [(m, p, i) for m, p, _, i in announced(publisher) if m == "budget"] == [
        ("budget", 50, "threshold:acct_r:2026-11:budget@10v2:50")
    ]
