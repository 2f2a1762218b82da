"""Rating benchmark: LiveKit events rated per second on one core, in-process, repository in memory.

A month's worth of realistic traffic shape: rooms of 2-8 participants, camera on and off, a few reconnects, delivered
in stream batches of 500 (the template's batch size). Each batch rebuilds the rooms it touched from all their events,
as in production; the in-memory repository has the same transaction semantics as the DynamoDB one.
"""

from __future__ import annotations

import platform
import random
import sys
import time
from pathlib import Path
from typing import Any

from bench import write_section

ROOT = Path(__file__).resolve().parents[1]


def _events(rooms: int, seed: int = 11) -> list[Any]:
    from kilo_dev import livekit_events as lk  # noqa: PLC0415

    rng = random.Random(seed)
    t0 = 1_794_787_200
    records = []
    for r in range(rooms):
        room = lk.Room(f"RM_b{r:06d}", f"room-{r}", account_id=f"acct_{r % 50}", created_at=t0 + r * 60)
        start = t0 + r * 60
        bodies = [lk.room_started(room, start)]
        for p in range(rng.randint(2, 8)):
            person = lk.Participant(f"PA_b{r:06d}_{p}", f"user{p}", (start + p) * 1000)
            bodies.append(lk.participant_joined(room, person))
            bodies.append(lk.track_published(room, person, f"TR_m{r}_{p}", start + p + 1, video=False))
            if rng.random() < 0.6:
                bodies.append(lk.track_published(room, person, f"TR_c{r}_{p}", start + p + 30, video=True))
                bodies.append(lk.track_unpublished(room, person, f"TR_c{r}_{p}", start + 900, video=True))
            bodies.append(lk.participant_left(room, person, start + rng.randint(300, 3600)))
        bodies.append(lk.room_finished(room, start + 3700))
        records.extend(lk.to_record(body) for body in bodies)
    return records


def run(quick: bool = False) -> dict[str, float]:
    sys.path.insert(0, str(ROOT))
    from kilo_billing.catalog import default_catalog  # noqa: PLC0415
    from kilo_rate_usage.logic import rate_batch  # noqa: PLC0415
    from kilo_rate_usage.model import AttributionRule, RatingConfig  # noqa: PLC0415
    from tests.fakes import InMemoryUsageRepository, RecordingPublisher, registered  # noqa: PLC0415

    records = _events(60 if quick else 600)
    # the rooms' accounts registered: minutes of an unregistered id take the unattributed path (D276)
    repo = InMemoryUsageRepository(registered(*(f"acct_{n}" for n in range(50))))
    publisher = RecordingPublisher()
    config = RatingConfig(AttributionRule(), default_catalog().for_period)
    start = time.perf_counter()
    sessions = 0
    for offset in range(0, len(records), 500):
        batch = records[offset : offset + 500]
        for record in batch:
            repo.store_event(record)  # ingest stored it before the stream delivered it
        sessions += rate_batch(batch, [], repo, publisher, config, 1_794_800_000_000).sessions_changed
    elapsed = time.perf_counter() - start
    result = {"events": len(records), "seconds": elapsed, "per_second": len(records) / elapsed, "sessions": sessions}
    result["churn_rebuild_s"] = _metadata_churn_rebuild(400 if quick else 4000)
    changes = 200 if quick else 2000
    result["always_on_changes"] = changes
    for name, prune_from in (("pruned", None), ("unpruned", 10**9)):
        header, runs, rebuilds = _always_on_header(changes, prune_from)
        result[f"always_on_{name}_header_bytes"] = header
        result[f"always_on_{name}_runs"] = runs
        result[f"always_on_{name}_rebuilds"] = rebuilds
    _write_doc(result)
    return result


def _metadata_churn_rebuild(sessions: int) -> float:
    """Seconds to rebuild one room whose app rewrites its ~1 KB metadata (account and a roster) on every join: one
    metadata run per session (D163; review s6 measured 17.6 s for 4,000 before each run was parsed once)."""
    import json  # noqa: PLC0415

    from kilo_billing.livekit_events import LiveKitEventRecord  # noqa: PLC0415
    from kilo_rate_usage.model import AttributionRule  # noqa: PLC0415
    from kilo_rate_usage.sessions import rebuild_room  # noqa: PLC0415

    t0 = 1_794_787_200
    events = []
    for i in range(sessions):
        metadata = json.dumps({"account_id": "acct-a", "seats": i, "roster": "x" * 1000})
        for n, kind, at in ((2 * i, "participant_joined", t0 + i), (2 * i + 1, "participant_left", t0 + i + 3600)):
            events.append(
                LiveKitEventRecord(
                    event_id=f"EV_{n:07d}",
                    event_type=kind,
                    created_at=at,
                    api_key="k",
                    body=b"",
                    received_at_ms=0,
                    room_sid="RM_churn",
                    room_name="churn",
                    participant_sid=f"PA_{i:05d}",
                    joined_at_ms=(t0 + i) * 1000,
                    room_metadata=metadata,
                )
            )
    start = time.perf_counter()
    rebuilt = rebuild_room(events, AttributionRule())
    elapsed = time.perf_counter() - start
    assert len(rebuilt) == sessions
    assert {s.account for s in rebuilt} == {"acct-a"}
    return elapsed


