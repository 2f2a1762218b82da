"""The demo's two scenes of D378: the forecast account's reports and the days the ground truth expects of them
(worked out by hand below), and the count of an EMF metric read back from the stack's log."""

from __future__ import annotations

from collections import Counter
from collections.abc import Callable
from datetime import UTC, date, datetime
from pathlib import Path
from typing import Any

from kilo_dev.demo import FORECAST_ACCOUNT, emf_count, forecast_scene
from kilo_dev.simulator import Truth


def at(*parts: int) -> int:
    return int(datetime(*parts, tzinfo=UTC).timestamp())  # type: ignore[misc]


class Sink:
    def __init__(self) -> None:
        self.actions: list[tuple[int, Callable[[], None]]] = []

    def at(self, when_s: int, action: Callable[[], None]) -> None:
        self.actions.append((when_s, action))


class Stack:
    def wait_idle(self, timeout: float = 0) -> None:
        pass


def test_given_november_2026_then_18_reports_until_tuesday_06_00_and_the_recheck_says_monday_16() -> None:
    # November 2026 starts on a Sunday: the base (0.4 + 0.6 of Monday) is Mon 2 Nov 14:24; the schedules' next run on
    # their 06:00 grid is Tue 3 Nov 06:00. Reports at 00:30, 03:30, ... 21:30 on 1 and 2 Nov, 00:30 and 03:30 on 3 Nov:
    # 18 x 7,500 = 135,000 over a weight of 0.4 + 1 + 0.25 = 1.65, 81,818.18 a weekday. $36 = $29 + $7.00: 58,292
    # messages over 1,000,000 ($6.99504 -> $7.00). Tue 3's last 0.75: 196,364; Fri 6: 441,818; Sun 8: 507,273; Fri 13:
    # 916,364; Sun 15: 981,818; Mon 16: 1,063,636 - Monday 16 November. The first report alone: 7,500 a weekday over
    # the base, never 1,058,292 this month - no day.
    truth, sink, said = Truth(), Sink(), []
    scene = forecast_scene(Stack(), sink, truth, "2026-11", (86_400, 6 * 3600), said.append)  # type: ignore[arg-type]
    assert (scene.due_s, scene.run_s) == (at(2026, 11, 2, 14, 24), at(2026, 11, 3, 6))
    assert [when for when, _ in scene.reports] == list(range(at(2026, 11, 1, 0, 30), at(2026, 11, 3, 6), 3 * 3600))
    assert len(scene.reports) == 18
    assert truth.minutes[(FORECAST_ACCOUNT, "2026-11")]["messages"] == 135_000
    assert scene.days() == (None, date(2026, 11, 16))
    assert scene.expected() == Counter({
        ("2026-11", "budget_forecast", "Monday 16 November", "email"): 1,
        ("2026-11", "budget_forecast", "Monday 16 November", "sms"): 1,
    })  # fmt: skip
    # the first report (travelling there and back), one action per later report, the run's two
    assert [when for when, _ in sink.actions] == [when for when, _ in scene.reports] + [
        scene.run_s - 1,
        scene.run_s + 1,
    ]
    assert said


def test_the_emf_count_sums_the_metric_over_the_logs_json_lines(tmp_path: Path) -> None:
    emf: dict[str, Any] = {"_aws": {"CloudWatchMetrics": [{"Metrics": [{"Name": "SessionsJoinLost"}]}]}}
    log = tmp_path / "local-stack.log"
    log.write_text(
        "\n".join([
            '{"_aws": {}, "SessionsJoinLost": [1.0], "service": "rate_usage"}',
            "a traceback line naming SessionsJoinLost",
            '{"SessionsJoinLost": 2}',
            '{"SessionsJoinLost": not json',
            str(emf).replace("'", '"'),  # the metric's name without a value: 0
            '{"UnattributedMinutes": [5]}',
        ]),
        encoding="utf-8",
    )  # fmt: skip
    assert emf_count(log, "SessionsJoinLost") == 3


# --- the lost joins (D375, D438): what the demo reads back, judged against the truth model ---------------------


