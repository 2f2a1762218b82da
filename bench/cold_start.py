"""Cold start of every Lambda handler in template.yaml, beside the floor, as whole fresh processes.

- **What is measured**: a fresh ``python -S`` process that imports the handler module from a Lambda-shaped package and
  calls its ``lambda_handler`` once with a representative first request, so the handler's dependencies (settings,
  boto3 clients, secrets) are built and its AWS calls really go out: SigV4, parameter validation and response parsing
  run in the process, against a canned AWS endpoint on 127.0.0.1 (``bench/aws_stub.py``, ``AWS_ENDPOINT_URL``).
- **The floor**, measured in the same run and interleaved with the handlers: python + boto3 + Powertools Logger and
  Metrics + one DynamoDB client, the same kind of first request (an API Gateway event whose JSON body is parsed, one
  ``PutItem`` over the same HTTP).
- **The floors with the required libraries** (``PARTS``), measured the same way: the floor plus what the project
  requires on some paths (a pydantic-settings model read, a pydantic body model, Powertools' HTTP resolver with or
  without validation, its ``BatchProcessor``, the Stripe SDK verifying a signature). A part counts for a handler when
  its first request loads the part's module; each handler is also reported against the floor with exactly its parts,
  so "impossible with the required libraries" is a measured row (docs/decisions.md D108).
- **Figures**: the child's CPU time (user + system, ``os.wait4``'s rusage of that child alone: robust on a shared
  machine, unlike wall time) as the median of N runs, the wall time's median beside it, the ratios to the floor's
  and to its own floor's median CPU, and the child's peak RSS against the function's ``MemorySize``: ``VmHWM`` of
  ``/proc/self/status`` at the end (the process's own high-water mark since ``exec``; the child's ``ru_maxrss`` would
  also count the bench process it was forked from).
- **Packages**: per code folder of the template, ``pip --target`` of the layer's and the function's requirements plus
  the boto3 the runtime ships (no dev dependencies), less what ``./dev package`` leaves out as unused
  (``NOT_SHIPPED``), the code copied beside them, compiled to bytecode as ``./dev package`` ships it
  (``compile_bytecode``); the host's platform (the artifacts ``./dev package`` builds are for arm64). One warm-up
  run first (the floors' modules get their bytecode then; the OS's file cache).

The handler list comes from the template (``AWS::Serverless::Function``: handler, code folder, memory, environment,
event sources): a function added later is measured without a change here. A function whose route or source has no
representative request below (``ROUTES``, ``QUEUE_REQUESTS``) gets a generic one (an unsigned API request, an SQS
message whose body is ``{}``, its schedule's input); the
table shows each request's outcome (a batch's: "batch served", or "<n> of <m> failed" when the handler failed a
record) and AWS calls, so nothing is hidden. SQS records carry the system attributes Lambda always sends.
"""

from __future__ import annotations

import base64
import hashlib
import json
import os
import platform
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterable
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

from bench import write_section

ROOT = Path(__file__).resolve().parents[1]
WORK = ROOT / ".bench" / "cold"
BOTO3_PIN = "boto3==1.44.5"  # what the Lambda runtime provides
NOW_S = int(time.time())
LIVEKIT_KEY, LIVEKIT_SECRET = "APIbench", "bench-secret-0123456789abcdef0123456789"
USAGE_CLIENT, USAGE_SECRET = "bench-app", "bench-usage-secret-0123456789abcdef"
STRIPE_SECRET = "whsec_bench0123456789"
ACCOUNT = "acct_bench"
TRACE_ID = "Root=1-5759e988-bd862e3fe1be46a994272793;Parent=53995c3f42cd8ad8;Sampled=0"

FLOOR = """
import base64
import json
import boto3
from aws_lambda_powertools import Logger, Metrics
{imports}
logger = Logger(service="floor")
metrics = Metrics(namespace="Floor", service="floor")
_client = None
{definitions}

def dependencies():
    global _client
    if _client is None:
        {settings_read}_client = boto3.client("dynamodb")
    return _client


def put(body):
    item = {{"pk": {{"S": str(body.get("id", "floor"))}}, "sk": {{"S": "floor"}}}}
    dependencies().put_item(TableName={table}, Item=item)
{after_put}    return {{"statusCode": 200, "body": "{{}}"}}


@metrics.log_metrics
@logger.inject_lambda_context(clear_state=True)
def lambda_handler(event, context):
{handle}
"""

