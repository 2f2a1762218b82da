"""End to end on the local stack with its chains (``LocalStack(crypto=True)``: anvil, the LiteSVM Solana stand-in and
an exchange spot-price stand-in): five crypto bills, opened from issued crypto invoices on the bus, are paid through the
real routes - USDC and ETH on anvil, SOL through Solana Pay, one underpaying inside tolerance, one paying after its
quote expired - the watchers run on their schedules, finality comes, and every bill settles as the independent ground
truth says. Also: every quote's rate comes from Chainlink (the deployed aggregator) and the exchange, in that order.

Hand-worked figures (feeds ETH $3,000.00, SOL $150.00; USDC locked at 1):
- $100.00 in USDC: 100_000_000 units; settled $100.00.
- $65.20 in ETH: 65.20 / 3000 = 0.0217333... ETH, rounded up: 21_733_333_333_333_334 wei; worth $65.20.
- $12.34 in SOL: 12.34 / 150 = 0.0822666... SOL, rounded up: 82_266_667 lamports; worth $12.34.
- $250.00 underpaid: tolerance min(0.5 % x 250, $1) = $1.00; half of it short: 249_500_000 units, $0.50 written off.
- $80.00 late in USDC: 80_000_000 units, counted 1:1, flag PAID_LATE.
"""

from __future__ import annotations

from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from decimal import Decimal
from typing import Any

import pytest

pytestmark = pytest.mark.e2e

TOTALS = {
    "acct-crypto-usdc": Decimal("100.00"),
    "acct-crypto-eth": Decimal("65.20"),
    "acct-crypto-sol": Decimal("12.34"),
    "acct-crypto-under": Decimal("250.00"),
    "acct-crypto-late": Decimal("80.00"),
}


def _clear() -> None:
    from kilo_crypto_watch import evm_handler  # noqa: PLC0415
    from tests.conftest import _clear_caches  # noqa: PLC0415

    _clear_caches()
    evm_handler.rpc.cache_clear()


@pytest.fixture(scope="module")
def crypto_stack(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Any]:
    from kilo_dev.localstack import LocalSettings, LocalStack  # noqa: PLC0415

    settings = LocalSettings.from_env()
    settings.parameters = {"LogLevel": "ERROR"}
    log_path = tmp_path_factory.mktemp("crypto-stack") / "local-stack.log"
    stack = LocalStack(settings, log=lambda _: None, log_path=log_path, autopoll=False, crypto=True)
    _clear()
    try:
        stack.start()
        yield stack
    finally:
        anvil = stack.chains.anvil if stack.chains is not None else None
        stack.stop()
        _clear()
        if anvil is not None:
            assert anvil.process.poll() is not None  # anvil is gone, stopped by its PID


def test_given_the_ground_truth_then_it_matches_the_hand_worked_figures() -> None:
    from kilo_dev.crypto_local import FEED_PRICES  # noqa: PLC0415
    from kilo_dev.ground_truth import expected_crypto  # noqa: PLC0415

    prices = dict(FEED_PRICES)
    assert expected_crypto("usdc", Decimal("100.00"), prices).quoted_atomic == 100_000_000
    eth = expected_crypto("eth", Decimal("65.20"), prices)
    assert (eth.quoted_atomic, eth.settled_usd) == (21_733_333_333_333_334, Decimal("65.20"))
    sol = expected_crypto("sol", Decimal("12.34"), prices)
    assert (sol.quoted_atomic, sol.settled_usd) == (82_266_667, Decimal("12.34"))
    under = expected_crypto("underpay", Decimal("250.00"), prices)
    assert (under.paid_atomic, under.settled_usd, under.written_off_usd) == (
        249_500_000,
        Decimal("249.50"),
        Decimal("0.50"),
    )
    assert under.flags == {"PARTIAL"}
    late = expected_crypto("late", Decimal("80.00"), prices)
    assert (late.paid_atomic, late.flags, late.late) == (80_000_000, {"PAID_LATE"}, True)


def test_given_five_crypto_bills_when_paid_on_the_local_chains_then_each_settles_as_expected(crypto_stack: Any) -> None:
    import boto3  # noqa: PLC0415

    from kilo_billing.contracts import SOURCE_INVOICING, InvoiceIssuedV1  # noqa: PLC0415
    from kilo_billing.publisher import EventBridgePublisher  # noqa: PLC0415
    from kilo_dev.crypto_demo import CryptoBill, pay_bills, travel_shift  # noqa: PLC0415

    stack = crypto_stack
    bus = stack.template.physical_name("BillingEventBus")
    publisher = EventBridgePublisher(boto3.client("events"), bus, SOURCE_INVOICING)
    bills = []
    for number, (account, total) in enumerate(TOTALS.items(), start=1):
        invoice_id = f"{account}/2026-10"  # the ledger's ids: a slash, encoded in the path
        event = InvoiceIssuedV1(
            event_id=f"invoice-issued:{invoice_id}",
            account_id=account,
            invoice_id=invoice_id,
            number=f"KILO-{number:04d}",
            period="2026-10",
            total=str(total),
            method="crypto",
            status="open",
            occurred_at=(datetime.now(UTC) - timedelta(hours=1)).isoformat(),
        )
        publisher.publish(InvoiceIssuedV1.DETAIL_TYPE, event.model_dump(mode="json"))
        bills.append(CryptoBill(account, invoice_id, total))
    travellers: list[Any] = []
    try:
        outcomes = pay_bills(stack, bills, travel_shift(travellers))
    finally:
        for travel in reversed(travellers):
            travel.stop()
    assert [o.expected.scenario for o in outcomes] == ["usdc", "eth", "sol", "underpay", "late"]
    assert {o.bill.account_id: o.problems for o in outcomes} == {account: [] for account in TOTALS}
    feeds = stack.chains.feeds
    for outcome in outcomes:  # both price sources: the deployed aggregator (Chainlink) first, then the exchange
        asset = outcome.quote["asset"]
        readings = [(r["source"], Decimal(r["price_usd"])) for r in outcome.quote["rate_sources"]]
        assert readings == [
            (f"chainlink:ethereum:{feeds[asset]}", {"ETH": 3000, "SOL": 150, "USDC": 1}[asset]),
            (
                "exchange:coinbase",
                {"ETH": Decimal("3012.50"), "SOL": Decimal("149.40"), "USDC": Decimal("1.0002")}[asset],
            ),
        ]
    assert [o.final.status.value for o in outcomes] == ["PAID"] * 5
    failed = [f.name for f in stack.functions.values() if f.errors]
    assert failed == []
