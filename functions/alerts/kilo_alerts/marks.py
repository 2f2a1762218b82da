"""The bounce handler's one adapter (D400): it writes the marks of addresses SES reported undeliverable on the
alerts table, and nothing else - so the handler's cold start loads neither the alert delivery's adapters nor their
libraries (``kilo_alerts.adapters``: LiveKit's RoomService, SES, SNS). The alerts function reads the marks through
``DynamoDeliveryLedger.email_mark``."""

from __future__ import annotations

from typing import Any

from kilo_alerts import items
from kilo_alerts.bounces import BOUNCE, BOUNCE_MARK_MS
from kilo_alerts.model import Channel, Outcome, Reason
from kilo_billing.aws import ConditionFailedError, call, put_if
from kilo_billing.items import to_item


class DynamoEmailMarks:
    def __init__(self, client: Any, table: str) -> None:
        self._client = client
        self._table = table

    def mark_email(self, account_id: str, recipient: str, why: str, detail: str, at_ms: int) -> bool:
        # conditional: the first report is kept, a redelivered one (or a later bounce of the same address) is a no-op;
        # a bounce's mark that no longer acts (BOUNCE_MARK_MS after it, D-AL-2) is replaced by a new report
        return put_if(
            self._client,
            self._table,
            items.email_mark_item(account_id, recipient, why, detail, at_ms),
            "attribute_not_exists(pk) OR (why = :bounce AND at_ms <= :lapsed)",
            ExpressionAttributeValues=to_item({":bounce": BOUNCE, ":lapsed": at_ms - BOUNCE_MARK_MS}),
        )

    def bounce_delivery(self, account_id: str, delivery: str, message_id: str, detail: str) -> bool:
        # the email's record, found by its key (the email's tag) and SES's message id kept on it: only while it is
        # still the sent email SES took as that id (a redelivered report, another email's id: nothing) (D-AL-1)
        try:
            call(
                self._client.update_item,
                TableName=self._table,
                Key=to_item({"pk": items.partition(account_id), "sk": f"DELIVERY#{delivery}#{Channel.EMAIL.value}"}),
                UpdateExpression="SET #s = :undeliverable, reason = :bounced, detail = :detail",
                ConditionExpression="#s = :sent AND message_id = :id",
                ExpressionAttributeNames={"#s": "status"},
                ExpressionAttributeValues=to_item(
                    {
                        ":undeliverable": Outcome.UNDELIVERABLE.value,
                        ":bounced": Reason.BOUNCED.value,
                        ":detail": f"{Reason.BOUNCED.detail} ({detail}); SES took it as {message_id}, then it bounced",
                        ":sent": Outcome.SENT.value,
                        ":id": message_id,
                    }
                ),
            )
        except ConditionFailedError:
            return False
        return True
