"""A crypto overpayment becomes account credit that the next close applies (in-memory ledger; the DynamoDB adapter is
held to the same behaviour by tests/contract/test_ledger_store.py, and the whole path runs on moto in
tests/integration/test_crypto_core_invoicing.py).

Hand-worked figures (price book 2026-01): Team from 2026-03-01, no usage. March: usage 0.00, March fee 29.00, April's
fee in advance 29.00 -> 58.00. Paid 62.35 in crypto -> credit 4.35. April: fee true-up 29.00 - 29.00 = 0.00, May's fee
29.00, credit applied -4.35 -> 24.65."""

from __future__ import annotations

import re
from decimal import Decimal

import pytest

from kilo_billing.contracts import CryptoBillSettledV1, CryptoCreditAddedV1
from kilo_billing.invoicing import BillingMethod, InvoiceRecord, InvoiceStatus, refundable
from kilo_invoice.crypto_settled import (
    InvoiceNotPaidYetError,
    NotCryptoInvoiceError,
    apply_crypto_credit,
    apply_crypto_settled,
)
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


def credit_added(invoice: InvoiceRecord, credit: str) -> CryptoCreditAddedV1:
    return CryptoCreditAddedV1(
        event_id=f"crypto-credit:{invoice.invoice_id}:{credit}",
        account_id=invoice.account_id,
        invoice_id=invoice.invoice_id,
        credit_usd=credit,
        tx_ids=("0xsecond",),
        occurred_at=at(3, 6).isoformat(),
    )


def test_given_a_second_payment_after_paid_then_only_its_difference_is_added_once_whatever_the_order(
    world: World,
) -> None:
    """Paid 62.35 (credit 4.35), then a second payment of 10.00 finalized on the paid bill: the bill's credit is 14.35
    in all, so 10.00 more is credit; the next close applies 14.35: 29.00 - 14.35 = 14.65."""
    march = world.close("coin", MAR)
    apply_crypto_settled(world.store, settled(march, "4.35", "62.35"))
    first = apply_crypto_credit(world.store, credit_added(march, "14.35"))
    again = apply_crypto_credit(world.store, credit_added(march, "14.35"))  # a redelivery
    older = apply_crypto_credit(world.store, credit_added(march, "4.35"))  # an older level, late
    settled_again = apply_crypto_settled(world.store, settled(march, "4.35", "62.35"))
    assert [changed for _, changed in (first, again, older, settled_again)] == [True, False, False, False]
    assert first[0].crypto_credit == Decimal("14.35")
    assert world.store.billing["coin"].credit == Decimal("14.35")
    april = world.close("coin", APR)
    assert amounts(april, "credit") == ["-14.35"]
    assert april.total == Decimal("14.65")


def test_given_credit_before_the_settlement_then_it_waits_and_the_credit_is_added_once(world: World) -> None:
    march = world.close("coin", MAR)
    with pytest.raises(InvoiceNotPaidYetError):
        apply_crypto_credit(world.store, credit_added(march, "14.35"))  # redelivered by the queue later
    assert world.store.billing["coin"].credit == Decimal("0.00")
    apply_crypto_settled(world.store, settled(march, "4.35", "62.35"))
    apply_crypto_credit(world.store, credit_added(march, "14.35"))
    assert world.store.billing["coin"].credit == Decimal("14.35")


def test_given_a_settlement_arriving_after_a_larger_credit_then_nothing_more_is_added(world: World) -> None:
    """The invoice was paid by its settlement, the credit event at 14.35 applied, then the settlement is redelivered
    carrying the older 4.35: the invoice already holds more, so nothing changes."""
    march = world.close("coin", MAR)
    apply_crypto_settled(world.store, settled(march, "0.00", "58.00"))
    apply_crypto_credit(world.store, credit_added(march, "10.00"))
    assert apply_crypto_settled(world.store, settled(march, "4.35", "62.35"))[1] is False
    assert world.store.billing["coin"].credit == Decimal("10.00")


def test_given_a_void_invoice_then_credit_is_not_added_here(world: World) -> None:
    march = world.close("coin", MAR)
    void = march.moved(InvoiceStatus.VOID, at(3, 5))
    world.store.update_invoice(void, march.status)
    assert apply_crypto_credit(world.store, credit_added(march, "14.35"))[1] is False
    assert world.store.billing["coin"].credit == Decimal("0.00")


