"""The crypto routes and the bills consumer, in-process with API Gateway v2 / SQS events, on moto (tables from
template.yaml, the function's environment as deployed): bills opened from InvoiceIssued.v1, quotes at checked rates
(a stand-in on-chain feed and the real exchange adapter against a local spot API), the fast path, wallet linking,
history. Roles: members read, admins manage."""

from __future__ import annotations

import json
from collections.abc import Iterator
from dataclasses import replace
from datetime import UTC, datetime, timedelta
from decimal import Decimal
from typing import Any

import pytest
from eth_account import Account
from eth_account.messages import encode_defunct

from kilo_billing.contracts import InvoiceIssuedV1
from kilo_crypto_watch import api_handler, bills_handler, dependencies
from kilo_crypto_watch.wallets import siwe_text
from kilo_dev.apigw import http_api_event
from tests import crypto_core_inspector
from tests.account_api_support import store_members
from tests.conftest import LambdaContext, Stack
from tests.crypto_core_fakes import MERCHANT_EVM, MERCHANT_SOL, OnChainFeed, SpotPrices, transfer
from tests.evm_chain import Chain, deploy

BASE = "/v1/accounts/acct-1/crypto"


@pytest.fixture
def crypto(stack: Stack, monkeypatch: pytest.MonkeyPatch) -> Iterator[SpotPrices]:
    spot = SpotPrices()
    env = stack.template.function_environment("CryptoApiFunction")
    env["CRYPTO_CHAINS"] = json.dumps(
        [
            {"key": "ethereum", "merchant_address": MERCHANT_EVM, "rpc_url": "http://127.0.0.1:1"},
            {"key": "solana", "merchant_address": MERCHANT_SOL, "rpc_url": "http://127.0.0.1:1"},
        ]
    )
    env["EXCHANGE_PRICE_URL"] = spot.url
    env["ERC1271_ENABLED"] = "false"
    for key, value in env.items():
        monkeypatch.setenv(key, value)
    stack.clients["secretsmanager"].create_secret(Name=env["RPC_SECRET_NAME"], SecretString="{}")
    store_members(stack, "acct-1", {"user-1": "admin"})  # the admin tokens' membership, stored (D208)
    monkeypatch.setattr(dependencies, "_EXTRA_SOURCES", [OnChainFeed()])
    monkeypatch.setattr(dependencies, "INSPECTOR_MODULES", {"evm": "tests.crypto_core_inspector"})
    from kilo_crypto_watch import settings  # noqa: PLC0415

    settings.settings.cache_clear()
    dependencies.clear_caches()
    crypto_core_inspector.TRANSACTIONS.clear()
    try:
        yield spot
    finally:
        spot.stop()
        dependencies.clear_caches()


def call(method: str, path: str, body: object = None, role: str = "admin", account: str = "acct-1") -> Any:
    raw = json.dumps(body).encode() if body is not None else None
    event = http_api_event(method, path, raw, {"content-type": "application/json"})
    event["requestContext"]["authorizer"] = {
        "jwt": {"claims": {"sub": "user-1", "kilo_account": account, "kilo_role": role}, "scopes": None}
    }
    response = api_handler.lambda_handler(event, LambdaContext())
    return response["statusCode"], json.loads(response["body"])


def issue(invoice_id: str = "acct-1/2026-10", method: str = "crypto", total: str = "100.00") -> dict[str, Any]:
    issued = InvoiceIssuedV1(
        event_id=f"invoice-issued:{invoice_id}",
        account_id="acct-1",
        invoice_id=invoice_id,
        number=f"KB-{invoice_id}",
        period="2026-10",
        total=total,
        method=method,  # type: ignore[arg-type]
        status="open",
        occurred_at=datetime(2026, 11, 1, 6, tzinfo=UTC).isoformat(),
    )
    body = {"detail-type": issued.DETAIL_TYPE, "source": "kilo.billing.invoicing", "detail": issued.model_dump()}
    record = {"messageId": invoice_id, "body": json.dumps(body), "eventSource": "aws:sqs", "attributes": {}}
    return bills_handler.lambda_handler({"Records": [record]}, LambdaContext())


def test_given_issued_invoices_then_only_crypto_ones_become_open_bills_once(crypto: SpotPrices) -> None:
    assert issue()["batchItemFailures"] == []
    assert issue()["batchItemFailures"] == []  # redelivered
    issue("acct-1/2026-08", method="card")
    issue("acct-1/2026-07", total="0.00")
    status, history = call("GET", f"{BASE}/history", role="member")
    assert status == 200
    assert [(b["invoice_id"], b["status"], b["total_usd"]) for b in history["bills"]] == [
        ("acct-1/2026-10", "OPEN", "100.00")
    ]


