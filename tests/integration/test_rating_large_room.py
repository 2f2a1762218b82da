"""A 1,000-participant room through the events table's stream on moto (issue "Rating at any room size").

The room's webhooks are stored as ingest stores them (the real parser, ``to_item``), the stream is read as Lambda
reads it (the template's filter and batch size) and the rating handler rates each batch. Month to date must equal
figures worked out here from the room's timeline alone - each connection's minutes from its own join and leave, video
while any camera of the room is on (a camera goes off at its unpublish or when its publisher leaves, whichever is
first), rounded up per connection - and the in-order stream must be folded into the room's state, not rebuilt."""

from __future__ import annotations

import json
import math
import random
from datetime import UTC, datetime

import pytest

from kilo_billing.catalog import default_catalog
from kilo_billing.periods import Period
from kilo_dev import livekit_events as lk
from kilo_dev.patterns import matches
from kilo_dev.streams import StreamReader
from tests.conftest import LambdaContext, Stack, accounts_registered

T0 = 1_794_787_200  # 2026-11-16T00:00:00Z
ACCOUNT = "acct_allhands"
registered_accounts = accounts_registered(ACCOUNT)  # the accounts its rooms name (D276)
PARTICIPANTS = 1000
EXPIRES = T0 + 400 * 86_400


def all_hands(n: int, seed: int = 11) -> tuple[list[tuple[int, int, bytes]], list[tuple[int, int]], list[list[int]]]:
    """The room's webhooks (createdAt, order, body), each connection's (join, leave) and each camera's
    [publisher index, on, off]: everyone joins in the first hour with a microphone, every other one turns a camera
    on and off, one in ten reconnects (leaves, joins again as a new participant), all leave in the last half hour
    of three, the room finishes."""
    rng = random.Random(seed)
    room = lk.Room("RM_allhands", "all-hands", account_id=ACCOUNT, created_at=T0)
    bodies: list[tuple[int, int, bytes]] = [(T0, 0, lk.room_started(room, T0))]
    connections: list[tuple[int, int]] = []
    cameras: list[list[int]] = []
    end = T0 + 3 * 3600

    def add(at: int, body: bytes) -> None:
        bodies.append((at, len(bodies), body))

    for index in range(n):
        joined = T0 + 1 + index * 3600 // n
        person = lk.Participant(f"PA_{index:05d}", f"user-{index}", joined * 1000)
        add(joined, lk.participant_joined(room, person))
        add(joined + 1, lk.track_published(room, person, f"TR_mic_{index}", joined + 1, video=False))
        connection_start = joined
        camera = None
        if index % 2 == 0:
            on = joined + 5 + rng.randint(0, 600)
            off = on + rng.randint(60, 3600)
            add(on, lk.track_published(room, person, f"TR_cam_{index}", on, video=True))
            add(off, lk.track_unpublished(room, person, f"TR_cam_{index}", off, video=True))
            camera = [on, off]
        leave = end - rng.randint(1, 1800)
        if index % 10 == 0:  # reconnects: the camera (if any) may be unpublished after this first connection left
            gone = joined + rng.randint(120, 1200)
            add(gone, lk.participant_left(room, person, gone))
            connections.append((connection_start, gone))
            if camera is not None:
                camera[1] = min(camera[1], gone)
            again = lk.Participant(f"PA_{index:05d}r", f"user-{index}", (gone + 2) * 1000)
            add(gone + 2, lk.participant_joined(room, again))
            add(gone + 3, lk.track_published(room, again, f"TR_mic_{index}r", gone + 3, video=False))
            person, connection_start = again, gone + 2
        elif camera is not None:
            camera[1] = min(camera[1], leave)
        if camera is not None:
            cameras.append(camera)
        add(leave, lk.participant_left(room, person, leave))
        connections.append((connection_start, leave))
    add(end + 5, lk.room_finished(room, end + 5))
    return sorted(bodies), connections, cameras