# What the project requires on some cold paths, each added to the floor as a library would be used for it (the
# same kind of first request): a part applies to a handler whose first request loads its module. The floor with the
# parts a handler loads is that handler's second floor: "the floor plus the libraries the project requires there"
# (docs/decisions.md: pydantic-settings for settings, Powertools' resolver for HTTP, pydantic models, the Stripe SDK).
PARTS: dict[str, tuple[str, str]] = {  # part: (module whose loading marks it, what the floor then does)
    "pydantic": ("pydantic", "the body validated into a pydantic model"),
    "settings": (
        "pydantic_settings",
        "one pydantic-settings model read (table name, AWS timeouts) on the first request",
    ),
    "resolver": ("aws_lambda_powertools.event_handler.api_gateway", "Powertools' APIGatewayHttpResolver routes it"),
    "validation": (
        "aws_lambda_powertools.event_handler.middlewares.openapi_validation",
        "... with enable_validation=True (the body a typed route parameter)",
    ),
    "stripe": ("stripe", "the Stripe SDK verifies its signature (Webhook.construct_event)"),
    "batch": (
        "aws_lambda_powertools.utilities.batch",
        "the request is an SQS batch of 1 whose JSON body Powertools' BatchProcessor hands to the record handler"
        " (partial batch failures)",
    ),
}
# What a first request must do over AWS besides the floor's one PutItem, added to the floor when the handler's first
# request makes that call (its route must: the ingest routes read their signing secret, Stripe's publishes the event).
CALL_PARTS: dict[str, tuple[str, str]] = {  # part: (AWS call that marks it, what the floor then does)
    "secret": (
        "secretsmanager.GetSecretValue",
        "one secret read from Secrets Manager through Powertools' parameters utility (a second client)",
    ),
    "publish": ("AWSEvents.PutEvents", "one event put on an EventBridge bus (another client)"),
}
FLOOR_STRIPE_SECRET = "whsec_floor0123456789"
FLOOR_SECRET_NAME = "bench/floor-secret"


def floor_source(parts: frozenset[str]) -> str:
    """The floor's handler module with ``parts`` (keys of PARTS) added; no parts: the plain floor."""
    imports, definitions = [], []
    settings_read, table = "", '"floor"'
    if "settings" in parts:
        imports.append("from pydantic import Field\nfrom pydantic_settings import BaseSettings, SettingsConfigDict")
        definitions.append(
            "class FloorSettings(BaseSettings):\n"
            '    model_config = SettingsConfigDict(frozen=True, extra="ignore")\n'
            '    floor_table_name: str = "floor"\n'
            "    aws_connect_timeout_seconds: float = Field(default=1.0, gt=0)\n"
            "    aws_read_timeout_seconds: float = Field(default=3.0, gt=0)\n"
            "    aws_max_attempts: int = Field(default=3, ge=1, le=5)\n"
            "\n\n_settings = None\n"
        )
        settings_read = "global _settings\n        _settings = FloorSettings()\n        "
        table = "_settings.floor_table_name"
    if parts & {"pydantic", "validation"}:
        imports.append("from pydantic import BaseModel, Field as BodyField")
        definitions.append("class FloorBody(BaseModel):\n    id: str = BodyField(min_length=1, max_length=64)\n")
    if "stripe" in parts:
        imports.append("import stripe")
    if "secret" in parts:  # read with the first request's setup, as the ingest routes read their keys
        imports.append("from aws_lambda_powertools.utilities.parameters import SecretsProvider")
        secrets = 'SecretsProvider(boto3_client=boto3.client("secretsmanager"))'
        settings_read += f'{secrets}.get("{FLOOR_SECRET_NAME}")\n        '
    if "publish" in parts:
        definitions.append(
            "def publish(body):\n"
            '    boto3.client("events").put_events(Entries=[{"Source": "floor", "DetailType": "Floor.v1",'
            ' "Detail": json.dumps(body), "EventBusName": "floor"}])\n'
        )
    if "batch" in parts:
        imports.append(
            "from aws_lambda_powertools.utilities.batch import BatchProcessor, EventType, process_partial_response"
        )
        definitions.append(
            "processor = BatchProcessor(event_type=EventType.SQS, raise_on_entire_batch_failure=False)\n"
        )
        parse = (
            "FloorBody.model_validate_json(record.body).model_dump()"
            if "pydantic" in parts
            else "json.loads(record.body)"
        )
        definitions.append(f"def record_handler(record):\n    put({parse})\n")
        handle = (
            "    return process_partial_response(event=event, record_handler=record_handler, processor=processor,"
            " context=context)"
        )
    elif parts & {"resolver", "validation"}:
        imports.append("from aws_lambda_powertools.event_handler import APIGatewayHttpResolver")
        validation = "validation" in parts
        definitions.append(f"app = APIGatewayHttpResolver(enable_validation={validation})\n")
        if validation:
            route = '@app.post("/floor")\ndef route(body: FloorBody) -> dict:\n    return put(body.model_dump())\n'
        elif "pydantic" in parts:
            route = (
                '@app.post("/floor")\ndef route():\n'
                "    return put(FloorBody.model_validate_json(app.current_event.decoded_body).model_dump())\n"
            )
        else:
            route = '@app.post("/floor")\ndef route():\n    return put(json.loads(app.current_event.decoded_body))\n'
        definitions.append(route)
        handle = "    return app.resolve(event, context)"
    else:
        raw = (
            'raw = event.get("body") or "{}"\n'
            '    raw = base64.b64decode(raw) if event.get("isBase64Encoded") else raw\n'
        )
        if "stripe" in parts:
            parse = (
                '    signed = stripe.Webhook.construct_event(raw, event["headers"]["stripe-signature"],'
                f' "{FLOOR_STRIPE_SECRET}")\n    body = {{"id": signed["id"]}}\n'
            )
        elif "pydantic" in parts:
            parse = "    body = FloorBody.model_validate_json(raw).model_dump()\n"
        else:
            parse = "    body = json.loads(raw)\n"
        handle = "    " + raw + parse + "    return put(body)"
    return FLOOR.format(
        imports="\n".join(imports),
        definitions="\n\n".join(definitions),
        settings_read=settings_read,
        table=table,
        after_put="    publish(body)\n" if "publish" in parts else "",
        handle=handle,
    )


