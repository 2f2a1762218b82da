"""LiveKit minutes whose room or participant metadata names an account id nobody registered (D276): they go to
the unattributed bucket like minutes with no account at all, and their ``UnattributedUsage.v1`` names the id, so the
operator can register it or fix the app's metadata. Before, they were rated as a free-tier account under that id:
billed by no close, listed by no report, announced to nobody."""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any

from kilo_billing.accounts import UNATTRIBUTED, AccountProfile
from kilo_billing.catalog import default_catalog
from kilo_billing.rating import TierChange
from kilo_billing.usage_events import UsageEventRecord
from kilo_dev import livekit_events as lk
from kilo_rate_usage.logic import rate_batch
from kilo_rate_usage.model import AttributionRule, BatchOutcome, RatingConfig
from tests.fakes import InMemoryUsageRepository, RecordingPublisher

CONFIG = RatingConfig(AttributionRule(), default_catalog().for_period)
T0 = 1_794_304_800  # 2026-11-10T10:00:00Z
NOW_MS = (T0 + 3600) * 1000
UNKNOWN = "acct_unknown"


def deliver(repo: InMemoryUsageRepository, publisher: RecordingPublisher, *bodies: bytes) -> BatchOutcome:
    records = [lk.to_record(body) for body in bodies]
    for record in records:
        repo.store_event(record)
    return rate_batch(records, [], repo, publisher, CONFIG, NOW_MS)


def unattributed_events(publisher: RecordingPublisher) -> list[dict[str, Any]]:
    return [detail for kind, detail in publisher.published if kind == "UnattributedUsage.v1"]


def register(repo: InMemoryUsageRepository, account: str) -> None:
    repo.accounts.register(AccountProfile(account, (TierChange(datetime(2026, 11, 1, tzinfo=UTC), "team"),)))


def test_given_room_metadata_naming_an_unregistered_account_then_its_minutes_are_unattributed_and_announced() -> None:
    repo, publisher = InMemoryUsageRepository(), RecordingPublisher()
    register(repo, "acct_known")
    room = lk.Room("RM_unreg", "standup", account_id=UNKNOWN, created_at=T0)
    known = lk.Room("RM_known", "standup", account_id="acct_known", created_at=T0)
    alice = lk.Participant("PA_alice", "alice", T0 * 1000)
    bob = lk.Participant("PA_bob", "bob", T0 * 1000)

    outcome = deliver(
        repo, publisher,
        lk.participant_joined(room, alice), lk.participant_left(room, alice, T0 + 600),
        lk.participant_joined(known, bob), lk.participant_left(known, bob, T0 + 300),
    )  # fmt: skip

    # alice: 600 s -> 10 audio minutes, kept in the unattributed bucket, not under the unregistered id
    assert repo.totals(UNKNOWN, "2026-11") == {}
    assert repo.totals(UNATTRIBUTED, "2026-11") == {"audio": 10}
    assert repo.totals("acct_known", "2026-11") == {"audio": 5}  # bob: 300 s, a registered account: unchanged
    assert outcome.unattributed_minutes == 10
    # the session is stored under the id its room named, its minutes the bucket's: the id's erasure, once it is
    # registered, lists it by account (D292)
    stored = repo.sessions[("RM_unreg", "PA_alice")]
    assert stored.session.account == UNKNOWN
    assert {account for account, _, _, _ in stored.contributions} == {UNATTRIBUTED}
    assert unattributed_events(publisher) == [
        {"schema_version": 1, "room_sid": "RM_unreg", "participant_sid": "PA_alice", "identity": "alice",
         "period": "2026-11", "minutes": 10, "unregistered_account": UNKNOWN},
    ]  # fmt: skip
    assert repo.accounts.reads == 1  # the one registration lookup of the batch, no read per session


def test_given_no_account_at_all_then_the_announcement_names_no_unregistered_id() -> None:
    repo, publisher = InMemoryUsageRepository(), RecordingPublisher()
    room = lk.Room("RM_none", "standup", created_at=T0)
    alice = lk.Participant("PA_alice", "alice", T0 * 1000)

    deliver(repo, publisher, lk.participant_joined(room, alice), lk.participant_left(room, alice, T0 + 120))

    assert repo.totals(UNATTRIBUTED, "2026-11") == {"audio": 2}
    assert [event["unregistered_account"] for event in unattributed_events(publisher)] == [None]


