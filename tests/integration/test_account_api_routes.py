"""The account API's other routes through the handler on moto: invoices (read through the layer's ledger store),
subscription changes, alert preferences, the entitlement check, members, export and erasure, recommendations and the
forecast, and Stripe's hosted pages through the product's adapter against the Stripe emulator (in-process)."""

from __future__ import annotations

import json
from collections.abc import Iterator
from datetime import UTC, datetime
from decimal import Decimal
from typing import Any
from urllib.parse import urlsplit

import pytest
import time_machine

from kilo_billing.account_store import DynamoAccountDirectory
from kilo_billing.accounts import request_tier_change
from kilo_billing.catalog import default_catalog
from kilo_billing.entitlement_store import DynamoEntitlements
from kilo_billing.entitlements import Reading
from kilo_billing.invoicing import BillingMethod, CreditNote, CreditNoteStatus, InvoiceRecord, InvoiceStatus, Line
from kilo_billing.periods import Period
from kilo_billing.periods_items import credit_note_to_item, invoice_to_item
from kilo_billing.rating import TierChange
from kilo_dev.stripe_emulator import EmulatorHTTPClient
from tests.account_api_fakes import NO_USAGE
from tests.account_api_support import api_environment, call, claims, new_key, store_members, utc
from tests.integration.test_account_api import NOW, put_counters, put_session, register, seed_november, usage_table


@pytest.fixture
def account_api(stack: Any, monkeypatch: pytest.MonkeyPatch) -> Iterator[Any]:
    staff = {"acct_a": STAFF, "acct_b": {"user-1": "owner"}, "acct_c": {"user-1": "owner"}}
    yield from api_environment(stack, monkeypatch, staff)


@pytest.fixture(autouse=True)
def frozen() -> Iterator[None]:
    with time_machine.travel(NOW, tick=False):
        yield


OWNER, ADMIN = claims("acct_a", "owner", user="owner-1"), claims("acct_a", "admin", user="admin-1")
MEMBER = claims("acct_a", "member")
OK_URL = "http://127.0.0.1:8000/ok"  # on the test dashboard's origins
STAFF = {"owner-1": "owner", "admin-1": "admin"}  # OWNER's and ADMIN's memberships (membership changes check them)


def profile(stack: Any, account: str = "acct_a") -> Any:
    directory = DynamoAccountDirectory(stack.clients["dynamodb"], usage_table(stack))
    return directory.registered([account])[account]


def put_invoice(stack: Any, period: str, seq: int, status: InvoiceStatus, total: str) -> None:
    lines = (
        Line("fee", "Team, monthly fee", Decimal("29.00"), period, tier="team", quantity=Decimal(1)),
        Line(
            "usage",
            "Video (participant-minute) on Team",
            Decimal(total) - Decimal("29.00"),
            period,
            meter="video",
            tier="team",
            quantity=Decimal(1000),
            unit_price=Decimal("0.00072"),
        ),
    )
    record = InvoiceRecord(
        invoice_id=f"acct_a/{period}",
        account_id="acct_a",
        period=period,
        number=f"KB-acct_a-{seq:05d}",
        seq=seq,
        method=BillingMethod.CARD,
        lines=lines,
        status=status,
        transitions=(("draft", f"{period}-28T06:00:00+00:00"),),
        hosted_url=f"https://invoice.stripe.test/{seq}",
        pdf_url=f"https://invoice.stripe.test/{seq}.pdf",
    )
    stack.clients["dynamodb"].put_item(TableName=usage_table(stack), Item=invoice_to_item(record))


def test_given_two_invoices_then_the_list_is_newest_first_and_a_receipt_has_its_lines_and_links(
    account_api: Any,
) -> None:
    register(account_api, "acct_a")
    put_invoice(account_api, "2026-09", 1, InvoiceStatus.PAID, "29.72")
    put_invoice(account_api, "2026-10", 2, InvoiceStatus.OPEN, "29.00")
    listed = call("GET", "/v1/accounts/acct_a/invoices", MEMBER)
    assert listed.status == 200, listed.body
    assert [
        (i["invoice_id"], i["number"], i["method"], i["period"], i["status"], i["total"])
        for i in listed.body["invoices"]
    ] == [
        ("acct_a/2026-10", "KB-acct_a-00002", "card", "2026-10", "open", "29.00"),
        ("acct_a/2026-09", "KB-acct_a-00001", "card", "2026-09", "paid", "29.72"),
    ]
    receipt = call("GET", "/v1/accounts/acct_a/invoices/KB-acct_a-00001", MEMBER)
    assert receipt.status == 200, receipt.body
    assert [(line["kind"], line["amount"]) for line in receipt.body["lines"]] == [("fee", "29.00"), ("usage", "0.72")]
    assert (receipt.body["total"], receipt.body["pdf_url"]) == ("29.72", "https://invoice.stripe.test/1.pdf")
    assert (receipt.body["refunded"], receipt.body["charged_back"]) == ("0.00", "0.00")
    missing = call("GET", "/v1/accounts/acct_a/invoices/KB-acct_a-00009", MEMBER)
    assert (missing.status, missing.body["code"]) == (404, "not_found")


def test_given_usage_inside_the_allowance_then_the_receipt_shows_what_was_used_included_and_billed(
    account_api: Any,
) -> None:
    """The policy shows a line for every meter "so customers see what they used": a covered line is not quantity 0."""
    register(account_api, "acct_a")
    lines = (
        Line("fee", "Team, monthly fee", Decimal("29.00"), "2026-10", tier="team", quantity=Decimal(1)),
        # as invoicing._line writes usage lines: 40,000 video minutes used of 50,000 included: 0 billable, $0.00
        Line(
            "usage",
            "Video (participant-minute) on Team, 2026-10",
            Decimal("0.00"),
            "2026-10",
            meter="video",
            tier="team",
            quantity=Decimal(0),
            unit_price=Decimal("0.00072"),
            used=Decimal(40000),
            included=Decimal(50000),
        ),
        # 130,000 audio minutes of 100,000: 30,000 billable x 0.00036 = 10.80
        Line(
            "usage",
            "Audio (participant-minute) on Team, 2026-10",
            Decimal("10.80"),
            "2026-10",
            meter="audio",
            tier="team",
            quantity=Decimal(30000),
            unit_price=Decimal("0.00036"),
            used=Decimal(130000),
            included=Decimal(100000),
        ),
    )
    record = InvoiceRecord(
        invoice_id="acct_a/2026-10",
        account_id="acct_a",
        period="2026-10",
        number="KB-acct_a-00001",
        seq=1,
        method=BillingMethod.CARD,
        lines=lines,
        status=InvoiceStatus.PAID,
        transitions=(("draft", "2026-10-28T06:00:00+00:00"),),
    )
    account_api.clients["dynamodb"].put_item(TableName=usage_table(account_api), Item=invoice_to_item(record))
    receipt = call("GET", "/v1/accounts/acct_a/invoices/KB-acct_a-00001", MEMBER)
    assert receipt.status == 200, receipt.body
    shown = [
        (line["kind"], line["used"], line["included"], line["billable"], line["quantity"], line["amount"])
        for line in receipt.body["lines"]
    ]
    assert shown == [
        ("fee", None, None, None, "1", "29.00"),  # a fee has no usage figures
        ("usage", "40000", "50000", "0", "0", "0.00"),
        ("usage", "130000", "100000", "30000", "30000", "10.80"),
    ]
    assert receipt.body["total"] == "39.80"  # 29.00 + 0.00 + 10.80


def put_note(
    stack: Any,
    credited: str,
    found_by: str,
    to_due: str,
    to_credit: str,
    returned: str = "0",
    pending: bool = False,
    uncollected: str = "0",
) -> None:
    """A credit note as the close writes it (D131): late usage of ``credited`` found by the close of ``found_by``."""
    late = Decimal(to_due) + Decimal(to_credit) + Decimal(returned) + Decimal(uncollected)
    note = CreditNote(
        credit_id=f"acct_a/{credited}/credit-{found_by}",
        account_id="acct_a",
        invoice_id=f"acct_a/{credited}",
        found_by=f"acct_a/{found_by}",
        period=credited,
        lines=(Line("adjustment", "Video (participant-minute) on Team, late", -late, credited, meter="video"),),
        to_due=Decimal(to_due),
        to_credit=Decimal(to_credit),
        processor=Decimal(to_due),
        status=CreditNoteStatus.PENDING if pending else CreditNoteStatus.DONE,
        returned=Decimal(returned),
        uncollected=Decimal(uncollected),
    )
    stack.clients["dynamodb"].put_item(TableName=usage_table(stack), Item=credit_note_to_item(note))


