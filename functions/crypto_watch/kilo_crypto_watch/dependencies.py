"""What the crypto handlers build once per container: settings, the chains (RPC URLs from the secret), the crypto
table's stores, the publisher, settlement (the watchers' ``PaymentSink`` and ``ReferenceSource``) and the rates - every
AWS client with the settings' time budget. Nothing is built at import."""

from __future__ import annotations

from datetime import timedelta
from functools import cache
from typing import TYPE_CHECKING

from kilo_crypto_watch.settings import CryptoSettings, settings

if TYPE_CHECKING:
    from kilo_billing.member_roles import StoredRoles
    from kilo_billing.publisher import EventPublisher
    from kilo_crypto_watch.adapters import DynamoCryptoStore, DynamoCursorStore
    from kilo_crypto_watch.logic import ApiPorts
    from kilo_crypto_watch.model import ChainConfig
    from kilo_crypto_watch.ports import PriceSource, TransactionInspector
    from kilo_crypto_watch.rates import CheckedRates
    from kilo_crypto_watch.settlement import Settlement


@cache
def _dynamodb() -> object:
    from kilo_billing.aws import client  # noqa: PLC0415

    return client("dynamodb", settings().call_budget)


class ChainsUnavailableError(RuntimeError):
    """The chains' RPC URLs cannot be read now (the secret is missing, unreadable or malformed)."""


@cache
def chains() -> dict[str, ChainConfig]:
    """The configured chains by key, with RPC URLs from the ``RPC_SECRET_NAME`` secret when one is named."""
    return settings().chains(rpc_urls())


@cache
def rpc_urls() -> dict[str, str]:
    """The ``RPC_SECRET_NAME`` secret's ``{chain key: RPC URL}`` (empty when none is named)."""
    config = settings()
    urls: dict[str, str] = {}
    if config.rpc_secret_name:
        from aws_lambda_powertools.utilities.parameters import SecretsProvider  # noqa: PLC0415

        from kilo_billing.aws import client  # noqa: PLC0415

        try:
            secret = SecretsProvider(boto3_client=client("secretsmanager", config.call_budget)).get(
                config.rpc_secret_name, transform="json", max_age=config.secret_max_age_seconds
            )
        except Exception as exc:  # Powertools' GetParameterError / TransformParameterError, from any cause
            raise ChainsUnavailableError(f"secret {config.rpc_secret_name} cannot be read") from exc
        if not isinstance(secret, dict):
            raise ChainsUnavailableError(f"secret {config.rpc_secret_name} must be a JSON object of chain key: RPC URL")
        urls = {str(key): str(url) for key, url in secret.items()}
    return urls


@cache
def store() -> DynamoCryptoStore:
    from kilo_crypto_watch.adapters import DynamoCryptoStore  # noqa: PLC0415

    return DynamoCryptoStore(_dynamodb(), settings().crypto_table_name)


@cache
def roles() -> StoredRoles:
    """The callers' roles as the members table holds them (every admin route checks it: D208)."""
    from kilo_billing.member_roles import DynamoStoredRoles  # noqa: PLC0415

    return DynamoStoredRoles(_dynamodb(), settings().members_table_name)


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
    return EventBridgePublisher(client("events", config.call_budget, lazy=True), config.event_bus_name, SOURCE_CRYPTO)


# Price sources: the on-chain one first (Chainlink: ``price_source()`` of the EVM wiring module, by convention, imported
# only when a rate is needed - this module never imports web3), then the exchange's spot API. Sources registered with
# ``add_price_source`` replace the conventional on-chain one (tests; another wiring).
PRICE_SOURCE_MODULE = "kilo_crypto_watch.evm_handler"
_EXTRA_SOURCES: list[PriceSource] = []


def add_price_source(source: PriceSource) -> None:
    """Register a price source ahead of the exchange (instead of the conventional on-chain one)."""
    _EXTRA_SOURCES.append(source)
    for built in (rates, settlement, api):
        built.cache_clear()


