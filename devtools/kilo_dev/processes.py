"""Child processes the local stack, its stand-ins and the tests start: stopped by whoever started them, by PID; and
the in-process HTTP servers of the stand-ins (127.0.0.1, a free port, stopped by whoever started them)."""

from __future__ import annotations

import signal
import subprocess
import threading
from collections.abc import Callable
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
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


class LoopbackServer:
    """An HTTP server on 127.0.0.1 at a free port, served from a daemon thread (the stand-ins' HTTP side)."""

    def __init__(self, handler: type[BaseHTTPRequestHandler], name: str) -> None:
        self.server = ThreadingHTTPServer(("127.0.0.1", 0), handler)
        self._thread = threading.Thread(target=self.server.serve_forever, name=name, daemon=True)

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
