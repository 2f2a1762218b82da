"""Rating cost against room size (issue "Rating at any room size").

Workload per room of n participants (in the order LiveKit sends it): room_started; each participant joins and
publishes a microphone; half of them publish a camera, which they unpublish later; 10 % reconnect (the first
connection leaves, a new one joins and publishes its microphone); everyone leaves; room_finished. That is
3 n + n (camera) + 0.3 n (reconnects) + 2 events: 88 for n = 20, 862 for n = 200, 4,302 for n = 1,000.

Measured in-process against the in-memory repository with one-event batches (the stream's worst case): the events up
to the 50 % / 75 % mark are rated first as one batch (that puts the room's state where it would be, cheaply), then the
next ``sample`` events are rated one per batch and their CPU time (``time.process_time``) and writes are averaged.
"""

from __future__ import annotations

import random
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

T0 = 1_794_787_200  # 2026-11-16T00:00:00Z


def room_bodies(n: int, seed: int = 7, room_sid: str | None = None) -> list[bytes]:
    """The room's webhook bodies in createdAt order (ties in generation order)."""
    from kilo_dev import livekit_events as lk  # noqa: PLC0415

    rng = random.Random(seed)
    room = lk.Room(room_sid or f"RM_size{n}", f"size-{n}", account_id="acct_big", created_at=T0)
    timed: list[tuple[int, int, bytes]] = [(T0, 0, lk.room_started(room, T0))]
    order = 1

    def add(at: int, body: bytes) -> None:
        nonlocal order
        timed.append((at, order, body))
        order += 1

    end = T0 + 3 * 3600
    for index in range(n):
        joined = T0 + 1 + index * 3600 // max(n, 1)
        person = lk.Participant(f"PA_{index:05d}", f"user-{index}", joined * 1000)
        add(joined, lk.participant_joined(room, person))
        add(joined + 1, lk.track_published(room, person, f"TR_mic_{index}", joined + 1, video=False))
        if index % 2 == 0:
            on = joined + 5 + rng.randint(0, 600)
            add(on, lk.track_published(room, person, f"TR_cam_{index}", on, video=True))
            off = on + rng.randint(60, 3600)
            add(off, lk.track_unpublished(room, person, f"TR_cam_{index}", off, video=True))
        leave = end - rng.randint(1, 1800)
        if index % 10 == 0:  # a full reconnect: a new participant sid for the same identity
            gone = joined + rng.randint(120, 1200)
            add(gone, lk.participant_left(room, person, gone))
            again = lk.Participant(f"PA_{index:05d}r", f"user-{index}", (gone + 2) * 1000)
            add(gone + 2, lk.participant_joined(room, again))
            add(gone + 3, lk.track_published(room, again, f"TR_mic_{index}r", gone + 3, video=False))
            person = again
        add(leave, lk.participant_left(room, person, leave))
    timed.append((end + 5, order, lk.room_finished(room, end + 5)))
    timed.sort(key=lambda entry: (entry[0], entry[1]))
    return [body for _, _, body in timed]


@dataclass(frozen=True, slots=True)
class PointCost:
    cpu_ms: float  # CPU per one-event batch
    writes: float  # writes per one-event batch


def measure_point(records: list[Any], fraction: float, sample: int, rate_one: Callable[[list[Any]], int]) -> PointCost:
    """Rate records[:k] as one batch, then ``sample`` one-event batches; ``rate_one`` rates a batch, returns writes."""
    k = int(len(records) * fraction)
    rate_one(records[:k])
    cpu = 0.0
    writes = 0
    taken = records[k : k + sample]
    for record in taken:
        start = time.process_time()
        writes += rate_one([record])
        cpu += time.process_time() - start
    return PointCost(cpu * 1000 / len(taken), writes / len(taken))
