"""The alert catalogue and its templates: every kind renders with every placeholder filled, SMS fit one segment for
the largest figures, HTML values are escaped, and docs/alerts.md lists exactly the catalogue's kinds."""

from __future__ import annotations

import re
from decimal import Decimal
from pathlib import Path
from typing import Any

import pytest

from kilo_alerts.catalogue import (
    CATALOGUE,
    alert_from_event,
    hard_limit_enforced,
    hard_limit_not_enforced,
    money_text,
    quantity_text,
    severity_of,
)
from kilo_alerts.model import AlertError, Channel, Severity
from kilo_alerts.render import PARTS, SMS_LIMIT, render
from kilo_billing.contracts import (
    CryptoBillReopenedV1,
    CryptoBillSettledV1,
    CryptoPaymentSeenV1,
    CryptoQuoteExpiringV1,
    DisputeOpenedV1,
    InvoiceIssuedV1,
    PaymentFailedV1,
    RefundFailedV1,
    UsageThresholdCrossedV1,
)

ROOT = Path(__file__).resolve().parents[2]
TEMPLATES = ROOT / "functions" / "alerts" / "kilo_alerts" / "templates"


def detail(meter: str, percent: int, used: str, limit: str, account: str = "acct_1") -> dict[str, object]:
    return {
        "event_id": UsageThresholdCrossedV1.make_id(account, "2026-09", meter, percent),
        "account_id": account,
        "period": "2026-09",
        "meter": meter,
        "threshold_percent": percent,
        "used": used,
        "limit": limit,
        "occurred_at": "2026-09-30T23:59:00+00:00",
    }


def values_for(meter: str, percent: int, used: str, limit: str) -> dict[str, str]:
    alert = alert_from_event(UsageThresholdCrossedV1.DETAIL_TYPE, detail(meter, percent, used, limit))
    return {
        **alert.values,
        "account_id": "acct_" + "x" * 123,
        "account_name": "N" * 200,
        "preferences_url": "https://app.kilo.example/settings/alerts?account=acct_1",
    }


def test_given_the_catalogue_then_every_kind_has_its_four_templates() -> None:
    assert {path.name for path in TEMPLATES.iterdir() if path.is_dir()} == set(CATALOGUE)
    for kind in CATALOGUE:
        assert sorted(p.name for p in (TEMPLATES / kind).iterdir()) == sorted(PARTS)


# the largest figures an alert can carry: a 999,999,999-minute allowance, a $9,999,999.99 budget, 1000 %, September
@pytest.mark.parametrize("meter", ["video", "audio", "messages", "data_transfer", "budget"])
@pytest.mark.parametrize("percent", [50, 80, 100, 1000])
def test_given_the_largest_figures_then_each_sms_fits_one_segment(meter: str, percent: int) -> None:
    used, limit = ("9999999.99", "9999999.99") if meter == "budget" else ("999999999.99", "999999999")
    alert = alert_from_event(UsageThresholdCrossedV1.DETAIL_TYPE, detail(meter, percent, used, limit))
    sms = render(alert.kind, values_for(meter, percent, used, limit)).sms
    assert len(sms) <= SMS_LIMIT, sms
    assert sms.endswith("Reply STOP to opt out")


@pytest.mark.parametrize(
    "words",
    [
        hard_limit_enforced("999"),
        hard_limit_not_enforced("2026-08", "2026-09", "9999999.99", Decimal("9999999.99")),  # a past month
        hard_limit_not_enforced("2026-09", "2026-09", "1", None),  # removed since
        hard_limit_not_enforced("2026-09", "2026-09", "1", Decimal("9999999.99")),  # raised since
        hard_limit_not_enforced("2026-10", "2026-09", "9999999.99", Decimal("9999999.99")),  # neither: nothing stops
        hard_limit_not_enforced("2026-09", "2026-09", "9999999.99", None, profile_read=False),  # profile unreadable
    ],
)
def test_given_the_largest_figures_then_each_hard_limit_sms_fits_one_segment(words: dict[str, str]) -> None:
    values = values_for("budget", 100, "9999999.99", "9999999.99") | words
    sms = render("budget_hard_limit", values).sms
    assert len(sms) <= SMS_LIMIT, sms
    assert sms.endswith(". Reply STOP to opt out")  # one space: every state has its words


@pytest.mark.parametrize(
    ("words", "subject", "sms", "what_now"),
    [
        (  # an event of a LATER month than the clock's (skew at a month boundary): once September comes, its calls
            # are stopped - so no "calls go on", only what is known
            hard_limit_not_enforced("2026-09", "2026-08", "50", Decimal(50)),
            "Your September 2026 hard spending limit of $50.00 was reached",
            "Kilo: hard limit $50.00 was reached (September 2026 bill $50.40). Limit now $50.00. Reply STOP to opt out",
            "Your hard limit is now $50.00.",
        ),
        (  # review e2 v3 (5): a LATER month's event, the limit raised since ($50 -> $60) yet not above the bill: said
            # "raised ... above the bill ... calls go on" - false, September's calls will be stopped
            hard_limit_not_enforced("2026-09", "2026-08", "50", Decimal(60)),
            "Your September 2026 hard spending limit of $50.00 was reached",
            "Kilo: hard limit $50.00 was reached (September 2026 bill $50.40). Limit now $60.00. Reply STOP to opt out",
            "Your hard limit is now $60.00.",
        ),
        (  # the same with the limit removed since: not known to hold when September comes
            hard_limit_not_enforced("2026-09", "2026-08", "50", None),
            "Your September 2026 hard spending limit of $50.00 was reached",
            "Kilo: hard limit $50.00 was reached (September 2026 bill $50.40). Check your limit. Reply STOP to opt out",
            "Check your hard limit in your account settings.",
        ),
        (  # the profile could not be read: whether the limit was removed is not known
            hard_limit_not_enforced("2026-09", "2026-09", "50", None, profile_read=False),
            "Your September 2026 hard spending limit of $50.00 was reached",
            "Kilo: hard limit $50.00 was reached (September 2026 bill $50.40). Check your limit. Reply STOP to opt out",
            "Check your hard limit in your account settings.",
        ),
    ],
)  # fmt: skip
def test_given_a_hard_limit_not_enforced_for_no_known_reason_then_its_words_say_it_was_reached_and_no_more(
    words: dict[str, str], subject: str, sms: str, what_now: str
) -> None:
    """Review e2 v2 (2, 3): the catch-all said "so nothing is stopped: your calls go on" (false once that month
    arrives) and an unreadable profile (None) was worded "it has since been removed"."""
    rendered = render("budget_hard_limit", values_for("budget", 100, "50.40", "50") | words)
    assert (rendered.subject, rendered.sms) == (subject, sms)
    assert what_now in rendered.text
    for told in (rendered.subject, rendered.text, rendered.sms):
        assert not any(word in told for word in ("calls go on", "removed", "stopping", "audio"))


