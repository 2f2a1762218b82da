"""Tracing: the X-Ray SDK (Powertools Tracer) loads only when its subsegments are on (D94); otherwise ``tracer`` gives
a do-nothing stand-in with the same surface, and the template turns the switch with one parameter."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

from kilo_dev.template import Template

ROOT = Path(__file__).resolve().parents[2]

PROBE = """
import json, sys
from kilo_billing import observability
tracer = observability.tracer("probe")

@tracer.capture_lambda_handler(capture_response=False)
def handler(event, context):
    with observability.tracer("probe").provider.in_subsegment("## work") as segment:
        segment.put_annotation("records", "3")
    return {"ok": event["n"] + 1}

print(json.dumps({"result": handler({"n": 1}, None), "kind": type(tracer).__name__,
                  "xray": "aws_xray_sdk" in sys.modules}))
"""


def _probe(disabled: str) -> dict[str, object]:
    env = {"PATH": "/usr/bin:/bin", "POWERTOOLS_TRACE_DISABLED": disabled, "AWS_DEFAULT_REGION": "us-east-1",
           "PYTHONPATH": str(ROOT / "layers" / "common")}  # fmt: skip
    out = subprocess.run([sys.executable, "-c", PROBE], env=env, capture_output=True, text=True, check=True)
    loaded: dict[str, object] = json.loads(out.stdout.strip().splitlines()[-1])
    return loaded


@pytest.mark.parametrize(
    ("disabled", "kind", "xray"),
    [pytest.param("true", "NoTracer", False, id="subsegments_off"), pytest.param("false", "Tracer", True, id="on")],
)
def test_given_the_switch_when_a_handler_runs_traced_then_the_sdk_loads_only_when_on(
    disabled: str, kind: str, xray: bool
) -> None:
    found = _probe(disabled)
    assert found == {"result": {"ok": 2}, "kind": kind, "xray": xray}


@pytest.mark.parametrize(("parameter", "expected"), [("false", "true"), ("true", "false")])
def test_given_the_xray_subsegments_parameter_then_every_function_gets_the_matching_switch(
    parameter: str, expected: str
) -> None:
    template = Template(parameters={"Stage": "test", "XRaySubsegments": parameter})
    functions = template.of_type("AWS::Serverless::Function")
    assert functions
    assert {
        name: template.function_environment(name)["POWERTOOLS_TRACE_DISABLED"] for name in functions
    } == dict.fromkeys(functions, expected)
