"""The scheduled Solana handler as deployed, end to end: the crypto table on moto (from template.yaml), the function's
environment from the template, the RPC URL from the RPC secret, settlement (the core's) as the sink, and payments made
with the real ``solana`` client through the LiteSVM stand-in.

Hand-worked figures: a $100.00 bill; SOL locked at $200.00 asks 0.5 SOL = 500_000_000 lamports; a $42.50 bill paid in
USDC locked at $1.00 asks 42.50 USDC = 42_500_000 units. Paid exactly, each bill becomes PROCESSING when the payment is
seen (confirmed) and PAID with exactly its total once the slot is finalized."""

from __future__ import annotations

import json
import time
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from decimal import Decimal
from typing import Any

import pytest
from solders.keypair import Keypair
from solders.pubkey import Pubkey
from web3 import HTTPProvider, Web3

from kilo_crypto_watch.adapters import DynamoCryptoStore
from kilo_crypto_watch.model import Asset, Bill, BillStatus, LockedRate, PaymentStatus, Quote, QuoteStatus, RateReading
from kilo_dev import contracts
from kilo_dev.solana_standin import SolanaStandin
from tests.conftest import LambdaContext, Stack
from tests.crypto_solana_chain import USDC, SolanaTestChain
from tests.evm_chain import Deployed, deploy

LAG = 4


def _clear() -> None:
    from kilo_crypto_watch import dependencies, settings  # noqa: PLC0415

    settings.settings.cache_clear()
    for built in (
        dependencies._dynamodb,
        dependencies.rpc_urls,
        dependencies.chains,
        dependencies.store,
        dependencies.cursors,
        dependencies.publisher,
        dependencies.rates,
        dependencies.settlement,
    ):
        built.cache_clear()


@pytest.fixture
def standin() -> Iterator[SolanaStandin]:
    with SolanaStandin(finality_lag=LAG, genesis_time=int(time.time())) as running:
        yield running


@pytest.fixture
def chain(standin: SolanaStandin) -> SolanaTestChain:
    return SolanaTestChain(standin)


@pytest.fixture
def deployed(stack: Stack, chain: SolanaTestChain, monkeypatch: pytest.MonkeyPatch) -> Iterator[DynamoCryptoStore]:
    """The Solana watch function's environment as the template deploys it; the chain configured as an operator would
    (merchant address and mint in CRYPTO_CHAINS), its RPC URL in the RPC secret."""
    for key, value in stack.template.function_environment("SolanaWatchFunction").items():
        monkeypatch.setenv(key, value)
    chains = [{"key": "solana", "merchant_address": str(chain.merchant.pubkey()), "usdc": str(chain.usdc)}]
    monkeypatch.setenv("CRYPTO_CHAINS", json.dumps(chains))
    stack.clients["secretsmanager"].create_secret(
        Name=stack.template.parameters["CryptoRpcSecretName"], SecretString=json.dumps({"solana": chain.standin.url})
    )
    _clear()
    yield DynamoCryptoStore(stack.clients["dynamodb"], stack.template.physical_name("CryptoTable"))
    _clear()


def run_handler(remaining_ms: int = 120_000) -> dict[str, object]:
    from kilo_crypto_watch.solana_handler import lambda_handler  # noqa: PLC0415

    # default: an invocation at its start, SolanaWatchFunction's Timeout 120 s left (the watcher stops its batch with
    # less than 30 s left, D91 amended (s3))
    return lambda_handler({}, LambdaContext(remaining_ms=remaining_ms))  # type: ignore[arg-type]


