"""The account API's logic with in-memory ports: recommendations, forecast, meetings, members, privacy. Every figure is
worked by hand from the price book (personal: free, video 5,000 / audio 10,000 min, 10 GB included; team: $29, video
50,000 min; our prices: video $0.00072, audio $0.00036 a minute, data $0.00012 a GB)."""

from __future__ import annotations

import hashlib
import itertools
from collections.abc import Callable
from dataclasses import replace
from datetime import UTC, date, datetime, timedelta
from decimal import Decimal

import pytest

from kilo_account_api import logic, schemas
from kilo_account_api.model import (
    BudgetStatus,
    ConflictError,
    EntitlementMissingError,
    InvalidRequestError,
    Member,
    MemberStatus,
    NotFoundError,
    Recommendation,
    RecommendationKind,
    SessionPart,
    SessionRecord,
    SubscriptionChangedError,
    SubscriptionState,
)
from kilo_account_api.recommendations import RecommendationPolicy, recommend
from kilo_billing.accounts import AccountProfile, StoredAnswer, request_tier_change
from kilo_billing.auth import Role
from kilo_billing.budgets import DEFAULT_WEEKDAY_WEIGHTS, projected_total
from kilo_billing.catalog import default_catalog
from kilo_billing.month_to_date import OpenSessionFigures, month_to_date
from kilo_billing.periods import Period
from kilo_billing.rating import TierChange
from tests.account_api_fakes import NO_USAGE, InMemoryMembers, InMemoryMonthToDate, InMemorySessionHistory
from tests.fakes import InMemoryAccountDirectory
from tests.invoice_fakes import InMemoryLedgerStore

NOW = datetime(2026, 11, 15, 12, tzinfo=UTC)  # a Sunday, half over
NOV_1 = datetime(2026, 11, 1, tzinfo=UTC)
SEGMENT = int(NOV_1.timestamp())
CATALOG = default_catalog()
BOOK = CATALOG.for_period(logic.period_of("2026-11", NOW))
POLICY = RecommendationPolicy(audience_min_participants=10, simulcast_data_saving=Decimal("0.5"))


def ms(*parts: int) -> int:
    return int(datetime(*parts, tzinfo=UTC).timestamp() * 1000)  # type: ignore[misc]


def profile(account: str = "acct", tier: str = "personal", **extra: object) -> AccountProfile:
    return AccountProfile(account, (TierChange(datetime(2026, 1, 1, tzinfo=UTC), tier),), **extra)  # type: ignore[arg-type]


def session(room: str, identity: str, video: int, audio: int = 0, name: str = "", day: int = 2) -> SessionRecord:
    start = ms(2026, 11, day, 9)
    return SessionRecord(
        room_sid=room,
        participant_sid=f"PA_{room}_{identity}",
        identity=identity,
        room_name=name or room,
        start_ms=start,
        end_ms=start + 3_600_000,
        parts=(SessionPart("2026-11", start, video, audio),),
    )


def world(
    account: AccountProfile, sessions: list[SessionRecord], extra: dict[str, int] | None = None
) -> tuple[InMemoryAccountDirectory, InMemoryMonthToDate, InMemorySessionHistory]:
    """Rating's counters are the sessions' minutes (plus ``extra``: messages, bytes), as rating keeps them."""
    directory = InMemoryAccountDirectory(account)
    counters: dict[tuple[int, str], int] = {}
    for found in sessions:
        for part in found.parts:
            counters[(SEGMENT, "video")] = counters.get((SEGMENT, "video"), 0) + part.video_minutes
            counters[(SEGMENT, "audio")] = counters.get((SEGMENT, "audio"), 0) + part.audio_minutes
    for meter, quantity in (extra or {}).items():
        counters[(SEGMENT, meter)] = quantity
    month = InMemoryMonthToDate(directory, {(account.account_id, "2026-11"): counters})
    history = InMemorySessionHistory()
    history.add(account.account_id, *sessions)
    return directory, month, history


def recommendations_for(
    account: AccountProfile, sessions: list[SessionRecord], extra: dict[str, int] | None = None
) -> list[Recommendation]:
    _, month, history = world(account, sessions, extra)
    mtd = month_to_date(month, account.account_id, "2026-11", int(NOW.timestamp() * 1000), BOOK)
    return recommend(mtd, history.sessions(account.account_id, "2026-11"), BOOK, NOW, POLICY)


def test_given_a_town_hall_over_the_video_allowance_then_audio_only_saves_the_video_overage() -> None:
    # 10 people x 600 video minutes = 6,000: 1,000 over the 5,000 included -> 1,000 x $0.00072 = $0.72;
    # as audio: 6,000 of 10,000 included -> $0.00. Saving $0.72.
    town_hall = [session("RM_hall", f"p{i}", 600, name="town hall") for i in range(10)]
    found = recommendations_for(profile(), town_hall)
    assert [(r.kind, r.saving_usd, r.current_usd, r.with_change_usd, r.rooms) for r in found] == [
        (RecommendationKind.AUDIO_ONLY_AUDIENCES, Decimal("0.72"), Decimal("0.72"), Decimal("0.00"), ("town hall",))
    ]


def test_given_nine_people_then_the_room_is_no_audience_and_nothing_is_recommended() -> None:
    nine = [session("RM_9", f"p{i}", 600) for i in range(9)]  # 5,400 video: $0.29 over, but no audience, no lone camera
    assert recommendations_for(profile(), nine) == []


def test_given_a_camera_on_alone_then_the_idle_camera_saving_is_its_overage() -> None:
    # alone for 5,500 video minutes: 500 over -> $0.36; as audio 5,500 of 10,000 -> $0.00
    found = recommendations_for(profile(), [session("RM_solo", "ann", 5500, name="ann's desk")])
    assert [(r.kind, r.saving_usd, r.rooms) for r in found] == [
        (RecommendationKind.IDLE_CAMERA, Decimal("0.36"), ("ann's desk",))
    ]


def test_given_little_usage_on_team_then_personal_is_cheaper_by_the_fee() -> None:
    # 100 video minutes: team $29.00 for a whole month, personal $0.00 -> saves $29.00
    found = recommendations_for(profile(tier="team"), [session("RM_1", "a", 50), session("RM_1", "b", 50)])
    [cheaper] = found
    assert (cheaper.kind, cheaper.tier, cheaper.saving_usd, cheaper.current_usd, cheaper.with_change_usd) == (
        RecommendationKind.CHEAPER_TIER,
        "personal",
        Decimal("29.00"),
        Decimal("29.00"),
        Decimal("0.00"),
    )
    assert "team_collaboration" in cheaper.detail


def test_given_a_terabyte_of_data_then_lower_simulcast_layers_save_half_the_data_overage() -> None:
    # 1,000 GB: 990 over 10 -> $0.1188 -> $0.12; halved 500 GB: 490 over -> $0.0588 -> $0.06. Saving $0.06.
    found = recommendations_for(profile(), [], {"data_transfer": 1_000 * 10**9})
    assert [(r.kind, r.saving_usd, r.current_usd, r.with_change_usd) for r in found] == [
        (RecommendationKind.LOWER_SIMULCAST, Decimal("0.06"), Decimal("0.12"), Decimal("0.06"))
    ]


def test_given_heavy_team_usage_then_enterprise_is_recommended_with_the_overage_saved() -> None:
    # team: 29 + (200,000 - 50,000) x 0.00072 = 29 + 108.00 = 137.00; enterprise: 99.00 unlimited -> saves 38.00.
    # The 20-person room also suggests audio-only: 200,000 video as audio -> 29 + (200,000-100,000) x 0.00036 = 65.00,
    # saving 72.00 - the larger saving comes first.
    big = [session("RM_big", f"p{i}", 10_000) for i in range(20)]
    found = recommendations_for(profile(tier="team"), big)
    assert [(r.kind, r.saving_usd, r.tier) for r in found] == [
        (RecommendationKind.AUDIO_ONLY_AUDIENCES, Decimal("72.00"), None),
        (RecommendationKind.CHEAPER_TIER, Decimal("38.00"), "enterprise"),
    ]


def test_given_the_weekday_weights_then_the_period_end_projection_is_worked_by_hand() -> None:
    # personal (free): 5,500 video minutes (500 over 5,000 -> $0.36) and 10,000 audio minutes (all included, $0.00).
    # November 2026: elapsed to Sunday 15th noon = 10 weekdays + 4 weekend days x 0.4 + half a Sunday x 0.4 = 11.8;
    # the whole month = 21 weekdays + 9 weekend days x 0.4 = 24.6, so 12.8 to go. The minutes grow, not the dollars:
    # video 5,500 x 12.8 / 11.8 = 5,966.1 -> 5,966 more -> 11,466, 6,466 over x $0.00072 = $4.65552 -> $4.66;
    # audio 10,000 x 12.8 / 11.8 = 10,847.5 -> 10,847 more -> 20,847, 10,847 over x $0.00036 = $3.90492 -> $3.90.
    # $8.56 at the end of November (the dollars so far as a run rate: $0.36 x 24.6 / 11.8 = $0.75).
    _, month, _ = world(profile(), [], {"video": 5_500, "audio": 10_000})
    rated = month_to_date(month, "acct", "2026-11", int(NOW.timestamp() * 1000), BOOK).rated
    assert rated.total == Decimal("0.36")
    assert projected_total(rated, BOOK, NOW, DEFAULT_WEEKDAY_WEIGHTS) == Decimal("8.56")


