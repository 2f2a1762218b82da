"""The ingest ports' implementations: the DynamoDB event store and the Secrets Manager secret source.

AWS failures are mapped to domain errors in one place (``kilo_billing.aws.call``); clients come from
``kilo_billing.aws.client`` with the route's time budget. Stripe events go out through ``kilo_billing.publisher``.

Secret shapes (JSON):
- LiveKit keys: ``{"<api key>": "<api secret>", ...}`` - every pair listed is accepted (rotation);
- usage clients: ``{"<client id>": {"secrets": ["<secret>", ...], "accounts": "*" | ["<account id>", ...]}, ...}`` -
  several secrets per client during rotation; ``accounts`` is what the client may bill (``"*"``: every registered
  account). The older ``{"<client id>": ["<secret>", ...]}`` still reads, as ``"accounts": "*"``;
- Stripe: ``{"webhook_secrets": ["whsec_...", ...]}``.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Mapping, Sequence
from typing import TYPE_CHECKING, Any

from kilo_billing.aws import ConditionFailedError, InvalidRequestError, StorageUnavailableError, call
from kilo_billing.events import KEY, SORT_KEY, Item
from kilo_billing.items import to_item
from kilo_webhook_ingest.model import UnstorableEventError
from kilo_webhook_ingest.ports import PutResult, SecretConfigError

if TYPE_CHECKING:
    from kilo_webhook_ingest.usage_model import UsageClient


class DynamoEventStore:
    """``EventStore`` on the events table: one conditional ``PutItem`` per event, the stored item back on a duplicate
    (``ReturnValuesOnConditionCheckFailure=ALL_OLD``, no read)."""

    def __init__(self, client: Any, table_name: str) -> None:
        self._client = client
        self._table = table_name

    def put_new(self, item: Item) -> PutResult:
        try:
            call(
                self._client.put_item,
                TableName=self._table,
                Item=item,
                ConditionExpression="attribute_not_exists(#k)",
                ExpressionAttributeNames={"#k": KEY},
                ReturnValuesOnConditionCheckFailure="ALL_OLD",
            )
        except ConditionFailedError as exc:
            return PutResult(stored=False, existing=exc.item)
        except InvalidRequestError as exc:
            # DynamoDB refused the item itself (too large, an invalid key): a retry would be refused again
            raise UnstorableEventError("event_not_storable", "the event store refuses this event") from exc
        return PutResult(stored=True)


class DynamoRateLimiter:
    """``RateLimiter``: a fixed one-minute window per client, counted by one conditional ``UpdateItem`` on
    ``CLIENT#<id>`` / ``MINUTE#<epoch minute>`` (``ADD n :one`` if ``n`` is absent or below the limit; the item expires
    after two minutes). Over the limit the condition fails and nothing is written: the answer is the seconds left in
    the minute. DynamoDB failing for now lets the request through (the limit protects, it never loses usage)."""

    def __init__(self, client: Any, table_name: str, per_minute: int) -> None:
        self._client = client
        self._table = table_name
        self._limit = per_minute

    def take(self, client_id: str, now_ms: int) -> int | None:
        minute = now_ms // 60_000
        try:
            call(
                self._client.update_item,
                TableName=self._table,
                Key=to_item({KEY: f"CLIENT#{client_id}", SORT_KEY: f"MINUTE#{minute}"}),
                UpdateExpression="ADD #n :one SET expires_at = if_not_exists(expires_at, :expires)",
                ConditionExpression="attribute_not_exists(#n) OR #n < :limit",
                ExpressionAttributeNames={"#n": "n"},
                ExpressionAttributeValues=to_item({":one": 1, ":limit": self._limit, ":expires": (minute + 2) * 60}),
            )
        except ConditionFailedError:
            return max(1, -(-((minute + 1) * 60_000 - now_ms) // 1000))
        except (StorageUnavailableError, InvalidRequestError):
            return None
        return None


# --- secrets ------------------------------------------------------------------------------------------------------


def _string_map(value: Any, what: str) -> dict[str, str]:
    if not isinstance(value, dict) or not value:
        raise SecretConfigError(f"{what} must be a non-empty JSON object")
    if not all(isinstance(k, str) and isinstance(v, str) and k and v for k, v in value.items()):
        raise SecretConfigError(f"{what} must map non-empty strings to non-empty strings")
    return dict(value)


def _string_list(value: Any, what: str) -> list[str]:
    if isinstance(value, str):
        value = [value]
    if not isinstance(value, list) or not value or not all(isinstance(v, str) and v for v in value):
        raise SecretConfigError(f"{what} must be a non-empty list of strings")
    return list(value)


def parse_livekit_keys(value: Any) -> dict[str, str]:
    return _string_map(value, "LiveKit keys secret")


def parse_usage_client(value: Any, client_id: str) -> UsageClient | None:
    """The client's entry of the usage clients secret; ``None`` when the client is not listed."""
    from kilo_billing.accounts import InvalidAccountIdError, check_account_id  # noqa: PLC0415 - usage path only
    from kilo_webhook_ingest.usage_model import ALL_ACCOUNTS, UsageClient  # noqa: PLC0415

    if not isinstance(value, dict):
        raise SecretConfigError("usage clients secret must be a JSON object")
    entry = value.get(client_id)
    if entry is None:
        return None
    what = f"usage client {client_id!r}"
    if isinstance(entry, list | str):  # the older shape: secrets only, every registered account
        return UsageClient(tuple(_string_list(entry, f"secrets of {what}")))
    if not isinstance(entry, dict) or set(entry) - {"secrets", "accounts"}:
        raise SecretConfigError(f"{what} must be {{'secrets': [...], 'accounts': '*' | [...]}}")
    secrets = tuple(_string_list(entry.get("secrets"), f"secrets of {what}"))
    accounts = entry.get("accounts")
    if accounts == "*":
        return UsageClient(secrets, ALL_ACCOUNTS)
    if not isinstance(accounts, list):
        raise SecretConfigError(f"accounts of {what} must be '*' or a list of account ids")
    try:
        listed = tuple(check_account_id(a) for a in _string_list(accounts, f"accounts of {what}"))
    except InvalidAccountIdError as exc:
        raise SecretConfigError(f"accounts of {what}: {exc}") from exc
    return UsageClient(secrets, tuple(sorted(set(listed))))


