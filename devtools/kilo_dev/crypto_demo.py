"""The demo's crypto part: crypto-billed accounts pay their closed month's bill on the local chains, through the real
routes (``POST .../crypto/bills/<invoice key>/quotes``, the key being the invoice id with ``/`` written ``~``; then a
payment on anvil or the Solana stand-in, then - on EVM - ``POST .../crypto/bills/<invoice key>/transactions`` with the
hash), the watchers run on their schedules (the stack's clock moved on a minute at a time), finality comes (blocks
mined, slots advanced), and each bill's quote, chain payment, finality and USD settlement are read back and compared
with ``ground_truth.expected_crypto``.

Scenarios, in order, one per crypto bill: ``usdc`` (USDC on anvil), ``eth`` (native ETH on anvil), ``sol`` (SOL via
Solana Pay's reference, found by the Solana watcher alone), ``underpay`` (USDC, half the stablecoin tolerance short)
and ``late`` (USDC paid 35 minutes after the quote: past its 30-minute expiry, inside its monitoring window; the
process's clock and anvil's move on together).
"""

from __future__ import annotations

import json
import time
import urllib.error
import urllib.request
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from decimal import Decimal
from typing import Any, Final

from kilo_billing.invoice_keys import invoice_key
from kilo_dev.ground_truth import CRYPTO_SCENARIOS, CryptoExpectation, expected_crypto

LATE_BY: Final = timedelta(minutes=35)  # after a quote's 30-minute expiry, far inside its 72-hour monitoring
WATCHERS: Final = ("CryptoEvmWatcherFunction", "SolanaWatchFunction")


@dataclass(frozen=True)
class CryptoBill:
    account_id: str
    invoice_id: str
    total_usd: Decimal


@dataclass
class CryptoOutcome:
    bill: CryptoBill
    expected: CryptoExpectation
    quote: dict[str, Any]
    tx_id: str
    final: Any = None  # the crypto table's Bill after settlement
    invoice_status: str | None = None
    problems: list[str] | None = None


class ApiError(RuntimeError):
    pass


def call(stack: Any, method: str, path: str, token: str, body: object | None = None) -> dict[str, Any]:
    data = None if body is None else json.dumps(body).encode()
    request = urllib.request.Request(  # noqa: S310 - the local gateway on 127.0.0.1
        f"{stack.url}{path}",
        data=data,
        method=method,
        headers={"Authorization": f"Bearer {token}", "Content-Type": "application/json"},
    )
    try:
        with urllib.request.urlopen(request, timeout=30) as response:  # noqa: S310
            return dict(json.loads(response.read()))
    except urllib.error.HTTPError as exc:
        raise ApiError(f"{method} {path}: {exc.code} {exc.read().decode(errors='replace')}") from exc


def crypto_store(stack: Any) -> Any:
    import boto3  # noqa: PLC0415

    from kilo_crypto_watch.adapters import DynamoCryptoStore  # noqa: PLC0415

    return DynamoCryptoStore(boto3.client("dynamodb"), stack.template.physical_name("CryptoTable"))


def wait_for_bills(stack: Any, bills: Sequence[CryptoBill], timeout: float = 60.0) -> None:
    """Until the crypto bills function has opened a bill for every issued crypto invoice."""
    store = crypto_store(stack)
    deadline = time.monotonic() + timeout
    while any(store.bill(bill.invoice_id) is None for bill in bills):
        if time.monotonic() > deadline:
            missing = [bill.invoice_id for bill in bills if store.bill(bill.invoice_id) is None]
            raise TimeoutError(f"no crypto bill opened for {missing}")
        stack.wait_idle(timeout=30, quiet_polls=1)


def run_watchers(stack: Any, rounds: int = 1, timeout: float = 30.0) -> None:
    """``rounds`` scheduled runs of each crypto watcher: the stack's clock moves on a minute, then the schedules
    fire on it (the stack's own schedule thread, or ticked here when the stack does not poll by itself)."""
    schedules = [s for s in stack.schedules if s.function.name in WATCHERS]
    if len(schedules) != len(WATCHERS):
        raise RuntimeError(f"the crypto watchers' schedules are not running: {[s.function.name for s in schedules]}")
    if not stack.autopoll and any(s.next_fire == 0.0 for s in schedules):
        stack.tick_schedules()  # a schedule's first tick only sets when it fires next
    for _ in range(rounds):
        before = [s.fired for s in schedules]
        stack.clock.set(stack.clock.now() + 61)
        deadline = time.monotonic() + timeout
        while any(s.fired == count for s, count in zip(schedules, before, strict=True)):
            if time.monotonic() > deadline:
                raise TimeoutError("the crypto watchers' schedules did not fire")
            if not stack.autopoll:
                stack.tick_schedules()
            time.sleep(0.1)
        while waiting := [s.function.name for s in schedules if s.pending]:
            if time.monotonic() > deadline:
                raise TimeoutError(f"failed runs of {', '.join(waiting)} still waited for their retries after "
                                   f"{timeout:.0f} s")  # fmt: skip
            if not stack.autopoll:
                stack.tick_schedules()
            time.sleep(0.1)


