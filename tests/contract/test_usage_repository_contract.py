"""One contract, two implementations of rating's storage (``kilo_rate_usage.ports.UsageRepository`` and
``SweeperStore``): the in-memory fake of tests/fakes.py and the DynamoDB adapter on moto (tables from the template).

What the logic relies on: reads are exact round trips, every write is conditional as documented (a stale session
version, a usage event marked twice or never stored, a threshold recorded twice -> ``ConflictError``), a commit lands
transaction by transaction - a crash between two leaves the first whole and nothing of the second - and a write
DynamoDB refuses for good is ``RejectedWriteError``, not a conflict."""

from __future__ import annotations

from collections.abc import Callable, Iterator
from dataclasses import dataclass, replace
from datetime import UTC, datetime
from fractions import Fraction
from typing import Any

import pytest

from kilo_billing.account_store import DynamoAccountDirectory
from kilo_billing.accounts import AccountProfile
from kilo_billing.livekit_events import LiveKitEventRecord
from kilo_billing.rating import TierChange
from kilo_billing.usage_events import UsageEventRecord
from kilo_rate_usage.adapters import DynamoUsageRepository
from kilo_rate_usage.items import MAX_STATE_BYTES, confirmation_item, participant_to_item
from kilo_rate_usage.model import (
    SWEPT,
    Billing,
    ClosedBy,
    ContributionKey,
    GiveUpClaim,
    ListedParticipant,
    PeriodPart,
    RoomListing,
    Session,
    StoredSession,
    SweptRoom,
)
from kilo_rate_usage.ports import (
    CommitUnit,
    ConflictError,
    RejectedWriteError,
    SessionChange,
    StateChange,
    UsageChange,
)
from kilo_rate_usage.rooms import RoomState, from_events, registers_from_text, registers_text
from kilo_rate_usage.sessions import ParticipantFold, fold_events
from kilo_rate_usage.sweeper import close_event, listed_join
from tests.conftest import Stack
from tests.fakes import InMemoryUsageRepository

NOV_16 = 1_794_787_200  # 2026-11-16T00:00:00Z
NOV_1 = 1_793_491_200  # 2026-11-01T00:00:00Z: the segment start of an account on one tier all month
NOW_MS = (NOV_16 + 3600) * 1000
EXPIRES = NOV_16 + 400 * 86_400


@dataclass
class Harness:
    repo: Any  # UsageRepository and SweeperStore
    store_event: Callable[[LiveKitEventRecord | UsageEventRecord], None]
    mark_invoiced: Callable[[str, str], None]
    register: Callable[[AccountProfile], None]
    crash_after: Callable[[int | None], None]  # the next commits die after this many transactions (None: no more)
    refuse_room: Callable[[str], None]  # DynamoDB refuses the room's session items for good
    legacy_confirm: Callable[[tuple[str, str], int], None]  # a confirmation the sweeper wrote before the listings
    listing_expiry: Callable[[str], int]  # when a room's recorded listing expires (epoch seconds)
    register_again: Callable[[AccountProfile], None]  # save a registered profile (the account API's erasure mark)
    generations: Callable[[str], set[str]]  # the generations of the room's stored participant items
    put_participant: Callable[[str, str, ParticipantFold], None]  # a participant item, as another writer's


@pytest.fixture(params=["fake", "dynamodb"])
def harness(request: pytest.FixtureRequest) -> Iterator[Harness]:
    if request.param == "fake":
        fake = InMemoryUsageRepository()

        def crash(count: int | None) -> None:
            fake.crash_after_transactions = count

        def fake_generations(room: str) -> set[str]:
            return {generation for (r, generation), stored in fake.participants.items() if r == room and stored}

        def fake_put(room: str, generation: str, participant: ParticipantFold) -> None:
            fake.participants.setdefault((room, generation), {})[participant.sid] = participant

        yield Harness(
            fake, fake.store_event, lambda a, p: fake.invoiced.add((a, p)), fake.accounts.register, crash,
            fake.refused_rooms.add, fake.confirmed.__setitem__, fake.listing_expiry.__getitem__, fake.accounts.save,
            fake_generations, fake_put,
        )  # fmt: skip
        return
    stack: Stack = request.getfixturevalue("stack")
    client = stack.clients["dynamodb"]
    usage_table, events_table = (stack.template.physical_name(n) for n in ("UsageTable", "EventsTable"))
    repo = DynamoUsageRepository(client, usage_table, events_table)

    def store_event(record: LiveKitEventRecord | UsageEventRecord) -> None:
        client.put_item(TableName=events_table, Item=record.to_item(EXPIRES))

    def mark_invoiced(account: str, period: str) -> None:  # what invoicing does when it closes a period
        client.update_item(
            TableName=usage_table,
            Key={"pk": {"S": f"ACCOUNT#{account}"}, "sk": {"S": f"PERIOD#{period}"}},
            UpdateExpression="SET invoiced_at = :t",
            ExpressionAttributeValues={":t": {"N": str(NOW_MS)}},
        )

    hooks: list[Callable[..., None]] = []

    def crash(count: int | None) -> None:
        for hook in hooks:
            client.meta.events.unregister("before-call.dynamodb.TransactWriteItems", hook)
        if count is None:
            return
        calls = {"n": 0}

        def hook(**_: Any) -> None:
            calls["n"] += 1
            if calls["n"] > count:
                raise RuntimeError(f"simulated crash after {count} transaction(s) of the commit")

        client.meta.events.register("before-call.dynamodb.TransactWriteItems", hook)
        hooks.append(hook)

    def refuse_room(room_sid: str) -> None:
        from botocore.exceptions import ClientError  # noqa: PLC0415

        def hook(params: dict[str, Any], **_: Any) -> None:
            items = params.get("TransactItems", [])
            if any(item.get("Put", {}).get("Item", {}).get("pk") == {"S": f"ROOM#{room_sid}"} for item in items):
                reasons = [{"Code": "ValidationError", "Message": "Item size has exceeded the maximum allowed size"}]
                reasons += [{"Code": "None"}] * (len(items) - 1)
                error = {"Error": {"Code": "TransactionCanceledException", "Message": "Transaction cancelled"},
                         "CancellationReasons": reasons}  # fmt: skip
                raise ClientError(error, "TransactWriteItems")  # DynamoDB's answer, as botocore raises it

        client.meta.events.register("provide-client-params.dynamodb.TransactWriteItems", hook)

    def legacy_confirm(key: tuple[str, str], at_ms: int) -> None:
        client.put_item(TableName=usage_table, Item=confirmation_item(key, at_ms))

    def listing_expiry(room_sid: str) -> int:
        item = client.get_item(TableName=usage_table, Key={"pk": {"S": f"ROOM#{room_sid}"}, "sk": {"S": "LISTED"}})
        return int(item["Item"]["expires_at"]["N"])

    def generations(room: str) -> set[str]:
        found = client.query(
            TableName=usage_table, KeyConditionExpression="pk = :pk AND begins_with(sk, :part)",
            ExpressionAttributeValues={":pk": {"S": f"ROOM#{room}"}, ":part": {"S": "PART#"}},
        )["Items"]  # fmt: skip
        return {item["sk"]["S"].split("#")[1] for item in found}

    def put_participant(room: str, generation: str, participant: ParticipantFold) -> None:
        client.put_item(TableName=usage_table, Item=participant_to_item(room, generation, participant))

    yield Harness(
        repo, store_event, mark_invoiced, DynamoAccountDirectory(client, usage_table).register, crash, refuse_room,
        legacy_confirm, listing_expiry, DynamoAccountDirectory(client, usage_table).save, generations,
        put_participant,
    )  # fmt: skip


