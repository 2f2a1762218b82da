"""`kilo-billing crypto unattributed|assign`: the operator's side of crypto payments nobody could match.

``crypto unattributed`` lists the UNATTRIBUTED chain payments (kept, never dropped; each raised an
``UnattributedCryptoPayment.v1`` alert). ``crypto assign <payment id> <account> <invoice id>`` attributes one to an
account's crypto bill through settlement itself (``Settlement.assign``): valued at the bill's newest quote for that
chain and asset with the late-payment policy, the bill moved as for any payment (PROCESSING, PAID once finalized),
``CryptoPaymentSeen.v1`` published. Refused, naming why: an unknown payment, one already attributed, failed or
orphaned, a bill of another account, a bill without a quote for the payment's chain and asset.

Table and bus come from the options or the function's variables (``CRYPTO_TABLE_NAME``, ``EVENT_BUS_NAME``).
"""

from __future__ import annotations

import argparse
import json
import os
import sys
from typing import Any

from rich.console import Console
from rich.table import Table

from kilo_billing.money import decimal_str, money_str


def add_parser(sub: Any) -> None:
    crypto = sub.add_parser("crypto", help="crypto payments: the unattributed list, assigning a payment to a bill")
    commands = crypto.add_subparsers(dest="crypto_command", required=True, parser_class=type(crypto))
    listed = commands.add_parser("unattributed", help="chain payments that match no bill")
    assign = commands.add_parser("assign", help="attribute an unattributed payment to an account's bill")
    assign.add_argument("payment_id", help="<chain>:<tx id>:<index>, as listed")
    assign.add_argument("account", help="the account the payment belongs to")
    assign.add_argument("invoice", help="the invoice id of the account's crypto bill")
    for command in (listed, assign):
        command.add_argument("--crypto-table", default=os.environ.get("CRYPTO_TABLE_NAME", ""))
        command.add_argument("--event-bus", default=os.environ.get("EVENT_BUS_NAME", ""))
        command.add_argument("--json", action="store_true", help="machine-readable output")


def run(args: argparse.Namespace, console: Console) -> None:
    """Errors a user can fix are ``ValueError`` (exit 2)."""
    from kilo_billing.accounts import check_account_id  # noqa: PLC0415
    from kilo_billing.aws import client  # noqa: PLC0415
    from kilo_billing.contracts import SOURCE_CRYPTO  # noqa: PLC0415
    from kilo_billing.publisher import EventBridgePublisher  # noqa: PLC0415
    from kilo_crypto_watch.adapters import DynamoCryptoStore  # noqa: PLC0415
    from kilo_crypto_watch.settlement import Settlement, SettlementError, asset_amount  # noqa: PLC0415

    if not args.crypto_table:
        raise ValueError("the crypto table is required: --crypto-table or CRYPTO_TABLE_NAME")
    store = DynamoCryptoStore(client("dynamodb"), args.crypto_table)
    if args.crypto_command == "unattributed":
        rows = [
            {
                "payment_id": p.payment_id,
                "status": p.status.value,
                "asset": p.transfer.asset,
                "amount": decimal_str(asset_amount(p.transfer.atomic_amount, p.transfer.asset)),
                "sender": p.transfer.sender,
                "seen_at": p.seen_at.isoformat(),
            }
            for p in store.unattributed()
        ]
        _emit(console, rows, args.json, "Unattributed crypto payments")
        return
    if not args.event_bus:
        raise ValueError("the event bus is required: --event-bus or EVENT_BUS_NAME")
    check_account_id(args.account)
    publisher = EventBridgePublisher(client("events"), args.event_bus, SOURCE_CRYPTO)
    settlement = Settlement(store, publisher, {})
    try:
        payment = settlement.assign(args.payment_id, args.account, args.invoice)
    except SettlementError as exc:
        raise ValueError(str(exc)) from exc
    bill = store.bill(args.invoice)
    row = {
        "payment_id": payment.payment_id,
        "account_id": payment.account_id,
        "invoice_id": payment.invoice_id,
        "quote_id": payment.quote_id,
        "amount_usd": money_str(payment.usd) if payment.usd is not None else None,
        "late": payment.late,
        "manual_review": payment.review,
        "bill_status": bill.status.value if bill else None,
    }
    _emit(console, [row], args.json, "Assigned")


def _emit(console: Console, rows: list[dict[str, Any]], as_json: bool, title: str) -> None:
    if as_json:
        sys.stdout.write(json.dumps(rows if title != "Assigned" else rows[0], indent=2) + "\n")
        return
    table = Table(title=title)
    for column in rows[0] if rows else ["payment_id"]:
        table.add_column(column)
    for row in rows:
        table.add_row(*(str(value) for value in row.values()))
    console.print(table)
