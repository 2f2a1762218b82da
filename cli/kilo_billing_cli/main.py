"""`kilo-billing`: the operator and product CLI over the billing domain library.

Human-readable tables by default (rich), ``--json`` for machines (money and quantities as strings). Exit statuses,
for every command: bad input exits 2 with the usage line and a message naming the problem; ``invoice refund``
refused by the card processor, or finishing an earlier pending refund instead of the amount asked, exits 3; a
service the command depends on unavailable exits 4 (``EXIT_UNAVAILABLE``) with one line on stderr, no usage banner:
nothing was wrong with the input, rerun it - storage (``StorageUnavailableError``: AWS throttled, down, timed out),
or for ``invoice refund`` Stripe unreachable (or our Stripe setting wrong: the secret missing, marked for deletion,
undecryptable or malformed, the key refused - fix it first): the request stays pending (part may be made at Stripe
already) and a rerun finishes it, counting what was made - nothing sent twice; ``invoice void-draft`` with Stripe
unreachable exits 4 too, refused by Stripe (or its invoice paid, uncollectible or in a status we do not know) exits 3,
nothing voided. Storage wrongly configured is bad input, not unavailable: a table or event bus that does not exist
(``ResourceNotFoundException``: a typo in ``--usage-table`` or its environment variable) or access to it denied
(``AccessDeniedException``, SQS's ``AccessDenied``) exits 2 with one line naming the command's table and bus
settings - a rerun would fail the same way, so a script retrying on 4 does not loop; ``rating replay --requeue``
prints its own line about the queue instead, and exits 2 for access denied at its receive, its send and its delete
after the copy was sent (two copies then: fix ``sqs:DeleteMessage`` first), 4 for any other failure. ``crypto
assign``, ``crypto resolve``, ``rating replay --apply`` and ``invoice run`` write, then publish: they ask for the bus
(``DescribeEventBus``, bus.py) before any write, and one that does not exist exits 2 "fix --event-bus", access to
it denied exits 2 naming ``events:DescribeEventBus``, nothing written (EventBridge has been reported to accept
PutEvents to a bus that does not exist: the events would be lost without an error; a bus in another account, by ARN,
is refused by the check). An event the bus did not take
(``PublishError``) after the command wrote - ``crypto assign`` or ``crypto resolve`` saved the decision, and a rerun
is refused - exits 2 "fix the credentials' permissions" for access denied (``AccessDeniedException``, an entry's
``NotAuthorizedForSource/DetailTypeException``), 2 "fix --event-bus" for a bus that does not exist (moto's answer) or
a bus name AWS rejects (``ValidationException`` of a name outside the model's pattern; the model unreadable: the
same), 2 naming EventBridge's own code and message for the event itself refused (a ``ValidationException`` of a
valid bus name - an entry too large -, ``SerializationException``, an entry failed with a content code the model
calls non-retryable) - refused again each time it is sent, so that line says nothing re-sends it: report it -, 4 for
anything else (expired credentials, throttled, an entry's ``InternalFailure``), with one line saying it is saved,
which event was not sent and what re-sends it (a paid bill's ``CryptoBillSettled.v1``/``CryptoCreditAdded.v1``: the
next crypto watcher run; an assignment's ``CryptoPaymentSeen.v1``: nothing - the line says whether it was sent, read
back from the payment's ``announced``, and when it was not, that the bill's was not either; not read back, both
cases), never "rerun"; after
``rating replay --apply`` the line says to rerun after 15 minutes (the messages received are hidden that long,
``replay.APPLY_VISIBILITY_SECONDS``); a message whose event EventBridge refused for its content is
skipped instead: it stays on the queue, its row says why ("report it"), the others are replayed, and the run exits 1.
Exit 1: ``invoice run`` when closing an
account's period failed (its row carries the error; the other accounts are closed), and ``rating replay --apply``
when a message was not replayed (a problem or rejected: its row says which).
"""

from __future__ import annotations

import argparse
import json
import sys
from collections.abc import Callable, Sequence
from datetime import UTC, datetime
from decimal import ROUND_CEILING, Decimal, InvalidOperation

