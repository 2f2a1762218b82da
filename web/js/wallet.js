// Wallets in the browser. EVM: EIP-6963 discovery (MetaMask, Coinbase Wallet and every other wallet announce
// themselves; window.ethereum as the fallback of older wallets), EIP-1193 requests, a SIWE (EIP-4361) message to link
// the address. Solana: Phantom's provider (window.phantom.solana), a SIWS message signed with signMessage.
const found = new Map(); // rdns or uuid -> {info, provider, kind}

export function discoverWallets(waitMs = 400) {
  return new Promise((resolve) => {
    const onAnnounce = (event) => {
      const { info, provider } = event.detail || {};
      if (info && provider) found.set(info.rdns || info.uuid, { info, provider, kind: "evm" });
    };
    window.addEventListener("eip6963:announceProvider", onAnnounce);
    window.dispatchEvent(new Event("eip6963:requestProvider"));
    setTimeout(() => {
      window.removeEventListener("eip6963:announceProvider", onAnnounce);
      const wallets = [...found.values()];
      if (!wallets.some((w) => w.kind === "evm") && window.ethereum) {
        wallets.push({ info: { name: "Browser wallet", rdns: "injected", uuid: "injected" },
          provider: window.ethereum, kind: "evm" });
      }
      const phantom = window.phantom && window.phantom.solana;
      if (phantom && phantom.isPhantom) {
        wallets.push({ info: { name: "Phantom (Solana)", rdns: "app.phantom.solana", uuid: "phantom-solana" },
          provider: phantom, kind: "solana" });
      }
      resolve(wallets);
    }, waitMs);
  });
}

export async function connectEvm(provider) {
  const accounts = await provider.request({ method: "eth_requestAccounts" });
  if (!accounts || !accounts.length) throw new Error("the wallet shared no account");
  const chainHex = await provider.request({ method: "eth_chainId" });
  return { address: accounts[0], chainId: parseInt(chainHex, 16) };
}

// EIP-4361: the exact layout a verifier parses
export function siweMessage({ domain, address, statement, uri, chainId, nonce, issuedAt, expirationTime }) {
  const lines = [
    `${domain} wants you to sign in with your Ethereum account:`,
    address,
    "",
    statement,
    "",
    `URI: ${uri}`,
    "Version: 1",
    `Chain ID: ${chainId}`,
    `Nonce: ${nonce}`,
    `Issued At: ${issuedAt}`,
  ];
  if (expirationTime) lines.push(`Expiration Time: ${expirationTime}`);
  return lines.join("\n");
}

// Sign-In with Solana: the same layout with the Solana header (as Phantom's signIn builds it)
export function siwsMessage({ domain, address, statement, uri, chainId, nonce, issuedAt, expirationTime }) {
  return siweMessage({ domain, address, statement, uri, chainId, nonce, issuedAt, expirationTime })
    .replace("with your Ethereum account:", "with your Solana account:");
}

function hexOf(text) {
  return "0x" + [...new TextEncoder().encode(text)].map((b) => b.toString(16).padStart(2, "0")).join("");
}

export async function personalSign(provider, address, message) {
  return provider.request({ method: "personal_sign", params: [hexOf(message), address] });
}

export async function ensureChain(provider, chainId) {
  const current = parseInt(await provider.request({ method: "eth_chainId" }), 16);
  if (current === chainId) return;
  await provider.request({ method: "wallet_switchEthereumChain", params: [{ chainId: "0x" + chainId.toString(16) }] });
}

// A payment from an EIP-681 URI: ethereum:<to>@<chain>?value=<wei> (native) or
// ethereum:<token>@<chain>/transfer?address=<to>&uint256=<atomic> (ERC-20 transfer)
export function parseEip681(uri) {
  const match = /^ethereum:(?:pay-)?(0x[0-9a-fA-F]{40})(?:@(\d+))?(?:\/(\w+))?(?:\?(.*))?$/.exec(uri);
  if (!match) throw new Error(`not an EIP-681 payment URI: ${uri}`);
  const [, target, chain, fn, query] = match;
  const params = new URLSearchParams(query || "");
  const chainId = chain ? Number(chain) : 1;
  if (!fn) return { chainId, to: target, value: BigInt(sciToInt(params.get("value") || "0")), data: "0x" };
  if (fn !== "transfer") throw new Error(`unsupported EIP-681 function ${fn}`);
  const to = params.get("address");
  const amount = BigInt(sciToInt(params.get("uint256") || "0"));
  const data = "0xa9059cbb" + to.slice(2).toLowerCase().padStart(64, "0") + amount.toString(16).padStart(64, "0");
  return { chainId, to: target, value: 0n, data };
}

function sciToInt(text) {
  const m = /^(\d+)(?:\.(\d+))?(?:e(\d+))?$/i.exec(text);
  if (!m) throw new Error(`bad amount ${text}`);
  const [, whole, fraction = "", exponent = "0"] = m;
  const e = Number(exponent);
  if (fraction.length > e) throw new Error(`amount ${text} is not whole`);
  return (whole + fraction.padEnd(e, "0")).replace(/^0+(?=\d)/, "");
}

export async function sendEvmPayment(provider, from, payment) {
  await ensureChain(provider, payment.chainId);
  const tx = { from, to: payment.to, data: payment.data, value: "0x" + payment.value.toString(16) };
  return provider.request({ method: "eth_sendTransaction", params: [tx] });
}

export async function connectSolana(provider) {
  const { publicKey } = await provider.connect();
  return { address: publicKey.toString() };
}

export async function solanaSign(provider, message) {
  const { signature } = await provider.signMessage(new TextEncoder().encode(message), "utf8");
  return base58(signature);
}

const ALPHABET = "123456789ABCDEFGHJKLMNPQRSTUVWXYZabcdefghijkmnopqrstuvwxyz";
export function base58(bytes) {
  let n = 0n;
  for (const b of bytes) n = n * 256n + BigInt(b);
  let out = "";
  while (n > 0n) {
    out = ALPHABET[Number(n % 58n)] + out;
    n /= 58n;
  }
  for (const b of bytes) {
    if (b !== 0) break;
    out = "1" + out;
  }
  return out;
}
