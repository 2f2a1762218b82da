"""A close adjusts earlier periods only while its one transaction stays within DynamoDB's 100 items (D311): a
period whose notes would pass it is left for the next close, as periods beyond ``MAX_ADJUSTED_PERIODS`` are.

The budget is lowered to 10 items here so that a short story reaches it (the real figure, 100, needs 24 periods).
Hand-worked (price book 2026-01: video $0.00072; Personal includes 5,000 video minutes, no fee). acme, Personal,
card, from February. February and March 10,000 video minutes each: 5,000 over x 0.00072 = 3.60 each, paid. 10,000
late minutes of each arrive: April bills both as adjustment lines, 7.20 + 7.20 = 14.40, left open. Both go away
(-7.20 each) before May's close. Each withdrawn period writes a note lowering April and the period's own note, and
names April and its own invoice as credited. May's close with both: invoice + billing + 3 watermarks + 4 notes +
3 credited invoices (February, March, April) = 12 > 10: refused on every run before. With February only:
2 + 2 + 2 + 2 = 8: it lands; June's close adjusts March: 2 + 2 + 2 + 2 = 8."""

from __future__ import annotations

from decimal import Decimal

import pytest

from kilo_billing import invoicing
from kilo_billing.invoicing import amount_due
from kilo_billing.periods import Period
from tests.scenarios.test_card_payment_events import Events
from tests.scenarios.test_credit_notes_late import _pay
from tests.scenarios.test_invoicing import APR, FEB, MAR, MAY, World, amounts, at, seg
from tests.scenarios.test_lowered_ahead import _late_on_april_and_may

JUN = Period.parse("2026-06")


def _due(world: World, invoice_id: str) -> Decimal:
    return amount_due(world.store.invoices[invoice_id], world.store.credit_notes.values())


def test_given_two_withdrawn_periods_past_the_item_budget_when_may_closes_then_one_waits_for_june(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    world, events = World(), Events()
    world.signup("acme", (at(1, 2), "personal"))
    for period, month, event in ((FEB, 2, "evt_feb"), (MAR, 3, "evt_mar")):
        world.store.rate("acme", period.key, seg(at(1, month)), "video", 10_000)
        invoice = world.close("acme", period)
        assert invoice.total == Decimal("3.60")
        _pay(world, events, invoice.invoice_id, event, 2)
    world.store.rate("acme", "2026-02", seg(at(1, 2)), "video", 10_000)  # late: 7.20
    world.store.rate("acme", "2026-03", seg(at(1, 3)), "video", 10_000)  # late: 7.20
    april = world.close("acme", APR)
    assert (amounts(april, "adjustment"), april.total) == (["7.20", "7.20"], Decimal("14.40"))
    world.store.rate("acme", "2026-02", seg(at(1, 2)), "video", -10_000)
    world.store.rate("acme", "2026-03", seg(at(1, 3)), "video", -10_000)
    monkeypatch.setattr(invoicing, "MAX_TRANSACTION_ITEMS", 10)

    world.close("acme", MAY)

    assert sorted({note.period for note in world.store.credit_notes.values()}) == ["2026-02"]
    assert _due(world, april.invoice_id) == Decimal("7.20")  # February's 7.20 asked no more; March's still

    world.close("acme", JUN)

    assert sorted({note.period for note in world.store.credit_notes.values()}) == ["2026-02", "2026-03"]
    assert _due(world, april.invoice_id) == Decimal("0.00")
    assert world.store.billing["acme"].credit == Decimal("0.00")  # February's and March's 3.60 paid for what stands


JUL = Period.parse("2026-07")
AUG = Period.parse("2026-08")


def test_given_one_period_whose_lowered_invoices_alone_pass_the_budget_then_they_are_lowered_over_the_next_closes(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """D314. Budget lowered to 6 items. March 10,000 video minutes: 3.60, paid. 10,000 late minutes billed on
    April (7.20, open), 10,000 more on May (7.20, open). All 20,000 go away (-14.40) before June's close. March alone
    would write: invoice + billing + 2 watermarks + 3 notes (on April, on May, March's) + 3 credited = 10 > 6, so
    before, every close left March (and any later period) unadjusted: April and May asked 7.20 each for ever. Now a
    close lowers what fits - invoice + billing + its own watermark + one note and its invoice = 5 (a second: 7 > 6) -
    and leaves March's watermark and the rest for the next: June lowers April (oldest first), July May, August writes
    March's note (5 + 1 credited = 6) for the nothing left: no credit (March's 3.60 paid for what stands)."""
    world, events = World(), Events()
    april, may = _late_on_april_and_may(world, events)
    world.store.rate("acme", "2026-03", seg(at(1, 3)), "video", -20_000)  # -14.40
    monkeypatch.setattr(invoicing, "MAX_TRANSACTION_ITEMS", 6)

    world.close("acme", JUN)
    assert (_due(world, april), _due(world, may)) == (Decimal("0.00"), Decimal("7.20"))
    assert "acme/2026-03/credit-2026-06" not in world.store.credit_notes  # March's note waits with its watermark

    world.close("acme", JUL)
    assert (_due(world, april), _due(world, may)) == (Decimal("0.00"), Decimal("0.00"))

    world.close("acme", AUG)
    note = world.store.credit_notes["acme/2026-03/credit-2026-08"]
    assert (note.to_due, note.to_credit, note.returned, note.uncollected) == (Decimal(0),) * 4
    assert sum(line.amount for line in note.lines) == Decimal("-14.40")  # the late lines, held once
    assert not world.store.periods[("acme", "2026-03")].unbilled  # March's watermark moved, with its note
    assert world.store.billing["acme"].credit == Decimal("0.00")
    assert sum(n.to_due for n in world.store.credit_notes.values()) == Decimal("14.40")  # lowered once each

    world.close("acme", Period.parse("2026-09"))  # nothing left: no further note on March
    assert sorted(n.credit_id for n in world.store.credit_notes.values() if n.period == "2026-03") == [
        "acme/2026-03/credit-2026-06/on-2026-04",
        "acme/2026-03/credit-2026-07/on-2026-05",
        "acme/2026-03/credit-2026-08",
    ]
