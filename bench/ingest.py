"""Ingest benchmark: CPU per event of each ingest route, through the real Lambda handler with the real boto3 clients,
beside that route's floor, in the same process, interleaved.

- **Handlers**: ``lambda_handler`` of the LiveKit webhook, the usage API and the Stripe webhook, with the dependencies
  they build themselves (``dependencies.livekit()`` ...): real boto3 clients whose HTTP is answered in-process at
  botocore's ``before-send`` (``bench/aws_stub.CannedAws``), so serialising, parameter validation (where on), SigV4
  and response parsing all run; logs and metrics go to a buffer. Secrets are cached after the first event, as in Lambda.
- **Floors**: what any implementation must do per event. LiveKit: PyJWT HS256 verify + SHA-256 of the body +
  ``json.loads`` and the fields ingest stores. Usage / Stripe: HMAC-SHA256 of ``t.body`` + ``json.loads`` and the
  fields stored.
- **Where**: the Lambda-shaped package (``pip --target`` of the layer's and the function's requirements plus boto3, no
  dev dependencies), one process pinned to one core; CPU time (``time.process_time``) per round of N events, the floor
  and the handlers taking turns for R rounds; the median round's figure per event.
"""

from __future__ import annotations

import json
import os
import platform
import shutil
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

from bench import write_section

ROOT = Path(__file__).resolve().parents[1]
WORK = ROOT / ".bench"
PACKAGE = WORK / "lambda_webhook_ingest"
BOTO3_PIN = "boto3==1.44.5"  # what the Lambda runtime provides


def _build_package() -> None:
    stamp = PACKAGE / ".stamp"
    inputs = (
        (ROOT / "layers/common/requirements.txt").read_text()
        + (ROOT / "functions/webhook_ingest/requirements.txt").read_text()
        + BOTO3_PIN
    )
    if stamp.exists() and stamp.read_text() == inputs:
        _copy_sources()
        return
    shutil.rmtree(PACKAGE, ignore_errors=True)
    PACKAGE.mkdir(parents=True)
    subprocess.run(
        [
            sys.executable, "-m", "pip", "install", "--quiet", "--target", str(PACKAGE),
            "-r", str(ROOT / "layers/common/requirements.txt"),
            "-r", str(ROOT / "functions/webhook_ingest/requirements.txt"),
            BOTO3_PIN,
        ],
        check=True,
    )  # fmt: skip
    stamp.write_text(inputs)
    _copy_sources()


def _copy_sources() -> None:
    for source in (ROOT / "layers/common/kilo_billing", ROOT / "functions/webhook_ingest/kilo_webhook_ingest"):
        target = PACKAGE / source.name
        shutil.rmtree(target, ignore_errors=True)
        shutil.copytree(source, target, ignore=shutil.ignore_patterns("__pycache__"))
    shutil.copy(ROOT / "bench/aws_stub.py", PACKAGE / "bench_aws_stub.py")


def _lambda_env(functions: list[Any]) -> dict[str, str]:
    """What the measured process sees: the Lambda-shaped package, the three functions' variables from the template (one
    environment: they agree on what they share), dummy credentials; nothing of the dev environment."""
    environment: dict[str, str] = {}
    for function in functions:
        environment.update(function.environment)
    return {
        **environment,
        "PATH": os.environ.get("PATH", ""),
        "PYTHONPATH": str(PACKAGE),
        "AWS_DEFAULT_REGION": "us-east-1",
        "AWS_ACCESS_KEY_ID": "bench",
        "AWS_SECRET_ACCESS_KEY": "bench",
        "AWS_CONFIG_FILE": os.devnull,
        "AWS_SHARED_CREDENTIALS_FILE": os.devnull,
        "AWS_EC2_METADATA_DISABLED": "true",
    }


