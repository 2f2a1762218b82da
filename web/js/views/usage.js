// Usage this month: the bill so far, each meter against its allowance, a daily chart, the forecast and the
// recommendations with the money they save; the meetings of the month.
import { accountPath, get } from "../api.js";
import { barChart, progressBar } from "../chart.js";
import { h, meterName, number, percent, section, usd } from "../dom.js";


export async function usageView() {
  const [usage, forecast, recommendations, meetings] = await Promise.all([
    get(accountPath("/usage")),
    get(accountPath("/forecast")),
    get(accountPath("/recommendations")),
    get(accountPath("/meetings?limit=10")),
  ]);
  const root = h("div");
  root.append(h("h1", {}, `Usage for ${usage.period}`));
  const scheduled = usage.scheduled_change;
  root.append(h("p", { class: "hint" }, `Tier ${usage.tier}`,
    scheduled ? h("span", { "data-testid": "usage-scheduled-change" },
      ` (moving to ${scheduled.tier} on ${String(scheduled.effective_at).slice(0, 10)}: see Pricing to stay)`) : null,
    ` · as of ${new Date(usage.as_of).toLocaleString()} · `,
    `${number(usage.open_sessions)} open ${usage.open_sessions === 1 ? "session" : "sessions"} counted as if they ended now`));
  root.append(h("div", { class: "grid" }, summaryCard(usage, forecast), forecastCard(forecast)));
  root.append(metersCard(usage.meters || []));
  root.append(dailyCard(usage.daily || []));
  root.append(recommendationsCard(recommendations));
  root.append(meetingsCard(meetings));
  return root;
}

function summaryCard(usage, forecast) {
  return section("Bill so far",
    h("p", { class: "big", "data-testid": "bill-so-far" }, usd(usage.total)),
    h("dl", {}, h("dt", {}, "Fees"), h("dd", { "data-testid": "fees" }, usd(usage.fee)),
      h("dt", {}, "Usage beyond the allowances"), h("dd", { "data-testid": "usage-charges" }, usd(usage.usage))),
    h("p", { class: "hint" }, "This month so far, before tax."));
}

function forecastCard(forecast) {
  const status = {
    no_budget: "No budget set",
    under_budget: "Under budget",
    over_budget: "Over budget: alerts sent, calls go on",
    hard_limit_reached: "Hard limit reached: calls are refused",
  }[forecast.status] || forecast.status;
  return section("Forecast",
    h("p", { class: "big", "data-testid": "projected-total" },
      forecast.projected_total !== null ? usd(forecast.projected_total)
        // too early to project (D148); past a limit the month's end is at least what is spent (D148 amended (e3c))
        : ["over_budget", "hard_limit_reached"].includes(forecast.status) ? `At least ${usd(forecast.spent)}`
          : "Not enough data yet"),
    h("p", {}, "Projected for the month's end (weekday-weighted)."),
    h("dl", {},
      h("dt", {}, "Budget"), h("dd", { "data-testid": "budget" }, forecast.budget_usd ? usd(forecast.budget_usd) : "none"),
      forecast.hard_limit_usd ? [h("dt", {}, "Hard limit"), h("dd", {}, usd(forecast.hard_limit_usd))] : null,
      forecast.budget_reached_on ? [h("dt", {}, "Budget reached on"), h("dd", {}, forecast.budget_reached_on)] : null,
      forecast.hard_limit_reached_on ? [h("dt", {}, "Hard limit reached on"),
        h("dd", { "data-testid": "hard-limit-reached-on" }, forecast.hard_limit_reached_on)] : null,
      h("dt", {}, "Status"), h("dd", { "data-testid": "budget-status" }, status)));
}

// One tier segment's use against its allowance: "30,000 of 25,000 included (120 %)", or "10,000 · unlimited".
function againstAllowance(part, unit) {
  return part.included === null || part.included === undefined ? `${number(part.used)} ${unit || ""} · unlimited`
    : `${number(part.used)} of ${number(part.included)} included (${percent(part.used_percent)})`;
}

// A month with a tier change shows each tier's part (D369): its own allowance, the overage charged there. With two
// or more parts that have an allowance the API sends no combined share (a combined one hid Personal's overage behind
// "36.3 %"): each such part has its own bar (D369 amended (av2)).
function segmentsList(meter, name) {
  const segments = meter.segments || [];
  if (segments.length < 2) return null;
  const day = (iso) => String(iso).slice(0, 10);
  const barred = meter.used_percent === null || meter.used_percent === undefined;
  return h("ul", { class: "hint", "data-testid": `segments-${meter.meter}` }, segments.map((part) => {
    const when = `${part.tier} ${day(part.start)} to ${day(part.end)}`;
    const limited = part.included !== null && part.included !== undefined;
    return h("li", {}, `${when}: ${againstAllowance(part, meter.unit)}`, barred && limited
      ? progressBar(`${name}, ${when}: ${percent(part.used_percent)} of the allowance used`, part.used_percent) : null);
  }));
}

