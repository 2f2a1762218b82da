"""The room state's incremental path through the DynamoDB adapter on moto (header and participant items, new
generations, chunked writes) gives exactly what a full rebuild gives - the property of
tests/property/test_rating_rooms.py, on the real storage (issue 10).

Each example is a fresh room (its own room sid) in the template's tables: one event per batch, mostly in order, some
delayed, some twice, some naming participants long gone. The stored sessions must equal ``rebuild_room`` over all of
the room's events, and the aggregates must have grown by exactly those sessions' minutes."""

from __future__ import annotations

import itertools
from dataclasses import replace

from hypothesis import HealthCheck, given, settings

from kilo_rate_usage.adapters import DynamoUsageRepository
from kilo_rate_usage.logic import rate_batch
from kilo_rate_usage.model import AttributionRule
from kilo_rate_usage.sessions import rebuild_room
from tests.conftest import Stack
from tests.fakes import RecordingPublisher
from tests.property.test_rating_exactly_once import CONFIG, NOW_MS
from tests.property.test_rating_rooms import arrivals

EXPIRES = NOW_MS // 1000 + 400 * 86_400
ROOMS = itertools.count()


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
