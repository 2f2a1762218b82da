"""Template rules that lint cannot see: logs, throttling, alarms, dead ends for async paths (least privilege, checked
on what SAM generates, is in test_generated_iam.py)."""

from __future__ import annotations

import json
import re
from pathlib import Path
from typing import Any

import pytest

from kilo_dev.template import Template

ASYNC_EVENT_TYPES = {"DynamoDB", "Kinesis", "SQS"}


@pytest.fixture(scope="module")
def template() -> Template:
    return Template(parameters={"Stage": "test"})


def functions(template: Template) -> dict[str, dict[str, Any]]:
    found = template.of_type("AWS::Serverless::Function")
    assert found, "the template declares functions"
    return found


def test_given_every_function_then_it_logs_to_its_own_group_with_retention(template: Template) -> None:
    for name, spec in functions(template).items():
        group = spec["Properties"]["LoggingConfig"]["LogGroup"]
        logical = group["Ref"]
        log_group = template.resources[logical]
        assert log_group["Type"] == "AWS::Logs::LogGroup"
        assert "RetentionInDays" in log_group["Properties"], logical
        function_name = template.resolve(spec["Properties"]["FunctionName"])
        assert template.physical_name(logical) == f"/aws/lambda/{function_name}", name


def test_given_the_http_api_then_every_ingest_route_is_wired_and_throttled(template: Template) -> None:
    api = template.resources["IngestApi"]["Properties"]
    routes = {
        f"{event['Properties']['Method']} {event['Properties']['Path']}": name
        for name, spec in functions(template).items()
        for event in spec["Properties"].get("Events", {}).values()
        if event["Type"] == "HttpApi" and event["Properties"].get("ApiId") == {"Ref": "IngestApi"}
    }
    assert routes == {
        "POST /webhooks/livekit": "LiveKitWebhookFunction",
        "POST /v1/usage": "UsageApiFunction",
        "POST /v1/entitlements/check": "UsageApiFunction",
        "POST /webhooks/stripe": "StripeWebhookFunction",
    }
    assert set(api["RouteSettings"]) == set(routes)
    for settings in [api["DefaultRouteSettings"], *api["RouteSettings"].values()]:
        assert settings["ThrottlingRateLimit"] > 0
        assert settings["ThrottlingBurstLimit"] > 0


def test_given_functions_then_handlers_exist_in_their_code_uri(template: Template) -> None:
    for name, spec in functions(template).items():
        module, _, function = spec["Properties"]["Handler"].rpartition(".")
        path = Path(template.path).parent / spec["Properties"]["CodeUri"] / (module.replace(".", "/") + ".py")
        assert path.exists(), f"{name}: {path}"
        assert f"def {function}(" in path.read_text(), name


def test_given_the_events_table_then_it_streams_expires_and_is_retained(template: Template) -> None:
    table = template.resources["EventsTable"]
    assert table["DeletionPolicy"] == "Retain"  # D417 amended (ops2)
    props = table["Properties"]
    assert props["StreamSpecification"]["StreamViewType"] in {"NEW_IMAGE", "NEW_AND_OLD_IMAGES"}
    assert props["TimeToLiveSpecification"] == {"AttributeName": "expires_at", "Enabled": True}
    assert props["PointInTimeRecoverySpecification"]["PointInTimeRecoveryEnabled"] is True


def test_given_ingest_then_5xx_and_signature_spikes_and_store_failures_alarm(template: Template) -> None:
    alarms = template.of_type("AWS::CloudWatch::Alarm")
    metrics = {
        (alarm["Properties"].get("Namespace"), alarm["Properties"].get("MetricName")) for alarm in alarms.values()
    }
    assert {
        ("AWS/ApiGateway", "5xx"),
        ("KiloBilling", "SignatureRejected"),
        ("KiloBilling", "IngestStoreFailed"),
    } <= metrics
    for name, alarm in alarms.items():
        assert alarm["Properties"].get("AlarmActions"), f"{name} notifies nobody"


def test_given_ingest_storing_events_for_rating_when_rating_is_not_invoked_then_an_alarm_breaches(
    template: Template,
) -> None:
    """D389, amended by D416: IteratorAge (RatingLagAlarm) is emitted only when the stream invokes rating, so a
    disabled or stuck trigger needs its own alarm: events stored for rating - ``StoredForRating``, which the LiveKit
    and usage routes count for each event they store (the Stripe route never: rating's stream filter drops source
    stripe) - in two 15-minute windows in a row with no invocation of the rating function. No subtraction: a refused
    probe on the Stripe route takes nothing out of the count."""
    from kilo_billing.observability import Metric  # noqa: PLC0415
    from kilo_webhook_ingest.http import SERVICE  # noqa: PLC0415

    def invocations(alarm: dict[str, Any], function: str) -> bool:
        return any(
            query.get("MetricStat", {}).get("Metric")
            == {
                "Namespace": "AWS/Lambda",
                "MetricName": "Invocations",
                "Dimensions": [{"Name": "FunctionName", "Value": {"Ref": function}}],
            }
            for query in alarm.get("Metrics", [])
        )

    [alarm] = [
        alarm["Properties"]
        for alarm in template.of_type("AWS::CloudWatch::Alarm").values()
        if invocations(alarm["Properties"], "RateUsageFunction")
    ]
    queries = {query["Id"]: query for query in alarm["Metrics"]}
    assert set(queries) == {"stalled", "stored", "rating"}
    assert [query["Id"] for query in alarm["Metrics"] if query["ReturnData"]] == ["stalled"]
    assert queries["stalled"]["Expression"] == "IF(FILL(stored, 0) > 0 AND FILL(rating, 0) == 0, 1, 0)"
    assert Metric.STORED_FOR_RATING.value == "StoredForRating"
    assert queries["stored"]["MetricStat"]["Metric"] == {
        "Namespace": "KiloBilling",
        "MetricName": "StoredForRating",
        "Dimensions": [{"Name": "service", "Value": SERVICE}],
    }
    assert invocations({"Metrics": [queries["rating"]]}, "RateUsageFunction")
    for name in ("stored", "rating"):
        assert (queries[name]["MetricStat"]["Period"], queries[name]["MetricStat"]["Stat"]) == (900, "Sum"), name
    # the ingest functions count under the service the alarm reads
    for function in ("LiveKitWebhookFunction", "UsageApiFunction"):
        variables = template.resources[function]["Properties"]["Environment"]["Variables"]
        assert variables["POWERTOOLS_SERVICE_NAME"] == SERVICE, function
    assert (alarm["EvaluationPeriods"], alarm["DatapointsToAlarm"], alarm["Threshold"]) == (2, 2, 1)
    assert alarm["ComparisonOperator"] == "GreaterThanOrEqualToThreshold"
    # a window with no point at all (unlikely: every input is FILL'd, so a quiet window reads 0) moves nothing
    assert alarm["TreatMissingData"] == "ignore"
    assert alarm["AlarmActions"] == [{"Ref": "OperatorAlarmTopic"}]


def test_given_the_ingest_api_throttling_a_request_then_an_alarm_breaches_but_not_on_the_usage_routes_own_429(
    template: Template,
) -> None:
    """D391: API Gateway's throttle answers 429, a 4xx, so IngestApi5xxAlarm never sees it, and LiveKit gives up
    after ~5 attempts over ~15 s. The access log's 429s (a metric filter) less the usage handler's own 429s (its
    per-client limit, counted as UsageRateLimited once per answer) are the requests the API itself throttled; one
    in five minutes alarms. Bad signatures (401) and refused bodies (400) are not counted at all."""
    from kilo_billing.observability import Metric  # noqa: PLC0415
    from kilo_webhook_ingest.http import SERVICE  # noqa: PLC0415

    access = template.resources["IngestApi"]["Properties"]["AccessLogSettings"]
    assert access["DestinationArn"] == {"Fn::GetAtt": ["IngestApiAccessLogs", "Arn"]}
    logged = json.loads(access["Format"])
    assert logged["status"] == "$context.status"
    # for the operator reading the log (a REST API's throttle reads THROTTLED; the HTTP API docs do not show it): the
    # alarm keys on the status alone
    assert logged["responseType"] == "$context.error.responseType"
    [metric_filter] = [
        spec["Properties"]
        for spec in template.of_type("AWS::Logs::MetricFilter").values()
        if spec["Properties"]["LogGroupName"] == {"Ref": "IngestApiAccessLogs"}
    ]
    assert metric_filter["FilterPattern"] == '{ $.status = "429" }'
    assert metric_filter["MetricTransformations"] == [
        {"MetricNamespace": "KiloBilling", "MetricName": "IngestApi429", "MetricValue": "1"}
    ]
    [alarm] = [
        spec["Properties"]
        for spec in template.of_type("AWS::CloudWatch::Alarm").values()
        if any(
            query.get("MetricStat", {}).get("Metric", {}).get("MetricName") == "IngestApi429"
            for query in spec["Properties"].get("Metrics", [])
        )
    ]
    queries = {query["Id"]: query for query in alarm["Metrics"]}
    assert [query["Id"] for query in alarm["Metrics"] if query["ReturnData"]] == ["throttled"]
    assert queries["throttled"]["Expression"] == "FILL(answered, 0) - FILL(limited, 0)"
    assert queries["answered"]["MetricStat"]["Metric"] == {"Namespace": "KiloBilling", "MetricName": "IngestApi429"}
    assert queries["limited"]["MetricStat"]["Metric"] == {
        "Namespace": "KiloBilling",
        "MetricName": Metric.USAGE_RATE_LIMITED.value,
        "Dimensions": [{"Name": "service", "Value": SERVICE}],
    }
    for name in ("answered", "limited"):
        assert (queries[name]["MetricStat"]["Period"], queries[name]["MetricStat"]["Stat"]) == (300, "Sum"), name
    assert (alarm["EvaluationPeriods"], alarm["Threshold"], alarm["ComparisonOperator"]) == (
        1,
        1,
        "GreaterThanOrEqualToThreshold",
    )
    assert alarm["TreatMissingData"] == "notBreaching"
    assert alarm["AlarmActions"] == [{"Ref": "OperatorAlarmTopic"}]


