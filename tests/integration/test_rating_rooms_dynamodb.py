"""The room state's incremental path through the DynamoDB adapter on moto (header and participant items, new
generations, chunked writes) gives exactly what a full rebuild gives - the property of
tests/property/test_rating_rooms.py, on the real storage (issue 10).

Each example is a fresh room (its own room sid) in the template's tables: one event per batch, mostly in order, some
delayed, some twice, some naming participants long gone. The stored sessions must equal ``rebuild_room`` over all of
the room's events, and the aggregates must have grown by exactly those sessions' minutes."""

from __future__ import annotations

import itertools
import zlib
from dataclasses import replace

from hypothesis import HealthCheck, given, settings

from kilo_rate_usage.adapters import DynamoUsageRepository
from kilo_rate_usage.logic import rate_batch
from kilo_rate_usage.model import AttributionRule
from kilo_rate_usage.sessions import rebuild_room
from tests.conftest import Stack, accounts_registered
from tests.fakes import RecordingPublisher
from tests.property.test_rating_exactly_once import CONFIG, NOW_MS
from tests.property.test_rating_rooms import arrivals

EXPIRES = NOW_MS // 1000 + 400 * 86_400
ROOMS = itertools.count()
registered_accounts = accounts_registered(
    "acct-a", "acct-b", "acct-fin", "acct_late"
)  # the accounts its rooms name (D276)


@settings(
    max_examples=6,
    deadline=None,
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.function_scoped_fixture],
)
@given(scenario=arrivals())
def test_one_event_batches_through_dynamodb_give_the_sessions_and_aggregates_of_a_full_rebuild(
    stack: Stack, scenario
) -> None:
    room = f"RM_ddb{next(ROOMS)}"
    events, order = ([replace(event, room_sid=room) for event in part] for part in scenario)
    client = stack.clients["dynamodb"]
    usage_table, events_table = (stack.template.physical_name(n) for n in ("UsageTable", "EventsTable"))
    repo, publisher = DynamoUsageRepository(client, usage_table, events_table), RecordingPublisher()
    reference = {s.participant_sid: s for s in rebuild_room(events, AttributionRule())}
    keys = {(s.account, part.period) for s in reference.values() for part in s.parts}
    before = {key: aggregate.totals() for key, aggregate in repo.aggregates(keys).items()}

    for event in order:
        client.put_item(TableName=events_table, Item=event.to_item(EXPIRES))  # ingest stores, the stream delivers
        rate_batch([event], [], repo, publisher, CONFIG, NOW_MS)

    stored = repo.stored_sessions(room)
    assert {sid: found.session for sid, found in stored.items()} == reference
    grown: dict[tuple[str, str], dict[str, int]] = {}
    for key, aggregate in repo.aggregates(keys).items():
        totals = aggregate.totals()
        grown[key] = {m: q - before[key].get(m, 0) for m, q in totals.items() if q != before[key].get(m, 0)}
    tally: dict[tuple[str, str], dict[str, int]] = {key: {} for key in keys}
    for found in stored.values():
        for (account, period, _, meter), quantity in found.contributions.items():
            if quantity:
                counters = tally.setdefault((account, period), {})
                counters[meter] = counters.get(meter, 0) + quantity
    assert grown == {key: {m: q for m, q in counters.items() if q} for key, counters in tally.items()}