def expected_minutes(connections: list[tuple[int, int]], cameras: list[list[int]]) -> dict[str, int]:
    """Per second of the room: is a camera on? Then each connection's video and audio minutes, rounded up."""
    start = min(a for a, _ in connections)
    stop = max(b for _, b in connections)
    on = [0] * (stop - start + 1)
    for first, last in cameras:  # camera counted on for the seconds [first, last)
        for second in range(max(first, start), min(last, stop)):
            on[second - start] = 1
    prefix = [0]
    for flag in on:
        prefix.append(prefix[-1] + flag)
    totals = {"video": 0, "audio": 0}
    for joined, left in connections:
        seconds = left - joined
        video_seconds = prefix[left - start] - prefix[joined - start]
        minutes = math.ceil(seconds / 60)
        video = min(minutes, math.ceil(video_seconds / 60))
        totals["video"] += video
        totals["audio"] += minutes - video
    return totals


@pytest.fixture
def transactions_in_place(monkeypatch: pytest.MonkeyPatch) -> None:
    """moto's TransactWriteItems deep-copies the whole table per item it writes (its rollback): with a large room's
    events in the table that is minutes of moto's CPU. The local stack's bound (``kilo_dev.moto_server``: snapshot
    the named items only, same outcome) for this test, undone after it."""
    import moto.dynamodb.models as dynamodb_models  # noqa: PLC0415

    from kilo_dev import moto_server  # noqa: PLC0415

    monkeypatch.setattr(dynamodb_models, "copy", dynamodb_models.copy)  # restored after the test
    monkeypatch.setattr(
        dynamodb_models.DynamoDBBackend, "transact_write_items", dynamodb_models.DynamoDBBackend.transact_write_items
    )
    moto_server._transactions_in_place()


@pytest.mark.usefixtures("transactions_in_place")
def test_given_a_1000_participant_room_through_the_stream_then_month_to_date_matches_its_timeline(
    stack: Stack, lambda_context: LambdaContext
) -> None:
    from kilo_rate_usage import dependencies  # noqa: PLC0415
    from kilo_rate_usage.handler import lambda_handler  # noqa: PLC0415
    from kilo_rate_usage.queries import month_to_date  # noqa: PLC0415

    bodies, connections, cameras = all_hands(PARTICIPANTS)
    dynamodb = stack.clients["dynamodb"]
    events_table = stack.template.physical_name("EventsTable")
    spec = stack.template.resources["RateUsageFunction"]["Properties"]["Events"]["EventsStream"]["Properties"]
    filters = [json.loads(f["Pattern"]) for f in spec["FilterCriteria"]["Filters"]]
    reader = StreamReader(stack.clients["dynamodbstreams"], stack.template.get_att("EventsTable", "StreamArn"))
    repo = dependencies.rating().repo
    queries: list[str] = []
    repo._client.meta.events.register(
        "provide-client-params.dynamodb.Query",
        lambda params, **_: queries.append(params["TableName"]) if params["TableName"] == events_table else None,
    )
    delivered = 0
    for chunk in range(0, len(bodies), spec["BatchSize"]):  # ingest stores a stretch, the stream delivers it
        stretch = [lk.to_record(body).to_item(EXPIRES) for _, _, body in bodies[chunk : chunk + spec["BatchSize"]]]
        for start in range(0, len(stretch), 25):  # the items ingest writes, 25 per request (a faster moto)
            writes = [{"PutRequest": {"Item": item}} for item in stretch[start : start + 25]]
            assert not dynamodb.batch_write_item(RequestItems={events_table: writes}).get("UnprocessedItems")
        while page := reader.poll():
            records = [r for r in page if any(matches(f, r) for f in filters)]
            delivered += len(records)
            assert lambda_handler({"Records": records}, lambda_context) == {"batchItemFailures": []}
    assert delivered == len(bodies) == 4302

    now_ms = (T0 + 4 * 3600) * 1000
    period = Period.containing(datetime.fromtimestamp(T0, tz=UTC))
    mtd = month_to_date(repo, ACCOUNT, period.key, now_ms, default_catalog().for_period(period))
    want = expected_minutes(connections, cameras)
    assert (mtd.open_sessions, {meter: int(mtd.used[meter]) for meter in ("video", "audio")}) == (0, want)
    assert min(want.values()) > 0
    assert len(connections) == 1100
    assert queries == [events_table]  # only the first batch (no state yet) read the room's events: no rebuilds
