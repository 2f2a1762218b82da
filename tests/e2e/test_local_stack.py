"""End to end on the local stack (the demo's stack): simulated LiveKit traffic over HTTP, rated usage == ground truth.

Marked ``e2e``; part of the test command. Every process started here is stopped here, by PID.
"""

from __future__ import annotations

import os
import re
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest

pytestmark = pytest.mark.e2e
ROOT = Path(__file__).resolve().parents[2]


@pytest.fixture(scope="module")
def local_stack(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[Any, Any]]:
    from kilo_dev.fake_livekit import FakeLiveKit  # noqa: PLC0415
    from kilo_dev.localstack import LocalSettings, LocalStack  # noqa: PLC0415

    settings = LocalSettings.from_env()
    livekit = FakeLiveKit(settings.livekit_keys)
    livekit.start()
    settings.parameters = {"LiveKitUrl": livekit.url, "LogLevel": "ERROR"}
    stack = LocalStack(settings, log=lambda _: None, log_path=tmp_path_factory.mktemp("stack") / "local-stack.log")
    try:
        stack.start()
        yield stack, livekit
    finally:
        stack.stop()
        livekit.stop()
    assert stack.moto.process is not None
    assert stack.moto.process.poll() is not None  # the moto server process is gone


def test_given_a_small_simulated_month_then_rated_usage_equals_the_ground_truth(local_stack: tuple[Any, Any]) -> None:
    from kilo_dev.demo import HttpSink, _write_profiles, compare, month_to_date_rows  # noqa: PLC0415
    from kilo_dev.simulator import default_accounts, simulate  # noqa: PLC0415

    stack, livekit = local_stack
    now = int(time.time())
    month_start = datetime.fromtimestamp(now, tz=UTC).replace(day=1, hour=0, minute=0, second=0, microsecond=0)
    start = int((month_start - timedelta(hours=2)).timestamp())  # a call crosses the month boundary
    end = min(now, int((month_start + timedelta(hours=30)).timestamp()))
    accounts = default_accounts(3)
    _write_profiles(stack, accounts)  # registered, as the demo does: ingest refuses usage of unknown accounts
    key, secret = next(iter(stack.settings.livekit_keys.items()))
    sink = HttpSink(stack.url, key, secret, stack.settings.usage_client, stack.settings.usage_secret, stack.clock)
    truth = simulate(3, accounts, start, end, sink, livekit, rooms_per_account_per_day=2.0)
    assert sink.webhooks > 20
    stack.wait_idle(timeout=300)
    for period in (month_start.strftime("%Y-%m"), (month_start - timedelta(days=1)).strftime("%Y-%m")):
        rows = month_to_date_rows(stack, accounts, period, end * 1000)
        assert compare(truth, rows, period) == {spec.account_id: [] for spec in accounts}
    assert sum(source.failed_batches for source in stack.streams) == 0
    assert [name for name, function in stack.functions.items() if function.errors] == []


def _port_open(port: int) -> bool:
    with socket.socket() as probe:
        probe.settimeout(0.5)
        return probe.connect_ex(("127.0.0.1", port)) == 0


def test_given_the_demo_interrupted_with_ctrl_c_then_no_process_or_port_is_left_behind() -> None:
    env = {**os.environ, "PYTHONUNBUFFERED": "1"}
    process = subprocess.Popen(
        [sys.executable, "-m", "kilo_dev.demo", "--accounts", "2", "--intensity", "50"],
        cwd=ROOT,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        env=env,
        text=True,
        start_new_session=True,
    )
    port = None
    try:
        assert process.stdout is not None
        deadline = time.monotonic() + 60
        for line in process.stdout:
            found = re.search(r"starting moto server on 127\.0\.0\.1:(\d+)", line)
            if found:
                port = int(found.group(1))
            if "Simulating" in line or time.monotonic() > deadline:
                break
        assert port is not None
        assert _port_open(port)
        process.send_signal(signal.SIGINT)
        output = process.communicate(timeout=60)[0]
        assert process.returncode == 130, output
        assert "Interrupted" in output
        time.sleep(0.5)
        assert not _port_open(port)
    finally:
        if process.poll() is None:
            os.killpg(process.pid, signal.SIGKILL)
            process.wait(timeout=10)
