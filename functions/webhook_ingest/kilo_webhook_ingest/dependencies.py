"""What each ingest handler builds once per container (on its first request, not at import): settings, the event store,
the route's secret source, and for the usage API the account directory, for Stripe the bus publisher. Every AWS client
carries the route's time budget (``settings.py``)."""

from __future__ import annotations

from functools import cache
from typing import TYPE_CHECKING, Any, NamedTuple

from kilo_webhook_ingest.settings import IngestSettings, SettingsError, settings

if TYPE_CHECKING:
    from kilo_billing.accounts import AccountDirectory
    from kilo_billing.aws import CallBudget
    from kilo_billing.entitlements import EntitlementPolicy, EntitlementSource
    from kilo_billing.publisher import EventPublisher
    from kilo_webhook_ingest.ports import EventStore, RateLimiter, SecretSource


class LiveKitDependencies(NamedTuple):
    """What every ingest route needs - its settings, the event store and the secrets that verify its callers - and all
    the LiveKit webhook needs. Each route's bundle is its own NamedTuple (D162): creating a frozen dataclass costs
    ~0.5 ms of every cold start in Python 3.13, a NamedTuple ~0.1 ms, and no route needs another's bundle."""

    settings: IngestSettings
    store: EventStore
    secrets: SecretSource


class UsageDependencies(NamedTuple):
    settings: IngestSettings
    store: EventStore
    secrets: SecretSource
    accounts: AccountDirectory
    entitlements: EntitlementSource  # the entitlement check's one read (profile + spend item)
    entitlement_policy: EntitlementPolicy
    limiter: RateLimiter | None = None  # the per-client limit of /v1/usage (None: not configured)


class StripeDependencies(NamedTuple):
    settings: IngestSettings
    store: EventStore
    secrets: SecretSource
    publisher: EventPublisher


def _store_and_secrets(
    config: IngestSettings, budget: CallBudget, validate: bool = True, **secret_names: str
) -> tuple[Any, EventStore, SecretSource]:
    """The route's DynamoDB client (shared by its adapters), event store and secret source."""
    from kilo_billing.aws import client  # noqa: PLC0415 - boto3 loads here, on the first request
    from kilo_webhook_ingest.adapters import DynamoEventStore, SecretsManagerSource  # noqa: PLC0415

    dynamodb = client("dynamodb", budget, validate=validate)
    secrets = SecretsManagerSource(client("secretsmanager", budget), secret_names, config.secret_max_age_seconds)
    return dynamodb, DynamoEventStore(dynamodb, config.events_table), secrets


@cache
def livekit() -> LiveKitDependencies:
    config = settings()
    # the hot path's one call is DynamoEventStore's fixed conditional PutItem: no client-side parameter validation
    _, store, secrets = _store_and_secrets(
        config, config.livekit_budget, validate=False, livekit=config.livekit_keys_secret
    )
    return LiveKitDependencies(config, store, secrets)


@cache
def usage() -> UsageDependencies:
    from kilo_billing.account_store import DynamoAccountDirectory  # noqa: PLC0415
    from kilo_billing.entitlement_store import DynamoEntitlements  # noqa: PLC0415
    from kilo_billing.entitlements import EntitlementPolicy  # noqa: PLC0415

    config = settings()
    if not config.usage_table:
        raise SettingsError("USAGE_TABLE_NAME is required by the usage API (account registrations)")
    dynamodb, store, secrets = _store_and_secrets(config, config.usage_budget, usage=config.usage_secrets_secret)
    accounts = DynamoAccountDirectory(dynamodb, config.usage_table)
    from kilo_webhook_ingest.adapters import DynamoRateLimiter  # noqa: PLC0415

    entitlements = DynamoEntitlements(dynamodb, config.usage_table)
    limiter = (
        DynamoRateLimiter(dynamodb, config.rate_limit_table, config.usage_requests_per_minute)
        if config.rate_limit_table
        else None
    )
    return UsageDependencies(config, store, secrets, accounts, entitlements, EntitlementPolicy(), limiter)


@cache
def stripe() -> StripeDependencies:
    from kilo_billing.aws import client  # noqa: PLC0415
    from kilo_billing.events import BUS_SOURCE_INGEST  # noqa: PLC0415
    from kilo_billing.publisher import EventBridgePublisher  # noqa: PLC0415

    config = settings()
    _, store, secrets = _store_and_secrets(config, config.stripe_budget, stripe=config.stripe_secret)
    publisher = EventBridgePublisher(client("events", config.stripe_budget), config.event_bus, BUS_SOURCE_INGEST)
    return StripeDependencies(config, store, secrets, publisher)
