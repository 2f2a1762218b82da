"""Ingest logic: verify, validate, store once. Knows nothing of Lambda or API Gateway event shapes."""

from __future__ import annotations

from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Literal

from kilo_billing.events import Item
from kilo_webhook_ingest import livekit_webhook
from kilo_webhook_ingest.config import IngestSettings
from kilo_webhook_ingest.http import RawRequest
from kilo_webhook_ingest.secrets import SecretSource
from kilo_webhook_ingest.store import EventStore, PutResult, StoreUnavailableError

Status = Literal["stored", "duplicate"]


def expires_at(now_ms: int, settings: IngestSettings) -> int:
    """TTL (epoch seconds) of a raw event: kept ``raw_event_ttl_days`` after it was received."""
    return now_ms // 1000 + settings.raw_event_ttl_days * 86_400


@dataclass(frozen=True, slots=True)
class LiveKitOutcome:
    event_id: str
    event_type: str
    status: Status


def ingest_livekit(
    request: RawRequest, secrets: SecretSource, store: EventStore, settings: IngestSettings, now_ms: int
) -> LiveKitOutcome:
    """Verify a LiveKit webhook and store it once (one conditional write; a duplicate is not an error)."""
    api_key = livekit_webhook.verify_signature(
        request.body, request.header("authorization"), secrets.livekit_keys(), settings.livekit_leeway_seconds
    )
    event = livekit_webhook.parse_event(request.body)
    record = livekit_webhook.to_record(event, request.body, api_key, now_ms)
    result = store.put_new(record.to_item(expires_at(now_ms, settings)))
    return LiveKitOutcome(record.event_id, record.event_type, "stored" if result.stored else "duplicate")


UsageStatus = Literal["accepted", "duplicate", "conflict"]


@dataclass(frozen=True, slots=True)
class UsageItemOutcome:
    index: int
    idempotency_key: str
    status: UsageStatus


@dataclass(frozen=True, slots=True)
class UsageOutcome:
    items: tuple[UsageItemOutcome, ...]

    def count(self, status: UsageStatus) -> int:
        return sum(1 for item in self.items if item.status == status)


def _usage_status(result: PutResult, payload_hash: str) -> UsageStatus:
    if result.stored:
        return "accepted"
    existing = (result.existing or {}).get("payload_hash", {}).get("S")
    return "duplicate" if existing == payload_hash else "conflict"


def ingest_usage(
    request: RawRequest,
    secrets: SecretSource,
    store: EventStore,
    settings: IngestSettings,
    now_ms: int,
    max_workers: int = 16,
) -> UsageOutcome:
    """Verify and validate a whole batch first (nothing stored on any problem), then store each event once.

    Each event is its own conditional write keyed by (client, idempotency key), so a retried batch - also one that
    failed half-way - stores only what is missing. A key reused for different usage is reported as a conflict.
    """
    from kilo_webhook_ingest import usage  # noqa: PLC0415 - pydantic loads only on the usage path

    client_id = request.header("x-kilo-client")
    usage.verify_signature(
        request.body,
        client_id,
        request.header("x-kilo-signature"),
        secrets.usage_secrets(client_id) if client_id and usage.CLIENT_ID.fullmatch(client_id) else [],
        now_ms // 1000,
        settings.usage_tolerance_seconds,
    )
    assert client_id is not None  # verify_signature refuses a missing client
    events = usage.parse_batch(request.body, datetime.fromtimestamp(now_ms / 1000, tz=UTC))
    records = [usage.to_record(event, client_id, now_ms) for event in events]
    ttl = expires_at(now_ms, settings)
    items: list[Item] = [record.to_item(ttl) for record in records]
    results = _put_all(store, items, max_workers)
    return UsageOutcome(
        tuple(
            UsageItemOutcome(index, record.idempotency_key, _usage_status(result, record.payload_hash))
            for index, (record, result) in enumerate(zip(records, results, strict=True))
        )
    )


def _put_all(store: EventStore, items: list[Item], max_workers: int) -> list[PutResult]:
    put: Callable[[Item], PutResult] = store.put_new
    if len(items) == 1 or max_workers <= 1:
        return [put(item) for item in items]
    with ThreadPoolExecutor(max_workers=min(max_workers, len(items))) as pool:
        futures = [pool.submit(put, item) for item in items]
        results: list[PutResult] = []
        failure: StoreUnavailableError | None = None
        for future in futures:
            try:
                results.append(future.result())
            except StoreUnavailableError as exc:
                failure = failure or exc
        if failure is not None:
            raise failure
        return results
