"""A catch-up close job (``close_through``) that fails after storing an earlier month's invoice is retried by the
queue: the retry takes that month up again instead of starting after it (D336).

Figures (price book 2026-01: video $0.00072, Team $29): acme on Team by card from March 1 with 60,000 March video
minutes -> March = 29.00 fee + 10,000 over x 0.00072 = 7.20 + April's 29.00 in advance = 65.20, left open. The April
job never ran; May's job catches up April then May. April = May's 29.00 in advance (no April usage) = 29.00; May =
June's 29.00 = 29.00. 5,000 March minutes withdrawn = 5,000 x 0.00072 = 3.60 off March's amount due (a note)."""

from __future__ import annotations

from dataclasses import dataclass, replace
from decimal import Decimal
from typing import Any

import pytest

from kilo_billing.invoicing import CreditNoteStatus, InvoiceStatus
from kilo_billing.periods import Period
from kilo_invoice.logic import GATEWAY_ATTEMPTS, close_through
from kilo_invoice.ports import GatewayUnavailableError
from tests.scenarios.test_invoicing import APR, MAR, MAY, Recorder, at, seg, team_with_march_overage

JUN = Period(2026, 6)


@dataclass
class DownBus(Recorder):
    down: bool = True

    def publish(self, detail_type: str, detail: Any) -> None:
        if self.down:
            raise RuntimeError("event bus down")
        super().publish(detail_type, detail)


def _issued(world: Any) -> list[str]:
    return [detail["invoice_id"] for kind, detail in world.bus.events if kind == "InvoiceIssued.v1"]


def test_given_april_stored_then_its_issue_down_when_the_job_is_retried_then_april_is_issued_before_may() -> None:
    world = team_with_march_overage()
    assert world.close("acme", MAR).total == Decimal("65.20")
    world.gateway.fail_next = [GatewayUnavailableError("down")] * GATEWAY_ATTEMPTS  # April's issue
    with pytest.raises(GatewayUnavailableError):
        close_through(world.deps, "acme", MAY, MAY.end)
    assert world.store.invoices["acme/2026-04"].status is InvoiceStatus.DRAFT
    assert "acme/2026-05" not in world.store.invoices

    outcomes = close_through(world.deps, "acme", MAY, MAY.end)  # the queue delivers May's job again

    assert [o.period for o in outcomes] == ["2026-04", "2026-05"]
    april, may = world.store.invoices["acme/2026-04"], world.store.invoices["acme/2026-05"]
    assert (april.status, april.total) == (InvoiceStatus.OPEN, Decimal("29.00"))
    assert (may.status, may.total) == (InvoiceStatus.OPEN, Decimal("29.00"))
    assert april.gateway_id is not None
    assert _issued(world)[-2:] == ["acme/2026-04", "acme/2026-05"]


def test_given_april_stored_then_its_note_on_march_down_when_retried_then_note_made_and_april_issued() -> None:
    world = team_with_march_overage()
    march = world.close("acme", MAR)
    world.store.rate("acme", "2026-03", seg(at(1)), "video", -5_000)  # -3.60
    world.gateway.fail_next = [GatewayUnavailableError("down")] * GATEWAY_ATTEMPTS  # April's note on March
    with pytest.raises(GatewayUnavailableError):
        close_through(world.deps, "acme", MAY, MAY.end)
    note = next(iter(world.store.credit_notes.values()))
    assert (note.status, note.to_due) == (CreditNoteStatus.PENDING, Decimal("3.60"))
    assert world.store.invoices["acme/2026-04"].status is InvoiceStatus.DRAFT

    close_through(world.deps, "acme", MAY, MAY.end)

    assert world.store.credit_notes[note.credit_id].status is CreditNoteStatus.DONE
    assert world.gateway.credit_notes[note.credit_id] == (march.gateway_id, Decimal("3.60"))
    april, may = world.store.invoices["acme/2026-04"], world.store.invoices["acme/2026-05"]
    assert (april.status, april.total) == (InvoiceStatus.OPEN, Decimal("29.00"))
    assert (may.status, may.total) == (InvoiceStatus.OPEN, Decimal("29.00"))
    assert "acme/2026-04" in _issued(world)


def test_given_april_issued_but_not_announced_when_retried_then_april_is_announced_once() -> None:
    world = team_with_march_overage()
    world.close("acme", MAR)
    bus = DownBus()
    world.bus = bus
    with pytest.raises(RuntimeError):
        close_through(world.deps, "acme", MAY, MAY.end)
    april = world.store.invoices["acme/2026-04"]
    assert april.status is InvoiceStatus.OPEN
    assert "issued" not in april.announced

    bus.down = False
    close_through(world.deps, "acme", MAY, MAY.end)

    assert _issued(world) == ["acme/2026-04", "acme/2026-05"]
    assert "issued" in world.store.invoices["acme/2026-04"].announced


def test_given_every_month_closed_and_announced_when_a_later_job_runs_then_it_starts_after_the_last() -> None:
    world = team_with_march_overage()
    world.close("acme", MAR)
    world.close("acme", APR)
    outcomes = close_through(world.deps, "acme", MAY, MAY.end)
    assert [o.period for o in outcomes] == ["2026-05"]


def test_given_a_draft_stripe_voided_when_a_later_job_runs_then_it_is_neither_closed_again_nor_announced() -> None:
    """A review of D336: March stored as a draft (issued at Stripe, our save lost), then voided there
    (``invoice.voided``: draft -> void, no ``issued`` marker); April and May closed. June's job counted March as
    unfinished, closed March to June again and announced March as issued with status "void" (an "invoice issued"
    alert for an invoice never sent). Now a voided invoice is through: June's job closes June alone."""
    world = team_with_march_overage()
    march = world.close("acme", MAR)
    world.close("acme", APR)
    world.close("acme", MAY)
    world.store.invoices[march.invoice_id] = replace(
        world.store.invoices[march.invoice_id], status=InvoiceStatus.VOID, announced=frozenset()
    )
    world.bus.events.clear()
    outcomes = close_through(world.deps, "acme", JUN, JUN.end)
    assert [outcome.period for outcome in outcomes] == ["2026-06"]
    issued = [(d["invoice_id"], d["status"]) for kind, d in world.bus.events if kind == "InvoiceIssued.v1"]
    assert issued == [("acme/2026-06", "open")]
