"""SES's bounce and complaint events for the alerts' emails (D400): which account's address to mark undeliverable.

Every alert email is sent through the alerts configuration set with the message tag ``kilo-account`` (the account id,
URL-safe base64 without padding: SES tag values take ASCII letters, digits, ``_`` and ``-`` only, account ids also
``.:@+=``). The set's event destination publishes BOUNCE and COMPLAINT events to an SNS topic, which delivers them
raw to a queue the bounce handler reads. SES's record (``eventType``; ``notificationType`` in identity notifications)
carries ``mail.tags``: a permanent bounce (``bounceType: Permanent``) or a complaint (not one whose feedback type is
``not-spam``) marks each recipient it names; a transient or undetermined bounce marks nothing (the mailbox may take
mail tomorrow)."""

from __future__ import annotations

import base64
import binascii
import json
import logging
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from datetime import datetime
from typing import Any, Final, Protocol

from kilo_billing.email_marks import mark_ref  # the one key rule (D423)

ACCOUNT_TAG: Final = "kilo-account"
# the alert email's delivery record, ``<period>#<kind>#<key>`` in the tag's alphabet: its bounce turns that record
# undeliverable, found by its key and SES's message id (D408)
DELIVERY_TAG: Final = "kilo-delivery"
TAG_VALUE_MAX: Final = 256  # SES's limit on a message tag's value: a longer delivery is not tagged
# a bounce's mark reported this long before a new permanent bounce of the address is refreshed by it (counted again);
# no mark lapses by itself: SES's account-level suppression list keeps the address too, until the operator's
# ``clear-mark`` removes both (D409 amended, D423)
BOUNCE_MARK_MS: Final = 30 * 86_400_000
# What SES publishes to the topic, as plain text, when the event destination is created (raw delivery: the queue's
# body as it is): acknowledged, not failed toward the dead-letter queue and its alarm.
TOPIC_VALIDATED: Final = "Successfully validated SNS topic for Amazon SES event publishing."
BOUNCE: Final = "bounce"
COMPLAINT: Final = "complaint"
NOT_SPAM: Final = "not-spam"  # a complaint's feedback type saying the mail is not spam (RFC 5965): marks nothing
# what a bounce may send back to the alerts queue: the events of the required alerts (D180) - never an enforcement
# step or another event the queue's other senders put there (D366; D422); ``kilo_billing.contracts``' detail
# types, written out here so the bounce handler's cold start does not load the contracts (pinned by a test)
REPLAYABLE: Final = frozenset({"PaymentFailed.v1", "UsageThresholdCrossed.v1"})


class BounceRecordError(ValueError):
    """Not an SES event record, or one with no account tag of ours: nothing to mark (the handler says so)."""


class SmsUndecidedError(Exception):
    """The bounced required alert's SMS is still a claim (its delivery has not decided it yet): the report is
    retried later (SQS redelivers it), when the SMS is decided - reopened then if skipped as not chosen (D422)."""


class ReplayRefusedError(ValueError):
    """The event kept on the bounced email's record is not a required alert's (``REPLAYABLE``): not sent back."""


@dataclass(frozen=True, slots=True)
class Undeliverable:
    """One address of one account that SES reports will not take our mail, or does not want it."""

    account_id: str
    address: str
    why: str  # BOUNCE or COMPLAINT
    detail: str  # "Permanent/General 5.1.1", "abuse": for people
    at_ms: int  # when SES reported it
    feedback_id: str
    message_id: str = ""  # SES's id of the email (``mail.messageId``)
    delivery: str = ""  # the email's delivery record (``DELIVERY_TAG``), "" when the email carried none


@dataclass(frozen=True, slots=True)
class EmailMark:
    """An address's mark as stored: ``why`` (BOUNCE, COMPLAINT), SES's ``detail``, when SES reported it."""

    why: str
    detail: str
    at_ms: int

    def __str__(self) -> str:
        return f"{self.why}: {self.detail}"


def account_tag(account_id: str) -> str:
    """The ``kilo-account`` tag's value for ``account_id`` (any text: the ``kilo-delivery`` tag's too)."""
    return base64.urlsafe_b64encode(account_id.encode()).decode().rstrip("=")