def parse_stripe_secrets(value: Any) -> list[str]:
    if not isinstance(value, dict):
        raise SecretConfigError("Stripe secret must be a JSON object")
    return _string_list(value.get("webhook_secrets"), "Stripe webhook_secrets")


REFRESH_AT_MOST_EVERY_SECONDS = 30.0  # forced reads of one secret (a token naming a key the cache does not know)


class SecretsManagerSource:
    """``SecretSource`` on Secrets Manager through Powertools' ``SecretsProvider`` (in-memory cache, refreshed every
    ``max_age`` seconds), reading with the route's time-budgeted client."""

    def __init__(
        self,
        client: Any,
        names: Mapping[str, str],
        max_age: int = 300,
        refresh_every: float = REFRESH_AT_MOST_EVERY_SECONDS,
        monotonic: Callable[[], float] = time.monotonic,
    ) -> None:
        from aws_lambda_powertools.utilities.parameters import SecretsProvider  # noqa: PLC0415 - on first build only

        self._provider = SecretsProvider(boto3_client=client)
        self._names = dict(names)
        self._max_age = max_age
        self._refresh_every = refresh_every
        self._monotonic = monotonic
        self._refreshed: dict[str, float] = {}

    def _may_refresh(self, which: str) -> bool:
        """At most one forced read per secret every ``refresh_every`` seconds: tokens naming keys nobody configured
        cannot make every request a Secrets Manager call."""
        now = self._monotonic()
        last = self._refreshed.get(which)
        if last is not None and now - last < self._refresh_every:
            return False
        self._refreshed[which] = now
        return True

    def _get(self, which: str, refresh: bool = False) -> Any:
        from aws_lambda_powertools.utilities.parameters.exceptions import (  # noqa: PLC0415
            GetParameterError,
            TransformParameterError,
        )

        name = self._names.get(which, "")
        if not name:
            raise SecretConfigError(f"no secret name configured for {which}")
        try:
            force = refresh and self._may_refresh(which)
            return self._provider.get(name, max_age=self._max_age, transform="json", force_fetch=force)
        except TransformParameterError as exc:
            raise SecretConfigError(f"secret {name} is not valid JSON") from exc
        except GetParameterError as exc:
            raise SecretConfigError(f"secret {name} could not be read") from exc

    def livekit_keys(self, refresh: bool = False) -> Mapping[str, str]:
        return parse_livekit_keys(self._get("livekit", refresh))

    def usage_client(self, client_id: str) -> UsageClient | None:
        return parse_usage_client(self._get("usage"), client_id)

    def stripe_webhook_secrets(self) -> Sequence[str]:
        return parse_stripe_secrets(self._get("stripe"))
