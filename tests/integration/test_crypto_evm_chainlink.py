"""The Chainlink price source on a real anvil node, against the committed Chainlink-compatible test aggregator
(8 decimals, like mainnet's ETH/USD): a fresh answer, a stale one, a zero one, an unconfigured asset.

The source reports the round it read (refusing only a round that is no answer: none yet, not a price, carried over);
whether an answer is too old is the rates' judgement (``rates._check_reading``, D241), tested here through
``CheckedRates`` over the real feed."""

from __future__ import annotations

import re
from datetime import UTC, datetime, timedelta
from decimal import Decimal

import pytest

from kilo_crypto_watch.chainlink import ChainlinkFeed, ChainlinkPriceSource
from kilo_crypto_watch.model import Asset, RateReading
from kilo_crypto_watch.ports import PriceUnavailableError
from kilo_crypto_watch.rates import CheckedRates, StaleRateError
from tests.evm_chain import Chain
from tests.evm_chain import deploy as deploy_contract

UPDATED = 1_790_000_000  # 2026-09-21T14:13:20Z


def _source(chain: Chain, heartbeat: int = 3_600) -> ChainlinkPriceSource:
    feed = ChainlinkFeed("ETH", chain.aggregator, heartbeat_seconds=heartbeat)
    return ChainlinkPriceSource({"ETH": feed}, {"ethereum": chain.node.url})


class _Exchange:
    """The second source of a lock: an exchange's fresh spot price (read at ``at``)."""

    def __init__(self, price: str, at: datetime) -> None:
        self.price, self.at = Decimal(price), at

    def read(self, asset: Asset) -> RateReading:
        return RateReading("exchange:test", asset, self.price, self.at, 120)


def _set_answer(chain: Chain, answer: int, updated_at: int) -> None:
    from kilo_dev import contracts  # noqa: PLC0415

    feed = chain.w3.eth.contract(address=chain.aggregator, abi=contracts.load("TestAggregator")["abi"])  # type: ignore[call-overload]
    tx = feed.functions.setAnswer(answer, updated_at).transact({"from": chain.w3.eth.accounts[0]})
    chain.w3.eth.wait_for_transaction_receipt(tx, timeout=10)


def test_given_a_fresh_answer_then_the_price_is_exact_with_its_round_and_heartbeat(chain: Chain) -> None:
    _set_answer(chain, 312_345_678_901, UPDATED)  # $3,123.45678901 at 8 decimals
    now = datetime.fromtimestamp(UPDATED, UTC) + timedelta(seconds=3_600)  # exactly one heartbeat old: still fresh
    source = _source(chain)

    reading = source.read("ETH")

    assert reading.price == Decimal("3123.45678901")
    assert reading.updated_at == datetime(2026, 9, 21, 14, 13, 20, tzinfo=UTC)
    assert reading.heartbeat_seconds == 3_600
    assert reading.round_id == 2  # the constructor's round, then setAnswer's
    assert reading.source == f"chainlink:ethereum:{chain.aggregator}"
    assert reading.asset == "ETH"
    assert CheckedRates([source, _Exchange("3125.00", now)]).lock("ETH", now).price == Decimal("3123.45678901")


def test_given_an_answer_older_than_the_heartbeat_then_the_source_reports_it_and_the_rates_refuse_it(
    chain: Chain,
) -> None:
    """Updated 2026-09-21T14:13:20Z, locked one heartbeat and a second later (15:13:21Z): stale, one message."""
    _set_answer(chain, 300_000_000_000, UPDATED)
    now = datetime.fromtimestamp(UPDATED, UTC) + timedelta(seconds=3_601)
    source = _source(chain)

    reading = source.read("ETH")  # what the feed answered, with its time and heartbeat
    assert (reading.price, reading.updated_at, reading.heartbeat_seconds) == (
        Decimal("3000"),
        datetime(2026, 9, 21, 14, 13, 20, tzinfo=UTC),
        3_600,
    )
    stale = rf"ETH price from chainlink:ethereum:{chain.aggregator} is stale at 2026-09-21T15:13:21\+00:00: "
    with pytest.raises(StaleRateError, match=rf"^{stale}updated 3601 s before, heartbeat 3600 s$"):
        CheckedRates([source, _Exchange("3000.00", now)]).lock("ETH", now)


def test_given_a_zero_answer_then_the_source_refuses_it(chain: Chain) -> None:
    _set_answer(chain, 0, UPDATED)

    with pytest.raises(PriceUnavailableError, match="answer 0 is not a price"):
        _source(chain).read("ETH")