def test_given_every_asynchronous_event_source_then_it_has_a_dead_end(template: Template) -> None:
    """Streams and queues: an on-failure destination, bounded retries and bisect (streams), partial batch failures."""
    for name, spec in functions(template).items():
        for event_name, event in spec["Properties"].get("Events", {}).items():
            if event["Type"] not in ASYNC_EVENT_TYPES:
                continue
            props = event["Properties"]
            where = f"{name}.{event_name}"
            assert "ReportBatchItemFailures" in props.get("FunctionResponseTypes", []), where
            if event["Type"] in {"DynamoDB", "Kinesis"}:
                assert props["DestinationConfig"]["OnFailure"]["Destination"], where
                assert props["BisectBatchOnFunctionError"] is True, where
                assert 0 <= props["MaximumRetryAttempts"] <= 10, where
    for name, spec in template.of_type("AWS::SQS::Queue").items():
        if name.endswith("DeadLetterQueue"):
            continue
        assert "RedrivePolicy" in spec.get("Properties", {}), f"queue {name} has no DLQ"


ASYNC_INVOKE_TYPES = {"Schedule", "ScheduleV2", "EventBridgeRule", "CloudWatchEvent", "SNS", "S3"}


def test_given_every_function_invoked_asynchronously_then_its_failures_land_in_a_dead_letter_queue(
    template: Template,
) -> None:
    """A schedule (or rule) hands its event to Lambda asynchronously: an error inside the function is retried by
    Lambda, then goes to the function's own on-failure destination - the source's DeadLetterConfig only takes events
    it could not hand over. Both must land in a dead-letter queue (which an alarm watches: the test above)."""
    asynchronous = 0
    for name, spec in functions(template).items():
        events = spec["Properties"].get("Events", {})
        sources = [event for event in events.values() if event["Type"] in ASYNC_INVOKE_TYPES]
        if not sources:
            continue
        asynchronous += 1
        config = spec["Properties"].get("EventInvokeConfig") or {}
        on_failure = ((config.get("DestinationConfig") or {}).get("OnFailure")) or {}
        assert on_failure.get("Type") == "SQS", f"{name}: a run that fails in the function is dropped"
        [queue, _] = on_failure["Destination"]["Fn::GetAtt"]
        assert queue.endswith("DeadLetterQueue"), name
        assert 0 <= config["MaximumRetryAttempts"] <= 2, name
        for event in sources:
            assert event["Properties"].get("DeadLetterConfig"), f"{name}: a run not handed over must land somewhere"
    assert asynchronous >= 5  # the sweeper, invoice start, operator checks and the two chain watchers


def test_given_the_rating_stream_then_it_reads_only_new_livekit_and_usage_events_in_order(template: Template) -> None:
    event = template.resources["RateUsageFunction"]["Properties"]["Events"]["EventsStream"]["Properties"]
    assert event["Stream"] == {"Fn::GetAtt": ["EventsTable", "StreamArn"]}
    assert event["ParallelizationFactor"] == 1  # a room's events stay in order on one shard
    assert event["MaximumRecordAgeInSeconds"] == -1  # billing records are retried, never aged out
    import json  # noqa: PLC0415

    [pattern] = [json.loads(f["Pattern"]) for f in event["FilterCriteria"]["Filters"]]
    assert pattern == {"eventName": ["INSERT"], "dynamodb": {"NewImage": {"source": {"S": ["livekit", "usage"]}}}}


def test_given_every_queue_then_no_stack_operation_deletes_it_a_rolled_back_creation_included(
    template: Template,
) -> None:
    """D390, D425: a dead-letter, poison or on-failure queue holds the only pointer to work not done (rating's
    on-failure queue the unrated batches' ranges, the poison queue the records themselves), and a work queue its
    messages not yet taken (an alert, a Stripe payment event, a crypto bill): CloudFormation deletes a queue it removes
    or replaces unless told to keep it (cfn-lint I3011). ``RetainExceptOnCreate`` also deleted a queue when the stack
    operation that created it rolled back - an UPDATE adding a dead-letter queue too, while the live functions,
    mappings and rules may already have sent to it - with what it held. Every queue is on plain ``Retain``, as the data
    tables (D417 amended (ops2)): a failed first deploy leaves them, empty, for the README's clean-up runbook."""
    queues = template.of_type("AWS::SQS::Queue")
    assert {"RatingDeadLetterQueue", "PoisonRecordDeadLetterQueue", "AlertsQueue", "PaymentEventsQueue"} <= set(queues)
    assert len(queues) == 21
    for name, queue in queues.items():
        assert queue.get("DeletionPolicy") == "Retain", name
        assert queue.get("UpdateReplacePolicy") == "Retain", name


def test_the_clean_up_runbook_names_each_queue_of_the_stage_exactly_not_another_stage_whose_name_ends_the_same(
    template: Template,
) -> None:
    """D425 amended (fops): the runbook for a failed first deploy's queues listed them with
    ``ends_with(@, '-<stage>')``, and ``Stage`` allows hyphens: stage ``dev``'s filter also listed stage
    ``test-dev``'s queues (``kilo-billing-alerts-test-dev`` ends with ``-dev``), which the runbook then deletes when
    empty. It now names each queue whole (``kilo-billing-<name>-<stage>``, its ``get-queue-url`` loop): the names are
    the template's 21, and none is another stage's."""
    # D440 refuses a hyphen in a new stage's name; a stage deployed before may hold one, and whole names serve both
    assert not re.fullmatch(template.body["Parameters"]["Stage"]["AllowedPattern"], "test-dev")
    readme = (Path(__file__).parents[2] / "README.md").read_text()
    runbook = readme[readme.index("Then the queues, the same way") :]
    runbook = runbook[: runbook.index("A queue with messages: stop")]
    assert "ends_with" not in runbook
    [loop] = re.findall(r"for name in ([a-z0-9 -]+); do", runbook)
    assert 'aws sqs get-queue-url --queue-name "kilo-billing-$name-<stage>"' in runbook
    listed = {f"kilo-billing-{name}-test" for name in loop.split()}
    stage = Template(parameters={"Stage": "test"})
    assert listed == {stage.physical_name(name) for name in template.of_type("AWS::SQS::Queue")}
    other = Template(parameters={"Stage": "x-test"})  # another stage's queues: none is named by the loop for "test"
    assert listed.isdisjoint({other.physical_name(name) for name in other.of_type("AWS::SQS::Queue")})


def test_given_every_dead_letter_queue_then_an_alarm_watches_it(template: Template) -> None:
    watched = {
        str(template.resolve(dimension["Value"]))
        for alarm in template.of_type("AWS::CloudWatch::Alarm").values()
        for dimension in alarm["Properties"].get("Dimensions", [])
        if dimension["Name"] == "QueueName"
    }
    queues = {
        template.physical_name(name) for name in template.of_type("AWS::SQS::Queue") if name.endswith("DeadLetterQueue")
    }
    assert queues
    assert queues <= watched


def _consumed_queues(template: Template) -> dict[str, tuple[str, dict[str, Any]]]:
    """Each queue a function polls (an SQS event source): queue resource name -> (function name, event properties)."""
    found: dict[str, tuple[str, dict[str, Any]]] = {}
    for name, spec in functions(template).items():
        for event in spec["Properties"].get("Events", {}).values():
            if event["Type"] == "SQS":
                [queue, _] = event["Properties"]["Queue"]["Fn::GetAtt"]
                found[queue] = (name, event["Properties"])
    return found


def test_given_every_queue_a_function_polls_then_its_visibility_is_six_times_the_function_timeout(
    template: Template,
) -> None:
    """AWS's rule for SQS event sources ("at least six times the configuration timeout on your function"): Lambda
    retries a batch throttled behind a previous one within the visibility, so a throttle does not spend one of the
    five receives that dead-letter a message never processed."""
    default_timeout = template.body["Globals"]["Function"]["Timeout"]
    consumed = _consumed_queues(template)
    assert len(consumed) >= 5  # alerts, invoice close, payment events, crypto bills, crypto settled
    for queue, (function, _) in consumed.items():
        timeout = int(functions(template)[function]["Properties"].get("Timeout", default_timeout))
        visibility = int(template.resources[queue]["Properties"]["VisibilityTimeout"])
        assert visibility >= 6 * timeout, f"{queue}: {visibility} s < 6 x {function}'s {timeout} s"


def test_given_every_queue_a_function_polls_then_an_alarm_watches_the_age_of_its_oldest_message(
    template: Template,
) -> None:
    """A consumer that stops (disabled, throttled to nothing, failing before it reports) leaves messages in the source
    queue, where they expire after its retention without reaching the dead-letter queue: the age alarm says so first."""
    watched = {
        str(template.resolve(dimension["Value"]))
        for alarm in template.of_type("AWS::CloudWatch::Alarm").values()
        if alarm["Properties"].get("MetricName") == "ApproximateAgeOfOldestMessage"
        for dimension in alarm["Properties"].get("Dimensions", [])
        if dimension["Name"] == "QueueName"
    }
    for queue in _consumed_queues(template):
        assert template.physical_name(queue) in watched, f"{queue}: no alarm on the age of its oldest message"


def test_given_every_dead_letter_queue_then_it_keeps_messages_fourteen_days_encrypted(template: Template) -> None:
    """SQS's longest retention: a dead-lettered message waits for the operator's redrive as long as SQS allows."""
    queues = {
        name: spec for name, spec in template.of_type("AWS::SQS::Queue").items() if name.endswith("DeadLetterQueue")
    }
    assert len(queues) >= 10
    for name, spec in queues.items():
        assert int(spec["Properties"]["MessageRetentionPeriod"]) == 14 * 24 * 3600, name
        assert spec["Properties"]["SqsManagedSseEnabled"] is True, name


