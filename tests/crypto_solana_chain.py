"""A Solana test chain on the LiteSVM stand-in, driven through the real ``solana`` client: a merchant wallet, a
6-decimal USDC-like mint with the merchant's associated token account, a funded payer, and payments the way a Solana
Pay wallet makes them (System transfer / SPL ``transfer_checked`` with the reference key appended read-only, a Memo
instruction)."""

from __future__ import annotations

import asyncio
from collections.abc import Callable

import spl.token.instructions as token
from solana.rpc.async_api import AsyncClient
from solana.rpc.models import TxOpts
from solders.instruction import AccountMeta, Instruction
from solders.keypair import Keypair
from solders.message import Message
from solders.pubkey import Pubkey
from solders.system_program import CreateAccountParams, TransferParams, create_account, transfer
from solders.transaction import VersionedTransaction
from spl.memo.constants import MEMO_PROGRAM_ID
from spl.token.constants import TOKEN_PROGRAM_ID
from spl.token.models import InitializeAccount3Params, InitializeMint2Params, MintToCheckedParams, TransferCheckedParams

from kilo_crypto_watch.model import ChainConfig
from kilo_dev.solana_standin import SolanaStandin

SOL = 1_000_000_000
USDC = 1_000_000


class SolanaTestChain:
    def __init__(self, standin: SolanaStandin) -> None:
        self.standin = standin
        self.merchant = Keypair()
        self.payer = Keypair()
        standin.airdrop(self.merchant.pubkey(), 1 * SOL)  # the merchant's wallet exists (rent-exempt)
        standin.airdrop(self.payer.pubkey(), 100 * SOL)
        self.usdc = self.create_mint(decimals=6)
        self.send(
            [token.create_idempotent_associated_token_account(self.payer.pubkey(), self.merchant.pubkey(), self.usdc)]
        )
        self.fund_tokens(self.usdc, 1_000 * USDC)

    def config(self, start_block: int = 0) -> ChainConfig:
        return ChainConfig(
            key="solana",
            kind="solana",
            rpc_url=self.standin.url,
            merchant_address=str(self.merchant.pubkey()),
            usdc=str(self.usdc),
            native="SOL",
            start_block=start_block,
        )

    # -- setup -------------------------------------------------------------------------------------------------------
    def create_mint(self, decimals: int) -> Pubkey:
        return self._token_program_account(
            82,
            lambda mint: token.initialize_mint2(
                InitializeMint2Params(
                    program_id=TOKEN_PROGRAM_ID, mint=mint, decimals=decimals, mint_authority=self.payer.pubkey()
                )
            ),
        )

    def create_token_account(self, owner: Pubkey, mint: Pubkey) -> Pubkey:
        """A token account of ``mint`` owned by ``owner`` that is not its associated token account (anyone may create
        one: the payer does, at its own expense)."""
        return self._token_program_account(
            165,
            lambda account: token.initialize_account3(
                InitializeAccount3Params(program_id=TOKEN_PROGRAM_ID, account=account, mint=mint, owner=owner)
            ),
        )

    def _token_program_account(self, space: int, initialize: Callable[[Pubkey], Instruction]) -> Pubkey:
        """A new account of the token program, rent paid by the payer, initialised by ``initialize(address)``."""
        account = Keypair()
        rent = self.standin.svm.minimum_balance_for_rent_exemption(space)
        create = CreateAccountParams(
            from_pubkey=self.payer.pubkey(),
            to_pubkey=account.pubkey(),
            lamports=rent,
            space=space,
            owner=TOKEN_PROGRAM_ID,
        )
        self.send([create_account(create), initialize(account.pubkey())], extra_signers=[account])
        return account.pubkey()

    def fund_tokens(self, mint: Pubkey, amount: int) -> None:
        source = token.get_associated_token_address(self.payer.pubkey(), mint)
        self.send(
            [
                token.create_idempotent_associated_token_account(self.payer.pubkey(), self.payer.pubkey(), mint),
                token.mint_to_checked(
                    MintToCheckedParams(
                        program_id=TOKEN_PROGRAM_ID,
                        mint=mint,
                        dest=source,
                        mint_authority=self.payer.pubkey(),
                        amount=amount,
                        decimals=6,
                    )
                ),
            ]
        )

    # -- payments ----------------------------------------------------------------------------------------------------
    def pay_sol(
        self,
        lamports: int,
        reference: Pubkey | None = None,
        memo: str | None = None,
        to: Pubkey | None = None,
        skip_preflight: bool = False,
    ) -> str:
        ix = transfer(
            TransferParams(from_pubkey=self.payer.pubkey(), to_pubkey=to or self.merchant.pubkey(), lamports=lamports)
        )
        return self.send(self._solana_pay(ix, reference, memo), skip_preflight=skip_preflight)

    def pay_usdc(
        self,
        amount: int,
        reference: Pubkey | None = None,
        memo: str | None = None,
        mint: Pubkey | None = None,
        to: Pubkey | None = None,
    ) -> str:
        mint = mint or self.usdc
        owner = to or self.merchant.pubkey()
        ixs = [token.create_idempotent_associated_token_account(self.payer.pubkey(), owner, mint)]
        ix = token.transfer_checked(
            TransferCheckedParams(
                program_id=TOKEN_PROGRAM_ID,
                source=token.get_associated_token_address(self.payer.pubkey(), mint),
                mint=mint,
                dest=token.get_associated_token_address(owner, mint),
                owner=self.payer.pubkey(),
                amount=amount,
                decimals=6,
            )
        )
        return self.send([*ixs, *self._solana_pay(ix, reference, memo)])

    @staticmethod
    def _solana_pay(ix: Instruction, reference: Pubkey | None, memo: str | None) -> list[Instruction]:
        if reference is not None:  # Solana Pay: the reference as a read-only, non-signer key of the transfer
            ix = Instruction(ix.program_id, ix.data, [*ix.accounts, AccountMeta(reference, False, False)])
        if memo is None:
            return [ix]
        return [ix, Instruction(MEMO_PROGRAM_ID, memo.encode(), [])]

    def send(
        self, instructions: list[Instruction], extra_signers: list[Keypair] | None = None, skip_preflight: bool = False
    ) -> str:
        async def go() -> str:
            async with AsyncClient(self.standin.url) as client:
                blockhash = (await client.get_latest_blockhash()).value.blockhash
                message = Message.new_with_blockhash(instructions, self.payer.pubkey(), blockhash)
                tx = VersionedTransaction(message, [self.payer, *(extra_signers or [])])
                opts = TxOpts(skip_preflight=skip_preflight, preflight_commitment="confirmed")
                return str((await client.send_transaction(tx, opts=opts)).value)

        return asyncio.run(go())