from rich.console import Console
from rich.table import Table

from kilo_billing.aws import InvalidRequestError, StorageUnavailableError
from kilo_billing.catalog import Catalog, PriceBook, UnknownTierError, default_catalog
from kilo_billing.meters import BYTES_PER_GB, METER_UNITS, Meter
from kilo_billing.money import decimal_str, money_str
from kilo_billing.periods import Period
from kilo_billing.projections import Projection, ProjectionError, project_revenue
from kilo_billing.publisher import PublishError
from kilo_billing.rating import RatedPeriod, TierSegment, UsageRecord, rate_period
from kilo_billing_cli import accounts, alerts, arguments, bus, crypto, invoices, preview, replay, reports
from kilo_billing_cli.arguments import whole_number
from kilo_billing_cli.console import make_console
from kilo_billing_cli.invoices import EXIT_UNAVAILABLE  # one code for a service unavailable (the module docstring)

EXIT_USAGE = 2
# AWS error codes (``StorageUnavailableError``'s message, ``aws.map_error``) that no rerun can fix: a table or bus that
# does not exist (a typo in ``--usage-table`` or its environment variable) or credentials not allowed to use it
_NOT_FOUND = frozenset({"ResourceNotFoundException"})
_CONFIGURATION = _NOT_FOUND | frozenset({"AccessDeniedException", "AccessDenied"})


def _configuration_problem(code: str, args: argparse.Namespace) -> str:
    """One line naming what to fix: the command's table and bus settings, as given or taken from the environment."""
    settings = ", ".join(
        f"--{name.replace('_', '-')} {value!r}"
        for name, value in sorted(vars(args).items())
        if (name.endswith("_table") or name == "event_bus") and isinstance(value, str)
    )
    named = f" ({settings})" if settings else ""
    if code in _NOT_FOUND:
        return f"a table or event bus this command uses does not exist{named}: {code}; fix the name, then rerun"
    return f"access denied to a table or event bus this command uses{named}: {code}; fix the credentials' permissions"


def _not_published(
    prog: str,
    raised: PublishError
    | crypto.AssignmentNotPublishedError
    | bus.EventBusNotFoundError
    | bus.EventBusAccessDeniedError,
    args: argparse.Namespace,
) -> int:
    """One line on stderr and the exit status for an event the bus did not take (``PublishError``), raised after the
    command wrote: ``crypto assign``/``resolve`` saved the decision first, and a rerun of either is refused (already
    decided), so the line says it is saved and what is lost instead of "rerun". Access denied (an entry's
    ``NotAuthorizedFor...`` too) exits 2 "fix the credentials' permissions"; a bus that does not exist or a bus name
    AWS rejects exits 2 "fix --event-bus"; the event itself refused (EventBridge's ``ValidationException`` of a valid
    bus name - an entry too large -, ``SerializationException``, or an entry failed with a content code its model
    calls non-retryable) exits 2 naming EventBridge's code and message, and says nothing re-sends it (each send is
    refused again: ``_refused_line``); anything else (throttled, expired credentials, an entry's ``InternalFailure``)
    exits 4. ``crypto assign`` raises its
    ``AssignmentNotPublishedError``: the publisher's error and whether the payment's own event was sent. The bus not
    found when asked for before any write (``bus.EventBusNotFoundError``) is ``_bus_not_found``'s line, access to it
    denied (``bus.EventBusAccessDeniedError``) ``_bus_denied``'s."""
    if isinstance(raised, bus.EventBusNotFoundError):
        return _bus_not_found(prog, raised, args)
    if isinstance(raised, bus.EventBusAccessDeniedError):
        return _bus_denied(prog, raised, args)
    if isinstance(raised, crypto.AssignmentNotPublishedError):
        exc, seen_sent = raised.error, raised.seen_sent
    else:
        exc, seen_sent = raised, None
    kind, reason = _publish_failure(exc, args.event_bus)
    refused = kind == "refused"  # the event's content refused: sent again, it is refused again (nothing re-sends it)
    if kind == "denied":
        status, fix = EXIT_USAGE, f"fix the credentials' permissions to send to --event-bus {args.event_bus!r}"
    elif kind == "bus":
        status, fix = EXIT_USAGE, f"fix --event-bus {args.event_bus!r}"
    elif refused:
        status, fix = EXIT_USAGE, ""
    else:
        status, fix = EXIT_UNAVAILABLE, "wait until the bus answers"
    line = _refused_line(reason, args, seen_sent) if refused else _not_published_line(reason, fix, args, seen_sent)
    print(f"{prog}: {line}", file=sys.stderr)
    return status


