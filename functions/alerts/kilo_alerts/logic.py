"""Deliver one alert to the account's channels, each at most once: claim, decide, send, record.

Per channel (email, SMS) the ledger is claimed first (a conditional write on (account, period, kind, key, channel)), so
a redelivered event finds the decision taken and sends nothing; a claim still pending within its lease (another delivery
deciding it, or one that crashed) is not a decision: the channel is retried, and taken over once stale. Then: the
channel is skipped if the account chose otherwise (or the catalogue's default leaves it out: low-severity alerts are
quiet on SMS) or has no address/number for it; an SMS to a number that opted out (STOP) is not sent; a message the
provider refuses for good is recorded as undeliverable. An SMS to a number whose region is not one of ``SMS_REGIONS``
is not sent (a toll-fraud guard, D221: the region may have left the list after the number was verified). An SMS
the account's daily cap stops, that the regions withhold, or that SNS will not text (the number opted out, or SNS
refuses it), goes by email instead when the account did not choose email for the alert (D149, D170, D221): SMS
is decided first, the email instead on its own ledger row (sent once), and the SMS's decision recorded after it. The
other way round, a required alert (D180: the hard limit, a failed payment) whose email reaches nobody (SES refuses
it or has its address on the account's suppression list - asked before sending, D381 -, the account has no address,
SES's sending is paused for the account - at once, D399 - or SES still fails for now at the event's last delivery)
goes by SMS to the
account's verified number when SMS was not chosen for it (D215): its SMS row is claimed first and decided after
the email's. A transient failure releases the claim and, once every channel was tried, raises
``DeliveryIncompleteError``: the queue delivers the event again and only the unfinished channel is tried.
"""

from __future__ import annotations

import json
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field, replace
from datetime import UTC, date, datetime
from decimal import Decimal
from typing import Any, Final
from urllib.parse import quote

from kilo_alerts.bounces import delivery_tag
from kilo_alerts.catalogue import (
    CATALOGUE,
    alert_from_event,
    hard_limit_enforced,
    hard_limit_not_enforced,
    money_text,
)
from kilo_alerts.enforcement import (
    EnforcementIncompleteError,
    EnforcementPolicy,
    EnforcementPorts,
    hard_limit_reached,
    remove_account,
    restrict_account,
)
from kilo_alerts.model import (
    NOT_CHOSEN,
    Alert,
    AlertError,
    Channel,
    Delivery,
    EnforcementRecord,
    Outcome,
    Reason,
    Rendered,
    Severity,
)
from kilo_alerts.operator import (
    OPERATOR_EVENTS,
    Announced,
    OperatorAlertFailedError,
    OperatorChecksIncompleteError,
    OperatorPolicy,
    OperatorPorts,
    handle_operator_event,
)
from kilo_alerts.ports import (
    ClaimHeldError,
    DeliveryLedger,
    EnforcementLedger,
    Mailer,
    MarkUnreadError,
    OpenSessions,
    RemovalScheduler,
    RoomControl,
    SendFailedError,
    SendingPausedError,
    SendRefusedError,
    Texter,
)
from kilo_alerts.rechecks import FORECAST_DUE, ForecastRecheck, ForecastRechecks
from kilo_alerts.render import render
from kilo_billing.accounts import (
    REQUIRED_ALERT_KINDS,
    AccountDirectory,
    AccountProfile,
    pseudonym,
    pseudonymised_in,
)
from kilo_billing.budgets import DEFAULT_WEEKDAY_WEIGHTS, base_reached_at, bill_reached_on, signed_up_at
from kilo_billing.catalog import Catalog, default_catalog
from kilo_billing.contracts import HardLimitStillReachedV1, PaymentFailedV1, UsageThresholdCrossedV1, limit_scope
from kilo_billing.email_marks import mark_ref
from kilo_billing.entitlements import EntitlementSource, Reading, SpendRecorder
from kilo_billing.month_to_date import MonthToDateSource, month_to_date
from kilo_billing.periods import Period

ENFORCEMENT_STEP: Final = "EnforcementStepDue.v1"  # the delayed removal step (adapters.SqsRemovalScheduler)
HARD: Final = "budget_hard_limit"
FORECAST: Final = "budget_forecast"  # "at this rate ...": once a month (its key), for the limit in force
FORECAST_KEY: Final = "forecast"
# the re-check's corrected forecast, when the day moved earlier: once a month too (D366)
FORECAST_UPDATE_KEY: Final = "forecast-update"
# events with operator checks that also alert the account (the customer alert is delivered besides the checks)
CUSTOMER_AND_OPERATOR: Final = frozenset({PaymentFailedV1.DETAIL_TYPE})
# the dashboard's pages an email may link (web/js/app.js's routes)
BILLING_PAGE: Final = "#/billing"  # the invoices, their receipts and processor pages
PAY_PAGE: Final = "#/pay"  # "Pay with crypto": the open crypto bills (a new quote), the payments seen


def _default_sms_regions() -> frozenset[str]:
    from kilo_billing.sms_regions import DEFAULT_SMS_REGIONS  # noqa: PLC0415  # read when an SMS is decided

    return DEFAULT_SMS_REGIONS


