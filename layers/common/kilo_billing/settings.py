"""The base of every function's settings model (pydantic-settings): what each of them repeated, said once.

A function's ``settings.py`` declares its own fields on ``FunctionSettings`` (or ``ForecastSettings``) and keeps its
one cached reader (``@cache def settings()``). The base brings:

- the model's configuration: frozen, unknown environment variables ignored;
- the sources: the environment only (and values passed in, for tests and the CLI). pydantic-settings' defaults would
  also look for a ``.env`` file and a secrets directory, which a Lambda function has neither of; secrets come from
  Secrets Manager at runtime, named by these settings;
- the AWS call budget every adapter's client is built with (``kilo_billing.aws``): per-attempt timeouts, attempts,
  and how long a secret read from Secrets Manager is reused;
- for the functions that forecast spend (the account API, alerts), the weekday weights, checked when read;
- for the functions that text (the account API's codes, alerts), the regions SMS goes to (``SmsSettings``);
- for the functions that send people to the dashboard (the account API, alerts), its address (``DashboardSettings``).

The ingest functions do not use it: their settings are a dataclass, without pydantic-settings (docs/decisions.md D12).
"""

from __future__ import annotations

import re
from decimal import Decimal, InvalidOperation

from pydantic import Field, field_validator
from pydantic_settings import BaseSettings, PydanticBaseSettingsSource, SettingsConfigDict

from kilo_billing.aws import CallBudget

# Monday .. Sunday, as kilo_billing.budgets.DEFAULT_WEEKDAY_WEIGHTS (a test holds the two equal; importing budgets
# here would load the price book and rating for every function's settings)
DEFAULT_WEEKDAY_WEIGHTS_TEXT = "1,1,1,1,1,0.4,0.4"
# the US, Canada, the UK, Ireland, Australia, New Zealand: kilo_billing.sms_regions.DEFAULT_SMS_REGIONS (a test holds
# the two equal; importing sms_regions here would load it for every function's settings)
DEFAULT_SMS_REGIONS_TEXT = "US,CA,GB,IE,AU,NZ"
# the local stack's dashboard: the template's ``DashboardUrl`` default (tests/infra holds the two equal)
DEFAULT_DASHBOARD_URL = "http://127.0.0.1:8000/"
_REGION = re.compile(r"[A-Z]{2}")
# not ISO 3166 codes, though often written for them: the list would silently refuse their numbers
_NOT_ISO = {"UK": "GB", "EL": "GR"}


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


def parse_regions(text: str) -> frozenset[str]:
    """``SMS_REGIONS``' value (comma-separated ISO 3166 alpha-2 codes, any case, spaces ignored) as a set;
    ``ValueError`` naming what is wrong (an empty entry, not two letters, "UK" for "GB")."""
    entries = [entry.strip().upper() for entry in text.split(",")]
    bad = [entry for entry in entries if not _REGION.fullmatch(entry)]
    if bad:
        raise ValueError(f"regions are ISO 3166 alpha-2 codes, comma-separated (e.g. US,CA,GB): not {bad}")
    misnamed = [f"{entry} (the ISO code is {_NOT_ISO[entry]})" for entry in entries if entry in _NOT_ISO]
    if misnamed:
        raise ValueError(f"regions are ISO 3166 alpha-2 codes: not {', '.join(misnamed)}")
    return frozenset(entries)


class SmsSettings(FunctionSettings):
    """Settings of a function that texts numbers (the account API's codes, the alerts' SMS): the one list of regions
    SMS goes to (``kilo_billing.sms_regions``; the template sets both functions from its ``SmsRegions``)."""

    # ISO 3166 alpha-2 codes, comma-separated: a number is texted only when libphonenumber gives it one of these
    # regions (a toll-fraud guard, D221). Add a region when the product serves it.
    sms_regions: str = DEFAULT_SMS_REGIONS_TEXT

    @field_validator("sms_regions")
    @classmethod
    def _iso_regions(cls, value: str) -> str:
        parse_regions(value)  # its ValueError names what is wrong
        return value

    @property
    def sms_region_set(self) -> frozenset[str]:
        """``sms_regions`` as a set of upper-case codes."""
        return parse_regions(self.sms_regions)


class DashboardSettings(FunctionSettings):
    """Settings of a function that sends people to the dashboard - the account API (where Stripe's Checkout and
    Billing Portal pages return), the alerts (what an email links: Billing, Pay with crypto): its address,
    ``DASHBOARD_URL`` (the template sets both functions from its ``DashboardUrl``). Its hash routes are appended
    (``<dashboard>#/billing``), so it ends the way the template writes it."""

    dashboard_url: str = Field(default=DEFAULT_DASHBOARD_URL, min_length=1)
