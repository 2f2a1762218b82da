"""The local stack's schedules on a simulated clock (the demo's fast-forward): on the clock's grid their runs depend
on the simulated times alone, not on the machine's speed; ``wait_idle`` covers the scheduled runs; the demo's waits
fail with a message naming what they waited for (D185)."""

from __future__ import annotations

import threading
import time
import urllib.request
from typing import Any, ClassVar

import pytest

from kilo_dev import demo, processes
from kilo_dev.localstack import Clock, Function, Gateway, LocalSettings, LocalStack, Schedule

DAY = 86_400
OCT_1 = 1_790_812_800  # 2026-10-01T00:00:00Z


class RealTime:
    """The schedule's real-time source, driven by the test."""

    def __init__(self, now: float = 1000.0) -> None:
        self.now = now

    def __call__(self) -> float:
        return self.now


def stamps(clock_times: list[int], grid: tuple[int, int] | None, real_step: float, every: int = 300) -> list[str]:
    """The scheduled times a schedule runs at when the clock is set to each of ``clock_times`` and ticked, with
    ``real_step`` seconds of real time between ticks."""
    ran: list[str] = []
    clock, real = Clock(), RealTime()
    clock.set(clock_times[0])
    schedule = Schedule(Function("sweeper", lambda e, _: ran.append(e["t"])), every,
                        '{"t": "<aws.scheduler.scheduled-time>"}', clock, monotonic=real, grid=grid)  # fmt: skip
    schedule.tick()  # arms
    for when in clock_times[1:]:
        clock.set(when)
        real.now += real_step
        schedule.tick()
    return ran


# a month's fast-forward: the clock set at uneven simulated times (as the simulator's events are)
FORWARD = [OCT_1, OCT_1 + 3_000, OCT_1 + 21_599, OCT_1 + 21_600, OCT_1 + 30_000, OCT_1 + DAY + 100,
           OCT_1 + DAY + 21_700, OCT_1 + 3 * DAY + 50_000, OCT_1 + 3 * DAY + 60_000, OCT_1 + 4 * DAY + 21_600]  # fmt: skip


def test_given_the_grid_then_runs_fall_at_the_first_clock_time_at_or_after_each_grid_instant_whatever_the_real_time() -> (
    None
):
    grid = (DAY, 21_600)  # once a day at 06:00 UTC
    # hand-worked: the 06:00 instants of Oct 1, 2, 4 and 5 are first reached at these clock times (Oct 3's is jumped
    # over along with Oct 4's: one run, no backfill)
    expected = ["2026-10-01T06:00:00Z", "2026-10-02T06:01:40Z", "2026-10-04T13:53:20Z", "2026-10-05T06:00:00Z"]
    assert stamps(FORWARD, grid, real_step=0.0) == expected  # a fast machine: every tick at once
    assert stamps(FORWARD, grid, real_step=30.0) == expected  # a slow one


def test_given_no_grid_then_how_many_runs_depends_on_real_time() -> None:
    """The schedule thread's coalescing (at most one run per 2 s of real time): why the demo uses the grid."""
    fast, slow = stamps(FORWARD, None, real_step=0.0), stamps(FORWARD, None, real_step=30.0)
    assert len(fast) == 1
    assert len(slow) == 8  # every tick past the next due time but one (21,600 s is within 300 s of 21,599 s)


def stack() -> LocalStack:
    """A stack that is never started (no moto server): its schedules and ``wait_idle`` alone."""
    return LocalStack(LocalSettings({"k": "s"}, "app", "secret", "whsec"), log=lambda _: None)


def test_given_a_scheduled_run_under_way_then_wait_idle_returns_only_after_it_has_ended() -> None:
    local, started, release, order = stack(), threading.Event(), threading.Event(), []

    def handler(event: dict[str, Any], _: Any) -> None:
        started.set()
        release.wait(10)
        order.append("run ended")

    local.schedules.append(Schedule(Function("close", handler), 3600, "{}", local.clock))
    local.clock.set(OCT_1)
    local.schedule_on_grid((3600, 0))
    local.clock.on_set = None  # ticked by the thread below, as a clock set from another thread would
    local.clock.set(OCT_1 + 3600)
    runner = threading.Thread(target=local.tick_schedules)
    runner.start()
    assert started.wait(10)
    threading.Timer(0.5, release.set).start()
    local.wait_idle(timeout=30, quiet_polls=2)
    order.append("idle")
    runner.join(10)
    assert order == ["run ended", "idle"]


