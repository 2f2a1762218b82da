"""The watcher's reading of mainnet-shaped ``getTransaction`` answers (hand-written from Solana's documented shapes;
tests/fixtures/solana/README.md says how), parsed by the real client's parser (solders' ``GetTransactionResp``)."""

from __future__ import annotations

import struct
from dataclasses import replace
from datetime import UTC, datetime
from pathlib import Path

import pytest
from solders.pubkey import Pubkey
from solders.rpc.responses import GetTransactionResp
from solders.token.associated import get_associated_token_address

from kilo_crypto_watch.model import ObservedTransfer
from kilo_crypto_watch.ports import ChainTransaction, Instruction, TokenBalance
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


# -- one transaction, several transfers to the merchant (D91, amended (sp)) ------------------------------------------
BILL_1 = "4vJ9JU1bJJE96FWSJKvHsmmFADCg4gpZQff4P3bkLKi"  # bytes 0x01 x 32: bill 1's quote reference
BILL_2 = "8qbHbw2BbbTHBW1sbeqakYXVKRQM8Ne7pLK7m6CVfeR"  # bytes 0x02 x 32: bill 2's
ELSEWHERE = "CktRuQ2mttgRGkXJtyksdKHjUdc2C4TgDzyB98oEzy8"  # bytes 0x03 x 32: a watched reference on no transfer
SYSTEM = "11111111111111111111111111111111"
TOKEN = "TokenkegQfeZyiNwAJbNbGKPFXCWuBvf9Ss623VQ5DA"
MEMO = "MemoSq4gqABAXKb96qnH8TysNcWxMyWCqXgDLGmfcHr"


def _sol_transfer(lamports: int, *references: str) -> Instruction:
    """A System ``Transfer`` (u32 tag 2, u64 lamports) from the payer to the merchant, references appended."""
    return Instruction(SYSTEM, (PAYER, MERCHANT, *references), struct.pack("<IQ", 2, lamports))


def _two_sol_bills(merchant_post: int, failed: bool = False, *extra: Instruction) -> ChainTransaction:
    """One transaction paying bill 1 1.5 SOL and bill 2 0.25 SOL, each by its own Solana Pay reference (a wallet
    paying two invoices at once). The merchant held 1 SOL; keys: payer (the only signer), merchant, the references,
    the programs."""
    return ChainTransaction(
        signature="two-bills",
        slot=300,
        block_time=None,
        failed=failed,
        account_keys=(PAYER, MERCHANT, BILL_1, BILL_2, ELSEWHERE, SYSTEM, MEMO),
        signer_count=1,
        instructions=(_sol_transfer(1_500_000_000, BILL_1), _sol_transfer(250_000_000, BILL_2), *extra),
        pre_balances=(10_000_000_000, 1_000_000_000, 0, 0, 0, 1, 1),
        # the payer: 10 - 1.5 - 0.25 SOL - 5,000 lamports of fee = 8,249,995,000
        post_balances=(8_249_995_000, merchant_post, 0, 0, 0, 1, 1),
    )


def _credit(credit: ObservedTransfer) -> tuple[str, int, str, int, tuple[str, ...], bool]:
    return credit.asset, credit.index, credit.sender, credit.atomic_amount, credit.references, credit.succeeded


def test_given_one_transaction_paying_two_bills_in_sol_then_each_transfer_is_its_own_credit_with_its_reference() -> (
    None
):
    # the merchant's delta: 1,500,000,000 + 250,000,000 = 1,750,000,000 lamports, the instructions' sum
    tx = _two_sol_bills(merchant_post=1_000_000_000 + 1_750_000_000)

    found = credits(tx, MAINNET, watched=frozenset({BILL_1, BILL_2}))

    # before: one credit of 1,750,000,000 at index 0 carrying both references (bill 1 overpaid, bill 2 never paid)
    assert [_credit(credit) for credit in found] == [
        ("SOL", 0, PAYER, 1_500_000_000, (BILL_1,), True),
        ("SOL", 1, PAYER, 250_000_000, (BILL_2,), True),
    ]
    assert [credit.payment_id for credit in found] == ["solana:two-bills:0", "solana:two-bills:1"]


