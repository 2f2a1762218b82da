"""The sweeper under its generated role (SweeperFunctionRole): the LiveKit keys read from Secrets Manager (the
``-??????`` pattern of the secret's ARN), the open sessions scanned, RoomService asked (the repo's local Twirp server),
each room's listing recorded and a session LiveKit no longer lists swept - moto enforcing IAM. The negative control
takes the secret's grant away: the same sweep is refused on it."""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any

import pytest

from kilo_dev import livekit_events as lk
from kilo_dev.fake_livekit import FakeLiveKit
from tests.conftest import LambdaContext, Stack, accounts_registered
from tests.iam.conftest import Enforcement, Roles
from tests.infra.test_generated_iam import (
    EVENTS_TABLE,
    LIVEKIT_KEYS,
    OPEN_SESSIONS_INDEX,
    ROOM_EVENTS_BY_TIME_INDEX,
    USAGE_TABLE,
)
from tests.integration.test_rating_stream import Lambda, deliver_webhook
from tests.integration.test_sweeper import livekit_server

__all__ = ["livekit_server"]
T0 = 1_794_787_200  # 2026-11-16T00:00:00Z
registered_accounts = accounts_registered("acct_sweep")  # the accounts its rooms name (D276)
FUNCTION = "SweeperFunction"


@pytest.fixture
def standup(
    stack: Stack, lambda_context: LambdaContext, livekit_server: FakeLiveKit, monkeypatch: pytest.MonkeyPatch
) -> FakeLiveKit:
    """Carol and Bob in a call (rated with the test's own permissions), RoomService listing both."""
    monkeypatch.setenv("LIVEKIT_URL", livekit_server.url)
    room = lk.Room("RM_iamsweep", "standup", account_id="acct_sweep", created_at=T0 - 1200)
    deliver_webhook(
        lk.participant_joined(room, lk.Participant("PA_carol", "carol", (T0 - 1200) * 1000)), lambda_context
    )
    deliver_webhook(lk.participant_joined(room, lk.Participant("PA_bob", "bob", (T0 - 900) * 1000)), lambda_context)
    runner = Lambda(stack)
    runner.run(runner.poll(), lambda_context)
    livekit_server.rooms["standup"] = [("PA_carol", "carol"), ("PA_bob", "bob")]
    return livekit_server


def sweep(roles: Roles, at: int, context: LambdaContext, **grants: Any) -> tuple[dict[str, Any], Enforcement]:
    from kilo_rate_usage import sweeper_handler  # noqa: PLC0415

    stamp = datetime.fromtimestamp(at, tz=UTC).isoformat().replace("+00:00", "Z")
    with roles.acting_as(FUNCTION, **grants) as enforcement:
        result = sweeper_handler.lambda_handler({"scheduled_time": stamp}, context)
    return result, enforcement


def test_given_the_sweeper_under_its_generated_role_then_listing_and_sweeping_are_allowed(
    standup: FakeLiveKit, roles: Roles, lambda_context: LambdaContext
) -> None:
    result, first = sweep(roles, T0 - 300, lambda_context)  # both listed: the room's listing recorded
    assert (first.denied, result["swept"], result["listed"]) == ([], 0, 2)
    standup.rooms["standup"] = [("PA_carol", "carol")]  # Bob's participant_left was lost
    result, second = sweep(roles, T0, lambda_context)
    assert (second.denied, result["swept"], result["listed"]) == ([], 1, 1)
    secrets = {resource for action, resource in first.allowed if action == "secretsmanager:GetSecretValue"}
    assert len(secrets) == 1
    assert _iam_pattern_matches(LIVEKIT_KEYS, secrets.pop())
    assert {
        ("dynamodb:Scan", OPEN_SESSIONS_INDEX),
        ("dynamodb:PutItem", USAGE_TABLE),
        ("dynamodb:PutItem", EVENTS_TABLE),
    } <= first.allowed | second.allowed


def test_given_a_close_dated_back_under_the_sweeper_s_role_then_it_reads_the_room_s_events_first(
    standup: FakeLiveKit, roles: Roles, lambda_context: LambdaContext
) -> None:
    """No listing yet and Bob's last evidence (his join) 15 minutes old: the close would be dated back, so the sweep
    first queries the room's latest event on the events table's time index (D197); without that grant the sweep
    fails, nothing swept."""
    standup.rooms["standup"] = [("PA_carol", "carol")]  # Bob's participant_left was lost
    from kilo_billing.aws import StorageUnavailableError  # noqa: PLC0415

    with pytest.raises(StorageUnavailableError):  # the sweep fails (Lambda retries it): nothing is closed at the start
        sweep(roles, T0, lambda_context, without={("dynamodb:Query", ROOM_EVENTS_BY_TIME_INDEX)})
    result, enforcement = sweep(roles, T0, lambda_context)
    assert (enforcement.denied, result["swept"]) == ([], 1)
    assert ("dynamodb:Query", ROOM_EVENTS_BY_TIME_INDEX) in enforcement.allowed


