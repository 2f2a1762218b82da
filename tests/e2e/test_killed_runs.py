"""A test run killed mid-way (SIGTERM or SIGKILL to its process group: no fixture teardown runs) leaves no server
behind: anvil is stopped by its watchdog (``kilo_dev.processes.guard``), the moto server and the stand-ins run as
their own processes end themselves when their starter is gone. Likewise a killed `./dev bench`: moto's own server (the
benchmark's "before") gets the watchdog, and the process measuring a local stack stops it when the bench is gone."""

from __future__ import annotations

import os
import re
import signal
import subprocess
import sys
import time
import urllib.request
from pathlib import Path

import pytest

from kilo_dev import processes
from tests.e2e.liveness import alive, children, command_line

pytestmark = pytest.mark.e2e
ROOT = Path(__file__).resolve().parents[2]

# A test that starts the session's anvil (tests.evm_chain's fixture), a moto server and the Stripe stand-in as a
# process (as the tests do: in the run's process group), writes their PIDs and then hangs until it is killed.
HANGING_TEST = """
import os, subprocess, sys, time
from pathlib import Path

import pytest

from kilo_dev.localstack import MotoServer


@pytest.fixture
def moto(tmp_path):
    server = MotoServer(tmp_path / "moto.log")
    server.start()
    yield server
    server.stop()


def test_hangs(anvil_session, moto):
    standin = subprocess.Popen([sys.executable, "-m", "kilo_dev.stripe_standin"], stdout=subprocess.PIPE, text=True)
    standin.stdout.readline()  # it serves
    pids = [anvil_session.node.pid, moto.pid, standin.pid]
    Path(os.environ["KILLED_RUN_PIDS"]).write_text(" ".join(map(str, pids)))
    time.sleep(300)
"""


def wait_gone(pids: list[int], seconds: float = 15.0) -> list[int]:
    """The PIDs still running after ``seconds``."""
    deadline = time.monotonic() + seconds
    while (left := [pid for pid in pids if alive(pid)]) and time.monotonic() < deadline:
        time.sleep(0.1)
    return left


def kill_left(pids: list[int]) -> None:
    for pid in pids:
        if alive(pid):
            os.kill(pid, signal.SIGKILL)


@pytest.mark.parametrize("signum", [signal.SIGTERM, signal.SIGKILL], ids=["SIGTERM", "SIGKILL"])
def test_given_a_test_run_killed_mid_way_then_no_server_it_started_survives(tmp_path: Path, signum: int) -> None:
    (tmp_path / "test_hanging.py").write_text(HANGING_TEST)
    (tmp_path / "pytest.ini").write_text("[pytest]\n")  # not the project's options: this one test file alone
    pid_file = tmp_path / "pids.txt"
    run = subprocess.Popen(
        [sys.executable, "-m", "pytest", "-p", "tests.evm_chain", "-p", "no:cacheprovider", "-q", "-c",
         str(tmp_path / "pytest.ini"), "--rootdir", str(tmp_path), str(tmp_path / "test_hanging.py")],
        cwd=ROOT,
        env={**os.environ, "KILLED_RUN_PIDS": str(pid_file), "PYTHONPATH": str(ROOT)},
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        start_new_session=True,  # its own process group, as `./dev test` has in a terminal
    )  # fmt: skip
    pids: list[int] = []
    try:
        deadline = time.monotonic() + 180
        while not pid_file.exists() or not pid_file.read_text():
            assert run.poll() is None, run.communicate()[0].decode()
            assert time.monotonic() < deadline, "the hanging test did not start its servers in 180 s"
            time.sleep(0.2)
        time.sleep(0.1)  # the file is written in one call; read it whole
        pids = [int(pid) for pid in pid_file.read_text().split()]
        assert len(pids) == 3
        assert [pid for pid in pids if alive(pid)] == pids
        os.killpg(run.pid, signum)  # as a helper stopping its run by process group, or a terminal's kill
        run.wait(timeout=30)
        assert wait_gone(pids) == [], f"servers left running after the run was killed by {signal.Signals(signum).name}"
    finally:
        if run.poll() is None:
            os.killpg(run.pid, signal.SIGKILL)
            run.wait(timeout=30)
        kill_left(pids)


GUARDED_SERVER = """
import subprocess, sys, time
from kilo_dev import processes

server = subprocess.Popen(["sleep", "300"], start_new_session=True)
guard = processes.guard(server)
print(server.pid, guard.pid, flush=True)
time.sleep(300)
"""


def test_given_the_starter_killed_then_the_guard_stops_the_server_and_ends() -> None:
    starter = subprocess.Popen([sys.executable, "-c", GUARDED_SERVER], cwd=ROOT, stdout=subprocess.PIPE, text=True)
    pids: list[int] = []
    try:
        assert starter.stdout is not None
        pids = [int(pid) for pid in starter.stdout.readline().split()]
        server, guard = pids
        time.sleep(0.5)
        assert alive(server)
        assert alive(guard)  # the guard waits while the starter lives
        starter.kill()
        starter.wait(timeout=10)
        assert wait_gone([server, guard]) == []
    finally:
        if starter.poll() is None:
            starter.kill()
            starter.wait(timeout=10)
        kill_left(pids)


def test_given_the_server_stopped_by_its_starter_then_its_guard_ends_by_itself() -> None:
    server = subprocess.Popen(["sleep", "300"], start_new_session=True)
    guard = processes.guard(server)
    try:
        processes.stop(server)
        assert guard.wait(timeout=10) == 0  # it saw the server end: nothing left to watch
    finally:
        processes.stop(server)
        processes.stop(guard)