def test_given_a_name_with_markup_then_the_html_escapes_it_and_the_text_keeps_it() -> None:
    values = values_for("video", 80, "48000", "60000") | {"account_name": '<script>"x"</script>'}
    rendered = render("allowance_threshold", values)
    assert "<p>Hello &lt;script&gt;&quot;x&quot;&lt;/script&gt;,</p>" in rendered.html
    assert 'Hello <script>"x"</script>,' in rendered.text


def test_given_a_missing_value_then_rendering_fails_rather_than_leaving_a_gap() -> None:
    values = values_for("video", 80, "48000", "60000")
    del values["used"]
    with pytest.raises(KeyError, match="used"):
        render("allowance_threshold", values)


def test_given_figures_then_they_read_for_people() -> None:
    assert quantity_text("48000") == "48,000"
    assert quantity_text("1234.50") == "1,234.50"
    assert money_text("100.4") == "$100.40"
    assert money_text("1234567.005") == "$1,234,567.01"  # half-up, the one rounding rule
    with pytest.raises(AlertError):
        quantity_text("NaN")


def test_given_percentages_then_severity_and_default_channels_follow_them() -> None:
    assert [severity_of(p) for p in (50, 79, 80, 99, 100, 150)] == [
        Severity.LOW,
        Severity.LOW,
        Severity.MEDIUM,
        Severity.MEDIUM,
        Severity.HIGH,
        Severity.HIGH,
    ]
    spec = CATALOGUE["allowance_threshold"]
    assert spec.default_channels(Severity.LOW) == (Channel.EMAIL,)
    assert spec.default_channels(Severity.MEDIUM) == (Channel.EMAIL, Channel.SMS)


def test_given_events_then_the_alert_key_and_kind_name_the_occurrence() -> None:
    budget = alert_from_event(UsageThresholdCrossedV1.DETAIL_TYPE, detail("budget", 80, "80", "100"))
    video = alert_from_event(UsageThresholdCrossedV1.DETAIL_TYPE, detail("video", 80, "48000", "60000"))
    assert (budget.kind, budget.key, budget.values["used"], budget.values["period_label"]) == (
        "budget_threshold",
        "budget:80",
        "$80.00",
        "September 2026",
    )
    assert (video.account_id, video.period, video.kind, video.key) == (
        "acct_1",
        "2026-09",
        "allowance_threshold",
        "video:80",
    )


def test_given_scoped_events_then_each_limit_and_segment_is_an_occurrence_of_its_own() -> None:
    def key(meter: str, percent: int, limit: str, scope: str | None) -> tuple[str, str]:
        found = {**detail(meter, percent, "1", limit), "scope": scope}
        found["event_id"] = UsageThresholdCrossedV1.make_id("acct_1", "2026-09", meter, percent, scope)
        alert = alert_from_event(UsageThresholdCrossedV1.DETAIL_TYPE, found)
        return alert.key, alert.event_id

    assert key("hard_limit", 100, "150", "150") == (
        "hard_limit@150:100",
        "threshold:acct_1:2026-09:hard_limit@150:100",
    )
    assert key("hard_limit", 100, "200", "200")[0] == "hard_limit@200:100"  # a raised limit: alerted again
    assert key("budget", 80, "12.5", "12.5")[0] == "budget@12.5:80"
    assert key("video", 50, "25000", "1794787200")[0] == "video@1794787200:50"  # the Team segment from Nov 16
    assert key("budget", 80, "100", None)[0] == "budget:80"  # an event published before scopes: as it was
    with pytest.raises(AlertError, match="problem"):
        key("budget", 80, "100", "1@2")


def test_given_an_unknown_or_malformed_event_then_it_is_not_an_alert() -> None:
    with pytest.raises(AlertError, match="no alert reads"):
        alert_from_event("InvoiceIssued.v9", {})
    with pytest.raises(AlertError, match="problem"):
        alert_from_event(UsageThresholdCrossedV1.DETAIL_TYPE, {"account_id": "acct_1"})


def test_given_docs_alerts_md_then_its_catalogue_table_lists_exactly_the_catalogue() -> None:
    text = (ROOT / "docs" / "alerts.md").read_text(encoding="utf-8")
    table = text.split("## Catalogue", 1)[1].split("\n\n", 2)[1]
    documented = set(re.findall(r"^\| `([a-z_]+)` \|", table, flags=re.MULTILINE))
    assert documented == set(CATALOGUE)


# --- the invoicing alerts ------------------------------------------------------------------------------------------

LONGEST_ACCOUNT = "acct_" + "x" * 123


def invoicing_details(total: str, method: str = "card", reason: str = "payment_failed") -> dict[str, dict[str, object]]:
    return {
        InvoiceIssuedV1.DETAIL_TYPE: {
            "event_id": "invoice-issued:in_1",
            "account_id": LONGEST_ACCOUNT,
            "invoice_id": "in_1",
            "number": "KILO12345678-000042",  # Stripe's numbers: prefix (3-12 chars) - sequence
            "period": "2026-09",
            "total": total,
            "method": method,
            "status": "open",
            "hosted_url": "https://invoice.stripe.com/i/acct_1/test_" + "Y" * 120,
            "occurred_at": "2026-10-01T00:05:00+00:00",
        },
        PaymentFailedV1.DETAIL_TYPE: {
            "event_id": "payment-failed:evt_1",
            "account_id": LONGEST_ACCOUNT,
            "invoice_id": "in_1",
            "total": total,
            "reason": reason,
            "hosted_url": None,
            "occurred_at": "2026-10-03T09:00:00+00:00",
        },
        DisputeOpenedV1.DETAIL_TYPE: {
            "event_id": "dispute-opened:dp_1",
            "account_id": LONGEST_ACCOUNT,
            "invoice_id": "in_1",
            "dispute_id": "dp_1",
            "amount": total,
            "occurred_at": "2026-10-20T12:00:00+00:00",
        },
    }


@pytest.mark.parametrize("detail_type", [InvoiceIssuedV1.DETAIL_TYPE, PaymentFailedV1.DETAIL_TYPE,
                                         DisputeOpenedV1.DETAIL_TYPE])  # fmt: skip
@pytest.mark.parametrize(("method", "reason"), [("card", "payment_failed"), ("crypto", "action_required")])
def test_given_the_largest_invoicing_figures_then_each_sms_fits_one_segment(
    detail_type: str, method: str, reason: str
) -> None:
    alert = alert_from_event(detail_type, invoicing_details("9999999.99", method, reason)[detail_type])
    values = {
        "invoice_url": "https://app.kilo.example/settings/alerts?account=" + LONGEST_ACCOUNT,
        **alert.values,
        "account_id": LONGEST_ACCOUNT,
        "account_name": "N" * 200,
        "preferences_url": "https://app.kilo.example/settings/alerts?account=" + LONGEST_ACCOUNT,
    }
    sms = render(alert.kind, values).sms
    assert len(sms) <= SMS_LIMIT, sms
    assert sms.endswith("Reply STOP to opt out")
    assert "$9,999,999.99" in sms


