"""Revenue and enterprise reports (Given/When/Then) over the in-memory ledger and session reader. Hand-worked figures:
our prices video $0.00072, audio $0.00036; LiveKit's base video $0.0006, audio $0.0003, GB $0.0001; Team $29 with
50,000 video minutes, Personal $0 with 5,000 video / 10,000 audio minutes, Enterprise $99 unlimited."""

from __future__ import annotations

from dataclasses import replace
from decimal import Decimal

from kilo_billing.catalog import default_catalog
from kilo_billing.progressive import invoice_early
from kilo_billing.reports import AccountRevenue, enterprise_report, revenue_report
from kilo_invoice.logic import apply_stripe_event, refund_invoice
from tests.report_fakes import InMemorySessionReader, session
from tests.scenarios.test_card_payment_events import Events, _paid_invoice
from tests.scenarios.test_invoicing import APR, FEB, MAR, World, at, seg
from tests.scenarios.test_progressive_billing import mid
from tests.scenarios.test_voided_invoices import _void


def month(world: World) -> None:
    world.signup("acme", (at(1, 2), "team"))
    world.signup("solo", (at(1, 2), "personal"))
    world.signup("big", (at(1, 2), "enterprise"))
    world.signup("new", (at(17), "team"))
    world.store.rate("solo", "2026-02", seg(at(1, 2)), "video", 6_000)
    for account in ("acme", "solo", "big"):
        world.close(account, FEB)
    world.store.rate("solo", "2026-02", seg(at(1, 2)), "video", 1_000)  # late usage of February
    world.store.rate("acme", "2026-03", seg(at(1)), "video", 60_000)
    world.store.rate("solo", "2026-03", seg(at(1)), "audio", 12_500)
    world.store.rate("big", "2026-03", seg(at(1)), "video", 100_000)
    world.store.rate("new", "2026-03", seg(at(17)), "video", 1_000)
    world.store.rate("unattributed", "2026-03", seg(at(1)), "video", 500)
    world.store.rate("unattributed", "2026-03", seg(at(1)), "data_transfer", 25_000_000_000)
    for account in ("acme", "solo", "big"):
        world.close(account, MAR)  # "new" is not closed yet


def figures(row: AccountRevenue) -> tuple[str, ...]:
    f = row.figures
    return tuple(str(v) for v in (f.fees, f.overage, f.adjustments, f.credit, f.total_billed, f.cost_basis, f.margin))


def test_given_a_closed_month_then_revenue_per_account_tier_and_total_with_margin() -> None:
    world = World()
    month(world)
    report = revenue_report(world.store, MAR, default_catalog())
    rows = {row.account_id: row for row in report.accounts}
    # acme: 10,000 over x 0.00072 = 7.20 + April 29.00 = 36.20; cost 60,000 x 0.0006 = 36.00
    assert figures(rows["acme"]) == ("29.00", "7.20", "0.00", "0.00", "36.20", "36.00", "0.20")
    # solo: audio 2,500 over x 0.00036 = 0.90; February's late 1,000 video: 2,000 over (1.44) - 0.72 billed = +0.72;
    # cost 12,500 x 0.0003 = 3.75 + 1,000 x 0.0006 = 0.60 -> 4.35; margin 1.62 - 4.35 = -2.73 (a loss, shown)
    assert figures(rows["solo"]) == ("0.00", "0.90", "0.72", "0.00", "1.62", "4.35", "-2.73")
    # big: April 99.00 in advance; cost 100,000 x 0.0006 = 60.00
    assert figures(rows["big"]) == ("99.00", "0.00", "0.00", "0.00", "99.00", "60.00", "39.00")
    assert (rows["new"].status, rows["new"].invoices, figures(rows["new"])[4]) == ("open", 0, "0.00")
    assert rows["new"].figures.usage.video_minutes == Decimal(1_000)
    assert (rows["acme"].status, rows["acme"].tier, rows["solo"].tier) == ("closed", "team", "personal")
    assert [row.account_id for row in report.accounts] == ["big", "solo", "acme", "new"]  # by tier, then id

    tiers = {tier.tier: tier for tier in report.tiers}
    assert (tiers["team"].accounts, str(tiers["team"].figures.total_billed)) == (2, "36.20")
    assert str(tiers["enterprise"].figures.margin) == "39.00"
    totals = report.totals
    assert (str(totals.fees), str(totals.overage), str(totals.adjustments)) == ("128.00", "8.10", "0.72")
    assert (str(totals.total_billed), str(totals.cost_basis), str(totals.margin)) == ("136.82", "100.35", "36.47")
    assert totals.usage.video_minutes == Decimal(161_000)  # 60,000 + 100,000 + 1,000 (solo's late is February's)

    # unattributed: 500 video minutes x 0.0006 = 0.30 + 25 GB x 0.0001 = 0.0025 -> 0.30
    assert (report.unattributed.usage.video_minutes, report.unattributed.usage.data_gb) == (500, Decimal("25.00"))
    assert report.unattributed.cost_basis == Decimal("0.30")