def test_given_credit_notes_then_invoices_list_them_with_what_they_did_and_the_amount_due_after_them(
    account_api: Any,
) -> None:
    register(account_api, "acct_a")
    # August 29.50, its payment failed: September's close found 0.40 of negative late usage (all off the amount due),
    # October's close another 0.22, of which 0.10 off the amount due, 0.05 account credit (its processor note
    # pending) and 0.07 billed by an early invoice never paid (not collected: not in the note's amount). Amount due:
    # 29.50 - 0.40 - 0.10 = 29.00 (account credit is not taken off the invoice).
    put_invoice(account_api, "2026-08", 1, InvoiceStatus.PAYMENT_FAILED, "29.50")
    put_note(account_api, "2026-08", "2026-09", to_due="0.40", to_credit="0.00")
    put_note(account_api, "2026-08", "2026-10", to_due="0.10", to_credit="0.05", pending=True, uncollected="0.07")
    # September 29.72, paid: October's close found 0.32 of negative late usage; 0.12 was already refunded, 0.20 is
    # account credit. Amount due stays 29.72.
    put_invoice(account_api, "2026-09", 2, InvoiceStatus.PAID, "29.72")
    put_note(account_api, "2026-09", "2026-10", to_due="0.00", to_credit="0.20", returned="0.12")
    put_invoice(account_api, "2026-10", 3, InvoiceStatus.OPEN, "29.00")  # no notes: due 29.00

    listed = call("GET", "/v1/accounts/acct_a/invoices", MEMBER)
    assert listed.status == 200, listed.body
    assert [(i["number"], i["total"], i["amount_due"]) for i in listed.body["invoices"]] == [
        ("KB-acct_a-00003", "29.00", "29.00"),
        ("KB-acct_a-00002", "29.72", "29.72"),
        ("KB-acct_a-00001", "29.50", "29.00"),
    ]
    notes = {i["number"]: i["credit_notes"] for i in listed.body["invoices"]}
    assert notes["KB-acct_a-00003"] == []
    assert notes["KB-acct_a-00002"] == [
        {
            "credit_id": "acct_a/2026-09/credit-2026-10",
            "found_in_period": "2026-10",
            "found_by": "acct_a/2026-10",
            "amount": "0.20",
            "to_amount_due": "0.00",
            "to_account_credit": "0.20",
            "already_returned": "0.12",
            "not_collected": "0.00",
            "status": "done",
        }
    ]
    assert [
        (
            n["found_in_period"],
            n["amount"],
            n["to_amount_due"],
            n["to_account_credit"],
            n["already_returned"],
            n["not_collected"],
            n["status"],
        )
        for n in notes["KB-acct_a-00001"]
    ] == [
        ("2026-09", "0.40", "0.40", "0.00", "0.00", "0.00", "done"),
        ("2026-10", "0.15", "0.10", "0.05", "0.00", "0.07", "pending"),
    ]

    receipt = call("GET", "/v1/accounts/acct_a/invoices/KB-acct_a-00001", MEMBER)
    assert receipt.status == 200, receipt.body
    assert (receipt.body["total"], receipt.body["amount_due"]) == ("29.50", "29.00")
    assert receipt.body["credit_notes"] == notes["KB-acct_a-00001"]
    assert [(line["kind"], line["amount"]) for line in receipt.body["lines"]] == [("fee", "29.00"), ("usage", "0.50")]


def test_given_an_unregistered_account_of_the_callers_own_token_then_404(account_api: Any) -> None:
    answer = call("GET", "/v1/accounts/acct_new/usage", claims("acct_new", "owner"))
    assert (answer.status, answer.body["code"]) == (404, "not_found")


def test_given_a_tier_change_then_upgrades_apply_now_and_downgrades_at_the_period_end(account_api: Any) -> None:
    register(account_api, "acct_a")  # team
    up = call("POST", "/v1/accounts/acct_a/subscription", ADMIN, {"tier": "enterprise"}, headers=new_key())
    assert up.status == 200, up.body
    assert (up.body["change"], up.body["current_tier"], up.body["effective_at"]) == (
        "upgrade_now",
        "enterprise",
        "2026-11-15T12:00:00Z",
    )
    register(account_api, "acct_b")
    down = call(
        "POST", "/v1/accounts/acct_b/subscription", claims("acct_b", "owner"), {"tier": "personal"}, headers=new_key()
    )
    assert down.status == 200, down.body
    assert (down.body["change"], down.body["current_tier"], down.body["effective_at"]) == (
        "downgrade_at_period_end",
        "team",
        "2026-12-01T00:00:00Z",
    )
    assert profile(account_api, "acct_b").tier_at(utc(2026, 12, 1)) == "personal"
    again = call(  # the same tier again under a new key: decided on the stored state (D373)
        "POST", "/v1/accounts/acct_b/subscription", claims("acct_b", "owner"), {"tier": "personal"}, headers=new_key()
    )
    assert (again.status, again.body) == (200, down.body)  # the same request again changes nothing
    assert len(profile(account_api, "acct_b").changes) == 2
    # changing one's mind: the tier in effect cancels the pending downgrade
    stay = call(
        "POST", "/v1/accounts/acct_b/subscription", claims("acct_b", "owner"), {"tier": "team"}, headers=new_key()
    )
    assert stay.status == 200, stay.body
    assert (stay.body["change"], stay.body["current_tier"], stay.body["effective_at"]) == (
        "pending_change_cancelled",
        "team",
        "2026-11-15T12:00:00Z",
    )
    assert profile(account_api, "acct_b").tier_at(utc(2026, 12, 1)) == "team"
    # acct_a's upgrade asked again (its first answer lost): the same answer, nothing saved (D118 amended (ex))
    same = call("POST", "/v1/accounts/acct_a/subscription", ADMIN, {"tier": "enterprise"}, headers=new_key())
    assert (same.status, same.body) == (200, up.body)
    assert len(profile(account_api, "acct_a").changes) == 2  # Jan 1 team, Nov 15 12:00 enterprise: no third
    # acct_c has been on team since Jan 1, no change made: asking for team is no retry, and stays refused
    register(account_api, "acct_c")
    kept = call(
        "POST", "/v1/accounts/acct_c/subscription", claims("acct_c", "owner"), {"tier": "team"}, headers=new_key()
    )
    assert (kept.status, kept.body["message"]) == (409, "already on tier 'team'")
    unknown = call("POST", "/v1/accounts/acct_a/subscription", ADMIN, {"tier": "platinum"}, headers=new_key())
    assert (unknown.status, unknown.body["field"]) == (400, "tier")


def test_given_a_scheduled_downgrade_then_usage_names_it_until_it_is_cancelled(account_api: Any) -> None:
    """D370 (review fa2): a downgrade waits for the next period start (D118: Team -> Personal on Dec 1) and no GET
    route said so, so the dashboard could not offer D118's cancel. ``GET /usage`` names it until it is cancelled."""
    register(account_api, "acct_b")  # team
    owner = claims("acct_b", "owner")
    before = call("GET", "/v1/accounts/acct_b/usage", owner)
    assert (before.status, before.body["scheduled_change"]) == (200, None), before.body
    down = call("POST", "/v1/accounts/acct_b/subscription", owner, {"tier": "personal"}, headers=new_key())
    assert down.body["change"] == "downgrade_at_period_end", down.body
    seen = call("GET", "/v1/accounts/acct_b/usage", claims("acct_b", "member"))
    assert (seen.body["tier"], seen.body["scheduled_change"]) == (
        "team",
        {"tier": "personal", "effective_at": "2026-12-01T00:00:00Z"},
    )
    stay = call("POST", "/v1/accounts/acct_b/subscription", owner, {"tier": "team"}, headers=new_key())
    assert stay.body["change"] == "pending_change_cancelled", stay.body
    after = call("GET", "/v1/accounts/acct_b/usage", owner)
    assert (after.body["tier"], after.body["scheduled_change"]) == ("team", None)