@pytest.mark.parametrize(
    ("reason", "expected"),
    [
        (
            "payment_failed",
            "Kilo: your payment of $129.00 was declined. Pay the invoice or update your card in your Kilo dashboard. "
            "Reply STOP to opt out",
        ),
        (
            "action_required",
            "Kilo: your payment of $129.00 needs your confirmation. Complete the payment in your Kilo dashboard. "
            "Reply STOP to opt out",
        ),
    ],
)
def test_given_a_failed_payment_then_its_sms_says_where_to_pay_without_the_email(reason: str, expected: str) -> None:
    """The SMS may be the only message (SMS chosen alone, or sent instead of an email that reached nobody, D215): it
    names where to act - the dashboard's Billing and Cards pages - not a link in an email that may not exist."""
    alert = alert_from_event(
        PaymentFailedV1.DETAIL_TYPE, invoicing_details("129", reason=reason)[PaymentFailedV1.DETAIL_TYPE]
    )
    values = {
        "invoice_url": "https://app.kilo.example/settings/alerts?account=acct_1",
        **alert.values,
        "account_id": "acct_1",
        "account_name": "Ada",
        "preferences_url": "https://app.kilo.example/settings/alerts?account=acct_1",
    }
    assert render(alert.kind, values).sms == expected


@pytest.mark.parametrize(
    ("detail_type", "total", "method", "expected"),
    [
        (
            InvoiceIssuedV1.DETAIL_TYPE,
            "129",
            "card",
            "Kilo: invoice KILO12345678-000042 for September 2026: $129.00. Details: Billing in your dashboard. "
            "Reply STOP to opt out",
        ),
        (
            InvoiceIssuedV1.DETAIL_TYPE,
            "129",
            "crypto",
            "Kilo: invoice KILO12345678-000042 for September 2026: $129.00, awaits payment in crypto. Pay it: Pay with "
            "crypto in your dashboard. Reply STOP to opt out",
        ),
        (  # the largest figures: 159 characters, one segment
            InvoiceIssuedV1.DETAIL_TYPE,
            "9999999.99",
            "crypto",
            "Kilo: invoice KILO12345678-000042 for September 2026: $9,999,999.99, awaits payment in crypto. Pay it: "
            "Pay with crypto in your dashboard. Reply STOP to opt out",
        ),
        (
            DisputeOpenedV1.DETAIL_TYPE,
            "129",
            "card",
            "Kilo: a $129.00 payment was disputed with your bank (a chargeback). Account flagged while open. See "
            "Billing in your dashboard. Reply STOP to opt out",
        ),
        (  # the largest figures (an event without ``kind``: a chargeback): 154 characters
            DisputeOpenedV1.DETAIL_TYPE,
            "9999999.99",
            "card",
            "Kilo: a $9,999,999.99 payment was disputed with your bank (a chargeback). Account flagged while open. "
            "See Billing in your dashboard. Reply STOP to opt out",
        ),
    ],
)
def test_given_an_invoice_or_a_dispute_then_its_sms_names_the_dashboard_page_without_the_email(
    detail_type: str, total: str, method: str, expected: str
) -> None:
    """The SMS may be the only message (SMS chosen alone for the kind): it names the dashboard page where the details
    are (Billing: the invoices, their receipts; Pay with crypto: an open crypto bill), not an email that may not exist."""
    alert = alert_from_event(detail_type, invoicing_details(total, method)[detail_type])
    values = {
        "invoice_url": "https://app.kilo.example/settings/alerts?account=acct_1",
        **alert.values,
        "account_id": "acct_1",
        "account_name": "Ada",
        "preferences_url": "https://app.kilo.example/settings/alerts?account=acct_1",
    }
    sms = render(alert.kind, values).sms
    assert sms == expected
    assert len(sms) <= SMS_LIMIT


def test_given_invoicing_events_then_kind_key_period_severity_and_figures_name_the_occurrence() -> None:
    details = invoicing_details("129")
    issued = alert_from_event(InvoiceIssuedV1.DETAIL_TYPE, details[InvoiceIssuedV1.DETAIL_TYPE])
    failed = alert_from_event(PaymentFailedV1.DETAIL_TYPE, details[PaymentFailedV1.DETAIL_TYPE])
    disputed = alert_from_event(DisputeOpenedV1.DETAIL_TYPE, details[DisputeOpenedV1.DETAIL_TYPE])
    assert (issued.kind, issued.period, issued.key, issued.severity) == ("invoice_issued", "2026-09", "in_1", "low")
    assert (issued.values["total"], issued.values["period_label"]) == ("$129.00", "September 2026")
    assert (failed.kind, failed.period, failed.key, failed.severity) == (
        "payment_failed",
        "2026-10",
        "payment-failed:evt_1",
        "high",
    )
    assert "invoice_url" not in failed.values  # no hosted page: delivery links the account's page
    assert (disputed.kind, disputed.period, disputed.key, disputed.severity) == (
        "dispute_opened",
        "2026-10",
        "dp_1",
        "medium",
    )
    assert disputed.values["amount"] == "$129.00"
    assert CATALOGUE["invoice_issued"].default_channels(Severity.LOW) == (Channel.EMAIL,)
    assert CATALOGUE["dispute_opened"].default_channels(Severity.MEDIUM) == (Channel.EMAIL,)
    assert CATALOGUE["payment_failed"].default_channels(Severity.HIGH) == (Channel.EMAIL, Channel.SMS)
    with pytest.raises(AlertError, match="problem"):
        alert_from_event(PaymentFailedV1.DETAIL_TYPE, {"account_id": "acct_1"})


def test_given_the_template_then_the_alerts_rule_matches_every_event_the_catalogue_reads() -> None:
    text = (ROOT / "template.yaml").read_text(encoding="utf-8")
    rule = text.split("\n  AlertsRule:\n", 1)[1].split("\n      Targets:", 1)[0]
    assert "source: [kilo.billing.rating, kilo.billing.invoicing, kilo.billing.crypto]" in rule
    for spec in CATALOGUE.values():
        assert f"- {spec.detail_type}\n" in rule + "\n", spec.detail_type


# --- the crypto alerts ---------------------------------------------------------------------------------------------

LONG_TX = "0x" + "f" * 64


