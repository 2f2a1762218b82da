"""The dashboard's wallet code (web/js/wallet.js) in headless Chromium with injected test wallets that sign for real:
EIP-6963 discovery finds the announced EVM wallet and Phantom; a SIWE message signed through personal_sign recovers
to the wallet's address; a SIWS message verifies against the Solana key; EIP-681 payment URIs become the exact
transactions (ERC-20 transfer calldata, native value in wei, a chain switch first). No API is involved here: the page
is served by the dashboard's server pointed at a closed port."""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import pytest
from eth_account import Account
from eth_account.messages import encode_defunct
from solders.pubkey import Pubkey
from solders.signature import Signature

from kilo_dev.localstack import free_port
from kilo_dev.webserve import DashboardServer, SiteConfig
from tests.browser.wallets import InjectedWallets

pytestmark = pytest.mark.browser

USDC = "0xA0b86991c6218b36c1d19D4a2e9Eb0cE3606eB48"  # USDC on Ethereum
MERCHANT = "0x1111111111111111111111111111111111111111"


@pytest.fixture(scope="module")
def site() -> Iterator[DashboardServer]:
    with DashboardServer(f"http://127.0.0.1:{free_port()}", SiteConfig()) as server:
        yield server


@pytest.fixture
def wallets(page: Any, site: DashboardServer) -> InjectedWallets:
    found = InjectedWallets()
    found.install(page)
    page.goto(site.url + "/#/pricing")
    return found


def run(page: Any, body: str, arg: Any = None) -> Any:
    return page.evaluate(f"async (arg) => {{ const w = await import('/js/wallet.js'); {body} }}", arg)


def test_given_injected_wallets_then_eip6963_discovery_finds_the_evm_wallet_and_phantom(
    page: Any, wallets: InjectedWallets
) -> None:
    found = run(page, "return (await w.discoverWallets()).map((x) => [x.info.name, x.info.rdns, x.kind]);")
    assert found == [
        ["Kilo Test Wallet", "dev.kilo.testwallet", "evm"],
        ["Phantom (Solana)", "app.phantom.solana", "solana"],
    ]


def test_given_a_siwe_message_when_the_wallet_signs_it_then_the_signature_recovers_to_its_address(
    page: Any, wallets: InjectedWallets
) -> None:
    signed = run(
        page,
        """const [wallet] = await w.discoverWallets();
        const { address, chainId } = await w.connectEvm(wallet.provider);
        const message = w.siweMessage({ domain: "billing.example", address, statement: "Link this wallet.",
          uri: "https://billing.example", chainId, nonce: "n0nce123abc", issuedAt: "2026-11-30T12:00:00Z",
          expirationTime: "2026-11-30T12:10:00Z" });
        return { message, signature: await w.personalSign(wallet.provider, address, message) };""",
    )
    assert signed["message"] == (  # EIP-4361's layout, written out by hand
        "billing.example wants you to sign in with your Ethereum account:\n"
        f"{wallets.address}\n\nLink this wallet.\n\nURI: https://billing.example\nVersion: 1\nChain ID: 1\n"
        "Nonce: n0nce123abc\nIssued At: 2026-11-30T12:00:00Z\nExpiration Time: 2026-11-30T12:10:00Z"
    )
    assert wallets.signed_messages == [signed["message"]]
    recovered = Account.recover_message(encode_defunct(text=signed["message"]), signature=signed["signature"])
    assert recovered == wallets.address
    other = Account.recover_message(encode_defunct(text=signed["message"] + " "), signature=signed["signature"])
    assert other != wallets.address  # the check can fail: another message does not recover to the wallet


def test_given_a_siws_message_when_phantom_signs_it_then_the_base58_signature_verifies_with_its_key(
    page: Any, wallets: InjectedWallets
) -> None:
    signed = run(
        page,
        """const wallet = (await w.discoverWallets()).find((x) => x.kind === "solana");
        const { address } = await w.connectSolana(wallet.provider);
        const message = w.siwsMessage({ domain: "billing.example", address, statement: "Link this wallet.",
          uri: "https://billing.example", chainId: "mainnet", nonce: "abc12345", issuedAt: "2026-11-30T12:00:00Z" });
        return { address, message, signature: await w.solanaSign(wallet.provider, message) };""",
    )
    assert signed["address"] == str(wallets.solana.pubkey())
    assert signed["message"].startswith("billing.example wants you to sign in with your Solana account:\n")
    signature = Signature.from_string(signed["signature"])  # base58, as the page sends it
    assert signature.verify(Pubkey.from_string(signed["address"]), signed["message"].encode())
    assert not signature.verify(Pubkey.from_string(signed["address"]), signed["message"].encode() + b"!")


def test_given_an_erc20_payment_uri_then_the_wallet_is_asked_for_the_exact_transfer(
    page: Any, wallets: InjectedWallets
) -> None:
    uri = f"ethereum:{USDC}@1/transfer?address={MERCHANT}&uint256=12345000"
    tx_hash = run(
        page,
        """const [wallet] = await w.discoverWallets();
        const { address } = await w.connectEvm(wallet.provider);
        return await w.sendEvmPayment(wallet.provider, address, w.parseEip681(arg));""",
        uri,
    )
    # transfer(address,uint256): selector a9059cbb, the address and 12,345,000 (0xbc5ea8) as 32-byte words
    calldata = "0xa9059cbb" + "0" * 24 + "11" * 20 + "0" * 58 + "bc5ea8"
    assert wallets.transactions == [
        {"from": wallets.address, "to": USDC, "data": calldata, "value": "0x0", "chainId": 1}
    ]
    assert tx_hash == wallets.sent[0]  # the signed transaction's hash reaches the page


def test_given_a_native_payment_uri_on_another_chain_then_the_wallet_switches_chain_and_sends_the_wei(
    page: Any, wallets: InjectedWallets
) -> None:
    run(
        page,
        """const [wallet] = await w.discoverWallets();
        const { address } = await w.connectEvm(wallet.provider);
        return await w.sendEvmPayment(wallet.provider, address, w.parseEip681(arg));""",
        f"ethereum:{MERCHANT}@8453?value=1.5e15",
    )
    calls = page.evaluate("window.__walletCalls.map((c) => c.method)")
    assert calls[-3:] == ["eth_chainId", "wallet_switchEthereumChain", "eth_sendTransaction"]
    assert page.evaluate("window.__walletCalls.at(-2).params") == [{"chainId": "0x2105"}]  # 8453
    # 1.5e15 wei = 1,500,000,000,000,000 = 0x5543df729c000
    assert wallets.transactions == [
        {"from": wallets.address, "to": MERCHANT, "data": "0x", "value": "0x5543df729c000", "chainId": 8453}
    ]
