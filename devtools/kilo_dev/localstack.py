"""The local runtime: runs the project's real Lambda handlers the way AWS would, from ``template.yaml`` alone.

- AWS from a moto server process on 127.0.0.1 (a free port), resources created from the template's own definitions;
- an HTTP gateway on 127.0.0.1 turning requests into API Gateway HTTP API v2.0 events for the template's routes;
- event-source pollers with Lambda's semantics: DynamoDB streams (filter criteria, batch size, partial batch failures,
  retries, bisect, on-failure destination) and SQS queues (batch size, partial failures, the queue's redrive policy);
- schedules (``rate(...)``) on a clock that the demo can drive faster than real time, with the template's retry policy
  and dead-letter queue.
Adding a function and its event sources to ``template.yaml`` is all it takes for it to run here.
Every process and server is started by this module and stopped by it, by PID, also on errors and Ctrl-C. A component
that dies (the moto server, the gateway, a poller) stops the whole stack with an error naming it (:class:`StackError`).
"""

from __future__ import annotations

import base64
import importlib
import json
import os
import re
import signal
import socket
import subprocess
import sys
import threading
import time
import traceback
import urllib.parse
import urllib.request
import uuid
import warnings
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import UTC, datetime
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

from kilo_dev import processes
from kilo_dev.apigw import http_api_event
from kilo_dev.jwt_issuer import LocalIssuer
from kilo_dev.patterns import matches
from kilo_dev.streams import StreamReader
from kilo_dev.template import TEMPLATE_PATH, Template, provision

Handler = Callable[[dict[str, Any], Any], Any]


class StackError(RuntimeError):
    """A component of the local stack died; the stack has stopped. The message names the component and why."""


# between two polls of wait_idle that found nothing: what else still writes is asked directly (_busy_elsewhere), so the
# quiet polls need not leave it time to show (0.2 s before D444)
IDLE_RECHECK_SECONDS = 0.05


def free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as probe:
        probe.bind(("127.0.0.1", 0))
        return int(probe.getsockname()[1])


@dataclass
class LambdaContext:
    function_name: str
    memory_limit_in_mb: int = 512
    aws_request_id: str = "local"
    invoked_function_arn: str = ""

    def get_remaining_time_in_millis(self) -> int:
        return 60_000


class Clock:
    """Real time, or a simulated time the demo sets (schedules fire on it). ``on_set`` (if any) is called after every
    :meth:`set`, in the caller's thread: the stack's schedules then fire right there, on the simulated time alone."""

    def __init__(self) -> None:
        self._simulated: float | None = None
        self._lock = threading.Lock()
        self.on_set: Callable[[], None] | None = None

    @property
    def simulated(self) -> bool:
        return self._simulated is not None

    def set(self, epoch_seconds: float) -> None:
        with self._lock:
            if self._simulated is None or epoch_seconds > self._simulated:
                self._simulated = epoch_seconds
        if self.on_set is not None:
            self.on_set()

    def now(self) -> float:
        with self._lock:
            return self._simulated if self._simulated is not None else time.time()

    def release(self) -> None:
        """Back to real time (after a simulation that ended at 'now')."""
        with self._lock:
            self._simulated = None


class HandlerOutput:
    """``sys.stdout`` while a stack runs: what handlers print (JSON logs, EMF metrics) goes to the stack's log file,
    as it would go to CloudWatch; everything else still reaches the terminal. One per process: loggers keep the stream
    they were created with, so a later stack in the same process retargets this one rather than making another."""

    def __init__(self, terminal: Any, log_file: Any) -> None:
        self.terminal = terminal
        self.log_file = log_file
        self.local = threading.local()

    def _target(self) -> Any:
        in_handler = getattr(self.local, "in_handler", False)
        return self.log_file if in_handler and self.log_file is not None else self.terminal

    def write(self, text: str) -> int:
        return int(self._target().write(text))

    def flush(self) -> None:
        self._target().flush()

    def isatty(self) -> bool:
        return bool(self.terminal.isatty())

    def fileno(self) -> int:
        return int(self.terminal.fileno())

    def __getattr__(self, name: str) -> Any:
        return getattr(self.terminal, name)


_OUTPUT: HandlerOutput | None = None
_INVOKE_LOCK = threading.Lock()


OWN_MOTO_SERVER = "kilo_dev.moto_server"  # ends by itself when its starter is gone (``processes.exit_with_parent``)


class MotoServer:
    """moto's server in its own process on 127.0.0.1 (``kilo_dev.moto_server``: moto with bounded memory); stopped by
    PID. Another module (moto's own ``moto.server``, which the benchmark compares) does not watch its starter: it gets
    a watchdog (``processes.guard``), as anvil does, so it too ends when its starter dies without stopping it (D184)."""

    def __init__(self, log_path: Path | None = None, module: str = OWN_MOTO_SERVER) -> None:
        self.port = 0  # known once started: the socket is bound here, then handed to the server (``start``)
        self.process: subprocess.Popen[bytes] | None = None
        self._guard: subprocess.Popen[bytes] | None = None  # for a module that does not watch its starter itself
        self.log_path = log_path
        self.module = module  # "moto.server": moto's own, unbounded (for comparisons)

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    @property
    def pid(self) -> int | None:
        return self.process.pid if self.process is not None else None

    def death(self) -> str | None:
        """Why the server is gone (``None`` while it runs or before it started)."""
        if self.process is None or self.process.poll() is None:
            return None
        code = self.process.returncode
        how = f"was killed by {signal.Signals(-code).name}" if code < 0 else f"exited with status {code}"
        where = f"; its output is in {self.log_path}" if self.log_path is not None else ""
        return f"the moto server (pid {self.process.pid}, port {self.port}) {how}{where}"

    def start(self, timeout: float = 30.0) -> None:
        output: Any = subprocess.DEVNULL
        if self.log_path is not None:
            self.log_path.parent.mkdir(parents=True, exist_ok=True)
            output = self.log_path.open("wb")
        # The listening socket is bound here (port 0: the kernel's choice) and handed to the server, which serves on
        # it (werkzeug's own hand-over, as its reloader does): a port picked first and bound by the server a second
        # later could be taken meanwhile (by any process's outgoing connection), and another helper's server found
        # listening there would answer in its place.
        listener = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        listener.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        listener.bind(("127.0.0.1", 0))
        listener.listen(128)
        self.port = int(listener.getsockname()[1])
        handed = {"WERKZEUG_RUN_MAIN": "true", "WERKZEUG_SERVER_FD": str(listener.fileno())}
        try:
            self.process = subprocess.Popen(  # noqa: S603 - our own interpreter and moto
                [sys.executable, "-m", self.module, "-H", "127.0.0.1", "-p", str(self.port)],
                stdout=output,
                stderr=subprocess.STDOUT,
                start_new_session=True,
                pass_fds=(listener.fileno(),),
                env={**os.environ, **handed},
            )
        finally:
            listener.close()  # the server has its own copy
            if output is not subprocess.DEVNULL:
                output.close()  # the child has its own handle
        if self.module != OWN_MOTO_SERVER:
            self._guard = processes.guard(self.process)
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.process.poll() is not None:
                self.stop()  # reaps its guard (which ends by itself once the server has)
                raise StackError(f"{self.death()} while starting")
            try:
                with urllib.request.urlopen(f"{self.url}/moto-api/data.json", timeout=1):  # noqa: S310 - loopback
                    return
            except OSError:
                time.sleep(0.1)
        self.stop()
        raise RuntimeError("moto server did not start in time")

    def stop(self, timeout: float = 5.0) -> None:
        """SIGTERM, then SIGKILL after ``timeout``; reaped, and its guard too."""
        processes.stop(self.process, timeout)
        processes.stop(self._guard, timeout)


