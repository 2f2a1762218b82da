"""The demo (the README's run command): the whole pipeline on one machine, no AWS account, no Stripe key.

1. start the local stack (moto server, HTTP gateway, stream pollers, schedules) from ``template.yaml``;
2. give every account its tier, then simulate a month of LiveKit traffic for N accounts - signed webhooks (official
   SDK) and signed app usage reports, over HTTP to the gateway, with reconnects, lost ``participant_left`` events and a
   call across the month end; halfway through the month two accounts upgrade (their profile gains a tier change that
   takes effect at once);
3. let rating catch up, then print each account's month to date from the project's own query and check it against
   the ground truth - quantities from the simulator, money (fee, overage, bill so far, LiveKit cost) from
   ``kilo_dev.ground_truth``'s own arithmetic; exit 1 on any difference;
4. stop every process it started (also on Ctrl-C, failure, or a component of the stack dying).
   ``--keep-running`` leaves the stack up instead.

A run that fails (exit 1; not one interrupted) keeps its evidence in ``.demo/failed-<UTC time>/`` (the next run
overwrites ``.demo/``'s logs): the stack's logs, the demo's own output, the ground-truth comparison in full and moto's
state (``keep_evidence``).
"""

from __future__ import annotations

import argparse
import base64
import dataclasses
import enum
import faulthandler
import functools
import http.client
import json
import os
import re
import shutil
import signal
import sys
import time
import traceback
import urllib.parse
from collections import Counter
from collections.abc import Callable, Mapping, Sequence
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import time_machine
from rich.console import Console
from rich.table import Table

from kilo_billing_cli.console import make_console
from kilo_dev import processes


class HttpSink:
    """Delivers the simulator's traffic like LiveKit and the app would: signed HTTP requests to the gateway."""

    def __init__(
        self,
        base_url: str,
        livekit_key: str,
        livekit_secret: str,
        client: str,
        secret: str,
        clock: Any,
        check: Callable[[], None] | None = None,
    ):
        parsed = urllib.parse.urlparse(base_url)
        self._host, self._port = parsed.hostname or "127.0.0.1", parsed.port or 80
        self._connection: http.client.HTTPConnection | None = None
        self._livekit = (livekit_key, livekit_secret)
        self._usage = (client, secret)
        self._clock = clock
        self._check = check or (lambda: None)  # raises when the stack has died: no point in retrying then
        self._actions: list[tuple[int, Callable[[], None]]] = []
        self.webhooks = 0
        self.usage_reports = 0

    def at(self, when_s: int, action: Callable[[], None]) -> None:
        """Run ``action`` when simulated time reaches ``when_s`` (before anything stamped at or after it is sent)."""
        self._actions.append((when_s, action))
        self._actions.sort(key=lambda entry: entry[0])

    def _post(self, path: str, body: bytes, headers: dict[str, str]) -> tuple[int, bytes]:
        for attempt in range(5):  # LiveKit retries connection errors and 5xx; so does the app
            self._check()
            try:
                if self._connection is None:
                    self._connection = http.client.HTTPConnection(self._host, self._port, timeout=30)
                self._connection.request("POST", path, body=body, headers=headers)
                response = self._connection.getresponse()
                data = response.read()
            except (OSError, http.client.HTTPException):
                self._connection = None
                time.sleep(0.2 * (attempt + 1))
                continue
            if response.status < 500:
                return response.status, data
            time.sleep(0.2 * (attempt + 1))
        raise RuntimeError(f"POST {path} kept failing")

    def webhook(self, body: bytes) -> None:
        from kilo_dev.signing import livekit_authorization  # noqa: PLC0415

        headers = {
            "Content-Type": "application/webhook+json",
            "Authorization": livekit_authorization(body, *self._livekit),
        }
        status, data = self._post("/webhooks/livekit", body, headers)
        if status != 200:
            raise RuntimeError(f"webhook refused ({status}): {data[:200]!r}")
        self.webhooks += 1

    def usage(self, events: list[dict[str, Any]]) -> None:
        from kilo_dev.signing import usage_signature  # noqa: PLC0415

        body = json.dumps({"events": events}).encode()
        headers = {"Content-Type": "application/json", "X-Kilo-Client": self._usage[0],
                   "X-Kilo-Signature": usage_signature(body, self._usage[1])}  # fmt: skip
        status, data = self._post("/v1/usage", body, headers)
        if status != 200:
            raise RuntimeError(f"usage report refused ({status}): {data[:300]!r}")
        self.usage_reports += 1

    def advance(self, now_s: int) -> None:
        self._check()
        while self._actions and self._actions[0][0] <= now_s:
            when_s, action = self._actions.pop(0)
            self._clock.set(when_s)  # the action runs at its own time (the schedules due by then have run)
            action()
        self._clock.set(now_s)


def usage_repository(stack: Any) -> Any:
    """The project's own rating repository, pointed at the local stack's tables (boto3 follows AWS_ENDPOINT_URL)."""
    import boto3  # noqa: PLC0415

    from kilo_rate_usage.adapters import DynamoUsageRepository  # noqa: PLC0415

    names = (stack.template.physical_name("UsageTable"), stack.template.physical_name("EventsTable"))
    return DynamoUsageRepository(boto3.client("dynamodb"), *names)


def month_to_date_rows(stack: Any, accounts: Sequence[Any], period: str, now_ms: int) -> dict[str, Any]:
    """Each account's month to date, read through the project's own query against the local stack."""
    from kilo_billing.catalog import default_catalog  # noqa: PLC0415
    from kilo_billing.periods import Period  # noqa: PLC0415
    from kilo_rate_usage.queries import month_to_date  # noqa: PLC0415

    repo = usage_repository(stack)
    book = default_catalog().for_period(Period.parse(period))
    return {spec.account_id: month_to_date(repo, spec.account_id, period, now_ms, book) for spec in accounts}


TierHistory = list[tuple[int, str]]  # [(from epoch s, tier)]: an account's effective tier changes
TierRequests = list[tuple[int, str, str]]  # [(requested at epoch s, from tier, to tier)]; the first is the signup


def upgrade_instant(period_start_s: int, now_s: int) -> int:
    """When the demo's accounts upgrade: halfway through the simulated part of the month, on a whole minute."""
    return period_start_s + (now_s - period_start_s) // 2 // 60 * 60


def tier_requests(
    accounts: Sequence[Any], signup_s: int, upgrade_at_s: int, downgrade_at_s: int | None = None
) -> dict[str, TierRequests]:
    """Each account's signup (on its tier), its upgrade request if it has one, and its downgrade request if it has one
    and ``downgrade_at_s`` is given."""
    requests: dict[str, TierRequests] = {}
    for spec in accounts:
        found = [(signup_s, spec.tier, spec.tier)]
        if spec.upgrade_to:
            found.append((upgrade_at_s, spec.tier, spec.upgrade_to))
        if spec.downgrade_to and downgrade_at_s is not None:
            found.append((downgrade_at_s, found[-1][2], spec.downgrade_to))
        requests[spec.account_id] = found
    return requests


def account_directory(stack: Any) -> Any:
    """The product's account directory (profiles in the usage table), as `kilo-billing account` uses it."""
    import boto3  # noqa: PLC0415

    from kilo_billing.account_store import DynamoAccountDirectory  # noqa: PLC0415

    return DynamoAccountDirectory(boto3.client("dynamodb"), stack.template.physical_name("UsageTable"))


def write_request(stack: Any, account_id: str, request: tuple[int, str, str], method: str = "card") -> None:
    """Register the account on its first tier, or request a tier change, through the same account operations as
    `kilo-billing account create` / `account change-tier` (the product decides when a change takes effect)."""
    from kilo_billing.accounts import register_account, request_tier_change  # noqa: PLC0415
    from kilo_billing.catalog import default_catalog  # noqa: PLC0415
    from kilo_billing.periods import Period  # noqa: PLC0415

    directory = account_directory(stack)
    at, old, new = request
    when = datetime.fromtimestamp(at, tz=UTC)
    book = default_catalog().for_period(Period.containing(when))
    if old == new:
        register_account(directory, account_id, new, when, book.tier_ids, billing_method=method)
    else:  # the limits checked against the month to date re-rated with the change, as the CLI does (D150)
        request_tier_change(directory, book, account_id, new, when, month=month_source(stack, directory))


def month_source(stack: Any, directory: Any) -> Any:
    """The product's month to date on the usage table, as `kilo-billing account change-tier` reads it."""
    import boto3  # noqa: PLC0415

    from kilo_billing.month_to_date_store import DynamoMonthToDate  # noqa: PLC0415
    from kilo_billing.usage_signals_store import DynamoUsageSignals  # noqa: PLC0415

    dynamodb, table = boto3.client("dynamodb"), stack.template.physical_name("UsageTable")
    return DynamoMonthToDate(dynamodb, table, directory, DynamoUsageSignals(dynamodb, table))


def set_up_accounts(
    stack: Any,
    sink: HttpSink,
    accounts: Sequence[Any],
    period_start_s: int,
    upgrade_at_s: int,
    *,
    signup_s: int | None = None,
    downgrade_at_s: int | None = None,
    methods: dict[str, str] | None = None,
) -> dict[str, TierHistory]:
    """Register each account now (at ``signup_s``; default: the first of the month before ``period_start_s``), with
    its billing method (``methods``, default card); when simulated time reaches ``upgrade_at_s`` /
    ``downgrade_at_s``, request the tier changes. Returns the effective tier histories, worked out by the ground truth
    (an upgrade at once, a downgrade at the next month's start), not read back from the product."""
    from kilo_dev.ground_truth import effective_history  # noqa: PLC0415
    from kilo_dev.simulator import TIERS  # noqa: PLC0415

    if signup_s is None:
        day = datetime.fromtimestamp(period_start_s, tz=UTC) - timedelta(days=1)
        signup_s = int(day.replace(day=1, hour=0, minute=0, second=0, microsecond=0).timestamp())
    requests = tier_requests(accounts, signup_s, upgrade_at_s, downgrade_at_s)
    for spec in accounts:
        write_request(
            stack, spec.account_id, requests[spec.account_id][0], (methods or {}).get(spec.account_id, "card")
        )
    for spec in accounts:
        for request in requests[spec.account_id][1:]:
            sink.at(request[0], functools.partial(write_request, stack, spec.account_id, request))
    return {account: effective_history(found, TIERS) for account, found in requests.items()}


