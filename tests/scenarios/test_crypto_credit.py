"""A crypto overpayment becomes account credit that the next close applies (in-memory ledger; the DynamoDB adapter is
held to the same behaviour by tests/contract/test_ledger_store.py, and the whole path runs on moto in
tests/integration/test_crypto_core_invoicing.py).

Hand-worked figures (price book 2026-01): Team from 2026-03-01, no usage. March: usage 0.00, March fee 29.00, April's
fee in advance 29.00 -> 58.00. Paid 62.35 in crypto -> credit 4.35. April: fee true-up 29.00 - 29.00 = 0.00, May's fee
29.00, credit applied -4.35 -> 24.65."""

from __future__ import annotations

from decimal import Decimal

import pytest

from kilo_billing.contracts import CryptoBillSettledV1
from kilo_billing.invoicing import BillingMethod, InvoiceRecord, InvoiceStatus
from kilo_invoice.crypto_settled import NotCryptoInvoiceError, apply_crypto_settled
from tests.scenarios.test_invoicing import APR, MAR, World, amounts, at


def settled(invoice: InvoiceRecord, credit: str, settled_usd: str) -> CryptoBillSettledV1:
    return CryptoBillSettledV1(
        event_id=f"crypto-settled:{invoice.invoice_id}",
        account_id=invoice.account_id,
        invoice_id=invoice.invoice_id,
        total="58.00",
        settled_usd=settled_usd,
        credit_usd=credit,
        occurred_at=at(3, 4).isoformat(),
    )


@pytest.fixture
def world() -> World:
    world = World()
    world.signup("coin", (at(1), "team"), method=BillingMethod.CRYPTO)
    return world


def test_given_an_overpaid_crypto_invoice_then_paid_with_the_credit_once_and_the_next_close_applies_it(
    world: World,
) -> None:
    march = world.close("coin", MAR)
    assert march.total == Decimal("58.00")
    event = settled(march, "4.35", "62.35")

    paid, changed = apply_crypto_settled(world.store, event)
    again, changed_again = apply_crypto_settled(world.store, event)  # a redelivery

    assert (paid.status, changed, changed_again) == (InvoiceStatus.PAID, True, False)
    assert again == paid
    assert world.store.billing["coin"].credit == Decimal("4.35")
    april = world.close("coin", APR)
    assert amounts(april, "credit") == ["-4.35"]
    assert april.total == Decimal("24.65")
    assert world.store.billing["coin"].credit == Decimal("0.00")


def test_given_a_settlement_landing_between_the_close_read_and_write_then_the_close_retries_and_applies_it(
    world: World,
) -> None:
    march = world.close("coin", MAR)
    world.store.before_create.append(lambda: apply_crypto_settled(world.store, settled(march, "4.35", "62.35")))
    april = world.close("coin", APR)  # composed without the credit, conflicted, composed again with it
    assert amounts(april, "credit") == ["-4.35"]
    assert april.total == Decimal("24.65")
    assert world.store.billing["coin"].credit == Decimal("0.00")


def test_given_an_exact_payment_then_paid_and_no_credit(world: World) -> None:
    march = world.close("coin", MAR)
    paid, _ = apply_crypto_settled(world.store, settled(march, "0.00", "58.00"))
    assert paid.status is InvoiceStatus.PAID
    assert world.store.billing["coin"].credit == Decimal("0.00")
    assert amounts(world.close("coin", APR), "credit") == []


def test_given_a_card_invoice_then_refused_and_no_credit_added(world: World) -> None:
    world.signup("card", (at(1), "team"))
    march = world.close("card", MAR)
    with pytest.raises(NotCryptoInvoiceError):
        apply_crypto_settled(world.store, settled(march, "4.35", "62.35"))
    assert world.store.billing["card"].credit == Decimal("0.00")
