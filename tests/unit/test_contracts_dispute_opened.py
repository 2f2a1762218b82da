"""``DisputeOpened.v1``'s ``kind`` (D359 amended (dk)): what the dispute is, carried by the event; an event published
by the old layer (no field) is still read - an escalation by its event id's prefix, anything else as a chargeback."""

from __future__ import annotations

import json
from typing import Any

import pytest
from pydantic import ValidationError

from kilo_billing.contracts import DisputeOpenedV1


def _detail(event_id: str, **more: Any) -> dict[str, Any]:
    return {
        "schema_version": 1,
        "event_id": event_id,
        "account_id": "acme",
        "invoice_id": "acme/2026-03",
        "dispute_id": "dp_A",
        "amount": "40.00",
        "occurred_at": "2026-04-10T09:00:00+00:00",
        **more,
    }


@pytest.mark.parametrize("kind", ["chargeback", "inquiry", "escalation"])
def test_given_each_kind_when_published_and_read_back_then_it_round_trips(kind: str) -> None:
    event_id = "dispute-escalated:dp_A" if kind == "escalation" else "dispute-opened:dp_A"
    sent = DisputeOpenedV1.model_validate(_detail(event_id, kind=kind))
    on_the_bus = json.loads(json.dumps(sent.model_dump()))  # EventBridge carries the detail as JSON
    assert on_the_bus["kind"] == kind
    assert DisputeOpenedV1.model_validate(on_the_bus) == sent


@pytest.mark.parametrize(
    ("event_id", "kind"),
    [
        ("dispute-opened:dp_A", "chargeback"),  # the old layer's created: no status in it, read as before
        ("dispute-escalated:dp_A", "escalation"),  # the old layer's escalation (wd7): its documented id
    ],
)
def test_given_an_event_of_the_old_layer_without_kind_then_it_is_read(event_id: str, kind: str) -> None:
    read = DisputeOpenedV1.model_validate(_detail(event_id))
    assert (read.kind, read.event_id, read.amount) == (kind, event_id, "40.00")


def test_given_a_kind_then_the_event_id_prefix_is_not_read() -> None:
    """The prefix is a fallback for events without the field only: a field given wins."""
    read = DisputeOpenedV1.model_validate(_detail("dispute-escalated:dp_A", kind="inquiry"))
    assert read.kind == "inquiry"


def test_given_an_unknown_kind_then_it_is_refused() -> None:
    with pytest.raises(ValidationError):
        DisputeOpenedV1.model_validate(_detail("dispute-opened:dp_A", kind="fraud"))