def test_given_a_downgrade_then_an_operator_dated_change_then_stay_on_cancels_both_as_the_page_shows(
    account_api: Any,
) -> None:
    """Review api3 #1: Team since Jan 1 2026; Nov 15 12:00 the customer asks Personal (downgrade, from Dec 1); an
    operator runs ``account tier team --at 2027-01-15`` (Personal -> Team on Jan 15). ``GET /usage`` names the NEXT
    change, Personal on Dec 1, and "Stay on Team" POSTs team. Before: taken as a retry of the LATEST change (Team on
    Jan 15): 200 ``downgrade_at_period_end`` effective 2027-01-15, nothing saved - the account on Personal from Dec 1
    to Jan 15 (six weeks). Now: both future changes cancelled, ``pending_change_cancelled`` effective now, Team all
    through; retried, the same answer (D373's replay)."""
    register(account_api, "acct_b")  # team since 2026-01-01
    owner = claims("acct_b", "owner")
    down = call("POST", "/v1/accounts/acct_b/subscription", owner, {"tier": "personal"}, headers=new_key())
    assert (down.body["change"], down.body["effective_at"]) == ("downgrade_at_period_end", "2026-12-01T00:00:00Z")
    jan15 = utc(2027, 1, 15)
    directory = DynamoAccountDirectory(account_api.clients["dynamodb"], usage_table(account_api))
    catalog = default_catalog()  # what `kilo-billing account tier team --at 2027-01-15` calls
    book = catalog.for_period(Period.containing(jan15))
    request_tier_change(directory, book, "acct_b", "team", jan15, (), month=NO_USAGE, read_at=NOW, catalog=catalog)
    shown = call("GET", "/v1/accounts/acct_b/usage", owner)
    assert shown.body["scheduled_change"] == {"tier": "personal", "effective_at": "2026-12-01T00:00:00Z"}
    for _ in range(2):  # the click, then the same click retried
        stay = call("POST", "/v1/accounts/acct_b/subscription", owner, {"tier": "team"}, headers=new_key())
        assert (stay.status, stay.body["change"], stay.body["effective_at"], stay.body["current_tier"]) == (
            200,
            "pending_change_cancelled",
            "2026-11-15T12:00:00Z",  # NOW: the cancel's time
            "team",
        ), stay.body
    assert profile(account_api, "acct_b").changes == (TierChange(utc(2026, 1, 1), "team"),)
    after = call("GET", "/v1/accounts/acct_b/usage", owner)
    assert (after.body["tier"], after.body["scheduled_change"]) == ("team", None)


def test_given_operator_dated_changes_then_an_upgrade_is_applied_now_and_replaces_them(account_api: Any) -> None:
    """Review api4 #1: Team since Jan 1 2026; an operator runs ``account tier enterprise --at 2026-12-15`` (an upgrade:
    Enterprise from Dec 15) then ``account tier personal --at 2027-02-01`` (a downgrade from Enterprise: Personal from
    the next period start, Mar 1 2027). Nov 15 12:00 the customer POSTs enterprise. Before: 200
    ``downgrade_at_period_end`` effective 2026-12-15, nothing saved (the NEXT change's tier taken for a retry). Now
    (D118, an upgrade takes effect at once): 200 ``upgrade_now`` effective 2026-11-15T12:00:00Z, Enterprise in
    effect, both dated changes replaced, nothing scheduled."""
    register(account_api, "acct_b")  # team since 2026-01-01
    owner = claims("acct_b", "owner")
    directory = DynamoAccountDirectory(account_api.clients["dynamodb"], usage_table(account_api))
    catalog = default_catalog()  # what `kilo-billing account tier <tier> --at <at>` calls
    for tier, at in (("enterprise", utc(2026, 12, 15)), ("personal", utc(2027, 2, 1))):
        book = catalog.for_period(Period.containing(at))
        request_tier_change(directory, book, "acct_b", tier, at, (), month=NO_USAGE, read_at=NOW, catalog=catalog)
    shown = call("GET", "/v1/accounts/acct_b/usage", owner)
    assert shown.body["scheduled_change"] == {"tier": "enterprise", "effective_at": "2026-12-15T00:00:00Z"}
    up = call("POST", "/v1/accounts/acct_b/subscription", owner, {"tier": "enterprise"}, headers=new_key())
    assert (up.status, up.body["change"], up.body["effective_at"], up.body["current_tier"]) == (
        200,
        "upgrade_now",
        "2026-11-15T12:00:00Z",  # NOW: the click's time
        "enterprise",
    ), up.body
    assert profile(account_api, "acct_b").changes == (
        TierChange(utc(2026, 1, 1), "team"),
        TierChange(NOW, "enterprise"),
    )
    after = call("GET", "/v1/accounts/acct_b/usage", owner)
    assert (after.body["tier"], after.body["scheduled_change"]) == ("enterprise", None)


def test_given_usage_an_upgrade_would_re_rate_past_the_hard_limit_then_the_route_answers_409_naming_limit_and_bill(
    account_api: Any,
) -> None:
    """D150 amended (e2), through the route and the usage table's month to date: Team, hard limit $100, 91,667 video
    minutes rated by Nov 15 12:00 ($29.00 + 41,667 x $0.00072 = $59.00). Enterprise from then prorates Team to
    14.5/30 = 29/60 of November: 50,000 x 29/60 = 24,166.67 -> 24,167 video min (rounded up), 67,500 over x $0.00072
    = $48.60; fees $29 x 29/60 = $14.0167 -> $14.02 and $99 x 31/60 = $51.15: $113.77 >= $100. Refused, still Team."""
    register(account_api, "acct_a", hard_limit_usd=Decimal(100))
    put_counters(account_api, "acct_a", {"video": 91_667})
    refused = call("POST", "/v1/accounts/acct_a/subscription", ADMIN, {"tier": "enterprise"}, headers=new_key())
    assert (refused.status, refused.body["code"]) == (409, "conflict"), refused.body
    assert "hard limit $100 is not above $113.77" in refused.body["message"]
    assert profile(account_api, "acct_a").tier_at(NOW) == "team"


def test_given_a_hard_limit_at_or_below_the_bill_so_far_then_the_budget_route_answers_400_naming_limit_and_bill(
    account_api: Any,
) -> None:
    """D368 (as D150 for tier changes): Team, 100,000 video minutes by Nov 15: 50,000 over x $0.00072 = $36.00,
    + $29.00 fee = $65.00 so far. A hard limit of $40 (or $65, reached at the limit) would refuse every call at once:
    400 naming hard_limit_usd and the bill, nothing saved. $65.01 is above it: saved. The stored limit sent back
    unchanged (the form returns what it read) is kept after the bill passed it, so the soft budget can still change."""
    register(account_api, "acct_a")
    put_counters(account_api, "acct_a", {"video": 100_000})
    for limit in ("40", "65"):
        refused = call("PUT", "/v1/accounts/acct_a/budget", ADMIN, {"budget_usd": None, "hard_limit_usd": limit})
        assert (refused.status, refused.body["field"]) == (400, "hard_limit_usd"), refused.body
        assert f"hard limit ${limit} is not above $65.00, this month's bill so far" in refused.body["message"]
    assert profile(account_api, "acct_a").hard_limit_usd is None
    saved = call("PUT", "/v1/accounts/acct_a/budget", ADMIN, {"budget_usd": None, "hard_limit_usd": "65.01"})
    assert (saved.status, saved.body["hard_limit_usd"]) == (200, "65.01"), saved.body
    put_counters(account_api, "acct_a", {"video": 110_000})  # + 10,000 x $0.00072 = $7.20: $72.20, past $65.01
    kept = call("PUT", "/v1/accounts/acct_a/budget", ADMIN, {"budget_usd": "50", "hard_limit_usd": "65.01"})
    assert (kept.status, kept.body["budget_usd"], kept.body["hard_limit_usd"]) == (200, "50.00", "65.01"), kept.body


