"""`kilo-billing rating replay`: re-rate the stream batches Lambda gave up on (the rating on-failure queue), or the
events rating could not rate (the poison queue), once the cause is fixed.

Dry run by default: lists, per queue message, where its events were found (a batch: the stream by sequence number
within 24 h, read up to the batch's end, else the events table by arrival window; a poison message: its event in the
events table by its keys), the rooms and usage events concerned and what re-rating would change - without writing,
publishing or deleting anything. ``--apply`` re-rates through rating's own exactly-once path and deletes each message
once its events are rated whole; running it again changes nothing. ``--requeue <first sequence | pk / sk>`` rates
nothing: it copies the one message named to the same queue and deletes the original once the copy is sent (a message
kept past the queue's 14 days, D362 amended (rq)). Runbook: README, Operations.

Tables, bus and poison queue come from the options or the functions' variables (``USAGE_TABLE_NAME``,
``EVENTS_TABLE_NAME``, ``EVENT_BUS_NAME``, ``POISON_QUEUE_URL``); AWS credentials, region and endpoint
(``AWS_ENDPOINT_URL`` for the local stack) from the usual AWS environment; each AWS call's budget from the functions'
variables (``AWS_READ_TIMEOUT_SECONDS``, ``AWS_CONNECT_TIMEOUT_SECONDS``, ``AWS_MAX_ATTEMPTS``), the read timeout
``kilo_billing_cli.clients.READ_TIMEOUT_SECONDS`` unless set, as every command's (D413, amended (ops3)).
"""

from __future__ import annotations

import argparse
import contextlib
import json
import logging
import os
import sys
import time
from collections.abc import Callable, Iterator
from typing import TYPE_CHECKING, Any, TextIO

from rich.console import Console
from rich.table import Table

from kilo_billing_cli.arguments import whole_number
from kilo_billing_cli.bus import check_event_bus

if TYPE_CHECKING:
    from kilo_billing.publisher import PublishError

# how long ``--apply`` hides each message it receives (up to --max-messages at once): one not replayed (a publish
# failed) is received again only after it - a rerun sooner finds none of them (main's line says so, D362). Not sized
# to the replay's calls (their number grows with the batches): each may take
# ``clients.call_budget().worst_case_seconds`` (10 s read + 1 s connect, 3 attempts and backoff: ~36 s), so past ~25
# such slow calls a replay outlives it and the messages not reached yet are visible again mid-replay - harmless to
# rating (exactly once), a limit (D413, amended)
APPLY_VISIBILITY_SECONDS = 900


def add_parser(sub: Any) -> None:
    rating = sub.add_parser("rating", help="operate rating (replay failed stream batches and poison records)")
    commands = rating.add_subparsers(dest="rating_command", required=True, parser_class=type(rating))
    replay = commands.add_parser(
        "replay",
        help="re-rate the batches on the stream's on-failure queue or the poison queue's events (a dry run unless "
        "--apply)",
    )
    replay.add_argument(
        "--queue-url",
        required=True,
        help="the rating on-failure queue (RatingDeadLetterQueue) or the poison queue (PoisonRecordDeadLetterQueue)",
    )
    replay.add_argument("--apply", action="store_true", help="re-rate and delete each replayed message")
    replay.add_argument("--usage-table", default=os.environ.get("USAGE_TABLE_NAME", ""))
    replay.add_argument("--events-table", default=os.environ.get("EVENTS_TABLE_NAME", ""))
    replay.add_argument("--event-bus", default=os.environ.get("EVENT_BUS_NAME", ""), help="for threshold events")
    replay.add_argument("--poison-queue-url", default=os.environ.get("POISON_QUEUE_URL", ""))
    replay.add_argument("--max-messages", type=whole_number("--max-messages", minimum=1), default=100)
    replay.add_argument(
        "--window-margin-minutes",
        type=whole_number("--window-margin-minutes", minimum=1),
        default=10,
        help="widens the arrival window in the events table",
    )
    replay.add_argument("--json", action="store_true", help="machine-readable output")
    replay.add_argument(
        "--requeue",
        metavar="SELECTOR",
        help="copy ONE message's body to the same queue, then delete the original (keeps a message past the 14-day "
        "retention): the batch's first sequence number as its row prints it (or SHARD:FIRST, or FIRST-LAST), a "
        "poison message's event ('pk / sk', or its pk); refused when none or several match; nothing is rated",
    )


