"""Rating under its generated role: the rate_usage handler rates a room's LiveKit batches (the state created, a
batch too large for one transaction written in chunks, a participant retired - a ``Delete`` in the commit's
transaction -, an event older than the horizon rebuilding the room into a new generation, the room finished) with
the credentials of a role holding exactly ``RateUsageFunctionRole``'s generated policy, moto enforcing IAM.
The negative controls take one grant away (or move it to another table) and the same run is refused on it."""

from __future__ import annotations

from collections.abc import Callable, Iterator
from typing import Any

import pytest
import time_machine

from kilo_dev import livekit_events as lk
from tests.conftest import YEARS_AHEAD, LambdaContext, Stack, accounts_registered
from tests.iam.conftest import Roles
from tests.infra.test_generated_iam import EVENTS_TABLE, USAGE_TABLE
from tests.integration.test_rating_stream import NOW, Lambda, aggregate, deliver_webhook

T0 = 1_794_787_200  # 2026-11-16T00:00:00Z
ACCOUNT = "acct_iam_1"
registered_accounts = accounts_registered(ACCOUNT)  # the accounts its rooms name (D276)
JOINERS = 120  # one batch's participant items: more than one transaction holds (100), written in chunks
FUNCTION = "RateUsageFunction"


def phases() -> list[list[bytes]]:
    room = lk.Room("RM_iamtier", "iam", account_id=ACCOUNT, created_at=T0)
    first = [lk.Participant(f"PA_{index:04d}", f"first-{index}", (T0 + 1) * 1000) for index in range(3)]
    joiners = [lk.Participant(f"PA_{1000 + i:04d}", f"joiner-{i}", (T0 + 20 + i // 10) * 1000) for i in range(JOINERS)]
    return [
        [lk.room_started(room, T0), *(lk.participant_joined(room, person) for person in first)],
        [lk.participant_joined(room, person) for person in joiners],
        [lk.participant_left(room, first[0], T0 + 200), lk.participant_left(room, first[1], T0 + 300)],
        [lk.track_published(room, first[2], "TR_mic_late", T0 + 10, video=False)],  # older than the horizon
        [lk.room_finished(room, T0 + 3600)],
    ]


# Hand-worked audio minutes (no camera in the room), each connection rounded up:
# PA_0000 T0+1..T0+200 = 199 s -> 4; PA_0001 T0+1..T0+300 = 299 s -> 5; PA_0002 T0+1..T0+3600 = 3599 s -> 60;
# joiner i T0+20+i//10..T0+3600 = 3569..3580 s -> 60 each, 120 of them -> 7200.
EXPECTED = {"audio": 4 + 5 + 60 + 7200}


def rate_room(stack: Stack, context: LambdaContext, rate: Callable[[list[dict[str, Any]]], None]) -> None:
    """Each phase's webhooks through ingest (full permissions: not the role under test), its records read from the
    events table's stream as Lambda reads them, then handed to ``rate`` as one batch."""
    runner = Lambda(stack)
    for webhooks in phases():
        for body in webhooks:
            deliver_webhook(body, context)
        records = runner.poll()
        assert len(records) == len(webhooks)
        rate(records)


def test_given_rating_under_its_generated_role_then_every_call_of_a_room_s_batches_is_allowed(
    stack: Stack, roles: Roles, lambda_context: LambdaContext
) -> None:
    from kilo_rate_usage.handler import lambda_handler  # noqa: PLC0415

    allowed: set[tuple[str, str]] = set()

    def rate(records: list[dict[str, Any]]) -> None:
        with roles.acting_as(FUNCTION) as enforcement:
            outcome = lambda_handler({"Records": records}, lambda_context)
        assert enforcement.denied == []
        assert outcome == {"batchItemFailures": []}
        allowed.update(enforcement.allowed)

    rate_room(stack, lambda_context, rate)
    assert aggregate(stack, ACCOUNT) == EXPECTED
    # the run exercised what D151 granted: the room's state read, a retired participant's item deleted inside a
    # transaction, the state's items written in batches (a new generation, the old one deleted)
    assert {
        ("dynamodb:GetItem", USAGE_TABLE),
        ("dynamodb:DeleteItem", USAGE_TABLE),
        ("dynamodb:BatchWriteItem", USAGE_TABLE),
        ("dynamodb:ConditionCheckItem", USAGE_TABLE),
        ("dynamodb:Query", EVENTS_TABLE),
    } <= allowed


@pytest.mark.parametrize(
    ("removed", "moved_to"),
    [
        (("dynamodb:GetItem", USAGE_TABLE), None),
        (("dynamodb:DeleteItem", USAGE_TABLE), None),
        (("dynamodb:BatchWriteItem", USAGE_TABLE), None),
        (("dynamodb:GetItem", USAGE_TABLE), EVENTS_TABLE),  # the right action on another table: resources count
    ],
    ids=["without-GetItem", "without-DeleteItem", "without-BatchWriteItem", "GetItem-on-the-events-table"],
)
def test_given_one_grant_taken_from_rating_s_role_then_the_same_run_is_refused_on_it(
    stack: Stack, roles: Roles, lambda_context: LambdaContext, removed: tuple[str, str], moved_to: str | None
) -> None:
    from kilo_rate_usage.handler import lambda_handler  # noqa: PLC0415

    denied: list[tuple[str, str]] = []
    failed: list[bool] = []

    def rate(records: list[dict[str, Any]]) -> None:
        extra = [(removed[0], moved_to)] if moved_to else []
        with roles.acting_as(FUNCTION, without={removed}, extra=extra) as enforcement:
            try:
                outcome = lambda_handler({"Records": records}, lambda_context)
                failed.append(outcome != {"batchItemFailures": []})
            except Exception:  # the refusal, raised for Lambda to retry the batch
                failed.append(True)
        denied.extend(enforcement.denied)

    rate_room(stack, lambda_context, rate)
    assert removed in denied
    assert set(denied) == {removed}
    assert any(failed)


@pytest.fixture
def clock() -> Iterator[None]:
    """The rating stream's clock (its ``NOW``): the report ``_report_messages`` sends is accepted whatever the date."""
    with time_machine.travel(NOW, tick=True):
        yield


@pytest.mark.wall_clock(YEARS_AHEAD)  # the guard (D450): its report is accepted on ``clock``, not on the calendar
def test_given_a_usage_event_rated_under_the_role_then_it_is_marked_rated_and_nothing_else_of_it_may_change(
    clock: None, stack: Stack, roles: Roles, lambda_context: LambdaContext
) -> None:
    """D407: rating's one write to the events table marks a usage event rated (`SET rated_at`, conditional on its
    key); its grant names those attributes only, so the stored event's quantity cannot be rewritten by the role."""
    import boto3  # noqa: PLC0415
    import botocore.exceptions  # noqa: PLC0415

    from kilo_rate_usage.handler import lambda_handler  # noqa: PLC0415
    from tests.integration.test_rating_stream import _report_messages  # noqa: PLC0415

    _report_messages(stack, lambda_context, account=ACCOUNT, quantity=1200)  # ingest: full permissions
    records = Lambda(stack).poll()
    assert len(records) == 1
    (event,) = stack.table_items("EventsTable")
    with roles.acting_as(FUNCTION) as enforcement:
        assert lambda_handler({"Records": records}, lambda_context) == {"batchItemFailures": []}
        with pytest.raises(botocore.exceptions.ClientError) as rewriting:
            boto3.client("dynamodb").update_item(
                TableName=EVENTS_TABLE.rsplit("/", 1)[1],
                Key={"pk": event["pk"], "sk": event["sk"]},
                UpdateExpression="SET quantity = :q",
                ExpressionAttributeValues={":q": {"N": "1"}},
            )
    assert rewriting.value.response["Error"]["Code"] == "AccessDeniedException"
    assert ("dynamodb:UpdateItem", EVENTS_TABLE) in enforcement.allowed  # the mark
    assert enforcement.denied == [("dynamodb:UpdateItem", EVENTS_TABLE)]  # the rewrite only
    assert aggregate(stack, ACCOUNT, "2026-11") == {"messages": 1200}
    (marked,) = stack.table_items("EventsTable")
    assert ("rated_at" in marked, marked["quantity"]) == (True, event["quantity"])