function metersCard(meters) {
  const list = h("div");
  for (const meter of meters) {
    const name = meterName(meter.meter);
    const included = meter.included === null || meter.included === undefined;
    const split = (meter.segments || []).length > 1;
    const line = h("div", { class: "meter", "data-meter": meter.meter },
      h("div", { class: "meter-head" },
        h("span", {}, h("strong", {}, name)),
        h("span", { "data-testid": `used-${meter.meter}` },
          split ? `${number(meter.used)} ${meter.unit || ""} this month` : againstAllowance(meter, meter.unit))),
      segmentsList(meter, name),
      included || meter.used_percent === null || meter.used_percent === undefined ? null : progressBar(`${name}: ${percent(meter.used_percent)} of the allowance used`, meter.used_percent),
      Number(meter.overage) > 0
        ? h("p", { class: "hint", "data-testid": `overage-${meter.meter}` },
          `Beyond the allowance: ${number(meter.overage)} (${meter.unit} each), ${usd(meter.amount)}`) : null);
    list.append(line);
  }
  return section("Allowances", list);
}

function dailyCard(daily) {
  const points = daily.map((d) => ({ label: d.date, value: Number(d.video_minutes) + Number(d.audio_minutes) }));
  const table = h("table", { class: "stack" },
    h("caption", {}, "Minutes per day"),
    h("thead", {}, h("tr", {}, h("th", { scope: "col" }, "Day"), h("th", { scope: "col", class: "num" }, "Video"),
      h("th", { scope: "col", class: "num" }, "Audio"))),
    h("tbody", {}, daily.map((d) => h("tr", {},
      h("td", { "data-label": "Day" }, d.date),
      h("td", { class: "num", "data-label": "Video" }, number(d.video_minutes)),
      h("td", { class: "num", "data-label": "Audio" }, number(d.audio_minutes))))));
  const details = h("details", {}, h("summary", {}, "The figures as a table"), h("div", { class: "table-wrap" }, table));
  return section("Daily minutes",
    points.length ? barChart(points, "Participant minutes per day this month (video and audio)", "minutes")
      : h("p", {}, "No calls yet this month."),
    details);
}

function recommendationsCard(data) {
  const items = data.recommendations || [];
  if (!items.length) return section("Recommendations", h("p", {}, "Nothing to save this month: your tier and usage fit."));
  return section("Recommendations",
    h("ul", { class: "recs" }, items.map((r) => h("li", { "data-kind": r.kind },
      h("strong", {}, r.title), " — save ", h("strong", {}, usd(r.saving_usd)), ` (${usd(r.current_usd)} → ${usd(r.with_change_usd)})`,
      h("p", { class: "hint" }, r.detail)))));
}

function meetingsCard(page) {
  const meetings = page.meetings || [];
  const body = h("tbody", {}, meetings.map(meetingRow));
  const more = h("button", { type: "button", class: "secondary", hidden: !page.next_cursor, onclick: async () => {
    more.disabled = true;
    try {
      const next = await get(accountPath(`/meetings?limit=10&cursor=${encodeURIComponent(page.next_cursor)}`));
      body.append(...next.meetings.map(meetingRow));
      page = next;
      more.hidden = !next.next_cursor;
    } finally {
      more.disabled = false;
    }
  } }, "More meetings");
  const table = h("table", { class: "stack" },
    h("caption", {}, "Latest meetings"),
    h("thead", {}, h("tr", {}, ["Room", "Started", "Participants", "Video min", "Audio min"].map((t, i) =>
      h("th", { scope: "col", class: i >= 2 ? "num" : undefined }, t)))),
    body);
  return section("Meetings",
    meetings.length ? [h("div", { class: "table-wrap" }, table), h("div", { class: "actions" }, more)]
      : h("p", {}, "No meetings yet."));
}

function meetingRow(m) {
  return h("tr", {},
    h("td", { "data-label": "Room" }, m.room_name, m.ended_at ? "" : " (in progress)"),
    h("td", { "data-label": "Started" }, new Date(m.started_at).toLocaleString()),
    h("td", { class: "num", "data-label": "Participants" }, number(m.participants)),
    h("td", { class: "num", "data-label": "Video min" }, number(m.video_minutes)),
    h("td", { class: "num", "data-label": "Audio min" }, number(m.audio_minutes)));
}
