"""The traffic simulator (kilo_dev.simulator): deterministic, well-formed, in time order, with the features the demo
relies on (a call across the month end, lost lefts only where the product can close them exactly, reconnects, usage
retries) - and its ground truth equals the product's own rebuild of the delivered webhooks.

The truth is the simulator's own arithmetic; the product side here is ``kilo_rate_usage.sessions.rebuild_room`` fed with
every delivered body through the real ingest parser, exactly as rating sees them.

The money side of the truth (kilo_dev.ground_truth: fee, overage, bill so far, LiveKit cost with tier segments) is
checked here against bills worked out by hand, line by line, in the comments.
"""

from __future__ import annotations

import itertools
import json
from collections import defaultdict
from collections.abc import Iterator
from dataclasses import dataclass, field
from datetime import UTC, datetime
from decimal import Decimal
from fractions import Fraction
from pathlib import Path
from typing import Any

import pytest

from kilo_billing.livekit_events import LiveKitEventRecord
from kilo_dev import livekit_events as lk
from kilo_dev.ground_truth import ExpectedBill, expected_bill, price_sheet, segments
from kilo_dev.simulator import METERS, AccountSpec, Truth, connection_minutes, default_accounts, simulate
from kilo_rate_usage.sessions import AttributionRule, rebuild_room
from tests.conftest import LIVEKIT_KEYS

DAY = 86_400
DEC_1 = int(datetime(2026, 12, 1, tzinfo=UTC).timestamp())  # the month boundary
START = DEC_1 - 3600  # 2026-11-30T23:00:00Z
END = START + 2 * DAY  # 2026-12-02T23:00:00Z
SWEEPS = (DAY, 6 * 3600)  # the demo's: the sweeper runs once a simulated day, at 06:00 (the close's grace)
SMALL = {"rooms_per_account_per_day": 4.0, "reconnect_rate": 0.4, "lost_left_rate": 0.3, "lost_join_clear_of": SWEEPS}


@dataclass
class RoomTable:
    rooms: dict[str, list[tuple[str, str]]] = field(default_factory=dict)
    infos: dict[str, dict[str, Any]] = field(default_factory=dict)


@dataclass
class RecordingSink:
    """Records every call in order; snapshots the room table at each ``advance``."""

    table: RoomTable | None = None
    calls: list[tuple[str, Any]] = field(default_factory=list)
    snapshots: list[tuple[int, dict[str, list[tuple[str, str]]]]] = field(default_factory=list)

    def webhook(self, body: bytes) -> None:
        self.calls.append(("webhook", body))

    def usage(self, events: list[dict[str, Any]]) -> None:
        self.calls.append(("usage", json.loads(json.dumps(events))))

    def advance(self, now_s: int) -> None:
        self.calls.append(("advance", now_s))
        if self.table is not None:
            self.snapshots.append((now_s, {name: list(people) for name, people in self.table.rooms.items()}))

    def bodies(self) -> list[bytes]:
        return [body for kind, body in self.calls if kind == "webhook"]

    def reports(self) -> list[dict[str, Any]]:
        return [event for kind, events in self.calls if kind == "usage" for event in events]

    def advances(self) -> list[int]:
        return [now for kind, now in self.calls if kind == "advance"]


@dataclass
class Run:
    sink: RecordingSink
    truth: Truth
    records: list[LiveKitEventRecord]
    table: RoomTable


def run(seed: int, accounts: list[AccountSpec], start: int, end: int, **knobs: Any) -> Run:
    table = RoomTable()
    sink = RecordingSink(table)
    truth = simulate(seed, accounts, start, end, sink, table, **knobs)
    return Run(sink, truth, [lk.to_record(body) for body in sink.bodies()], table)


@pytest.fixture(scope="module")
def small() -> Run:
    """3 accounts, 2 days across the November/December boundary, every feature frequent."""
    return run(5, default_accounts(3), START, END, **SMALL)


@pytest.fixture(scope="module")
def month() -> Run:
    """12 accounts over a month at the default intensity (what the demo runs)."""
    end = int(datetime(2026, 12, 30, 14, 7, tzinfo=UTC).timestamp())
    return run(7, default_accounts(12), DEC_1 - 2 * 3600, end)


