"""Settings of the crypto function (pydantic-settings: read once from the environment, validated, cached).

Chains are configuration: ``CRYPTO_CHAINS`` is a JSON list of objects, each naming at least ``key`` and
``merchant_address``; every other field defaults from the mainnet values of crypto.md for a known key (``ethereum``,
``base``, ``solana``). RPC URLs carrying keys come from the Secrets Manager secret ``RPC_SECRET_NAME`` (a JSON object
``{chain key: url}``), read by dependencies.py; nothing secret is in the environment.
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from dataclasses import dataclass
from decimal import Decimal
from functools import cache
from typing import Any, Final, cast

from pydantic import Field, field_validator

from kilo_billing.settings import FunctionSettings
from kilo_crypto_watch.model import Asset, ChainConfig
from kilo_crypto_watch.settlement import SettlementPolicy

# mainnet defaults (crypto.md); a merchant address is never defaulted
CHAIN_DEFAULTS: Final[Mapping[str, Mapping[str, Any]]] = {
    "ethereum": {
        "kind": "evm",
        "rpc_url": "https://ethereum-rpc.publicnode.com",
        "usdc": "0xA0b86991c6218b36c1d19D4a2e9Eb0cE3606eB48",
        "native": "ETH",
        "chain_id": 1,
        "explorer_tx_url": "https://etherscan.io/tx/{tx}",
    },
    "base": {
        "kind": "evm",
        "rpc_url": "https://mainnet.base.org",
        "usdc": "0x833589fCD6eDb6E08f4c7C32D4f71b54bdA02913",
        "native": "ETH",
        "chain_id": 8453,
        "explorer_tx_url": "https://basescan.org/tx/{tx}",
        # its finalized block trails the head by 20-30 min (its batches in a finalized Ethereum block): 600-900
        # blocks of 2 s, above the model's 128 - an hour of blocks, twice that (D342, amended (review 4))
        "reorg_window": 1_800,
    },
    "solana": {
        "kind": "solana",
        "rpc_url": "https://api.mainnet-beta.solana.com",
        "usdc": "EPjFWdd5AufqSSqeM2qN1xzybapC8G4wEGGkZwyTDt1v",
        "native": "SOL",
        "chain_id": None,
        "explorer_tx_url": "https://solscan.io/tx/{tx}",
    },
}


@dataclass(frozen=True, slots=True)
class FeedConfig:
    """A Chainlink-compatible aggregator: the EVM chain it is read on, its address and heartbeat."""

    asset: Asset
    chain: str
    address: str
    heartbeat_seconds: int
    decimals: int = 8


FEED_DEFAULTS: Final[Mapping[str, Mapping[str, Any]]] = {
    "ETH": {"chain": "ethereum", "address": "0x5f4eC3Df9cbd43714FE2740f5E3616155c5b8419", "heartbeat_seconds": 3600},
    "SOL": {"chain": "ethereum", "address": "0x4ffC43a60e009B551865A93d232E33Fce9f01507", "heartbeat_seconds": 86400},
    "USDC": {"chain": "ethereum", "address": "0x8fFfFfd4AfB6115b954Bd326cbe7B4BA576818f6", "heartbeat_seconds": 86400},
}


class CryptoSettings(FunctionSettings):
    """The base's AWS call budget and secret reuse (the RPC secret), and:"""

    crypto_table_name: str = "crypto"
    members_table_name: str = "members"  # the account API's members: the routes' stored-role check (D208)
    event_bus_name: str = ""
    crypto_chains: str = "[]"  # JSON list (module docstring)
    price_feeds: str = "{}"  # JSON {asset: {chain, address, heartbeat_seconds, decimals}}, over FEED_DEFAULTS
    rpc_secret_name: str = ""  # Secrets Manager: {chain key: RPC URL with its key}
    exchange_price_url: str = "https://api.coinbase.com/v2/prices/{asset}-USD/spot"
    exchange_source_name: str = "exchange:coinbase"
    exchange_heartbeat_seconds: int = Field(default=120, ge=1)
    exchange_timeout_seconds: float = Field(default=3.0, gt=0)
    # quotes and rates
    quote_expiry_minutes: int = Field(default=30, ge=1, le=24 * 60)
    quote_monitoring_hours: int = Field(default=72, ge=1, le=30 * 24)
    quote_expiring_minutes: int = Field(default=10, ge=1, le=24 * 60)  # CryptoQuoteExpiring.v1 this long before expiry
    max_source_disagreement: Decimal = Field(default=Decimal("0.01"), gt=0, lt=1)
    stablecoin_band_low: Decimal = Field(default=Decimal("0.98"), gt=0)
    stablecoin_band_high: Decimal = Field(default=Decimal("1.02"), gt=0)
    default_heartbeat_seconds: int = Field(default=3600, ge=1)
    payment_label: str = "Kilo Billing"
    # settlement (crypto.md policies)
    stable_tolerance_rate: Decimal = Field(default=Decimal("0.005"), ge=0, lt=1)
    stable_tolerance_cap_usd: Decimal = Field(default=Decimal("1.00"), ge=0)
    volatile_tolerance_rate: Decimal = Field(default=Decimal("0.01"), ge=0, lt=1)
    late_review_move: Decimal = Field(default=Decimal("0.02"), ge=0, lt=1)
    # an UNATTRIBUTED credit worth less (USD, rounded to the cent) is kept for an operator, not alerted (D364)
    unattributed_alert_min_usd: Decimal = Field(default=Decimal("0.01"), ge=0)
    # wallet linking (SIWE / SIWS): the domain and URI messages must name; nonce lifetime
    signin_domain: str = "app.kilo.example"
    signin_uri: str = "https://app.kilo.example"
    nonce_ttl_minutes: int = Field(default=10, ge=1, le=60)
    siws_chain_id: str = "mainnet"  # the Chain ID a Sign In With Solana message names
    erc1271_enabled: bool = True  # smart-contract wallets via ERC-1271 where the chain's RPC is configured

    @field_validator("crypto_chains", "price_feeds")
    @classmethod
    def _json(cls, value: str) -> str:
        json.loads(value)
        return value

    def chains(self, rpc_urls: Mapping[str, str] | None = None) -> dict[str, ChainConfig]:
        """Every configured chain, by key; ``rpc_urls`` (from the RPC secret) replace the configured URLs."""
        return parse_chains(self.crypto_chains, rpc_urls or {})

    def feeds(self) -> dict[str, FeedConfig]:
        configured = json.loads(self.price_feeds)
        result: dict[str, FeedConfig] = {}
        for asset, defaults in FEED_DEFAULTS.items():
            values = {**defaults, **configured.get(asset, {})}
            result[asset] = FeedConfig(
                asset=cast(Asset, asset),
                chain=str(values["chain"]),
                address=str(values["address"]),
                heartbeat_seconds=int(values["heartbeat_seconds"]),
                decimals=int(values.get("decimals", 8)),
            )
        return result

    @property
    def settlement_policy(self) -> SettlementPolicy:
        return SettlementPolicy(
            stable_tolerance_rate=self.stable_tolerance_rate,
            stable_tolerance_cap=self.stable_tolerance_cap_usd,
            volatile_tolerance_rate=self.volatile_tolerance_rate,
            late_review_move=self.late_review_move,
            unattributed_alert_min_usd=self.unattributed_alert_min_usd,
        )


