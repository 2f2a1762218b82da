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
matcher is replaced by IAM's wildcard rules while a role acts. moto cannot evaluate DynamoDB's condition keys either
(it has no request context for them): the tier evaluates them itself (``tests.iam.conditions``) on every DynamoDB
request of every role - each item request (one per item of a transaction, per table of a batch) must be granted by
a statement whose conditions (``dynamodb:LeadingKeys``, ``dynamodb:Attributes``, ``dynamodb:Select``,
``dynamodb:ReturnValues``) all hold for it, or it is refused and recorded as AWS refuses it (D394, D405).
``authorizations`` below supplies those, as AWS's service authorization reference describes them, for the services
the functions call (DynamoDB, EventBridge, SQS - moto's own resource, the queue's ARN -, Secrets Manager, SES v2,
SNS); each (action, resource) pair then goes through moto's own signature check and policy evaluation. An operation
of these services that is not mapped is refused, never allowed by default; another service keeps moto's own check
against ``"*"``, which a role naming exact ARNs does not pass either."""

from __future__ import annotations

import itertools
import json
import os
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from typing import Any
from urllib.parse import urlparse

import boto3
import pytest

from tests.conftest import Stack, _clear_caches
from tests.iam.conditions import PartitionKeyOf, allowed_by_conditions, item_requests
from tests.iam.conditions import iam_match as _iam_match
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


@pytest.fixture(scope="session")
def transformed() -> Transformed:
    return Transformed.of(sam_transform(TEMPLATE.read_text()))


def role_policy(
    transformed: Transformed,
    function: str,
    without: set[tuple[str, str]] | None = None,
    extra: list[tuple[str, str]] | None = None,
    *,
    conditions: bool = False,
) -> dict[str, Any]:
    """The policy document of the function's generated execution role (its statements as deployed); the negative
    controls take some (action, resource) grants away or add others. Without ``conditions`` the statements' conditions
    are left out (the document moto evaluates: it has no DynamoDB request context, the tier checks those itself)."""
    removed = without or set()
    statements = []
    for statement in role_statements(transformed, f"{function}Role"):
        actions = statement["Action"] if isinstance(statement["Action"], list) else [statement["Action"]]
        resources = statement["Resource"] if isinstance(statement["Resource"], list) else [statement["Resource"]]
        for action in actions:
            kept = [resource for resource in resources if (action, resource) not in removed]
            if kept:
                condition = {"Condition": statement["Condition"]} if conditions and "Condition" in statement else {}
                statements.append({"Effect": statement["Effect"], "Action": action, "Resource": kept, **condition})
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
        granted = role_policy(self.transformed, function, without, extra, conditions=True)["Statement"]
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
                    _authorizer(service, enforcement, granted),
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


def _table_arn(handler: Any) -> Callable[[str], str]:
    def table(name: str) -> str:
        return (
            name
            if name.startswith("arn:")
            else f"arn:aws:dynamodb:{handler.region}:{handler.current_account}:table/{name}"
        )

    return table


def _partition_key_of(handler: Any) -> PartitionKeyOf:
    """The partition key attribute of a table or of one of its indexes, as moto holds the table."""
    from moto.dynamodb.models import dynamodb_backends  # noqa: PLC0415

    def partition_key(name: str, index: str | None) -> str:
        table = dynamodb_backends[handler.current_account][handler.region].get_table(name.rpartition("/")[2])
        if index is None:
            return str(table.hash_key_attr)
        (schema,) = [i.schema for i in table.indexes + table.global_indexes if i.name == index]
        return next(str(k["AttributeName"]) for k in schema if k["KeyType"] == "HASH")

    return partition_key


def _path(uri: str) -> str:
    parsed = urlparse(uri)
    return parsed.path + (f"?{parsed.query}" if parsed.query else "")


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
        if service == "dynamodb":
            for action, arn, context in item_requests(operation, body, _table_arn(handler), _partition_key_of(handler)):
                if not allowed_by_conditions(statements, action, arn, context):
                    enforcement.denied.append((f"{service}:{action}", arn))
                    raise JsonRESTError(
                        "AccessDeniedException",
                        f"not authorized to perform: {service}:{action} on resource: {arn} (a condition of the grant)",
                    )
        for action, arn in needs:
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

    return authorize


@pytest.fixture
def roles(stack: Stack, transformed: Transformed) -> Roles:
    """The stack on moto (full permissions) and each function's generated role, assumed in ``acting_as``."""
    return Roles(stack, transformed)
