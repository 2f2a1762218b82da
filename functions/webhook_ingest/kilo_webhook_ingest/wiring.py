"""What every ingest handler builds once per container: settings, the event store, its verification secrets."""

from __future__ import annotations

from typing import Literal

from kilo_webhook_ingest.config import IngestSettings, settings
from kilo_webhook_ingest.secrets import ParametersSecretSource
from kilo_webhook_ingest.store import DynamoEventStore

Source = Literal["livekit", "usage", "stripe"]


def ingest_dependencies(source: Source) -> tuple[IngestSettings, DynamoEventStore, ParametersSecretSource]:
    """Built on first use (not at import); each handler caches the result and reads only its own secret."""
    import boto3  # noqa: PLC0415

    config = settings()
    store = DynamoEventStore(boto3.client("dynamodb"), config.events_table)
    name = {
        "livekit": config.livekit_keys_secret,
        "usage": config.usage_secrets_secret,
        "stripe": config.stripe_secret,
    }[source]
    secrets = ParametersSecretSource(**{source: name}, max_age=config.secret_max_age_seconds)
    return config, store, secrets