def run(
    args: argparse.Namespace, console: Console, refused: Callable[[PublishError], str | None] | None = None
) -> None:
    """Replay; errors a user can fix are ``ValueError``. Exits 1 when a message could not be replayed. With
    ``--json`` stdout holds the JSON document alone (rating's log lines go to stderr). ``refused``: main's reading of
    a publish failure, the reason when EventBridge refused the event for its content - that message is skipped (kept
    on the queue, its row naming why) and the others replayed; any other publish failure stops the run."""
    if args.requeue is not None:
        if args.apply:
            raise ValueError("--requeue copies one message and rates nothing: not with --apply")
        if args.json:  # it prints one plain line, no document (D362 amended (rq2))
            raise ValueError("--requeue copies one message and prints one line: not with --json")
        _requeue(args, console)
        return
    needed = {"--usage-table": args.usage_table, "--events-table": args.events_table}
    if args.apply:
        needed |= {"--event-bus": args.event_bus, "--poison-queue-url": args.poison_queue_url}
    missing = [name for name, value in needed.items() if not value]
    if missing:
        raise ValueError(f"{', '.join(missing)} required (or the matching environment variables)")
    attribution = os.environ.get("ATTRIBUTION_RULE")
    out = sys.stdout
    with _logs_to(sys.stderr) if args.json else contextlib.nullcontext():
        results = _replay(args, attribution, refused)
    rows = [result.as_json() for result in results]
    if args.json:
        out.write(json.dumps({"applied": args.apply, "messages": rows}, indent=2) + "\n")
    else:
        _print(console, rows, args.apply)
    if args.apply and any(row["problem"] or row["rejected"] for row in rows):
        raise SystemExit(1)


@contextlib.contextmanager
def _logs_to(stream: TextIO) -> Iterator[None]:
    """Rating's log lines (Powertools' JSON, written to stdout: a Lambda's log) go to ``stream`` meanwhile, so that
    ``--json`` leaves stdout to the document alone - also in-process, where a logger made earlier (the handler's)
    holds the stdout of its time: every console handler (not a file's) is pointed at ``stream``, and one made
    meanwhile finds ``stream`` as ``sys.stdout``."""
    loggers = [logging.getLogger(), *logging.Logger.manager.loggerDict.values()]
    moved = [
        (handler, handler.stream)
        for logger in loggers
        if isinstance(logger, logging.Logger)
        for handler in logger.handlers
        if type(handler) is logging.StreamHandler and handler.stream is not stream
    ]
    for handler, _ in moved:
        handler.stream = stream  # not setStream: it flushes the old stream, which may be closed (an earlier capture)
    try:
        with contextlib.redirect_stdout(stream):
            yield
    finally:
        for handler, before in moved:
            handler.stream = before


def _replay(
    args: argparse.Namespace, attribution: str | None, refused: Callable[[PublishError], str | None] | None
) -> list[Any]:
    from kilo_billing.catalog import default_catalog  # noqa: PLC0415
    from kilo_billing.contracts import SOURCE_RATING  # noqa: PLC0415
    from kilo_billing.publisher import EventBridgePublisher  # noqa: PLC0415
    from kilo_billing_cli.clients import client  # noqa: PLC0415
    from kilo_rate_usage.adapters import (  # noqa: PLC0415
        DynamoEventArchive,
        DynamoStreamArchive,
        DynamoUsageRepository,
        SqsFailureQueue,
        SqsPoisonSink,
    )
    from kilo_rate_usage.model import AttributionRule, RatingConfig  # noqa: PLC0415
    from kilo_rate_usage.replay import replay  # noqa: PLC0415

    dynamodb, sqs, events = client("dynamodb"), client("sqs"), client("events")
    if args.apply:  # it writes, then publishes: the bus asked for before any message is received
        check_event_bus(events, args.event_bus)
    return replay(
        queue=SqsFailureQueue(sqs, args.queue_url, visibility_timeout=APPLY_VISIBILITY_SECONDS if args.apply else 0),
        streams=DynamoStreamArchive(client("dynamodbstreams")),
        events=DynamoEventArchive(dynamodb, args.events_table),
        repo=DynamoUsageRepository(dynamodb, args.usage_table, args.events_table),
        publisher=EventBridgePublisher(events, args.event_bus, SOURCE_RATING),
        poison=SqsPoisonSink(sqs, args.poison_queue_url),
        config=RatingConfig(
            AttributionRule.parse(attribution) if attribution else AttributionRule(), default_catalog().for_period
        ),
        now_ms=int(time.time() * 1000),
        apply=args.apply,
        max_messages=args.max_messages,
        margin_ms=args.window_margin_minutes * 60_000,
        refused=refused,
    )


