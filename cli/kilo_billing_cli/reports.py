"""`kilo-billing report revenue --period YYYY-MM [--csv|--json]` and `kilo-billing report enterprise ACCOUNT --period
YYYY-MM [--csv|--json]`: revenue per account and tier (fees, overage, total billed, LiveKit cost basis, margin, plus
unattributed usage), usage per workspace member and room. Money and quantities as strings; CSV with a header.

The usage table comes from ``--usage-table`` or ``USAGE_TABLE_NAME``; AWS credentials, region and endpoint
(``AWS_ENDPOINT_URL`` for the local stack) from the usual AWS environment.
"""

from __future__ import annotations

import argparse
import csv
import json
import os
import sys
from collections.abc import Callable
from typing import Any, TypeVar

from rich.table import Table

from kilo_billing.catalog import Catalog
from kilo_billing.invoicing import LedgerStore
from kilo_billing.money import decimal_str, money_str
from kilo_billing.reports import (
    EnterpriseReport,
    MemberUsage,
    RevenueFigures,
    RevenueReport,
    Usage,
    enterprise_report,
    revenue_report,
)
from kilo_billing.session_usage import SessionReader
from kilo_billing_cli import arguments
from kilo_billing_cli.console import make_console

EXIT_BAD_INPUT = 2
_Report = TypeVar("_Report", RevenueReport, EnterpriseReport)
REVENUE_COLUMNS = (
    "row", "tier", "account_id", "status", "invoices", "accounts",
    "video_minutes", "audio_minutes", "messages", "data_gb",
    "fees", "overage", "adjustments", "credit", "total_billed", "refunds", "cost_basis", "margin",
    "short_paid",  # appended (D352, review 4): the columns before it keep their places
)  # fmt: skip
MEMBER_COLUMNS = ("row", "key", "sessions", "participants", "video_minutes", "audio_minutes", "cost_basis")


def add_parser(sub: Any) -> None:
    report = sub.add_parser("report", help="revenue per tier and account; usage per member and room")
    commands = report.add_subparsers(dest="report_command", required=True, parser_class=type(report))
    revenue = commands.add_parser("revenue", help="fees, overage, total billed, cost basis and margin of a period")
    enterprise = commands.add_parser("enterprise", help="an account's minutes per member (identity) and per room")
    enterprise.add_argument("account", type=arguments.account_id, help="account id")
    for command in (revenue, enterprise):
        command.add_argument("--period", type=arguments.period, required=True, help="YYYY-MM")
        output = command.add_mutually_exclusive_group()
        output.add_argument("--json", action="store_true", help="machine-readable output")
        output.add_argument("--csv", action="store_true", help="CSV with a header row")
        command.add_argument("--usage-table", default=os.environ.get("USAGE_TABLE_NAME", ""))


# --- views ---------------------------------------------------------------------------------------------------------


def usage_json(usage: Usage) -> dict[str, str]:
    return {
        "video_minutes": decimal_str(usage.video_minutes),
        "audio_minutes": decimal_str(usage.audio_minutes),
        "messages": decimal_str(usage.messages),
        "data_gb": decimal_str(usage.data_gb),
    }


def figures_json(figures: RevenueFigures) -> dict[str, str]:
    money = {
        "fees": figures.fees,
        "overage": figures.overage,
        "adjustments": figures.adjustments,
        "credit": figures.credit,
        "total_billed": figures.total_billed,
        "refunds": figures.refunds,
        "cost_basis": figures.cost_basis,
        "margin": figures.margin,
        "short_paid": figures.short_paid,
    }
    return usage_json(figures.usage) | {name: money_str(value) for name, value in money.items()}


def revenue_json(report: RevenueReport) -> dict[str, object]:
    return {
        "period": report.period,
        "currency": "USD",
        "accounts": [
            {"account_id": r.account_id, "tier": r.tier, "status": r.status, "invoices": r.invoices}
            | figures_json(r.figures)
            for r in report.accounts
        ],
        "tiers": [{"tier": t.tier, "accounts": t.accounts} | figures_json(t.figures) for t in report.tiers],
        "totals": {"accounts": len(report.accounts)} | figures_json(report.totals),
        "unattributed": usage_json(report.unattributed.usage)
        | {"cost_basis": money_str(report.unattributed.cost_basis)},
    }


def revenue_rows(report: RevenueReport) -> list[dict[str, str]]:
    rows: list[dict[str, str]] = []
    for r in report.accounts:
        rows.append(
            {"row": "account", "tier": r.tier, "account_id": r.account_id, "status": r.status}
            | {"invoices": str(r.invoices)}
            | figures_json(r.figures)
        )
    for t in report.tiers:
        rows.append({"row": "tier", "tier": t.tier, "accounts": str(t.accounts)} | figures_json(t.figures))
    rows.append({"row": "total", "accounts": str(len(report.accounts))} | figures_json(report.totals))
    cost = report.unattributed.cost_basis
    rows.append(
        {"row": "unattributed", "cost_basis": money_str(cost), "margin": money_str(-cost)}
        | usage_json(report.unattributed.usage)
    )
    return [{column: row.get(column, "") for column in REVENUE_COLUMNS} for row in rows]


