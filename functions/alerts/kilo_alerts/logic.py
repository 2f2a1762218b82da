"""Deliver one alert to the account's channels, each at most once: claim, decide, send, record.

Per channel (email, SMS) the ledger is claimed first (a conditional write on (account, period, kind, key, channel)),
so a redelivered event finds the decision taken and sends nothing. Then: the channel is skipped if the account chose
otherwise (or the catalogue's default leaves it out: low-severity alerts are quiet on SMS) or has no address/number
for it; an SMS to a number that opted out (STOP) is not sent; a message the provider refuses for good is recorded as
undeliverable. A transient failure releases the claim and, once every channel was tried, raises
``DeliveryIncompleteError``: the queue delivers the event again and only the unfinished channel is tried.
"""

from __future__ import annotations

import re
from collections.abc import Callable
from dataclasses import dataclass, replace
from urllib.parse import quote

from kilo_alerts.catalogue import CATALOGUE
from kilo_alerts.model import Alert, Channel, Delivery, Outcome, Rendered
from kilo_alerts.ports import DeliveryLedger, Mailer, SendFailedError, SendRefusedError, Texter
from kilo_alerts.render import render
from kilo_billing.accounts import E164_PATTERN, AccountDirectory, AccountProfile

_E164 = re.compile(E164_PATTERN)


@dataclass(frozen=True, slots=True)
class DeliveryPolicy:
    preferences_url: str  # the account's alert preferences page; the account id is appended as ?account=<id>
    lease_ms: int = 15 * 60_000  # a claim older than this (its holder crashed) may be taken over


@dataclass(frozen=True, slots=True)
class AlertOutcome:
    alert: Alert
    deliveries: tuple[Delivery, ...]

    def count(self, outcome: Outcome) -> int:
        return sum(1 for delivery in self.deliveries if delivery.outcome is outcome)


class DeliveryIncompleteError(Exception):
    """A channel failed for now; the others are decided and recorded. The event must be delivered again."""

    def __init__(self, outcome: AlertOutcome) -> None:
        super().__init__(f"{outcome.count(Outcome.RETRY)} channel(s) to retry")
        self.outcome = outcome


def deliver_alert(
    alert: Alert,
    directory: AccountDirectory,
    ledger: DeliveryLedger,
    mailer: Mailer,
    texter: Texter,
    policy: DeliveryPolicy,
    now_ms: int,
) -> AlertOutcome:
    profile = directory.registered([alert.account_id]).get(alert.account_id)
    spec = CATALOGUE[alert.kind]
    if profile is None:
        chosen: tuple[str, ...] = ()
    else:
        preference = profile.channels_chosen(alert.kind)
        chosen = preference if preference is not None else tuple(spec.default_channels(alert.severity))
    rendered = render(alert.kind, _values(alert, profile, policy)) if profile is not None else None
    deliveries: list[Delivery] = []
    for channel in Channel:
        pending = Delivery(
            account_id=alert.account_id,
            period=alert.period,
            kind=alert.kind,
            key=alert.key,
            channel=channel,
            outcome=Outcome.RETRY,
            recipient="",
            at_ms=now_ms,
            event_id=alert.event_id,
        )
        attempts = ledger.claim(pending, policy.lease_ms)
        if attempts is None:
            deliveries.append(replace(pending, outcome=Outcome.DUPLICATE, detail="already decided"))
            continue
        pending = replace(pending, attempts=attempts)
        if profile is None or rendered is None:
            decided = replace(pending, outcome=Outcome.SKIPPED, detail="account not registered")
        elif channel.value not in chosen:
            decided = replace(pending, outcome=Outcome.SKIPPED, detail="not chosen for this alert")
        else:
            decided = _send(pending, channel, profile, rendered, mailer, texter)
        if decided.outcome is Outcome.RETRY:
            ledger.release(decided)
        else:
            ledger.record(decided)
        deliveries.append(decided)
    outcome = AlertOutcome(alert, tuple(deliveries))
    if outcome.count(Outcome.RETRY):
        raise DeliveryIncompleteError(outcome)
    return outcome


def _values(alert: Alert, profile: AccountProfile, policy: DeliveryPolicy) -> dict[str, str]:
    link = f"{policy.preferences_url}?account={quote(alert.account_id, safe='')}"
    return {
        **alert.values,
        "account_id": alert.account_id,
        "account_name": profile.name or alert.account_id,
        "preferences_url": link,
    }


def _send(
    pending: Delivery, channel: Channel, profile: AccountProfile, rendered: Rendered, mailer: Mailer, texter: Texter
) -> Delivery:
    if channel is Channel.EMAIL:
        if not profile.email:
            return replace(pending, outcome=Outcome.SKIPPED, detail="no email address")
        address = profile.email
        return _attempt(replace(pending, recipient=address), lambda: mailer.send(address, *_email(rendered)))
    if not profile.phone:
        return replace(pending, outcome=Outcome.SKIPPED, detail="no phone number")
    phone = profile.phone
    pending = replace(pending, recipient=phone)
    if not _E164.fullmatch(phone):
        return replace(pending, outcome=Outcome.UNDELIVERABLE, detail="not an E.164 phone number")
    try:
        if texter.opted_out(phone):
            return replace(pending, outcome=Outcome.OPTED_OUT, detail="the number opted out of SMS (STOP)")
    except SendRefusedError as exc:
        return replace(pending, outcome=Outcome.UNDELIVERABLE, detail=str(exc))
    except SendFailedError as exc:
        return replace(pending, outcome=Outcome.RETRY, detail=str(exc))
    return _attempt(pending, lambda: texter.send(phone, rendered.sms))


def _email(rendered: Rendered) -> tuple[str, str, str]:
    return rendered.subject, rendered.html, rendered.text


def _attempt(pending: Delivery, send: Callable[[], str]) -> Delivery:
    try:
        message_id = send()
    except SendRefusedError as exc:
        return replace(pending, outcome=Outcome.UNDELIVERABLE, detail=str(exc))
    except SendFailedError as exc:
        return replace(pending, outcome=Outcome.RETRY, detail=str(exc))
    return replace(pending, outcome=Outcome.SENT, detail=message_id)