# how long ``--requeue`` hides the messages it receives: the one named is deleted at once; the others are visible
# again after it (as cx3's hand-made runbook did, 300 s)
REQUEUE_VISIBILITY_SECONDS = 300
# ``--requeue`` must see every copy (several matching are refused): long polls of this many seconds, stopping only
# after two empty receives in a row (a short poll may answer none while messages remain, D362 amended (rq2))
REQUEUE_WAIT_SECONDS = 1
REQUEUE_EMPTY_RECEIVES = 2


def _selectors(body: str) -> set[str]:
    """What names a message stably across receives (its message id does not): a batch's first sequence number (alone,
    ``SHARD:FIRST`` or ``FIRST-LAST``), a poison message's event label ``pk / sk`` or its pk."""
    from kilo_rate_usage.replay import BatchInfo, NotABatchInfoError, PoisonMessage  # noqa: PLC0415

    poison = PoisonMessage.parse(body)
    if poison is not None:
        return {poison.label, poison.label.split(" / ")[0]}
    try:
        info = BatchInfo.parse(body)
    except NotABatchInfoError:
        return set()
    first = info.start_sequence
    return {first, f"{first}-{info.end_sequence}", f"{info.shard_id}:{first}"}


def _requeue(args: argparse.Namespace, console: Console) -> None:
    """Copy the one message ``args.requeue`` names to the same queue, then delete the original - only once the copy
    was sent (a failed send deletes nothing: one line, ``_send_failed``; a failed delete leaves two copies: said,
    exit 4, or exit 2 when access was denied - fix sqs:DeleteMessage first, ``_delete_failed``); a failed receive, one
    line about the queue (``_receive_failed``), not main's naming tables and a bus. Access denied exits 2 at every
    step (D362). D362 amended (rq), (sm), (sw)."""
    from kilo_billing.aws import InvalidRequestError, StorageUnavailableError, call  # noqa: PLC0415
    from kilo_billing_cli.clients import client  # noqa: PLC0415
    from kilo_rate_usage.adapters import SqsFailureQueue  # noqa: PLC0415

    sqs = client("sqs")
    hidden = REQUEUE_VISIBILITY_SECONDS // 60
    try:
        received = SqsFailureQueue(
            sqs,
            args.queue_url,
            visibility_timeout=REQUEUE_VISIBILITY_SECONDS,
            wait_seconds=REQUEUE_WAIT_SECONDS,
            empty_receives=REQUEUE_EMPTY_RECEIVES,
        ).receive(args.max_messages)
    except (StorageUnavailableError, InvalidRequestError) as exc:  # one line about the queue, not main's
        line, status = _receive_failed(args.requeue, args.queue_url, exc, hidden)
        print(f"kilo-billing: {line}", file=sys.stderr)
        raise SystemExit(status) from exc
    matches = [(receipt, body) for receipt, body in received if args.requeue in _selectors(body)]
    if not matches:
        raise ValueError(
            f"--requeue {args.requeue!r}: no message matches among the {len(received)} received, now hidden "
            f"{hidden} minutes (a message an --apply run received is hidden 15 minutes, one a --requeue run received "
            f"- a failed one's too - a --requeue run's {hidden} minutes: rerun after them); nothing was sent or deleted"
        )
    if len(matches) > 1 and len({body for _, body in matches}) > 1:  # different messages: name one exactly
        raise ValueError(
            f"--requeue {args.requeue!r}: the selector matches {len(matches)} different messages: name one by "
            "'pk / sk' (a poison message) or by SHARD:FIRST or FIRST-LAST (a batch), as its row prints it; nothing "
            f"was sent or deleted (the {len(received)} received are hidden {hidden} minutes)"
        )
    if len(matches) > 1:
        raise ValueError(
            f"--requeue {args.requeue!r}: {len(matches)} messages match, identical bodies: copies a --requeue "
            "interrupted between its send and its delete left (a replay rates their usage once, but a poison record "
            "of them goes to the poison queue once per copy; delete one by hand, README); nothing was sent or deleted "
            f"(the {len(received)} received are hidden {hidden} minutes)"
        )
    [(receipt, body)] = matches
    check = (
        f"aws sqs get-queue-attributes --queue-url {args.queue_url} --attribute-names ApproximateNumberOfMessages "
        "ApproximateNumberOfMessagesNotVisible"
    )
    try:
        sent = call(sqs.send_message, QueueUrl=args.queue_url, MessageBody=body)
    except (StorageUnavailableError, InvalidRequestError) as exc:  # one line, not main's storage line after it
        line, status = _send_failed(args.requeue, args.queue_url, exc, hidden, check)
        print(f"kilo-billing: {line}", file=sys.stderr)
        raise SystemExit(status) from exc
    try:
        call(sqs.delete_message, QueueUrl=args.queue_url, ReceiptHandle=receipt)
    except Exception as exc:  # the copy is sent: say so whatever the delete's failure
        line, status = _delete_failed(args.requeue, args.queue_url, sent["MessageId"], exc, hidden, check)
        print(f"kilo-billing: {line}", file=sys.stderr)
        raise SystemExit(status) from exc
    console.print(
        f"requeued {args.requeue}: copy sent (MessageId {sent['MessageId']}), the original deleted; the other "
        f"{len(received) - 1} message(s) received are visible again after {hidden} minutes"
    )


