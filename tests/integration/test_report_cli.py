"""`kilo-billing report revenue|enterprise` against the template's usage table on moto: accounts registered, usage
ADDed the way rating writes it, periods closed by the real close on the DynamoDB ledger, sessions written with
rating's item mapping. Figures worked by hand (video $0.00072 ours, $0.0006 LiveKit's; Team $29, 50,000 minutes)."""

from __future__ import annotations

import csv
import io
import json
from datetime import UTC, datetime
from typing import Any

import pytest

from kilo_billing.account_store import DynamoAccountDirectory
from kilo_billing.accounts import AccountProfile
from kilo_billing.catalog import default_catalog
from kilo_billing.items import to_item
from kilo_billing.periods import Period
from kilo_billing.periods_store import DynamoLedgerStore
from kilo_billing.rating import TierChange
from kilo_billing_cli.main import main
from kilo_invoice.logic import close_account
from kilo_invoice.model import CloseDeps
from kilo_rate_usage.items import session_to_item
from kilo_rate_usage.model import StoredSession
from tests.conftest import Stack, count_calls
from tests.payment_fakes import InMemoryPaymentGateway
from tests.report_fakes import session

MAR = Period(2026, 3)
MAR_1 = datetime(2026, 3, 1, tzinfo=UTC)


class _Bus:
    def publish(self, detail_type: str, detail: Any) -> None:
        pass


@pytest.fixture
def table(stack: Stack) -> str:
    name: str = stack.template.physical_name("UsageTable")
    client = stack.clients["dynamodb"]
    directory = DynamoAccountDirectory(client, name)
    directory.register(AccountProfile("acme", (TierChange(MAR_1, "team"),)))
    directory.register(AccountProfile("big", (TierChange(MAR_1, "enterprise"),)))

    def rate(account: str, meter: str, quantity: int) -> None:
        client.update_item(
            TableName=name,
            Key=to_item({"pk": f"ACCOUNT#{account}", "sk": "PERIOD#2026-03"}),
            UpdateExpression="ADD #c :q",
            ExpressionAttributeNames={"#c": f"c#{int(MAR_1.timestamp())}#{meter}"},
            ExpressionAttributeValues=to_item({":q": quantity}),
        )

    rate("acme", "video", 60_000)
    rate("big", "video", 1_000)
    rate("unattributed", "video", 500)
    deps = CloseDeps(DynamoLedgerStore(client, name), InMemoryPaymentGateway(), _Bus(), default_catalog(), lambda _: 0)
    for account in ("acme", "big"):
        close_account(deps, account, MAR, MAR.end)
    for found in (
        session("RM_a", "PA_1", "alice", "big", [("2026-03", 600, 0)], room_name="standup"),
        session("RM_a", "PA_2", "bob", "big", [("2026-03", 400, 0)], room_name="standup"),
    ):
        client.put_item(TableName=name, Item=session_to_item(StoredSession.of(found, {})))
    return name


