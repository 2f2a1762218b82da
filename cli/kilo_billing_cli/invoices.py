"""`kilo-billing invoice run|show|refund|crypto-refund-sent|void-draft`: close a month on demand (the schedule's own
logic); an account's invoices; refunds; void a month-end draft the processor refuses for good.

``invoice run --period YYYY-MM [--account ID]`` closes the period for one account or every registered account (the
accounts index, as the schedule's fan-out), each through ``kilo_invoice.logic.close_through`` - the function the close
worker calls: fenced against rating, earlier unclosed periods first, and safe to rerun at any point (an invoice
already closed is found, not recomposed; Stripe is not asked twice). It exits 1 if an account could not be closed
(rerun it), and lists the credit notes left waiting as ours to fix (D330: credit id and why). Only ended periods can
be closed.

``invoice void-draft ACCOUNT PERIOD --reason TEXT --yes``: voids the account's month-end invoice of PERIOD while it is
still our draft (``kilo_invoice.logic.void_draft``; an open Stripe invoice for it is voided first, a Stripe draft
deleted first), so later closes proceed; it says what of the draft no later close bills again and keeps the reason
on the invoice. Without ``--yes`` nothing is done (D338).

``invoice refund --account ID --invoice KB-... [--amount 10.00] [--to-failed-card]``: exit 3 (``EXIT_REFUSED``) when
the card processor refuses the refund or an earlier pending one was finished instead; exit 4 (``EXIT_UNAVAILABLE``)
when Stripe cannot be reached or our Stripe setting is wrong (the secret missing, marked for deletion, undecryptable or
malformed, the key refused: fix it first): the request stays pending and a rerun finishes it (the same request: what
Stripe made of it - part may be made already, ``made_at_stripe`` when Stripe said, refunds that failed or were
canceled not counted - is counted, nothing is sent twice). Either way one line on
stderr, and the invoice as stored now on stdout (JSON with ``--json``: ``refunded_by_this_run``, ``refund_pending``
- "unknown" when the invoice could not be read back - and ``refused`` or ``unavailable``). ``invoice void-draft``
with Stripe unreachable exits 4 as well, refused by Stripe (or its invoice paid, uncollectible or in a status we do not
know) exits 3, our draft unchanged either way.

``invoice show --account ID [--period YYYY-MM]``: the account's invoices with status, amounts and Stripe's hosted
page and PDF links; with ``--period``, that invoice's lines.

Tables, bus and secret come from the options or the functions' variables (``USAGE_TABLE_NAME``, ``EVENT_BUS_NAME``,
``STRIPE_API_KEY_SECRET_NAME``); AWS credentials, region and endpoint from the usual AWS environment.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
from datetime import UTC, datetime
from decimal import Decimal
from typing import Any, NoReturn

from rich.console import Console
from rich.table import Table

from kilo_billing.invoicing import InvoiceRecord
from kilo_billing.money import ZERO, money_str
from kilo_billing.periods import Period
from kilo_billing_cli import arguments

# ``invoice refund``: the amount asked was not refunded - the card processor refused it, or an earlier pending request
# was finished instead (what either run made is recorded first and said): not a typo's 2. ``invoice void-draft``:
# Stripe refused to void or delete its invoice, or holds it paid, uncollectible or in a status we do not know (Stripe's
# state, not the operator's input): nothing voided
EXIT_REFUSED = 3
# ``invoice refund``: Stripe not reached, or our Stripe setting wrong (the secret missing, marked for deletion,
# undecryptable or malformed, the key refused: fix it first) - so the request recorded first stays pending (part may
# be made at Stripe): rerun, it finishes the same request, counting what Stripe made (idempotency: never sent twice).
# ``void-draft``: nothing voided, rerun; every command: storage unavailable (``StorageUnavailableError``, main.py) -
# the same code, rerun
EXIT_UNAVAILABLE = 4

# the invoice settings a command never uses (D413 amended (hops), review hops2 1): their variables are not read; every
# other field is (``function_settings``), so a field added later is validated by default. None of the commands reads
# the handlers' own: the queue handlers' JOB_RESERVE_SECONDS, the starter's INVOICE_GRACE_HOURS (the CLI closes the
# period it is given) and INVOICE_CLOSE_QUEUE_URL, the payment-status handler's STRIPE_LIVEMODE and EVENTS_TABLE_NAME
NOT_READ = (
    "events_table_name",
    "invoice_close_queue_url",
    "invoice_grace_hours",
    "job_reserve_seconds",
    "stripe_livemode",
)
# a refund or a void closes nothing and announces nothing: no Stripe Tax switch, no bus
NOT_READ_BY_REFUND = (*NOT_READ, "event_bus_name", "stripe_automatic_tax")
# without a Stripe secret named no gateway is built (a card close or refund fails as "no Stripe API key configured"),
# so the Stripe gateway's settings are not read either
STRIPE_SETTINGS = (
    "secret_max_age_seconds",
    "stripe_automatic_tax",
    "stripe_max_network_retries",
    "stripe_timeout_seconds",
)


def _not_read(args: argparse.Namespace, never: tuple[str, ...]) -> tuple[str, ...]:
    """The settings the command does not read: ``never``, and ``STRIPE_SETTINGS`` without a Stripe secret."""
    return never if args.stripe_secret else (*never, *STRIPE_SETTINGS)


def add_parser(sub: Any) -> Any:
    """The ``invoice`` command and its subcommands (returned, so further ``invoice ...`` commands can join it)."""
    invoice = sub.add_parser("invoice", help="close a month on demand; an account's invoices")
    commands = invoice.add_subparsers(dest="invoice_command", required=True, parser_class=type(invoice))
    run_parser = commands.add_parser("run", help="close a period (every account, or one): rerun-safe")
    run_parser.add_argument("--period", type=arguments.period, required=True, help="the month to close, YYYY-MM")
    run_parser.add_argument("--account", help="only this account (default: every registered account)")
    run_parser.add_argument("--event-bus", default=os.environ.get("EVENT_BUS_NAME", ""), help="InvoiceIssued.v1")
    run_parser.add_argument(
        "--stripe-secret",
        default=os.environ.get("STRIPE_API_KEY_SECRET_NAME", ""),
        help='Secrets Manager secret with {"api_key": "sk_..."} (card invoices)',
    )
    show = commands.add_parser("show", help="an account's invoices: status, amounts, links")
    show.add_argument("--account", required=True)
    show.add_argument("--period", type=arguments.period, help="one invoice, with its lines")
    refund_help = (
        "refund all or part of a paid invoice (card: a Stripe refund; crypto: a refund owed); exit 3 when the "
        "card processor refuses it or an earlier pending refund was finished instead (what this run refunded is "
        "recorded and said, in the JSON too); exit 4 when Stripe cannot be reached or our Stripe setting is wrong "
        "(the secret missing or malformed, the key refused: fix it first): the request stays pending - part may be "
        "made at Stripe already (made_at_stripe) - and a rerun finishes it, counting what was made (nothing is sent "
        "twice)"
    )
    refund = commands.add_parser("refund", help=refund_help, description=refund_help)
    refund.add_argument("--account", required=True)
    refund.add_argument("--invoice", required=True, help="its number (KB-...) or id")
    refund.add_argument("--amount", type=arguments.money, help="USD (default: all that is left to refund)")
    refund.add_argument(
        "--to-failed-card",
        action="store_true",
        help="also refund to a card whose bank returned an earlier refund (without: refused, return it another way)",
    )
    refund.add_argument("--stripe-secret", default=os.environ.get("STRIPE_API_KEY_SECRET_NAME", ""))
    sent = commands.add_parser("crypto-refund-sent", help="record a crypto refund owed as sent, by its transaction")
    sent.add_argument("--account", required=True)
    sent.add_argument("--invoice", required=True, help="its number (KB-...) or id")
    sent.add_argument("--transaction", required=True, help="the refund's transaction hash or signature")
    void = commands.add_parser(
        "void-draft",
        help="void a month-end invoice still our draft (its issue refused for good): later closes proceed; exit 4 "
        "when Stripe cannot be reached (nothing voided: run again), exit 3 when Stripe refuses or holds its invoice "
        "paid, uncollectible or in an unknown status (nothing voided)",
    )
    void.add_argument("account")
    void.add_argument("period", type=arguments.period, help="YYYY-MM")
    void.add_argument("--reason", required=True, help="why (shown, and in the JSON output)")
    void.add_argument("--yes", action="store_true", help="do it (without: nothing is done)")
    void.add_argument("--stripe-secret", default=os.environ.get("STRIPE_API_KEY_SECRET_NAME", ""))
    for command in (run_parser, show, refund, sent, void):
        command.add_argument("--usage-table", default=os.environ.get("USAGE_TABLE_NAME", ""))
        command.add_argument("--json", action="store_true", help="machine-readable output")
    return commands


def run(args: argparse.Namespace, console: Console) -> None:
    """Do the command; errors a user can fix are ``ValueError`` (exit 2). ``invoice run`` exits 1 when an account
    could not be closed."""
    if not args.usage_table:
        raise ValueError("the usage table is required: --usage-table or USAGE_TABLE_NAME")
    if args.invoice_command == "run":
        _run(args, console)
    elif args.invoice_command in ("refund", "crypto-refund-sent"):
        _refund(args, console)
    elif args.invoice_command == "void-draft":
        _void_draft(args, console)
    else:
        _show(args, console)


def _refund(args: argparse.Namespace, console: Console) -> None:
    """``invoice refund`` and ``invoice crypto-refund-sent``: through ``kilo_invoice.logic`` (a card refund is recorded
    on the invoice before Stripe is asked, keyed on its request number, so a rerun after a timeout finishes the same
    refund instead of making a second)."""
    from kilo_billing.accounts import check_account_id  # noqa: PLC0415
    from kilo_invoice.logic import refund_invoice, settle_crypto_refund  # noqa: PLC0415
    from kilo_invoice.model import EarlierRefundFinishedError, InvoiceNotFoundError  # noqa: PLC0415
    from kilo_invoice.ports import (  # noqa: PLC0415
        GatewayPartlyUnavailableError,
        GatewayRejectedError,
        GatewayUnavailableError,
    )

    check_account_id(args.account)
    before: InvoiceRecord | None = None
    try:
        if args.invoice_command == "refund":
            from kilo_billing_cli.clients import function_settings  # noqa: PLC0415
            from kilo_invoice.dependencies import close_deps  # noqa: PLC0415
            from kilo_invoice.settings import InvoiceSettings  # noqa: PLC0415

            config = function_settings(
                InvoiceSettings,
                _not_read(args, NOT_READ_BY_REFUND),
                usage_table_name=args.usage_table,
                stripe_api_key_secret_name=args.stripe_secret,
            )
            deps = close_deps(config)
            before = _found(deps.store.ledger(args.account).invoices.values(), args.invoice)
            invoice = refund_invoice(
                deps.store, deps.gateway, args.account, args.invoice, args.amount, to_failed_card=args.to_failed_card
            )
        else:
            from kilo_billing.periods_store import DynamoLedgerStore  # noqa: PLC0415
            from kilo_billing_cli.clients import client  # noqa: PLC0415

            store = DynamoLedgerStore(client("dynamodb"), args.usage_table)
            invoice_id = _invoice_id(store.ledger(args.account).invoices.values(), args.invoice)
            invoice = settle_crypto_refund(store, args.account, invoice_id, args.transaction)
    except InvoiceNotFoundError as exc:
        raise ValueError(str(exc)) from exc
    except GatewayRejectedError as exc:  # refused for good, what was made recorded first (D329): said, exit 3
        after, unread = _read_back(deps.store, args)
        _refused(args, console, before, after, f"the card processor refused the refund: {exc}", unread=unread)
    except EarlierRefundFinishedError as exc:  # an earlier request finished instead: money moved, the ask not made
        after, unread = _read_back(deps.store, args)
        _refused(args, console, before, after, str(exc), unread=unread)
    except GatewayUnavailableError as exc:  # not reached, or our setting wrong: the request stays pending, rerun
        after, unread = _read_back(deps.store, args)
        made = exc.refunded if isinstance(exc, GatewayPartlyUnavailableError) else None
        said = _unavailable(exc, after, made, unread)
        _refused(args, console, before, after, said, key="unavailable", code=EXIT_UNAVAILABLE, made=made, unread=unread)
    summary = _summary(invoice) | {"refund_owed": money_str(invoice.refund_owed)}
    if args.json:
        sys.stdout.write(json.dumps(summary, indent=2) + "\n")
    else:
        shown = _refunds(invoice)
        short = f", short paid {shown['short_paid']}" if invoice.short_paid > 0 else ""
        console.print(f"{invoice.number}: {invoice.status.value}, total {money_str(invoice.total)}, refunded "
                      f"{shown['refunded']}{short}, refund owed {money_str(invoice.refund_owed)}")  # fmt: skip


def _void_draft(args: argparse.Namespace, console: Console) -> None:
    """``invoice void-draft``: through ``kilo_invoice.logic.void_draft`` (the processor first, then our conditional
    write). What the draft billed for its own period stays billed as far as later closes go (D132): said in the
    output, with the fees it billed ahead that the next close bills again (D153)."""
    from kilo_billing.accounts import check_account_id  # noqa: PLC0415
    from kilo_billing_cli.clients import function_settings  # noqa: PLC0415
    from kilo_invoice.dependencies import close_deps  # noqa: PLC0415
    from kilo_invoice.logic import void_draft  # noqa: PLC0415
    from kilo_invoice.model import InvoiceNotFoundError  # noqa: PLC0415
    from kilo_invoice.ports import GatewayRejectedError, GatewayUnavailableError  # noqa: PLC0415
    from kilo_invoice.settings import InvoiceSettings  # noqa: PLC0415

    check_account_id(args.account)
    if not args.reason.strip():
        raise ValueError("--reason must say why the draft is voided")
    if not args.yes:
        raise ValueError(
            f"nothing done: voiding {args.account}'s {args.period} draft cannot be undone; run again with --yes"
        )
    config = function_settings(
        InvoiceSettings,
        _not_read(args, NOT_READ_BY_REFUND),
        usage_table_name=args.usage_table,
        stripe_api_key_secret_name=args.stripe_secret,
    )
    deps = close_deps(config)
    try:
        done = void_draft(deps.store, deps.gateway, args.account, args.period, datetime.now(UTC), args.reason)
    except InvoiceNotFoundError as exc:
        raise ValueError(str(exc)) from exc
    except GatewayUnavailableError as exc:  # Stripe is asked first: ours is still the draft - said, exit 4, rerun
        what, then = _gateway_said(exc)
        said = f"{what}: {args.account}'s {args.period} draft is not voided (ours unchanged); {then}run again"
        sys.stderr.write(f"kilo-billing: {said}\n")
        if args.json:
            sys.stdout.write(json.dumps({"unavailable": said}, indent=2) + "\n")
        raise SystemExit(EXIT_UNAVAILABLE) from None
    except GatewayRejectedError as exc:  # Stripe refused its side (rh2 6), holds it paid or uncollectible, or in a
        # status we do not know (nothing asked of it then: not said "refused", rh3): ours still the draft - exit 3
        why = " ".join(str(exc).split())
        said = f"Stripe's invoice is not voided or deleted ({why}): {args.account}'s {args.period} draft is not voided "
        said += "(ours unchanged)"
        sys.stderr.write(f"kilo-billing: {said}\n")
        if args.json:
            sys.stdout.write(json.dumps({"refused": said}, indent=2) + "\n")
        raise SystemExit(EXIT_REFUSED) from None
    invoice = done.invoice
    summary = _summary(invoice) | {
        "reason": args.reason,
        "processor": done.processor,
        "not_billed_again": money_str(done.not_billed_again),
        "billed_again": money_str(done.billed_again),
    }
    if args.json:
        sys.stdout.write(json.dumps(summary, indent=2) + "\n")
        return
    console.print(f"{invoice.number} ({invoice.period}, total {money_str(invoice.total)}): void - {args.reason}")
    console.print(done.processor or "Stripe held no invoice for it")
    console.print(
        f"Not billed again by any close: {money_str(done.not_billed_again)} (its period's usage and fee, and any late "
        f"usage it carried; the billed watermarks stay) - bill it another way if it is owed. Billed again by the next "
        f"close: {money_str(done.billed_again)} (fees billed ahead, invoices carried). Usage rated later for the "
        f"period is late usage on the next invoice, as before. Later closes proceed: rerun `kilo-billing invoice run`."
    )


def _found(invoices: Any, reference: str) -> InvoiceRecord | None:
    return next((i for i in invoices if reference in (i.invoice_id, i.number)), None)


def _read_back(store: Any, args: argparse.Namespace) -> tuple[InvoiceRecord | None, str | None]:
    """The invoice as stored now, after the processor's answer - or why it could not be read (the table throttled,
    AWS down): the answer is said either way, never a traceback chained over it."""
    try:
        return _found(store.ledger(args.account).invoices.values(), args.invoice), None
    except Exception as exc:  # any failure of the read (throttled, AWS down): said, with the processor's answer
        return None, f"{type(exc).__name__}: {' '.join(str(exc).split())}"


def _gateway_said(exc: Exception) -> tuple[str, str]:
    """What a ``GatewayUnavailableError`` was, in one line, and what to do before a rerun: Stripe not reached (a rerun
    alone), or our setting wrong - the Stripe secret missing, marked for deletion, undecryptable or malformed, our key
    refused (fix it first)."""
    from kilo_invoice.ports import GatewayMisconfiguredError  # noqa: PLC0415

    why = " ".join(str(exc).split())  # one line
    if isinstance(exc, GatewayMisconfiguredError):  # GatewayPartlyMisconfiguredError too
        return (
            f"our Stripe setting is wrong ({why})",
            "fix it (the Stripe secret's name or value, the key's permissions), then ",
        )
    return f"Stripe could not be reached ({why})", ""


def _unavailable(exc: Exception, after: InvoiceRecord | None, made: Decimal | None, unread: str | None) -> str:
    """One line: what happened (Stripe not reached, or our setting wrong: fix it first), what is pending - and what of
    it Stripe made before the failure (``made``, when the gateway says and it is more than 0.00; never whether our
    invoice recorded it yet: what it records since the request moves with outside refunds and failures too; else that
    part may be made) - and that a rerun finishes it: the same request id, so what Stripe made of it is counted and
    nothing is sent twice. The invoice unreadable (``unread``): whether a refund is pending is unknown."""
    what, then = _gateway_said(exc)
    finish = "so what Stripe made of it is counted and nothing is sent twice"
    if unread is not None:
        known = "" if made is None else f" ({money_str(made)} of one made at Stripe before the failure)"
        return (
            f"{what}: whether a refund is pending is unknown{known} - the invoice could not be read back ({unread}); "
            f"{then}run again to finish any pending refund - the same request, {finish}"
        )
    pending = after.refund_pending if after is not None else None
    if pending is None:
        return f"{what}: no refund is pending; {then}run again to refund it"
    if made is None:
        part = " (part of it may already be made at Stripe)"
    elif made > 0:  # whether our invoice recorded it yet is not said: an outside refund or a failure moves it too
        part = f" (Stripe made {money_str(made)} of it before the failure)"
    else:  # nothing made: no made part to name (one made then failed at the bank is in the error's own words)
        part = ""
    return (
        f"{what}: the refund of {money_str(pending.amount)} is pending{part}; {then}run again to finish it - "
        f"the same request ({pending.refund_id}), {finish}"
    )


def _refused(
    args: argparse.Namespace,
    console: Console,
    before: InvoiceRecord | None,
    after: InvoiceRecord | None,
    said: str,
    *,
    key: str = "refused",
    code: int = EXIT_REFUSED,
    made: Decimal | None = None,
    unread: str | None = None,
) -> NoReturn:
    """A refund the card processor refused (in part), or one it could not be asked (``key`` "unavailable", ``code``
    ``EXIT_UNAVAILABLE``, with ``made_at_stripe``: what Stripe made of the pending request before the failure, null
    when it did not say): what happened on stderr, the invoice as now stored (what this run refunded: its
    ``refunded`` now less before, as recorded; the request still pending) on stdout - JSON with ``--json`` - and exit
    ``code``. The invoice unreadable after the answer (``unread``): ``refunded_by_this_run`` and ``refund_pending``
    "unknown"."""
    if unread is not None and key != "unavailable":  # the unavailable line says it already
        said = f"{said} (the invoice could not be read back: {unread}; `kilo-billing invoice show` says what is stored)"
    sys.stderr.write(f"kilo-billing: {said}\n")
    extra = {"made_at_stripe": None if made is None else money_str(made)} if key == "unavailable" else {}
    if after is not None:
        now = after.refunded - (before.refunded if before is not None else after.refunded)
        pending = after.refund_pending
        summary = _summary(after) | {
            "refund_owed": money_str(after.refund_owed),
            "refunded_by_this_run": money_str(now),
            "refund_pending": None if pending is None else money_str(pending.amount),
            **extra,
            key: said,
        }
        if args.json:
            sys.stdout.write(json.dumps(summary, indent=2) + "\n")
        else:
            waits = "" if pending is None else f", {money_str(pending.amount)} pending"
            console.print(f"{after.number}: refunded {money_str(after.refunded)} ({money_str(now)} by this run"
                          f"{waits}), total {money_str(after.total)}")  # fmt: skip
    elif unread is not None:
        if args.json:
            shown = {"refunded_by_this_run": "unknown", "refund_pending": "unknown", **extra, key: said}
            sys.stdout.write(json.dumps(shown, indent=2) + "\n")
        else:
            console.print(f"{args.invoice}: refunded by this run unknown, refund pending unknown")
    elif args.json:
        sys.stdout.write(json.dumps({key: said}, indent=2) + "\n")
    raise SystemExit(code)


def _invoice_id(invoices: Any, reference: str) -> str:
    """An invoice's id from its number or id (operators quote the number)."""
    for invoice in invoices:
        if reference in (invoice.invoice_id, invoice.number):
            return str(invoice.invoice_id)
    return reference


