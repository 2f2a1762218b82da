"""Settings of the rating and sweeper functions (pydantic-settings: read once from the environment, validated, cached).

Both functions share one model: the template gives each the variables it needs, the rest keep their defaults."""

from __future__ import annotations

from functools import cache

from pydantic import Field, model_validator

from kilo_billing.events import DEFAULT_RAW_EVENT_TTL_DAYS, MIN_RAW_EVENT_TTL_DAYS
from kilo_billing.settings import FunctionSettings
from kilo_rate_usage.model import AttributionRule, SweepPolicy

HOUR_MS = 3_600_000


class RatingSettings(FunctionSettings):
    """The base's AWS call budget and secret reuse (the sweeper's LiveKit keys), and:"""

    usage_table_name: str
    events_table_name: str
    event_bus_name: str = ""
    poison_queue_url: str = ""
    # the sweeper's synthetic events expire like raw events: the same default and minimum as ingest's
    raw_event_ttl_days: int = Field(default=DEFAULT_RAW_EVENT_TTL_DAYS, ge=MIN_RAW_EVENT_TTL_DAYS)
    attribution_rule: str = (
        "room_metadata:account_id,participant_attribute:kilo.account_id,participant_metadata:account_id"
    )
    # the sweeper (docs/decisions.md D17)
    max_unconfirmed_hours: int = Field(default=24, ge=1, le=24 * 30)
    # a room's listing (and a dropped room's mark) is kept this long after its answer (the usage table's TTL); longer
    # than the template's largest MaxUnconfirmedHours (720 h), so a cap never misses a listing (D125); at least 15
    # days, past the rating on-failure queue's 14 days' retention, so a replay from it never outlives a dropped room's
    # mark (D251, D272)
    room_listing_ttl_days: int = Field(default=31, ge=15, le=400)
    sweep_every_minutes: int = Field(default=5, ge=1, le=30)  # the template's schedule, rate(5 minutes)
    # a room whose sessions the sweeper closed, none open since and no event for this long, loses its running state
    # (its room_finished was lost; D219)
    quiet_room_minutes: int = Field(default=60, ge=5, le=7 * 24 * 60)
    livekit_url: str = ""  # RoomService base URL, e.g. https://<project>.livekit.cloud
    livekit_keys_secret_name: str = ""
    roomservice_request_timeout_seconds: float = Field(default=5.0, gt=0)
    roomservice_budget_seconds: float = Field(default=60.0, gt=0)  # all rooms of one sweep, asked concurrently
    roomservice_concurrency: int = Field(default=8, ge=1, le=64)
    # every AWS call (the base's timeouts): a stream batch may retry throttled writes longer than an API request
    aws_max_attempts: int = Field(default=3, ge=1, le=10)

    @model_validator(mode="after")
    def _listings_outlive_the_limit(self) -> RatingSettings:
        self.sweep_policy  # noqa: B018 - raises when listings would expire before the unconfirmed limit
        return self

    @property
    def attribution(self) -> AttributionRule:
        return AttributionRule.parse(self.attribution_rule)

    @property
    def sweep_policy(self) -> SweepPolicy:
        return SweepPolicy(
            self.max_unconfirmed_hours * HOUR_MS,
            self.room_listing_ttl_days * 24 * HOUR_MS,
            vouched_gap_ms=self.sweep_every_minutes * 90_000,  # one sweep interval and a half: scheduler slack
            quiet_room_ms=self.quiet_room_minutes * 60_000,
        )

    @property
    def raw_event_ttl_seconds(self) -> int:
        return self.raw_event_ttl_days * 86_400


@cache
def settings() -> RatingSettings:
    return RatingSettings()  # values come from the environment
