"""Ingest logic: verify, validate, store once. Takes the request's bytes and headers and the ports; returns domain
outcomes or raises domain errors (``model.py``). Knows nothing of Lambda, API Gateway or status codes.

Before every AWS call it might make (a secret read, an account read, a write, a publish) the logic checks that the
invocation has time left for that call's worst case (``Deadline``), so a slow or throttled AWS never makes the Lambda
time out without an answer: the caller gets a retryable error instead.
"""

from __future__ import annotations

import threading
from collections.abc import Callable, Sequence
from concurrent.futures import ThreadPoolExecutor
from datetime import UTC, datetime
from typing import TYPE_CHECKING

from kilo_billing.aws import CallBudget
from kilo_billing.events import ContractError, Item, ItemTooLargeError, check_item_size
from kilo_webhook_ingest.model import (
    UNKNOWN_API_KEY,
    EventTooLargeToStoreError,
    ForbiddenAccountError,
    InvalidEventError,
    OutOfTimeError,
    RateLimitedError,
    SignedLiveKitEventRefusedError,
    UnauthorizedError,
    UnstorableEventError,
    WebhookOutcome,
)
from kilo_webhook_ingest.ports import (
    Deadline,
    EventStore,
    PutResult,
    RateLimiter,
    SecretSource,
    StorageUnavailableError,
)
from kilo_webhook_ingest.settings import IngestSettings

if TYPE_CHECKING:
    from kilo_billing.accounts import AccountDirectory
    from kilo_billing.entitlements import Entitlement, EntitlementPolicy, EntitlementSource
    from kilo_billing.publisher import EventPublisher
    from kilo_billing.usage_events import UsageEventRecord
    from kilo_webhook_ingest.http import RawRequest
    from kilo_webhook_ingest.usage_model import UsageClient, UsageOutcome, UsageStatus

Annotate = Callable[..., None]  # correlation keys for the log lines that follow (event_id=..., room_sid=...)


def _ignore(**_: str | None) -> None:
    return None


def expires_at(now_ms: int, settings: IngestSettings) -> int:
    """TTL (epoch seconds) of a raw event: kept ``raw_event_ttl_days`` after it was received."""
    return now_ms // 1000 + settings.raw_event_ttl_days * 86_400


def require_time(deadline: Deadline, settings: IngestSettings, budget: CallBudget, what: str) -> None:
    """Refuse to start an AWS call that might not finish (with the answer still to send) before the invocation ends."""
    left = deadline.seconds_left()
    needed = settings.reserve_seconds(budget)
    if left < needed:
        raise OutOfTimeError(f"{left:.2f} s left, {needed:.2f} s needed to {what}")


def storable(item: Item, settings: IngestSettings) -> Item:
    try:
        return check_item_size(item, settings.max_item_bytes)
    except ItemTooLargeError as exc:
        raise EventTooLargeToStoreError(
            "event_too_large_to_store", f"the event is too large to store ({exc.size} bytes compressed)"
        ) from exc


def ingest_livekit(
    request: RawRequest,
    secrets: SecretSource,
    store: EventStore,
    settings: IngestSettings,
    now_ms: int,
    deadline: Deadline,
    annotate: Annotate = _ignore,
) -> WebhookOutcome:
    """Verify a LiveKit webhook and store it once (one conditional write; a duplicate is not an error)."""
    from kilo_webhook_ingest import livekit_webhook  # noqa: PLC0415 - PyJWT loads only on the LiveKit path

    budget = settings.livekit_budget
    require_time(deadline, settings, budget, "read the LiveKit keys")
    keys = secrets.livekit_keys()
    authorization = request.header("authorization")
    try:
        api_key = livekit_webhook.verify_signature(request.body, authorization, keys, settings.livekit_leeway_seconds)
    except UnauthorizedError as exc:
        # a key added to the secret since it was cached (rotation): LiveKit takes a 401 as delivered and would not
        # send the event again, so read the keys afresh once (the adapter throttles it) before refusing
        if exc.code != UNKNOWN_API_KEY:
            raise
        require_time(deadline, settings, budget, "read the LiveKit keys again")
        fresh = secrets.livekit_keys(refresh=True)
        if fresh == keys:
            raise
        api_key = livekit_webhook.verify_signature(request.body, authorization, fresh, settings.livekit_leeway_seconds)
    try:  # signed: a refusal now is one LiveKit never resends (D396)
        event = livekit_webhook.parse_event(request.body)
        record = livekit_webhook.to_record(event, request.body, api_key, now_ms)
    except InvalidEventError as invalid:
        raise SignedLiveKitEventRefusedError(invalid.code, invalid.message, invalid.details) from invalid
    annotate(event_id=record.event_id, room_sid=record.room_sid)
    item = storable(record.to_item(expires_at(now_ms, settings)), settings)
    require_time(deadline, settings, budget, "store the event")
    result = store.put_new(item)
    return WebhookOutcome(record.event_id, record.event_type, "stored" if result.stored else "duplicate")


