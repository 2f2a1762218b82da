"""RAW_EVENT_TTL_DAYS: one rule for the two functions that read it (ingest stores raw events with it, rating's sweeper
writes its synthetic closes with it) and the template's parameter - default 400 days, never under 40, so usage
backdated by the usage API's 35 days is still stored while it is rated (docs/decisions.md D14)."""

from __future__ import annotations

from datetime import timedelta

import pytest
from pydantic import ValidationError

from kilo_dev.template import Template
from kilo_rate_usage.settings import RatingSettings
from kilo_webhook_ingest.settings import IngestSettings, SettingsError
from kilo_webhook_ingest.usage import MAX_PAST

TABLES = {"usage_table_name": "usage", "events_table_name": "events"}


def ingest(days: str | None) -> int:
    env = {"EVENTS_TABLE_NAME": "events"} | ({} if days is None else {"RAW_EVENT_TTL_DAYS": days})
    return IngestSettings.from_env(env).raw_event_ttl_days


def rating(days: str | None, monkeypatch: pytest.MonkeyPatch) -> int:
    if days is None:
        monkeypatch.delenv("RAW_EVENT_TTL_DAYS", raising=False)
    else:
        monkeypatch.setenv("RAW_EVENT_TTL_DAYS", days)
    return RatingSettings(**TABLES).raw_event_ttl_days


@pytest.mark.parametrize(("days", "expected"), [(None, 400), ("40", 40), ("41", 41), ("3650", 3650)])
def test_given_a_ttl_of_40_days_or_more_then_ingest_and_rating_both_keep_events_that_long(
    monkeypatch: pytest.MonkeyPatch, days: str | None, expected: int
) -> None:
    assert (ingest(days), rating(days, monkeypatch)) == (expected, expected)


@pytest.mark.parametrize("days", ["39", "1", "0", "-400"])
def test_given_a_ttl_under_40_days_then_ingest_and_rating_both_refuse_it(
    monkeypatch: pytest.MonkeyPatch, days: str
) -> None:
    with pytest.raises(SettingsError, match="RAW_EVENT_TTL_DAYS must be >= 40"):
        ingest(days)
    with pytest.raises(ValidationError, match="greater than or equal to 40"):
        rating(days, monkeypatch)


def test_given_the_template_then_its_parameter_has_the_same_default_and_minimum() -> None:
    spec = Template().body["Parameters"]["RawEventTtlDays"]
    assert (spec["Default"], spec["MinValue"]) == (400, 40)


def test_given_the_usage_apis_backdating_window_then_the_40_day_minimum_outlasts_it() -> None:
    assert timedelta(days=35) == MAX_PAST  # the window the 40 days were chosen against: widen it, revisit them
    assert timedelta(days=40) > MAX_PAST
