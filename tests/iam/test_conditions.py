"""The tier's DynamoDB condition keys (D405): what a request carries (hand-worked from AWS's description of each
key, tests/iam/conditions.py cites it), how a grant's conditions decide, and - under the generated roles, the
requests made with a plain client - that a request outside a grant's conditions is refused as AWS refuses it, while
the one inside is allowed (each refusal test fails on the tier before D405: it allowed them)."""

from __future__ import annotations

from decimal import Decimal
from typing import Any

import boto3
import botocore.exceptions
import pytest

from kilo_billing.entitlement_store import DynamoEntitlements
from kilo_billing.entitlements import Reading
from tests.conftest import Stack
from tests.iam.conditions import (
    UnknownConditionError,
    allowed_by_conditions,
    conditions_hold,
    item_requests,
    named_attributes,
)
from tests.iam.conftest import Roles
from tests.infra.test_generated_iam import ALERTS_TABLE, USAGE_TABLE

TABLE = "arn:aws:dynamodb:us-east-1:123456789012:table"
USAGE = "kilo-billing-usage-test"
ALERTS = "kilo-billing-alerts-test"


def _table(name: str) -> str:
    return f"{TABLE}/{name}"


def _pk(table: str, index: str | None) -> str:
    return {None: "pk", "open_sessions": "open_account"}[index]


def _s(value: str) -> dict[str, str]:
    return {"S": value}


def test_given_update_and_condition_expressions_then_every_name_of_every_path_is_named_resolved() -> None:
    """pi2 (D405 amended): AWS documents no rule for a nested path's names, so every element counts - `#r.#p`
    names `allowance_video` and `period`, `notes[0].text` names `notes` and `text` (before: the first only)."""
    names = {"#r": "allowance_video", "#p": "period", "#x": "status"}
    update = "SET #r = :r, account_id = if_not_exists(account_id, :a) REMOVE notes[0].text, #x ADD hits :one"
    assert named_attributes(update, names) == {"allowance_video", "account_id", "notes", "text", "status", "hits"}
    condition = "attribute_not_exists(#r) OR (#r.#p < :p AND size(tags) > :n) AND NOT begins_with(#x, :h)"
    assert named_attributes(condition, names) == {"allowance_video", "period", "tags", "status"}


def test_given_an_update_then_its_attributes_are_its_key_its_update_and_its_condition_s_names() -> None:
    """AWS: "you must specify the names of all of the primary key ... attributes" - the key's names count."""
    body = {
        "TableName": "usage",
        "Key": {"pk": _s("ACCOUNT#a"), "sk": _s("ENTITLEMENT")},
        "UpdateExpression": "SET #r = :r, account_id = :a",
        "ConditionExpression": "attribute_not_exists(#r) OR #r.#p < :p OR (#r.#p = :p AND #r.#u < :u)",
        "ExpressionAttributeNames": {"#r": "spend", "#p": "period", "#u": "used"},
    }
    assert item_requests("UpdateItem", body, _table, _pk) == [
        (
            "UpdateItem",
            f"{TABLE}/usage",
            {
                "dynamodb:LeadingKeys": ["ACCOUNT#a"],
                "dynamodb:Attributes": ["account_id", "period", "pk", "sk", "spend", "used"],
                "dynamodb:ReturnValues": ["NONE"],
            },
        )
    ]


def test_given_queries_then_the_leading_key_is_the_table_s_or_the_index_s_partition_and_select_defaults() -> None:
    on_table = {
        "TableName": "usage",
        "KeyConditionExpression": "#pk = :pk AND begins_with(sk, :s)",
        "ExpressionAttributeNames": {"#pk": "pk"},
        "ExpressionAttributeValues": {":pk": _s("ROOM#RM_1"), ":s": _s("PART#")},
        "ProjectionExpression": "pk, sk",
    }
    on_index = {
        "TableName": "usage",
        "IndexName": "open_sessions",
        "KeyConditionExpression": "open_account = :a",
        "ExpressionAttributeValues": {":a": _s("acct_1")},
    }
    assert [context for _, _, context in item_requests("Query", on_table, _table, _pk)] == [
        {
            "dynamodb:Attributes": ["pk", "sk"],
            "dynamodb:Select": ["SPECIFIC_ATTRIBUTES"],
            "dynamodb:LeadingKeys": ["ROOM#RM_1"],
        }
    ]
    assert item_requests("Query", on_index, _table, _pk) == [
        (
            "Query",
            f"{TABLE}/usage/index/open_sessions",
            {
                "dynamodb:Attributes": ["open_account"],
                "dynamodb:Select": ["ALL_PROJECTED_ATTRIBUTES"],
                "dynamodb:LeadingKeys": ["acct_1"],
            },
        )
    ]


