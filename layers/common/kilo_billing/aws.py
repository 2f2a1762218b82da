"""AWS plumbing every function shares: boto3 clients with a time budget, and the one mapping of botocore failures to
the domain errors adapters raise.

boto3's defaults (60 s connect and read timeouts, legacy retries) let one slow call outlive the Lambda that made it; a
handler must answer, log and count its own failures. Each function passes a budget that fits inside its timeout
(docs/decisions.md). botocore is imported only when a client is made or an error is mapped, never at import.
"""

from __future__ import annotations

import random
import time
from collections.abc import Callable, Iterator, Mapping, Sequence
from dataclasses import dataclass
from typing import Any, Final, TypeVar

from kilo_billing.items import to_item

T = TypeVar("T")

CONDITION_FAILED = "ConditionalCheckFailedException"
TRANSACTION_CANCELED = "TransactionCanceledException"


@dataclass(frozen=True, slots=True)
class CallBudget:
    """How long one AWS call may take: per-attempt connect/read timeouts and the total number of attempts."""

    connect_timeout: float = 1.0
    read_timeout: float = 2.0
    max_attempts: int = 3

    @property
    def worst_case_seconds(self) -> float:
        """An upper bound of one call's wall time, backoff included: standard mode waits before retry ``i`` (0-based)
        at most ``min(2 ** i, 20)`` s (throttling; other errors far less), so 1 s, then 2 s, ..."""
        backoff = sum(min(1 << retry, 20) for retry in range(self.max_attempts - 1))
        return self.max_attempts * (self.connect_timeout + self.read_timeout) + backoff


def client(
    service: str, budget: CallBudget | None = None, *, validate: bool = True, lazy: bool = False, **kwargs: Any
) -> Any:
    """A boto3 client bounded by ``budget`` (standard retry mode: retries throttling and transient errors only).

    ``validate=False`` turns botocore's client-side parameter validation off, for a hot path whose calls are our own
    fixed, typed requests (~19 % of the LiveKit webhook's CPU per event): a malformed request is then refused by the
    service itself (``ValidationException``, mapped by ``map_error`` like any other) instead of before sending it.

    ``lazy=True`` returns a ``LazyClient``: the client is made on its first use, for a client that a function's
    requests need only sometimes (each further service's client costs 5-20 ms of CPU to make, on a cold start)."""
    if lazy:
        return LazyClient(lambda: client(service, budget, validate=validate, **kwargs))
    import boto3  # noqa: PLC0415 - boto3 costs ~0.1 s of import; handlers build clients on first use
    from botocore.config import Config  # noqa: PLC0415

    budget = budget or CallBudget()
    config = Config(
        connect_timeout=budget.connect_timeout,
        read_timeout=budget.read_timeout,
        # total_max_attempts counts the first attempt; botocore's "max_attempts" would count retries only
        retries={"mode": "standard", "total_max_attempts": budget.max_attempts},
        parameter_validation=validate,
    )
    factory: Any = boto3.client  # the service name is a runtime value: the stubs' overloads do not apply
    return factory(service, config=config, **kwargs)


class LazyClient:
    """A boto3 client made on its first use (any attribute: an operation, ``meta``, ``exceptions``), then reused."""

    def __init__(self, make: Callable[[], Any]) -> None:
        self._make: Callable[[], Any] | None = make
        self._client: Any = None

    @property
    def made(self) -> bool:
        return self._make is None

    def __getattr__(self, name: str) -> Any:
        if self._make is not None:
            self._client, self._make = self._make(), None
        return getattr(self._client, name)


def livekit_credentials(
    secret_name: str, max_age_seconds: int, budget: CallBudget | None = None
) -> Callable[[], list[tuple[str, str]]]:
    """A reader of every configured LiveKit (API key, secret) - the secret ``secret_name``, a JSON object of
    key: secret - re-read at most every ``max_age_seconds`` (rotation); no credentials when no secret is named.
    Powertools' parameters utility and the Secrets Manager client load on the first read, not when the reader is
    made (a sweep with no open session to confirm never reads it)."""
    providers: list[Any] = []

    def credentials() -> list[tuple[str, str]]:
        if not secret_name:
            return []
        if not providers:
            from aws_lambda_powertools.utilities.parameters import SecretsProvider  # noqa: PLC0415

            providers.append(SecretsProvider(boto3_client=client("secretsmanager", budget)))
        keys = providers[0].get(secret_name, transform="json", max_age=max_age_seconds)
        if not isinstance(keys, dict):
            raise ValueError(f"secret {secret_name} must be a JSON object of key: secret")
        return sorted((str(key), str(secret)) for key, secret in keys.items())

    return credentials


