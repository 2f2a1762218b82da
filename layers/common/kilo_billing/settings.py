"""The base of every function's settings model (pydantic-settings): what each of them repeated, said once.

A function's ``settings.py`` declares its own fields on ``FunctionSettings`` (or ``ForecastSettings``) and keeps its
one cached reader (``@cache def settings()``). The base brings:

- the model's configuration: frozen, unknown environment variables ignored;
- the sources: the environment only (and values passed in, for tests and the CLI). pydantic-settings' defaults would
  also look for a ``.env`` file and a secrets directory, which a Lambda function has neither of; secrets come from
  Secrets Manager at runtime, named by these settings;
- the AWS call budget every adapter's client is built with (``kilo_billing.aws``): per-attempt timeouts, attempts,
  and how long a secret read from Secrets Manager is reused;
- for the functions that forecast spend (the account API, alerts), the weekday weights, checked when read.

The ingest functions do not use it: their settings are a dataclass, without pydantic-settings (docs/decisions.md D12).
"""

from __future__ import annotations

from decimal import Decimal, InvalidOperation

from pydantic import Field, field_validator
from pydantic_settings import BaseSettings, PydanticBaseSettingsSource, SettingsConfigDict

from kilo_billing.aws import CallBudget

# Monday .. Sunday, as kilo_billing.budgets.DEFAULT_WEEKDAY_WEIGHTS (a test holds the two equal; importing budgets
# here would load the price book and rating for every function's settings)
DEFAULT_WEEKDAY_WEIGHTS_TEXT = "1,1,1,1,1,0.4,0.4"


class FunctionSettings(BaseSettings):
    model_config = SettingsConfigDict(frozen=True, extra="ignore")

    # Secrets Manager reads (API keys, webhook secrets, RPC URLs) are reused this long (rotation takes effect after)
    secret_max_age_seconds: int = Field(default=300, ge=0)
    # every AWS call (kilo_billing.aws): per-attempt timeouts and attempts, well inside the function's timeout
    aws_connect_timeout_seconds: float = Field(default=1.0, gt=0)
    aws_read_timeout_seconds: float = Field(default=3.0, gt=0)
    aws_max_attempts: int = Field(default=3, ge=1, le=5)

    @classmethod
    def settings_customise_sources(
        cls,
        settings_cls: type[BaseSettings],
        init_settings: PydanticBaseSettingsSource,
        env_settings: PydanticBaseSettingsSource,
        dotenv_settings: PydanticBaseSettingsSource,
        file_secret_settings: PydanticBaseSettingsSource,
    ) -> tuple[PydanticBaseSettingsSource, ...]:
        """Values passed in, then the environment; no ``.env`` file or secrets directory."""
        return (init_settings, env_settings)

    @property
    def call_budget(self) -> CallBudget:
        return CallBudget(self.aws_connect_timeout_seconds, self.aws_read_timeout_seconds, self.aws_max_attempts)


class ForecastSettings(FunctionSettings):
    """Settings of a function that forecasts a month's spend (kilo_billing.budgets): the weekday weights."""

    # Monday..Sunday weights of a day's spend: seven non-negative numbers, comma-separated, not all zero
    forecast_weekday_weights: str = DEFAULT_WEEKDAY_WEIGHTS_TEXT

    @field_validator("forecast_weekday_weights")
    @classmethod
    def _seven_weights(cls, value: str) -> str:
        try:
            weights = [Decimal(part.strip()) for part in value.split(",")]
        except InvalidOperation:
            raise ValueError(f"weekday weights must be numbers, got {value!r}") from None
        if len(weights) != 7 or any(not weight.is_finite() or weight < 0 for weight in weights) or not any(weights):
            raise ValueError(f"weekday weights must be 7 non-negative numbers (Monday..Sunday), not all 0: {value!r}")
        return value

    @property
    def weekday_weights(self) -> tuple[Decimal, ...]:
        return tuple(Decimal(part.strip()) for part in self.forecast_weekday_weights.split(","))