# SQS's answers refusing the credentials (its query and JSON protocols' codes): nothing done
_DENIED = frozenset({"AccessDenied", "AccessDeniedException"})
# ... and naming a queue that does not exist
_NO_QUEUE = frozenset({"AWS.SimpleQueueService.NonExistentQueue", "QueueDoesNotExist"})


def _code(exc: Exception) -> str:
    return str(exc).partition(":")[0].strip()  # the AWS error code (``aws.map_error``), or the exception's text


def _receive_failed(selector: str, queue_url: str, exc: Exception, hidden: int) -> tuple[str, int]:
    """The one line (and exit status) for a ``--requeue`` whose receive failed - about the queue, where main's line
    named the command's tables and bus: nothing was sent or deleted. Access denied or no such queue: fix that, rerun
    (exit 2); the request refused: report it (exit 4); failed otherwise (throttled, timed out, down): rerun once the
    messages received before the failure are visible again (exit 4). D362 amended (sm)."""
    from kilo_billing.aws import StorageUnavailableError  # noqa: PLC0415

    code = _code(exc)
    head = f"--requeue {selector!r}: the queue could not be read"
    if code in _DENIED:
        return (
            f"{head}: access denied ({code}); nothing was sent or deleted. Give the credentials sqs:ReceiveMessage on "
            f"{queue_url}, then rerun"
        ), 2
    if code in _NO_QUEUE:
        return (
            f"{head}: no such queue ({code}); nothing was sent or deleted. Fix --queue-url ({queue_url}), then rerun",
            2,
        )
    if not isinstance(exc, StorageUnavailableError):
        return (
            f"{head}: SQS refused the receive ({code}); nothing was sent or deleted. A rerun asks the same and is "
            "refused again: report it, with this line"
        ), 4
    return (
        f"{head}: the receive failed ({code}); nothing was sent or deleted. Rerun after {hidden} minutes (a message "
        f"received before the failure is hidden that long)"
    ), 4


