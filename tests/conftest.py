"""Shared fixtures: AWS on moto (resources created from template.yaml itself), secrets, Lambda context."""

from __future__ import annotations

import contextlib
import json
import os
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any

import boto3
import pytest
from hypothesis import settings as hypothesis_settings

# A real EVM chain (anvil, the test contracts) for the crypto tests: fixtures `anvil_session` and `chain`.
pytest_plugins = ("tests.evm_chain",)

# Property tests are derandomised wherever they run (`./dev test`, CI): the same examples every run and on every
# machine, no example database, no per-example deadline - a red run is reproducible and a slow machine is not a
# failure. `HYPOTHESIS_PROFILE=explore ./dev test` opts into new random examples (failures are saved and replayed).
hypothesis_settings.register_profile("repeatable", derandomize=True, database=None, deadline=None, print_blob=True)
hypothesis_settings.register_profile("explore", deadline=None, print_blob=True)
hypothesis_settings.load_profile(os.environ.get("HYPOTHESIS_PROFILE", "repeatable"))

LIVEKIT_KEYS = {
    "APIkeyCurrent": "current-secret-0123456789abcdef0123456789",
    "APIkeyPrevious": "previous-secret-abcdef-0123456789abcdef",
}
USAGE_CLIENTS = {
    "kilo-app": ["usage-secret-new", "usage-secret-old"],
    "other-app": ["other-secret"],
    "scoped-app": ["scoped-secret"],
}
SCOPED_ACCOUNTS = ["acct_7", "acct_scoped"]
# The usage clients secret as deployed: kilo-app may bill every registered account, scoped-app only its list;
# other-app keeps the older shape (a list of secrets), which reads as "every registered account".
USAGE_CLIENTS_SECRET = {
    "kilo-app": {"secrets": USAGE_CLIENTS["kilo-app"], "accounts": "*"},
    "other-app": USAGE_CLIENTS["other-app"],
    "scoped-app": {"secrets": USAGE_CLIENTS["scoped-app"], "accounts": SCOPED_ACCOUNTS},
}
STRIPE_SECRETS = ["whsec_current_0123456789", "whsec_previous_abcdef"]
FUNCTIONS = (
    "LiveKitWebhookFunction",
    "UsageApiFunction",
    "StripeWebhookFunction",
    "RateUsageFunction",
    "SweeperFunction",
)


# The calendar a test runs under (D450). Tests drive their time (issue 9): a test whose data carry dates travels to an
# instant of its own (time_machine). The mark ``wall_clock("<ISO instant>")``, or KILO_TEST_CLOCK=<ISO instant> for a
# whole run, sets the test's wall clock to that instant, ticking on, before its other function fixtures start; the
# test's own travel still decides inside it. A test that passes only while the real date is near its data fails
# under either at once, not on the day the calendar moves past its data.
WALL_CLOCK = "KILO_TEST_CLOCK"
YEARS_AHEAD = "2036-02-29T12:00:00Z"  # the guards' wall clock: a test that reads the calendar fails under it


@pytest.fixture(autouse=True)
def _wall_clock(request: pytest.FixtureRequest) -> Iterator[None]:
    mark = request.node.get_closest_marker("wall_clock")
    instant = mark.args[0] if mark else os.environ.get(WALL_CLOCK)
    if not instant:
        yield
        return
    import time_machine  # noqa: PLC0415

    with time_machine.travel(instant, tick=True):
        yield


@dataclass
class LambdaContext:
    function_name: str = "kilo-billing-test"
    memory_limit_in_mb: int = 1024
    invoked_function_arn: str = "arn:aws:lambda:us-east-1:123456789012:function:kilo-billing-test"
    aws_request_id: str = "00000000-0000-0000-0000-000000000000"
    remaining_ms: int = 10_000

    def get_remaining_time_in_millis(self) -> int:
        return self.remaining_ms


@pytest.fixture
def lambda_context() -> LambdaContext:
    return LambdaContext()


@pytest.fixture(scope="session")
def _shared_botocore_loader() -> Iterator[None]:
    """moto resets boto3's default session per test; share one loader so service models are parsed once per run."""
    import botocore.loaders  # noqa: PLC0415
    import botocore.session  # noqa: PLC0415

    loader = botocore.loaders.create_loader()
    original = botocore.session.create_loader
    botocore.session.create_loader = lambda *args, **kwargs: loader  # type: ignore[assignment]
    yield
    botocore.session.create_loader = original


