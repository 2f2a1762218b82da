"""`kilo-billing alerts clear-mark ACCOUNT ADDRESS`: the operator clears the mark that keeps an account's alert emails
from an address SES reported bounced for good or complained about (D400, D409), e.g. once the customer says the
mailbox is fixed before a bounce's mark lapses (30 days) or asks for email again after a complaint.

The alerts table comes from ``--alerts-table`` or ``ALERTS_TABLE_NAME``; AWS credentials, region and endpoint from the
usual AWS environment. The address is never stored: the mark is keyed by the pseudonym of the address casefolded
(the alerts function's ``bounces.mark_key``, read here by name: ``ACCOUNT#<id>`` / ``EMAILMARK#<pseudonym>``)."""

from __future__ import annotations

import argparse
import os
from typing import Any

from kilo_billing.accounts import pseudonym
from kilo_billing.items import to_item
from kilo_billing_cli import arguments


def add_parser(sub: Any) -> None:
    alerts = sub.add_parser("alerts", help="the alert emails' bounce marks")
    commands = alerts.add_subparsers(dest="alerts_command", required=True, parser_class=type(alerts))
    clear = commands.add_parser("clear-mark", help="email an address SES reported bounced or complained about again")
    clear.add_argument("account", type=arguments.account_id, help="account id")
    clear.add_argument("address", help="the email address, as the account has it")
    clear.add_argument("--alerts-table", default=os.environ.get("ALERTS_TABLE_NAME", ""))


def mark_key(account_id: str, address: str) -> dict[str, Any]:
    """The key of ``address``'s mark: the pseudonym of the whole address stripped and casefolded (as the bounce
    handler writes it)."""
    recipient = pseudonym(account_id, address.strip().casefold())
    return to_item({"pk": f"ACCOUNT#{account_id}", "sk": f"EMAILMARK#{recipient}"})


def run(args: argparse.Namespace, _catalog: object = None) -> int:
    """Says what was done: the mark deleted, or there was none (both exit 0)."""
    from kilo_billing.aws import client, delete_if  # noqa: PLC0415  # boto3: only for the command that needs it

    if not args.alerts_table:
        raise ValueError("--alerts-table (or ALERTS_TABLE_NAME) is required")
    found = delete_if(client("dynamodb"), args.alerts_table, mark_key(args.account, args.address))
    if found:
        print(f"{args.account}: the address's mark cleared; the next alert emails it")
    else:
        print(f"{args.account}: the address has no mark; nothing to clear")
    return 0
