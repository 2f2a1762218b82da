"""The local runtime: runs the project's real Lambda handlers the way AWS would, from ``template.yaml`` alone.

- AWS from a moto server process on 127.0.0.1 (a free port), resources created from the template's own definitions;
- an HTTP gateway on 127.0.0.1 turning requests into API Gateway HTTP API v2.0 events for the template's routes;
- event-source pollers with Lambda's semantics: DynamoDB streams (filter criteria, batch size, partial batch failures,
  retries, bisect, on-failure destination) and SQS queues (batch size, partial failures, the queue's redrive policy);
- schedules (``rate(...)``) on a clock that the demo can drive faster than real time.
Adding a function and its event sources to ``template.yaml`` is all it takes for it to run here.
Every process and server is started by this module and stopped by it, by PID, also on errors and Ctrl-C.
"""

from __future__ import annotations

import base64
import contextlib
import importlib
import json
import os
import re
import socket
import subprocess
import sys
import threading
import time
import traceback
import urllib.request
import warnings
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import UTC, datetime
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

from kilo_dev.apigw import http_api_event
from kilo_dev.patterns import matches
from kilo_dev.streams import StreamReader
from kilo_dev.template import TEMPLATE_PATH, Template, provision

Handler = Callable[[dict[str, Any], Any], Any]


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
    """Real time, or a simulated time the demo sets (schedules fire on it)."""

    def __init__(self) -> None:
        self._simulated: float | None = None
        self._lock = threading.Lock()

    def set(self, epoch_seconds: float) -> None:
        with self._lock:
            if self._simulated is None or epoch_seconds > self._simulated:
                self._simulated = epoch_seconds

    def now(self) -> float:
        with self._lock:
            return self._simulated if self._simulated is not None else time.time()

    def release(self) -> None:
        """Back to real time (after a simulation that ended at 'now')."""
        with self._lock:
            self._simulated = None


class HandlerOutput:
    """``sys.stdout`` while the stack runs: what handlers print (JSON logs, EMF metrics) goes to the stack's log file,
    as it would go to CloudWatch; everything else still reaches the terminal."""

    def __init__(self, terminal: Any, log_file: Any) -> None:
        self.terminal = terminal
        self.log_file = log_file
        self.local = threading.local()

    def _target(self) -> Any:
        return self.log_file if getattr(self.local, "in_handler", False) else self.terminal

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


class MotoServer:
    """``moto_server`` in its own process on 127.0.0.1; stopped by PID."""

    def __init__(self, log_path: Path | None = None) -> None:
        self.port = free_port()
        self.process: subprocess.Popen[bytes] | None = None
        self.log_path = log_path

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def start(self, timeout: float = 30.0) -> None:
        output: Any = subprocess.DEVNULL
        if self.log_path is not None:
            self.log_path.parent.mkdir(parents=True, exist_ok=True)
            output = self.log_path.open("wb")
        self.process = subprocess.Popen(  # noqa: S603 - our own interpreter and moto
            [sys.executable, "-m", "moto.server", "-H", "127.0.0.1", "-p", str(self.port)],
            stdout=output,
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )
        if output is not subprocess.DEVNULL:
            output.close()  # the child has its own handle
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.process.poll() is not None:
                raise RuntimeError(f"moto server exited with {self.process.returncode}")
            try:
                with urllib.request.urlopen(f"{self.url}/moto-api/data.json", timeout=1):  # noqa: S310 - loopback
                    return
            except OSError:
                time.sleep(0.1)
        self.stop()
        raise RuntimeError("moto server did not start in time")

    def stop(self) -> None:
        if self.process is None or self.process.poll() is not None:
            return
        self.process.terminate()
        try:
            self.process.wait(timeout=10)
        except subprocess.TimeoutExpired:
            self.process.kill()
            self.process.wait(timeout=10)


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


def load_handler(dotted: str) -> Handler:
    module, _, attribute = dotted.rpartition(".")
    handler: Handler = getattr(importlib.import_module(module), attribute)
    return handler


class Gateway(ThreadingHTTPServer):
    """API Gateway HTTP API on 127.0.0.1: routes from the template, payload v2.0 events, the handler's response."""

    daemon_threads = True

    def __init__(self, routes: dict[tuple[str, str], Function]) -> None:
        super().__init__(("127.0.0.1", free_port()), _GatewayHandler)
        self.routes = routes
        self.requests = 0

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.server_address[1]}"


