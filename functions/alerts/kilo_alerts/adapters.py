"""The alerts ports: SES v2 (email), SNS (SMS), the delivery and enforcement ledgers on DynamoDB, the account's open
sessions (rating's ``open_sessions`` index), LiveKit's RoomService (``livekit-api``) and the delayed removal step (SQS).

botocore failures are mapped once (``kilo_billing.aws.call``): ``InvalidRequestError`` (a rejected message, an invalid
number or parameter) is a refusal for good, SES's sending paused for the account a ``SendingPausedError`` (a failure
for now that lasts, D399), anything else a failure for now. A send the service did not take (``NotTakenError``:
throttled, over a limit, never connected) is sent again here, at most ``SEND_PAUSES`` times (D380).
"""

from __future__ import annotations

import asyncio
import json
import time
from collections.abc import Callable, Iterator, Sequence
from email.message import EmailMessage
from email.utils import make_msgid
from typing import Any, Final

from kilo_alerts import items
from kilo_alerts.bounces import ACCOUNT_TAG, DELIVERY_TAG, EmailMark, account_tag
from kilo_alerts.model import Delivery, EnforcementRecord, Held, MarginSnapshot, Narrowing, Participant
from kilo_alerts.ports import (
    ClaimHeldError,
    MarkUnreadError,
    ParticipantGoneError,
    RoomControlFailedError,
    SendFailedError,
    SendingPausedError,
    SendRefusedError,
)
from kilo_alerts.rechecks import FORECAST_DUE, ForecastRecheck
from kilo_billing.aws import (
    ConditionFailedError,
    InvalidRequestError,
    NotFoundError,
    NotTakenError,
    call,
    delete_if,
    give_back_counted,
    paged_items,
    put_if,
    take_counted,
)
from kilo_billing.aws import SendingPausedError as SesPausedError
from kilo_billing.items import from_item, to_item
from kilo_billing.livekit_rooms import RoomGoneError, RoomServiceFailedError, call_room_service, room_credentials


def _send(operation: Any, **kwargs: Any) -> dict[str, Any]:
    try:
        return dict(call(operation, **kwargs))
    except InvalidRequestError as exc:
        raise SendRefusedError(str(exc)) from exc
    except SesPausedError as exc:  # SES's sending paused for the account: hours, not seconds (D399)
        raise SendingPausedError(f"{type(exc).__name__}: {exc}") from exc
    except Exception as exc:  # the domain errors of kilo_billing.aws: throttled, unavailable, timed out
        raise SendFailedError(f"{type(exc).__name__}: {exc}") from exc


SEND_PAUSES: Final = (0.2, 0.5)  # seconds before the 2nd and the 3rd request of a send not taken: 0.7 s at most


def _send_not_taken_again(sleep: Callable[[float], None], operation: Any, **kwargs: Any) -> dict[str, Any]:
    """``_send`` of a call that sends (SendEmail, Publish), made with one botocore attempt (D380), sent again after
    each of ``SEND_PAUSES`` only while the service says it did not take it (``NotTakenError``). A read timeout, a
    connection reset or a 5xx may come after it was taken: a failure for now at once, the queue's to retry."""
    for pause in SEND_PAUSES:
        try:
            return _send(operation, **kwargs)
        except SendFailedError as exc:
            if not isinstance(exc.__cause__, NotTakenError):
                raise
        sleep(pause)
    return _send(operation, **kwargs)


