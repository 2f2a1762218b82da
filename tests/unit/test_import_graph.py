"""Cold start is a budget: each Lambda handler, imported and called cold in a fresh interpreter, must not load the
modules that belong to other functions (the Stripe SDK, aiohttp, pydantic-settings, protobuf, livekit-api).

Every forbidden module below is installed in the dev environment, so each check can fail (a test asserts that too).
web3, eth_account, solana and solders (installed for the crypto function) are forbidden to every other handler.

The Stripe handler may load aiohttp here: the Stripe SDK imports it at import time *if installed* (its async HTTP
fallback), and the dev environment has it for livekit-api. The ingest function does not ship it, which
``test_given_the_ingest_function_package_then_aiohttp_is_not_in_it`` holds, so in Lambda the Stripe SDK finds none.
"""

from __future__ import annotations

import importlib.metadata
import importlib.util
import json
import os
import re
import subprocess
import sys
from dataclasses import dataclass
from functools import cache
from pathlib import Path
from typing import Any, NamedTuple

import pytest
from packaging.requirements import Requirement

from kilo_dev.package import NOT_SHIPPED

ROOT = Path(__file__).resolve().parents[2]


def http_event(path: str) -> dict[str, Any]:
    """An unsigned API Gateway HTTP API (payload 2.0) request: the handler rejects it without any AWS call succeeding."""
    return {
        "version": "2.0",
        "routeKey": f"POST {path}",
        "rawPath": path,
        "rawQueryString": "",
        "headers": {"content-type": "application/json"},
        "requestContext": {
            "http": {"method": "POST", "path": path, "protocol": "HTTP/1.1", "sourceIp": "127.0.0.1"},
            "routeKey": f"POST {path}",
            "stage": "$default",
            "requestId": "import-graph-probe",
        },
        "body": "{}",
        "isBase64Encoded": False,
    }


@dataclass(frozen=True)
class Handler:
    module: str
    event: dict[str, Any] | None  # called cold with this event after the import; None: import only
    forbidden: frozenset[str]  # module names; a dotted name also forbids its submodules


# What the alerts package's side handlers (operator checks, SES bounces) never load: Stripe, HTTP clients, LiveKit,
# protobuf, templates, phone numbers - each adds what of the alert delivery it must not load either.
_NO_OTHER_FUNCTIONS_LIBRARIES = frozenset(
    {"stripe", "aiohttp", "requests", "livekit", "google.protobuf", "jinja2", "phonenumbers"}
)

