"""The watcher's reading of mainnet-shaped ``getTransaction`` answers (hand-written from Solana's documented shapes;
tests/fixtures/solana/README.md says how), parsed by the real client's parser (solders' ``GetTransactionResp``)."""

from __future__ import annotations

from datetime import UTC, datetime
from pathlib import Path

import pytest
from solders.rpc.responses import GetTransactionResp

from kilo_crypto_watch.model import ObservedTransfer
from kilo_crypto_watch.solana import Merchant, credits
from kilo_crypto_watch.solana_rpc import b58decode, chain_transaction

FIXTURES = Path(__file__).resolve().parents[1] / "fixtures" / "solana"
USDC = "EPjFWdd5AufqSSqeM2qN1xzybapC8G4wEGGkZwyTDt1v"
PAYER = "AKnL4NNf3DGWZJS6cPknBuEGnVsV4A4m5tgebLHaRSZ9"
MERCHANT = "9hSR6S7WPtxmTojgo6GG3k4yDPecgJY292j7xrsUGWBu"
REFERENCE = "GyGKxMyg1p9SsHfm15MkNUu1u9TN2JtTspcdmrtGUdse"
MAINNET = Merchant(chain="solana", wallet=MERCHANT, usdc_mint=USDC)


def sample(name: str) -> GetTransactionResp:
    return GetTransactionResp.from_json((FIXTURES / name).read_text())


def test_given_a_v0_usdc_transfer_checked_with_reference_and_memo_then_the_merchant_credit_is_read() -> None:
    response = sample("usdc_transfer_checked_v0.json")
    assert response.value is not None

    tx = chain_transaction(response.value)

    assert tx.account_keys[7] == USDC  # the lookup table's read-only address follows the 7 static keys
    assert credits(tx, MAINNET, block_hash="hash-of-287654321") == [
        ObservedTransfer(
            chain="solana",
            asset="USDC",
            tx_id="4RGp57WGuBMarZpvE6x5QPENPrNFfJ9eMye3h6KPnzqE35zEQHPthde9RZzBV8NvxkXMnqGEpTshxyjGiGJKx2ZE",
            index=1,
            block_number=287654321,
            block_hash="hash-of-287654321",
            sender=PAYER,
            recipient=MERCHANT,
            atomic_amount=25_000_000,  # 30.000000 - 5.000000 USDC on the merchant's token account
            succeeded=True,
            references=(REFERENCE,),
            memo="kilo INV-2026-11-0042",
            block_time=datetime(2024, 11, 30, 9, 20, tzinfo=UTC),
        )
    ]


def test_given_the_same_transfer_to_a_merchant_of_another_mint_then_no_credit() -> None:
    response = sample("usdc_transfer_checked_v0.json")
    assert response.value is not None
    other_mint = Merchant(chain="solana", wallet=MERCHANT, usdc_mint="Es9vMFrzaCERmJfrF4H2FYD4KCoNkY11McCe8BenwNYB")

    assert credits(chain_transaction(response.value), other_mint) == []


def test_given_the_same_transfer_seen_by_another_merchant_then_no_credit() -> None:
    response = sample("usdc_transfer_checked_v0.json")
    assert response.value is not None
    stranger = Merchant(chain="solana", wallet=PAYER, usdc_mint=USDC)  # the payer's own balance went down

    assert credits(chain_transaction(response.value), stranger) == []


def test_given_a_failed_legacy_sol_transfer_then_it_is_a_failed_credit_of_the_intended_amount() -> None:
    response = sample("sol_transfer_failed_legacy.json")
    assert response.value is not None

    (transfer,) = credits(chain_transaction(response.value), MAINNET)

    assert (transfer.asset, transfer.index, transfer.sender) == ("SOL", 0, PAYER)
    assert transfer.atomic_amount == 1_500_000_000  # what the instruction meant; nothing moved
    assert transfer.succeeded is False
    assert transfer.references == (REFERENCE,)


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("", b""),
        ("1", b"\x00"),
        ("11", b"\x00\x00"),
        ("2", b"\x01"),
        ("z", b"\x39"),
        ("21", b"\x3a"),  # 58
        ("7c5x3Q4KiTsFVojvu3SkJSZnmyAbT", b"kilo INV-2026-11-0042"),
    ],
)
def test_given_base58_text_then_it_decodes_to_its_bytes(text: str, expected: bytes) -> None:
    assert b58decode(text) == expected