def floor_module(parts: frozenset[str]) -> str:
    return "bench_floor_" + "_".join(sorted(parts)) + "_handler" if parts else "bench_floor_handler"


def floor_name(parts: frozenset[str]) -> str:
    return "floor + " + " + ".join(sorted(parts)) if parts else "floor"


def parts_loaded(modules: list[str] | set[str]) -> frozenset[str]:
    """The PARTS whose module a first request loaded (the required libraries on that handler's path)."""
    loaded = set(modules)
    return frozenset(part for part, (module, _) in PARTS.items() if module in loaded)


def parts_called(calls: dict[str, int]) -> frozenset[str]:
    """The CALL_PARTS whose AWS call a first request made."""
    return frozenset(part for part, (call, _) in CALL_PARTS.items() if calls.get(call))


# A batch (SQS, stream) answered with no item failed; one that failed items is "<n> of <m> failed" (SQS delivers them
# again, then to the dead-letter queue): a crash the batch processor caught is not a served request.
BATCH_SERVED = "batch served"

CHILD = """
import json, sys
BATCH_SERVED = "__BATCH_SERVED__"
spec = json.load(open(sys.argv[1]))
module = __import__(spec["module"], fromlist=["lambda_handler"])
class Context:
    function_name = spec["function"]
    memory_limit_in_mb = spec["memory"]
    invoked_function_arn = "arn:aws:lambda:us-east-1:123456789012:function:" + spec["function"]
    aws_request_id = "bench-cold-start"
    def get_remaining_time_in_millis(self):
        return 10_000
try:
    response = getattr(module, spec["attribute"])(spec["event"], Context())
    outcome = "returned"
    if isinstance(response, dict) and "statusCode" in response:
        outcome = response["statusCode"]
    elif isinstance(response, dict) and "batchItemFailures" in response:
        failed = len(response["batchItemFailures"])
        outcome = f"{failed} of {len(spec['event'].get('Records', []))} failed" if failed else BATCH_SERVED
except Exception as exc:
    outcome = type(exc).__name__
peak_kb = 0
with open("/proc/self/status") as status:
    for line in status:
        if line.startswith("VmHWM:"):
            peak_kb = int(line.split()[1])
with open(sys.argv[2], "w") as out:
    json.dump({"outcome": outcome, "modules": sorted(sys.modules), "peak_kb": peak_kb}, out)
""".replace("__BATCH_SERVED__", BATCH_SERVED)


@dataclass
class Subject:
    name: str  # the template's logical id, or "floor"
    handler: str  # module.attribute
    folder: str  # code folder (CodeUri); the floor runs from the ingest package
    memory_mb: int
    environment: dict[str, str]
    event: Any
    request: str  # what the first request is, for the table
    sources: dict[str, Any] = field(default_factory=dict)  # the template's event sources (to sign afresh)
    cpu: list[float] = field(default_factory=list)
    wall: list[float] = field(default_factory=list)
    rss_kb: list[int] = field(default_factory=list)
    outcomes: set[str] = field(default_factory=set)
    modules: int = 0
    calls: dict[str, int] = field(default_factory=dict)
    parts: frozenset[str] = frozenset()  # a floor: the PARTS it adds; a handler: the PARTS its first request loads


# --- packages -------------------------------------------------------------------------------------------------------


def _requirements(folder: Path) -> str:
    path = folder / "requirements.txt"
    return path.read_text() if path.exists() else ""


def package(folder: str, layer: Path) -> Path:
    """The Lambda-shaped package of one code folder (installed once per requirements; code copied every run)."""
    from kilo_dev.package import NOT_SHIPPED, compile_bytecode, remove_distributions  # noqa: PLC0415

    target = WORK / Path(folder).name
    unused = NOT_SHIPPED.get(target.name, {})
    inputs = f"{_requirements(layer)}{_requirements(ROOT / folder)}{BOTO3_PIN} without {sorted(unused)}, unchecked pyc"
    stamp = target / ".stamp"
    if not (stamp.exists() and stamp.read_text() == inputs):
        shutil.rmtree(target, ignore_errors=True)
        target.mkdir(parents=True)
        requirements = [
            argument
            for path in (layer / "requirements.txt", ROOT / folder / "requirements.txt")
            if path.exists()
            for argument in ("-r", str(path))
        ]
        subprocess.run(
            [sys.executable, "-m", "pip", "install", "--quiet", "--disable-pip-version-check", "--no-compile",
             "--target", str(target), *requirements, BOTO3_PIN],
            check=True,
        )  # fmt: skip
        remove_distributions(target, lambda name: name in unused)  # as ./dev package ships it
        compile_bytecode(target)  # the bytecode ./dev package ships (the runtime's boto3 has its own)
        stamp.write_text(inputs)
    for source in [*layer.iterdir(), *(ROOT / folder).iterdir()]:
        if source.is_dir() and (source / "__init__.py").exists():
            shutil.rmtree(target / source.name, ignore_errors=True)
            shutil.copytree(source, target / source.name, ignore=shutil.ignore_patterns("__pycache__"))
            compile_bytecode(target / source.name)
    (target / f"{floor_module(frozenset())}.py").write_text(floor_source(frozenset()))
    return target


