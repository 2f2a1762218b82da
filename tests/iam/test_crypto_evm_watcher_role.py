"""The EVM watcher under its generated role (CryptoEvmWatcherFunctionRole): the RPC URL read from the RPC secret, an
exact USDC payment on anvil seen (the bill PROCESSING) and, past anvil's finalized tag, finalized (the bill PAID with
its $100.00) through the real settlement on the crypto table - moto enforcing IAM. Seed and figures as in
test_crypto_evm_settlement.py: a $100.00 bill, USDC locked at 1, 100 USDC paid. The negative control takes
``UpdateItem`` on the crypto table away: the payment's settlement (one transaction) is refused on it."""

from __future__ import annotations

from decimal import Decimal

import pytest

from kilo_billing.aws import StorageUnavailableError
from kilo_crypto_watch.model import BillStatus, QuoteStatus
from tests.evm_chain import FINALITY_LAG, MERCHANT, PAYER
from tests.iam.conftest import Roles
from tests.infra.test_generated_iam import BILLING_BUS, CRYPTO_TABLE
from tests.integration.test_crypto_evm_settlement import USDC_QUOTE, Billing, billing

__all__ = ["billing"]
FUNCTION = "CryptoEvmWatcherFunction"


def test_given_the_evm_watcher_under_its_generated_role_then_a_usdc_payment_is_seen_and_the_bill_paid(
    billing: Billing, roles: Roles
) -> None:
    billing.chain.pay_usdc(PAYER, MERCHANT, USDC_QUOTE)
    with roles.acting_as(FUNCTION) as enforcement:
        seen = billing.run()
    assert enforcement.denied == []
    assert seen["transfers_seen"] == 1
    assert billing.bill().status is BillStatus.PROCESSING
    billing.chain.mine(FINALITY_LAG)
    with roles.acting_as(FUNCTION) as finalized:
        final = billing.run()
    assert finalized.denied == []
    assert final["finalized"] == 1
    paid = billing.bill()
    assert (paid.status, paid.settled_usd) == (BillStatus.PAID, Decimal("100.00"))
    allowed = enforcement.allowed | finalized.allowed
    assert ("dynamodb:Query", f"{CRYPTO_TABLE}/index/watch") in allowed
    assert "secretsmanager:GetSecretValue" in {action for action, _ in allowed}
    assert {("dynamodb:UpdateItem", CRYPTO_TABLE), ("events:PutEvents", BILLING_BUS)} <= allowed


def test_given_condition_check_taken_from_the_evm_watcher_s_role_then_the_settlement_is_refused_on_it(
    billing: Billing, roles: Roles
) -> None:
    billing.chain.pay_usdc(PAYER, MERCHANT, USDC_QUOTE)
    with (
        roles.acting_as(FUNCTION, without={("dynamodb:UpdateItem", CRYPTO_TABLE)}) as enforcement,
        pytest.raises(StorageUnavailableError),  # the run fails: Lambda retries it, then its dead-letter queue
    ):
        billing.run()
    assert enforcement.denied == [("dynamodb:UpdateItem", CRYPTO_TABLE)]
    assert billing.bill().status is BillStatus.OPEN  # the payment and the bill's change: one refused transaction
    assert billing.quote_status()["q-usdc"] is QuoteStatus.ACTIVE
