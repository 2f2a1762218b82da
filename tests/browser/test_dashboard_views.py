"""The dashboard's views in headless Chromium against canned account-API answers (review fa2): the page is served by
the dashboard's server pointed at a closed port, and Playwright answers its ``/v1/...`` requests from the JSON written
here (the API's own shapes, figures worked by hand from the price book), recording what the page sent. What the API
computes is tested on the API (tests/integration/test_account_api*.py); here, what the page shows of it."""

from __future__ import annotations

import base64
import json
import re
from collections.abc import Iterator
from typing import Any, Final
from urllib.parse import urlsplit

import pytest
from playwright.sync_api import expect

from kilo_dev.localstack import free_port
from kilo_dev.webserve import DashboardServer, SiteConfig

pytestmark = pytest.mark.browser

ACCOUNT = "acct_a"


@pytest.fixture(scope="module")
def site() -> Iterator[DashboardServer]:
    with DashboardServer(f"http://127.0.0.1:{free_port()}", SiteConfig()) as server:
        yield server


def _token(role: str = "owner") -> str:
    """A sign-in token as the local issuer's: the page reads its claims, never checks the signature (the API does)."""

    def part(data: dict[str, Any]) -> str:
        return base64.urlsafe_b64encode(json.dumps(data).encode()).decode().rstrip("=")

    claims = {"sub": f"user-{role}", "email": f"{role}@example.com", "kilo_account": ACCOUNT, "kilo_role": role}
    return f"{part({'alg': 'none', 'typ': 'JWT'})}.{part(claims)}.c2ln"


# the API's answer to a tier request without the header (handler ``_idempotency_key``; its integration test)
KEYLESS_TIER_REQUEST: Final = {
    "code": "invalid_request",
    "message": "header.idempotency-key: required: send an Idempotency-Key header, a new key (e.g. a UUID) per tier "
    "change and the same key on its retry",
    "field": "header.idempotency-key",
}


class FakeApi:
    """Answers the page's API requests: ``answers[(method, path)]`` is ``(status, body)``, the path without the
    query and the ``/v1/accounts/acct_a`` prefix (``/pricing`` is ``/v1/pricing``); everything else is a 404. A tier
    request (POST ``/subscription``) without ``Idempotency-Key`` is the API's 400 whatever ``answers`` says
    (D436): every dashboard path that posts it is checked to send the header. ``etags[(method, path)]``: the
    ``ETag`` header of that answer (D441); GET ``/usage`` has one unless a test removes it, as the API's always has."""

    def __init__(self, page: Any, answers: dict[tuple[str, str], tuple[int, Any]]) -> None:
        self.answers = answers
        self.etags: dict[tuple[str, str], str] = {("GET", "/usage"): '"v0"'}
        self.sent: list[tuple[str, str, Any]] = []
        self.keys: list[str | None] = []  # each POST's Idempotency-Key (None: not sent)
        self.if_matches: list[str | None] = []  # each POST's If-Match (None: not sent)
        page.route("**/v1/**", self._answer)

    def _answer(self, route: Any) -> None:
        request = route.request
        path = urlsplit(request.url).path.removeprefix(f"/v1/accounts/{ACCOUNT}").removeprefix("/v1")
        body = json.loads(request.post_data) if request.post_data else None
        self.sent.append((request.method, path, body))
        if request.method == "POST":
            self.keys.append(request.headers.get("idempotency-key"))
            self.if_matches.append(request.headers.get("if-match"))
        status, answer = self.answers.get((request.method, path), (404, {"code": "not_found", "message": path}))
        if (request.method, path) == ("POST", "/subscription") and request.headers.get("idempotency-key") is None:
            status, answer = 400, KEYLESS_TIER_REQUEST
        etag = self.etags.get((request.method, path))
        headers = {} if etag is None else {"ETag": etag}
        route.fulfill(status=status, content_type="application/json", body=json.dumps(answer), headers=headers)


def _sign_in(page: Any, site: DashboardServer, route: str, role: str = "owner") -> None:
    page.goto(f"{site.url}/#token={_token(role)}")
    page.wait_for_url("**/#/usage")
    if route != "usage":
        page.goto(f"{site.url}/#/{route}")


def _meter(meter: str, unit: str, used: str, included: str | None, share: str | None, **more: Any) -> dict[str, Any]:
    found = {"meter": meter, "unit": unit, "used": used, "included": included, "used_percent": share}
    return found | {"overage": "0", "amount": "0.00", "segments": []} | more