def session(room: str, sid: str, account: str = "acct-a", audio: int = 2, *, open_: bool = False) -> StoredSession:
    start = (NOV_16 + 10) * 1000
    contributions: dict[ContributionKey, int] = {} if open_ else {(account, "2026-11", NOV_1, "audio"): audio}
    value = Session(
        room_sid=room, participant_sid=sid, identity=f"id-{sid}", kind="STANDARD", account=account,
        start_ms=start, end_ms=None if open_ else start + audio * 60_000 - 500,
        closed_by=None if open_ else ClosedBy.LEFT, aborted=False, billing=Billing.ROOM_RULE,
        connected_seconds=Fraction(0 if open_ else audio * 60_000 - 500, 1000), video_seconds=Fraction(7, 3),
        parts=() if open_ else (PeriodPart("2026-11", start, 0, audio),), video_active=open_,
        as_of_ms=start + 5_000 if open_ else 0, room_name=f"name-{room}",
    )  # fmt: skip
    return StoredSession.of(value, contributions)


def new(stored: StoredSession) -> SessionChange:
    return SessionChange(stored, None, dict(stored.contributions))


def usage(key: str, quantity: int, account: str = "acct-a") -> UsageEventRecord:
    at = (NOV_16 + 60) * 1000
    return UsageEventRecord("kilo-app", key, account, "messages", quantity, at, f"h-{key}", at)


def livekit(event_id: str, room: str, at: int) -> LiveKitEventRecord:
    return LiveKitEventRecord(event_id, "participant_joined", at, "APIkey", b'{"id":"x"}', at * 1000, room_sid=room,
                              room_name=f"name-{room}", participant_sid=f"PA_{event_id}", joined_at_ms=at * 1000)  # fmt: skip


def test_given_stored_events_then_a_room_reads_back_exactly_its_own(harness: Harness) -> None:
    mine = [livekit("EV_1", "RM_a", NOV_16), livekit("EV_2", "RM_a", NOV_16 + 5)]
    for event in [*mine, livekit("EV_3", "RM_b", NOV_16)]:
        harness.store_event(event)
    assert sorted(harness.repo.room_events("RM_a"), key=lambda e: e.event_id) == mine
    assert harness.repo.room_events("RM_none") == []


def test_given_a_committed_session_then_it_reads_back_exactly_and_counts_on_its_aggregate(harness: Harness) -> None:
    stored = session("RM_a", "PA_1", audio=3)
    written = harness.repo.commit(CommitUnit(sessions=[new(stored)]), NOW_MS)
    assert written == 2  # the session and one aggregate
    assert harness.repo.stored_sessions("RM_a") == {"PA_1": stored}
    aggregate = harness.repo.aggregates([("acct-a", "2026-11")])[("acct-a", "2026-11")]
    assert (aggregate.counters, aggregate.late, aggregate.thresholds, aggregate.invoiced) == (
        {(NOV_1, "audio"): 3},
        {},
        set(),
        False,
    )


def test_given_a_stale_or_missing_version_then_conflict_and_nothing_of_the_transaction_is_written(
    harness: Harness,
) -> None:
    first = session("RM_a", "PA_1", audio=3)
    harness.repo.commit(CommitUnit(sessions=[new(first)]), NOW_MS)
    longer = session("RM_a", "PA_1", audio=5)
    with pytest.raises(ConflictError):  # written as if never stored, but it is
        harness.repo.commit(CommitUnit(sessions=[new(longer)]), NOW_MS)
    with pytest.raises(ConflictError):  # a version that is not the stored one
        harness.repo.commit(CommitUnit(sessions=[SessionChange(longer, "stale", {})]), NOW_MS)
    assert harness.repo.stored_sessions("RM_a") == {"PA_1": first}
    delta = {("acct-a", "2026-11", NOV_1, "audio"): 2}
    harness.repo.commit(CommitUnit(sessions=[SessionChange(longer, first.version, delta)]), NOW_MS)
    assert harness.repo.stored_sessions("RM_a") == {"PA_1": longer}
    assert harness.repo.aggregates([("acct-a", "2026-11")])[("acct-a", "2026-11")].totals() == {"audio": 5}


def test_given_usage_events_then_each_is_marked_once_and_only_when_stored(harness: Harness) -> None:
    stored, unstored = usage("m-1", 120), usage("m-2", 30)
    harness.store_event(stored)
    key: ContributionKey = ("acct-a", "2026-11", NOV_1, "messages")
    assert harness.repo.unrated_usage([stored, stored]) == [stored]
    harness.repo.commit(CommitUnit(usage=[UsageChange(stored, key)]), NOW_MS)
    assert harness.repo.unrated_usage([stored]) == []
    with pytest.raises(ConflictError):
        harness.repo.commit(CommitUnit(usage=[UsageChange(stored, key)]), NOW_MS)
    with pytest.raises(ConflictError):
        harness.repo.commit(CommitUnit(usage=[UsageChange(unstored, key)]), NOW_MS)
    assert harness.repo.aggregates([("acct-a", "2026-11")])[("acct-a", "2026-11")].totals() == {"messages": 120}


def test_given_an_invoiced_period_then_additions_also_count_as_late(harness: Harness) -> None:
    harness.repo.commit(CommitUnit(sessions=[new(session("RM_a", "PA_1", audio=3))]), NOW_MS)
    harness.mark_invoiced("acct-a", "2026-11")
    unit = CommitUnit(sessions=[new(session("RM_a", "PA_2", audio=4))], late={("acct-a", "2026-11")})
    harness.repo.commit(unit, NOW_MS)
    aggregate = harness.repo.aggregates([("acct-a", "2026-11")])[("acct-a", "2026-11")]
    assert (aggregate.totals(), aggregate.late, aggregate.invoiced) == ({"audio": 7}, {"audio": 4}, True)


