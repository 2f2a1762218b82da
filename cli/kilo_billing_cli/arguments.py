"""Argument types the CLI's commands share (argparse ``type=`` callables whose errors name the option)."""

from __future__ import annotations

import argparse
from collections.abc import Callable
from decimal import Decimal, InvalidOperation
from typing import TypeVar

from kilo_billing.accounts import check_account_id
from kilo_billing.money import is_whole_cents, two_places
from kilo_billing.periods import Period

T = TypeVar("T")


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


def checked(parse: Callable[[str], T]) -> Callable[[str], T]:
    """An argparse type from a domain parser: the ``ValueError`` it raises (its message names the problem) becomes the
    option's error."""

    def argument(text: str) -> T:
        try:
            return parse(text)
        except ValueError as exc:
            raise argparse.ArgumentTypeError(str(exc)) from None

    return argument


period = checked(Period.parse)  # YYYY-MM
account_id = checked(check_account_id)


def _money(text: str) -> Decimal:
    try:
        value = Decimal(text)
    except InvalidOperation:
        raise ValueError(f"amount must be a number of dollars, got {text!r}") from None
    if not is_whole_cents(value) or value <= 0:  # NaN and the infinities are not whole cents: never compared
        raise ValueError(f"amount must be positive whole cents, got {text!r}")
    return two_places(value)  # ValueError: too large


money = checked(_money)  # USD, positive, whole cents
