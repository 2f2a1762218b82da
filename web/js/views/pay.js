// Pay a bill with crypto. 1) pick an open crypto bill; 2) pick a wallet (EIP-6963 discovery: MetaMask, Coinbase
// Wallet, ...; Phantom for Solana) and link it with SIWE / SIWS (nonce from the API, the wallet signs, the API
// verifies); 3) a quote locks the rate (amount in the asset, pay-to address, expiry); 4) the wallet sends the payment
// (EIP-681 → eth_sendTransaction; Solana Pay URL for Phantom) and the transaction hash goes to the API at once.
// The crypto routes are served by the crypto function on the same HTTP API (paths in ROUTES). A bill is named in
// paths by its invoice key, the invoice id with each "/" written "~": API Gateway decodes %2F before it matches.
import { accountPath, get, post } from "../api.js";
import { session } from "../auth.js";
import { errorBox, h, say, section, usd, words } from "../dom.js";
import {
  connectEvm, connectSolana, discoverWallets, parseEip681, personalSign, sendEvmPayment, siweMessage, siwsMessage,
  solanaSign,
} from "../wallet.js";

export const invoiceKey = (invoiceId) => encodeURIComponent(invoiceId.replaceAll("/", "~"));

export const ROUTES = {
  nonce: "/crypto/wallets/nonce", // -> {nonce, issued_at, expires_at, domain, uri}
  verify: "/crypto/wallets", // {chain, message, signature} -> {chain, address, method}
  quote: (invoiceId) => `/crypto/bills/${invoiceKey(invoiceId)}/quotes`, // {chain, asset} -> quote
  submit: (invoiceId) => `/crypto/bills/${invoiceKey(invoiceId)}/transactions`, // {chain, tx_id} -> {invoice_id, payments}
  history: "/crypto/history", // -> {bills, quotes, payments}
};

const ASSETS = { evm: ["USDC", "ETH"], solana: ["USDC", "SOL"] };

