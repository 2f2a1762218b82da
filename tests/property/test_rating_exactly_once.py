"""Exactly-once rating under the stream's delivery semantics: a random small room history (LiveKit webhooks in the
exact JSON LiveKit sends, through the real ingest parser) plus app usage records, delivered to ``rate_batch`` in random
batches - permuted, duplicated, redelivered, sometimes after a crash between two transactions of a commit - ends in the
same sessions and aggregates as delivering everything once, in order; every usage record is counted once (the sum of
the generated quantities); and the items a batch writes are exactly what changed in the store (sessions rewritten,
usage marked, aggregates changed, threshold records), read from the store's state before and after - not from the
outcome the code reports.
"""

from __future__ import annotations

import contextlib
import itertools
from dataclasses import dataclass, replace
from typing import Any

from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from kilo_billing.catalog import default_catalog
from kilo_billing.livekit_events import LiveKitEventRecord
from kilo_billing.usage_events import UsageEventRecord
from kilo_dev import livekit_events as lk
from kilo_dev.livekit_events import Participant, Room
from kilo_rate_usage.logic import rate_batch
from kilo_rate_usage.model import CAPPED, SWEPT, AttributionRule, BatchOutcome, RatingConfig
from kilo_rate_usage.sessions import rebuild_room
from kilo_rate_usage.sweeper import close_event
from tests.fakes import InMemoryUsageRepository, RecordingPublisher

T0 = 1_794_312_000  # 2026-11-10T12:00:00Z
CONFIG = RatingConfig(AttributionRule(), default_catalog().for_period)
TRANSACTION_ITEMS = 3  # small transactions, so a commit has several and a crash can fall between them
NOW_MS = (T0 + 2 * 24 * 3600) * 1000
ACCOUNTS = ["acct-a", "acct-b"]

Record = LiveKitEventRecord | UsageEventRecord
METADATA = ['{"account_id":"acct-b"}', '{"account_id":"acct-a"}', '{"topic":"Q4"}', '{"account_id":"not valid!"}', ""]
FULL_ROOM = {
    "room_started",
    "room_finished",
    "participant_joined",
    "participant_left",
    "participant_connection_aborted",
}


@dataclass(frozen=True)
class Delivery:
    batches: list[list[int]]  # indices into the history's records
    crashes: dict[int, int]  # batch number -> after how many transactions its first attempt crashes


@st.composite
def participant_events(draw: st.DrawFn, room: Room, index: int) -> tuple[list[bytes], list[LiveKitEventRecord], int]:
    """One connection: its join/left (either may be lost), maybe aborted, maybe some tracks; returns its last time."""
    join = T0 + draw(st.integers(0, 900))
    participant = Participant(
        sid=f"PA_{index}",
        identity=f"user-{index % 2}",  # identities repeat: sessions are by sid, never by identity
        joined_at_ms=join * 1000 + draw(st.integers(0, 999)),
        kind=draw(st.sampled_from([None, None, None, "AGENT", "SIP", "EGRESS"])),
        attributes=draw(st.sampled_from([{}, {}, {"kilo.account_id": "acct-b"}])),
    )
    duration = draw(st.integers(0, 2400))
    left = join + duration
    fate = draw(st.sampled_from(["normal", "normal", "normal", "lost_join", "lost_left", "lost_both", "aborted"]))
    bodies: list[bytes] = []
    synthetic: list[LiveKitEventRecord] = []
    if fate == "aborted":
        return [lk.participant_connection_aborted(room, participant, join + 1)], [], join + 1
    if fate not in ("lost_join", "lost_both"):
        bodies.append(lk.participant_joined(room, participant))
    if fate not in ("lost_left", "lost_both"):
        bodies.append(lk.participant_left(room, participant, left))
    elif fate == "lost_left" and draw(st.booleans()):  # the sweeper noticed it was gone: its own close event
        (open_session,) = rebuild_room([lk.to_record(bodies[0])], AttributionRule())
        closed_at = left + draw(st.integers(0, 120))
        # written by the sweep at its own moment, or dated back to the last vouched moment by a later sweep (D125)
        seen = closed_at + draw(st.sampled_from([0, 0, 600, 3000]))
        closes = draw(st.sampled_from(["swept", "swept", "capped", "both"]))  # a cap too, or instead (D17)
        if closes != "capped":
            synthetic.append(close_event(open_session, SWEPT, closed_at, seen * 1000))
        if closes != "swept":
            capped_at = max(join, closed_at - draw(st.integers(0, 300)))
            synthetic.append(close_event(open_session, CAPPED, capped_at, (capped_at + 3600) * 1000))
    for track in range(draw(st.integers(0, 2))):
        video = draw(st.booleans())
        source = draw(st.sampled_from(["CAMERA", "SCREEN_SHARE"])) if video else "MICROPHONE"
        track_sid = f"TR_{index}_{track}"
        published = join + draw(st.integers(0, max(duration, 0)))
        bodies.append(lk.track_published(room, participant, track_sid, published, video=video, source=source))
        if draw(st.booleans()):
            unpublished = published + draw(st.integers(0, 1200))
            bodies.append(lk.track_unpublished(room, participant, track_sid, unpublished, video=video, source=source))
    return bodies, synthetic, left