def test_given_the_template_then_no_secret_value_is_in_it(template: Template) -> None:
    text = template.path.read_text()
    for pattern in (r"whsec_[A-Za-z0-9]{16,}", r"sk_(live|test)_[A-Za-z0-9]{8,}", r"BEGIN [A-Z ]*PRIVATE KEY"):
        assert re.search(pattern, text) is None, pattern


def test_given_the_account_api_then_every_route_but_pricing_and_openapi_needs_the_jwt_authorizer(
    template: Template,
) -> None:
    api = template.resources["AccountApi"]["Properties"]
    authorizer = api["Auth"]["Authorizers"][api["Auth"]["DefaultAuthorizer"]]
    assert authorizer["IdentitySource"] == "$request.header.Authorization"
    assert authorizer["JwtConfiguration"] == {
        "issuer": {"Ref": "AccountApiJwtIssuer"},
        "audience": [{"Ref": "AccountApiJwtAudience"}],
    }
    public = set()
    for spec in functions(template).values():
        for event in spec["Properties"].get("Events", {}).values():
            props = event.get("Properties") or {}
            if event["Type"] != "HttpApi" or props.get("ApiId") != {"Ref": "AccountApi"}:
                continue
            if (props.get("Auth") or {}).get("Authorizer") == "NONE":
                public.add(f"{props['Method']} {props['Path']}")
    assert public == {"GET /v1/pricing", "GET /openapi.json"}


def test_given_the_functions_that_settle_crypto_then_each_reads_the_same_rate_sources_as_the_quotes(
    template: Template,
) -> None:
    """Settlement prices a late ETH/SOL payment at the rate when it was seen: every function that runs settlement
    (the routes' fast path and both watchers) must be configured with the quotes' two sources, not the defaults."""
    wanted = {"PRICE_FEEDS": "{}", "EXCHANGE_PRICE_URL": "https://api.coinbase.com/v2/prices/{asset}-USD/spot"}
    for function in ("CryptoApiFunction", "CryptoEvmWatcherFunction", "SolanaWatchFunction"):
        environment = template.function_environment(function)
        assert {key: environment.get(key) for key in wanted} == wanted, function


def test_given_the_functions_that_text_numbers_then_each_reads_the_same_sms_regions(template: Template) -> None:
    """One list of regions for the account API's codes and the alerts' SMS (D221), from the ``SmsRegions``
    parameter, whose default is the layer's: the US, Canada, the UK, Ireland, Australia, New Zealand (written out)."""
    from kilo_billing.sms_regions import DEFAULT_SMS_REGIONS  # noqa: PLC0415

    wanted = "US,CA,GB,IE,AU,NZ"
    assert template.body["Parameters"]["SmsRegions"]["Default"] == wanted
    assert frozenset(wanted.split(",")) == DEFAULT_SMS_REGIONS
    for function in ("AccountApiFunction", "AlertsFunction"):
        assert template.resources[function]["Properties"]["Environment"]["Variables"]["SMS_REGIONS"] == {
            "Ref": "SmsRegions"
        }, function
        assert template.function_environment(function)["SMS_REGIONS"] == wanted, function


def test_given_the_functions_that_link_the_dashboard_then_each_reads_the_same_dashboard_url(template: Template) -> None:
    """One address for the account API's Stripe return pages and the alerts' email links, from the ``DashboardUrl``
    parameter, whose default is the layer's (``kilo_billing.settings.DEFAULT_DASHBOARD_URL``): the local stack's."""
    from kilo_billing.settings import DEFAULT_DASHBOARD_URL  # noqa: PLC0415

    wanted = "http://127.0.0.1:8000/"
    assert template.body["Parameters"]["DashboardUrl"]["Default"] == wanted == DEFAULT_DASHBOARD_URL
    for function in ("AccountApiFunction", "AlertsFunction"):
        assert template.resources[function]["Properties"]["Environment"]["Variables"]["DASHBOARD_URL"] == {
            "Ref": "DashboardUrl"
        }, function


# SMS_REGIONS values: (the template's SmsRegions pattern accepts, the functions' settings accept) - hand-judged.
# The template is stricter on form only (upper case, no spaces: the one way the template writes it); it never
# accepts what the settings refuse at start, which would deploy and then fail every alert and account API call.
SMS_REGION_VALUES = [
    ("US,CA,GB,IE,AU,NZ", True, True),
    ("US", True, True),
    ("GR", True, True),  # Greece by its ISO code
    ("UA,EE,KE,LU", True, True),  # codes beginning or ending with U, E, K, L: only UK and EL are refused
    ("UK", False, False),  # the ISO code is GB
    ("US,UK", False, False),
    ("EL", False, False),  # the EU's code for Greece; the ISO code is GR
    ("GB,EL,FR", False, False),
    ("USA", False, False),
    ("US,,CA", False, False),
    ("US,", False, False),
    ("", False, False),
    ("1,44", False, False),
    ("UKR", False, False),
    ("us,ca", False, True),  # any case for the settings; the template writes upper case
    ("US, CA", False, True),  # spaces ignored by the settings; the template writes none
]


@pytest.mark.parametrize(("value", "template_accepts", "settings_accept"), SMS_REGION_VALUES)
def test_given_an_sms_regions_value_then_the_template_refuses_at_deploy_what_the_settings_refuse_at_start(
    template: Template, value: str, template_accepts: bool, settings_accept: bool
) -> None:
    """D221 amended: CloudFormation's AllowedPattern is a Java regex matched against the whole value; the
    lookahead used here means the same in Python's ``re``."""
    from kilo_billing.settings import parse_regions  # noqa: PLC0415

    pattern = template.body["Parameters"]["SmsRegions"]["AllowedPattern"]
    assert (re.fullmatch(pattern, value) is not None) == template_accepts
    try:
        parse_regions(value)
    except ValueError:
        accepted = False
    else:
        accepted = True
    assert accepted == settings_accept
    assert settings_accept or not template_accepts


def test_given_the_settings_non_iso_codes_then_the_template_refuses_each(template: Template) -> None:
    """Every code the settings name as not ISO (``_NOT_ISO``, a table that may grow) is refused by the template's
    pattern alone and within a list: a code added there without the template fails here."""
    from kilo_billing.settings import _NOT_ISO  # noqa: PLC0415

    pattern = template.body["Parameters"]["SmsRegions"]["AllowedPattern"]
    assert set(_NOT_ISO) == {"UK", "EL"}  # the two the table above is written for
    for code in _NOT_ISO:
        for value in (code, f"US,{code}", f"{code},US", f"US,{code},CA"):
            assert re.fullmatch(pattern, value) is None, value


def _alarmed_at_the_first(template: Template, metric: str, service: str) -> None:
    """One alarm watches ``metric`` under ``service``'s dimension: namespace KiloBilling, ``Sum >= 1`` (the first
    one), notifying the operator's topic."""
    [alarm] = [
        alarm["Properties"]
        for alarm in template.of_type("AWS::CloudWatch::Alarm").values()
        if alarm["Properties"].get("MetricName") == metric
        and alarm["Properties"]["Dimensions"] == [{"Name": "service", "Value": service}]
    ]
    assert alarm["Namespace"] == "KiloBilling"
    assert (alarm["Statistic"], alarm["Threshold"], alarm["ComparisonOperator"]) == (
        "Sum",
        1,
        "GreaterThanOrEqualToThreshold",
    )
    assert alarm["AlarmActions"] == [{"Ref": "OperatorAlarmTopic"}]


@pytest.mark.parametrize(
    ("function_name", "handler_module"),
    [("PaymentStatusFunction", "payment_handler"), ("InvoiceCloseFunction", "close_handler")],
)
def test_given_a_stripe_lookup_the_payment_status_function_lets_pass_then_its_misconfiguration_alarms(
    template: Template, function_name: str, handler_module: str
) -> None:
    """D316: ``invoice.paid``'s payments lookup failing on our side (a malformed Stripe secret, a revoked key)
    does not fail the event (D301), so no dead-letter queue sees it: the handler's ``StripeMisconfigured`` count, under
    the function's own service name, is watched by an alarm that notifies the operator at the first one. D330: the
    close's credit notes left waiting on our side (the invoice issued, the job done) likewise."""
    import importlib  # noqa: PLC0415

    from kilo_billing.observability import Metric  # noqa: PLC0415

    service = importlib.import_module(f"kilo_invoice.{handler_module}").SERVICE
    function = template.resources[function_name]["Properties"]
    assert function["Environment"]["Variables"]["POWERTOOLS_SERVICE_NAME"] == service
    _alarmed_at_the_first(template, Metric.STRIPE_MISCONFIGURED.value, service)


def test_given_the_alerts_functions_rechecks_setting_blank_then_its_count_alarms_the_operator(
    template: Template,
) -> None:
    """D366 amended (sm): a blank FORECAST_RECHECKS_QUEUE_URL does not stop the alerts (amended (fq2)), so no
    dead-letter queue sees it: the handler's ``ForecastRechecksQueueUnnamed`` count, under the alerts function's
    service name, is watched by one alarm notifying the operator at the first one."""
    from kilo_alerts.handler import SERVICE  # noqa: PLC0415
    from kilo_billing.observability import Metric  # noqa: PLC0415

    function = template.resources["AlertsFunction"]["Properties"]
    assert function["Environment"]["Variables"]["POWERTOOLS_SERVICE_NAME"] == SERVICE == "alerts"
    alarmed = template.of_type("AWS::CloudWatch::Alarm").values()
    assert [a["Properties"].get("MetricName") for a in alarmed].count("ForecastRechecksQueueUnnamed") == 1
    _alarmed_at_the_first(template, Metric.FORECAST_RECHECKS_QUEUE_UNNAMED.value, SERVICE)


