// Pricing (public): each tier's monthly fee and what it includes side by side, then the price per unit beyond the
// allowance; all figures from the API's price book.
import { ApiError, accountPath, get, getTagged, post } from "../api.js";
import { session } from "../auth.js";
import { errorBox, h, meterName, number, say, section, usd, words } from "../dom.js";

export async function pricingView() {
  const book = await get("/v1/pricing");
  const current = session();
  const read = current ? await getTagged(accountPath("/usage")).catch(() => null) : null;
  const usage = read ? read.data : null;
  const etag = read ? read.etag : null; // the subscription's version this page shows: each click's If-Match (D441)
  const myTier = usage ? usage.tier : null;
  const scheduled = usage ? usage.scheduled_change : null; // a downgrade waiting for the next month (D118)
  const tiers = book.tiers || [];
  const meters = book.meters || [];
  const root = h("div", { "data-view": "pricing" }, h("h1", {}, "Pricing"),
    h("p", {}, "Pay for what your calls use. Every tier includes an allowance each month; beyond it you pay per unit."));
  root.append(h("div", { class: "tiers" }, tiers.map((tier) => h("section", {
    class: "card tier", "aria-labelledby": `tier-${tier.id}`, "data-tier": tier.id },
  h("h2", { id: `tier-${tier.id}` }, tier.name),
  h("p", { class: "price" }, usd(tier.monthly_fee), h("span", { class: "hint" }, " / month")),
  h("ul", {}, meters.map((meter) => h("li", {}, allowanceText(tier, meter))),
    (tier.entitlements || []).map((e) => h("li", {}, words(e).replace(/^./, (c) => c.toUpperCase())))),
  h("p", { class: "hint" }, tier.overage === "none" ? "No overage: unlimited use." : "Beyond the allowance: pay as you go."),
  tierAction(tier, tiers, myTier, current, scheduled, etag)))));
  const table = h("table", {},
    h("caption", {}, "Tier comparison"),
    h("thead", {}, h("tr", {}, h("th", { scope: "col" }, ""), tiers.map((t) => h("th", { scope: "col", class: "num" }, t.name)))),
    h("tbody", {},
      h("tr", {}, h("th", { scope: "row" }, "Monthly fee"), tiers.map((t) => h("td", { class: "num" }, usd(t.monthly_fee)))),
      meters.map((meter) => h("tr", {}, h("th", { scope: "row" }, `${meterName(meter.meter)} included`),
        tiers.map((t) => h("td", { class: "num" }, includedOf(t, meter)))))));
  root.append(section("Compare tiers", h("div", { class: "table-wrap" }, table)));
  root.append(section("Usage beyond the allowance",
    h("div", { class: "table-wrap" }, h("table", {},
      h("caption", {}, "Price per unit"),
      h("thead", {}, h("tr", {}, h("th", { scope: "col" }, "Meter"), h("th", { scope: "col", class: "num" }, "Price"))),
      h("tbody", {}, meters.map((m) => h("tr", {}, h("th", { scope: "row" }, meterName(m.meter)),
        h("td", { class: "num" }, `$${m.unit_price} per ${m.unit}`))))))));
  return root;
}

// Signed in as an owner or admin: change tier here (an upgrade takes effect at once, a downgrade at the next month).
// A scheduled change shows on both tiers' cards; the current one offers to stay on it (cancels the change, D118).
function tierAction(tier, tiers, myTier, current, scheduled, etag) {
  if (!myTier) return null;
  const named = (id) => (tiers.find((t) => t.id === id) || { name: id }).name;
  const day = scheduled ? dayOf(scheduled.effective_at) : "";
  if (tier.id === myTier) {
    if (!scheduled) return h("p", { class: "ok" }, "Your tier");
    return h("div", {}, h("p", { class: "ok" }, "Your tier"),
      h("p", { "data-testid": "scheduled-change" }, `Moving to ${named(scheduled.tier)} on ${day}.`),
      current.canManage ? stayButton(tier, etag) : null);
  }
  if (scheduled && tier.id === scheduled.tier) {
    return h("p", { class: "hint", "data-testid": "scheduled-tier" }, `Your tier from ${day}`);
  }
  if (!current.canManage) return null;
  const mine = tiers.find((t) => t.id === myTier);
  const upgrade = !mine || tier.rank > mine.rank;
  const problem = h("div", { "aria-live": "assertive" });
  const key = clickKey(etag);
  const button = h("button", { type: "button", class: upgrade ? undefined : "secondary", onclick: async () => {
    problem.replaceChildren();
    button.disabled = true;
    try {
      say(answered(await key.send({ tier: tier.id }), tier));
    } catch (error) {
      if (await changedMeanwhile(error, button, problem)) return;
      problem.append(errorBox(error));
      button.disabled = false;
    }
  } }, upgrade ? `Upgrade to ${tier.name} now` : `Move to ${tier.name} next month`);
  return h("div", { class: "actions" }, button, problem);
}