def _run(args: argparse.Namespace, console: Console) -> None:
    from kilo_billing.accounts import check_account_id  # noqa: PLC0415
    from kilo_billing_cli.clients import function_settings  # noqa: PLC0415
    from kilo_invoice.dependencies import close_deps  # noqa: PLC0415
    from kilo_invoice.logic import close_through  # noqa: PLC0415
    from kilo_invoice.settings import InvoiceSettings  # noqa: PLC0415

    now = datetime.now(UTC)
    period: Period = args.period
    if period.end > now:
        raise ValueError(f"period {period} has not ended yet (it ends {period.end.isoformat()})")
    if args.account is not None:
        check_account_id(args.account)
    if not args.event_bus:
        raise ValueError("the billing bus is required: --event-bus or EVENT_BUS_NAME (invoices are announced)")
    from kilo_billing_cli.bus import check_event_bus  # noqa: PLC0415
    from kilo_billing_cli.clients import client  # noqa: PLC0415

    check_event_bus(client("events"), args.event_bus)  # it writes, then announces: the bus asked for first
    config = function_settings(
        InvoiceSettings,
        _not_read(args, NOT_READ),
        usage_table_name=args.usage_table,
        event_bus_name=args.event_bus,
        stripe_api_key_secret_name=args.stripe_secret,
    )
    deps = close_deps(config)
    accounts = [args.account] if args.account is not None else sorted(deps.store.accounts())
    rows: list[dict[str, Any]] = []
    for account in accounts:
        try:
            outcomes = close_through(deps, account, period, now)
        except Exception as exc:  # reported per account; the others still close
            rows.append({"account_id": account, "period": period.key, "error": f"{type(exc).__name__}: {exc}"})
            continue
        for outcome in outcomes:
            row: dict[str, Any] = {"account_id": account, "period": outcome.period, "created": outcome.created}
            if outcome.invoice is None:
                row["invoice"] = None
            else:
                row["invoice"] = _summary(outcome.invoice)
            row["notes_waiting"] = [note._asdict() for note in outcome.notes_waiting]
            rows.append(row)
    failed = [row for row in rows if "error" in row]
    if args.json:
        sys.stdout.write(json.dumps({"period": period.key, "closed": rows}, indent=2) + "\n")
    else:
        _print_run(console, period, rows)
    if failed:
        raise SystemExit(1)


