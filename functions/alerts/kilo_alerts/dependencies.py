"""What the alerts handler builds once per container (on its first event): settings, the account directory, the
ledger, the mailer and the texter, every AWS client with the settings' time budget."""

from __future__ import annotations

from dataclasses import dataclass
from functools import cache

from kilo_alerts.logic import DeliveryPolicy
from kilo_alerts.ports import DeliveryLedger, Mailer, Texter
from kilo_alerts.settings import AlertSettings, settings
from kilo_billing.accounts import AccountDirectory


@dataclass(frozen=True, slots=True)
class AlertDependencies:
    settings: AlertSettings
    directory: AccountDirectory
    ledger: DeliveryLedger
    mailer: Mailer
    texter: Texter
    policy: DeliveryPolicy


@cache
def alerts() -> AlertDependencies:
    from kilo_alerts.adapters import DynamoDeliveryLedger, SesMailer, SnsTexter  # noqa: PLC0415
    from kilo_billing.account_store import DynamoAccountDirectory  # noqa: PLC0415
    from kilo_billing.aws import client  # noqa: PLC0415

    config = settings()
    budget = config.call_budget
    dynamodb = client("dynamodb", budget)
    return AlertDependencies(
        settings=config,
        directory=DynamoAccountDirectory(dynamodb, config.usage_table_name),
        ledger=DynamoDeliveryLedger(dynamodb, config.alerts_table_name),
        mailer=SesMailer(
            client("sesv2", budget),
            config.alert_sender_email,
            config.ses_configuration_set,
            config.alert_preferences_url,
        ),
        texter=SnsTexter(client("sns", budget), config.sms_sender_id),
        policy=DeliveryPolicy(config.alert_preferences_url, config.claim_lease_minutes * 60_000),
    )
