"""A local stand-in for LiveKit's RoomService (Twirp, protobuf and JSON), for tests and the demo: it answers
``ListParticipants`` and ``GetParticipant`` from a room table the caller keeps (``infos``: more of a participant's
``ParticipantInfo`` - kind, join time - for ``ListParticipants``; a participant's permission: the last one set, else
``permissions``' preset, else what a plain roomJoin token grants), applies ``UpdateParticipant`` (permissions,
replaced whole as LiveKit does) and ``RemoveParticipant`` to it, records every update/remove request in order (as Twirp
JSON, ``calls``), and checks the caller's roomAdmin token like LiveKit does. ``failures`` scripts errors for the next
requests. Binds 127.0.0.1 on a free port; whoever starts it stops it."""

from __future__ import annotations

import json
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

import jwt
from google.protobuf import json_format
from google.protobuf.message import Message
from livekit.protocol.models import ParticipantInfo, ParticipantPermission
from livekit.protocol.room import (
    ListParticipantsRequest,
    ListParticipantsResponse,
    RemoveParticipantResponse,
    RoomParticipantIdentity,
    UpdateParticipantRequest,
)

from kilo_dev import processes

SERVICE_PREFIX = "/twirp/livekit.RoomService/"
JOINED: dict[str, Any] = {"canSubscribe": True, "canPublish": True, "canPublishData": True}  # a roomJoin token's
ROOM_PATH = SERVICE_PREFIX + "ListParticipants"
REQUESTS: dict[str, type[Message]] = {
    "ListParticipants": ListParticipantsRequest,
    "GetParticipant": RoomParticipantIdentity,
    "UpdateParticipant": UpdateParticipantRequest,
    "RemoveParticipant": RoomParticipantIdentity,
}


class FakeLiveKit(ThreadingHTTPServer):
    """Who is in which room, served as LiveKit's RoomService does; checks the caller's roomAdmin token."""

    daemon_threads = True

    def __init__(self, keys: dict[str, str]) -> None:
        super().__init__(("127.0.0.1", 0), _Handler)
        self.keys = dict(keys)
        self.rooms: dict[str, list[tuple[str, str]]] = {}  # room name -> [(sid, identity)]
        # participant sid -> more of its ParticipantInfo for ListParticipants (kind, joined_at, joined_at_ms, ...)
        self.infos: dict[str, dict[str, Any]] = {}
        self.requests: list[tuple[str, str]] = []  # ListParticipants: (content type, room)
        self.calls: list[tuple[str, dict[str, Any]]] = []  # UpdateParticipant / RemoveParticipant, as Twirp JSON
        # (room, identity) -> permission last set (Twirp JSON); preset one to give a participant other grants
        self.permissions: dict[tuple[str, str], dict[str, Any]] = {}
        self.failures: list[tuple[int, str]] = []  # (status, twirp code) answered to the next requests
        self.lock = threading.Lock()
        self._thread: threading.Thread | None = None

    def start(self) -> None:
        self._thread = threading.Thread(target=processes.serving(self), name="fake-livekit", daemon=True)
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
        method = self.path.removeprefix(SERVICE_PREFIX) if self.path.startswith(SERVICE_PREFIX) else ""
        if method not in REQUESTS:
            self._error(404, "bad_route", f"no handler for path {self.path}")
            return
        content_type = self.headers.get("Content-Type", "")
        raw = self.rfile.read(int(self.headers.get("Content-Length", "0")))
        protobuf = content_type.startswith("application/protobuf")
        request = REQUESTS[method]()
        if protobuf:
            request.ParseFromString(raw)
        else:
            json_format.Parse(raw or b"{}", request)
        room = str(getattr(request, "room", ""))  # every RoomService request names its room
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
        with self.server.lock:
            if method == "ListParticipants":
                self.server.requests.append((content_type, room))
            elif method != "GetParticipant":
                self.server.calls.append((method, json_format.MessageToDict(request)))
            if self.server.failures:
                status, code = self.server.failures.pop(0)
                self._error(status, code, "scripted failure")
                return
            response = self._answer(method, request)
        if response is None:
            self._error(404, "not_found", "requested room or participant does not exist")
        elif protobuf:
            self._reply(200, "application/protobuf", response.SerializeToString())
        else:
            self._reply(200, "application/json", json_format.MessageToJson(response).encode())

    def _answer(self, method: str, request: Any) -> Message | None:
        rooms = self.server.rooms
        if request.room not in rooms:
            return None
        if method == "ListParticipants":
            return ListParticipantsResponse(
                participants=[
                    ParticipantInfo(sid=sid, identity=identity, **self.server.infos.get(sid, {}))
                    for sid, identity in rooms[request.room]
                ]
            )
        present = [(sid, identity) for sid, identity in rooms[request.room] if identity == request.identity]
        if not present:
            return None
        if method == "GetParticipant":
            granted = self.server.permissions.get((request.room, request.identity), JOINED)
            permission = json_format.ParseDict(granted, ParticipantPermission())
            return ParticipantInfo(sid=present[0][0], identity=request.identity, permission=permission)
        if method == "RemoveParticipant":
            rooms[request.room] = [entry for entry in rooms[request.room] if entry[1] != request.identity]
            return RemoveParticipantResponse()
        self.server.permissions[(request.room, request.identity)] = json_format.MessageToDict(request.permission)
        return ParticipantInfo(sid=present[0][0], identity=request.identity, permission=request.permission)