def pay_bills(stack: Any, bills: Sequence[CryptoBill], shift_clock: Callable[[timedelta], None]) -> list[CryptoOutcome]:
    """Each bill paid in its scenario (``CRYPTO_SCENARIOS`` in order; the late one last); then finality and the
    watchers until every bill is settled; the outcomes read back and compared. ``shift_clock`` moves the process's
    clock on (the demo's time machine)."""
    from kilo_dev.crypto_local import FEED_PRICES  # noqa: PLC0415

    chains = stack.chains
    if chains is None:
        raise RuntimeError("the local stack was started without its chains (crypto=True)")
    wait_for_bills(stack, bills)
    chains.catch_up_solana()
    outcomes: list[CryptoOutcome] = []
    customers = list(chains.customers_evm)
    for index, (scenario, bill) in enumerate(zip(CRYPTO_SCENARIOS, bills, strict=False)):
        expected = expected_crypto(scenario, bill.total_usd, dict(FEED_PRICES))
        token = stack.sign_in(bill.account_id)
        base = f"/v1/accounts/{bill.account_id}/crypto/bills/{invoice_key(bill.invoice_id)}"
        quote = call(stack, "POST", f"{base}/quotes", token, {"chain": expected.chain, "asset": expected.asset})
        if scenario == "late":
            shift_clock(LATE_BY)
            chains.shift_time(int(LATE_BY.total_seconds()))
        if expected.chain == "solana":
            tx_id = chains.pay_solana(expected.asset, expected.paid_atomic, quote["reference"], quote["memo"])
        elif expected.asset == "ETH":
            tx_id = chains.pay_eth(customers[index % len(customers)], expected.paid_atomic)
        else:
            tx_id = chains.pay_usdc_evm(customers[index % len(customers)], expected.paid_atomic)
        if expected.chain != "solana":  # the fast path: the customer submits the hash (Solana: found by reference)
            call(stack, "POST", f"{base}/transactions", token, {"chain": expected.chain, "tx_id": tx_id})
        outcomes.append(CryptoOutcome(bill, expected, quote, tx_id))
    store = crypto_store(stack)
    run_watchers(stack)  # seen (the Solana payment found by its reference)
    chains.finalize()
    for _ in range(5):
        run_watchers(stack)
        stack.wait_idle(timeout=60, quiet_polls=2)
        if all((found := store.bill(o.bill.invoice_id)) is not None and found.status.value == "PAID" for o in outcomes):
            break
    for outcome in outcomes:
        outcome.final = store.bill(outcome.bill.invoice_id)
        outcome.problems = compare_crypto(outcome)
    return outcomes


def compare_crypto(outcome: CryptoOutcome) -> list[str]:
    """What differs between the product's quote and settled bill and the independent expectation."""
    expected, quote, bill = outcome.expected, outcome.quote, outcome.final
    problems = []
    if int(quote["atomic_amount"]) != expected.quoted_atomic:
        problems.append(f"quote asks {quote['atomic_amount']} units, expected {expected.quoted_atomic}")
    if Decimal(quote["rate_usd"]) != expected.rate:
        problems.append(f"locked rate {quote['rate_usd']}, expected {expected.rate}")
    sources = [reading["source"] for reading in quote["rate_sources"]]
    if len(sources) != 2 or not sources[0].startswith("chainlink") or not sources[1].startswith("exchange"):
        problems.append(f"rate sources {sources}, expected Chainlink then the exchange")
    if bill is None:
        return [*problems, "no bill"]
    if bill.status.value != expected.status:
        problems.append(f"bill {bill.status.value}, expected {expected.status}")
    flags = {flag.value for flag in bill.flags}
    if flags != expected.flags:
        problems.append(f"flags {sorted(flags)}, expected {sorted(expected.flags)}")
    if bill.settled_usd != expected.settled_usd:
        problems.append(f"settled ${bill.settled_usd}, expected ${expected.settled_usd}")
    if bill.written_off_usd != expected.written_off_usd:
        problems.append(f"written off ${bill.written_off_usd}, expected ${expected.written_off_usd}")
    lines = [line for line in bill.payments if line.tx_id.lower() == outcome.tx_id.lower()]
    if len(lines) != 1 or lines[0].status.value != "FINALIZED":
        problems.append(f"payment lines for {outcome.tx_id}: {[(p.tx_id, p.status.value) for p in bill.payments]}")
    elif lines[0].late != expected.late:
        problems.append(f"late {lines[0].late}, expected {expected.late}")
    return problems


