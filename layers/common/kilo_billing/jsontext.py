"""JSON request bodies in: parsed, with a bound on nesting, every failure one error naming it. Python's parser
recurses, so JSON nested thousands deep either exhausts the stack (``RecursionError``) or, a little shallower, parses
into a structure that every later reader has to survive too; an integer of more than 4,300 digits raises
``ValueError`` (the interpreter's conversion limit); bytes that are not UTF-8 raise ``UnicodeDecodeError``. No body
any route accepts nests deeper than a few levels, so deeper ones are refused outright (D32).

One loader for every HTTP edge: ingest's routes (``kilo_webhook_ingest.jsontext`` maps the error to its own) and the
customer API's (``kilo_billing.customer_api`` reads every JSON body with it). Imports nothing but ``json``: the webhook
paths load it at cold start."""

from __future__ import annotations

import json
import sys
from typing import Any, Final

MAX_DEPTH: Final = 64  # a LiveKit WebhookEvent nests ~5 deep, a usage batch 3, a Stripe event ~10, an API body 3


class JsonTextError(ValueError):
    """A body that is not JSON a route may read: ``code`` is ``malformed_json`` or ``too_deeply_nested``."""

    def __init__(self, code: str, message: str) -> None:
        super().__init__(message)
        self.code = code


def _too_deep(what: str) -> JsonTextError:
    return JsonTextError("too_deeply_nested", f"body nests JSON more than {MAX_DEPTH} levels deep ({what})")


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


def loads(body: bytes | str, what: str) -> Any:
    """``json.loads`` of a request body; ``JsonTextError`` (``malformed_json`` or ``too_deeply_nested``)."""
    try:
        data = json.loads(body)
    except RecursionError as exc:
        raise _too_deep(what) from exc
    except UnicodeDecodeError as exc:
        raise JsonTextError("malformed_json", f"body is not UTF-8 text ({what})") from exc
    except json.JSONDecodeError as exc:
        raise JsonTextError("malformed_json", f"body is not valid JSON ({what}): {exc}") from exc
    except ValueError as exc:  # an integer over the interpreter's digit limit (the only other ValueError it raises)
        limit = sys.get_int_max_str_digits()
        raise JsonTextError("malformed_json", f"body has a number of more than {limit} digits ({what})") from exc
    # cheap test first: a body with fewer brackets than the limit cannot nest deeper than it
    brackets = body.count(b"[") + body.count(b"{") if isinstance(body, bytes) else body.count("[") + body.count("{")
    if brackets > MAX_DEPTH and _depth_exceeds(data, MAX_DEPTH):
        raise _too_deep(what)
    return data
