// Members: who belongs to the account and who is invited. Members read the list; owners and admins invite by email
// (the person's Kilo user ID names whose invitation it is: they accept it signed in as themselves, D200). Members
// need a tier with team collaboration (Team, Enterprise): on Personal the API refuses the invitation with a 409 whose
// message names the tier and the entitlement, shown here as it comes (D-api-1).
import { accountPath, get, post } from "../api.js";
import { session } from "../auth.js";
import { errorBox, h, section, say } from "../dom.js";

export async function membersView() {
  const reply = await get(accountPath("/members"));
  const current = session();
  const list = h("div", { id: "members-list" });
  const show = (members) => list.replaceChildren(...lists(members));
  show(reply.members || []);
  const root = h("div", {}, h("h1", {}, "Members"), list);
  if (!current.canManage) root.append(h("p", { class: "hint" }, "Only owners and admins can invite members."));
  else root.append(inviteForm(current.role, show));
  return root;
}

function lists(members) {
  const active = members.filter((m) => m.status === "active");
  const invited = members.filter((m) => m.status === "invited");
  return [
    section("Members", table("Members, highest role first", active, ["User", "Email", "Role", "Member since"],
      (m) => [m.user, m.email || "—", m.role, day(m.added_at)])),
    section("Open invitations", invited.length
      ? table("Invitations not yet accepted", invited, ["User", "Email", "Role", "Expires"],
        (m) => [m.user, m.email || "—", m.role, day(m.expires_at)])
      : h("p", { "data-testid": "no-invitations" }, "No open invitations.")),
  ];
}

function table(caption, rows, headings, cells) {
  return h("div", { class: "table-wrap" }, h("table", { class: "stack" },
    h("caption", {}, caption),
    h("thead", {}, h("tr", {}, headings.map((t) => h("th", { scope: "col" }, t)))),
    h("tbody", {}, rows.map((row) => h("tr", { "data-user": row.user },
      cells(row).map((value, i) => h("td", { "data-label": headings[i] }, value)))))));
}

const day = (iso) => (iso ? String(iso).slice(0, 10) : "—");

function inviteForm(role, show) {
  const problem = h("div", { "aria-live": "assertive", "data-testid": "invite-problem" });
  const roles = role === "owner" ? ["member", "admin", "owner"] : ["member", "admin"];
  const form = h("form", { novalidate: true },
    h("fieldset", {},
      h("legend", {}, "Invite someone"),
      h("label", { for: "invite-email" }, "Email"),
      h("input", { id: "invite-email", name: "invite-email", type: "email", autocomplete: "off", required: true }),
      h("label", { for: "invite-user" }, "Kilo user ID"),
      h("input", { id: "invite-user", name: "invite-user", type: "text", autocomplete: "off", required: true,
        "aria-describedby": "invite-user-help" }),
      h("p", { id: "invite-user-help", class: "hint" },
        "The ID they sign in with; they accept the invitation within 7 days, signed in as themselves."),
      h("label", { for: "invite-role" }, "Role"),
      h("select", { id: "invite-role", name: "invite-role" }, roles.map((r) => h("option", { value: r }, r))),
      h("div", { class: "actions" }, h("button", { type: "submit" }, "Send invitation"))),
    problem);
  form.addEventListener("submit", async (event) => {
    event.preventDefault();
    problem.replaceChildren();
    const email = form.querySelector("#invite-email").value.trim();
    const user = form.querySelector("#invite-user").value.trim();
    if (!email || !user) {
      problem.append(errorBox(new Error("Enter both the email and the Kilo user ID.")));
      form.querySelector(email ? "#invite-user" : "#invite-email").focus();
      return;
    }
    try {
      const invited = await post(accountPath("/members"), { user, email, role: form.querySelector("#invite-role").value });
      form.reset();
      show((await get(accountPath("/members"))).members || []);
      say(`Invitation sent to ${invited.email || invited.user}; it grants nothing until they accept it.`);
    } catch (error) {
      problem.append(errorBox(error));
      form.querySelector("#invite-email").focus();
    }
  });
  return section("Invite", form);
}