class _GatewayHandler(BaseHTTPRequestHandler):
    server: Gateway

    def log_message(self, *args: Any) -> None:
        return

    def _handle(self) -> None:
        path, _, query = self.path.partition("?")
        function = self.server.routes.get((self.command, path))
        length = int(self.headers.get("Content-Length") or 0)
        body = self.rfile.read(length) if length else b""
        self.server.requests += 1
        if function is None:
            self._send(404, {"content-type": "application/json"}, b'{"message":"Not Found"}')
            return
        event = http_api_event(self.command, path, body, list(self.headers.items()), query=query)
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
class RuleSource:
    """An EventBridge rule whose target is a function: the runtime gives the rule an SQS target on moto's bus and
    invokes the function with each matched event (asynchronous invocation: retried twice, then the target's
    dead-letter queue if the template names one)."""

    function: Function
    queue_url: str
    sqs: Any
    dead_letter_url: str | None = None
    delivered: int = 0
    failed: int = 0

    def poll_once(self) -> int:
        messages = self.sqs.receive_message(QueueUrl=self.queue_url, MaxNumberOfMessages=10).get("Messages", [])
        for message in messages:
            event = json.loads(message["Body"])
            for attempt in range(3):
                try:
                    self.function.invoke(event)
                    self.delivered += 1
                    break
                except Exception:  # an async invocation is retried twice
                    if attempt == 2:
                        self.failed += 1
                        if self.dead_letter_url is not None:
                            self.sqs.send_message(QueueUrl=self.dead_letter_url, MessageBody=message["Body"])
            self.sqs.delete_message(QueueUrl=self.queue_url, ReceiptHandle=message["ReceiptHandle"])
        return len(messages)


_RATE = re.compile(r"^rate\((\d+) (minute|minutes|hour|hours|day|days)\)$")


@dataclass
class Schedule:
    """A ``rate(...)`` schedule on the stack's clock. When the clock runs much faster than real time, runs are
    coalesced (at most one per ``min_real_seconds``), as EventBridge never backfills missed runs."""

    function: Function
    every_seconds: int
    payload: str
    clock: Clock
    min_real_seconds: float = 2.0
    next_fire: float = 0.0
    fired: int = 0
    _last_real: float = 0.0

    def tick(self) -> None:
        now = self.clock.now()
        if self.next_fire == 0.0 or now < self.next_fire - self.every_seconds:  # first tick, or the clock was set back
            self.next_fire = now + self.every_seconds
            return
        if now < self.next_fire or time.monotonic() - self._last_real < self.min_real_seconds:
            return
        self.next_fire = now + self.every_seconds
        self._last_real = time.monotonic()
        stamp = datetime.fromtimestamp(now, tz=UTC).strftime("%Y-%m-%dT%H:%M:%SZ")
        event = json.loads(self.payload.replace("<aws.scheduler.scheduled-time>", stamp) or "{}")
        self.fired += 1
        with contextlib.suppress(Exception):  # a failed scheduled run is retried at the next tick
            self.function.invoke(event)


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
        )


