"""The item mapping of what the operator checks read of the usage table (``kilo_billing.usage_signals``): rating's
indexes, the one check of a session an index lists (``stored_for``, the account API's reads use it too) and its
aggregates' counter attributes ``c#<segment start>#<meter>``, read by name (never by importing rating).
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any, Final

from kilo_billing.usage_signals import Counters

OPEN_INDEX: Final = "open_sessions"
ACCOUNT_SESSIONS_INDEX: Final = "account_sessions"
ACCOUNTS_INDEX: Final = "accounts"
COUNTER_PREFIX: Final = "c#"


def stored_for(values: Mapping[str, Any], account_id: str) -> bool:
    """The session item (as read from the table, not an index) is stored for ``account_id`` now: the
    ``account_sessions`` and ``open_sessions`` indexes lag, and rating moves a session between accounts (room
    metadata), so a listing under one account may name a session of another. Every read of sessions an index lists
    keeps only these: the account API's reads and its erasure (D206, D293), the operator checks' (D318)."""
    return values.get("account") == account_id


def counters_of(values: Mapping[str, Any]) -> Counters:
    found: Counters = {}
    for name, value in values.items():
        if name.startswith(COUNTER_PREFIX):
            _, segment, meter = name.split("#", 2)
            found[(int(segment), meter)] = int(value)
    return found
