// Budget and alert settings: the monthly budget (with its alert percentages and an optional hard limit) and the
// channels alerts go to. Members see them; owners and admins change them.
import { accountPath, get, post, put } from "../api.js";
import { session } from "../auth.js";
import { errorBox, h, say, section } from "../dom.js";

export async function settingsView() {
  const [budget, preferences] = await Promise.all([get(accountPath("/budget")), get(accountPath("/alert-preferences"))]);
  const canManage = session().canManage;
  const root = h("div", {}, h("h1", {}, "Budget & alerts"));
  if (!canManage) root.append(h("p", { class: "hint" }, "Only owners and admins can change these settings."));
  root.append(budgetForm(budget, canManage), preferencesForm(preferences, canManage));
  return root;
}

function field(id, label, attrs, help) {
  return [
    h("label", { for: id }, label),
    h("input", { id, name: id, "aria-describedby": help ? `${id}-help` : undefined, ...attrs }),
    help ? h("p", { id: `${id}-help`, class: "hint" }, help) : null,
  ];
}

// The budget route's fields (the API's error names one) and their inputs.
const BUDGET_FIELDS = { budget_usd: "#budget-amount", alert_percentages: "#budget-percentages",
  hard_limit_usd: "#budget-hard-limit" };

function budgetForm(budget, canManage) {
  const problem = h("div", { "aria-live": "assertive" });
  const form = h("form", { novalidate: true },
    h("fieldset", { disabled: !canManage },
      h("legend", {}, "Monthly budget (USD)"),
      field("budget-amount", "Budget amount (USD)", { type: "text", inputmode: "decimal", value: budget.budget_usd ?? "",
        autocomplete: "off", pattern: "\\d+(\\.\\d{1,2})?" }, "Leave empty for no budget. Alerts go out as spending passes each percentage."),
      field("budget-percentages", "Alert at (percent of the budget)", { type: "text",
        value: (budget.alert_percentages || []).join(", "), autocomplete: "off" }, "Comma-separated, e.g. 50, 80, 100."),
      field("budget-hard-limit", "Hard limit", { type: "text", inputmode: "decimal", value: budget.hard_limit_usd ?? "",
        autocomplete: "off" }, "Optional; at or above the budget. Calls are refused once it is reached."),
      h("div", { class: "actions" }, h("button", { type: "submit" }, "Save budget"))),
    problem);
  form.addEventListener("submit", async (event) => {
    event.preventDefault();
    problem.replaceChildren();
    const amount = form.querySelector("#budget-amount").value.trim();
    const hard = form.querySelector("#budget-hard-limit").value.trim();
    const percentages = form.querySelector("#budget-percentages").value.split(",").map((p) => p.trim()).filter(Boolean);
    const body = {
      budget_usd: amount || null,
      hard_limit_usd: hard || null,
      alert_percentages: percentages.map(Number),
    };
    try {
      const saved = await put(accountPath("/budget"), body);
      form.querySelector("#budget-amount").value = saved.budget_usd ?? "";
      form.querySelector("#budget-hard-limit").value = saved.hard_limit_usd ?? "";
      say(budgetSaved(saved));
    } catch (error) {
      problem.append(errorBox(error));
      form.querySelector(BUDGET_FIELDS[error.body?.field] || "#budget-amount").focus(); // the field the API names
    }
  });
  return section("Budget", form);
}

// What the save left: the soft budget and the hard limit are each said (a hard limit alone is no "budget removed").
export function budgetSaved(saved) {
  const limit = saved.hard_limit_usd ? `hard limit $${saved.hard_limit_usd}` : null;
  if (saved.budget_usd) return `Budget saved: $${saved.budget_usd} a month${limit ? `, ${limit}` : ""}.`;
  return limit ? `No budget; ${limit} saved.` : "Budget and hard limit removed.";
}

