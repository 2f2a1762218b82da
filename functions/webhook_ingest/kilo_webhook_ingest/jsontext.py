"""JSON bodies in: the layer's one bounded loader (``kilo_billing.jsontext``), its refusal as ingest's
``InvalidEventError`` (``malformed_json`` or ``too_deeply_nested``)."""

from __future__ import annotations

from typing import Any

from kilo_billing.jsontext import MAX_DEPTH, JsonTextError
from kilo_billing.jsontext import loads as load_json
from kilo_webhook_ingest.model import InvalidEventError

__all__ = ["MAX_DEPTH", "loads"]


def loads(body: bytes, what: str) -> Any:
    """The layer's ``loads``; ``InvalidEventError`` with its code and message."""
    try:
        return load_json(body, what)
    except JsonTextError as exc:
        raise InvalidEventError(exc.code, str(exc)) from exc