def _lost_join_truth() -> Truth:
    from kilo_dev.simulator import Connection  # noqa: PLC0415

    truth = Truth()
    truth.connections = [
        Connection("acct-a", "RM_1", "a-sync", "PA_both", "carol", 1_000, 900, left_delivered=False,
                   join_delivered=False),
        Connection("acct-a", "RM_2", "a-review", "PA_join", "dave", 2_000, 1_262, join_delivered=False),
        Connection("acct-a", "RM_2", "a-review", "PA_ok", "erin", 2_000, 1_262),
    ]  # fmt: skip
    truth.minutes_of = {"PA_join": 21, "PA_ok": 21}  # as _account_truth counts them: 1,260 s -> 21 min
    return truth


def _stored(kind: str, minutes: int) -> Any:
    from types import SimpleNamespace  # noqa: PLC0415

    contributions = {("acct-a", "2026-11", 0, "audio"): minutes} if minutes else {}
    return SimpleNamespace(session=SimpleNamespace(kind=kind), contributions=contributions)


def _report(
    tmp_path: Path,
    monkeypatch: Any,
    stored: dict[str, dict[str, Any]],
    counted: int,
    truth: Truth | None = None,
    events: dict[str, list[Any]] | None = None,
) -> tuple[bool, str]:
    """The report over a stub repository (``stored``: room -> sid -> session; ``events``: room -> its stored events)
    and a log line counting ``SessionsJoinLost``."""
    import io  # noqa: PLC0415
    from types import SimpleNamespace  # noqa: PLC0415

    from rich.console import Console  # noqa: PLC0415

    from kilo_dev import demo  # noqa: PLC0415

    log = tmp_path / "local-stack.log"
    log.write_text(f'{{"SessionsJoinLost": [{counted}]}}\n', encoding="utf-8")
    found = events or {}
    repo = SimpleNamespace(
        stored_sessions=lambda room: stored.get(room, {}), room_events=lambda room: found.get(room, [])
    )
    monkeypatch.setattr(demo, "usage_repository", lambda stack: repo)
    out = io.StringIO()
    ok = demo.lost_join_report(Console(file=out, width=400), SimpleNamespace(log_path=log), truth or _lost_join_truth())
    return ok, out.getvalue()


def test_given_a_lost_join_whose_leave_arrived_billed_as_the_truth_counts_then_the_demo_agrees(
    tmp_path: Path, monkeypatch: Any
) -> None:
    stored = {"RM_1": {"PA_both": _stored("UNKNOWN", 0)}, "RM_2": {"PA_join": _stored("STANDARD", 21)}}
    ok, out = _report(tmp_path, monkeypatch, stored, counted=1)
    assert ok, out
    assert "dave (PA_join) in a-review (RM_2), participant_joined lost, participant_left delivered" in out
    assert "stored as kind STANDARD, billed 21 min - as the ground truth expects" in out
    assert "carol (PA_both) in a-sync (RM_1), participant_joined and participant_left lost" in out
    assert "stored as kind UNKNOWN, not billed - as the ground truth expects" in out


def test_given_a_lost_join_whose_leave_arrived_billed_otherwise_or_counted_then_the_demo_fails(
    tmp_path: Path, monkeypatch: Any
) -> None:
    both = {"PA_both": _stored("UNKNOWN", 0)}
    for wrong, counted in ((_stored("STANDARD", 20), 1), (_stored("UNKNOWN", 0), 1), (_stored("STANDARD", 21), 2)):
        ok, out = _report(tmp_path, monkeypatch, {"RM_1": both, "RM_2": {"PA_join": wrong}}, counted)
        assert not ok, out
    ok, out = _report(tmp_path, monkeypatch, {"RM_1": both}, counted=1)  # nothing stored for him
    assert not ok
    assert "nothing stored - the ground truth expects kind STANDARD, billed 21 min, not counted" in out


# --- a lost join the sweeper stands in for (D375 amended (sw), D438) ----------------------------------------------

SWEEP = at(2026, 12, 2, 6)  # the sweep the day after the close's (06:00)


def _swept_truth() -> Truth:
    from kilo_dev.simulator import Connection  # noqa: PLC0415

    truth = _lost_join_truth()
    truth.connections.append(Connection("acct-a", "RM_3", "a-listed", "PA_swept", "fay", 5_000, 3_607,
                                        join_delivered=False, swept=True))  # fmt: skip
    truth.minutes_of["PA_swept"] = 61  # 3,602 s -> 61 min
    return truth