def test_given_a_failed_scheduled_run_waiting_for_its_retry_then_wait_idle_times_out_naming_it() -> None:
    local = stack()

    def failing(event: dict[str, Any], _: Any) -> None:
        raise RuntimeError("the close failed")

    schedule = Schedule(Function("close", failing), 3600, "{}", local.clock, monotonic=RealTime())  # no real time
    local.schedules.append(schedule)
    local.clock.set(OCT_1)
    local.schedule_on_grid((3600, 0))
    local.clock.set(OCT_1 + 3600)  # on the grid: the run is made here, fails, and waits for its retry
    assert schedule.attempts == 1
    assert len(schedule.pending) == 1
    with pytest.raises(TimeoutError, match="a failed run waits for its retry"):
        local.wait_idle(timeout=0.5, quiet_polls=2)


def test_given_the_grid_turned_off_then_each_schedule_is_rearmed_from_the_clocks_time() -> None:
    local = stack()
    schedule = Schedule(Function("watch", lambda e, _: None), 60, "{}", local.clock)
    local.schedules.append(schedule)
    local.clock.set(OCT_1 + 100)
    local.schedule_on_grid((DAY, 0))
    assert schedule.next_fire == OCT_1 + DAY
    assert local.clock.on_set is not None
    local.schedule_on_grid(None)
    assert schedule.next_fire == OCT_1 + 160  # a minute on: the crypto watchers fire on the demo's next minute
    assert local.clock.on_set is None


class Sink(demo.HttpSink):
    def __init__(self, clock: Clock) -> None:
        super().__init__("http://127.0.0.1:1", "k", "s", "app", "secret", clock)


def test_given_an_action_at_a_time_then_the_clock_reads_that_time_when_it_runs() -> None:
    clock, seen = Clock(), []
    sink = Sink(clock)
    clock.set(OCT_1)
    sink.at(OCT_1 + 500, lambda: seen.append(clock.now()))
    sink.advance(OCT_1 + 900)
    assert seen == [OCT_1 + 500]
    assert clock.now() == OCT_1 + 900


class Stack:
    def check(self) -> None:
        pass


class LiveKit:
    calls: ClassVar = [
        ("UpdateParticipant", {"room": "r", "identity": "a"}),
        ("RemoveParticipant", {"room": "r", "identity": "a"}),
    ]


def test_given_the_enforcement_not_seen_in_time_then_the_wait_fails_naming_it() -> None:
    started = time.monotonic()
    with pytest.raises(demo.WaitTimeoutError, match="RoomService saw 1 of the 2 RemoveParticipant calls"):
        demo.wait_for_enforcement(LiveKit(), Stack(), 2, timeout=0.3)
    assert time.monotonic() - started < 5