# --- usage ----------------------------------------------------------------------------------------------------------


def ingest_usage(
    request: RawRequest,
    secrets: SecretSource,
    store: EventStore,
    accounts: AccountDirectory,
    settings: IngestSettings,
    now_ms: int,
    deadline: Deadline,
    annotate: Annotate = _ignore,
    limiter: RateLimiter | None = None,
) -> UsageOutcome:
    """Verify and validate a whole batch first - shape, the client's scope, registered accounts - and store nothing
    on any problem; then store each event once (a conditional write per (client, idempotency key)).

    A retried batch, also one that failed half-way, stores only what is missing; a key reused for different usage is
    a conflict. When the store fails or time runs low, no further write starts and ``UsageNotStoredError`` says which
    items were stored.
    """
    from kilo_webhook_ingest import usage  # noqa: PLC0415 - pydantic loads only on the usage path
    from kilo_webhook_ingest.usage_model import UsageItemOutcome, UsageNotStoredError, UsageOutcome  # noqa: PLC0415

    client_id, client = authenticate_client(request, secrets, settings, now_ms, deadline, annotate)
    if limiter is not None:
        require_time(deadline, settings, settings.usage_budget, "count the request against the client's limit")
        retry_after = limiter.take(client_id, now_ms)
        if retry_after is not None:
            raise RateLimitedError(
                "rate_limited",
                f"client {client_id} is over its limit of {settings.usage_requests_per_minute} requests a minute; "
                f"retry after {retry_after} s",
                retry_after,
            )
    events, problems = usage.validate_batch(request.body, datetime.fromtimestamp(now_ms / 1000, tz=UTC))
    scope = usage.scope_problems(events, client_id, client)
    problems += scope
    in_scope = [(index, event) for index, event in events if client.may_bill(event.account_id)]
    registered = _registered({event.account_id for _, event in in_scope}, accounts, settings, deadline)
    problems += usage.registration_problems(in_scope, registered)
    if problems:
        raise usage.invalid(problems)
    if len({event.account_id for _, event in events}) == 1:
        annotate(account_id=events[0][1].account_id)
    records = [usage.to_record(event, client_id, now_ms) for _, event in events]
    ttl = expires_at(now_ms, settings)
    # a key repeated within the batch (with the same usage: validation refuses a different one) is written once and
    # the repeat shares its first occurrence's status (one accepted is a duplicate), rather than racing it to the
    # same item: a repeat of a conflict is a conflict too, never a duplicate (recorded) of usage that was not
    first = {record.idempotency_key: record for record in reversed(records)}
    unique = [record for record in records if first[record.idempotency_key] is record]
    written, failure = _put_all(store, [record.to_item(ttl) for record in unique], settings, deadline)
    status_of = {
        record.idempotency_key: _usage_status(result, record) for record, result in zip(unique, written, strict=True)
    }
    statuses: list[UsageStatus] = [
        status_of[record.idempotency_key]
        if first[record.idempotency_key] is record or status_of[record.idempotency_key] != "accepted"
        else "duplicate"
        for record in records
    ]
    outcome = UsageOutcome(
        tuple(
            UsageItemOutcome(record.idempotency_key, status) for record, status in zip(records, statuses, strict=True)
        )
    )
    if not outcome.complete:
        raise UsageNotStoredError(outcome, failure)
    return outcome


def authenticate_client(
    request: RawRequest,
    secrets: SecretSource,
    settings: IngestSettings,
    now_ms: int,
    deadline: Deadline,
    annotate: Annotate = _ignore,
) -> tuple[str, UsageClient]:
    """The app's signed request (``X-Kilo-Client`` + ``X-Kilo-Signature``, docs: README) and the client it is from,
    with the accounts it may bill: the usage API's and the entitlement check's one way in."""
    from kilo_webhook_ingest import usage  # noqa: PLC0415

    client_id = request.header("x-kilo-client")
    client = None
    if client_id and usage.CLIENT_ID.fullmatch(client_id):
        require_time(deadline, settings, settings.usage_budget, "read the usage clients")
        client = secrets.usage_client(client_id)
    usage.verify_signature(
        request.body,
        client_id,
        request.header("x-kilo-signature"),
        client.secrets if client is not None else (),
        now_ms // 1000,
        settings.usage_tolerance_seconds,
    )
    assert client_id is not None  # verify_signature refuses a missing client
    assert client is not None  # ... and an unknown one
    annotate(client_id=client_id)
    return client_id, client


