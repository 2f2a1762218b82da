"""Wallet linking: Sign-In with Ethereum (EIP-4361) and Sign In With Solana, with server-issued single-use nonces.

Flow: the account asks for a nonce (stored with its account and a ~10 min expiry); the wallet signs a sign-in message
naming our domain, URI, the chain and that nonce; ``verify`` parses the message (EIP-4361 grammar: header, address,
optional statement, then ``URI``/``Version``/``Chain ID``/``Nonce``/``Issued At`` and the optional
``Expiration Time``/``Not Before``/``Request ID``/``Resources``), checks every field, takes the nonce (single use:
a replay finds it gone), checks the signature - EIP-191 ``personal_sign`` recovered with ``eth_account`` for EOAs,
ERC-1271 ``isValidSignature`` through a port for smart-contract wallets where the chain's RPC is configured; ed25519
with ``solders`` on Solana - and links the address to the account (one account per wallet, a conditional write). A key's
wallet (EOA, ed25519) is linked on every chain of its kind; a contract wallet only on the chain that verified it (the
same address on another EVM chain may be another contract, or none).
"""

from __future__ import annotations

import re
import secrets
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from typing import Final

from kilo_crypto_watch.model import ChainConfig
from kilo_crypto_watch.ports import AlreadyExistsError, ContractSignatureVerifier, WalletStore

HEADER: Final = re.compile(r"^(?P<domain>[^\s]+) wants you to sign in with your (?P<kind>Ethereum|Solana) account:$")
FIELDS: Final = {
    "URI": "uri",
    "Version": "version",
    "Chain ID": "chain_id",
    "Nonce": "nonce",
    "Issued At": "issued_at",
    "Expiration Time": "expiration_time",
    "Not Before": "not_before",
    "Request ID": "request_id",
}
CLOCK_SKEW: Final = timedelta(minutes=2)
EVM_ADDRESS: Final = re.compile(r"^0x[0-9a-fA-F]{40}$")


class SignInError(Exception):
    """The sign-in message or its signature is refused (the message names the field or the check)."""


class WalletTakenError(SignInError):
    """The wallet is linked to another account."""


@dataclass(frozen=True, slots=True)
class SignInMessage:
    kind: str  # "Ethereum" | "Solana"
    domain: str
    address: str
    statement: str | None
    uri: str
    version: str
    chain_id: str
    nonce: str
    issued_at: datetime
    expiration_time: datetime | None = None
    not_before: datetime | None = None
    request_id: str | None = None
    resources: tuple[str, ...] = field(default=())


@dataclass(frozen=True, slots=True)
class SignInPolicy:
    domain: str
    uri: str
    nonce_ttl: timedelta = timedelta(minutes=10)
    solana_chain_id: str = "mainnet"


@dataclass(frozen=True, slots=True)
class LinkedWallet:
    account_id: str
    chain: str
    kind: str  # "evm" | "solana"
    address: str
    method: str  # "eoa" | "erc1271" | "ed25519"


def _time(name: str, value: str) -> datetime:
    try:
        parsed = datetime.fromisoformat(value.replace("Z", "+00:00"))
    except ValueError as exc:
        raise SignInError(f"{name} is not an RFC 3339 time: {value!r}") from exc
    if parsed.tzinfo is None:
        raise SignInError(f"{name} has no time zone: {value!r}")
    return parsed


def parse_message(text: str) -> SignInMessage:
    """Parse an EIP-4361 (or Sign In With Solana) message; SignInError naming what is malformed."""
    lines = text.split("\n")
    if len(lines) < 3:
        raise SignInError("message is not a sign-in message (too short)")
    header = HEADER.match(lines[0])
    if header is None:
        raise SignInError(
            "message header must read '<domain> wants you to sign in with your <Ethereum|Solana> account:'"
        )
    address = lines[1].strip()
    values: dict[str, str] = {}
    statement_lines: list[str] = []
    resources: list[str] = []
    in_resources = False
    for line in lines[2:]:
        if in_resources and line.startswith("- "):
            resources.append(line[2:])
            continue
        if line == "Resources:":
            in_resources = True
            continue
        name, sep, value = line.partition(": ")
        if sep and name in FIELDS:
            if FIELDS[name] in values:
                raise SignInError(f"{name} appears twice")
            values[FIELDS[name]] = value
        elif not values and line:
            statement_lines.append(line)
        elif line:
            raise SignInError(f"unexpected line in the message: {line[:60]!r}")
    for required in ("uri", "version", "chain_id", "nonce", "issued_at"):
        if required not in values:
            label = next(name for name, attr in FIELDS.items() if attr == required)
            raise SignInError(f"message has no {label}")
    if not re.fullmatch(r"[A-Za-z0-9]{8,}", values["nonce"]):
        raise SignInError("Nonce must be at least 8 alphanumeric characters")
    return SignInMessage(
        kind=header["kind"],
        domain=header["domain"],
        address=address,
        statement="\n".join(statement_lines) or None,
        uri=values["uri"],
        version=values["version"],
        chain_id=values["chain_id"],
        nonce=values["nonce"],
        issued_at=_time("Issued At", values["issued_at"]),
        expiration_time=_time("Expiration Time", values["expiration_time"]) if "expiration_time" in values else None,
        not_before=_time("Not Before", values["not_before"]) if "not_before" in values else None,
        request_id=values.get("request_id"),
        resources=tuple(resources),
    )


