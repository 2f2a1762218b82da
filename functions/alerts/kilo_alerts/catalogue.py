"""The alert catalogue: every alert kind, the event that triggers it, its channels by default and its templates.

A new alert kind is a catalogue entry here plus its four templates in ``templates/<kind>/`` (``subject.txt``,
``body.txt``, ``body.html``, ``sms.txt``); an event type not seen before also needs its reader in ``READERS`` (event
detail -> ``Alert``) and its ``detail-type`` in the template's alerts rule. docs/alerts.md lists the catalogue for
people (a test holds the two in step).
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass, replace
from datetime import UTC, datetime
from decimal import Decimal, InvalidOperation
from fractions import Fraction
from typing import Any, Final, Protocol, TypeVar
from urllib.parse import quote

from pydantic import ValidationError

from kilo_alerts.model import Alert, AlertError, Channel, Severity
from kilo_billing.contracts import (
    CryptoBillReopenedV1,
    CryptoBillSettledV1,
    CryptoPaymentSeenV1,
    CryptoQuoteExpiringV1,
    DisputeOpenedV1,
    InvoiceIssuedV1,
    PaymentFailedV1,
    RefundFailedV1,
    UsageThresholdCrossedV1,
)
from kilo_billing.money import exact_decimal, round_money
from kilo_billing.periods import Period

SEVERITY_ORDER: Final = (Severity.LOW, Severity.MEDIUM, Severity.HIGH)


@dataclass(frozen=True, slots=True)
class AlertSpec:
    kind: str
    detail_type: str  # the bus event it comes from
    trigger: str  # when it is sent, for people (docs/alerts.md)
    sms_from: Severity  # by default SMS goes out for this severity and above; email always

    def default_channels(self, severity: Severity) -> tuple[Channel, ...]:
        if SEVERITY_ORDER.index(severity) >= SEVERITY_ORDER.index(self.sms_from):
            return (Channel.EMAIL, Channel.SMS)
        return (Channel.EMAIL,)


CATALOGUE: Final[Mapping[str, AlertSpec]] = {
    spec.kind: spec
    for spec in (
        AlertSpec(
            "allowance_threshold",
            UsageThresholdCrossedV1.DETAIL_TYPE,
            "month-to-date use of an included allowance (video, audio, messages, data) reached 50 / 80 / 100 %",
            Severity.MEDIUM,
        ),
        AlertSpec(
            "budget_threshold",
            UsageThresholdCrossedV1.DETAIL_TYPE,
            "the month's bill so far reached one of the account's budget percentages (default 50 / 80 / 100 %)",
            Severity.MEDIUM,
        ),
        AlertSpec(
            "budget_forecast",
            UsageThresholdCrossedV1.DETAIL_TYPE,
            "a budget percentage below 100 % was reached and, at the month-to-date run rate (weekday-weighted), the "
            "bill passes the hard limit (else the budget) before the month ends; once per month, and once more from "
            "the re-check at the forecast's base when its day is earlier (D366)",
            Severity.MEDIUM,
        ),
        AlertSpec(
            "invoice_issued",
            InvoiceIssuedV1.DETAIL_TYPE,
            "invoicing issued the month's invoice (open, or paid at once); a crypto-billed one awaits payment in "
            "crypto; once per invoice",
            Severity.HIGH,
        ),
        AlertSpec(
            "payment_failed",
            PaymentFailedV1.DETAIL_TYPE,
            "the processor could not collect an invoice (card declined) or the payment needs the customer's action "
            "(e.g. 3-D Secure); once per failed attempt",
            Severity.HIGH,
        ),
        AlertSpec(
            "dispute_opened",
            DisputeOpenedV1.DETAIL_TYPE,
            "a payment of the account was disputed - a chargeback, an inquiry (nothing withdrawn yet), or an inquiry "
            "that became a chargeback, each worded as such (`kind`); once per dispute, once more when its inquiry "
            "escalates",
            Severity.HIGH,
        ),
        AlertSpec(
            "refund_failed",
            RefundFailedV1.DETAIL_TYPE,
            "a card refund to the account was made and then failed at the card's bank (card closed, expired ...): "
            "the money did not reach the customer; once per refund",
            Severity.HIGH,
        ),
        AlertSpec(
            "crypto_payment_seen",
            CryptoPaymentSeenV1.DETAIL_TYPE,
            "chain payments toward the account's crypto bill were seen on chain (included, not yet final); once per "
            "bill per watcher batch, naming every transfer it saw",
            Severity.HIGH,
        ),
        AlertSpec(
            "crypto_bill_settled",
            CryptoBillSettledV1.DETAIL_TYPE,
            "the account's crypto bill is paid: its payments are final and cover the bill (inside tolerance); once "
            "per bill",
            Severity.HIGH,
        ),
        AlertSpec(
            "crypto_bill_reopened",
            CryptoBillReopenedV1.DETAIL_TYPE,
            "a payment toward the account's crypto bill is stuck (its block final long since, neither its finality "
            "nor its loss provable) and no longer covers the bill: the bill is open again and asks the rest, or the "
            "whole total when that payment was all it had; once per reopen (D434)",
            Severity.MEDIUM,
        ),
        AlertSpec(
            "crypto_quote_expiring",
            CryptoQuoteExpiringV1.DETAIL_TYPE,
            "a crypto quote the customer asked for expires soon and no payment has been seen for it; once per quote",
            Severity.MEDIUM,
        ),
        AlertSpec(
            "budget_hard_limit",
            UsageThresholdCrossedV1.DETAIL_TYPE,
            "the month's bill so far reached the account's hard limit (`meter` hard_limit, or a budget event at or "
            "above it): calls go audio-only, then end after the grace period",
            Severity.HIGH,
        ),
    )
}

METER_LABELS: Final = {
    "video": "video minutes",
    "audio": "audio minutes",
    "messages": "messages",
    "data_transfer": "GB of data transfer",
}


def severity_of(percent: int) -> Severity:
    if percent >= 100:
        return Severity.HIGH
    if percent >= 80:
        return Severity.MEDIUM
    return Severity.LOW


def quantity_text(value: str) -> str:
    """A quantity for people: thousands separated, as precise as given (``48000`` -> ``48,000``)."""
    return format(_decimal(value), ",")


def money_text(value: str) -> str:
    """A USD amount for people, rounded by the one rounding rule (``80`` -> ``$80.00``)."""
    return f"${format(round_money(_decimal(value)), ',')}"


def _decimal(value: str) -> Decimal:
    try:
        number = Decimal(value)
    except InvalidOperation as exc:
        raise AlertError(f"not a decimal number: {value!r}") from exc
    if not number.is_finite():
        raise AlertError(f"not a finite number: {value!r}")
    return number


def _threshold(detail: Mapping[str, Any]) -> Alert:
    event = _parse(UsageThresholdCrossedV1, detail)
    percent = event.threshold_percent
    month = Period.parse(event.period).start.strftime("%B %Y")
    values = {"percent": str(percent), "period_label": month, "period": event.period}
    if event.meter == "hard_limit":
        kind = "budget_hard_limit"
        values |= {"used": money_text(event.used), "limit": money_text(event.limit)}
        reached = ("", "")
    elif event.meter == "budget":
        kind = "budget_threshold"
        values |= {"used": money_text(event.used), "limit": money_text(event.limit)}
        reached = ("You have reached your monthly budget.", " Budget reached.")
    else:
        kind = "allowance_threshold"
        values |= {
            "meter_label": METER_LABELS[event.meter],
            "used": quantity_text(event.used),
            "limit": quantity_text(event.limit),
        }
        reached = ("Further use this month is billed as overage at your plan's rates.", " Overage applies now.")
    consequence, sms_consequence = reached if percent >= 100 else ("", "")
    severity = Severity.HIGH if event.meter == "hard_limit" else severity_of(percent)
    values |= {"consequence": consequence, "sms_consequence": sms_consequence}
    # the key is scoped by the limit or tier segment measured against: a raised limit alerts again
    return _alert(kind, event, event.period, event.key, severity, values)


def hard_limit_enforced(grace_minutes: str) -> dict[str, str]:
    """What the hard-limit alert says happens when its enforcement runs (``hard_limit_reached`` answered a limit):
    calls go audio-only, then end after the grace period; new calls are refused."""
    return _hard_words(
        "is reached: calls are stopping",
        "reached",
        f"Calls in progress can now send audio only and end in {grace_minutes} minute(s); new calls are refused "
        "until the limit is raised or the month ends.",
        f"Calls go audio-only and end in {grace_minutes} min.",
    ) | {"grace_minutes": grace_minutes}


def hard_limit_not_enforced(
    period: str, current_period: str, limit: str, limit_now: Decimal | None, *, profile_read: bool = True
) -> dict[str, str]:
    """What the hard-limit alert of ``period``'s bill reaching ``limit`` says when nothing enforces it (rightly:
    ``hard_limit_reached`` is None): rating announced a past month (late usage, a call over the month end) - that
    month's bill is over and nothing of it is stopped - or the account's limit is no longer reached, raised to
    ``limit_now`` or removed (``None``) since. Never that calls are stopping (docs/decisions.md, D360). Anything
    else - the profile unread (``profile_read`` False), an event of a month after the clock's (skew at a month end:
    whether that month's calls are stopped is decided against the limit in force when it begins - raised above the
    bill or removed since, they are not; checked first) - says it was reached and no more: neither that calls go on
    nor that they stop."""
    went_on = "so nothing is stopped: your calls go on."
    if period < current_period:
        return _hard_words("was reached", "was reached", f"That month is over, {went_on}", "Month over: calls go on.")
    if not profile_read or (period > current_period and limit_now is None):
        return _hard_words(
            "was reached", "was reached", "Check your hard limit in your account settings.", "Check your limit."
        )
    if period > current_period:  # not enforced yet: stopped or not by the limit in force then - the one now is named
        now = money_text(str(limit_now))
        return _hard_words("was reached", "was reached", f"Your hard limit is now {now}.", f"Limit now {now}.")
    if limit_now is None:
        return _hard_words(
            "was reached; it has since been removed",
            "was reached",
            f"The limit has since been removed, {went_on}",
            "Limit removed: calls go on.",
        )
    now = money_text(str(limit_now))
    if limit_now > _decimal(limit):
        return _hard_words(
            f"was reached; it has since been raised to {now}",
            "was reached",
            f"You have since raised the limit to {now}, above the bill, {went_on}",
            f"Now {now}: calls go on.",
        )
    return _hard_words("was reached", "was reached", f"Your hard limit is now {now}.", f"Limit now {now}.")


def _hard_words(state: str, sms_state: str, what_now: str, sms_what_now: str) -> dict[str, str]:
    return {"state": state, "sms_state": sms_state, "what_now": what_now, "sms_what_now": sms_what_now}


_Contract = TypeVar(
    "_Contract",
    UsageThresholdCrossedV1,
    InvoiceIssuedV1,
    PaymentFailedV1,
    DisputeOpenedV1,
    RefundFailedV1,
    CryptoPaymentSeenV1,
    CryptoBillSettledV1,
    CryptoBillReopenedV1,
    CryptoQuoteExpiringV1,
)


def _parse(contract: type[_Contract], detail: Mapping[str, Any]) -> _Contract:
    try:
        return contract.model_validate(detail)
    except ValidationError as exc:
        raise AlertError(f"not a {contract.DETAIL_TYPE}: {exc.error_count()} problem(s)") from exc


def _month_of(occurred_at: str) -> str:
    """The period an occurrence's alert is kept under: the month it happened in (UTC)."""
    try:
        return Period.containing(datetime.fromisoformat(occurred_at)).key
    except ValueError as exc:
        raise AlertError(f"not an ISO 8601 time: {occurred_at!r}") from exc