def test_given_two_sol_transfers_and_a_watched_reference_on_another_instruction_then_both_credits_carry_it() -> None:
    """A watched reference on no transfer (here a memo's key) is nobody's own: it goes with every credit, as it went
    with the single one (D91, D137: a claim for another bill is still refused); a credit's own reference does not go
    with the other credit."""
    memo = Instruction(MEMO, (ELSEWHERE,), b"two bills")
    tx = _two_sol_bills(1_000_000_000 + 1_750_000_000, False, memo)

    found = credits(tx, MAINNET, watched=frozenset({BILL_1, BILL_2, ELSEWHERE}))

    assert [credit.references for credit in found] == [(BILL_1, ELSEWHERE), (BILL_2, ELSEWHERE)]


def test_given_two_sol_transfers_whose_sum_is_not_the_merchants_delta_then_one_net_credit_as_before() -> None:
    """The merchant also paid out in it (5,000 lamports, say a fee): 1,750,000,000 - 5,000 = 1,749,995,000 received,
    not the instructions' 1,750,000,000 - which transfer the 5,000 came off is unknown: the net delta, once, at the
    first transfer (its reference first, then the other watched one, as before)."""
    tx = _two_sol_bills(merchant_post=1_000_000_000 + 1_749_995_000)

    found = credits(tx, MAINNET, watched=frozenset({BILL_1, BILL_2}))

    assert [_credit(credit) for credit in found] == [("SOL", 0, PAYER, 1_749_995_000, (BILL_1, BILL_2), True)]


def test_given_a_failed_transaction_with_two_sol_transfers_then_each_is_a_failed_credit_of_its_intended_amount() -> (
    None
):
    tx = _two_sol_bills(merchant_post=1_000_000_000, failed=True)  # nothing moved

    found = credits(tx, MAINNET, watched=frozenset({BILL_1, BILL_2}))

    # before: one failed credit of 1,500,000,000 + 250,000,000 = 1,750,000,000 at index 0
    assert [_credit(credit) for credit in found] == [
        ("SOL", 0, PAYER, 1_500_000_000, (BILL_1,), False),
        ("SOL", 1, PAYER, 250_000_000, (BILL_2,), False),
    ]


def test_given_one_transaction_paying_two_bills_in_usdc_then_each_transfer_checked_is_its_own_credit() -> None:
    """Two ``TransferChecked`` (u8 tag 12, u64 amount, u8 decimals) of 100 USDC and 40 USDC into the merchant's
    associated token account, each with its bill's reference; the account held 5 USDC."""
    ata = str(get_associated_token_address(Pubkey.from_string(MERCHANT), Pubkey.from_string(USDC)))
    source = str(get_associated_token_address(Pubkey.from_string(PAYER), Pubkey.from_string(USDC)))

    def transfer_checked(amount: int, reference: str) -> Instruction:
        return Instruction(TOKEN, (source, USDC, ata, PAYER, reference), bytes([12]) + struct.pack("<QB", amount, 6))

    tx = ChainTransaction(
        signature="two-usdc-bills",
        slot=301,
        block_time=None,
        failed=False,
        account_keys=(PAYER, source, ata, USDC, BILL_1, BILL_2, TOKEN),
        signer_count=1,
        instructions=(transfer_checked(100_000_000, BILL_1), transfer_checked(40_000_000, BILL_2)),
        pre_balances=(1_000_000_000, 2_039_280, 2_039_280, 1, 0, 0, 1),
        post_balances=(999_995_000, 2_039_280, 2_039_280, 1, 0, 0, 1),
        pre_token_balances=(
            TokenBalance(1, USDC, PAYER, 500_000_000),
            TokenBalance(2, USDC, MERCHANT, 5_000_000),
        ),
        # the payer: 500 - 100 - 40 = 360 USDC; the merchant: 5 + 100 + 40 = 145 USDC (delta 140,000,000)
        post_token_balances=(
            TokenBalance(1, USDC, PAYER, 360_000_000),
            TokenBalance(2, USDC, MERCHANT, 145_000_000),
        ),
    )

    found = credits(tx, MAINNET, watched=frozenset({BILL_1, BILL_2}))

    # before: one credit of 140,000,000 at index 0 carrying both references
    assert [_credit(credit) for credit in found] == [
        ("USDC", 0, PAYER, 100_000_000, (BILL_1,), True),
        ("USDC", 1, PAYER, 40_000_000, (BILL_2,), True),
    ]


