"""The layer's one RoomService call (kilo_billing.livekit_rooms), with livekit-api's own client against the local
Twirp RoomService (kilo_dev.fake_livekit, on 127.0.0.1, checking the roomAdmin token signed with each key): the key
rotation, gone rooms, refusals, failures and an unreachable server, as the sweeper and the alerts' enforcement see
them. Importing the module loads neither aiohttp nor livekit (the handlers' cold start)."""

from __future__ import annotations

import asyncio
import socket
import subprocess
import sys
from collections.abc import Iterator, Sequence
from typing import Any

import pytest

from kilo_billing.livekit_rooms import RoomGoneError, RoomServiceFailedError, call_room_service, room_credentials
from kilo_dev.fake_livekit import FakeLiveKit
from tests.conftest import LIVEKIT_KEYS

CURRENT = ("APIkeyCurrent", LIVEKIT_KEYS["APIkeyCurrent"])
RETIRED = ("APIkeyAAretired", "retired-secret-0123456789abcdef-0123")


@pytest.fixture
def server() -> Iterator[FakeLiveKit]:
    running = FakeLiveKit(dict([CURRENT]))
    running.start()
    yield running
    running.stop()


def listing(url: str, credentials: Sequence[tuple[str, str]], room: str) -> list[str]:
    async def go() -> list[str]:
        import aiohttp  # noqa: PLC0415
        from livekit import api  # noqa: PLC0415

        async with aiohttp.ClientSession(timeout=aiohttp.ClientTimeout(total=3.0)) as http:
            request = api.ListParticipantsRequest(room=room)

            async def ask(client: Any) -> Any:
                return await client.room.list_participants(request)

            response = await call_room_service(url, credentials, ask, http)
            return [participant.identity for participant in response.participants]

    return asyncio.run(go())


def test_given_a_retired_key_first_then_the_next_key_answers(server: FakeLiveKit) -> None:
    server.rooms["standup"] = [("PA_a", "alice"), ("PA_b", "bob")]
    assert listing(server.url, [RETIRED, CURRENT], "standup") == ["alice", "bob"]
    assert len(server.requests) == 1  # the retired key was refused before the request counted


def test_given_only_refused_keys_then_it_fails_and_is_never_gone(server: FakeLiveKit) -> None:
    with pytest.raises(RoomServiceFailedError, match="RoomService 401 unauthenticated"):
        listing(server.url, [("APIkeyCurrent", "not-the-secret-0123456789abcdef-0123456789"), RETIRED], "standup")


def test_given_a_room_that_is_not_there_then_it_is_gone_whatever_key_answers(server: FakeLiveKit) -> None:
    with pytest.raises(RoomGoneError):
        listing(server.url, [RETIRED, CURRENT], "gone")


def test_given_a_server_failure_then_it_fails_without_trying_another_key(server: FakeLiveKit) -> None:
    server.rooms["standup"] = [("PA_a", "alice")]
    server.failures.append((503, "unavailable"))
    with pytest.raises(RoomServiceFailedError, match="RoomService 503 unavailable"):
        listing(server.url, [CURRENT, CURRENT], "standup")
    assert listing(server.url, [CURRENT], "standup") == ["alice"]  # the next call is answered


def test_given_nothing_listening_then_it_fails_as_unreachable() -> None:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        url = f"http://127.0.0.1:{probe.getsockname()[1]}"
    with pytest.raises(RoomServiceFailedError, match="RoomService unreachable: Client"):
        listing(url, [CURRENT], "standup")


def test_given_the_keys_unreadable_or_missing_then_nothing_is_asked_and_each_case_is_named() -> None:
    def unreadable() -> list[tuple[str, str]]:
        raise PermissionError("AccessDenied")

    with pytest.raises(RoomServiceFailedError, match=r"^LiveKit keys unreadable: PermissionError$"):
        room_credentials("http://127.0.0.1:1", unreadable)
    for url, keys in (("", [CURRENT]), ("http://127.0.0.1:1", [])):
        with pytest.raises(RoomServiceFailedError, match=r"^RoomService is not configured \(URL or keys\)$"):
            room_credentials(url, lambda keys=keys: keys)  # type: ignore[misc]
    assert room_credentials("http://127.0.0.1:1", lambda: [RETIRED, CURRENT]) == [RETIRED, CURRENT]


def test_importing_the_module_loads_neither_aiohttp_nor_livekit() -> None:
    probe = (
        "import sys, kilo_billing.livekit_rooms; print(sorted(m for m in ('aiohttp', 'livekit') if m in sys.modules))"
    )
    loaded = subprocess.run([sys.executable, "-c", probe], capture_output=True, text=True, check=True).stdout
    assert loaded.strip() == "[]"
