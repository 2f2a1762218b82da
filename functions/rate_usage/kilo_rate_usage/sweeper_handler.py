"""Scheduled handler: sweep open sessions (gone from LiveKit: swept; not vouched for too long: capped, alarmed), then
check budgets and hard limits against the calls still going on (``logic.check_running_limits``)."""

from __future__ import annotations

import time
from collections.abc import Sequence
from datetime import datetime
from typing import Any

from aws_lambda_powertools.utilities.typing import LambdaContext

from kilo_billing import observability
from kilo_billing.observability import Metric, count, count_at_once
from kilo_rate_usage import dependencies
from kilo_rate_usage.logic import check_running_limits
from kilo_rate_usage.model import CAPPED
from kilo_rate_usage.sweeper import run_sweep

SERVICE = "rate-usage-sweeper"
logger = observability.logger(SERVICE)
metrics = observability.metrics(SERVICE)


def _scheduled_ms(event: object) -> int | None:
    """The run's scheduled time (EventBridge Scheduler's ``<aws.scheduler.scheduled-time>`` in the template's Input)."""
    stamp = event.get("scheduled_time") if isinstance(event, dict) else None
    if not isinstance(stamp, str) or not stamp:
        return None
    return int(datetime.fromisoformat(stamp.replace("Z", "+00:00")).timestamp() * 1000)


def _given_up(abandoned: Sequence[tuple[str, str]]) -> None:
    """A gone room's join-less participants, said and counted as the sweep gives them up - before it forgets the
    room's mark, so a run failing later has said them already and its retry, finding no mark, says nothing (D395).
    Counted at once, not at the handler's end: a run killed (its timeout) after it said them has counted them
    (D421)."""
    for room_sid, participant_sid in abandoned:
        logger.warning(
            "join-less participant given up: RoomService says the room is gone, its room_finished not rated - not "
            "billed unless room_finished arrives (then counted as SessionsJoinLost)",
            extra={"room_sid": room_sid, "participant_sid": participant_sid},
        )
    if abandoned:
        count_at_once(SERVICE, Metric.SWEEP_JOINS_ABANDONED, len(abandoned))


@metrics.log_metrics
@logger.inject_lambda_context(clear_state=True)
@observability.tracer(SERVICE).capture_lambda_handler(capture_response=False)
def lambda_handler(event: dict[str, Any], context: LambdaContext) -> dict[str, Any]:
    deps = dependencies.sweeper()
    config = deps.settings
    now_ms = _scheduled_ms(event) or int(time.time() * 1000)
    expires_at = now_ms // 1000 + config.raw_event_ttl_seconds
    try:
        with observability.tracer(SERVICE).provider.in_subsegment("## run_sweep"):
            outcome, answers, closes = run_sweep(
                deps.store, deps.directory, now_ms, config.sweep_policy, expires_at, give_up=_given_up
            )
    except Exception:
        logger.exception("sweep failed; Lambda retries it once, then the dead-letter queue")
        count(SERVICE, Metric.SWEEP_FAILED)
        raise
    unpublished: list[str] = []  # HardLimitStillReached.v1 the bus refused: the next run says it again
    try:
        with observability.tracer(SERVICE).provider.in_subsegment("## check_running_limits"):
            thresholds = check_running_limits(
                deps.store,
                deps.publisher,
                deps.config,
                now_ms,
                ((close.room_sid, close.participant_sid) for close in closes),
                unpublished=unpublished,
            )
    except Exception:
        logger.exception("the running-limits check failed; Lambda retries it once, then the dead-letter queue")
        count(SERVICE, Metric.SWEEP_FAILED)
        raise
    count(SERVICE, Metric.THRESHOLDS_CROSSED, thresholds)
    for reason in unpublished:
        logger.warning("HardLimitStillReached.v1 not published: the next run says it again", extra={"reason": reason})
    count(SERVICE, Metric.STILL_REACHED_UNPUBLISHED, len(unpublished))
    for room, reason in sorted(answers.unanswered.items())[:20]:
        logger.warning("RoomService gave no answer for a room", extra={"room_name": room, "reason": reason})
    for close in closes:
        line = logger.warning if close.event_type == CAPPED else logger.info
        line(
            "session capped: LiveKit could not vouch for it" if close.event_type == CAPPED else "session swept",
            extra={"room_sid": close.room_sid, "participant_sid": close.participant_sid, "at": close.created_at},
        )
    for room_sid, participant_sid, reason in outcome.unwritten_joins:
        logger.warning(
            "synthetic join refused: the participant stays unbilled until a later sweep writes it",
            extra={"room_sid": room_sid, "participant_sid": participant_sid, "reason": reason},
        )
    count(SERVICE, Metric.SWEEP_JOINS_UNWRITTEN, len(outcome.unwritten_joins))
    count(SERVICE, Metric.SESSIONS_SWEPT, outcome.swept)
    count(SERVICE, Metric.SESSIONS_CAPPED, outcome.capped)
    count(SERVICE, Metric.ROOMSERVICE_UNANSWERED, outcome.unanswered_rooms)
    summary = {
        "open": outcome.open,
        "closed": outcome.swept + outcome.capped,
        "swept": outcome.swept,
        "capped": outcome.capped,
        "listed": outcome.listed,
        "unanswered_rooms": outcome.unanswered_rooms,
        "dropped_states": outcome.dropped_states,
        "joined": outcome.joined,  # synthetic joins written for join-less participants RoomService listed (D375)
        "joins_unwritten": len(outcome.unwritten_joins),
        "joins_abandoned": len(outcome.abandoned_joins),
        # join-less participants of gone rooms whose synthetic join is stored, not yet rated: rating's (D411)
        "joins_unrated": len(outcome.unrated_joins),
        "thresholds": thresholds,
    }
    logger.info("sweep done", extra=summary)
    return summary