def _always_on_header(changes: int, prune_from: int | None) -> tuple[int, int, int]:
    """An always-on room handed between two accounts every 10 s (its metadata replaced; each newcomer's join reports
    it, and it leaves 65 s later), rated one event per batch through the room-state codec: the header item's size
    (compressed bytes) and metadata runs at the end, and the rebuilds (reads of the room's events) on the way.
    ``prune_from``: ``rooms.PRUNE_RUNS_FROM`` (None: the code's; a huge value: never pruned, as before)."""
    import json  # noqa: PLC0415
    from unittest.mock import patch  # noqa: PLC0415

    from kilo_billing.catalog import default_catalog  # noqa: PLC0415
    from kilo_dev import livekit_events as lk  # noqa: PLC0415
    from kilo_rate_usage import items, rooms  # noqa: PLC0415
    from kilo_rate_usage.logic import rate_batch  # noqa: PLC0415
    from kilo_rate_usage.model import AttributionRule, RatingConfig  # noqa: PLC0415
    from tests.fakes import InMemoryUsageRepository, RecordingPublisher, registered  # noqa: PLC0415

    t0 = 1_794_787_200
    room = lk.Room("RM_always", "always-on", account_id="acct-a", created_at=t0)
    timeline: list[tuple[int, str, bytes]] = [(t0, json.dumps({"account_id": "acct-a"}), lk.room_started(room, t0))]
    for number in range(changes):
        at = t0 + 10 * number + 1
        person = lk.Participant(f"PA_{number:05}", f"user-{number}", at * 1000)
        metadata = json.dumps({"account_id": ("acct-a", "acct-b")[number % 2]})
        timeline.append((at, metadata, lk.participant_joined(room, person)))
        timeline.append((at + 65, "", lk.participant_left(room, person, at + 65)))
    records = []
    current = ""
    for _, metadata, body in sorted(timeline, key=lambda entry: entry[0]):
        current = metadata or current  # a left reports the metadata in force when it is sent
        event = json.loads(body)
        event["room"]["metadata"] = current
        records.append(lk.to_record(json.dumps(event).encode()))
    repo, publisher = InMemoryUsageRepository(registered("acct-a", "acct-b")), RecordingPublisher()
    config = RatingConfig(AttributionRule(), default_catalog().for_period)
    reads = [0]
    original = repo.room_events
    repo.room_events = lambda sid: reads.__setitem__(0, reads[0] + 1) or original(sid)  # type: ignore[method-assign]
    with patch.object(rooms, "PRUNE_RUNS_FROM", prune_from or rooms.PRUNE_RUNS_FROM):
        for record in records:
            repo.store_event(record)
            rate_batch([record], [], repo, publisher, config, 1_794_800_000_000)
    state = repo.states["RM_always"]
    try:
        size = len(items.state_to_item(state, state.version, state.generation)[items.STATE_BLOB]["B"])
    except items.StateTooLargeError as too_large:
        size = int(str(too_large.args[0]))
    return size, len(state.fold.metadata), reads[0]


def _write_doc(result: dict[str, float]) -> None:
    always_on = (
        f"| always-on room handed between two accounts every 10 s, {result['always_on_changes']:,.0f} changes, "
        "one-event batches: header item (zlib) / metadata runs / rebuilds, runs pruned (D163) | "
        f"{result['always_on_pruned_header_bytes']:,.0f} B / {result['always_on_pruned_runs']:,.0f} / "
        f"{result['always_on_pruned_rebuilds']:,.0f} |\n"
        f"| the same, runs never pruned (as before) | {result['always_on_unpruned_header_bytes']:,.0f} B / "
        f"{result['always_on_unpruned_runs']:,.0f} / {result['always_on_unpruned_rebuilds']:,.0f} |"
    )
    where = f"{time.strftime('%Y-%m-%d')}, {platform.machine()}, Python {platform.python_version()}"
    section = f"""## Rating (issue 4) — {where}

| measure | result |
|---|---|
| LiveKit events rated per second, one core, in-process (repository in memory) | {result["per_second"]:,.0f} |
| events / session writes in the run | {result["events"]:,.0f} / {result["sessions"]:,.0f} |
| one room's rebuild: 4,000 sessions, ~1 KB room metadata rewritten at every join (~8,000 runs) | \
{result["churn_rebuild_s"]:.2f} s |
{always_on}

Stream batches of 500; every batch rebuilds each room it touches from all of that room's events (a room's events
arrive spread over batches, so a room is rebuilt more than once), diffs against the stored sessions and commits one
transaction per 100 items. Writes per batch are asserted in tests, not timed:
`writes = sessions changed + usage events rated + aggregates touched (per transaction) + aggregates with new
thresholds` (`tests/integration/test_rating_stream.py`, `tests/property/test_rating_exactly_once.py`).
The metadata-churn rebuild parses each metadata run once and attributes each session by binary search (D163,
`sessions.RoomAccounts`; `tests/property/test_room_attribution.py` counts the parses). Before (feaf4f5, every
session re-parsing every run up to its start) this bench measured 17.4 s for it, against rating's 120 s timeout."""
    write_section("rating", section)