def test_given_an_open_bill_when_an_admin_asks_an_eth_quote_then_the_rate_and_its_sources_are_locked(
    crypto: SpotPrices,
) -> None:
    issue()
    status, quote = call("POST", f"{BASE}/bills/acct-1~2026-10/quotes", {"chain": "ethereum", "asset": "ETH"})
    assert status == 201
    # $100.00 at the on-chain $2,500.00 (the exchange's $2,510.00 is 0.4 % away): 0.04 ETH
    assert (quote["amount"], quote["atomic_amount"], quote["rate_usd"], quote["amount_usd"]) == (
        "0.04",
        "40000000000000000",
        "2500",
        "100.00",
    )
    assert [s["source"] for s in quote["rate_sources"]] == ["chainlink:ethereum:ETH", "exchange:coinbase"]
    assert [s["price_usd"] for s in quote["rate_sources"]] == ["2500", "2510"]
    assert quote["payment_uri"] == f"ethereum:{MERCHANT_EVM}@1?value=40000000000000000"
    assert quote["status"] == "ACTIVE"


def test_given_a_solana_quote_then_a_fresh_reference_key_is_in_the_solana_pay_url(crypto: SpotPrices) -> None:
    issue()
    _, first = call("POST", f"{BASE}/bills/acct-1~2026-10/quotes", {"chain": "solana", "asset": "USDC"})
    _, second = call("POST", f"{BASE}/bills/acct-1~2026-10/quotes", {"chain": "solana", "asset": "USDC"})
    # asked again while the first is ACTIVE with more than 10 minutes to run: the same quote (D285)
    assert second == first
    assert len(first["reference"]) >= 32
    assert f"reference={first['reference']}" in first["payment_uri"]
    assert first["payment_uri"].startswith(f"solana:{MERCHANT_SOL}?amount=100&spl-token=EPjFWdd5")
    assert list(dependencies.settlement().active_references("solana")) == [first["reference"]]


def test_given_the_exchange_disagreeing_then_the_quote_is_refused_naming_both_sources(crypto: SpotPrices) -> None:
    issue()
    crypto.prices["ETH"] = "2530.00"  # 30 / 2500 = 1.2 % above the on-chain feed
    status, body = call("POST", f"{BASE}/bills/acct-1~2026-10/quotes", {"chain": "ethereum", "asset": "ETH"})
    assert status == 503
    assert body["message"] == (
        "ETH price sources disagree: chainlink:ethereum:ETH reads 2500.00 USD, exchange:coinbase reads 2530.00 USD "
        "(1.20 % apart, limit 1 %)"
    )
    crypto.prices["USDC"] = "0.97"
    status, body = call("POST", f"{BASE}/bills/acct-1~2026-10/quotes", {"chain": "ethereum", "asset": "USDC"})
    assert (status, body["code"]) == (503, "unavailable")
    assert "USDC is off its peg" in body["message"]


@pytest.mark.parametrize(
    ("path", "body", "role", "account", "status", "fragment"),
    [
        (
            "bills/acct-1~2026-10/quotes",
            {"chain": "ethereum", "asset": "ETH"},
            "member",
            "acct-1",
            403,
            "not allowed to manage",
        ),
        ("bills/acct-1~2026-10/quotes", {"chain": "ethereum", "asset": "ETH"}, "admin", "acct-2", 403, "not allowed"),
        (
            "bills/acct-1~2026-10/quotes",
            {"chain": "polygon", "asset": "ETH"},
            "admin",
            "acct-1",
            400,
            "chain must be one of",
        ),
        (
            "bills/acct-1~2026-10/quotes",
            {"chain": "ethereum", "asset": "SOL"},
            "admin",
            "acct-1",
            400,
            "SOL is not accepted",
        ),
        (
            "bills/acct-1~2026-10/quotes",
            {"chain": "ethereum", "asset": "DOGE"},
            "admin",
            "acct-1",
            400,
            "asset must be one of",
        ),
        ("bills/acct-1~2026-10/quotes", {"chain": "ethereum"}, "admin", "acct-1", 400, "asset: Field required"),
        (
            "bills/acct-1~2026-01/quotes",
            {"chain": "ethereum", "asset": "ETH"},
            "admin",
            "acct-1",
            404,
            "no crypto bill",
        ),
        (
            "bills/acct-1~2026-10/transactions",
            {"chain": "ethereum", "tx_id": "0xnone"},
            "admin",
            "acct-1",
            422,
            "not known",
        ),
        (
            "bills/acct-1~2026-10/transactions",
            ["x"],
            "admin",
            "acct-1",
            400,
            "body: Input should be a valid dictionary",
        ),
    ],
)
def test_bad_requests_get_a_4xx_naming_the_problem(
    crypto: SpotPrices, path: str, body: object, role: str, account: str, status: int, fragment: str
) -> None:
    issue()
    got, answer = call("POST", f"{BASE}/{path}", body, role=role, account=account)
    assert got == status
    assert fragment in answer["message"]
    assert dependencies.store().quotes("acct-1/2026-10") == []


