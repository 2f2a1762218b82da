"""The one EventBridge publisher: billing events onto the billing bus, at least once (consumers dedupe on ids)."""

from __future__ import annotations

import json
from collections.abc import Mapping
from typing import Any, Protocol

from kilo_billing.aws import call


class PublishError(Exception):
    """The event was not accepted by the bus (AWS failure or a failed entry): the caller must retry."""


class EventPublisher(Protocol):
    def publish(self, detail_type: str, detail: Mapping[str, Any]) -> None: ...


class EventBridgePublisher:
    def __init__(self, client: Any, bus_name: str, source: str) -> None:
        self._client = client
        self._bus = bus_name
        self._source = source

    def publish(self, detail_type: str, detail: Mapping[str, Any]) -> None:
        entry = {
            "EventBusName": self._bus,
            "Source": self._source,
            "DetailType": detail_type,
            "Detail": json.dumps(detail, separators=(",", ":")),
        }
        try:
            response = call(self._client.put_events, Entries=[entry])
        except Exception as exc:  # the domain errors of kilo_billing.aws, all of them mean "not published"
            raise PublishError(f"{type(exc).__name__}: {exc}") from exc
        if response.get("FailedEntryCount", 0):
            failed = response["Entries"][0]  # EventBridge's ``ErrorCode`` and ``ErrorMessage`` of the entry
            code = str(failed.get("ErrorCode") or "failed entry")
            raise PublishError(f"{code}: {failed['ErrorMessage']}" if failed.get("ErrorMessage") else code)