def test_given_the_account_registered_during_the_call_then_the_participants_next_event_bills_it_the_whole_session() -> (
    None
):
    repo, publisher = InMemoryUsageRepository(), RecordingPublisher()
    room = lk.Room("RM_reg_late", "standup", account_id=UNKNOWN, created_at=T0)
    alice = lk.Participant("PA_alice", "alice", T0 * 1000)
    bob = lk.Participant("PA_bob", "bob", T0 * 1000)
    deliver(repo, publisher, lk.participant_joined(room, alice), lk.participant_joined(room, bob))
    deliver(repo, publisher, lk.participant_left(room, bob, T0 + 180))  # bob: 3 minutes, unattributed
    assert repo.totals(UNATTRIBUTED, "2026-11") == {"audio": 3}

    register(repo, UNKNOWN)  # the operator registers the account (or the app's own sign-up lands late)
    deliver(repo, publisher, lk.participant_left(room, alice, T0 + 900))

    # alice's session is rated after the registration: all of it (900 s -> 15) to the account
    assert repo.totals(UNKNOWN, "2026-11") == {"audio": 15}
    # bob's closed session is not recomputed by an in-order event of alice: his 3 minutes stay unattributed
    assert repo.totals(UNATTRIBUTED, "2026-11") == {"audio": 3}
    assert [event["participant_sid"] for event in unattributed_events(publisher)] == ["PA_bob"]  # none for alice


def test_given_the_account_registered_then_the_rooms_next_rebuild_moves_its_minutes_by_the_normal_delta() -> None:
    repo, publisher = InMemoryUsageRepository(), RecordingPublisher()
    room = lk.Room("RM_rebuild", "standup", account_id=UNKNOWN, created_at=T0)
    alice = lk.Participant("PA_alice", "alice", T0 * 1000)
    left = lk.participant_left(room, alice, T0 + 600)
    deliver(repo, publisher, lk.room_started(room, T0), lk.participant_joined(room, alice), left,
            lk.room_finished(room, T0 + 700))  # fmt: skip
    assert repo.totals(UNATTRIBUTED, "2026-11") == {"audio": 10}

    register(repo, UNKNOWN)
    # a finished room keeps no running state (D196): an event LiveKit delivers late rebuilds it from its events
    outcome = deliver(repo, publisher, lk.track_published(room, alice, "TR_mic", T0 + 1, video=False))

    assert repo.totals(UNKNOWN, "2026-11") == {"audio": 10}  # alice: 600 s -> 10, moved to the account
    assert repo.totals(UNATTRIBUTED, "2026-11") == {}  # 10 - 10: the bucket is back to nothing
    assert repo.sessions[("RM_rebuild", "PA_alice")].session.account == UNKNOWN
    assert outcome.unattributed_minutes == 0
    assert len(unattributed_events(publisher)) == 1  # the first rating's only: a move out of the bucket is no alarm


def register_on(repo: InMemoryUsageRepository, account: str, signed_up_at: datetime) -> None:
    repo.accounts.register(AccountProfile(account, (TierChange(signed_up_at, "team"),)))


DEC_5 = datetime(2026, 12, 5, tzinfo=UTC)  # a signup in December: November is never invoiced (compose_close)


def test_given_the_account_registered_in_a_later_month_then_a_rebuild_leaves_the_earlier_months_minutes_unattributed() -> (
    None
):
    repo, publisher = InMemoryUsageRepository(), RecordingPublisher()
    room = lk.Room("RM_before", "standup", account_id=UNKNOWN, created_at=T0)
    alice = lk.Participant("PA_alice", "alice", T0 * 1000)
    deliver(repo, publisher, lk.room_started(room, T0), lk.participant_joined(room, alice),
            lk.participant_left(room, alice, T0 + 600), lk.room_finished(room, T0 + 700))  # fmt: skip
    assert repo.totals(UNATTRIBUTED, "2026-11") == {"audio": 10}  # 600 s on 2026-11-10

    register_on(repo, UNKNOWN, DEC_5)
    outcome = deliver(repo, publisher, lk.track_published(room, alice, "TR_mic", T0 + 1, video=False))  # rebuild

    # November ends before December, the signup's period: no close of the account bills November - the bucket keeps it
    assert repo.totals(UNATTRIBUTED, "2026-11") == {"audio": 10}
    assert repo.totals(UNKNOWN, "2026-11") == {}
    assert outcome.unattributed_minutes == 0  # nothing added to the bucket: already counted and announced once
    assert len(unattributed_events(publisher)) == 1
    # the session is the account's participant's again (its export and erasure list it), its minutes the bucket's
    stored = repo.sessions[("RM_before", "PA_alice")]
    assert (stored.session.account, sorted(stored.contributions.values())) == (UNKNOWN, [10])
    assert {account for account, _, _, _ in stored.contributions} == {UNATTRIBUTED}


