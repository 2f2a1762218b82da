"""A failing demo keeps its evidence (``.demo/failed-<UTC time>/``): the stack's logs, what it printed, and what its
run left in ``evidence`` - so a flaky failure can be read after the next run has overwritten ``.demo/``'s logs.

The demo's run is replaced here by one that fails on purpose (``main`` is under test: what it keeps and says); the
e2e test of a moto server killed mid-demo finds the folder of a real failing run (tests/e2e/test_local_stack.py)."""

from __future__ import annotations

import contextlib
import json
import os
import re
import signal
import sys
import threading
import time
from collections.abc import Iterator
from datetime import UTC, datetime
from decimal import Decimal
from pathlib import Path
from typing import Any

import pytest
from boto3.dynamodb.types import Binary

from kilo_billing.meters import Meter
from kilo_dev import demo, processes
from kilo_dev.localstack import LocalSettings, LocalStack
from kilo_dev.simulator import UsageAt

AT = datetime(2026, 12, 1, 3, 4, 5, tzinfo=UTC)


@pytest.fixture(autouse=True)
def _sigterm_restored() -> Iterator[None]:
    previous = {signum: signal.getsignal(signum) for signum in (signal.SIGTERM, signal.SIGINT)}  # main() sets both
    yield
    for signum, handler in previous.items():
        signal.signal(signum, handler)
    processes.interrupt_handled()  # an interrupt a test left for a checkpoint does not reach the next test's


def a_run_dir(tmp_path: Path) -> Path:
    directory = tmp_path / ".demo"
    directory.mkdir()
    (directory / "local-stack.log").write_text('{"level":"ERROR","message":"rating failed"}\n')
    (directory / "moto.log").write_text("moto: 500 on PutItem\n")
    return directory


def test_given_a_failed_run_then_its_logs_output_and_files_are_copied_to_a_folder_named_by_the_utc_time(
    tmp_path: Path,
) -> None:
    directory = a_run_dir(tmp_path)
    folder = demo.keep_evidence(directory, "the demo's output\n", {"ground-truth.json": '{"a": 1}'}, at=AT)
    assert folder == directory / "failed-20261201T030405Z"
    assert sorted(path.name for path in folder.iterdir()) == [
        "ground-truth.json", "local-stack.log", "moto.log", "output.txt"]  # fmt: skip
    assert (folder / "local-stack.log").read_text() == '{"level":"ERROR","message":"rating failed"}\n'
    assert (folder / "moto.log").read_text() == "moto: 500 on PutItem\n"
    assert (folder / "output.txt").read_text() == "the demo's output\n"
    assert (folder / "ground-truth.json").read_text() == '{"a": 1}'
    # the next run overwrites .demo's logs; the kept copy stays as it was
    (directory / "local-stack.log").write_text("the next run\n")
    assert (folder / "local-stack.log").read_text() == '{"level":"ERROR","message":"rating failed"}\n'


def test_given_two_failures_in_the_same_second_then_each_keeps_a_folder_of_its_own(tmp_path: Path) -> None:
    directory = a_run_dir(tmp_path)
    first = demo.keep_evidence(directory, "first\n", {}, at=AT)
    second = demo.keep_evidence(directory, "second\n", {}, at=AT)
    assert (first.name, second.name) == ("failed-20261201T030405Z", "failed-20261201T030405Z-2")
    assert (first / "output.txt").read_text() == "first\n"
    assert (second / "output.txt").read_text() == "second\n"
    assert not (second / "failed-20261201T030405Z").exists()  # a kept folder is not copied into the next one


def test_given_decimals_enums_bytes_and_tuple_keys_then_plain_gives_json() -> None:
    value = {("usage", "team", "video"): Decimal("1.20"), Meter.AUDIO: [UsageAt("acct", "2026-11", 5, "audio", 3)],
             "digest": Binary(b"\x00\xff"), "raw": b"ok"}  # fmt: skip
    assert json.loads(json.dumps(demo.plain(value))) == {
        "usage/team/video": "1.20",
        "audio": [
            {
                "account_id": "acct",
                "period": "2026-11",
                "at_ms": 5,
                "meter": "audio",
                "quantity": 3,
                "end_ms": None,
                "video_ms": [],
            }
        ],
        "digest": {"base64": "AP8="},
        "raw": {"base64": "b2s="},
    }