class LocalStack:
    def __init__(
        self,
        settings: LocalSettings,
        template_path: Path = TEMPLATE_PATH,
        log: Callable[[str], None] = print,
        log_path: Path | None = None,
    ):
        self.settings = settings
        self.log_path = log_path or Path(template_path).parent / ".demo" / "local-stack.log"
        self._log_file: Any = None
        self._terminal: Any = None
        self.template_path = template_path
        self.log = log
        self.clock = Clock()
        self.moto = MotoServer(self.log_path.with_name("moto.log"))
        self.template: Template | None = None
        self.gateway: Gateway | None = None
        self.functions: dict[str, Function] = {}
        self.streams: list[StreamSource] = []
        self.queues: list[QueueSource] = []
        self.rules: list[RuleSource] = []
        self.schedules: list[Schedule] = []
        self._stop = threading.Event()
        self._threads: list[threading.Thread] = []
        self._saved_env: dict[str, str | None] = {}
        self.clients: dict[str, Any] = {}
        self._busy = threading.Lock()

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

        global _OUTPUT  # noqa: PLW0603 - one stack per process owns sys.stdout while it runs
        warnings.filterwarnings("ignore", message="No application metrics to publish")
        self.log_path.parent.mkdir(parents=True, exist_ok=True)
        self._log_file = self.log_path.open("w", encoding="utf-8")
        self._terminal = sys.stdout
        _OUTPUT = HandlerOutput(sys.stdout, self._log_file)
        sys.stdout = _OUTPUT
        self.log(f"starting moto server on 127.0.0.1:{self.moto.port}; handler logs in {self.log_path}")
        self.moto.start()
        for name, value in {
            "AWS_ENDPOINT_URL": self.moto.url,
            "AWS_ACCESS_KEY_ID": "local",
            "AWS_SECRET_ACCESS_KEY": "local",
            "AWS_DEFAULT_REGION": "us-east-1",
            "AWS_REGION": "us-east-1",
        }.items():
            self._setenv(name, value)
        self._setenv("AWS_SESSION_TOKEN", "local")
        self.template = Template(self.template_path, parameters={"Stage": "local", **self.settings.parameters})
        services = ("dynamodb", "dynamodbstreams", "events", "sns", "sqs", "secretsmanager")
        self.clients = {name: boto3.client(name) for name in services}  # type: ignore[call-overload]
        provision(self.template, self.clients)
        self._create_secrets()
        self._load_functions()
        self.gateway = Gateway(self._routes())
        self._spawn(self.gateway.serve_forever, "gateway")
        self._spawn(self._poll_loop, "event-sources")
        self._spawn(self._schedule_loop, "schedules")
        self.log(f"gateway on {self.gateway.url}; {len(self.functions)} functions from template.yaml")

    def _spawn(self, target: Callable[[], None], name: str) -> None:
        thread = threading.Thread(target=target, name=name, daemon=True)
        thread.start()
        self._threads.append(thread)

    def stop(self) -> None:
        self._stop.set()
        if self.gateway is not None:
            self.gateway.shutdown()
            self.gateway.server_close()
        for thread in self._threads:
            thread.join(timeout=10)
        self.moto.stop()
        global _OUTPUT  # noqa: PLW0603
        if self._terminal is not None:
            sys.stdout = self._terminal
            self._terminal = None
            _OUTPUT = None
        if self._log_file is not None:
            self._log_file.close()
            self._log_file = None
        for name, value in self._saved_env.items():
            if value is None:
                os.environ.pop(name, None)
            else:
                os.environ[name] = value
        self._saved_env.clear()

    def __enter__(self) -> LocalStack:
        return self.start()

    def __exit__(self, *_: object) -> None:
        self.stop()

    # --- wiring from the template ---------------------------------------------------------------------------------
    def _create_secrets(self) -> None:
        assert self.template is not None
        secrets = self.clients["secretsmanager"]
        params = self.template.parameters
        wanted = {
            "LiveKitKeysSecretName": self.settings.livekit_keys,
            "UsageClientsSecretName": {self.settings.usage_client: [self.settings.usage_secret]},
            "StripeWebhookSecretName": {"webhook_secrets": [self.settings.stripe_secret]},
        }
        values = {params[parameter]: value for parameter, value in wanted.items() if parameter in params}
        for name, value in values.items():
            secrets.create_secret(Name=name, SecretString=json.dumps(value))

    def _load_functions(self) -> None:
        assert self.template is not None
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

    def _queue_url(self, arn: str) -> str:
        return str(self.clients["sqs"].get_queue_url(QueueName=arn.rsplit(":", 1)[1])["QueueUrl"])

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
            every = parse_rate(
                str(self.template.resolve(props["Schedule"] if kind == "Schedule" else props["ScheduleExpression"]))
            )
            payload = str(props.get("Input", "{}"))
            self.schedules.append(Schedule(function, every, payload, self.clock))
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
            dead_letter = (props.get("DeadLetterConfig") or {}).get("Arn")
            dlq = self._queue_url(str(self.template.resolve(dead_letter))) if dead_letter is not None else None
            self.rules.append(RuleSource(function, url, sqs, dlq))
        elif kind != "HttpApi":
            raise RuntimeError(f"event source type {kind} does not run locally yet")

    # --- loops ------------------------------------------------------------------------------------------------
    def _poll_loop(self) -> None:
        while not self._stop.is_set():
            with self._busy:
                moved = sum(source.poll_once() for source in self.streams)
                moved += sum(source.poll_once() for source in self.queues)
                moved += sum(source.poll_once() for source in self.rules)
            if not moved:
                self._stop.wait(0.2)

    def _schedule_loop(self) -> None:
        while not self._stop.is_set():
            for schedule in self.schedules:
                schedule.tick()
            self._stop.wait(0.2)

    def wait_idle(self, timeout: float = 300.0, quiet_polls: int = 3) -> None:
        """Until the event sources found nothing new several times in a row (everything sent has been handled)."""
        deadline = time.monotonic() + timeout
        quiet = 0
        while quiet < quiet_polls:
            if time.monotonic() > deadline:
                raise TimeoutError("the local stack did not catch up in time")
            with self._busy:
                moved = sum(source.poll_once(flush=True) for source in self.streams)
                moved += sum(source.poll_once() for source in self.queues)
                moved += sum(source.poll_once() for source in self.rules)
            quiet = quiet + 1 if moved == 0 else 0
            if moved == 0:
                time.sleep(0.2)

    @property
    def url(self) -> str:
        assert self.gateway is not None
        return self.gateway.url
