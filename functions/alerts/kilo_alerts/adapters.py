"""The alerts ports on AWS: SES v2 (email), SNS (SMS) and the delivery ledger on DynamoDB.

botocore failures are mapped once (``kilo_billing.aws.call``): ``InvalidRequestError`` (a rejected message, an invalid
number or parameter) is a refusal for good, anything else a failure for now.
"""

from __future__ import annotations

from email.message import EmailMessage
from email.utils import make_msgid
from typing import Any

from kilo_alerts import items
from kilo_alerts.model import Delivery
from kilo_alerts.ports import SendFailedError, SendRefusedError
from kilo_billing.aws import ConditionFailedError, InvalidRequestError, call
from kilo_billing.items import from_item, to_item


def _send(operation: Any, **kwargs: Any) -> dict[str, Any]:
    try:
        return dict(call(operation, **kwargs))
    except InvalidRequestError as exc:
        raise SendRefusedError(str(exc)) from exc
    except Exception as exc:  # the domain errors of kilo_billing.aws: throttled, unavailable, timed out
        raise SendFailedError(f"{type(exc).__name__}: {exc}") from exc


class SesMailer:
    """One email per alert through SES v2 as a MIME message (plain text and HTML alternatives, a List-Unsubscribe
    header pointing at the preferences page), from the configured sender and configuration set."""

    def __init__(self, client: Any, sender: str, configuration_set: str = "", unsubscribe_url: str = "") -> None:
        self._client = client
        self._sender = sender
        self._configuration_set = configuration_set
        self._unsubscribe_url = unsubscribe_url

    def message(self, to: str, subject: str, html: str, text: str) -> EmailMessage:
        message = EmailMessage()
        message["From"] = self._sender
        message["To"] = to
        message["Subject"] = subject
        message["Message-ID"] = make_msgid(domain=self._sender.rpartition("@")[2] or None)
        if self._unsubscribe_url:
            message["List-Unsubscribe"] = f"<{self._unsubscribe_url}>"
        message.set_content(text)
        message.add_alternative(html, subtype="html")
        return message

    def send(self, to: str, subject: str, html: str, text: str) -> str:
        request: dict[str, Any] = {
            "FromEmailAddress": self._sender,
            "Destination": {"ToAddresses": [to]},
            "Content": {"Raw": {"Data": self.message(to, subject, html, text).as_bytes()}},
        }
        if self._configuration_set:
            request["ConfigurationSetName"] = self._configuration_set
        return str(_send(self._client.send_email, **request)["MessageId"])


class SnsTexter:
    """Transactional SMS through SNS (direct publish to the number), after asking SNS whether it opted out."""

    def __init__(self, client: Any, sender_id: str = "") -> None:
        self._client = client
        self._sender_id = sender_id

    def opted_out(self, phone: str) -> bool:
        # SNS refuses to answer for an invalid number (SendRefusedError): it cannot be texted either
        answer = _send(self._client.check_if_phone_number_is_opted_out, phoneNumber=phone)
        return bool(answer.get("isOptedOut"))

    def send(self, phone: str, text: str) -> str:
        attributes = {"AWS.SNS.SMS.SMSType": {"DataType": "String", "StringValue": "Transactional"}}
        if self._sender_id:
            attributes["AWS.SNS.SMS.SenderID"] = {"DataType": "String", "StringValue": self._sender_id}
        return str(
            _send(self._client.publish, PhoneNumber=phone, Message=text, MessageAttributes=attributes)["MessageId"]
        )


class DynamoDeliveryLedger:
    """``DeliveryLedger`` on the alerts table: the claim is one conditional ``UpdateItem``."""

    def __init__(self, client: Any, table: str) -> None:
        self._client = client
        self._table = table

    def claim(self, delivery: Delivery, lease_ms: int) -> int | None:
        try:
            answer = call(
                self._client.update_item,
                TableName=self._table,
                Key=items.key(delivery),
                UpdateExpression="SET #s = :pending, claimed_at_ms = :now, account_id = :account, period = :period, "
                "kind = :kind, alert_key = :key, channel = :channel, at_ms = :now, event_id = :event, "
                "expires_at = :expires ADD attempts :one",
                # new, or released after a transient failure, or claimed by a holder that did not finish in its lease
                ConditionExpression="attribute_not_exists(pk) OR #s = :retry "
                "OR (#s = :pending AND claimed_at_ms < :stale)",
                ExpressionAttributeNames={"#s": "status"},
                ExpressionAttributeValues=to_item(
                    {
                        ":pending": items.PENDING,
                        ":retry": "retry",
                        ":now": delivery.at_ms,
                        ":stale": delivery.at_ms - lease_ms,
                        ":account": delivery.account_id,
                        ":period": delivery.period,
                        ":kind": delivery.kind,
                        ":key": delivery.key,
                        ":channel": delivery.channel.value,
                        ":event": delivery.event_id or "-",
                        ":expires": items.expires_at(delivery),
                        ":one": 1,
                    }
                ),
                ReturnValues="UPDATED_NEW",
            )
        except ConditionFailedError:
            return None
        return int(from_item(answer["Attributes"])["attempts"])

    def record(self, delivery: Delivery) -> None:
        call(self._client.put_item, TableName=self._table, Item=items.delivery_to_item(delivery))

    def release(self, delivery: Delivery) -> None:
        call(self._client.put_item, TableName=self._table, Item=items.delivery_to_item(delivery))

    def deliveries(self, account_id: str, period: str | None = None) -> list[Delivery]:
        prefix = f"DELIVERY#{period}#" if period else "DELIVERY#"
        found: list[Delivery] = []
        request: dict[str, Any] = {
            "TableName": self._table,
            "KeyConditionExpression": "pk = :pk AND begins_with(sk, :prefix)",
            "ExpressionAttributeValues": to_item({":pk": items.partition(account_id), ":prefix": prefix}),
            "ConsistentRead": True,
        }
        while True:
            page = call(self._client.query, **request)
            found.extend(items.delivery_from_item(item) for item in page["Items"])
            if "LastEvaluatedKey" not in page:
                return found
            request["ExclusiveStartKey"] = page["LastEvaluatedKey"]