def crypto_details(amount: str, usd: str, chain: str = "ethereum") -> dict[str, dict[str, object]]:
    invoice = f"{LONGEST_ACCOUNT}/2026-10"
    return {
        CryptoPaymentSeenV1.DETAIL_TYPE: {
            "event_id": f"crypto-seen:{chain}:{LONG_TX}:0",
            "account_id": LONGEST_ACCOUNT,
            "invoice_id": invoice,
            "chain": chain,
            "asset": "ETH",
            "amount": amount,
            "amount_usd": usd,
            "tx_id": LONG_TX,
            "occurred_at": "2026-11-02T10:00:00+00:00",
        },
        CryptoBillSettledV1.DETAIL_TYPE: {
            "event_id": f"crypto-settled:{invoice}",
            "account_id": LONGEST_ACCOUNT,
            "invoice_id": invoice,
            "total": usd,
            "settled_usd": usd,
            "tx_ids": [LONG_TX],
            "occurred_at": "2026-11-02T10:30:00+00:00",
        },
        CryptoBillReopenedV1.DETAIL_TYPE: {
            "event_id": f"crypto-reopened:{invoice}:{chain}:{LONG_TX}:0@{LONG_TX}",
            "account_id": LONGEST_ACCOUNT,
            "invoice_id": invoice,
            "total": usd,
            "amount_usd": usd,
            "stuck_usd": usd,
            "stuck_tx_ids": [LONG_TX],
            "occurred_at": "2026-11-02T11:00:00+00:00",
            "number": "KB-" + "9" * 40,
        },
        CryptoQuoteExpiringV1.DETAIL_TYPE: {
            "event_id": "quote-expiring:q_1",
            "account_id": LONGEST_ACCOUNT,
            "invoice_id": invoice,
            "quote_id": "q_1",
            "chain": chain,
            "asset": "ETH",
            "amount": amount,
            "payment_uri": "ethereum:0x" + "1" * 40 + "@1?value=1e30",
            "expires_at": "2026-11-02T23:59:00+00:00",
            "occurred_at": "2026-11-02T23:44:00+00:00",
        },
    }


CRYPTO_TYPES = [
    CryptoPaymentSeenV1.DETAIL_TYPE,
    CryptoBillSettledV1.DETAIL_TYPE,
    CryptoBillReopenedV1.DETAIL_TYPE,
    CryptoQuoteExpiringV1.DETAIL_TYPE,
]


def crypto_sms(detail_type: str, detail: dict[str, object], account: str = "acct_1", name: str = "Ada") -> str:
    """The SMS a crypto event renders, its links (the alert preferences, the dashboard's pay page) filled in."""
    alert = alert_from_event(detail_type, detail)
    preferences = "https://app.kilo.example/settings/alerts?account=" + account
    values = {
        "invoice_url": preferences,
        "tx_url": preferences,
        "pay_url": "https://app.kilo.example/#/pay",
        **alert.values,
        "account_id": account,
        "account_name": name,
        "preferences_url": preferences,
    }
    return render(alert.kind, values).sms


@pytest.mark.parametrize("detail_type", CRYPTO_TYPES)
def test_given_the_largest_crypto_figures_then_each_sms_fits_one_segment(detail_type: str) -> None:
    # 18 decimals (ETH's wei) on a million ETH, a $9,999,999.99 bill
    detail = crypto_details("1234567.123456789012345678", "9999999.99")[detail_type]
    sms = crypto_sms(detail_type, detail, LONGEST_ACCOUNT, "N" * 200)
    assert len(sms) <= SMS_LIMIT, sms
    assert sms.endswith("Reply STOP to opt out")


@pytest.mark.parametrize(
    ("amount", "chain", "expected"),
    [
        (
            "0.04213",
            "ethereum",
            "Kilo: your quote to pay 0.04213 ETH on Ethereum expires 23:59 UTC. Get a new one: Pay with crypto in your "
            "dashboard. Reply STOP to opt out",
        ),
        (  # the largest figures: 159 characters, one segment
            "1234567.123456789012345678",
            "ethereum",
            "Kilo: your quote to pay 1,234,567.123456789012345678 ETH on Ethereum expires 23:59 UTC. Get a new one: "
            "Pay with crypto in your dashboard. Reply STOP to opt out",
        ),
    ],
)
def test_given_a_quote_expiring_then_its_sms_says_where_to_pay_without_the_email(
    amount: str, chain: str, expected: str
) -> None:
    """The SMS may be the only message (SMS chosen alone for the kind): it names the dashboard's "Pay with crypto"
    page, where a new quote for what the bill still asks is got and paid (the page does not reopen the old quote),
    not a link in an email that may not exist."""
    detail = crypto_details(amount, "9999999.99", chain=chain)[CryptoQuoteExpiringV1.DETAIL_TYPE]
    sms = crypto_sms(CryptoQuoteExpiringV1.DETAIL_TYPE, detail)
    assert sms == expected
    assert len(sms) <= SMS_LIMIT


@pytest.mark.parametrize(
    ("amount", "usd", "chain", "expected"),
    [
        (
            "0.5",
            "1512.34",
            "base",
            "Kilo: 0.5 ETH ($1,512.34) seen on Base, not final yet. Details: Pay with crypto in your dashboard. Reply "
            "STOP to opt out",
        ),
        (  # the largest figures: 153 characters, one segment
            "1234567.123456789012345678",
            "9999999.99",
            "ethereum",
            "Kilo: 1,234,567.123456789012345678 ETH ($9,999,999.99) seen on Ethereum, not final yet. Details: Pay with "
            "crypto in your dashboard. Reply STOP to opt out",
        ),
    ],
)
def test_given_a_payment_seen_then_its_sms_names_the_dashboard_page_without_the_email(
    amount: str, usd: str, chain: str, expected: str
) -> None:
    """The SMS may be the only message (SMS chosen alone for the kind): it names the dashboard's "Pay with crypto" page,
    which lists the bill's payments and their status, not an email that may not exist."""
    detail = crypto_details(amount, usd, chain=chain)[CryptoPaymentSeenV1.DETAIL_TYPE]
    sms = crypto_sms(CryptoPaymentSeenV1.DETAIL_TYPE, detail)
    assert sms == expected
    assert len(sms) <= SMS_LIMIT


def test_given_crypto_events_then_kind_key_period_severity_and_figures_name_the_occurrence() -> None:
    details = crypto_details("0.5", "1512.34", chain="base")
    seen = alert_from_event(CryptoPaymentSeenV1.DETAIL_TYPE, details[CryptoPaymentSeenV1.DETAIL_TYPE])
    settled = alert_from_event(CryptoBillSettledV1.DETAIL_TYPE, details[CryptoBillSettledV1.DETAIL_TYPE])
    expiring = alert_from_event(CryptoQuoteExpiringV1.DETAIL_TYPE, details[CryptoQuoteExpiringV1.DETAIL_TYPE])
    assert (seen.kind, seen.period, seen.key, seen.severity) == (
        "crypto_payment_seen",
        "2026-11",
        f"crypto-seen:base:{LONG_TX}:0",
        "low",
    )
    assert (seen.values["amount"], seen.values["amount_usd"], seen.values["chain"]) == ("0.5 ETH", "$1,512.34", "Base")
    assert seen.values["tx_url"] == f"https://basescan.org/tx/{LONG_TX}"  # no explorer_url: the chain's explorer
    assert (settled.kind, settled.key, settled.severity) == ("crypto_bill_settled", f"{LONGEST_ACCOUNT}/2026-10", "low")
    assert settled.values["notes"] == ""  # neither credit nor write-off
    assert (expiring.kind, expiring.key, expiring.severity) == ("crypto_quote_expiring", "q_1", "medium")
    assert (expiring.values["expires_at"], expiring.values["expires_time"]) == (
        "23:59 UTC on 2 November 2026",
        "23:59 UTC",
    )
    assert CATALOGUE["crypto_payment_seen"].default_channels(Severity.LOW) == (Channel.EMAIL,)
    assert CATALOGUE["crypto_bill_settled"].default_channels(Severity.LOW) == (Channel.EMAIL,)
    assert CATALOGUE["crypto_quote_expiring"].default_channels(Severity.MEDIUM) == (Channel.EMAIL, Channel.SMS)


