"""The payment-status handler driven as Lambda drives it, for the alarm tests (tests/unit/test_*_alarmed.py): the SQS
message naming a stored Stripe event, the handler run on a world's store, bus and gateway, and what it said (the
ERROR lines logged, the metrics flushed)."""

from __future__ import annotations

import json
import logging
from collections.abc import Iterator
from types import SimpleNamespace
from typing import Any

import pytest

from kilo_invoice import dependencies, payment_handler
from kilo_invoice.ports import PaymentGateway
from tests.conftest import LambdaContext
from tests.scenarios.test_card_payment_events import Events
from tests.scenarios.test_invoicing import MAR, World, team_with_march_overage


def march_paid_at_stripe() -> tuple[World, str]:
    """Team, card, 60,000 March video minutes: March (65.20) closed and paid at Stripe (the in-memory gateway), ours
    not told yet. Returns the world and March's invoice id."""
    world = team_with_march_overage()
    march = world.close("acme", MAR)
    world.gateway.settle(march.invoice_id, paid=True)
    return world, march.invoice_id


def payment_message(
    key: tuple[str, str], stripe_event_id: str, attributes: dict[str, str] | None = None, message_id: str = "m-1"
) -> dict[str, Any]:
    """The payment-events queue's SQS message naming the stored event ``key`` (Lambda's SQS record shape)."""
    pk, sk = key
    return {
        "messageId": message_id,
        "receiptHandle": message_id.replace("m-", "r-"),
        "body": json.dumps({"detail": {"key": {"pk": pk, "sk": sk}, "stripe_event_id": stripe_event_id}}),
        "attributes": attributes or {},
        "messageAttributes": {},
        "md5OfBody": "",
        "eventSource": "aws:sqs",
        "eventSourceARN": "arn:aws:sqs:us-east-1:123456789012:payment-events",
        "awsRegion": "us-east-1",
    }


def handle_stored(
    world: World,
    events: Events,
    key: tuple[str, str],
    stripe_event_id: str,
    monkeypatch: pytest.MonkeyPatch,
    *,
    gateway: PaymentGateway | None = None,
    livemode: bool = False,
    attributes: dict[str, str] | None = None,
) -> Any:
    """The payment-status handler's answer to the message naming the stored event ``key`` (``attributes``: the SQS
    record's), its dependencies ``world``'s store and bus, ``events``, ``gateway`` (``world``'s unless given) and a
    stage taking ``livemode`` events."""
    deps = SimpleNamespace(
        store=world.store,
        publisher=world.bus,
        events=events,
        gateway=world.gateway if gateway is None else gateway,
        livemode=livemode,
    )
    monkeypatch.setattr(dependencies, "payments", lambda: deps)
    message = payment_message(key, stripe_event_id, attributes)
    return payment_handler.lambda_handler({"Records": [message]}, LambdaContext())


def logged_errors(caplog: pytest.LogCaptureFixture) -> list[str]:
    """The messages logged at ERROR or above."""
    return [record.getMessage() for record in caplog.records if record.levelno >= logging.ERROR]


def _emf_definitions(out: str) -> Iterator[tuple[dict[str, Any], dict[str, Any]]]:
    """Each EMF record in ``out`` (Powertools prints CloudWatch EMF JSON lines to stdout) with each of its metric
    definitions (namespace, dimension sets, metrics)."""
    for line in out.splitlines():
        try:
            record = json.loads(line)
        except ValueError:
            continue
        if not isinstance(record, dict):
            continue
        for definition in record.get("_aws", {}).get("CloudWatchMetrics", []):
            yield record, definition


def _values(record: dict[str, Any], name: str) -> list[float]:
    value = record[name]
    return list(value) if isinstance(value, list) else [value]


def flushed_metrics(out: str) -> dict[str, float]:
    """The metrics flushed: each name's values summed."""
    flushed: dict[str, float] = {}
    for record, definition in _emf_definitions(out):
        for metric in definition["Metrics"]:
            flushed[metric["Name"]] = flushed.get(metric["Name"], 0) + sum(_values(record, metric["Name"]))
    return flushed


def flushed_points(out: str, name: str) -> list[tuple[dict[str, str], float]]:
    """Each data point of metric ``name`` flushed: its dimensions (name -> value) and its value."""
    points: list[tuple[dict[str, str], float]] = []
    for record, definition in _emf_definitions(out):
        if any(metric["Name"] == name for metric in definition["Metrics"]):
            [dimension_set] = definition["Dimensions"]
            points += [({key: record[key] for key in dimension_set}, value) for value in _values(record, name)]
    return points
