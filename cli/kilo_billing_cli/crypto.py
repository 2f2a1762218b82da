"""`kilo-billing crypto unattributed|assign|review|resolve`: the operator's side of crypto payments settlement could
not decide alone.

``crypto unattributed`` lists the UNATTRIBUTED chain payments (kept, never dropped; each raised an
``UnattributedCryptoPayment.v1`` alert). ``crypto assign <payment id> <account> <invoice id>`` attributes one to an
account's crypto bill through settlement itself (``Settlement.assign``): valued at the bill's newest quote for that
chain and asset with the late-payment policy, the bill moved as for any payment (PROCESSING, PAID once finalized),
``CryptoPaymentSeen.v1`` published. Refused, naming why: an unknown payment, one already attributed, failed or
orphaned, a bill of another account, a bill without a quote for the payment's chain and asset.

``crypto review`` lists the payments in manual review (late ETH/SOL whose price moved more than the review band since
the quote; not counted toward their bill) and those refused there (a refund owed). ``crypto resolve <payment id>
--accept`` counts one at the rate the late-payment policy gave it, through settlement (``Settlement.resolve_review``:
the bill moves as for any payment, ``CryptoBillSettled.v1`` once when it becomes paid); ``--refund-owed`` records its
asset amount as owed back to the sender, never counted. Refused, naming why: an unknown payment, one not in review.

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
    review = commands.add_parser("review", help="payments in manual review, and refunds owed for refused ones")
    resolve = commands.add_parser("resolve", help="accept a payment in manual review, or record a refund owed")
    resolve.add_argument("payment_id", help="<chain>:<tx id>:<index>, as listed by `crypto review`")
    decision = resolve.add_mutually_exclusive_group(required=True)
    decision.add_argument("--accept", action="store_true", help="count it at the late-payment policy's rate")
    decision.add_argument("--refund-owed", action="store_true", help="never count it: its amount is owed back")
    for command in (listed, assign, review, resolve):
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
    if args.crypto_command == "review":
        reviewed: list[dict[str, Any]] = [
            {
                "payment_id": p.payment_id,
                "state": "refund_owed" if p.refund_owed else "in_review",
                "account_id": p.account_id,
                "invoice_id": p.invoice_id,
                "status": p.status.value,
                "asset": p.transfer.asset,
                "amount": decimal_str(asset_amount(p.transfer.atomic_amount, p.transfer.asset)),
                "rate_usd": decimal_str(p.rate) if p.rate is not None else None,
                "amount_usd": money_str(p.usd) if p.usd is not None else None,
                "sender": p.transfer.sender,
                "seen_at": p.seen_at.isoformat(),
            }
            for p in store.reviewed_payments()
        ]
        _emit(console, reviewed, args.json, "Crypto payments in manual review")
        return
    if not args.event_bus:
        raise ValueError("the event bus is required: --event-bus or EVENT_BUS_NAME")
    publisher = EventBridgePublisher(client("events"), args.event_bus, SOURCE_CRYPTO)
    settlement = Settlement(store, publisher, {})
    if args.crypto_command == "resolve":
        try:
            resolved = settlement.resolve_review(args.payment_id, accept=args.accept)
        except SettlementError as exc:
            raise ValueError(str(exc)) from exc
        resolved_bill = store.bill(resolved.invoice_id or "")
        decided: dict[str, Any] = {
            "payment_id": resolved.payment_id,
            "decision": "accepted" if args.accept else "refund_owed",
            "invoice_id": resolved.invoice_id,
            "amount_usd": money_str(resolved.usd) if resolved.usd is not None and args.accept else None,
            "refund_owed": (
                f"{decimal_str(asset_amount(resolved.transfer.atomic_amount, resolved.transfer.asset))} "
                f"{resolved.transfer.asset} to {resolved.transfer.sender}"
                if resolved.refund_owed
                else None
            ),
            "bill_status": resolved_bill.status.value if resolved_bill else None,
        }
        _emit(console, [decided], args.json, "Resolved")
        return
    check_account_id(args.account)
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
        sys.stdout.write(json.dumps(rows[0] if title in ("Assigned", "Resolved") else rows, indent=2) + "\n")
        return
    table = Table(title=title)
    for column in rows[0] if rows else ["payment_id"]:
        table.add_column(column)
    for row in rows:
        table.add_row(*(str(value) for value in row.values()))
    console.print(table)
