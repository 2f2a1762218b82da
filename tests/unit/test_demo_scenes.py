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
