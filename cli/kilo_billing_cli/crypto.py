"""`kilo-billing crypto unattributed|assign|review|resolve|refunded|payments`: the operator's side of crypto payments
settlement could not decide alone.

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

``crypto refunded <payment id> --tx <refund tx>`` records that an unattributed payment (a stray one: paid into an
account of ours that is not the payment address, D341) was sent back on chain by that transaction
(``Settlement.refunded``): it leaves the unattributed list, and a later ``assign`` or customer claim of it is refused.
Refused, naming why: an unknown payment, one attributed, failed, orphaned, refunded by another transaction or counted
in another payment (``counted_in``: its amount is counted there already; D91 amended (sp4)).

``crypto payments <invoice id>`` shows one crypto bill and its payment lines: the bill's status, flags, total and
what a new quote asks now (``remaining_usd``; 0.00 once PAID), and per payment its status, asset, USD counted, whether
it counts, and ``stalled`` - named stuck by its watcher, so it no longer covers the bill (D398, D419): the view an
operator paged by the stuck alarm (``CryptoPaymentsStuck``) reads to see whether the customer is being asked again.

``crypto backfill-links`` writes the transaction links (``TXN#<chain>#<tx>`` / ``PAY#<payment id>``, D155) that
payments attributed before D155 lack: without one, a claimed payment whose transaction is re-mined at another log
index loses its bill. A dry run unless ``--apply``; it scans the table a page at a time (``--page-size`` items read),
can stop after ``--max-pages`` and resume with ``--start-after`` (the key it printed); every link is written only
if absent, so a rerun writes nothing twice. Its report names each payment linked (or to link) and the key to resume at.

Table and bus come from the options or the function's variables (``CRYPTO_TABLE_NAME``, ``EVENT_BUS_NAME``).
``assign`` and ``resolve`` read the bill after their write to show its status; that read failing prints the result
with ``bill_status`` "unknown" and a note on stderr, exit 0 (the write is done: a rerun would be refused).
"""

from __future__ import annotations

import argparse
import json
import os
import sys
from dataclasses import dataclass, field
from decimal import Decimal
from typing import TYPE_CHECKING, Any

from rich.console import Console
from rich.table import Table

from kilo_billing.aws import StorageUnavailableError
from kilo_billing.money import decimal_str, money_str
from kilo_billing.publisher import PublishError
from kilo_billing_cli.arguments import whole_number
from kilo_billing_cli.bus import check_event_bus

if TYPE_CHECKING:
    from kilo_crypto_watch.adapters import DynamoCryptoStore


class AssignmentNotPublishedError(Exception):
    """``crypto assign`` saved the payment to the bill, then an event was not sent (``error``, the publisher's).
    ``seen_sent``: whether the payment's ``CryptoPaymentSeen.v1`` - published before the bill's event - went, read
    back from the payment's ``announced``; ``None`` when the payment could not be read. main's line says which was
    lost (D362)."""

    def __init__(self, error: PublishError, seen_sent: bool | None) -> None:
        super().__init__(str(error))
        self.error = error
        self.seen_sent = seen_sent


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
    refunded = commands.add_parser(
        "refunded", help="record that an unattributed payment was sent back on chain: off the list, never assigned"
    )
    refunded.add_argument("payment_id", help="<chain>:<tx id>:<index>, as listed by `crypto unattributed`")
    refunded.add_argument("--tx", required=True, help="the refund's transaction (hash or signature)")
    shown = commands.add_parser(
        "payments", help="a crypto bill's payments: status, USD counted, stuck (stalled) or not, what it asks now"
    )
    shown.add_argument("invoice", help="the invoice id of the crypto bill")
    backfill = commands.add_parser(
        "backfill-links",
        help="write the transaction links payments attributed before D155 lack (a dry run unless --apply)",
    )
    backfill.add_argument("--apply", action="store_true", help="write the missing links (else: only report them)")
    backfill.add_argument("--page-size", type=whole_number("--page-size", 1), default=100, help="items per Scan page")
    backfill.add_argument("--max-pages", type=whole_number("--max-pages", 1), default=None, help="stop after N pages")
    backfill.add_argument("--start-after", type=_scan_key, default=None, help="resume: the key a run printed (JSON)")
    for command in (listed, assign, review, resolve, refunded, shown, backfill):
        command.add_argument("--crypto-table", default=os.environ.get("CRYPTO_TABLE_NAME", ""))
        command.add_argument("--event-bus", default=os.environ.get("EVENT_BUS_NAME", ""))
        command.add_argument("--json", action="store_true", help="machine-readable output")


def _scan_key(text: str) -> dict[str, str]:
    """``--start-after``: the JSON object ``{"pk": ..., "sk": ...}`` a run printed as ``next_start_after``."""
    try:
        value = json.loads(text)
    except ValueError:
        value = None
    if not isinstance(value, dict) or set(value) != {"pk", "sk"} or not all(isinstance(v, str) for v in value.values()):
        raise argparse.ArgumentTypeError(f'--start-after must be a JSON object {{"pk": ..., "sk": ...}}, got {text!r}')
    return {"pk": value["pk"], "sk": value["sk"]}


