"""EventBridge-style content filtering (the subset Lambda filter criteria and EventBridge rules in this project use):
a pattern is a dict whose leaves are lists of allowed values; every key in the pattern must match."""

from __future__ import annotations

from typing import Any


def matches(pattern: Any, value: Any) -> bool:
    if isinstance(pattern, dict):
        if not isinstance(value, dict):
            return False
        return all(key in value and matches(sub, value[key]) for key, sub in pattern.items())
    if isinstance(pattern, list):
        candidates = value if isinstance(value, list) else [value]
        return any(candidate in pattern for candidate in candidates)
    return bool(pattern == value)
