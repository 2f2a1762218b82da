"""The crypto paths that carry a customer's claim, under their generated roles (moto enforcing IAM): the crypto API's
fast-path submit (POST .../crypto/bills/{invoice}/transactions) on an EVM chain and on Solana (CryptoApiFunctionRole),
and the EVM watcher carrying a claimed payment re-mined at another log index (CryptoEvmWatcherFunctionRole). Each
with a negative control: one grant taken away, the path is refused on exactly it and nothing is half-written.

Figures: EVM as in test_crypto_core_api.py (a $100.00 bill, 100 USDC = 100_000_000 units at 1) and
test_crypto_evm_settlement.py (the same on anvil); Solana a $37.50 bill, 0.25 SOL at $150.00."""

from __future__ import annotations

import json
from collections.abc import Iterator
from datetime import UTC, datetime
from decimal import Decimal

import pytest
from solders.keypair import Keypair

from kilo_billing.aws import StorageUnavailableError
from kilo_crypto_watch import dependencies
from kilo_crypto_watch.model import BillStatus, PaymentStatus
from kilo_dev.solana_standin import SolanaStandin
from tests import crypto_core_inspector
from tests.account_api_support import store_members
from tests.conftest import Stack
from tests.crypto_core_fakes import SpotPrices, transfer
from tests.crypto_solana_chain import SOL, SolanaTestChain
from tests.evm_chain import FINALITY_LAG, MERCHANT, OTHER, PAYER, USDC
from tests.iam.conftest import Roles
from tests.infra.test_generated_iam import CRYPTO_TABLE
from tests.integration.test_crypto_core_api import BASE, call, crypto, issue
from tests.integration.test_crypto_evm_settlement import GWEI, USDC_QUOTE, Billing, _claim, billing
from tests.integration.test_crypto_solana_watcher import _pay, _sol_quote

__all__ = ["billing", "crypto"]
API = "CryptoApiFunction"
WATCHER = "CryptoEvmWatcherFunction"
STRANGER = "0x9999999999999999999999999999999999999999"


def _submit_evm(tx_id: str) -> tuple[int, dict[str, object]]:
    crypto_core_inspector.TRANSACTIONS[tx_id] = [
        transfer(tx_id, "USDC", 100_000_000, datetime.now(UTC), sender=STRANGER)
    ]
    return call("POST", f"{BASE}/bills/acct-1~2026-10/transactions", {"chain": "ethereum", "tx_id": tx_id})  # type: ignore[no-any-return]


def test_given_the_crypto_api_under_its_generated_role_then_a_submitted_evm_transaction_is_claimed(
    crypto: SpotPrices, roles: Roles
) -> None:
    issue()
    call("POST", f"{BASE}/bills/acct-1~2026-10/quotes", {"chain": "ethereum", "asset": "USDC"})
    with roles.acting_as(API) as enforcement:
        status, body = _submit_evm("0xfeed")
    assert enforcement.denied == []
    assert status == 202
    assert [(p["payment_id"], p["status"], p["amount_usd"]) for p in body["payments"]] == [  # type: ignore[attr-defined]
        ("ethereum:0xfeed:0", "SEEN", "100.00")
    ]
    bill = dependencies.store().bill("acct-1/2026-10")
    assert bill is not None
    assert bill.status is BillStatus.PROCESSING
    assert {
        ("dynamodb:Query", CRYPTO_TABLE),  # the bill's quotes, the transaction's attributed payments (D155)
        ("dynamodb:PutItem", CRYPTO_TABLE),  # the payment and its transaction link, in one transaction
        ("dynamodb:UpdateItem", CRYPTO_TABLE),  # the quote's status
    } <= enforcement.allowed


def test_given_put_item_taken_from_the_crypto_api_s_role_then_the_submit_is_refused_and_nothing_recorded(
    crypto: SpotPrices, roles: Roles
) -> None:
    issue()
    call("POST", f"{BASE}/bills/acct-1~2026-10/quotes", {"chain": "ethereum", "asset": "USDC"})
    with roles.acting_as(API, without={("dynamodb:PutItem", CRYPTO_TABLE)}) as enforcement:
        status, _ = _submit_evm("0xfeed")
    assert enforcement.denied == [("dynamodb:PutItem", CRYPTO_TABLE)]
    assert status >= 500
    assert dependencies.store().payment("ethereum:0xfeed:0") is None
    bill = dependencies.store().bill("acct-1/2026-10")
    assert bill is not None
    assert (bill.status, bill.payments) == (BillStatus.OPEN, ())


@pytest.fixture
def solana_api(stack: Stack, monkeypatch: pytest.MonkeyPatch) -> Iterator[SolanaTestChain]:
    """The crypto API with a Solana chain on the LiteSVM stand-in (its URL in the chain's configuration)."""
    from kilo_crypto_watch import settings  # noqa: PLC0415

    with SolanaStandin(finality_lag=8) as standin:
        chain = SolanaTestChain(standin)
        env = stack.template.function_environment(API)
        config = chain.config()
        env["CRYPTO_CHAINS"] = json.dumps(
            [
                {
                    "key": "solana",
                    "merchant_address": config.merchant_address,
                    "rpc_url": standin.url,
                    "usdc": config.usdc,
                }
            ]
        )
        env["RPC_SECRET_NAME"] = ""
        env["ERC1271_ENABLED"] = "false"
        for key, value in env.items():
            monkeypatch.setenv(key, value)
        settings.settings.cache_clear()
        dependencies.clear_caches()
        store_members(stack, "acct-1", {"user-1": "admin"})  # the admin token's membership, stored (D208, D294)
        try:
            yield chain
        finally:
            dependencies.clear_caches()
            settings.settings.cache_clear()