def test_given_early_invoices_then_the_period_counts_their_overage_once() -> None:
    world = World()
    world.signup("acme", (at(1, 2), "team"))
    world.close("acme", FEB)
    world.store.profiles["acme"] = replace(world.store.profiles["acme"], progressive_threshold_usd=Decimal(5))
    world.store.rate("acme", "2026-03", seg(at(1)), "video", 60_000)
    assert invoice_early(world.store, "acme", MAR, default_catalog(), lambda: mid(10)) is not None  # 7.20
    world.close("acme", MAR)  # 7.20 - 7.20 + 29.00
    [row] = revenue_report(world.store, MAR, default_catalog()).accounts
    assert (row.invoices, row.status) == (2, "closed")
    assert figures(row) == ("29.00", "7.20", "0.00", "0.00", "36.20", "36.00", "0.20")


def test_given_a_credit_note_then_the_month_that_found_it_reports_it_as_a_negative_adjustment() -> None:
    world = World()
    world.signup("solo", (at(1, 2), "personal"))
    world.store.rate("solo", "2026-02", seg(at(1, 2)), "video", 7_000)  # 2,000 over x 0.00072 = 1.44, left unpaid
    world.close("solo", FEB)
    world.store.rate("solo", "2026-02", seg(at(1, 2)), "video", -1_000)  # 1,000 over: 0.72; -0.72 off February's
    world.store.rate("solo", "2026-03", seg(at(1)), "audio", 12_500)  # 2,500 over x 0.00036 = 0.90
    world.close("solo", MAR)
    [row] = revenue_report(world.store, MAR, default_catalog()).accounts
    # the note took 0.72 off February's unpaid invoice: billed in March 0.90 - 0.72 = 0.18; cost 12,500 x 0.0003
    # = 3.75 - 1,000 x 0.0006 = 0.60 -> 3.15; margin 0.18 - 3.15 = -2.97
    assert figures(row) == ("0.00", "0.90", "-0.72", "0.00", "0.18", "3.15", "-2.97")


def test_given_sessions_then_usage_per_member_and_room_with_cost() -> None:
    reader = InMemorySessionReader(
        [
            session("RM_a", "PA_1", "alice", "big", [("2026-03", 30, 0)], room_name="standup"),
            session("RM_a", "PA_2", "bob", "big", [("2026-02", 3, 0), ("2026-03", 30, 5)], room_name="standup"),
            session("RM_b", "PA_3", "alice", "big", [("2026-03", 0, 40)], room_name="1:1"),
            session("RM_c", "PA_4", "carol", "big", [("2026-02", 12, 0)]),
            session("RM_e", "PA_6", "erin", "other", [("2026-03", 7, 0)]),
        ]
    )
    world = World()
    world.signup("big", (at(1, 2), "enterprise"))
    report = enterprise_report(reader, world.store.profiles["big"], "big", MAR, default_catalog())
    assert report.tier == "enterprise"
    # alice: 30 video + 40 audio: 30 x 0.0006 + 40 x 0.0003 = 0.018 + 0.012 = 0.03; bob: 0.018 + 0.0015 -> 0.02
    assert [(m.key, m.sessions, m.video_minutes, m.audio_minutes, str(m.cost_basis)) for m in report.members] == [
        ("alice", 2, 30, 40, "0.03"),
        ("bob", 1, 30, 5, "0.02"),
    ]
    # standup: 60 video + 5 audio = 0.036 + 0.0015 = 0.0375 -> 0.04, two people; 1:1: 40 audio = 0.012 -> 0.01
    assert [(r.key, r.participants, r.video_minutes, r.audio_minutes, str(r.cost_basis)) for r in report.rooms] == [
        ("standup (RM_a)", 2, 60, 5, "0.04"),
        ("1:1 (RM_b)", 1, 0, 40, "0.01"),
    ]
    total = report.total
    assert (total.sessions, total.video_minutes, total.audio_minutes, str(total.cost_basis)) == (3, 60, 45, "0.05")