def open_bill(
    store: DynamoCryptoStore, chain: SolanaTestChain, total: str, asset: Asset, rate: str, atomic: int
) -> Pubkey:
    """An open bill and one quote for it with a fresh Solana Pay reference (what the core's quote route stores)."""
    now = datetime.now(UTC)
    reference = Keypair().pubkey()
    assert store.create_bill(
        Bill(
            invoice_id="inv-sol-1",
            account_id="acct-1",
            number="KB-0001",
            period="2026-10",
            total_usd=Decimal(total),
            issued_at=now - timedelta(hours=1),
        )
    )
    locked = LockedRate(asset, Decimal(rate), (RateReading("fixed", asset, Decimal(rate), now),), now)
    store.add_quote(
        Quote(
            quote_id="q-1",
            invoice_id="inv-sol-1",
            account_id="acct-1",
            chain="solana",
            asset=asset,
            amount_usd=Decimal(total),
            rate=locked,
            atomic_amount=atomic,
            pay_to=str(chain.merchant.pubkey()),
            created_at=now - timedelta(minutes=1),
            expires_at=now + timedelta(minutes=29),
            monitor_until=now + timedelta(hours=72),
            payment_uri=f"solana:{chain.merchant.pubkey()}?reference={reference}",
            reference=str(reference),
        )
    )
    return reference


def bill_of(store: DynamoCryptoStore) -> Bill:
    found = store.bill("inv-sol-1")
    assert found is not None
    return found


def test_given_less_than_30_s_left_of_the_invocation_then_the_run_stops_before_the_payment_and_the_next_records_it(
    deployed: DynamoCryptoStore, chain: SolanaTestChain
) -> None:
    # the handler passes its Lambda context's remaining time to the watcher: 29 s < the 30 s margin at the payment's
    # slot, so the batch ends before it (recorded nothing, the cursor before its slot); 120 s left: it is read
    reference = open_bill(deployed, chain, "100.00", "SOL", "200.00", 500_000_000)
    signature = chain.pay_sol(500_000_000, reference=reference, memo="KB-0001")

    (short,) = run_handler(remaining_ms=29_000)["runs"]  # type: ignore[misc]

    assert (short["out_of_time"], short["caught_up"], short["transfers_seen"]) == (True, False, 0)
    assert deployed.payment(f"solana:{signature}:0") is None
    (full,) = run_handler()["runs"]  # type: ignore[misc]
    assert (full["out_of_time"], full["transfers_seen"]) == (False, 1)
    assert bill_of(deployed).status is BillStatus.PROCESSING


def test_given_a_sol_payment_of_a_quote_reference_then_the_bill_goes_processing_then_paid_with_its_usd(
    deployed: DynamoCryptoStore, chain: SolanaTestChain
) -> None:
    reference = open_bill(deployed, chain, "100.00", "SOL", "200.00", 500_000_000)
    signature = chain.pay_sol(500_000_000, reference=reference, memo="KB-0001")

    first = run_handler()

    (report,) = first["runs"]  # type: ignore[misc]
    assert report["transfers_seen"] == 1
    assert bill_of(deployed).status is BillStatus.PROCESSING
    assert [q.status for q in deployed.quotes("inv-sol-1")] == [QuoteStatus.DETECTED]
    payment = deployed.payment(f"solana:{signature}:0")
    assert payment is not None
    assert (payment.status, payment.matched_by, payment.usd) == (PaymentStatus.SEEN, "reference", Decimal("100.00"))

    chain.standin.finalize()
    run_handler()

    paid = bill_of(deployed)
    assert paid.status is BillStatus.PAID
    assert paid.settled_usd == Decimal("100.00")
    assert (paid.written_off_usd, paid.credit_usd) == (Decimal("0.00"), Decimal("0.00"))
    assert [q.status for q in deployed.quotes("inv-sol-1")] == [QuoteStatus.COMPLETED]

    again = run_handler()  # a rerun changes nothing
    (rerun,) = again["runs"]  # type: ignore[misc]
    assert (rerun["transfers_seen"], rerun["finalized"]) == (0, 0)
    assert bill_of(deployed) == paid