@pytest.mark.parametrize(
    ("credit_usd", "message"),
    [
        ("NaN", "credit_usd must be whole cents, got NaN"),
        ("-Infinity", "credit_usd must be whole cents, got -Infinity"),
        ("4.35 USD", "credit_usd must be an amount in USD, got '4.35 USD'"),
    ],
)
def test_given_a_settlement_whose_credit_is_no_amount_then_refused_as_a_value_error_naming_it(
    world: World, credit_usd: str, message: str
) -> None:
    """Not a number of cents at all: refused with the same kind of error as a sub-cent credit (before: decimal's
    ``InvalidOperation``, which names neither the field nor the value)."""
    march = world.close("coin", MAR)
    with pytest.raises(ValueError, match=f"^{re.escape(message)}$"):
        apply_crypto_settled(world.store, settled(march, credit_usd, "62.35"))
    assert world.store.invoices[march.invoice_id] == march
    assert world.store.billing["coin"].credit == Decimal("0.00")


def test_given_a_settlement_whose_credit_is_not_whole_cents_then_refused_naming_it_and_nothing_changes(
    world: World,
) -> None:
    """``credit_usd`` is whole cents by contract (the crypto function sends ``money_str`` of a rounded credit, D178).
    4.355 would be added to the account's credit as is and applied by the next close as a sub-cent line; it is
    refused instead, naming the value, like a negative credit: the record fails, is redelivered, then dead-lettered
    (alarmed) for an operator - never rounded here."""
    march = world.close("coin", MAR)
    with pytest.raises(ValueError, match=r"credit_usd must be whole cents, got 4\.355$"):
        apply_crypto_settled(world.store, settled(march, "4.355", "62.355"))
    assert world.store.invoices[march.invoice_id] == march
    assert world.store.billing["coin"].credit == Decimal("0.00")

    apply_crypto_settled(world.store, settled(march, "4.35", "62.35"))
    with pytest.raises(ValueError, match=r"credit_usd must be whole cents, got 14\.355$"):
        apply_crypto_credit(world.store, credit_added(march, "14.355"))
    assert world.store.billing["coin"].credit == Decimal("4.35")
    assert world.store.invoices[march.invoice_id].crypto_credit == Decimal("4.35")


def test_given_a_crypto_invoice_paid_inside_tolerance_then_the_write_off_is_never_refundable(world: World) -> None:
    """D289. March's $58.00 paid with 57.71 USDC: the 0.29 short (0.5 % of 58.00, under the $1 cap) is
    written off. At most 58.00 - 0.29 = 57.71 can be refunded (before: 58.00, money never received)."""
    march = world.close("coin", MAR)
    event = settled(march, "0.00", "57.71").model_copy(update={"written_off_usd": "0.29"})

    paid, _ = apply_crypto_settled(world.store, event)

    assert (paid.status, paid.written_off) == (InvoiceStatus.PAID, Decimal("0.29"))
    ledger = world.store.ledger("coin")
    assert refundable(ledger, ledger.invoices[march.invoice_id]) == Decimal("57.71")


def test_given_a_payment_after_paid_that_pays_the_write_off_then_the_invoice_write_off_falls_and_no_credit_is_added(
    world: World,
) -> None:
    """D387. March's $58.00 settled with 57.71 (0.29 written off); a 0.20 payment after PAID pays the write-off
    first: the bill tells 0.09 still written off, credit 0.00. The invoice's write-off falls to 0.09 and 57.91 can be
    refunded (57.71 + 0.20 received); the account gets no credit. An older event (0.29 again) raises nothing back."""
    march = world.close("coin", MAR)
    apply_crypto_settled(world.store, settled(march, "0.00", "57.71").model_copy(update={"written_off_usd": "0.29"}))
    paid_some = credit_added(march, "0.00").model_copy(
        update={"event_id": f"crypto-credit:{march.invoice_id}:0.00:0.09", "written_off_usd": "0.09"}
    )

    after, changed = apply_crypto_credit(world.store, paid_some)
    older, again = apply_crypto_credit(world.store, paid_some.model_copy(update={"written_off_usd": "0.29"}))

    assert (changed, after.written_off, after.crypto_credit) == (True, Decimal("0.09"), Decimal("0.00"))
    assert (again, older.written_off) == (False, Decimal("0.09"))
    assert world.store.billing["coin"].credit == Decimal("0.00")
    ledger = world.store.ledger("coin")
    assert refundable(ledger, ledger.invoices[march.invoice_id]) == Decimal("57.91")


def test_given_a_settled_event_with_a_sub_cent_write_off_then_it_is_refused_naming_the_field(world: World) -> None:
    march = world.close("coin", MAR)
    event = settled(march, "0.00", "57.71").model_copy(update={"written_off_usd": "0.295"})

    with pytest.raises(ValueError, match=r"written_off_usd must be whole cents, got 0\.295"):
        apply_crypto_settled(world.store, event)
