"""Helpers of the crypto core's tests: the crypto table on moto (created from template.yaml), a settable clock, fixed
rates, and hand-built bills, quotes and transfers (every figure in the tests is worked by hand from these)."""

from __future__ import annotations

import json
from collections.abc import Sequence
from dataclasses import dataclass, field, replace
from datetime import UTC, datetime, timedelta
from decimal import Decimal
from typing import Any

from kilo_crypto_watch.adapters import DynamoCryptoStore
from kilo_crypto_watch.model import (
    Asset,
    Bill,
    BillPayment,
    ChainConfig,
    LockedRate,
    ObservedTransfer,
    PaymentStatus,
    Quote,
    QuoteStatus,
    RateReading,
)
from kilo_crypto_watch.ports import ChainBlock, RateRefusedError
from kilo_crypto_watch.settlement import Settlement
from tests.conftest import Stack
from tests.fakes import RecordingPublisher

T0 = datetime(2026, 11, 2, 9, 0, tzinfo=UTC)  # bills issued; quotes made at T0 + 1 min
MERCHANT_EVM = "0x00000000000000000000000000000000000Ba5e0"
MERCHANT_SOL = "9xQeWvG816bUx9EPjHmaT23yvVM2ZWbrrpZb9PusVFin"
CUSTOMER_WALLET = "0x1111111111111111111111111111111111111111"
STRANGER_WALLET = "0x2222222222222222222222222222222222222222"
USDC_EVM = "0xA0b86991c6218b36c1d19D4a2e9Eb0cE3606eB48"

CHAINS = {
    "ethereum": ChainConfig(
        key="ethereum",
        kind="evm",
        rpc_url="http://127.0.0.1:1",
        merchant_address=MERCHANT_EVM,
        usdc=USDC_EVM,
        native="ETH",
        chain_id=1,
        explorer_tx_url="https://etherscan.io/tx/{tx}",
    ),
    "base": ChainConfig(  # a second EVM chain: a contract wallet's link holds on its own chain only
        key="base",
        kind="evm",
        rpc_url="http://127.0.0.1:1",
        merchant_address=MERCHANT_EVM,
        usdc="0x833589fCD6eDb6E08f4c7C32D4f71b54bdA02913",
        native="ETH",
        chain_id=8453,
        explorer_tx_url="https://basescan.org/tx/{tx}",
    ),
    "solana": ChainConfig(
        key="solana",
        kind="solana",
        rpc_url="http://127.0.0.1:1",
        merchant_address=MERCHANT_SOL,
        usdc="EPjFWdd5AufqSSqeM2qN1xzybapC8G4wEGGkZwyTDt1v",
        native="SOL",
        explorer_tx_url="https://solscan.io/tx/{tx}",
    ),
}


@dataclass
class Clock:
    now: datetime = T0

    def __call__(self) -> datetime:
        return self.now


@dataclass
class FixedRates:
    """``Rates`` answering a fixed price per asset now (or refusing when none is set)."""

    prices: dict[str, Decimal] = field(default_factory=dict)

    def lock(self, asset: Asset, now: datetime) -> LockedRate:
        if asset not in self.prices:
            raise RateRefusedError(f"no price for {asset}")
        price = self.prices[asset]
        reading = RateReading("fixed", asset, price, now)
        return LockedRate(asset, price, (reading,), now)

    def at(self, asset: Asset, when: datetime, block: ChainBlock | None = None) -> LockedRate:
        """The fixed price was the price then too (the rates' own reading of the past is tested on anvil)."""
        return self.lock(asset, when)


def crypto_store(stack: Stack) -> DynamoCryptoStore:
    return DynamoCryptoStore(stack.clients["dynamodb"], stack.template.physical_name("CryptoTable"))


@dataclass
class Harness:
    store: DynamoCryptoStore
    published: RecordingPublisher
    clock: Clock
    rates: FixedRates
    settlement: Settlement

    def events(self, detail_type: str) -> list[dict[str, Any]]:
        return [detail for kind, detail in self.published.published if kind == detail_type]


def harness(stack: Stack) -> Harness:
    store = crypto_store(stack)
    published = RecordingPublisher()
    clock = Clock()
    rates = FixedRates()
    return Harness(store, published, clock, rates, Settlement(store, published, CHAINS, rates, clock=clock))


def billed(stack: Stack, quotes: Sequence[Quote], now: datetime) -> Harness:
    """The harness with acct-1's wallet linked on ethereum, the $100.00 bill ``inv-1`` holding ``quotes``, at ``now``."""
    h = harness(stack)
    h.store.link_wallet("evm", CUSTOMER_WALLET, "acct-1", "ethereum", T0)
    assert h.store.create_bill(bill())
    for made in quotes:
        h.store.add_quote(made)
    h.clock.now = now
    return h