def test_given_a_stripe_event_an_operator_must_look_at_then_the_payment_status_function_alarms(
    template: Template,
) -> None:
    """D343/2: an event of another Stripe invoice than ours (not applied), a revision of ours asking another
    amount, a payment short of what ours asks - the event is done, so no dead-letter queue sees it: the handler's
    ``PaymentEventNeedsOperator`` count, under its service name, is watched by an alarm notifying the operator."""
    from kilo_billing.observability import Metric  # noqa: PLC0415
    from kilo_invoice.payment_handler import SERVICE  # noqa: PLC0415

    alarmed = template.of_type("AWS::CloudWatch::Alarm").values()
    assert [a["Properties"].get("MetricName") for a in alarmed].count(Metric.PAYMENT_EVENT_ATTENTION.value) == 1
    _alarmed_at_the_first(template, Metric.PAYMENT_EVENT_ATTENTION.value, SERVICE)


@pytest.mark.parametrize(
    ("function_name", "service"), [("StripeWebhookFunction", "webhook-ingest"), ("PaymentStatusFunction", None)]
)
def test_given_stripe_events_of_another_mode_then_both_stripe_functions_know_the_stages_mode_and_alarm(
    template: Template, function_name: str, service: str | None
) -> None:
    """D349: ingest refuses, and the payment-status function does not apply, a Stripe event of the other
    mode than ``StripeLiveMode`` or of a Connect account; both read the one parameter (test mode by default, as the
    local stack, the demo and the emulator run) and count ``StripeEventForeign``, alarmed at the first one."""
    from kilo_billing.observability import Metric  # noqa: PLC0415
    from kilo_invoice.payment_handler import SERVICE  # noqa: PLC0415

    service = service or SERVICE
    parameter = template.body["Parameters"]["StripeLiveMode"]
    assert (parameter["Default"], parameter["AllowedValues"]) == ("false", ["true", "false"])
    variables = template.resources[function_name]["Properties"]["Environment"]["Variables"]
    assert variables["STRIPE_LIVEMODE"] == {"Ref": "StripeLiveMode"}
    assert variables["POWERTOOLS_SERVICE_NAME"] == service
    _alarmed_at_the_first(template, Metric.STRIPE_EVENT_FOREIGN.value, service)


def test_given_the_sweepers_still_reached_event_then_the_alerts_rule_puts_it_on_the_alerts_queue(
    template: Template,
) -> None:
    """D71 amended (e4): the sweeper publishes ``HardLimitStillReached.v1`` from rating's source (the rate-usage
    publisher's ``SOURCE_RATING``) each run a hard limit stays reached with calls going on; the alerts function enforces
    it on late joiners only if the template's alerts rule matches it (it is no catalogue alert: the catalogue's own
    rule test does not cover it)."""
    from kilo_billing.contracts import SOURCE_RATING, HardLimitStillReachedV1  # noqa: PLC0415

    rule = template.resources["AlertsRule"]["Properties"]
    assert SOURCE_RATING in rule["EventPattern"]["source"]
    assert HardLimitStillReachedV1.DETAIL_TYPE in rule["EventPattern"]["detail-type"]
    assert [target["Arn"] for target in rule["Targets"]] == [{"Fn::GetAtt": ["AlertsQueue", "Arn"]}]


def test_given_solana_runs_whose_listing_server_stays_behind_then_ten_minutes_of_them_in_a_row_alarm(
    template: Template,
) -> None:
    """D91 amended (s1b, review rs2): a run whose listing server stays behind the head after its page was asked
    three times reads nothing and leaves its cursor; the handler counts ``SolanaListingBehind`` for it. One such
    run is ordinary; a minute-by-minute run behind for 10 minutes in a row (10 one-minute periods, each Sum >= 1; a
    minute without one - no data - breaks the row) is a stalled watcher: the operator is told."""
    from kilo_billing.observability import Metric  # noqa: PLC0415
    from kilo_crypto_watch.solana_handler import SERVICE  # noqa: PLC0415

    [alarm] = [
        alarm["Properties"]
        for alarm in template.of_type("AWS::CloudWatch::Alarm").values()
        if alarm["Properties"].get("MetricName") == Metric.SOLANA_LISTING_BEHIND.value
    ]
    assert alarm["Namespace"] == "KiloBilling"
    assert alarm["Dimensions"] == [{"Name": "service", "Value": SERVICE}]
    assert (alarm["Statistic"], alarm["Period"], alarm["EvaluationPeriods"], alarm["DatapointsToAlarm"]) == (
        "Sum",
        60,
        10,
        10,
    )
    assert (alarm["Threshold"], alarm["ComparisonOperator"], alarm["TreatMissingData"]) == (
        1,
        "GreaterThanOrEqualToThreshold",
        "notBreaching",
    )
    assert alarm["AlarmActions"] == [{"Ref": "OperatorAlarmTopic"}]


def test_given_sweeps_whose_still_reached_event_the_bus_refuses_then_three_in_a_row_alarm(template: Template) -> None:
    """D71 amended (e4c): a ``HardLimitStillReached.v1`` the bus refuses no longer fails the sweep (no dead-letter
    queue, no alarm of its own): the handler counts ``StillReachedUnpublished``. One refusal is retried by the next
    run (5 minutes later); three sweeps in a row with one (3 five-minute periods, each Sum >= 1; a sweep without -
    no data - breaks the row) leave a late joiner in a call over the hard limit for 15 minutes: the operator is
    told, like ``RoomServiceUnanswered``."""
    from kilo_billing.observability import Metric  # noqa: PLC0415
    from kilo_rate_usage.sweeper_handler import SERVICE  # noqa: PLC0415

    [alarm] = [
        alarm["Properties"]
        for alarm in template.of_type("AWS::CloudWatch::Alarm").values()
        if alarm["Properties"].get("MetricName") == Metric.STILL_REACHED_UNPUBLISHED.value
    ]
    assert alarm["Namespace"] == "KiloBilling"
    assert alarm["Dimensions"] == [{"Name": "service", "Value": SERVICE}]
    assert (alarm["Statistic"], alarm["Period"], alarm["EvaluationPeriods"], alarm["DatapointsToAlarm"]) == (
        "Sum",
        300,
        3,
        3,
    )
    assert (alarm["Threshold"], alarm["ComparisonOperator"], alarm["TreatMissingData"]) == (
        1,
        "GreaterThanOrEqualToThreshold",
        "notBreaching",
    )
    assert alarm["AlarmActions"] == [{"Ref": "OperatorAlarmTopic"}]


def test_given_a_session_whose_join_livekit_dropped_then_the_operator_is_alarmed_at_the_first(
    template: Template,
) -> None:
    """D375: a participant known only from track events (its join and leave webhooks dropped) is not billed; the
    rating function counts it as ``SessionsJoinLost`` under its service name, alarmed at the first one."""
    from kilo_billing.observability import Metric  # noqa: PLC0415
    from kilo_rate_usage.handler import SERVICE  # noqa: PLC0415

    _alarmed_at_the_first(template, Metric.SESSIONS_JOIN_LOST.value, SERVICE)


@pytest.mark.parametrize("metric", ["SweepJoinsUnwritten", "SweepJoinsAbandoned"])
def test_given_a_synthetic_join_dynamodb_refused_or_a_join_less_participant_given_up_then_the_operator_is_alarmed(
    template: Template, metric: str
) -> None:
    """D375 amended (sw, second round): a synthetic join the sweeper could not write leaves a participant RoomService
    listed unbilled (kind UNKNOWN once its room finishes) - minutes not billed. The sweep goes on and counts
    ``SweepJoinsUnwritten`` under its service name: alarmed at the first one (D392). D393: a join-less
    participant of a room RoomService says is gone, its room_finished not rated, is given up, not billed:
    ``SweepJoinsAbandoned``, alarmed at the first one too."""
    from kilo_billing.observability import Metric  # noqa: PLC0415
    from kilo_rate_usage.sweeper_handler import SERVICE  # noqa: PLC0415

    _alarmed_at_the_first(template, Metric(metric).value, SERVICE)


def test_given_a_signed_livekit_body_refused_as_not_an_event_then_the_operator_is_alarmed_at_the_first(
    template: Template,
) -> None:
    """D396: the LiveKit route verifies the signature before it parses, so a 400 for the body is a signed event
    LiveKit takes as delivered and never resends: ``LiveKitSignedEventRefused``, alarmed at the first one."""
    from kilo_billing.observability import Metric  # noqa: PLC0415
    from kilo_webhook_ingest.http import SERVICE  # noqa: PLC0415

    _alarmed_at_the_first(template, Metric.LIVEKIT_SIGNED_EVENT_REFUSED.value, SERVICE)