# D435 amended (fcw): only the stuck payment landing late is credit by itself - a payment sent after the bill is paid
# (an EVM one from a linked wallet: matched to unpaid bills only) goes to the operator's unattributed list
REOPENED_LATER = (
    "If a stuck payment lands after all (final on chain), it counts as any payment does: the bill is paid by the "
    "payments that are final first, and a stuck payment final after the bill is paid is kept as credit on your "
    "account (it first covers any shortfall we wrote off when the bill was paid) and applied to your next bill - it "
    "is never lost, and not sent back by itself: contact us if you want it back. If it lands before you pay again, "
    "the bill is paid: do not pay the new quote then - a payment sent after the bill is paid may not be matched to "
    "your account by itself; we hold it until we match it: contact us. If it never lands, nothing more happens."
)


@pytest.mark.parametrize(
    ("amount_usd", "asked", "sms"),
    [
        (
            "40.00",
            "the rest, $40.00",
            "Kilo: a $40.00 crypto payment is stuck; your bill is open again, $40.00 more. Pay: Pay with crypto in "
            "your dashboard. Reply STOP to opt out",
        ),
        (  # the bill's only payment stuck: its whole total asked again (D435)
            "100.00",
            "the whole $100.00 again",
            "Kilo: a $100.00 crypto payment is stuck; your bill is open again, all $100.00 again. Pay: Pay with "
            "crypto in your dashboard. Reply STOP to opt out",
        ),
    ],
)
def test_given_a_bill_reopened_then_the_alert_asks_the_amount_and_says_what_a_late_landing_does(
    amount_usd: str, asked: str, sms: str
) -> None:
    """D434: one alert per reopen (key: the event id), medium - email and SMS by default; the amount asked as the
    event gives it (the quote API's), the stuck payment's USD and transaction, what happens if it lands later
    (credit, not refunded by itself), the dashboard's pay page with the bill chosen."""
    detail = {
        "event_id": "crypto-reopened:acct_1/2026-10:ethereum:0xc2:0@0xblock",
        "account_id": "acct_1",
        "invoice_id": "acct_1/2026-10",
        "total": "100.00",
        "amount_usd": amount_usd,
        "stuck_usd": "100.00" if amount_usd == "100.00" else "40.00",
        "stuck_tx_ids": ["0xc2"],
        "occurred_at": "2026-11-02T11:00:00+00:00",
        "number": "KB-0042",
    }
    alert = alert_from_event(CryptoBillReopenedV1.DETAIL_TYPE, detail)
    assert (alert.kind, alert.period, alert.key, alert.severity) == (
        "crypto_bill_reopened",
        "2026-11",
        "crypto-reopened:acct_1/2026-10:ethereum:0xc2:0@0xblock",
        "medium",
    )
    assert CATALOGUE["crypto_bill_reopened"].default_channels(Severity.MEDIUM) == (Channel.EMAIL, Channel.SMS)
    assert (alert.values["amount_usd"], alert.values["asked"], alert.values["transactions"]) == (
        f"${amount_usd}",
        asked,
        "0xc2",
    )
    assert alert.values["pay_page"] == "#/pay?invoice=KB-0042"
    assert alert.values["later_note"] == REOPENED_LATER
    rendered = render(
        alert.kind,
        {
            "pay_url": "https://app.kilo.example/#/pay?invoice=KB-0042",
            **alert.values,
            "account_id": "acct_1",
            "account_name": "Ada",
            "preferences_url": "https://app.kilo.example/settings/alerts?account=acct_1",
        },
    )
    assert rendered.subject == f"Your Kilo invoice acct_1/2026-10 is open again: pay ${amount_usd}"
    assert f"is open again. Your crypto payment of ${detail['stuck_usd']} toward it is stuck" in rendered.text
    assert f"we ask {asked}." in rendered.text
    assert f"Pay ${amount_usd} with a new quote on your dashboard's Pay with crypto page: " in rendered.text
    assert REOPENED_LATER in rendered.text
    assert REOPENED_LATER in rendered.html
    assert crypto_sms(CryptoBillReopenedV1.DETAIL_TYPE, detail) == sms
    assert "a payment final after the bill is paid is kept as credit" not in rendered.text  # the old promise


@pytest.mark.parametrize(
    ("stuck_usd", "sms"),
    [
        (
            "70.00",
            "Kilo: crypto payments ($70.00) are stuck; your bill is open again, $70.00 more. Pay: Pay with crypto in "
            "your dashboard. Reply STOP to opt out",
        ),
        (  # the largest figures, every payment of the bill stuck: 160 characters, one segment
            "9999999.99",
            "Kilo: crypto payments ($9,999,999.99) are stuck; your bill is open again, all $9,999,999.99 again. Pay: "
            "Pay with crypto in your dashboard. Reply STOP to opt out",
        ),
    ],
)
def test_given_a_bill_reopened_with_two_stuck_payments_then_the_alert_speaks_of_payments_in_the_plural(
    stuck_usd: str, sms: str
) -> None:
    """D434 amended (fcw): 30.00 final, then 30.00 and 40.00 named stuck - the second reopen's ``stuck_usd`` sums both
    stuck lines (70.00, asked 70.00); the email and SMS say "payments ... are stuck", not "a $70.00 payment"."""
    detail = {
        "event_id": "crypto-reopened:acct_1/2026-10:ethereum:0xc3:0@0xblock",
        "account_id": "acct_1",
        "invoice_id": "acct_1/2026-10",
        "total": "100.00" if stuck_usd == "70.00" else stuck_usd,
        "amount_usd": stuck_usd,
        "stuck_usd": stuck_usd,
        "stuck_tx_ids": ["0xc2", "0xc3"],
        "occurred_at": "2026-11-02T11:00:00+00:00",
        "number": "KB-0042",
    }
    alert = alert_from_event(CryptoBillReopenedV1.DETAIL_TYPE, detail)
    rendered = render(
        alert.kind,
        {
            "pay_url": "https://app.kilo.example/#/pay?invoice=KB-0042",
            **alert.values,
            "account_id": "acct_1",
            "account_name": "Ada",
            "preferences_url": "https://app.kilo.example/settings/alerts?account=acct_1",
        },
    )
    amount = "$70.00" if stuck_usd == "70.00" else "$9,999,999.99"
    said = (
        f"is open again. Your crypto payments toward it, {amount} in all, are stuck: their blocks have long been "
        "final, yet the chain proves neither that they went through nor that they were dropped. So they no longer "
        "count toward the bill, and we ask "
    )
    assert said in rendered.text
    assert said in rendered.html
    assert "Stuck transactions: 0xc2, 0xc3" in rendered.text
    assert crypto_sms(CryptoBillReopenedV1.DETAIL_TYPE, detail) == sms
    assert len(sms) <= 160


