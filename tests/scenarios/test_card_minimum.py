"""Card invoices below Stripe's minimum charge ($0.50 USD; D126): Stripe would mark such an invoice paid without
charging it and move the amount to the customer's Stripe balance. Ours keeps it (``carried``, never sent, never
"paid") and bills its total once, as a ``carried`` line on the account's next invoice. Figures worked by hand
(price book 2026-01: audio $0.00036, video $0.00072; Personal includes 10,000 audio and 5,000 video minutes)."""

from __future__ import annotations

from decimal import Decimal

import pytest

from kilo_billing.invoicing import CARRIED, BillingMethod, BillingState, InvoiceStatus, Line
from kilo_billing.periods_items import line_from_json, line_to_json
from tests.scenarios.test_invoicing import APR, MAR, MAY, World, amounts, at, seg


@pytest.fixture
def world() -> World:
    return World()


def test_given_a_card_month_of_36_cents_then_kept_as_carried_and_billed_once_on_the_next(world: World) -> None:
    world.signup("solo", (at(1), "personal"))
    world.store.rate("solo", "2026-03", seg(at(1)), "audio", 11_000)  # 1,000 over x 0.00036 = 0.36
    march = world.close("solo", MAR)
    assert march.total == Decimal("0.36")
    assert march.status is InvoiceStatus.CARRIED  # not paid: nothing was collected
    assert [s for s, _ in march.transitions] == ["draft", "carried"]
    assert world.gateway.calls == []  # never sent to Stripe
    assert world.bus.events[0][1]["status"] == "carried"
    world.store.rate("solo", "2026-04", seg(at(1, 4)), "video", 5_500)  # 500 over x 0.00072 = 0.36
    april = world.close("solo", APR)
    assert amounts(april, "carried") == ["0.36"]
    [carried] = [line for line in april.lines if line.kind == "carried"]
    assert carried.source == "solo/2026-03"
    assert "KB-solo-00001" in carried.description
    assert april.total == Decimal("0.72")  # 0.36 usage + 0.36 carried
    assert april.status is InvoiceStatus.OPEN
    assert world.gateway.invoices[april.invoice_id].request.total == Decimal("0.72")
    may = world.close("solo", MAY)  # nothing used, nothing left to carry: the 0.36 is never billed again
    assert amounts(may, "carried") == []
    assert may.total == Decimal("0.00")
    assert may.status is InvoiceStatus.PAID


def test_given_carried_months_below_the_minimum_then_carried_on_until_the_total_reaches_it(world: World) -> None:
    world.signup("solo", (at(1), "personal"))
    world.store.rate("solo", "2026-03", seg(at(1)), "audio", 11_000)  # 0.36
    assert world.close("solo", MAR).status is InvoiceStatus.CARRIED
    world.store.rate("solo", "2026-04", seg(at(1, 4)), "video", 5_139)  # 139 x 0.00072 = 0.10008 -> 0.10
    april = world.close("solo", APR)
    assert april.total == Decimal("0.46")  # 0.10 + 0.36 carried: still below 0.50
    assert april.status is InvoiceStatus.CARRIED
    may = world.close("solo", MAY)  # a month of nothing: April's 0.46 (March's 0.36 inside it) carried once
    assert [line.source for line in may.lines if line.kind == "carried"] == ["solo/2026-04"]
    assert may.total == Decimal("0.46")
    assert may.status is InvoiceStatus.CARRIED
    assert world.gateway.calls == []
    world.store.rate("solo", "2026-06", seg(at(1, 6)), "audio", 10_100)  # 100 x 0.00036 = 0.036 -> 0.04
    june = world.close("solo", MAY.next())
    assert june.total == Decimal("0.50")  # 0.04 + 0.46: the minimum is charged
    assert june.status is InvoiceStatus.OPEN
    assert world.gateway.invoices[june.invoice_id].request.total == Decimal("0.50")


def test_given_credit_leaves_less_than_the_minimum_then_the_rest_is_carried(world: World) -> None:
    world.signup("solo", (at(1), "personal"))
    world.store.billing["solo"] = BillingState(credit=Decimal("1.00"))
    world.store.rate("solo", "2026-03", seg(at(1)), "video", 7_000)  # 2,000 over x 0.00072 = 1.44, credit -1.00
    march = world.close("solo", MAR)
    assert amounts(march, "credit") == ["-1.00"]
    assert march.total == Decimal("0.44")
    assert march.status is InvoiceStatus.CARRIED
    april = world.close("solo", APR)
    assert april.total == Decimal("0.44")  # carried again, nothing lost
    assert april.status is InvoiceStatus.CARRIED


def test_given_a_crypto_bill_below_the_card_minimum_then_left_open_as_usual(world: World) -> None:
    world.signup("coin", (at(1), "personal"), method=BillingMethod.CRYPTO)
    world.store.rate("coin", "2026-03", seg(at(1)), "audio", 11_000)  # 0.36
    march = world.close("coin", MAR)
    assert march.total == Decimal("0.36")
    assert march.status is InvoiceStatus.OPEN  # the crypto rail has no minimum of Stripe's: not carried
    assert amounts(world.close("coin", APR), "carried") == []


def test_a_carried_line_keeps_the_invoice_it_carries_through_the_stored_form() -> None:
    line = Line(
        CARRIED, "Carried from invoice KB-solo-00001 (2026-03)", Decimal("0.36"), "2026-03", source="solo/2026-03"
    )
    assert line_from_json(line_to_json(line)).source == "solo/2026-03"
    assert line_from_json(line_to_json(line)) == line
