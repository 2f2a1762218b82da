"""Child processes the local stack, its stand-ins and the tests start: stopped by whoever started them, by PID."""

from __future__ import annotations

import signal
import subprocess
import threading
from collections.abc import Callable
from types import FrameType
from typing import Any


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


def serve_until_signalled(shutdown: Callable[[], None]) -> None:
    """For a stand-in run as its own process: block until SIGTERM or SIGINT, then ``shutdown``."""
    stopped = threading.Event()

    def on_signal(signum: int, frame: FrameType | None) -> None:
        stopped.set()

    signal.signal(signal.SIGTERM, on_signal)
    signal.signal(signal.SIGINT, on_signal)
    stopped.wait()
    shutdown()
