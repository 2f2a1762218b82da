"""Billing accounts: the one account-id grammar, reserved ids, the account profile (tier history, budget) and the port
through which ingest, rating, invoicing and the CLI read and register profiles.

An account *exists* once it has a profile: its tier history starts at signup. Ingest refuses usage for an account
without one (docs/decisions.md), rating still rates minutes of rooms whose account has no profile (LiveKit traffic
cannot be refused after the fact) as the free default, and reports them.
"""

from __future__ import annotations

import re
from collections.abc import Iterable
from dataclasses import dataclass
from datetime import UTC, datetime
from decimal import Decimal
from typing import Final, Protocol

from kilo_billing.periods import Period
from kilo_billing.rating import TierChange, TierSegment, segments_for

# One grammar everywhere an account id is read (usage API, room/participant attribution, CLI, account API): a letter or
# digit, then up to 127 of letters, digits and ``_ . : @ + = -``. No ``/`` (ids appear in keys and URL paths), no
# ``#`` (the key separator of the tables), no spaces.
ACCOUNT_ID_PATTERN: Final = r"[A-Za-z0-9][A-Za-z0-9_.:@+=-]{0,127}"
_ACCOUNT_ID = re.compile(ACCOUNT_ID_PATTERN)

UNATTRIBUTED: Final = "unattributed"  # minutes no account could be found for: kept, counted, alarmed
# Ids nobody may register or bill to: the unattributed bucket and names that read as something else in config or logs.
RESERVED_ACCOUNT_IDS: Final = frozenset({UNATTRIBUTED, "all", "any", "none", "null", "system", "kilo", "admin"})

DEFAULT_TIER: Final = "personal"
DEFAULT_BUDGET_THRESHOLDS: Final = (50, 80, 100)


class InvalidAccountIdError(ValueError):
    """Not an account id (grammar) or a reserved one; the message says which."""


def is_account_id(value: str) -> bool:
    """Well-formed and not reserved: what may be billed."""
    return bool(_ACCOUNT_ID.fullmatch(value)) and value.lower() not in RESERVED_ACCOUNT_IDS


def check_account_id(value: str) -> str:
    if not _ACCOUNT_ID.fullmatch(value):
        raise InvalidAccountIdError(
            f"account id {value!r} must be 1-128 characters: a letter or digit, then letters, digits or _ . : @ + = -"
        )
    if value.lower() in RESERVED_ACCOUNT_IDS:
        raise InvalidAccountIdError(f"account id {value!r} is reserved")
    return value


@dataclass(frozen=True, slots=True)
class AccountProfile:
    """Who an account is for billing: its tier history (the first change is the signup) and its budget."""

    account_id: str
    changes: tuple[TierChange, ...]
    budget_usd: Decimal | None = None
    budget_thresholds: tuple[int, ...] = DEFAULT_BUDGET_THRESHOLDS

    @classmethod
    def default(cls, account_id: str) -> AccountProfile:
        """An account nobody registered: the free tier since forever (docs/decisions.md D18)."""
        return cls(account_id, (TierChange(datetime(1970, 1, 1, tzinfo=UTC), DEFAULT_TIER),))

    @property
    def signed_up_at(self) -> datetime:
        return min(change.at for change in self.changes)

    def segments(self, period: Period) -> list[TierSegment]:
        changes = self.changes
        if not any(change.at <= period.start for change in changes):
            # the account began inside this period: before its first tier it was on the free default (no fee)
            changes = (TierChange(period.start, DEFAULT_TIER), *changes)
        return segments_for(period, changes)

    def segment_start(self, at_ms: int) -> int:
        """Start (epoch seconds) of the tier segment containing ``at_ms``."""
        at = datetime.fromtimestamp(at_ms / 1000, tz=UTC)
        for segment in self.segments(Period.containing(at)):
            if segment.start <= at < segment.end:
                return int(segment.start.timestamp())
        raise AssertionError("segments cover their period")

    def tier_at(self, at: datetime) -> str:
        known = [change for change in self.changes if change.at <= at]
        return max(known, key=lambda change: change.at).tier if known else DEFAULT_TIER


class AccountExistsError(Exception):
    """``register`` of an account that already has a profile."""


class UnknownAccountError(Exception):
    """An operation on an account that has no profile."""


class AccountDirectory(Protocol):
    """Where account profiles live (the usage table, ``ACCOUNT#<id>`` / ``PROFILE``)."""

    def registered(self, account_ids: Iterable[str]) -> dict[str, AccountProfile]:
        """The profiles of those of ``account_ids`` that are registered (absent ids are not in the result)."""
        ...

    def register(self, profile: AccountProfile) -> None:
        """Create a profile; ``AccountExistsError`` if there is one."""
        ...

    def save(self, profile: AccountProfile) -> None:
        """Replace a registered profile (tier change, budget); ``UnknownAccountError`` if there is none."""
        ...


def register_account(
    directory: AccountDirectory,
    account_id: str,
    tier: str,
    signed_up_at: datetime,
    known_tiers: Iterable[str],
    budget_usd: Decimal | None = None,
) -> AccountProfile:
    """Create an account's profile (the operator's ``kilo-billing account create``; later the account API)."""
    check_account_id(account_id)
    if tier not in set(known_tiers):
        raise ValueError(f"unknown tier {tier!r}; the price book has {sorted(known_tiers)}")
    if signed_up_at.tzinfo is None:
        raise ValueError("signup time must carry a time zone")
    if budget_usd is not None and (not budget_usd.is_finite() or budget_usd < 0):
        raise ValueError(f"budget must be a non-negative amount, got {budget_usd}")
    profile = AccountProfile(account_id, (TierChange(signed_up_at.astimezone(UTC), tier),), budget_usd)
    directory.register(profile)
    return profile


def change_tier(directory: AccountDirectory, account_id: str, change: TierChange) -> AccountProfile:
    """Append a tier change (its effective time decided by ``kilo_billing.rating.effective_change``)."""
    found = directory.registered([account_id]).get(account_id)
    if found is None:
        raise UnknownAccountError(f"account {account_id!r} is not registered")
    if change.at < found.signed_up_at:
        raise ValueError(f"a tier change at {change.at.isoformat()} precedes the signup")
    later = [c for c in found.changes if c.at > change.at]
    if later:
        raise ValueError(f"account {account_id!r} already has a tier change after {change.at.isoformat()}")
    profile = AccountProfile(account_id, (*found.changes, change), found.budget_usd, found.budget_thresholds)
    directory.save(profile)
    return profile
