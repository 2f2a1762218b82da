"""The cached factories the handlers use: settings and adapters, built once per container on first use.

AWS clients come from ``kilo_billing.aws.client`` with the settings' call budget, so every call ends (answers, fails
or times out) well inside the function's own timeout and the handler can log and count the failure itself."""

from __future__ import annotations

from dataclasses import dataclass
from functools import cache

from kilo_billing.aws import client, livekit_credentials
from kilo_billing.catalog import default_catalog
from kilo_billing.contracts import SOURCE_RATING
from kilo_billing.publisher import EventBridgePublisher
from kilo_rate_usage.adapters import DynamoUsageRepository, LiveKitRoomDirectory, SqsPoisonSink
from kilo_rate_usage.model import RatingConfig
from kilo_rate_usage.settings import RatingSettings, settings


@dataclass(frozen=True, slots=True)
class Rating:
    settings: RatingSettings
    repo: DynamoUsageRepository
    publisher: EventBridgePublisher
    poison: SqsPoisonSink
    config: RatingConfig


@dataclass(frozen=True, slots=True)
class Sweeper:
    settings: RatingSettings
    store: DynamoUsageRepository
    directory: LiveKitRoomDirectory
    publisher: EventBridgePublisher  # the periodic check of budgets and hard limits during calls
    config: RatingConfig


def usage_repository(config: RatingSettings) -> DynamoUsageRepository:
    return DynamoUsageRepository(
        client("dynamodb", config.call_budget), config.usage_table_name, config.events_table_name
    )


def publisher(config: RatingSettings) -> EventBridgePublisher:
    """The bus publisher; its client is made by the first publish (a batch that crosses no threshold has none)."""
    return EventBridgePublisher(client("events", config.call_budget, lazy=True), config.event_bus_name, SOURCE_RATING)


@cache
def rating() -> Rating:
    config = settings()
    return Rating(
        settings=config,
        repo=usage_repository(config),
        publisher=publisher(config),
        poison=SqsPoisonSink(client("sqs", config.call_budget, lazy=True), config.poison_queue_url),
        config=RatingConfig(config.attribution, default_catalog().for_period),
    )


@cache
def sweeper() -> Sweeper:
    config = settings()
    # every configured (API key, secret), re-read at most every secret_max_age_seconds (rotation)
    credentials = livekit_credentials(
        config.livekit_keys_secret_name, config.secret_max_age_seconds, config.call_budget
    )

    directory = LiveKitRoomDirectory(
        config.livekit_url,
        credentials,
        request_timeout=config.roomservice_request_timeout_seconds,
        budget_seconds=config.roomservice_budget_seconds,
        concurrency=config.roomservice_concurrency,
    )
    return Sweeper(
        settings=config,
        store=usage_repository(config),
        directory=directory,
        publisher=publisher(config),
        config=RatingConfig(config.attribution, default_catalog().for_period),
    )
