"""The operator checks' session reads over eventually consistent indexes (D318), on moto: the abuse scan counts
an account's open sessions (a Scan of the sparse ``open_sessions`` index) and the sessions it started lately (a
Query of ``account_sessions``). Rating moves a session between accounts (room metadata) and the index lags, so a
listing under one account may name a session now stored for another. moto's indexes are always up to date: the
clients below play the lag (the real moto client, its index answers held back as a lagging GSI's would be), the
reader is the real adapter (``DynamoUsageSignals``).

Figures: ``acct``'s bob is in 3 calls at once (RM_1..RM_3, open since 09:00); a fourth open session of a bob,
RM_8, is stored for ``acct_b`` (rating moved it), the lagging ``open_sessions`` index still lists it under ``acct``.
The concurrency threshold is 4 calls at once (``AbuseThresholds``): counted under ``acct`` it flags (and with
``auto_hold`` holds) ``acct`` for 4 calls; ``acct`` is in 3."""

from __future__ import annotations

from typing import Any

from kilo_alerts.abuse import AbuseThresholds, concurrent_sessions
from kilo_billing.usage_signals import OpenSession, SessionStart
from kilo_billing.usage_signals_items import OPEN_INDEX
from kilo_billing.usage_signals_store import DynamoUsageSignals
from tests.contract.test_account_api_stores import ms, rating_session
from tests.integration.test_account_api_erasure_index import (
    ALICE,
    BOB_ELSEWHERE,
    LaggingIndex,
    MovedAway,
    put_sessions,
)

NINE = ms(2026, 11, 2, 9)
NOW = ms(2026, 11, 2, 9, 30)
OPEN_HERE = [rating_session(f"RM_{n}", f"PA_{n}", "bob", "acct", NINE, None, []) for n in (1, 2, 3)]
MOVED_OPEN = rating_session("RM_8", "PA_8", "bob", "acct_b", NINE, None, [])


class StaleIndexes(MovedAway):
    """The moto client, its index answers lagging behind rating's moves: ``account_sessions`` queries for ``acct``
    still list RM_5 (``BOB_ELSEWHERE``, now ``acct_b``'s; D293's ``MovedAway``), and ``open_sessions`` scans still
    list RM_8 under ``acct``."""

    def __init__(self, client: Any) -> None:
        super().__init__(client, stale_for=99)

    def scan(self, **request: Any) -> Any:
        answer = self._client.scan(**request)
        if request.get("IndexName") != OPEN_INDEX:
            return answer
        moved = ("ROOM#RM_8", "name-RM_8")  # the entry's key, or its room name when the key is not projected
        items = [
            item | {"open_account": {"S": "acct"}}
            if any(item.get(name, {}).get("S") in moved for name in ("pk", "room_name"))
            else item
            for item in answer["Items"]
        ]
        return answer | {"Items": items}


def _signals(stack: Any, client: Any) -> DynamoUsageSignals:
    return DynamoUsageSignals(client, stack.template.physical_name("UsageTable"))


def test_given_a_stale_open_entry_of_a_session_now_stored_for_another_account_then_it_counts_for_that_one(
    stack: Any,
) -> None:
    """Before D318: ``acct``'s bob counted in 4 calls (RM_1, RM_2, RM_3, RM_8) - a concurrent_sessions flag on
    ``acct``. Now: the 3 sessions stored for ``acct``, no flag; RM_8 counts for ``acct_b``, where it is stored."""
    put_sessions(stack, *OPEN_HERE, MOVED_OPEN)
    found = _signals(stack, StaleIndexes(stack.clients["dynamodb"])).open_sessions()
    assert found == [
        *(OpenSession("acct", "bob", f"name-RM_{n}", NINE) for n in (1, 2, 3)),
        OpenSession("acct_b", "bob", "name-RM_8", NINE),
    ]
    assert concurrent_sessions(found, AbuseThresholds(), NOW) == []