def _publish_failure(exc: PublishError, bus_name: str) -> tuple[str, str]:
    """What a ``PublishError`` is - ``"denied"`` (the credentials), ``"bus"`` (no such bus, or a name AWS rejects),
    ``"refused"`` (EventBridge refused the event itself: sent again, refused again) or ``"unavailable"`` (anything
    else: retryable) - and the reason to print (the AWS code, with EventBridge's message for a refused event)."""
    cause = exc.__cause__
    aws_error = isinstance(cause, StorageUnavailableError | InvalidRequestError)
    reason = str(cause) if aws_error else str(exc)
    code = reason.partition(":")[0].strip()  # the AWS error code (``aws.map_error``) or the failed entry's
    if code in _DENIED:
        return "denied", reason
    if code in _NOT_FOUND or (isinstance(cause, InvalidRequestError) and _bus_name_refused(code, bus_name)):
        return "bus", reason
    if isinstance(cause, InvalidRequestError) or (cause is None and code in _ENTRY_REFUSED):
        return "refused", f"{code}: {_aws_message(cause)}" if cause is not None else reason
    return "unavailable", reason


def _content_refused(exc: PublishError, bus_name: str) -> str | None:
    """The reason when EventBridge refused the event for its content (``_publish_failure``'s ``"refused"``), else
    None: ``rating replay --apply`` skips that message and replays the others (D362)."""
    kind, reason = _publish_failure(exc, bus_name)
    return reason if kind == "refused" else None


# ``PutEventsResultEntry.ErrorCode``'s non-retryable codes in botocore's EventBridge model (events/2015-10-07) that
# refuse the event's content: sent again, it is refused again. Its permission codes are ``_DENIED``; its retryable
# ``InternalFailure`` and ``ThrottlingException``, and a code it does not list, stay exit 4
_ENTRY_REFUSED = frozenset({"InvalidAccountIdException", "InvalidArgument", "MalformedDetail", "RedactionFailure"})
# the credentials not allowed to send this event to the bus: top-level access denied, or an entry's IAM
# ``events:source``/``events:detail-type`` condition refusing it (exit 2, the access-denied wording of D362)
_DENIED = frozenset(
    {"AccessDeniedException", "AccessDenied", "NotAuthorizedForSourceException", "NotAuthorizedForDetailTypeException"}
)


def _bus_not_found(prog: str, exc: bus.EventBusNotFoundError, args: argparse.Namespace) -> int:
    """The bus asked for before the command wrote does not exist: nothing was written, a rerun with the name fixed
    does it all (exit 2)."""
    bus_name = args.event_bus
    print(
        f"{prog}: the event bus {bus_name!r} was not found ({exc}): nothing was written; fix --event-bus {bus_name!r} "
        "(or EVENT_BUS_NAME), then rerun",
        file=sys.stderr,
    )
    return EXIT_USAGE


def _bus_denied(prog: str, exc: bus.EventBusAccessDeniedError, args: argparse.Namespace) -> int:
    """The credentials may not ask for the bus before the command writes: AWS's message, which names the action, is
    dropped by ``aws.map_error``, so the line names it (exit 2, nothing written)."""
    print(
        f"{prog}: access denied asking for the event bus {args.event_bus!r} ({exc}): the credentials need "
        "events:DescribeEventBus on it (asked for before any write): nothing was written; fix the credentials' "
        "permissions, then rerun",
        file=sys.stderr,
    )
    return EXIT_USAGE