@dataclass(frozen=True, slots=True)
class DeliveryPolicy:
    preferences_url: str  # the account's alert preferences page; the account id is appended as ?account=<id>
    lease_ms: int = 5 * 60_000  # a claim older than this (its holder crashed) may be taken over (settings)
    # SMS to one account per UTC day, whatever the alerts (every new budget amount re-announces its thresholds: D124;
    # the number itself is verified first, D160); past it the SMS is skipped, the alert goes by email (D149)
    sms_per_day: int = 10
    # the regions (ISO) whose numbers are texted, SMS_REGIONS: another number's SMS is skipped, the alert goes by
    # email (D221); the layer's default when none is given, read then (kilo_billing.sms_regions)
    sms_regions: frozenset[str] = field(default_factory=_default_sms_regions)
    # the dashboard (DASHBOARD_URL, kilo_billing.settings.DashboardSettings): an email whose event names no page of its
    # own links the dashboard's page its text names (its routes are hashes: ``<dashboard>#/billing``), never the alert
    # preferences; no default of its own: the settings' value, always given
    dashboard_url: str = field(kw_only=True)


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
    last_attempt: bool = False,
) -> AlertOutcome:
    """``last_attempt``: the queue will not deliver the event again (its last receive before the dead-letter queue):
    an SMS failing for now then reaches nobody, and goes by email instead like a refused one (D179); a required
    alert's email failing for now then goes by SMS to the verified number (D215)."""
    profile = directory.registered([alert.account_id]).get(alert.account_id)
    chosen = _chosen(alert, profile)
    rendered = render(alert.kind, _values(alert, profile, policy)) if profile is not None else None
    decided_by: dict[Channel, Delivery] = {}
    # SMS is decided first: an SMS the day's cap stops goes by email instead when email was not chosen (D149); its
    # own decision is recorded only once the email's is, so a redelivery after the email failed for now decides both
    # again (the email is claimed on its own ledger row: sent once). An email not chosen is not decided while the SMS
    # is not (failed for now, or claimed by another delivery): the cap may stop the SMS at the redelivery
    sms_instead: Delivery | None = None  # an SMS that reaches nobody (capped, opted out, refused): email instead
    # a required alert's SMS not chosen, to a verified number: claimed, decided once the email is (D215)
    sms_waiting: Delivery | None = None
    for channel in (Channel.SMS, Channel.EMAIL):
        pending = Delivery.pending(alert, channel, now_ms)
        if sms_waiting is None:  # the event is kept for a bounce only when an SMS waits on the email (D422)
            pending = replace(pending, replay="")
        sms = decided_by.get(Channel.SMS)
        if (
            channel is Channel.EMAIL
            and channel.value not in chosen
            and sms is not None
            and sms.outcome is Outcome.RETRY
            and sms_instead is None
        ):
            decided_by[channel] = replace(pending, detail="not chosen: waits for the SMS's decision (the SMS cap)")
            continue
        try:
            attempts = ledger.claim(pending, policy.lease_ms)
        except ClaimHeldError:  # not decided yet: retried (taken over once older than the lease), never released
            decided_by[channel] = pending.because(Reason.HELD, Outcome.RETRY)
            continue
        if attempts is None:
            decided_by[channel] = replace(pending, outcome=Outcome.DUPLICATE, detail="already decided")
            continue
        pending = replace(pending, attempts=attempts)
        if alert.expires_ms is not None and now_ms >= alert.expires_ms:  # untrue by now: a quote expired (D379)
            decided = replace(pending, outcome=Outcome.SKIPPED, detail=alert.expired_detail)
        elif profile is None or rendered is None:
            decided = replace(pending, outcome=Outcome.SKIPPED, detail="account not registered")
        elif channel is Channel.EMAIL and sms_instead is not None:
            decided = _send(pending, channel, profile, rendered, (mailer, texter, ledger), policy)
        elif channel is Channel.SMS and _sms_waits_for_email(alert, profile, chosen):
            sms_waiting = pending  # claimed: decided after the email (recorded below)
            continue
        elif channel.value not in chosen:
            decided = replace(pending, outcome=Outcome.SKIPPED, detail=NOT_CHOSEN)
        else:
            decided, nobody = _send_chosen(
                pending, chosen, profile, rendered, (mailer, texter, ledger), policy, last_attempt
            )
            if nobody and Channel.EMAIL.value not in chosen:  # the SMS reaches nobody: the email instead (D170)
                sms_instead = decided_by[channel] = decided
                continue  # recorded below, once the email instead is decided
        _decide(ledger, decided)
        decided_by[channel] = decided
    if sms_instead is not None:  # the SMS's decision follows the email's: retried with it, or recorded
        decided_by[Channel.SMS] = _instead(sms_instead, decided_by[Channel.EMAIL])
        _decide(ledger, decided_by[Channel.SMS])
    if sms_waiting is not None and profile is not None and rendered is not None:
        decided_by[Channel.SMS] = _sms_instead_of_email(
            sms_waiting,
            decided_by[Channel.EMAIL],
            profile,
            rendered,
            (mailer, texter, ledger),
            policy,
            last_attempt,
        )
        _decide(ledger, decided_by[Channel.SMS])
    outcome = AlertOutcome(alert, tuple(decided_by[channel] for channel in Channel))
    if outcome.count(Outcome.RETRY):
        raise DeliveryIncompleteError(outcome)
    return outcome


def _send_chosen(
    pending: Delivery,
    chosen: tuple[str, ...],
    profile: AccountProfile,
    rendered: Rendered,
    ports: tuple[Mailer, Texter, DeliveryLedger],
    policy: DeliveryPolicy,
    last_attempt: bool,
) -> tuple[Delivery, bool]:
    """A chosen channel sent: its decision, and whether it is an SMS that reaches nobody (capped, withheld by the
    regions, opted out, refused, or failing for now at the last delivery)."""
    try:
        decided = _send(pending, pending.channel, profile, rendered, ports, policy)
    except SmsWithheldError as exc:  # the cap, the regions: our own rules, not SNS's
        if Channel.EMAIL.value in chosen and exc.email_note:
            return replace(exc.skipped, detail=f"{exc}; {exc.email_note}"), True
        return exc.skipped, True
    nobody = pending.channel is Channel.SMS and (
        decided.outcome in (Outcome.OPTED_OUT, Outcome.UNDELIVERABLE)
        or (last_attempt and decided.outcome is Outcome.RETRY)  # failing for now at the last delivery
    )
    return decided, nobody