def test_given_a_submitted_transaction_then_recorded_seen_at_once_and_shown_in_the_history(crypto: SpotPrices) -> None:
    issue()
    issue("acct-1/2026-09")
    call("POST", f"{BASE}/bills/acct-1~2026-10/quotes", {"chain": "ethereum", "asset": "USDC"})
    call("POST", f"{BASE}/bills/acct-1~2026-09/quotes", {"chain": "ethereum", "asset": "USDC"})
    now = datetime.now(UTC)
    crypto_core_inspector.TRANSACTIONS["0xfeed"] = [
        transfer("0xfeed", "USDC", 100_000_000, now, sender="0x9999999999999999999999999999999999999999")
    ]
    status, body = call("POST", f"{BASE}/bills/acct-1~2026-10/transactions", {"chain": "ethereum", "tx_id": "0xfeed"})
    assert status == 202
    assert body["payments"] == [
        {
            "payment_id": "ethereum:0xfeed:0",
            "status": "SEEN",
            "asset": "USDC",
            "amount": "100",
            "amount_usd": "100.00",
            "late": False,
            "manual_review": False,
        }
    ]
    status, refused = call(
        "POST", f"{BASE}/bills/acct-1~2026-09/transactions", {"chain": "ethereum", "tx_id": "0xfeed"}
    )
    assert (status, refused["code"]) == (409, "conflict")

    _, history = call("GET", f"{BASE}/history", role="member")
    [payment] = history["payments"]
    assert (payment["tx_url"], payment["matched_by"], payment["invoice_id"]) == (
        "https://etherscan.io/tx/0xfeed",
        "fast_path",
        "acct-1/2026-10",
    )
    bills = {b["invoice_id"]: b["status"] for b in history["bills"]}
    assert bills == {"acct-1/2026-10": "PROCESSING", "acct-1/2026-09": "OPEN"}
    statuses = {q["invoice_id"]: q["status"] for q in history["quotes"]}
    assert statuses == {"acct-1/2026-10": "DETECTED", "acct-1/2026-09": "ACTIVE"}


def test_given_a_submitted_payment_re_mined_at_another_log_index_then_the_history_shows_it_once_as_it_is_now(
    crypto: SpotPrices,
) -> None:
    """A 100 USDC transfer submitted for the bill (log index 0, block 100), then its block reorged away and the
    transaction re-mined at log index 1 of block 101 (another transaction's log before it): the payment moved to its
    new id (D155), and the old id is kept ORPHANED, pointing at it. The customer's history shows one payment, where
    it is now: the new id, SEEN in block 101 - before, the old id was listed beside it as an ORPHANED payment."""
    issue()
    call("POST", f"{BASE}/bills/acct-1~2026-10/quotes", {"chain": "ethereum", "asset": "USDC"})
    credit = transfer(
        "0xmove", "USDC", 100_000_000, datetime.now(UTC), sender="0x9999999999999999999999999999999999999999"
    )
    crypto_core_inspector.TRANSACTIONS["0xmove"] = [credit]
    status, _ = call("POST", f"{BASE}/bills/acct-1~2026-10/transactions", {"chain": "ethereum", "tx_id": "0xmove"})
    assert status == 202

    dependencies.settlement().record_seen(replace(credit, index=1, block_number=101, block_hash="0xblock-b"))

    _, history = call("GET", f"{BASE}/history", role="member")
    shown = [(p["payment_id"], p["status"], p["block_number"], p["amount_usd"]) for p in history["payments"]]
    assert shown == [("ethereum:0xmove:1", "SEEN", 101, "100.00")]
    assert {b["invoice_id"]: b["status"] for b in history["bills"]} == {"acct-1/2026-10": "PROCESSING"}


def test_given_a_bill_holding_the_most_payment_lines_when_a_transaction_is_submitted_then_409_and_nothing_written(
    crypto: SpotPrices, stack: Stack
) -> None:
    """A bill that already holds 500 payment lines (the most a bill takes, D177; here orphaned ones) cannot
    take the submitted 100 USDC: 409 naming the lines, and the payment is not written (the watcher will keep it for an
    operator) - before, the cap did not exist and the route answered 202."""
    from kilo_crypto_watch import items  # noqa: PLC0415
    from kilo_crypto_watch.model import BillPayment, PaymentStatus  # noqa: PLC0415

    issue()
    store = dependencies.store()
    issued = store.bill("acct-1/2026-10")
    assert issued is not None
    lines = tuple(
        BillPayment(f"ethereum:0xold{i}:0", f"0xold{i}", "USDC", Decimal("0.00"), PaymentStatus.ORPHANED)
        for i in range(500)
    )
    table = stack.template.physical_name("CryptoTable")
    stack.clients["dynamodb"].put_item(TableName=table, Item=items.bill_to_item(replace(issued, payments=lines)))
    call("POST", f"{BASE}/bills/acct-1~2026-10/quotes", {"chain": "ethereum", "asset": "USDC"})
    credit = transfer(
        "0xfull", "USDC", 100_000_000, datetime.now(UTC), sender="0x9999999999999999999999999999999999999999"
    )
    crypto_core_inspector.TRANSACTIONS["0xfull"] = [credit]

    status, body = call("POST", f"{BASE}/bills/acct-1~2026-10/transactions", {"chain": "ethereum", "tx_id": "0xfull"})

    assert (status, body["code"]) == (409, "conflict")
    assert "500 payment lines" in body["message"]
    assert store.payment("ethereum:0xfull:0") is None