@dataclass
class Function:
    name: str
    handler: Handler
    invocations: int = 0
    errors: int = 0
    seconds: float = 0.0

    def invoke(self, event: dict[str, Any]) -> Any:
        # One invocation at a time across the stack: moto's TransactWriteItems deep-copies whole tables for rollback
        # and fails with a 500 when another request changes a table meanwhile (a moto limit, not DynamoDB's).
        with _INVOKE_LOCK:
            self.invocations += 1
            if _OUTPUT is not None:
                _OUTPUT.local.in_handler = True
            started = time.perf_counter()
            try:
                return self.handler(event, LambdaContext(self.name))
            except Exception:
                self.errors += 1
                traceback.print_exc(file=sys.stdout)  # as Lambda's runtime logs an unhandled error (to the log file)
                raise
            finally:
                self.seconds += time.perf_counter() - started
                if _OUTPUT is not None:
                    _OUTPUT.local.in_handler = False


# moto answers a TransactWriteItems by deep-copying whole tables, which takes seconds once the demo's tables have grown.
# With production's read timeouts botocore retries a transaction moto is still applying, and moto then rolls back to a
# snapshot taken before writes that had meanwhile succeeded - a moto artefact (DynamoDB never does this) that loses
# events. The local stack therefore gives rating's AWS calls a read timeout moto can meet (D20).
MOTO_CALL_BUDGET = {"AWS_READ_TIMEOUT_SECONDS": "60"}


def aws_environment(moto_url: str) -> dict[str, str]:
    """The AWS environment of everything the stack runs: its moto server, local credentials, one region."""
    return {
        "AWS_ENDPOINT_URL": moto_url,
        "AWS_ACCESS_KEY_ID": "local",
        "AWS_SECRET_ACCESS_KEY": "local",
        "AWS_DEFAULT_REGION": "us-east-1",
        "AWS_REGION": "us-east-1",
    }


def operator_environment(moto_url: str) -> dict[str, str]:
    """What the operator's CLI (`kilo-billing`, from another shell) needs against the stack: its AWS environment and
    the read timeout moto can meet (``MOTO_CALL_BUDGET``: `rating replay` reads stream pages of 1,000 records, ~2.2 s
    on moto - D413). The stack run in-process sets them in its own environment already."""
    return aws_environment(moto_url) | MOTO_CALL_BUDGET


# Stopping the stack (D264): every step has a deadline, and the whole stop one more; what is still running then is
# named and left to its daemon thread. The event sources and schedules get one budget together (a handler under way
# finishes), a server's shutdown its own, a process its SIGTERM, then SIGKILL.
STOP_SECONDS = 30.0
POLLER_STOP_SECONDS = 8.0
SERVER_STOP_SECONDS = 5.0
PROCESS_STOP_SECONDS = 12.0
# The stack's own AWS clients (provisioning, the event-source pollers, the on-failure queues): a moto server that does
# not answer fails a call within a minute (two attempts of 2 s to connect, 30 s to read), not botocore's default five
# attempts of 60 s each. 30 s is far more than moto needs for the pollers' reads, even loaded.
STACK_CLIENT_CONFIG: dict[str, Any] = {
    "connect_timeout": 2,
    "read_timeout": 30,
    "retries": {"total_max_attempts": 2, "mode": "standard"},
}


def load_handler(dotted: str) -> Handler:
    module, _, attribute = dotted.rpartition(".")
    handler: Handler = getattr(importlib.import_module(module), attribute)
    return handler


class Gateway(ThreadingHTTPServer):
    """API Gateway HTTP API on 127.0.0.1: routes from the template (path parameters as ``{name}``, matched on the
    URL-decoded path as API Gateway does), payload v2.0
    events, the handler's response; a route with a JWT authorizer in the template gets API Gateway's check first
    (``kilo_dev.jwt_issuer.JwtAuthorizer``: 401 without a valid token, the claims in
    ``requestContext.authorizer.jwt.claims`` otherwise)."""

    daemon_threads = True
    # the listen backlog: socketserver's default of 5 made the kernel drop connections when 64 clients connected at
    # once (0.2 % of connections reset); API Gateway queues far more than any local client sends
    request_queue_size = 1024

    def __init__(self, routes: dict[tuple[str, str], Function], authorizers: dict[tuple[str, str], Any] | None = None):
        super().__init__(("127.0.0.1", 0), _GatewayHandler)  # bound at once: the kernel's free port
        self.routes = routes
        self.authorizers = authorizers or {}
        self.requests = 0
        self.in_flight = 0  # requests being answered: the stack is not idle meanwhile (their handlers still write)
        self._in_flight_lock = threading.Lock()

    def answering(self, change: int) -> None:
        with self._in_flight_lock:
            self.in_flight += change

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.server_address[1]}"

    def match(self, method: str, path: str) -> tuple[str, dict[str, str]] | None:
        """The route template serving ``method path`` and its path parameters (an exact route wins)."""
        if (method, path) in self.routes:
            return path, {}
        parts = path.split("/")
        for route_method, template in self.routes:
            pattern = template.split("/")
            if route_method != method or len(pattern) != len(parts) or "{" not in template:
                continue
            found: dict[str, str] = {}
            for want, got in zip(pattern, parts, strict=True):
                if want.startswith("{") and want.endswith("}") and got:
                    found[want[1:-1]] = got
                elif want != got:
                    break
            else:
                return template, found
        return None


class _GatewayHandler(BaseHTTPRequestHandler):
    server: Gateway

    def log_message(self, *args: Any) -> None:
        return

    def _handle(self) -> None:
        self.server.answering(+1)
        try:
            self._answer()
        finally:
            self.server.answering(-1)

    def _answer(self) -> None:
        raw_path, _, query = self.path.partition("?")
        # as API Gateway HTTP APIs do: the path is URL-decoded before routes are matched (a %2F is a separator), and
        # the event's rawPath and pathParameters carry the decoded path
        path = urllib.parse.unquote(raw_path)
        matched = self.server.match(self.command, path)
        length = int(self.headers.get("Content-Length") or 0)
        body = self.rfile.read(length) if length else b""
        self.server.requests += 1
        if matched is None:
            self._send(404, {"content-type": "application/json"}, b'{"message":"Not Found"}')
            return
        template, parameters = matched
        function = self.server.routes[(self.command, template)]
        event = http_api_event(
            self.command, path, body, list(self.headers.items()), query=query, route_key=f"{self.command} {template}"
        )
        if parameters:
            event["pathParameters"] = parameters
        authorizer = self.server.authorizers.get((self.command, template))
        if authorizer is not None:
            from kilo_dev.jwt_issuer import TokenRejectedError  # noqa: PLC0415

            try:
                claims = authorizer.verify(self.headers.get("Authorization"))
            except TokenRejectedError:
                self._send(401, {"content-type": "application/json", "www-authenticate": "Bearer"},
                           b'{"message":"Unauthorized"}')  # fmt: skip
                return
            event["requestContext"]["authorizer"] = {"jwt": {"claims": claims, "scopes": None}}
        try:
            response = function.invoke(event)
        except Exception:
            self._send(500, {"content-type": "application/json"}, b'{"message":"Internal Server Error"}')
            return
        payload = response.get("body") or ""
        data = base64.b64decode(payload) if response.get("isBase64Encoded") else str(payload).encode()
        self._send(int(response.get("statusCode", 200)), dict(response.get("headers") or {}), data)

    def _send(self, status: int, headers: dict[str, str], body: bytes) -> None:
        self.send_response(status)
        for name, value in headers.items():
            if name.lower() != "content-length":
                self.send_header(name, value)
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    do_POST = do_GET = do_PUT = do_DELETE = do_PATCH = _handle  # noqa: N815