def _chosen(alert: Alert, profile: AccountProfile | None) -> tuple[str, ...]:
    """The channels the account chose for the alert's kind (the catalogue's default when it did not choose); SMS only
    to a verified number: email as well otherwise (D160); a kind that must reach someone is never sent nowhere."""
    if profile is None:
        return ()
    preference = profile.channels_chosen(alert.kind)
    if preference == () and alert.kind in REQUIRED_ALERT_KINDS:  # saved before it was refused: email (D180)
        preference = (Channel.EMAIL.value,)
    chosen = preference if preference is not None else tuple(CATALOGUE[alert.kind].default_channels(alert.severity))
    if Channel.SMS.value in chosen and not profile.phone_verified:
        chosen = (*dict.fromkeys((*chosen, Channel.EMAIL.value)),)
    return chosen


def _sms_waits_for_email(alert: Alert, profile: AccountProfile, chosen: tuple[str, ...]) -> bool:
    """A required alert (D180) the account did not choose SMS for, with a verified number: its SMS waits for the
    email's decision, and goes when the email reaches nobody (D215)."""
    return (
        alert.kind in REQUIRED_ALERT_KINDS
        and Channel.SMS.value not in chosen
        and bool(profile.phone)
        and profile.phone_verified
    )


@dataclass(frozen=True, slots=True)
class _NoEmail:
    """Why a required alert's email reached nobody: the note of the SMS sent instead, and of one that was not."""

    sent: str
    unsent: str


REFUSED_EMAIL: Final = _NoEmail("sent instead of the email SES refused", "the email was refused by SES")
SUPPRESSED_EMAIL: Final = _NoEmail(
    "sent instead of the email: the address is on SES's suppression list",
    "the email's address is on SES's suppression list",
)
BOUNCED_EMAIL: Final = _NoEmail(
    "sent instead of the email: the address bounced for good or complained",
    "the email's address bounced for good or complained",
)
NO_ADDRESS: Final = _NoEmail(
    "sent instead of the email: the account has no email address", "the account has no email address"
)
SES_PAUSED: Final = _NoEmail(
    "sent instead of the email: SES sending is paused for the account",
    "the email: SES sending is paused for the account",
)
SES_FAILING: Final = _NoEmail(
    "sent instead of the email: SES still failing for now at the event's last delivery",
    "the email: SES still failing for now at the event's last delivery",
)


def _email_reached_nobody(
    pending: Delivery, email: Delivery, ledger: DeliveryLedger, last_attempt: bool
) -> _NoEmail | None:
    """Why the email of ``pending``'s alert reached nobody (D215): SES refused it or suppresses its address (D381),
    the account has no address, SES's sending is paused for the account (at any delivery: it lasts hours, D399;
    the email is left to retry toward the dead-letter queue), or
    SES still fails for now at the event's last delivery (the email is left to retry toward the dead-letter queue;
    not an email another delivery holds: it may be sending it); ``None`` otherwise. An email decided by an earlier
    delivery (one that crashed before deciding the SMS) is read back."""
    if email.outcome is Outcome.DUPLICATE:  # decided by an earlier delivery: what it decided
        email = next(
            (
                found
                for found in ledger.deliveries(pending.account_id, pending.period)
                if (found.kind, found.key, found.channel) == (pending.kind, pending.key, Channel.EMAIL)
            ),
            email,
        )
    if email.outcome is Outcome.UNDELIVERABLE and email.reason is Reason.SUPPRESSED:
        return SUPPRESSED_EMAIL
    if email.outcome is Outcome.UNDELIVERABLE and email.reason is Reason.BOUNCED:
        return BOUNCED_EMAIL
    if email.outcome is Outcome.UNDELIVERABLE:
        return REFUSED_EMAIL
    if email.outcome is Outcome.SKIPPED and email.reason is Reason.NO_EMAIL:
        return NO_ADDRESS
    if email.outcome is Outcome.RETRY and email.reason is Reason.PAUSED:  # hours, not a blip: at once (D399)
        return SES_PAUSED
    if email.outcome is Outcome.RETRY and last_attempt and email.reason is not Reason.HELD:
        return SES_FAILING
    return None


def _sms_instead_of_email(
    pending: Delivery,
    email: Delivery,
    profile: AccountProfile,
    rendered: Rendered,
    ports: tuple[Mailer, Texter, DeliveryLedger],
    policy: DeliveryPolicy,
    last_attempt: bool,
) -> Delivery:
    """The claimed SMS of a required alert not chosen for SMS, once its email is decided (D215): sent when the email
    reached nobody (``_email_reached_nobody``); retried with an email failing for now before the last delivery;
    else skipped, not chosen. The SMS's own row makes it once: a redelivery finds it decided."""
    why = _email_reached_nobody(pending, email, ports[2], last_attempt)
    if why is None and email.outcome is Outcome.RETRY:
        return replace(pending, detail=f"{NOT_CHOSEN}; waits for the email's decision (SMS if it reaches nobody)")
    if why is None:
        return replace(pending, outcome=Outcome.SKIPPED, detail=NOT_CHOSEN)
    try:
        sent = _send(pending, Channel.SMS, profile, rendered, ports, policy)
    except SmsWithheldError as exc:  # the cap, the regions
        return replace(exc.skipped, detail=f"{exc}; {why.unsent}")
    if sent.outcome is Outcome.SENT:
        return replace(sent, detail=f"{sent.detail}; {why.sent}")
    return replace(sent, detail=f"{sent.detail}; {why.unsent}")