def test_given_a_nonce_and_a_signed_siwe_then_the_wallet_is_linked_and_the_nonce_cannot_be_replayed(
    crypto: SpotPrices,
) -> None:
    status, issued = call("POST", f"{BASE}/wallets/nonce")
    assert status == 201
    assert (issued["domain"], issued["uri"]) == ("app.kilo.example", "https://app.kilo.example")
    expires = datetime.fromisoformat(issued["expires_at"])
    assert timedelta(minutes=9) < expires - datetime.now(UTC) <= timedelta(minutes=10)
    issued_at = datetime.fromisoformat(issued["issued_at"])  # the server's clock, for the message's Issued At
    assert expires - issued_at == timedelta(minutes=10)
    wallet = Account.from_key("0x" + "33" * 32)
    text = siwe_text(
        "app.kilo.example", wallet.address, "https://app.kilo.example", "1", issued["nonce"], issued["issued_at"]
    )
    signature = wallet.sign_message(encode_defunct(text=text)).signature.hex()
    status, linked = call("POST", f"{BASE}/wallets", {"chain": "ethereum", "message": text, "signature": signature})
    assert (status, linked) == (201, {"chain": "ethereum", "address": wallet.address, "method": "eoa"})
    assert dependencies.store().wallet_owner("evm", wallet.address.lower()) == "acct-1"
    status, replay = call("POST", f"{BASE}/wallets", {"chain": "ethereum", "message": text, "signature": signature})
    assert (status, replay["code"]) == (400, "invalid_request")
    assert "already used" in replay["message"]


@pytest.mark.parametrize(
    ("chain", "tx_id", "fragment"),
    [
        ("ethereum", "0x1234", "not an EVM transaction hash"),
        ("ethereum", "0x" + "zz" * 32, "not an EVM transaction hash"),
        ("solana", "not-base58-0OIl", "is not a Solana signature"),
        ("solana", "1111", "is not a Solana signature"),
    ],
)
def test_given_a_malformed_transaction_id_then_400_naming_it_with_the_real_inspectors(
    crypto: SpotPrices, monkeypatch: pytest.MonkeyPatch, chain: str, tx_id: str, fragment: str
) -> None:
    """The watchers' own fast-path inspectors (no RPC is reached: the id is refused before any call; the RPC URL is
    a closed port) - a malformed id is bad input (400), not a transaction "not known yet" (422)."""
    monkeypatch.setattr(
        dependencies,
        "INSPECTOR_MODULES",
        {"evm": "kilo_crypto_watch.evm_handler", "solana": "kilo_crypto_watch.solana_handler"},
    )
    issue()
    got, answer = call("POST", f"{BASE}/bills/acct-1~2026-10/transactions", {"chain": chain, "tx_id": tx_id})
    assert (got, answer["code"]) == (400, "invalid_request")
    assert "tx_id" in answer["message"]
    assert fragment in answer["message"]
    assert dependencies.store().account_history("acct-1")[2] == []


def raw_call(method: str, path: str, body: object) -> tuple[int, dict[str, str], Any]:
    event = http_api_event(method, path, json.dumps(body).encode(), {"content-type": "application/json"})
    event["requestContext"]["authorizer"] = {
        "jwt": {"claims": {"sub": "user-1", "kilo_account": "acct-1", "kilo_role": "admin"}, "scopes": None}
    }
    response = api_handler.lambda_handler(event, LambdaContext())
    return response["statusCode"], response["headers"], json.loads(response["body"])


def test_given_invoice_keys_then_the_bill_is_found_by_its_key_and_answers_name_the_real_invoice_id(
    crypto: SpotPrices,
) -> None:
    issue("acct-1/2026-10/early-1")
    status, quote = call("POST", f"{BASE}/bills/acct-1~2026-10~early-1/quotes", {"chain": "ethereum", "asset": "USDC"})
    assert (status, quote["invoice_id"]) == (201, "acct-1/2026-10/early-1")
    crypto_core_inspector.TRANSACTIONS["0xbeef"] = [transfer("0xbeef", "USDC", 100_000_000, datetime.now(UTC))]
    status, body = call(
        "POST", f"{BASE}/bills/acct-1~2026-10~early-1/transactions", {"chain": "ethereum", "tx_id": "0xbeef"}
    )
    assert (status, body["invoice_id"], [p["status"] for p in body["payments"]]) == (
        202,
        "acct-1/2026-10/early-1",
        ["SEEN"],
    )


@pytest.mark.parametrize(
    "key",
    [
        "acct-1%2F2026-10",  # percent-encoded: API Gateway would have decoded it; here it reaches the function raw
        "acct-1-2026-10",
        "acct-1~2026-1",
        "acct-1~2026-00",
        "acct-1~2026-10~",
        "~2026-10",
        "acct-1~2026-10~early-1~x",
    ],
)
def test_given_a_malformed_invoice_key_then_400_naming_the_path_parameter_and_nothing_is_read(
    crypto: SpotPrices, key: str
) -> None:
    issue()
    status, body = call("POST", f"{BASE}/bills/{key}/quotes", {"chain": "ethereum", "asset": "USDC"})
    assert status == 400
    assert (body["code"], body["field"]) == ("invalid_request", "path.invoice")
    assert body["message"] == (
        "invoice must be an invoice id with each '/' written '~' (<account>~<YYYY-MM>[~<part>], e.g. acct-1~2026-11), "
        f"not {key!r}"
    )
    assert dependencies.store().quotes("acct-1/2026-10") == []