@pytest.mark.parametrize(
    ("lost", "said", "label", "later", "sms"),
    [
        (
            "dropped",
            "Your crypto payment of $40.00 toward it was dropped: the block that held it was replaced (a chain "
            "reorganisation) and its transaction is in no block now. So it no longer counts toward the bill, and we "
            "ask the rest, $40.00.",
            "Dropped transaction: 0xc2",
            "A dropped transaction may be mined again (your wallet may send it again): check your wallet before you "
            "pay. If it lands after all, it counts as any payment does",
            "Kilo: a $40.00 crypto payment dropped; your bill is open again, $40.00 more. Pay: Pay with crypto in "
            "your dashboard. Reply STOP to opt out",
        ),
        (
            "failed",
            "Your crypto payment of $40.00 toward it failed: its transaction was reverted on chain and moved no "
            "funds. So it no longer counts toward the bill, and we ask the rest, $40.00.",
            "Failed transaction: 0xc2",
            "A failed transaction moves no funds: only its network fee was spent. Pay the amount asked with a new "
            "quote; if the same transaction is ever included again and goes through, it counts as any payment does.",
            "Kilo: a $40.00 crypto payment failed; your bill is open again, $40.00 more. Pay: Pay with crypto in "
            "your dashboard. Reply STOP to opt out",
        ),
    ],
)
def test_given_a_bill_reopened_by_a_dropped_or_failed_payment_then_the_alert_says_which_and_asks_the_rest(
    lost: str, said: str, label: str, later: str, sms: str
) -> None:
    """D434 amended (hcw): 60.00 final, 40.00 seen then dropped with its block (or failed in the block that
    re-included it) - the reopen names that payment, not a stuck one (there is none: 0.00): its 40.00, its
    transaction under its own label, what becomes of it later; the same key (the event id), medium, the amount
    asked. Before: the event was refused (no such field)."""
    detail = {
        "event_id": "crypto-reopened:acct_1/2026-10:ethereum:0xc2:0@0xblock",
        "account_id": "acct_1",
        "invoice_id": "acct_1/2026-10",
        "total": "100.00",
        "amount_usd": "40.00",
        "stuck_usd": "0.00",
        "stuck_tx_ids": [],
        "occurred_at": "2026-11-02T11:00:00+00:00",
        "number": "KB-0042",
        "lost": lost,
        "lost_usd": "40.00",
        "lost_tx_id": "0xc2",
    }
    alert = alert_from_event(CryptoBillReopenedV1.DETAIL_TYPE, detail)
    assert (alert.kind, alert.key, alert.severity) == (
        "crypto_bill_reopened",
        "crypto-reopened:acct_1/2026-10:ethereum:0xc2:0@0xblock",
        "medium",
    )
    rendered = render(
        alert.kind,
        {
            "pay_url": "https://app.kilo.example/#/pay?invoice=KB-0042",
            **alert.values,
            "account_id": "acct_1",
            "account_name": "Ada",
            "preferences_url": "https://app.kilo.example/settings/alerts?account=acct_1",
        },
    )
    assert rendered.subject == "Your Kilo invoice acct_1/2026-10 is open again: pay $40.00"
    assert f"($100.00) is open again. {said}\n" in rendered.text
    assert said in rendered.html
    assert label in rendered.text
    assert later in rendered.text
    assert "stuck" not in rendered.text.lower()
    assert crypto_sms(CryptoBillReopenedV1.DETAIL_TYPE, detail) == sms
    largest = {**detail, "total": "9999999.99", "amount_usd": "9999999.99", "lost_usd": "9999999.99"}
    assert crypto_sms(CryptoBillReopenedV1.DETAIL_TYPE, largest) == (
        f"Kilo: a $9,999,999.99 crypto payment {lost}; your bill is open again, all $9,999,999.99 again. Pay: Pay "
        "with crypto in your dashboard. Reply STOP to opt out"
    )
    assert len(crypto_sms(CryptoBillReopenedV1.DETAIL_TYPE, largest)) <= 160


def _lost_detail(lost: str, **more: Any) -> dict[str, Any]:
    return {
        "event_id": "crypto-reopened:acct_1/2026-10:solana:5sig:0@blockhash",
        "account_id": "acct_1",
        "invoice_id": "acct_1/2026-10",
        "total": "100.00",
        "amount_usd": "40.00",
        "stuck_usd": "0.00",
        "stuck_tx_ids": [],
        "occurred_at": "2026-11-02T11:00:00+00:00",
        "number": "KB-0042",
        "lost": lost,
        "lost_usd": "40.00",
        "lost_tx_id": "5sig",
        **more,
    }


def _rendered_text(detail: dict[str, Any]) -> str:
    alert = alert_from_event(CryptoBillReopenedV1.DETAIL_TYPE, detail)
    values = {
        "pay_url": "https://app.kilo.example/#/pay?invoice=KB-0042",
        **alert.values,
        "account_id": "acct_1",
        "account_name": "Ada",
        "preferences_url": "https://app.kilo.example/settings/alerts?account=acct_1",
    }
    return render(alert.kind, values).text


def test_given_a_bill_reopened_by_a_dropped_solana_payment_then_the_alert_says_it_cannot_land_any_more() -> None:
    """D434 amended (hcw): a Solana payment dropped (``lost`` "expired") is dropped, and cannot land any more - never
    "may be mined again". Before: the event was refused ("expired" no such value)."""
    detail = _lost_detail("expired")
    text = _rendered_text(detail)
    assert (
        "Your crypto payment of $40.00 toward it was dropped: the block that held it is not on the chain, and its "
        "transaction is in no block now. So it no longer counts toward the bill, and we ask the rest, $40.00.\n"
    ) in text
    assert (
        "A Solana transaction cannot land once its blockhash is more than 150 blocks old: this one cannot land any "
        "more and moved no funds. Pay the amount asked with a new quote."
    ) in text
    assert "Dropped transaction: 5sig" in text
    assert "mined again" not in text
    assert crypto_sms(CryptoBillReopenedV1.DETAIL_TYPE, detail) == (
        "Kilo: a $40.00 crypto payment dropped; your bill is open again, $40.00 more. Pay: Pay with crypto in "
        "your dashboard. Reply STOP to opt out"
    )