def test_a_finished_rooms_state_keeps_no_identity_and_a_late_event_still_rates_exactly(stack: Stack) -> None:
    """D196: while the room runs its state names its participants (the header's window of recent events, one
    item per live participant); once it has finished, the header keeps only its version and cut-off and every
    participant item is deleted, so no identity stays behind in rating's state (it stayed there for good: the last
    seconds' events on the header, their participants "live" in it). A late event rebuilds the room, exactly."""
    from kilo_dev import livekit_events as lk  # noqa: PLC0415

    t0 = NOW_MS // 1000 - 7200
    room = lk.Room(f"RM_fin{next(ROOMS)}", "finished", account_id="acct-fin", created_at=t0)
    ada, bo = lk.Participant("PA_ada", "ada@example.com", t0 * 1000), lk.Participant("PA_bo", "bo-identity", t0 * 1000)
    bodies = [
        lk.room_started(room, t0),
        lk.participant_joined(room, ada),
        lk.participant_joined(room, bo),
        lk.track_published(room, ada, "TR_cam", t0 + 60, video=True),
        lk.participant_left(room, bo, t0 + 1200),
        lk.participant_left(room, ada, t0 + 1800),
        lk.room_finished(room, t0 + 1801),
    ]
    records = [lk.to_record(body) for body in bodies]
    late = lk.to_record(lk.track_unpublished(room, ada, "TR_cam", t0 + 600, video=True))  # delivered after it all
    client = stack.clients["dynamodb"]
    usage_table, events_table = (stack.template.physical_name(n) for n in ("UsageTable", "EventsTable"))
    repo, publisher = DynamoUsageRepository(client, usage_table, events_table), RecordingPublisher()

    def state_items() -> list[str]:
        """The room state's items (header, participants) as text, the header's compressed blob unpacked."""
        found = client.query(
            TableName=usage_table,
            KeyConditionExpression="pk = :p",
            ExpressionAttributeValues={":p": {"S": f"ROOM#{room.sid}"}},
        )["Items"]
        return [
            repr({name: zlib.decompress(value["B"]) if "B" in value else value for name, value in item.items()})
            for item in found
            if item["sk"]["S"] == "STATE" or item["sk"]["S"].startswith("PART#")
        ]

    def deliver(record) -> None:  # type: ignore[no-untyped-def]
        client.put_item(TableName=events_table, Item=record.to_item(EXPIRES))
        rate_batch([record], [], repo, publisher, CONFIG, NOW_MS)

    for record in records[:3]:
        deliver(record)
    assert any("ada@example.com" in item for item in state_items())  # live: its item names her
    for record in records[3:]:
        deliver(record)
    (header,) = state_items()  # no participant item left
    assert "state_zlib" not in header
    assert "'version'" in header
    assert "'delivered_ms'" in header
    assert not any(name in header for name in ("ada@example.com", "bo-identity", "PA_ada"))
    # ada: t0 .. t0+1800 = 30 min, camera t0+60 .. her end: 29 video, 1 audio; bo: 20 min, 19 video, 1 audio
    stored = {sid: found.session for sid, found in repo.stored_sessions(room.sid).items()}
    assert [(part.video, part.audio) for part in stored["PA_ada"].parts] == [(29, 1)]
    assert [(part.video, part.audio) for part in stored["PA_bo"].parts] == [(19, 1)]

    deliver(late)  # the camera ended at t0+600 after all: rebuilt from the stored events
    stored = {sid: found.session for sid, found in repo.stored_sessions(room.sid).items()}
    reference = {s.participant_sid: s for s in rebuild_room([*records, late], AttributionRule())}
    assert stored == reference
    # ada: video t0+60 .. t0+600 = 540 s -> 9 video, 30 - 9 = 21 audio; bo: the same 9 video, 11 audio
    assert [(part.video, part.audio) for part in stored["PA_ada"].parts] == [(9, 21)]
    assert [(part.video, part.audio) for part in stored["PA_bo"].parts] == [(9, 11)]
    assert not any("ada@example.com" in item for item in state_items())


def test_a_finished_rooms_header_keeps_its_event_count_and_a_rebuild_from_fewer_refuses_the_room(
    stack: Stack,
) -> None:
    """D273 on the real storage: the finished room's version-only header keeps ``events`` (8, the room's
    events, each rated once); the first four expire from the events table, the replayed leave is refused with the
    reason naming it, and the aggregate keeps what was rated."""
    from tests.unit.test_rating_late_replay import ACCOUNT, RATED, REFUSED, ROOM, timeline  # noqa: PLC0415

    client = stack.clients["dynamodb"]
    usage_table, events_table = (stack.template.physical_name(n) for n in ("UsageTable", "EventsTable"))
    repo, publisher = DynamoUsageRepository(client, usage_table, events_table), RecordingPublisher()
    records = []
    for record, now_ms in timeline():
        client.put_item(TableName=events_table, Item=record.to_item(EXPIRES))  # ingest stores, the stream delivers
        assert rate_batch([record], [], repo, publisher, CONFIG, now_ms).rejected == ()
        records.append(record)
    header = client.get_item(TableName=usage_table, Key={"pk": {"S": f"ROOM#{ROOM}"}, "sk": {"S": "STATE"}})["Item"]
    assert ("state_zlib" in header, header["events"]) == (False, {"N": "8"})
    for record in records[:4]:  # their raw events' TTL passed
        item = record.to_item(EXPIRES)
        key = {name: item[name] for name in ("pk", "sk")}
        client.delete_item(TableName=events_table, Key=key)

    replayed = rate_batch([records[6]], [], repo, publisher, CONFIG, NOW_MS)

    assert [(rejected.room_sid, rejected.reason) for rejected in replayed.rejected] == [(ROOM, REFUSED)]
    assert repo.aggregates([(ACCOUNT, "2026-11")])[(ACCOUNT, "2026-11")].totals() == RATED