_MEASURE = r"""
import base64, hashlib, hmac, io, json, statistics, sys, time
from contextlib import redirect_stdout

import boto3
import jwt

from bench_aws_stub import CannedAws

spec = json.load(open(sys.argv[1]))
canned = CannedAws(spec["secrets"], spec["items"])
boto3.setup_default_session()
boto3.DEFAULT_SESSION.events.register("before-send", canned.botocore_hook)  # every client the handlers build

from kilo_webhook_ingest import livekit_handler, stripe_handler, usage_handler  # noqa: E402
from kilo_webhook_ingest.dependencies import livekit as livekit_dependencies  # noqa: E402


class Context:
    function_name, memory_limit_in_mb = "bench", 1024
    invoked_function_arn, aws_request_id = "arn:aws:lambda:us-east-1:123456789012:function:bench", "bench"

    def get_remaining_time_in_millis(self):
        return 10_000


def body_of(event):
    raw = event["body"]
    return base64.b64decode(raw) if event.get("isBase64Encoded") else raw.encode()


LK_KEY, LK_SECRET = spec["livekit_key"], spec["livekit_secret"]


def livekit_floor(event):
    body = body_of(event)
    claims = jwt.decode(event["headers"]["authorization"], LK_SECRET, algorithms=["HS256"], issuer=LK_KEY,
                        options={"require": ["exp", "iss"]})
    digest = base64.b64encode(hashlib.sha256(body).digest()).decode("ascii")
    if not hmac.compare_digest(claims["sha256"].encode(), digest.encode()):
        raise ValueError("hash")
    data = json.loads(body)
    room, participant, track = data.get("room") or {}, data.get("participant") or {}, data.get("track") or {}
    return (data["id"], data["event"], data.get("createdAt"), room.get("sid"), room.get("name"), room.get("metadata"),
            participant.get("sid"), participant.get("identity"), participant.get("kind"), participant.get("metadata"),
            participant.get("attributes"), participant.get("joinedAt"), participant.get("joinedAtMs"),
            track.get("sid"), track.get("type"), track.get("source"))


def timestamped_floor(secret, header):
    def floor(event):
        body = body_of(event)
        parts = dict(part.split("=", 1) for part in event["headers"][header].split(","))
        mac = hmac.new(secret.encode(), parts["t"].encode() + b"." + body, hashlib.sha256).hexdigest()
        if not hmac.compare_digest(mac, parts["v1"]):
            raise ValueError("signature")
        data = json.loads(body)
        if "events" in data:
            return [(e["idempotency_key"], e["account_id"], e["meter"], e["quantity"], e["timestamp"])
                    for e in data["events"]]
        return data["id"], data["type"], data["created"], data.get("livemode")
    return floor


sink = io.StringIO()
for module in (livekit_handler, usage_handler, stripe_handler):
    log = getattr(module, "log", None) or getattr(module, "logger", None)
    if log is not None:
        log.registered_handler.setStream(sink)


def through(handler):
    def call(event):
        with redirect_stdout(sink):
            response = handler(event, Context())
        if response["statusCode"] != 200:
            raise RuntimeError(response)
        sink.seek(0)
        sink.truncate()
    return call


subjects = {
    "livekit floor": (livekit_floor, "livekit"),
    "livekit handler": (through(livekit_handler.lambda_handler), "livekit"),
    "usage floor": (timestamped_floor(spec["usage_secret"], "x-kilo-signature"), "usage"),
    "usage handler": (through(usage_handler.lambda_handler), "usage"),
    "stripe floor": (timestamped_floor(spec["stripe_secret"], "stripe-signature"), "stripe"),
    "stripe handler": (through(stripe_handler.lambda_handler), "stripe"),
}
events = {name: json.load(open(path)) for name, path in spec["events"].items()}
for name, (run, kind) in subjects.items():  # warm-up: clients built, secrets cached, code paths hot
    for event in events[kind][:50]:
        run(event)

# the LiveKit handler with validation on: the same dependencies, its store's client rebuilt with validation
from kilo_billing.aws import client  # noqa: E402
from kilo_webhook_ingest.adapters import DynamoEventStore  # noqa: E402
from kilo_webhook_ingest.dependencies import LiveKitDependencies  # noqa: E402

deps = livekit_dependencies()
validated_store = DynamoEventStore(client("dynamodb", deps.settings.livekit_budget), deps.settings.events_table)
validated = LiveKitDependencies(deps.settings, validated_store, deps.secrets)
# what production builds: no ParamValidationDecorator around the serializer (meta.config does not show the option)
assert type(deps.store._client._serializer).__name__ != "ParamValidationDecorator"
assert type(validated_store._client._serializer).__name__ == "ParamValidationDecorator"


def livekit_validating(event):
    livekit_handler.dependencies = lambda: validated
    try:
        through(livekit_handler.lambda_handler)(event)
    finally:
        livekit_handler.dependencies = livekit_dependencies


subjects["livekit handler, parameter validation on"] = (livekit_validating, "livekit")
# the proof of what is left: the one PutItem alone, through the handler's own client, with the item the handler built
from kilo_webhook_ingest.livekit_webhook import parse_event, to_record  # noqa: E402

stored = [to_record(parse_event(body_of(e)), body_of(e), LK_KEY, 1_771_351_908_000).to_item(1_800_000_000)
          for e in events["livekit"]]
by_id = {id(e): item for e, item in zip(events["livekit"], stored)}


def put_alone(event):
    deps.store.put_new(by_id[id(event)])


subjects["one PutItem alone (the handler's client and item)"] = (put_alone, "livekit")
for event in events["livekit"][:50]:
    livekit_validating(event)

rounds, per_round = spec["rounds"], spec["per_round"]
figures = {name: [] for name in subjects}
calls_before = dict(canned.calls)
for round_ in range(rounds):
    names = list(subjects)
    names = names[round_ % len(names):] + names[:round_ % len(names)]
    for name in names:
        run, kind = subjects[name]
        batch = events[kind][(round_ * per_round) % len(events[kind]):][:per_round]
        started = time.process_time()
        for event in batch:
            run(event)
        figures[name].append((time.process_time() - started) / len(batch))
print(json.dumps({
    "per_event_us": {name: statistics.median(values) * 1e6 for name, values in figures.items()},
    "rounds": rounds, "per_round": per_round,
    "calls": {op: n - calls_before.get(op, 0) for op, n in canned.calls.items()},
}))
"""