def _listed(sid: str, joined_ms: int) -> Any:
    from types import SimpleNamespace  # noqa: PLC0415

    return SimpleNamespace(event_type="kilo_participant_listed", participant_sid=sid, joined_at_ms=joined_ms)


def _swept_report(tmp_path: Path, monkeypatch: Any, stored: Any, events: list[Any]) -> tuple[bool, str]:
    sessions = {"RM_1": {"PA_both": _stored("UNKNOWN", 0)}, "RM_2": {"PA_join": _stored("STANDARD", 21)}}
    sessions["RM_3"] = {"PA_swept": stored} if stored is not None else {}
    return _report(tmp_path, monkeypatch, sessions, 1, _swept_truth(), {"RM_3": events})


def test_given_a_lost_join_the_sweeper_stood_in_for_billed_as_the_truth_counts_then_the_demo_agrees(
    tmp_path: Path, monkeypatch: Any
) -> None:
    ok, out = _swept_report(tmp_path, monkeypatch, _stored("STANDARD", 61), [_listed("PA_swept", 5_000)])
    assert ok, out
    assert "fay (PA_swept) in a-listed (RM_3), participant_joined lost, connected when a sweep ran" in out
    assert "billed 61 min, stand-in joins stored at [5000] ms (he joined at 5000) - as the ground truth expects" in out


def test_given_a_lost_join_the_sweeper_did_not_stand_in_for_or_billed_otherwise_then_the_demo_fails(
    tmp_path: Path, monkeypatch: Any
) -> None:
    right = [_listed("PA_swept", 5_000)]
    for stored, events in (
        (_stored("STANDARD", 61), []),  # billed right (by his leave) but no stand-in join written
        (_stored("STANDARD", 61), [_listed("PA_swept", 0)]),  # a stand-in without his join time
        (_stored("STANDARD", 61), [_listed("PA_other", 5_000)]),  # someone else's
        (_stored("STANDARD", 60), right),
        (_stored("UNKNOWN", 0), right),
        (None, right),
    ):
        ok, out = _swept_report(tmp_path, monkeypatch, stored, events)
        assert not ok, out
    assert "the ground truth expects the sweeper's stand-in join at his join, kind STANDARD, billed 61 min" in out


def test_given_the_listed_join_call_then_the_guests_join_is_lost_and_the_truth_counts_both_by_hand() -> None:
    from kilo_dev import demo  # noqa: PLC0415
    from kilo_dev import livekit_events as lk  # noqa: PLC0415

    sink, table, waits = Sink(), SimpleTable(), []
    sent: list[bytes] = []
    sink.webhook = sent.append  # type: ignore[attr-defined]
    truth = Truth()
    added = demo.listed_join_call(truth, sink, table, lambda: waits.append(1), "acct-a", (SWEEP, SWEEP + 7200))  # type: ignore[arg-type]
    # idle 60 s before the sweep (rating has marked the room) and 60 s after it (the sweep and rating are done)
    assert [when for when, _ in sink.actions].count(SWEEP - 60) == 1
    assert [when for when, _ in sink.actions].count(SWEEP + 60) == 1
    listed_at: list[dict[str, Any]] = []
    for when, action in sorted(sink.actions, key=lambda entry: entry[0]):
        action()
        if when == SWEEP - 60:  # what the sweep lists: both, with their kind and real join time
            listed_at.append({sid: dict(table.infos[sid]) for _, people in table.rooms.items() for sid, _ in people})
    start_ms = (SWEEP - 1800) * 1000
    assert len(waits) == 2
    assert listed_at == [{
        f"PA_listed{SWEEP - 1800}a": {"kind": "STANDARD", "joined_at": SWEEP - 1800, "joined_at_ms": start_ms + 500},
        f"PA_listed{SWEEP - 1800}b": {"kind": "STANDARD", "joined_at": SWEEP - 1798, "joined_at_ms": start_ms + 2500},
    }]  # fmt: skip
    records = [lk.to_record(body) for body in sent]
    guest = f"PA_listed{SWEEP - 1800}b"
    assert [(r.event_type, r.participant_sid) for r in records if r.participant_sid == guest] == [
        ("track_published", guest), ("track_unpublished", guest), ("participant_left", guest)]  # fmt: skip
    assert table.rooms == {}
    assert table.infos == {}
    # by hand: the host 05:30:00.5 to 06:30:00 -> 3,599.5 s -> 60 min; the guest 05:30:02.5 to 06:30:05 -> 3,602.5 s
    # -> 61 min (audio only)
    assert truth.minutes == {("acct-a", "2026-12"): {**truth.minutes[("acct-a", "2026-12")], "audio": 121}}
    assert truth.minutes_of == {f"PA_listed{SWEEP - 1800}a": 60, guest: 61}
    assert [(c.participant_sid, c.join_delivered, c.swept) for c in truth.connections] == [
        (f"PA_listed{SWEEP - 1800}a", True, False), (guest, False, True)]  # fmt: skip
    assert truth.webhooks == len(sent) == 7
    assert added == truth.connections
    # a call that would not end before the traffic does (it ends at SWEEP + 1810) is not added
    assert demo.listed_join_call(Truth(), Sink(), SimpleTable(), lambda: None, "acct-a", (SWEEP, SWEEP + 1810)) == []  # type: ignore[arg-type]