# --- representative first requests ----------------------------------------------------------------------------------


def _livekit_request(environment: dict[str, str], stub_secrets: dict[str, str]) -> tuple[Any, str]:
    from kilo_dev.apigw import http_api_event  # noqa: PLC0415
    from kilo_dev.signing import livekit_authorization  # noqa: PLC0415

    stub_secrets[environment.get("LIVEKIT_KEYS_SECRET_NAME", "")] = json.dumps({LIVEKIT_KEY: LIVEKIT_SECRET})
    body = (ROOT / "tests/fixtures/livekit/participant_joined.json").read_bytes()
    headers = {"authorization": livekit_authorization(body, LIVEKIT_KEY, LIVEKIT_SECRET)}
    return http_api_event("POST", "/webhooks/livekit", body, headers), "signed participant_joined"


def _usage_request(environment: dict[str, str], stub_secrets: dict[str, str]) -> tuple[Any, str]:
    from kilo_dev.apigw import http_api_event  # noqa: PLC0415
    from kilo_dev.signing import usage_signature  # noqa: PLC0415

    clients = {USAGE_CLIENT: {"secrets": [USAGE_SECRET], "accounts": "*"}}
    stub_secrets[environment.get("USAGE_SECRETS_SECRET_NAME", "")] = json.dumps(clients)
    now = int(time.time())
    stamp = time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime(now - 120))
    event = {"idempotency_key": "bench-0001", "account_id": ACCOUNT, "meter": "messages", "quantity": 3,
             "timestamp": stamp}  # fmt: skip
    body = json.dumps({"events": [event]}).encode()
    headers = {"content-type": "application/json", "x-kilo-client": USAGE_CLIENT,
               "x-kilo-signature": usage_signature(body, USAGE_SECRET, now)}  # fmt: skip
    return http_api_event("POST", "/v1/usage", body, headers), "signed usage batch of 1 (registered account)"


def _stripe_request(environment: dict[str, str], stub_secrets: dict[str, str]) -> tuple[Any, str]:
    from kilo_dev.apigw import http_api_event  # noqa: PLC0415
    from kilo_dev.signing import stripe_signature  # noqa: PLC0415

    stub_secrets[environment.get("STRIPE_SECRET_NAME", "")] = json.dumps({"webhook_secrets": [STRIPE_SECRET]})
    invoice = {"id": "in_bench", "object": "invoice"}
    now = int(time.time())
    event = {"id": "evt_bench", "object": "event", "type": "invoice.paid", "created": now, "livemode": False,
             "api_version": "2025-01-27.acacia", "data": {"object": invoice}}  # fmt: skip
    body = json.dumps(event).encode()
    headers = {"content-type": "application/json", "stripe-signature": stripe_signature(body, STRIPE_SECRET, now)}
    return http_api_event("POST", "/webhooks/stripe", body, headers), "signed invoice.paid"


def _as_stream_json(value: Any) -> Any:
    """A DynamoDB item as a stream record carries it: binary attributes as base64 text."""
    if isinstance(value, bytes):
        return base64.b64encode(value).decode("ascii")
    if isinstance(value, dict):
        return {key: _as_stream_json(inner) for key, inner in value.items()}
    if isinstance(value, list):
        return [_as_stream_json(inner) for inner in value]
    return value


def _stream_request() -> tuple[Any, str]:
    from kilo_webhook_ingest.livekit_webhook import parse_event, to_record  # noqa: PLC0415

    body = (ROOT / "tests/fixtures/livekit/participant_joined.json").read_bytes()
    item = _as_stream_json(to_record(parse_event(body), body, LIVEKIT_KEY, NOW_S * 1000).to_item(NOW_S + 86_400))
    record = {
        "eventID": "bench-1",
        "eventName": "INSERT",
        "eventSource": "aws:dynamodb",
        "awsRegion": "us-east-1",
        "dynamodb": {
            "Keys": {k: item[k] for k in ("pk", "sk") if k in item},
            "NewImage": item,
            "SequenceNumber": "100000000000000000001",
            "StreamViewType": "NEW_IMAGE",
        },
        "eventSourceARN": "arn:aws:dynamodb:us-east-1:123456789012:table/events/stream/2026-01-01T00:00:00.000",
    }
    return {"Records": [record]}, "stream batch: 1 participant_joined"


