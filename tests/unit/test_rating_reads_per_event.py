"""Items read per in-order event do not grow with the room (issue 10, docs/decisions.md D69).

The same workload at 20 and at 1,000 participants, every event its own batch (the stream's worst case), through the
in-memory repository with the header and participant items through the adapter's item codec. Every item a read
returns (what DynamoDB charges for) is counted. The timeline is the same 40 minutes at both sizes, so the 1,000 room
has about 9 events inside the 5 s reorder window at any time (the 20 room well under one): before the fix, a batch
loaded every participant the window's events name and read 12.8 items per event at 1,000 against 4.5 at 20 (now
4.6 and 4.3).

The bound, worked out per event (one account, one period, no usage events):
- the room's header: 1;
- the participant the event names: 1 (its item, if live); the participants of the window's events this batch moves
  past the horizon: each event moves past it once, so 1 per event on average over the room;
- the named participant's session: 1; the sessions closed inside the window that a video change reaches: only
  those that end after the change, which for in-order events is rare;
- the account's aggregate, before and after the commit: 2; the account's profile: 1.
That is 7 per event on average; the bound asserted is 7 at both sizes, and the 1,000 room may read at most one item
per event more than the 20 room (in a small room the participant moved past the horizon is often the one the event
names: one item for both).
"""

from __future__ import annotations

import random

from kilo_billing.livekit_events import LiveKitEventRecord
from kilo_dev import livekit_events as lk
from kilo_rate_usage.logic import rate_batch
from kilo_rate_usage.model import AttributionRule
from kilo_rate_usage.sessions import rebuild_room
from tests.fakes import CountingRepository, InMemoryUsageRepository, RecordingPublisher, registered
from tests.property.test_rating_exactly_once import CONFIG, NOW_MS

T0 = 1_794_787_200  # 2026-11-16T00:00:00Z
MINUTES = 40
BOUND = 7.0  # items read per event, on average over the whole room (worked out in the module's docstring)


def room(n: int, seed: int = 3) -> list[LiveKitEventRecord]:
    """n participants join over the first quarter with a microphone, half turn a camera on and off, one in ten
    reconnects (a new participant sid), everyone leaves in the last quarter, the room finishes; in createdAt order."""
    rng = random.Random(seed)
    span = MINUTES * 60
    sid = f"RM_reads{n}"
    info = lk.Room(sid, f"reads-{n}", account_id="acct_reads", created_at=T0)
    timed: list[tuple[int, int, bytes]] = [(T0, 0, lk.room_started(info, T0))]

    def add(at: int, body: bytes) -> None:
        timed.append((at, len(timed), body))

    for index in range(n):
        joined = T0 + 1 + index * (span // 4) // n
        person = lk.Participant(f"PA_{index:05d}", f"user-{index}", joined * 1000)
        add(joined, lk.participant_joined(info, person))
        add(joined + 1, lk.track_published(info, person, f"TR_mic_{index}", joined + 1, video=False))
        if index % 2 == 0:
            on = joined + 5 + rng.randint(0, span // 8)
            add(on, lk.track_published(info, person, f"TR_cam_{index}", on, video=True))
            off = on + rng.randint(60, span // 4)
            add(off, lk.track_unpublished(info, person, f"TR_cam_{index}", off, video=True))
        leave = T0 + span - rng.randint(1, span // 4)
        if index % 10 == 0:
            gone = joined + rng.randint(60, span // 4)
            add(gone, lk.participant_left(info, person, gone))
            person = lk.Participant(f"PA_{index:05d}r", f"user-{index}", (gone + 2) * 1000)
            add(gone + 2, lk.participant_joined(info, person))
            add(gone + 3, lk.track_published(info, person, f"TR_mic_{index}r", gone + 3, video=False))
        add(leave, lk.participant_left(info, person, leave))
    timed.append((T0 + span + 5, len(timed), lk.room_finished(info, T0 + span + 5)))
    timed.sort(key=lambda entry: (entry[0], entry[1]))
    return [lk.to_record(body) for _, _, body in timed]


def _reads_per_event(n: int) -> float:
    records = room(n)
    fake = InMemoryUsageRepository(registered("acct_reads"))
    assert fake.state_codec  # header and participants through the adapter's item codec
    repo, publisher = CountingRepository(fake), RecordingPublisher()
    for record in records:
        fake.store_event(record)  # ingest stored it before the stream delivered it
        rate_batch([record], [], repo, publisher, CONFIG, NOW_MS)  # type: ignore[arg-type]
    assert repo.rebuilds == 1  # only the first batch (no state yet): every later event was folded in order
    reference = {(s.room_sid, s.participant_sid): s for s in rebuild_room(records, AttributionRule())}
    assert {key: stored.session for key, stored in fake.sessions.items()} == reference
    return repo.items_read / len(records)


def test_items_read_per_in_order_event_do_not_grow_with_the_room() -> None:
    small, large = _reads_per_event(20), _reads_per_event(1000)
    assert small <= BOUND
    assert large <= BOUND
    assert large <= small + 1.0
