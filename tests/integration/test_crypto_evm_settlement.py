"""Crypto bills settled end to end on a real chain: payments made on anvil (the committed 6-decimal test USDC, native
ETH), the scheduled EVM watcher's handler (``evm_handler.lambda_handler`` with its template environment, its RPC URL
from the Secrets Manager secret) reporting to the real settlement on the crypto table (moto, from template.yaml).

Hand-worked figures: a $100.00 bill. USDC is locked at 1: the quote asks 100 USDC = 100_000_000 units; tolerance
min(0.5 % x $100, $1) = $0.50. ETH locked at $2,500.00: the quote asks 0.04 ETH = 40_000_000_000_000_000 wei.
"""

from __future__ import annotations

import json
import os
from collections.abc import Iterator
from dataclasses import dataclass, replace
from datetime import UTC, datetime, timedelta
from decimal import Decimal
from typing import Any

import pytest
from web3 import Web3

from kilo_crypto_watch.adapters import DynamoCryptoStore
from kilo_crypto_watch.model import (
    Asset,
    Bill,
    BillFlag,
    BillStatus,
    LockedRate,
    PaymentStatus,
    Quote,
    QuoteStatus,
    RateReading,
)
from kilo_dev import contracts
from tests.conftest import LambdaContext, Stack
from tests.evm_chain import FINALITY_LAG, MERCHANT, OTHER, PAYER, USDC, Chain, deploy

USDC_QUOTE = 100_000_000
ETH_QUOTE = 40_000_000_000_000_000
GWEI = 1_000_000_000


@dataclass
class Billing:
    """The crypto side of one account on moto, and the watcher's scheduled run on anvil."""

    chain: Chain
    store: DynamoCryptoStore
    context: LambdaContext
    opened_at: datetime

    def run(self) -> dict[str, Any]:
        from kilo_crypto_watch import evm_handler  # noqa: PLC0415

        return evm_handler.lambda_handler({"chain": "ethereum"}, self.context)  # type: ignore[arg-type]

    def final(self) -> dict[str, Any]:
        """Mine past anvil's finalized tag and run again."""
        self.chain.mine(FINALITY_LAG)
        return self.run()

    def bill(self) -> Bill:
        found = self.store.bill("inv-1")
        assert found is not None
        return found

    def quote_status(self) -> dict[str, QuoteStatus]:
        return {q.quote_id: q.status for q in self.store.quotes("inv-1")}


def _quote(quote_id: str, asset: Asset, atomic: int, rate: str, created: datetime) -> Quote:
    locked = LockedRate(asset, Decimal(rate), (RateReading("fixed", asset, Decimal(rate), created),), created)
    return Quote(
        quote_id=quote_id,
        invoice_id="inv-1",
        account_id="acct-1",
        chain="ethereum",
        asset=asset,
        amount_usd=Decimal("100.00"),
        rate=locked,
        atomic_amount=atomic,
        pay_to=MERCHANT,
        created_at=created,
        expires_at=created + timedelta(minutes=30),
        monitor_until=created + timedelta(hours=72),
        payment_uri=f"test:{quote_id}",
    )


@pytest.fixture
def billing(
    stack: Stack, chain: Chain, monkeypatch: pytest.MonkeyPatch, lambda_context: LambdaContext
) -> Iterator[Billing]:
    from kilo_crypto_watch import dependencies, evm_handler  # noqa: PLC0415
    from kilo_crypto_watch import settings as crypto_settings  # noqa: PLC0415

    for key, value in stack.template.function_environment("CryptoEvmWatcherFunction").items():
        monkeypatch.setenv(key, value)
    chains = [
        {
            "key": "ethereum",
            "merchant_address": MERCHANT,
            "rpc_url": "http://127.0.0.1:9/not-this-one",  # the secret's URL replaces it
            "usdc": chain.usdc,
            "chain_id": chain.node.chain_id,
            "start_block": chain.head() + 1,
        }
    ]
    monkeypatch.setenv("CRYPTO_CHAINS", json.dumps(chains))
    stack.clients["secretsmanager"].create_secret(
        Name=stack.template.parameters["CryptoRpcSecretName"], SecretString=json.dumps({"ethereum": chain.node.url})
    )
    crypto_settings.settings.cache_clear()
    dependencies.clear_caches()
    evm_handler.rpc.cache_clear()

    store = DynamoCryptoStore(stack.clients["dynamodb"], stack.template.physical_name("CryptoTable"))
    now = datetime.fromtimestamp(chain.w3.eth.get_block("latest")["timestamp"], UTC)
    store.link_wallet("evm", PAYER, "acct-1", "ethereum", now)
    assert store.create_bill(
        Bill(
            invoice_id="inv-1",
            account_id="acct-1",
            number="KB-inv-1",
            period="2026-10",
            total_usd=Decimal("100.00"),
            issued_at=now - timedelta(minutes=1),
        )
    )
    store.add_quote(_quote("q-usdc", "USDC", USDC_QUOTE, "1", now))
    store.add_quote(_quote("q-eth", "ETH", ETH_QUOTE, "2500.00", now))
    chain.mint(PAYER, 1_000 * USDC)
    chain.mint(OTHER, 1_000 * USDC)
    yield Billing(chain, store, lambda_context, now)
    crypto_settings.settings.cache_clear()
    dependencies.clear_caches()
    evm_handler.rpc.cache_clear()


