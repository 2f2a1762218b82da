"""``CryptoBillReopened.v1`` (D434): a crypto bill open again because a payment of it is stuck. The contract as the
crypto function publishes it and the alerts function reads it: JSON on the bus and back, its required figures, the
optional invoice number."""

from __future__ import annotations

import json
from typing import Any

import pytest
from pydantic import ValidationError

from kilo_billing.contracts import CryptoBillReopenedV1


def _detail(**more: Any) -> dict[str, Any]:
    return {
        "schema_version": 1,
        "event_id": "crypto-reopened:acme/2026-11:ethereum:0xc2:0@0xblock",
        "account_id": "acme",
        "invoice_id": "acme/2026-11",
        "total": "100.00",
        "amount_usd": "40.00",
        "stuck_usd": "40.00",
        "stuck_tx_ids": ["0xc2"],
        "occurred_at": "2026-12-02T09:00:00+00:00",
        **more,
    }


def test_given_a_reopen_when_published_and_read_back_then_it_round_trips() -> None:
    sent = CryptoBillReopenedV1.model_validate(_detail(number="KB-0042"))
    on_the_bus = json.loads(json.dumps(sent.model_dump(mode="json")))  # EventBridge carries the detail as JSON
    assert on_the_bus == _detail(number="KB-0042")
    assert CryptoBillReopenedV1.model_validate(on_the_bus) == sent
    assert CryptoBillReopenedV1.DETAIL_TYPE == "CryptoBillReopened.v1"


def test_given_no_invoice_number_then_it_is_read_without_one() -> None:
    read = CryptoBillReopenedV1.model_validate(_detail())
    assert (read.number, read.amount_usd, read.stuck_tx_ids) == (None, "40.00", ("0xc2",))


@pytest.mark.parametrize("missing", ["total", "amount_usd", "stuck_usd", "occurred_at", "invoice_id"])
def test_given_a_figure_missing_then_it_is_refused(missing: str) -> None:
    detail = _detail()
    del detail[missing]
    with pytest.raises(ValidationError):
        CryptoBillReopenedV1.model_validate(detail)


def test_given_a_dropped_payments_reopen_then_its_lost_fields_round_trip_and_a_stalls_detail_has_none() -> None:
    """D434 amended (hcw): a reopen told for a payment dropped with its block carries ``lost`` and that payment's USD
    and transaction; a stall's detail leaves the three out, as before them (an alerts function not yet updated still
    reads it)."""
    dropped = _detail(
        stuck_usd="0.00", stuck_tx_ids=[], number=None, lost="dropped", lost_usd="40.00", lost_tx_id="0xc2"
    )
    sent = CryptoBillReopenedV1.model_validate(dropped)
    on_the_bus = json.loads(json.dumps(sent.model_dump(mode="json")))
    assert on_the_bus == dropped
    assert CryptoBillReopenedV1.model_validate(on_the_bus) == sent
    stall = CryptoBillReopenedV1.model_validate(_detail()).model_dump(mode="json")
    assert {"lost", "lost_usd", "lost_tx_id"} & stall.keys() == set()