def test_given_crypto_refusals_then_each_has_the_one_error_shape(crypto: SpotPrices) -> None:
    issue()
    status, _, body = raw_call("POST", f"{BASE}/bills/acct-2~2026-10/quotes", {"chain": "ethereum", "asset": "USDC"})
    assert (status, body) == (
        404,
        {"code": "not_found", "message": "no crypto bill 'acct-2/2026-10' for this account", "field": "path.invoice"},
    )
    status, _, body = raw_call("POST", f"{BASE}/bills/acct-1~2026-10/quotes", {"chain": "ethereum"})
    assert (status, body) == (  # Powertools' validation of the body, mapped by the layer
        400,
        {"code": "invalid_request", "message": "asset: Field required", "field": "asset", "fields": ["asset"]},
    )
    status, _, body = raw_call(
        "POST", f"{BASE}/bills/acct-1~2026-10/transactions", {"chain": "ethereum", "tx_id": "0x1"}
    )
    assert (status, body) == (
        422,
        {
            "code": "unprocessable",
            "message": "transaction 0x1 is not known on ethereum (yet): retry shortly",
            "field": "tx_id",
        },
    )
    crypto.prices["USDC"] = "0.97"
    status, headers, body = raw_call(
        "POST", f"{BASE}/bills/acct-1~2026-10/quotes", {"chain": "ethereum", "asset": "USDC"}
    )
    assert (status, headers["Retry-After"], body["code"], body["field"]) == (503, "60", "unavailable", None)
    assert set(body) == {"code", "message", "field"}


def test_given_each_crypto_route_then_its_answer_is_exactly_the_documented_model(crypto: SpotPrices) -> None:
    """The OpenAPI document describes these answers with ``api_schemas`` (extra fields forbidden): a field added to
    or missing from an answer fails here."""
    from kilo_crypto_watch import api_schemas  # noqa: PLC0415

    issue()
    _, quote = call("POST", f"{BASE}/bills/acct-1~2026-10/quotes", {"chain": "ethereum", "asset": "USDC"})
    assert api_schemas.CryptoQuoteOut.model_validate(quote).invoice_id == "acct-1/2026-10"
    _, issued = call("POST", f"{BASE}/wallets/nonce")
    api_schemas.NonceOut.model_validate(issued)
    wallet = Account.from_key("0x" + "44" * 32)
    text = siwe_text(
        "app.kilo.example", wallet.address, "https://app.kilo.example", "1", issued["nonce"], issued["issued_at"]
    )
    signature = wallet.sign_message(encode_defunct(text=text)).signature.hex()
    _, linked = call("POST", f"{BASE}/wallets", {"chain": "ethereum", "message": text, "signature": signature})
    assert api_schemas.WalletOut.model_validate(linked).method == "eoa"
    # a part payment from the linked wallet, submitted by its tx hash
    part = transfer("0xcafe", "USDC", 40_000_000, datetime.now(UTC), sender=wallet.address)
    crypto_core_inspector.TRANSACTIONS["0xcafe"] = [part]
    _, submitted = call("POST", f"{BASE}/bills/acct-1~2026-10/transactions", {"chain": "ethereum", "tx_id": "0xcafe"})
    assert api_schemas.TransactionOut.model_validate(submitted).payments[0].amount_usd == "40.00"
    _, found = call("GET", f"{BASE}/history", role="member")
    history = api_schemas.CryptoHistoryOut.model_validate(found)
    assert ([b.status.value for b in history.bills], len(history.quotes), len(history.payments)) == (["OPEN"], 1, 1)


def test_given_the_rpc_secret_missing_when_a_quote_is_asked_then_503_without_the_secret_name(
    crypto: SpotPrices, stack: Stack
) -> None:
    issue()
    name = stack.template.function_environment("CryptoApiFunction")["RPC_SECRET_NAME"]
    stack.clients["secretsmanager"].delete_secret(SecretId=name, ForceDeleteWithoutRecovery=True)
    dependencies.clear_caches()
    status, body = call("POST", f"{BASE}/bills/acct-1~2026-10/quotes", {"chain": "ethereum", "asset": "USDC"})
    assert status == 503
    assert (body["code"], body["message"]) == ("unavailable", "try again shortly")
    assert name not in json.dumps(body)


def test_given_someone_elses_transaction_when_claimed_for_a_bill_then_409_and_it_stays_unclaimed(
    crypto: SpotPrices,
) -> None:
    """acct-1's admin submits a public transfer of 150 USDC from a wallet not linked to acct-1, with no reference: it
    is not the bill's quote amount (100 USDC, tolerance on USDC a few cents), so nothing ties it to acct-1's bill.
    Submitted again with the quote's exact amount (a payment from an exchange), it is accepted."""
    issue()
    call("POST", f"{BASE}/bills/acct-1~2026-10/quotes", {"chain": "ethereum", "asset": "USDC"})
    stranger = "0x" + "99" * 20
    crypto_core_inspector.TRANSACTIONS["0xother"] = [
        transfer("0xother", "USDC", 150_000_000, datetime.now(UTC), sender=stranger)
    ]
    status, body = call("POST", f"{BASE}/bills/acct-1~2026-10/transactions", {"chain": "ethereum", "tx_id": "0xother"})
    assert (status, body["code"]) == (409, "conflict")
    assert "is not tied to bill acct-1/2026-10" in body["message"]
    assert dependencies.store().payment("ethereum:0xother:0") is None  # not recorded for the bill: left to the watcher
    crypto_core_inspector.TRANSACTIONS["0xexact"] = [
        transfer("0xexact", "USDC", 100_000_000, datetime.now(UTC), sender=stranger)
    ]
    status, body = call("POST", f"{BASE}/bills/acct-1~2026-10/transactions", {"chain": "ethereum", "tx_id": "0xexact"})
    assert status == 202
    assert body["payments"][0]["amount_usd"] == "100.00"


