"""No two stages' physical names can be equal (D440). Every name is built as ``<before>${Stage}<after>``
(``kilo-billing-alerts-dlq-${Stage}``, ``/kilo-billing/${Stage}/ingest-api-access``): with hyphens in ``Stage``, stage
``dlq-dev``'s alerts queue (``kilo-billing-alerts-`` + ``dlq-dev``) was stage ``dev``'s alerts dead-letter queue
(``kilo-billing-alerts-dlq-`` + ``dev``), and one stage's deploy took the other's queue.

The proof, for every pair of names of one kind (one namespace: queues with queues, log groups with log groups) in
one account and region: split a name into runs of the stage's characters (``[a-z0-9]``) and runs of the others. A
stage of ``[a-z0-9]`` only, delimited on both sides in every name, is exactly one run; so two names are equal only
if their runs are, position by position - and where one name holds its stage and the other a literal run, the
literal must be a stage the pattern admits. Checked for each pair, exactly (``_collision``)."""

from __future__ import annotations

import copy
import re
from itertools import combinations_with_replacement, product
from typing import Any

import pytest

from kilo_dev.template import Template

SENTINEL = "zqstagezq"  # a stage that occurs nowhere else in the template: where it lands is where the stage is
STAGE = object()  # the stage's place among a name's runs

# the properties that give a resource its physical name, per resource type: one namespace each
NAMES = {
    ("AWS::CloudFront::OriginAccessControl", "OriginAccessControlConfig.Name"),  # CloudFront's: one per account
    ("AWS::DynamoDB::Table", "TableName"),
    ("AWS::Events::EventBus", "Name"),
    ("AWS::Logs::LogGroup", "LogGroupName"),
    ("AWS::S3::Bucket", "BucketName"),  # global; it ends with the account id, not the region (D440's limits)
    ("AWS::SES::ConfigurationSet", "Name"),
    ("AWS::SNS::Topic", "TopicName"),
    ("AWS::SQS::Queue", "QueueName"),
    ("AWS::Serverless::Function", "FunctionName"),
    ("AWS::Serverless::LayerVersion", "LayerName"),
}
# "...Name" properties built from Stage that name no resource of their own: references to a name above, or an
# API's stage (one per API: its namespace is the API)
NOT_NAMES = {
    ("AWS::CloudFront::Distribution", "DistributionConfig.Origins.1.DomainName"),
    ("AWS::Events::Rule", "EventBusName"),
    ("AWS::Logs::MetricFilter", "LogGroupName"),
    ("AWS::SES::ConfigurationSetEventDestination", "ConfigurationSetName"),
    ("AWS::Serverless::HttpApi", "StageName"),
}


@pytest.fixture(scope="module")
def template() -> Template:
    return Template(parameters={"Stage": SENTINEL})


def _pattern(template: Template) -> str:
    return str(template.body["Parameters"]["Stage"]["AllowedPattern"])


def _branches(value: Any) -> list[Any]:
    """Every way ``value`` can be built: each ``Fn::If`` in it taken both ways (the template's own resolve takes only
    the way its parameters make the condition go)."""
    if isinstance(value, dict) and len(value) == 1 and next(iter(value)) == "Fn::If":
        _, when_true, when_false = value["Fn::If"]
        return [*_branches(when_true), *_branches(when_false)]
    if isinstance(value, dict):
        keys = list(value)
        return [dict(zip(keys, parts, strict=True)) for parts in product(*(_branches(value[k]) for k in keys))]
    if isinstance(value, list):
        return [list(parts) for parts in product(*(_branches(item) for item in value))]
    return [value]


