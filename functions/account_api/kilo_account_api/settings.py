"""Settings of the account API (pydantic-settings, on the layer's base: read once from the environment, validated,
cached). Table names, the Stripe key's secret name and the dashboard's URLs; secrets are read from Secrets Manager at
runtime."""

from __future__ import annotations

from decimal import Decimal
from functools import cache

from pydantic import Field

from kilo_billing.settings import DashboardSettings, ForecastSettings, SmsSettings


class AccountApiSettings(ForecastSettings, SmsSettings, DashboardSettings):
    """The base's AWS call budget, secret reuse and weekday weights (``FORECAST_WEEKDAY_WEIGHTS``, the alerts
    function's setting of the same name and format, for the weekday-aware forecast), the regions SMS goes to
    (``SMS_REGIONS``, the alerts function's too: a number is saved and texted a code only in them, D221), the
    dashboard (``DASHBOARD_URL``, the alerts function's too: where Stripe's hosted pages send the customer back), and:
    """

    usage_table_name: str  # profiles, rating's sessions and counters, our invoices, the spend item
    members_table_name: str  # ACCOUNT#<id> / MEMBER#<user>
    # the alerts function's table: the erasure gives old delivery records their contact's pseudonym (D203);
    # empty: none to rewrite
    alerts_table_name: str = ""
    # the Cognito group whose users get the operator claim at sign-in (the pre-token trigger, ``sign_in``)
    operator_group: str = "kilo-operators"
    # Secrets Manager: JSON {"api_key": "sk_..." | "rk_...", optional "api_base"} (the invoice functions' secret)
    stripe_api_key_secret_name: str = ""
    stripe_max_network_retries: int = Field(default=1, ge=0, le=5)
    # each Stripe attempt's timeout (the SDK's default, 80 s, outlasts the function's 29 s): 2 attempts of 8 s and the
    # SDK's back-off (0.5 s) are 16.5 s at worst. Read from ACCOUNT_API_STRIPE_TIMEOUT_SECONDS: the invoice functions'
    # STRIPE_TIMEOUT_SECONDS is 10, and the local runtime runs every function in one environment (D402)
    stripe_timeout_seconds: float = Field(default=8, gt=0, le=12, validation_alias="ACCOUNT_API_STRIPE_TIMEOUT_SECONDS")
    # Secrets Manager: JSON {"key": "<random>"}, the phone codes' HMAC key (the template creates it; D160)
    phone_code_key_secret_name: str = ""
    # a success/cancel/return URL a client sends must be on the dashboard's origin (``dashboard_url``) or one of
    # these (comma-separated, e.g. a custom domain beside the CloudFront one): ``logic.check_return_url``
    extra_dashboard_origins: str = ""

    @property
    def dashboard_origins(self) -> tuple[str, ...]:
        """The origins Stripe's pages may send the customer back to: the dashboard's, then the extra ones."""
        extra = (origin.strip() for origin in self.extra_dashboard_origins.split(","))
        return (self.dashboard_url, *(origin for origin in extra if origin))

    # recommendations (kilo_account_api.recommendations): a room this large is an audience
    audience_min_participants: int = Field(default=10, ge=2)
    # share of data transfer saved when subscribers receive a lower simulcast layer (LiveKit's medium layer is about
    # half the bitrate of the high one); an assumption stated with the recommendation
    simulcast_data_saving: Decimal = Field(default=Decimal("0.5"), gt=0, lt=1)
    # how long an invitation to an account may be accepted (POST .../members invites; D200)
    invitation_days: int = Field(default=7, ge=1, le=30)
    # closed sessions that began this long before a period are still read for it (a call across the month end)
    session_lookback_days: int = Field(default=35, ge=1, le=400)


@cache
def settings() -> AccountApiSettings:
    return AccountApiSettings()  # values come from the environment