def _unalarmed() -> dict[str, tuple[str | None, str]]:
    """Each metric of ``observability.Metric`` that no alarm of its own watches, on purpose: its name -> (the alarm
    that sees the same failure another way, or None; why). A metric signalling money not billed or collected, or an
    event lost, is alarmed instead (D392)."""
    from kilo_billing.observability import Metric as M  # noqa: PLC0415, N817

    outcome = "an ordinary outcome, counted for dashboards"
    answered = "a request refused with an answer to its caller, who sees it; nothing of ours is lost"
    return {
        # ingest
        M.WEBHOOK_STORED: (None, outcome),
        # its LiveKit and usage share is RatingNotInvokedAlarm's input (D416), not what the alarm alarms on
        M.STORED_FOR_RATING: (None, outcome),
        M.WEBHOOK_DUPLICATE: (None, outcome),
        # every refusal, of any route; the signature ones are SignatureRejected, alarmed; a signed LiveKit body refused
        # (LiveKit never resends it) is LiveKitSignedEventRefused, alarmed (D396); a signed Stripe event refused is
        # resent by Stripe for 3 days, and its foreign ones are StripeEventForeign, alarmed
        M.WEBHOOK_REJECTED: (
            "LiveKitSignedEventRefusedAlarm",
            "counts every refusal; the ones that lose an event are counted apart and alarmed (D396)",
        ),
        M.USAGE_RECORDED: (None, outcome),
        M.ENTITLEMENT_ALLOWED: (None, outcome),
        M.ENTITLEMENT_REFUSED: (None, answered),
        M.USAGE_RATE_LIMITED: (None, answered),
        M.USAGE_DUPLICATE: (None, outcome),
        M.USAGE_CONFLICT: (None, answered),  # 409: the same key with another body, the client's own mistake
        # rating
        M.SESSIONS_RATED: (None, outcome),
        M.USAGE_RATED: (None, outcome),
        M.THRESHOLDS_CROSSED: (None, outcome),
        M.POISON_RECORDS: ("PoisonRecordAlarm", "each record is on the poison queue, whose alarm fires"),
        M.STORED_EVENTS_UNDECODABLE: ("PoisonRecordAlarm", "the room's records go to the poison queue"),
        M.RATING_BATCH_FAILED: ("RatingDeadLetterAlarm", "retried by Lambda; what never passes reaches the DLQ"),
        M.SESSIONS_SWEPT: (None, outcome),
        M.SWEEP_FAILED: ("SweeperDeadLetterAlarm", "raised: Lambda retries the run once, then the DLQ"),
        # alerts
        M.ALERTS_SENT: (None, outcome),
        M.ALERTS_DUPLICATE: (None, outcome),
        M.ALERTS_SKIPPED: (None, outcome),  # the customer's preference or contact: nothing to fix of ours
        M.ENFORCEMENT_ACTIONS: (None, outcome),
        M.ALERT_SEND_RETRIED: ("AlertsDeadLetterAlarm", "the queue redelivers; five failures reach the DLQ"),
        M.ABUSE_FLAGS: (None, "each flag is itself an operator alert on the operator topic (OperatorAlerts)"),
        M.OPERATOR_ALERTS: (None, "counts what was already sent to the operator topic"),
        M.FORECAST_RECHECKS_DROPPED: (None, "moot once the month is over; the 100 % alerts still come (D366)"),
        # account API
        M.TIER_REQUEST_KEY_MISSING: (
            None,
            "a client's request refused 400 naming the header: its caller sees it; counted to find keyless callers (D436)",
        ),
        M.TIER_REQUEST_STALE: (
            None,
            "a client's request refused 412 naming If-Match: its caller sees it and reads again; counted to see how "
            "often pages act on a plan changed meanwhile (D441)",
        ),
        # invoicing
        M.CLOSE_JOBS_QUEUED: (None, outcome),
        M.INVOICE_ISSUED: (None, outcome),
        M.INVOICE_CLOSE_FAILED: ("InvoiceCloseDeadLetterAlarm", "the queue redelivers the job; then the DLQ"),
        M.PAYMENT_EVENT_APPLIED: (None, outcome),
        M.PAYMENT_EVENT_IGNORED: (None, outcome),  # about nothing of ours; another invoice is PaymentEventNeedsOperator
        M.PAYMENT_FAILED: (None, "a customer's card declined: PaymentFailed.v1 starts the customer's dunning"),
        # crypto
        M.CRYPTO_TRANSFERS_SEEN: (None, outcome),
        M.CRYPTO_REORGS: (None, "a chain reorganisation, rolled back and re-read by the watcher"),
        M.CRYPTO_PAYMENTS_FINALIZED: (None, outcome),
        M.CRYPTO_PAYMENTS_ORPHANED: (None, "the transaction left the chain: nothing was paid, the bill stays open"),
        M.CRYPTO_RPC_CALLS: (None, outcome),
        M.CRYPTO_UNATTRIBUTED_UNALERTED: (None, "address-poisoning dust, kept on the operator's list (D364)"),
        M.ALERTS_EMAIL_BOUNCED: (
            None,
            "an address the account's own mailbox refused: its required alerts go by SMS instead (D400)",
        ),
        M.ALERTS_EMAIL_SUPPRESSED: (
            None,
            "an address on SES's suppression list (the account's own mailbox): required alerts go by SMS (D410)",
        ),
        M.EMAILS_MARKED_UNDELIVERABLE: (None, "a mark SES's report made: the account's own address, not ours (D400)"),
    }


def test_given_every_metric_the_code_defines_then_an_alarm_watches_it_or_it_is_classified_as_not_alarmed(
    template: Template,
) -> None:
    """D392: ``SweepJoinsUnwritten`` (minutes not billed) was counted and never alarmed, and nothing said so. Every
    name of ``observability.Metric`` is now either watched by an alarm of the template (namespace KiloBilling, the
    operator's topic) or listed in ``_unalarmed`` with its reason - a new metric fails here until it is classified;
    an entry naming the alarm that sees the same failure another way (a dead-letter queue's) names one that exists;
    and no metric is both alarmed and listed."""
    from kilo_billing.observability import Metric  # noqa: PLC0415

    alarms = template.of_type("AWS::CloudWatch::Alarm")
    alarmed = {
        alarm["Properties"]["MetricName"]
        for alarm in alarms.values()
        # a metric-math alarm (D389, D391) names no metric of its own: its inputs are not what it alarms on
        if alarm["Properties"].get("Namespace") == "KiloBilling"
        and alarm["Properties"]["AlarmActions"] == [{"Ref": "OperatorAlarmTopic"}]
    }
    unalarmed = _unalarmed()
    defined = {metric.value for metric in Metric}

    assert defined - alarmed - set(unalarmed) == set(), "alarm these metrics, or classify them in _unalarmed"
    assert alarmed & set(unalarmed) == set(), "alarmed metrics still listed as not alarmed"
    assert set(unalarmed) <= defined
    for name, (alarm, reason) in unalarmed.items():
        assert reason, name
        if alarm is not None:
            assert alarms[alarm]["Properties"]["AlarmActions"] == [{"Ref": "OperatorAlarmTopic"}], name


def test_given_ses_sending_paused_for_the_account_then_the_first_paused_email_alarms_the_operator(
    template: Template,
) -> None:
    """D399: an email SES will not send because our sending is paused (``SendingPausedException``,
    ``AccountSuspendedException``) is retried toward the dead-letter queue (its alarm comes after the five receives,
    ~30 minutes): the handler's ``AlertsSendingPaused`` count, under the alerts function's service name, alarms at
    the first one."""
    from kilo_alerts.handler import SERVICE  # noqa: PLC0415
    from kilo_billing.observability import Metric  # noqa: PLC0415

    assert Metric.ALERTS_SENDING_PAUSED.value == "AlertsSendingPaused"
    _alarmed_at_the_first(template, Metric.ALERTS_SENDING_PAUSED.value, SERVICE)


def test_given_the_alerts_configuration_set_then_its_bounces_and_complaints_reach_the_bounce_handler(
    template: Template,
) -> None:
    """D400: the set every alert email goes through publishes BOUNCE and COMPLAINT events to a topic, delivered raw
    to a queue (a dead-letter queue behind it and behind the subscription) that the bounce handler polls."""
    [destination] = template.of_type("AWS::SES::ConfigurationSetEventDestination").values()
    props = destination["Properties"]
    assert props["ConfigurationSetName"] == {"Ref": "AlertsConfigurationSet"}
    assert sorted(props["EventDestination"]["MatchingEventTypes"]) == ["bounce", "complaint"]
    assert props["EventDestination"]["Enabled"] is True
    topic = props["EventDestination"]["SnsDestination"]["TopicARN"]["Ref"]
    [subscription] = [
        s["Properties"]
        for s in template.of_type("AWS::SNS::Subscription").values()
        if s["Properties"]["TopicArn"] == {"Ref": topic}
    ]
    assert (subscription["Protocol"], subscription["RawMessageDelivery"]) == ("sqs", True)
    [queue, _] = subscription["Endpoint"]["Fn::GetAtt"]
    [dlq, _] = subscription["RedrivePolicy"]["deadLetterTargetArn"]["Fn::GetAtt"]
    assert template.resources[queue]["Properties"]["RedrivePolicy"]["deadLetterTargetArn"] == {
        "Fn::GetAtt": [dlq, "Arn"]
    }
    function, _ = _consumed_queues(template)[queue]
    assert functions(template)[function]["Properties"]["Handler"] == "kilo_alerts.bounce_handler.lambda_handler"
    alerts = functions(template)["AlertsFunction"]["Properties"]["Environment"]["Variables"]
    configuration_set = template.resources["AlertsConfigurationSet"]["Properties"]["Name"]
    assert template.resolve(alerts["SES_CONFIGURATION_SET"]) == template.resolve(configuration_set)


def test_given_the_bounces_event_destination_then_it_is_created_after_the_topic_policy_letting_ses_publish(
    template: Template,
) -> None:
    """D400: SES publishes a validation message to the topic when the destination is created; before the topic's
    policy exists that publish may be refused and the destination's creation fail (AWS CDK adds the same
    dependency)."""
    destination = template.resources["AlertsBouncesEventDestination"]
    depends = destination.get("DependsOn", [])
    assert "AlertsBouncesTopicPolicy" in ([depends] if isinstance(depends, str) else depends)
    policy = template.resources["AlertsBouncesTopicPolicy"]["Properties"]
    assert policy["Topics"] == [destination["Properties"]["EventDestination"]["SnsDestination"]["TopicARN"]]


def test_given_the_bounces_topic_then_only_the_alerts_configuration_set_may_publish_to_it(template: Template) -> None:
    """D400: within one account an identity grant is enough to publish (the alerts role has ``sns:Publish`` on
    ``*``, D382), and a forged bounce would mark any account's address. The topic policy denies ``sns:Publish`` to
    every principal whose request does not come from the alerts configuration set (``aws:SourceArn``, which SES sets
    when it publishes an event; an identity's own call has none, and a missing key matches ``StringNotLike``); the
    Allow for SES names the same set, so the Deny never blocks SES."""
    statements = template.resources["AlertsBouncesTopicPolicy"]["Properties"]["PolicyDocument"]["Statement"]
    [deny] = [s for s in statements if s["Effect"] == "Deny"]
    [allow] = [s for s in statements if s["Effect"] == "Allow"]
    assert (deny["Principal"], deny["Action"], deny["Resource"]) == ("*", "sns:Publish", {"Ref": "AlertsBouncesTopic"})
    assert list(deny["Condition"]) == ["StringNotLike"]
    assert list(deny["Condition"]["StringNotLike"]) == ["aws:SourceArn"]
    set_arn = deny["Condition"]["StringNotLike"]["aws:SourceArn"]
    # the set SES publishes from: the alerts configuration set's name, in this account (not a wildcard over sets)
    assert template.resolve(set_arn).endswith(
        ":123456789012:configuration-set/"
        + template.resolve(template.resources["AlertsConfigurationSet"]["Properties"]["Name"])
    )
    assert allow["Principal"] == {"Service": "ses.amazonaws.com"}
    assert allow["Condition"]["StringLike"]["aws:SourceArn"] == set_arn