@pytest.fixture
def aws(monkeypatch: pytest.MonkeyPatch, _shared_botocore_loader: None) -> Iterator[None]:
    """In-process moto for every AWS call made inside the test, its stream records numbered where they land as the
    local stack's moto server numbers them (two writes served at once shared a number, and a stream reader read the
    second again on every page: D448); undone after the test."""
    from moto import mock_aws  # noqa: PLC0415
    from moto.dynamodb.models.table import StreamShard  # noqa: PLC0415

    from kilo_dev import moto_server  # noqa: PLC0415

    monkeypatch.setattr(StreamShard, "__init__", StreamShard.__init__)  # restored after the test
    moto_server.number_stream_records_where_they_land()

    for name, value in {
        "AWS_ACCESS_KEY_ID": "testing",
        "AWS_SECRET_ACCESS_KEY": "testing",
        "AWS_SESSION_TOKEN": "testing",
        "AWS_DEFAULT_REGION": "us-east-1",
        "AWS_REGION": "us-east-1",
        "AWS_ACCOUNT_ID_ENDPOINT_MODE": "disabled",
        "POWERTOOLS_METRICS_NAMESPACE": "KiloBilling",
        "POWERTOOLS_DEV": "false",
    }.items():
        monkeypatch.setenv(name, value)
    with mock_aws():
        yield


@dataclass
class Stack:
    template: Any
    clients: dict[str, Any]

    def table_items(self, logical_id: str = "EventsTable") -> list[dict[str, Any]]:
        name = self.template.physical_name(logical_id)
        items: list[dict[str, Any]] = []
        kwargs: dict[str, Any] = {"TableName": name}
        while True:
            page = self.clients["dynamodb"].scan(**kwargs)
            items.extend(page["Items"])
            if "LastEvaluatedKey" not in page:
                return items
            kwargs["ExclusiveStartKey"] = page["LastEvaluatedKey"]


def _put_secret(client: Any, name: str, value: object) -> None:
    client.create_secret(Name=name, SecretString=json.dumps(value))


@pytest.fixture
def stack(aws: None, monkeypatch: pytest.MonkeyPatch) -> Iterator[Stack]:
    """The template's resources on moto, its secrets filled, and the ingest functions' environment as deployed."""
    from aws_lambda_powertools.utilities import parameters  # noqa: PLC0415

    from kilo_dev.template import Template, provision  # noqa: PLC0415

    template = Template(parameters={"Stage": "test"})
    services = ("dynamodb", "dynamodbstreams", "events", "sns", "sqs", "secretsmanager", "sesv2")
    clients = {name: boto3.client(name) for name in services}
    provision(template, clients)
    _put_secret(clients["secretsmanager"], template.parameters["LiveKitKeysSecretName"], LIVEKIT_KEYS)
    _put_secret(clients["secretsmanager"], template.parameters["UsageClientsSecretName"], USAGE_CLIENTS_SECRET)
    _put_secret(
        clients["secretsmanager"], template.parameters["StripeWebhookSecretName"], {"webhook_secrets": STRIPE_SECRETS}
    )
    for function in FUNCTIONS:
        for key, value in template.function_environment(function).items():
            monkeypatch.setenv(key, value)
    _clear_caches()
    parameters.clear_caches()
    yield Stack(template, clients)
    _clear_caches()
    parameters.clear_caches()


def _clear_caches() -> None:
    """Forget every handler's settings and clients (as a new Lambda container would), plus the caches that live
    outside the functions' settings and dependencies modules."""
    from kilo_alerts import render as alerts_render  # noqa: PLC0415
    from kilo_dev.localstack import forget_handler_caches  # noqa: PLC0415
    from kilo_invoice import crypto_settled_handler  # noqa: PLC0415

    forget_handler_caches()
    alerts_render._template.cache_clear()
    crypto_settled_handler.ledger.cache_clear()


def recreate_table(stack: Stack, logical_id: str = "EventsTable") -> None:
    """Create a table of the template again (after a test deleted it to simulate an outage)."""
    from kilo_dev.template import create_tables  # noqa: PLC0415

    create_tables(stack.template, stack.clients["dynamodb"], only={logical_id})


