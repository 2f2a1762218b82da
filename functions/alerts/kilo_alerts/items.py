"""Records in the alerts table, kept ``RECORD_TTL_DAYS``:
- deliveries ``ACCOUNT#<id>`` / ``DELIVERY#<period>#<kind>#<key>#<channel>``, one item per channel of an alert
  occurrence (the claim, then the outcome); a sent email's keeps SES's ``message_id``, a required alert's also its
  event (``replay``) until its bounce sent it again (D408);
- enforcement actions ``ACCOUNT#<id>`` / ``ENFORCEMENT#<period>@<hard limit>#<action>#<room>#<pseudonym>`` (the
  claim, then the outcome; records written before the limit was kept have ``ENFORCEMENT#<period>#...``; the
  participant by the pseudonym of its identity, D214 - records written before name the identity, and the
  account API's erasure deletes them; the account's own steps have room and identity ``-``);
- the SMS sent to an account per UTC day ``ACCOUNT#<id>`` / ``SMSDAY#<YYYY-MM-DD>`` (``sms_count``, the daily cap);
- the enforcement's turn ``ACCOUNT#<id>`` / ``TURN#ENFORCEMENT`` (``holder``, ``taken_at_ms``): one delivery at a
  time restricts or restores the account's participants (D182);
- the forecast's re-check ``ACCOUNT#<id>`` / ``FORECAST_RECHECK#<period>``: one per account and month (D366);
- an address SES reported undeliverable ``ACCOUNT#<id>`` / ``EMAILMARK#<pseudonym of the address casefolded>`` (``why``:
  bounce or complaint, ``detail``, ``at_ms``): later alerts skip email to it (D400)."""

from __future__ import annotations

from collections.abc import Mapping
from decimal import Decimal
from typing import Any, Final

from kilo_alerts.model import (
    Channel,
    Delivery,
    EnforcementAction,
    EnforcementRecord,
    MarginSnapshot,
    Outcome,
    Reason,
)
from kilo_alerts.rechecks import ForecastRecheck
from kilo_billing.email_marks import mark_key
from kilo_billing.items import Item, from_item, to_item

RECORD_TTL_DAYS: Final = 400
PENDING: Final = "pending"  # claimed, being sent


def partition(account_id: str) -> str:
    return f"ACCOUNT#{account_id}"


def sort_key(delivery: Delivery) -> str:
    return f"DELIVERY#{delivery.period}#{delivery.kind}#{delivery.key}#{delivery.channel.value}"


def key(delivery: Delivery) -> Item:
    return to_item({"pk": partition(delivery.account_id), "sk": sort_key(delivery)})


def expires_at(at_ms: int) -> int:
    """When a record written at ``at_ms`` expires (epoch seconds, DynamoDB's TTL): ``RECORD_TTL_DAYS`` later."""
    return at_ms // 1000 + RECORD_TTL_DAYS * 86_400


def delivery_to_item(delivery: Delivery) -> Item:
    reason = {"reason": delivery.reason.value} if delivery.reason is not None else {}
    if delivery.message_id:  # a sent email's: its bounce turns this record undeliverable (D408)
        reason["message_id"] = delivery.message_id
    if delivery.replay and delivery.outcome is Outcome.SENT:  # a required alert's event: sent again at its bounce
        reason["replay"] = delivery.replay
    return to_item(
        {
            **reason,
            "pk": partition(delivery.account_id),
            "sk": sort_key(delivery),
            "account_id": delivery.account_id,
            "period": delivery.period,
            "kind": delivery.kind,
            "alert_key": delivery.key,
            "channel": delivery.channel.value,
            "status": delivery.outcome.value,
            "recipient": delivery.recipient,
            "at_ms": delivery.at_ms,
            "detail": delivery.detail,
            "event_id": delivery.event_id,
            "attempts": delivery.attempts,
            "expires_at": expires_at(delivery.at_ms),
        }
    )


def delivery_from_item(item: Mapping[str, Any]) -> Delivery:
    values = from_item(item)
    status = str(values["status"])
    return Delivery(
        account_id=str(values["account_id"]),
        period=str(values["period"]),
        kind=str(values["kind"]),
        key=str(values["alert_key"]),
        channel=Channel(str(values["channel"])),
        outcome=Outcome.RETRY if status == PENDING else Outcome(status),
        recipient=str(values.get("recipient", "")),
        at_ms=int(values.get("at_ms", 0)),
        detail=str(values.get("detail", "")),
        event_id=str(values.get("event_id", "")),
        attempts=int(values.get("attempts", 1)),
        reason=_reason(values),
        message_id=str(values.get("message_id", "")),
        replay=str(values.get("replay", "")),
    )