def test_given_the_functions_that_call_stripe_then_each_sets_a_stripe_timeout_whose_worst_call_fits_its_own(
    template: Template,
) -> None:
    """pi: one Stripe call at its worst - every attempt (1 + the settings' retries: the invoice functions' 2, the
    account API's 1) timing out, plus the SDK's back-off between them (0.5 s, then 1 s) - ends well inside the
    function's timeout: invoice close 3 x 10 + 1.5 = 31.5 s of 120 s, payment status 31.5 s of 60 s, the account API
    2 x 8 + 0.5 = 16.5 s of 29 s. The SDK's default (80 s an attempt) outlasted all three with a single attempt."""
    found = functions(template)
    setting = {
        name: (
            # the account API's own name: the local runtime shares one environment across functions (D402)
            spec["Properties"]["Environment"]["Variables"].get("STRIPE_TIMEOUT_SECONDS")
            or spec["Properties"]["Environment"]["Variables"].get("ACCOUNT_API_STRIPE_TIMEOUT_SECONDS"),
            spec["Properties"]["Timeout"],
        )
        for name, spec in found.items()
        if "STRIPE_API_KEY_SECRET_NAME" in spec["Properties"].get("Environment", {}).get("Variables", {})
    }
    assert setting == {
        "InvoiceCloseFunction": ("10", 120),
        "PaymentStatusFunction": ("10", 120),
        "AccountApiFunction": ("8", 29),
    }


def test_given_a_full_payment_batch_of_ordinary_jobs_then_the_payment_function_starts_every_one_before_the_reserve(
    template: Template,
) -> None:
    """pi (review rpi): a batch is 10 records; at 5 s a job (a moderately slow Stripe), the 10th starts after 9 x 5 =
    45 s, and starts only with the 35 s reserve (D403) still left: the function needs 45 + 35 = 80 s at least. At
    60 s it stopped after 25 s of work (m-7..m-10 left, each a receive spent); 120 s leaves 75 s at the 10th start."""
    from kilo_invoice.settings import InvoiceSettings  # noqa: PLC0415

    reserve = InvoiceSettings.model_fields["job_reserve_seconds"].default
    timeout = functions(template)["PaymentStatusFunction"]["Properties"]["Timeout"]
    batch = template.resources["PaymentStatusFunction"]["Properties"]["Events"]
    [event] = [e for e in batch.values() if e["Type"] == "SQS"]
    assert (event["Properties"]["BatchSize"], reserve) == (10, 35)
    assert timeout - 9 * 5 >= reserve, f"the 10th job starts with {timeout - 45} s left, under the {reserve} s reserve"
    assert template.resources["PaymentEventsQueue"]["Properties"]["VisibilityTimeout"] == 720


@pytest.mark.parametrize(
    ("value", "accepted"),
    [
        ("alerts@kilo.example", True),
        ("ops.alerts+billing@mail.kilo.example", True),
        ("Kilo <alerts@kilo.example>", False),
        ("<alerts@kilo.example>", False),
        ("alerts@kilo.example ", False),
        ("alerts", False),
        ("kilo.example", False),
        ("a@b@kilo.example", False),
    ],
)
def test_given_an_alert_sender_value_then_the_template_accepts_a_bare_address_only(
    template: Template, value: str, accepted: bool
) -> None:
    """pi (review rpi): the alerts role sends only with `ses:FromAddress` equal to AlertSenderEmail (D401), and SES
    compares the bare address: a display-name form ("Kilo <alerts@...>") would have every alert email denied. The
    parameter's AllowedPattern (a Java regex matched against the whole value; this one means the same in Python's
    ``re``) refuses it at deploy, with a ConstraintDescription saying why."""
    parameter = template.body["Parameters"]["AlertSenderEmail"]
    assert (re.fullmatch(parameter["AllowedPattern"], value) is not None) == accepted
    assert "bare address" in parameter["ConstraintDescription"]
    assert re.fullmatch(parameter["AllowedPattern"], parameter["Default"]) is not None


# --- D414..4: alarms that were missing or blind, and the tables' retention ---------------------------------------

DATA_TABLES = {"EventsTable", "UsageTable", "AlertsTable", "MembersTable", "CryptoTable"}


def test_given_every_table_holding_data_then_no_stack_operation_deletes_it_a_rolled_back_creation_included(
    template: Template,
) -> None:
    """D417 amended (ops2): ``RetainExceptOnCreate`` deletes a table when the operation that created it rolls back -
    an UPDATE adding a table too, while functions and schedules are live and may have written answered LiveKit
    events or a new chain's payments into it. A billing system keeps every minute: the five data tables are on plain
    ``Retain`` (a failed first deploy leaves them, empty, for the README's clean-up runbook). The rate-limit table
    (per-minute counters expiring in two minutes) is the one table the stack deletes with itself."""
    tables = template.of_type("AWS::DynamoDB::Table")
    assert set(tables) == DATA_TABLES | {"RateLimitTable"}
    for name in DATA_TABLES:
        assert tables[name].get("DeletionPolicy") == "Retain", name
        assert tables[name].get("UpdateReplacePolicy") == "Retain", name
    assert "DeletionPolicy" not in tables["RateLimitTable"]
    retained = {name for name, spec in template.resources.items() if spec.get("DeletionPolicy") == "Retain"}
    assert retained == DATA_TABLES | set(template.of_type("AWS::SQS::Queue"))  # the queues too (D425)
    assert not [
        name for name, spec in template.resources.items() if spec.get("DeletionPolicy") == "RetainExceptOnCreate"
    ]


SYNC_SEEN_EVENT_TYPES = {"HttpApi", "Api"}  # a failure answers 5xx, which the API's 5xx alarm counts


def test_given_a_function_no_api_queue_stream_or_schedule_invokes_then_its_errors_alarm_the_operator(
    template: Template,
) -> None:
    """D414: a function invoked otherwise (Cognito's sign-in trigger) has no dead-letter queue and no API 5xx to
    tell its failures: a user's sign-in fails and nothing says so. Each such function has an alarm on its own
    ``AWS/Lambda`` ``Errors`` (a timeout counts there too) at the first one, to the operator's topic."""
    seen_elsewhere = ASYNC_EVENT_TYPES | ASYNC_INVOKE_TYPES | SYNC_SEEN_EVENT_TYPES
    unseen = {
        name
        for name, spec in functions(template).items()
        if not {event["Type"] for event in spec["Properties"].get("Events", {}).values()} & seen_elsewhere
    }
    cognito = {
        spec["Properties"]["FunctionName"]["Fn::GetAtt"][0]
        for spec in template.of_type("AWS::Lambda::Permission").values()
        if spec["Properties"]["Principal"] == "cognito-idp.amazonaws.com"
    }
    assert cognito == {"AccountSignInClaimsFunction"}
    assert unseen == cognito
    for function in unseen:
        [alarm] = [
            spec["Properties"]
            for spec in template.of_type("AWS::CloudWatch::Alarm").values()
            if spec["Properties"].get("MetricName") == "Errors"
            and spec["Properties"].get("Dimensions") == [{"Name": "FunctionName", "Value": {"Ref": function}}]
        ]
        assert alarm["Namespace"] == "AWS/Lambda"
        assert (alarm["Statistic"], alarm["Period"], alarm["EvaluationPeriods"]) == ("Sum", 60, 1), function
        assert (alarm["Threshold"], alarm["ComparisonOperator"], alarm["TreatMissingData"]) == (
            1,
            "GreaterThanOrEqualToThreshold",
            "notBreaching",
        )
        assert alarm["AlarmActions"] == [{"Ref": "OperatorAlarmTopic"}]


def _chains_watched(template: Template) -> set[tuple[str, str]]:
    """(service, chain) of every chain a watcher's schedule runs: the EVM watcher's one schedule per chain (its
    ``Input`` names the chain), the Solana watcher's chain ``solana`` (the one Solana chain the settings know)."""
    from kilo_crypto_watch.evm_handler import SERVICE as EVM  # noqa: PLC0415
    from kilo_crypto_watch.settings import CHAIN_DEFAULTS  # noqa: PLC0415
    from kilo_crypto_watch.solana_handler import SERVICE as SOLANA  # noqa: PLC0415

    evm = {
        (EVM, json.loads(event["Properties"]["Input"])["chain"])
        for event in template.resources["CryptoEvmWatcherFunction"]["Properties"]["Events"].values()
    }
    solana = {(SOLANA, key) for key, chain in CHAIN_DEFAULTS.items() if chain["kind"] == "solana"}
    return evm | solana