def _instead(sms: Delivery, email: Delivery) -> Delivery:
    """The decision of an SMS that reached nobody once the email instead is decided (or failed for now: then retried
    with it)."""
    if email.outcome is Outcome.RETRY:
        return replace(sms, outcome=Outcome.RETRY, detail=f"{sms.detail}; the email instead failed for now")
    if sms.outcome is Outcome.RETRY:  # SNS failing for now at the last delivery (D179)
        given_up = replace(sms, outcome=Outcome.UNDELIVERABLE, detail=f"{LAST_DELIVERY}: {sms.detail}")
        if email.outcome is Outcome.SENT:
            return _instead(given_up, email)
        if email.outcome is Outcome.DUPLICATE:  # decided by an earlier delivery (one that crashed after sending it)
            return replace(given_up, detail=f"{given_up.detail}; the email was decided before")
        # the email reached nobody either (no address, refused): left to retry, toward the dead-letter queue
        return replace(sms, detail=f"{sms.detail}; the email instead: {email.outcome} ({email.detail})")
    if email.outcome is Outcome.SENT:
        return replace(sms, detail=f"{sms.detail}; sent by email instead")
    return replace(sms, detail=f"{sms.detail}; the email instead: {email.outcome} ({email.detail})")


LAST_DELIVERY: Final = "SNS still failing for now at the event's last delivery"


def _decide(ledger: DeliveryLedger, decided: Delivery) -> None:
    if decided.outcome is Outcome.RETRY:
        ledger.release(decided)
    else:
        ledger.record(decided)


class SmsWithheldError(Exception):
    """Our own rule withholds this SMS (``skipped``, the reason as detail): it reaches nobody, so the alert goes by
    email instead when email was not chosen (D149, D170). ``email_note`` is added to the detail when email was
    chosen too."""

    def __init__(self, skipped: Delivery, email_note: str = "") -> None:
        super().__init__(skipped.detail)
        self.skipped = skipped
        self.email_note = email_note


class SmsCapReachedError(SmsWithheldError):
    """The account's SMS cap of the (UTC) day is reached: this SMS is not sent (D149)."""

    def __init__(self, skipped: Delivery) -> None:
        super().__init__(skipped, "email is not capped")


class SmsRegionWithheldError(SmsWithheldError):
    """The number's region is not one of the policy's ``sms_regions``: this SMS is not sent (D221)."""


def _values(alert: Alert, profile: AccountProfile, policy: DeliveryPolicy) -> dict[str, str]:
    link = f"{policy.preferences_url}?account={quote(alert.account_id, safe='')}"
    pay = policy.dashboard_url + PAY_PAGE
    return {
        # no processor's hosted page: the dashboard's page of the invoice (Billing, or the one the alert names)
        "invoice_url": policy.dashboard_url + alert.values.get("invoice_page", BILLING_PAGE),
        # Pay with crypto: with the alert's bill chosen when it names one (``pay_page``)
        "pay_url": policy.dashboard_url + alert.values.get("pay_page", PAY_PAGE),
        "tx_url": pay,  # several transactions, or a chain without a known explorer: the page lists the payments
        **alert.values,
        "account_id": alert.account_id,
        "account_name": profile.name or alert.account_id,
        "preferences_url": link,
    }


def _send(
    pending: Delivery,
    channel: Channel,
    profile: AccountProfile,
    rendered: Rendered,
    ports: tuple[Mailer, Texter, DeliveryLedger],
    policy: DeliveryPolicy,
) -> Delivery:
    mailer, texter, ledger = ports
    if channel is Channel.EMAIL:
        if not profile.email:
            return pending.because(Reason.NO_EMAIL, Outcome.SKIPPED)
        return _email_sent(_to(pending, profile.email), profile.email, rendered, mailer, ledger)
    if not profile.phone:
        return replace(pending, outcome=Outcome.SKIPPED, detail="no phone number")
    if not profile.phone_verified:
        return replace(pending, outcome=Outcome.SKIPPED, detail="phone number not verified")
    phone = profile.phone
    pending = _to(pending, phone)
    try:  # SNS judges the number: an invalid one is refused here or by the publish (undeliverable, D170)
        if texter.opted_out(phone):
            return replace(pending, outcome=Outcome.OPTED_OUT, detail="the number opted out of SMS (STOP)")
    except SendRefusedError as exc:  # SNS does not take the number (e.g. not E.164)
        refused = f"SNS refused the number: {exc}"
        return replace(
            pending, outcome=Outcome.UNDELIVERABLE, detail=pseudonymised_in(pending.account_id, refused, phone)
        )
    except SendFailedError as exc:
        return replace(pending, outcome=Outcome.RETRY, detail=pseudonymised_in(pending.account_id, str(exc), phone))
    # a number SNS takes, but in a region SMS does not go to (a toll-fraud guard, D221): withheld before the cap
    # counts it; the detail names the region, never the number (the record keeps no contact, D203)
    from kilo_billing.sms_regions import sms_region_refusal  # noqa: PLC0415  # libphonenumber: only here

    refusal = sms_region_refusal(phone, policy.sms_regions)
    if refusal is not None:
        raise SmsRegionWithheldError(replace(pending, outcome=Outcome.SKIPPED, detail=refusal.reason("the number")))
    day = f"{datetime.fromtimestamp(pending.at_ms / 1000, tz=UTC):%Y-%m-%d}"
    if not ledger.take_sms(pending.account_id, day, policy.sms_per_day, pending.at_ms):
        detail = f"the account's SMS cap of {policy.sms_per_day} a day (UTC) is reached"
        raise SmsCapReachedError(replace(pending, outcome=Outcome.SKIPPED, detail=detail))
    sent = _attempt(pending, lambda: texter.send(phone, rendered.sms), phone)
    if sent.outcome is not Outcome.SENT:
        ledger.give_back_sms(pending.account_id, day)
    if sent.outcome is Outcome.UNDELIVERABLE:
        return replace(sent, detail=f"SNS refused the SMS: {sent.detail}")
    return sent