def test_given_a_budget_then_the_forecast_day_and_status_are_worked_by_hand() -> None:
    # team: $29 fee; 91,667 video minutes -> 41,667 over 50,000 x $0.00072 = $30.00024 -> $30.00 of usage; $59.00
    account = profile(tier="team", budget_usd=Decimal("60.00"), hard_limit_usd=Decimal("200.00"))
    directory, month, _ = world(account, [session("RM_1", "a", 91_667)])
    found = logic.forecast(directory, month, default_catalog(), "acct", NOW, DEFAULT_WEEKDAY_WEIGHTS)
    # weight elapsed 11.8, 12.8 to go (above): 91,667 x 12.8 / 11.8 = 99,435.4 -> 99,435 more -> 191,102 minutes,
    # 141,102 over x $0.00072 = $101.59344 -> $101.59 + $29.00 = $130.59 at the end of November
    assert (found.spent, found.projected_total, found.status) == (
        Decimal("59.00"),
        Decimal("130.59"),
        BudgetStatus.UNDER,
    )
    # the budget needs usage of $31.00 as rounded: exact >= $30.995 -> 43,048.6 -> 43,049 over -> 93,049 minutes,
    # 1,382 more; the rest of Sunday (0.2 of weight) adds 91,667 x 0.2 / 11.8 = 1,553.7 -> 1,553 (93,220 minutes,
    # 43,220 over -> $31.1184 -> $31.12 -> $60.12): Sunday the 15th. The hard limit needs usage of $171.00 (237,494
    # minutes over), beyond the 141,102 projected: not in November.
    assert (found.budget_reached_on, found.hard_limit_reached_on) == (date(2026, 11, 15), None)


# Thursday 19 November 2026, 01:20 UTC: a team account at 3,000 video minutes a day since the 1st (review re2, F5)
NOV_19_0120 = datetime(2026, 11, 19, 1, 20, tzinfo=UTC)


def test_given_usage_still_inside_the_allowance_yesterday_then_the_forecast_counts_the_overage_to_come() -> None:
    # team: $29 fee, 50,000 video minutes included, then $0.00072 a minute (0.0006 x 1.20). 3,000 minutes a day:
    # 18 days x 3,000 + 80/1,440 of a day x 3,000 (166.67) -> 54,167 minutes by 19 Nov 01:20. Bill: 4,167 over x
    # $0.00072 = $3.00024 -> $3.00 + $29.00 = $32.00 (80 % of the $40 budget). Usage cost $0 until the allowance ran
    # out on day 16.67, so $3.00 spread over 18.06 days (the old dollar run rate: $4.98 by the 30th, a $33.98 bill)
    # never reaches $40. The minutes do:
    # $40 needs usage of $11.00 as rounded: exact >= $10.995 -> 10.995 / 0.00072 = 15,270.8 -> 15,271 over ->
    # 65,271 minutes, 11,104 more than now.
    account = profile(tier="team", budget_usd=Decimal(40))
    directory, month, _ = world(account, [], {"video": 54_167})
    equal = (Decimal(1),) * 7
    # Equal weights: elapsed 18 + 80/1,440 = 325/18 days; 54,167 x 18 / 325 = 3,000.02 minutes a day.
    # To the end of Sat 21 (17/18 of Thu + Fri + Sat = 53/18 days): 54,167 x 53/325 = 8,833.4 -> 8,833 -> 63,000
    # minutes, 13,000 over -> $9.36 -> $38.36; to the end of Sun 22 (71/18): 54,167 x 71/325 = 11,833.4 -> 11,833
    # -> 66,000, 16,000 over -> $11.52 -> $40.52 >= $40: Sunday 22 November. Month end (30 - 325/18 = 215/18 days
    # to go): 54,167 x 215/325 = 35,833.6 -> 35,833 -> 90,000 minutes, 40,000 over -> $28.80 -> $57.80.
    flat = logic.forecast(directory, month, CATALOG, "acct", NOV_19_0120, equal)
    assert (flat.spent, flat.budget_reached_on, flat.projected_total) == (
        Decimal("32.00"),
        date(2026, 11, 22),
        Decimal("57.80"),
    )
    # Default weights (weekends 0.4; 1 Nov is a Sunday): elapsed Sun 1 0.4 + 2 x (5 weekdays + 0.8) + Mon 16 to
    # Wed 18 3 = 15.0, + 1/18 of Thursday = 271/18; 54,167 x 18 / 271 = 3,597.8 minutes a weekday. To the end of
    # Sun 22 (17/18 + Fri 1 + Sat 0.4 + Sun 0.4 = 247/90): 54,167 x 18 x 247 / (271 x 90) = 9,873.98 -> 9,873
    # -> 64,040, 14,040 over -> $10.1088 -> $10.11 -> $39.11; Mon 23 (337/90): 13,471.8 -> 13,471 -> 67,638,
    # 17,638 over -> $12.69936 -> $12.70 -> $41.70 >= $40: Monday 23 November. Month end (24.6 - 271/18 = 859/90
    # to go): 54,167 x 18 x 859 / (271 x 90) = 34,339.1 -> 34,339 -> 88,506, 38,506 over -> $27.72432 -> $27.72
    # -> $56.72.
    weighted = logic.forecast(directory, month, CATALOG, "acct", NOV_19_0120, DEFAULT_WEEKDAY_WEIGHTS)
    assert (weighted.budget_reached_on, weighted.projected_total, weighted.status) == (
        date(2026, 11, 23),
        Decimal("56.72"),
        BudgetStatus.UNDER,
    )


def test_given_meetings_then_pages_of_two_follow_the_cursor_and_a_cursor_of_another_period_is_refused() -> None:
    account = profile()
    sessions = [session(f"RM_{day}", "a", 10, day=day) for day in (2, 3, 4, 5, 6)]
    directory, _, history = world(account, sessions)
    first = logic.meetings_page(directory, history, "acct", None, None, 2, NOW)
    assert [m.room_sid for m in first.meetings] == ["RM_6", "RM_5"]
    second = logic.meetings_page(directory, history, "acct", None, first.next_cursor, 2, NOW)
    third = logic.meetings_page(directory, history, "acct", None, second.next_cursor, 2, NOW)
    assert [m.room_sid for m in second.meetings + third.meetings] == ["RM_4", "RM_3", "RM_2"]
    assert third.next_cursor is None
    with pytest.raises(InvalidRequestError) as refused:
        logic.meetings_page(directory, history, "acct", "2026-10", first.next_cursor, 2, NOW)
    assert refused.value.field == "query.cursor"  # named with its location, as the route's own checks (D374)
    with pytest.raises(InvalidRequestError) as future:
        logic.meetings_page(directory, history, "acct", "2026-12", None, 2, NOW)
    assert future.value.field == "query.period"


def _numbered(count: int) -> list[SessionRecord]:
    """``count`` one-minute-apart sessions from Nov 2 09:00 (RM_0000 at 09:00, RM_0001 at 09:01, ...)."""
    start = ms(2026, 11, 2, 9)
    return [
        SessionRecord(
            room_sid=f"RM_{i:04d}",
            participant_sid=f"PA_{i:04d}",
            identity=f"user-{i:04d}",
            room_name="",
            start_ms=start + i * 60_000,
            end_ms=start + i * 60_000 + 60_000,
            parts=(),
        )
        for i in range(count)
    ]


def _bytes_each(cost: int) -> Callable[[SessionRecord], int]:
    return lambda _session: cost


def test_given_1001_sessions_then_a_page_of_1000_holds_1000_and_the_cursor_the_last_one() -> None:
    """D372: 1,001 one-minute-apart sessions (Nov 2 from 09:00), ?limit=1000: the first page holds the first
    1,000 (09:00 ... 09:00 + 999 min), the next the 1,001st alone (1,000 + 1 = 1,001) and no cursor after it."""
    directory, _, history = world(profile(), _numbered(1001))
    small = _bytes_each(300)  # 1,000 x 300 = 300,000 bytes: far below the 4,000,000 a page holds
    first = logic.export_sessions(directory, history, "acct", None, 1000, size=small)
    assert (len(first.sessions), first.sessions[0].room_sid, first.sessions[-1].room_sid) == (
        1000,
        "RM_0000",
        "RM_0999",
    )
    last = logic.export_sessions(directory, history, "acct", first.next_cursor, 1000, size=small)
    assert ([s.room_sid for s in last.sessions], last.next_cursor) == (["RM_1000"], None)


def test_given_no_limit_and_1001_sessions_that_fit_then_the_export_answers_all_of_them_and_no_cursor() -> None:
    """Review ex2 #1: without ?cursor= and ?limit= the export is whole when it fits: 1,001 sessions at 331 bytes
    each are 1,001 x 331 = 331,331 bytes <= 4,000,000, so all 1,001 and next_cursor null (before: 1,000 and a
    cursor a client that does not page never follows - a silently incomplete export)."""
    directory, _, history = world(profile(), _numbered(1001))
    members = InMemoryMembers()
    data = logic.export(
        directory, members, history, InMemoryLedgerStore(), "acct", NOW, None, None, size=_bytes_each(331)
    )
    assert (len(data["sessions"]), data["sessions"][-1].room_sid, data["next_cursor"]) == (1001, "RM_1000", None)


def test_given_no_limit_and_sessions_past_the_answers_bytes_then_400_names_how_to_page() -> None:
    """Review ex2 #1: 5 sessions of 1,000,000 bytes are 5,000,000 > 4,000,000: no whole answer - a 400 on
    query.limit naming ?limit= and next_cursor, never a silently short export. 4 of them (4,000,000 <= 4,000,000)
    are answered whole."""
    directory, _, history = world(profile(), _numbered(5))
    members = InMemoryMembers()
    with pytest.raises(InvalidRequestError) as refused:
        logic.export(directory, members, history, InMemoryLedgerStore(), "acct", NOW, size=_bytes_each(1_000_000))
    assert refused.value.field == "query.limit"
    assert "?limit=" in str(refused.value)
    assert "next_cursor" in str(refused.value)
    directory, _, history = world(profile(), _numbered(4))
    data = logic.export(directory, members, history, InMemoryLedgerStore(), "acct", NOW, size=_bytes_each(1_000_000))
    assert (len(data["sessions"]), data["next_cursor"]) == (4, None)