@dataclass
class StreamSource:
    """A DynamoDB stream event source mapping with Lambda's retry semantics."""

    function: Function
    reader: StreamReader
    stream_arn: str
    filters: list[Any]
    batch_size: int
    max_retries: int
    bisect: bool
    on_failure: str | None  # SQS queue URL
    sqs: Any
    batching_window: float = 0.0  # MaximumBatchingWindowInSeconds: wait (real time) to fill a batch
    pending: list[dict[str, Any]] = field(default_factory=list)
    processed: int = 0
    failed_batches: int = 0
    _pending_since: float = 0.0

    def poll_once(self, flush: bool = False) -> int:
        """Deliver what is on the stream (honouring the batching window unless ``flush``); returns records handed on."""
        fresh = [r for r in self.reader.poll() if not self.filters or any(matches(f, r) for f in self.filters)]
        if fresh and not self.pending:
            self._pending_since = time.monotonic()
        self.pending.extend(fresh)
        waiting = time.monotonic() - self._pending_since < self.batching_window
        if not flush and waiting and len(self.pending) < self.batch_size:
            return 0
        delivered = 0
        while self.pending:
            batch, self.pending = self.pending[: self.batch_size], self.pending[self.batch_size :]
            delivered += len(batch)
            self._deliver(batch, attempts=0)
        return delivered

    def _deliver(self, batch: list[dict[str, Any]], attempts: int) -> None:
        while batch:
            try:
                result = self.function.invoke({"Records": batch})
            except Exception:  # Lambda treats any error as a failed batch
                if self.bisect and len(batch) > 1:  # splitting does not count against the retry quota
                    half = len(batch) // 2
                    self._deliver(batch[:half], attempts)
                    self._deliver(batch[half:], attempts)
                    return
                attempts += 1
                if attempts > self.max_retries:
                    self._give_up(batch)
                    return
                time.sleep(min(0.05 * attempts, 0.5))
                continue
            failures = [item["itemIdentifier"] for item in (result or {}).get("batchItemFailures", [])]
            if not failures:
                self.processed += len(batch)
                return
            first = min(
                (i for i, r in enumerate(batch) if r["dynamodb"]["SequenceNumber"] in failures), default=0
            )  # checkpoint: everything before the first failure is done
            self.processed += first
            batch = batch[first:]
            attempts += 1
            if attempts > self.max_retries:
                self._give_up(batch)
                return

    def _give_up(self, batch: list[dict[str, Any]]) -> None:
        self.failed_batches += 1
        if self.on_failure is None:
            return
        info = {
            "version": "1.0",
            "timestamp": datetime.now(UTC).isoformat(),
            "requestContext": {"functionArn": self.function.name, "condition": "RetryAttemptsExhausted"},
            "DDBStreamBatchInfo": {
                "startSequenceNumber": batch[0]["dynamodb"]["SequenceNumber"],
                "endSequenceNumber": batch[-1]["dynamodb"]["SequenceNumber"],
                "batchSize": len(batch),
                "streamArn": self.stream_arn,
            },
        }
        self.sqs.send_message(QueueUrl=self.on_failure, MessageBody=json.dumps(info))


@dataclass
class QueueSource:
    """An SQS event source mapping: batches, partial batch failures; the queue's own redrive policy moves poison."""

    function: Function
    queue_url: str
    queue_arn: str
    batch_size: int
    sqs: Any
    processed: int = 0

    def poll_once(self) -> int:
        response = self.sqs.receive_message(
            QueueUrl=self.queue_url, MaxNumberOfMessages=min(10, self.batch_size), AttributeNames=["All"]
        )
        messages = response.get("Messages", [])
        if not messages:
            return 0
        records = [
            {"messageId": m["MessageId"], "receiptHandle": m["ReceiptHandle"], "body": m["Body"],
             "attributes": m.get("Attributes", {}), "messageAttributes": {}, "eventSource": "aws:sqs",
             "eventSourceARN": self.queue_arn, "awsRegion": "us-east-1"}
            for m in messages
        ]  # fmt: skip
        try:
            result = self.function.invoke({"Records": records})
            failed = {item["itemIdentifier"] for item in (result or {}).get("batchItemFailures", [])}
        except Exception:
            return len(records)
        for record in records:
            if record["messageId"] not in failed:
                self.sqs.delete_message(QueueUrl=self.queue_url, ReceiptHandle=record["receiptHandle"])
                self.processed += 1
        return len(records)


@dataclass
@dataclass(frozen=True)
class AsyncInvoke:
    """How Lambda handles a function error of an asynchronous invocation (an EventBridge rule's or a schedule's): the
    function's ``EventInvokeConfig`` - ``MaximumRetryAttempts`` (default 2), ``MaximumEventAgeInSeconds`` (default
    21,600) - then its ``OnFailure`` destination (an SQS queue here) gets Lambda's invocation record, or the event is
    dropped when there is none. The source's own dead-letter queue (a rule's or a schedule's ``DeadLetterConfig``)
    only takes events the source failed to deliver to Lambda, which never happens locally."""

    max_retries: int = 2
    max_age_seconds: int = 21_600
    on_failure_url: str | None = None
    function_arn: str = ""

    def record(self, event: dict[str, Any], attempts: int, error_type: str, message: str) -> str:
        """The body Lambda sends to an on-failure destination (its invocation record)."""
        return json.dumps(
            {
                "version": "1.0",
                "timestamp": datetime.now(UTC).isoformat(),
                "requestContext": {
                    "requestId": str(uuid.uuid4()),
                    "functionArn": f"{self.function_arn}:$LATEST",
                    "condition": "RetriesExhausted",
                    "approximateInvokeCount": attempts,
                },
                "requestPayload": event,
                "responseContext": {"statusCode": 200, "executedVersion": "$LATEST", "functionError": "Unhandled"},
                "responsePayload": {"errorMessage": message, "errorType": error_type},
            }
        )


