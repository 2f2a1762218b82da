"""LiveKit's webhook under its generated role (LiveKitWebhookFunctionRole): the keys read from Secrets Manager, the
signed webhook verified and stored in the events table - moto enforcing IAM. The negative control takes PutItem
away: the webhook is refused on it (and not stored)."""

from __future__ import annotations

from kilo_dev import livekit_events as lk
from kilo_dev.apigw import http_api_event
from kilo_dev.signing import livekit_authorization
from tests.conftest import LIVEKIT_KEYS, LambdaContext, Stack
from tests.iam.conftest import Roles
from tests.infra.test_generated_iam import EVENTS_TABLE

T0 = 1_794_787_200  # 2026-11-16T00:00:00Z
FUNCTION = "LiveKitWebhookFunction"


def webhook() -> dict[str, object]:
    room = lk.Room("RM_iamingest", "standup", account_id="acct_iam", created_at=T0)
    body = lk.room_started(room, T0)
    authorization = livekit_authorization(body, "APIkeyCurrent", LIVEKIT_KEYS["APIkeyCurrent"])
    return http_api_event("POST", "/webhooks/livekit", body, {"authorization": authorization})


def test_given_the_livekit_webhook_under_its_generated_role_then_it_is_verified_and_stored(
    stack: Stack, roles: Roles, lambda_context: LambdaContext
) -> None:
    from kilo_webhook_ingest import livekit_handler  # noqa: PLC0415

    request = webhook()
    with roles.acting_as(FUNCTION) as enforcement:
        response = livekit_handler.lambda_handler(request, lambda_context)
    assert enforcement.denied == []
    assert response["statusCode"] == 200, response["body"]
    assert ("dynamodb:PutItem", EVENTS_TABLE) in enforcement.allowed
    assert {action for action, _ in enforcement.allowed} == {"dynamodb:PutItem", "secretsmanager:GetSecretValue"}
    assert len(stack.table_items("EventsTable")) == 1


def test_given_put_item_taken_from_the_webhook_s_role_then_the_webhook_is_refused_on_it(
    stack: Stack, roles: Roles, lambda_context: LambdaContext
) -> None:
    from kilo_webhook_ingest import livekit_handler  # noqa: PLC0415

    request = webhook()
    with roles.acting_as(FUNCTION, without={("dynamodb:PutItem", EVENTS_TABLE)}) as enforcement:
        response = livekit_handler.lambda_handler(request, lambda_context)
    assert enforcement.denied == [("dynamodb:PutItem", EVENTS_TABLE)]
    assert response["statusCode"] >= 500
    assert stack.table_items("EventsTable") == []