def _bus_name_refused(code: str, bus: str) -> bool:
    """Whether AWS's ``ValidationException`` is the bus name's: a name outside the shape of the model's
    ``PutEventsRequestEntry.EventBusName`` (1 to 1600 characters of its pattern, which botocore does not check before
    sending). A valid name refused is the event itself (an entry too large, say). botocore floats within its minor
    release: the model not read as expected (a shape renamed, a rule missing) answers True - "fix --event-bus", the
    answer before the model was read - rather than fail in the handler of a command that already wrote."""
    import re  # noqa: PLC0415

    import botocore.session  # noqa: PLC0415
    from botocore.model import StructureShape  # noqa: PLC0415

    if code != "ValidationException":
        return False
    try:
        model = botocore.session.get_session().get_service_model("events")
        entry = model.shape_for("PutEventsRequestEntry")
        if not isinstance(entry, StructureShape):
            return True
        rules = entry.members["EventBusName"].metadata
        low, high, pattern = int(rules["min"]), int(rules["max"]), str(rules["pattern"])
        valid = low <= len(bus) <= high and re.fullmatch(pattern, bus) is not None
    except Exception:  # any failure reading the model: the old answer
        return True
    return not valid


def _aws_message(error: BaseException | None) -> str:
    """The AWS error's own message: the botocore ``ClientError`` behind ``aws.call``'s domain error."""
    from botocore.exceptions import ClientError  # noqa: PLC0415

    client_error = error.__cause__ if error is not None else None
    if isinstance(client_error, ClientError):
        return str(client_error.response.get("Error", {}).get("Message") or "no message")
    return "no message"


def _not_published_line(reason: str, fix: str, args: argparse.Namespace, seen_sent: bool | None) -> str:
    if args.command == "crypto" and args.crypto_command == "assign":
        # ``crypto.run`` read the payment after the failure: its CryptoPaymentSeen.v1 goes first, then the bill's
        if seen_sent is True:
            return (
                f"crypto assign {args.payment_id}: saved; its CryptoPaymentSeen.v1 was sent, the paid bill's event "
                f"(CryptoBillSettled.v1 or CryptoCreditAdded.v1) was not ({reason}): a rerun is refused (already "
                f"attributed); the next crypto watcher run sends it - {fix} before the next command"
            )
        if seen_sent is None:
            # the payment not read back: its event may have gone or not; the bill's, published last, did not
            return (
                f"crypto assign {args.payment_id}: saved; an event was not sent ({reason}) and the payment could not "
                "be read back to say whether its CryptoPaymentSeen.v1 was sent: a rerun is refused (already "
                "attributed); if it was not, nothing re-sends it - tell the customer; the paid bill's event "
                "(CryptoBillSettled.v1 or CryptoCreditAdded.v1), if it paid one, was not sent either way (it goes "
                f"last): the next crypto watcher run sends it - {fix} before the next command"
            )
        # the payment's event not sent: the bill's, published after it, was not either
        return (
            f"crypto assign {args.payment_id}: saved; its event was not sent ({reason}), nor the paid bill's "
            "(CryptoBillSettled.v1 or CryptoCreditAdded.v1) if it paid one: a rerun is refused (already attributed); "
            "no command re-sends the CryptoPaymentSeen.v1 - tell the customer; the next crypto watcher run sends the "
            f"bill's - {fix} before the next command"
        )
    if args.command == "crypto" and args.crypto_command == "resolve":
        return (
            f"crypto resolve {args.payment_id}: saved; its event was not sent ({reason}): a rerun is refused (not in "
            f"review); the next crypto watcher run announces the paid bill (CryptoBillSettled.v1) - {fix} before the "
            "next command"
        )
    # ``rating replay --apply``: the message whose re-rating failed to publish stays on the queue (not deleted), but
    # hidden with the others received (``replay.APPLY_VISIBILITY_SECONDS``): a rerun sooner finds none of them
    minutes = replay.APPLY_VISIBILITY_SECONDS // 60
    return (
        f"an event was not sent ({reason}): what was written before it stays; {fix}, and rerun after {minutes} "
        "minutes, when the messages not replayed are visible on the queue again"
    )