def _reason(values: Mapping[str, Any]) -> Reason | None:
    """The record's ``reason``; a record written before it was kept has none, and is read by its detail - the one
    reason read back then (D215) being a missing address."""
    if values.get("reason"):
        return Reason(str(values["reason"]))
    if values.get("status") == Outcome.SKIPPED.value and values.get("detail") == Reason.NO_EMAIL.detail:
        return Reason.NO_EMAIL
    return None


def email_mark_key(account_id: str, recipient: str) -> Item:
    """The mark of an address (``recipient``: its pseudonym, never the address, D203; the layer's one rule)."""
    return to_item(mark_key(account_id, recipient))


def email_mark_item(account_id: str, recipient: str, why: str, detail: str, at_ms: int) -> Item:
    values = {"why": why, "detail": detail, "at_ms": at_ms, "expires_at": expires_at(at_ms)}
    return {**email_mark_key(account_id, recipient), **to_item(values)}


def sms_day_key(account_id: str, day: str) -> Item:
    """The account's SMS count of one UTC day (``YYYY-MM-DD``): ``ACCOUNT#<id>`` / ``SMSDAY#<day>``, ``sms_count``."""
    return to_item({"pk": partition(account_id), "sk": f"SMSDAY#{day}"})


def turn_key(account_id: str) -> Item:
    return to_item({"pk": partition(account_id), "sk": "TURN#ENFORCEMENT"})


def turn_item(account_id: str, holder: str, now_ms: int) -> Item:
    return {
        **turn_key(account_id),
        **to_item({"holder": holder, "taken_at_ms": now_ms, "expires_at": expires_at(now_ms)}),
    }


def enforcement_sort_key(record: EnforcementRecord) -> str:
    """``ENFORCEMENT#<period>@<limit>#...`` (one claim per hard limit enforced); without a limit, as written before.
    A removal or an audio-only of a session whose join is known ends ``#<joined_ms>``: one claim per session, so a
    participant who rejoins with the same identity is removed or narrowed again (D71 amended (e4b), D361 amended
    (ao)); without it, as written before."""
    scoped = f"{record.period}@{record.limit}" if record.limit else record.period
    session = f"#{record.joined_ms}" if record.joined_ms else ""
    return f"ENFORCEMENT#{scoped}#{record.action.value}#{record.room}#{record.identity}{session}"


def enforcement_key(record: EnforcementRecord) -> Item:
    return to_item({"pk": partition(record.account_id), "sk": enforcement_sort_key(record)})


def enforcement_to_item(record: EnforcementRecord) -> Item:
    return to_item(
        {
            "pk": partition(record.account_id),
            "sk": enforcement_sort_key(record),
            "account_id": record.account_id,
            "period": record.period,
            "room": record.room,
            "identity": record.identity,
            "action": record.action.value,
            "status": record.outcome,
            "at_ms": record.at_ms,
            "detail": record.detail,
            "expires_at": expires_at(record.at_ms),
            **({"limit": record.limit} if record.limit else {}),
            **({"saved_permission": record.saved} if record.saved else {}),
            **({"narrowed_permission": record.narrowed} if record.narrowed else {}),
            **({"joined_ms": record.joined_ms} if record.joined_ms else {}),
        }
    )


def enforcement_from_item(item: Mapping[str, Any]) -> EnforcementRecord:
    values = from_item(item)
    return EnforcementRecord(
        account_id=str(values["account_id"]),
        period=str(values["period"]),
        room=str(values["room"]),
        identity=str(values["identity"]),
        action=EnforcementAction(str(values["action"])),
        outcome=str(values["status"]),
        at_ms=int(values["at_ms"]),
        detail=str(values.get("detail", "")),
        limit=str(values.get("limit", "")),
        saved=str(values.get("saved_permission", "")),
        narrowed=str(values.get("narrowed_permission", "")),
        joined_ms=int(values.get("joined_ms", 0)),
    )