def test_given_a_bill_reopened_by_a_dropped_payment_with_another_stuck_then_the_alert_names_the_stuck_too() -> None:
    """D434 amended (hcw): 30.00 dropped, 30.00 (0xc3) stuck on the same bill, asking 60.00: the alert says both.
    Before: the stuck 30.00 unsaid (``stuck_usd`` ignored)."""
    text = _rendered_text(
        _lost_detail("dropped", amount_usd="60.00", lost_usd="30.00", stuck_usd="30.00", stuck_tx_ids=["0xc3"])
    )
    assert (
        "So it no longer counts toward the bill. Also stuck: $30.00 of crypto payments toward it (0xc3) - their "
        "blocks have long been final, yet the chain proves neither that they went through nor that they were "
        "dropped, so they no longer count either, and we ask the rest, $60.00.\n"
    ) in text


def test_given_a_chain_without_a_known_explorer_or_a_written_off_shortfall_then_the_alert_says_so() -> None:
    details = crypto_details("2", "10.00", chain="polygon")
    seen = alert_from_event(CryptoPaymentSeenV1.DETAIL_TYPE, details[CryptoPaymentSeenV1.DETAIL_TYPE])
    assert "tx_url" not in seen.values  # delivery links the account's page
    assert seen.values["chain"] == "Polygon"
    short = details[CryptoBillSettledV1.DETAIL_TYPE] | {"settled_usd": "9.98", "written_off_usd": "0.02"}
    settled = alert_from_event(CryptoBillSettledV1.DETAIL_TYPE, short)
    assert settled.values["notes"] == "The $0.02 short of the bill is within our tolerance: written off."
    bad = details[CryptoQuoteExpiringV1.DETAIL_TYPE] | {"expires_at": "tomorrow"}
    with pytest.raises(AlertError, match="ISO 8601"):
        alert_from_event(CryptoQuoteExpiringV1.DETAIL_TYPE, bad)
    with pytest.raises(AlertError, match="problem"):
        alert_from_event(CryptoPaymentSeenV1.DETAIL_TYPE, {"account_id": "acct_1", "asset": "DOGE"})


@pytest.mark.parametrize(
    ("status", "note"),
    [
        ("open", "It is charged to the payment method on file; nothing to do if it is current."),
        ("paid", "Nothing is due."),  # a $0.00 invoice, paid at once
        ("carried", "It is below the smallest amount a card can be charged, so it is added to your next invoice."),
    ],
)
def test_given_a_card_invoice_issued_then_its_email_says_what_happens_to_it_by_status(status: str, note: str) -> None:
    detail = invoicing_details("0.36")[InvoiceIssuedV1.DETAIL_TYPE] | {"status": status}
    assert alert_from_event(InvoiceIssuedV1.DETAIL_TYPE, detail).values["payment_note"] == note


def test_given_the_catalogue_then_the_kinds_an_account_may_choose_channels_for_are_its_kinds() -> None:
    """``kilo_billing.accounts.ALERT_KINDS`` (the account API refuses any other kind, D171) is the catalogue's."""
    from kilo_alerts.catalogue import CATALOGUE  # noqa: PLC0415
    from kilo_billing.accounts import ALERT_KINDS  # noqa: PLC0415

    assert sorted(ALERT_KINDS) == sorted(CATALOGUE)


def _seen_transfer(tx: str, asset: str, amount: str, usd: str, index: int = 0) -> dict[str, object]:
    return {
        "payment_id": f"ethereum:{tx}:{index}",
        "quote_id": "q_1",
        "asset": asset,
        "amount": amount,
        "amount_usd": usd,
        "tx_id": tx,
        "explorer_url": f"https://etherscan.io/tx/{tx}",
    }


def test_given_one_payment_seen_event_for_three_transfers_then_one_alert_sums_them_per_asset_and_lists_them() -> None:
    """D216: 12.5 + 17.5 USDC and 0.01 ETH ($25.00) in two transactions -> "30 USDC + 0.01 ETH ($55.00)", both
    transactions named, and the account's page as the link (several transactions have no one explorer page)."""
    tx_a, tx_b = "0x" + "a" * 64, "0x" + "b" * 64
    event = {
        "event_id": "crypto-seen:acct_1/2026-10:0123456789abcdef0123",
        "account_id": "acct_1",
        "invoice_id": "acct_1/2026-10",
        "quote_id": "q_1",
        "chain": "ethereum",
        "asset": "USDC",
        "amount": "12.5",
        "amount_usd": "12.50",
        "tx_id": tx_a,
        "occurred_at": "2026-11-02T10:00:00+00:00",
        "transfers": [
            _seen_transfer(tx_a, "USDC", "12.5", "12.50"),
            _seen_transfer(tx_a, "USDC", "17.5", "17.50", 1),
            _seen_transfer(tx_b, "ETH", "0.01", "25.00", -1),
        ],
        "total_usd": "55.00",
    }

    alert = alert_from_event(CryptoPaymentSeenV1.DETAIL_TYPE, event)

    assert alert.key == "crypto-seen:acct_1/2026-10:0123456789abcdef0123"
    assert (alert.values["amount"], alert.values["amount_usd"]) == ("30 USDC + 0.01 ETH", "$55.00")
    assert alert.values["tx_id"] == f"{tx_a}, {tx_b}"
    assert "tx_url" not in alert.values  # delivery links the account's page
    page = "https://app.kilo.example/settings/alerts?account=acct_1"
    values = {**alert.values, "tx_url": page, "account_id": "acct_1", "account_name": "Ada", "preferences_url": page}
    rendered = render(alert.kind, values)
    assert rendered.subject == "We see your crypto payment of 30 USDC + 0.01 ETH ($55.00) for invoice acct_1/2026-10"
    assert "acct_1 is on chain in 3 transfers." in rendered.text
    assert f"Transactions {tx_a}, {tx_b}: {page}" in rendered.text
    assert ">view them</a>" in rendered.html
    assert rendered.sms.startswith("Kilo: 30 USDC + 0.01 ETH ($55.00) seen on Ethereum, not final yet.")


def test_given_one_payment_seen_event_for_two_transfers_of_one_transaction_then_its_explorer_page_is_the_link() -> None:
    tx = "0x" + "c" * 64
    event = {
        "event_id": "crypto-seen:acct_1/2026-10:abcdefabcdefabcdefab",
        "account_id": "acct_1",
        "invoice_id": "acct_1/2026-10",
        "chain": "ethereum",
        "asset": "USDC",
        "amount": "0.005",
        "amount_usd": "0.01",
        "tx_id": tx,
        "occurred_at": "2026-11-02T10:00:00+00:00",
        "transfers": [_seen_transfer(tx, "USDC", "0.005", "0.01"), _seen_transfer(tx, "USDC", "0.005", "0.00", 1)],
        "total_usd": "0.01",
    }

    alert = alert_from_event(CryptoPaymentSeenV1.DETAIL_TYPE, event)

    assert (alert.values["amount"], alert.values["amount_usd"], alert.values["tx_id"]) == ("0.01 USDC", "$0.01", tx)
    assert alert.values["tx_url"] == f"https://etherscan.io/tx/{tx}"
    assert (alert.values["transactions_label"], alert.values["view_text"]) == ("Transaction", "view it")