def _refused_line(reason: str, args: argparse.Namespace, seen_sent: bool | None) -> str:
    """The line for an event EventBridge refused for its content (malformed, too large, an invalid argument): each
    time it is sent it is refused again - a rerun, the crypto watcher's runs - so nothing re-sends it: report it."""
    never = "EventBridge refused the event itself, not the bus name, and refuses it each time it is sent"
    if args.command == "crypto" and args.crypto_command == "assign" and seen_sent is True:
        return (
            f"crypto assign {args.payment_id}: saved; its CryptoPaymentSeen.v1 was sent, the paid bill's event "
            f"(CryptoBillSettled.v1 or CryptoCreditAdded.v1) was not ({reason}): a rerun is refused (already "
            f"attributed); {never} (the crypto watcher's runs too): nothing re-sends it - report it"
        )
    if args.command == "crypto" and args.crypto_command == "assign" and seen_sent is None:
        # the payment not read back: the refused one is either the payment's (then the bill's was never sent, and the
        # watcher sends it) or, the payment's sent, the bill's (refused again on each watcher run)
        return (
            f"crypto assign {args.payment_id}: saved; an event was not sent ({reason}) and the payment could not be "
            f"read back to say which: a rerun is refused (already attributed); {never}: either the "
            "CryptoPaymentSeen.v1 (nothing re-sends it - tell the customer; the next crypto watcher run sends the paid "
            "bill's event, if any) or, that one sent, the paid bill's event (CryptoBillSettled.v1 or "
            "CryptoCreditAdded.v1: the crypto watcher's runs are refused too) - report it"
        )
    if args.command == "crypto" and args.crypto_command == "assign":
        # the refused one is the payment's (sent first): the bill's was never sent, so the watcher sends it
        return (
            f"crypto assign {args.payment_id}: saved; its event was not sent ({reason}), nor the paid bill's "
            "(CryptoBillSettled.v1 or CryptoCreditAdded.v1) if it paid one: a rerun is refused (already attributed); "
            f"{never}: nothing re-sends the CryptoPaymentSeen.v1 - report it, tell the customer; the next crypto "
            "watcher run sends the bill's"
        )
    if args.command == "crypto" and args.crypto_command == "resolve":
        return (
            f"crypto resolve {args.payment_id}: saved; its event was not sent ({reason}): a rerun is refused (not in "
            f"review); {never} (the crypto watcher's runs too): nothing re-sends it - report it"
        )
    # ``rating replay --apply``: main passes ``_content_refused`` to the replay, which skips a refused message and
    # goes on (its row names it), so this line is a fallback for a refusal raised outside a message's re-rating. The
    # message stays on the queue (deleted only once rated); the others received stay hidden ``APPLY_VISIBILITY_SECONDS``
    minutes = replay.APPLY_VISIBILITY_SECONDS // 60
    return (
        f"an event was not sent ({reason}): what was written before it stays; {never} (a rerun too): nothing "
        "re-sends it - report it; its message stays on the queue (not deleted), and a run skips it and replays the "
        f"others; the other messages received and not replayed are visible on the queue again after {minutes} "
        "minutes: rerun then for them"
    )


def _non_negative_decimal(name: str) -> Callable[[str], Decimal]:
    def parse(text: str) -> Decimal:
        try:
            value = Decimal(text)
        except InvalidOperation:
            raise argparse.ArgumentTypeError(f"{name} must be a number, got {text!r}") from None
        if not value.is_finite():
            raise argparse.ArgumentTypeError(f"{name} must be a finite number, got {text!r}")
        if value < 0:
            raise argparse.ArgumentTypeError(f"{name} must be >= 0, got {text}")
        return value

    return parse


def _mix(text: str) -> dict[str, Decimal]:
    shares: dict[str, Decimal] = {}
    for part in text.split(","):
        tier, sep, value = part.partition("=")
        tier = tier.strip()
        if not sep or not tier:
            raise argparse.ArgumentTypeError(f"mix entries look like tier=percent, got {part!r}")
        if tier in shares:
            raise argparse.ArgumentTypeError(f"tier {tier!r} appears twice in the mix")
        try:
            share = Decimal(value.strip())
        except InvalidOperation:
            raise argparse.ArgumentTypeError(f"share of {tier} must be a number, got {value!r}") from None
        if not share.is_finite() or share < 0:
            raise argparse.ArgumentTypeError(f"share of {tier} must be >= 0, got {value!r}")
        shares[tier] = share
    return shares