def failing_run(code: int) -> Any:
    def run(args: Any, console: Any, evidence: dict[str, str]) -> int:
        console.print("Simulating 3 accounts")
        console.print("[red]The rated month to date differs from the ground truth for acct-team-01[/red]")
        evidence["ground-truth.json"] = '{"acct-team-01": {"differences": ["audio: rated 120 vs truth 121"]}}'
        return code

    return run


def kept_folder(printed: str) -> Path:
    found = re.search(r"kept in (\S+)", " ".join(printed.split()))
    assert found is not None, printed
    return Path(found.group(1))


def test_given_a_run_that_differs_from_the_ground_truth_then_main_exits_1_and_prints_where_the_evidence_is(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    directory = a_run_dir(tmp_path)
    monkeypatch.setattr(demo, "run", failing_run(1))
    assert demo.main(["--accounts", "3", "--dir", str(directory)]) == 1
    folder = kept_folder(capsys.readouterr().out)
    assert folder.parent == directory
    assert re.fullmatch(r"failed-\d{8}T\d{6}Z", folder.name)
    output = (folder / "output.txt").read_text()
    assert "Simulating 3 accounts" in output
    assert "differs from the ground truth for acct-team-01" in output
    assert "audio: rated 120 vs truth 121" in (folder / "ground-truth.json").read_text()
    assert (folder / "local-stack.log").read_text() == '{"level":"ERROR","message":"rating failed"}\n'


def test_given_a_run_that_raises_then_the_traceback_is_kept_and_the_error_still_ends_the_demo(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    directory = a_run_dir(tmp_path)

    def run(args: Any, console: Any, evidence: dict[str, str]) -> int:
        console.print("Simulating 3 accounts")
        raise RuntimeError("POST /v1/usage kept failing")

    monkeypatch.setattr(demo, "run", run)
    with pytest.raises(RuntimeError, match="kept failing"):
        demo.main(["--dir", str(directory)])
    folder = kept_folder(capsys.readouterr().out)
    assert "RuntimeError: POST /v1/usage kept failing" in (folder / "traceback.txt").read_text()
    assert "Simulating 3 accounts" in (folder / "output.txt").read_text()


def test_given_a_run_that_matches_then_nothing_is_kept(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    directory = a_run_dir(tmp_path)
    monkeypatch.setattr(demo, "run", failing_run(0))
    assert demo.main(["--dir", str(directory)]) == 0
    assert "kept in" not in capsys.readouterr().out
    assert sorted(path.name for path in directory.iterdir()) == ["local-stack.log", "moto.log"]


def test_given_a_run_interrupted_then_nothing_is_kept_and_the_demo_exits_130(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    """Ctrl-C or SIGTERM is how ``--keep-running`` ends, and someone's choice otherwise: no failure to keep."""
    directory = a_run_dir(tmp_path)

    def run(args: Any, console: Any, evidence: dict[str, str]) -> int:
        console.print("Simulating 3 accounts")
        raise KeyboardInterrupt("signal 15")

    monkeypatch.setattr(demo, "run", run)
    assert demo.main(["--dir", str(directory)]) == 130
    assert "kept in" not in capsys.readouterr().out
    assert sorted(path.name for path in directory.iterdir()) == ["local-stack.log", "moto.log"]


def test_given_the_demo_started_with_sigint_ignored_then_ctrl_c_still_interrupts_it_and_it_exits_130(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    """A shell without job control starts its background commands with SIGINT ignored (``./dev test &``), and Python
    leaves it so: the e2e tests' SIGINT to the demo did nothing, and both timed out waiting for it to end (D263)."""
    signal.signal(signal.SIGINT, signal.SIG_IGN)  # as the demo inherits it from such a shell
    went_on: list[str] = []

    def run(args: Any, console: Any, evidence: dict[str, str]) -> int:
        os.kill(os.getpid(), signal.SIGINT)  # Ctrl-C, or the tests' SIGINT
        time.sleep(5)  # the simulation going on: the interruption lands here
        went_on.append("the run went on")
        return 0

    monkeypatch.setattr(demo, "run", run)
    assert demo.main(["--dir", str(a_run_dir(tmp_path))]) == 130
    assert went_on == []
    assert "Interrupted" in capsys.readouterr().out


def a_stack() -> LocalStack:
    """A stack never started: its ``check`` is the simulation's checkpoint (``Clock.set`` -> ``tick_schedules``)."""
    return LocalStack(LocalSettings({"k": "s"}, "app", "secret", "whsec"), log=lambda _: None)


def test_given_the_interrupt_landing_in_a_finaliser_then_the_stacks_next_check_raises_it_and_the_demo_exits_130(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    """Python runs a signal's handler wherever the main thread is, also in a finaliser, where its KeyboardInterrupt
    is printed as "Exception ignored" and lost: an e2e Ctrl-C test saw the demo simulate on for 60 s (D439)."""
    lost: list[Any] = []
    monkeypatch.setattr(sys, "unraisablehook", lost.append)  # what Python does with an exception a finaliser raises
    went_on: list[str] = []

    class Collected:
        def __del__(self) -> None:
            os.kill(os.getpid(), signal.SIGINT)  # Ctrl-C while a finaliser runs
            time.sleep(2)  # the handler runs here; what it raises ends this finaliser, and no more

    def run(args: Any, console: Any, evidence: dict[str, str]) -> int:
        Collected()  # finalised at once
        went_on.append("past the finaliser")
        a_stack().check()  # the simulation's next step
        went_on.append("the run went on")
        return 0

    monkeypatch.setattr(demo, "run", run)
    assert demo.main(["--dir", str(a_run_dir(tmp_path))]) == 130
    assert [hook.exc_type for hook in lost] == [KeyboardInterrupt]  # the interrupt was lost as the e2e run's was
    assert went_on == ["past the finaliser"]
    output = capsys.readouterr()
    assert "Interrupted" in output.out
    assert "The interrupt was lost where it was first raised (in a finaliser); raised again here" in output.err


def test_given_a_lost_interrupt_then_only_the_main_threads_next_check_raises_it_and_only_once() -> None:
    with contextlib.suppress(KeyboardInterrupt):  # as a finaliser swallows it
        processes.interrupt(signal.SIGINT, None)
    stack = a_stack()
    in_thread: list[BaseException | None] = []

    def check_in_a_thread() -> None:
        try:
            stack.check()  # the stack's pollers check too: they are stopped by the main thread, not interrupted
            in_thread.append(None)
        except BaseException as exc:
            in_thread.append(exc)

    poller = threading.Thread(target=check_in_a_thread)
    poller.start()
    poller.join(timeout=10)
    assert in_thread == [None]
    with pytest.raises(KeyboardInterrupt):
        stack.check()
    stack.check()  # raised again once: the stop that follows is not interrupted by it


class Stopped:
    """What ``wind_down`` stops, recording that it did (the stack's evidence is read by ``failure_evidence``)."""

    def __init__(self) -> None:
        self.stopped = False

    def stop(self) -> None:
        self.stopped = True


def run_ending_with(error: BaseException, *wound_down: Any) -> None:
    """As ``run`` ends: ``wind_down`` in its ``finally``, here with ``error`` on the way out."""
    try:
        raise error
    finally:
        demo.wind_down(*wound_down)


def test_given_run_ending_by_an_interruption_then_wind_down_stops_all_without_reading_evidence(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    read: list[Any] = []
    monkeypatch.setattr(demo, "failure_evidence", lambda stack, seen: read.append(seen) or {"ground-truth.json": "{}"})
    stack, livekit, travel = Stopped(), Stopped(), Stopped()
    seen = demo.RunState([], {}, "2026-10", 0)
    evidence: dict[str, str] = {}
    with contextlib.suppress(KeyboardInterrupt):
        processes.interrupt(signal.SIGINT, None)  # the handler's own raise: it went through
    with pytest.raises(KeyboardInterrupt):
        run_ending_with(KeyboardInterrupt(), stack, livekit, travel, seen, evidence)
    assert (stack.stopped, livekit.stopped, travel.stopped, read, evidence) == (True, True, True, [], {})
    a_stack().check()  # the interrupt is handled: no checkpoint on the way out raises it again
    # control: the same run ending with an error reads its evidence before stopping
    with pytest.raises(RuntimeError):
        run_ending_with(RuntimeError("POST /v1/usage kept failing"), Stopped(), Stopped(), None, seen, evidence)
    assert read == [seen]
    assert evidence == {"ground-truth.json": "{}"}