def test_given_alert_preferences_then_they_are_saved_whole_or_refused_naming_the_field(account_api: Any) -> None:
    register(account_api, "acct_a")
    saved = call(
        "PUT",
        "/v1/accounts/acct_a/alert-preferences",
        ADMIN,
        {"name": "Ops", "email": "ops@a.example", "phone": "+14155550100", "channels": {"budget_threshold": ["sms"]}},
    )
    assert saved.status == 200, saved.body
    assert saved.body["channels"] == {"budget_threshold": ["sms"]}
    bad_phone = call("PUT", "/v1/accounts/acct_a/alert-preferences", ADMIN, {"phone": "555-0100"})
    assert bad_phone.status == 400
    assert bad_phone.body["field"] == "phone"
    bad_email = call("PUT", "/v1/accounts/acct_a/alert-preferences", ADMIN, {"email": "not-an-address"})
    assert (bad_email.status, bad_email.body["field"]) == (400, "email")
    bad_channel = call("PUT", "/v1/accounts/acct_a/alert-preferences", ADMIN, {"channels": {"x": ["pigeon"]}})
    assert bad_channel.status == 400
    assert "channels" in bad_channel.body["field"]
    kept = profile(account_api)
    assert (kept.email, kept.phone, kept.alert_preferences) == (
        "ops@a.example",
        "+14155550100",
        (("budget_threshold", ("sms",)),),
    )


def test_given_a_suspended_account_then_the_entitlement_check_refuses_with_its_reason(account_api: Any) -> None:
    register(account_api, "acct_a", status="suspended")
    answer = call("POST", "/v1/accounts/acct_a/entitlements/check", MEMBER)
    assert answer.status == 200, answer.body
    assert (answer.body["allowed"], answer.body["reason"], answer.body["max_token_ttl_seconds"]) == (
        False,
        "account_suspended",
        0,
    )


def test_given_spend_near_the_hard_limit_then_the_entitlement_check_answers_the_usage_apis_json(
    account_api: Any,
) -> None:
    """The JSON of the usage API's check (tests/integration/test_entitlement_check.py), field by field: here with no
    soft budget (null) and an allowance used up (0, never negative)."""
    register(account_api, "acct_a", hard_limit_usd=Decimal("150"))
    spend = DynamoEntitlements(account_api.clients["dynamodb"], usage_table(account_api))
    spend.record("acct_a", "budget", Reading("2026-11", Decimal("149.00"), Decimal("150"), "2026-11-15T11:00:00+00:00"))
    spend.record("acct_a", "video", Reading("2026-11", Decimal("48000"), Decimal("60000"), "x"))
    spend.record("acct_a", "audio", Reading("2026-11", Decimal("1000"), Decimal("600"), "x"))
    answer = call("POST", "/v1/accounts/acct_a/entitlements/check", MEMBER)
    assert answer.status == 200, answer.body
    assert answer.body == {
        "account_id": "acct_a",
        "allowed": True,
        "reason": None,
        "message": "allowed",
        # $1.00 left / $0.0072 a minute = 138.89 minutes = 8,333.3 s -> 8,333 s
        "max_token_ttl_seconds": 8333,
        "budget": {
            "period": "2026-11",
            "spent_usd": "149.00",
            "as_of": "2026-11-15T11:00:00+00:00",
            "budget_usd": None,
            "hard_limit_usd": "150.00",
            "remaining_usd": "1.00",  # to the hard limit
        },
        "remaining_allowance": {"audio": "0", "video": "12000"},
    }


def test_given_members_then_an_admin_adds_and_removes_and_the_owner_is_protected(account_api: Any) -> None:
    register(account_api, "acct_a")
    store_members(account_api, "acct_a", STAFF)
    assert call("POST", "/v1/accounts/acct_a/members", OWNER, {"user": "olga", "role": "owner"}).status == 201
    assert call("POST", "/v1/invitations/acct_a/accept", claims(None, None, user="olga")).status == 200
    added = call("POST", "/v1/accounts/acct_a/members", ADMIN, {"user": "mia", "email": "mia@a.example"})
    assert (added.status, added.body["role"]) == (201, "member")
    assert call("POST", "/v1/accounts/acct_a/members", ADMIN, {"user": "otto", "role": "owner"}).status == 400
    assert call("POST", "/v1/accounts/acct_a/members", ADMIN, {"user": "mia"}).status == 409
    bad = call("POST", "/v1/accounts/acct_a/members", ADMIN, {"user": "max", "email": "max-at-example"})
    assert (bad.status, bad.body["field"]) == (400, "email")
    slash = call("POST", "/v1/accounts/acct_a/members", ADMIN, {"user": "a/b"})
    assert (slash.status, slash.body["field"]) == (400, "user")
    assert call("DELETE", "/v1/accounts/acct_a/members/olga", ADMIN).status == 409
    assert call("DELETE", "/v1/accounts/acct_a/members/mia", ADMIN).status == 204
    listed = call("GET", "/v1/accounts/acct_a/members", MEMBER)
    assert [(m["user"], m["role"], m["status"]) for m in listed.body["members"]] == [
        ("olga", "owner", "active"),
        ("owner-1", "owner", "active"),
        ("admin-1", "admin", "active"),
    ]


@pytest.mark.parametrize(
    ("sent", "field", "message"),
    [
        ({"user": "mia\u0000"}, "user", "user contains the control character U+0000 at position 4"),
        ({"user": "mia\u001b[31m"}, "user", "user contains the control character U+001B at position 4"),  # ESC
        ({"user": "mia\u007f"}, "user", "user contains the control character U+007F at position 4"),  # DEL
        ({"user": "\u202eaim"}, "user", "user contains the control character U+202E at position 1"),  # RTL override
        ({"user": "mia\u009b31m"}, "user", "user contains the control character U+009B at position 4"),  # C1 CSI
        ({"user": "mia\u2066"}, "user", "user contains the control character U+2066 at position 4"),  # isolate
        ({"email": "mia\u0001@a.example"}, "email", "email contains the control character U+0001 at position 4"),
        ({"email": "mia\u202e@a.example"}, "email", "email contains the control character U+202E at position 4"),
        ({"email": "mi\u00e4@a.example"}, "email", "email 'mi\u00e4@a.example': mail goes through SES"),
    ],
)
def test_given_a_control_character_or_a_non_ascii_address_in_an_invitation_then_a_400_naming_the_field_and_none_stored(
    account_api: Any, sent: dict[str, str], field: str, message: str
) -> None:
    """D204: the members route stored control characters in the user (its pattern refused only '#', '/' and
    whitespace) and in the email (the address pattern only), and non-ASCII addresses; the same checks as the alert
    contact's (D181) now refuse them, nothing stored."""
    register(account_api, "acct_a")
    store_members(account_api, "acct_a", STAFF)
    answer = call("POST", "/v1/accounts/acct_a/members", ADMIN, {"user": "mia", "email": "mia@a.example", **sent})
    assert (answer.status, answer.body["code"], answer.body["field"]) == (400, "invalid_request", field)
    assert answer.body["message"].startswith(f"{field}: {message}")
    listed = call("GET", "/v1/accounts/acct_a/members", MEMBER)
    assert [m["user"] for m in listed.body["members"]] == ["owner-1", "admin-1"]


def test_given_printable_text_in_any_script_then_the_invitation_stores_user_and_email_as_sent(account_api: Any) -> None:
    register(account_api, "acct_a")
    store_members(account_api, "acct_a", STAFF)
    user = "\u0645\u06cc\u200c\u0631-\u6771\u4eac-\U0001f468\u200d\U0001f4bb"  # ZWNJ, CJK, a ZWJ emoji
    answer = call("POST", "/v1/accounts/acct_a/members", ADMIN, {"user": user, "email": "Mia.K+ops@a.example"})
    assert (answer.status, answer.body["user"], answer.body["email"]) == (201, user, "Mia.K+ops@a.example")