# --- money given back, voided and carried invoices: each amount counted once, in one month --------------------------


def test_given_a_paid_refunded_invoice_and_an_unpaid_one_with_credit_notes_then_revenue_nets_each_once() -> None:
    """acme (Team): March 65.20 paid, 63.00 refunded (it keeps 2.20), then March shortened by 5,000 video minutes
    (-3.60): April's close notes 2.20 as account credit and 1.40 as already returned by the refund. solo (Personal):
    March 0.72 left unpaid, then shortened by 2,000 minutes (-0.72): the note takes 0.72 off its amount due."""
    world = World()
    events = Events()
    world.signup("acme", (at(1), "team"))
    world.signup("solo", (at(1), "personal"))
    world.store.rate("acme", "2026-03", seg(at(1)), "video", 60_000)  # 10,000 over x 0.00072 = 7.20
    world.store.rate("solo", "2026-03", seg(at(1)), "video", 6_000)  # 1,000 over x 0.00072 = 0.72
    assert world.close("acme", MAR).total == Decimal("65.20")  # 29.00 March + 7.20 + 29.00 April in advance
    assert world.close("solo", MAR).total == Decimal("0.72")
    world.gateway.settle("acme/2026-03", paid=True)
    paid = events.add("evt_paid", "invoice.paid", _paid_invoice(world))
    apply_stripe_event(world.store, world.bus, events, *paid, at(2, 4), world.gateway)
    refund_invoice(world.store, world.gateway, "acme", "acme/2026-03", Decimal("63.00"))
    world.store.rate("acme", "2026-03", seg(at(1)), "video", -5_000)  # 55,000: 3.60 over, was 7.20: -3.60
    world.store.rate("solo", "2026-03", seg(at(1)), "video", -2_000)  # 4,000: inside 5,000, was 0.72: -0.72
    assert world.close("acme", APR).total == Decimal("26.80")  # May's 29.00 - 2.20 credit
    assert world.close("solo", APR).total == Decimal("0.00")
    acme_note = world.store.credit_notes["acme/2026-03/credit-2026-04"]
    assert (acme_note.to_credit, acme_note.returned) == (Decimal("2.20"), Decimal("1.40"))
    assert world.store.credit_notes["solo/2026-03/credit-2026-04"].to_due == Decimal("0.72")

    march = {row.account_id: row for row in revenue_report(world.store, MAR, default_catalog()).accounts}
    # acme: billed 65.20, 63.00 of it refunded; cost 60,000 x 0.0006 = 36.00; margin 65.20 - 63.00 - 36.00 = -33.80
    assert figures(march["acme"]) == ("58.00", "7.20", "0.00", "0.00", "65.20", "36.00", "-33.80")
    assert march["acme"].figures.refunds == Decimal("63.00")
    # solo: 0.72 billed; cost 6,000 x 0.0006 = 3.60; margin -2.88
    assert figures(march["solo"]) == ("0.00", "0.72", "0.00", "0.00", "0.72", "3.60", "-2.88")
    april = {row.account_id: row for row in revenue_report(world.store, APR, default_catalog()).accounts}
    # acme: May's 29.00; the note -2.20 (not -3.60: 1.40 went back with the refund, counted in March); its credit
    # +2.20 and April's credit line -2.20 net 0.00; billed 26.80; cost -5,000 x 0.0006 = -3.00; margin 29.80
    assert figures(april["acme"]) == ("29.00", "0.00", "-2.20", "0.00", "26.80", "-3.00", "29.80")
    assert april["acme"].figures.refunds == Decimal("0.00")
    # solo: the note takes 0.72 off March's amount due: -0.72 billed; cost -2,000 x 0.0006 = -1.20; margin 0.48
    assert figures(april["solo"]) == ("0.00", "0.00", "-0.72", "0.00", "-0.72", "-1.20", "0.48")
    # over both months acme kept 65.20 - 63.00 + 26.80 = 29.00 and solo 0.00: billed - notes - refunds, once each
    kept = {
        account: march[account].figures.total_billed
        - march[account].figures.refunds
        + april[account].figures.total_billed
        - april[account].figures.refunds
        for account in ("acme", "solo")
    }
    assert kept == {"acme": Decimal("29.00"), "solo": Decimal("0.00")}


