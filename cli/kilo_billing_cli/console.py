"""One console factory for the CLI and the dev tools: wide enough for billing tables when output is not a terminal."""

from __future__ import annotations

from rich.console import Console

MIN_WIDTH = 150


def make_console() -> Console:
    console = Console()
    if not console.is_terminal:
        console = Console(width=MIN_WIDTH)
    return console
