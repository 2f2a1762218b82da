"""D80's last window: a rating batch that read the account's profile before the erasure marked it, and commits after
the erasure's scan of the stored sessions, must not write a participant's identity. Rating conditions each
transaction writing identities on the erasure mark it read (``CommitUnit.erasure_marks`` -> ``Transaction.guards``);
here the split into transactions (guards count towards DynamoDB's item limit) and the interleaving on the in-memory
store, the erasure run between rating's read of the profile and its commit."""

from __future__ import annotations

import hashlib
from dataclasses import replace
from datetime import UTC, datetime
from fractions import Fraction

import pytest

from kilo_billing.accounts import AccountProfile, pseudonym
from kilo_billing.catalog import default_catalog
from kilo_billing.livekit_events import LiveKitEventRecord
from kilo_billing.rating import TierChange
from kilo_rate_usage.logic import rate_batch
from kilo_rate_usage.model import AttributionRule, Billing, RatingConfig, Session, StoredSession
from kilo_rate_usage.ports import CommitUnit, ConflictError, SessionChange
from tests.fakes import InMemoryUsageRepository, RecordingPublisher

NOV_16 = 1_794_787_200  # 2026-11-16T00:00:00Z
NOV_1 = 1_793_491_200
MARK = datetime(2026, 11, 16, 0, 30, tzinfo=UTC)
CONFIG = RatingConfig(AttributionRule(), default_catalog().for_period)


def change(account: str, sid: str) -> SessionChange:
    session = Session("RM_a", sid, f"id-{sid}", "STANDARD", account, NOV_16 * 1000, NOV_16 * 1000 + 60_000, None,
                      False, Billing.ROOM_RULE, Fraction(60), Fraction(0), ())  # fmt: skip
    contributions = {(account, "2026-11", NOV_1, "audio"): 1}
    return SessionChange(StoredSession.of(session, contributions), None, dict(contributions))


def test_given_erasure_marks_then_each_transaction_checks_the_accounts_it_writes_and_counts_the_checks() -> None:
    unit = CommitUnit(
        sessions=[
            change("acct-a", "PA_1"),
            change("acct-a", "PA_2"),
            change("acct-b", "PA_3"),
            change("acct-c", "PA_4"),
        ],
        erasure_marks={"acct-a": None, "acct-b": MARK},  # acct-c's sessions carry pseudonyms: no check
    )
    # max 4 items: PA_1 (session, acct-a's aggregate, acct-a's check) = 3; PA_2 adds its session only = 4; PA_3 would
    # add a session, an aggregate and a check (7): a new transaction, 3; PA_4 adds a session and an aggregate = 5 > 4:
    # a third, 2
    transactions = unit.transactions(max_items=4)
    assert [[c.new.session.participant_sid for c in t.sessions] for t in transactions] == [
        ["PA_1", "PA_2"],
        ["PA_3"],
        ["PA_4"],
    ]
    assert [t.guards for t in transactions] == [(("acct-a", None),), (("acct-b", MARK),), ()]
    assert [t.items for t in transactions] == [4, 3, 2]
    assert [t.writes for t in transactions] == [3, 2, 2]  # a check writes nothing


def joined(event_id: str, sid: str, identity: str, at_s: int) -> LiveKitEventRecord:
    body = (
        b'{"event":"participant_joined","room":{"sid":"RM_e","name":"erase-me","metadata":"{\\"account_id\\":\\"acct-e\\"}"},'
        b'"participant":{"sid":"' + sid.encode() + b'","identity":"' + identity.encode() + b'"}}'
    )
    return LiveKitEventRecord(event_id, "participant_joined", at_s, "APIkey", body, at_s * 1000, room_sid="RM_e",
                              room_name="erase-me", participant_sid=sid, participant_identity=identity,
                              joined_at_ms=at_s * 1000, room_metadata='{"account_id":"acct-e"}')  # fmt: skip


class ErasingBeforeCommit(InMemoryUsageRepository):
    """The store, with the account API's erasure (the mark, then the rewrite of the stored sessions' identities) run
    once between rating's read of the profiles and its first commit."""

    def __init__(self) -> None:
        super().__init__()
        self.erased = False

    def commit(self, unit: CommitUnit, now_ms: int) -> int:
        if not self.erased:
            self.erased = True
            profile = self.accounts.registered(["acct-e"])["acct-e"]
            self.accounts.save(replace(profile, erased_at=MARK))
            for key, stored in list(self.sessions.items()):  # the scan: nothing of this batch is stored yet
                if stored.session.account == "acct-e":
                    identity = pseudonym("acct-e", stored.session.identity)
                    self.sessions[key] = replace(stored, session=replace(stored.session, identity=identity))
        return super().commit(unit, now_ms)


def test_given_an_erasure_between_the_profile_read_and_the_commit_then_the_retry_writes_the_pseudonym() -> None:
    repo = ErasingBeforeCommit()
    repo.accounts.register(AccountProfile("acct-e", (TierChange(datetime(2026, 1, 1, tzinfo=UTC), "personal"),)))
    event = joined("EV_1", "PA_alice", "alice", NOV_16 + 10)  # began before the mark: erased data
    repo.store_event(event)

    with pytest.raises(ConflictError):  # the stream retries the batch
        rate_batch([event], [], repo, RecordingPublisher(), CONFIG, (NOV_16 + 3600) * 1000)
    assert repo.sessions == {}  # nothing of the batch landed with the identity
    rate_batch([event], [], repo, RecordingPublisher(), CONFIG, (NOV_16 + 3600) * 1000)

    # D80's formula written out: "erased-" and the first 16 hex digits of sha256(account NUL identity)
    expected = "erased-" + hashlib.sha256(b"acct-e\x00alice").hexdigest()[:16]
    assert [stored.session.identity for stored in repo.sessions.values()] == [expected]


def test_given_an_identity_that_only_starts_like_a_pseudonym_then_an_erasure_before_the_commit_still_hides_it() -> None:
    """An identity chosen as ``erased-...`` is not a pseudonym: its write is conditioned on the erasure mark like any
    other, and the retry stores its pseudonym."""
    repo = ErasingBeforeCommit()
    repo.accounts.register(AccountProfile("acct-e", (TierChange(datetime(2026, 1, 1, tzinfo=UTC), "personal"),)))
    event = joined("EV_1", "PA_jane", "erased-jane@example.com", NOV_16 + 10)  # began before the mark
    repo.store_event(event)

    with pytest.raises(ConflictError):
        rate_batch([event], [], repo, RecordingPublisher(), CONFIG, (NOV_16 + 3600) * 1000)
    assert repo.sessions == {}
    rate_batch([event], [], repo, RecordingPublisher(), CONFIG, (NOV_16 + 3600) * 1000)

    expected = "erased-" + hashlib.sha256(b"acct-e\x00erased-jane@example.com").hexdigest()[:16]
    assert [stored.session.identity for stored in repo.sessions.values()] == [expected]
