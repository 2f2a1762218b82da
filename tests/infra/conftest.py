"""The template as CloudFormation receives it: SAM's own translator (``aws-sam-translator``) expands the serverless
resources offline, so the infra tests see the roles, policies and permissions SAM generates (event-source policies,
managed policies, policy templates, connectors), not only the statements written in ``template.yaml``."""

from __future__ import annotations

import re
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import boto3
import pytest
from samtranslator.parser.parser import Parser
from samtranslator.translator.translator import Translator
from samtranslator.yaml_helper import yaml_parse

ROOT = Path(__file__).resolve().parents[2]
TEMPLATE = ROOT / "template.yaml"
REGION = "us-east-1"
ACCOUNT = "123456789012"
PARAMETERS = {"Stage": "test"}
ARTIFACTS = "s3://kilo-billing-artifacts"

# Physical names come from these properties; ARNs (and Ref where it is not the name) follow each service's format.
_NAME_PROPERTY = {
    "AWS::DynamoDB::Table": "TableName",
    "AWS::Events::EventBus": "Name",
    "AWS::SQS::Queue": "QueueName",
    "AWS::SNS::Topic": "TopicName",
    "AWS::Lambda::Function": "FunctionName",
    "AWS::Logs::LogGroup": "LogGroupName",
    "AWS::IAM::Role": "RoleName",
    "AWS::Scheduler::Schedule": "Name",
}
_ARN_FORMAT = {
    "AWS::DynamoDB::Table": "arn:aws:dynamodb:{region}:{account}:table/{name}",
    "AWS::Events::EventBus": "arn:aws:events:{region}:{account}:event-bus/{name}",
    "AWS::SQS::Queue": "arn:aws:sqs:{region}:{account}:{name}",
    "AWS::SNS::Topic": "arn:aws:sns:{region}:{account}:{name}",
    "AWS::Lambda::Function": "arn:aws:lambda:{region}:{account}:function:{name}",
    "AWS::Logs::LogGroup": "arn:aws:logs:{region}:{account}:log-group:{name}",
    "AWS::IAM::Role": "arn:aws:iam::{account}:role/{name}",
}
_SUB_VARIABLE = re.compile(r"\$\{([^}!][^}]*)\}")


def sam_transform(text: str, parameters: dict[str, str] | None = None) -> dict[str, Any]:
    """``template.yaml`` -> the CloudFormation template SAM deploys, computed offline.

    Local ``CodeUri``/``ContentUri`` folders are first replaced by S3 locations, as ``sam package`` does; no AWS call is
    made (the region comes from an offline session; ``managed_policy_map`` is empty because the template names no
    managed policy by name).
    """
    template = yaml_parse(text)
    for resource in template.get("Resources", {}).values():
        properties = resource.get("Properties") or {}
        for key in ("CodeUri", "ContentUri"):
            if isinstance(properties.get(key), str) and not properties[key].startswith("s3://"):
                properties[key] = f"{ARTIFACTS}/{properties[key].strip('/')}"
    session = boto3.session.Session(region_name=REGION, aws_access_key_id="offline", aws_secret_access_key="offline")
    translator = Translator(managed_policy_map={}, sam_parser=Parser(), boto_session=session)
    return translator.translate(template, parameter_values=dict(parameters or PARAMETERS))


@dataclass(frozen=True)
class Transformed:
    """SAM's output plus a resolver for the intrinsics it contains (unknown ids show as ``<LogicalId>``)."""

    body: dict[str, Any]
    parameters: dict[str, str]

    @classmethod
    def of(cls, body: dict[str, Any], overrides: dict[str, str] | None = None) -> Transformed:
        values = {name: str(spec["Default"]) for name, spec in body.get("Parameters", {}).items() if "Default" in spec}
        values.update(overrides or PARAMETERS)
        return cls(body, values)

    @property
    def resources(self) -> dict[str, dict[str, Any]]:
        return dict(self.body["Resources"])

    def of_type(self, resource_type: str) -> dict[str, dict[str, Any]]:
        return {name: spec for name, spec in self.resources.items() if spec["Type"] == resource_type}

    def physical_name(self, logical_id: str) -> str:
        spec = self.resources[logical_id]
        prop = _NAME_PROPERTY.get(spec["Type"])
        value = (spec.get("Properties") or {}).get(prop) if prop else None
        return str(self.resolve(value)) if value is not None else f"<{logical_id}>"

    def ref(self, name: str) -> str:
        pseudo = {
            "AWS::Region": REGION,
            "AWS::AccountId": ACCOUNT,
            "AWS::Partition": "aws",
            "AWS::URLSuffix": "amazonaws.com",
        }
        if name in pseudo:
            return pseudo[name]
        if name in self.parameters:
            return self.parameters[name]
        kind = self.resources[name]["Type"]
        if kind == "AWS::SNS::Topic":
            return self.get_att(name, "TopicArn")
        if kind in {"AWS::DynamoDB::Table", "AWS::Events::EventBus", "AWS::Lambda::Function", "AWS::IAM::Role"}:
            return self.physical_name(name)
        return f"<{name}>"  # ids CloudFormation assigns (API ids, queue URLs, layer versions)

    def get_att(self, name: str, attribute: str) -> str:
        kind = self.resources[name]["Type"]
        arn_format = _ARN_FORMAT.get(kind)
        if attribute in {"Arn", "TopicArn"} and arn_format:
            return arn_format.format(region=REGION, account=ACCOUNT, name=self.physical_name(name))
        if kind == "AWS::DynamoDB::Table" and attribute == "StreamArn":
            return f"{self.get_att(name, 'Arn')}/stream/<{name}.StreamLabel>"
        if attribute in {"QueueName", "Name"}:
            return self.physical_name(name)
        return f"<{name}.{attribute}>"

    def resolve(self, value: Any) -> Any:
        if isinstance(value, dict) and len(value) == 1:
            ((key, argument),) = value.items()
            if key == "Ref":
                return self.ref(argument)
            if key == "Fn::GetAtt":
                target, attribute = argument if isinstance(argument, list) else argument.split(".", 1)
                return self.get_att(target, attribute)
            if key == "Fn::Sub":
                text, variables = (argument, {}) if isinstance(argument, str) else argument
                return _SUB_VARIABLE.sub(lambda match: self._sub(match.group(1), variables), text)
            if key == "Fn::Join":
                separator, parts = argument
                return separator.join(str(self.resolve(part)) for part in parts)
        if isinstance(value, dict):
            return {key: self.resolve(item) for key, item in value.items()}
        if isinstance(value, list):
            return [self.resolve(item) for item in value]
        return value

    def _sub(self, name: str, variables: dict[str, Any]) -> str:
        if name in variables:
            return str(self.resolve(variables[name]))
        if "." in name and not name.startswith("AWS::"):
            target, attribute = name.split(".", 1)
            return self.get_att(target, attribute)
        return self.ref(name)


@pytest.fixture(scope="session")
def transformed() -> Transformed:
    return Transformed.of(sam_transform(TEMPLATE.read_text()))