export async function payView(config) {
  const wanted = new URLSearchParams(window.location.hash.split("?")[1] || "").get("invoice");
  const reply = await get(accountPath("/invoices"));
  // the summaries carry the invoice id the crypto routes take and the payment method
  const open = (reply.invoices || []).filter((i) => i.method === "crypto" && !["paid", "void"].includes(i.status));
  const root = h("div", {}, h("h1", {}, "Pay with crypto"));
  if (!session().canManage) {
    root.append(h("p", {}, "Only owners and admins can pay bills."));
    return root;
  }
  if (!open.length) {
    root.append(h("p", {}, "No open crypto bill."), await historyCard());
    return root;
  }
  const state = { invoice: open.find((i) => i.number === wanted) || open[0], wallet: null, address: null, chain: null };
  const steps = h("div");
  const problem = h("div", { "aria-live": "assertive" });
  const fail = (error) => {
    problem.replaceChildren(errorBox(error));
  };

  const billSelect = h("select", { id: "bill", name: "bill" }, open.map((i) =>
    h("option", { value: i.invoice_id, selected: i.invoice_id === state.invoice.invoice_id },
      `${i.period} · ${usd(i.total)} · ${i.number}`)));
  billSelect.addEventListener("change", () => {
    state.invoice = open.find((i) => i.invoice_id === billSelect.value);
  });
  root.append(section("1. The bill", h("label", { for: "bill" }, "Bill to pay"), billSelect));

  const wallets = await discoverWallets();
  const walletList = h("div", { role: "group", "aria-labelledby": "h-2-your-wallet" });
  if (!wallets.length) {
    walletList.append(h("p", {}, "No wallet found in this browser. Install MetaMask, Coinbase Wallet or Phantom, then reload."));
  }
  for (const wallet of wallets) {
    walletList.append(h("button", { type: "button", class: "secondary", "data-wallet": wallet.info.rdns,
      onclick: () => link(wallet).catch(fail) }, `Connect ${wallet.info.name}`));
  }
  root.append(section("2. Your wallet", h("p", {}, "Linking proves the wallet is yours: it signs a one-time message, no fee."),
    h("div", { class: "actions" }, walletList)), steps, problem);

  async function link(wallet) {
    problem.replaceChildren();
    state.wallet = wallet;
    const evm = wallet.kind === "evm";
    const connected = evm ? await connectEvm(wallet.provider) : await connectSolana(wallet.provider);
    state.address = connected.address;
    state.chainId = connected.chainId;
    const chain = evm ? chainFor(config, connected.chainId) : "solana";
    state.chain = chain;
    // the nonce answer names the domain, URI and times the API checks in the signed message
    const challenge = await post(accountPath(ROUTES.nonce), {});
    const fields = {
      domain: challenge.domain,
      address: connected.address,
      statement: "Link this wallet to your Kilo billing account.",
      uri: challenge.uri,
      chainId: evm ? connected.chainId : "mainnet",
      nonce: challenge.nonce,
      issuedAt: challenge.issued_at, // the API's clock, not the browser's
      expirationTime: challenge.expires_at,
    };
    const message = evm ? siweMessage(fields) : siwsMessage(fields);
    const signature = evm ? await personalSign(wallet.provider, connected.address, message)
      : await solanaSign(wallet.provider, message);
    await post(accountPath(ROUTES.verify), { chain, message, signature });
    say(`Wallet ${short(connected.address)} linked.`);
    showQuoteStep();
  }

  function showQuoteStep() {
    const kind = state.wallet.kind;
    const assetSelect = h("select", { id: "asset", name: "asset" }, ASSETS[kind].map((a) => h("option", { value: a }, a)));
    const quoteBox = h("div", { "aria-live": "polite" });
    const button = h("button", { type: "button", onclick: async () => {
      problem.replaceChildren();
      button.disabled = true;
      try {
        const quote = await post(accountPath(ROUTES.quote(state.invoice.invoice_id)), { chain: state.chain, asset: assetSelect.value });
        quoteBox.replaceChildren(quoteCard(quote));
      } catch (error) {
        fail(error);
      } finally {
        button.disabled = false;
      }
    } }, "Get a quote");
    steps.replaceChildren(section("3. Quote",
      h("p", {}, `Linked: ${short(state.address)} on ${state.chain}.`),
      h("label", { for: "asset" }, "Pay in"), assetSelect, h("div", { class: "actions" }, button), quoteBox));
  }

  function quoteCard(quote) {
    const result = h("div", { "aria-live": "polite" });
    const pay = h("button", { type: "button", onclick: async () => {
      problem.replaceChildren();
      pay.disabled = true;
      try {
        let tx;
        if (state.wallet.kind === "evm") {
          tx = await sendEvmPayment(state.wallet.provider, state.address, parseEip681(quote.payment_uri));
        } else {
          window.location.assign(quote.payment_uri); // Solana Pay: Phantom opens the transfer request
          return;
        }
        const submitted = await post(accountPath(ROUTES.submit(state.invoice.invoice_id)), { chain: state.chain, tx_id: tx });
        const status = ((submitted.payments || [])[0] || {}).status || "seen";
        const statusBox = h("div", { "aria-live": "polite" });
        const check = h("button", { type: "button", class: "secondary", onclick: () => {
          problem.replaceChildren();
          showStatus(submitted.invoice_id, statusBox).catch(fail);
        } }, "Check the bill's status");
        result.replaceChildren(h("p", { class: "ok", "data-testid": "payment-sent" },
          `Payment sent: ${tx}. Status: ${String(status).toLowerCase()}. The bill is paid once the chain finalizes it.`),
          h("div", { class: "actions" }, check), statusBox);
      } catch (error) {
        fail(error);
        pay.disabled = false;
      }
    } }, `Pay ${quote.amount} ${quote.asset}`);
    return h("div", { class: "card", "data-testid": "quote" },
      h("dl", {},
        h("dt", {}, "Amount"), h("dd", { "data-testid": "quote-amount" }, `${quote.amount} ${quote.asset}`),
        h("dt", {}, "For"), h("dd", {}, usd(quote.amount_usd)),
        h("dt", {}, "Rate"), h("dd", {}, `$${quote.rate_usd} per ${quote.asset}`,
          (quote.rate_sources || []).length ? ` (${quote.rate_sources.map((s) => s.source).join(", ")})` : ""),
        h("dt", {}, "Pay to"), h("dd", { class: "mono" }, quote.pay_to),
        h("dt", {}, "Valid until"), h("dd", {}, new Date(quote.expires_at).toLocaleString())),
      h("p", { class: "hint" }, "Or pay from any wallet: ", h("a", { href: quote.payment_uri, class: "mono" }, quote.payment_uri)),
      h("div", { class: "actions" }, pay), result);
  }

  root.append(await historyCard());
  return root;
}

