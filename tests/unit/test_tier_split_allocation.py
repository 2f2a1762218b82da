"""A connection's period part that spans a tier change (docs/decisions.md D282): its minutes are rounded once
(ceil(connected / 60), video = min(total, ceil(video / 60)), audio = the rest), then video minutes are shared out to
the tier segments by the part's video seconds in each, audio minutes by its audio seconds, largest remainder first,
a tie to the later segment. Every expected value below is worked by hand in its comment."""

from __future__ import annotations

from datetime import UTC, datetime
from fractions import Fraction

import pytest

from kilo_billing.accounts import AccountProfile
from kilo_billing.meters import ConnectionMinutes, allocate_minutes, connection_minutes, minutes_by_segment
from kilo_billing.rating import TierChange

F = Fraction


def test_given_one_segment_when_allocated_then_the_minutes_are_todays_unchanged() -> None:
    assert allocate_minutes(ConnectionMinutes(3, 2), [(F(300), F(150))]) == [ConnectionMinutes(3, 2)]


def test_given_two_segments_when_allocated_then_video_by_video_seconds_and_audio_by_audio_seconds() -> None:
    # A: 100 s connected, 60 s video (40 s audio); B: 200 s, 120 s video (80 s audio). Whole: ceil(300/60) = 5,
    # video ceil(180/60) = 3, audio 2. Video 3 x 60/180 = 1, 3 x 120/180 = 2. Audio quotas 2 x 40/120 = 0.667 and
    # 2 x 80/120 = 1.333: floors 0 + 1, the one left to the larger remainder (A's 0.667): 1 and 1.
    shares = allocate_minutes(ConnectionMinutes(video=3, audio=2), [(F(100), F(60)), (F(200), F(120))])
    assert shares == [ConnectionMinutes(video=1, audio=1), ConnectionMinutes(video=2, audio=1)]
    assert sum(s.video for s in shares) == 3  # sums preserved
    assert sum(s.audio for s in shares) == 2


def test_given_equal_remainders_when_allocated_then_the_tie_goes_to_the_later_segment() -> None:
    # 90 s audio in each segment: ceil(180/60) = 3 audio minutes, quotas 1.5 and 1.5: floors 1 + 1, the tie: later
    shares = allocate_minutes(ConnectionMinutes(video=0, audio=3), [(F(90), F(0)), (F(90), F(0))])
    assert shares == [ConnectionMinutes(0, 1), ConnectionMinutes(0, 2)]


def test_given_three_segments_when_allocated_then_each_remainder_is_served_largest_first() -> None:
    # video 10 minutes over video seconds 100, 250, 250 (of 600): quotas 1.667, 4.167, 4.167: floors 1 + 4 + 4 = 9,
    # the one left to the largest remainder, A's 0.667
    pieces = [(F(100), F(100)), (F(250), F(250)), (F(250), F(250))]
    assert allocate_minutes(ConnectionMinutes(video=10, audio=0), pieces) == [
        ConnectionMinutes(2, 0),
        ConnectionMinutes(4, 0),
        ConnectionMinutes(4, 0),
    ]


def test_given_a_kind_with_minutes_but_no_weight_then_it_is_shared_by_connected_seconds() -> None:
    # inconsistent on purpose: 2 audio minutes, every second video; connected 60 and 180 s: quotas 0.5 and 1.5,
    # floors 0 + 1, the tie of remainders (0.5, 0.5) to the later segment: 0 and 2
    shares = allocate_minutes(ConnectionMinutes(video=0, audio=2), [(F(60), F(60)), (F(180), F(180))])
    assert shares == [ConnectionMinutes(0, 0), ConnectionMinutes(0, 2)]


def test_given_more_video_than_connected_seconds_in_a_piece_then_it_is_refused() -> None:
    with pytest.raises(ValueError, match="video"):
        allocate_minutes(ConnectionMinutes(1, 0), [(F(10), F(20)), (F(10), F(0))])


def test_given_a_part_cut_at_a_tier_change_then_it_is_rounded_once_and_shared_out() -> None:
    # part [0, 300 s), the change at 100 s, video [50 s, 210 s): A 100 s with 50 s video, B 200 s with 110 s.
    # Once: ceil(300/60) = 5, video ceil(160/60) = 3, audio 2. Video quotas 3 x 50/160 = 0.9375, 3 x 110/160 = 2.0625
    # -> 0 + 2 and A's 0.9375 gets the one left: 1, 2. Audio seconds 50 and 90: 2 x 50/140 = 0.714, 2 x 90/140 =
    # 1.286 -> 0 + 1, A's 0.714: 1, 1. (Rounding each side would bill 2 + 4 = 6 minutes, not 5.)
    def video_in(a: int, b: int) -> Fraction:
        return F(max(0, min(b, 210_000) - max(a, 50_000)), 1000)

    assert minutes_by_segment(0, 300_000, [100_000], video_in) == [
        (0, ConnectionMinutes(video=1, audio=1)),
        (100_000, ConnectionMinutes(video=2, audio=1)),
    ]


def test_given_no_cut_inside_the_part_then_it_is_exactly_todays_rounding() -> None:
    def video_in(a: int, b: int) -> Fraction:
        return F(max(0, min(b, 110_000) - max(a, 40_000)), 1000)

    # 150 s with 70 s of video: ceil(150/60) = 3, video ceil(70/60) = 2, audio 1 - cuts at or outside the part ignored
    assert minutes_by_segment(0, 150_000, [0, 150_000, 900_000], video_in) == [(0, ConnectionMinutes(2, 1))]
    assert connection_minutes(150, 70) == ConnectionMinutes(2, 1)


def test_given_an_upgrade_inside_a_part_then_the_profile_names_its_start_as_the_cut() -> None:
    upgrade = datetime(2026, 11, 16, 0, 0, 0, 250_000, tzinfo=UTC)  # at .250 s: the cut is that millisecond
    profile = AccountProfile(
        "acct_c", (TierChange(datetime(2026, 1, 1, tzinfo=UTC), "personal"), TierChange(upgrade, "team"))
    )
    nov_15 = int(datetime(2026, 11, 15, tzinfo=UTC).timestamp() * 1000)
    cut = int(datetime(2026, 11, 16, tzinfo=UTC).timestamp() * 1000) + 250
    assert profile.segment_cuts(nov_15, cut + 1) == (cut,)
    assert profile.segment_cuts(nov_15, cut) == ()  # a part ending at the change is wholly before it
    assert profile.segment_cuts(cut, cut + 60_000) == ()  # one starting at it, wholly after
    assert profile.segment_start(cut) == int(upgrade.timestamp())  # the piece from the cut on is Team's
