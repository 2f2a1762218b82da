"""LiveKit RoomService through the official SDK (``livekit-api``, Twirp): who is still in each room."""

from __future__ import annotations

import asyncio
from collections.abc import Mapping, Sequence


class LiveKitRoomDirectory:
    """``credentials``: every (API key, secret) pair configured; during a key rotation LiveKit may already refuse the
    first, so a refused key (401) is followed by the next one before the sweep fails."""

    def __init__(self, url: str, credentials: Sequence[tuple[str, str]], timeout_seconds: float = 10.0) -> None:
        if not credentials:
            raise ValueError("RoomService needs at least one API key and secret")
        self._url = url
        self._credentials = list(credentials)
        self._timeout = timeout_seconds

    def participants(self, room_names: Sequence[str]) -> Mapping[str, set[str] | None]:
        from livekit import api  # noqa: PLC0415

        for index, (key, secret) in enumerate(self._credentials):
            try:
                return asyncio.run(self._participants(room_names, key, secret))
            except api.TwirpError as exc:
                if exc.status != 401 or index == len(self._credentials) - 1:
                    raise
        raise AssertionError("unreachable")

    async def _participants(self, room_names: Sequence[str], key: str, secret: str) -> dict[str, set[str] | None]:
        import aiohttp  # noqa: PLC0415
        from livekit import api  # noqa: PLC0415

        result: dict[str, set[str] | None] = {}
        timeout = aiohttp.ClientTimeout(total=self._timeout)
        async with aiohttp.ClientSession(timeout=timeout) as session:
            client = api.LiveKitAPI(self._url, key, secret, session=session)
            for name in room_names:
                try:
                    response = await client.room.list_participants(api.ListParticipantsRequest(room=name))
                except api.TwirpError as exc:
                    if exc.code == "not_found" or exc.status == 404:
                        result[name] = None  # the room is gone: everyone in it has left
                        continue
                    raise
                result[name] = {participant.sid for participant in response.participants}
        return result