def test_given_condition_operators_then_for_all_values_is_vacuous_on_none_and_if_exists_only_on_a_missing_key() -> None:
    leading = {"ForAllValues:StringLike": {"dynamodb:LeadingKeys": ["ROOM#*", "SWEPT_ROOMS"]}}
    assert conditions_hold(leading, {"dynamodb:LeadingKeys": ["ROOM#RM_1", "SWEPT_ROOMS"]})
    assert not conditions_hold(leading, {"dynamodb:LeadingKeys": ["ROOM#RM_1", "ACCOUNT#a"]})
    assert not conditions_hold(leading, {"dynamodb:LeadingKeys": ["SWEPT_ROOMS2"]})  # StringLike: the whole value
    assert conditions_hold(leading, {})  # a Scan names no partition: AWS's reason to never grant Scan with it
    returns = {"StringEqualsIfExists": {"dynamodb:ReturnValues": ["NONE", "UPDATED_NEW"]}}
    assert conditions_hold(returns, {})
    assert conditions_hold(returns, {"dynamodb:ReturnValues": ["UPDATED_NEW"]})
    assert not conditions_hold(returns, {"dynamodb:ReturnValues": ["ALL_NEW"]})
    assert not conditions_hold({"StringEquals": {"dynamodb:Select": "SPECIFIC_ATTRIBUTES"}}, {})
    with pytest.raises(UnknownConditionError):
        conditions_hold({"ForAllValues:StringEquals": {"aws:SourceVpc": ["vpc-1"]}}, {})
    with pytest.raises(UnknownConditionError):
        conditions_hold({"NumericLessThan": {"dynamodb:Attributes": ["1"]}}, {"dynamodb:Attributes": ["pk"]})


def test_given_a_grant_without_the_key_s_names_then_an_update_of_listed_attributes_is_refused() -> None:
    """The hold's grant without pk and sk: AWS refuses the update, its key's names not listed."""
    body = {
        "TableName": "usage",
        "Key": {"pk": _s("ACCOUNT#a"), "sk": _s("PROFILE")},
        "UpdateExpression": "SET #s = :s",
        "ExpressionAttributeNames": {"#s": "status"},
    }
    ((action, arn, context),) = item_requests("UpdateItem", body, _table, _pk)

    def grant(listed: list[str]) -> list[dict[str, Any]]:
        condition = {"ForAllValues:StringEquals": {"dynamodb:Attributes": listed}}
        return [{"Effect": "Allow", "Action": "dynamodb:UpdateItem", "Resource": arn, "Condition": condition}]

    assert not allowed_by_conditions(grant(["status", "version"]), action, arn, context)
    assert allowed_by_conditions(grant(["pk", "sk", "status", "version"]), action, arn, context)


def _denied(error: pytest.ExceptionInfo[botocore.exceptions.ClientError]) -> str:
    return str(error.value.response["Error"]["Code"])


def test_given_the_operator_checks_role_then_an_update_beyond_the_hold_s_attributes_is_refused(
    stack: Stack, roles: Roles
) -> None:
    key = {"pk": _s("ACCOUNT#acct_x"), "sk": _s("PROFILE")}
    with roles.acting_as("OperatorChecksFunction") as enforcement:
        dynamodb = boto3.client("dynamodb")
        dynamodb.update_item(
            TableName=USAGE,
            Key=key,
            UpdateExpression="SET #status = :s, #version = :v",
            ExpressionAttributeNames={"#status": "status", "#version": "version"},
            ExpressionAttributeValues={":s": _s("held"), ":v": {"N": "1"}},
        )
        with pytest.raises(botocore.exceptions.ClientError) as refused:
            dynamodb.update_item(
                TableName=USAGE,
                Key=key,
                UpdateExpression="SET #status = :s, #email = :e",
                ExpressionAttributeNames={"#status": "status", "#email": "email"},
                ExpressionAttributeValues={":s": _s("held"), ":e": _s("mallory@example.com")},
            )
    assert _denied(refused) == "AccessDeniedException"
    assert enforcement.denied == [("dynamodb:UpdateItem", USAGE_TABLE)]
    assert ("dynamodb:UpdateItem", USAGE_TABLE) in enforcement.allowed  # the hold's own update


