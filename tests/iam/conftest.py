"""The IAM tier: a function's real work on moto, signed with the credentials of a role that holds exactly the policy
SAM generates for that function's execution role, with moto's IAM enforcement on. A call the role does not allow is
refused (``AccessDeniedException``) and recorded, so it fails the test (docs/decisions.md, D151).

moto (5.2) authenticates the request and evaluates the role's policies itself (its ``IAMPolicy``: actions, resource
patterns, Allow/Deny). What it lacks for DynamoDB and EventBridge is the resource a request is authorized against
(it evaluates every DynamoDB and EventBridge call against resource ``"*"``, so a policy naming the table's ARN allows
nothing), DynamoDB's per-item actions (it checks ``dynamodb:TransactWriteItems``, an action IAM does not have,
where AWS checks ``PutItem``/``UpdateItem``/``DeleteItem``/``ConditionCheckItem`` per item of the transaction) and
SQS's batch requests (authorized as ``SendMessage``, not ``SendMessageBatch``); its pattern matcher also reads ``?``
as a regular expression's quantifier, where IAM means one character (the secrets' ``-??????`` suffix), so the
matcher is replaced by IAM's wildcard rules while a role acts. moto ignores a statement's ``Condition`` too: the tier
checks one condition key itself, ``dynamodb:Attributes`` (``ForAllValues:StringEquals``) on a ``PutItem`` (alone or in
a transaction) - the top-level attributes the request names (its item's and its expression's names) must all be in
the list of some statement granting that put, or the request is refused as AWS refuses it (D394).
``authorizations`` below supplies those, as AWS's service authorization reference describes them, for the services
the functions call (DynamoDB, EventBridge, SQS - moto's own resource, the queue's ARN -, Secrets Manager, SES v2,
SNS); each (action, resource) pair then goes through moto's own signature check and policy evaluation. An operation
of these services that is not mapped is refused, never allowed by default; another service keeps moto's own check
against ``"*"``, which a role naming exact ARNs does not pass either."""

from __future__ import annotations

import itertools
import json
import os
import re
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from typing import Any
from urllib.parse import urlparse

import boto3
import pytest

from tests.conftest import Stack, _clear_caches
from tests.infra.conftest import TEMPLATE, Transformed, sam_transform
from tests.infra.test_generated_iam import role_statements

_ITEM_ACTIONS = {
    "Put": "PutItem",
    "Update": "UpdateItem",
    "Delete": "DeleteItem",
    "ConditionCheck": "ConditionCheckItem",
}
# SQS authorizes a batch request as its single-message action (there is no sqs:SendMessageBatch permission)
_SQS_BATCH_ACTIONS = {
    "SendMessageBatch": "SendMessage",
    "DeleteMessageBatch": "DeleteMessage",
    "ChangeMessageVisibilityBatch": "ChangeMessageVisibility",
}
_TABLE_ACTIONS = {"GetItem", "PutItem", "UpdateItem", "DeleteItem", "DescribeTable"}


class UnmappedOperationError(Exception):
    pass


