"""The tier's own mapping from a request to what AWS authorizes it against (hand-written expectations from AWS's
service authorization references), and IAM's wildcards."""

from __future__ import annotations

import pytest

from tests.iam.conftest import UnmappedOperationError, _iam_match, authorizations

TABLE = "arn:aws:dynamodb:us-east-1:123456789012:table"


def test_given_a_transaction_then_each_item_is_authorized_as_its_own_action_on_its_table() -> None:
    body = {
        "TransactItems": [
            {"Put": {"TableName": "usage", "Item": {}}},
            {"Update": {"TableName": "events", "Key": {}}},
            {"Delete": {"TableName": "usage", "Key": {}}},
            {"ConditionCheck": {"TableName": "usage", "Key": {}}},
        ]
    }
    assert authorizations("dynamodb", "TransactWriteItems", body, "123456789012", "us-east-1") == [
        ("PutItem", f"{TABLE}/usage"),
        ("UpdateItem", f"{TABLE}/events"),
        ("DeleteItem", f"{TABLE}/usage"),
        ("ConditionCheckItem", f"{TABLE}/usage"),
    ]


def test_given_an_index_query_a_batch_and_events_then_their_resources_are_the_index_the_tables_and_the_bus() -> None:
    query = {"TableName": "usage", "IndexName": "open_sessions"}
    assert authorizations("dynamodb", "Query", query, "123456789012", "us-east-1") == [
        ("Query", f"{TABLE}/usage/index/open_sessions")
    ]
    batch = {"RequestItems": {"usage": [], "events": []}}
    assert sorted(authorizations("dynamodb", "BatchWriteItem", batch, "123456789012", "us-east-1")) == [
        ("BatchWriteItem", f"{TABLE}/events"),
        ("BatchWriteItem", f"{TABLE}/usage"),
    ]
    entries = {"Entries": [{"EventBusName": "billing"}, {}]}
    assert authorizations("events", "PutEvents", entries, "123456789012", "us-east-1") == [
        ("PutEvents", "arn:aws:events:us-east-1:123456789012:event-bus/billing"),
        ("PutEvents", "arn:aws:events:us-east-1:123456789012:event-bus/default"),
    ]
    queue = "arn:aws:sqs:us-east-1:123456789012:jobs"
    assert authorizations("sqs", "SendMessageBatch", {}, "123456789012", "us-east-1", queue) == [("SendMessage", queue)]


def test_given_an_operation_the_tier_does_not_map_then_it_is_refused_not_allowed() -> None:
    with pytest.raises(UnmappedOperationError, match="dynamodb:ExecuteStatement"):
        authorizations("dynamodb", "ExecuteStatement", {}, "123456789012", "us-east-1")


def test_given_iam_wildcards_then_question_mark_is_one_character_and_the_rest_is_literal() -> None:
    grant = "arn:aws:secretsmanager:us-east-1:1:secret:keys-??????"
    assert _iam_match(grant, "arn:aws:secretsmanager:us-east-1:1:secret:keys-AbC123")
    assert not _iam_match(grant, "arn:aws:secretsmanager:us-east-1:1:secret:keys-old-AbC123")
    assert not _iam_match("arn:aws:dynamodb:x:1:table/a.b", "arn:aws:dynamodb:x:1:table/aXb")
    assert _iam_match("arn:aws:dynamodb:x:1:table/a/*", "arn:aws:dynamodb:x:1:table/a/index/i")