def test_given_the_sweeper_role_then_a_delete_or_query_outside_its_partitions_is_refused(
    stack: Stack, roles: Roles
) -> None:
    with roles.acting_as("SweeperFunction") as enforcement:
        dynamodb = boto3.client("dynamodb")
        dynamodb.delete_item(TableName=USAGE, Key={"pk": _s("ROOM#RM_gone"), "sk": _s("PART#0#PA_x")})
        dynamodb.query(
            TableName=USAGE,
            KeyConditionExpression="pk = :pk",
            ExpressionAttributeValues={":pk": _s("JOINLESS_ROOMS")},
        )
        with pytest.raises(botocore.exceptions.ClientError) as deleting:
            dynamodb.delete_item(TableName=USAGE, Key={"pk": _s("ACCOUNT#acct_1"), "sk": _s("INVOICE#2026-11")})
        with pytest.raises(botocore.exceptions.ClientError) as querying:
            dynamodb.query(
                TableName=USAGE,
                KeyConditionExpression="pk = :pk",
                ExpressionAttributeValues={":pk": _s("ACCOUNT#acct_1")},
            )
    assert (_denied(deleting), _denied(querying)) == ("AccessDeniedException", "AccessDeniedException")
    assert enforcement.denied == [("dynamodb:DeleteItem", USAGE_TABLE), ("dynamodb:Query", USAGE_TABLE)]


def test_given_the_account_api_role_on_the_alerts_table_then_whole_items_returned_are_refused(
    stack: Stack, roles: Roles
) -> None:
    """Its grant there lists pk, sk, recipient and detail with `Select`/`ReturnValues` limited: an update answering
    the whole item, or a query of every attribute, is refused; the same named by attribute is allowed."""
    key = {"pk": _s("ALERT#acct_1"), "sk": _s("2026-11#x")}
    update: dict[str, Any] = {
        "TableName": ALERTS,
        "Key": key,
        "UpdateExpression": "SET recipient = :r",
        "ExpressionAttributeValues": {":r": _s("pseudonym")},
    }
    query: dict[str, Any] = {
        "TableName": ALERTS,
        "KeyConditionExpression": "pk = :pk",
        "ExpressionAttributeValues": {":pk": _s("ALERT#acct_1")},
    }
    with roles.acting_as("AccountApiFunction") as enforcement:
        dynamodb = boto3.client("dynamodb")
        dynamodb.update_item(**update, ReturnValues="UPDATED_NEW")
        dynamodb.query(**query, ProjectionExpression="pk, sk, recipient")
        with pytest.raises(botocore.exceptions.ClientError) as updating:
            dynamodb.update_item(**update, ReturnValues="ALL_NEW")
        with pytest.raises(botocore.exceptions.ClientError) as querying:
            dynamodb.query(**query)
    assert (_denied(updating), _denied(querying)) == ("AccessDeniedException", "AccessDeniedException")
    assert enforcement.denied == [("dynamodb:UpdateItem", ALERTS_TABLE), ("dynamodb:Query", ALERTS_TABLE)]


def test_given_the_alerts_role_then_its_usage_table_updates_are_the_spend_item_s_readings_and_the_hold(
    stack: Stack, roles: Roles
) -> None:
    """D406: the spend item's reading (one attribute per meter) is allowed; another attribute of the account's item
    (its plan) or the whole item answered is refused."""
    key = {"pk": _s("ACCOUNT#acct_1"), "sk": _s("ENTITLEMENT")}
    reading = {
        "TableName": USAGE,
        "Key": key,
        "UpdateExpression": "SET #r = :r",
        "ExpressionAttributeNames": {"#r": "allowance_data_transfer"},
        "ExpressionAttributeValues": {":r": {"M": {"used": {"N": "1"}}}},
    }
    with roles.acting_as("AlertsFunction") as enforcement:
        dynamodb = boto3.client("dynamodb")
        dynamodb.update_item(**reading)
        # the adapter's own request: its condition names the reading's nested `period` and `used` (pi2: counted)
        recorded = DynamoEntitlements(dynamodb, USAGE).record(
            "acct_1", "budget", Reading(period="2026-12", used=Decimal("12.5"), limit=Decimal(50), as_of="2026-12-05")
        )
        with pytest.raises(botocore.exceptions.ClientError) as other:
            dynamodb.update_item(
                TableName=USAGE,
                Key={"pk": _s("ACCOUNT#acct_1"), "sk": _s("PROFILE")},
                UpdateExpression="SET #tier = :t",
                ExpressionAttributeNames={"#tier": "tier"},
                ExpressionAttributeValues={":t": _s("enterprise")},
            )
        with pytest.raises(botocore.exceptions.ClientError) as whole:
            dynamodb.update_item(**reading, ReturnValues="ALL_OLD")
    assert recorded
    assert (_denied(other), _denied(whole)) == ("AccessDeniedException", "AccessDeniedException")
    assert enforcement.denied == [("dynamodb:UpdateItem", USAGE_TABLE), ("dynamodb:UpdateItem", USAGE_TABLE)]