def authorizations(
    service: str, operation: str, body: dict[str, Any], account: str, region: str, resource: str = "*"
) -> list[tuple[str, str]]:
    """The (action, resource ARN) pairs AWS authorizes a request against (each must be allowed)."""
    if service == "dynamodb":

        def table(name: str) -> str:
            return name if name.startswith("arn:") else f"arn:aws:dynamodb:{region}:{account}:table/{name}"

        if operation in _TABLE_ACTIONS:
            return [(operation, table(body["TableName"]))]
        if operation in {"Query", "Scan"}:
            index = body.get("IndexName")
            return [(operation, table(body["TableName"]) + (f"/index/{index}" if index else ""))]
        if operation in {"BatchGetItem", "BatchWriteItem"}:
            return [(operation, table(name)) for name in body["RequestItems"]]
        if operation == "TransactWriteItems":
            return [
                (_ITEM_ACTIONS[kind], table(request["TableName"]))
                for entry in body["TransactItems"]
                for kind, request in entry.items()
            ]
        if operation == "TransactGetItems":
            return [("GetItem", table(entry["Get"]["TableName"])) for entry in body["TransactItems"]]
    if service == "events" and operation == "PutEvents":
        buses = {entry.get("EventBusName") or "default" for entry in body["Entries"]}
        return [
            ("PutEvents", bus if bus.startswith("arn:") else f"arn:aws:events:{region}:{account}:event-bus/{bus}")
            for bus in sorted(buses)
        ]
    if service == "ses" and operation == "SendEmail":  # the sender's identity (its domain), the configuration set
        domain = body["FromEmailAddress"].rpartition("@")[2].rstrip(">")
        needs = [(operation, f"arn:aws:ses:{region}:{account}:identity/{domain}")]
        if body.get("ConfigurationSetName"):
            needs.append(
                (operation, f"arn:aws:ses:{region}:{account}:configuration-set/{body['ConfigurationSetName']}")
            )
        return needs
    if service == "sns" and operation in {"Publish", "CheckIfPhoneNumberIsOptedOut"}:
        target = body.get("TopicArn") or body.get("TargetArn")
        return [(operation, target or "*")]  # a phone number (SMS): IAM has no resource for it
    if service == "secretsmanager" and operation == "GetSecretValue":
        from moto.secretsmanager.models import secretsmanager_backends  # noqa: PLC0415

        secret = secretsmanager_backends[account][region].secrets.get(body["SecretId"])
        return [(operation, secret.arn if secret is not None else body["SecretId"])]
    if service == "sqs" and resource.startswith("arn:"):  # moto's own resource: the queue's ARN
        return [(_SQS_BATCH_ACTIONS.get(operation, operation), resource)]
    raise UnmappedOperationError(f"{service}:{operation}")


@dataclass
class Enforcement:
    """What the enforced run asked for: every (action, resource) allowed and every one refused."""

    allowed: set[tuple[str, str]] = field(default_factory=set)
    denied: list[tuple[str, str]] = field(default_factory=list)
    # (action, table ARN, partition key value) of each DynamoDB item request and table Query allowed: what a
    # `dynamodb:LeadingKeys` condition would be checked against (moto evaluates no DynamoDB condition key)
    partitions: list[tuple[str, str, str]] = field(default_factory=list)


def partition_of(operation: str, body: dict[str, Any]) -> str | None:
    """The partition key (`pk`) value a DynamoDB request names: an item's key, or a table Query's `pk = :value`."""
    if "Key" in body:
        return str(body["Key"]["pk"]["S"])
    if operation == "Query" and "IndexName" not in body:
        names = body.get("ExpressionAttributeNames", {})
        for name, placeholder in re.findall(r"(#?\w+)\s*=\s*(:\w+)", body.get("KeyConditionExpression", "")):
            if names.get(name, name) == "pk":
                return str(body["ExpressionAttributeValues"][placeholder]["S"])
    return None


@pytest.fixture(scope="session")
def transformed() -> Transformed:
    return Transformed.of(sam_transform(TEMPLATE.read_text()))


def role_policy(
    transformed: Transformed,
    function: str,
    without: set[tuple[str, str]] | None = None,
    extra: list[tuple[str, str]] | None = None,
) -> dict[str, Any]:
    """The policy document of the function's generated execution role (its statements as deployed); the negative
    controls take some (action, resource) grants away or add others."""
    removed = without or set()
    statements = []
    for statement in role_statements(transformed, f"{function}Role"):
        actions = statement["Action"] if isinstance(statement["Action"], list) else [statement["Action"]]
        resources = statement["Resource"] if isinstance(statement["Resource"], list) else [statement["Resource"]]
        for action in actions:
            kept = [resource for resource in resources if (action, resource) not in removed]
            if kept:
                statements.append({"Effect": statement["Effect"], "Action": action, "Resource": kept})
    statements += [{"Effect": "Allow", "Action": action, "Resource": resource} for action, resource in extra or []]
    return {"Version": "2012-10-17", "Statement": statements}


_ROLE_NUMBERS = itertools.count()
TRUST = {
    "Version": "2012-10-17",
    "Statement": [{"Effect": "Allow", "Principal": {"Service": "lambda.amazonaws.com"}, "Action": "sts:AssumeRole"}],
}