def _usage(meters: list[dict[str, Any]], scheduled: dict[str, str] | None = None) -> dict[str, Any]:
    return {
        "account_id": ACCOUNT,
        "period": "2026-11",
        "tier": "team",
        "as_of": "2026-11-20T12:00:00Z",
        "open_sessions": 0,
        "meters": meters,
        "fee": "29.00",
        "usage": "0.00",
        "total": "29.00",
        "lines": [],
        "daily": [],
        "scheduled_change": scheduled,
    }


# a price book of two tiers, no meters: what the pricing page needs to draw Personal's and Team's cards
PERSONAL_AND_TEAM: Final = {
    "version": "2026-01", "effective_from": "2026-01-01", "currency": "usd", "markup": "1.2", "meters": [],
    "tiers": [{"id": "personal", "name": "Personal", "rank": 0, "monthly_fee": "0.00", "included": {},
               "overage": "pay_as_you_go", "entitlements": []},
              {"id": "team", "name": "Team", "rank": 1, "monthly_fee": "29.00", "included": {},
               "overage": "pay_as_you_go", "entitlements": []}],
}  # fmt: skip

USAGE_PAGE = {
    ("GET", "/forecast"): (
        200,
        {
            "account_id": ACCOUNT,
            "period": "2026-11",
            "as_of": "2026-11-20T12:00:00Z",
            "spent": "29.00",
            "projected_total": None,
            "budget_usd": None,
            "hard_limit_usd": None,
            "budget_reached_on": None,
            "hard_limit_reached_on": None,
            "status": "no_budget",
        },
    ),
    ("GET", "/recommendations"): (200, {"account_id": ACCOUNT, "period": "2026-11", "recommendations": []}),
    ("GET", "/meetings"): (200, {"account_id": ACCOUNT, "period": "2026-11", "meetings": [], "next_cursor": None}),
}


def _open_receipt(page: Any, site: DashboardServer, summary: dict[str, Any], receipt: dict[str, Any]) -> None:
    """The billing page with one invoice (``summary``), its receipt opened (``receipt``, the API's answer)."""
    number = summary["number"]
    FakeApi(
        page,
        USAGE_PAGE
        | {
            ("GET", "/usage"): (200, _usage([])),
            ("GET", "/invoices"): (200, {"account_id": ACCOUNT, "invoices": [summary]}),
            ("GET", f"/invoices/{number}"): (200, receipt),
        },
    )
    _sign_in(page, site, "billing")
    page.get_by_role("button", name=f"Receipt {number}").click()


def test_given_shares_of_an_allowance_then_percent_never_shows_100_before_it_is_used_up(
    page: Any, site: DashboardServer
) -> None:
    """F7 (review fa2): dom.js ``percent`` rounded to one decimal half-up: 99.95 to 99.99 showed "100 %" (with no
    overage yet) and 0.04 "0 %". Now cut to one decimal, and a share above 0 below 0.1 is "<0.1 %"."""
    FakeApi(page, {})
    page.goto(site.url + "/#/pricing")
    shares = ["99.95", "99.99", "100.00", "120.00", "0.04", "0.00", "0.10", "12.34", "1234.56", None]
    shown = page.evaluate(
        "async (shares) => { const d = await import('/js/dom.js'); return shares.map(d.percent); }", shares
    )
    assert shown == ["99.9 %", "99.9 %", "100 %", "120 %", "<0.1 %", "0 %", "0.1 %", "12.3 %", "1,234.5 %", "—"]


def test_given_usage_covered_by_the_allowance_then_the_receipt_shows_used_included_and_billed(
    page: Any, site: DashboardServer
) -> None:
    """D367: a covered line showed "0" as its quantity. Team, October: 40,000 of 50,000 video minutes (0 billed,
    $0.00); 130,000 of 100,000 audio minutes, 30,000 x $0.00036 = $10.80; total 29.00 + 10.80 = 39.80."""
    summary = {
        "invoice_id": f"{ACCOUNT}/2026-10",
        "number": "KB-acct_a-00001",
        "method": "card",
        "period": "2026-10",
        "status": "paid",
        "total": "39.80",
        "hosted_url": None,
        "pdf_url": None,
        "amount_due": "39.80",
        "credit_notes": [],
    }

    def line(kind: str, meter: str | None, description: str, figures: tuple[str | None, ...], amount: str) -> Any:
        quantity, used, included, billable = figures
        return {"kind": kind, "meter": meter, "description": description, "quantity": quantity,
                "unit_price": None, "used": used, "included": included, "billable": billable, "amount": amount,
                "start": None, "end": None}  # fmt: skip

    receipt = summary | {
        "currency": "usd",
        "refunded": "0.00",
        "short_paid": "0.00",
        "charged_back": "0.00",
        "transitions": [],
        "lines": [
            line("fee", None, "Team, monthly fee", ("1", None, None, None), "29.00"),
            line("usage", "video", "Video on Team", ("0", "40000", "50000", "0"), "0.00"),
            line("usage", "audio", "Audio on Team", ("30000", "130000", "100000", "30000"), "10.80"),
        ],
    }
    _open_receipt(page, site, summary, receipt)
    expect(page.get_by_test_id("receipt-total")).to_have_text("$39.80")
    rows = page.locator("#receipt tbody tr")
    expect(rows.nth(0)).to_contain_text("1")
    expect(rows.nth(1)).to_contain_text("40,000 used · 50,000 included · 0 billed")
    expect(rows.nth(2)).to_contain_text("130,000 used · 100,000 included · 30,000 billed")


