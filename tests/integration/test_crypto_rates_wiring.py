"""The crypto API's rates as deployed: ``dependencies.rates()`` built from the environment alone reads the Chainlink
feed (``evm_handler.price_source()``, found by convention - no ``add_price_source`` call) on a real anvil node with the
committed test aggregator, and the exchange's spot API (the local exchange stand-in, Coinbase's shape), in that order;
the exchange guards the feed (more than 1 % apart: refused, naming both).

Hand-worked: the feed answers 300_000_000_000 at 8 decimals = $3,000.00; the exchange $3,012.50 is 0.4167 % above it
(inside 1 %), so the locked rate is the feed's $3,000.00; $3,031.00 is 1.03 % above: refused.
"""

from __future__ import annotations

import json
import time
from collections.abc import Iterator
from datetime import UTC, datetime
from decimal import Decimal

import pytest

from kilo_crypto_watch.rates import SourcesDisagreeError
from kilo_dev.crypto_local import ExchangeStandin
from tests.conftest import Stack
from tests.evm_chain import MERCHANT, Chain


@pytest.fixture
def exchange() -> Iterator[ExchangeStandin]:
    standin = ExchangeStandin({"ETH": Decimal("3012.50")}).start()
    yield standin
    standin.stop()


@pytest.fixture
def wired(chain: Chain, exchange: ExchangeStandin, monkeypatch: pytest.MonkeyPatch) -> Iterator[Chain]:
    from kilo_crypto_watch import dependencies, evm_handler  # noqa: PLC0415
    from kilo_crypto_watch import settings as crypto_settings  # noqa: PLC0415
    from kilo_dev import contracts  # noqa: PLC0415

    feed = chain.w3.eth.contract(address=chain.aggregator, abi=contracts.load("TestAggregator")["abi"])  # type: ignore[call-overload]
    tx = feed.functions.setAnswer(300_000_000_000, int(time.time())).transact({"from": chain.w3.eth.accounts[0]})
    chain.w3.eth.wait_for_transaction_receipt(tx, timeout=10)
    chains = [{"key": "ethereum", "rpc_url": chain.node.url, "merchant_address": MERCHANT, "usdc": chain.usdc,
               "chain_id": chain.node.chain_id}]  # fmt: skip
    monkeypatch.setenv("CRYPTO_CHAINS", json.dumps(chains))
    monkeypatch.setenv("RPC_SECRET_NAME", "")
    monkeypatch.setenv("PRICE_FEEDS", json.dumps({"ETH": {"chain": "ethereum", "address": chain.aggregator}}))
    monkeypatch.setenv("EXCHANGE_PRICE_URL", f"{exchange.url}/v2/prices/{{asset}}-USD/spot")
    crypto_settings.settings.cache_clear()
    dependencies.clear_caches()
    evm_handler.rpc.cache_clear()
    yield chain
    crypto_settings.settings.cache_clear()
    dependencies.clear_caches()


def test_given_the_deployed_wiring_then_a_rate_reads_chainlink_then_the_exchange_and_locks_the_feed(
    wired: Chain, exchange: ExchangeStandin
) -> None:
    from kilo_crypto_watch import dependencies  # noqa: PLC0415

    locked = dependencies.rates().lock("ETH", datetime.now(UTC))

    assert locked.price == Decimal("3000")
    assert [(r.source, r.price) for r in locked.readings] == [
        (f"chainlink:ethereum:{wired.aggregator}", Decimal("3000")),
        ("exchange:coinbase", Decimal("3012.50")),
    ]
    assert exchange.requests == 1


def test_given_the_exchange_over_one_percent_away_then_the_quote_rate_is_refused_naming_both(
    wired: Chain, exchange: ExchangeStandin
) -> None:
    from kilo_crypto_watch import dependencies  # noqa: PLC0415

    exchange.prices["ETH"] = Decimal("3031.00")
    with pytest.raises(SourcesDisagreeError, match=r"chainlink:ethereum:.* reads 3000.* exchange:coinbase reads 3031"):
        dependencies.rates().lock("ETH", datetime.now(UTC))


def test_given_a_solana_only_setup_then_the_feed_is_read_on_the_rpc_secrets_entry_for_its_chain(
    chain: Chain, exchange: ExchangeStandin, stack: Stack, monkeypatch: pytest.MonkeyPatch
) -> None:
    """No EVM payment chain: the SOL/USD feed (on Ethereum) is read on the RPC secret's `ethereum` URL (anvil here).
    Hand-worked: the feed answers $3,000.00, the exchange $3,012.50 (0.4167 % apart): locked at $3,000.00."""
    from kilo_crypto_watch import dependencies, evm_handler  # noqa: PLC0415
    from kilo_crypto_watch import settings as crypto_settings  # noqa: PLC0415
    from kilo_dev import contracts  # noqa: PLC0415

    feed = chain.w3.eth.contract(address=chain.aggregator, abi=contracts.load("TestAggregator")["abi"])  # type: ignore[call-overload]
    tx = feed.functions.setAnswer(300_000_000_000, int(time.time())).transact({"from": chain.w3.eth.accounts[0]})
    chain.w3.eth.wait_for_transaction_receipt(tx, timeout=10)
    env = stack.template.function_environment("CryptoApiFunction")
    for key, value in env.items():
        monkeypatch.setenv(key, value)
    solana_only = [{"key": "solana", "merchant_address": "9xQeWvG816bUx9EPjHmaT23yvVM2ZWbrrpZb9PusVFin"}]
    monkeypatch.setenv("CRYPTO_CHAINS", json.dumps(solana_only))
    monkeypatch.setenv("PRICE_FEEDS", json.dumps({"SOL": {"chain": "ethereum", "address": chain.aggregator}}))
    monkeypatch.setenv("EXCHANGE_PRICE_URL", f"{exchange.url}/v2/prices/{{asset}}-USD/spot")
    exchange.prices["SOL"] = Decimal("3012.50")
    stack.clients["secretsmanager"].create_secret(
        Name=env["RPC_SECRET_NAME"],
        SecretString=json.dumps({"ethereum": chain.node.url, "solana": "http://127.0.0.1:9"}),
    )
    crypto_settings.settings.cache_clear()
    dependencies.clear_caches()
    evm_handler.rpc.cache_clear()
    try:
        locked = dependencies.rates().lock("SOL", datetime.now(UTC))
    finally:
        crypto_settings.settings.cache_clear()
        dependencies.clear_caches()

    assert locked.price == Decimal("3000")
    assert [(r.source, r.price) for r in locked.readings] == [
        (f"chainlink:ethereum:{chain.aggregator}", Decimal("3000")),
        ("exchange:coinbase", Decimal("3012.50")),
    ]
