"""Read ``template.yaml`` the way CloudFormation would, for tests and the local stack.

Resolves the intrinsics the template uses (``Ref``, ``Fn::Sub``, ``Fn::GetAtt``, ``Fn::Join``) against parameter values
and the physical names resources get, and creates the stateful resources (DynamoDB tables with their streams, GSIs and
TTL; EventBridge buses; SNS topics; SQS queues; generated secrets) on whatever endpoint the boto3 clients point at -
moto here.
"""

from __future__ import annotations

import json
import re
import secrets
import string
from dataclasses import dataclass, field
from functools import cache
from pathlib import Path
from typing import Any

from cfnlint.decode import decode

ROOT = Path(__file__).resolve().parents[2]
TEMPLATE_PATH = ROOT / "template.yaml"

_NAME_PROPERTY = {
    "AWS::DynamoDB::Table": "TableName",
    "AWS::Events::EventBus": "Name",
    "AWS::SNS::Topic": "TopicName",
    "AWS::SQS::Queue": "QueueName",
    "AWS::Serverless::Function": "FunctionName",
    "AWS::Logs::LogGroup": "LogGroupName",
    "AWS::Serverless::LayerVersion": "LayerName",
    "AWS::SecretsManager::Secret": "Name",
}
_SUB_VAR = re.compile(r"\$\{([^}!][^}]*)\}")


class TemplateError(ValueError):
    pass


@cache
def _parse(path: str, _mtime_ns: int) -> dict[str, Any]:
    """Parse (cached per file version; the result is treated as read-only)."""
    parsed, matches = decode(path)
    if parsed is None or matches:
        raise TemplateError(f"cannot parse {path}: {matches}")
    return dict(parsed)