def test_given_no_invoice_in_time_then_the_waits_fail_naming_the_account_and_month(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setattr(demo, "closed_invoices", lambda stack, accounts, period: dict.fromkeys(accounts))

    class Clocked(Stack):
        clock = Clock()

    with pytest.raises(demo.WaitTimeoutError, match="no 2026-10 invoice for acct-team-01 after 0 s"):
        demo.wait_for_invoice(Clocked(), "acct-team-01", "2026-10", timeout=0.3)
    with pytest.raises(demo.WaitTimeoutError, match="no 2026-10 invoice for acct-a, acct-b after 0 s"):
        demo.wait_for_close(Clocked(), ["acct-a", "acct-b"], "2026-10", timeout=0.3)


def test_given_a_watchers_failed_run_never_retried_in_time_then_running_the_watchers_fails_naming_it() -> None:
    from kilo_dev.crypto_demo import WATCHERS, run_watchers  # noqa: PLC0415

    local = stack()
    local.autopoll = False
    failing = Schedule(Function(WATCHERS[0], lambda e, _: 1 / 0), 60, "{}", local.clock, monotonic=RealTime())
    local.schedules += [failing, Schedule(Function(WATCHERS[1], lambda e, _: None), 60, "{}", local.clock)]
    local.clock.set(OCT_1)
    with pytest.raises(TimeoutError, match=f"failed runs of {WATCHERS[0]} still waited for their retries"):
        run_watchers(local, timeout=0.5)  # its retry is never due: the schedule's real time stands still
    assert failing.attempts == 1


class Outbox:
    """The Stripe stand-in's side ``wait_idle`` reads: webhooks emitted and not yet delivered."""

    def __init__(self, pending: int) -> None:
        self._pending = pending

    def pending(self) -> int:
        return self._pending


def test_given_stripe_webhooks_not_yet_delivered_then_wait_idle_waits_for_them_naming_them() -> None:
    """The stand-in delivers its events from its own thread: a quiet poll proves nothing while one is on its way (its
    handler's writes are still to come) - D444."""
    local = stack()
    local.stripe = Outbox(pending=2)  # type: ignore[assignment]
    with pytest.raises(TimeoutError, match="the Stripe stand-in still has 2 webhooks to deliver"):
        local.wait_idle(timeout=1.0, quiet_polls=2)
    outbox = Outbox(pending=1)
    local.stripe = outbox  # type: ignore[assignment]
    threading.Timer(1.5, lambda: setattr(outbox, "_pending", 0)).start()
    started = time.monotonic()
    local.wait_idle(timeout=30, quiet_polls=2)
    assert time.monotonic() - started >= 1.5


def test_given_a_gateway_request_under_way_then_wait_idle_waits_for_its_answer() -> None:
    local, entered, release = stack(), threading.Event(), threading.Event()

    def handler(event: dict[str, Any], _: Any) -> dict[str, Any]:
        entered.set()
        release.wait(10)
        return {"statusCode": 200, "body": "{}"}

    local.gateway = Gateway({("POST", "/webhooks/livekit"): Function("ingest", handler)})
    threading.Thread(target=processes.serving(local.gateway), daemon=True).start()
    try:
        poster = threading.Thread(
            target=lambda: urllib.request.urlopen(
                urllib.request.Request(f"{local.gateway.url}/webhooks/livekit", data=b"{}", method="POST"), timeout=10
            ).read(),
            daemon=True,
        )
        poster.start()
        assert entered.wait(10)
        with pytest.raises(TimeoutError, match="the gateway is still answering 1 request"):
            local.wait_idle(timeout=1.0, quiet_polls=2)
        release.set()
        poster.join(10)
        local.wait_idle(timeout=10, quiet_polls=2)
    finally:
        release.set()
        local.gateway.shutdown()
        local.gateway.server_close()


def test_given_no_schedule_due_then_setting_the_clock_does_not_wait_for_the_event_source_poll() -> None:
    """The demo sets the clock at every simulated step; a step at which no run is due does not queue behind a poll
    round of the event sources (D445)."""
    local, ran = stack(), []
    local.schedules.append(Schedule(Function("sweep", lambda e, _: ran.append(e)), 3600, "{}", local.clock))
    local.clock.set(OCT_1)
    local.schedule_on_grid((3600, 0))  # armed: the next run is due at OCT_1 + 3600
    setter = threading.Thread(target=local.clock.set, args=(OCT_1 + 1800,))
    with local._busy:  # an event-source poll under way
        setter.start()
        setter.join(2)
        returned_while_polling = not setter.is_alive()
    setter.join(10)
    assert returned_while_polling
    assert ran == []


def test_given_a_schedule_due_then_its_run_waits_for_the_event_source_poll_to_end() -> None:
    local, ran = stack(), []
    local.schedules.append(Schedule(Function("sweep", lambda e, _: ran.append(e)), 3600, "{}", local.clock))
    local.clock.set(OCT_1)
    local.schedule_on_grid((3600, 0))
    setter = threading.Thread(target=local.clock.set, args=(OCT_1 + 3600,))
    with local._busy:
        setter.start()
        setter.join(0.5)
        waited = setter.is_alive()
        ran_during_poll = list(ran)
    setter.join(10)
    assert waited
    assert ran_during_poll == []
    assert ran == [{}]
