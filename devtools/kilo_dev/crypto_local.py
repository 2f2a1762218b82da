"""The local stack's chains, for the crypto part of the demo and its e2e test (``LocalStack(..., crypto=True)``).

On ``start()``: anvil (127.0.0.1, a free port, its genesis at the process's clock, ``finalized`` 8 blocks behind the
head) with the committed 6-decimal test USDC and three Chainlink-compatible aggregators (ETH/USD, SOL/USD, USDC/USD at
``FEED_PRICES``, 8 decimals, updated now); the LiteSVM Solana stand-in with a USDC mint, the merchant's wallet and
associated token account, and a funded customer; customer wallets on anvil funded with test USDC (and anvil's 10,000
ETH each); and an exchange spot-price stand-in answering Coinbase's ``/v2/prices/<A>-USD/spot`` shape at
``EXCHANGE_PRICES`` (within 1 % of the feeds), its ``Date`` header on the process's clock.

``parameters()`` is what the template needs to point the crypto function at them (``CryptoChains`` with RPC URLs,
merchant addresses, the USDC contract and mint, chain id and start block; ``CryptoPriceFeeds``;
``CryptoExchangePriceUrl``; the EVM watcher's schedule enabled). ``stop()`` ends anvil by its PID and the two servers
(threads of this process).
"""

from __future__ import annotations

import asyncio
import json
import threading
import time
from decimal import Decimal
from email.utils import formatdate
from http.server import BaseHTTPRequestHandler
from pathlib import Path
from typing import Any, Final

from kilo_dev.processes import LoopbackServer

FEED_PRICES: Final = {"ETH": Decimal("3000.00"), "SOL": Decimal("150.00"), "USDC": Decimal("1.00")}
EXCHANGE_PRICES: Final = {"ETH": Decimal("3012.50"), "SOL": Decimal("149.40"), "USDC": Decimal("1.0002")}
FEED_DECIMALS: Final = 8
FEED_HEARTBEAT_S: Final = 86_400  # the demo's month close and late payment stay inside it
FINALITY_LAG_BLOCKS: Final = 8  # anvil with --slots-in-an-epoch 4
USDC_UNIT: Final = 10**6
SOL_UNIT: Final = 10**9
CUSTOMER_USDC: Final = 1_000_000 * USDC_UNIT  # each customer wallet's test USDC


class ExchangeStandin:
    """Coinbase's spot-price shape on 127.0.0.1 (a free port, a thread of this process): ``GET
    /v2/prices/<ASSET>-USD/spot`` -> ``{"data": {"base", "currency", "amount"}}`` with a ``Date`` header."""

    def __init__(self, prices: dict[str, Decimal]) -> None:
        self.prices = dict(prices)
        self.requests = 0
        standin = self

        class Handler(BaseHTTPRequestHandler):
            def do_GET(self) -> None:
                standin.requests += 1
                parts = self.path.strip("/").split("/")
                pair = parts[2] if len(parts) == 4 and parts[:2] == ["v2", "prices"] and parts[3] == "spot" else ""
                base, _, currency = pair.partition("-")
                if base not in standin.prices or currency != "USD":
                    self._send(404, {"errors": [{"id": "not_found", "message": f"Invalid currency pair {pair}"}]})
                    return
                self._send(200, {"data": {"base": base, "currency": "USD", "amount": str(standin.prices[base])}})

            def _send(self, status: int, body: object) -> None:
                raw = json.dumps(body).encode()
                self.send_response(status)
                self.send_header("Content-Type", "application/json")
                self.send_header("Date", formatdate(time.time(), usegmt=True))
                self.send_header("Content-Length", str(len(raw)))
                self.end_headers()
                self.wfile.write(raw)

            def log_message(self, format: str, *args: Any) -> None:
                pass

        self._http = LoopbackServer(Handler, "exchange-standin")

    @property
    def url(self) -> str:
        return self._http.url

    def start(self) -> ExchangeStandin:
        self._http.start()
        return self

    def stop(self) -> None:
        self._http.stop()


