"""A crypto-billed account's month end to end on moto with the template's rules: the close issues the invoice
(InvoiceIssued.v1, method crypto) -> CryptoBillsRule -> the crypto bills queue -> an OPEN bill; a USDC payment from
the linked wallet is seen (PROCESSING) and finalized (PAID, CryptoBillSettled.v1 once) -> CryptoSettledRule -> the
crypto-settled queue -> invoicing marks the invoice paid. Figures as in test_invoice_close.py: Team with 60,000
video minutes in March 2026 -> 7.20 + 29.00 + 29.00 = $65.20 = 65_200_000 USDC units at the locked 1:1."""

from __future__ import annotations

import json
from datetime import timedelta
from decimal import Decimal
from typing import Any

import pytest

from kilo_billing.invoicing import InvoiceRecord, InvoiceStatus
from kilo_crypto_watch import bills_handler, dependencies
from kilo_crypto_watch.model import BillStatus
from kilo_invoice import crypto_settled_handler
from tests.conftest import _clear_caches
from tests.crypto_core_fakes import CUSTOMER_WALLET, T0, quote, transfer
from tests.integration.test_invoice_close import Invoicing, _put_template_rule, invoicing

__all__ = ["invoicing"]


@pytest.fixture
def crypto_invoicing(invoicing: Invoicing, monkeypatch: pytest.MonkeyPatch) -> Invoicing:
    template = invoicing.stack.template
    for function in ("CryptoBillsFunction", "CryptoApiFunction", "InvoiceCryptoSettledFunction"):
        for key, value in template.function_environment(function).items():
            if key != "POWERTOOLS_SERVICE_NAME":
                monkeypatch.setenv(key, value)
    invoicing.stack.clients["secretsmanager"].create_secret(
        Name=template.parameters["CryptoRpcSecretName"], SecretString="{}"
    )
    _put_template_rule(invoicing.stack, "CryptoBillsRule")
    _put_template_rule(invoicing.stack, "CryptoSettledRule")
    _clear_caches()
    return invoicing


def _march_closed_in_crypto(inv: Invoicing) -> InvoiceRecord:
    """acct-c on Team billed in crypto, 60,000 video minutes in March, March closed: its invoice (65.20, OPEN)."""
    inv.register("acct-c", "team", method="crypto")
    inv.rate("acct-c", "video", 60_000)
    inv.start("2026-04-01T06:00:00Z")
    inv.close_all()
    return inv.invoice("acct-c")


def test_given_a_crypto_account_when_its_bill_is_paid_on_chain_then_the_invoice_is_paid_once(
    crypto_invoicing: Invoicing,
) -> None:
    inv = crypto_invoicing
    invoice = _march_closed_in_crypto(inv)
    assert (invoice.status, invoice.total) == (InvoiceStatus.OPEN, Decimal("65.20"))

    assert len(inv.drain("CryptoBillsQueue", bills_handler.lambda_handler)) == 1
    store = dependencies.store()
    bill = store.bill(invoice.invoice_id)
    assert bill is not None
    assert (bill.status, bill.total_usd, bill.account_id, bill.number) == (
        BillStatus.OPEN,
        Decimal("65.20"),
        "acct-c",
        invoice.number,
    )

    store.link_wallet("evm", CUSTOMER_WALLET, "acct-c", "ethereum", T0)
    usdc = quote("q-1", "USDC", 65_200_000, "1", invoice_id=invoice.invoice_id, account_id="acct-c", amount_usd="65.20")
    store.add_quote(usdc)
    settlement = dependencies.settlement()
    settlement.record_seen(transfer("0xpay", "USDC", 65_200_000, T0 + timedelta(minutes=3)))
    seen = store.bill(invoice.invoice_id)
    assert seen is not None
    assert seen.status is BillStatus.PROCESSING
    assert inv.drain("CryptoSettledQueue", crypto_settled_handler.lambda_handler) == []
    assert inv.invoice("acct-c").status is InvoiceStatus.OPEN

    settlement.finalized("ethereum:0xpay:0")
    settlement.finalized("ethereum:0xpay:0")
    [settled_body] = inv.drain("CryptoSettledQueue", crypto_settled_handler.lambda_handler)
    settled = json.loads(settled_body)["detail"]
    assert (settled["invoice_id"], settled["total"], settled["settled_usd"], settled["tx_ids"]) == (
        invoice.invoice_id,
        "65.20",
        "65.20",
        ["0xpay"],
    )
    paid = inv.invoice("acct-c")
    assert paid.status is InvoiceStatus.PAID
    assert f"crypto_settled:{invoice.invoice_id}" in paid.announced

    # a redelivery changes nothing
    record = {"messageId": "again", "body": settled_body, "eventSource": "aws:sqs", "attributes": {}}
    assert crypto_settled_handler.lambda_handler({"Records": [record]}, inv.context)["batchItemFailures"] == []
    assert inv.invoice("acct-c") == paid