def test_given_thresholds_then_each_marker_is_recorded_once(harness: Harness) -> None:
    harness.repo.add_thresholds("acct-a", "2026-11", ["audio#50", "budget#50"])
    with pytest.raises(ConflictError):
        harness.repo.add_thresholds("acct-a", "2026-11", ["audio#50", "audio#80"])
    harness.repo.add_thresholds("acct-a", "2026-11", ["audio#80"])
    assert harness.repo.aggregates([("acct-a", "2026-11")])[("acct-a", "2026-11")].thresholds == {
        "audio#50", "budget#50", "audio#80"
    }  # fmt: skip


def test_given_open_and_closed_sessions_then_only_open_ones_are_listed_by_account(harness: Harness) -> None:
    alice, bob = session("RM_a", "PA_1", open_=True), session("RM_b", "PA_2", "acct-b", open_=True)
    harness.repo.commit(CommitUnit(sessions=[new(alice), new(bob), new(session("RM_a", "PA_3"))]), NOW_MS)
    assert sorted(s.session.participant_sid for s in harness.repo.open_sessions()) == ["PA_1", "PA_2"]
    assert harness.repo.open_sessions("acct-b") == [bob]
    closed = session("RM_b", "PA_2", "acct-b")
    harness.repo.commit(CommitUnit(sessions=[SessionChange(closed, bob.version, dict(closed.contributions))]), NOW_MS)
    assert harness.repo.open_sessions("acct-b") == []


def test_given_registered_and_unknown_accounts_then_profiles_has_only_the_registered_one(harness: Harness) -> None:
    team = AccountProfile("acct-t", (TierChange(datetime(2026, 3, 1, tzinfo=UTC), "team"),))
    harness.register(team)
    # an unregistered id is absent, not a free default: rating tells the two apart (D276)
    assert harness.repo.profiles(["acct-t", "acct-new"]) == {"acct-t": team}


def test_given_a_crash_between_two_transactions_then_the_first_is_whole_and_the_second_absent(harness: Harness) -> None:
    sessions = [session("RM_busy", f"PA_{i:03d}") for i in range(120)]  # 120 sessions -> 99 + 21 in two transactions
    harness.crash_after(1)
    with pytest.raises(RuntimeError, match="after 1 transaction"):
        harness.repo.commit(CommitUnit(sessions=[new(s) for s in sessions]), NOW_MS)
    stored = harness.repo.stored_sessions("RM_busy")
    assert sorted(stored) == [f"PA_{i:03d}" for i in range(99)]
    # the aggregate moved with exactly the sessions that landed: 99 x 2 = 198 audio
    assert harness.repo.aggregates([("acct-a", "2026-11")])[("acct-a", "2026-11")].totals() == {"audio": 198}


def test_given_a_write_dynamodb_refuses_then_rejected_not_a_conflict_and_nothing_written(harness: Harness) -> None:
    harness.refuse_room("RM_huge")
    with pytest.raises(RejectedWriteError):
        harness.repo.commit(
            CommitUnit(sessions=[new(session("RM_huge", "PA_1")), new(session("RM_ok", "PA_2"))]), NOW_MS
        )
    assert harness.repo.stored_sessions("RM_huge") == {}
    assert harness.repo.stored_sessions("RM_ok") == {}
    assert harness.repo.aggregates([("acct-a", "2026-11")])[("acct-a", "2026-11")].totals() == {}


def test_given_sweeper_writes_then_old_confirmations_read_back_and_a_close_is_stored_once(harness: Harness) -> None:
    harness.legacy_confirm(("RM_a", "PA_1"), NOW_MS + 1)  # written by the sweeper before the listings
    harness.legacy_confirm(("RM_b", "PA_2"), NOW_MS)
    assert harness.repo.confirmations([("RM_a", "PA_1"), ("RM_b", "PA_2"), ("RM_c", "PA_3")]) == {
        ("RM_a", "PA_1"): NOW_MS + 1,
        ("RM_b", "PA_2"): NOW_MS,
    }
    close = close_event(session("RM_a", "PA_1", open_=True).session, SWEPT, NOV_16, NOW_MS)  # the sweeper's own
    assert harness.repo.add_close(close, EXPIRES) is True
    assert harness.repo.add_close(close, EXPIRES) is False
    assert harness.repo.room_events("RM_a") == [close]


def test_given_stored_events_then_each_room_s_latest_created_at_reads_back_and_rooms_without_events_are_absent(
    harness: Harness,
) -> None:
    # the sort key is the event id: the latest createdAt is neither the first nor the last item of the partition
    for event in [livekit("EV_b", "RM_last", NOV_16 + 700), livekit("EV_a", "RM_last", NOV_16),
                  livekit("EV_c", "RM_last", NOV_16 + 60), livekit("EV_d", "RM_other", NOV_16 + 900)]:  # fmt: skip
        harness.store_event(event)
    assert harness.repo.last_event_ms(["RM_last", "RM_none"]) == {"RM_last": (NOV_16 + 700) * 1000}
    assert harness.repo.last_event_ms([]) == {}


def test_given_a_room_s_events_written_out_of_order_then_its_latest_is_one_item_read_from_the_time_index(
    stack: Stack,
) -> None:
    """D197: the latest createdAt comes from the events table's ``room_events_by_time`` index, newest first, Limit 1:
    one Query per room that reads one item, whatever the room's size (before: its whole partition, every event)."""
    client = stack.clients["dynamodb"]
    usage_table, events_table = (stack.template.physical_name(n) for n in ("UsageTable", "EventsTable"))
    repo = DynamoUsageRepository(client, usage_table, events_table)
    # written in neither createdAt nor id order; the latest (700 s) has neither the first nor the last id
    for event_id, at in [("EV_m", 700), ("EV_a", 0), ("EV_z", 60), ("EV_c", 699), ("EV_b", 5), ("EV_y", 700 - 1)]:
        client.put_item(TableName=events_table, Item=livekit(event_id, "RM_big", NOV_16 + at).to_item(EXPIRES))
    client.put_item(TableName=events_table, Item=livekit("EV_n", "RM_next", NOV_16 + 900).to_item(EXPIRES))
    pages: list[tuple[int, int]] = []

    def seen(parsed: dict[str, Any], **_: Any) -> None:
        pages.append((parsed["Count"], parsed["ScannedCount"]))

    client.meta.events.register("after-call.dynamodb.Query", seen)
    assert repo.last_event_ms(["RM_big"]) == {"RM_big": (NOV_16 + 700) * 1000}
    assert pages == [(1, 1)]  # one request, one item read (before: (6, 6))