@pytest.mark.parametrize(
    ("reason", "why"),
    [
        ("expired_or_canceled_card", "the card has expired or was canceled"),
        ("unknown", "the card's bank returned it"),  # any reason without words of its own
    ],
)
def test_given_a_refund_that_failed_then_the_customer_is_told_it_did_not_arrive_and_nothing_is_promised(
    reason: str, why: str
) -> None:
    """D340: one alert per refund (key: Stripe's refund id), high (email and SMS), under the month it
    happened in. It says the money did not reach the card and is back with Kilo, and asks the customer to contact
    us - it does not say the refund will be sent again or credited (nothing does that by itself)."""
    detail = {
        "event_id": "refund-failed:re_1",
        "account_id": LONGEST_ACCOUNT,
        "invoice_id": "acct_1/2026-09",
        "refund_id": "re_1",
        "number": "KILO12345678-000042",
        "amount": "9999999.99",
        "reason": reason,
        "ours": True,
        "occurred_at": "2026-10-20T12:00:00+00:00",
    }
    alert = alert_from_event(RefundFailedV1.DETAIL_TYPE, detail)
    assert (alert.kind, alert.period, alert.key, alert.severity) == ("refund_failed", "2026-10", "re_1", "high")
    assert CATALOGUE["refund_failed"].default_channels(Severity.HIGH) == (Channel.EMAIL, Channel.SMS)
    values = {
        **alert.values,
        "account_id": LONGEST_ACCOUNT,
        "account_name": "Ada",
        "preferences_url": "https://app.kilo.example/settings/alerts?account=acct_1",
    }
    rendered = render(alert.kind, values)
    assert rendered.subject == "Your refund of $9,999,999.99 from Kilo did not reach your card"
    assert f"did not reach your card: {why}." in rendered.text
    # no promise of a re-send, and the credit a note's returned part became in the failure's write said (a review)
    assert (
        "We do not send it to your card again by ourselves; if a correction to your bill had counted it as refunded "
        "meanwhile, that part is now credit on your account. Contact us about this refund."
    ) in rendered.text
    assert "Nothing more happens by itself" not in rendered.text
    assert rendered.sms == (
        "Kilo: our refund of $9,999,999.99 did not reach your card; the money is back with Kilo. Contact us about "
        "it. Reply STOP to opt out"
    )
    assert len(rendered.sms) <= SMS_LIMIT


# --- what a dispute is: DisputeOpened.v1's ``kind`` (D359 amended (dk)) ---------------------------------------------

DISPUTE_SMS_TAIL = " Account flagged while open. See Billing in your dashboard. Reply STOP to opt out"


@pytest.mark.parametrize(
    ("kind", "event_id", "key", "subject", "sms", "what"),
    [
        (
            "inquiry",
            "dispute-opened:dp_1",
            "dp_1",
            "Your bank asked about a payment of $129.00 to Kilo",
            "Kilo: your bank asked about a $129.00 payment; no money withdrawn yet." + DISPUTE_SMS_TAIL,
            "was questioned by your bank or card issuer: an inquiry, the bank asked about the payment; no money has "
            "been withdrawn yet.",
        ),
        (
            "chargeback",
            "dispute-opened:dp_1",
            "dp_1",
            "A payment of $129.00 to Kilo was disputed (a chargeback)",
            "Kilo: a $129.00 payment was disputed with your bank (a chargeback)." + DISPUTE_SMS_TAIL,
            "was disputed with your bank or card issuer: a chargeback, the bank takes the payment back while the "
            "dispute is decided.",
        ),
        (  # keeps the key wd7 gave it: a ledger already holding it dedupes the redelivery
            "escalation",
            "dispute-escalated:dp_1",
            "dp_1:escalated",
            "Your bank's inquiry about a payment of $129.00 to Kilo became a chargeback",
            "Kilo: your bank's inquiry about a $129.00 payment became a chargeback." + DISPUTE_SMS_TAIL,
            "was disputed with your bank or card issuer: the bank's inquiry about it became a chargeback, and the "
            "bank takes the payment back while the dispute is decided.",
        ),
    ],
)
def test_given_each_kind_of_dispute_then_its_key_and_words_say_what_it_is(
    kind: str, event_id: str, key: str, subject: str, sms: str, what: str
) -> None:
    sent = invoicing_details("129")[DisputeOpenedV1.DETAIL_TYPE] | {"event_id": event_id, "kind": kind}
    alert = alert_from_event(DisputeOpenedV1.DETAIL_TYPE, sent)
    assert (alert.kind, alert.period, alert.key) == ("dispute_opened", "2026-10", key)
    values = {**alert.values, "account_id": "acct_1", "account_name": "Ada", "preferences_url": "https://p"}
    rendered = render(alert.kind, values)
    assert (rendered.subject, rendered.sms) == (subject, sms)
    assert f"A payment of $129.00 for invoice in_1 of your account acct_1 {what}" in rendered.text
    assert len(rendered.sms) <= SMS_LIMIT


def test_given_the_key_follows_kind_then_an_escalation_id_read_as_a_chargeback_keeps_the_dispute_key() -> None:
    """The key follows ``kind``, not the event id (a field given wins over the prefix)."""
    sent = invoicing_details("129")[DisputeOpenedV1.DETAIL_TYPE] | {"event_id": "dispute-escalated:dp_1"}
    assert alert_from_event(DisputeOpenedV1.DETAIL_TYPE, sent | {"kind": "chargeback"}).key == "dp_1"
    # the old layer's escalation (no field): still its own key, read from the prefix
    old = alert_from_event(DisputeOpenedV1.DETAIL_TYPE, sent)
    assert (old.key, old.values["headline"]) == (
        "dp_1:escalated",
        "Your bank's inquiry about a payment of $129.00 to Kilo became a chargeback",
    )


@pytest.mark.parametrize("kind", ["inquiry", "chargeback", "escalation"])
def test_given_the_largest_dispute_of_each_kind_then_its_sms_fits_one_segment(kind: str) -> None:
    """$9,999,999.99 (13 characters). Fixed parts: "Kilo: " 6, " Account flagged while open." 28, " See Billing in
    your dashboard." 31, " Reply STOP to opt out" 22 = 87. Inquiry "your bank asked about a " 24 + 13 + " payment;" 9
    + " no money withdrawn yet." 24 = 70 -> 157; chargeback "a " 2 + 13 + " payment was disputed with your bank (a
    chargeback)." 52 = 67 -> 154; escalation "your bank's inquiry about a " 28 + 13 + " payment became a
    chargeback." 29 = 70 -> 157 (each <= 160)."""
    sent = invoicing_details("9999999.99")[DisputeOpenedV1.DETAIL_TYPE] | {"kind": kind}
    alert = alert_from_event(DisputeOpenedV1.DETAIL_TYPE, sent)
    values = {**alert.values, "account_id": LONGEST_ACCOUNT, "account_name": "N" * 200, "preferences_url": "p"}
    sms = render(alert.kind, values).sms
    assert len(sms) == {"inquiry": 157, "chargeback": 154, "escalation": 157}[kind], sms
