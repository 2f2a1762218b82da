"""The demo (README's run command): rate a simulated month for a few example accounts and print their bills.

Until the local stack lands, this drives the billing domain library directly: a seeded simulation of calls
(connections with camera/screen-share spans, reconnects, a call across the month end), app-reported messages and
bytes, one account upgrading mid-month; then per-connection rounding, period splitting, tier-segment rating and the
invoice each account gets when the month closes.
"""

from __future__ import annotations

import argparse
import random
from collections.abc import Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta

from rich.table import Table

from kilo_billing.catalog import PriceBook, default_catalog
from kilo_billing.meters import Interval, Meter, split_connection
from kilo_billing.money import money_str
from kilo_billing.periods import Period
from kilo_billing.rating import (
    Invoice,
    LineKind,
    RatedPeriod,
    TierChange,
    UsageRecord,
    compose_invoice,
    effective_change,
    rate_period,
    segments_for,
)
from kilo_billing_cli.console import make_console


@dataclass
class Account:
    account_id: str
    tier: str
    calls_per_day: float
    participants: tuple[int, int]
    video_share: float
    messages_per_call: int
    bytes_per_minute: int
    upgrade_to: str | None = None
    changes: list[TierChange] = field(default_factory=list)
    usage: list[UsageRecord] = field(default_factory=list)
    carried_over_minutes: int = 0


EXAMPLES: tuple[Account, ...] = (
    Account("acme-personal-light", "personal", 1.5, (2, 3), 0.3, 20, 2_000_000),
    Account("bob-personal-heavy", "personal", 6.0, (2, 6), 0.8, 300, 9_000_000),
    Account("studio-team", "team", 30.0, (3, 8), 0.7, 900, 6_000_000),
    Account("growth-upgrades", "personal", 12.0, (2, 5), 0.6, 400, 5_000_000, upgrade_to="team"),
    Account("bigcorp-enterprise", "enterprise", 60.0, (4, 12), 0.9, 2_000, 12_000_000),
)


