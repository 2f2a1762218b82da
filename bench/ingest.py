"""Ingest benchmarks.

1. Cold-start import time of the LiveKit webhook handler vs the floor (a bare handler importing boto3 + Powertools
   Logger/Metrics), both measured from a Lambda-shaped package: the function's and the layer's requirements installed
   with ``pip --target`` (no dev dependencies), our packages copied beside them, fresh interpreter per sample,
   ``python -I``; reported as the median of N minus a bare interpreter's start.
2. Verified webhooks per second on one core, in-process, the store stubbed: the whole Lambda handler (API Gateway v2
   event in, JSON response out: JWT + body hash verification, protobuf parse, record, logging and metrics), and the
   logic alone.
"""

from __future__ import annotations

import json
import os
import platform
import shutil
import statistics
import subprocess
import sys
import time
from pathlib import Path

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
    (PACKAGE / "floor_handler.py").write_text(
        "import boto3\n"
        "from aws_lambda_powertools import Logger, Metrics\n"
        "logger = Logger(service='floor')\n"
        "metrics = Metrics(namespace='Floor', service='floor')\n"
        "def dependencies():\n"
        "    return boto3.client('dynamodb')\n"
        "def lambda_handler(event, context):\n"
        "    dependencies()\n"
        "    return {'statusCode': 200}\n"
    )


def _lambda_env() -> dict[str, str]:
    """What the measured process sees: the Lambda-shaped package and the function's configuration, nothing else."""
    return {
        "PATH": os.environ.get("PATH", ""),
        "PYTHONPATH": str(PACKAGE),
        "AWS_DEFAULT_REGION": "us-east-1",
        "EVENTS_TABLE_NAME": "bench-events",
        "USAGE_TABLE_NAME": "bench-usage",
        "POWERTOOLS_METRICS_NAMESPACE": "KiloBilling",
    }


def _time_import(statement: str, samples: int) -> float:
    env = _lambda_env()
    # -S: no site-packages of the dev venv, only the Lambda-shaped package on PYTHONPATH (and the standard library)
    subprocess.run([sys.executable, "-S", "-c", statement], env=env, check=True)  # warm the bytecode cache
    durations = []
    for _ in range(samples):
        start = time.perf_counter()
        subprocess.run([sys.executable, "-S", "-c", statement], env=env, check=True)
        durations.append(time.perf_counter() - start)
    return statistics.median(durations)


def cold_start(samples: int) -> dict[str, float]:
    _build_package()
    bare = _time_import("pass", samples)
    # import + the dependencies a handler builds before its first request (settings, boto3 client), both sides
    floor = _time_import("import floor_handler as h; h.dependencies()", samples) - bare
    livekit = _time_import("import kilo_webhook_ingest.livekit_handler as h; h.dependencies()", samples) - bare
    usage = _time_import("import kilo_webhook_ingest.usage_handler as h; h.dependencies()", samples) - bare
    return {"floor_s": floor, "livekit_s": livekit, "usage_s": usage, "ratio": livekit / floor}


_MEASURE = """
import io, json, os, sys, time
from contextlib import redirect_stdout
from kilo_webhook_ingest import livekit_handler
from kilo_webhook_ingest.dependencies import LiveKitDependencies
from kilo_webhook_ingest.http import InvocationDeadline, raw_request
from kilo_webhook_ingest.logic import ingest_livekit
from kilo_webhook_ingest.ports import PutResult
from kilo_webhook_ingest.settings import IngestSettings

events = json.load(open(sys.argv[1]))
key, secret = sys.argv[2], sys.argv[3]

class NullStore:
    def put_new(self, item):
        return PutResult(stored=True)

class StaticSecrets:
    def livekit_keys(self):
        return {key: secret}

class Context:
    function_name, memory_limit_in_mb = "bench", 1024
    invoked_function_arn, aws_request_id = "arn:aws:lambda:us-east-1:0:function:bench", "bench"
    def get_remaining_time_in_millis(self):
        return 10_000

settings = IngestSettings(events_table="bench-events")
store, secrets = NullStore(), StaticSecrets()
livekit_handler.dependencies = lambda: LiveKitDependencies(settings, store, secrets)
sink = io.StringIO()
livekit_handler.log.registered_handler.setStream(sink)
for event in events[:200]:  # warm-up
    livekit_handler.lambda_handler(event, Context())
start = time.perf_counter()
with redirect_stdout(sink):
    for event in events:
        response = livekit_handler.lambda_handler(event, Context())
        assert response["statusCode"] == 200, response["body"]
handler_rate = len(events) / (time.perf_counter() - start)
requests = [raw_request(event, settings.max_livekit_body_bytes) for event in events]
deadline = InvocationDeadline(Context())
start = time.perf_counter()
for request in requests:
    ingest_livekit(request, secrets, store, settings, 1_771_351_908_000, deadline)
logic_rate = len(events) / (time.perf_counter() - start)
print(json.dumps({"handler_per_s": handler_rate, "logic_per_s": logic_rate, "count": len(events)}))
"""


