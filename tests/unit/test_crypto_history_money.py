"""The account's crypto history shows a payment's USD through ``kilo_billing.money`` (D242): a payment not
counted toward a bill shows its own USD half-up to the cent; one with no USD value yet shows none (null)."""

from __future__ import annotations

from datetime import timedelta
from decimal import Decimal

from kilo_crypto_watch.history import account_history
from kilo_crypto_watch.model import Payment, PaymentStatus
from tests.crypto_core_fakes import CHAINS, T0, transfer


def test_given_an_unvalued_and_an_uncounted_payment_then_null_and_its_own_usd_to_the_cent() -> None:
    at = T0 + timedelta(minutes=5)
    unvalued = Payment(transfer("0xa", "USDC", 1_000_000, at), PaymentStatus.SEEN, at, account_id="acct-1")
    # in review (not counted): 0.005 USDC at 1 = $0.005 exactly, half a cent: half-up, $0.01
    in_review = Payment(
        transfer("0xb", "USDC", 5_000, at, index=1),
        PaymentStatus.SEEN,
        at + timedelta(seconds=1),
        invoice_id="inv-1",
        account_id="acct-1",
        rate=Decimal(1),
        usd=Decimal("0.005"),
        review=True,
    )

    payments = account_history([], [], [unvalued, in_review], CHAINS, at)["payments"]

    assert [(p["payment_id"], p["amount_usd"], p["rate_usd"]) for p in payments] == [
        ("ethereum:0xb:1", "0.01", "1"),
        ("ethereum:0xa:0", None, None),
    ]