def quote_statuses(h: Harness, invoice_id: str = "inv-1") -> dict[str, QuoteStatus]:
    """The bill's quotes as stored, by id."""
    return {q.quote_id: q.status for q in h.store.quotes(invoice_id)}


def bill(invoice_id: str = "inv-1", account_id: str = "acct-1", total: str = "100.00") -> Bill:
    return Bill(
        invoice_id=invoice_id,
        account_id=account_id,
        number=f"KB-{invoice_id}",
        period="2026-10",
        total_usd=Decimal(total),
        issued_at=T0,
    )


def bill_with(total: Decimal | str, drawn: Sequence[tuple[str, Decimal | str, PaymentStatus, bool]]) -> Bill:
    """``bill`` of ``total`` holding one payment line per drawn (asset, USD, status, under review), in order: payment
    ids p0, p1... of transactions t0, t1..."""
    payments = tuple(
        BillPayment(f"p{i}", f"t{i}", asset, Decimal(usd), status, review=review)  # type: ignore[arg-type]
        for i, (asset, usd, status, review) in enumerate(drawn)
    )
    return replace(bill(total=str(total)), payments=payments)


def quote(
    quote_id: str,
    asset: Asset,
    atomic: int,
    rate: str,
    invoice_id: str = "inv-1",
    account_id: str = "acct-1",
    chain: str = "ethereum",
    amount_usd: str = "100.00",
    reference: str | None = None,
) -> Quote:
    created = T0 + timedelta(minutes=1)
    return Quote(
        quote_id=quote_id,
        invoice_id=invoice_id,
        account_id=account_id,
        chain=chain,
        asset=asset,
        amount_usd=Decimal(amount_usd),
        rate=LockedRate(asset, Decimal(rate), (RateReading("fixed", asset, Decimal(rate), created),), created),
        atomic_amount=atomic,
        pay_to=CHAINS[chain].merchant_address,
        created_at=created,
        expires_at=created + timedelta(minutes=30),
        monitor_until=created + timedelta(hours=72),
        payment_uri=f"test:{quote_id}",
        reference=reference,
    )


def transfer(
    tx: str,
    asset: Asset,
    atomic: int,
    at: datetime,
    sender: str = CUSTOMER_WALLET,
    chain: str = "ethereum",
    index: int = 0,
    references: tuple[str, ...] = (),
    succeeded: bool = True,
) -> ObservedTransfer:
    return ObservedTransfer(
        chain=chain,
        asset=asset,
        tx_id=tx,
        index=index,
        block_number=100,
        block_hash="0xblock",
        sender=sender,
        recipient=CHAINS[chain].merchant_address,
        atomic_amount=atomic,
        succeeded=succeeded,
        references=references,
        block_time=at,
    )


class SpotPrices:
    """A local exchange spot API (Coinbase's shape) on 127.0.0.1, a free port; ``prices`` answer per asset."""

    def __init__(self) -> None:
        import threading  # noqa: PLC0415
        from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer  # noqa: PLC0415

        prices = self.prices = {"ETH": "2510.00", "SOL": "150.50", "USDC": "0.9995"}

        class Handler(BaseHTTPRequestHandler):
            def do_GET(self) -> None:
                asset = self.path.rsplit("/", 2)[-2].split("-")[0]
                body = json.dumps({"data": {"base": asset, "currency": "USD", "amount": prices[asset]}}).encode()
                self.send_response(200)
                self.send_header("Content-Type", "application/json")
                self.send_header("Content-Length", str(len(body)))
                self.end_headers()
                self.wfile.write(body)

            def log_message(self, format: str, *args: object) -> None:
                return

        self._server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self._thread = threading.Thread(target=self._server.serve_forever, daemon=True)
        self._thread.start()
        self.url = f"http://127.0.0.1:{self._server.server_address[1]}/v2/prices/{{asset}}-USD/spot"

    def stop(self) -> None:
        self._server.shutdown()
        self._server.server_close()
        self._thread.join(5)


@dataclass
class OnChainFeed:
    """A primary ``PriceSource`` standing in for Chainlink (the EVM helper's chainlink.py is tested on anvil)."""

    prices: dict[str, Decimal] = field(
        default_factory=lambda: {"ETH": Decimal("2500.00"), "SOL": Decimal("150.00"), "USDC": Decimal("1.0001")}
    )

    def read(self, asset: Asset) -> RateReading:
        return RateReading(
            f"chainlink:ethereum:{asset}", asset, self.prices[asset], datetime.now(UTC) - timedelta(minutes=5), 3600
        )