def _account_usage_request(environment: dict[str, str], stub_secrets: dict[str, str]) -> tuple[Any, str]:
    """The dashboard's first call: the signed-in owner's month to date (claims as API Gateway's JWT authorizer passes
    them; the account is the one the stub has registered)."""
    from kilo_dev.apigw import http_api_event  # noqa: PLC0415

    route = "GET /v1/accounts/{account_id}/usage"
    event = http_api_event("GET", f"/v1/accounts/{ACCOUNT}/usage", None, {}, route_key=route)
    event["pathParameters"] = {"account_id": ACCOUNT}
    claims = {"sub": "bench-user", "kilo_account": ACCOUNT, "kilo_role": "owner"}
    event["requestContext"]["authorizer"] = {"jwt": {"claims": claims, "scopes": None}}
    return event, "signed-in owner's GET usage (month to date)"


def _cognito_pre_token_request() -> tuple[Any, str]:
    attributes = {"sub": "bench-user", "email": "bench@example.com"}
    request = {"userAttributes": attributes, "groupConfiguration": {"groupsToOverride": []}}
    event = {"version": "1", "triggerSource": "TokenGeneration_HostedAuth", "userName": "bench-user",
             "request": request, "response": {"claimsOverrideDetails": None}}  # fmt: skip
    return event, "Cognito pre-token generation (version 1)"


# functions invoked by another service's trigger rather than an event source of the template (handler -> request)
TRIGGERS = {"kilo_account_api.pretoken_handler.lambda_handler": _cognito_pre_token_request}


def _alert_request() -> tuple[Any, str]:
    """What the alerts queue carries most: rating's threshold event (EventBridge's envelope as the rule delivers it),
    for the registered account, whose profile has an email address."""
    from kilo_billing.contracts import UsageThresholdCrossedV1  # noqa: PLC0415

    period = time.strftime("%Y-%m", time.gmtime(NOW_S))
    detail = UsageThresholdCrossedV1(
        event_id=UsageThresholdCrossedV1.make_id(ACCOUNT, period, "messages", 50),
        account_id=ACCOUNT,
        period=period,
        meter="messages",
        threshold_percent=50,
        used="50000",
        limit="100000",
        occurred_at=time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime(NOW_S)),
    ).model_dump(mode="json")
    envelope = {"version": "0", "id": "bench-event", "detail-type": UsageThresholdCrossedV1.DETAIL_TYPE,
                "source": "kilo.billing.rating", "account": "123456789012", "time": detail["occurred_at"],
                "region": "us-east-1", "resources": [], "detail": detail}  # fmt: skip
    # from the alerts queue, as deployed (the handler takes only a forecast re-check from the re-checks' queue, D366)
    from kilo_dev.template import Template  # noqa: PLC0415

    alerts_queue = Template().get_att("AlertsQueue", "Arn")
    return _sqs_batch(json.dumps(envelope), alerts_queue), "SQS batch of 1: messages at 50 % (email)"


def _sqs_batch(body: str, source_arn: str = "arn:aws:sqs:us-east-1:123456789012:bench") -> dict[str, Any]:
    """One message as Lambda's SQS poller delivers it: its system attributes are always there (a first receive, sent
    a second before; the sender a role's session) - a handler that reads ``ApproximateReceiveCount`` finds it."""
    sent_ms = NOW_S * 1000 - 1000
    attributes = {
        "ApproximateReceiveCount": "1",
        "SentTimestamp": str(sent_ms),
        "SenderId": "AROAEXAMPLEBENCHSENDER:bench",
        "ApproximateFirstReceiveTimestamp": str(sent_ms + 20),
    }
    record = {"messageId": "bench-1", "receiptHandle": "bench", "body": body, "attributes": attributes,
              "messageAttributes": {}, "md5OfBody": hashlib.md5(body.encode(), usedforsecurity=False).hexdigest(),
              "eventSource": "aws:sqs", "awsRegion": "us-east-1", "eventSourceARN": source_arn}  # fmt: skip
    return {"Records": [record]}


def _bounce_request() -> tuple[Any, str]:
    """What the bounces queue carries: SES's permanent bounce of an alert email (raw delivery: the record itself),
    tagged with the registered account (D400)."""
    from kilo_alerts.bounces import ACCOUNT_TAG, account_tag  # noqa: PLC0415
    from kilo_dev.template import Template  # noqa: PLC0415

    record = json.loads((ROOT / "tests/fixtures/ses/bounce_permanent.json").read_text())
    record["mail"]["tags"][ACCOUNT_TAG] = [account_tag(ACCOUNT)]
    bounces_queue = Template().get_att("AlertsBouncesQueue", "Arn")
    return _sqs_batch(json.dumps(record), bounces_queue), "SQS batch of 1: SES's permanent bounce (one mark)"


# Functions whose queue's first message is representative of their work (the others get a generic one).
QUEUE_REQUESTS = {"AlertsFunction": _alert_request, "AlertsBouncesFunction": _bounce_request}