@dataclass
class RuleSource:
    """An EventBridge rule whose target is a function: the runtime gives the rule an SQS target on moto's bus and
    invokes the function with each matched event (asynchronously: a function error is retried, then goes to the
    function's on-failure destination, as ``AsyncInvoke`` says)."""

    function: Function
    queue_url: str
    sqs: Any
    invoke: AsyncInvoke = field(default_factory=AsyncInvoke)
    delivered: int = 0
    failed: int = 0

    def poll_once(self) -> int:
        messages = self.sqs.receive_message(QueueUrl=self.queue_url, MaxNumberOfMessages=10).get("Messages", [])
        for message in messages:
            event = json.loads(message["Body"])
            for attempt in range(self.invoke.max_retries + 1):
                try:
                    self.function.invoke(event)
                    self.delivered += 1
                    break
                except Exception as exc:
                    if attempt == self.invoke.max_retries:
                        self.failed += 1
                        if self.invoke.on_failure_url is not None:
                            body = self.invoke.record(event, attempt + 1, type(exc).__name__, str(exc))
                            self.sqs.send_message(QueueUrl=self.invoke.on_failure_url, MessageBody=body)
            self.sqs.delete_message(QueueUrl=self.queue_url, ReceiptHandle=message["ReceiptHandle"])
        return len(messages)


_RATE = re.compile(r"^rate\((\d+) (minute|minutes|hour|hours|day|days)\)$")


@dataclass
class _ScheduledRun:
    event: dict[str, Any]
    scheduled_at: float  # the stack clock's time of the run
    execution_id: str
    attempts: int = 0
    due: float = 0.0  # real (monotonic) time of the next retry
    error: str = ""
    error_type: str = ""


@dataclass
class Schedule:
    """A ``rate(...)`` schedule on the stack's clock. Missed runs are never backfilled (as EventBridge): a tick after a
    jump of the clock makes one run.

    How runs are coalesced when the clock runs much faster than real time:
    - ``grid=None`` (ticked by the stack's schedule thread): at most one run per ``min_real_seconds`` of real time, so
      how many runs a simulation gets depends on the machine's speed;
    - ``grid=(stride, offset)`` (ticked when the simulated clock is set, ``LocalStack.schedule_on_grid``): a run at
      the first tick at or after each instant ``offset + k * max(stride, every)``: the runs are a function of the
      simulated times the clock is set to, and nothing else (D185).

    The scheduler invokes the function asynchronously: a run whose function fails is retried as the function's
    ``EventInvokeConfig`` says (``AsyncInvoke``; the age on the stack's clock), with exponential backoff in real time,
    then goes to the function's on-failure destination (Lambda's invocation record), or is dropped when there is none.
    The schedule's ``RetryPolicy`` and ``DeadLetterConfig`` are for invocations the scheduler could not make at all
    (throttling, permissions), which never happens locally. Every failure is counted and its traceback is in the
    stack's log.
    """

    function: Function
    every_seconds: int
    payload: str
    clock: Clock
    min_real_seconds: float = 2.0
    invoke: AsyncInvoke = field(default_factory=AsyncInvoke)
    sqs: Any = None
    monotonic: Callable[[], float] = time.monotonic
    next_fire: float = 0.0
    fired: int = 0
    failures: int = 0  # failed attempts (first tries and retries)
    dead_lettered: int = 0
    dropped: int = 0
    pending: list[_ScheduledRun] = field(default_factory=list)  # runs waiting for a retry
    attempts: int = 0  # invocations made (first tries and retries): the stack is idle only when this stands still
    grid: tuple[int, int] | None = None  # (stride, offset): fire on the simulated clock's grid (see above)
    _last_real: float | None = None

    def _next(self, now: float) -> float:
        """When the run after one at ``now`` is due."""
        if self.grid is None:
            return now + self.every_seconds
        stride, offset = max(self.grid[0], self.every_seconds), self.grid[1]
        return now - (now - offset) % stride + stride

    def arm(self) -> None:
        """The next run is due ``every_seconds`` (or the next grid instant) from the clock's time now."""
        self.next_fire = self._next(self.clock.now())

    def due(self) -> bool:
        """Whether :meth:`tick` would do anything now (arm, run or retry); read without the stack's lock, so a retry
        that falls due meanwhile waits for the next tick (or the schedule thread's next retry pass)."""
        now, real = self.clock.now(), self.monotonic()
        return self._unarmed(now) or now >= self.next_fire or any(run.due <= real for run in list(self.pending))

    def _unarmed(self, now: float) -> bool:
        """The first tick, or the clock was set back: the tick arms the schedule instead of running it."""
        return self.next_fire == 0.0 or now < self.next_fire - self.every_seconds

    def tick(self) -> None:
        self.retry_due()
        now = self.clock.now()
        if self._unarmed(now):
            self.arm()
            return
        real = self.monotonic()
        if now < self.next_fire:
            return
        if self.grid is None and self._last_real is not None and real - self._last_real < self.min_real_seconds:
            return
        self.next_fire = self._next(now)
        self._last_real = real
        stamp = datetime.fromtimestamp(now, tz=UTC).strftime("%Y-%m-%dT%H:%M:%SZ")
        event = json.loads(self.payload.replace("<aws.scheduler.scheduled-time>", stamp) or "{}")
        self.fired += 1
        self._attempt(_ScheduledRun(event, now, f"{self.function.name}-{self.fired}"))

    def _attempt(self, run: _ScheduledRun) -> None:
        self.attempts += 1
        try:
            self.function.invoke(run.event)
        except Exception as exc:  # the traceback is in the stack's log (Function.invoke)
            self.failures += 1
            run.attempts += 1
            run.error, run.error_type = str(exc), type(exc).__name__
            expired = self.clock.now() - run.scheduled_at > self.invoke.max_age_seconds
            if run.attempts > self.invoke.max_retries or expired:
                self._give_up(run)
                return
            run.due = self.monotonic() + min(0.1 * 2 ** (run.attempts - 1), 5.0)
            self.pending.append(run)

    def retry_due(self) -> None:
        real = self.monotonic()
        due = [run for run in self.pending if run.due <= real]
        self.pending = [run for run in self.pending if run.due > real]
        for run in due:
            self._attempt(run)

    def _give_up(self, run: _ScheduledRun) -> None:
        if self.invoke.on_failure_url is None:
            self.dropped += 1
            return
        body = self.invoke.record(run.event, run.attempts, run.error_type, run.error)
        self.sqs.send_message(QueueUrl=self.invoke.on_failure_url, MessageBody=body)
        self.dead_lettered += 1


def parse_rate(expression: str) -> int:
    match = _RATE.match(expression.strip())
    if match is None:
        raise ValueError(f"only rate(...) schedules run locally, got {expression!r}")
    amount, unit = int(match.group(1)), match.group(2)
    return amount * {"minute": 60, "hour": 3600, "day": 86_400}[unit.rstrip("s")]


