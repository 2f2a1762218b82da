// Members: who belongs to the account and who is invited. Members read the list; owners and admins invite by email
// (the person's Kilo user ID names whose invitation it is: they accept it signed in as themselves, D200), withdraw an
// open invitation and remove a member (D207; an admin neither of them for an owner, as the API rules). Members need a
// tier with team collaboration (Team, Enterprise): on Personal the API refuses the invitation with a 409 whose message
// names the tier and the entitlement, shown here as it comes (D210). Everyone signed in - also a person who belongs
// to no account yet - sees their own open invitations here and accepts or declines them (D213).
import { accountPath, get, post, remove } from "../api.js";
import { session } from "../auth.js";
import { errorBox, h, section, say } from "../dom.js";

const RANK = { member: 1, admin: 2, owner: 3 };

export async function membersView() {
  const current = session();
  const root = h("div", {}, h("h1", {}, current.account ? "Members" : "Your invitations"));
  const mine = h("div", { id: "my-invitations" });
  const answerInvitations = async () => showInvitations(mine, current, (await get("/v1/invitations")).invitations || []);
  if (!current.account) {
    root.append(h("p", { class: "hint" },
      "You belong to no account yet. Accept an invitation, then sign in again to act for that account."), mine);
    await answerInvitations();
    return root;
  }
  const [reply] = await Promise.all([get(accountPath("/members")), answerInvitations()]);
  const list = h("div", { id: "members-list" });
  const problem = h("div", { "aria-live": "assertive", "data-testid": "members-problem" });
  const show = (members) => list.replaceChildren(...lists(members, current, changeMember));
  async function changeMember(member, action) {
    problem.replaceChildren();
    try {
      await remove(accountPath(`/members/${encodeURIComponent(member.user)}`));
      say(action === "withdraw"
        ? `Invitation of ${member.email || member.user} withdrawn.`
        : `${member.email || member.user} is no longer a member.`);
    } catch (error) {
      problem.append(errorBox(error)); // e.g. the invitation was accepted meanwhile (409: a removal now)
    }
    show((await get(accountPath("/members"))).members || []);
    focus(problem.querySelector("[role=alert]") || list.querySelector("h2")); // the row and its button are gone
  }
  show(reply.members || []);
  root.append(mine, list, problem);
  if (!current.canManage) root.append(h("p", { class: "hint" }, "Only owners and admins can invite members."));
  else root.append(inviteForm(current.role, show));
  return root;
}

// The signed-in person's own open invitations (GET /v1/invitations: any token, keyed on its user), each with Accept
// and Decline. An account's page shows the section only when there is one; with no account it is the whole page.
function showInvitations(container, current, invitations) {
  if (!invitations.length) {
    container.replaceChildren(current.account ? ""
      : h("p", { "data-testid": "no-invitations-to-me" }, "No open invitations to you."));
    return;
  }
  const problem = h("div", { "aria-live": "assertive", "data-testid": "answer-problem" });
  const reload = async () => showInvitations(container, current, (await get("/v1/invitations")).invitations || []);
  async function answer(invitation, accept) {
    problem.replaceChildren();
    const path = `/v1/invitations/${encodeURIComponent(invitation.account_id)}/${accept ? "accept" : "decline"}`;
    try {
      const member = await post(path);
      say(accept
        ? `You are now ${article(member.role)} ${member.role} of ${invitation.account_id}; sign in again to act for it.`
        : `Invitation to ${invitation.account_id} declined.`);
    } catch (error) {
      // e.g. the account's tier lacks team collaboration now (409, D210): the invitation stays, listed again
      await reload();
      const box = errorBox(error);
      (container.querySelector("[data-testid=answer-problem]") || container).append(box);
      focus(box);
      return;
    }
    await reload();
    focus(container.querySelector("h2") || container.querySelector("p") || container);
  }
  const headings = ["Account", "Role", "Invited", "Expires", "Answer"];
  container.replaceChildren(section("Invitations to you", h("div", { class: "table-wrap" }, h("table", { class: "stack" },
    h("caption", {}, `Accepting makes you a member of the account; nothing is granted until then`),
    h("thead", {}, h("tr", {}, headings.map((t) => h("th", { scope: "col" }, t)))),
    h("tbody", {}, invitations.map((invitation) => h("tr", { "data-account": invitation.account_id },
      [invitation.account_id, invitation.role, day(invitation.invited_at), day(invitation.expires_at),
        h("span", { class: "row-actions" },
          h("button", { type: "button", "aria-label": `Accept the invitation to ${invitation.account_id}`,
            onclick: () => answer(invitation, true) }, "Accept"), " ",
          h("button", { type: "button", class: "secondary",
            "aria-label": `Decline the invitation to ${invitation.account_id}`,
            onclick: () => answer(invitation, false) }, "Decline")),
      ].map((value, i) => h("td", { "data-label": headings[i] }, value))))))), problem));
}

function focus(element) {
  if (!element) return;
  if (!element.hasAttribute("tabindex")) element.setAttribute("tabindex", "-1");
  element.focus();
}

const article = (role) => (role === "admin" || role === "owner" ? "an" : "a");

function lists(members, current, changeMember) {
  const active = members.filter((m) => m.status === "active");
  const invited = members.filter((m) => m.status === "invited");
  // an admin withdraws and removes members and admins, an owner anyone; nobody removes themselves here
  const may = (m) => current.canManage && RANK[m.role] <= RANK[current.role] && m.user !== current.sub;
  const withActions = (headings, cells, button) => (current.canManage
    ? [[...headings, "Actions"], (m) => [...cells(m), may(m) ? button(m) : ""]]
    : [headings, cells]);
  const removeButton = (m) => h("button", { type: "button", class: "secondary", "aria-label": `Remove ${m.user}`,
    onclick: () => {
      if (window.confirm(`Remove ${m.email || m.user} (${m.role}) from the account?`)) changeMember(m, "remove");
    } }, "Remove");
  const withdrawButton = (m) => h("button", { type: "button", class: "secondary",
    "aria-label": `Withdraw the invitation of ${m.user}`, onclick: () => changeMember(m, "withdraw") }, "Withdraw");
  const [memberHeadings, memberCells] = withActions(["User", "Email", "Role", "Member since"],
    (m) => [m.user, m.email || "—", m.role, day(m.added_at)], removeButton);
  const [invitedHeadings, invitedCells] = withActions(["User", "Email", "Role", "Expires"],
    (m) => [m.user, m.email || "—", m.role, day(m.expires_at)], withdrawButton);
  return [
    section("Members", table("Members, highest role first", active, memberHeadings, memberCells)),
    section("Open invitations", invited.length
      ? table("Invitations not yet accepted", invited, invitedHeadings, invitedCells)
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
        "The ID they sign in with; they accept the invitation signed in as themselves, before it expires "
        + "(its date is listed with it)."),
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
      // the invitation's own end, as the API set it (INVITATION_DAYS on the server), not a number written here
      say(`Invitation sent to ${invited.email || invited.user}; it grants nothing until they accept it, `
        + `which they can until ${day(invited.expires_at)}.`);
    } catch (error) {
      problem.append(errorBox(error));
      form.querySelector("#invite-email").focus();
    }
  });
  return section("Invite", form);
}
