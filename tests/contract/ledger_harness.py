"""The invoicing ledger contract's harness (``kilo_billing.invoicing.LedgerStore``): the in-memory fake and DynamoDB
(moto, the template's usage table), each with a way to register an account and to rate usage the way rating writes it
(counters ADDed to ``ACCOUNT#<a>``/``PERIOD#<p>``). The ``ledger`` fixture over both is in this folder's conftest."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

from kilo_billing.account_store import DynamoAccountDirectory
from kilo_billing.accounts import AccountProfile
from kilo_billing.catalog import default_catalog
from kilo_billing.invoicing import AccountLedger, InvoiceRecord, LedgerStore, compose_close
from kilo_billing.items import to_item
from kilo_billing.periods import Period
from kilo_billing.periods_store import DynamoLedgerStore
from kilo_billing.rating import TierChange
from kilo_invoice.logic import close_account
from kilo_invoice.model import CloseDeps
from tests.conftest import Stack
from tests.invoice_fakes import InMemoryLedgerStore
from tests.payment_fakes import InMemoryPaymentGateway

MAR = Period(2026, 3)
START = datetime(2026, 3, 1, tzinfo=UTC)
SEG = int(START.timestamp())


@dataclass
class Ledger:
    store: LedgerStore
    register: Any
    rate: Any
    stack: Stack | None = None


def _dynamo(stack: Stack) -> Ledger:
    table = stack.template.physical_name("UsageTable")
    client = stack.clients["dynamodb"]
    directory = DynamoAccountDirectory(client, table)

    def rate(account: str, period: str, segment: int, meter: str, quantity: int) -> None:
        client.update_item(  # what rating's aggregate_add does
            TableName=table,
            Key=to_item({"pk": f"ACCOUNT#{account}", "sk": f"PERIOD#{period}"}),
            UpdateExpression="ADD #c :q",
            ExpressionAttributeNames={"#c": f"c#{segment}#{meter}"},
            ExpressionAttributeValues=to_item({":q": quantity}),
        )

    return Ledger(DynamoLedgerStore(client, table), directory.register, rate, stack)


def _fake() -> Ledger:
    fake = InMemoryLedgerStore()

    def register(profile: AccountProfile) -> None:
        fake.profiles[profile.account_id] = profile

    return Ledger(fake, register, fake.rate)


def _team(account: str) -> AccountProfile:
    return AccountProfile(account, (TierChange(START, "team"),))


def _draft(found: AccountLedger) -> Any:
    draft = compose_close(found, MAR, default_catalog(), MAR.end)
    assert draft is not None
    return draft


class _Bus:
    def publish(self, detail_type: str, detail: Any) -> None:
        pass


def team_march_closed(ledger: Ledger) -> tuple[InMemoryPaymentGateway, CloseDeps, InvoiceRecord]:
    """acme on Team by card with 60,000 March video minutes, March closed on the in-memory Stripe fake (in_A): the
    gateway, the close's dependencies and March's invoice (its figures are for the caller to check)."""
    ledger.register(_team("acme"))
    ledger.rate("acme", "2026-03", SEG, "video", 60_000)
    gateway = InMemoryPaymentGateway()
    deps = CloseDeps(ledger.store, gateway, _Bus(), default_catalog(), lambda _s: None)
    march = close_account(deps, "acme", MAR, MAR.end).invoice
    assert march is not None
    return gateway, deps, march
