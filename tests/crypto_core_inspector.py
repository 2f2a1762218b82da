"""A stand-in for a watcher module's fast-path ``inspector(chain)`` (the EVM and Solana helpers provide the real ones,
tested against anvil and LiteSVM): answers the transfers registered for a transaction id."""

from __future__ import annotations

from collections.abc import Sequence

from kilo_crypto_watch.model import ChainConfig, ObservedTransfer
from kilo_crypto_watch.ports import TransactionNotFoundError

TRANSACTIONS: dict[str, list[ObservedTransfer]] = {}


class Inspector:
    def __init__(self, chain: ChainConfig) -> None:
        self.chain = chain

    def transfers(self, tx_id: str) -> Sequence[ObservedTransfer]:
        if tx_id not in TRANSACTIONS:
            raise TransactionNotFoundError(tx_id)
        return [t for t in TRANSACTIONS[tx_id] if t.chain == self.chain.key]


def inspector(chain: ChainConfig) -> Inspector:
    return Inspector(chain)
