"""Ingest's domain: the outcomes the logic returns and the errors it raises (each with a stable ``code`` and a message
naming the problem); the usage API's own models are in ``usage_model.py``. Status codes are the handlers' business
(``http.py`` maps these errors to them)."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any, Literal, NamedTuple

Status = Literal["stored", "duplicate"]


class IngestError(Exception):
    """A request ingest refuses: ``code`` is stable (clients and alarms key on it), ``message`` names the problem."""

    def __init__(self, code: str, message: str, details: Sequence[Mapping[str, Any]] | None = None) -> None:
        super().__init__(message)
        self.code = code
        self.message = message
        self.details = details


UNKNOWN_API_KEY = "unknown_api_key"  # the code of a LiveKit token signed by a key this endpoint does not know


class UnauthorizedError(IngestError):
    """The signature, key or client is missing, unknown or wrong: nothing of the request is trusted."""


class InvalidEventError(IngestError):
    """Signed (or not yet checked) input that is not what the route accepts: bad JSON, wrong shape, bad items."""


class ForeignStripeEventError(InvalidEventError):
    """A signed Stripe event of the other mode (test vs live) than this endpoint's, or of a Stripe Connect account:
    never ours to apply (a test endpoint's secret among ours would let its events name our live invoices).
    Counted apart and alarmed: a webhook secret or endpoint is misconfigured (D349)."""


class SignedLiveKitEventRefusedError(InvalidEventError):
    """A body LiveKit signed (its signature verified first) that is not an event we read: refused (400), which LiveKit
    takes as delivered and never resends - minutes lost, or a shape we do not know. Counted apart, alarmed (D396)."""


class ForbiddenAccountError(IngestError):
    """A signed client asked about an account it may not bill (its scope in the usage clients secret)."""


class BodyTooLargeError(IngestError):
    """The body is over the route's limit."""


class UnstorableEventError(IngestError):
    """A valid, signed event that can never be stored (a retry cannot help): refused for good, counted, alarmed."""


class EventTooLargeToStoreError(UnstorableEventError):
    """A valid, signed event whose item stays over the storage limit after compression."""


class RateLimitedError(IngestError):
    """The client sent more requests this minute than its limit: try again after ``retry_after_seconds``."""

    def __init__(self, code: str, message: str, retry_after_seconds: int) -> None:
        super().__init__(code, message)
        self.retry_after_seconds = retry_after_seconds


class OutOfTimeError(Exception):
    """Too little of the invocation is left to start another AWS call safely: answer (retryable) instead."""


class WebhookOutcome(NamedTuple):
    """A verified webhook (LiveKit or Stripe) stored now, or found stored already (a NamedTuple: cheaper to create at
    cold start than a frozen dataclass, D162)."""

    event_id: str
    event_type: str
    status: Status
