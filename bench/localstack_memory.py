"""Local stack memory (issue 8 item 9): the moto server's resident memory while the local stack replays the demo's
traffic, next to a floor measured in the same run.

1. **Local stack, demo traffic**: the stack from ``template.yaml`` (moto server, gateway, pollers, schedules), the
   simulator's traffic for N accounts over the last 30 days (signed webhooks and usage reports over HTTP, a mid-month
   upgrade), rating caught up, the month to date checked against the ground truth. Reported: the moto server's RSS when
   idle (tables created) and after, its peak (``VmHWM``), the requests the gateway and the moto server answered, and
   the RSS of the local stack's own process (the handlers run in it).
   Then only reads (the month-to-date query of every account, 100 times) and the RSS again: growth from reads would
   be a leak, growth from writes is the data.
2. **Floor**: a fresh moto server of the same kind answering as many trivial requests (``ListTables``) as the moto
   server of run 1 answered: what a moto process costs by itself.
3. **Before the fix**: the same, smaller, traffic on moto's own server (``moto.server``) and on the local stack's
   (``kilo_dev.moto_server``): what the bound changes, measured rather than remembered.

RSS is read from ``/proc/<pid>/status`` (Linux). This is a benchmark figure, not a test: nothing here asserts a limit.
"""

from __future__ import annotations

import json
import os
import platform
import signal
import subprocess
import sys
import time
from datetime import UTC, datetime
from pathlib import Path
from types import FrameType
from typing import Any

from bench import write_section

ROOT = Path(__file__).resolve().parents[1]
WORK = ROOT / ".bench" / "localstack"
BOUNDED, UNBOUNDED = "kilo_dev.moto_server", "moto.server"
DAY = 86_400
READ_ROUNDS = 100


def _status(pid: int | str, field: str) -> int:
    """A ``/proc/<pid>/status`` memory field in MB."""
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith(f"{field}:"):
            return int(line.split()[1]) // 1024
    raise KeyError(field)


def _moto_requests(log: Path) -> int:
    return sum(1 for line in log.read_text(errors="replace").splitlines() if "HTTP/1.1" in line)


def stack_run(accounts: int, module: str) -> dict[str, Any]:
    """:func:`measure_stack` in a fresh process (one local stack per process; its own RSS measured alone)."""
    command = [sys.executable, "-m", "bench.localstack_memory", str(accounts), module]
    result = subprocess.run(command, cwd=ROOT, check=True, capture_output=True, text=True)
    measured: dict[str, Any] = json.loads(result.stdout.strip().splitlines()[-1])
    return measured


def measure_stack(accounts: int, module: str, seed: int = 7, intensity: float = 0.6) -> dict[str, Any]:
    """The demo's traffic for ``accounts`` over the last 30 days on a local stack whose moto server is ``module``."""
    from kilo_dev.demo import (  # noqa: PLC0415
        HttpSink,
        compare,
        expected_bills,
        month_to_date_rows,
        set_up_accounts,
        upgrade_instant,
    )
    from kilo_dev.fake_livekit import FakeLiveKit  # noqa: PLC0415
    from kilo_dev.localstack import LocalSettings, LocalStack  # noqa: PLC0415
    from kilo_dev.simulator import default_accounts, simulate  # noqa: PLC0415

    settings = LocalSettings.from_env()
    livekit = FakeLiveKit(settings.livekit_keys)
    livekit.start()
    settings.parameters = {"LiveKitUrl": livekit.url, "LogLevel": "ERROR"}
    stack = LocalStack(settings, log=lambda _: None, log_path=WORK / f"{module}-{accounts}" / "local-stack.log")
    stack.moto.module = module
    try:
        process_before = _status("self", "VmRSS")
        stack.start()
        assert stack.moto.pid is not None
        idle = _status(stack.moto.pid, "VmRSS")
        now = int(time.time())
        period_start = int(datetime.fromtimestamp(now, tz=UTC).replace(day=1, hour=0, minute=0, second=0).timestamp())
        specs = default_accounts(accounts)
        key, secret = next(iter(settings.livekit_keys.items()))
        sink = HttpSink(stack.url, key, secret, settings.usage_client, settings.usage_secret, stack.clock,
                        check=stack.check)  # fmt: skip
        histories = set_up_accounts(stack, sink, specs, period_start, upgrade_instant(period_start, now))
        began = time.monotonic()
        truth = simulate(seed, specs, now - 30 * DAY, now, sink, livekit, rooms_per_account_per_day=intensity)
        stack.wait_idle(timeout=1800)
        seconds = time.monotonic() - began
        matches = True
        periods = sorted({datetime.fromtimestamp(t, tz=UTC).strftime("%Y-%m") for t in (now - 30 * DAY, now)})
        for period in periods:
            rows = month_to_date_rows(stack, specs, period, now * 1000)
            problems = compare(expected_bills(truth, specs, period, histories), rows)
            matches = matches and not any(problems.values())
        after = _status(stack.moto.pid, "VmRSS")
        requests = _moto_requests(stack.moto.log_path) if stack.moto.log_path else 0
        for _ in range(READ_ROUNDS):  # reads only: the month-to-date query of every account, again and again
            month_to_date_rows(stack, specs, periods[-1], now * 1000)
        return {
            "module": module,
            "accounts": accounts,
            "webhooks": sink.webhooks,
            "gateway_requests": stack.gateway.requests if stack.gateway is not None else 0,
            "moto_requests": requests,
            "idle_mb": idle,
            "after_mb": after,
            "reads": (_moto_requests(stack.moto.log_path) if stack.moto.log_path else 0) - requests,
            "after_reads_mb": _status(stack.moto.pid, "VmRSS"),
            "peak_mb": _status(stack.moto.pid, "VmHWM"),
            "process_before_mb": process_before,
            "process_after_mb": _status("self", "VmRSS"),
            "seconds": seconds,
            "matches": matches,
        }
    finally:
        stack.stop()
        livekit.stop()