class LocalChains:
    """anvil + the Solana stand-in + the exchange stand-in, set up for the crypto function (module docstring)."""

    def __init__(self, log_path: Path | None = None) -> None:
        self.log_path = log_path
        self.anvil: Any = None
        self.solana: Any = None
        self.exchange: ExchangeStandin | None = None
        self.w3: Any = None
        self.usdc = ""
        self.feeds: dict[str, str] = {}
        self.start_block = 0
        self.sol_merchant: Any = None
        self.sol_customer: Any = None
        self.sol_mint: Any = None
        self._nonce_lock = threading.Lock()

    # --- lifecycle ----------------------------------------------------------------------------------------------
    def start(self) -> LocalChains:
        try:
            self._start_evm()
            self._start_solana()
            self.exchange = ExchangeStandin(EXCHANGE_PRICES).start()
        except BaseException:
            self.stop()
            raise
        return self

    def stop(self) -> None:
        if self.exchange is not None:
            self.exchange.stop()
            self.exchange = None
        if self.solana is not None:
            self.solana.stop()
            self.solana = None
        if self.anvil is not None:
            self.anvil.stop()  # by its PID

    @property
    def merchant_evm(self) -> str:
        from kilo_dev.anvil import DEV_ACCOUNTS  # noqa: PLC0415

        return DEV_ACCOUNTS[5]

    @property
    def customers_evm(self) -> tuple[str, ...]:
        from kilo_dev.anvil import DEV_ACCOUNTS  # noqa: PLC0415

        return DEV_ACCOUNTS[1:5]

    def _start_evm(self) -> None:
        from web3 import HTTPProvider, Web3  # noqa: PLC0415

        from kilo_dev import contracts  # noqa: PLC0415
        from kilo_dev.anvil import DEV_ACCOUNTS, Anvil  # noqa: PLC0415

        self.anvil = Anvil(slots_in_an_epoch=4, log_path=self.log_path, timestamp=int(time.time())).start()
        self.w3 = Web3(HTTPProvider(self.anvil.url))
        self.usdc = self._deploy(contracts, "TestUSDC")
        descriptions = {"ETH": "ETH / USD", "SOL": "SOL / USD", "USDC": "USDC / USD"}
        for asset, price in FEED_PRICES.items():
            answer = int(price * 10**FEED_DECIMALS)
            self.feeds[asset] = self._deploy(contracts, "TestAggregator", FEED_DECIMALS, descriptions[asset], answer)
            feed = self.w3.eth.contract(address=self.feeds[asset], abi=contracts.load("TestAggregator")["abi"])
            self._wait(feed.functions.setAnswer(answer, int(time.time())).transact({"from": DEV_ACCOUNTS[0]}))
        token = self._token()
        for customer in self.customers_evm:
            self._wait(token.functions.mint(customer, CUSTOMER_USDC).transact({"from": DEV_ACCOUNTS[0]}))
        self.start_block = self.head() + 1

    def _start_solana(self) -> None:
        import spl.token.instructions as token  # noqa: PLC0415
        from solders.keypair import Keypair  # noqa: PLC0415
        from solders.system_program import CreateAccountParams, create_account  # noqa: PLC0415
        from spl.token.constants import TOKEN_PROGRAM_ID  # noqa: PLC0415
        from spl.token.models import InitializeMint2Params, MintToCheckedParams  # noqa: PLC0415

        from kilo_dev.solana_standin import SolanaStandin  # noqa: PLC0415

        self.solana = SolanaStandin(genesis_time=int(time.time())).start()
        self.sol_merchant, self.sol_customer, mint = Keypair(), Keypair(), Keypair()
        self.solana.airdrop(self.sol_merchant.pubkey(), 1 * SOL_UNIT)  # the merchant's wallet exists (rent-exempt)
        self.solana.airdrop(self.sol_customer.pubkey(), 10_000 * SOL_UNIT)
        payer = self.sol_customer.pubkey()
        rent = self.solana.svm.minimum_balance_for_rent_exemption(82)
        self.send_solana(
            [
                create_account(
                    CreateAccountParams(
                        from_pubkey=payer, to_pubkey=mint.pubkey(), lamports=rent, space=82, owner=TOKEN_PROGRAM_ID
                    )
                ),
                token.initialize_mint2(
                    InitializeMint2Params(
                        program_id=TOKEN_PROGRAM_ID, mint=mint.pubkey(), decimals=6, mint_authority=payer
                    )
                ),
            ],
            extra_signers=[mint],
        )
        self.sol_mint = mint.pubkey()
        self.send_solana(
            [
                token.create_idempotent_associated_token_account(payer, self.sol_merchant.pubkey(), self.sol_mint),
                token.create_idempotent_associated_token_account(payer, payer, self.sol_mint),
                token.mint_to_checked(
                    MintToCheckedParams(
                        program_id=TOKEN_PROGRAM_ID,
                        mint=self.sol_mint,
                        dest=token.get_associated_token_address(payer, self.sol_mint),
                        mint_authority=payer,
                        amount=CUSTOMER_USDC,
                        decimals=6,
                    )
                ),
            ]
        )
        self.solana.finalize()

    # --- configuration ----------------------------------------------------------------------------------------------
    def chains(self) -> list[dict[str, Any]]:
        from kilo_dev.anvil import CHAIN_ID  # noqa: PLC0415

        return [
            {
                "key": "ethereum",
                "kind": "evm",
                "rpc_url": self.anvil.url,
                "merchant_address": self.merchant_evm,
                "usdc": self.usdc,
                "native": "ETH",
                "chain_id": CHAIN_ID,
                "start_block": self.start_block,
            },
            {
                "key": "solana",
                "kind": "solana",
                "rpc_url": self.solana.url,
                "merchant_address": str(self.sol_merchant.pubkey()),
                "usdc": str(self.sol_mint),
                "native": "SOL",
                "start_block": self.solana.slot,
            },
        ]

    def parameters(self) -> dict[str, str]:
        """The template parameters pointing the crypto function at these chains and prices."""
        assert self.exchange is not None
        feeds = {
            asset: {"chain": "ethereum", "address": address, "heartbeat_seconds": FEED_HEARTBEAT_S}
            for asset, address in self.feeds.items()
        }
        return {
            "CryptoChains": json.dumps(self.chains(), separators=(",", ":")),
            "CryptoWatchEthereum": "ENABLED",
            "CryptoPriceFeeds": json.dumps(feeds, separators=(",", ":")),
            "CryptoExchangePriceUrl": f"{self.exchange.url}/v2/prices/{{asset}}-USD/spot",
        }

    # --- the chains, as customers and time drive them -------------------------------------------------------------
    def head(self) -> int:
        return int(self.w3.eth.block_number)

    def pay_usdc_evm(self, sender: str, atomic: int) -> str:
        return self._wait(self._token().functions.transfer(self.merchant_evm, atomic).transact({"from": sender}))

    def pay_eth(self, sender: str, wei: int) -> str:
        return self._wait(self.w3.eth.send_transaction({"from": sender, "to": self.merchant_evm, "value": wei}))

    def pay_solana(self, asset: str, atomic: int, reference: str | None, memo: str | None) -> str:
        """A Solana Pay transfer from the customer: SOL (System transfer) or USDC (``transfer_checked`` to the
        merchant's token account), the reference appended read-only, the memo as a Memo instruction."""
        import spl.token.instructions as token  # noqa: PLC0415
        from solders.instruction import AccountMeta, Instruction  # noqa: PLC0415
        from solders.pubkey import Pubkey  # noqa: PLC0415
        from solders.system_program import TransferParams, transfer  # noqa: PLC0415
        from spl.memo.constants import MEMO_PROGRAM_ID  # noqa: PLC0415
        from spl.token.constants import TOKEN_PROGRAM_ID  # noqa: PLC0415
        from spl.token.models import TransferCheckedParams  # noqa: PLC0415

        payer, merchant = self.sol_customer.pubkey(), self.sol_merchant.pubkey()
        if asset == "SOL":
            ix = transfer(TransferParams(from_pubkey=payer, to_pubkey=merchant, lamports=atomic))
        else:
            ix = token.transfer_checked(
                TransferCheckedParams(
                    program_id=TOKEN_PROGRAM_ID,
                    source=token.get_associated_token_address(payer, self.sol_mint),
                    mint=self.sol_mint,
                    dest=token.get_associated_token_address(merchant, self.sol_mint),
                    owner=payer,
                    amount=atomic,
                    decimals=6,
                )
            )
        if reference is not None:
            keys = [*ix.accounts, AccountMeta(Pubkey.from_string(reference), is_signer=False, is_writable=False)]
            ix = Instruction(ix.program_id, ix.data, keys)
        instructions = [ix] if memo is None else [ix, Instruction(MEMO_PROGRAM_ID, memo.encode(), [])]
        return self.send_solana(instructions)

    def finalize(self) -> None:
        """Finality for all so far: blocks mined past anvil's ``finalized`` tag, the stand-in's slots advanced."""
        self.anvil.mine(FINALITY_LAG_BLOCKS + 1)
        self.solana.finalize()

    def catch_up_solana(self) -> None:
        """Advance the stand-in's slots until its block time reaches the process's clock (400 ms a slot), after a
        long stretch of the demo without Solana transactions."""
        behind = int(time.time()) - self.solana.block_time(self.solana.slot)
        if behind > 0:
            self.solana.advance(behind * 5 // 2)

    def shift_time(self, seconds: int) -> None:
        """Move anvil's clock on by ``seconds`` (the caller moves the process's clock by as much)."""
        self.anvil.call("evm_increaseTime", hex(seconds))

    def send_solana(self, instructions: list[Any], extra_signers: list[Any] | None = None) -> str:
        from solana.rpc.async_api import AsyncClient  # noqa: PLC0415
        from solana.rpc.models import TxOpts  # noqa: PLC0415
        from solders.message import Message  # noqa: PLC0415
        from solders.transaction import VersionedTransaction  # noqa: PLC0415

        async def go() -> str:
            async with AsyncClient(self.solana.url) as client:
                blockhash = (await client.get_latest_blockhash()).value.blockhash
                message = Message.new_with_blockhash(instructions, self.sol_customer.pubkey(), blockhash)
                tx = VersionedTransaction(message, [self.sol_customer, *(extra_signers or [])])
                opts = TxOpts(preflight_commitment="confirmed")
                return str((await client.send_transaction(tx, opts=opts)).value)

        return asyncio.run(go())

    # --- helpers ---------------------------------------------------------------------------------------------------
    def _token(self) -> Any:
        from kilo_dev import contracts  # noqa: PLC0415

        return self.w3.eth.contract(address=self.usdc, abi=contracts.load("TestUSDC")["abi"])

    def _deploy(self, contracts: Any, name: str, *args: Any) -> str:
        from kilo_dev.anvil import DEV_ACCOUNTS  # noqa: PLC0415

        compiled = contracts.load(name)
        factory = self.w3.eth.contract(abi=compiled["abi"], bytecode=compiled["bytecode"])
        tx_hash = factory.constructor(*args).transact({"from": DEV_ACCOUNTS[0]})
        return str(self.w3.eth.wait_for_transaction_receipt(tx_hash, timeout=10)["contractAddress"])

    def _wait(self, tx_hash: Any) -> str:
        self.w3.eth.wait_for_transaction_receipt(tx_hash, timeout=10)
        return "0x" + bytes(tx_hash).hex()