class SesMailer:
    """One email per alert through SES v2 as a MIME message (plain text and HTML alternatives, a List-Unsubscribe
    header pointing at the preferences page), from the configured sender and configuration set. ``client`` is made
    with one attempt (``dependencies``): a SendEmail retried by botocore could mail the message twice (D380); one
    SES did not take is sent again (``_send_not_taken_again``, pausing with ``sleep``)."""

    def __init__(
        self,
        client: Any,
        sender: str,
        configuration_set: str = "",
        unsubscribe_url: str = "",
        *,
        reader: Any = None,
        sleep: Callable[[float], None] = time.sleep,
    ) -> None:
        self._client = client
        self._sleep = sleep
        self._reader = client if reader is None else reader  # the suppression list: a read, retried
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

    def send(self, to: str, subject: str, html: str, text: str, account_id: str = "", delivery: str = "") -> str:
        request: dict[str, Any] = {
            "FromEmailAddress": self._sender,
            "Destination": {"ToAddresses": [to]},
            "Content": {"Raw": {"Data": self.message(to, subject, html, text).as_bytes()}},
        }
        if self._configuration_set:
            request["ConfigurationSetName"] = self._configuration_set
        if account_id:  # published with the set's bounce and complaint events: whose address it was (D400)
            request["EmailTags"] = [{"Name": ACCOUNT_TAG, "Value": account_tag(account_id)}]
            if delivery:  # and which delivery record: its bounce turns that record undeliverable (D408)
                request["EmailTags"].append({"Name": DELIVERY_TAG, "Value": delivery})
        return str(_send_not_taken_again(self._sleep, self._client.send_email, **request)["MessageId"])

    def suppressed(self, to: str) -> str | None:
        """SES v2 ``GetSuppressedDestination``: the reason the address is on the account-level suppression list, or
        ``None`` (``NotFoundException``: not on it). Any other failure, or an operation the endpoint does not know,
        is a ``SendFailedError``."""
        try:
            answer = call(self._reader.get_suppressed_destination, EmailAddress=to)
        except NotFoundError:
            return None
        except Exception as exc:  # throttled, unavailable, refused (an invalid address), unknown (moto: 404)
            raise SendFailedError(f"{type(exc).__name__}: {exc}") from exc
        return str(answer["SuppressedDestination"].get("Reason") or "suppressed")


class SnsTexter:
    """Transactional SMS through SNS (direct publish to the number), after asking SNS whether it opted out.

    ``client`` publishes: made with one attempt (``dependencies``), since botocore retrying a Publish SNS took but
    answered late would text the number again, outside the ledger (D380), but one SNS did not take is published
    again (``_send_not_taken_again``, pausing with ``sleep``); ``reader`` (default: ``client``) asks the opt-out
    list, a read that may be retried."""

    def __init__(
        self, client: Any, sender_id: str = "", *, reader: Any = None, sleep: Callable[[float], None] = time.sleep
    ) -> None:
        self._client = client
        self._sleep = sleep
        self._reader = client if reader is None else reader
        self._sender_id = sender_id

    def opted_out(self, phone: str) -> bool:
        # SNS refuses to answer for an invalid number (SendRefusedError): it cannot be texted either
        answer = _send(self._reader.check_if_phone_number_is_opted_out, phoneNumber=phone)
        return bool(answer.get("isOptedOut"))

    def send(self, phone: str, text: str) -> str:
        attributes = {"AWS.SNS.SMS.SMSType": {"DataType": "String", "StringValue": "Transactional"}}
        if self._sender_id:
            attributes["AWS.SNS.SMS.SenderID"] = {"DataType": "String", "StringValue": self._sender_id}
        return str(
            _send_not_taken_again(
                self._sleep, self._client.publish, PhoneNumber=phone, Message=text, MessageAttributes=attributes
            )["MessageId"]
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
                        ":expires": items.expires_at(delivery.at_ms),
                        ":one": 1,
                    }
                ),
                ReturnValues="UPDATED_NEW",
            )
        except ConditionFailedError:
            if _pending(self._client, self._table, items.key(delivery)):
                raise ClaimHeldError(Held.CLAIM) from None
            return None
        return int(from_item(answer["Attributes"])["attempts"])

    def take_sms(self, account_id: str, day: str, cap: int, at_ms: int) -> bool:
        key = items.sms_day_key(account_id, day)
        return take_counted(self._client, self._table, key, "sms_count", cap, items.expires_at(at_ms))

    def give_back_sms(self, account_id: str, day: str) -> None:
        give_back_counted(self._client, self._table, items.sms_day_key(account_id, day), "sms_count")

    def record(self, delivery: Delivery) -> None:
        call(self._client.put_item, TableName=self._table, Item=items.delivery_to_item(delivery))

    def release(self, delivery: Delivery) -> None:
        call(self._client.put_item, TableName=self._table, Item=items.delivery_to_item(delivery))

    def deliveries(self, account_id: str, period: str | None = None) -> list[Delivery]:
        prefix = f"DELIVERY#{period}#" if period else "DELIVERY#"
        return [
            items.delivery_from_item(item)
            for item in _prefixed(self._client, self._table, items.partition(account_id), prefix)
        ]

    def mark_email(self, account_id: str, recipient: str, why: str, detail: str, at_ms: int) -> bool:
        from kilo_alerts.marks import DynamoEmailMarks  # noqa: PLC0415 (the bounce handler's; not on alerts' cold start)

        return DynamoEmailMarks(self._client, self._table).mark_email(account_id, recipient, why, detail, at_ms)

    def email_mark(self, account_id: str, recipient: str) -> EmailMark | None:
        try:
            found = call(
                self._client.get_item,
                TableName=self._table,
                Key=items.email_mark_key(account_id, recipient),
                ConsistentRead=True,
            )
        except Exception as exc:  # the domain errors of kilo_billing.aws: the email goes unchecked (D400)
            raise MarkUnreadError(f"{type(exc).__name__}: {exc}") from exc
        if "Item" not in found:
            return None
        values = from_item(found["Item"])
        return EmailMark(str(values.get("why")), str(values.get("detail")), int(values.get("at_ms", 0)))


