"""The erasure over an eventually consistent index (D201), on moto: the ``account_sessions`` GSI that lists an
account's sessions may miss a session written just before the erasure's mark, or still show the identity a session
had. moto's index is always up to date, so ``LaggingIndex`` (the real moto client, its answers to index queries held
back as a lagging GSI's would be) plays the lag; everything else is the real adapter and, through the handler, the
route. Pauses are recorded, not slept."""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import replace
from datetime import timedelta
from typing import Any

import pytest
import time_machine

from kilo_account_api.adapters import ACCOUNT_SESSIONS_INDEX, DynamoSessionHistory, ErasurePacing
from kilo_billing.accounts import pseudonym
from kilo_billing.items import to_item
from kilo_rate_usage.items import session_to_item
from kilo_rate_usage.model import StoredSession
from tests.account_api_support import api_environment, call, claims, store_members, utc
from tests.contract.test_account_api_stores import ms, rating_session, x_pseudonym
from tests.integration.test_account_api import NOW, register

MARK = utc(2026, 11, 20)
ALICE = rating_session("RM_1", "PA_1", "alice", "acct", ms(2026, 11, 2, 9), ms(2026, 11, 2, 10), [("2026-11", 60, 0)])
# a short call written just before the mark: its index entry not there yet at the erasure's first listing
ZED = rating_session("RM_9", "PA_9", "zed", "acct", ms(2026, 11, 15, 11), ms(2026, 11, 15, 11, 1), [("2026-11", 1, 0)])


class LaggingIndex:
    """The moto client, its ``account_sessions`` answers lagging: the first ``hidden_for`` index queries leave out
    the sessions of ``hidden``; the first ``stale_for`` show the sessions of ``stale`` with their old identity."""

    def __init__(
        self,
        client: Any,
        hidden: frozenset[str] = frozenset(),
        hidden_for: int = 0,
        stale: dict[str, str] | None = None,
        stale_for: int = 0,
    ) -> None:
        self._client = client
        self.hidden, self.hidden_for = hidden, hidden_for
        self.stale, self.stale_for = stale or {}, stale_for
        self.index_queries = 0

    def __getattr__(self, name: str) -> Any:
        return getattr(self._client, name)

    def query(self, **request: Any) -> Any:
        answer = self._client.query(**request)
        if request.get("IndexName") != ACCOUNT_SESSIONS_INDEX:
            return answer
        self.index_queries += 1
        found = []
        for item in answer["Items"]:
            room = item["pk"]["S"]
            if room in self.hidden and self.index_queries <= self.hidden_for:
                continue
            stale = room in self.stale and self.index_queries <= self.stale_for
            found.append(item | {"identity": {"S": self.stale[room]}} if stale else item)
        return answer | {"Items": found, "Count": len(found)}


def put_sessions(stack: Any, *sessions: Any) -> None:
    for session in sessions:
        stack.clients["dynamodb"].put_item(
            TableName=stack.template.physical_name("UsageTable"), Item=session_to_item(StoredSession.of(session, {}))
        )


def stored_identity(stack: Any, room: str, participant: str) -> str:
    item = stack.clients["dynamodb"].get_item(
        TableName=stack.template.physical_name("UsageTable"),
        Key=to_item({"pk": f"ROOM#{room}", "sk": f"SESSION#{participant}"}),
        ConsistentRead=True,
    )["Item"]
    return str(item["identity"]["S"])


def history(stack: Any, client: Any, pauses: list[float]) -> DynamoSessionHistory:
    return DynamoSessionHistory(
        client, stack.template.physical_name("UsageTable"), timedelta(days=35), ErasurePacing(sleep=pauses.append)
    )


def test_given_a_session_missing_from_the_index_at_first_then_a_later_pass_erases_it(stack: Any) -> None:
    """Pass 1 lists alice only (rewritten); pass 2, after a pause, lists zed too (rewritten); pass 3 is clean."""
    put_sessions(stack, ALICE, ZED)
    pauses: list[float] = []
    lagging = LaggingIndex(stack.clients["dynamodb"], hidden=frozenset({"ROOM#RM_9"}), hidden_for=1)
    assert history(stack, lagging, pauses).pseudonymise("acct", x_pseudonym, MARK) == 2
    assert (stored_identity(stack, "RM_1", "PA_1"), stored_identity(stack, "RM_9", "PA_9")) == ("x-alice", "x-zed")
    assert (pauses, lagging.index_queries) == ([0.5, 0.5], 3)


