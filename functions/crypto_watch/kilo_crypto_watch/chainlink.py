"""A PriceSource reading Chainlink price feeds on chain with web3.py: ``latestRoundData`` and ``decimals`` - now
(``read``), or as the feed stood at a past block (``read_at``: a late payment's rate, D218).

The answer is exact: ``answer x 10^-decimals`` as a Decimal (no float, no rounding). A round that is no answer - no
round yet (``updatedAt`` 0), a zero or negative answer, an answer carried from an earlier round
(``answeredInRound < roundId``) - is a ``PriceUnavailableError`` naming the feed and why. Whether an answer is too old
is not judged here: the reading carries its ``updatedAt`` and the feed's heartbeat (``RateReading.heartbeat_seconds``)
and the rates logic judges it at the moment the rate is for (``rates._check_reading``: now for a quote, the
payment's moment for a late one; D241). A feed's decimals are read once per source (they never change for a
feed).
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from datetime import UTC, datetime
from decimal import Decimal
from typing import Any, Final

from web3 import HTTPProvider, Web3

from kilo_crypto_watch.model import Asset, RateReading
from kilo_crypto_watch.ports import ChainBlock, PriceUnavailableError

AGGREGATOR_V3_ABI: Final[list[dict[str, Any]]] = [
    {
        "name": "latestRoundData",
        "type": "function",
        "stateMutability": "view",
        "inputs": [],
        "outputs": [
            {"name": "roundId", "type": "uint80"},
            {"name": "answer", "type": "int256"},
            {"name": "startedAt", "type": "uint256"},
            {"name": "updatedAt", "type": "uint256"},
            {"name": "answeredInRound", "type": "uint80"},
        ],
    },
    {
        "name": "decimals",
        "type": "function",
        "stateMutability": "view",
        "inputs": [],
        "outputs": [{"name": "", "type": "uint8"}],
    },
]


@dataclass(frozen=True, slots=True)
class ChainlinkFeed:
    """One Chainlink feed: its asset, contract address on ``chain`` and heartbeat (mainnet: ETH/USD 3600 s, USDC/USD
    86400 s)."""

    asset: Asset
    address: str
    heartbeat_seconds: int
    chain: str = "ethereum"

    @property
    def source(self) -> str:
        return f"chainlink:{self.chain}:{self.address}"


class ChainlinkPriceSource:
    """PriceSource over Chainlink feeds (one per asset), each read on its chain's RPC (``rpc_urls`` by chain key)."""

    def __init__(
        self,
        feeds: Mapping[str, ChainlinkFeed],
        rpc_urls: Mapping[str, str],
        timeout_s: float = 10.0,
    ) -> None:
        self.feeds = dict(feeds)
        self.rpc_urls = dict(rpc_urls)
        self.timeout_s = timeout_s
        self._web3: dict[str, Web3] = {}
        self._decimals: dict[str, int] = {}

    def _chain(self, feed: ChainlinkFeed) -> Web3:
        if feed.chain not in self._web3:
            url = self.rpc_urls.get(feed.chain)
            if url is None:
                raise PriceUnavailableError(f"{feed.source}: no RPC URL for chain {feed.chain}")
            self._web3[feed.chain] = Web3(HTTPProvider(url, request_kwargs={"timeout": self.timeout_s}))
        return self._web3[feed.chain]

    def read(self, asset: Asset) -> RateReading:
        feed = self._feed(asset)
        contract = self._contract(feed)
        try:
            if asset not in self._decimals:
                self._decimals[asset] = int(contract.functions.decimals().call())
            answer = contract.functions.latestRoundData().call()
        except Exception as exc:  # any failure to read the feed (connection, revert, not a feed): no price from it
            # the error's type only: an RPC error's text can carry the provider URL and its API key, and this message
            # reaches customers (the quote route's 503)
            raise PriceUnavailableError(f"{feed.source}: latestRoundData failed ({type(exc).__name__})") from exc
        return self._reading(asset, feed, answer)

    def read_at(self, asset: Asset, when: datetime, block: ChainBlock | None = None) -> RateReading:
        """The feed's ``latestRoundData`` as it stood at a past moment (a late payment's, D218): at ``block``
        when that is a block of the feed's own chain (a payment on Ethereum: its block), else at the last block of
        the feed's chain at or before ``when`` (a Solana slot's time; Base's block time on Ethereum's feed). Its age
        is the rates' to judge, against ``when`` (``CheckedRates.at``). The node must still hold that block's state
        (recent blocks; an archive node for old ones): one that does not is a PriceUnavailableError, like any failed
        read."""
        feed = self._feed(asset)
        contract = self._contract(feed)
        try:
            if block is not None and block.chain == feed.chain:
                number = block.number
            else:
                number = self._block_at(self._chain(feed), when)
            if asset not in self._decimals:
                self._decimals[asset] = int(contract.functions.decimals().call())
            answer = contract.functions.latestRoundData().call(block_identifier=number)
        except PriceUnavailableError:
            raise
        except Exception as exc:  # as ``read``: the error's type only
            raise PriceUnavailableError(
                f"{feed.source}: latestRoundData at {when.isoformat()} failed ({type(exc).__name__})"
            ) from exc
        return self._reading(asset, feed, answer)

    def _feed(self, asset: Asset) -> ChainlinkFeed:
        feed = self.feeds.get(asset)
        if feed is None:
            raise PriceUnavailableError(f"no Chainlink feed configured for {asset}")
        return feed

    def _contract(self, feed: ChainlinkFeed) -> Any:
        web3 = self._chain(feed)
        return web3.eth.contract(address=Web3.to_checksum_address(feed.address), abi=AGGREGATOR_V3_ABI)

    def _block_at(self, web3: Web3, when: datetime) -> int:
        """The number of the last block whose timestamp is at or before ``when`` (a binary search over headers:
        about log2(height) reads, only for late payments)."""
        target = int(when.timestamp())
        latest = web3.eth.get_block("latest")
        high, high_time = int(latest["number"]), int(latest["timestamp"])
        if high_time <= target:
            return high
        low = 0
        if int(web3.eth.get_block(low)["timestamp"]) > target:
            raise PriceUnavailableError(f"the chain has no block at or before {when.isoformat()}")
        while high - low > 1:  # timestamp(low) <= target < timestamp(high)
            middle = (low + high) // 2
            if int(web3.eth.get_block(middle)["timestamp"]) <= target:
                low = middle
            else:
                high = middle
        return low

    def _reading(self, asset: Asset, feed: ChainlinkFeed, answer: Any) -> RateReading:
        """A round's answer checked to be one (a completed round, a price, not carried over), as read: its age is
        the rates' to judge (D241)."""
        round_id, price, _started, updated_at, answered_in = answer
        if int(updated_at) == 0:
            raise PriceUnavailableError(f"{feed.source}: no completed round (updatedAt 0)")
        if int(price) <= 0:
            raise PriceUnavailableError(f"{feed.source}: answer {price} is not a price")
        if int(answered_in) < int(round_id):
            raise PriceUnavailableError(f"{feed.source}: round {round_id} carries an answer from round {answered_in}")
        return RateReading(
            source=feed.source,
            asset=asset,
            price=Decimal(int(price)).scaleb(-self._decimals[asset]),
            updated_at=datetime.fromtimestamp(int(updated_at), UTC),
            heartbeat_seconds=feed.heartbeat_seconds,
            round_id=int(round_id),
        )