def test_given_sessions_of_a_million_bytes_then_a_page_stops_before_4_mb_and_never_splits_a_millisecond() -> None:
    """Review ex2 #4: sessions of 1,000,000 bytes each begun at t, t+1 ms, three at t+2 ms, t+3 ms; limit 1,000.
    Page 1: t and t+1 = 2,000,000; the t+2 group would make 2,000,000 + 3,000,000 = 5,000,000 > 4,000,000, so the
    page stops before it (2 sessions, cursor at t+2). Page 2: the group 3,000,000 + t+3's 1,000,000 = 4,000,000 <=
    4,000,000: 4 sessions, no cursor. A group alone past the bytes is a page of its own, whole: 5 sessions in one
    millisecond are one page of 5,000,000 bytes (it cannot be split)."""
    t = ms(2026, 11, 2, 9)
    starts = [(t, "RM_a"), (t + 1, "RM_b"), (t + 2, "RM_c"), (t + 2, "RM_d"), (t + 2, "RM_e"), (t + 3, "RM_f")]
    sessions = [SessionRecord(room, "PA_" + room, "u", "", start, start + 60_000) for start, room in starts]
    directory, _, history = world(profile(), sessions)
    million = _bytes_each(1_000_000)
    first = logic.export_sessions(directory, history, "acct", None, 1000, size=million)
    assert [s.room_sid for s in first.sessions] == ["RM_a", "RM_b"]
    assert first.next_cursor == logic.encode_export_cursor(t + 2)
    second = logic.export_sessions(directory, history, "acct", first.next_cursor, 1000, size=million)
    assert ([s.room_sid for s in second.sessions], second.next_cursor) == (["RM_c", "RM_d", "RM_e", "RM_f"], None)
    crowd = [SessionRecord(f"RM_{i}", f"PA_{i}", "u", "", t, t + 60_000) for i in range(5)]
    directory, _, history = world(profile(), crowd)
    alone = logic.export_sessions(directory, history, "acct", None, 1000, size=million)
    assert (len(alone.sessions), alone.next_cursor) == (5, None)


def test_given_a_session_then_its_bytes_are_counted_as_lambda_returns_them_escaped_twice() -> None:
    """Review ex2 #4: a page is bounded by encoded bytes. The session as JSON (json_response: compact, ASCII) is
    {"room_sid":"RM_1","room_name":"","participant_sid":"PA_1","identity":"a",
    "started_at":"1970-01-01T00:00:00+00:00","ended_at":null,"minutes":[]} = 1 + 18 + 15 + 25 + 15 + 41 + 16 + 12 +
    1 = 144 bytes with 24 quotes; inside Lambda's answer (the body is a JSON string) each quote is escaped again
    (backslash, quote: +1): 144 + 24 = 168, and a comma before the next session: 169. A room name of 256 double
    quotes instead of 256 'r' costs 3 bytes more each (backslash-quote in the body, three backslashes and the quote
    in the answer: 4 bytes, r 1): 256 x 3 = 768 more."""
    plain = SessionRecord("RM_1", "PA_1", "a", "", 0, None)
    assert schemas.session_bytes(plain) == 169
    quoted, letters = replace(plain, room_name='"' * 256), replace(plain, room_name="r" * 256)
    assert schemas.session_bytes(quoted) - schemas.session_bytes(letters) == 768


@pytest.mark.parametrize("start_ms", [2**63, 10**38, 10**40, 123456789012345678901234567890123456789])
def test_given_a_forged_export_cursor_with_a_huge_start_then_it_is_refused_as_query_cursor(start_ms: int) -> None:
    """Review ex2 #2: a start of 2**63 (9,223,372,036,854,775,808 ms, ~292 million years) or more is no start this
    API hands out; 10**38 and beyond made boto3's Decimal context raise Rounded/Inexact (a 500). The largest start
    kept is 2**63 - 1 = 9,223,372,036,854,775,807."""
    with pytest.raises(InvalidRequestError) as refused:
        logic.decode_export_cursor(logic.encode_export_cursor(start_ms))
    assert refused.value.field == "query.cursor"
    assert (
        logic.decode_export_cursor(logic.encode_export_cursor(9_223_372_036_854_775_807)) == 9_223_372_036_854_775_807
    )


WEEK = timedelta(days=7)


def test_given_members_then_admins_cannot_invite_or_remove_owners_and_the_last_owner_stays() -> None:
    directory = InMemoryAccountDirectory(profile(tier="team"))
    store = InMemoryMembers()
    store.add(Member("acct", "olga", "olga@a.example", Role.OWNER, NOW))
    with pytest.raises(InvalidRequestError):
        logic.invite_member(directory, CATALOG, store, Role.ADMIN, Member("acct", "otto", "", Role.OWNER, NOW), WEEK)
    invited = logic.invite_member(
        directory, CATALOG, store, Role.ADMIN, Member("acct", "mia", "", Role.MEMBER, NOW), WEEK
    )
    assert (invited.status, invited.expires_at) == (MemberStatus.INVITED, NOW + WEEK)
    with pytest.raises(ConflictError):
        logic.invite_member(directory, CATALOG, store, Role.ADMIN, Member("acct", "mia", "", Role.MEMBER, NOW), WEEK)
    with pytest.raises(ConflictError):
        logic.remove_member(directory, store, Role.ADMIN, "acct", "olga")
    with pytest.raises(ConflictError):
        logic.remove_member(directory, store, Role.OWNER, "acct", "olga")  # the last owner
    with pytest.raises(NotFoundError):
        logic.remove_member(directory, store, Role.OWNER, "acct", "nobody")
    logic.remove_member(directory, store, Role.ADMIN, "acct", "mia")  # the invitation withdrawn
    assert [m.user for m in logic.members(directory, store, "acct", NOW)] == ["olga"]


def test_given_an_invitation_then_only_acceptance_in_time_makes_a_member() -> None:
    directory = InMemoryAccountDirectory(profile(tier="team"))
    store = InMemoryMembers()
    store.add(Member("acct", "olga", "", Role.OWNER, NOW))
    logic.invite_member(directory, CATALOG, store, Role.OWNER, Member("acct", "ivan", "", Role.OWNER, NOW), WEEK)
    with pytest.raises(ConflictError, match="last owner"):  # an invited owner is no owner yet
        logic.remove_member(directory, store, Role.OWNER, "acct", "olga")
    assert [(m.account_id, m.role) for m in logic.invitations(store, "ivan", NOW)] == [("acct", Role.OWNER)]
    assert logic.invitations(store, "ivan", NOW + WEEK) == []  # ended
    with pytest.raises(NotFoundError):
        logic.accept_invitation(directory, CATALOG, store, "ivan", "acct", NOW + WEEK)
    accepted = logic.accept_invitation(directory, CATALOG, store, "ivan", "acct", NOW + WEEK - timedelta(seconds=1))
    assert (accepted.status, accepted.added_at) == (MemberStatus.ACTIVE, NOW + WEEK - timedelta(seconds=1))
    logic.remove_member(directory, store, Role.OWNER, "acct", "olga")  # now another owner remains
    assert [m.user for m in logic.members(directory, store, "acct", NOW + WEEK)] == ["ivan"]


# the price book's words (pricebooks/2026-01-01.json): personal has no entitlements, team and enterprise include
# team_collaboration; written out here, not derived from the book
NO_COLLABORATION = (
    "account 'acct' is on the personal tier, which lacks the team_collaboration entitlement that members need: "
    "upgrade to team or enterprise"
)


def test_given_a_personal_account_when_an_owner_invites_then_it_is_refused_naming_the_tier_and_nothing_is_stored() -> (
    None
):
    directory = InMemoryAccountDirectory(profile(tier="personal"))
    store = InMemoryMembers()
    store.add(Member("acct", "olga", "", Role.OWNER, NOW))
    before = dict(store.stored)
    with pytest.raises(EntitlementMissingError) as refused:
        logic.invite_member(directory, CATALOG, store, Role.OWNER, Member("acct", "mia", "", Role.MEMBER, NOW), WEEK)
    assert str(refused.value) == NO_COLLABORATION
    assert (refused.value.tier, refused.value.entitlement) == ("personal", "team_collaboration")
    assert isinstance(refused.value, ConflictError)  # the handler's 409
    assert store.stored == before
    # bad input is named first, as on every tier
    with pytest.raises(InvalidRequestError):
        logic.invite_member(directory, CATALOG, store, Role.ADMIN, Member("acct", "o", "", Role.OWNER, NOW), WEEK)


