"""The sweeper against a local HTTP server speaking LiveKit's Twirp RoomService (protobuf and JSON), end to end on
moto: open sessions LiveKit no longer has are closed as "swept", over-long ones "capped", and rating rebuilds them.
Also the month-to-date query, which counts sessions still open up to now."""

from __future__ import annotations

import json
import threading
import time
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

import jwt
import pytest
from livekit.protocol.models import ParticipantInfo
from livekit.protocol.room import ListParticipantsRequest, ListParticipantsResponse

from kilo_dev import livekit_events as lk
from tests.conftest import LIVEKIT_KEYS, LambdaContext, Stack
from tests.integration.test_rating_stream import Lambda, deliver_webhook

ROOM_PATH = "/twirp/livekit.RoomService/ListParticipants"


class FakeLiveKit(ThreadingHTTPServer):
    """Who is in which room, served as LiveKit's RoomService does; checks the caller's roomAdmin token."""

    def __init__(self) -> None:
        super().__init__(("127.0.0.1", 0), _Handler)
        self.rooms: dict[str, list[tuple[str, str]]] = {}  # room name -> [(sid, identity)]
        self.requests: list[tuple[str, str]] = []  # (content type, room)

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
            claims = jwt.decode(token, LIVEKIT_KEYS["APIkeyCurrent"], algorithms=["HS256"])
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


@pytest.fixture
def livekit_server() -> Iterator[FakeLiveKit]:
    server = FakeLiveKit()
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    yield server
    server.shutdown()
    server.server_close()
    thread.join(timeout=5)


def test_given_the_roomservice_adapter_then_it_lists_participants_and_reports_gone_rooms(
    livekit_server: FakeLiveKit,
) -> None:
    from kilo_rate_usage.roomservice import LiveKitRoomDirectory  # noqa: PLC0415

    livekit_server.rooms["standup"] = [("PA_a", "alice"), ("PA_b", "bob")]
    directory = LiveKitRoomDirectory(livekit_server.url, "APIkeyCurrent", LIVEKIT_KEYS["APIkeyCurrent"])
    assert directory.participants(["standup", "gone"]) == {"standup": {"PA_a", "PA_b"}, "gone": None}
    assert [room for _, room in livekit_server.requests] == ["standup", "gone"]
    assert all(kind.startswith("application/protobuf") for kind, _ in livekit_server.requests)


def test_given_the_roomservice_with_a_wrong_secret_then_the_sweep_fails_loudly(livekit_server: FakeLiveKit) -> None:
    from livekit.api import TwirpError  # noqa: PLC0415

    from kilo_rate_usage.roomservice import LiveKitRoomDirectory  # noqa: PLC0415

    directory = LiveKitRoomDirectory(livekit_server.url, "APIkeyCurrent", "not-the-secret-0123456789abcdef")
    with pytest.raises(TwirpError):
        directory.participants(["standup"])  # never "room gone" on an auth error: that would close live sessions


def test_given_sessions_livekit_no_longer_has_then_swept_and_over_long_ones_capped(
    stack: Stack, lambda_context: LambdaContext, livekit_server: FakeLiveKit, monkeypatch: pytest.MonkeyPatch
) -> None:
    from kilo_billing.catalog import default_catalog  # noqa: PLC0415
    from kilo_billing.meters import Meter  # noqa: PLC0415
    from kilo_billing.periods import Period  # noqa: PLC0415
    from kilo_rate_usage import handler, settings, sweeper_handler  # noqa: PLC0415
    from kilo_rate_usage.queries import month_to_date  # noqa: PLC0415

    monkeypatch.setenv("LIVEKIT_URL", livekit_server.url)
    monkeypatch.setenv("MAX_SESSION_HOURS", "2")
    settings.settings.cache_clear()
    sweeper_handler.dependencies.cache_clear()
    handler.dependencies.cache_clear()
    now = int(time.time())
    room = lk.Room("RM_sweep01", "standup", account_id="acct_sweep", created_at=now - 4 * 3600)
    alice = lk.Participant("PA_alice_s", "alice", (now - 600) * 1000)  # still there
    bob = lk.Participant("PA_bob_s", "bob", (now - 900) * 1000)  # gone; his participant_left was lost
    carol = lk.Participant("PA_carol_s", "carol", (now - 3 * 3600) * 1000)  # "there" for 3 h > 2 h maximum
    for person in (alice, bob, carol):
        deliver_webhook(lk.participant_joined(room, person), lambda_context)
    runner = Lambda(stack)
    runner.run(runner.poll(), lambda_context)

    repo = handler.dependencies()[0]
    period = time.strftime("%Y-%m", time.gmtime(now))
    book = default_catalog().for_period(Period.parse(period))
    before = month_to_date(repo, "acct_sweep", period, now * 1000, book)
    assert before.open_sessions == 3
    # open sessions count as if they ended now: 10 + 15 + 180 minutes (plus the seconds the test itself takes)
    assert 205 <= before.rated.used[Meter.AUDIO] <= 207

    livekit_server.rooms["standup"] = [("PA_alice_s", "alice"), ("PA_carol_s", "carol")]
    result = sweeper_handler.lambda_handler({}, lambda_context)
    assert result == {"open": 3, "closed": 2}
    runner.run(runner.poll(), lambda_context)
    sessions = {
        item["sk"]["S"].removeprefix("SESSION#"): item
        for item in stack.table_items("UsageTable")
        if item["sk"]["S"].startswith("SESSION#")
    }
    assert sessions["PA_bob_s"]["closed_by"] == {"S": "swept"}
    assert sessions["PA_carol_s"]["closed_by"] == {"S": "capped"}
    assert int(sessions["PA_carol_s"]["end_ms"]["N"]) - int(sessions["PA_carol_s"]["start_ms"]["N"]) == 2 * 3600 * 1000
    assert "closed_by" not in sessions["PA_alice_s"]
    # a late real participant_left still wins over the sweeper's close
    deliver_webhook(lk.participant_left(room, bob, now - 300), lambda_context)
    runner.run(runner.poll(), lambda_context)
    bob_item = next(i for i in stack.table_items("UsageTable") if i["sk"]["S"] == "SESSION#PA_bob_s")
    assert bob_item["closed_by"] == {"S": "left"}
    assert int(bob_item["end_ms"]["N"]) == (now - 300) * 1000
    # the sweep again: nothing new to close (alice is still there)
    assert sweeper_handler.lambda_handler({}, lambda_context) == {"open": 1, "closed": 0}