def test_given_a_payment_from_another_accounts_linked_wallet_when_claimed_then_409_and_left_to_the_watcher(
    crypto: SpotPrices,
) -> None:
    """acct-1's admin submits a transfer of exactly its quote's 100 USDC, sent from a wallet linked to acct-2: it is
    acct-2's payment (D112), so the claim is refused and nothing is recorded."""
    issue()
    call("POST", f"{BASE}/bills/acct-1~2026-10/quotes", {"chain": "ethereum", "asset": "USDC"})
    victim = "0x" + "77" * 20
    dependencies.store().link_wallet("evm", victim, "acct-2", "ethereum", datetime.now(UTC))
    crypto_core_inspector.TRANSACTIONS["0xtheirs"] = [
        transfer("0xtheirs", "USDC", 100_000_000, datetime.now(UTC), sender=victim)
    ]
    status, body = call("POST", f"{BASE}/bills/acct-1~2026-10/transactions", {"chain": "ethereum", "tx_id": "0xtheirs"})
    assert (status, body["code"], body["field"]) == (409, "conflict", None)
    assert "sent from a wallet linked to another account" in body["message"]
    assert dependencies.store().payment("ethereum:0xtheirs:0") is None


@pytest.fixture
def node_down(crypto: SpotPrices, monkeypatch: pytest.MonkeyPatch) -> Iterator[int]:
    """The crypto routes with the real EVM and Solana inspectors, each chain's RPC URL on a closed port: a socket of
    ours holds the port (bound, never listening), so connections are refused and nobody else can take it."""
    import socket  # noqa: PLC0415

    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as held:
        held.bind(("127.0.0.1", 0))
        port = held.getsockname()[1]
        url = f"http://127.0.0.1:{port}/v2/provider-key-123"
        monkeypatch.setenv(
            "CRYPTO_CHAINS",
            json.dumps(
                [
                    {"key": "ethereum", "merchant_address": MERCHANT_EVM, "rpc_url": url},
                    {"key": "solana", "merchant_address": MERCHANT_SOL, "rpc_url": url},
                ]
            ),
        )
        monkeypatch.setattr(
            dependencies,
            "INSPECTOR_MODULES",
            {"evm": "kilo_crypto_watch.evm_handler", "solana": "kilo_crypto_watch.solana_handler"},
        )
        from kilo_crypto_watch import settings  # noqa: PLC0415

        settings.settings.cache_clear()
        dependencies.clear_caches()
        yield port
    settings.settings.cache_clear()


@pytest.mark.parametrize(
    ("chain", "tx_id"),
    [
        ("ethereum", "0x" + "ab" * 32),
        ("solana", "5VERv8NMvzbJMEkV8xnrLkEaWRtSz9CosKDYjCJjBRnbJLgp8uirBgmQpjKhoR4tjF3ZpRzrFmBV6UjKdiSZkQUW"),
    ],
)
def test_given_the_chains_node_down_when_a_transaction_is_submitted_then_503_retry_after_without_the_url(
    node_down: int, chain: str, tx_id: str, caplog: pytest.LogCaptureFixture
) -> None:
    issue()
    caplog.clear()
    status, headers, body = raw_call(
        "POST", f"{BASE}/bills/acct-1~2026-10/transactions", {"chain": chain, "tx_id": tx_id}
    )
    assert (status, headers["Retry-After"], body["code"], body["field"]) == (503, "5", "unavailable", None)
    assert body["message"] == (
        f"the {chain} node did not answer: retry shortly (the watcher will still find the payment on its own)"
    )
    [warning] = [r for r in caplog.records if r.getMessage() == "fast path: chain node unavailable"]
    assert (warning.__dict__["chain"], warning.__dict__["error"]) == (
        chain,
        "RpcUnavailableError" if chain == "ethereum" else "SolanaRpcError",
    )
    logged = " ".join(str(record.__dict__) for record in caplog.records)
    for secret in (str(node_down), "provider-key-123"):
        assert secret not in json.dumps(body)
        assert secret not in logged
    assert dependencies.store().payment(f"{chain}:{tx_id}:0") is None
    _, history = call("GET", f"{BASE}/history", role="member")
    assert history["payments"] == []