def _refunds(invoice: InvoiceRecord) -> dict[str, str]:
    """What it gave back (``refunded``) apart from what its payment fell short (``short_paid``: never received, so no
    refund - D344): the stored ``refunded``, which every bound reads, holds both (D352)."""
    return {
        "refunded": money_str(max(ZERO, invoice.refunded - invoice.short_paid)),
        "short_paid": money_str(invoice.short_paid),
    }


def _summary(invoice: InvoiceRecord) -> dict[str, Any]:
    return {
        "invoice_id": invoice.invoice_id,
        "number": invoice.number,
        "period": invoice.period,
        "method": invoice.method.value,
        "status": invoice.status.value,
        "total": money_str(invoice.total),
        **_refunds(invoice),
        "charged_back": money_str(invoice.charged_back),
        "hosted_url": invoice.hosted_url,
        "pdf_url": invoice.pdf_url,
        "transitions": [{"status": status, "at": at} for status, at in invoice.transitions],
        **({"void_reason": invoice.void_reason} if invoice.void_reason else {}),
    }


def _print_run(console: Console, period: Period, rows: list[dict[str, Any]]) -> None:
    table = Table(title=f"Close of {period}")
    for column in ("account", "period", "invoice", "status", "total", "note"):
        table.add_column(column)
    for row in rows:
        invoice = row.get("invoice")
        if "error" in row:
            table.add_row(row["account_id"], row["period"], "", "", "", f"not closed: {row['error']}")
        elif invoice is None:
            table.add_row(row["account_id"], row["period"], "", "", "", "nothing to close")
        else:
            note = "closed now" if row["created"] else "already closed"
            table.add_row(
                row["account_id"], row["period"], invoice["number"], invoice["status"], invoice["total"], note
            )
    console.print(table)
    waiting = [(row["account_id"], note) for row in rows for note in row.get("notes_waiting", ())]
    if waiting:
        notes = Table(title="Credit notes waiting: Stripe refused them as ours to fix (D330); later runs retry them")
        for column in ("account", "credit note", "why"):
            notes.add_column(column)
        for account, note in waiting:
            notes.add_row(account, note["credit_id"], note["why"])
        console.print(notes)


