"""The caller's role in an account as the members table holds it now: what every admin write checks besides the
token's claims (D202, D208), since a token outlives a removal or a demotion for its lifetime. The account API (its
members store) and the crypto routes read it through the ``StoredRoles`` port; the rule is ``require_stored_role``.

The members table (the account API's ``MemberStore`` writes it): ``pk`` ``ACCOUNT#<account>``, ``sk``
``MEMBER#<user>``, ``role`` (``owner`` | ``admin`` | ``member``), ``status`` (``active``, or ``invited``: an
invitation grants nothing until it is accepted). A strongly consistent Query of the one key (the function's grant is
Query on the table, D294)."""

from __future__ import annotations

from typing import Any, Final, Protocol

from kilo_billing.auth import ForbiddenError, Role
from kilo_billing.aws import paged_items
from kilo_billing.items import from_item, to_item

MEMBER_PREFIX: Final = "MEMBER#"
MEMBER_STATUS: Final = "status"
ACTIVE: Final = "active"


def member_key_values(account_id: str, user: str) -> dict[str, str]:
    """The key of the user's item in the account (plain values)."""
    return {"pk": f"ACCOUNT#{account_id}", "sk": MEMBER_PREFIX + user}


class StoredRoles(Protocol):
    def stored_role(self, account_id: str, user: str) -> Role | None:
        """The user's role in the account as stored now (a strongly consistent read); ``None`` when the user is not
        an active member (none stored, or an invitation not accepted)."""
        ...


def require_stored_role(stored: Role | None, account_id: str, needed: Role) -> Role:
    """``stored`` (``StoredRoles.stored_role``) when it is at least ``needed``, else ``ForbiddenError`` (403)."""
    if stored is None or stored < needed:
        raise ForbiddenError(
            f"not allowed to manage account {account_id!r}: the token's role is no longer stored (sign in again)"
        )
    return stored


def member_item(client: Any, table: str, account_id: str, user: str) -> dict[str, Any] | None:
    """The user's item in the account's members (DynamoDB's attribute-value form), read strongly consistently;
    ``None`` without one."""
    found = paged_items(
        client.query,
        TableName=table,
        KeyConditionExpression="#pk = :pk AND #sk = :sk",
        ExpressionAttributeNames={"#pk": "pk", "#sk": "sk"},
        ExpressionAttributeValues=to_item({f":{k}": v for k, v in member_key_values(account_id, user).items()}),
        ConsistentRead=True,
    )
    return next(iter(found), None)


class DynamoStoredRoles:
    """``StoredRoles`` on the members table."""

    def __init__(self, client: Any, table: str) -> None:
        self._client = client
        self._table = table

    def stored_role(self, account_id: str, user: str) -> Role | None:
        item = member_item(self._client, self._table, account_id, user)
        if item is None:
            return None
        values = from_item(item)
        name = str(values.get("role", "")).upper()
        if str(values.get(MEMBER_STATUS, ACTIVE)) != ACTIVE or name not in Role.__members__:
            return None
        return Role[name]