def test_given_a_downgrade_to_personal_then_members_stay_and_open_invitations_wait_for_an_upgrade() -> None:
    invited_on = datetime(2026, 11, 28, 12, tzinfo=UTC)
    dec_1 = datetime(2026, 12, 1, tzinfo=UTC)
    directory = InMemoryAccountDirectory(profile(tier="team"))
    store = InMemoryMembers()
    store.add(Member("acct", "olga", "", Role.OWNER, NOW))
    for user in ("ivan", "mia"):
        logic.invite_member(
            directory, CATALOG, store, Role.OWNER, Member("acct", user, "", Role.MEMBER, invited_on), WEEK
        )
    # a downgrade requested on the 29th takes effect at the period start (as the subscription route records it)
    team = directory.profiles["acct"]
    directory.profiles["acct"] = replace(team, changes=(*team.changes, TierChange(dec_1, "personal")))
    # the last second on team: ivan accepts
    assert logic.accept_invitation(directory, CATALOG, store, "ivan", "acct", dec_1 - timedelta(seconds=1)).active
    second = datetime(2026, 12, 2, 9, tzinfo=UTC)
    with pytest.raises(EntitlementMissingError) as refused:
        logic.accept_invitation(directory, CATALOG, store, "mia", "acct", second)
    # said to the invitee: who must do what, and that the invitation waits (invited on the 28th at noon, for 7 days)
    assert str(refused.value) == (
        "account 'acct' is on the personal tier, which lacks the team_collaboration entitlement that members need: "
        "the account's owner must upgrade to team or enterprise before the invitation can be accepted (it stays open "
        "until 2026-12-05T12:00:00Z)"
    )
    assert store.stored[("acct", "mia")].status is MemberStatus.INVITED  # kept, not accepted, not deleted
    assert [(m.user, m.status) for m in logic.members(directory, store, "acct", second)] == [
        ("olga", MemberStatus.ACTIVE),
        ("ivan", MemberStatus.ACTIVE),
        ("mia", MemberStatus.INVITED),
    ]
    with pytest.raises(EntitlementMissingError):
        logic.invite_member(directory, CATALOG, store, Role.OWNER, Member("acct", "zoe", "", Role.MEMBER, second), WEEK)
    # nobody learns the tier without an invitation: no open invitation is a 404 whatever the tier
    with pytest.raises(NotFoundError):
        logic.accept_invitation(directory, CATALOG, store, "zoe", "acct", second)
    # back on team (an upgrade takes effect at once): mia's invitation, still open, can be accepted
    upgraded = datetime(2026, 12, 3, 10, tzinfo=UTC)
    personal = directory.profiles["acct"]
    directory.profiles["acct"] = replace(personal, changes=(*personal.changes, TierChange(upgraded, "team")))
    accepted = logic.accept_invitation(directory, CATALOG, store, "mia", "acct", upgraded)
    assert (accepted.status, accepted.added_at) == (MemberStatus.ACTIVE, upgraded)


def test_given_a_downgrade_at_midnight_when_an_acceptance_could_land_after_it_then_it_is_refused() -> None:
    """The acceptance's write lands after ``now``, at the latest at the invocation's end (``until``): a downgrade
    to personal taking effect by then refuses it, naming when, and nothing is written; an acceptance whose
    invocation ends before the downgrade is let in (D210, amended)."""
    dec_1 = datetime(2026, 12, 1, tzinfo=UTC)
    team = profile(tier="team")
    directory = InMemoryAccountDirectory(replace(team, changes=(*team.changes, TierChange(dec_1, "personal"))))
    store = InMemoryMembers()
    store.add(Member("acct", "olga", "", Role.OWNER, NOW))
    for user in ("ivan", "mia"):
        invited = Member("acct", user, "", Role.MEMBER, datetime(2026, 11, 28, 12, tzinfo=UTC))
        logic.invite_member(directory, CATALOG, store, Role.OWNER, invited, WEEK)
    before = dict(store.stored)
    # 23:59:50 on team, the invocation may run 29 s more: its write could land at 00:00:19, on personal
    at = dec_1 - timedelta(seconds=10)
    with pytest.raises(EntitlementMissingError) as refused:
        logic.accept_invitation(directory, CATALOG, store, "mia", "acct", at, at + timedelta(seconds=29))
    assert str(refused.value) == (
        "account 'acct' moves to the personal tier at 2026-12-01T00:00:00Z, before this acceptance could be "
        "recorded, and that tier lacks the team_collaboration entitlement that members need: the account's owner "
        "must upgrade to team or enterprise before the invitation can be accepted (it stays open until "
        "2026-12-05T12:00:00Z)"
    )
    assert (refused.value.tier, refused.value.moves_at) == ("personal", dec_1)
    assert store.stored == before
    # the invocation ending at the downgrade's instant itself: refused too (the write may land at that instant)
    at = dec_1 - timedelta(seconds=29)
    with pytest.raises(EntitlementMissingError):
        logic.accept_invitation(directory, CATALOG, store, "mia", "acct", at, dec_1)
    # ending a second before it: on team throughout, accepted
    at = dec_1 - timedelta(seconds=30)
    accepted = logic.accept_invitation(directory, CATALOG, store, "ivan", "acct", at, dec_1 - timedelta(seconds=1))
    assert (accepted.status, accepted.added_at) == (MemberStatus.ACTIVE, at)


class StaleMembers(InMemoryMembers):
    """The members store as a request that read the list before a concurrent removal sees it: ``members`` answers
    that earlier list, writes go to the store as it is now."""

    def __init__(self, store: InMemoryMembers, seen: list[Member]) -> None:
        super().__init__(store.stored)
        self.seen = seen

    def members(self, account_id: str) -> list[Member]:
        return list(self.seen)


def test_given_two_owners_removing_each_other_at_once_then_the_second_removal_is_refused() -> None:
    directory = InMemoryAccountDirectory(profile())
    store = InMemoryMembers()
    alice, bob = Member("acct", "alice", "", Role.OWNER, NOW), Member("acct", "bob", "", Role.OWNER, NOW)
    for member in (alice, bob):
        store.add(member)
    before = store.members("acct")  # both requests read two owners
    logic.remove_member(directory, store, Role.OWNER, "acct", "bob")  # alice's request commits first
    with pytest.raises(ConflictError, match="owners changed"):
        logic.remove_member(directory, StaleMembers(store, before), Role.OWNER, "acct", "alice")  # bob's request
    assert [m.user for m in logic.members(directory, store, "acct", NOW)] == ["alice"]


def test_given_an_erasure_then_personal_data_is_pseudonymised_consistently_and_nothing_else_changes() -> None:
    account = profile(email="ops@a.example", phone="+14155550100", name="Ann")
    sessions = [session("RM_1", "alice", 10), session("RM_2", "alice", 5), session("RM_2", "bob", 5)]
    directory, _, history = world(account, sessions)
    store = InMemoryMembers()
    store.add(Member("acct", "u1", "ann@a.example", Role.OWNER, NOW))
    erased = logic.erase(directory, store, history, "acct", NOW)
    assert (erased.sessions_pseudonymised, erased.members_pseudonymised, erased.profile_cleared) == (3, 1, True)
    kept = directory.profiles["acct"]
    assert (kept.email, kept.phone, kept.name, kept.changes) == ("", "", "", account.changes)
    identities = [s.identity for s in history.by_account["acct"]]
    assert identities[0] == identities[1] != identities[2]
    assert all(identity.startswith("erased-") and "alice" not in identity for identity in identities)
    assert [(s.minutes_in("2026-11")) for s in history.by_account["acct"]] == [(10, 0), (5, 0), (5, 0)]
    again = logic.erase(directory, store, history, "acct", NOW)  # a second erasure changes nothing more
    assert (again.sessions_pseudonymised, again.members_pseudonymised, again.profile_cleared) == (0, 0, False)


def test_given_an_identity_that_only_starts_like_a_pseudonym_then_the_erasure_replaces_it() -> None:
    directory, _, history = world(profile(), [session("RM_1", "erased-jane@example.com", 10)])
    erased = logic.erase(directory, InMemoryMembers(), history, "acct", NOW)
    # D80's formula written out: "erased-" and the first 16 hex digits of sha256(account NUL identity)
    expected = "erased-" + hashlib.sha256(b"acct\x00erased-jane@example.com").hexdigest()[:16]
    assert erased.sessions_pseudonymised == 1
    assert [s.identity for s in history.by_account["acct"]] == [expected]


def test_given_an_open_session_then_the_daily_series_puts_its_minutes_so_far_on_its_day() -> None:
    account = profile()
    directory, month, history = world(account, [session("RM_1", "a", 30, 12, day=3)])
    month.open.append(
        OpenSessionFigures(
            "RM_2", "PA_x", "acct", ms(2026, 11, 15, 11, 30), "room_rule", as_of_ms=ms(2026, 11, 15, 11, 30)
        )
    )
    report = logic.usage_report(directory, month, history, default_catalog(), "acct", NOW)
    days = {d.day.day: (d.video_minutes, d.audio_minutes) for d in report.daily}
    assert (days[3], days[15], len(days)) == ((30, 12), (0, 30), 15)
    assert {m.meter: m.used for m in report.meters}["audio"] == Decimal(42)


def test_given_a_pending_downgrade_then_asking_for_the_tier_in_effect_cancels_it_and_an_upgrade_replaces_it() -> None:
    """Team on Nov 15 asks for Personal: it takes effect on Dec 1. Asking for Team again (the tier in effect) cancels
    it; asking for Enterprise instead upgrades at once and drops it; a refused tier leaves it as it was."""
    catalog = default_catalog()
    directory = InMemoryAccountDirectory(profile(tier="team"))
    december = datetime(2026, 12, 1, tzinfo=UTC)
    scheduled = logic.change_tier(directory, catalog, "acct", "personal", NOW, NO_USAGE, _recorder())
    assert (scheduled.effective_at, scheduled.current_tier) == (december, "team")
    with pytest.raises(InvalidRequestError):
        logic.change_tier(directory, catalog, "acct", "platinum", NOW, NO_USAGE, _recorder())
    assert directory.profiles["acct"].tier_at(december) == "personal"  # still pending
    cancelled = logic.change_tier(directory, catalog, "acct", "team", NOW, NO_USAGE, _recorder())
    assert (cancelled.effective_at, cancelled.current_tier) == (NOW, "team")
    assert [c.tier for c in directory.profiles["acct"].changes] == ["team"]
    assert directory.profiles["acct"].tier_at(december) == "team"
    logic.change_tier(directory, catalog, "acct", "personal", NOW, NO_USAGE, _recorder())  # scheduled again
    upgraded = logic.change_tier(directory, catalog, "acct", "enterprise", NOW, NO_USAGE, _recorder())
    assert (upgraded.effective_at, upgraded.current_tier) == (NOW, "enterprise")
    assert [(c.at, c.tier) for c in directory.profiles["acct"].changes] == [
        (datetime(2026, 1, 1, tzinfo=UTC), "team"),
        (NOW, "enterprise"),
    ]