# The one table to adjust when handler modules are renamed.
HANDLERS = [
    Handler(
        "kilo_webhook_ingest.livekit_handler",
        http_event("/webhooks/livekit"),
        frozenset(
            {
                "stripe",
                "aiohttp",
                "requests",
                "pydantic",
                "pydantic_settings",
                "livekit",
                "google.protobuf",
                "aws_xray_sdk",
            }
        ),
    ),
    Handler(
        "kilo_webhook_ingest.usage_handler",
        http_event("/v1/usage"),
        frozenset({"stripe", "aiohttp", "requests", "pydantic_settings", "livekit.api", "google.protobuf"}),
    ),
    Handler(
        "kilo_webhook_ingest.stripe_handler",
        http_event("/webhooks/stripe"),
        frozenset({"pydantic_settings", "livekit.api"}),
    ),
    Handler(
        "kilo_rate_usage.handler",
        {"Records": []},
        frozenset({"stripe", "aiohttp", "requests", "livekit.api"}),
    ),
    # Called cold it would read its LiveKit keys from Secrets Manager; aiohttp loads only when RoomService is asked.
    Handler("kilo_rate_usage.sweeper_handler", None, frozenset({"stripe", "aiohttp", "requests"})),
    # Invoicing: the hourly starter and the payment-status handler never load the Stripe SDK; the close worker
    # loads it only when it issues a card invoice (the lazy gateway), so called cold with no job it has not.
    Handler(
        "kilo_invoice.start_handler",
        None,
        frozenset({"stripe", "aiohttp", "requests", "livekit.api", "google.protobuf", "kilo_invoice.stripe_adapter"}),
    ),
    Handler(
        "kilo_invoice.close_handler",
        {"Records": []},
        frozenset({"stripe", "aiohttp", "requests", "livekit.api", "google.protobuf", "kilo_invoice.stripe_adapter"}),
    ),
    Handler(
        "kilo_invoice.payment_handler",
        {"Records": []},
        frozenset({"stripe", "aiohttp", "requests", "livekit.api", "google.protobuf", "kilo_invoice.stripe_adapter"}),
    ),
    # The alerts function sends through boto3 (SES v2, SNS) only: no LiveKit, Stripe or HTTP libraries; libphonenumber
    # only when an SMS is about to go (its region, D221).
    Handler(
        "kilo_alerts.handler",
        {"Records": []},
        frozenset({"stripe", "aiohttp", "requests", "livekit.api", "google.protobuf", "jinja2", "phonenumbers"}),
    ),
    # The operator checks (a schedule) read tables and publish counts: never alert delivery (its logic, catalogue and
    # rendering), templates, phone numbers or another function's libraries.
    Handler(
        "kilo_alerts.operator_handler",
        None,
        _NO_OTHER_FUNCTIONS_LIBRARIES | {"kilo_alerts.logic", "kilo_alerts.catalogue", "kilo_alerts.render"},
    ),
    # SES's bounces (D400): the handler writes a mark through its one adapter (kilo_alerts.marks), never the alert
    # delivery's (its adapters, logic and rendering, LiveKit's RoomService, libphonenumber).
    Handler(
        "kilo_alerts.bounce_handler",
        {"Records": []},
        _NO_OTHER_FUNCTIONS_LIBRARIES
        | {"kilo_alerts.adapters", "kilo_alerts.logic", "kilo_alerts.render", "kilo_billing.livekit_rooms"},
    ),
    # The account API loads the Stripe SDK only for a Checkout or Billing Portal page (the lazy pages), and
    # libphonenumber only for a phone number saved or texted a code (D212); a usage request called cold (no
    # claims: 401 before any read) loads none of the other functions' libraries.
    Handler(
        "kilo_account_api.handler",
        {**http_event("/v1/accounts/acct_1/usage"), "routeKey": "GET /v1/accounts/{account_id}/usage"}
        | {
            "requestContext": {
                **http_event("/v1/accounts/acct_1/usage")["requestContext"],
                "http": {
                    "method": "GET",
                    "path": "/v1/accounts/acct_1/usage",
                    "protocol": "HTTP/1.1",
                    "sourceIp": "127.0.0.1",
                },
            },
            "pathParameters": {"account_id": "acct_1"},
            "body": None,
        },
        frozenset(
            {
                "stripe",
                "aiohttp",
                "requests",
                "livekit.api",
                "google.protobuf",
                "kilo_account_api.stripe_adapter",
                "phonenumbers",
                "kilo_rate_usage",
                "web3",
                "solana",
            }
        ),
    ),
    # Crypto: the bills consumer and invoicing's crypto-settled consumer load no chain SDK; the crypto routes load
    # eth_account / solders only inside a wallet verification or a Solana quote, web3 only for an ERC-1271 check.
    Handler(
        "kilo_crypto_watch.bills_handler",
        {"Records": []},
        frozenset({"stripe", "aiohttp", "requests", "web3", "eth_account", "solana", "solders", "livekit.api"}),
    ),
    Handler(
        "kilo_crypto_watch.api_handler",
        None,
        frozenset({"stripe", "aiohttp", "requests", "web3", "eth_account", "solana", "solders", "livekit.api"}),
    ),
    # The EVM watcher loads web3 on its first run (a scheduled function: no request waits on its cold start); importing
    # it loads no chain SDK at all, and never Solana's or Stripe's.
    Handler(
        "kilo_crypto_watch.evm_handler",
        None,
        frozenset({"stripe", "aiohttp", "web3", "eth_account", "solana", "solders", "livekit.api"}),
    ),
    Handler(
        "kilo_invoice.crypto_settled_handler",
        {"Records": []},
        frozenset({"stripe", "web3", "eth_account", "solana", "solders", "kilo_crypto_watch", "livekit.api"}),
    ),
    # Cognito's sign-in trigger reads the members table and nothing else: no Stripe, no resolver, no usage reads.
    Handler(
        "kilo_account_api.pretoken_handler",
        None,
        frozenset({"stripe", "aiohttp", "requests", "aws_lambda_powertools.event_handler", "kilo_account_api.handler"}),
    ),
]
# The chain SDKs live only in the crypto function: no other handler may load them.
CHAIN_SDKS = frozenset({"web3", "eth_account", "solana", "solders"})
HANDLERS = [Handler(h.module, h.event, h.forbidden | CHAIN_SDKS) for h in HANDLERS]
# The Solana watcher (called cold with no chain configured) loads solana/solders but no EVM, Stripe or LiveKit code.
HANDLERS.append(
    Handler(
        "kilo_crypto_watch.solana_handler",
        {},
        frozenset({"web3", "eth_account", "stripe", "livekit.api", "google.protobuf"}),
    )
)
PROBE = """
import json, sys
spec = json.loads(sys.stdin.read())
for name in spec["also_import"]:
    __import__(name)
module = __import__(spec["module"], fromlist=["lambda_handler"])
outcome = None
if spec["event"] is not None:
    class Context:
        function_name = "import-graph-probe"
        memory_limit_in_mb = 512
        aws_request_id = "import-graph-probe"
        invoked_function_arn = "arn:aws:lambda:us-east-1:123456789012:function:import-graph-probe"
    try:
        response = module.lambda_handler(spec["event"], Context())
        outcome = response.get("statusCode", "returned") if isinstance(response, dict) else "returned"
    except Exception as exc:
        outcome = type(exc).__name__
print("\\n" + json.dumps({"outcome": outcome, "modules": sorted(sys.modules)}))
"""


