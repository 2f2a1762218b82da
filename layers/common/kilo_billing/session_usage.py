"""Rated sessions as reports read them: who (participant identity) used how many minutes in which room, per period.

Rating stores a session as ``ROOM#<room sid>`` / ``SESSION#<participant sid>`` in the usage table (its item mapping is
``kilo_rate_usage.items``; this module reads the same attributes by name, it never imports the function): ``account``,
``identity``, ``room_name``, ``aborted``, and ``parts`` - ``[[period, part start ms, video minutes, audio minutes],
...]``, the session's billable minutes per period (empty while open). Open sessions are not in a report until they
close; aborted ones bill nothing.
"""

from __future__ import annotations

from collections.abc import Iterator, Mapping
from dataclasses import dataclass
from typing import Any, Final, Protocol

from kilo_billing.aws import paged_items
from kilo_billing.items import from_item, to_item

SESSION_PREFIX: Final = "SESSION#"
ROOM_PREFIX: Final = "ROOM#"


@dataclass(frozen=True, slots=True)
class SessionUsage:
    """One participant session's billable minutes in one period."""

    room_sid: str
    room_name: str
    participant_sid: str
    identity: str
    video_minutes: int
    audio_minutes: int


class SessionReader(Protocol):
    def sessions(self, account_id: str, period: str) -> Iterator[SessionUsage]:
        """The account's closed sessions with billable minutes in ``period`` (any order)."""
        ...


def session_usage(values: Mapping[str, Any], period: str) -> SessionUsage | None:
    """A session item's minutes in ``period`` (``None``: none there)."""
    parts = [part for part in values.get("parts", []) if str(part[0]) == period]
    if not parts or values.get("aborted"):
        return None
    return SessionUsage(
        room_sid=str(values["pk"]).removeprefix(ROOM_PREFIX),
        room_name=str(values.get("room_name", "")),
        participant_sid=str(values["sk"]).removeprefix(SESSION_PREFIX),
        identity=str(values.get("identity", "")),
        video_minutes=sum(int(part[2]) for part in parts),
        audio_minutes=sum(int(part[3]) for part in parts),
    )


class DynamoSessionReader:
    """``SessionReader`` on the usage table: sessions are keyed by room, so an account's sessions are found by a Scan
    filtered on ``account`` (an operator's report, like the replay's table scan; no index is kept for it)."""

    def __init__(self, client: Any, table: str) -> None:
        self._client = client
        self._table = table

    def sessions(self, account_id: str, period: str) -> Iterator[SessionUsage]:
        request: dict[str, Any] = {
            "TableName": self._table,
            "FilterExpression": "begins_with(#sk, :session) AND #account = :account",
            "ProjectionExpression": "#pk, #sk, #account, #identity, #room, #aborted, #parts",
            "ExpressionAttributeNames": {
                "#pk": "pk",
                "#sk": "sk",
                "#account": "account",
                "#identity": "identity",
                "#room": "room_name",
                "#aborted": "aborted",
                "#parts": "parts",
            },
            "ExpressionAttributeValues": to_item({":session": SESSION_PREFIX, ":account": account_id}),
        }
        for item in paged_items(self._client.scan, **request):
            found = session_usage(from_item(item), period)
            if found is not None:
                yield found
