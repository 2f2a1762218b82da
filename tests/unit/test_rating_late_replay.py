"""A very late replay (docs/decisions.md D273): an operator replays a room's events from the events table
after some of them passed their raw-event TTL. A rebuild from what is left would rate the room's sessions again from
part of their events - un-billing the camera minutes whose track events expired, billing them as audio instead. The
room's stored state remembers how many events it was rated from, and a rebuild that finds fewer refuses the room:
its records go to the failure path (the poison queue) with a reason naming it, and nothing rated changes."""

from __future__ import annotations

from datetime import UTC, datetime

from kilo_billing.catalog import default_catalog
from kilo_billing.livekit_events import LiveKitEventRecord
from kilo_dev import livekit_events as lk
from kilo_rate_usage.logic import rate_batch
from kilo_rate_usage.model import AttributionRule, RatingConfig
from tests.fakes import InMemoryUsageRepository, RecordingPublisher, registered

CONFIG = RatingConfig(AttributionRule(), default_catalog().for_period)
T0 = int(datetime(2026, 11, 2, tzinfo=UTC).timestamp())
ROOM = "RM_late01"
ACCOUNT = "acct_late"
DAY_MS = 86_400_000
# alice 10..600 s with her camera 60..300 s, bob 20..900 s watching it; per session, video minutes are the camera's
# 240 s (4 each), audio the rest rounded up: alice 350 s -> 6, bob 640 s -> 11 (hand-worked)
RATED = {"audio": 17, "video": 8}


def timeline() -> list[tuple[LiveKitEventRecord, int]]:
    """The room's eight events, each received one second after it happened, with the moment it is rated."""
    room = lk.Room(ROOM, "late", account_id=ACCOUNT, created_at=T0)
    alice = lk.Participant("PA_alice01", "alice", (T0 + 10) * 1000)
    bob = lk.Participant("PA_bob0001", "bob", (T0 + 20) * 1000)
    bodies = [
        (lk.room_started(room, T0), T0),
        (lk.participant_joined(room, alice), T0 + 10),
        (lk.participant_joined(room, bob), T0 + 20),
        (lk.track_published(room, alice, "TR_cam_a", T0 + 60, video=True), T0 + 60),
        (lk.track_unpublished(room, alice, "TR_cam_a", T0 + 300, video=True), T0 + 300),
        (lk.participant_left(room, alice, T0 + 600), T0 + 600),
        (lk.participant_left(room, bob, T0 + 900), T0 + 900),
        (lk.room_finished(room, T0 + 1000), T0 + 1000),
    ]
    return [(lk.to_record(body, (at + 1) * 1000), (at + 2) * 1000) for body, at in bodies]


def finished_room() -> tuple[InMemoryUsageRepository, list[LiveKitEventRecord]]:
    """The room's events rated one batch each, as they arrived: the room finished."""
    repo, publisher = InMemoryUsageRepository(registered("acct_late")), RecordingPublisher()
    records = []
    for record, now_ms in timeline():
        repo.store_event(record)
        outcome = rate_batch([record], [], repo, publisher, CONFIG, now_ms)
        assert outcome.rejected == ()
        records.append(record)
    assert repo.totals(ACCOUNT, "2026-11") == RATED
    assert not repo.room_state(ROOM).usable  # finished: its version and cut-off alone (D196)
    return repo, records


def sessions(repo: InMemoryUsageRepository) -> dict[str, tuple[int, int | None, object]]:
    return {
        sid: (stored.session.start_ms, stored.session.end_ms, stored.session.video_seconds)
        for sid, stored in repo.stored_sessions(ROOM).items()
    }


REFUSED = (
    f"not rated: room {ROOM}: 4 of the 8 events its stored state was rated from are stored (the others passed their "
    "TTL?): a rebuild from them would rate its sessions again from part of their events"
)


def test_given_a_finished_room_whose_first_events_expired_when_its_last_leave_is_replayed_then_the_room_is_refused_and_nothing_rated_changes() -> (
    None
):
    repo, records = finished_room()
    before = sessions(repo)
    for record in records[:4]:  # the raw events' TTL passed for the start, both joins and the camera's publish
        del repo.events[ROOM][record.event_id]

    replayed = rate_batch([records[6]], [], repo, RecordingPublisher(), CONFIG, (T0 + 400) * 1000 + 400 * DAY_MS)

    assert [(rejected.room_sid, rejected.reason) for rejected in replayed.rejected] == [(ROOM, REFUSED)]
    assert repo.totals(ACCOUNT, "2026-11") == RATED  # before: {"audio": 25}, the camera's 8 video minutes gone
    assert sessions(repo) == before


def test_given_a_finished_room_with_every_event_stored_when_an_event_is_replayed_then_it_is_rated_again_and_changes_nothing() -> (
    None
):
    repo, records = finished_room()
    before = sessions(repo)

    replayed = rate_batch([records[6]], [], repo, RecordingPublisher(), CONFIG, (T0 + 3600) * 1000)

    assert (replayed.rejected, replayed.sessions_changed) == ((), 0)
    assert repo.totals(ACCOUNT, "2026-11") == RATED
    assert sessions(repo) == before