def _on_chain_sources() -> list[PriceSource]:
    if _EXTRA_SOURCES:
        return list(_EXTRA_SOURCES)
    import importlib  # noqa: PLC0415

    try:
        factory = importlib.import_module(PRICE_SOURCE_MODULE).price_source
    except (ImportError, AttributeError):
        return []  # no on-chain source deployed: quotes are refused, naming the missing second source
    source: PriceSource = factory()
    return [source]


def price_sources(config: CryptoSettings | None = None) -> list[PriceSource]:
    from kilo_crypto_watch.adapters import ExchangeSpotPrice  # noqa: PLC0415

    config = config or settings()
    exchange = ExchangeSpotPrice(
        config.exchange_price_url,
        config.exchange_source_name,
        config.exchange_timeout_seconds,
        config.exchange_heartbeat_seconds,
    )
    return [*_on_chain_sources(), exchange]


@cache
def rates() -> CheckedRates:
    from kilo_crypto_watch.rates import CheckedRates, RatePolicy  # noqa: PLC0415

    return CheckedRates(price_sources(), RatePolicy.from_settings(settings()))


@cache
def settlement() -> Settlement:
    """The watchers' ``PaymentSink`` and ``ReferenceSource``."""
    from kilo_crypto_watch.settlement import Settlement  # noqa: PLC0415

    return Settlement(store(), publisher(), chains(), rates(), settings().settlement_policy)


# The fast path's TransactionInspector per chain kind: the watcher module of that kind (evm_handler.py,
# solana_handler.py, owned by the EVM and Solana work) exposes ``inspector(chain: ChainConfig) ->
# TransactionInspector``; it is imported only when a customer submits a transaction on such a chain.
INSPECTOR_MODULES: dict[str, str] = {
    "evm": "kilo_crypto_watch.evm_handler",
    "solana": "kilo_crypto_watch.solana_handler",
}


class FastPathUnavailableError(RuntimeError):
    """No inspector is wired for the chain's kind (a deployment without that watcher)."""


def inspector(chain: ChainConfig) -> TransactionInspector:
    import importlib  # noqa: PLC0415

    try:
        module = importlib.import_module(INSPECTOR_MODULES[chain.kind])
        factory = module.inspector
    except (KeyError, ImportError, AttributeError) as exc:
        raise FastPathUnavailableError(f"no transaction inspector for {chain.kind} chains") from exc
    made: TransactionInspector = factory(chain)
    return made


@cache
def api() -> ApiPorts:
    """The crypto routes' ports."""
    from kilo_crypto_watch.adapters import Web3ContractSignatures  # noqa: PLC0415
    from kilo_crypto_watch.logic import ApiPorts  # noqa: PLC0415
    from kilo_crypto_watch.quotes import QuotePolicy  # noqa: PLC0415
    from kilo_crypto_watch.wallets import SignInPolicy  # noqa: PLC0415

    config = settings()
    return ApiPorts(
        store=store(),
        settlement=settlement(),
        rates=rates(),
        chains=chains(),
        inspector=inspector,
        quote_policy=QuotePolicy(
            expiry=timedelta(minutes=config.quote_expiry_minutes),
            monitoring=timedelta(hours=config.quote_monitoring_hours),
            label=config.payment_label,
        ),
        signin=SignInPolicy(
            domain=config.signin_domain,
            uri=config.signin_uri,
            nonce_ttl=timedelta(minutes=config.nonce_ttl_minutes),
            solana_chain_id=config.siws_chain_id,
        ),
        contracts=Web3ContractSignatures() if config.erc1271_enabled else None,
    )


def clear_caches() -> None:
    """Forget everything built (tests; a new configuration)."""
    for built in (_dynamodb, rpc_urls, chains, store, roles, cursors, publisher, rates, settlement, api):
        built.cache_clear()