class _Event(Protocol):
    """An event that alerts an account."""

    @property
    def event_id(self) -> str: ...
    @property
    def account_id(self) -> str: ...


class _Occurrence(_Event, Protocol):
    """An event about one occurrence (a failed payment, a dispute, a chain payment, a settled bill, a quote)."""

    @property
    def occurred_at(self) -> str: ...


def _alert(kind: str, event: _Event, period: str, key: str, severity: Severity, values: dict[str, str]) -> Alert:
    """The alert ``kind`` that ``event`` raises for its account, kept under ``period``; ``key`` names the occurrence
    within the period (each is sent once)."""
    return Alert(kind, event.account_id, period, key, severity, values, event_id=event.event_id)


def _occurrence_alert(kind: str, event: _Occurrence, key: str, severity: Severity, values: dict[str, str]) -> Alert:
    """An alert about one occurrence, kept under the period it happened in (the month, UTC)."""
    return _alert(kind, event, _month_of(event.occurred_at), key, severity, values)


def _card_note(status: str) -> str:
    """What a card invoice's email says about paying it: nothing is charged for a $0.00 invoice (paid at once) or one
    below the card minimum (carried onto the next invoice, D126)."""
    if status == "carried":
        return "It is below the smallest amount a card can be charged, so it is added to your next invoice."
    if status == "paid":
        return "Nothing is due."
    return "It is charged to the payment method on file; nothing to do if it is current."