class ChainConfigError(ValueError):
    pass


_FIELDS: Final = frozenset(ChainConfig.__dataclass_fields__)


def parse_chains(raw: str, rpc_urls: Mapping[str, str]) -> dict[str, ChainConfig]:
    entries = json.loads(raw)
    if not isinstance(entries, list):
        raise ChainConfigError("CRYPTO_CHAINS must be a JSON list of chain objects")
    chains: dict[str, ChainConfig] = {}
    for entry in entries:
        if not isinstance(entry, dict) or not entry.get("key") or not entry.get("merchant_address"):
            raise ChainConfigError(f"a chain needs at least key and merchant_address: {entry!r}")
        unknown = set(entry) - _FIELDS
        if unknown:
            raise ChainConfigError(f"chain {entry['key']}: unknown fields {sorted(unknown)}")
        values = {**CHAIN_DEFAULTS.get(str(entry["key"]), {}), **entry}
        if str(values["key"]) in rpc_urls:
            values["rpc_url"] = rpc_urls[str(values["key"])]
        missing = {"kind", "rpc_url", "usdc", "native"} - set(values)
        if missing:
            raise ChainConfigError(f"chain {entry['key']}: missing {sorted(missing)} (no mainnet default)")
        if values["kind"] not in ("evm", "solana"):
            raise ChainConfigError(f"chain {entry['key']}: kind must be evm or solana")
        if values["kind"] == "evm" and not values.get("chain_id"):
            raise ChainConfigError(f"chain {entry['key']}: an EVM chain needs chain_id")
        if int(values.get("reorg_window", 1)) < 1:  # the rollback rescans the cursor's replaced block at least
            raise ChainConfigError(f"chain {entry['key']}: reorg_window must be at least 1 (D342, amended (review 6))")
        chains[str(values["key"])] = ChainConfig(**values)
    return chains


@cache
def settings() -> CryptoSettings:
    return CryptoSettings()  # values come from the environment