DEMO_STARTER = """
import subprocess, sys, time

demo = subprocess.Popen([sys.executable, "-m", "kilo_dev.demo", "--accounts", "1", "--intensity", "0.2",
                         "--keep-running", "--dir", sys.argv[1]],
                        stdout=open(sys.argv[2], "w"), stderr=subprocess.STDOUT, start_new_session=True)
print(demo.pid, flush=True)
time.sleep(600)
"""


def test_given_the_process_that_started_a_kept_running_demo_killed_then_the_demo_stops_its_servers_and_ends(
    tmp_path: Path,
) -> None:
    output = tmp_path / "demo.txt"
    starter = subprocess.Popen(
        [sys.executable, "-c", DEMO_STARTER, str(tmp_path), str(output)],
        cwd=ROOT,
        stdout=subprocess.PIPE,
        text=True,
        env={**os.environ, "COLUMNS": "200", "PYTHONUNBUFFERED": "1"},
    )
    pids: list[int] = []
    try:
        assert starter.stdout is not None
        pids = [int(starter.stdout.readline())]
        deadline = time.monotonic() + 120
        while not (found := re.search(r"moto server \(pid (\d+)\)", output.read_text() if output.exists() else "")):
            assert time.monotonic() < deadline, f"the demo did not start its moto server:\n{output.read_text()}"
            assert alive(pids[0]), output.read_text()
            time.sleep(0.2)
        pids.append(int(found.group(1)))
        starter.kill()  # the demo's starter dies without stopping it (its own session: no signal reaches it)
        starter.wait(timeout=10)
        assert wait_gone(pids, 60) == [], output.read_text()
    finally:
        if starter.poll() is None:
            starter.kill()
            starter.wait(timeout=10)
        kill_left(pids)


MOTO_STARTER = """
import sys, time
from pathlib import Path

from bench.localstack_memory import UNBOUNDED
from kilo_dev.localstack import MotoServer

server = MotoServer(Path(sys.argv[1]), module=UNBOUNDED)
server.start()
print(server.pid, flush=True)
time.sleep(300)
"""


def test_given_the_process_that_started_motos_own_server_killed_then_no_server_is_left(tmp_path: Path) -> None:
    """The benchmark's "before" runs moto's own server (``moto.server``), which does not watch its starter."""
    starter = subprocess.Popen([sys.executable, "-c", MOTO_STARTER, str(tmp_path / "moto.log")], cwd=ROOT,
                               stdout=subprocess.PIPE, text=True)  # fmt: skip
    pids: list[int] = []
    try:
        assert starter.stdout is not None
        moto = int(starter.stdout.readline())
        pids = children(starter.pid)  # the moto server and whatever else its starter left running
        assert moto in pids
        assert "moto.server" in command_line(moto)
        starter.kill()  # SIGKILL: it cannot stop its server now
        starter.wait(timeout=10)
        assert wait_gone(pids) == [], [command_line(pid) for pid in pids if alive(pid)]
    finally:
        if starter.poll() is None:
            starter.kill()
            starter.wait(timeout=10)
        kill_left(pids)


BENCH_STARTER = """
from bench import localstack_memory

localstack_memory.stack_run(9, localstack_memory.UNBOUNDED)  # as `./dev bench --only localstack-memory` does
"""


def started_moto(measuring: int, deadline: float) -> int:
    """The moto server the measuring process started, once it answers."""
    while True:
        assert time.monotonic() < deadline, "the bench did not start its moto server in time"
        assert alive(measuring), "the measuring process ended"
        for pid in children(measuring):
            arguments = command_line(pid).split()
            if "moto.server" in arguments and "-p" in arguments:
                port = arguments[arguments.index("-p") + 1]
                try:
                    with urllib.request.urlopen(f"http://127.0.0.1:{port}/moto-api/data.json", timeout=1):
                        return pid
                except OSError:
                    pass
        time.sleep(0.2)


@pytest.mark.parametrize("group", [False, True], ids=["bench-alone", "bench-process-group"])
def test_given_a_bench_run_killed_while_it_measures_a_local_stack_then_no_server_is_left(group: bool) -> None:
    """SIGKILL of `./dev bench` alone (its measuring process must stop the stack it started) and of its process group
    (the measuring process dies too: its moto server must go by itself)."""
    starter = subprocess.Popen([sys.executable, "-c", BENCH_STARTER], cwd=ROOT, stdout=subprocess.DEVNULL,
                               stderr=subprocess.DEVNULL, start_new_session=True)  # fmt: skip
    pids: list[int] = []
    try:
        deadline = time.monotonic() + 180
        while not (measuring := [p for p in children(starter.pid) if "bench.localstack_memory" in command_line(p)]):
            assert starter.poll() is None, "the bench ended before it measured"
            assert time.monotonic() < deadline, "the bench did not start measuring in time"
            time.sleep(0.2)
        moto = started_moto(measuring[0], deadline)
        pids = [*measuring, *children(measuring[0])]  # the measuring process, its moto server and the rest it started
        assert moto in pids
        if group:
            os.killpg(starter.pid, signal.SIGKILL)
        else:
            starter.kill()
        starter.wait(timeout=10)
        assert wait_gone(pids, 60) == [], [command_line(pid) for pid in pids if alive(pid)]
    finally:
        if starter.poll() is None:
            os.killpg(starter.pid, signal.SIGKILL)
            starter.wait(timeout=10)
        kill_left(pids)
