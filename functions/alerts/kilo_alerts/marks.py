"""The bounce handler's one adapter (D400): it writes the marks of addresses SES reported undeliverable on the
alerts table, and nothing else - so the handler's cold start loads neither the alert delivery's adapters nor their
libraries (``kilo_alerts.adapters``: LiveKit's RoomService, SES, SNS). The alerts function reads the marks through
``DynamoDeliveryLedger.email_mark``."""

from __future__ import annotations

from typing import Any, Final

from kilo_alerts import items
from kilo_alerts.bounces import BOUNCE, BOUNCE_MARK_MS, COMPLAINT, SmsUndecidedError
from kilo_alerts.model import NOT_CHOSEN, Channel, Outcome, Reason
from kilo_billing.aws import ConditionFailedError, call, put_if
from kilo_billing.items import from_item, to_item

# the reopened SMS record's detail until the event's redelivery claims it (D422)
REOPENED: Final = f"{NOT_CHOSEN}; reopened: the email bounced, the event is sent again"


class DynamoEmailMarks:
    def __init__(self, client: Any, table: str) -> None:
        self._client = client
        self._table = table

    def mark_email(self, account_id: str, recipient: str, why: str, detail: str, at_ms: int) -> bool:
        # conditional: the first report is kept, a redelivered one (or a later bounce of the same address) is a no-op;
        # a bounce's mark reported BOUNCE_MARK_MS before is refreshed by a new report (D409), and a complaint replaces
        # any bounce's mark (the stronger mark, D424)
        replaced = "why = :bounce" if why == COMPLAINT else "(why = :bounce AND at_ms <= :lapsed)"
        values = {":bounce": BOUNCE} if why == COMPLAINT else {":bounce": BOUNCE, ":lapsed": at_ms - BOUNCE_MARK_MS}
        return put_if(
            self._client,
            self._table,
            items.email_mark_item(account_id, recipient, why, detail, at_ms),
            f"attribute_not_exists(pk) OR {replaced}",
            ExpressionAttributeValues=to_item(values),
        )

    def bounce_delivery(self, account_id: str, delivery: str, message_id: str, detail: str) -> str | None:
        # the email's record, found by its key (the email's tag) and SES's message id kept on it: only while it is
        # still the sent email SES took as that id, or a bounced one whose event is not sent again yet (a redelivered
        # report, another email's id: nothing) (D408)
        try:
            answer = call(
                self._client.update_item,
                TableName=self._table,
                Key=_email_key(account_id, delivery),
                UpdateExpression="SET #s = :undeliverable, reason = :bounced, detail = :detail",
                ConditionExpression="message_id = :id "
                "AND (#s = :sent OR (reason = :bounced AND attribute_exists(replay)))",
                ReturnValues="ALL_NEW",
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
            return None
        return str(from_item(answer["Attributes"]).get("replay", ""))

    def reopen_sms(self, account_id: str, delivery: str) -> bool:
        # the required alert's SMS, skipped as not chosen while its email was sent: set to retry, which the event's
        # redelivery claims again (an UpdateItem: the role deletes nothing, D422); reopened before and not claimed
        # since (a report redelivered after the send failed) is reopened still; a claim not decided yet raises
        try:
            call(
                self._client.update_item,
                TableName=self._table,
                Key=to_item({"pk": items.partition(account_id), "sk": f"DELIVERY#{delivery}#{Channel.SMS.value}"}),
                UpdateExpression="SET #s = :retry, detail = :reopened",
                ConditionExpression="(#s = :skipped AND detail = :not_chosen) OR (#s = :retry AND detail = :reopened)",
                ExpressionAttributeNames={"#s": "status"},
                ExpressionAttributeValues=to_item(
                    {
                        ":retry": Outcome.RETRY.value,
                        ":reopened": REOPENED,
                        ":skipped": Outcome.SKIPPED.value,
                        ":not_chosen": NOT_CHOSEN,
                    }
                ),
                ReturnValuesOnConditionCheckFailure="ALL_OLD",
            )
        except ConditionFailedError as exc:
            if from_item(exc.item or {}).get("status") == items.PENDING:
                raise SmsUndecidedError("the alert's SMS is claimed, not decided yet: the report is retried") from None
            return False
        return True

    def replayed(self, account_id: str, delivery: str) -> None:
        # the event is on the alerts queue: a redelivered report finds nothing more to do
        call(
            self._client.update_item,
            TableName=self._table,
            Key=_email_key(account_id, delivery),
            UpdateExpression="REMOVE replay",
        )


def _email_key(account_id: str, delivery: str) -> dict[str, Any]:
    return to_item({"pk": items.partition(account_id), "sk": f"DELIVERY#{delivery}#{Channel.EMAIL.value}"})


class SqsReplay:
    """Sends a required alert's event back to the alerts queue (its email bounced: the redelivery texts instead)."""

    def __init__(self, client: Any, queue_url: str) -> None:
        self._client = client
        self._queue_url = queue_url

    def __call__(self, body: str) -> None:
        if not self._queue_url:
            raise ValueError("ALERTS_QUEUE_URL is not set: the bounced required alert cannot be sent again")
        call(self._client.send_message, QueueUrl=self._queue_url, MessageBody=body)
