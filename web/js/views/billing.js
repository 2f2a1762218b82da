// Billing history: each invoice with its status; a receipt (its lines) on demand; links to Stripe's hosted invoice
// and PDF where the invoice was paid by card; crypto bills link to the pay screen.
import { accountPath, get } from "../api.js";
import { errorBox, h, section, usd } from "../dom.js";

export async function billingView() {
  const reply = await get(accountPath("/invoices"));
  const invoices = reply.invoices || reply.items || [];
  const receipt = h("div", { id: "receipt", tabindex: "-1" });
  const rows = invoices.map((invoice) => h("tr", {},
    h("td", { "data-label": "Period" }, invoice.period),
    h("td", { "data-label": "Invoice" }, invoice.invoice_id),
    h("td", { class: "num", "data-label": "Total" }, usd(invoice.total_usd ?? invoice.total)),
    h("td", { "data-label": "Status" }, h("span", { class: `badge ${invoice.status}` }, (invoice.status || "").replace(/_/g, " "))),
    h("td", { "data-label": "Receipt" },
      h("button", { type: "button", class: "link", "aria-controls": "receipt",
        onclick: () => showReceipt(invoice.invoice_id, receipt) }, `Receipt ${invoice.period}`),
      (invoice.payment_method || invoice.method) === "crypto" && invoice.status !== "paid"
        ? [" · ", h("a", { href: `#/pay?invoice=${encodeURIComponent(invoice.invoice_id)}` }, "Pay with crypto")] : null)));
  const table = h("table", { class: "stack" },
    h("caption", {}, "Invoices, newest first"),
    h("thead", {}, h("tr", {}, ["Period", "Invoice", "Total", "Status", "Receipt"].map((t, i) =>
      h("th", { scope: "col", class: i === 2 ? "num" : undefined }, t)))),
    h("tbody", {}, rows));
  return h("div", {}, h("h1", {}, "Billing"),
    section("Billing history", invoices.length ? h("div", { class: "table-wrap" }, table) : h("p", {}, "No invoices yet.")),
    receipt);
}

async function showReceipt(invoiceId, target) {
  target.replaceChildren(h("p", {}, "Loading the receipt…"));
  try {
    const invoice = await get(accountPath(`/invoices/${encodeURIComponent(invoiceId)}`));
    const lines = invoice.lines || [];
    const links = [];
    if (invoice.hosted_invoice_url) links.push(h("a", { href: invoice.hosted_invoice_url, rel: "noopener" }, "Stripe invoice"));
    if (invoice.invoice_pdf || invoice.pdf_url) links.push(h("a", { href: invoice.invoice_pdf || invoice.pdf_url, rel: "noopener" }, "PDF"));
    target.replaceChildren(section(`Receipt ${invoice.period} (${invoice.invoice_id})`,
      h("div", { class: "table-wrap" }, h("table", { class: "stack" },
        h("thead", {}, h("tr", {}, h("th", { scope: "col" }, "Line"), h("th", { scope: "col", class: "num" }, "Amount"))),
        h("tbody", {}, lines.map((line) => h("tr", {},
          h("td", { "data-label": "Line" }, line.description),
          h("td", { class: "num", "data-label": "Amount" }, usd(line.amount_usd ?? line.amount))))),
        h("tfoot", {}, h("tr", {}, h("th", { scope: "row" }, "Total"),
          h("td", { class: "num", "data-testid": "receipt-total" }, usd(invoice.total_usd ?? invoice.total)))))),
      h("p", {}, `Status: ${(invoice.status || "").replace(/_/g, " ")}`),
      links.length ? h("p", {}, links.flatMap((link, i) => (i ? [" · ", link] : [link]))) : null));
    target.focus();
  } catch (error) {
    target.replaceChildren(errorBox(error));
  }
}
