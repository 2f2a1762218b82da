"""Operator alerts (the operator topic: email, and the alarms' other subscribers): usage no account could be found
for, abuse and fraud signals (with an optional hold of free accounts), and the daily negative-margin check.

Each alert is claimed in the alerts table before it is published (once per account or the service, kind and key);
a failure for now releases the claim and raises ``OperatorAlertFailedError`` (the queue or the schedule runs it
again, and only what was not announced is announced).
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field, replace
from datetime import UTC, datetime
from decimal import Decimal, InvalidOperation
from typing import Any, Final

from kilo_alerts import abuse
from kilo_alerts.abuse import AbuseThresholds, Signal
from kilo_alerts.model import AlertError, MarginSnapshot, OperatorAlert
from kilo_alerts.ports import (
    ClaimHeldError,
    MarginSnapshots,
    OperatorLedger,
    OperatorNotifier,
    PaymentSignals,
    SendFailedError,
    SendRefusedError,
)
from kilo_billing.accounts import (
    AccountDirectory,
    AccountProfile,
    ProfileChangedError,
    UnknownAccountError,
    update_profile,
)
from kilo_billing.catalog import PriceBook
from kilo_billing.contracts import (
    PaymentFailedV1,
    PaymentMethodAttachedV1,
    UnattributedAppUsageV1,
    UnattributedCryptoPaymentV1,
    UnattributedUsageV1,
)
from kilo_billing.invoicing import rate_counters
from kilo_billing.money import round_money
from kilo_billing.periods import Period
from kilo_billing.usage_signals import UsageSignals

OPERATOR: Final = ""  # the account id of alerts about the whole service
HOLD: Final = "abuse_hold"
# the signals that may hold a free account (failed payments are invoicing's: past due, not abuse)
HOLD_SIGNALS: Final = frozenset(
    {"concurrent_sessions", "connection_storm", "usage_spike", "shared_card", "shared_wallet"}
)
OPERATOR_EVENTS: Final = frozenset(
    {
        UnattributedUsageV1.DETAIL_TYPE,
        UnattributedAppUsageV1.DETAIL_TYPE,
        PaymentFailedV1.DETAIL_TYPE,
        PaymentMethodAttachedV1.DETAIL_TYPE,
        UnattributedCryptoPaymentV1.DETAIL_TYPE,
    }
)


class OperatorAlertFailedError(Exception):
    """An operator alert could not be published now (released; run again)."""


@dataclass(frozen=True, slots=True)
class OperatorPorts:
    ledger: OperatorLedger
    notifier: OperatorNotifier
    directory: AccountDirectory
    payments: PaymentSignals
    usage: UsageSignals | None = None  # the scheduled checks only
    snapshots: MarginSnapshots | None = None


@dataclass(frozen=True, slots=True)
class OperatorPolicy:
    book: PriceBook
    is_free: Callable[[str], bool]  # a tier without a fee (Personal)
    thresholds: AbuseThresholds = field(default_factory=AbuseThresholds)
    auto_hold: bool = False  # hold free accounts a signal of HOLD_SIGNALS flags
    # a pending claim older than this is taken over: the scheduled checks' default (they run up to 300 s); the alerts
    # queue's events use the settings' claim lease instead (between its 60 s timeout and 360 s visibility, D147)
    lease_ms: int = 15 * 60_000


@dataclass(frozen=True, slots=True)
class Announced:
    alert: OperatorAlert
    outcome: str  # sent, duplicate (announced before), undeliverable (refused for good)
    signal: Signal | None = None
    held: bool = False  # the account is on abuse hold (put by this flag, by its failed earlier attempt, or already)


def announce(
    alert: OperatorAlert,
    ports: OperatorPorts,
    policy: OperatorPolicy,
    now_ms: int,
    before: Callable[[], OperatorAlert] | None = None,
) -> str:
    """Claim, (``before``: an action that must happen once, before the message, which may change it), publish,
    record. ``OperatorAlertFailedError`` when the topic failed for now, or when another delivery holds the claim
    within its lease (still at it, or crashed between claiming and recording: run again, never taken as announced)."""
    try:
        if not ports.ledger.claim(alert.account_id, alert.kind, alert.key, now_ms, policy.lease_ms):
            return "duplicate"
    except ClaimHeldError as exc:
        raise OperatorAlertFailedError(f"{alert.kind} {alert.key}: {exc.held.value}") from exc
    if before is not None:
        try:
            alert = before()
        except ProfileChangedError as exc:  # the profile kept changing under it: nothing done, run again
            ports.ledger.release(alert.account_id, alert.kind, alert.key, str(exc)[:500], now_ms)
            raise OperatorAlertFailedError(f"{alert.kind} {alert.key}: {exc}") from exc
    try:
        message_id = ports.notifier.notify(alert.subject, alert.message)
    except SendRefusedError as exc:
        ports.ledger.record(alert.account_id, alert.kind, alert.key, "undeliverable", str(exc)[:500], now_ms)
        return "undeliverable"
    except SendFailedError as exc:
        ports.ledger.release(alert.account_id, alert.kind, alert.key, str(exc)[:500], now_ms)
        raise OperatorAlertFailedError(f"{alert.kind} {alert.key}: {exc}") from exc
    ports.ledger.record(alert.account_id, alert.kind, alert.key, "sent", message_id, now_ms)
    return "sent"


# --- abuse and fraud ----------------------------------------------------------------------------------------------


def _signal_alert(signal: Signal, held: bool) -> OperatorAlert:
    action = (
        f"The account is on hold (status {HOLD}): the entitlement check refuses its calls until an operator sets "
        f"it active (kilo-billing account status --account {signal.account_id} --status active)."
        if held
        else "Nothing was changed: review the account (kilo-billing account show / status)."
    )
    return OperatorAlert(
        kind=f"abuse_{signal.kind}",
        key=signal.key,
        account_id=signal.account_id,
        subject=f"Kilo Billing: abuse signal {signal.kind} on account {signal.account_id}",
        message=(
            f"Abuse signal {signal.kind} on account {signal.account_id}.\n"
            f"Observed: {signal.observed}.\nThreshold: {signal.threshold}.\n{action}\n"
        ),
    )


def flag(signal: Signal, ports: OperatorPorts, policy: OperatorPolicy, now_ms: int) -> Announced:
    """Flag once per key: hold the account if the policy says so (a free account, active, a holding signal), then
    tell the operators (an account already on hold is reported held: a retried flag after its message failed).

    The hold is decided on the profile it is saved over (``update_profile``'s change, re-applied to what is stored
    after a racing save, D142): an account upgraded, suspended or made active by an operator meanwhile is judged as
    it is now, and left as it is when it no longer qualifies."""
    held = False

    def hold() -> OperatorAlert:
        nonlocal held
        if not (policy.auto_hold and signal.kind in HOLD_SIGNALS):
            return _signal_alert(signal, False)
        now = datetime.fromtimestamp(now_ms / 1000, tz=UTC)

        def change(found: AccountProfile) -> AccountProfile:
            nonlocal held
            free = policy.is_free(found.tier_at(now))
            # already on hold: this flag's earlier attempt held it and its message failed for now (or an operator
            # did): the message says so, never "Nothing was changed"
            held = free and found.status in ("active", HOLD)
            return replace(found, status=HOLD) if free and found.status == "active" else found

        try:
            # the status alone (save_status): the roles that hold may write a profile's status and version only
            update_profile(ports.directory, signal.account_id, change, save=ports.directory.save_status)
        except UnknownAccountError:
            held = False
        return _signal_alert(signal, held)

    alert = _signal_alert(signal, False)
    outcome = announce(alert, ports, policy, now_ms, before=hold)
    return Announced(_signal_alert(signal, held), outcome, signal, held)


def _flag_all(signals: Sequence[Signal], ports: OperatorPorts, policy: OperatorPolicy, now_ms: int) -> list[Announced]:
    done: list[Announced] = []
    failed: list[Exception] = []
    for signal in signals:
        try:
            done.append(flag(signal, ports, policy, now_ms))
        except OperatorAlertFailedError as exc:
            failed.append(exc)
    if failed:
        raise OperatorChecksIncompleteError(done, failed)
    return done


class OperatorChecksIncompleteError(OperatorAlertFailedError):
    def __init__(self, done: list[Announced], failed: list[Exception]) -> None:
        super().__init__("; ".join(str(exc) for exc in failed))
        self.done = done


def scan_abuse(ports: OperatorPorts, policy: OperatorPolicy, now_ms: int) -> list[Announced]:
    """The scheduled abuse scan: concurrent sessions per identity, connection storms and usage spikes of every
    registered account."""
    if ports.usage is None:
        raise AlertError("the abuse scan needs the usage reader")
    t, now = policy.thresholds, datetime.fromtimestamp(now_ms / 1000, tz=UTC)
    signals = abuse.concurrent_sessions(ports.usage.open_sessions(), t, now_ms)
    accounts = ports.usage.accounts()
    profiles = ports.directory.registered(accounts)
    periods = [Period.containing(now).key, *abuse.baseline_periods(now, t.baseline_months)]
    counters = ports.usage.counters((account, period) for account in profiles for period in periods)
    since = now_ms - t.storm_window_minutes * 60_000
    for account, profile in sorted(profiles.items()):
        storm = abuse.connection_storm(account, ports.usage.sessions_started(account, since), t, now_ms)
        spike = abuse.usage_spike(
            profile, {period: counters.get((account, period), {}) for period in periods}, policy.book, t, now
        )
        signals += [found for found in (storm, spike) if found is not None]
    return _flag_all(signals, ports, policy, now_ms)


def _at_ms(occurred_at: str) -> int:
    return int(datetime.fromisoformat(occurred_at).timestamp() * 1000)


def on_payment_failed(
    detail: Mapping[str, Any], ports: OperatorPorts, policy: OperatorPolicy, now_ms: int
) -> list[Announced]:
    event = PaymentFailedV1.model_validate(detail)
    at_ms = _at_ms(event.occurred_at)
    # one per payment attempt: an attempt's action-required alert after its failed one is the same failed payment
    attempt = event.event_id.removesuffix(":action_required")
    failures = ports.payments.record_failure(event.account_id, attempt, at_ms)
    # the window ends at this failure (a redelivered or late event is judged as of when it happened)
    signal = abuse.failed_payments(event.account_id, failures, policy.thresholds, at_ms)
    return _flag_all([signal] if signal is not None else [], ports, policy, now_ms)


def on_payment_method(
    detail: Mapping[str, Any], ports: OperatorPorts, policy: OperatorPolicy, now_ms: int
) -> list[Announced]:
    event = PaymentMethodAttachedV1.model_validate(detail)
    sharing = ports.payments.record_method(event.account_id, event.method, event.fingerprint, _at_ms(event.occurred_at))
    profiles = ports.directory.registered(sharing).values()
    now = datetime.fromtimestamp(now_ms / 1000, tz=UTC)
    signals = abuse.shared_fingerprint(
        event.method, event.fingerprint, profiles, policy.is_free, policy.thresholds, now
    )
    return _flag_all(signals, ports, policy, now_ms)


# --- unattributed usage -------------------------------------------------------------------------------------------


def on_unattributed(detail: Mapping[str, Any], ports: OperatorPorts, policy: OperatorPolicy, now_ms: int) -> Announced:
    """One operator alert per room and day (the participants after the first in a room are in the log and the
    ``UnattributedMinutes`` metric)."""
    event = UnattributedUsageV1.model_validate(detail)
    day = datetime.fromtimestamp(now_ms / 1000, tz=UTC).strftime("%Y-%m-%d")
    if event.unregistered_account:  # D276
        why = (
            f"the room or token metadata names account {event.unregistered_account!r}, which was not registered "
            f"for that period (not registered at all, or signed up after it: no invoice of it can carry these "
            f"minutes). If it is not registered, register it (its sessions rated from then on, and the room's next "
            f"rebuild, go to it) or fix the app's metadata."
        )
    else:
        why = "no billing account could be found. Fix the room or token metadata the AttributionRule reads."
    alert = OperatorAlert(
        kind="unattributed_usage",
        key=f"{day}:{event.room_sid}",
        subject=f"Kilo Billing: {event.minutes} unattributed minute(s) in room {event.room_sid}",
        message=(
            f"Rating found usage it could bill to no account (period {event.period}): {event.minutes} minute(s) of "
            f"participant {event.participant_sid} (identity {event.identity!r}) in room {event.room_sid}. The "
            f"minutes are kept under 'unattributed', not billed: {why}\n"
        ),
    )
    return Announced(alert, announce(alert, ports, policy, now_ms))


def on_unattributed_app_usage(
    detail: Mapping[str, Any], ports: OperatorPorts, policy: OperatorPolicy, now_ms: int
) -> Announced:
    """App-reported usage dated before the account's signup period (D291): one operator alert per account and
    day (the rest is in the unattributed bucket, which the revenue report lists)."""
    event = UnattributedAppUsageV1.model_validate(detail)
    day = datetime.fromtimestamp(now_ms / 1000, tz=UTC).strftime("%Y-%m-%d")
    unit = "message(s)" if event.meter == "messages" else f"byte(s) of {event.meter}"
    found = f"usage of account {event.account_id!r} dated in period {event.period}"
    text = (
        f"The usage API received {found}, before the account's signup period: {format(event.quantity, ',')} {unit}. "
        "No invoice of the account can carry it: it is kept under 'unattributed', not billed. Check the app's clock "
        "and which account it reports for, or the signup date the account was registered with.\n"
    )
    subject = f"Kilo Billing: unattributed app usage of account {event.account_id}"
    alert = OperatorAlert("unattributed_usage", f"{day}:app:{event.account_id}", subject, text)
    return Announced(alert, announce(alert, ports, policy, now_ms))


def on_unattributed_crypto(
    detail: Mapping[str, Any], ports: OperatorPorts, policy: OperatorPolicy, now_ms: int
) -> Announced:
    """A payment to a merchant address that matches no bill (crypto watching keeps it as unattributed): the
    operators attribute it or refund it - unless it is ``counted_in`` another payment (its amount counted there
    already): then neither, the bill that payment pays is where to move money. Once per chain payment (the event's
    id names it)."""
    event = UnattributedCryptoPaymentV1.model_validate(detail)
    try:
        amount = f"{format(Decimal(event.amount), ',')} {event.asset}"
    except InvalidOperation:
        amount = f"{event.amount} {event.asset}"  # as the watcher wrote it: the operators still need to hear
    if event.counted_in is not None:
        # its amount is in that payment's already (D91 amended (sp3)): refunding or assigning it counts it twice
        todo = (
            f"Its amount is already counted in payment {event.counted_in} (its transaction was stored as one "
            f"payment before it was split): do NOT refund it or assign it. To move this money, act on the bill "
            f"payment {event.counted_in} pays - or, if it pays no bill, assign or refund payment {event.counted_in}.\n"
        )
    else:
        todo = (
            "Find the account it belongs to (the sender, the amount, a quote that expired) and attribute it to "
            "that account's bill, or refund it to the sender.\n"
        )
    alert = OperatorAlert(
        kind="unattributed_crypto_payment",
        key=event.event_id,
        subject=f"Kilo Billing: unattributed crypto payment of {amount} on {event.chain}",
        message=(
            f"Crypto watching saw a payment that matches no bill: {amount} on {event.chain}, transaction "
            f"{event.tx_id}, from {event.sender}, at {event.occurred_at}. It is kept in the unattributed list. " + todo
        ),
    )
    return Announced(alert, announce(alert, ports, policy, now_ms))


def handle_operator_event(
    detail_type: str, detail: Mapping[str, Any], ports: OperatorPorts, policy: OperatorPolicy, now_ms: int
) -> list[Announced]:
    try:
        if detail_type == UnattributedUsageV1.DETAIL_TYPE:
            return [on_unattributed(detail, ports, policy, now_ms)]
        if detail_type == UnattributedAppUsageV1.DETAIL_TYPE:
            return [on_unattributed_app_usage(detail, ports, policy, now_ms)]
        if detail_type == PaymentFailedV1.DETAIL_TYPE:
            return on_payment_failed(detail, ports, policy, now_ms)
        if detail_type == PaymentMethodAttachedV1.DETAIL_TYPE:
            return on_payment_method(detail, ports, policy, now_ms)
        if detail_type == UnattributedCryptoPaymentV1.DETAIL_TYPE:
            return [on_unattributed_crypto(detail, ports, policy, now_ms)]
    except ValueError as exc:  # pydantic's ValidationError is one
        raise AlertError(f"not a {detail_type}: {str(exc)[:200]}") from exc
    raise AlertError(f"no operator check reads events of type {detail_type!r}")


# --- the daily margin ---------------------------------------------------------------------------------------------


def month_to_date(
    directory: AccountDirectory, usage: UsageSignals, book: PriceBook, period: Period, now: datetime
) -> tuple[Decimal, Decimal, int]:
    """(revenue recognised, LiveKit cost, accounts) of every registered account in ``period`` as of ``now``: each
    tier segment's fee pro rata over the part of the segment elapsed, plus the usage charges so far; the cost basis
    of the counted usage (closed sessions; a call still open counts when it ends)."""
    profiles = directory.registered(usage.accounts())
    counters = usage.counters((account, period.key) for account in profiles)
    revenue, cost = Decimal(0), Decimal(0)
    for account, profile in profiles.items():
        rated = rate_counters(period, profile, counters.get((account, period.key), {}), book)
        for fee, segment in zip(rated.fee_lines, rated.segments, strict=True):
            start, end = segment.segment.start, segment.segment.end
            elapsed = max(0.0, min(now.timestamp(), end.timestamp()) - start.timestamp())
            revenue += fee.amount * Decimal(int(elapsed)) / Decimal(int(end.timestamp() - start.timestamp()))
        revenue += rated.usage_total
        cost += rated.cost_basis
    return revenue, cost, len(profiles)


@dataclass(frozen=True, slots=True)
class MarginOutcome:
    snapshot: MarginSnapshot
    day_revenue: Decimal  # since the previous snapshot (else since the period start)
    day_cost: Decimal
    alert: Announced | None  # when the day's revenue was below its cost


def check_margin(ports: OperatorPorts, policy: OperatorPolicy, now_ms: int) -> MarginOutcome:
    """The daily check: today's snapshot minus the latest earlier one (the period it was in, as of now, when the
    month turned in between) is the day's revenue and cost; revenue below cost (to the cent) alerts once a day."""
    if ports.usage is None or ports.snapshots is None:
        raise AlertError("the margin check needs the usage reader and the snapshots")
    now = datetime.fromtimestamp(now_ms / 1000, tz=UTC)
    period = Period.containing(now)
    revenue, cost, accounts = month_to_date(ports.directory, ports.usage, policy.book, period, now)
    today = MarginSnapshot(now.strftime("%Y-%m-%d"), period.key, revenue, cost, accounts)
    previous = ports.snapshots.latest_before(today.day)
    day_revenue, day_cost = revenue, cost
    if previous is not None and previous.period == period.key:
        day_revenue, day_cost = revenue - previous.revenue, cost - previous.cost
    elif previous is not None:  # the month turned: the rest of the previous snapshot's period, as of now
        before = Period.parse(previous.period)
        closing_revenue, closing_cost, _ = month_to_date(ports.directory, ports.usage, policy.book, before, now)
        day_revenue += closing_revenue - previous.revenue
        day_cost += closing_cost - previous.cost
    alert = None
    if round_money(day_revenue) < round_money(day_cost):
        since = f"since {previous.day}" if previous is not None else f"since the start of {period.key}"
        negative = OperatorAlert(
            kind="negative_margin",
            key=today.day,
            subject=f"Kilo Billing: negative margin on {today.day}",
            message=(
                f"Revenue {since} ${round_money(day_revenue)} is below LiveKit's cost ${round_money(day_cost)} "
                f"(margin ${round_money(day_revenue) - round_money(day_cost)}; {accounts} accounts). Month to date "
                f"{period.key}: revenue ${round_money(revenue)}, LiveKit cost ${round_money(cost)}. "
                "Revenue counts each fee pro rata over the time elapsed plus usage charges; "
                "cost is the cost basis of rated usage.\n"
            ),
        )
        alert = Announced(negative, announce(negative, ports, policy, now_ms))
    ports.snapshots.save(today)
    return MarginOutcome(today, day_revenue, day_cost, alert)
