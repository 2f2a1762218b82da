"""Settings of the account API (pydantic-settings: read once from the environment, validated, cached). Table names,
the Stripe key's secret name and the dashboard's URLs; secrets are read from Secrets Manager at runtime."""

from __future__ import annotations

from decimal import Decimal
from functools import cache

from pydantic import Field
from pydantic_settings import BaseSettings, SettingsConfigDict

from kilo_billing.aws import CallBudget
from kilo_billing.budgets import DEFAULT_WEEKDAY_WEIGHTS


class AccountApiSettings(BaseSettings):
    model_config = SettingsConfigDict(frozen=True, extra="ignore")

    usage_table_name: str  # profiles, rating's sessions and counters, our invoices, the spend item
    members_table_name: str  # ACCOUNT#<id> / MEMBER#<user>
    # the Cognito group whose users get the operator claim at sign-in (the pre-token trigger, ``sign_in``)
    operator_group: str = "kilo-operators"
    # Secrets Manager: JSON {"api_key": "sk_..." | "rk_...", optional "api_base"} (the invoice functions' secret)
    stripe_api_key_secret_name: str = ""
    secret_max_age_seconds: int = Field(default=300, ge=0)
    stripe_max_network_retries: int = Field(default=1, ge=0, le=5)
    # where Stripe's hosted pages send the customer back (the dashboard)
    dashboard_url: str = "http://127.0.0.1:8000/"
    # Monday..Sunday weights of a day's spend for the weekday-aware forecast (kilo_billing.budgets; the alerts
    # function's setting of the same name and format)
    forecast_weekday_weights: str = ",".join(str(weight) for weight in DEFAULT_WEEKDAY_WEIGHTS)
    # recommendations (kilo_account_api.recommendations): a room this large is an audience
    audience_min_participants: int = Field(default=10, ge=2)
    # share of data transfer saved when subscribers receive a lower simulcast layer (LiveKit's medium layer is about
    # half the bitrate of the high one); an assumption stated with the recommendation
    simulcast_data_saving: Decimal = Field(default=Decimal("0.5"), gt=0, lt=1)
    # closed sessions that began this long before a period are still read for it (a call across the month end)
    session_lookback_days: int = Field(default=35, ge=1, le=400)
    # every AWS call (kilo_billing.aws): an API request is a few calls inside API Gateway's 30 s
    aws_connect_timeout_seconds: float = Field(default=1.0, gt=0)
    aws_read_timeout_seconds: float = Field(default=3.0, gt=0)
    aws_max_attempts: int = Field(default=3, ge=1, le=5)

    @property
    def weekday_weights(self) -> tuple[Decimal, ...]:
        return tuple(Decimal(part) for part in self.forecast_weekday_weights.split(","))

    @property
    def call_budget(self) -> CallBudget:
        return CallBudget(self.aws_connect_timeout_seconds, self.aws_read_timeout_seconds, self.aws_max_attempts)


@cache
def settings() -> AccountApiSettings:
    return AccountApiSettings()  # values come from the environment