@dataclass
class LinkBackfill:
    """What one run of ``crypto backfill-links`` found and wrote."""

    applied: bool
    pages: int = 0
    attributed: int = 0
    already_linked: int = 0
    linked: list[str] = field(default_factory=list)  # written (applied), or to write (dry run)
    next_start_after: dict[str, str] | None = None  # None: the scan reached the end of the table

    def as_json(self) -> dict[str, Any]:
        return {
            "applied": self.applied,
            "pages": self.pages,
            "attributed_payments": self.attributed,
            "already_linked": self.already_linked,
            "linked" if self.applied else "to_link": self.linked,
            "next_start_after": self.next_start_after,
        }


def backfill_links(
    store: DynamoCryptoStore,
    apply: bool,
    page_size: int = 100,
    max_pages: int | None = None,
    start_after: dict[str, str] | None = None,
) -> LinkBackfill:
    """Every attributed payment without its transaction link gets one (``apply``), or is reported (a dry run).
    Idempotent: a link is put only if absent, and one put meanwhile by settlement counts as already there."""
    from kilo_billing.items import from_item, to_item  # noqa: PLC0415

    report = LinkBackfill(applied=apply)
    start = to_item(start_after) if start_after is not None else None
    while max_pages is None or report.pages < max_pages:
        payments, start = store.attributed_payments_page(start, page_size)
        report.pages += 1
        for payment in payments:
            report.attributed += 1
            missing = store.add_transaction_link(payment) if apply else not store.has_transaction_link(payment)
            if missing:
                report.linked.append(payment.payment_id)
            else:
                report.already_linked += 1
        if start is None:
            break
    report.next_start_after = {k: str(v) for k, v in from_item(start).items()} if start is not None else None
    return report


