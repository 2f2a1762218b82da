"""One contract per port of the account API, two implementations each: the in-memory fakes the logic tests use and the
DynamoDB adapters on the template's tables. Rating's sessions are written with rating's own item mapping
(``kilo_rate_usage.items.session_to_item``), so the attribute names the API reads are checked against rating's."""

from __future__ import annotations

from dataclasses import replace
from datetime import UTC, datetime, timedelta
from fractions import Fraction
from typing import Any

import pytest

from kilo_account_api.adapters import DynamoMembers, DynamoSessionHistory
from kilo_account_api.model import ConflictError, Member, MemberStatus, NotFoundError, SessionPart, SessionRecord
from kilo_account_api.ports import MemberStore, SessionHistory
from kilo_billing.account_store import DynamoAccountDirectory
from kilo_billing.accounts import AccountProfile
from kilo_billing.auth import Role
from kilo_billing.items import to_item
from kilo_billing.month_to_date import MonthToDateSource, OpenSessionFigures
from kilo_billing.month_to_date_store import DynamoMonthToDate
from kilo_billing.rating import TierChange
from kilo_billing.usage_signals_store import DynamoUsageSignals
from kilo_rate_usage.items import session_to_item
from kilo_rate_usage.model import Billing, ClosedBy, PeriodPart, Session, StoredSession
from tests.account_api_fakes import InMemoryMembers, InMemoryMonthToDate, InMemorySessionHistory
from tests.conftest import Stack
from tests.fakes import InMemoryAccountDirectory

ADDED = datetime(2026, 11, 2, 8, tzinfo=UTC)


def ms(*parts: int) -> int:
    return int(datetime(*parts, tzinfo=UTC).timestamp() * 1000)  # type: ignore[misc]


