"""`kilo-billing invoice preview --input FILE [--json]`: hand-worked invoices (price book 2026-01: video $0.00072,
audio $0.00036, messages and GB $0.00012; Team $29 with 50,000 video / 100,000 audio minutes, 1,000,000 messages,
100 GB; Personal $0 with 5,000 / 10,000 / 100,000 / 10 GB; Enterprise $99 unlimited; March 2026 has 31 days) and bad
descriptions (exit 2 naming the problem)."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest

from kilo_billing_cli.main import main

FEB_1 = "2026-02-01T00:00:00Z"


def describe(tmp_path: Path, **fields: Any) -> Path:
    description: dict[str, Any] = {
        "account_id": "acct_123",
        "period": "2026-03",
        "signup": FEB_1,
        "tiers": [{"from": FEB_1, "tier": "team"}],
        "usage": [],
    }
    description.update(fields)
    path = tmp_path / "account.json"
    path.write_text(json.dumps(description))
    return path


def preview(capsys: pytest.CaptureFixture[str], path: Path) -> dict[str, Any]:
    assert main(["invoice", "preview", "--input", str(path), "--json"]) == 0
    found: dict[str, Any] = json.loads(capsys.readouterr().out)
    return found


def amounts(invoice: dict[str, Any], kind: str) -> list[str]:
    return [line["amount"] for line in invoice["lines"] if line["kind"] == kind]


def usage(meter: str, quantity: int, at: str = "2026-03-05T10:00:00Z") -> dict[str, Any]:
    return {"meter": meter, "quantity": quantity, "at": at}


def test_given_a_team_month_then_usage_in_arrears_and_next_fee_in_advance(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    path = describe(
        tmp_path,
        usage=[
            usage("video", 40_000),
            usage("video", 20_000, "2026-03-30T23:59:00Z"),
            usage("messages", 1_000_120),
            usage("data_transfer", 100_500_000_001),
        ],
    )
    invoice = preview(capsys, path)
    # video 60,000 - 50,000 = 10,000 x 0.00072 = 7.20; messages 120 x 0.00012 = 0.0144 -> 0.01;
    # data ceil(100,500,000,001 / 10^7) / 100 = 100.51 GB - 100 = 0.51 x 0.00012 = 0.0000612 -> 0.00
    assert amounts(invoice, "usage") == ["7.20", "0.00", "0.01", "0.00"]
    video = invoice["lines"][0]
    assert video == {
        "kind": "usage",
        "meter": "video",
        "description": "Video (participant-minute) on Team, 2026-03",
        "quantity": "10000",
        "unit_price": "0.00072",
        "amount": "7.20",
        "start": "2026-03-01T00:00:00+00:00",
        "end": "2026-04-01T00:00:00+00:00",
    }
    assert invoice["lines"][2]["quantity"] == "120"
    assert invoice["lines"][3]["quantity"] == "0.51"
    # the fee billed in advance defaults to what February's invoice billed (29.00): no true-up; April 29.00 ahead
    assert amounts(invoice, "fee_proration") == []
    assert amounts(invoice, "fee") == ["29.00"]
    assert (invoice["total"], invoice["currency"]) == ("36.21", "USD")


def test_given_a_personal_month_then_only_the_overage(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    path = describe(tmp_path, tiers=[{"from": FEB_1, "tier": "personal"}], usage=[usage("audio", 12_500)])
    invoice = preview(capsys, path)
    assert amounts(invoice, "usage") == ["0.00", "0.90", "0.00", "0.00"]  # 2,500 x 0.00036 = 0.90
    assert invoice["total"] == "0.90"  # fee 0.00 ahead


def test_given_an_enterprise_month_then_fees_only(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    path = describe(tmp_path, tiers=[{"from": FEB_1, "tier": "enterprise"}], usage=[usage("video", 9_000_000)])
    assert preview(capsys, path)["total"] == "99.00"  # April in advance; March's 99.00 billed in advance


def test_given_signup_mid_month_then_fee_and_allowance_prorated(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    signup = "2026-03-17T00:00:00Z"
    path = describe(
        tmp_path, signup=signup, tiers=[{"from": signup, "tier": "team"}], usage=[usage("video", 30_000, signup)]
    )
    invoice = preview(capsys, path)
    # 15/31 of March on Team: fee 29 x 15/31 = 14.03 (nothing billed in advance); allowance 24,193.5 -> 24,194;
    # 5,806 over x 0.00072 = 4.18
    assert amounts(invoice, "fee_first_month") == ["14.03"]
    assert "4.18" in amounts(invoice, "usage")
    assert invoice["total"] == "47.21"


def test_given_an_upgrade_mid_month_then_segments_prorated_against_the_fee_in_advance(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    path = describe(
        tmp_path,
        tiers=[{"from": FEB_1, "tier": "team"}, {"from": "2026-03-11T00:00:00Z", "tier": "enterprise"}],
        usage=[usage("video", 20_000, "2026-03-02T00:00:00Z"), usage("video", 100_000, "2026-03-20T00:00:00Z")],
        fee_billed_in_advance="29.00",
    )
    invoice = preview(capsys, path)
    # team 29 x 10/31 = 9.35 + enterprise 99 x 21/31 = 67.06 = 76.41 - 29.00 = 47.41; team allowance 16,130:
    # 3,870 over x 0.00072 = 2.79; April 99.00 ahead
    assert amounts(invoice, "fee_proration") == ["47.41"]
    team_video = [ln for ln in invoice["lines"] if ln["meter"] == "video" and ln["start"].startswith("2026-03-01")]
    assert [(ln["amount"], ln["end"]) for ln in team_video] == [("2.79", "2026-03-11T00:00:00+00:00")]
    assert invoice["total"] == "149.20"


def test_given_late_usage_of_february_then_adjustments_either_sign(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    path = describe(
        tmp_path,
        signup="2026-01-01T00:00:00Z",
        tiers=[{"from": "2026-01-01T00:00:00Z", "tier": "team"}],
        late_usage=[
            {
                "period": "2026-02",
                "billed": [usage("video", 60_000, "2026-02-10T00:00:00Z"), usage("audio", 100_500, FEB_1)],
                "late": [usage("video", 5_000, "2026-02-27T00:00:00Z"), usage("audio", -1_000, FEB_1)],
            }
        ],
    )
    invoice = preview(capsys, path)
    # February video: billed 10,000 over (7.20), now 15,000 over (10.80): +3.60;
    # audio: billed 500 over (0.18), now 99,500 (inside 100,000): -0.18
    assert amounts(invoice, "adjustment") == ["3.60", "-0.18"]
    assert invoice["total"] == "32.42"  # March usage 0.00 + April 29.00 + 3.60 - 0.18


def test_given_negative_late_usage_then_a_credit_note_and_the_credit_shown(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    path = describe(
        tmp_path,
        tiers=[{"from": FEB_1, "tier": "personal"}],
        signup=FEB_1,
        late_usage=[
            {
                "period": "2026-02",
                "billed": [usage("video", 6_000, "2026-02-10T00:00:00Z")],
                "late": [usage("video", -2_000, "2026-02-10T00:00:00Z")],
            }
        ],
    )
    invoice = preview(capsys, path)
    # February as billed: 1,000 over = 0.72; now 4,000 (inside 5,000) = 0.00: -0.72, a credit note against
    # February's invoice (the preview knows no payment: account credit), nothing for March to apply it to
    assert amounts(invoice, "adjustment") == []
    assert amounts(invoice, "credit") == []
    assert invoice["total"] == "0.00"
    [note] = invoice["credit_notes"]
    assert (note["invoice_id"], note["amount"], note["to_account_credit"]) == ("acct_123/2026-02", "0.72", "0.72")
    assert invoice["credit_after"] == "0.72"


def test_given_credit_on_account_then_applied(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    invoice = preview(capsys, describe(tmp_path, credit="5.00"))
    assert amounts(invoice, "credit") == ["-5.00"]
    assert invoice["total"] == "24.00"  # April 29.00 - 5.00


def test_given_human_output_then_a_table_with_the_total(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["invoice", "preview", "--input", str(describe(tmp_path, usage=[usage("video", 60_000)]))]) == 0
    out = capsys.readouterr().out
    assert "Invoice preview: acct_123, 2026-03" in out
    assert "$36.20" in out


@pytest.mark.parametrize(
    ("fields", "problem"),
    [
        ({"period": "2026-13"}, "period"),
        ({"usage": [usage("video", 10, "2026-04-01T00:00:00Z")]}, "usage[0].at 2026-04-01T00:00:00+00:00 is outside"),
        ({"usage": [usage("video", -5)]}, "usage.0.quantity: Input should be greater than or equal to 0"),
        ({"usage": [{"meter": "video", "quantity": 1.5, "at": "2026-03-05T10:00:00Z"}]}, "usage.0.quantity"),
        ({"usage": [usage("minutes", 5)]}, "usage.0.meter"),
        ({"usage": [{"meter": "video", "quantity": 5, "at": "2026-03-05T10:00:00"}]}, "usage.0.at"),
        ({"tiers": [{"from": FEB_1, "tier": "gold"}]}, "gold"),
        (
            {"tiers": [{"from": FEB_1, "tier": "team"}, {"from": "2026-03-15T00:00:00Z", "tier": "personal"}]},
            "downgrade from team to personal",
        ),
        ({"signup": "2026-01-01T00:00:00Z"}, "tiers[0].from must equal signup"),
        ({"account_id": "unattributed"}, "reserved"),
        ({"fee_billed_in_advance": "29.001"}, "dollars and cents"),
        ({"credit": "1e30"}, "credit: Value error, 1E+30 is too large for an amount"),  # before: InvalidOperation
        ({"colour": "blue"}, "colour: Extra inputs are not permitted"),
        ({"late_usage": [{"period": "2026-03"}]}, "must be before 2026-03"),
        (
            {"late_usage": [{"period": "2026-02", "late": [usage("video", -1, "2026-02-02T00:00:00Z")]}]},
            "below zero",
        ),
    ],
)
def test_given_a_bad_description_then_exit_2_naming_the_problem(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], fields: dict[str, Any], problem: str
) -> None:
    assert main(["invoice", "preview", "--input", str(describe(tmp_path, **fields)), "--json"]) == 2
    captured = capsys.readouterr()
    assert captured.out == ""
    assert problem in captured.err


def test_given_a_file_that_is_not_json_or_missing_then_exit_2(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    broken = tmp_path / "broken.json"
    broken.write_text("{not json")
    assert main(["invoice", "preview", "--input", str(broken)]) == 2
    assert "not JSON" in capsys.readouterr().err
    assert main(["invoice", "preview", "--input", str(tmp_path / "missing.json")]) == 2
    assert "cannot read" in capsys.readouterr().err
