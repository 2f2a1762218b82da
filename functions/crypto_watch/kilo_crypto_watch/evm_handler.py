"""Scheduled handler: one bounded run of the EVM watcher for the chain the schedule names (``{"chain": "ethereum"}``;
one schedule per EVM chain in template.yaml, every minute). Settlement (the ``PaymentSink``), the cursor store and the
chains come from dependencies.py; the web3.py client per chain is built here on first use and reused while warm.

Also the EVM wiring the crypto API uses: ``inspector(chain)`` (the fast path's TransactionInspector) and
``price_source()`` (the Chainlink feeds as a PriceSource). Only this module, evm.py, evm_rpc.py and chainlink.py
load web3.
"""

from __future__ import annotations

from datetime import timedelta
from functools import cache
from typing import TYPE_CHECKING, Any

from aws_lambda_powertools.utilities.typing import LambdaContext

from kilo_billing import observability
from kilo_billing.observability import Metric, count, record_per_chain
from kilo_crypto_watch import dependencies
from kilo_crypto_watch.settings import settings

if TYPE_CHECKING:
    from kilo_crypto_watch.chainlink import ChainlinkPriceSource
    from kilo_crypto_watch.evm import EvmTransactionInspector
    from kilo_crypto_watch.evm_rpc import Web3EvmRpc
    from kilo_crypto_watch.model import ChainConfig

SERVICE = "crypto-evm-watcher"
logger = observability.logger(SERVICE)
metrics = observability.metrics(SERVICE)


class UnknownChainError(ValueError):
    """The schedule named a chain that is not configured as an EVM chain."""


@cache
def rpc(chain_key: str, url: str) -> Web3EvmRpc:
    from kilo_crypto_watch.evm_rpc import Web3EvmRpc  # noqa: PLC0415

    return Web3EvmRpc(url)


def evm_chain(chain_key: object) -> ChainConfig:
    chains = dependencies.chains()
    chain = chains.get(chain_key) if isinstance(chain_key, str) else None
    if chain is None or chain.kind != "evm":
        evm = sorted(key for key, config in chains.items() if config.kind == "evm")
        raise UnknownChainError(f"event names chain {chain_key!r}; the configured EVM chains are {evm}")
    return chain


def inspector(chain: ChainConfig) -> EvmTransactionInspector:
    """The fast path's TransactionInspector for an EVM chain (dependencies.inspector imports this on demand)."""
    from kilo_crypto_watch.evm import EvmTransactionInspector  # noqa: PLC0415

    return EvmTransactionInspector(chain, rpc(chain.key, chain.rpc_url))


def price_source() -> ChainlinkPriceSource:
    """The configured Chainlink feeds (settings' ``PRICE_FEEDS`` over the mainnet defaults), each read on its chain's
    RPC URL: the configured EVM chain of that key; else - the feeds' chain is not a payment chain, e.g. a Solana-only
    setup reading Ethereum's feeds - the RPC secret's entry for that key, else the chain's mainnet default URL.
    Register with ``dependencies.add_price_source``."""
    from kilo_crypto_watch.chainlink import ChainlinkFeed, ChainlinkPriceSource  # noqa: PLC0415
    from kilo_crypto_watch.settings import CHAIN_DEFAULTS  # noqa: PLC0415

    feeds = {
        asset: ChainlinkFeed(feed.asset, feed.address, feed.heartbeat_seconds, feed.chain)
        for asset, feed in settings().feeds().items()
    }
    urls = {key: chain.rpc_url for key, chain in dependencies.chains().items() if chain.kind == "evm"}
    secret = dependencies.rpc_urls()
    for feed in feeds.values():
        if feed.chain not in urls:
            default = CHAIN_DEFAULTS.get(feed.chain, {}).get("rpc_url")
            url = secret.get(feed.chain) or (str(default) if default else None)
            if url is not None:
                urls[feed.chain] = url
    return ChainlinkPriceSource(feeds, urls)


@metrics.log_metrics
@logger.inject_lambda_context(clear_state=True)
@observability.tracer(SERVICE).capture_lambda_handler(capture_response=False)
def lambda_handler(event: dict[str, Any], context: LambdaContext) -> dict[str, Any]:
    from kilo_crypto_watch.evm import watch  # noqa: PLC0415

    chain = evm_chain(event.get("chain") if isinstance(event, dict) else None)
    logger.append_keys(chain=chain.key)
    settlement = dependencies.settlement()
    try:
        report = watch(chain, rpc(chain.key, chain.rpc_url), dependencies.cursors(), settlement)
        expiring = settlement.announce_expiring(chain.key, timedelta(minutes=settings().quote_expiring_minutes))
        # what a crash between a bill's save and its event left out, and the drops final on this chain (D449)
        final = {} if report.final_through is None else {chain.key: report.final_through}
        announced = settlement.announce_due(final)
    except Exception:
        logger.exception("EVM watcher run failed; Lambda retries it, then the dead-letter queue")
        count(SERVICE, Metric.CRYPTO_WATCH_FAILED)
        raise
    finally:  # dust kept unattributed without an alert, counted even when the run failed after keeping it (D364)
        count(SERVICE, Metric.CRYPTO_UNATTRIBUTED_UNALERTED, settlement.take_unalerted())
    if report.stuck:  # left pending, the others settled: each named for an operator (D285)
        logger.error("payments stuck at finality", extra={"stuck": list(report.stuck)})
        count(SERVICE, Metric.CRYPTO_PAYMENTS_STUCK, len(report.stuck))
    count(SERVICE, Metric.CRYPTO_TRANSFERS_SEEN, report.transfers_seen)
    count(SERVICE, Metric.CRYPTO_REORGS, int(report.rolled_back_to is not None))
    record_per_chain(SERVICE, Metric.CRYPTO_WATCH_BEHIND, chain.key, report.lag)  # D414 amended (ops2)
    summary = {
        "chain": report.chain,
        "from_block": report.from_block,
        "to_block": report.to_block,
        "transfers_seen": report.transfers_seen,
        "finalized": report.finalized,
        "orphaned": report.orphaned,
        "failed": report.failed,
        "rpc_calls": report.rpc_calls,
        "rolled_back_to": report.rolled_back_to,
        "caught_up": report.caught_up,
        "lag": report.lag,
        "final_through": report.final_through,
        "quotes_expiring_announced": expiring,
        "bills_announced": announced,
    }
    (logger.warning if report.rolled_back_to is not None else logger.info)("EVM watcher run", extra=summary)
    return summary