def test_given_a_first_listing_with_nothing_left_then_it_is_listed_again_after_the_settle(stack: Any) -> None:
    """alice was erased before; zed is not in the index yet: a first clean listing is not taken as the end - the
    erasure lists again once 0.5 s have passed, finds zed and rewrites it."""
    put_sessions(stack, replace(ALICE, identity="x-alice"), ZED)
    pauses: list[float] = []
    lagging = LaggingIndex(stack.clients["dynamodb"], hidden=frozenset({"ROOM#RM_9"}), hidden_for=1)
    assert history(stack, lagging, pauses).pseudonymise("acct", x_pseudonym, MARK) == 1
    assert stored_identity(stack, "RM_9", "PA_9") == "x-zed"
    assert (pauses, lagging.index_queries) == ([0.5, 0.5], 3)


def test_given_an_index_still_showing_the_old_identity_then_the_session_is_read_again_not_rewritten(
    stack: Any,
) -> None:
    """The index shows alice's identity for three listings after her session was rewritten: the strongly consistent
    read finds the pseudonym (nothing written twice, counted once); the erasure ends once the index shows it."""
    put_sessions(stack, ALICE)
    pauses: list[float] = []
    lagging = LaggingIndex(stack.clients["dynamodb"], stale={"ROOM#RM_1": "alice"}, stale_for=3)
    assert history(stack, lagging, pauses).pseudonymise("acct", x_pseudonym, MARK) == 1
    assert (pauses, lagging.index_queries) == ([0.5, 0.5, 1.0], 4)


def test_given_a_concurrent_write_between_read_and_rewrite_then_it_is_not_overwritten(stack: Any) -> None:
    """Rating writes alice's session again (with the pseudonym, after the mark, and new registers) between the
    erasure's read and its rewrite: the rewrite's condition on the identity read refuses it, the next pass sees the
    pseudonym - rating's registers stay."""
    put_sessions(stack, ALICE)
    table = stack.template.physical_name("UsageTable")
    client = stack.clients["dynamodb"]

    class RatingInBetween(LaggingIndex):
        def update_item(self, **request: Any) -> Any:
            client.put_item(
                TableName=table,
                Item=session_to_item(StoredSession(replace(ALICE, identity="x-alice"), {}, "v2", '["PA_1","x-alice"]')),
            )
            return client.update_item(**request)

    pauses: list[float] = []
    assert history(stack, RatingInBetween(client), pauses).pseudonymise("acct", x_pseudonym, MARK) == 0
    item = client.get_item(TableName=table, Key=to_item({"pk": "ROOM#RM_1", "sk": "SESSION#PA_1"}))["Item"]
    assert (item["identity"]["S"], item["registers"]["S"]) == ("x-alice", '["PA_1","x-alice"]')


# --- through the route ------------------------------------------------------------------------------------------


@pytest.fixture
def account_api(stack: Any, monkeypatch: pytest.MonkeyPatch) -> Iterator[Any]:
    yield from api_environment(stack, monkeypatch)


def lagging_route(account_api: Any, monkeypatch: pytest.MonkeyPatch, lagging: LaggingIndex) -> list[float]:
    """The route's dependencies as deployed, its session history on the lagging client (pauses recorded)."""
    from kilo_account_api import dependencies, handler  # noqa: PLC0415

    pauses: list[float] = []
    built = dependencies.dependencies()
    monkeypatch.setattr(handler, "dependencies", lambda: replace(built, sessions=history(account_api, lagging, pauses)))
    return pauses


def test_given_a_session_missing_from_the_index_at_first_when_the_owner_erases_then_it_is_erased_too(
    account_api: Any, monkeypatch: pytest.MonkeyPatch
) -> None:
    register(account_api, "acct")
    store_members(account_api, "acct", {"user-1": "owner"})  # the eraser (D202)
    put_sessions(account_api, ALICE, ZED)
    lagging = LaggingIndex(account_api.clients["dynamodb"], hidden=frozenset({"ROOM#RM_9"}), hidden_for=1)
    pauses = lagging_route(account_api, monkeypatch, lagging)
    with time_machine.travel(NOW, tick=False):
        erased = call("POST", "/v1/accounts/acct/erase", claims("acct", "owner"))
    assert (erased.status, erased.body["sessions_pseudonymised"]) == (200, 2), erased.body
    assert stored_identity(account_api, "RM_9", "PA_9") == pseudonym("acct", "zed")
    assert stored_identity(account_api, "RM_1", "PA_1") == pseudonym("acct", "alice")
    assert pauses == [0.5, 0.5]