def test_given_a_settlement_for_a_card_invoice_then_it_is_ignored(crypto_invoicing: Invoicing) -> None:
    inv = crypto_invoicing
    inv.register("acct-a", "team")
    inv.rate("acct-a", "video", 60_000)
    inv.card("acct-a", "pm_card_visa")
    inv.start("2026-04-01T06:00:00Z")
    inv.close_all()
    card = inv.invoice("acct-a")
    assert inv.drain("CryptoBillsQueue", bills_handler.lambda_handler) == []  # the rule only routes crypto invoices
    detail = {
        "schema_version": 1,
        "event_id": f"crypto-settled:{card.invoice_id}",
        "account_id": "acct-a",
        "invoice_id": card.invoice_id,
        "total": "65.20",
        "settled_usd": "65.20",
        "occurred_at": "2026-04-02T00:00:00+00:00",
    }
    record = {"messageId": "m", "body": json.dumps({"detail": detail}), "eventSource": "aws:sqs", "attributes": {}}
    assert crypto_settled_handler.lambda_handler({"Records": [record]}, inv.context)["batchItemFailures"] == []
    assert inv.invoice("acct-a").status == card.status


def test_given_a_settlement_whose_credit_is_not_whole_cents_then_the_record_fails_for_the_dlq_and_nothing_changes(
    crypto_invoicing: Invoicing,
) -> None:
    """A ``CryptoBillSettled.v1`` breaking its contract (``credit_usd`` 4.355, not whole cents) is a poison record: it
    fails (the queue redelivers it, then dead-letters it, alarmed) and neither the invoice nor the credit moves."""
    inv = crypto_invoicing
    invoice = _march_closed_in_crypto(inv)
    detail = {
        "schema_version": 1,
        "event_id": f"crypto-settled:{invoice.invoice_id}",
        "account_id": "acct-c",
        "invoice_id": invoice.invoice_id,
        "total": "65.20",
        "settled_usd": "69.555",
        "credit_usd": "4.355",
        "occurred_at": "2026-04-02T00:00:00+00:00",
    }
    record = {"messageId": "m", "body": json.dumps({"detail": detail}), "eventSource": "aws:sqs", "attributes": {}}
    answer = crypto_settled_handler.lambda_handler({"Records": [record]}, inv.context)
    assert answer["batchItemFailures"] == [{"itemIdentifier": "m"}]
    assert inv.invoice("acct-c") == invoice
    assert inv.store.ledger("acct-c").billing.credit == Decimal("0.00")


