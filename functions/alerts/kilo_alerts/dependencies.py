"""What the alerts handler builds once per container (on its first event): settings, the account directory, the
ledgers, the mailer and the texter, the spend item, the open sessions, RoomService, the removal scheduler and the
month to date (the forecast's quantities) - every AWS client with the settings' time budget, a call that sends with
one attempt (``sending_budget``)."""

from __future__ import annotations

from dataclasses import dataclass, replace
from functools import cache
from typing import TYPE_CHECKING

from kilo_alerts.operator import OperatorPolicy, OperatorPorts
from kilo_alerts.settings import AlertSettings, settings

if TYPE_CHECKING:  # the alert delivery's modules load with it (``alerts()``), not with the operator checks
    from collections.abc import Callable

    from kilo_alerts.adapters import SesMailer, SnsTexter, SqsRedelivery
    from kilo_alerts.bounces import EmailMarks
    from kilo_alerts.logic import AlertPorts, AlertsPolicy
    from kilo_alerts.rechecks import ForecastRechecks, RecheckQueue
    from kilo_billing.aws import CallBudget


@dataclass(frozen=True, slots=True)
class AlertDependencies:
    settings: AlertSettings
    ports: AlertPorts
    policy: AlertsPolicy
    redelivery: SqsRedelivery  # a delivery that found the enforcement's turn held comes back in seconds


@cache
def alerts() -> AlertDependencies:
    from kilo_alerts.adapters import (  # noqa: PLC0415
        DynamoDeliveryLedger,
        DynamoEnforcementLedger,
        DynamoForecastRechecks,
        DynamoOpenSessions,
        LiveKitRoomControl,
        SqsRedelivery,
        SqsRemovalScheduler,
    )
    from kilo_alerts.enforcement import EnforcementPolicy  # noqa: PLC0415
    from kilo_alerts.logic import AlertPorts, AlertsPolicy, DeliveryPolicy  # noqa: PLC0415
    from kilo_billing.account_store import DynamoAccountDirectory  # noqa: PLC0415
    from kilo_billing.aws import client, livekit_credentials  # noqa: PLC0415
    from kilo_billing.entitlement_store import DynamoEntitlements  # noqa: PLC0415
    from kilo_billing.month_to_date_store import DynamoMonthToDate  # noqa: PLC0415
    from kilo_billing.usage_signals_store import DynamoUsageSignals  # noqa: PLC0415

    config = settings()
    budget = config.call_budget
    dynamodb = client("dynamodb", budget)
    credentials = livekit_credentials(config.livekit_keys_secret_name, config.secret_max_age_seconds, budget)

    entitlements = DynamoEntitlements(dynamodb, config.usage_table_name)
    directory = DynamoAccountDirectory(dynamodb, config.usage_table_name)
    sqs = client("sqs", budget, lazy=True)
    ports = AlertPorts(
        directory=directory,
        ledger=DynamoDeliveryLedger(dynamodb, config.alerts_table_name),
        mailer=mailer(config),
        texter=texter(config),
        spend=entitlements,
        entitlements=entitlements,
        sessions=DynamoOpenSessions(dynamodb, config.usage_table_name),
        rooms=LiveKitRoomControl(config.livekit_url, credentials, config.roomservice_timeout_seconds),
        enforcement=DynamoEnforcementLedger(dynamodb, config.alerts_table_name),
        scheduler=SqsRemovalScheduler(sqs, config.alerts_queue_url),
        # the forecast's quantities: rating's counters (BatchGetItem) and open sessions (the open_sessions index)
        month=DynamoMonthToDate(
            dynamodb, config.usage_table_name, directory, DynamoUsageSignals(dynamodb, config.usage_table_name)
        ),
        # the forecast's re-check at its base: the row (conditional PutItem on the alerts table, D366)
        rechecks=DynamoForecastRechecks(dynamodb, config.alerts_table_name),
    )
    policy = AlertsPolicy(
        DeliveryPolicy(
            config.alert_preferences_url,
            config.claim_lease_minutes * 60_000,
            config.sms_daily_cap_per_account,
            config.sms_region_set,
            dashboard_url=config.dashboard_url,
        ),
        EnforcementPolicy(config.enforcement_grace_seconds),
        config.weekday_weights,
        # operator events on the alerts queue: the queue's claim lease (a crashed claim is stale at the redelivery)
        operator_policy(config, config.claim_lease_minutes * 60_000),
    )
    ports = replace(ports, operator=operator_ports(config, scheduled=False))
    return AlertDependencies(config, ports, policy, SqsRedelivery(sqs, config.alerts_queue_url))


def sending_budget(budget: CallBudget) -> CallBudget:
    """``budget`` with one attempt, for a call that sends (SES SendEmail, SNS Publish): neither takes an idempotency
    key, so botocore's own retry of a call the service took but answered late (the read timeout) would send the
    message again, outside the ledger's claim. A failure for now is the queue's to retry, through the ledger
    (D380); reads (the opt-out list, the suppression list) keep ``budget``'s retries."""
    return replace(budget, max_attempts=1)


