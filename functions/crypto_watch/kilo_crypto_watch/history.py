"""An account's crypto history: every bill, quote and chain payment, with amounts in the asset and in USD, the rates
and their sources, statuses (a quote's as of now) and transaction links. Pure: the store's rows in, JSON-ready out."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from datetime import datetime
from decimal import Decimal
from typing import Any

from kilo_billing.money import decimal_str, money_str, optional_money_str
from kilo_crypto_watch.model import Bill, ChainConfig, Payment, Quote, QuoteStatus
from kilo_crypto_watch.settlement import asset_amount, explorer_url, holds, quote_status, shown_usd


def _bill(bill: Bill) -> dict[str, Any]:
    return {
        "invoice_id": bill.invoice_id,
        "number": bill.number,
        "period": bill.period,
        "total_usd": money_str(bill.total_usd),
        "status": bill.status.value,
        "flags": sorted(flag.value for flag in bill.flags),
        "settled_usd": money_str(bill.settled_usd),
        "written_off_usd": money_str(bill.written_off_usd),
        "credit_usd": money_str(bill.credit_usd),
        "paid_at": bill.paid_at.isoformat() if bill.paid_at else None,
    }


def _quote(quote: Quote, bills: Mapping[str, Bill], now: datetime) -> dict[str, Any]:
    bill = bills.get(quote.invoice_id)
    return quote_view(quote, quote_status(quote, bill.payments, now) if bill is not None else quote.status)


def quote_view(quote: Quote, status: QuoteStatus) -> dict[str, Any]:
    """A quote as the routes show it (history, and the quote just made)."""
    return {
        "quote_id": quote.quote_id,
        "invoice_id": quote.invoice_id,
        "chain": quote.chain,
        "asset": quote.asset,
        "amount": decimal_str(asset_amount(quote.atomic_amount, quote.asset)),
        "atomic_amount": str(quote.atomic_amount),
        "amount_usd": money_str(quote.amount_usd),
        "rate_usd": decimal_str(quote.rate.price),
        "rate_locked_at": quote.rate.locked_at.isoformat(),
        "rate_sources": [
            {"source": r.source, "price_usd": decimal_str(r.price), "updated_at": r.updated_at.isoformat()}
            for r in quote.rate.readings
        ],
        "pay_to": quote.pay_to,
        "payment_uri": quote.payment_uri,
        "reference": quote.reference,
        "memo": quote.memo,
        "created_at": quote.created_at.isoformat(),
        "expires_at": quote.expires_at.isoformat(),
        "monitor_until": quote.monitor_until.isoformat(),
        "status": status.value,
    }


def _payment(
    payment: Payment, chains: Mapping[str, ChainConfig], shown: Mapping[str, Decimal], stalled: frozenset[str]
) -> dict[str, Any]:
    transfer = payment.transfer
    usd = shown.get(payment.payment_id, payment.usd)
    return {
        "payment_id": payment.payment_id,
        "invoice_id": payment.invoice_id,
        "quote_id": payment.quote_id,
        "chain": transfer.chain,
        "asset": transfer.asset,
        "amount": decimal_str(asset_amount(transfer.atomic_amount, transfer.asset)),
        "amount_usd": optional_money_str(usd),
        "rate_usd": decimal_str(payment.rate) if payment.rate is not None else None,
        "status": payment.status.value,
        "late": payment.late,
        "manual_review": payment.review,
        "refund_owed": payment.refund_owed,
        "stalled": payment.payment_id in stalled,
        "matched_by": payment.matched_by,
        "tx_id": transfer.tx_id,
        "tx_url": explorer_url(chains.get(transfer.chain), transfer.tx_id),
        "sender": transfer.sender,
        "block_number": transfer.block_number,
        "seen_at": payment.seen_at.isoformat(),
    }


def account_history(
    bills: Sequence[Bill],
    quotes: Sequence[Quote],
    payments: Sequence[Payment],
    chains: Mapping[str, ChainConfig],
    now: datetime,
) -> dict[str, Any]:
    """Newest first. A payment moved to another id (its transaction re-mined at another log index, D155) is shown
    once, where it is now: the id it moved to (its current state) - the old id, kept ORPHANED and pointing at it,
    is not a payment of its own. The payments a bill counts show its counted sum split among them (``shown_usd``):
    they add up to it to the cent; the others show their own USD. A SEEN payment its watcher named stuck (``stalled``,
    shown) is not part of that sum: the bill asks the rest without it (D419, amended (cw2))."""
    by_invoice = {bill.invoice_id: bill for bill in bills}
    listed = [payment for payment in payments if payment.moved_to is None]
    # a bill's counted payments show its counted sum split among them, to the cent (D217)
    usd: dict[str, Decimal] = {}
    for bill in bills:
        usd.update(shown_usd((line.payment_id, line.usd) for line in bill.payments if holds(line)))
    stalled = frozenset(line.payment_id for bill in bills for line in bill.payments if line.stalled)
    return {
        "bills": [_bill(b) for b in sorted(bills, key=lambda b: b.issued_at, reverse=True)],
        "quotes": [_quote(q, by_invoice, now) for q in sorted(quotes, key=lambda q: q.created_at, reverse=True)],
        "payments": [_payment(p, chains, usd, stalled) for p in sorted(listed, key=lambda p: p.seen_at, reverse=True)],
    }
