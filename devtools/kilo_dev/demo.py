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
"""

from __future__ import annotations

import argparse
import http.client
import json
import re
import signal
import sys
import time
import urllib.parse
from collections import Counter
from collections.abc import Callable, Sequence
from datetime import UTC, datetime, timedelta
from typing import Any

from rich.console import Console
from rich.table import Table

from kilo_billing_cli.console import make_console


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
            _, action = self._actions.pop(0)
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


def upgrade_instant(period_start_s: int, now_s: int) -> int:
    """When the demo's accounts upgrade: halfway through the simulated part of the month, on a whole minute."""
    return period_start_s + (now_s - period_start_s) // 2 // 60 * 60


def tier_histories(accounts: Sequence[Any], period_start_s: int, upgrade_at_s: int) -> dict[str, TierHistory]:
    """Each account's tier since before the simulated window (the month before), plus its upgrade if it has one."""
    day = datetime.fromtimestamp(period_start_s, tz=UTC) - timedelta(days=1)
    since = int(day.replace(day=1, hour=0, minute=0, second=0, microsecond=0).timestamp())
    return {
        spec.account_id: [(since, spec.tier)] + ([(upgrade_at_s, spec.upgrade_to)] if spec.upgrade_to else [])
        for spec in accounts
    }


def account_directory(stack: Any) -> Any:
    """The product's account directory (profiles in the usage table), as `kilo-billing account` uses it."""
    import boto3  # noqa: PLC0415

    from kilo_billing.account_store import DynamoAccountDirectory  # noqa: PLC0415

    return DynamoAccountDirectory(boto3.client("dynamodb"), stack.template.physical_name("UsageTable"))


def write_profile(stack: Any, account_id: str, history: TierHistory) -> None:
    """Register the account with its first tier, or append the last tier change of ``history`` (an upgrade), through
    the same account operations as `kilo-billing account create` / `account tier`."""
    from kilo_billing.accounts import change_tier, register_account  # noqa: PLC0415
    from kilo_billing.catalog import default_catalog  # noqa: PLC0415
    from kilo_billing.periods import Period  # noqa: PLC0415
    from kilo_billing.rating import TierChange  # noqa: PLC0415

    directory = account_directory(stack)
    at, tier = history[-1]
    when = datetime.fromtimestamp(at, tz=UTC)
    if len(history) == 1:
        tiers = default_catalog().for_period(Period.containing(when)).tier_ids
        register_account(directory, account_id, tier, when, tiers)
    else:
        change_tier(directory, account_id, TierChange(when, tier))


def set_up_accounts(
    stack: Any, sink: HttpSink, accounts: Sequence[Any], period_start_s: int, upgrade_at_s: int
) -> dict[str, TierHistory]:
    """Write each account's starting tier now and, when simulated time reaches ``upgrade_at_s``, the upgrades (an
    upgrade takes effect at once: the profile gains a tier change at that instant). Returns the tier histories."""
    histories = tier_histories(accounts, period_start_s, upgrade_at_s)
    for spec in accounts:
        write_profile(stack, spec.account_id, histories[spec.account_id][:1])

    def upgrade() -> None:
        for spec in accounts:
            if len(histories[spec.account_id]) > 1:
                write_profile(stack, spec.account_id, histories[spec.account_id])

    sink.at(upgrade_at_s, upgrade)
    return histories


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

    from kilo_billing.accounts import set_alert_contact  # noqa: PLC0415
    from kilo_billing.budgets import BudgetChange, set_budget  # noqa: PLC0415

    directory = account_directory(stack)
    recipients: dict[str, str] = {}
    for index, spec in enumerate(accounts):
        email, phone = contact(index, spec.account_id)
        set_alert_contact(directory, spec.account_id, name=spec.account_id, email=email, phone=phone)
        recipients |= {email: spec.account_id, phone: spec.account_id}
    limit = Decimal(LIMIT_USD)
    set_budget(directory, LIMIT_ACCOUNT, BudgetChange(budget_usd=limit, thresholds=(100,), hard_limit_usd=limit))
    return recipients