def test_given_a_chains_watcher_runs_behind_for_fifteen_minutes_then_that_chains_own_alarm_breaches(
    template: Template,
) -> None:
    """D414: ``CryptoWatchBehind`` (a run stopped at its work cap, or short of the head) was counted and never
    alarmed, and both EVM chains counted under one service: a chain whose runs never catch up (payments seen ever
    later) was silent, and one chain's stall could not be told from the other's. Each run now records 1 (behind) or
    0 (caught up) under its service and its chain; an alarm per chain reads the Minimum over 5 minutes - 1 only when
    every run of those minutes was behind - three periods in a row (15 minutes; a caught-up run breaks the row).
    Amended (ops2): the point is the run's lag, and "behind" is at least the chain's tolerance."""
    from kilo_billing.observability import Metric  # noqa: PLC0415

    watched = _chains_watched(template)
    assert watched == {("crypto-evm-watcher", "ethereum"), ("crypto-evm-watcher", "base"), ("crypto-solana", "solana")}
    alarms = {
        (
            {d["Name"]: d["Value"] for d in spec["Properties"]["Dimensions"]}["service"],
            {d["Name"]: d["Value"] for d in spec["Properties"]["Dimensions"]}["chain"],
        ): spec["Properties"]
        for spec in template.of_type("AWS::CloudWatch::Alarm").values()
        if spec["Properties"].get("MetricName") == Metric.CRYPTO_WATCH_BEHIND.value
    }
    assert set(alarms) == watched
    for (service, chain), alarm in alarms.items():
        assert alarm["Namespace"] == "KiloBilling"
        assert alarm["Dimensions"] == [{"Name": "service", "Value": service}, {"Name": "chain", "Value": chain}]
        assert (alarm["Statistic"], alarm["Period"], alarm["EvaluationPeriods"], alarm["DatapointsToAlarm"]) == (
            "Minimum",
            300,
            3,
            3,
        ), chain
        assert (alarm["Threshold"], alarm["ComparisonOperator"], alarm["TreatMissingData"]) == (
            LAG_TOLERANCE[chain],
            "GreaterThanOrEqualToThreshold",
            "notBreaching",
        ), chain
        assert alarm["AlarmActions"] == [{"Ref": "OperatorAlarmTopic"}]


