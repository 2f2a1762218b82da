"""Per-connection rounding: billable minutes = ceil(connected seconds / 60); video minutes = min(total,
ceil(video seconds / 60)); audio = the rest. A connection crossing a month boundary is split, each part rounded."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from decimal import Decimal
from fractions import Fraction

import pytest

from kilo_billing.meters import ConnectionMinutes, Meter, connection_minutes, split_connection
from kilo_billing.periods import Period
from kilo_billing.rating import UsageRecord


def _utc(*args: int) -> datetime:
    return datetime(*args, tzinfo=UTC)


@pytest.mark.parametrize(
    ("seconds", "minutes"),
    [
        pytest.param(1, 1, id="1s_is_1_min"),  # ceil(1/60) = 1
        pytest.param(59, 1, id="59s_is_1_min"),  # ceil(59/60) = 1
        pytest.param(60, 1, id="60s_is_1_min"),  # ceil(60/60) = 1
        pytest.param(61, 2, id="61s_is_2_min"),  # ceil(61/60) = 2
        pytest.param(3_600, 60, id="1h_is_60_min"),  # ceil(3600/60) = 60
    ],
)
def test_given_audio_only_connection_of_n_seconds_when_measured_then_minutes_are_rounded_up_per_connection(
    seconds, minutes
):
    start = _utc(2026, 3, 10, 12)
    (part,) = split_connection(start, start + timedelta(seconds=seconds))
    assert part.connected_seconds == Fraction(seconds)
    assert part.minutes == ConnectionMinutes(video=0, audio=minutes)


def test_given_zero_second_connection_when_measured_then_nothing_is_billed():
    start = _utc(2026, 3, 10, 12)
    assert split_connection(start, start) == []  # an empty connection has no part
    assert connection_minutes(0, 0) == ConnectionMinutes(video=0, audio=0)  # ceil(0/60) = 0


def test_given_ten_reconnects_of_five_seconds_when_rated_then_ten_minutes_not_one(rate_month, line_for):
    start = _utc(2026, 3, 10, 12)
    parts = [
        part
        for n in range(10)
        for part in split_connection(start + timedelta(minutes=n), start + timedelta(minutes=n, seconds=5))
    ]
    minutes = sum(part.minutes.total for part in parts)
    assert minutes == 10  # 10 x ceil(5/60) = 10 x 1; one 50 s connection would be 1
    rated = rate_month("personal", {Meter.AUDIO: minutes})
    assert line_for(rated, Meter.AUDIO).used == Decimal("10")


def test_given_150_seconds_connected_with_70_seconds_of_video_then_3_minutes_2_video_1_audio():
    start = _utc(2026, 3, 10, 12)
    video = [(start + timedelta(seconds=40), start + timedelta(seconds=110))]  # 70 s of camera
    (part,) = split_connection(start, start + timedelta(seconds=150), video)
    assert part.video_seconds == Fraction(70)
    # total ceil(150/60) = 3; video min(3, ceil(70/60) = 2) = 2; audio 3 - 2 = 1
    assert part.minutes == ConnectionMinutes(video=2, audio=1)
    assert part.minutes.total == 3


def test_given_overlapping_camera_and_screen_share_when_measured_then_video_seconds_counted_once():
    start = _utc(2026, 3, 10, 12)
    camera = (start, start + timedelta(minutes=2))  # 12:00-12:02
    screen = (start + timedelta(minutes=1), start + timedelta(minutes=3))  # 12:01-12:03
    (part,) = split_connection(start, start + timedelta(minutes=5), [camera, screen])
    assert part.video_seconds == Fraction(180)  # union 12:00-12:03, not 120 + 120 = 240
    assert part.minutes == ConnectionMinutes(video=3, audio=2)  # ceil(300/60) = 5; video 3; audio 2


def test_given_video_published_before_join_and_after_leave_when_measured_then_only_connected_part_is_video():
    start = _utc(2026, 3, 10, 12)
    room_video = [(start - timedelta(hours=1), start + timedelta(hours=2))]
    (part,) = split_connection(start, start + timedelta(seconds=90), room_video)
    assert part.video_seconds == Fraction(90)  # clipped to the connection
    assert part.minutes == ConnectionMinutes(video=2, audio=0)  # ceil(90/60) = 2, all video


def test_given_short_video_burst_in_long_call_when_measured_then_video_rounds_up_to_a_whole_minute():
    start = _utc(2026, 3, 10, 12)
    video = [(start + timedelta(seconds=10), start + timedelta(seconds=11))]  # 1 s of screen share
    (part,) = split_connection(start, start + timedelta(minutes=10), video)
    assert part.minutes == ConnectionMinutes(video=1, audio=9)  # ceil(1/60) = 1 video, 10 - 1 audio


def test_given_connection_crossing_january_end_when_split_then_each_month_gets_its_own_rounded_minute():
    # 23:59:50 -> 00:00:10 = 20 s; unsplit it would be 1 minute, split it is 10 s + 10 s = 1 + 1 minutes
    parts = split_connection(_utc(2026, 1, 31, 23, 59, 50), _utc(2026, 2, 1, 0, 0, 10))
    assert [part.period for part in parts] == [Period(2026, 1), Period(2026, 2)]
    assert [part.connected_seconds for part in parts] == [Fraction(10), Fraction(10)]
    assert [part.minutes for part in parts] == [ConnectionMinutes(0, 1), ConnectionMinutes(0, 1)]
    assert parts[0].end == parts[1].start == _utc(2026, 2, 1)


def test_given_video_call_crossing_march_end_when_rated_then_minutes_land_in_each_period(rate_month, line_for):
    start, end = _utc(2026, 3, 31, 23), _utc(2026, 4, 1, 1, 30, 30)
    march_part, april_part = split_connection(start, end, [(start, end)])
    assert march_part.minutes == ConnectionMinutes(video=60, audio=0)  # 3600 s -> 60 min
    assert april_part.minutes == ConnectionMinutes(video=91, audio=0)  # 5430 s = 90.5 min -> 91
    # each part is usage of its own period
    march = rate_month("personal", {Meter.VIDEO: march_part.minutes.video}, Period(2026, 3))
    april = rate_month("personal", {Meter.VIDEO: april_part.minutes.video}, Period(2026, 4))
    assert line_for(march, Meter.VIDEO).used == Decimal("60")
    assert line_for(april, Meter.VIDEO).used == Decimal("91")
    assert UsageRecord(Meter.VIDEO, 91, april_part.start).at == _utc(2026, 4, 1)


def test_given_call_crossing_new_year_with_video_only_before_midnight_then_december_video_january_audio():
    start, end = _utc(2026, 12, 31, 23, 59, 1), _utc(2027, 1, 1, 0, 0, 59)
    december, january = split_connection(start, end, [(start, _utc(2027, 1, 1))])
    assert (december.period, january.period) == (Period(2026, 12), Period(2027, 1))
    assert december.minutes == ConnectionMinutes(video=1, audio=0)  # 59 s, all video -> 1
    assert january.minutes == ConnectionMinutes(video=0, audio=1)  # 59 s, no video -> 1 audio