def test_given_only_a_hard_limit_saved_then_the_page_says_so_not_budget_removed(
    page: Any, site: DashboardServer
) -> None:
    """D368: saving a hard limit with the budget empty said "Budget removed."; a refused limit shows the API's
    message naming the bill so far (Team: $29.00 + 50,000 x $0.00072 = $65.00)."""
    budget = {"account_id": ACCOUNT, "budget_usd": None, "alert_percentages": [50, 80, 100], "hard_limit_usd": None}
    preferences = {"account_id": ACCOUNT, "name": "", "email": "", "phone": "", "phone_verified": False,
                   "channels": {}}  # fmt: skip
    refusal = (
        "hard limit $40 is not above $65.00, this month's bill so far: every call would be refused at once; set it"
        " above $65.00, or leave it empty"
    )
    answers = USAGE_PAGE | {
        ("GET", "/usage"): (200, _usage([])),
        ("GET", "/budget"): (200, budget),
        ("GET", "/alert-preferences"): (200, preferences),
        ("PUT", "/budget"): (400, {"code": "invalid_request", "field": "hard_limit_usd", "message": refusal}),
    }
    api = FakeApi(page, answers)
    _sign_in(page, site, "settings")
    limit = page.get_by_role("textbox", name="Hard limit")
    limit.fill("40")
    page.get_by_role("button", name="Save budget").click()
    expect(page.get_by_role("alert")).to_contain_text("is not above $65.00, this month's bill so far")
    answers[("PUT", "/budget")] = (200, budget | {"hard_limit_usd": "80.00"})
    limit.fill("80")
    page.get_by_role("button", name="Save budget").click()
    expect(page.get_by_role("status")).to_have_text("No budget; hard limit $80.00 saved.")
    assert api.sent[-1] == (
        "PUT",
        "/budget",
        {"budget_usd": None, "hard_limit_usd": "80", "alert_percentages": [50, 80, 100]},
    )
    answers[("PUT", "/budget")] = (200, budget)
    limit.fill("")
    page.get_by_role("button", name="Save budget").click()
    expect(page.get_by_role("status")).to_have_text("Budget and hard limit removed.")


def test_given_a_tier_change_mid_month_then_each_meter_shows_each_tiers_allowance(
    page: Any, site: DashboardServer
) -> None:
    """D369: Team to Enterprise on Nov 16 showed "40,000 participant-minute · unlimited" beside "Beyond the
    allowance ... $3.60". Team's 15/30 of 50,000 = 25,000 included, 30,000 used (120 %), 5,000 over x $0.00072 = $3.60;
    Enterprise 10,000, unlimited."""
    segments = [
        {"tier": "team", "start": "2026-11-01T00:00:00Z", "end": "2026-11-16T00:00:00Z", "used": "30000",
         "included": "25000", "used_percent": "120.00", "overage": "5000", "amount": "3.60"},
        {"tier": "enterprise", "start": "2026-11-16T00:00:00Z", "end": "2026-12-01T00:00:00Z", "used": "10000",
         "included": None, "used_percent": None, "overage": "0", "amount": "0.00"},
    ]  # fmt: skip
    video = _meter("video", "participant-minute", "40000", "25000", "120.00", overage="5000", amount="3.60",
                   segments=segments)  # fmt: skip
    audio = _meter("audio", "participant-minute", "49990", "50000", "99.98")  # 49,990 of 50,000: 99.98 %, not 100
    FakeApi(page, USAGE_PAGE | {("GET", "/usage"): (200, _usage([video, audio]))})
    _sign_in(page, site, "usage")
    expect(page.get_by_test_id("used-video")).to_have_text("40,000 participant-minute this month")
    parts = page.get_by_test_id("segments-video").locator("li")
    expect(parts).to_have_text([
        "team 2026-11-01 to 2026-11-16: 30,000 of 25,000 included (120 %)",
        "enterprise 2026-11-16 to 2026-12-01: 10,000 participant-minute · unlimited",
    ])  # fmt: skip
    expect(page.get_by_test_id("overage-video")).to_contain_text("$3.60")
    expect(page.get_by_test_id("used-audio")).to_have_text("49,990 of 50,000 included (99.9 %)")
    expect(page.get_by_test_id("segments-audio")).to_have_count(0)  # one segment: no list