def _probe_environment() -> dict[str, str]:
    """The deployed functions' variables, and no AWS credentials: an AWS call fails at signing, before any network."""
    environment = {key: value for key, value in os.environ.items() if not key.startswith(("AWS_", "POWERTOOLS_"))}
    environment.update(
        {
            "AWS_DEFAULT_REGION": "us-east-1",
            "AWS_CONFIG_FILE": os.devnull,
            "AWS_SHARED_CREDENTIALS_FILE": os.devnull,
            "AWS_EC2_METADATA_DISABLED": "true",
            "POWERTOOLS_METRICS_NAMESPACE": "KiloBilling",
            "POWERTOOLS_SERVICE_NAME": "import-graph-probe",
            "EVENTS_TABLE_NAME": "kilo-billing-events-probe",
            "USAGE_TABLE_NAME": "kilo-billing-usage-probe",
            "EVENT_BUS_NAME": "kilo-billing-probe",
            "LIVEKIT_KEYS_SECRET_NAME": "kilo-billing/livekit-webhook-keys",
            "USAGE_SECRETS_SECRET_NAME": "kilo-billing/usage-clients",
            "STRIPE_SECRET_NAME": "kilo-billing/stripe-webhook",
            "POISON_QUEUE_URL": "https://sqs.us-east-1.amazonaws.com/123456789012/kilo-billing-rating-poison-probe",
        }
    )
    return environment


@cache
def probe(module: str, event_json: str | None, also_import: tuple[str, ...] = ()) -> tuple[object, frozenset[str]]:
    """Import ``module`` (after ``also_import``) in a fresh interpreter, call its handler with the event if one is
    given, and return the call's outcome and every module then loaded."""
    spec = {"module": module, "event": None if event_json is None else json.loads(event_json)}
    spec["also_import"] = list(also_import)
    result = subprocess.run(
        [sys.executable, "-c", PROBE],
        input=json.dumps(spec),
        capture_output=True,
        text=True,
        check=False,
        env=_probe_environment(),
        timeout=120,
    )
    assert result.returncode == 0, result.stderr
    report = json.loads(result.stdout.strip().splitlines()[-1])
    return report["outcome"], frozenset(report["modules"])


def run(handler: Handler, also_import: tuple[str, ...] = ()) -> tuple[object, frozenset[str]]:
    event = None if handler.event is None else json.dumps(handler.event, sort_keys=True)
    return probe(handler.module, event, also_import)


