"""The crypto pay flow in headless Chromium, end to end on the local stack with its chains (``LocalStack(crypto=True)``:
anvil with the test USDC and Chainlink-compatible feeds, the exchange stand-in): a Team account billed in crypto has
its previous month closed by the invoice functions (the hourly starter invoked with its scheduled time, the close
worker from its queue), which opens the crypto bill. The person signs in to the dashboard, links the injected wallet
(an EIP-1193 provider announced by EIP-6963 whose requests Python answers: anvil's second development key;
personal_sign through eth_account, a SIWE message built from the nonce answer's domain, URI and times), asks a USDC
quote and pays it: the wallet signs the EIP-681 transfer and sends it to anvil, the page submits the hash (the fast
path). Then finality (blocks mined past anvil's ``finalized`` tag) and the watchers' scheduled runs; the page, asked
again, shows the bill PAID and the invoice paid, and the billing page lists the invoice paid.

Hand-worked: a Team account signed up on the 1st of the closed month with no usage owes that month's fee ($29.00,
not billed in advance at sign-up) and the next month's fee in advance ($29.00): $58.00. USDC is locked at exactly 1
(within its band), so the quote asks 58 USDC = 58,000,000 units (6 decimals), and the merchant's USDC balance grows
by exactly that.
"""

from __future__ import annotations

import re
import time
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from decimal import Decimal
from typing import Any

import pytest
from eth_account import Account
from playwright.sync_api import expect

from kilo_dev.webserve import DashboardServer, serve_for_stack
from tests.browser.conftest import month_start, month_travel
from tests.browser.wallets import InjectedWallets

pytestmark = [pytest.mark.browser, pytest.mark.e2e, pytest.mark.xdist_group("crypto-pay")]
HOUR = 3600
ACCOUNT = "acct-crypto-pay-01"
# anvil's / Hardhat's second development key (a public test fixture): the local chains mint it test USDC
CUSTOMER_KEY = "0x59c6995e998f97a5a0044966f0945389dc9e86dae88c7a8412f4603b6b78690d"
TOTAL = Decimal("58.00")
USDC_UNITS = 58_000_000
BALANCE_OF = "0x70a08231"  # balanceOf(address)


@dataclass
class World:
    stack: Any
    site: DashboardServer
    sign_in: str  # the owner's sign-in link
    closed: str  # the closed month, YYYY-MM
    invoice_id: str
    number: str


@pytest.fixture(scope="module")
def world(tmp_path_factory: pytest.TempPathFactory) -> Iterator[World]:
    with month_travel(hours=8):  # the close needs the month's 6-hour grace behind it
        yield from _world(tmp_path_factory)


def _world(tmp_path_factory: pytest.TempPathFactory) -> Iterator[World]:
    from kilo_dev.anvil import CHAIN_ID  # noqa: PLC0415
    from kilo_dev.crypto_demo import CryptoBill, wait_for_bills  # noqa: PLC0415
    from kilo_dev.demo import closed_invoices, wait_for_close, write_request  # noqa: PLC0415
    from kilo_dev.localstack import LocalSettings, LocalStack  # noqa: PLC0415
    from tests.e2e.test_local_crypto import _clear  # noqa: PLC0415

    settings = LocalSettings.from_env()
    settings.parameters = {"LogLevel": "ERROR"}
    log_path = tmp_path_factory.mktemp("crypto-pay") / "local-stack.log"
    stack = LocalStack(settings, log=lambda _: None, log_path=log_path, crypto=True)
    site = None
    _clear()
    try:
        stack.start()
        current = month_start(time.time())
        closed_start = month_start((current - timedelta(days=1)).timestamp())
        closed = closed_start.strftime("%Y-%m")
        write_request(stack, ACCOUNT, (int(closed_start.timestamp()), "team", "team"), "crypto")
        stamp = datetime.now(UTC).strftime("%Y-%m-%dT%H:%M:%SZ")
        stack.functions["InvoiceStartFunction"].invoke({"scheduled_time": stamp})  # the hourly schedule's run
        wait_for_close(stack, [ACCOUNT], closed)
        invoice = closed_invoices(stack, [ACCOUNT], closed)[ACCOUNT]
        assert invoice is not None, f"the close did not issue {ACCOUNT}'s invoice for {closed}"
        wait_for_bills(stack, [CryptoBill(ACCOUNT, invoice.invoice_id, invoice.total)])
        site, links = serve_for_stack(stack, [ACCOUNT])  # as `./dev demo --keep-running` serves it
        assert site.config.chains == {"evm": [{"key": "ethereum", "chainId": CHAIN_ID}]}  # anvil's chain id
        yield World(stack, site, links[ACCOUNT], closed, invoice.invoice_id, invoice.number)
    finally:
        if site is not None:
            site.stop()
        anvil = stack.chains.anvil if stack.chains is not None else None
        stack.stop()
        _clear()
        if anvil is not None:
            assert anvil.process.poll() is not None  # anvil is gone, stopped by its PID