def test_given_a_crypto_bill_overpaid_when_the_next_month_closes_then_its_invoice_applies_the_credit(
    crypto_invoicing: Invoicing,
) -> None:
    """March: 65.20 asked, 70.00 USDC paid (70_000_000 units at the locked 1:1) -> 4.80 account credit. April: no
    usage; usage 0.00, fee true-up 29.00 - 29.00 billed in advance = 0.00, May's fee in advance 29.00; the credit
    applied -4.80 -> 24.20, and the account's credit back to 0.00."""
    inv = crypto_invoicing
    march = _march_billed_with_a_usdc_quote(inv)
    assert march.total == Decimal("65.20")
    settlement = dependencies.settlement()
    settlement.record_seen(transfer("0xover", "USDC", 70_000_000, T0 + timedelta(minutes=3)))
    settlement.finalized("ethereum:0xover:0")
    [settled_body] = inv.drain("CryptoSettledQueue", crypto_settled_handler.lambda_handler)
    assert json.loads(settled_body)["detail"]["credit_usd"] == "4.80"
    assert inv.store.ledger("acct-c").billing.credit == Decimal("4.80")

    record = {"messageId": "again", "body": settled_body, "eventSource": "aws:sqs", "attributes": {}}
    assert crypto_settled_handler.lambda_handler({"Records": [record]}, inv.context)["batchItemFailures"] == []
    assert inv.store.ledger("acct-c").billing.credit == Decimal("4.80")  # a redelivery adds nothing

    inv.start("2026-05-01T06:00:00Z")
    inv.close_all()
    april = inv.invoice("acct-c", "2026-04")
    assert [(line.kind, line.amount) for line in april.lines if line.kind == "credit"] == [("credit", Decimal("-4.80"))]
    assert april.total == Decimal("24.20")
    assert inv.store.ledger("acct-c").billing.credit == Decimal("0.00")


def _march_billed_with_a_usdc_quote(inv: Invoicing) -> InvoiceRecord:
    """March (Team, 60,000 video minutes) closed and billed in crypto (its bill made from the queue), the customer's
    wallet linked and a USDC quote for its 65.20 at the locked 1:1 (65_200_000 units)."""
    march = _march_closed_in_crypto(inv)
    inv.drain("CryptoBillsQueue", bills_handler.lambda_handler)
    store = dependencies.store()
    store.link_wallet("evm", CUSTOMER_WALLET, "acct-c", "ethereum", T0)
    usdc = quote("q-1", "USDC", 65_200_000, "1", invoice_id=march.invoice_id, account_id="acct-c", amount_usd="65.20")
    store.add_quote(usdc)
    return march


def _paid_with_more_seen(inv: Invoicing) -> InvoiceRecord:
    """March billed with a USDC quote (``_march_billed_with_a_usdc_quote``). The wallet pays 65.20 and, before that
    finalizes, 10.00 more (10_000_000 units); the first finalizes: PAID."""
    march = _march_billed_with_a_usdc_quote(inv)
    settlement = dependencies.settlement()
    settlement.record_seen(transfer("0xpay", "USDC", 65_200_000, T0 + timedelta(minutes=3)))
    settlement.record_seen(transfer("0xmore", "USDC", 10_000_000, T0 + timedelta(minutes=4)))
    settlement.finalized("ethereum:0xpay:0")
    return march


