"""The local runtime on a real moto server, from a small template: EventBridge rules, SQS event sources and schedules
are wired from the template and behave as AWS's do; the gateway takes many clients at once; a dead moto server stops
the stack with an error naming it. The runtime is started with ``autopoll=False``: each test drives the event sources
and the schedules itself through the runtime's public methods, so nothing runs behind its back."""

from __future__ import annotations

import http.client
import json
import os
import signal
import socket
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from tests.e2e import probe_handler

pytestmark = pytest.mark.e2e
TEMPLATE = Path(__file__).parent / "fixtures" / "template_eventbridge.yaml"
T0 = 1_794_787_200  # 2026-11-16T00:00:00Z, the stack clock's start in these tests


@pytest.fixture
def runtime(tmp_path: Path) -> Iterator[Any]:
    from kilo_dev.localstack import LocalSettings, LocalStack  # noqa: PLC0415

    probe_handler.RECEIVED.clear()
    stack = LocalStack(
        LocalSettings.from_env(), TEMPLATE, log=lambda _: None, log_path=tmp_path / "stack.log", autopoll=False
    )
    stack.start()
    try:
        yield stack
    finally:
        stack.stop()


def drain(runtime: Any, rounds: int = 5) -> None:
    for _ in range(rounds):
        runtime.poll_once(flush=True)


def test_given_an_eventbridge_rule_then_matching_events_reach_the_function_and_failures_its_destination(
    runtime: Any,
) -> None:
    events = runtime.clients["events"]
    bus = runtime.template.physical_name("Bus")
    entry = {"EventBusName": bus, "Source": "kilo.billing.rating", "DetailType": "UsageThresholdCrossed.v1"}
    events.put_events(Entries=[entry | {"Detail": json.dumps({"account_id": "a1"})}])
    events.put_events(Entries=[entry | {"DetailType": "SomethingElse.v1", "Detail": "{}"}])  # no match
    events.put_events(Entries=[entry | {"Detail": json.dumps({"fail": True})}])
    runtime.wait_idle(timeout=60)
    details = [event["detail"] for event in probe_handler.RECEIVED]
    assert details.count({"account_id": "a1"}) == 1
    assert details.count({"fail": True}) == 2  # the first try and the function's one retry (EventInvokeConfig)
    assert all(event["detail-type"] == "UsageThresholdCrossed.v1" for event in probe_handler.RECEIVED)
    dlq = runtime.template.ref("ProbeDeadLetterQueue")
    [dead] = runtime.clients["sqs"].receive_message(QueueUrl=dlq, MaxNumberOfMessages=10)["Messages"]
    record = json.loads(dead["Body"])  # Lambda's invocation record
    assert record["requestPayload"]["detail"] == {"fail": True}
    assert record["requestContext"]["condition"] == "RetriesExhausted"


def test_given_an_sqs_event_source_then_batches_are_delivered_and_partial_failures_stay_on_the_queue(
    runtime: Any,
) -> None:
    sqs = runtime.clients["sqs"]
    queue = runtime.template.ref("WorkQueue")
    for body in ("a", "poison", "b"):
        sqs.send_message(QueueUrl=queue, MessageBody=body)
    [source] = runtime.queues
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


def test_given_a_schedule_whose_run_fails_then_the_functions_invoke_config_retries_it_then_its_destination(
    runtime: Any,
) -> None:
    """As in AWS: the scheduler hands the run to Lambda asynchronously, so a function error follows the function's
    EventInvokeConfig (one retry, then its on-failure queue); the schedule's RetryPolicy (5) and DeadLetterConfig are
    for runs the scheduler could not hand over at all, and its queue stays empty."""
    [schedule] = runtime.schedules
    assert (schedule.every_seconds, schedule.invoke.max_retries, schedule.invoke.max_age_seconds) == (3600, 1, 21_600)
    runtime.clock.set(T0)
    runtime.tick_schedules()  # arms
    runtime.clock.set(T0 + 3600)
    runtime.tick_schedules()  # the run: fails
    deadline = time.monotonic() + 10
    while schedule.pending and time.monotonic() < deadline:  # its one retry, after a short backoff
        time.sleep(0.05)
        runtime.tick_schedules()
    runs = [event for event in probe_handler.RECEIVED if event.get("detail", {}).get("from") == "schedule"]
    assert runs == [{"detail": {"fail": True, "from": "schedule"}, "time": "2026-11-16T01:00:00Z"}] * 2
    assert (schedule.fired, schedule.failures, schedule.dead_lettered, schedule.pending) == (1, 2, 1, [])
    sqs = runtime.clients["sqs"]
    [dead] = sqs.receive_message(QueueUrl=runtime.template.ref("ProbeDeadLetterQueue"))["Messages"]
    record = json.loads(dead["Body"])
    assert record["requestPayload"] == runs[0]
    assert record["responsePayload"] == {"errorMessage": "asked to fail", "errorType": "RuntimeError"}
    assert record["requestContext"]["approximateInvokeCount"] == 2
    assert "Messages" not in sqs.receive_message(QueueUrl=runtime.template.ref("ScheduleDeadLetterQueue"))


def test_given_64_clients_connecting_at_once_then_the_gateway_accepts_and_answers_every_one() -> None:
    from kilo_dev.localstack import Gateway  # noqa: PLC0415

    gateway = Gateway({})  # bound and listening, not accepting yet
    serving = threading.Thread(target=gateway.serve_forever, daemon=True)
    try:
        # all 64 connect before the gateway accepts any: the kernel holds them in the listen backlog (with
        # socketserver's default backlog of 5, the rest would wait for a SYN retry and miss this timeout)
        port = gateway.server_address[1]
        sockets = [socket.create_connection(("127.0.0.1", port), timeout=0.5) for _ in range(64)]
        serving.start()
        statuses: list[int] = []

        def ask(sock: socket.socket) -> None:
            connection = http.client.HTTPConnection("127.0.0.1", port, timeout=10)
            connection.sock = sock
            connection.request("GET", "/nowhere")
            statuses.append(connection.getresponse().status)
            connection.close()

        threads = [threading.Thread(target=ask, args=(sock,)) for sock in sockets]
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join(timeout=20)
        assert statuses == [404] * 64
    finally:
        if serving.is_alive():
            gateway.shutdown()
        gateway.server_close()


def test_given_the_moto_server_killed_then_the_stack_stops_with_an_error_naming_it(runtime: Any) -> None:
    from kilo_dev.localstack import StackError  # noqa: PLC0415

    pid, port = runtime.moto.pid, runtime.gateway.server_address[1]
    os.kill(pid, signal.SIGKILL)  # the stack started it
    deadline = time.monotonic() + 10
    while runtime.failure is None and time.monotonic() < deadline:
        time.sleep(0.05)
    assert runtime.failure == (
        f"the moto server (pid {pid}, port {runtime.moto.port}) was killed by SIGKILL; its output is in "
        f"{runtime.moto.log_path}; the local stack has stopped"
    )
    with pytest.raises(StackError, match=r"moto server .* was killed by SIGKILL"):
        runtime.wait_idle(timeout=5)
    with pytest.raises(StackError):
        runtime.poll_once()
    with socket.socket() as probe:  # the gateway no longer listens
        assert probe.connect_ex(("127.0.0.1", port)) != 0