def test_given_a_member_added_before_when_added_again_then_their_added_at_role_and_email_stay_as_first_stored(
    account_api: Any,
) -> None:
    """A re-add while the invitation is open, the same or with another role or email, is refused (409 naming the
    user) and writes nothing: the invitation's ``added_at``, end and role stay those of the first add; a role change
    is not a re-add. Read back from the members table (moto) after a day has passed."""
    register(account_api, "acct_a")
    store_members(account_api, "acct_a", STAFF)
    first = call("POST", "/v1/accounts/acct_a/members", OWNER, {"user": "mia", "email": "mia@a.example"})
    assert (first.status, first.body["added_at"], first.body["role"]) == (201, "2026-11-15T12:00:00Z", "member")
    with time_machine.travel(utc(2026, 11, 16, 9), tick=False):
        for again in (
            {"user": "mia", "email": "mia@a.example"},
            {"user": "mia", "email": "mia@a.example", "role": "admin"},
            {"user": "mia", "email": "mia@b.example", "role": "owner"},
            {"user": "mia"},
        ):
            answer = call("POST", "/v1/accounts/acct_a/members", OWNER, again)
            assert (answer.status, answer.body) == (
                409,
                {
                    "code": "conflict",
                    "message": "'mia' is already a member of account 'acct_a' or invited",
                    "field": None,
                },
            )
    listed = call("GET", "/v1/accounts/acct_a/members", MEMBER)
    assert [m for m in listed.body["members"] if m["user"] == "mia"] == [
        {
            "user": "mia",
            "email": "mia@a.example",
            "role": "member",
            "added_at": "2026-11-15T12:00:00Z",
            "status": "invited",
            "expires_at": "2026-11-22T12:00:00Z",
        }
    ]
    stored = account_api.clients["dynamodb"].get_item(
        TableName=account_api.template.physical_name("MembersTable"),
        Key={"pk": {"S": "ACCOUNT#acct_a"}, "sk": {"S": "MEMBER#mia"}},
        ConsistentRead=True,
    )["Item"]
    assert (stored["added_at"], stored["role"], stored["email"]) == (
        {"S": "2026-11-15T12:00:00+00:00"},
        {"S": "member"},
        {"S": "mia@a.example"},
    )


def test_given_an_export_then_an_erasure_then_identities_are_gone_and_invoices_are_kept(account_api: Any) -> None:
    seed_november(account_api)
    put_invoice(account_api, "2026-10", 1, InvoiceStatus.PAID, "29.00")
    store_members(account_api, "acct_a", STAFF)
    assert call("POST", "/v1/accounts/acct_a/members", OWNER, {"user": "mia", "email": "mia@a.example"}).status == 201
    exported = call("GET", "/v1/accounts/acct_a/export", OWNER)
    assert exported.status == 200, exported.body
    assert exported.body["profile"]["email"] == "ops@a.example"
    assert sorted({s["identity"] for s in exported.body["sessions"]}) == ["alice", "bob", "carol", "dave"]
    assert exported.body["usage_by_period"] == {"2026-11": {"audio": 40, "messages": 2500, "video": 120}}
    assert [i["number"] for i in exported.body["invoices"]] == ["KB-acct_a-00001"]
    erased = call("POST", "/v1/accounts/acct_a/erase", OWNER)
    assert erased.status == 200, erased.body
    assert (erased.body["sessions_pseudonymised"], erased.body["members_pseudonymised"]) == (5, 1)
    after = call("GET", "/v1/accounts/acct_a/export", OWNER).body
    text = str(after)
    for personal in ("alice", "bob", "carol", "dave", "ops@a.example", "mia@a.example"):
        assert personal not in text
    assert after["invoices"] == exported.body["invoices"]
    assert after["usage_by_period"] == exported.body["usage_by_period"]
    usage = call("GET", "/v1/accounts/acct_a/usage", MEMBER).body
    assert usage["total"] == "29.00"


def test_given_a_known_stripe_customer_when_the_account_is_erased_then_no_digest_of_its_details_is_kept(
    account_api: Any,
) -> None:
    """The billing item's digest of the details last given the Stripe customer (D172) is an unsalted hash of email and
    name: after an erasure it is that of empty details, so a guessed address can no longer be checked against it."""
    import hashlib  # noqa: PLC0415

    from kilo_billing.periods_store import DynamoLedgerStore  # noqa: PLC0415

    register(account_api, "acct_a", email="ops@a.example", name="Acct A")
    store_members(account_api, "acct_a", STAFF)
    ledger = DynamoLedgerStore(account_api.clients["dynamodb"], usage_table(account_api))
    before = hashlib.sha256(b"ops@a.example\x00Acct A").hexdigest()[:32]
    ledger.save_billing("acct_a", customer_id="cus_known", customer_details=before)
    erased = call("POST", "/v1/accounts/acct_a/erase", OWNER)
    assert erased.status == 200, erased.body
    billing = ledger.ledger("acct_a").billing
    assert billing.customer_details == hashlib.sha256(b"\x00").hexdigest()[:32]  # email "" and name ""
    assert billing.customer_id == "cus_known"  # the customer itself is kept (invoices, refunds)
    stored = str(account_api.clients["dynamodb"].scan(TableName=usage_table(account_api))["Items"])
    assert before not in stored


def test_given_a_month_then_forecast_and_recommendations_come_from_the_same_month_to_date(account_api: Any) -> None:
    # personal account, one person alone with the camera for 5,500 minutes: $0.36 over the 5,000 included
    register(account_api, "acct_p", tier="personal", budget_usd=Decimal("1.00"))
    put_session(account_api, "acct_p", "RM_x", "PA_x", "ann", utc(2026, 11, 3, 9), utc(2026, 11, 7, 0), video=5500)
    put_counters(account_api, "acct_p", {"video": 5500})
    token = claims("acct_p", "member")
    forecast = call("GET", "/v1/accounts/acct_p/forecast", token)
    assert forecast.status == 200, forecast.body
    # Sunday 15th noon: weight elapsed 11.8 (10 weekdays + 4.5 weekend days x 0.4), 12.8 to go (the month: 24.6).
    # The minutes grow: 5,500 x 12.8 / 11.8 = 5,966.1 -> 5,966 more -> 11,466, 6,466 over x $0.00072 = $4.65552 ->
    # $4.66 at the end of November (the $0.36 as a dollar run rate said $0.75). The $1.00 budget needs usage of $1.00
    # as rounded: exact >= $0.995 -> 1,381.9 -> 1,382 over -> 6,382 minutes, 882 more at 5,500 / 11.8 = 466.1 a
    # weekday: the rest of Sunday (0.2) 93.2, Monday 16 559.3 (6,059 minutes, 1,059 over -> $0.76), Tuesday 17
    # 1,025.4 -> 1,025 (6,525 minutes, 1,525 over -> $1.098 -> $1.10): Tuesday 17 November.
    assert (forecast.body["spent"], forecast.body["projected_total"], forecast.body["status"]) == (
        "0.36",
        "4.66",
        "under_budget",
    )
    assert forecast.body["budget_reached_on"] == "2026-11-17"
    found = call("GET", "/v1/accounts/acct_p/recommendations", token)
    assert found.status == 200, found.body
    assert [(r["kind"], r["saving_usd"], r["rooms"]) for r in found.body["recommendations"]] == [
        ("idle_camera_minutes", "0.36", ["RM_x"])
    ]


@pytest.fixture
def stripe_emulator(monkeypatch: pytest.MonkeyPatch, account_api: Any) -> EmulatorHTTPClient:
    from kilo_account_api import dependencies  # noqa: PLC0415

    http = EmulatorHTTPClient()
    monkeypatch.setattr(dependencies, "stripe_http_client", lambda: http)
    name = account_api.template.parameters["StripeApiKeySecretName"]
    account_api.clients["secretsmanager"].create_secret(Name=name, SecretString='{"api_key": "sk_test_emulated"}')
    return http


def test_given_an_admin_then_checkout_saves_a_card_for_the_accounts_customer_and_the_portal_opens(
    account_api: Any, stripe_emulator: EmulatorHTTPClient
) -> None:
    register(account_api, "acct_a", email="ops@a.example")
    first = call(
        "POST", "/v1/accounts/acct_a/payment-methods/checkout", ADMIN, {"success_url": "http://127.0.0.1:8000/ok"}
    )
    assert first.status == 200, first.body
    second = call("POST", "/v1/accounts/acct_a/payment-methods/checkout", ADMIN)
    assert second.status == 200
    assert first.body["url"] != second.body["url"]  # a new page per click
    created = [r for r in stripe_emulator.requests if r.method == "post" and r.path == "/v1/customers"]
    assert len(created) == 1  # the second click found the account's customer
    assert created[0].params["metadata"] == {"kilo_account_id": "acct_a"}
    sessions = [r.params for r in stripe_emulator.requests if r.path == "/v1/checkout/sessions"]
    assert [(s["mode"], s["client_reference_id"], s["success_url"]) for s in sessions[:1]] == [
        ("setup", "acct_a", "http://127.0.0.1:8000/ok")
    ]
    portal = call("POST", "/v1/accounts/acct_a/billing-portal", ADMIN, {"return_url": "http://127.0.0.1:8000/billing"})
    assert portal.status == 200, portal.body
    assert portal.body["url"].startswith("http")