def test_given_sweeper_listings_then_the_latest_per_room_reads_back_and_other_rooms_are_absent(
    harness: Harness,
) -> None:
    harness.repo.record_listings(
        {"RM_a": RoomListing(NOW_MS, frozenset({"PA_1", "PA_2"})), "RM_b": RoomListing(NOW_MS, frozenset({"PA_3"}))},
        EXPIRES,
    )
    harness.repo.record_listings({"RM_a": RoomListing(NOW_MS + 300_000, frozenset({"PA_2"}))}, EXPIRES + 300)
    # the sweep before those, running late: its answers replace neither the newer one nor the one of its own time
    harness.repo.record_listings(
        {"RM_a": RoomListing(NOW_MS - 300_000, frozenset({"PA_1"})), "RM_b": RoomListing(NOW_MS, frozenset({"PA_4"}))},
        EXPIRES - 300,
    )
    assert harness.repo.room_listings(["RM_a", "RM_b", "RM_c"]) == {
        "RM_a": RoomListing(NOW_MS + 300_000, frozenset({"PA_2"})),
        "RM_b": RoomListing(NOW_MS, frozenset({"PA_3"})),
    }
    assert (harness.listing_expiry("RM_a"), harness.listing_expiry("RM_b")) == (EXPIRES + 300, EXPIRES)
    assert harness.repo.room_listings([]) == {}
    # a listing lives beside the room's sessions without being read as one
    assert harness.repo.stored_sessions("RM_a") == {}


def joined(event_id: str, room: str, sid: str, at: int, metadata: str = "") -> LiveKitEventRecord:
    return LiveKitEventRecord(event_id, "participant_joined", at, "APIkey", b"", at * 1000, room_sid=room,
                              room_name=f"name-{room}", participant_sid=sid, participant_identity=f"id-{sid}",
                              participant_metadata=metadata, joined_at_ms=at * 1000)  # fmt: skip


def test_given_room_states_then_each_reads_back_whole_and_is_written_only_on_the_version_read(harness: Harness) -> None:
    events = [joined("EV_1", "RM_s", "PA_1", NOV_16), joined("EV_2", "RM_s", "PA_2", NOV_16 + 30)]
    first = from_events("RM_s", events)
    assert harness.repo.room_state("RM_s") is None
    assert harness.repo.commit(CommitUnit(states=[whole(first, 0)]), NOW_MS) == 2  # the header and PA_1's item
    stored = harness.repo.room_state("RM_s")
    assert stored == first
    assert stored.version == 1
    assert stored.usable
    assert not stored.complete  # the header alone
    assert stored.fold.participants == {}
    assert [event.event_id for event in stored.recent] == ["EV_2"]  # the window's events, bodies dropped
    assert harness.repo.room_states(["RM_s", "RM_none"]) == {"RM_s": first}
    everyone = harness.repo.room_participants("RM_s", stored.generation, None)
    assert everyone == first.fold.participants  # PA_1 (PA_2 joined inside the window: its registers are the event)
    assert everyone["PA_1"].joined_ms == NOV_16 * 1000
    assert harness.repo.room_participants("RM_s", stored.generation, ["PA_1", "PA_9"]) == everyone
    assert harness.repo.room_participants("RM_s", stored.generation, ["PA_9"]) == {}

    second = from_events("RM_s", [*events, joined("EV_3", "RM_s", "PA_3", NOV_16 + 60)])
    with pytest.raises(ConflictError):  # written as if there were none
        harness.repo.commit(CommitUnit(states=[in_place(second, 0, stored.generation)]), NOW_MS)
    with pytest.raises(ConflictError):  # a version that is not the stored one, with a session: nothing written
        harness.repo.commit(
            CommitUnit(sessions=[new(session("RM_s", "PA_1"))], states=[in_place(second, 7, stored.generation)]),
            NOW_MS,
        )
    assert harness.repo.room_state("RM_s") == first
    assert harness.repo.room_participants("RM_s", stored.generation, None) == everyone
    assert harness.repo.stored_sessions("RM_s") == {}
    # in place: the header and the participant items that changed, in one transaction
    assert harness.repo.commit(CommitUnit(states=[in_place(second, 1, stored.generation)]), NOW_MS) == 3
    latest = harness.repo.room_state("RM_s")
    assert latest == second
    assert latest.version == 2
    assert latest.generation == stored.generation
    assert harness.repo.room_participants("RM_s", latest.generation, None) == second.fold.participants
    retired = StateChange(second, 2, {}, ("PA_1",), False, latest.generation)  # a participant retires: deleted
    assert harness.repo.commit(CommitUnit(states=[retired]), NOW_MS) == 2
    assert set(harness.repo.room_participants("RM_s", latest.generation, None)) == {"PA_2"}
    # a new generation (a rebuild): written whole, the old one deleted after the header moved to it
    assert harness.repo.commit(CommitUnit(states=[whole(second, 3, latest.generation)]), NOW_MS) == 1 + 2 + 1
    rebuilt_state = harness.repo.room_state("RM_s")
    assert rebuilt_state.generation != latest.generation
    assert harness.repo.room_participants("RM_s", rebuilt_state.generation, None) == second.fold.participants
    assert harness.repo.room_participants("RM_s", latest.generation, None) == {}


