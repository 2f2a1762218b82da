"""The usage API under its generated role (UsageApiFunctionRole): a signed batch of three events - the clients'
secrets read from Secrets Manager, the rate limit counted, the accounts' profiles read in one batch, each event stored
in the events table - moto enforcing IAM. Batch and figures as in test_ingest_usage.py. The negative control takes
``BatchGetItem`` on the usage table away: the batch is refused on it and nothing is stored."""

from __future__ import annotations

import pytest

from tests.conftest import LambdaContext, Stack
from tests.iam.conftest import Roles
from tests.infra.test_generated_iam import EVENTS_TABLE, USAGE_TABLE
from tests.integration.test_ingest_usage import VALID_BATCH, accounts, batch, clock, post, signed

__all__ = ["accounts", "clock"]  # the module's autouse fixtures: the frozen clock, the registered accounts
FUNCTION = "UsageApiFunction"
pytestmark = pytest.mark.usefixtures("accounts", "clock")


def test_given_the_usage_api_under_its_generated_role_then_a_signed_batch_is_stored(
    stack: Stack, roles: Roles, lambda_context: LambdaContext
) -> None:
    body = batch(*VALID_BATCH)
    with roles.acting_as(FUNCTION) as enforcement:
        status, payload = post(body, signed(body), lambda_context)
    assert enforcement.denied == []
    assert (status, payload["accepted"]) == (200, 3)
    assert {("dynamodb:PutItem", EVENTS_TABLE), ("dynamodb:BatchGetItem", USAGE_TABLE)} <= enforcement.allowed
    assert {action for action, _ in enforcement.allowed} >= {"secretsmanager:GetSecretValue", "dynamodb:UpdateItem"}
    assert len(stack.table_items("EventsTable")) == 3


def test_given_batch_get_item_taken_from_the_usage_api_s_role_then_the_batch_is_refused_on_it(
    stack: Stack, roles: Roles, lambda_context: LambdaContext
) -> None:
    body = batch(*VALID_BATCH)
    with roles.acting_as(FUNCTION, without={("dynamodb:BatchGetItem", USAGE_TABLE)}) as enforcement:
        status, _ = post(body, signed(body), lambda_context)
    assert enforcement.denied == [("dynamodb:BatchGetItem", USAGE_TABLE)]
    assert status >= 500
    assert stack.table_items("EventsTable") == []