def product_minutes(records: list[LiveKitEventRecord]) -> dict[tuple[str, str], dict[str, int]]:
    """The product's rebuild: every room's delivered events through rebuild_room, parts summed per account and period."""
    rooms: dict[str, list[LiveKitEventRecord]] = defaultdict(list)
    for record in records:
        rooms[record.room_sid].append(record)
    totals: dict[tuple[str, str], dict[str, int]] = defaultdict(lambda: {"video": 0, "audio": 0})
    for events in rooms.values():
        for session in rebuild_room(events, AttributionRule()):
            assert session.end_ms is not None, f"{session.participant_sid} is still open"
            for part in session.parts:
                totals[(session.account, part.period)]["video"] += part.video
                totals[(session.account, part.period)]["audio"] += part.audio
    return dict(totals)


def truth_minutes(truth: Truth) -> dict[tuple[str, str], dict[str, int]]:
    return {
        key: {"video": row["video"], "audio": row["audio"]}
        for key, row in truth.minutes.items()
        if row["video"] or row["audio"]
    }


def by_room(records: list[LiveKitEventRecord]) -> Iterator[tuple[str, list[LiveKitEventRecord]]]:
    rooms: dict[str, list[LiveKitEventRecord]] = defaultdict(list)
    for record in records:
        rooms[record.room_sid].append(record)
    yield from rooms.items()


# --- the truth equals the product --------------------------------------------------------------------------------------


def test_given_a_small_simulation_across_a_month_boundary_then_truth_equals_the_products_rebuild(small: Run) -> None:
    assert {period for _, period in small.truth.minutes} == {"2026-11", "2026-12"}
    assert product_minutes(small.records) == truth_minutes(small.truth)


def test_given_a_month_at_default_intensity_then_truth_equals_the_products_rebuild(month: Run) -> None:
    assert product_minutes(month.records) == truth_minutes(month.truth)


def test_given_the_small_simulation_then_it_holds_every_feature_the_comparison_is_meant_to_cover(small: Run) -> None:
    types = [r.event_type for r in small.records]
    assert {"room_started", "participant_joined", "participant_left", "track_published", "track_unpublished",
            "room_finished"} <= set(types)  # fmt: skip
    sources = {(r.track_type, r.track_source) for r in small.records if r.event_type == "track_published"}
    assert {("VIDEO", "CAMERA"), ("VIDEO", "SCREEN_SHARE"), ("", "MICROPHONE")} <= sources
    # a camera turned off and on again: one participant publishes two camera tracks
    cameras = defaultdict(set)
    for r in small.records:
        if r.event_type == "track_published" and r.track_source == "CAMERA":
            cameras[r.participant_sid].add(r.track_sid)
    assert any(len(tracks) > 1 for tracks in cameras.values())
    assert any(not c.left_delivered for c in small.truth.connections)
    assert any(c.replaces for c in small.truth.connections)
    assert sum(r.event_type == "room_started" for r in small.records) == len(small.truth.room_finished_s)


# --- determinism -------------------------------------------------------------------------------------------------------