def wait_for_enforcement(livekit: Any, stack: Any, removals: int, timeout: float = 90.0) -> None:
    """Until LiveKit's RoomService stand-in has seen ``removals`` RemoveParticipant calls (or ``timeout``)."""
    deadline = time.monotonic() + timeout
    while sum(1 for method, _ in livekit.calls if method == "RemoveParticipant") < removals:
        stack.check()
        if time.monotonic() > deadline:
            return  # the comparison shows what is missing
        time.sleep(0.2)


_ALLOWANCE = re.compile(r"(\d+)% of (?:your )?included (.+?) used for (\w+ \d{4})")
_BUDGET = re.compile(r"(\w+ \d{4}) bill so far (?:reached (\d+)% of your budget|\S+, (\d+)% of your)")
_HARD = re.compile(r"hard (?:spending )?limit .*?reached|(\w+ \d{4}) hard spending limit")
_MONTH = re.compile(r"(January|February|March|April|May|June|July|August|September|October|November|December) \d{4}")
_METERS = {"video minutes": "video", "audio minutes": "audio", "messages": "messages",
           "GB of data transfer": "data_transfer"}  # fmt: skip


def classify(text: str) -> tuple[str, str, str] | None:
    """(period, kind, key) of a delivered subject or SMS text, read from its words."""
    month = _MONTH.search(text)
    if month is None:
        return None
    period = datetime.strptime(month.group(0), "%B %Y").replace(tzinfo=UTC).strftime("%Y-%m")
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
) -> bool:
    """Print the delivered emails and SMS and the RoomService calls next to what the ground truth expects; True when
    they are the same."""
    from fractions import Fraction  # noqa: PLC0415

    from kilo_dev.ground_truth import Budget, expected_alerts, period_bounds, price_sheet  # noqa: PLC0415

    budgets = {LIMIT_ACCOUNT: Budget(Fraction(LIMIT_USD), (100,), Fraction(LIMIT_USD))}
    expected: dict[str, set[Any]] = {}
    for spec in accounts:
        for period in periods:
            sheet = price_sheet(datetime.fromtimestamp(period_bounds(period)[0], tz=UTC))
            found = expected_alerts(truth, spec.account_id, period, histories[spec.account_id], sheet,
                                    budgets.get(spec.account_id))  # fmt: skip
            if found:
                expected.setdefault(spec.account_id, set()).update(found)
    messages, said = delivered(stack, recipients)
    table = Table(title="Alerts delivered by the local stack (SES email, SNS SMS), checked against the ground truth")
    for column in ("account", "channel", "subject / text"):
        table.add_column(column)
    for account, channel, text in messages:
        table.add_row(account, channel, text)
    console.print(table)
    ok = True
    for account in sorted(set(expected) | set(said)):
        want, got = Counter(expected.get(account, set())), said.get(account, Counter())
        if want != got:  # each expected alert exactly once per channel
            ok = False
            console.print(f"[red]{account}: alerts missing {sorted(want - got)}, unexpected or repeated "
                          f"{sorted(got - want)}[/red]")  # fmt: skip
    count = sum(len(found) for found in expected.values())
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


def _interrupt(signum: int, _: Any) -> None:
    raise KeyboardInterrupt(f"signal {signum}")