def test_given_an_exact_usdc_payment_then_the_bill_goes_open_processing_paid(billing: Billing) -> None:
    assert billing.bill().status is BillStatus.OPEN
    billing.chain.pay_usdc(PAYER, MERCHANT, USDC_QUOTE)

    seen = billing.run()

    assert seen["transfers_seen"] == 1
    assert billing.bill().status is BillStatus.PROCESSING
    assert billing.quote_status() == {"q-usdc": QuoteStatus.DETECTED, "q-eth": QuoteStatus.ACTIVE}

    final = billing.final()

    assert final["finalized"] == 1
    paid = billing.bill()
    assert paid.status is BillStatus.PAID
    assert (paid.settled_usd, paid.written_off_usd, paid.credit_usd, paid.flags) == (
        Decimal("100.00"),
        0,
        0,
        frozenset(),
    )
    assert billing.quote_status()["q-usdc"] is QuoteStatus.COMPLETED


@pytest.mark.parametrize(
    ("atomic", "status", "written_off"),
    [
        (99_600_000, BillStatus.PAID, Decimal("0.40")),  # short $0.40 <= $0.50: written off
        (99_000_000, BillStatus.OPEN, Decimal("0.00")),  # short $1.00 > $0.50: still owed
    ],
)
def test_given_an_underpayment_then_paid_inside_tolerance_and_open_outside(
    billing: Billing, atomic: int, status: BillStatus, written_off: Decimal
) -> None:
    billing.chain.pay_usdc(PAYER, MERCHANT, atomic)
    billing.run()

    billing.final()

    bill = billing.bill()
    assert (bill.status, bill.written_off_usd, bill.flags) == (status, written_off, frozenset({BillFlag.PARTIAL}))


def test_given_an_eth_overpayment_then_paid_with_the_excess_as_account_credit(billing: Billing) -> None:
    billing.chain.pay_eth(PAYER, MERCHANT, 41_000_000_000_000_000)  # 0.041 ETH x $2,500 = $102.50
    billing.run()

    billing.final()

    bill = billing.bill()
    assert bill.status is BillStatus.PAID
    assert (bill.settled_usd, bill.credit_usd, bill.flags) == (  # settled: all the USD received
        Decimal("102.50"),
        Decimal("2.50"),
        frozenset({BillFlag.OVERPAID}),
    )
    assert billing.quote_status()["q-eth"] is QuoteStatus.COMPLETED


def test_given_two_partial_usdc_payments_then_processing_once_both_are_seen_and_paid_when_both_are_final(
    billing: Billing,
) -> None:
    billing.chain.pay_usdc(PAYER, MERCHANT, 60 * USDC)
    billing.run()
    assert (billing.bill().status, billing.bill().flags) == (BillStatus.OPEN, frozenset({BillFlag.PARTIAL}))

    billing.chain.pay_usdc(PAYER, MERCHANT, 40 * USDC)
    billing.run()
    assert (billing.bill().status, billing.bill().flags) == (BillStatus.PROCESSING, frozenset({BillFlag.MULTIPLE}))

    billing.final()

    bill = billing.bill()
    assert (bill.status, bill.settled_usd) == (BillStatus.PAID, Decimal("100.00"))


def test_given_a_usdc_payment_after_the_quote_expired_then_paid_late_one_to_one(billing: Billing) -> None:
    expired = billing.opened_at + timedelta(minutes=31)
    billing.chain.node.call("evm_setNextBlockTimestamp", int(expired.timestamp()))
    billing.chain.pay_usdc(PAYER, MERCHANT, USDC_QUOTE)  # mined at quote + 31 min: inside monitoring (72 h)
    billing.run()

    billing.final()

    bill = billing.bill()
    assert (bill.status, bill.settled_usd, bill.flags) == (
        BillStatus.PAID,
        Decimal("100.00"),
        frozenset({BillFlag.PAID_LATE}),
    )
    assert billing.quote_status()["q-usdc"] is QuoteStatus.LATE


def test_given_a_payment_from_an_unlinked_wallet_then_it_is_unattributed_and_the_bill_stays_open(
    billing: Billing,
) -> None:
    tx = billing.chain.pay_usdc(OTHER, MERCHANT, USDC_QUOTE)

    billing.run()
    billing.final()

    (unattributed,) = billing.store.unattributed()
    assert (unattributed.transfer.tx_id, unattributed.transfer.sender) == (tx, OTHER)
    assert unattributed.invoice_id is None
    assert unattributed.status is PaymentStatus.FINALIZED
    assert billing.bill().status is BillStatus.OPEN


