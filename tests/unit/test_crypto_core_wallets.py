"""Wallet linking: SIWE (EIP-4361, EOAs recovered with eth_account; ERC-1271 through its port) and SIWS (ed25519 with
solders), single-use nonces with expiry, domain/URI/chain checks, one account per wallet."""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta

import pytest
from eth_account import Account
from eth_account.messages import encode_defunct
from solders.keypair import Keypair

from kilo_crypto_watch.model import ChainConfig
from kilo_crypto_watch.ports import AlreadyExistsError
from kilo_crypto_watch.wallets import (
    SignInError,
    SignInPolicy,
    WalletTakenError,
    issue_nonce,
    parse_message,
    siwe_text,
    verify_and_link,
)
from tests.crypto_core_fakes import CHAINS

NOW = datetime(2026, 11, 2, 12, 0, tzinfo=UTC)
POLICY = SignInPolicy(domain="app.kilo.example", uri="https://app.kilo.example")
ETH = CHAINS["ethereum"]
SOL = CHAINS["solana"]
KEY = "0x" + "11" * 32
OTHER_KEY = "0x" + "22" * 32


@dataclass
class MemoryWallets:
    """``WalletStore`` in memory (the DynamoDB adapter is exercised through the API tests on moto)."""

    nonces: dict[str, tuple[str, datetime]] = field(default_factory=dict)
    links: dict[tuple[str, str], str] = field(default_factory=dict)
    contract_links: dict[tuple[str, str, str], str] = field(default_factory=dict)

    def put_nonce(self, nonce: str, account_id: str, expires_at: datetime) -> None:
        self.nonces[nonce] = (account_id, expires_at)

    def take_nonce(self, nonce: str) -> tuple[str, datetime] | None:
        return self.nonces.pop(nonce, None)

    def link_wallet(
        self, kind: str, address: str, account_id: str, chain: str, now: datetime, contract: bool = False
    ) -> None:
        if contract:
            owner = self.contract_links.setdefault((kind, address.lower(), chain), account_id)
        else:
            owner = self.links.setdefault((kind, address.lower()), account_id)
        if owner != account_id:
            raise AlreadyExistsError(address)


def signed_siwe(store: MemoryWallets, key: str = KEY, account: str = "acct-1", **changes: str) -> tuple[str, str]:
    nonce, _ = issue_nonce(store, account, NOW, POLICY, lambda: f"nonce{len(store.nonces):04d}abc")
    address = Account.from_key(KEY).address
    fields = {
        "domain": POLICY.domain,
        "address": address,
        "uri": POLICY.uri,
        "chain_id": "1",
        "nonce": nonce,
        "issued_at": (NOW - timedelta(minutes=1)).isoformat().replace("+00:00", "Z"),
        **changes,
    }
    text = siwe_text(**fields)  # type: ignore[arg-type]
    signature = Account.from_key(key).sign_message(encode_defunct(text=text)).signature.hex()
    return text, signature


def test_given_a_valid_siwe_from_an_eoa_then_linked_and_the_nonce_is_used_up() -> None:
    store = MemoryWallets()
    text, signature = signed_siwe(store)
    linked = verify_and_link(store, "acct-1", ETH, text, signature, NOW, POLICY)
    assert (linked.address, linked.method, linked.chain) == (Account.from_key(KEY).address, "eoa", "ethereum")
    assert store.links == {("evm", Account.from_key(KEY).address.lower()): "acct-1"}
    with pytest.raises(SignInError, match="Nonce is unknown or already used"):  # replayed
        verify_and_link(store, "acct-1", ETH, text, signature, NOW, POLICY)


@pytest.mark.parametrize(
    ("changes", "message"),
    [
        ({"domain": "evil.example"}, "domain 'evil.example', expected 'app.kilo.example'"),
        ({"uri": "https://evil.example"}, "URI is 'https://evil.example'"),
        ({"chain_id": "8453"}, "Chain ID is '8453', expected '1'"),
        ({"issued_at": "2026-11-02T11:49:00Z"}, "expired: issued more than the nonce lifetime ago"),
        ({"expiration_time": "2026-11-02T11:59:59Z"}, "expired \\(Expiration Time passed\\)"),
        ({"issued_at": "2026-11-02T12:05:00Z"}, "Issued At is in the future"),
    ],
)
def test_given_a_siwe_with_a_wrong_field_then_refused_naming_it(changes: dict[str, str], message: str) -> None:
    store = MemoryWallets()
    text, signature = signed_siwe(store, **changes)
    with pytest.raises(SignInError, match=message):
        verify_and_link(store, "acct-1", ETH, text, signature, NOW, POLICY)
    assert store.links == {}


def test_given_a_signature_from_another_key_then_refused() -> None:
    store = MemoryWallets()
    text, signature = signed_siwe(store, key=OTHER_KEY)
    with pytest.raises(SignInError, match="not made by the message's address"):
        verify_and_link(store, "acct-1", ETH, text, signature, NOW, POLICY)
    assert store.links == {}