@dataclass
class Roles:
    stack: Stack
    transformed: Transformed

    @contextmanager
    def acting_as(
        self,
        function: str,
        without: set[tuple[str, str]] | None = None,
        extra: list[tuple[str, str]] | None = None,
    ) -> Iterator[Enforcement]:
        """Inside: the handlers' AWS clients hold the credentials of ``function``'s role (assumed as Lambda does)
        and moto enforces IAM. Outside again: full permissions (the test's own setup and checks)."""
        from aws_lambda_powertools.utilities import parameters  # noqa: PLC0415
        from moto import settings  # noqa: PLC0415
        from moto.core.authorization import ActionAuthenticatorMixin  # noqa: PLC0415
        from moto.dynamodb.responses import DynamoHandler  # noqa: PLC0415
        from moto.events.responses import EventsHandler  # noqa: PLC0415
        from moto.iam.access_control import IAMPolicyStatement  # noqa: PLC0415
        from moto.secretsmanager.responses import SecretsManagerResponse  # noqa: PLC0415
        from moto.sesv2.responses import SESV2Response  # noqa: PLC0415
        from moto.sns.responses import SNSResponse  # noqa: PLC0415
        from moto.sqs.responses import SQSResponse  # noqa: PLC0415

        iam = boto3.client("iam")
        name = f"iam-tier-{next(_ROLE_NUMBERS)}-{function}"[:64]
        iam.create_role(RoleName=name, AssumeRolePolicyDocument=json.dumps(TRUST))
        policy = role_policy(self.transformed, function, without, extra)
        iam.put_role_policy(RoleName=name, PolicyName="generated", PolicyDocument=json.dumps(policy))
        credentials = boto3.client("sts").assume_role(
            RoleArn=iam.get_role(RoleName=name)["Role"]["Arn"], RoleSessionName=function[:64]
        )["Credentials"]
        enforcement = Enforcement()
        saved = {
            key: os.environ.get(key) for key in ("AWS_ACCESS_KEY_ID", "AWS_SECRET_ACCESS_KEY", "AWS_SESSION_TOKEN")
        }
        patch = pytest.MonkeyPatch()
        try:
            patch.setenv("AWS_ACCESS_KEY_ID", credentials["AccessKeyId"])
            patch.setenv("AWS_SECRET_ACCESS_KEY", credentials["SecretAccessKey"])
            patch.setenv("AWS_SESSION_TOKEN", credentials["SessionToken"])
            patch.setattr(boto3, "DEFAULT_SESSION", None)
            for handler, service in (
                (DynamoHandler, "dynamodb"),
                (EventsHandler, "events"),
                (SQSResponse, "sqs"),
                (SecretsManagerResponse, "secretsmanager"),
                (SESV2Response, "ses"),
                (SNSResponse, "sns"),
            ):
                patch.setattr(
                    handler,
                    "_authenticate_and_authorize_normal_action",
                    _authorizer(service, enforcement, [*role_statements(self.transformed, f"{function}Role")]),
                )
            patch.setattr(IAMPolicyStatement, "_match", staticmethod(_iam_match))
            patch.setattr(settings, "INITIAL_NO_AUTH_ACTION_COUNT", 0)
            patch.setattr(ActionAuthenticatorMixin, "request_count", 0)
            _clear_caches()
            parameters.clear_caches()  # a secret read before (full permissions) is read again, under the role
            yield enforcement
        finally:
            patch.undo()
            _clear_caches()
            parameters.clear_caches()
            assert {key: os.environ.get(key) for key in saved} == saved


def _iam_match(pattern: str, value: str) -> re.Match[str] | None:
    """IAM's wildcards: ``*`` any run of characters, ``?`` exactly one, everything else literal (moto's own matcher
    turns the pattern into a regular expression as written: ``?`` is then a quantifier, ``.`` any character)."""
    return re.fullmatch("".join(".*" if c == "*" else "." if c == "?" else re.escape(c) for c in pattern), value)


def _path(uri: str) -> str:
    parsed = urlparse(uri)
    return parsed.path + (f"?{parsed.query}" if parsed.query else "")