@pytest.mark.parametrize(
    ("history", "answered"),
    [
        # upgraded to Enterprise at Nov 15 09:00, this period: the retry gets the first answer (effective 09:00)
        ([(datetime(2026, 1, 1, tzinfo=UTC), "team"), (datetime(2026, 11, 15, 9, tzinfo=UTC), "enterprise")], True),
        # upgraded on Oct 20, a period before now's (Nov): no retry of a click, refused as before
        ([(datetime(2026, 1, 1, tzinfo=UTC), "team"), (datetime(2026, 10, 20, tzinfo=UTC), "enterprise")], False),
        # Enterprise since the account began (no change to it): nothing to retry, refused
        ([(datetime(2026, 1, 1, tzinfo=UTC), "enterprise")], False),
    ],
)
def test_given_the_tier_in_effect_asked_with_nothing_pending_then_only_a_retried_upgrade_of_this_period_answers(
    history: list[tuple[datetime, str]], answered: bool
) -> None:
    """D118 amended (ex): asking for the tier in effect, with no change pending, is a retried upgrade when the
    change in force is an upgrade to it (from a lower tier) made in now's period (Nov 2026): answered as the upgrade
    was (effective at its time, nothing saved); otherwise 409 "already on tier" as before."""
    stored = AccountProfile("acct", tuple(TierChange(at, tier) for at, tier in history))
    directory = InMemoryAccountDirectory(stored)
    if not answered:
        with pytest.raises(ConflictError, match="already on tier 'enterprise'"):
            logic.change_tier(directory, default_catalog(), "acct", "enterprise", NOW, NO_USAGE, _recorder())
        return
    again = logic.change_tier(directory, default_catalog(), "acct", "enterprise", NOW, NO_USAGE, _recorder())
    assert (again.effective_at, again.current_tier, again.tier, again.cancelled) == (
        datetime(2026, 11, 15, 9, tzinfo=UTC),
        "enterprise",
        "enterprise",
        False,
    )
    assert directory.profiles["acct"].changes == stored.changes  # nothing saved


def test_given_a_pending_downgrade_cancelled_then_the_cancel_retried_is_answered_as_the_cancel() -> None:
    """Review ex2 #3: Team since Jan 1; Nov 15 09:00 Enterprise (upgrade_now, effective 09:00); 10:00 Team (a
    downgrade pending Dec 1); 11:00 Enterprise (cancels it: pending_change_cancelled, effective 11:00). The 11:00
    request retried at 11:00:05 repeats the cancel: cancelled, effective 11:00 - not upgrade_now at 09:00. A new
    upgrade afterwards is answered as that upgrade (the cancel no longer the last request)."""
    catalog = default_catalog()
    jan1, nov15 = datetime(2026, 1, 1, tzinfo=UTC), datetime(2026, 11, 15, tzinfo=UTC)
    directory = InMemoryAccountDirectory(AccountProfile("acct", (TierChange(jan1, "team"),)))
    up = logic.change_tier(directory, catalog, "acct", "enterprise", nov15.replace(hour=9), NO_USAGE, _recorder())
    assert (up.effective_at, up.cancelled) == (nov15.replace(hour=9), False)
    down = logic.change_tier(directory, catalog, "acct", "team", nov15.replace(hour=10), NO_USAGE, _recorder())
    assert down.effective_at == datetime(2026, 12, 1, tzinfo=UTC)
    cancel = logic.change_tier(directory, catalog, "acct", "enterprise", nov15.replace(hour=11), NO_USAGE, _recorder())
    assert (cancel.effective_at, cancel.cancelled) == (nov15.replace(hour=11), True)
    again = logic.change_tier(
        directory, catalog, "acct", "enterprise", nov15.replace(hour=11, second=5), NO_USAGE, _recorder()
    )
    assert (again.effective_at, again.cancelled, again.current_tier) == (nov15.replace(hour=11), True, "enterprise")
    assert directory.profiles["acct"].changes == (
        TierChange(jan1, "team"),
        TierChange(nov15.replace(hour=9), "enterprise"),
    )


def test_given_an_upgrade_at_the_period_end_then_its_retry_in_the_next_period_is_refused() -> None:
    """Team -> Enterprise at Nov 30 23:59:59; the same click again lands Dec 1 00:00:01, another period: 409 (the
    retried upgrade's window is its period, as a pending downgrade's is)."""
    catalog = default_catalog()
    directory = InMemoryAccountDirectory(
        AccountProfile("acct", (TierChange(datetime(2026, 1, 1, tzinfo=UTC), "team"),))
    )
    logic.change_tier(
        directory, catalog, "acct", "enterprise", datetime(2026, 11, 30, 23, 59, 59, tzinfo=UTC), NO_USAGE, _recorder()
    )
    with pytest.raises(ConflictError, match="already on tier"):
        logic.change_tier(
            directory, catalog, "acct", "enterprise", datetime(2026, 12, 1, 0, 0, 1, tzinfo=UTC), NO_USAGE, _recorder()
        )


def _operator_dates(directory: InMemoryAccountDirectory, tier: str, at: datetime) -> None:
    """What ``kilo-billing account tier <tier> --at <at>`` calls (cli/kilo_billing_cli/accounts.py), read at NOW."""
    book = CATALOG.for_period(Period.containing(at))
    request_tier_change(directory, book, "acct", tier, at, (), month=NO_USAGE, read_at=NOW, catalog=CATALOG)


def test_given_a_downgrade_and_a_later_operator_dated_change_then_the_pending_change_is_the_next_one() -> None:
    """Review api3 #1: Team since Jan 1; Nov 15 09:00 Personal asked (from Dec 1); an operator dates Team from Jan 15
    2027. The page names Personal on Dec 1 (the next change, D370 amended (av2)); the route agrees:
    - Personal asked again at 11:00 is the retried click of the Dec 1 change: effective Dec 1, nothing saved (before:
      the LATEST, Team Jan 15, was "pending", so Personal replaced it - the Jan 15 change dropped);
    - Team (in effect) asked at 12:00 cancels both future changes: cancelled, effective 12:00, Team all through
      (before: a retry of Team Jan 15 - effective Jan 15, nothing saved, Personal from Dec 1)."""
    jan1, dec1, jan15 = (datetime(2026, 1, 1, tzinfo=UTC), datetime(2026, 12, 1, tzinfo=UTC),
                         datetime(2027, 1, 15, tzinfo=UTC))  # fmt: skip
    directory = InMemoryAccountDirectory(AccountProfile("acct", (TierChange(jan1, "team"),)))
    logic.change_tier(directory, CATALOG, "acct", "personal", NOW.replace(hour=9), NO_USAGE, _recorder())
    _operator_dates(directory, "team", jan15)
    both = (TierChange(jan1, "team"), TierChange(dec1, "personal"), TierChange(jan15, "team"))
    assert directory.profiles["acct"].changes == both
    again = logic.change_tier(directory, CATALOG, "acct", "personal", NOW.replace(hour=11), NO_USAGE, _recorder())
    assert (again.effective_at, again.cancelled, again.current_tier) == (dec1, False, "team")
    assert directory.profiles["acct"].changes == both  # nothing saved
    stay = logic.change_tier(directory, CATALOG, "acct", "team", NOW, NO_USAGE, _recorder())
    assert (stay.effective_at, stay.cancelled, stay.current_tier) == (NOW, True, "team")
    assert directory.profiles["acct"].changes == (TierChange(jan1, "team"),)
    assert directory.profiles["acct"].tier_at(dec1) == "team"


def test_given_a_cancel_then_an_operator_backdated_change_then_the_cancel_is_not_replayed() -> None:
    """Review api3 #3: Team since Jan 1; Nov 15 09:00 Personal asked (from Dec 1); 11:00 Stay on Team (cancel); an
    operator backdates Enterprise from Nov 10 (nothing invoiced yet); 12:00 the customer asks Enterprise. Before:
    ``pending_change_cancelled`` effective 11:00 - a cancel that never asked for Enterprise (the stored cancel was a
    time only, later than the Nov 10 change in force). Now the operator's recorded change voids the cancel: no cancel
    replayed, nothing saved. What is answered is D373's rule for the change in force: Enterprise from Nov 10 is an
    upgrade (Team rank 1 -> Enterprise rank 2) made in November, so 200 effective Nov 10 (``upgrade_now``)."""
    jan1, nov10 = datetime(2026, 1, 1, tzinfo=UTC), datetime(2026, 11, 10, tzinfo=UTC)
    directory = InMemoryAccountDirectory(AccountProfile("acct", (TierChange(jan1, "team"),)))
    logic.change_tier(directory, CATALOG, "acct", "personal", NOW.replace(hour=9), NO_USAGE, _recorder())
    stay = logic.change_tier(directory, CATALOG, "acct", "team", NOW.replace(hour=11), NO_USAGE, _recorder())
    assert (stay.effective_at, stay.cancelled) == (NOW.replace(hour=11), True)
    _operator_dates(directory, "enterprise", nov10)
    assert directory.profiles["acct"].tier_change_cancelled_at is None  # voided by the change recorded after it
    asked = logic.change_tier(directory, CATALOG, "acct", "enterprise", NOW, NO_USAGE, _recorder())
    assert (asked.effective_at, asked.cancelled, asked.current_tier) == (nov10, False, "enterprise")
    assert directory.profiles["acct"].changes == (TierChange(jan1, "team"), TierChange(nov10, "enterprise"))