class _Parser(argparse.ArgumentParser):
    """argparse with exit status 2 and the problem named (argparse's own behaviour, kept explicit)."""

    def error(self, message: str) -> None:  # type: ignore[override]
        self.print_usage(sys.stderr)
        self.exit(EXIT_USAGE, f"{self.prog}: error: {message}\n")


def build_parser() -> argparse.ArgumentParser:
    parser = _Parser(prog="kilo-billing", description="Kilo Billing: prices, estimates, projections, operations.")
    sub = parser.add_subparsers(dest="command", required=True, parser_class=_Parser)

    catalog = sub.add_parser("catalog", help="show the price book")
    catalog.add_argument("--period", type=arguments.period, help="the period whose price book to show (YYYY-MM)")
    catalog.add_argument("--json", action="store_true", help="machine-readable output")

    estimate = sub.add_parser("estimate", help="the bill for one month of usage")
    estimate.add_argument("--tier", help="personal, team or enterprise (default: compare all tiers)")
    estimate.add_argument("--video-minutes", type=whole_number("--video-minutes"), default=0)
    estimate.add_argument("--audio-minutes", type=whole_number("--audio-minutes"), default=0)
    estimate.add_argument("--messages", type=whole_number("--messages"), default=0)
    estimate.add_argument("--data-gb", type=_non_negative_decimal("--data-gb"), default=Decimal(0))
    estimate.add_argument("--period", type=arguments.period, help="price the month YYYY-MM (default: this month)")
    estimate.add_argument("--json", action="store_true", help="machine-readable output")

    projections = sub.add_parser("projections", help="monthly revenue for a user count and tier mix")
    projections.add_argument("--users", type=whole_number("--users"), required=True)
    projections.add_argument("--mix", type=_mix, required=True, help="e.g. personal=60,team=30,enterprise=10")
    projections.add_argument(
        "--overage-usd",
        type=_non_negative_decimal("--overage-usd"),
        default=Decimal(0),
        help="monthly overage",
    )
    projections.add_argument("--json", action="store_true", help="machine-readable output")
    accounts.add_parser(sub, _non_negative_decimal("--budget-usd"))
    replay.add_parser(sub)
    invoice_commands = invoices.add_parser(sub)
    preview.add_arguments(
        invoice_commands.add_parser(
            "preview", help="the invoice the rules give for a described account-period (no AWS)"
        )
    )
    reports.add_parser(sub)
    crypto.add_parser(sub)
    alerts.add_parser(sub)
    return parser


def _book(catalog: Catalog, period: Period | None) -> tuple[Period, PriceBook]:
    chosen = period or Period.containing(datetime.now(UTC))
    return chosen, catalog.for_period(chosen)


def estimate_month(book: PriceBook, period: Period, tier: str, args: argparse.Namespace) -> RatedPeriod:
    at = period.start
    data_bytes = int((args.data_gb * BYTES_PER_GB).to_integral_value(rounding=ROUND_CEILING))
    usage = [
        UsageRecord(Meter.VIDEO, args.video_minutes, at),
        UsageRecord(Meter.AUDIO, args.audio_minutes, at),
        UsageRecord(Meter.MESSAGES, args.messages, at),
        UsageRecord(Meter.DATA_TRANSFER, data_bytes, at),
    ]
    return rate_period(period, [TierSegment(tier, period.start, period.end)], usage, book)


def estimate_json(rated: RatedPeriod, book: PriceBook) -> dict[str, object]:
    tier = rated.fee_lines[0].tier
    return {
        "tier": tier,
        "period": rated.period.key,
        "price_book": book.version,
        "fee": money_str(rated.fee),
        "lines": [
            {key: line.as_json()[key] for key in ("meter", "used", "included", "billable", "unit_price", "amount")}
            for line in rated.usage_lines
        ],
        "total": money_str(rated.total),
        "currency": book.currency,
    }


