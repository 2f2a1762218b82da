"""Settings of the rating and sweeper functions (pydantic-settings: read once, validated, cached)."""

from __future__ import annotations

from functools import cache

from pydantic import Field
from pydantic_settings import BaseSettings, SettingsConfigDict

from kilo_rate_usage.sessions import AttributionRule


class RatingSettings(BaseSettings):
    model_config = SettingsConfigDict(frozen=True, extra="ignore")

    usage_table_name: str
    events_table_name: str
    event_bus_name: str
    poison_queue_url: str = ""
    max_session_hours: int = Field(default=24, ge=1, le=24 * 7)
    attribution_rule: str = (
        "room_metadata:account_id,participant_attribute:kilo.account_id,participant_metadata:account_id"
    )
    livekit_url: str = ""  # RoomService base URL for the sweeper, e.g. https://<project>.livekit.cloud
    livekit_keys_secret_name: str = ""
    secret_max_age_seconds: int = 300

    @property
    def attribution(self) -> AttributionRule:
        return AttributionRule.parse(self.attribution_rule)

    @property
    def max_session_seconds(self) -> int:
        return self.max_session_hours * 3600


@cache
def settings() -> RatingSettings:
    return RatingSettings()  # values come from the environment
