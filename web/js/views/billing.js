// Billing history: each invoice with its status and total; its receipt (the lines) on demand; Stripe's hosted
// invoice and PDF where there are; open crypto bills link to the pay screen. Credit notes against an invoice (late
// usage found to be lower, D131) show in its receipt, with the amount due after them.
import { accountPath, get } from "../api.js";
import { errorBox, h, number, section, usd, words } from "../dom.js";

export async function billingView() {
  const reply = await get(accountPath("/invoices"));
  const invoices = reply.invoices || [];
  const receipt = h("div", { id: "receipt", tabindex: "-1" });
  const rows = invoices.map((invoice) => h("tr", { "data-invoice": invoice.number },
    h("td", { "data-label": "Period" }, invoice.period),
    h("td", { "data-label": "Invoice" }, invoice.number),
    h("td", { class: "num", "data-label": "Total" }, usd(invoice.total),
      invoice.amount_due !== undefined && invoice.amount_due !== invoice.total
        ? h("span", { class: "hint" }, ` (due ${usd(invoice.amount_due)})`) : null),
    h("td", { "data-label": "Status" }, h("span", { class: `badge ${invoice.status}` }, words(invoice.status))),
    h("td", { "data-label": "Receipt" },
      h("button", { type: "button", class: "link", "aria-controls": "receipt",
        onclick: () => showReceipt(invoice.number, receipt) }, `Receipt ${invoice.number}`),
      links(invoice))));
  const table = h("table", { class: "stack" },
    h("caption", {}, "Invoices, newest first"),
    h("thead", {}, h("tr", {}, ["Period", "Invoice", "Total", "Status", "Receipt"].map((t, i) =>
      h("th", { scope: "col", class: i === 2 ? "num" : undefined }, t)))),
    h("tbody", {}, rows));
  return h("div", {}, h("h1", {}, "Billing"),
    section("Billing history", invoices.length ? h("div", { class: "table-wrap" }, table) : h("p", {}, "No invoices yet.")),
    receipt);
}

function creditNotes(invoice) {
  const notes = invoice.credit_notes || [];
  if (!notes.length) return null;
  const did = (note) => [
    Number(note.to_amount_due) > 0 ? `${usd(note.to_amount_due)} off the amount due` : null,
    Number(note.to_account_credit) > 0 ? `${usd(note.to_account_credit)} to account credit` : null,
    Number(note.already_returned) > 0 ? `${usd(note.already_returned)} already returned` : null,
    Number(note.not_collected) > 0 ? `${usd(note.not_collected)} never paid, so not credited` : null,
  ].filter(Boolean).join(", ") || "nothing to give back";
  return h("div", { "data-testid": "credit-notes" },
    h("h3", {}, "Credit notes"),
    h("ul", {}, notes.map((note) => h("li", {},
      `Found in ${note.found_in_period}: ${usd(note.amount)} (${did(note)})`))),
    h("p", {}, "Amount due after credit notes ", h("strong", { "data-testid": "receipt-amount-due" }, usd(invoice.amount_due))));
}

function links(invoice) {
  const found = [];
  if (invoice.hosted_url) found.push(h("a", { href: invoice.hosted_url, rel: "noopener" }, "Stripe invoice"));
  if (invoice.pdf_url) found.push(h("a", { href: invoice.pdf_url, rel: "noopener" }, "PDF"));
  return found.flatMap((link) => [" · ", link]);
}

// A line with a meter shows what was used, the allowance and what was billed (covered usage is $0.00, not "0"):
// the policy shows every meter's line so customers see what they used.
// A late-usage (adjustment) line has no used/included of its own: the change billed, signed (D367 amended (av2)).
function quantity(line) {
  if (line.kind === "adjustment" && line.billable !== null && line.billable !== undefined) {
    return `${Number(line.billable) > 0 ? "+" : ""}${number(line.billable)} billed`;
  }
  if (line.used === null || line.used === undefined) return line.quantity === null ? "" : number(line.quantity);
  const included = line.included === null ? "unlimited" : `${number(line.included)} included`;
  return `${number(line.used)} used · ${included} · ${number(line.billable)} billed`;
}

async function showReceipt(invoiceNumber, target) {
  target.replaceChildren(h("p", {}, "Loading the receipt…"));
  try {
    const invoice = await get(accountPath(`/invoices/${encodeURIComponent(invoiceNumber)}`));
    const lines = invoice.lines || [];
    target.replaceChildren(section(`Receipt ${invoice.number}`,
      h("p", {}, `Period ${invoice.period} · ${words(invoice.status)} · paid by ${invoice.method}`),
      h("div", { class: "table-wrap" }, h("table", { class: "stack" },
        h("thead", {}, h("tr", {}, h("th", { scope: "col" }, "Line"), h("th", { scope: "col", class: "num" }, "Quantity"),
          h("th", { scope: "col", class: "num" }, "Amount"))),
        h("tbody", {}, lines.map((line) => h("tr", {},
          h("td", { "data-label": "Line" }, line.description),
          h("td", { class: "num", "data-label": "Quantity" }, quantity(line)),
          h("td", { class: "num", "data-label": "Amount" }, usd(line.amount))))),
        h("tfoot", {}, h("tr", {}, h("th", { scope: "row", colspan: 2 }, "Total"),
          h("td", { class: "num", "data-testid": "receipt-total" }, usd(invoice.total)))))),
      creditNotes(invoice),
      Number(invoice.refunded) > 0 ? h("p", {}, `Refunded ${usd(invoice.refunded)}`) : null,
      Number(invoice.short_paid) > 0
        ? h("p", { "data-testid": "receipt-short-paid" },
          `Paid ${usd(invoice.short_paid)} less than the amount due (a credit or discount given at the card processor)`)
        : null,
      Number(invoice.charged_back) > 0 ? h("p", {}, `Charged back by the card's bank ${usd(invoice.charged_back)}`) : null,
      invoice.method === "crypto" && invoice.status !== "paid"
        ? h("p", {}, h("a", { href: `#/pay?invoice=${encodeURIComponent(invoice.number)}` }, "Pay this bill with crypto")) : null,
      h("p", {}, links(invoice).slice(1))));
    target.focus();
  } catch (error) {
    target.replaceChildren(errorBox(error));
  }
}
