"""Observability every function shares: one Logger, Metrics and Tracer per service, and every metric name in one place.

Structured JSON logs carry correlation keys (``event_id``, ``room_sid``, ``account_id``, ``period``, ``invoice_id``)
appended per request with ``correlate``; no bodies, PII or secrets. One business metric per outcome, named by
``Metric`` (the template's alarms use the same names). The Tracer is made on first use, and only when the X-Ray
SDK's subsegments are on (``POWERTOOLS_TRACE_DISABLED`` not "true"; the template's ``XRaySubsegments``): the SDK costs
about half a second of every cold start, and Lambda's active tracing records each invocation without it (D94).
Otherwise ``tracer`` gives ``NoTracer``, which has the same surface and does nothing.
"""

from __future__ import annotations

import os
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from enum import StrEnum
from functools import cache
from typing import TYPE_CHECKING, Any, Final

from aws_lambda_powertools import Logger, Metrics
from aws_lambda_powertools.metrics import MetricUnit, single_metric

if TYPE_CHECKING:
    from aws_lambda_powertools import Tracer

NAMESPACE: Final = "KiloBilling"
CORRELATION_KEYS: Final = (
    "event_id",
    "room_sid",
    "account_id",
    "period",
    "invoice_id",
    "stripe_event_id",
    "client_id",  # the usage client of a usage batch
    "alert_kind",  # the alert catalogue's kind of an alert being delivered
)