def test_given_a_seen_eth_payment_when_a_reorg_removes_it_then_orphaned_and_the_bill_open_again(
    billing: Billing,
) -> None:
    billing.chain.mine(FINALITY_LAG)  # the setup's mints are final: the reorg stays above the finalized block
    tx = billing.chain.pay_eth(PAYER, MERCHANT, ETH_QUOTE)
    billing.run()
    assert billing.bill().status is BillStatus.PROCESSING

    billing.chain.node.call("anvil_reorg", 2, [])
    report = billing.run()

    assert report["orphaned"] == 1
    assert report["rolled_back_to"] is not None
    payment = billing.store.payment(f"ethereum:{tx}:-1")
    assert payment is not None
    assert payment.status is PaymentStatus.ORPHANED
    assert billing.bill().status is BillStatus.OPEN
    assert billing.quote_status()["q-eth"] is QuoteStatus.ACTIVE
    assert billing.final()["finalized"] == 0  # nothing left to finalize: the payment is gone
    assert billing.bill().status is BillStatus.OPEN


def test_given_a_seen_eth_payment_dropped_by_a_reorg_then_its_customer_is_told_once_its_block_is_final_not_before(
    billing: Billing, monkeypatch: pytest.MonkeyPatch
) -> None:
    """D449 through the scheduled handler: 0.04 ETH ($100.00 at the $2,500.00 lock) seen in block N, the bill
    PROCESSING; a 2-block reorg without it (``anvil_reorg``) drops it: ORPHANED, the bill OPEN asking 100.00 again,
    its notice owed. anvil's finalized block trails the head by 8: the drop's run reads N - 8 final, 7 blocks on
    N - 1 - nothing told, the reorg could still be undone; one more block, N final: one ``CryptoBillReopened.v1``
    (``lost`` "dropped", 100.00, its transaction, the block it left), and nothing more on the next run. Before: the
    notice waited 768 s of the function's clock, whatever the chain's finality - in this test, never sent."""
    published = _capture(monkeypatch)
    billing.chain.mine(FINALITY_LAG)  # the setup's mints are final: the reorg stays above the finalized block
    tx = billing.chain.pay_eth(PAYER, MERCHANT, ETH_QUOTE)
    paid_in = billing.chain.receipt(tx)["blockNumber"]
    billing.run()
    seen = billing.store.payment(f"ethereum:{tx}:-1")
    assert seen is not None
    assert (billing.bill().status, seen.transfer.block_number) == (BillStatus.PROCESSING, paid_in)

    billing.chain.node.call("anvil_reorg", 2, [])  # blocks N - 1 and N replaced, the head N again
    dropped = billing.run()
    billing.chain.mine(FINALITY_LAG - 1)
    waiting = billing.run()

    assert (dropped["orphaned"], billing.bill().status) == (1, BillStatus.OPEN)
    assert [kind for kind, _ in published if kind == "CryptoBillReopened.v1"] == []

    billing.chain.mine(1)
    told = billing.run()
    billing.chain.mine(1)
    billing.run()

    [reopened] = [detail for kind, detail in published if kind == "CryptoBillReopened.v1"]
    assert reopened["event_id"].startswith(f"crypto-reopened:inv-1:ethereum:{tx}:-1@{seen.transfer.block_hash}/")
    assert (reopened["lost"], reopened["lost_usd"], reopened["lost_tx_id"]) == ("dropped", "100.00", tx)
    assert (reopened["total"], reopened["amount_usd"], reopened["stuck_usd"]) == ("100.00", "100.00", "0.00")
    assert billing.bill().reopens_owed == ()
    # the heights the runs read final: N - 8, N - 1, N
    assert [run["final_through"] for run in (dropped, waiting, told)] == [paid_in - FINALITY_LAG, paid_in - 1, paid_in]


def test_given_a_reverted_payment_then_it_is_failed_and_pays_nothing(billing: Billing) -> None:
    tx = billing.chain.pay_usdc(PAYER, MERCHANT, 10_000 * USDC, gas=100_000)  # more than PAYER holds

    report = billing.run()

    assert report["failed"] == 1
    payment = billing.store.payment(f"ethereum:{tx}:-1")
    assert payment is not None
    assert payment.status is PaymentStatus.FAILED
    assert billing.bill().status is BillStatus.OPEN


def test_given_a_schedule_naming_no_configured_evm_chain_then_the_run_fails_naming_the_chains(
    billing: Billing,
) -> None:
    from kilo_crypto_watch import evm_handler  # noqa: PLC0415

    for chain_key in ("base", None, 7):
        with pytest.raises(evm_handler.UnknownChainError, match=r"the configured EVM chains are \['ethereum'\]"):
            evm_handler.lambda_handler({"chain": chain_key}, billing.context)  # type: ignore[arg-type]