ALERTS_SOURCE: Final = "kilo.billing.alerts"
# a pending enforcement claim older than this is taken over: longer than the function's timeout (60 s, the holder is
# done or dead by then), shorter than the alerts queue's visibility timeout (360 s), so the redelivered record finds it
# stale (template.yaml, tests/infra)
ENFORCEMENT_LEASE_MS: Final = 5 * 60_000
# Rating's sessions in the usage table (kilo_rate_usage.items, read here by name, never imported): an open session
# carries ``open_account`` (the sparse index's key), ``room_name`` and ``identity``.
OPEN_INDEX: Final = "open_sessions"
OPEN_ACCOUNT: Final = "open_account"
OPEN_SINCE: Final = "open_since"  # the index's sort key: the session's start (rating's ``start_ms``)


class DynamoEnforcementLedger:
    """``EnforcementLedger`` on the alerts table: the claim is one conditional ``PutItem`` (new, failed for now, or a
    pending claim older than the lease)."""

    def __init__(self, client: Any, table: str) -> None:
        self._client = client
        self._table = table

    def claim(self, record: EnforcementRecord) -> bool:
        claimed = put_if(
            self._client,
            self._table,
            items.enforcement_to_item(record.decided(items.PENDING)),
            "attribute_not_exists(pk) OR #s = :retry OR (#s = :pending AND at_ms < :stale)",
            ExpressionAttributeNames={"#s": "status"},
            ExpressionAttributeValues=to_item(
                {":retry": "retry", ":pending": items.PENDING, ":stale": record.at_ms - ENFORCEMENT_LEASE_MS}
            ),
        )
        if not claimed and _pending(self._client, self._table, items.enforcement_key(record)):
            raise ClaimHeldError(Held.CLAIM)
        return claimed

    def take_turn(self, account_id: str, holder: str, now_ms: int) -> None:
        taken = put_if(
            self._client,
            self._table,
            items.turn_item(account_id, holder, now_ms),
            "attribute_not_exists(pk) OR holder = :holder OR taken_at_ms < :stale",
            ExpressionAttributeValues=to_item({":holder": holder, ":stale": now_ms - ENFORCEMENT_LEASE_MS}),
        )
        if not taken:
            raise ClaimHeldError(Held.TURN)

    def end_turn(self, account_id: str, holder: str) -> None:
        # not deleted: taken over after the lease (or never taken), not this holder's to end
        delete_if(
            self._client,
            self._table,
            items.turn_key(account_id),
            "holder = :holder",
            ExpressionAttributeValues=to_item({":holder": holder}),
        )

    def record(self, record: EnforcementRecord) -> None:
        call(self._client.put_item, TableName=self._table, Item=items.enforcement_to_item(record))

    def actions(self, account_id: str) -> list[EnforcementRecord]:
        found = _prefixed(self._client, self._table, items.partition(account_id), "ENFORCEMENT#")
        return sorted(
            map(items.enforcement_from_item, found), key=lambda r: (r.at_ms, r.action.value, r.room, r.identity)
        )