def test_given_a_usdc_payment_of_a_quote_reference_then_the_bill_is_paid_with_its_usd(
    deployed: DynamoCryptoStore, chain: SolanaTestChain
) -> None:
    reference = open_bill(deployed, chain, "42.50", "USDC", "1.00", 42 * USDC + USDC // 2)
    signature = chain.pay_usdc(42_500_000, reference=reference)

    run_handler()
    assert bill_of(deployed).status is BillStatus.PROCESSING
    chain.standin.finalize()
    run_handler()

    paid = bill_of(deployed)
    assert (paid.status, paid.settled_usd) == (BillStatus.PAID, Decimal("42.50"))
    payment = deployed.payment(f"solana:{signature}:1")  # instruction 1: after the idempotent ATA creation
    assert payment is not None
    assert (payment.status, payment.transfer.atomic_amount, payment.usd) == (
        PaymentStatus.FINALIZED,
        42_500_000,
        Decimal("42.50"),
    )


def test_given_the_rpc_down_then_the_run_fails_and_nothing_moves(
    deployed: DynamoCryptoStore, chain: SolanaTestChain
) -> None:
    from kilo_crypto_watch.solana_handler import SolanaWatchFailedError  # noqa: PLC0415

    reference = open_bill(deployed, chain, "100.00", "SOL", "200.00", 500_000_000)
    chain.pay_sol(500_000_000, reference=reference)
    chain.standin.stop()  # the RPC stops answering

    with pytest.raises(SolanaWatchFailedError, match="solana"):
        run_handler()

    assert bill_of(deployed).status is BillStatus.OPEN


def test_given_no_solana_chain_configured_then_a_run_reads_nothing_and_succeeds(
    stack: Stack, monkeypatch: pytest.MonkeyPatch
) -> None:
    for key, value in stack.template.function_environment("SolanaWatchFunction").items():
        monkeypatch.setenv(key, value)
    # the RPC secret does not exist (as on a stack that accepts no crypto yet): reading it would fail the run
    monkeypatch.setenv("CRYPTO_CHAINS", json.dumps([{"key": "ethereum", "merchant_address": "0x" + "ab" * 20}]))
    _clear()
    try:
        assert run_handler() == {"runs": []}
    finally:
        _clear()


def test_given_a_quote_near_its_expiry_then_the_run_publishes_crypto_quote_expiring_on_the_billing_bus_once(
    stack: Stack, deployed: DynamoCryptoStore, chain: SolanaTestChain, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The quote expires 29 minutes from now; with QUOTE_EXPIRING_MINUTES=30 it is inside the window. The event goes
    to the bus the template names (EVENT_BUS_NAME), where a probe rule catches it."""
    open_bill(deployed, chain, "100.00", "SOL", "200.00", 500_000_000)
    monkeypatch.setenv("QUOTE_EXPIRING_MINUTES", "30")
    _clear()
    sqs, events = stack.clients["sqs"], stack.clients["events"]
    probe = sqs.create_queue(QueueName="test-quote-expiring-probe")["QueueUrl"]
    arn = sqs.get_queue_attributes(QueueUrl=probe, AttributeNames=["QueueArn"])["Attributes"]["QueueArn"]
    bus = stack.template.physical_name("BillingEventBus")
    pattern = {"detail-type": ["CryptoQuoteExpiring.v1"]}
    events.put_rule(Name="test-quote-expiring", EventBusName=bus, EventPattern=json.dumps(pattern))
    events.put_targets(Rule="test-quote-expiring", EventBusName=bus, Targets=[{"Id": "probe", "Arn": arn}])

    (first,) = run_handler()["runs"]  # type: ignore[misc]
    (second,) = run_handler()["runs"]  # type: ignore[misc]

    assert (first["quotes_expiring_announced"], second["quotes_expiring_announced"]) == (1, 0)
    messages = sqs.receive_message(QueueUrl=probe, MaxNumberOfMessages=10)["Messages"]
    [detail] = [json.loads(message["Body"])["detail"] for message in messages]
    assert (detail["event_id"], detail["quote_id"], detail["chain"], detail["asset"], detail["amount"]) == (
        "quote-expiring:q-1",
        "q-1",
        "solana",
        "SOL",
        "0.5",
    )
    assert detail["number"] == "KB-0001"  # the bill's invoice number: the alert links the dashboard's bill by it


def test_given_two_sol_transfers_to_one_bill_in_one_run_then_one_payment_seen_event_carries_both(
    deployed: DynamoCryptoStore, chain: SolanaTestChain, monkeypatch: pytest.MonkeyPatch
) -> None:
    """D216. 0.2 SOL and 0.3 SOL at the locked $200.00 ($40.00 + $60.00), both carrying the quote's reference,
    seen by one run: two payments, the bill PROCESSING on both, and one CryptoPaymentSeen.v1 naming both ($100.00)."""
    from kilo_crypto_watch import dependencies  # noqa: PLC0415

    published: list[tuple[str, dict[str, object]]] = []
    monkeypatch.setattr(dependencies.publisher(), "publish", lambda kind, detail: published.append((kind, detail)))
    reference = open_bill(deployed, chain, "100.00", "SOL", "200.00", 500_000_000)
    first = chain.pay_sol(200_000_000, reference=reference)
    second = chain.pay_sol(300_000_000, reference=reference)

    (report,) = run_handler()["runs"]  # type: ignore[misc]

    assert report["transfers_seen"] == 2
    assert bill_of(deployed).status is BillStatus.PROCESSING
    assert sorted(line.usd for line in bill_of(deployed).payments) == [Decimal(40), Decimal(60)]
    [seen] = [detail for kind, detail in published if kind == "CryptoPaymentSeen.v1"]
    transfers = seen["transfers"]
    assert isinstance(transfers, list)
    assert sorted((t["tx_id"], t["amount"], t["amount_usd"], t["quote_id"]) for t in transfers) == sorted(
        [(first, "0.2", "40.00", "q-1"), (second, "0.3", "60.00", "q-1")]
    )
    assert (seen["invoice_id"], seen["chain"], seen["total_usd"]) == ("inv-sol-1", "solana", "100.00")

    published.clear()
    (rerun,) = run_handler()["runs"]  # type: ignore[misc]
    assert rerun["transfers_seen"] == 0
    assert [kind for kind, _ in published if kind == "CryptoPaymentSeen.v1"] == []


def test_given_a_late_sol_payment_then_it_is_valued_at_the_sol_feed_as_it_stood_at_the_slots_time(
    stack: Stack, anvil_session: Deployed, monkeypatch: pytest.MonkeyPatch
) -> None:
    """D218. A $100.00 bill; its SOL quote (locked $200.00: 0.5 SOL) expired a minute before the Solana chain
    began. The SOL/USD feed (on anvil, the feeds' chain) answers $198.00 from the chain's first second g; the customer
    pays 0.5 SOL with the quote's reference (late, inside monitoring) in a slot of time g + a few seconds; at g + 600 s
    the feed answers $150.00. The run values it at the feed as it stood at the slot's time (the last Ethereum block at
    or before it): min($200.00, $198.00) = $198.00, 0.5 x 198 = $99.00, moved 1 % (< 2 %): counted, and inside ETH/SOL's
    1 % the bill is PROCESSING. Before, the rate now was asked (the feed's $150.00 and an exchange that does not
    answer): no rate, in review."""
    from kilo_crypto_watch.model import BillFlag  # noqa: PLC0415

    node = anvil_session.node
    snapshot = node.call("evm_snapshot")
    w3 = Web3(HTTPProvider(node.url))
    g = int(w3.eth.get_block("latest")["timestamp"]) + 100
    try:
        node.call("evm_setNextBlockTimestamp", g)
        feed = deploy(w3, "TestAggregator", 8, "SOL / USD", 198 * 10**8)  # updated at g
        with SolanaStandin(finality_lag=LAG, genesis_time=g) as running:
            chain = SolanaTestChain(running)
            for key, value in stack.template.function_environment("SolanaWatchFunction").items():
                monkeypatch.setenv(key, value)
            chains = [{"key": "solana", "merchant_address": str(chain.merchant.pubkey()), "usdc": str(chain.usdc)}]
            monkeypatch.setenv("CRYPTO_CHAINS", json.dumps(chains))
            monkeypatch.setenv("PRICE_FEEDS", json.dumps({"SOL": {"chain": "ethereum", "address": feed}}))
            monkeypatch.setenv("EXCHANGE_PRICE_URL", "http://127.0.0.1:9/v2/prices/{asset}-USD/spot")  # never answers
            secret = {"solana": running.url, "ethereum": node.url}  # the feeds' chain by the secret (D138)
            stack.clients["secretsmanager"].create_secret(
                Name=stack.template.parameters["CryptoRpcSecretName"], SecretString=json.dumps(secret)
            )
            _clear()
            store = DynamoCryptoStore(stack.clients["dynamodb"], stack.template.physical_name("CryptoTable"))
            reference = _expired_sol_quote(store, chain, datetime.fromtimestamp(g, UTC))
            signature = chain.pay_sol(500_000_000, reference=reference)
            node.call("evm_setNextBlockTimestamp", g + 600)
            contract = w3.eth.contract(address=feed, abi=contracts.load("TestAggregator")["abi"])  # type: ignore[call-overload]
            moved = contract.functions.setAnswer(150 * 10**8, g + 600).transact({"from": w3.eth.accounts[0]})
            w3.eth.wait_for_transaction_receipt(moved, timeout=10)

            run_handler()
    finally:
        _clear()
        assert node.call("evm_revert", snapshot) is True

    payment = store.payment(f"solana:{signature}:0")
    assert payment is not None
    assert (payment.late, payment.review, payment.rate, payment.usd) == (True, False, Decimal(198), Decimal("99.00"))
    bill = store.bill("inv-sol-1")
    assert bill is not None
    assert (bill.status, bill.flags) == (BillStatus.PROCESSING, frozenset({BillFlag.PAID_LATE}))


def _expired_sol_quote(store: DynamoCryptoStore, chain: SolanaTestChain, start: datetime) -> Pubkey:
    """A $100.00 bill and a SOL quote at $200.00 (0.5 SOL) made 31 minutes before ``start``, expired a minute before
    it, still monitored (72 h)."""
    reference = Keypair().pubkey()
    created = start - timedelta(minutes=31)
    assert store.create_bill(
        Bill(
            invoice_id="inv-sol-1",
            account_id="acct-1",
            number="KB-0001",
            period="2026-10",
            total_usd=Decimal("100.00"),
            issued_at=created - timedelta(hours=1),
        )
    )
    locked = LockedRate("SOL", Decimal(200), (RateReading("fixed", "SOL", Decimal(200), created),), created)
    store.add_quote(
        Quote(
            quote_id="q-1",
            invoice_id="inv-sol-1",
            account_id="acct-1",
            chain="solana",
            asset="SOL",
            amount_usd=Decimal("100.00"),
            rate=locked,
            atomic_amount=500_000_000,
            pay_to=str(chain.merchant.pubkey()),
            created_at=created,
            expires_at=created + timedelta(minutes=30),
            monitor_until=created + timedelta(hours=72),
            payment_uri=f"solana:{chain.merchant.pubkey()}?reference={reference}",
            reference=str(reference),
        )
    )
    return reference


def test_given_a_listing_server_behind_on_every_ask_then_the_run_succeeds_behind_and_counts_solana_listing_behind(
    deployed: DynamoCryptoStore,
    chain: SolanaTestChain,
    monkeypatch: pytest.MonkeyPatch,
    capfd: pytest.CaptureFixture[str],
) -> None:
    # every getSignaturesForAddress refused at minContextSlot = head (-32016 with its data, one slot short): the
    # wallet sweep's page asked 3 times, then the run reads nothing - not a failure, but counted once (D91, s1b)
    from kilo_billing.observability import Metric  # noqa: PLC0415
    from kilo_dev import solana_standin  # noqa: PLC0415
    from tests.unit.payment_alarm_helpers import flushed_metrics, flushed_points  # noqa: PLC0415

    def behind(self: SolanaStandin, config: dict[str, Any] | None) -> int:
        if (config or {}).get("minContextSlot") is not None:
            raise solana_standin.RpcError(-32016, "Minimum context slot has not been reached", {"contextSlot": 1})
        return answered(self, config)

    answered = SolanaStandin._commitment_slot
    monkeypatch.setattr(SolanaStandin, "_commitment_slot", behind)
    capfd.readouterr()

    result = run_handler()

    [run] = result["runs"]  # type: ignore[call-overload]
    assert (run["behind"], run["caught_up"]) == (True, False)
    out = capfd.readouterr().out
    assert flushed_metrics(out).get(Metric.SOLANA_LISTING_BEHIND.value) == 1
    # D414: and the run is behind for the chain's own CryptoWatchBehind alarm - amended (ops2): by its lag, the
    # slots from where it stopped (its cursor's slot: nothing read) to the head it read (the stand-in's slot)
    lag = chain.standin.slot - int(run["to_block"])
    assert lag > 1
    assert run["lag"] == lag
    assert flushed_points(out, Metric.CRYPTO_WATCH_BEHIND.value) == [
        ({"service": "crypto-solana", "chain": "solana"}, lag)
    ]


def test_given_a_run_that_caught_up_then_it_records_crypto_watch_behind_zero_under_its_service_and_chain(
    deployed: DynamoCryptoStore, capfd: pytest.CaptureFixture[str]
) -> None:
    """D414: every run records ``CryptoWatchBehind`` under its service and chain, 0 when it reached the head: the
    chain's alarm reads the Minimum, so one caught-up run in a 5-minute period is no stall."""
    from tests.unit.payment_alarm_helpers import flushed_points  # noqa: PLC0415

    capfd.readouterr()
    [run] = run_handler()["runs"]  # type: ignore[call-overload]
    assert (run["caught_up"], run["lag"]) == (True, 0)
    assert flushed_points(capfd.readouterr().out, "CryptoWatchBehind") == [
        ({"service": "crypto-solana", "chain": "solana"}, 0)
    ]


def test_given_1_lamport_dust_and_a_0_01_sol_stray_then_only_the_stray_is_alerted_and_the_dust_is_counted(
    deployed: DynamoCryptoStore,
    chain: SolanaTestChain,
    monkeypatch: pytest.MonkeyPatch,
    capfd: pytest.CaptureFixture[str],
) -> None:
    """D364. The SOL feed answers $150.00 at any slot's time. A stranger (no reference, no linked wallet) sends
    0.01 SOL = 10_000_000 lamports x $150.00 = $1.50 (>= $0.01: alerted), then 1 lamport three times: 0.000000001 x
    150 = $0.00000015 each, $0.00 to the cent (< $0.01): kept UNATTRIBUTED, no alert, CryptoUnattributedUnalerted 3.
    The four are valued at one current SOL rate, read once for the run (D364 amended): 1 feed read, not 4."""
    from kilo_billing.observability import Metric  # noqa: PLC0415
    from kilo_crypto_watch import dependencies  # noqa: PLC0415
    from tests.unit.payment_alarm_helpers import flushed_metrics  # noqa: PLC0415

    class SolFeed:  # a HistoricalPriceSource: $150.00 now and at any past moment; counts its past reads
        reads = 0

        def read(self, asset: Asset) -> RateReading:
            return RateReading("feed", asset, Decimal("150.00"), datetime.now(UTC))

        def read_at(self, asset: Asset, when: datetime, block: object = None) -> RateReading:
            self.reads += 1
            return RateReading("feed", asset, Decimal("150.00"), when)

    feed = SolFeed()
    monkeypatch.setattr(dependencies, "_EXTRA_SOURCES", [feed])
    published: list[tuple[str, dict[str, object]]] = []
    monkeypatch.setattr(dependencies.publisher(), "publish", lambda kind, detail: published.append((kind, detail)))
    stray = chain.pay_sol(10_000_000)
    dust = [chain.pay_sol(1) for _ in range(3)]
    capfd.readouterr()

    (report,) = run_handler()["runs"]  # type: ignore[misc]

    assert report["transfers_seen"] == 4
    alerts = [detail for kind, detail in published if kind == "UnattributedCryptoPayment.v1"]
    assert [(alert["tx_id"], alert["amount"]) for alert in alerts] == [(stray, "0.01")]
    assert sorted(p.transfer.tx_id for p in deployed.unattributed()) == sorted([stray, *dust])
    assert flushed_metrics(capfd.readouterr().out).get(Metric.CRYPTO_UNATTRIBUTED_UNALERTED.value) == 3
    assert feed.reads == 1


def test_given_a_seen_sol_payment_whose_fork_died_then_its_customer_is_told_once_it_cannot_land_any_more(
    deployed: DynamoCryptoStore, chain: SolanaTestChain, monkeypatch: pytest.MonkeyPatch
) -> None:
    """D449 through the scheduled handler: 0.5 SOL ($100.00 at the $200.00 lock) seen in slot S, the bill
    PROCESSING; its fork dies (S skipped). Finalized S + 1 (a block after S whose parent is before it: proof), the run
    orphans it - the bill OPEN asking 100.00 again, nothing told. Its blockhash is from a block before S, and a
    transaction lands at most 151 blocks past its blockhash's block: with every slot after S a block, 151 final
    blocks after S (finalized S + 151) are not proof yet - nothing told; 152 (S + 152): one ``CryptoBillReopened.v1``,
    ``lost`` "expired", 100.00, its signature, and nothing more on the next run. Before: the notice waited 768 s of
    the function's clock - in this test, never sent."""
    from kilo_crypto_watch import dependencies  # noqa: PLC0415

    published: list[tuple[str, dict[str, object]]] = []
    monkeypatch.setattr(dependencies.publisher(), "publish", lambda kind, detail: published.append((kind, detail)))
    reference = open_bill(deployed, chain, "100.00", "SOL", "200.00", 500_000_000)
    signature = chain.pay_sol(500_000_000, reference=reference)
    run_handler()
    seen = deployed.payment(f"solana:{signature}:0")
    assert seen is not None
    slot = seen.transfer.block_number
    assert bill_of(deployed).status is BillStatus.PROCESSING

    def reopened() -> list[dict[str, object]]:
        return [detail for kind, detail in published if kind == "CryptoBillReopened.v1"]

    chain.standin.forget(signature)  # its fork died: S skipped on the finalized chain
    chain.standin.advance(slot + 1 - chain.standin.finalized_slot)
    (dropped,) = run_handler()["runs"]  # type: ignore[misc]
    assert (dropped["orphaned"], bill_of(deployed).status, reopened()) == (1, BillStatus.OPEN, [])

    chain.standin.advance(150)  # finalized S + 151
    assert chain.standin.finalized_slot == slot + 151
    (waiting,) = run_handler()["runs"]  # type: ignore[misc]
    assert reopened() == []

    chain.standin.advance(1)  # finalized S + 152: the block 151 below it is S + 1
    (told,) = run_handler()["runs"]  # type: ignore[misc]
    run_handler()

    [event] = reopened()
    assert str(event["event_id"]).startswith(
        f"crypto-reopened:inv-sol-1:solana:{signature}:0@{seen.transfer.block_hash}/"
    )
    assert (event["lost"], event["lost_usd"], event["lost_tx_id"], event["amount_usd"]) == (
        "expired",
        "100.00",
        signature,
        "100.00",
    )
    # S + 151 .. S + 1 are 151 blocks, S skipped: the block 151 below S + 151 is S - 1; below S + 152, S + 1
    assert (waiting["final_through"], told["final_through"]) == (slot - 1, slot + 1)