def test_given_quotes_inside_the_expiring_window_then_the_run_announces_only_the_one_with_nothing_seen_once(
    billing: Billing, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Both quotes expire 30 minutes after the chain's clock at setup; a window of 24 h covers them whatever the
    node's clock drift. q-usdc is paid (DETECTED): only q-eth is announced, and only once."""
    from kilo_crypto_watch import dependencies  # noqa: PLC0415
    from kilo_crypto_watch import settings as crypto_settings  # noqa: PLC0415

    monkeypatch.setenv("QUOTE_EXPIRING_MINUTES", "1440")
    crypto_settings.settings.cache_clear()
    published: list[tuple[str, dict[str, Any]]] = []
    real = dependencies.publisher()
    monkeypatch.setattr(real, "publish", lambda kind, detail: published.append((kind, detail)))
    billing.chain.pay_usdc(PAYER, MERCHANT, USDC_QUOTE)

    first = billing.run()
    second = billing.run()

    assert (first["quotes_expiring_announced"], second["quotes_expiring_announced"]) == (1, 0)
    expiring = [detail for kind, detail in published if kind == "CryptoQuoteExpiring.v1"]
    assert [(e["event_id"], e["asset"], e["amount"]) for e in expiring] == [("quote-expiring:q-eth", "ETH", "0.04")]
    assert billing.quote_status() == {"q-usdc": QuoteStatus.DETECTED, "q-eth": QuoteStatus.ACTIVE}


def _claim(billing: Billing, tx: str, settlement: Any = None) -> Any:
    """The fast path as the transactions route runs it: the chain's inspector, every credit checked, then recorded."""
    from kilo_crypto_watch import dependencies, evm_handler  # noqa: PLC0415

    settlement = settlement or dependencies.settlement()
    credits = evm_handler.inspector(dependencies.chains()["ethereum"]).transfers(tx)
    for credit in credits:
        settlement.check_claim(credit, "inv-1")
    return [settlement.record(credit, claimed_for="inv-1") for credit in credits]


def test_given_a_claimed_payment_whose_block_is_reorged_then_the_watcher_follows_it_and_the_bill_is_paid(
    billing: Billing,
) -> None:
    chain = billing.chain
    chain.mine(FINALITY_LAG)
    billing.run()  # the cursor at the head: a block both forks below share
    before = chain.node.call("evm_snapshot")
    tx = chain.pay_eth(OTHER, MERCHANT, ETH_QUOTE)  # an unlinked wallet: the customer's claim ties it to the bill
    _claim(billing, tx)
    assert billing.bill().status is BillStatus.PROCESSING
    raw = chain.w3.eth.get_raw_transaction(tx)  # type: ignore[arg-type]
    chain.node.call("evm_revert", before)  # the claimed block is reorged away ...
    chain.mine(2)
    chain.w3.eth.send_raw_transaction(raw)  # ... and the same transaction is mined two blocks later
    moved = chain.w3.eth.wait_for_transaction_receipt(tx, timeout=10)  # type: ignore[arg-type]  # automine is async

    billing.run()

    payment = billing.store.payment(f"ethereum:{tx}:-1")
    assert payment is not None
    assert (payment.status, payment.invoice_id, payment.matched_by) == (PaymentStatus.SEEN, "inv-1", "fast_path")
    assert (payment.transfer.block_number, payment.transfer.block_hash) == (
        moved["blockNumber"],
        "0x" + bytes(moved["blockHash"]).hex(),
    )
    assert billing.final()["finalized"] == 1
    assert billing.bill().status is BillStatus.PAID


def test_given_an_eth_payment_mined_in_time_but_claimed_after_expiry_then_it_is_not_late(billing: Billing) -> None:
    """ETH locked at $2,500.00: 0.04 ETH = $100.00. Mined inside the quote's 30 minutes, submitted 40 minutes after
    the quote, when ETH is at $2,440.00 (2.4 % lower): by its block's time it is on time - $100.00, no review (by the
    submission's time it would be late: min(2,500, 2,440) x 0.04 = $97.60, and in review beyond the 2 % band)."""
    from kilo_crypto_watch import dependencies  # noqa: PLC0415
    from kilo_crypto_watch.settlement import Settlement  # noqa: PLC0415
    from tests.crypto_core_fakes import FixedRates  # noqa: PLC0415
    from tests.fakes import RecordingPublisher  # noqa: PLC0415

    tx = billing.chain.pay_eth(OTHER, MERCHANT, ETH_QUOTE)
    later = billing.opened_at + timedelta(minutes=40)
    rates = FixedRates({"ETH": Decimal("2440.00")})
    settlement = Settlement(billing.store, RecordingPublisher(), dependencies.chains(), rates, clock=lambda: later)

    (payment,) = _claim(billing, tx, settlement)

    assert (payment.late, payment.review, payment.rate, payment.usd) == (
        False,
        False,
        Decimal("2500.00"),
        Decimal("100.00"),
    )
    assert billing.bill().status is BillStatus.PROCESSING


def test_given_a_claimed_usdc_payment_re_mined_at_another_log_index_then_it_keeps_its_claim_and_counts_once(
    billing: Billing,
) -> None:
    """The customer claims a 100 USDC transfer from an unlinked wallet (its Transfer log is index 0 of its block); the
    block is reorged away and the same transaction is re-mined after another USDC transfer in its new block, so its
    log is index 1 there: another payment id. The claim follows the transfer (same transaction, token, sender,
    recipient and amount): the new payment pays inv-1 at $100.00 by the fast path, the old one is orphaned, moved
    to it, and the bill is paid once, with the settled $100.00 counted once."""
    chain = billing.chain
    chain.mine(FINALITY_LAG)
    billing.run()  # the cursor at the head: a block both forks below share
    before = chain.node.call("evm_snapshot")
    tx = chain.pay_usdc(OTHER, MERCHANT, USDC_QUOTE)
    assert chain.receipt(tx)["logs"][0]["logIndex"] == 0
    _claim(billing, tx)
    assert billing.bill().status is BillStatus.PROCESSING
    raw = chain.w3.eth.get_raw_transaction(tx)  # type: ignore[arg-type]
    chain.node.call("evm_revert", before)  # the claimed block is reorged away ...
    _remine_after_another_transfer(chain, raw)  # ... and re-mined after another USDC transfer in its new block
    moved = chain.receipt(tx)
    assert [log["logIndex"] for log in moved["logs"]] == [1]

    billing.run()
    billing.final()

    new = billing.store.payment(f"ethereum:{tx}:1")
    old = billing.store.payment(f"ethereum:{tx}:0")
    assert new is not None
    assert old is not None
    assert (new.status, new.invoice_id, new.matched_by, new.usd) == (
        PaymentStatus.FINALIZED,
        "inv-1",
        "fast_path",
        Decimal("100.00"),
    )
    assert new.transfer.block_hash == "0x" + bytes(moved["blockHash"]).hex()
    assert (old.status, old.moved_to) == (PaymentStatus.ORPHANED, new.payment_id)
    paid = billing.bill()
    assert (paid.status, paid.settled_usd, paid.credit_usd) == (BillStatus.PAID, Decimal("100.00"), Decimal("0.00"))
    assert paid.settled_payment_ids == (new.payment_id,)


def test_given_a_reverted_payment_then_it_is_pending_until_its_block_is_final_and_then_final(billing: Billing) -> None:
    tx = billing.chain.pay_usdc(PAYER, MERCHANT, 10_000 * USDC, gas=100_000)  # more than PAYER holds: reverted
    billing.run()
    payment_id = f"ethereum:{tx}:-1"
    failed = billing.store.payment(payment_id)
    assert failed is not None
    assert (failed.status, failed.final) == (PaymentStatus.FAILED, False)
    assert [p.payment_id for p in billing.store.pending_payments("ethereum")] == [payment_id]

    report = billing.final()

    assert report["finalized"] == 1
    final = billing.store.payment(payment_id)
    assert final is not None
    assert (final.status, final.final) == (PaymentStatus.FAILED, True)
    assert billing.store.pending_payments("ethereum") == []
    assert billing.bill().status is BillStatus.OPEN


def test_given_an_unattributed_payment_when_its_block_is_reorged_away_then_it_leaves_the_list_until_re_mined(
    billing: Billing,
) -> None:
    """An unlinked wallet's 100 USDC matches no bill: listed for an operator. Its block reorged away (a longer fork
    without it): ORPHANED, and off the list - an operator could neither assign nor refund a payment that is not on
    chain. The transaction mined again: SEEN, and listed again."""
    chain = billing.chain
    chain.mine(FINALITY_LAG)
    billing.run()  # the cursor at the head: a block both forks below share
    before = chain.node.call("evm_snapshot")
    tx = chain.pay_usdc(OTHER, MERCHANT, USDC_QUOTE)
    billing.run()
    payment_id = f"ethereum:{tx}:0"
    assert [p.payment_id for p in billing.store.unattributed()] == [payment_id]
    raw = chain.w3.eth.get_raw_transaction(tx)  # type: ignore[arg-type]
    chain.node.call("evm_revert", before)  # the block is reorged away ...
    chain.mine(3)  # ... by a longer fork without the transaction

    report = billing.run()

    assert report["orphaned"] == 1
    orphaned = billing.store.payment(payment_id)
    assert orphaned is not None
    assert orphaned.status is PaymentStatus.ORPHANED
    assert billing.store.unattributed() == []

    chain.w3.eth.wait_for_transaction_receipt(chain.w3.eth.send_raw_transaction(raw), timeout=10)  # mined again
    billing.run()

    (back,) = billing.store.unattributed()
    assert (back.payment_id, back.status) == (payment_id, PaymentStatus.SEEN)


def test_given_one_transaction_paying_two_bills_re_mined_with_its_logs_shifted_then_both_bills_are_paid_once(
    billing: Billing,
) -> None:
    """An unlinked wallet pays two bills of acct-1 in one transaction (``TestBatchPay``: 100 USDC then 40 USDC, Transfer
    logs 0 and 1): both unattributed, and an operator assigns log 0 to inv-1 ($100.00) and log 1 to inv-2 ($40.00).
    The block is reorged away and the transaction re-mined after another USDC transfer in its new block: logs 1 and 2.
    Log 1 now holds the 100 USDC (inv-1's, D155); the 40 USDC's record there is kept under its own id (D168), so at
    log 2 it keeps inv-2 - before, it was matched afresh and left unattributed, and inv-2 never paid. Once final,
    each bill is paid once with its own credit: $100.00 and $40.00, nothing left for an operator."""
    from kilo_crypto_watch import dependencies  # noqa: PLC0415

    chain = billing.chain
    billing.store.create_bill(replace(billing.bill(), invoice_id="inv-2", number="KB-inv-2", total_usd=Decimal("40")))
    billing.store.add_quote(
        replace(
            _quote("q2-usdc", "USDC", 40 * USDC, "1", billing.opened_at), invoice_id="inv-2", amount_usd=Decimal(40)
        )
    )
    batch = Web3.to_checksum_address(deploy(chain.w3, "TestBatchPay"))
    chain.token().functions.approve(batch, 140 * USDC).transact({"from": OTHER})  # type: ignore[arg-type]
    chain.mine(FINALITY_LAG)
    billing.run()  # the cursor at the head: a block both forks below share
    before = chain.node.call("evm_snapshot")
    payer = chain.w3.eth.contract(address=batch, abi=contracts.load("TestBatchPay")["abi"])
    tx = (
        "0x" + bytes(payer.functions.pay(chain.usdc, MERCHANT, [100 * USDC, 40 * USDC]).transact({"from": OTHER})).hex()
    )
    assert [log["logIndex"] for log in chain.receipt(tx)["logs"]] == [0, 1]
    billing.run()
    settlement = dependencies.settlement()
    settlement.assign(f"ethereum:{tx}:0", "acct-1", "inv-1")
    settlement.assign(f"ethereum:{tx}:1", "acct-1", "inv-2")
    raw = chain.w3.eth.get_raw_transaction(tx)  # type: ignore[arg-type]
    chain.node.call("evm_revert", before)  # the block is reorged away ...
    _remine_after_another_transfer(chain, raw)  # ... and re-mined after another USDC transfer in its new block
    assert [log["logIndex"] for log in chain.receipt(tx)["logs"]] == [1, 2]

    billing.run()
    billing.final()

    at_1, at_2 = billing.store.payment(f"ethereum:{tx}:1"), billing.store.payment(f"ethereum:{tx}:2")
    assert at_1 is not None
    assert at_2 is not None
    assert (at_1.status, at_1.transfer.atomic_amount, at_1.invoice_id, at_1.usd) == (
        PaymentStatus.FINALIZED,
        100 * USDC,
        "inv-1",
        Decimal("100.00"),
    )
    assert (at_2.status, at_2.transfer.atomic_amount, at_2.invoice_id, at_2.usd) == (
        PaymentStatus.FINALIZED,
        40 * USDC,
        "inv-2",
        Decimal("40.00"),
    )
    assert billing.store.unattributed() == []
    bills = {invoice_id: billing.store.bill(invoice_id) for invoice_id in ("inv-1", "inv-2")}
    assert {k: (b.status, b.settled_usd, b.credit_usd, b.settled_payment_ids) for k, b in bills.items() if b} == {
        "inv-1": (BillStatus.PAID, Decimal("100.00"), Decimal("0.00"), (at_1.payment_id,)),
        "inv-2": (BillStatus.PAID, Decimal("40.00"), Decimal("0.00"), (at_2.payment_id,)),
    }


def test_given_one_transaction_of_sub_cent_credits_then_the_bill_counts_what_they_paid_in_all(billing: Billing) -> None:
    """D178. The linked wallet pays 0.005 USDC eight times in one transaction (``TestBatchPay``: eight
    Transfer logs) - $0.04 - then 99.96 USDC: $100.00, the bill PAID with nothing over. Each credit rounded on its own
    (the old rule) counted $0.01: $0.08, and the bill was overpaid $0.04 with USDC it never received."""
    from kilo_crypto_watch.settlement import remaining_usd  # noqa: PLC0415

    chain = billing.chain
    batch = Web3.to_checksum_address(deploy(chain.w3, "TestBatchPay"))
    chain.token().functions.approve(batch, 8 * 5_000).transact({"from": PAYER})  # type: ignore[arg-type]
    payer = chain.w3.eth.contract(address=batch, abi=contracts.load("TestBatchPay")["abi"])
    tx = "0x" + bytes(payer.functions.pay(chain.usdc, MERCHANT, [5_000] * 8).transact({"from": PAYER})).hex()
    assert len(chain.receipt(tx)["logs"]) == 8
    billing.run()
    billing.final()

    dust = billing.bill()
    assert (dust.status, dust.flags) == (BillStatus.OPEN, frozenset({BillFlag.PARTIAL, BillFlag.MULTIPLE}))
    assert [line.usd for line in dust.payments] == [Decimal("0.005")] * 8
    assert remaining_usd(dust) == Decimal("99.96")

    billing.chain.pay_usdc(PAYER, MERCHANT, 99_960_000)
    billing.run()
    billing.final()

    paid = billing.bill()
    assert (paid.status, paid.settled_usd, paid.credit_usd, paid.written_off_usd) == (
        BillStatus.PAID,
        Decimal("100.00"),
        0,
        0,
    )
    assert BillFlag.OVERPAID not in paid.flags


def _remine_after_another_transfer(chain: Chain, raw: Any) -> None:
    """One block later, ``raw`` (a signed transaction whose block was reorged away) mined again in one block after
    another USDC transfer (higher tip: mined first), so its logs' indexes shift up by one."""
    chain.mine(1)
    chain.node.call("evm_setAutomine", False)
    try:
        first = {"from": PAYER, "maxPriorityFeePerGas": 50 * GWEI, "maxFeePerGas": 500 * GWEI}
        chain.token().functions.transfer(OTHER, 5 * USDC).transact(first)
        chain.w3.eth.send_raw_transaction(raw)
        chain.node.call("evm_mine")
    finally:
        chain.node.call("evm_setAutomine", True)


def _capture(monkeypatch: pytest.MonkeyPatch) -> list[tuple[str, dict[str, Any]]]:
    """The events the watcher's settlement publishes, in order (the real publisher's ``publish`` recorded instead)."""
    from kilo_crypto_watch import dependencies  # noqa: PLC0415

    published: list[tuple[str, dict[str, Any]]] = []
    monkeypatch.setattr(dependencies.publisher(), "publish", lambda kind, detail: published.append((kind, detail)))
    return published


def test_given_three_transfers_to_one_bill_in_one_poll_then_one_payment_seen_event_carries_them_all(
    billing: Billing, monkeypatch: pytest.MonkeyPatch
) -> None:
    """D216. The linked wallet pays 30 USDC, 20 USDC and 0.01 ETH (at the locked $2,500.00: $25.00) before one
    watcher run: three payments recorded and counted one by one ($75.00 of $100.00: OPEN, PARTIAL), and one
    CryptoPaymentSeen.v1 for the bill naming the three ($75.00 together). A stranger's transfer in the same poll is
    its own UnattributedCryptoPayment. A later poll's transfer is a new event of its own."""
    published = _capture(monkeypatch)
    first = billing.chain.pay_usdc(PAYER, MERCHANT, 30 * USDC)
    second = billing.chain.pay_usdc(PAYER, MERCHANT, 20 * USDC)
    ether = billing.chain.pay_eth(PAYER, MERCHANT, 10_000_000_000_000_000)
    stranger = billing.chain.pay_usdc(OTHER, MERCHANT, 5 * USDC)

    report = billing.run()

    assert report["transfers_seen"] == 4
    bill = billing.bill()
    assert (bill.status, bill.flags) == (BillStatus.OPEN, frozenset({BillFlag.PARTIAL, BillFlag.MULTIPLE}))
    assert sorted(line.usd for line in bill.payments) == [Decimal(20), Decimal(25), Decimal(30)]
    [seen] = [detail for kind, detail in published if kind == "CryptoPaymentSeen.v1"]
    ids = [f"ethereum:{first}:0", f"ethereum:{second}:0", f"ethereum:{ether}:-1"]
    assert [(t["payment_id"], t["asset"], t["amount"], t["amount_usd"], t["tx_id"]) for t in seen["transfers"]] == [
        (ids[0], "USDC", "30", "30.00", first),
        (ids[1], "USDC", "20", "20.00", second),
        (ids[2], "ETH", "0.01", "25.00", ether),
    ]
    assert [t["quote_id"] for t in seen["transfers"]] == ["q-usdc", "q-usdc", "q-eth"]
    assert (seen["invoice_id"], seen["account_id"], seen["chain"], seen["total_usd"]) == (
        "inv-1",
        "acct-1",
        "ethereum",
        "75.00",
    )
    assert (seen["tx_id"], seen["amount"], seen["amount_usd"]) == (first, "30", "30.00")  # the first transfer's
    assert seen["event_id"].startswith("crypto-seen:inv-1:")
    [unattributed] = [detail for kind, detail in published if kind == "UnattributedCryptoPayment.v1"]
    assert unattributed["tx_id"] == stranger
    assert all(billing.store.payment(pid).announced for pid in ids)  # type: ignore[union-attr]

    published.clear()
    assert billing.run()["transfers_seen"] == 0
    later = billing.chain.pay_usdc(PAYER, MERCHANT, 25 * USDC)
    billing.run()

    [again] = [detail for kind, detail in published if kind == "CryptoPaymentSeen.v1"]
    assert (again["event_id"], again["total_usd"], len(again["transfers"])) == (
        f"crypto-seen:ethereum:{later}:0",
        "25.00",
        1,
    )
    assert billing.bill().status is BillStatus.PROCESSING  # $100.00 counted: settlement per transfer as before


def _set_feed(chain: Chain, answer_usd: int, updated_at: int, mined_at: int) -> None:
    """The ETH/USD test aggregator answers ``answer_usd`` (8 decimals) from a block mined at ``mined_at``."""
    chain.node.call("evm_setNextBlockTimestamp", mined_at)
    feed = chain.w3.eth.contract(address=chain.aggregator, abi=contracts.load("TestAggregator")["abi"])  # type: ignore[call-overload]
    tx = feed.functions.setAnswer(answer_usd * 10**8, updated_at).transact({"from": chain.w3.eth.accounts[0]})
    chain.w3.eth.wait_for_transaction_receipt(tx, timeout=10)


@pytest.mark.parametrize(
    ("at_block", "after", "usd", "review", "status", "flags"),
    [
        # min(2,500.00 locked, 2,480.00 at its block) = 2,480.00: 0.04 x 2,480 = $99.20, moved 0.8 % (< 2 %): counted;
        # short $0.80 <= 1 % ($1.00): PAID, written off. Before: the rate now, $2,000.00 - moved 20 %: in review
        (2_480, 2_000, "99.20", False, BillStatus.PAID, {BillFlag.PARTIAL, BillFlag.PAID_LATE}),
        # 2,400.00 at its block: 0.04 x 2,400 = $96.00, moved 4 %: in review, not counted. Before: the rate now,
        # $2,500.00 (no move): counted $100.00 and PAID
        (2_400, 2_500, "96.00", True, BillStatus.OPEN, set()),
    ],
)
def test_given_a_late_eth_payment_when_the_feed_moved_after_its_block_then_it_is_valued_at_the_rate_at_its_block(
    billing: Billing,
    monkeypatch: pytest.MonkeyPatch,
    at_block: int,
    after: int,
    usd: str,
    review: bool,
    status: BillStatus,
    flags: set[BillFlag],
) -> None:
    """D218. The ETH quote (locked $2,500.00) expires at opened + 30 min. The feed answers ``at_block`` from
    opened + 29 min; the customer pays 0.04 ETH at opened + 31 min (late, inside monitoring); at opened + 33 min the
    feed (and the exchange) answer ``after``. The watcher runs after that: the payment is valued at the feed's answer
    at its block, read there (latestRoundData at the payment's block), not at the rate now."""
    from kilo_crypto_watch import dependencies, evm_handler  # noqa: PLC0415
    from kilo_crypto_watch import settings as crypto_settings  # noqa: PLC0415
    from kilo_dev.crypto_local import ExchangeStandin  # noqa: PLC0415

    chain, opened = billing.chain, int(billing.opened_at.timestamp())
    exchange = ExchangeStandin({"ETH": Decimal(after)}).start()
    try:
        monkeypatch.setenv("PRICE_FEEDS", json.dumps({"ETH": {"chain": "ethereum", "address": chain.aggregator}}))
        monkeypatch.setenv("EXCHANGE_PRICE_URL", f"{exchange.url}/v2/prices/{{asset}}-USD/spot")
        crypto_settings.settings.cache_clear()
        dependencies.clear_caches()
        evm_handler.rpc.cache_clear()
        _set_feed(chain, at_block, opened + 29 * 60, opened + 29 * 60)
        chain.node.call("evm_setNextBlockTimestamp", opened + 31 * 60)
        tx = chain.pay_eth(PAYER, MERCHANT, ETH_QUOTE)
        _set_feed(chain, after, opened + 33 * 60, opened + 33 * 60)

        billing.run()
        billing.final()
    finally:
        exchange.stop()

    payment = billing.store.payment(f"ethereum:{tx}:-1")
    assert payment is not None
    assert (payment.late, payment.review, payment.rate, payment.usd) == (
        True,
        review,
        Decimal(at_block),
        Decimal(usd),
    )
    bill = billing.bill()
    assert (bill.status, bill.flags) == (status, frozenset(flags))
    if status is BillStatus.PAID:
        assert (bill.settled_usd, bill.written_off_usd) == (Decimal("99.20"), Decimal("0.80"))


def test_given_a_run_then_it_records_whether_it_is_behind_under_its_service_and_chain(
    billing: Billing, monkeypatch: pytest.MonkeyPatch, capfd: pytest.CaptureFixture[str]
) -> None:
    """D414: each run records ``CryptoWatchBehind`` once under its service and its chain - so the chain's own alarm
    (the Minimum over 5 minutes) tells one chain's stall from another's. Amended (ops2): the point is the run's lag
    in blocks, 0 caught up; a run capped at one block of a chain 3 blocks ahead is 2 blocks behind (it recorded 1)."""
    from tests.unit.payment_alarm_helpers import flushed_points  # noqa: PLC0415

    capfd.readouterr()
    assert billing.run()["caught_up"] is True
    assert flushed_points(capfd.readouterr().out, "CryptoWatchBehind") == [
        ({"service": "crypto-evm-watcher", "chain": "ethereum"}, 0)
    ]
    from kilo_crypto_watch import dependencies  # noqa: PLC0415
    from kilo_crypto_watch import settings as crypto_settings  # noqa: PLC0415

    billing.chain.mine(3)
    [chain] = json.loads(os.environ["CRYPTO_CHAINS"])
    monkeypatch.setenv("CRYPTO_CHAINS", json.dumps([chain | {"max_blocks_per_run": 1}]))
    crypto_settings.settings.cache_clear()
    dependencies.clear_caches()
    run = billing.run()
    assert (run["caught_up"], run["lag"]) == (False, 2)
    assert flushed_points(capfd.readouterr().out, "CryptoWatchBehind") == [
        ({"service": "crypto-evm-watcher", "chain": "ethereum"}, 2)
    ]
