"""LiveKit webhook bodies exactly as LiveKit's server encodes them (protojson): camelCase keys, 64-bit integers as
strings, enum values by name, zero values omitted (an audio track has no ``type``, a standard participant no ``kind``).

Used by the scenario tests and the simulator; ``to_record`` runs the bodies through the real ingest parser.
"""

from __future__ import annotations

import itertools
import json
from dataclasses import dataclass, field
from typing import Any

_ids = itertools.count(1)


def _event_id() -> str:
    return f"EV_{next(_ids):012d}"


@dataclass
class Room:
    sid: str
    name: str
    account_id: str | None = None  # put into the room's metadata, as the app does when it creates the room
    created_at: int = 0

    def info(self, full: bool = False) -> dict[str, Any]:
        info: dict[str, Any] = {"sid": self.sid, "name": self.name}
        if full:
            info |= {"emptyTimeout": 300, "departureTimeout": 20, "creationTime": str(self.created_at),
                     "creationTimeMs": str(self.created_at * 1000), "enabledCodecs": [{"mime": "audio/opus"},
                     {"mime": "video/VP8"}]}  # fmt: skip
            if self.account_id:
                info["metadata"] = json.dumps({"account_id": self.account_id}, separators=(",", ":"))
        return info


@dataclass
class Participant:
    sid: str
    identity: str
    joined_at_ms: int
    kind: str | None = None  # None = STANDARD (omitted); "AGENT", "SIP", "EGRESS", "INGRESS"
    attributes: dict[str, str] = field(default_factory=dict)

    def listed(self) -> dict[str, Any]:
        """What RoomService's ListParticipants says of him beyond sid and identity (the stand-in's ``infos``, D438)."""
        return {
            "kind": self.kind or "STANDARD",
            "joined_at": self.joined_at_ms // 1000,
            "joined_at_ms": self.joined_at_ms,
        }

    def info(self, full: bool = False) -> dict[str, Any]:
        info: dict[str, Any] = {"sid": self.sid, "identity": self.identity}
        if full:
            info |= {"state": "ACTIVE", "joinedAt": str(self.joined_at_ms // 1000),
                     "joinedAtMs": str(self.joined_at_ms), "name": self.identity.title(), "version": 2,
                     "permission": {"canSubscribe": True, "canPublish": True, "canPublishData": True}}  # fmt: skip
            if self.kind:
                info["kind"] = self.kind
            if self.attributes:
                info["attributes"] = dict(self.attributes)
        return info


def _body(event: dict[str, Any]) -> bytes:
    return json.dumps(event, separators=(",", ":")).encode()


def room_started(room: Room, at: int) -> bytes:
    return _body({"event": "room_started", "room": room.info(full=True), "id": _event_id(), "createdAt": str(at)})


def room_finished(room: Room, at: int) -> bytes:
    return _body({"event": "room_finished", "room": room.info(full=True), "id": _event_id(), "createdAt": str(at)})


def participant_joined(room: Room, participant: Participant, at: int | None = None) -> bytes:
    created = at if at is not None else participant.joined_at_ms // 1000
    return _body({"event": "participant_joined", "room": room.info(full=True), "participant": participant.info(True),
                  "id": _event_id(), "createdAt": str(created)})  # fmt: skip


def participant_left(room: Room, participant: Participant, at: int) -> bytes:
    info = participant.info(full=True) | {"state": "DISCONNECTED"}
    return _body({"event": "participant_left", "room": room.info(full=True), "participant": info,
                  "id": _event_id(), "createdAt": str(at)})  # fmt: skip


def participant_connection_aborted(room: Room, participant: Participant, at: int) -> bytes:
    return _body({"event": "participant_connection_aborted", "room": room.info(full=True),
                  "participant": participant.info(full=True), "id": _event_id(), "createdAt": str(at)})  # fmt: skip


def _track(track_sid: str, video: bool, source: str) -> dict[str, Any]:
    track: dict[str, Any] = {"sid": track_sid, "source": source, "mimeType": "video/VP8" if video else "audio/red"}
    if video:
        track |= {"type": "VIDEO", "width": 1280, "height": 720, "simulcast": True}
    return track  # audio: no "type" key (AUDIO is the zero value)


def track_published(room: Room, participant: Participant, track_sid: str, at: int, *, video: bool,
                    source: str | None = None) -> bytes:  # fmt: skip
    source = source or ("CAMERA" if video else "MICROPHONE")
    return _body({"event": "track_published", "room": room.info(), "participant": participant.info(),
                  "track": _track(track_sid, video, source), "id": _event_id(), "createdAt": str(at)})  # fmt: skip


def track_unpublished(room: Room, participant: Participant, track_sid: str, at: int, *, video: bool,
                      source: str | None = None) -> bytes:  # fmt: skip
    source = source or ("CAMERA" if video else "MICROPHONE")
    return _body({"event": "track_unpublished", "room": room.info(), "participant": participant.info(),
                  "track": _track(track_sid, video, source), "id": _event_id(), "createdAt": str(at)})  # fmt: skip


def to_record(body: bytes, received_at_ms: int = 0, api_key: str = "APIdev") -> Any:
    """Parse a body with the real ingest parser into the stored record rating reads."""
    from kilo_webhook_ingest.livekit_webhook import parse_event  # noqa: PLC0415
    from kilo_webhook_ingest.livekit_webhook import to_record as record_of  # noqa: PLC0415

    return record_of(parse_event(body), body, api_key, received_at_ms)