def delivery_tag(period: str, kind: str, key: str) -> str:
    """The ``kilo-delivery`` tag's value for an alert's email: ``""`` when longer than SES takes (then untagged: its
    bounce marks the address only, its record stays ``sent`` - said by a warning, D424)."""
    value = account_tag(f"{period}#{kind}#{key}")
    if len(value) <= TAG_VALUE_MAX:
        return value
    logging.getLogger(__name__).warning(
        "alert email sent without its kilo-delivery tag (longer than SES's 256): a bounce will not find its record",
        extra={"kind": kind, "period": period, "tag_length": len(value)},
    )
    return ""


def account_from_tag(value: str, tag: str = ACCOUNT_TAG) -> str:
    try:
        return base64.urlsafe_b64decode(value + "=" * (-len(value) % 4)).decode()
    except (binascii.Error, UnicodeDecodeError, ValueError) as exc:
        raise BounceRecordError(f"the {tag} tag is not ours (not base64 text): {exc}") from exc


def ses_record(body: str) -> Mapping[str, Any]:
    """SES's record from an SQS body: the record itself (raw delivery) or inside an SNS notification's ``Message``."""
    try:
        found = json.loads(body)
        if isinstance(found, dict) and found.get("Type") == "Notification" and isinstance(found.get("Message"), str):
            found = json.loads(found["Message"])
    except ValueError as exc:
        raise BounceRecordError(f"not JSON: {exc}") from exc
    if not isinstance(found, dict) or not isinstance(found.get("mail"), dict):
        raise BounceRecordError("not an SES event record (no mail object)")
    return found


def undeliverable(record: Mapping[str, Any]) -> list[Undeliverable]:
    """The addresses ``record`` marks: each recipient of a permanent bounce or of a complaint; none otherwise."""
    kind = str(record.get("eventType") or record.get("notificationType") or "")
    if kind == "Bounce":
        bounce = _object(record, "bounce")
        if bounce.get("bounceType") != "Permanent":
            return []
        recipients = bounce.get("bouncedRecipients")
        why, about = BOUNCE, bounce
    elif kind == "Complaint":
        complaint = _object(record, "complaint")
        if complaint.get("complaintFeedbackType") == NOT_SPAM:  # the provider says it is not spam: no complaint
            return []
        recipients = complaint.get("complainedRecipients")
        why, about = COMPLAINT, complaint
    else:
        return []
    account_id = _account(record)
    delivery = _delivery(record)
    message_id = str(record["mail"].get("messageId") or "")
    at_ms = _ms(str(about.get("timestamp") or ""))
    feedback = str(about.get("feedbackId") or "")
    if not isinstance(recipients, list):
        raise BounceRecordError(f"a {kind} record without its recipients")
    found = []
    for recipient in recipients:
        address = recipient.get("emailAddress") if isinstance(recipient, dict) else None
        if not isinstance(address, str) or not address:
            raise BounceRecordError(f"a {kind} recipient without an address")
        if why == BOUNCE:
            detail = f"{about.get('bounceType')}/{about.get('bounceSubType')} {recipient.get('status') or ''}".strip()
        else:
            detail = str(about.get("complaintFeedbackType") or "complaint")
        found.append(Undeliverable(account_id, address, why, detail, at_ms, feedback, message_id, delivery))
    return found


def _object(record: Mapping[str, Any], name: str) -> Mapping[str, Any]:
    found = record.get(name)
    if not isinstance(found, dict):
        raise BounceRecordError(f"an SES record without its {name} object")
    return found


def _account(record: Mapping[str, Any]) -> str:
    tags = record["mail"].get("tags")
    values = tags.get(ACCOUNT_TAG) if isinstance(tags, dict) else None
    if not isinstance(values, list) or len(values) != 1 or not isinstance(values[0], str):
        raise BounceRecordError(f"no {ACCOUNT_TAG} tag: not an alert email of ours")
    return account_from_tag(values[0])


def _delivery(record: Mapping[str, Any]) -> str:
    """The email's delivery record named by its ``kilo-delivery`` tag; ``""`` without one (sent before the tag)."""
    tags = record["mail"].get("tags")
    values = tags.get(DELIVERY_TAG) if isinstance(tags, dict) else None
    if not isinstance(values, list) or len(values) != 1 or not isinstance(values[0], str):
        return ""
    return account_from_tag(values[0], DELIVERY_TAG)