class DynamoOpenSessions:
    """The account's open sessions from rating's sparse ``open_sessions`` index (keyed by account)."""

    def __init__(self, client: Any, table: str) -> None:
        self._client = client
        self._table = table

    def open_participants(self, account_id: str) -> list[Participant]:
        request: dict[str, Any] = {
            "TableName": self._table,
            "IndexName": OPEN_INDEX,
            "KeyConditionExpression": "#a = :a",
            "ExpressionAttributeNames": {"#a": OPEN_ACCOUNT, "#r": "room_name", "#i": "identity", "#s": OPEN_SINCE},
            "ExpressionAttributeValues": to_item({":a": account_id}),
            "ProjectionExpression": "#r, #i, #s",
        }
        found: set[Participant] = set()
        for item in paged_items(self._client.query, **request):
            values = from_item(item)
            if values.get("room_name") and values.get("identity"):
                joined = int(values.get(OPEN_SINCE) or 0)  # the session's start: a rejoin is another session
                found.add(Participant(str(values["room_name"]), str(values["identity"]), joined))
        return sorted(found)


class SqsRemovalScheduler:
    """The removal step as a message on the alerts queue, delayed by the grace period (SQS: at most 15 minutes)."""

    def __init__(self, client: Any, queue_url: str) -> None:
        self._client = client
        self._queue_url = queue_url

    def schedule_removal(self, account_id: str, period: str, delay_seconds: int, limit: str) -> None:
        body = {
            "detail-type": "EnforcementStepDue.v1",  # kilo_alerts.logic.ENFORCEMENT_STEP
            "source": ALERTS_SOURCE,
            "detail": {"account_id": account_id, "period": period, "step": "remove", "limit": limit},
        }
        call(
            self._client.send_message,
            QueueUrl=self._queue_url,
            MessageBody=json.dumps(body),
            DelaySeconds=max(0, min(900, delay_seconds)),
        )


class SqsRedelivery:
    """A received message of the alerts queue made visible again sooner than the queue's visibility timeout."""

    def __init__(self, client: Any, queue_url: str) -> None:
        self._client = client
        self._queue_url = queue_url

    def sooner(self, receipt_handle: str, seconds: int) -> None:
        call(
            self._client.change_message_visibility,
            QueueUrl=self._queue_url,
            ReceiptHandle=receipt_handle,
            VisibilityTimeout=max(0, seconds),
        )