def test_given_a_known_customer_then_checkout_and_the_portal_give_it_a_changed_profile_email_once(
    account_api: Any, stripe_emulator: EmulatorHTTPClient
) -> None:
    """D172: once the ledger knows the customer (a card saved, a card invoice issued), the profile's email and name
    still reach it - at the next Checkout or Portal page after they change, and with no request when unchanged."""
    import stripe  # noqa: PLC0415

    from kilo_billing.periods_store import DynamoLedgerStore  # noqa: PLC0415

    sdk = stripe.StripeClient("sk_test_emulated", http_client=stripe_emulator, max_network_retries=0)
    old = sdk.v1.customers.create({"email": "old@a.example", "metadata": {"kilo_account_id": "acct_a"}})
    register(account_api, "acct_a", email="ops@a.example", name="Acct A")
    DynamoLedgerStore(account_api.clients["dynamodb"], usage_table(account_api)).save_billing(
        "acct_a", customer_id=old.id
    )
    stripe_emulator.requests.clear()
    checkout = call("POST", "/v1/accounts/acct_a/payment-methods/checkout", ADMIN)
    assert checkout.status == 200, checkout.body
    assert (sdk.v1.customers.retrieve(old.id).email, sdk.v1.customers.retrieve(old.id).name) == (
        "ops@a.example",
        "Acct A",
    )
    stripe_emulator.requests.clear()
    assert call("POST", "/v1/accounts/acct_a/billing-portal", ADMIN).status == 200
    assert [r.path for r in stripe_emulator.requests] == ["/v1/billing_portal/sessions"]  # unchanged: no request

    changed = call("PUT", "/v1/accounts/acct_a/alert-preferences", ADMIN, {"email": "billing@a.example"})
    assert changed.status == 200, changed.body
    stripe_emulator.requests.clear()
    assert call("POST", "/v1/accounts/acct_a/billing-portal", ADMIN).status == 200
    updates = [r.params for r in stripe_emulator.requests if r.method == "post" and r.path == f"/v1/customers/{old.id}"]
    assert updates == [{"email": "billing@a.example"}]
    assert sdk.v1.customers.retrieve(old.id).email == "billing@a.example"
    assert not any(r.path == "/v1/customers" for r in stripe_emulator.requests)  # the known customer, no other


@pytest.mark.parametrize(
    ("path", "field", "url"),
    [
        ("payment-methods/checkout", "success_url", "https://evil.example/kilo"),
        ("payment-methods/checkout", "cancel_url", "https://dash.kilo.example.evil.example/"),
        ("payment-methods/checkout", "success_url", "https://dash.kilo.example@evil.example/"),  # userinfo trick
        ("payment-methods/checkout", "success_url", "http://dash.kilo.example/"),  # another scheme, another origin
        ("payment-methods/checkout", "cancel_url", "https://dash.kilo.example:8443/"),  # another port
        ("billing-portal", "return_url", "https://evil.example/"),
    ],
)
def test_given_a_return_address_off_the_dashboard_then_400_names_it_and_no_stripe_page_is_made(
    account_api: Any, stripe_emulator: EmulatorHTTPClient, monkeypatch: pytest.MonkeyPatch, path: str, field: str,
    url: str,
) -> None:  # fmt: skip
    from tests.account_api_support import clear_caches  # noqa: PLC0415

    monkeypatch.setenv("DASHBOARD_URL", "https://dash.kilo.example/app/")
    monkeypatch.setenv("EXTRA_DASHBOARD_ORIGINS", "https://billing.kilo.example")
    clear_caches()
    register(account_api, "acct_a")
    answer = call("POST", f"/v1/accounts/acct_a/{path}", ADMIN, {field: url})
    assert (answer.status, answer.body["field"]) == (400, field)
    assert answer.body["message"] == (
        f"{field}: {field} must be on the dashboard (https://dash.kilo.example, https://billing.kilo.example), "
        f"not {url!r}"
    )
    assert stripe_emulator.requests == []  # refused before any customer or page was asked for


def test_given_return_addresses_on_the_dashboards_origins_then_stripe_gets_them_as_sent(
    account_api: Any, stripe_emulator: EmulatorHTTPClient, monkeypatch: pytest.MonkeyPatch
) -> None:
    from tests.account_api_support import clear_caches  # noqa: PLC0415

    monkeypatch.setenv("DASHBOARD_URL", "https://dash.kilo.example/app/")
    monkeypatch.setenv("EXTRA_DASHBOARD_ORIGINS", "https://billing.kilo.example")
    clear_caches()
    register(account_api, "acct_a")
    sent = {"success_url": "https://DASH.kilo.example:443/app/#/cards", "cancel_url": "https://billing.kilo.example/x"}
    assert call("POST", "/v1/accounts/acct_a/payment-methods/checkout", ADMIN, sent).status == 200
    assert call("POST", "/v1/accounts/acct_a/payment-methods/checkout", ADMIN).status == 200  # the defaults
    sessions = [r.params for r in stripe_emulator.requests if r.path == "/v1/checkout/sessions"]
    assert [(s["success_url"], s["cancel_url"]) for s in sessions] == [
        ("https://dash.kilo.example/app/#/cards", "https://billing.kilo.example/x"),
        ("https://dash.kilo.example/app/?checkout=done", "https://dash.kilo.example/app/?checkout=cancelled"),
    ]


def test_given_a_crypto_account_then_checkout_is_a_conflict(account_api: Any, stripe_emulator: Any) -> None:
    register(account_api, "acct_c", billing_method="crypto")
    answer = call("POST", "/v1/accounts/acct_c/payment-methods/checkout", claims("acct_c", "owner"))
    assert answer.status == 409


@pytest.mark.parametrize(
    ("page", "stripe_path", "refused", "body"),
    [
        ("payment-methods/checkout", "/v1/checkout/sessions", "success_url", None),
        ("payment-methods/checkout", "/v1/checkout/sessions", "cancel_url", {"success_url": OK_URL}),
        ("payment-methods/checkout", "/v1/checkout/sessions", "success_url", {"success_url": OK_URL}),
        ("billing-portal", "/v1/billing_portal/sessions", "return_url", None),
        ("billing-portal", "/v1/billing_portal/sessions", "return_url", {"return_url": OK_URL}),
    ],
)
def test_given_stripe_refusing_a_page_url_we_admitted_then_503_whether_or_not_the_body_carried_it(
    account_api: Any,
    stripe_emulator: EmulatorHTTPClient,
    page: str,
    stripe_path: str,
    refused: str,
    body: dict[str, str] | None,
) -> None:
    """D325, D333 (review rev7 F3). Stripe answers its published 400 naming ``refused``. Every URL the page
    call gets passed ``check_return_url`` - on the dashboard's origins and within Stripe's documented URL rules -
    so the customer can send nothing Stripe would take instead: 503, ours to fix (an origin configured that Stripe
    refuses, say). Before: 400 naming the field when the body carried it (OK_URL, on our origin), 503 otherwise."""
    register(account_api, "acct_a", email="ops@a.example")
    original = stripe_emulator.request
    error = {"error": {"message": "Not a valid URL", "param": refused, "type": "invalid_request_error"}}

    def refusing(method: str, url: str, headers: Any, post_data: Any = None, **kwargs: Any) -> Any:
        if urlsplit(url).path == stripe_path:
            return json.dumps(error), 400, {"request-id": "req_refused"}
        return original(method, url, headers, post_data, **kwargs)

    stripe_emulator.request = refusing  # type: ignore[method-assign]

    answer = call("POST", f"/v1/accounts/acct_a/{page}", ADMIN, body)

    assert (answer.status, answer.body["code"], answer.body["field"]) == (503, "unavailable", None), answer.body


@pytest.mark.parametrize("page", ["payment-methods/checkout", "billing-portal"])
def test_given_a_configured_dashboard_url_stripe_would_refuse_then_a_default_page_url_is_503_and_stripe_not_called(
    account_api: Any, stripe_emulator: EmulatorHTTPClient, monkeypatch: pytest.MonkeyPatch, page: str
) -> None:
    """D333. The dashboard URL configured is 5,001 characters (Stripe's limit is 5,000): a body naming no URL
    gets the default, which the customer cannot fix - 503, and no customer or page is asked of Stripe."""
    from tests.account_api_support import clear_caches  # noqa: PLC0415

    too_long = "https://dash.kilo.example/" + "a" * 4975
    monkeypatch.setenv("DASHBOARD_URL", too_long)
    clear_caches()
    register(account_api, "acct_a")

    answer = call("POST", f"/v1/accounts/acct_a/{page}", ADMIN)

    assert (answer.status, answer.body["code"], answer.body["field"]) == (503, "unavailable", None)
    assert stripe_emulator.requests == []