@st.composite
def usage_records(draw: st.DrawFn) -> list[UsageEventRecord]:
    records = []
    for index in range(draw(st.integers(0, 4))):
        meter = draw(st.sampled_from(["messages", "data_transfer"]))
        # large enough, sometimes, to cross personal allowance thresholds (100000 messages, 10 GB)
        quantity = draw(st.integers(1, 60_000) if meter == "messages" else st.integers(1, 6 * 10**9))
        at = T0 + draw(st.integers(0, 3600))
        records.append(
            UsageEventRecord(
                client_id="kilo-app",
                idempotency_key=f"usage-{index}",
                account_id=draw(st.sampled_from(ACCOUNTS)),
                meter=meter,
                quantity=quantity,
                occurred_at_ms=at * 1000,
                payload_hash=f"hash-{index}",
                received_at_ms=at * 1000 + 10,
            )
        )
    return records


@st.composite
def histories(draw: st.DrawFn) -> list[Record]:
    """All records of one room plus some usage, in the order they happened (by time; ties keep creation order)."""
    room = Room("RM_prop", "prop-room", account_id=draw(st.sampled_from([None, "acct-a"])), created_at=T0)
    bodies = [lk.room_started(room, T0)]
    synthetic: list[LiveKitEventRecord] = []
    last = T0
    for index in range(draw(st.integers(2, 4))):
        more_bodies, more_synthetic, end = draw(participant_events(room, index))
        bodies += more_bodies
        synthetic += more_synthetic
        last = max(last, end)
    if draw(st.booleans()):
        bodies.append(lk.room_finished(room, last + draw(st.integers(0, 60))))
    livekit = [lk.to_record(body) for body in bodies]
    # the app may replace the room's metadata (UpdateRoomMetadata) mid-call: the events that carry the room's full
    # info from then on report the new metadata - another account, none, or none that is valid
    changes = st.lists(
        st.tuples(st.integers(0, 3000), st.sampled_from(METADATA)), max_size=draw(st.sampled_from([2, 6]))
    )
    for at, text in sorted(draw(changes)):
        livekit = [
            replace(record, room_metadata=text) if record.event_type in FULL_ROOM and record.created_at >= T0 + at
            else record
            for record in livekit
        ]  # fmt: skip
    livekit += synthetic
    livekit.sort(key=lambda record: record.created_at)
    usage = draw(usage_records())
    return [*livekit, *sorted(usage, key=lambda record: record.occurred_at_ms)]


@st.composite
def deliveries(draw: st.DrawFn, size: int) -> Delivery:
    """Every record at least once, in a random order, some several times, cut into random batches."""
    stream = list(draw(st.permutations(range(size))))
    for duplicate in draw(st.lists(st.integers(0, size - 1), max_size=size)):
        stream.insert(draw(st.integers(0, len(stream))), duplicate)
    cuts = (
        sorted(draw(st.sets(st.integers(1, len(stream) - 1), max_size=min(10, len(stream) - 1))))
        if len(stream) > 1
        else []
    )
    bounds = [0, *cuts, len(stream)]
    batches = [stream[a:b] for a, b in itertools.pairwise(bounds)]
    crashed = draw(st.sets(st.integers(0, len(batches) - 1), max_size=2))
    return Delivery(batches, {number: draw(st.integers(0, 3)) for number in sorted(crashed)})


def _deliver(repo: InMemoryUsageRepository, publisher: RecordingPublisher, batch: list[Record]) -> BatchOutcome:
    for record in batch:  # ingest stored each event before the stream handed it to rating
        repo.store_event(record)
    livekit = [record for record in batch if isinstance(record, LiveKitEventRecord)]
    usage = [record for record in batch if isinstance(record, UsageEventRecord)]
    return rate_batch(livekit, usage, repo, publisher, CONFIG, NOW_MS)