def expected_bills(
    truth: Any, accounts: Sequence[Any], period: str, histories: dict[str, TierHistory]
) -> dict[str, Any]:
    """The ground truth of each account's month to date (``kilo_dev.ground_truth``, independent of the product)."""
    from kilo_dev.ground_truth import expected_bill, period_bounds, price_sheet  # noqa: PLC0415

    sheet = price_sheet(datetime.fromtimestamp(period_bounds(period)[0], tz=UTC))
    return {spec.account_id: expected_bill(truth, spec.account_id, period, histories[spec.account_id], sheet)
            for spec in accounts}  # fmt: skip


def compare(expected: dict[str, Any], rows: dict[str, Any]) -> dict[str, list[str]]:
    """Differences between the rated month to date and the ground truth, per account: tier segments, quantities,
    fee, overage, bill so far, LiveKit cost; sessions left open."""
    from kilo_billing.meters import Meter  # noqa: PLC0415

    problems: dict[str, list[str]] = {}
    for account, mtd in rows.items():
        truth, rated = expected[account], mtd.rated
        tiers = tuple(line.tier for line in rated.fee_lines)
        diffs = [f"tiers: rated {'/'.join(tiers)} vs truth {'/'.join(truth.tiers)}"] if tiers != truth.tiers else []
        diffs += [
            f"{meter.value}: rated {rated.used[meter]} vs truth {truth.used[meter.value]}"
            for meter in Meter
            if rated.used[meter] != truth.used[meter.value]
        ]
        money = (("fee", rated.fee, truth.fee), ("overage", rated.usage_total, truth.overage),
                 ("bill so far", rated.total, truth.total), ("LiveKit cost", rated.cost_basis_rounded,
                 truth.livekit_cost))  # fmt: skip
        diffs += [f"{name}: rated ${got} vs truth ${want}" for name, got, want in money if got != want]
        if mtd.open_sessions:
            diffs.append(f"{mtd.open_sessions} session(s) still open")
        problems[account] = diffs
    return problems


def summary_table(
    accounts: Sequence[Any], rows: dict[str, Any], expected: dict[str, Any], problems: dict[str, list[str]], period: str
) -> Table:
    from kilo_billing.meters import Meter  # noqa: PLC0415
    from kilo_billing.money import money_str  # noqa: PLC0415

    table = Table(
        title=f"Month to date {period} — rated by the local stack, checked against the ground truth "
        "(quantities, fee, overage, bill so far, LiveKit cost)"
    )
    for column in ("account", "tier", "video min", "audio min", "messages", "GB", "fee", "overage", "bill so far",
                   "LiveKit cost", "truth"):  # fmt: skip
        table.add_column(column, justify="left" if column in ("account", "tier", "truth") else "right")
    for spec in accounts:
        mtd = rows[spec.account_id]
        used = mtd.rated.used
        table.add_row(
            spec.account_id,
            " → ".join(expected[spec.account_id].tiers),
            f"{used[Meter.VIDEO]:,}",
            f"{used[Meter.AUDIO]:,}",
            f"{used[Meter.MESSAGES]:,}",
            f"{used[Meter.DATA_TRANSFER]}",
            f"${money_str(mtd.rated.fee)}",
            f"${money_str(mtd.rated.usage_total)}",
            f"[bold]${money_str(mtd.rated.total)}[/bold]",
            f"${money_str(mtd.rated.cost_basis_rounded)}",
            "[green]matches[/green]"
            if not problems[spec.account_id]
            else "[red]" + "; ".join(problems[spec.account_id]) + "[/red]",
        )
    return table


# --- the close: invoices of the closed month, issued through Stripe (the stand-in or test mode) ----------------------

VISA, DECLINED = "pm_card_visa", "pm_card_chargeCustomerFail"  # Stripe's test cards: one pays, one is declined


USAGE_MAX_AGE_S = 34 * 86_400  # the usage API refuses reports more than 35 days old (kilo_webhook_ingest.usage)


def timeline(now: int, grace_s: int) -> tuple[int, datetime, datetime]:
    """(the demo's end, the current month's start, the closed month's start). The demo simulates the whole month
    before the current one and the current one to date, ending at ``now`` or - when the closed month began more than
    34 days before - 34 days after it began (the usage API takes reports up to 35 days old: the demo's process then
    runs on that end's clock, see ``run``). Within the grace window of a month, its close is not due yet: the demo
    shows the month before instead."""
    current = datetime.fromtimestamp(now, tz=UTC).replace(day=1, hour=0, minute=0, second=0, microsecond=0)
    if now < int(current.timestamp()) + grace_s + 3600:
        current = (current - timedelta(days=1)).replace(day=1)
    closed = (current - timedelta(days=1)).replace(day=1)
    return min(now, int(closed.timestamp()) + USAGE_MAX_AGE_S), current, closed


def travel_to(console: Console, now: int, real_now: int) -> Any:
    """The product judges the age of what it receives by its clock (usage reports up to 35 days old; LiveKit and
    Stripe signatures around now): when the demo ends before ``real_now``, its process runs on the clock of its end
    (moving on from there), so the simulated traffic is as fresh as it was then (docs/decisions.md). Returns the
    started ``time_machine`` traveller (stop it), or ``None``."""
    if now >= real_now:
        return None
    travel = time_machine.travel(datetime.fromtimestamp(now, tz=UTC), tick=True)
    travel.start()
    console.print(f"[dim]The demo runs as of {stamp(now)} UTC: the closed month is simulated whole, and the usage API "
                  "takes reports up to 35 days old.[/dim]")  # fmt: skip
    return travel


def stamp(epoch_s: int) -> str:
    return datetime.fromtimestamp(epoch_s, tz=UTC).strftime("%Y-%m-%d %H:%M")


def pays_by(method: str, card: str | None) -> str:
    return "crypto (USD bill)" if method == "crypto" else ("card, declined" if card == DECLINED else "card")


def print_plan(
    console: Console,
    accounts: Sequence[Any],
    billing: dict[str, tuple[str, str | None]],
    instants: tuple[int, int, int, int],
    test_mode: bool,
    detail: str,
) -> None:
    """Say what is simulated (``instants``: start, end, upgrade, downgrade), which accounts change tier when, and
    how each pays."""
    start, end, upgrade_at, downgrade_at = instants
    console.print(f"Simulating {len(accounts)} accounts and {LIMIT_ACCOUNT} from {stamp(start)} to {stamp(end)} "
                  f"UTC {detail}")  # fmt: skip
    upgrading = [spec for spec in accounts if spec.upgrade_to]
    downgrading = [spec for spec in accounts if spec.downgrade_to]
    if upgrading:
        changes = ", ".join(f"{s.account_id} {s.tier} → {s.upgrade_to}" for s in upgrading)
        console.print(f"Upgrades at {stamp(upgrade_at)} UTC (they take effect at once): {changes}")
    if downgrading:
        changes = ", ".join(f"{s.account_id} {s.tier} → {s.downgrade_to}" for s in downgrading)
        console.print(f"Downgrade requested at {stamp(downgrade_at)} UTC (it takes effect next month): {changes}")
    ways = ", ".join(f"{account} {pays_by(*how)}" for account, how in billing.items())
    console.print(f"Payment ({'Stripe test mode' if test_mode else 'the Stripe stand-in'}): {ways}")


def crypto_accounts(accounts: Sequence[Any]) -> list[str]:
    """The accounts billed in crypto, in the order of the crypto part's scenarios (USDC, ETH, SOL, underpaying,
    late): the enterprise accounts from the last, then the team accounts from the last but the first (whose card is
    declined) - at most one per scenario."""
    from kilo_dev.ground_truth import CRYPTO_SCENARIOS  # noqa: PLC0415

    team = [spec.account_id for spec in accounts if spec.tier == "team"]
    enterprise = [spec.account_id for spec in accounts if spec.tier == "enterprise"]
    return [*reversed(enterprise), *reversed(team[1:])][: len(CRYPTO_SCENARIOS)]


def billing_methods(accounts: Sequence[Any]) -> dict[str, tuple[str, str | None]]:
    """How each account pays: (billing method, default card). The first team account's card is declined; the
    ``crypto_accounts`` are billed in crypto (their invoice is an open USD bill until paid on chain, after the
    invoice report); everyone else pays by a card."""
    team = [spec.account_id for spec in accounts if spec.tier == "team"]
    found: dict[str, tuple[str, str | None]] = {spec.account_id: ("card", VISA) for spec in accounts}
    if team:
        found[team[0]] = ("card", DECLINED)
    for account in crypto_accounts(accounts):
        found[account] = ("crypto", None)
    return found


def save_cards(stack: Any, billing: dict[str, tuple[str, str | None]]) -> None:
    """Each card account saved its card (as Checkout would): a Stripe customer with the card as its default, through
    the product's own Stripe adapter against the stack's Stripe (the stand-in, or test mode)."""
    from kilo_invoice.ports import Customer  # noqa: PLC0415
    from kilo_invoice.stripe_adapter import StripePaymentGateway  # noqa: PLC0415

    api_key, api_base = stack.stripe_api()
    gateway = StripePaymentGateway.from_api_key(api_key, api_base=api_base)
    for account, (method, card) in billing.items():
        if method == "card" and card is not None:
            gateway.set_default_payment_method(gateway.ensure_customer(Customer(account)), card)


def ledger_store(stack: Any) -> Any:
    import boto3  # noqa: PLC0415

    from kilo_billing.periods_store import DynamoLedgerStore  # noqa: PLC0415

    return DynamoLedgerStore(boto3.client("dynamodb"), stack.template.physical_name("UsageTable"))


def closed_invoices(stack: Any, accounts: Sequence[Any], period: str) -> dict[str, Any]:
    """Each account's invoice closing ``period`` as the product stored it (``None``: not closed)."""
    store = ledger_store(stack)
    ids = [spec if isinstance(spec, str) else spec.account_id for spec in accounts]
    return {account: store.ledger(account).invoices.get(f"{account}/{period}") for account in ids}


class WaitTimeoutError(RuntimeError):
    """A wait of the demo ran out: the message names what it waited for (the run fails and keeps its evidence)."""