LIVEKIT_KEY, LIVEKIT_SECRET = "APIbench", "bench-secret-0123456789abcdef0123456789"
USAGE_CLIENT, USAGE_SECRET = "bench-app", "bench-usage-secret-0123456789abcdef"
STRIPE_SECRET = "whsec_bench0123456789"


def _events(count: int) -> dict[str, list[dict[str, Any]]]:
    from kilo_dev.apigw import http_api_event  # noqa: PLC0415
    from kilo_dev.signing import livekit_authorization, timestamped_hmac  # noqa: PLC0415

    now = int(time.time())
    template = json.loads((ROOT / "tests/fixtures/livekit/participant_joined.json").read_text())
    livekit, usage, stripe = [], [], []
    stamp = time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime(now - 120))
    for index in range(count):
        template["id"] = f"EV_bench{index:08d}"
        template["participant"]["sid"] = f"PA_bench{index:08d}"
        body = json.dumps(template, separators=(",", ":")).encode()
        headers = {"authorization": livekit_authorization(body, LIVEKIT_KEY, LIVEKIT_SECRET)}
        livekit.append(http_api_event("POST", "/webhooks/livekit", body, headers))
        report = {"idempotency_key": f"bench-{index:08d}", "account_id": "acct_bench", "meter": "messages",
                  "quantity": 3, "timestamp": stamp}  # fmt: skip
        body = json.dumps({"events": [report]}).encode()
        headers = {"content-type": "application/json", "x-kilo-client": USAGE_CLIENT,
                   "x-kilo-signature": timestamped_hmac(body, USAGE_SECRET, now)}  # fmt: skip
        usage.append(http_api_event("POST", "/v1/usage", body, headers))
        event = {"id": f"evt_bench{index:08d}", "object": "event", "type": "invoice.paid", "created": now,
                 "livemode": False, "data": {"object": {"id": f"in_bench{index}", "object": "invoice"}}}  # fmt: skip
        body = json.dumps(event).encode()
        headers = {"content-type": "application/json", "stripe-signature": timestamped_hmac(body, STRIPE_SECRET, now)}
        stripe.append(http_api_event("POST", "/webhooks/stripe", body, headers))
    return {"livekit": livekit, "usage": usage, "stripe": stripe}