def test_given_a_scheduled_downgrade_then_pricing_shows_it_and_an_admin_can_stay_on_the_current_tier(
    page: Any, site: DashboardServer
) -> None:
    """D370: Team -> Personal on Dec 1 (D118) showed nowhere, and the current tier's card had no button, so the
    cancel (asking for the tier in effect: ``pending_change_cancelled``) could not be reached from the dashboard."""

    def tier(tier_id: str, name: str, rank: int, fee: str) -> dict[str, Any]:
        return {"id": tier_id, "name": name, "rank": rank, "monthly_fee": fee, "included": {"video": "5000"},
                "overage": "pay_as_you_go", "entitlements": []}  # fmt: skip

    book = {
        "version": "2026-01",
        "effective_from": "2026-01-01",
        "currency": "usd",
        "markup": "1.2",
        "meters": [{"meter": "video", "unit": "participant-minute", "unit_price": "0.00072", "base_price": "0.0006"}],
        "tiers": [tier("personal", "Personal", 0, "0.00"), tier("team", "Team", 1, "29.00")],
    }
    scheduled = {"tier": "personal", "effective_at": "2026-12-01T00:00:00Z"}
    cancelled = {"account_id": ACCOUNT, "current_tier": "team", "requested_tier": "team",
                 "effective_at": "2026-11-20T12:00:00Z", "change": "pending_change_cancelled"}  # fmt: skip
    answers = USAGE_PAGE | {
        ("GET", "/usage"): (200, _usage([], scheduled)),
        ("GET", "/pricing"): (200, book),
        ("POST", "/subscription"): (200, cancelled),
    }
    api = FakeApi(page, answers)
    _sign_in(page, site, "usage")
    expect(page.get_by_test_id("usage-scheduled-change")).to_contain_text("moving to personal on 2026-12-01")
    page.goto(f"{site.url}/#/pricing")
    expect(page.get_by_test_id("scheduled-change")).to_have_text("Moving to Personal on 2026-12-01.")
    expect(page.get_by_test_id("scheduled-tier")).to_have_text("Your tier from 2026-12-01")
    answers[("GET", "/usage")] = (200, _usage([]))  # the page is drawn again from the API (av2): no change now
    page.get_by_role("button", name="Stay on Team").click()
    expect(page.get_by_role("status")).to_have_text("You stay on Team: the scheduled change is cancelled.")
    assert ("POST", "/subscription", {"tier": "team"}) in api.sent
    expect(page.get_by_test_id("scheduled-change")).to_have_count(0)
    expect(page.get_by_role("button", name="Stay on Team")).to_have_count(0)


def test_given_a_scheduled_downgrade_then_a_member_sees_it_without_the_button(page: Any, site: DashboardServer) -> None:
    book = {"version": "2026-01", "effective_from": "2026-01-01", "currency": "usd", "markup": "1.2", "meters": [],
            "tiers": [{"id": "team", "name": "Team", "rank": 1, "monthly_fee": "29.00", "included": {},
                       "overage": "pay_as_you_go", "entitlements": []}]}  # fmt: skip
    scheduled = {"tier": "personal", "effective_at": "2026-12-01T00:00:00Z"}
    FakeApi(page, USAGE_PAGE | {("GET", "/usage"): (200, _usage([], scheduled)), ("GET", "/pricing"): (200, book)})
    _sign_in(page, site, "pricing", role="member")
    expect(page.get_by_test_id("scheduled-change")).to_have_text("Moving to personal on 2026-12-01.")
    expect(page.get_by_role("button", name="Stay on Team")).to_have_count(0)


