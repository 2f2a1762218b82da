"""Invoicing under its generated roles: the hourly start (InvoiceStartFunctionRole) fans March out, the close worker
(InvoiceCloseFunctionRole) issues a crypto account's invoice, and the crypto-settled consumer
(InvoiceCryptoSettledFunctionRole) marks it paid with the overpayment's credit - each with the credentials of a role
holding exactly its generated policy, moto enforcing IAM. Figures as in test_invoice_close.py: Team with 60,000
video minutes in March 2026 -> 7.20 + 29.00 + 29.00 = $65.20; 70.00 paid -> 4.80 credit. The negative control takes
UpdateItem (D151) from the consumer's role: the same settlement is refused on it."""

from __future__ import annotations

import json
from decimal import Decimal
from typing import Any

import pytest

from kilo_billing.contracts import CryptoBillSettledV1
from kilo_billing.invoicing import InvoiceStatus
from kilo_invoice import close_handler, crypto_settled_handler
from tests.iam.conftest import Enforcement, Roles
from tests.infra.test_generated_iam import USAGE_TABLE
from tests.integration.test_invoice_close import Invoicing, invoicing

__all__ = ["invoicing"]
ACCOUNT = "acct-c"


def queued(inv: Invoicing, queue: str) -> list[dict[str, Any]]:
    """The queue's messages as Lambda's SQS event source hands them over (read and deleted with the test's own
    permissions: the event source mapping's, not the function's)."""
    sqs, url = inv.stack.clients["sqs"], inv.stack.template.ref(queue)
    records = []
    while messages := sqs.receive_message(QueueUrl=url, MaxNumberOfMessages=10).get("Messages", []):
        for message in messages:
            records.append(
                {
                    "messageId": message["MessageId"],
                    "receiptHandle": message["ReceiptHandle"],
                    "body": message["Body"],
                    "attributes": {"ApproximateReceiveCount": "1"},
                    "messageAttributes": {},
                    "eventSource": "aws:sqs",
                    "eventSourceARN": inv.stack.template.get_att(queue, "Arn"),
                    "awsRegion": "us-east-1",
                }
            )
            sqs.delete_message(QueueUrl=url, ReceiptHandle=message["ReceiptHandle"])
    return records


@pytest.fixture
def march(invoicing: Invoicing, roles: Roles, monkeypatch: pytest.MonkeyPatch) -> tuple[Invoicing, Enforcement]:
    """March of a crypto-billed Team account started and closed under the start's and the close's roles."""
    template = invoicing.stack.template
    for key, value in template.function_environment("InvoiceCryptoSettledFunction").items():
        if key != "POWERTOOLS_SERVICE_NAME":
            monkeypatch.setenv(key, value)
    invoicing.register(ACCOUNT, "team", method="crypto")
    invoicing.rate(ACCOUNT, "video", 60_000)
    seen = Enforcement()
    with roles.acting_as("InvoiceStartFunction") as enforcement:
        invoicing.start("2026-04-01T06:00:00Z")
    seen.allowed |= enforcement.allowed
    seen.denied += enforcement.denied
    jobs = queued(invoicing, "InvoiceCloseQueue")
    assert len(jobs) == 1
    with roles.acting_as("InvoiceCloseFunction") as enforcement:
        answer = close_handler.lambda_handler({"Records": jobs}, invoicing.context)
    seen.allowed |= enforcement.allowed
    seen.denied += enforcement.denied
    assert answer == {"batchItemFailures": []}
    assert invoicing.invoice(ACCOUNT).total == Decimal("65.20")
    return invoicing, seen


def settled(inv: Invoicing) -> dict[str, Any]:
    invoice = inv.invoice(ACCOUNT)
    detail = CryptoBillSettledV1(
        event_id=f"crypto-settled:{invoice.invoice_id}",
        account_id=ACCOUNT,
        invoice_id=invoice.invoice_id,
        total="65.20",
        settled_usd="70.00",
        credit_usd="4.80",
        flags=("OVERPAID",),
        tx_ids=("ethereum:0xover:0",),
        occurred_at="2026-04-02T10:00:00+00:00",
    )
    body = {
        "detail-type": CryptoBillSettledV1.DETAIL_TYPE,
        "source": "kilo.billing.crypto",
        "detail": detail.model_dump(mode="json"),
    }
    return {"messageId": "settled-1", "body": json.dumps(body), "eventSource": "aws:sqs", "attributes": {}}


def test_given_invoicing_under_its_generated_roles_then_a_crypto_month_closes_and_an_overpaid_bill_settles(
    march: tuple[Invoicing, Enforcement], roles: Roles
) -> None:
    inv, seen = march
    assert seen.denied == []
    assert {("dynamodb:Query", USAGE_TABLE), ("dynamodb:PutItem", USAGE_TABLE)} <= seen.allowed

    record = settled(inv)
    with roles.acting_as("InvoiceCryptoSettledFunction") as enforcement:
        answer = crypto_settled_handler.lambda_handler({"Records": [record]}, inv.context)
    assert enforcement.denied == []
    assert answer == {"batchItemFailures": []}
    assert ("dynamodb:UpdateItem", USAGE_TABLE) in enforcement.allowed  # the credit, with the invoice (D151)
    assert inv.invoice(ACCOUNT).status is InvoiceStatus.PAID
    assert inv.store.ledger(ACCOUNT).billing.credit == Decimal("4.80")


def test_given_update_item_taken_from_the_crypto_settled_role_then_the_settlement_is_refused_on_it(
    march: tuple[Invoicing, Enforcement], roles: Roles
) -> None:
    inv, _ = march
    record = settled(inv)
    with roles.acting_as("InvoiceCryptoSettledFunction", without={("dynamodb:UpdateItem", USAGE_TABLE)}) as enforcement:
        answer = crypto_settled_handler.lambda_handler({"Records": [record]}, inv.context)
    assert enforcement.denied == [("dynamodb:UpdateItem", USAGE_TABLE)]
    assert answer == {"batchItemFailures": [{"itemIdentifier": "settled-1"}]}
    assert inv.invoice(ACCOUNT).status is not InvoiceStatus.PAID  # nothing written: the transaction was refused
    assert inv.store.ledger(ACCOUNT).billing.credit == Decimal("0.00")