def test_given_a_swept_room_quiet_for_an_hour_under_the_sweeper_s_role_then_its_running_state_is_dropped(
    standup: FakeLiveKit, stack: Stack, roles: Roles, lambda_context: LambdaContext
) -> None:
    """D219: the room is gone (its room_finished lost): both swept and rated; an hour later the sweep drops the
    room's running state - its header made version-only, its participant items deleted, its mark kept (D222)."""
    sweep(roles, T0 - 300, lambda_context)  # both listed
    del standup.rooms["standup"]
    result, _ = sweep(roles, T0, lambda_context)
    assert result["swept"] == 2
    runner = Lambda(stack)
    runner.run(runner.poll(), lambda_context)
    result, enforcement = sweep(roles, T0 + 3660, lambda_context)
    assert (enforcement.denied, result["dropped_states"]) == ([], 1)
    assert {
        ("dynamodb:Query", USAGE_TABLE),
        ("dynamodb:PutItem", USAGE_TABLE),
        ("dynamodb:DeleteItem", USAGE_TABLE),
    } <= enforcement.allowed
    assert not [i for i in stack.table_items("UsageTable") if i["sk"]["S"].startswith("PART#")]


def test_given_the_livekit_keys_taken_from_the_sweeper_s_role_then_its_sweep_is_refused_on_them(
    standup: FakeLiveKit, roles: Roles, lambda_context: LambdaContext
) -> None:
    standup.rooms["standup"] = [("PA_carol", "carol")]
    result, enforcement = sweep(roles, T0, lambda_context, without={("secretsmanager:GetSecretValue", LIVEKIT_KEYS)})
    assert {action for action, _ in enforcement.denied} == {"secretsmanager:GetSecretValue"}
    assert result["swept"] == 0  # nobody is swept without RoomService's answer


def _iam_pattern_matches(pattern: str, arn: str) -> bool:
    """The grant's ``-??????``: the secret's name then a dash and exactly six characters."""
    prefix = pattern.removesuffix("??????")
    return arn.startswith(prefix) and len(arn) == len(prefix) + 6