class Metric(StrEnum):
    # ingest
    WEBHOOK_STORED = "WebhookStored"
    # an event stored that rating's stream takes (source livekit or usage; never stripe): RatingNotInvokedAlarm's
    # input (D389, amended by D416)
    STORED_FOR_RATING = "StoredForRating"
    WEBHOOK_DUPLICATE = "WebhookDuplicate"
    WEBHOOK_REJECTED = "WebhookRejected"
    SIGNATURE_REJECTED = "SignatureRejected"
    # a body LiveKit signed that is not an event we read, refused (400): LiveKit never resends it - alarmed (D396)
    LIVEKIT_SIGNED_EVENT_REFUSED = "LiveKitSignedEventRefused"
    UNSTORABLE_EVENT = "UnstorableEvent"  # signed, valid, refused for good (e.g. too large to keep): alarmed
    INGEST_STORE_FAILED = "IngestStoreFailed"
    # a signed Stripe event of the other mode or of a Connect account: refused (ingest) or not applied (payments);
    # a webhook secret or endpoint is misconfigured: alarmed
    STRIPE_EVENT_FOREIGN = "StripeEventForeign"
    USAGE_RECORDED = "UsageRecorded"
    ENTITLEMENT_ALLOWED = "EntitlementAllowed"  # an entitlement check that allowed a call
    ENTITLEMENT_REFUSED = "EntitlementRefused"  # ... that refused one (reason in the log line)
    USAGE_RATE_LIMITED = "UsageRateLimited"  # a usage request over its client's per-minute limit (429)
    USAGE_DUPLICATE = "UsageDuplicate"
    USAGE_CONFLICT = "UsageConflict"
    # rating
    SESSIONS_RATED = "SessionsRated"
    USAGE_RATED = "UsageRated"
    THRESHOLDS_CROSSED = "ThresholdsCrossed"
    POISON_RECORDS = "PoisonRecords"
    STORED_EVENTS_UNDECODABLE = "StoredEventsUndecodable"  # a room refused: a stored event of it cannot be decoded
    UNATTRIBUTED_MINUTES = "UnattributedMinutes"
    SESSIONS_SWEPT = "SessionsSwept"
    # a session whose join (and left) LiveKit dropped, known from its track events once the room finished or the
    # sweeper closed it (D375): its kind unknown, not billed; counted when first written, with a warning: alarmed
    SESSIONS_JOIN_LOST = "SessionsJoinLost"
    SESSIONS_CAPPED = "SessionsCapped"  # a session LiveKit could not vouch for, closed provisionally: alarmed
    RATING_BATCH_FAILED = "RatingBatchFailed"  # a transient failure: Lambda retries the batch
    ROOMSERVICE_UNANSWERED = "RoomServiceUnanswered"  # rooms the sweeper could not ask LiveKit about
    SWEEP_FAILED = "SweepFailed"
    SWEEP_JOINS_UNWRITTEN = "SweepJoinsUnwritten"  # a synthetic join DynamoDB refused: the sweep went on (D375)
    # a join-less participant of a room RoomService says is gone before its room_finished was rated: nobody can list
    # him any more, so he is given up - not billed, named in a warning: alarmed (D393)
    SWEEP_JOINS_ABANDONED = "SweepJoinsAbandoned"
    STILL_REACHED_UNPUBLISHED = "StillReachedUnpublished"  # the bus refused HardLimitStillReached.v1: next run's retry
    # account API: a tier request refused (400) for its missing Idempotency-Key - the keyless callers (D436)
    TIER_REQUEST_KEY_MISSING = "TierRequestKeyMissing"
    # account API: a tier request refused (412) for a stale If-Match - clicks on a page drawn before the plan changed
    TIER_REQUEST_STALE = "TierRequestStale"
    # alerts
    ALERTS_SENT = "AlertsSent"  # one per message handed to SES or SNS
    ALERTS_DUPLICATE = "AlertsDuplicate"  # a redelivered event: already sent (or being sent), not sent again
    ALERTS_SKIPPED = "AlertsSkipped"  # preference "none", no contact for the channel, SMS opted out
    ALERTS_UNDELIVERABLE = "AlertsUndeliverable"  # refused for good (invalid number, rejected address): recorded
    ENFORCEMENT_ACTIONS = "EnforcementActions"  # a RoomService action (audio only, remove) or its schedule, recorded
    ALERT_SEND_RETRIED = "AlertSendRetried"  # a transient SES/SNS failure: the queue redelivers the event
    # an email SES would not send because our sending is paused (SendingPaused, AccountSuspended): also a retry (D399)
    ALERTS_SENDING_PAUSED = "AlertsSendingPaused"
    # an email not sent to an address SES reported bounced for good or complained about (D400)
    ALERTS_EMAIL_BOUNCED = "AlertsEmailBounced"
    # an email not sent to an address on SES's account-level suppression list (a required alert, D381): not
    # AlertsUndeliverable, whose alarm means refusals of ours (D410)
    ALERTS_EMAIL_SUPPRESSED = "AlertsEmailSuppressed"
    # the bounce handler: an address newly marked undeliverable (a redelivered report is not counted again; a report
    # that is not an alert email of ours fails toward the bounces DLQ, alarmed there, not counted) (D400)
    EMAILS_MARKED_UNDELIVERABLE = "EmailsMarkedUndeliverable"
    ABUSE_FLAGS = "AbuseFlags"  # an abuse or fraud heuristic flagged an account (operator alert, maybe a hold)
    OPERATOR_ALERTS = "OperatorAlerts"  # an operator alert published on the operator topic
    # an alerts invocation whose FORECAST_RECHECKS_QUEUE_URL is blank: the re-checks queue's forgery defence is off
    # (any alert put there is acted on) while every alert is still handled (D366 amended (sm)): alarmed
    FORECAST_RECHECKS_QUEUE_UNNAMED = "ForecastRechecksQueueUnnamed"
    # the month's forecast re-checks (D366) its last operator checks' run left pending (past the run's bound): not
    # sent, moot once the month is over; counted, not alarmed (the 100 % alerts still come)
    FORECAST_RECHECKS_DROPPED = "ForecastRechecksDropped"
    # invoicing
    CLOSE_JOBS_QUEUED = "CloseJobsQueued"  # one per account the period's close was fanned out to
    INVOICE_ISSUED = "InvoiceIssued"  # a close that composed and issued an invoice (not found from an earlier run)
    INVOICE_CLOSE_FAILED = "InvoiceCloseFailed"  # a close job that failed for now: the queue redelivers it
    PAYMENT_EVENT_APPLIED = "PaymentEventApplied"  # a Stripe event that changed our records
    PAYMENT_EVENT_IGNORED = "PaymentEventIgnored"  # a Stripe event about nothing of ours (or no longer stored)
    PAYMENT_FAILED = "PaymentFailed"  # PaymentFailed.v1 published
    REFUND_FAILED = "RefundFailed"  # RefundFailed.v1 published: a refund Stripe made then failed, alarmed
    STRIPE_MISCONFIGURED = "StripeMisconfigured"  # a Stripe call let pass failed on our side: alarmed
    # a Stripe event an operator has to look at (another invoice than ours, a revision asking another amount, a
    # payment short of what ours asks): alarmed (D343, D344)
    PAYMENT_EVENT_ATTENTION = "PaymentEventNeedsOperator"
    # crypto watchers (one service per chain kind: crypto-evm, crypto-solana)
    CRYPTO_TRANSFERS_SEEN = "CryptoTransfersSeen"  # merchant credits a watcher run handed to settlement
    CRYPTO_REORGS = "CryptoReorgs"  # an EVM run found its cursor's block gone and rolled back
    # how far a run stopped short of the head (blocks, or slots on Solana; 0: reached it): the next one resumes.
    # Recorded for every run under its service and chain (``record_per_chain``): each chain's alarm reads the
    # Minimum, 15 minutes of it, against that chain's tolerance (D414, amended (ops2))
    CRYPTO_WATCH_BEHIND = "CryptoWatchBehind"
    CRYPTO_PAYMENTS_FINALIZED = "CryptoPaymentsFinalized"
    CRYPTO_PAYMENTS_ORPHANED = "CryptoPaymentsOrphaned"  # a SEEN payment whose transaction left the chain
    CRYPTO_RPC_CALLS = "CryptoRpcCalls"  # JSON-RPC requests per run (the benchmark's measure, in production)
    CRYPTO_WATCH_FAILED = "CryptoWatchFailed"  # a chain's run failed (RPC down): alarmed; the next run resumes
    CRYPTO_PAYMENTS_STUCK = "CryptoPaymentsStuck"  # a payment whose finality step failed (left pending): alarmed
    # a Solana run whose listing server stayed behind its head (asked 3 times): nothing read, the cursor stayed;
    # alarmed when every minute's run is for 10 minutes in a row (D91 amended (s1b))
    SOLANA_LISTING_BEHIND = "SolanaListingBehind"
    # an UNATTRIBUTED credit worth less than UNATTRIBUTED_ALERT_MIN_USD (address-poisoning dust): kept on the
    # operator's list, no UnattributedCryptoPayment alert (D364)
    CRYPTO_UNATTRIBUTED_UNALERTED = "CryptoUnattributedUnalerted"


