"""Adapters of rating's outbound ports: EventBridge (billing events) and SQS (poison records)."""

from __future__ import annotations

import json
from typing import Any

from kilo_billing.contracts import SOURCE_RATING


class PublishError(Exception):
    pass


class EventBridgePublisher:
    def __init__(self, client: Any, bus_name: str) -> None:
        self._client = client
        self._bus = bus_name

    def publish(self, detail_type: str, detail: dict[str, Any]) -> None:
        response = self._client.put_events(
            Entries=[
                {
                    "EventBusName": self._bus,
                    "Source": SOURCE_RATING,
                    "DetailType": detail_type,
                    "Detail": json.dumps(detail, separators=(",", ":")),
                }
            ]
        )
        if response.get("FailedEntryCount", 0):
            raise PublishError(str(response["Entries"][0].get("ErrorCode", "failed entry")))


class SqsPoisonSink:
    """Records that can never be rated (not decodable, unknown meter): kept whole on a queue, with the reason."""

    def __init__(self, client: Any, queue_url: str) -> None:
        self._client = client
        self._queue = queue_url

    def send(self, record: dict[str, Any], reason: str) -> None:
        self._client.send_message(
            QueueUrl=self._queue, MessageBody=json.dumps({"reason": reason, "record": record}, default=str)
        )