def test_given_two_limited_tier_segments_then_each_has_its_own_bar_and_no_combined_share(
    page: Any, site: DashboardServer
) -> None:
    """D369 amended (av2): Personal Nov 1-16 (5,000 x 15/30 = 2,500 included, 10,000 used = 400 %, 7,500 over x
    $0.00072 = $5.40), Team Nov 16-30 (50,000 x 15/30 = 25,000 included, 0 used). The page showed one bar "36.3 % of
    the allowance used" (10,000 / 27,500) beside "Beyond the allowance ... $5.40". The API sends no combined share
    (null) with two limited segments: a bar per segment, none for the meter."""
    segments = [
        {"tier": "personal", "start": "2026-11-01T00:00:00Z", "end": "2026-11-16T00:00:00Z", "used": "10000",
         "included": "2500", "used_percent": "400.00", "overage": "7500", "amount": "5.40"},
        {"tier": "team", "start": "2026-11-16T00:00:00Z", "end": "2026-12-01T00:00:00Z", "used": "0",
         "included": "25000", "used_percent": "0.00", "overage": "0", "amount": "0.00"},
    ]  # fmt: skip
    video = _meter("video", "participant-minute", "10000", "27500", None, overage="7500", amount="5.40",
                   segments=segments)  # fmt: skip
    FakeApi(page, USAGE_PAGE | {("GET", "/usage"): (200, _usage([video]))})
    _sign_in(page, site, "usage")
    expect(page.get_by_test_id("segments-video").locator("li")).to_have_text([
        "personal 2026-11-01 to 2026-11-16: 10,000 of 2,500 included (400 %)",
        "team 2026-11-16 to 2026-12-01: 0 of 25,000 included (0 %)",
    ])  # fmt: skip
    bars = page.locator("[data-meter=video] progress")
    expect(bars).to_have_count(2)
    expect(
        page.get_by_label("Video minutes, personal 2026-11-01 to 2026-11-16: 400 % of the allowance used")
    ).to_have_count(1)
    expect(page.get_by_label("Video minutes, team 2026-11-16 to 2026-12-01: 0 % of the allowance used")).to_have_count(
        1
    )
    expect(page.get_by_text("36.3 %")).to_have_count(0)
    expect(page.get_by_test_id("overage-video")).to_contain_text("$5.40")


def test_given_a_scheduled_downgrade_cancelled_then_the_pricing_page_offers_the_downgrade_again(
    page: Any, site: DashboardServer
) -> None:
    """Review of D370 (av2): after "Stay on Team" the Personal card's "Move to Personal next month" came back only
    on reload; the page is drawn again from the API's answers (no scheduled change)."""
    book = PERSONAL_AND_TEAM
    scheduled = {"tier": "personal", "effective_at": "2026-12-01T00:00:00Z"}
    cancelled = {"account_id": ACCOUNT, "current_tier": "team", "requested_tier": "team",
                 "effective_at": "2026-11-20T12:00:00Z", "change": "pending_change_cancelled"}  # fmt: skip
    answers = USAGE_PAGE | {
        ("GET", "/usage"): (200, _usage([], scheduled)),
        ("GET", "/pricing"): (200, book),
        ("POST", "/subscription"): (200, cancelled),
    }
    FakeApi(page, answers)
    _sign_in(page, site, "pricing")
    expect(page.get_by_test_id("scheduled-tier")).to_have_text("Your tier from 2026-12-01")
    expect(page.get_by_role("button", name="Move to Personal next month")).to_have_count(0)
    answers[("GET", "/usage")] = (200, _usage([]))  # what the API answers once the change is cancelled
    page.get_by_role("button", name="Stay on Team").click()
    expect(page.get_by_role("status")).to_have_text("You stay on Team: the scheduled change is cancelled.")
    expect(page.get_by_role("button", name="Move to Personal next month")).to_have_count(1)
    expect(page.get_by_test_id("scheduled-tier")).to_have_count(0)


def test_given_stay_on_answered_other_than_a_cancel_then_the_page_says_what_the_api_answered(
    page: Any, site: DashboardServer
) -> None:
    """Review api3 #1: "Stay on Team" said "the scheduled change is cancelled" whatever the API answered. Before the
    route's fix, Team with Personal from Dec 1 and an operator's Team from Jan 15 2027 answered
    ``downgrade_at_period_end`` effective 2027-01-15 (nothing cancelled). The message follows the answer's ``change``
    as the tier buttons' does: "Team from 2027-01-15; until then your tier stays." (2027-01-15T00:00Z; the UTC day
    as the page writes it since api4)."""
    book = PERSONAL_AND_TEAM
    scheduled = {"tier": "personal", "effective_at": "2026-12-01T00:00:00Z"}
    answer = {"account_id": ACCOUNT, "current_tier": "team", "requested_tier": "team",
              "effective_at": "2027-01-15T00:00:00Z", "change": "downgrade_at_period_end"}  # fmt: skip
    answers = USAGE_PAGE | {
        ("GET", "/usage"): (200, _usage([], scheduled)),
        ("GET", "/pricing"): (200, book),
        ("POST", "/subscription"): (200, answer),
    }
    FakeApi(page, answers)
    _sign_in(page, site, "pricing")
    page.get_by_role("button", name="Stay on Team").click()
    expect(page.get_by_role("status")).to_have_text("Team from 2027-01-15; until then your tier stays.")
    expect(page.get_by_test_id("scheduled-change")).to_have_text("Moving to Personal on 2026-12-01.")


