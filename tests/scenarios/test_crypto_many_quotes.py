"""A bill holding more quotes than one DynamoDB transaction takes (100 items), on the crypto table (moto, from
template.yaml): a settlement step writes only the quote its payment changes, never every quote time has expired
(D285).

Hand-worked: a $100.00 bill and 101 USDC quotes of 100 USDC (100_000_000 units) made at T0 + 1 min, each expiring at
T0 + 31 min. At T0 + 40 min every quote is EXPIRED by time while stored ACTIVE. A 100 USDC payment in a block of
T0 + 10 min (inside expiry: on time) from the linked wallet matches the newest exact quote, ``q-100``.
"""

from __future__ import annotations

from dataclasses import replace
from datetime import timedelta
from decimal import Decimal

import pytest

from kilo_crypto_watch import logic
from kilo_crypto_watch.history import account_history
from kilo_crypto_watch.model import BillStatus, PaymentStatus, QuoteStatus
from kilo_crypto_watch.quotes import QuotePolicy, QuoteRefusedError
from kilo_crypto_watch.wallets import SignInPolicy
from tests.conftest import Stack
from tests.crypto_core_fakes import (
    CHAINS,
    STRANGER_WALLET,
    T0,
    Harness,
    bill,
    billed,
    quote,
    quote_statuses,
    transfer,
)

USDC_QUOTE = 100_000_000
QUOTES = 101


@pytest.fixture
def h(stack: Stack) -> Harness:
    quotes = [quote(f"q-{n:03d}", "USDC", USDC_QUOTE, "1") for n in range(QUOTES)]
    return billed(stack, quotes, T0 + timedelta(minutes=40))


def test_given_101_expired_quotes_when_a_payment_is_seen_then_final_then_the_bill_is_paid_and_one_quote_written(
    h: Harness,
) -> None:
    paid = transfer("0xaa", "USDC", USDC_QUOTE, T0 + timedelta(minutes=10))

    h.settlement.record_seen(paid)

    payment = h.store.payment(paid.payment_id)
    assert payment is not None
    assert (payment.invoice_id, payment.quote_id, payment.status) == ("inv-1", "q-100", PaymentStatus.SEEN)
    processing = h.store.bill("inv-1")
    assert processing is not None
    assert processing.status is BillStatus.PROCESSING

    h.settlement.finalized(paid.payment_id, "0xblock")

    paid_bill = h.store.bill("inv-1")
    assert paid_bill is not None
    assert paid_bill.status is BillStatus.PAID
    assert len(h.events("CryptoBillSettled.v1")) == 1
    statuses = quote_statuses(h)
    assert statuses["q-100"] is QuoteStatus.COMPLETED
    # time alone changed the others: not written, and the readers compute EXPIRED
    assert {statuses[f"q-{n:03d}"] for n in range(100)} == {QuoteStatus.ACTIVE}
    shown = account_history(*h.store.account_history("acct-1"), CHAINS, h.clock.now)["quotes"]
    assert {q["quote_id"]: q["status"] for q in shown}["q-000"] == "EXPIRED"
    assert {q["quote_id"]: q["status"] for q in shown}["q-100"] == "COMPLETED"


def test_given_101_expired_quotes_when_an_operator_assigns_an_unattributed_payment_then_the_bill_takes_it(
    h: Harness,
) -> None:
    stray = transfer("0xbb", "USDC", USDC_QUOTE, T0 + timedelta(minutes=10), sender=STRANGER_WALLET)
    h.settlement.record_seen(stray)
    kept = h.store.payment(stray.payment_id)
    assert kept is not None
    assert kept.invoice_id is None  # nothing ties a stranger's wallet to the bill

    assigned = h.settlement.assign(stray.payment_id, "acct-1", "inv-1")

    assert (assigned.invoice_id, assigned.quote_id) == ("inv-1", "q-100")
    after = h.store.bill("inv-1")
    assert after is not None
    assert after.status is BillStatus.PROCESSING
    assert quote_statuses(h)["q-100"] is QuoteStatus.DETECTED