// The UTC day of an API instant ("2026-12-01T00:00:00Z" -> "2026-12-01"): periods start at 00:00 UTC, so a
// browser's own zone would show the day before west of Greenwich (D370 amended (api4)).
function dayOf(instant) {
  return String(instant).slice(0, 10);
}

// What the API answered to POST /subscription (its `change`), never what the button hoped for (D370 amended (api3)),
// dated as the page's "Moving to ... on <day>".
function answered(change, tier) {
  const when = dayOf(change.effective_at);
  return change.change === "upgrade_now" ? `Upgraded to ${tier.name} from now.`
    : change.change === "pending_change_cancelled" ? `You stay on ${tier.name}: the scheduled change is cancelled.`
    : `${tier.name} from ${when}; until then your tier stays.`;
}

// POST /subscription with its required Idempotency-Key (D377, D436): a fresh crypto.randomUUID() per click, the same one again when
// the click is made again after a failure that brought no answer (the network, a 5xx: the change may have been made
// and its answer lost) or a 409 naming the key (in progress), so the API replays that answer instead of deciding again on what changed since.
// With the page's ETag as If-Match (D441): a click on a page drawn before the plan changed is refused (412), not
// decided on a plan the person did not see.
function clickKey(etag) {
  const inProgress = (error) => error.status === 409 && error.body?.field === "header.idempotency-key";
  let key = null;
  return {
    async send(body) {
      // no ETag with the page's GET /usage: no unprotected click (it would be decided on a plan the page may not show)
      if (!etag) throw new Error("This page does not know which version of your plan it shows, so nothing was sent: reload the page.");
      key ??= crypto.randomUUID();
      try {
        const change = await post(accountPath("/subscription"), body, { "Idempotency-Key": key, "If-Match": etag });
        key = null;
        return change;
      } catch (error) {
        // answered (a refusal): the next click is new - but a 409 naming the key is "that key's request is still
        // being decided" (D436), no answer: its retry keeps the key and gets the stored answer
        if (error instanceof ApiError && error.status < 500 && !inProgress(error)) key = null;
        throw error;
      }
    },
  };
}

// A 412 (D441): the plan changed since this page was drawn (another admin, a cancel, the month turning) and nothing
// was changed; the page is drawn again from the API and says so, for the person to choose again on what is now.
// When that redraw fails the page still shows the old plan: the button stays disabled (its click would be refused
// again) and the error box says to reload the page.
async function changedMeanwhile(error, button, problem) {
  if (!(error instanceof ApiError) || error.status !== 412) return false;
  const page = button.closest("[data-view=pricing]");
  try {
    if (page) page.replaceWith(await pricingView());
  } catch (failed) {
    const why = failed.message || String(failed);
    problem.append(errorBox(new Error(`Your plan changed meanwhile, so nothing was changed, and this page could not be drawn again (${why}): reload the page.`)));
    return true;
  }
  say("Your plan changed meanwhile, so nothing was changed. The page now shows your plan as it is: choose again.", "error");
  return true;
}

// Asking for the tier in effect cancels the scheduled changes (the API answers pending_change_cancelled).
function stayButton(tier, etag) {
  const problem = h("div", { "aria-live": "assertive" });
  const key = clickKey(etag);
  const button = h("button", { type: "button", class: "secondary", onclick: async () => {
    problem.replaceChildren();
    button.disabled = true;
    try {
      const change = await key.send({ tier: tier.id });
      // the page is drawn again from the API: the other cards' buttons (a downgrade) come back without a reload
      const page = button.closest("[data-view=pricing]");
      if (page) page.replaceWith(await pricingView());
      say(answered(change, tier));
    } catch (error) {
      if (await changedMeanwhile(error, button, problem)) return;
      problem.append(errorBox(error));
      button.disabled = false;
    }
  } }, `Stay on ${tier.name}`);
  return h("div", { class: "actions" }, button, problem);
}

function includedOf(tier, meter) {
  const allowances = tier.included || {};
  const value = allowances[meter.meter];
  return value === null || value === undefined ? "unlimited" : number(value);
}

function allowanceText(tier, meter) {
  const value = includedOf(tier, meter);
  return `${meterName(meter.meter)}: ${value === "unlimited" ? "unlimited" : `${value} included`}`;
}
