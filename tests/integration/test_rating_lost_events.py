"""Sessions whose LiveKit events were partly lost (queued webhooks are dropped after 30 s or past 200 per room,
shared/reference/livekit.md), hand-worked end to end through the real ingest + rating handlers on moto (D-lj-1,
D-lj-2)."""

from __future__ import annotations

import random

import pytest

from kilo_dev import livekit_events as lk
from tests.conftest import LambdaContext, Stack, accounts_registered
from tests.integration.test_ingest_livekit import emitted_metrics
from tests.integration.test_rating_stream import Lambda, aggregate, deliver_webhook

ACCOUNT = "acct_team_1"
registered_accounts = accounts_registered(ACCOUNT, "acct_other")
T0 = 1_794_787_200  # 2026-11-16T00:00:00Z

ROOM = lk.Room("RM_lost001", "lost", account_id=ACCOUNT, created_at=T0)
ALICE = lk.Participant("PA_alice_l", "alice", T0 * 1000)
BOB = lk.Participant("PA_bob_l", "bob", (T0 + 5) * 1000)  # joined T0+5 s: his participant_joined is lost (or late)


def _deliver_and_rate(stack: Stack, ctx: LambdaContext, bodies: list[bytes], order: list[int] | None = None) -> None:
    for body in bodies:
        deliver_webhook(body, ctx)
    runner = Lambda(stack)
    records = runner.poll()
    for i in order if order is not None else range(len(records)):
        runner.run([records[i]], ctx)


def _lost_join_and_left() -> list[bytes]:
    return [
        lk.room_started(ROOM, T0),
        lk.participant_joined(ROOM, ALICE),
        # lk.participant_joined(ROOM, BOB) -- lost
        lk.track_published(ROOM, BOB, "TR_cam_b", T0 + 130, video=True),
        lk.participant_left(ROOM, ALICE, T0 + 300),
        # lk.participant_left(ROOM, BOB, ...) -- lost
        lk.room_finished(ROOM, T0 + 600),
    ]


def test_a_participant_whose_join_and_left_are_lost_is_billed_from_his_first_event_to_room_finished(
    stack: Stack, lambda_context: LambdaContext, capsys: pytest.CaptureFixture[str]
) -> None:
    # bob's camera published T0+130 (never unpublished: open until room_finished T0+600) -> video 130..600
    # alice 0..300 (left): 300 s -> ceil(300/60) = 5 min; video 130..300 = 170 s -> ceil(170/60) = 3 video, 2 audio
    # bob, inferred from his first event (T0+130) to room_finished (T0+600): 470 s -> ceil(7.83) = 8 min,
    #   all of it video (his own camera) -> 8 video
    # total: video 3 + 8 = 11, audio 2 (before: bob billed nothing -> {"video": 3, "audio": 2})
    _deliver_and_rate(stack, lambda_context, _lost_join_and_left())
    assert aggregate(stack) == {"video": 11, "audio": 2}
    sessions = {i["sk"]["S"] for i in stack.table_items("UsageTable") if i["sk"]["S"].startswith("SESSION#")}
    assert sessions == {"SESSION#PA_alice_l", "SESSION#PA_bob_l"}
    assert emitted_metrics(capsys).get("SessionsStartInferred") == 1  # bob's, and only his


def test_while_the_room_runs_a_participant_with_no_start_stays_pending(
    stack: Stack, lambda_context: LambdaContext
) -> None:
    # before room_finished bob's join may still come: no session of his yet (alice's, closed by her leave, is stored)
    _deliver_and_rate(stack, lambda_context, _lost_join_and_left()[:4])
    sessions = {i["sk"]["S"] for i in stack.table_items("UsageTable") if i["sk"]["S"].startswith("SESSION#")}
    assert sessions == {"SESSION#PA_alice_l"}


def test_the_inferred_session_is_the_same_whatever_the_order_the_events_are_rated_in(
    stack: Stack, lambda_context: LambdaContext
) -> None:
    # the same room rated room_finished first, bob's track last: same hand-worked figures as above
    _deliver_and_rate(stack, lambda_context, _lost_join_and_left(), order=[4, 3, 1, 0, 2])
    assert aggregate(stack) == {"video": 11, "audio": 2}


def test_a_late_real_join_replaces_the_inferred_start(
    stack: Stack, lambda_context: LambdaContext, capsys: pytest.CaptureFixture[str]
) -> None:
    # first as above: {"video": 11, "audio": 2}; then bob's participant_joined arrives late (joinedAtMs T0+5 s):
    # bob 5..600 = 595 s -> ceil(9.92) = 10 min; video 130..600 = 470 s -> ceil(7.83) = 8 video, 2 audio
    # alice unchanged: 3 video, 2 audio -> total video 11, audio 4 (bob counted once: not 8 + 10)
    _deliver_and_rate(stack, lambda_context, _lost_join_and_left())
    assert aggregate(stack) == {"video": 11, "audio": 2}
    assert emitted_metrics(capsys).get("SessionsStartInferred") == 1
    _deliver_and_rate(stack, lambda_context, [lk.participant_joined(ROOM, BOB, at=T0 + 5)])
    assert aggregate(stack) == {"video": 11, "audio": 4}
    assert "SessionsStartInferred" not in emitted_metrics(capsys)  # his real start now: nothing inferred again


def test_a_sub_second_connection_whose_left_is_dated_before_its_join_is_billed_one_minute(
    stack: Stack, lambda_context: LambdaContext
) -> None:
    # joinedAtMs T0+3.5 s (node clock), participant_left createdAt T0+1 s (1 s resolution, queue clock behind):
    # a real connection; LiveKit Cloud rounds each connection up to a whole minute -> 1 audio minute (before: 0)
    room = lk.Room("RM_skew001", "skew", account_id=ACCOUNT, created_at=T0)
    s = lk.Participant("PA_skew", "s", T0 * 1000 + 3500)
    _deliver_and_rate(
        stack, lambda_context, [lk.participant_joined(room, s, at=T0 + 3), lk.participant_left(room, s, T0 + 1)]
    )
    assert aggregate(stack) == {"audio": 1}


@pytest.mark.parametrize("seed", range(12))
def test_any_order_batching_and_redelivery_gives_the_same_minutes(
    stack: Stack, lambda_context: LambdaContext, seed: int
) -> None:
    # the lost-join room plus bob's late join, delivered twice in part, rated shuffled in random batches with
    # redeliveries: always the late-join figures above, video 11, audio 4 (alice 3 + 2, bob 8 + 2)
    rng = random.Random(seed)
    bodies = [*_lost_join_and_left(), lk.participant_joined(ROOM, BOB, at=T0 + 5)]
    order = bodies + [rng.choice(bodies) for _ in range(3)]
    rng.shuffle(order)
    for body in order:
        deliver_webhook(body, lambda_context)
    runner = Lambda(stack)
    records = runner.poll()
    rng.shuffle(records)
    i = 0
    while i < len(records):
        n = rng.randint(1, 4)
        runner.run(records[i : i + n], lambda_context)
        if rng.random() < 0.3:
            runner.run(records[i : i + n], lambda_context)  # redelivery
        i += n
    nonzero = {meter: quantity for meter, quantity in aggregate(stack).items() if quantity}  # a minute taken back: 0
    assert nonzero == {"video": 11, "audio": 4}
