"""The alert catalogue and its templates: every kind renders with every placeholder filled, SMS fit one segment for
the largest figures, HTML values are escaped, and docs/alerts.md lists exactly the catalogue's kinds."""

from __future__ import annotations

import re
from pathlib import Path

import pytest

from kilo_alerts.catalogue import CATALOGUE, alert_from_event, money_text, quantity_text, severity_of
from kilo_alerts.model import AlertError, Channel, Severity
from kilo_alerts.render import PARTS, SMS_LIMIT, render
from kilo_billing.contracts import UsageThresholdCrossedV1

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
    assert (video.kind, video.key, video.dedupe_id) == (
        "allowance_threshold",
        "video:80",
        "acct_1|2026-09|allowance_threshold|video:80",
    )


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