def _invoice_issued(detail: Mapping[str, Any]) -> Alert:
    event = _parse(InvoiceIssuedV1, detail)
    crypto = event.method == "crypto"
    values = {
        "number": event.number,
        "period": event.period,
        "period_label": Period.parse(event.period).start.strftime("%B %Y"),
        "total": money_text(event.total),
        "payment_note": "It awaits payment in crypto: pay it on your dashboard's Pay with crypto page, linked below."
        if crypto
        else _card_note(event.status),
        # the SMS may be the only message: it names the dashboard page to see or pay the invoice on
        "sms_note": ", awaits payment in crypto. Pay it: Pay with crypto in your dashboard"
        if crypto
        else ". Details: Billing in your dashboard",
    }
    if event.hosted_url:
        values["invoice_url"] = event.hosted_url
    elif crypto:  # delivery links the dashboard's page (kilo_alerts.logic): this bill on "Pay with crypto"
        values["invoice_page"] = _pay_page(event.number)
    return _alert("invoice_issued", event, event.period, event.invoice_id, Severity.LOW, values)


def _pay_page(number: str) -> str:
    """The dashboard's "Pay with crypto" page with the bill of invoice ``number`` chosen (web/js/views/pay.js opens
    the open crypto bill whose number the ``invoice`` parameter names)."""
    return f"#/pay?invoice={quote(number, safe='')}"