def mailer(config: AlertSettings) -> SesMailer:
    from kilo_alerts.adapters import SesMailer  # noqa: PLC0415
    from kilo_billing.aws import client  # noqa: PLC0415

    return SesMailer(
        client("sesv2", sending_budget(config.call_budget), lazy=True),
        config.alert_sender_email,
        config.ses_configuration_set,
        config.alert_preferences_url,
        reader=client("sesv2", config.call_budget, lazy=True),  # the suppression list (D381): a read, retried
    )


def texter(config: AlertSettings) -> SnsTexter:
    from kilo_alerts.adapters import SnsTexter  # noqa: PLC0415
    from kilo_billing.aws import client  # noqa: PLC0415

    return SnsTexter(
        client("sns", sending_budget(config.call_budget), lazy=True),
        config.sms_sender_id,
        reader=client("sns", config.call_budget, lazy=True),  # the opt-out check: a read, retried
    )


def operator_policy(config: AlertSettings, lease_ms: int | None = None) -> OperatorPolicy:
    """``lease_ms``: the claims' lease; ``None`` keeps OperatorPolicy's 15 minutes (the scheduled checks run up to
    300 s)."""
    from kilo_billing.catalog import default_catalog  # noqa: PLC0415

    book = default_catalog().latest
    policy = OperatorPolicy(
        book=book,
        is_free=lambda tier: book.tier(tier).monthly_fee == 0,
        thresholds=config.abuse_thresholds,
        auto_hold=config.abuse_auto_hold,
    )
    return policy if lease_ms is None else replace(policy, lease_ms=lease_ms)


def operator_ports(config: AlertSettings, scheduled: bool) -> OperatorPorts:
    from kilo_alerts.adapters import (  # noqa: PLC0415
        DynamoMarginSnapshots,
        DynamoOperatorLedger,
        DynamoPaymentSignals,
        SnsOperatorNotifier,
    )
    from kilo_billing.account_store import DynamoAccountDirectory  # noqa: PLC0415
    from kilo_billing.aws import client  # noqa: PLC0415
    from kilo_billing.usage_signals_store import DynamoUsageSignals  # noqa: PLC0415

    dynamodb = client("dynamodb", config.call_budget)
    return OperatorPorts(
        ledger=DynamoOperatorLedger(dynamodb, config.alerts_table_name),
        notifier=SnsOperatorNotifier(
            client("sns", sending_budget(config.call_budget), lazy=True), config.operator_topic_arn
        ),
        directory=DynamoAccountDirectory(dynamodb, config.usage_table_name),
        payments=DynamoPaymentSignals(dynamodb, config.alerts_table_name),
        usage=DynamoUsageSignals(dynamodb, config.usage_table_name) if scheduled else None,
        snapshots=DynamoMarginSnapshots(dynamodb, config.alerts_table_name) if scheduled else None,
    )


@dataclass(frozen=True, slots=True)
class OperatorDependencies:
    settings: AlertSettings
    ports: OperatorPorts
    policy: OperatorPolicy


@cache
def operator_checks() -> OperatorDependencies:
    """The scheduled operator checks (abuse scan, daily margin): the usage reader and the snapshots too."""
    config = settings()
    return OperatorDependencies(config, operator_ports(config, scheduled=True), operator_policy(config))


@dataclass(frozen=True, slots=True)
class RecheckDependencies:
    settings: AlertSettings
    rechecks: ForecastRechecks
    queue: RecheckQueue


@cache
def forecast_rechecks() -> RecheckDependencies:
    """The operator checks' run queuing the forecast's re-checks due (D366): the rows (the alerts table's sparse
    index) and the re-checks' own queue (amended (fq): not the alerts queue)."""
    from kilo_alerts.adapters import DynamoForecastRechecks, SqsRecheckQueue  # noqa: PLC0415
    from kilo_billing.aws import client  # noqa: PLC0415

    config = settings()
    return RecheckDependencies(
        config,
        DynamoForecastRechecks(client("dynamodb", config.call_budget), config.alerts_table_name),
        SqsRecheckQueue(client("sqs", config.call_budget, lazy=True), config.forecast_rechecks_queue_url),
    )


@cache
def bounce_marks() -> EmailMarks:
    """The bounce handler's one port: the marks of addresses SES reported undeliverable, on the alerts table."""
    from kilo_alerts.marks import DynamoEmailMarks  # noqa: PLC0415 (not kilo_alerts.adapters: off its cold start)
    from kilo_billing.aws import client  # noqa: PLC0415

    config = settings()
    return DynamoEmailMarks(client("dynamodb", config.call_budget), config.alerts_table_name)


def bounce_replay() -> Callable[[str], None]:
    """The bounce handler's other port: a bounced required alert's event sent back to the alerts queue (D408)."""
    from kilo_alerts.marks import SqsReplay  # noqa: PLC0415
    from kilo_billing.aws import client  # noqa: PLC0415

    config = settings()
    return SqsReplay(client("sqs", config.call_budget), config.alerts_queue_url)