def put_attributes(body: dict[str, Any], arn: str) -> list[frozenset[str]]:
    """The top-level attribute names of each ``PutItem`` a DynamoDB request makes on table ``arn`` (a ``PutItem`` or
    a transaction's puts): its item's and its expression's names - ``dynamodb:Attributes`` as AWS evaluates it."""
    puts = [body] if "Item" in body else [entry["Put"] for entry in body.get("TransactItems", []) if "Put" in entry]
    return [
        frozenset(put["Item"]) | frozenset(put.get("ExpressionAttributeNames", {}).values())
        for put in puts
        if arn.endswith(f"table/{put['TableName']}") or put["TableName"] == arn
    ]


def _attributes_allowed(statements: list[dict[str, Any]], arn: str, body: dict[str, Any]) -> bool:
    """Whether every put of the request on ``arn`` is within the ``dynamodb:Attributes`` list of some statement
    granting ``dynamodb:PutItem`` on it (a granting statement without that condition allows any attributes)."""
    lists: list[frozenset[str] | None] = []
    for statement in statements:
        actions = statement["Action"] if isinstance(statement["Action"], list) else [statement["Action"]]
        resources = statement["Resource"] if isinstance(statement["Resource"], list) else [statement["Resource"]]
        if statement["Effect"] == "Allow" and "dynamodb:PutItem" in actions and arn in resources:
            listed = statement.get("Condition", {}).get("ForAllValues:StringEquals", {}).get("dynamodb:Attributes")
            lists.append(None if listed is None else frozenset(listed))
    return all(
        any(listed is None or attributes <= listed for listed in lists) for attributes in put_attributes(body, arn)
    )


def _authorizer(service: str, enforcement: Enforcement, statements: list[dict[str, Any]]) -> Any:
    from moto.core.authorization import ActionAuthenticatorMixin  # noqa: PLC0415
    from moto.core.exceptions import AccessDeniedError, JsonRESTError  # noqa: PLC0415
    from moto.iam.access_control import IAMRequest  # noqa: PLC0415
    from werkzeug.exceptions import HTTPException  # noqa: PLC0415

    original = ActionAuthenticatorMixin._authenticate_and_authorize_normal_action

    def authorize(handler: Any, resource: str = "*") -> None:
        from moto import settings  # noqa: PLC0415

        if ActionAuthenticatorMixin.request_count < settings.INITIAL_NO_AUTH_ACTION_COUNT:
            original(handler, resource)
            return
        operation = handler._get_action()
        if service == "sns":  # the query protocol: form parameters
            body = {key: values[0] for key, values in handler.querystring.items()}
        else:
            body = json.loads(handler.raw_body or b"{}") if service != "sqs" else {}
        try:
            needs = authorizations(service, operation, body, handler.current_account, handler.region, resource)
        except UnmappedOperationError:
            enforcement.denied.append((f"{service}:{operation}", "<unmapped>"))
            raise JsonRESTError(
                "AccessDeniedException", f"{service}:{operation} is not mapped by the IAM tier"
            ) from None
        for action, arn in needs:
            if service == "dynamodb" and action == "PutItem" and not _attributes_allowed(statements, arn, body):
                enforcement.denied.append((f"{service}:{action}", arn))
                raise JsonRESTError(
                    "AccessDeniedException", f"not authorized to perform: {service}:{action} on resource: {arn}"
                )
            request = IAMRequest(
                account_id=handler.current_account,
                method=handler.method,
                path=_path(handler.uri),
                data=handler.data,
                body=handler.raw_body,
                headers=handler.headers,
                action=action,
            )
            request.check_signature()
            try:
                request.check_action_permitted(arn)
            except HTTPException:
                enforcement.denied.append((f"{service}:{action}", arn))
                message = f"not authorized to perform: {service}:{action} on resource: {arn}"
                if service == "sns":  # a query-protocol service: AWS answers its denial in XML, as botocore parses
                    raise AccessDeniedError(user_arn="the assumed role", action=f"{service}:{action}") from None
                raise JsonRESTError("AccessDeniedException", message) from None
            enforcement.allowed.add((f"{service}:{action}", arn))
            partition = partition_of(operation, body) if service == "dynamodb" else None
            if partition is not None:
                enforcement.partitions.append((f"{service}:{action}", arn, partition))

    return authorize


@pytest.fixture
def roles(stack: Stack, transformed: Transformed) -> Roles:
    """The stack on moto (full permissions) and each function's generated role, assumed in ``acting_as``."""
    return Roles(stack, transformed)