def test_given_a_join_less_participant_under_the_sweeper_s_role_then_its_join_is_written_and_the_mark_forgotten(
    livekit_server: FakeLiveKit,
    stack: Stack,
    roles: Roles,
    lambda_context: LambdaContext,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """D375, amended: Dan's join was lost (only his camera's event arrived): rating marked the room; the sweep reads
    the mark and the room's state, RoomService lists Dan (STANDARD, joined T0-600 s) and the sweep writes his join into
    the events table; once rated (Dan has a start), a sweep past the mark's grace forgets the mark."""
    monkeypatch.setenv("LIVEKIT_URL", livekit_server.url)
    room = lk.Room("RM_iamjoin", "joinroom", account_id="acct_sweep", created_at=T0 - 1200)
    dan = lk.Participant("PA_dan", "dan", (T0 - 600) * 1000)
    deliver_webhook(lk.room_started(room, T0 - 1200), lambda_context)
    deliver_webhook(lk.track_published(room, dan, "TR_dan_cam", T0 - 500, video=True), lambda_context)
    runner = Lambda(stack)
    runner.run(runner.poll(), lambda_context)
    marks = [i for i in stack.table_items("UsageTable") if i["pk"]["S"] == "JOINLESS_ROOMS"]
    assert [i["sk"]["S"] for i in marks] == ["ROOM#RM_iamjoin"]
    livekit_server.rooms["joinroom"] = [("PA_dan", "dan")]
    livekit_server.infos["PA_dan"] = {"joined_at": T0 - 600, "joined_at_ms": (T0 - 600) * 1000}
    result, enforcement = sweep(roles, T0, lambda_context)
    assert (enforcement.denied, result["joined"]) == ([], 1)
    assert {("dynamodb:Query", USAGE_TABLE), ("dynamodb:PutItem", EVENTS_TABLE)} <= enforcement.allowed
    runner.run(runner.poll(), lambda_context)  # Dan's session opens at T0-600 s
    marked_s = int(marks[0]["marked_at_ms"]["N"]) // 1000  # rating's clock
    result, enforcement = sweep(roles, marked_s + 3600, lambda_context)
    assert (enforcement.denied, result["joined"]) == ([], 0)
    assert ("dynamodb:DeleteItem", USAGE_TABLE) in enforcement.allowed
    assert not [i for i in stack.table_items("UsageTable") if i["pk"]["S"] == "JOINLESS_ROOMS"]


def test_given_a_join_less_participant_never_listed_under_the_sweeper_s_role_then_the_mark_is_renewed_then_given_up(
    livekit_server: FakeLiveKit,
    stack: Stack,
    roles: Roles,
    lambda_context: LambdaContext,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """D393: Dan's join was lost and RoomService lists the room without him (he left before the sweep). A sweep a
    day after rating's mark renews it (a conditional put on the usage table: marked at the sweep, expiring 7 days
    later); once RoomService says the room is gone - its room_finished lost too - the sweep gives Dan up, counted in
    its summary (``joins_abandoned``), and forgets the mark."""
    monkeypatch.setenv("LIVEKIT_URL", livekit_server.url)
    room = lk.Room("RM_iamgone", "goneroom", account_id="acct_sweep", created_at=T0 - 1200)
    dan = lk.Participant("PA_dan_g", "dan", (T0 - 600) * 1000)
    deliver_webhook(lk.room_started(room, T0 - 1200), lambda_context)
    deliver_webhook(lk.track_published(room, dan, "TR_dan_gcam", T0 - 500, video=True), lambda_context)
    runner = Lambda(stack)
    runner.run(runner.poll(), lambda_context)
    [mark] = [i for i in stack.table_items("UsageTable") if i["pk"]["S"] == "JOINLESS_ROOMS"]
    renewed_s = int(mark["marked_at_ms"]["N"]) // 1000 + 86_401  # a day after rating's clock marked it
    livekit_server.rooms["goneroom"] = []  # listed, Dan not in it

    result, enforcement = sweep(roles, renewed_s, lambda_context)
    assert (enforcement.denied, result["joined"], result["joins_abandoned"]) == ([], 0, 0)
    assert ("dynamodb:PutItem", USAGE_TABLE) in enforcement.allowed
    [renewed] = [i for i in stack.table_items("UsageTable") if i["pk"]["S"] == "JOINLESS_ROOMS"]
    assert (int(renewed["marked_at_ms"]["N"]), int(renewed["expires_at"]["N"])) == (
        renewed_s * 1000,
        renewed_s + 7 * 86_400,
    )

    del livekit_server.rooms["goneroom"]  # RoomService: no such room
    result, enforcement = sweep(roles, renewed_s + 300, lambda_context)
    assert (enforcement.denied, result["joined"], result["joins_abandoned"]) == ([], 0, 1)
    assert not [i for i in stack.table_items("UsageTable") if i["pk"]["S"] == "JOINLESS_ROOMS"]


@pytest.mark.parametrize(
    ("pk", "attributes", "allowed"),
    [
        ("JOINLESS_GIVEN_UP", {"said": {"BOOL": True}}, True),  # a said claim (D421)
        ("JOINLESS_ROOMS", {}, True),  # a renewed mark (D393)
        ("JOINLESS_ROOMS", {"said": {"BOOL": True}}, False),  # `said` only on a claim
        ("ACCOUNT#acct_sweep", {}, False),  # a mark's attributes elsewhere: an account's partition
        ("ROOM#RM_iamsweep", {}, False),
    ],
)
def test_given_a_mark_s_attributes_under_the_sweeper_s_role_then_they_are_put_only_in_the_marks_partitions(
    stack: Stack, roles: Roles, pk: str, attributes: dict[str, Any], allowed: bool
) -> None:
    """D412, D421: the grants that put a join-less mark (renewed) and a give-up's claim admit those attributes
    only in their own partitions (``dynamodb:LeadingKeys``) - before, a put of ``pk, sk, marked_at_ms, expires_at``
    was admitted in any partition (an account's profile, invoices, aggregates)."""
    import boto3  # noqa: PLC0415
    from botocore.exceptions import ClientError  # noqa: PLC0415

    item = {"pk": {"S": pk}, "sk": {"S": "ROOM#RM_x"}, "marked_at_ms": {"N": "1"}, "expires_at": {"N": "2"}}
    refused: list[str] = []
    with roles.acting_as(FUNCTION) as enforcement:
        client = boto3.client("dynamodb")
        try:
            client.put_item(TableName=stack.template.physical_name("UsageTable"), Item=item | attributes)
        except ClientError as error:
            refused.append(error.response["Error"]["Code"])
    assert refused == ([] if allowed else ["AccessDeniedException"])
    assert (enforcement.denied == [], ("dynamodb:PutItem", USAGE_TABLE) in enforcement.allowed) == (allowed, allowed)
