"""Settings of the alerts function (pydantic-settings: read once from the environment, validated, cached). Names and
addresses only; nothing secret."""

from __future__ import annotations

from decimal import Decimal
from functools import cache

from pydantic import Field, field_validator

from kilo_alerts.abuse import AbuseThresholds
from kilo_billing.settings import DashboardSettings, ForecastSettings, SmsSettings


class AlertSettings(ForecastSettings, SmsSettings, DashboardSettings):
    """The base's AWS call budget, secret reuse and weekday weights (``FORECAST_WEEKDAY_WEIGHTS``), the regions SMS
    goes to (``SMS_REGIONS``, the account API's too: another number's alert goes by email, D221), the dashboard
    (``DASHBOARD_URL``, the account API's too: an email without a page of its own links the dashboard's page, D249),
    and:"""

    alerts_table_name: str  # delivery records (claims and outcomes)
    usage_table_name: str  # account profiles: name, email, phone, alert preferences
    alert_sender_email: str = Field(min_length=3)  # a verified SES identity (the template scopes ses:SendEmail to it)
    ses_configuration_set: str = ""  # bounces/complaints/suppression go through it
    alert_preferences_url: str = Field(min_length=1)  # the account's alert preferences page (in every message)
    sms_sender_id: str = ""  # where carriers support it
    sms_daily_cap_per_account: int = Field(default=10, ge=1, le=1000)  # SMS to one account per UTC day (email: none)
    # a pending claim older than this is taken over: above the function's 60 s timeout (a live holder is never
    # overtaken), below the alerts queue's 360 s visibility timeout (a redelivered record finds a crashed claim stale)
    claim_lease_minutes: int = Field(default=5, ge=2, le=5)
    # the alerts queue's maxReceiveCount (template.yaml, tests/infra): its last receive sends a failing SMS by email
    alerts_queue_max_receives: int = Field(default=5, ge=1, le=1000)
    # hard limit enforcement: LiveKit's RoomService, the grace between audio-only and removal, the queue the removal
    # step is put on (this function's own queue, delayed)
    livekit_url: str = ""
    livekit_keys_secret_name: str = ""
    # 0 is allowed (the template's MinValue): the removal step does not trust the open-sessions index to have caught up
    # with the audio-only step's read (a participant it narrowed is looked for in its room, D262)
    enforcement_grace_seconds: int = Field(default=120, ge=0, le=900)
    # the alerts function's own queue: the removal step's (never a queue records are refused from, D366 amended (fq2))
    alerts_queue_url: str = ""
    # the forecast's re-checks (D366) the operator checks put on their own queue (its URL; the alerts function takes
    # only BudgetForecastDue.v1 from the queue it names - none when blank, D366 amended (fq2): never a reason to stop
    # the real alerts, so a blank one is taken and the alerts handler says it (an error line per cold start, a metric
    # each invocation, alarmed; amended (sm))), at most this many per run, their delays spread over this many seconds
    # (the run's 15 minutes; 0 on the local stack: SQS delays are real time)
    forecast_rechecks_queue_url: str = ""
    forecast_rechecks_per_run: int = Field(default=100, ge=1, le=1000)
    forecast_recheck_spread_seconds: int = Field(default=900, ge=0, le=900)
    roomservice_timeout_seconds: float = Field(default=5.0, gt=0)
    # operator alerts (the operator topic) and the abuse signals' thresholds (kilo_alerts.abuse.AbuseThresholds)
    operator_topic_arn: str = ""
    abuse_auto_hold: bool = False  # put free (Personal) accounts a holding signal flags on abuse_hold
    abuse_concurrent_sessions_per_identity: int = Field(default=4, ge=2)
    abuse_short_connection_seconds: int = Field(default=60, ge=1)
    abuse_storm_connections: int = Field(default=30, ge=2)
    abuse_storm_window_minutes: int = Field(default=60, ge=1, le=24 * 60)
    abuse_spike_factor: Decimal = Field(default=Decimal(5), gt=1)
    abuse_spike_min_cost_usd: Decimal = Field(default=Decimal(20), ge=0)
    abuse_baseline_months: int = Field(default=3, ge=1, le=12)
    abuse_free_accounts_per_fingerprint: int = Field(default=3, ge=2)
    abuse_failed_payments: int = Field(default=3, ge=1)
    abuse_failed_payments_window_days: int = Field(default=30, ge=1)
    # every AWS call (the base's timeouts): inside the function's 60 s timeout for a batch of 10 events x 2 channels
    aws_max_attempts: int = Field(default=2, ge=1, le=5)

    @field_validator("forecast_rechecks_queue_url")
    @classmethod
    def _stripped(cls, value: str) -> str:
        return value.strip()  # spaces alone are blank: the handler tells them as it tells an empty value

    @property
    def abuse_thresholds(self) -> AbuseThresholds:
        return AbuseThresholds(
            concurrent_sessions_per_identity=self.abuse_concurrent_sessions_per_identity,
            short_connection_seconds=self.abuse_short_connection_seconds,
            storm_connections=self.abuse_storm_connections,
            storm_window_minutes=self.abuse_storm_window_minutes,
            spike_factor=self.abuse_spike_factor,
            spike_min_cost_usd=self.abuse_spike_min_cost_usd,
            baseline_months=self.abuse_baseline_months,
            free_accounts_per_fingerprint=self.abuse_free_accounts_per_fingerprint,
            failed_payments=self.abuse_failed_payments,
            failed_payments_window_days=self.abuse_failed_payments_window_days,
        )


@cache
def settings() -> AlertSettings:
    return AlertSettings()  # values come from the environment
