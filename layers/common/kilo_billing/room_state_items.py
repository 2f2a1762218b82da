"""Rating's running room state as items of the usage table: the layout rating writes and the account API's erasure
drops (D220, D224). Both functions take the key shapes and attribute names from here - neither imports the other -
so a change of the layout reaches the erasure too; the state's own format (the JSON compressed in ``state_zlib``, the
participants' registers) stays rating's (``kilo_rate_usage.items``, ``kilo_rate_usage.rooms``).

- header       ``ROOM#<room sid>`` / ``STATE`` - ``state_zlib`` (the state blob; without it the header is its
  ``version``, cut-off and ``generation`` alone: a finished room's, or one whose state is too large to keep),
  ``version`` (a counter every write of the state is conditioned on), ``generation`` (of its participant items),
  ``delivered_ms`` (a rebuild's cut-off, D42) and, while a chunked write of its participant items is under way,
  ``pending`` (each chunk is conditioned on it, D69);
- participant  ``ROOM#<room sid>`` / ``PART#<generation>#<participant sid>`` - one live participant's registers.
"""

from __future__ import annotations

from typing import Final

ROOM_PREFIX: Final = "ROOM#"  # the partition of a room's items (its sessions too)
STATE_SORT_KEY: Final = "STATE"
STATE_BLOB: Final = "state_zlib"
STATE_VERSION: Final = "version"
STATE_GENERATION: Final = "generation"
STATE_DELIVERED_MS: Final = "delivered_ms"
STATE_PENDING: Final = "pending"
PARTICIPANT_PREFIX: Final = "PART#"  # + <generation>#<participant sid>


def room_key(room_sid: str) -> str:
    """The partition key of a room's items."""
    return f"{ROOM_PREFIX}{room_sid}"


def participant_sort_key(generation: str, participant_sid: str = "") -> str:
    """A participant item's sort key; without ``participant_sid``, the prefix of all the items of ``generation``."""
    return f"{PARTICIPANT_PREFIX}{generation}#{participant_sid}"