def loaded_forbidden(modules: frozenset[str], forbidden: frozenset[str]) -> set[str]:
    return {name for name in forbidden if any(loaded == name or loaded.startswith(name + ".") for loaded in modules)}


IDS = [handler.module for handler in HANDLERS]


@pytest.mark.parametrize("handler", HANDLERS, ids=IDS)
def test_given_a_handler_imported_and_called_cold_then_it_does_not_load_modules_of_other_functions(
    handler: Handler,
) -> None:
    outcome, modules = run(handler)
    assert handler.module in modules  # the probe really imported the handler
    if handler.event is not None:
        assert outcome is not None  # ... and really called it (a status code, or the exception it raised)
    assert loaded_forbidden(modules, handler.forbidden) == set(), f"{handler.module} loads another function's modules"


@pytest.mark.parametrize("handler", HANDLERS, ids=IDS)
def test_given_the_table_then_every_forbidden_module_is_installed_so_each_check_can_fail(handler: Handler) -> None:
    missing = {name for name in handler.forbidden if importlib.util.find_spec(name) is None}
    assert not missing, f"not installed, so a check on it cannot fail: {sorted(missing)}"


@pytest.mark.parametrize("handler", HANDLERS, ids=IDS)
def test_given_a_handler_probe_that_also_imports_its_forbidden_modules_then_every_check_trips(handler: Handler) -> None:
    """Negative control: the same probe, with the forbidden modules imported first, sees each of them (so a pass above
    means the module was absent, not that the probe was blind to it)."""
    _, modules = probe(handler.module, None, also_import=tuple(sorted(handler.forbidden)))
    assert loaded_forbidden(modules, handler.forbidden) == handler.forbidden


def test_given_the_stripe_key_secret_parser_imported_then_the_stripe_sdk_is_not_loaded() -> None:
    """Invoicing's gateway and the account API's pages read the API key's secret before they build a client: the
    parser is a JSON shape, and reading it loads no SDK."""
    _, modules = probe("kilo_billing.stripe_key", None)
    assert "kilo_billing.stripe_key" in modules
    assert loaded_forbidden(modules, frozenset({"stripe", "kilo_billing.stripe_calls"})) == set()


def test_given_the_stripe_handler_then_the_probe_sees_the_stripe_sdk_it_needs() -> None:
    (stripe_handler,) = [handler for handler in HANDLERS if handler.module.endswith("stripe_handler")]
    _, modules = run(stripe_handler)
    assert loaded_forbidden(modules, frozenset({"stripe"})) == {"stripe"}


def _closure(requirements: list[Requirement]) -> set[str]:
    """The installed distributions these requirements bring, transitively (what a package built from them contains)."""
    pending, found = list(requirements), set[str]()
    while pending:
        requirement = pending.pop()
        name = re.sub(r"[-_.]+", "-", requirement.name).lower()
        if name in found or (requirement.marker is not None and not requirement.marker.evaluate({"extra": ""})):
            continue
        found.add(name)
        pending.extend(Requirement(text) for text in importlib.metadata.requires(requirement.name) or [])
    return found


def _requirements(*paths: str) -> list[Requirement]:
    lines = [line.split("#")[0].strip() for path in paths for line in (ROOT / path).read_text().splitlines()]
    return [Requirement(line) for line in lines if line]


def test_given_the_ingest_function_package_then_aiohttp_is_not_in_it() -> None:
    # What Lambda has for the ingest functions: the layer, the function's requirements and the runtime's boto3.
    ingest = _closure(
        [
            *_requirements("layers/common/requirements.txt", "functions/webhook_ingest/requirements.txt"),
            Requirement("boto3"),
        ]
    )
    assert {"stripe", "pyjwt", "pydantic", "botocore"} <= ingest  # the closure followed the requirements
    assert "aiohttp" not in ingest
    assert "protobuf" not in ingest  # the LiveKit webhook is read without it
    # control: the rating functions ship livekit-api, which brings aiohttp, and the same closure sees it
    assert "aiohttp" in _closure(_requirements("functions/rate_usage/requirements.txt"))