// The crypto bill (its settlement) and our invoice (paid once the bill settles), as the API says now
async function showStatus(invoiceId, target) {
  const [crypto, invoices] = await Promise.all([get(accountPath(ROUTES.history)), get(accountPath("/invoices"))]);
  const bill = (crypto.bills || []).find((b) => b.invoice_id === invoiceId);
  const invoice = (invoices.invoices || []).find((i) => i.invoice_id === invoiceId);
  target.replaceChildren(h("dl", { "data-testid": "bill-status" },
    h("dt", {}, "Crypto bill"),
    h("dd", { "data-testid": "crypto-bill-status" }, bill ? billStatus(bill) : "not found"),
    h("dt", {}, "Invoice"),
    h("dd", { "data-testid": "invoice-status" }, invoice ? `${invoice.number}: ${words(invoice.status).toLowerCase()}` : "not found")));
}

function billStatus(bill) {
  const flags = (bill.flags || []).length ? ` (${bill.flags.join(", ")})` : "";
  return `${bill.status}${flags} · settled ${usd(bill.settled_usd)} of ${usd(bill.total_usd)}`;
}

function chainFor(config, chainId) {
  const chains = (config.chains && config.chains.evm) || [{ key: "ethereum", chainId: 1 }, { key: "base", chainId: 8453 }];
  const match = chains.find((c) => Number(c.chainId) === Number(chainId));
  if (!match) throw new Error(`the wallet is on chain ${chainId}; switch it to ${chains.map((c) => c.key).join(" or ")}`);
  return match.key;
}

function short(address) {
  return address.length > 12 ? `${address.slice(0, 6)}…${address.slice(-4)}` : address;
}

async function historyCard() {
  try {
    const reply = await get(accountPath(ROUTES.history));
    const items = reply.payments || [];
    const bills = reply.bills || [];
    return section("Crypto payments",
      bills.length ? h("ul", { "aria-label": "Crypto bills" }, bills.map((b) => h("li", { "data-invoice": b.invoice_id },
        `${b.period} · ${usd(b.total_usd)} · ${b.number || b.invoice_id} · ${billStatus(b)}`))) : null,
      items.length ? h("ul", { "aria-label": "Crypto payments" }, items.map((i) => h("li", {},
        `${new Date(i.seen_at).toLocaleString()} · ${i.amount} ${i.asset} on ${i.chain} · ${usd(i.amount_usd)} · ${words(i.status).toLowerCase()}`,
        i.tx_url ? [" · ", h("a", { href: i.tx_url, rel: "noopener" }, "transaction")] : null)))
        : h("p", {}, "No crypto payments yet."));
  } catch (error) {
    if (error.status === 404) return section("Crypto payments", h("p", {}, "No crypto payment history here yet."));
    return section("Crypto payments", errorBox(error));
  }
}