def issue_nonce(
    store: WalletStore, account_id: str, now: datetime, policy: SignInPolicy, new_nonce: Callable[[], str] | None = None
) -> tuple[str, datetime]:
    """A fresh single-use nonce for ``account_id`` and its expiry."""
    nonce = (new_nonce or (lambda: secrets.token_hex(16)))()
    expires = now + policy.nonce_ttl
    store.put_nonce(nonce, account_id, expires)
    return nonce, expires


def check_message(message: SignInMessage, chain: ChainConfig, now: datetime, policy: SignInPolicy) -> None:
    """Every field but the nonce's ownership and the signature."""
    expected_kind = "Ethereum" if chain.kind == "evm" else "Solana"
    if message.kind != expected_kind:
        raise SignInError(f"message signs in with a {message.kind} account, chain {chain.key} needs {expected_kind}")
    if message.domain != policy.domain:
        raise SignInError(f"message is for domain {message.domain!r}, expected {policy.domain!r}")
    if message.uri != policy.uri:
        raise SignInError(f"message URI is {message.uri!r}, expected {policy.uri!r}")
    if message.version != "1":
        raise SignInError(f"message Version is {message.version!r}, expected '1'")
    expected_chain = str(chain.chain_id) if chain.kind == "evm" else policy.solana_chain_id
    if message.chain_id != expected_chain:
        raise SignInError(f"message Chain ID is {message.chain_id!r}, expected {expected_chain!r} for {chain.key}")
    if chain.kind == "evm" and not EVM_ADDRESS.match(message.address):
        raise SignInError("message address is not a 0x address")
    if message.issued_at > now + CLOCK_SKEW:
        raise SignInError("message Issued At is in the future")
    if message.issued_at < now - policy.nonce_ttl:
        raise SignInError("message is expired: issued more than the nonce lifetime ago")
    if message.expiration_time is not None and message.expiration_time <= now:
        raise SignInError("message is expired (Expiration Time passed)")
    if message.not_before is not None and message.not_before > now + CLOCK_SKEW:
        raise SignInError("message is not valid yet (Not Before)")


def _evm_signature(
    message: SignInMessage,
    text: str,
    signature: str,
    chain: ChainConfig,
    contracts: ContractSignatureVerifier | None,
) -> str:
    from eth_account import Account  # noqa: PLC0415 - only the crypto function loads eth_account
    from eth_account.messages import defunct_hash_message, encode_defunct  # noqa: PLC0415

    try:
        raw = bytes.fromhex(signature.removeprefix("0x"))
    except ValueError as exc:
        raise SignInError("signature is not hex") from exc
    recovered: str | None
    try:
        recovered = Account.recover_message(encode_defunct(text=text), signature=raw)
    except Exception:
        recovered = None
    if recovered is not None and recovered.lower() == message.address.lower():
        return "eoa"
    if contracts is not None and contracts.is_valid_signature(
        chain, message.address, bytes(defunct_hash_message(text=text)), raw
    ):
        return "erc1271"
    raise SignInError("signature was not made by the message's address")


def _solana_signature(message: SignInMessage, text: str, signature: str) -> None:
    from solders.pubkey import Pubkey  # noqa: PLC0415 - only the crypto function loads solders
    from solders.signature import Signature  # noqa: PLC0415

    try:
        key = Pubkey.from_string(message.address)
        sig = Signature.from_string(signature)
    except ValueError as exc:
        raise SignInError("address or signature is not valid base58") from exc
    if not sig.verify(key, text.encode()):
        raise SignInError("signature was not made by the message's address")


def verify_and_link(
    store: WalletStore,
    account_id: str,
    chain: ChainConfig,
    text: str,
    signature: str,
    now: datetime,
    policy: SignInPolicy,
    contracts: ContractSignatureVerifier | None = None,
) -> LinkedWallet:
    """Check the sign-in message and its signature for ``account_id`` and link the wallet; SignInError otherwise.
    The nonce is taken before the signature is checked: a refused attempt uses it up too (ask for a new one)."""
    message = parse_message(text)
    check_message(message, chain, now, policy)
    taken = store.take_nonce(message.nonce)
    if taken is None:
        raise SignInError("Nonce is unknown or already used: ask for a new one")
    owner, expires = taken
    if owner != account_id:
        raise SignInError("Nonce was issued to another account")
    if expires <= now:
        raise SignInError("Nonce is expired: ask for a new one")
    if chain.kind == "evm":
        method = _evm_signature(message, text, signature, chain, contracts)
    else:
        _solana_signature(message, text, signature)
        method = "ed25519"
    try:
        store.link_wallet(chain.kind, message.address, account_id, chain.key, now, contract=method == "erc1271")
    except AlreadyExistsError as exc:
        raise WalletTakenError(f"wallet {message.address} is linked to another account") from exc
    return LinkedWallet(account_id, chain.key, chain.kind, message.address, method)


def siwe_text(
    domain: str,
    address: str,
    uri: str,
    chain_id: str,
    nonce: str,
    issued_at: str,
    statement: str | None = "Link this wallet to your Kilo billing account.",
    kind: str = "Ethereum",
    expiration_time: str | None = None,
) -> str:
    """A sign-in message in EIP-4361's layout (what the app asks the wallet to sign)."""
    lines = [f"{domain} wants you to sign in with your {kind} account:", address, ""]
    if statement:
        lines += [statement, ""]
    lines += [f"URI: {uri}", "Version: 1", f"Chain ID: {chain_id}", f"Nonce: {nonce}", f"Issued At: {issued_at}"]
    if expiration_time:
        lines.append(f"Expiration Time: {expiration_time}")
    return "\n".join(lines)
