"""JSON bodies in: parsed, with a bound on nesting. Python's parser recurses, so JSON nested thousands deep either
exhausts the stack (``RecursionError``) or, a little shallower, parses into a structure that every later reader has to
survive too. No body ingest accepts nests deeper than a few levels, so deeper ones are refused outright."""

from __future__ import annotations

import json
from typing import Any, Final

from kilo_webhook_ingest.model import InvalidEventError

MAX_DEPTH: Final = 64  # a LiveKit WebhookEvent nests ~5 deep, a usage batch 3, a Stripe event ~10


def _too_deep(what: str) -> InvalidEventError:
    return InvalidEventError("too_deeply_nested", f"body nests JSON more than {MAX_DEPTH} levels deep ({what})")


def _depth_exceeds(value: Any, limit: int) -> bool:
    pending: list[tuple[Any, int]] = [(value, 1)]
    while pending:
        node, depth = pending.pop()
        if isinstance(node, dict):
            children: Any = node.values()
        elif isinstance(node, list):
            children = node
        else:
            continue
        if depth > limit:
            return True
        pending.extend((child, depth + 1) for child in children if isinstance(child, dict | list))
    return False


def loads(body: bytes, what: str) -> Any:
    """``json.loads`` of a request body; ``InvalidEventError`` (``malformed_json`` or ``too_deeply_nested``)."""
    try:
        data = json.loads(body)
    except RecursionError as exc:
        raise _too_deep(what) from exc
    except (UnicodeDecodeError, ValueError) as exc:
        raise InvalidEventError("malformed_json", "body is not valid JSON") from exc
    # cheap test first: a body with fewer brackets than the limit cannot nest deeper than it
    if body.count(b"[") + body.count(b"{") > MAX_DEPTH and _depth_exceeds(data, MAX_DEPTH):
        raise _too_deep(what)
    return data