class LiveKitRoomControl:
    """LiveKit's RoomService through the official SDK (``livekit-api``, Twirp). ``credentials``: every (API key,
    secret) configured; a key LiveKit refuses (401, during a rotation) is followed by the next."""

    def __init__(self, url: str, credentials: Callable[[], Sequence[tuple[str, str]]], timeout: float = 5.0) -> None:
        self._url = url
        self._credentials = credentials
        self._timeout = timeout

    def audio_only(self, room: str, identity: str) -> Narrowing | None:
        """GetParticipant, then UpdateParticipant with its own permission narrowed: UpdateParticipant's permission
        replaces every field (LiveKit's ``VideoGrant.UpdateFromPermission``), so subscribe-only viewers, hidden
        recorders and agents keep exactly what they had but video and screen share. Publish sources limited to some
        without the microphone: publishing is turned off. The permission before it and the one LiveKit answers it
        holds after the update, as protobuf JSON."""
        from livekit import api  # noqa: PLC0415

        async def narrow(client: Any) -> Narrowing | None:
            info = await client.room.get_participant(api.RoomParticipantIdentity(room=room, identity=identity))
            before = info.permission
            if not before.can_publish:
                return None
            narrowed = api.ParticipantPermission()
            narrowed.CopyFrom(before)
            sources = list(before.can_publish_sources)  # empty: every source may be published
            keep = [api.TrackSource.MICROPHONE] if not sources or api.TrackSource.MICROPHONE in sources else []
            del narrowed.can_publish_sources[:]
            narrowed.can_publish_sources.extend(keep)
            narrowed.can_publish = bool(keep)
            request = api.UpdateParticipantRequest(room=room, identity=identity, permission=narrowed)
            updated = await client.room.update_participant(request)
            holds = updated.permission if updated.HasField("permission") else narrowed
            return Narrowing(_json(before), _json(holds))

        return self._run(narrow)  # type: ignore[no-any-return]

    def restore(self, room: str, identity: str, saved: str, narrowed: str) -> bool:
        """GetParticipant, then UpdateParticipant with ``saved`` only if its permission is still ``narrowed``
        (compared as messages). Not atomic - RoomService has no conditional update - so an app's change landing
        between the two requests is overwritten: the window is one round trip, not the whole grace. Our own
        restriction cannot land there: both run in the account's turn (``enforcement._in_turn``, D182)."""
        from google.protobuf import json_format  # noqa: PLC0415
        from livekit import api  # noqa: PLC0415

        permission = json_format.Parse(saved, api.ParticipantPermission())
        expected = json_format.Parse(narrowed, api.ParticipantPermission()) if narrowed else None

        async def give_back(client: Any) -> bool:
            if expected is not None:
                info = await client.room.get_participant(api.RoomParticipantIdentity(room=room, identity=identity))
                if info.permission != expected:
                    return False
            request = api.UpdateParticipantRequest(room=room, identity=identity, permission=permission)
            await client.room.update_participant(request)
            return True

        return bool(self._run(give_back))

    def remove(self, room: str, identity: str) -> None:
        from livekit import api  # noqa: PLC0415

        request = api.RoomParticipantIdentity(room=room, identity=identity)
        self._run(lambda client: client.room.remove_participant(request))

    def identities(self, room: str) -> list[str]:
        """ListParticipants: every participant's identity, in RoomService's order."""
        from livekit import api  # noqa: PLC0415

        async def listed(client: Any) -> list[str]:
            answer = await client.room.list_participants(api.ListParticipantsRequest(room=room))
            return [str(participant.identity) for participant in answer.participants]

        return list(self._run(listed))

    def _run(self, operation: Callable[[Any], Any]) -> Any:
        try:
            credentials = room_credentials(self._url, self._credentials)
        except RoomServiceFailedError as exc:
            raise RoomControlFailedError(str(exc)) from exc
        return asyncio.run(self._ask(operation, credentials))

    async def _ask(self, operation: Callable[[Any], Any], credentials: list[tuple[str, str]]) -> Any:
        import aiohttp  # noqa: PLC0415

        async with aiohttp.ClientSession(timeout=aiohttp.ClientTimeout(total=self._timeout)) as http:
            try:
                return await call_room_service(self._url, credentials, operation, http)
            except RoomGoneError as exc:
                raise ParticipantGoneError(str(exc)) from exc
            except RoomServiceFailedError as exc:
                raise RoomControlFailedError(str(exc)) from exc


def _json(permission: Any) -> str:
    from google.protobuf import json_format  # noqa: PLC0415

    return str(json_format.MessageToJson(permission, indent=None))


SNS_SUBJECT_LIMIT: Final = 100  # characters of a Publish's Subject (SNS refuses a longer one: InvalidParameter)


class SnsOperatorNotifier:
    """Operator alerts published on the operator topic (the same topic the CloudWatch alarms notify); ``client`` made
    with one attempt (``dependencies``, D380); a publish SNS did not take is sent again, pausing with ``sleep``."""

    def __init__(self, client: Any, topic_arn: str, *, sleep: Callable[[float], None] = time.sleep) -> None:
        self._client = client
        self._sleep = sleep
        self._topic_arn = topic_arn

    def notify(self, subject: str, message: str) -> str:
        """Publish on the operator topic; the subject cut to SNS's limit (the whole of it is in the message)."""
        if not self._topic_arn:
            raise SendRefusedError("no operator topic is configured")
        subject = subject[:SNS_SUBJECT_LIMIT]
        answer = _send_not_taken_again(
            self._sleep, self._client.publish, TopicArn=self._topic_arn, Subject=subject, Message=message
        )
        return str(answer["MessageId"])