def _show(args: argparse.Namespace, console: Console) -> None:
    from kilo_billing.accounts import check_account_id  # noqa: PLC0415
    from kilo_billing.periods_store import DynamoLedgerStore  # noqa: PLC0415
    from kilo_billing_cli.clients import client  # noqa: PLC0415

    check_account_id(args.account)
    ledger = DynamoLedgerStore(client("dynamodb"), args.usage_table).ledger(args.account)
    if ledger.profile is None:
        raise ValueError(f"account {args.account!r} is not registered")
    invoices = sorted(ledger.invoices.values(), key=lambda invoice: (invoice.period, invoice.seq))
    if args.period is not None:
        invoices = [invoice for invoice in invoices if invoice.period == args.period.key]
        if not invoices:
            raise ValueError(f"account {args.account!r} has no invoice for {args.period}")
    if args.json:
        payload = [
            invoice.as_json() | _refunds(invoice) if args.period is not None else _summary(invoice)
            for invoice in invoices
        ]
        sys.stdout.write(json.dumps({"account_id": args.account, "invoices": payload}, indent=2) + "\n")
        return
    table = Table(title=f"Invoices of {args.account}")
    for column in ("number", "period", "method", "status", "total", "refunded", "short paid", "hosted page", "PDF"):
        table.add_column(column)
    for invoice in invoices:
        table.add_row(
            invoice.number,
            invoice.period,
            invoice.method.value,
            invoice.status.value,
            money_str(invoice.total),
            *_refunds(invoice).values(),
            invoice.hosted_url or "",
            invoice.pdf_url or "",
        )
    console.print(table)
    if args.period is not None:
        lines = Table(title=f"{invoices[0].number} lines")
        for column in ("kind", "description", "quantity", "unit price", "amount"):
            lines.add_column(column)
        for line in invoices[0].lines:
            shown = {key: str(value) if value is not None else "" for key, value in line.as_json().items()}
            lines.add_row(line.kind, line.description, shown["quantity"], shown["unit_price"], shown["amount"])
        console.print(lines)