def _payment_failed(detail: Mapping[str, Any]) -> Alert:
    event = _parse(PaymentFailedV1, detail)
    if event.reason == "action_required":
        problem = "needs your confirmation (for example 3-D Secure) before it can be collected"
        action = "Complete the payment"
        sms_problem = "needs your confirmation"
    else:
        problem = "could not be collected: the payment was declined"
        action = "Pay the invoice or update your card"
        sms_problem = "was declined"
    values = {
        "invoice_id": event.invoice_id,
        "total": money_text(event.total),
        "problem": problem,
        "action": action,
        "sms_problem": sms_problem,
    }
    if event.hosted_url:
        values["invoice_url"] = event.hosted_url
    # key payment-failed:<stripe invoice>:<attempt>[:action_required] (or <processor event id>): one per attempt
    return _occurrence_alert("payment_failed", event, event.event_id, Severity.HIGH, values)


def _dispute_words(kind: str, amount: str) -> dict[str, str]:
    """What the email's subject (``headline``), its body (``what``, after "A payment of <amount> for invoice ... of
    your account ...") and the SMS (``sms_what``, one segment for $9,999,999.99) say a dispute of ``kind`` is."""
    if kind == "inquiry":
        return {
            "headline": f"Your bank asked about a payment of {amount} to Kilo",
            "what": "was questioned by your bank or card issuer: an inquiry, the bank asked about the payment; no "
            "money has been withdrawn yet",
            "sms_what": f"your bank asked about a {amount} payment; no money withdrawn yet.",
        }
    if kind == "escalation":
        return {
            "headline": f"Your bank's inquiry about a payment of {amount} to Kilo became a chargeback",
            "what": "was disputed with your bank or card issuer: the bank's inquiry about it became a chargeback, and "
            "the bank takes the payment back while the dispute is decided",
            "sms_what": f"your bank's inquiry about a {amount} payment became a chargeback.",
        }
    return {
        "headline": f"A payment of {amount} to Kilo was disputed (a chargeback)",
        "what": "was disputed with your bank or card issuer: a chargeback, the bank takes the payment back while the "
        "dispute is decided",
        "sms_what": f"a {amount} payment was disputed with your bank (a chargeback).",
    }