def throughput(count: int) -> dict[str, float]:
    """Run in the Lambda-shaped package (what Lambda would load), one process pinned to one core."""
    from kilo_dev.apigw import http_api_event  # noqa: PLC0415
    from kilo_dev.signing import livekit_authorization  # noqa: PLC0415

    _build_package()
    key, secret = "APIbench", "bench-secret-0123456789abcdef0123456789"
    template = json.loads((ROOT / "tests/fixtures/livekit/participant_joined.json").read_text())
    events = []
    for index in range(count):
        template["id"] = f"EV_bench{index:08d}"
        template["participant"]["sid"] = f"PA_bench{index:08d}"
        body = json.dumps(template, separators=(",", ":")).encode()
        headers = {"authorization": livekit_authorization(body, key, secret)}
        events.append(http_api_event("POST", "/webhooks/livekit", body, headers))
    events_file = WORK / "livekit_events.json"
    events_file.write_text(json.dumps(events))
    script = WORK / "measure_livekit.py"
    script.write_text(_MEASURE)
    env = _lambda_env()
    command = [sys.executable, "-S", str(script), str(events_file), key, secret]
    if shutil.which("taskset"):
        command = ["taskset", "-c", "0", *command]
    result = subprocess.run(command, env=env, check=True, capture_output=True, text=True)
    measured: dict[str, float] = json.loads(result.stdout.strip().splitlines()[-1])
    return measured


def _write_doc(cold: dict[str, float], rate: dict[str, float]) -> str:
    where = f"{time.strftime('%Y-%m-%d')}, {platform.machine()}, Python {platform.python_version()}"
    section = f"""## Ingest (issue 3) — {where}, \
{os.cpu_count()} cores

| measure | result | target |
|---|---|---|
| floor: bare handler, boto3 + Powertools Logger/Metrics + a DynamoDB client | {cold["floor_s"] * 1000:.0f} ms | — |
| LiveKit webhook handler import + dependencies | {cold["livekit_s"] * 1000:.0f} ms | — |
| ratio LiveKit handler / floor | {cold["ratio"]:.2f}x | <= 1.3x |
| usage API handler import (Powertools resolver + pydantic) | {cold["usage_s"] * 1000:.0f} ms | — |
| verified webhooks/s, one core, whole Lambda handler, store stubbed | {rate["handler_per_s"]:,.0f} | >= 2,000 |
| verified webhooks/s, one core, logic only (verify + parse + record) | {rate["logic_per_s"]:,.0f} | — |

Import times: median of fresh `python -c "import h; h.dependencies()"` runs from a Lambda-shaped package (`pip --target`
of the layer's and the function's requirements plus boto3; no dev dependencies such as `cryptography`), minus a bare
interpreter's start; `dependencies()` builds what a handler needs before its first request (settings, boto3 client).
Throughput: {rate["count"]:,.0f} distinct signed `participant_joined` events through
`lambda_handler` (API Gateway v2 event → JWT + sha256 check → protobuf parse → stored-item build → JSON response, logs
to a buffer)."""
    return write_section("ingest", section)


def run(quick: bool = False) -> None:
    cold = cold_start(samples=5 if quick else 21)
    rate = throughput(count=500 if quick else 5000)
    print(_write_doc(cold, rate))