@dataclass
class LocalSettings:
    livekit_keys: dict[str, str]
    usage_client: str
    usage_secret: str
    stripe_secret: str
    parameters: dict[str, str] = field(default_factory=dict)
    # real Stripe test mode (``STRIPE_API_KEY=sk_test_...``); unset: the Stripe stand-in (kilo_dev.stripe_standin)
    stripe_api_key: str | None = None

    @classmethod
    def from_env(cls) -> LocalSettings:
        return cls(
            livekit_keys={
                os.environ.get("KILO_LOCAL_LIVEKIT_API_KEY", "APIlocaldev"): os.environ.get(
                    "KILO_LOCAL_LIVEKIT_API_SECRET", "local-dev-livekit-secret-0123456789abcdef"
                )
            },
            usage_client=os.environ.get("KILO_LOCAL_USAGE_CLIENT", "kilo-app"),
            usage_secret=os.environ.get("KILO_LOCAL_USAGE_SECRET", "local-dev-usage-secret"),
            stripe_secret=os.environ.get("KILO_LOCAL_STRIPE_WEBHOOK_SECRET", "whsec_local_dev"),
            stripe_api_key=os.environ.get("STRIPE_API_KEY") or None,
        )


def forget_handler_caches() -> None:
    """Handlers keep their settings and AWS clients (functools caches in ``kilo_*.settings`` / ``.dependencies``),
    as in Lambda. A stack started after another one in the same process (a test worker running two e2e modules)
    clears them, so its handlers reach its own moto server rather than the stopped one."""
    for name, module in list(sys.modules.items()):
        if name.startswith("kilo_") and name.rsplit(".", 1)[-1] in ("settings", "dependencies"):
            for value in list(vars(module).values()):
                if callable(getattr(value, "cache_clear", None)):
                    value.cache_clear()


