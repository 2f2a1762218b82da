"""Every function the template deploys is traced by the Powertools Tracer (D94's ``XRaySubsegments``): with its
subsegments on, each handler is wrapped by the Tracer and the X-Ray SDK loads; off, it loads nowhere. The LiveKit
webhook is the one exception, by choice (its cold start; D94): it never loads the SDK. Each handler is imported in its
interpreter per switch, with the template's environment; a handler is traced when the Tracer's own wrapper is in its
decorator chain (``functools.wraps`` keeps the name and module, not the code), and the LiveKit webhook in the same run
is the negative control."""

from __future__ import annotations

import json
import os
import subprocess
import sys

import pytest

from kilo_dev.template import Template

UNTRACED = {"LiveKitWebhookFunction"}  # the webhook's cold start (D94): Lambda's active tracing only

PROBE = """
import importlib, json, sys
found = {}
for module in sys.argv[1:]:
    handler = importlib.import_module(module).lambda_handler
    chain = []
    while handler is not None:
        chain.append(getattr(getattr(handler, "__code__", None), "co_filename", ""))
        handler = getattr(handler, "__wrapped__", None)
    found[module] = any(f.replace("\\\\", "/").endswith("aws_lambda_powertools/tracing/tracer.py") for f in chain)
print(json.dumps({"traced": found, "xray": any(m.split(".")[0] == "aws_xray_sdk" for m in sys.modules)}))
"""


def _handlers() -> dict[str, tuple[str, dict[str, str]]]:
    template = Template(parameters={"Stage": "test"})
    return {
        name: (str(spec["Properties"]["Handler"]).rsplit(".", 1)[0], template.function_environment(name))
        for name, spec in template.of_type("AWS::Serverless::Function").items()
    }


def _probe(modules: list[str], environment: dict[str, str], disabled: str) -> dict[str, object]:
    env = {
        **{k: v for k, v in environment.items() if isinstance(v, str)},
        "PATH": "/usr/bin:/bin",
        "PYTHONPATH": os.pathsep.join(p for p in sys.path if p),
        "AWS_DEFAULT_REGION": "us-east-1",
        "AWS_ACCESS_KEY_ID": "testing",
        "AWS_SECRET_ACCESS_KEY": "testing",
        "POWERTOOLS_TRACE_DISABLED": disabled,
    }
    out = subprocess.run([sys.executable, "-c", PROBE, *modules], env=env, capture_output=True, text=True, check=False)
    assert out.returncode == 0, out.stderr[-2000:]
    answer: dict[str, object] = json.loads(out.stdout.strip().splitlines()[-1])
    return answer


def test_the_template_deploys_the_handlers_this_test_knows() -> None:
    handlers = _handlers()
    assert len(handlers) == 18  # D400 added the SES bounces handler
    assert handlers["LiveKitWebhookFunction"][0] == "kilo_webhook_ingest.livekit_handler"
    assert handlers["StripeWebhookFunction"][0] == "kilo_webhook_ingest.stripe_handler"


def _all() -> tuple[list[str], dict[str, str]]:
    environment: dict[str, str] = {}
    for _, env in _handlers().values():
        environment.update(env)
    return sorted({module for module, _ in _handlers().values()}), environment


@pytest.mark.parametrize("disabled", ["false", "true"], ids=["subsegments_on", "off"])
def test_given_the_switch_then_every_handler_but_the_livekit_webhook_is_traced_only_when_on(disabled: str) -> None:
    modules, environment = _all()
    on = disabled == "false"
    untraced = {_handlers()[name][0] for name in UNTRACED}
    answer = _probe(modules, environment, disabled)
    assert answer == {"traced": {module: on and module not in untraced for module in modules}, "xray": on}


def test_given_subsegments_on_then_the_livekit_webhook_alone_never_loads_the_xray_sdk() -> None:
    module, environment = _handlers()["LiveKitWebhookFunction"]
    assert _probe([module], environment, "false") == {"traced": {module: False}, "xray": False}