def test_given_the_alerts_role_then_its_spend_reading_writes_no_room_s_item_nor_an_accounts_index_key(
    stack: Stack, roles: Roles
) -> None:
    """pi2 (D406 amended): the spend grant's attributes include `account_id`, the `accounts` index's partition key
    the monthly close scans (PeriodsStore.accounts); unconditioned on the partition, the role could put any item -
    a room's state - into that index. `dynamodb:LeadingKeys` `ACCOUNT#*` refuses it (before: allowed)."""
    with roles.acting_as("AlertsFunction") as enforcement:
        dynamodb = boto3.client("dynamodb")
        with pytest.raises(botocore.exceptions.ClientError) as room:
            dynamodb.update_item(
                TableName=USAGE,
                Key={"pk": _s("ROOM#RM_x"), "sk": _s("STATE")},
                UpdateExpression="SET account_id = :a",
                ExpressionAttributeValues={":a": _s("acct_1")},
            )
    assert _denied(room) == "AccessDeniedException"
    assert enforcement.denied == [("dynamodb:UpdateItem", USAGE_TABLE)]


def test_given_the_alerts_role_then_no_item_of_an_account_is_given_an_accounts_index_key(
    stack: Stack, roles: Roles
) -> None:
    """D430: the spend grant listed `account_id` (the reading set it on the spend item), so the role could give
    any item of an account's partition - an invoice - the `accounts` index's key, which the monthly close, the early
    checks and the revenue report scan (`DynamoLedgerStore.accounts`). The reading no longer writes it and the grant
    no longer lists it: that update is refused (before: allowed), the adapter's own reading is allowed, and after it
    the index holds no spend item (before: the spend item listed beside the profile - the account twice)."""
    with roles.acting_as("AlertsFunction") as enforcement:
        dynamodb = boto3.client("dynamodb")
        recorded = DynamoEntitlements(dynamodb, USAGE).record(
            "acct_1", "video", Reading(period="2026-12", used=Decimal(30), limit=Decimal(100), as_of="2026-12-05")
        )
        with pytest.raises(botocore.exceptions.ClientError) as invoice:
            dynamodb.update_item(
                TableName=USAGE,
                Key={"pk": _s("ACCOUNT#acct_1"), "sk": _s("INVOICE#2026-11")},
                UpdateExpression="SET account_id = :a",
                ExpressionAttributeValues={":a": _s("acct_1")},
            )
    assert recorded
    assert _denied(invoice) == "AccessDeniedException"
    assert enforcement.denied == [("dynamodb:UpdateItem", USAGE_TABLE)]
    listed = stack.clients["dynamodb"].scan(TableName=USAGE, IndexName="accounts")["Items"]
    assert listed == []  # no profile registered here: only the spend item could be in it


@pytest.mark.parametrize("function", ["AlertsFunction", "OperatorChecksFunction"])
def test_given_a_hold_s_role_then_the_hold_s_attributes_are_written_only_in_an_account_s_partition(
    stack: Stack, roles: Roles, function: str
) -> None:
    """D431: the abuse hold's grant (`[pk, sk, status, version]`) had no `dynamodb:LeadingKeys`: the role could
    set a `status` or `version` on any item of the table - a room's state (its `version` the rating's optimistic
    lock), a sweeper's mark. The grant takes `ACCOUNT#*` (the profile's partition): the hold's own update on a profile
    is allowed, the same update on a room's state refused (before: allowed)."""
    update: dict[str, Any] = {
        "TableName": USAGE,
        "UpdateExpression": "SET #status = :s, #version = :v",
        "ExpressionAttributeNames": {"#status": "status", "#version": "version"},
        "ExpressionAttributeValues": {":s": _s("held"), ":v": {"N": "7"}},
    }
    with roles.acting_as(function) as enforcement:
        dynamodb = boto3.client("dynamodb")
        dynamodb.update_item(**update, Key={"pk": _s("ACCOUNT#acct_x"), "sk": _s("PROFILE")})
        with pytest.raises(botocore.exceptions.ClientError) as room:
            dynamodb.update_item(**update, Key={"pk": _s("ROOM#RM_x"), "sk": _s("STATE")})
    assert _denied(room) == "AccessDeniedException"
    assert enforcement.denied == [("dynamodb:UpdateItem", USAGE_TABLE)]