def _connections(
    rng: random.Random, start: datetime, participants: int, video_share: float
) -> list[tuple[datetime, datetime, list[Interval]]]:
    """One call: each participant connects (sometimes reconnecting) while video is on for part of the call."""
    call_seconds = rng.randint(60, 90 * 60)
    call_end = start + timedelta(seconds=call_seconds)
    video: list[Interval] = []
    if rng.random() < video_share:
        camera_on = start + timedelta(seconds=rng.randint(0, call_seconds // 3))
        video.append((camera_on, call_end - timedelta(seconds=rng.randint(0, call_seconds // 4))))
    connections = []
    for _ in range(participants):
        joined = start + timedelta(seconds=rng.randint(0, 120))
        left = call_end - timedelta(seconds=rng.randint(0, 120))
        if rng.random() < 0.1:  # a reconnect storm: a few short connections before the real one
            for _ in range(rng.randint(2, 5)):
                blip_end = joined + timedelta(seconds=rng.randint(3, 20))
                connections.append((joined, blip_end, video))
                joined = blip_end + timedelta(seconds=rng.randint(1, 5))
        if left > joined:
            connections.append((joined, left, video))
    return connections


def simulate(account: Account, period: Period, book: PriceBook, rng: random.Random) -> None:
    account.changes = [TierChange(period.start - timedelta(days=90), account.tier)]
    if account.upgrade_to is not None:
        requested = period.start + timedelta(days=11, hours=9, minutes=30)
        account.changes.append(effective_change(book, account.tier, account.upgrade_to, requested))
    days = (period.end - period.start).days
    calls = max(1, round(account.calls_per_day * days))
    for index in range(calls):
        if index == calls - 1:  # the last call runs across the month end
            start = period.end - timedelta(minutes=rng.randint(5, 40))
        else:
            start = period.start + timedelta(seconds=rng.randrange(0, days * 86_400 - 7_200))
        for joined, left, video in _connections(rng, start, rng.randint(*account.participants), account.video_share):
            for part in split_connection(joined, left, video):
                if part.period != period:
                    account.carried_over_minutes += part.minutes.total
                    continue
                account.usage.append(UsageRecord(Meter.VIDEO, part.minutes.video, part.start))
                account.usage.append(UsageRecord(Meter.AUDIO, part.minutes.audio, part.start))
        message_at = min(start, period.end - timedelta(seconds=1))
        account.usage.append(UsageRecord(Meter.MESSAGES, rng.randint(0, account.messages_per_call), message_at))
        account.usage.append(
            UsageRecord(Meter.DATA_TRANSFER, account.bytes_per_minute * rng.randint(1, 90), message_at)
        )


def close_month(account: Account, period: Period, book: PriceBook) -> tuple[RatedPeriod, Invoice]:
    segments = segments_for(period, account.changes)
    rated = rate_period(period, segments, account.usage, book)
    next_tier = segments_for(period.next(), account.changes)[0].tier
    advance = book.tier(segments[0].tier).monthly_fee
    invoice = compose_invoice(account.account_id, rated, next_tier, book, fees_billed_in_advance=advance)
    return rated, invoice


def _summary(period: Period, results: Sequence[tuple[Account, RatedPeriod, Invoice]]) -> Table:
    table = Table(title=f"Kilo Billing — month {period} closed (simulated)")
    for column in (
        "account",
        "tier",
        "video min",
        "audio min",
        "messages",
        "GB",
        "fee",
        "overage",
        "bill",
        "LiveKit cost",
        "margin",
    ):
        table.add_column(column, justify="left" if column in ("account", "tier") else "right")
    for account, rated, _ in results:
        tiers = " → ".join(dict.fromkeys(segment.segment.tier for segment in rated.segments))
        table.add_row(
            account.account_id,
            tiers,
            f"{rated.used[Meter.VIDEO]:,}",
            f"{rated.used[Meter.AUDIO]:,}",
            f"{rated.used[Meter.MESSAGES]:,}",
            f"{rated.used[Meter.DATA_TRANSFER]}",
            f"${money_str(rated.fee)}",
            f"${money_str(rated.usage_total)}",
            f"${money_str(rated.total)}",
            f"${money_str(rated.cost_basis_rounded)}",
            f"${money_str(rated.margin)}",
        )
    return table


def _invoice_table(invoice: Invoice) -> Table:
    table = Table(title=f"Invoice {invoice.account_id} closing {invoice.period} ({invoice.currency})")
    table.add_column("line")
    table.add_column("amount", justify="right")
    for line in invoice.lines:
        if line.kind is LineKind.USAGE and line.amount == 0 and line.used == 0:
            continue
        table.add_row(line.description, f"${money_str(line.amount)}")
    table.add_section()
    table.add_row("[bold]total due[/bold]", f"[bold]${money_str(invoice.total)}[/bold]")
    return table


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="./dev demo", description=__doc__.splitlines()[0] if __doc__ else None)
    parser.add_argument("--seed", type=int, default=7, help="simulation seed (deterministic)")
    parser.add_argument("--period", type=Period.parse, help="month to simulate, YYYY-MM (default: last month)")
    args = parser.parse_args(argv)
    period: Period = args.period or Period.containing(datetime.now(UTC)).previous()
    book = default_catalog().for_period(period)
    rng = random.Random(args.seed)  # noqa: S311 - a reproducible simulation, not security
    console = make_console()
    results = []
    for example in EXAMPLES:
        account = Account(**{**example.__dict__, "changes": [], "usage": []})
        simulate(account, period, book, rng)
        rated, invoice = close_month(account, period, book)
        results.append((account, rated, invoice))
    console.print(_summary(period, results))
    for account, _, invoice in results:
        if account.upgrade_to is not None:
            console.print(_invoice_table(invoice))
    carried = sum(account.carried_over_minutes for account, _, _ in results)
    console.print(f"Minutes of calls running past the month end, billed in {period.next()}: {carried:,}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
