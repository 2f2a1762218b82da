"""Rating's open session items as month to date reads them (``OpenSessionFigures``).

Open sessions are read by attribute name from rating's sparse ``open_sessions`` index (``open_account``,
``open_since``) - the item layout is rating's (``kilo_rate_usage.items``); this module never imports the function.
"""

from __future__ import annotations

from collections.abc import Mapping
from fractions import Fraction
from typing import Any, Final

from kilo_billing.month_to_date import ROOM_RULE, OpenSessionFigures

OPEN_INDEX: Final = "open_sessions"
OPEN_ACCOUNT: Final = "open_account"


def open_session_from_values(values: Mapping[str, Any]) -> OpenSessionFigures:
    """Rating's session item (deserialized) as figures; attribute names are rating's (``kilo_rate_usage.items``)."""
    return OpenSessionFigures(
        room_sid=str(values["pk"]).removeprefix("ROOM#"),
        participant_sid=str(values["sk"]).removeprefix("SESSION#"),
        account=str(values.get("account", values.get(OPEN_ACCOUNT, ""))),
        start_ms=int(values["start_ms"]),
        billing=str(values.get("billing", ROOM_RULE)),
        video_seconds=Fraction(str(values.get("video_seconds", "0"))),
        video_active=bool(values.get("video_active", False)),
        as_of_ms=int(values.get("as_of_ms", 0)),
        identity=str(values.get("identity", "")),
        room_name=str(values.get("room_name", "")),
    )
