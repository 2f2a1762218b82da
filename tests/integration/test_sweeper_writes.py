"""What the sweeper writes, counted on moto through the DynamoDB adapter (D125 and its follow-up): an hour of sweeps,
every write request recorded at the client, against a count worked out by hand below.

The hour: sweeps every 5 minutes from T0 to T0 + 55 min (12 sweeps); RoomService answers for two rooms and never for
a third; nobody leaves (closes are not what changed, and a swept session is closed by rating between sweeps).
- ``agents`` (RM_agents): two AI agents joined 30 h before T0, no room event since (quiet all hour);
- ``standup`` (RM_standup): carol and bob joined 10 min before T0 (each quiet for an hour from T0 + 50 min);
- ``flaky`` (RM_flaky): one participant joined 2 h before T0; RoomService never answers for it.

Per sweep: one listing per room RoomService answered for and that listed someone open: agents and standup -> 2 items,
one conditional PutItem each; flaky none. 12 sweeps -> 24 item writes, nothing else. Before this change the sweeper also
recorded an hourly confirmation per quiet listed session: both agents at T0 (2) and carol and bob at T0 + 50 min (2),
4 more -> 28, and the hour left 2 listings and 4 confirmation items (never expiring) behind; now the 2 listings only,
each with a TTL of ``listing_ttl`` after its answer."""

from __future__ import annotations

from fractions import Fraction
from typing import Any

from kilo_rate_usage.adapters import DynamoUsageRepository
from kilo_rate_usage.items import session_to_item
from kilo_rate_usage.model import Billing, Session, StoredSession, SweepPolicy
from kilo_rate_usage.sweeper import run_sweep
from tests.conftest import Stack
from tests.fakes import StaticRoomDirectory

T0_MS = 1_794_787_200_000  # 2026-11-16T00:00:00Z
HOUR_MS = 3_600_000
MINUTE_MS = 60_000
POLICY = SweepPolicy(max_unconfirmed_ms=24 * HOUR_MS, listing_ttl_ms=7 * 24 * HOUR_MS)
EXPIRES = 2_000_000_000
WRITES = ("put_item", "update_item", "delete_item", "batch_write_item", "transact_write_items")


class CountingClient:
    """The DynamoDB client, recording how many items each write request writes (by operation)."""

    def __init__(self, client: Any) -> None:
        self._client = client
        self.written: list[tuple[str, int]] = []

    def __getattr__(self, name: str) -> Any:
        operation = getattr(self._client, name)
        if name not in WRITES:
            return operation

        def counted(**kwargs: Any) -> Any:
            if name == "batch_write_item":
                size = sum(len(requests) for requests in kwargs["RequestItems"].values())
            elif name == "transact_write_items":
                size = len(kwargs["TransactItems"])
            else:
                size = 1
            self.written.append((name, size))
            return operation(**kwargs)

        return counted


def open_session(room: str, sid: str, start_ms: int) -> StoredSession:
    session = Session(f"RM_{room}", sid, sid.lower(), "STANDARD", "acct", start_ms, None, None, False,
                      Billing.ROOM_RULE, Fraction(0), Fraction(0), (), as_of_ms=start_ms, room_name=room)  # fmt: skip
    return StoredSession.of(session, {})


def test_given_an_hour_of_sweeps_then_one_write_per_answering_room_per_sweep_and_nothing_else(stack: Stack) -> None:
    client = stack.clients["dynamodb"]
    usage_table, events_table = (stack.template.physical_name(n) for n in ("UsageTable", "EventsTable"))
    for stored in (
        open_session("agents", "PA_agent1", T0_MS - 30 * HOUR_MS),
        open_session("agents", "PA_agent2", T0_MS - 30 * HOUR_MS),
        open_session("standup", "PA_carol", T0_MS - 10 * MINUTE_MS),
        open_session("standup", "PA_bob", T0_MS - 10 * MINUTE_MS),
        open_session("flaky", "PA_x", T0_MS - 2 * HOUR_MS),
    ):
        client.put_item(TableName=usage_table, Item=session_to_item(stored))
    counting = CountingClient(client)
    store = DynamoUsageRepository(counting, usage_table, events_table)
    directory = StaticRoomDirectory(
        {"agents": {"PA_agent1", "PA_agent2"}, "standup": {"PA_carol", "PA_bob"}}, unreachable=["flaky"]
    )

    per_sweep = []
    for sweep in range(12):
        before = len(counting.written)
        outcome, _, _ = run_sweep(store, directory, T0_MS + sweep * 5 * MINUTE_MS, POLICY, EXPIRES)
        assert (outcome.open, outcome.swept, outcome.capped, outcome.listed) == (5, 0, 0, 4)
        per_sweep.append(sum(size for _, size in counting.written[before:]))

    assert per_sweep == [2] * 12
    assert sum(per_sweep) == 24
    assert {name for name, _ in counting.written} == {"put_item"}  # conditional, one listing per request
    left = [item for item in stack.table_items("UsageTable") if not item["sk"]["S"].startswith("SESSION#")]
    last_answer_s = (T0_MS + 55 * MINUTE_MS) // 1000
    assert sorted((item["pk"]["S"], item["sk"]["S"], int(item["expires_at"]["N"])) for item in left) == [
        ("ROOM#RM_agents", "LISTED", last_answer_s + 7 * 24 * 3600),
        ("ROOM#RM_standup", "LISTED", last_answer_s + 7 * 24 * 3600),
    ]