def test_given_a_closed_month_when_revenue_as_csv_then_a_header_and_a_row_per_account_tier_total(
    stack: Stack, table: str, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr("kilo_billing.aws.client", lambda service, *_: stack.clients[service])  # to count its calls
    counter = count_calls(stack.clients["dynamodb"])
    assert main(["report", "revenue", "--period", "2026-03", "--usage-table", table, "--csv"]) == 0
    out = capsys.readouterr().out
    rows = list(csv.DictReader(io.StringIO(out)))
    # short_paid (review 3) appended: the columns before it keep their places for readers by position (review 4)
    assert out.splitlines()[0].endswith(",total_billed,refunds,cost_basis,margin,short_paid")
    by = {(row["row"], row["account_id"] or row["tier"]): row for row in rows}
    acme = by[("account", "acme")]
    # first invoice: March fee 29.00 (true-up) + April 29.00 in advance = 58.00 fees; 10,000 over x 0.00072 = 7.20;
    # cost 60,000 x 0.0006 = 36.00; margin 65.20 - 36.00 = 29.20
    assert (acme["fees"], acme["overage"], acme["total_billed"], acme["cost_basis"], acme["margin"]) == (
        "58.00",
        "7.20",
        "65.20",
        "36.00",
        "29.20",
    )
    big = by[("account", "big")]
    assert (big["tier"], big["total_billed"], big["cost_basis"], big["margin"]) == (
        "enterprise",
        "198.00",
        "0.60",
        "197.40",
    )
    total = by[("total", "")]
    assert (total["accounts"], total["total_billed"], total["cost_basis"], total["video_minutes"]) == (
        "2",
        "263.20",
        "36.60",
        "61000",
    )
    unattributed = by[("unattributed", "")]
    assert (unattributed["video_minutes"], unattributed["cost_basis"], unattributed["margin"]) == (
        "500",
        "0.30",
        "-0.30",
    )
    assert [row["row"] for row in rows] == ["account", "account", "tier", "tier", "total", "unattributed"]
    # reads: the accounts index (one Scan page), one Query per account, one for the unattributed bucket; no writes
    assert counter.calls == ["Scan", "Query", "Query", "Query"]


def test_given_revenue_as_json_then_money_as_strings(table: str, capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["report", "revenue", "--period", "2026-03", "--usage-table", table, "--json"]) == 0
    report = json.loads(capsys.readouterr().out)
    assert report["totals"]["margin"] == "226.60"  # 263.20 - 36.60
    assert [t["tier"] for t in report["tiers"]] == ["enterprise", "team"]
    assert report["unattributed"] == {
        "video_minutes": "500",
        "audio_minutes": "0",
        "messages": "0",
        "data_gb": "0",
        "cost_basis": "0.30",
    }


def test_given_an_account_when_enterprise_report_then_minutes_per_member_and_room(
    table: str, capsys: pytest.CaptureFixture[str]
) -> None:
    assert main(["report", "enterprise", "big", "--period", "2026-03", "--usage-table", table, "--json"]) == 0
    report = json.loads(capsys.readouterr().out)
    # alice 600 video x 0.0006 = 0.36; bob 400 -> 0.24; the room 1,000 -> 0.60
    assert [(m["identity"], m["video_minutes"], m["cost_basis"]) for m in report["members"]] == [
        ("alice", "600", "0.36"),
        ("bob", "400", "0.24"),
    ]
    assert [(r["room"], r["participants"], r["cost_basis"]) for r in report["rooms"]] == [("standup (RM_a)", 2, "0.60")]
    assert main(["report", "enterprise", "big", "--period", "2026-03", "--usage-table", table, "--csv"]) == 0
    lines = capsys.readouterr().out.splitlines()
    assert lines[0] == "row,key,sessions,participants,video_minutes,audio_minutes,cost_basis"
    assert lines[-1] == "total,total,2,0,1000,0,0.60"
    assert main(["report", "revenue", "--period", "2026-03", "--usage-table", table]) == 0
    assert "Revenue 2026-03" in capsys.readouterr().out


@pytest.mark.parametrize(
    ("argv", "problem"),
    [
        (["report", "revenue", "--period", "2026-3"], "2026-3"),
        (["report", "enterprise", "no/such", "--period", "2026-03"], "account id 'no/such'"),
        (["report", "enterprise", "ghost", "--period", "2026-03"], "account 'ghost' is not registered"),
        (["report", "revenue", "--period", "2026-03", "--csv", "--json"], "not allowed with argument"),
    ],
)
def test_given_bad_input_then_exit_2_naming_the_problem(
    table: str, capsys: pytest.CaptureFixture[str], argv: list[str], problem: str
) -> None:
    assert _exit_code([*argv, "--usage-table", table]) == 2
    assert problem in capsys.readouterr().err


def _exit_code(argv: list[str]) -> int | str | None:
    """argparse errors exit (status 2); the commands' own checks return 2."""
    try:
        return main(argv)
    except SystemExit as exited:
        return exited.code


def test_given_no_usage_table_then_exit_2(
    aws: None, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.delenv("USAGE_TABLE_NAME", raising=False)
    assert main(["report", "revenue", "--period", "2026-03", "--usage-table", ""]) == 2
    assert "usage table is required" in capsys.readouterr().err
