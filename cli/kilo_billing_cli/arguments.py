"""Argument types the CLI's commands share (argparse ``type=`` callables whose errors name the option)."""

from __future__ import annotations

import argparse
from collections.abc import Callable


def whole_number(name: str, minimum: int = 0) -> Callable[[str], int]:
    """A base-10 whole number of at least ``minimum`` for option ``name``."""

    def parse(text: str) -> int:
        try:
            value = int(text, 10)
        except ValueError:
            raise argparse.ArgumentTypeError(f"{name} must be a whole number, got {text!r}") from None
        if value < minimum:
            raise argparse.ArgumentTypeError(f"{name} must be >= {minimum}, got {value}")
        return value

    return parse