@dataclass
class Template:
    """A parsed template with parameter values (defaults unless overridden) and an AWS region/account."""

    path: Path = TEMPLATE_PATH
    parameters: dict[str, str] = field(default_factory=dict)
    region: str = "us-east-1"
    account: str = "123456789012"
    body: dict[str, Any] = field(init=False)
    attributes: dict[tuple[str, str], str] = field(default_factory=dict)  # real values learnt when provisioning

    def __post_init__(self) -> None:
        self.body = _parse(str(self.path), self.path.stat().st_mtime_ns)
        values = {}
        for name, spec in (self.body.get("Parameters") or {}).items():
            if name in self.parameters:
                values[name] = str(self.parameters[name])
            elif "Default" in spec:
                values[name] = str(spec["Default"])
            else:
                raise TemplateError(f"parameter {name} has no default and no value")
        self.parameters = values

    @property
    def resources(self) -> dict[str, dict[str, Any]]:
        return dict(self.body["Resources"])

    def of_type(self, resource_type: str) -> dict[str, dict[str, Any]]:
        return {name: spec for name, spec in self.resources.items() if spec["Type"] == resource_type}

    def pseudo(self, name: str) -> str:
        return {
            "AWS::Region": self.region,
            "AWS::AccountId": self.account,
            "AWS::Partition": "aws",
            "AWS::URLSuffix": "amazonaws.com",
            "AWS::StackName": f"kilo-billing-{self.parameters.get('Stage', 'local')}",
        }[name]

    def ref(self, name: str) -> str:
        if name in self.parameters:
            return self.parameters[name]
        if name.startswith("AWS::"):
            return self.pseudo(name)
        spec = self.resources.get(name)
        if spec is None:
            raise TemplateError(f"Ref to unknown {name}")
        kind = spec["Type"]
        if kind == "AWS::SQS::Queue":
            return self.attributes.get((name, "QueueUrl"), self.physical_name(name))
        if kind == "AWS::SNS::Topic":
            return self.get_att(name, "TopicArn")
        return self.physical_name(name)

    def physical_name(self, name: str) -> str:
        spec = self.resources[name]
        prop = _NAME_PROPERTY.get(spec["Type"])
        props = spec.get("Properties") or {}
        if prop and prop in props:
            return str(self.resolve(props[prop]))
        return f"{self.pseudo('AWS::StackName')}-{name}"

    def get_att(self, name: str, attribute: str) -> str:
        known = self.attributes.get((name, attribute))
        if known is not None:
            return known
        kind = self.resources[name]["Type"]
        physical = self.physical_name(name)
        arn = {
            "AWS::DynamoDB::Table": f"arn:aws:dynamodb:{self.region}:{self.account}:table/{physical}",
            "AWS::Events::EventBus": f"arn:aws:events:{self.region}:{self.account}:event-bus/{physical}",
            "AWS::SNS::Topic": f"arn:aws:sns:{self.region}:{self.account}:{physical}",
            "AWS::SQS::Queue": f"arn:aws:sqs:{self.region}:{self.account}:{physical}",
            "AWS::Logs::LogGroup": f"arn:aws:logs:{self.region}:{self.account}:log-group:{physical}",
        }.get(kind, f"arn:aws:cloudformation:{self.region}:{self.account}:{name}")
        if attribute in ("Arn", "TopicArn"):
            return arn
        if attribute in {"QueueName", "Name"}:
            return physical
        raise TemplateError(f"GetAtt {name}.{attribute} is not known until provisioned")

    def resolve(self, value: Any) -> Any:
        if isinstance(value, dict) and len(value) == 1:
            ((key, arg),) = value.items()
            if key == "Ref":
                return self.ref(arg)
            if key == "Fn::GetAtt":
                target, attribute = arg if isinstance(arg, list) else arg.split(".", 1)
                return self.get_att(target, attribute)
            if key == "Fn::Sub":
                text, extra = (arg, {}) if isinstance(arg, str) else (arg[0], arg[1])
                return _SUB_VAR.sub(lambda m: self._sub_var(m.group(1), extra), text)
            if key == "Fn::Join":
                separator, parts = arg
                return separator.join(str(self.resolve(part)) for part in parts)
            if key == "Fn::If":
                condition, when_true, when_false = arg
                return self.resolve(when_true if self.condition(condition) else when_false)
        if isinstance(value, dict):
            return {k: self.resolve(v) for k, v in value.items()}
        if isinstance(value, list):
            return [self.resolve(v) for v in value]
        return value

    def condition(self, name: str) -> bool:
        """A named entry of the template's Conditions, evaluated with this template's parameters."""
        return self._holds((self.body.get("Conditions") or {})[name])

    def _holds(self, expression: Any) -> bool:
        ((key, arg),) = expression.items()
        if key == "Fn::Equals":
            left, right = (self.resolve(part) for part in arg)
            return bool(str(left) == str(right))
        if key == "Fn::Not":
            return not self._holds(arg[0])
        if key == "Fn::And":
            return all(self._holds(part) for part in arg)
        if key == "Fn::Or":
            return any(self._holds(part) for part in arg)
        if key == "Condition":
            return self.condition(arg)
        raise TemplateError(f"condition function {key} is not supported locally")

    def _sub_var(self, name: str, extra: dict[str, Any]) -> str:
        if name in extra:
            return str(self.resolve(extra[name]))
        if "." in name:
            target, attribute = name.split(".", 1)
            return self.get_att(target, attribute)
        return self.ref(name)

    def function_environment(self, name: str) -> dict[str, str]:
        """A function's environment variables as Lambda would see them: Globals merged with its own."""
        global_env = (((self.body.get("Globals") or {}).get("Function") or {}).get("Environment") or {}).get(
            "Variables"
        ) or {}
        props = self.resources[name].get("Properties") or {}
        own = (props.get("Environment") or {}).get("Variables") or {}
        merged = {**global_env, **own}
        return {key: str(self.resolve(value)) for key, value in merged.items()}

    def function_handler(self, name: str) -> str:
        return str(self.resources[name]["Properties"]["Handler"])


_TABLE_KEYS = ("AttributeDefinitions", "KeySchema", "GlobalSecondaryIndexes", "LocalSecondaryIndexes", "BillingMode")


def create_tables(template: Template, dynamodb: Any, only: set[str] | None = None) -> None:
    """Create the template's DynamoDB tables (streams, GSIs, TTL as declared); learn their ARNs."""
    for name, spec in template.of_type("AWS::DynamoDB::Table").items():
        if only is not None and name not in only:
            continue
        props = template.resolve(spec["Properties"])
        request = {key: props[key] for key in _TABLE_KEYS if key in props}
        request["TableName"] = template.physical_name(name)
        if "StreamSpecification" in props:
            request["StreamSpecification"] = {"StreamEnabled": True, **props["StreamSpecification"]}
        described = dynamodb.create_table(**request)["TableDescription"]
        template.attributes[(name, "Arn")] = described["TableArn"]
        if "LatestStreamArn" in described:
            template.attributes[(name, "StreamArn")] = described["LatestStreamArn"]
        ttl = props.get("TimeToLiveSpecification")
        if ttl and ttl.get("Enabled"):
            dynamodb.update_time_to_live(TableName=request["TableName"], TimeToLiveSpecification=ttl)