def test_given_one_transaction_paying_one_bill_in_sol_and_another_in_usdc_then_each_credit_carries_its_own_reference() -> (
    None
):
    """0.25 SOL with bill 1's reference and 40 USDC with bill 2's in one transaction: one credit per asset, as
    before, but bill 2's reference is the USDC credit's own, so it no longer goes with the SOL credit (nor bill 1's
    with the USDC one): before, each carried both, and a claim of either for its own bill was refused (D112)."""
    ata = str(get_associated_token_address(Pubkey.from_string(MERCHANT), Pubkey.from_string(USDC)))
    source = str(get_associated_token_address(Pubkey.from_string(PAYER), Pubkey.from_string(USDC)))
    usdc = Instruction(TOKEN, (source, USDC, ata, PAYER, BILL_2), bytes([12]) + struct.pack("<QB", 40_000_000, 6))
    tx = ChainTransaction(
        signature="sol-and-usdc",
        slot=302,
        block_time=None,
        failed=False,
        account_keys=(PAYER, MERCHANT, source, ata, USDC, BILL_1, BILL_2, SYSTEM, TOKEN),
        signer_count=1,
        instructions=(_sol_transfer(250_000_000, BILL_1), usdc),
        # the merchant: 1 SOL + 0.25 SOL = 1,250,000,000; the payer: 10 SOL - 0.25 SOL - 5,000 = 9,749,995,000
        pre_balances=(10_000_000_000, 1_000_000_000, 2_039_280, 2_039_280, 1, 0, 0, 1, 1),
        post_balances=(9_749_995_000, 1_250_000_000, 2_039_280, 2_039_280, 1, 0, 0, 1, 1),
        pre_token_balances=(TokenBalance(2, USDC, PAYER, 500_000_000), TokenBalance(3, USDC, MERCHANT, 0)),
        # 500 - 40 = 460 USDC; 0 + 40 = 40 USDC
        post_token_balances=(TokenBalance(2, USDC, PAYER, 460_000_000), TokenBalance(3, USDC, MERCHANT, 40_000_000)),
    )

    found = credits(tx, MAINNET, watched=frozenset({BILL_1, BILL_2}))

    assert [_credit(credit) for credit in found] == [
        ("SOL", 0, PAYER, 250_000_000, (BILL_1,), True),
        ("USDC", 1, PAYER, 40_000_000, (BILL_2,), True),
    ]


def _one_bill_in_two(first: Instruction, second: Instruction, third: Instruction | None = None) -> ChainTransaction:
    """One transaction paying bill 1 (1.5 SOL) in two System transfers, 1.0 SOL + 0.5 SOL (``third``: a transfer
    before them). The merchant held 1 SOL and receives 1,000,000,000 + 500,000,000 = 1,500,000,000 lamports, the
    instructions' sum: split."""
    return ChainTransaction(
        signature="one-bill-in-two",
        slot=300,
        block_time=None,
        failed=False,
        account_keys=(PAYER, MERCHANT, BILL_1, SYSTEM, MEMO),
        signer_count=1,
        instructions=(*((third,) if third else ()), first, second),
        pre_balances=(10_000_000_000, 1_000_000_000, 0, 1, 1),
        post_balances=(8_499_995_000, 2_500_000_000, 0, 1, 1),  # 10 - 1.5 SOL - 5,000 fee; 1 + 1.5 SOL
    )


def test_given_one_bill_paid_in_two_sol_transfers_with_its_reference_on_the_first_only_then_both_credits_carry_it() -> (
    None
):
    """Review (sp2) finding 1: a transfer with no reference of its own beside a referenced one carries the watched
    reference (it is the same payment's other part); before this fix the 0.5 SOL credit had none - bill 1 counted
    $150 of $225 and the 500,000,000 lamports were left unattributed (a reminder: the customer may pay twice)."""
    tx = _one_bill_in_two(_sol_transfer(1_000_000_000, BILL_1), _sol_transfer(500_000_000))

    found = credits(tx, MAINNET, watched=frozenset({BILL_1}))

    assert [_credit(credit) for credit in found] == [
        ("SOL", 0, PAYER, 1_000_000_000, (BILL_1,), True),
        ("SOL", 1, PAYER, 500_000_000, (BILL_1,), True),
    ]


def test_given_a_zero_lamport_transfer_carrying_a_reference_beside_two_paying_ones_then_every_credit_carries_it() -> (
    None
):
    """Review (sp2) finding 4: ix0 sends 0 lamports with bill 1's reference (a wallet putting it on its own
    transfer), ix1 1.0 SOL, ix2 0.5 SOL; bill 1's quote no longer active (not watched: matched late by its reference).
    Before the split the net credit (1,500,000,000 at :0) carried it; in a split a 0-amount transfer's own references
    go with every credit, as a watched key on no credited instruction does."""
    tx = _one_bill_in_two(_sol_transfer(1_000_000_000), _sol_transfer(500_000_000), _sol_transfer(0, BILL_1))

    found = credits(tx, MAINNET, watched=frozenset())

    assert [_credit(credit) for credit in found] == [
        ("SOL", 1, PAYER, 1_000_000_000, (BILL_1,), True),
        ("SOL", 2, PAYER, 500_000_000, (BILL_1,), True),
    ]