def run(args: argparse.Namespace, console: Console) -> int:
    from kilo_dev.fake_livekit import FakeLiveKit  # noqa: PLC0415
    from kilo_dev.localstack import LocalSettings, LocalStack  # noqa: PLC0415
    from kilo_dev.simulator import AccountSpec, default_accounts, hard_limit_call, simulate  # noqa: PLC0415

    settings = LocalSettings.from_env()
    livekit = FakeLiveKit(settings.livekit_keys)  # RoomService for the sweeper, kept current by the simulator
    livekit.start()
    settings.parameters = {"LiveKitUrl": livekit.url, "LogLevel": "ERROR", "EnforcementGraceSeconds": "2"}
    stack = LocalStack(settings, log=lambda message: console.print(f"[dim]· {message}[/dim]"))
    try:
        stack.start()
        api_key, api_secret = next(iter(settings.livekit_keys.items()))
        now = int(time.time()) if args.end is None else args.end
        current = datetime.fromtimestamp(now, tz=UTC).replace(day=1, hour=0, minute=0, second=0, microsecond=0)
        period_start = int(current.timestamp())
        start = period_start - 2 * 3600  # a little of the previous month: a call crosses midnight
        accounts = default_accounts(args.accounts)
        everyone = [*accounts, AccountSpec(LIMIT_ACCOUNT, "personal", activity=0.0)]
        upgrade_at = upgrade_instant(period_start, now)
        sink = HttpSink(stack.url, api_key, api_secret, settings.usage_client, settings.usage_secret, stack.clock,
                        check=stack.check)  # fmt: skip
        histories = set_up_accounts(stack, sink, everyone, period_start, upgrade_at)
        recipients = set_up_alerts(stack, everyone)
        upgrading = [spec for spec in accounts if spec.upgrade_to]
        begin_at, end_at, upgrade_text = (datetime.fromtimestamp(t, tz=UTC).strftime("%Y-%m-%d %H:%M")
                                          for t in (start, now, upgrade_at))  # fmt: skip
        console.print(f"Simulating {len(accounts)} accounts from {begin_at} to {end_at} UTC (seed {args.seed})")
        if upgrading:
            changes = ", ".join(f"{s.account_id} {s.tier} → {s.upgrade_to}" for s in upgrading)
            console.print(f"Upgrades at {upgrade_text} UTC (they take effect at once): {changes}")
        began = time.monotonic()
        scene_at = max(period_start + 600, now - 1500)  # the hard-limit call, in the last half hour
        truth = simulate(args.seed, accounts, start, scene_at - 300, sink, livekit,
                         progress=lambda m: console.print(f"[dim]  {m}[/dim]"),
                         rooms_per_account_per_day=args.intensity)  # fmt: skip
        console.print(f"{LIMIT_ACCOUNT} (budget and hard limit ${LIMIT_USD}) reports {LIMIT_MESSAGES:,} messages "
                      "during a call: the hard limit is reached while two people are in it")  # fmt: skip
        scene = hard_limit_call(truth, sink, livekit, LIMIT_ACCOUNT, scene_at, LIMIT_MESSAGES,
                                lambda: wait_for_enforcement(livekit, stack, 2))  # fmt: skip
        sink.advance(now)
        console.print(f"Sent {sink.webhooks:,} signed webhooks and {sink.usage_reports:,} usage reports "
                      f"in {time.monotonic() - began:.0f} s; waiting for rating to catch up…")  # fmt: skip
        stack.wait_idle(timeout=600)
        matches = report(console, stack, everyone, truth, histories, now)
        previous = (current - timedelta(days=1)).strftime("%Y-%m")
        alerted = alerts_report(console, stack, livekit, truth, everyone, histories, recipients, scene,
                                (previous, current.strftime("%Y-%m")))  # fmt: skip
        console.print(f"Total {time.monotonic() - began:.0f} s")
        if args.keep_running:
            stack.clock.release()  # live traffic from here on: schedules follow the wall clock again
            _keep_running(console, stack, settings, livekit)
        return 0 if matches and alerted else 1
    finally:
        stack.stop()
        livekit.stop()


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
    console.print(f"{previous} (the call across the month end): {earlier_problems or 'matches'}")
    failed = [f.name for f in stack.functions.values() if f.errors]
    runs = sum(s.fired for s in stack.schedules)
    failures = sum(s.failures for s in stack.schedules)
    given_up = sum(s.dead_lettered + s.dropped for s in stack.schedules)
    console.print(f"Stream batches given up: {sum(s.failed_batches for s in stack.streams)}; scheduled runs: "
                  f"{runs} ({failures} failed attempts, {given_up} given up); handler errors in: "
                  f"{', '.join(failed) or 'none'}")  # fmt: skip
    mismatches = [account for account, diffs in problems.items() if diffs] + sorted(earlier_problems)
    if mismatches:
        console.print(f"[red]The rated month to date differs from the ground truth for {', '.join(mismatches)}[/red]")
        return False
    console.print(
        "[green]Every account's usage and money match the ground truth (the simulator's quantities; fee, overage, "
        "bill so far and LiveKit cost by independent arithmetic).[/green]"
    )
    return True


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
        stack.check()  # a component that dies stops the stack: say so and leave
        time.sleep(1)


def main(argv: Sequence[str] | None = None) -> int:
    from kilo_dev.localstack import StackError  # noqa: PLC0415

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
    except StackError as exc:
        console.print(f"[bold red]The demo stopped: {exc}.[/bold red] Every process it started has been stopped.")
        return 1


if __name__ == "__main__":
    sys.exit(main())