def test_given_a_second_payment_after_the_bill_is_paid_then_invoicing_adds_its_credit_once(
    crypto_invoicing: Invoicing,
) -> None:
    """March: 65.20 asked. The linked wallet pays 65.20 and, before that finalizes, 10.00 more (10_000_000 USDC
    units at the locked 1:1). The first finalizes: PAID, no credit. The second finalizes on the paid bill:
    CryptoCreditAdded.v1 (credit 10.00 in all) through the template's rule -> invoicing's queue -> the account's credit
    10.00, once; April's close applies it: 0.00 usage + 0.00 fee true-up + 29.00 May fee - 10.00 = 19.00."""
    inv = crypto_invoicing
    _paid_with_more_seen(inv)
    settlement = dependencies.settlement()
    [settled_body] = inv.drain("CryptoSettledQueue", crypto_settled_handler.lambda_handler)
    assert json.loads(settled_body)["detail"]["credit_usd"] == "0.00"
    assert inv.store.ledger("acct-c").billing.credit == Decimal("0.00")

    settlement.finalized("ethereum:0xmore:0")
    settlement.finalized("ethereum:0xmore:0")  # a watcher rerun
    bodies = inv.drain("CryptoSettledQueue", crypto_settled_handler.lambda_handler)
    assert [(json.loads(b)["detail-type"], json.loads(b)["detail"]["credit_usd"]) for b in bodies] == [
        ("CryptoCreditAdded.v1", "10.00")
    ]
    assert json.loads(bodies[0])["detail"]["tx_ids"] == ["0xmore"]
    assert inv.store.ledger("acct-c").billing.credit == Decimal("10.00")
    assert inv.invoice("acct-c").crypto_credit == Decimal("10.00")
    record = {"messageId": "again", "body": bodies[0], "eventSource": "aws:sqs", "attributes": {}}
    assert crypto_settled_handler.lambda_handler({"Records": [record]}, inv.context)["batchItemFailures"] == []
    assert inv.store.ledger("acct-c").billing.credit == Decimal("10.00")  # a redelivery adds nothing

    inv.start("2026-05-01T06:00:00Z")
    inv.close_all()
    april = inv.invoice("acct-c", "2026-04")
    assert [(line.kind, line.amount) for line in april.lines if line.kind == "credit"] == [
        ("credit", Decimal("-10.00"))
    ]
    assert april.total == Decimal("19.00")


class _LosesCreditEvents:
    """The bus failing for CryptoCreditAdded.v1 only (a crash between the bill's save and its event)."""

    def __init__(self, real: Any) -> None:
        self._real = real

    def publish(self, detail_type: str, detail: dict[str, Any]) -> None:
        if detail_type == "CryptoCreditAdded.v1":
            raise ConnectionError("the bus is unreachable")
        self._real.publish(detail_type, detail)


def test_given_a_credit_event_lost_after_the_save_then_the_next_watcher_sweep_publishes_it_once(
    crypto_invoicing: Invoicing,
) -> None:
    """As above (65.20 paid, then 10.00 more finalizing on the paid bill), but the credit event is lost after the
    bill's save: the bill stays on the announcement list, and the next sweep (run by every watcher run) publishes
    CryptoCreditAdded.v1 (credit 10.00 in all) and takes it off; invoicing adds 10.00 once."""
    from kilo_crypto_watch.settlement import Settlement  # noqa: PLC0415

    inv = crypto_invoicing
    march = _paid_with_more_seen(inv)
    store, settlement = dependencies.store(), dependencies.settlement()
    inv.drain("CryptoSettledQueue", crypto_settled_handler.lambda_handler)
    assert settlement.announce_due() == 0  # settled and announced: nothing left on the list

    losing = Settlement(store, _LosesCreditEvents(dependencies.publisher()), {})  # the real bus, failing for credit
    with pytest.raises(ConnectionError):
        losing.finalized("ethereum:0xmore:0")
    bill = store.bill(march.invoice_id)
    assert bill is not None
    assert (bill.credit_usd, bill.credit_announced_usd) == (Decimal("10.00"), Decimal("0.00"))
    assert inv.drain("CryptoSettledQueue", crypto_settled_handler.lambda_handler) == []
    assert inv.store.ledger("acct-c").billing.credit == Decimal("0.00")

    assert settlement.announce_due() == 1
    assert settlement.announce_due() == 0  # taken off once published
    [body] = inv.drain("CryptoSettledQueue", crypto_settled_handler.lambda_handler)
    assert (json.loads(body)["detail-type"], json.loads(body)["detail"]["credit_usd"]) == (
        "CryptoCreditAdded.v1",
        "10.00",
    )
    assert inv.store.ledger("acct-c").billing.credit == Decimal("10.00")
