"""Child processes the local stack, its stand-ins and the tests start: stopped by whoever started them, by PID; and
the in-process HTTP servers of the stand-ins (127.0.0.1, a free port, stopped by whoever started them).

A server process must also end when whoever started it dies without stopping it (a test run killed by SIGTERM to its
process group or by SIGKILL: no fixture teardown, no ``finally``). Servers run in a session of their own (so a Ctrl-C
reaches only their starter, which stops them in order), so a signal to the run's process group never reaches them:
- our own Python servers watch their parent (``exit_with_parent``, ``serve_until_signalled``);
- a server that cannot (anvil, moto's own ``moto.server``) gets a watchdog (``guard``): ``python -m kilo_dev.processes``
  in a session of its own, which stops the server by PID once the starter is gone, and ends by itself when the server
  does (D184).
"""

from __future__ import annotations

import contextlib
import functools
import os
import signal
import subprocess
import sys
import threading
import time
import traceback
from collections.abc import Callable
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from types import FrameType
from typing import Any, NoReturn


def stop(process: subprocess.Popen[Any] | None, timeout: float = 10.0) -> None:
    """Terminate a child we started (SIGTERM, then SIGKILL after ``timeout``) and reap it; nothing if it is gone."""
    if process is None or process.poll() is not None:
        return
    process.terminate()
    try:
        process.wait(timeout=timeout)
    except subprocess.TimeoutExpired:
        process.kill()
        process.wait(timeout=timeout)


class Shutdown:
    """A stop made of steps, each bounded, all within one deadline (``seconds`` from now): a step still running when
    its time is up is left to its daemon thread and named in ``left``, and the stop goes on with the next step. A stop
    never waits without a deadline (D264)."""

    def __init__(self, seconds: float) -> None:
        self.seconds = seconds
        self.deadline = time.monotonic() + seconds
        self.left: list[str] = []  # what did not stop: its name and why (still running, or the error its stop raised)

    def within(self, seconds: float) -> Shutdown:
        """A part of this stop with a budget of its own (``seconds``, never past this stop's deadline); what it leaves
        is named in this stop's ``left``."""
        part = Shutdown(seconds)
        part.deadline = min(part.deadline, self.deadline)
        part.left = self.left
        return part

    def remaining(self) -> float:
        return max(0.0, self.deadline - time.monotonic())

    def _budget(self, seconds: float | None) -> float:
        return self.remaining() if seconds is None else min(seconds, self.remaining())

    def join(self, thread: threading.Thread | None, name: str, seconds: float | None = None) -> bool:
        """Wait for ``thread`` to end (at most ``seconds``, never past the deadline); False (and ``name`` in ``left``)
        when it is still running. Nothing to wait for when it is ``None`` or the calling thread."""
        if thread is None or thread is threading.current_thread():
            return True
        budget = self._budget(seconds)
        thread.join(timeout=budget)
        if thread.is_alive():
            self.left.append(f"{name} (still running after {budget:.1f} s)")
            return False
        return True

    def step(self, name: str, action: Callable[[], None], seconds: float | None = None) -> bool:
        """Run ``action`` in a daemon thread and wait for it as :meth:`join` does; an error it raises is named in
        ``left`` too (False), and the stop goes on."""
        errors: list[BaseException] = []

        def run() -> None:
            try:
                action()
            except BaseException as exc:  # named in the report; the stop goes on
                errors.append(exc)

        thread = threading.Thread(target=run, name=f"stop: {name}", daemon=True)
        thread.start()
        if not self.join(thread, name, seconds):
            return False
        if errors:
            self.left.append(f"{name} (its stop failed: {type(errors[0]).__name__}: {errors[0]})")
            return False
        return True


_INTERRUPTED = threading.Event()  # set by ``interrupt``; cleared by the checkpoint that raises it again


