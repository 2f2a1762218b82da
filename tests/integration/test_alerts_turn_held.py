"""A delivery that finds the account's enforcement turn held (D182) comes back in seconds, not after the alerts
queue's 360 s visibility timeout (review B finding 4, D209): through the alerts handler on moto, the delayed
removal step's message (sent by the function's own scheduler) received while another delivery holds the turn."""

from __future__ import annotations

import time

import time_machine

from kilo_alerts.adapters import DynamoEnforcementLedger, SqsRemovalScheduler
from tests.conftest import AlertsStack, LambdaContext


def test_given_the_enforcement_turn_held_then_the_step_is_received_again_after_seconds_not_the_queue_timeout(
    alerts_stack: AlertsStack,
) -> None:
    from kilo_alerts.handler import lambda_handler  # noqa: PLC0415

    stack = alerts_stack.stack
    now = time.time()
    ledger = DynamoEnforcementLedger(stack.clients["dynamodb"], stack.template.physical_name("AlertsTable"))
    ledger.take_turn("acct_1", "another delivery", int(now * 1000))  # restricting the account's participants now
    SqsRemovalScheduler(stack.clients["sqs"], alerts_stack.queue_url).schedule_removal("acct_1", "2026-11", 0, "50v1")
    with time_machine.travel(now, tick=False):
        event = alerts_stack.sqs_event()  # received with the queue's own visibility timeout (360 s)
        assert len(event["Records"]) == 1
        failed = lambda_handler(event, LambdaContext(remaining_ms=60_000))
        assert failed == {"batchItemFailures": [{"itemIdentifier": event["Records"][0]["messageId"]}]}
        assert alerts_stack.sqs_event()["Records"] == []  # not at once
    with time_machine.travel(now + 6, tick=False):  # 360 s before this change
        again = alerts_stack.sqs_event()["Records"]
    assert [r["messageId"] for r in again] == [event["Records"][0]["messageId"]]
