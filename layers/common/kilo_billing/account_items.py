"""Account profiles in the usage table (``ACCOUNT#<id>`` / ``PROFILE``): their item mapping (``AccountProfile`` <->
DynamoDB item). The DynamoDB adapter of ``kilo_billing.accounts.AccountDirectory`` is ``kilo_billing.account_store``."""

from __future__ import annotations

from collections.abc import Mapping
from datetime import datetime
from decimal import Decimal
from typing import Any

from kilo_billing.accounts import AccountProfile, StoredAnswer
from kilo_billing.items import Item, from_item, to_item
from kilo_billing.rating import TierChange

PROFILE_SORT_KEY = "PROFILE"
ERASED_AT = "erased_at"  # the erasure mark's attribute (rating conditions its session writes on it, D80)


def account_key(account_id: str, sort_key: str = PROFILE_SORT_KEY) -> Item:
    return to_item({"pk": f"ACCOUNT#{account_id}", "sk": sort_key})


def erasure_mark(at: datetime) -> str:
    """The erasure mark as the profile item stores it (read back exactly by ``datetime.fromisoformat``)."""
    return at.isoformat()


def profile_to_item(profile: AccountProfile) -> Item:
    return to_item(
        {
            "pk": f"ACCOUNT#{profile.account_id}",
            "sk": PROFILE_SORT_KEY,
            "account_id": profile.account_id,
            "tiers": [[change.at.isoformat(), change.tier] for change in profile.changes],
            "budget_usd": str(profile.budget_usd) if profile.budget_usd is not None else None,
            "budget_thresholds": list(profile.budget_thresholds),
            # alert contact, preferences, hard limit and status: absent when not set (items written before read alike)
            "name": profile.name,
            "email": profile.email,
            "phone": profile.phone,
            "phone_verified": True if profile.phone_verified else None,
            "alert_preferences": {kind: list(channels) for kind, channels in profile.alert_preferences} or None,
            "hard_limit_usd": str(profile.hard_limit_usd) if profile.hard_limit_usd is not None else None,
            "status": profile.status if profile.status != "active" else None,
            "progressive_usd": (
                str(profile.progressive_threshold_usd) if profile.progressive_threshold_usd is not None else None
            ),
            "billing_method": profile.billing_method,  # read by the close (kilo_billing.periods_store)
            ERASED_AT: erasure_mark(profile.erased_at) if profile.erased_at is not None else None,
            # absent while 0 (profiles written before read alike)
            "budget_version": profile.budget_version or None,
            "hard_limit_version": profile.hard_limit_version or None,
            "tier_change_cancelled_at": (
                profile.tier_change_cancelled_at.isoformat() if profile.tier_change_cancelled_at is not None else None
            ),
            # moved on by one by every save (D142); absent until the first save after registration
            "version": profile.version or None,
        }
    )


def profile_from_item(item: Mapping[str, Any]) -> AccountProfile:
    values = from_item(item)
    account = values.get("account_id") or str(values["pk"]).removeprefix("ACCOUNT#")
    changes = tuple(TierChange(datetime.fromisoformat(str(at)), str(tier)) for at, tier in values["tiers"])
    budget = Decimal(values["budget_usd"]) if values.get("budget_usd") else None
    thresholds = tuple(int(t) for t in values.get("budget_thresholds", (50, 80, 100)))
    preferences = values.get("alert_preferences") or {}
    return AccountProfile(
        str(account),
        changes,
        budget,
        thresholds,
        name=str(values.get("name", "")),
        email=str(values.get("email", "")),
        phone=str(values.get("phone", "")),
        phone_verified=bool(values.get("phone_verified")),  # absent: never verified (numbers saved before, D160)
        alert_preferences=tuple(sorted((str(k), tuple(str(c) for c in v)) for k, v in preferences.items())),
        hard_limit_usd=Decimal(values["hard_limit_usd"]) if values.get("hard_limit_usd") else None,
        status=str(values.get("status", "active")),
        progressive_threshold_usd=Decimal(values["progressive_usd"]) if values.get("progressive_usd") else None,
        billing_method=str(values.get("billing_method", "card")),  # profiles written before it: card
        erased_at=datetime.fromisoformat(str(values["erased_at"])) if values.get("erased_at") else None,
        budget_version=int(values.get("budget_version") or 0),
        hard_limit_version=int(values.get("hard_limit_version") or 0),
        tier_change_cancelled_at=(
            datetime.fromisoformat(str(values["tier_change_cancelled_at"]))
            if values.get("tier_change_cancelled_at")
            else None
        ),
        version=int(values.get("version", 0)),
    )


ANSWER_PREFIX = "IDEMPOTENCY#"  # ACCOUNT#<id> / IDEMPOTENCY#<key>: a request's answer kept for its key (D377)


def answer_key(account_id: str, key: str) -> Item:
    return account_key(account_id, ANSWER_PREFIX + key)


def answer_to_item(answer: StoredAnswer) -> Item:
    return to_item(
        {
            "pk": f"ACCOUNT#{answer.account_id}",
            "sk": ANSWER_PREFIX + answer.key,
            "digest": answer.digest,
            "status": answer.status,
            "body": answer.body,
            "answered_at": answer.answered_at.isoformat(),
            "expires_at": int(answer.expires_at.timestamp()),  # the table's TTL attribute (epoch seconds)
        }
    )


def answer_from_item(item: Mapping[str, Any]) -> StoredAnswer:
    values = from_item(item)
    return StoredAnswer(
        account_id=str(values["pk"]).removeprefix("ACCOUNT#"),
        key=str(values["sk"]).removeprefix(ANSWER_PREFIX),
        digest=str(values["digest"]),
        status=int(values["status"]),
        body=str(values["body"]),
        answered_at=datetime.fromisoformat(str(values["answered_at"])),
    )