def test_given_operator_dated_changes_then_an_upgrade_click_applies_now_and_replaces_them() -> None:
    """Review api4 #1 (D118: an upgrade takes effect at once). Team since Jan 1; an operator dates Enterprise from
    Dec 15 (``account tier enterprise --at 2026-12-15``: an upgrade, in effect at the instant asked) and then
    Personal (``--at 2027-02-01``: a downgrade from Enterprise, in effect at the next period start, Mar 1 2027).
    Nov 15 12:00 the customer clicks "Upgrade to Enterprise now". Before: Enterprise being the NEXT change's tier,
    the click was taken for a retry - effective Dec 15, nothing saved, Team until then. Now the next change is a
    retry only when it is the change this click makes (Enterprise at 12:00, not at Dec 15): Enterprise from 12:00,
    both future changes replaced; the same click again is D373's retried upgrade (effective 12:00, nothing saved).
    The single operator-dated upgrade (Enterprise from Jan 15 2027 only) was taken for a retry before api3 too."""
    jan1, dec15, feb1 = (datetime(2026, 1, 1, tzinfo=UTC), datetime(2026, 12, 15, tzinfo=UTC),
                         datetime(2027, 2, 1, tzinfo=UTC))  # fmt: skip
    mar1, jan15 = datetime(2027, 3, 1, tzinfo=UTC), datetime(2027, 1, 15, tzinfo=UTC)
    directory = InMemoryAccountDirectory(AccountProfile("acct", (TierChange(jan1, "team"),)))
    _operator_dates(directory, "enterprise", dec15)
    _operator_dates(directory, "personal", feb1)
    dated = (TierChange(jan1, "team"), TierChange(dec15, "enterprise"), TierChange(mar1, "personal"))
    assert directory.profiles["acct"].changes == dated
    upgraded = (TierChange(jan1, "team"), TierChange(NOW, "enterprise"))
    for at in (NOW, NOW.replace(minute=5)):  # the click at 12:00, then the same click retried at 12:05
        up = logic.change_tier(directory, CATALOG, "acct", "enterprise", at, NO_USAGE, _recorder())
        assert (up.effective_at, up.cancelled, up.current_tier) == (NOW, False, "enterprise")
        assert directory.profiles["acct"].changes == upgraded
    single = InMemoryAccountDirectory(AccountProfile("acct", (TierChange(jan1, "team"),)))
    _operator_dates(single, "enterprise", jan15)
    up = logic.change_tier(single, CATALOG, "acct", "enterprise", NOW, NO_USAGE, _recorder())
    assert (up.effective_at, up.cancelled, up.current_tier) == (NOW, False, "enterprise")
    assert single.profiles["acct"].changes == upgraded


def test_given_an_upgrade_then_an_operator_dated_downgrade_then_the_upgrade_retried_cancels_it() -> None:
    """Review api4 #2, the limit D373 amended (api3/api4) documents (the Idempotency-Key follow-up): Team since
    Jan 1; Nov 15 09:00 the customer upgrades to Enterprise (effective 09:00); an operator then dates Personal
    (``--at 2027-01-01``: a downgrade from Enterprise, in effect Feb 1 2027); the 09:00 click retried at 11:00 asks
    for the tier in effect with a change pending - indistinguishable on the stored state from "Stay on Enterprise" -
    so it is answered ``pending_change_cancelled`` effective 11:00 and the operator's Feb 1 change is dropped. The
    logic's rule on the state alone; the route no longer lets such a retry reach it: it needs the click's
    ``Idempotency-Key`` and replays that answer (D377), and refuses a request without one (D436)."""
    jan1, jan1_27 = datetime(2026, 1, 1, tzinfo=UTC), datetime(2027, 1, 1, tzinfo=UTC)
    feb1 = datetime(2027, 2, 1, tzinfo=UTC)
    nine, eleven = NOW.replace(hour=9), NOW.replace(hour=11)
    directory = InMemoryAccountDirectory(AccountProfile("acct", (TierChange(jan1, "team"),)))
    first = logic.change_tier(directory, CATALOG, "acct", "enterprise", nine, NO_USAGE, _recorder())
    assert (first.effective_at, first.cancelled) == (nine, False)
    _operator_dates(directory, "personal", jan1_27)
    upgraded = (TierChange(jan1, "team"), TierChange(nine, "enterprise"))
    assert directory.profiles["acct"].changes == (*upgraded, TierChange(feb1, "personal"))
    again = logic.change_tier(directory, CATALOG, "acct", "enterprise", eleven, NO_USAGE, _recorder())
    assert (again.effective_at, again.cancelled, again.current_tier) == (eleven, True, "enterprise")
    assert directory.profiles["acct"].changes == upgraded


def test_given_a_downgrade_in_force_since_the_period_start_then_asking_for_its_tier_again_is_refused() -> None:
    """Team until Nov 1, Personal from then (a downgrade that took effect): it is no upgrade to retry, and no
    answer of this request could have said 'upgrade_now' - 409 as before."""
    stored = AccountProfile(
        "acct",
        (
            TierChange(datetime(2026, 1, 1, tzinfo=UTC), "team"),
            TierChange(datetime(2026, 11, 1, tzinfo=UTC), "personal"),
        ),
    )
    with pytest.raises(ConflictError, match="already on tier 'personal'"):
        logic.change_tier(
            InMemoryAccountDirectory(stored), default_catalog(), "acct", "personal", NOW, NO_USAGE, _recorder()
        )


def test_given_a_history_with_two_changes_at_one_instant_then_the_pending_tier_is_the_last_recorded() -> None:
    """Stored before D161: Enterprise, then Team and Personal both asked for Dec 1. Personal (the last recorded) is
    what Dec 1 brings, so asking for Team is a change, not a retried click: Dec 1 brings Team afterwards."""
    catalog = default_catalog()
    december = datetime(2026, 12, 1, tzinfo=UTC)
    stored = AccountProfile(
        "acct",
        (
            TierChange(datetime(2026, 1, 1, tzinfo=UTC), "enterprise"),
            TierChange(december, "team"),
            TierChange(december, "personal"),
        ),
    )
    directory = InMemoryAccountDirectory(stored)
    assert directory.profiles["acct"].tier_at(december) == "personal"
    asked = logic.change_tier(directory, catalog, "acct", "team", NOW, NO_USAGE, _recorder())
    assert (asked.effective_at, asked.current_tier) == (december, "enterprise")
    assert directory.profiles["acct"].tier_at(december) == "team"


@pytest.mark.parametrize(
    ("url", "dashboard", "allowed"),
    [
        ("http://127.0.0.1:51234/#/cards", "http://127.0.0.1:8000/", True),  # the local stack's dashboard, any port
        ("http://localhost:51234/", "http://127.0.0.1:8000/", True),
        ("https://127.0.0.1:8000/", "http://127.0.0.1:8000/", False),  # another scheme
        ("http://127.0.0.1.evil.example:8000/", "http://127.0.0.1:8000/", False),
        ("http://127.0.0.1:8000/", "https://dash.kilo.example/", False),  # a deployed dashboard admits no loopback
        ("https://dash.kilo.example/x?y=1", "https://dash.kilo.example/app/", True),
        ("https://Dash.Kilo.Example:443/", "https://dash.kilo.example/", True),
        ("https://x@evil.example/", "https://dash.kilo.example/", False),
    ],
)
def test_given_a_return_address_then_only_the_dashboards_origin_is_admitted(
    url: str, dashboard: str, allowed: bool
) -> None:
    from kilo_account_api.logic import check_return_url  # noqa: PLC0415

    if allowed:
        assert check_return_url("success_url", url, (dashboard,)) == url
    else:
        with pytest.raises(InvalidRequestError, match="success_url must be on the dashboard") as refused:
            check_return_url("success_url", url, (dashboard,))
        assert refused.value.field == "success_url"


DASHBOARD = "https://dash.kilo.example/"  # 26 characters


@pytest.mark.parametrize(
    ("url", "reason"),
    [
        (DASHBOARD + "a" * 4975, "at most 5000 characters"),  # 5,001
        ("https://dash.kilo.example/a b", "no whitespace"),
        ("https://dash.kilo.example/\tcards", "no whitespace"),
        ("https://dash.kilo.example/a\nb", "no whitespace"),
        ("https://dash.kilo.example/\x00", "no whitespace"),  # a control character
    ],
)
def test_given_a_return_address_on_the_dashboard_that_stripe_refuses_then_it_is_the_customers_400(
    url: str, reason: str
) -> None:
    """D333 (review rev7 F3): what ``check_return_url`` admits, Stripe takes - its documented rules for a page
    URL (absolute http(s), at most 5,000 characters, no whitespace) are checked here, naming the field. Before: each
    was admitted (its origin is the dashboard's) and Stripe's refusal of it came back from the page call."""
    from kilo_account_api.logic import check_return_url  # noqa: PLC0415

    with pytest.raises(InvalidRequestError, match=reason) as refused:
        check_return_url("success_url", url, (DASHBOARD,))
    assert refused.value.field == "success_url"
    longest = DASHBOARD + "a" * 4974
    assert (len(longest), check_return_url("success_url", longest, (DASHBOARD,))) == (5000, longest)


def test_given_an_internationalised_dashboard_host_then_its_pages_are_admitted_as_the_body_brings_them() -> None:
    """A review of D333: pydantic writes a body URL's internationalised host as punycode; the configured origin
    was compared in Unicode, so ``https://bücher.example`` refused its own pages (400). Both sides in IDNA form now."""
    from kilo_account_api.logic import check_return_url  # noqa: PLC0415
    from kilo_account_api.schemas import CheckoutIn  # noqa: PLC0415

    sent = str(CheckoutIn(success_url="https://bücher.example/billing?x=1").success_url)  # type: ignore[arg-type]
    assert sent == "https://xn--bcher-kva.example/billing?x=1"
    assert check_return_url("success_url", sent, ("https://bücher.example",)) == sent


