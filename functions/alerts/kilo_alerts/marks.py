"""The bounce handler's one adapter (D400): it writes the marks of addresses SES reported undeliverable on the
alerts table, and nothing else - so the handler's cold start loads neither the alert delivery's adapters nor their
libraries (``kilo_alerts.adapters``: LiveKit's RoomService, SES, SNS). The alerts function reads the marks through
``DynamoDeliveryLedger.email_mark``."""

from __future__ import annotations

from typing import Any

from kilo_alerts import items
from kilo_billing.aws import put_if


class DynamoEmailMarks:
    def __init__(self, client: Any, table: str) -> None:
        self._client = client
        self._table = table

    def mark_email(self, account_id: str, recipient: str, why: str, detail: str, at_ms: int) -> bool:
        # conditional: the first report is kept, a redelivered one (or a later bounce of the same address) is a no-op
        return put_if(self._client, self._table, items.email_mark_item(account_id, recipient, why, detail, at_ms))