def wait_for_close(stack: Any, accounts: Sequence[Any], period: str, timeout: float = 180.0) -> None:
    """Until every account's invoice for ``period`` is closed and Stripe's events about them have been applied (the
    stand-in has delivered every webhook and the stack is idle again); :class:`WaitTimeoutError` after ``timeout``."""
    deadline = time.monotonic() + timeout
    while True:
        stack.check()
        missing = [account for account, invoice in closed_invoices(stack, accounts, period).items() if invoice is None]
        if not missing:
            break
        if time.monotonic() > deadline:
            waited = f"{timeout:.0f} s of waiting for the hourly close"
            raise WaitTimeoutError(f"no {period} invoice for {', '.join(missing)} after {waited}")
        time.sleep(0.5)
    for _ in range(3):  # the close may emit events while the stack drains: deliveries, then idle, until stable
        if stack.stripe is not None:
            stack.stripe.wait_for_deliveries()
        stack.wait_idle(timeout=max(5.0, deadline - time.monotonic()))


def wait_for_invoice(stack: Any, account_id: str, period: str, timeout: float = 120.0) -> None:
    """Until the account's invoice for ``period`` is stored; :class:`WaitTimeoutError` after ``timeout``."""
    deadline = time.monotonic() + timeout
    while closed_invoices(stack, [account_id], period)[account_id] is None:
        stack.check()
        if time.monotonic() > deadline:
            clock = stamp(int(stack.clock.now()))
            raise WaitTimeoutError(f"no {period} invoice for {account_id} after {timeout:.0f} s of waiting for the "
                                   f"hourly close (the stack's clock at {clock})")  # fmt: skip
        time.sleep(0.2)


def expected_invoices(
    truth: Any,
    accounts: Sequence[Any],
    period: str,
    histories: dict[str, TierHistory],
    billing: dict[str, tuple[str, str | None]],
    late: Sequence[Any] = (),
) -> dict[str, Any]:
    """The ground truth of each account's invoice closing ``period`` (its first invoice: nothing billed in advance;
    ``late``: usage that reached the product after the close, left for the next invoice)."""
    from kilo_dev.ground_truth import expected_invoice, period_bounds, price_sheet  # noqa: PLC0415

    start, end = period_bounds(period)
    sheet, next_sheet = (price_sheet(datetime.fromtimestamp(t, tz=UTC)) for t in (start, end))
    return {
        spec.account_id: expected_invoice(truth, spec.account_id, period, histories[spec.account_id], sheet,
                                          next_sheet, method=billing[spec.account_id][0],
                                          card_pays=billing[spec.account_id][1] != DECLINED, exclude=late)
        for spec in accounts
    }  # fmt: skip


def invoice_lines(invoice: Any) -> dict[tuple[str, str, str], Any]:
    """The product's invoice lines keyed like the ground truth's: (kind, tier, meter)."""
    found: dict[tuple[str, str, str], Any] = {}
    for line in invoice.lines:
        fees = ("fee_proration", "fee_first_month")  # one line for the month's fees, whatever the segments' tiers
        key = (line.kind, line.tier or "" if line.kind not in fees else "", line.meter or "")
        found[key] = found.get(key, 0) + line.amount
    return found


def compare_invoices(expected: dict[str, Any], invoices: dict[str, Any]) -> dict[str, list[str]]:
    """Differences between each stored invoice and its ground truth: each line's amount, lines missing or extra, what
    each usage line used in its tier segment, the total, the payment status."""
    problems: dict[str, list[str]] = {}
    for account, truth in expected.items():
        invoice = invoices.get(account)
        if invoice is None:
            problems[account] = ["no invoice"]
            continue
        got = invoice_lines(invoice)
        diffs = [f"{'/'.join(k for k in key if k)}: invoiced ${got[key]} vs truth ${want}"
                 for key, want in truth.lines.items() if key in got and got[key] != want]  # fmt: skip
        diffs += [f"{'/'.join(k for k in key if k)}: missing (truth ${want})" for key, want in truth.lines.items()
                  if key not in got]  # fmt: skip
        diffs += [f"{'/'.join(k for k in key if k)}: not in the truth (${amount})" for key, amount in got.items()
                  if key not in truth.lines]  # fmt: skip
        used = {(line.kind, line.tier or "", line.meter or ""): line.used for line in invoice.lines
                if line.kind == "usage"}  # fmt: skip
        diffs += [f"{'/'.join(k for k in key if k)}: used {used[key]} vs truth {want}"
                  for key, want in truth.used.items() if key in used and used[key] != want]  # fmt: skip
        if invoice.total != truth.total:
            diffs.append(f"total: invoiced ${invoice.total} vs truth ${truth.total}")
        if invoice.status.value != truth.status:
            diffs.append(f"status: {invoice.status.value} vs truth {truth.status}")
        problems[account] = diffs
    return problems


def invoices_table(
    period: str, invoices: dict[str, Any], billing: dict[str, tuple[str, str | None]], problems: dict[str, list[str]]
) -> Table:
    """One row per account: how it pays, its invoice's lines (usage lines with overage listed, the $0.00 ones
    counted), total, payment status, and the ground truth's verdict."""
    from kilo_billing.money import money_str  # noqa: PLC0415

    table = Table(title=f"Invoices closing {period} — closed by the hourly schedule on the local stack, paid through "
                  "Stripe's webhooks; checked against the ground truth (every line and its quantity, total, "
                  "status)")  # fmt: skip
    for column in ("account", "pays by", "invoice", "lines", "total", "status", "truth"):
        table.add_column(column, justify="right" if column == "total" else "left")
    for account, invoice in invoices.items():
        method, card = billing[account]
        pays = pays_by(method, card)
        verdict = (
            "[green]matches[/green]" if not problems[account] else "[red]" + "; ".join(problems[account]) + "[/red]"
        )
        if invoice is None:
            table.add_row(account, pays, "-", "-", "-", "-", verdict)
            continue
        shown, zero = [], 0
        for line in invoice.lines:
            if line.kind == "usage" and line.amount == 0:
                zero += 1
                continue
            label = {
                "usage": f"{line.meter} overage ({line.tier})",
                "fee": f"{line.tier} fee {line.period} (in advance)",
                "fee_proration": f"fees {line.period}",
                "fee_first_month": f"first-month fee {line.period}",
                "adjustment": f"late {line.meter} {line.period}",
            }.get(line.kind, line.kind)
            shown.append(f"{label} ${money_str(line.amount)}")
        if zero:
            shown.append(f"{zero} usage lines $0.00")
        table.add_row(account, pays, invoice.number, "\n".join(shown), f"[bold]${money_str(invoice.total)}[/bold]",
                      invoice.status.value, verdict)  # fmt: skip
    return table


def invoice_report(
    console: Console,
    stack: Any,
    accounts: Sequence[Any],
    truth: Any,
    histories: dict[str, TierHistory],
    billing: dict[str, tuple[str, str | None]],
    period: str,
    late: Sequence[Any] = (),
) -> bool:
    """Wait for the close, print the closed month's invoices next to the ground truth, and the late usage (``late``:
    pieces whose end arrived after the close) pending for the next invoice; True when all match."""
    wait_for_close(stack, accounts, period)
    invoices = closed_invoices(stack, accounts, period)
    problems = compare_invoices(expected_invoices(truth, accounts, period, histories, billing, late), invoices)
    if stack.stripe is None:  # test mode: the status arrives only if Stripe's webhooks reach the stack
        pending = {
            account for account, invoice in invoices.items() if invoice is not None and invoice.status.value == "open"
        }
        problems = {account: [d for d in diffs if not (account in pending and d.startswith("status: open vs"))]
                    for account, diffs in problems.items()}  # fmt: skip
        console.print("[dim]Stripe test mode: an invoice still open waits for Stripe's webhooks (`stripe listen "
                      f"--forward-to {stack.url}/webhooks/stripe`).[/dim]")  # fmt: skip
    console.print(invoices_table(period, invoices, billing, problems))
    if stack.stripe is not None:
        sent = stack.stripe.delivered
        refused = [event for event, status in sent if status != 200]
        console.print(f"Stripe stand-in: {len(sent)} signed webhooks to /webhooks/stripe"
                      + (f", [red]{len(refused)} not accepted[/red]" if refused else ", all accepted"))  # fmt: skip
    wrong = [account for account, diffs in problems.items() if diffs]
    for account in sorted({piece.account_id for piece in late}):
        mine = [piece for piece in late if piece.account_id == account]
        if not adjustment_report(console, stack, truth, account, period, histories[account], mine):
            wrong.append(f"{account} (late usage)")
    if wrong:
        console.print(f"[red]Invoices differ from the ground truth for {', '.join(wrong)}[/red]")
        return False
    console.print(f"[green]Every {period} invoice matches the ground truth (lines and their quantities, total, "
                  "payment status).[/green]")  # fmt: skip
    return True


# --- a late participant_left: a call of the closed month whose end arrives after the close ----------------------------


