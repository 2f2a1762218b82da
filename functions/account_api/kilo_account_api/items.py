"""The account API's items (through ``kilo_billing.items``, boto3's TypeSerializer/TypeDeserializer).

- members table: ``ACCOUNT#<id>`` / ``MEMBER#<user>`` - ``user``, ``email``, ``role``, ``added_at``;
- rating's session items in the usage table, read by attribute name (layout: ``kilo_rate_usage.items``):
  ``ROOM#<room sid>`` / ``SESSION#<participant sid>`` with ``account``, ``identity``, ``room_name``, ``start_ms``,
  ``end_ms``, ``aborted``, ``billing``, ``parts`` (``[[period, start ms, video, audio], ...]``), ``video_seconds``,
  ``connected_seconds``.
"""

from __future__ import annotations

from collections.abc import Mapping
from datetime import datetime
from fractions import Fraction
from typing import Any, Final

from kilo_account_api.model import Member, SessionPart, SessionRecord
from kilo_billing.auth import Role
from kilo_billing.items import Item, from_item, to_item

MEMBER_PREFIX: Final = "MEMBER#"
SESSION_PREFIX: Final = "SESSION#"
ROOM_PREFIX: Final = "ROOM#"


def account_pk(account_id: str) -> str:
    return f"ACCOUNT#{account_id}"


def member_key(account_id: str, user: str) -> Item:
    return to_item({"pk": account_pk(account_id), "sk": MEMBER_PREFIX + user})


def member_to_item(member: Member) -> Item:
    return to_item(
        {
            "pk": account_pk(member.account_id),
            "sk": MEMBER_PREFIX + member.user,
            "user": member.user,
            "email": member.email,
            "role": member.role.name.lower(),
            "added_at": member.added_at.isoformat(),
        }
    )


def member_from_item(item: Mapping[str, Any]) -> Member:
    values = from_item(item)
    return Member(
        account_id=str(values["pk"]).removeprefix("ACCOUNT#"),
        user=str(values["user"]),
        email=str(values.get("email", "")),
        role=Role[str(values["role"]).upper()],
        added_at=datetime.fromisoformat(str(values["added_at"])),
    )


def session_from_values(values: Mapping[str, Any]) -> SessionRecord:
    end = values.get("end_ms")
    return SessionRecord(
        room_sid=str(values["pk"]).removeprefix(ROOM_PREFIX),
        participant_sid=str(values["sk"]).removeprefix(SESSION_PREFIX),
        identity=str(values.get("identity", "")),
        room_name=str(values.get("room_name", "")),
        start_ms=int(values["start_ms"]),
        end_ms=int(end) if end is not None else None,
        aborted=bool(values.get("aborted", False)),
        billing=str(values.get("billing", "room_rule")),
        parts=tuple(SessionPart(str(p), int(s), int(v), int(a)) for p, s, v, a in values.get("parts", [])),
        video_seconds=Fraction(str(values.get("video_seconds", "0"))),
        connected_seconds=Fraction(str(values.get("connected_seconds", "0"))),
    )