def _solana_paid(chain: SolanaTestChain) -> str:
    """A $37.50 bill with a 0.25 SOL quote carrying a reference, paid by an unlinked wallet with the reference (full
    permissions: the setup). Returns the signature the customer submits."""
    issue(total="37.50")
    reference = Keypair().pubkey()
    dependencies.store().add_quote(_sol_quote("q-sol", "acct-1/2026-10", "acct-1", SOL // 4, str(reference)))
    return chain.send([_pay(chain, SOL // 4, reference)])


def _submit_solana(signature: str) -> tuple[int, dict[str, object]]:
    return call("POST", f"{BASE}/bills/acct-1~2026-10/transactions", {"chain": "solana", "tx_id": signature})  # type: ignore[no-any-return]


def test_given_the_crypto_api_under_its_generated_role_then_a_submitted_solana_transaction_is_claimed(
    solana_api: SolanaTestChain, roles: Roles
) -> None:
    """The Solana fast path reads the active references (the crypto table's ``watch`` index, D137) to see every
    reference among the transaction's keys: the API's role must allow that Query."""
    sent = _solana_paid(solana_api)
    with roles.acting_as(API) as enforcement:
        status, body = _submit_solana(sent)
    assert enforcement.denied == []
    assert status == 202
    assert [(p["payment_id"], p["amount_usd"]) for p in body["payments"]] == [(f"solana:{sent}:0", "37.50")]  # type: ignore[attr-defined]
    assert ("dynamodb:Query", f"{CRYPTO_TABLE}/index/watch") in enforcement.allowed


def test_given_the_watch_index_taken_from_the_crypto_api_s_role_then_the_solana_submit_is_refused_on_it(
    solana_api: SolanaTestChain, roles: Roles
) -> None:
    without = {("dynamodb:Query", f"{CRYPTO_TABLE}/index/watch")}
    sent = _solana_paid(solana_api)
    with roles.acting_as(API, without=without) as enforcement:
        status, _ = _submit_solana(sent)
    assert enforcement.denied == [("dynamodb:Query", f"{CRYPTO_TABLE}/index/watch")]
    assert status >= 500
    assert dependencies.store().payment(f"solana:{sent}:0") is None


def _re_mined_at_another_index(billing: Billing) -> str:
    """As in test_crypto_evm_settlement.py: 100 USDC from an unlinked wallet claimed for inv-1 at log index 0, its
    block reorged away, the transaction re-mined at log index 1 of another block (full permissions: the setup)."""
    chain = billing.chain
    chain.mine(FINALITY_LAG)
    billing.run()
    before = chain.node.call("evm_snapshot")
    tx = chain.pay_usdc(OTHER, MERCHANT, USDC_QUOTE)
    _claim(billing, tx)
    raw = chain.w3.eth.get_raw_transaction(tx)  # type: ignore[arg-type]
    chain.node.call("evm_revert", before)
    chain.mine(1)
    chain.node.call("evm_setAutomine", False)
    try:
        first = {"from": PAYER, "maxPriorityFeePerGas": 50 * GWEI, "maxFeePerGas": 500 * GWEI}
        chain.token().functions.transfer(OTHER, 5 * USDC).transact(first)  # type: ignore[arg-type]
        chain.w3.eth.send_raw_transaction(raw)
        chain.node.call("evm_mine")
    finally:
        chain.node.call("evm_setAutomine", True)
    assert [log["logIndex"] for log in chain.receipt(tx)["logs"]] == [1]
    return tx


def test_given_the_evm_watcher_under_its_generated_role_then_a_claim_re_mined_at_another_index_is_carried(
    billing: Billing, roles: Roles
) -> None:
    tx = _re_mined_at_another_index(billing)
    with roles.acting_as(WATCHER) as enforcement:
        billing.run()
        billing.final()
    assert enforcement.denied == []
    new = billing.store.payment(f"ethereum:{tx}:1")
    assert new is not None
    assert (new.status, new.invoice_id, new.matched_by) == (PaymentStatus.FINALIZED, "inv-1", "fast_path")
    paid = billing.bill()
    assert (paid.status, paid.settled_usd) == (BillStatus.PAID, Decimal("100.00"))
    assert {("dynamodb:Query", CRYPTO_TABLE), ("dynamodb:PutItem", CRYPTO_TABLE)} <= enforcement.allowed


def test_given_the_table_query_taken_from_the_evm_watcher_s_role_then_the_carried_claim_is_refused_on_it(
    billing: Billing, roles: Roles
) -> None:
    tx = _re_mined_at_another_index(billing)
    with (
        roles.acting_as(WATCHER, without={("dynamodb:Query", CRYPTO_TABLE)}) as enforcement,
        pytest.raises(StorageUnavailableError),  # the run fails: Lambda retries it, then its dead-letter queue
    ):
        billing.run()
    assert enforcement.denied == [("dynamodb:Query", CRYPTO_TABLE)]
    assert billing.store.payment(f"ethereum:{tx}:1") is None  # nothing half-written: the claim still on index 0
    old = billing.store.payment(f"ethereum:{tx}:0")
    assert old is not None
    assert (old.status, old.invoice_id) == (PaymentStatus.SEEN, "inv-1")
