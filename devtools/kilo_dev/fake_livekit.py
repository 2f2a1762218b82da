"""A local stand-in for LiveKit's RoomService (Twirp, protobuf and JSON), for tests and the demo: it answers
``ListParticipants`` from a room table the caller keeps, and checks the caller's roomAdmin token like LiveKit does.
Binds 127.0.0.1 on a free port; whoever starts it stops it."""

from __future__ import annotations

import json
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

import jwt
from livekit.protocol.models import ParticipantInfo
from livekit.protocol.room import ListParticipantsRequest, ListParticipantsResponse

ROOM_PATH = "/twirp/livekit.RoomService/ListParticipants"


class FakeLiveKit(ThreadingHTTPServer):
    """Who is in which room, served as LiveKit's RoomService does; checks the caller's roomAdmin token."""

    daemon_threads = True

    def __init__(self, keys: dict[str, str]) -> None:
        super().__init__(("127.0.0.1", 0), _Handler)
        self.keys = dict(keys)
        self.rooms: dict[str, list[tuple[str, str]]] = {}  # room name -> [(sid, identity)]
        self.requests: list[tuple[str, str]] = []  # (content type, room)
        self._thread: threading.Thread | None = None

    def start(self) -> None:
        self._thread = threading.Thread(target=self.serve_forever, name="fake-livekit", daemon=True)
        self._thread.start()

    def stop(self) -> None:
        self.shutdown()
        self.server_close()
        if self._thread is not None:
            self._thread.join(timeout=5)

    @property
    def url(self) -> str:
        host, port = self.server_address[:2]
        return f"http://{host!s}:{port}"


class _Handler(BaseHTTPRequestHandler):
    server: FakeLiveKit

    def log_message(self, *args: Any) -> None:  # keep test output quiet
        return

    def _reply(self, status: int, content_type: str, body: bytes) -> None:
        self.send_response(status)
        self.send_header("Content-Type", content_type)
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def _error(self, status: int, code: str, message: str) -> None:
        self._reply(status, "application/json", json.dumps({"code": code, "msg": message}).encode())

    def do_POST(self) -> None:
        if self.path != ROOM_PATH:
            self._error(404, "bad_route", f"no handler for path {self.path}")
            return
        content_type = self.headers.get("Content-Type", "")
        raw = self.rfile.read(int(self.headers.get("Content-Length", "0")))
        if content_type.startswith("application/protobuf"):
            room = ListParticipantsRequest.FromString(raw).room
        else:
            room = json.loads(raw or b"{}").get("room", "")
        token = self.headers.get("Authorization", "").removeprefix("Bearer ")
        try:
            issuer = jwt.decode(token, options={"verify_signature": False}).get("iss", "")
            claims = jwt.decode(token, self.server.keys.get(issuer, ""), algorithms=["HS256"])
        except jwt.PyJWTError:
            self._error(401, "unauthenticated", "invalid token")
            return
        if not claims.get("video", {}).get("roomAdmin") or claims["video"].get("room") != room:
            self._error(403, "permission_denied", "roomAdmin grant for this room required")
            return
        self.server.requests.append((content_type, room))
        if room not in self.server.rooms:
            self._error(404, "not_found", "requested room does not exist")
            return
        response = ListParticipantsResponse(
            participants=[ParticipantInfo(sid=sid, identity=identity) for sid, identity in self.server.rooms[room]]
        )
        if content_type.startswith("application/protobuf"):
            self._reply(200, "application/protobuf", response.SerializeToString())
        else:
            from google.protobuf import json_format  # noqa: PLC0415

            self._reply(200, "application/json", json_format.MessageToJson(response).encode())