class LocalStack:
    """The local runtime. ``autopoll=False`` starts no event-source or schedule threads: the caller drives them with
    :meth:`poll_once` and :meth:`tick_schedules` (tests that need each step in their hands).

    Run one stack of the project's template per process: its handlers build their AWS clients once and keep them, as
    in Lambda, so a second stack in the same process would find them pointing at the first one's moto server."""

    def __init__(
        self,
        settings: LocalSettings,
        template_path: Path = TEMPLATE_PATH,
        log: Callable[[str], None] = print,
        log_path: Path | None = None,
        *,
        autopoll: bool = True,
        watch_interval: float = 0.25,
        crypto: bool = False,
        schedule_grid: tuple[int, int] | None = None,
    ):
        self.settings = settings
        self.log_path = log_path or Path(template_path).parent / ".demo" / "local-stack.log"
        self._log_file: Any = None
        self._terminal: Any = None
        self.template_path = template_path
        self.log = log
        self.autopoll = autopoll
        self.watch_interval = watch_interval
        self.schedule_grid = schedule_grid  # the schedules' grid on a simulated clock (``schedule_on_grid``)
        self.crypto = crypto  # start anvil, the Solana and exchange stand-ins, and point the crypto function at them
        self.chains: Any = None  # kilo_dev.crypto_local.LocalChains when ``crypto``
        self.clock = Clock()
        self.moto = MotoServer(self.log_path.with_name("moto.log"))
        self.template: Template | None = None
        self.gateway: Gateway | None = None
        self.functions: dict[str, Function] = {}
        self.streams: list[StreamSource] = []
        self.queues: list[QueueSource] = []
        self.rules: list[RuleSource] = []
        self.schedules: list[Schedule] = []
        self.failure: str | None = None  # why the stack stopped on its own (a component died)
        self.stripe: Any = None  # the Stripe stand-in (StripeStandin) when no real test-mode key is configured
        self.issuer: LocalIssuer | None = None  # the account API's local JWT issuer
        self._stop = threading.Event()
        self._threads: list[threading.Thread] = []
        self._saved_env: dict[str, str | None] = {}
        self.clients: dict[str, Any] = {}
        self._busy = threading.Lock()
        self._fail_lock = threading.Lock()
        self._failing = False
        self._failed = threading.Event()
        self._halted = threading.Lock()
        self._stopped: set[str] = set()  # the steps of ``_halt`` done (a second halt does not repeat them)
        self._left: list[str] = []  # what a halt from another thread did not stop
        self.left: list[str] = []  # what the last :meth:`stop` did not stop in time, named
        self._watchdog: threading.Thread | None = None

    # --- lifecycle ---------------------------------------------------------------------------------------------
    def start(self) -> LocalStack:
        try:
            self._start()
        except BaseException:
            self.stop()
            raise
        return self

    def _setenv(self, name: str, value: str) -> None:
        if name not in self._saved_env:
            self._saved_env[name] = os.environ.get(name)
        os.environ[name] = value

    def _start(self) -> None:
        import boto3  # noqa: PLC0415
        from botocore.config import Config  # noqa: PLC0415

        global _OUTPUT  # noqa: PLW0603 - one stack per process owns sys.stdout while it runs
        warnings.filterwarnings("ignore", message="No application metrics to publish")
        self.log_path.parent.mkdir(parents=True, exist_ok=True)
        self._log_file = self.log_path.open("w", encoding="utf-8")
        self._terminal = sys.stdout
        if _OUTPUT is None:
            _OUTPUT = HandlerOutput(sys.stdout, self._log_file)
        else:
            _OUTPUT.terminal, _OUTPUT.log_file = sys.stdout, self._log_file
        sys.stdout = _OUTPUT
        self.moto.start()
        self.log(f"moto server (pid {self.moto.pid}) on 127.0.0.1:{self.moto.port}; handler logs in {self.log_path}")
        for name, value in aws_environment(self.moto.url).items():
            self._setenv(name, value)
        self._setenv("AWS_SESSION_TOKEN", "local")
        self.issuer = LocalIssuer().start()  # the account API's tokens (the template's authorizer points here)
        self.log(f"JWT issuer on {self.issuer.url} (audience {self.issuer.audience})")
        issuer_parameters = {"AccountApiJwtIssuer": self.issuer.url, "AccountApiJwtAudience": self.issuer.audience}
        crypto_parameters = self._start_chains() if self.crypto else {}
        self.template = Template(
            self.template_path,
            parameters={"Stage": "local", **issuer_parameters, **crypto_parameters, **self.settings.parameters},
        )
        config = Config(**STACK_CLIENT_CONFIG)
        services = ("dynamodb", "dynamodbstreams", "events", "sns", "sqs", "secretsmanager", "sesv2")
        self.clients = {name: boto3.client(name, config=config) for name in services}  # type: ignore[call-overload]
        provision(self.template, self.clients)
        self.issuer.signed_in = self.store_membership  # a token names a stored membership (D208)
        self._start_stripe()
        self._create_secrets()
        self._load_functions()
        self.gateway = Gateway(self._routes(), self._authorizers())
        self._spawn(processes.serving(self.gateway), "gateway")
        if self.stripe is not None:  # the stand-in's events go to our Stripe webhook route, signed with its secret
            self.stripe.webhook_url = f"{self.gateway.url}/webhooks/stripe"
        if self.schedule_grid is not None:
            self.schedule_on_grid(self.schedule_grid)
        if self.autopoll:
            self._spawn(self._guarded(self._poll_loop, "the event-source poller"), "event-sources")
            self._spawn(self._guarded(self._schedule_loop, "the schedule runner"), "schedules")
        self._watchdog = threading.Thread(target=self._watch, name="watchdog", daemon=True)
        self._watchdog.start()
        self.log(f"gateway on {self.gateway.url}; {len(self.functions)} functions from template.yaml")

    def _spawn(self, target: Callable[[], None], name: str) -> None:
        thread = threading.Thread(target=target, name=name, daemon=True)
        thread.start()
        self._threads.append(thread)

    def stop(self, seconds: float | None = None) -> list[str]:
        """Stop everything the stack started, every step bounded and all within ``seconds``: first the threads that
        call the servers (event sources, schedules, the watchdog: each sees the stop between two calls), then the
        gateway, then the servers and processes, each by PID. Returns what did not stop in time, named (empty when
        everything stopped): it is left to its daemon thread rather than waited for without end (D264).
        ``seconds`` defaults to ``STOP_SECONDS``."""
        shutdown = processes.Shutdown(STOP_SECONDS if seconds is None else seconds)
        self._stop.set()
        self.clock.on_set = None  # a clock set after the stop runs no schedule
        # the pollers and the schedule runner before the servers they call: a poller whose moto server is gone would
        # sit in botocore's retries; one busy in a handler finishes it against servers still up, or is left
        callers = shutdown.within(POLLER_STOP_SECONDS)  # one budget for them all
        for thread in [*(t for t in self._threads if t.name != "gateway"), self._watchdog]:
            if thread is not None:
                callers.join(thread, f"the {thread.name} thread")
        if self._halted.acquire(timeout=shutdown.remaining()):  # a component's death may be halting it meanwhile
            try:
                self._halt(shutdown)
            finally:
                self._halted.release()
        else:
            shutdown.left.append("the servers' stop (still under way in another thread)")
        for thread in self._threads:
            if thread.name == "gateway":
                shutdown.join(thread, "the gateway thread", SERVER_STOP_SECONDS)
        if self._terminal is not None:
            sys.stdout = self._terminal
            self._terminal = None
            if _OUTPUT is not None:
                _OUTPUT.log_file = None  # handlers' output reaches the terminal again
        if self._log_file is not None:
            self._log_file.close()
            self._log_file = None
        for name, value in self._saved_env.items():
            if value is None:
                os.environ.pop(name, None)
            else:
                os.environ[name] = value
        self._saved_env.clear()
        self.left = self._left + shutdown.left
        return self.left

    def _halt(self, shutdown: processes.Shutdown) -> None:
        """Stop serving, then stop the servers and processes (from any thread but the gateway's own; the caller holds
        ``_halted``), each step bounded by ``shutdown``; a step already done is not made again."""
        gateway = self.gateway

        def stop_gateway() -> None:
            if gateway is not None:
                gateway.shutdown()
                gateway.server_close()

        steps: list[tuple[str, Any, float]] = [
            ("the gateway", gateway and stop_gateway, SERVER_STOP_SECONDS),
            (f"the moto server (pid {self.moto.pid})", self.moto.pid and self.moto.stop, PROCESS_STOP_SECONDS),
            ("the Stripe stand-in", self.stripe and self.stripe.stop, SERVER_STOP_SECONDS),
            ("the JWT issuer", self.issuer and self.issuer.stop, SERVER_STOP_SECONDS),
            ("anvil and the Solana and exchange stand-ins", self.chains and self.chains.stop, PROCESS_STOP_SECONDS),
        ]
        for name, action, seconds in steps:
            if action and name not in self._stopped and shutdown.step(name, action, seconds):
                self._stopped.add(name)
        self.stripe = self.issuer = self.chains = None

    def __enter__(self) -> LocalStack:
        return self.start()

    def __exit__(self, *_: object) -> None:
        self.stop()

    # --- supervision ----------------------------------------------------------------------------------------------
    def check(self) -> None:
        """Raise :class:`StackError` if a component died (the stack has then stopped); in the main thread, also the
        checkpoint of an interrupt whose own raise was lost (``processes.raise_if_interrupted``, D439)."""
        processes.raise_if_interrupted()
        if self.failure is not None:
            raise StackError(self.failure)

    def _fail(self, reason: str) -> None:
        """Stop the stack because a component died; ``failure`` is set once everything has stopped."""
        with self._fail_lock:
            if self._failing or self._stop.is_set():
                return
            self._failing = True
        self._stop.set()
        with self._halted:
            shutdown = processes.Shutdown(STOP_SECONDS)
            self._halt(shutdown)
            self._left += shutdown.left
        message = f"{reason}; the local stack has stopped"
        self.log(message)
        self.failure = message
        self._failed.set()

    def _diagnose(self, component: str, exc: BaseException) -> str:
        """A dead moto server explains most errors elsewhere: name it first (a process just killed may take a moment
        to be seen as dead after its socket closed)."""
        deadline = time.monotonic() + 1.0
        while (death := self.moto.death()) is None and time.monotonic() < deadline:
            time.sleep(0.05)
        return death or f"{component} failed: {type(exc).__name__}: {exc} (traceback in {self.log_path})"

    def _guarded(self, loop: Callable[[], None], component: str) -> Callable[[], None]:
        def run() -> None:
            try:
                loop()
            except Exception as exc:
                if self._stop.is_set():
                    return  # stopping: the moto server is going away under the loop
                if self._log_file is not None:
                    traceback.print_exc(file=self._log_file)
                self._fail(self._diagnose(component, exc))

        return run

    def _watch(self) -> None:
        """Every ``watch_interval``: is the moto server alive, is every thread of the stack still running?"""
        while not self._stop.wait(self.watch_interval):
            death = self.moto.death()
            if death is not None:
                self._fail(death)
                return
            for thread in self._threads:
                if not thread.is_alive() and not self._stop.is_set():
                    self._fail(f"the {thread.name} thread stopped unexpectedly")
                    return

    # --- wiring from the template ---------------------------------------------------------------------------------
    def _start_stripe(self) -> None:
        """The Stripe stand-in on 127.0.0.1 (a free port) unless a real test-mode key is configured; stopped by
        :meth:`stop`."""
        if self.settings.stripe_api_key is not None:
            self.log("Stripe: real test mode (STRIPE_API_KEY)")
            return
        from kilo_dev.stripe_standin import StripeStandin  # noqa: PLC0415

        self.stripe = StripeStandin(None, self.settings.stripe_secret).start()
        self.log(f"Stripe stand-in on {self.stripe.url}")

    def _start_chains(self) -> dict[str, str]:
        """anvil and the Solana and exchange stand-ins, set up (kilo_dev.crypto_local); the template parameters
        pointing the crypto function at them. Only for a stack started with ``crypto=True``."""
        from kilo_dev.crypto_local import LocalChains  # noqa: PLC0415

        self.chains = LocalChains(self.log_path.with_name("anvil.log")).start()
        self.log(f"anvil (pid {self.chains.anvil.pid}) on {self.chains.anvil.url}; Solana stand-in on "
                 f"{self.chains.solana.url}; exchange stand-in on {self.chains.exchange.url}")  # fmt: skip
        return dict(self.chains.parameters())

    def stripe_api(self) -> tuple[str, str | None]:
        """(API key, API base) the invoice close uses: the test-mode key, or the stand-in's URL."""
        if self.settings.stripe_api_key is not None:
            return self.settings.stripe_api_key, None
        assert self.stripe is not None
        return "sk_test_localStandin", self.stripe.url  # Stripe's key shape: the secret's reader checks it

    def _create_secrets(self) -> None:
        assert self.template is not None
        secrets = self.clients["secretsmanager"]
        params = self.template.parameters
        wanted = {
            "LiveKitKeysSecretName": self.settings.livekit_keys,
            "UsageClientsSecretName": {self.settings.usage_client: [self.settings.usage_secret]},
            "StripeWebhookSecretName": {"webhook_secrets": [self.settings.stripe_secret]},
            "StripeApiKeySecretName": {
                key: value for key, value in zip(("api_key", "api_base"), self.stripe_api(), strict=True) if value
            },
        }
        if self.crypto:  # the configured URLs are local (no keyed RPC URLs to keep secret)
            wanted["CryptoRpcSecretName"] = {}
        values = {params[parameter]: value for parameter, value in wanted.items() if parameter in params}
        for name, value in values.items():
            secrets.create_secret(Name=name, SecretString=json.dumps(value))

    def _load_functions(self) -> None:
        assert self.template is not None
        forget_handler_caches()
        environment: dict[str, str] = {}
        for name in self.template.of_type("AWS::Serverless::Function"):
            for key, value in self.template.function_environment(name).items():
                if key in environment and environment[key] != value and key != "POWERTOOLS_SERVICE_NAME":
                    raise RuntimeError(f"functions disagree on {key}; the local runtime shares one environment")
                environment[key] = value
        for key, value in environment.items():
            if key != "POWERTOOLS_SERVICE_NAME":
                self._setenv(key, value)
        for key, value in MOTO_CALL_BUDGET.items():
            self._setenv(key, value)
        for name in self.template.of_type("AWS::Serverless::Function"):
            handler = load_handler(self.template.function_handler(name))
            self.functions[name] = Function(name, handler)
        for name, spec in self.template.of_type("AWS::Serverless::Function").items():
            for event_name, event in (spec["Properties"].get("Events") or {}).items():
                self._wire(self.functions[name], event, event_name)

    def _routes(self) -> dict[tuple[str, str], Function]:
        assert self.template is not None
        routes = {}
        for name, spec in self.template.of_type("AWS::Serverless::Function").items():
            for event in (spec["Properties"].get("Events") or {}).values():
                if event["Type"] == "HttpApi":
                    props = event["Properties"]
                    routes[(props["Method"].upper(), props["Path"])] = self.functions[name]
        return routes

    def _authorizers(self) -> dict[tuple[str, str], Any]:
        """Per route, API Gateway's JWT authorizer as the template declares it (the API's default authorizer unless
        the route says ``Authorizer: NONE`` or names another), with the issuer and audiences resolved."""
        from kilo_dev.jwt_issuer import JwtAuthorizer  # noqa: PLC0415

        assert self.template is not None
        built: dict[tuple[str, str], Any] = {}
        cache: dict[tuple[str, str], Any] = {}
        for spec in self.template.of_type("AWS::Serverless::Function").values():
            for event in (spec["Properties"].get("Events") or {}).values():
                props = event.get("Properties") or {}
                api_ref = props.get("ApiId")
                if event["Type"] != "HttpApi" or not isinstance(api_ref, dict) or "Ref" not in api_ref:
                    continue
                auth = (self.template.resources[api_ref["Ref"]].get("Properties") or {}).get("Auth") or {}
                name = (props.get("Auth") or {}).get("Authorizer", auth.get("DefaultAuthorizer"))
                if not name or name == "NONE":
                    continue
                config = self.template.resolve(auth["Authorizers"][name]["JwtConfiguration"])
                key = (api_ref["Ref"], name)
                if key not in cache:
                    cache[key] = JwtAuthorizer(str(config["issuer"]), [str(a) for a in config["audience"]])
                built[(props["Method"].upper(), props["Path"])] = cache[key]
        return built

    def _queue_url(self, arn: str) -> str:
        return str(self.clients["sqs"].get_queue_url(QueueName=arn.rsplit(":", 1)[1])["QueueUrl"])

    def _async_invoke(self, function: Function) -> AsyncInvoke:
        """The function's ``EventInvokeConfig``: what Lambda does with its asynchronous invocations' errors."""
        assert self.template is not None
        properties = self.template.resources[function.name]["Properties"]
        config = properties.get("EventInvokeConfig") or {}
        target = (config.get("DestinationConfig") or {}).get("OnFailure") or {}
        on_failure = target.get("Destination")
        if on_failure is not None and target.get("Type", "SQS") != "SQS":
            raise RuntimeError(f"{function.name}: only an SQS on-failure destination runs locally")
        name = str(self.template.resolve(properties.get("FunctionName", function.name)))
        region = os.environ.get("AWS_DEFAULT_REGION", "us-east-1")
        return AsyncInvoke(
            max_retries=int(config.get("MaximumRetryAttempts", 2)),
            max_age_seconds=int(config.get("MaximumEventAgeInSeconds", 21_600)),
            on_failure_url=self._queue_url(str(self.template.resolve(on_failure))) if on_failure else None,
            function_arn=f"arn:aws:lambda:{region}:123456789012:function:{name}",
        )

    def _wire(self, function: Function, event: dict[str, Any], event_name: str = "Event") -> None:
        assert self.template is not None
        kind, props = event["Type"], event.get("Properties") or {}
        if kind == "DynamoDB":
            stream_arn = str(self.template.resolve(props["Stream"]))
            failure = (props.get("DestinationConfig") or {}).get("OnFailure", {}).get("Destination")
            failure_url = None
            if failure is not None:
                arn = str(self.template.resolve(failure))
                failure_url = self.clients["sqs"].get_queue_url(QueueName=arn.rsplit(":", 1)[1])["QueueUrl"]
            filters = [json.loads(f["Pattern"]) for f in (props.get("FilterCriteria") or {}).get("Filters", [])]
            reader = StreamReader(self.clients["dynamodbstreams"], stream_arn)
            self.streams.append(
                StreamSource(function, reader, stream_arn, filters, int(props.get("BatchSize", 100)),
                             int(props.get("MaximumRetryAttempts", 10_000)),
                             bool(props.get("BisectBatchOnFunctionError")), failure_url, self.clients["sqs"],
                             float(props.get("MaximumBatchingWindowInSeconds", 0)))
            )  # fmt: skip
        elif kind == "SQS":
            arn = str(self.template.resolve(props["Queue"]))
            url = self.clients["sqs"].get_queue_url(QueueName=arn.rsplit(":", 1)[1])["QueueUrl"]
            self.queues.append(QueueSource(function, url, arn, int(props.get("BatchSize", 10)), self.clients["sqs"]))
        elif kind in ("Schedule", "ScheduleV2"):
            if str(self.template.resolve(props.get("State", "ENABLED"))).upper() == "DISABLED":
                return  # a schedule the parameters turn off (e.g. an EVM chain not configured) never fires
            every = parse_rate(
                str(self.template.resolve(props["Schedule"] if kind == "Schedule" else props["ScheduleExpression"]))
            )
            payload = str(props.get("Input", "{}"))
            dead_letter = props.get("DeadLetterConfig") or {}
            if dead_letter and "Arn" not in dead_letter:
                raise RuntimeError(f"{function.name}: only a DeadLetterConfig with an Arn runs locally")
            self.schedules.append(
                Schedule(function, every, payload, self.clock, invoke=self._async_invoke(function),
                         sqs=self.clients["sqs"])
            )  # fmt: skip
        elif kind in ("EventBridgeRule", "CloudWatchEvent"):
            bus = str(self.template.resolve(props.get("EventBusName", "default")))
            rule = f"local-{function.name}-{event_name}"[:64]
            sqs, events = self.clients["sqs"], self.clients["events"]
            url = sqs.create_queue(QueueName=rule)["QueueUrl"]
            arn = sqs.get_queue_attributes(QueueUrl=url, AttributeNames=["QueueArn"])["Attributes"]["QueueArn"]
            events.put_rule(
                Name=rule, EventBusName=bus, EventPattern=json.dumps(self.template.resolve(props["Pattern"]))
            )
            events.put_targets(Rule=rule, EventBusName=bus, Targets=[{"Id": "local", "Arn": arn}])
            self.rules.append(RuleSource(function, url, sqs, self._async_invoke(function)))
        elif kind != "HttpApi":
            raise RuntimeError(f"event source type {kind} does not run locally yet")

    # --- loops ------------------------------------------------------------------------------------------------
    def poll_once(self, flush: bool = False) -> int:
        """One round over every event source (``flush``: do not wait for a batching window); records handed on."""
        self.check()
        with self._busy:
            moved = sum(source.poll_once(flush=flush) for source in self.streams)
            moved += sum(source.poll_once() for source in self.queues)
            moved += sum(source.poll_once() for source in self.rules)
        return moved

    def tick_schedules(self) -> None:
        """One tick of every schedule (a run if one is due), never while the event sources are polled: a poll that
        finds nothing new then means that no scheduled run is under way either. A tick at which no schedule is due
        returns without waiting for a poll round to end (D445: the demo sets the clock at every simulated step)."""
        self.check()
        if not any(schedule.due() for schedule in self.schedules):
            return
        with self._busy:
            for schedule in self.schedules:
                schedule.tick()

    def schedule_on_grid(self, grid: tuple[int, int] | None) -> None:
        """``grid=(stride, offset)``: from now on, while the clock is simulated, schedules fire when the clock is set
        (in the thread that sets it), at the first time set at or after each grid instant (``Schedule``): how many
        runs a simulation gets, and at which simulated times, no longer depends on real time. ``None``: back to the
        schedule thread (each schedule re-armed from the clock's time now)."""
        with self._busy:
            for schedule in self.schedules:
                schedule.grid = grid
                schedule.arm()
        self.clock.on_set = self.tick_schedules if grid is not None else None

    def _poll_loop(self) -> None:
        while not self._stop.is_set():
            if not self.poll_once():
                self._stop.wait(0.2)

    def _schedule_loop(self) -> None:
        while not self._stop.is_set():
            if self.clock.on_set is None or not self.clock.simulated:
                self.tick_schedules()
            else:  # on the grid: runs fire when the clock is set; only the retries of failed runs are due here
                self.check()
                with self._busy:
                    for schedule in self.schedules:
                        schedule.retry_due()
            self._stop.wait(0.2)

    def _schedule_activity(self) -> tuple[int, bool]:
        """(invocations the schedules have made, whether a failed run waits for its retry)."""
        return sum(s.attempts for s in self.schedules), any(s.pending for s in self.schedules)

    def wait_idle(self, timeout: float = 300.0, quiet_polls: int = 3) -> None:
        """Until the event sources found nothing new several times in a row and no scheduled run was made or is
        waiting for a retry meanwhile (everything sent has been handled; a scheduled run under way holds the poll
        until it has ended). Raises :class:`StackError` at once if a component dies meanwhile, ``TimeoutError``
        naming what was still busy after ``timeout``."""
        deadline = time.monotonic() + timeout
        quiet = 0
        busy = "nothing polled yet"
        runs, _ = self._schedule_activity()
        while quiet < quiet_polls:
            if time.monotonic() > deadline:
                raise TimeoutError(f"the local stack was not idle after {timeout:.0f} s: {busy}")
            try:
                moved = self.poll_once(flush=True)
            except StackError:
                raise
            except Exception as exc:
                self._fail(self._diagnose("the event-source poller", exc))
                self._failed.wait(timeout=30)  # another thread may be stopping the stack for the same reason
                self.check()
                raise
            ran, retrying = self._schedule_activity()
            scheduled, runs = ran != runs or retrying, ran
            elsewhere = self._busy_elsewhere()
            if moved:
                busy = f"its event sources still handed on {moved} records in the last poll"
            elif scheduled:
                busy = "scheduled runs were still being made" + (" (a failed run waits for its retry)" * retrying)
            elif elsewhere:
                busy = elsewhere
            quiet = 0 if moved or scheduled or elsewhere else quiet + 1
            if moved == 0:
                time.sleep(IDLE_RECHECK_SECONDS)

    def _busy_elsewhere(self) -> str:
        """What the event sources cannot see and still writes: a gateway request being answered (a Stripe webhook, a
        dashboard call), the Stripe stand-in's webhooks not yet delivered (D444); empty when nothing."""
        answering = self.gateway.in_flight if self.gateway is not None else 0
        if answering:
            return f"the gateway is still answering {answering} request{'s' * (answering > 1)}"
        pending = self.stripe.pending() if self.stripe is not None else 0
        if pending:
            return f"the Stripe stand-in still has {pending} webhook{'s' * (pending > 1)} to deliver"
        return ""

    def store_membership(self, user: str, account: str, role: str) -> None:
        """``user`` an active ``role`` of ``account`` in the members table, as the local issuer signs for it (Cognito's
        pre-token trigger gives claims only for a stored membership, and the account API checks admins' and owners'
        writes against it: D202, D208). A stored active membership in that role is left as it is."""
        from kilo_account_api import items as member_items  # noqa: PLC0415
        from kilo_account_api.model import Member  # noqa: PLC0415
        from kilo_billing.auth import Role  # noqa: PLC0415

        if role.upper() not in Role.__members__:
            return  # the authorizer's own tests mint odd roles: no membership to store
        assert self.template is not None
        table = self.template.physical_name("MembersTable")
        key = member_items.member_key(account, user)
        found = self.clients["dynamodb"].get_item(TableName=table, Key=key, ConsistentRead=True).get("Item")
        wanted = Member(account, user, "", Role[role.upper()], datetime.now(UTC))
        if found is not None:
            stored = member_items.member_from_item(found)
            if stored.active and stored.role is wanted.role:
                return
        self.clients["dynamodb"].put_item(TableName=table, Item=member_items.member_to_item(wanted))

    def sign_in(self, account: str, role: str = "owner", user: str | None = None) -> str:
        """A token of the local issuer for ``user`` acting for ``account`` as ``role`` (the account API's Bearer)."""
        assert self.issuer is not None
        return self.issuer.mint(user or f"{role}@{account}", account, role)

    @property
    def url(self) -> str:
        assert self.gateway is not None
        return self.gateway.url
