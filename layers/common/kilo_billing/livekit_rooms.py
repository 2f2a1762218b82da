"""The one way a function calls LiveKit's RoomService (the sweeper's room listing, the alerts' enforcement): the
credentials read once per call ("keys unreadable" and "not configured" told apart), each key tried in order on one
aiohttp session, a 401 on a key other than the last moving to the next (a retired key during a rotation), a
``not_found`` / 404 meaning the room or participant is gone, anything else a failure. Each adapter maps
``RoomGoneError`` / ``RoomServiceFailedError`` to its own port's answer.

aiohttp and livekit-api are imported inside the calls only: importing this module loads neither, so a handler that
imports an adapter using it stays light at cold start (tests/unit/test_import_graph.py)."""

from __future__ import annotations

from collections.abc import Awaitable, Callable, Sequence
from typing import Any, TypeVar

_T = TypeVar("_T")


class RoomGoneError(LookupError):
    """RoomService answered ``not_found`` (404): the room, or the participant in it, is gone."""


class RoomServiceFailedError(Exception):
    """RoomService could not be asked, refused every key, or failed: nothing is known (never taken as gone)."""


def room_credentials(url: str, credentials: Callable[[], Sequence[tuple[str, str]]]) -> list[tuple[str, str]]:
    """The (key, secret) pairs to try, in order; ``RoomServiceFailedError`` when the keys cannot be read or the URL or
    the keys are not configured."""
    try:
        found = list(credentials()) if url else []
    except Exception as exc:  # the secret unreadable: nothing can be asked, and that is reported
        raise RoomServiceFailedError(f"LiveKit keys unreadable: {type(exc).__name__}") from exc
    if not found:
        raise RoomServiceFailedError("RoomService is not configured (URL or keys)")
    return found


async def call_room_service(
    url: str, credentials: Sequence[tuple[str, str]], operation: Callable[[Any], Awaitable[_T]], http: Any
) -> _T:
    """``operation(client)`` with a ``livekit.api.LiveKitAPI`` client on the aiohttp session ``http``, for each key in
    turn until one is not refused with a 401 (the last key's 401 fails)."""
    import aiohttp  # noqa: PLC0415 - only where RoomService is called
    from livekit import api  # noqa: PLC0415

    for index, (key, secret) in enumerate(credentials):
        client = api.LiveKitAPI(url, key, secret, session=http)
        try:
            return await operation(client)
        except api.TwirpError as exc:
            if exc.code == "not_found" or exc.status == 404:
                raise RoomGoneError(f"RoomService: {exc.message}") from exc
            if exc.status == 401 and index < len(credentials) - 1:
                continue  # a retired key during a rotation: try the next one
            raise RoomServiceFailedError(f"RoomService {exc.status} {exc.code}") from exc
        except (aiohttp.ClientError, TimeoutError) as exc:
            raise RoomServiceFailedError(f"RoomService unreachable: {type(exc).__name__}") from exc
    raise RoomServiceFailedError("RoomService is not configured (URL or keys)")