class StorageUnavailableError(Exception):
    """AWS refused or failed (throttling, outage, timeout, permissions): the work may succeed if retried."""


class ResourceGoneError(StorageUnavailableError):
    """What was asked for no longer exists: a deleted table or stream, stream records trimmed after 24 h, an expired
    shard iterator. Still a ``StorageUnavailableError`` for callers that only retry; readers of old data (the
    stream replay) fall back to another source."""


class NotFoundError(StorageUnavailableError):
    """The service does not hold what was asked for (``NotFoundException``: e.g. SES v2's answer for an address that
    is not on the account's suppression list). Still a ``StorageUnavailableError`` for callers that only retry; a
    caller for whom "not there" is an answer catches it."""


class NotTakenError(StorageUnavailableError):
    """The service did not take the request: throttled (``TooManyRequestsException``, ``Throttling``,
    ``ThrottlingException``, ``Throttled``) or never connected (``ConnectTimeoutError``, ``EndpointConnectionError``).
    Sending it again cannot do the work twice - unlike a read timeout, a connection reset or a 5xx, which may come
    after the service took it. Still a ``StorageUnavailableError`` for callers that only retry."""


class SendingPausedError(StorageUnavailableError):
    """SES will not send for this account now: its sending is paused (``SendingPausedException``: the configuration
    set's or the account's, by AWS's review or an operator) or restricted (``AccountSuspendedException``). Hours or
    for good, not seconds: sending again soon achieves nothing. Still a ``StorageUnavailableError`` for callers that
    only retry (the message is kept and redelivered, never lost)."""


class ConditionFailedError(Exception):
    """A conditional write found the item in another state. ``item`` is the stored item when the call asked for it
    (``ReturnValuesOnConditionCheckFailure=ALL_OLD``)."""

    def __init__(self, message: str, item: dict[str, Any] | None = None) -> None:
        super().__init__(message)
        self.item = item


class TransactionConflictError(ConditionFailedError):
    """A transaction was cancelled by a condition or a concurrent transaction: re-read and retry."""


class InvalidRequestError(Exception):
    """AWS refused the request itself (validation, item too large): retrying the same request can never succeed."""


_INVALID = frozenset(
    {
        "ValidationException",
        "ItemCollectionSizeLimitExceededException",
        "SerializationException",
        # SES v2 / SNS refusing a message for good: a rejected or unverified address, an invalid number or parameter
        "MessageRejected",
        "MailFromDomainNotVerifiedException",
        "BadRequestException",
        "InvalidParameter",
        "InvalidParameterValue",
    }
)
_GONE = frozenset({"ResourceNotFoundException", "TrimmedDataAccessException", "ExpiredIteratorException"})
NOT_FOUND = "NotFoundException"
# LimitExceededException: SES v2 SendEmail's refusal over a limit ("too many instances"), answered before it took the
# message like a throttle (D399)
_NOT_TAKEN = frozenset(
    {"TooManyRequestsException", "Throttling", "ThrottlingException", "Throttled", "LimitExceededException"}
)
_PAUSED = frozenset({"SendingPausedException", "AccountSuspendedException"})


