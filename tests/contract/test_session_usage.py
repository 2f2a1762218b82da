"""One contract, two implementations of the reports' session reader: the in-memory fake over rating's session model and
the DynamoDB adapter over the items rating writes (``kilo_rate_usage.items.session_to_item``) in the template's usage
table, so the attribute names the layer reads are checked against rating's own mapping."""

from __future__ import annotations

from typing import Any

import pytest

from kilo_billing.session_usage import SessionReader, SessionUsage
from kilo_billing.session_usage_store import DynamoSessionReader
from kilo_rate_usage.items import session_to_item
from kilo_rate_usage.model import Session, StoredSession
from tests.conftest import Stack, count_calls
from tests.report_fakes import InMemorySessionReader, session

SESSIONS = [
    session("RM_a", "PA_1", "alice", "big", [("2026-03", 30, 0)], room_name="standup"),
    session("RM_a", "PA_2", "bob", "big", [("2026-02", 3, 0), ("2026-03", 30, 5)], room_name="standup"),
    session("RM_b", "PA_3", "alice", "big", [("2026-03", 0, 40)]),
    session("RM_c", "PA_4", "carol", "big", [("2026-02", 12, 0)]),  # February only
    session("RM_d", "PA_5", "dave", "big", [("2026-03", 9, 9)], aborted=True),  # bills nothing
    session("RM_e", "PA_6", "erin", "other", [("2026-03", 7, 0)]),  # another account
]


@pytest.fixture(params=["fake", "dynamodb"])
def reader(request: pytest.FixtureRequest) -> SessionReader:
    if request.param == "fake":
        return InMemorySessionReader(list(SESSIONS))
    stack: Stack = request.getfixturevalue("stack")
    table = stack.template.physical_name("UsageTable")
    for found in SESSIONS:
        put(stack, table, found)
    return DynamoSessionReader(stack.clients["dynamodb"], table)


def put(stack: Stack, table: str, found: Session) -> None:
    item: dict[str, Any] = session_to_item(StoredSession.of(found, {}))
    stack.clients["dynamodb"].put_item(TableName=table, Item=item)


def test_given_rated_sessions_then_the_accounts_minutes_of_the_period_per_session(reader: SessionReader) -> None:
    found = sorted(reader.sessions("big", "2026-03"), key=lambda s: s.participant_sid)
    assert found == [
        SessionUsage("RM_a", "standup", "PA_1", "alice", 30, 0),
        SessionUsage("RM_a", "standup", "PA_2", "bob", 30, 5),
        SessionUsage("RM_b", "", "PA_3", "alice", 0, 40),
    ]
    assert [s.participant_sid for s in reader.sessions("big", "2026-02")] in (["PA_2", "PA_4"], ["PA_4", "PA_2"])
    assert list(reader.sessions("nobody", "2026-03")) == []


def test_given_more_sessions_than_a_scan_page_then_all_are_read(stack: Stack) -> None:
    table = stack.template.physical_name("UsageTable")
    items = [  # ~2.7 KB items: more than one 1 MB scan page
        session_to_item(StoredSession.of(session(f"RM_{i:05d}", "PA_1", "m" * 2_500, "big", [("2026-03", 1, 0)]), {}))
        for i in range(450)
    ]
    for start in range(0, len(items), 25):
        requests = [{"PutRequest": {"Item": item}} for item in items[start : start + 25]]
        stack.clients["dynamodb"].batch_write_item(RequestItems={table: requests})
    counter = count_calls(stack.clients["dynamodb"])
    found = list(DynamoSessionReader(stack.clients["dynamodb"], table).sessions("big", "2026-03"))
    assert len(found) == 450
    assert counter.count("Scan") >= 2