def test_given_an_expired_nonce_then_refused() -> None:
    store = MemoryWallets()
    text, signature = signed_siwe(store)
    later = NOW + timedelta(minutes=10)  # the nonce lived 10 minutes; the message was issued 11 minutes before
    with pytest.raises(SignInError, match="expired"):
        verify_and_link(store, "acct-1", ETH, text, signature, later, POLICY)


def test_given_a_nonce_of_another_account_then_refused() -> None:
    store = MemoryWallets()
    text, signature = signed_siwe(store, account="acct-2")
    with pytest.raises(SignInError, match="issued to another account"):
        verify_and_link(store, "acct-1", ETH, text, signature, NOW, POLICY)


def test_given_a_wallet_linked_to_another_account_then_refused() -> None:
    store = MemoryWallets()
    text, signature = signed_siwe(store, account="acct-2")
    verify_and_link(store, "acct-2", ETH, text, signature, NOW, POLICY)
    text, signature = signed_siwe(store)
    with pytest.raises(WalletTakenError):
        verify_and_link(store, "acct-1", ETH, text, signature, NOW, POLICY)


class ContractWallet:
    """ERC-1271 port answering for one contract address (a fake port: the real one is web3 against the RPC)."""

    def __init__(self, accepts: bool) -> None:
        self.accepts = accepts
        self.asked: list[tuple[str, bytes]] = []

    def is_valid_signature(self, chain: ChainConfig, address: str, message_hash: bytes, signature: bytes) -> bool:
        self.asked.append((address, message_hash))
        return self.accepts


def test_given_a_smart_contract_wallet_then_erc1271_decides() -> None:
    store = MemoryWallets()
    text, signature = signed_siwe(store, key=OTHER_KEY)  # not the address's own key: only the contract can accept it
    accepting = ContractWallet(True)
    linked = verify_and_link(store, "acct-1", ETH, text, signature, NOW, POLICY, accepting)
    assert linked.method == "erc1271"
    # linked as a contract wallet on ethereum only, not as the address's key on every EVM chain
    assert store.contract_links == {("evm", Account.from_key(KEY).address.lower(), "ethereum"): "acct-1"}
    assert store.links == {}
    [(address, digest)] = accepting.asked
    # EIP-191: keccak256("\x19Ethereum Signed Message:\n" + len + message), 32 bytes
    assert address == Account.from_key(KEY).address
    assert len(digest) == 32
    text, signature = signed_siwe(store, key=OTHER_KEY)
    with pytest.raises(SignInError, match="not made by"):
        verify_and_link(store, "acct-1", ETH, text, signature, NOW, POLICY, ContractWallet(False))


def siws(store: MemoryWallets, signer: Keypair, address: str) -> tuple[str, str]:
    nonce, _ = issue_nonce(store, "acct-1", NOW, POLICY, lambda: f"solnonce{len(store.nonces):04d}")
    text = siwe_text(POLICY.domain, address, POLICY.uri, "mainnet", nonce, "2026-11-02T11:59:00Z", kind="Solana")
    return text, str(signer.sign_message(text.encode()))


def test_given_a_valid_siws_then_linked_and_a_signature_from_another_key_refused() -> None:
    store = MemoryWallets()
    wallet = Keypair()
    text, signature = siws(store, wallet, str(wallet.pubkey()))
    linked = verify_and_link(store, "acct-1", SOL, text, signature, NOW, POLICY)
    assert (linked.method, linked.address, linked.kind) == ("ed25519", str(wallet.pubkey()), "solana")
    text, signature = siws(store, Keypair(), str(Keypair().pubkey()))
    with pytest.raises(SignInError, match="not made by"):
        verify_and_link(store, "acct-1", SOL, text, signature, NOW, POLICY)


def test_given_an_ethereum_message_for_the_solana_chain_then_refused() -> None:
    store = MemoryWallets()
    text, signature = signed_siwe(store)
    with pytest.raises(SignInError, match="needs Solana"):
        verify_and_link(store, "acct-1", SOL, text, signature, NOW, POLICY)


def test_the_parser_reads_every_eip4361_field() -> None:
    text = (
        "app.kilo.example wants you to sign in with your Ethereum account:\n"
        "0xC0FFEE0000000000000000000000000000000000\n\nLink it.\n\n"
        "URI: https://app.kilo.example\nVersion: 1\nChain ID: 1\nNonce: abcdefgh12\n"
        "Issued At: 2026-11-02T11:59:00Z\nExpiration Time: 2026-11-02T12:09:00Z\n"
        "Not Before: 2026-11-02T11:59:00Z\nRequest ID: r-1\nResources:\n- https://a.example/1\n- ipfs://b"
    )
    message = parse_message(text)
    assert (message.domain, message.address, message.statement, message.nonce) == (
        "app.kilo.example",
        "0xC0FFEE0000000000000000000000000000000000",
        "Link it.",
        "abcdefgh12",
    )
    assert message.expiration_time == datetime(2026, 11, 2, 12, 9, tzinfo=UTC)
    assert (message.request_id, message.resources) == ("r-1", ("https://a.example/1", "ipfs://b"))
    with pytest.raises(SignInError, match="no Nonce"):
        parse_message(text.replace("Nonce: abcdefgh12\n", ""))
