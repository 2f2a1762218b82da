"""LiveKit RoomService through the official SDK (``livekit-api``, Twirp): who is still in each room."""

from __future__ import annotations

import asyncio
from collections.abc import Mapping, Sequence


class LiveKitRoomDirectory:
    def __init__(self, url: str, api_key: str, api_secret: str, timeout_seconds: float = 10.0) -> None:
        self._url = url
        self._key = api_key
        self._secret = api_secret
        self._timeout = timeout_seconds

    def participants(self, room_names: Sequence[str]) -> Mapping[str, set[str] | None]:
        return asyncio.run(self._participants(room_names))

    async def _participants(self, room_names: Sequence[str]) -> dict[str, set[str] | None]:
        import aiohttp  # noqa: PLC0415
        from livekit import api  # noqa: PLC0415

        result: dict[str, set[str] | None] = {}
        timeout = aiohttp.ClientTimeout(total=self._timeout)
        async with aiohttp.ClientSession(timeout=timeout) as session:
            client = api.LiveKitAPI(self._url, self._key, self._secret, session=session)
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