# --- the first request served cold: modules loaded, and AWS calls ---------------------------------------------------
# Every function of template.yaml answers its representative first request (bench/cold_start.py: a signed webhook or
# usage batch, a stream record, its schedule's input, an SQS message) in a fresh interpreter, its AWS calls answered
# over HTTP by a canned endpoint on 127.0.0.1 (bench/aws_stub.py). What it then has loaded is held to a ceiling (the
# count measured when the ceiling was set, plus ~2 %: a new import trips it) and to the forbidden list; the
# ingest routes' AWS calls are exact.


class ModuleCount(NamedTuple):
    ours: int  # our packages' modules (kilo_*)
    third_party: int  # the installed libraries' modules


# Loaded by the interpreter or the probe rather than by the route: its entry script, multiprocessing's name for it,
# the dev venv's finder for our editable install (Lambda has none), and setuptools' `distutils-precedence.pth` hook,
# loaded at start-up since the dev venv installs setuptools from its lock (D427; no function zip ships it).
HARNESS = ("__main__", "__mp_main__", "__editable__", "_distutils_hack")


def project_modules(modules: frozenset[str]) -> ModuleCount:
    """How many of ``modules`` are ours and how many third-party: the standard library (``sys.stdlib_module_names``,
    and the build's ``_sysconfigdata_*``) and the harness are not counted."""
    ours = third_party = 0
    for name in modules:
        top = name.split(".", 1)[0]
        if top in sys.stdlib_module_names or top.startswith(("_sysconfigdata_", *HARNESS)):
            continue
        if top.startswith("kilo_"):
            ours += 1
        else:
            third_party += 1
    return ModuleCount(ours, third_party)


