"""The alerts function's open sessions (``DynamoOpenSessions``) read from rating's own session items on the template's
usage table (moto): each open session's room, identity and join (``open_since``, its start) - a participant who
rejoins with the same identity is another session, removed afresh (D71 amended (e4b))."""

from __future__ import annotations

from fractions import Fraction

from kilo_alerts.adapters import DynamoOpenSessions
from kilo_alerts.model import Participant
from kilo_rate_usage.items import session_to_item
from kilo_rate_usage.model import Billing, Session, StoredSession
from tests.conftest import Stack

JOINED = 1_795_168_800_000  # 2026-11-20T10:00:00Z
REJOINED = JOINED + 180_000  # 10:03


def session(participant_sid: str, identity: str, start_ms: int, end_ms: int | None = None) -> StoredSession:
    closed = end_ms is not None
    return StoredSession(
        Session(
            "RM_web",
            participant_sid,
            identity,
            "standard",
            "acct_1",
            start_ms,
            end_ms,
            None,
            False,
            Billing.ROOM_RULE,
            Fraction(0),
            Fraction(0),
            (),
            False,
            end_ms or start_ms,
            "webinar",
        ),
        {},
        f"v-{participant_sid}-{closed}",
    )


def test_given_a_host_removed_and_rejoined_then_each_open_session_is_listed_with_its_join(stack: Stack) -> None:
    client, table = stack.clients["dynamodb"], stack.template.physical_name("UsageTable")
    for stored in (
        session("PA_first", "host", JOINED, end_ms=JOINED + 120_000),  # removed at 10:02: closed, not listed
        session("PA_again", "host", REJOINED),  # rejoined at 10:03 with the same identity
        session("PA_lagging", "host", JOINED + 1_000),  # a session whose close rating has not seen: still open
    ):
        client.put_item(TableName=table, Item=session_to_item(stored))
    assert DynamoOpenSessions(client, table).open_participants("acct_1") == [
        Participant("webinar", "host", JOINED + 1_000),
        Participant("webinar", "host", REJOINED),
    ]
    assert DynamoOpenSessions(client, table).open_participants("acct_2") == []