def test_given_a_zero_lamport_transfer_with_an_unwatched_key_beside_a_bill_paid_in_two_then_both_credits_carry_it() -> (
    None
):
    """Review (rsp2) minor (b): ix0 sends 0 lamports with a key no quote watches (ELSEWHERE), ix1 1.0 SOL with bill
    1's reference, ix2 0.5 SOL with none. The 0-amount transfer's key goes with every credit; it must not make ix2
    "have a reference of its own" (only watched keys count there): before this fix ix2 kept only ELSEWHERE and lost
    bill 1's reference - bill 1 counted $150 of $225 (1.0 x 150), 0.5 SOL left unattributed."""
    tx = _one_bill_in_two(_sol_transfer(1_000_000_000, BILL_1), _sol_transfer(500_000_000), _sol_transfer(0, ELSEWHERE))

    found = credits(tx, MAINNET, watched=frozenset({BILL_1}))

    assert [_credit(credit) for credit in found] == [
        ("SOL", 1, PAYER, 1_000_000_000, (BILL_1, ELSEWHERE), True),
        ("SOL", 2, PAYER, 500_000_000, (ELSEWHERE, BILL_1), True),
    ]


SECOND_SIGNER = "LbUiWL3xVV8hTFYBVdbTNrpDo41NKS6o3LHHuDzjfcY"  # bytes 0x05 x 32: another party signing the transaction


def test_given_two_signers_each_sending_a_transfer_then_the_other_partys_transfer_does_not_carry_the_reference() -> (
    None
):
    """Review (rsp2) minor (a): the payer sends 1.0 SOL with bill 1's reference; a second signer sends 0.5 SOL with
    none in the same transaction. The merchant held 1 SOL and receives 1,000,000,000 + 500,000,000 = 1,500,000,000
    (the instructions' sum: split). The reference-less transfer is another party's: it is not the same payment's
    other part and must not carry bill 1's reference (before this fix it did: 0.5 SOL of someone else counted for
    bill 1)."""
    other = Instruction(SYSTEM, (SECOND_SIGNER, MERCHANT), struct.pack("<IQ", 2, 500_000_000))
    tx = ChainTransaction(
        signature="two-signers",
        slot=300,
        block_time=None,
        failed=False,
        account_keys=(PAYER, SECOND_SIGNER, MERCHANT, BILL_1, SYSTEM),
        signer_count=2,
        instructions=(_sol_transfer(1_000_000_000, BILL_1), other),
        pre_balances=(10_000_000_000, 5_000_000_000, 1_000_000_000, 0, 1),
        post_balances=(8_999_995_000, 4_500_000_000, 2_500_000_000, 0, 1),  # 10 - 1 - fee; 5 - 0.5; 1 + 1.5 SOL
    )

    found = credits(tx, MAINNET, watched=frozenset({BILL_1}))

    assert [_credit(credit) for credit in found] == [
        ("SOL", 0, PAYER, 1_000_000_000, (BILL_1,), True),
        ("SOL", 1, SECOND_SIGNER, 500_000_000, (), True),
    ]


def _two_signers(*instructions: Instruction) -> ChainTransaction:
    """The payer and a second signer each paying the merchant in one transaction: the merchant held 1 SOL and
    receives 1,000,000,000 (payer) + 500,000,000 (second signer) = 1,500,000,000 lamports, the instructions' sum:
    split."""
    return ChainTransaction(
        signature="two-signers",
        slot=300,
        block_time=None,
        failed=False,
        account_keys=(PAYER, SECOND_SIGNER, MERCHANT, BILL_1, SYSTEM, MEMO),
        signer_count=2,
        instructions=instructions,
        pre_balances=(10_000_000_000, 5_000_000_000, 1_000_000_000, 0, 1, 1),
        post_balances=(8_999_995_000, 4_500_000_000, 2_500_000_000, 0, 1, 1),  # 10 - 1 - fee; 5 - 0.5; 1 + 1.5 SOL
    )


SECOND_PAYS = Instruction(SYSTEM, (SECOND_SIGNER, MERCHANT), struct.pack("<IQ", 2, 500_000_000))


