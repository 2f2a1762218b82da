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


def test_given_the_turn_still_held_at_the_receive_before_the_last_then_it_waits_the_queue_timeout_past_the_lease(
    alerts_stack: AlertsStack,
) -> None:
    """The holder crashed (its 5-minute lease runs): hastened at every receive, the step would reach the dead-letter
    queue after five receives in about 25 s, its enforcement lost. The 4th of the queue's 5 receives is not hastened:
    still hidden 6 s and 300 s later, received again after the queue's 360 s, when the lease has run out."""
    from kilo_alerts.handler import lambda_handler  # noqa: PLC0415

    stack = alerts_stack.stack
    now = time.time()
    ledger = DynamoEnforcementLedger(stack.clients["dynamodb"], stack.template.physical_name("AlertsTable"))
    ledger.take_turn("acct_1", "a crashed delivery", int(now * 1000))
    SqsRemovalScheduler(stack.clients["sqs"], alerts_stack.queue_url).schedule_removal("acct_1", "2026-11", 0, "50v1")
    with time_machine.travel(now, tick=False):
        for _ in range(3):  # three receives handed back at once (as three hastened redeliveries would be)
            assert len(alerts_stack.sqs_event(visibility_timeout=0)["Records"]) == 1
        event = alerts_stack.sqs_event()
        assert [r["attributes"]["ApproximateReceiveCount"] for r in event["Records"]] == ["4"]
        failed = lambda_handler(event, LambdaContext(remaining_ms=60_000))
        assert failed == {"batchItemFailures": [{"itemIdentifier": event["Records"][0]["messageId"]}]}
    with time_machine.travel(now + 6, tick=False):
        assert alerts_stack.sqs_event()["Records"] == []
    with time_machine.travel(now + 300, tick=False):
        assert alerts_stack.sqs_event()["Records"] == []
    with time_machine.travel(now + 361, tick=False):
        again = alerts_stack.sqs_event()["Records"]
    assert [r["attributes"]["ApproximateReceiveCount"] for r in again] == ["5"]