def test_given_a_downgrade_answered_in_a_us_browser_then_its_day_is_the_utc_day_the_page_shows(
    new_york_page: Any, site: DashboardServer
) -> None:
    """Review api4 #3: Team; the customer clicks "Move to Personal next month"; the API answers
    ``downgrade_at_period_end`` effective 2026-12-01T00:00:00Z (the period start, UTC). In New York (UTC-5) that
    instant is Nov 30 19:00 local, so ``toLocaleDateString()`` said "Personal from 11/30/2026" - a day before the
    change, and not the "2026-12-01" the page writes for a scheduled change. Now the answer's UTC day, as the page
    writes it: "Personal from 2026-12-01; until then your tier stays."."""
    page = new_york_page
    book = PERSONAL_AND_TEAM
    answer = {"account_id": ACCOUNT, "current_tier": "team", "requested_tier": "personal",
              "effective_at": "2026-12-01T00:00:00Z", "change": "downgrade_at_period_end"}  # fmt: skip
    answers = USAGE_PAGE | {
        ("GET", "/usage"): (200, _usage([])),
        ("GET", "/pricing"): (200, book),
        ("POST", "/subscription"): (200, answer),
    }
    FakeApi(page, answers)
    _sign_in(page, site, "pricing")
    page.get_by_role("button", name="Move to Personal next month").click()
    expect(page.get_by_role("status")).to_have_text("Personal from 2026-12-01; until then your tier stays.")


def test_given_a_refused_hard_limit_then_the_hard_limit_field_has_the_focus(page: Any, site: DashboardServer) -> None:
    """Review of D368 (av2): the refusal names ``hard_limit_usd`` but the budget field took the focus."""
    budget = {"account_id": ACCOUNT, "budget_usd": "50", "alert_percentages": [50, 80, 100], "hard_limit_usd": None}
    preferences = {"account_id": ACCOUNT, "name": "", "email": "", "phone": "", "phone_verified": False,
                   "channels": {}}  # fmt: skip
    refusal = "hard limit $40 is not above $65.00, this month's bill so far"
    answers = USAGE_PAGE | {
        ("GET", "/usage"): (200, _usage([])),
        ("GET", "/budget"): (200, budget),
        ("GET", "/alert-preferences"): (200, preferences),
        ("PUT", "/budget"): (400, {"code": "invalid_request", "field": "hard_limit_usd", "message": refusal}),
    }
    FakeApi(page, answers)
    _sign_in(page, site, "settings")
    limit = page.get_by_role("textbox", name="Hard limit")
    limit.fill("40")
    page.get_by_role("button", name="Save budget").click()
    expect(page.get_by_role("alert")).to_contain_text("is not above $65.00")
    expect(limit).to_be_focused()
    answers[("PUT", "/budget")] = (400, {"code": "invalid_request", "field": "budget_usd", "message": "budget"})
    page.get_by_role("button", name="Save budget").click()
    expect(page.get_by_role("textbox", name="Budget amount (USD)")).to_be_focused()


def test_given_late_usage_lines_then_the_receipt_shows_the_signed_change_billed(
    page: Any, site: DashboardServer
) -> None:
    """D367 amended (av2): late-usage lines carry no used/included (the API sends null); the receipt shows the
    change billed, signed: billed 48,000 of 50,000, now 53,000: +3,000 x $0.00072 = $2.16; billed 53,000, now
    51,000: 1,000 - 3,000 = -2,000 x $0.00072 = -$1.44; total 2.16 - 1.44 = 0.72."""
    summary = {"invoice_id": f"{ACCOUNT}/2026-11", "number": "KB-acct_a-00002", "method": "card", "period": "2026-11",
               "status": "paid", "total": "0.72", "hosted_url": None, "pdf_url": None, "amount_due": "0.72",
               "credit_notes": []}  # fmt: skip

    def late(change: str, billed: str, amount: str) -> dict[str, Any]:
        return {"kind": "adjustment", "meter": "video", "unit_price": "0.00072", "quantity": billed, "used": None,
                "included": None, "billable": billed, "amount": amount, "start": None, "end": None,
                "description": f"Late video usage for 2026-10 on team ({change} participant-minute)"}  # fmt: skip

    receipt = summary | {"currency": "usd", "refunded": "0.00", "short_paid": "0.00", "charged_back": "0.00",
                         "transitions": [], "lines": [late("+5000", "3000", "2.16"), late("-2000", "-2000", "-1.44")]}  # fmt: skip
    _open_receipt(page, site, summary, receipt)
    rows = page.locator("#receipt tbody tr")
    expect(rows.nth(0)).to_contain_text("+3,000 billed")
    expect(rows.nth(1)).to_contain_text("-2,000 billed")
    expect(page.locator("#receipt")).not_to_contain_text("used ·")


