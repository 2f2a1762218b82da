"""`kilo-billing alerts clear-mark ACCOUNT ADDRESS`: the operator clears what keeps an account's alert emails from an
address SES reported bounced for good or complained about (D400, D409), e.g. once the customer says the mailbox is
fixed or asks for email again after a complaint: our mark (no mark lapses by itself) and SES's account-level
suppression list's entry (``DeleteSuppressedDestination``: SES keeps a bounced or complained address until it is
removed, dropping every later email to it - D381, D423).

The alerts table comes from ``--alerts-table`` or ``ALERTS_TABLE_NAME``; AWS credentials, region and endpoint from the
usual AWS environment (the operator's grants: ``dynamodb:DeleteItem`` on the alerts table,
``ses:DeleteSuppressedDestination``). The address is never stored: the mark is keyed by the pseudonym of the address
casefolded (``kilo_billing.email_marks``, the bounce handler's rule)."""

from __future__ import annotations

import argparse
import os
from typing import Any

from kilo_billing.email_marks import mark_key, mark_ref
from kilo_billing.items import to_item
from kilo_billing_cli import arguments


def add_parser(sub: Any) -> None:
    alerts = sub.add_parser("alerts", help="the alert emails' bounce marks")
    commands = alerts.add_subparsers(dest="alerts_command", required=True, parser_class=type(alerts))
    clear = commands.add_parser("clear-mark", help="email an address SES reported bounced or complained about again")
    clear.add_argument("account", type=arguments.account_id, help="account id")
    clear.add_argument("address", help="the email address, as the account has it")
    clear.add_argument("--alerts-table", default=os.environ.get("ALERTS_TABLE_NAME", ""))


def run(args: argparse.Namespace, _catalog: object = None) -> int:
    """Says what was done: the mark deleted or there was none, and the address taken off SES's suppression list or
    not on it (each exit 0); SES failing otherwise raises after the mark is cleared (run it again)."""
    from kilo_billing.aws import NotFoundError, call, delete_if  # noqa: PLC0415  # boto3: only here
    from kilo_billing_cli.clients import client  # noqa: PLC0415

    if not args.alerts_table:
        raise ValueError("--alerts-table (or ALERTS_TABLE_NAME) is required")
    key = to_item(mark_key(args.account, mark_ref(args.account, args.address)))
    if delete_if(client("dynamodb"), args.alerts_table, key):
        print(f"{args.account}: the address's mark cleared")
    else:
        print(f"{args.account}: the address has no mark; nothing to clear")
    try:
        call(client("sesv2").delete_suppressed_destination, EmailAddress=args.address.strip())
    except NotFoundError:
        print(f"{args.account}: the address is not on SES's suppression list; the next alert emails it")
    else:
        print(f"{args.account}: the address taken off SES's suppression list; the next alert emails it")
    return 0