@pytest.fixture
def contract_wallet(crypto: SpotPrices, chain: Chain, monkeypatch: pytest.MonkeyPatch) -> Iterator[str]:
    """ERC-1271 sign-in for real: the crypto routes verify contract signatures (web3) on anvil for "ethereum", where
    ``TestContractWallet`` is deployed with OWNER_KEY's address as its owner; "base" is configured too, its RPC on a
    closed port (a socket of ours holds it, never listening): the same address has no contract that answers there."""
    import socket  # noqa: PLC0415

    from kilo_crypto_watch import settings  # noqa: PLC0415

    address = deploy(chain.w3, "TestContractWallet", Account.from_key(OWNER_KEY).address)
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as held:
        held.bind(("127.0.0.1", 0))
        closed = f"http://127.0.0.1:{held.getsockname()[1]}"
        chains = [
            {"key": "ethereum", "merchant_address": MERCHANT_EVM, "rpc_url": chain.node.url,
             "chain_id": chain.node.chain_id},
            {"key": "base", "merchant_address": MERCHANT_EVM, "rpc_url": closed, "chain_id": 8453},
        ]  # fmt: skip
        monkeypatch.setenv("CRYPTO_CHAINS", json.dumps(chains))
        monkeypatch.setenv("ERC1271_ENABLED", "true")
        settings.settings.cache_clear()
        dependencies.clear_caches()
        yield address
    settings.settings.cache_clear()


OWNER_KEY = "0x" + "55" * 32


def _signed_in(address: str, chain_id: int) -> tuple[str, str]:
    _, issued = call("POST", f"{BASE}/wallets/nonce")
    text = siwe_text(
        "app.kilo.example", address, "https://app.kilo.example", str(chain_id), issued["nonce"], issued["issued_at"]
    )
    return text, Account.from_key(OWNER_KEY).sign_message(encode_defunct(text=text)).signature.hex()


def test_given_a_contract_wallet_signed_in_on_one_chain_then_it_is_linked_there_only(
    contract_wallet: str, chain: Chain
) -> None:
    text, signature = _signed_in(contract_wallet, chain.node.chain_id)
    status, linked = call("POST", f"{BASE}/wallets", {"chain": "ethereum", "message": text, "signature": signature})
    assert (status, linked) == (201, {"chain": "ethereum", "address": contract_wallet, "method": "erc1271"})
    store = dependencies.store()
    assert store.wallet_owner("evm", contract_wallet, "ethereum") == "acct-1"
    assert store.wallet_owner("evm", contract_wallet, "base") is None  # not verified there
    text, signature = _signed_in(contract_wallet, 8453)
    status, refused = call("POST", f"{BASE}/wallets", {"chain": "base", "message": text, "signature": signature})
    assert (status, refused["code"]) == (400, "invalid_request")
    assert "signature was not made by the message's address" in refused["message"]
    assert store.wallet_owner("evm", contract_wallet, "base") is None


def test_given_a_transaction_with_a_credit_that_is_not_the_bills_then_409_and_none_of_its_credits_is_recorded(
    crypto: SpotPrices,
) -> None:
    """One transaction, two USDC credits to the merchant: 100 USDC (the quote's amount, from an unlinked wallet) and
    5 USDC from a wallet linked to acct-2. The second is acct-2's: the claim is refused whole, the first unrecorded
    too. A transaction whose two credits both match the open bill's quote is taken whole (the first credit covering
    the bill does not shut out the second of the same transaction)."""
    issue()
    call("POST", f"{BASE}/bills/acct-1~2026-10/quotes", {"chain": "ethereum", "asset": "USDC"})
    stranger, linked = "0x" + "88" * 20, "0x" + "77" * 20
    dependencies.store().link_wallet("evm", linked, "acct-2", "ethereum", datetime.now(UTC))
    now = datetime.now(UTC)
    crypto_core_inspector.TRANSACTIONS["0xmixed"] = [
        transfer("0xmixed", "USDC", 100_000_000, now, sender=stranger, index=0),
        transfer("0xmixed", "USDC", 5_000_000, now, sender=linked, index=1),
    ]
    status, body = call("POST", f"{BASE}/bills/acct-1~2026-10/transactions", {"chain": "ethereum", "tx_id": "0xmixed"})
    assert (status, body["code"]) == (409, "conflict")
    assert "sent from a wallet linked to another account" in body["message"]
    assert dependencies.store().payment("ethereum:0xmixed:0") is None
    assert dependencies.store().payment("ethereum:0xmixed:1") is None
    _, history = call("GET", f"{BASE}/history", role="member")
    assert (history["bills"][0]["status"], history["payments"]) == ("OPEN", [])

    crypto_core_inspector.TRANSACTIONS["0xtwice"] = [
        transfer("0xtwice", "USDC", 100_000_000, now, sender=stranger, index=0),
        transfer("0xtwice", "USDC", 100_000_000, now, sender=stranger, index=1),
    ]
    status, body = call("POST", f"{BASE}/bills/acct-1~2026-10/transactions", {"chain": "ethereum", "tx_id": "0xtwice"})
    assert status == 202
    assert [p["amount_usd"] for p in body["payments"]] == ["100.00", "100.00"]


# --- every admin write checks the caller's stored role, not only the token's (D208, D294) ---------------------

ADMIN_WRITES = [
    ("bills/acct-1~2026-10/quotes", {"chain": "ethereum", "asset": "ETH"}),
    ("bills/acct-1~2026-10/transactions", {"chain": "ethereum", "tx_id": "0x" + "ab" * 32}),
    ("wallets/nonce", None),
    ("wallets", {"chain": "ethereum", "message": "any", "signature": "0x00"}),
]