def usdc_balance(chains: Any, holder: str) -> int:
    from kilo_dev.anvil import rpc  # noqa: PLC0415

    data = BALANCE_OF + holder.lower().removeprefix("0x").rjust(64, "0")
    return int(rpc(chains.anvil.url, "eth_call", [{"to": chains.usdc, "data": data}, "latest"]), 16)


def settle(world: World) -> None:
    """Finality for the payment, then the watchers' scheduled runs until the bill is PAID and our invoice paid."""
    from kilo_dev.crypto_demo import crypto_store, run_watchers  # noqa: PLC0415
    from kilo_dev.demo import closed_invoices  # noqa: PLC0415

    stack = world.stack
    store = crypto_store(stack)
    run_watchers(stack)  # the watcher sees the transfer (the fast path recorded it SEEN already)
    stack.chains.finalize()
    for _ in range(6):
        run_watchers(stack)
        stack.wait_idle(timeout=60, quiet_polls=2)
        bill = store.bill(world.invoice_id)
        invoice = closed_invoices(stack, [ACCOUNT], world.closed)[ACCOUNT]
        if bill is not None and bill.status.value == "PAID" and invoice is not None and invoice.status.value == "paid":
            return
    raise AssertionError(f"not settled: bill {store.bill(world.invoice_id)}")


def test_given_a_closed_crypto_bill_when_paid_in_usdc_from_the_injected_wallet_then_the_page_shows_it_paid(
    world: World, page: Any
) -> None:
    from kilo_dev.crypto_demo import crypto_store  # noqa: PLC0415

    stack, chains = world.stack, world.stack.chains
    assert world.invoice_id == f"{ACCOUNT}/{world.closed}"
    customer = Account.from_key(CUSTOMER_KEY)
    assert customer.address in chains.customers_evm  # a customer the local chains funded with test USDC
    wallets = InjectedWallets(chain_id=31337, account=customer, rpc_url=chains.anvil.url)
    wallets.install(page)
    merchant_before = usdc_balance(chains, chains.merchant_evm)

    page.goto(world.sign_in)
    page.wait_for_url(re.compile(r"#/usage$"))
    page.goto(f"{world.site.url}/#/pay")
    page.get_by_role("heading", name="Pay with crypto", level=1).wait_for()
    expect(page.get_by_label("Bill to pay")).to_contain_text(f"{world.closed} · $58.00 · {world.number}")

    # 2. link the wallet: the API's nonce, a SIWE message naming its domain and URI, signed by the wallet
    page.get_by_role("button", name="Connect Kilo Test Wallet").click()
    expect(page.get_by_text(f"Linked: {customer.address[:6]}…{customer.address[-4:]} on ethereum.")).to_be_visible()
    [message] = wallets.signed_messages
    assert message.startswith(
        f"app.kilo.example wants you to sign in with your Ethereum account:\n{customer.address}\n"
    )
    assert "\nURI: https://app.kilo.example\nVersion: 1\nChain ID: 31337\n" in message
    assert crypto_store(stack).wallet_owner("evm", customer.address.lower()) == ACCOUNT

    # 3. a USDC quote: $58.00 at exactly 1 USDC per dollar
    page.get_by_label("Pay in").select_option("USDC")
    page.get_by_role("button", name="Get a quote").click()
    expect(page.get_by_test_id("quote-amount")).to_have_text("58 USDC")

    # 4. pay: the wallet signs the EIP-681 transfer and sends it to anvil; the page submits the hash
    page.get_by_role("button", name="Pay 58 USDC").click()
    expect(page.get_by_test_id("payment-sent")).to_contain_text("Status: seen")
    [sent] = wallets.sent
    expect(page.get_by_test_id("payment-sent")).to_contain_text(sent)
    [tx] = wallets.transactions
    # transfer(merchant, 58,000,000): selector a9059cbb, the merchant's address and 0x3750280 as 32-byte words
    merchant_word = chains.merchant_evm.lower().removeprefix("0x").rjust(64, "0")
    assert (tx["to"].lower(), tx["data"], tx["value"]) == (
        chains.usdc.lower(),
        "0xa9059cbb" + merchant_word + "3750280".rjust(64, "0"),
        "0x0",
    )
    assert usdc_balance(chains, chains.merchant_evm) - merchant_before == USDC_UNITS

    settle(world)
    page.get_by_role("button", name="Check the bill's status").click()
    expect(page.get_by_test_id("crypto-bill-status")).to_have_text("PAID · settled $58.00 of $58.00")
    expect(page.get_by_test_id("invoice-status")).to_have_text(f"{world.number}: paid")

    page.goto(f"{world.site.url}/#/billing")
    row = page.locator(f'tr[data-invoice="{world.number}"]')
    expect(row.get_by_role("cell").nth(3)).to_have_text("paid")
    page.goto(f"{world.site.url}/#/pay")
    expect(page.get_by_text("No open crypto bill.")).to_be_visible()
    expect(page.get_by_role("list", name="Crypto bills")).to_contain_text("PAID · settled $58.00 of $58.00")