def _ms(timestamp: str) -> int:
    try:
        return int(datetime.fromisoformat(timestamp.replace("Z", "+00:00")).timestamp() * 1000)
    except ValueError as exc:
        raise BounceRecordError(f"an SES record's timestamp is not a time: {timestamp!r}") from exc


class EmailMarks(Protocol):
    """The ledger's marks of addresses SES reported undeliverable (``DeliveryLedger.mark_email``)."""

    def mark_email(self, account_id: str, recipient: str, why: str, detail: str, at_ms: int) -> bool: ...

    def bounce_delivery(self, account_id: str, delivery: str, message_id: str, detail: str) -> str | None:
        """The email record ``delivery`` (``<period>#<kind>#<key>``) of the account, when it is still ``sent`` as
        ``message_id`` (or bounced with its event not sent again yet), made undeliverable (``Reason.BOUNCED``,
        ``detail``): the required alert's event it keeps (``""`` for any other alert); ``None`` when nothing was
        changed (done before, another email's id, no such record)."""
        ...

    def reopen_sms(self, account_id: str, delivery: str) -> bool:
        """The alert's SMS record, when skipped as not chosen, reopened (``retry``: the event's redelivery claims it
        again): True, also when reopened before and not claimed since; False when no SMS is owed (sent, decided
        otherwise, no record). ``SmsUndecidedError`` while it is still a claim (D422)."""
        ...

    def replayed(self, account_id: str, delivery: str) -> None:
        """The email record's event is sent again: forgotten, so a redelivered report does nothing more."""
        ...


def mark_reported(
    body: str, marks: EmailMarks, replay: Callable[[str], None]
) -> list[tuple[Undeliverable, bool, bool]]:
    """Mark each address SES's record in ``body`` reports undeliverable, by its ``mark_ref`` (a pseudonym of the
    address casefolded: the table keeps no address, D203); with whether it was new (a redelivered report marks
    nothing again) and whether the bounced email's own delivery record, ``sent`` until now, was made undeliverable
    (D408: a complaint's email reached the mailbox, its record stays). A required alert's (D180) email bounced:
    its SMS record, skipped as not chosen, is reopened and its event sent again (``replay``: to the alerts queue),
    whose redelivery texts the verified number instead, as for a later alert to the marked address (D400).
    ``BounceRecordError`` when the body is not a record of ours; nothing for SES's validation of the topic
    (``TOPIC_VALIDATED``)."""
    if body == TOPIC_VALIDATED:
        return []
    return [
        (found, marks.mark_email(found.account_id, mark_ref(found.account_id, found.address), found.why,
                                 found.detail, found.at_ms), _bounced(found, marks, replay))
        for found in undeliverable(ses_record(body))
    ]  # fmt: skip


def _bounced(found: Undeliverable, marks: EmailMarks, replay: Callable[[str], None]) -> bool:
    if found.why != BOUNCE or not found.delivery or not found.message_id:
        return False
    event = marks.bounce_delivery(found.account_id, found.delivery, found.message_id, f"{found.why}: {found.detail}")
    if event:  # in this order, each step again at a redelivered report until the last is done
        _replayable(event)
        # an SMS still claimed raises (the report comes back later); the event goes back only for an SMS reopened:
        # no SMS owed (sent, decided otherwise), nothing of the event runs again (D422)
        if marks.reopen_sms(found.account_id, found.delivery):
            replay(event)
        marks.replayed(found.account_id, found.delivery)
    return event is not None


def _replayable(event: str) -> None:
    """``ReplayRefusedError`` unless ``event`` is a required alert's event (``REPLAYABLE``) as the queue carries it."""
    try:
        found = json.loads(event)
    except ValueError as exc:
        raise ReplayRefusedError(f"the bounced email's kept event is not JSON: {exc}") from exc
    kind = found.get("detail-type") if isinstance(found, dict) else None
    if kind not in REPLAYABLE or not isinstance(found.get("detail"), dict):
        raise ReplayRefusedError(f"the bounced email's kept event is not a required alert's ({kind!r}): not sent back")