def api(h: Harness) -> logic.ApiPorts:
    ids = iter(f"q-new-{n}" for n in range(10))
    return logic.ApiPorts(
        h.store,
        h.settlement,
        h.rates,
        CHAINS,
        lambda chain: None,  # type: ignore[arg-type,return-value]
        QuotePolicy(),
        SignInPolicy("x", "y"),
        new_id=lambda: next(ids),
    )


def test_given_an_active_quote_with_10_minutes_left_when_asked_again_then_it_comes_back_else_a_new_one(
    h: Harness,
) -> None:
    """Bill inv-2, no quote yet. At T0 + 40 min a USDC quote is made: it expires at T0 + 70 min. Asked again at
    T0 + 50 min (20 min left) the same quote comes back; at T0 + 61 min (9 min left, under 10) a new one is made."""
    assert h.store.create_bill(bill("inv-2"))
    h.rates.prices["USDC"] = Decimal(1)
    ports = api(h)

    first = logic.create_quote(ports, "acct-1", "inv-2", "ethereum", "USDC", h.clock.now)
    h.clock.now = T0 + timedelta(minutes=50)
    again = logic.create_quote(ports, "acct-1", "inv-2", "ethereum", "USDC", h.clock.now)
    h.clock.now = T0 + timedelta(minutes=61)
    fresh = logic.create_quote(ports, "acct-1", "inv-2", "ethereum", "USDC", h.clock.now)

    assert (first.quote_id, again.quote_id, fresh.quote_id) == ("q-new-0", "q-new-0", "q-new-1")
    assert sorted(q.quote_id for q in h.store.quotes("inv-2")) == ["q-new-0", "q-new-1"]


def test_given_a_bill_holding_50_monitored_quotes_when_another_is_asked_then_it_is_refused_naming_when(
    h: Harness,
) -> None:
    """inv-1 holds 101 quotes monitored until T0 + 1 min + 72 h (the helper's window: 2026-11-05T09:01Z); none is ACTIVE at
    T0 + 40 min, so an ETH quote would be a new one: refused (the most is 50)."""
    h.rates.prices["ETH"] = Decimal("2500.00")

    with pytest.raises(QuoteRefusedError, match=r"holds 101 quotes still monitored.*2026-11-05T09:01:00\+00:00"):
        logic.create_quote(api(h), "acct-1", "inv-1", "ethereum", "ETH", h.clock.now)

    assert len(h.store.quotes("inv-1")) == QUOTES


def test_given_a_paid_bill_and_no_price_when_a_quote_is_asked_then_it_is_refused_as_paid_not_unpriced(
    h: Harness,
) -> None:
    assert h.store.create_bill(replace(bill("inv-3"), status=BillStatus.PAID))
    assert "ETH" not in h.rates.prices  # the price source is down: locking a rate would refuse

    with pytest.raises(QuoteRefusedError, match="bill inv-3 is paid"):
        logic.create_quote(api(h), "acct-1", "inv-3", "ethereum", "ETH", h.clock.now)


def test_given_solana_references_then_each_is_queried_on_its_own_until_2_hours_after_its_quotes_expiry(
    h: Harness,
) -> None:
    """D290. Solana quotes made at T0 + 1 min expire at T0 + 31 min and are monitored until T0 + 72 h 1 min.
    At T0 + 2 h 30 min both references are watched (matched when a payment carries them) and both still queried
    on their own; at T0 + 2 h 32 min (past T0 + 31 min + 2 h) the older one is watched only, the one made at
    T0 + 1 h (expiring at T0 + 1 h 31 min) still queried."""
    old = quote("q-sol-1", "USDC", USDC_QUOTE, "1", chain="solana", reference="RefOld111")
    later = replace(
        quote("q-sol-2", "USDC", USDC_QUOTE, "1", chain="solana", reference="RefNew222"),
        created_at=T0 + timedelta(hours=1),
        expires_at=T0 + timedelta(hours=1, minutes=31),
    )
    h.store.add_quote(old)
    h.store.add_quote(later)

    h.clock.now = T0 + timedelta(hours=2, minutes=30)
    assert sorted(h.settlement.recent_references("solana")) == ["RefNew222", "RefOld111"]
    h.clock.now = T0 + timedelta(hours=2, minutes=32)
    assert sorted(h.settlement.active_references("solana")) == ["RefNew222", "RefOld111"]
    assert list(h.settlement.recent_references("solana")) == ["RefNew222"]