def test_given_the_same_seed_then_the_sink_sees_identical_calls_and_the_truth_is_identical(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    runs = []
    for _ in range(2):
        monkeypatch.setattr(lk, "_ids", itertools.count(1))  # event ids come from the builders' process-wide counter
        runs.append(run(11, default_accounts(3), START, END, **SMALL))
    first, second = runs
    assert first.sink.calls == second.sink.calls
    assert first.truth == second.truth
    assert first.truth.as_json() == second.truth.as_json()
    monkeypatch.setattr(lk, "_ids", itertools.count(1))
    other = run(12, default_accounts(3), START, END, **SMALL)
    assert other.sink.calls != first.sink.calls


def test_given_a_simulation_then_sids_and_event_ids_are_unique(month: Run) -> None:
    event_ids = [r.event_id for r in month.records]
    assert len(set(event_ids)) == len(event_ids)
    rooms = {r.room_sid for r in month.records}
    participants = {r.participant_sid for r in month.records if r.participant_sid}
    tracks = {r.track_sid for r in month.records if r.track_sid}
    assert all(s.startswith("RM_") for s in rooms)
    assert all(s.startswith("PA_") for s in participants)
    assert all(s.startswith("TR_") for s in tracks)
    assert len(rooms | participants | tracks) == len(rooms) + len(participants) + len(tracks)
    joined = [r.participant_sid for r in month.records if r.event_type == "participant_joined"]
    assert len(set(joined)) == len(joined) == len(month.truth.connections)
    # room names are reused by later calls, each time with a new sid
    names = defaultdict(set)
    for r in month.records:
        names[r.room_name].add(r.room_sid)
    assert any(len(sids) > 1 for sids in names.values())


# --- well-formed, in order, inside the window --------------------------------------------------------------------------


def test_given_the_delivered_webhooks_then_they_parse_and_lie_in_the_window_in_time_order(small: Run) -> None:
    assert len(small.records) == len(small.sink.bodies()) == small.truth.webhooks
    created = [r.created_at for r in small.records]
    assert created == sorted(created)
    assert created[0] >= START
    assert created[-1] <= END
    for r in small.records:
        assert r.room_sid
        assert r.room_name
        if r.event_type in ("room_started", "room_finished", "participant_joined", "participant_left"):
            assert json.loads(r.room_metadata)["account_id"].startswith("acct-")
        if r.joined_at_ms:
            assert START * 1000 <= r.joined_at_ms <= END * 1000
    assert any(r.joined_at_ms % 1000 for r in small.records)  # millisecond jitter


def test_given_the_clock_then_advance_never_goes_back_and_moves_at_least_every_five_minutes(small: Run) -> None:
    advances = small.sink.advances()
    assert advances == sorted(advances)
    assert advances[0] == START
    assert advances[-1] == END
    assert max(b - a for a, b in itertools.pairwise(advances)) <= 300
    # every webhook is delivered at the clock's time: after advance(t) for its createdAt, before the clock moves on
    clock = None
    for kind, value in small.sink.calls:
        if kind == "advance":
            clock = value
        elif kind == "webhook":
            assert lk.to_record(value).created_at == clock


def test_given_the_room_table_then_it_holds_who_is_connected_at_every_advance(small: Run) -> None:
    finished = small.truth.room_finished_s
    started = {r.room_sid: r.created_at for r in small.records if r.event_type == "room_started"}
    names = {c.room_sid: c.room_name for c in small.truth.connections}
    for now, table in small.sink.snapshots:
        expected: dict[str, list[tuple[str, str]]] = {
            names[sid]: [] for sid in finished if started[sid] < now <= finished[sid]
        }
        for c in small.truth.connections:
            if c.joined_ms // 1000 < now <= c.left_s:
                expected[c.room_name].append((c.participant_sid, c.identity))
        assert {k: sorted(v) for k, v in table.items()} == {k: sorted(v) for k, v in expected.items()}, now
    assert small.table.rooms == {}


# --- the month boundary, lost lefts, reconnects --------------------------------------------------------------------------


def test_given_a_window_across_a_month_end_then_exactly_one_connection_crosses_it(small: Run, month: Run) -> None:
    for sim in (small, month):
        crossing = [c for c in sim.truth.connections if c.joined_ms < DEC_1 * 1000 < c.left_s * 1000]
        assert len(crossing) == 1
        # the delivered events say the same (an end is the left, else the room's room_finished)
        finished = {r.room_sid: r.created_at for r in sim.records if r.event_type == "room_finished"}
        ends = {r.participant_sid: r.created_at for r in sim.records if r.event_type == "participant_left"}
        joins = [r for r in sim.records if r.event_type == "participant_joined"]
        across = [
            r.participant_sid
            for r in joins
            if r.joined_at_ms < DEC_1 * 1000 < ends.get(r.participant_sid, finished[r.room_sid]) * 1000
        ]
        assert across == [crossing[0].participant_sid]


def test_given_the_truth_arithmetic_then_a_crossing_connection_is_split_and_each_part_rounded() -> None:
    # 30.5 s in November (all video) and 30 s in December (10 s video): 1 video minute in each month
    video = [((DEC_1 - 60) * 1000, (DEC_1 + 10) * 1000)]
    assert connection_minutes(DEC_1 * 1000 - 30_500, DEC_1 + 30, video) == [("2026-11", 1, 0), ("2026-12", 1, 0)]
    # 61 s in one month, 0 video: 2 audio minutes; 59.999 s of video in 119 s: 1 video + 1 audio
    assert connection_minutes(DEC_1 * 1000 + 1000, DEC_1 + 62, []) == [("2026-12", 0, 2)]
    assert connection_minutes(DEC_1 * 1000 + 1, DEC_1 + 119, [(DEC_1 * 1000, (DEC_1 + 60) * 1000)]) == [
        ("2026-12", 1, 1)
    ]


def test_given_lost_lefts_then_only_last_leavers_with_room_finished_at_that_second(small: Run, month: Run) -> None:
    for sim in (small, month):
        lefts = {r.participant_sid for r in sim.records if r.event_type == "participant_left"}
        joined = {r.participant_sid for r in sim.records if r.event_type == "participant_joined"}
        lost = {c.participant_sid: c for c in sim.truth.connections if not c.left_delivered and c.join_delivered}
        assert joined - lefts == set(lost)
        assert lost
        finished = {r.room_sid: r.created_at for r in sim.records if r.event_type == "room_finished"}
        for sid, connection in lost.items():
            others = [c for c in sim.truth.connections if c.room_sid == connection.room_sid and c is not connection]
            assert all(c.left_s < connection.left_s for c in others)
            assert finished[connection.room_sid] == connection.left_s
            # its video tracks were unpublished explicitly before it left
            published = {r.track_sid for r in sim.records if r.participant_sid == sid and r.event_type ==
                         "track_published" and r.track_type == "VIDEO"}  # fmt: skip
            unpublished = {r.track_sid: r.created_at for r in sim.records if r.event_type == "track_unpublished"}
            assert all(unpublished[track] < connection.left_s for track in published)


def test_given_a_lost_join_then_only_his_track_events_arrive_and_the_product_stores_him_unknown_and_not_billed(
    small: Run, month: Run
) -> None:
    assert not any(not c.join_delivered for c in month.truth.connections)  # only when asked for
    lost = [c for c in small.truth.connections if not c.join_delivered and not c.left_delivered]
    assert len(lost) == 1
    him = lost[0]
    mine = [r for r in small.records if r.participant_sid == him.participant_sid]
    assert {r.event_type for r in mine} <= {"track_published", "track_unpublished"}
    assert any(r.event_type == "track_published" for r in mine)
    published = {r.track_sid for r in mine if r.event_type == "track_published"}
    assert published == {r.track_sid for r in mine if r.event_type == "track_unpublished"}  # each ended explicitly
    others = [c for c in small.truth.connections if c.room_sid == him.room_sid and c is not him]
    assert len(others) >= 2
    assert max(c.left_s for c in others) > him.left_s
    # connected clear of every sweep (06:00 each day; 300 s before his join to 600 s after his leave)
    first, last = him.joined_ms // 1000 - 300, him.left_s + 600
    assert not any(first <= day + 6 * 3600 <= last for day in range(START - START % DAY, END + DAY, DAY))
    # the product (D375): a session of kind UNKNOWN, not billed; the truth has none of his minutes (the rebuild's
    # minutes equal the truth's: test_given_a_small_simulation_...)
    room = [r for r in small.records if r.room_sid == him.room_sid]
    session = next(s for s in rebuild_room(room, AttributionRule()) if s.participant_sid == him.participant_sid)
    assert (session.kind, session.billing.value, session.parts) == ("UNKNOWN", "not_billed", ())
    assert small.truth.as_json()["lost_participant_joined"] == 2  # him, and the one below whose leave arrives


def test_given_a_lost_join_whose_leave_arrives_then_the_product_bills_him_by_the_leave_and_the_truth_counts_him(
    small: Run, month: Run
) -> None:
    assert not any(not c.join_delivered for c in month.truth.connections)  # only when asked for
    lost = [c for c in small.truth.connections if not c.join_delivered and c.left_delivered]
    assert len(lost) == 1
    him = lost[0]
    other = next(c for c in small.truth.connections if not c.join_delivered and not c.left_delivered)
    assert him.room_sid != other.room_sid  # each in a room of his own
    mine = [r for r in small.records if r.participant_sid == him.participant_sid]
    assert "participant_joined" not in {r.event_type for r in mine}
    assert [r.event_type for r in mine].count("participant_left") == 1
    # connected clear of every sweep (06:00 each day; 300 s before his join to 600 s after his leave): a sweep never
    # sees his room gone while rating may still hold him join-less (D393's give-up is not what this case shows)
    first, last = him.joined_ms // 1000 - 300, him.left_s + 600
    assert not any(first <= day + 6 * 3600 <= last for day in range(START - START % DAY, END + DAY, DAY))
    # the product (D375: a participant_left carries joinedAt and the kind, never inferred): billed as if nothing were
    # lost, by his real kind - the same minutes the truth model counts for him, worked out by connection_minutes
    room = [r for r in small.records if r.room_sid == him.room_sid]
    session = next(s for s in rebuild_room(room, AttributionRule()) if s.participant_sid == him.participant_sid)
    assert (session.kind, session.billing.value, session.inferred_start) == ("STANDARD", "room_rule", False)
    assert (session.start_ms, session.end_ms) == (him.joined_ms, him.left_s * 1000)
    billed = sum(part.video + part.audio for part in session.parts)
    # his pieces in the truth: from his join, and (across the month end) from December's first instant to his leave
    truth = sum(piece.quantity for piece in small.truth.usage if piece.account_id == him.account_id
                and piece.end_ms is not None and (piece.at_ms == him.joined_ms
                                                  or (piece.at_ms == DEC_1 * 1000 > him.joined_ms
                                                      and piece.end_ms == him.left_s * 1000)))  # fmt: skip
    assert billed > 0
    assert billed == truth


def test_given_reconnects_then_the_old_sids_left_can_arrive_after_the_new_sids_joined(small: Run) -> None:
    position = {(r.event_type, r.participant_sid): i for i, r in enumerate(small.records)}
    reconnects = [c for c in small.truth.connections if c.replaces]
    assert reconnects
    late = [
        c
        for c in reconnects
        if position[("participant_left", c.replaces)] > position[("participant_joined", c.participant_sid)]
    ]
    assert late
    identities = {c.participant_sid: c.identity for c in small.truth.connections}
    assert all(identities[c.replaces] == c.identity for c in reconnects)


class AskingSink(RecordingSink):
    """At each of the first advances with a room running: the product's own RoomService adapter asks the fake
    (over HTTP, protobuf) about every running room, as the sweeper does."""

    def __init__(self, server: Any) -> None:
        super().__init__()
        self.server = server
        self.answers: list[tuple[int, dict[str, Any]]] = []

    def advance(self, now_s: int) -> None:
        super().advance(now_s)
        if self.server.rooms and len(self.answers) < 40 and now_s % 600 == 0:
            from kilo_rate_usage.adapters import LiveKitRoomDirectory  # noqa: PLC0415

            keys = [next(iter(LIVEKIT_KEYS.items()))]
            listed = LiveKitRoomDirectory(self.server.url, lambda: keys).participants(sorted(self.server.rooms)).listed
            self.answers.append((now_s, listed))


def test_given_the_fake_roomservice_kept_by_the_simulator_then_it_lists_who_is_connected_with_kind_and_join() -> None:
    """What the sweeper writes a lost join from (D375 amended (sw), D438): ListParticipants answers every
    participant connected now with his real join time and kind - a join-less one too."""
    from kilo_dev.fake_livekit import FakeLiveKit  # noqa: PLC0415
    from kilo_rate_usage.model import ListedParticipant  # noqa: PLC0415

    server = FakeLiveKit(LIVEKIT_KEYS)
    server.start()
    try:
        sink = AskingSink(server)
        truth = simulate(5, default_accounts(3), START, END, sink, server, **SMALL)
    finally:
        server.stop()
    assert len(sink.answers) == 40
    names = {c.room_sid: c.room_name for c in truth.connections}
    for now, listed in sink.answers:
        expected: dict[str, dict[str, ListedParticipant]] = defaultdict(dict)
        for c in truth.connections:  # connected: from his join's second to his leave's (the room table's rule)
            if c.joined_ms // 1000 < now <= c.left_s:
                kind = "AGENT" if c.identity == "kilo-agent" else "STANDARD"  # the simulator's one agent identity
                expected[c.room_name][c.participant_sid] = ListedParticipant(c.participant_sid, c.identity, kind,
                                                                             c.joined_ms)  # fmt: skip
        assert {room: people for room, people in listed.items() if people} == dict(expected), now
        assert set(listed) <= set(names.values())
    assert any(p.kind == "AGENT" for _, listed in sink.answers for people in listed.values() for p in people.values())
    assert server.infos == {}  # everyone left by the end


# --- usage reports -----------------------------------------------------------------------------------------------------


def test_given_usage_reports_then_some_are_sent_twice_and_the_truth_counts_them_once(small: Run, month: Run) -> None:
    for sim in (small, month):
        reports = sim.sink.reports()
        unique: dict[str, dict[str, Any]] = {}
        for event in reports:
            assert set(event) == {"idempotency_key", "account_id", "meter", "quantity", "timestamp"}
            assert unique.setdefault(event["idempotency_key"], event) == event  # a retry is the identical report
        assert len(reports) > len(unique)
        assert sim.truth.duplicated_usage_keys
        assert len(reports) - len(unique) == len(sim.truth.duplicated_usage_keys)
        totals: dict[tuple[str, str], dict[str, int]] = defaultdict(lambda: {"messages": 0, "data_transfer_bytes": 0})
        for event in unique.values():
            stamp = datetime.strptime(event["timestamp"], "%Y-%m-%dT%H:%M:%SZ").replace(tzinfo=UTC)
            assert sim.sink.advances()[0] <= stamp.timestamp() <= sim.sink.advances()[-1]
            meter = "messages" if event["meter"] == "messages" else "data_transfer_bytes"
            totals[(event["account_id"], stamp.strftime("%Y-%m"))][meter] += event["quantity"]
        expected = {
            key: {"messages": row["messages"], "data_transfer_bytes": row["data_transfer_bytes"]}
            for key, row in sim.truth.minutes.items()
            if row["messages"] or row["data_transfer_bytes"]
        }
        assert dict(totals) == expected
        assert {e["meter"] for e in reports} == {"messages", "data_transfer"}
        batches = [events for kind, events in sim.sink.calls if kind == "usage"]
        assert max(len(batch) for batch in batches) <= 1000


def test_given_a_report_then_it_is_sent_no_earlier_than_the_call_it_describes(small: Run) -> None:
    clock = 0
    for kind, value in small.sink.calls:
        if kind == "advance":
            clock = value
        elif kind == "usage":
            for event in value:
                stamp = datetime.strptime(event["timestamp"], "%Y-%m-%dT%H:%M:%SZ").replace(tzinfo=UTC)
                assert stamp.timestamp() <= clock
                assert stamp.strftime("%Y-%m") == datetime.fromtimestamp(clock, tz=UTC).strftime("%Y-%m") or (
                    event["idempotency_key"] in small.truth.duplicated_usage_keys
                )


# --- size, accounts, output --------------------------------------------------------------------------------------------


def test_given_the_default_intensity_then_a_month_of_twelve_accounts_is_a_few_thousand_webhooks(month: Run) -> None:
    assert 3000 <= month.truth.webhooks <= 6000
    assert {account for account, _ in month.truth.minutes} == {a.account_id for a in default_accounts(12)}


def test_given_default_accounts_then_tiers_are_mixed_and_ids_deterministic() -> None:
    accounts = default_accounts(12)
    assert accounts == default_accounts(12)
    assert {a.tier for a in accounts} == {"personal", "team", "enterprise"}
    assert "acct-team-03" in {a.account_id for a in accounts}
    assert len({a.account_id for a in accounts}) == 12
    upgrades = {a.account_id: (a.tier, a.upgrade_to) for a in accounts if a.upgrade_to}
    assert upgrades == {"acct-personal-01": ("personal", "team"), "acct-team-02": ("team", "enterprise")}
    assert [a.upgrade_to for a in default_accounts(3)] == ["team", None, None]


def test_given_truth_then_as_json_is_plain_json_with_gb_in_hundredths(small: Run) -> None:
    data = json.loads(json.dumps(small.truth.as_json()))
    row = data["accounts"]["acct-team-01"]["2026-12"]
    steps = -(-row["data_transfer_bytes"] // 10**7)
    assert row["data_transfer_gb"] == f"{steps // 100}.{steps % 100:02d}"
    assert data["webhooks"] == small.truth.webhooks


def test_given_progress_then_it_is_reported_every_few_hundred_events() -> None:
    messages: list[str] = []
    truth = simulate(3, default_accounts(3), START, END, RecordingSink(), progress=messages.append, **SMALL)
    assert len(messages) >= truth.webhooks // 250
    assert messages[-1].startswith("done:")


def test_given_an_empty_window_then_it_is_refused() -> None:
    with pytest.raises(ValueError, match="after"):
        simulate(1, default_accounts(1), END, START, RecordingSink())


# --- the truth, piece by piece ------------------------------------------------------------------------------------------


def test_given_the_truth_then_its_pieces_sum_to_its_totals_and_the_crossing_part_starts_at_the_boundary(
    small: Run,
) -> None:
    sums: dict[tuple[str, str], dict[str, int]] = defaultdict(lambda: dict.fromkeys(METERS, 0))
    for piece in small.truth.usage:
        sums[(piece.account_id, piece.period)][piece.meter] += piece.quantity
        assert piece.period == datetime.fromtimestamp(piece.at_ms // 1000, tz=UTC).strftime("%Y-%m")
    assert dict(sums) == small.truth.minutes
    [crossing] = [c for c in small.truth.connections if c.joined_ms < DEC_1 * 1000 < c.left_s * 1000]
    starts = {p.at_ms for p in small.truth.usage if p.account_id == crossing.account_id and p.meter == "video"}
    assert {crossing.joined_ms, DEC_1 * 1000} <= starts


# --- the money truth: bills worked out by hand ---------------------------------------------------------------------------

NOV_1 = int(datetime(2026, 11, 1, tzinfo=UTC).timestamp())  # November 2026: 30 days = 2,592,000 s
NOV_21 = int(datetime(2026, 11, 21, tzinfo=UTC).timestamp())  # 20 days in: 2/3 of the month gone
OCT_1 = int(datetime(2026, 10, 1, tzinfo=UTC).timestamp())
SHEET = price_sheet(datetime(2026, 11, 1, tzinfo=UTC))


def at(day: int) -> int:
    """Milliseconds at 12:00 UTC on November ``day``."""
    return int(datetime(2026, 11, day, 12, tzinfo=UTC).timestamp()) * 1000


def truth_of(*pieces: tuple[int, str, int], account: str = "acct") -> Truth:
    truth = Truth()
    for at_ms, meter, quantity in pieces:
        truth.add(account, datetime.fromtimestamp(at_ms // 1000, tz=UTC).strftime("%Y-%m"), meter, quantity, at_ms)
    return truth


def test_given_an_upgrade_from_personal_to_team_then_the_bill_is_the_hand_worked_one() -> None:
    truth = truth_of(
        (at(3), "video", 4_000), (at(4), "audio", 7_000), (at(5), "messages", 70_000),
        (at(10), "data_transfer_bytes", 12_345_678_901),  # 1,234.57 steps of 10^7 bytes -> 1,235 -> 12.35 GB
        (NOV_21 * 1000, "video", 100),  # at the instant of the upgrade: the team segment
        (at(25), "messages", 500_000),
    )  # fmt: skip
    bill = expected_bill(truth, "acct", "2026-11", [(OCT_1, "personal"), (NOV_21, "team")], SHEET)
    # personal, 2/3 of the month: fee 0; allowances rounded up: video 3,333.33 -> 3,334, audio 6,666.67 -> 6,667,
    #   messages 66,666.67 -> 66,667, data 6.6667 GB -> 6.67 GB
    #   video 666 x 0.00072 = 0.47952 -> 0.48; audio 333 x 0.00036 = 0.11988 -> 0.12;
    #   messages 3,333 x 0.00012 = 0.39996 -> 0.40; data 5.68 GB x 0.00012 = 0.0006816 -> 0.00
    # team, 1/3: fee 29 / 3 = 9.666... -> 9.67; messages allowance 333,333.33 -> 333,334;
    #   500,000 - 333,334 = 166,666 x 0.00012 = 19.99992 -> 20.00; video 100 of 16,667: 0.00
    # LiveKit: 4,100 x 0.0006 + 7,000 x 0.0003 + 570,000 x 0.0001 + 12.35 x 0.0001 = 2.46 + 2.10 + 57.00 + 0.001235
    assert bill == ExpectedBill(
        tiers=("personal", "team"),
        used={
            "video": Decimal(4_100),
            "audio": Decimal(7_000),
            "messages": Decimal(570_000),
            "data_transfer": Decimal("12.35"),
        },
        fee=Decimal("9.67"),
        overage=Decimal("21.00"),
        total=Decimal("30.67"),
        livekit_cost=Decimal("61.56"),
    )


def test_given_an_upgrade_from_team_to_enterprise_then_fees_are_prorated_and_enterprise_has_no_overage() -> None:
    truth = truth_of((at(2), "messages", 1_000_000), (at(25), "messages", 9_000_000))
    bill = expected_bill(truth, "acct", "2026-11", [(OCT_1, "team"), (NOV_21, "enterprise")], SHEET)
    # team 2/3: 29 x 2/3 = 19.333 -> 19.33; messages 1,000,000 vs 666,667: 333,333 x 0.00012 = 39.99996 -> 40.00
    # enterprise 1/3: 99 / 3 = 33.00; unlimited
    assert (bill.tiers, bill.fee, bill.overage, bill.total) == (
        ("team", "enterprise"), Decimal("52.33"), Decimal("40.00"), Decimal("92.33"),
    )  # fmt: skip


def test_given_a_line_at_half_a_cent_then_it_rounds_up() -> None:
    truth = truth_of((at(4), "audio", 10_125))
    bill = expected_bill(truth, "acct", "2026-11", [(OCT_1, "personal")], SHEET)
    assert bill.overage == Decimal("0.05")  # 125 x 0.00036 = 0.045 exactly: half-up (banker's would give 0.04)


def test_given_data_in_two_segments_then_each_segment_rounds_its_own_bytes_up() -> None:
    truth = truth_of((at(5), "data_transfer_bytes", 3_000_000), (at(25), "data_transfer_bytes", 3_000_000))
    split = expected_bill(truth, "acct", "2026-11", [(OCT_1, "personal"), (NOV_21, "team")], SHEET)
    whole = expected_bill(truth, "acct", "2026-11", [(OCT_1, "personal")], SHEET)
    assert (split.used["data_transfer"], whole.used["data_transfer"]) == (Decimal("0.02"), Decimal("0.01"))


def test_given_usage_of_other_accounts_and_periods_then_it_is_not_billed() -> None:
    truth = truth_of((at(5), "messages", 200_000), account="other")
    truth.add("acct", "2026-10", "messages", 200_000, OCT_1 * 1000)
    bill = expected_bill(truth, "acct", "2026-11", [(OCT_1, "personal")], SHEET)
    assert (bill.used["messages"], bill.total) == (Decimal(0), Decimal("0.00"))


def test_given_tier_histories_then_segments_cut_the_period_where_the_tier_changes() -> None:
    dec_1 = DEC_1
    assert segments("2026-11", [(OCT_1, "team")]) == [(NOV_1, dec_1, "team")]
    assert segments("2026-11", [(OCT_1, "personal"), (NOV_21, "team")]) == [
        (NOV_1, NOV_21, "personal"), (NOV_21, dec_1, "team"),
    ]  # fmt: skip
    assert segments("2026-11", [(OCT_1, "personal"), (NOV_1, "team")]) == [(NOV_1, dec_1, "team")]  # at the start
    assert segments("2026-11", [(OCT_1, "personal"), (dec_1, "team")]) == [(NOV_1, dec_1, "personal")]  # next month
    assert segments("2026-11", [(OCT_1, "team"), (NOV_21, "team")]) == [(NOV_1, dec_1, "team")]  # no change
    with pytest.raises(ValueError, match="no tier"):
        segments("2026-11", [(NOV_21, "team")])


def test_given_price_books_then_the_one_in_effect_for_the_period_is_read(tmp_path: Path) -> None:
    book = {"version": "v1", "effective_from": "2026-01-01", "markup": "1.20",
            "meters": {"video": {"base_price": "0.0006"}}, "tiers": [{"id": "team", "monthly_fee": "29",
            "included": {"video": "50000"}}]}  # fmt: skip
    (tmp_path / "a.json").write_text(json.dumps(book))
    (tmp_path / "b.json").write_text(json.dumps(book | {"version": "v2", "effective_from": "2027-01-01"}))
    assert price_sheet(datetime(2026, 12, 1, tzinfo=UTC), tmp_path).version == "v1"
    assert price_sheet(datetime(2027, 1, 1, tzinfo=UTC), tmp_path).version == "v2"
    with pytest.raises(ValueError, match="no price book"):
        price_sheet(datetime(2025, 12, 1, tzinfo=UTC), tmp_path)
    # the real book: published numbers, read as data
    assert (SHEET.markup, SHEET.base["video"], SHEET.fees["team"]) == (Fraction("1.2"), Fraction("0.0006"), 29)
    assert SHEET.included["enterprise"]["messages"] is None


def test_given_an_upgrade_instant_then_each_upgrading_account_has_a_connection_across_it(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    # the demo passes its upgrade instant: the product then shares that connection out to both segments
    # (D282), and the truth keeps the part's end and video spans for the ground truth to do the same
    upgrade = DEC_1 + DAY + 12 * 3600  # 2026-12-02T12:00Z
    monkeypatch.setattr(lk, "_ids", itertools.count(1))  # event ids come from the builders' process-wide counter
    found = run(5, default_accounts(3), START, END, upgrade_at_s=upgrade, **SMALL)
    upgrading = {spec.account_id for spec in default_accounts(3) if spec.upgrade_to}
    assert upgrading == {"acct-personal-01"}
    across = [c for c in found.truth.connections if c.joined_ms < upgrade * 1000 < c.left_s * 1000]
    assert "acct-personal-01" in {c.account_id for c in across}
    pieces = [p for p in found.truth.usage if p.account_id == "acct-personal-01" and p.end_ms is not None]
    spanning = [p for p in pieces if p.at_ms < upgrade * 1000 < p.end_ms]
    assert {p.meter for p in spanning} == {"video", "audio"}
    assert all(p.quantity > 0 for p in spanning)  # both kinds really used across it, not zero placeholders
    video = next(p for p in spanning if p.meter == "video")
    assert any(a < upgrade * 1000 for a, _ in video.video_ms)  # camera on before the upgrade
    assert any(b > upgrade * 1000 for _, b in video.video_ms)  # video after it too
    assert truth_minutes(found.truth) == product_minutes(found.records)  # still the product's rebuild
    monkeypatch.setattr(lk, "_ids", itertools.count(1))
    same = run(5, default_accounts(3), START, END, upgrade_at_s=upgrade, **SMALL)
    assert same.sink.calls == found.sink.calls  # deterministic