def run(args: argparse.Namespace, console: Console) -> None:
    """Errors a user can fix are ``ValueError`` (exit 2)."""
    from kilo_billing.accounts import check_account_id  # noqa: PLC0415
    from kilo_billing.contracts import SOURCE_CRYPTO  # noqa: PLC0415
    from kilo_billing.publisher import EventBridgePublisher  # noqa: PLC0415
    from kilo_billing_cli.clients import client  # noqa: PLC0415
    from kilo_crypto_watch.adapters import DynamoCryptoStore  # noqa: PLC0415
    from kilo_crypto_watch.settlement import Settlement, SettlementError, asset_amount  # noqa: PLC0415

    if not args.crypto_table:
        raise ValueError("the crypto table is required: --crypto-table or CRYPTO_TABLE_NAME")
    store = DynamoCryptoStore(client("dynamodb"), args.crypto_table)
    if args.crypto_command in ("backfill-links", "payments"):  # neither publishes: no bus asked for
        _run_without_bus(args, store, console)
        return
    if args.crypto_command == "unattributed":
        rows = [
            {
                "payment_id": p.payment_id,
                "status": p.status.value,
                "asset": p.transfer.asset,
                "amount": decimal_str(asset_amount(p.transfer.atomic_amount, p.transfer.asset)),
                "sender": p.transfer.sender,
                "seen_at": p.seen_at.isoformat(),
                # paid into an account of ours that is not the payment address: never matched (D341)
                "stray": p.transfer.stray,
                # its amount is counted in that payment already: not to assign (D91 amended (sp3))
                "counted_in": p.counted_in,  # every row: the table's columns are the first row's keys
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
    events = client("events")
    if args.crypto_command in ("assign", "resolve"):  # they write, then publish: the bus asked for first
        check_event_bus(events, args.event_bus)
    publisher = EventBridgePublisher(events, args.event_bus, SOURCE_CRYPTO)
    settlement = Settlement(store, publisher, {})
    if args.crypto_command == "resolve":
        try:
            resolved = settlement.resolve_review(args.payment_id, accept=args.accept)
        except SettlementError as exc:
            raise ValueError(str(exc)) from exc
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
            "bill_status": _bill_status(store, resolved.invoice_id or ""),
        }
        _emit(console, [decided], args.json, "Resolved")
        return
    if args.crypto_command == "refunded":
        try:
            sent_back = settlement.refunded(args.payment_id, args.tx)
        except SettlementError as exc:
            raise ValueError(str(exc)) from exc
        returned = {
            "payment_id": sent_back.payment_id,
            "status": sent_back.status.value,
            "asset": sent_back.transfer.asset,
            "amount": decimal_str(asset_amount(sent_back.transfer.atomic_amount, sent_back.transfer.asset)),
            "sender": sent_back.transfer.sender,
            "refund_tx": sent_back.refund_tx,
        }
        _emit(console, [returned], args.json, "Refunded")
        return
    check_account_id(args.account)
    try:
        payment = settlement.assign(args.payment_id, args.account, args.invoice)
    except SettlementError as exc:
        raise ValueError(str(exc)) from exc
    except PublishError as exc:
        # saved, then an event not sent: the payment's ``CryptoPaymentSeen.v1`` goes before the bill's event, so
        # whether it went is the payment's ``announced`` - main's line says which one was lost (D362)
        raise AssignmentNotPublishedError(exc, _seen_sent(store, args.payment_id)) from exc
    row = {
        "payment_id": payment.payment_id,
        "account_id": payment.account_id,
        "invoice_id": payment.invoice_id,
        "quote_id": payment.quote_id,
        "amount_usd": money_str(payment.usd) if payment.usd is not None else None,
        "late": payment.late,
        "manual_review": payment.review,
        "bill_status": _bill_status(store, args.invoice),
    }
    _emit(console, [row], args.json, "Assigned")


def _run_without_bus(args: argparse.Namespace, store: DynamoCryptoStore, console: Console) -> None:
    """``crypto backfill-links`` and ``crypto payments``: they read (and the backfill writes links), nothing is
    published."""
    if args.crypto_command == "payments":
        _emit_bill(console, bill_view(store, args.invoice), args.json)
        return
    report = backfill_links(store, args.apply, args.page_size, args.max_pages, args.start_after)
    _emit_backfill(console, report, args.json)


def _seen_sent(store: DynamoCryptoStore, payment_id: str) -> bool | None:
    """Whether the payment's ``CryptoPaymentSeen.v1`` was sent (it is marked ``announced`` once published); ``None``
    when the payment cannot be read."""
    try:
        found = store.payment(payment_id)
    except StorageUnavailableError:
        return None
    return found.announced if found is not None else None


def _bill_status(store: DynamoCryptoStore, invoice_id: str) -> str | None:
    """The bill's status for display after a write (``assign``, ``resolve``): ``None`` without a bill, ``"unknown"``
    when the read fails - the write is done, so not exit 4 "rerun" (a rerun would be refused: already decided)."""
    try:
        found = store.bill(invoice_id)
    except StorageUnavailableError as exc:
        sys.stderr.write(
            f"kilo-billing: saved; reading the bill to show its status failed ({exc}): bill_status unknown - "
            "do not rerun\n"
        )
        return "unknown"
    return found.status.value if found else None


def bill_view(store: DynamoCryptoStore, invoice_id: str) -> dict[str, Any]:
    """``crypto payments``: the bill and its payment lines as stored, ``stalled`` shown (D419, D434); each line's
    USD the figure the customer's history shows (the lines the bill counts: its counted sum split among them to the
    cent, ``shown_usd``; the others their own; D435 amended (gcw)); no such bill is a ``ValueError`` (exit 2)."""
    from kilo_crypto_watch.model import BillStatus  # noqa: PLC0415
    from kilo_crypto_watch.settlement import counts, holds, remaining_usd, shown_usd  # noqa: PLC0415

    bill = store.bill(invoice_id)
    if bill is None:
        raise ValueError(f"no crypto bill {invoice_id!r}")
    asked = Decimal("0") if bill.status is BillStatus.PAID else remaining_usd(bill)
    told = shown_usd((line.payment_id, line.usd) for line in bill.payments if holds(line))
    return {
        "invoice_id": bill.invoice_id,
        "account_id": bill.account_id,
        "status": bill.status.value,
        "flags": sorted(flag.value for flag in bill.flags),
        "total_usd": money_str(bill.total_usd),
        "asked_usd": money_str(asked),
        "payments": [
            {
                "payment_id": line.payment_id,
                "tx_id": line.tx_id,
                "status": line.status.value,
                "asset": line.asset,
                "amount_usd": money_str(told.get(line.payment_id, line.usd)),
                "counted": counts(line),
                "stalled": line.stalled,
                "late": line.late,
                "review": line.review,
                "refund_owed": line.refund_owed,
            }
            for line in sorted(bill.payments, key=lambda line: line.payment_id)  # by id: a stable order
        ],
    }


def _emit_bill(console: Console, view: dict[str, Any], as_json: bool) -> None:
    if as_json:
        sys.stdout.write(json.dumps(view, indent=2) + "\n")
        return
    flags = f" ({', '.join(view['flags'])})" if view["flags"] else ""
    title = (
        f"Crypto bill {view['invoice_id']}: {view['status']}{flags}, total {view['total_usd']}, "
        f"asks {view['asked_usd']}"
    )
    table = Table(title=title)
    rows: list[dict[str, Any]] = view["payments"]
    for column in rows[0] if rows else ["payment_id"]:
        table.add_column(column)
    for row in rows:
        table.add_row(*(str(value) for value in row.values()))
    console.print(table)


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


def _emit_backfill(console: Console, report: LinkBackfill, as_json: bool) -> None:
    if as_json:
        sys.stdout.write(json.dumps(report.as_json(), indent=2) + "\n")
        return
    verb = "Linked" if report.applied else "Dry run: would link"
    table = Table(title=f"{verb} {len(report.linked)} payment(s)")
    table.add_column("payment_id")
    for payment_id in report.linked:
        table.add_row(payment_id)
    console.print(table)
    console.print(
        f"{report.attributed} attributed payment(s) in {report.pages} page(s), {report.already_linked} linked already."
    )
    if report.next_start_after is not None:
        console.print(f"Stopped before the end: resume with --start-after '{json.dumps(report.next_start_after)}'")
    if not report.applied and report.linked:
        console.print("Nothing was written. Run again with --apply to write the links.")