def test_given_a_session_open_across_the_month_end_before_the_signup_then_its_earlier_part_stays_unattributed() -> None:
    repo, publisher = InMemoryUsageRepository(), RecordingPublisher()
    joined = 1_796_082_600  # 2026-11-30T23:50:00Z
    room = lk.Room("RM_across", "standup", account_id=UNKNOWN, created_at=joined)
    alice = lk.Participant("PA_alice", "alice", joined * 1000)
    deliver(repo, publisher, lk.participant_joined(room, alice))

    register_on(repo, UNKNOWN, DEC_5)
    deliver(repo, publisher, lk.participant_left(room, alice, joined + 1800))  # left 2026-12-01T00:20:00Z

    # 23:50 -> 24:00 in November: 600 s -> 10, in the bucket, announced with the id; 00:00 -> 00:20 in December (the
    # signup's period, invoiced): 1200 s -> 20 on the account
    assert repo.totals(UNATTRIBUTED, "2026-11") == {"audio": 10}
    assert repo.totals(UNKNOWN, "2026-11") == {}
    assert repo.totals(UNKNOWN, "2026-12") == {"audio": 20}
    assert repo.totals(UNATTRIBUTED, "2026-12") == {}
    assert unattributed_events(publisher) == [
        {"schema_version": 1, "room_sid": "RM_across", "participant_sid": "PA_alice", "identity": "alice",
         "period": "2026-11", "minutes": 10, "unregistered_account": UNKNOWN},
    ]  # fmt: skip


def test_given_a_signup_late_in_the_month_then_that_months_earlier_minutes_are_the_accounts() -> None:
    repo, publisher = InMemoryUsageRepository(), RecordingPublisher()
    register_on(repo, UNKNOWN, datetime(2026, 11, 30, tzinfo=UTC))  # November is the signup's period: invoiced
    room = lk.Room("RM_same", "standup", account_id=UNKNOWN, created_at=T0)
    alice = lk.Participant("PA_alice", "alice", T0 * 1000)

    deliver(repo, publisher, lk.participant_joined(room, alice), lk.participant_left(room, alice, T0 + 600))

    assert repo.totals(UNKNOWN, "2026-11") == {"audio": 10}  # 2026-11-10, before the signup, in its period
    assert repo.totals(UNATTRIBUTED, "2026-11") == {}
    assert unattributed_events(publisher) == []


NOV_8_MS = int(datetime(2026, 11, 8, 10, tzinfo=UTC).timestamp() * 1000)


def app_usage(key: str, meter: str, quantity: int, at_ms: int = NOV_8_MS) -> UsageEventRecord:
    return UsageEventRecord("kilo-app", key, UNKNOWN, meter, quantity, at_ms, f"h-{key}", at_ms)


def rate_usage(repo: InMemoryUsageRepository, publisher: RecordingPublisher, *records: UsageEventRecord) -> None:
    for record in records:
        repo.store_event(record)  # ingest stored it (the account is registered: ingest checked)
    rate_batch([], list(records), repo, publisher, CONFIG, NOW_MS)


def test_given_app_usage_dated_before_the_accounts_signup_period_then_it_is_unattributed_and_announced() -> None:
    repo, publisher = InMemoryUsageRepository(), RecordingPublisher()
    register_on(repo, UNKNOWN, DEC_5)  # November is before the signup's period: no close of it invoices November
    messages, data = app_usage("m-1", "messages", 1200), app_usage("b-1", "data_transfer", 2_500_000_000)

    rate_usage(repo, publisher, messages, data)

    # kept in the bucket (the revenue report lists it with its cost), not on the account's November aggregate
    assert repo.totals(UNATTRIBUTED, "2026-11") == {"messages": 1200, "data_transfer": 2_500_000_000}
    assert repo.totals(UNKNOWN, "2026-11") == {}
    assert repo.usage_rated == {messages.key, data.key}
    assert [(kind, detail) for kind, detail in publisher.published] == [
        ("UnattributedAppUsage.v1", {"schema_version": 1, "account_id": UNKNOWN, "period": "2026-11",
                                     "meter": "data_transfer", "quantity": 2_500_000_000}),
        ("UnattributedAppUsage.v1", {"schema_version": 1, "account_id": UNKNOWN, "period": "2026-11",
                                     "meter": "messages", "quantity": 1200}),
    ]  # fmt: skip

    rate_usage(repo, publisher, messages)  # the stream redelivers: already rated, nothing added or announced
    assert repo.totals(UNATTRIBUTED, "2026-11") == {"messages": 1200, "data_transfer": 2_500_000_000}
    assert len(publisher.published) == 2


def test_given_app_usage_of_the_signups_own_period_before_the_signup_then_it_is_the_accounts() -> None:
    repo, publisher = InMemoryUsageRepository(), RecordingPublisher()
    register_on(repo, UNKNOWN, datetime(2026, 11, 30, tzinfo=UTC))  # November is the signup's period: invoiced

    rate_usage(repo, publisher, app_usage("m-2", "messages", 700))  # 2026-11-08, before the signup, in its period

    assert repo.totals(UNKNOWN, "2026-11") == {"messages": 700}
    assert repo.totals(UNATTRIBUTED, "2026-11") == {}
    assert [kind for kind, _ in publisher.published if kind.startswith("Unattributed")] == []
