"""Settings of the rating and sweeper functions (pydantic-settings: read once from the environment, validated, cached).

Both functions share one model: the template gives each the variables it needs, the rest keep their defaults."""

from __future__ import annotations

from functools import cache

from pydantic import Field, model_validator
from pydantic_settings import BaseSettings, SettingsConfigDict

from kilo_billing.aws import CallBudget
from kilo_rate_usage.model import AttributionRule, SweepPolicy

HOUR_MS = 3_600_000


class RatingSettings(BaseSettings):
    model_config = SettingsConfigDict(frozen=True, extra="ignore")

    usage_table_name: str
    events_table_name: str
    event_bus_name: str = ""
    poison_queue_url: str = ""
    raw_event_ttl_days: int = Field(default=400, ge=40)  # the sweeper's synthetic events expire like raw events
    attribution_rule: str = (
        "room_metadata:account_id,participant_attribute:kilo.account_id,participant_metadata:account_id"
    )
    # the sweeper (docs/decisions.md D17)
    max_unconfirmed_hours: int = Field(default=24, ge=1, le=24 * 30)
    confirm_every_minutes: int = Field(default=60, ge=5)
    livekit_url: str = ""  # RoomService base URL, e.g. https://<project>.livekit.cloud
    livekit_keys_secret_name: str = ""
    secret_max_age_seconds: int = 300
    roomservice_request_timeout_seconds: float = Field(default=5.0, gt=0)
    roomservice_budget_seconds: float = Field(default=60.0, gt=0)  # all rooms of one sweep, asked concurrently
    roomservice_concurrency: int = Field(default=8, ge=1, le=64)
    # every AWS call: per-attempt timeouts and attempts (kilo_billing.aws), well inside the functions' timeouts
    aws_connect_timeout_seconds: float = Field(default=1.0, gt=0)
    aws_read_timeout_seconds: float = Field(default=3.0, gt=0)
    aws_max_attempts: int = Field(default=3, ge=1, le=10)

    @model_validator(mode="after")
    def _confirmations_inside_the_limit(self) -> RatingSettings:
        self.sweep_policy  # noqa: B018 - raises when confirmations are not more frequent than the limit
        return self

    @property
    def attribution(self) -> AttributionRule:
        return AttributionRule.parse(self.attribution_rule)

    @property
    def sweep_policy(self) -> SweepPolicy:
        return SweepPolicy(self.max_unconfirmed_hours * HOUR_MS, self.confirm_every_minutes * 60_000)

    @property
    def call_budget(self) -> CallBudget:
        return CallBudget(self.aws_connect_timeout_seconds, self.aws_read_timeout_seconds, self.aws_max_attempts)

    @property
    def raw_event_ttl_seconds(self) -> int:
        return self.raw_event_ttl_days * 86_400


@cache
def settings() -> RatingSettings:
    return RatingSettings()  # values come from the environment