def _email_sent(
    pending: Delivery, address: str, rendered: Rendered, mailer: Mailer, ledger: DeliveryLedger
) -> Delivery:
    """The email to ``address``; none to an address SES reported bounced for good or complained about (marked by
    the bounce handler, D400: recorded undeliverable, ``Reason.BOUNCED``). A required alert's (D180) goes only to
    an address SES does not suppress: SES takes an email to a suppressed address and drops it (a hard bounce after
    the call), so the send's answer would say ``sent`` for an email that reached nobody; such an email is recorded
    undeliverable (``Reason.SUPPRESSED``) and its SMS goes (D215, D381). A check that cannot answer now (the mark,
    the suppression list) does not hold the email back: sent, the record says so."""
    unchecked = ""
    try:
        marked = ledger.email_mark(pending.account_id, mark_ref(pending.account_id, address))  # casefolded: as marked
    except MarkUnreadError as exc:  # holds no alert back, like the suppression check: sent, the record says so
        marked, unchecked = None, pseudonymised_in(pending.account_id, f"; the bounce mark not checked: {exc}", address)
    if marked is not None:  # until the operator clears it, with SES's own entry (D409 amended, D423)
        bounced = pending.because(Reason.BOUNCED, Outcome.UNDELIVERABLE)
        return replace(bounced, detail=f"{bounced.detail} ({marked})")
    if pending.kind in REQUIRED_ALERT_KINDS:
        try:
            why = mailer.suppressed(address)
        except SendFailedError as exc:
            not_listed = f"; the suppression list not checked: {exc}"
            unchecked += pseudonymised_in(pending.account_id, not_listed, address)
        else:
            if why is not None:
                suppressed = pending.because(Reason.SUPPRESSED, Outcome.UNDELIVERABLE)
                return replace(suppressed, detail=f"{suppressed.detail} ({why})")
    tag = delivery_tag(pending.period, pending.kind, pending.key)  # its bounce finds this record (D408)
    send = lambda: mailer.send(address, *_email(rendered), account_id=pending.account_id, delivery=tag)  # noqa: E731
    sent = _attempt(pending, send, address)
    if sent.outcome is Outcome.SENT:
        sent = replace(sent, message_id=sent.detail)
    if unchecked and sent.outcome is Outcome.SENT:  # sent without knowing: the record says so
        return replace(sent, detail=f"{sent.detail}{unchecked}")
    return sent


def _email(rendered: Rendered) -> tuple[str, str, str]:
    return rendered.subject, rendered.html, rendered.text


def _to(pending: Delivery, contact: str) -> Delivery:
    """The delivery to ``contact`` (an address or number), which its record names only by its pseudonym (D80's, the
    same value of the same account always the same; D203): the alerts table keeps its records 400 days,
    and an erasure (which clears the profile) must leave no contact detail there. An operator checks whether a record
    went to the account's current address by comparing ``pseudonym(account, address)``."""
    return replace(pending, recipient=pseudonym(pending.account_id, contact))


def _attempt(pending: Delivery, send: Callable[[], str], contact: str) -> Delivery:
    try:
        message_id = send()
    except SendRefusedError as exc:
        return replace(
            pending, outcome=Outcome.UNDELIVERABLE, detail=pseudonymised_in(pending.account_id, str(exc), contact)
        )
    except SendingPausedError as exc:  # SES's sending paused for the account: still retried, known why (D399)
        detail = pseudonymised_in(pending.account_id, str(exc), contact)
        return replace(pending, outcome=Outcome.RETRY, detail=detail, reason=Reason.PAUSED)
    except SendFailedError as exc:
        return replace(pending, outcome=Outcome.RETRY, detail=pseudonymised_in(pending.account_id, str(exc), contact))
    return replace(pending, outcome=Outcome.SENT, detail=message_id)


# --- events: thresholds, budgets, the hard limit ------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class AlertPorts:
    directory: AccountDirectory
    ledger: DeliveryLedger
    mailer: Mailer
    texter: Texter
    spend: SpendRecorder  # the entitlement check's spend item, kept from every threshold event
    entitlements: EntitlementSource
    sessions: OpenSessions
    rooms: RoomControl
    enforcement: EnforcementLedger
    scheduler: RemovalScheduler
    month: MonthToDateSource  # the month's quantities per meter, which the forecast extrapolates (D148)
    operator: OperatorPorts | None = None  # operator alerts and the event-driven abuse signals
    rechecks: ForecastRechecks | None = None  # the forecast's re-check at its base (D366); none: not planned

    @property
    def enforcing(self) -> EnforcementPorts:
        """The ports the hard limit's enforcement steps act through."""
        return EnforcementPorts(self.sessions, self.rooms, self.enforcement, self.scheduler, self.entitlements)


@dataclass(frozen=True, slots=True)
class AlertsPolicy:
    delivery: DeliveryPolicy
    enforcement: EnforcementPolicy = field(default_factory=EnforcementPolicy)
    weekday_weights: tuple[Decimal, ...] = DEFAULT_WEEKDAY_WEIGHTS
    operator: OperatorPolicy | None = None
    catalog: Catalog = field(default_factory=default_catalog)  # the month's price book (the forecast rates with it)


@dataclass(frozen=True, slots=True)
class EventOutcome:
    alerts: tuple[AlertOutcome, ...] = ()
    enforcement: tuple[EnforcementRecord, ...] = ()
    operator: tuple[Announced, ...] = ()  # operator alerts and abuse flags