def test_given_a_usdc_feed_with_its_own_decimals_then_each_feed_scales_by_its_own(chain: Chain) -> None:
    usdc_feed = deploy_contract(chain.w3, "TestAggregator", 6, "USDC / USD", 999_800)  # $0.9998 at 6 decimals
    source = ChainlinkPriceSource(
        {
            "USDC": ChainlinkFeed("USDC", usdc_feed, heartbeat_seconds=86_400),
            "ETH": ChainlinkFeed("ETH", chain.aggregator, heartbeat_seconds=3_600),
        },
        {"ethereum": chain.node.url},
    )

    assert source.read("USDC").price == Decimal("0.9998")
    assert source.read("ETH").price == Decimal("3000")  # the session's feed: $3,000.00000000 at deployment
    with pytest.raises(PriceUnavailableError, match="no Chainlink feed configured for SOL"):
        source.read("SOL")


def test_given_an_address_that_is_not_a_feed_then_the_source_says_it_could_not_read_it(chain: Chain) -> None:
    source = ChainlinkPriceSource(
        {"ETH": ChainlinkFeed("ETH", chain.usdc, heartbeat_seconds=3_600)},
        {"ethereum": chain.node.url},
    )

    with pytest.raises(PriceUnavailableError, match="latestRoundData failed"):
        source.read("ETH")


def test_given_an_rpc_url_with_a_key_that_fails_then_the_message_names_neither_url_nor_key() -> None:
    """The message reaches customers in the quote route's 503: a provider URL (and the API key in it) must not."""
    url = "http://127.0.0.1:9/v2/secret-api-key-123"  # nothing listens on the discard port
    source = ChainlinkPriceSource(
        {"ETH": ChainlinkFeed("ETH", "0x" + "11" * 20, heartbeat_seconds=3_600)},
        {"ethereum": url},
    )
    with pytest.raises(PriceUnavailableError) as raised:
        source.read("ETH")
    assert "latestRoundData failed (" in str(raised.value)
    assert "secret-api-key-123" not in str(raised.value)
    assert "127.0.0.1" not in str(raised.value)


def test_given_the_answer_changed_between_blocks_then_read_at_answers_as_the_feed_stood_then(chain: Chain) -> None:
    """D218. The feed answers $2,900.00 from a block mined at t, $3,100.00 from one mined at t + 600 s. As of
    t + 300 s (a Solana slot's time, or Base's: found by block time) it answered $2,900.00; as of t + 610 s, $3,100.00;
    given a block of its own chain (an Ethereum payment's), it answers there whatever the time; a block of another
    chain is not its own (found by time). Fresh or stale as of the moment asked, not now."""
    from kilo_crypto_watch.ports import ChainBlock  # noqa: PLC0415

    t = int(chain.w3.eth.get_block("latest")["timestamp"]) + 100
    chain.node.call("evm_setNextBlockTimestamp", t)
    _set_answer(chain, 290_000_000_000, t)
    first = chain.head()
    chain.mine(3)  # blocks between the two answers
    chain.node.call("evm_setNextBlockTimestamp", t + 600)
    _set_answer(chain, 310_000_000_000, t + 600)
    second = chain.head()
    at = datetime.fromtimestamp(t, UTC)
    source = _source(chain)  # read today, long after: only the moment asked counts

    assert source.read_at("ETH", at + timedelta(seconds=300)).price == Decimal("2900")
    assert source.read_at("ETH", at + timedelta(seconds=300)).updated_at == at
    assert source.read_at("ETH", at + timedelta(seconds=610)).price == Decimal("3100")
    assert source.read_at("ETH", at, ChainBlock("ethereum", second)).price == Decimal("3100")
    assert source.read_at("ETH", at + timedelta(seconds=610), ChainBlock("ethereum", first)).price == Decimal("2900")
    assert source.read_at("ETH", at + timedelta(seconds=300), ChainBlock("solana", second)).price == Decimal("2900")
    late = at + timedelta(seconds=600 + 3_601)  # the second answer, one heartbeat and a second old then
    assert source.read_at("ETH", late).updated_at == at + timedelta(seconds=600)  # reported as it stood
    stale = rf"is stale at {re.escape(late.isoformat())}: updated 3601 s before, heartbeat 3600 s$"
    with pytest.raises(StaleRateError, match=stale):
        CheckedRates([source]).at("ETH", late)
    with pytest.raises(PriceUnavailableError, match="no block at or before"):
        source.read_at("ETH", datetime(2000, 1, 1, tzinfo=UTC))
