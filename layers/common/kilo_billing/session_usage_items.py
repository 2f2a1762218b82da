"""Rating's session items as reports read them (``SessionUsage``).

Rating stores a session as ``ROOM#<room sid>`` / ``SESSION#<participant sid>`` in the usage table (its item mapping is
``kilo_rate_usage.items``; this module reads the same attributes by name, it never imports the function): ``account``,
``identity``, ``room_name``, ``aborted``, and ``parts`` - ``[[period, part start ms, video minutes, audio minutes],
...]``, the session's billable minutes per period (empty while open). Open sessions are not in a report until they
close; aborted ones bill nothing.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any, Final

from kilo_billing.session_usage import SessionUsage

SESSION_PREFIX: Final = "SESSION#"
ROOM_PREFIX: Final = "ROOM#"


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