def test_given_a_quiet_room_s_state_then_dropping_it_leaves_version_cut_off_and_no_participant_only_on_the_version_read(
    harness: Harness,
) -> None:
    """D219: the sweeper's drop of a swept, quiet room's running state, and its marks of the rooms it swept."""
    events = [joined("EV_1", "RM_q", "PA_1", NOV_16), joined("EV_2", "RM_q", "PA_2", NOV_16 + 30)]
    harness.repo.commit(CommitUnit(states=[whole(from_events("RM_q", events), 0)]), NOW_MS)
    read = harness.repo.room_states(["RM_q"])["RM_q"]
    assert harness.repo.room_participants("RM_q", read.generation, None) != {}
    # a batch writes the header after the sweeper read it: the drop changes nothing
    harness.repo.commit(CommitUnit(states=[in_place(from_events("RM_q", events[:1]), 1, read.generation)]), NOW_MS)
    assert harness.repo.drop_room_state(read) is False
    current = harness.repo.room_states(["RM_q"])["RM_q"]
    assert (current.usable, current.version) == (True, 2)
    assert harness.repo.room_participants("RM_q", read.generation, None) != {}

    assert harness.repo.drop_room_state(current) is True
    dropped = harness.repo.room_state("RM_q")
    assert (dropped.usable, dropped.version, dropped.delivered_ms) == (False, 3, current.delivered_ms)
    assert harness.repo.room_participants("RM_q", current.generation, None) == {}
    assert harness.repo.drop_room_state(dropped) is True  # nothing left to drop: no write, no condition
    assert harness.repo.room_state("RM_q").version == 3

    assert harness.repo.swept_rooms() == {}
    harness.repo.mark_swept_rooms(["RM_q", "RM_r"], NOW_MS, EXPIRES)
    harness.repo.mark_swept_rooms(["RM_q"], NOW_MS + 300_000, EXPIRES + 300)  # swept again: the later mark
    assert harness.repo.swept_rooms() == {"RM_q": SweptRoom(NOW_MS + 300_000), "RM_r": SweptRoom(NOW_MS)}
    harness.repo.forget_swept_room("RM_q", NOW_MS)  # marked again since the mark read: kept
    harness.repo.mark_dropped_room("RM_q", SweptRoom(NOW_MS, 3), EXPIRES)  # likewise: the later mark stands
    assert harness.repo.swept_rooms() == {"RM_q": SweptRoom(NOW_MS + 300_000), "RM_r": SweptRoom(NOW_MS)}
    harness.repo.mark_dropped_room("RM_r", SweptRoom(NOW_MS, 3), EXPIRES)  # a drop's version kept on the mark
    harness.repo.mark_dropped_room("RM_none", SweptRoom(NOW_MS, 3), EXPIRES)  # no mark: none made
    assert harness.repo.swept_rooms() == {"RM_q": SweptRoom(NOW_MS + 300_000), "RM_r": SweptRoom(NOW_MS, 3)}
    harness.repo.forget_swept_room("RM_q", NOW_MS + 300_000)
    harness.repo.forget_swept_room("RM_none", NOW_MS)
    assert harness.repo.swept_rooms() == {"RM_r": SweptRoom(NOW_MS, 3)}
    assert harness.repo.stored_sessions("RM_r") == {}  # a mark is no session of the room


def test_given_join_less_marks_then_forget_and_renew_act_only_on_the_mark_read(harness: Harness) -> None:
    """D375 amended, D393: rating's marks of rooms holding a join-less participant; the sweeper forgets or renews a
    mark only if it is still the one it read (a batch that marked the room again since: that mark stands); a renewed
    mark is made at the sweep, so the next forget names that moment."""
    assert harness.repo.joinless_rooms() == {}
    harness.repo.mark_joinless_rooms(["RM_j", "RM_k"], NOW_MS, EXPIRES)
    harness.repo.mark_joinless_rooms(["RM_j"], NOW_MS + 300_000, EXPIRES + 300)  # marked again by a later batch
    harness.repo.renew_joinless_room("RM_j", NOW_MS, NOW_MS + 600_000, EXPIRES + 600)  # not the mark now: kept
    harness.repo.forget_joinless_room("RM_j", NOW_MS)  # likewise
    harness.repo.renew_joinless_room("RM_none", NOW_MS, NOW_MS + 600_000, EXPIRES + 600)  # no mark: none made
    assert harness.repo.joinless_rooms() == {"RM_j": NOW_MS + 300_000, "RM_k": NOW_MS}
    harness.repo.renew_joinless_room("RM_k", NOW_MS, NOW_MS + 600_000, EXPIRES + 600)
    assert harness.repo.joinless_rooms() == {"RM_j": NOW_MS + 300_000, "RM_k": NOW_MS + 600_000}
    harness.repo.forget_joinless_room("RM_k", NOW_MS)  # the mark read before the renewal: kept
    harness.repo.forget_joinless_room("RM_k", NOW_MS + 600_000)
    harness.repo.forget_joinless_room("RM_j", NOW_MS + 300_000)
    assert harness.repo.joinless_rooms() == {}


def test_given_a_rebuild_whose_header_is_refused_then_the_participant_items_of_its_generation_are_deleted(
    stack: Stack,
) -> None:
    """A rebuild writes its new generation's participant items before the transactions; when its header's
    transaction is refused (a stale version: another batch got there first), nobody will ever read them - they are
    deleted, not left naming the participants (D220). Before: they stayed for good."""
    client = stack.clients["dynamodb"]
    usage_table, events_table = (stack.template.physical_name(n) for n in ("UsageTable", "EventsTable"))
    repo = DynamoUsageRepository(client, usage_table, events_table)
    events = [joined("EV_1", "RM_o", "PA_1", NOV_16), joined("EV_2", "RM_o", "PA_2", NOV_16 + 30)]
    repo.commit(CommitUnit(states=[whole(from_events("RM_o", events), 0)]), NOW_MS)
    stored = repo.room_state("RM_o")

    def part_items() -> list[str]:
        return sorted(i["sk"]["S"] for i in stack.table_items("UsageTable") if i["sk"]["S"].startswith("PART#"))

    kept = part_items()
    assert kept == [f"PART#{stored.generation}#PA_1"]
    with pytest.raises(ConflictError):  # a rebuild that read no state, but there is one
        repo.commit(CommitUnit(states=[whole(from_events("RM_o", events), 0)]), NOW_MS)
    assert part_items() == kept