# D414 amended (ops2): the runs record their lag (blocks, slots on Solana), and a chain's alarm tolerates 5 minutes of
# its blocks - a run a block short (a logs backend behind the head's, D386) recorded 1 and alarmed forever at >= 1.
# Block times: Ethereum 12 s slots, Base 2 s blocks, Solana ~400 ms slots.
LAG_TOLERANCE = {"ethereum": 300 // 12, "base": 300 // 2, "solana": int(300 / 0.4)}  # 25, 150, 750


def test_given_every_dead_letter_queue_then_a_second_alarm_notifies_each_new_arrival_while_the_first_stays_unhandled(
    template: Template,
) -> None:
    """D415: a depth alarm (any message visible) notifies once, on entering ALARM: a second batch dead-lettered
    while the first is still there notifies no one. Beside it, each dead-letter queue has an arrivals alarm: the
    increase of its messages (visible + in flight, so an operator reading them - in flight for a while, then visible
    again - is no arrival) from one minute to the next, ``DIFF``, >= 1. ``NumberOfMessagesSent`` would miss what SQS
    moves from a source queue after its receives (AWS: "if a message is sent to a dead-letter queue as a result of a
    failed processing attempt, it isn't captured by this metric")."""
    alarms = template.of_type("AWS::CloudWatch::Alarm")
    queues = {name for name in template.of_type("AWS::SQS::Queue") if name.endswith("DeadLetterQueue")}
    assert len(queues) == 14

    def queue_of(query: dict[str, Any]) -> str | None:
        [dimension] = query["MetricStat"]["Metric"]["Dimensions"]
        assert dimension["Name"] == "QueueName"
        [queue, attribute] = dimension["Value"]["Fn::GetAtt"]
        assert attribute == "QueueName"
        return str(queue)

    depth: dict[str, str] = {}
    arrivals: dict[str, str] = {}
    for name, spec in alarms.items():
        props = spec["Properties"]
        if props.get("MetricName") == "ApproximateNumberOfMessagesVisible" and name.endswith(
            ("DeadLetterAlarm", "PoisonRecordAlarm")
        ):
            depth[props["Dimensions"][0]["Value"]["Fn::GetAtt"][0]] = name
        queries = {query["Id"]: query for query in props.get("Metrics", [])}
        if "added" not in queries:
            continue
        assert queries["added"] == {
            "Id": "added",
            "Label": "messages added since the minute before",
            "Expression": "DIFF(visible + FILL(inflight, 0))",
            "ReturnData": True,
        }, name
        metrics = {
            query_id: queries[query_id]["MetricStat"]["Metric"]["MetricName"] for query_id in ("visible", "inflight")
        }
        assert metrics == {
            "visible": "ApproximateNumberOfMessagesVisible",
            "inflight": "ApproximateNumberOfMessagesNotVisible",
        }, name
        [queue] = {queue_of(queries["visible"]), queue_of(queries["inflight"])}
        # D415 amended (ops2): visible's Maximum + in flight's Minimum lies between the minute's least and most
        # messages (their sum at any sample): an operator's receive (visible -> in flight) or a visibility ending
        # (back) inside a minute reads the same total. Two Maximums added both sides of that move: +N, a false page.
        for query_id, stat in (("visible", "Maximum"), ("inflight", "Minimum")):
            query = queries[query_id]
            assert query["MetricStat"]["Metric"]["Namespace"] == "AWS/SQS"
            assert (query["MetricStat"]["Period"], query["MetricStat"]["Stat"], query["ReturnData"]) == (
                60,
                stat,
                False,
            ), name
        assert (props["EvaluationPeriods"], props["DatapointsToAlarm"], props["Threshold"]) == (2, 1, 1), name
        assert props["ComparisonOperator"] == "GreaterThanOrEqualToThreshold"
        assert props["TreatMissingData"] == "notBreaching"
        assert props["AlarmActions"] == [{"Ref": "OperatorAlarmTopic"}]
        assert queue not in arrivals, f"{queue}: two arrivals alarms"
        arrivals[str(queue)] = name
    assert set(depth) == queues
    assert set(arrivals) == queues
    for queue, name in arrivals.items():
        assert name == depth[queue].removesuffix("Alarm") + "ArrivalsAlarm", queue


# --- D414-D417 amended (ops2): review of this session's alarms ---------------------------------------------

COGNITO_WAIT_SECONDS = 5  # Cognito waits this long for a trigger, invocation overhead and a cold start's init included
INIT_ALLOWANCE_SECONDS = 2  # left of it for the init (Lambda's timeout excludes init) and the invocation's overhead
HANDLER_OWN_SECONDS = 0.5  # the handler's own work beside its one AWS call (the claims, a log line, the EMF flush)


def test_given_the_sign_in_trigger_then_anything_cognito_would_drop_times_out_and_counts_in_its_errors(
    template: Template,
) -> None:
    """D414 amended (ops2): Cognito gives the trigger 5 s in all - init of a cold start and invocation overhead
    included - then retries, and refuses the sign-in after 3 attempts; Lambda's own timeout excludes init. With a
    5 s Lambda timeout a 4.5 s run was dropped by Cognito while Lambda recorded a success: `Errors` 0, no alarm. The
    function's timeout now leaves Cognito's wait room for init, and its one DynamoDB query (``members_by_user``,
    retries and backoff included) fits inside that timeout, so the handler answers or fails before Lambda stops it."""
    from kilo_billing.aws import CallBudget  # noqa: PLC0415
    from kilo_billing.settings import FunctionSettings  # noqa: PLC0415

    props = template.resources["AccountSignInClaimsFunction"]["Properties"]
    timeout = props["Timeout"]
    assert timeout <= COGNITO_WAIT_SECONDS - INIT_ALLOWANCE_SECONDS
    env = props["Environment"]["Variables"]
    fields = FunctionSettings.model_fields
    budget = CallBudget(
        float(env.get("AWS_CONNECT_TIMEOUT_SECONDS", fields["aws_connect_timeout_seconds"].default)),
        float(env.get("AWS_READ_TIMEOUT_SECONDS", fields["aws_read_timeout_seconds"].default)),
        int(env.get("AWS_MAX_ATTEMPTS", fields["aws_max_attempts"].default)),
    )
    # attempts x (connect + read) + standard-mode backoff before each retry (at most 1 s, then 2 s), by hand:
    assert budget.worst_case_seconds == 2 * (0.25 + 0.5) + 1  # 2.5 s
    assert budget.worst_case_seconds + HANDLER_OWN_SECONDS <= timeout


def test_given_an_operator_reading_a_dead_letter_queue_then_its_arrivals_alarm_reads_no_arrival(
    template: Template,
) -> None:
    """D415 amended (ops2): the alarm's value for a minute, the template's two statistics over that minute's samples
    added, is compared with the minute before (``DIFF``). Hand-worked samples (visible, in flight) of a dead-letter
    queue holding 3 messages: minute 1 nothing moves; minute 2 the operator receives all 3 (visible -> in flight);
    minute 3 their visibility ends (in flight -> visible). No message arrived: every minute reads 3, DIFF 0. With
    both statistics ``Maximum`` minute 2 read 3 + 3 = 6: DIFF +3, a page saying 3 messages arrived."""
    statistic = {"Maximum": max, "Minimum": min}
    minutes = [[(3, 0), (3, 0)], [(3, 0), (0, 3)], [(0, 3), (3, 0)]]
    arrivals = {
        name: {query["Id"]: query for query in spec["Properties"]["Metrics"]}
        for name, spec in template.of_type("AWS::CloudWatch::Alarm").items()
        if name.endswith("ArrivalsAlarm")
    }
    assert len(arrivals) == 14
    for name, queries in arrivals.items():
        visible = statistic[queries["visible"]["MetricStat"]["Stat"]]
        inflight = statistic[queries["inflight"]["MetricStat"]["Stat"]]
        totals = [visible(v for v, _ in samples) + inflight(i for _, i in samples) for samples in minutes]
        assert totals == [3, 3, 3], name
    # an arrival is still read: 2 more dead-lettered (visible) in the minute after the operator's receive
    later = [[(0, 3), (2, 3)]]
    for name, queries in arrivals.items():
        visible = statistic[queries["visible"]["MetricStat"]["Stat"]]
        inflight = statistic[queries["inflight"]["MetricStat"]["Stat"]]
        assert [visible(v for v, _ in s) + inflight(i for _, i in s) for s in later] == [5], name


def _arrivals_read(expression: str, minutes: list[tuple[int | None, int | None]]) -> list[int | None]:
    """Each minute's value of an arrivals alarm's ``DIFF(<sum>)`` as CloudWatch's metric math gives it (hand-modelled,
    not the template's code): the sum per minute as ``_held`` reads it (no point where a term has none, unless
    ``FILL``'d), then the minute's sum less the minute before's - no value where either has none."""
    inner = re.fullmatch(r"DIFF\((.+)\)", expression)
    assert inner is not None, expression
    sums = [_held(inner.group(1), visible, inflight) for visible, inflight in minutes]
    return [
        None if before is None or now is None else now - before
        for before, now in zip([None, *sums[:-1]], sums, strict=True)
    ]


def test_given_a_minute_with_no_message_in_flight_then_every_dead_letter_arrivals_alarm_reads_the_arrival(
    template: Template,
) -> None:
    """D415 amended (gops): SQS reports ``ApproximateNumberOfMessagesNotVisible`` only if in-flight messages exist
    (AWS SQS Developer Guide, available CloudWatch metrics, reporting behaviour) - and a dead-letter queue nobody is
    reading has none in flight: unfilled, ``DIFF(visible + inflight)`` had no value in such minutes and a message
    dead-lettered then was no arrival (missing, not breaching). Every arrivals alarm of the template, found by its
    shape (an expression over ``DIFF`` of a queue's visible and in-flight counts, whatever its name), FILLs the
    in-flight term. Hand-worked (visible, in flight) per minute: (1, none), (2, none) - one more message, nobody
    reading - reads +1 (an arrival); (1, none), (0, 1) - the operator receives it - reads 0."""
    shaped: dict[str, str] = {}
    for name, spec in template.of_type("AWS::CloudWatch::Alarm").items():
        queries = spec["Properties"].get("Metrics", [])
        metrics = {q["Id"]: q["MetricStat"]["Metric"]["MetricName"] for q in queries if "MetricStat" in q}
        returned = [q.get("Expression", "") for q in queries if q.get("ReturnData", True)]
        if "ApproximateNumberOfMessagesNotVisible" in metrics.values() and any("DIFF(" in e for e in returned):
            assert metrics == {
                "visible": "ApproximateNumberOfMessagesVisible",
                "inflight": "ApproximateNumberOfMessagesNotVisible",
            }, name
            [shaped[name]] = returned
    queues = {name for name in template.of_type("AWS::SQS::Queue") if name.endswith("DeadLetterQueue")}
    assert len(shaped) == len(queues), sorted(shaped)  # one per dead-letter queue (D415's test pins which)
    for name, expression in shaped.items():
        assert expression == "DIFF(visible + FILL(inflight, 0))", name
        assert _arrivals_read(expression, [(1, None), (2, None)]) == [None, 1], name  # nobody reading: an arrival
        assert _arrivals_read(expression, [(1, None), (0, 1)]) == [None, 0], name  # received: no arrival
        assert _arrivals_read(expression, [(3, 0), (5, 0)]) == [None, 2], name  # both reported: as before


# --- D426: the rating queues' messages running out of their 14 days ----------------------------------------------

AGED_QUEUES = {
    "RatingDeadLetterQueue": "RatingDeadLetterAgeAlarm",
    "PoisonRecordDeadLetterQueue": "PoisonRecordAgeAlarm",
}
WEEK_SECONDS = 7 * 24 * 3600  # CloudWatch's longest evaluation range (Period x EvaluationPeriods <= 604,800 s)


def test_given_a_rating_queue_holding_messages_for_a_week_then_an_alarm_warns_before_their_14_days_run_out(
    template: Template,
) -> None:
    """D426: rating's on-failure and poison queues keep a message 14 days, and their runbooks say to requeue one
    that cannot be replayed yet before those run out - with nothing to warn. ``ApproximateAgeOfOldestMessage`` cannot:
    SQS leaves out of it a message received three or more times and not deleted (AWS SQS Developer Guide, available
    CloudWatch metrics), which is exactly such a message (every replay, dry run or ``--apply``, receives it). The
    alarm reads whether the queue held a message through each hour, for the 168 hours of a week in a row: a message a
    week old has been on the queue every minute of that week, whoever received it."""
    alarms = template.of_type("AWS::CloudWatch::Alarm")
    queues = template.of_type("AWS::SQS::Queue")
    for queue, name in AGED_QUEUES.items():
        assert queues[queue]["Properties"]["MessageRetentionPeriod"] == 14 * 24 * 3600, queue
        props = alarms[name]["Properties"]
        queries = {query["Id"]: query for query in props["Metrics"]}
        assert set(queries) == {"held", "visible", "inflight"}, name
        # in flight is reported only while in-flight messages exist (AWS SQS Developer Guide, available CloudWatch
        # metrics): FILL'd, so an hour without its point still reads the visible ones
        assert (queries["held"]["Expression"], queries["held"]["ReturnData"]) == (
            "visible + FILL(inflight, 0)",
            True,
        ), name
        for query_id, metric in (
            ("visible", "ApproximateNumberOfMessagesVisible"),
            ("inflight", "ApproximateNumberOfMessagesNotVisible"),
        ):
            stat = queries[query_id]["MetricStat"]
            assert queries[query_id]["ReturnData"] is False, name
            assert stat["Metric"]["Namespace"] == "AWS/SQS", name
            assert stat["Metric"]["MetricName"] == metric, name
            assert stat["Metric"]["Dimensions"] == [
                {"Name": "QueueName", "Value": {"Fn::GetAtt": [queue, "QueueName"]}}
            ]
            assert stat["Period"] == 3600, name  # >= 1 hour: the 7-day evaluation range applies (under: 1 day)
        assert (queries["visible"]["MetricStat"]["Stat"], queries["inflight"]["MetricStat"]["Stat"]) == (
            "Maximum",
            "Minimum",
        ), name
        assert props["EvaluationPeriods"] * 3600 == WEEK_SECONDS, name
        assert props["DatapointsToAlarm"] == props["EvaluationPeriods"], name  # every hour of the week
        assert (props["Threshold"], props["ComparisonOperator"]) == (1, "GreaterThanOrEqualToThreshold"), name
        assert props["TreatMissingData"] == "notBreaching", name  # an empty queue stops reporting
        assert props["AlarmActions"] == [{"Ref": "OperatorAlarmTopic"}], name
    aged = {
        name
        for name, spec in alarms.items()
        for query in [
            spec["Properties"],
            *(q.get("MetricStat", {}).get("Metric", {}) for q in spec["Properties"].get("Metrics", [])),
        ]
        if query.get("MetricName") == "ApproximateAgeOfOldestMessage"
        and query["Dimensions"][0]["Value"]["Fn::GetAtt"][0] in AGED_QUEUES
    }
    assert aged == set()  # not on these queues: it leaves out the messages received three times (replayed)


def test_given_a_replay_receiving_the_one_message_mid_hour_then_the_hour_still_reads_it_held() -> None:
    """D426: hand-worked samples (visible, in flight) of a queue holding one message that a replay receives in
    the hour (visible -> in flight, hidden 15 minutes) and that comes back: (1, 0), (0, 1), (1, 0). The template's
    statistics read 1 + 0 = 1 (held); both ``Minimum`` would read 0 + 0 = 0, an hour "empty" that breaks the week's
    row and silences the alarm however old the message."""
    template = Template(parameters={"Stage": "test"})
    statistic = {"Maximum": max, "Minimum": min}
    hour = [(1, 0), (0, 1), (1, 0)]
    emptied = [(1, 0), (0, 0)]  # the message deleted in the hour: the hour may still read held (an over-warning)
    for name in AGED_QUEUES.values():
        queries = {q["Id"]: q for q in template.resources[name]["Properties"]["Metrics"]}
        visible = statistic[queries["visible"]["MetricStat"]["Stat"]]
        inflight = statistic[queries["inflight"]["MetricStat"]["Stat"]]
        assert visible(v for v, _ in hour) + inflight(i for _, i in hour) == 1, name
        assert visible(v for v, _ in emptied) + inflight(i for _, i in emptied) == 1, name


def _held(expression: str, visible: int | None, inflight: int | None) -> int | None:
    """The hour's value of the alarm's ``visible + inflight`` sum as CloudWatch's metric math gives it (hand-modelled,
    not the template's code): a term whose metric has no point in the hour gives the sum no point, unless
    ``FILL(<id>, <value>)`` stands in for it."""
    points = {"visible": visible, "inflight": inflight}
    total = 0
    for term in (part.strip() for part in expression.split("+")):
        filled = re.fullmatch(r"FILL\((\w+), (\d+)\)", term)
        value = points[filled.group(1)] if filled else points[term]
        if value is None and filled:
            value = int(filled.group(2))
        if value is None:
            return None
        total += value
    return total


def test_given_an_hour_with_no_message_in_flight_then_the_hour_still_reads_the_held_message() -> None:
    """D426 amended (fops): SQS reports ``ApproximateNumberOfMessagesNotVisible`` only if in-flight messages exist
    (AWS SQS Developer Guide, available CloudWatch metrics, reporting behaviour), and a kept message nobody receives
    for an hour is visible the whole hour: that hour has a ``visible`` point (1) and no ``inflight`` one. Unfilled,
    ``visible + inflight`` has no point that hour - missing, read as not breaching - and the 168-of-168 row breaks
    however old the message. Hand-worked: the hour reads 1 (held); an hour with both points reads as before."""
    template = Template(parameters={"Stage": "test"})
    for name in AGED_QUEUES.values():
        queries = {q["Id"]: q for q in template.resources[name]["Properties"]["Metrics"]}
        expression = queries["held"]["Expression"]
        assert _held(expression, visible=1, inflight=None) == 1, name  # nobody received it this hour
        assert _held(expression, visible=1, inflight=0) == 1, name
        assert _held(expression, visible=0, inflight=1) == 1, name  # received all hour by a replay
