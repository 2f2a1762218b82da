"""Rating's running room state as items of the usage table: the layout rating writes and the account API's erasure
drops (D220, D224). Both functions take the key shapes and attribute names from here - neither imports the other -
so a change of the layout reaches the erasure too; the state's own format (the JSON compressed in ``state_zlib``, the
participants' registers) stays rating's (``kilo_rate_usage.items``, ``kilo_rate_usage.rooms``).

- header       ``ROOM#<room sid>`` / ``STATE`` - ``state_zlib`` (the state blob; without it the header is its
  ``version``, cut-off and ``generation`` alone: a finished room's, or one whose state is too large to keep),
  ``version`` (a counter every write of the state is conditioned on), ``generation`` (of its participant items),
  ``delivered_ms`` (a rebuild's cut-off, D42), ``events`` (how many of the room's stored events it was rated from:
  a rebuild finding fewer refuses the room, D273) and, while a chunked write of its participant items is
  under way, ``pending`` (each chunk is conditioned on it, D69). Every write of the header but that mark moves
  ``version`` by one, conditioned on the version read (or on no header) - the erasure's drop too, of a version-only
  header as well, and it puts ``version`` 1 alone where it finds none - so a write prepared before another lands
  no more (D274);
- participant  ``ROOM#<room sid>`` / ``PART#<generation>#<participant sid>`` - one live participant's registers; a
  generation is ``<header version it was written for>.<12 hex>`` (rating's ``items.new_generation``).

Which participant items no header can name any more (``doomed_generations``, D250) is judged here too: rating deletes
them after a rebuild, a finished room's write and the sweeper's drop, the erasure after its drop.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Final

ROOM_PREFIX: Final = "ROOM#"  # the partition of a room's items (its sessions too)
STATE_SORT_KEY: Final = "STATE"
STATE_BLOB: Final = "state_zlib"
STATE_VERSION: Final = "version"
STATE_GENERATION: Final = "generation"
STATE_DELIVERED_MS: Final = "delivered_ms"
STATE_EVENTS: Final = "events"
STATE_PENDING: Final = "pending"
PARTICIPANT_PREFIX: Final = "PART#"  # + <generation>#<participant sid>


def room_key(room_sid: str) -> str:
    """The partition key of a room's items."""
    return f"{ROOM_PREFIX}{room_sid}"


def participant_sort_key(generation: str, participant_sid: str = "") -> str:
    """A participant item's sort key; without ``participant_sid``, the prefix of all the items of ``generation``."""
    return f"{PARTICIPANT_PREFIX}{generation}#{participant_sid}"


def generation_of(sort_key: str) -> str:
    """The generation of a participant item's sort key (``PART#<generation>#<participant sid>``)."""
    return sort_key.removeprefix(PARTICIPANT_PREFIX).partition("#")[0]


def dead_generation(generation: str, version: int, named: str) -> bool:
    """No header can name ``generation`` any more, the stored one being at ``version`` naming ``named``: another
    generation written for that version or an earlier one - only the header write conditioned on the version before
    the one it was written for can name it, and versions only grow. A generation of the format before (no version)
    cannot be judged: live only for a writer that ran the code before, it is kept (D250)."""
    head, dot, _ = generation.partition(".")
    return generation != named and bool(dot) and head.isdigit() and int(head) <= version


def doomed_generations(version: int, named: str, also: str = "") -> Callable[[str], bool]:
    """Whether a generation's participant items go, the header being at ``version`` naming ``named``: ``also`` (one
    no longer read), or one no header can name any more (``dead_generation``)."""
    return lambda generation: (bool(also) and generation == also) or dead_generation(generation, version, named)