def check_entitlement(
    request: RawRequest,
    secrets: SecretSource,
    entitlements: EntitlementSource,
    policy: EntitlementPolicy,
    settings: IngestSettings,
    now_ms: int,
    deadline: Deadline,
    annotate: Annotate = _ignore,
) -> Entitlement:
    """``POST /v1/entitlements/check``: signed like the usage API; the client may ask only about accounts it may bill
    (scope before anything is read, so it learns nothing about others); then one read and the decision
    (``kilo_billing.entitlements``)."""
    from kilo_billing.entitlements import decide  # noqa: PLC0415
    from kilo_webhook_ingest import entitlement  # noqa: PLC0415

    client_id, client = authenticate_client(request, secrets, settings, now_ms, deadline, annotate)
    account_id = entitlement.parse_check(request.body)
    if not client.may_bill(account_id):
        raise ForbiddenAccountError(
            "account_not_in_scope", f"usage client {client_id!r} may not bill account {account_id!r}"
        )
    annotate(account_id=account_id)
    require_time(deadline, settings, settings.usage_budget, "read the account's entitlement")
    profile, state = entitlements.read(account_id)
    return decide(account_id, profile, state, datetime.fromtimestamp(now_ms / 1000, tz=UTC), policy)


ACCOUNT_READ_CHUNK = 100  # one BatchGetItem's worth: the deadline is checked between reads


def _registered(
    account_ids: set[str], accounts: AccountDirectory, settings: IngestSettings, deadline: Deadline
) -> set[str]:
    wanted = sorted(account_ids)
    found: set[str] = set()
    for start in range(0, len(wanted), ACCOUNT_READ_CHUNK):
        require_time(deadline, settings, settings.usage_budget, "read account registrations")
        found.update(accounts.registered(wanted[start : start + ACCOUNT_READ_CHUNK]))
    return found


def _usage_status(result: PutResult | None, record: UsageEventRecord) -> UsageStatus:
    payload_hash = record.payload_hash
    if result is None:
        return "not_stored"
    if result.stored:
        return "accepted"
    from kilo_billing.usage_events import UsageEventRecord  # noqa: PLC0415 - the usage path only

    try:
        existing = UsageEventRecord.from_item(result.existing or {}).payload_hash
    except ContractError:
        return "conflict"  # the key holds something that is not this usage
    return "duplicate" if existing == payload_hash else "conflict"


_STOP_ERRORS = (StorageUnavailableError, UnstorableEventError, OutOfTimeError)


def _put_all(
    store: EventStore, items: Sequence[Item], settings: IngestSettings, deadline: Deadline
) -> tuple[list[PutResult | None], BaseException | None]:
    """Write every item (in parallel); after the first failure, or when the time left is below one write's worst
    case, no further write starts. ``None`` marks an item not written."""
    results: list[PutResult | None] = [None] * len(items)
    failures: list[BaseException] = []
    stop = threading.Event()
    lock = threading.Lock()
    pending = iter(range(len(items)))

    def work() -> None:
        while not stop.is_set():
            with lock:
                index = next(pending, None)
            if index is None:
                return
            try:
                require_time(deadline, settings, settings.usage_budget, "store a usage event")
                results[index] = store.put_new(items[index])
            except _STOP_ERRORS as exc:
                failures.append(exc)
                stop.set()
                return

    workers = min(settings.usage_max_workers, len(items))
    if workers <= 1:
        work()
    else:
        with ThreadPoolExecutor(max_workers=workers) as pool:
            for future in [pool.submit(work) for _ in range(workers)]:
                future.result()
    return results, failures[0] if failures else None


# --- Stripe ---------------------------------------------------------------------------------------------------------


def ingest_stripe(
    request: RawRequest,
    secrets: SecretSource,
    store: EventStore,
    publisher: EventPublisher,
    settings: IngestSettings,
    now_ms: int,
    deadline: Deadline,
    annotate: Annotate = _ignore,
) -> WebhookOutcome:
    """Verify, store once, publish. A duplicate is published again: the hand-off is at-least-once, so a publish that
    failed after the store succeeded is repaired by Stripe's retry; consumers dedupe on the Stripe event id."""
    from kilo_billing.events import STRIPE_EVENT_RECEIVED, stripe_event_received_detail  # noqa: PLC0415
    from kilo_webhook_ingest import stripe_webhook  # noqa: PLC0415 - the Stripe SDK loads only on the Stripe path

    budget = settings.stripe_budget
    require_time(deadline, settings, budget, "read the Stripe webhook secrets")
    stripe_webhook.verify_signature(
        request.body,
        request.header("stripe-signature"),
        secrets.stripe_webhook_secrets(),
        settings.stripe_tolerance_seconds,
        now_ms // 1000,
    )
    # the event id on the log lines from here: a refused event's ERROR line names it (D349)
    record = stripe_webhook.parse_event(
        request.body, now_ms, settings.stripe_livemode, lambda event_id: annotate(stripe_event_id=event_id)
    )
    item = storable(record.to_item(expires_at(now_ms, settings)), settings)
    require_time(deadline, settings, budget, "store the event")
    result = store.put_new(item)
    require_time(deadline, settings, budget, "publish the event")
    publisher.publish(STRIPE_EVENT_RECEIVED, stripe_event_received_detail(record))
    return WebhookOutcome(record.event_id, record.event_type, "stored" if result.stored else "duplicate")