def interrupt(signum: int, frame: FrameType | None) -> None:
    """The SIGINT and SIGTERM handler of a process that stops by ``KeyboardInterrupt`` (the demo): raised at once, and
    remembered. Python runs a handler between two bytecodes of the main thread, wherever it is - also inside a
    finaliser (a ``__del__``, a generator the collector closes), where what it raises is printed as "Exception
    ignored" and lost: the run went on (D439). :func:`raise_if_interrupted` is the checkpoint that raises it again."""
    _INTERRUPTED.set()
    raise KeyboardInterrupt(f"signal {signum}")


def raise_if_interrupted() -> None:
    """A checkpoint of the main thread (the local stack's ``check``): ``KeyboardInterrupt`` if :func:`interrupt` ran
    and no checkpoint has raised it since - once per interrupt. An interrupt whose own raise went through is ended by
    whoever stops the run (:func:`interrupt_handled`). In other threads: nothing (the run's threads are stopped by
    the main thread, not by an exception of their own)."""
    if threading.current_thread() is not threading.main_thread() or not _INTERRUPTED.is_set():
        return
    _INTERRUPTED.clear()
    print("The interrupt was lost where it was first raised (in a finaliser); raised again here", file=sys.stderr)
    raise KeyboardInterrupt("an interrupt raised again at a checkpoint")


def interrupt_handled() -> None:
    """The run is stopping because of the interrupt: no checkpoint on the way out raises it a second time."""
    _INTERRUPTED.clear()


def run_then_exit(run: Callable[[], int], seconds: float) -> NoReturn:
    """Run a process's ``main`` and end through :func:`exit_within` however it ends: its code; an exit it asks for
    (argparse's 2, ``--help``'s 0); 1 with the traceback on stderr when it raises. A ``main`` that raises still has
    threads to wait for, and the interpreter's exit would wait for them without a deadline."""
    try:
        code = run()
    except SystemExit as exc:
        if exc.code is not None and not isinstance(exc.code, int):
            print(exc.code, file=sys.stderr)  # as the interpreter would
        code = exc.code if isinstance(exc.code, int) else (0 if exc.code is None else 1)
    except BaseException:  # anything main lets out: printed, then the bounded exit
        traceback.print_exc()
        code = 1
    exit_within(code, seconds)


def exit_within(code: int, seconds: float) -> NoReturn:
    """End this process with ``code``. The interpreter's own exit joins every non-daemon thread (a thread pool's
    workers too) without a deadline: wait for them at most ``seconds``; if one still runs then, name it on stderr and
    end at once (``os._exit``, the output flushed first), with ``code`` or 1 when that was 0 (D264)."""
    shutdown = Shutdown(seconds)
    for thread in threading.enumerate():
        if thread is not threading.main_thread() and not thread.daemon:
            shutdown.join(thread, f"the thread {thread.name!r}")
    if shutdown.left:
        print(f"Exiting without waiting for {'; '.join(shutdown.left)}", file=sys.stderr)
        sys.stdout.flush()
        sys.stderr.flush()
        os._exit(code or 1)
    sys.exit(code)


def exit_with_parent(on_exit: Callable[[], None] | None = None, interval: float = 0.5) -> None:
    """Watch (from a daemon thread) the process that started this one; once it is gone (even killed with SIGKILL, when
    it could not stop us: our parent then changes), call ``on_exit``, or end this process at once without it."""
    parent = os.getppid()

    def watch() -> None:
        while os.getppid() == parent:
            time.sleep(interval)
        if on_exit is None:
            os._exit(0)
        on_exit()

    threading.Thread(target=watch, name="parent-watch", daemon=True).start()


def serve_until_signalled(shutdown: Callable[[], None]) -> None:
    """For a stand-in run as its own process: block until SIGTERM or SIGINT or until the process that started it is
    gone, then ``shutdown``."""
    stopped = threading.Event()

    def on_signal(signum: int, frame: FrameType | None) -> None:
        stopped.set()

    signal.signal(signal.SIGTERM, on_signal)
    signal.signal(signal.SIGINT, on_signal)
    exit_with_parent(stopped.set)
    stopped.wait()
    shutdown()