def map_error(exc: Exception) -> Exception:
    """The domain error for a botocore failure (the only place the codes are read); other exceptions pass through."""
    from botocore.exceptions import (  # noqa: PLC0415
        BotoCoreError,
        ClientError,
        ConnectTimeoutError,
        EndpointConnectionError,
    )

    if isinstance(exc, ClientError):
        response: dict[str, Any] = dict(exc.response)
        code = str(response.get("Error", {}).get("Code", "") or "ClientError")
        if code == CONDITION_FAILED:
            return ConditionFailedError(code, response.get("Item"))
        if code == TRANSACTION_CANCELED:
            reasons = [str(r.get("Code") or "None") for r in response.get("CancellationReasons", [])]
            if any(reason == "ValidationError" for reason in reasons):
                return InvalidRequestError(f"{code}: {','.join(reasons)}")
            return TransactionConflictError(f"{code}: {','.join(reasons)}")
        if code in _INVALID:
            return InvalidRequestError(code)
        if code in _GONE:
            return ResourceGoneError(code)
        if code == NOT_FOUND:
            return NotFoundError(code)
        if code in _NOT_TAKEN:
            return NotTakenError(code)
        if code in _PAUSED:
            return SendingPausedError(code)
        return StorageUnavailableError(code)
    if isinstance(exc, ConnectTimeoutError | EndpointConnectionError):
        return NotTakenError(type(exc).__name__)
    if isinstance(exc, BotoCoreError):
        return StorageUnavailableError(type(exc).__name__)
    return exc


def call(operation: Callable[..., T], **kwargs: Any) -> T:
    """Run one AWS call; botocore failures come out as this module's domain errors (``raise ... from exc``)."""
    try:
        return operation(**kwargs)
    except Exception as exc:
        mapped = map_error(exc)
        if mapped is exc:
            raise
        raise mapped from exc


def put_if(
    client: Any, table: str, item: Mapping[str, Any], condition: str = "attribute_not_exists(pk)", **request: Any
) -> bool:
    """One conditional ``PutItem`` through ``call``: True when written, False when ``condition`` failed (by default:
    an item with this key is stored already). ``request``: the condition's attribute names and values."""
    try:
        call(client.put_item, TableName=table, Item=item, ConditionExpression=condition, **request)
    except ConditionFailedError:
        return False
    return True


def delete_if(
    client: Any, table: str, key: Mapping[str, Any], condition: str = "attribute_exists(pk)", **request: Any
) -> bool:
    """One conditional ``DeleteItem`` through ``call``: True when deleted, False when ``condition`` failed (by
    default: no item with this key). ``request``: the condition's attribute names and values."""
    try:
        call(client.delete_item, TableName=table, Key=key, ConditionExpression=condition, **request)
    except ConditionFailedError:
        return False
    return True


def take_counted(client: Any, table: str, key: Mapping[str, Any], counter: str, limit: int, expires_at: int) -> bool:
    """One more on the item's ``counter`` unless it has reached ``limit`` (a cap per key, e.g. per account and day;
    ``expires_at``: the item's TTL, epoch seconds), in one conditional ``UpdateItem``: True when counted."""
    try:
        call(
            client.update_item,
            TableName=table,
            Key=key,
            UpdateExpression="ADD #count :one SET #ttl = :ttl",
            ConditionExpression="attribute_not_exists(#count) OR #count < :limit",
            ExpressionAttributeNames={"#count": counter, "#ttl": "expires_at"},
            ExpressionAttributeValues=to_item({":one": 1, ":limit": limit, ":ttl": expires_at}),
        )
    except ConditionFailedError:
        return False
    return True


def give_back_counted(client: Any, table: str, key: Mapping[str, Any], counter: str) -> None:
    """One less on what ``take_counted`` counted (one that was not used after all), never below zero."""
    try:
        call(
            client.update_item,
            TableName=table,
            Key=key,
            UpdateExpression="ADD #count :less",
            ConditionExpression="#count > :none",
            ExpressionAttributeNames={"#count": counter},
            ExpressionAttributeValues=to_item({":less": -1, ":none": 0}),
        )
    except ConditionFailedError:
        return


def paged_items(operation: Callable[..., Any], **request: Any) -> Iterator[dict[str, Any]]:
    """Every item a DynamoDB Query or Scan finds, page after page (each page's ``LastEvaluatedKey`` starts the next),
    through ``call``."""
    while True:
        page = call(operation, **request)
        yield from page.get("Items", [])
        if "LastEvaluatedKey" not in page:
            return
        request["ExclusiveStartKey"] = page["LastEvaluatedKey"]


