"""The DynamoDB adapter of ``kilo_billing.entitlements.EntitlementSource`` (profile + spend item in one
``BatchGetItem``) and ``SpendRecorder`` (one conditional ``UpdateItem`` per reading: never lowered by an older event).
The spend item ``ACCOUNT#<id>`` / ``ENTITLEMENT`` is mapped by ``kilo_billing.entitlement_items``."""

from __future__ import annotations

from typing import Any

from kilo_billing.account_items import PROFILE_SORT_KEY, account_key, profile_from_item
from kilo_billing.accounts import AccountProfile
from kilo_billing.aws import ConditionFailedError, batch_get, call
from kilo_billing.entitlement_items import attribute_for, state_from_item
from kilo_billing.entitlements import ENTITLEMENT_SORT_KEY, Reading, SpendState
from kilo_billing.items import to_item


class DynamoEntitlements:
    def __init__(self, client: Any, table: str) -> None:
        self._client = client
        self._table = table

    def read(self, account_id: str) -> tuple[AccountProfile | None, SpendState | None]:
        keys = [account_key(account_id, PROFILE_SORT_KEY), account_key(account_id, ENTITLEMENT_SORT_KEY)]
        found: dict[str, Any] = {}
        for item in batch_get(self._client, self._table, keys, ConsistentRead=True):
            found[str(item["sk"]["S"])] = item
        profile = found.get(PROFILE_SORT_KEY)
        return (
            profile_from_item(profile) if profile is not None else None,
            state_from_item(account_id, found.get(ENTITLEMENT_SORT_KEY)),
        )

    def record(self, account_id: str, meter: str, reading: Reading) -> bool:
        try:
            call(
                self._client.update_item,
                TableName=self._table,
                Key=account_key(account_id, ENTITLEMENT_SORT_KEY),
                UpdateExpression="SET #r = :r",
                ConditionExpression="attribute_not_exists(#r) OR #r.#p < :p OR (#r.#p = :p AND #r.#u < :u)",
                ExpressionAttributeNames={"#r": attribute_for(meter), "#p": "period", "#u": "used"},
                ExpressionAttributeValues=to_item(
                    {
                        ":r": {
                            "period": reading.period,
                            "used": reading.used,
                            "limit": reading.limit,
                            "as_of": reading.as_of,
                        },
                        ":p": reading.period,
                        ":u": reading.used,
                    }
                ),
            )
        except ConditionFailedError:
            return False
        return True
