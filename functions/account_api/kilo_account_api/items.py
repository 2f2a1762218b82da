"""The account API's items (through ``kilo_billing.items``, boto3's TypeSerializer/TypeDeserializer).

- members table: ``ACCOUNT#<id>`` / ``MEMBER#<user>`` - ``user``, ``email``, ``role``, ``added_at``, ``status``
  (``active`` | ``invited``; absent on memberships written before invitations: active) and, on an invitation only,
  ``expires_at`` (epoch seconds: its end, and the table's TTL);
- rating's session items in the usage table, read by attribute name (layout: ``kilo_rate_usage.items``):
  ``ROOM#<room sid>`` / ``SESSION#<participant sid>`` with ``account``, ``identity``, ``room_name``, ``start_ms``,
  ``end_ms``, ``aborted``, ``billing``, ``parts`` (``[[period, start ms, video, audio], ...]``), ``video_seconds``,
  ``connected_seconds``;
- rating's room state in the usage table, dropped by the erasure by attribute name (layout:
  ``kilo_billing.room_state_items``, which rating writes it by):
  the header ``ROOM#<room sid>`` / ``STATE`` (``version``, ``generation``, the state blob ``state_zlib``: without it
  the header is its version, cut-off and generation alone - what a finished room keeps, or one whose state is too
  large to keep; ``pending``: a chunked write of its participant items under way, each chunk conditioned on it) and
  the live participants' items ``ROOM#<room sid>`` / ``PART#<generation>#<participant sid>`` (D220, D224).
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Mapping
from datetime import UTC, date, datetime
from fractions import Fraction
from typing import Any, Final

from kilo_account_api.model import Member, MemberStatus, PhoneChallenge, SessionPart, SessionRecord
from kilo_billing import member_roles
from kilo_billing.accounts import UNATTRIBUTED
from kilo_billing.auth import Role
from kilo_billing.items import Item, from_item, to_item
from kilo_billing.room_state_items import ROOM_PREFIX

MEMBER_PREFIX: Final = member_roles.MEMBER_PREFIX
MEMBER_STATUS: Final = member_roles.MEMBER_STATUS
SESSION_PREFIX: Final = "SESSION#"


def account_pk(account_id: str) -> str:
    return f"ACCOUNT#{account_id}"


def member_key(account_id: str, user: str) -> Item:
    return to_item(member_roles.member_key_values(account_id, user))


INVITATION_END: Final = "expires_at"  # the members table's TTL attribute: only invitations carry it


def epoch_seconds(moment: datetime) -> int:
    """An invitation's end as stored (whole seconds, rounded up: an invitation never ends before it was meant to)."""
    whole = int(moment.timestamp())
    return whole if whole == moment.timestamp() else whole + 1


def member_to_item(member: Member) -> Item:
    values: dict[str, Any] = {
        "pk": account_pk(member.account_id),
        "sk": MEMBER_PREFIX + member.user,
        "user": member.user,
        "email": member.email,
        "role": member.role.name.lower(),
        "added_at": member.added_at.isoformat(),
        MEMBER_STATUS: member.status.value,
    }
    if member.expires_at is not None:
        values[INVITATION_END] = epoch_seconds(member.expires_at)
    return to_item(values)


def member_from_item(item: Mapping[str, Any]) -> Member:
    values = from_item(item)
    ends = values.get(INVITATION_END)
    return Member(
        account_id=str(values["pk"]).removeprefix("ACCOUNT#"),
        user=str(values["user"]),
        email=str(values.get("email", "")),
        role=Role[str(values["role"]).upper()],
        added_at=datetime.fromisoformat(str(values["added_at"])),
        status=MemberStatus(str(values.get(MEMBER_STATUS, MemberStatus.ACTIVE.value))),
        expires_at=datetime.fromtimestamp(int(ends), tz=UTC) if ends is not None else None,
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
        unattributed_periods=frozenset(
            str(period) for owner, period, *_ in values.get("contributions", []) if owner == UNATTRIBUTED
        ),
    )


REGISTERS: Final = "registers"  # rating's registers of a retired participant on its session item (compact JSON)
REGISTERS_IDENTITY: Final = (
    1  # rating's layout: [sid, identity, kind, metadata, attributes, ...] (kilo_rate_usage.rooms)
)


def registers_with_identity(registers: str, identity: str, new: str) -> str:
    """Rating's registers with the participant's identity replaced (when it is ``identity``), kept in rating's compact
    sorted JSON; the contract test writes them with rating's own ``registers_text``."""
    values = json.loads(registers)
    if isinstance(values, list) and len(values) > REGISTERS_IDENTITY and values[REGISTERS_IDENTITY] == identity:
        values[REGISTERS_IDENTITY] = new
    return json.dumps(values, separators=(",", ":"), sort_keys=True)


PHONE_CODE_SORT_KEY: Final = "PHONECODE"  # usage table, beside the profile: ACCOUNT#<id> / PHONECODE


def phone_code_key(account_id: str) -> Item:
    return to_item({"pk": account_pk(account_id), "sk": PHONE_CODE_SORT_KEY})


def number_codes_key(phone: str, day: date) -> Item:
    """A number's codes of a UTC day, all accounts together (usage table: ``PHONE#<sha256 of the number>`` /
    ``CODES#<YYYY-MM-DD>``): the number is not stored, only its hash (a rate-limit key kept for a day or two)."""
    digest = hashlib.sha256(phone.encode()).hexdigest()
    return to_item({"pk": f"PHONE#{digest}", "sk": f"CODES#{day.isoformat()}"})


def phone_challenge_to_item(challenge: PhoneChallenge, expires_at: datetime) -> Item:
    """``expires_at`` (epoch seconds): the table's TTL removes the item once neither its code nor the window needs
    it."""
    return to_item(
        {
            "pk": account_pk(challenge.account_id),
            "sk": PHONE_CODE_SORT_KEY,
            "phone": challenge.phone,
            "salt": challenge.salt,
            "code_hash": challenge.code_hash,
            "code_expires_at": challenge.code_expires_at.isoformat(),
            "tries_left": challenge.tries_left,
            "sent_at": [at.isoformat() for at in challenge.sent_at],
            "expires_at": int(expires_at.timestamp()),
        }
    )


def phone_challenge_from_item(account_id: str, item: Mapping[str, Any]) -> PhoneChallenge:
    values = from_item(item)
    return PhoneChallenge(
        account_id=account_id,
        phone=str(values.get("phone", "")),  # absent: none pending (a code never sent, or the account erased)
        salt=str(values["salt"]),
        code_hash=str(values.get("code_hash", "")),
        code_expires_at=datetime.fromisoformat(str(values["code_expires_at"])),
        tries_left=int(values["tries_left"]),
        sent_at=tuple(datetime.fromisoformat(str(at)) for at in values.get("sent_at", [])),
    )