@cache
def logger(service: str) -> Logger:
    return Logger(service=service)


@cache
def metrics(service: str) -> Metrics:
    return Metrics(namespace=NAMESPACE, service=service)


class _NoSubsegment:
    def put_annotation(self, key: str, value: Any) -> None:
        """Nothing to annotate without the X-Ray SDK."""

    def put_metadata(self, key: str, value: Any, namespace: str = "default") -> None:
        """Nothing to record without the X-Ray SDK."""


class _NoProvider:
    @contextmanager
    def in_subsegment(self, name: str, **_: Any) -> Iterator[_NoSubsegment]:
        yield _NoSubsegment()


class NoTracer:
    """The Tracer's surface the functions use, doing nothing (X-Ray SDK subsegments off)."""

    provider = _NoProvider()

    def capture_lambda_handler(self, lambda_handler: Callable[..., Any] | None = None, **_: Any) -> Callable[..., Any]:
        if lambda_handler is None:
            return lambda handler: handler
        return lambda_handler


def tracing_on() -> bool:
    return os.environ.get("POWERTOOLS_TRACE_DISABLED", "false").strip().lower() != "true"


@cache
def tracer(service: str) -> Tracer | NoTracer:
    if not tracing_on():
        return NoTracer()
    from aws_lambda_powertools import Tracer  # noqa: PLC0415 - X-Ray SDK loads here, not at import

    return Tracer(service=service)


def count(service: str, name: Metric, value: int = 1) -> None:
    if value:
        metrics(service).add_metric(name=name.value, unit=MetricUnit.Count, value=value)


def count_at_once(service: str, name: Metric, value: int = 1, **dimensions: str) -> None:
    """One point of ``name`` under the dimension service (and ``dimensions``), written at once: not buffered for the
    handler's end, which a process Lambda ends (a timeout) never reaches (D421)."""
    with single_metric(
        name=name.value,
        unit=MetricUnit.Count,
        value=value,
        namespace=NAMESPACE,
        default_dimensions={"service": service},
    ) as metric:
        for dimension, dimension_value in dimensions.items():
            metric.add_dimension(name=dimension, value=dimension_value)


def record_per_chain(service: str, name: Metric, chain: str, value: int) -> None:
    """One point of ``name`` under the dimensions service and chain, written at once and zero included (unlike
    ``count``): an alarm reading its Minimum needs the runs that were fine too, and a per-chain dimension set of its
    own keeps the service's other metrics - and the alarms on them - under the service alone (D414)."""
    count_at_once(service, name, value, chain=chain)


def correlate(service: str, **keys: str | None) -> None:
    """Append correlation keys to every following log line of this invocation (empty values are left out)."""
    unknown = set(keys) - set(CORRELATION_KEYS)
    if unknown:
        raise ValueError(f"not correlation keys: {sorted(unknown)}")
    present = {name: value for name, value in keys.items() if value}
    if present:
        logger(service).append_keys(**present)