def register_accounts(stack: Stack, *account_ids: str, tier: str = "personal") -> None:
    """Give accounts a profile in the usage table (signed up 2026-01-01): usage is accepted only for those, and rating
    bills LiveKit minutes only to those (D276). An account already registered keeps its profile."""
    from datetime import UTC, datetime  # noqa: PLC0415

    from kilo_billing.account_store import DynamoAccountDirectory  # noqa: PLC0415
    from kilo_billing.accounts import AccountExistsError, AccountProfile  # noqa: PLC0415
    from kilo_billing.rating import TierChange  # noqa: PLC0415

    directory = DynamoAccountDirectory(stack.clients["dynamodb"], stack.template.physical_name("UsageTable"))
    for account_id in account_ids:
        with contextlib.suppress(AccountExistsError):
            directory.register(AccountProfile(account_id, (TierChange(datetime(2026, 1, 1, tzinfo=UTC), tier),)))


def accounts_registered(*account_ids: str) -> Any:
    """An autouse fixture for a test module whose rooms name these accounts: registered (``register_accounts``) in the
    stack of each test that uses one, as the app registers an account before it creates its rooms - rating sends the
    minutes of an id nobody registered to the unattributed bucket (D276)."""

    @pytest.fixture(autouse=True, name="registered_accounts")
    def registered(request: pytest.FixtureRequest) -> None:
        if "stack" in request.fixturenames:
            register_accounts(request.getfixturevalue("stack"), *account_ids)

    return registered


@dataclass
class AlertsStack:
    """The template's alert path on moto: the rule from the billing bus to the alerts queue (as CloudFormation creates
    it from ``AlertsRule``), the verified sender identity, and the alerts function's environment."""

    stack: Stack
    queue_url: str
    sender: str

    def account_id(self) -> str:
        return self.stack.template.account

    def sent_mail(self) -> list[Any]:
        from moto.ses.models import ses_backends  # noqa: PLC0415

        return list(ses_backends[self.account_id()]["us-east-1"].sent_messages)

    def sent_sms(self) -> list[tuple[str, str]]:
        from moto.sns.models import sns_backends  # noqa: PLC0415

        return list(sns_backends[self.account_id()]["us-east-1"].sms_messages.values())

    def sqs_event(
        self, max_messages: int = 10, visibility_timeout: int | None = None, queue: str = "AlertsQueue"
    ) -> dict[str, Any]:
        """The queue's messages as Lambda's SQS event source hands them to the function (bodies as EventBridge put
        them, the receive count as SQS counts it). ``visibility_timeout=0``: received again at once (a redelivery).
        ``queue``: the template's name of the function's event source (the alerts queue, or the forecast's re-checks
        queue, D366 amended (fq))."""
        sqs = self.stack.clients["sqs"]
        hidden = {} if visibility_timeout is None else {"VisibilityTimeout": visibility_timeout}
        answer = sqs.receive_message(
            QueueUrl=self.stack.template.ref(queue),
            MaxNumberOfMessages=max_messages,
            WaitTimeSeconds=0,
            AttributeNames=["ApproximateReceiveCount"],
            **hidden,
        )
        records = [
            {
                "messageId": message["MessageId"],
                "receiptHandle": message["ReceiptHandle"],
                "body": message["Body"],
                "attributes": {"ApproximateReceiveCount": message["Attributes"]["ApproximateReceiveCount"]},
                "messageAttributes": {},
                "md5OfBody": message["MD5OfBody"],
                "eventSource": "aws:sqs",
                "eventSourceARN": self.stack.template.get_att(queue, "Arn"),
                "awsRegion": "us-east-1",
            }
            for message in answer.get("Messages", [])
        ]
        return {"Records": records}


@pytest.fixture
def alerts_stack(stack: Stack, monkeypatch: pytest.MonkeyPatch) -> AlertsStack:
    """The stack (its rules and the sender identity are provisioned from the template) with the alerts function's
    environment."""
    template = stack.template
    for key, value in template.function_environment("AlertsFunction").items():
        if key != "POWERTOOLS_SERVICE_NAME":
            monkeypatch.setenv(key, value)
    _clear_caches()
    return AlertsStack(stack, template.ref("AlertsQueue"), template.parameters["AlertSenderEmail"])


class CallCounter:
    """Counts AWS API calls a boto3 client makes (by operation name)."""

    def __init__(self) -> None:
        self.calls: list[str] = []

    def __call__(self, model: Any, **_: Any) -> None:
        self.calls.append(model.name)

    def count(self, operation: str) -> int:
        return self.calls.count(operation)


def count_calls(client: Any) -> CallCounter:
    counter = CallCounter()
    client.meta.events.register("before-call.*.*", counter)
    return counter
