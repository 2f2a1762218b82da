"""Chains as configuration: mainnet defaults for known keys, merchant addresses always configured."""

from __future__ import annotations

import json
from decimal import Decimal

import pytest
from pydantic import ValidationError

from kilo_crypto_watch.settings import ChainConfigError, CryptoSettings, parse_chains


def test_given_known_chains_then_mainnet_defaults_fill_everything_but_the_merchant_and_secret_urls_win() -> None:
    raw = json.dumps(
        [
            {"key": "ethereum", "merchant_address": "0xMerchant"},
            {"key": "base", "merchant_address": "0xMerchant", "start_block": 5},
            {"key": "solana", "merchant_address": "MerchantSol"},
        ]
    )
    chains = parse_chains(raw, {"solana": "https://rpc.example/solana?key=k"})
    eth, base, sol = chains["ethereum"], chains["base"], chains["solana"]
    assert (eth.kind, eth.chain_id, eth.usdc, eth.native) == (
        "evm",
        1,
        "0xA0b86991c6218b36c1d19D4a2e9Eb0cE3606eB48",
        "ETH",
    )
    assert (base.chain_id, base.usdc, base.start_block) == (8453, "0x833589fCD6eDb6E08f4c7C32D4f71b54bdA02913", 5)
    assert (sol.kind, sol.usdc, sol.native, sol.chain_id) == (
        "solana",
        "EPjFWdd5AufqSSqeM2qN1xzybapC8G4wEGGkZwyTDt1v",
        "SOL",
        None,
    )
    assert sol.rpc_url == "https://rpc.example/solana?key=k"
    assert eth.explorer_tx_url == "https://etherscan.io/tx/{tx}"


@pytest.mark.parametrize(
    ("entry", "message"),
    [
        ({"key": "ethereum"}, "merchant_address"),
        ({"key": "polygon", "merchant_address": "0x1"}, "no mainnet default"),
        ({"key": "ethereum", "merchant_address": "0x1", "colour": "red"}, "unknown fields"),
        (
            {"key": "x", "merchant_address": "0x1", "kind": "evm", "rpc_url": "u", "usdc": "c", "native": "ETH"},
            "chain_id",
        ),
        ({"key": "ethereum", "merchant_address": "0x1", "reorg_window": 0}, "reorg_window"),
    ],
)
def test_given_an_incomplete_chain_then_refused_naming_what_is_missing(entry: dict[str, object], message: str) -> None:
    with pytest.raises(ChainConfigError, match=message):
        parse_chains(json.dumps([entry]), {})


def test_given_no_price_feed_configuration_then_chainlink_mainnet_feeds_with_their_heartbeats() -> None:
    feeds = CryptoSettings(crypto_chains="[]").feeds()
    assert feeds["ETH"].address == "0x5f4eC3Df9cbd43714FE2740f5E3616155c5b8419"
    assert (feeds["ETH"].heartbeat_seconds, feeds["USDC"].heartbeat_seconds) == (3600, 86400)


def test_the_on_chain_price_source_comes_from_the_evm_wiring_module_ahead_of_the_exchange(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    import sys  # noqa: PLC0415
    import types  # noqa: PLC0415

    from kilo_crypto_watch import dependencies  # noqa: PLC0415
    from kilo_crypto_watch.adapters import ExchangeSpotPrice  # noqa: PLC0415

    config = CryptoSettings(crypto_chains="[]")
    monkeypatch.setattr(dependencies, "_EXTRA_SOURCES", [])
    monkeypatch.setattr(dependencies, "PRICE_SOURCE_MODULE", "tests.no_such_wiring_module")
    [only] = dependencies.price_sources(config)
    assert isinstance(only, ExchangeSpotPrice)  # no on-chain source: the rates refuse, naming it (test_..._rates)

    wiring = types.ModuleType("tests.fake_evm_wiring")
    on_chain = object()
    wiring.price_source = lambda: on_chain  # type: ignore[attr-defined]
    monkeypatch.setitem(sys.modules, "tests.fake_evm_wiring", wiring)
    monkeypatch.setattr(dependencies, "PRICE_SOURCE_MODULE", "tests.fake_evm_wiring")
    first, second = dependencies.price_sources(config)
    assert first is on_chain
    assert isinstance(second, ExchangeSpotPrice)


def test_given_base_then_its_reorg_window_default_is_above_its_finality_lag() -> None:
    """Base's finalized block trails its head by its batches reaching a finalized Ethereum block: typically 20-30 min,
    600-900 blocks of 2 s - above the model's 128 (Ethereum: 64-95 blocks). Base defaults to 1,800 (an hour of 2 s
    blocks, twice the typical lag); Ethereum keeps 128; a configured value wins (500)."""
    raw = json.dumps(
        [
            {"key": "ethereum", "merchant_address": "0xMerchant"},
            {"key": "base", "merchant_address": "0xMerchant"},
        ]
    )
    chains = parse_chains(raw, {})
    configured = parse_chains(json.dumps([{"key": "base", "merchant_address": "0xM", "reorg_window": 500}]), {})

    assert (chains["ethereum"].reorg_window, chains["base"].reorg_window) == (128, 1_800)
    assert configured["base"].reorg_window == 500


def test_given_unattributed_alert_min_usd_then_settlement_policy_carries_it_default_one_cent(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """D364: unattributed credits below $0.01 are not alerted unless configured otherwise; negative refused."""
    monkeypatch.delenv("UNATTRIBUTED_ALERT_MIN_USD", raising=False)
    assert CryptoSettings().settlement_policy.unattributed_alert_min_usd == Decimal("0.01")
    monkeypatch.setenv("UNATTRIBUTED_ALERT_MIN_USD", "0.50")
    assert CryptoSettings().settlement_policy.unattributed_alert_min_usd == Decimal("0.50")
    monkeypatch.setenv("UNATTRIBUTED_ALERT_MIN_USD", "-0.01")
    with pytest.raises(ValidationError, match="unattributed_alert_min_usd"):
        CryptoSettings()