def member_json(row: MemberUsage) -> dict[str, object]:
    return {
        "key": row.key,
        "sessions": row.sessions,
        "participants": row.participants,
        "video_minutes": str(row.video_minutes),
        "audio_minutes": str(row.audio_minutes),
        "cost_basis": money_str(row.cost_basis),
    }


def enterprise_json(report: EnterpriseReport) -> dict[str, object]:
    return {
        "account_id": report.account_id,
        "period": report.period,
        "tier": report.tier,
        "members": [{"identity": m.pop("key")} | m for m in map(member_json, report.members)],
        "rooms": [{"room": m.pop("key")} | m for m in map(member_json, report.rooms)],
        "total": member_json(report.total),
    }


def enterprise_rows(report: EnterpriseReport) -> list[dict[str, str]]:
    found = [("member", m) for m in report.members] + [("room", r) for r in report.rooms] + [("total", report.total)]
    return [{"row": kind} | {k: str(v) for k, v in member_json(row).items()} for kind, row in found]


def _write_csv(columns: tuple[str, ...], rows: list[dict[str, str]]) -> None:
    writer = csv.DictWriter(sys.stdout, fieldnames=columns, lineterminator="\n")
    writer.writeheader()
    writer.writerows(rows)


def _print_revenue(report: RevenueReport) -> None:
    table = Table(title=f"Revenue {report.period} (USD)")
    shown = (
        "row", "tier", "account_id", "status",
        "fees", "overage", "adjustments", "total_billed", "refunds", "cost_basis", "margin", "short_paid",
    )  # fmt: skip
    for column in shown:
        table.add_column(column, justify="right" if column in MONEY_COLUMNS else "left")
    for row in revenue_rows(report):
        table.add_row(*(row[column] for column in shown))
    make_console().print(table)


def _print_enterprise(report: EnterpriseReport) -> None:
    table = Table(title=f"Usage of {report.account_id} ({report.tier}) in {report.period}")
    for column in MEMBER_COLUMNS:
        table.add_column(column, justify="left" if column in ("row", "key") else "right")
    for row in enterprise_rows(report):
        table.add_row(*(row[column] for column in MEMBER_COLUMNS))
    make_console().print(table)


MONEY_COLUMNS = frozenset(
    {"fees", "overage", "adjustments", "credit", "total_billed", "refunds", "short_paid", "cost_basis", "margin"}
)


# --- running ---------------------------------------------------------------------------------------------------------


def dynamo_ports(table: str) -> tuple[LedgerStore, SessionReader]:
    from kilo_billing.periods_store import DynamoLedgerStore  # noqa: PLC0415
    from kilo_billing.session_usage_store import DynamoSessionReader  # noqa: PLC0415
    from kilo_billing_cli.clients import client  # noqa: PLC0415

    if not table:
        raise ValueError("the usage table is required: --usage-table or USAGE_TABLE_NAME")
    dynamodb = client("dynamodb")
    return DynamoLedgerStore(dynamodb, table), DynamoSessionReader(dynamodb, table)


def _output(
    args: argparse.Namespace,
    report: _Report,
    as_json: Callable[[_Report], object],
    columns: tuple[str, ...],
    rows: Callable[[_Report], list[dict[str, str]]],
    show: Callable[[_Report], None],
) -> int:
    """A report as ``--json``, ``--csv`` (a header, then its rows), or a table (the default)."""
    if args.json:
        sys.stdout.write(json.dumps(as_json(report), indent=2) + "\n")
    elif args.csv:
        _write_csv(columns, rows(report))
    else:
        show(report)
    return 0


def run(args: argparse.Namespace, catalog: Catalog, ports: tuple[LedgerStore, SessionReader] | None = None) -> int:
    try:
        store, sessions = ports or dynamo_ports(args.usage_table)
    except ValueError as exc:
        sys.stderr.write(f"kilo-billing report: error: {exc}\n")
        return EXIT_BAD_INPUT
    if args.report_command == "revenue":
        revenue = revenue_report(store, args.period, catalog)
        return _output(args, revenue, revenue_json, REVENUE_COLUMNS, revenue_rows, _print_revenue)
    ledger = store.ledger(args.account)
    if ledger.profile is None:
        sys.stderr.write(f"kilo-billing report: error: account {args.account!r} is not registered\n")
        return EXIT_BAD_INPUT
    usage = enterprise_report(sessions, ledger.profile, args.account, args.period, catalog)
    return _output(args, usage, enterprise_json, MEMBER_COLUMNS, enterprise_rows, _print_enterprise)