def _start_time(pid: int) -> str | None:
    """The process's start time (Linux: /proc/<pid>/stat's 22nd field), to tell it from a later process given the
    same PID; ``None`` where there is no /proc or the process is gone."""
    try:
        stat = open(f"/proc/{pid}/stat", encoding="ascii").read()  # noqa: SIM115 - read once
    except OSError:
        return None
    return stat.rpartition(")")[2].split()[19]


def _running(pid: int, started: str | None) -> bool:
    """``pid`` is still the process we guard (not ended, not a zombie, not a new process with a reused PID)."""
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:  # a reused PID of another user's process
        return False
    now = _start_time(pid)
    if started is not None and now != started:
        return False
    try:
        status = open(f"/proc/{pid}/stat", encoding="ascii").read()  # noqa: SIM115 - read once
    except OSError:
        return started is None  # no /proc: os.kill's answer is all we have
    return status.rpartition(")")[2].split()[0] != "Z"


def guard(process: subprocess.Popen[Any]) -> subprocess.Popen[bytes]:
    """A watchdog for ``process`` (a server we started that cannot watch us itself): it stops the server (SIGTERM,
    then SIGKILL) once this process is gone, and ends by itself when the server ends. Stop it with :func:`stop`
    after the server."""
    started = _start_time(process.pid) or "-"
    return subprocess.Popen(  # noqa: S603 - our own interpreter and module
        [sys.executable, "-m", "kilo_dev.processes", str(os.getpid()), str(process.pid), started],
        stdin=subprocess.DEVNULL,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
        start_new_session=True,  # not reached by a signal to the starter's process group: it must outlive the starter
    )


def _signal(pid: int, signum: int) -> None:
    with contextlib.suppress(ProcessLookupError):  # it ended meanwhile
        os.kill(pid, signum)


def watchdog(starter: int, pid: int, started: str | None, interval: float = 0.2, grace: float = 5.0) -> int:
    """The guard's loop (``python -m kilo_dev.processes STARTER PID START``): returns when the server has ended."""
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    while _running(pid, started):
        if os.getppid() != starter:  # the starter is gone (we were re-parented): stop the server it left behind
            _signal(pid, signal.SIGTERM)
            deadline = time.monotonic() + grace
            while _running(pid, started) and time.monotonic() < deadline:
                time.sleep(0.05)
            if _running(pid, started):
                _signal(pid, signal.SIGKILL)
            return 0
        time.sleep(interval)
    return 0


SERVE_POLL_SECONDS = 0.05  # how soon a serving loop sees its shutdown(): socketserver's 0.5 s cost ~0.3 s a server


def serving(server: Any) -> Callable[[], None]:
    """A thread's target serving ``server`` until its ``shutdown()``, which returns within ``SERVE_POLL_SECONDS``."""
    return functools.partial(server.serve_forever, poll_interval=SERVE_POLL_SECONDS)


class LoopbackServer:
    """An HTTP server on 127.0.0.1 at a free port, served from a daemon thread (the stand-ins' HTTP side)."""

    def __init__(self, handler: type[BaseHTTPRequestHandler], name: str) -> None:
        self.server = ThreadingHTTPServer(("127.0.0.1", 0), handler)
        self._thread = threading.Thread(target=serving(self.server), name=name, daemon=True)

    @property
    def url(self) -> str:
        host, port = self.server.server_address[:2]
        return f"http://{host!s}:{port}"

    def start(self) -> None:
        self._thread.start()

    def stop(self) -> None:
        self.server.shutdown()
        self.server.server_close()
        self._thread.join(timeout=5)


if __name__ == "__main__":
    sys.exit(watchdog(int(sys.argv[1]), int(sys.argv[2]), None if sys.argv[3] == "-" else sys.argv[3]))
