"""The demo (the README's run command): the whole pipeline on one machine, no AWS account, no Stripe key.

1. start the local stack (moto server, HTTP gateway, stream pollers, schedules) from ``template.yaml``;
2. simulate a month of LiveKit traffic for N accounts - signed webhooks (official SDK) and signed app usage reports,
   over HTTP to the gateway, with reconnects, lost ``participant_left`` events and a call across the month end;
3. let rating catch up, then print each account's month to date from the project's own query, next to the
   simulator's ground truth; exit 1 on any difference;
4. stop every process it started (also on Ctrl-C or failure). ``--keep-running`` leaves the stack up instead.
"""

from __future__ import annotations

import argparse
import http.client
import json
import signal
import sys
import time
import urllib.parse
from collections.abc import Sequence
from datetime import UTC, datetime, timedelta
from decimal import Decimal
from typing import Any

from rich.console import Console
from rich.table import Table

from kilo_billing_cli.console import make_console


class HttpSink:
    """Delivers the simulator's traffic like LiveKit and the app would: signed HTTP requests to the gateway."""

    def __init__(self, base_url: str, livekit_key: str, livekit_secret: str, client: str, secret: str, clock: Any):
        parsed = urllib.parse.urlparse(base_url)
        self._host, self._port = parsed.hostname or "127.0.0.1", parsed.port or 80
        self._connection: http.client.HTTPConnection | None = None
        self._livekit = (livekit_key, livekit_secret)
        self._usage = (client, secret)
        self._clock = clock
        self.webhooks = 0
        self.usage_reports = 0

    def _post(self, path: str, body: bytes, headers: dict[str, str]) -> tuple[int, bytes]:
        for attempt in range(5):  # LiveKit retries connection errors and 5xx; so does the app
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
        self._clock.set(now_s)


def usage_repository(stack: Any) -> Any:
    """The project's own rating repository, pointed at the local stack's tables (boto3 follows AWS_ENDPOINT_URL)."""
    import boto3  # noqa: PLC0415

    from kilo_rate_usage.repository import DynamoUsageRepository  # noqa: PLC0415

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


def compare(truth: Any, rows: dict[str, Any], period: str) -> dict[str, list[str]]:
    """Differences between the rated month to date and the simulator's ground truth, per account."""
    from kilo_billing.meters import Meter, bytes_to_gb  # noqa: PLC0415

    problems: dict[str, list[str]] = {}
    for account, mtd in rows.items():
        real = truth.minutes.get((account, period), {})
        expected = {
            Meter.VIDEO: Decimal(real.get("video", 0)),
            Meter.AUDIO: Decimal(real.get("audio", 0)),
            Meter.MESSAGES: Decimal(real.get("messages", 0)),
            Meter.DATA_TRANSFER: bytes_to_gb(real.get("data_transfer_bytes", 0)),
        }
        diffs = [
            f"{m.value}: rated {mtd.rated.used[m]} vs truth {q}" for m, q in expected.items() if mtd.rated.used[m] != q
        ]
        if mtd.open_sessions:
            diffs.append(f"{mtd.open_sessions} session(s) still open")
        problems[account] = diffs
    return problems


