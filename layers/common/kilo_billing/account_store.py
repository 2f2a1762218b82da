"""The DynamoDB adapter of ``kilo_billing.accounts.AccountDirectory``: account profiles in the usage table
(``ACCOUNT#<id>`` / ``PROFILE``, mapped by ``kilo_billing.account_items``)."""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import replace
from typing import Any

from kilo_billing.account_items import account_key, profile_from_item, profile_to_item
from kilo_billing.accounts import (
    AccountExistsError,
    AccountProfile,
    ProfileChangedError,
    UnknownAccountError,
    check_tier_history,
)
from kilo_billing.aws import batch_get, put_if
from kilo_billing.items import to_item


class DynamoAccountDirectory:
    """Profiles read with strongly consistent batch gets; registration is a conditional put (never overwrites); a save
    is a put conditioned on the version read (optimistic locking: a stale copy never overwrites a newer profile)."""

    def __init__(self, client: Any, table: str) -> None:
        self._client = client
        self._table = table

    def registered(self, account_ids: Iterable[str]) -> dict[str, AccountProfile]:
        wanted = sorted(set(account_ids))
        found: dict[str, AccountProfile] = {}
        for item in batch_get(self._client, self._table, [account_key(a) for a in wanted], ConsistentRead=True):
            profile = profile_from_item(item)
            found[profile.account_id] = profile
        return found

    def register(self, profile: AccountProfile) -> None:
        self._check(profile)
        item = profile_to_item(replace(profile, version=0))
        if not put_if(self._client, self._table, item, "attribute_not_exists(pk)"):
            raise AccountExistsError(f"account {profile.account_id!r} is already registered")

    def save(self, profile: AccountProfile) -> AccountProfile:
        self._check(profile)
        stored = replace(profile, version=profile.version + 1)
        if profile.version:
            condition = "attribute_exists(pk) AND #version = :version"
            request: dict[str, Any] = {"ExpressionAttributeValues": to_item({":version": profile.version})}
        else:
            condition = "attribute_exists(pk) AND attribute_not_exists(#version)"
            request = {}
        request["ExpressionAttributeNames"] = {"#version": "version"}
        if put_if(self._client, self._table, profile_to_item(stored), condition, **request):
            return stored
        if not self.registered([profile.account_id]):
            raise UnknownAccountError(f"account {profile.account_id!r} is not registered")
        raise ProfileChangedError(
            f"account {profile.account_id!r} changed since it was read (version {profile.version}); retry"
        )

    @staticmethod
    def _check(profile: AccountProfile) -> None:
        from kilo_billing.catalog import default_catalog  # noqa: PLC0415

        book = default_catalog().latest
        check_tier_history(profile.changes, lambda tier: book.tier(tier).rank)
