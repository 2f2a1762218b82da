"""The crypto bills consumer and the crypto API under their generated roles: an InvoiceIssued.v1 opens the crypto bill
(CryptoBillsFunctionRole), then an admin's ETH quote, a member's history and a wallet linked by a signed SIWE message
(CryptoApiFunctionRole) - moto enforcing IAM. Seed and figures as in test_crypto_core_api.py ($100.00 at the on-chain
$2,500.00: 0.04 ETH). The negative control takes ``ConditionCheckItem`` on the crypto table from the API's role."""

from __future__ import annotations

from typing import Any

from eth_account import Account
from eth_account.messages import encode_defunct

from kilo_crypto_watch import dependencies
from kilo_crypto_watch.wallets import siwe_text
from tests.crypto_core_fakes import SpotPrices
from tests.iam.conftest import Roles
from tests.infra.test_generated_iam import CRYPTO_TABLE
from tests.integration.test_crypto_core_api import BASE, call, crypto, issue

__all__ = ["crypto"]
WALLET = Account.from_key("0x" + "33" * 32)


def link_wallet() -> tuple[int, Any]:
    _, issued = call("POST", f"{BASE}/wallets/nonce")
    text = siwe_text(
        "app.kilo.example", WALLET.address, "https://app.kilo.example", "1", issued["nonce"], issued["issued_at"]
    )
    signature = WALLET.sign_message(encode_defunct(text=text)).signature.hex()
    return call("POST", f"{BASE}/wallets", {"chain": "ethereum", "message": text, "signature": signature})  # type: ignore[no-any-return]


def test_given_the_crypto_bills_and_api_under_their_generated_roles_then_a_bill_is_quoted_and_a_wallet_linked(
    crypto: SpotPrices, roles: Roles
) -> None:
    with roles.acting_as("CryptoBillsFunction") as enforcement:
        assert issue()["batchItemFailures"] == []
    assert enforcement.denied == []
    assert ("dynamodb:PutItem", CRYPTO_TABLE) in enforcement.allowed
    with roles.acting_as("CryptoApiFunction") as enforcement:
        quoted, quote = call("POST", f"{BASE}/bills/acct-1~2026-10/quotes", {"chain": "ethereum", "asset": "ETH"})
        listed, history = call("GET", f"{BASE}/history", role="member")
        linked, wallet = link_wallet()
    assert enforcement.denied == []
    assert (quoted, quote["amount"], quote["amount_usd"]) == (201, "0.04", "100.00")
    assert listed == 200
    assert [(b["invoice_id"], b["status"]) for b in history["bills"]] == [("acct-1/2026-10", "OPEN")]
    assert (linked, wallet) == (201, {"chain": "ethereum", "address": WALLET.address, "method": "eoa"})
    assert {
        ("dynamodb:ConditionCheckItem", CRYPTO_TABLE),
        ("dynamodb:DeleteItem", CRYPTO_TABLE),
        ("dynamodb:Query", f"{CRYPTO_TABLE}/index/account"),
    } <= enforcement.allowed


def test_given_condition_check_taken_from_the_crypto_api_s_role_then_the_quote_is_refused_on_it(
    crypto: SpotPrices, roles: Roles
) -> None:
    issue()  # full permissions: the bills consumer's part
    with roles.acting_as("CryptoApiFunction", without={("dynamodb:ConditionCheckItem", CRYPTO_TABLE)}) as enforcement:
        quoted, _ = call("POST", f"{BASE}/bills/acct-1~2026-10/quotes", {"chain": "ethereum", "asset": "ETH"})
    assert enforcement.denied == [("dynamodb:ConditionCheckItem", CRYPTO_TABLE)]
    assert quoted >= 500
    assert dependencies.store().quotes("acct-1/2026-10") == []  # nothing half-written
