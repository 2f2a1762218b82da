"""Exactly-once rating under the stream's delivery semantics: a random small room history (LiveKit webhooks in the
exact JSON LiveKit sends, through the real ingest parser) plus app usage records, delivered to ``rate_batch`` in random
batches - permuted, duplicated, redelivered, sometimes after a crash mid-commit - ends in the same sessions and
aggregates as delivering everything once, in order. And a batch never writes more than its outcome accounts for.
"""

from __future__ import annotations

import contextlib
import itertools
from dataclasses import dataclass
from typing import Any

from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from kilo_billing.catalog import default_catalog
from kilo_billing.events import LiveKitEventRecord, UsageEventRecord
from kilo_dev import livekit_events as lk
from kilo_dev.livekit_events import Participant, Room
from kilo_rate_usage.logic import BatchOutcome, RatingConfig, rate_batch
from kilo_rate_usage.sessions import SWEPT, AttributionRule
from tests.fakes import InMemoryUsageRepository, RecordingPublisher

T0 = 1_794_312_000  # 2026-11-10T12:00:00Z
CONFIG = RatingConfig(AttributionRule(), 24 * 3600, default_catalog().for_period)
NOW_MS = (T0 + 2 * 24 * 3600) * 1000
ACCOUNTS = ["acct-a", "acct-b"]

Record = LiveKitEventRecord | UsageEventRecord


@dataclass(frozen=True)
class Delivery:
    batches: list[list[int]]  # indices into the history's records
    crash_before: set[int]  # batch numbers whose first attempt crashes before its commit


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
    elif draw(st.booleans()):  # the sweeper noticed it was gone
        synthetic.append(
            LiveKitEventRecord(
                event_id=f"kilo-swept-{participant.sid}",
                event_type=SWEPT,
                created_at=left + draw(st.integers(0, 120)),
                api_key="kilo-sweeper",
                body=b"{}",
                received_at_ms=0,
                room_sid=room.sid,
                room_name=room.name,
                participant_sid=participant.sid,
                participant_identity=participant.identity,
            )
        )
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
    livekit = [lk.to_record(body) for body in bodies] + synthetic
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
    crashes = draw(st.sets(st.integers(0, len(batches) - 1), max_size=2))
    return Delivery(batches, crashes)


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


def _in_order(records: list[Record]) -> InMemoryUsageRepository:
    repo = InMemoryUsageRepository()
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

    repo, publisher = InMemoryUsageRepository(), RecordingPublisher()
    for number, indices in enumerate(delivery.batches):
        batch = [records[i] for i in indices]
        if number in delivery.crash_before:
            repo.fail_commit_after = 0  # every commit now fails: the batch dies before writing anything
            with contextlib.suppress(RuntimeError):  # the stream retries the batch
                _deliver(repo, publisher, batch)
            repo.fail_commit_after = None
        _deliver(repo, publisher, batch)

    assert _state(repo) == expected
    # and every usage record was counted exactly once
    usage = {r.key: r for r in records if isinstance(r, UsageEventRecord)}
    for meter in ("messages", "data_transfer"):
        for account in ACCOUNTS:
            want = sum(r.quantity for r in usage.values() if r.account_id == account and r.meter == meter)
            assert repo.totals(account, "2026-11").get(meter, 0) == want
    # thresholds are announced at most once per (account, period, meter, threshold)
    ids = [detail["event_id"] for _, detail in publisher.published]
    assert len(ids) == len(set(ids))


@settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(scenarios())
def test_a_batch_writes_no_more_than_its_changes_aggregates_and_thresholds(scenario):
    records, delivery = scenario
    repo, publisher = InMemoryUsageRepository(), RecordingPublisher()
    for indices in delivery.batches:
        before = repo.writes

        outcome = _deliver(repo, publisher, [records[i] for i in indices])

        written = repo.writes - before
        assert written == outcome.writes
        assert written <= (
            outcome.sessions_changed + outcome.usage_rated + outcome.aggregates_touched + outcome.thresholds
        )