class DynamoOperatorLedger:
    """``OperatorLedger`` on the alerts table: the claim is one conditional ``PutItem`` (new, released, or a pending
    claim older than the lease); a pending claim within its lease raises ``ClaimHeldError``."""

    def __init__(self, client: Any, table: str) -> None:
        self._client = client
        self._table = table

    def _put(self, account_id: str, kind: str, key: str, status: str, detail: str, now_ms: int, **extra: Any) -> None:
        values = {
            "account_id": account_id,
            "kind": kind,
            "alert_key": key,
            "status": status,
            "detail": detail,
            "at_ms": now_ms,
            "expires_at": items.expires_at(now_ms),
        }
        call(
            self._client.put_item,
            TableName=self._table,
            Item={**items.operator_key(account_id, kind, key), **to_item(values)},
            **extra,
        )

    def claim(self, account_id: str, kind: str, key: str, now_ms: int, lease_ms: int) -> bool:
        try:
            self._put(
                account_id,
                kind,
                key,
                items.PENDING,
                "",
                now_ms,
                ConditionExpression="attribute_not_exists(pk) OR #s = :retry OR (#s = :pending AND at_ms < :stale)",
                ExpressionAttributeNames={"#s": "status"},
                ExpressionAttributeValues=to_item(
                    {":retry": "retry", ":pending": items.PENDING, ":stale": now_ms - lease_ms}
                ),
            )
        except ConditionFailedError:
            # pending within its lease is not decided (a holder still at it, or one that crashed): retried (D147)
            if _pending(self._client, self._table, items.operator_key(account_id, kind, key)):
                raise ClaimHeldError(Held.CLAIM) from None
            return False
        return True

    def record(self, account_id: str, kind: str, key: str, outcome: str, detail: str, now_ms: int) -> None:
        self._put(account_id, kind, key, outcome, detail, now_ms)

    def release(self, account_id: str, kind: str, key: str, detail: str, now_ms: int) -> None:
        self._put(account_id, kind, key, "retry", detail, now_ms)


class DynamoPaymentSignals:
    """``PaymentSignals`` on the alerts table (see ``items``): puts, then one Query of the partition asked about."""

    def __init__(self, client: Any, table: str) -> None:
        self._client = client
        self._table = table

    def _query(self, pk: str, prefix: str) -> list[dict[str, Any]]:
        return [from_item(item) for item in _prefixed(self._client, self._table, pk, prefix)]

    def record_failure(self, account_id: str, event_id: str, at_ms: int) -> list[int]:
        # not written when the same event comes again: kept once
        put_if(self._client, self._table, items.failure_item(account_id, event_id, at_ms))
        return sorted(int(value["at_ms"]) for value in self._query(items.partition(account_id), "PAYFAIL#"))

    def record_method(self, account_id: str, method: str, fingerprint: str, at_ms: int) -> list[str]:
        for item in items.method_items(account_id, method, fingerprint, at_ms):
            call(self._client.put_item, TableName=self._table, Item=item)
        return sorted(
            str(value["account_id"]) for value in self._query(f"PAYMETHOD#{method}#{fingerprint}", "ACCOUNT#")
        )


class DynamoMarginSnapshots:
    def __init__(self, client: Any, table: str) -> None:
        self._client = client
        self._table = table

    def latest_before(self, day: str) -> MarginSnapshot | None:
        answer = call(
            self._client.query,
            TableName=self._table,
            KeyConditionExpression="pk = :pk AND sk BETWEEN :low AND :high",
            ExpressionAttributeValues=to_item(
                {":pk": items.OPERATOR_PARTITION, ":low": "MARGIN#", ":high": f"MARGIN#{day}"}
            ),
            ScanIndexForward=False,
            Limit=2,
            ConsistentRead=True,
        )
        for item in answer["Items"]:
            snapshot = items.snapshot_from_item(item)
            if snapshot.day < day:
                return snapshot
        return None

    def save(self, snapshot: MarginSnapshot) -> None:
        call(self._client.put_item, TableName=self._table, Item=items.snapshot_to_item(snapshot))


def _pending(client: Any, table: str, key: Any) -> bool:
    """After a claim's condition failed: whether the item is a pending claim (held within its lease), not a decision
    (a consistent read; decided meanwhile reads as decided)."""
    found = call(client.get_item, TableName=table, Key=key, ConsistentRead=True, ProjectionExpression="#s",
                 ExpressionAttributeNames={"#s": "status"})  # fmt: skip
    return bool(from_item(found.get("Item", {})).get("status") == items.PENDING)


