"""What the ingest logic needs from the outside world, and the errors those parts raise.

- ``EventStore.put_new`` writes an item only if its key is new: one conditional write, zero reads. A duplicate is not
  an error; the stored item comes back with it, so a caller tells an identical retry from a key reused for different
  content without a read. An item too large to ever be stored raises ``EventTooLargeToStoreError`` (permanent) before
  any write; a store that is down raises ``StorageUnavailableError`` (retryable).
- ``SecretSource`` hands out the verification secrets; a missing or malformed secret is ``SecretConfigError``.
- ``Deadline`` says how much of the invocation is left, so the logic starts no AWS call it cannot finish.
- Accounts are read through ``kilo_billing.accounts.AccountDirectory``; Stripe events are announced through
  ``kilo_billing.publisher.EventPublisher``.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import TYPE_CHECKING, NamedTuple, Protocol

from kilo_billing.aws import StorageUnavailableError
from kilo_billing.events import Item
from kilo_billing.publisher import EventPublisher, PublishError

if TYPE_CHECKING:
    from kilo_webhook_ingest.usage_model import UsageClient

__all__ = [
    "Deadline",
    "EventPublisher",
    "EventStore",
    "PublishError",
    "PutResult",
    "RateLimiter",
    "SecretConfigError",
    "SecretSource",
    "StorageUnavailableError",
]


class SecretConfigError(RuntimeError):
    """A secret is missing, unreadable or malformed: an operator must fix it; senders get a 503 and retry."""


class PutResult(NamedTuple):
    """What ``put_new`` did (a NamedTuple: cheaper to create at cold start than a frozen dataclass, D162)."""

    stored: bool
    existing: Item | None = None  # the item already stored under the key, when ``stored`` is False


class EventStore(Protocol):
    def put_new(self, item: Item) -> PutResult: ...


class SecretSource(Protocol):
    def livekit_keys(self, refresh: bool = False) -> Mapping[str, str]:
        """The accepted LiveKit API keys; ``refresh``: read the secret again rather than from the cache (throttled by
        the adapter), for a token signed by a key the cached copy does not know - a key just added (rotation)."""
        ...

    def usage_client(self, client_id: str) -> UsageClient | None: ...

    def stripe_webhook_secrets(self) -> Sequence[str]: ...


class Deadline(Protocol):
    def seconds_left(self) -> float: ...


class RateLimiter(Protocol):
    def take(self, client_id: str, now_ms: int) -> int | None:
        """Count one request of ``client_id``: ``None`` when it is within the client's limit, else the seconds until
        the client may try again. A limiter that cannot answer (its store is down) lets the request through."""
        ...