def _built_from_stage(template: Template) -> dict[tuple[str, str], dict[str, str]]:
    """(type, property path) -> {resource: the name resolved with ``SENTINEL``}: every "...Name" property whose value
    is built from ``Stage``. The property is the path up to its first intrinsic function (``QueueName``, not
    ``QueueName.Fn::Select.1.0``: review hops2 2), each ``Fn::If`` is taken both ways, and a resource whose property
    can be built more than one way has each as a name of its own (``<resource> (<n>)``)."""
    found: dict[tuple[str, str], dict[str, str]] = {}

    def add(value: Any, path: tuple[str, ...], resource: str, kind: str) -> None:
        at = next((i for i, key in enumerate(path) if key.startswith("Fn::")), len(path))
        prop, within = path[:at], path[at:]
        if not prop or not prop[-1].endswith("Name"):
            return
        built = sorted({str(template.resolve(branch)) for branch in _branches(value)})
        built = [name for name in built if SENTINEL in name]
        for n, name in enumerate(built):
            how = [*([".".join(within)] if within else []), *([str(n)] if len(built) > 1 else [])]
            label = f"{resource} ({', '.join(how)})" if how else resource
            found.setdefault((kind, ".".join(prop)), {})[label] = name

    def walk(value: Any, path: tuple[str, ...], resource: str, kind: str) -> None:
        if (
            isinstance(value, dict)
            and len(value) == 1
            and next(iter(value)) in {"Ref", "Fn::Sub", "Fn::Join", "Fn::If"}
        ):
            add(value, path, resource, kind)
        elif isinstance(value, dict):
            for key, inner in value.items():
                walk(inner, (*path, str(key)), resource, kind)
        elif isinstance(value, list):
            for index, inner in enumerate(value):
                walk(inner, (*path, str(index)), resource, kind)

    for resource, spec in template.resources.items():
        walk(spec.get("Properties") or {}, (), resource, spec["Type"])
    return found


def _runs(name: str) -> list[object]:
    """The name's runs of ``[a-z0-9]`` and of other characters, the stage's run as ``STAGE``; the stage must be
    delimited (by a character it cannot hold, or an end) on both sides, so that it is one run."""
    before, after = name.split(SENTINEL)
    assert not re.search(r"[a-z0-9]$", before), f"{name}: the stage runs into what is before it"
    assert not re.match(r"[a-z0-9]", after), f"{name}: the stage runs into what is after it"
    split = re.compile(r"[a-z0-9]+|[^a-z0-9]+")
    return [*split.findall(before), STAGE, *split.findall(after)]


def _collision(first: list[object], second: list[object], pattern: str) -> tuple[str, str] | None:
    """The stages (first's, second's) that make the two names equal, if any do; ``None`` when no two stages can.
    A name with itself: equal only for one stage (no collision)."""
    if len(first) != len(second):
        return None
    at_first, at_second = first.index(STAGE), second.index(STAGE)
    if at_first == at_second:  # the same stage in both: equal names only if every other run is too
        return (SENTINEL, SENTINEL) if first == second and first is not second else None
    first_stage, second_stage = second[at_first], first[at_second]
    assert isinstance(first_stage, str)
    assert isinstance(second_stage, str)
    others = [p for p in range(len(first)) if p not in (at_first, at_second)]
    if any(first[p] != second[p] for p in others):
        return None
    if re.fullmatch(pattern, first_stage) and re.fullmatch(pattern, second_stage):
        return first_stage, second_stage
    return None


def test_every_name_built_from_the_stage_is_known_as_a_name_or_as_a_reference(template: Template) -> None:
    """A new named resource type joins ``NAMES`` (and so the check below), or ``NOT_NAMES`` saying why."""
    assert set(_built_from_stage(template)) == NAMES | NOT_NAMES


def _stage_is_one_run(pattern: str) -> None:
    """What the proof assumes: no character that delimits a name (``-``, ``/``, ``_``, ``.``, ``:``) fits in a
    stage; and none in upper case (S3 bucket names are lowercase)."""
    assert re.fullmatch(pattern, "dev")
    assert re.fullmatch(pattern, "prod2")
    for delimiter in "-/_.:":
        assert not re.fullmatch(pattern, f"ab{delimiter}cd"), delimiter
        assert not re.fullmatch(pattern, f"ab{delimiter}"), delimiter
    assert not re.fullmatch(pattern, "Dev")


def test_the_stage_holds_only_lowercase_letters_and_digits(template: Template) -> None:
    _stage_is_one_run(_pattern(template))


