"""Settings of the ingest functions: read once from the environment, validated, cached.

A ``NamedTuple`` rather than pydantic-settings: importing pydantic-settings costs ~0.2 s, which the LiveKit webhook's
cold start cannot afford (docs/decisions.md); and rather than a frozen dataclass, whose class creation (generating and
compiling its methods) costs ~1 ms of every ingest cold start at 22 fields, a NamedTuple's ~0.1 ms (immutable all the
same). Environment variables carry names, never secrets.

AWS call budgets are per route and fixed here (not environment variables: the three functions share one environment
in the local stack). Each fits its function's timeout: a call's worst case (every attempt timing out, the longest
backoff between them) times the calls a request makes, within the template's ``Timeout`` (a test holds this); the
logic also checks the time left before starting any call (``Deadline``), so a handler always answers itself.
"""

from __future__ import annotations

import os
from functools import cache
from typing import NamedTuple

from kilo_billing.aws import CallBudget
from kilo_billing.events import (
    DEFAULT_RAW_EVENT_TTL_DAYS,
    MAX_ITEM_BYTES,
    MIN_RAW_EVENT_TTL_DAYS,
    STRIPE_LIVEMODE,
    stage_livemode,
)


class SettingsError(RuntimeError):
    pass


def _int(env: dict[str, str], name: str, default: int, minimum: int) -> int:
    raw = env.get(name)
    if raw is None or raw == "":
        return default
    try:
        value = int(raw)
    except ValueError as exc:
        raise SettingsError(f"{name} must be an integer, got {raw!r}") from exc
    if value < minimum:
        raise SettingsError(f"{name} must be >= {minimum}, got {value}")
    return value


def _livemode(env: dict[str, str]) -> bool:
    try:
        return stage_livemode(env.get(STRIPE_LIVEMODE))
    except ValueError as exc:
        raise SettingsError(str(exc)) from exc


def _required(env: dict[str, str], name: str) -> str:
    value = env.get(name, "")
    if not value:
        raise SettingsError(f"environment variable {name} is required")
    return value


# LiveKit (Timeout 10 s): a secret read (cold start, then every secret_max_age) + one PutItem, 4 s worst case each.
LIVEKIT_BUDGET = CallBudget(connect_timeout=0.5, read_timeout=1.0, max_attempts=2)
# Stripe (Timeout 10 s): secret + PutItem + PutEvents; the Deadline refuses to start the publish without 4 s left.
STRIPE_BUDGET = CallBudget(connect_timeout=0.5, read_timeout=1.0, max_attempts=2)
# Usage (Timeout 29 s): secret + account reads + up to 1,000 parallel PutItems; throttling gets two retries.
USAGE_BUDGET = CallBudget(connect_timeout=0.5, read_timeout=1.5, max_attempts=3)


class IngestSettings(NamedTuple):
    events_table: str
    usage_table: str = ""  # account profiles (the usage API refuses usage of unregistered accounts)
    livekit_keys_secret: str = ""  # JSON {"<api key>": "<api secret>", ...}
    usage_secrets_secret: str = ""  # JSON {"<client id>": {"secrets": [...], "accounts": "*" | [...]}, ...}
    stripe_secret: str = ""  # JSON {"webhook_secrets": ["whsec_...", ...]}
    event_bus: str = ""
    raw_event_ttl_days: int = DEFAULT_RAW_EVENT_TTL_DAYS
    secret_max_age_seconds: int = 300
    max_livekit_body_bytes: int = 256 * 1024
    max_usage_body_bytes: int = 1024 * 1024
    max_stripe_body_bytes: int = 512 * 1024
    max_item_bytes: int = MAX_ITEM_BYTES
    livekit_leeway_seconds: int = 60
    usage_tolerance_seconds: int = 300
    stripe_tolerance_seconds: int = 300
    # the mode of the Stripe events this endpoint takes (the template's StripeLiveMode); the other mode's, and a
    # Connect account's, are refused (D349)
    stripe_livemode: bool = False
    usage_max_workers: int = 16
    rate_limit_table: str = ""  # per-client request counters of /v1/usage (none: no per-client limit)
    usage_requests_per_minute: int = 600  # per client, counted after its signature is verified
    deadline_margin_seconds: float = 0.5  # kept free after the last call: answer, log, flush metrics
    livekit_budget: CallBudget = LIVEKIT_BUDGET
    usage_budget: CallBudget = USAGE_BUDGET
    stripe_budget: CallBudget = STRIPE_BUDGET

    @classmethod
    def from_env(cls, env: dict[str, str] | None = None) -> IngestSettings:
        values = dict(os.environ if env is None else env)
        return cls(
            events_table=_required(values, "EVENTS_TABLE_NAME"),
            usage_table=values.get("USAGE_TABLE_NAME", ""),
            livekit_keys_secret=values.get("LIVEKIT_KEYS_SECRET_NAME", ""),
            usage_secrets_secret=values.get("USAGE_SECRETS_SECRET_NAME", ""),
            stripe_secret=values.get("STRIPE_SECRET_NAME", ""),
            event_bus=values.get("EVENT_BUS_NAME", ""),
            raw_event_ttl_days=_int(values, "RAW_EVENT_TTL_DAYS", DEFAULT_RAW_EVENT_TTL_DAYS, MIN_RAW_EVENT_TTL_DAYS),
            secret_max_age_seconds=_int(values, "SECRET_MAX_AGE_SECONDS", 300, 0),
            max_livekit_body_bytes=_int(values, "MAX_LIVEKIT_BODY_BYTES", 256 * 1024, 1024),
            max_usage_body_bytes=_int(values, "MAX_USAGE_BODY_BYTES", 1024 * 1024, 1024),
            max_stripe_body_bytes=_int(values, "MAX_STRIPE_BODY_BYTES", 512 * 1024, 1024),
            rate_limit_table=values.get("RATE_LIMIT_TABLE_NAME", ""),
            usage_requests_per_minute=_int(values, "USAGE_REQUESTS_PER_MINUTE", 600, 1),
            stripe_livemode=_livemode(values),
        )

    def reserve_seconds(self, budget: CallBudget) -> float:
        """Time that must be left to start one more AWS call under ``budget`` and still answer."""
        return budget.worst_case_seconds + self.deadline_margin_seconds


@cache
def settings() -> IngestSettings:
    return IngestSettings.from_env()