def provision(template: Template, clients: dict[str, Any]) -> None:
    """Create the template's tables, buses, topics, queues (dead-letter queues first, redrive policies as declared) and
    event rules with the given boto3 clients; the alert sender's SES identity when an ``sesv2`` client is given; learn
    the real ARNs."""
    create_tables(template, clients["dynamodb"])
    for name in template.of_type("AWS::Events::EventBus"):
        arn = clients["events"].create_event_bus(Name=template.physical_name(name))["EventBusArn"]
        template.attributes[(name, "Arn")] = arn
    for name in template.of_type("AWS::SNS::Topic"):
        arn = clients["sns"].create_topic(Name=template.physical_name(name))["TopicArn"]
        template.attributes[(name, "TopicArn")] = arn
    queues = template.of_type("AWS::SQS::Queue")
    # dead-letter queues first: a queue's RedrivePolicy names its DLQ's ARN
    for name, spec in sorted(queues.items(), key=lambda entry: "RedrivePolicy" in (entry[1].get("Properties") or {})):
        props = template.resolve(spec.get("Properties") or {})
        attributes = {
            key: str(props[key]) for key in ("VisibilityTimeout", "MessageRetentionPeriod", "FifoQueue") if key in props
        }
        if "RedrivePolicy" in props:
            attributes["RedrivePolicy"] = json.dumps(props["RedrivePolicy"])
        url = clients["sqs"].create_queue(QueueName=template.physical_name(name), Attributes=attributes)["QueueUrl"]
        template.attributes[(name, "QueueUrl")] = url
        arn = clients["sqs"].get_queue_attributes(QueueUrl=url, AttributeNames=["QueueArn"])["Attributes"]["QueueArn"]
        template.attributes[(name, "Arn")] = arn
    create_rules(template, clients["events"])
    if "secretsmanager" in clients:
        for name, spec in template.of_type("AWS::SecretsManager::Secret").items():
            clients["secretsmanager"].create_secret(
                Name=template.physical_name(name), SecretString=generated_secret(template.resolve(spec["Properties"]))
            )
    if "sesv2" in clients and "AlertSenderIdentity" in template.parameters:
        clients["sesv2"].create_email_identity(EmailIdentity=template.parameters["AlertSenderIdentity"])


def generated_secret(props: dict[str, Any]) -> str:
    """A secret's value as CloudFormation makes it from ``GenerateSecretString``: the template JSON with a random
    string (letters and digits, ``PasswordLength`` long) under ``GenerateStringKey``."""
    generate = props.get("GenerateSecretString")
    if generate is None:
        return str(props.get("SecretString", ""))
    alphabet = string.ascii_letters + string.digits
    value = "".join(secrets.choice(alphabet) for _ in range(int(generate.get("PasswordLength", 32))))
    document = json.loads(generate.get("SecretStringTemplate", "{}"))
    document[generate.get("GenerateStringKey", "password")] = value
    return json.dumps(document)


def create_rules(template: Template, events: Any) -> None:
    """Each ``AWS::Events::Rule`` with its pattern and targets (as CloudFormation creates them): on moto, an event put
    on the bus reaches the rule's SQS targets."""
    for name, spec in template.of_type("AWS::Events::Rule").items():
        props = template.resolve(spec["Properties"])
        bus = props.get("EventBusName", "default")
        pattern = {"EventPattern": json.dumps(props["EventPattern"])} if "EventPattern" in props else {}
        schedule = {"ScheduleExpression": props["ScheduleExpression"]} if "ScheduleExpression" in props else {}
        events.put_rule(Name=name, EventBusName=bus, **pattern, **schedule)
        targets = [{"Id": target["Id"], "Arn": target["Arn"]} for target in props.get("Targets", [])]
        if targets:
            events.put_targets(Rule=name, EventBusName=bus, Targets=targets)