SERVED_FORBIDDEN = {handler.module: handler.forbidden for handler in HANDLERS}
SERVED_FORBIDDEN["kilo_rate_usage.sweeper_handler"] = frozenset({"stripe", "aiohttp", "requests", "livekit.api"})
# The X-Ray SDK stays off unless the template's XRaySubsegments asks for it (D94), on every function.
SERVED_FORBIDDEN = {module: forbidden | {"aws_xray_sdk"} for module, forbidden in SERVED_FORBIDDEN.items()}
# Laziness on the first request: an idle sweep reads no LiveKit keys (Powertools' parameters utility loads with the
# first read); the operator checks never load alert delivery (its logic, catalogue and rendering).
SERVED_FORBIDDEN["kilo_rate_usage.sweeper_handler"] |= {"aws_lambda_powertools.utilities.parameters"}
SERVED_FORBIDDEN["kilo_alerts.operator_handler"] |= {"kilo_alerts.logic", "kilo_alerts.catalogue", "kilo_alerts.render"}
# Each ingest route loads only its own stored-event record and models (D127: each dataclass is ~0.5 ms of a cold start).
SERVED_FORBIDDEN["kilo_webhook_ingest.stripe_handler"] |= {
    "kilo_billing.livekit_events",
    "kilo_billing.usage_events",
    "kilo_webhook_ingest.usage_model",
}
SERVED_FORBIDDEN["kilo_webhook_ingest.livekit_handler"] |= {
    "kilo_billing.stripe_events",
    "kilo_billing.usage_events",
    "kilo_webhook_ingest.usage_model",
}
SERVED_FORBIDDEN["kilo_webhook_ingest.usage_handler"] |= {"kilo_billing.livekit_events", "kilo_billing.stripe_events"}
# What a ceiling counts is what the project controls: our modules (``kilo_*``) and the third-party ones the route
# brings (installed distributions, with the modules their extensions register). The standard library's modules are
# not counted (``project_modules``): which of its internals load varies with the Python patch version, not with us.
# The ingest routes' counts are exact, ours and the third-party ones apart (2026-12-01, after issue 15's cold-start
# work; with the standard library the routes loaded 532, 639 and 550): no margin, so any module of ours or of a
# library added to a webhook's first request shows here.
EXACT_COUNTS = {
    "kilo_webhook_ingest.livekit_handler": ModuleCount(ours=19, third_party=281),
    "kilo_webhook_ingest.usage_handler": ModuleCount(
        ours=32, third_party=340
    ),  # 30 + account_items, entitlement_items (layer stores split, D22)
    "kilo_webhook_ingest.stripe_handler": ModuleCount(ours=19, third_party=269),
}
# The other functions: ours and third-party together, measured on 2026-12-01 (bench/cold_start.py's first requests,
# dev venv) plus 2 %, rounded up: a new import of any weight on a first request trips it. Raise one only with the
# reason in the commit.
MODULE_CEILINGS = {
    "kilo_rate_usage.handler": 329,  # 322
    "kilo_rate_usage.sweeper_handler": 327,  # 320
    "kilo_alerts.handler": 381,  # 373 (a threshold alert sent by email, its batch served: D388)
    "kilo_invoice.start_handler": 322,  # 315
    "kilo_invoice.close_handler": 207,  # 202
    "kilo_invoice.payment_handler": 206,  # 201
    "kilo_alerts.operator_handler": 319,  # 311; +1 pydantic.functional_serializers (CryptoBillReopened.v1 leaves a stall's lost fields out: D434 hcw)
    "kilo_alerts.bounce_handler": 366,  # 358 (SES's permanent bounce: one mark); 2026-12-04, D400
    "kilo_account_api.handler": 416,  # 406 (a signed-in owner's GET usage); +1 member_roles (D294)
    "kilo_crypto_watch.evm_handler": 321,  # 314
    "kilo_crypto_watch.bills_handler": 198,  # 194
    "kilo_invoice.crypto_settled_handler": 206,  # 201
    "kilo_crypto_watch.api_handler": 247,  # 242 (its bodies validated by Powertools and pydantic, D106)
    "kilo_crypto_watch.solana_handler": 235,  # 230
    "kilo_account_api.pretoken_handler": 326,  # 317 (settings, the members adapter, one Query); +1 room_state_items
    # +1 member_roles (the members table's key and the stored-role rule, shared with the crypto routes: D294)
}
# What the probe's first request ends in, where it cannot be served in full without more than AWS: the crypto routes
# validate the body first (Powertools, as the account API does), so the generic request's empty body is a 400 naming
# the missing fields (without it: 401, the authorizer's claims being API Gateway's), and the EVM watcher with no chain
# configured refuses the schedule's chain key - both after importing all they import cold.
# A queue or stream consumer's batch must come back with no item failed ("batch served"): a batch whose record failed
# (the batch processor caught the handler's exception) is not a served request. The four queue consumers without a
# representative message of their own (bench/cold_start.py's QUEUE_REQUESTS) get the generic body ``{}``, which is
# not an event they take: its one record fails, after their cold imports (their ceilings were measured so).
GENERIC_BODY_REFUSED = "1 of 1 failed"
SERVED_OUTCOMES: dict[str, object] = {
    "kilo_crypto_watch.api_handler": 400,
    "kilo_crypto_watch.evm_handler": "UnknownChainError",
    "kilo_invoice.close_handler": GENERIC_BODY_REFUSED,
    "kilo_invoice.payment_handler": GENERIC_BODY_REFUSED,
    "kilo_crypto_watch.bills_handler": GENERIC_BODY_REFUSED,
    "kilo_invoice.crypto_settled_handler": GENERIC_BODY_REFUSED,
}
# hand-counted from the logic: the keys secret, then one conditional PutItem per event; the usage API adds the
# per-client rate-limit counter (one UpdateItem) and one BatchGetItem of the batch's account registrations; Stripe
# stores then publishes
SERVED_CALLS = {
    "kilo_webhook_ingest.livekit_handler": {"secretsmanager.GetSecretValue": 1, "DynamoDB_20120810.PutItem": 1},
    "kilo_webhook_ingest.usage_handler": {
        "secretsmanager.GetSecretValue": 1,
        "DynamoDB_20120810.UpdateItem": 1,
        "DynamoDB_20120810.BatchGetItem": 1,
        "DynamoDB_20120810.PutItem": 1,
    },
    "kilo_webhook_ingest.stripe_handler": {
        "secretsmanager.GetSecretValue": 1,
        "DynamoDB_20120810.PutItem": 1,
        "AWSEvents.PutEvents": 1,
    },
}


def _template_functions() -> list[Any]:
    from bench import cold_start  # noqa: PLC0415

    return cold_start.subjects({})