ROUTES = {
    "/webhooks/livekit": _livekit_request,
    "/v1/usage": _usage_request,
    "/webhooks/stripe": _stripe_request,
    "/v1/accounts/{account_id}/usage": _account_usage_request,
}


def first_request(
    events: dict[str, Any], environment: dict[str, str], stub_secrets: dict[str, str], function: str = ""
) -> tuple[Any, str]:
    from kilo_dev.apigw import http_api_event  # noqa: PLC0415

    sources = list(events.values())
    for source in sources:
        path = source.get("Properties", {}).get("Path")
        if source["Type"] == "HttpApi" and path in ROUTES:
            return ROUTES[path](environment, stub_secrets)
    for source in sources:
        kind, properties = source["Type"], source.get("Properties", {})
        if kind == "DynamoDB":
            return _stream_request()
        if kind in ("Schedule", "ScheduleV2"):
            given = properties.get("Input")
            scheduled = time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime(NOW_S))
            text = given.replace("<aws.scheduler.scheduled-time>", scheduled) if isinstance(given, str) else "{}"
            return json.loads(text), "its schedule's input"
        if kind == "HttpApi":
            method, path = properties.get("Method", "GET").upper(), properties.get("Path", "/")
            return http_api_event(method, path, b"{}", {}), f"unsigned {method} {path} (generic)"
        if kind == "SQS":
            if function in QUEUE_REQUESTS:
                return QUEUE_REQUESTS[function]()
            return _sqs_batch("{}"), "SQS batch of 1, body {} (generic)"
    return {}, "empty event (generic)"


# --- runs -------------------------------------------------------------------------------------------------------------


def subjects(stub_secrets: dict[str, str]) -> list[Subject]:
    from kilo_dev.template import Template  # noqa: PLC0415

    template = Template()
    default_memory = int(template.body.get("Globals", {}).get("Function", {}).get("MemorySize", 128))
    found = []
    for name, spec in template.of_type("AWS::Serverless::Function").items():
        properties = spec["Properties"]
        environment = {key: str(value) for key, value in template.function_environment(name).items()}
        sources = properties.get("Events") or {}
        trigger = TRIGGERS.get(properties["Handler"])
        event, request = trigger() if trigger else first_request(sources, environment, stub_secrets, name)
        found.append(
            Subject(
                name,
                properties["Handler"],
                properties["CodeUri"].rstrip("/"),
                int(properties.get("MemorySize", default_memory)),
                environment,
                event,
                request,
                sources,
            )
        )
    return found


def child_environment(subject: Subject, package_dir: Path | None, endpoint: str) -> dict[str, str]:
    """The function's variables from the template, the canned endpoint, dummy credentials and Lambda's own variables;
    ``package_dir`` None: the caller's environment's packages (the dev venv, for tests)."""
    environment = {
        **subject.environment,
        "PATH": os.environ.get("PATH", ""),
        "AWS_ENDPOINT_URL": endpoint,
        "AWS_ACCESS_KEY_ID": "bench",
        "AWS_SECRET_ACCESS_KEY": "bench",
        "AWS_DEFAULT_REGION": "us-east-1",
        "AWS_REGION": "us-east-1",
        "AWS_CONFIG_FILE": os.devnull,
        "AWS_SHARED_CREDENTIALS_FILE": os.devnull,
        "AWS_EC2_METADATA_DISABLED": "true",
        "AWS_LAMBDA_FUNCTION_NAME": subject.name,
        "AWS_LAMBDA_FUNCTION_MEMORY_SIZE": str(subject.memory_mb),
        "_X_AMZN_TRACE_ID": TRACE_ID,
    }
    if package_dir is not None:
        environment.update({"PYTHONPATH": str(package_dir), "LAMBDA_TASK_ROOT": str(package_dir)})
    return environment


