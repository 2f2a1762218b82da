"""Test wallets for the browser: an EIP-1193 provider announced by EIP-6963 (as MetaMask and Coinbase Wallet do) and
a Phantom-like Solana provider, injected before the page loads. They sign for real: the page's requests call back
into Python, where eth_account signs with a known test key (personal_sign; transactions signed as EIP-1559) and
solders signs ed25519 messages. Every request the page made is recorded for the test to check. With ``rpc_url`` (an
anvil node) the signed transactions are also sent there, at the account's next nonce, as a wallet would."""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from typing import Any

from eth_account import Account
from eth_account.messages import encode_defunct
from solders.keypair import Keypair

from kilo_dev.anvil import rpc

# anvil's / Hardhat's first development account: a well-known key that holds nothing anywhere
EVM_KEY = "0xac0974bec39a17e36ba4a6b4d238ff944bacb478cbed5efcae784d7bf4f2ff80"
EVM_ADDRESS = "0xf39Fd6e51aad88F6F4ce6aB8827279cffFb92266"
SOLANA_SEED = bytes(range(32))

_INIT = """
(() => {
  const config = %(config)s;
  const provider = {
    isKiloTestWallet: true,
    chainId: config.chainId,
    async request({ method, params }) {
      window.__walletCalls = window.__walletCalls || [];
      window.__walletCalls.push({ method, params: params || [] });
      switch (method) {
        case "eth_requestAccounts":
        case "eth_accounts":
          return [config.address];
        case "eth_chainId":
          return "0x" + provider.chainId.toString(16);
        case "wallet_switchEthereumChain":
          provider.chainId = parseInt(params[0].chainId, 16);
          return null;
        case "personal_sign":
          return await window.kiloWalletPersonalSign(params[0], params[1]);
        case "eth_sendTransaction":
          return await window.kiloWalletSendTransaction(JSON.stringify({ ...params[0], chainId: provider.chainId }));
        default:
          throw Object.assign(new Error("method not supported by the test wallet: " + method), { code: 4200 });
      }
    },
    on() {},
    removeListener() {},
  };
  const info = Object.freeze({ uuid: "5b3c7f0e-0c1a-4a43-9d4e-6f1b2c3d4e5f", name: "Kilo Test Wallet",
    icon: "data:image/svg+xml,%%3Csvg xmlns='http://www.w3.org/2000/svg'/%%3E", rdns: "dev.kilo.testwallet" });
  const announce = () => window.dispatchEvent(
    new CustomEvent("eip6963:announceProvider", { detail: Object.freeze({ info, provider }) }));
  window.addEventListener("eip6963:requestProvider", announce);
  announce();
  if (config.solana) {
    const publicKey = { toString: () => config.solana, toBase58: () => config.solana };
    window.phantom = { solana: {
      isPhantom: true,
      publicKey,
      async connect() { return { publicKey }; },
      async signMessage(bytes) {
        const hex = Array.from(bytes, (b) => b.toString(16).padStart(2, "0")).join("");
        const signature = await window.kiloWalletSolanaSign(hex);
        return { signature: Uint8Array.from(signature.match(/../g).map((h) => parseInt(h, 16))), publicKey };
      },
    } };
  }
})();
"""


@dataclass
class InjectedWallets:
    chain_id: int = 1
    account: Any = field(default_factory=lambda: Account.from_key(EVM_KEY))
    solana: Keypair = field(default_factory=lambda: Keypair.from_seed(SOLANA_SEED))
    signed_messages: list[str] = field(default_factory=list)
    transactions: list[dict[str, Any]] = field(default_factory=list)
    sent: list[str] = field(default_factory=list)  # the hashes of the signed transactions, in order
    rpc_url: str | None = None  # a node the signed transactions are sent to (eth_sendRawTransaction); None: none

    @property
    def address(self) -> str:
        return str(self.account.address)

    def install(self, page: Any) -> None:
        """Inject the providers into every document ``page`` loads, wired to this object's signers."""
        page.expose_function("kiloWalletPersonalSign", self._personal_sign)
        page.expose_function("kiloWalletSendTransaction", self._send_transaction)
        page.expose_function("kiloWalletSolanaSign", self._solana_sign)
        config = {"address": self.address, "chainId": self.chain_id, "solana": str(self.solana.pubkey())}
        page.add_init_script(_INIT % {"config": json.dumps(config)})

    def _personal_sign(self, message_hex: str, address: str) -> str:
        assert address.lower() == self.address.lower(), f"asked to sign for {address}"
        message = bytes.fromhex(message_hex.removeprefix("0x")).decode()
        self.signed_messages.append(message)
        signed = self.account.sign_message(encode_defunct(text=message))
        return "0x" + bytes(signed.signature).hex()

    def _send_transaction(self, params_json: str) -> str:
        params = json.loads(params_json)
        self.transactions.append(params)
        nonce = len(self.transactions) - 1
        if self.rpc_url is not None:
            nonce = int(rpc(self.rpc_url, "eth_getTransactionCount", [self.address, "pending"]), 16)
        tx = {
            "to": params["to"],
            "value": int(params.get("value", "0x0"), 16),
            "data": params.get("data", "0x"),
            "nonce": nonce,
            "gas": 100_000,
            "maxFeePerGas": 30 * 10**9,
            "maxPriorityFeePerGas": 10**9,
            "chainId": params["chainId"],
        }
        signed = self.account.sign_transaction(tx)
        self.sent.append("0x" + bytes(signed.hash).hex())
        if self.rpc_url is not None:
            accepted = rpc(self.rpc_url, "eth_sendRawTransaction", ["0x" + bytes(signed.raw_transaction).hex()])
            assert accepted == self.sent[-1], f"the node answered {accepted} for {self.sent[-1]}"
        return self.sent[-1]

    def _solana_sign(self, message_hex: str) -> str:
        message = bytes.fromhex(message_hex)
        self.signed_messages.append(message.decode())
        return bytes(self.solana.sign_message(message)).hex()