def _dispute_opened(detail: Mapping[str, Any]) -> Alert:
    event = _parse(DisputeOpenedV1, detail)
    amount = money_text(event.amount)
    values = {"invoice_id": event.invoice_id, "amount": amount, **_dispute_words(event.kind, amount)}
    # the key follows ``kind`` (an old event without it: read from its id by the contract); an escalation keeps the
    # key wd7 gave it, so a ledger already holding it dedupes a redelivery (D359 amended (wd7, dk))
    key = f"{event.dispute_id}:escalated" if event.kind == "escalation" else event.dispute_id
    return _occurrence_alert("dispute_opened", event, key, Severity.MEDIUM, values)


# Stripe's ``failure_reason`` of a refund, for people (any other: the generic wording)
REFUND_FAILURES: Final = {
    "expired_or_canceled_card": "the card has expired or was canceled",
    "lost_or_stolen_card": "the card was reported lost or stolen",
    "declined": "the card's bank declined it",
    "charge_for_pending_refund_disputed": "the payment was disputed while the refund was on its way",
    "canceled": "the refund was canceled",  # a Refund canceled (status, no failure_reason): money not sent either
    "merchant_request": "the refund was canceled",
}


def _refund_failed(detail: Mapping[str, Any]) -> Alert:
    """A refund that did not reach the customer: says so and that the money was not returned to the card; promises
    nothing about what happens next (nothing does by itself, D340)."""
    event = _parse(RefundFailedV1, detail)
    values = {
        "invoice_id": event.invoice_id,
        "number": event.number,
        "amount": money_text(event.amount),
        "why": REFUND_FAILURES.get(event.reason, "the card's bank returned it"),
    }
    return _occurrence_alert("refund_failed", event, event.refund_id, Severity.HIGH, values)


QUOTE_EXPIRED: Final = "quote expired before delivery"  # a quote-expiring alert delivered at or after the expiry
CHAIN_LABELS: Final = {"ethereum": "Ethereum", "base": "Base", "solana": "Solana"}
# a transaction's page when the event names none (the watchers normally send ``explorer_url``)
EXPLORERS: Final = {
    "ethereum": "https://etherscan.io/tx/",
    "base": "https://basescan.org/tx/",
    "solana": "https://solscan.io/tx/",
}


def asset_text(amount: str, asset: str) -> str:
    """An amount in a crypto asset for people, as precise as given (``1234.5``, ``USDC`` -> ``1,234.5 USDC``)."""
    return f"{quantity_text(amount)} {asset}"


def _chain_label(chain: str) -> str:
    return CHAIN_LABELS.get(chain, chain.capitalize())


