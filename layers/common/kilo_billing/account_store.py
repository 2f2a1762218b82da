"""The DynamoDB adapter of ``kilo_billing.accounts.AccountDirectory``: account profiles in the usage table
(``ACCOUNT#<id>`` / ``PROFILE``, mapped by ``kilo_billing.account_items``)."""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import replace
from datetime import datetime
from typing import Any

from kilo_billing.account_items import (
    account_key,
    answer_from_item,
    answer_key,
    answer_to_item,
    profile_from_item,
    profile_to_item,
)
from kilo_billing.accounts import (
    AccountExistsError,
    AccountProfile,
    AnswerExistsError,
    ProfileChangedError,
    StoredAnswer,
    UnknownAccountError,
    check_tier_history,
)
from kilo_billing.aws import ConditionFailedError, batch_get, call, put_if
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
        request = self._version_condition(profile)
        if put_if(self._client, self._table, profile_to_item(stored), request.pop("ConditionExpression"), **request):
            return stored
        raise self._refused(profile)

    def save_status(self, profile: AccountProfile) -> AccountProfile:
        """An ``UpdateItem`` of the status and the version alone (an active status is stored absent, as
        ``profile_to_item`` stores it), conditioned as ``save``: its request names pk, sk, status and version only -
        the attributes the alerts and operator checks roles may write (template.yaml)."""
        stored = replace(profile, version=profile.version + 1)
        request = self._version_condition(profile)
        names = {**request.pop("ExpressionAttributeNames"), "#pk": "pk", "#status": "status"}
        condition = request.pop("ConditionExpression").replace("attribute_exists(pk)", "attribute_exists(#pk)")
        values: dict[str, object] = {":next": stored.version}
        if profile.status == "active":
            update = "SET #version = :next REMOVE #status"
        else:
            update, values = "SET #version = :next, #status = :status", {**values, ":status": profile.status}
        try:
            call(
                self._client.update_item,
                TableName=self._table,
                Key=account_key(profile.account_id),
                UpdateExpression=update,
                ConditionExpression=condition,
                ExpressionAttributeNames=names,
                ExpressionAttributeValues={**request.pop("ExpressionAttributeValues", {}), **to_item(values)},
            )
        except ConditionFailedError as exc:
            raise self._refused(profile) from exc
        return stored

    def answer(self, account_id: str, key: str, now: datetime) -> StoredAnswer | None:
        found = call(self._client.get_item, TableName=self._table, Key=answer_key(account_id, key), ConsistentRead=True)
        item = found.get("Item")
        answer = answer_from_item(item) if item else None
        return answer if answer is not None and answer.expires_at > now else None  # TTL deletes late (up to days)

    def save_answered(self, profile: AccountProfile, answer: StoredAnswer) -> AccountProfile:
        """One ``TransactWriteItems``: the answer's put (``_answer_put``) and the profile's version-conditioned put."""
        self._check(profile)
        stored = replace(profile, version=profile.version + 1)
        put = {"TableName": self._table, "Item": profile_to_item(stored), **self._version_condition(profile)}
        try:
            call(self._client.transact_write_items, TransactItems=[self._answer_put(answer), {"Put": put}])
        except ConditionFailedError as exc:  # a TransactionConflictError: which condition failed is read back
            self._check_new(answer, exc)
            raise self._refused(profile) from exc
        return stored

    def keep_answer(self, answer: StoredAnswer) -> None:
        try:
            call(self._client.transact_write_items, TransactItems=[self._answer_put(answer)])
        except ConditionFailedError as exc:
            self._check_new(answer, exc)
            raise

    def _answer_put(self, answer: StoredAnswer) -> dict[str, Any]:
        """The answer's put: no live answer for the key (an expired one TTL has not deleted yet is overwritten)."""
        return {
            "Put": {
                "TableName": self._table,
                "Item": answer_to_item(answer),
                "ConditionExpression": "attribute_not_exists(pk) OR #expires <= :answered",
                "ExpressionAttributeNames": {"#expires": "expires_at"},
                "ExpressionAttributeValues": to_item({":answered": int(answer.answered_at.timestamp())}),
            }
        }

    def _check_new(self, answer: StoredAnswer, exc: Exception) -> None:
        if self.answer(answer.account_id, answer.key, answer.answered_at) is not None:
            raise AnswerExistsError(f"account {answer.account_id!r}: key {answer.key!r} answered already") from exc

    @staticmethod
    def _version_condition(profile: AccountProfile) -> dict[str, Any]:
        """The put's condition: the profile is registered and still at the version it was read at."""
        request: dict[str, Any] = {"ExpressionAttributeNames": {"#version": "version"}}
        if profile.version:
            request["ConditionExpression"] = "attribute_exists(pk) AND #version = :version"
            request["ExpressionAttributeValues"] = to_item({":version": profile.version})
        else:
            request["ConditionExpression"] = "attribute_exists(pk) AND attribute_not_exists(#version)"
        return request

    def _refused(self, profile: AccountProfile) -> Exception:
        """Why a version-conditioned put of ``profile`` was refused."""
        if not self.registered([profile.account_id]):
            return UnknownAccountError(f"account {profile.account_id!r} is not registered")
        return ProfileChangedError(
            f"account {profile.account_id!r} changed since it was read (version {profile.version}); retry"
        )

    @staticmethod
    def _check(profile: AccountProfile) -> None:
        from kilo_billing.catalog import default_catalog  # noqa: PLC0415

        book = default_catalog().latest
        check_tier_history(profile.changes, lambda tier: book.tier(tier).rank)