def crypto_table(outcomes: Sequence[CryptoOutcome]) -> Any:
    from rich.table import Table  # noqa: PLC0415

    table = Table(title="Crypto bills: quote → chain payment → finality → USD settlement (expected in brackets)")
    for column in ("account", "scenario", "bill", "quote (rate, sources)", "chain payment", "finality",
                   "settled USD", "bill / invoice", "check"):  # fmt: skip
        table.add_column(column)
    for o in outcomes:
        bill, expected = o.final, o.expected
        sources = ", ".join(f"{r['source'].split(':')[0]} {r['price_usd']}" for r in o.quote["rate_sources"])
        lines = [line for line in (bill.payments if bill else ()) if line.tx_id.lower() == o.tx_id.lower()]
        finality = lines[0].status.value if lines else "-"
        status = " ".join([bill.status.value, *sorted(f.value for f in bill.flags)]) if bill else "-"
        table.add_row(
            o.bill.account_id,
            o.expected.scenario,
            f"${o.bill.total_usd}",
            f"{o.quote['amount']} {o.quote['asset']} @ ${o.quote['rate_usd']} ({sources})",
            f"{o.quote['chain']} {o.tx_id[:10]}… {Decimal(expected.paid_atomic) / 10 ** _dp(expected.asset)} "
            f"{expected.asset}",
            f"{finality}{' late' if lines and lines[0].late else ''}",
            f"${_usd(bill.settled_usd) if bill else '-'} (${_usd(expected.settled_usd)}); written off "
            f"${_usd(bill.written_off_usd) if bill else '-'} (${_usd(expected.written_off_usd)})",
            f"{status} ({' '.join([expected.status, *sorted(expected.flags)])}) / invoice {o.invoice_status or '-'}",
            "[green]ok[/green]" if not o.problems else f"[red]{'; '.join(o.problems)}[/red]",
        )
    return table


def _usd(value: Decimal) -> str:
    from kilo_billing.money import money_str  # noqa: PLC0415

    return money_str(value)


def _dp(asset: str) -> int:
    from kilo_dev.ground_truth import CRYPTO_DECIMALS  # noqa: PLC0415

    return CRYPTO_DECIMALS[asset]


def travel_shift(travellers: list[Any]) -> Callable[[timedelta], None]:
    """A ``shift_clock`` for ``pay_bills``: a nested time_machine travel ``delta`` ahead of the process's clock (the
    started travellers are kept in ``travellers``; stop them in reverse order)."""

    def shift(delta: timedelta) -> None:
        import time_machine  # noqa: PLC0415

        travel = time_machine.travel(datetime.now(UTC) + delta, tick=True)
        travel.start()
        travellers.append(travel)

    return shift


def crypto_report(
    console: Any, stack: Any, accounts: Sequence[str], period: str, invoices: dict[str, Any] | None = None
) -> bool:
    """The crypto-billed ``accounts`` (in scenario order) pay their invoice closing ``period``; print each bill next
    to its ground truth, with the invoice's status after settlement (paid). True when every bill matches."""
    from kilo_dev.demo import closed_invoices  # noqa: PLC0415

    invoices = invoices or closed_invoices(stack, accounts, period)
    bills = [CryptoBill(a, invoices[a].invoice_id, invoices[a].total) for a in accounts if invoices.get(a) is not None]
    bills = [bill for bill in bills if bill.total_usd > 0][: len(CRYPTO_SCENARIOS)]
    if not bills:
        console.print("No crypto bill to pay this month.")
        return True
    console.print(f"Crypto: {len(bills)} bill(s) paid on the local chains "
                  f"({', '.join(f'{b.account_id} {s}' for b, s in zip(bills, CRYPTO_SCENARIOS, strict=False))}); "
                  "the watchers run on their schedules…")  # fmt: skip
    travellers: list[Any] = []
    began = time.monotonic()
    runs_before = sum(s.fired for s in stack.schedules if s.function.name in WATCHERS)
    try:
        outcomes = pay_bills(stack, bills, travel_shift(travellers))
        stack.wait_idle(timeout=60)
        after = closed_invoices(stack, [o.bill.account_id for o in outcomes], period)
    finally:
        for travel in reversed(travellers):
            travel.stop()
    for outcome in outcomes:
        invoice = after.get(outcome.bill.account_id)
        outcome.invoice_status = invoice.status.value if invoice is not None else None
        if outcome.invoice_status != "paid":
            outcome.problems = [*(outcome.problems or []), f"invoice {outcome.invoice_status}, expected paid"]
    console.print(crypto_table(outcomes))
    runs = sum(s.fired for s in stack.schedules if s.function.name in WATCHERS) - runs_before
    console.print(f"Crypto payments, {runs} watcher runs and settlement in {time.monotonic() - began:.0f} s")
    wrong = [o.bill.account_id for o in outcomes if o.problems]
    if wrong:
        console.print(f"[red]Crypto settlement differs from the ground truth for {', '.join(wrong)}[/red]")
        return False
    console.print("[green]Every crypto bill settled as the ground truth says (atomic amount rounded up at the feed's "
                  "price, finality, USD, tolerance write-off, late policy); its invoice is paid.[/green]")  # fmt: skip
    return True