def test_given_a_voided_invoice_then_it_bills_nothing_and_the_fee_billed_again_counts_once() -> None:
    world = World()
    world.signup("acme", (at(1), "team"))
    world.store.rate("acme", "2026-03", seg(at(1)), "video", 60_000)
    world.close("acme", MAR)  # 65.20
    _void(world, Events(), "acme/2026-03")
    assert world.close("acme", APR).total == Decimal("58.00")  # April's fee billed again + May's in advance
    [march] = revenue_report(world.store, MAR, default_catalog()).accounts
    # nothing collected: 0.00 billed; LiveKit's cost of March's usage stays (60,000 x 0.0006 = 36.00): a loss
    assert figures(march) == ("0.00", "0.00", "0.00", "0.00", "0.00", "36.00", "-36.00")
    [april] = revenue_report(world.store, APR, default_catalog()).accounts
    assert figures(april) == ("58.00", "0.00", "0.00", "0.00", "58.00", "0.00", "58.00")


def test_given_a_carried_invoice_then_its_amount_counts_in_its_own_month_only() -> None:
    world = World()
    world.signup("solo", (at(1), "personal"))
    world.store.rate("solo", "2026-03", seg(at(1)), "audio", 11_000)  # 1,000 over x 0.00036 = 0.36: carried
    world.close("solo", MAR)
    world.store.rate("solo", "2026-04", seg(at(1, 4)), "video", 5_500)  # 500 over x 0.00072 = 0.36
    assert world.close("solo", APR).total == Decimal("0.72")  # + March's 0.36 carried
    [march] = revenue_report(world.store, MAR, default_catalog()).accounts
    # cost 11,000 x 0.0003 = 3.30; margin 0.36 - 3.30 = -2.94
    assert figures(march) == ("0.00", "0.36", "0.00", "0.00", "0.36", "3.30", "-2.94")
    [april] = revenue_report(world.store, APR, default_catalog()).accounts
    # April's own 0.36 (the carried 0.36 is March's, counted there); cost 5,500 x 0.0006 = 3.30; margin -2.94
    assert figures(april) == ("0.00", "0.36", "0.00", "0.00", "0.36", "3.30", "-2.94")


def test_given_march_paid_short_then_the_report_shows_the_shortfall_apart_from_refunds_and_the_same_margin() -> None:
    """Review 3, finding 5. acme (Team) March 65.20 (29.00 + 7.20 = 10,000 video min over x 0.00072 + 29.00 April
    ahead), paid 55.20 at Stripe (a 10.00 dashboard note): nothing was refunded - refunds 0.00, short paid 65.20 -
    55.20 = 10.00; margin unchanged: 65.20 billed - 0.00 - 10.00 - 36.00 cost (60,000 min x 0.0006) = 19.20. Before:
    refunds 10.00."""
    world, events = World(), Events()
    world.signup("acme", (at(1), "team"))
    world.store.rate("acme", "2026-03", seg(at(1)), "video", 60_000)
    world.close("acme", MAR)
    world.gateway.settle("acme/2026-03", paid=True)
    paid = _paid_invoice(world) | {"amount_paid": 5520, "total": 6520, "total_excluding_tax": 6520}
    apply_stripe_event(world.store, world.bus, events, *events.add("p", "invoice.paid", paid), at(2, 4), world.gateway)
    row = revenue_report(world.store, MAR, default_catalog()).accounts[0]
    shown = (row.figures.total_billed, row.figures.refunds, row.figures.short_paid, row.figures.cost_basis)
    assert shown == (Decimal("65.20"), Decimal("0.00"), Decimal("10.00"), Decimal("36.00"))
    assert row.figures.margin == Decimal("19.20")