class SimpleTable:
    def __init__(self) -> None:
        self.rooms: dict[str, list[tuple[str, str]]] = {}
        self.infos: dict[str, dict[str, Any]] = {}


class RoomService:
    """The RoomService stand-in's table (``simulator.RoomTable``), as the scenes keep it."""

    def __init__(self) -> None:
        self.rooms: dict[str, list[tuple[str, str]]] = {}
        self.infos: dict[str, dict[str, Any]] = {}


class Recorder:
    """A sink that sends nothing; the simulated clock's steps are kept."""

    def __init__(self) -> None:
        self.steps: list[int] = []

    def webhook(self, body: bytes) -> None:
        pass

    def usage(self, events: list[dict[str, Any]]) -> None:
        pass

    def advance(self, now_s: int) -> None:
        self.steps.append(now_s)


def test_given_the_hard_limit_call_then_roomservice_lists_both_people_with_their_join_times_until_they_leave() -> None:
    """ListParticipants answers what LiveKit would (D438): the two people of the hard-limit call joined 250 ms and
    4,750 ms after its start (joined_at in whole seconds: the start and the start + 4 s), both STANDARD."""
    from kilo_dev.simulator import hard_limit_call  # noqa: PLC0415

    start, livekit, listed = at(2026, 12, 4, 23, 35), RoomService(), []
    hard_limit_call(Truth(), Recorder(), livekit, "acct-limit-01", start, 110_000,
                    lambda: listed.append((dict(livekit.rooms), dict(livekit.infos))))  # fmt: skip
    rooms, infos = listed[0]
    assert rooms == {"acct-limit-01-all-day": [(f"PA_limit{start}a", "acct-limit-01-user00"),
                                               (f"PA_limit{start}b", "acct-limit-01-user01")]}  # fmt: skip
    assert infos == {
        f"PA_limit{start}a": {"kind": "STANDARD", "joined_at": start, "joined_at_ms": start * 1000 + 250},
        f"PA_limit{start}b": {"kind": "STANDARD", "joined_at": start + 4, "joined_at_ms": start * 1000 + 4_750},
    }
    assert (livekit.rooms, livekit.infos) == ({}, {})  # both left, the room finished


def test_given_the_late_left_call_then_roomservice_lists_each_person_with_his_join_time_while_he_is_in_it() -> None:
    from kilo_dev.demo import late_left_call  # noqa: PLC0415

    start, livekit, sink = at(2026, 11, 30, 21), RoomService(), Sink()
    sink.webhook = lambda body: None  # type: ignore[attr-defined]
    late_left_call(Truth(), sink, livekit, "acct-personal-01", (start, start + 3600, start + 30 * 3600),  # type: ignore[arg-type]
                   lambda: None)  # fmt: skip
    begin, on_time, late = (action for _, action in sink.actions)
    begin()
    assert livekit.infos == {
        f"PA_late{start}a": {"kind": "STANDARD", "joined_at": start, "joined_at_ms": start * 1000 + 500},
        f"PA_late{start}b": {"kind": "STANDARD", "joined_at": start + 2, "joined_at_ms": start * 1000 + 2_500},
    }
    on_time()
    assert list(livekit.infos) == [f"PA_late{start}b"]
    late()
    assert (livekit.rooms, livekit.infos) == ({}, {})