def _counters(repo: InMemoryUsageRepository) -> dict[tuple[str, str], dict[tuple[int, str], int]]:
    """Aggregates with zero counters dropped (a counter moved to another account and back reads 0, same as absent)."""
    result = {}
    for key, counters in repo.counters.items():
        kept = {counter: quantity for counter, quantity in counters.items() if quantity}
        if kept:
            result[key] = kept
    return result


def _repo() -> InMemoryUsageRepository:
    repo = InMemoryUsageRepository()
    repo.max_transaction_items = TRANSACTION_ITEMS
    return repo


def _in_order(records: list[Record]) -> InMemoryUsageRepository:
    repo = _repo()
    _deliver(repo, RecordingPublisher(), records)
    return repo


def _state(repo: InMemoryUsageRepository) -> dict[str, Any]:
    return {"sessions": repo.sessions, "counters": _counters(repo), "usage_rated": repo.usage_rated}


@st.composite
def scenarios(draw: st.DrawFn) -> tuple[list[Record], Delivery]:
    records = draw(histories())
    return records, draw(deliveries(len(records)))


@settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(scenarios())
def test_random_batches_with_duplicates_and_crashes_end_in_the_same_sessions_and_aggregates(scenario):
    records, delivery = scenario
    expected = _state(_in_order(records))

    repo, publisher = _repo(), RecordingPublisher()
    for number, indices in enumerate(delivery.batches):
        batch = [records[i] for i in indices]
        if number in delivery.crashes:
            repo.crash_after_transactions = delivery.crashes[number]  # the attempt dies between two transactions
            with contextlib.suppress(RuntimeError):  # the stream retries the batch
                _deliver(repo, publisher, batch)
            repo.crash_after_transactions = None
        _deliver(repo, publisher, batch)

    assert _state(repo) == expected
    # and every usage record was counted exactly once
    usage = {r.key: r for r in records if isinstance(r, UsageEventRecord)}
    for meter in ("messages", "data_transfer"):
        for account in ACCOUNTS:
            want = sum(r.quantity for r in usage.values() if r.account_id == account and r.meter == meter)
            assert repo.totals(account, "2026-11").get(meter, 0) == want
    # thresholds are announced at most once per (account, period, meter, threshold)
    ids = [detail["event_id"] for kind, detail in publisher.published if kind == "UsageThresholdCrossed.v1"]
    assert len(ids) == len(set(ids))


def _snapshot(repo: InMemoryUsageRepository) -> dict[str, Any]:
    return {
        "sessions": {key: (stored.version, stored.registers) for key, stored in repo.sessions.items()},
        "usage": set(repo.usage_rated),
        "counters": {key: dict(counters) for key, counters in repo.counters.items()},
        "thresholds": {key: set(markers) for key, markers in repo.thresholds.items()},
        "states": {room: state.version for room, state in repo.states.items()},
        "participants": {
            (room, generation, sid): participant
            for (room, generation), stored in repo.participants.items()
            for sid, participant in stored.items()
        },
    }


def _changed_items(before: dict[str, Any], after: dict[str, Any]) -> int:
    """What the store says was written: each session whose version (or retired participant's registers) changed, each
    usage event newly marked, each aggregate whose counters changed, each aggregate whose threshold markers grew, each
    room state header rewritten, each live participant's item written or deleted (one item each)."""
    sessions = sum(1 for key, version in after["sessions"].items() if before["sessions"].get(key) != version)
    usage = len(after["usage"] - before["usage"])
    aggregates = sum(
        1
        for key, counters in after["counters"].items()
        if {c: q for c, q in counters.items() if q} != {c: q for c, q in before["counters"].get(key, {}).items() if q}
    )
    thresholds = sum(1 for key, markers in after["thresholds"].items() if markers != before["thresholds"].get(key))
    states = sum(1 for room, version in after["states"].items() if before["states"].get(room) != version)
    participants = sum(1 for key, value in after["participants"].items() if before["participants"].get(key) != value)
    participants += len(before["participants"].keys() - after["participants"].keys())  # deleted (retired)
    return sessions + usage + aggregates + thresholds + states + participants


@settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(scenarios())
def test_a_batch_writes_exactly_the_items_that_changed_in_the_store(scenario):
    records, delivery = scenario
    repo, publisher = InMemoryUsageRepository(), RecordingPublisher()  # one transaction per commit (<= 100 items)
    for indices in delivery.batches:
        before_state, before_writes = _snapshot(repo), repo.writes

        outcome = _deliver(repo, publisher, [records[i] for i in indices])

        changed = _changed_items(before_state, _snapshot(repo))
        assert repo.writes - before_writes == changed  # the fake counts every item it applies
        assert outcome.writes == changed  # and the outcome reports the same
