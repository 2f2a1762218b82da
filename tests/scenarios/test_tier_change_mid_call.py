"""Story: an account on Personal upgrades to Team in the middle of a long call. The policy rates usage "in segments by
the tier in effect when it happened", and rounds a connection once: the call's minutes are rounded once for the month,
then shared out to the Personal and Team segments by its video and audio seconds in each (D282) - not all
billed against Personal's prorated allowance because the call began there (D3 before).

Hand-worked, 2026-01 price book (video $0.0006 x 1.2 = $0.00072, audio $0.0003 x 1.2 = $0.00036 a minute):
- November 2026 has 30 days; the upgrade is at Nov 16 00:00Z, so each segment is 15/30 = 1/2 of the month: Personal
  includes 5,000 / 2 = 2,500 video and 10,000 / 2 = 5,000 audio minutes, Team 25,000 and 50,000; fees $0 and
  $29 / 2 = $14.50.
- Earlier in the month (under Personal) the account used 2,400 video and 4,800 audio minutes (seeded counters).
- The call: the host joins Nov 15 12:00:00, leaves Nov 16 12:00:30 (86,430 s: ceil(1,440.5) = 1,441 minutes); a camera
  is on Nov 15 20:00 - Nov 16 08:00 (43,200 s: 720 video minutes), so 721 audio minutes.
- Before the change: 43,200 s connected, 14,400 s video, 28,800 s audio; after: 43,230 s, 28,800 s video, 14,430 s
  audio. Video: 720 x 14,400 / 43,200 = 240 and 480 (exact). Audio: 721 x 28,800 / 43,230 = 480.333 and
  721 x 14,430 / 43,230 = 240.667: floors 480 + 240 = 720, the minute left to the larger remainder (Team's 0.667):
  Personal 480, Team 241.
- Personal: video 2,400 + 240 = 2,640, 140 over x $0.00072 = $0.1008 -> $0.10; audio 4,800 + 480 = 5,280, 280 over x
  $0.00036 = $0.1008 -> $0.10. Team: 480 and 241 minutes, inside its allowance: $0.00 each. Usage $0.20, with the
  fee $14.70.
- The old rule (all 1,441 minutes in Personal): video 3,120 (620 over: $0.4464 -> $0.45), audio 5,521 (521 over:
  $0.18756 -> $0.19): usage $0.64, $0.44 more for minutes that happened under Team.
"""

from __future__ import annotations

from datetime import UTC, datetime
from decimal import Decimal
from fractions import Fraction

from kilo_billing.accounts import AccountProfile
from kilo_billing.catalog import default_catalog
from kilo_billing.meters import Meter
from kilo_billing.month_to_date import OpenSessionFigures, open_session_extra
from kilo_billing.periods import Period
from kilo_billing.rating import TierChange
from kilo_dev import livekit_events as lk
from kilo_rate_usage.aggregates import rate_aggregate
from kilo_rate_usage.logic import rate_batch
from kilo_rate_usage.model import AttributionRule, PeriodPart, RatingConfig
from tests.fakes import InMemoryUsageRepository, RecordingPublisher

CONFIG = RatingConfig(AttributionRule(), default_catalog().for_period)
ACCOUNT = "acct_upgrading"
NOV_1 = 1_793_491_200  # 2026-11-01T00:00Z: the Personal segment's start
NOV_16 = 1_794_787_200  # 2026-11-16T00:00Z: the upgrade, the Team segment's start
JOIN = NOV_16 - 43_200  # Nov 15 12:00:00
CAMERA_ON, CAMERA_OFF = NOV_16 - 14_400, NOV_16 + 28_800  # Nov 15 20:00 - Nov 16 08:00
LEAVE = NOV_16 + 43_230  # Nov 16 12:00:30
NOW_MS = (LEAVE + 60) * 1000
PROFILE = AccountProfile(
    ACCOUNT,
    (TierChange(datetime(2026, 1, 1, tzinfo=UTC), "personal"), TierChange(datetime(2026, 11, 16, tzinfo=UTC), "team")),
)


def _bodies() -> list[bytes]:
    room = lk.Room("RM_long", "all-day", account_id=ACCOUNT, created_at=JOIN)
    host = lk.Participant("PA_host", "host", JOIN * 1000)
    return [
        lk.room_started(room, JOIN),
        lk.participant_joined(room, host),
        lk.track_published(room, host, "TR_cam", CAMERA_ON, video=True),
        lk.track_unpublished(room, host, "TR_cam", CAMERA_OFF, video=True),
        lk.participant_left(room, host, LEAVE),
        lk.room_finished(room, LEAVE + 5),
    ]


def _repo() -> InMemoryUsageRepository:
    repo = InMemoryUsageRepository()
    repo.accounts.register(PROFILE)
    repo.counters[(ACCOUNT, "2026-11")] = {(NOV_1, "video"): 2_400, (NOV_1, "audio"): 4_800}  # earlier, on Personal
    return repo


def _rate(repo: InMemoryUsageRepository, *batches: list[bytes]) -> None:
    for bodies in batches:
        records = [lk.to_record(body) for body in bodies]
        for record in records:
            repo.store_event(record)
        rate_batch(records, [], repo, RecordingPublisher(), CONFIG, NOW_MS)


EXPECTED_COUNTERS = {(NOV_1, "video"): 2_640, (NOV_1, "audio"): 5_280, (NOV_16, "video"): 480, (NOV_16, "audio"): 241}


