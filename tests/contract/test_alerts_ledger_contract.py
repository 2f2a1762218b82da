"""One contract, two implementations of the alerts delivery ledger: the in-memory fake and DynamoDB (moto, the
template's alerts table)."""

from __future__ import annotations

from dataclasses import replace

import pytest

from kilo_alerts.model import Channel, Delivery, Outcome
from kilo_alerts.ports import DeliveryLedger
from tests.conftest import Stack
from tests.unit.alerts_fakes import InMemoryLedger

T0 = 1_790_000_000_000
LEASE = 60_000


@pytest.fixture(params=["fake", "dynamodb"])
def ledger(request: pytest.FixtureRequest) -> DeliveryLedger:
    if request.param == "fake":
        return InMemoryLedger()
    from kilo_alerts.adapters import DynamoDeliveryLedger  # noqa: PLC0415

    stack: Stack = request.getfixturevalue("stack")
    return DynamoDeliveryLedger(stack.clients["dynamodb"], stack.template.physical_name("AlertsTable"))


def delivery(channel: Channel = Channel.EMAIL, at_ms: int = T0, key: str = "video:80") -> Delivery:
    return Delivery("org:7@x", "2026-11", "allowance_threshold", key, channel, Outcome.RETRY, "", at_ms, event_id="e1")


def test_given_nothing_then_the_first_claim_wins_and_the_second_does_not(ledger: DeliveryLedger) -> None:
    assert ledger.claim(delivery(), LEASE) == 1
    assert ledger.claim(delivery(at_ms=T0 + 1), LEASE) is None
    assert ledger.claim(delivery(Channel.SMS), LEASE) == 1  # per channel
    assert ledger.claim(delivery(key="video:100"), LEASE) == 1  # per threshold


def test_given_a_recorded_outcome_then_it_reads_back_and_is_never_claimed_again(ledger: DeliveryLedger) -> None:
    attempts = ledger.claim(delivery(), LEASE)
    sent = replace(delivery(), outcome=Outcome.SENT, recipient="a@example.com", detail="msg-1", attempts=attempts or 0)
    ledger.record(sent)
    assert ledger.claim(delivery(at_ms=T0 + 10 * LEASE), LEASE) is None
    assert ledger.deliveries("org:7@x") == [sent]
    assert ledger.deliveries("org:7@x", "2026-10") == []


def test_given_a_released_claim_then_it_is_claimed_again_with_the_next_attempt(ledger: DeliveryLedger) -> None:
    ledger.claim(delivery(), LEASE)
    ledger.release(replace(delivery(), detail="Throttling"))
    assert ledger.claim(delivery(at_ms=T0 + 5), LEASE) == 2


def test_given_a_stale_claim_then_it_is_taken_over_after_the_lease_only(ledger: DeliveryLedger) -> None:
    ledger.claim(delivery(), LEASE)
    assert ledger.claim(delivery(at_ms=T0 + LEASE), LEASE) is None
    assert ledger.claim(delivery(at_ms=T0 + LEASE + 1), LEASE) == 2