def test_given_a_refused_rebuild_whose_clean_up_is_throttled_then_the_refusal_is_raised_not_the_throttle(
    stack: Stack, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A review of D335: the clean-up of a refused commit's participant items reads the headers by BatchGetItem; when
    that is throttled past the retry cap, its ``StorageUnavailableError`` replaced the refusal, so a refused room
    (``RejectedWriteError``: the poison queue) or a stale version (``ConflictError``: composed again) became a whole
    batch's retry while the throttling lasted. The refusal is raised now; the items wait for the next rebuild (D250)."""
    from kilo_billing import aws  # noqa: PLC0415

    class Throttled:
        def __init__(self, client: Any) -> None:
            self._client = client

        def __getattr__(self, name: str) -> Any:
            return getattr(self._client, name)

        def batch_get_item(self, **request: Any) -> Any:
            return {"Responses": {}, "UnprocessedKeys": request["RequestItems"]}

    monkeypatch.setattr(aws, "BATCH_RETRY", aws.BatchRetry(sleep=lambda _seconds: None), raising=False)
    client = stack.clients["dynamodb"]
    usage_table, events_table = (stack.template.physical_name(n) for n in ("UsageTable", "EventsTable"))
    events = [joined("EV_1", "RM_o", "PA_1", NOV_16), joined("EV_2", "RM_o", "PA_2", NOV_16 + 30)]
    DynamoUsageRepository(client, usage_table, events_table).commit(
        CommitUnit(states=[whole(from_events("RM_o", events), 0)]), NOW_MS
    )
    throttled = DynamoUsageRepository(Throttled(client), usage_table, events_table)
    with pytest.raises(ConflictError):  # before: StorageUnavailableError ("UnprocessedKeys ... after 6 requests")
        throttled.commit(CommitUnit(states=[whole(from_events("RM_o", events), 0)]), NOW_MS)


def test_given_more_participant_items_than_a_transaction_holds_then_written_in_chunks_and_a_crash_is_seen(
    harness: Harness,
) -> None:
    events = [joined(f"EV_{i:03d}", "RM_c", f"PA_{i:03d}", NOV_16) for i in range(150)]
    first = from_events("RM_c", events[:1])
    harness.repo.commit(CommitUnit(states=[whole(first, 0)]), NOW_MS)
    generation = harness.repo.room_state("RM_c").generation
    many = from_events("RM_c", events)
    everyone = dict(many.folded().participants)  # 150 participant items to write (all joined inside the window)
    change = StateChange(many, 1, everyone, (), False, generation)
    assert change.chunked()
    # the pending mark (1), two chunks (99 + 51), the header's new version (1)
    assert harness.repo.commit(CommitUnit(states=[change]), NOW_MS) == 1 + 150 + 1
    stored = harness.repo.room_state("RM_c")
    assert (stored.usable, stored.version, stored.generation) == (True, 2, generation)
    assert harness.repo.room_participants("RM_c", generation, None) == everyone
    with pytest.raises(ConflictError):  # on the version read only
        harness.repo.commit(CommitUnit(states=[change]), NOW_MS)

    harness.crash_after(1)  # dies after the first chunk: the header keeps its pending mark
    with pytest.raises(RuntimeError):
        harness.repo.commit(CommitUnit(states=[StateChange(many, 2, everyone, (), False, generation)]), NOW_MS)
    torn = harness.repo.room_state("RM_c")
    assert not torn.usable  # whoever reads it next rebuilds the room
    assert (torn.version, torn.generation) == (2, generation)


def whole(state: RoomState, version: int, old_generation: str = "") -> StateChange:
    return StateChange(state, version, dict(state.fold.participants), (), True, old_generation)


def in_place(state: RoomState, version: int, generation: str) -> StateChange:
    return StateChange(state, version, dict(state.fold.participants), (), False, generation)


def test_given_a_state_over_the_item_limit_then_only_its_version_is_kept_and_still_orders_writers(
    harness: Harness,
) -> None:
    import random  # noqa: PLC0415

    rng = random.Random(5)  # metadata that does not compress: the state's compressed size passes the limit
    noise = "".join(rng.choice("abcdefghijklmnopqrstuvwxyz0123456789") for _ in range(MAX_STATE_BYTES * 2))
    count = MAX_STATE_BYTES * 2 // 1000  # 600 joins inside the window (the header keeps them), 1,000 random
    events = [  # characters each: ~390 KB compressed
        joined(f"EV_{i}", "RM_big", f"PA_{i}", NOV_16 + i % 3, noise[i * 1000 : (i + 1) * 1000]) for i in range(count)
    ]
    big = from_events("RM_big", events)
    assert len(big.recent) == count
    assert harness.repo.commit(CommitUnit(states=[StateChange(big, 0)]), NOW_MS) == 1
    stored = harness.repo.room_state("RM_big")
    assert stored is not None
    assert not stored.usable
    assert stored.version == 1
    assert stored.delivered_ms == big.delivered_ms  # a rebuild's cut-off survives
    with pytest.raises(ConflictError):  # the version still moves: a concurrent writer that read none conflicts
        harness.repo.commit(CommitUnit(states=[StateChange(big, 0)]), NOW_MS)
    small = from_events("RM_big", events[:2])
    harness.repo.commit(CommitUnit(states=[StateChange(small, 1)]), NOW_MS)
    assert harness.repo.room_state("RM_big") == small


def test_given_a_state_over_the_item_limit_then_its_participants_generation_is_kept_and_a_rebuild_deletes_it(
    harness: Harness,
) -> None:
    """A version-only header (D42) still names the generation of the participant items written with it, so the
    rebuild that follows deletes them (D69) - they name the participants (D196). It dropped the generation:
    the rebuild found none to delete and the items stayed for good (D199)."""
    import random  # noqa: PLC0415

    rng = random.Random(5)
    noise = "".join(rng.choice("abcdefghijklmnopqrstuvwxyz0123456789") for _ in range(MAX_STATE_BYTES * 2))
    count = MAX_STATE_BYTES * 2 // 1000
    events = [
        joined(f"EV_{i}", "RM_big", f"PA_{i}", NOV_16 + i % 3, noise[i * 1000 : (i + 1) * 1000]) for i in range(count)
    ]
    big = from_events("RM_big", [*events, joined("EV_old", "RM_big", "PA_old", NOV_16 - 60)])
    assert "PA_old" in big.fold.participants  # live, before the window: an item of its own
    harness.repo.commit(CommitUnit(states=[whole(big, 0)]), NOW_MS)
    stored = harness.repo.room_state("RM_big")
    assert stored is not None
    assert not stored.usable
    assert set(harness.repo.room_participants("RM_big", stored.generation, None)) == {"PA_old"}
    small = from_events("RM_big", events[:2])
    harness.repo.commit(CommitUnit(states=[whole(small, 1, stored.generation)]), NOW_MS)
    assert harness.repo.room_participants("RM_big", stored.generation, None) == {}


def test_given_a_retired_participants_registers_then_they_read_back_with_its_session_and_leave_its_version(
    harness: Harness,
) -> None:
    stored = session("RM_r", "PA_1")
    harness.repo.commit(CommitUnit(sessions=[new(stored)]), NOW_MS)
    registers = registers_text(fold_events([joined("EV_1", "RM_r", "PA_1", NOV_16 + 10)]).participants["PA_1"])
    with_registers = StoredSession(stored.session, stored.contributions, stored.version, registers)
    harness.repo.commit(CommitUnit(sessions=[SessionChange(with_registers, stored.version, {})]), NOW_MS)
    found = harness.repo.sessions_of("RM_r", ["PA_1", "PA_9"])
    assert list(found) == ["PA_1"]
    assert found["PA_1"].version == stored.version
    assert registers_from_text(found["PA_1"].registers).joined_ms == (NOV_16 + 10) * 1000
    assert harness.repo.aggregates([("acct-a", "2026-11")])[("acct-a", "2026-11")].totals() == {"audio": 2}


def test_given_an_erasure_marked_after_the_batch_read_the_profile_then_its_writes_of_identities_are_a_conflict(
    harness: Harness,
) -> None:
    """D80's window closed: a commit carries the erasure mark the batch read per account (none, or that one); the
    transaction lands only while the profile still carries it, so nothing of it is written otherwise."""
    harness.register(AccountProfile("acct-a", (TierChange(datetime(2026, 1, 1, tzinfo=UTC), "personal"),)))
    assert harness.repo.commit(CommitUnit(sessions=[new(session("RM_a", "PA_1"))], erasure_marks={"acct-a": None}),
                               NOW_MS) == 2  # the session and its aggregate (the profile's check writes nothing)  # fmt: skip
    mark = datetime(2026, 11, 16, 1, 0, 0, 250_000, tzinfo=UTC)
    (profile,) = harness.repo.profiles(["acct-a"]).values()
    harness.register_again(replace(profile, erased_at=mark))  # the erasure, after the batch below read the profile
    with pytest.raises(ConflictError):
        harness.repo.commit(CommitUnit(sessions=[new(session("RM_a", "PA_2"))], erasure_marks={"acct-a": None}), NOW_MS)
    assert set(harness.repo.stored_sessions("RM_a")) == {"PA_1"}
    assert harness.repo.aggregates([("acct-a", "2026-11")])[("acct-a", "2026-11")].totals() == {"audio": 2}
    # the retry read the mark (``erased_at`` read back exactly): it lands; an unregistered account has no mark
    (profile,) = harness.repo.profiles(["acct-a"]).values()
    assert profile.erased_at == mark
    harness.repo.commit(CommitUnit(sessions=[new(session("RM_a", "PA_2"))], erasure_marks={"acct-a": mark}), NOW_MS)
    unknown = session("RM_b", "PA_3", account="acct-unknown")
    harness.repo.commit(CommitUnit(sessions=[new(unknown)], erasure_marks={"acct-unknown": None}), NOW_MS)
    assert set(harness.repo.stored_sessions("RM_a")) | set(harness.repo.stored_sessions("RM_b")) == {
        "PA_1",
        "PA_2",
        "PA_3",
    }


def test_given_a_rebuild_whose_header_landed_but_whose_reply_was_lost_then_its_participant_items_are_kept(
    stack: Stack,
) -> None:
    """D225: the rebuild's transaction lands, its reply is lost, and the request sent again (under another
    client token: a caller's retry, or past DynamoDB's 10-minute idempotency window) is refused on the version it
    moved itself - a conflict, as a refusal. The stored header names the new generation: its participant items are
    kept (before: deleted, the header naming items that were gone)."""
    client = stack.clients["dynamodb"]
    usage_table, events_table = (stack.template.physical_name(n) for n in ("UsageTable", "EventsTable"))
    repo = DynamoUsageRepository(client, usage_table, events_table)
    events = [joined("EV_1", "RM_l", "PA_1", NOV_16), joined("EV_2", "RM_l", "PA_2", NOV_16 + 30)]
    repo.commit(CommitUnit(states=[whole(from_events("RM_l", events), 0)]), NOW_MS)
    old = repo.room_state("RM_l")

    def landed_then_sent_again(**kwargs: Any) -> Any:
        client.transact_write_items(**kwargs)  # lands; its reply is lost
        return client.transact_write_items(**kwargs)  # sent again: refused on the version

    lossy = DynamoUsageRepository(_Lossy(client, landed_then_sent_again), usage_table, events_table)
    with pytest.raises(ConflictError):
        lossy.commit(CommitUnit(states=[whole(from_events("RM_l", events), 1, old.generation)]), NOW_MS)
    stored = repo.room_state("RM_l")
    assert (stored.version, stored.generation != old.generation) == (2, True)
    assert sorted(repo.room_participants("RM_l", stored.generation, None)) == ["PA_1"]  # before: {}


class _Lossy:
    """The real client, but for ``transact_write_items``."""

    def __init__(self, client: Any, transact_write_items: Any) -> None:
        self._client = client
        self.transact_write_items = transact_write_items

    def __getattr__(self, name: str) -> Any:
        return getattr(self._client, name)


def test_given_a_rebuild_that_crashed_between_its_participant_items_and_its_header_then_its_retry_deletes_them(
    harness: Harness,
) -> None:
    """D250: a rebuild writes its new generation's participant items, then the header naming it; a crash in
    between left items no header names, read by nobody and deleted by nobody, naming the participants. The retry's
    rebuild lands and deletes every generation no header can name any more - the old one and the crashed one - and
    keeps one a rebuild in flight may still land (written for a later version) and one of the format before
    (without its version: it cannot be judged). Before: the crashed generation stayed for good."""
    events = [joined("EV_1", "RM_x", "PA_1", NOV_16), joined("EV_2", "RM_x", "PA_2", NOV_16 + 30)]
    state = from_events("RM_x", events)
    harness.repo.commit(CommitUnit(states=[whole(state, 0)]), NOW_MS)
    first = harness.repo.room_state("RM_x")
    assert harness.generations("RM_x") == {first.generation}
    harness.crash_after(0)  # the rebuild's items written, its header's transaction never sent
    with pytest.raises(RuntimeError):
        harness.repo.commit(CommitUnit(states=[whole(state, 1, first.generation)]), NOW_MS)
    (crashed,) = harness.generations("RM_x") - {first.generation}
    assert harness.repo.room_state("RM_x") == first  # the header still names the first generation
    alice = state.fold.participants["PA_1"]
    harness.put_participant("RM_x", "3.inflight0000", alice)  # a rebuild that will read version 2, under way
    harness.put_participant("RM_x", "0123456789ab", alice)  # a generation written before versions were in its name
    harness.crash_after(None)
    harness.repo.commit(CommitUnit(states=[whole(state, 1, first.generation)]), NOW_MS)  # the batch's retry
    retried = harness.repo.room_state("RM_x")
    assert (retried.version, retried.generation in {first.generation, crashed}) == (2, False)
    assert harness.generations("RM_x") == {retried.generation, "3.inflight0000", "0123456789ab"}
    assert harness.repo.room_participants("RM_x", retried.generation, None) == {"PA_1": alice}


def test_given_a_rebuild_that_crashed_after_its_header_then_the_sweepers_drop_deletes_the_old_generation_too(
    stack: Stack,
) -> None:
    """D250: the crash after the rebuild's header landed, before the old generation's items were deleted:
    the header names the new one, the old one is left. The sweeper's drop of the room (D219) deletes it with the
    named one. Before: the drop deleted the named generation's items only, the old one stayed for good."""
    client = stack.clients["dynamodb"]
    usage_table, events_table = (stack.template.physical_name(n) for n in ("UsageTable", "EventsTable"))
    repo = DynamoUsageRepository(client, usage_table, events_table)
    events = [joined("EV_1", "RM_y", "PA_1", NOV_16), joined("EV_2", "RM_y", "PA_2", NOV_16 + 30)]
    state = from_events("RM_y", events)
    repo.commit(CommitUnit(states=[whole(state, 0)]), NOW_MS)
    first = repo.room_state("RM_y")
    calls = {"n": 0}

    def crash_on_the_deletes(**_: Any) -> None:  # the first batch write is the new generation's items
        calls["n"] += 1
        if calls["n"] > 1:
            raise RuntimeError("simulated crash before the old generation's deletes")

    client.meta.events.register("before-call.dynamodb.BatchWriteItem", crash_on_the_deletes)
    with pytest.raises(RuntimeError):
        repo.commit(CommitUnit(states=[whole(state, 1, first.generation)]), NOW_MS)
    client.meta.events.unregister("before-call.dynamodb.BatchWriteItem", crash_on_the_deletes)
    landed = repo.room_state("RM_y")
    assert landed.version == 2

    def generations() -> set[str]:
        return {i["sk"]["S"].split("#")[1] for i in stack.table_items("UsageTable") if i["sk"]["S"].startswith("PART#")}

    assert generations() == {first.generation, landed.generation}
    assert repo.drop_room_state(landed) is True
    assert generations() == set()


def test_given_a_sweeper_write_dynamodb_refuses_then_rejected_not_a_conflict(stack: Stack) -> None:
    """The sweeper's conditional writes go through the layer's ``put_if``/``delete_if``: a failed condition is an
    answer (False), a request DynamoDB refuses for good is still ``RejectedWriteError`` (D227, D252)."""
    from botocore.exceptions import ClientError  # noqa: PLC0415

    client = stack.clients["dynamodb"]
    usage_table, events_table = (stack.template.physical_name(n) for n in ("UsageTable", "EventsTable"))
    repo = DynamoUsageRepository(client, usage_table, events_table)
    close = close_event(session("RM_z", "PA_1", open_=True).session, SWEPT, NOV_16 + 60, NOW_MS)
    assert (repo.add_close(close, EXPIRES), repo.add_close(close, EXPIRES)) == (True, False)

    def refuse(**_: Any) -> None:
        raise ClientError({"Error": {"Code": "ValidationException", "Message": "refused"}}, "PutItem")

    for operation in ("PutItem", "DeleteItem"):
        client.meta.events.register(f"before-call.dynamodb.{operation}", refuse)
    with pytest.raises(RejectedWriteError):
        repo.add_close(close_event(session("RM_z", "PA_2", open_=True).session, SWEPT, NOV_16, NOW_MS), EXPIRES)
    with pytest.raises(RejectedWriteError):
        repo.forget_swept_room("RM_z", NOW_MS)


def test_given_a_generation_a_crash_left_when_the_room_finishes_in_place_then_it_is_deleted_too(
    harness: Harness,
) -> None:
    """D250 with D196: a finished room keeps no participant item - also none of a generation a crash left
    (a rebuild for version 1 whose header never landed), which the in-place finish's deletes do not name. Before:
    it stayed, naming her, for good."""
    events = [joined("EV_1", "RM_f", "PA_1", NOV_16), joined("EV_2", "RM_f", "PA_2", NOV_16 + 30)]
    state = from_events("RM_f", events)
    harness.repo.commit(CommitUnit(states=[whole(state, 0)]), NOW_MS)
    stored = harness.repo.room_state("RM_f")
    harness.put_participant("RM_f", "1.crashed00000", state.fold.participants["PA_1"])
    harness.put_participant("RM_f", "2.refused00000", state.fold.participants["PA_1"])  # read version 1: can't land
    harness.put_participant("RM_f", "3.inflight0000", state.fold.participants["PA_1"])  # read version 2: may land
    finished = replace(RoomState.unusable("RM_f", 1), delivered_ms=state.delivered_ms)
    retired = tuple(sorted(state.fold.participants))
    harness.repo.commit(CommitUnit(states=[StateChange(finished, 1, {}, retired, False, stored.generation)]), NOW_MS)
    assert harness.repo.room_state("RM_f").usable is False
    assert harness.generations("RM_f") == {"3.inflight0000"}


def test_given_a_synthetic_join_stored_then_it_is_found_and_a_give_up_is_claimed_once(harness: Harness) -> None:
    """D411, D412: ``stored_joins`` names the participants whose synthetic join is in their room's events (rated or
    not: stored is enough), none of another room or participant; ``claim_give_up`` is the first sweep's - the same
    sweep (its moment) holds it again, any other finds it claimed (``HELD``) - until it is said (``SAID``, not
    even the same run claims it again) or, unsaid, its claimant's moment is before the asker's ``stale_before_ms``
    (D421: the run died before saying it; taken over)."""
    listed = ListedParticipant("PA_j", "jo", "STANDARD", NOW_MS - 60_000)
    assert harness.repo.stored_joins([("RM_j", "PA_j")]) == set()
    assert harness.repo.add_close(listed_join("RM_j", "room-j", listed, NOW_MS), EXPIRES) is True
    asked = [("RM_j", "PA_j"), ("RM_j", "PA_other"), ("RM_other", "PA_j")]
    assert harness.repo.stored_joins(asked) == {("RM_j", "PA_j")}
    claim = harness.repo.claim_give_up
    later = NOW_MS + 300_000
    assert claim("RM_g", "PA_g", NOW_MS, NOW_MS - 360_000, EXPIRES) is GiveUpClaim.CLAIMED
    assert claim("RM_g", "PA_g", NOW_MS, NOW_MS - 360_000, EXPIRES) is GiveUpClaim.CLAIMED  # the same run, retried
    assert claim("RM_g", "PA_g", later, later - 360_000, EXPIRES + 300) is GiveUpClaim.HELD  # its run may say it
    assert claim("RM_g", "PA_h", later, later - 360_000, EXPIRES + 300) is GiveUpClaim.CLAIMED  # another participant
    harness.repo.say_give_up("RM_g", "PA_h", NOW_MS, EXPIRES)  # not PA_h's claimant: nothing recorded
    assert claim("RM_g", "PA_h", later + 1, later - 360_000, EXPIRES + 300) is GiveUpClaim.HELD
    # the claimant of PA_g died before saying it: 361 s after its moment, a run takes it over and says it
    assert claim("RM_g", "PA_g", NOW_MS + 361_000, NOW_MS + 1_000, EXPIRES + 361) is GiveUpClaim.CLAIMED
    harness.repo.say_give_up("RM_g", "PA_g", NOW_MS + 361_000, EXPIRES + 361)
    assert claim("RM_g", "PA_g", NOW_MS + 361_000, NOW_MS + 1_000, EXPIRES + 361) is GiveUpClaim.SAID  # its retry
    assert claim("RM_g", "PA_g", NOW_MS + 900_000, NOW_MS + 540_000, EXPIRES + 900) is GiveUpClaim.SAID
