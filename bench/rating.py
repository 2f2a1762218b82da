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
    from tests.fakes import InMemoryUsageRepository, RecordingPublisher  # noqa: PLC0415

    records = _events(60 if quick else 600)
    repo, publisher = InMemoryUsageRepository(), RecordingPublisher()
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
    _write_doc(result)
    return result


def _write_doc(result: dict[str, float]) -> None:
    where = f"{time.strftime('%Y-%m-%d')}, {platform.machine()}, Python {platform.python_version()}"
    section = f"""## Rating (issue 4) — {where}

| measure | result |
|---|---|
| LiveKit events rated per second, one core, in-process (repository in memory) | {result["per_second"]:,.0f} |
| events / session writes in the run | {result["events"]:,.0f} / {result["sessions"]:,.0f} |

Stream batches of 500; every batch rebuilds each room it touches from all of that room's events (a room's events
arrive spread over batches, so a room is rebuilt more than once), diffs against the stored sessions and commits one
transaction per 100 items. Writes per batch are asserted in tests, not timed:
`writes = sessions changed + usage events rated + aggregates touched (per transaction) + aggregates with new
thresholds` (`tests/integration/test_rating_stream.py`, `tests/property/test_rating_exactly_once.py`)."""
    write_section("rating", section)
