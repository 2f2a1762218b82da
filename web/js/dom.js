// Small DOM helpers: elements built with text (never HTML strings from data), and the status line.
export function h(tag, attrs = {}, ...children) {
  const element = document.createElement(tag);
  for (const [name, value] of Object.entries(attrs)) {
    if (value === undefined || value === null || value === false) continue;
    if (name.startsWith("on")) element.addEventListener(name.slice(2), value);
    else if (name === "class") element.className = value;
    else element.setAttribute(name, value === true ? "" : String(value));
  }
  for (const child of children.flat()) {
    if (child === null || child === undefined || child === false) continue;
    element.append(child instanceof Node ? child : document.createTextNode(String(child)));
  }
  return element;
}

export function say(message, kind = "info") {
  const status = document.getElementById("status");
  status.textContent = message;
  status.dataset.kind = kind;
}

export function errorBox(error) {
  return h("p", { class: "error", role: "alert" }, error.message || String(error));
}

// Money arrives from the API as decimal strings (exact); shown as they are, never recomputed in floating point.
export function usd(value) {
  if (value === null || value === undefined || value === "") return "—";
  const text = String(value);
  const negative = text.startsWith("-");
  const [whole, fraction = ""] = text.replace("-", "").split(".");
  const grouped = whole.replace(/\B(?=(\d{3})+(?!\d))/g, ",");
  const cents = fraction.length >= 2 ? fraction : fraction.padEnd(2, "0");
  return `${negative ? "−" : ""}$${grouped}.${cents}`;
}

export function number(value) {
  if (value === null || value === undefined) return "—";
  const n = Number(value);
  return Number.isFinite(n) ? n.toLocaleString("en-US") : String(value);
}

// A share of an allowance, to one decimal CUT, never rounded up: 99.99 is "99.9 %" (100 % only once the allowance is
// used up), and a share above 0 but below 0.1 is "<0.1 %" (not "0 %"). The API sends two decimals as a string.
export function percent(value) {
  if (value === null || value === undefined || value === "") return "—";
  const n = Number(value);
  if (!Number.isFinite(n)) return "—";
  if (n > 0 && n < 0.1) return "<0.1 %";
  const text = typeof value === "string" && /^\d+(\.\d+)?$/.test(value) ? value : n.toFixed(2);
  const [whole, fraction = ""] = text.split(".");
  const grouped = whole.replace(/^0+(?=\d)/, "").replace(/\B(?=(\d{3})+(?!\d))/g, ",");
  const tenth = fraction.slice(0, 1);
  return `${grouped}${tenth && tenth !== "0" ? `.${tenth}` : ""} %`;
}

export function section(title, ...children) {
  const id = `h-${title.toLowerCase().replace(/[^a-z0-9]+/g, "-")}`;
  return h("section", { "aria-labelledby": id, class: "card" }, h("h2", { id }, title), ...children);
}

export const METERS = {
  video: "Video minutes",
  audio: "Audio minutes",
  messages: "Messages",
  data_transfer: "Data transfer (GB)",
};

export const meterName = (id) => METERS[id] || id;

export const words = (id) => String(id || "").replace(/_/g, " ");