def test_given_no_stripe_key_then_the_payment_pages_answer_503_with_a_request_id_only(account_api: Any) -> None:
    register(account_api, "acct_a")
    answer = call("POST", "/v1/accounts/acct_a/billing-portal", ADMIN)
    assert answer.status == 503
    from tests.conftest import LambdaContext  # noqa: PLC0415

    assert answer.body == {
        "code": "unavailable",
        "message": "try again shortly",
        "field": None,
        "request_id": LambdaContext().aws_request_id,
    }
    assert answer.headers["Retry-After"] == "5"
    assert datetime.now(tz=UTC) == NOW


@pytest.mark.parametrize(
    "secret",
    [
        '{"key": "sk_test_emulated"}',
        '{"api_key": ""}',
        '["sk_test_emulated"]',
        '{"api_key": "pk_test_emulated"}',  # the publishable key: not Stripe's secret key shape (D328)
    ],
)
def test_given_a_malformed_stripe_secret_then_the_payment_pages_answer_503_and_stripe_is_not_called(
    account_api: Any, monkeypatch: pytest.MonkeyPatch, secret: str
) -> None:
    from kilo_account_api import dependencies  # noqa: PLC0415

    http = EmulatorHTTPClient()
    monkeypatch.setattr(dependencies, "stripe_http_client", lambda: http)
    name = account_api.template.parameters["StripeApiKeySecretName"]
    account_api.clients["secretsmanager"].create_secret(Name=name, SecretString=secret)
    register(account_api, "acct_a")
    answer = call("POST", "/v1/accounts/acct_a/billing-portal", ADMIN)
    assert (answer.status, answer.body["code"]) == (503, "unavailable")
    assert http.requests == []


PREFERENCES = "/v1/accounts/acct_a/alert-preferences"


