"""The local runtime wires EventBridge rules and SQS event sources from a template, on a real moto server."""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from tests.e2e import probe_handler

pytestmark = pytest.mark.e2e
TEMPLATE = Path(__file__).parent / "fixtures" / "template_eventbridge.yaml"


@pytest.fixture
def runtime(tmp_path: Path) -> Iterator[Any]:
    from kilo_dev.localstack import LocalSettings, LocalStack  # noqa: PLC0415

    probe_handler.RECEIVED.clear()
    stack = LocalStack(LocalSettings.from_env(), TEMPLATE, log=lambda _: None, log_path=tmp_path / "stack.log")
    stack.start()
    try:
        yield stack
    finally:
        stack.stop()


def test_given_an_eventbridge_rule_then_matching_events_reach_the_function_and_failures_its_dlq(runtime: Any) -> None:
    events = runtime.clients["events"]
    bus = runtime.template.physical_name("Bus")
    entry = {"EventBusName": bus, "Source": "kilo.billing.rating", "DetailType": "UsageThresholdCrossed.v1"}
    events.put_events(Entries=[entry | {"Detail": json.dumps({"account_id": "a1"})}])
    events.put_events(Entries=[entry | {"DetailType": "SomethingElse.v1", "Detail": "{}"}])  # no match
    events.put_events(Entries=[entry | {"Detail": json.dumps({"fail": True})}])
    runtime.wait_idle(timeout=60)
    details = [event["detail"] for event in probe_handler.RECEIVED]
    assert details.count({"account_id": "a1"}) == 1
    assert details.count({"fail": True}) == 3  # the first try and two retries
    assert all(event["detail-type"] == "UsageThresholdCrossed.v1" for event in probe_handler.RECEIVED)
    dlq = runtime.template.ref("ProbeDeadLetterQueue")
    [dead] = runtime.clients["sqs"].receive_message(QueueUrl=dlq, MaxNumberOfMessages=10)["Messages"]
    assert json.loads(dead["Body"])["detail"] == {"fail": True}


def test_given_an_sqs_event_source_then_batches_are_delivered_and_partial_failures_stay_on_the_queue(
    runtime: Any,
) -> None:
    sqs = runtime.clients["sqs"]
    queue = runtime.template.ref("WorkQueue")
    for body in ("a", "poison", "b"):
        sqs.send_message(QueueUrl=queue, MessageBody=body)
    source = runtime.queues[0]
    runtime._stop.set()  # drive the source by hand from here
    runtime._threads[1].join(timeout=5)
    delivered = 0
    for _ in range(5):
        delivered += source.poll_once()
        if delivered >= 3:
            break
    bodies = [record["body"] for event in probe_handler.RECEIVED for record in event.get("Records", [])]
    assert sorted(set(bodies)) == ["a", "b", "poison"]
    assert source.processed == 2  # the poison message was reported failed: not deleted
    attributes = sqs.get_queue_attributes(QueueUrl=queue, AttributeNames=["ApproximateNumberOfMessagesNotVisible"])
    assert attributes["Attributes"]["ApproximateNumberOfMessagesNotVisible"] == "1"