def per_event(count: int, rounds: int) -> dict[str, Any]:
    """Run in the Lambda-shaped package (what Lambda would load), one process pinned to one core."""
    from bench import cold_start  # noqa: PLC0415
    from kilo_billing.account_items import profile_to_item  # noqa: PLC0415
    from kilo_billing.accounts import AccountProfile  # noqa: PLC0415

    _build_package()
    functions = [f for f in cold_start.subjects({}) if f.folder == "functions/webhook_ingest"]
    environment = _lambda_env(functions)
    secrets = {
        environment["LIVEKIT_KEYS_SECRET_NAME"]: json.dumps({LIVEKIT_KEY: LIVEKIT_SECRET}),
        environment["USAGE_SECRETS_SECRET_NAME"]: json.dumps(
            {USAGE_CLIENT: {"secrets": [USAGE_SECRET], "accounts": "*"}}
        ),
        environment["STRIPE_SECRET_NAME"]: json.dumps({"webhook_secrets": [STRIPE_SECRET]}),
    }
    paths = {}
    for kind, events in _events(count).items():
        paths[kind] = str(WORK / f"{kind}_events.json")
        Path(paths[kind]).write_text(json.dumps(events))
    spec = {"secrets": secrets, "items": [profile_to_item(AccountProfile.default("acct_bench"))], "events": paths,
            "livekit_key": LIVEKIT_KEY, "livekit_secret": LIVEKIT_SECRET, "usage_secret": USAGE_SECRET,
            "stripe_secret": STRIPE_SECRET, "rounds": rounds, "per_round": max(1, count // rounds)}  # fmt: skip
    spec_path, script = WORK / "per_event.json", WORK / "measure_per_event.py"
    spec_path.write_text(json.dumps(spec, default=str))
    script.write_text(_MEASURE)
    command = [sys.executable, "-S", str(script), str(spec_path)]
    if shutil.which("taskset"):
        command = ["taskset", "-c", "0", *command]
    result = subprocess.run(command, env=environment, check=False, capture_output=True, text=True)
    if result.returncode:
        raise RuntimeError(f"the per-event measurement failed:\n{result.stderr[-4000:]}")
    measured: dict[str, Any] = json.loads(result.stdout.strip().splitlines()[-1])
    return measured


ROWS = [
    (
        "LiveKit webhook",
        "livekit floor",
        "livekit handler",
        "PyJWT verify + SHA-256 + `json.loads` and the fields",
        2.0,
    ),
    ("usage API, batch of 1", "usage floor", "usage handler", "HMAC-SHA256 + `json.loads` and the fields", 2.5),
    ("Stripe webhook", "stripe floor", "stripe handler", "HMAC-SHA256 + `json.loads` and the fields", 2.5),
]


def _write_doc(measured: dict[str, Any]) -> str:
    figures = measured["per_event_us"]
    when = time.strftime("%Y-%m-%d %H:%M UTC", time.gmtime())
    load = os.getloadavg()
    rows = []
    for route, floor, handler, what, target in ROWS:
        ratio = figures[handler] / figures[floor]
        rows.append(f"| {route} | {what}: {figures[floor]:.0f} µs | {figures[handler]:.0f} µs | {ratio:.1f}x"
                    f" | <= {target}x{'' if ratio <= target else ' ✗'} |")  # fmt: skip
    validating = figures["livekit handler, parameter validation on"]
    rows.append(f"| LiveKit webhook, the DynamoDB client's parameter validation on (before) | — | {validating:.0f} µs"
                f" | {validating / figures['livekit floor']:.1f}x | — |")  # fmt: skip
    alone = figures["one PutItem alone (the handler's client and item)"]
    rows.append(f"| one conditional `PutItem` alone through botocore (the handler's client and item, no handler)"
                f" | — | {alone:.0f} µs | {alone / figures['livekit floor']:.1f}x | — |")  # fmt: skip
    table = "\n".join(rows)
    calls = ", ".join(f"{op.split('.')[-1]} {n:,}" for op, n in sorted(measured["calls"].items()))
    where = f"{when}, {platform.machine()}, Python {platform.python_version()}, {os.cpu_count()} cores"
    section = f"""## Ingest: CPU per event (issue 15) — {where}

| route | floor (same process) | whole handler, real boto3 client | handler / floor | target |
|---|---|---|---|---|
{table}

Through `lambda_handler` (API Gateway v2 event in, JSON response out: signature, parse, stored-item build, logging and
metrics to a buffer) with the clients the handler builds itself; their HTTP is answered in-process at botocore's
`before-send` (`bench/aws_stub.CannedAws`), so request serialisation, parameter validation (where on), SigV4 signing
and response parsing are all counted. AWS calls answered in the timed rounds: {calls}. CPU time
(`time.process_time`), one process pinned to one core, {measured["rounds"]} rounds of {measured["per_round"]:,}
distinct events per subject, the floors and handlers taking turns; the median round per event. Load average:
{load[0]:.1f} / {load[1]:.1f} / {load[2]:.1f} (shared machine: other helpers' tests ran at the same time)."""
    return write_section("ingest", section)


def run(quick: bool = False) -> None:
    measured = per_event(count=600 if quick else 3000, rounds=6 if quick else 15)
    print(_write_doc(measured))
