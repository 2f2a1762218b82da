"""Settings of the alerts function (pydantic-settings: read once from the environment, validated, cached). Names and
addresses only; nothing secret."""

from __future__ import annotations

from functools import cache

from pydantic import Field
from pydantic_settings import BaseSettings, SettingsConfigDict

from kilo_billing.aws import CallBudget


class AlertSettings(BaseSettings):
    model_config = SettingsConfigDict(frozen=True, extra="ignore")

    alerts_table_name: str  # delivery records (claims and outcomes)
    usage_table_name: str  # account profiles: name, email, phone, alert preferences
    alert_sender_email: str = Field(min_length=3)  # a verified SES identity (the template scopes ses:SendEmail to it)
    ses_configuration_set: str = ""  # bounces/complaints/suppression go through it
    alert_preferences_url: str = Field(min_length=1)  # the account's alert preferences page (in every message)
    sms_sender_id: str = ""  # where carriers support it
    claim_lease_minutes: int = Field(default=15, ge=1, le=24 * 60)
    # every AWS call (kilo_billing.aws): inside the function's 60 s timeout for a batch of 10 events x 2 channels
    aws_connect_timeout_seconds: float = Field(default=1.0, gt=0)
    aws_read_timeout_seconds: float = Field(default=3.0, gt=0)
    aws_max_attempts: int = Field(default=2, ge=1, le=5)

    @property
    def call_budget(self) -> CallBudget:
        return CallBudget(self.aws_connect_timeout_seconds, self.aws_read_timeout_seconds, self.aws_max_attempts)


@cache
def settings() -> AlertSettings:
    return AlertSettings()  # values come from the environment