UUID = re.compile(r"^[0-9a-f]{8}-[0-9a-f]{4}-4[0-9a-f]{3}-[89ab][0-9a-f]{3}-[0-9a-f]{12}$")  # crypto.randomUUID()


def test_given_a_tier_click_then_it_sends_an_idempotency_key_kept_for_its_retry_after_no_answer(
    page: Any, site: DashboardServer
) -> None:
    """D377: "Move to Personal next month" sends an ``Idempotency-Key`` (a v4 UUID). The API is down (503: the
    change may have been made, its answer lost): the click made again sends the SAME key, so the API would replay
    the first answer. A refusal (409) is an answer: the next click is a new request with a new key; then the 200."""
    book = PERSONAL_AND_TEAM
    answer = {"account_id": ACCOUNT, "current_tier": "team", "requested_tier": "personal",
              "effective_at": "2026-12-01T00:00:00Z", "change": "downgrade_at_period_end"}  # fmt: skip
    answers = USAGE_PAGE | {
        ("GET", "/usage"): (200, _usage([])),
        ("GET", "/pricing"): (200, book),
        ("POST", "/subscription"): (503, {"code": "unavailable", "message": "try again", "field": None}),
    }
    api = FakeApi(page, answers)
    _sign_in(page, site, "pricing")
    button = page.get_by_role("button", name="Move to Personal next month")
    button.click()
    expect(page.get_by_text("try again")).to_have_count(1)
    button.click()  # the retry of the click that got no answer
    expect(page.get_by_text("try again")).to_have_count(1)
    answers[("POST", "/subscription")] = (409, {"code": "conflict", "message": "changed meanwhile", "field": None})
    button.click()
    expect(page.get_by_text("changed meanwhile")).to_have_count(1)
    answers[("POST", "/subscription")] = (200, answer)
    button.click()
    expect(page.get_by_role("status")).to_have_text("Personal from 2026-12-01; until then your tier stays.")
    first, retried, refused, fresh = api.keys
    assert [bool(UUID.match(key or "")) for key in api.keys] == [True] * 4, api.keys
    assert (retried, refused) == (first, first)  # the 503's retries: one click's key
    assert fresh != first  # after an answer: a new click, a new key


def test_given_a_tier_click_answered_in_progress_then_its_retry_keeps_the_key(page: Any, site: DashboardServer) -> None:
    """D436: the API answers 409 naming ``header.idempotency-key`` while the request with that key is still being
    decided (a concurrent retry): not an answer to the change, so the click made again sends the SAME key and gets
    the first request's stored answer; another 409 (no field: "changed meanwhile") is an answer: a new key next."""
    answer = {"account_id": ACCOUNT, "current_tier": "team", "requested_tier": "personal",
              "effective_at": "2026-12-01T00:00:00Z", "change": "downgrade_at_period_end"}  # fmt: skip
    in_progress = {"code": "conflict", "field": "header.idempotency-key",
                   "message": "the request with this Idempotency-Key is in progress; retry"}  # fmt: skip
    answers = USAGE_PAGE | {
        ("GET", "/usage"): (200, _usage([])),
        ("GET", "/pricing"): (200, PERSONAL_AND_TEAM),
        ("POST", "/subscription"): (409, in_progress),
    }
    api = FakeApi(page, answers)
    _sign_in(page, site, "pricing")
    button = page.get_by_role("button", name="Move to Personal next month")
    button.click()
    expect(page.get_by_text("in progress; retry")).to_have_count(1)
    answers[("POST", "/subscription")] = (409, {"code": "conflict", "message": "changed meanwhile", "field": None})
    button.click()  # the retry of the click answered "in progress"
    expect(page.get_by_text("changed meanwhile")).to_have_count(1)
    answers[("POST", "/subscription")] = (200, answer)
    button.click()
    expect(page.get_by_role("status")).to_have_text("Personal from 2026-12-01; until then your tier stays.")
    first, retried, fresh = api.keys
    assert [bool(UUID.match(key or "")) for key in api.keys] == [True] * 3, api.keys
    assert retried == first  # "in progress" is no answer: the same click's key
    assert fresh != first  # after an answer: a new click, a new key


