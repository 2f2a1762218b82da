"""The event store: one conditional write per event, zero reads.

``put_new`` writes an item only if its key is new. A duplicate costs exactly one failed conditional write, and
DynamoDB hands back the stored item with the failure (``ReturnValuesOnConditionCheckFailure=ALL_OLD``) so a caller can
tell an identical retry from a key reused for different content without a read.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING, Protocol, cast

from kilo_billing.events import KEY, Item

if TYPE_CHECKING:
    from mypy_boto3_dynamodb import DynamoDBClient


class StoreUnavailableError(Exception):
    """The event could not be stored (throttling, outage, permissions): the sender must retry."""


@dataclass(frozen=True, slots=True)
class PutResult:
    stored: bool
    existing: Item | None = None  # the item already stored under the key, when ``stored`` is False


class EventStore(Protocol):
    def put_new(self, item: Item) -> PutResult: ...


class DynamoEventStore:
    def __init__(self, client: DynamoDBClient, table_name: str) -> None:
        self._client = client
        self._table = table_name

    def put_new(self, item: Item) -> PutResult:
        from botocore.exceptions import BotoCoreError, ClientError  # noqa: PLC0415 - botocore is loaded with boto3

        try:
            self._client.put_item(
                TableName=self._table,
                Item=item,
                ConditionExpression="attribute_not_exists(#k)",
                ExpressionAttributeNames={"#k": KEY},
                ReturnValuesOnConditionCheckFailure="ALL_OLD",
            )
        except ClientError as exc:
            error = exc.response.get("Error", {})
            if error.get("Code") == "ConditionalCheckFailedException":
                existing = cast("Item | None", exc.response.get("Item"))
                return PutResult(stored=False, existing=existing)
            raise StoreUnavailableError(f"DynamoDB {error.get('Code', 'error')}") from exc
        except BotoCoreError as exc:
            raise StoreUnavailableError(type(exc).__name__) from exc
        return PutResult(stored=True)