def test_given_a_dashboard_url_longer_than_2083_characters_then_the_body_takes_it_up_to_stripes_5000() -> None:
    """pydantic's ``HttpUrl`` stopped at 2,083 characters (``url_too_long``) while Stripe takes 5,000: the body's URL
    type is http(s) up to 5,000 now, ``check_return_url`` holds the rest (a review of D333)."""
    from kilo_account_api.schemas import CheckoutIn  # noqa: PLC0415

    long = DASHBOARD + "?q=" + "x" * 2100
    assert str(CheckoutIn(success_url=long).success_url) == long  # type: ignore[arg-type]
    with pytest.raises(ValueError, match="at most 5000"):
        CheckoutIn(success_url=DASHBOARD + "?q=" + "x" * 5000)  # type: ignore[arg-type]
    with pytest.raises(ValueError, match="URL scheme should be 'http' or 'https'"):
        CheckoutIn(success_url="ftp://dash.kilo.example/")  # type: ignore[arg-type]


def test_given_port_0_on_the_dashboard_host_then_it_is_refused_not_read_as_the_default_port() -> None:
    """``https://dash.kilo.example:0/`` was read as port 443 (``port or default``) and admitted: a page no one serves
    (a review of D333)."""
    from kilo_account_api.logic import check_return_url  # noqa: PLC0415

    with pytest.raises(InvalidRequestError):
        check_return_url("success_url", "https://dash.kilo.example:0/", (DASHBOARD,))


def test_given_limits_below_the_new_tiers_fee_then_the_upgrade_is_refused_naming_them_and_nothing_is_saved() -> None:
    """Team ($29) with a $40 budget and a $50 hard limit asks for Enterprise ($99) on Nov 15: the upgrade's own fee
    would pass both at once and stop every call, so it is refused (409) naming the hard limit and the fee; with the
    limits raised above $99 it goes through; a downgrade is never refused for its limits (D150)."""
    catalog = default_catalog()
    limited = profile(tier="team", budget_usd=Decimal("40"), hard_limit_usd=Decimal("50"))
    directory = InMemoryAccountDirectory(limited)
    with pytest.raises(ConflictError) as refused:
        logic.change_tier(directory, catalog, "acct", "enterprise", NOW, NO_USAGE, _recorder())
    assert str(refused.value).startswith(
        "changing to enterprise: hard limit $50 is not above the fixed monthly fee of $99.00"
    )
    assert directory.profiles["acct"].changes == limited.changes  # nothing saved
    directory.profiles["acct"] = replace(
        directory.profiles["acct"], budget_usd=Decimal("120"), hard_limit_usd=Decimal("150")
    )
    upgraded = logic.change_tier(directory, catalog, "acct", "enterprise", NOW, NO_USAGE, _recorder())
    assert upgraded.current_tier == "enterprise"
    low = InMemoryAccountDirectory(profile(tier="enterprise", hard_limit_usd=Decimal("50")))  # set before D150
    down = logic.change_tier(low, catalog, "acct", "team", NOW, NO_USAGE, _recorder())
    assert (down.current_tier, down.effective_at) == ("enterprise", datetime(2026, 12, 1, tzinfo=UTC))


def test_given_an_upgrade_re_rating_the_month_over_the_hard_limit_then_it_is_refused_naming_limit_and_bill() -> None:
    """D150 amended (e2): Team ($29, 50,000 video min) from Nov 1, hard limit $100, 91,667 video minutes by Nov 16.
    Before: $29.00 + (91,667 - 50,000 = 41,667) x $0.00072 = $29.00 + $30.00 = $59.00. Enterprise from Nov 16 00:00
    (fees alone: $99 < $100, accepted before) prorates Team to 15/30 of November: 25,000 video min included, so the same
    minutes are 66,667 over = $48.00024 -> $48.00, plus the fees $29 x 15/30 = $14.50 and $99 x 15/30 = $49.50:
    $112.00 >= $100, the limit reached by the upgrade itself. Refused (409) naming both, nothing saved; at $112.00 too
    (reached at the limit), accepted with the limit at $112.01."""
    upgrade_at = datetime(2026, 11, 16, tzinfo=UTC)
    team = AccountProfile("acct", (TierChange(NOV_1, "team"),), hard_limit_usd=Decimal(100))
    directory = InMemoryAccountDirectory(team)
    month = InMemoryMonthToDate(directory, {("acct", "2026-11"): {(SEGMENT, "video"): 91_667}})
    assert str(month_to_date(month, "acct", "2026-11", ms(2026, 11, 16), BOOK).rated.total) == "59.00"  # before
    with pytest.raises(ConflictError) as refused:
        logic.change_tier(directory, CATALOG, "acct", "enterprise", upgrade_at, month, _recorder())
    assert str(refused.value).startswith("changing to enterprise: hard limit $100 is not above $112.00, this month's")
    assert "raise the hard limit above $112.00, or clear it, before changing tier" in str(refused.value)
    assert directory.profiles["acct"] == team  # nothing saved
    directory.profiles["acct"] = replace(team, hard_limit_usd=Decimal("112.00"))
    with pytest.raises(ConflictError, match=r"hard limit \$112\.00 is not above \$112\.00"):
        logic.change_tier(directory, CATALOG, "acct", "enterprise", upgrade_at, month, _recorder())
    directory.profiles["acct"] = replace(team, hard_limit_usd=Decimal("112.01"))
    upgraded = logic.change_tier(directory, CATALOG, "acct", "enterprise", upgrade_at, month, _recorder())
    assert (upgraded.current_tier, upgraded.effective_at) == ("enterprise", upgrade_at)


def test_given_a_call_shared_out_across_an_upgrade_then_the_idle_camera_lever_moves_each_segments_own_video() -> None:
    # D282: rating stores a call across a tier change as one part per segment. Personal -> Team at Nov 10
    # 00:00: Personal is 9/30 of November (1,500 video / 3,000 audio included, $0 fee), Team 21/30 (35,000 / 70,000,
    # fee 29 x 21/30 = $20.30). Alone with the camera on: 1,800 video minutes before the upgrade, 600 after.
    # Now: Personal video 300 over x $0.00072 = $0.216 -> $0.22; Team $0.00: $20.52. As audio, each segment's own
    # minutes: Personal audio 1,800 of 3,000, Team 600 of 70,000: $20.30. Saving $0.22. (Moving the Team part's
    # video into Personal's segment would bill Personal audio 2,400 and leave Team's 600 video minutes: wrong.)
    nov_10 = datetime(2026, 11, 10, tzinfo=UTC)
    account = AccountProfile(
        "acct", (TierChange(datetime(2026, 1, 1, tzinfo=UTC), "personal"), TierChange(nov_10, "team"))
    )
    start, cut = ms(2026, 11, 9, 18), int(nov_10.timestamp() * 1000)
    call = SessionRecord("RM_solo", "PA_solo", "ann", "ann's desk", start, cut + 36_000_000,
                         parts=(SessionPart("2026-11", start, 1_800, 0), SessionPart("2026-11", cut, 600, 0)))  # fmt: skip
    directory = InMemoryAccountDirectory(account)
    counters = {(SEGMENT, "video"): 1_800, (int(nov_10.timestamp()), "video"): 600}
    month = InMemoryMonthToDate(directory, {("acct", "2026-11"): counters})
    history = InMemorySessionHistory()
    history.add("acct", call)
    now = datetime(2026, 11, 20, tzinfo=UTC)
    mtd = month_to_date(month, "acct", "2026-11", int(now.timestamp() * 1000), BOOK)
    found = [r for r in recommend(mtd, history.sessions("acct", "2026-11"), BOOK, now, POLICY)
             if r.kind is RecommendationKind.IDLE_CAMERA]  # fmt: skip
    assert [(r.saving_usd, r.current_usd, r.with_change_usd) for r in found] == [
        (Decimal("0.22"), Decimal("20.52"), Decimal("20.30"))
    ]


def test_given_a_closed_call_shared_out_across_an_upgrade_then_the_daily_series_puts_it_on_the_day_it_began() -> None:
    """D282 stores a call across an upgrade as one part per segment, the second from the upgrade instant (Nov 16
    00:00). Nov 15 12:00:00 - Nov 16 12:00:30, parts (240 video, 480 audio) from the join and (480, 241) from the
    upgrade: the whole call is on Nov 15, 240 + 480 = 720 video and 480 + 241 = 721 audio minutes - as the same call
    with no upgrade (one part) and as it was while open (D321)."""
    join, upgrade, leave = ms(2026, 11, 15, 12), ms(2026, 11, 16), ms(2026, 11, 16, 12) + 30_000
    upgraded = replace(profile(), changes=(*profile().changes, TierChange(datetime(2026, 11, 16, tzinfo=UTC), "team")))
    call = SessionRecord("RM_long", "PA_host", "host", "all-day", join, leave,
                         parts=(SessionPart("2026-11", join, 240, 480), SessionPart("2026-11", upgrade, 480, 241)))  # fmt: skip
    now = datetime(2026, 11, 16, 13, tzinfo=UTC)
    directory, month, history = world(upgraded, [call])
    report = logic.usage_report(directory, month, history, CATALOG, "acct", now)
    days = {d.day.day: (d.video_minutes, d.audio_minutes) for d in report.daily if d.video_minutes or d.audio_minutes}
    assert days == {15: (720, 721)}


def test_given_a_town_hall_whose_minutes_are_the_unattributed_buckets_then_no_audience_saving_is_claimed() -> None:
    """D292/D322: sessions rated while the id was unregistered are listed under the account, but their minutes
    are the unattributed bucket's - not in the account's counters, not on its invoice. The account's own call: two
    people x 3,000 video minutes = 6,000, 1,000 over the 5,000 included ($0.72). The same town hall as above (10 x 600
    video minutes) is the bucket's: making it audio-only would change nothing the account pays - no recommendation
    (before: "$0.72 saved", its 6,000 minutes taken off the account's own)."""
    town_hall = [
        replace(session("RM_hall", f"p{i}", 600, name="town hall"), unattributed_periods=frozenset({"2026-11"}))
        for i in range(10)
    ]
    pair = [session("RM_pair", "ann", 3_000), session("RM_pair", "bob", 3_000)]
    account = profile()
    directory = InMemoryAccountDirectory(account)
    month = InMemoryMonthToDate(directory, {("acct", "2026-11"): {(SEGMENT, "video"): 6_000}})
    history = InMemorySessionHistory()
    history.add("acct", *town_hall, *pair)
    mtd = month_to_date(month, "acct", "2026-11", int(NOW.timestamp() * 1000), BOOK)
    found = recommend(mtd, history.sessions("acct", "2026-11"), BOOK, NOW, POLICY)
    assert [r.kind for r in found if r.kind is RecommendationKind.AUDIO_ONLY_AUDIENCES] == []