def test_given_the_payers_reference_on_a_zero_lamport_transfer_then_the_other_signers_transfer_does_not_carry_it() -> (
    None
):
    """Review (rsp3) F2: ix0 the payer's 0-lamport transfer with bill 1's reference, ix1 the payer's 1.0 SOL, ix2 the
    second signer's 0.5 SOL. Before: the 0-amount transfer's reference went with every credit - the other party's
    0.5 SOL x $150 = $75.00 counted for bill 1. Now only with the payer's credit."""
    tx = _two_signers(_sol_transfer(0, BILL_1), _sol_transfer(1_000_000_000), SECOND_PAYS)

    found = credits(tx, MAINNET, watched=frozenset({BILL_1}))

    assert [_credit(c) for c in found] == [
        ("SOL", 1, PAYER, 1_000_000_000, (BILL_1,), True),
        ("SOL", 2, SECOND_SIGNER, 500_000_000, (), True),
    ]


def test_given_the_reference_on_a_memo_no_signer_names_then_only_the_fee_payers_transfer_carries_it() -> None:
    """Review (rsp3) F2: ix0 the payer's 1.0 SOL, ix1 the second signer's 0.5 SOL, ix2 a memo naming bill 1's
    reference and no signer. Before: a watched key on no transfer went with every credit ($75.00 of another
    party's money for bill 1); now with the fee payer's (the first signer's) credits only."""
    memo = Instruction(MEMO, (BILL_1,), b"inv-1")
    tx = _two_signers(_sol_transfer(1_000_000_000), SECOND_PAYS, memo)

    found = credits(tx, MAINNET, watched=frozenset({BILL_1}))

    assert [_credit(c) for c in found] == [
        ("SOL", 0, PAYER, 1_000_000_000, (BILL_1,), True),
        ("SOL", 1, SECOND_SIGNER, 500_000_000, (), True),
    ]


def test_given_the_reference_on_a_memo_the_second_signer_signs_then_only_its_transfer_carries_it() -> None:
    """D91 amended (sp4): the memo naming bill 1's reference is the second signer's (its account among the memo's
    signers): the reference goes with its 0.5 SOL (0.5 x $150 = $75.00 for bill 1), not with the payer's 1.0 SOL."""
    memo = Instruction(MEMO, (SECOND_SIGNER, BILL_1), b"inv-1")
    tx = _two_signers(_sol_transfer(1_000_000_000), SECOND_PAYS, memo)

    found = credits(tx, MAINNET, watched=frozenset({BILL_1}))

    assert [_credit(c) for c in found] == [
        ("SOL", 0, PAYER, 1_000_000_000, (), True),
        ("SOL", 1, SECOND_SIGNER, 500_000_000, (BILL_1,), True),
    ]


def test_given_one_credit_sent_by_a_signer_other_than_the_fee_payer_then_a_memos_reference_still_goes_with_it() -> None:
    """D91 amended (sp4): the same-sender test needs credits from two senders; one credit (the second signer's
    0.5 SOL, the payer only paying the fee - a relayer) keeps a watched key on the memo as before. The merchant
    held 1 SOL and holds 1.5 SOL after: delta 500,000,000 lamports, the instruction's amount."""
    memo = Instruction(MEMO, (BILL_1,), b"inv-1")
    tx = replace(
        _two_signers(SECOND_PAYS, memo),
        post_balances=(9_999_995_000, 4_500_000_000, 1_500_000_000, 0, 1, 1),  # 10 - fee; 5 - 0.5; 1 + 0.5 SOL
    )

    found = credits(tx, MAINNET, watched=frozenset({BILL_1}))

    assert [_credit(c) for c in found] == [("SOL", 0, SECOND_SIGNER, 500_000_000, (BILL_1,), True)]


RELAYER = "6TkKqq15wXjqEjNg9zqTKADwuVATR9dW3rkNnsYme1ea"  # a fee payer that pays the merchant nothing


def _pays(sender: str, lamports: int) -> Instruction:
    return Instruction(SYSTEM, (sender, MERCHANT), struct.pack("<IQ", 2, lamports))


