"""Rating rules the scenario suite does not tell as LiveKit stories: late usage of an invoiced period, budgets."""

from __future__ import annotations

from dataclasses import replace
from datetime import UTC, datetime
from decimal import Decimal

from kilo_billing.accounts import AccountProfile
from kilo_billing.catalog import default_catalog
from kilo_billing.rating import TierChange
from kilo_billing.usage_events import UsageEventRecord
from kilo_rate_usage.logic import rate_batch
from kilo_rate_usage.model import AttributionRule, RatingConfig
from tests.fakes import InMemoryUsageRepository, RecordingPublisher

CONFIG = RatingConfig(AttributionRule(), default_catalog().for_period)
OCT_20 = int(datetime(2026, 10, 20, tzinfo=UTC).timestamp() * 1000)
NOV_2 = int(datetime(2026, 11, 2, tzinfo=UTC).timestamp() * 1000)


def usage(account: str, key: str, quantity: int, at_ms: int, meter: str = "messages") -> UsageEventRecord:
    return UsageEventRecord("kilo-app", key, account, meter, quantity, at_ms, f"h-{key}", at_ms)


def rate(repo: InMemoryUsageRepository, publisher: RecordingPublisher, record: UsageEventRecord) -> None:
    repo.store_event(record)  # ingest stored it before the stream delivered it
    rate_batch([], [record], repo, publisher, CONFIG, NOV_2)


def test_given_an_invoiced_period_when_its_usage_arrives_late_then_it_is_counted_and_marked_late() -> None:
    repo, publisher = InMemoryUsageRepository(), RecordingPublisher()
    rate(repo, publisher, usage("acct_l", "on-time", 500, OCT_20))
    repo.invoiced.add(("acct_l", "2026-10"))  # invoicing closed October
    rate(repo, publisher, usage("acct_l", "late", 70, OCT_20))
    assert repo.totals("acct_l", "2026-10") == {"messages": 570}
    assert repo.late[("acct_l", "2026-10")] == {"messages": 70}  # the adjustment line's input
    rate(repo, publisher, usage("acct_l", "late", 70, OCT_20))  # redelivered
    assert repo.late[("acct_l", "2026-10")] == {"messages": 70}


def test_given_a_budget_then_each_budget_threshold_is_announced_once() -> None:
    repo, publisher = InMemoryUsageRepository(), RecordingPublisher()
    changes = (TierChange(datetime(2026, 1, 1, tzinfo=UTC), "personal"),)
    repo.accounts.register(AccountProfile("acct_b", changes, budget_usd=Decimal("10.00")))
    # personal: 5,000 video minutes included; 10,000 more at $0.00072 = $7.20 -> 72 % of the $10 budget
    rate(repo, publisher, usage("acct_b", "v", 0, NOV_2))
    assert publisher.published == []
    repo.counters[("acct_b", "2026-11")] = {(int(datetime(2026, 1, 1, tzinfo=UTC).timestamp()), "video"): 15_000}
    # the next batch that touches the account re-checks the thresholds against the month to date
    rate(repo, publisher, usage("acct_b", "m", 1, NOV_2))
    announced = sorted((d["meter"], d["threshold_percent"]) for _, d in publisher.published)
    assert announced == [("budget", 50), ("video", 50), ("video", 80), ("video", 100)]
    rate(repo, publisher, usage("acct_b", "m2", 1, NOV_2))
    assert len(publisher.published) == 4  # nothing twice


def test_given_a_hard_limit_then_reaching_it_is_announced_once_as_its_own_crossing() -> None:
    repo, publisher = InMemoryUsageRepository(), RecordingPublisher()
    changes = (TierChange(datetime(2026, 1, 1, tzinfo=UTC), "personal"),)
    profile = AccountProfile("acct_h", changes, budget_usd=Decimal("20.00"), budget_thresholds=(90,))
    repo.accounts.register(replace(profile, hard_limit_usd=Decimal("7.00")))
    segment = int(datetime(2026, 1, 1, tzinfo=UTC).timestamp())
    # 14,000 video minutes: 9,000 over the 5,000 included at $0.00072 = $6.48, under the $7.00 hard limit
    repo.counters[("acct_h", "2026-11")] = {(segment, "video"): 14_000}
    rate(repo, publisher, usage("acct_h", "a", 1, NOV_2))
    assert ("hard_limit", 100) not in {(d["meter"], d["threshold_percent"]) for _, d in publisher.published}
    # 15,000: 10,000 over = $7.20 >= $7.00 (the budget's 90 % is $18.00: not reached, so only the hard limit fires)
    repo.counters[("acct_h", "2026-11")] = {(segment, "video"): 15_000}
    rate(repo, publisher, usage("acct_h", "b", 1, NOV_2))
    hard = [d for _, d in publisher.published if d["meter"] == "hard_limit"]
    assert [(Decimal(d["used"]), Decimal(d["limit"]), d["event_id"]) for d in hard] == [
        (Decimal("7.20"), Decimal("7.00"), "threshold:acct_h:2026-11:hard_limit@7:100")  # scoped by the limit
    ]
    rate(repo, publisher, usage("acct_h", "c", 1, NOV_2))
    assert len([d for _, d in publisher.published if d["meter"] == "hard_limit"]) == 1  # once