def test_given_an_index_that_does_not_catch_up_when_the_owner_erases_then_503_and_a_retry_completes(
    account_api: Any, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Never claimed done while the index lists an identity: 503 (request id only, D34), what was written stays;
    the same request again, once the index has caught up, answers 200."""
    register(account_api, "acct")
    store_members(account_api, "acct", {"user-1": "owner"})  # the eraser (D202)
    put_sessions(account_api, ALICE)
    lagging = LaggingIndex(account_api.clients["dynamodb"], stale={"ROOM#RM_1": "alice"}, stale_for=10)
    pauses = lagging_route(account_api, monkeypatch, lagging)
    with time_machine.travel(NOW, tick=False):
        refused = call("POST", "/v1/accounts/acct/erase", claims("acct", "owner"))
        assert (refused.status, refused.body["code"]) == (503, "unavailable"), refused.body
        assert pauses == [0.5, 0.5, 1.0, 2.5]
        assert stored_identity(account_api, "RM_1", "PA_1") == pseudonym("acct", "alice")
        lagging.stale_for = 0
        again = call("POST", "/v1/accounts/acct/erase", claims("acct", "owner"))
    assert (again.status, again.body["sessions_pseudonymised"]) == (200, 0), again.body


# --- a session the index still lists under the account, stored (now) under another: never rewritten ---------------

BOB_ELSEWHERE = rating_session(
    "RM_5", "PA_5", "bob", "acct_b", ms(2026, 11, 2, 9), ms(2026, 11, 2, 10), [("2026-11", 60, 0)]
)


class MovedAway(LaggingIndex):
    """The first ``stale_for`` index queries for ``acct`` still list ``BOB_ELSEWHERE`` under ``acct`` (rating moved
    it to ``acct_b``, the index has not caught up): its entry as it was, account, start and identity."""

    def query(self, **request: Any) -> Any:
        answer = super().query(**request)
        listed_for = request.get("ExpressionAttributeValues", {}).get(":a", {}).get("S")
        if request.get("IndexName") != ACCOUNT_SESSIONS_INDEX or listed_for != "acct":
            return answer
        if self.index_queries > self.stale_for:
            return answer
        entry = to_item(
            {
                "pk": "ROOM#RM_5",
                "sk": "SESSION#PA_5",
                "account": "acct",
                "start_ms": BOB_ELSEWHERE.start_ms,
                "identity": "bob",
                "end_ms": BOB_ELSEWHERE.end_ms,
            }
        )
        return answer | {"Items": [*answer["Items"], entry], "Count": answer["Count"] + 1}


def test_given_a_stale_entry_of_a_session_now_stored_for_another_account_then_it_is_not_rewritten(
    stack: Any,
) -> None:
    """Review B finding 2: the strongly consistent read shows the session under ``acct_b``: ``acct``'s erasure leaves
    it as it is (it rewrote it with ``acct``'s pseudonym of bob before), and erases its own session."""
    put_sessions(stack, ALICE, BOB_ELSEWHERE)
    pauses: list[float] = []
    moved = MovedAway(stack.clients["dynamodb"], stale_for=1)
    assert history(stack, moved, pauses).pseudonymise("acct", x_pseudonym, MARK) == 1
    assert (stored_identity(stack, "RM_5", "PA_5"), stored_identity(stack, "RM_1", "PA_1")) == ("bob", "x-alice")
    assert pauses == [0.5]


def test_given_a_session_moved_to_another_account_between_read_and_rewrite_then_it_is_not_rewritten(
    stack: Any,
) -> None:
    """Rating moves bob's session from ``acct`` to ``acct_b`` (same identity) after the erasure read it: the
    rewrite's condition on the account refuses it; the next listing no longer shows it under ``acct``."""
    put_sessions(stack, replace(BOB_ELSEWHERE, account="acct"))
    table = stack.template.physical_name("UsageTable")
    client = stack.clients["dynamodb"]

    class RatingMovesIt(LaggingIndex):
        def update_item(self, **request: Any) -> Any:
            client.put_item(TableName=table, Item=session_to_item(StoredSession.of(BOB_ELSEWHERE, {})))
            return client.update_item(**request)

    pauses: list[float] = []
    assert history(stack, RatingMovesIt(client), pauses).pseudonymise("acct", x_pseudonym, MARK) == 0
    item = client.get_item(TableName=table, Key=to_item({"pk": "ROOM#RM_5", "sk": "SESSION#PA_5"}))["Item"]
    assert (item["identity"]["S"], item["account"]["S"]) == ("bob", "acct_b")


def test_given_a_stale_entry_of_a_session_now_stored_for_another_account_when_the_owner_exports_then_it_is_left_out(
    account_api: Any, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The index still lists bob's session (now ``acct_b``'s) under ``acct``: ``acct``'s export holds its own session
    only - never ``acct_b``'s participant identity, room or minutes (D293)."""
    register(account_api, "acct")
    store_members(account_api, "acct", {"user-1": "owner"})
    put_sessions(account_api, ALICE, BOB_ELSEWHERE)
    lagging_route(account_api, monkeypatch, MovedAway(account_api.clients["dynamodb"], stale_for=99))
    with time_machine.travel(NOW, tick=False):
        exported = call("GET", "/v1/accounts/acct/export", claims("acct", "owner"))
    assert exported.status == 200, exported.body
    assert [(s["room_sid"], s["identity"]) for s in exported.body["sessions"]] == [("RM_1", "alice")]
    assert "bob" not in str(exported.body)


def test_given_a_stale_entry_of_a_session_now_stored_for_another_account_when_a_member_lists_meetings_then_it_is_left_out(
    account_api: Any, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The same stale entry: ``acct``'s meetings of November show alice's room with her 60 video minutes, not
    ``acct_b``'s room RM_5 (``name-RM_5``) and its 60 minutes."""
    register(account_api, "acct")
    put_sessions(account_api, ALICE, BOB_ELSEWHERE)
    lagging_route(account_api, monkeypatch, MovedAway(account_api.clients["dynamodb"], stale_for=99))
    with time_machine.travel(NOW, tick=False):
        listed = call("GET", "/v1/accounts/acct/meetings", claims("acct", "member"), query="period=2026-11")
    assert listed.status == 200, listed.body
    rooms = [(m["room_sid"], m["room_name"], m["participants"], m["video_minutes"]) for m in listed.body["meetings"]]
    assert rooms == [("RM_1", "name-RM_1", 1, 60)]


def test_given_an_index_that_never_catches_up_when_the_owner_erases_then_members_and_invitees_are_erased_anyway(
    account_api: Any, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Review B finding 1: the sessions' passes end in a 503, yet the members' and invitees' e-mails (their query is
    strongly consistent, no index to wait for) are pseudonymised already - an incomplete erasure still erases them."""
    from kilo_account_api.adapters import DynamoMembers  # noqa: PLC0415
    from kilo_account_api.model import Member  # noqa: PLC0415
    from kilo_billing.auth import Role  # noqa: PLC0415

    register(account_api, "acct")
    members = DynamoMembers(account_api.clients["dynamodb"], account_api.template.physical_name("MembersTable"))
    members.add(Member("acct", "user-1", "olga@acme.example", Role.OWNER, utc(2026, 1, 1)))
    put_sessions(account_api, ALICE)
    lagging = LaggingIndex(account_api.clients["dynamodb"], stale={"ROOM#RM_1": "alice"}, stale_for=99)
    lagging_route(account_api, monkeypatch, lagging)
    with time_machine.travel(NOW, tick=False):
        invited = call(
            "POST", "/v1/accounts/acct/members", claims("acct", "owner"), {"user": "ivan", "email": "ivan@x.example"}
        )
        assert invited.status == 201, invited.body
        refused = call("POST", "/v1/accounts/acct/erase", claims("acct", "owner"))
    assert (refused.status, refused.body["code"]) == (503, "unavailable"), refused.body
    emails = {m.user: m.email for m in members.members("acct")}
    assert emails == {
        "user-1": pseudonym("acct", "olga@acme.example"),
        "ivan": pseudonym("acct", "ivan@x.example"),
    }