@pytest.mark.parametrize(
    "memo_keys",
    [
        pytest.param((BILL_1,), id="memo-naming-no-signer"),
        pytest.param((RELAYER, BILL_1), id="memo-signed-by-the-relayer"),
    ],
)
def test_given_a_relayer_fee_payer_two_paying_signers_and_a_memo_then_the_first_payer_carries_its_reference(
    memo_keys: tuple[str, ...],
) -> None:
    """RELAYER pays the fee and nothing else; PAYER sends 1.0 SOL, SECOND_SIGNER 0.5 SOL; the memo names bill 1's
    reference. D91 amended (sp5): with no signer named, the reference fell to the fee payer, who has no credit - neither
    credit carried it (bill 1 $0.00). D91 amended (sp6): the memo SIGNED by RELAYER (a signer with no credit) - sp5's
    fallback never ran, the same $0.00 (main d185367 counted one net 1.5 SOL x $150 = $225.00). Now, the named signers
    having no credit, the first signer that has one (PAYER, signer 2 of 3) carries it: 1.0 x $150 = $150.00 for bill 1;
    SECOND_SIGNER's 0.5 SOL stays unattributed (no evidence it is bill 1's)."""
    tx = ChainTransaction(
        signature="relay-two",
        slot=300,
        block_time=None,
        failed=False,
        account_keys=(RELAYER, PAYER, SECOND_SIGNER, MERCHANT, BILL_1, SYSTEM, MEMO),
        signer_count=3,
        instructions=(
            _pays(PAYER, 1_000_000_000),
            _pays(SECOND_SIGNER, 500_000_000),
            Instruction(MEMO, memo_keys, b"inv-1"),
        ),
        pre_balances=(1_000_000_000, 10_000_000_000, 5_000_000_000, 1_000_000_000, 0, 1, 1),
        # 1 SOL - 5,000 fee; 10 - 1.0; 5 - 0.5; the merchant 1 + 1.0 + 0.5 = 2.5 SOL (delta = 1.5 SOL = the sum)
        post_balances=(999_995_000, 9_000_000_000, 4_500_000_000, 2_500_000_000, 0, 1, 1),
    )

    found = credits(tx, MAINNET, watched=frozenset({BILL_1}))

    assert [_credit(c) for c in found] == [
        ("SOL", 0, PAYER, 1_000_000_000, (BILL_1,), True),
        ("SOL", 1, SECOND_SIGNER, 500_000_000, (), True),
    ]


def test_given_a_usdc_payer_a_relayer_and_a_program_made_sol_credit_then_the_usdc_carries_the_reference() -> None:
    """D91 amended (sp5): PAYER sends 100 USDC (TransferChecked, bill 1's reference only among the account keys),
    RELAYER pays the fee; the merchant's SOL also rises 1.00 -> 1.01 SOL with no System transfer to it (a program's
    credit: its sender only guessed as the fee payer). Before: the guessed sender counted as a second party, the
    reference went to the fee payer's 0.01 SOL and the 100 USDC carried nothing. Now only transfer instructions name
    senders: one sender (PAYER), every credit carries the reference as before sp4 - the 100 USDC too."""
    ata = str(get_associated_token_address(Pubkey.from_string(MERCHANT), Pubkey.from_string(USDC)))
    source = str(get_associated_token_address(Pubkey.from_string(PAYER), Pubkey.from_string(USDC)))
    checked = bytes([12]) + struct.pack("<QB", 100_000_000, 6)  # TransferChecked 100.000000 USDC, 6 decimals
    tx = ChainTransaction(
        signature="relay-cpi",
        slot=301,
        block_time=None,
        failed=False,
        account_keys=(RELAYER, PAYER, source, ata, USDC, BILL_1, MERCHANT, TOKEN),
        signer_count=2,
        instructions=(Instruction(TOKEN, (source, USDC, ata, PAYER), checked),),
        pre_balances=(1_000_000_000, 1, 2_039_280, 2_039_280, 1, 0, 1_000_000_000, 1),
        # RELAYER 1 - 0.01 - 5,000 fee; the merchant 1 + 0.01 SOL = 1,010,000,000 lamports
        post_balances=(989_995_000, 1, 2_039_280, 2_039_280, 1, 0, 1_010_000_000, 1),
        pre_token_balances=(TokenBalance(2, USDC, PAYER, 500_000_000), TokenBalance(3, USDC, MERCHANT, 0)),
        post_token_balances=(TokenBalance(2, USDC, PAYER, 400_000_000), TokenBalance(3, USDC, MERCHANT, 100_000_000)),
    )

    found = credits(tx, MAINNET, watched=frozenset({BILL_1}))

    assert [_credit(c) for c in found] == [
        ("SOL", -1, RELAYER, 10_000_000, (BILL_1,), True),
        ("USDC", 0, PAYER, 100_000_000, (BILL_1,), True),
    ]