def _recommended(estimates: Sequence[RatedPeriod], book: PriceBook) -> str:
    """The cheapest tier; on a tie, the lower tier (fewer commitments)."""
    best = min(estimates, key=lambda rated: (rated.total, book.tier(str(rated.fee_lines[0].tier)).rank))
    return str(best.fee_lines[0].tier)


def _print_estimates(console: Console, estimates: Sequence[RatedPeriod], book: PriceBook) -> None:
    for rated in estimates:
        tier = book.tier(str(rated.fee_lines[0].tier))
        table = Table(title=f"{tier.name} — {rated.period} (price book {book.version})")
        for column in ("meter", "used", "included", "billable", "unit price", "amount"):
            table.add_column(column, justify="left" if column == "meter" else "right")
        for line in rated.usage_lines:
            view = line.as_json()
            table.add_row(
                str(view["meter"]),
                str(view["used"]),
                "unlimited" if view["included"] is None else str(view["included"]),
                str(view["billable"]),
                f"${view['unit_price']}",
                f"${view['amount']}",
            )
        table.add_section()
        table.add_row("monthly fee", "", "", "", "", f"${money_str(rated.fee)}")
        table.add_row("[bold]total[/bold]", "", "", "", "", f"[bold]${money_str(rated.total)}[/bold]")
        console.print(table)


def _print_catalog(console: Console, book: PriceBook) -> None:
    meters = Table(title=f"Price book {book.version}, effective {book.effective_from} ({book.currency})")
    for column in ("meter", "unit", "LiveKit base", "markup", "our price"):
        meters.add_column(column, justify="left" if column in ("meter", "unit") else "right")
    for meter in Meter:
        meters.add_row(
            meter.value,
            METER_UNITS[meter].billing_unit,
            f"${decimal_str(book.base_price(meter))}",
            f"x{decimal_str(book.markup)}",
            f"${decimal_str(book.unit_price(meter))}",
        )
    console.print(meters)
    tiers = Table(title="Tiers (included per month)")
    for column in ("tier", "monthly fee", *[meter.value for meter in Meter], "overage"):
        tiers.add_column(column, justify="left" if column == "tier" else "right")
    for tier_id in book.tier_ids:
        tier = book.tier(tier_id)
        included = ["unlimited" if tier.allowance(meter) is None else f"{tier.allowance(meter):,}" for meter in Meter]
        tiers.add_row(tier.name, f"${money_str(tier.monthly_fee)}", *included, tier.overage.value)
    console.print(tiers)


def _allowance_str(allowance: Decimal | None) -> str | None:
    return None if allowance is None else decimal_str(allowance)


def catalog_json(book: PriceBook) -> dict[str, object]:
    return {
        "version": book.version,
        "effective_from": book.effective_from.isoformat(),
        "currency": book.currency,
        "markup": decimal_str(book.markup),
        "meters": [
            {
                "meter": meter.value,
                "unit": METER_UNITS[meter].billing_unit,
                "base_price": decimal_str(book.base_price(meter)),
                "unit_price": decimal_str(book.unit_price(meter)),
            }
            for meter in Meter
        ],
        "tiers": [
            {
                "id": tier.id,
                "name": tier.name,
                "monthly_fee": money_str(tier.monthly_fee),
                "included": {meter.value: _allowance_str(tier.allowance(meter)) for meter in Meter},
                "overage": tier.overage.value,
                "entitlements": list(tier.entitlements),
            }
            for tier in (book.tier(tier_id) for tier_id in book.tier_ids)
        ],
    }


def _print_projection(console: Console, projection: Projection) -> None:
    table = Table(title=f"Monthly revenue projection for {projection.users:,} users")
    for column in ("tier", "share", "users", "fee", "revenue"):
        table.add_column(column, justify="left" if column == "tier" else "right")
    for tier in projection.tiers:
        table.add_row(
            tier.tier,
            f"{tier.share_percent}%",
            f"{tier.users:,}",
            f"${money_str(tier.monthly_fee)}",
            f"${money_str(tier.revenue)}",
        )
    table.add_section()
    table.add_row("overage", "", "", "", f"${money_str(projection.overage)}")
    table.add_row("[bold]total[/bold]", "", "", "", f"[bold]${money_str(projection.total)}[/bold]")
    console.print(table)