# --- operator alerts, payment facts, margin snapshots ---------------------------------------------------------------
# - operator alerts ``ACCOUNT#<id>`` (or ``OPERATOR`` for the whole service) / ``OPERATOR#<kind>#<key>``: the claim,
#   then the outcome (sent, undeliverable; retry after a failure for now); an abuse flag's key names a participant
#   by its pseudonym (``concurrent_sessions:<pseudonym>:<day>``, D214);
# - failed payments ``ACCOUNT#<id>`` / ``PAYFAIL#<event id>`` (``at_ms``), once per payment attempt (D348);
# - payment methods, both ways: ``PAYMETHOD#<method>#<fingerprint>`` / ``ACCOUNT#<id>`` (who pays with it) and
#   ``ACCOUNT#<id>`` / ``PAYMETHOD#<method>#<fingerprint>`` (what an account pays with);
# - margin snapshots ``OPERATOR`` / ``MARGIN#<YYYY-MM-DD>`` (period, revenue, cost as exact decimal strings).
OPERATOR_PARTITION: Final = "OPERATOR"


def operator_key(account_id: str, kind: str, key: str) -> Item:
    return to_item({"pk": partition(account_id) if account_id else OPERATOR_PARTITION, "sk": f"OPERATOR#{kind}#{key}"})


def failure_item(account_id: str, event_id: str, at_ms: int) -> Item:
    return to_item(
        {
            "pk": partition(account_id),
            "sk": f"PAYFAIL#{event_id}",
            "at_ms": at_ms,
            "expires_at": expires_at(at_ms),
        }
    )


def method_items(account_id: str, method: str, fingerprint: str, at_ms: int) -> tuple[Item, Item]:
    card = f"PAYMETHOD#{method}#{fingerprint}"
    common = {"account_id": account_id, "method": method, "at_ms": at_ms}
    return to_item({"pk": card, "sk": partition(account_id), **common}), to_item(
        {"pk": partition(account_id), "sk": card, **common}
    )


def snapshot_to_item(snapshot: MarginSnapshot) -> Item:
    return to_item(
        {
            "pk": OPERATOR_PARTITION,
            "sk": f"MARGIN#{snapshot.day}",
            "day": snapshot.day,
            "period": snapshot.period,
            "revenue": str(snapshot.revenue),
            "cost": str(snapshot.cost),
            "accounts": snapshot.accounts,
        }
    )


def snapshot_from_item(item: Mapping[str, Any]) -> MarginSnapshot:
    values = from_item(item)
    return MarginSnapshot(
        day=str(values["day"]),
        period=str(values["period"]),
        revenue=Decimal(str(values["revenue"])),
        cost=Decimal(str(values["cost"])),
        accounts=int(values.get("accounts", 0)),
    )


# the forecast's re-check (D366): ``ACCOUNT#<id>`` / ``FORECAST_RECHECK#<period>``; while pending it carries the
# sparse index's keys (``recheck_period``, ``recheck_due_ms``), removed when the operator checks queue it
RECHECK_INDEX: Final = "forecast_rechecks_due"
RECHECK_PENDING: Final = "due"
RECHECK_QUEUED: Final = "queued"


def recheck_key(account_id: str, period: str) -> Item:
    return to_item({"pk": partition(account_id), "sk": f"FORECAST_RECHECK#{period}"})


def recheck_to_item(recheck: ForecastRecheck, at_ms: int) -> Item:
    return to_item(
        {
            "pk": partition(recheck.account_id),
            "sk": f"FORECAST_RECHECK#{recheck.period}",
            "account_id": recheck.account_id,
            "period": recheck.period,
            "due_ms": recheck.due_ms,
            "limit_name": recheck.limit_name,
            "limit": recheck.limit,
            "forecast_day": recheck.forecast_day,
            "status": RECHECK_PENDING,
            "at_ms": at_ms,
            "recheck_period": recheck.period,
            "recheck_due_ms": recheck.due_ms,
            "expires_at": expires_at(at_ms),
        }
    )


def recheck_from_item(item: Mapping[str, Any]) -> ForecastRecheck:
    values = from_item(item)
    return ForecastRecheck(
        str(values["account_id"]),
        str(values["period"]),
        int(values["due_ms"]),
        str(values["limit_name"]),
        str(values["limit"]),
        str(values.get("forecast_day", "")),
    )