def test_given_a_stale_open_entry_of_a_session_moved_to_an_abuser_then_the_abuser_is_still_flagged(
    stack: Any,
) -> None:
    """A review of D318: ``acct_b``'s bob is in RM_1..RM_3 (listed right) and RM_8 (moved to ``acct_b``, the index
    still lists it under ``acct``): 4 calls at once - ``acct_b`` flagged. D318 as first written kept an item only
    under the account it was listed under: RM_8 was nobody's, 3 calls, no flag (a missed abuser)."""
    put_sessions(stack, *(rating_session(f"RM_{n}", f"PA_{n}", "bob", "acct_b", NINE, None, []) for n in (1, 2, 3)))
    put_sessions(stack, MOVED_OPEN)
    found = _signals(stack, StaleIndexes(stack.clients["dynamodb"])).open_sessions()
    assert [session.account_id for session in found] == ["acct_b"] * 4
    assert [flag.account_id for flag in concurrent_sessions(found, AbuseThresholds(), NOW)] == ["acct_b"]


def test_given_a_stale_entry_of_a_session_now_stored_for_another_account_then_its_start_is_not_counted(
    stack: Any,
) -> None:
    """The ``account_sessions`` index still lists bob's RM_5 (now ``acct_b``'s) under ``acct``: the sessions ``acct``
    started since November 1st are alice's alone (before: alice's and bob's, a connection counted for ``acct``)."""
    put_sessions(stack, ALICE, BOB_ELSEWHERE)
    found = _signals(stack, StaleIndexes(stack.clients["dynamodb"])).sessions_started("acct", ms(2026, 11, 1))
    assert found == [SessionStart("acct", "alice", ms(2026, 11, 2, 9), ms(2026, 11, 2, 10))]


def test_given_an_up_to_date_index_then_each_account_reads_its_own_sessions(stack: Any) -> None:
    """No lag: the same reads give each account its own sessions (the check drops nothing stored for it)."""
    put_sessions(stack, ALICE, BOB_ELSEWHERE, *OPEN_HERE, MOVED_OPEN)
    signals = _signals(stack, stack.clients["dynamodb"])
    assert signals.sessions_started("acct_b", ms(2026, 11, 1)) == [
        SessionStart("acct_b", "bob", NINE, ms(2026, 11, 2, 10)),
        SessionStart("acct_b", "bob", NINE, None),
    ]
    assert signals.open_sessions() == [
        *(OpenSession("acct", "bob", f"name-RM_{n}", NINE) for n in (1, 2, 3)),
        OpenSession("acct_b", "bob", "name-RM_8", NINE),
    ]


class ClosedStillOpen(LaggingIndex):
    """The moto client, its ``open_sessions`` index lagging behind a close: RM_4 (bob's, ``acct``'s, ended at 09:20)
    is still listed as open under ``acct`` (``account_sessions`` answers as they are)."""

    def scan(self, **request: Any) -> Any:
        answer = self._client.scan(**request)
        if request.get("IndexName") != OPEN_INDEX:
            return answer
        listed = {"pk": {"S": "ROOM#RM_4"}, "sk": {"S": "SESSION#PA_4"}, "open_account": {"S": "acct"}}
        return answer | {"Items": [*answer["Items"], listed]}


def test_given_a_closed_session_the_lagging_open_index_still_lists_then_it_is_not_counted_open(stack: Any) -> None:
    """``acct``'s bob in RM_1..RM_3 (open) and RM_4, ended at 09:20 but still listed by the lagging ``open_sessions``
    index: 3 open calls, no concurrent_sessions flag (threshold 4). Before: RM_4 counted open - 4 calls, a flag on
    ``acct`` (D318's item read carries ``end_ms``: dropped at no extra read)."""
    closed = rating_session("RM_4", "PA_4", "bob", "acct", NINE, ms(2026, 11, 2, 9, 20), [])
    put_sessions(stack, *OPEN_HERE, closed)
    found = _signals(stack, ClosedStillOpen(stack.clients["dynamodb"])).open_sessions()
    assert found == [OpenSession("acct", "bob", f"name-RM_{n}", NINE) for n in (1, 2, 3)]
    assert concurrent_sessions(found, AbuseThresholds(), NOW) == []