def test_given_an_upgrade_mid_call_when_the_call_is_rated_then_its_minutes_are_shared_by_the_segments() -> None:
    repo = _repo()
    _rate(repo, _bodies())  # the whole room at once: a rebuild from its stored events

    assert repo.counters[(ACCOUNT, "2026-11")] == EXPECTED_COUNTERS
    stored = repo.sessions[("RM_long", "PA_host")]
    assert stored.session.parts == (
        PeriodPart("2026-11", JOIN * 1000, 240, 480),
        PeriodPart("2026-11", NOV_16 * 1000, 480, 241),  # one part per segment, from the segment's start
    )
    assert sum(part.video + part.audio for part in stored.session.parts) == 1_441  # rounded once, not 1,442


def test_given_the_call_delivered_event_by_event_then_the_in_order_path_shares_it_the_same() -> None:
    repo = _repo()
    _rate(repo, *([body] for body in _bodies()))  # folded into the room's state one event at a time
    assert repo.counters[(ACCOUNT, "2026-11")] == EXPECTED_COUNTERS


def test_given_the_shared_out_call_when_the_month_is_rated_then_the_lines_bill_each_segment_by_its_tier() -> None:
    repo = _repo()
    _rate(repo, _bodies())
    aggregate = repo.aggregates([(ACCOUNT, "2026-11")])[(ACCOUNT, "2026-11")]
    rated = rate_aggregate(aggregate, PROFILE, CONFIG.book_for(Period(2026, 11)))

    lines = {(line.tier, line.meter): line for line in rated.usage_lines}
    personal_video, personal_audio = lines[("personal", Meter.VIDEO)], lines[("personal", Meter.AUDIO)]
    team_video, team_audio = lines[("team", Meter.VIDEO)], lines[("team", Meter.AUDIO)]
    assert (personal_video.used, personal_video.included, personal_video.amount) == (2_640, 2_500, Decimal("0.10"))
    assert (personal_audio.used, personal_audio.included, personal_audio.amount) == (5_280, 5_000, Decimal("0.10"))
    assert (team_video.used, team_video.included, team_video.amount) == (480, 25_000, Decimal("0.00"))
    assert (team_audio.used, team_audio.included, team_audio.amount) == (241, 50_000, Decimal("0.00"))
    assert rated.usage_total == Decimal("0.20")  # the old rule: $0.64
    assert rated.fee == Decimal("14.50")
    assert rated.total == Decimal("14.70")


def test_given_a_phone_line_across_the_upgrade_then_its_audio_is_shared_by_its_seconds_in_each_segment() -> None:
    # SIP: audio only, whatever the room's video. Nov 15 23:00:00 - Nov 16 00:30:00 = 5,400 s: 90 audio minutes,
    # 3,600 s before the change and 1,800 s after: 60 and 30 (exact)
    repo = _repo()
    room = lk.Room("RM_phone", "dial-in", account_id=ACCOUNT, created_at=NOV_16 - 3_600)
    phone = lk.Participant("PA_phone", "+15550100", (NOV_16 - 3_600) * 1000, kind="SIP")
    _rate(repo, [
        lk.room_started(room, NOV_16 - 3_600), lk.participant_joined(room, phone),
        lk.participant_left(room, phone, NOV_16 + 1_800), lk.room_finished(room, NOV_16 + 1_805),
    ])  # fmt: skip
    assert repo.counters[(ACCOUNT, "2026-11")] == {
        (NOV_1, "video"): 2_400,
        (NOV_1, "audio"): 4_800 + 60,
        (NOV_16, "audio"): 30,
    }


def test_given_the_call_still_open_when_month_to_date_counts_it_then_it_is_shared_by_the_segments_too() -> None:
    # the same call, open, counted at Nov 16 12:00:30 with its room's exact video: the same 240/480 and 480/241
    host = OpenSessionFigures("RM_long", "PA_host", ACCOUNT, JOIN * 1000, "room_rule", identity="host")

    def video_in(_: OpenSessionFigures, start_ms: int, end_ms: int) -> Fraction:
        return Fraction(max(0, min(end_ms, CAMERA_OFF * 1000) - max(start_ms, CAMERA_ON * 1000)), 1000)

    extra = open_session_extra([host], PROFILE, LEAVE * 1000, "2026-11", video_in)
    assert extra == {(NOV_1, "video"): 240, (NOV_1, "audio"): 480, (NOV_16, "video"): 480, (NOV_16, "audio"): 241}


def test_given_an_open_call_with_its_camera_on_since_the_start_then_the_estimate_is_shared_by_time() -> None:
    # no room state to ask: the camera on at its last stored event counts until now - every second video, 1,441
    # video minutes; quotas 1,441 x 43,200 / 86,430 = 720.25 and 1,441 x 43,230 / 86,430 = 720.75: 720 + 720, the one
    # left to Team's 0.75
    host = OpenSessionFigures(
        "RM_long", "PA_host", ACCOUNT, JOIN * 1000, "room_rule", video_active=True, as_of_ms=JOIN * 1000
    )
    extra = open_session_extra([host], PROFILE, LEAVE * 1000, "2026-11")
    assert extra == {(NOV_1, "video"): 720, (NOV_1, "audio"): 0, (NOV_16, "video"): 721, (NOV_16, "audio"): 0}
