"""What the crypto handlers build once per container: settings, the chains (RPC URLs from the secret), the crypto
table's stores, the publisher, settlement (the watchers' ``PaymentSink`` and ``ReferenceSource``) and the rates - every
AWS client with the settings' time budget. Nothing is built at import."""

from __future__ import annotations

from functools import cache
from typing import TYPE_CHECKING

from kilo_crypto_watch.settings import CryptoSettings, settings

if TYPE_CHECKING:
    from kilo_billing.publisher import EventPublisher
    from kilo_crypto_watch.adapters import DynamoCryptoStore, DynamoCursorStore
    from kilo_crypto_watch.model import ChainConfig
    from kilo_crypto_watch.ports import PriceSource
    from kilo_crypto_watch.rates import CheckedRates
    from kilo_crypto_watch.settlement import Settlement


@cache
def _dynamodb() -> object:
    from kilo_billing.aws import client  # noqa: PLC0415

    return client("dynamodb", settings().call_budget)


@cache
def chains() -> dict[str, ChainConfig]:
    """The configured chains by key, with RPC URLs from the ``RPC_SECRET_NAME`` secret when one is named."""
    config = settings()
    urls: dict[str, str] = {}
    if config.rpc_secret_name:
        from aws_lambda_powertools.utilities.parameters import SecretsProvider  # noqa: PLC0415

        from kilo_billing.aws import client  # noqa: PLC0415

        secret = SecretsProvider(boto3_client=client("secretsmanager", config.call_budget)).get(
            config.rpc_secret_name, transform="json", max_age=config.secret_max_age_seconds
        )
        if not isinstance(secret, dict):
            raise ValueError(f"secret {config.rpc_secret_name} must be a JSON object of chain key: RPC URL")
        urls = {str(key): str(url) for key, url in secret.items()}
    return config.chains(urls)


@cache
def store() -> DynamoCryptoStore:
    from kilo_crypto_watch.adapters import DynamoCryptoStore  # noqa: PLC0415

    return DynamoCryptoStore(_dynamodb(), settings().crypto_table_name)


@cache
def cursors() -> DynamoCursorStore:
    from kilo_crypto_watch.adapters import DynamoCursorStore  # noqa: PLC0415

    return DynamoCursorStore(_dynamodb(), settings().crypto_table_name)


@cache
def publisher() -> EventPublisher:
    from kilo_billing.aws import client  # noqa: PLC0415
    from kilo_billing.contracts import SOURCE_CRYPTO  # noqa: PLC0415
    from kilo_billing.publisher import EventBridgePublisher  # noqa: PLC0415

    config = settings()
    return EventBridgePublisher(client("events", config.call_budget), config.event_bus_name, SOURCE_CRYPTO)


# Price sources: the exchange's spot API here; the on-chain Chainlink source (chainlink.py, EVM) is appended by
# whoever registers it with ``add_price_source`` (the EVM wiring), so this module never imports web3.
_EXTRA_SOURCES: list[PriceSource] = []


def add_price_source(source: PriceSource) -> None:
    _EXTRA_SOURCES.append(source)
    rates.cache_clear()


def price_sources(config: CryptoSettings | None = None) -> list[PriceSource]:
    from kilo_crypto_watch.adapters import ExchangeSpotPrice  # noqa: PLC0415

    config = config or settings()
    exchange = ExchangeSpotPrice(
        config.exchange_price_url,
        config.exchange_source_name,
        config.exchange_timeout_seconds,
        config.exchange_heartbeat_seconds,
    )
    return [*_EXTRA_SOURCES, exchange]


@cache
def rates() -> CheckedRates:
    from kilo_crypto_watch.rates import CheckedRates, RatePolicy  # noqa: PLC0415

    return CheckedRates(price_sources(), RatePolicy.from_settings(settings()))


@cache
def settlement() -> Settlement:
    """The watchers' ``PaymentSink`` and ``ReferenceSource``."""
    from kilo_crypto_watch.settlement import Settlement  # noqa: PLC0415

    return Settlement(store(), publisher(), chains(), rates(), settings().settlement_policy)