def _crypto_payment_seen(detail: Mapping[str, Any]) -> Alert:
    """One alert for the transfers one watcher batch saw toward the bill (D216): their amounts summed per asset
    (``30 USDC + 0.01 ETH``), their USD together, their transactions. An event from before ``transfers`` covers its
    one transfer."""
    event = _parse(CryptoPaymentSeenV1, detail)
    transfers = [(t.asset, t.amount, t.tx_id, t.explorer_url) for t in event.transfers] or [
        (event.asset, event.amount, event.tx_id, event.explorer_url)
    ]
    per_asset: dict[str, Fraction] = {}
    for asset, amount, _, _ in transfers:
        per_asset[asset] = per_asset.get(asset, Fraction(0)) + Fraction(_decimal(amount))
    tx_ids = list(dict.fromkeys(tx_id for _, _, tx_id, _ in transfers))
    values = {
        "invoice_id": event.invoice_id,
        "amount": " + ".join(asset_text(str(exact_decimal(total)), asset) for asset, total in per_asset.items()),
        "amount_usd": money_text(event.total_usd or event.amount_usd),
        "chain": _chain_label(event.chain),
        "tx_id": ", ".join(tx_ids),
        "transfers_note": f" in {len(transfers)} transfers" if len(transfers) > 1 else "",
        "transactions_label": "Transactions" if len(tx_ids) > 1 else "Transaction",
        "view_text": "view them" if len(tx_ids) > 1 else "view it",
    }
    if len(tx_ids) == 1:  # several: the dashboard's Pay with crypto page, which lists them (delivery's default link)
        given = next(url for _, _, _, url in transfers)
        explorer = given or (EXPLORERS[event.chain] + tx_ids[0] if event.chain in EXPLORERS else None)
        if explorer:
            values["tx_url"] = explorer
    # key: the event id (one payment's crypto-seen:<chain>:<tx id>:<index>, or its batch's): one alert per event
    return _occurrence_alert("crypto_payment_seen", event, event.event_id, Severity.LOW, values)


def _crypto_bill_settled(detail: Mapping[str, Any]) -> Alert:
    event = _parse(CryptoBillSettledV1, detail)
    notes = []
    if _decimal(event.credit_usd) > 0:
        notes.append(f"The {money_text(event.credit_usd)} paid over the bill is kept as credit on your account.")
    if _decimal(event.written_off_usd) > 0:
        notes.append(f"The {money_text(event.written_off_usd)} short of the bill is within our tolerance: written off.")
    values = {
        "invoice_id": event.invoice_id,
        "total": money_text(event.total),
        "settled_usd": money_text(event.settled_usd),
        "notes": " ".join(notes),
        "transactions": ", ".join(event.tx_ids) or "-",
    }
    return _occurrence_alert("crypto_bill_settled", event, event.invoice_id, Severity.LOW, values)


# what becomes of a stuck payment that lands after all (settlement.recompute, D387, D419): said in every reopen email.
# Only the stuck payment itself is credit by itself: a new payment sent after the bill is paid is not matched to it
# (an EVM one from a linked wallet is matched to unpaid bills only) - the operator's unattributed list (D435 amended)
STUCK_LANDS_LATER: Final = (
    "If a stuck payment lands after all (final on chain), it counts as any payment does: the bill is paid by the "
    "payments that are final first, and a stuck payment final after the bill is paid is kept as credit on your "
    "account (it first covers any shortfall we wrote off when the bill was paid) and applied to your next bill - it "
    "is never lost, and not sent back by itself: contact us if you want it back. If it lands before you pay again, "
    "the bill is paid: do not pay the new quote then - a payment sent after the bill is paid may not be matched to "
    "your account by itself; we hold it until we match it: contact us. If it never lands, nothing more happens."
)