def _delete_failed(
    selector: str, queue_url: str, copy_id: str, exc: Exception, hidden: int, check: str
) -> tuple[str, int]:
    """The one line (and exit status) for a ``--requeue`` whose original was not deleted after its copy was sent: two
    copies. Access denied (exit 2, D362's rule: a rerun fails the same way, and a script retrying on 4 would copy the
    copy each time): the delete surely failed, and deleting a copy by hand needs the same permission - fix
    sqs:DeleteMessage first. Failed otherwise (exit 4): SQS may have deleted it (an answer lost) - wait and count
    (D362 amended (rq2), (sm), (sw))."""
    code = _code(exc)
    sent = f"--requeue {selector!r}: copy sent (MessageId {copy_id}), the original was NOT deleted"
    if code in _DENIED:
        return (
            f"{sent}: access denied ({code}): two copies are on the queue (a replay rates their usage once). Do not "
            f"rerun: it would copy a copy and fail its delete again. Give the credentials sqs:DeleteMessage on "
            f"{queue_url}, then delete one of the two copies by hand (README)"
        ), 2
    return (
        f"{sent} ({exc}): two copies are on the queue (a replay rates their usage once). Do not rerun now: the "
        f"original is hidden {hidden} minutes, a rerun would copy the copy and leave two; wait {hidden} minutes, then "
        f"count the queue's messages ({check}) and delete one of the two by hand (README)"
    ), 4


def _send_failed(selector: str, queue_url: str, exc: Exception, hidden: int, check: str) -> tuple[str, int]:
    """The one line (and exit status) for a ``--requeue`` whose copy was not sent: what failed, that nothing was
    deleted, what to do. Refused (access denied: exit 2; the request itself: exit 4) - SQS took no copy, a rerun after
    the original's ``hidden`` minutes does it; failed otherwise (throttled, timed out, down: exit 4) - SQS may have
    taken the copy with its answer lost, so count the queue before rerunning (D362 amended (sm))."""
    from kilo_billing.aws import StorageUnavailableError  # noqa: PLC0415

    code = _code(exc)
    kept = f"nothing was deleted: the original stays on the queue, hidden {hidden} minutes by this run's receive"
    head = f"--requeue {selector!r}: the copy was not sent"
    if code in _DENIED:
        return (
            f"{head}: access denied ({code}), so SQS took no copy; {kept}. Give the credentials sqs:SendMessage on "
            f"{queue_url}, then rerun after {hidden} minutes"
        ), 2
    if not isinstance(exc, StorageUnavailableError):
        return (
            f"{head}: SQS refused the request ({code}), so it took no copy; {kept}. A rerun sends the same body and is "
            "refused again: report it, with this line"
        ), 4
    return (
        f"{head}: the send failed ({code}), and SQS may still have taken the copy (an answer lost); {kept}. Do not "
        f"rerun now: wait {hidden} minutes, then count the queue's messages ({check}) - one more than before this "
        "--requeue means the copy is there (delete one of the two by hand, README), as many means rerun"
    ), 4


def _print(console: Console, rows: list[dict[str, Any]], applied: bool) -> None:
    table = Table(title=("Replayed" if applied else "Dry run: would replay") + f" {len(rows)} message(s)")
    columns = ("source", "sequence or event", "rooms", "usage", "sessions changed", "usage rated", "writes", "note")
    for column in columns:
        table.add_column(column)
    for row in rows:
        sequence = "-".join(row["sequence"]) if row["sequence"] else (row["event"] or "")
        note = row["problem"] or (f"refused: {', '.join(row['rejected'])}" if row["rejected"] else "")
        if row["poison_records"]:
            note += f" {len(row['poison_records'])} poison record(s)"
        if row["message_deleted"]:
            note += " (message deleted)"
        counts = (row["usage_events"], row["sessions_changed"], row["usage_rated"], row["writes"])
        table.add_row(row["source"], sequence, ", ".join(row["rooms"]), *map(str, counts), note.strip())
    console.print(table)
    if not applied and rows:
        console.print("Nothing was written. Run again with --apply to re-rate and delete the messages.")
