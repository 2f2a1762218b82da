"""What the operator checks read of the usage table (abuse signals, the daily margin): rating's sessions and aggregates
and the account list, read by attribute name through this port - never by importing rating.

- open sessions: a Scan of rating's sparse ``open_sessions`` index (only open sessions carry ``open_account``);
- sessions an account started since a time: a Query of the ``account_sessions`` index (``account``, ``start_ms``;
  every session item carries both, nothing else in the table carries ``account``);
- both indexes lag: the sessions they list are read from the table (BatchGetItem) and counted only where the item is
  stored for the account it was listed under (``usage_signals_items.stored_for``: rating moves sessions, D318);
- the registered accounts: a Scan of the sparse ``accounts`` index (only profiles carry ``account_id``);
- month-to-date counters ``c#<segment start>#<meter>`` of ``ACCOUNT#<id>`` / ``PERIOD#<YYYY-MM>``: BatchGetItem.

The models and the port; the item mapping is ``kilo_billing.usage_signals_items``, the DynamoDB adapter
``kilo_billing.usage_signals_store``.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass
from typing import Protocol

Counters = dict[tuple[int, str], int]  # (segment start, meter) -> base units


@dataclass(frozen=True, slots=True, order=True)
class OpenSession:
    account_id: str
    identity: str
    room: str
    start_ms: int


@dataclass(frozen=True, slots=True, order=True)
class SessionStart:
    """A session an account started: when, and when it ended (``None`` while open)."""

    account_id: str
    identity: str
    start_ms: int
    end_ms: int | None


class UsageSignals(Protocol):
    def open_sessions(self) -> list[OpenSession]: ...

    def sessions_started(self, account_id: str, since_ms: int) -> list[SessionStart]: ...

    def accounts(self) -> list[str]: ...

    def counters(self, keys: Iterable[tuple[str, str]]) -> dict[tuple[str, str], Counters]:
        """Month-to-date counters of (account, period) pairs; a pair without an aggregate maps to ``{}``."""
        ...