def _prefixed(client: Any, table: str, pk: str, prefix: str) -> Iterator[dict[str, Any]]:
    """The items of partition ``pk`` whose sort key starts with ``prefix`` (a consistent Query, every page)."""
    return paged_items(
        client.query,
        TableName=table,
        KeyConditionExpression="pk = :pk AND begins_with(sk, :prefix)",
        ExpressionAttributeValues=to_item({":pk": pk, ":prefix": prefix}),
        ConsistentRead=True,
    )


class DynamoForecastRechecks:
    """``ForecastRechecks`` on the alerts table: the row written by a conditional ``PutItem``, the due ones read from
    the sparse ``forecast_rechecks_due`` index (only pending rows carry its keys), queued by a conditional
    ``UpdateItem`` removing them (D366)."""

    def __init__(self, client: Any, table: str) -> None:
        self._client = client
        self._table = table

    def plan(self, recheck: ForecastRecheck, at_ms: int) -> None:
        # a pending row is replaced by a day said (the forecast a later early event sent) or by another limit (the
        # limit changed before the base: the re-check is of the one in force); no day, same limit: never overwritten
        if recheck.forecast_day:
            put_if(
                self._client,
                self._table,
                items.recheck_to_item(recheck, at_ms),
                "attribute_not_exists(pk) OR attribute_exists(recheck_due_ms)",
            )
            return
        put_if(
            self._client,
            self._table,
            items.recheck_to_item(recheck, at_ms),
            "attribute_not_exists(pk) OR "
            "(attribute_exists(recheck_due_ms) AND (limit_name <> :name OR #limit <> :limit))",
            ExpressionAttributeNames={"#limit": "limit"},
            ExpressionAttributeValues=to_item({":name": recheck.limit_name, ":limit": recheck.limit}),
        )

    def due(self, period: str, now_ms: int, limit: int) -> list[ForecastRecheck]:
        answer = call(
            self._client.query,
            TableName=self._table,
            IndexName=items.RECHECK_INDEX,
            KeyConditionExpression="recheck_period = :period AND recheck_due_ms <= :now",
            ExpressionAttributeValues=to_item({":period": period, ":now": now_ms}),
            ScanIndexForward=True,
            Limit=limit,
        )
        return [items.recheck_from_item(item) for item in answer.get("Items", [])]

    def queued(self, recheck: ForecastRecheck, at_ms: int) -> bool:
        try:
            call(
                self._client.update_item,
                TableName=self._table,
                Key=items.recheck_key(recheck.account_id, recheck.period),
                UpdateExpression="SET #s = :queued, queued_at_ms = :now REMOVE recheck_period, recheck_due_ms",
                # the row read, still pending: one replaced since (another limit or day) stays for the next run
                # (no day said: the row has no forecast_day - an empty string is not written)
                ConditionExpression="attribute_exists(recheck_due_ms) AND limit_name = :name AND #limit = :limit AND "
                + ("forecast_day = :day" if recheck.forecast_day else "attribute_not_exists(forecast_day)"),
                ExpressionAttributeNames={"#s": "status", "#limit": "limit"},
                ExpressionAttributeValues=to_item(
                    {
                        ":queued": items.RECHECK_QUEUED,
                        ":now": at_ms,
                        ":name": recheck.limit_name,
                        ":limit": recheck.limit,
                        ":day": recheck.forecast_day,  # left out when empty
                    }
                ),
            )
        except ConditionFailedError:
            return False
        return True


class SqsRecheckQueue:
    """``RecheckQueue``: the re-check as ``BudgetForecastDue.v1`` on the re-checks' own queue (the alerts function
    takes only that from it, D366 amended (fq)), delayed (at most 900 s)."""

    def __init__(self, client: Any, queue_url: str) -> None:
        self._client = client
        self._queue_url = queue_url

    def send(self, recheck: ForecastRecheck, delay_seconds: int) -> None:
        body = {"detail-type": FORECAST_DUE, "source": ALERTS_SOURCE, "detail": recheck.detail()}
        call(
            self._client.send_message,
            QueueUrl=self._queue_url,
            MessageBody=json.dumps(body),
            DelaySeconds=max(0, min(900, delay_seconds)),
        )