MAX_BATCH_GET: Final = 100  # keys in one BatchGetItem (DynamoDB's limit)
MAX_BATCH_WRITE: Final = 25  # put/delete requests in one BatchWriteItem (DynamoDB's limit)


def _full_jitter(bound: float) -> float:
    return random.uniform(0.0, bound)  # noqa: S311 - a wait's jitter, not a secret


@dataclass(frozen=True, slots=True)
class BatchRetry:
    """How a batch request's unprocessed part is asked again: at most ``attempts`` requests in all (the first
    included); before retry ``i`` (1-based) a wait drawn from 0 to ``min(cap_seconds, base_seconds * 2 ** (i - 1))``
    ("full jitter": throttled callers spread out instead of retrying in step). ``sleep`` waits and ``jitter`` draws a
    wait up to its bound: tests record the waits, or take the bounds themselves."""

    attempts: int = 6
    base_seconds: float = 0.05
    cap_seconds: float = 1.0
    sleep: Callable[[float], None] = time.sleep
    jitter: Callable[[float], float] = _full_jitter

    def bound(self, retry: int) -> float:
        """The longest wait before retry ``retry`` (1-based)."""
        return min(self.cap_seconds, self.base_seconds * (1 << (retry - 1)))

    @property
    def worst_case_seconds(self) -> float:
        """The longest the waits of one batch request take together: 0.05 + 0.1 + 0.2 + 0.4 + 0.8 = 1.55 s."""
        return sum(self.bound(retry) for retry in range(1, self.attempts))


BATCH_RETRY: Final = BatchRetry()


def _processed(
    operation: Callable[..., Any], pending: dict[str, Any], unprocessed: str, retry: BatchRetry | None
) -> Iterator[dict[str, Any]]:
    """Each answer of one batch request (``pending``: its ``RequestItems``) and of its ``unprocessed`` part asked
    again, through ``call``, until nothing is left; ``StorageUnavailableError`` when something still is after
    ``retry.attempts`` requests. ``BATCH_RETRY`` is read here, at the call: tests put another policy in its place."""
    policy = retry or BATCH_RETRY
    for attempt in range(policy.attempts):
        if attempt:
            policy.sleep(policy.jitter(policy.bound(attempt)))
        answer = call(operation, RequestItems=pending)
        yield answer
        pending = answer.get(unprocessed) or {}
        if not pending:
            return
    left = sum(len(part["Keys"]) if isinstance(part, dict) else len(part) for part in pending.values())
    raise StorageUnavailableError(f"{unprocessed}: {left} still unprocessed after {policy.attempts} requests")


def batch_get(
    client: Any, table: str, keys: Sequence[Mapping[str, Any]], retry: BatchRetry | None = None, **read: Any
) -> Iterator[dict[str, Any]]:
    """Every item of ``table`` that ``keys`` name (raw DynamoDB items, as the answers give them, which say nothing of
    their order) by BatchGetItem, ``MAX_BATCH_GET`` keys a request in their order, each request's unprocessed keys
    asked again with backoff (``BatchRetry``; botocore's own retries cover a refused request, never a partly
    processed one). ``read``: the request's other parameters (``ConsistentRead``, a projection and its names).
    Items come as each answer arrives."""
    for start in range(0, len(keys), MAX_BATCH_GET):
        request = {table: {"Keys": list(keys[start : start + MAX_BATCH_GET]), **read}}
        for answer in _processed(client.batch_get_item, request, "UnprocessedKeys", retry):
            yield from answer["Responses"].get(table, [])


def batch_write(
    client: Any, table: str, requests: Sequence[Mapping[str, Any]], retry: BatchRetry | None = None
) -> None:
    """Each of ``requests`` (``PutRequest`` / ``DeleteRequest``) on ``table`` by BatchWriteItem, ``MAX_BATCH_WRITE`` a
    request in their order, each request's unprocessed items asked again with backoff as ``batch_get``'s."""
    for start in range(0, len(requests), MAX_BATCH_WRITE):
        request = {table: list(requests[start : start + MAX_BATCH_WRITE])}
        for _ in _processed(client.batch_write_item, request, "UnprocessedItems", retry):
            pass