def late_left_call(
    truth: Any,
    sink: HttpSink,
    livekit: Any,
    account_id: str,
    instants: tuple[int, int, int],
    closed: Callable[[], None],
) -> list[Any]:
    """A two-person call of ``account_id`` from ``start_s`` to ``left_s`` (``instants``: start, left, delivered; both
    in the closed month): one person's ``participant_left`` arrives on time, the other's only at ``deliver_at_s``,
    once ``closed`` returned (the close is done) - LiveKit kept the participant listed until then, so the sweeper
    does not close it. Its minutes reach the closed month after its
    invoice: late usage, billed as an adjustment on the next invoice. Scheduled on the sink's simulated clock; the
    truth gets both connections at once. Returns the late pieces of usage (``UsageAt``)."""
    from kilo_dev import livekit_events as lk  # noqa: PLC0415
    from kilo_dev.simulator import Connection  # noqa: PLC0415

    start_s, left_s, deliver_at_s = instants
    room = lk.Room(f"RM_late{start_s}", f"{account_id}-late-night", account_id, start_s)
    people = [lk.Participant(f"PA_late{start_s}a", f"{account_id}-user00", start_s * 1000 + 500),
              lk.Participant(f"PA_late{start_s}b", f"{account_id}-user01", start_s * 1000 + 2_500)]  # fmt: skip

    def begin() -> None:
        livekit.rooms[room.name] = [(person.sid, person.identity) for person in people]
        livekit.infos.update({person.sid: person.listed() for person in people})
        sink.webhook(lk.room_started(room, start_s))
        for person in people:
            sink.webhook(lk.participant_joined(room, person))

    def on_time() -> None:
        livekit.rooms[room.name] = [(people[1].sid, people[1].identity)]
        livekit.infos.pop(people[0].sid, None)
        sink.webhook(lk.participant_left(room, people[0], left_s))

    def late() -> None:
        closed()
        livekit.rooms.pop(room.name, None)
        livekit.infos.pop(people[1].sid, None)
        sink.webhook(lk.participant_left(room, people[1], left_s))
        sink.webhook(lk.room_finished(room, left_s + 10))

    sink.at(start_s, begin)
    sink.at(left_s, on_time)
    sink.at(deliver_at_s, late)
    pieces = []
    for person in people:
        minutes = -(-(left_s * 1000 - person.joined_at_ms) // 60_000)  # ceil(seconds / 60): no video
        period = datetime.fromtimestamp(person.joined_at_ms / 1000, tz=UTC).strftime("%Y-%m")
        truth.add(account_id, period, "audio", minutes, person.joined_at_ms)
        pieces.append(truth.usage[-1])
        truth.connections.append(Connection(account_id, room.sid, room.name, person.sid, person.identity,
                                            person.joined_at_ms, left_s))  # fmt: skip
    truth.webhooks += 6
    truth.room_finished_s[room.sid] = left_s + 10
    return pieces[1:]


# --- a lost join the sweeper stands in for: the join-less participant RoomService lists (D375 amended (sw)) ----------


def listed_join_call(truth: Any, sink: HttpSink, livekit: Any, idle: Callable[[], None], account_id: str,
                     instants: tuple[int, int]) -> list[Any]:  # fmt: skip
    """A two-person call of ``account_id`` from 30 min before the sweep at ``sweep_s`` to 30 min after it, audio
    only. The guest's ``participant_joined`` is lost; his microphone track's events and his ``participant_left``
    arrive. Rating marks the room from his track (``idle`` runs 60 s before the sweep, so it has); the sweep lists
    him - the RoomService stand-in answers his kind and join time as LiveKit would - and writes his stand-in join
    (D375 amended (sw)); ``idle`` again 60 s after the sweep, so that sweep and rating are done before he leaves.
    Scheduled on the sink's simulated clock; the truth gets both connections (audio minutes: ceil(seconds / 60)),
    the guest's marked ``swept`` (D438). ``instants``: the sweep, and the end of the traffic - no call when it
    would not end before that (a run on a month's first day). Returns the connections it added to the truth."""
    from kilo_dev import livekit_events as lk  # noqa: PLC0415
    from kilo_dev.simulator import Connection  # noqa: PLC0415

    sweep_s, traffic_end_s = instants
    start_s, left_s = sweep_s - 1800, sweep_s + 1800
    if left_s + 10 >= traffic_end_s:
        return []
    room = lk.Room(f"RM_listed{start_s}", f"{account_id}-listed-join", account_id, start_s)
    host = lk.Participant(f"PA_listed{start_s}a", f"{account_id}-user00", start_s * 1000 + 500)
    guest = lk.Participant(f"PA_listed{start_s}b", f"{account_id}-user01", start_s * 1000 + 2_500)
    track = f"TR_listed{start_s}"

    def begin() -> None:
        livekit.rooms[room.name] = [(person.sid, person.identity) for person in (host, guest)]
        for person in (host, guest):
            livekit.infos[person.sid] = person.listed()
        sink.webhook(lk.room_started(room, start_s))
        sink.webhook(lk.participant_joined(room, host))  # the guest's participant_joined is lost

    def end() -> None:
        livekit.rooms.pop(room.name, None)
        for person in (host, guest):
            livekit.infos.pop(person.sid, None)
        sink.webhook(lk.participant_left(room, host, left_s))
        sink.webhook(lk.track_unpublished(room, guest, track, left_s + 4, video=False))
        sink.webhook(lk.participant_left(room, guest, left_s + 5))
        sink.webhook(lk.room_finished(room, left_s + 10))

    sink.at(start_s, begin)
    sink.at(start_s + 60, lambda: sink.webhook(lk.track_published(room, guest, track, start_s + 60, video=False)))
    sink.at(sweep_s - 60, idle)
    sink.at(sweep_s + 60, idle)
    sink.at(left_s + 10, end)
    for person, gone_s in ((host, left_s), (guest, left_s + 5)):
        minutes = -(-(gone_s * 1000 - person.joined_at_ms) // 60_000)  # ceil(seconds / 60): no video
        period = datetime.fromtimestamp(person.joined_at_ms / 1000, tz=UTC).strftime("%Y-%m")
        truth.add(account_id, period, "audio", minutes, person.joined_at_ms)
        swept = person is guest
        truth.connections.append(Connection(account_id, room.sid, room.name, person.sid, person.identity,
                                            person.joined_at_ms, gone_s, join_delivered=not swept,
                                            swept=swept))  # fmt: skip
        truth.minutes_of[person.sid] = minutes
    truth.webhooks += 7  # the guest's participant_joined is not one of them
    truth.room_finished_s[room.sid] = left_s + 10
    return list(truth.connections[-2:])


def pending_adjustments(stack: Any, account_id: str, period: str) -> list[Any]:
    """The adjustment lines the product will put on the account's next invoice for ``period``'s late usage (rating
    now minus rating as billed), from its own ledger."""
    from kilo_billing.catalog import default_catalog  # noqa: PLC0415
    from kilo_billing.invoicing import adjustment_lines  # noqa: PLC0415
    from kilo_billing.periods import Period  # noqa: PLC0415

    ledger = ledger_store(stack).ledger(account_id)
    found = ledger.periods.get(period)
    if found is None or ledger.profile is None or not found.unbilled:
        return []
    key = Period.parse(period)
    return adjustment_lines(key, ledger.profile, found.billed, found.counters, default_catalog().for_period(key))


def adjustment_report(
    console: Console,
    stack: Any,
    truth: Any,
    account_id: str,
    period: str,
    history: TierHistory,
    late: list[Any],
) -> bool:
    """The late ``participant_left``'s minutes: the product's pending adjustment for ``period`` next to the ground
    truth's (the invoice with them minus the invoice without them, per tier segment and meter)."""
    from kilo_dev.ground_truth import expected_invoice, period_bounds, price_sheet  # noqa: PLC0415

    start, end = period_bounds(period)
    sheet, next_sheet = (price_sheet(datetime.fromtimestamp(t, tz=UTC)) for t in (start, end))
    with_late = expected_invoice(truth, account_id, period, history, sheet, next_sheet).lines
    without = expected_invoice(truth, account_id, period, history, sheet, next_sheet, exclude=late).lines
    minutes = sum(piece.quantity for piece in late)
    want = {(tier, meter): with_late[key] - without[key] for key in with_late if key[0] == "usage"
            for _, tier, meter in [key] if with_late[key] != without[key]}  # fmt: skip
    lines = pending_adjustments(stack, account_id, period)
    got = {(line.tier or "", line.meter or ""): line.amount for line in lines}
    used = sum((line.used for line in lines if line.meter == "audio"), start=0)
    shown = "; ".join(f"{line.meter} {line.tier} +{line.used} min ${line.amount}" for line in lines) or "none"
    same = used == minutes and all(got.get(key, 0) == amount for key, amount in want.items())
    same = same and all(amount == want.get(key, 0) for key, amount in got.items())
    verdict = "[green]matches the ground truth[/green]" if same else f"[red]truth: +{minutes} min, {want}[/red]"
    console.print(f"Late participant_left for {account_id} (a {period} call, its end delivered after the close): "
                  f"pending adjustment on the next invoice: {shown} — {verdict}")  # fmt: skip
    return same


# --- the budget forecast and its re-check (D366): a steady month's first day ----------------------------------------

FORECAST_ACCOUNT = "acct-forecast-01"  # a Team account ($29 a month) with a $36 budget at 50 / 80 / 100 %
FORECAST_BUDGET_USD = "36.00"
FORECAST_PERCENTS = (50, 80, 100)
FORECAST_MESSAGES = 7_500  # reported every 3 hours from 00:30 on the closed month's first day: 60,000 a day
FORECAST_EVERY_S = 3 * 3600


@dataclasses.dataclass(frozen=True)
class ForecastScene:
    """The forecast account's steady reports up to the re-check's run: (timestamp s, messages) each; ``run_s`` the
    operator checks' run after the base (the re-check queued then, handled on its own queue)."""

    period: str
    reports: tuple[tuple[int, int], ...]
    due_s: int
    run_s: int

    def days(self) -> tuple[Any, Any]:
        """The ground truth's days: the forecast of the budget events of the first report (before the base: over the
        base), and the re-check's at its run (at the rate so far)."""
        from fractions import Fraction  # noqa: PLC0415

        from kilo_dev.ground_truth import forecast_day, period_bounds, price_sheet  # noqa: PLC0415

        sheet = price_sheet(datetime.fromtimestamp(period_bounds(self.period)[0], tz=UTC))
        limit = Fraction(FORECAST_BUDGET_USD)

        def used(until_s: int) -> dict[str, int]:
            return {"video": 0, "audio": 0, "messages": sum(q for at, q in self.reports if at <= until_s)}

        early_s = self.reports[0][0]
        early = forecast_day(used(early_s), "team", sheet, limit, self.period, early_s)
        return early, forecast_day(used(self.run_s), "team", sheet, limit, self.period, self.run_s)

    def expected(self) -> Counter[Any]:
        from kilo_dev.ground_truth import expected_forecasts  # noqa: PLC0415

        return expected_forecasts(self.period, *self.days())

    def summary(self) -> str:
        from kilo_dev.ground_truth import day_label  # noqa: PLC0415

        early, recheck = (day_label(day) if day else "no day" for day in self.days())
        return (
            f"Forecast of {FORECAST_ACCOUNT} (budget ${FORECAST_BUDGET_USD}; the ground truth's own arithmetic): the "
            f"budget events before the base ({stamp(self.due_s)} UTC) say {early}; the re-check queued at "
            f"{stamp(self.run_s)} UTC says {recheck}"
        )


def forecast_scene(
    stack: Any, sink: HttpSink, truth: Any, period: str, grid: tuple[int, int], say: Callable[[str], None]
) -> ForecastScene:
    """The forecast account reports ``FORECAST_MESSAGES`` every 3 hours of ``period`` until the operator checks'
    first run (on the schedules' ``grid``) after the forecast's base: its first report's budget events (the $29 fee is
    80.6 % of $36) come before the base - their forecast spreads the use over the base, and the month's re-check is
    planned - and that run queues the re-check on its own queue for the alerts function. The alerts function reads
    its clock from the process (not the simulated one): around the first report and the re-check's run the process
    travels to the simulated time (once the stack is idle: what was sent before is not handled on that clock; what
    the simulation sends in the window's two seconds is handled at about its own time), so both are judged in
    ``period`` as they would be live. The truth gets every report; ``say`` prints the plan."""
    from kilo_dev.ground_truth import period_bounds, recheck_due_s  # noqa: PLC0415

    start, _ = period_bounds(period)
    due = recheck_due_s(period)
    stride, offset = grid
    run_s = due + (offset - due) % stride
    reports = tuple((at, FORECAST_MESSAGES) for at in range(start + 1800, run_s, FORECAST_EVERY_S))
    say(
        f"{FORECAST_ACCOUNT} (Team, budget ${FORECAST_BUDGET_USD}) reports {FORECAST_MESSAGES:,} messages every 3 "
        f"hours from {stamp(reports[0][0])} UTC: re-checked once its base ({stamp(due)} UTC) has elapsed"
    )
    travelling: list[Any] = []

    def travel(at_s: int) -> None:
        stack.wait_idle(timeout=600)
        traveller = time_machine.travel(datetime.fromtimestamp(at_s, tz=UTC), tick=True)
        traveller.start()
        travelling.append(traveller)

    def back() -> None:
        try:
            stack.wait_idle(timeout=600)
        finally:
            travelling.pop().stop()

    def report(at_s: int, quantity: int) -> None:
        stamp_ = datetime.fromtimestamp(at_s, tz=UTC).strftime("%Y-%m-%dT%H:%M:%SZ")
        sink.usage([{"idempotency_key": f"forecast-{at_s}", "account_id": FORECAST_ACCOUNT, "meter": "messages",
                     "quantity": quantity, "timestamp": stamp_}])  # fmt: skip

    def first() -> None:
        travel(reports[0][0])
        try:
            report(*reports[0])
        finally:
            back()

    sink.at(reports[0][0], first)
    for at, quantity in reports[1:]:
        sink.at(at, functools.partial(report, at, quantity))
    sink.at(run_s - 1, functools.partial(travel, run_s))
    sink.at(run_s + 1, back)
    for at, quantity in reports:
        truth.add(FORECAST_ACCOUNT, period, "messages", quantity, at * 1000)
    truth.usage_events += len(reports)
    return ForecastScene(period, reports, due, run_s)


# --- a lost join: one participant's participant_joined and participant_left both lost (D375) -------------------------


def emf_count(log_path: Path, metric: str) -> int:
    """The sum of an EMF metric the stack's handlers printed to its log (Powertools' one JSON line per flush)."""
    total = 0.0
    for line in log_path.read_text(encoding="utf-8", errors="replace").splitlines():
        if f'"{metric}"' not in line or not line.startswith("{"):
            continue
        try:
            value = json.loads(line).get(metric, 0)
        except ValueError:
            continue
        total += sum(value) if isinstance(value, list) else float(value)
    return int(total)


def lost_join_report(console: Console, stack: Any, truth: Any) -> bool:
    """The participants whose ``participant_joined`` the simulator dropped (their track events delivered), each
    against what the ground truth expects. One lost his ``participant_left`` too: by D375 a session of kind UNKNOWN,
    not billed (the truth leaves his minutes out), counted as ``SessionsJoinLost``. The other's leave arrived
    (D438): it carries his join time and kind, so he is billed by his real kind (STANDARD) for the minutes the
    truth model counts for him (``Truth.minutes_of``, the simulator's own arithmetic), and not counted. Both left
    before any sweep ran, so RoomService never listed them and no sweep gave them up (D393). A third (``swept``,
    ``listed_join_call``) was connected when a sweep ran: the sweeper must have stored his stand-in join (D375 amended
    (sw): ``kilo_participant_listed``) at his real join time, and he is billed as STANDARD for the minutes the truth
    counts, not counted. ``SessionsJoinLost`` in the stack's log must equal the number that lost both. True when the
    product agrees."""
    from kilo_rate_usage.model import LISTED  # noqa: PLC0415

    lost = [c for c in truth.connections if not c.join_delivered]
    if not lost:
        console.print("[yellow]Lost join (D375): no participant of this run's traffic fits (none dropped)[/yellow]")
        return True
    repo = usage_repository(stack)
    counted = emf_count(stack.log_path, "SessionsJoinLost")
    unknown = sum(1 for c in lost if not c.left_delivered)
    ok = counted == unknown
    for connection in lost:
        stored = repo.stored_sessions(connection.room_sid).get(connection.participant_sid)
        kind = stored.session.kind if stored is not None else "none stored"
        minutes = 0 if stored is None else sum(stored.contributions.values())
        billed = "nothing stored" if stored is None else f"billed {minutes} min" if minutes else "not billed"
        if connection.swept:  # the sweeper's stand-in join, from RoomService's answer: his kind and real join time
            stand_ins = [r.joined_at_ms for r in repo.room_events(connection.room_sid)
                         if (r.event_type, r.participant_sid) == (LISTED, connection.participant_sid)]  # fmt: skip
            rule = "D375 (sw)"
            lost_what = "participant_joined lost, connected when a sweep ran, participant_left delivered"
            wanted = truth.minutes_of[connection.participant_sid]
            expects = f"the sweeper's stand-in join at his join, kind STANDARD, billed {wanted} min, not counted"
            billed += f", stand-in joins stored at {stand_ins} ms (he joined at {connection.joined_ms})"
            same = stored is not None and kind == "STANDARD" and minutes == wanted
            same = same and stand_ins == [connection.joined_ms]
        elif connection.left_delivered:
            rule, lost_what = "D438", "participant_joined lost, participant_left delivered"
            wanted = truth.minutes_of[connection.participant_sid]
            expects = "kind STANDARD, " + (f"billed {wanted} min" if wanted else "not billed") + ", not counted"
            same = stored is not None and kind == "STANDARD" and minutes == wanted
        else:
            rule, lost_what = "D375", "participant_joined and participant_left lost"
            expects = "kind UNKNOWN, not billed, counted"
            same = stored is not None and kind == "UNKNOWN" and billed == "not billed"
        ok = ok and same
        verdict = (
            f"[green]as the ground truth expects ({expects})[/green]"
            if same
            else f"[red]the ground truth expects {expects}[/red]"
        )
        console.print(
            f"Lost join ({rule}): {connection.identity} ({connection.participant_sid}) in {connection.room_name} "
            f"({connection.room_sid}), {lost_what}, tracks delivered: stored as kind {kind}, {billed} - {verdict}",
            soft_wrap=True,
        )  # fmt: skip
    colour = "green" if counted == unknown else "red"
    console.print(f"[{colour}]SessionsJoinLost {counted} in the stack's log; the ground truth expects {unknown} (the "
                  f"participants who lost both their join and their leave)[/{colour}]")  # fmt: skip
    return ok


# --- alerts: what the month caused, read back from the local stack's SES and SNS -------------------------------------

LIMIT_ACCOUNT = "acct-limit-01"  # a Personal account with a $1.00 budget that is also its hard limit
LIMIT_USD = "1.00"
LIMIT_MESSAGES = 110_000  # reported during its one call: 10,000 past the included 100,000 messages, $1.20 of overage


def contact(index: int, account_id: str) -> tuple[str, str]:
    """The demo's email address and (E.164) phone number of an account."""
    return f"billing@{account_id}.example", f"+1415555{index:04d}"


def set_up_alerts(stack: Any, accounts: Sequence[Any]) -> dict[str, str]:
    """Every account gets an email address and a phone number (through the account operations); the limit account
    a budget of $1.00 alerting at 100 % whose hard limit is the same $1.00. Returns recipient -> account."""
    from decimal import Decimal  # noqa: PLC0415

    from kilo_billing.accounts import mark_phone_verified, set_alert_contact  # noqa: PLC0415
    from kilo_billing.budgets import BudgetChange, set_budget  # noqa: PLC0415

    directory = account_directory(stack)
    recipients: dict[str, str] = {}
    for index, spec in enumerate(accounts):
        email, phone = contact(index, spec.account_id)
        set_alert_contact(directory, spec.account_id, name=spec.account_id, email=email, phone=phone)
        mark_phone_verified(directory, spec.account_id, phone)  # the demo vouches for its numbers (no code to confirm)
        recipients |= {email: spec.account_id, phone: spec.account_id}
    limit = Decimal(LIMIT_USD)
    set_budget(directory, LIMIT_ACCOUNT, BudgetChange(budget_usd=limit, thresholds=(100,), hard_limit_usd=limit))
    if FORECAST_ACCOUNT in {spec.account_id for spec in accounts}:
        set_budget(directory, FORECAST_ACCOUNT,
                   BudgetChange(budget_usd=Decimal(FORECAST_BUDGET_USD), thresholds=FORECAST_PERCENTS))  # fmt: skip
    return recipients


def wait_for_enforcement(livekit: Any, stack: Any, removals: int, timeout: float = 90.0) -> None:
    """Until LiveKit's RoomService stand-in has seen ``removals`` RemoveParticipant calls; :class:`WaitTimeoutError`
    after ``timeout``."""
    deadline = time.monotonic() + timeout
    while (seen := sum(1 for method, _ in livekit.calls if method == "RemoveParticipant")) < removals:
        stack.check()
        if time.monotonic() > deadline:
            raise WaitTimeoutError(f"RoomService saw {seen} of the {removals} RemoveParticipant calls of the hard "
                                   f"limit's enforcement after {timeout:.0f} s (calls: {livekit.calls})")  # fmt: skip
        time.sleep(0.2)


_ALLOWANCE = re.compile(r"(\d+)% of (?:your )?included (.+?) used for (\w+ \d{4})")
_BUDGET = re.compile(r"(\w+ \d{4}) bill so far (?:reached (\d+)% of your budget|\S+, (\d+)% of your)")
_HARD = re.compile(r"hard (?:spending )?limit .*?reached|(\w+ \d{4}) hard spending limit")
_MONTH = re.compile(r"(January|February|March|April|May|June|July|August|September|October|November|December) \d{4}")
_METERS = {"video minutes": "video", "audio minutes": "audio", "messages": "messages",
           "GB of data transfer": "data_transfer"}  # fmt: skip


_FORECAST = re.compile(r"[Aa]t this rate your (\w+ \d{4}) bill .*?around (\w+ \d+ \w+)")
_INVOICE = re.compile(r"invoice (KB-\S+) for (\w+ \d{4}): \$")
_PAYMENT_FAILED = re.compile(r"your (?:Kilo )?payment of (\$[\d,]+\.\d\d)")


def classify(text: str) -> tuple[str, str, str] | None:
    """(period, kind, key) of a delivered subject or SMS text, read from its words."""
    if found := _INVOICE.search(text):
        period = datetime.strptime(found.group(2), "%B %Y").replace(tzinfo=UTC).strftime("%Y-%m")
        return period, "invoice_issued", found.group(1)
    if found := _PAYMENT_FAILED.search(text):
        return "", "payment_failed", found.group(1)  # filed under the month it happened: not asserted here
    month = _MONTH.search(text)
    if month is None:
        return None
    period = datetime.strptime(month.group(0), "%B %Y").replace(tzinfo=UTC).strftime("%Y-%m")
    if found := _FORECAST.search(text):  # keyed by the day it says ("Wednesday 25 November")
        return period, "budget_forecast", found.group(2)
    if found := _ALLOWANCE.search(text):
        return period, "allowance_threshold", f"{_METERS.get(found.group(2), found.group(2))}:{found.group(1)}"
    if found := _BUDGET.search(text):
        return period, "budget_threshold", f"budget:{found.group(2) or found.group(3)}"
    if _HARD.search(text):
        return period, "budget_hard_limit", "hard_limit:100"
    return None


def delivered(stack: Any, recipients: dict[str, str]) -> tuple[list[tuple[str, str, str]], dict[str, Counter[Any]]]:
    """Emails (SES) and SMS (SNS) the local stack delivered, from moto's ``/moto-api/data.json``: the list of
    (account, channel, subject or text), and per account the set of (period, kind, key, channel) they say."""
    import email  # noqa: PLC0415
    import email.policy  # noqa: PLC0415
    import urllib.request  # noqa: PLC0415

    with urllib.request.urlopen(f"{stack.moto.url}/moto-api/data.json", timeout=30) as answer:  # noqa: S310
        data = json.loads(answer.read())
    messages: list[tuple[str, str, str]] = []
    for raw in data.get("ses", {}).get("RawMessage", []):
        parsed = email.message_from_string(raw["raw_data"], policy=email.policy.default)
        # moto lists the To address once from the request and once from the message's header: one email each
        for address in dict.fromkeys(raw.get("destinations") or [str(parsed["To"])]):
            messages.append((recipients.get(address, address), "email", str(parsed["Subject"])))
    for sms in data.get("sns", {}).get("SMS", []):
        messages.append((recipients.get(sms["phone_number"], sms["phone_number"]), "sms", sms["message"]))
    said: dict[str, Counter[Any]] = {}
    for account, channel, text in messages:
        found = classify(text)
        said.setdefault(account, Counter())[(*found, channel) if found else ("?", text, "", channel)] += 1
    return sorted(messages), said


def alerts_report(
    console: Console,
    stack: Any,
    livekit: Any,
    truth: Any,
    accounts: Sequence[Any],
    histories: dict[str, TierHistory],
    recipients: dict[str, str],
    scene: Any,
    periods: Sequence[str],
    invoices: Mapping[str, Any] | None = None,
    forecast: ForecastScene | None = None,
) -> bool:
    """Print the delivered emails and SMS and the RoomService calls next to what the ground truth expects; True when
    they are the same. ``invoices``: the expected invoice of each account closing ``periods[0]`` (its
    ``invoice_issued`` email, and the ``payment_failed`` email and SMS of a declined card). ``forecast``: the
    forecast account's scene (its forecast alerts, by the ground truth's days)."""
    from fractions import Fraction  # noqa: PLC0415

    from kilo_dev.ground_truth import Budget, expected_alerts, period_bounds, price_sheet  # noqa: PLC0415

    budgets = {LIMIT_ACCOUNT: Budget(Fraction(LIMIT_USD), (100,), Fraction(LIMIT_USD)),
               FORECAST_ACCOUNT: Budget(Fraction(FORECAST_BUDGET_USD), FORECAST_PERCENTS)}  # fmt: skip
    expected: dict[str, Counter[Any]] = {}
    for spec in accounts:
        for period in periods:
            sheet = price_sheet(datetime.fromtimestamp(period_bounds(period)[0], tz=UTC))
            found = expected_alerts(truth, spec.account_id, period, histories[spec.account_id], sheet,
                                    budgets.get(spec.account_id))  # fmt: skip
            if found:
                expected.setdefault(spec.account_id, Counter()).update(found)
    for account, invoice in (invoices or {}).items():
        wanted = {(periods[0], "invoice_issued", f"KB-{account}-00001", "email")}  # each account's first invoice
        if invoice.status == "payment_failed":
            total = f"${invoice.total:,.2f}"
            wanted |= {("", "payment_failed", total, "email"), ("", "payment_failed", total, "sms")}
        expected.setdefault(account, Counter()).update(wanted)
    if forecast is not None:
        expected.setdefault(FORECAST_ACCOUNT, Counter()).update(forecast.expected())
        console.print(forecast.summary())
    messages, said = delivered(stack, recipients)
    table = Table(title="Alerts delivered by the local stack (SES email, SNS SMS), checked against the ground truth")
    for column in ("account", "channel", "subject / text"):
        table.add_column(column)
    for account, channel, text in messages:
        table.add_row(account, channel, text)
    console.print(table)
    ok = True
    for account in sorted(set(expected) | set(said)):
        want, got = expected.get(account, Counter()), said.get(account, Counter())
        if want != got:  # each expected alert exactly as often as expected (once per tier segment), per channel
            ok = False
            console.print(f"[red]{account}: alerts missing {sorted(want - got)}, unexpected or repeated "
                          f"{sorted(got - want)}[/red]")  # fmt: skip
    count = sum(found.total() for found in expected.values())
    console.print(f"Alerts: {len(messages)} delivered, {count} expected by the ground truth"
                  + (" [green]- the same[/green]" if ok else ""))  # fmt: skip
    calls = [(method, str(body.get("room")), str(body.get("identity"))) for method, body in livekit.calls]
    for method, body in livekit.calls:
        sources = ",".join(body.get("permission", {}).get("canPublishSources", []))
        console.print(f"  RoomService {method} room={body.get('room')} identity={body.get('identity')}"
                      + (f" may publish: {sources}" if method == "UpdateParticipant" else ""))  # fmt: skip
    want_calls = scene.expected_enforcement()
    updates_first = calls[: len(scene.identities)], calls[len(scene.identities) :]
    same = (
        sorted(updates_first[0]) == want_calls[: len(scene.identities)]
        and sorted(updates_first[1]) == want_calls[len(scene.identities) :]
    )
    if same:
        console.print(f"[green]Enforcement for {scene.account_id}: audio only, then removal, for "
                      f"{', '.join(scene.identities)} - as expected[/green]")  # fmt: skip
    else:
        console.print(f"[red]Enforcement differs: RoomService saw {calls}, expected {want_calls}[/red]")
    return ok and same


# --- a failing run's evidence ---------------------------------------------------------------------------------------

DEMO_DIR = Path(__file__).resolve().parents[2] / ".demo"  # the stack's logs (LocalStack's default place)


def _new_truth() -> Any:
    from kilo_dev.simulator import Truth  # noqa: PLC0415

    return Truth()


@dataclasses.dataclass
class RunState:
    """What a run has built so far, for its evidence if it fails (the truth grows as the simulation goes)."""

    accounts: Sequence[Any]
    billing: dict[str, tuple[str, str | None]]
    closed: str  # the month the run closes, "YYYY-MM"
    now: int  # the run's end, epoch s
    truth: Any = dataclasses.field(default_factory=_new_truth)
    histories: dict[str, TierHistory] | None = None
    late: list[Any] = dataclasses.field(default_factory=list)
    passed: bool = False  # everything matched the ground truth
    left: list[str] = dataclasses.field(default_factory=list)  # what the run could not stop in time, named


def plain(value: Any) -> Any:
    """``value`` as JSON can hold it: dataclasses and mappings as objects (tuple keys joined with "/"), enums by their
    value, bytes as ``{"base64": ...}``, anything else unknown (Decimal, datetime) as its ``str``."""
    if dataclasses.is_dataclass(value) and not isinstance(value, type):
        return {field.name: plain(getattr(value, field.name)) for field in dataclasses.fields(value)}
    if isinstance(value, Mapping):
        return {_key(key): plain(item) for key, item in value.items()}
    if isinstance(value, list | tuple | set | frozenset):
        return [plain(item) for item in value]
    if isinstance(value, enum.Enum):
        return plain(value.value)
    if isinstance(value, bytes | bytearray):
        return {"base64": base64.b64encode(value).decode()}
    if isinstance(getattr(value, "value", None), bytes):  # boto3's Binary (a DynamoDB B attribute)
        return plain(value.value)
    if value is None or isinstance(value, str | int | float | bool):
        return value
    return str(value)


def _key(key: Any) -> str:
    if isinstance(key, tuple):
        return "/".join(_key(part) for part in key)
    return str(key.value) if isinstance(key, enum.Enum) else str(key)


def failure_evidence(stack: Any, seen: RunState) -> dict[str, str]:
    """Files for a failing run's evidence, read while its stack still runs: ``ground-truth.json`` (per month and
    account the ground truth, what the stack rated or invoiced, and their differences; the truth's pieces of usage
    and connections), ``tables.json`` (every table's items) and ``moto-state.json`` (moto's ``/moto-api/data.json``:
    its resources, emails and SMS). A part that cannot be read (the stack died) says why instead."""
    found: dict[str, Any] = {}
    current = datetime.fromtimestamp(seen.now, tz=UTC).strftime("%Y-%m")

    def part(name: str, read: Callable[[], Any]) -> None:
        try:
            found[name] = plain(read())
        except Exception as exc:  # evidence is best effort: say what could not be read
            found[name] = f"not read: {type(exc).__name__}: {exc}"

    if seen.histories is not None:
        histories = seen.histories
        for period in dict.fromkeys((seen.closed, current)):

            def month(period: str = period) -> dict[str, Any]:
                truth = expected_bills(seen.truth, seen.accounts, period, histories)
                rows = month_to_date_rows(stack, seen.accounts, period, seen.now * 1000)
                diffs = compare(truth, rows)
                return {account: {"truth": truth[account], "rated": rows[account].as_json(),
                                  "used": rows[account].used, "differences": diffs[account]}
                        for account in rows}  # fmt: skip

            part(f"month to date {period}", month)

        def invoices() -> dict[str, Any]:
            truth = expected_invoices(seen.truth, seen.accounts, seen.closed, histories, seen.billing, seen.late)
            stored = closed_invoices(stack, seen.accounts, seen.closed)
            diffs = compare_invoices(truth, stored)
            return {account: {"truth": truth[account], "invoice": stored[account], "differences": diffs[account]}
                    for account in truth}  # fmt: skip

        part(f"invoices {seen.closed}", invoices)
    part("truth", lambda: {"summary": seen.truth.as_json(), "usage": seen.truth.usage,
                           "connections": seen.truth.connections, "late": seen.late})  # fmt: skip
    return {
        "ground-truth.json": json.dumps(found, indent=1),
        "tables.json": _or_why(lambda: json.dumps(table_items(stack), indent=1)),
        "moto-state.json": _or_why(lambda: _read_url(f"{stack.moto.url}/moto-api/data.json")),
    }


def _or_why(read: Callable[[], str]) -> str:
    try:
        return read()
    except Exception as exc:  # the stack may be what died: say so in the file
        return json.dumps({"not read": f"{type(exc).__name__}: {exc}"})


def _read_url(url: str) -> str:
    import urllib.request  # noqa: PLC0415

    with urllib.request.urlopen(url, timeout=30) as answer:  # noqa: S310 - the stack's moto server on 127.0.0.1
        return str(answer.read().decode())


def table_items(stack: Any) -> dict[str, list[Any]]:
    """Every item of every DynamoDB table of the stack (moto's own state lists tables, not their items)."""
    from boto3.dynamodb.types import TypeDeserializer  # noqa: PLC0415

    client, read = stack.clients["dynamodb"], TypeDeserializer().deserialize
    found: dict[str, list[Any]] = {}
    for page in client.get_paginator("list_tables").paginate():
        for name in page["TableNames"]:
            items = (item for scanned in client.get_paginator("scan").paginate(TableName=name)
                     for item in scanned["Items"])  # fmt: skip
            found[name] = [plain({key: read(value) for key, value in item.items()}) for item in items]
    return found


def keep_evidence(directory: Path, output: str, files: Mapping[str, str], at: datetime | None = None) -> Path:
    """Keep a failing run's evidence where the next run does not overwrite it: ``directory/failed-<UTC time>/`` gets
    a copy of every log in ``directory`` (the stack's handlers, moto, anvil), ``output.txt`` (what the demo printed)
    and ``files`` (name -> text). Returns the folder."""
    stamp_ = (at or datetime.now(UTC)).strftime("%Y%m%dT%H%M%SZ")
    folder, n = directory / f"failed-{stamp_}", 1
    while True:
        try:
            folder.mkdir(parents=True)
            break
        except FileExistsError:  # two failures within a second
            n += 1
            folder = directory / f"failed-{stamp_}-{n}"
    for log in sorted(directory.glob("*.log")):
        shutil.copy2(log, folder / log.name)
    (folder / "output.txt").write_text(output, encoding="utf-8")
    for name, text in files.items():
        (folder / name).write_text(text, encoding="utf-8")
    return folder


def plan_accounts(n: int) -> tuple[list[Any], list[Any], dict[str, tuple[str, str | None]], list[str]]:
    """The ``n`` simulated accounts, with the limit account (everyone), how each pays, and the crypto-billed ones in
    their scenarios' order."""
    from kilo_dev.simulator import AccountSpec, default_accounts  # noqa: PLC0415

    accounts = default_accounts(n)
    known = [*accounts, AccountSpec(LIMIT_ACCOUNT, "personal", activity=0.0)]
    # the forecast account pays by card: not one of the team accounts the declined card and crypto are chosen from
    billing = billing_methods(known) | {FORECAST_ACCOUNT: ("card", VISA)}
    return accounts, [*known, AccountSpec(FORECAST_ACCOUNT, "team", activity=0.0)], billing, crypto_accounts(known)


def run(args: argparse.Namespace, console: Console, evidence: dict[str, str] | None = None) -> int:
    """The demo; 0 when everything matches the ground truth. When it fails (a difference, an error; not an
    interruption) ``evidence`` gets, before the stack stops, the full ground-truth comparison and moto's state."""
    from kilo_dev.crypto_demo import crypto_report  # noqa: PLC0415
    from kilo_dev.fake_livekit import FakeLiveKit  # noqa: PLC0415
    from kilo_dev.localstack import LocalSettings, LocalStack  # noqa: PLC0415
    from kilo_dev.simulator import hard_limit_call, simulate  # noqa: PLC0415
    from kilo_dev.template import TEMPLATE_PATH, Template  # noqa: PLC0415

    grace_s = int(Template(TEMPLATE_PATH, parameters={"Stage": "local"}).parameters["InvoiceGraceHours"]) * 3600
    real_now = int(time.time()) if args.end is None else args.end
    now, current, closed = timeline(real_now, grace_s)
    settings = LocalSettings.from_env()
    livekit = FakeLiveKit(settings.livekit_keys)  # RoomService for the sweeper, kept current by the simulator
    livekit.start()
    settings.parameters = {
        "LiveKitUrl": livekit.url,
        "LogLevel": "ERROR",
        "EnforcementGraceSeconds": "2",
        "ForecastRecheckSpreadSeconds": "0",  # SQS delays are real time on the local stack (D366)
    }
    accounts, everyone, billing, paying_crypto = plan_accounts(args.accounts)
    # while the simulation fast-forwards, the schedules fire on the simulated clock's grid (once a day, at the hour the
    # closed month's grace ends, so the close runs then): how many runs, and when, depends on the seed alone
    stack = LocalStack(settings, log=lambda message: console.print(f"[dim]· {message}[/dim]"),
                       log_path=args.dir / "local-stack.log", crypto=bool(paying_crypto),
                       schedule_grid=(86_400, grace_s % 86_400))  # fmt: skip
    travel = travel_to(console, now, real_now)
    seen = RunState(everyone, billing, f"{closed:%Y-%m}", now)
    try:
        stack.start()
        api_key, api_secret = next(iter(settings.livekit_keys.items()))
        period_start = int(current.timestamp())
        start = int(closed.timestamp())  # a whole month to close, then the current month to date
        # the upgrades halfway through the closed month; the downgrade requested a day later (effective next month)
        upgrade_at, downgrade_at = (at := upgrade_instant(start, period_start)), at + 86_400
        sink = HttpSink(stack.url, api_key, api_secret, settings.usage_client, settings.usage_secret, stack.clock,
                        check=stack.check)  # fmt: skip
        histories = seen.histories = set_up_accounts(stack, sink, everyone, period_start, upgrade_at, signup_s=start,
                                    downgrade_at_s=downgrade_at,
                                    methods={account: method for account, (method, _) in billing.items()})  # fmt: skip
        save_cards(stack, billing)
        recipients = set_up_alerts(stack, everyone)
        # rating catches up within the grace window after the month ends (here: the demo waits), then the hourly
        # schedule closes the month on the simulated clock
        sink.at(period_start + grace_s - 60, lambda: stack.wait_idle(timeout=600))
        print_plan(console, accounts, billing, (start, now, upgrade_at, downgrade_at), stack.stripe is None,
                   f"(seed {args.seed}); {closed:%Y-%m} closes {grace_s // 3600} h after it ends")  # fmt: skip
        began = time.monotonic()
        scene_at = max(period_start + grace_s + 600, now - 1500)  # the hard-limit call, in the last half hour
        seen.late, forecast, _ = (
            late_left_call(
                truth := seen.truth,
                sink,
                livekit,
                accounts[0].account_id,
                (period_start - 3 * 3600, period_start - 2 * 3600, period_start + grace_s + 3600),
                functools.partial(wait_for_invoice, stack, accounts[0].account_id, f"{closed:%Y-%m}"),
            ),
            forecast_scene(stack, sink, truth, f"{closed:%Y-%m}", (86_400, grace_s % 86_400), console.print),
            listed_join_call(truth, sink, livekit, lambda: stack.wait_idle(timeout=600), accounts[1].account_id,
                             (period_start + grace_s + 86_400, scene_at - 300)),  # the sweep a day after the close's
        )  # fmt: skip
        truth = seen.truth = simulate(args.seed, accounts, start, scene_at - 300, sink, livekit, truth=truth,
                         progress=lambda m: console.print(f"[dim]  {m}[/dim]"),
                         rooms_per_account_per_day=args.intensity, upgrade_at_s=upgrade_at,
                         lost_join_clear_of=(86_400, grace_s % 86_400))  # fmt: skip
        console.print(f"{LIMIT_ACCOUNT} (budget and hard limit ${LIMIT_USD}) reports {LIMIT_MESSAGES:,} messages "
                      "during a call: the hard limit is reached while two people are in it")  # fmt: skip
        scene = hard_limit_call(truth, sink, livekit, LIMIT_ACCOUNT, scene_at, LIMIT_MESSAGES,
                                lambda: wait_for_enforcement(livekit, stack, 2))  # fmt: skip
        sink.advance(now)
        console.print(f"Sent {sink.webhooks:,} signed webhooks and {sink.usage_reports:,} usage reports "
                      f"in {time.monotonic() - began:.0f} s; waiting for rating to catch up…")  # fmt: skip
        caught_up(stack)
        matches = report(console, stack, everyone, truth, histories, now)
        invoiced = invoice_report(console, stack, everyone, truth, histories, billing, f"{closed:%Y-%m}", seen.late)
        alerted = alerts_report(console, stack, livekit, truth, everyone, histories, recipients, scene,
                                (f"{closed:%Y-%m}", current.strftime("%Y-%m")),
                                expected_invoices(truth, everyone, f"{closed:%Y-%m}", histories, billing,
                                                  seen.late), forecast)  # fmt: skip
        paid = crypto_report(console, stack, paying_crypto, f"{closed:%Y-%m}") if paying_crypto else True
        console.print(f"Total {time.monotonic() - began:.0f} s")
        if args.keep_running:
            stack.clock.release()  # live traffic from here on: schedules follow the wall clock again
            _keep_running(console, stack, settings, livekit, dashboard_accounts(everyone, billing), seen)
        seen.passed = matches and invoiced and alerted and paid
        return 0 if seen.passed else 1
    finally:
        wind_down(stack, livekit, travel, seen, evidence)


def caught_up(stack: Any) -> None:
    """Once the simulation has reached 'now': until rating has caught up (the stack is idle), then the schedules go
    back to their own thread (each re-armed from now: the crypto payments and ``--keep-running`` move the clock on)."""
    stack.wait_idle(timeout=600)
    stack.schedule_on_grid(None)


class ShutdownError(RuntimeError):
    """Something the run started did not stop within its deadline; the message names each one (D264)."""


OTHER_STOP_SECONDS = 10.0  # the RoomService stand-in's and the dashboard's stop (the stack has deadlines of its own)
EXIT_SECONDS = 10.0  # for threads that would hold the interpreter's exit (``processes.exit_within``)


def wind_down(stack: Any, livekit: Any, travel: Any, seen: RunState, evidence: dict[str, str] | None) -> None:
    """Stop what the run started (from ``run``'s ``finally``); a run that failed first reads its evidence off the stack
    still running - not one interrupted (Ctrl-C, SIGTERM: how ``--keep-running`` ends), which is no failure. Every
    stop has a deadline: :class:`ShutdownError` names what did not stop by then, rather than waiting for it."""
    interrupted = isinstance(sys.exc_info()[1], KeyboardInterrupt)  # the exception ``run`` is ending with, if any
    if interrupted:
        processes.interrupt_handled()
    if not seen.passed and not interrupted and evidence is not None:
        evidence |= failure_evidence(stack, seen)
    left = [*seen.left, *(stack.stop() or [])]
    others = processes.Shutdown(OTHER_STOP_SECONDS)
    others.step("the RoomService stand-in", livekit.stop)
    if travel is not None:
        travel.stop()
    left += others.left
    if left:
        raise ShutdownError(f"{'; '.join(left)} did not stop in time")


def report(
    console: Console, stack: Any, accounts: Sequence[Any], truth: Any, histories: dict[str, TierHistory], now: int
) -> bool:
    """Print the month to date (and the previous month's tail) next to the ground truth; True when all match."""
    current = datetime.fromtimestamp(now, tz=UTC).replace(day=1, hour=0, minute=0, second=0, microsecond=0)
    period, previous = current.strftime("%Y-%m"), (current - timedelta(days=1)).strftime("%Y-%m")
    rows = month_to_date_rows(stack, accounts, period, now * 1000)
    expected = expected_bills(truth, accounts, period, histories)
    problems = compare(expected, rows)
    console.print(summary_table(accounts, rows, expected, problems, period))
    earlier_rows = month_to_date_rows(stack, accounts, previous, now * 1000)
    earlier = compare(expected_bills(truth, accounts, previous, histories), earlier_rows)
    earlier_problems = {account: diffs for account, diffs in earlier.items() if diffs}
    console.print(f"{previous} (the closed month, rated): {earlier_problems or 'matches'}")
    failed = [f.name for f in stack.functions.values() if f.errors]
    runs = sum(s.fired for s in stack.schedules)
    failures = sum(s.failures for s in stack.schedules)
    given_up = sum(s.dead_lettered + s.dropped for s in stack.schedules)
    console.print(f"Stream batches given up: {sum(s.failed_batches for s in stack.streams)}; scheduled runs: "
                  f"{runs} ({failures} failed attempts, {given_up} given up); handler errors in: "
                  f"{', '.join(failed) or 'none'}")  # fmt: skip
    joined = lost_join_report(console, stack, truth)
    mismatches = [account for account, diffs in problems.items() if diffs] + sorted(earlier_problems)
    if not joined:
        mismatches.append("the lost join")
    if mismatches:
        console.print(f"[red]The rated month to date differs from the ground truth for {', '.join(mismatches)}[/red]")
        return False
    console.print(
        "[green]Every account's usage and money match the ground truth (the simulator's quantities; fee, overage, "
        "bill so far and LiveKit cost by independent arithmetic).[/green]"
    )
    return True


def dashboard_accounts(accounts: Sequence[Any], billing: dict[str, tuple[str, str | None]]) -> list[str]:
    """A few accounts to sign in to the dashboard as: the first of each tier, the crypto-billed one, the limit one."""
    firsts: dict[str, str] = {}
    for spec in accounts:
        firsts.setdefault(spec.tier, spec.account_id)
    chosen = list(firsts.values())
    chosen += [account for account, (method, _) in billing.items() if method == "crypto"]
    chosen += [spec.account_id for spec in accounts if spec.account_id == LIMIT_ACCOUNT]
    return list(dict.fromkeys(chosen))


def _keep_running(
    console: Console, stack: Any, settings: Any, livekit: Any, accounts: Sequence[str], seen: RunState
) -> None:
    from kilo_dev.webserve import serve_for_stack  # noqa: PLC0415

    site, links = serve_for_stack(stack, accounts)
    try:
        _serve(console, stack, settings, livekit, site, links)
    finally:
        shutdown = processes.Shutdown(OTHER_STOP_SECONDS)
        shutdown.step("the dashboard", site.stop)
        seen.left += shutdown.left  # named by ``wind_down``, once the stack has stopped too


def operator_exports(moto_url: str) -> str:
    """The shell line giving the operator's CLI the stack's environment (``localstack.operator_environment``)."""
    from kilo_dev.localstack import operator_environment  # noqa: PLC0415

    return "export " + " ".join(f"{name}={value}" for name, value in operator_environment(moto_url).items())


def _serve(console: Console, stack: Any, settings: Any, livekit: Any, site: Any, links: dict[str, str]) -> None:
    api_key, api_secret = next(iter(settings.livekit_keys.items()))
    chains = (
        ""
        if stack.chains is None
        else (
            f"  chains                anvil {stack.chains.anvil.url}, Solana stand-in {stack.chains.solana.url}, "
            f"exchange stand-in {stack.chains.exchange.url}\n"
        )
    )
    console.print(
        f"\nThe stack stays up (Ctrl-C stops it):\n"
        f"  LiveKit webhook URL   {stack.url}/webhooks/livekit   (API key {api_key}, secret {api_secret})\n"
        f"  usage API             {stack.url}/v1/usage   (X-Kilo-Client {settings.usage_client}, "
        f"secret {settings.usage_secret})\n"
        f"  Stripe webhook URL    {stack.url}/webhooks/stripe   (secret {settings.stripe_secret})\n"
        f"  account API           {stack.url}/openapi.json   (a token: "
        f"{stack.issuer.url}/local/token?account=<id>&role=owner|admin|member, as Bearer)\n"
        f"  moto (AWS)            {stack.moto.url}   (/moto-api/ to browse)\n"
        f"  RoomService stand-in  {livekit.url}\n"
        f"{chains}"
        "Set KILO_LOCAL_LIVEKIT_API_KEY / _SECRET, KILO_LOCAL_USAGE_CLIENT / _SECRET, KILO_LOCAL_STRIPE_WEBHOOK_SECRET "
        "to choose them."
    )
    console.print(
        f"\nThe CLI (.venv/bin/kilo-billing) against it, from another shell:\n  {operator_exports(stack.moto.url)}"
    )
    console.print(
        f"\nThe dashboard: {site.url}/   (pricing is public; the account API's OpenAPI at {site.url}/openapi.json)\n"
        "Sign in as an account's owner (links valid 12 h; the token stays in the link's fragment):"
    )
    for account, link in links.items():
        console.print(f"  {account:<20} {link}", soft_wrap=True, highlight=False)
    while True:
        stack.check()  # a component that dies stops the stack: say so and leave
        time.sleep(1)


def main(argv: Sequence[str] | None = None) -> int:
    from kilo_dev.localstack import StackError  # noqa: PLC0415

    parser = argparse.ArgumentParser(prog="./dev demo", description="Run the billing pipeline end to end locally.")
    parser.add_argument("--accounts", type=int, default=9, help="simulated accounts (default 9)")
    parser.add_argument("--seed", type=int, default=7, help="simulation seed (deterministic)")
    parser.add_argument("--intensity", type=float, default=0.6, help="calls per account per day (default 0.6)")
    parser.add_argument("--end", type=int, help=argparse.SUPPRESS)  # simulated 'now' (epoch s), for tests
    parser.add_argument("--dir", type=Path, default=DEMO_DIR, help=argparse.SUPPRESS)  # logs and evidence, for tests
    parser.add_argument("--keep-running", action="store_true", help="leave the stack up and print its URLs and keys")
    args = parser.parse_args(argv)
    console = make_console()
    console.record = True  # a failing run keeps what it printed (keep_evidence)
    signal.signal(signal.SIGTERM, processes.interrupt)
    # Ctrl-C stops the demo even when it was started with SIGINT ignored, as a shell without job control starts its
    # background commands (``./dev test &``); Python then leaves SIGINT ignored and the demo ran on (D263)
    signal.signal(signal.SIGINT, processes.interrupt)
    evidence: dict[str, str] = {}
    try:
        code = run(args, console, evidence)
    except KeyboardInterrupt:
        console.print("[yellow]Interrupted; every process the demo started has been stopped.[/yellow]")
        code = 130
    except (StackError, WaitTimeoutError) as exc:  # a component died; a wait ran out (it names what it waited for)
        console.print(f"[bold red]The demo stopped: {exc}.[/bold red] Every process it started has been stopped.")
        code = 1
    except ShutdownError as exc:  # the run ended (interrupted or not), but not everything it started stopped in time
        console.print(f"[bold red]The demo could not stop everything it started: {exc}.[/bold red]")
        ended = exc.__context__  # what the run itself ended with, if anything: kept, not hidden by the stop's error
        if ended is not None and not isinstance(ended, KeyboardInterrupt):
            console.print(f"The run itself ended with {type(ended).__name__}: {ended}")
            evidence["traceback.txt"] = "".join(traceback.format_exception(ended))
        code = 1
    except Exception:
        evidence["traceback.txt"] = traceback.format_exc()
        _say_kept(console, keep_evidence(args.dir, console.export_text(clear=False), evidence))
        raise  # exit 1 with the traceback, as before
    if code == 1:  # a failure (a difference, a component of the stack died); not an interruption (130)
        _say_kept(console, keep_evidence(args.dir, console.export_text(clear=False), evidence))
    return code


def _say_kept(console: Console, folder: Path) -> None:
    console.print(f"[bold]The evidence of this run (logs, output, ground-truth comparison) is kept in {folder}[/bold]",
                  soft_wrap=True)  # fmt: skip


if __name__ == "__main__":
    # ended with whoever started it (a test killed mid-way, a closed terminal): as on SIGTERM, it stops what it started
    processes.exit_with_parent(lambda: os.kill(os.getpid(), signal.SIGTERM))
    # SIGUSR1 prints every thread's stack to stderr and the run goes on: what a demo that does not end is waiting on
    # (the e2e tests ask for it before they give up on one)
    faulthandler.register(signal.SIGUSR1, all_threads=True)
    processes.run_then_exit(main, EXIT_SECONDS)