def rating_session(
    room: str,
    participant: str,
    identity: str,
    account: str,
    start: int,
    end: int | None,
    parts: list[tuple[str, int, int]],
) -> Session:
    return Session(
        room_sid=room,
        participant_sid=participant,
        identity=identity,
        kind="STANDARD",
        account=account,
        start_ms=start,
        end_ms=end,
        closed_by=ClosedBy.LEFT if end is not None else None,
        aborted=False,
        billing=Billing.ROOM_RULE,
        connected_seconds=Fraction(((end or start) - start) // 1000),
        video_seconds=Fraction(90),
        parts=tuple(PeriodPart(period, start, video, audio) for period, video, audio in parts),
        video_active=end is None,
        as_of_ms=start + 1000,
        room_name=f"name-{room}",
    )


SESSIONS = [
    rating_session("RM_1", "PA_1", "alice", "acct", ms(2026, 11, 2, 9), ms(2026, 11, 2, 10), [("2026-11", 60, 0)]),
    # across the month end: October's part and November's
    rating_session(
        "RM_2",
        "PA_2",
        "bob",
        "acct",
        ms(2026, 10, 31, 23),
        ms(2026, 11, 1, 1),
        [("2026-10", 60, 0), ("2026-11", 0, 60)],
    ),
    rating_session("RM_3", "PA_3", "carol", "acct", ms(2026, 10, 5, 9), ms(2026, 10, 5, 10), [("2026-10", 0, 60)]),
    rating_session("RM_4", "PA_4", "dave", "acct", ms(2026, 11, 15, 11), None, []),  # open
    rating_session("RM_5", "PA_5", "erin", "other", ms(2026, 11, 3, 9), ms(2026, 11, 3, 10), [("2026-11", 5, 0)]),
]


def record_of(found: Session) -> SessionRecord:
    return SessionRecord(
        room_sid=found.room_sid,
        participant_sid=found.participant_sid,
        identity=found.identity,
        room_name=found.room_name,
        start_ms=found.start_ms,
        end_ms=found.end_ms,
        aborted=found.aborted,
        billing=found.billing.value,
        parts=tuple(SessionPart(p.period, p.start_ms, p.video, p.audio) for p in found.parts),
        video_seconds=found.video_seconds,
        connected_seconds=found.connected_seconds,
    )


@pytest.fixture(params=["fake", "dynamodb"])
def history(request: pytest.FixtureRequest) -> SessionHistory:
    if request.param == "fake":
        fake = InMemorySessionHistory()
        for found in SESSIONS:
            fake.add(found.account, record_of(found))
        return fake
    stack: Stack = request.getfixturevalue("stack")
    table = stack.template.physical_name("UsageTable")
    for found in SESSIONS:
        stack.clients["dynamodb"].put_item(TableName=table, Item=session_to_item(StoredSession.of(found, {})))
    return DynamoSessionHistory(stack.clients["dynamodb"], table, timedelta(days=35))


def keys(found: list[SessionRecord]) -> list[tuple[str, str]]:
    return sorted((s.room_sid, s.participant_sid) for s in found)


def test_given_sessions_then_a_period_holds_those_with_minutes_in_it_and_the_open_ones(history: SessionHistory) -> None:
    november = history.sessions("acct", "2026-11")
    assert keys(november) == [("RM_1", "PA_1"), ("RM_2", "PA_2"), ("RM_4", "PA_4")]
    by_room = {s.room_sid: s for s in november}
    assert by_room["RM_2"].minutes_in("2026-11") == (0, 60)
    assert by_room["RM_2"].minutes_in("2026-10") == (60, 0)
    assert (by_room["RM_4"].is_open, by_room["RM_1"].room_name, by_room["RM_1"].identity) == (
        True,
        "name-RM_1",
        "alice",
    )
    assert by_room["RM_1"] == record_of(SESSIONS[0])
    assert keys(list(history.all_sessions("acct"))) == [
        ("RM_1", "PA_1"), ("RM_2", "PA_2"), ("RM_3", "PA_3"), ("RM_4", "PA_4")
    ]  # fmt: skip


def test_given_sessions_then_pages_from_a_start_time_hold_them_in_start_order(history: SessionHistory) -> None:
    """acct's four by start: RM_3 Oct 5 09:00, RM_2 Oct 31 23:00, RM_1 Nov 2 09:00, RM_4 Nov 15 11:00 (erin's RM_5
    is another account's). By two: [RM_3, RM_2] then from Nov 2 09:00 [RM_1, RM_4] and nothing left (2 + 2 = 4);
    from just after RM_4's start, none (D372)."""
    first = history.sessions_from("acct", 0, 2)
    assert ([s.room_sid for s in first.sessions], first.next_start_ms) == (["RM_3", "RM_2"], ms(2026, 11, 2, 9))
    assert first.sessions[0] == record_of(SESSIONS[2])
    second = history.sessions_from("acct", ms(2026, 11, 2, 9), 2)
    assert ([s.room_sid for s in second.sessions], second.next_start_ms) == (["RM_1", "RM_4"], None)
    after = history.sessions_from("acct", ms(2026, 11, 15, 11) + 1, 2)
    assert (after.sessions, after.next_start_ms) == ((), None)


def x_pseudonym(value: str) -> str:
    """A pseudonym as the port needs one: a pseudonym maps to itself."""
    return value if value.startswith("x-") else f"x-{value}"


MARK = datetime(2026, 11, 20, tzinfo=UTC)  # after every session of SESSIONS began


def test_given_a_pseudonym_then_every_identity_of_the_account_changes_and_no_other(history: SessionHistory) -> None:
    assert history.pseudonymise("acct", x_pseudonym, MARK) == 4
    assert sorted(s.identity for s in history.all_sessions("acct")) == ["x-alice", "x-bob", "x-carol", "x-dave"]
    assert [s.identity for s in history.all_sessions("other")] == ["erin"]
    assert history.pseudonymise("acct", x_pseudonym, MARK) == 0


def test_given_an_erasure_mark_then_only_sessions_begun_before_it_change(history: SessionHistory) -> None:
    """Rating's bound (``start_ms`` < the mark): dave's call began at the mark exactly and is new data (D80)."""
    assert history.pseudonymise("acct", x_pseudonym, datetime(2026, 11, 15, 11, tzinfo=UTC)) == 3
    assert sorted(s.identity for s in history.all_sessions("acct")) == ["dave", "x-alice", "x-bob", "x-carol"]


@pytest.fixture(params=["fake", "dynamodb"])
def members(request: pytest.FixtureRequest) -> MemberStore:
    if request.param == "fake":
        return InMemoryMembers()
    stack: Stack = request.getfixturevalue("stack")
    return DynamoMembers(stack.clients["dynamodb"], stack.template.physical_name("MembersTable"))


def test_given_members_then_add_list_remove_and_pseudonymise_keep_the_contract(members: MemberStore) -> None:
    olga = Member("acct", "olga", "olga@a.example", Role.OWNER, ADDED)
    mia = Member("acct", "mia", "mia@a.example", Role.MEMBER, ADDED)
    members.add(olga)
    members.add(mia)
    members.add(Member("other", "olga", "olga@b.example", Role.ADMIN, ADDED))
    with pytest.raises(ConflictError):
        members.add(Member("acct", "mia", "", Role.ADMIN, ADDED))
    assert sorted(members.members("acct"), key=lambda m: m.user) == [mia, olga]
    # a user's memberships across accounts, in account order (sign-in picks one)
    assert [(m.account_id, m.role) for m in members.accounts_of("olga")] == [
        ("acct", Role.OWNER),
        ("other", Role.ADMIN),
    ]
    assert members.accounts_of("nobody") == []
    members.remove("acct", "mia")
    with pytest.raises(NotFoundError):
        members.remove("acct", "mia")
    assert members.pseudonymise("acct", lambda value: f"x-{value}") == 1
    assert [(m.user, m.email) for m in members.members("acct")] == [("olga", "x-olga@a.example")]
    assert [m.email for m in members.members("other")] == ["olga@b.example"]


def test_given_two_owners_removing_each_other_at_once_then_one_owner_remains(members: MemberStore) -> None:
    """Both removals read two owners; each is then made keeping the other: the first goes through, the second finds
    its kept owner gone and is refused - the account is never left without an owner (D77)."""
    alice = Member("acct", "alice", "", Role.OWNER, ADDED)
    bob = Member("acct", "bob", "", Role.OWNER, ADDED)
    mia = Member("acct", "mia", "", Role.MEMBER, ADDED)
    for member in (alice, bob, mia):
        members.add(member)
    members.remove("acct", "bob", keeping_owner="alice")  # alice removes bob
    with pytest.raises(ConflictError, match="owners changed"):
        members.remove("acct", "alice", keeping_owner="bob")  # bob's removal of alice, read before his own went
    assert sorted(m.user for m in members.members("acct")) == ["alice", "mia"]
    with pytest.raises(ConflictError):  # a member is not an owner to keep either
        members.remove("acct", "alice", keeping_owner="mia")
    with pytest.raises(NotFoundError):
        members.remove("acct", "bob")
    assert sorted(m.user for m in members.members("acct")) == ["alice", "mia"]


def test_given_an_invitation_then_accept_decline_expiry_and_replacement_keep_the_contract(members: MemberStore) -> None:
    """An invitation (``INVITED``, ending a week after ``ADDED``) is stored beside memberships: it is accepted only
    while open (then a membership from the acceptance, its end gone), declined only while it is one, and an ended
    one is replaced by a new invitation; an open one or a membership is not."""
    ends = ADDED + timedelta(days=7)
    invited = Member("acct", "ivan", "ivan@a.example", Role.ADMIN, ADDED, MemberStatus.INVITED, ends)
    members.add(invited)
    assert members.members("acct") == [invited]
    assert members.accounts_of("ivan") == [invited]  # read back whole: status and end included
    with pytest.raises(ConflictError):  # an open invitation is not replaced
        members.add(replace(invited, role=Role.OWNER, added_at=ends - timedelta(seconds=1)))
    with pytest.raises(NotFoundError):  # ended: 2026-.. + 7 days exactly is no longer open
        members.accept("acct", "ivan", ends)
    again = Member("acct", "ivan", "", Role.MEMBER, ends, MemberStatus.INVITED, ends + timedelta(days=7))
    members.add(again)  # the ended invitation is replaced
    accepted_at = ends + timedelta(hours=1)
    accepted = members.accept("acct", "ivan", accepted_at)
    assert accepted == Member("acct", "ivan", "", Role.MEMBER, accepted_at)  # active, no end
    assert members.members("acct") == [accepted]
    assert (members.member("acct", "ivan"), members.member("acct", "nina"), members.member("other", "ivan")) == (
        accepted,
        None,
        None,
    )
    with pytest.raises(NotFoundError):  # accepted already
        members.accept("acct", "ivan", accepted_at)
    with pytest.raises(NotFoundError):  # a membership is not an invitation to decline
        members.decline("acct", "ivan")
    with pytest.raises(ConflictError):  # nor replaced by one
        members.add(
            replace(again, added_at=accepted_at + timedelta(days=30), expires_at=accepted_at + timedelta(days=37))
        )
    members.add(Member("acct", "nina", "", Role.MEMBER, ADDED, MemberStatus.INVITED, ends))
    members.decline("acct", "nina")
    assert [m.user for m in members.members("acct")] == ["ivan"]
    with pytest.raises(NotFoundError):
        members.decline("acct", "nina")


def test_given_an_invitation_then_a_withdrawal_deletes_it_only_while_it_is_one(members: MemberStore) -> None:
    """A withdrawal deletes an invitation (open or ended); once accepted it is refused (``ConflictError``: the
    membership stays, removed only with a removal's rules); nothing there is ``NotFoundError`` (D207)."""
    ends = ADDED + timedelta(days=7)
    members.add(Member("acct", "ivan", "", Role.OWNER, ADDED, MemberStatus.INVITED, ends))
    members.add(Member("acct", "nina", "", Role.MEMBER, ADDED, MemberStatus.INVITED, ends))
    accepted = members.accept("acct", "ivan", ADDED + timedelta(hours=1))
    with pytest.raises(ConflictError, match="accepted"):
        members.withdraw("acct", "ivan")
    members.withdraw("acct", "nina")
    assert members.members("acct") == [accepted]
    with pytest.raises(NotFoundError):
        members.withdraw("acct", "nina")


def test_given_an_invitation_to_be_owner_then_it_is_no_owner_to_keep(members: MemberStore) -> None:
    """Removing the last active owner while another user is only invited as owner is refused in the atomic step too."""
    members.add(Member("acct", "alice", "", Role.OWNER, ADDED))
    ends = ADDED + timedelta(days=7)
    members.add(Member("acct", "bob", "", Role.OWNER, ADDED, MemberStatus.INVITED, ends))
    with pytest.raises(ConflictError, match="owners changed"):
        members.remove("acct", "alice", keeping_owner="bob")
    assert sorted(m.user for m in members.members("acct")) == ["alice", "bob"]


PROFILE = AccountProfile("acct", (TierChange(datetime(2026, 1, 1, tzinfo=UTC), "team"),))
SEGMENT = int(datetime(2026, 11, 1, tzinfo=UTC).timestamp())


@pytest.fixture(params=["fake", "dynamodb"])
def month(request: pytest.FixtureRequest) -> MonthToDateSource:
    counters = {(SEGMENT, "video"): 60, (SEGMENT, "messages"): 7}
    if request.param == "fake":
        fake = InMemoryMonthToDate(InMemoryAccountDirectory(PROFILE), {("acct", "2026-11"): counters})
        fake.open.extend(figures_of(found) for found in SESSIONS if found.end_ms is None)
        return fake
    stack: Stack = request.getfixturevalue("stack")
    client, table = stack.clients["dynamodb"], stack.template.physical_name("UsageTable")
    directory = DynamoAccountDirectory(client, table)
    directory.register(PROFILE)
    item: dict[str, Any] = {"pk": "ACCOUNT#acct", "sk": "PERIOD#2026-11"}
    item |= {f"c#{segment}#{meter}": quantity for (segment, meter), quantity in counters.items()}
    client.put_item(TableName=table, Item=to_item(item))
    for found in SESSIONS:
        client.put_item(TableName=table, Item=session_to_item(StoredSession.of(found, {})))
    return DynamoMonthToDate(client, table, directory, DynamoUsageSignals(client, table))


def figures_of(found: Session) -> OpenSessionFigures:
    """The open session as the month to date should give it, field by field (written apart from rating's own)."""
    return OpenSessionFigures(
        room_sid=found.room_sid,
        participant_sid=found.participant_sid,
        account=found.account,
        start_ms=found.start_ms,
        billing=found.billing.value,
        video_seconds=found.video_seconds,
        video_active=found.video_active,
        as_of_ms=found.as_of_ms,
        identity=found.identity,
        room_name=found.room_name,
    )


def test_given_a_month_then_the_source_gives_profile_counters_and_open_sessions(month: MonthToDateSource) -> None:
    assert month.profile("acct") == PROFILE
    assert month.profile("nobody") is None
    assert month.counters("acct", "2026-11") == {(SEGMENT, "video"): 60, (SEGMENT, "messages"): 7}
    assert month.counters("acct", "2026-10") == {}
    assert month.open_sessions("acct") == [figures_of(SESSIONS[3])]
    assert month.open_sessions("other") == []


def test_given_a_retired_participants_registers_then_erasure_pseudonymises_the_identity_inside_them(
    stack: Stack,
) -> None:
    """Rating keeps a retired participant's registers on its session item (rating's own ``registers_text``); the
    erasure replaces the identity there too, in rating's layout, so rating reads back the pseudonym (D80)."""
    from kilo_rate_usage.rooms import registers_from_text, registers_text  # noqa: PLC0415
    from kilo_rate_usage.sessions import ParticipantFold  # noqa: PLC0415

    client, table = stack.clients["dynamodb"], stack.template.physical_name("UsageTable")
    closed = SESSIONS[0]  # alice in RM_1
    registers = registers_text(ParticipantFold("PA_1", "alice", "STANDARD", "", {"team": "blue"}, 1, 2))
    client.put_item(TableName=table, Item=session_to_item(StoredSession(closed, {}, "v1", registers)))
    history = DynamoSessionHistory(client, table, timedelta(days=35))
    assert history.pseudonymise("acct", x_pseudonym, MARK) == 1
    item = client.get_item(TableName=table, Key=to_item({"pk": "ROOM#RM_1", "sk": "SESSION#PA_1"}))["Item"]
    assert item["identity"]["S"] == "x-alice"
    kept = registers_from_text(item["registers"]["S"])
    assert (kept.sid, kept.identity, kept.attributes, kept.joined_ms, kept.left_s) == (
        "PA_1",
        "x-alice",
        {"team": "blue"},
        1,
        2,
    )