# a reopen told for a payment dropped with its block or failed in its new one (D434 amended (hcw)): what it was, what
# the SMS says, the transaction's label and what becomes of it later - a dropped transaction re-mined counts again as
# any payment (``Settlement.record``), a failed one re-included and succeeding too (``_failed_moved``)
DROPPED_LANDS_LATER: Final = (
    "A dropped transaction may be mined again (your wallet may send it again): check your wallet before you pay. "
    "If it lands after all, it counts as any payment does: the bill is paid by the payments that are final first, "
    "and one final after the bill is paid is kept as credit on your account and applied to your next bill - it is "
    "never lost, and not sent back by itself: contact us if you want it back. If it lands before you pay again, the "
    "bill is paid: do not pay the new quote then - a payment sent after the bill is paid may not be matched to your "
    "account by itself; we hold it until we match it: contact us."
)
FAILED_LANDS_LATER: Final = (
    "A failed transaction moves no funds: only its network fee was spent. Pay the amount asked with a new quote; if "
    "the same transaction is ever included again and goes through, it counts as any payment does."
)
# Solana (D434 amended (hcw)): a transaction whose blockhash is more than 150 blocks old is refused by the network
EXPIRED_LANDS_LATER: Final = (
    "A Solana transaction cannot land once its blockhash is more than 150 blocks old: this one cannot land any more "
    "and moved no funds. Pay the amount asked with a new quote."
)
_LOST: Final[dict[str, tuple[str, str, str, str]]] = {
    "dropped": (
        "toward it was dropped: the block that held it was replaced (a chain reorganisation) and its transaction is "
        "in no block now",
        "dropped",
        "Dropped transaction",
        DROPPED_LANDS_LATER,
    ),
    "expired": (
        "toward it was dropped: the block that held it is not on the chain, and its transaction is in no block now",
        "dropped",
        "Dropped transaction",
        EXPIRED_LANDS_LATER,
    ),
    "failed": (
        "toward it failed: its transaction was reverted on chain and moved no funds",
        "failed",
        "Failed transaction",
        FAILED_LANDS_LATER,
    ),
}


def _crypto_bill_reopened(detail: Mapping[str, Any]) -> Alert:
    """The bill asks again (D419, D434): the amount a new quote asks (the event's, as the quote API asks it), the
    stuck payment's USD and transactions, and what happens if it lands later (``STUCK_LANDS_LATER``); for a payment
    dropped with its block or failed in its new one (``lost``, D434 amended (hcw)), that payment's USD and
    transaction, and what becomes of it."""
    event = _parse(CryptoBillReopenedV1, detail)
    whole = _decimal(event.amount_usd) == _decimal(event.total)
    values = _reopen_cause(event)
    values |= {
        "invoice_id": event.invoice_id,
        "total": money_text(event.total),
        "amount_usd": money_text(event.amount_usd),
        "asked": f"the whole {money_text(event.total)} again" if whole else f"the rest, {money_text(event.amount_usd)}",
        "sms_asked": f"all {money_text(event.total)} again" if whole else f"{money_text(event.amount_usd)} more",
    }
    if event.number:  # delivery links "Pay with crypto" with this bill chosen (without a number: the page alone)
        values["pay_page"] = _pay_page(event.number)
    # key: the event id (crypto-reopened:<invoice>:<payment>@<block>): one alert per reopen, a redelivery none more
    return _occurrence_alert("crypto_bill_reopened", event, event.event_id, Severity.MEDIUM, values)


