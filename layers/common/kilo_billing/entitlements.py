"""Entitlements: may an account start a call now, and for how long may its token live.

Answered from precomputed state in one read (docs/decisions.md, entitlements): the account's profile (status, budget,
hard limit, tier) and its spend item ``ACCOUNT#<id>`` / ``ENTITLEMENT`` in the usage table, fetched together by one
``BatchGetItem``. The spend item is maintained by the alerts function from every threshold event it consumes (the
month's bill so far from budget and hard-limit events, each allowance's use from allowance events), never lowered by
an older or redelivered event. Between events the figures are as of the last one (``as_of``).

Decision, first match wins: ``account_suspended``, ``abuse_hold``, ``unpaid_past_due`` (the profile's status), then
``hard_budget_reached`` (the bill so far of the current period at or above the hard limit). The token TTL of an
allowed call is the time the remaining hard budget lasts at ``policy.burn_usd_per_minute`` (the fastest an account is
assumed to spend), clamped to ``[min_ttl_seconds, max_ttl_seconds]``; without a hard limit it is ``max_ttl_seconds``.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from datetime import datetime
from decimal import ROUND_FLOOR, Decimal
from typing import Any, Final, Protocol

from kilo_billing.accounts import AccountProfile
from kilo_billing.money import decimal_str, money_str, optional_money_str
from kilo_billing.periods import Period

ENTITLEMENT_SORT_KEY: Final = "ENTITLEMENT"


class Reason:
    SUSPENDED: Final = "account_suspended"
    ABUSE_HOLD: Final = "abuse_hold"
    PAST_DUE: Final = "unpaid_past_due"
    HARD_BUDGET: Final = "hard_budget_reached"
    NOT_REGISTERED: Final = "account_not_registered"


_STATUS_REASONS: Final = {"suspended": Reason.SUSPENDED, "abuse_hold": Reason.ABUSE_HOLD, "past_due": Reason.PAST_DUE}
MESSAGES: Final = {
    Reason.SUSPENDED: "the account is suspended",
    Reason.ABUSE_HOLD: "the account is on hold pending an abuse review",
    Reason.PAST_DUE: "the account has an unpaid invoice past its due date",
    Reason.HARD_BUDGET: "the account's hard spending limit for this month is reached",
    Reason.NOT_REGISTERED: "the account is not registered",
}


@dataclass(frozen=True, slots=True)
class Reading:
    """One figure as of one event: ``used`` of ``limit`` in ``period`` (USD for the bill, quantities otherwise)."""

    period: str
    used: Decimal
    limit: Decimal
    as_of: str  # ISO-8601, the event's occurred_at


@dataclass(frozen=True, slots=True)
class SpendState:
    """The spend item: the latest reading of the bill (``budget``/``hard_limit`` events) and of each allowance."""

    account_id: str
    spend: Reading | None = None
    allowances: Mapping[str, Reading] = field(default_factory=dict)


@dataclass(frozen=True, slots=True)
class EntitlementPolicy:
    max_ttl_seconds: int = 6 * 3600
    min_ttl_seconds: int = 60
    # the fastest an account is assumed to spend: 10 video participants at $0.00072 a minute
    burn_usd_per_minute: Decimal = Decimal("0.0072")


@dataclass(frozen=True, slots=True)
class Entitlement:
    account_id: str
    allowed: bool
    reason: str | None
    period: str
    spent_usd: Decimal  # bill so far of ``period`` as of ``as_of`` (0 when no event this period yet)
    as_of: str | None
    budget_usd: Decimal | None
    hard_limit_usd: Decimal | None
    remaining_budget_usd: Decimal | None  # to the hard limit (else to the soft budget); None without either
    remaining_allowance: Mapping[str, Decimal]  # per meter with a reading this period: included - used (>= 0)
    max_token_ttl_seconds: int

    @property
    def message(self) -> str:
        return MESSAGES[self.reason] if self.reason else "allowed"

    def as_json(self) -> dict[str, Any]:
        """The answer of both entitlement checks (the usage API's ``POST /v1/entitlements/check`` and the account
        API's ``POST /v1/accounts/{id}/entitlements/check``): money as two-decimal strings, quantities as decimal
        strings, an absent budget or limit as ``null``."""
        return {
            "account_id": self.account_id,
            "allowed": self.allowed,
            "reason": self.reason,
            "message": self.message,
            "max_token_ttl_seconds": self.max_token_ttl_seconds,
            "budget": {
                "period": self.period,
                "spent_usd": money_str(self.spent_usd),
                "as_of": self.as_of,
                "budget_usd": optional_money_str(self.budget_usd),
                "hard_limit_usd": optional_money_str(self.hard_limit_usd),
                "remaining_usd": optional_money_str(self.remaining_budget_usd),
            },
            "remaining_allowance": {meter: decimal_str(value) for meter, value in self.remaining_allowance.items()},
        }


def decide(
    account_id: str, profile: AccountProfile | None, state: SpendState | None, now: datetime, policy: EntitlementPolicy
) -> Entitlement:
    period = Period.containing(now).key
    spend = state.spend if state is not None and state.spend is not None and state.spend.period == period else None
    spent = spend.used if spend is not None else Decimal(0)
    allowances = {
        meter: max(Decimal(0), reading.limit - reading.used)
        for meter, reading in sorted((state.allowances if state is not None else {}).items())
        if reading.period == period
    }
    hard = profile.hard_limit_usd if profile is not None else None
    budget = profile.budget_usd if profile is not None else None
    ceiling = hard if hard is not None else budget
    remaining = max(Decimal(0), ceiling - spent) if ceiling is not None else None
    reason: str | None
    if profile is None:
        reason = Reason.NOT_REGISTERED
    else:
        reason = _STATUS_REASONS.get(profile.status)
        if reason is None and hard is not None and spent >= hard:
            reason = Reason.HARD_BUDGET
    ttl = 0 if reason is not None else _ttl(hard, spent, policy)
    return Entitlement(
        account_id=account_id,
        allowed=reason is None,
        reason=reason,
        period=period,
        spent_usd=spent,
        as_of=spend.as_of if spend is not None else None,
        budget_usd=budget,
        hard_limit_usd=hard,
        remaining_budget_usd=remaining,
        remaining_allowance=allowances,
        max_token_ttl_seconds=ttl,
    )


def _ttl(hard: Decimal | None, spent: Decimal, policy: EntitlementPolicy) -> int:
    if hard is None:
        return policy.max_ttl_seconds
    seconds = ((hard - spent) * 60 / policy.burn_usd_per_minute).to_integral_value(rounding=ROUND_FLOOR)
    return int(min(Decimal(policy.max_ttl_seconds), max(Decimal(policy.min_ttl_seconds), seconds)))


class EntitlementSource(Protocol):
    """One read: the profile (``None`` if not registered) and the spend item (``None`` before the first event)."""

    def read(self, account_id: str) -> tuple[AccountProfile | None, SpendState | None]: ...


class SpendRecorder(Protocol):
    """Keeps the spend item: a reading replaces the stored one only if it is of a later period, or of the same
    period with more used (a redelivered or older event never lowers it). Returns whether it was stored."""

    def record(self, account_id: str, meter: str, reading: Reading) -> bool: ...
