// The dashboard: a hash router over a few views. Public: pricing and sign-in; the rest needs a signed-in account. A
// person signed in who belongs to no account yet (a token without kilo_account) has the Members page alone, where
// their invitations are (D213).
import { configure } from "./api.js";
import { acceptSignIn, cognitoSignInUrl, session, signIn, signInFromUrl, signOut } from "./auth.js";
import { errorBox, h, say } from "./dom.js";
import { billingView } from "./views/billing.js";
import { cardsView } from "./views/cards.js";
import { membersView } from "./views/members.js";
import { payView } from "./views/pay.js";
import { pricingView } from "./views/pricing.js";
import { settingsView } from "./views/settings.js";
import { usageView } from "./views/usage.js";

const routes = {
  pricing: { title: "Pricing", view: pricingView, public: true },
  signin: { title: "Sign in", view: signInView, public: true },
  usage: { title: "Usage", view: usageView },
  billing: { title: "Billing", view: billingView },
  settings: { title: "Budget & alerts", view: settingsView },
  cards: { title: "Cards", view: cardsView },
  members: { title: "Members", view: membersView },
  pay: { title: "Pay with crypto", view: payView },
};

let config = { apiBase: "", auth: { mode: "local" }, chains: {} };

function signInView() {
  const main = h("div");
  main.append(h("h1", {}, "Sign in"));
  if (config.auth.mode === "cognito") {
    // the state and nonce are made when the person asks to sign in (one pair per attempt, kept in this tab)
    main.append(h("p", {}, h("a", { class: "button", href: "#/signin", onclick: async (event) => {
      event.preventDefault();
      window.location.assign(await cognitoSignInUrl(config.auth));
    } }, "Sign in with your Kilo account")));
    return main;
  }
  const field = h("textarea", { id: "token", name: "token", rows: 4, required: true, autocomplete: "off",
    spellcheck: "false", "aria-describedby": "token-help" });
  const problem = h("p", { id: "token-problem", class: "error", role: "alert", hidden: true });
  const form = h("form", { class: "card", onsubmit: (event) => {
    event.preventDefault();
    try {
      signIn(field.value);
      window.location.hash = "#/usage";
    } catch (error) {
      problem.hidden = false;
      problem.textContent = `That is not a usable token: ${error.message}`;
      field.setAttribute("aria-invalid", "true");
      field.focus();
    }
  } },
  h("label", { for: "token" }, "Access token"),
  h("p", { id: "token-help", class: "hint" },
    "On the local stack, `./dev demo --keep-running` prints a sign-in link per account; or paste a token from the ",
    "local issuer", config.auth.issuer ? ` (${config.auth.issuer})` : "", "."),
  field, problem, h("button", { type: "submit" }, "Sign in"));
  main.append(form);
  return main;
}

function renderChrome() {
  const current = session();
  for (const item of document.querySelectorAll("[data-auth]")) {
    item.hidden = !current || (!current.account && item.dataset.auth !== "any");
  }
  const who = document.getElementById("who");
  who.replaceChildren();
  if (current) {
    who.append(h("span", {}, current.account ? `${current.account} · ${current.role}` : `${current.user} · no account yet`), " ",
      h("button", { type: "button", class: "link", onclick: () => { signOut(); window.location.hash = "#/pricing"; render(); } },
        "Sign out"));
  } else {
    who.append(h("a", { href: "#/signin" }, "Sign in"));
  }
  const name = routeName();
  for (const link of document.querySelectorAll("#nav a")) {
    if (link.getAttribute("href") === `#/${name}`) link.setAttribute("aria-current", "page");
    else link.removeAttribute("aria-current");
  }
}

function routeName() {
  const name = window.location.hash.replace(/^#\/?/, "").split("?")[0];
  const current = session();
  // no account yet: every page of an account is the Members page (its invitations)
  if (current && !current.account && routes[name] && !routes[name].public) return "members";
  if (routes[name]) return name;
  if (!current) return "pricing";
  return current.account ? "usage" : "members";
}

let rendering = 0;
async function render() {
  const ticket = ++rendering;
  const name = routeName();
  let route = routes[name];
  if (!route.public && !session()) route = routes.signin;
  renderChrome();
  const main = document.getElementById("main");
  document.title = `${route.title} · Kilo Billing`;
  main.setAttribute("aria-busy", "true");
  try {
    const content = await route.view(config);
    if (ticket !== rendering) return;
    main.replaceChildren(content);
  } catch (error) {
    if (ticket !== rendering) return;
    if (error.status === 401) {
      signOut();
      say("Your sign-in has expired or was refused: sign in again.", "error");
      window.location.hash = "#/signin";
      return;
    }
    main.replaceChildren(h("h1", {}, route.title), errorBox(error));
  } finally {
    if (ticket === rendering) main.removeAttribute("aria-busy");
  }
}

async function start() {
  const answer = signInFromUrl(); // first, before anything awaits: the address bar drops the code or token at once
  let loaded = false;
  try {
    const response = await fetch("config.json", { cache: "no-store" });
    if (response.ok) {
      config = { ...config, ...(await response.json()) };
      loaded = true;
    }
  } catch {
    // no readable config.json: the API on the same origin, the token form; no sign-in link is taken (below)
  }
  try {
    // a sign-in link is taken only as the loaded configuration says: without it the page cannot tell the local
    // stack (#token= links) from Cognito (state and nonce checked), so it takes none (D117, D298)
    await acceptSignIn(answer, loaded ? config.auth : null);
  } catch (error) {
    say(`Not signed in: ${error.message}`, "error");
  }
  configure(config.apiBase);
  // the skip link moves focus to the content without touching the router's hash
  document.querySelector(".skip").addEventListener("click", (event) => {
    event.preventDefault();
    document.getElementById("main").focus();
  });
  window.addEventListener("hashchange", () => {
    render().then(() => document.getElementById("main").focus({ preventScroll: false }));
  });
  await render();
}

start();
