"""Lambda handler for the events table's stream: decode, rate the batch (one logic call), report poison records.

Transient failures (DynamoDB, EventBridge, a concurrent batch) are logged, counted and raised: Lambda retries the
batch (bisecting it) and, after ``MaximumRetryAttempts``, sends its coordinates to the stream's on-failure queue
(``kilo-billing rating replay`` re-rates them). Records that cannot be rated - undecodable, an unknown meter, or
refused by DynamoDB for good - go to the poison queue as their events' keys with the reason, so the rest of the batch
is rated; once the cause is fixed, ``kilo-billing rating replay`` on the poison queue re-rates them.
"""

from __future__ import annotations

import time
from typing import Any

from aws_lambda_powertools.utilities.typing import LambdaContext

from kilo_billing import observability
from kilo_billing.observability import Metric, count
from kilo_rate_usage import dependencies
from kilo_rate_usage.logic import rate_batch
from kilo_rate_usage.model import Billing
from kilo_rate_usage.sessions import UNKNOWN_KIND
from kilo_rate_usage.stream import decode_records

SERVICE = "rate-usage"
logger = observability.logger(SERVICE)
metrics = observability.metrics(SERVICE)


@metrics.log_metrics
@logger.inject_lambda_context(clear_state=True)
@observability.tracer(SERVICE).capture_lambda_handler(capture_response=False)
def lambda_handler(event: dict[str, Any], context: LambdaContext) -> dict[str, Any]:
    deps = dependencies.rating()
    records = event.get("Records", [])
    batch = decode_records(records)
    rooms = {record.room_sid for record in batch.livekit if record.room_sid}
    if len(rooms) == 1:
        observability.correlate(SERVICE, room_sid=next(iter(rooms)))
    try:
        with observability.tracer(SERVICE).provider.in_subsegment("## rate_batch") as segment:
            segment.put_annotation("records", str(len(records)))
            outcome = rate_batch(
                batch.livekit, batch.usage, deps.repo, deps.publisher, deps.config, int(time.time() * 1000)
            )
    except Exception:
        logger.exception("batch not rated; Lambda retries it, then sends its coordinates to the on-failure queue")
        count(SERVICE, Metric.RATING_BATCH_FAILED)
        raise
    poison = [(bad.index, bad.reason) for bad in batch.poison]
    for rejected in outcome.rejected:
        refused_rooms = {rejected.room_sid} if rejected.room_sid else set()
        refused_usage = {rejected.usage_key} if rejected.usage_key is not None else set()
        poison += [(index, rejected.reason) for index in batch.indexes_of(refused_rooms, refused_usage)]
    for index, reason in poison:
        keys = (records[index].get("dynamodb") or {}).get("Keys", {})
        deps.poison.send(keys, reason)
        logger.error("record sent to the poison queue", extra={"reason": reason, "keys": keys})
    count(SERVICE, Metric.SESSIONS_RATED, outcome.sessions_changed)
    count(SERVICE, Metric.USAGE_RATED, outcome.usage_rated)
    count(SERVICE, Metric.THRESHOLDS_CROSSED, outcome.thresholds)
    count(SERVICE, Metric.POISON_RECORDS, len(poison))
    count(SERVICE, Metric.UNATTRIBUTED_MINUTES, outcome.unattributed_minutes)
    count(SERVICE, Metric.SESSIONS_JOIN_LOST, len(outcome.sessions_join_lost))
    for lost in outcome.sessions_join_lost:
        logger.warning(
            "a session whose participant_joined was lost: kind unknown, not billed (D375)"
            if lost.billing is Billing.NOT_BILLED and lost.kind == UNKNOWN_KIND
            else "a session whose participant_joined was lost: billed from its earliest event (D375)",
            extra={
                "room_sid": lost.room_sid,
                "participant_sid": lost.participant_sid,
                "identity": lost.identity,
                "first_event_ms": lost.start_ms,
                "end_ms": lost.end_ms,
            },
        )
    if outcome.unattributed_minutes:
        logger.warning(
            "usage without a billing account kept as unattributed", extra={"minutes": outcome.unattributed_minutes}
        )
    logger.info(
        "batch rated",
        extra={
            "records": len(records),
            "rooms": outcome.rooms,
            "sessions_changed": outcome.sessions_changed,
            "usage_rated": outcome.usage_rated,
            "aggregates_touched": outcome.aggregates_touched,
            "thresholds": outcome.thresholds,
            "writes": outcome.writes,
            "poison": len(poison),
        },
    )
    return {"batchItemFailures": []}