def _module_of(subject: Any) -> str:
    return str(subject.handler.rsplit(".", 1)[0])


@cache
def served(function: str) -> tuple[dict[str, Any], dict[str, int]]:
    from collections import Counter  # noqa: PLC0415
    from tempfile import TemporaryDirectory  # noqa: PLC0415

    from bench import cold_start  # noqa: PLC0415

    secrets: dict[str, str] = {}
    (subject,) = [candidate for candidate in cold_start.subjects(secrets) if candidate.name == function]
    # served as shipped: what ./dev package leaves out of the function's artifact cannot be imported (a distribution's
    # name is its top-level module for every entry of NOT_SHIPPED)
    unshipped = NOT_SHIPPED.get(Path(subject.folder).name, {})
    with TemporaryDirectory() as scratch, cold_start.seeded_stub(secrets) as stub:
        report = cold_start.run_cold(subject, None, stub.url, Path(scratch), unimportable=unshipped)
        return report, dict(Counter(stub.calls))


FUNCTIONS = [subject.name for subject in _template_functions()]
MODULES = {subject.name: _module_of(subject) for subject in _template_functions()}
BATCHES = {
    subject.name for subject in _template_functions() if isinstance(subject.event, dict) and "Records" in subject.event
}


def expected_outcomes(function: str) -> tuple[object, ...]:
    """What a served first request ends in: the outcome SERVED_OUTCOMES names for it, else a batch with no item failed
    (a queue or stream consumer), else 200 or a handler's plain return (an API route; a schedule, Cognito)."""
    from bench.cold_start import BATCH_SERVED  # noqa: PLC0415

    module = MODULES[function]
    if module in SERVED_OUTCOMES:
        return (SERVED_OUTCOMES[module],)
    return (BATCH_SERVED,) if function in BATCHES else (200, "returned")


@pytest.mark.parametrize("function", FUNCTIONS)
def test_given_a_function_of_the_template_when_its_first_request_is_served_cold_then_its_modules_stay_bounded(
    function: str,
) -> None:
    module = MODULES[function]
    assert module in MODULE_CEILINGS or module in EXACT_COUNTS, (
        f"{function}: give {module} a module ceiling (and forbidden modules) here"
    )
    report, _ = served(function)
    loaded = frozenset(report["modules"])
    assert module in loaded
    # the request was served, not refused (or ended where SERVED_OUTCOMES says, for a stated reason)
    assert report["outcome"] in expected_outcomes(function), report["outcome"]
    assert loaded_forbidden(loaded, SERVED_FORBIDDEN[module]) == set()
    count = project_modules(loaded)
    if module in EXACT_COUNTS:
        exact = EXACT_COUNTS[module]
        assert count.ours <= exact.ours, f"{module} loaded {count}"
        assert count.third_party <= exact.third_party, f"{module} loaded {count}"
    else:
        assert sum(count) <= MODULE_CEILINGS[module], f"{module} loaded {count}"


def test_given_the_bench_sqs_message_then_it_carries_the_attributes_lambda_always_sends() -> None:
    """Lambda's SQS poller hands every record its system attributes (the alerts handler reads the receive count):
    the bench's message has them, a first receive."""
    from bench import cold_start  # noqa: PLC0415

    (record,) = cold_start._sqs_batch("{}")["Records"]
    attributes = record["attributes"]
    assert set(attributes) == {
        "ApproximateReceiveCount",
        "SentTimestamp",
        "SenderId",
        "ApproximateFirstReceiveTimestamp",
    }
    assert attributes["ApproximateReceiveCount"] == "1"
    assert int(attributes["SentTimestamp"]) <= int(attributes["ApproximateFirstReceiveTimestamp"])


def test_given_an_alert_whose_record_the_handler_cannot_take_when_served_cold_then_its_failed_batch_is_the_outcome() -> (
    None
):
    """Negative control of the batch outcome: the alerts message without its system attributes (what the bench sent
    before D388) fails in the handler, and the batch processor's answer names it failed - not "batch served", not
    a plain return the bounded test would take."""
    from tempfile import TemporaryDirectory  # noqa: PLC0415

    from bench import cold_start  # noqa: PLC0415

    secrets: dict[str, str] = {}
    (subject,) = [candidate for candidate in cold_start.subjects(secrets) if candidate.name == "AlertsFunction"]
    subject.event["Records"][0]["attributes"] = {}
    with TemporaryDirectory() as scratch, cold_start.seeded_stub(secrets) as stub:
        report = cold_start.run_cold(subject, None, stub.url, Path(scratch))
        assert report["outcome"] == "1 of 1 failed"
        assert not stub.calls  # it failed before its first AWS call


