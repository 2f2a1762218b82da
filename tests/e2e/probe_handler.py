"""A handler the local-runtime tests wire through a template: it records what it was invoked with."""

from __future__ import annotations

from typing import Any

RECEIVED: list[dict[str, Any]] = []


def lambda_handler(event: dict[str, Any], context: Any) -> dict[str, Any]:
    RECEIVED.append(event)
    if event.get("detail", {}).get("fail"):
        raise RuntimeError("asked to fail")
    failures = [
        {"itemIdentifier": record["messageId"]} for record in event.get("Records", []) if record["body"] == "poison"
    ]
    return {"batchItemFailures": failures}
