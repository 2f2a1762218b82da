"""The item mapping of what the operator checks read of the usage table (``kilo_billing.usage_signals``): rating's
indexes and its aggregates' counter attributes ``c#<segment start>#<meter>``, read by name (never by importing rating).
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any, Final

from kilo_billing.usage_signals import Counters

OPEN_INDEX: Final = "open_sessions"
ACCOUNT_SESSIONS_INDEX: Final = "account_sessions"
ACCOUNTS_INDEX: Final = "accounts"
COUNTER_PREFIX: Final = "c#"


def counters_of(values: Mapping[str, Any]) -> Counters:
    found: Counters = {}
    for name, value in values.items():
        if name.startswith(COUNTER_PREFIX):
            _, segment, meter = name.split("#", 2)
            found[(int(segment), meter)] = int(value)
    return found