def summary_table(accounts: Sequence[Any], rows: dict[str, Any], problems: dict[str, list[str]], period: str) -> Table:
    from kilo_billing.meters import Meter  # noqa: PLC0415
    from kilo_billing.money import money_str  # noqa: PLC0415

    table = Table(title=f"Month to date {period} — rated by the local stack, checked against the simulator")
    for column in ("account", "tier", "video min", "audio min", "messages", "GB", "fee", "overage", "bill so far",
                   "LiveKit cost", "truth"):  # fmt: skip
        table.add_column(column, justify="left" if column in ("account", "tier", "truth") else "right")
    for spec in accounts:
        mtd = rows[spec.account_id]
        used = mtd.rated.used
        table.add_row(
            spec.account_id,
            spec.tier,
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


def _interrupt(signum: int, _: Any) -> None:
    raise KeyboardInterrupt(f"signal {signum}")


def run(args: argparse.Namespace, console: Console) -> int:
    from kilo_dev.fake_livekit import FakeLiveKit  # noqa: PLC0415
    from kilo_dev.localstack import LocalSettings, LocalStack  # noqa: PLC0415
    from kilo_dev.simulator import default_accounts, simulate  # noqa: PLC0415

    settings = LocalSettings.from_env()
    livekit = FakeLiveKit(settings.livekit_keys)  # RoomService for the sweeper, kept current by the simulator
    livekit.start()
    settings.parameters = {"LiveKitUrl": livekit.url, "LogLevel": "ERROR"}
    stack = LocalStack(settings, log=lambda message: console.print(f"[dim]· {message}[/dim]"))
    try:
        stack.start()
        api_key, api_secret = next(iter(settings.livekit_keys.items()))
        now = int(time.time()) if args.end is None else args.end
        current = datetime.fromtimestamp(now, tz=UTC).replace(day=1, hour=0, minute=0, second=0, microsecond=0)
        start = int(
            (current - timedelta(hours=2)).timestamp()
        )  # a little of the previous month: a call crosses midnight
        period = current.strftime("%Y-%m")
        accounts = default_accounts(args.accounts)
        _write_profiles(stack, accounts)
        sink = HttpSink(stack.url, api_key, api_secret, settings.usage_client, settings.usage_secret, stack.clock)
        begin_at, end_at = (datetime.fromtimestamp(t, tz=UTC).strftime("%Y-%m-%d %H:%M") for t in (start, now))
        window = f"{begin_at} to {end_at}"
        console.print(f"Simulating {len(accounts)} accounts from {window} UTC (seed {args.seed})")
        began = time.monotonic()
        truth = simulate(args.seed, accounts, start, now, sink, livekit,
                         progress=lambda m: console.print(f"[dim]  {m}[/dim]"),
                         rooms_per_account_per_day=args.intensity)  # fmt: skip
        console.print(f"Sent {sink.webhooks:,} signed webhooks and {sink.usage_reports:,} usage reports "
                      f"in {time.monotonic() - began:.0f} s; waiting for rating to catch up…")  # fmt: skip
        stack.wait_idle(timeout=600)
        rows = month_to_date_rows(stack, accounts, period, now * 1000)
        problems = compare(truth, rows, period)
        console.print(summary_table(accounts, rows, problems, period))
        previous = (current - timedelta(days=1)).strftime("%Y-%m")
        earlier = compare(truth, month_to_date_rows(stack, accounts, previous, now * 1000), previous)
        tail_ok = all(not diffs for diffs in earlier.values())
        console.print(f"{previous} (the call across the month end): {'matches' if tail_ok else earlier}")
        mismatches = [account for account, diffs in problems.items() if diffs]
        failed = [f.name for f in stack.functions.values() if f.errors]
        console.print(f"Stream batches given up: {sum(s.failed_batches for s in stack.streams)}; handler errors in: "
                      f"{', '.join(failed) or 'none'}; total {time.monotonic() - began:.0f} s")  # fmt: skip
        if args.keep_running:
            stack.clock.release()  # live traffic from here on: schedules follow the wall clock again
            _keep_running(console, stack, settings, livekit)
        if mismatches or not tail_ok:
            console.print(
                f"[red]Rated usage differs from the ground truth for {', '.join(mismatches) or previous}[/red]"
            )
            return 1
        console.print("[green]Every account's rated usage matches the simulator's ground truth.[/green]")
        return 0
    finally:
        stack.stop()
        livekit.stop()


def _write_profiles(stack: Any, accounts: Sequence[Any]) -> None:
    from kilo_billing.accounts import AccountProfile  # noqa: PLC0415
    from kilo_billing.rating import TierChange  # noqa: PLC0415

    repo = usage_repository(stack)
    for spec in accounts:
        repo.put_profile(AccountProfile(spec.account_id, (TierChange(datetime(2026, 1, 1, tzinfo=UTC), spec.tier),)))


def _keep_running(console: Console, stack: Any, settings: Any, livekit: Any) -> None:
    api_key, api_secret = next(iter(settings.livekit_keys.items()))
    console.print(
        f"\nThe stack stays up (Ctrl-C stops it):\n"
        f"  LiveKit webhook URL   {stack.url}/webhooks/livekit   (API key {api_key}, secret {api_secret})\n"
        f"  usage API             {stack.url}/v1/usage   (X-Kilo-Client {settings.usage_client}, "
        f"secret {settings.usage_secret})\n"
        f"  Stripe webhook URL    {stack.url}/webhooks/stripe   (secret {settings.stripe_secret})\n"
        f"  moto (AWS)            {stack.moto.url}   (/moto-api/ to browse)\n"
        f"  RoomService stand-in  {livekit.url}\n"
        "Set KILO_LOCAL_LIVEKIT_API_KEY / _SECRET, KILO_LOCAL_USAGE_CLIENT / _SECRET, KILO_LOCAL_STRIPE_WEBHOOK_SECRET "
        "to choose them."
    )
    while True:
        time.sleep(1)


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="./dev demo", description="Run the billing pipeline end to end locally.")
    parser.add_argument("--accounts", type=int, default=9, help="simulated accounts (default 9)")
    parser.add_argument("--seed", type=int, default=7, help="simulation seed (deterministic)")
    parser.add_argument("--intensity", type=float, default=0.6, help="calls per account per day (default 0.6)")
    parser.add_argument("--end", type=int, help=argparse.SUPPRESS)  # simulated 'now' (epoch s), for tests
    parser.add_argument("--keep-running", action="store_true", help="leave the stack up and print its URLs and keys")
    args = parser.parse_args(argv)
    console = make_console()
    signal.signal(signal.SIGTERM, _interrupt)
    try:
        return run(args, console)
    except KeyboardInterrupt:
        console.print("[yellow]Interrupted; every process the demo started has been stopped.[/yellow]")
        return 130


if __name__ == "__main__":
    sys.exit(main())