def _reopen_cause(event: CryptoBillReopenedV1) -> dict[str, str]:
    """What moved the bill back, in the reopen alert's words: the payment dropped or failed (``lost``), else the
    stuck ones."""
    if event.lost is not None:
        said, sms, label, later = _LOST[event.lost]
        lost_usd = money_text(event.lost_usd or "0")
        # another line of the bill stuck too (``stuck_usd``): said after the lost payment, it no longer counts either
        stuck = (
            f". Also stuck: {money_text(event.stuck_usd)} of crypto payments toward it "
            f"({', '.join(event.stuck_tx_ids)}) - their blocks have long been final, yet the chain proves neither that "
            "they went through nor that they were dropped, so they no longer count either"
            if _decimal(event.stuck_usd) > 0
            else ""
        )
        return {
            "stuck_usd": money_text(event.stuck_usd),
            "stuck_text": f"Your crypto payment of {lost_usd} {said}. So it no longer counts toward the bill{stuck}",
            "sms_stuck": f"a {lost_usd} crypto payment {sms}",
            "transactions_label": label,
            "transactions": event.lost_tx_id or "-",
            "later_note": later,
        }
    several = len(event.stuck_tx_ids) > 1
    return {
        "stuck_usd": money_text(event.stuck_usd),
        # ``stuck_usd`` sums every stuck line of the bill: several transactions are "payments ... in all" (D434)
        "stuck_text": (
            f"Your crypto payments toward it, {money_text(event.stuck_usd)} in all, are stuck: their blocks have long "
            "been final, yet the chain proves neither that they went through nor that they were dropped. So they no "
            "longer count toward the bill"
            if several
            else f"Your crypto payment of {money_text(event.stuck_usd)} toward it is stuck: its block has long been "
            "final, yet the chain proves neither that it went through nor that it was dropped. So it no longer counts "
            "toward the bill"
        ),
        "sms_stuck": (
            f"crypto payments ({money_text(event.stuck_usd)}) are stuck"
            if several
            else f"a {money_text(event.stuck_usd)} crypto payment is stuck"
        ),
        "transactions_label": "Stuck transactions",
        "transactions": ", ".join(event.stuck_tx_ids) or "-",
        "later_note": STUCK_LANDS_LATER,
    }


def _crypto_quote_expiring(detail: Mapping[str, Any]) -> Alert:
    event = _parse(CryptoQuoteExpiringV1, detail)
    try:
        expires = datetime.fromisoformat(event.expires_at).astimezone(UTC)
    except ValueError as exc:
        raise AlertError(f"not an ISO 8601 time: {event.expires_at!r}") from exc
    values = {
        "invoice_id": event.invoice_id,
        "amount": asset_text(event.amount, event.asset),
        "chain": _chain_label(event.chain),
        "payment_uri": event.payment_uri,
        "expires_at": f"{expires:%H:%M} UTC on {expires.day} {expires:%B %Y}",
        "expires_time": f"{expires:%H:%M} UTC",
    }
    if event.number:  # delivery links "Pay with crypto" with this bill chosen (an event of before: the page alone)
        values["pay_page"] = _pay_page(event.number)
    alert = _occurrence_alert("crypto_quote_expiring", event, event.quote_id, Severity.MEDIUM, values)
    # delivered late (a failure for now: the queue's 6-minute visibility timeout) it would ask to pay an expired quote
    return replace(alert, expires_ms=int(expires.timestamp() * 1000), expired_detail=QUOTE_EXPIRED)


# detail-type -> reader of its detail
READERS: Final[Mapping[str, Callable[[Mapping[str, Any]], Alert]]] = {
    UsageThresholdCrossedV1.DETAIL_TYPE: _threshold,
    InvoiceIssuedV1.DETAIL_TYPE: _invoice_issued,
    PaymentFailedV1.DETAIL_TYPE: _payment_failed,
    DisputeOpenedV1.DETAIL_TYPE: _dispute_opened,
    RefundFailedV1.DETAIL_TYPE: _refund_failed,
    CryptoPaymentSeenV1.DETAIL_TYPE: _crypto_payment_seen,
    CryptoBillSettledV1.DETAIL_TYPE: _crypto_bill_settled,
    CryptoBillReopenedV1.DETAIL_TYPE: _crypto_bill_reopened,
    CryptoQuoteExpiringV1.DETAIL_TYPE: _crypto_quote_expiring,
}


def alert_from_event(detail_type: str, detail: Mapping[str, Any]) -> Alert:
    reader = READERS.get(detail_type)
    if reader is None:
        raise AlertError(f"no alert reads events of type {detail_type!r}")
    alert = reader(detail)
    if alert.kind not in CATALOGUE:
        raise AlertError(f"alert kind {alert.kind!r} is not in the catalogue")
    return alert