@pytest.mark.parametrize("function", [name for name in FUNCTIONS if MODULES[name] in SERVED_CALLS])
def test_given_an_ingest_route_when_its_first_request_is_served_then_it_makes_exactly_its_aws_calls(
    function: str,
) -> None:
    _, calls = served(function)
    assert calls == SERVED_CALLS[MODULES[function]]


def test_given_the_served_probe_then_a_forbidden_import_and_a_low_ceiling_would_trip() -> None:
    """Negative control: the served LiveKit request's modules include what the handler itself needs (so an absent
    forbidden module was really absent, not unseen), and its count is far above a ceiling it would have to break."""
    (function,) = [name for name in FUNCTIONS if MODULES[name] == "kilo_webhook_ingest.livekit_handler"]
    report, _ = served(function)
    loaded = frozenset(report["modules"])
    assert loaded_forbidden(loaded, frozenset({"jwt", "botocore", "aws_lambda_powertools"})) == {
        "jwt",
        "botocore",
        "aws_lambda_powertools",
    }
    assert len(loaded) > 300


def test_given_a_route_imported_with_a_library_or_a_standard_module_more_then_only_the_library_is_counted() -> None:
    """Negative control of ``project_modules``: the LiveKit route imported cold with requests first (a library it must
    not load) counts more third-party modules and the same of ours; with asyncio first (standard library, dozens of
    modules) it counts exactly what it counted alone, and with one of our modules more, one more of ours."""
    route = "kilo_webhook_ingest.livekit_handler"
    alone = probe(route, None)[1]
    with_library = probe(route, None, also_import=("requests",))[1]
    with_standard = probe(route, None, also_import=("asyncio",))[1]
    with_ours = probe(route, None, also_import=("kilo_billing.money",))[1]
    assert {"requests", "asyncio", "kilo_billing.money"} & alone == set()
    counted = project_modules(alone)
    assert min(counted) > 0
    assert project_modules(with_library).ours == counted.ours
    assert project_modules(with_library).third_party > counted.third_party
    assert len(with_standard) > len(alone) + 20  # asyncio really loaded, and is not counted
    assert project_modules(with_standard) == counted
    # kilo_billing.money imports only the standard library (decimal): one module of ours more, nothing else counted
    assert project_modules(with_ours) == (counted.ours + 1, counted.third_party)


def test_given_what_the_ingest_artifact_does_not_ship_then_its_routes_are_served_without_it() -> None:
    """Served as shipped (NOT_SHIPPED: the Stripe SDK's HTTP library): the Stripe webhook's first request loads the
    SDK but not requests, which the dev venv has; control: the same probe with the SDK itself made unimportable
    fails, so an unimportable module really cannot load in the probe."""
    from tempfile import TemporaryDirectory  # noqa: PLC0415

    from bench import cold_start  # noqa: PLC0415

    assert set(NOT_SHIPPED["webhook_ingest"]) >= {"requests"}
    (function,) = [name for name in FUNCTIONS if MODULES[name] == "kilo_webhook_ingest.stripe_handler"]
    report, _ = served(function)
    assert report["outcome"] == 200
    assert {"stripe", "requests"} & set(report["modules"]) == {"stripe"}
    assert importlib.util.find_spec("requests") is not None  # the dev venv has it: the probe left it out
    secrets: dict[str, str] = {}
    (subject,) = [candidate for candidate in cold_start.subjects(secrets) if candidate.name == function]
    with (
        TemporaryDirectory() as scratch,
        cold_start.seeded_stub(secrets) as stub,
        pytest.raises(RuntimeError, match="exited 1"),
    ):
        cold_start.run_cold(subject, None, stub.url, Path(scratch), unimportable={"stripe"})