def _recorder() -> Callable[[logic.TierChangeOutcome], StoredAnswer]:
    """The handler's ``answered`` for one request under a key of its own: the outcome's answer, recorded (its body
    the outcome's tier and effective time) - kept by the directory with the tier change."""
    key = f"key-{next(_KEYS)}"

    def answered(outcome: logic.TierChangeOutcome) -> StoredAnswer:
        body = f"{outcome.tier} {outcome.effective_at.isoformat()}"
        return StoredAnswer("acct", key, "digest", 200, body, NOW)

    return answered


_KEYS = itertools.count(1)


def test_given_a_tier_change_then_its_answer_is_required_and_kept_with_it() -> None:
    """D436: every tier request has its key, so ``change_tier`` takes the answer to keep (no keyless branch):
    without it a TypeError; with it the answer is kept with the change (Personal from Dec 1)."""
    directory = InMemoryAccountDirectory(profile(tier="team"))
    with pytest.raises(TypeError):
        logic.change_tier(directory, default_catalog(), "acct", "personal", NOW, NO_USAGE)  # type: ignore[call-arg]
    logic.change_tier(directory, default_catalog(), "acct", "personal", NOW, NO_USAGE, _recorder())
    assert [a.body for a in directory.answers.values()] == ["personal 2026-12-01T00:00:00+00:00"]


def _tag_of(shown: str) -> str:
    """D441's tag, worked independently of ``logic``: ``"`` + the first 16 hex digits of SHA-256 of the tier in
    effect then each change still to come as ``|<at ISO>=<tier>`` + ``"``."""
    return '"' + hashlib.sha256(shown.encode()).hexdigest()[:16] + '"'


def test_given_a_stale_if_match_then_the_tier_request_is_refused_naming_the_subscription_now_and_nothing_is_written() -> (
    None
):
    """D441: Team; a page read at NOW shows Team, nothing scheduled (its tag: SHA-256 of "team"); someone else then
    asks for Personal (from Dec 1). The page's "Upgrade to Enterprise now" with that tag is refused: the error names
    Team, Personal from Dec 1 and the tag now (SHA-256 of "team|2026-12-01T00:00:00+00:00=personal"); the stored
    changes are as before the click and no answer is kept (a refusal stores nothing, D377)."""
    directory = InMemoryAccountDirectory(profile(tier="team"))
    page = _tag_of("team")
    assert logic.subscription_tag(directory.profiles["acct"], NOW) == page
    logic.change_tier(directory, CATALOG, "acct", "personal", NOW, NO_USAGE, _recorder())  # someone else's click
    stored, answers = directory.profiles["acct"].changes, dict(directory.answers)
    december = datetime(2026, 12, 1, tzinfo=UTC)
    with pytest.raises(SubscriptionChangedError) as refused:
        logic.change_tier(directory, CATALOG, "acct", "enterprise", NOW, NO_USAGE, _recorder(), if_match=page)
    now_tag = _tag_of("team|2026-12-01T00:00:00+00:00=personal")
    assert refused.value.current == SubscriptionState("team", TierChange(december, "personal"), now_tag)
    assert (directory.profiles["acct"].changes, directory.answers) == (stored, answers)


@pytest.mark.parametrize(
    "if_match",
    [
        _tag_of("team|2026-12-01T00:00:00+00:00=personal"),  # the tag the page read
        "*",  # any version (RFC 9110)
        '"0000000000000000", ' + _tag_of("team|2026-12-01T00:00:00+00:00=personal"),  # one of a list
    ],
)
def test_given_an_if_match_naming_the_subscription_now_then_the_request_is_decided(if_match: str) -> None:
    """D441: Team with Personal scheduled from Dec 1; "Stay on Team" with the page's tag (or ``*``, or a list
    holding it) cancels the downgrade as without ``If-Match``."""
    directory = InMemoryAccountDirectory(profile(tier="team"))
    logic.change_tier(directory, CATALOG, "acct", "personal", NOW, NO_USAGE, _recorder())
    stay = logic.change_tier(directory, CATALOG, "acct", "team", NOW, NO_USAGE, _recorder(), if_match=if_match)
    assert (stay.cancelled, [c.tier for c in directory.profiles["acct"].changes]) == (True, ["team"])
    assert logic.subscription_tag(stay.profile, NOW) == _tag_of("team")


@pytest.mark.parametrize("if_match", ['W/"' + "x" * 16 + '"', '"0000000000000000"', ""])
def test_given_a_weak_or_other_if_match_then_it_does_not_match(if_match: str) -> None:
    """Strong comparison (RFC 9110 13.1.1): a weak tag - even of the version now - another tag, an empty header:
    refused."""
    directory = InMemoryAccountDirectory(profile(tier="team"))
    weak = "W/" + _tag_of("team")
    for sent in (if_match, weak):
        with pytest.raises(SubscriptionChangedError):
            logic.change_tier(directory, CATALOG, "acct", "enterprise", NOW, NO_USAGE, _recorder(), if_match=sent)
    assert [c.tier for c in directory.profiles["acct"].changes] == ["team"]


def test_given_a_scheduled_downgrade_taking_effect_then_the_tag_moves_and_a_budget_does_not_move_it() -> None:
    """D441: the page read on Nov 15 (Team, Personal from Dec 1) is stale on Dec 1 00:00, when Personal is in effect
    and nothing is scheduled (SHA-256 of "personal"); a budget saved meanwhile moves the stored version, not the tag."""
    directory = InMemoryAccountDirectory(profile(tier="team"))
    logic.change_tier(directory, CATALOG, "acct", "personal", NOW, NO_USAGE, _recorder())
    budgeted = replace(directory.profiles["acct"], budget_usd=Decimal(500))
    december = datetime(2026, 12, 1, tzinfo=UTC)
    assert logic.subscription_tag(budgeted, NOW) == _tag_of("team|2026-12-01T00:00:00+00:00=personal")
    assert logic.subscription_tag(budgeted, december) == _tag_of("personal")


class _SavedFirstByAnotherAdmin(InMemoryAccountDirectory):
    """A directory where another admin's request is saved between our read and our first save (``meanwhile``, the
    stored profile it makes, with the version moved on), so that save fails with ``ProfileChangedError`` and
    ``update_profile`` reads again and decides again."""

    def __init__(self, stored: AccountProfile, meanwhile: Callable[[AccountProfile], AccountProfile]) -> None:
        super().__init__(stored)
        self.meanwhile = meanwhile
        self.saves = 0

    def save(self, profile: AccountProfile) -> AccountProfile:
        self.saves += 1
        if self.saves == 1:
            stored = self.profiles[profile.account_id]
            self.profiles[profile.account_id] = replace(self.meanwhile(stored), version=stored.version + 1)
        return super().save(profile)


def test_given_another_admins_tier_request_saved_before_ours_then_our_retry_is_refused_on_the_tag() -> None:
    """D441: Team, nothing scheduled; our page read it (SHA-256 of "team"). We ask for Enterprise now with that tag;
    between our read and our save another admin's Personal from Dec 1 is saved, so our save fails (version moved)
    and the retry reads Team with Personal from Dec 1: its tag is not ours, so the retry is refused - the stored
    changes are the other admin's (Team, Personal from Dec 1), nothing of ours (no Enterprise, no answer kept).
    Fails when the tag is checked once before the read-decide-save (the retry would upgrade at once)."""
    december = datetime(2026, 12, 1, tzinfo=UTC)
    directory = _SavedFirstByAnotherAdmin(
        profile(tier="team"), lambda p: replace(p, changes=(*p.changes, TierChange(december, "personal")))
    )
    with pytest.raises(SubscriptionChangedError) as refused:
        logic.change_tier(
            directory, CATALOG, "acct", "enterprise", NOW, NO_USAGE, _recorder(), if_match=_tag_of("team")
        )
    assert refused.value.current.tag == _tag_of("team|2026-12-01T00:00:00+00:00=personal")
    assert [(c.at, c.tier) for c in directory.profiles["acct"].changes] == [
        (datetime(2026, 1, 1, tzinfo=UTC), "team"),
        (december, "personal"),
    ]
    assert (directory.saves, directory.answers) == (1, {})


def test_given_another_admins_budget_saved_before_ours_then_our_tier_request_is_decided_on_the_retry() -> None:
    """D441: the same race with a budget edit (the subscription unchanged, the stored version moved): the retry's
    tag is still SHA-256 of "team", so Enterprise is decided now (from NOW) over the budget, and our answer kept."""
    directory = _SavedFirstByAnotherAdmin(profile(tier="team"), lambda p: replace(p, budget_usd=Decimal(500)))
    outcome = logic.change_tier(
        directory, CATALOG, "acct", "enterprise", NOW, NO_USAGE, _recorder(), if_match=_tag_of("team")
    )
    stored = directory.profiles["acct"]
    assert (outcome.tier, outcome.effective_at) == ("enterprise", NOW)
    assert ([(c.at, c.tier) for c in stored.changes][-1], stored.budget_usd) == ((NOW, "enterprise"), Decimal(500))
    assert (directory.saves, [a.body for a in directory.answers.values()]) == (2, ["enterprise " + NOW.isoformat()])