def _emit(payload: object) -> None:
    sys.stdout.write(json.dumps(payload, indent=2) + "\n")


def _emit_profile(console: Console, profile: dict[str, object], as_json: bool) -> None:
    if as_json:
        _emit(profile)
        return
    table = Table(title=f"Account {profile['account_id']}")
    table.add_column("from")
    table.add_column("tier")
    for change in profile["tiers"]:  # type: ignore[attr-defined]
        table.add_row(change["from"], change["tier"])
    console.print(table)
    console.print(f"budget: {profile['budget_usd'] or 'none'} (alerts at {profile['budget_thresholds']} %)")
    console.print(f"hard limit: {profile['hard_limit_usd'] or 'none'}; status: {profile['status']}")
    console.print(f"progressive billing threshold: {profile['progressive_threshold_usd'] or 'off'}")


_RUNS: dict[str, Callable[[argparse.Namespace, Catalog], int]] = {"report": reports.run, "alerts": alerts.run}


def main(argv: Sequence[str] | None = None, catalog: Catalog | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    catalog = catalog or default_catalog()
    console = make_console()
    try:
        if args.command == "catalog":
            _, book = _book(catalog, args.period)
            if args.json:
                _emit(catalog_json(book))
            else:
                _print_catalog(console, book)
        elif args.command == "estimate":
            period, book = _book(catalog, args.period)
            tiers = [book.tier(args.tier).id] if args.tier is not None else book.tier_ids
            estimates = [estimate_month(book, period, tier, args) for tier in tiers]
            if args.json:
                if args.tier is not None:
                    _emit(estimate_json(estimates[0], book))
                else:
                    _emit(
                        {
                            "estimates": [estimate_json(rated, book) for rated in estimates],
                            "recommended": _recommended(estimates, book),
                        }
                    )
            else:
                _print_estimates(console, estimates, book)
                if args.tier is None:
                    console.print(f"Cheapest for this usage: [bold]{_recommended(estimates, book)}[/bold]")
        elif args.command == "account":
            _emit_profile(console, accounts.run(args, catalog), args.json)
        elif args.command == "rating":
            replay.run(args, console, lambda exc: _content_refused(exc, args.event_bus))
        elif args.command == "invoice" and args.invoice_command == "preview":
            return preview.run(args, catalog)
        elif args.command == "invoice":
            invoices.run(args, console)
        elif args.command in _RUNS:  # each prints its own output and answers its exit code
            return _RUNS[args.command](args, catalog)
        elif args.command == "crypto":
            crypto.run(args, console)
        else:
            _, book = _book(catalog, None)
            projection = project_revenue(book, args.users, args.mix, args.overage_usd)
            if args.json:
                _emit(projection.as_json())
            else:
                _print_projection(console, projection)
    except (UnknownTierError, ProjectionError, ValueError) as exc:
        parser.error(str(exc))
    except (
        bus.EventBusNotFoundError,
        bus.EventBusAccessDeniedError,
        PublishError,
        crypto.AssignmentNotPublishedError,
    ) as exc:
        # the bus not found before any write (bus.py: nothing written), or an event not taken after the command wrote:
        # one line saying what is saved, no traceback
        return _not_published(parser.prog, exc, args)
    except StorageUnavailableError as exc:  # not the input's fault: one line, no usage banner, exit 4
        code = str(exc).partition(":")[0].strip()  # the AWS error code (``aws.map_error``)
        if code in _CONFIGURATION:  # the setting is wrong: a rerun fails the same way (exit 2, the docstring)
            print(f"{parser.prog}: {_configuration_problem(code, args)}", file=sys.stderr)
            return EXIT_USAGE
        print(f"{parser.prog}: storage unavailable: {exc}; rerun", file=sys.stderr)
        return EXIT_UNAVAILABLE
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