def test_given_channels_for_thousands_of_kinds_then_a_400_naming_channels_and_nothing_saved(account_api: Any) -> None:
    """Before: every kind was stored on the profile (kinds not sent are kept), so one request of ~12,000 kinds made
    the item too large for DynamoDB - a 500 - and many smaller saves could grow it until every writer of the
    profile failed."""
    register(account_api, "acct_a", email="ops@a.example")
    kinds = ["".join(chr(97 + (n // 26**place) % 26) for place in range(4)) + "_" * 30 for n in range(12_000)]
    answer = call("PUT", PREFERENCES, ADMIN, {"name": "Ops", "channels": {kind: ["email"] for kind in kinds}})
    assert (answer.status, answer.body["code"], answer.body["field"]) == (400, "invalid_request", "channels")
    assert (profile(account_api).name, profile(account_api).alert_preferences) == ("", ())


def test_given_an_alert_kind_that_does_not_exist_then_a_400_naming_it_and_nothing_saved(account_api: Any) -> None:
    register(account_api, "acct_a", email="ops@a.example")
    answer = call(
        "PUT", PREFERENCES, ADMIN, {"email": "new@a.example", "channels": {"budget_treshold": ["sms"]}}
    )  # a typo: the account would believe budget alerts go by SMS alone
    assert (answer.status, answer.body["field"]) == (400, "channels")
    assert answer.body["message"] == (
        "channels: alert 'budget_treshold' is not an alert kind; use allowance_threshold, budget_forecast, "
        "budget_hard_limit, budget_threshold, crypto_bill_reopened, crypto_bill_settled, crypto_payment_seen, "
        "crypto_quote_expiring, dispute_opened, invoice_issued, payment_failed, refund_failed"
    )
    assert (profile(account_api).email, profile(account_api).alert_preferences) == ("ops@a.example", ())


def test_given_an_unknown_kind_stored_before_then_the_form_sent_back_unchanged_is_saved(account_api: Any) -> None:
    """The dashboard sends back the channels it read: a kind stored before kinds were checked does not block the
    form; changing it does."""
    register(account_api, "acct_a", alert_preferences=(("old_kind", ("sms",)),))
    channels = {"old_kind": ["sms"], "budget_threshold": ["email"]}
    saved = call("PUT", PREFERENCES, ADMIN, {"name": "Ops", "channels": channels})
    assert (saved.status, saved.body["channels"]) == (200, channels)
    changed = call("PUT", PREFERENCES, ADMIN, {"channels": {"old_kind": ["email"]}})
    assert (changed.status, changed.body["field"]) == (400, "channels")


def test_given_more_than_64_unknown_kinds_stored_then_the_form_sent_back_saves_and_an_empty_list_removes_one(
    account_api: Any,
) -> None:
    """D171's bloated profiles: the dashboard sends back every kind it read; only known or changed kinds count
    toward the 64, and [] for a kind that is not an alert kind removes it (nothing else could)."""
    legacy = tuple((f"old_kind_{chr(97 + n // 26)}{chr(97 + n % 26)}", ("sms",)) for n in range(70))
    register(account_api, "acct_a", email="ops@a.example", alert_preferences=legacy)
    read = call("GET", PREFERENCES, ADMIN).body["channels"]
    assert len(read) == 70
    form = {"name": "", "email": "new@a.example", "phone": "", "channels": {**read, "budget_threshold": ["email"]}}
    saved = call("PUT", PREFERENCES, ADMIN, form)
    assert saved.status == 200, saved.body
    assert profile(account_api).email == "new@a.example"
    assert len(profile(account_api).alert_preferences) == 71

    removed = call("PUT", PREFERENCES, ADMIN, {"channels": {"old_kind_aa": [], "old_kind_ab": []}})
    assert removed.status == 200, removed.body
    kinds = dict(profile(account_api).alert_preferences)
    assert ("old_kind_aa" in kinds, "old_kind_ab" in kinds, kinds["old_kind_ac"], kinds["budget_threshold"]) == (
        False,
        False,
        ("sms",),
        ("email",),
    )
    again = call("PUT", PREFERENCES, ADMIN, {"channels": {"old_kind_aa": []}})  # a retried removal: nothing left to do
    assert (again.status, len(profile(account_api).alert_preferences)) == (200, 69)


def test_given_more_than_64_kinds_that_change_then_a_400_naming_channels_and_nothing_saved(account_api: Any) -> None:
    legacy = tuple((f"old_kind_{chr(97 + n // 26)}{chr(97 + n % 26)}", ("sms",)) for n in range(70))
    register(account_api, "acct_a", email="ops@a.example", alert_preferences=legacy)
    removals = {kind: [] for kind, _ in legacy[:65]}  # 65 changes in one save
    answer = call("PUT", PREFERENCES, ADMIN, {"email": "new@a.example", "channels": removals})
    assert (answer.status, answer.body["field"]) == (400, "channels")
    assert "at most 64" in answer.body["message"]
    assert (profile(account_api).email, len(profile(account_api).alert_preferences)) == ("ops@a.example", 70)
    assert call("PUT", PREFERENCES, ADMIN, {"channels": dict(list(removals.items())[:64])}).status == 200
    assert len(profile(account_api).alert_preferences) == 6


@pytest.mark.parametrize("kind", ["budget_hard_limit", "payment_failed"])
def test_given_no_channel_for_an_alert_that_must_reach_someone_then_a_400_naming_it_and_nothing_saved(
    account_api: Any, kind: str
) -> None:
    """D180: before, ``[]`` was saved and the hard-limit alert (calls about to stop) reached nobody."""
    register(account_api, "acct_a", email="ops@a.example")
    answer = call("PUT", PREFERENCES, ADMIN, {"name": "Ops", "channels": {kind: [], "budget_threshold": []}})
    assert (answer.status, answer.body["code"], answer.body["field"]) == (400, "invalid_request", "channels")
    assert answer.body["message"] == (
        f"channels: alert '{kind}' must go by at least one channel (email or sms); the kinds that must reach "
        "someone: budget_hard_limit, payment_failed"
    )
    assert (profile(account_api).name, profile(account_api).alert_preferences) == ("", ())
    chosen = call("PUT", PREFERENCES, ADMIN, {"channels": {kind: ["sms"], "budget_threshold": []}})
    assert (chosen.status, chosen.body["channels"]) == (200, {kind: ["sms"], "budget_threshold": []})


def test_given_no_channel_stored_before_for_the_hard_limit_then_the_form_sent_back_unchanged_is_saved(
    account_api: Any,
) -> None:
    register(account_api, "acct_a", email="ops@a.example", alert_preferences=(("budget_hard_limit", ()),))
    read = call("GET", PREFERENCES, ADMIN).body["channels"]
    assert read == {"budget_hard_limit": []}
    saved = call("PUT", PREFERENCES, ADMIN, {"name": "Ops", "channels": read})
    assert (saved.status, profile(account_api).name) == (200, "Ops")
    assert call("PUT", PREFERENCES, ADMIN, {"channels": {"budget_hard_limit": ["email"]}}).status == 200
    again = call("PUT", PREFERENCES, ADMIN, {"channels": {"budget_hard_limit": []}})  # chosen once: no way back
    assert (again.status, again.body["field"]) == (400, "channels")


@pytest.mark.parametrize(
    ("sent", "field", "found"),
    [
        ({"name": "Ops\u0007"}, "name", "U+0007 at position 4"),  # BEL
        ({"name": "Ops\r\nBcc: x@evil.example"}, "name", "U+000D at position 4"),
        ({"name": "\u0000"}, "name", "U+0000 at position 1"),
        ({"name": "Ops\u0085team"}, "name", "U+0085 at position 4"),  # C1 (NEL)
        ({"name": "Ops\u2028team"}, "name", "U+2028 at position 4"),  # line separator
        ({"name": "moc.\u202eevil"}, "name", "U+202E at position 5"),  # right-to-left override
        ({"email": "ops\u0001@a.example"}, "email", "U+0001 at position 4"),
        ({"email": "ops\u007f@a.example"}, "email", "U+007F at position 4"),  # DEL
    ],
)
def test_given_a_control_character_in_the_name_or_email_then_a_400_naming_the_field_and_nothing_saved(
    account_api: Any, sent: dict[str, str], field: str, found: str
) -> None:
    """D181: before, the name (shown in every alert) and an email's local part stored control characters."""
    register(account_api, "acct_a", email="ops@a.example")
    answer = call("PUT", PREFERENCES, ADMIN, {**sent, "channels": {"budget_threshold": ["email"]}})
    assert (answer.status, answer.body["code"], answer.body["field"]) == (400, "invalid_request", field)
    assert (
        answer.body["message"]
        == f"{field}: {field} contains the control character {found}; only printable text is accepted"
    )
    stored = profile(account_api)
    assert (stored.name, stored.email, stored.alert_preferences) == ("", "ops@a.example", ())


def test_given_a_name_with_a_control_character_stored_before_then_the_form_sent_back_unchanged_is_saved(
    account_api: Any,
) -> None:
    """The dashboard's form sends the stored name back as it read it (it has no field for it)."""
    register(account_api, "acct_a", name="Ops\u0007", email="ops@a.example")
    saved = call("PUT", PREFERENCES, ADMIN, {"name": "Ops\u0007", "email": "new@a.example", "channels": {}})
    assert (saved.status, profile(account_api).email) == (200, "new@a.example")
    changed = call("PUT", PREFERENCES, ADMIN, {"name": "Ops\u0008"})
    assert (changed.status, changed.body["field"]) == (400, "name")


def test_given_an_email_address_ses_cannot_send_to_then_a_400_naming_email_and_nothing_saved(account_api: Any) -> None:
    """Before, josé@example.com was saved (our pattern takes any local part) and every alert email to it went out
    as "=?utf-8?q?jos=C3=A9?=@example.com" to SES, which sends to 7-bit ASCII addresses only."""
    register(account_api, "acct_a", email="ops@a.example")
    answer = call("PUT", PREFERENCES, ADMIN, {"name": "Ops", "email": "jos\u00e9@a.example"})
    assert (answer.status, answer.body["field"]) == (400, "email")
    assert answer.body["message"] == (
        "email: email 'jos\u00e9@a.example': mail goes through SES, which takes ASCII addresses only"
    )
    assert (profile(account_api).name, profile(account_api).email) == ("", "ops@a.example")


def test_given_printable_text_in_any_script_then_the_name_is_saved_as_sent(account_api: Any) -> None:
    register(account_api, "acct_a", email="ops@a.example")
    name = "Équipe \u0645\u06cc\u200c\u0631 \U0001f468\u200d\U0001f4bb 東京"  # accents, ZWNJ, ZWJ emoji, CJK
    answer = call("PUT", PREFERENCES, ADMIN, {"name": name})
    assert (answer.status, profile(account_api).name) == (200, name)


@pytest.mark.parametrize("route", ["erase", "entitlements/check"])
@pytest.mark.parametrize(
    ("body", "field"), [({"confirm": True}, "confirm"), ({"account_id": "acct_b"}, "account_id"), ([], "body")]
)
def test_given_a_body_to_a_route_that_takes_none_then_a_400_naming_it_and_nothing_done(
    account_api: Any, route: str, body: Any, field: str
) -> None:
    register(account_api, "acct_a", email="ops@a.example")
    answer = call("POST", f"/v1/accounts/acct_a/{route}", OWNER, body)
    assert (answer.status, answer.body["code"], answer.body["field"]) == (400, "invalid_request", field)
    assert profile(account_api).email == "ops@a.example"  # not erased


@pytest.mark.parametrize("route", ["erase", "entitlements/check"])
@pytest.mark.parametrize("body", [None, {}])
def test_given_no_body_or_an_empty_object_to_a_route_that_takes_none_then_it_answers(
    account_api: Any, route: str, body: Any
) -> None:
    register(account_api, "acct_a", email="ops@a.example")
    store_members(account_api, "acct_a", STAFF)
    assert call("POST", f"/v1/accounts/acct_a/{route}", OWNER, body).status == 200


def test_given_late_usage_adjustment_lines_then_the_receipt_shows_the_billed_change_not_a_delta_against_the_allowance(
    account_api: Any,
) -> None:
    """D367 amended (av2): late-usage lines as invoicing.adjustment_lines writes them read "5,000 used · 50,000
    included · 3,000 billed" (the change beside the whole allowance). Billed 48,000 of 50,000, now 53,000: +5,000,
    billable 3,000 - 0 = 3,000 x $0.00072 = $2.16. Billed 53,000, now 51,000: -2,000, billable 1,000 - 3,000 = -2,000
    x $0.00072 = -$1.44. An adjustment line has no used/included of its own (null); billable is the change billed;
    its description names the change."""
    register(account_api, "acct_a")
    late = [
        Line(
            "adjustment",
            f"Late video usage for 2026-10 on team ({change} participant-minute)",
            amount,
            "2026-10",
            meter="video",
            tier="team",
            quantity=Decimal(billed),
            unit_price=Decimal("0.00072"),
            used=Decimal(change),
            included=Decimal(50000),
        )
        for change, billed, amount in (("+5000", 3000, Decimal("2.16")), ("-2000", -2000, Decimal("-1.44")))
    ]
    record = InvoiceRecord(
        invoice_id="acct_a/2026-11",
        account_id="acct_a",
        period="2026-11",
        number="KB-acct_a-00002",
        seq=2,
        method=BillingMethod.CARD,
        lines=tuple(late),
        status=InvoiceStatus.PAID,
        transitions=(("draft", "2026-11-28T06:00:00+00:00"),),
    )
    account_api.clients["dynamodb"].put_item(TableName=usage_table(account_api), Item=invoice_to_item(record))
    receipt = call("GET", "/v1/accounts/acct_a/invoices/KB-acct_a-00002", MEMBER)
    assert receipt.status == 200, receipt.body
    figures = [(line["used"], line["included"], line["billable"], line["amount"]) for line in receipt.body["lines"]]
    assert figures == [(None, None, "3000", "2.16"), (None, None, "-2000", "-1.44")]
    assert [line["description"] for line in receipt.body["lines"]] == [
        "Late video usage for 2026-10 on team (+5000 participant-minute)",
        "Late video usage for 2026-10 on team (-2000 participant-minute)",
    ]