def run_cold(
    subject: Subject, package_dir: Path | None, endpoint: str, scratch: Path, unimportable: Iterable[str] = ()
) -> dict[str, Any]:
    """One fresh process: import the handler, answer the first request. Returns the child's CPU and wall seconds, its
    peak RSS (kB), the request's outcome and every module then loaded. ``unimportable``: top-level modules whose import
    fails in the child, as in an artifact that does not ship them (``package_dir`` None: the dev venv has them)."""
    module, _, attribute = subject.handler.rpartition(".")
    spec_path, out_path = scratch / f"{subject.name}.json", scratch / f"{subject.name}.out"
    spec = {"module": module, "attribute": attribute, "event": subject.event, "function": subject.name,
            "memory": subject.memory_mb}  # fmt: skip
    spec_path.write_text(json.dumps(spec))
    (scratch / "child.py").write_text(CHILD)
    flags = ["-S"] if package_dir is not None else []
    environment = child_environment(subject, package_dir, endpoint)
    if unimportable:
        shadows = scratch / "unimportable"
        for name in unimportable:
            (shadows / name).mkdir(parents=True, exist_ok=True)
            (shadows / name / "__init__.py").write_text(f"raise ImportError('{name} is not shipped')\n")
        environment["PYTHONPATH"] = os.pathsep.join(filter(None, [str(shadows), environment.get("PYTHONPATH")]))
    started = time.perf_counter()
    process = subprocess.Popen(
        [sys.executable, *flags, str(scratch / "child.py"), str(spec_path), str(out_path)],
        env=environment,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    _, status, usage = os.wait4(process.pid, 0)
    process.returncode = os.waitstatus_to_exitcode(status)
    wall = time.perf_counter() - started
    if process.returncode:
        raise RuntimeError(f"{subject.name}: the cold-start child exited {process.returncode}")
    report: dict[str, Any] = json.loads(out_path.read_text())
    return {**report, "cpu": usage.ru_utime + usage.ru_stime, "wall": wall}


def _run(subject: Subject, package_dir: Path, endpoint: str, scratch: Path) -> None:
    report = run_cold(subject, package_dir, endpoint, scratch)
    subject.cpu.append(report["cpu"])
    subject.wall.append(report["wall"])
    subject.rss_kb.append(report["peak_kb"])
    subject.outcomes.add(str(report["outcome"]))
    subject.modules = len(report["modules"])
    if not subject.name.startswith("floor"):
        subject.parts = parts_loaded(report["modules"]) | parts_called(subject.calls)


def seeded_stub(stub_secrets: dict[str, str]) -> Any:
    """The canned AWS endpoint with the secrets the first requests need and the usage API's registered account."""
    from bench.aws_stub import AwsStub  # noqa: PLC0415
    from kilo_billing.account_items import profile_to_item  # noqa: PLC0415
    from kilo_billing.accounts import AccountProfile  # noqa: PLC0415

    profile = replace(AccountProfile.default(ACCOUNT), name="Bench", email="billing@bench.example")
    return AwsStub(stub_secrets, [profile_to_item(profile)])


def floor_subject(parts: frozenset[str], package_dir: Path | None = None) -> Subject:
    """The floor with ``parts`` (its module written into ``package_dir``, the ingest package, when given)."""
    module = floor_module(parts)
    if package_dir is not None:
        (package_dir / f"{module}.py").write_text(floor_source(parts))
    event, request = floor_request(parts)
    return Subject(floor_name(parts), f"{module}.lambda_handler", "functions/webhook_ingest", 1024, {}, event, request,
                   parts=parts)  # fmt: skip


def floor_request(parts: frozenset[str]) -> tuple[Any, str]:
    """The floor's first request: an API event with a JSON body (signed as Stripe signs, for the Stripe SDK part)."""
    from kilo_dev.apigw import http_api_event  # noqa: PLC0415
    from kilo_dev.signing import stripe_signature  # noqa: PLC0415

    if "batch" in parts:
        record = {"messageId": "floor-1", "receiptHandle": "floor", "body": '{"id": "floor-1"}', "attributes": {},
                  "messageAttributes": {}, "md5OfBody": hashlib.md5(b'{"id": "floor-1"}').hexdigest(),
                  "eventSource": "aws:sqs", "awsRegion": "us-east-1",
                  "eventSourceARN": "arn:aws:sqs:us-east-1:123456789012:floor"}  # fmt: skip
        return {"Records": [record]}, "SQS batch of 1 (JSON body), one PutItem"
    if "stripe" in parts:
        body = json.dumps({"id": "evt_floor", "object": "event", "type": "invoice.paid", "data": {"object": {}}})
        headers = {"stripe-signature": stripe_signature(body.encode(), FLOOR_STRIPE_SECRET, int(time.time()))}
        return http_api_event("POST", "/floor", body.encode(), headers), "signed API event, one PutItem"
    return http_api_event("POST", "/floor", b'{"id": "floor-1"}', {}), "API event, JSON body, one PutItem"


def measure(samples: int) -> tuple[list[Subject], list[Subject], float]:
    """The floors (the plain one first, then one per combination of PARTS some handler loads) and every handler."""
    stub_secrets: dict[str, str] = {FLOOR_SECRET_NAME: "floor"}
    handlers = subjects(stub_secrets)
    layer = ROOT / "layers/common"
    packages = {folder: package(folder, layer) for folder in sorted({s.folder for s in handlers})}
    packages.setdefault("functions/webhook_ingest", package("functions/webhook_ingest", layer))
    floors = [floor_subject(frozenset())]
    with tempfile.TemporaryDirectory() as directory, seeded_stub(stub_secrets) as stub:
        scratch = Path(directory)
        bare_cpu = []

        def warm(subject: Subject) -> None:  # warm the bytecode caches and count each first request's AWS calls
            before = dict(stub.calls)
            _run(subject, packages[subject.folder], stub.url, scratch)
            subject.calls = {op: n - before.get(op, 0) for op, n in stub.calls.items() if n - before.get(op, 0)}
            if not subject.name.startswith("floor"):
                subject.parts |= parts_called(subject.calls)
            subject.cpu.clear()
            subject.wall.clear()
            subject.rss_kb.clear()

        for subject in [*floors, *handlers]:
            warm(subject)
        for parts in sorted({handler.parts for handler in handlers} - {frozenset()}, key=lambda p: (len(p), sorted(p))):
            floors.append(floor_subject(parts, packages["functions/webhook_ingest"]))
            warm(floors[-1])
        everyone = [*floors, *handlers]
        for round_ in range(samples):
            order = everyone[round_ % len(everyone) :] + everyone[: round_ % len(everyone)]
            for subject in order:  # the floors among the handlers, in a rotating order
                if subject.sources:  # signed afresh: a signature's timestamp is only good for minutes
                    subject.event, _ = first_request(subject.sources, subject.environment, stub_secrets, subject.name)
                elif subject.name.startswith("floor"):
                    subject.event, _ = floor_request(subject.parts)
                _run(subject, packages[subject.folder], stub.url, scratch)
            started = os.times()
            subprocess.run([sys.executable, "-S", "-c", "pass"], check=True)
            ended = os.times()
            bare_cpu.append(
                ended.children_user + ended.children_system - started.children_user - started.children_system
            )
    return floors, handlers, statistics.median(bare_cpu)


TARGET = 1.3


def _row(subject: Subject, floor_cpu: float, own_floor: Subject | None) -> str:
    cpu, wall = statistics.median(subject.cpu), statistics.median(subject.wall)
    rss = max(subject.rss_kb) / 1024
    calls = ", ".join(f"{op.split('.')[-1]} {n}" for op, n in sorted(subject.calls.items())) or "none"
    ratio = cpu / floor_cpu
    is_floor = subject.name.startswith("floor")
    flag = "" if ratio <= TARGET or subject.name == "floor" else " ✗"
    if is_floor:
        own = "—"
    elif own_floor is None or not subject.parts:
        own = f"(the floor) {ratio:.2f}x"
    else:
        own = f"{' + '.join(sorted(subject.parts))}: {cpu / statistics.median(own_floor.cpu):.2f}x"
    return (
        f"| {subject.name} (`{subject.handler.rsplit('.', 1)[0]}`)"
        f" | {subject.request} → {', '.join(sorted(subject.outcomes))}"
        f" | {calls} | {cpu * 1000:.0f} ms | {wall * 1000:.0f} ms | {ratio:.2f}x{flag} | {own} | {subject.modules:,}"
        f" | {rss:.0f} / {subject.memory_mb} MB |"
    )


HEADER = (
    "| function (handler module) | first request → outcome | AWS calls | CPU (median) | wall (median)"
    f" | CPU / floor (target <= {TARGET}x) | CPU / floor with the libraries it must load | modules loaded"
    " | peak RSS / MemorySize |"
)


def report(floors: list[Subject], handlers: list[Subject], bare_cpu: float, samples: int) -> str:
    floor_cpu = statistics.median(floors[0].cpu)
    by_parts = {floor.parts: floor for floor in floors}
    when = time.strftime("%Y-%m-%d %H:%M UTC", time.gmtime())
    where = f"{when}, {platform.machine()}, Python {platform.python_version()}"
    load = os.getloadavg()
    rows = "\n".join(_row(subject, floor_cpu, by_parts.get(subject.parts)) for subject in [*floors, *handlers])
    parts = "\n".join(f"  - **{part}** (marked by `{module}`): {what}." for part, (module, what) in PARTS.items())
    parts += "".join(
        f"\n  - **{part}** (marked by its first request's `{call}`): {what}."
        for part, (call, what) in CALL_PARTS.items()
    )
    return f"""## Cold start of every handler (issue 15) — {where}, {os.cpu_count()} cores

{HEADER}
|---|---|---|---|---|---|---|---|---|
{rows}

Whole fresh processes (`python -S`, Lambda-shaped package: layer + function requirements + `{BOTO3_PIN}`, host
platform), each importing its handler and answering one first request whose AWS calls go over HTTP to a canned
endpoint on 127.0.0.1 (`bench/aws_stub.py`): SigV4, parameter validation and parsing run in the measured process.
CPU = user + system time of that child alone (`os.wait4`), median of {samples} runs, the floors interleaved with the
handlers in a rotating order; a bare `python -S -c pass` costs {bare_cpu * 1000:.0f} ms of it (included in every
row). Peak RSS = the child's `VmHWM` after the request (its `ru_maxrss` would include the forking bench process).
Load average during the run: {load[0]:.1f} / {load[1]:.1f} / {load[2]:.1f} (1 / 5 / 15 min; the machine is shared,
so CPU time, not wall time, is the figure to read).

**The floors.** `floor`: python + boto3 + Powertools Logger and Metrics + one DynamoDB client; its first request is an
API Gateway event whose JSON body is parsed, then one `PutItem`. The other floor rows add to it, in the same run, what
the project requires on some paths - a part counts for a handler when its first request loads the part's module, and
that handler's own floor ("floor with the libraries it must load") is the floor with exactly those parts:
{parts}"""


def run(quick: bool = False) -> None:
    samples = 3 if quick else 9
    floors, handlers, bare_cpu = measure(samples)
    print(write_section("cold-start", report(floors, handlers, bare_cpu, samples)))
