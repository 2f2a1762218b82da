"""ROOM_LISTING_TTL_DAYS: how long the sweeper's listings and dropped rooms' marks are kept (D125, D251). Never under
15 days: a replay of the rating on-failure queue (14 days' retention) then never outlives a dropped room's mark."""

from __future__ import annotations

import pytest
from pydantic import ValidationError

from kilo_dev.template import Template
from kilo_rate_usage.settings import RatingSettings

TABLES = {"usage_table_name": "usage", "events_table_name": "events"}
DAY_SECONDS = 86_400


def queue_retention_days() -> int:
    """The rating on-failure queue's retention, from the template, in whole days."""
    seconds = Template().resources["RatingDeadLetterQueue"]["Properties"]["MessageRetentionPeriod"]
    assert seconds % DAY_SECONDS == 0
    return int(seconds) // DAY_SECONDS


@pytest.mark.parametrize("days", ["1", "7", "14"])
def test_given_a_listing_ttl_no_longer_than_the_on_failure_queues_retention_then_rating_refuses_it_naming_it(
    monkeypatch: pytest.MonkeyPatch, days: str
) -> None:
    monkeypatch.setenv("ROOM_LISTING_TTL_DAYS", days)
    with pytest.raises(ValidationError, match=r"room_listing_ttl_days\n.*greater than or equal to 15"):
        RatingSettings(**TABLES)


@pytest.mark.parametrize(("days", "expected"), [(None, 31), ("15", 15), ("400", 400)])
def test_given_a_listing_ttl_past_the_queues_retention_then_rating_keeps_it(
    monkeypatch: pytest.MonkeyPatch, days: str | None, expected: int
) -> None:
    if days is None:
        monkeypatch.delenv("ROOM_LISTING_TTL_DAYS", raising=False)
    else:
        monkeypatch.setenv("ROOM_LISTING_TTL_DAYS", days)
    assert RatingSettings(**TABLES).room_listing_ttl_days == expected


def test_given_the_template_then_the_on_failure_queue_keeps_a_replay_14_days_one_under_the_floor() -> None:
    assert queue_retention_days() == 14  # the floor (15) was chosen against it: lengthen the retention, revisit it
