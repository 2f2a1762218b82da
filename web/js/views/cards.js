// Cards: Stripe hosts the card forms. Add a card through a Checkout setup session; manage cards and see Stripe's
// receipts in the Billing Portal. The API returns the session URL; the browser goes there.
import { accountPath, post } from "../api.js";
import { session } from "../auth.js";
import { errorBox, h, section } from "../dom.js";

export async function cardsView() {
  const canManage = session().canManage;
  const problem = h("div", { "aria-live": "assertive" });
  const back = window.location.origin + window.location.pathname + "#/cards";
  const go = (path, body) => async (event) => {
    const button = event.currentTarget;
    button.disabled = true;
    problem.replaceChildren();
    try {
      const reply = await post(accountPath(path), body);
      window.location.assign(reply.url);
    } catch (error) {
      problem.append(errorBox(error));
      button.disabled = false;
    }
  };
  return h("div", {},
    h("h1", {}, "Cards"),
    section("Payment methods",
      h("p", {}, "Cards are kept by Stripe; Kilo never sees the number."),
      canManage ? null : h("p", { class: "hint" }, "Only owners and admins can change payment methods."),
      h("div", { class: "actions" },
        h("button", { type: "button", disabled: !canManage, onclick: go("/payment-methods/checkout", { success_url: back, cancel_url: back }) },
          "Add a card"),
        h("button", { type: "button", class: "secondary", disabled: !canManage, onclick: go("/billing-portal", { return_url: back }) },
          "Manage cards in the Billing Portal")),
      problem));
}