def floor_run(requests: int, module: str = BOUNDED) -> dict[str, Any]:
    """A moto server answering ``requests`` trivial requests (``ListTables``)."""
    import boto3  # noqa: PLC0415

    from kilo_dev.localstack import MotoServer  # noqa: PLC0415

    server = MotoServer(WORK / "floor" / "moto.log", module=module)
    server.start()
    try:
        assert server.pid is not None
        client = boto3.client("dynamodb", endpoint_url=server.url, region_name="us-east-1",
                              aws_access_key_id="local", aws_secret_access_key="local")  # fmt: skip
        client.list_tables()
        idle = _status(server.pid, "VmRSS")
        for _ in range(requests - 1):
            client.list_tables()
        return {"requests": requests, "idle_mb": idle, "after_mb": _status(server.pid, "VmRSS"),
                "peak_mb": _status(server.pid, "VmHWM")}  # fmt: skip
    finally:
        server.stop()


def _per_thousand(run: dict[str, Any], requests_key: str) -> str:
    growth = run["after_mb"] - run["idle_mb"]
    return f"{growth * 1000 / max(1, run[requests_key]):.1f}"


def run(quick: bool = False) -> dict[str, Any]:
    if not Path("/proc/self/status").exists():
        raise SystemExit("the local stack memory benchmark reads /proc (Linux)")
    main = stack_run(3 if quick else 9, BOUNDED)
    floor = floor_run(main["moto_requests"])
    small = 2 if quick else 3
    before = stack_run(small, UNBOUNDED)
    after = stack_run(small, BOUNDED)
    results = {"main": main, "floor": floor, "before": before, "after": after}
    _write_doc(results)
    return results


def _write_doc(r: dict[str, Any]) -> None:
    main, floor, before, after = r["main"], r["floor"], r["before"], r["after"]
    where = f"{time.strftime('%Y-%m-%d')}, {platform.machine()}, Python {platform.python_version()}"
    where += f", {os.cpu_count()} cores"

    def row(label: str, run: dict[str, Any]) -> str:
        checked = "matches" if run["matches"] else "**differs**"
        return (f"| {label} | {run['webhooks']:,} / {run['gateway_requests']:,} / {run['moto_requests']:,} | "
                f"{run['idle_mb']:,} MB | {run['after_mb']:,} MB | {run['peak_mb']:,} MB | "
                f"{_per_thousand(run, 'moto_requests')} MB | {run['seconds']:.0f} s | {checked} |")  # fmt: skip

    floor_row = (f"| floor: a fresh moto server (same kind), {floor['requests']:,} `ListTables` | — / — / "
                 f"{floor['requests']:,} | {floor['idle_mb']:,} MB | {floor['after_mb']:,} MB | "
                 f"{floor['peak_mb']:,} MB | {_per_thousand(floor, 'requests')} MB | — | — |")  # fmt: skip
    header = ("| run | webhooks / gateway requests / moto requests | moto RSS idle | moto RSS after | moto peak | "
              "growth per 1,000 moto requests | traffic + rating | month to date vs truth |")  # fmt: skip
    section = f"""## Local stack memory (issue 8 item 9) — {where}

{header}
|---|---|---|---|---|---|---|---|
{row(f"local stack, demo traffic: {main['accounts']} accounts, 30 days", main)}
{floor_row}
{row(f"moto's own server (`moto.server`, before the fix), {before['accounts']} accounts", before)}
{row(f"the local stack's (`kilo_dev.moto_server`), the same {after['accounts']} accounts", after)}

After the main run, {main["reads"]:,} more moto requests that only read (the month-to-date query of every account,
{READ_ROUNDS} times) took its moto server from {main["after_mb"]:,} MB to {main["after_reads_mb"]:,} MB.
The local stack's own process (gateway, pollers and the handlers, in-process) went from
{main["process_before_mb"]:,} MB to {main["process_after_mb"]:,} MB RSS over the main run.
Traffic: the simulator's month (seed 7, 0.6 calls per account per day, a mid-month upgrade) over the last 30 days,
as `./dev demo` sends it; RSS from `/proc/<pid>/status` (`VmRSS`, `VmHWM`) of the moto server process."""
    write_section("localstack-memory", section)


def _interrupt(signum: int, frame: FrameType | None) -> None:
    raise KeyboardInterrupt(f"signal {signum}")  # ``measure_stack``'s ``finally`` stops the stack, by PID


if __name__ == "__main__":  # one measured stack: python -m bench.localstack_memory ACCOUNTS MODULE
    # Stopped (SIGTERM) or left by the bench that started it (killed without stopping it), it stops its stack as the
    # demo does (D184): its moto server would otherwise outlive a killed `./dev bench` (moto's own server for good).
    from kilo_dev import processes

    signal.signal(signal.SIGTERM, _interrupt)
    processes.exit_with_parent(lambda: os.kill(os.getpid(), signal.SIGTERM))
    print(json.dumps(measure_stack(int(sys.argv[1]), sys.argv[2])))
