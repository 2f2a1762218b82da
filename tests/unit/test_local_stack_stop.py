"""Stopping the local stack and the demo never waits without a deadline (D264): the threads that call the servers
stop before the servers do; a step that does not end in time is left to its daemon thread and named; the demo then
exits 1 naming it, and its process exit waits for no thread for good.

The stacks here are never started (no moto server): the threads and servers a started stack would have are put in
place by hand, each blocked the way a stop can find it. Every wait in these tests has a deadline of its own."""

from __future__ import annotations

import subprocess
import sys
import threading
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest

from kilo_dev import demo, localstack, processes
from kilo_dev.localstack import Gateway, LocalSettings, LocalStack

ROOT = Path(__file__).resolve().parents[2]


@pytest.fixture
def never() -> Iterator[threading.Event]:
    """What a call that never returns waits on; set when the test ends, so its thread ends too."""
    forever = threading.Event()
    yield forever
    forever.set()


@pytest.fixture(autouse=True)
def _short_deadline(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(localstack, "STOP_SECONDS", 2.0, raising=False)  # the whole stop's deadline (30 s in the demo)


def a_stack() -> LocalStack:
    return LocalStack(LocalSettings({"k": "s"}, "app", "secret", "whsec"), log=lambda _: None)


def timed(call: Callable[[], Any], limit: float = 20.0) -> tuple[Any, float]:
    """``call()``'s result and how long it took; the test fails (rather than hangs) past ``limit`` seconds."""
    result: list[Any] = []
    began = time.monotonic()
    thread = threading.Thread(target=lambda: result.append(call()), daemon=True)
    thread.start()
    thread.join(limit)
    assert not thread.is_alive(), f"still waiting after {limit} s"
    return result[0], time.monotonic() - began


def spawn(stack: LocalStack, name: str, target: Callable[[], None]) -> None:
    """A thread of the stack's, as ``LocalStack._spawn`` starts them (a daemon, named)."""
    thread = threading.Thread(target=target, name=name, daemon=True)
    thread.start()
    stack._threads.append(thread)  # the thread a started stack would have


def test_given_a_poller_blocked_in_a_call_that_never_returns_then_stop_leaves_it_at_the_deadline_and_names_it(
    never: threading.Event,
) -> None:
    stack = a_stack()
    spawn(stack, "event-sources", never.wait)  # e.g. a boto3 call to a moto server that accepted and never answers
    left, took = timed(stack.stop)
    assert took < 4.0  # the deadline (2 s) and the step's own thread, not the call's end (never)
    assert len(left) == 1
    assert left[0].startswith("the event-sources thread (still running after ")
    assert stack.left == left


def test_given_a_poller_in_a_call_then_stop_waits_for_it_before_stopping_the_moto_server(
    never: threading.Event,
) -> None:
    """Stopping moto under a poller leaves it in botocore's retries (connection refused, backoff, again): the poller
    goes first, its call answered by a server still up."""
    stack, order = a_stack(), []

    class Moto:
        pid = 4242

        def stop(self) -> None:
            order.append("moto stopped")

    def poll_loop() -> None:
        while not stack._stop.is_set():  # the loop's own stop flag, as ``_poll_loop``
            time.sleep(0.01)
        time.sleep(0.3)  # the call under way when the stop came
        order.append("the poller's last call answered" if "moto stopped" not in order else "moto gone under a call")

    stack.moto = Moto()  # type: ignore[assignment]
    spawn(stack, "event-sources", poll_loop)
    left, _ = timed(stack.stop)
    assert order == ["the poller's last call answered", "moto stopped"]
    assert left == []


def test_given_a_gateway_whose_loop_never_ran_then_its_shutdown_is_left_at_the_deadline_and_the_rest_still_stops(
    never: threading.Event,
) -> None:
    """``socketserver``'s ``shutdown()`` waits, without a deadline, for ``serve_forever`` to end: for good when it
    never ran (an interruption between the gateway's creation and its thread's start)."""
    stack, stopped = a_stack(), []

    class Moto:
        pid = 4242

        def stop(self) -> None:
            stopped.append("moto")

    stack.moto = Moto()  # type: ignore[assignment]
    stack.gateway = Gateway({})
    try:
        left, took = timed(stack.stop)
    finally:
        stack.gateway.server_close()
    assert took < 5.0
    assert [entry.split(" (")[0] for entry in left] == ["the gateway"]
    assert stopped == ["moto"]  # the moto server is stopped all the same, after the gateway's step


def test_given_steps_that_fail_or_never_end_then_a_shutdown_names_each_and_goes_on(never: threading.Event) -> None:
    shutdown, done = processes.Shutdown(2.0), []

    def fails() -> None:
        raise OSError("no such process")

    assert shutdown.step("the Stripe stand-in", fails) is False
    assert shutdown.step("the dashboard", never.wait, seconds=0.5) is False
    assert shutdown.step("the JWT issuer", lambda: done.append("issuer")) is True
    assert done == ["issuer"]
    assert shutdown.left == [
        "the Stripe stand-in (its stop failed: OSError: no such process)",
        "the dashboard (still running after 0.5 s)",
    ]


def test_given_the_stack_could_not_stop_a_thread_then_the_demo_exits_1_naming_it(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    class Stack:
        def stop(self) -> list[str]:
            return ["the event-sources thread (still running after 8.0 s)"]

    class Stopped:
        def stop(self) -> None:
            return None

    def run(args: Any, console: Any, evidence: dict[str, str]) -> int:
        try:
            raise KeyboardInterrupt("signal 2")
        finally:
            demo.wind_down(Stack(), Stopped(), None, demo.RunState([], {}, "2026-10", 0), evidence)

    monkeypatch.setattr(demo, "run", run)
    monkeypatch.setattr(demo.signal, "signal", lambda *_: None)  # main's handlers stay the test run's
    assert demo.main(["--dir", str(tmp_path)]) == 1
    flat = " ".join(capsys.readouterr().out.split())
    assert "The demo could not stop everything it started: the event-sources thread (still running after 8.0 s)" in flat


def test_given_a_run_failing_and_then_not_stopping_then_the_demo_names_both_and_keeps_the_failures_traceback(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    class Stack:
        def stop(self) -> list[str]:
            return ["the JWT issuer (still running after 5.0 s)"]

    def run(args: Any, console: Any, evidence: dict[str, str]) -> int:
        try:
            raise RuntimeError("POST /v1/usage kept failing")
        finally:
            # no evidence read off this stack (``failure_evidence`` needs a real one): ``None``
            demo.wind_down(Stack(), Stack(), None, demo.RunState([], {}, "2026-10", 0), None)

    monkeypatch.setattr(demo, "run", run)
    monkeypatch.setattr(demo.signal, "signal", lambda *_: None)
    assert demo.main(["--dir", str(tmp_path)]) == 1
    flat = " ".join(capsys.readouterr().out.split())
    assert "could not stop everything it started: the JWT issuer (still running after 5.0 s) did not stop" in flat
    assert "The run itself ended with RuntimeError: POST /v1/usage kept failing" in flat
    (kept,) = tmp_path.glob("failed-*")
    assert "RuntimeError: POST /v1/usage kept failing" in (kept / "traceback.txt").read_text()


def _python(script: str) -> subprocess.CompletedProcess[str]:
    """Run ``script`` in a fresh interpreter from the repository; it must end well inside its 1 s deadline's margin."""
    began = time.monotonic()
    done = subprocess.run(
        [sys.executable, "-c", script], check=False, cwd=ROOT, capture_output=True, text=True, timeout=30
    )
    assert time.monotonic() - began < 20
    return done


def test_given_a_thread_that_never_ends_then_the_process_exits_within_the_deadline_with_its_code_naming_it() -> None:
    """The interpreter's exit joins every non-daemon thread (a thread pool's workers too) without a deadline."""
    script = (
        "import threading\n"
        "from kilo_dev import processes\n"
        "threading.Thread(target=threading.Event().wait, name='pool-worker').start()\n"
        "processes.exit_within(130, 1.0)\n"
    )
    done = _python(script)
    assert done.returncode == 130
    assert "Exiting without waiting for the thread 'pool-worker' (still running after 1.0 s)" in done.stderr


def test_given_a_main_that_raises_with_a_thread_that_never_ends_then_the_process_still_exits_within_the_deadline() -> (
    None
):
    """``python -m kilo_dev.demo`` ends through ``run_then_exit``: a main that raises (an unexpected error) used to skip
    the bounded exit, and the interpreter then waited for the pool's worker without a deadline."""
    script = (
        "import threading\n"
        "from kilo_dev import processes\n"
        "def main():\n"
        "    threading.Thread(target=threading.Event().wait, name='pool-worker').start()\n"
        "    raise RuntimeError('the run broke')\n"
        "processes.run_then_exit(main, 1.0)\n"
    )
    done = _python(script)
    assert done.returncode == 1
    assert "RuntimeError: the run broke" in done.stderr
    assert "Exiting without waiting for the thread 'pool-worker' (still running after 1.0 s)" in done.stderr


@pytest.mark.parametrize(("exit_code", "expected"), [(2, 2), (0, 0), (None, 0), ("usage: bad", 1)])
def test_given_a_main_that_asks_to_exit_then_its_code_is_kept(exit_code: object, expected: int) -> None:
    script = (
        "import sys\n"
        "from kilo_dev import processes\n"
        f"def main():\n    sys.exit({exit_code!r})\n"
        "processes.run_then_exit(main, 1.0)\n"
    )
    done = _python(script)
    assert done.returncode == expected
    assert ("usage: bad" in done.stderr) is (exit_code == "usage: bad")