function preferencesForm(preferences, canManage) {
  const phone = phoneVerification(canManage);
  const problem = h("div", { "aria-live": "assertive" });
  const form = h("form", {},
    h("fieldset", { disabled: !canManage },
      h("legend", {}, "Where alerts go"),
      field("alert-email", "Email", { type: "email", value: preferences.email ?? "", autocomplete: "email" }),
      field("alert-phone", "Phone for SMS", { type: "tel", value: preferences.phone ?? "", autocomplete: "tel" },
        "International format (E.164), e.g. +15551234567. Empty: no SMS."),
      h("div", { class: "actions" }, h("button", { type: "submit" }, "Save alert settings"))),
    problem);
  form.addEventListener("submit", async (event) => {
    event.preventDefault();
    problem.replaceChildren();
    const body = {
      name: preferences.name ?? "",
      email: form.querySelector("#alert-email").value.trim(),
      phone: form.querySelector("#alert-phone").value.trim(),
      channels: preferences.channels ?? {},
    };
    try {
      const saved = await put(accountPath("/alert-preferences"), body);
      phone.show(saved);
      say(savedMessage(saved));
    } catch (error) {
      problem.append(errorBox(error));
    }
  });
  phone.show(preferences);
  return section("Alerts", form, phone.element);
}

// The save stands whatever became of the number's code (phone_code): texted now, still pending, or not sent (why).
function savedMessage(saved) {
  const code = saved.phone_code;
  if (!saved.phone || saved.phone_verified || !code) return "Alert settings saved.";
  if (code.status === "sent") return `Alert settings saved. Enter the code sent to ${saved.phone} to get alerts by SMS.`;
  if (code.status === "pending") {
    return `Alert settings saved. Enter the code already sent to ${saved.phone}, or ask for a new one.`;
  }
  return `Alert settings saved, but no code was sent to ${saved.phone}: ${code.reason}. Use "Send a new code" later.`;
}

// The SMS number's state: alerts text only a verified number (until then they go by email). A code is texted when a
// number is saved; owners and admins confirm it here or ask for a new one.
function phoneVerification(canManage) {
  const state = h("p", { id: "phone-state", "data-testid": "phone-state" });
  const problem = h("div", { "aria-live": "assertive" });
  const form = h("form", { novalidate: true, "aria-label": "Confirm the phone number" },
    h("fieldset", { disabled: !canManage },
      h("legend", {}, "Confirm the phone number"),
      field("phone-code", "Code from the SMS", { type: "text", inputmode: "numeric", autocomplete: "one-time-code",
        pattern: "[0-9]{6}", maxlength: "6" }, "6 digits; it expires 10 minutes after it was sent."),
      h("div", { class: "actions" },
        h("button", { type: "submit" }, "Confirm number"),
        h("button", { type: "button", "data-action": "resend" }, "Send a new code"))),
    problem);
  const element = h("div", {}, state, form);
  const show = (preferences) => {
    if (!preferences.phone) state.textContent = "No phone number: alerts go by email only.";
    else if (preferences.phone_verified) state.textContent = `${preferences.phone} is verified: SMS alerts go to it.`;
    else state.textContent = `${preferences.phone} is not verified yet: alerts go by email until it is confirmed.`;
    form.hidden = !preferences.phone || preferences.phone_verified;
  };
  form.addEventListener("submit", async (event) => {
    event.preventDefault();
    problem.replaceChildren();
    try {
      const confirmed = await post(accountPath("/alert-preferences/phone-code/confirm"),
        { code: form.querySelector("#phone-code").value.trim() });
      show(confirmed);
      say("Phone number verified.");
    } catch (error) {
      problem.append(errorBox(error));
      form.querySelector("#phone-code").focus();
    }
  });
  form.querySelector("[data-action=resend]").addEventListener("click", async () => {
    problem.replaceChildren();
    try {
      const sent = await post(accountPath("/alert-preferences/phone-code"));
      say(`A new code was sent to ${sent.phone}.`);
    } catch (error) {
      problem.append(errorBox(error));
    }
  });
  return { element, show };
}
