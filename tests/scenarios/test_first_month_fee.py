"""The first invoice after a sign-up bills the first month's fee as what it is (Given/When/Then; D164): a
first-month fee, prorated from the sign-up - not a "tier change proration", since no tier changed - in our invoice's
lines, the processor's line descriptions, the account API's invoice JSON (which the dashboard's receipt shows) and
the revenue report's fees. Figures worked by hand (price book 2026-01: Team $29 with 50,000 video minutes, Enterprise
$99, video $0.00072; March 2026 has 31 days)."""

from __future__ import annotations

from datetime import UTC, datetime
from decimal import Decimal
from typing import cast

from kilo_billing.catalog import default_catalog
from kilo_billing.invoicing import InvoiceRecord
from kilo_billing.reports import account_revenue
from kilo_invoice.logic import gateway_request
from tests.scenarios.test_invoicing import APR, MAR, World, amounts, at, seg


def _descriptions(invoice: InvoiceRecord, kind: str) -> list[str]:
    return [line.description for line in invoice.lines if line.kind == kind]


def test_given_a_team_signup_on_march_10_then_the_first_invoice_bills_a_first_month_fee_from_the_signup() -> None:
    world = World()
    world.signup("new", (at(10), "team"))
    world.store.rate("new", "2026-03", seg(at(10)), "video", 80_000)
    march = world.close("new", MAR)
    # 22 of 31 days on Team: 29 x 22/31 = 20.5806.. -> 20.58; nothing was billed in advance for March
    assert amounts(march, "fee_first_month") == ["20.58"]
    assert amounts(march, "fee_proration") == []
    assert _descriptions(march, "fee_first_month") == [
        "First-month fee 2026-03 from sign-up on 2026-03-10 00:00 UTC: "
        "Team 2026-03-10 00:00 to 2026-04-01 00:00 UTC 20.58 of 29.00 a month"
    ]
    # allowance 50,000 x 22/31 = 35,483.87 -> 35,484; 44,516 x 0.00072 = 32.05; April's fee in advance 29.00
    assert march.total == Decimal("81.63")
    assert not any("Tier change" in line.description for line in march.lines)
    # the processor's invoice item says the same (an amount, no price: a prorated fee is not quantity x unit price)
    sent = [line for line in gateway_request(march, "cus_1").lines if line.metadata["kind"] == "fee_first_month"]
    assert [(line.description, line.amount, line.quantity) for line in sent] == [
        (_descriptions(march, "fee_first_month")[0], Decimal("20.58"), None)
    ]
    assert world.gateway.invoices[march.invoice_id].request.total == Decimal("81.63")
    # the account API's invoice (and the dashboard's receipt, which lists each line's description)
    lines = cast("list[dict[str, object]]", march.as_json()["lines"])
    shown = [line for line in lines if line["kind"] == "fee_first_month"]
    assert [(line["description"], line["amount"]) for line in shown] == [
        (_descriptions(march, "fee_first_month")[0], "20.58")
    ]
    # the revenue report counts it with the fees: 20.58 March + 29.00 April in advance
    report = account_revenue(world.store.ledger("new"), MAR, default_catalog())
    assert report.figures.fees == Decimal("49.58")
    # April: a month like any other - its fee was billed in advance, nothing first-month about it
    april = world.close("new", APR)
    assert (amounts(april, "fee_first_month"), amounts(april, "fee_proration")) == ([], [])
    assert april.total == Decimal("29.00")


def test_given_a_signup_and_an_upgrade_in_the_first_month_then_one_first_month_line_names_both_tiers() -> None:
    world = World()
    world.signup("grow", (at(10), "team"), (at(20), "enterprise"))
    march = world.close("grow", MAR)
    # Team 10 of 31 days: 29 x 10/31 = 9.354.. -> 9.35; Enterprise 12 of 31: 99 x 12/31 = 38.322.. -> 38.32
    assert amounts(march, "fee_first_month") == ["47.67"]
    assert _descriptions(march, "fee_first_month") == [
        "First-month fee 2026-03 from sign-up on 2026-03-10 00:00 UTC: "
        "Team 2026-03-10 00:00 to 2026-03-20 00:00 UTC 9.35 of 29.00 a month; "
        "Enterprise 2026-03-20 00:00 to 2026-04-01 00:00 UTC 38.32 of 99.00 a month"
    ]
    assert march.total == Decimal("146.67")  # 47.67 + April's 99.00 in advance


def test_given_a_signup_on_the_first_instant_then_the_whole_fee_is_the_first_month_fee() -> None:
    world = World()
    world.signup("acme", (at(1), "team"))
    march = world.close("acme", MAR)
    assert _descriptions(march, "fee_first_month") == [
        "First-month fee 2026-03 from sign-up on 2026-03-01 00:00 UTC: Team 29.00"
    ]
    assert march.total == Decimal("58.00")  # March 29.00 + April 29.00 in advance


def test_given_a_signup_before_the_first_price_book_then_its_first_billed_month_is_the_first_month_fee() -> None:
    world = World()
    world.signup("old", (datetime(2025, 11, 15, tzinfo=UTC), "team"))  # price books start in January 2026
    january = world.close("old", MAR.previous().previous())
    assert _descriptions(january, "fee_first_month") == ["First-month fee 2026-01: Team 29.00"]
    assert january.total == Decimal("58.00")


def test_given_an_upgrade_after_the_first_month_then_it_is_still_a_tier_change_proration() -> None:
    world = World()
    world.signup("grow", (at(1, 2), "team"), (at(11), "enterprise"))
    world.close("grow", MAR.previous())
    march = world.close("grow", MAR)
    # Team 29 x 10/31 -> 9.35, Enterprise 99 x 21/31 -> 67.06; 76.41 due - 29.00 billed in advance = 47.41
    assert amounts(march, "fee_proration") == ["47.41"]
    assert _descriptions(march, "fee_proration") == [
        "Tier change proration 2026-03: fees due 76.41, billed in advance 29.00"
    ]
    assert amounts(march, "fee_first_month") == []