class EventIncompleteError(Exception):
    """Something failed for now (a channel, a RoomService action); what is done is recorded. Deliver again."""

    def __init__(self, outcome: EventOutcome, causes: list[Exception]) -> None:
        super().__init__("; ".join(str(cause) for cause in causes))
        self.outcome = outcome
        # the enforcement failed only because another delivery held the account's turn: back in seconds (D209)
        self.turn_held = any(isinstance(cause, EnforcementIncompleteError) and cause.turn_held for cause in causes)


def handle_event(
    detail_type: str,
    detail: Mapping[str, Any],
    ports: AlertPorts,
    policy: AlertsPolicy,
    now_ms: int,
    last_attempt: bool = False,
) -> EventOutcome:
    """One event of the alerts queue: a threshold event (keep the spend item, enforce a reached hard limit, deliver
    the alert and a forecast), an invoicing event (deliver its alert; a failed payment also feeds the operator
    checks), an operator event, the delayed removal step of an enforcement or the forecast's re-check (D366).
    ``last_attempt``: the queue's last delivery of the event (``deliver_alert``)."""
    if detail_type == ENFORCEMENT_STEP:
        account, period, limit = _step(detail)
        return EventOutcome(
            enforcement=tuple(remove_account(account, period, limit, ports.enforcing, policy.enforcement, now_ms))
        )
    if detail_type == FORECAST_DUE:
        return _forecast_due(ForecastRecheck.from_detail(detail), ports, policy, now_ms, last_attempt)
    if detail_type == HardLimitStillReachedV1.DETAIL_TYPE:
        return _still_reached(HardLimitStillReachedV1.model_validate(detail), ports, policy, now_ms)
    if detail_type in OPERATOR_EVENTS:
        return _operator_event(detail_type, detail, ports, policy, now_ms, last_attempt)
    alert = alert_from_event(detail_type, detail)
    replay = _replay(detail_type, detail)
    if detail_type != UsageThresholdCrossedV1.DETAIL_TYPE:  # an invoicing alert: deliver it, nothing else to do
        try:
            return EventOutcome(alerts=(_deliver(alert, ports, policy, now_ms, last_attempt, replay),))
        except DeliveryIncompleteError as exc:
            raise EventIncompleteError(EventOutcome(alerts=(exc.outcome,)), [exc]) from exc
    event = UsageThresholdCrossedV1.model_validate(detail)
    ports.spend.record(
        event.account_id,
        event.meter,
        Reading(event.period, Decimal(event.used), Decimal(event.limit), event.occurred_at),
    )
    alerts = [alert]
    causes: list[Exception] = []
    enforced: list[EnforcementRecord] = []
    grace = str(max(1, -(-policy.enforcement.grace_seconds // 60)))
    hard_words = hard_limit_enforced(grace)  # what a hard-limit alert says: calls stopping, unless nothing enforces it
    if event.meter in ("budget", "hard_limit"):
        profile, _ = ports.entitlements.read(event.account_id)
        if event.meter == "budget" and event.threshold_percent < 100 and profile is not None:
            forecast, not_forecast = _forecast_or_cause(event, profile, ports, policy, now_ms)
            alerts, causes = [*alerts, *forecast], [*causes, *not_forecast]  # raised after the delivery
        reached = hard_limit_reached(event.account_id, ports.entitlements, now_ms)
        if reached is None and event.meter == "hard_limit":  # a past month's bill, or the limit raised or removed since
            current = Period.containing(datetime.fromtimestamp(now_ms / 1000, tz=UTC)).key
            limit_now = profile.hard_limit_usd if profile is not None else None
            hard_words = hard_limit_not_enforced(
                event.period, current, event.limit, limit_now, profile_read=profile is not None
            )
        if reached is not None:
            if event.meter == "budget" and profile is not None and profile.hard_limit_usd is not None:
                alerts.append(_hard_limit_alert(event, profile.hard_limit_usd, profile.hard_limit_version))
            try:
                enforced = restrict_account(
                    event.account_id, event.period, reached, ports.enforcing, policy.enforcement, now_ms
                )
            except EnforcementIncompleteError as exc:  # RoomService, or the removal's scheduling (its retry record)
                enforced, causes = exc.records, [*causes, exc]
            except Exception as exc:  # storage failed: the alerts go all the same
                causes = [*causes, exc]  # (D183); the record is retried for the enforcement
    delivered: list[AlertOutcome] = []
    for found in alerts:
        each = replace(found, values={**found.values, **hard_words}) if found.kind == HARD else found
        try:
            delivered.append(_deliver(each, ports, policy, now_ms, last_attempt, replay))
        except DeliveryIncompleteError as exc:
            delivered.append(exc.outcome)
            causes.append(exc)
    outcome = EventOutcome(tuple(delivered), tuple(enforced))
    if causes:
        raise EventIncompleteError(outcome, causes)
    return outcome


def _still_reached(
    event: HardLimitStillReachedV1, ports: AlertPorts, policy: AlertsPolicy, now_ms: int
) -> EventOutcome:
    """The sweeper's run found the hard limit ``event.scope`` still reached with calls going on (D71 amended): whoever
    joined after its enforcement is enforced too, by the same ``restrict_account`` as the crossing (D361): before
    the limit's removal step has run, newcomers are narrowed and that step removes them; after it ran, they are
    removed at once (the grace is over). Claims skip whoever was narrowed or removed before. Enforcement only: the
    crossing's alert went once. A limit no longer reached, another limit in force (it has its own crossing) or
    another month: nothing."""
    reached = hard_limit_reached(event.account_id, ports.entitlements, now_ms)
    current = Period.containing(datetime.fromtimestamp(now_ms / 1000, tz=UTC)).key
    if reached is None or (reached, current) != (event.scope, event.period):
        return EventOutcome()
    try:
        enforced = restrict_account(
            event.account_id, event.period, reached, ports.enforcing, policy.enforcement, now_ms
        )
    except EnforcementIncompleteError as exc:
        raise EventIncompleteError(EventOutcome(enforcement=tuple(exc.records)), [exc]) from exc
    return EventOutcome(enforcement=tuple(enforced))


def _operator_event(
    detail_type: str,
    detail: Mapping[str, Any],
    ports: AlertPorts,
    policy: AlertsPolicy,
    now_ms: int,
    last_attempt: bool,
) -> EventOutcome:
    """The operator checks of an event and, for a failed payment, the account's own alert besides them."""
    if ports.operator is None or policy.operator is None:
        raise AlertError(f"operator checks are not configured for {detail_type!r}")
    customer = alert_from_event(detail_type, detail) if detail_type in CUSTOMER_AND_OPERATOR else None
    failures: list[Exception] = []
    try:
        announced = handle_operator_event(detail_type, detail, ports.operator, policy.operator, now_ms)
    except OperatorChecksIncompleteError as exc:
        announced, failures = exc.done, [exc]
    except OperatorAlertFailedError as exc:
        announced, failures = [], [exc]
    customer_outcome: tuple[AlertOutcome, ...] = ()
    if customer is not None:  # the account's own alert, besides the operator checks (each claimed on its own)
        try:
            customer_outcome = (_deliver(customer, ports, policy, now_ms, last_attempt, _replay(detail_type, detail)),)
        except DeliveryIncompleteError as exc:
            customer_outcome, failures = (exc.outcome,), [*failures, exc]
    outcome = EventOutcome(alerts=customer_outcome, operator=tuple(announced))
    if failures:
        raise EventIncompleteError(outcome, failures)
    return outcome


def _deliver(
    alert: Alert, ports: AlertPorts, policy: AlertsPolicy, now_ms: int, last_attempt: bool, replay: str = ""
) -> AlertOutcome:
    """``replay``: the event (``_replay``), kept on a required alert's email record (D408)."""
    if replay and alert.kind in REQUIRED_ALERT_KINDS:
        alert = replace(alert, replay=replay)
    return deliver_alert(
        alert, ports.directory, ports.ledger, ports.mailer, ports.texter, policy.delivery, now_ms, last_attempt
    )


def _replay(detail_type: str, detail: Mapping[str, Any]) -> str:
    """The event as the alerts queue carries it (what the handler reads of EventBridge's envelope)."""
    event = {"detail-type": detail_type, "detail": dict(detail)}
    return json.dumps(event, sort_keys=True, separators=(",", ":"), default=str)  # a Decimal built in code: as text


def _step(detail: Mapping[str, Any]) -> tuple[str, str, str]:
    """(account, period, hard limit) of a removal step; the limit is empty in a step scheduled before it was kept."""
    account, period, limit = detail.get("account_id"), detail.get("period"), detail.get("limit", "")
    if (
        detail.get("step") != "remove"
        or not isinstance(account, str)
        or not isinstance(period, str)
        or not isinstance(limit, str)
    ):
        raise AlertError("an enforcement step names the account, the period, step 'remove' and the hard limit")
    return account, period, limit


def _hard_limit_alert(event: UsageThresholdCrossedV1, hard_limit: Decimal, version: int) -> Alert:
    """The hard-limit alert when a budget event reached it (same key as rating's own hard_limit event - scoped by the
    hard limit in force and its setting's version - so it is sent once)."""
    hard_event = event.model_copy(
        update={
            "meter": "hard_limit",
            "threshold_percent": 100,
            "limit": str(hard_limit),
            "scope": limit_scope(hard_limit, version),
        }
    )
    return alert_from_event(UsageThresholdCrossedV1.DETAIL_TYPE, hard_event.model_dump())


def _forecast_or_cause(
    event: UsageThresholdCrossedV1, profile: AccountProfile, ports: AlertPorts, policy: AlertsPolicy, now_ms: int
) -> tuple[list[Alert], list[Exception]]:
    """``_forecast``; the month's usage not read: no alert and the cause (the rest goes on, the event comes back)."""
    try:
        return _forecast(event, profile, ports, policy, now_ms)
    except Exception as exc:
        return [], [exc]


def _forecast(
    event: UsageThresholdCrossedV1, profile: AccountProfile, ports: AlertPorts, policy: AlertsPolicy, now_ms: int
) -> tuple[list[Alert], list[Exception]]:
    """ "At this rate you will pass your limit around <date>": the hard limit if set, else the budget; once a month.
    The month's quantities per meter (rating's counters and the open sessions, as read now) are extrapolated from
    now, the handler's clock (an event handled late or redelivered is not extrapolated from its own time with
    counters read since), and rated (``bill_reached_on``, as the account API, D148): usage of $0 while an allowance
    lasts still grows; the "$X so far" beside the date is that month's bill as read (the event's ``used`` is the
    bill at the crossing, older when the event is handled late). Nothing once now is past the event's month, nor
    once this month's forecast is decided on every channel (checked before the month is read: a failed read then
    sends nothing back to the queue). Before the base has elapsed (the day from the use spread over the base, or
    none) it plans the month's one re-check at the base's moment (``ports.rechecks``, D366: ``_forecast_due``).
    Returns the forecast alert (if a day) and the re-check row's failure, if any: the alert goes all the same and
    the failure comes back after it (D366 amended (fb4)); the same event delivered again, its forecast decided by
    itself, plans the row again (the ledger's claims: no second forecast), with the day read then."""
    limit, name = _limit_in_force(profile)
    now = datetime.fromtimestamp(now_ms / 1000, UTC)
    if limit is None or Period.containing(now).key != event.period:
        return [], []
    base = base_reached_at(now, policy.weekday_weights, signed_up_at(profile))
    early = ports.rechecks is not None and base is not None and now < base  # the floor, or no day: asked again then
    decided = _forecast_decided(ports.ledger, event)
    if decided and not (early and _decided_by(ports.ledger, event.account_id, event.period, event.event_id)):
        return [], []
    book = policy.catalog.for_period(Period.parse(event.period))
    mtd = month_to_date(ports.month, event.account_id, event.period, now_ms, book, profile=profile)
    day = bill_reached_on(mtd.rated, book, limit, now, policy.weekday_weights, signed_up_at(profile))
    not_planned: list[Exception] = []
    if ports.rechecks is not None and base is not None and early:
        due = ForecastRecheck(
            event.account_id,
            event.period,
            int(base.timestamp()) * 1000,
            name,
            str(limit),
            day.isoformat() if day else "",
        )
        try:
            ports.rechecks.plan(due, now_ms)
        except Exception as exc:  # throttled, a missing grant: the forecast is not withheld (D366 amended (fb4))
            not_planned.append(exc)
    if day is None or decided:
        return [], not_planned
    alert = _forecast_alert(
        event.account_id, event.period, FORECAST_KEY, mtd.rated.total, limit, name, day, event.event_id
    )
    return [alert], not_planned


def _limit_in_force(profile: AccountProfile) -> tuple[Decimal | None, str]:
    """The limit the forecast is of: the hard limit if set, else the budget."""
    if profile.hard_limit_usd is not None:
        return profile.hard_limit_usd, "hard limit"
    return profile.budget_usd, "budget"


def _forecast_alert(
    account_id: str, period: str, key: str, used: Decimal, limit: Decimal, name: str, day: date, event_id: str
) -> Alert:
    return Alert(
        kind=FORECAST,
        account_id=account_id,
        period=period,
        key=key,
        severity=Severity.MEDIUM,
        values={
            "period_label": Period.parse(period).start.strftime("%B %Y"),
            "used": money_text(str(used)),  # the bill forecast from, read now (not the crossing's)
            "limit": money_text(str(limit)),
            "limit_name": name,
            "date_label": f"{day:%A} {day.day} {day:%B}",
        },
        event_id=event_id,
    )


def _forecast_due(
    recheck: ForecastRecheck, ports: AlertPorts, policy: AlertsPolicy, now_ms: int, last_attempt: bool
) -> EventOutcome:
    """The forecast's re-check (D366), queued by the operator checks once the base has elapsed: the month read now
    and forecast at its own run rate (no floor). Nothing when now is past the month, when the limit in force is not
    the one re-checked (changed since: its thresholds re-arm), or when the bill already reached it (its alert said
    so). Else, when this month's forecast was not decided on every channel, the forecast on its key; when it was,
    and the day now is earlier than the one it said, one corrected forecast (``FORECAST_UPDATE_KEY``); a later or
    the same day: nothing (the day said errs early; the 100 % alert comes at the crossing)."""
    profile, _ = ports.entitlements.read(recheck.account_id)
    now = datetime.fromtimestamp(now_ms / 1000, UTC)
    if profile is None or Period.containing(now).key != recheck.period:
        return EventOutcome()
    limit, name = _limit_in_force(profile)
    if limit is None or (name, str(limit)) != (recheck.limit_name, recheck.limit):
        return EventOutcome()
    event_id = f"forecast-recheck:{recheck.account_id}:{recheck.period}"
    decided = _decided(ports.ledger, recheck.account_id, recheck.period, FORECAST_KEY)
    if decided and (
        not recheck.forecast_day
        or _decided(ports.ledger, recheck.account_id, recheck.period, FORECAST_UPDATE_KEY)
        or _decided_by(ports.ledger, recheck.account_id, recheck.period, event_id)
    ):  # the forecast said no day, was corrected already, or was sent by this re-check (its message again)
        return EventOutcome()
    book = policy.catalog.for_period(Period.parse(recheck.period))
    mtd = month_to_date(ports.month, recheck.account_id, recheck.period, now_ms, book, profile=profile)
    if mtd.rated.total >= limit:
        return EventOutcome()
    day = bill_reached_on(mtd.rated, book, limit, now, policy.weekday_weights, signed_up_at(profile))
    if day is None or (decided and day >= date.fromisoformat(recheck.forecast_day)):
        return EventOutcome()
    key = FORECAST_UPDATE_KEY if decided else FORECAST_KEY
    alert = _forecast_alert(recheck.account_id, recheck.period, key, mtd.rated.total, limit, name, day, event_id)
    try:
        return EventOutcome(alerts=(_deliver(alert, ports, policy, now_ms, last_attempt),))
    except DeliveryIncompleteError as exc:
        raise EventIncompleteError(EventOutcome(alerts=(exc.outcome,)), [exc]) from exc


def _decided_by(ledger: DeliveryLedger, account_id: str, period: str, event_id: str) -> bool:
    """The month's forecast alert (its key ``forecast``) was decided on a channel by ``event_id`` (the re-check:
    the day it sent is the rate's at the base, not the row's ``forecast_day``, which the customer never got)."""
    return any(
        (found.kind, found.key, found.event_id) == (FORECAST, FORECAST_KEY, event_id)
        and found.outcome is not Outcome.RETRY
        for found in ledger.deliveries(account_id, period)
    )


def _forecast_decided(ledger: DeliveryLedger, event: UsageThresholdCrossedV1) -> bool:
    """This month's forecast alert was decided (sent, skipped, refused) on every channel by an earlier event."""
    return _decided(ledger, event.account_id, event.period, FORECAST_KEY)


def _decided(ledger: DeliveryLedger, account_id: str, period: str, key: str) -> bool:
    """The month's forecast alert on ``key`` was decided (sent, skipped, refused) on every channel."""
    decided = {
        found.channel
        for found in ledger.deliveries(account_id, period)
        if (found.kind, found.key) == (FORECAST, key) and found.outcome is not Outcome.RETRY
    }
    return decided == set(Channel)