def test_a_hand_picked_colliding_pair_is_refused(template: Template) -> None:
    """Stage ``dev``'s alerts dead-letter queue and stage ``dlq-dev``'s alerts queue: one name, by hand."""
    dev = Template(parameters={"Stage": "dev"})
    other = Template(parameters={"Stage": "dlq-dev"})
    assert dev.physical_name("AlertsDeadLetterQueue") == "kilo-billing-alerts-dlq-dev"
    assert other.physical_name("AlertsQueue") == "kilo-billing-alerts-dlq-dev"
    assert re.fullmatch(_pattern(template), "dev")
    assert not re.fullmatch(_pattern(template), "dlq-dev")


def test_the_check_finds_a_collision_where_there_is_one() -> None:
    """The check itself, on names of its own (figures by hand)."""
    middle, end = _runs(f"kilo-{SENTINEL}-x"), _runs(f"kilo-a-{SENTINEL}")
    assert _collision(middle, end, r"[a-z]+") == ("a", "x")  # "kilo-a-x": stage a's first is stage x's second
    assert _collision(middle, end, r"[a-z]{2,}") is None  # neither "a" nor "x" is a stage
    queue, dead = _runs(f"kilo-billing-alerts-{SENTINEL}"), _runs(f"kilo-billing-alerts-dlq-{SENTINEL}")
    assert _collision(queue, dead, r"[a-z0-9]+") is None  # 7 runs against 9
    assert _collision(queue, _runs(f"kilo-billing-alerts-{SENTINEL}"), r"[a-z]+") == (SENTINEL, SENTINEL)  # 2 alike
    assert _collision(queue, queue, r"[a-z]+") is None  # a name with itself: one stage, one name


def _collisions(template: Template) -> tuple[list[str], int]:
    """Every pair of names of one kind that two stages the pattern admits make equal (said), and the pairs checked."""
    pattern = _pattern(template)
    _stage_is_one_run(pattern)  # what the runs below assume
    names = _built_from_stage(template)
    said: list[str] = []
    checked = 0
    for key in sorted(NAMES):
        resources = sorted(names[key].items())
        for (first, name), (second, other) in combinations_with_replacement(resources, 2):
            runs, other_runs = _runs(name), _runs(other)
            found = _collision(runs, runs if first == second else other_runs, pattern)
            if found is not None:
                said.append(f"{key[0]}: {first} of stage {found[0]} is {second} of stage {found[1]}")
            checked += 1
    return said, checked


def test_no_two_stages_names_of_one_kind_can_be_equal(template: Template) -> None:
    said, checked = _collisions(template)
    assert said == []
    assert checked >= 21 * 22 // 2  # the 21 queues' pairs at least


COLLIDING = {"Fn::Sub": "kilo-billing-${Stage}-alerts"}  # stage alerts: kilo-billing-alerts-alerts, as its alerts queue
KEPT = {"Fn::Sub": "kilo-billing-alerts-dlq-${Stage}"}


@pytest.mark.parametrize(
    "queue_name",
    [
        {"Fn::If": ["HasOperatorEmail", COLLIDING, KEPT]},
        {"Fn::If": ["HasOperatorEmail", KEPT, COLLIDING]},  # the way the default parameters do not take
        {"Fn::Select": [0, [COLLIDING, KEPT]]},
        {"Fn::Join": ["", [{"Fn::If": ["HasOperatorEmail", COLLIDING, KEPT]}]]},
    ],
    ids=["if-true", "if-false", "select", "if-in-join"],
)
def test_a_name_built_under_an_intrinsic_function_is_checked_every_way(
    template: Template, queue_name: dict[str, Any]
) -> None:
    """Review hops2 2: a name under ``Fn::If`` or ``Fn::Select`` was not seen (the walk looked at the last key of the
    path - the branch's index - not at the property), and ``Fn::If`` was resolved only the way the parameters take it.
    A copy of the template whose alerts dead-letter queue is named ``kilo-billing-${Stage}-alerts`` one way: stage
    ``alerts``'s two queues are one, ``kilo-billing-alerts-alerts`` (by hand)."""
    changed = Template(parameters={"Stage": SENTINEL})
    changed.body = copy.deepcopy(template.body)
    changed.body["Resources"]["AlertsDeadLetterQueue"]["Properties"]["QueueName"] = queue_name
    said, _ = _collisions(changed)
    assert any(
        line.startswith("AWS::SQS::Queue: AlertsDeadLetterQueue") and "AlertsQueue of stage alerts" in line
        for line in said
    ), said