def remove_member(stack: Stack, account: str, user: str) -> None:
    stack.clients["dynamodb"].delete_item(
        TableName=stack.template.physical_name("MembersTable"),
        Key={"pk": {"S": f"ACCOUNT#{account}"}, "sk": {"S": f"MEMBER#{user}"}},
    )


@pytest.mark.parametrize(("path", "body"), ADMIN_WRITES, ids=["quote", "transaction", "nonce", "wallet"])
def test_given_an_admin_removed_while_the_token_lives_when_an_admin_write_is_asked_then_403_and_nothing_written(
    crypto: SpotPrices, stack: Stack, path: str, body: object
) -> None:
    """The token still says admin of acct-1; the members table no longer holds user-1: refused before anything is
    read or written (no quote, no payment, no nonce, no wallet)."""
    issue()
    remove_member(stack, "acct-1", "user-1")
    status, answer = call("POST", f"{BASE}/{path}", body)
    assert (status, answer) == (
        403,
        {
            "code": "forbidden",
            "message": "not allowed to manage account 'acct-1': the token's role is no longer stored (sign in again)",
            "field": None,
        },
    )
    assert dependencies.store().quotes("acct-1/2026-10") == []
    assert (
        stack.clients["dynamodb"].scan(TableName=stack.template.physical_name("CryptoTable"))["Count"] == 1
    )  # the bill


def test_given_an_admin_demoted_to_member_while_the_token_lives_when_a_wallet_nonce_is_asked_then_403(
    crypto: SpotPrices, stack: Stack
) -> None:
    store_members(stack, "acct-1", {"user-1": "member"})
    status, answer = call("POST", f"{BASE}/wallets/nonce")
    assert (status, answer["code"]) == (403, "forbidden")
    store_members(stack, "acct-1", {"user-1": "admin"})
    assert call("POST", f"{BASE}/wallets/nonce")[0] == 201


def test_given_a_member_removed_while_the_token_lives_then_the_history_still_reads(
    crypto: SpotPrices, stack: Stack
) -> None:
    """Reads trust the token (D208 covers writes): a removed member's history read answers until the token ends."""
    remove_member(stack, "acct-1", "user-1")
    assert call("GET", f"{BASE}/history", role="member")[0] == 200


def test_given_only_an_open_invitation_as_admin_when_a_wallet_nonce_is_asked_then_403(
    crypto: SpotPrices, stack: Stack
) -> None:
    """An invitation grants nothing until accepted (D200): a token naming the role it offers is refused too."""
    from kilo_account_api import items  # noqa: PLC0415
    from kilo_account_api.model import Member, MemberStatus  # noqa: PLC0415
    from kilo_billing.auth import Role  # noqa: PLC0415

    now = datetime.now(UTC)
    invited = Member("acct-1", "user-1", "", Role.ADMIN, now, MemberStatus.INVITED, now + timedelta(days=7))
    table = stack.template.physical_name("MembersTable")
    stack.clients["dynamodb"].put_item(TableName=table, Item=items.member_to_item(invited))
    status, answer = call("POST", f"{BASE}/wallets/nonce")
    assert (status, answer["code"]) == (403, "forbidden")


def test_given_a_submitted_solana_payment_into_a_side_token_account_then_409_and_kept_unattributed_for_an_operator(
    crypto: SpotPrices, monkeypatch: pytest.MonkeyPatch
) -> None:
    """D341. acct-1's admin submits a Solana transaction that sent exactly the bill's 100 USDC quote
    (100,000,000 units) with its reference - into a token account of our wallet that is not its ATA: the inspector
    reports it stray. Before: the claim was taken through the reference like any payment of the quote. Now the claim
    is refused (409, nothing pays the bill) but the credit is recorded UNATTRIBUTED, so the operator sees the
    customer's 100 USDC and can assign it; the bill stays OPEN."""
    monkeypatch.setattr(
        dependencies,
        "INSPECTOR_MODULES",
        {"evm": "tests.crypto_core_inspector", "solana": "tests.crypto_core_inspector"},
    )
    dependencies.clear_caches()
    issue()
    status, made = call("POST", f"{BASE}/bills/acct-1~2026-10/quotes", {"chain": "solana", "asset": "USDC"})
    assert status == 201
    assert made["atomic_amount"] == "100000000"  # $100.00 at $1.00, 6 decimals
    side = replace(
        transfer("sig-side", "USDC", 100_000_000, datetime.now(UTC), sender="Payer111", chain="solana"),
        references=(made["reference"],),
        stray=True,
    )
    crypto_core_inspector.TRANSACTIONS["sig-side"] = [side]

    status, body = call("POST", f"{BASE}/bills/acct-1~2026-10/transactions", {"chain": "solana", "tx_id": "sig-side"})

    assert (status, body["code"]) == (409, "conflict")
    assert "not our payment address" in body["message"]
    kept = dependencies.store().payment("solana:sig-side:0")
    assert kept is not None
    assert (kept.status.value, kept.invoice_id, kept.transfer.stray) == ("SEEN", None, True)
    assert [p.payment_id for p in dependencies.store().unattributed()] == ["solana:sig-side:0"]
    _, history = call("GET", f"{BASE}/history", role="member")
    assert {b["invoice_id"]: b["status"] for b in history["bills"]} == {"acct-1/2026-10": "OPEN"}
