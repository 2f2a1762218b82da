// Budget and alert settings: the monthly budget (with its alert percentages and an optional hard limit) and the
// channels alerts go to. Members see them; owners and admins change them.
import { accountPath, get, put } from "../api.js";
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
      say(saved.budget_usd ? `Budget saved: $${saved.budget_usd} a month.` : "Budget removed.");
    } catch (error) {
      problem.append(errorBox(error));
      form.querySelector("#budget-amount").focus();
    }
  });
  return section("Budget", form);
}

function preferencesForm(preferences, canManage) {
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
      await put(accountPath("/alert-preferences"), body);
      say("Alert settings saved.");
    } catch (error) {
      problem.append(errorBox(error));
    }
  });
  return section("Alerts", form);
}
