"""Attribution from the room metadata's timeline (D163): answers equal an independent reference written here, and a
rebuild's work grows with sessions plus metadata runs, never with their product (review s6, finding 2).

The reference (``reference_account``) is D163's wording, one session at a time, scanning the runs from the start:
the first run reported at or after the session's start; its valid account, else the latest valid account reported
before it, else the first reported after it; no run at or after the start: the latest valid account of all.
"""

from __future__ import annotations

import json

import pytest
from hypothesis import given
from hypothesis import strategies as st

from kilo_billing.livekit_events import LiveKitEventRecord
from kilo_rate_usage import sessions as sessions_module
from kilo_rate_usage.model import AttributionRule
from kilo_rate_usage.sessions import MetadataRun, RoomAccounts, rebuild_room

T0 = 1_794_304_800  # 2026-11-10T10:00:00Z
ROOM_ONLY = AttributionRule((("room_metadata", "account_id"),))
TEXTS = ['{"account_id":"acct-a"}', '{"account_id":"acct-b"}', '{"topic":"Q4"}', '{"account_id":"not valid!"}', "",
         "not json", '{"org":"acct-c"}']  # fmt: skip
VALID = {TEXTS[0]: "acct-a", TEXTS[1]: "acct-b"}  # by hand: the texts with a valid id under "account_id"


def reference_account(runs: list[MetadataRun], start_s: int) -> str | None:
    reached = next((i for i, (_, last, _) in enumerate(runs) if last >= start_s), None)
    valid = [VALID.get(text) for _, _, text in runs]
    earlier = [v for v in valid[: len(runs) if reached is None else reached] if v is not None]
    if reached is None:
        return earlier[-1] if earlier else None
    later = [v for v in valid[reached + 1 :] if v is not None]
    return valid[reached] or (earlier[-1] if earlier else None) or (later[0] if later else None)


@st.composite
def timelines(draw: st.DrawFn) -> list[MetadataRun]:
    """Runs as a fold builds them: in time order, each a different text from the one before it."""
    runs: list[MetadataRun] = []
    at = T0
    for _ in range(draw(st.integers(0, 8))):
        text = draw(st.sampled_from([t for t in TEXTS if not runs or t != runs[-1][2]]))
        first = at + draw(st.integers(0, 30))
        last = first + draw(st.integers(0, 30))
        runs.append((first, last, text))
        at = last
    return runs


@given(timelines(), st.lists(st.integers(T0 - 10, T0 + 600), min_size=1, max_size=6))
def test_each_sessions_room_account_equals_the_reference(runs: list[MetadataRun], starts: list[int]) -> None:
    accounts = RoomAccounts(runs)
    for start_s in starts:
        assert accounts.account("account_id", start_s * 1000 + 999) == reference_account(runs, start_s)


def test_hand_worked_timeline() -> None:
    runs = [(T0, T0 + 5, TEXTS[2]), (T0 + 10, T0 + 20, TEXTS[0]), (T0 + 30, T0 + 30, TEXTS[2]),
            (T0 + 40, T0 + 50, TEXTS[1])]  # fmt: skip
    accounts = RoomAccounts(runs)
    assert accounts.account("account_id", (T0 - 5) * 1000) == "acct-a"  # topic first, nothing before: the first after
    assert accounts.account("account_id", (T0 + 15) * 1000) == "acct-a"  # inside acct-a's run
    assert accounts.account("account_id", (T0 + 25) * 1000) == "acct-a"  # topic: the latest valid before it
    assert accounts.account("account_id", (T0 + 31) * 1000) == "acct-b"  # the first report at or after: acct-b
    assert accounts.account("account_id", (T0 + 60) * 1000) == "acct-b"  # after every run: the latest valid one


def _event(n: int, event_type: str, at: int, sid: str, joined_s: int, metadata: str) -> LiveKitEventRecord:
    return LiveKitEventRecord(
        event_id=f"EV_{n:06d}", event_type=event_type, created_at=at, api_key="k", body=b"", received_at_ms=0,
        room_sid="RM_busy", room_name="busy", participant_sid=sid, joined_at_ms=joined_s * 1000, room_metadata=metadata,
    )  # fmt: skip


@pytest.mark.parametrize("sessions", [100, 400])
def test_a_rebuild_parses_each_metadata_run_once_whatever_the_number_of_sessions(
    monkeypatch: pytest.MonkeyPatch, sessions: int
) -> None:
    # an app that rewrites the room's metadata on every join (a roster): one run per join, `sessions` runs; acct-a
    # throughout, so every session is attributed from the room-metadata step
    parsed: list[str] = []
    real = sessions_module._json_value

    def counting(text: str, key: str) -> str | None:
        parsed.append(text)
        return real(text, key)

    monkeypatch.setattr(sessions_module, "_json_value", counting)

    def metadata(at: int) -> str:  # the room's metadata at `at`: rewritten by each join, every second
        return json.dumps({"account_id": "acct-a", "seats": min(at - T0, sessions - 1)})

    events = []
    for i in range(sessions):
        events.append(_event(2 * i, "participant_joined", T0 + i, f"PA_{i:04d}", T0 + i, metadata(T0 + i)))
        events.append(
            _event(2 * i + 1, "participant_left", T0 + i + 120, f"PA_{i:04d}", T0 + i, metadata(T0 + i + 120))
        )

    rebuilt = rebuild_room(events, ROOM_ONLY)

    assert len(rebuilt) == sessions
    assert {s.account for s in rebuilt} == {"acct-a"}
    # `sessions` runs (one per join; each left reports the metadata of a join), each parsed once for the rebuild (was
    # once per session per run up to its start: about sessions^2 / 2)
    assert len(parsed) == sessions
    assert sorted(parsed) == sorted({e.room_metadata for e in events})