def test_given_the_plan_changed_since_the_pricing_page_was_drawn_then_its_click_is_refused_and_the_page_redrawn(
    page: Any, site: DashboardServer
) -> None:
    """D441: the pricing page drawn on Team, nothing scheduled (GET /usage's ETag "v1"); another admin then asks for
    Personal from Dec 1. "Move to Personal next month" sends If-Match "v1"; the API's 412 (its body as the handler
    answers it) is not shown as an error: the page is drawn again from the API (Moving to Personal on 2026-12-01)
    and says the plan changed meanwhile and nothing was changed."""
    scheduled = {"tier": "personal", "effective_at": "2026-12-01T00:00:00Z"}
    refused = {
        "code": "precondition_failed",
        "message": "the subscription changed since it was read (now on team, moving to personal on 2026-12-01, "
        'version "v2"); nothing was changed: read it again and send the request with its new ETag',
        "field": "header.if-match",
        "current": {"tier": "team", "scheduled_change": scheduled, "etag": '"v2"'},
    }
    answers = USAGE_PAGE | {
        ("GET", "/usage"): (200, _usage([])),
        ("GET", "/pricing"): (200, PERSONAL_AND_TEAM),
        ("POST", "/subscription"): (412, refused),
    }
    api = FakeApi(page, answers)
    api.etags[("GET", "/usage")] = '"v1"'
    _sign_in(page, site, "pricing")
    button = page.get_by_role("button", name="Move to Personal next month")
    expect(button).to_be_visible()
    answers[("GET", "/usage")] = (200, _usage([], scheduled))  # another admin's click, meanwhile
    api.etags[("GET", "/usage")] = '"v2"'
    button.click()
    expect(page.get_by_role("status")).to_have_text(
        "Your plan changed meanwhile, so nothing was changed. The page now shows your plan as it is: choose again."
    )
    expect(page.get_by_test_id("scheduled-change")).to_have_text("Moving to Personal on 2026-12-01.")
    expect(page.get_by_role("alert")).to_have_count(0)
    assert api.if_matches == ['"v1"']


def test_given_a_412_and_the_pricing_page_failing_to_redraw_then_it_says_to_reload_the_page(
    page: Any, site: DashboardServer
) -> None:
    """D441: the click's 412 as above, but drawing the page again fails (GET /v1/pricing 503): the failure does not
    escape silently with the button disabled - an error box says nothing was changed and to reload the page, and the
    status never claims "The page now shows your plan as it is" (it does not)."""
    refused = {
        "code": "precondition_failed",
        "message": "the subscription changed since it was read",
        "field": "header.if-match",
        "current": {"tier": "team", "scheduled_change": None, "etag": '"v2"'},
    }
    answers = USAGE_PAGE | {
        ("GET", "/usage"): (200, _usage([])),
        ("GET", "/pricing"): (200, PERSONAL_AND_TEAM),
        ("POST", "/subscription"): (412, refused),
    }
    api = FakeApi(page, answers)
    api.etags[("GET", "/usage")] = '"v1"'
    _sign_in(page, site, "pricing")
    button = page.get_by_role("button", name="Move to Personal next month")
    expect(button).to_be_visible()
    answers[("GET", "/pricing")] = (503, {"code": "unavailable", "message": "the price book is unavailable"})
    button.click()
    expect(page.get_by_role("alert")).to_contain_text("nothing was changed")
    expect(page.get_by_role("alert")).to_contain_text("reload the page")
    expect(page.get_by_role("status")).not_to_contain_text("The page now shows your plan as it is")
    assert api.if_matches == ['"v1"']


def test_given_no_etag_with_the_usage_answer_then_a_tier_click_is_refused_in_the_page_and_nothing_is_sent(
    page: Any, site: DashboardServer
) -> None:
    """D441: GET /usage answered without an ETag: a tier click is not sent without If-Match (it would be decided on
    a plan the page may not show); the page says to reload it and no POST is made."""
    answers = USAGE_PAGE | {("GET", "/usage"): (200, _usage([])), ("GET", "/pricing"): (200, PERSONAL_AND_TEAM)}
    api = FakeApi(page, answers)
    del api.etags[("GET", "/usage")]
    _sign_in(page, site, "pricing")
    page.get_by_role("button", name="Move to Personal next month").click()
    expect(page.get_by_role("alert")).to_contain_text("reload the page")
    assert [sent for sent in api.sent if sent[0] == "POST"] == []
